/* Types of the store: RocksDB records, the messages producers send to the
 * store thread, its acknowledgements, and the two opaque handles (the store,
 * the store thread) whose state lives in src/store/store-internal.h.
 * Functions are in store.h.
 *
 * Key schema (ids are big-endian u64 so iteration follows id order):
 *   m/next_user m/next_key m/next_audit  decimal text: the next id to hand out
 *   (m/next_usage is no longer written: the next usage id is the last s/ id + 1,
 *   which store_open always took as a floor; a value left by older versions is
 *   read and never ahead of it)
 *   m/schema = "2" (store_open migrates a schema 1 store: there a usage record was
 *   one JSON object at r/<user id>/<usage id>, indexed by s/<usage id> -> that r/ key);
 *   m/jwt_secret and other meta values written with store_meta_put
 *   u/<user id>      user record (binary, versioned; store_user_encode)
 *   e/<email, ASCII lower-cased> -> user id (8 bytes, big-endian)
 *   k/<key id>       key record (binary, versioned; store_key_encode)
 *   h/<request id>   open hold (binary, versioned; store_hold_encode): only holds a
 *                    producer chose to record (see STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED)
 *   s/<usage id>     usage block: the usage records one store round wrote, the
 *                    key's id the block's first (store_usage_block_*: binary, versioned)
 *   r/<user id>/<usage id>  -> u16 little-endian: how many of the s/<usage id> block's
 *                    records are that user's (index: a user's blocks, oldest to newest)
 *   q/<request id>   -> the usage id of that request's record, big-endian u64 (index;
 *                    recorded holds only); schema 1 wrote its r/ key, which ends in it
 *   a/<audit id>     audit entry, one JSON object (store_audit_encode)
 * Usage ids and audit ids are global sequences handed out by the store
 * thread; usage created_ms is stamped by the store thread and never
 * decreases, so usage id order is time order. */
#ifndef RINGWAY_STORE_T_H
#define RINGWAY_STORE_T_H

#include "ringway/account-t.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Text fields are NUL-terminated arrays of these sizes (the NUL included). */
enum {
    STORE_REQUEST_ID_BYTES = 64,
    STORE_MODEL_BYTES = 128,
    STORE_UPSTREAM_BYTES = 64,
    STORE_USAGE_STATUS_BYTES = 32,
    STORE_PASSWORD_HASH_BYTES = 192,    /* an Argon2 encoded hash ("$argon2id$v=19$...") */
    STORE_MODELS_BYTES = 1024,          /* key allowlist: model names separated by ',' */
    STORE_TIER_NAME_BYTES = 32,         /* a [tier NAME] of the config */
    STORE_KEY_LIMITS = ACCOUNT_LIMITS,  /* a key's limit overrides, by config_limit_kind_t */
    STORE_AUDIT_ADMIN_BYTES = 64,
    STORE_AUDIT_ACTION_BYTES = 64,
    STORE_AUDIT_TARGET_BYTES = 128,
    STORE_AUDIT_DETAILS_BYTES = 512,
    STORE_RECORD_BYTES_MAX = 2048,      /* largest binary record (a key record) */
    STORE_JSON_BYTES_MAX = 8192,        /* largest usage or audit JSON, every byte escaped */
    STORE_META_NAME_BYTES = 64,
    STORE_PATH_BYTES = 4096,
};

typedef struct store_user_record {
    uint64_t id;                                   /* from 1; users[id - 1] in the account tables */
    uint32_t status;                               /* account_user_status_t */
    int64_t balance_micros;                        /* settled balance (holds are not persisted in it) */
    int64_t created_ms;                            /* wall clock */
    char email[ACCOUNT_EMAIL_BYTES];               /* stored as given; looked up lower-cased */
    char password_hash[STORE_PASSWORD_HASH_BYTES]; /* "" = no password (cannot log in) */
} store_user_record_t;

