/* Unit tests for src/address/address.c: literals, ranges (IPv4 and IPv6,
 * every prefix edge), X-Forwarded-For scanned from the right through trusted
 * proxies (whole, and with every hop form), and the count table against a
 * plain array under a seeded random schedule. */
#include "ringway/address.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static unit_random_t test_random = {0x2545f4914f6cdd1dull};

static address_t parsed(const char *text) {
    address_t address;
    bool ok = address_parse(text, strlen(text), &address);
    RW_ASSERT(ok);
    return address;
}

static address_cidr_t cidr(const char *text) {
    address_cidr_t range;
    bool ok = address_cidr_parse(text, strlen(text), &range);
    RW_ASSERT(ok);
    return range;
}

static bool formats_as(const address_t *address, const char *expected) {
    char text[ADDRESS_TEXT_BYTES];
    size_t length = address_format(address, text);
    return length == strlen(expected) && strcmp(text, expected) == 0;
}

static void test_parse_literals(void) {
    address_t address;
    CHECK(address_parse("192.0.2.7", 9, &address) && formats_as(&address, "192.0.2.7"));
    CHECK(address_parse("2001:db8::1", 11, &address) && formats_as(&address, "2001:db8::1"));
    /* IPv4 and its mapped IPv6 form are the same address. */
    address_t mapped = parsed("::ffff:192.0.2.7");
    address_t v4 = parsed("192.0.2.7");
    CHECK(address_equal(&mapped, &v4));
    static const char *const bad[] = {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.4 ", "[::1]", "::1:80:",
                                      "example.com", "1.2.3.4/8", "fe80::1%eth0", "::g"};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(bad); index++) {
        CHECK(!address_parse(bad[index], strlen(bad[index]), &address));
        address_t zero;
        memset(&zero, 0, sizeof zero);
        CHECK(address_equal(&address, &zero));
    }
}

static void test_parse_hops(void) {
    address_t address;
    static const struct {
        const char *text;
        const char *expected;
    } good[] = {
        {" 192.0.2.7 ", "192.0.2.7"}, {"192.0.2.7:8080", "192.0.2.7"}, {"\t2001:db8::5", "2001:db8::5"},
        {"[2001:db8::5]", "2001:db8::5"}, {"[2001:db8::5]:443", "2001:db8::5"}, {"::1", "::1"},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(good); index++) {
        CHECK(address_parse_hop(good[index].text, strlen(good[index].text), &address) &&
              formats_as(&address, good[index].expected));
    }
    static const char *const bad[] = {"", "   ", "unknown", "_hidden", "192.0.2.7:", "192.0.2.7:http",
                                      "[192.0.2.7]", "[2001:db8::5", "[2001:db8::5]:", "[::1]x", "1.2.3.4:123456"};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(bad); index++) {
        CHECK(!address_parse_hop(bad[index], strlen(bad[index]), &address));
    }
}

static void test_cidr_ranges(void) {
    address_cidr_t range;
    CHECK(address_cidr_parse("10.0.0.0/8", 10, &range) && range.prefix_bits == 104);
    address_t inside = parsed("10.255.1.2"), outside = parsed("11.0.0.0");
    CHECK(address_cidr_contains(&range, &inside));
    CHECK(!address_cidr_contains(&range, &outside));
    /* Host bits are cleared; a bare address is one host. */
    range = cidr("192.168.1.77/24");
    CHECK(formats_as(&range.network, "192.168.1.0"));
    range = cidr("127.0.0.1");
    CHECK(range.prefix_bits == 128);
    address_t loopback = parsed("127.0.0.1"), other = parsed("127.0.0.2");
    CHECK(address_cidr_contains(&range, &loopback) && !address_cidr_contains(&range, &other));
    /* Odd prefixes: /13 of IPv4 and /61 of IPv6, both edges. */
    range = cidr("172.16.0.0/13");
    address_t last = parsed("172.23.255.255"), past = parsed("172.24.0.0");
    CHECK(address_cidr_contains(&range, &last) && !address_cidr_contains(&range, &past));
    range = cidr("2001:db8:0:8::/61");
    address_t v6_last = parsed("2001:db8:0:f:ffff:ffff:ffff:ffff"), v6_past = parsed("2001:db8:0:10::");
    CHECK(address_cidr_contains(&range, &v6_last) && !address_cidr_contains(&range, &v6_past));
    /* An IPv4 range never holds a non-mapped IPv6 address, /0 of v6 holds all. */
    range = cidr("0.0.0.0/0");
    address_t v6 = parsed("2001:db8::1");
    CHECK(address_cidr_contains(&range, &inside) && !address_cidr_contains(&range, &v6));
    range = cidr("::/0");
    CHECK(address_cidr_contains(&range, &v6) && address_cidr_contains(&range, &inside));
    static const char *const bad[] = {"10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8/8",
                                      "10.0.0.0/ 8", "/8", "10.0.0.0/0008", "host/8"};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(bad); index++) {
        CHECK(!address_cidr_parse(bad[index], strlen(bad[index]), &range));
    }
}

