/* Request heads per RFC 9112, parsed line by line from the caller's buffer.
 * Also home of the small building blocks the response parser shares (lines,
 * field lines, Content-Length, Connection, versions, character classes).
 *
 * Strictness is the point: this parser faces the internet, and every message
 * framing that two HTTP implementations could read differently (bare LF,
 * obs-fold, CL with TE, repeated CL, odd whitespace) is refused instead of
 * guessed at, so no one behind the relay can be smuggled a second request. */
#include "ringway/http.h"

#include <string.h>

static bool http_is_ows(uint8_t byte) {
    return byte == ' ' || byte == '\t';
}

static bool http_is_digit(uint8_t byte) {
    return byte >= '0' && byte <= '9';
}

static bool http_is_alpha(uint8_t byte) {
    return (byte >= 'a' && byte <= 'z') || (byte >= 'A' && byte <= 'Z');
}

static bool http_is_hex_digit(uint8_t byte) {
    return http_is_digit(byte) || (byte >= 'a' && byte <= 'f') || (byte >= 'A' && byte <= 'F');
}

static uint8_t http_lower(uint8_t byte) {
    return (byte >= 'A' && byte <= 'Z') ? (uint8_t)(byte + ('a' - 'A')) : byte;
}

bool http_is_token_char(uint8_t byte) {
    if (http_is_alpha(byte) || http_is_digit(byte)) {
        return true;
    }
    switch (byte) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return true;
    default:
        return false;
    }
}

/* field-vchar, SP and HTAB: what RFC 9110 allows inside a field value
 * (obs-text, bytes 0x80 and up, is kept as opaque bytes). */
static bool http_is_field_value_char(uint8_t byte) {
    return byte == '\t' || (byte >= 0x20 && byte != 0x7f);
}

/* RFC 3986 unreserved and sub-delims. */
static bool http_is_uri_unreserved(uint8_t byte) {
    return http_is_alpha(byte) || http_is_digit(byte) || byte == '-' || byte == '.' ||
           byte == '_' || byte == '~';
}

static bool http_is_uri_sub_delim(uint8_t byte) {
    switch (byte) {
    case '!': case '$': case '&': case '\'': case '(': case ')': case '*': case '+':
    case ',': case ';': case '=':
        return true;
    default:
        return false;
    }
}

bool http_span_equals_ignore_case(const uint8_t *buffer, http_span_t span, const char *text) {
    RW_ASSERT(text != NULL);
    RW_ASSERT(buffer != NULL || span.length == 0);
    size_t text_length = strlen(text);
    if (text_length != span.length) {
        return false;
    }
    for (size_t index = 0; index < text_length; index++) {
        if (http_lower(buffer[span.offset + index]) != http_lower((uint8_t)text[index])) {
            return false;
        }
    }
    return true;
}

http_line_result_t http_head_next_line(http_head_cursor_t *cursor, const uint8_t *buffer,
                                       size_t limit, http_span_t *line) {
    RW_ASSERT(cursor->line_start <= cursor->scan_offset);
    RW_ASSERT(cursor->scan_offset <= limit);
    RW_ASSERT(limit <= UINT32_MAX);
    if (cursor->scan_offset == limit) {
        return HTTP_LINE_AGAIN;
    }
    const uint8_t *found = memchr(buffer + cursor->scan_offset, '\n', limit - cursor->scan_offset);
    if (found == NULL) {
        cursor->scan_offset = (uint32_t)limit;
        return HTTP_LINE_AGAIN;
    }
    uint32_t line_feed = (uint32_t)(found - buffer);
    if (line_feed == cursor->line_start || buffer[line_feed - 1] != '\r') {
        return HTTP_LINE_BARE_LF;
    }
    line->offset = cursor->line_start;
    line->length = line_feed - 1 - cursor->line_start;
    cursor->line_start = line_feed + 1;
    cursor->scan_offset = line_feed + 1;
    return HTTP_LINE_READY;
}

/* field-line = field-name ":" OWS field-value OWS, with nothing between the
 * name and the colon (RFC 9112 section 5.1) and no obs-fold (section 5.2). */
