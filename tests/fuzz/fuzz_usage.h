/* Shared by fuzz_json.c and fuzz_sse.c: runs the usage scanner
 * (src/sse/usage.c) over one JSON document and checks it against itself and
 * against the JSON module (src/json/json.c):
 *   - the same result whole, in two pieces and byte by byte;
 *   - never complete and invalid at once; counts are -1 without usage;
 *   - every document json_validate accepts is complete and valid for the
 *     scanner, and every ASCII document without \u escapes that the scanner
 *     finds complete is accepted by json_validate (the scanner does not check
 *     UTF-8 or surrogate pairs, so other documents may differ);
 *   - on such a valid document, usage_present, the five counts, choices_empty
 *     and has_error are what json_object_find reads from the top-level
 *     object (skipped where a key repeats, since the scanner takes the last
 *     copy and json_object_find refuses to choose). */
#ifndef RINGWAY_FUZZ_USAGE_H
#define RINGWAY_FUZZ_USAGE_H

#include "fuzz.h"

#include "ringway/json.h"
#include "ringway/sse.h"

static bool is_json_whitespace(uint8_t byte) {
    return byte == ' ' || byte == '\t' || byte == '\n' || byte == '\r';
}

/* Elements of the valid array at body[span]: commas at its own level + 1. */
static uint32_t count_array_elements(const uint8_t *body, json_span_t span) {
    uint32_t depth = 0;
    uint32_t commas = 0;
    bool in_string = false;
    bool any = false;
    for (uint32_t index = span.offset + 1; index + 1 < span.offset + span.length; index++) {
        uint8_t byte = body[index];
        if (in_string) {
            if (byte == '\\') {
                index++;
            } else if (byte == '"') {
                in_string = false;
            }
            continue;
        }
        if (!is_json_whitespace(byte)) {
            any = true;
        }
        if (byte == '"') {
            in_string = true;
        } else if (byte == '[' || byte == '{') {
            depth++;
        } else if (byte == ']' || byte == '}') {
            depth--;
        } else if (byte == ',' && depth == 0) {
            commas++;
        }
    }
    return any ? commas + 1 : 0;
}

/* The value of digits-only body[span] if it fits in int64_t, else -1
 * (signs, fractions, exponents and anything larger all give -1). */
static int64_t plain_count(const uint8_t *body, json_span_t span) {
    static const char int64_max_digits[] = "9223372036854775807";
    if (span.length == 0 || span.length > sizeof int64_max_digits - 1) {
        return -1;
    }
    for (uint32_t index = 0; index < span.length; index++) {
        uint8_t byte = body[span.offset + index];
        if (byte < '0' || byte > '9') {
            return -1;
        }
    }
    if (span.length == sizeof int64_max_digits - 1 &&
        memcmp(body + span.offset, int64_max_digits, span.length) > 0) {
        return -1;
    }
    uint64_t value = 0;
    for (uint32_t index = 0; index < span.length; index++) {
        value = value * 10 + (uint64_t)(body[span.offset + index] - '0');
    }
    return (int64_t)value;
}

/* ---- The usage scanner against the validator and json_object_find -------- */

static void usage_scan(const uint8_t *body, size_t length, size_t split, usage_result_t *result) {
    usage_scanner_t scanner;
    usage_scanner_init(&scanner);
    usage_scanner_feed(&scanner, body, split);
    usage_scanner_feed(&scanner, body + split, length - split);
    usage_scanner_result(&scanner, result);
}

static void usage_scan_byte_by_byte(const uint8_t *body, size_t length, usage_result_t *result) {
    usage_scanner_t scanner;
    usage_scanner_init(&scanner);
    for (size_t index = 0; index < length; index++) {
        usage_scanner_feed(&scanner, body + index, 1);
    }
    usage_scanner_result(&scanner, result);
}

/* What the usage scanner should say about count member key of object
 * body[object]: its digits, or -1. Returns false if the key repeats (the
 * scanner takes the last; json_object_find refuses to choose). */
static bool expected_count(const uint8_t *body, json_span_t object, const char *key,
                           int64_t *count) {
    json_span_t value;
    json_type_t type;
    int status = json_object_find(body + object.offset, object.length, key, &value, &type);
    if (status == -2) {
        return false;
    }
    *count = -1;
    if (status == 0 && type == JSON_TYPE_NUMBER) {
        json_span_t absolute = {object.offset + value.offset, value.length};
        *count = plain_count(body, absolute);
    }
    return true;
}

