/* Unit tests of src/http: request heads, response heads, chunked bodies.
 * Every input is parsed whole, byte by byte (each prefix in its own exactly
 * sized allocation, so AddressSanitizer catches a read past the length given)
 * and split at every point, and all three must agree. A seeded mutation loop
 * then checks that no input crashes the parsers and that whatever they accept
 * obeys the framing rules. */
#include "ringway/http.h"

#include "unit.h"

#include <stdlib.h>

enum { HEAD_MAX = 8192 };

/* A test input that may hold NUL bytes. */
typedef struct test_input {
    const char *text;
    size_t length;
} test_input_t;

#define INPUT(literal) {(literal), sizeof(literal) - 1}

#define CHECK_SPAN(buffer, span, expected)                                              \
    CHECK_EQ_BYTES((const char *)(buffer) + (span).offset, (span).length, expected)

static uint8_t *copy_exact(const void *bytes, size_t length) {
    uint8_t *copy = malloc(length == 0 ? 1 : length);
    RW_ASSERT(copy != NULL);
    if (length > 0) {
        memcpy(copy, bytes, length);
    }
    return copy;
}

/* unit.h's generator; each mutation test seeds it, so a failing run replays. */
static unit_random_t test_random;

static bool has_upper_case(const char *text) {
    for (; *text != '\0'; text++) {
        if (*text >= 'A' && *text <= 'Z') {
            return true;
        }
    }
    return false;
}

/* Whether a parser's message is the expected one (a NULL message is not). */
static bool message_is(const char *actual, const char *expected) {
    return actual != NULL && strcmp(actual, expected) == 0;
}

/* ======================================================================== */
/* Requests                                                                 */
/* ======================================================================== */

static bool spans_equal(http_span_t a, http_span_t b) {
    return a.offset == b.offset && a.length == b.length;
}

static bool requests_equal(const http_request_t *a, const http_request_t *b) {
    if (a->method != b->method || !spans_equal(a->method_name, b->method_name) ||
        !spans_equal(a->target, b->target) || !spans_equal(a->path, b->path) ||
        !spans_equal(a->query, b->query) || a->has_query != b->has_query ||
        a->version_minor != b->version_minor || a->header_count != b->header_count ||
        a->content_length != b->content_length || a->chunked != b->chunked ||
        a->keep_alive != b->keep_alive || a->expect_continue != b->expect_continue ||
        a->has_authorization != b->has_authorization || a->has_host != b->has_host ||
        a->has_content_type != b->has_content_type ||
        !spans_equal(a->authorization, b->authorization) || !spans_equal(a->host, b->host) ||
        !spans_equal(a->content_type, b->content_type) || a->has_forwarded_for != b->has_forwarded_for ||
        !spans_equal(a->forwarded_for, b->forwarded_for) || a->head_length != b->head_length) {
        return false;
    }
    for (uint32_t index = 0; index < a->header_count; index++) {
        if (!spans_equal(a->headers[index].name, b->headers[index].name) ||
            !spans_equal(a->headers[index].value, b->headers[index].value)) {
            return false;
        }
    }
    return true;
}

/* Feeds every prefix 0, 1, 2, ... in its own exactly sized copy. */
static http_parse_result_t request_parse_bytewise(const uint8_t *text, size_t length,
                                                  uint32_t head_max,
                                                  http_request_parser_t *parser,
                                                  http_request_t *request) {
    http_request_parser_init(parser, head_max);
    http_parse_result_t result = HTTP_PARSE_AGAIN;
    for (size_t prefix = 0; prefix <= length && result == HTTP_PARSE_AGAIN; prefix++) {
        uint8_t *copy = copy_exact(text, prefix);
        result = http_request_parse(parser, request, copy, prefix);
        free(copy);
    }
    return result;
}

/* Parses text whole, byte by byte and split in two at every point; checks all
 * agree and returns the whole-input result in *parser and *request. */
static http_parse_result_t request_parse_all_ways(const uint8_t *text, size_t length,
                                                  uint32_t head_max,
                                                  http_request_parser_t *parser,
                                                  http_request_t *request) {
    uint8_t *copy = copy_exact(text, length);
    http_request_parser_init(parser, head_max);
    http_parse_result_t whole = http_request_parse(parser, request, copy, length);
    free(copy);

    static http_request_parser_t other_parser;
    static http_request_t other_request;
    http_parse_result_t bytewise =
        request_parse_bytewise(text, length, head_max, &other_parser, &other_request);
    CHECK_EQ_INT(bytewise, whole);
    if (bytewise == whole && whole == HTTP_PARSE_DONE) {
        CHECK(requests_equal(&other_request, request));
    }
    if (bytewise == whole && whole == HTTP_PARSE_ERROR) {
        CHECK_EQ_INT(other_parser.error_status, parser->error_status);
        CHECK(other_parser.error_message == parser->error_message);
    }

    for (size_t split = 0; split <= length; split++) {
        http_request_parser_init(&other_parser, head_max);
        http_parse_result_t result = http_request_parse(&other_parser, &other_request, text, split);
        if (result == HTTP_PARSE_AGAIN) {
            result = http_request_parse(&other_parser, &other_request, text, length);
        }
        if (result != whole) {
            fprintf(stderr, "  split at %zu: %d instead of %d\n", split, result, whole);
            CHECK_EQ_INT(result, whole);
            break;
        }
        if (whole == HTTP_PARSE_DONE && !requests_equal(&other_request, request)) {
            fprintf(stderr, "  split at %zu: different request\n", split);
            CHECK(false);
            break;
        }
        if (whole == HTTP_PARSE_ERROR && other_parser.error_status != parser->error_status) {
            CHECK_EQ_INT(other_parser.error_status, parser->error_status);
            break;
        }
    }
    return whole;
}

static http_parse_result_t request_parse_text(const char *text, http_request_parser_t *parser,
                                              http_request_t *request) {
    return request_parse_all_ways((const uint8_t *)text, strlen(text), HEAD_MAX, parser, request);
}

static http_request_parser_t parser_under_test;
static http_request_t request_under_test;

static void test_request_simple_get(void) {
    const char *text = "GET /v1/models?limit=5&after=x HTTP/1.1\r\n"
                       "Host: api.example.com\r\n"
                       "User-Agent: test/1.0\r\n"
                       "\r\n";
    http_request_t *request = &request_under_test;
    CHECK_EQ_INT(request_parse_text(text, &parser_under_test, request), HTTP_PARSE_DONE);
    CHECK_EQ_INT(request->method, HTTP_METHOD_GET);
    CHECK_SPAN(text, request->method_name, "GET");
    CHECK_SPAN(text, request->target, "/v1/models?limit=5&after=x");
    CHECK_SPAN(text, request->path, "/v1/models");
    CHECK(request->has_query);
    CHECK_SPAN(text, request->query, "limit=5&after=x");
    CHECK_EQ_INT(request->version_minor, 1);
    CHECK_EQ_INT(request->header_count, 2);
    CHECK_SPAN(text, request->headers[0].name, "Host");
    CHECK_SPAN(text, request->headers[0].value, "api.example.com");
    CHECK_SPAN(text, request->headers[1].name, "User-Agent");
    CHECK_SPAN(text, request->headers[1].value, "test/1.0");
    CHECK(request->has_host);
    CHECK_SPAN(text, request->host, "api.example.com");
    CHECK_EQ_INT(request->content_length, -1);
    CHECK(!request->chunked);
    CHECK(request->keep_alive);
    CHECK(!request->expect_continue);
    CHECK(!request->has_authorization);
    CHECK(!request->has_content_type);
    CHECK(!request->has_forwarded_for);
    CHECK_EQ_INT(request->head_length, strlen(text));
    CHECK(http_request_find_header(request, (const uint8_t *)text, "user-agent") ==
          &request->headers[1]);
    CHECK(http_request_find_header(request, (const uint8_t *)text, "USER-AGENT") ==
          &request->headers[1]);
    CHECK(http_request_find_header(request, (const uint8_t *)text, "user-agen") == NULL);
    CHECK(http_request_find_header(request, (const uint8_t *)text, "accept") == NULL);
}

