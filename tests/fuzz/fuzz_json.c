/* Fuzzes the JSON module (src/json/json.c) and, over the same documents, the
 * incremental usage scanner (src/sse/usage.c), which must agree with it.
 *
 * Properties checked, beyond "no crash, no sanitizer report":
 *   - json_validate and json_scan_chat_request agree on syntax: the body is
 *     refused by the validator exactly when the scanner reports a syntax
 *     error, at the same offset and, unless the body ends early, with the
 *     same message; a valid body only ever gets a semantic error from the
 *     scanner; surrounding whitespace does not change validity;
 *   - what the scanner reports is true of the bytes: the object's braces are
 *     where it says, every member span starts with the key's quote and ends
 *     with its value, every value span is itself valid JSON of the reported
 *     type, json_object_find finds the same value for every named member,
 *     messages_count is the number of array elements, stream and
 *     include_usage values match their literals, small integer counts match
 *     their digits, and an accepted model string decodes;
 *   - json_object_find never reports a span outside the body, and what it
 *     finds in a valid body is valid JSON;
 *   - json_string_decode decodes every valid top-level string, needs room for
 *     exactly its result plus a NUL, and refuses one byte less;
 *   - the usage scanner gives the same result whole, in two pieces and byte by
 *     byte; it accepts every document json_validate accepts, and json_validate
 *     accepts every ASCII document without \u escapes that it accepts; on a
 *     valid document its usage counts, choices_empty and has_error match what
 *     json_object_find reads from the top-level object. */
#include "fuzz.h"
#include "fuzz_usage.h"

#include "ringway/json.h"
#include "ringway/sse.h"

#include <stdlib.h>

enum { FUZZ_INPUT_BYTES_MAX = 65536, FUZZ_WRAP_BYTES = 3 };

static const char fuzz_syntax_prefix[] = "We could not parse the JSON body of your request: ";

static uint8_t wrapped[FUZZ_INPUT_BYTES_MAX + 2 * FUZZ_WRAP_BYTES];
static char decoded[FUZZ_INPUT_BYTES_MAX + 1];

static bool is_syntax_error(const json_error_t *error) {
    return error->message != NULL &&
           strncmp(error->message, fuzz_syntax_prefix, sizeof fuzz_syntax_prefix - 1) == 0;
}

static bool span_inside(json_span_t span, size_t length) {
    return (size_t)span.offset + span.length <= length;
}

static json_type_t type_of_first_byte(uint8_t byte) {
    switch (byte) {
    case '"': return JSON_TYPE_STRING;
    case '{': return JSON_TYPE_OBJECT;
    case '[': return JSON_TYPE_ARRAY;
    case 't':
    case 'f': return JSON_TYPE_BOOLEAN;
    case 'n': return JSON_TYPE_NULL;
    default: return (byte == '-' || (byte >= '0' && byte <= '9')) ? JSON_TYPE_NUMBER : JSON_TYPE_NONE;
    }
}

/* A member the scanner names: its spans and type agree with the bytes, and
 * (when the scan succeeded, so the key is unique) with json_object_find. */
static void check_member(const uint8_t *body, size_t length, const json_member_t *member,
                         const char *key, bool scan_succeeded) {
    json_span_t found_value = {0, 0};
    json_type_t found_type = JSON_TYPE_NONE;
    int found = key != NULL ? json_object_find(body, length, key, &found_value, &found_type) : 0;
    if (!member->present) {
        FUZZ_CHECK(member->member.offset == 0 && member->member.length == 0);
        FUZZ_CHECK(member->value.offset == 0 && member->value.length == 0);
        if (scan_succeeded && key != NULL) {
            FUZZ_CHECK(found == -1);
        }
        return;
    }
    FUZZ_CHECK(span_inside(member->member, length) && span_inside(member->value, length));
    FUZZ_CHECK(member->value.length > 0);
    FUZZ_CHECK(body[member->member.offset] == '"');
    FUZZ_CHECK(member->value.offset > member->member.offset);
    FUZZ_CHECK(member->value.offset + member->value.length ==
               member->member.offset + member->member.length);
    FUZZ_CHECK(type_of_first_byte(body[member->value.offset]) == member->type);
    FUZZ_CHECK(json_validate(body + member->value.offset, member->value.length, NULL) == 0);
    if (scan_succeeded && key != NULL) {
        FUZZ_CHECK(found == 0);
        FUZZ_CHECK(found_type == member->type);
        FUZZ_CHECK(found_value.offset == member->value.offset &&
                   found_value.length == member->value.length);
    }
}

