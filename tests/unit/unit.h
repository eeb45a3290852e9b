/* A minimal unit-test harness: each TEST is a function; CHECK records a failure
 * with its place and keeps going; UNIT_MAIN runs the listed tests and prints
 * "N passed, N failed" as its last line, which tests/run_tests.py adds up. */
#ifndef RINGWAY_UNIT_H
#define RINGWAY_UNIT_H

#include "ringway/common.h"

#include <stdio.h>
#include <string.h>

static int unit_failures_in_test;
static int unit_tests_passed;
static int unit_tests_failed;

#define CHECK(condition)                                                                 \
    do {                                                                                 \
        if (!(condition)) {                                                              \
            unit_failures_in_test++;                                                     \
            fprintf(stderr, "  CHECK failed: %s (%s:%d)\n", #condition, __FILE__, __LINE__); \
        }                                                                                \
    } while (0)

#define CHECK_EQ_INT(actual, expected)                                                   \
    do {                                                                                 \
        long long unit_actual_ = (long long)(actual);                                    \
        long long unit_expected_ = (long long)(expected);                                \
        if (unit_actual_ != unit_expected_) {                                            \
            unit_failures_in_test++;                                                     \
            fprintf(stderr, "  CHECK failed: %s == %lld, got %lld (%s:%d)\n", #actual,   \
                    unit_expected_, unit_actual_, __FILE__, __LINE__);                   \
        }                                                                                \
    } while (0)

#define CHECK_EQ_BYTES(actual, actual_length, expected)                                  \
    do {                                                                                 \
        size_t unit_expected_length_ = strlen(expected);                                 \
        if ((size_t)(actual_length) != unit_expected_length_ ||                          \
            memcmp((actual), (expected), unit_expected_length_) != 0) {                  \
            unit_failures_in_test++;                                                     \
            fprintf(stderr, "  CHECK failed: %s == \"%s\", got \"%.*s\" (%s:%d)\n",      \
                    #actual, (expected), (int)(actual_length), (const char *)(actual),   \
                    __FILE__, __LINE__);                                                 \
        }                                                                                \
    } while (0)

#define RUN_TEST(function)                                                               \
    do {                                                                                 \
        unit_failures_in_test = 0;                                                       \
        function();                                                                      \
        if (unit_failures_in_test == 0) {                                                \
            unit_tests_passed++;                                                         \
        } else {                                                                         \
            unit_tests_failed++;                                                         \
            fprintf(stderr, "FAIL %s\n", #function);                                     \
        }                                                                                \
    } while (0)

/* The tests' one pseudo-random generator: xorshift64* (Marsaglia's
 * xorshift with shifts 12, 25, 27 and Vigna's multiplier), deterministic for
 * a given seed so a failing run replays. The state must not be 0. */
typedef struct unit_random {
    uint64_t state;
} unit_random_t;

static inline uint64_t unit_random_next(unit_random_t *random) {
    uint64_t x = random->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    random->state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* A number in [0, bound), bound > 0 (modulo: a slight bias is fine here). */
static inline size_t unit_random_below(unit_random_t *random, size_t bound) {
    RW_ASSERT(bound > 0);
    return (size_t)(unit_random_next(random) % bound);
}

#define UNIT_REPORT()                                                                    \
    (printf("%d passed, %d failed\n", unit_tests_passed, unit_tests_failed),             \
     unit_tests_failed == 0 ? 0 : 1)

#endif
