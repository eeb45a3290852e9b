/* Shared by the fuzz harnesses in tests/fuzz/: the libFuzzer entry point's
 * declaration, a property check that stays on, and a small seeded generator
 * so that every choice a harness makes (where to split the input, which
 * limits to use) is a pure function of the input bytes. The same input then
 * takes the same path under libFuzzer, under replay.c and in a debugger. */
#ifndef RINGWAY_FUZZ_H
#define RINGWAY_FUZZ_H

#include "ringway/common.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* libFuzzer's entry point; replay.c calls it the same way. Returns 0; a
 * broken property aborts the process. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A property every input must satisfy. On failure it names the property and
 * its place, then aborts through rw_assert_fail (which libFuzzer and
 * replay.c both catch as a crash). */
#define FUZZ_CHECK(condition) RW_ASSERT(condition)

/* FNV-1a over the input: the seed of every choice a harness makes. */
static inline uint64_t fuzz_hash(const uint8_t *data, size_t size) {
    uint64_t hash = 0xcbf29ce484222325u;
    for (size_t index = 0; index < size; index++) {
        hash ^= data[index];
        hash *= 0x100000001b3u;
    }
    return hash;
}

/* splitmix64: small, fast and good enough to pick split points. */
typedef struct fuzz_random {
    uint64_t state;
} fuzz_random_t;

static inline uint64_t fuzz_random_next(fuzz_random_t *random) {
    random->state += 0x9e3779b97f4a7c15u;
    uint64_t mixed = random->state;
    mixed = (mixed ^ (mixed >> 30)) * 0xbf58476d1ce4e5b9u;
    mixed = (mixed ^ (mixed >> 27)) * 0x94d049bb133111ebu;
    return mixed ^ (mixed >> 31);
}

/* A number in [0, bound]; bound inclusive so "a split point of size bytes"
 * is fuzz_random_upto(random, size). */
static inline size_t fuzz_random_upto(fuzz_random_t *random, size_t bound) {
    return (size_t)(fuzz_random_next(random) % ((uint64_t)bound + 1));
}

/* The split point for the "two pieces" check: usually derived from the first
 * input byte (so a fuzzer that flips that byte walks every split), mixed with
 * the hash so inputs with the same first byte still differ. */
static inline size_t fuzz_split_point(const uint8_t *data, size_t size, fuzz_random_t *random) {
    if (size == 0) {
        return 0;
    }
    uint64_t mixed = (uint64_t)data[0] * 0x9e3779b97f4a7c15u ^ fuzz_random_next(random);
    return (size_t)(mixed % ((uint64_t)size + 1));
}

/* Whether bytes[0, length) contains the NUL-terminated needle. */
static inline bool fuzz_contains(const uint8_t *bytes, size_t length, const char *needle) {
    size_t needle_length = strlen(needle);
    if (needle_length == 0) {
        return true;
    }
    for (size_t index = 0; index + needle_length <= length; index++) {
        if (memcmp(bytes + index, needle, needle_length) == 0) {
            return true;
        }
    }
    return false;
}

#endif
