/* The pre-authentication guards (see guard.h for the contracts): three
 * fixed tables of counters, looked up by a keyed hash in a bounded probe
 * window, the entry changed longest ago evicted when the window is full.
 * An eviction forgets a subject's counts; it needs GUARD_PROBE_SLOTS newer
 * subjects hashing to the same window, which at the default sizes means
 * thousands of addresses or accounts active at once. */
#include "ringway/guard.h"

#include "ringway/address.h"

#include <stdlib.h>
#include <string.h>

enum {
    GUARD_MINUTE_MS = 60 * 1000,
    GUARD_HOUR_MS = 60 * 60 * 1000,
    GUARD_DAY_MS = 24 * 60 * 60 * 1000,
};

/* How long a failure streak is remembered after its last failure. */
#define GUARD_STREAK_MEMORY_MS ((int64_t)GUARD_DAY_MS)

static int guard_table_init(guard_table_t *table, uint32_t entries) {
    table->entries = calloc(entries, sizeof *table->entries);
    table->mask = entries - 1;
    return table->entries == NULL ? -1 : 0;
}

int guard_create(guard_t **result, const guard_limits_t *limits, uint32_t entries_per_table, uint64_t seed) {
    RW_ASSERT(result != NULL && limits != NULL);
    RW_ASSERT(entries_per_table >= GUARD_PROBE_SLOTS && (entries_per_table & (entries_per_table - 1)) == 0);
    RW_ASSERT(limits->login_backoff_base_s <= limits->login_backoff_max_s || limits->login_failures_before_backoff == 0);
    *result = NULL;
    guard_t *guard = calloc(1, sizeof *guard);
    if (guard == NULL) return -1;
    guard->limits = *limits;
    guard->seed = seed;
    if (guard_table_init(&guard->registrations, entries_per_table) != 0 ||
        guard_table_init(&guard->login_failures, entries_per_table) != 0 ||
        guard_table_init(&guard->accounts, entries_per_table) != 0) {
        guard_destroy(&guard);
        return -1;
    }
    *result = guard;
    return 0;
}

void guard_destroy(guard_t **pointer) {
    RW_ASSERT(pointer != NULL);
    guard_t *guard = *pointer;
    if (guard == NULL) return;
    free(guard->registrations.entries);
    free(guard->login_failures.entries);
    free(guard->accounts.entries);
    free(guard);
    *pointer = NULL;
}

/* Counters go by network, not by address: an IPv4 address, or the /64 of an
 * IPv6 one (a single customer line gets a whole /64, so counting /128s
 * would give one attacker 2^64 fresh counters). */
static uint64_t guard_key_of_address(const guard_t *guard, const address_t *address) {
    static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    address_t network = *address;
    if (memcmp(network.bytes, mapped_prefix, sizeof mapped_prefix) != 0) memset(network.bytes + 8, 0, 8);
    uint64_t key = address_hash(&network, guard->seed);
    return key != 0 ? key : 1;
}

/* FNV-1a from a seeded start, then the address module's mixer over it. */
static uint64_t guard_key_of_email(const guard_t *guard, const char *email, size_t length) {
    uint64_t hash = 0xcbf29ce484222325ull ^ guard->seed;
    for (size_t index = 0; index < length; index++) {
        hash ^= (uint8_t)email[index];
        hash *= 0x100000001b3ull;
    }
    address_t folded;
    memset(&folded, 0, sizeof folded);
    memcpy(folded.bytes, &hash, sizeof hash);
    memcpy(folded.bytes + 8, &length, RW_MIN(sizeof length, (size_t)8));
    uint64_t key = address_hash(&folded, ~guard->seed);
    return key != 0 ? key : 1;
}

/* The entry of `key`, or NULL when it is not tracked. */
static guard_entry_t *guard_find(const guard_table_t *table, uint64_t key) {
    uint32_t index = (uint32_t)key & table->mask;
    for (uint32_t probe = 0; probe < GUARD_PROBE_SLOTS; probe++) {
        guard_entry_t *entry = &table->entries[(index + probe) & table->mask];
        if (entry->key == key) return entry;
    }
    return NULL;
}

