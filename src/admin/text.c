/* Text helpers shared by the admin API and ringctl that are theirs alone:
 * CSV fields, query strings and percent-decoding, and a JSON array walker.
 * The general ones (the output buffer, JSON strings, numbers, money, time
 * stamps, UTF-8) are in src/text. Pure: no I/O, no allocation. */
#include "ringway/admin-text.h"

#include "ringway/text.h"

#include <string.h>

/* ---- CSV ------------------------------------------------------------------- */

void admin_csv_field(text_buffer_t *buffer, const char *text, size_t length) {
    bool quote = length > 0 && (text[0] == ' ' || text[length - 1] == ' ');
    for (size_t index = 0; index < length && !quote; index++) {
        char c = text[index];
        quote = c == ',' || c == '"' || c == '\r' || c == '\n';
    }
    if (!quote) {
        text_buffer_append(buffer, text, length);
        return;
    }
    text_buffer_append(buffer, "\"", 1);
    size_t run = 0;
    for (size_t index = 0; index < length; index++) {
        if (text[index] != '"') continue;
        text_buffer_append(buffer, text + run, index + 1 - run); /* through the quote ... */
        text_buffer_append(buffer, "\"", 1);                      /* ... doubled */
        run = index + 1;
    }
    text_buffer_append(buffer, text + run, length - run);
    text_buffer_append(buffer, "\"", 1);
}

/* ---- Query strings, percent-decoding ----------------------------------------- */

static int admin_hex_value(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool admin_url_decode(const uint8_t *input, size_t length, bool plus_is_space, char *out, size_t capacity,
                      size_t *out_length) {
    RW_ASSERT(out != NULL && capacity > 0);
    size_t written = 0;
    for (size_t index = 0; index < length; index++) {
        uint8_t byte = input[index];
        if (byte == '%') {
            if (length - index < 3) return false;
            int high = admin_hex_value(input[index + 1]);
            int low = admin_hex_value(input[index + 2]);
            if (high < 0 || low < 0) return false;
            byte = (uint8_t)(high * 16 + low);
            index += 2;
        } else if (byte == '+' && plus_is_space) {
            byte = ' ';
        }
        if (byte == '\0' || written + 1 >= capacity) return false;
        out[written++] = (char)byte;
    }
    out[written] = '\0';
    if (out_length != NULL) *out_length = written;
    return true;
}

int admin_query_find(const uint8_t *query, size_t length, const char *name, const uint8_t **value,
                     size_t *value_length) {
    size_t name_length = strlen(name);
    int found = -1;
    size_t position = 0;
    while (position < length) {
        size_t end = position;
        while (end < length && query[end] != '&') end++;
        const uint8_t *pair = query + position;
        size_t pair_length = end - position;
        const uint8_t *equals = memchr(pair, '=', pair_length);
        size_t key_length = equals != NULL ? (size_t)(equals - pair) : pair_length;
        if (key_length == name_length && memcmp(pair, name, name_length) == 0) {
            if (found == 0) return -2;
            found = 0;
            *value = equals != NULL ? equals + 1 : pair + pair_length;
            *value_length = equals != NULL ? pair_length - key_length - 1 : 0;
        }
        position = end + 1;
    }
    return found;
}

/* ---- Walking a JSON array ------------------------------------------------------ */

static size_t admin_json_skip_space(const uint8_t *document, size_t end, size_t position) {
    while (position < end && (document[position] == ' ' || document[position] == '\t' ||
                              document[position] == '\n' || document[position] == '\r')) {
        position++;
    }
    return position;
}

/* The end of the value starting at `position`, or 0 when it does not end
 * before `end`. Assumes well-formed JSON; on anything else it still stays
 * inside [position, end). */
static size_t admin_json_skip_value(const uint8_t *document, size_t end, size_t position) {
    if (position >= end) return 0;
    uint8_t first = document[position];
    if (first != '"' && first != '{' && first != '[') {
        size_t scan = position;
        while (scan < end && document[scan] != ',' && document[scan] != ']' && document[scan] != '}' &&
               document[scan] != ' ' && document[scan] != '\t' && document[scan] != '\n' && document[scan] != '\r') {
            scan++;
        }
        return scan > position ? scan : 0;
    }
    uint32_t depth = 0;
    bool in_string = false;
    for (size_t scan = position; scan < end; scan++) {
        uint8_t byte = document[scan];
        if (in_string) {
            if (byte == '\\') {
                scan++;
            } else if (byte == '"') {
                in_string = false;
                if (depth == 0) return scan + 1;
            }
            continue;
        }
        if (byte == '"') {
            in_string = true;
        } else if (byte == '{' || byte == '[') {
            depth++;
        } else if (byte == '}' || byte == ']') {
            if (depth == 0) return 0;
            depth--;
            if (depth == 0) return scan + 1;
        }
    }
    return 0;
}

bool admin_json_array_next(const uint8_t *document, size_t length, json_span_t array, uint32_t *cursor,
                           json_span_t *element) {
    if ((size_t)array.offset + array.length > length || array.length < 2 || document[array.offset] != '[') {
        return false;
    }
    size_t end = (size_t)array.offset + array.length - 1; /* the closing ']' */
    if (document[end] != ']') return false;
    size_t position = *cursor == 0 ? (size_t)array.offset + 1 : *cursor;
    if (position <= array.offset || position > end) return false;
    bool first = position == (size_t)array.offset + 1;
    position = admin_json_skip_space(document, end, position);
    if (position >= end) return false;
    if (!first) {
        if (document[position] != ',') return false;
        position = admin_json_skip_space(document, end, position + 1);
    }
    size_t value_end = admin_json_skip_value(document, end, position);
    if (value_end == 0) return false;
    element->offset = (uint32_t)position;
    element->length = (uint32_t)(value_end - position);
    *cursor = (uint32_t)value_end;
    return true;
}
