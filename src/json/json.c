/* A strict RFC 8259 validator over one contiguous buffer, and on top of it the
 * chat-completion request scanner. Values are skipped iteratively with a
 * stack of JSON_DEPTH_MAX bytes, so hostile nesting cannot exhaust the C
 * stack; every byte is looked at a bounded number of times. */
#include "ringway/json.h"

#include "ringway/text.h"

#include <stddef.h>
#include <string.h>

#define JSON_SYNTAX(reason) "We could not parse the JSON body of your request: " reason

typedef struct json_reader {
    const uint8_t *bytes;
    uint32_t length;
    uint32_t position;
    json_error_t *error; /* may be NULL */
} json_reader_t;

static int json_fail_at(json_reader_t *reader, uint32_t offset, const char *message) {
    if (reader->error != NULL) {
        reader->error->message = message;
        reader->error->param = NULL;
        reader->error->offset = offset;
    }
    return -1;
}

static int json_fail(json_reader_t *reader, const char *message) {
    return json_fail_at(reader, reader->position, message);
}

static bool json_at_end(const json_reader_t *reader) {
    return reader->position >= reader->length;
}

static uint8_t json_peek(const json_reader_t *reader) {
    RW_ASSERT(reader->position < reader->length);
    return reader->bytes[reader->position];
}

static void json_skip_whitespace(json_reader_t *reader) {
    while (reader->position < reader->length) {
        uint8_t c = reader->bytes[reader->position];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            return;
        }
        reader->position++;
    }
}

static int json_hex_value(uint8_t c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Reads the four hex digits of a \u escape at text[at .. at + 4), bounded by
 * end. Returns 0 with *unit set, or -1. */
static int json_read_hex4(const uint8_t *text, size_t end, size_t at, uint32_t *unit) {
    if (at + 4 > end) {
        return -1;
    }
    uint32_t value = 0;
    for (size_t index = 0; index < 4; index++) {
        int digit = json_hex_value(text[at + index]);
        if (digit < 0) {
            return -1;
        }
        value = value * 16 + (uint32_t)digit;
    }
    *unit = value;
    return 0;
}

static bool json_is_high_surrogate(uint32_t unit) {
    return unit >= 0xD800 && unit <= 0xDBFF;
}

static bool json_is_low_surrogate(uint32_t unit) {
    return unit >= 0xDC00 && unit <= 0xDFFF;
}

/* Validates the escape at the backslash under the position and steps over
 * it; a \u high surrogate takes its low surrogate with it. */
static int json_scan_escape(json_reader_t *reader) {
    uint32_t start = reader->position;
    RW_ASSERT(reader->bytes[start] == '\\');
    if (start + 1 >= reader->length) {
        return json_fail(reader, JSON_SYNTAX("a string is not terminated."));
    }
    switch (reader->bytes[start + 1]) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
        reader->position = start + 2;
        return 0;
    case 'u':
        break;
    default:
        return json_fail(reader, JSON_SYNTAX("a string contains an invalid escape sequence."));
    }
    uint32_t unit = 0;
    if (json_read_hex4(reader->bytes, reader->length, start + 2, &unit) != 0) {
        return json_fail(reader, JSON_SYNTAX("a \\u escape needs four hexadecimal digits."));
    }
    if (json_is_low_surrogate(unit)) {
        return json_fail(reader, JSON_SYNTAX("a \\u escape is a low surrogate without a high one."));
    }
    reader->position = start + 6;
    if (!json_is_high_surrogate(unit)) {
        return 0;
    }
    uint32_t low = 0;
    if (reader->position + 1 >= reader->length || reader->bytes[reader->position] != '\\' ||
        reader->bytes[reader->position + 1] != 'u' ||
        json_read_hex4(reader->bytes, reader->length, reader->position + 2, &low) != 0 ||
        !json_is_low_surrogate(low)) {
        return json_fail_at(reader, start,
                            JSON_SYNTAX("a \\u escape is a high surrogate without a low one."));
    }
    reader->position += 6;
    return 0;
}

/* Validates one UTF-8 sequence of two to four bytes at the position (its
 * lead byte is >= 0x80) and steps over it. Refuses overlong forms, encoded
 * surrogates and code points above U+10FFFF (text_utf8_sequence_length). */
static int json_scan_utf8(json_reader_t *reader) {
    size_t sequence = text_utf8_sequence_length(reader->bytes + reader->position,
                                                reader->length - reader->position);
    if (sequence == 0) {
        return json_fail(reader, JSON_SYNTAX("a string is not valid UTF-8."));
    }
    reader->position += (uint32_t)sequence;
    return 0;
}

