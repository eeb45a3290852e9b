/* Tests for src/sse/usage.c and src/sse/sse.c: every input is scanned whole,
 * split at every point, byte by byte and in random pieces, and the results
 * must not depend on the split; plus line-end variants, field rules, huge
 * lines, and seeded mutation loops cross-checked with the strict validator. */
#include "ringway/json.h"
#include "ringway/sse.h"
#include "unit.h"

#include <stdlib.h>

static const uint8_t *bytes_of(const char *text) {
    return (const uint8_t *)text;
}

/* unit.h's generator, seeded, so failures replay. */
static unit_random_t test_random = {0x2545F4914F6CDD1Dull};

/* ---- Usage scanner ------------------------------------------------------- */

static bool counts_equal(const usage_counts_t *a, const usage_counts_t *b) {
    return a->prompt_tokens == b->prompt_tokens && a->completion_tokens == b->completion_tokens &&
           a->total_tokens == b->total_tokens && a->cached_tokens == b->cached_tokens &&
           a->reasoning_tokens == b->reasoning_tokens;
}

static bool results_equal(const usage_result_t *a, const usage_result_t *b) {
    return a->usage_present == b->usage_present && counts_equal(&a->usage, &b->usage) &&
           a->choices_empty == b->choices_empty && a->has_error == b->has_error &&
           a->complete == b->complete && a->invalid == b->invalid;
}

static void usage_in_pieces(const uint8_t *text, size_t length, size_t piece_length,
                            usage_result_t *result) {
    usage_scanner_t scanner;
    usage_scanner_init(&scanner);
    for (size_t at = 0; at < length; at += piece_length) {
        usage_scanner_feed(&scanner, text + at, RW_MIN(piece_length, length - at));
    }
    usage_scanner_result(&scanner, result);
}

/* Scans text whole, at every split point into two pieces, byte by byte and
 * in random pieces; every way must agree. Returns the whole result. */
static usage_result_t usage_everywhere(const char *text) {
    size_t length = strlen(text);
    usage_result_t whole;
    usage_scanner_t scanner;
    usage_scanner_init(&scanner);
    usage_scanner_feed(&scanner, bytes_of(text), length);
    usage_scanner_result(&scanner, &whole);

    usage_result_t other;
    usage_in_pieces(bytes_of(text), length, 1, &other);
    CHECK(results_equal(&whole, &other));
    for (size_t split = 0; split <= length; split++) {
        usage_scanner_init(&scanner);
        usage_scanner_feed(&scanner, bytes_of(text), split);
        usage_scanner_feed(&scanner, bytes_of(text) + split, length - split);
        usage_scanner_result(&scanner, &other);
        if (!results_equal(&whole, &other)) {
            fprintf(stderr, "  split at %zu differs for %s\n", split, text);
        }
        CHECK(results_equal(&whole, &other));
    }
    for (int round = 0; round < 20; round++) {
        usage_scanner_init(&scanner);
        size_t at = 0;
        while (at < length) {
            size_t wanted = unit_random_below(&test_random, 8);
            size_t piece = RW_MIN(length - at, wanted);
            usage_scanner_feed(&scanner, bytes_of(text) + at, piece);
            at += piece;
        }
        usage_scanner_result(&scanner, &other);
        CHECK(results_equal(&whole, &other));
    }
    return whole;
}

static void check_counts(const usage_result_t *result, int64_t prompt, int64_t completion,
                         int64_t total, int64_t cached, int64_t reasoning) {
    CHECK_EQ_INT(result->usage.prompt_tokens, prompt);
    CHECK_EQ_INT(result->usage.completion_tokens, completion);
    CHECK_EQ_INT(result->usage.total_tokens, total);
    CHECK_EQ_INT(result->usage.cached_tokens, cached);
    CHECK_EQ_INT(result->usage.reasoning_tokens, reasoning);
}

static const char openai_response[] =
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1741569952,"
    "\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
    "\"assistant\",\"content\":\"Hello \\\"usage\\\": {\\\"prompt_tokens\\\": 999} \\\\\","
    "\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_tokens\":29,"
    "\"prompt_tokens_details\":{\"cached_tokens\":3,\"audio_tokens\":0},"
    "\"completion_tokens_details\":{\"reasoning_tokens\":4,\"audio_tokens\":0,"
    "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}},"
    "\"service_tier\":\"default\",\"system_fingerprint\":\"fp_50cad350e4\"}\n";

static void test_usage_openai_response(void) {
    usage_result_t result = usage_everywhere(openai_response);
    CHECK(result.complete);
    CHECK(!result.invalid);
    CHECK(result.usage_present);
    check_counts(&result, 19, 10, 29, 3, 4);
    CHECK(!result.choices_empty);
    CHECK(!result.has_error);
}

static void test_usage_stream_chunks(void) {
    usage_result_t result = usage_everywhere(
        "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],"
        "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}");
    CHECK(result.complete && result.usage_present && result.choices_empty);
    check_counts(&result, 5, 7, 12, -1, -1);

    result = usage_everywhere("{\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}");
    CHECK(result.complete && !result.usage_present && !result.choices_empty);
    check_counts(&result, -1, -1, -1, -1, -1);

    /* usage on the last content chunk (some providers do this) */
    result = usage_everywhere("{\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":"
                              "\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,"
                              "\"total_tokens\":3}}");
    CHECK(result.complete && result.usage_present && !result.choices_empty);
    check_counts(&result, 1, 2, 3, -1, -1);

    result = usage_everywhere(" { \"choices\" : [ \n ] } ");
    CHECK(result.complete && result.choices_empty && !result.usage_present);
    result = usage_everywhere("{\"choices\":[[]]}");
    CHECK(result.complete && !result.choices_empty);
    result = usage_everywhere("{\"choices\":[{}]}");
    CHECK(!result.choices_empty);
    result = usage_everywhere("{\"choices\":{}}");
    CHECK(!result.choices_empty);
    result = usage_everywhere("{\"choices\":[],\"choices\":[1]}");
    CHECK(!result.choices_empty);
    result = usage_everywhere("{\"choices\":[1],\"choices\":[]}");
    CHECK(result.choices_empty);
    result = usage_everywhere("{\"x\":[],\"y\":{\"choices\":[]}}");
    CHECK(!result.choices_empty);
    result = usage_everywhere("{}");
    CHECK(result.complete && !result.choices_empty && !result.usage_present && !result.has_error);
}

