/* Store tests: record encodings (round trips, every truncation, bad inputs,
 * seeded mutation), open and load, settlement atomicity, restart resolution
 * of open holds, usage listing, the store thread under two producers, the
 * synced ack of admin balance changes, RocksDB write faults, and a kill -9 of
 * a child process running the store thread under load. Every test works in
 * its own mkdtemp directory, removed afterwards. */
#include "ringway/store.h"

#include "../../src/store/store-internal.h"
#include "unit.h"

#include <errno.h>
#include <stdalign.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- Helpers ---- */

static int test_remove_entry(const char *path, const struct stat *status, int type, struct FTW *walk) {
    (void)status;
    (void)type;
    (void)walk;
    return remove(path);
}

typedef struct test_dir {
    char root[64];
    char store_path[128];
} test_dir_t;

static void test_dir_make(test_dir_t *dir) {
    snprintf(dir->root, sizeof dir->root, "/tmp/ringway-store-XXXXXX");
    char *made = mkdtemp(dir->root);
    RW_ASSERT(made != NULL);
    snprintf(dir->store_path, sizeof dir->store_path, "%s/data/store", dir->root);
}

static void test_dir_remove(test_dir_t *dir) { nftw(dir->root, test_remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

static store_options_t test_options(void) {
    store_options_t options;
    memset(&options, 0, sizeof options);
    options.users_max = 64;
    options.keys_max = 128;
    return options;
}

static bool test_open(store_t *store, const char *path, const store_options_t *options) {
    char error[512];
    if (store_open(store, path, options, error, sizeof error) != 0) {
        fprintf(stderr, "  store_open: %s\n", error);
        return false;
    }
    return true;
}

static bool test_load(store_t *store, store_load_result_t *result) {
    char error[512];
    if (store_load(store, NULL, NULL, result, error, sizeof error) != 0) {
        fprintf(stderr, "  store_load: %s\n", error);
        return false;
    }
    return true;
}

static uint64_t test_clock_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static int64_t test_wall_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static store_message_t test_user_create(uint64_t id, const char *email, int64_t balance_micros) {
    store_message_t message;
    memset(&message, 0, sizeof message);
    message.kind = STORE_MESSAGE_USER_CREATE;
    message.token = id;
    store_user_record_t *user = &message.body.user_create;
    user->id = id;
    user->balance_micros = balance_micros;
    user->created_ms = test_wall_ms();
    snprintf(user->email, sizeof user->email, "%s", email);
    snprintf(user->password_hash, sizeof user->password_hash, "$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA");
    return message;
}

static store_message_t test_key_create(uint64_t id, uint64_t user_id) {
    store_message_t message;
    memset(&message, 0, sizeof message);
    message.kind = STORE_MESSAGE_KEY_CREATE;
    message.token = 1000 + id;
    store_key_record_t *key = &message.body.key_create;
    key->id = id;
    key->user_id = user_id;
    for (int index = 0; index < 32; index++) key->hash[index] = (uint8_t)(id * 31 + (uint64_t)index);
    key->spend_cap_micros = -1;
    key->all_models = true;
    key->created_ms = test_wall_ms();
    snprintf(key->name, sizeof key->name, "key %llu", (unsigned long long)id);
    snprintf(key->prefix, sizeof key->prefix, "sk-abcdefgh");
    snprintf(key->last4, sizeof key->last4, "wxyz");
    return message;
}

static store_message_t test_hold_open(const char *request_id, uint64_t user_id, uint64_t key_id, int64_t amount) {
    store_message_t message;
    memset(&message, 0, sizeof message);
    message.kind = STORE_MESSAGE_HOLD_OPEN;
    store_hold_record_t *hold = &message.body.hold_open;
    snprintf(hold->request_id, sizeof hold->request_id, "%s", request_id);
    hold->user_id = user_id;
    hold->key_id = key_id;
    hold->amount_micros = amount;
    hold->created_ms = test_wall_ms();
    snprintf(hold->model, sizeof hold->model, "gpt-test");
    return message;
}

static store_message_t test_settle(const char *request_id, uint64_t user_id, uint64_t key_id, int64_t cost,
                                   int64_t hold) {
    store_message_t message;
    memset(&message, 0, sizeof message);
    message.kind = STORE_MESSAGE_SETTLE;
    /* Most tests settle without a HOLD_OPEN; those that open one clear the flag. */
    message.flags = STORE_MESSAGE_FLAG_ACK | STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED;
    store_settle_t *settle = &message.body.settle;
    snprintf(settle->usage.request_id, sizeof settle->usage.request_id, "%s", request_id);
    settle->usage.user_id = user_id;
    settle->usage.key_id = key_id;
    snprintf(settle->usage.model, sizeof settle->usage.model, "gpt-test");
    snprintf(settle->usage.upstream, sizeof settle->usage.upstream, "mock");
    snprintf(settle->usage.status, sizeof settle->usage.status, "completed");
    settle->usage.prompt_tokens = 10;
    settle->usage.completion_tokens = 20;
    settle->usage.cost_micros = cost;
    settle->usage.latency_ms = 5;
    settle->hold_micros = hold;
    return message;
}

/* A store and its thread with `producers` producers, none bound. */
typedef struct test_env {
    test_dir_t dir;
    store_t store;
    store_thread_t thread;
    bool running;
} test_env_t;

/* Opens and loads the store in env->dir, then starts its thread. */
static bool test_env_open_and_start(test_env_t *env, const store_options_t *options, uint32_t producers,
                                    uint32_t sync_interval_ms) {
    if (!test_open(&env->store, env->dir.store_path, options)) return false;
    store_load_result_t result;
    if (!test_load(&env->store, &result)) return false;
    char error[256];
    if (store_thread_create(&env->thread, &env->store, producers, 256, sync_interval_ms, error, sizeof error) != 0) {
        fprintf(stderr, "  store_thread_create: %s\n", error);
        return false;
    }
    if (store_thread_start(&env->thread) != 0) return false;
    env->running = true;
    return true;
}

static bool test_env_start(test_env_t *env, const store_options_t *options, uint32_t producers,
                           uint32_t sync_interval_ms) {
    test_dir_make(&env->dir);
    return test_env_open_and_start(env, options, producers, sync_interval_ms);
}

static void test_env_stop(test_env_t *env) {
    if (env->running) store_thread_stop(&env->thread);
    env->running = false;
    store_thread_destroy(&env->thread);
}

static void test_env_finish(test_env_t *env) {
    test_env_stop(env);
    store_close(&env->store);
    test_dir_remove(&env->dir);
}

static store_thread_statistics_t test_statistics(const store_thread_t *thread) {
    store_thread_statistics_t statistics;
    store_thread_statistics(thread, &statistics);
    return statistics;
}

static int test_call(test_env_t *env, const store_message_t *message, store_ack_t *ack) {
    int status = store_thread_call(&env->thread, 0, message, NULL, 10000, ack);
    RW_ASSERT(status == 0);
    return ack->status;
}

/* ---- Binary codecs ---- */

/* Filled through a pointer: a struct returned by value may lose its zeroed
 * padding, which the memcmp comparisons below look at. */
static void test_sample_user(store_user_record_t *user) {
    memset(user, 0, sizeof *user);
    user->id = 42;
    user->status = ACCOUNT_USER_SUSPENDED;
    user->balance_micros = -5; /* any value round-trips */
    user->created_ms = 1700000000123;
    snprintf(user->email, sizeof user->email, "Alice@Example.com");
    snprintf(user->password_hash, sizeof user->password_hash, "$argon2id$v=19$m=65536,t=3,p=4$salt$hash");
}

/* Filled through a pointer: a struct returned by value may lose its zeroed
 * padding, which the memcmp comparisons below look at. */
static void test_sample_key(store_key_record_t *key) {
    memset(key, 0, sizeof *key);
    key->id = 7;
    key->user_id = 42;
    for (int index = 0; index < 32; index++) key->hash[index] = (uint8_t)(255 - index);
    key->status = ACCOUNT_KEY_DISABLED;
    snprintf(key->tier, sizeof key->tier, "pro");
    uint32_t limits[STORE_KEY_LIMITS] = {100, STORE_LIMIT_INHERIT, 0, 5, STORE_LIMIT_INHERIT};
    memcpy(key->limits, limits, sizeof limits);
    key->token_quota = 1000000;
    key->tokens_used = UINT64_MAX;
    key->expires_at_ms = 1800000000000;
    key->spend_cap_micros = -1;
    key->spent_micros = INT64_MAX;
    key->created_ms = 1;
    key->all_models = false;
    snprintf(key->name, sizeof key->name, "ci key");
    snprintf(key->prefix, sizeof key->prefix, "sk-12345678");
    snprintf(key->last4, sizeof key->last4, "9abc");
    snprintf(key->models, sizeof key->models, "gpt-4o,gpt-4o-mini");
}

/* Filled through a pointer: a struct returned by value may lose its zeroed
 * padding, which the memcmp comparisons below look at. */
static void test_sample_hold(store_hold_record_t *hold) {
    memset(hold, 0, sizeof *hold);
    snprintf(hold->request_id, sizeof hold->request_id, "req_00000000000001");
    hold->user_id = 42;
    hold->key_id = 7;
    hold->amount_micros = 123456;
    hold->created_ms = INT64_MIN;
    snprintf(hold->model, sizeof hold->model, "gpt-4o");
}

typedef int (*test_encode_t)(const void *record, uint8_t *out, size_t capacity);
typedef int (*test_decode_t)(const uint8_t *bytes, size_t length, void *record);

/* Round trip, exact capacity, every truncation and one trailing byte refused,
 * a wrong version refused, and a seeded mutation loop: a mutated record
 * either fails to decode or re-encodes to exactly the mutated bytes. */
static void test_binary_codec(const void *record, size_t record_size, test_encode_t encode, test_decode_t decode) {
    uint8_t bytes[STORE_RECORD_BYTES_MAX + 1];
    int length = encode(record, bytes, STORE_RECORD_BYTES_MAX);
    CHECK(length > 2);
    if (length <= 2) return;
    alignas(16) uint8_t decoded[4096];
    RW_ASSERT(record_size <= sizeof decoded);
    CHECK_EQ_INT(decode(bytes, (size_t)length, decoded), 0);
    CHECK(memcmp(decoded, record, record_size) == 0);

    uint8_t exact[STORE_RECORD_BYTES_MAX];
    CHECK_EQ_INT(encode(record, exact, (size_t)length), length);
    CHECK_EQ_INT(encode(record, exact, (size_t)length - 1), -1);

    for (int cut = 0; cut < length; cut++) CHECK_EQ_INT(decode(bytes, (size_t)cut, decoded), -1);
    bytes[length] = 0;
    CHECK_EQ_INT(decode(bytes, (size_t)length + 1, decoded), -1);
    uint8_t saved = bytes[1];
    bytes[1] = 0x7f; /* a version no decoder knows */
    CHECK_EQ_INT(decode(bytes, (size_t)length, decoded), -1);
    bytes[1] = saved;
    saved = bytes[0];
    bytes[0] = 'Z';
    CHECK_EQ_INT(decode(bytes, (size_t)length, decoded), -1);
    bytes[0] = saved;

    unit_random_t random = {99};
    uint8_t mutated[STORE_RECORD_BYTES_MAX + 8];
    uint8_t again[STORE_RECORD_BYTES_MAX + 8];
    int accepted = 0;
    for (int iteration = 0; iteration < 4000; iteration++) {
        memcpy(mutated, bytes, (size_t)length);
        size_t mutated_length = (size_t)length;
        int edits = 1 + (int)(unit_random_next(&random) % 4);
        for (int edit = 0; edit < edits; edit++) {
            uint32_t choice = unit_random_next(&random) % 10;
            size_t position = unit_random_next(&random) % mutated_length;
            if (choice < 7) {
                mutated[position] = (uint8_t)unit_random_next(&random);
            } else if (choice < 9 && mutated_length > 1) {
                mutated_length = position; /* truncate */
                if (mutated_length == 0) mutated_length = 1;
            } else if (mutated_length < sizeof mutated) {
                mutated[mutated_length++] = (uint8_t)unit_random_next(&random); /* extend */
            }
        }
        if (decode(mutated, mutated_length, decoded) == 0) {
            accepted++;
            int again_length = encode(decoded, again, sizeof again);
            CHECK_EQ_INT(again_length, (int)mutated_length);
            if (again_length == (int)mutated_length) CHECK(memcmp(again, mutated, mutated_length) == 0);
        }
        if (unit_failures_in_test > 0) break;
    }
    CHECK(accepted > 0); /* value-byte mutations do decode */
}

static int test_user_encode(const void *record, uint8_t *out, size_t capacity) {
    return store_user_encode(record, out, capacity);
}
static int test_user_decode(const uint8_t *bytes, size_t length, void *record) {
    return store_user_decode(bytes, length, record);
}
static int test_key_encode(const void *record, uint8_t *out, size_t capacity) {
    return store_key_encode(record, out, capacity);
}
static int test_key_decode(const uint8_t *bytes, size_t length, void *record) {
    return store_key_decode(bytes, length, record);
}
static int test_hold_encode(const void *record, uint8_t *out, size_t capacity) {
    return store_hold_encode(record, out, capacity);
}
static int test_hold_decode(const uint8_t *bytes, size_t length, void *record) {
    return store_hold_decode(bytes, length, record);
}

static void test_codec_user(void) {
    store_user_record_t user;
    test_sample_user(&user);
    test_binary_codec(&user, sizeof user, test_user_encode, test_user_decode);
    /* Longest strings fit in STORE_RECORD_BYTES_MAX. */
    memset(user.email, 'e', sizeof user.email - 1);
    user.email[sizeof user.email - 1] = '\0';
    memset(user.password_hash, 'p', sizeof user.password_hash - 1);
    user.password_hash[sizeof user.password_hash - 1] = '\0';
    test_binary_codec(&user, sizeof user, test_user_encode, test_user_decode);
    /* A string longer than the destination is refused, not truncated. */
    uint8_t bytes[STORE_RECORD_BYTES_MAX];
    store_user_record_t sample;
    test_sample_user(&sample);
    int length = store_user_encode(&sample, bytes, sizeof bytes);
    RW_ASSERT(length > 0);
    size_t hash_length_at = (size_t)length - strlen(sample.password_hash) - 2;
    bytes[hash_length_at] = (uint8_t)STORE_PASSWORD_HASH_BYTES;
    bytes[hash_length_at + 1] = 0;
    store_user_record_t decoded;
    CHECK_EQ_INT(store_user_decode(bytes, (size_t)length, &decoded), -1);
}

/* A key record of version 1 (a numeric tier after the status, nothing after
 * the models) still decodes: the default tier, no overrides, no quota,
 * nothing used. */
static void test_codec_key_version_1(void) {
    store_key_record_t sample;
    test_sample_key(&sample);
    uint8_t current[STORE_RECORD_BYTES_MAX];
    int length = store_key_encode(&sample, current, sizeof current);
    RW_ASSERT(length > 0);
    size_t tail = 2 + strlen(sample.tier) + 4 * STORE_KEY_LIMITS + 8 + 8;
    size_t status_end = 2 + 8 + 8 + 32 + 4;
    uint8_t old[STORE_RECORD_BYTES_MAX];
    memcpy(old, current, status_end);
    old[1] = 1;
    memset(old + status_end, 0, 4); /* the numeric tier */
    old[status_end] = 9;
    memcpy(old + status_end + 4, current + status_end, (size_t)length - tail - status_end);
    size_t old_length = (size_t)length - tail + 4;
    store_key_record_t decoded;
    CHECK_EQ_INT(store_key_decode(old, old_length, &decoded), 0);
    CHECK_EQ_INT(decoded.id, sample.id);
    CHECK(strcmp(decoded.models, sample.models) == 0);
    CHECK(strcmp(decoded.tier, "") == 0);
    for (uint32_t kind = 0; kind < STORE_KEY_LIMITS; kind++) CHECK(decoded.limits[kind] == STORE_LIMIT_INHERIT);
    CHECK_EQ_INT(decoded.token_quota, 0);
    CHECK_EQ_INT(decoded.tokens_used, 0);
    /* A version 1 header with version 2's tail is malformed, and so is an
     * unknown version. */
    CHECK(store_key_decode(current, (size_t)length, &decoded) == 0);
    current[1] = 1;
    CHECK(store_key_decode(current, (size_t)length, &decoded) != 0);
    current[1] = 3;
    CHECK(store_key_decode(current, (size_t)length, &decoded) != 0);
}

static void test_codec_key(void) {
    store_key_record_t key;
    test_sample_key(&key);
    test_binary_codec(&key, sizeof key, test_key_encode, test_key_decode);
    memset(key.models, 'm', sizeof key.models - 1);
    key.models[sizeof key.models - 1] = '\0';
    memset(key.name, 'n', sizeof key.name - 1);
    key.name[sizeof key.name - 1] = '\0';
    test_binary_codec(&key, sizeof key, test_key_encode, test_key_decode);
    /* all_models is a strict boolean. */
    uint8_t bytes[STORE_RECORD_BYTES_MAX];
    store_key_record_t sample;
    test_sample_key(&sample);
    int length = store_key_encode(&sample, bytes, sizeof bytes);
    RW_ASSERT(length > 0);
    size_t flag_at = 2 + 8 + 8 + 32 + 4 + 8 * 4;
    CHECK_EQ_INT(bytes[flag_at], 0);
    bytes[flag_at] = 2;
    store_key_record_t decoded;
    CHECK_EQ_INT(store_key_decode(bytes, (size_t)length, &decoded), -1);
}

static void test_codec_hold(void) {
    store_hold_record_t hold;
    test_sample_hold(&hold);
    test_binary_codec(&hold, sizeof hold, test_hold_encode, test_hold_decode);
    /* A NUL inside a string is refused. */
    uint8_t bytes[STORE_RECORD_BYTES_MAX];
    int length = store_hold_encode(&hold, bytes, sizeof bytes);
    RW_ASSERT(length > 0);
    bytes[length - 1] = '\0';
    store_hold_record_t decoded;
    CHECK_EQ_INT(store_hold_decode(bytes, (size_t)length, &decoded), -1);
}

/* ---- JSON codecs ---- */

/* Filled through a pointer: a struct returned by value may lose its zeroed
 * padding, which the memcmp comparisons below look at. */
static void test_sample_usage(store_usage_record_t *usage) {
    memset(usage, 0, sizeof *usage);
    usage->id = 9;
    snprintf(usage->request_id, sizeof usage->request_id, "req_01000000000002");
    usage->key_id = 3;
    usage->user_id = 4;
    snprintf(usage->model, sizeof usage->model, "gpt-4o");
    snprintf(usage->upstream, sizeof usage->upstream, "openai");
    usage->prompt_tokens = 11;
    usage->completion_tokens = 22;
    usage->cached_tokens = 3;
    usage->reasoning_tokens = 4;
    usage->cost_micros = 1234;
    snprintf(usage->status, sizeof usage->status, "completed");
    usage->latency_ms = 250;
    usage->created_ms = 1700000000000;
    usage->estimated = true;
    usage->capped = false;
    usage->attempts = 2;
}

static void test_codec_usage_exact(void) {
    store_usage_record_t usage;
    test_sample_usage(&usage);
    char json[STORE_JSON_BYTES_MAX];
    int length = store_usage_encode(&usage, json, sizeof json);
    CHECK_EQ_BYTES(json, length,
                   "{\"id\":9,\"request_id\":\"req_01000000000002\",\"key_id\":3,\"user_id\":4,"
                   "\"model\":\"gpt-4o\",\"upstream\":\"openai\",\"prompt_tokens\":11,\"completion_tokens\":22,"
                   "\"cached_tokens\":3,\"reasoning_tokens\":4,\"cost_micros\":1234,\"status\":\"completed\","
                   "\"latency_ms\":250,\"created_ms\":1700000000000,\"estimated\":true,\"capped\":false,"
                   "\"attempts\":2}");
    store_usage_record_t decoded;
    CHECK_EQ_INT(store_usage_decode(json, (size_t)length, &decoded), 0);
    CHECK(memcmp(&decoded, &usage, sizeof usage) == 0);
    /* Too small a buffer: refused, never truncated. */
    CHECK_EQ_INT(store_usage_encode(&usage, json, (size_t)length - 1), -1);
    /* Every truncation is refused. */
    for (int cut = 0; cut < length; cut++) CHECK_EQ_INT(store_usage_decode(json, (size_t)cut, &decoded), -1);
}

static void test_codec_usage_strings_and_extremes(void) {
    store_usage_record_t usage;
    test_sample_usage(&usage);
    /* Whole fields cleared: the comparison below covers the bytes after the NUL. */
    memset(usage.model, 0, sizeof usage.model);
    memset(usage.status, 0, sizeof usage.status);
    snprintf(usage.model, sizeof usage.model, "a\"b\\c\nd\te\x01 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    snprintf(usage.status, sizeof usage.status, "\x7f/ok");
    usage.cost_micros = INT64_MIN;
    usage.created_ms = INT64_MAX;
    usage.prompt_tokens = UINT64_MAX;
    char json[STORE_JSON_BYTES_MAX];
    int length = store_usage_encode(&usage, json, sizeof json - 1);
    CHECK(length > 0);
    json[length > 0 ? length : 0] = '\0'; /* for strstr */
    CHECK(strstr(json, "\"model\":\"a\\\"b\\\\c\\nd\\te\\u0001 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"") != NULL);
    CHECK(strstr(json, "\"cost_micros\":-9223372036854775808") != NULL);
    CHECK(strstr(json, "\"prompt_tokens\":18446744073709551615") != NULL);
    store_usage_record_t decoded;
    CHECK_EQ_INT(store_usage_decode(json, (size_t)length, &decoded), 0);
    CHECK(memcmp(&decoded, &usage, sizeof usage) == 0);

    /* Bytes that are not UTF-8 become U+FFFD (the output stays valid JSON). */
    snprintf(usage.upstream, sizeof usage.upstream, "x\xff\xc3(\xed\xa0\x80y");
    length = store_usage_encode(&usage, json, sizeof json - 1);
    CHECK(length > 0);
    json[length > 0 ? length : 0] = '\0';
    CHECK(strstr(json, "\"upstream\":\"x\\ufffd\\ufffd(\\ufffd\\ufffd\\ufffdy\"") != NULL);
    CHECK_EQ_INT(store_usage_decode(json, (size_t)length, &decoded), 0);
    CHECK(strcmp(decoded.upstream, "x\xef\xbf\xbd\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdy") == 0);

    /* Every field at its longest, every byte escaped: fits. */
    memset(usage.model, 1, sizeof usage.model - 1);
    memset(usage.request_id, 2, sizeof usage.request_id - 1);
    memset(usage.upstream, 3, sizeof usage.upstream - 1);
    memset(usage.status, 4, sizeof usage.status - 1);
    length = store_usage_encode(&usage, json, sizeof json);
    CHECK(length > 0);
    CHECK_EQ_INT(store_usage_decode(json, (size_t)length, &decoded), 0);
    CHECK(memcmp(&decoded, &usage, sizeof usage) == 0);
}

static void test_codec_usage_decode_variants(void) {
    store_usage_record_t decoded;
    /* Members in any order, whitespace, unknown members ignored, missing ones zero. */
    const char *reordered = " { \"user_id\" : 5 , \"extra\" : [1, {\"a\": null}], \"id\": 17, "
                            "\"model\": \"m\\u00e9\", \"capped\": true } ";
    CHECK_EQ_INT(store_usage_decode(reordered, strlen(reordered), &decoded), 0);
    CHECK_EQ_INT(decoded.id, 17);
    CHECK_EQ_INT(decoded.user_id, 5);
    CHECK(strcmp(decoded.model, "m\xc3\xa9") == 0);
    CHECK(decoded.capped);
    CHECK(!decoded.estimated);
    CHECK_EQ_INT(decoded.cost_micros, 0);
    CHECK_EQ_INT(decoded.attempts, 1); /* a record from before routes: one attempt */
    const char *none_tried = "{\"id\":1,\"user_id\":1,\"attempts\":0}";
    CHECK_EQ_INT(store_usage_decode(none_tried, strlen(none_tried), &decoded), 0);
    CHECK_EQ_INT(decoded.attempts, 0);

    static const char *const refused[] = {
        "",
        "[]",
        "{}",
        "{\"user_id\":1}",                                   /* id missing */
        "{\"id\":1}",                                        /* user_id missing */
        "{\"id\":1,\"user_id\":1,\"id\":2}",                 /* repeated */
        "{\"id\":\"1\",\"user_id\":1}",                      /* wrong type */
        "{\"id\":1.5,\"user_id\":1}",                        /* not an integer */
        "{\"id\":1e3,\"user_id\":1}",
        "{\"id\":-1,\"user_id\":1}",                         /* negative unsigned */
        "{\"id\":18446744073709551616,\"user_id\":1}",       /* overflow */
        "{\"id\":1,\"user_id\":1,\"cost_micros\":9223372036854775808}",
        "{\"id\":1,\"user_id\":1,\"model\":\"a\\u0000b\"}",  /* NUL inside */
        "{\"id\":1,\"user_id\":1,\"estimated\":1}",
        "{\"id\":1,\"user_id\":1,\"attempts\":4294967296}",
        "{\"id\":1,\"user_id\":1,\"attempts\":\"2\"}",
        "{\"id\":1,\"user_id\":1,}",                         /* not JSON */
        "{\"id\":1,\"user_id\":1} x",
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(refused); index++) {
        if (store_usage_decode(refused[index], strlen(refused[index]), &decoded) != -1) {
            fprintf(stderr, "  accepted: %s\n", refused[index]);
            CHECK(false);
        }
    }
    /* A string longer than its field is refused. */
    char json[STORE_JSON_BYTES_MAX];
    char status[64];
    memset(status, 's', sizeof status - 1);
    status[sizeof status - 1] = '\0';
    snprintf(json, sizeof json, "{\"id\":1,\"user_id\":1,\"status\":\"%s\"}", status);
    CHECK_EQ_INT(store_usage_decode(json, strlen(json), &decoded), -1);
    CHECK_EQ_INT(store_usage_decode(NULL, 0, &decoded), -1);
}

/* Seeded mutations of an encoded record: no crash, and whatever decodes
 * re-encodes to something that decodes to the same record. */
static void test_codec_usage_mutations(void) {
    store_usage_record_t usage;
    test_sample_usage(&usage);
    char json[STORE_JSON_BYTES_MAX];
    int length = store_usage_encode(&usage, json, sizeof json);
    RW_ASSERT(length > 0);
    unit_random_t random = {4242};
    char mutated[STORE_JSON_BYTES_MAX];
    char again[STORE_JSON_BYTES_MAX];
    int accepted = 0;
    for (int iteration = 0; iteration < 5000; iteration++) {
        memcpy(mutated, json, (size_t)length);
        size_t mutated_length = (size_t)length;
        int edits = 1 + (int)(unit_random_next(&random) % 3);
        for (int edit = 0; edit < edits; edit++) {
            size_t position = unit_random_next(&random) % mutated_length;
            uint32_t choice = unit_random_next(&random) % 4;
            static const char alphabet[] = "{}[]\":,0123456789-.eEtruefalsn \\u";
            if (choice == 0) {
                mutated[position] = (char)unit_random_next(&random);
            } else if (choice == 1) {
                mutated[position] = alphabet[unit_random_next(&random) % (sizeof alphabet - 1)];
            } else if (choice == 2 && mutated_length > 1) {
                memmove(mutated + position, mutated + position + 1, mutated_length - position - 1);
                mutated_length--;
            } else if (mutated_length + 1 < sizeof mutated) {
                memmove(mutated + position + 1, mutated + position, mutated_length - position);
                mutated[position] = alphabet[unit_random_next(&random) % (sizeof alphabet - 1)];
                mutated_length++;
            }
        }
        store_usage_record_t decoded;
        if (store_usage_decode(mutated, mutated_length, &decoded) != 0) continue;
        accepted++;
        int again_length = store_usage_encode(&decoded, again, sizeof again);
        CHECK(again_length > 0);
        store_usage_record_t twice;
        CHECK_EQ_INT(store_usage_decode(again, (size_t)again_length, &twice), 0);
        CHECK(memcmp(&twice, &decoded, sizeof twice) == 0);
        if (unit_failures_in_test > 0) break;
    }
    CHECK(accepted > 0);
}

/* A block of records decodes back to them, record by record; every cut of
 * it reads the records wholly before the cut and then ends (a cut at a
 * record's end) or fails (anywhere else). */
static void test_codec_usage_block(void) {
    enum { RECORDS = 3 };
    store_usage_record_t records[RECORDS];
    for (int index = 0; index < RECORDS; index++) test_sample_usage(&records[index]);
    records[0].id = 100;
    records[1].id = 101;
    records[1].created_ms += 7;
    records[1].prompt_tokens = UINT64_MAX;
    records[1].cost_micros = INT64_MAX;
    records[1].estimated = false;
    records[1].capped = true;
    memset(records[1].request_id, 'r', sizeof records[1].request_id - 1);
    memset(records[1].model, 'm', sizeof records[1].model - 1);
    memset(records[1].upstream, 'u', sizeof records[1].upstream - 1);
    memset(records[1].status, 's', sizeof records[1].status - 1);
    records[2].id = 160; /* ids need not be consecutive */
    records[2].created_ms += 9;
    records[2].user_id = UINT64_MAX;
    records[2].key_id = 0;
    records[2].cost_micros = -5;
    memset(records[2].model, 0, sizeof records[2].model);
    uint8_t bytes[STORE_USAGE_BLOCK_BYTES_MAX];
    store_usage_block_writer_t writer;
    store_usage_block_begin(&writer, bytes, sizeof bytes, 100, records[0].created_ms);
    size_t ends[RECORDS];
    for (int index = 0; index < RECORDS; index++) {
        CHECK_EQ_INT(store_usage_block_add(&writer, &records[index]), 0);
        ends[index] = writer.length;
    }
    CHECK_EQ_INT(writer.count, RECORDS);
    /* Too little room: refused, the block unchanged. */
    store_usage_block_writer_t small;
    uint8_t small_bytes[STORE_USAGE_BLOCK_HEADER_BYTES + 20];
    store_usage_block_begin(&small, small_bytes, sizeof small_bytes, 100, records[0].created_ms);
    CHECK_EQ_INT(store_usage_block_add(&small, &records[1]), -1);
    CHECK_EQ_INT(small.length, STORE_USAGE_BLOCK_HEADER_BYTES);
    CHECK_EQ_INT(small.count, 0);

    store_usage_block_reader_t reader;
    store_usage_record_t decoded;
    CHECK_EQ_INT(store_usage_block_open(&reader, bytes, writer.length, 100), 0);
    for (int index = 0; index < RECORDS; index++) {
        CHECK_EQ_INT(store_usage_block_next(&reader, &decoded), 1);
        CHECK(memcmp(&decoded, &records[index], sizeof decoded) == 0);
    }
    CHECK_EQ_INT(store_usage_block_next(&reader, &decoded), 0);
    for (size_t cut = 0; cut < writer.length; cut++) {
        if (cut < STORE_USAGE_BLOCK_HEADER_BYTES) {
            CHECK_EQ_INT(store_usage_block_open(&reader, bytes, cut, 100), -1);
            continue;
        }
        CHECK_EQ_INT(store_usage_block_open(&reader, bytes, cut, 100), 0);
        int whole = 0;
        while (whole < RECORDS && ends[whole] <= cut) whole++;
        for (int index = 0; index < whole; index++) CHECK_EQ_INT(store_usage_block_next(&reader, &decoded), 1);
        bool at_end = cut == STORE_USAGE_BLOCK_HEADER_BYTES || (whole > 0 && ends[whole - 1] == cut);
        CHECK_EQ_INT(store_usage_block_next(&reader, &decoded), at_end ? 0 : -1);
    }
    /* Not a block: another tag, another version. */
    uint8_t changed[STORE_USAGE_BLOCK_BYTES_MAX];
    memcpy(changed, bytes, writer.length);
    changed[0] = 'U';
    CHECK_EQ_INT(store_usage_block_open(&reader, changed, writer.length, 100), -1);
    changed[0] = bytes[0];
    changed[1] = 3;
    CHECK_EQ_INT(store_usage_block_open(&reader, changed, writer.length, 100), -1);
    /* A version 1 block (written before routes): the same records without
     * the attempts varint, read as one attempt each. */
    {
        store_usage_record_t old = records[0];
        old.attempts = 1;
        uint8_t v2[STORE_USAGE_BLOCK_BYTES_MAX];
        store_usage_block_writer_t fresh;
        store_usage_block_begin(&fresh, v2, sizeof v2, 100, old.created_ms);
        CHECK_EQ_INT(store_usage_block_add(&fresh, &old), 0);
        CHECK_EQ_INT(v2[1], 2);
        CHECK_EQ_INT(v2[fresh.length - 1], 1); /* the attempts varint is the last byte */
        v2[1] = 1;
        CHECK_EQ_INT(store_usage_block_open(&reader, v2, fresh.length - 1, 100), 0);
        CHECK_EQ_INT(store_usage_block_next(&reader, &decoded), 1);
        CHECK(memcmp(&decoded, &old, sizeof decoded) == 0);
        CHECK_EQ_INT(store_usage_block_next(&reader, &decoded), 0);
    }
    /* A flag bit nobody writes, a NUL inside a string, a user 0, a varint
     * past 64 bits: refused. The first record's flags byte is the 11th of
     * its fields; its request id follows with its length byte. */
    store_usage_block_writer_t one;
    store_usage_record_t plain;
    test_sample_usage(&plain);
    plain.id = 100;
    store_usage_block_begin(&one, changed, sizeof changed, 100, plain.created_ms);
    CHECK_EQ_INT(store_usage_block_add(&one, &plain), 0);
    size_t flags_at = 0;
    {
        /* Every varint of the sample but created_ms, latency_ms and cost is
         * one byte: id 0, created 0, user 4, key 3, tokens 11 22 3 4, cost
         * 1234 (zigzag 2468: two bytes), latency 250 (two bytes). */
        flags_at = STORE_USAGE_BLOCK_HEADER_BYTES + 8 + 2 + 2;
        CHECK_EQ_INT(changed[flags_at], 1); /* estimated */
    }
    changed[flags_at] = 4;
    CHECK_EQ_INT(store_usage_block_open(&reader, changed, one.length, 100), 0);
    CHECK_EQ_INT(store_usage_block_next(&reader, &decoded), -1);
    changed[flags_at] = 1;
    changed[flags_at + 2] = '\0'; /* inside the request id */
    CHECK_EQ_INT(store_usage_block_open(&reader, changed, one.length, 100), 0);
    CHECK_EQ_INT(store_usage_block_next(&reader, &decoded), -1);
    changed[flags_at + 2] = plain.request_id[0];
    changed[STORE_USAGE_BLOCK_HEADER_BYTES + 2] = 0; /* user_id */
    CHECK_EQ_INT(store_usage_block_open(&reader, changed, one.length, 100), 0);
    CHECK_EQ_INT(store_usage_block_next(&reader, &decoded), -1);
    uint8_t overlong[STORE_USAGE_BLOCK_HEADER_BYTES + 11];
    memcpy(overlong, changed, STORE_USAGE_BLOCK_HEADER_BYTES);
    memset(overlong + STORE_USAGE_BLOCK_HEADER_BYTES, 0xff, 9);
    overlong[STORE_USAGE_BLOCK_HEADER_BYTES + 9] = 0x02; /* bit 64 */
    overlong[STORE_USAGE_BLOCK_HEADER_BYTES + 10] = 0;
    CHECK_EQ_INT(store_usage_block_open(&reader, overlong, sizeof overlong, 100), 0);
    CHECK_EQ_INT(store_usage_block_next(&reader, &decoded), -1);
}

static void test_codec_audit(void) {
    store_audit_record_t audit;
    memset(&audit, 0, sizeof audit);
    audit.id = 3;
    audit.time_ms = 1700000000001;
    snprintf(audit.admin, sizeof audit.admin, "sha256:0123abcd");
    snprintf(audit.action, sizeof audit.action, "balance.top_up");
    snprintf(audit.target, sizeof audit.target, "user:12");
    snprintf(audit.details, sizeof audit.details, "{\"amount\":\"1.50\"}");
    char json[STORE_JSON_BYTES_MAX];
    int length = store_audit_encode(&audit, json, sizeof json);
    CHECK_EQ_BYTES(json, length,
                   "{\"id\":3,\"time_ms\":1700000000001,\"admin\":\"sha256:0123abcd\",\"action\":\"balance.top_up\","
                   "\"target\":\"user:12\",\"details\":\"{\\\"amount\\\":\\\"1.50\\\"}\"}");
    store_audit_record_t decoded;
    CHECK_EQ_INT(store_audit_decode(json, (size_t)length, &decoded), 0);
    CHECK(memcmp(&decoded, &audit, sizeof audit) == 0);
    for (int cut = 0; cut < length; cut++) CHECK_EQ_INT(store_audit_decode(json, (size_t)cut, &decoded), -1);
    const char *no_time = "{\"id\":1}";
    CHECK_EQ_INT(store_audit_decode(no_time, strlen(no_time), &decoded), -1);
    /* Longest fields, all escaped. */
    memset(audit.details, 0x1f, sizeof audit.details - 1);
    memset(audit.target, '"', sizeof audit.target - 1);
    length = store_audit_encode(&audit, json, sizeof json);
    CHECK(length > 0);
    CHECK_EQ_INT(store_audit_decode(json, (size_t)length, &decoded), 0);
    CHECK(memcmp(&decoded, &audit, sizeof audit) == 0);
}

/* ---- Open and load ---- */

typedef struct test_loaded {
    uint64_t user_ids[16];
    int64_t balances[16];
    uint32_t users;
    uint64_t key_ids[16];
    uint64_t key_users[16];
    uint32_t keys;
    bool keys_before_users;
    int refuse_user; /* refuse this user id (0: none) */
} test_loaded_t;

static int test_on_user(void *context, const store_user_record_t *user) {
    test_loaded_t *loaded = context;
    if (loaded->keys > 0) loaded->keys_before_users = true;
    if (user->id == (uint64_t)loaded->refuse_user) return -1;
    if (loaded->users < 16) {
        loaded->user_ids[loaded->users] = user->id;
        loaded->balances[loaded->users] = user->balance_micros;
    }
    loaded->users++;
    return 0;
}

static int test_on_key(void *context, const store_key_record_t *key) {
    test_loaded_t *loaded = context;
    if (loaded->keys < 16) {
        loaded->key_ids[loaded->keys] = key->id;
        loaded->key_users[loaded->keys] = key->user_id;
    }
    loaded->keys++;
    return 0;
}

static void test_open_and_load(void) {
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    CHECK(test_env_start(&env, &options, 1, 10));
    CHECK_EQ_INT(env.store.state->next_user_id, 1);
    CHECK_EQ_INT(env.store.state->next_usage_id, 1);
    uint8_t schema[8];
    CHECK_EQ_INT(store_meta_get(&env.store, "schema", schema, sizeof schema), 1);
    CHECK(schema[0] == '2');

    store_ack_t ack;
    /* Created out of order: loading follows id order. */
    store_message_t message = test_user_create(3, "carol@example.com", 300);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_user_create(1, "alice@example.com", 100);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(ack.id, 1);
    CHECK_EQ_INT(ack.balance_micros, 100);
    message = test_key_create(2, 3);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_key_create(1, 1);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_key_create(5, 2); /* user 2 does not exist */
    CHECK_EQ_INT(test_call(&env, &message, &ack), -ENOENT);
    message = test_key_create(1, 1); /* id taken */
    CHECK_EQ_INT(test_call(&env, &message, &ack), -EEXIST);
    message = test_user_create(65, "big@example.com", 0); /* beyond users_max */
    CHECK_EQ_INT(test_call(&env, &message, &ack), -EINVAL);
    test_env_stop(&env);
    store_close(&env.store);

    CHECK(test_open(&env.store, env.dir.store_path, &options));
    CHECK_EQ_INT(env.store.state->next_user_id, 4);
    CHECK_EQ_INT(env.store.state->next_key_id, 3);
    test_loaded_t loaded;
    memset(&loaded, 0, sizeof loaded);
    store_load_callbacks_t callbacks = {test_on_user, test_on_key};
    store_load_result_t result;
    char error[256];
    CHECK_EQ_INT(store_load(&env.store, &callbacks, &loaded, &result, error, sizeof error), 0);
    CHECK_EQ_INT(loaded.users, 2);
    CHECK_EQ_INT(loaded.user_ids[0], 1);
    CHECK_EQ_INT(loaded.user_ids[1], 3);
    CHECK_EQ_INT(loaded.balances[0], 100);
    CHECK_EQ_INT(loaded.balances[1], 300);
    CHECK_EQ_INT(loaded.keys, 2);
    CHECK_EQ_INT(loaded.key_ids[0], 1);
    CHECK_EQ_INT(loaded.key_users[0], 1);
    CHECK_EQ_INT(loaded.key_ids[1], 2);
    CHECK_EQ_INT(loaded.key_users[1], 3);
    CHECK(!loaded.keys_before_users);
    CHECK_EQ_INT(result.users, 2);
    CHECK_EQ_INT(result.keys, 2);
    CHECK_EQ_INT(result.user_id_max, 3);
    CHECK_EQ_INT(result.key_id_max, 2);
    CHECK_EQ_INT(result.next_user_id, 4);
    CHECK_EQ_INT(result.next_key_id, 3);
    CHECK_EQ_INT(result.holds_released + result.holds_settled, 0);
    CHECK_EQ_INT(env.store.state->user_balance_micros[2], 300);

    /* A refusing callback fails the load. */
    loaded.refuse_user = 3;
    CHECK_EQ_INT(store_load(&env.store, &callbacks, &loaded, &result, error, sizeof error), -1);
    CHECK(strstr(error, "user 3") != NULL);

    /* Reads for the control thread. */
    store_user_record_t user;
    CHECK_EQ_INT(store_user_get_by_email(&env.store, "ALICE@Example.COM", &user), 0);
    CHECK_EQ_INT(user.id, 1);
    CHECK(strncmp(user.password_hash, "$argon2id$", 10) == 0);
    CHECK_EQ_INT(store_user_get_by_email(&env.store, "nobody@example.com", &user), -ENOENT);
    CHECK_EQ_INT(store_user_get(&env.store, 2, &user), -ENOENT);
    store_key_record_t key;
    CHECK_EQ_INT(store_key_get(&env.store, 2, &key), 0);
    CHECK_EQ_INT(key.user_id, 3);
    CHECK(strcmp(key.name, "key 2") == 0);
    store_close(&env.store);

    /* Too few slots for what is stored: the load says so. */
    store_options_t small = options;
    small.users_max = 2;
    CHECK(test_open(&env.store, env.dir.store_path, &small));
    CHECK_EQ_INT(store_load(&env.store, NULL, NULL, &result, error, sizeof error), -1);
    CHECK(strstr(error, "users_max") != NULL);
    store_close(&env.store);
    store_close(&env.store); /* idempotent */
    test_dir_remove(&env.dir);
}

static void test_user_email_and_updates(void) {
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    CHECK(test_env_start(&env, &options, 1, 10));
    store_ack_t ack;
    store_message_t message = test_user_create(1, "Bob@Example.com", 0);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_user_create(2, "bob@EXAMPLE.com", 0); /* same email, other case */
    CHECK_EQ_INT(test_call(&env, &message, &ack), -EEXIST);
    message = test_user_create(1, "other@example.com", 0); /* same id */
    CHECK_EQ_INT(test_call(&env, &message, &ack), -EEXIST);

    memset(&message, 0, sizeof message);
    message.kind = STORE_MESSAGE_USER_UPDATE;
    message.body.user_update.user_id = 1;
    message.body.user_update.fields = STORE_USER_FIELD_STATUS;
    message.body.user_update.status = ACCOUNT_USER_SUSPENDED;
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message.body.user_update.user_id = 9;
    CHECK_EQ_INT(test_call(&env, &message, &ack), -ENOENT);
    store_user_record_t user;
    CHECK_EQ_INT(store_user_get(&env.store, 1, &user), 0);
    CHECK_EQ_INT(user.status, ACCOUNT_USER_SUSPENDED);
    CHECK(strcmp(user.email, "Bob@Example.com") == 0);

    message = test_key_create(1, 1);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    memset(&message, 0, sizeof message);
    message.kind = STORE_MESSAGE_KEY_UPDATE;
    store_key_update_t *update = &message.body.key_update;
    update->key_id = 1;
    update->fields = STORE_KEY_FIELD_STATUS | STORE_KEY_FIELD_MODELS | STORE_KEY_FIELD_TIER |
                     STORE_KEY_FIELD_LIMITS | STORE_KEY_FIELD_TOKEN_QUOTA;
    update->status = ACCOUNT_KEY_DISABLED;
    update->all_models = false;
    snprintf(update->models, sizeof update->models, "gpt-4o-mini");
    snprintf(update->tier, sizeof update->tier, "starter");
    for (uint32_t kind = 0; kind < STORE_KEY_LIMITS; kind++) update->limits[kind] = kind * 10;
    update->token_quota = 5000;
    update->expires_at_ms = 77; /* not in fields: ignored */
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    store_key_record_t key;
    CHECK_EQ_INT(store_key_get(&env.store, 1, &key), 0);
    CHECK_EQ_INT(key.status, ACCOUNT_KEY_DISABLED);
    CHECK(!key.all_models);
    CHECK(strcmp(key.models, "gpt-4o-mini") == 0);
    CHECK(strcmp(key.tier, "starter") == 0);
    for (uint32_t kind = 0; kind < STORE_KEY_LIMITS; kind++) CHECK_EQ_INT(key.limits[kind], kind * 10);
    CHECK_EQ_INT(key.token_quota, 5000);
    CHECK_EQ_INT(key.expires_at_ms, 0);
    CHECK(strcmp(key.name, "key 1") == 0);

    /* Meta values. */
    const uint8_t secret[] = "0123456789abcdef0123456789abcdef";
    CHECK_EQ_INT(store_meta_put(&env.store, "jwt_secret", secret, 32), 0);
    uint8_t read_back[8];
    CHECK_EQ_INT(store_meta_get(&env.store, "jwt_secret", read_back, sizeof read_back), 32);
    CHECK(memcmp(read_back, secret, sizeof read_back) == 0);
    CHECK_EQ_INT(store_meta_get(&env.store, "missing", read_back, sizeof read_back), -ENOENT);
    test_env_finish(&env);
}

/* ---- Settlement ---- */

static void test_settlement_atomic(void) {
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    /* Write 6 (the second settlement below) fails. */
    options.fault_write_fail_at = 6;
    /* No group commit during the test: every counted write is a message. */
    CHECK(test_env_start(&env, &options, 1, 60000));
    store_ack_t ack;
    store_message_t message = test_user_create(1, "a@example.com", 1000000); /* write 1 */
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_key_create(1, 1); /* write 2 */
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);

    message = test_hold_open("req_a", 1, 1, 5000); /* write 3 */
    message.flags = STORE_MESSAGE_FLAG_ACK;
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    store_hold_record_t hold;
    CHECK_EQ_INT(store_hold_get(&env.store, "req_a", &hold), 0);
    CHECK_EQ_INT(hold.amount_micros, 5000);
    CHECK_EQ_INT(hold.key_id, 1);

    message = test_settle("req_a", 1, 1, 1234, 5000); /* write 4 */
    message.flags &= ~STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED; /* its hold was recorded */
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(ack.id, 1);
    CHECK_EQ_INT(ack.balance_micros, 1000000 - 1234);
    CHECK_EQ_INT(ack.spent_micros, 1234);
    /* Record, indexes, balance, spent and the hold's deletion, together. */
    store_usage_record_t usage;
    CHECK_EQ_INT(store_usage_get_by_request(&env.store, "req_a", &usage), 0);
    CHECK_EQ_INT(usage.cost_micros, 1234);
    CHECK_EQ_INT(usage.id, 1);
    CHECK(usage.created_ms > 0);
    store_user_record_t user;
    CHECK_EQ_INT(store_user_get(&env.store, 1, &user), 0);
    CHECK_EQ_INT(user.balance_micros, 1000000 - 1234);
    store_key_record_t key;
    CHECK_EQ_INT(store_key_get(&env.store, 1, &key), 0);
    CHECK_EQ_INT(key.spent_micros, 1234);
    /* The key's token count for its quota: prompt + completion. */
    CHECK_EQ_INT(key.tokens_used, message.body.settle.usage.prompt_tokens + message.body.settle.usage.completion_tokens);
    CHECK(key.tokens_used > 0);
    CHECK_EQ_INT(store_hold_get(&env.store, "req_a", &hold), -ENOENT);

    /* The failing write: nothing of the batch is visible, nothing changed
     * in memory, the ack says -EIO, and the thread carries on. */
    message = test_hold_open("req_b", 1, 1, 9000); /* write 5 */
    message.flags = STORE_MESSAGE_FLAG_ACK;
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_settle("req_b", 1, 1, 4321, 9000); /* write 6: fails */
    message.flags &= ~STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED; /* its hold was recorded */
    CHECK_EQ_INT(test_call(&env, &message, &ack), -EIO);
    CHECK_EQ_INT(store_usage_get_by_request(&env.store, "req_b", &usage), -ENOENT);
    CHECK_EQ_INT(store_hold_get(&env.store, "req_b", &hold), 0);
    CHECK_EQ_INT(store_user_get(&env.store, 1, &user), 0);
    CHECK_EQ_INT(user.balance_micros, 1000000 - 1234);
    CHECK_EQ_INT(env.store.state->user_balance_micros[0], 1000000 - 1234);
    CHECK_EQ_INT(env.store.state->key_spent_micros[0], 1234);
    CHECK_EQ_INT(test_statistics(&env.thread).write_errors, 1);

    message = test_settle("req_b", 1, 1, 4321, 9000); /* write 7: the retry succeeds */
    message.flags &= ~STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED; /* its hold was recorded */
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(ack.id, 2); /* the failed write used no usage id */
    CHECK_EQ_INT(ack.balance_micros, 1000000 - 1234 - 4321);
    CHECK_EQ_INT(store_hold_get(&env.store, "req_b", &hold), -ENOENT);

    /* Refusals: cost above the hold, unknown user or key. Nothing written. */
    message = test_settle("req_c", 1, 1, 10, 9);
    CHECK_EQ_INT(test_call(&env, &message, &ack), -EINVAL);
    message = test_settle("req_c", 7, 0, 1, 9);
    CHECK_EQ_INT(test_call(&env, &message, &ack), -ENOENT);
    message = test_settle("req_c", 1, 9, 1, 9);
    CHECK_EQ_INT(test_call(&env, &message, &ack), -ENOENT);
    /* A settlement without a key touches no key. */
    message = test_settle("req_d", 1, 0, 5, 9);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(env.store.state->key_spent_micros[0], 1234 + 4321);
    /* A hold released without charge. */
    message = test_hold_open("req_e", 1, 1, 100);
    message.flags = STORE_MESSAGE_FLAG_ACK;
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    memset(&message, 0, sizeof message);
    message.kind = STORE_MESSAGE_HOLD_RELEASE;
    snprintf(message.body.hold_release.request_id, sizeof message.body.hold_release.request_id, "req_e");
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(store_hold_get(&env.store, "req_e", &hold), -ENOENT);
    test_env_finish(&env);
}

/* ---- Restart resolution of open holds ---- */

typedef struct test_audit_seen {
    char actions[8][STORE_AUDIT_ACTION_BYTES];
    char details[8][STORE_AUDIT_DETAILS_BYTES];
    uint64_t ids[8];
    int count;
} test_audit_seen_t;

static int test_on_audit(void *context, const store_audit_record_t *record, const char *json, size_t length) {
    test_audit_seen_t *seen = context;
    store_audit_record_t decoded;
    if (store_audit_decode(json, length, &decoded) != 0 || decoded.id != record->id) return -1;
    if (seen->count < 8) {
        snprintf(seen->actions[seen->count], sizeof seen->actions[0], "%s", record->action);
        snprintf(seen->details[seen->count], sizeof seen->details[0], "%s", record->details);
        seen->ids[seen->count] = record->id;
    }
    seen->count++;
    return 0;
}

static void test_restart_resolves_holds(void) {
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    CHECK(test_env_start(&env, &options, 1, 10));
    store_ack_t ack;
    store_message_t message = test_user_create(1, "a@example.com", 50000);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_user_create(2, "b@example.com", 50000);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_key_create(1, 1);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);

    /* req_settled: its usage record exists (the hold is re-put with an
     * earlier time, as if the settlement had been the last write before a
     * crash that somehow left the hold). */
    message = test_settle("req_settled", 1, 1, 700, 1000);
    message.flags &= ~STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED; /* a recorded hold: indexed by request */
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    store_usage_record_t usage;
    CHECK_EQ_INT(store_usage_get_by_request(&env.store, "req_settled", &usage), 0);
    message = test_hold_open("req_settled", 1, 1, 1000);
    message.body.hold_open.created_ms = usage.created_ms - 5;
    message.flags = STORE_MESSAGE_FLAG_ACK;
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    /* req_open: no usage record. */
    message = test_hold_open("req_open", 1, 1, 2000);
    message.flags = STORE_MESSAGE_FLAG_ACK;
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    /* req_reused: a usage record of another user under the same request id
     * (request ids restart with the process): not this hold's. */
    message = test_settle("req_reused", 2, 0, 300, 1000);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_hold_open("req_reused", 1, 1, 3000);
    message.flags = STORE_MESSAGE_FLAG_ACK;
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    test_env_stop(&env);
    int64_t balance_before = env.store.state->user_balance_micros[0];
    CHECK_EQ_INT(balance_before, 50000 - 700);
    store_close(&env.store);

    CHECK(test_open(&env.store, env.dir.store_path, &options));
    store_load_result_t result;
    CHECK(test_load(&env.store, &result));
    CHECK_EQ_INT(result.holds_settled, 1);
    CHECK_EQ_INT(result.holds_released, 2);
    store_hold_record_t hold;
    CHECK_EQ_INT(store_hold_get(&env.store, "req_settled", &hold), -ENOENT);
    CHECK_EQ_INT(store_hold_get(&env.store, "req_open", &hold), -ENOENT);
    CHECK_EQ_INT(store_hold_get(&env.store, "req_reused", &hold), -ENOENT);
    /* Holds are never in the persisted balance: nothing to give back. */
    CHECK_EQ_INT(env.store.state->user_balance_micros[0], balance_before);
    store_user_record_t user;
    CHECK_EQ_INT(store_user_get(&env.store, 1, &user), 0);
    CHECK_EQ_INT(user.balance_micros, balance_before);

    test_audit_seen_t seen;
    memset(&seen, 0, sizeof seen);
    CHECK_EQ_INT(store_audit_list(&env.store, 0, test_on_audit, &seen), 3);
    int settled = 0;
    int released = 0;
    for (int index = 0; index < 3; index++) {
        if (strcmp(seen.actions[index], "hold.settled_at_restart") == 0) {
            settled++;
            CHECK(strstr(seen.details[index], "req_settled") != NULL);
        }
        if (strcmp(seen.actions[index], "hold.released_at_restart") == 0) released++;
    }
    CHECK_EQ_INT(settled, 1);
    CHECK_EQ_INT(released, 2);
    CHECK(seen.ids[0] > seen.ids[1] && seen.ids[1] > seen.ids[2]); /* newest first */
    memset(&seen, 0, sizeof seen);
    CHECK_EQ_INT(store_audit_list(&env.store, 2, test_on_audit, &seen), 2);
    CHECK_EQ_INT(result.next_audit_id, 4);

    /* A second restart finds nothing left to resolve. */
    store_close(&env.store);
    CHECK(test_open(&env.store, env.dir.store_path, &options));
    CHECK(test_load(&env.store, &result));
    CHECK_EQ_INT(result.holds_settled + result.holds_released, 0);
    CHECK_EQ_INT(env.store.state->next_audit_id, 4);
    store_close(&env.store);
    test_dir_remove(&env.dir);
}

/* ---- Usage listing ---- */

typedef struct test_usage_seen {
    uint64_t ids[64];
    uint64_t users[64];
    uint64_t keys[64];
    int64_t created[64];
    int count;
    int stop_after; /* 0: never */
} test_usage_seen_t;

static int test_on_usage(void *context, const store_usage_record_t *record, const char *json, size_t length) {
    test_usage_seen_t *seen = context;
    store_usage_record_t decoded;
    if (store_usage_decode(json, length, &decoded) != 0 || memcmp(&decoded, record, sizeof decoded) != 0) return -1;
    if (seen->count < 64) {
        seen->ids[seen->count] = record->id;
        seen->users[seen->count] = record->user_id;
        seen->keys[seen->count] = record->key_id;
        seen->created[seen->count] = record->created_ms;
    }
    seen->count++;
    return seen->stop_after != 0 && seen->count >= seen->stop_after ? 1 : 0;
}

static void test_usage_listing(void) {
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    CHECK(test_env_start(&env, &options, 1, 10));
    store_ack_t ack;
    store_message_t message = test_user_create(1, "a@example.com", 1000000);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_user_create(2, "b@example.com", 1000000);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_key_create(1, 1);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_key_create(2, 1);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_key_create(3, 2);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    /* 30 settlements: usage id i goes to user 1 (keys 1, 2 alternating) when
     * i % 3 != 0, else user 2 (key 3); a few milliseconds apart. */
    for (int index = 1; index <= 30; index++) {
        char request_id[32];
        snprintf(request_id, sizeof request_id, "req_list_%d", index);
        uint64_t user = index % 3 == 0 ? 2 : 1;
        uint64_t key = user == 2 ? 3 : (uint64_t)(index % 2 + 1);
        message = test_settle(request_id, user, key, index, 100);
        CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
        CHECK_EQ_INT(ack.id, index);
        struct timespec pause = {0, 2000000};
        nanosleep(&pause, NULL);
    }

    test_usage_seen_t seen;
    memset(&seen, 0, sizeof seen);
    store_usage_query_t query = {0};
    CHECK_EQ_INT(store_usage_list(&env.store, &query, test_on_usage, &seen), 30);
    for (int index = 0; index < 30; index++) CHECK_EQ_INT(seen.ids[index], 30 - index); /* newest first */
    for (int index = 1; index < 30; index++) CHECK(seen.created[index] <= seen.created[index - 1]);
    int64_t created_by_id[31];
    for (int index = 0; index < 30; index++) created_by_id[seen.ids[index]] = seen.created[index];

    memset(&seen, 0, sizeof seen);
    query.user_id = 1;
    query.limit = 5;
    CHECK_EQ_INT(store_usage_list(&env.store, &query, test_on_usage, &seen), 5);
    static const uint64_t user1_newest[5] = {29, 28, 26, 25, 23};
    for (int index = 0; index < 5; index++) {
        CHECK_EQ_INT(seen.ids[index], user1_newest[index]);
        CHECK_EQ_INT(seen.users[index], 1);
    }

    memset(&seen, 0, sizeof seen);
    memset(&query, 0, sizeof query);
    query.key_id = 2; /* user 1's odd usage ids not divisible by 3 */
    CHECK_EQ_INT(store_usage_list(&env.store, &query, test_on_usage, &seen), 10);
    for (int index = 0; index < seen.count && index < 64; index++) {
        CHECK_EQ_INT(seen.keys[index], 2);
        CHECK(seen.ids[index] % 2 == 1 && seen.ids[index] % 3 != 0);
        if (index > 0) CHECK(seen.ids[index] < seen.ids[index - 1]);
    }
    query.key_id = 99;
    CHECK_EQ_INT(store_usage_list(&env.store, &query, test_on_usage, &seen), -ENOENT);

    /* Time range [created of id 10, created of id 20): ids 10..19 at least
     * (records sharing a millisecond with id 20 are excluded with it). */
    memset(&seen, 0, sizeof seen);
    memset(&query, 0, sizeof query);
    query.from_ms = created_by_id[10];
    query.to_ms = created_by_id[20];
    int count = store_usage_list(&env.store, &query, test_on_usage, &seen);
    int expected = 0;
    for (int id = 1; id <= 30; id++) {
        if (created_by_id[id] >= query.from_ms && created_by_id[id] < query.to_ms) expected++;
    }
    CHECK_EQ_INT(count, expected);
    CHECK(count >= 5);
    for (int index = 0; index < seen.count && index < 64; index++) {
        CHECK(seen.created[index] >= query.from_ms && seen.created[index] < query.to_ms);
    }
    /* Same range for user 2 only. */
    memset(&seen, 0, sizeof seen);
    query.user_id = 2;
    count = store_usage_list(&env.store, &query, test_on_usage, &seen);
    for (int index = 0; index < seen.count && index < 64; index++) CHECK_EQ_INT(seen.users[index], 2);
    CHECK(count >= 1 && count <= expected);

    /* The visitor may stop early. */
    memset(&seen, 0, sizeof seen);
    memset(&query, 0, sizeof query);
    seen.stop_after = 3;
    CHECK_EQ_INT(store_usage_list(&env.store, &query, test_on_usage, &seen), 3);
    test_env_finish(&env);
}

/* ---- Sync acks and balance changes ---- */

static void test_balance_adjust_sync(void) {
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    test_dir_make(&env.dir);
    CHECK(test_open(&env.store, env.dir.store_path, &options));
    store_load_result_t result;
    CHECK(test_load(&env.store, &result));
    char error[256];
    /* A long sync interval: only the SYNC flag can explain a sync. */
    CHECK_EQ_INT(store_thread_create(&env.thread, &env.store, 1, 16, 60000, error, sizeof error), 0);
    CHECK_EQ_INT(store_thread_start(&env.thread), 0);
    env.running = true;

    store_ack_t ack;
    store_message_t message = test_user_create(1, "a@example.com", 100);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(test_statistics(&env.thread).syncs, 0);

    memset(&message, 0, sizeof message);
    message.kind = STORE_MESSAGE_BALANCE_ADJUST;
    message.flags = STORE_MESSAGE_FLAG_SYNC;
    message.token = 77;
    message.body.balance_adjust.user_id = 1;
    message.body.balance_adjust.delta_micros = 1500000;
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(ack.token, 77);
    CHECK_EQ_INT(ack.kind, STORE_MESSAGE_BALANCE_ADJUST);
    CHECK_EQ_INT(ack.balance_micros, 1500100);
    CHECK_EQ_INT(test_statistics(&env.thread).syncs, 1); /* acked after the synced write */
    store_user_record_t user;
    CHECK_EQ_INT(store_user_get(&env.store, 1, &user), 0);
    CHECK_EQ_INT(user.balance_micros, 1500100);

    /* Deduct to exactly zero, then below zero is refused. */
    message.body.balance_adjust.delta_micros = -1500100;
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(ack.balance_micros, 0);
    message.body.balance_adjust.delta_micros = -1;
    CHECK_EQ_INT(test_call(&env, &message, &ack), -ERANGE);
    CHECK_EQ_INT(ack.balance_micros, 0);
    message.body.balance_adjust.delta_micros = INT64_MAX;
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message.body.balance_adjust.delta_micros = 1; /* overflow */
    CHECK_EQ_INT(test_call(&env, &message, &ack), -ERANGE);
    message.body.balance_adjust.user_id = 5;
    CHECK_EQ_INT(test_call(&env, &message, &ack), -ENOENT);
    CHECK_EQ_INT(env.store.state->user_balance_micros[0], INT64_MAX);

    /* Audit entries get increasing ids and the store's time. */
    memset(&message, 0, sizeof message);
    message.kind = STORE_MESSAGE_AUDIT;
    snprintf(message.body.audit.admin, sizeof message.body.audit.admin, "sha256:abcd");
    snprintf(message.body.audit.action, sizeof message.body.audit.action, "balance.top_up");
    snprintf(message.body.audit.target, sizeof message.body.audit.target, "user:1");
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(ack.id, 1);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(ack.id, 2);
    test_audit_seen_t seen;
    memset(&seen, 0, sizeof seen);
    CHECK_EQ_INT(store_audit_list(&env.store, 0, test_on_audit, &seen), 2);
    CHECK(strcmp(seen.actions[0], "balance.top_up") == 0);
    test_env_finish(&env);
}

/* Starts a store with user 1 (balance 1000) and its key 1, written without
 * faults (the syncer's syncs come at times of their own, so counted writes
 * would not say which fails), then reopens it so that writes 1..fail_count
 * after the reopening fail, whatever they are. */
static void test_env_start_then_fail_writes(test_env_t *env, store_options_t *options, uint32_t fail_count,
                                            uint32_t sync_interval_ms) {
    CHECK(test_env_start(env, options, 1, 60000));
    store_ack_t ack;
    store_message_t message = test_user_create(1, "a@example.com", 1000);
    CHECK_EQ_INT(test_call(env, &message, &ack), 0);
    message = test_key_create(1, 1);
    CHECK_EQ_INT(test_call(env, &message, &ack), 0);
    test_env_stop(env);
    store_close(&env->store);
    options->fault_write_fail_at = 1;
    options->fault_write_fail_count = fail_count;
    CHECK(test_env_open_and_start(env, options, 1, sync_interval_ms));
}

/* Faults in batch writes and in the syncer's syncs are logged and
 * retried; the threads live. */
static void test_write_faults(void) {
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    test_env_start_then_fail_writes(&env, &options, 4, 10);
    store_ack_t ack;
    store_message_t message;
    int failures = 0;
    int successes = 0;
    for (int index = 0; index < 8; index++) {
        char request_id[32];
        snprintf(request_id, sizeof request_id, "req_fault_%d", index);
        message = test_settle(request_id, 1, 1, 10, 10);
        int status = test_call(&env, &message, &ack);
        CHECK(status == 0 || status == -EIO);
        if (status == 0) successes++;
        if (status == -EIO) failures++;
        struct timespec pause = {0, 15000000}; /* let a group commit happen in between */
        nanosleep(&pause, NULL);
    }
    CHECK(failures >= 1 && failures <= 4);
    CHECK(successes >= 4);
    CHECK_EQ_INT(env.store.state->user_balance_micros[0], 1000 - 10 * successes);
    store_thread_stop(&env.thread);
    env.running = false;
    CHECK(test_statistics(&env.thread).write_errors == 4); /* settlements and syncs together */
    test_env_stop(&env);
    store_close(&env.store);
    /* The durable state agrees with what was acknowledged. */
    options.fault_write_fail_at = 0;
    CHECK(test_open(&env.store, env.dir.store_path, &options));
    store_load_result_t result;
    CHECK(test_load(&env.store, &result));
    CHECK_EQ_INT(env.store.state->user_balance_micros[0], 1000 - 10 * successes);
    test_usage_seen_t seen;
    memset(&seen, 0, sizeof seen);
    store_usage_query_t query = {0};
    CHECK_EQ_INT(store_usage_list(&env.store, &query, test_on_usage, &seen), successes);
    store_close(&env.store);
    test_dir_remove(&env.dir);
}

/* The store thread's record cache: a round whose write failed leaves no
 * trace in it (a later settlement, which puts the user record again, must
 * not persist the failed round's suspension), and a round that was written
 * is what later rounds start from. */
static void test_record_cache_after_failed_write(void) {
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    test_env_start_then_fail_writes(&env, &options, 1, 60000); /* the first write after the reopening fails */
    store_ack_t ack;
    store_message_t message;
    memset(&message, 0, sizeof message);
    message.kind = STORE_MESSAGE_USER_UPDATE;
    message.body.user_update.user_id = 1;
    message.body.user_update.fields = STORE_USER_FIELD_STATUS;
    message.body.user_update.status = ACCOUNT_USER_SUSPENDED;
    CHECK_EQ_INT(test_call(&env, &message, &ack), -EIO);
    message = test_settle("req_cache_1", 1, 1, 10, 10);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    store_user_record_t user;
    CHECK_EQ_INT(store_user_get(&env.store, 1, &user), 0);
    CHECK_EQ_INT(user.status, ACCOUNT_USER_ACTIVE);
    CHECK_EQ_INT(user.balance_micros, 990);
    /* Written rounds carry on from each other: the name change survives
     * the settlements after it. */
    memset(&message, 0, sizeof message);
    message.kind = STORE_MESSAGE_KEY_UPDATE;
    message.body.key_update.key_id = 1;
    message.body.key_update.fields = STORE_KEY_FIELD_NAME;
    snprintf(message.body.key_update.name, sizeof message.body.key_update.name, "renamed");
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_settle("req_cache_2", 1, 1, 5, 10);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    test_env_stop(&env);
    store_close(&env.store);
    options.fault_write_fail_at = 0;
    CHECK(test_open(&env.store, env.dir.store_path, &options));
    CHECK_EQ_INT(store_user_get(&env.store, 1, &user), 0);
    CHECK_EQ_INT(user.status, ACCOUNT_USER_ACTIVE);
    CHECK_EQ_INT(user.balance_micros, 985);
    store_key_record_t key;
    CHECK_EQ_INT(store_key_get(&env.store, 1, &key), 0);
    CHECK(strcmp(key.name, "renamed") == 0);
    CHECK_EQ_INT(key.spent_micros, 15);
    store_close(&env.store);
    test_dir_remove(&env.dir);
}

/* ---- Two producers on their own rings ---- */

enum { TEST_PRODUCER_SETTLEMENTS = 10000 };

typedef struct test_producer {
    store_thread_t *thread;
    uint32_t index;
    uint64_t key_id;
    unit_random_t random;
    int64_t cost_sum;
    uint64_t acked;
    uint64_t errors;
    uint64_t doorbells_received;
    loop_operation_t mailbox;
    struct io_uring ring;
    _Atomic int ring_fd;
    _Atomic bool go;
} test_producer_t;

static void *test_producer_main(void *argument) {
    test_producer_t *producer = argument;
    if (io_uring_queue_init(16, &producer->ring, 0) != 0) {
        atomic_store(&producer->ring_fd, -2);
        return NULL;
    }
    atomic_store(&producer->ring_fd, producer->ring.ring_fd);
    while (!atomic_load(&producer->go)) {
        struct timespec pause = {0, 100000};
        nanosleep(&pause, NULL);
    }
    uint64_t sent = 0;
    uint64_t deadline_ms = test_clock_ms() + 120000;
    while (producer->acked < TEST_PRODUCER_SETTLEMENTS && test_clock_ms() < deadline_ms) {
        while (sent < TEST_PRODUCER_SETTLEMENTS) {
            char request_id[32];
            snprintf(request_id, sizeof request_id, "req_%02u%012llu", producer->index, (unsigned long long)sent);
            int64_t hold = 1000 + (int64_t)(unit_random_next(&producer->random) % 1000);
            int64_t cost = (int64_t)(unit_random_next(&producer->random) % (uint32_t)(hold + 1));
            store_message_t message = test_settle(request_id, 1, producer->key_id, cost, hold);
            message.token = sent;
            if (!store_thread_submit(producer->thread, producer->index, &message, &producer->ring)) break;
            producer->cost_sum += cost;
            sent++;
        }
        io_uring_submit(&producer->ring);
        store_ack_t ack;
        bool any = false;
        while (store_thread_reply_pop(producer->thread, producer->index, &ack)) {
            any = true;
            if (ack.status != 0 || ack.token != producer->acked) producer->errors++;
            producer->acked++;
        }
        if (any) continue;
        /* Nothing yet: sleep on the ring until the store's doorbell. */
        struct io_uring_cqe *cqe = NULL;
        struct __kernel_timespec timeout = {1, 0};
        if (io_uring_wait_cqe_timeout(&producer->ring, &cqe, &timeout) == 0) {
            unsigned head = 0;
            unsigned count = 0;
            io_uring_for_each_cqe(&producer->ring, head, cqe) {
                if (io_uring_cqe_get_data(cqe) == &producer->mailbox) producer->doorbells_received++;
                count++;
            }
            io_uring_cq_advance(&producer->ring, count);
        }
    }
    return NULL;
}

static void test_two_producers(void) {
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    test_dir_make(&env.dir);
    CHECK(test_open(&env.store, env.dir.store_path, &options));
    store_load_result_t result;
    CHECK(test_load(&env.store, &result));
    char error[256];
    /* Producers 0 and 1 are the workers, 2 the control thread. */
    CHECK_EQ_INT(store_thread_create(&env.thread, &env.store, 3, 64, 10, error, sizeof error), 0);

    static test_producer_t producers[2];
    pthread_t threads[2];
    for (uint32_t index = 0; index < 2; index++) {
        test_producer_t *producer = &producers[index];
        memset(producer, 0, sizeof *producer);
        producer->thread = &env.thread;
        producer->index = index;
        producer->key_id = index + 1;
        producer->random.state = 1000 + index;
        atomic_init(&producer->ring_fd, -1);
        atomic_init(&producer->go, false);
        CHECK_EQ_INT(pthread_create(&threads[index], NULL, test_producer_main, producer), 0);
        while (atomic_load(&producer->ring_fd) == -1) {
            struct timespec pause = {0, 100000};
            nanosleep(&pause, NULL);
        }
        CHECK(atomic_load(&producer->ring_fd) >= 0);
        store_thread_bind_producer(&env.thread, index, atomic_load(&producer->ring_fd), &producer->mailbox);
    }
    CHECK_EQ_INT(store_thread_start(&env.thread), 0);
    env.running = true;
    const int64_t start_micros = 1000000000000;
    store_ack_t ack;
    store_message_t message = test_user_create(1, "load@example.com", start_micros);
    CHECK_EQ_INT(store_thread_call(&env.thread, 2, &message, NULL, 10000, &ack), 0);
    CHECK_EQ_INT(ack.status, 0);
    for (uint64_t key = 1; key <= 2; key++) {
        message = test_key_create(key, 1);
        CHECK_EQ_INT(store_thread_call(&env.thread, 2, &message, NULL, 10000, &ack), 0);
        CHECK_EQ_INT(ack.status, 0);
    }
    uint64_t started_ms = test_clock_ms();
    for (int index = 0; index < 2; index++) atomic_store(&producers[index].go, true);
    for (int index = 0; index < 2; index++) pthread_join(threads[index], NULL);
    uint64_t elapsed_ms = test_clock_ms() - started_ms;
    fprintf(stderr, "  two producers: %d settlements acknowledged in %llu ms\n", 2 * TEST_PRODUCER_SETTLEMENTS,
            (unsigned long long)elapsed_ms);
    store_thread_stop(&env.thread);
    env.running = false;
    store_thread_statistics_t statistics = test_statistics(&env.thread);
    test_env_stop(&env);

    int64_t total = 0;
    for (int index = 0; index < 2; index++) {
        CHECK_EQ_INT(producers[index].acked, TEST_PRODUCER_SETTLEMENTS);
        CHECK_EQ_INT(producers[index].errors, 0);
        CHECK(producers[index].doorbells_received > 0); /* acks really rang the producer's ring */
        total += producers[index].cost_sum;
        if (producers[index].ring.ring_fd > 0) io_uring_queue_exit(&producers[index].ring);
    }
    CHECK_EQ_INT(env.store.state->user_balance_micros[0], start_micros - total);
    CHECK_EQ_INT(env.store.state->key_spent_micros[0], producers[0].cost_sum);
    CHECK_EQ_INT(env.store.state->key_spent_micros[1], producers[1].cost_sum);
    CHECK_EQ_INT(statistics.write_errors, 0);
    fprintf(stderr, "  two producers: %llu rounds, %llu batch writes for %llu messages\n",
            (unsigned long long)statistics.rounds, (unsigned long long)statistics.batch_writes,
            (unsigned long long)statistics.messages);
    store_close(&env.store);

    /* The persisted state, after a reopen. */
    CHECK(test_open(&env.store, env.dir.store_path, &options));
    CHECK(test_load(&env.store, &result));
    store_user_record_t user;
    CHECK_EQ_INT(store_user_get(&env.store, 1, &user), 0);
    CHECK_EQ_INT(user.balance_micros, start_micros - total);
    store_key_record_t key;
    CHECK_EQ_INT(store_key_get(&env.store, 2, &key), 0);
    CHECK_EQ_INT(key.spent_micros, producers[1].cost_sum);
    test_usage_seen_t seen;
    memset(&seen, 0, sizeof seen);
    store_usage_query_t query = {0};
    CHECK_EQ_INT(store_usage_list(&env.store, &query, test_on_usage, &seen), 2 * TEST_PRODUCER_SETTLEMENTS);
    CHECK_EQ_INT(result.next_usage_id, 2 * TEST_PRODUCER_SETTLEMENTS + 1);
    store_close(&env.store);
    test_dir_remove(&env.dir);
}

/* ---- Group commit ---- */

/* A store and a created thread that is not running yet: messages submitted
 * now are all taken by its first round. */
static bool test_env_create(test_env_t *env, const store_options_t *options) {
    test_dir_make(&env->dir);
    if (!test_open(&env->store, env->dir.store_path, options)) return false;
    store_load_result_t result;
    if (!test_load(&env->store, &result)) return false;
    char error[256];
    if (store_thread_create(&env->thread, &env->store, 1, 256, 60000, error, sizeof error) != 0) {
        fprintf(stderr, "  store_thread_create: %s\n", error);
        return false;
    }
    return true;
}

static bool test_env_run(test_env_t *env) {
    if (store_thread_start(&env->thread) != 0) return false;
    env->running = true;
    return true;
}

/* Submits with an ack asked (token = index) and no doorbell. */
static void test_submit(test_env_t *env, store_message_t *message, uint64_t token) {
    message->flags |= STORE_MESSAGE_FLAG_ACK;
    message->token = token;
    CHECK(store_thread_submit(&env->thread, 0, message, NULL));
}

/* Collects `count` acks into acks[token] (tokens 0..count-1). */
static bool test_collect(test_env_t *env, store_ack_t *acks, uint32_t count) {
    uint64_t deadline_ms = test_clock_ms() + 10000;
    uint32_t got = 0;
    while (got < count && test_clock_ms() < deadline_ms) {
        store_ack_t ack;
        if (!store_thread_reply_pop(&env->thread, 0, &ack)) {
            struct timespec pause = {0, 200000};
            nanosleep(&pause, NULL);
            continue;
        }
        if (ack.token >= count) return false;
        acks[ack.token] = ack;
        got++;
    }
    return got == count;
}

/* What the store thread holds in memory (users and keys 1..8) equals what
 * a reload finds, in the arrays and in the records. */
static void test_check_reload(test_env_t *env, const store_options_t *options, uint32_t users, uint32_t keys) {
    enum { IDS = 8 };
    uint8_t user_present[IDS];
    uint8_t key_present[IDS];
    int64_t balances[IDS];
    int64_t spent[IDS];
    memcpy(user_present, env->store.state->user_present, IDS);
    memcpy(key_present, env->store.state->key_present, IDS);
    memcpy(balances, env->store.state->user_balance_micros, sizeof balances);
    memcpy(spent, env->store.state->key_spent_micros, sizeof spent);
    uint64_t next_usage_id = env->store.state->next_usage_id;
    uint64_t next_audit_id = env->store.state->next_audit_id;
    store_close(&env->store);
    CHECK(test_open(&env->store, env->dir.store_path, options));
    store_load_result_t result;
    CHECK(test_load(&env->store, &result));
    CHECK_EQ_INT(result.users, users);
    CHECK_EQ_INT(result.keys, keys);
    for (uint64_t id = 1; id <= IDS; id++) {
        CHECK_EQ_INT(env->store.state->user_present[id - 1], user_present[id - 1]);
        CHECK_EQ_INT(env->store.state->key_present[id - 1], key_present[id - 1]);
        if (user_present[id - 1]) {
            CHECK_EQ_INT(env->store.state->user_balance_micros[id - 1], balances[id - 1]);
            store_user_record_t user;
            CHECK_EQ_INT(store_user_get(&env->store, id, &user), 0);
            CHECK_EQ_INT(user.balance_micros, balances[id - 1]);
        }
        if (key_present[id - 1]) {
            CHECK_EQ_INT(env->store.state->key_spent_micros[id - 1], spent[id - 1]);
            store_key_record_t key;
            CHECK_EQ_INT(store_key_get(&env->store, id, &key), 0);
            CHECK_EQ_INT(key.spent_micros, spent[id - 1]);
        }
    }
    CHECK_EQ_INT(result.next_usage_id, next_usage_id);
    CHECK_EQ_INT(result.next_audit_id, next_audit_id);
}

/* The s/ keys of a store (usage blocks). */
static uint32_t test_count_blocks(store_t *store) {
    rocksdb_readoptions_t *options = rocksdb_readoptions_create();
    rocksdb_iterator_t *iterator = rocksdb_create_iterator(store_db(store), options);
    uint32_t count = 0;
    for (rocksdb_iter_seek(iterator, "s/", 2); rocksdb_iter_valid(iterator); rocksdb_iter_next(iterator)) {
        size_t length = 0;
        const char *key = rocksdb_iter_key(iterator, &length);
        if (length < 2 || key[0] != 's' || key[1] != '/') break;
        count++;
    }
    rocksdb_iter_destroy(iterator);
    rocksdb_readoptions_destroy(options);
    return count;
}

/* Settlements submitted together are written as a few blocks (rounds of
 * several records, more than a block's worth split), and every read of
 * usage sees each record once: all newest first, by user, by key, by
 * request, and after a reopen the next id follows the newest. */
static void test_usage_blocks(void) {
    enum { SETTLEMENTS = 150 };
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    CHECK(test_env_start(&env, &options, 1, 10));
    store_ack_t ack;
    for (uint64_t user = 1; user <= 3; user++) {
        char email[32];
        snprintf(email, sizeof email, "u%llu@example.com", (unsigned long long)user);
        store_message_t message = test_user_create(user, email, 1000000);
        CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
        message = test_key_create(user, user);
        CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    }
    /* Holds of every tenth request are recorded first (one round), then all
     * settlements go at once: the store thread takes up to a producer's
     * share per round. */
    for (int index = 0; index < SETTLEMENTS; index += 10) {
        char request_id[32];
        snprintf(request_id, sizeof request_id, "req_block_%d", index);
        store_message_t message = test_hold_open(request_id, (uint64_t)(index % 3 + 1), (uint64_t)(index % 3 + 1), 100);
        CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    }
    store_thread_statistics_t before = test_statistics(&env.thread);
    static store_ack_t acks[SETTLEMENTS];
    for (int index = 0; index < SETTLEMENTS; index++) {
        char request_id[32];
        snprintf(request_id, sizeof request_id, "req_block_%d", index);
        uint64_t user = (uint64_t)(index % 3 + 1);
        store_message_t message = test_settle(request_id, user, user, index % 97 + 1, 100);
        if (index % 10 == 0) message.flags &= ~STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED;
        test_submit(&env, &message, (uint64_t)index);
    }
    CHECK(test_collect(&env, acks, SETTLEMENTS));
    for (int index = 0; index < SETTLEMENTS; index++) CHECK_EQ_INT(acks[index].status, 0);
    store_thread_statistics_t after = test_statistics(&env.thread);
    uint64_t rounds = after.rounds - before.rounds;
    uint32_t blocks = test_count_blocks(&env.store);
    CHECK(rounds < SETTLEMENTS);
    /* One block per round, or more when a round took more than a block. */
    CHECK(blocks >= rounds && blocks >= (SETTLEMENTS + STORE_USAGE_BLOCK_RECORDS_MAX - 1) / STORE_USAGE_BLOCK_RECORDS_MAX);
    CHECK(blocks < SETTLEMENTS);

    /* All, newest first: ids SETTLEMENTS .. 1, the 64 newest checked. */
    test_usage_seen_t seen;
    memset(&seen, 0, sizeof seen);
    store_usage_query_t query = {0};
    CHECK_EQ_INT(store_usage_list(&env.store, &query, test_on_usage, &seen), SETTLEMENTS);
    for (int index = 0; index < 64; index++) CHECK_EQ_INT(seen.ids[index], SETTLEMENTS - index);
    /* By user and by key: 50 each, all theirs, newest first. */
    for (uint64_t user = 1; user <= 3; user++) {
        memset(&seen, 0, sizeof seen);
        memset(&query, 0, sizeof query);
        query.user_id = user;
        CHECK_EQ_INT(store_usage_list(&env.store, &query, test_on_usage, &seen), SETTLEMENTS / 3);
        for (int index = 0; index < 50; index++) {
            CHECK_EQ_INT(seen.users[index], user);
            if (index > 0) CHECK(seen.ids[index] < seen.ids[index - 1]);
        }
        memset(&seen, 0, sizeof seen);
        memset(&query, 0, sizeof query);
        query.key_id = user;
        query.limit = 7;
        CHECK_EQ_INT(store_usage_list(&env.store, &query, test_on_usage, &seen), 7);
        for (int index = 0; index < 7; index++) CHECK_EQ_INT(seen.keys[index], user);
    }
    /* By request: the recorded ones. */
    for (int index = 0; index < SETTLEMENTS; index += 10) {
        char request_id[32];
        snprintf(request_id, sizeof request_id, "req_block_%d", index);
        store_usage_record_t record;
        CHECK_EQ_INT(store_usage_get_by_request(&env.store, request_id, &record), 0);
        CHECK_EQ_INT(record.id, acks[index].id);
        CHECK_EQ_INT(record.cost_micros, index % 97 + 1);
        CHECK(strcmp(record.request_id, request_id) == 0);
    }
    store_usage_record_t record;
    CHECK_EQ_INT(store_usage_get_by_request(&env.store, "req_block_1", &record), -ENOENT);
    /* A request index entry naming no possible record is a read error, not a crash. */
    {
        rocksdb_writebatch_t *bad = rocksdb_writebatch_create();
        uint8_t request_key[STORE_KEY_TEXT_BYTES];
        size_t request_key_length = store_key_text(request_key, 'q', "req_bad", false);
        rocksdb_writebatch_put(bad, (const char *)request_key, request_key_length, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
        char failure[STORE_ERROR_BYTES];
        CHECK_EQ_INT(store_write(&env.store, bad, false, failure, sizeof failure), 0);
        rocksdb_writebatch_destroy(bad);
        CHECK_EQ_INT(store_usage_get_by_request(&env.store, "req_bad", &record), -EIO);
    }
    int64_t newest_created = env.store.state->usage_created_ms_last;
    test_env_stop(&env);
    store_close(&env.store);
    CHECK(test_env_open_and_start(&env, &options, 1, 10));
    CHECK_EQ_INT(env.store.state->next_usage_id, SETTLEMENTS + 1);
    CHECK_EQ_INT(env.store.state->usage_created_ms_last, newest_created);
    store_message_t message = test_settle("req_after", 1, 1, 1, 100);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(ack.id, SETTLEMENTS + 1);
    test_env_finish(&env);
}

/* Puts one schema 1 usage record: r/<user>/<id> its JSON, s/<id> that key. */
static void test_put_schema_1_usage(rocksdb_writebatch_t *batch, const store_usage_record_t *record) {
    char json[STORE_JSON_BYTES_MAX];
    int length = store_usage_encode(record, json, sizeof json);
    RW_ASSERT(length > 0);
    uint8_t usage_key[STORE_KEY_USAGE_BYTES];
    store_key_usage(usage_key, record->user_id, record->id);
    rocksdb_writebatch_put(batch, (const char *)usage_key, sizeof usage_key, json, (size_t)length);
    uint8_t sequence_key[STORE_KEY_ID_BYTES];
    store_key_id(sequence_key, 's', record->id);
    rocksdb_writebatch_put(batch, (const char *)sequence_key, sizeof sequence_key, (const char *)usage_key,
                           sizeof usage_key);
}

/* A schema 1 store, part of it already moved to blocks as a migration
 * stopped by a crash would leave it, opens as schema 2 with every record
 * readable once, its old request index still answering, and the next usage
 * id after the newest. */
static void test_migrate_from(uint64_t moved, const char *schema_text) {
    enum { RECORDS = 100 };
    const uint64_t MOVED = moved;
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    CHECK(test_env_start(&env, &options, 1, 10));
    store_ack_t ack;
    store_message_t message = test_user_create(1, "a@example.com", 1000000);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_user_create(2, "b@example.com", 1000000);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    test_env_stop(&env);

    static store_usage_record_t records[RECORDS + 1];
    rocksdb_writebatch_t *batch = rocksdb_writebatch_create();
    store_usage_block_writer_t writer;
    static uint8_t block[STORE_USAGE_BLOCK_BYTES_MAX];
    for (uint64_t id = 1; id <= RECORDS; id++) {
        store_usage_record_t *record = &records[id];
        memset(record, 0, sizeof *record);
        record->id = id;
        record->user_id = id % 4 == 0 ? 2 : 1;
        snprintf(record->request_id, sizeof record->request_id, "req_old_%llu", (unsigned long long)id);
        snprintf(record->model, sizeof record->model, "gpt-old");
        snprintf(record->status, sizeof record->status, "completed");
        record->prompt_tokens = id;
        record->cost_micros = (int64_t)id * 3;
        record->created_ms = 1700000000000 + (int64_t)id;
        if (id == 1) store_usage_block_begin(&writer, block, sizeof block, 1, record->created_ms);
        if (id <= MOVED) {
            CHECK_EQ_INT(store_usage_block_add(&writer, record), 0);
        } else {
            test_put_schema_1_usage(batch, record);
        }
    }
    uint8_t key[STORE_KEY_USAGE_BYTES];
    if (MOVED > 0) {
        /* Records 1..40 moved by a migration that stopped: user 2 has every fourth. */
        RW_ASSERT(MOVED == 40);
        store_key_id(key, 's', 1);
        rocksdb_writebatch_put(batch, (const char *)key, STORE_KEY_ID_BYTES, (const char *)block, writer.length);
        store_key_usage(key, 1, 1);
        rocksdb_writebatch_put(batch, (const char *)key, sizeof key, "\x1e\x00", 2);
        store_key_usage(key, 2, 1);
        rocksdb_writebatch_put(batch, (const char *)key, sizeof key, "\x0a\x00", 2);
    }
    /* Schema 1's request index held the r/ key. */
    uint8_t request_key[STORE_KEY_TEXT_BYTES];
    size_t request_key_length = store_key_text(request_key, 'q', "req_old_77", false);
    store_key_usage(key, records[77].user_id, 77);
    rocksdb_writebatch_put(batch, (const char *)request_key, request_key_length, (const char *)key, sizeof key);
    uint8_t schema_key[16];
    size_t schema_key_length = store_key_meta(schema_key, sizeof schema_key, "schema");
    rocksdb_writebatch_put(batch, (const char *)schema_key, schema_key_length, schema_text, strlen(schema_text));
    char failure[STORE_ERROR_BYTES];
    CHECK_EQ_INT(store_write(&env.store, batch, true, failure, sizeof failure), 0);
    rocksdb_writebatch_destroy(batch);
    store_close(&env.store);

    CHECK(test_env_open_and_start(&env, &options, 1, 10));
    uint8_t schema[8];
    CHECK_EQ_INT(store_meta_get(&env.store, "schema", schema, sizeof schema), 1);
    CHECK(schema[0] == '2');
    CHECK_EQ_INT(env.store.state->next_usage_id, RECORDS + 1);
    CHECK_EQ_INT(env.store.state->usage_created_ms_last, records[RECORDS].created_ms);
    CHECK(test_count_blocks(&env.store) < RECORDS - MOVED);
    /* Every record once, as it was. */
    test_usage_seen_t seen;
    memset(&seen, 0, sizeof seen);
    store_usage_query_t query = {0};
    CHECK_EQ_INT(store_usage_list(&env.store, &query, test_on_usage, &seen), RECORDS);
    for (int index = 0; index < 64; index++) CHECK_EQ_INT(seen.ids[index], RECORDS - index);
    memset(&seen, 0, sizeof seen);
    query.user_id = 2;
    CHECK_EQ_INT(store_usage_list(&env.store, &query, test_on_usage, &seen), RECORDS / 4);
    for (int index = 0; index < RECORDS / 4; index++) CHECK_EQ_INT(seen.ids[index], RECORDS - 4 * index);
    store_usage_record_t record;
    for (uint64_t id = 1; id <= RECORDS; id += 11) {
        /* Each record reads back whole (through a fresh request index). */
        memset(&seen, 0, sizeof seen);
        memset(&query, 0, sizeof query);
        query.user_id = records[id].user_id;
        query.from_ms = records[id].created_ms;
        query.to_ms = records[id].created_ms + 1;
        CHECK_EQ_INT(store_usage_list(&env.store, &query, test_on_usage, &seen), 1);
        CHECK_EQ_INT(seen.ids[0], id);
    }
    CHECK_EQ_INT(store_usage_get_by_request(&env.store, "req_old_77", &record), 0);
    CHECK(memcmp(&record, &records[77], sizeof record) == 0);
    message = test_settle("req_new", 1, 0, 1, 100);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(ack.id, RECORDS + 1);
    test_env_finish(&env);
}

/* A schema 1 store, and one half moved to blocks by a migration a crash
 * stopped (its m/schema is "2m", which earlier relays refuse). */
static void test_migrate_schema_1(void) {
    test_migrate_from(0, "1");
    test_migrate_from(40, "2m");
}

static void test_group_commit(void) {
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    CHECK(test_env_create(&env, &options));
    /* One round: creations, settlements of one user and key (each sees the
     * one before), record updates between them, a hold opened and settled,
     * an audit entry. */
    store_message_t messages[12];
    messages[0] = test_user_create(1, "group@example.com", 10000);
    messages[1] = test_key_create(1, 1);
    messages[2] = test_settle("req_g1", 1, 1, 100, 500);
    memset(&messages[3], 0, sizeof messages[3]);
    messages[3].kind = STORE_MESSAGE_USER_UPDATE;
    messages[3].body.user_update.user_id = 1;
    messages[3].body.user_update.fields = STORE_USER_FIELD_STATUS;
    messages[3].body.user_update.status = ACCOUNT_USER_SUSPENDED;
    messages[4] = test_settle("req_g2", 1, 1, 200, 500);
    memset(&messages[5], 0, sizeof messages[5]);
    messages[5].kind = STORE_MESSAGE_KEY_UPDATE;
    messages[5].body.key_update.key_id = 1;
    messages[5].body.key_update.fields = STORE_KEY_FIELD_NAME;
    snprintf(messages[5].body.key_update.name, sizeof messages[5].body.key_update.name, "renamed");
    memset(&messages[6], 0, sizeof messages[6]);
    messages[6].kind = STORE_MESSAGE_BALANCE_ADJUST;
    messages[6].body.balance_adjust.user_id = 1;
    messages[6].body.balance_adjust.delta_micros = 5000;
    messages[7] = test_hold_open("req_g3", 1, 1, 900);
    messages[8] = test_settle("req_g3", 1, 1, 900, 900); /* charge == hold */
    messages[8].flags &= ~STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED;
    messages[9] = test_settle("req_g4", 1, 0, 300, 300); /* no key */
    memset(&messages[10], 0, sizeof messages[10]);
    messages[10].kind = STORE_MESSAGE_AUDIT;
    snprintf(messages[10].body.audit.action, sizeof messages[10].body.audit.action, "group.test");
    messages[11] = test_user_create(2, "second@example.com", 1);
    for (uint32_t index = 0; index < 12; index++) test_submit(&env, &messages[index], index);
    CHECK(test_env_run(&env));
    store_ack_t acks[12];
    memset(acks, 0xff, sizeof acks);
    CHECK(test_collect(&env, acks, 12));
    for (uint32_t index = 0; index < 12; index++) {
        CHECK_EQ_INT(acks[index].status, 0);
        CHECK_EQ_INT(acks[index].kind, messages[index].kind);
    }
    CHECK_EQ_INT(acks[2].balance_micros, 10000 - 100);
    CHECK_EQ_INT(acks[2].spent_micros, 100);
    CHECK_EQ_INT(acks[2].id, 1);
    CHECK_EQ_INT(acks[4].balance_micros, 10000 - 300);
    CHECK_EQ_INT(acks[4].spent_micros, 300);
    CHECK_EQ_INT(acks[4].id, 2);
    CHECK_EQ_INT(acks[6].balance_micros, 10000 - 300 + 5000);
    CHECK_EQ_INT(acks[8].balance_micros, 10000 - 300 + 5000 - 900);
    CHECK_EQ_INT(acks[8].spent_micros, 1200);
    CHECK_EQ_INT(acks[9].balance_micros, 10000 - 300 + 5000 - 900 - 300);
    CHECK_EQ_INT(acks[9].id, 4);
    CHECK_EQ_INT(acks[10].id, 1);
    store_thread_stop(&env.thread);
    env.running = false;
    store_thread_statistics_t statistics = test_statistics(&env.thread);
    CHECK_EQ_INT(statistics.messages, 12);
    CHECK_EQ_INT(statistics.rounds, 1);
    CHECK_EQ_INT(statistics.batch_writes, 1);
    test_env_stop(&env);

    /* The records carry every change of the round, not only the last. */
    store_user_record_t user;
    CHECK_EQ_INT(store_user_get(&env.store, 1, &user), 0);
    CHECK_EQ_INT(user.status, ACCOUNT_USER_SUSPENDED);
    CHECK_EQ_INT(user.balance_micros, 10000 - 300 + 5000 - 900 - 300);
    store_key_record_t key;
    CHECK_EQ_INT(store_key_get(&env.store, 1, &key), 0);
    CHECK(strcmp(key.name, "renamed") == 0);
    CHECK_EQ_INT(key.spent_micros, 1200);
    store_hold_record_t hold;
    CHECK_EQ_INT(store_hold_get(&env.store, "req_g3", &hold), -ENOENT);
    store_usage_record_t usage;
    CHECK_EQ_INT(store_usage_get_by_request(&env.store, "req_g3", &usage), 0);
    CHECK_EQ_INT(usage.id, 3);
    test_check_reload(&env, &options, 2, 1);
    store_close(&env.store);
    test_dir_remove(&env.dir);
}

/* Refused messages in a round change nothing and do not stop the others;
 * a failed batch write undoes the whole round and answers -EIO to all. */
static void test_group_commit_failures(void) {
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    /* Write 1: the first round's batch; 2: the WAL sync at its stop; 3: the
     * second round's batch, which fails. */
    options.fault_write_fail_at = 3;
    CHECK(test_env_create(&env, &options));
    store_message_t messages[10];
    messages[0] = test_user_create(1, "fail@example.com", 1000);
    messages[1] = test_user_create(2, "FAIL@example.com", 1000);   /* the same email, this round: -EEXIST */
    messages[2] = test_settle("req_f1", 7, 0, 10, 10);             /* unknown user: -ENOENT */
    messages[3] = test_settle("req_f2", 1, 0, 11, 10);             /* charge above the hold: -EINVAL */
    memset(&messages[4], 0, sizeof messages[4]);
    messages[4].kind = STORE_MESSAGE_BALANCE_ADJUST;               /* below zero: -ERANGE */
    messages[4].body.balance_adjust.user_id = 1;
    messages[4].body.balance_adjust.delta_micros = -1001;
    messages[5] = test_settle("req_f3", 1, 0, 400, 500);
    messages[6] = test_user_create(1, "other@example.com", 5);      /* id taken this round: -EEXIST */
    messages[7] = test_key_create(1, 9);                           /* unknown user: -ENOENT */
    messages[8] = test_key_create(1, 1);
    messages[9] = test_settle("req_f4", 1, 1, 600, 600);            /* balance to exactly zero */
    for (uint32_t index = 0; index < 10; index++) test_submit(&env, &messages[index], index);
    CHECK(test_env_run(&env));
    store_ack_t acks[10];
    CHECK(test_collect(&env, acks, 10));
    const int expected[10] = {0, -EEXIST, -ENOENT, -EINVAL, -ERANGE, 0, -EEXIST, -ENOENT, 0, 0};
    for (uint32_t index = 0; index < 10; index++) CHECK_EQ_INT(acks[index].status, expected[index]);
    CHECK_EQ_INT(acks[5].balance_micros, 600);
    CHECK_EQ_INT(acks[5].id, 1);
    CHECK_EQ_INT(acks[9].balance_micros, 0);
    CHECK_EQ_INT(acks[9].id, 2);
    CHECK_EQ_INT(env.store.state->user_balance_micros[0], 0);
    CHECK_EQ_INT(env.store.state->user_present[1], 0);

    /* The second round fails to write: nothing of it stays in memory. */
    store_thread_stop(&env.thread);
    env.running = false;
    uint64_t next_usage_id = env.store.state->next_usage_id;
    uint64_t next_user_id = env.store.state->next_user_id;
    messages[0] = test_user_create(3, "third@example.com", 50);
    memset(&messages[1], 0, sizeof messages[1]);
    messages[1].kind = STORE_MESSAGE_BALANCE_ADJUST;
    messages[1].body.balance_adjust.user_id = 1;
    messages[1].body.balance_adjust.delta_micros = 70;
    messages[2] = test_settle("req_f5", 1, 1, 20, 20);
    messages[3] = test_key_create(2, 3);
    messages[4] = test_settle("req_f6", 3, 2, 5, 5);
    for (uint32_t index = 0; index < 5; index++) test_submit(&env, &messages[index], index);
    CHECK(test_env_run(&env));
    CHECK(test_collect(&env, acks, 5));
    for (uint32_t index = 0; index < 5; index++) CHECK_EQ_INT(acks[index].status, -EIO);
    CHECK_EQ_INT(env.store.state->user_balance_micros[0], 0);
    CHECK_EQ_INT(env.store.state->user_present[2], 0);
    CHECK_EQ_INT(env.store.state->key_present[1], 0);
    CHECK_EQ_INT(env.store.state->next_usage_id, next_usage_id);
    CHECK_EQ_INT(env.store.state->next_user_id, next_user_id);
    store_usage_record_t usage;
    CHECK_EQ_INT(store_usage_get_by_request(&env.store, "req_f5", &usage), -ENOENT);
    /* The same messages again (one round, the fault is spent): all succeed. */
    store_thread_stop(&env.thread);
    env.running = false;
    for (uint32_t index = 0; index < 5; index++) test_submit(&env, &messages[index], index);
    CHECK(test_env_run(&env));
    CHECK(test_collect(&env, acks, 5));
    for (uint32_t index = 0; index < 5; index++) CHECK_EQ_INT(acks[index].status, 0);
    CHECK_EQ_INT(acks[2].id, next_usage_id);
    CHECK_EQ_INT(acks[2].balance_micros, 50);
    CHECK_EQ_INT(acks[4].balance_micros, 45);
    store_thread_stop(&env.thread);
    env.running = false;
    CHECK_EQ_INT(test_statistics(&env.thread).write_errors, 1);
    test_env_stop(&env);
    test_check_reload(&env, &options, 2, 2); /* users 1 and 3, keys 1 and 2 */
    store_close(&env.store);
    test_dir_remove(&env.dir);
}

static uint64_t test_memtable_deletes(store_t *store) {
    char *value = rocksdb_property_value(store_db(store), "rocksdb.num-deletes-active-mem-table");
    uint64_t deletes = value != NULL ? strtoull(value, NULL, 10) : UINT64_MAX;
    rocksdb_free(value);
    return deletes;
}

/* A store_usage_visit_t that keeps the records of one request id. */
typedef struct test_usage_found {
    const char *request_id;
    uint32_t count;
    store_usage_record_t record;
} test_usage_found_t;

static int test_usage_find(void *context, const store_usage_record_t *record, const char *json, size_t json_length) {
    test_usage_found_t *found = context;
    if (strcmp(record->request_id, found->request_id) == 0) {
        found->count++;
        found->record = *record;
    }
    return 0;
}

/* A settlement whose hold was never recorded writes no h/ tombstone; one
 * whose recorded hold's write failed settles all the same. */
static void test_settle_without_recorded_hold(void) {
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    options.fault_write_fail_at = 4;
    CHECK(test_env_start(&env, &options, 1, 60000));
    store_ack_t ack;
    store_message_t message = test_user_create(1, "short@example.com", 5000); /* write 1 */
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    message = test_key_create(1, 1); /* write 2 */
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    uint64_t deletes = test_memtable_deletes(&env.store);
    message = test_settle("req_short", 1, 1, 70, 100); /* write 3: no HOLD_OPEN was sent */
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(ack.balance_micros, 5000 - 70);
    CHECK_EQ_INT(test_memtable_deletes(&env.store), deletes); /* no tombstone */
    /* Its record is there, but not indexed by request id: nothing will
     * ever look an unrecorded hold up. */
    store_usage_record_t usage;
    CHECK_EQ_INT(store_usage_get_by_request(&env.store, "req_short", &usage), -ENOENT);
    test_usage_found_t found = {.request_id = "req_short"};
    store_usage_query_t query = {.user_id = 1};
    CHECK_EQ_INT(store_usage_list(&env.store, &query, test_usage_find, &found), 1);
    CHECK_EQ_INT(found.count, 1);
    CHECK_EQ_INT(found.record.cost_micros, 70);

    /* The HOLD_OPEN's write fails (nobody waits for its ack), then the
     * flagged settlement finds no hold: it settles, deleting nothing. */
    message = test_hold_open("req_lost", 1, 1, 300); /* write 4: fails */
    CHECK_EQ_INT(test_call(&env, &message, &ack), -EIO);
    message = test_settle("req_lost", 1, 1, 250, 300); /* write 5 */
    message.flags &= ~STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED; /* its hold was recorded */
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(ack.balance_micros, 5000 - 70 - 250);
    CHECK_EQ_INT(test_memtable_deletes(&env.store), deletes);

    /* A recorded hold: its settlement deletes it, in the same batch. */
    message = test_hold_open("req_long", 1, 1, 400);
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    store_hold_record_t hold;
    CHECK_EQ_INT(store_hold_get(&env.store, "req_long", &hold), 0);
    message = test_settle("req_long", 1, 1, 400, 400);
    message.flags &= ~STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED; /* its hold was recorded */
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK_EQ_INT(test_memtable_deletes(&env.store), deletes + 1);
    CHECK_EQ_INT(store_hold_get(&env.store, "req_long", &hold), -ENOENT);
    test_env_stop(&env);
    store_load_result_t result;
    store_close(&env.store);
    options.fault_write_fail_at = 0;
    CHECK(test_open(&env.store, env.dir.store_path, &options));
    CHECK(test_load(&env.store, &result));
    CHECK_EQ_INT(result.holds_settled + result.holds_released, 0);
    CHECK_EQ_INT(env.store.state->user_balance_micros[0], 5000 - 70 - 250 - 400);
    store_close(&env.store);
    test_dir_remove(&env.dir);
}

/* A recorded hold still open at a stop is released at the restart; one
 * whose settlement was written is not there any more. */
static void test_restart_recorded_hold(void) {
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    CHECK(test_env_create(&env, &options));
    store_message_t messages[5];
    messages[0] = test_user_create(1, "restart@example.com", 2000);
    messages[1] = test_hold_open("req_open", 1, 0, 800);
    messages[2] = test_hold_open("req_done", 1, 0, 700);
    messages[3] = test_settle("req_done", 1, 0, 650, 700);
    messages[3].flags &= ~STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED;
    messages[4] = test_settle("req_quick", 1, 0, 50, 100);
    for (uint32_t index = 0; index < 5; index++) test_submit(&env, &messages[index], index);
    CHECK(test_env_run(&env));
    store_ack_t acks[5];
    CHECK(test_collect(&env, acks, 5));
    for (uint32_t index = 0; index < 5; index++) CHECK_EQ_INT(acks[index].status, 0);
    test_env_stop(&env);
    store_close(&env.store);
    CHECK(test_open(&env.store, env.dir.store_path, &options));
    store_load_result_t result;
    CHECK(test_load(&env.store, &result));
    CHECK_EQ_INT(result.holds_released, 1);
    CHECK_EQ_INT(result.holds_settled, 0);
    store_hold_record_t hold;
    CHECK_EQ_INT(store_hold_get(&env.store, "req_open", &hold), -ENOENT);
    CHECK_EQ_INT(env.store.state->user_balance_micros[0], 2000 - 650 - 50);
    test_audit_seen_t seen;
    memset(&seen, 0, sizeof seen);
    CHECK_EQ_INT(store_audit_list(&env.store, 0, test_on_audit, &seen), 1);
    CHECK(strcmp(seen.actions[0], "hold.released_at_restart") == 0);
    CHECK(strstr(seen.details[0], "req_open") != NULL);
    store_close(&env.store);
    test_dir_remove(&env.dir);
}

/* The money assertions: each broken invariant aborts a child running the
 * store thread (the happy paths are in the tests above). */
static _Noreturn void test_assert_child(const char *path, int which) {
    store_t store;
    store_options_t options = test_options();
    char error[256];
    if (store_open(&store, path, &options, error, sizeof error) != 0) _exit(2);
    store_load_result_t result;
    if (store_load(&store, NULL, NULL, &result, error, sizeof error) != 0) _exit(3);
    store_thread_t thread;
    if (store_thread_create(&thread, &store, 1, 16, 60000, error, sizeof error) != 0) _exit(4);
    if (store_thread_start(&thread) != 0) _exit(5);
    store_ack_t ack;
    store_message_t message = test_user_create(1, "assert@example.com", 1000);
    if (store_thread_call(&thread, 0, &message, NULL, 10000, &ack) != 0 || ack.status != 0) _exit(6);
    message = test_hold_open("req_x", 1, 0, 500);
    if (store_thread_call(&thread, 0, &message, NULL, 10000, &ack) != 0 || ack.status != 0) _exit(7);
    if (which == 0) { /* settled twice */
        message = test_settle("req_x", 1, 0, 100, 500);
        message.flags &= ~STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED; /* its hold was recorded */
        if (store_thread_call(&thread, 0, &message, NULL, 10000, &ack) != 0 || ack.status != 0) _exit(8);
    } else if (which == 1) { /* the recorded hold is not the one settled */
        message = test_settle("req_x", 1, 0, 100, 600);
        message.flags &= ~STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED; /* its hold was recorded */
    } else { /* the settled balance would go below zero */
        message = test_settle("req_y", 1, 0, 1001, 1001);
    }
    if (which != 2) message.flags &= ~STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED;
    store_thread_call(&thread, 0, &message, NULL, 2000, &ack);
    _exit(0); /* the assertion did not fire */
}

static void test_money_assertions(void) {
    for (int which = 0; which < 3; which++) {
        test_dir_t dir;
        test_dir_make(&dir);
        fflush(NULL);
        pid_t child = fork();
        if (child == 0) test_assert_child(dir.store_path, which);
        CHECK(child > 0);
        int wait_status = 0;
        waitpid(child, &wait_status, 0);
        CHECK(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGABRT);
        if (!WIFSIGNALED(wait_status)) fprintf(stderr, "  assertion case %d: exit %d\n", which, WEXITSTATUS(wait_status));
        test_dir_remove(&dir);
    }
}

static void test_channel_capacity(void) {
    CHECK_EQ_INT(store_thread_channel_capacity_for(1), 4);
    CHECK_EQ_INT(store_thread_channel_capacity_for(2), 8);
    CHECK_EQ_INT(store_thread_channel_capacity_for(1024), 4096);
    CHECK_EQ_INT(store_thread_channel_capacity_for(1365), 4096);
    CHECK_EQ_INT(store_thread_channel_capacity_for(1366), 8192);
    for (uint32_t streams = 1; streams < 5000; streams += 7) {
        uint32_t capacity = store_thread_channel_capacity_for(streams);
        CHECK(capacity >= 3 * streams && capacity < 6 * streams + 4 && (capacity & (capacity - 1)) == 0);
    }
}

/* The test-only stall: while the file exists every batch write waits. */
static void test_delay_hook(void) {
    test_env_t env;
    memset(&env, 0, sizeof env);
    store_options_t options = test_options();
    char flag_path[128];
    test_dir_make(&env.dir);
    snprintf(flag_path, sizeof flag_path, "%s/stall", env.dir.root);
    FILE *flag = fopen(flag_path, "w");
    CHECK(flag != NULL);
    if (flag != NULL) fclose(flag);
    setenv("RINGWAY_TEST_STORE_DELAY_MS", "600", 1);
    setenv("RINGWAY_TEST_STORE_DELAY_FILE", flag_path, 1);
    CHECK(test_open(&env.store, env.dir.store_path, &options));
    store_load_result_t result;
    CHECK(test_load(&env.store, &result));
    char error[256];
    CHECK_EQ_INT(store_thread_create(&env.thread, &env.store, 1, 16, 60000, error, sizeof error), 0);
    CHECK(test_env_run(&env));
    unsetenv("RINGWAY_TEST_STORE_DELAY_MS"); /* read at start only */
    unsetenv("RINGWAY_TEST_STORE_DELAY_FILE");
    store_ack_t ack;
    store_message_t message = test_user_create(1, "stall@example.com", 10);
    uint64_t started_ms = test_clock_ms();
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK(test_clock_ms() - started_ms >= 600);
    remove(flag_path); /* the store recovers */
    message = test_user_create(2, "fast@example.com", 10);
    started_ms = test_clock_ms();
    CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
    CHECK(test_clock_ms() - started_ms < 500); /* no stall (generous: the machine is shared) */
    test_env_finish(&env);
}

/* ---- kill -9 ---- */

enum { TEST_CRASH_START_MICROS = 1000000000 };

/* The child: runs the store thread and settles as fast as it can, writing
 * the number of every acknowledged settlement to the pipe; never returns. */
static _Noreturn void test_crash_child(const char *path, int pipe_fd, uint64_t seed) {
    unit_random_t random = {seed};
    store_t store;
    store_options_t options = test_options();
    char error[256];
    if (store_open(&store, path, &options, error, sizeof error) != 0) _exit(2);
    store_load_result_t result;
    if (store_load(&store, NULL, NULL, &result, error, sizeof error) != 0) _exit(3);
    store_thread_t thread;
    if (store_thread_create(&thread, &store, 1, 128, 10, error, sizeof error) != 0) _exit(4);
    if (store_thread_start(&thread) != 0) _exit(5);
    uint64_t sent = 0;
    for (;;) {
        for (int burst = 0; burst < 32; burst++) {
            char request_id[32];
            snprintf(request_id, sizeof request_id, "req_crash_%llu", (unsigned long long)sent);
            store_message_t hold = test_hold_open(request_id, 1, 1, 1000);
            if (!store_thread_submit(&thread, 0, &hold, NULL)) break;
            store_message_t settle = test_settle(request_id, 1, 1, 1 + (int64_t)(unit_random_next(&random) % 1000), 1000);
            settle.flags &= ~STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED;
            settle.token = sent;
            while (!store_thread_submit(&thread, 0, &settle, NULL)) {
                struct timespec pause = {0, 50000};
                nanosleep(&pause, NULL);
            }
            sent++;
        }
        store_ack_t ack;
        while (store_thread_reply_pop(&thread, 0, &ack)) {
            if (ack.status == 0 && ack.kind == STORE_MESSAGE_SETTLE) {
                uint64_t number = ack.token;
                if (write(pipe_fd, &number, sizeof number) != sizeof number) _exit(6);
            }
        }
        struct timespec pause = {0, 200000};
        nanosleep(&pause, NULL);
    }
}

typedef struct test_crash_check {
    int64_t cost_sum;
    int64_t key_cost_sum;
    uint64_t records;
} test_crash_check_t;

static int test_on_crash_usage(void *context, const store_usage_record_t *record, const char *json, size_t length) {
    test_crash_check_t *check = context;
    check->cost_sum += record->cost_micros;
    if (record->key_id == 1) check->key_cost_sum += record->cost_micros;
    check->records++;
    return 0;
}

static void test_kill9(void) {
    unit_random_t random = {2024};
    for (int round = 0; round < 3; round++) {
        test_dir_t dir;
        test_dir_make(&dir);
        store_options_t options = test_options();
        /* The initial state: one user, one key. */
        {
            test_env_t env;
            memset(&env, 0, sizeof env);
            CHECK(test_open(&env.store, dir.store_path, &options));
            store_load_result_t result;
            CHECK(test_load(&env.store, &result));
            char error[256];
            CHECK_EQ_INT(store_thread_create(&env.thread, &env.store, 1, 16, 10, error, sizeof error), 0);
            CHECK_EQ_INT(store_thread_start(&env.thread), 0);
            env.running = true;
            store_ack_t ack;
            store_message_t message = test_user_create(1, "crash@example.com", TEST_CRASH_START_MICROS);
            CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
            message = test_key_create(1, 1);
            CHECK_EQ_INT(test_call(&env, &message, &ack), 0);
            test_env_stop(&env);
            store_close(&env.store);
        }
        int pipe_fds[2];
        CHECK_EQ_INT(pipe(pipe_fds), 0);
        fflush(NULL);
        pid_t child = fork();
        if (child == 0) {
            close(pipe_fds[0]);
            test_crash_child(dir.store_path, pipe_fds[1], random.state + (uint64_t)round);
        }
        close(pipe_fds[1]);
        CHECK(child > 0);
        /* Read acks while the child runs, then kill it at a random moment. */
        uint64_t delay_ms = 100 + unit_random_next(&random) % 400;
        uint64_t kill_at_ms = test_clock_ms() + delay_ms;
        static uint64_t acked[1 << 20];
        size_t acked_count = 0;
        fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
        bool killed = false;
        for (;;) {
            uint64_t number = 0;
            ssize_t got = read(pipe_fds[0], &number, sizeof number);
            if (got == (ssize_t)sizeof number) {
                if (acked_count < RW_ARRAY_LENGTH(acked)) acked[acked_count++] = number;
                continue;
            }
            if (got == 0) break; /* the child is gone and the pipe drained */
            if (!killed && test_clock_ms() >= kill_at_ms) {
                kill(child, SIGKILL);
                killed = true;
            }
            struct timespec pause = {0, 200000};
            nanosleep(&pause, NULL);
        }
        int wait_status = 0;
        waitpid(child, &wait_status, 0);
        close(pipe_fds[0]);
        CHECK(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL);
        CHECK(acked_count > 0);

        /* Restart: every acknowledged settlement is there; the ledger adds up. */
        store_t store;
        CHECK(test_open(&store, dir.store_path, &options));
        store_load_result_t result;
        CHECK(test_load(&store, &result));
        uint64_t missing = 0;
        for (size_t index = 0; index < acked_count; index++) {
            char request_id[32];
            snprintf(request_id, sizeof request_id, "req_crash_%llu", (unsigned long long)acked[index]);
            store_usage_record_t usage;
            if (store_usage_get_by_request(&store, request_id, &usage) != 0) missing++;
        }
        CHECK_EQ_INT(missing, 0);
        test_crash_check_t check = {0, 0, 0};
        store_usage_query_t query = {0};
        int listed = store_usage_list(&store, &query, test_on_crash_usage, &check);
        CHECK_EQ_INT(listed, (int)check.records);
        CHECK(check.records >= acked_count);
        store_user_record_t user;
        CHECK_EQ_INT(store_user_get(&store, 1, &user), 0);
        CHECK_EQ_INT(user.balance_micros, TEST_CRASH_START_MICROS - check.cost_sum);
        CHECK_EQ_INT(store.state->user_balance_micros[0], TEST_CRASH_START_MICROS - check.cost_sum);
        store_key_record_t key;
        CHECK_EQ_INT(store_key_get(&store, 1, &key), 0);
        CHECK_EQ_INT(key.spent_micros, check.key_cost_sum);
        CHECK_EQ_INT(result.next_usage_id, check.records + 1);
        /* The holds in flight at the kill were resolved, none is left. */
        store_close(&store);
        CHECK(test_open(&store, dir.store_path, &options));
        store_load_result_t again;
        CHECK(test_load(&store, &again));
        CHECK_EQ_INT(again.holds_released + again.holds_settled, 0);
        fprintf(stderr, "  kill -9 round %d after %llu ms: %zu acked, %llu records, %u holds released\n", round,
                (unsigned long long)delay_ms, acked_count, (unsigned long long)check.records,
                result.holds_released);
        store_close(&store);
        test_dir_remove(&dir);
    }
}

int main(void) {
    RUN_TEST(test_codec_user);
    RUN_TEST(test_codec_key);
    RUN_TEST(test_codec_key_version_1);
    RUN_TEST(test_codec_hold);
    RUN_TEST(test_codec_usage_exact);
    RUN_TEST(test_codec_usage_strings_and_extremes);
    RUN_TEST(test_codec_usage_decode_variants);
    RUN_TEST(test_codec_usage_mutations);
    RUN_TEST(test_codec_audit);
    RUN_TEST(test_codec_usage_block);
    RUN_TEST(test_open_and_load);
    RUN_TEST(test_user_email_and_updates);
    RUN_TEST(test_settlement_atomic);
    RUN_TEST(test_restart_resolves_holds);
    RUN_TEST(test_usage_listing);
    RUN_TEST(test_usage_blocks);
    RUN_TEST(test_migrate_schema_1);
    RUN_TEST(test_balance_adjust_sync);
    RUN_TEST(test_write_faults);
    RUN_TEST(test_record_cache_after_failed_write);
    RUN_TEST(test_two_producers);
    RUN_TEST(test_group_commit);
    RUN_TEST(test_group_commit_failures);
    RUN_TEST(test_settle_without_recorded_hold);
    RUN_TEST(test_restart_recorded_hold);
    RUN_TEST(test_money_assertions);
    RUN_TEST(test_channel_capacity);
    RUN_TEST(test_delay_hook);
    RUN_TEST(test_kill9);
    return UNIT_REPORT();
}
