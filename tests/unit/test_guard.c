/* Unit tests for src/guard/guard.c: registrations per address per hour and
 * per day, failed logins per address per minute, the per-account backoff
 * (its doubling, its cap, the reset on success), windows rolling over, and
 * eviction keeping the table bounded. The clock is passed in, so every case
 * runs at chosen instants. */
#include "ringway/address.h"
#include "ringway/guard.h"
#include "unit.h"

/* 2026-01-01T00:00:00Z, a whole day, hour and minute. */
#define TEST_T0_MS ((int64_t)1767225600000)

static const guard_limits_t test_limits = {
    .registrations_per_ip_per_hour = 3,
    .registrations_per_ip_per_day = 5,
    .login_failures_per_ip_per_minute = 10,
    .login_failures_before_backoff = 5,
    .login_backoff_base_s = 1,
    .login_backoff_max_s = 60,
};

static address_t test_address(uint32_t host) {
    address_t address;
    memset(&address, 0, sizeof address);
    address.bytes[10] = 0xff;
    address.bytes[11] = 0xff;
    address.bytes[12] = 192;
    address.bytes[13] = 0;
    address.bytes[14] = (uint8_t)(host >> 8);
    address.bytes[15] = (uint8_t)host;
    return address;
}

static void test_registrations_per_hour_and_day(void) {
    guard_t *guard = NULL;
    CHECK(guard_create(&guard, &test_limits, 64, 7) == 0);
    address_t client = test_address(1), other = test_address(2);
    uint32_t retry_s = 0;
    int64_t now = TEST_T0_MS + 10 * 60 * 1000; /* 00:10 */
    for (int index = 0; index < 3; index++) {
        CHECK_EQ_INT(guard_registration_check(guard, &client, now, &retry_s), GUARD_ALLOW);
        guard_registration_record(guard, &client, now);
    }
    CHECK_EQ_INT(guard_registration_check(guard, &client, now, &retry_s), GUARD_REGISTRATION_LIMITED);
    CHECK_EQ_INT(retry_s, 50 * 60); /* until 01:00 */
    /* Another address is not affected. */
    CHECK_EQ_INT(guard_registration_check(guard, &other, now, &retry_s), GUARD_ALLOW);
    /* The next hour allows two more, then the day's 5 are used. */
    now = TEST_T0_MS + 60 * 60 * 1000 + 1;
    for (int index = 0; index < 2; index++) {
        CHECK_EQ_INT(guard_registration_check(guard, &client, now, &retry_s), GUARD_ALLOW);
        guard_registration_record(guard, &client, now);
    }
    CHECK_EQ_INT(guard_registration_check(guard, &client, now, &retry_s), GUARD_REGISTRATION_LIMITED);
    CHECK_EQ_INT(retry_s, 23 * 3600); /* until tomorrow 00:00, rounded up */
    now = TEST_T0_MS + 24 * 60 * 60 * 1000;
    CHECK_EQ_INT(guard_registration_check(guard, &client, now, &retry_s), GUARD_ALLOW);
    guard_destroy(&guard);
    CHECK(guard == NULL);
}

static void test_failed_logins_per_address_per_minute(void) {
    guard_t *guard = NULL;
    guard_limits_t limits = test_limits;
    limits.login_failures_before_backoff = 0; /* the address limit alone */
    CHECK(guard_create(&guard, &limits, 64, 7) == 0);
    address_t client = test_address(1);
    uint32_t retry_s = 0;
    int64_t now = TEST_T0_MS + 15 * 1000;
    char email[32];
    for (int index = 0; index < 10; index++) {
        int length = snprintf(email, sizeof email, "user%d@example.com", index);
        CHECK_EQ_INT(guard_login_check(guard, &client, email, (size_t)length, now, &retry_s), GUARD_ALLOW);
        guard_login_failed(guard, &client, email, (size_t)length, now);
    }
    CHECK_EQ_INT(guard_login_check(guard, &client, "new@example.com", 15, now, &retry_s), GUARD_LOGIN_LIMITED);
    CHECK_EQ_INT(retry_s, 45);
    address_t other = test_address(3);
    CHECK_EQ_INT(guard_login_check(guard, &other, "new@example.com", 15, now, &retry_s), GUARD_ALLOW);
    CHECK_EQ_INT(guard_login_check(guard, &client, "new@example.com", 15, TEST_T0_MS + 60 * 1000, &retry_s),
                 GUARD_ALLOW);
    guard_destroy(&guard);
}

