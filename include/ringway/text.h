/* Text: the formatting helpers every module shares, with no dependency but
 * libc and common.h. A bounded output buffer (text-t.h) with appends for
 * bytes, text, printf formats, JSON strings, decimals and money; standalone
 * decimal, money and ISO 8601 formatting; UTF-8 validation; the wall clock.
 * Pure except text_wall_ms (reads the clock): no I/O, no allocation. */
#ifndef RINGWAY_TEXT_H
#define RINGWAY_TEXT_H

#include "ringway/text-t.h"

#include <stdarg.h>
#include <string.h>

/* ---- The bounded buffer (src/text/buffer.c) ---- */

/* A buffer over bytes[capacity] (bytes may be NULL only when capacity is 0),
 * empty, not overflowed. */
text_buffer_t text_buffer_over(void *bytes, size_t capacity);

/* Appends bytes[0, length); on overflow appends nothing and sets overflow.
 * Inline: most appends are a few bytes of punctuation or a name whose length
 * the compiler knows, and a call per append was most of their cost. */
static inline void text_buffer_append(text_buffer_t *buffer, const void *bytes, size_t length) {
    RW_ASSERT(buffer->length <= buffer->capacity);
    if (buffer->overflow) return;
    if (length > buffer->capacity - buffer->length) {
        buffer->overflow = true;
        return;
    }
    if (length > 0) memcpy(buffer->bytes + buffer->length, bytes, length);
    buffer->length += length;
}
/* Appends the NUL-terminated text (without its NUL). */
void text_buffer_text(text_buffer_t *buffer, const char *text);
/* Appends printf output. It needs one byte of room beyond its length
 * (vsnprintf's NUL, not kept); when that is not there it sets overflow and
 * the length stays (vsnprintf may have written inside the free room). */
void text_buffer_format(text_buffer_t *buffer, const char *format, ...) __attribute__((format(printf, 2, 3)));
void text_buffer_vformat(text_buffer_t *buffer, const char *format, va_list arguments)
    __attribute__((format(printf, 2, 0)));
/* Bytes still free; 0 once overflowed. */
size_t text_buffer_room(const text_buffer_t *buffer);
/* The length written, or 0 when the buffer overflowed. */
size_t text_buffer_result(const text_buffer_t *buffer);

/* Appends text[0, length) as the inside of a JSON string (no quotes), per
 * RFC 8259: '"' and '\\' backslash-escaped; \n, \r and \t as two-character
 * escapes; every other byte below 0x20 as \u00xx (lower-case hex); '/', DEL
 * and U+2028 / U+2029 as is (OpenAI's responses send them raw too); valid
 * UTF-8 sequences as is; every byte that does not start a valid sequence
 * (text_utf8_sequence_length) as \ufffd, so the output is always valid JSON.
 * At most 6 output bytes per input byte. */
void text_buffer_json_escaped(text_buffer_t *buffer, const char *text, size_t length);
/* The same between double quotes. */
void text_buffer_json_string(text_buffer_t *buffer, const char *text, size_t length);

/* Decimal integers: digits only, '-' first for a negative value. */
void text_buffer_u64(text_buffer_t *buffer, uint64_t value);
void text_buffer_i64(text_buffer_t *buffer, int64_t value);
/* Money as text_format_money writes it ("1.500000"). */
void text_buffer_money(text_buffer_t *buffer, int64_t micros);

/* ---- Numbers (src/text/number.c) ---- */

/* Writes value in decimal and a NUL; returns the length (1 to 20). */
size_t text_format_u64(uint64_t value, char out[static TEXT_DECIMAL_BYTES]);
/* The same with a leading '-' below zero; INT64_MIN works (1 to 20). */
size_t text_format_i64(int64_t value, char out[static TEXT_DECIMAL_BYTES]);
/* Micro-units as "[-]units.micros", always six fraction digits
 * ("-0.000001", "1.500000"), any int64_t; writes a NUL, returns the length. */
size_t text_format_money(int64_t micros, char out[static TEXT_MONEY_BYTES]);
/* Strict unsigned decimal: 1 to 19 digits, no sign, no space, no leading
 * zero except "0" itself. Returns false otherwise (so never above
 * 9999999999999999999, which fits); *value is written only on true. */
bool text_parse_u64(const char *text, size_t length, uint64_t *value);

/* ---- UTF-8 (src/text/utf8.c) ---- */

/* Length (1 to 4) of the well-formed UTF-8 sequence at bytes[0, length),
 * length >= 1; 0 when it is not one: a stray continuation or 0xC0, 0xC1,
 * 0xF5-0xFF lead, an overlong form, a surrogate (U+D800-U+DFFF), a code
 * point above U+10FFFF, or a sequence cut short by `length`. */
size_t text_utf8_sequence_length(const uint8_t *bytes, size_t length);
/* Whether all of bytes[0, length) is well-formed UTF-8 (empty is). */
bool text_utf8_valid(const uint8_t *bytes, size_t length);

/* ---- Time (src/text/time.c) ---- */

/* Milliseconds since the epoch from CLOCK_REALTIME (see time.c for why not
 * time()). */
int64_t text_wall_ms(void);

/* Writes ms (>= 0) as ISO 8601 / RFC 3339 UTC "YYYY-MM-DDTHH:MM:SS.mmmZ"
 * and a NUL; returns the length (24 up to year 9999). */
size_t text_time_format(int64_t ms, char out[static TEXT_TIME_BYTES]);

/* Parses a point in time into milliseconds since the epoch (UTC): either
 * 1 to 15 decimal digits (milliseconds as is), or ISO 8601 / RFC 3339
 * "YYYY-MM-DD" (midnight UTC) optionally followed by 'T' or ' ', "HH:MM",
 * optionally ":SS" and a fraction of 1 to 9 digits (milliseconds kept,
 * the rest cut), and an optional zone "Z" or "+HH:MM" / "-HH:MM" (UTC when
 * absent). Years 1970 to 9999, real calendar days (leap years), hours
 * 0-23, seconds 0-59. Returns false for anything else or a time before the
 * epoch; *ms is written only on true. */
bool text_time_parse(const char *text, size_t length, int64_t *ms);

#endif