const char *http_head_parse_field_line(const uint8_t *buffer, http_span_t line,
                                       http_header_t *header) {
    RW_ASSERT(line.length > 0);
    uint32_t start = line.offset;
    uint32_t end = line.offset + line.length;
    if (http_is_ows(buffer[start])) {
        return "obsolete line folding is not allowed";
    }
    uint32_t position = start;
    while (position < end && http_is_token_char(buffer[position])) {
        position++;
    }
    if (position == end) {
        return "header field without a colon";
    }
    if (buffer[position] != ':') {
        if (http_is_ows(buffer[position])) {
            return "whitespace between header name and colon";
        }
        return "invalid character in header name";
    }
    if (position == start) {
        return "empty header name";
    }
    header->name.offset = start;
    header->name.length = position - start;

    uint32_t value_start = position + 1;
    while (value_start < end && http_is_ows(buffer[value_start])) {
        value_start++;
    }
    uint32_t value_end = end;
    while (value_end > value_start && http_is_ows(buffer[value_end - 1])) {
        value_end--;
    }
    for (uint32_t index = value_start; index < value_end; index++) {
        if (!http_is_field_value_char(buffer[index])) {
            return "invalid character in header value";
        }
    }
    header->value.offset = value_start;
    header->value.length = value_end - value_start;
    return NULL;
}

bool http_parse_content_length(const uint8_t *buffer, http_span_t value, int64_t *content_length) {
    if (value.length == 0) {
        return false;
    }
    int64_t total = 0;
    for (uint32_t index = 0; index < value.length; index++) {
        uint8_t byte = buffer[value.offset + index];
        if (!http_is_digit(byte)) {
            return false;
        }
        int64_t digit = byte - '0';
        if (total > (INT64_MAX - digit) / 10) {
            return false;
        }
        total = total * 10 + digit;
    }
    RW_ASSERT(total >= 0);
    *content_length = total;
    return true;
}

void http_scan_connection_options(const uint8_t *buffer, http_span_t value, bool *has_close,
                                  bool *has_keep_alive) {
    uint32_t end = value.offset + value.length;
    uint32_t position = value.offset;
    while (position <= end) {
        uint32_t element_start = position;
        while (position < end && buffer[position] != ',') {
            position++;
        }
        uint32_t element_end = position;
        while (element_start < element_end && http_is_ows(buffer[element_start])) {
            element_start++;
        }
        while (element_end > element_start && http_is_ows(buffer[element_end - 1])) {
            element_end--;
        }
        http_span_t element = {element_start, element_end - element_start};
        if (http_span_equals_ignore_case(buffer, element, "close")) {
            *has_close = true;
        } else if (http_span_equals_ignore_case(buffer, element, "keep-alive")) {
            *has_keep_alive = true;
        }
        position++; /* past the comma, or past the end to stop */
    }
}

http_version_check_t http_check_version(const uint8_t *buffer, http_span_t span, uint8_t *minor) {
    const uint8_t *text = buffer + span.offset;
    if (span.length != 8 || memcmp(text, "HTTP/", 5) != 0 || !http_is_digit(text[5]) ||
        text[6] != '.' || !http_is_digit(text[7])) {
        return HTTP_VERSION_MALFORMED;
    }
    if (text[5] != '1' || (text[7] != '0' && text[7] != '1')) {
        return HTTP_VERSION_UNSUPPORTED;
    }
    *minor = (uint8_t)(text[7] - '0');
    return HTTP_VERSION_SUPPORTED;
}

/* ---- The request parser ------------------------------------------------- */

void http_request_parser_init(http_request_parser_t *parser, uint32_t head_bytes_max) {
    RW_ASSERT(parser != NULL);
    RW_ASSERT(head_bytes_max > 0 && head_bytes_max < ((uint32_t)1 << 31));
    memset(parser, 0, sizeof(*parser));
    parser->head.head_bytes_max = head_bytes_max;
    parser->head.stage = HTTP_HEAD_STAGE_START;
}

