/* The shared in-memory account tables (see account.h for the memory-order
 * contract). Three fixed arrays mapped once at start: user slots, key slots
 * and two open-addressing indexes of key slots (by hash, by id). Slots and
 * index entries are written once and never removed, which is what lets
 * readers go without locks. */
#include "ringway/account.h"

#include <string.h>
#include <sys/mman.h>

/* Sizes of the four mappings, derived from the capacities alone so
 * account_tables_release can recompute them. */
typedef struct account_layout {
    size_t users_bytes;
    size_t keys_bytes;
    size_t index_bytes; /* each of key_index and key_id_index */
    uint32_t index_entries;
} account_layout_t;

static account_layout_t account_layout(uint32_t users_max, uint32_t keys_max) {
    account_layout_t layout;
    uint32_t entries = 1;
    while (entries < keys_max * 2) entries *= 2;
    layout.users_bytes = (size_t)users_max * sizeof(account_user_t);
    layout.keys_bytes = (size_t)keys_max * sizeof(account_key_t);
    layout.index_bytes = (size_t)entries * sizeof(_Atomic uint32_t);
    layout.index_entries = entries;
    return layout;
}

static void *account_map_zeroed(size_t bytes) {
    void *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return memory == MAP_FAILED ? NULL : memory;
}

static void account_unmap(void *memory, size_t bytes) {
    if (memory != NULL) munmap(memory, bytes);
}

bool account_tables_init(account_tables_t *tables, uint32_t users_max, uint32_t keys_max) {
    RW_ASSERT(tables != NULL);
    memset(tables, 0, sizeof(*tables));
    if (users_max < 1 || users_max > ACCOUNT_USERS_MAX_LIMIT) return false;
    if (keys_max < 1 || keys_max > ACCOUNT_KEYS_MAX_LIMIT) return false;
    account_layout_t layout = account_layout(users_max, keys_max);

    tables->users = account_map_zeroed(layout.users_bytes);
    tables->keys = account_map_zeroed(layout.keys_bytes);
    tables->key_index = account_map_zeroed(layout.index_bytes);
    tables->key_id_index = account_map_zeroed(layout.index_bytes);
    tables->users_max = users_max;
    tables->keys_max = keys_max;
    tables->key_index_mask = layout.index_entries - 1;
    if (tables->users == NULL || tables->keys == NULL || tables->key_index == NULL ||
        tables->key_id_index == NULL) {
        account_tables_release(tables);
        return false;
    }
    /* Zero pages are the EMPTY state everywhere; nothing to store. */
    RW_ASSERT(ACCOUNT_SLOT_EMPTY == 0);
    atomic_init(&tables->user_count, 0);
    atomic_init(&tables->key_count, 0);
    atomic_init(&tables->writer_active, 0);
    return true;
}

void account_tables_release(account_tables_t *tables) {
    RW_ASSERT(tables != NULL);
    if (tables->users_max != 0 && tables->keys_max != 0) {
        account_layout_t layout = account_layout(tables->users_max, tables->keys_max);
        account_unmap(tables->users, layout.users_bytes);
        account_unmap(tables->keys, layout.keys_bytes);
        account_unmap((void *)tables->key_index, layout.index_bytes);
        account_unmap((void *)tables->key_id_index, layout.index_bytes);
    }
    memset(tables, 0, sizeof(*tables));
}

/* Contract 1: one writer at a time. Entering twice is a programmer error. */
static void account_writer_enter(account_tables_t *tables) {
    uint32_t was_active =
        atomic_exchange_explicit(&tables->writer_active, 1, memory_order_acquire);
    RW_ASSERT(was_active == 0);
}

static void account_writer_leave(account_tables_t *tables) {
    atomic_store_explicit(&tables->writer_active, 0, memory_order_release);
}

/* ---- Users ---------------------------------------------------------------- */