static void check_count(const uint8_t *body, const json_member_t *member, uint32_t value,
                        bool scan_succeeded) {
    if (!scan_succeeded || !member->present || member->type != JSON_TYPE_NUMBER) {
        return;
    }
    FUZZ_CHECK(value <= JSON_COUNT_MAX);
    int64_t plain = plain_count(body, member->value);
    if (plain >= 0) {
        FUZZ_CHECK(plain == value);
    }
}

static void check_chat_request(const uint8_t *body, size_t length, const json_chat_request_t *out,
                               bool scan_succeeded) {
    size_t first = 0;
    while (first < length && is_json_whitespace(body[first])) {
        first++;
    }
    FUZZ_CHECK(out->is_object == (first < length && body[first] == '{'));
    if (!out->is_object) {
        FUZZ_CHECK(!scan_succeeded);
        return;
    }
    FUZZ_CHECK(out->members_offset == first + 1);
    FUZZ_CHECK(out->close_offset < length && body[out->close_offset] == '}');
    for (size_t index = out->close_offset + 1; index < length; index++) {
        FUZZ_CHECK(is_json_whitespace(body[index]));
    }
    bool only_space = true;
    for (size_t index = out->members_offset; index < out->close_offset; index++) {
        only_space = only_space && is_json_whitespace(body[index]);
    }
    FUZZ_CHECK(out->is_empty_object == only_space);

    check_member(body, length, &out->model, "model", scan_succeeded);
    check_member(body, length, &out->messages, "messages", scan_succeeded);
    check_member(body, length, &out->stream, "stream", scan_succeeded);
    check_member(body, length, &out->stream_options, "stream_options", scan_succeeded);
    check_member(body, length, &out->max_tokens, "max_tokens", scan_succeeded);
    check_member(body, length, &out->max_completion_tokens, "max_completion_tokens", scan_succeeded);
    check_member(body, length, &out->n, "n", scan_succeeded);
    check_member(body, length, &out->mock, "mock", scan_succeeded);
    check_member(body, length, &out->include_usage, NULL, scan_succeeded);

    FUZZ_CHECK(out->stream_value ==
               (out->stream.type == JSON_TYPE_BOOLEAN && body[out->stream.value.offset] == 't'));
    FUZZ_CHECK(out->include_usage_value == (out->include_usage.type == JSON_TYPE_BOOLEAN &&
                                            body[out->include_usage.value.offset] == 't'));
    /* (After a semantic error include_usage may belong to an earlier,
     * repeated stream_options.) */
    if (out->include_usage.present && scan_succeeded) {
        FUZZ_CHECK(out->stream_options.present && out->stream_options.type == JSON_TYPE_OBJECT);
        json_span_t options = out->stream_options.value;
        FUZZ_CHECK(out->include_usage.member.offset > options.offset);
        FUZZ_CHECK(out->include_usage.value.offset + out->include_usage.value.length <
                   options.offset + options.length);
        json_span_t value;
        json_type_t type;
        FUZZ_CHECK(json_object_find(body + options.offset, options.length, "include_usage", &value,
                                    &type) == 0);
        FUZZ_CHECK(options.offset + value.offset == out->include_usage.value.offset &&
                   value.length == out->include_usage.value.length);
    }
    if (out->messages.present && out->messages.type == JSON_TYPE_ARRAY) {
        FUZZ_CHECK(out->messages_count == count_array_elements(body, out->messages.value));
    }
    check_count(body, &out->max_tokens, out->max_tokens_value, scan_succeeded);
    check_count(body, &out->max_completion_tokens, out->max_completion_tokens_value, scan_succeeded);
    check_count(body, &out->n, out->n_value, scan_succeeded);

    if (scan_succeeded) {
        FUZZ_CHECK(out->model.type == JSON_TYPE_STRING && out->model.value.length > 2);
        FUZZ_CHECK(out->messages.type == JSON_TYPE_ARRAY && out->messages_count >= 1);
        size_t decoded_length = 0;
        FUZZ_CHECK(json_string_decode(body + out->model.value.offset, out->model.value.length,
                                      decoded, sizeof decoded, &decoded_length) == 0);
        FUZZ_CHECK(decoded_length + 2 <= out->model.value.length);
    }
}