typedef struct store_key_record {
    uint64_t id;                                   /* from 1 */
    uint64_t user_id;
    uint8_t hash[ACCOUNT_KEY_HASH_BYTES];          /* SHA-256 of the full key */
    uint32_t status;                               /* account_key_status_t */
    char tier[STORE_TIER_NAME_BYTES];              /* "" = [rate_limits] key_tier */
    uint32_t limits[STORE_KEY_LIMITS];             /* overrides of the tier's; STORE_LIMIT_INHERIT = the tier's */
    uint64_t token_quota;                          /* tokens the key may use in all; 0 = no quota */
    uint64_t tokens_used;                          /* prompt + completion settled (maintained by the store thread) */
    int64_t expires_at_ms;                         /* 0 = never */
    int64_t spend_cap_micros;                      /* -1 = no cap */
    int64_t spent_micros;                          /* settled spending (maintained by the store thread) */
    int64_t created_ms;
    bool all_models;                               /* true: no allowlist, models is "" */
    char name[ACCOUNT_KEY_NAME_BYTES];
    char prefix[ACCOUNT_KEY_PREFIX_BYTES];
    char last4[ACCOUNT_KEY_LAST4_BYTES];
    char models[STORE_MODELS_BYTES];               /* "gpt-4o,gpt-4o-mini"; names, not config indexes */
} store_key_record_t;

typedef struct store_hold_record {
    char request_id[STORE_REQUEST_ID_BYTES];
    uint64_t user_id;
    uint64_t key_id;                               /* 0 = no key */
    int64_t amount_micros;
    int64_t created_ms;                            /* wall clock of the producer */
    char model[STORE_MODEL_BYTES];
} store_hold_record_t;

typedef struct store_usage_record {
    uint64_t id;                                   /* usage id: set by the store thread */
    char request_id[STORE_REQUEST_ID_BYTES];
    uint64_t key_id;                               /* 0 = no key */
    uint64_t user_id;
    char model[STORE_MODEL_BYTES];
    char upstream[STORE_UPSTREAM_BYTES];
    uint64_t prompt_tokens;
    uint64_t completion_tokens;
    uint64_t cached_tokens;
    uint64_t reasoning_tokens;
    int64_t cost_micros;
    char status[STORE_USAGE_STATUS_BYTES];         /* e.g. "completed", "client_closed", "upstream_error" */
    uint64_t latency_ms;
    int64_t created_ms;                            /* set by the store thread (wall clock, never decreasing) */
    bool estimated;                                /* the upstream reported no usage */
    bool capped;                                   /* the cost was capped at the hold */
    uint32_t attempts;                             /* routes tried, the one that answered included
                                                    * (0: none could take the request) */
} store_usage_record_t;

/* Usage blocks. A block holds up to STORE_USAGE_BLOCK_RECORDS_MAX records,
 * ids ascending from the block's first id (its key's), as: tag 'B', version
 * 2, the base created_ms (i64 little-endian), then per record varints
 * (unsigned LEB128; the cost zigzag) of the id's and created_ms's offsets
 * from the block's, user_id, key_id, the four token counts, cost_micros,
 * latency_ms, a flags byte (estimated, capped) and the four strings
 * (request_id, model, upstream, status) as a u8 length and the bytes, then
 * (version 2) the attempts varint. Version 1 blocks, written before there
 * were routes, read as one attempt per record. Each record decodes on its
 * own from its offset. */
enum {
    STORE_USAGE_BLOCK_HEADER_BYTES = 10,
    STORE_USAGE_BLOCK_RECORDS_MAX = 64,
    STORE_USAGE_RECORD_BYTES_MAX = 11 * 10 + 1 + 4 + STORE_REQUEST_ID_BYTES + STORE_MODEL_BYTES +
                                   STORE_UPSTREAM_BYTES + STORE_USAGE_STATUS_BYTES,
    STORE_USAGE_BLOCK_BYTES_MAX = STORE_USAGE_BLOCK_HEADER_BYTES +
                                  STORE_USAGE_BLOCK_RECORDS_MAX * STORE_USAGE_RECORD_BYTES_MAX,
};