uint32_t account_user_publish(account_tables_t *tables, uint64_t id, const char *email,
                              size_t email_length, int64_t available_micros,
                              account_user_status_t status) {
    RW_ASSERT(tables != NULL && tables->users != NULL);
    RW_ASSERT(email != NULL || email_length == 0);
    RW_ASSERT(status == ACCOUNT_USER_ACTIVE || status == ACCOUNT_USER_SUSPENDED);
    if (id < 1 || id > tables->users_max) return ACCOUNT_INDEX_NONE;
    if (email_length >= ACCOUNT_EMAIL_BYTES) return ACCOUNT_INDEX_NONE;
    if (email_length > 0 && memchr(email, '\0', email_length) != NULL) return ACCOUNT_INDEX_NONE;

    account_writer_enter(tables);
    uint32_t index = (uint32_t)(id - 1);
    account_user_t *user = &tables->users[index];
    if (atomic_load_explicit(&user->state, memory_order_relaxed) != ACCOUNT_SLOT_EMPTY) {
        account_writer_leave(tables);
        return ACCOUNT_INDEX_NONE;
    }
    user->id = id;
    memset(user->email, 0, sizeof(user->email));
    if (email_length > 0) memcpy(user->email, email, email_length);
    atomic_store_explicit(&user->available_micros, available_micros, memory_order_relaxed);
    atomic_store_explicit(&user->status, (uint32_t)status, memory_order_relaxed);
    atomic_store_explicit(&user->state, ACCOUNT_SLOT_READY, memory_order_release);

    uint32_t count = atomic_load_explicit(&tables->user_count, memory_order_relaxed);
    if (index + 1 > count) {
        atomic_store_explicit(&tables->user_count, index + 1, memory_order_release);
    }
    account_writer_leave(tables);
    return index;
}

account_user_t *account_user_at(account_tables_t *tables, uint32_t index) {
    RW_ASSERT(tables != NULL);
    if (index >= tables->users_max) return NULL;
    account_user_t *user = &tables->users[index];
    if (atomic_load_explicit(&user->state, memory_order_acquire) != ACCOUNT_SLOT_READY) return NULL;
    RW_ASSERT(user->id == (uint64_t)index + 1);
    return user;
}

account_user_t *account_user_get(account_tables_t *tables, uint64_t id) {
    RW_ASSERT(tables != NULL);
    if (id < 1 || id > tables->users_max) return NULL;
    return account_user_at(tables, (uint32_t)(id - 1));
}

void account_user_set_status(account_user_t *user, account_user_status_t status) {
    RW_ASSERT(user != NULL);
    RW_ASSERT(status == ACCOUNT_USER_ACTIVE || status == ACCOUNT_USER_SUSPENDED);
    atomic_store_explicit(&user->status, (uint32_t)status, memory_order_release);
}

account_user_status_t account_user_status(const account_user_t *user) {
    RW_ASSERT(user != NULL);
    return (account_user_status_t)atomic_load_explicit(&((account_user_t *)user)->status,
                                                       memory_order_acquire);
}

/* ---- Keys ----------------------------------------------------------------- */

bool account_hash_equal(const uint8_t a[ACCOUNT_KEY_HASH_BYTES],
                        const uint8_t b[ACCOUNT_KEY_HASH_BYTES]) {
    uint32_t difference = 0;
    for (size_t index = 0; index < ACCOUNT_KEY_HASH_BYTES; index++) {
        difference |= (uint32_t)(a[index] ^ b[index]);
        /* Keeps the compiler from turning the loop into an early exit. */
        __asm__ __volatile__("" : "+r"(difference));
    }
    return difference == 0;
}

/* Where a hash's probe sequence starts: its first 8 bytes, little-endian
 * (SHA-256 output is uniform, so the low bits are as good as any). */
static uint32_t account_hash_position(const account_tables_t *tables,
                                      const uint8_t hash[ACCOUNT_KEY_HASH_BYTES]) {
    uint64_t prefix = 0;
    for (int index = 7; index >= 0; index--) prefix = (prefix << 8) | hash[index];
    return (uint32_t)(prefix & tables->key_index_mask);
}

/* Where an id's probe sequence starts: Fibonacci hashing spreads the dense
 * store ids over the table. */
static uint32_t account_id_position(const account_tables_t *tables, uint64_t id) {
    uint64_t mixed = id * UINT64_C(0x9E3779B97F4A7C15);
    return (uint32_t)((mixed >> 32) & tables->key_index_mask);
}

/* Stores slot + 1 into the first empty entry from position on. Writer only:
 * entries are never cleared, so a relaxed load seeing non-zero is final. */
static void account_index_insert(account_tables_t *tables, _Atomic uint32_t *index,
                                 uint32_t position, uint32_t slot) {
    for (uint32_t probes = 0; probes <= tables->key_index_mask; probes++) {
        if (atomic_load_explicit(&index[position], memory_order_relaxed) == 0) {
            atomic_store_explicit(&index[position], slot + 1, memory_order_release);
            return;
        }
        position = (position + 1) & tables->key_index_mask;
    }
    /* The index is at most half full (contract of the layout). */
    RW_ASSERT(false);
}

