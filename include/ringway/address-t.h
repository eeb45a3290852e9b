/* Types of the address module (src/address; functions in address.h): client
 * IP addresses, CIDR ranges, and the fixed-size table that counts things per
 * address. Plain data, no pointers outside the caller's memory. */
#ifndef RINGWAY_ADDRESS_T_H
#define RINGWAY_ADDRESS_T_H

#include "ringway/common.h"

/* An IPv4 or IPv6 address in one 16-byte form: IPv4 is stored as the
 * IPv4-mapped IPv6 address ::ffff:a.b.c.d, so one comparison covers both
 * families and a v4 peer seen through a dual-stack socket is the same
 * address as the same peer seen through a v4 socket. All zero = unknown. */
typedef struct address {
    uint8_t bytes[16];
} address_t;

/* A range: the addresses whose first prefix_bits bits (of the 128-bit form)
 * equal network's. An IPv4 /N is stored as prefix 96 + N. */
typedef struct address_cidr {
    address_t network; /* host bits are zero */
    uint8_t prefix_bits; /* 0..128 */
} address_cidr_t;

enum {
    ADDRESS_TEXT_BYTES = 46, /* INET6_ADDRSTRLEN: the longest text address_format writes, with its NUL */
};

/* A count per address (connections, large-body slots) with a fixed
 * capacity: open addressing with linear probing and backward-shift
 * deletion, so no tombstones and a bounded probe. The owner sizes it at
 * start with at least twice as many slots as distinct addresses can have a
 * non-zero count at once (e.g. twice the connections of a thread), so an
 * increment never finds it full. Single-threaded. */
typedef struct address_count_slot {
    address_t address;
    uint32_t count; /* 0 = empty slot */
} address_count_slot_t;

typedef struct address_counts {
    address_count_slot_t *slots; /* [mask + 1], caller memory */
    uint32_t mask;               /* slots - 1, a power of two minus one */
    uint32_t used;               /* slots with a non-zero count */
    uint64_t seed;               /* hash seed, random per process */
} address_counts_t;

#endif