typedef struct store_usage_block_writer {
    uint8_t *out;
    size_t capacity;
    size_t length;                                 /* the block's bytes so far */
    uint64_t first_id;
    int64_t base_created_ms;
    uint32_t count;
} store_usage_block_writer_t;

typedef struct store_usage_block_reader {
    const uint8_t *bytes;
    size_t length;
    size_t position;                               /* of the next record */
    uint64_t first_id;
    int64_t base_created_ms;
    uint8_t version;                               /* 1 or 2 */
    uint32_t index;                                /* records read so far */
} store_usage_block_reader_t;

typedef struct store_audit_record {
    uint64_t id;                                   /* set by the store thread */
    int64_t time_ms;                               /* set by the store thread (wall clock) */
    char admin[STORE_AUDIT_ADMIN_BYTES];           /* admin token fingerprint, or "system" */
    char action[STORE_AUDIT_ACTION_BYTES];         /* e.g. "balance.top_up" */
    char target[STORE_AUDIT_TARGET_BYTES];         /* e.g. "user:12" */
    char details[STORE_AUDIT_DETAILS_BYTES];       /* free text (often JSON), stored as a string */
} store_audit_record_t;

/* ---- Messages to the store thread ---- */

typedef enum store_message_kind {
    STORE_MESSAGE_HOLD_OPEN = 1,   /* put h/<request id> (a recorded hold) */
    STORE_MESSAGE_HOLD_RELEASE,    /* delete h/<request id>: nothing charged, no usage record */
    STORE_MESSAGE_SETTLE,          /* the record in the round's s/ block (+ r/), put u/ k/; q/ + delete h/ unless FLAG_HOLD_NOT_RECORDED */
    STORE_MESSAGE_USER_CREATE,     /* put u/ e/ m/next_user */
    STORE_MESSAGE_USER_UPDATE,     /* put u/ (status, password hash) */
    STORE_MESSAGE_BALANCE_ADJUST,  /* put u/ with balance + delta */
    STORE_MESSAGE_KEY_CREATE,      /* put k/ m/next_key */
    STORE_MESSAGE_KEY_UPDATE,      /* put k/ (status, expiry, models, cap, tier, name) */
    STORE_MESSAGE_AUDIT,           /* put a/ m/next_audit */
} store_message_kind_t;

/* Holds and crashes. A hold is recorded (h/<request id>) only when its
 * producer sends STORE_MESSAGE_HOLD_OPEN for it; a relay worker may skip
 * that for short requests and send only the SETTLE. The persisted balance
 * never contains holds, so a hold that was never recorded needs nothing at
 * a restart; a recorded hold still open at a restart is resolved by
 * store_load (settled when its usage record exists, released otherwise).
 *
 * A SETTLE whose hold was never recorded carries
 * STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED: the store then touches no h/ key
 * (no tombstone, no read). Without the flag (what every producer sent
 * before the flag existed) the hold counts as recorded: the store finds it
 * (opened earlier in the same round, else on disk), deletes h/<request id>
 * in the settlement's batch, and checks it by assertion: same user and key,
 * the same amount as the message's hold_micros, the charge within it, and
 * settled once (a second settlement of this run is caught by the round or
 * by the q/ index). A recorded hold that is not found (its HOLD_OPEN's
 * write failed) is logged and the settlement goes ahead. HOLD_RELEASE
 * always deletes the h/ key: send it only for a recorded hold. */
enum {
    STORE_MESSAGE_FLAG_ACK = 1u << 0,  /* push a store_ack_t into the producer's reply channel */
    STORE_MESSAGE_FLAG_SYNC = 1u << 1, /* write with sync=true (fsync), then acknowledge (implies ACK) */
    STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED = 1u << 2, /* SETTLE only: no HOLD_OPEN was sent for this request */
};