/* json_string_decode on the whole input: a valid string decodes into
 * exactly result + NUL bytes; anything it decodes stays in bounds. */
static void check_string_decode(const uint8_t *body, size_t length, bool valid) {
    size_t decoded_length = 0;
    int status = json_string_decode(body, length, decoded, length + 1, &decoded_length);
    bool is_string = length >= 2 && body[0] == '"' && body[length - 1] == '"';
    if (valid && is_string) {
        FUZZ_CHECK(status == 0);
    }
    if (status != 0) {
        return;
    }
    FUZZ_CHECK(is_string);
    FUZZ_CHECK(decoded_length + 2 <= length && decoded[decoded_length] == '\0');
    size_t again_length = 0;
    FUZZ_CHECK(json_string_decode(body, length, decoded, decoded_length + 1, &again_length) == 0);
    FUZZ_CHECK(again_length == decoded_length);
    FUZZ_CHECK(json_string_decode(body, length, decoded, decoded_length, &again_length) == -1);
}

/* json_object_find with a few keys: spans stay inside, results are valid. */
static void check_object_find(const uint8_t *body, size_t length, bool valid) {
    static const char *const keys[] = {"model", "messages", "email", "password", "", "a"};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(keys); index++) {
        json_span_t value = {0, 0};
        json_type_t type = JSON_TYPE_NONE;
        int status = json_object_find(body, length, keys[index], &value, &type);
        FUZZ_CHECK(status == 0 || status == -1 || status == -2);
        if (status == 0) {
            FUZZ_CHECK(span_inside(value, length) && value.length > 0);
            FUZZ_CHECK(type == type_of_first_byte(body[value.offset]));
            if (valid) {
                FUZZ_CHECK(json_validate(body + value.offset, value.length, NULL) == 0);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > FUZZ_INPUT_BYTES_MAX) {
        return 0;
    }
    fuzz_random_t random = {fuzz_hash(data, size)};

    json_error_t validate_error = {0};
    bool valid = json_validate(data, size, &validate_error) == 0;
    if (!valid) {
        FUZZ_CHECK(is_syntax_error(&validate_error) && validate_error.param == NULL);
        FUZZ_CHECK(validate_error.offset <= size);
    }
    /* Whitespace around a document changes nothing. */
    memcpy(wrapped, " \t\n", FUZZ_WRAP_BYTES);
    memcpy(wrapped + FUZZ_WRAP_BYTES, data, size);
    memcpy(wrapped + FUZZ_WRAP_BYTES + size, "\r\n ", FUZZ_WRAP_BYTES);
    bool wrapped_valid = json_validate(wrapped, size + 2 * FUZZ_WRAP_BYTES, NULL) == 0;
    FUZZ_CHECK(wrapped_valid == valid);

    static json_chat_request_t request;
    json_error_t scan_error = {0};
    int scanned = json_scan_chat_request(data, size, &request, &scan_error);
    FUZZ_CHECK(scanned == 0 || scanned == -1);
    if (!valid) {
        FUZZ_CHECK(scanned == -1 && scan_error.param == NULL);
        /* The same place, and a syntax message; the wording may differ
         * where the body ends early (the validator says a value was
         * expected, the scanner that a key was). */
        FUZZ_CHECK(is_syntax_error(&scan_error));
        FUZZ_CHECK(scan_error.offset == validate_error.offset);
        if (validate_error.offset < size) {
            FUZZ_CHECK(scan_error.message == validate_error.message);
        }
    } else {
        if (scanned == -1) {
            FUZZ_CHECK(scan_error.message != NULL && !is_syntax_error(&scan_error));
            FUZZ_CHECK(scan_error.offset <= size);
        }
        check_chat_request(data, size, &request, scanned == 0);
    }

    check_object_find(data, size, valid);
    check_string_decode(data, size, valid);
    check_usage_scanner(data, size, valid, fuzz_split_point(data, size, &random));
    return 0;
}
