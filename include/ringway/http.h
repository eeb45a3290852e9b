/* HTTP/1.1 message framing per RFC 9112: resumable head parsers for client
 * requests and upstream responses, and a zero-copy chunked-body decoder.
 * Pure functions over caller-owned bytes: no allocation, no I/O. */
#ifndef RINGWAY_HTTP_H
#define RINGWAY_HTTP_H

#include "ringway/common.h"
#include "ringway/http-t.h"

/* ---- Request heads (src/http/request.c) ---------------------------------- */

/* Prepares a parser for one request head. head_bytes_max (1 ..< 2^31) bounds
 * the head, ignored leading empty lines included. */
void http_request_parser_init(http_request_parser_t *parser, uint32_t head_bytes_max);

/* Parses the request head at the start of buffer. buffer holds every byte
 * received so far for this message, from its first byte; call again with the
 * same (or a moved copy of the same) bytes and a larger length after each read.
 * The parser resumes where it stopped, so the total work is linear in the bytes.
 * request must be the same struct on every call for one message; the first
 * call resets it.
 * Returns HTTP_PARSE_DONE with request filled (the body starts at
 * request->head_length; bytes beyond it are not looked at), HTTP_PARSE_AGAIN
 * when the head is not complete yet, or HTTP_PARSE_ERROR with
 * parser->error_status 400 (malformed, ambiguous framing, missing Host in
 * HTTP/1.1), 431 (head longer than head_bytes_max, decided as soon as that many
 * bytes arrive without an end, or more than HTTP_HEADERS_MAX fields), 501
 * (a Transfer-Encoding other than chunked) or 505 (an HTTP version other than
 * 1.0 and 1.1) and a static parser->error_message. Once DONE or ERROR, further
 * calls return the same result and change nothing. */
http_parse_result_t http_request_parse(http_request_parser_t *parser, http_request_t *request,
                                       const uint8_t *buffer, size_t length);

/* The first field named name (compared ignoring ASCII case), or NULL. */
const http_header_t *http_request_find_header(const http_request_t *request,
                                              const uint8_t *buffer, const char *name);

/* ---- Upstream response heads (src/http/response.c) ----------------------- */

void http_response_parser_init(http_response_parser_t *parser, uint32_t head_bytes_max);

/* Parses an upstream response head with the same calling contract as
 * http_request_parse. Lenient where that cannot change framing: the reason
 * phrase may be empty or missing with its space, and repeated Content-Length
 * fields with the same value are accepted. Refused (HTTP_PARSE_ERROR, message
 * in parser->error_message): a head over head_bytes_max or HTTP_HEADERS_MAX
 * fields, bare LF, obs-fold, invalid names or values, Content-Length with
 * Transfer-Encoding, conflicting or non-numeric Content-Length, any
 * Transfer-Encoding but chunked, versions other than HTTP/1.0 and HTTP/1.1,
 * statuses outside 100 ..= 599. After a 1xx head (body_absent), the caller
 * parses the next head at head_length with a fresh parser. Whether a response
 * to HEAD has a body is the caller's business. */
http_parse_result_t http_response_parse(http_response_parser_t *parser, http_response_t *response,
                                        const uint8_t *buffer, size_t length);

const http_header_t *http_response_find_header(const http_response_t *response,
                                               const uint8_t *buffer, const char *name);

/* ---- Chunked bodies (src/http/chunked.c) --------------------------------- */

void http_chunked_decoder_init(http_chunked_decoder_t *decoder);

/* Decodes the chunked body from a stream: input holds only bytes not given
 * before. Payload is not copied; the decoder reports where it is.
 * Returns HTTP_CHUNKED_DATA when input[*data_offset .. *data_offset +
 * *data_length) is payload (never empty); *consumed bytes of input were used,
 * that span included: call again with the rest. HTTP_CHUNKED_AGAIN when all of
 * input was consumed without payload to report. HTTP_CHUNKED_DONE when the
 * last chunk, trailers (skipped) and final CRLF are consumed: input[*consumed ..]
 * belongs to the next message. HTTP_CHUNKED_ERROR with decoder->error_message
 * for malformed framing, bare LF, a chunk over HTTP_CHUNK_SIZE_MAX, or size
 * lines or trailers over their bounds. decoder->payload_bytes_total counts the
 * payload reported so far. After DONE or ERROR, calls consume nothing and
 * return the same result. */
