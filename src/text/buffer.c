/* The bounded output buffer and the appends built on it. Every append goes
 * through text_buffer_append, the one place that checks the room, so no
 * formatter here can write past the capacity. */
#include "ringway/text.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

text_buffer_t text_buffer_over(void *bytes, size_t capacity) {
    RW_ASSERT(bytes != NULL || capacity == 0);
    return (text_buffer_t){.bytes = bytes, .capacity = capacity, .length = 0, .overflow = false};
}

void text_buffer_text(text_buffer_t *buffer, const char *text) { text_buffer_append(buffer, text, strlen(text)); }

void text_buffer_vformat(text_buffer_t *buffer, const char *format, va_list arguments) {
    if (buffer->overflow) return;
    size_t room = buffer->capacity - buffer->length;
    /* With room 0 vsnprintf writes nothing, so bytes + length is never used.
     * It always ends with a NUL, so a result of `room` bytes was cut by one. */
    int written = vsnprintf(room > 0 ? buffer->bytes + buffer->length : NULL, room, format, arguments);
    if (written < 0 || (written > 0 && (size_t)written >= room)) {
        buffer->overflow = true;
        return;
    }
    buffer->length += (size_t)written;
}

void text_buffer_format(text_buffer_t *buffer, const char *format, ...) {
    va_list arguments;
    va_start(arguments, format);
    text_buffer_vformat(buffer, format, arguments);
    va_end(arguments);
}

size_t text_buffer_room(const text_buffer_t *buffer) {
    return buffer->overflow ? 0 : buffer->capacity - buffer->length;
}

size_t text_buffer_result(const text_buffer_t *buffer) { return buffer->overflow ? 0 : buffer->length; }

void text_buffer_json_escaped(text_buffer_t *buffer, const char *text, size_t length) {
    static const char hex[] = "0123456789abcdef";
    const uint8_t *bytes = (const uint8_t *)text;
    size_t run = 0; /* text[run, index) needs no escape and is not yet appended */
    size_t index = 0;
    while (index < length) {
        uint8_t byte = bytes[index];
        if (byte >= 0x80) {
            size_t sequence = text_utf8_sequence_length(bytes + index, length - index);
            if (sequence > 0) {
                index += sequence;
                continue;
            }
            text_buffer_append(buffer, text + run, index - run);
            text_buffer_append(buffer, "\\ufffd", 6);
            run = ++index;
            continue;
        }
        if (byte != '"' && byte != '\\' && byte >= 0x20) {
            index++;
            continue;
        }
        text_buffer_append(buffer, text + run, index - run);
        if (byte == '"' || byte == '\\') {
            char pair[2] = {'\\', (char)byte};
            text_buffer_append(buffer, pair, 2);
        } else if (byte == '\n') {
            text_buffer_append(buffer, "\\n", 2);
        } else if (byte == '\r') {
            text_buffer_append(buffer, "\\r", 2);
        } else if (byte == '\t') {
            text_buffer_append(buffer, "\\t", 2);
        } else {
            char escape[6] = {'\\', 'u', '0', '0', hex[byte >> 4], hex[byte & 15]};
            text_buffer_append(buffer, escape, 6);
        }
        run = ++index;
    }
    text_buffer_append(buffer, text + run, length - run);
}

void text_buffer_json_string(text_buffer_t *buffer, const char *text, size_t length) {
    text_buffer_append(buffer, "\"", 1);
    text_buffer_json_escaped(buffer, text, length);
    text_buffer_append(buffer, "\"", 1);
}

void text_buffer_u64(text_buffer_t *buffer, uint64_t value) {
    char digits[TEXT_DECIMAL_BYTES];
    text_buffer_append(buffer, digits, text_format_u64(value, digits));
}

void text_buffer_i64(text_buffer_t *buffer, int64_t value) {
    char digits[TEXT_DECIMAL_BYTES];
    text_buffer_append(buffer, digits, text_format_i64(value, digits));
}

void text_buffer_money(text_buffer_t *buffer, int64_t micros) {
    char money[TEXT_MONEY_BYTES];
    text_buffer_append(buffer, money, text_format_money(micros, money));
}
