/* Decimal and money formatting without printf (the request path formats
 * numbers too), and the strict decimal parser the admin API and ringctl
 * share. */
#include "ringway/text.h"

/* Writes the digits of value, most significant first, at out; returns how
 * many (1 to 20). No NUL. */
static size_t text_digits(uint64_t value, char *out) {
    char reversed[20];
    size_t count = 0;
    do {
        reversed[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    for (size_t index = 0; index < count; index++) out[index] = reversed[count - 1 - index];
    return count;
}

/* The magnitude of value in unsigned arithmetic, so INT64_MIN works too. */
static uint64_t text_magnitude(int64_t value) { return value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value; }

size_t text_format_u64(uint64_t value, char out[static TEXT_DECIMAL_BYTES]) {
    size_t length = text_digits(value, out);
    out[length] = '\0';
    return length;
}

size_t text_format_i64(int64_t value, char out[static TEXT_DECIMAL_BYTES]) {
    size_t length = 0;
    if (value < 0) out[length++] = '-';
    length += text_digits(text_magnitude(value), out + length);
    RW_ASSERT(length < TEXT_DECIMAL_BYTES);
    out[length] = '\0';
    return length;
}

size_t text_format_money(int64_t micros, char out[static TEXT_MONEY_BYTES]) {
    uint64_t magnitude = text_magnitude(micros);
    uint64_t fraction = magnitude % TEXT_MICROS_PER_UNIT;
    size_t length = 0;
    if (micros < 0) out[length++] = '-';
    length += text_digits(magnitude / TEXT_MICROS_PER_UNIT, out + length);
    out[length++] = '.';
    for (uint64_t place = TEXT_MICROS_PER_UNIT / 10; place > 0; place /= 10) {
        out[length++] = (char)('0' + fraction / place % 10);
    }
    RW_ASSERT(length < TEXT_MONEY_BYTES);
    out[length] = '\0';
    return length;
}

bool text_parse_u64(const char *text, size_t length, uint64_t *value) {
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