static void test_usage_deepseek(void) {
    usage_result_t result = usage_everywhere(
        "{\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15,"
        "\"prompt_cache_hit_tokens\":6,\"prompt_cache_miss_tokens\":4}}");
    CHECK(result.usage_present);
    check_counts(&result, 10, 5, 15, 6, -1);
    /* the OpenAI field wins when both are there, in either order */
    result = usage_everywhere("{\"usage\":{\"prompt_cache_hit_tokens\":6,"
                              "\"prompt_tokens_details\":{\"cached_tokens\":2}}}");
    CHECK_EQ_INT(result.usage.cached_tokens, 2);
    result = usage_everywhere("{\"usage\":{\"prompt_tokens_details\":{\"cached_tokens\":2},"
                              "\"prompt_cache_hit_tokens\":6}}");
    CHECK_EQ_INT(result.usage.cached_tokens, 2);
    result = usage_everywhere("{\"usage\":{\"prompt_tokens_details\":null,"
                              "\"prompt_cache_hit_tokens\":6}}");
    CHECK_EQ_INT(result.usage.cached_tokens, 6);
}

static void test_usage_only_top_level(void) {
    usage_result_t result = usage_everywhere(
        "{\"choices\":[{\"usage\":{\"prompt_tokens\":1}}],\"x\":{\"usage\":{\"prompt_tokens\":2}},"
        "\"data\":[{\"usage\":{}}],\"content\":\"\\\"usage\\\":{\\\"prompt_tokens\\\":3}\","
        "\"error_note\":{\"error\":1}}");
    CHECK(result.complete);
    CHECK(!result.usage_present);
    CHECK(!result.has_error);
    check_counts(&result, -1, -1, -1, -1, -1);

    result = usage_everywhere("[{\"usage\":{\"prompt_tokens\":1},\"error\":{}}]");
    CHECK(result.complete && !result.usage_present && !result.has_error);

    /* the wanted names only count at their own level */
    result = usage_everywhere(
        "{\"usage\":{\"cached_tokens\":5,\"reasoning_tokens\":6,\"x\":{\"prompt_tokens\":9},"
        "\"prompt_tokens_details\":{\"prompt_tokens\":8,\"x\":{\"cached_tokens\":7}},"
        "\"completion_tokens_details\":[{\"reasoning_tokens\":1}]},"
        "\"prompt_tokens_details\":{\"cached_tokens\":7},\"prompt_tokens\":4}");
    CHECK(result.usage_present);
    check_counts(&result, -1, -1, -1, -1, -1);

    /* keys spelled with escapes are not taken for the names (documented) */
    result = usage_everywhere("{\"us\\u0061ge\":{\"prompt_tokens\":1}}");
    CHECK(result.complete && !result.usage_present);
    result = usage_everywhere("{\"usage\\n\":{\"prompt_tokens\":1},\"usage\\u0000\":{}}");
    CHECK(result.complete && !result.usage_present);
    result = usage_everywhere("{\"usage\":{\"prompt\\u005ftokens\":1}}");
    CHECK(result.usage_present);
    CHECK_EQ_INT(result.usage.prompt_tokens, -1);

    /* near misses */
    result = usage_everywhere("{\"usagex\":{},\"Usage\":{},\"usag\":{},\" usage\":{}}");
    CHECK(!result.usage_present);
}

static void test_usage_last_wins(void) {
    usage_result_t result =
        usage_everywhere("{\"usage\":{\"prompt_tokens\":1},\"usage\":null}");
    CHECK(!result.usage_present);
    check_counts(&result, -1, -1, -1, -1, -1);
    result = usage_everywhere(
        "{\"usage\":{\"prompt_tokens\":1},\"usage\":{\"completion_tokens\":2}}");
    CHECK(result.usage_present);
    check_counts(&result, -1, 2, -1, -1, -1);
    result = usage_everywhere("{\"usage\":{\"prompt_tokens\":1,\"prompt_tokens\":2.5}}");
    CHECK_EQ_INT(result.usage.prompt_tokens, -1);
    result = usage_everywhere("{\"usage\":{\"prompt_tokens\":1.5,\"prompt_tokens\":3}}");
    CHECK_EQ_INT(result.usage.prompt_tokens, 3);
    result = usage_everywhere("{\"usage\":\"none\"}");
    CHECK(result.complete && !result.usage_present);
    result = usage_everywhere("{\"usage\":[]}");
    CHECK(result.complete && !result.usage_present);
}

static void test_usage_number_forms(void) {
    static const struct {
        const char *value;
        int64_t expected;
    } cases[] = {
        {"0", 0},
        {"7", 7},
        {"123456", 123456},
        {"9223372036854775807", INT64_MAX},
        {"9223372036854775808", -1},
        {"99999999999999999999999", -1},
        {"12.0", -1},
        {"1e3", -1},
        {"1E3", -1},
        {"10e-1", -1},
        {"-5", -1},
        {"-0", -1},
        {"\"12\"", -1},
        {"null", -1},
        {"true", -1},
        {"false", -1},
        {"{}", -1},
        {"[12]", -1},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        char text[128];
        snprintf(text, sizeof text, "{\"usage\":{\"total_tokens\":%s,\"prompt_tokens\":1}}",
                 cases[index].value);
        usage_result_t result = usage_everywhere(text);
        CHECK(result.complete);
        CHECK(result.usage_present);
        CHECK_EQ_INT(result.usage.total_tokens, cases[index].expected);
        CHECK_EQ_INT(result.usage.prompt_tokens, 1);
    }
}