enum {
    STORE_USER_FIELD_STATUS = 1u << 0,
    STORE_USER_FIELD_PASSWORD_HASH = 1u << 1,
};

enum {
    STORE_KEY_FIELD_STATUS = 1u << 0,
    STORE_KEY_FIELD_EXPIRES = 1u << 1,
    STORE_KEY_FIELD_MODELS = 1u << 2,     /* all_models and models */
    STORE_KEY_FIELD_SPEND_CAP = 1u << 3,
    STORE_KEY_FIELD_TIER = 1u << 4,
    STORE_KEY_FIELD_NAME = 1u << 5,
    STORE_KEY_FIELD_LIMITS = 1u << 6,     /* every override, as given */
    STORE_KEY_FIELD_TOKEN_QUOTA = 1u << 7,
};

/* A key's limit override that is not set: the tier's value applies. */
#define STORE_LIMIT_INHERIT UINT32_MAX

typedef struct store_hold_release {
    char request_id[STORE_REQUEST_ID_BYTES];
} store_hold_release_t;

typedef struct store_settle {
    /* id and created_ms are assigned by the store thread; the rest is the
     * record as it will be stored. cost_micros is subtracted from the
     * user's balance and added to the key's spent. */
    store_usage_record_t usage;
    int64_t hold_micros;                           /* the hold it settles: 0 <= cost <= hold (recorded or not) */
} store_settle_t;

typedef struct store_user_update {
    uint64_t user_id;
    uint32_t fields;                               /* STORE_USER_FIELD_* */
    uint32_t status;
    char password_hash[STORE_PASSWORD_HASH_BYTES];
} store_user_update_t;

typedef struct store_balance_adjust {
    uint64_t user_id;
    int64_t delta_micros;                          /* top-up > 0, deduct < 0 */
} store_balance_adjust_t;

typedef struct store_key_update {
    uint64_t key_id;
    uint32_t fields;                               /* STORE_KEY_FIELD_* */
    uint32_t status;
    char tier[STORE_TIER_NAME_BYTES];
    uint32_t limits[STORE_KEY_LIMITS];
    uint64_t token_quota;
    bool all_models;
    int64_t expires_at_ms;
    int64_t spend_cap_micros;
    char name[ACCOUNT_KEY_NAME_BYTES];
    char models[STORE_MODELS_BYTES];
} store_key_update_t;

typedef struct store_message {
    uint32_t kind;                                 /* store_message_kind_t */
    uint32_t flags;                                /* STORE_MESSAGE_FLAG_* */
    uint64_t token;                                /* the producer's cookie, echoed in the ack */
    union {
        store_hold_record_t hold_open;
        store_hold_release_t hold_release;
        store_settle_t settle;
        store_user_record_t user_create;           /* id given by the control thread */
        store_user_update_t user_update;
        store_balance_adjust_t balance_adjust;
        store_key_record_t key_create;             /* id given by the control thread; spent_micros ignored (0) */
        store_key_update_t key_update;
        store_audit_record_t audit;                /* id and time_ms ignored (assigned) */
    } body;
} store_message_t;

/* Status of an acknowledged message: 0 or a negative errno. Messages are
 * applied in rounds, all of a round in one WriteBatch (group commit): an
 * answer below other than -EIO concerns this message only; -EIO means the
 * round's batch was not written, and every message of that round gets it. */
enum {
    STORE_OK = 0,
    /* -EIO: the RocksDB write failed (logged with context; nothing changed)
     * -EEXIST: USER_CREATE with a taken email or id, KEY_CREATE with a taken id
     * -ENOENT: unknown user or key id
     * -ERANGE: a balance would go below zero or overflow
     * -EINVAL: a malformed message (id out of range, cost above hold, ...) */
};

