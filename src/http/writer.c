#include "ringway/http-writer.h"

#include "ringway/text.h"

#include <stdio.h>
#include <string.h>

const char *http_status_reason(uint16_t status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

size_t http_write_response_head(uint8_t *out, size_t capacity, uint16_t status, const char *content_type,
                                int64_t content_length, bool keep_alive, const char *request_id,
                                const char *extra_headers) {
    RW_ASSERT(status >= 100 && status <= 599);
    text_buffer_t writer = text_buffer_over(out, capacity);
    text_buffer_text(&writer, "HTTP/1.1 ");
    text_buffer_u64(&writer, status);
    text_buffer_text(&writer, " ");
    text_buffer_text(&writer, http_status_reason(status));
    text_buffer_text(&writer, "\r\n");
    if (content_type != NULL) {
        text_buffer_text(&writer, "Content-Type: ");
        text_buffer_text(&writer, content_type);
        text_buffer_text(&writer, "\r\n");
    }
    if (content_length >= 0) {
        text_buffer_text(&writer, "Content-Length: ");
        text_buffer_u64(&writer, (uint64_t)content_length);
        text_buffer_text(&writer, "\r\n");
    } else {
        text_buffer_text(&writer, "Transfer-Encoding: chunked\r\n");
    }
    if (request_id != NULL && request_id[0] != '\0') {
        text_buffer_text(&writer, "x-request-id: ");
        text_buffer_text(&writer, request_id);
        text_buffer_text(&writer, "\r\n");
    }
    if (!keep_alive) text_buffer_text(&writer, "Connection: close\r\n");
    if (extra_headers != NULL) text_buffer_text(&writer, extra_headers);
    text_buffer_text(&writer, "\r\n");
    return text_buffer_result(&writer);
}

size_t http_write_chunk_header(uint8_t *out, size_t capacity, size_t length) {
    RW_ASSERT(length > 0);
    char text[24];
    int written = snprintf(text, sizeof text, "%zx\r\n", length);
    if ((size_t)written > capacity) return 0;
    memcpy(out, text, (size_t)written);
    return (size_t)written;
}

static void http_write_json_string_or_null(text_buffer_t *writer, const char *text) {
    if (text == NULL) {
        text_buffer_text(writer, "null");
        return;
    }
    text_buffer_json_string(writer, text, strlen(text));
}

size_t http_write_error_body(uint8_t *out, size_t capacity, const char *message, const char *type,
                             const char *param, const char *code) {
    RW_ASSERT(message != NULL && type != NULL);
    text_buffer_t writer = text_buffer_over(out, capacity);
    text_buffer_text(&writer, "{\"error\":{\"message\":");
    http_write_json_string_or_null(&writer, message);
    text_buffer_text(&writer, ",\"type\":");
    http_write_json_string_or_null(&writer, type);
    text_buffer_text(&writer, ",\"param\":");
    http_write_json_string_or_null(&writer, param);
    text_buffer_text(&writer, ",\"code\":");
    http_write_json_string_or_null(&writer, code);
    text_buffer_text(&writer, "}}");
    return text_buffer_result(&writer);
}