/* Validates the string whose opening quote is under the position and leaves
 * the position just after its closing quote. */
static int json_scan_string(json_reader_t *reader) {
    RW_ASSERT(json_peek(reader) == '"');
    uint32_t start = reader->position;
    reader->position++;
    for (;;) {
        while (reader->position < reader->length) {
            uint8_t c = reader->bytes[reader->position];
            if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') {
                break;
            }
            reader->position++;
        }
        if (json_at_end(reader)) {
            return json_fail_at(reader, start, JSON_SYNTAX("a string is not terminated."));
        }
        uint8_t c = json_peek(reader);
        if (c == '"') {
            reader->position++;
            return 0;
        }
        if (c < 0x20) {
            return json_fail(reader,
                             JSON_SYNTAX("a string contains an unescaped control character."));
        }
        int status = c == '\\' ? json_scan_escape(reader) : json_scan_utf8(reader);
        if (status != 0) {
            return -1;
        }
    }
}

static bool json_is_digit(uint8_t c) {
    return c >= '0' && c <= '9';
}

/* Steps over a run of at least one digit, or fails with message. */
static int json_scan_digits(json_reader_t *reader, const char *message) {
    if (json_at_end(reader) || !json_is_digit(json_peek(reader))) {
        return json_fail(reader, message);
    }
    while (!json_at_end(reader) && json_is_digit(json_peek(reader))) {
        reader->position++;
    }
    return 0;
}

/* Validates a number per the RFC grammar:
 * -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_scan_number(json_reader_t *reader) {
    if (json_peek(reader) == '-') {
        reader->position++;
    }
    if (!json_at_end(reader) && json_peek(reader) == '0') {
        reader->position++;
        if (!json_at_end(reader) && json_is_digit(json_peek(reader))) {
            return json_fail(reader, JSON_SYNTAX("a number has a leading zero."));
        }
    } else if (json_scan_digits(reader, JSON_SYNTAX("a number has no digits.")) != 0) {
        return -1;
    }
    if (!json_at_end(reader) && json_peek(reader) == '.') {
        reader->position++;
        if (json_scan_digits(reader, JSON_SYNTAX("a number has no digits after its '.'.")) != 0) {
            return -1;
        }
    }
    if (!json_at_end(reader) && (json_peek(reader) == 'e' || json_peek(reader) == 'E')) {
        reader->position++;
        if (!json_at_end(reader) && (json_peek(reader) == '+' || json_peek(reader) == '-')) {
            reader->position++;
        }
        if (json_scan_digits(reader, JSON_SYNTAX("a number has no digits in its exponent.")) !=
            0) {
            return -1;
        }
    }
    return 0;
}

static int json_scan_literal(json_reader_t *reader, json_type_t *type) {
    static const char *const literals[] = {"true", "false", "null"};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(literals); index++) {
        size_t literal_length = strlen(literals[index]);
        if (reader->length - reader->position >= literal_length &&
            memcmp(reader->bytes + reader->position, literals[index], literal_length) == 0) {
            reader->position += (uint32_t)literal_length;
            *type = index == 2 ? JSON_TYPE_NULL : JSON_TYPE_BOOLEAN;
            return 0;
        }
    }
    return json_fail(reader, JSON_SYNTAX("expected a value but found an unknown word."));
}

/* Reads "key" ws ':' ws at the position; *key_start and *key_end delimit
 * the key with its quotes, and the position is left at the value. */
static int json_scan_key(json_reader_t *reader, uint32_t *key_start, uint32_t *key_end) {
    if (json_at_end(reader) || json_peek(reader) != '"') {
        return json_fail(reader, JSON_SYNTAX("expected a string as an object key."));
    }
    *key_start = reader->position;
    if (json_scan_string(reader) != 0) {
        return -1;
    }
    *key_end = reader->position;
    json_skip_whitespace(reader);
    if (json_at_end(reader) || json_peek(reader) != ':') {
        return json_fail(reader, JSON_SYNTAX("expected ':' after an object key."));
    }
    reader->position++;
    json_skip_whitespace(reader);
    return 0;
}

/* Validates one value starting at the position (whitespace before it is
 * skipped) and leaves the position just after it. depth is the number of
 * arrays and objects already open around the value; opening more than
 * JSON_DEPTH_MAX in all is refused. *type is the type of the value. */
