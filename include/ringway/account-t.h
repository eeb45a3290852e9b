/* Types of the shared in-memory account tables: users (wallets) and API
 * keys. They are the one place where relay threads meet: every mutable
 * field is an atomic, slots are published once (EMPTY -> READY with release
 * order) and never reused, and only the control thread creates slots. The
 * store (RocksDB) is the durable copy; these tables are loaded from it at
 * start and kept in step with every change. Functions are in account.h. */
#ifndef RINGWAY_ACCOUNT_T_H
#define RINGWAY_ACCOUNT_T_H

#include "ringway/limit.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    ACCOUNT_SLOT_EMPTY = 0,
    ACCOUNT_SLOT_READY = 1,
};

typedef enum account_user_status {
    ACCOUNT_USER_ACTIVE = 0,
    ACCOUNT_USER_SUSPENDED = 1,
} account_user_status_t;

typedef enum account_key_status {
    ACCOUNT_KEY_ACTIVE = 0,
    ACCOUNT_KEY_DISABLED = 1,
} account_key_status_t;

enum {
    ACCOUNT_EMAIL_BYTES = 256,
    ACCOUNT_KEY_NAME_BYTES = 64,
    ACCOUNT_KEY_PREFIX_BYTES = 12, /* "sk-" and the first 8 characters, NUL-terminated */
    ACCOUNT_KEY_LAST4_BYTES = 8,
    ACCOUNT_KEY_HASH_BYTES = 32,   /* SHA-256 */
    ACCOUNT_MODEL_WORDS = 4,       /* 256 bits: one per configured model */
    /* Rate-limit pools per user and per key: one per limit of a tier
     * (config_limit_kind_t). */
    ACCOUNT_LIMITS = 5,
};

typedef struct account_user {
    _Atomic uint32_t state;           /* ACCOUNT_SLOT_*; fields below are valid once READY */
    uint64_t id;                      /* the store's id; users[id - 1] */
    _Atomic int64_t available_micros; /* settled balance minus open holds; admission CASes on it */
    _Atomic uint32_t status;          /* account_user_status_t */
    char email[ACCOUNT_EMAIL_BYTES];  /* lower-case, immutable once READY */
    limit_pool_t limit_pools[ACCOUNT_LIMITS]; /* the account's rate limits over all its keys (src/relay/limits.c) */
} account_user_t;

typedef struct account_key {
    _Atomic uint32_t state;           /* ACCOUNT_SLOT_*; slots are never reused */
    uint8_t hash[ACCOUNT_KEY_HASH_BYTES];
    uint64_t id;                      /* the store's id */
    uint32_t user_index;              /* into account_tables_t.users */
    char name[ACCOUNT_KEY_NAME_BYTES];
    char prefix[ACCOUNT_KEY_PREFIX_BYTES];
    char last4[ACCOUNT_KEY_LAST4_BYTES];
    _Atomic uint32_t status;          /* account_key_status_t */
    _Atomic int64_t expires_at_ms;    /* wall clock, ms since the epoch; 0 = never */
    _Atomic uint32_t all_models;      /* 1: no allowlist */
    _Atomic uint64_t model_bits[ACCOUNT_MODEL_WORDS]; /* allowlist over config model indexes */
    _Atomic int64_t spend_cap_micros; /* -1: no cap */
    _Atomic int64_t spend_available_micros; /* cap - spent - open holds; used only with a cap */
    /* Rate limits (src/relay/limits.c): the tier (an index into the
     * config's tiers, ACCOUNT_TIER_DEFAULT = [rate_limits] key_tier), the
     * key's own value of each limit (ACCOUNT_LIMIT_INHERIT = the tier's),
     * and its total token quota (0 = none). */
    _Atomic uint32_t tier;
    _Atomic uint32_t limit_overrides[ACCOUNT_LIMITS];
    _Atomic uint64_t token_quota;
    /* Bumped after every change of the tier, a limit or the quota: a
     * thread that sees a new value gives its leases of the key back first,
     * so budget leased under the old values is not spent under the new. */
    _Atomic uint32_t limits_generation;
    limit_pool_t limit_pools[ACCOUNT_LIMITS];
    limit_pool_t quota_pool;          /* tokens used in all (window 0), loaded from the store */
} account_key_t;

#define ACCOUNT_TIER_DEFAULT UINT32_MAX
#define ACCOUNT_LIMIT_INHERIT UINT32_MAX

/* Returned by the publish functions when they refuse (see account.h). */
#define ACCOUNT_INDEX_NONE UINT32_MAX

/* Capacity limits accepted by account_tables_init: entries of the indexes
 * are 32-bit slot numbers and the index is twice keys_max. */
enum {
    ACCOUNT_USERS_MAX_LIMIT = 1 << 24,
    ACCOUNT_KEYS_MAX_LIMIT = 1 << 24,
};

typedef struct account_tables {
    account_user_t *users;            /* users_max slots; users[i].id == i + 1 */
    uint32_t users_max;
    _Atomic uint32_t user_count;      /* slots [0, user_count) have been handed out */
    account_key_t *keys;              /* keys_max slots, in creation order */
    uint32_t keys_max;
    _Atomic uint32_t key_count;
    /* Open addressing by the hash's first 8 bytes: entries are slot + 1,
     * 0 is empty; a power of two, twice keys_max (rounded up), so at most
     * half full and every probe sequence meets an empty entry. */
    _Atomic uint32_t *key_index;
    uint32_t key_index_mask;
    /* The same scheme keyed by the key's store id (a multiplicative hash),
     * same size and mask: account_key_by_id. */
    _Atomic uint32_t *key_id_index;
    /* 1 while a publish runs: a second writer entering at the same time is
     * a programmer error caught by an assertion, not a silent race. */
    _Atomic uint32_t writer_active;
} account_tables_t;

#endif
