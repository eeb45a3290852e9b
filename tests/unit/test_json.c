/* Tests for src/json/json.c: the strict validator on a table of RFC 8259
 * edge cases, the chat-request scanner's spans and semantic checks, the
 * string decoder, the top-level lookup, and a seeded mutation loop. */
#include "ringway/json.h"
#include "unit.h"

#include <stdlib.h>

static const uint8_t *bytes_of(const char *text) {
    return (const uint8_t *)text;
}

static int validate(const char *text, size_t length, json_error_t *error) {
    return json_validate(bytes_of(text), length, error);
}

static int scan(const char *text, json_chat_request_t *request, json_error_t *error) {
    return json_scan_chat_request(bytes_of(text), strlen(text), request, error);
}

/* Checks the bytes a span covers. */
#define CHECK_SPAN(text, span, expected) \
    CHECK_EQ_BYTES((text) + (span).offset, (span).length, expected)

typedef struct json_case {
    const char *text;
    size_t length; /* 0: strlen(text) */
} json_case_t;

static size_t case_length(const json_case_t *entry) {
    return entry->length != 0 ? entry->length : strlen(entry->text);
}

static const json_case_t valid_documents[] = {
    {"{}", 0},
    {"[]", 0},
    {" \t\r\n{ \t\r\n} \t\r\n", 0},
    {"0", 0},
    {"-0", 0},
    {"-0.0e-0", 0},
    {"123", 0},
    {"1.5", 0},
    {"1e10", 0},
    {"1E+2", 0},
    {"1e-2", 0},
    {"-12.75E3", 0},
    {"true", 0},
    {"false", 0},
    {"null", 0},
    {"\"\"", 0},
    {"\"plain\"", 0},
    {"\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"", 0},
    {"\"\\u0000\\u001f\\u00e9\\uFFFF\"", 0},
    {"\"\\ud83d\\ude00\"", 0},
    {"\"\\uDBFF\\uDFFF\"", 0},
    {"\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf \xed\x9f\xbf \xee\x80\x80\"", 0},
    {"\"\x7f\"", 0},
    {"[1,2,[3,[4,{}]],{\"a\":null}]", 0},
    {"{\"a\":1,\"a\":2}", 0},
    {"{\"\":\"\"}", 0},
    {"{\"a\" : [ true , false , null ] , \"b\" : { \"c\" : \"d\" } }", 0},
    {"[\"a\",\"\\\\\",\"\\\"\"]", 0},
    {"123456789012345678901234567890", 0},
};

static const json_case_t invalid_documents[] = {
    {"", 0},
    {" \n\t", 0},
    {"{", 0},
    {"}", 0},
    {"[", 0},
    {"]", 0},
    {"[1,]", 0},
    {"[,1]", 0},
    {"[1 2]", 0},
    {"{\"a\":1,}", 0},
    {"{,}", 0},
    {"{\"a\"}", 0},
    {"{\"a\":}", 0},
    {"{\"a\"::1}", 0},
    {"{\"a\":1 \"b\":2}", 0},
    {"{a:1}", 0},
    {"{'a':1}", 0},
    {"{1:1}", 0},
    {"[1]]", 0},
    {"[1}", 0},
    {"{\"a\":1]", 0},
    {"'a'", 0},
    {"01", 0},
    {"-01", 0},
    {"00", 0},
    {"-", 0},
    {"+1", 0},
    {"1.", 0},
    {".5", 0},
    {"1.e5", 0},
    {"1e", 0},
    {"1e+", 0},
    {"1ee2", 0},
    {"0x10", 0},
    {"NaN", 0},
    {"Infinity", 0},
    {"-Infinity", 0},
    {"tru", 0},
    {"nul", 0},
    {"True", 0},
    {"truex", 0},
    {"nulll", 0},
    {"\"a", 0},
    {"\"\\\"", 0},
    {"\"\\x\"", 0},
    {"\"\\U0041\"", 0},
    {"\"\\u12\"", 0},
    {"\"\\u12G4\"", 0},
    {"\"\\ud800\"", 0},
    {"\"\\udc00\"", 0},
    {"\"\\ud800\\u0041\"", 0},
    {"\"\\ud800\\ud800\"", 0},
    {"\"\\ude00\\ud83d\"", 0},
    {"\"\\ud800x\"", 0},
    {"\"\x01\"", 0},
    {"\"tab\there\"", 0},
    {"\"new\nline\"", 0},
    {"\"\xc0\x80\"", 0},             /* overlong NUL */
    {"\"\xc1\xbf\"", 0},             /* overlong */
    {"\"\xe0\x80\xaf\"", 0},         /* overlong '/' */
    {"\"\xed\xa0\x80\"", 0},         /* an encoded surrogate */
    {"\"\xf4\x90\x80\x80\"", 0},     /* above U+10FFFF */
    {"\"\xf5\x80\x80\x80\"", 0},
    {"\"\xff\"", 0},
    {"\"\x80\"", 0},                 /* a lone continuation byte */
    {"\"\xe2\x82\"", 0},             /* truncated */
    {"\"\xe2\x82", 0},
    {"\"\xc3\x28\"", 0},
    {"\xef\xbb\xbf{}", 0},           /* a byte order mark */
    {"{} x", 0},
    {"[1] [2]", 0},
    {"1 2", 0},
    {"{}{}", 0},
    {"{}\0", 3},
    {"\0{}", 3},
    {"{\"a\":1}\f", 0},              /* form feed is not JSON whitespace */
    {"\xc2\xa0{}", 0},               /* nor is NO-BREAK SPACE */
    {"[01]", 0},
    {"{\"a\":-}", 0},
    {"[\"a\" \"b\"]", 0},
    {"/* comment */ {}", 0},
};

static void test_valid_documents(void) {
    for (size_t index = 0; index < RW_ARRAY_LENGTH(valid_documents); index++) {
        const json_case_t *entry = &valid_documents[index];
        json_error_t error = {0};
        int status = validate(entry->text, case_length(entry), &error);
        if (status != 0) {
            fprintf(stderr, "  valid document %zu refused: %s at %u\n", index,
                    error.message ? error.message : "(null)", error.offset);
        }
        CHECK_EQ_INT(status, 0);
    }
}

static void test_invalid_documents(void) {
    for (size_t index = 0; index < RW_ARRAY_LENGTH(invalid_documents); index++) {
        const json_case_t *entry = &invalid_documents[index];
        size_t length = case_length(entry);
        json_error_t error = {0};
        int status = validate(entry->text, length, &error);
        if (status != -1) {
            fprintf(stderr, "  invalid document %zu accepted\n", index);
        }
        CHECK_EQ_INT(status, -1);
        CHECK(error.message != NULL);
        CHECK(error.param == NULL);
        CHECK(error.offset <= length);
        /* The request scanner refuses the same documents, for syntax. */
        json_chat_request_t request;
        json_error_t scan_error = {0};
        CHECK_EQ_INT(json_scan_chat_request(bytes_of(entry->text), length, &request, &scan_error),
                     -1);
        CHECK(scan_error.param == NULL);
        CHECK(scan_error.message != NULL);
    }
    CHECK_EQ_INT(json_validate(bytes_of("1"), 1, NULL), 0);
    CHECK_EQ_INT(json_validate(bytes_of("x"), 1, NULL), -1);
}

static void test_error_offsets(void) {
    json_error_t error = {0};
    CHECK_EQ_INT(validate("[1,2,x]", 7, &error), -1);
    CHECK_EQ_INT(error.offset, 5);
    CHECK_EQ_INT(validate("{\"a\":1} x", 9, &error), -1);
    CHECK_EQ_INT(error.offset, 8);
    CHECK_EQ_INT(validate("\"ab\x01\"", 5, &error), -1);
    CHECK_EQ_INT(error.offset, 3);
    CHECK(strstr(error.message, "control character") != NULL);
    CHECK_EQ_INT(validate("[\"\\ud800 \"]", 11, &error), -1);
    CHECK_EQ_INT(error.offset, 2);
    CHECK_EQ_INT(validate("[\"unterminated]", 15, &error), -1);
    CHECK_EQ_INT(error.offset, 1);
    CHECK(strstr(error.message, "We could not parse the JSON body") == error.message);
}

/* Every strict prefix of an object document is incomplete, hence invalid. */
static void test_prefixes_are_invalid(void) {
    static const char document[] =
        "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9\"}],"
        "\"n\":1,\"t\":[true,false,null,-1.5e3]}";
    size_t length = strlen(document);
    CHECK_EQ_INT(validate(document, length, NULL), 0);
    for (size_t prefix = 0; prefix < length; prefix++) {
        json_error_t error = {0};
        CHECK_EQ_INT(validate(document, prefix, &error), -1);
        CHECK(error.offset <= prefix);
    }
}

static void nested_document(char *out, size_t depth, const char *open, const char *close) {
    size_t at = 0;
    for (size_t index = 0; index < depth; index++) {
        memcpy(out + at, open, strlen(open));
        at += strlen(open);
    }
    for (size_t index = 0; index < depth; index++) {
        memcpy(out + at, close, strlen(close));
        at += strlen(close);
    }
    out[at] = '\0';
}

static void test_depth_limit(void) {
    static char document[16 * 1024];
    nested_document(document, JSON_DEPTH_MAX, "[", "]");
    CHECK_EQ_INT(validate(document, strlen(document), NULL), 0);
    nested_document(document, JSON_DEPTH_MAX + 1, "[", "]");
    json_error_t error = {0};
    CHECK_EQ_INT(validate(document, strlen(document), &error), -1);
    CHECK(strstr(error.message, "128") != NULL);
    CHECK_EQ_INT(error.offset, JSON_DEPTH_MAX);
    /* objects: {"a":{"a":...{}...}} */
    nested_document(document, JSON_DEPTH_MAX - 1, "{\"a\":", "}");
    char *middle = document + (JSON_DEPTH_MAX - 1) * strlen("{\"a\":");
    memmove(middle + 2, middle, strlen(middle) + 1);
    memcpy(middle, "{}", 2);
    CHECK_EQ_INT(validate(document, strlen(document), NULL), 0);
    memmove(middle + 6, middle + 1, strlen(middle + 1) + 1);
    memcpy(middle + 1, "\"a\":{}", 6);
    CHECK_EQ_INT(validate(document, strlen(document), &error), -1);
    CHECK(strstr(error.message, "128") != NULL);
    /* a hostile depth far beyond the bound is refused without recursion */
    static char deep[200 * 1024];
    memset(deep, '[', sizeof deep);
    CHECK_EQ_INT(json_validate((const uint8_t *)deep, sizeof deep, NULL), -1);

    /* The chat scanner counts the top-level object as one level. */
    char request[4096];
    size_t at = 0;
    at += (size_t)snprintf(request + at, sizeof request - at,
                           "{\"model\":\"m\",\"messages\":[{\"x\":");
    for (int level = 0; level < JSON_DEPTH_MAX - 3; level++) {
        request[at++] = '[';
    }
    for (int level = 0; level < JSON_DEPTH_MAX - 3; level++) {
        request[at++] = ']';
    }
    at += (size_t)snprintf(request + at, sizeof request - at, "}]}");
    json_chat_request_t parsed;
    CHECK_EQ_INT(json_scan_chat_request(bytes_of(request), at, &parsed, &error), 0);
    at = 0;
    at += (size_t)snprintf(request + at, sizeof request - at,
                           "{\"model\":\"m\",\"messages\":[{\"x\":");
    for (int level = 0; level < JSON_DEPTH_MAX - 2; level++) {
        request[at++] = '[';
    }
    for (int level = 0; level < JSON_DEPTH_MAX - 2; level++) {
        request[at++] = ']';
    }
    at += (size_t)snprintf(request + at, sizeof request - at, "}]}");
    CHECK_EQ_INT(json_scan_chat_request(bytes_of(request), at, &parsed, &error), -1);
    CHECK(strstr(error.message, "128") != NULL);
}

static void test_chat_request_spans(void) {
    static const char body[] =
        "{ \"model\" : \"gpt-4o-mini\", \"messages\": [{\"role\":\"system\",\"content\":\"x\"},"
        "{\"role\":\"user\",\"content\":\"model: \\\"y\\\"\",\"model\":\"nested\"}],"
        "\"stream\":true,\"stream_options\":{\"foo\":[1],\"include_usage\":false},"
        "\"max_tokens\":100,\"max_completion_tokens\":0,\"n\":2,\"mock\":\"usage-only\","
        "\"temperature\":0.5}";
    json_chat_request_t request;
    json_error_t error = {0};
    CHECK_EQ_INT(scan(body, &request, &error), 0);
    CHECK(request.is_object);
    CHECK(!request.is_empty_object);
    CHECK_EQ_INT(request.members_offset, 1);
    CHECK_EQ_INT(request.close_offset, strlen(body) - 1);

    CHECK(request.model.present);
    CHECK_EQ_INT(request.model.type, JSON_TYPE_STRING);
    CHECK_SPAN(body, request.model.member, "\"model\" : \"gpt-4o-mini\"");
    CHECK_SPAN(body, request.model.value, "\"gpt-4o-mini\"");

    CHECK(request.messages.present);
    CHECK_EQ_INT(request.messages.type, JSON_TYPE_ARRAY);
    CHECK_EQ_INT(request.messages_count, 2);
    CHECK(body[request.messages.value.offset] == '[');
    CHECK(body[request.messages.value.offset + request.messages.value.length - 1] == ']');

    CHECK(request.stream.present);
    CHECK(request.stream_value);
    CHECK_SPAN(body, request.stream.member, "\"stream\":true");

    CHECK(request.stream_options.present);
    CHECK_EQ_INT(request.stream_options.type, JSON_TYPE_OBJECT);
    CHECK_SPAN(body, request.stream_options.value,
                   "{\"foo\":[1],\"include_usage\":false}");
    CHECK(request.include_usage.present);
    CHECK(!request.include_usage_value);
    CHECK_SPAN(body, request.include_usage.value, "false");
    CHECK_SPAN(body, request.include_usage.member, "\"include_usage\":false");

    CHECK(request.max_tokens.present);
    CHECK_EQ_INT(request.max_tokens_value, 100);
    CHECK(request.max_completion_tokens.present);
    CHECK_EQ_INT(request.max_completion_tokens_value, 0);
    CHECK(request.n.present);
    CHECK_EQ_INT(request.n_value, 2);
    CHECK(request.mock.present);
    CHECK_EQ_INT(request.mock.type, JSON_TYPE_STRING);
    CHECK_SPAN(body, request.mock.value, "\"usage-only\"");
}

/* Spans end at the last byte of the value, whatever whitespace follows. */
static void test_chat_request_spans_exclude_whitespace(void) {
    static const char body[] =
        "{ \"messages\" : [ {\"x\":1} ] ,\n  \"model\" :\t\"m\" , \"stream\" : false \r\n,"
        "\"stream_options\" : { \"include_usage\" : true } , \"n\" : 1e2 , "
        "\"mock\" : { } , \"max_tokens\" : 5\t}";
    json_chat_request_t request;
    json_error_t error = {0};
    CHECK_EQ_INT(scan(body, &request, &error), 0);
    CHECK_SPAN(body, request.messages.member, "\"messages\" : [ {\"x\":1} ]");
    CHECK_SPAN(body, request.messages.value, "[ {\"x\":1} ]");
    CHECK_SPAN(body, request.model.member, "\"model\" :\t\"m\"");
    CHECK_SPAN(body, request.model.value, "\"m\"");
    CHECK_SPAN(body, request.stream.member, "\"stream\" : false");
    CHECK(request.stream.present && !request.stream_value);
    CHECK_SPAN(body, request.stream_options.value, "{ \"include_usage\" : true }");
    CHECK_SPAN(body, request.include_usage.member, "\"include_usage\" : true");
    CHECK_SPAN(body, request.include_usage.value, "true");
    CHECK_SPAN(body, request.n.value, "1e2");
    CHECK_EQ_INT(request.n_value, 100);
    CHECK_SPAN(body, request.mock.value, "{ }");
    CHECK_EQ_INT(request.mock.type, JSON_TYPE_OBJECT);
    CHECK_SPAN(body, request.max_tokens.member, "\"max_tokens\" : 5");
    CHECK_EQ_INT(request.max_tokens_value, 5);

    json_span_t value;
    json_type_t type;
    CHECK_EQ_INT(json_object_find(bytes_of(body), strlen(body), "model", &value, &type), 0);
    CHECK_SPAN(body, value, "\"m\"");
    CHECK_EQ_INT(json_object_find(bytes_of(body), strlen(body), "max_tokens", &value, &type), 0);
    CHECK_SPAN(body, value, "5");
}

static void test_chat_request_minimal(void) {
    static const char body[] = "{\"model\":\"m\",\"messages\":[1]}";
    json_chat_request_t request;
    json_error_t error = {0};
    CHECK_EQ_INT(scan(body, &request, &error), 0);
    CHECK(!request.stream.present);
    CHECK(!request.stream_value);
    CHECK(!request.stream_options.present);
    CHECK(!request.include_usage.present);
    CHECK(!request.max_tokens.present);
    CHECK(!request.n.present);
    CHECK(!request.mock.present);
    CHECK_EQ_INT(request.stream_options.type, JSON_TYPE_NONE);
    CHECK_EQ_INT(request.messages_count, 1);

    /* nulls are "not given" */
    static const char nulls[] =
        "{\"model\":\"m\",\"messages\":[{}],\"stream\":null,\"stream_options\":null,"
        "\"max_tokens\":null,\"max_completion_tokens\":null,\"n\":null}";
    CHECK_EQ_INT(scan(nulls, &request, &error), 0);
    CHECK(request.stream.present);
    CHECK_EQ_INT(request.stream.type, JSON_TYPE_NULL);
    CHECK(!request.stream_value);
    CHECK_EQ_INT(request.stream_options.type, JSON_TYPE_NULL);
    CHECK_EQ_INT(request.max_tokens.type, JSON_TYPE_NULL);
    CHECK_EQ_INT(request.max_tokens_value, 0);

    static const char options_null_usage[] =
        "{\"model\":\"m\",\"messages\":[{}],\"stream\":false,"
        "\"stream_options\":{\"include_usage\":null}}";
    CHECK_EQ_INT(scan(options_null_usage, &request, &error), 0);
    CHECK(request.include_usage.present);
    CHECK_EQ_INT(request.include_usage.type, JSON_TYPE_NULL);
    CHECK(!request.include_usage_value);
    CHECK(request.stream.present && !request.stream_value);

    static const char include_true[] =
        "{\"model\":\"m\",\"messages\":[{}],\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true}}";
    CHECK_EQ_INT(scan(include_true, &request, &error), 0);
    CHECK(request.include_usage_value);
    CHECK_SPAN(include_true, request.include_usage.value, "true");

    static const char escaped_model[] = "{\"model\":\"gpt\\u002d4\",\"messages\":[{}]}";
    CHECK_EQ_INT(scan(escaped_model, &request, &error), 0);
    char model[32];
    size_t model_length = 0;
    CHECK_EQ_INT(json_string_decode(bytes_of(escaped_model) + request.model.value.offset,
                                    request.model.value.length, model, sizeof model,
                                    &model_length),
                 0);
    CHECK_EQ_BYTES(model, model_length, "gpt-4");

    static const char large_count[] =
        "{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":2147483647}";
    CHECK_EQ_INT(scan(large_count, &request, &error), 0);
    CHECK_EQ_INT(request.max_tokens_value, 2147483647);
}