static http_parse_result_t request_fail(http_request_parser_t *parser, uint16_t status,
                                        const char *message) {
    RW_ASSERT(status == 400 || status == 431 || status == 501 || status == 505);
    parser->head.stage = HTTP_HEAD_STAGE_ERROR;
    parser->error_status = status;
    parser->error_message = message;
    return HTTP_PARSE_ERROR;
}

static http_method_t request_method_from_name(const uint8_t *name, uint32_t length) {
    static const struct {
        const char *name;
        http_method_t method;
    } known[] = {
        {"GET", HTTP_METHOD_GET},         {"HEAD", HTTP_METHOD_HEAD},
        {"POST", HTTP_METHOD_POST},       {"PUT", HTTP_METHOD_PUT},
        {"DELETE", HTTP_METHOD_DELETE},   {"OPTIONS", HTTP_METHOD_OPTIONS},
        {"PATCH", HTTP_METHOD_PATCH},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(known); index++) {
        if (strlen(known[index].name) == length && memcmp(known[index].name, name, length) == 0) {
            return known[index].method;
        }
    }
    return HTTP_METHOD_OTHER;
}

/* What a path or query may hold besides pct-encoded (RFC 3986 pchar, '/'
 * and '?'; the first '?' is taken as the split before this is asked). */
static bool request_is_path_byte(uint8_t byte) {
    return http_is_uri_unreserved(byte) || http_is_uri_sub_delim(byte) || byte == ':' || byte == '@' ||
           byte == '/' || byte == '?';
}

/* What an authority may hold besides pct-encoded: userinfo, host (with an
 * IP-literal's brackets) and port characters. */
static bool request_is_authority_byte(uint8_t byte) {
    return http_is_uri_unreserved(byte) || http_is_uri_sub_delim(byte) || byte == ':' || byte == '@' ||
           byte == '[' || byte == ']';
}

/* Length of the URI unit at buffer[position] (position < end): 3 for a
 * valid pct-encoded triplet, 1 for a byte is_allowed accepts, 0 for anything
 * else (a broken %XX included). */
static uint32_t request_uri_unit_length(const uint8_t *buffer, uint32_t position, uint32_t end,
                                        bool (*is_allowed)(uint8_t byte)) {
    RW_ASSERT(position < end);
    if (buffer[position] == '%') {
        if (end - position >= 3 && http_is_hex_digit(buffer[position + 1]) &&
            http_is_hex_digit(buffer[position + 2])) {
            return 3;
        }
        return 0;
    }
    return is_allowed(buffer[position]) ? 1 : 0;
}

/* Splits path-abempty [ "?" query ] starting at position into path and query
 * (RFC 3986 pchar, '/' and, in the query, '?'). Refuses anything else, such
 * as a fragment, spaces, controls, bytes above 0x7e or a broken %XX. */
static bool request_parse_path_and_query(const uint8_t *buffer, uint32_t position, uint32_t end,
                                         http_request_t *request) {
    uint32_t path_start = position;
    bool in_query = false;
    while (position < end) {
        if (buffer[position] == '?' && !in_query) {
            in_query = true;
            request->path.offset = path_start;
            request->path.length = position - path_start;
            request->has_query = true;
            request->query.offset = position + 1;
            position++;
            continue;
        }
        uint32_t unit = request_uri_unit_length(buffer, position, end, request_is_path_byte);
        if (unit == 0) {
            return false;
        }
        position += unit;
    }
    if (in_query) {
        request->query.length = end - request->query.offset;
    } else {
        request->path.offset = path_start;
        request->path.length = end - path_start;
        request->query.offset = end;
        request->query.length = 0;
    }
    return true;
}

/* Whether the prefix of buffer[position .. end) is text, ignoring ASCII case. */
static bool request_has_prefix_ignore_case(const uint8_t *buffer, uint32_t position, uint32_t end,
                                           const char *text) {
    size_t text_length = strlen(text);
    if (end - position < text_length) {
        return false;
    }
    http_span_t span = {position, (uint32_t)text_length};
    return http_span_equals_ignore_case(buffer, span, text);
}