static void test_account_backoff_doubles_to_its_cap_and_resets(void) {
    guard_t *guard = NULL;
    guard_limits_t limits = test_limits;
    limits.login_failures_per_ip_per_minute = 0; /* the account limit alone */
    CHECK(guard_create(&guard, &limits, 64, 7) == 0);
    static const char email[] = "victim@example.com";
    size_t length = sizeof email - 1;
    uint32_t retry_s = 0;
    int64_t now = TEST_T0_MS;
    address_t client = test_address(99);
    for (uint32_t index = 0; index < 4; index++) {
        CHECK_EQ_INT(guard_login_check(guard, &client, email, length, now, &retry_s), GUARD_ALLOW);
        guard_login_failed(guard, &client, email, length, now);
    }
    CHECK_EQ_INT(guard_login_check(guard, &client, email, length, now, &retry_s), GUARD_ALLOW);
    /* The fifth failure: refused for 1 s, then 2, 4, ... 60 at most. */
    uint32_t expected[] = {1, 2, 4, 8, 16, 32, 60, 60};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(expected); index++) {
        guard_login_failed(guard, &client, email, length, now);
        CHECK_EQ_INT(guard_login_check(guard, &client, email, length, now, &retry_s), GUARD_ACCOUNT_BACKOFF);
        CHECK_EQ_INT(retry_s, expected[index]);
        CHECK_EQ_INT(guard_login_check(guard, &client, email, length, now + expected[index] * 1000 - 1, &retry_s),
                     GUARD_ACCOUNT_BACKOFF);
        CHECK_EQ_INT(retry_s, 1);
        now += (int64_t)expected[index] * 1000;
        CHECK_EQ_INT(guard_login_check(guard, &client, email, length, now, &retry_s), GUARD_ALLOW);
    }
    /* The streak is the account's from that network: the owner elsewhere is
     * not kept out by it. */
    guard_login_failed(guard, &client, email, length, now);
    CHECK_EQ_INT(guard_login_check(guard, &client, email, length, now, &retry_s), GUARD_ACCOUNT_BACKOFF);
    address_t owner = test_address(7);
    CHECK_EQ_INT(guard_login_check(guard, &owner, email, length, now, &retry_s), GUARD_ALLOW);
    now += 60 * 1000;
    /* Another account is not affected; a success ends the streak. */
    CHECK_EQ_INT(guard_login_check(guard, &client, "other@example.com", 17, now, &retry_s), GUARD_ALLOW);
    guard_login_succeeded(guard, &client, email, length, now);
    guard_login_failed(guard, &client, email, length, now);
    CHECK_EQ_INT(guard_login_check(guard, &client, email, length, now, &retry_s), GUARD_ALLOW);
    /* A streak is forgotten a day after its last failure. */
    for (int index = 0; index < 3; index++) guard_login_failed(guard, &client, email, length, now);
    now += 24 * 60 * 60 * 1000 + 1;
    guard_login_failed(guard, &client, email, length, now);
    CHECK_EQ_INT(guard_login_check(guard, &client, email, length, now, &retry_s), GUARD_ALLOW);
    guard_destroy(&guard);
}

/* IPv6 addresses count by /64: every address of one customer line shares
 * the line's counter, the next /64 has its own. */
static void test_ipv6_counts_by_64(void) {
    guard_t *guard = NULL;
    guard_limits_t limits = test_limits;
    limits.login_failures_before_backoff = 0;
    CHECK(guard_create(&guard, &limits, 64, 7) == 0);
    uint32_t retry_s = 0;
    int64_t now = TEST_T0_MS + 15 * 1000;
    char text[64];
    for (int index = 0; index < 10; index++) {
        int length = snprintf(text, sizeof text, "2001:db8:1:2::%x", index + 1);
        address_t client;
        CHECK(address_parse(text, (size_t)length, &client));
        guard_login_failed(guard, &client, "a@example.com", 13, now);
    }
    address_t sibling;
    CHECK(address_parse("2001:db8:1:2:ffff::9", 20, &sibling));
    CHECK_EQ_INT(guard_login_check(guard, &sibling, "a@example.com", 13, now, &retry_s), GUARD_LOGIN_LIMITED);
    address_t next_line;
    CHECK(address_parse("2001:db8:1:3::1", 15, &next_line));
    CHECK_EQ_INT(guard_login_check(guard, &next_line, "a@example.com", 13, now, &retry_s), GUARD_ALLOW);
    guard_destroy(&guard);
}

static void test_backoff_cap_does_not_overflow(void) {
    guard_t *guard = NULL;
    guard_limits_t limits = test_limits;
    limits.login_failures_per_ip_per_minute = 0;
    limits.login_failures_before_backoff = 1;
    limits.login_backoff_base_s = 3;
    limits.login_backoff_max_s = 86400;
    CHECK(guard_create(&guard, &limits, 64, 7) == 0);
    address_t client = test_address(1);
    uint32_t retry_s = 0;
    for (int index = 0; index < 200; index++) guard_login_failed(guard, &client, "a@b.co", 6, TEST_T0_MS);
    CHECK_EQ_INT(guard_login_check(guard, &client, "a@b.co", 6, TEST_T0_MS, &retry_s), GUARD_ACCOUNT_BACKOFF);
    CHECK_EQ_INT(retry_s, 86400);
    guard_destroy(&guard);
}

/* Many more subjects than slots: the table never grows, the newest are
 * kept, and the oldest is the one forgotten. */
static void test_eviction_keeps_the_newest(void) {
    guard_t *guard = NULL;
    guard_limits_t limits = test_limits;
    limits.registrations_per_ip_per_hour = 1;
    limits.registrations_per_ip_per_day = 0;
    CHECK(guard_create(&guard, &limits, 8, 7) == 0);
    uint32_t retry_s = 0;
    int64_t now = TEST_T0_MS;
    for (uint32_t host = 0; host < 1000; host++) {
        address_t client = test_address(host);
        guard_registration_record(guard, &client, now + host);
    }
    /* With 8 slots and a probe of 8, the table holds exactly the last 8. */
    for (uint32_t host = 992; host < 1000; host++) {
        address_t client = test_address(host);
        CHECK_EQ_INT(guard_registration_check(guard, &client, now + 1000, &retry_s), GUARD_REGISTRATION_LIMITED);
    }
    address_t old = test_address(0);
    CHECK_EQ_INT(guard_registration_check(guard, &old, now + 1000, &retry_s), GUARD_ALLOW);
    guard_destroy(&guard);
}

int main(void) {
    RUN_TEST(test_registrations_per_hour_and_day);
    RUN_TEST(test_failed_logins_per_address_per_minute);
    RUN_TEST(test_account_backoff_doubles_to_its_cap_and_resets);
    RUN_TEST(test_ipv6_counts_by_64);
    RUN_TEST(test_backoff_cap_does_not_overflow);
    RUN_TEST(test_eviction_keeps_the_newest);
    return UNIT_REPORT();
}
