/* Fuzzes the request head parser (src/http/request.c) the way the server
 * uses it: a buffer that may hold several pipelined requests, each head
 * parsed from its own start, bodies skipped by Content-Length or by the
 * chunked decoder.
 *
 * Properties checked on every head, beyond "no crash, no sanitizer report":
 *   - the same outcome (result, status, message and every field of the
 *     request struct, byte for byte) whether the head arrives whole, in two
 *     pieces split at a point chosen from the input, or one byte at a time;
 *   - fed one byte at a time, the parser says DONE exactly when the last byte
 *     of the head arrives (head_length), and a 431 for length exactly when
 *     head_bytes_max + 1 bytes are there;
 *   - a finished parser returns the same result again and changes nothing;
 *   - every span lies inside [0, head_length), path and query inside the
 *     target, names are tokens, values carry no surrounding whitespace, the
 *     head ends with CRLF CRLF and fits head_bytes_max;
 *   - the fields the parser reports (Host, Authorization, Content-Type,
 *     Content-Length, Transfer-Encoding, the method) agree with what
 *     http_request_find_header and the raw bytes say. */
#include "fuzz.h"

#include "ringway/http.h"

enum { FUZZ_MESSAGES_MAX = 8, FUZZ_HEAD_BYTES_DEFAULT = 16384 };

typedef struct request_outcome {
    http_parse_result_t result;
    uint16_t error_status;
    const char *error_message;
    size_t final_length; /* the buffer length given to the call that finished */
    http_request_t request;
} request_outcome_t;

/* Whether span lies inside [0, limit). */
static bool span_inside(http_span_t span, size_t limit) {
    return (size_t)span.offset + span.length <= limit;
}

static bool span_within(http_span_t inner, http_span_t outer) {
    return inner.offset >= outer.offset &&
           (size_t)inner.offset + inner.length <= (size_t)outer.offset + outer.length;
}

static bool spans_equal(http_span_t a, http_span_t b) {
    return a.offset == b.offset && a.length == b.length;
}

/* After DONE or ERROR: one more call returns the same and touches nothing. */
static void check_finished_is_stable(http_request_parser_t *parser, request_outcome_t *outcome,
                                     const uint8_t *buffer) {
    http_request_t before = outcome->request;
    http_request_parser_t parser_before = *parser;
    http_parse_result_t again =
        http_request_parse(parser, &outcome->request, buffer, outcome->final_length);
    FUZZ_CHECK(again == outcome->result);
    FUZZ_CHECK(memcmp(&before, &outcome->request, sizeof before) == 0);
    FUZZ_CHECK(memcmp(&parser_before, parser, sizeof parser_before) == 0);
}

static void finish_outcome(http_request_parser_t *parser, request_outcome_t *outcome,
                           const uint8_t *buffer) {
    outcome->error_status = parser->error_status;
    outcome->error_message = parser->error_message;
    if (outcome->result != HTTP_PARSE_AGAIN) {
        check_finished_is_stable(parser, outcome, buffer);
    }
}

static void parse_in_pieces(const uint8_t *buffer, size_t size, uint32_t head_bytes_max,
                            size_t split, request_outcome_t *outcome) {
    http_request_parser_t parser;
    http_request_parser_init(&parser, head_bytes_max);
    outcome->final_length = split;
    outcome->result = http_request_parse(&parser, &outcome->request, buffer, split);
    if (outcome->result == HTTP_PARSE_AGAIN && split < size) {
        outcome->final_length = size;
        outcome->result = http_request_parse(&parser, &outcome->request, buffer, size);
    }
    finish_outcome(&parser, outcome, buffer);
}

static void parse_byte_by_byte(const uint8_t *buffer, size_t size, uint32_t head_bytes_max,
                               request_outcome_t *outcome) {
    http_request_parser_t parser;
    http_request_parser_init(&parser, head_bytes_max);
    for (size_t length = 0; length <= size; length++) {
        outcome->final_length = length;
        outcome->result = http_request_parse(&parser, &outcome->request, buffer, length);
        if (outcome->result != HTTP_PARSE_AGAIN) {
            break;
        }
    }
    finish_outcome(&parser, outcome, buffer);
}

static void check_same_outcome(const request_outcome_t *a, const request_outcome_t *b) {
    FUZZ_CHECK(a->result == b->result);
    FUZZ_CHECK(a->error_status == b->error_status);
    FUZZ_CHECK(a->error_message == b->error_message);
    if (a->result != HTTP_PARSE_AGAIN) {
        FUZZ_CHECK(memcmp(&a->request, &b->request, sizeof a->request) == 0);
    }
}

