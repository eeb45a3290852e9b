/* Text helpers shared by the admin API and ringctl: a bounded output buffer,
 * JSON strings and CSV fields, money, ISO 8601 time stamps, query strings and
 * percent-decoding, UTF-8 validation and a JSON array walker. Pure: no I/O,
 * no allocation. */
#include "ringway/admin.h"

#include "ringway/ledger.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- The output buffer ------------------------------------------------------ */

void admin_buffer_append(admin_buffer_t *buffer, const void *bytes, size_t length) {
    if (buffer->overflow) return;
    if (length > buffer->capacity - buffer->length) {
        buffer->overflow = true;
        return;
    }
    if (length > 0) memcpy(buffer->bytes + buffer->length, bytes, length);
    buffer->length += length;
}

void admin_buffer_text(admin_buffer_t *buffer, const char *text) { admin_buffer_append(buffer, text, strlen(text)); }

void admin_buffer_format(admin_buffer_t *buffer, const char *format, ...) {
    if (buffer->overflow) return;
    size_t room = buffer->capacity - buffer->length;
    va_list arguments;
    va_start(arguments, format);
    int written = vsnprintf(buffer->bytes + buffer->length, room, format, arguments);
    va_end(arguments);
    if (written < 0 || (size_t)written >= room) {
        buffer->overflow = true;
        return;
    }
    buffer->length += (size_t)written;
}

size_t admin_buffer_room(const admin_buffer_t *buffer) {
    return buffer->overflow ? 0 : buffer->capacity - buffer->length;
}

void admin_buffer_json_string(admin_buffer_t *buffer, const char *text, size_t length) {
    static const char hex[] = "0123456789abcdef";
    admin_buffer_append(buffer, "\"", 1);
    size_t run = 0; /* bytes of text[run, index) that need no escape */
    for (size_t index = 0; index < length; index++) {
        uint8_t byte = (uint8_t)text[index];
        if (byte != '"' && byte != '\\' && byte >= 0x20) continue;
        admin_buffer_append(buffer, text + run, index - run);
        run = index + 1;
        if (byte == '"' || byte == '\\') {
            char pair[2] = {'\\', (char)byte};
            admin_buffer_append(buffer, pair, 2);
        } else if (byte == '\n') {
            admin_buffer_append(buffer, "\\n", 2);
        } else if (byte == '\r') {
            admin_buffer_append(buffer, "\\r", 2);
        } else if (byte == '\t') {
            admin_buffer_append(buffer, "\\t", 2);
        } else {
            char escape[6] = {'\\', 'u', '0', '0', hex[byte >> 4], hex[byte & 15]};
            admin_buffer_append(buffer, escape, 6);
        }
    }
    admin_buffer_append(buffer, text + run, length - run);
    admin_buffer_append(buffer, "\"", 1);
}

void admin_buffer_csv_field(admin_buffer_t *buffer, const char *text, size_t length) {
    bool quote = length > 0 && (text[0] == ' ' || text[length - 1] == ' ');
    for (size_t index = 0; index < length && !quote; index++) {
        char c = text[index];
        quote = c == ',' || c == '"' || c == '\r' || c == '\n';
    }
    if (!quote) {
        admin_buffer_append(buffer, text, length);
        return;
    }
    admin_buffer_append(buffer, "\"", 1);
    size_t run = 0;
    for (size_t index = 0; index < length; index++) {
        if (text[index] != '"') continue;
        admin_buffer_append(buffer, text + run, index + 1 - run); /* through the quote ... */
        admin_buffer_append(buffer, "\"", 1);                      /* ... doubled */
        run = index + 1;
    }
    admin_buffer_append(buffer, text + run, length - run);
    admin_buffer_append(buffer, "\"", 1);
}

void admin_buffer_money(admin_buffer_t *buffer, int64_t micros) {
    char text[LEDGER_MONEY_TEXT_BYTES];
    size_t length = ledger_format_money(micros, text, sizeof text);
    admin_buffer_append(buffer, text, length);
}