static void test_usage_error_member(void) {
    usage_result_t result =
        usage_everywhere("{\"error\":{\"message\":\"Rate limit\",\"type\":\"requests\"}}");
    CHECK(result.complete && result.has_error && !result.usage_present);
    result = usage_everywhere("{\"error\":\"boom\"}");
    CHECK(result.has_error);
    result = usage_everywhere("{\"error\":null,\"choices\":[]}");
    CHECK(!result.has_error && result.choices_empty);
    result = usage_everywhere("{\"error\":{},\"error\":null}");
    CHECK(!result.has_error);
}

static void test_usage_completeness(void) {
    /* every strict prefix of an object is incomplete but not invalid */
    size_t length = strlen(openai_response);
    for (size_t prefix = 0; prefix + 1 < length; prefix++) {
        usage_result_t result;
        usage_in_pieces(bytes_of(openai_response), prefix, prefix + 1, &result);
        CHECK(!result.complete);
        CHECK(!result.invalid);
    }
    static const char *const complete_documents[] = {
        "{}", " {} \r\n\t", "[]", "\"s\"", "true", "null", "12", "12 ", "-0.5e+3", "0",
        "[1,-2,3.5,4e2,\"\\u00e9\\n\",true,false,null,{\"a\":[]}]",
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(complete_documents); index++) {
        usage_result_t result = usage_everywhere(complete_documents[index]);
        CHECK(result.complete);
        CHECK(!result.invalid);
    }
    static const char *const incomplete_documents[] = {
        "", " ", "{", "{\"a\"", "{\"a\":", "{\"a\":1", "{\"a\":1,", "[", "\"abc", "\"a\\",
        "\"a\\u12", "-", "1.", "1e", "1e+", "tru", "[1",
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(incomplete_documents); index++) {
        usage_result_t result = usage_everywhere(incomplete_documents[index]);
        CHECK(!result.complete);
        CHECK(!result.invalid);
    }
    static const char *const invalid_documents[] = {
        "[DONE]", "{} x", "{}{}", "1 2", "{\"a\":tru}", "{\"a\":01}", "{\"a\":1.}", "{\"a\" 1}",
        "{\"a\":1,}", "[1,]", "[,]", "{\"a\":\"x\ny\"}", "\"\\x\"", "\"\\u12G4\"", "{]", "[}",
        "{1:2}", "{\"a\"::1}", "nul1", "+1", ".5", "-a", "1.e3", "[1 2]", "}", "]", ":", ",",
        "{\"a\":1}}", "'a'", "{\"usage\":{\"prompt_tokens\":1,}}",
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(invalid_documents); index++) {
        usage_result_t result = usage_everywhere(invalid_documents[index]);
        if (!result.invalid) {
            fprintf(stderr, "  not invalid: %s\n", invalid_documents[index]);
        }
        CHECK(result.invalid);
        CHECK(!result.complete);
    }
    /* Once invalid, later bytes change nothing. */
    usage_scanner_t scanner;
    usage_scanner_init(&scanner);
    usage_scanner_feed(&scanner, bytes_of("{\"usage\":x"), 10);
    usage_scanner_feed(&scanner, bytes_of("{\"prompt_tokens\":1}}"), 20);
    usage_result_t result;
    usage_scanner_result(&scanner, &result);
    CHECK(result.invalid && !result.complete);
}

static void test_usage_depth_limit(void) {
    static char document[2 * USAGE_DEPTH_MAX + 64];
    size_t at = 0;
    for (int level = 0; level < USAGE_DEPTH_MAX; level++) {
        document[at++] = '[';
    }
    for (int level = 0; level < USAGE_DEPTH_MAX; level++) {
        document[at++] = ']';
    }
    document[at] = '\0';
    usage_result_t result = usage_everywhere(document);
    CHECK(result.complete && !result.invalid);
    at = 0;
    for (int level = 0; level <= USAGE_DEPTH_MAX; level++) {
        document[at++] = '[';
    }
    for (int level = 0; level <= USAGE_DEPTH_MAX; level++) {
        document[at++] = ']';
    }
    document[at] = '\0';
    result = usage_everywhere(document);
    CHECK(result.invalid);
    /* objects and arrays mixed deep down still close in the right order */
    snprintf(document, sizeof document, "{\"a\":[{\"b\":[{\"c\":{\"d\":[1]}}]}],\"usage\":{}}");
    result = usage_everywhere(document);
    CHECK(result.complete && result.usage_present);
}

/* A huge content string costs nothing but time, whatever the piece size. */
static void test_usage_huge_string(void) {
    static const char head[] = "{\"choices\":[{\"message\":{\"content\":\"";
    static const char tail[] =
        "\"}}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6,\"total_tokens\":11}}";
    size_t content_length = 5 * RW_MIB;
    size_t length = strlen(head) + content_length + strlen(tail);
    uint8_t *text = malloc(length);
    CHECK(text != NULL);
    if (text == NULL) {
        return;
    }
    memcpy(text, head, strlen(head));
    uint8_t *content = text + strlen(head);
    for (size_t index = 0; index < content_length; index++) {
        content[index] = (uint8_t)('a' + index % 26);
    }
    /* sprinkle escapes, including ones that would look like a key end */
    /* at 0 and 4 modulo 8, so that the two never overlap */
    for (size_t index = 1000; index + 2 < content_length; index += 4096) {
        memcpy(content + index, "\\\"", 2);
    }
    for (size_t index = 3004; index + 2 < content_length; index += 7000) {
        memcpy(content + index, "\\\\", 2);
    }
    memcpy(text + strlen(head) + content_length, tail, strlen(tail));
    const size_t piece_lengths[] = {length, 65536, 4093, 1};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(piece_lengths); index++) {
        usage_result_t result;
        usage_in_pieces(text, length, piece_lengths[index], &result);
        CHECK(result.complete && !result.invalid && result.usage_present);
        check_counts(&result, 5, 6, 11, -1, -1);
    }
    CHECK(sizeof(usage_scanner_t) < 256);
    free(text);
}

