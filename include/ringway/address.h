/* Client addresses (src/address; types in address-t.h): parsing IPv4 and
 * IPv6 literals and CIDR ranges, matching an address against a list of
 * ranges, finding the client behind trusted proxies from X-Forwarded-For,
 * and counting per address in a fixed table. Pure: no I/O, no allocation
 * (the count table lives in caller memory). */
#ifndef RINGWAY_ADDRESS_H
#define RINGWAY_ADDRESS_H

#include "ringway/address-t.h"

struct sockaddr_storage;

/* Parses an IPv4 dotted quad or an IPv6 literal (no brackets, no port, no
 * zone) of exactly `length` bytes. Returns false, leaving *out zeroed, for
 * anything else. */
bool address_parse(const char *text, size_t length, address_t *out);

/* Parses one element of an X-Forwarded-For list: optional spaces or tabs
 * around an IPv4 address with an optional ":port", a bracketed IPv6
 * address with an optional ":port", or a bare IPv6 address. false for
 * anything else ("unknown", an obfuscated node name, garbage). */
bool address_parse_hop(const char *text, size_t length, address_t *out);

/* Parses "ADDRESS" (a single host: /32 or /128) or "ADDRESS/N" (N up to 32
 * for IPv4, 128 for IPv6). Host bits past the prefix are cleared. */
bool address_cidr_parse(const char *text, size_t length, address_cidr_t *out);

bool address_cidr_contains(const address_cidr_t *cidr, const address_t *address);

/* True when some range of list[0, count) contains the address. */
bool address_in_any(const address_cidr_t *list, uint32_t count, const address_t *address);

/* The client a request comes from: the socket's peer, unless the peer is in
 * trusted[0, trusted_count) and the request carries X-Forwarded-For
 * (`forwarded`, `forwarded_length` bytes, NULL when absent). Then the list
 * is scanned from the right (each trusted proxy appends the address it
 * received from) and the client is the first hop that is not a trusted
 * proxy. All hops trusted: the leftmost. A hop that does not parse ends the
 * scan: the client is then the last hop seen before it (a trusted proxy,
 * which is whom we can vouch for), never a text we could not read. Only the
 * last X-Forwarded-For field of a request is given: the one the nearest
 * proxy wrote. */
address_t address_client(const address_t *peer, const uint8_t *forwarded, size_t forwarded_length,
                         const address_cidr_t *trusted, uint32_t trusted_count);

/* The address of a socket peer (AF_INET or AF_INET6); zero for another
 * family. */
address_t address_from_sockaddr(const struct sockaddr_storage *storage);

/* Writes the address as text (IPv4 for the mapped form) into
 * out[ADDRESS_TEXT_BYTES], NUL-terminated; returns its length. */
size_t address_format(const address_t *address, char out[static ADDRESS_TEXT_BYTES]);

bool address_equal(const address_t *a, const address_t *b);

/* A 64-bit hash of the address under `seed` (a keyed mix, so addresses an
 * attacker chooses cannot be made to collide without knowing the seed). */
uint64_t address_hash(const address_t *address, uint64_t seed);

/* ---- The count table (address_counts_t) ---- */

/* Binds the table to slots[slot_count] (a power of two >= 2), all empty. */
void address_counts_init(address_counts_t *counts, address_count_slot_t *slots, uint32_t slot_count, uint64_t seed);

/* The count of the address (0 when absent). */
uint32_t address_counts_get(const address_counts_t *counts, const address_t *address);

/* Adds one and returns the new count. Asserts that the table has room,
 * which its sizing guarantees. */
uint32_t address_counts_increment(address_counts_t *counts, const address_t *address);

/* Takes one away; the address must have a non-zero count (asserted). At
 * zero its slot is freed. */
void address_counts_decrement(address_counts_t *counts, const address_t *address);

#endif