/* ---- Time ------------------------------------------------------------------- */

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (the
 * "days from civil" algorithm: years counted from March so the leap day
 * ends a year, 400-year eras of 146097 days). */
static int64_t admin_days_from_civil(int64_t year, uint32_t month, uint32_t day) {
    year -= month <= 2;
    int64_t era = (year >= 0 ? year : year - 399) / 400;
    uint32_t year_of_era = (uint32_t)(year - era * 400);
    uint32_t day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
    uint32_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + (int64_t)day_of_era - 719468;
}

static void admin_civil_from_days(int64_t days, int64_t *year, uint32_t *month, uint32_t *day) {
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    uint32_t day_of_era = (uint32_t)(days - era * 146097);
    uint32_t year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
    uint32_t day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    uint32_t shifted_month = (5 * day_of_year + 2) / 153;
    *day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    *month = shifted_month < 10 ? shifted_month + 3 : shifted_month - 9;
    *year = (int64_t)year_of_era + era * 400 + (*month <= 2);
}

static bool admin_is_leap_year(int64_t year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

static uint32_t admin_days_in_month(int64_t year, uint32_t month) {
    static const uint8_t days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return month == 2 && admin_is_leap_year(year) ? 29 : days[month - 1];
}

/* Exactly `count` digits at text[*position]; advances past them. */
static bool admin_digits(const char *text, size_t length, size_t *position, size_t count, uint32_t *value) {
    if (length - *position < count) return false;
    uint32_t result = 0;
    for (size_t index = 0; index < count; index++) {
        char c = text[*position + index];
        if (c < '0' || c > '9') return false;
        result = result * 10 + (uint32_t)(c - '0');
    }
    *position += count;
    *value = result;
    return true;
}

static bool admin_expect(const char *text, size_t length, size_t *position, char expected) {
    if (*position >= length || text[*position] != expected) return false;
    (*position)++;
    return true;
}

bool admin_time_parse(const char *text, size_t length, int64_t *ms) {
    if (text == NULL || length == 0) return false;
    bool all_digits = true;
    for (size_t index = 0; index < length && all_digits; index++) all_digits = text[index] >= '0' && text[index] <= '9';
    if (all_digits) {
        if (length > 15) return false;
        uint64_t value = 0;
        if (!admin_parse_u64(text, length, &value)) return false;
        *ms = (int64_t)value;
        return true;
    }

    size_t position = 0;
    uint32_t year = 0, month = 0, day = 0;
    if (!admin_digits(text, length, &position, 4, &year) || !admin_expect(text, length, &position, '-') ||
        !admin_digits(text, length, &position, 2, &month) || !admin_expect(text, length, &position, '-') ||
        !admin_digits(text, length, &position, 2, &day)) {
        return false;
    }
    if (year < 1970 || month < 1 || month > 12 || day < 1 || day > admin_days_in_month(year, month)) return false;
    int64_t result_ms = admin_days_from_civil(year, month, day) * 86400000;
    if (position < length) {
        if (text[position] != 'T' && text[position] != 't' && text[position] != ' ') return false;
        position++;
        uint32_t hour = 0, minute = 0, second = 0;
        if (!admin_digits(text, length, &position, 2, &hour) || !admin_expect(text, length, &position, ':') ||
            !admin_digits(text, length, &position, 2, &minute)) {
            return false;
        }
        if (position < length && text[position] == ':') {
            position++;
            if (!admin_digits(text, length, &position, 2, &second)) return false;
            if (position < length && (text[position] == '.' || text[position] == ',')) {
                position++;
                size_t digits = 0;
                uint32_t fraction_ms = 0;
                while (position < length && text[position] >= '0' && text[position] <= '9') {
                    if (digits < 3) fraction_ms = fraction_ms * 10 + (uint32_t)(text[position] - '0');
                    digits++;
                    position++;
                }
                if (digits == 0 || digits > 9) return false;
                for (size_t pad = digits; pad < 3; pad++) fraction_ms *= 10;
                result_ms += fraction_ms;
            }
        }
        if (hour > 23 || minute > 59 || second > 59) return false;
        result_ms += ((int64_t)hour * 3600 + (int64_t)minute * 60 + second) * 1000;
        if (position < length) {
            char zone = text[position++];
            if (zone == 'Z' || zone == 'z') {
                if (position != length) return false;
            } else if (zone == '+' || zone == '-') {
                uint32_t zone_hour = 0, zone_minute = 0;
                if (!admin_digits(text, length, &position, 2, &zone_hour)) return false;
                if (position < length && text[position] == ':') position++;
                if (!admin_digits(text, length, &position, 2, &zone_minute)) return false;
                if (position != length || zone_hour > 23 || zone_minute > 59) return false;
                int64_t offset_ms = ((int64_t)zone_hour * 60 + zone_minute) * 60000;
                /* Local time = UTC + offset, so UTC = local - offset. */
                result_ms += zone == '+' ? -offset_ms : offset_ms;
            } else {
                return false;
            }
        }
    }
    if (result_ms < 0) return false;
    *ms = result_ms;
    return true;
}

size_t admin_time_format(int64_t ms, char out[static ADMIN_TIME_TEXT_BYTES]) {
    RW_ASSERT(ms >= 0);
    int64_t days = ms / 86400000;
    int64_t in_day_ms = ms % 86400000;
    int64_t year = 0;
    uint32_t month = 0, day = 0;
    admin_civil_from_days(days, &year, &month, &day);
    int written = snprintf(out, ADMIN_TIME_TEXT_BYTES, "%04lld-%02u-%02uT%02u:%02u:%02u.%03uZ", (long long)year, month,
                           day, (unsigned)(in_day_ms / 3600000), (unsigned)(in_day_ms / 60000 % 60),
                           (unsigned)(in_day_ms / 1000 % 60), (unsigned)(in_day_ms % 1000));
    RW_ASSERT(written > 0 && written < ADMIN_TIME_TEXT_BYTES);
    return (size_t)written;
}

/* ---- Numbers, query strings, percent-decoding --------------------------------- */

bool admin_parse_u64(const char *text, size_t length, uint64_t *value) {
    if (text == NULL || length == 0 || length > 19) return false;
    if (length > 1 && text[0] == '0') return false;
    uint64_t result = 0;
    for (size_t index = 0; index < length; index++) {
        if (text[index] < '0' || text[index] > '9') return false;
        result = result * 10 + (uint64_t)(text[index] - '0');
    }
    *value = result;
    return true;
}

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

/* ---- UTF-8 ------------------------------------------------------------------- */

bool admin_utf8_valid(const uint8_t *bytes, size_t length) {
    size_t index = 0;
    while (index < length) {
        uint8_t lead = bytes[index];
        if (lead < 0x80) {
            index++;
            continue;
        }
        size_t extra = 0;
        uint32_t code = 0;
        uint32_t minimum = 0;
        if (lead >= 0xC2 && lead <= 0xDF) {
            extra = 1;
            code = lead & 0x1F;
            minimum = 0x80;
        } else if (lead >= 0xE0 && lead <= 0xEF) {
            extra = 2;
            code = lead & 0x0F;
            minimum = 0x800;
        } else if (lead >= 0xF0 && lead <= 0xF4) {
            extra = 3;
            code = lead & 0x07;
            minimum = 0x10000;
        } else {
            return false;
        }
        if (length - index - 1 < extra) return false;
        for (size_t next = 1; next <= extra; next++) {
            uint8_t continuation = bytes[index + next];
            if ((continuation & 0xC0) != 0x80) return false;
            code = (code << 6) | (continuation & 0x3F);
        }
        if (code < minimum || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
        index += extra + 1;
    }
    return true;
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
