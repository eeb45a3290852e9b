/* Fuzzes the upstream response head parser (src/http/response.c) the way the
 * relay uses it on a pooled keep-alive connection: interim 1xx heads, then a
 * final head, a body framed by Content-Length or chunked coding, and the next
 * response on the same connection, each head parsed from its own start.
 *
 * Properties checked on every head, beyond "no crash, no sanitizer report":
 *   - the same outcome (result, message and every field of the response
 *     struct, byte for byte) whole, in two pieces split at a point chosen
 *     from the input, and one byte at a time;
 *   - fed one byte at a time, DONE comes exactly when byte head_length
 *     arrives, and "too large" exactly when head_bytes_max + 1 bytes are in;
 *   - a finished parser returns the same result again and changes nothing;
 *   - every span lies inside [0, head_length); the head starts with
 *     "HTTP/1.x NNN" matching status and version_minor and ends with CRLF
 *     CRLF; header names are tokens, values carry no surrounding whitespace;
 *   - the framing flags are consistent: body_absent exactly for 1xx, 204 and
 *     304; chunked only without Content-Length and only with a
 *     Transfer-Encoding field; body_until_close exactly when nothing else
 *     frames the body, and then never keep_alive; Content-Length equals the
 *     digits of every Content-Length field. */
#include "fuzz.h"

#include "ringway/http.h"

enum { FUZZ_MESSAGES_MAX = 8, FUZZ_HEAD_BYTES_DEFAULT = 16384 };

typedef struct response_outcome {
    http_parse_result_t result;
    const char *error_message;
    size_t final_length; /* the buffer length given to the call that finished */
    http_response_t response;
} response_outcome_t;

static bool span_inside(http_span_t span, size_t limit) {
    return (size_t)span.offset + span.length <= limit;
}

static void finish_outcome(http_response_parser_t *parser, response_outcome_t *outcome,
                           const uint8_t *buffer) {
    outcome->error_message = parser->error_message;
    if (outcome->result == HTTP_PARSE_AGAIN) {
        return;
    }
    http_response_t before = outcome->response;
    http_response_parser_t parser_before = *parser;
    http_parse_result_t again =
        http_response_parse(parser, &outcome->response, buffer, outcome->final_length);
    FUZZ_CHECK(again == outcome->result);
    FUZZ_CHECK(memcmp(&before, &outcome->response, sizeof before) == 0);
    FUZZ_CHECK(memcmp(&parser_before, parser, sizeof parser_before) == 0);
}

static void parse_in_pieces(const uint8_t *buffer, size_t size, uint32_t head_bytes_max,
                            size_t split, response_outcome_t *outcome) {
    http_response_parser_t parser;
    http_response_parser_init(&parser, head_bytes_max);
    outcome->final_length = split;
    outcome->result = http_response_parse(&parser, &outcome->response, buffer, split);
    if (outcome->result == HTTP_PARSE_AGAIN && split < size) {
        outcome->final_length = size;
        outcome->result = http_response_parse(&parser, &outcome->response, buffer, size);
    }
    finish_outcome(&parser, outcome, buffer);
}

static void parse_byte_by_byte(const uint8_t *buffer, size_t size, uint32_t head_bytes_max,
                               response_outcome_t *outcome) {
    http_response_parser_t parser;
    http_response_parser_init(&parser, head_bytes_max);
    for (size_t length = 0; length <= size; length++) {
        outcome->final_length = length;
        outcome->result = http_response_parse(&parser, &outcome->response, buffer, length);
        if (outcome->result != HTTP_PARSE_AGAIN) {
            break;
        }
    }
    finish_outcome(&parser, outcome, buffer);
}

static void check_same_outcome(const response_outcome_t *a, const response_outcome_t *b) {
    FUZZ_CHECK(a->result == b->result);
    FUZZ_CHECK(a->error_message == b->error_message);
    if (a->result != HTTP_PARSE_AGAIN) {
        FUZZ_CHECK(memcmp(&a->response, &b->response, sizeof a->response) == 0);
    }
}

