/* Formatting of what the relay writes: response heads, chunk framing and the
 * OpenAI error object. Every function writes into a caller buffer, never
 * past `capacity`, and returns the bytes written (0 if it did not fit). */
#ifndef RINGWAY_HTTP_WRITER_H
#define RINGWAY_HTTP_WRITER_H

#include "ringway/common.h"

const char *http_status_reason(uint16_t status);

/* "HTTP/1.1 STATUS REASON" and our standard fields. content_length >= 0
 * writes Content-Length, -1 writes Transfer-Encoding: chunked. extra_headers
 * is NULL or complete "Name: value\r\n" lines. */
size_t http_write_response_head(uint8_t *out, size_t capacity, uint16_t status, const char *content_type,
                                int64_t content_length, bool keep_alive, const char *request_id,
                                const char *extra_headers);

/* "<hex length>\r\n" for one chunk of `length` bytes (length > 0). */
size_t http_write_chunk_header(uint8_t *out, size_t capacity, size_t length);


/* {"error":{"message":...,"type":...,"param":...,"code":...}}; param and code
 * NULL become JSON null. */
size_t http_write_error_body(uint8_t *out, size_t capacity, const char *message, const char *type,
                             const char *param, const char *code);

#endif
