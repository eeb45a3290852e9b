/* The text helpers the admin API shares with ringctl (src/admin/text.c):
 * CSV fields, percent-decoding and query strings, a JSON array walker. The
 * general ones (text_buffer_t, JSON strings, money, time stamps, UTF-8) are
 * in text.h. Pure: ringctl includes this instead of admin.h, so it needs
 * none of the control thread's headers. */
#ifndef RINGWAY_ADMIN_TEXT_H
#define RINGWAY_ADMIN_TEXT_H

#include "ringway/common.h"
#include "ringway/json-t.h"
#include "ringway/text-t.h"

/* A CSV field per RFC 4180: quoted (with '"' doubled) when it holds a comma,
 * a quote, CR or LF, or starts or ends with a space; as is otherwise. */
void admin_csv_field(text_buffer_t *buffer, const char *text, size_t length);

/* Decodes application/x-www-form-urlencoded / percent-encoding: "%XX" (hex,
 * any case) and, when plus_is_space, '+' as a space. Writes a NUL. Returns
 * false for a bad or truncated escape, a decoded NUL byte, or a result that
 * does not fit with its NUL in capacity. */
bool admin_url_decode(const uint8_t *input, size_t length, bool plus_is_space, char *out, size_t capacity,
                      size_t *out_length);

/* Finds parameter `name` in a query string "a=1&b=2" (names compared as
 * sent, not decoded; a parameter without '=' has an empty value). Returns 0
 * with *value / *value_length set (still encoded), -1 when absent, -2 when
 * it occurs more than once. */
int admin_query_find(const uint8_t *query, size_t length, const char *name, const uint8_t **value,
                     size_t *value_length);

/* Walks the elements of a JSON array inside a document json_validate
 * accepted: `array` is the array's span (e.g. from json_object_find), and
 * *cursor starts at 0. Each call sets *element to the next element's span
 * and returns true, or returns false after the last one (or on bytes that
 * are not a well-formed array: safe on any input). */
bool admin_json_array_next(const uint8_t *document, size_t length, json_span_t array, uint32_t *cursor,
                           json_span_t *element);

#endif