typedef struct store_ack {
    uint64_t token;                                /* the message's token */
    uint32_t kind;                                 /* the message's kind */
    int32_t status;                                /* STORE_OK or a negative errno */
    uint64_t id;                                   /* usage id (SETTLE), audit id (AUDIT), else the user/key id */
    int64_t balance_micros;                        /* the user's settled balance after the message (user kinds) */
    int64_t spent_micros;                          /* the key's settled spent after SETTLE / key kinds */
} store_ack_t;

/* ---- The store ---- */

typedef struct store_options {
    uint32_t users_max;                            /* user ids are 1..users_max */
    uint32_t keys_max;                             /* key ids are 1..keys_max */
    /* Fault injection for tests: writes number fault_write_fail_at ..
     * fault_write_fail_at + fault_write_fail_count - 1 (1-based, counting
     * every batch write and WAL sync the store makes) fail as if RocksDB had
     * returned an I/O error. 0 = never. */
    uint64_t fault_write_fail_at;
    uint32_t fault_write_fail_count;               /* 0 counts as 1 */
} store_options_t;

/* The store: opaque to its users, who keep it (statically, say) and pass
 * it to the functions in store.h. store_open fills it, store_close empties
 * it; its state (RocksDB handles, the store thread's balance arrays) is in
 * src/store/store-internal.h. */
typedef struct store {
    struct store_state *state;                          /* NULL until store_open, again after store_close */
} store_t;

typedef struct store_load_callbacks {
    /* Called once per user in id order, then once per key in id order
     * (users first, so a key's user is known). A nonzero return aborts the
     * load, which then fails. Either may be NULL. */
    int (*on_user)(void *context, const store_user_record_t *user);
    int (*on_key)(void *context, const store_key_record_t *key);
} store_load_callbacks_t;

typedef struct store_load_result {
    uint32_t users;
    uint32_t keys;
    uint64_t user_id_max;                               /* 0 when there is none */
    uint64_t key_id_max;
    uint64_t next_user_id;                              /* what the control thread hands out next */
    uint64_t next_key_id;
    uint64_t next_usage_id;
    uint64_t next_audit_id;
    uint32_t holds_settled;                             /* open holds whose usage record exists */
    uint32_t holds_released;                            /* open holds without one: released */
} store_load_result_t;

typedef struct store_usage_query {
    uint64_t user_id;                                   /* 0 = every user */
    uint64_t key_id;                                    /* 0 = every key */
    int64_t from_ms;                                    /* created_ms >= from_ms; 0 = no bound */
    int64_t to_ms;                                      /* created_ms < to_ms; 0 = no bound */
    uint32_t limit;                                     /* 0 = no limit */
} store_usage_query_t;

/* Called per record, newest first; json is the stored text (not
 * NUL-terminated). A nonzero return stops the listing. */
typedef int (*store_usage_visit_t)(void *context, const store_usage_record_t *record, const char *json,
                                   size_t json_length);
typedef int (*store_audit_visit_t)(void *context, const store_audit_record_t *record, const char *json,
                                   size_t json_length);

/* ---- The store thread ---- */

/* The store thread: opaque like store_t, its state in store-internal.h.
 * producer_count is set by store_thread_create and read-only after. */
typedef struct store_thread {
    uint32_t producer_count;                            /* producers are 0..producer_count-1 */
    struct store_thread_state *state;
} store_thread_t;

/* What the store thread did (store_thread_statistics). Exact once the
 * thread stopped; while it runs, a producer sees at least what happened
 * before the ack it last popped. */
typedef struct store_thread_statistics {
    uint64_t messages;                                  /* messages applied (any answer) */
    uint64_t rounds;                                    /* rounds that took at least one message */
    uint64_t batch_writes;                              /* WriteBatches written (one per round at most) */
    uint64_t write_errors;                              /* failed batch writes and WAL syncs */
    uint64_t syncs;                                     /* synced writes and WAL syncs */
} store_thread_statistics_t;

#endif