/* The entry of `key`, made (empty slot first, else the oldest of the probe
 * window is evicted) when it is not tracked. */
static guard_entry_t *guard_take(guard_table_t *table, uint64_t key, int64_t now_ms) {
    guard_entry_t *found = guard_find(table, key);
    if (found != NULL) return found;
    uint32_t index = (uint32_t)key & table->mask;
    guard_entry_t *victim = NULL;
    for (uint32_t probe = 0; probe < GUARD_PROBE_SLOTS; probe++) {
        guard_entry_t *entry = &table->entries[(index + probe) & table->mask];
        if (entry->key == 0) {
            victim = entry;
            break;
        }
        if (victim == NULL || entry->last_ms < victim->last_ms) victim = entry;
    }
    RW_ASSERT(victim != NULL);
    memset(victim, 0, sizeof *victim);
    victim->key = key;
    victim->last_ms = now_ms;
    return victim;
}

static uint32_t guard_window(int64_t now_ms, int64_t length_ms) {
    RW_ASSERT(now_ms >= 0);
    return (uint32_t)(now_ms / length_ms) + 1;
}

/* Seconds (rounded up, at least 1) until the window of now_ms ends. */
static uint32_t guard_until_window_end_s(int64_t now_ms, int64_t length_ms) {
    int64_t end_ms = (now_ms / length_ms + 1) * length_ms;
    int64_t seconds = (end_ms - now_ms + 999) / 1000;
    return (uint32_t)RW_MAX(seconds, (int64_t)1);
}

/* The count of slot `which` in the current window (0 once it moved on). */
static uint32_t guard_count_now(const guard_entry_t *entry, uint32_t which, uint32_t window) {
    return entry != NULL && entry->windows[which] == window ? entry->counts[which] : 0;
}

static void guard_count_add(guard_entry_t *entry, uint32_t which, uint32_t window) {
    if (entry->windows[which] != window) {
        entry->windows[which] = window;
        entry->counts[which] = 0;
    }
    if (entry->counts[which] < UINT32_MAX) entry->counts[which]++;
}

guard_verdict_t guard_registration_check(guard_t *guard, const address_t *client, int64_t now_ms,
                                         uint32_t *retry_after_s) {
    RW_ASSERT(guard != NULL && client != NULL && retry_after_s != NULL);
    *retry_after_s = 0;
    const guard_limits_t *limits = &guard->limits;
    const guard_entry_t *entry = guard_find(&guard->registrations, guard_key_of_address(guard, client));
    uint32_t hourly = limits->registrations_per_ip_per_hour;
    uint32_t daily = limits->registrations_per_ip_per_day;
    if (daily != 0 && guard_count_now(entry, 1, guard_window(now_ms, GUARD_DAY_MS)) >= daily) {
        *retry_after_s = guard_until_window_end_s(now_ms, GUARD_DAY_MS);
        return GUARD_REGISTRATION_LIMITED;
    }
    if (hourly != 0 && guard_count_now(entry, 0, guard_window(now_ms, GUARD_HOUR_MS)) >= hourly) {
        *retry_after_s = guard_until_window_end_s(now_ms, GUARD_HOUR_MS);
        return GUARD_REGISTRATION_LIMITED;
    }
    return GUARD_ALLOW;
}

void guard_registration_record(guard_t *guard, const address_t *client, int64_t now_ms) {
    RW_ASSERT(guard != NULL && client != NULL);
    guard_entry_t *entry = guard_take(&guard->registrations, guard_key_of_address(guard, client), now_ms);
    guard_count_add(entry, 0, guard_window(now_ms, GUARD_HOUR_MS));
    guard_count_add(entry, 1, guard_window(now_ms, GUARD_DAY_MS));
    entry->last_ms = now_ms;
}

/* The streak of one account from one network (see guard_key_of_address),
 * with a streak older than the memory forgotten. By network and not by
 * account alone: failures from anywhere would otherwise let anyone keep
 * the owner out, one wrong password every backoff. */
