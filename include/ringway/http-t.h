/* Types of the HTTP/1.1 module (functions are in http.h). Everything here is
 * plain data: parsers keep their position in these structs and refer to the
 * caller's bytes by offsets, so nothing is allocated and buffers may move. */
#ifndef RINGWAY_HTTP_T_H
#define RINGWAY_HTTP_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A run of bytes inside the caller's buffer: buffer[offset .. offset + length). */
typedef struct http_span {
    uint32_t offset;
    uint32_t length;
} http_span_t;

/* The small fixed set of outcomes of the head parsers. */
typedef enum http_parse_result {
    HTTP_PARSE_DONE = 0,  /* the head is complete; the result struct is filled */
    HTTP_PARSE_AGAIN = 1, /* need more bytes; call again with a longer buffer */
    HTTP_PARSE_ERROR = -1 /* refused; see the parser's error_message */
} http_parse_result_t;

/* Field lines kept per head. One more line is refused (431 for requests), so
 * the budget is fixed: HTTP_HEADERS_MAX * sizeof(http_header_t) per message. */
enum { HTTP_HEADERS_MAX = 64 };

typedef struct http_header {
    http_span_t name;  /* the field name, never empty, as sent (any case) */
    http_span_t value; /* the field value without leading or trailing OWS; may be empty */
} http_header_t;

typedef enum http_method {
    HTTP_METHOD_OTHER, /* a valid token we do not name; see method_name */
    HTTP_METHOD_GET,
    HTTP_METHOD_HEAD,
    HTTP_METHOD_POST,
    HTTP_METHOD_PUT,
    HTTP_METHOD_DELETE,
    HTTP_METHOD_OPTIONS,
    HTTP_METHOD_PATCH
} http_method_t;

/* Where a head parser has got to in its buffer. Lines are found by searching
 * for LF from scan_offset, so every byte is looked at a bounded number of
 * times however the input is split. */
typedef struct http_head_cursor {
    uint32_t line_start;  /* first byte of the line not yet processed */
    uint32_t scan_offset; /* bytes before this were already searched for LF */
} http_head_cursor_t;

typedef enum http_head_stage {
    HTTP_HEAD_STAGE_START = 0, /* nothing parsed yet; the result struct is not yet reset */
    HTTP_HEAD_STAGE_START_LINE,
    HTTP_HEAD_STAGE_FIELDS,
    HTTP_HEAD_STAGE_DONE,
    HTTP_HEAD_STAGE_ERROR
} http_head_stage_t;

/* What every head parser keeps to resume: the first member of both
 * http_request_parser_t and http_response_parser_t (http_head_drive). */
typedef struct http_head_state {
    uint32_t head_bytes_max;  /* a head longer than this is refused */
    http_head_cursor_t cursor;
    http_head_stage_t stage;
    size_t length_seen;       /* the longest length given so far (it may only grow) */
} http_head_state_t;

/* A parsed request head. Spans refer to the buffer given to http_request_parse;
 * every span lies inside [0, head_length). */
typedef struct http_request {
    http_method_t method;
    http_span_t method_name; /* the method token as sent, e.g. "POST" */
    http_span_t target;      /* the request-target as sent */
    http_span_t path;        /* target up to '?' (for absolute-form: the path after the
                              * authority, which may be empty) */
    http_span_t query;       /* bytes after the first '?', without it; length 0 when absent */
    bool has_query;          /* a '?' was present (the query may still be empty) */
    uint8_t version_minor;   /* 0 or 1: HTTP/1.0 or HTTP/1.1 */
    uint32_t header_count;
    http_header_t headers[HTTP_HEADERS_MAX];
    int64_t content_length; /* -1 when Content-Length is absent */
    bool chunked;           /* Transfer-Encoding: chunked (never together with content_length) */
    bool keep_alive;        /* the connection may serve another request after this one */
    bool expect_continue;   /* HTTP/1.1 "Expect: 100-continue" */
    bool has_authorization;
    bool has_host;
    bool has_content_type;
    http_span_t authorization; /* the value of the only Authorization field */
    http_span_t host;          /* the value of the only Host field (may be empty); for an
                                * absolute-form target RFC 9112 section 3.2.2 makes the
                                * target's authority win, which the caller may check */
    http_span_t content_type;  /* the value of the only Content-Type field */
    bool has_forwarded_for;
    http_span_t forwarded_for; /* the value of the last X-Forwarded-For field (the nearest proxy's) */
    uint32_t head_length; /* bytes from the buffer's start to just after the empty line that
                           * ends the head (including ignored leading empty lines): the body,
                           * or the next pipelined request, starts here */
} http_request_t;