account_key_t *account_key_find(account_tables_t *tables, const uint8_t hash[ACCOUNT_KEY_HASH_BYTES]) {
    RW_ASSERT(tables != NULL && hash != NULL);
    uint32_t position = account_hash_position(tables, hash);
    for (uint32_t probes = 0; probes <= tables->key_index_mask; probes++) {
        uint32_t entry = atomic_load_explicit(&tables->key_index[position], memory_order_acquire);
        if (entry == 0) return NULL;
        RW_ASSERT(entry <= tables->keys_max);
        account_key_t *key = &tables->keys[entry - 1];
        if (account_hash_equal(key->hash, hash)) return key;
        position = (position + 1) & tables->key_index_mask;
    }
    return NULL;
}

account_key_t *account_key_by_id(account_tables_t *tables, uint64_t id) {
    RW_ASSERT(tables != NULL);
    if (id == 0) return NULL;
    uint32_t position = account_id_position(tables, id);
    for (uint32_t probes = 0; probes <= tables->key_index_mask; probes++) {
        uint32_t entry = atomic_load_explicit(&tables->key_id_index[position], memory_order_acquire);
        if (entry == 0) return NULL;
        RW_ASSERT(entry <= tables->keys_max);
        account_key_t *key = &tables->keys[entry - 1];
        if (key->id == id) return key;
        position = (position + 1) & tables->key_index_mask;
    }
    return NULL;
}

static bool account_text_terminated(const char *text, size_t capacity) {
    return memchr(text, '\0', capacity) != NULL;
}

