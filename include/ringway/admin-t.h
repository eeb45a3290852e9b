/* Types of the admin module (src/admin; its functions are in admin.h): the
 * context the account operations run in, shared by the admin API and the
 * portal's jobs (both on the control thread), and the requests and failures
 * of those operations. */
#ifndef RINGWAY_ADMIN_T_H
#define RINGWAY_ADMIN_T_H

#include "ringway/account-t.h"
#include "ringway/common.h"
#include "ringway/config-t.h"
#include "ringway/store-t.h"

struct io_uring;

enum {
    ADMIN_STORE_TIMEOUT_MS = 30000,    /* a store_thread_call that takes longer is reported as 503 */
    ADMIN_FINGERPRINT_BYTES = 13,      /* 12 hex characters and a NUL */
    ADMIN_MESSAGE_BYTES = 256,
    ADMIN_ENTRY_BYTES_MAX = 12 * 1024, /* the longest user, key, usage or audit entry we format */
};

/* What every account operation needs: the configuration, the shared account
 * tables (whose only slot publisher the owner is), the store and this
 * thread's producer index on the store thread, the JWT secret, and the
 * audit source. One thread at a time uses it (the control thread; before it
 * runs, the bootstrap on the main thread). The owner (control.c) fills the
 * first fields and calls admin_context_prepare. */
typedef struct admin_context {
    const config_t *config;           /* admin_token, [auth], [billing], models */
    account_tables_t *tables;
    store_t *store;                   /* opened and loaded: read directly */
    store_thread_t *store_thread;     /* writes go through it */
    const struct health *health;      /* the upstreams' keys and breakers (health.h); NULL in unit tests */
    uint32_t store_producer;          /* our producer index on the store thread */
    uint64_t next_user_id;            /* never reused, even after a store timeout */
    uint64_t next_key_id;
    uint8_t jwt_secret[CONFIG_SECRET_BYTES];
    size_t jwt_secret_length;         /* >= JWT_SECRET_BYTES_MIN */
    /* The ring of the thread using the context, the store thread's doorbell
     * for our acks; NULL: the store thread finds our messages within one
     * sync interval. */
    struct io_uring *ring;

    /* ---- Set by admin_context_prepare. ---- */
    bool admin_enabled;               /* an admin_token is configured */
    uint8_t admin_token_hash[ACCOUNT_KEY_HASH_BYTES];
    char admin_fingerprint[ADMIN_FINGERPRINT_BYTES]; /* the audit source of admin API changes; "none" */

    /* ---- Scratch of admin_store_call. ---- */
    uint64_t store_token;
    store_message_t message;
} admin_context_t;

/* Why an operation was refused, as an HTTP answer in the OpenAI error shape. */
typedef struct admin_failure {
    uint16_t status;
    const char *type;
    const char *code;                 /* NULL: JSON null */
    const char *param;                /* NULL: JSON null */
    char message[ADMIN_MESSAGE_BYTES];
} admin_failure_t;

typedef struct admin_user_request {
    const char *email;                /* validated lower-case form, NUL-terminated */
    const char *password_hash;        /* "" = none */
    int64_t balance_micros;
    const char *audit_admin;          /* NULL: not audited; else fingerprint or "system" */
} admin_user_request_t;

typedef struct admin_key_request {
    uint64_t user_id;
    const char *name;                 /* validated, NUL-terminated */
    bool all_models;
    char models[STORE_MODELS_BYTES];  /* comma-separated, validated config names */
    uint64_t model_bits[ACCOUNT_MODEL_WORDS];
    char tier[STORE_TIER_NAME_BYTES]; /* a configured tier, "" = [rate_limits] key_tier */
    uint32_t limits[STORE_KEY_LIMITS]; /* overrides, STORE_LIMIT_INHERIT = the tier's */
    uint64_t token_quota;             /* 0 = none */
    int64_t expires_at_ms;            /* 0 = never */
    int64_t spend_cap_micros;         /* -1 = none */
    const char *audit_admin;
} admin_key_request_t;

/* The admin API's server side (admin.c): its exchanges and their response
 * buffers. */
typedef struct admin_api admin_api_t;

#endif
