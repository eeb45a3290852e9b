#include "unit.h"

#include "ringway/account.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers -------------------------------------------------------------- */

static uint64_t test_mix(uint64_t value) {
    value += UINT64_C(0x9E3779B97F4A7C15);
    value = (value ^ (value >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    value = (value ^ (value >> 27)) * UINT64_C(0x94D049BB133111EB);
    return value ^ (value >> 31);
}

/* A deterministic pseudo-hash for key number `number`: four mixed words. */
static void test_hash(uint64_t number, uint8_t hash[ACCOUNT_KEY_HASH_BYTES]) {
    for (int word = 0; word < 4; word++) {
        uint64_t value = test_mix(number * 4 + (uint64_t)word);
        memcpy(hash + word * 8, &value, 8);
    }
}

/* Fields of key number `number`, all derived from it so readers can check
 * every field of what they find. */
static void test_fields(uint64_t number, uint32_t users_max, account_key_t *fields) {
    memset(fields, 0, sizeof(*fields));
    test_hash(number, fields->hash);
    fields->id = number + 1;
    fields->user_index = (uint32_t)(number % users_max);
    snprintf(fields->name, sizeof(fields->name), "key-%llu", (unsigned long long)number);
    snprintf(fields->prefix, sizeof(fields->prefix), "sk-%08llu",
             (unsigned long long)(number % 100000000));
    snprintf(fields->last4, sizeof(fields->last4), "%04llu", (unsigned long long)(number % 10000));
    atomic_init(&fields->status, (uint32_t)(number % 2));
    atomic_init(&fields->expires_at_ms, (int64_t)number * 3);
    atomic_init(&fields->all_models, (uint32_t)(number % 3 == 0));
    for (int word = 0; word < ACCOUNT_MODEL_WORDS; word++) {
        atomic_init(&fields->model_bits[word], test_mix(number + 1000 * (uint64_t)word));
    }
    atomic_init(&fields->spend_cap_micros, number % 5 == 0 ? -1 : (int64_t)number * 7);
    atomic_init(&fields->spend_available_micros, (int64_t)number * 5);
    atomic_init(&fields->tier, (uint32_t)(number % 7));
}

/* Whether a found key holds exactly the fields of key number `number`. */
static bool test_key_intact(const account_key_t *key, uint64_t number, uint32_t users_max) {
    account_key_t expected;
    test_fields(number, users_max, &expected);
    account_key_t *shared = (account_key_t *)key;
    if (atomic_load_explicit(&shared->state, memory_order_acquire) != ACCOUNT_SLOT_READY) return false;
    if (memcmp(key->hash, expected.hash, sizeof(key->hash)) != 0) return false;
    if (key->id != expected.id || key->user_index != expected.user_index) return false;
    if (strcmp(key->name, expected.name) != 0 || strcmp(key->prefix, expected.prefix) != 0 ||
        strcmp(key->last4, expected.last4) != 0) {
        return false;
    }
    if (atomic_load(&shared->status) != atomic_load(&expected.status)) return false;
    if (atomic_load(&shared->expires_at_ms) != atomic_load(&expected.expires_at_ms)) return false;
    if (atomic_load(&shared->all_models) != atomic_load(&expected.all_models)) return false;
    for (int word = 0; word < ACCOUNT_MODEL_WORDS; word++) {
        if (atomic_load(&shared->model_bits[word]) != atomic_load(&expected.model_bits[word])) return false;
    }
    if (atomic_load(&shared->spend_cap_micros) != atomic_load(&expected.spend_cap_micros)) return false;
    if (atomic_load(&shared->spend_available_micros) !=
        atomic_load(&expected.spend_available_micros)) {
        return false;
    }
    return atomic_load(&shared->tier) == atomic_load(&expected.tier);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_init_bounds(void) {
    account_tables_t tables;
    CHECK(!account_tables_init(&tables, 0, 10));
    CHECK(tables.users == NULL && tables.keys == NULL);
    CHECK(!account_tables_init(&tables, 10, 0));
    CHECK(!account_tables_init(&tables, ACCOUNT_USERS_MAX_LIMIT + 1, 10));
    CHECK(!account_tables_init(&tables, 10, ACCOUNT_KEYS_MAX_LIMIT + 1));

    CHECK(account_tables_init(&tables, 10, 5));
    CHECK_EQ_INT(tables.key_index_mask, 15); /* 2 * 5 rounded up to 16 */
    CHECK_EQ_INT(tables.users_max, 10);
    CHECK_EQ_INT(tables.keys_max, 5);
    CHECK_EQ_INT(account_key_count(&tables), 0);
    CHECK_EQ_INT(atomic_load(&tables.user_count), 0);
    account_tables_release(&tables);
    CHECK(tables.users == NULL && tables.keys == NULL && tables.key_index == NULL);

    CHECK(account_tables_init(&tables, 1, 8));
    CHECK_EQ_INT(tables.key_index_mask, 15);
    account_tables_release(&tables);
    CHECK(account_tables_init(&tables, 1, 1));
    CHECK_EQ_INT(tables.key_index_mask, 1);
    account_tables_release(&tables);

    /* The default budgets of the config (100000 users, 262144 keys). */
    CHECK(account_tables_init(&tables, 100000, 262144));
    CHECK_EQ_INT(tables.key_index_mask, 524287);
    account_tables_release(&tables);
}

static void test_users(void) {
    account_tables_t tables;
    CHECK(account_tables_init(&tables, 4, 4));
    CHECK(account_user_get(&tables, 1) == NULL);

    CHECK_EQ_INT(account_user_publish(&tables, 2, "b@example.com", 13, 5000000, ACCOUNT_USER_ACTIVE), 1);
    CHECK_EQ_INT(atomic_load(&tables.user_count), 2);
    account_user_t *user = account_user_get(&tables, 2);
    CHECK(user != NULL);
    if (user != NULL) {
        CHECK_EQ_INT(user->id, 2);
        CHECK(strcmp(user->email, "b@example.com") == 0);
        CHECK_EQ_INT(atomic_load(&user->available_micros), 5000000);
        CHECK_EQ_INT(account_user_status(user), ACCOUNT_USER_ACTIVE);
        account_user_set_status(user, ACCOUNT_USER_SUSPENDED);
        CHECK_EQ_INT(account_user_status(user), ACCOUNT_USER_SUSPENDED);
    }
    CHECK(account_user_at(&tables, 1) == user);
    CHECK(account_user_get(&tables, 1) == NULL); /* slot 0 not published */
    CHECK(account_user_at(&tables, 0) == NULL);

    /* Out of range, republishing, bad emails. */
    CHECK_EQ_INT(account_user_publish(&tables, 0, "a@b.c", 5, 0, ACCOUNT_USER_ACTIVE), ACCOUNT_INDEX_NONE);
    CHECK_EQ_INT(account_user_publish(&tables, 5, "a@b.c", 5, 0, ACCOUNT_USER_ACTIVE), ACCOUNT_INDEX_NONE);
    CHECK_EQ_INT(account_user_publish(&tables, 2, "x@b.c", 5, 0, ACCOUNT_USER_ACTIVE), ACCOUNT_INDEX_NONE);
    CHECK(user != NULL && strcmp(user->email, "b@example.com") == 0);
    char long_email[ACCOUNT_EMAIL_BYTES + 1];
    memset(long_email, 'a', sizeof(long_email));
    CHECK_EQ_INT(account_user_publish(&tables, 1, long_email, ACCOUNT_EMAIL_BYTES, 0, ACCOUNT_USER_ACTIVE),
                 ACCOUNT_INDEX_NONE);
    CHECK_EQ_INT(account_user_publish(&tables, 1, "a\0b@c.d", 7, 0, ACCOUNT_USER_ACTIVE), ACCOUNT_INDEX_NONE);
    CHECK(account_user_get(&tables, 1) == NULL);
    CHECK_EQ_INT(account_user_publish(&tables, 1, long_email, ACCOUNT_EMAIL_BYTES - 1, -3, ACCOUNT_USER_SUSPENDED), 0);
    user = account_user_get(&tables, 1);
    CHECK(user != NULL && strlen(user->email) == ACCOUNT_EMAIL_BYTES - 1);
    CHECK(user != NULL && atomic_load(&user->available_micros) == -3);
    CHECK(user != NULL && account_user_status(user) == ACCOUNT_USER_SUSPENDED);
    CHECK_EQ_INT(atomic_load(&tables.user_count), 2); /* not lowered by a lower id */
    CHECK_EQ_INT(account_user_publish(&tables, 4, "d@e.f", 5, 0, ACCOUNT_USER_ACTIVE), 3);
    CHECK_EQ_INT(atomic_load(&tables.user_count), 4);
    CHECK(account_user_get(&tables, 5) == NULL);
    CHECK(account_user_get(&tables, UINT64_MAX) == NULL);
    CHECK(account_user_at(&tables, UINT32_MAX) == NULL);
    account_tables_release(&tables);
}

static void test_keys_publish_find(void) {
    account_tables_t tables;
    CHECK(account_tables_init(&tables, 8, 64));
    account_key_t fields;
    for (uint64_t number = 0; number < 64; number++) {
        test_fields(number, 8, &fields);
        account_key_t *key = account_key_publish(&tables, &fields);
        CHECK(key != NULL);
        CHECK(key == &tables.keys[number]); /* creation order */
        CHECK_EQ_INT(account_key_count(&tables), number + 1);
    }
    for (uint64_t number = 0; number < 64; number++) {
        uint8_t hash[ACCOUNT_KEY_HASH_BYTES];
        test_hash(number, hash);
        account_key_t *key = account_key_find(&tables, hash);
        CHECK(key != NULL && test_key_intact(key, number, 8));
        CHECK(account_key_by_id(&tables, number + 1) == key);
        CHECK(account_key_at(&tables, (uint32_t)number) == key);
    }
    uint8_t unknown[ACCOUNT_KEY_HASH_BYTES];
    test_hash(1000, unknown);
    CHECK(account_key_find(&tables, unknown) == NULL);
    CHECK(account_key_by_id(&tables, 0) == NULL);
    CHECK(account_key_by_id(&tables, 65) == NULL);
    CHECK(account_key_at(&tables, 64) == NULL);
    /* A hash differing from a published one in its last byte only. */
    test_hash(5, unknown);
    unknown[31] ^= 1;
    CHECK(account_key_find(&tables, unknown) == NULL);
    account_tables_release(&tables);
}

static void test_keys_probe_collisions(void) {
    account_tables_t tables;
    CHECK(account_tables_init(&tables, 2, 32)); /* 64 index entries */
    account_key_t fields;
    /* 20 hashes with the same first 8 bytes, chosen so the probe starts at
     * the last entry and the chain wraps around to the start. */
    uint8_t hashes[20][ACCOUNT_KEY_HASH_BYTES];
    for (int number = 0; number < 20; number++) {
        memset(hashes[number], 0xA5, ACCOUNT_KEY_HASH_BYTES);
        hashes[number][0] = 63; /* little-endian prefix & 63 == 63 */
        for (int byte = 1; byte < 8; byte++) hashes[number][byte] = 0x11;
        hashes[number][8 + number % 24] = (uint8_t)number; /* differ after the prefix */
        hashes[number][31] = (uint8_t)(0x80 + number);
        test_fields((uint64_t)number, 2, &fields);
        memcpy(fields.hash, hashes[number], ACCOUNT_KEY_HASH_BYTES);
        CHECK(account_key_publish(&tables, &fields) != NULL);
    }
    /* The chain occupies 63, 0, 1, ... 18. */
    CHECK_EQ_INT(atomic_load(&tables.key_index[63]), 1);
    CHECK_EQ_INT(atomic_load(&tables.key_index[0]), 2);
    CHECK_EQ_INT(atomic_load(&tables.key_index[18]), 20);
    CHECK_EQ_INT(atomic_load(&tables.key_index[19]), 0);
    for (int number = 0; number < 20; number++) {
        account_key_t *key = account_key_find(&tables, hashes[number]);
        CHECK(key != NULL && key->id == (uint64_t)number + 1);
    }
    /* Same prefix, unpublished suffix: walks the whole chain, not found. */
    uint8_t forged[ACCOUNT_KEY_HASH_BYTES];
    memcpy(forged, hashes[7], sizeof(forged));
    forged[20] ^= 0x40;
    CHECK(account_key_find(&tables, forged) == NULL);
    /* A different prefix landing inside the chain (position 5) is placed after it. */
    test_fields(100, 2, &fields);
    memset(fields.hash, 0x33, ACCOUNT_KEY_HASH_BYTES);
    memset(fields.hash, 0, 8);
    fields.hash[0] = 5;
    account_key_t *late = account_key_publish(&tables, &fields);
    CHECK(late != NULL);
    CHECK_EQ_INT(atomic_load(&tables.key_index[19]), 21);
    CHECK(account_key_find(&tables, fields.hash) == late);
    CHECK(account_key_find(&tables, hashes[19]) != NULL);
    account_tables_release(&tables);
}

static void test_keys_full_and_refusals(void) {
    account_tables_t tables;
    CHECK(account_tables_init(&tables, 3, 4));
    account_key_t fields;

    /* Refused fields consume no slot. */
    test_fields(0, 3, &fields);
    fields.id = 0;
    CHECK(account_key_publish(&tables, &fields) == NULL);
    test_fields(0, 3, &fields);
    fields.user_index = 3;
    CHECK(account_key_publish(&tables, &fields) == NULL);
    test_fields(0, 3, &fields);
    memset(fields.name, 'n', sizeof(fields.name));
    CHECK(account_key_publish(&tables, &fields) == NULL);
    test_fields(0, 3, &fields);
    memset(fields.prefix, 'p', sizeof(fields.prefix));
    CHECK(account_key_publish(&tables, &fields) == NULL);
    test_fields(0, 3, &fields);
    memset(fields.last4, 'l', sizeof(fields.last4));
    CHECK(account_key_publish(&tables, &fields) == NULL);
    CHECK_EQ_INT(account_key_count(&tables), 0);

    for (uint64_t number = 0; number < 4; number++) {
        test_fields(number, 3, &fields);
        CHECK(account_key_publish(&tables, &fields) != NULL);
    }
    /* Duplicate hash (new id), duplicate id (new hash). */
    account_tables_t more;
    CHECK(account_tables_init(&more, 3, 8));
    test_fields(0, 3, &fields);
    CHECK(account_key_publish(&more, &fields) != NULL);
    fields.id = 99;
    CHECK(account_key_publish(&more, &fields) == NULL);
    test_fields(1, 3, &fields);
    fields.id = 1;
    CHECK(account_key_publish(&more, &fields) == NULL);
    CHECK_EQ_INT(account_key_count(&more), 1);
    account_tables_release(&more);

    /* Full. */
    test_fields(4, 3, &fields);
    CHECK(account_key_publish(&tables, &fields) == NULL);
    CHECK_EQ_INT(account_key_count(&tables), 4);
    CHECK(account_key_find(&tables, fields.hash) == NULL);
    for (uint64_t number = 0; number < 4; number++) {
        uint8_t hash[ACCOUNT_KEY_HASH_BYTES];
        test_hash(number, hash);
        account_key_t *key = account_key_find(&tables, hash);
        CHECK(key != NULL && test_key_intact(key, number, 3));
    }
    account_tables_release(&tables);
}

static void test_key_helpers(void) {
    account_tables_t tables;
    CHECK(account_tables_init(&tables, 1, 2));
    account_key_t fields;
    test_fields(1, 1, &fields);
    atomic_store(&fields.all_models, 0);
    uint64_t none[ACCOUNT_MODEL_WORDS] = {0};
    for (int word = 0; word < ACCOUNT_MODEL_WORDS; word++) atomic_store(&fields.model_bits[word], 0);
    atomic_store(&fields.model_bits[0], UINT64_C(1) << 3);
    atomic_store(&fields.model_bits[3], UINT64_C(1) << 63);
    atomic_store(&fields.expires_at_ms, 0);
    account_key_t *key = account_key_publish(&tables, &fields);
    CHECK(key != NULL);
    if (key == NULL) return;

    CHECK(account_key_allows_model(key, 3));
    CHECK(!account_key_allows_model(key, 2));
    CHECK(!account_key_allows_model(key, 4));
    CHECK(account_key_allows_model(key, 255));
    CHECK(!account_key_allows_model(key, 254));
    CHECK(!account_key_allows_model(key, 256));
    CHECK(!account_key_allows_model(key, UINT32_MAX));

    account_key_set_models(key, true, NULL);
    CHECK(account_key_allows_model(key, 2));
    CHECK(account_key_allows_model(key, 256));
    account_key_set_models(key, false, none);
    for (uint32_t model = 0; model < 300; model++) CHECK(!account_key_allows_model(key, model));
    uint64_t some[ACCOUNT_MODEL_WORDS] = {0, UINT64_C(1), 0, 0};
    account_key_set_models(key, false, some);
    CHECK(account_key_allows_model(key, 64));
    CHECK(!account_key_allows_model(key, 3));

    /* Expiry: 0 never expires; the instant itself counts as expired. */
    CHECK(!account_key_expired(key, INT64_MAX));
    account_key_set_expiry(key, 1000);
    CHECK(!account_key_expired(key, 999));
    CHECK(account_key_expired(key, 1000));
    CHECK(account_key_expired(key, 1001));
    account_key_set_expiry(key, 0);
    CHECK(!account_key_expired(key, 1001));

    account_key_set_status(key, ACCOUNT_KEY_DISABLED);
    CHECK_EQ_INT(account_key_status(key), ACCOUNT_KEY_DISABLED);
    account_key_set_status(key, ACCOUNT_KEY_ACTIVE);
    CHECK_EQ_INT(account_key_status(key), ACCOUNT_KEY_ACTIVE);
    account_key_set_tier(key, 9);
    CHECK_EQ_INT(account_key_tier(key), 9);
    account_tables_release(&tables);
}

static void test_hash_equal(void) {
    uint8_t a[ACCOUNT_KEY_HASH_BYTES], b[ACCOUNT_KEY_HASH_BYTES];
    test_hash(3, a);
    memcpy(b, a, sizeof(b));
    CHECK(account_hash_equal(a, b));
    for (int byte = 0; byte < ACCOUNT_KEY_HASH_BYTES; byte++) {
        for (int bit = 0; bit < 8; bit++) {
            b[byte] ^= (uint8_t)(1 << bit);
            CHECK(!account_hash_equal(a, b));
            b[byte] ^= (uint8_t)(1 << bit);
        }
    }
    CHECK(account_hash_equal(a, b));
}

/* A second writer entering while one is publishing is a programmer error:
 * the child process must die on the assertion. */
static void test_second_writer_asserts(void) {
    fflush(NULL);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        account_tables_t tables;
        if (!account_tables_init(&tables, 1, 1)) _exit(2);
        atomic_store(&tables.writer_active, 1); /* as if another publish were running */
        if (freopen("/dev/null", "w", stderr) == NULL) _exit(3);
        account_user_publish(&tables, 1, "a@b.c", 5, 0, ACCOUNT_USER_ACTIVE);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
}

/* Seeded random operations against a simple model: every published key is
 * found with its fields, unpublished ones are not, refusals match. */
static void test_random_model(void) {
    enum { KEYS_MAX = 512, NUMBERS = 2048 };
    account_tables_t tables;
    CHECK(account_tables_init(&tables, 16, KEYS_MAX));
    static bool published[NUMBERS];
    memset(published, 0, sizeof(published));
    uint32_t count = 0;
    uint64_t seed = 12345;
    for (int round = 0; round < 5000; round++) {
        seed = test_mix(seed);
        uint64_t number = seed % NUMBERS;
        account_key_t fields;
        test_fields(number, 16, &fields);
        if ((seed >> 32) % 3 == 0) {
            account_key_t *key = account_key_publish(&tables, &fields);
            bool expect = !published[number] && count < KEYS_MAX;
            CHECK((key != NULL) == expect);
            if (key != NULL) {
                published[number] = true;
                count++;
            }
        } else {
            account_key_t *key = account_key_find(&tables, fields.hash);
            CHECK((key != NULL) == published[number]);
            if (key != NULL) CHECK(test_key_intact(key, number, 16));
            CHECK(account_key_by_id(&tables, number + 1) == key);
        }
        CHECK_EQ_INT(account_key_count(&tables), count);
    }
    CHECK(count > 400);
    account_tables_release(&tables);
}

/* ---- concurrency ---------------------------------------------------------- */

enum { CONCURRENT_KEYS = 100000, CONCURRENT_USERS = 16, CONCURRENT_READERS = 2 };

typedef struct concurrent_state {
    account_tables_t tables;
    _Atomic uint64_t published; /* keys [0, published) are published; release after each */
    _Atomic bool writer_done;
    _Atomic uint64_t failures;
    _Atomic uint64_t lookups;
} concurrent_state_t;

/* Every 16th key shares its hash prefix with the key before it, so probe
 * chains grow while readers walk them. */
static void concurrent_hash(uint64_t number, uint8_t hash[ACCOUNT_KEY_HASH_BYTES]) {
    test_hash(number, hash);
    if (number % 16 == 1) {
        uint8_t previous[ACCOUNT_KEY_HASH_BYTES];
        test_hash(number - 1, previous);
        memcpy(hash, previous, 8);
    }
}

static bool concurrent_check(concurrent_state_t *state, uint64_t number, bool must_find) {
    uint8_t hash[ACCOUNT_KEY_HASH_BYTES];
    concurrent_hash(number, hash);
    account_key_t *key = account_key_find(&state->tables, hash);
    if (key == NULL) return !must_find;
    if (memcmp(key->hash, hash, sizeof(hash)) != 0) return false;
    account_key_t expected;
    test_fields(number, CONCURRENT_USERS, &expected);
    if (key->id != expected.id || key->user_index != expected.user_index) return false;
    if (strcmp(key->name, expected.name) != 0 || strcmp(key->last4, expected.last4) != 0 ||
        strcmp(key->prefix, expected.prefix) != 0) {
        return false;
    }
    if (atomic_load_explicit(&key->tier, memory_order_relaxed) != atomic_load(&expected.tier)) return false;
    if (atomic_load_explicit(&key->expires_at_ms, memory_order_relaxed) !=
        atomic_load(&expected.expires_at_ms)) {
        return false;
    }
    if (atomic_load_explicit(&key->model_bits[2], memory_order_relaxed) !=
        atomic_load(&expected.model_bits[2])) {
        return false;
    }
    /* The id index is written after the hash index: a key caught mid-
     * publication may not be there yet. */
    account_key_t *by_id = account_key_by_id(&state->tables, number + 1);
    return by_id == key || (!must_find && by_id == NULL);
}

static void *concurrent_writer(void *argument) {
    concurrent_state_t *state = argument;
    for (uint64_t number = 0; number < CONCURRENT_KEYS; number++) {
        account_key_t fields;
        test_fields(number, CONCURRENT_USERS, &fields);
        concurrent_hash(number, fields.hash);
        if (account_key_publish(&state->tables, &fields) == NULL) {
            atomic_fetch_add(&state->failures, 1);
        }
        atomic_store_explicit(&state->published, number + 1, memory_order_release);
    }
    atomic_store_explicit(&state->writer_done, true, memory_order_release);
    return NULL;
}

static void *concurrent_reader(void *argument) {
    concurrent_state_t *state = argument;
    uint64_t seed = (uint64_t)(uintptr_t)&seed;
    uint64_t lookups = 0;
    for (;;) {
        bool done = atomic_load_explicit(&state->writer_done, memory_order_acquire);
        uint64_t published = atomic_load_explicit(&state->published, memory_order_acquire);
        if (published > 0) {
            seed = test_mix(seed);
            /* One published key (the newest half the time) and one that
             * may be mid-publication. */
            uint64_t number = (seed & 1) ? published - 1 : (seed >> 1) % published;
            if (!concurrent_check(state, number, true)) atomic_fetch_add(&state->failures, 1);
            if (!concurrent_check(state, published, false)) atomic_fetch_add(&state->failures, 1);
            lookups += 2;
        }
        if (done) break;
    }
    /* After the writer: every key is there. */
    for (uint64_t number = 0; number < CONCURRENT_KEYS; number++) {
        if (!concurrent_check(state, number, true)) atomic_fetch_add(&state->failures, 1);
    }
    atomic_fetch_add(&state->lookups, lookups);
    return NULL;
}

static void test_concurrent_publish_and_find(void) {
    static concurrent_state_t state;
    memset(&state, 0, sizeof(state));
    CHECK(account_tables_init(&state.tables, CONCURRENT_USERS, 131072));
    pthread_t writer, readers[CONCURRENT_READERS];
    for (int index = 0; index < CONCURRENT_READERS; index++) {
        CHECK(pthread_create(&readers[index], NULL, concurrent_reader, &state) == 0);
    }
    CHECK(pthread_create(&writer, NULL, concurrent_writer, &state) == 0);
    pthread_join(writer, NULL);
    for (int index = 0; index < CONCURRENT_READERS; index++) pthread_join(readers[index], NULL);
    CHECK_EQ_INT(atomic_load(&state.failures), 0);
    CHECK_EQ_INT(account_key_count(&state.tables), CONCURRENT_KEYS);
    CHECK(atomic_load(&state.lookups) > 0);
    fprintf(stderr, "  concurrent: %llu lookups during publication\n",
            (unsigned long long)atomic_load(&state.lookups));
    account_tables_release(&state.tables);
}

int main(void) {
    RUN_TEST(test_init_bounds);
    RUN_TEST(test_users);
    RUN_TEST(test_keys_publish_find);
    RUN_TEST(test_keys_probe_collisions);
    RUN_TEST(test_keys_full_and_refusals);
    RUN_TEST(test_key_helpers);
    RUN_TEST(test_hash_equal);
    RUN_TEST(test_second_writer_asserts);
    RUN_TEST(test_random_model);
    RUN_TEST(test_concurrent_publish_and_find);
    return UNIT_REPORT();
}