account_key_t *account_key_publish(account_tables_t *tables, const account_key_t *fields) {
    RW_ASSERT(tables != NULL && tables->keys != NULL && fields != NULL);
    /* *fields is private to the caller (contract), so plain reads of its
     * atomics are fine; the casts only drop const for atomic_load. */
    account_key_t *source = (account_key_t *)fields;
    if (fields->id == 0 || fields->user_index >= tables->users_max) return NULL;
    if (!account_text_terminated(fields->name, sizeof(fields->name)) ||
        !account_text_terminated(fields->prefix, sizeof(fields->prefix)) ||
        !account_text_terminated(fields->last4, sizeof(fields->last4))) {
        return NULL;
    }

    account_writer_enter(tables);
    uint32_t slot = atomic_load_explicit(&tables->key_count, memory_order_relaxed);
    if (slot >= tables->keys_max || account_key_find(tables, fields->hash) != NULL ||
        account_key_by_id(tables, fields->id) != NULL) {
        account_writer_leave(tables);
        return NULL;
    }
    account_key_t *key = &tables->keys[slot];
    RW_ASSERT(atomic_load_explicit(&key->state, memory_order_relaxed) == ACCOUNT_SLOT_EMPTY);

    memcpy(key->hash, fields->hash, sizeof(key->hash));
    key->id = fields->id;
    key->user_index = fields->user_index;
    memcpy(key->name, fields->name, sizeof(key->name));
    memcpy(key->prefix, fields->prefix, sizeof(key->prefix));
    memcpy(key->last4, fields->last4, sizeof(key->last4));
    atomic_store_explicit(&key->status,
                          atomic_load_explicit(&source->status, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&key->expires_at_ms,
                          atomic_load_explicit(&source->expires_at_ms, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&key->all_models,
                          atomic_load_explicit(&source->all_models, memory_order_relaxed),
                          memory_order_relaxed);
    for (size_t word = 0; word < ACCOUNT_MODEL_WORDS; word++) {
        atomic_store_explicit(&key->model_bits[word],
                              atomic_load_explicit(&source->model_bits[word], memory_order_relaxed),
                              memory_order_relaxed);
    }
    atomic_store_explicit(&key->spend_cap_micros,
                          atomic_load_explicit(&source->spend_cap_micros, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&key->spend_available_micros,
                          atomic_load_explicit(&source->spend_available_micros, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&key->tier, atomic_load_explicit(&source->tier, memory_order_relaxed),
                          memory_order_relaxed);
    for (size_t kind = 0; kind < ACCOUNT_LIMITS; kind++) {
        atomic_store_explicit(&key->limit_overrides[kind],
                              atomic_load_explicit(&source->limit_overrides[kind], memory_order_relaxed),
                              memory_order_relaxed);
    }
    atomic_store_explicit(&key->token_quota, atomic_load_explicit(&source->token_quota, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&key->quota_pool.word,
                          atomic_load_explicit(&source->quota_pool.word, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&key->state, ACCOUNT_SLOT_READY, memory_order_release);

    account_index_insert(tables, tables->key_index, account_hash_position(tables, key->hash), slot);
    account_index_insert(tables, tables->key_id_index, account_id_position(tables, key->id), slot);
    atomic_store_explicit(&tables->key_count, slot + 1, memory_order_release);
    account_writer_leave(tables);
    return key;
}

account_key_t *account_key_at(account_tables_t *tables, uint32_t slot) {
    RW_ASSERT(tables != NULL);
    if (slot >= tables->keys_max) return NULL;
    account_key_t *key = &tables->keys[slot];
    if (atomic_load_explicit(&key->state, memory_order_acquire) != ACCOUNT_SLOT_READY) return NULL;
    return key;
}

uint32_t account_key_count(account_tables_t *tables) {
    RW_ASSERT(tables != NULL);
    return atomic_load_explicit(&tables->key_count, memory_order_acquire);
}

bool account_key_allows_model(const account_key_t *key, uint32_t model_index) {
    RW_ASSERT(key != NULL);
    account_key_t *shared = (account_key_t *)key;
    if (atomic_load_explicit(&shared->all_models, memory_order_acquire) != 0) return true;
    if (model_index >= ACCOUNT_MODEL_WORDS * 64) return false;
    uint64_t word = atomic_load_explicit(&shared->model_bits[model_index / 64], memory_order_acquire);
    return (word >> (model_index % 64)) & 1;
}

bool account_key_expired(const account_key_t *key, int64_t now_ms) {
    RW_ASSERT(key != NULL);
    int64_t expires_at_ms =
        atomic_load_explicit(&((account_key_t *)key)->expires_at_ms, memory_order_acquire);
    return expires_at_ms != 0 && now_ms >= expires_at_ms;
}

void account_key_set_models(account_key_t *key, bool all_models,
                            const uint64_t bits[ACCOUNT_MODEL_WORDS]) {
    RW_ASSERT(key != NULL);
    if (all_models) {
        atomic_store_explicit(&key->all_models, 1, memory_order_release);
        return;
    }
    RW_ASSERT(bits != NULL);
    for (size_t word = 0; word < ACCOUNT_MODEL_WORDS; word++) {
        atomic_store_explicit(&key->model_bits[word], bits[word], memory_order_release);
    }
    atomic_store_explicit(&key->all_models, 0, memory_order_release);
}

void account_key_set_status(account_key_t *key, account_key_status_t status) {
    RW_ASSERT(key != NULL);
    RW_ASSERT(status == ACCOUNT_KEY_ACTIVE || status == ACCOUNT_KEY_DISABLED);
    atomic_store_explicit(&key->status, (uint32_t)status, memory_order_release);
}

account_key_status_t account_key_status(const account_key_t *key) {
    RW_ASSERT(key != NULL);
    return (account_key_status_t)atomic_load_explicit(&((account_key_t *)key)->status,
                                                      memory_order_acquire);
}

void account_key_set_expiry(account_key_t *key, int64_t expires_at_ms) {
    RW_ASSERT(key != NULL);
    RW_ASSERT(expires_at_ms >= 0);
    atomic_store_explicit(&key->expires_at_ms, expires_at_ms, memory_order_release);
}

void account_key_set_tier(account_key_t *key, uint32_t tier) {
    RW_ASSERT(key != NULL);
    atomic_store_explicit(&key->tier, tier, memory_order_release);
}

void account_key_set_limit(account_key_t *key, uint32_t kind, uint32_t value) {
    RW_ASSERT(key != NULL && kind < ACCOUNT_LIMITS);
    atomic_store_explicit(&key->limit_overrides[kind], value, memory_order_release);
}

uint32_t account_key_limit(const account_key_t *key, uint32_t kind) {
    RW_ASSERT(key != NULL && kind < ACCOUNT_LIMITS);
    return atomic_load_explicit(&((account_key_t *)key)->limit_overrides[kind], memory_order_acquire);
}

void account_key_set_token_quota(account_key_t *key, uint64_t tokens) {
    RW_ASSERT(key != NULL);
    atomic_store_explicit(&key->token_quota, tokens, memory_order_release);
}

uint64_t account_key_token_quota(const account_key_t *key) {
    RW_ASSERT(key != NULL);
    return atomic_load_explicit(&((account_key_t *)key)->token_quota, memory_order_acquire);
}

uint32_t account_key_tier(const account_key_t *key) {
    RW_ASSERT(key != NULL);
    return atomic_load_explicit(&((account_key_t *)key)->tier, memory_order_acquire);
}