/* Counts spelled any way whose value is an integer, as JSON Schema reads them. */
static void test_chat_request_count_spellings(void) {
    static const struct {
        const char *number;
        uint32_t value;
    } cases[] = {
        {"0", 0},
        {"-0", 0},
        {"-0.0e7", 0},
        {"0e99999999999999999999", 0},
        {"0.000e-5", 0},
        {"7", 7},
        {"100", 100},
        {"1e2", 100},
        {"1E+2", 100},
        {"100.0", 100},
        {"100.000e0", 100},
        {"1.5e1", 15},
        {"1500e-2", 15},
        {"0.15e2", 15},
        {"2147483647", 2147483647},
        {"2147483647.0", 2147483647},
        {"2.147483647e9", 2147483647},
        {"21474836470e-1", 2147483647},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        char body[160];
        snprintf(body, sizeof body,
                 "{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":%s,\"n\":%s,"
                 "\"max_completion_tokens\":%s}",
                 cases[index].number, cases[index].number, cases[index].number);
        json_chat_request_t request;
        json_error_t error = {0};
        int status = scan(body, &request, &error);
        if (status != 0) {
            fprintf(stderr, "  count %s refused: %s\n", cases[index].number, error.message);
        }
        CHECK_EQ_INT(status, 0);
        CHECK_EQ_INT(request.max_tokens_value, cases[index].value);
        CHECK_EQ_INT(request.n_value, cases[index].value);
        CHECK_EQ_INT(request.max_completion_tokens_value, cases[index].value);
        CHECK_EQ_INT(request.n.type, JSON_TYPE_NUMBER);
    }
}