static void test_request_post_fields(void) {
    const char *text = "POST /v1/chat/completions HTTP/1.1\r\n"
                       "host:relay.local:8080\r\n"
                       "AUTHORIZATION: \t Bearer sk-abc123 \t\r\n"
                       "Content-Type: application/json; charset=utf-8\r\n"
                       "Content-Length: 0042\r\n"
                       "Expect: 100-Continue\r\n"
                       "X-Empty:\r\n"
                       "X-Spaces:    \r\n"
                       "X-Opaque: caf\xc3\xa9\r\n"
                       "X-Forwarded-For: 203.0.113.1\r\n"
                       "x-forwarded-for:  198.51.100.2, 10.0.0.1 \r\n"
                       "\r\n"
                       "{\"model\":\"x\"}";
    http_request_t *request = &request_under_test;
    CHECK_EQ_INT(request_parse_text(text, &parser_under_test, request), HTTP_PARSE_DONE);
    CHECK_EQ_INT(request->method, HTTP_METHOD_POST);
    CHECK_SPAN(text, request->path, "/v1/chat/completions");
    CHECK(!request->has_query);
    CHECK_EQ_INT(request->query.length, 0);
    CHECK_SPAN(text, request->host, "relay.local:8080");
    CHECK(request->has_authorization);
    CHECK_SPAN(text, request->authorization, "Bearer sk-abc123");
    CHECK(request->has_content_type);
    CHECK_SPAN(text, request->content_type, "application/json; charset=utf-8");
    CHECK_EQ_INT(request->content_length, 42);
    CHECK(request->expect_continue);
    CHECK(request->keep_alive);
    /* The last X-Forwarded-For field is the nearest proxy's. */
    CHECK(request->has_forwarded_for);
    CHECK_SPAN(text, request->forwarded_for, "198.51.100.2, 10.0.0.1");
    CHECK_EQ_INT(request->header_count, 10);
    CHECK_SPAN(text, request->headers[5].name, "X-Empty");
    CHECK_EQ_INT(request->headers[5].value.length, 0);
    CHECK_EQ_INT(request->headers[6].value.length, 0);
    CHECK_SPAN(text, request->headers[7].value, "caf\xc3\xa9");
    CHECK_EQ_BYTES(text + request->head_length, strlen(text) - request->head_length,
                   "{\"model\":\"x\"}");
}