static void check_done_response(const http_response_t *response, const uint8_t *buffer,
                                 size_t size, uint32_t head_bytes_max) {
    uint32_t head_length = response->head_length;
    FUZZ_CHECK(head_length >= 16 && head_length <= size && head_length <= head_bytes_max);
    FUZZ_CHECK(memcmp(buffer + head_length - 4, "\r\n\r\n", 4) == 0);
    FUZZ_CHECK(memcmp(buffer, "HTTP/1.", 7) == 0);
    FUZZ_CHECK(response->version_minor <= 1 && buffer[7] == '0' + response->version_minor);
    FUZZ_CHECK(buffer[8] == ' ');
    FUZZ_CHECK(response->status >= 100 && response->status <= 599);
    FUZZ_CHECK((buffer[9] - '0') * 100 + (buffer[10] - '0') * 10 + (buffer[11] - '0') ==
               response->status);
    FUZZ_CHECK(span_inside(response->reason, head_length));
    FUZZ_CHECK(response->reason.length == 0 || response->reason.offset == 13);

    FUZZ_CHECK(response->header_count <= HTTP_HEADERS_MAX);
    int64_t content_length_seen = -1;
    for (uint32_t index = 0; index < response->header_count; index++) {
        const http_header_t *header = &response->headers[index];
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
        if (http_span_equals_ignore_case(buffer, header->name, "content-length")) {
            int64_t value = 0;
            FUZZ_CHECK(header->value.length > 0);
            for (uint32_t at = 0; at < header->value.length; at++) {
                uint8_t digit = buffer[header->value.offset + at];
                FUZZ_CHECK(digit >= '0' && digit <= '9');
                value = value * 10 + (digit - '0');
            }
            FUZZ_CHECK(content_length_seen < 0 || content_length_seen == value);
            content_length_seen = value;
        }
    }
    FUZZ_CHECK(response->content_length == content_length_seen);

    const http_header_t *coding = http_response_find_header(response, buffer, "transfer-encoding");
    if (response->chunked) {
        FUZZ_CHECK(response->content_length == -1 && response->version_minor == 1);
        FUZZ_CHECK(coding != NULL && http_span_equals_ignore_case(buffer, coding->value, "chunked"));
    } else {
        FUZZ_CHECK(coding == NULL);
    }
    const http_header_t *type = http_response_find_header(response, buffer, "content-type");
    FUZZ_CHECK(response->has_content_type == (type != NULL));
    if (type != NULL) {
        FUZZ_CHECK(type->value.offset == response->content_type.offset &&
                   type->value.length == response->content_type.length);
    }

    uint16_t status = response->status;
    FUZZ_CHECK(response->body_absent == (status < 200 || status == 204 || status == 304));
    FUZZ_CHECK(response->body_until_close ==
               (!response->body_absent && !response->chunked && response->content_length < 0));
    if (response->body_until_close) {
        FUZZ_CHECK(!response->keep_alive);
    }
}

/* Parses one head at buffer[0, size) three ways and checks it. Returns the
 * bytes the message takes (head and body) when another head may follow, or 0
 * when the rest of the buffer cannot be framed. */
static size_t check_one_message(const uint8_t *buffer, size_t size, fuzz_random_t *random) {
    uint32_t head_bytes_max = FUZZ_HEAD_BYTES_DEFAULT;
    if (fuzz_random_upto(random, 7) == 0) {
        head_bytes_max = (uint32_t)(1 + fuzz_random_upto(random, RW_MIN(size + 16, (size_t)1 << 20)));
    }
    size_t split = fuzz_split_point(buffer, size, random);

    static response_outcome_t whole, pieces, byte_by_byte;
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
        FUZZ_CHECK(whole.error_message != NULL && whole.error_message[0] != '\0');
        if (strcmp(whole.error_message, "upstream response head too large") == 0) {
            FUZZ_CHECK(size > head_bytes_max);
            FUZZ_CHECK(byte_by_byte.final_length == (size_t)head_bytes_max + 1);
        }
        return 0;
    }
    const http_response_t *response = &whole.response;
    check_done_response(response, buffer, size, head_bytes_max);
    FUZZ_CHECK(byte_by_byte.final_length == response->head_length);

    size_t head_length = response->head_length;
    if (response->body_absent) {
        return head_length;
    }
    if (response->chunked) {
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
                return response->keep_alive ? position : 0;
            }
            if (result != HTTP_CHUNKED_DATA) {
                return 0;
            }
        }
    }
    if (response->content_length >= 0 &&
        (uint64_t)response->content_length <= size - head_length && response->keep_alive) {
        return head_length + (size_t)response->content_length;
    }
    return 0;
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