/* Mutated responses: whole, byte by byte and in random pieces agree, and
 * whatever the strict validator accepts the usage scanner finds complete. */
static void test_usage_random_mutations(void) {
    static const char *const seeds[] = {
        openai_response,
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,"
        "\"total_tokens\":12,\"prompt_cache_hit_tokens\":1}}",
        "{\"choices\":[{\"delta\":{\"content\":\"a\\\"b\\\\\"}}],\"usage\":null,\"error\":null}",
        "[1,-2.5e3,true,{\"usage\":{\"total_tokens\":1}}]",
    };
    static const uint8_t alphabet[] = "{}[]:,\"\\u0123456789.eE+-tfnrul \n\x01\x80";
    uint8_t buffer[1024];
    int complete_count = 0;
    for (int iteration = 0; iteration < 4000; iteration++) {
        const char *seed = seeds[unit_random_below(&test_random, RW_ARRAY_LENGTH(seeds))];
        size_t length = strlen(seed);
        memcpy(buffer, seed, length);
        int mutations = (int)unit_random_below(&test_random, 4);
        for (int mutation = 0; mutation < mutations; mutation++) {
            size_t at = unit_random_below(&test_random, length + 1);
            uint8_t byte = alphabet[unit_random_below(&test_random, sizeof alphabet - 1)];
            size_t kind = unit_random_below(&test_random, 3);
            if (kind == 0 && at < length) {
                buffer[at] = byte;
            } else if (kind == 1 && length < sizeof buffer) {
                memmove(buffer + at + 1, buffer + at, length - at);
                buffer[at] = byte;
                length++;
            } else if (kind == 2 && at < length) {
                memmove(buffer + at, buffer + at + 1, length - at - 1);
                length--;
            }
        }
        usage_result_t whole;
        usage_result_t bytewise;
        usage_result_t pieces;
        usage_in_pieces(buffer, length, length == 0 ? 1 : length, &whole);
        usage_in_pieces(buffer, length, 1, &bytewise);
        usage_in_pieces(buffer, length, 1 + unit_random_below(&test_random, 17), &pieces);
        CHECK(results_equal(&whole, &bytewise));
        CHECK(results_equal(&whole, &pieces));
        CHECK(!(whole.complete && whole.invalid));
        if (!whole.usage_present) {
            CHECK_EQ_INT(whole.usage.prompt_tokens, -1);
        }
        if (json_validate(buffer, length, NULL) == 0) {
            CHECK(whole.complete);
            CHECK(!whole.invalid);
        }
        complete_count += whole.complete;
    }
    CHECK(complete_count > 500);
}

/* ---- Event-stream scanner ------------------------------------------------ */

enum { EVENTS_MAX = 256 };

typedef struct scan_outcome {
    sse_event_t events[EVENTS_MAX];
    size_t event_count;
    uint64_t pending_bytes; /* after the last piece */
    bool in_event;
} scan_outcome_t;

/* Feeds input in pieces whose ends are cuts (ascending, the last one being
 * length), calling sse_scan until each piece is used up. */
static void scan_with_cuts(const uint8_t *input, size_t length, const size_t *cuts,
                           size_t cut_count, scan_outcome_t *outcome) {
    sse_scanner_t scanner;
    sse_scanner_init(&scanner);
    memset(outcome, 0, sizeof *outcome);
    size_t start = 0;
    uint64_t bytes_total = 0;
    for (size_t cut = 0; cut < cut_count; cut++) {
        size_t end = cuts[cut];
        while (start < end) {
            size_t consumed = 0;
            sse_event_t event;
            sse_result_t status = sse_scan(&scanner, input + start, end - start, &consumed, &event);
            CHECK(consumed <= end - start);
            if (status == SSE_EVENT) {
                CHECK(consumed > 0);
                bytes_total += event.bytes;
                if (outcome->event_count < EVENTS_MAX) {
                    outcome->events[outcome->event_count++] = event;
                }
            } else {
                CHECK_EQ_INT(status, SSE_AGAIN);
                CHECK_EQ_INT(consumed, end - start);
            }
            start += consumed;
        }
        /* an empty piece changes nothing */
        size_t consumed = 99;
        sse_event_t event;
        CHECK_EQ_INT(sse_scan(&scanner, input + start, 0, &consumed, &event), SSE_AGAIN);
        CHECK_EQ_INT(consumed, 0);
    }
    outcome->pending_bytes = sse_scanner_pending_bytes(&scanner);
    outcome->in_event = sse_scanner_in_event(&scanner);
    CHECK_EQ_INT(bytes_total + outcome->pending_bytes, length);
}

static void scan_whole(const uint8_t *input, size_t length, scan_outcome_t *outcome) {
    size_t cut = length;
    scan_with_cuts(input, length, &cut, 1, outcome);
}

static bool events_equal(const sse_event_t *a, const sse_event_t *b, bool compare_bytes) {
    return a->has_data == b->has_data && a->is_done == b->is_done &&
           a->comment_only == b->comment_only && a->has_other_fields == b->has_other_fields &&
           a->data_line_count == b->data_line_count && results_equal(&a->json, &b->json) &&
           (!compare_bytes || a->bytes == b->bytes);
}

/* The same events however the input is cut. Event sizes match exactly
 * unless the input holds a CR, whose LF may then land in the next event. */
