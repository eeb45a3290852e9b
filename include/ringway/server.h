/* The HTTP/1.1 server side of one thread: accepts on its own SO_REUSEPORT
 * socket, reads requests into exchanges taken from fixed pools, hands
 * complete requests (head and body) to a handler, and writes responses with
 * one send in flight per connection. Used by the relay and by the mock
 * upstream alike. Optional TLS (the mock's upstream side) runs over buffers.
 *
 * Lifecycle of an exchange: the server takes one from the pool when the
 * first byte of a request arrives and calls on_request once head and body
 * are in. From then on the handler owns it until it ends the response
 * (server_respond, server_respond_error, or server_send with last = true);
 * the server gives it back when the last byte is sent. If the client goes
 * away while the handler owns the exchange, on_abort is called instead and
 * the handler ends its part with server_exchange_release. */
#ifndef RINGWAY_SERVER_H
#define RINGWAY_SERVER_H

#include "ringway/address-t.h"
#include "ringway/common.h"
#include "ringway/http.h"
#include "ringway/loop.h"
#include "ringway/tls.h"

#include <sys/uio.h>

typedef struct server server_t;
typedef struct server_connection server_connection_t;
typedef struct server_exchange server_exchange_t;

enum {
    SERVER_IOVECS_MAX = 72,        /* pieces queued for one connection's sends */
    SERVER_HEAD_BYTES_MAX = 1024,  /* our response head, with extra headers */
    SERVER_ERROR_BODY_BYTES_MAX = 1024,
    SERVER_HELD_BUFFERS_MAX = 8,   /* received buffers kept while a request is served */
    SERVER_REQUEST_ID_BYTES = 40,
    SERVER_TIMER_LISTS = 4,        /* header, body, keep-alive, linger */
};

typedef struct server_handlers {
    void (*on_request)(server_exchange_t *exchange);
    void (*on_sent)(server_exchange_t *exchange);
    void (*on_abort)(server_exchange_t *exchange);
} server_handlers_t;

typedef struct server_config {
    const char *host;
    uint16_t port;
    uint32_t connections_max;
    uint32_t exchanges_max;
    uint32_t request_buffer_bytes;
    uint32_t large_bodies_max;
    /* Caps per socket peer address on this thread, 0 = none: a connection
     * past connections_per_ip is closed as soon as it is accepted; a large
     * body past large_bodies_per_ip is answered 429 and the connection
     * closed. The peer is read once per connection (getpeername). */
    uint32_t connections_per_ip;
    uint32_t large_bodies_per_ip;
    uint32_t body_bytes_max;
    uint32_t head_bytes_max;
    uint64_t header_timeout_ms;
    uint64_t body_timeout_ms;
    uint64_t keepalive_timeout_ms;
    tls_context_t *tls; /* NULL: plain HTTP */
    server_handlers_t handlers;
    void *handler_context;
    uint32_t thread_index;
    uint32_t instance; /* the same random value for every thread of a process */
} server_config_t;

struct server_exchange {
    server_connection_t *connection;
    server_t *server;
    uint8_t *buffer;          /* the request: head at [0, head_length), then the body */
    size_t buffer_capacity;
    size_t buffer_length;     /* bytes of this request (and none of the next) in buffer */
    bool large;               /* buffer is a large-body slot */
    http_request_parser_t parser;
    http_request_t request;
    http_chunked_decoder_t chunked;
    size_t body_offset;       /* == request.head_length */
    size_t body_length;       /* decoded body bytes at buffer[body_offset ...) */
    size_t raw_length;        /* bytes of the chunked body received, decoded or not */
    bool head_done;
    bool body_done;
    bool handler_owned;
    bool ending;              /* the handler ended the response; sends drain, then reuse */
    bool aborted;
    bool chunked_response;
    bool continue_sent;
    bool first_on_connection; /* the connection's first request */
    const char *interim_head; /* a whole 1xx head (a literal) that goes out just before the response's */
    uint16_t response_status;
    uint64_t started_ms;
    char request_id[SERVER_REQUEST_ID_BYTES];
    void *handler_state;
    server_exchange_t *next_free;
    uint8_t head[SERVER_HEAD_BYTES_MAX];
    size_t head_length;
    uint8_t chunk_header[24];
    uint8_t error_body[SERVER_ERROR_BODY_BYTES_MAX];
};

static inline const uint8_t *server_body(const server_exchange_t *exchange) {
    return exchange->buffer + exchange->body_offset;
}

int server_init(server_t **server, loop_t *loop, const server_config_t *config, char *error,
                size_t error_size);
void server_start(server_t *server);
/* Stops accepting; open connections end as their exchanges end. */
void server_stop(server_t *server);
void *server_handler_context(const server_t *server);
/* 0 .. exchanges_max - 1: lets a handler keep per-exchange state in an
 * array of its own that lives exactly as long as the exchange. */
uint32_t server_exchange_index(const server_exchange_t *exchange);
/* The socket peer of the exchange's connection (all zero when the kernel
 * could not tell, e.g. a socket that was already reset). */
const address_t *server_exchange_peer(const server_exchange_t *exchange);

/* A complete response whose body memory stays valid until the exchange ends
 * (static text, or memory the handler owns until then). */
void server_respond(server_exchange_t *exchange, uint16_t status, const char *content_type,
                    const void *body, size_t body_length, const char *extra_headers);
/* The OpenAI error shape {"error":{"message","type","param","code"}}; param
 * and code may be NULL (JSON null). */
void server_respond_error(server_exchange_t *exchange, uint16_t status, const char *type,
                          const char *message, const char *param, const char *code);
/* The same with extra header lines ("Name: value\r\n" each, or NULL). */
void server_respond_error_with_headers(server_exchange_t *exchange, uint16_t status, const char *type,
                                       const char *message, const char *param, const char *code,
                                       const char *extra_headers);
/* Starts a response: content_length >= 0 sends a fixed-length body, -1 a
 * chunked one. The head goes out with the first server_send. */
void server_begin(server_exchange_t *exchange, uint16_t status, const char *content_type,
                  int64_t content_length, const char *extra_headers);
/* Queues body pieces (framed as one chunk for chunked responses). The
 * memory must stay untouched until on_sent (or, with last, the end). Only
 * one server_send may be outstanding; `last` ends the response. */
void server_send(server_exchange_t *exchange, const struct iovec *pieces, uint32_t count, bool last);
/* The handler gives up mid-response: the connection is cut without ending
 * the response (the client sees the stream break). */
void server_exchange_abort(server_exchange_t *exchange);
/* After on_abort: the handler lets go of the exchange. */
void server_exchange_release(server_exchange_t *exchange);

#endif