/* Finds key in body[object] as an object; false if it repeats. */
static bool expected_object(const uint8_t *body, json_span_t object, const char *key,
                            bool *present, json_span_t *value) {
    json_span_t found;
    json_type_t type;
    int status = json_object_find(body + object.offset, object.length, key, &found, &type);
    if (status == -2) {
        return false;
    }
    *present = status == 0 && type == JSON_TYPE_OBJECT;
    if (*present) {
        value->offset = object.offset + found.offset;
        value->length = found.length;
    }
    return true;
}

static void check_usage_against_find(const uint8_t *body, size_t length,
                                     const usage_result_t *result) {
    json_span_t whole = {0, (uint32_t)length};
    bool usage_present = false;
    json_span_t usage = {0, 0};
    if (!expected_object(body, whole, "usage", &usage_present, &usage)) {
        return;
    }
    FUZZ_CHECK(result->usage_present == usage_present);
    if (usage_present) {
        int64_t prompt = -1, completion = -1, total = -1, hit = -1, cached = -1, reasoning = -1;
        bool prompt_details_present = false, completion_details_present = false;
        json_span_t prompt_details = {0, 0}, completion_details = {0, 0};
        if (!expected_count(body, usage, "prompt_tokens", &prompt) ||
            !expected_count(body, usage, "completion_tokens", &completion) ||
            !expected_count(body, usage, "total_tokens", &total) ||
            !expected_count(body, usage, "prompt_cache_hit_tokens", &hit) ||
            !expected_object(body, usage, "prompt_tokens_details", &prompt_details_present,
                             &prompt_details) ||
            !expected_object(body, usage, "completion_tokens_details",
                             &completion_details_present, &completion_details)) {
            return;
        }
        if (prompt_details_present && !expected_count(body, prompt_details, "cached_tokens", &cached)) {
            return;
        }
        if (completion_details_present &&
            !expected_count(body, completion_details, "reasoning_tokens", &reasoning)) {
            return;
        }
        FUZZ_CHECK(result->usage.prompt_tokens == prompt);
        FUZZ_CHECK(result->usage.completion_tokens == completion);
        FUZZ_CHECK(result->usage.total_tokens == total);
        FUZZ_CHECK(result->usage.cached_tokens == (cached >= 0 ? cached : hit));
        FUZZ_CHECK(result->usage.reasoning_tokens == reasoning);
    } else {
        FUZZ_CHECK(result->usage.prompt_tokens == -1 && result->usage.completion_tokens == -1 &&
                   result->usage.total_tokens == -1 && result->usage.cached_tokens == -1 &&
                   result->usage.reasoning_tokens == -1);
    }

    json_span_t value;
    json_type_t type;
    int status = json_object_find(body, length, "choices", &value, &type);
    if (status != -2) {
        bool empty = status == 0 && type == JSON_TYPE_ARRAY &&
                     count_array_elements(body, value) == 0;
        FUZZ_CHECK(result->choices_empty == empty);
    }
    status = json_object_find(body, length, "error", &value, &type);
    if (status != -2) {
        FUZZ_CHECK(result->has_error == (status == 0 && type != JSON_TYPE_NULL));
    }
}

static void check_usage_scanner(const uint8_t *body, size_t length, bool valid, size_t split) {
    usage_result_t whole, pieces, bytes;
    usage_scan(body, length, length, &whole);
    usage_scan(body, length, split, &pieces);
    usage_scan_byte_by_byte(body, length, &bytes);
    FUZZ_CHECK(memcmp(&whole, &pieces, sizeof whole) == 0);
    FUZZ_CHECK(memcmp(&whole, &bytes, sizeof whole) == 0);
    FUZZ_CHECK(!(whole.invalid && whole.complete));
    if (!whole.usage_present) {
        FUZZ_CHECK(whole.usage.prompt_tokens == -1 && whole.usage.total_tokens == -1);
    }
    bool plain_ascii = !fuzz_contains(body, length, "\\u");
    for (size_t index = 0; index < length && plain_ascii; index++) {
        plain_ascii = body[index] < 0x80;
    }
    if (valid) {
        FUZZ_CHECK(whole.complete && !whole.invalid);
    } else if (plain_ascii) {
        FUZZ_CHECK(!whole.complete);
    }
    if (valid && plain_ascii) {
        check_usage_against_find(body, length, &whole);
    }
}

#endif