static bool outcomes_equal(const scan_outcome_t *a, const scan_outcome_t *b, bool exact_bytes) {
    if (a->event_count != b->event_count || a->in_event != b->in_event) {
        return false;
    }
    for (size_t index = 0; index < a->event_count; index++) {
        if (!events_equal(&a->events[index], &b->events[index], exact_bytes)) {
            return false;
        }
        uint64_t difference = a->events[index].bytes > b->events[index].bytes
                                  ? a->events[index].bytes - b->events[index].bytes
                                  : b->events[index].bytes - a->events[index].bytes;
        if (difference > 1) {
            return false;
        }
    }
    return !exact_bytes || a->pending_bytes == b->pending_bytes;
}

/* Scans input whole, at every split point, byte by byte and in random
 * pieces, checks they agree, and returns the whole outcome. */
static void scan_everywhere(const uint8_t *input, size_t length, scan_outcome_t *whole) {
    static scan_outcome_t other;
    bool exact_bytes = memchr(input, '\r', length) == NULL;
    scan_whole(input, length, whole);
    size_t cuts[2];
    for (size_t split = 0; split <= length; split++) {
        cuts[0] = split;
        cuts[1] = length;
        scan_with_cuts(input, length, cuts, 2, &other);
        if (!outcomes_equal(whole, &other, exact_bytes)) {
            fprintf(stderr, "  split at %zu differs\n", split);
        }
        CHECK(outcomes_equal(whole, &other, exact_bytes));
    }
    static size_t byte_cuts[8192];
    if (length <= RW_ARRAY_LENGTH(byte_cuts)) {
        for (size_t index = 0; index < length; index++) {
            byte_cuts[index] = index + 1;
        }
        scan_with_cuts(input, length, byte_cuts, length, &other);
        CHECK(outcomes_equal(whole, &other, exact_bytes));
        for (int round = 0; round < 10; round++) {
            size_t cut_count = 0;
            size_t at = 0;
            while (at < length) {
                size_t step = unit_random_below(&test_random, 9);
                at = RW_MIN(length, at + step);
                byte_cuts[cut_count++] = at;
            }
            scan_with_cuts(input, length, byte_cuts, cut_count, &other);
            CHECK(outcomes_equal(whole, &other, exact_bytes));
        }
    }
}

/* Rewrites every LF of text as line_end ("\n", "\r\n" or "\r"). */
static size_t with_line_ends(const char *text, const char *line_end, uint8_t *out,
                             size_t capacity) {
    size_t at = 0;
    for (const char *cursor = text; *cursor != '\0'; cursor++) {
        const char *piece = *cursor == '\n' ? line_end : cursor;
        size_t piece_length = *cursor == '\n' ? strlen(line_end) : 1;
        RW_ASSERT(at + piece_length <= capacity);
        memcpy(out + at, piece, piece_length);
        at += piece_length;
    }
    return at;
}

static const char openai_stream[] =
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n"
    "\n"
    ": keep-alive\n"
    "\n"
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\\\"lo\\\\\"}}],"
    "\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],"
    "\"usage\":null}\n"
    "\n"
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,"
    "\"total_tokens\":21,\"prompt_tokens_details\":{\"cached_tokens\":0},"
    "\"completion_tokens_details\":{\"reasoning_tokens\":2}}}\n"
    "\n"
    "data: [DONE]\n"
    "\n";

static void test_sse_openai_stream(void) {
    static const char *const line_ends[] = {"\n", "\r\n", "\r"};
    static uint8_t input[4096];
    static scan_outcome_t outcome;
    for (size_t variant = 0; variant < RW_ARRAY_LENGTH(line_ends); variant++) {
        size_t length = with_line_ends(openai_stream, line_ends[variant], input, sizeof input);
        scan_everywhere(input, length, &outcome);
        CHECK_EQ_INT(outcome.event_count, 6);
        CHECK_EQ_INT(outcome.pending_bytes, 0);
        CHECK(!outcome.in_event);
        const sse_event_t *events = outcome.events;
        CHECK(events[0].has_data && events[0].json.complete && !events[0].json.usage_present);
        CHECK(!events[0].is_done && !events[0].comment_only);
        CHECK(events[1].comment_only && !events[1].has_data);
        CHECK_EQ_INT(events[1].bytes, strlen(": keep-alive") + 2 * strlen(line_ends[variant]));
        CHECK(events[2].has_data && events[2].json.complete && !events[2].json.choices_empty);
        CHECK(events[3].has_data && events[3].json.complete);
        CHECK(events[4].json.complete && events[4].json.usage_present);
        CHECK(events[4].json.choices_empty);
        check_counts(&events[4].json, 9, 12, 21, 0, 2);
        CHECK(events[5].is_done && events[5].has_data && events[5].json.invalid);
        CHECK_EQ_INT(events[5].bytes, strlen("data: [DONE]") + 2 * strlen(line_ends[variant]));
        for (size_t index = 0; index < 5; index++) {
            CHECK(!events[index].is_done);
            CHECK(!events[index].json.invalid);
            CHECK(!events[index].has_other_fields);
        }
    }
}

static scan_outcome_t text_outcome;

static const scan_outcome_t *scan_text(const char *text) {
    scan_everywhere(bytes_of(text), strlen(text), &text_outcome);
    return &text_outcome;
}

