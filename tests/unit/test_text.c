/* Unit tests of src/text, linked against libc and src/text alone. The JSON
 * escaper and the UTF-8 validator are checked against small reference
 * implementations written differently here (decode the code point, then
 * judge it), over every byte value, every two- and three-byte sequence and
 * a seeded sample of four-byte ones; the buffer at every capacity from 0 up
 * to past the whole output, inside guard bytes; decimals and money against
 * printf. */
#include "ringway/text.h"

#include "unit.h"

#include <inttypes.h>
#include <stdlib.h>
#include <time.h>

/* ---- References ------------------------------------------------------------- */

/* The length of the well-formed sequence at bytes[0, length), or 0: decodes
 * by the lead's pattern, then judges the code point (shortest form, not a
 * surrogate, at most U+10FFFF). */
static size_t reference_sequence_length(const uint8_t *bytes, size_t length) {
    uint8_t lead = bytes[0];
    size_t need = 0;
    uint32_t code = 0;
    if (lead < 0x80) return 1;
    if ((lead & 0xE0) == 0xC0) {
        need = 2;
        code = lead & 0x1F;
    } else if ((lead & 0xF0) == 0xE0) {
        need = 3;
        code = lead & 0x0F;
    } else if ((lead & 0xF8) == 0xF0) {
        need = 4;
        code = lead & 0x07;
    } else {
        return 0;
    }
    if (length < need) return 0;
    for (size_t index = 1; index < need; index++) {
        if ((bytes[index] & 0xC0) != 0x80) return 0;
        code = code << 6 | (bytes[index] & 0x3F);
    }
    static const uint32_t shortest[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < shortest[need] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return 0;
    return need;
}

static bool reference_valid(const uint8_t *bytes, size_t length) {
    size_t index = 0;
    while (index < length) {
        size_t sequence = reference_sequence_length(bytes + index, length - index);
        if (sequence == 0) return false;
        index += sequence;
    }
    return true;
}

/* What text_buffer_json_escaped must write, built one input unit at a time
 * with snprintf. Returns the length written into out (large enough). */
static size_t reference_escape(const uint8_t *bytes, size_t length, char *out) {
    size_t written = 0;
    size_t index = 0;
    while (index < length) {
        uint8_t byte = bytes[index];
        size_t sequence = reference_sequence_length(bytes + index, length - index);
        if (byte == '"') {
            written += (size_t)sprintf(out + written, "\\\"");
        } else if (byte == '\\') {
            written += (size_t)sprintf(out + written, "\\\\");
        } else if (byte == '\n') {
            written += (size_t)sprintf(out + written, "\\n");
        } else if (byte == '\r') {
            written += (size_t)sprintf(out + written, "\\r");
        } else if (byte == '\t') {
            written += (size_t)sprintf(out + written, "\\t");
        } else if (byte < 0x20) {
            written += (size_t)sprintf(out + written, "\\u%04x", byte);
        } else if (sequence == 0) {
            written += (size_t)sprintf(out + written, "\\ufffd");
            sequence = 1;
        } else {
            memcpy(out + written, bytes + index, sequence);
            written += sequence;
        }
        index += sequence == 0 ? 1 : sequence;
    }
    return written;
}

/* Escapes bytes through the module into a buffer of exactly the room the
 * reference says it needs, and compares. */
static void check_escape(const uint8_t *bytes, size_t length) {
    static char expected[4096];
    static char actual[4096];
    RW_ASSERT(length * 6 <= sizeof expected);
    size_t expected_length = reference_escape(bytes, length, expected);
    text_buffer_t buffer = text_buffer_over(actual, expected_length);
    text_buffer_json_escaped(&buffer, (const char *)bytes, length);
    CHECK(!buffer.overflow);
    CHECK(buffer.length == expected_length && memcmp(actual, expected, expected_length) == 0);
    if (expected_length > 0) { /* one byte less does not fit */
        buffer = text_buffer_over(actual, expected_length - 1);
        text_buffer_json_escaped(&buffer, (const char *)bytes, length);
        CHECK(buffer.overflow);
    }
}

/* Encodes code point (any value below 2^21) in the UTF-8 pattern of its
 * natural length, without judging it: surrogates come out as ED A0..BF xx. */
static size_t encode(uint32_t code, uint8_t out[4]) {
    if (code < 0x80) {
        out[0] = (uint8_t)code;
        return 1;
    }
    if (code < 0x800) {
        out[0] = (uint8_t)(0xC0 | code >> 6);
        out[1] = (uint8_t)(0x80 | (code & 0x3F));
        return 2;
    }
    if (code < 0x10000) {
        out[0] = (uint8_t)(0xE0 | code >> 12);
        out[1] = (uint8_t)(0x80 | (code >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (code & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | code >> 18);
    out[1] = (uint8_t)(0x80 | (code >> 12 & 0x3F));
    out[2] = (uint8_t)(0x80 | (code >> 6 & 0x3F));
    out[3] = (uint8_t)(0x80 | (code & 0x3F));
    return 4;
}

/* ---- JSON escaping ---------------------------------------------------------- */

static void test_escape_every_byte(void) {
    for (unsigned value = 0; value < 256; value++) {
        uint8_t byte = (uint8_t)value;
        check_escape(&byte, 1);
        uint8_t framed[3] = {'a', byte, 'z'};
        check_escape(framed, 3);
    }
    /* The exact forms callers rely on (store and admin JSON, error bodies). */
    char memory[64];
    text_buffer_t buffer = text_buffer_over(memory, sizeof memory);
    text_buffer_json_string(&buffer, "a\"b\\c\nd\x01\xc3\xa9\r\t/\x7f", 14);
    CHECK_EQ_BYTES(memory, buffer.length, "\"a\\\"b\\\\c\\nd\\u0001\xc3\xa9\\r\\t/\x7f\"");
    buffer = text_buffer_over(memory, sizeof memory);
    text_buffer_json_string(&buffer, "", 0);
    CHECK_EQ_BYTES(memory, buffer.length, "\"\"");
}

static void test_escape_multibyte(void) {
    uint8_t bytes[4];
    /* Every code point below U+10000 (surrogates included: each of their
     * bytes becomes \ufffd), and every 64th one above, up to past U+10FFFF. */
    for (uint32_t code = 0x80; code < 0x10000; code++) check_escape(bytes, encode(code, bytes));
    for (uint32_t code = 0x10000; code < 0x140000; code += 64) check_escape(bytes, encode(code, bytes));
    /* Overlong, surrogate, beyond U+10FFFF, truncated, stray continuation. */
    static const struct {
        const char *input;
        const char *expected;
    } cases[] = {
        {"\xc0\x80", "\\ufffd\\ufffd"},
        {"\xe0\x80\xaf", "\\ufffd\\ufffd\\ufffd"},
        {"\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd"},
        {"\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd"},
        {"x\xe2\x82", "x\\ufffd\\ufffd"},
        {"\x80y", "\\ufffdy"},
        {"\xe2\x82\xac\xf0\x9f\x98\x80\xe2\x80\xa8", "\xe2\x82\xac\xf0\x9f\x98\x80\xe2\x80\xa8"},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        char memory[64];
        text_buffer_t buffer = text_buffer_over(memory, sizeof memory);
        text_buffer_json_escaped(&buffer, cases[index].input, strlen(cases[index].input));
        CHECK_EQ_BYTES(memory, buffer.length, cases[index].expected);
    }
}

/* Whatever the input, the output is UTF-8 without a raw control byte, a
 * lone backslash or an unescaped quote: a valid JSON string body. */
static void test_escape_random(void) {
    unit_random_t random = {0x7e57e5c4};
    for (int round = 0; round < 20000; round++) {
        uint8_t input[64];
        size_t length = unit_random_below(&random, sizeof input + 1);
        for (size_t index = 0; index < length; index++) input[index] = (uint8_t)unit_random_next(&random);
        check_escape(input, length);
        char output[64 * 6];
        text_buffer_t buffer = text_buffer_over(output, sizeof output);
        text_buffer_json_escaped(&buffer, (const char *)input, length);
        CHECK(!buffer.overflow && text_utf8_valid((const uint8_t *)output, buffer.length));
        for (size_t index = 0; index < buffer.length; index++) {
            CHECK((uint8_t)output[index] >= 0x20);
            if (output[index] == '"') CHECK(index > 0 && output[index - 1] == '\\');
            if (output[index] == '\\') index++; /* skip the escaped character */
        }
    }
}

/* ---- UTF-8 ------------------------------------------------------------------ */

static void check_utf8(const uint8_t *bytes, size_t length) {
    bool expected = reference_valid(bytes, length);
    if (text_utf8_valid(bytes, length) != expected) {
        unit_failures_in_test++;
        fprintf(stderr, "  UTF-8 of %zu bytes starting %02x %02x: expected %d\n", length, bytes[0],
                length > 1 ? bytes[1] : 0, expected);
    }
    if (length > 0) CHECK(text_utf8_sequence_length(bytes, length) == reference_sequence_length(bytes, length));
}

static void test_utf8_exhaustive(void) {
    uint8_t bytes[4];
    for (unsigned first = 0; first < 256; first++) {
        bytes[0] = (uint8_t)first;
        check_utf8(bytes, 1);
        for (unsigned second = 0; second < 256; second++) {
            bytes[1] = (uint8_t)second;
            check_utf8(bytes, 2);
            if (first < 0xE0 || first > 0xEF) continue;
            for (unsigned third = 0; third < 256; third++) {
                bytes[2] = (uint8_t)third;
                check_utf8(bytes, 3);
            }
        }
    }
    /* Four-byte leads (and the invalid F5..FF) with a seeded sample of the
     * rest, biased to the continuation range so valid ones come up. */
    unit_random_t random = {0x0ff5e7};
    for (int round = 0; round < 200000; round++) {
        bytes[0] = (uint8_t)(0xF0 + unit_random_below(&random, 16));
        for (size_t index = 1; index < 4; index++) {
            bytes[index] = unit_random_below(&random, 8) == 0 ? (uint8_t)unit_random_next(&random)
                                                              : (uint8_t)(0x80 + unit_random_below(&random, 64));
        }
        check_utf8(bytes, 4);
    }
    CHECK(text_utf8_valid((const uint8_t *)"", 0));
    CHECK(text_utf8_valid((const uint8_t *)"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 8)); /* U+10000, U+10FFFF */
    CHECK(!text_utf8_valid((const uint8_t *)"\xc0\xaf", 2));                        /* overlong '/' */
    CHECK(!text_utf8_valid((const uint8_t *)"\xe0\x9f\xbf", 3));                    /* overlong U+07FF */
    CHECK(!text_utf8_valid((const uint8_t *)"\xf0\x8f\xbf\xbf", 4));                /* overlong U+FFFF */
    CHECK(!text_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));                    /* U+D800 */
    CHECK(!text_utf8_valid((const uint8_t *)"\xed\xbf\xbf", 3));                    /* U+DFFF */
    CHECK(!text_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4));                /* U+110000 */
    CHECK(!text_utf8_valid((const uint8_t *)"\xe2\x82", 2));                        /* truncated */
}

/* Every code point, whole and cut after each byte: a prefix is valid
 * exactly when it ends on a sequence boundary. */
static void test_utf8_byte_by_byte(void) {
    static const uint32_t codes[] = {0x24, 0xA2, 0x7FF, 0x800, 0x20AC, 0xD7FF, 0xE000, 0xFFFD, 0x10000, 0x1F600, 0x10FFFF};
    uint8_t text[64];
    size_t length = 0;
    size_t boundaries[RW_ARRAY_LENGTH(codes) + 1] = {0};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(codes); index++) {
        length += encode(codes[index], text + length);
        boundaries[index + 1] = length;
    }
    CHECK(text_utf8_valid(text, length));
    for (size_t prefix = 0; prefix <= length; prefix++) {
        bool at_boundary = false;
        for (size_t index = 0; index < RW_ARRAY_LENGTH(boundaries); index++) {
            if (boundaries[index] == prefix) at_boundary = true;
        }
        /* An exactly sized copy, so a read past the length would show. */
        uint8_t *copy = malloc(prefix == 0 ? 1 : prefix);
        RW_ASSERT(copy != NULL);
        memcpy(copy, text, prefix);
        CHECK(text_utf8_valid(copy, prefix) == at_boundary);
        free(copy);
    }
}

/* ---- The bounded buffer ----------------------------------------------------- */

/* The same appends into any buffer: every kind the module has. */
static void append_everything(text_buffer_t *buffer) {
    text_buffer_text(buffer, "{\"name\":");
    text_buffer_json_string(buffer, "caf\xc3\xa9 \"q\"\n\x01\xff", 12);
    text_buffer_append(buffer, ",\"n\":", 5);
    text_buffer_u64(buffer, UINT64_MAX);
    text_buffer_append(buffer, ",", 1);
    text_buffer_i64(buffer, INT64_MIN);
    text_buffer_format(buffer, ",\"f\":\"%s-%d\"", "printf", 42);
    text_buffer_text(buffer, ",\"money\":\"");
    text_buffer_money(buffer, -1500001);
    text_buffer_text(buffer, "\"}");
}

static void test_buffer_every_capacity(void) {
    char whole[512];
    text_buffer_t reference = text_buffer_over(whole, sizeof whole);
    append_everything(&reference);
    CHECK(!reference.overflow);
    CHECK_EQ_BYTES(whole, reference.length,
                   "{\"name\":\"caf\xc3\xa9 \\\"q\\\"\\n\\u0001\\ufffd\",\"n\":18446744073709551615,"
                   "-9223372036854775808,\"f\":\"printf-42\",\"money\":\"-1.500001\"}");
    enum { GUARD = 16 };
    for (size_t capacity = 0; capacity <= reference.length + 2; capacity++) {
        char memory[512 + 2 * GUARD];
        memset(memory, 0xA5, sizeof memory);
        text_buffer_t buffer = text_buffer_over(memory + GUARD, capacity);
        append_everything(&buffer);
        bool fits = capacity >= reference.length;
        CHECK(buffer.overflow == !fits);
        CHECK(buffer.length <= capacity);
        /* What was written is a prefix of the whole: appends fit whole or not at all. */
        CHECK(memcmp(memory + GUARD, whole, buffer.length) == 0);
        CHECK_EQ_INT(text_buffer_result(&buffer), fits ? reference.length : 0);
        CHECK_EQ_INT(text_buffer_room(&buffer), fits ? capacity - reference.length : 0);
        for (size_t index = 0; index < GUARD; index++) CHECK((uint8_t)memory[index] == 0xA5);
        for (size_t index = GUARD + capacity; index < sizeof memory; index++) CHECK((uint8_t)memory[index] == 0xA5);
    }
    /* Sticky: once overflowed, even an append that would fit is refused. */
    char tiny[8];
    text_buffer_t small = text_buffer_over(tiny, sizeof tiny);
    text_buffer_text(&small, "12345");
    text_buffer_format(&small, "%d", 12345);
    CHECK(small.overflow);
    CHECK_EQ_INT(small.length, 5);
    text_buffer_text(&small, "x");
    CHECK_EQ_INT(small.length, 5);
    CHECK_EQ_INT(text_buffer_room(&small), 0);
    text_buffer_t empty = text_buffer_over(NULL, 0);
    text_buffer_append(&empty, "", 0);
    CHECK(!empty.overflow);
    text_buffer_format(&empty, "%s", "");
    CHECK(!empty.overflow);
    text_buffer_append(&empty, "x", 1);
    CHECK(empty.overflow && empty.length == 0);
}

/* ---- Numbers ---------------------------------------------------------------- */

static void test_decimal(void) {
    char text[TEXT_DECIMAL_BYTES];
    CHECK_EQ_BYTES(text, text_format_u64(0, text), "0");
    CHECK_EQ_BYTES(text, text_format_u64(UINT64_MAX, text), "18446744073709551615");
    CHECK_EQ_BYTES(text, text_format_i64(0, text), "0");
    CHECK_EQ_BYTES(text, text_format_i64(-1, text), "-1");
    CHECK_EQ_BYTES(text, text_format_i64(INT64_MAX, text), "9223372036854775807");
    CHECK_EQ_BYTES(text, text_format_i64(INT64_MIN, text), "-9223372036854775808");
    CHECK(text[20] == '\0');
    unit_random_t random = {0xdec1a1};
    for (int round = 0; round < 20000; round++) {
        uint64_t value = unit_random_next(&random) >> unit_random_below(&random, 64);
        char expected[32];
        snprintf(expected, sizeof expected, "%" PRIu64, value);
        CHECK_EQ_BYTES(text, text_format_u64(value, text), expected);
        CHECK(strlen(text) == strlen(expected));
        snprintf(expected, sizeof expected, "%" PRId64, (int64_t)value);
        CHECK_EQ_BYTES(text, text_format_i64((int64_t)value, text), expected);
    }

    uint64_t parsed = 0;
    CHECK(text_parse_u64("0", 1, &parsed) && parsed == 0);
    CHECK(text_parse_u64("18446744073709551", 17, &parsed) && parsed == 18446744073709551ULL);
    CHECK(text_parse_u64("9999999999999999999", 19, &parsed) && parsed == 9999999999999999999ULL);
    CHECK(!text_parse_u64("", 0, &parsed));
    CHECK(!text_parse_u64(NULL, 0, &parsed));
    CHECK(!text_parse_u64("01", 2, &parsed));
    CHECK(!text_parse_u64("1a", 2, &parsed));
    CHECK(!text_parse_u64("-1", 2, &parsed));
    CHECK(!text_parse_u64(" 1", 2, &parsed));
    CHECK(!text_parse_u64("12345678901234567890", 20, &parsed));
}

static void test_money(void) {
    static const struct {
        int64_t micros;
        const char *text;
    } cases[] = {
        {0, "0.000000"},
        {1, "0.000001"},
        {-1, "-0.000001"},
        {999999, "0.999999"},
        {1000000, "1.000000"},
        {1500000, "1.500000"},
        {-2000000, "-2.000000"},
        {1000000000000000, "1000000000.000000"},
        {INT64_MAX, "9223372036854.775807"},
        {INT64_MIN, "-9223372036854.775808"},
    };
    char text[TEXT_MONEY_BYTES];
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        size_t length = text_format_money(cases[index].micros, text);
        CHECK_EQ_BYTES(text, length, cases[index].text);
        CHECK(text[length] == '\0');
    }
    unit_random_t random = {0x30ae7};
    for (int round = 0; round < 20000; round++) {
        int64_t micros = (int64_t)(unit_random_next(&random) >> unit_random_below(&random, 64));
        if (unit_random_below(&random, 2) == 0) micros = -micros;
        uint64_t magnitude = micros < 0 ? (uint64_t)0 - (uint64_t)micros : (uint64_t)micros;
        char expected[48];
        snprintf(expected, sizeof expected, "%s%" PRIu64 ".%06" PRIu64, micros < 0 ? "-" : "", magnitude / 1000000,
                 magnitude % 1000000);
        CHECK_EQ_BYTES(text, text_format_money(micros, text), expected);
    }
}

/* ---- Time ------------------------------------------------------------------- */

static int64_t parse_time(const char *text) {
    int64_t ms = -1;
    if (!text_time_parse(text, strlen(text), &ms)) return -1;
    return ms;
}

static void test_time_parse(void) {
    CHECK_EQ_INT(parse_time("0"), 0);
    CHECK_EQ_INT(parse_time("1700000000123"), 1700000000123LL);
    CHECK_EQ_INT(parse_time("1970-01-01"), 0);
    CHECK_EQ_INT(parse_time("2026-11-23"), 1795392000000LL);
    CHECK_EQ_INT(parse_time("2000-02-29T12:30:15Z"), 951827415000LL);
    CHECK_EQ_INT(parse_time("2000-02-29T12:30:15.5Z"), 951827415500LL);
    CHECK_EQ_INT(parse_time("2000-02-29T12:30:15.123456789Z"), 951827415123LL);
    CHECK_EQ_INT(parse_time("2000-02-29t12:30:15z"), 951827415000LL);
    CHECK_EQ_INT(parse_time("2000-02-29 12:30"), 951827400000LL);
    CHECK_EQ_INT(parse_time("2000-02-29T14:30:15+02:00"), 951827415000LL);
    CHECK_EQ_INT(parse_time("2000-02-29T10:30:15-0200"), 951827415000LL);
    CHECK_EQ_INT(parse_time("9999-12-31T23:59:59.999Z"), 253402300799999LL);
    /* Refused: not a date, impossible days, out of range, trailing bytes. */
    const char *bad[] = {"",           "-1",           "1.5",         "2026-13-01",         "2026-02-29",
                         "1900-02-29", "1969-12-31",   "2026-1-01",   "2026-01-01T",        "2026-01-01T24:00",
                         "2026-01-01T12:60", "2026-01-01T12:00:60", "2026-01-01T12:00:00.Z", "2026-01-01T12:00Zx",
                         "2026-01-01X", "yesterday",   "1234567890123456", "1970-01-01T00:00:00+01:00",
                         "2026-01-01T12:00:00.1234567890Z", " 2026-01-01", "2026-01-01T12:00+2"};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(bad); index++) {
        int64_t ms = 12345;
        bool parsed = text_time_parse(bad[index], strlen(bad[index]), &ms);
        if (parsed) fprintf(stderr, "  accepted bad time '%s'\n", bad[index]);
        CHECK(!parsed);
        CHECK_EQ_INT(ms, 12345);
    }
}

static void test_time_format_round_trip(void) {
    char text[TEXT_TIME_BYTES];
    size_t length = text_time_format(0, text);
    CHECK_EQ_BYTES(text, length, "1970-01-01T00:00:00.000Z");
    length = text_time_format(951827415123LL, text);
    CHECK_EQ_BYTES(text, length, "2000-02-29T12:30:15.123Z");
    length = text_time_format(253402300799999LL, text);
    CHECK_EQ_BYTES(text, length, "9999-12-31T23:59:59.999Z");
    /* Every formatted time parses back to itself (seeded walk over 8000 years). */
    unit_random_t random = {42};
    for (int round = 0; round < 20000; round++) {
        int64_t ms = (int64_t)(unit_random_next(&random) % 253402300800000ULL);
        length = text_time_format(ms, text);
        CHECK_EQ_INT(length, 24);
        int64_t back = -1;
        CHECK(text_time_parse(text, length, &back));
        CHECK_EQ_INT(back, ms);
    }
}

/* The wall clock agrees with time() to within a second and a tick. */
static void test_wall_clock(void) {
    int64_t before_s = (int64_t)time(NULL);
    int64_t now_ms = text_wall_ms();
    int64_t after_s = (int64_t)time(NULL);
    CHECK(now_ms >= (before_s - 1) * 1000);
    CHECK(now_ms < (after_s + 2) * 1000);
    CHECK(text_wall_ms() >= now_ms);
}

int main(void) {
    RUN_TEST(test_escape_every_byte);
    RUN_TEST(test_escape_multibyte);
    RUN_TEST(test_escape_random);
    RUN_TEST(test_utf8_exhaustive);
    RUN_TEST(test_utf8_byte_by_byte);
    RUN_TEST(test_buffer_every_capacity);
    RUN_TEST(test_decimal);
    RUN_TEST(test_money);
    RUN_TEST(test_time_parse);
    RUN_TEST(test_time_format_round_trip);
    RUN_TEST(test_wall_clock);
    return UNIT_REPORT();
}