static address_t client_of(const char *peer, const char *forwarded, const address_cidr_t *trusted, uint32_t count) {
    address_t peer_address = parsed(peer);
    return address_client(&peer_address, (const uint8_t *)forwarded, forwarded != NULL ? strlen(forwarded) : 0,
                          trusted, count);
}

static void test_forwarded_for_from_trusted_proxies_only(void) {
    address_cidr_t trusted[] = {cidr("127.0.0.1/32"), cidr("10.0.0.0/8"), cidr("::1/128")};
    address_t client;
    /* An untrusted peer's header is ignored. */
    client = client_of("192.0.2.1", "203.0.113.9", trusted, 3);
    CHECK(formats_as(&client, "192.0.2.1"));
    /* No header: the peer. */
    client = client_of("127.0.0.1", NULL, trusted, 3);
    CHECK(formats_as(&client, "127.0.0.1"));
    /* The first untrusted hop from the right; what is left of it is the client's to forge. */
    client = client_of("127.0.0.1", "198.51.100.1, 203.0.113.9, 10.1.2.3", trusted, 3);
    CHECK(formats_as(&client, "203.0.113.9"));
    client = client_of("127.0.0.1", "203.0.113.9", trusted, 3);
    CHECK(formats_as(&client, "203.0.113.9"));
    client = client_of("::1", "[2001:db8::7]:5000,10.0.0.1", trusted, 3);
    CHECK(formats_as(&client, "2001:db8::7"));
    /* All hops trusted: the leftmost. */
    client = client_of("127.0.0.1", "10.0.0.2, 10.0.0.3", trusted, 3);
    CHECK(formats_as(&client, "10.0.0.2"));
    /* A hop that does not parse ends the scan at the last one read. */
    client = client_of("127.0.0.1", "203.0.113.9, unknown, 10.0.0.3", trusted, 3);
    CHECK(formats_as(&client, "10.0.0.3"));
    client = client_of("127.0.0.1", "garbage", trusted, 3);
    CHECK(formats_as(&client, "127.0.0.1"));
    client = client_of("127.0.0.1", "", trusted, 3);
    CHECK(formats_as(&client, "127.0.0.1"));
    client = client_of("127.0.0.1", "203.0.113.9,", trusted, 3);
    CHECK(formats_as(&client, "127.0.0.1"));
    /* No trusted proxies at all: always the peer. */
    client = client_of("127.0.0.1", "203.0.113.9", NULL, 0);
    CHECK(formats_as(&client, "127.0.0.1"));
}

static void test_from_sockaddr(void) {
    struct sockaddr_storage storage;
    memset(&storage, 0, sizeof storage);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&storage;
    v4->sin_family = AF_INET;
    inet_pton(AF_INET, "192.0.2.44", &v4->sin_addr);
    address_t address = address_from_sockaddr(&storage);
    CHECK(formats_as(&address, "192.0.2.44"));
    memset(&storage, 0, sizeof storage);
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&storage;
    v6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:192.0.2.44", &v6->sin6_addr);
    address_t mapped = address_from_sockaddr(&storage);
    CHECK(address_equal(&mapped, &address));
}

/* The table against a plain array: random increments and decrements of a
 * few dozen addresses crowded into a small table, so runs wrap and the
 * backward shift is exercised. */
static void test_counts_match_a_model(void) {
    enum { SLOTS = 64, ADDRESSES = 31, STEPS = 200000 };
    static address_count_slot_t slots[SLOTS];
    address_counts_t counts;
    address_counts_init(&counts, slots, SLOTS, 12345);
    address_t addresses[ADDRESSES];
    uint32_t model[ADDRESSES] = {0};
    for (uint32_t index = 0; index < ADDRESSES; index++) {
        memset(&addresses[index], 0, sizeof addresses[index]);
        addresses[index].bytes[15] = (uint8_t)index;
        addresses[index].bytes[0] = 0x20;
    }
    uint32_t used = 0;
    for (uint32_t step = 0; step < STEPS; step++) {
        uint32_t which = (uint32_t)unit_random_below(&test_random, ADDRESSES);
        if (model[which] > 0 && unit_random_below(&test_random, 2) == 0) {
            address_counts_decrement(&counts, &addresses[which]);
            if (--model[which] == 0) used--;
        } else if (model[which] < 3) {
            if (model[which]++ == 0) used++;
            CHECK_EQ_INT(address_counts_increment(&counts, &addresses[which]), model[which]);
        }
        if (step % 97 == 0) {
            for (uint32_t index = 0; index < ADDRESSES; index++) {
                CHECK_EQ_INT(address_counts_get(&counts, &addresses[index]), model[index]);
            }
            CHECK_EQ_INT(counts.used, used);
        }
    }
}

int main(void) {
    RUN_TEST(test_parse_literals);
    RUN_TEST(test_parse_hops);
    RUN_TEST(test_cidr_ranges);
    RUN_TEST(test_forwarded_for_from_trusted_proxies_only);
    RUN_TEST(test_from_sockaddr);
    RUN_TEST(test_counts_match_a_model);
    return UNIT_REPORT();
}