static void test_request_methods_and_targets(void) {
    static const struct {
        const char *text;
        http_method_t method;
        const char *path;
        const char *query; /* NULL: no '?' */
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_GET, "/", NULL},
        {"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_HEAD, "/x", NULL},
        {"POST /x HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_POST, "/x", NULL},
        {"PUT /x HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_PUT, "/x", NULL},
        {"DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_DELETE, "/x", NULL},
        {"OPTIONS /x HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_OPTIONS, "/x", NULL},
        {"PATCH /x HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_PATCH, "/x", NULL},
        {"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_OPTIONS, "*", NULL},
        {"get /x HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_OTHER, "/x", NULL},
        {"PROPFIND /x HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_OTHER, "/x", NULL},
        {"GETS /x HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_OTHER, "/x", NULL},
        {"GET /a/b?c=d?e/f HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_GET, "/a/b", "c=d?e/f"},
        {"GET /? HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_GET, "/", ""},
        {"GET /%41%2f?q=%7E HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_GET, "/%41%2f", "q=%7E"},
        {"GET /a:b@c!$&'()*+,;=-._~ HTTP/1.1\r\nHost: a\r\n\r\n", HTTP_METHOD_GET,
         "/a:b@c!$&'()*+,;=-._~", NULL},
        {"GET http://example.com/v1/models?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
         HTTP_METHOD_GET, "/v1/models", "x=1"},
        {"GET HTTPS://user@[::1]:443/p HTTP/1.1\r\nHost: [::1]:443\r\n\r\n", HTTP_METHOD_GET, "/p",
         NULL},
        {"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", HTTP_METHOD_GET, "",
         NULL},
        {"GET http://example.com?q HTTP/1.1\r\nHost: example.com\r\n\r\n", HTTP_METHOD_GET, "",
         "q"},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        const char *text = cases[index].text;
        http_request_t *request = &request_under_test;
        http_parse_result_t result = request_parse_text(text, &parser_under_test, request);
        CHECK_EQ_INT(result, HTTP_PARSE_DONE);
        if (result != HTTP_PARSE_DONE) {
            fprintf(stderr, "  case %zu: %s\n", index, parser_under_test.error_message);
            continue;
        }
        CHECK_EQ_INT(request->method, cases[index].method);
        CHECK_EQ_INT(request->method_name.offset, 0);
        CHECK_EQ_INT(request->method_name.length, (size_t)(strchr(text, ' ') - text));
        CHECK_SPAN(text, request->path, cases[index].path);
        CHECK_EQ_INT(request->has_query, cases[index].query != NULL);
        if (cases[index].query != NULL) {
            CHECK_SPAN(text, request->query, cases[index].query);
        } else {
            CHECK_EQ_INT(request->query.length, 0);
        }
    }
}

static void test_request_connection_and_versions(void) {
    static const struct {
        const char *text;
        uint8_t version_minor;
        bool keep_alive;
        bool expect_continue;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1, true, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 1, false, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n", 1, false, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade,  Close \r\n\r\n", 1, false, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", 1, true, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", 1, true, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: ,,\r\n\r\n", 1, true, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: close\r\n\r\n", 1, false,
         false},
        {"GET / HTTP/1.0\r\n\r\n", 0, false, false},
        {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0, true, false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", 0, false, false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", 0, false, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", 1, true, true},
        {"GET / HTTP/1.1\r\nHost: a\r\nExpect:  100-CONTINUE \r\n\r\n", 1, true, true},
        {"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continued\r\n\r\n", 1, true, false},
        {"GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", 0, false, false},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        http_request_t *request = &request_under_test;
        http_parse_result_t result =
            request_parse_text(cases[index].text, &parser_under_test, request);
        CHECK_EQ_INT(result, HTTP_PARSE_DONE);
        if (result != HTTP_PARSE_DONE) {
            fprintf(stderr, "  case %zu\n", index);
            continue;
        }
        CHECK_EQ_INT(request->version_minor, cases[index].version_minor);
        CHECK_EQ_INT(request->keep_alive, cases[index].keep_alive);
        CHECK_EQ_INT(request->expect_continue, cases[index].expect_continue);
    }
}

static void test_request_chunked_and_lengths(void) {
    http_request_t *request = &request_under_test;
    const char *chunked = "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  ChUnKeD \t\r\n\r\n";
    CHECK_EQ_INT(request_parse_text(chunked, &parser_under_test, request), HTTP_PARSE_DONE);
    CHECK(request->chunked);
    CHECK_EQ_INT(request->content_length, -1);

    const char *zero = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    CHECK_EQ_INT(request_parse_text(zero, &parser_under_test, request), HTTP_PARSE_DONE);
    CHECK_EQ_INT(request->content_length, 0);
    CHECK(!request->chunked);

    const char *largest =
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n";
    CHECK_EQ_INT(request_parse_text(largest, &parser_under_test, request), HTTP_PARSE_DONE);
    CHECK_EQ_INT(request->content_length, INT64_MAX);

    const char *padded = "POST /x HTTP/1.1\r\nHost: a\r\ncontent-length:\t 17 \r\n\r\n";
    CHECK_EQ_INT(request_parse_text(padded, &parser_under_test, request), HTTP_PARSE_DONE);
    CHECK_EQ_INT(request->content_length, 17);
}

static void test_request_leading_empty_lines(void) {
    http_request_t *request = &request_under_test;
    const char *one = "\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_EQ_INT(request_parse_text(one, &parser_under_test, request), HTTP_PARSE_DONE);
    CHECK_SPAN(one, request->method_name, "GET");
    CHECK_SPAN(one, request->path, "/x");
    CHECK_EQ_INT(request->head_length, strlen(one));

    const char *three = "\r\n\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_EQ_INT(request_parse_text(three, &parser_under_test, request), HTTP_PARSE_DONE);
    CHECK_EQ_INT(request->head_length, strlen(three));
    CHECK_EQ_INT(request->method_name.offset, 6);

    /* Only an empty CRLF line is ignored; whitespace is not. */
    CHECK_EQ_INT(request_parse_text(" \r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n", &parser_under_test,
                                    request),
                 HTTP_PARSE_ERROR);
    CHECK_EQ_INT(parser_under_test.error_status, 400);

    /* Only empty lines so far: need more. */
    CHECK_EQ_INT(request_parse_text("\r\n\r\n", &parser_under_test, request), HTTP_PARSE_AGAIN);
}

static void test_request_pipelined(void) {
    const char *text = "POST /v1/a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
                       "hello"
                       "GET /v1/b?x HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
                       "GET /v1/c HTTP/1.1\r\nHost: c\r\n\r\n";
    size_t length = strlen(text);
    const uint8_t *bytes = (const uint8_t *)text;
    http_request_t *request = &request_under_test;

    CHECK_EQ_INT(request_parse_all_ways(bytes, length, HEAD_MAX, &parser_under_test, request),
                 HTTP_PARSE_DONE);
    CHECK_SPAN(text, request->path, "/v1/a");
    CHECK_EQ_INT(request->content_length, 5);
    size_t body_start = request->head_length;
    CHECK_EQ_BYTES(text + body_start, 5, "hello");

    size_t second_start = body_start + 5;
    const uint8_t *second = bytes + second_start;
    CHECK_EQ_INT(request_parse_all_ways(second, length - second_start, HEAD_MAX,
                                        &parser_under_test, request),
                 HTTP_PARSE_DONE);
    CHECK_SPAN((const char *)second, request->path, "/v1/b");
    CHECK_SPAN((const char *)second, request->host, "b");
    CHECK(!request->keep_alive);

    size_t third_start = second_start + request->head_length;
    const uint8_t *third = bytes + third_start;
    CHECK_EQ_INT(request_parse_all_ways(third, length - third_start, HEAD_MAX, &parser_under_test,
                                        request),
                 HTTP_PARSE_DONE);
    CHECK_SPAN((const char *)third, request->path, "/v1/c");
    CHECK_EQ_INT(third_start + request->head_length, length);

    /* Whatever follows a complete head is not looked at, even if malformed. */
    const char *trailing = "GET / HTTP/1.1\r\nHost: a\r\n\r\n\n\n\x01 garbage";
    CHECK_EQ_INT(request_parse_text(trailing, &parser_under_test, request), HTTP_PARSE_DONE);
    CHECK_EQ_INT(request->head_length, strlen("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
}

/* Each case must be refused with its status, however it is split. */
static void test_request_errors(void) {
    static const struct {
        test_input_t input;
        uint16_t status;
    } cases[] = {
        /* bare LF anywhere in the head */
        {INPUT("GET / HTTP/1.1\nHost: a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\n\n"), 400},
        {INPUT("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nX: b\nY: c\r\n\r\n"), 400},
        /* bare CR */
        {INPUT("GET / HTTP/1.1\rHost: a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n"), 400},
        {INPUT("\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        /* obs-fold */
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), 400},
        /* field names */
        {INPUT("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nX@A: b\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nX\x80: b\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nX\0A: b\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n"), 400},
        /* field values */
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fz\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nX: a\0z\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nX: \x1b[31m\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nX: \x1f\r\n\r\n"), 400},
        /* framing */
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5.0\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), 400},
        {INPUT("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400},
        /* Host */
        {INPUT("GET / HTTP/1.1\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nX-Host: a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n"), 400},
        /* other singletons the relay acts on */
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: x\r\nAuthorization: y\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1\r\nHost: a\r\nContent-Type: x\r\ncontent-type: x\r\n\r\n"), 400},
        /* request line */
        {INPUT(" / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GE(T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("G\xc3\x89T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /\tHTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET foo HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET http:// HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /a%2 HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /a% HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /a?b=\"c\" HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /<script> HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET /{x} HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET / http/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.1x\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/11\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/2\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET / HTTPS/1.1\r\nHost: a\r\n\r\n"), 400},
        {INPUT("GET / HTTP/a.b\r\nHost: a\r\n\r\n"), 400},
        {INPUT("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"), 400},
        /* unsupported transfer codings */
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"), 501},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), 501},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), 501},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n"), 501},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n"), 501},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunk\r\n\r\n"), 501},
        {INPUT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n"), 501},
        /* unsupported versions */
        {INPUT("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505},
        {INPUT("GET / HTTP/3.0\r\nHost: a\r\n\r\n"), 505},
        {INPUT("GET / HTTP/0.9\r\nHost: a\r\n\r\n"), 505},
        {INPUT("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505},
        {INPUT("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 400},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        http_parse_result_t result =
            request_parse_all_ways((const uint8_t *)cases[index].input.text,
                                   cases[index].input.length, HEAD_MAX, &parser_under_test,
                                   &request_under_test);
        if (result != HTTP_PARSE_ERROR || parser_under_test.error_status != cases[index].status) {
            const char *message = parser_under_test.error_message;
            fprintf(stderr, "  error case %zu: result %d status %d (%s)\n", index, result,
                    parser_under_test.error_status, message == NULL ? "-" : message);
        }
        CHECK_EQ_INT(result, HTTP_PARSE_ERROR);
        CHECK_EQ_INT(parser_under_test.error_status, cases[index].status);
        CHECK(parser_under_test.error_message != NULL &&
              parser_under_test.error_message[0] != '\0' &&
              !has_upper_case(parser_under_test.error_message));
    }
}

static void test_request_error_messages(void) {
    static const struct {
        const char *text;
        const char *message;
    } cases[] = {
        {"GET / HTTP/1.1\nHost: a\r\n\r\n", "bare lf in request head"},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", "obsolete line folding is not allowed"},
        {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "whitespace between header name and colon"},
        {"GET / HTTP/1.1\r\n: a\r\n\r\n", "empty header name"},
        {"GET / HTTP/1.1\r\nX(: a\r\n\r\n", "invalid character in header name"},
        {"GET / HTTP/1.1\r\nHost: \x01\r\n\r\n", "invalid character in header value"},
        {"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
         "content-length with transfer-encoding"},
        {"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
         "duplicate content-length"},
        {"GET / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n", "invalid content-length"},
        {"GET / HTTP/1.1\r\n\r\n", "missing host header"},
        {"GET / HTTP/2.0\r\n\r\n", "http version not supported"},
        {"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
         "unsupported transfer-encoding"},
        {"GET /# HTTP/1.1\r\n\r\n", "invalid request target"},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        CHECK_EQ_INT(request_parse_text(cases[index].text, &parser_under_test, &request_under_test),
                     HTTP_PARSE_ERROR);
        CHECK(message_is(parser_under_test.error_message, cases[index].message));
    }
}

static void test_request_head_too_large(void) {
    const char *text = "GET /x HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789\r\n\r\n";
    size_t length = strlen(text);
    const uint8_t *bytes = (const uint8_t *)text;
    http_request_parser_t *parser = &parser_under_test;
    http_request_t *request = &request_under_test;

    /* A head of exactly the limit is accepted; one byte less is 431. */
    CHECK_EQ_INT(request_parse_all_ways(bytes, length, (uint32_t)length, parser, request),
                 HTTP_PARSE_DONE);
    CHECK_EQ_INT(request_parse_all_ways(bytes, length, (uint32_t)length - 1, parser, request),
                 HTTP_PARSE_ERROR);
    CHECK_EQ_INT(parser->error_status, 431);

    /* Decided as soon as the limit is passed, long before the head ends. */
    http_request_parser_init(parser, 16);
    CHECK_EQ_INT(http_request_parse(parser, request, bytes, 16), HTTP_PARSE_AGAIN);
    CHECK_EQ_INT(http_request_parse(parser, request, bytes, 17), HTTP_PARSE_ERROR);
    CHECK_EQ_INT(parser->error_status, 431);
    CHECK(message_is(parser->error_message, "request header fields too large"));
    CHECK_EQ_INT(http_request_parse(parser, request, bytes, length), HTTP_PARSE_ERROR);

    /* An endless header line with no LF at all. */
    static uint8_t endless[HEAD_MAX + 100];
    memset(endless, 'a', sizeof(endless));
    memcpy(endless, "GET / HTTP/1.1\r\nX: ", 19);
    CHECK_EQ_INT(request_parse_bytewise(endless, sizeof(endless), HEAD_MAX, parser, request),
                 HTTP_PARSE_ERROR);
    CHECK_EQ_INT(parser->error_status, 431);
    CHECK_EQ_INT(parser->head.length_seen, HEAD_MAX + 1);

    /* Leading empty lines count towards the limit too. */
    const char *leading = "\r\n\r\nGET / HTTP/1.0\r\n\r\n";
    CHECK_EQ_INT(request_parse_all_ways((const uint8_t *)leading, strlen(leading),
                                        (uint32_t)strlen(leading) - 1, parser, request),
                 HTTP_PARSE_ERROR);
    CHECK_EQ_INT(parser->error_status, 431);

    /* A malformed line before the limit is reported as what it is. */
    const char *bad_then_long = "GET / HTTP/1.1\r\nBad Name: x\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaa";
    CHECK_EQ_INT(request_parse_all_ways((const uint8_t *)bad_then_long, strlen(bad_then_long), 40,
                                        parser, request),
                 HTTP_PARSE_ERROR);
    CHECK_EQ_INT(parser->error_status, 400);
}

static size_t build_request_with_fields(char *buffer, size_t capacity, int field_count) {
    size_t used = 0;
    int written = snprintf(buffer, capacity, "GET / HTTP/1.1\r\nHost: a\r\n");
    RW_ASSERT(written > 0);
    used = (size_t)written;
    for (int index = 1; index < field_count; index++) {
        written = snprintf(buffer + used, capacity - used, "X-Field-%d: %d\r\n", index, index);
        RW_ASSERT(written > 0 && (size_t)written < capacity - used);
        used += (size_t)written;
    }
    written = snprintf(buffer + used, capacity - used, "\r\n");
    RW_ASSERT(written == 2);
    return used + 2;
}

static void test_request_too_many_fields(void) {
    static char buffer[4096];
    size_t length = build_request_with_fields(buffer, sizeof(buffer), HTTP_HEADERS_MAX);
    CHECK_EQ_INT(request_parse_all_ways((const uint8_t *)buffer, length, HEAD_MAX,
                                        &parser_under_test, &request_under_test),
                 HTTP_PARSE_DONE);
    CHECK_EQ_INT(request_under_test.header_count, HTTP_HEADERS_MAX);
    CHECK_SPAN(buffer, request_under_test.headers[HTTP_HEADERS_MAX - 1].name, "X-Field-63");
    CHECK_SPAN(buffer, request_under_test.headers[HTTP_HEADERS_MAX - 1].value, "63");

    length = build_request_with_fields(buffer, sizeof(buffer), HTTP_HEADERS_MAX + 1);
    CHECK_EQ_INT(request_parse_all_ways((const uint8_t *)buffer, length, HEAD_MAX,
                                        &parser_under_test, &request_under_test),
                 HTTP_PARSE_ERROR);
    CHECK_EQ_INT(parser_under_test.error_status, 431);
    CHECK(message_is(parser_under_test.error_message, "too many header fields"));
}

/* The parser keeps its place: after each AGAIN every byte given has been
 * searched once, and results stay fixed after DONE or ERROR. */
static void test_request_resumes_without_rescanning(void) {
    enum { PADDING_LINES = 50 };
    static uint8_t buffer[HEAD_MAX];
    memcpy(buffer, "POST / HTTP/1.1\r\nHost: a\r\n", 26);
    size_t used = 26;
    for (int line = 0; line < PADDING_LINES; line++) {
        memcpy(buffer + used, "X-Padding: abcdefghijklmnopqrstuvwxyz\r\n", 39);
        used += 39;
    }
    memcpy(buffer + used, "\r\n", 2);
    used += 2;

    http_request_parser_t *parser = &parser_under_test;
    http_request_t *request = &request_under_test;
    http_request_parser_init(parser, HEAD_MAX);
    for (size_t length = 0; length < used; length++) {
        CHECK_EQ_INT(http_request_parse(parser, request, buffer, length), HTTP_PARSE_AGAIN);
        CHECK_EQ_INT(parser->head.cursor.scan_offset, length);
        CHECK(parser->head.cursor.line_start <= length);
    }
    CHECK_EQ_INT(http_request_parse(parser, request, buffer, used), HTTP_PARSE_DONE);
    CHECK_EQ_INT(request->head_length, used);
    CHECK_EQ_INT(request->header_count, 1 + PADDING_LINES);
    /* Repeated calls after DONE change nothing. */
    http_request_t saved = *request;
    CHECK_EQ_INT(http_request_parse(parser, request, buffer, used), HTTP_PARSE_DONE);
    CHECK(requests_equal(&saved, request));

    http_request_parser_init(parser, HEAD_MAX);
    CHECK_EQ_INT(http_request_parse(parser, request, (const uint8_t *)"GET / HTTP/9.9\r\n", 16),
                 HTTP_PARSE_ERROR);
    CHECK_EQ_INT(http_request_parse(parser, request, (const uint8_t *)"GET / HTTP/9.9\r\n", 16),
                 HTTP_PARSE_ERROR);
    CHECK_EQ_INT(parser->error_status, 505);
}

static void test_span_helpers(void) {
    const uint8_t *text = (const uint8_t *)"Content-TYPE";
    CHECK(http_span_equals_ignore_case(text, (http_span_t){0, 12}, "content-type"));
    CHECK(http_span_equals_ignore_case(text, (http_span_t){0, 12}, "CONTENT-TYPE"));
    CHECK(!http_span_equals_ignore_case(text, (http_span_t){0, 12}, "content-typ"));
    CHECK(!http_span_equals_ignore_case(text, (http_span_t){0, 11}, "content-type"));
    CHECK(http_span_equals_ignore_case(text, (http_span_t){8, 4}, "type"));
    CHECK(http_span_equals_ignore_case(text, (http_span_t){3, 0}, ""));
    CHECK(!http_span_equals_ignore_case((const uint8_t *)"[", (http_span_t){0, 1}, "{"));
    CHECK(!http_span_equals_ignore_case((const uint8_t *)"@", (http_span_t){0, 1}, "`"));
    CHECK(http_is_token_char('!') && http_is_token_char('~') && http_is_token_char('z'));
    CHECK(!http_is_token_char(':') && !http_is_token_char(' ') && !http_is_token_char('(') &&
          !http_is_token_char(0) && !http_is_token_char(0x80) && !http_is_token_char('"'));
}

/* Framing rules any accepted request must obey, checked independently of
 * the parser's own code paths. */
static void check_accepted_request(const uint8_t *text, size_t length,
                                   const http_request_t *request) {
    uint32_t head = request->head_length;
    CHECK(head >= 18 && head <= length);
    if (head < 4 || head > length) {
        return;
    }
    CHECK(memcmp(text + head - 4, "\r\n\r\n", 4) == 0);
    for (uint32_t index = 0; index < head; index++) {
        uint8_t byte = text[index];
        if (byte == '\n') {
            CHECK(index > 0 && text[index - 1] == '\r');
        } else if (byte == '\r') {
            CHECK(index + 1 < head && text[index + 1] == '\n');
        } else {
            CHECK(byte == '\t' || (byte >= 0x20 && byte != 0x7f));
        }
    }
    CHECK(request->header_count <= HTTP_HEADERS_MAX);
    CHECK(request->version_minor <= 1);
    CHECK(request->content_length >= -1);
    CHECK(!(request->chunked && request->content_length != -1));
    CHECK(request->version_minor == 0 || request->has_host);
    CHECK(request->method_name.length > 0);
    CHECK(request->target.length > 0);
    const http_span_t spans[] = {request->method_name, request->target, request->path,
                                 request->query, request->authorization, request->host,
                                 request->content_type};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(spans); index++) {
        CHECK((uint64_t)spans[index].offset + spans[index].length <= head);
    }
    for (uint32_t index = 0; index < request->method_name.length; index++) {
        CHECK(http_is_token_char(text[request->method_name.offset + index]));
    }
    for (uint32_t index = 0; index < request->header_count && index < HTTP_HEADERS_MAX; index++) {
        http_header_t header = request->headers[index];
        CHECK(header.name.length > 0);
        CHECK((uint64_t)header.name.offset + header.name.length <= head);
        CHECK((uint64_t)header.value.offset + header.value.length <= head);
        for (uint32_t position = 0; position < header.name.length; position++) {
            CHECK(http_is_token_char(text[header.name.offset + position]));
        }
        CHECK(text[header.name.offset + header.name.length] == ':');
        if (header.value.length > 0) {
            uint8_t first = text[header.value.offset];
            uint8_t last = text[header.value.offset + header.value.length - 1];
            CHECK(first != ' ' && first != '\t' && last != ' ' && last != '\t');
        }
    }
}

static const char *const request_seeds[] = {
    "POST /v1/chat/completions HTTP/1.1\r\nHost: relay:8080\r\nAuthorization: Bearer sk-1\r\n"
    "Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"a\":\"bcd\"}",
    "POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    "Expect: 100-continue\r\nConnection: keep-alive\r\n\r\n",
    "\r\nGET http://a.example/v1/models HTTP/1.0\r\nConnection: keep-alive\r\nX: \t y \r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\nGET / HTTP/1.1\r\n\r\n",
};

/* Replaces, inserts or deletes a few bytes, favouring bytes that matter to
 * HTTP framing. Returns the new length. */
static size_t mutate(uint8_t *buffer, size_t length, size_t capacity) {
    static const uint8_t interesting[] = {'\r', '\n', ' ', '\t', ':', ',', ';', '0', '9', 'a',
                                          'F',  '/',  '?', '%',  '#', 0,   0x7f, 0x80, 0xff, '"'};
    size_t operations = 1 + unit_random_below(&test_random, 4);
    for (size_t operation = 0; operation < operations; operation++) {
        uint8_t byte = unit_random_below(&test_random, 3) == 0 ? (uint8_t)unit_random_next(&test_random)
                                            : interesting[unit_random_below(&test_random, sizeof(interesting))];
        size_t choice = unit_random_below(&test_random, 4);
        if (choice == 0 && length > 0) {
            buffer[unit_random_below(&test_random, length)] = byte;
        } else if (choice == 1 && length < capacity) {
            size_t at = unit_random_below(&test_random, length + 1);
            memmove(buffer + at + 1, buffer + at, length - at);
            buffer[at] = byte;
            length++;
        } else if (choice == 2 && length > 0) {
            size_t at = unit_random_below(&test_random, length);
            memmove(buffer + at, buffer + at + 1, length - at - 1);
            length--;
        } else if (length > 0) {
            length = unit_random_below(&test_random, length + 1); /* truncate */
        }
    }
    return length;
}

static void test_request_random_mutations(void) {
    test_random.state = 0x5eed0001u;
    static uint8_t buffer[512];
    int accepted = 0;
    int refused = 0;
    for (int iteration = 0; iteration < 4000; iteration++) {
        const char *seed = request_seeds[unit_random_below(&test_random, RW_ARRAY_LENGTH(request_seeds))];
        size_t length = strlen(seed);
        memcpy(buffer, seed, length);
        length = mutate(buffer, length, sizeof(buffer));
        uint32_t head_max = unit_random_below(&test_random, 8) == 0 ? (uint32_t)(20 + unit_random_below(&test_random, 200)) : HEAD_MAX;

        int failures_before = unit_failures_in_test;
        http_parse_result_t result = request_parse_all_ways(
            buffer, length, head_max, &parser_under_test, &request_under_test);
        if (result == HTTP_PARSE_DONE) {
            accepted++;
            check_accepted_request(buffer, length, &request_under_test);
        } else if (result == HTTP_PARSE_ERROR) {
            refused++;
            uint16_t status = parser_under_test.error_status;
            CHECK(status == 400 || status == 431 || status == 501 || status == 505);
            CHECK(parser_under_test.error_message != NULL &&
                  !has_upper_case(parser_under_test.error_message));
        } else {
            CHECK_EQ_INT(result, HTTP_PARSE_AGAIN);
            CHECK(length <= head_max);
        }
        if (unit_failures_in_test != failures_before) {
            fprintf(stderr, "  mutation iteration %d: \"%.*s\"\n", iteration, (int)length,
                    (const char *)buffer);
            break;
        }
    }
    /* The loop must exercise both outcomes to mean anything. */
    CHECK(accepted > 200);
    CHECK(refused > 1000);
}

/* ======================================================================== */
/* Responses                                                                */
/* ======================================================================== */

static bool responses_equal(const http_response_t *a, const http_response_t *b) {
    if (a->status != b->status || a->version_minor != b->version_minor ||
        !spans_equal(a->reason, b->reason) || a->header_count != b->header_count ||
        a->content_length != b->content_length || a->chunked != b->chunked ||
        a->keep_alive != b->keep_alive || a->body_absent != b->body_absent ||
        a->body_until_close != b->body_until_close || a->has_content_type != b->has_content_type ||
        !spans_equal(a->content_type, b->content_type) || a->head_length != b->head_length) {
        return false;
    }
    for (uint32_t index = 0; index < a->header_count; index++) {
        if (!spans_equal(a->headers[index].name, b->headers[index].name) ||
            !spans_equal(a->headers[index].value, b->headers[index].value)) {
            return false;
        }
    }
    return true;
}

static http_parse_result_t response_parse_all_ways(const uint8_t *text, size_t length,
                                                   uint32_t head_max,
                                                   http_response_parser_t *parser,
                                                   http_response_t *response) {
    uint8_t *copy = copy_exact(text, length);
    http_response_parser_init(parser, head_max);
    http_parse_result_t whole = http_response_parse(parser, response, copy, length);
    free(copy);

    static http_response_parser_t other_parser;
    static http_response_t other_response;
    http_response_parser_init(&other_parser, head_max);
    http_parse_result_t bytewise = HTTP_PARSE_AGAIN;
    for (size_t prefix = 0; prefix <= length && bytewise == HTTP_PARSE_AGAIN; prefix++) {
        copy = copy_exact(text, prefix);
        bytewise = http_response_parse(&other_parser, &other_response, copy, prefix);
        free(copy);
    }
    CHECK_EQ_INT(bytewise, whole);
    if (bytewise == whole && whole == HTTP_PARSE_DONE) {
        CHECK(responses_equal(&other_response, response));
    }
    if (bytewise == whole && whole == HTTP_PARSE_ERROR) {
        CHECK(other_parser.error_message == parser->error_message);
    }
    for (size_t split = 0; split <= length; split++) {
        http_response_parser_init(&other_parser, head_max);
        http_parse_result_t result =
            http_response_parse(&other_parser, &other_response, text, split);
        if (result == HTTP_PARSE_AGAIN) {
            result = http_response_parse(&other_parser, &other_response, text, length);
        }
        if (result != whole || (whole == HTTP_PARSE_DONE &&
                                !responses_equal(&other_response, response))) {
            fprintf(stderr, "  response split at %zu differs\n", split);
            CHECK(false);
            break;
        }
    }
    return whole;
}

static http_response_parser_t response_parser_under_test;
static http_response_t response_under_test;

static http_parse_result_t response_parse_text(const char *text) {
    return response_parse_all_ways((const uint8_t *)text, strlen(text), HEAD_MAX,
                                   &response_parser_under_test, &response_under_test);
}

static void test_response_content_length(void) {
    const char *text = "HTTP/1.1 200 OK\r\n"
                       "Content-Type: application/json\r\n"
                       "Content-Length: 2\r\n"
                       "X-Request-Id:  abc \r\n"
                       "\r\n"
                       "{}";
    http_response_t *response = &response_under_test;
    CHECK_EQ_INT(response_parse_text(text), HTTP_PARSE_DONE);
    CHECK_EQ_INT(response->status, 200);
    CHECK_EQ_INT(response->version_minor, 1);
    CHECK_SPAN(text, response->reason, "OK");
    CHECK_EQ_INT(response->header_count, 3);
    CHECK(response->has_content_type);
    CHECK_SPAN(text, response->content_type, "application/json");
    CHECK_EQ_INT(response->content_length, 2);
    CHECK(!response->chunked);
    CHECK(response->keep_alive);
    CHECK(!response->body_absent);
    CHECK(!response->body_until_close);
    CHECK_EQ_BYTES(text + response->head_length, 2, "{}");
    const http_header_t *request_id =
        http_response_find_header(response, (const uint8_t *)text, "x-request-id");
    CHECK(request_id != NULL);
    if (request_id != NULL) {
        CHECK_SPAN(text, request_id->value, "abc");
    }
}

static void test_response_variants(void) {
    static const struct {
        const char *text;
        uint16_t status;
        const char *reason;
        int64_t content_length;
        bool chunked;
        bool keep_alive;
        bool body_absent;
        bool body_until_close;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 200, "OK", -1, true, true, false,
         false},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked \r\nConnection: close\r\n\r\n", 200, "OK",
         -1, true, false, false, false},
        {"HTTP/1.1 200 OK\r\n\r\n", 200, "OK", -1, false, false, false, true},
        {"HTTP/1.0 200 OK\r\n\r\n", 200, "OK", -1, false, false, false, true},
        {"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", 200, "OK", 3, false, false, false, false},
        {"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n", 200, "OK", 3,
         false, true, false, false},
        {"HTTP/1.1 204 No Content\r\n\r\n", 204, "No Content", -1, false, true, true, false},
        {"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", 304, "Not Modified", 100,
         false, true, true, false},
        {"HTTP/1.1 100 Continue\r\n\r\n", 100, "Continue", -1, false, true, true, false},
        {"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n", 101,
         "Switching Protocols", -1, false, true, true, false},
        {"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", 200, "", 0, false, true, false, false},
        {"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", 200, "", 0, false, true, false, false},
        {"HTTP/1.1 429 Too Many  Requests\t!\r\nContent-Length: 5\r\n\r\n", 429,
         "Too Many  Requests\t!", 5, false, true, false, false},
        {"HTTP/1.1 599 x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 599, "x", 1, false,
         true, false, false},
        {"HTTP/1.1 500 Internal \xc3\xa9rror\r\nContent-Length: 0\r\n\r\n", 500,
         "Internal \xc3\xa9rror", 0, false, true, false, false},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        const char *text = cases[index].text;
        http_response_t *response = &response_under_test;
        http_parse_result_t result = response_parse_text(text);
        CHECK_EQ_INT(result, HTTP_PARSE_DONE);
        if (result != HTTP_PARSE_DONE) {
            fprintf(stderr, "  response case %zu: %s\n", index,
                    response_parser_under_test.error_message);
            continue;
        }
        CHECK_EQ_INT(response->status, cases[index].status);
        CHECK_SPAN(text, response->reason, cases[index].reason);
        CHECK_EQ_INT(response->content_length, cases[index].content_length);
        CHECK_EQ_INT(response->chunked, cases[index].chunked);
        CHECK_EQ_INT(response->keep_alive, cases[index].keep_alive);
        CHECK_EQ_INT(response->body_absent, cases[index].body_absent);
        CHECK_EQ_INT(response->body_until_close, cases[index].body_until_close);
        CHECK_EQ_INT(response->head_length, strlen(text));
    }
}

static void test_response_interim_then_final(void) {
    const char *text = "HTTP/1.1 100 Continue\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody";
    http_response_t *response = &response_under_test;
    CHECK_EQ_INT(response_parse_text(text), HTTP_PARSE_DONE);
    CHECK_EQ_INT(response->status, 100);
    CHECK(response->body_absent);
    uint32_t next = response->head_length;
    CHECK_EQ_INT(response_parse_all_ways((const uint8_t *)text + next, strlen(text) - next,
                                         HEAD_MAX, &response_parser_under_test, response),
                 HTTP_PARSE_DONE);
    CHECK_EQ_INT(response->status, 200);
    CHECK_EQ_INT(response->content_length, 4);
    CHECK_EQ_BYTES(text + next + response->head_length, 4, "body");
}

static void test_response_errors(void) {
    static const test_input_t cases[] = {
        INPUT("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
        INPUT("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n"),
        INPUT("HTTP/2.0 200 OK\r\n\r\n"),
        INPUT("HTTP/1.2 200 OK\r\n\r\n"),
        INPUT("HTTP/1.1  200 OK\r\n\r\n"),
        INPUT("HTTP/1.1 20 OK\r\n\r\n"),
        INPUT("HTTP/1.1 2000 OK\r\n\r\n"),
        INPUT("HTTP/1.1 200OK\r\n\r\n"),
        INPUT("HTTP/1.1 099 Low\r\n\r\n"),
        INPUT("HTTP/1.1 600 High\r\n\r\n"),
        INPUT("HTTP/1.1 2x0 OK\r\n\r\n"),
        INPUT("HTTP/1.1\r\n\r\n"),
        INPUT("http/1.1 200 OK\r\n\r\n"),
        INPUT("ICY 200 OK\r\n\r\n"),
        INPUT("HTTP/1.1 200 O\x01K\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\rX\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n"),
        INPUT("HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n"),
        INPUT("HTTP/1.1 200 OK\r\n(bad): a\r\n\r\n"),
        INPUT("\r\nHTTP/1.1 200 OK\r\n\r\n"),
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        http_parse_result_t result =
            response_parse_all_ways((const uint8_t *)cases[index].text, cases[index].length,
                                    HEAD_MAX, &response_parser_under_test, &response_under_test);
        if (result != HTTP_PARSE_ERROR) {
            fprintf(stderr, "  response error case %zu: result %d\n", index, result);
        }
        CHECK_EQ_INT(result, HTTP_PARSE_ERROR);
        const char *message = response_parser_under_test.error_message;
        CHECK(message != NULL && message[0] != '\0' && !has_upper_case(message));
    }
}

static void test_response_limits(void) {
    static char buffer[4096];
    int used = snprintf(buffer, sizeof(buffer), "HTTP/1.1 200 OK\r\n");
    for (int index = 0; index < HTTP_HEADERS_MAX; index++) {
        used += snprintf(buffer + used, sizeof(buffer) - (size_t)used, "X-%d: v\r\n", index);
    }
    used += snprintf(buffer + used, sizeof(buffer) - (size_t)used, "\r\n");
    CHECK_EQ_INT(response_parse_all_ways((const uint8_t *)buffer, (size_t)used, HEAD_MAX,
                                         &response_parser_under_test, &response_under_test),
                 HTTP_PARSE_DONE);
    CHECK_EQ_INT(response_under_test.header_count, HTTP_HEADERS_MAX);

    memcpy(buffer + used - 2, "Y: z\r\n\r\n", 8);
    used += 6;
    CHECK_EQ_INT(response_parse_all_ways((const uint8_t *)buffer, (size_t)used, HEAD_MAX,
                                         &response_parser_under_test, &response_under_test),
                 HTTP_PARSE_ERROR);
    CHECK(message_is(response_parser_under_test.error_message,
                     "too many upstream header fields"));

    const char *text = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    size_t length = strlen(text);
    CHECK_EQ_INT(response_parse_all_ways((const uint8_t *)text, length, (uint32_t)length,
                                         &response_parser_under_test, &response_under_test),
                 HTTP_PARSE_DONE);
    CHECK_EQ_INT(response_parse_all_ways((const uint8_t *)text, length, (uint32_t)length - 1,
                                         &response_parser_under_test, &response_under_test),
                 HTTP_PARSE_ERROR);
    CHECK(message_is(response_parser_under_test.error_message, "upstream response head too large"));
}

static const char *const response_seeds[] = {
    ("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
     "Connection: keep-alive\r\n\r\n5\r\nhello\r\n"),
    "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\nRetry-After: 1\r\n\r\n{}",
    "HTTP/1.0 204\r\nX-A:b\r\n\r\n",
};

static void test_response_random_mutations(void) {
    test_random.state = 0x5eed0002u;
    static uint8_t buffer[512];
    int accepted = 0;
    for (int iteration = 0; iteration < 3000; iteration++) {
        const char *seed = response_seeds[unit_random_below(&test_random, RW_ARRAY_LENGTH(response_seeds))];
        size_t length = strlen(seed);
        memcpy(buffer, seed, length);
        length = mutate(buffer, length, sizeof(buffer));
        int failures_before = unit_failures_in_test;
        http_response_t *response = &response_under_test;
        http_parse_result_t result = response_parse_all_ways(
            buffer, length, HEAD_MAX, &response_parser_under_test, response);
        if (result == HTTP_PARSE_DONE) {
            accepted++;
            uint32_t head = response->head_length;
            CHECK(head <= length && head >= 16);
            CHECK(memcmp(buffer + head - 4, "\r\n\r\n", 4) == 0);
            CHECK(response->status >= 100 && response->status <= 599);
            CHECK(!(response->chunked && response->content_length != -1));
            CHECK(response->body_until_close ==
                  (!response->body_absent && !response->chunked && response->content_length < 0));
            CHECK(!(response->body_until_close && response->keep_alive));
            CHECK(response->header_count <= HTTP_HEADERS_MAX);
            for (uint32_t index = 0; index < head; index++) {
                if (buffer[index] == '\n') {
                    CHECK(index > 0 && buffer[index - 1] == '\r');
                }
            }
            CHECK((uint64_t)response->reason.offset + response->reason.length <= head);
        } else if (result == HTTP_PARSE_ERROR) {
            CHECK(response_parser_under_test.error_message != NULL);
        }
        if (unit_failures_in_test != failures_before) {
            fprintf(stderr, "  response mutation iteration %d\n", iteration);
            break;
        }
    }
    CHECK(accepted > 100);
}

/* ======================================================================== */
/* Chunked bodies                                                           */
/* ======================================================================== */

enum { PAYLOAD_CAPACITY = 4096 };

typedef struct decode_outcome {
    http_chunked_result_t result;
    size_t consumed_total; /* input bytes used up to DONE or ERROR, or all of them */
    char payload[PAYLOAD_CAPACITY];
    size_t payload_length;
    uint64_t payload_bytes_total;
    const char *error_message;
} decode_outcome_t;

/* Feeds input in pieces whose sizes come from piece_size (0: all at once),
 * each piece in its own exact allocation, collecting the payload spans and
 * checking each call's contract on the way. */
static void chunked_decode_in_pieces(const uint8_t *input, size_t length, size_t piece_size,
                                     decode_outcome_t *outcome) {
    http_chunked_decoder_t decoder;
    http_chunked_decoder_init(&decoder);
    memset(outcome, 0, sizeof(*outcome));
    outcome->result = HTTP_CHUNKED_AGAIN;
    size_t position = 0;
    while (outcome->result == HTTP_CHUNKED_AGAIN || outcome->result == HTTP_CHUNKED_DATA) {
        if (position == length && outcome->result == HTTP_CHUNKED_AGAIN) {
            break;
        }
        size_t piece = piece_size == 0 ? length - position : RW_MIN(piece_size, length - position);
        uint8_t *copy = copy_exact(input + position, piece);
        size_t offset_in_piece = 0;
        for (;;) {
            size_t consumed = 0, data_offset = 0, data_length = 0;
            http_chunked_result_t result =
                http_chunked_decode(&decoder, copy + offset_in_piece, piece - offset_in_piece,
                                    &consumed, &data_offset, &data_length);
            CHECK(consumed <= piece - offset_in_piece);
            outcome->result = result;
            if (result == HTTP_CHUNKED_DATA) {
                CHECK(data_length > 0);
                CHECK(data_offset + data_length == consumed);
                if (outcome->payload_length + data_length <= PAYLOAD_CAPACITY) {
                    memcpy(outcome->payload + outcome->payload_length,
                           copy + offset_in_piece + data_offset, data_length);
                }
                outcome->payload_length += data_length;
                offset_in_piece += consumed;
                continue;
            }
            CHECK_EQ_INT(data_length, 0);
            if (result == HTTP_CHUNKED_AGAIN) {
                CHECK_EQ_INT(consumed, piece - offset_in_piece);
            }
            offset_in_piece += consumed;
            break;
        }
        free(copy);
        position += offset_in_piece;
        if (outcome->result != HTTP_CHUNKED_AGAIN) {
            break;
        }
    }
    outcome->consumed_total = position;
    outcome->payload_bytes_total = decoder.payload_bytes_total;
    outcome->error_message = decoder.error_message;
    CHECK_EQ_INT(decoder.payload_bytes_total, outcome->payload_length);
    if (outcome->result == HTTP_CHUNKED_DONE || outcome->result == HTTP_CHUNKED_ERROR) {
        /* Further calls change nothing. */
        size_t consumed = 1, data_offset = 1, data_length = 1;
        CHECK_EQ_INT(http_chunked_decode(&decoder, input, length, &consumed, &data_offset,
                                         &data_length),
                     outcome->result);
        CHECK_EQ_INT(consumed, 0);
        CHECK_EQ_INT(data_length, 0);
    }
}

static bool outcomes_equal(const decode_outcome_t *a, const decode_outcome_t *b) {
    if (a->result != b->result || a->payload_length != b->payload_length ||
        a->payload_bytes_total != b->payload_bytes_total || a->error_message != b->error_message) {
        return false;
    }
    if (a->result == HTTP_CHUNKED_DONE && a->consumed_total != b->consumed_total) {
        return false;
    }
    size_t compared = RW_MIN(a->payload_length, (size_t)PAYLOAD_CAPACITY);
    return memcmp(a->payload, b->payload, compared) == 0;
}

/* Decodes whole, one byte per call, in pieces of 2, 3 and 7, and split in two
 * at every point (then in three around it); all must agree. */
static void chunked_decode_all_ways(const uint8_t *input, size_t length, decode_outcome_t *whole) {
    chunked_decode_in_pieces(input, length, 0, whole);
    static decode_outcome_t other;
    static const size_t piece_sizes[] = {1, 2, 3, 7};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(piece_sizes); index++) {
        chunked_decode_in_pieces(input, length, piece_sizes[index], &other);
        if (!outcomes_equal(whole, &other)) {
            fprintf(stderr, "  chunked pieces of %zu differ\n", piece_sizes[index]);
            CHECK(false);
        }
    }
    for (size_t split = 0; split <= length; split++) {
        http_chunked_decoder_t decoder;
        http_chunked_decoder_init(&decoder);
        size_t consumed, data_offset, data_length;
        size_t position = 0;
        size_t payload = 0;
        http_chunked_result_t result = HTTP_CHUNKED_AGAIN;
        size_t bounds[] = {split, length};
        for (size_t part = 0;
             part < 2 && result != HTTP_CHUNKED_DONE && result != HTTP_CHUNKED_ERROR; part++) {
            do {
                result = http_chunked_decode(&decoder, input + position, bounds[part] - position,
                                             &consumed, &data_offset, &data_length);
                if (result == HTTP_CHUNKED_DATA) {
                    payload += data_length;
                }
                position += consumed;
            } while (result == HTTP_CHUNKED_DATA);
        }
        if (result != whole->result || payload != whole->payload_length ||
            (result == HTTP_CHUNKED_DONE && position != whole->consumed_total)) {
            fprintf(stderr, "  chunked split at %zu differs\n", split);
            CHECK(false);
            break;
        }
    }
}

static void test_chunked_valid_bodies(void) {
    static const struct {
        test_input_t input;
        test_input_t payload;
        const char *rest; /* bytes after the body */
    } cases[] = {
        {INPUT("5\r\nhello\r\n0\r\n\r\n"), INPUT("hello"), ""},
        {INPUT("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT"), INPUT("hello world"), "NEXT"},
        {INPUT("0\r\n\r\n"), INPUT(""), ""},
        {INPUT("0\r\n\r\nGET / HTTP/1.1\r\n"), INPUT(""), "GET / HTTP/1.1\r\n"},
        {INPUT("a\r\n0123456789\r\nA\r\nABCDEFGHIJ\r\n0\r\n\r\n"),
         INPUT("0123456789ABCDEFGHIJ"), ""},
        {INPUT("1f\r\n0123456789012345678901234567890\r\n0\r\n\r\n"),
         INPUT("0123456789012345678901234567890"), ""},
        {INPUT("0005\r\nhello\r\n000\r\n\r\n"), INPUT("hello"), ""},
        {INPUT("5;name=value\r\nhello\r\n0;last\r\n\r\n"), INPUT("hello"), ""},
        {INPUT("5 ; a=\"q;\\\"x\" ;b\r\nhello\r\n0\t;z\r\n\r\n"), INPUT("hello"), ""},
        {INPUT("3\r\n\r\n\n\r\n0\r\n\r\n"), INPUT("\r\n\n"), ""},
        {INPUT("2\r\n\0\xff\r\n0\r\n\r\n"), INPUT("\0\xff"), ""},
        {INPUT("0\r\nX-Trailer: a\r\nY:b\r\nZ:\r\n\r\nrest"), INPUT(""), "rest"},
        {INPUT("4\r\nwiki\r\n0\r\nChecksum: \xc3\xa9 x\t\r\n\r\n"), INPUT("wiki"), ""},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        static decode_outcome_t outcome;
        const test_input_t *input = &cases[index].input;
        chunked_decode_all_ways((const uint8_t *)input->text, input->length, &outcome);
        if (outcome.result != HTTP_CHUNKED_DONE) {
            fprintf(stderr, "  chunked case %zu: %d (%s)\n", index, outcome.result,
                    outcome.error_message == NULL ? "-" : outcome.error_message);
        }
        CHECK_EQ_INT(outcome.result, HTTP_CHUNKED_DONE);
        const test_input_t *payload = &cases[index].payload;
        CHECK_EQ_INT(outcome.payload_length, payload->length);
        CHECK(outcome.payload_length == payload->length &&
              memcmp(outcome.payload, payload->text, payload->length) == 0);
        CHECK_EQ_BYTES(input->text + outcome.consumed_total, input->length - outcome.consumed_total,
                       cases[index].rest);
    }
}

static void test_chunked_errors(void) {
    static const struct {
        test_input_t input;
        const char *message;
    } cases[] = {
        {INPUT("5\nhello\r\n0\r\n\r\n"), "bare lf in chunked body"},
        {INPUT("5;ext\nhello\r\n0\r\n\r\n"), "bare lf in chunked body"},
        {INPUT("5\r\nhello\n0\r\n\r\n"), "bare lf in chunked body"},
        {INPUT("5\r\nhello\r\n0\n\r\n"), "bare lf in chunked body"},
        {INPUT("5\r\nhello\r\n0\r\n\n"), "bare lf in chunked body"},
        {INPUT("0\r\nX: y\n\r\n"), "bare lf in chunked body"},
        {INPUT("5\r\nhelloX\r\n0\r\n\r\n"), "missing crlf after chunk data"},
        {INPUT("5\r\nhello\rX0\r\n\r\n"), "missing crlf after chunk data"},
        {INPUT("5\r\nhello\r\n0\r\n\rX"), "missing lf at end of chunked body"},
        {INPUT("5\r\rhello"), "missing lf after chunk size"},
        {INPUT("\r\n"), "invalid chunk size"},
        {INPUT("g\r\n"), "invalid chunk size"},
        {INPUT("0x5\r\nhello\r\n"), "invalid chunk size"},
        {INPUT("-5\r\n"), "invalid chunk size"},
        {INPUT("+5\r\n"), "invalid chunk size"},
        {INPUT(" 5\r\n"), "invalid chunk size"},
        {INPUT(";x\r\n"), "invalid chunk size"},
        {INPUT("5 \r\nhello\r\n"), "invalid chunk size"},
        {INPUT("5 x\r\n"), "invalid chunk size"},
        {INPUT("5x\r\n"), "invalid chunk size"},
        {INPUT("10000000001\r\n"), "chunk size too large"},
        {INPUT("20000000000\r\n"), "chunk size too large"},
        {INPUT("ffffffffffffffffffffffff\r\n"), "chunk size too large"},
        {INPUT("5;a\x01\r\nhello\r\n"), "invalid chunk extension"},
        {INPUT("5;a\x7f\r\nhello\r\n"), "invalid chunk extension"},
        {INPUT("0\r\n X: y\r\n\r\n"), "invalid chunked trailer field"},
        {INPUT("0\r\nX: y\r\n z\r\n\r\n"), "invalid chunked trailer field"},
        {INPUT("0\r\nX y\r\n\r\n"), "invalid chunked trailer field"},
        {INPUT("0\r\nNoColon\r\n\r\n"), "invalid chunked trailer field"},
        {INPUT("0\r\n: y\r\n\r\n"), "invalid chunked trailer field"},
        {INPUT("0\r\nX: a\0b\r\n\r\n"), "invalid chunked trailer field"},
        {INPUT("0\r\nX: y\rz"), "missing lf after chunked trailer field"},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        static decode_outcome_t outcome;
        const test_input_t *input = &cases[index].input;
        chunked_decode_all_ways((const uint8_t *)input->text, input->length, &outcome);
        if (outcome.result != HTTP_CHUNKED_ERROR ||
            !message_is(outcome.error_message, cases[index].message)) {
            fprintf(stderr, "  chunked error case %zu: %d (%s)\n", index, outcome.result,
                    outcome.error_message == NULL ? "-" : outcome.error_message);
        }
        CHECK_EQ_INT(outcome.result, HTTP_CHUNKED_ERROR);
        CHECK(message_is(outcome.error_message, cases[index].message));
    }
}

static void test_chunked_bounds(void) {
    static uint8_t buffer[HTTP_CHUNK_TRAILER_BYTES_MAX + 64];
    static decode_outcome_t outcome;

    /* The largest chunk size is accepted (we then wait for its payload). */
    const char *largest = "10000000000\r\nabc";
    chunked_decode_in_pieces((const uint8_t *)largest, strlen(largest), 0, &outcome);
    CHECK_EQ_INT(outcome.result, HTTP_CHUNKED_AGAIN);
    CHECK_EQ_INT(outcome.payload_length, 3);

    /* A size line of exactly the bound is accepted, one more byte is not. */
    size_t line = HTTP_CHUNK_LINE_BYTES_MAX;
    memset(buffer, '0', line - 1);
    buffer[line - 1] = '1';
    memcpy(buffer + line, "\r\nx\r\n0\r\n\r\n", 10);
    chunked_decode_in_pieces(buffer, line + 10, 0, &outcome);
    CHECK_EQ_INT(outcome.result, HTTP_CHUNKED_DONE);
    CHECK_EQ_INT(outcome.payload_length, 1);
    memset(buffer, '0', line);
    buffer[line] = '1';
    memcpy(buffer + line + 1, "\r\nx\r\n0\r\n\r\n", 10);
    chunked_decode_in_pieces(buffer, line + 11, 0, &outcome);
    CHECK_EQ_INT(outcome.result, HTTP_CHUNKED_ERROR);
    CHECK(message_is(outcome.error_message, "chunk size line too long"));

    /* Extensions are bounded the same way. */
    memcpy(buffer, "1;", 2);
    memset(buffer + 2, 'e', line);
    memcpy(buffer + 2 + line, "\r\nx\r\n0\r\n\r\n", 10);
    chunked_decode_in_pieces(buffer, line + 12, 1, &outcome);
    CHECK_EQ_INT(outcome.result, HTTP_CHUNKED_ERROR);
    CHECK(message_is(outcome.error_message, "chunk size line too long"));

    /* The trailer section, final CRLF included, is bounded. */
    size_t trailer = HTTP_CHUNK_TRAILER_BYTES_MAX;
    memcpy(buffer, "0\r\nX:", 5);
    memset(buffer + 5, 'v', trailer - 6);
    memcpy(buffer + 3 + trailer - 4, "\r\n\r\n", 4);
    chunked_decode_in_pieces(buffer, 3 + trailer, 0, &outcome);
    CHECK_EQ_INT(outcome.result, HTTP_CHUNKED_DONE);
    CHECK_EQ_INT(outcome.consumed_total, 3 + trailer);
    memset(buffer + 5, 'v', trailer - 5);
    memcpy(buffer + 3 + trailer - 3, "\r\n\r\n", 4);
    chunked_decode_in_pieces(buffer, 4 + trailer, 0, &outcome);
    CHECK_EQ_INT(outcome.result, HTTP_CHUNKED_ERROR);
    CHECK(message_is(outcome.error_message, "chunked trailer section too long"));
}

/* Payload comes back as spans of the caller's input, not copies, and
 * payload_bytes_total grows as it is reported. */
static void test_chunked_zero_copy_and_totals(void) {
    const uint8_t *input = (const uint8_t *)"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n";
    size_t length = strlen((const char *)input);
    http_chunked_decoder_t decoder;
    http_chunked_decoder_init(&decoder);
    size_t consumed, data_offset, data_length;

    CHECK_EQ_INT(http_chunked_decode(&decoder, input, length, &consumed, &data_offset,
                                     &data_length),
                 HTTP_CHUNKED_DATA);
    CHECK_EQ_INT(data_offset, 3);
    CHECK_EQ_INT(data_length, 3);
    CHECK_EQ_INT(consumed, 6);
    CHECK_EQ_INT(decoder.payload_bytes_total, 3);
    size_t position = consumed;

    CHECK_EQ_INT(http_chunked_decode(&decoder, input + position, length - position, &consumed,
                                     &data_offset, &data_length),
                 HTTP_CHUNKED_DATA);
    CHECK(input + position + data_offset == input + 11);
    CHECK_EQ_INT(data_length, 4);
    CHECK_EQ_INT(decoder.payload_bytes_total, 7);
    position += consumed;

    CHECK_EQ_INT(http_chunked_decode(&decoder, input + position, length - position, &consumed,
                                     &data_offset, &data_length),
                 HTTP_CHUNKED_DONE);
    CHECK_EQ_INT(position + consumed, length);

    /* Payload split over reads comes back piece by piece. */
    http_chunked_decoder_init(&decoder);
    CHECK_EQ_INT(http_chunked_decode(&decoder, (const uint8_t *)"a\r\n01", 5, &consumed,
                                     &data_offset, &data_length),
                 HTTP_CHUNKED_DATA);
    CHECK_EQ_INT(data_offset, 3);
    CHECK_EQ_INT(data_length, 2);
    CHECK_EQ_INT(decoder.chunk_remaining, 8);
    CHECK_EQ_INT(http_chunked_decode(&decoder, (const uint8_t *)"23456789\r", 9, &consumed,
                                     &data_offset, &data_length),
                 HTTP_CHUNKED_DATA);
    CHECK_EQ_INT(data_offset, 0);
    CHECK_EQ_INT(data_length, 8);
    CHECK_EQ_INT(consumed, 8);
    CHECK_EQ_INT(http_chunked_decode(&decoder, (const uint8_t *)"\r", 1, &consumed, &data_offset,
                                     &data_length),
                 HTTP_CHUNKED_AGAIN);
    CHECK_EQ_INT(consumed, 1);
    CHECK_EQ_INT(http_chunked_decode(&decoder, NULL, 0, &consumed, &data_offset, &data_length),
                 HTTP_CHUNKED_AGAIN);
    CHECK_EQ_INT(consumed, 0);
    CHECK_EQ_INT(decoder.payload_bytes_total, 10);
}

static const char *const chunked_seeds[] = {
    "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "1a;x=y\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\nNEXT",
    "000A\r\n0123456789\r\n0 ;e\r\n\r\n",
};

static void test_chunked_random_mutations(void) {
    test_random.state = 0x5eed0003u;
    static uint8_t buffer[256];
    static decode_outcome_t outcome;
    int done = 0;
    int refused = 0;
    for (int iteration = 0; iteration < 4000; iteration++) {
        const char *seed = chunked_seeds[unit_random_below(&test_random, RW_ARRAY_LENGTH(chunked_seeds))];
        size_t length = strlen(seed);
        memcpy(buffer, seed, length);
        length = mutate(buffer, length, sizeof(buffer));
        int failures_before = unit_failures_in_test;
        chunked_decode_all_ways(buffer, length, &outcome);
        if (outcome.result == HTTP_CHUNKED_DONE) {
            done++;
            CHECK(outcome.consumed_total >= 5 && outcome.consumed_total <= length);
            CHECK(memcmp(buffer + outcome.consumed_total - 2, "\r\n", 2) == 0);
            CHECK(outcome.payload_length < outcome.consumed_total);
        } else if (outcome.result == HTTP_CHUNKED_ERROR) {
            refused++;
            CHECK(outcome.error_message != NULL && !has_upper_case(outcome.error_message));
        } else {
            CHECK_EQ_INT(outcome.result, HTTP_CHUNKED_AGAIN);
            CHECK_EQ_INT(outcome.consumed_total, length);
        }
        if (unit_failures_in_test != failures_before) {
            fprintf(stderr, "  chunked mutation iteration %d: \"%.*s\"\n", iteration, (int)length,
                    (const char *)buffer);
            break;
        }
    }
    CHECK(done > 200);
    CHECK(refused > 1000);
}

/* A full message: request head, then its chunked body, then the next request,
 * all from one buffer as the relay will see them. */
static void test_request_then_chunked_body(void) {
    const char *text = "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n"
                       "7\r\n{\"a\":1}\r\n0\r\n\r\n"
                       "GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t length = strlen(text);
    const uint8_t *bytes = (const uint8_t *)text;
    http_request_t *request = &request_under_test;
    CHECK_EQ_INT(request_parse_all_ways(bytes, length, HEAD_MAX, &parser_under_test, request),
                 HTTP_PARSE_DONE);
    CHECK(request->chunked);
    size_t body_start = request->head_length;
    static decode_outcome_t outcome;
    chunked_decode_all_ways(bytes + body_start, length - body_start, &outcome);
    CHECK_EQ_INT(outcome.result, HTTP_CHUNKED_DONE);
    CHECK_EQ_BYTES(outcome.payload, outcome.payload_length, "{\"a\":1}");
    size_t next = body_start + outcome.consumed_total;
    CHECK_EQ_INT(request_parse_all_ways(bytes + next, length - next, HEAD_MAX, &parser_under_test,
                                        request),
                 HTTP_PARSE_DONE);
    CHECK_SPAN(text + next, request->path, "/v1/models");
    CHECK_EQ_INT(next + request->head_length, length);
}

int main(void) {
    RUN_TEST(test_span_helpers);
    RUN_TEST(test_request_simple_get);
    RUN_TEST(test_request_post_fields);
    RUN_TEST(test_request_methods_and_targets);
    RUN_TEST(test_request_connection_and_versions);
    RUN_TEST(test_request_chunked_and_lengths);
    RUN_TEST(test_request_leading_empty_lines);
    RUN_TEST(test_request_pipelined);
    RUN_TEST(test_request_errors);
    RUN_TEST(test_request_error_messages);
    RUN_TEST(test_request_head_too_large);
    RUN_TEST(test_request_too_many_fields);
    RUN_TEST(test_request_resumes_without_rescanning);
    RUN_TEST(test_request_random_mutations);
    RUN_TEST(test_response_content_length);
    RUN_TEST(test_response_variants);
    RUN_TEST(test_response_interim_then_final);
    RUN_TEST(test_response_errors);
    RUN_TEST(test_response_limits);
    RUN_TEST(test_response_random_mutations);
    RUN_TEST(test_chunked_valid_bodies);
    RUN_TEST(test_chunked_errors);
    RUN_TEST(test_chunked_bounds);
    RUN_TEST(test_chunked_zero_copy_and_totals);
    RUN_TEST(test_chunked_random_mutations);
    RUN_TEST(test_request_then_chunked_body);
    return UNIT_REPORT();
}