static guard_entry_t *guard_account(guard_t *guard, const address_t *client, const char *email, size_t length,
                                    int64_t now_ms, bool make) {
    uint64_t key = guard_key_of_email(guard, email, length) ^ (guard_key_of_address(guard, client) * 0x9e3779b97f4a7c15ull);
    if (key == 0) key = 1;
    guard_entry_t *entry = make ? guard_take(&guard->accounts, key, now_ms) : guard_find(&guard->accounts, key);
    if (entry != NULL && now_ms - entry->last_ms > GUARD_STREAK_MEMORY_MS) {
        entry->counts[0] = 0;
        entry->blocked_until_ms = 0;
    }
    return entry;
}

guard_verdict_t guard_login_check(guard_t *guard, const address_t *client, const char *email, size_t email_length,
                                  int64_t now_ms, uint32_t *retry_after_s) {
    RW_ASSERT(guard != NULL && client != NULL && retry_after_s != NULL);
    RW_ASSERT(email != NULL || email_length == 0);
    *retry_after_s = 0;
    uint32_t per_minute = guard->limits.login_failures_per_ip_per_minute;
    if (per_minute != 0) {
        const guard_entry_t *entry = guard_find(&guard->login_failures, guard_key_of_address(guard, client));
        if (guard_count_now(entry, 0, guard_window(now_ms, GUARD_MINUTE_MS)) >= per_minute) {
            *retry_after_s = guard_until_window_end_s(now_ms, GUARD_MINUTE_MS);
            return GUARD_LOGIN_LIMITED;
        }
    }
    const guard_entry_t *account = guard_account(guard, client, email, email_length, now_ms, false);
    if (account != NULL && account->blocked_until_ms > now_ms) {
        int64_t seconds = (account->blocked_until_ms - now_ms + 999) / 1000;
        *retry_after_s = (uint32_t)RW_MAX(seconds, (int64_t)1);
        return GUARD_ACCOUNT_BACKOFF;
    }
    return GUARD_ALLOW;
}

/* base * 2^exponent seconds, at most max_s, without overflowing. */
static uint32_t guard_backoff_s(const guard_limits_t *limits, uint32_t exponent) {
    uint64_t seconds = limits->login_backoff_base_s;
    for (uint32_t step = 0; step < exponent && seconds < limits->login_backoff_max_s; step++) seconds *= 2;
    return (uint32_t)RW_MIN(seconds, (uint64_t)limits->login_backoff_max_s);
}

void guard_login_failed(guard_t *guard, const address_t *client, const char *email, size_t email_length,
                        int64_t now_ms) {
    RW_ASSERT(guard != NULL && client != NULL);
    RW_ASSERT(email != NULL || email_length == 0);
    const guard_limits_t *limits = &guard->limits;
    if (limits->login_failures_per_ip_per_minute != 0) {
        guard_entry_t *entry = guard_take(&guard->login_failures, guard_key_of_address(guard, client), now_ms);
        guard_count_add(entry, 0, guard_window(now_ms, GUARD_MINUTE_MS));
        entry->last_ms = now_ms;
    }
    if (limits->login_failures_before_backoff == 0) return;
    guard_entry_t *account = guard_account(guard, client, email, email_length, now_ms, true);
    if (account->counts[0] < UINT32_MAX) account->counts[0]++;
    account->last_ms = now_ms;
    uint32_t streak = account->counts[0];
    if (streak >= limits->login_failures_before_backoff) {
        uint32_t seconds = guard_backoff_s(limits, streak - limits->login_failures_before_backoff);
        account->blocked_until_ms = now_ms + (int64_t)seconds * 1000;
        RW_ASSERT(account->blocked_until_ms > now_ms || seconds == 0);
    }
}

void guard_login_succeeded(guard_t *guard, const address_t *client, const char *email, size_t email_length,
                           int64_t now_ms) {
    RW_ASSERT(guard != NULL && client != NULL);
    guard_entry_t *account = guard_account(guard, client, email, email_length, now_ms, false);
    if (account == NULL) return;
    account->counts[0] = 0;
    account->blocked_until_ms = 0;
    account->last_ms = now_ms;
}