/* Accepts origin-form ("/path?query"), asterisk-form ("*", OPTIONS only) and
 * absolute-form for http and https (RFC 9112 section 3.2). Authority-form
 * (CONNECT) and anything else is refused. */
static bool request_parse_target(const uint8_t *buffer, http_request_t *request) {
    uint32_t start = request->target.offset;
    uint32_t end = start + request->target.length;
    RW_ASSERT(start < end);
    if (buffer[start] == '/') {
        return request_parse_path_and_query(buffer, start, end, request);
    }
    if (buffer[start] == '*') {
        if (request->target.length != 1 || request->method != HTTP_METHOD_OPTIONS) {
            return false;
        }
        request->path = request->target;
        request->query.offset = end;
        return true;
    }
    uint32_t authority_start;
    if (request_has_prefix_ignore_case(buffer, start, end, "http://")) {
        authority_start = start + 7;
    } else if (request_has_prefix_ignore_case(buffer, start, end, "https://")) {
        authority_start = start + 8;
    } else {
        return false;
    }
    uint32_t position = authority_start;
    while (position < end && buffer[position] != '/' && buffer[position] != '?') {
        uint32_t unit = request_uri_unit_length(buffer, position, end, request_is_authority_byte);
        if (unit == 0) {
            return false;
        }
        position += unit;
    }
    if (position == authority_start) {
        return false;
    }
    return request_parse_path_and_query(buffer, position, end, request);
}

/* Host = uri-host [ ":" port ]; checked as the characters those may hold. */
static bool request_host_is_valid(const uint8_t *buffer, http_span_t host) {
    uint32_t end = host.offset + host.length;
    for (uint32_t position = host.offset; position < end; position++) {
        uint8_t byte = buffer[position];
        if (!(http_is_uri_unreserved(byte) || http_is_uri_sub_delim(byte) || byte == ':' ||
              byte == '[' || byte == ']' || byte == '%')) {
            return false;
        }
    }
    return true;
}

/* request-line = method SP request-target SP HTTP-version, single spaces. */
static http_parse_result_t request_parse_start_line(http_request_parser_t *parser,
                                                    http_request_t *request,
                                                    const uint8_t *buffer, http_span_t line) {
    uint32_t end = line.offset + line.length;
    uint32_t position = line.offset;
    while (position < end && http_is_token_char(buffer[position])) {
        position++;
    }
    if (position == line.offset || position == end || buffer[position] != ' ') {
        return request_fail(parser, 400, "invalid method in request line");
    }
    request->method_name.offset = line.offset;
    request->method_name.length = position - line.offset;
    request->method = request_method_from_name(buffer + line.offset, request->method_name.length);

    uint32_t target_start = position + 1;
    position = target_start;
    while (position < end && buffer[position] != ' ') {
        position++;
    }
    if (position == target_start || position == end) {
        return request_fail(parser, 400, "malformed request line");
    }
    request->target.offset = target_start;
    request->target.length = position - target_start;
    if (!request_parse_target(buffer, request)) {
        return request_fail(parser, 400, "invalid request target");
    }

    http_span_t version = {position + 1, end - (position + 1)};
    switch (http_check_version(buffer, version, &request->version_minor)) {
    case HTTP_VERSION_SUPPORTED:
        break;
    case HTTP_VERSION_UNSUPPORTED:
        return request_fail(parser, 505, "http version not supported");
    case HTTP_VERSION_MALFORMED:
        return request_fail(parser, 400, "malformed request line");
    }
    RW_ASSERT(request->version_minor <= 1);
    parser->head.stage = HTTP_HEAD_STAGE_FIELDS;
    return HTTP_PARSE_AGAIN;
}

/* Stores one field line and applies the fields that frame the message or that
 * the relay reads. Singleton fields the relay acts on may appear only once, so
 * that the relay and anything behind it cannot disagree about which one counts. */
