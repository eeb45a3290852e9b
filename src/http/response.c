/* Upstream response heads per RFC 9112, parsed line by line like requests
 * (the line and field building blocks live in request.c).
 *
 * Upstreams are trusted more than clients but not with framing: a response
 * whose body length could be read two ways would desynchronise a pooled
 * keep-alive connection and hand one client another client's bytes. So the
 * leniency here is limited to things that cannot move the end of the body. */
#include "ringway/http.h"

#include <string.h>

void http_response_parser_init(http_response_parser_t *parser, uint32_t head_bytes_max) {
    RW_ASSERT(parser != NULL);
    RW_ASSERT(head_bytes_max > 0 && head_bytes_max < ((uint32_t)1 << 31));
    memset(parser, 0, sizeof(*parser));
    parser->head.head_bytes_max = head_bytes_max;
    parser->head.stage = HTTP_HEAD_STAGE_START;
}

static http_parse_result_t response_fail(http_response_parser_t *parser, const char *message) {
    RW_ASSERT(message != NULL);
    parser->head.stage = HTTP_HEAD_STAGE_ERROR;
    parser->error_message = message;
    return HTTP_PARSE_ERROR;
}

static bool response_is_digit(uint8_t byte) {
    return byte >= '0' && byte <= '9';
}

/* status-line = HTTP-version SP status-code SP [ reason-phrase ]; the space
 * before an empty reason may also be missing. */
static http_parse_result_t response_parse_status_line(http_response_parser_t *parser,
                                                      http_response_t *response,
                                                      const uint8_t *buffer, http_span_t line) {
    const uint8_t *text = buffer + line.offset;
    if (line.length < 12 || text[8] != ' ') {
        return response_fail(parser, "malformed upstream status line");
    }
    http_span_t version = {line.offset, 8};
    if (http_check_version(buffer, version, &response->version_minor) != HTTP_VERSION_SUPPORTED) {
        return response_fail(parser, "unsupported upstream http version");
    }
    if (!response_is_digit(text[9]) || !response_is_digit(text[10]) ||
        !response_is_digit(text[11])) {
        return response_fail(parser, "malformed upstream status code");
    }
    uint16_t status = (uint16_t)((text[9] - '0') * 100 + (text[10] - '0') * 10 + (text[11] - '0'));
    if (status < 100 || status > 599) {
        return response_fail(parser, "upstream status code out of range");
    }
    response->status = status;
    response->reason.offset = line.offset + line.length;
    response->reason.length = 0;
    if (line.length > 12) {
        if (text[12] != ' ') {
            return response_fail(parser, "malformed upstream status line");
        }
        for (uint32_t index = 13; index < line.length; index++) {
            uint8_t byte = text[index];
            if (!(byte == '\t' || (byte >= 0x20 && byte != 0x7f))) {
                return response_fail(parser, "invalid character in upstream reason phrase");
            }
        }
        response->reason.offset = line.offset + 13;
        response->reason.length = line.length - 13;
    }
    parser->head.stage = HTTP_HEAD_STAGE_FIELDS;
    return HTTP_PARSE_AGAIN;
}