static int json_skip_value(json_reader_t *reader, uint32_t depth, json_type_t *type) {
    RW_ASSERT(depth <= JSON_DEPTH_MAX);
    enum { EXPECT_VALUE, EXPECT_KEY, AFTER_VALUE } state = EXPECT_VALUE;
    bool level_is_object[JSON_DEPTH_MAX];
    uint32_t level = 0; /* containers opened by this call */
    bool first_value = true;
    for (;;) {
        if (state == AFTER_VALUE && level == 0) {
            return 0; /* whitespace after the value is not part of it */
        }
        json_skip_whitespace(reader);
        if (state == AFTER_VALUE) {
            bool in_object = level_is_object[level - 1];
            if (json_at_end(reader)) {
                return json_fail(reader, JSON_SYNTAX("the body ends inside an array or object."));
            }
            uint8_t c = json_peek(reader);
            if (c == ',') {
                reader->position++;
                state = in_object ? EXPECT_KEY : EXPECT_VALUE;
            } else if (c == (in_object ? '}' : ']')) {
                reader->position++;
                level--;
            } else {
                return json_fail(reader,
                                 in_object ? JSON_SYNTAX("expected ',' or '}' after an object member.")
                                           : JSON_SYNTAX("expected ',' or ']' after an array element."));
            }
            continue;
        }
        if (json_at_end(reader)) {
            return json_fail(reader, JSON_SYNTAX("the body ends where a value was expected."));
        }
        uint8_t c = json_peek(reader);
        if (state == EXPECT_KEY) {
            uint32_t key_start = 0;
            uint32_t key_end = 0;
            if (json_scan_key(reader, &key_start, &key_end) != 0) {
                return -1;
            }
            state = EXPECT_VALUE;
            continue;
        }
        json_type_t value_type = JSON_TYPE_NONE;
        state = AFTER_VALUE;
        if (c == '{' || c == '[') {
            if (depth + level >= JSON_DEPTH_MAX) {
                return json_fail(reader,
                                 JSON_SYNTAX("arrays and objects are nested more than 128 deep."));
            }
            bool is_object = c == '{';
            value_type = is_object ? JSON_TYPE_OBJECT : JSON_TYPE_ARRAY;
            level_is_object[level++] = is_object;
            reader->position++;
            json_skip_whitespace(reader);
            if (!json_at_end(reader) && json_peek(reader) == (is_object ? '}' : ']')) {
                reader->position++;
                level--;
            } else {
                state = is_object ? EXPECT_KEY : EXPECT_VALUE;
            }
        } else if (c == '"') {
            value_type = JSON_TYPE_STRING;
            if (json_scan_string(reader) != 0) {
                return -1;
            }
        } else if (c == '-' || json_is_digit(c)) {
            value_type = JSON_TYPE_NUMBER;
            if (json_scan_number(reader) != 0) {
                return -1;
            }
        } else if (c == 't' || c == 'f' || c == 'n') {
            if (json_scan_literal(reader, &value_type) != 0) {
                return -1;
            }
        } else {
            return json_fail(reader, JSON_SYNTAX("expected a value."));
        }
        if (first_value) {
            *type = value_type;
            first_value = false;
        }
    }
}

/* Checks that only whitespace follows the position. */
static int json_expect_end(json_reader_t *reader) {
    json_skip_whitespace(reader);
    if (!json_at_end(reader)) {
        return json_fail(reader, JSON_SYNTAX("unexpected data after the JSON value."));
    }
    return 0;
}

static void json_reader_init(json_reader_t *reader, const uint8_t *body, size_t length,
                             json_error_t *error) {
    RW_ASSERT(length <= JSON_BODY_LENGTH_MAX);
    reader->bytes = body;
    reader->length = (uint32_t)length;
    reader->position = 0;
    reader->error = error;
}

int json_validate(const uint8_t *body, size_t length, json_error_t *error) {
    RW_ASSERT(body != NULL || length == 0);
    json_reader_t reader;
    if (length > JSON_BODY_LENGTH_MAX) {
        json_reader_init(&reader, body, 0, error);
        return json_fail(&reader, JSON_SYNTAX("the body is too large."));
    }
    json_reader_init(&reader, body, length, error);
    json_skip_whitespace(&reader);
    if (json_at_end(&reader)) {
        return json_fail(&reader, JSON_SYNTAX("the body is empty."));
    }
    json_type_t type = JSON_TYPE_NONE;
    if (json_skip_value(&reader, 0, &type) != 0) {
        return -1;
    }
    return json_expect_end(&reader);
}