/* Whether http_request_find_header agrees with a field the parser reports:
 * absent when has is false, else found with exactly that value span. */
static bool header_matches(const http_request_t *request, const uint8_t *buffer,
                           const char *name, bool has, http_span_t value) {
    const http_header_t *found = http_request_find_header(request, buffer, name);
    if (!has) {
        return found == NULL;
    }
    return found != NULL && spans_equal(found->value, value);
}

static const char *method_canonical_name(http_method_t method) {
    switch (method) {
    case HTTP_METHOD_GET: return "GET";
    case HTTP_METHOD_HEAD: return "HEAD";
    case HTTP_METHOD_POST: return "POST";
    case HTTP_METHOD_PUT: return "PUT";
    case HTTP_METHOD_DELETE: return "DELETE";
    case HTTP_METHOD_OPTIONS: return "OPTIONS";
    case HTTP_METHOD_PATCH: return "PATCH";
    case HTTP_METHOD_OTHER: return NULL;
    }
    return NULL;
}

static void check_done_request(const request_outcome_t *outcome, const uint8_t *buffer,
                               size_t size, uint32_t head_bytes_max) {
    const http_request_t *request = &outcome->request;
    uint32_t head_length = request->head_length;
    FUZZ_CHECK(head_length >= 4 && head_length <= size && head_length <= head_bytes_max);
    FUZZ_CHECK(memcmp(buffer + head_length - 4, "\r\n\r\n", 4) == 0);

    FUZZ_CHECK(request->method_name.length > 0 && span_inside(request->method_name, head_length));
    for (uint32_t index = 0; index < request->method_name.length; index++) {
        FUZZ_CHECK(http_is_token_char(buffer[request->method_name.offset + index]));
    }
    const char *canonical = method_canonical_name(request->method);
    if (canonical != NULL) {
        FUZZ_CHECK(rw_bytes_equal_text(buffer + request->method_name.offset,
                                       request->method_name.length, canonical));
    } else {
        for (int method = HTTP_METHOD_GET; method <= HTTP_METHOD_PATCH; method++) {
            FUZZ_CHECK(!rw_bytes_equal_text(buffer + request->method_name.offset,
                                            request->method_name.length,
                                            method_canonical_name((http_method_t)method)));
        }
    }

    FUZZ_CHECK(request->target.length > 0 && span_inside(request->target, head_length));
    FUZZ_CHECK(span_within(request->path, request->target));
    FUZZ_CHECK(request->query.offset >= request->target.offset);
    FUZZ_CHECK(span_within(request->query, request->target) || request->query.length == 0);
    if (request->has_query) {
        FUZZ_CHECK(span_within(request->query, request->target));
        FUZZ_CHECK(buffer[request->query.offset - 1] == '?');
    } else {
        FUZZ_CHECK(request->query.length == 0);
    }
    FUZZ_CHECK(request->version_minor <= 1);

    FUZZ_CHECK(request->header_count <= HTTP_HEADERS_MAX);
    for (uint32_t index = 0; index < request->header_count; index++) {
        const http_header_t *header = &request->headers[index];
        FUZZ_CHECK(header->name.length > 0 && span_inside(header->name, head_length));
        FUZZ_CHECK(span_inside(header->value, head_length));
        for (uint32_t at = 0; at < header->name.length; at++) {
            FUZZ_CHECK(http_is_token_char(buffer[header->name.offset + at]));
        }
        FUZZ_CHECK(buffer[header->name.offset + header->name.length] == ':');
        if (header->value.length > 0) {
            uint8_t first = buffer[header->value.offset];
            uint8_t last = buffer[header->value.offset + header->value.length - 1];
            FUZZ_CHECK(first != ' ' && first != '\t' && last != ' ' && last != '\t');
        }
        for (uint32_t at = 0; at < header->value.length; at++) {
            uint8_t byte = buffer[header->value.offset + at];
            FUZZ_CHECK(byte == '\t' || (byte >= 0x20 && byte != 0x7f));
        }
    }

    FUZZ_CHECK(header_matches(request, buffer, "host", request->has_host, request->host));
    FUZZ_CHECK(header_matches(request, buffer, "authorization", request->has_authorization,
                              request->authorization));
    FUZZ_CHECK(header_matches(request, buffer, "content-type", request->has_content_type,
                              request->content_type));
    if (request->version_minor == 1) {
        FUZZ_CHECK(request->has_host);
    } else {
        FUZZ_CHECK(!request->expect_continue && !request->chunked);
    }

    FUZZ_CHECK(request->content_length >= -1);
    const http_header_t *length_field = http_request_find_header(request, buffer, "content-length");
    const http_header_t *coding_field = http_request_find_header(request, buffer, "transfer-encoding");
    if (request->content_length >= 0) {
        FUZZ_CHECK(length_field != NULL && coding_field == NULL);
        int64_t value = 0;
        for (uint32_t at = 0; at < length_field->value.length; at++) {
            uint8_t digit = buffer[length_field->value.offset + at];
            FUZZ_CHECK(digit >= '0' && digit <= '9');
            value = value * 10 + (digit - '0');
        }
        FUZZ_CHECK(value == request->content_length);
    } else {
        FUZZ_CHECK(length_field == NULL);
    }
    if (request->chunked) {
        FUZZ_CHECK(request->content_length == -1);
        FUZZ_CHECK(coding_field != NULL &&
                   http_span_equals_ignore_case(buffer, coding_field->value, "chunked"));
    } else {
        FUZZ_CHECK(coding_field == NULL);
    }
}