static void test_sse_fields(void) {
    const scan_outcome_t *outcome = scan_text("data:[DONE]\n\n");
    CHECK_EQ_INT(outcome->event_count, 1);
    CHECK(outcome->events[0].is_done);
    outcome = scan_text("data:  [DONE]\n\ndata: [DONE] \n\ndata: [DONE\n\ndata: [DONE]]\n\n");
    CHECK_EQ_INT(outcome->event_count, 4);
    for (size_t index = 0; index < outcome->event_count; index++) {
        CHECK(outcome->events[index].has_data && !outcome->events[index].is_done);
    }
    /* a field name without a colon has an empty value */
    outcome = scan_text("data\n\n");
    CHECK_EQ_INT(outcome->event_count, 1);
    CHECK(outcome->events[0].has_data);
    CHECK_EQ_INT(outcome->events[0].data_line_count, 1);
    CHECK(!outcome->events[0].json.complete && !outcome->events[0].json.invalid);
    /* names are exact and case-sensitive */
    outcome = scan_text("Data: [DONE]\n\ndata : [DONE]\n\ndataX: [DONE]\n\ndat: x\n\n"
                        "datadatadata: x\n\n");
    CHECK_EQ_INT(outcome->event_count, 5);
    for (size_t index = 0; index < outcome->event_count; index++) {
        CHECK(!outcome->events[index].has_data);
        CHECK(outcome->events[index].has_other_fields);
        CHECK(!outcome->events[index].comment_only);
    }
    /* other fields are recognised and ignored, even when their value says "data" */
    outcome = scan_text("event: data\nid: data: [DONE]\ndata: [DONE]\nretry: 100\n\n");
    CHECK_EQ_INT(outcome->event_count, 1);
    CHECK(outcome->events[0].is_done);
    CHECK(outcome->events[0].has_other_fields);
    CHECK_EQ_INT(outcome->events[0].data_line_count, 1);
    outcome = scan_text("event: usage\n\n");
    CHECK(!outcome->events[0].has_data && outcome->events[0].has_other_fields);
    CHECK(!outcome->events[0].comment_only);
    /* comments */
    outcome = scan_text(": keep-alive\n\n:\n\n::data: x\n: a\n: b\n\n:comment\ndata: [DONE]\n\n");
    CHECK_EQ_INT(outcome->event_count, 4);
    CHECK(outcome->events[0].comment_only);
    CHECK_EQ_INT(outcome->events[0].bytes, 14);
    CHECK(outcome->events[1].comment_only);
    CHECK(outcome->events[2].comment_only && !outcome->events[2].has_data);
    CHECK(!outcome->events[3].comment_only && outcome->events[3].is_done);
    /* a line of spaces is not blank: it is a field named " " */
    outcome = scan_text(" \n\n");
    CHECK_EQ_INT(outcome->event_count, 1);
    CHECK(outcome->events[0].has_other_fields);
}

static void test_sse_multiline_data(void) {
    const scan_outcome_t *outcome = scan_text(
        "data: {\"usage\":\ndata: {\"prompt_tokens\":1,\ndata:\"completion_tokens\":2}}\n\n");
    CHECK_EQ_INT(outcome->event_count, 1);
    CHECK_EQ_INT(outcome->events[0].data_line_count, 3);
    CHECK(outcome->events[0].json.complete && outcome->events[0].json.usage_present);
    check_counts(&outcome->events[0].json, 1, 2, -1, -1, -1);
    /* the joining "\n" is real: it breaks a string */
    outcome = scan_text("data: \"a\ndata: b\"\n\n");
    CHECK(outcome->events[0].json.invalid);
    /* "[DONE]" then another data line is not [DONE] */
    outcome = scan_text("data: [DONE]\ndata:\n\ndata: [DO\ndata: NE]\n\n");
    CHECK_EQ_INT(outcome->event_count, 2);
    CHECK(!outcome->events[0].is_done && !outcome->events[1].is_done);
    /* comments between data lines do not break them */
    outcome = scan_text("data: {\"choices\":\n: note\ndata: []}\n\n");
    CHECK(outcome->events[0].json.complete && outcome->events[0].json.choices_empty);
    CHECK(!outcome->events[0].comment_only);
}

static void test_sse_blank_lines(void) {
    const scan_outcome_t *outcome = scan_text("\n");
    CHECK_EQ_INT(outcome->event_count, 1);
    const sse_event_t *event = &outcome->events[0];
    CHECK(!event->has_data && !event->comment_only && !event->has_other_fields && !event->is_done);
    CHECK_EQ_INT(event->bytes, 1);
    outcome = scan_text("\r\n");
    CHECK_EQ_INT(outcome->event_count, 1);
    CHECK_EQ_INT(outcome->events[0].bytes, 2);
    outcome = scan_text("\n\n\r\r\n\r");
    CHECK_EQ_INT(outcome->event_count, 5);
    outcome = scan_text("data: [DONE]\n\n\n");
    CHECK_EQ_INT(outcome->event_count, 2);
    CHECK(outcome->events[0].is_done);
    CHECK(!outcome->events[1].has_data);
    CHECK_EQ_INT(outcome->events[1].bytes, 1);
    /* an unfinished event stays pending */
    outcome = scan_text("data: [DONE]\n");
    CHECK_EQ_INT(outcome->event_count, 0);
    CHECK(outcome->in_event);
    CHECK_EQ_INT(outcome->pending_bytes, 13);
}

