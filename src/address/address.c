/* Client addresses (see address.h for the contracts): literals and ranges
 * through inet_pton, the X-Forwarded-For scan, and the per-address count
 * table. No allocation, no I/O. */
#include "ringway/address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

enum { ADDRESS_LITERAL_BYTES_MAX = 45 }; /* the longest IPv6 text, "ffff:...:255.255.255.255" */

static const uint8_t address_v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool address_is_v4(const address_t *address) {
    return memcmp(address->bytes, address_v4_mapped_prefix, sizeof address_v4_mapped_prefix) == 0;
}

static void address_set_v4(address_t *out, const uint8_t v4[4]) {
    memcpy(out->bytes, address_v4_mapped_prefix, sizeof address_v4_mapped_prefix);
    memcpy(out->bytes + 12, v4, 4);
}

/* inet_pton needs a NUL-terminated copy; the literal must not exceed the
 * longest IPv6 text. `family_out` tells which form it was. */
static bool address_parse_literal(const char *text, size_t length, address_t *out, int *family_out) {
    memset(out, 0, sizeof *out);
    if (length == 0 || length > ADDRESS_LITERAL_BYTES_MAX) return false;
    char copy[ADDRESS_LITERAL_BYTES_MAX + 1];
    memcpy(copy, text, length);
    copy[length] = '\0';
    uint8_t v4[4];
    if (memchr(copy, ':', length) == NULL) {
        if (inet_pton(AF_INET, copy, v4) != 1) return false;
        address_set_v4(out, v4);
        *family_out = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, copy, out->bytes) != 1) {
        memset(out, 0, sizeof *out);
        return false;
    }
    *family_out = AF_INET6;
    return true;
}

bool address_parse(const char *text, size_t length, address_t *out) {
    RW_ASSERT(text != NULL || length == 0);
    RW_ASSERT(out != NULL);
    int family = 0;
    return address_parse_literal(text, length, out, &family);
}

static bool address_is_port(const char *text, size_t length) {
    if (length == 0 || length > 5) return false;
    for (size_t index = 0; index < length; index++) {
        if (text[index] < '0' || text[index] > '9') return false;
    }
    return true;
}

bool address_parse_hop(const char *text, size_t length, address_t *out) {
    RW_ASSERT(text != NULL || length == 0);
    RW_ASSERT(out != NULL);
    memset(out, 0, sizeof *out);
    while (length > 0 && (text[0] == ' ' || text[0] == '\t')) {
        text++;
        length--;
    }
    while (length > 0 && (text[length - 1] == ' ' || text[length - 1] == '\t')) length--;
    if (length == 0) return false;
    if (text[0] == '[') {
        const char *close = memchr(text, ']', length);
        if (close == NULL) return false;
        size_t inner = (size_t)(close - text) - 1;
        size_t after = length - inner - 2;
        if (after > 0 && (close[1] != ':' || !address_is_port(close + 2, after - 1))) return false;
        int family = 0;
        return address_parse_literal(text + 1, inner, out, &family) && family == AF_INET6;
    }
    const char *colon = memchr(text, ':', length);
    if (colon != NULL && memchr(colon + 1, ':', length - (size_t)(colon - text) - 1) == NULL) {
        /* Exactly one colon: IPv4 with a port. */
        size_t host_length = (size_t)(colon - text);
        if (!address_is_port(colon + 1, length - host_length - 1)) return false;
        int family = 0;
        return address_parse_literal(text, host_length, out, &family) && family == AF_INET;
    }
    int family = 0;
    return address_parse_literal(text, length, out, &family);
}

bool address_cidr_parse(const char *text, size_t length, address_cidr_t *out) {
    RW_ASSERT(text != NULL || length == 0);
    RW_ASSERT(out != NULL);
    memset(out, 0, sizeof *out);
    const char *slash = memchr(text, '/', length);
    size_t address_length = slash != NULL ? (size_t)(slash - text) : length;
    int family = 0;
    if (!address_parse_literal(text, address_length, &out->network, &family)) return false;
    uint32_t family_bits = family == AF_INET ? 32 : 128;
    uint32_t prefix = family_bits;
    if (slash != NULL) {
        size_t digits = length - address_length - 1;
        if (digits == 0 || digits > 3) goto refuse;
        prefix = 0;
        for (size_t index = 0; index < digits; index++) {
            char c = slash[1 + index];
            if (c < '0' || c > '9') goto refuse;
            prefix = prefix * 10 + (uint32_t)(c - '0');
        }
        if (prefix > family_bits) goto refuse;
    }
    out->prefix_bits = (uint8_t)(prefix + (128 - family_bits));
    for (uint32_t bit = out->prefix_bits; bit < 128; bit++) {
        out->network.bytes[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
    }
    return true;
refuse:
    memset(out, 0, sizeof *out);
    return false;
}

bool address_cidr_contains(const address_cidr_t *cidr, const address_t *address) {
    RW_ASSERT(cidr != NULL && address != NULL && cidr->prefix_bits <= 128);
    uint32_t whole = cidr->prefix_bits / 8;
    if (memcmp(cidr->network.bytes, address->bytes, whole) != 0) return false;
    uint32_t rest = cidr->prefix_bits % 8;
    if (rest == 0) return true;
    uint8_t mask = (uint8_t)(0xff00u >> rest);
    return (address->bytes[whole] & mask) == cidr->network.bytes[whole];
}

bool address_in_any(const address_cidr_t *list, uint32_t count, const address_t *address) {
    RW_ASSERT(list != NULL || count == 0);
    for (uint32_t index = 0; index < count; index++) {
        if (address_cidr_contains(&list[index], address)) return true;
    }
    return false;
}

address_t address_client(const address_t *peer, const uint8_t *forwarded, size_t forwarded_length,
                         const address_cidr_t *trusted, uint32_t trusted_count) {
    RW_ASSERT(peer != NULL);
    address_t client = *peer;
    if (forwarded == NULL || !address_in_any(trusted, trusted_count, peer)) return client;
    /* From the right: each element is the address the proxy to its right
     * received the request from. The loop ends at the start of the field. */
    size_t end = forwarded_length;
    for (;;) {
        size_t start = end;
        while (start > 0 && forwarded[start - 1] != ',') start--;
        address_t hop;
        if (!address_parse_hop((const char *)forwarded + start, end - start, &hop)) return client;
        client = hop;
        if (!address_in_any(trusted, trusted_count, &hop) || start == 0) return client;
        end = start - 1;
    }
}

address_t address_from_sockaddr(const struct sockaddr_storage *storage) {
    RW_ASSERT(storage != NULL);
    address_t out;
    memset(&out, 0, sizeof out);
    if (storage->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)(const void *)storage;
        address_set_v4(&out, (const uint8_t *)&v4->sin_addr);
    } else if (storage->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)(const void *)storage;
        memcpy(out.bytes, &v6->sin6_addr, sizeof out.bytes);
    }
    return out;
}