static http_parse_result_t request_parse_field(http_request_parser_t *parser,
                                               http_request_t *request, const uint8_t *buffer,
                                               http_span_t line) {
    if (request->header_count == HTTP_HEADERS_MAX) {
        return request_fail(parser, 431, "too many header fields");
    }
    http_header_t header;
    const char *problem = http_head_parse_field_line(buffer, line, &header);
    if (problem != NULL) {
        return request_fail(parser, 400, problem);
    }
    request->headers[request->header_count] = header;
    request->header_count++;

    if (http_span_equals_ignore_case(buffer, header.name, "content-length")) {
        if (parser->seen_transfer_encoding) {
            return request_fail(parser, 400, "content-length with transfer-encoding");
        }
        if (parser->seen_content_length) {
            return request_fail(parser, 400, "duplicate content-length");
        }
        parser->seen_content_length = true;
        if (!http_parse_content_length(buffer, header.value, &request->content_length)) {
            return request_fail(parser, 400, "invalid content-length");
        }
    } else if (http_span_equals_ignore_case(buffer, header.name, "transfer-encoding")) {
        if (parser->seen_content_length) {
            return request_fail(parser, 400, "content-length with transfer-encoding");
        }
        if (parser->seen_transfer_encoding) {
            return request_fail(parser, 400, "duplicate transfer-encoding");
        }
        if (request->version_minor == 0) {
            return request_fail(parser, 400, "transfer-encoding in an http/1.0 request");
        }
        parser->seen_transfer_encoding = true;
        /* Anything but chunked is refused with 501 once the head is complete, so
         * that a Content-Length after it is still reported as the 400 it is. */
        request->chunked = http_span_equals_ignore_case(buffer, header.value, "chunked");
    } else if (http_span_equals_ignore_case(buffer, header.name, "host")) {
        if (request->has_host) {
            return request_fail(parser, 400, "duplicate host header");
        }
        if (!request_host_is_valid(buffer, header.value)) {
            return request_fail(parser, 400, "invalid host header");
        }
        request->has_host = true;
        request->host = header.value;
    } else if (http_span_equals_ignore_case(buffer, header.name, "connection")) {
        http_scan_connection_options(buffer, header.value, &parser->seen_connection_close,
                                     &parser->seen_connection_keep_alive);
    } else if (http_span_equals_ignore_case(buffer, header.name, "expect")) {
        /* RFC 9110 section 10.1.1: an HTTP/1.0 expectation is ignored. */
        if (request->version_minor == 1 &&
            http_span_equals_ignore_case(buffer, header.value, "100-continue")) {
            request->expect_continue = true;
        }
    } else if (http_span_equals_ignore_case(buffer, header.name, "authorization")) {
        if (request->has_authorization) {
            return request_fail(parser, 400, "duplicate authorization header");
        }
        request->has_authorization = true;
        request->authorization = header.value;
    } else if (http_span_equals_ignore_case(buffer, header.name, "content-type")) {
        if (request->has_content_type) {
            return request_fail(parser, 400, "duplicate content-type header");
        }
        request->has_content_type = true;
        request->content_type = header.value;
    } else if (http_span_equals_ignore_case(buffer, header.name, "x-forwarded-for")) {
        /* The last field wins: it is the one the nearest proxy wrote. */
        request->has_forwarded_for = true;
        request->forwarded_for = header.value;
    }
    return HTTP_PARSE_AGAIN;
}

static http_parse_result_t request_finish(http_request_parser_t *parser, http_request_t *request,
                                          uint32_t head_length) {
    if (request->version_minor == 1 && !request->has_host) {
        return request_fail(parser, 400, "missing host header");
    }
    if (parser->seen_transfer_encoding && !request->chunked) {
        return request_fail(parser, 501, "unsupported transfer-encoding");
    }
    RW_ASSERT(!(request->chunked && request->content_length >= 0));
    if (request->version_minor == 1) {
        request->keep_alive = !parser->seen_connection_close;
    } else {
        request->keep_alive = parser->seen_connection_keep_alive && !parser->seen_connection_close;
    }
    request->head_length = head_length;
    parser->head.stage = HTTP_HEAD_STAGE_DONE;
    return HTTP_PARSE_DONE;
}

