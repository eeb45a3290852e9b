/* ringctl's HTTP/1.1 client for the admin API: plain HTTP over a blocking
 * socket (the admin API listens on loopback), one request per connection,
 * response heads parsed with the relay's own parser and chunked bodies
 * decoded with its decoder. The body goes either into a caller buffer (to be
 * parsed) or straight to a FILE (exports of any size). */
#ifndef RINGCTL_CLIENT_H
#define RINGCTL_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum {
    CLIENT_HOST_BYTES = 256,
    CLIENT_PREFIX_BYTES = 256,
    CLIENT_ERROR_BYTES = 512,
};

/* Where the admin API is: http://HOST[:PORT][/PREFIX]. */
typedef struct client_target {
    char host[CLIENT_HOST_BYTES];     /* without brackets for IPv6 */
    uint16_t port;
    char prefix[CLIENT_PREFIX_BYTES]; /* "" or "/something" without a trailing '/' */
} client_target_t;

typedef enum client_result {
    CLIENT_OK = 0,        /* a complete response arrived (any status) */
    CLIENT_CONNECT = 1,   /* could not resolve or connect */
    CLIENT_PROTOCOL = 2,  /* the answer was cut, malformed, too large or too slow */
} client_result_t;

typedef struct client_response {
    int status;
    char content_type[128];
    /* The body: into buffer (up to capacity, then CLIENT_PROTOCOL), or, for
     * a 2xx answer, written to sink when sink is not NULL (an error answer
     * still goes to the buffer, so it can be reported). */
    char *buffer;
    size_t capacity;
    size_t length;
    FILE *sink;
    uint64_t sink_bytes;
    char error[CLIENT_ERROR_BYTES];   /* on failure: what went wrong, one line */
} client_response_t;

/* Parses "http://host[:port][/prefix]" (port defaults to 80). Returns false
 * with `error` filled for anything else (https included: the admin API is
 * plain HTTP on loopback). */
bool client_parse_url(const char *url, client_target_t *target, char *error, size_t error_size);

/* Sends `method` `path` (appended to the target's prefix) with the bearer
 * token (NULL: none) and an optional JSON body, and reads the answer into
 * *response (whose buffer/capacity/sink the caller set). timeout_ms bounds
 * the connect and each wait for bytes. */
client_result_t client_request(const client_target_t *target, const char *method, const char *path,
                               const char *token, const char *body, size_t body_length, uint32_t timeout_ms,
                               client_response_t *response);

#endif