http_chunked_result_t http_chunked_decode(http_chunked_decoder_t *decoder, const uint8_t *input,
                                          size_t length, size_t *consumed, size_t *data_offset,
                                          size_t *data_length);

/* ---- Small helpers ------------------------------------------------------- */

/* Whether buffer[span] equals text ignoring ASCII case (text is NUL-terminated). */
bool http_span_equals_ignore_case(const uint8_t *buffer, http_span_t span, const char *text);

/* tchar of RFC 9110 section 5.6.2: the bytes allowed in methods and field names. */
bool http_is_token_char(uint8_t byte);

/* ---- Building blocks shared by request.c and response.c ------------------ */

typedef enum http_line_result {
    HTTP_LINE_READY, /* *line holds one line without its CRLF */
    HTTP_LINE_AGAIN, /* no complete line within limit */
    HTTP_LINE_BARE_LF /* an LF without CR before it */
} http_line_result_t;

/* Finds the next CRLF-terminated line at or after cursor->line_start, looking
 * only at buffer[0 .. limit) and at bytes not searched before. */
http_line_result_t http_head_next_line(http_head_cursor_t *cursor, const uint8_t *buffer,
                                       size_t limit, http_span_t *line);

/* The line loop both head parsers share. A parser gives its callbacks
 * (each receives the parser and the result struct it fills):
 *   begin       on the first call: reset the result struct
 *   start_line  the request or status line
 *   field       one field line
 *   finish      the empty line: the head is head_length bytes
 *   fail        the head broke a rule of the driver's: `too_large` (more
 *               than head_bytes_max without its end) or else a bare LF
 * start_line, field and finish return HTTP_PARSE_ERROR after recording the
 * failure (stage ERROR), anything else to go on; fail always records and
 * returns HTTP_PARSE_ERROR. A DONE or ERROR parser answers the same again. */
typedef struct http_head_handlers {
    void (*begin)(void *parser, void *result);
    http_parse_result_t (*start_line)(void *parser, void *result, const uint8_t *buffer, http_span_t line);
    http_parse_result_t (*field)(void *parser, void *result, const uint8_t *buffer, http_span_t line);
    http_parse_result_t (*finish)(void *parser, void *result, uint32_t head_length);
    http_parse_result_t (*fail)(void *parser, bool too_large);
    bool skip_empty_lines_before_start; /* RFC 9112 section 2.2, for requests */
} http_head_handlers_t;

http_parse_result_t http_head_drive(http_head_state_t *head, const http_head_handlers_t *handlers, void *parser,
                                    void *result, const uint8_t *buffer, size_t length);

/* Splits one field line into name and OWS-trimmed value. Returns NULL, or a
 * static message for obs-fold, a bad or empty name, whitespace before the colon,
 * a missing colon, or control characters in the value. */
const char *http_head_parse_field_line(const uint8_t *buffer, http_span_t line,
                                       http_header_t *header);

/* Content-Length = 1*DIGIT without sign, list or overflow of int64_t. */
bool http_parse_content_length(const uint8_t *buffer, http_span_t value, int64_t *content_length);

/* Notes "close" and "keep-alive" among the comma-separated Connection options. */
void http_scan_connection_options(const uint8_t *buffer, http_span_t value, bool *has_close,
                                  bool *has_keep_alive);

typedef enum http_version_check {
    HTTP_VERSION_SUPPORTED,   /* HTTP/1.0 or HTTP/1.1; *minor set */
    HTTP_VERSION_UNSUPPORTED, /* well-formed HTTP/x.y, but another version */
    HTTP_VERSION_MALFORMED
} http_version_check_t;

/* Checks that buffer[span] is exactly HTTP-version ("HTTP/" DIGIT "." DIGIT). */
http_version_check_t http_check_version(const uint8_t *buffer, http_span_t span, uint8_t *minor);

#endif