size_t address_format(const address_t *address, char out[static ADDRESS_TEXT_BYTES]) {
    RW_ASSERT(address != NULL);
    const char *written = address_is_v4(address) ? inet_ntop(AF_INET, address->bytes + 12, out, ADDRESS_TEXT_BYTES)
                                                 : inet_ntop(AF_INET6, address->bytes, out, ADDRESS_TEXT_BYTES);
    RW_ASSERT(written != NULL);
    return strlen(out);
}

bool address_equal(const address_t *a, const address_t *b) { return memcmp(a->bytes, b->bytes, sizeof a->bytes) == 0; }

/* Two rounds of rw_mix64 over the seeded halves. */

uint64_t address_hash(const address_t *address, uint64_t seed) {
    uint64_t high = 0, low = 0;
    memcpy(&high, address->bytes, 8);
    memcpy(&low, address->bytes + 8, 8);
    return rw_mix64(rw_mix64(high ^ seed) ^ low ^ (seed * 0x9e3779b97f4a7c15ull));
}

/* ---- The count table ---- */

void address_counts_init(address_counts_t *counts, address_count_slot_t *slots, uint32_t slot_count, uint64_t seed) {
    RW_ASSERT(counts != NULL && slots != NULL);
    RW_ASSERT(slot_count >= 2 && (slot_count & (slot_count - 1)) == 0);
    memset(slots, 0, (size_t)slot_count * sizeof *slots);
    counts->slots = slots;
    counts->mask = slot_count - 1;
    counts->used = 0;
    counts->seed = seed;
}

/* The slot holding the address, or the empty slot that ends its probe. The
 * table is never full (used < slots), so the probe ends. */
static uint32_t address_counts_find(const address_counts_t *counts, const address_t *address) {
    uint32_t index = (uint32_t)address_hash(address, counts->seed) & counts->mask;
    for (uint32_t probe = 0; probe <= counts->mask; probe++) {
        const address_count_slot_t *slot = &counts->slots[index];
        if (slot->count == 0 || address_equal(&slot->address, address)) return index;
        index = (index + 1) & counts->mask;
    }
    RW_ASSERT(!"address count table is full");
    return 0;
}

uint32_t address_counts_get(const address_counts_t *counts, const address_t *address) {
    RW_ASSERT(counts != NULL && address != NULL);
    return counts->slots[address_counts_find(counts, address)].count;
}

uint32_t address_counts_increment(address_counts_t *counts, const address_t *address) {
    RW_ASSERT(counts != NULL && address != NULL);
    uint32_t index = address_counts_find(counts, address);
    address_count_slot_t *slot = &counts->slots[index];
    if (slot->count == 0) {
        /* Keep one slot empty so every probe ends. */
        RW_ASSERT(counts->used < counts->mask);
        slot->address = *address;
        counts->used++;
    }
    RW_ASSERT(slot->count < UINT32_MAX);
    return ++slot->count;
}

void address_counts_decrement(address_counts_t *counts, const address_t *address) {
    RW_ASSERT(counts != NULL && address != NULL);
    uint32_t hole = address_counts_find(counts, address);
    address_count_slot_t *slot = &counts->slots[hole];
    RW_ASSERT(slot->count > 0 && address_equal(&slot->address, address));
    if (--slot->count > 0) return;
    counts->used--;
    /* Backward-shift deletion: move later members of the run into the hole
     * when the hole lies between their home slot and where they sit. */
    uint32_t index = hole;
    for (;;) {
        index = (index + 1) & counts->mask;
        address_count_slot_t *next = &counts->slots[index];
        if (next->count == 0) break;
        uint32_t home = (uint32_t)address_hash(&next->address, counts->seed) & counts->mask;
        uint32_t distance_to_hole = (hole - home) & counts->mask;
        uint32_t distance_to_next = (index - home) & counts->mask;
        if (distance_to_hole < distance_to_next) {
            counts->slots[hole] = *next;
            next->count = 0;
            hole = index;
        }
    }
    memset(&counts->slots[hole].address, 0, sizeof counts->slots[hole].address);
    counts->slots[hole].count = 0;
}