static http_parse_result_t response_parse_field(http_response_parser_t *parser,
                                                http_response_t *response, const uint8_t *buffer,
                                                http_span_t line) {
    if (response->header_count == HTTP_HEADERS_MAX) {
        return response_fail(parser, "too many upstream header fields");
    }
    http_header_t header;
    const char *problem = http_head_parse_field_line(buffer, line, &header);
    if (problem != NULL) {
        return response_fail(parser, problem);
    }
    response->headers[response->header_count] = header;
    response->header_count++;

    if (http_span_equals_ignore_case(buffer, header.name, "content-length")) {
        if (parser->seen_transfer_encoding) {
            return response_fail(parser, "upstream sent content-length with transfer-encoding");
        }
        int64_t content_length;
        if (!http_parse_content_length(buffer, header.value, &content_length)) {
            return response_fail(parser, "invalid upstream content-length");
        }
        /* RFC 9110 section 8.6: identical repeats may be taken as one. */
        if (parser->seen_content_length && content_length != response->content_length) {
            return response_fail(parser, "conflicting upstream content-length");
        }
        parser->seen_content_length = true;
        response->content_length = content_length;
    } else if (http_span_equals_ignore_case(buffer, header.name, "transfer-encoding")) {
        if (parser->seen_content_length) {
            return response_fail(parser, "upstream sent content-length with transfer-encoding");
        }
        if (parser->seen_transfer_encoding) {
            return response_fail(parser, "duplicate upstream transfer-encoding");
        }
        if (response->version_minor == 0) {
            return response_fail(parser, "transfer-encoding in an http/1.0 response");
        }
        parser->seen_transfer_encoding = true;
        if (!http_span_equals_ignore_case(buffer, header.value, "chunked")) {
            return response_fail(parser, "unsupported upstream transfer-encoding");
        }
        response->chunked = true;
    } else if (http_span_equals_ignore_case(buffer, header.name, "connection")) {
        http_scan_connection_options(buffer, header.value, &parser->seen_connection_close,
                                     &parser->seen_connection_keep_alive);
    } else if (http_span_equals_ignore_case(buffer, header.name, "content-type")) {
        if (response->has_content_type) {
            return response_fail(parser, "duplicate upstream content-type");
        }
        response->has_content_type = true;
        response->content_type = header.value;
    }
    return HTTP_PARSE_AGAIN;
}

static http_parse_result_t response_finish(http_response_parser_t *parser,
                                           http_response_t *response, uint32_t head_length) {
    RW_ASSERT(!(response->chunked && response->content_length >= 0));
    uint16_t status = response->status;
    response->body_absent = status < 200 || status == 204 || status == 304;
    if (response->version_minor == 1) {
        response->keep_alive = !parser->seen_connection_close;
    } else {
        response->keep_alive = parser->seen_connection_keep_alive && !parser->seen_connection_close;
    }
    if (!response->body_absent && !response->chunked && response->content_length < 0) {
        response->body_until_close = true;
        response->keep_alive = false;
    }
    response->head_length = head_length;
    parser->head.stage = HTTP_HEAD_STAGE_DONE;
    return HTTP_PARSE_DONE;
}

/* The response parser's callbacks for http_head_drive. */
static void response_begin(void *parser, void *result) {
    http_response_t *response = result;
    memset(response, 0, sizeof(*response));
    response->content_length = -1;
    ((http_response_parser_t *)parser)->response = response;
}

static http_parse_result_t response_on_start_line(void *parser, void *result, const uint8_t *buffer,
                                                  http_span_t line) {
    return response_parse_status_line(parser, result, buffer, line);
}

static http_parse_result_t response_on_field(void *parser, void *result, const uint8_t *buffer, http_span_t line) {
    return response_parse_field(parser, result, buffer, line);
}

static http_parse_result_t response_on_finish(void *parser, void *result, uint32_t head_length) {
    return response_finish(parser, result, head_length);
}

static http_parse_result_t response_on_fail(void *parser, bool too_large) {
    return response_fail(parser, too_large ? "upstream response head too large" : "bare lf in upstream response head");
}

static const http_head_handlers_t response_handlers = {
    .begin = response_begin,
    .start_line = response_on_start_line,
    .field = response_on_field,
    .finish = response_on_finish,
    .fail = response_on_fail,
    .skip_empty_lines_before_start = false,
};

http_parse_result_t http_response_parse(http_response_parser_t *parser, http_response_t *response,
                                        const uint8_t *buffer, size_t length) {
    RW_ASSERT(parser != NULL && response != NULL);
    RW_ASSERT(parser->head.stage == HTTP_HEAD_STAGE_START || parser->response == response);
    return http_head_drive(&parser->head, &response_handlers, parser, response, buffer, length);
}

const http_header_t *http_response_find_header(const http_response_t *response,
                                               const uint8_t *buffer, const char *name) {
    RW_ASSERT(response->header_count <= HTTP_HEADERS_MAX);
    for (uint32_t index = 0; index < response->header_count; index++) {
        if (http_span_equals_ignore_case(buffer, response->headers[index].name, name)) {
            return &response->headers[index];
        }
    }
    return NULL;
}