static void check_error_request(const request_outcome_t *outcome, const request_outcome_t *byte_by_byte,
                                size_t size, uint32_t head_bytes_max) {
    uint16_t status = outcome->error_status;
    FUZZ_CHECK(status == 400 || status == 431 || status == 501 || status == 505);
    FUZZ_CHECK(outcome->error_message != NULL && outcome->error_message[0] != '\0');
    if (status == 431 && outcome->request.header_count < HTTP_HEADERS_MAX) {
        /* Too large: decided exactly when head_bytes_max + 1 bytes are in. */
        FUZZ_CHECK(size > head_bytes_max);
        FUZZ_CHECK(byte_by_byte->final_length == (size_t)head_bytes_max + 1);
    }
}

/* Parses one head at buffer[0, size) three ways and checks it. Returns the
 * bytes the message takes (head and body) when another message may follow,
 * or 0 when the rest of the buffer cannot be framed. */
static size_t check_one_message(const uint8_t *buffer, size_t size, fuzz_random_t *random) {
    uint32_t head_bytes_max = FUZZ_HEAD_BYTES_DEFAULT;
    if (fuzz_random_upto(random, 7) == 0) {
        head_bytes_max = (uint32_t)(1 + fuzz_random_upto(random, RW_MIN(size + 16, (size_t)1 << 20)));
    }
    size_t split = fuzz_split_point(buffer, size, random);

    static request_outcome_t whole, pieces, byte_by_byte;
    parse_in_pieces(buffer, size, head_bytes_max, size, &whole);
    parse_in_pieces(buffer, size, head_bytes_max, split, &pieces);
    parse_byte_by_byte(buffer, size, head_bytes_max, &byte_by_byte);
    check_same_outcome(&whole, &pieces);
    check_same_outcome(&whole, &byte_by_byte);

    if (whole.result == HTTP_PARSE_AGAIN) {
        FUZZ_CHECK(size <= head_bytes_max);
        return 0;
    }
    if (whole.result == HTTP_PARSE_ERROR) {
        check_error_request(&whole, &byte_by_byte, size, head_bytes_max);
        return 0;
    }
    check_done_request(&whole, buffer, size, head_bytes_max);
    FUZZ_CHECK(byte_by_byte.final_length == whole.request.head_length);

    size_t head_length = whole.request.head_length;
    if (whole.request.chunked) {
        http_chunked_decoder_t decoder;
        http_chunked_decoder_init(&decoder);
        size_t position = head_length;
        for (;;) {
            size_t consumed = 0;
            size_t data_offset = 0;
            size_t data_length = 0;
            http_chunked_result_t result = http_chunked_decode(
                &decoder, buffer + position, size - position, &consumed, &data_offset, &data_length);
            FUZZ_CHECK(consumed <= size - position);
            position += consumed;
            if (result == HTTP_CHUNKED_DONE) {
                return position;
            }
            if (result != HTTP_CHUNKED_DATA) {
                return 0;
            }
        }
    }
    if (whole.request.content_length >= 0) {
        if ((uint64_t)whole.request.content_length > size - head_length) {
            return 0;
        }
        return head_length + (size_t)whole.request.content_length;
    }
    return head_length;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_random_t random = {fuzz_hash(data, size)};
    size_t offset = 0;
    for (int message = 0; message < FUZZ_MESSAGES_MAX && offset < size; message++) {
        size_t taken = check_one_message(data + offset, size - offset, &random);
        if (taken == 0) {
            break;
        }
        offset += taken;
    }
    return 0;
}