static void test_chat_request_insert_offset(void) {
    json_chat_request_t request;
    json_error_t error = {0};
    static const char empty[] = "  { \n }  ";
    CHECK_EQ_INT(scan(empty, &request, &error), -1);
    CHECK_EQ_BYTES(error.param, strlen(error.param), "model");
    CHECK(request.is_object);
    CHECK(request.is_empty_object);
    CHECK_EQ_INT(request.members_offset, 3);
    CHECK_EQ_INT(request.close_offset, 6);

    static const char body[] = "\n{\"messages\":[{}],\"model\":\"m\"}";
    CHECK_EQ_INT(scan(body, &request, &error), 0);
    CHECK(!request.is_empty_object);
    CHECK_EQ_INT(request.members_offset, 2);
    CHECK_EQ_INT(request.close_offset, strlen(body) - 1);
}

typedef struct semantic_case {
    const char *body;
    const char *param; /* NULL: a syntax error or a non-object body */
    const char *message_part;
} semantic_case_t;

static const semantic_case_t semantic_cases[] = {
    {"[]", NULL, "must be a JSON object"},
    {"\"text\"", NULL, "must be a JSON object"},
    {"null", NULL, "must be a JSON object"},
    {"{}", "model", "must provide a model"},
    {"{\"messages\":[{}]}", "model", "must provide a model"},
    {"{\"model\":\"\",\"messages\":[{}]}", "model", "non-empty string"},
    {"{\"model\":5,\"messages\":[{}]}", "model", "non-empty string"},
    {"{\"model\":null,\"messages\":[{}]}", "model", "non-empty string"},
    {"{\"model\":[\"m\"],\"messages\":[{}]}", "model", "non-empty string"},
    {"{\"model\":\"m\"}", "messages", "must provide a messages"},
    {"{\"model\":\"m\",\"messages\":{}}", "messages", "must be an array"},
    {"{\"model\":\"m\",\"messages\":\"hi\"}", "messages", "must be an array"},
    {"{\"model\":\"m\",\"messages\":null}", "messages", "must be an array"},
    {"{\"model\":\"m\",\"messages\":[]}", "messages", "at least one"},
    {"{\"model\":\"m\",\"messages\":[ ]}", "messages", "at least one"},
    {"{\"model\":\"m\",\"messages\":[{}],\"stream\":\"yes\"}", "stream", "boolean"},
    {"{\"model\":\"m\",\"messages\":[{}],\"stream\":1}", "stream", "boolean"},
    {"{\"model\":\"m\",\"messages\":[{}],\"stream\":{}}", "stream", "boolean"},
    {"{\"model\":\"m\",\"messages\":[{}],\"stream_options\":true}", "stream_options", "object"},
    {"{\"model\":\"m\",\"messages\":[{}],\"stream_options\":[]}", "stream_options", "object"},
    {"{\"model\":\"m\",\"messages\":[{}],\"stream_options\":{\"include_usage\":1}}",
     "stream_options", "include_usage"},
    {"{\"model\":\"m\",\"messages\":[{}],\"stream_options\":{\"include_usage\":\"true\"}}",
     "stream_options", "include_usage"},
    {"{\"model\":\"m\",\"messages\":[{}],\"stream_options\":"
     "{\"include_usage\":true,\"include_usage\":false}}",
     "stream_options", "more than once"},
    {"{\"model\":\"m\",\"messages\":[{}],\"stream_options\":"
     "{\"include_usage\":true,\"include\\u005fusage\":false}}",
     "stream_options", "more than once"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":-1}", "max_tokens", "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":1.5}", "max_tokens", "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":1e-2}", "max_tokens",
     "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":0.5}", "max_tokens",
     "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":1.05e1}", "max_tokens",
     "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":-1e0}", "max_tokens",
     "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":-0.5}", "max_tokens",
     "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":2.147483648e9}", "max_tokens",
     "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":1e10}", "max_tokens",
     "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":21474836480e-1}", "max_tokens",
     "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":1e99999999999999999999}", "max_tokens",
     "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":\"10\"}", "max_tokens",
     "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":true}", "max_tokens",
     "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":2147483648}", "max_tokens",
     "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_tokens\":99999999999999999999999}", "max_tokens",
     "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"max_completion_tokens\":-5}", "max_completion_tokens",
     "non-negative integer"},
    {"{\"model\":\"m\",\"messages\":[{}],\"n\":[2]}", "n", "non-negative integer"},
    {"{\"model\":\"a\",\"messages\":[{}],\"model\":\"b\"}", "model", "more than once"},
    {"{\"model\":\"a\",\"messages\":[{}],\"mod\\u0065l\":\"b\"}", "model", "more than once"},
    {"{\"model\":\"a\",\"messages\":[{}],\"\\u006d\\u006f\\u0064\\u0065\\u006c\":\"b\"}", "model",
     "more than once"},
    {"{\"model\":\"a\",\"messages\":[{}],\"messages\":[{}]}", "messages", "more than once"},
    {"{\"model\":\"a\",\"messages\":[{}],\"stream\":true,\"stream\":false}", "stream",
     "more than once"},
    {"{\"model\":\"a\",\"messages\":[{}],\"stream_options\":{},\"stream_options\":{}}",
     "stream_options", "more than once"},
    {"{\"model\":\"a\",\"messages\":[{}],\"max_tokens\":1,\"max_tokens\":2}", "max_tokens",
     "more than once"},
    {"{\"model\":\"a\",\"messages\":[{}],\"n\":1,\"n\":1}", "n", "more than once"},
    {"{\"model\":\"a\",\"messages\":[{}],\"mock\":\"x\",\"mock\":\"y\"}", "mock", "more than once"},
    /* syntax wins over semantics */
    {"{\"model\":1,\"messages\":[],}", NULL, "We could not parse"},
    {"{\"model\":\"a\",\"model\":\"b\"", NULL, "We could not parse"},
};