/* Resumable request head parser; see http_request_parse. */
typedef struct http_request_parser {
    http_head_state_t head;      /* a head longer than head_bytes_max is refused with 431 */
    const http_request_t *request; /* the result struct bound on the first call */
    bool seen_content_length;
    bool seen_transfer_encoding;
    bool seen_connection_close;
    bool seen_connection_keep_alive;
    uint16_t error_status;       /* on HTTP_PARSE_ERROR: 400, 431, 501 or 505 */
    const char *error_message;   /* on HTTP_PARSE_ERROR: static, lower case, for the client */
} http_request_parser_t;

/* A parsed upstream response head. Spans refer to the buffer given to
 * http_response_parse; every span lies inside [0, head_length). */
typedef struct http_response {
    uint16_t status;       /* 100 ..= 599 */
    uint8_t version_minor; /* 0 or 1 */
    http_span_t reason;    /* the reason phrase, possibly empty */
    uint32_t header_count;
    http_header_t headers[HTTP_HEADERS_MAX];
    int64_t content_length; /* -1 when Content-Length is absent */
    bool chunked;           /* Transfer-Encoding: chunked (never together with content_length) */
    bool keep_alive;        /* the upstream connection may be reused after this body */
    bool body_absent;       /* 1xx, 204 or 304: no body follows, whatever the fields say */
    bool body_until_close;  /* neither length nor chunked: the body ends when the peer closes */
    bool has_content_type;
    http_span_t content_type;
    uint32_t head_length; /* bytes from the buffer's start to just after the head's empty line */
} http_response_t;

/* Resumable response head parser; see http_response_parse. */
typedef struct http_response_parser {
    http_head_state_t head;
    const http_response_t *response;
    bool seen_content_length;
    bool seen_transfer_encoding;
    bool seen_connection_close;
    bool seen_connection_keep_alive;
    const char *error_message; /* on HTTP_PARSE_ERROR: static, lower case */
} http_response_parser_t;

/* Chunked-body decoder (RFC 9112 section 7.1). */
typedef enum http_chunked_result {
    HTTP_CHUNKED_DONE = 0,  /* last-chunk, trailers and the final CRLF consumed */
    HTTP_CHUNKED_AGAIN = 1, /* every input byte consumed; no payload in them to report */
    HTTP_CHUNKED_DATA = 2,  /* one payload span is ready */
    HTTP_CHUNKED_ERROR = -1 /* refused; see the decoder's error_message */
} http_chunked_result_t;

/* Bounds of the chunked framing: a chunk larger than HTTP_CHUNK_SIZE_MAX is
 * refused, as is a chunk-size line (size and extensions) longer than
 * HTTP_CHUNK_LINE_BYTES_MAX and a trailer section longer than
 * HTTP_CHUNK_TRAILER_BYTES_MAX (line ends included). */
#define HTTP_CHUNK_SIZE_MAX ((uint64_t)1 << 40)
enum { HTTP_CHUNK_LINE_BYTES_MAX = 1024, HTTP_CHUNK_TRAILER_BYTES_MAX = 8192 };

typedef enum http_chunked_state {
    HTTP_CHUNKED_STATE_SIZE_FIRST = 0, /* expecting the first hex digit of a chunk size */
    HTTP_CHUNKED_STATE_SIZE,           /* inside the hex digits */
    HTTP_CHUNKED_STATE_SIZE_SPACE,     /* BWS after the digits; only ';' may follow */
    HTTP_CHUNKED_STATE_EXTENSION,      /* skipping chunk extensions up to CR */
    HTTP_CHUNKED_STATE_SIZE_LF,        /* CR of the size line seen; LF must follow */
    HTTP_CHUNKED_STATE_DATA,           /* chunk payload */
    HTTP_CHUNKED_STATE_DATA_CR,        /* payload done; CR must follow */
    HTTP_CHUNKED_STATE_DATA_LF,
    HTTP_CHUNKED_STATE_TRAILER_START,  /* at the start of a trailer line or the final CRLF */
    HTTP_CHUNKED_STATE_TRAILER_NAME,
    HTTP_CHUNKED_STATE_TRAILER_VALUE,
    HTTP_CHUNKED_STATE_TRAILER_LF,     /* CR after a trailer field seen */
    HTTP_CHUNKED_STATE_FINAL_LF,       /* CR of the final empty line seen */
    HTTP_CHUNKED_STATE_DONE,
    HTTP_CHUNKED_STATE_ERROR
} http_chunked_state_t;

typedef struct http_chunked_decoder {
    http_chunked_state_t state;
    uint64_t chunk_remaining;     /* payload bytes of the current chunk not yet reported */
    uint32_t line_bytes;          /* bytes of the current chunk-size line so far */
    uint32_t trailer_bytes;       /* bytes of the trailer section so far */
    uint64_t payload_bytes_total; /* payload reported so far, for the caller's body limit */
    const char *error_message;    /* on HTTP_CHUNKED_ERROR: static, lower case */
} http_chunked_decoder_t;

#endif
