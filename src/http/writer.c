#include "ringway/http-writer.h"

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

/* Appends formatted text; on overflow marks the result as not fitting. */
typedef struct writer {
    uint8_t *out;
    size_t capacity;
    size_t length;
    bool overflow;
} writer_t;

static void writer_bytes(writer_t *writer, const void *bytes, size_t length) {
    if (writer->overflow || length > writer->capacity - writer->length) {
        writer->overflow = true;
        return;
    }
    memcpy(writer->out + writer->length, bytes, length);
    writer->length += length;
}

static void writer_text(writer_t *writer, const char *text) { writer_bytes(writer, text, strlen(text)); }

static void writer_unsigned(writer_t *writer, uint64_t value) {
    char digits[24];
    int length = snprintf(digits, sizeof digits, "%llu", (unsigned long long)value);
    writer_bytes(writer, digits, (size_t)length);
}

static size_t writer_result(const writer_t *writer) { return writer->overflow ? 0 : writer->length; }

size_t http_write_response_head(uint8_t *out, size_t capacity, uint16_t status, const char *content_type,
                                int64_t content_length, bool keep_alive, const char *request_id,
                                const char *extra_headers) {
    RW_ASSERT(status >= 100 && status <= 599);
    writer_t writer = {.out = out, .capacity = capacity};
    writer_text(&writer, "HTTP/1.1 ");
    writer_unsigned(&writer, status);
    writer_text(&writer, " ");
    writer_text(&writer, http_status_reason(status));
    writer_text(&writer, "\r\n");
    if (content_type != NULL) {
        writer_text(&writer, "Content-Type: ");
        writer_text(&writer, content_type);
        writer_text(&writer, "\r\n");
    }
    if (content_length >= 0) {
        writer_text(&writer, "Content-Length: ");
        writer_unsigned(&writer, (uint64_t)content_length);
        writer_text(&writer, "\r\n");
    } else {
        writer_text(&writer, "Transfer-Encoding: chunked\r\n");
    }
    if (request_id != NULL && request_id[0] != '\0') {
        writer_text(&writer, "x-request-id: ");
        writer_text(&writer, request_id);
        writer_text(&writer, "\r\n");
    }
    if (!keep_alive) writer_text(&writer, "Connection: close\r\n");
    if (extra_headers != NULL) writer_text(&writer, extra_headers);
    writer_text(&writer, "\r\n");
    return writer_result(&writer);
}

size_t http_write_chunk_header(uint8_t *out, size_t capacity, size_t length) {
    RW_ASSERT(length > 0);
    char text[24];
    int written = snprintf(text, sizeof text, "%zx\r\n", length);
    if ((size_t)written > capacity) return 0;
    memcpy(out, text, (size_t)written);
    return (size_t)written;
}

size_t http_write_json_escaped(uint8_t *out, size_t capacity, const char *text, size_t length) {
    writer_t writer = {.out = out, .capacity = capacity};
    static const char hex[] = "0123456789abcdef";
    for (size_t index = 0; index < length; index++) {
        uint8_t byte = (uint8_t)text[index];
        if (byte == '"' || byte == '\\') {
            uint8_t pair[2] = {'\\', byte};
            writer_bytes(&writer, pair, 2);
        } else if (byte == '\n') {
            writer_text(&writer, "\\n");
        } else if (byte < 0x20) {
            uint8_t escape[6] = {'\\', 'u', '0', '0', (uint8_t)hex[byte >> 4], (uint8_t)hex[byte & 15]};
            writer_bytes(&writer, escape, 6);
        } else {
            writer_bytes(&writer, &byte, 1);
        }
    }
    return writer_result(&writer);
}

static void writer_json_string_or_null(writer_t *writer, const char *text) {
    if (text == NULL) {
        writer_text(writer, "null");
        return;
    }
    writer_text(writer, "\"");
    if (writer->overflow) return;
    size_t written = http_write_json_escaped(writer->out + writer->length, writer->capacity - writer->length,
                                             text, strlen(text));
    if (written == 0 && text[0] != '\0') writer->overflow = true;
    writer->length += written;
    writer_text(writer, "\"");
}

size_t http_write_error_body(uint8_t *out, size_t capacity, const char *message, const char *type,
                             const char *param, const char *code) {
    RW_ASSERT(message != NULL && type != NULL);
    writer_t writer = {.out = out, .capacity = capacity};
    writer_text(&writer, "{\"error\":{\"message\":");
    writer_json_string_or_null(&writer, message);
    writer_text(&writer, ",\"type\":");
    writer_json_string_or_null(&writer, type);
    writer_text(&writer, ",\"param\":");
    writer_json_string_or_null(&writer, param);
    writer_text(&writer, ",\"code\":");
    writer_json_string_or_null(&writer, code);
    writer_text(&writer, "}}");
    return writer_result(&writer);
}