static void test_chat_request_semantic_errors(void) {
    for (size_t index = 0; index < RW_ARRAY_LENGTH(semantic_cases); index++) {
        const semantic_case_t *entry = &semantic_cases[index];
        json_chat_request_t request;
        json_error_t error = {0};
        int status = scan(entry->body, &request, &error);
        CHECK_EQ_INT(status, -1);
        if (status != -1) {
            fprintf(stderr, "  semantic case %zu accepted\n", index);
            continue;
        }
        bool param_ok = entry->param == NULL
                            ? error.param == NULL
                            : error.param != NULL && strcmp(error.param, entry->param) == 0;
        bool message_ok = error.message != NULL && strstr(error.message, entry->message_part);
        if (!param_ok || !message_ok) {
            fprintf(stderr, "  semantic case %zu: param %s, message %s\n", index,
                    error.param ? error.param : "(null)",
                    error.message ? error.message : "(null)");
        }
        CHECK(param_ok);
        CHECK(message_ok);
        CHECK(error.offset <= strlen(entry->body));
    }
}

static void test_chat_request_keys_not_confused(void) {
    json_chat_request_t request;
    json_error_t error = {0};
    /* Keys that only look like tracked ones, and tracked names nested deeper. */
    static const char body[] =
        "{\"model\":\"m\",\"messages\":[{\"model\":\"x\",\"stream\":\"no\"}],"
        "\"model \":1,\"Model\":2,\"model\\u0000\":3,\"modelx\":4,\"stream_optionsx\":5,"
        "\"metadata\":{\"stream\":\"weird\",\"max_tokens\":-1},"
        "\"stream_options\":{\"stream\":1,\"include_usage\":true,\"x\":{\"include_usage\":1}}}";
    CHECK_EQ_INT(scan(body, &request, &error), 0);
    CHECK_SPAN(body, request.model.value, "\"m\"");
    CHECK(!request.stream.present);
    CHECK(!request.max_tokens.present);
    CHECK(request.include_usage_value);
    CHECK_EQ_INT(request.messages_count, 1);
}

