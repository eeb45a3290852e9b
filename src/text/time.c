/* Time: the wall clock and ISO 8601 / RFC 3339 time stamps in UTC, as the
 * admin API writes them and ringctl reads and writes them. */
#include "ringway/text.h"

#include <stdio.h>
#include <time.h>

/* CLOCK_REALTIME, not time(): glibc's time() reads the coarse clock
 * (CLOCK_REALTIME_COARSE), which can lag up to a tick behind, so a time
 * stamp taken with it may be earlier than one another thread just took
 * with clock_gettime (JWT expiry, usage ordering). */
int64_t text_wall_ms(void) {
    struct timespec now;
    int status = clock_gettime(CLOCK_REALTIME, &now);
    RW_ASSERT(status == 0);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (the
 * "days from civil" algorithm: years counted from March so the leap day
 * ends a year, 400-year eras of 146097 days). */
static int64_t text_days_from_civil(int64_t year, uint32_t month, uint32_t day) {
    year -= month <= 2;
    int64_t era = (year >= 0 ? year : year - 399) / 400;
    uint32_t year_of_era = (uint32_t)(year - era * 400);
    uint32_t day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
    uint32_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + (int64_t)day_of_era - 719468;
}

static void text_civil_from_days(int64_t days, int64_t *year, uint32_t *month, uint32_t *day) {
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

static bool text_is_leap_year(int64_t year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

static uint32_t text_days_in_month(int64_t year, uint32_t month) {
    static const uint8_t days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return month == 2 && text_is_leap_year(year) ? 29 : days[month - 1];
}

/* Exactly `count` digits at text[*position]; advances past them. */
static bool text_time_digits(const char *text, size_t length, size_t *position, size_t count, uint32_t *value) {
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

static bool text_time_expect(const char *text, size_t length, size_t *position, char expected) {
    if (*position >= length || text[*position] != expected) return false;
    (*position)++;
    return true;
}

bool text_time_parse(const char *text, size_t length, int64_t *ms) {
    if (text == NULL || length == 0) return false;
    bool all_digits = true;
    for (size_t index = 0; index < length && all_digits; index++) all_digits = text[index] >= '0' && text[index] <= '9';
    if (all_digits) {
        if (length > 15) return false;
        uint64_t value = 0;
        if (!text_parse_u64(text, length, &value)) return false;
        *ms = (int64_t)value;
        return true;
    }

    size_t position = 0;
    uint32_t year = 0, month = 0, day = 0;
    if (!text_time_digits(text, length, &position, 4, &year) || !text_time_expect(text, length, &position, '-') ||
        !text_time_digits(text, length, &position, 2, &month) || !text_time_expect(text, length, &position, '-') ||
        !text_time_digits(text, length, &position, 2, &day)) {
        return false;
    }
    if (year < 1970 || month < 1 || month > 12 || day < 1 || day > text_days_in_month(year, month)) return false;
    int64_t result_ms = text_days_from_civil(year, month, day) * 86400000;
    if (position < length) {
        if (text[position] != 'T' && text[position] != 't' && text[position] != ' ') return false;
        position++;
        uint32_t hour = 0, minute = 0, second = 0;
        if (!text_time_digits(text, length, &position, 2, &hour) || !text_time_expect(text, length, &position, ':') ||
            !text_time_digits(text, length, &position, 2, &minute)) {
            return false;
        }
        if (position < length && text[position] == ':') {
            position++;
            if (!text_time_digits(text, length, &position, 2, &second)) return false;
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
                if (!text_time_digits(text, length, &position, 2, &zone_hour)) return false;
                if (position < length && text[position] == ':') position++;
                if (!text_time_digits(text, length, &position, 2, &zone_minute)) return false;
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

size_t text_time_format(int64_t ms, char out[static TEXT_TIME_BYTES]) {
    RW_ASSERT(ms >= 0);
    int64_t days = ms / 86400000;
    int64_t in_day_ms = ms % 86400000;
    int64_t year = 0;
    uint32_t month = 0, day = 0;
    text_civil_from_days(days, &year, &month, &day);
    int written = snprintf(out, TEXT_TIME_BYTES, "%04lld-%02u-%02uT%02u:%02u:%02u.%03uZ", (long long)year, month,
                           day, (unsigned)(in_day_ms / 3600000), (unsigned)(in_day_ms / 60000 % 60),
                           (unsigned)(in_day_ms / 1000 % 60), (unsigned)(in_day_ms % 1000));
    RW_ASSERT(written > 0 && written < TEXT_TIME_BYTES);
    return (size_t)written;
}