/* Decodes the character of a string's contents at text[*index] (a raw byte
 * or a whole escape, a surrogate pair being one escape) into out, advancing
 * *index. end is the index of the closing quote. Returns the number of bytes
 * written (1..4), or -1 for a malformed escape or an unpaired surrogate. */
static int json_decode_step(const uint8_t *text, size_t end, size_t *index, uint8_t out[4]) {
    size_t at = *index;
    RW_ASSERT(at < end);
    if (text[at] != '\\') {
        out[0] = text[at];
        *index = at + 1;
        return 1;
    }
    if (at + 1 >= end) {
        return -1;
    }
    static const char simple_escapes[] = "\"\"\\\\//b\bf\fn\nr\rt\t";
    for (size_t pair = 0; pair + 1 < sizeof simple_escapes; pair += 2) {
        if (text[at + 1] == (uint8_t)simple_escapes[pair]) {
            out[0] = (uint8_t)simple_escapes[pair + 1];
            *index = at + 2;
            return 1;
        }
    }
    uint32_t code_point = 0;
    if (text[at + 1] != 'u' || json_read_hex4(text, end, at + 2, &code_point) != 0 ||
        json_is_low_surrogate(code_point)) {
        return -1;
    }
    at += 6;
    if (json_is_high_surrogate(code_point)) {
        uint32_t low = 0;
        if (at + 1 >= end || text[at] != '\\' || text[at + 1] != 'u' ||
            json_read_hex4(text, end, at + 2, &low) != 0 || !json_is_low_surrogate(low)) {
            return -1;
        }
        code_point = 0x10000 + ((code_point - 0xD800) << 10) + (low - 0xDC00);
        at += 6;
    }
    *index = at;
    if (code_point < 0x80) {
        out[0] = (uint8_t)code_point;
        return 1;
    }
    if (code_point < 0x800) {
        out[0] = (uint8_t)(0xC0 | (code_point >> 6));
        out[1] = (uint8_t)(0x80 | (code_point & 0x3F));
        return 2;
    }
    if (code_point < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (code_point >> 12));
        out[1] = (uint8_t)(0x80 | ((code_point >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (code_point & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (code_point >> 18));
    out[1] = (uint8_t)(0x80 | ((code_point >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((code_point >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (code_point & 0x3F));
    return 4;
}

static bool json_is_quoted(const uint8_t *quoted, size_t length) {
    return length >= 2 && quoted[0] == '"' && quoted[length - 1] == '"';
}

int json_string_decode(const uint8_t *quoted, size_t length, char *out, size_t out_capacity,
                       size_t *out_length) {
    RW_ASSERT(quoted != NULL || length == 0);
    RW_ASSERT(out != NULL || out_capacity == 0);
    RW_ASSERT(out_length != NULL);
    *out_length = 0;
    if (!json_is_quoted(quoted, length)) {
        return -1;
    }
    size_t end = length - 1;
    size_t index = 1;
    size_t written = 0;
    while (index < end) {
        uint8_t character[4];
        int count = json_decode_step(quoted, end, &index, character);
        if (count < 0 || written + (size_t)count >= out_capacity) {
            return -1;
        }
        memcpy(out + written, character, (size_t)count);
        written += (size_t)count;
    }
    if (written >= out_capacity) {
        return -1;
    }
    out[written] = '\0';
    *out_length = written;
    return 0;
}

/* Whether the quoted string text[0 .. length) decodes to exactly name. */
static bool json_key_equals(const uint8_t *quoted, size_t length, const char *name,
                            size_t name_length) {
    if (!json_is_quoted(quoted, length)) {
        return false;
    }
    size_t end = length - 1;
    size_t index = 1;
    size_t matched = 0;
    while (index < end) {
        uint8_t character[4];
        int count = json_decode_step(quoted, end, &index, character);
        if (count < 0 || matched + (size_t)count > name_length ||
            memcmp(name + matched, character, (size_t)count) != 0) {
            return false;
        }
        matched += (size_t)count;
    }
    return matched == name_length;
}

/* ---- The chat-completion request scanner --------------------------------- */

typedef enum json_chat_field {
    JSON_CHAT_FIELD_NONE = -1,
    JSON_CHAT_FIELD_MODEL,
    JSON_CHAT_FIELD_MESSAGES,
    JSON_CHAT_FIELD_STREAM,
    JSON_CHAT_FIELD_STREAM_OPTIONS,
    JSON_CHAT_FIELD_MAX_TOKENS,
    JSON_CHAT_FIELD_MAX_COMPLETION_TOKENS,
    JSON_CHAT_FIELD_N,
    JSON_CHAT_FIELD_MOCK,
    JSON_CHAT_FIELD_USER
} json_chat_field_t;

/* Indexed by json_chat_field_t: each member's key, which doubles as the error
 * param, and where its json_member_t sits in json_chat_request_t. */
static const struct {
    const char *name;
    size_t offset;
} json_chat_fields[] = {
    {"model", offsetof(json_chat_request_t, model)},
    {"messages", offsetof(json_chat_request_t, messages)},
    {"stream", offsetof(json_chat_request_t, stream)},
    {"stream_options", offsetof(json_chat_request_t, stream_options)},
    {"max_tokens", offsetof(json_chat_request_t, max_tokens)},
    {"max_completion_tokens", offsetof(json_chat_request_t, max_completion_tokens)},
    {"n", offsetof(json_chat_request_t, n)},
    {"mock", offsetof(json_chat_request_t, mock)},
    {"user", offsetof(json_chat_request_t, user)},
};
_Static_assert(RW_ARRAY_LENGTH(json_chat_fields) == JSON_CHAT_FIELD_USER + 1, "one entry per chat field");

static json_member_t *json_chat_member(json_chat_request_t *out, json_chat_field_t field) {
    RW_ASSERT(field > JSON_CHAT_FIELD_NONE && (size_t)field < RW_ARRAY_LENGTH(json_chat_fields));
    return (json_member_t *)((char *)out + json_chat_fields[field].offset);
}

static json_chat_field_t json_chat_field_for_key(const uint8_t *quoted, size_t length) {
    for (size_t index = 0; index < RW_ARRAY_LENGTH(json_chat_fields); index++) {
        const char *name = json_chat_fields[index].name;
        if (json_key_equals(quoted, length, name, strlen(name))) {
            return (json_chat_field_t)index;
        }
    }
    return JSON_CHAT_FIELD_NONE;
}

static json_span_t json_span(uint32_t start, uint32_t end) {
    RW_ASSERT(start <= end);
    return (json_span_t){.offset = start, .length = end - start};
}

/* Keeps the first semantic problem found while the syntax is still being
 * checked; it is reported only if the whole body turns out to be valid. */
typedef struct json_chat_scan {
    json_reader_t reader;
    json_chat_request_t *out;
    json_error_t semantic;
    bool has_semantic;
} json_chat_scan_t;

static void json_note(json_chat_scan_t *scan, const char *message, const char *param,
                      uint32_t offset) {
    if (!scan->has_semantic) {
        scan->has_semantic = true;
        scan->semantic = (json_error_t){.message = message, .param = param, .offset = offset};
    }
}

/* After a member or element: steps over ',' (returning 1, more follows) or
 * the closing byte (returning 0), or fails. */
static int json_scan_separator(json_reader_t *reader, uint8_t close, const char *message) {
    json_skip_whitespace(reader);
    if (json_at_end(reader)) {
        return json_fail(reader, JSON_SYNTAX("the body ends inside an array or object."));
    }
    uint8_t c = json_peek(reader);
    reader->position++;
    if (c == ',') {
        json_skip_whitespace(reader);
        return 1;
    }
    if (c == close) {
        return 0;
    }
    reader->position--;
    return json_fail(reader, message);
}

/* Steps over the opening byte `open` under the position and the whitespace
 * after it. Returns true when the container closes at once (`close` next,
 * stepped over too); false when a first element or member should follow
 * (or the body ends there, which that element's scan reports). */
static bool json_open_is_empty(json_reader_t *reader, uint8_t open, uint8_t close) {
    RW_ASSERT(json_peek(reader) == open);
    reader->position++;
    json_skip_whitespace(reader);
    if (json_at_end(reader) || json_peek(reader) != close) {
        return false;
    }
    reader->position++;
    return true;
}

/* A member just scanned: its key from key_start and its value from
 * value_start, both running to the position. */
static json_member_t json_member_found(const json_reader_t *reader, json_type_t type, uint32_t key_start,
                                       uint32_t value_start) {
    RW_ASSERT(key_start < value_start && value_start < reader->position);
    return (json_member_t){
        .present = true,
        .type = type,
        .member = json_span(key_start, reader->position),
        .value = json_span(value_start, reader->position),
    };
}

/* The messages array at the position (its '[' under it): validates it and
 * counts its elements, which sit at depth 2. */
static int json_scan_messages(json_reader_t *reader, uint32_t *count) {
    if (json_open_is_empty(reader, '[', ']')) {
        return 0;
    }
    for (;;) {
        json_type_t type = JSON_TYPE_NONE;
        if (json_skip_value(reader, 2, &type) != 0) {
            return -1;
        }
        (*count)++;
        int more = json_scan_separator(reader, ']',
                                       JSON_SYNTAX("expected ',' or ']' after an array element."));
        if (more <= 0) {
            return more;
        }
    }
}

/* The stream_options object at the position (its '{' under it): validates
 * it and records include_usage. */
static int json_scan_stream_options(json_chat_scan_t *scan) {
    json_reader_t *reader = &scan->reader;
    json_chat_request_t *out = scan->out;
    if (json_open_is_empty(reader, '{', '}')) {
        return 0;
    }
    for (;;) {
        uint32_t key_start = 0;
        uint32_t key_end = 0;
        if (json_scan_key(reader, &key_start, &key_end) != 0) {
            return -1;
        }
        uint32_t value_start = reader->position;
        json_type_t type = JSON_TYPE_NONE;
        if (json_skip_value(reader, 2, &type) != 0) {
            return -1;
        }
        static const char include_usage[] = "include_usage";
        if (json_key_equals(reader->bytes + key_start, key_end - key_start, include_usage,
                            sizeof include_usage - 1)) {
            if (out->include_usage.present) {
                json_note(scan, "The stream_options object contains include_usage more than once.",
                          "stream_options", key_start);
            }
            out->include_usage = json_member_found(reader, type, key_start, value_start);
            out->include_usage_value =
                type == JSON_TYPE_BOOLEAN && reader->bytes[value_start] == 't';
            if (type != JSON_TYPE_BOOLEAN && type != JSON_TYPE_NULL) {
                json_note(scan, "stream_options.include_usage must be a boolean.",
                          "stream_options", value_start);
            }
        }
        int more = json_scan_separator(reader, '}',
                                       JSON_SYNTAX("expected ',' or '}' after an object member."));
        if (more <= 0) {
            return more;
        }
    }
}

/* Reads a number value (one the validator accepted) as a count: a
 * non-negative integer up to JSON_COUNT_MAX in any spelling whose value is
 * integral, as JSON Schema's "integer" means it: 100, 1e2, 100.0, 1.5e2 and
 * -0 all qualify; 1.5, 1e-2 and -1 do not. The value is computed exactly from
 * the digits, never through floating point. */
static bool json_read_count(const uint8_t *body, json_span_t span, uint32_t *value) {
    const uint8_t *text = body + span.offset;
    uint32_t length = span.length;
    uint32_t at = 0;
    bool negative = at < length && text[at] == '-';
    at += negative ? 1 : 0;
    uint32_t integer_start = at;
    while (at < length && json_is_digit(text[at])) {
        at++;
    }
    uint32_t integer_length = at - integer_start;
    uint32_t fraction_start = at;
    if (at < length && text[at] == '.') {
        fraction_start = ++at;
        while (at < length && json_is_digit(text[at])) {
            at++;
        }
    }
    uint32_t fraction_length = at - fraction_start;
    int64_t exponent = 0;
    if (at < length && (text[at] == 'e' || text[at] == 'E')) {
        at++;
        bool exponent_negative = at < length && text[at] == '-';
        if (at < length && (text[at] == '-' || text[at] == '+')) {
            at++;
        }
        for (; at < length && json_is_digit(text[at]); at++) {
            if (exponent < 100000000) { /* saturate: far beyond any count's reach */
                exponent = exponent * 10 + (text[at] - '0');
            }
        }
        exponent = exponent_negative ? -exponent : exponent;
    }
    if (at != length || integer_length == 0) {
        return false;
    }
    /* The value is the digit string D (integer then fraction digits) times
     * 10^shift; the first `kept` digits of D form the integer, the rest must
     * be zeros. */
    int64_t shift = exponent - (int64_t)fraction_length;
    uint32_t digit_count = integer_length + fraction_length;
    int64_t kept = shift < 0 ? (int64_t)digit_count + shift : (int64_t)digit_count;
    uint64_t total = 0;
    for (uint32_t index = 0; index < digit_count; index++) {
        uint8_t c = index < integer_length ? text[integer_start + index]
                                           : text[fraction_start + index - integer_length];
        uint32_t digit = (uint32_t)(c - '0');
        if ((int64_t)index < kept) {
            total = total * 10 + digit;
            if (total > JSON_COUNT_MAX) {
                return false;
            }
        } else if (digit != 0) {
            return false;
        }
    }
    for (int64_t step = 0; step < shift && total != 0; step++) {
        total *= 10;
        if (total > JSON_COUNT_MAX) {
            return false;
        }
    }
    if (negative && total != 0) {
        return false;
    }
    *value = (uint32_t)total;
    return true;
}

/* Checks a scanned top-level member's type and derives its value. */
static void json_check_member(json_chat_scan_t *scan, json_chat_field_t field) {
    json_chat_request_t *out = scan->out;
    const json_member_t *member = json_chat_member(out, field);
    const uint8_t *body = scan->reader.bytes;
    uint32_t *count = NULL;
    const char *count_message = NULL;
    switch (field) {
    case JSON_CHAT_FIELD_STREAM:
        out->stream_value = member->type == JSON_TYPE_BOOLEAN && body[member->value.offset] == 't';
        if (member->type != JSON_TYPE_BOOLEAN && member->type != JSON_TYPE_NULL) {
            json_note(scan, "The stream parameter must be a boolean.", "stream",
                      member->value.offset);
        }
        return;
    case JSON_CHAT_FIELD_STREAM_OPTIONS:
        if (member->type != JSON_TYPE_OBJECT && member->type != JSON_TYPE_NULL) {
            json_note(scan, "The stream_options parameter must be an object.", "stream_options",
                      member->value.offset);
        }
        return;
    case JSON_CHAT_FIELD_MAX_TOKENS:
        count = &out->max_tokens_value;
        count_message = "The max_tokens parameter must be a non-negative integer.";
        break;
    case JSON_CHAT_FIELD_MAX_COMPLETION_TOKENS:
        count = &out->max_completion_tokens_value;
        count_message = "The max_completion_tokens parameter must be a non-negative integer.";
        break;
    case JSON_CHAT_FIELD_N:
        count = &out->n_value;
        count_message = "The n parameter must be a non-negative integer.";
        break;
    case JSON_CHAT_FIELD_USER:
        if (member->type != JSON_TYPE_STRING && member->type != JSON_TYPE_NULL) {
            json_note(scan, "The user parameter must be a string.", "user", member->value.offset);
        }
        return;
    case JSON_CHAT_FIELD_MODEL:
    case JSON_CHAT_FIELD_MESSAGES:
    case JSON_CHAT_FIELD_MOCK:
    case JSON_CHAT_FIELD_NONE:
        return;
    }
    *count = 0;
    if (member->type == JSON_TYPE_NULL) {
        return;
    }
    if (member->type != JSON_TYPE_NUMBER || !json_read_count(body, member->value, count)) {
        *count = 0;
        json_note(scan, count_message, json_chat_fields[field].name, member->value.offset);
    }
}

/* Scans the members of the top-level object, whose '{' is under the
 * position. */
static int json_scan_chat_members(json_chat_scan_t *scan) {
    json_reader_t *reader = &scan->reader;
    json_chat_request_t *out = scan->out;
    reader->position++;
    out->members_offset = reader->position;
    json_skip_whitespace(reader);
    if (!json_at_end(reader) && json_peek(reader) == '}') {
        out->is_empty_object = true;
        out->close_offset = reader->position;
        reader->position++;
        return 0;
    }
    for (;;) {
        uint32_t key_start = 0;
        uint32_t key_end = 0;
        if (json_scan_key(reader, &key_start, &key_end) != 0) {
            return -1;
        }
        if (json_at_end(reader)) {
            return json_fail(reader, JSON_SYNTAX("the body ends where a value was expected."));
        }
        json_chat_field_t field =
            json_chat_field_for_key(reader->bytes + key_start, key_end - key_start);
        uint32_t value_start = reader->position;
        uint8_t first = json_peek(reader);
        json_type_t type = JSON_TYPE_NONE;
        int status = 0;
        if (field == JSON_CHAT_FIELD_MESSAGES && first == '[') {
            type = JSON_TYPE_ARRAY;
            out->messages_count = 0;
            status = json_scan_messages(reader, &out->messages_count);
        } else if (field == JSON_CHAT_FIELD_STREAM_OPTIONS && first == '{') {
            type = JSON_TYPE_OBJECT;
            status = json_scan_stream_options(scan);
        } else {
            status = json_skip_value(reader, 1, &type);
        }
        if (status != 0) {
            return -1;
        }
        if (field != JSON_CHAT_FIELD_NONE) {
            json_member_t *member = json_chat_member(out, field);
            if (member->present) {
                json_note(scan, "The request body contains this parameter more than once.",
                          json_chat_fields[field].name, key_start);
            }
            *member = json_member_found(reader, type, key_start, value_start);
            json_check_member(scan, field);
        }
        int more = json_scan_separator(reader, '}',
                                       JSON_SYNTAX("expected ',' or '}' after an object member."));
        if (more < 0) {
            return -1;
        }
        if (more == 0) {
            out->close_offset = reader->position - 1;
            return 0;
        }
    }
}

static int json_semantic_fail(json_error_t *error, const char *message, const char *param,
                              uint32_t offset) {
    *error = (json_error_t){.message = message, .param = param, .offset = offset};
    return -1;
}

int json_scan_chat_request(const uint8_t *body, size_t length, json_chat_request_t *out,
                           json_error_t *error) {
    RW_ASSERT(body != NULL || length == 0);
    RW_ASSERT(out != NULL);
    RW_ASSERT(error != NULL);
    memset(out, 0, sizeof *out);
    *error = (json_error_t){0};
    if (length > JSON_BODY_LENGTH_MAX) {
        return json_semantic_fail(error, JSON_SYNTAX("the body is too large."), NULL, 0);
    }
    json_chat_scan_t scan = {.out = out};
    json_reader_t *reader = &scan.reader;
    json_reader_init(reader, body, length, error);
    json_skip_whitespace(reader);
    if (json_at_end(reader)) {
        return json_fail(reader, JSON_SYNTAX("the body is empty."));
    }
    uint32_t start = reader->position;
    if (json_peek(reader) != '{') {
        json_type_t type = JSON_TYPE_NONE;
        if (json_skip_value(reader, 0, &type) != 0 || json_expect_end(reader) != 0) {
            return -1;
        }
        return json_semantic_fail(error, "The request body must be a JSON object.", NULL, start);
    }
    out->is_object = true;
    if (json_scan_chat_members(&scan) != 0 || json_expect_end(reader) != 0) {
        return -1;
    }
    if (scan.has_semantic) {
        *error = scan.semantic;
        return -1;
    }
    if (!out->model.present) {
        return json_semantic_fail(error, "You must provide a model parameter.", "model", 0);
    }
    if (out->model.type != JSON_TYPE_STRING || out->model.value.length <= 2) {
        return json_semantic_fail(error, "The model parameter must be a non-empty string.",
                                  "model", out->model.value.offset);
    }
    if (!out->messages.present) {
        return json_semantic_fail(error, "You must provide a messages parameter.", "messages", 0);
    }
    if (out->messages.type != JSON_TYPE_ARRAY) {
        return json_semantic_fail(error, "The messages parameter must be an array of messages.",
                                  "messages", out->messages.value.offset);
    }
    if (out->messages_count == 0) {
        return json_semantic_fail(error, "The messages parameter must contain at least one message.",
                                  "messages", out->messages.value.offset);
    }
    return 0;
}

int json_object_find(const uint8_t *body, size_t length, const char *key, json_span_t *value,
                     json_type_t *type) {
    RW_ASSERT(body != NULL || length == 0);
    RW_ASSERT(key != NULL && value != NULL && type != NULL);
    if (length > JSON_BODY_LENGTH_MAX) {
        return -1;
    }
    json_reader_t reader;
    json_reader_init(&reader, body, length, NULL);
    json_skip_whitespace(&reader);
    if (json_at_end(&reader) || json_peek(&reader) != '{') {
        return -1;
    }
    reader.position++;
    json_skip_whitespace(&reader);
    if (!json_at_end(&reader) && json_peek(&reader) == '}') {
        return -1;
    }
    size_t key_length = strlen(key);
    bool found = false;
    for (;;) {
        uint32_t key_start = 0;
        uint32_t key_end = 0;
        if (json_scan_key(&reader, &key_start, &key_end) != 0) {
            return -1;
        }
        uint32_t value_start = reader.position;
        json_type_t value_type = JSON_TYPE_NONE;
        if (json_skip_value(&reader, 1, &value_type) != 0) {
            return -1;
        }
        if (json_key_equals(body + key_start, key_end - key_start, key, key_length)) {
            if (found) {
                return -2;
            }
            found = true;
            *value = json_span(value_start, reader.position);
            *type = value_type;
        }
        int more = json_scan_separator(&reader, '}', "");
        if (more < 0) {
            return -1;
        }
        if (more == 0) {
            return found ? 0 : -1;
        }
    }
}
