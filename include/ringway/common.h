/* Shared by every module: assertions that stay on in release builds, sizes and
 * small helpers. Nothing here allocates or performs I/O. */
#ifndef RINGWAY_COMMON_H
#define RINGWAY_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Programmer errors crash loudly in every build mode; operating errors are
 * returned, never asserted. */
_Noreturn void rw_assert_fail(const char *expression, const char *file, int line,
                              const char *function);

#define RW_ASSERT(condition)                                                   \
    ((condition) ? (void)0                                                     \
                 : rw_assert_fail(#condition, __FILE__, __LINE__, __func__))

#define RW_ARRAY_LENGTH(array) (sizeof(array) / sizeof((array)[0]))
#define RW_MIN(a, b) ((a) < (b) ? (a) : (b))
#define RW_MAX(a, b) ((a) > (b) ? (a) : (b))

#define RW_KIB ((size_t)1024)
#define RW_MIB ((size_t)1024 * 1024)

#define RW_VERSION "0.1.0"

/* Copies the NUL-terminated `text` into out[capacity] (capacity > 0),
 * truncating, always NUL-terminated: snprintf(out, n, "%s", text) without
 * the format machinery, for the request path. */
static inline void rw_copy_text(char *out, size_t capacity, const char *text) {
    size_t index = 0;
    for (; index + 1 < capacity && text[index] != '\0'; index++) out[index] = text[index];
    out[index] = '\0';
}

/* SplitMix64's finaliser, a 64-bit multiply-xorshift mix: every input bit
 * reaches every output bit. For hash tables and rendezvous scores. */
static inline uint64_t rw_mix64(uint64_t value) {
    value ^= value >> 30;
    value *= 0xbf58476d1ce4e5b9ull;
    value ^= value >> 27;
    value *= 0x94d049bb133111ebull;
    value ^= value >> 31;
    return value;
}

/* True when bytes[0, length) is exactly the NUL-terminated `text`. */
static inline bool rw_bytes_equal_text(const uint8_t *bytes, size_t length, const char *text) {
    size_t index = 0;
    for (; index < length; index++) {
        if (text[index] == '\0' || (uint8_t)text[index] != bytes[index]) return false;
    }
    return text[index] == '\0';
}

#endif