static void test_string_decode(void) {
    char out[64];
    size_t length = 0;
    CHECK_EQ_INT(json_string_decode(bytes_of("\"\""), 2, out, sizeof out, &length), 0);
    CHECK_EQ_INT(length, 0);
    CHECK_EQ_INT(out[0], '\0');

    static const char escapes[] = "\"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\"";
    CHECK_EQ_INT(json_string_decode(bytes_of(escapes), strlen(escapes), out, sizeof out, &length),
                 0);
    CHECK_EQ_BYTES(out, length, "a\"b\\c/d\be\ff\ng\rh\ti");
    CHECK_EQ_INT(out[length], '\0');

    static const char unicode[] = "\"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\xc3\xa9\"";
    CHECK_EQ_INT(json_string_decode(bytes_of(unicode), strlen(unicode), out, sizeof out, &length),
                 0);
    CHECK_EQ_BYTES(out, length, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xc3\xa9");

    CHECK_EQ_INT(json_string_decode(bytes_of("\"a\\u0000b\""), 10, out, sizeof out, &length), 0);
    CHECK_EQ_INT(length, 3);
    CHECK(memcmp(out, "a\0b", 3) == 0);

    /* capacity: the text and its NUL must fit */
    CHECK_EQ_INT(json_string_decode(bytes_of("\"abcd\""), 6, out, 5, &length), 0);
    CHECK_EQ_BYTES(out, length, "abcd");
    CHECK_EQ_INT(json_string_decode(bytes_of("\"abcd\""), 6, out, 4, &length), -1);
    CHECK_EQ_INT(json_string_decode(bytes_of("\"\""), 2, out, 0, &length), -1);
    CHECK_EQ_INT(json_string_decode(bytes_of("\"\\u20ac\""), 8, out, 3, &length), -1);
    CHECK_EQ_INT(json_string_decode(bytes_of("\"\\u20ac\""), 8, out, 4, &length), 0);
    CHECK_EQ_INT(length, 3);

    /* malformed */
    CHECK_EQ_INT(json_string_decode(bytes_of("abc"), 3, out, sizeof out, &length), -1);
    CHECK_EQ_INT(json_string_decode(bytes_of("\""), 1, out, sizeof out, &length), -1);
    CHECK_EQ_INT(json_string_decode(bytes_of(""), 0, out, sizeof out, &length), -1);
    CHECK_EQ_INT(json_string_decode(bytes_of("\"\\\""), 3, out, sizeof out, &length), -1);
    CHECK_EQ_INT(json_string_decode(bytes_of("\"\\ud800\""), 8, out, sizeof out, &length), -1);
    CHECK_EQ_INT(json_string_decode(bytes_of("\"\\udc00\""), 8, out, sizeof out, &length), -1);
    CHECK_EQ_INT(json_string_decode(bytes_of("\"\\u12\""), 6, out, sizeof out, &length), -1);
    CHECK_EQ_INT(json_string_decode(bytes_of("\"\\q\""), 4, out, sizeof out, &length), -1);
    CHECK_EQ_INT(json_string_decode(bytes_of("\"\\ud800\\u12\""), 12, out, sizeof out, &length),
                 -1);
}

static void test_object_find(void) {
    static const char body[] =
        " { \"email\" : \"a@example.com\", \"password\":\"p\\\"w\", \"n\":[1,{\"email\":2}],"
        "\"t\":true } ";
    json_span_t value = {0};
    json_type_t type = JSON_TYPE_NONE;
    size_t length = strlen(body);
    CHECK_EQ_INT(json_object_find(bytes_of(body), length, "email", &value, &type), 0);
    CHECK_EQ_INT(type, JSON_TYPE_STRING);
    CHECK_SPAN(body, value, "\"a@example.com\"");
    CHECK_EQ_INT(json_object_find(bytes_of(body), length, "password", &value, &type), 0);
    CHECK_SPAN(body, value, "\"p\\\"w\"");
    CHECK_EQ_INT(json_object_find(bytes_of(body), length, "n", &value, &type), 0);
    CHECK_EQ_INT(type, JSON_TYPE_ARRAY);
    CHECK_SPAN(body, value, "[1,{\"email\":2}]");
    CHECK_EQ_INT(json_object_find(bytes_of(body), length, "t", &value, &type), 0);
    CHECK_EQ_INT(type, JSON_TYPE_BOOLEAN);
    CHECK_EQ_INT(json_object_find(bytes_of(body), length, "missing", &value, &type), -1);
    CHECK_EQ_INT(json_object_find(bytes_of(body), length, "emai", &value, &type), -1);
    CHECK_EQ_INT(json_object_find(bytes_of(body), length, "", &value, &type), -1);

    static const char escaped[] = "{\"e\\u006dail\":\"x\"}";
    CHECK_EQ_INT(json_object_find(bytes_of(escaped), strlen(escaped), "email", &value, &type), 0);
    CHECK_SPAN(escaped, value, "\"x\"");

    static const char duplicated[] = "{\"email\":\"x\",\"email\":\"y\"}";
    CHECK_EQ_INT(
        json_object_find(bytes_of(duplicated), strlen(duplicated), "email", &value, &type), -2);
    static const char duplicated_escaped[] = "{\"email\":\"x\",\"\\u0065mail\":\"y\"}";
    CHECK_EQ_INT(json_object_find(bytes_of(duplicated_escaped), strlen(duplicated_escaped),
                                  "email", &value, &type),
                 -2);

    CHECK_EQ_INT(json_object_find(bytes_of("{}"), 2, "email", &value, &type), -1);
    CHECK_EQ_INT(json_object_find(bytes_of("[\"email\"]"), 9, "email", &value, &type), -1);
    CHECK_EQ_INT(json_object_find(bytes_of(""), 0, "email", &value, &type), -1);
    CHECK_EQ_INT(json_object_find(bytes_of("{\"email\""), 8, "email", &value, &type), -1);
    CHECK_EQ_INT(json_object_find(bytes_of("{\"email\":"), 9, "email", &value, &type), -1);
    CHECK_EQ_INT(json_object_find(bytes_of("{\"email\":1"), 10, "email", &value, &type), -1);
}

/* unit.h's generator, seeded, so failures replay. */
static unit_random_t test_random = {0x9E3779B97F4A7C15ull};

static void check_span_inside(json_span_t span, size_t length) {
    CHECK((size_t)span.offset + span.length <= length);
}

static void check_member_inside(const uint8_t *body, const json_member_t *member,
                                size_t length) {
    check_span_inside(member->member, length);
    check_span_inside(member->value, length);
    if (member->present) {
        CHECK(member->value.length > 0);
        uint8_t last = body[member->value.offset + member->value.length - 1];
        CHECK(last != ' ' && last != '\t' && last != '\r' && last != '\n');
        CHECK(body[member->member.offset] == '"');
        CHECK(member->value.offset >= member->member.offset);
        CHECK(member->value.offset + member->value.length ==
              member->member.offset + member->member.length);
    }
}

static void test_random_mutations(void) {
    static const char *const seeds[] = {
        "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi \\u00e9\"}],"
        "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":12,\"n\":1}",
        "{\"model\":\"m\",\"messages\":[{\"content\":[{\"type\":\"text\",\"text\":\"\\ud83d\\ude00"
        "\"}]}],\"temperature\":-1.5e-3,\"stop\":null,\"mock\":\"x\"}",
        "{\"email\":\"a@b.c\",\"password\":\"caf\xc3\xa9\"}",
    };
    static const uint8_t alphabet[] = "{}[]:,\"\\u0123456789.eE+-tfnrl aD8C \x80\xc3\xed\xf4\xff";
    uint8_t buffer[512];
    int accepted = 0;
    for (int iteration = 0; iteration < 20000; iteration++) {
        const char *seed = seeds[unit_random_below(&test_random, RW_ARRAY_LENGTH(seeds))];
        size_t length = strlen(seed);
        memcpy(buffer, seed, length);
        int mutations = 1 + (int)unit_random_below(&test_random, 3);
        for (int mutation = 0; mutation < mutations; mutation++) {
            size_t at = unit_random_below(&test_random, length + 1);
            uint8_t byte = unit_random_below(&test_random, 4) == 0 ? (uint8_t)unit_random_below(&test_random, 256)
                                                : alphabet[unit_random_below(&test_random, sizeof alphabet - 1)];
            switch (unit_random_below(&test_random, 3)) {
            case 0: /* replace */
                if (at < length) {
                    buffer[at] = byte;
                }
                break;
            case 1: /* insert */
                if (length < sizeof buffer) {
                    memmove(buffer + at + 1, buffer + at, length - at);
                    buffer[at] = byte;
                    length++;
                }
                break;
            default: /* delete */
                if (at < length) {
                    memmove(buffer + at, buffer + at + 1, length - at - 1);
                    length--;
                }
                break;
            }
        }
        json_error_t error = {0};
        int valid = json_validate(buffer, length, &error);
        CHECK(valid == 0 || valid == -1);
        if (valid != 0) {
            CHECK(error.message != NULL);
            CHECK(error.offset <= length);
        }
        json_chat_request_t request;
        json_error_t scan_error = {0};
        int scanned = json_scan_chat_request(buffer, length, &request, &scan_error);
        if (scanned == 0) {
            accepted++;
            CHECK_EQ_INT(valid, 0);
            CHECK(request.is_object);
            CHECK(request.model.present && request.model.type == JSON_TYPE_STRING);
            CHECK(buffer[request.model.value.offset] == '"');
            CHECK(buffer[request.model.member.offset] == '"');
            CHECK(request.messages_count >= 1);
            check_member_inside(buffer, &request.model, length);
            check_member_inside(buffer, &request.messages, length);
            check_member_inside(buffer, &request.stream, length);
            check_member_inside(buffer, &request.stream_options, length);
            check_member_inside(buffer, &request.include_usage, length);
            check_member_inside(buffer, &request.max_tokens, length);
            check_member_inside(buffer, &request.mock, length);
        } else {
            CHECK_EQ_INT(scanned, -1);
            CHECK(scan_error.message != NULL);
            /* a syntax error from the scanner is one the validator sees too */
            if (scan_error.param == NULL && valid == 0) {
                CHECK(strstr(scan_error.message, "JSON object") != NULL);
            }
            if (valid != 0) {
                CHECK(scan_error.param == NULL);
                CHECK_EQ_INT(scan_error.offset, error.offset);
            }
        }
        json_span_t value;
        json_type_t type;
        int found = json_object_find(buffer, length, "model", &value, &type);
        CHECK(found == 0 || found == -1 || found == -2);
        if (found == 0) {
            check_span_inside(value, length);
        }
    }
    /* Some mutations (in string contents, say) leave a valid request. */
    CHECK(accepted > 100);
}

int main(void) {
    RUN_TEST(test_valid_documents);
    RUN_TEST(test_invalid_documents);
    RUN_TEST(test_error_offsets);
    RUN_TEST(test_prefixes_are_invalid);
    RUN_TEST(test_depth_limit);
    RUN_TEST(test_chat_request_spans);
    RUN_TEST(test_chat_request_spans_exclude_whitespace);
    RUN_TEST(test_chat_request_minimal);
    RUN_TEST(test_chat_request_count_spellings);
    RUN_TEST(test_chat_request_insert_offset);
    RUN_TEST(test_chat_request_semantic_errors);
    RUN_TEST(test_chat_request_keys_not_confused);
    RUN_TEST(test_string_decode);
    RUN_TEST(test_object_find);
    RUN_TEST(test_random_mutations);
    return UNIT_REPORT();
}