/* See http.h. */
http_parse_result_t http_head_drive(http_head_state_t *head, const http_head_handlers_t *handlers, void *parser,
                                    void *result, const uint8_t *buffer, size_t length) {
    RW_ASSERT(buffer != NULL || length == 0);
    RW_ASSERT(head->head_bytes_max > 0);
    if (head->stage == HTTP_HEAD_STAGE_DONE) return HTTP_PARSE_DONE;
    if (head->stage == HTTP_HEAD_STAGE_ERROR) return HTTP_PARSE_ERROR;
    if (head->stage == HTTP_HEAD_STAGE_START) {
        handlers->begin(parser, result);
        head->stage = HTTP_HEAD_STAGE_START_LINE;
    }
    RW_ASSERT(length >= head->length_seen);
    head->length_seen = length;
    size_t limit = RW_MIN(length, (size_t)head->head_bytes_max);
    for (;;) {
        http_span_t line;
        http_line_result_t found = http_head_next_line(&head->cursor, buffer, limit, &line);
        if (found == HTTP_LINE_AGAIN) {
            if (length > head->head_bytes_max) return handlers->fail(parser, true);
            return HTTP_PARSE_AGAIN;
        }
        if (found == HTTP_LINE_BARE_LF) return handlers->fail(parser, false);
        http_parse_result_t step;
        if (head->stage == HTTP_HEAD_STAGE_START_LINE) {
            if (line.length == 0 && handlers->skip_empty_lines_before_start) continue;
            step = handlers->start_line(parser, result, buffer, line);
        } else {
            RW_ASSERT(head->stage == HTTP_HEAD_STAGE_FIELDS);
            if (line.length == 0) return handlers->finish(parser, result, head->cursor.line_start);
            step = handlers->field(parser, result, buffer, line);
        }
        if (step == HTTP_PARSE_ERROR) {
            RW_ASSERT(head->stage == HTTP_HEAD_STAGE_ERROR);
            return step;
        }
    }
}

/* The request parser's callbacks for http_head_drive. */
static void request_begin(void *parser, void *result) {
    http_request_t *request = result;
    memset(request, 0, sizeof(*request));
    request->content_length = -1;
    ((http_request_parser_t *)parser)->request = request;
}

static http_parse_result_t request_on_start_line(void *parser, void *result, const uint8_t *buffer,
                                                 http_span_t line) {
    return request_parse_start_line(parser, result, buffer, line);
}

static http_parse_result_t request_on_field(void *parser, void *result, const uint8_t *buffer, http_span_t line) {
    return request_parse_field(parser, result, buffer, line);
}

static http_parse_result_t request_on_finish(void *parser, void *result, uint32_t head_length) {
    return request_finish(parser, result, head_length);
}

static http_parse_result_t request_on_fail(void *parser, bool too_large) {
    return too_large ? request_fail(parser, 431, "request header fields too large")
                     : request_fail(parser, 400, "bare lf in request head");
}

static const http_head_handlers_t request_handlers = {
    .begin = request_begin,
    .start_line = request_on_start_line,
    .field = request_on_field,
    .finish = request_on_finish,
    .fail = request_on_fail,
    .skip_empty_lines_before_start = true,
};

http_parse_result_t http_request_parse(http_request_parser_t *parser, http_request_t *request,
                                       const uint8_t *buffer, size_t length) {
    RW_ASSERT(parser != NULL && request != NULL);
    RW_ASSERT(parser->head.stage == HTTP_HEAD_STAGE_START || parser->request == request);
    return http_head_drive(&parser->head, &request_handlers, parser, request, buffer, length);
}

const http_header_t *http_request_find_header(const http_request_t *request,
                                              const uint8_t *buffer, const char *name) {
    RW_ASSERT(request->header_count <= HTTP_HEADERS_MAX);
    for (uint32_t index = 0; index < request->header_count; index++) {
        if (http_span_equals_ignore_case(buffer, request->headers[index].name, name)) {
            return &request->headers[index];
        }
    }
    return NULL;
}