static void test_sse_split_carriage_return(void) {
    sse_scanner_t scanner;
    sse_scanner_init(&scanner);
    sse_event_t event;
    size_t consumed = 0;
    static const char first[] = "data: [DONE]\r\n\r";
    CHECK_EQ_INT(sse_scan(&scanner, bytes_of(first), strlen(first), &consumed, &event), SSE_EVENT);
    CHECK_EQ_INT(consumed, strlen(first));
    CHECK(event.is_done);
    CHECK_EQ_INT(event.bytes, strlen(first));
    /* the LF completing that CRLF is swallowed, not taken for a blank line */
    CHECK_EQ_INT(sse_scan(&scanner, bytes_of("\n"), 1, &consumed, &event), SSE_AGAIN);
    CHECK_EQ_INT(consumed, 1);
    CHECK(!sse_scanner_in_event(&scanner));
    CHECK_EQ_INT(sse_scanner_pending_bytes(&scanner), 1);
    static const char second[] = "data: x\r";
    CHECK_EQ_INT(sse_scan(&scanner, bytes_of(second), strlen(second), &consumed, &event),
                 SSE_AGAIN);
    CHECK(sse_scanner_in_event(&scanner));
    CHECK_EQ_INT(sse_scan(&scanner, bytes_of("\n\r\n"), 3, &consumed, &event), SSE_EVENT);
    CHECK_EQ_INT(consumed, 3);
    CHECK(event.has_data && !event.is_done);
    CHECK_EQ_INT(event.data_line_count, 1);
    CHECK_EQ_INT(event.bytes, 1 + strlen(second) + 3);
    /* a lone CR followed by something else is a line end of its own */
    static const char third[] = "data: [DONE]\r\rdata: a\r";
    CHECK_EQ_INT(sse_scan(&scanner, bytes_of(third), strlen(third), &consumed, &event), SSE_EVENT);
    CHECK_EQ_INT(consumed, 14);
    CHECK(event.is_done);
    CHECK_EQ_INT(sse_scan(&scanner, bytes_of(third) + 14, strlen(third) - 14, &consumed, &event),
                 SSE_AGAIN);
    CHECK_EQ_INT(sse_scan(&scanner, bytes_of("data: b\r\r"), 9, &consumed, &event), SSE_EVENT);
    CHECK_EQ_INT(event.data_line_count, 2);
    CHECK_EQ_INT(consumed, 9);

    /* LF CR is two line ends */
    const scan_outcome_t *outcome = scan_text("data: [DONE]\n\r");
    CHECK_EQ_INT(outcome->event_count, 1);
    CHECK(outcome->events[0].is_done);
}

static void test_sse_byte_order_mark(void) {
    const scan_outcome_t *outcome = scan_text("\xef\xbb\xbf" "data: [DONE]\n\n");
    CHECK_EQ_INT(outcome->event_count, 1);
    CHECK(outcome->events[0].is_done);
    CHECK_EQ_INT(outcome->events[0].bytes, 17);
    /* only at the very start */
    outcome = scan_text("\n\xef\xbb\xbf" "data: [DONE]\n\n");
    CHECK_EQ_INT(outcome->event_count, 2);
    CHECK(!outcome->events[1].has_data && outcome->events[1].has_other_fields);
    outcome = scan_text("\xef\xbb\xbf\xef\xbb\xbf" "data: [DONE]\n\n");
    CHECK(!outcome->events[0].has_data);
    /* a partial mark makes the line an unknown field */
    outcome = scan_text("\xef\xbb" "data: [DONE]\n\n");
    CHECK_EQ_INT(outcome->event_count, 1);
    CHECK(!outcome->events[0].has_data && outcome->events[0].has_other_fields);
    outcome = scan_text("\xef\n\n");
    CHECK_EQ_INT(outcome->event_count, 1);
    CHECK(outcome->events[0].has_other_fields);
    CHECK_EQ_INT(outcome->events[0].bytes, 3);
    outcome = scan_text("\xef:x\n\n");
    CHECK(outcome->events[0].has_other_fields && !outcome->events[0].comment_only);
    outcome = scan_text("\xef\xbb\xbf\n");
    CHECK_EQ_INT(outcome->event_count, 1);
    CHECK_EQ_INT(outcome->events[0].bytes, 4);
    outcome = scan_text("\xef\xbb\xbf");
    CHECK_EQ_INT(outcome->event_count, 0);
    CHECK(!outcome->in_event);
    CHECK_EQ_INT(outcome->pending_bytes, 3);
}

static void test_sse_pending_event(void) {
    sse_scanner_t scanner;
    sse_scanner_init(&scanner);
    sse_event_t event;
    size_t consumed = 0;
    static const char first[] = "data: {\"a\"";
    static const char second[] = ":1}\n\ndata";
    CHECK(!sse_scanner_in_event(&scanner));
    CHECK_EQ_INT(sse_scan(&scanner, bytes_of(first), strlen(first), &consumed, &event), SSE_AGAIN);
    CHECK_EQ_INT(consumed, strlen(first));
    CHECK(sse_scanner_in_event(&scanner));
    CHECK_EQ_INT(sse_scanner_pending_bytes(&scanner), strlen(first));
    CHECK_EQ_INT(sse_scan(&scanner, bytes_of(second), strlen(second), &consumed, &event),
                 SSE_EVENT);
    CHECK_EQ_INT(consumed, 5);
    CHECK_EQ_INT(event.bytes, strlen(first) + 5);
    CHECK(event.json.complete);
    CHECK(!sse_scanner_in_event(&scanner));
    CHECK_EQ_INT(sse_scanner_pending_bytes(&scanner), 0);
    CHECK_EQ_INT(sse_scan(&scanner, bytes_of(second) + 5, 4, &consumed, &event), SSE_AGAIN);
    CHECK(sse_scanner_in_event(&scanner));
    CHECK_EQ_INT(sse_scanner_pending_bytes(&scanner), 4);
}

/* A 5 MB data line: O(1) memory, the usage after it still found. */
static void test_sse_huge_data_line(void) {
    static const char head[] = "data: {\"choices\":[{\"delta\":{\"content\":\"";
    static const char tail[] = "\"}}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6,"
                               "\"total_tokens\":11}}\r\n\r\ndata: [DONE]\n\n";
    size_t content_length = 5 * RW_MIB;
    size_t length = strlen(head) + content_length + strlen(tail);
    uint8_t *input = malloc(length);
    CHECK(input != NULL);
    if (input == NULL) {
        return;
    }
    memcpy(input, head, strlen(head));
    for (size_t index = 0; index < content_length; index++) {
        input[strlen(head) + index] = (uint8_t)('a' + index % 26);
    }
    memcpy(input + strlen(head) + 1000, "\\\"usage\\\":{", 11);
    memcpy(input + strlen(head) + content_length, tail, strlen(tail));
    size_t first_event_bytes = length - strlen("data: [DONE]\n\n");

    static const size_t piece_lengths[] = {0, 65536, 4097};
    for (size_t variant = 0; variant < RW_ARRAY_LENGTH(piece_lengths); variant++) {
        size_t piece_length = piece_lengths[variant] == 0 ? length : piece_lengths[variant];
        sse_scanner_t scanner;
        sse_scanner_init(&scanner);
        sse_event_t events[2];
        size_t event_count = 0;
        bool seen_in_event = false;
        for (size_t start = 0; start < length;) {
            size_t end = RW_MIN(length, start + piece_length);
            while (start < end) {
                size_t consumed = 0;
                sse_event_t event;
                if (sse_scan(&scanner, input + start, end - start, &consumed, &event) ==
                    SSE_EVENT) {
                    CHECK(event_count < 2);
                    if (event_count < 2) {
                        events[event_count++] = event;
                    }
                } else if (start + consumed < first_event_bytes) {
                    seen_in_event = seen_in_event || sse_scanner_in_event(&scanner);
                    CHECK_EQ_INT(sse_scanner_pending_bytes(&scanner), start + consumed);
                }
                start += consumed;
            }
        }
        CHECK_EQ_INT(event_count, 2);
        if (event_count == 2) {
            /* a piece may end between the final CR and LF, which then
             * counts in the next event */
            CHECK(events[0].bytes == first_event_bytes || events[0].bytes == first_event_bytes - 1);
            CHECK_EQ_INT(events[0].bytes + events[1].bytes, length);
            CHECK(events[0].json.complete && events[0].json.usage_present);
            check_counts(&events[0].json, 5, 6, 11, -1, -1);
            CHECK(events[1].is_done);
        }
        CHECK(seen_in_event == (piece_length < length));
    }
    CHECK(sizeof(sse_scanner_t) < 512);
    free(input);
}

/* Random streams built from SSE and JSON fragments: every way of cutting
 * them gives the same events, and the flags stay consistent. */
static void test_sse_random_streams(void) {
    static const char *const fragments[] = {
        "data: ", "data:", "data", ":", ": keep-alive", "event: x", "id: 1", "retry: 5", "\n",
        "\n", "\r\n", "\r", "{", "}", "\"usage\"", "{\"prompt_tokens\":3}", "[DONE]", "[]",
        "\"choices\"", ",", "x", " ", "\xef\xbb\xbf", "\"\\\"", "12", "data: [DONE]\n\n",
        "data: {\"choices\":[],\"usage\":{\"total_tokens\":4}}\n\n",
    };
    static uint8_t input[2048];
    static scan_outcome_t whole;
    static scan_outcome_t other;
    static size_t cuts[2048];
    int events_seen = 0;
    for (int iteration = 0; iteration < 3000; iteration++) {
        size_t length = 0;
        size_t fragment_count = unit_random_below(&test_random, 40);
        for (size_t index = 0; index < fragment_count; index++) {
            const char *fragment = fragments[unit_random_below(&test_random, RW_ARRAY_LENGTH(fragments))];
            size_t fragment_length = strlen(fragment);
            if (length + fragment_length > sizeof input) {
                break;
            }
            memcpy(input + length, fragment, fragment_length);
            length += fragment_length;
        }
        if (unit_random_below(&test_random, 4) == 0 && length > 0) {
            input[unit_random_below(&test_random, length)] = (uint8_t)unit_random_next(&test_random);
        }
        bool exact_bytes = memchr(input, '\r', length) == NULL;
        scan_whole(input, length, &whole);
        for (size_t index = 0; index < length; index++) {
            cuts[index] = index + 1;
        }
        scan_with_cuts(input, length, cuts, length, &other);
        CHECK(outcomes_equal(&whole, &other, exact_bytes));
        size_t cut_count = 0;
        for (size_t at = 0; at < length;) {
            size_t step = 1 + unit_random_below(&test_random, 12);
            at = RW_MIN(length, at + step);
            cuts[cut_count++] = at;
        }
        scan_with_cuts(input, length, cuts, cut_count, &other);
        CHECK(outcomes_equal(&whole, &other, exact_bytes));
        for (size_t index = 0; index < whole.event_count; index++) {
            const sse_event_t *event = &whole.events[index];
            CHECK(event->bytes >= 1);
            CHECK(!event->is_done || (event->has_data && event->data_line_count == 1));
            CHECK(!event->comment_only || (!event->has_data && !event->has_other_fields));
            CHECK(event->has_data == (event->data_line_count > 0));
            CHECK(!(event->json.complete && event->json.invalid));
            if (!event->has_data) {
                CHECK(!event->json.complete && !event->json.invalid);
            }
        }
        events_seen += (int)whole.event_count;
    }
    CHECK(events_seen > 1000);
}

int main(void) {
    RUN_TEST(test_usage_openai_response);
    RUN_TEST(test_usage_stream_chunks);
    RUN_TEST(test_usage_deepseek);
    RUN_TEST(test_usage_only_top_level);
    RUN_TEST(test_usage_last_wins);
    RUN_TEST(test_usage_number_forms);
    RUN_TEST(test_usage_error_member);
    RUN_TEST(test_usage_completeness);
    RUN_TEST(test_usage_depth_limit);
    RUN_TEST(test_usage_huge_string);
    RUN_TEST(test_usage_random_mutations);
    RUN_TEST(test_sse_openai_stream);
    RUN_TEST(test_sse_fields);
    RUN_TEST(test_sse_multiline_data);
    RUN_TEST(test_sse_blank_lines);
    RUN_TEST(test_sse_split_carriage_return);
    RUN_TEST(test_sse_byte_order_mark);
    RUN_TEST(test_sse_pending_event);
    RUN_TEST(test_sse_huge_data_line);
    RUN_TEST(test_sse_random_streams);
    return UNIT_REPORT();
}
