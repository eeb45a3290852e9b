/* Private to src/admin: the control thread's state, shared by the thread and
 * job plumbing (control.c), the account operations both the admin API and
 * the jobs use (accounts.c), the account jobs (jobs.c) and the admin HTTP API
 * (admin.c). Everything here runs on the control thread, except what
 * control.c documents as the workers' side, and control_bootstrap, which
 * runs on the main thread before the control thread exists. */
#ifndef RINGWAY_ADMIN_INTERNAL_H
#define RINGWAY_ADMIN_INTERNAL_H

#include "ringway/account.h"
#include "ringway/admin.h"
#include "ringway/auth.h"
#include "ringway/channel.h"
#include "ringway/config.h"
#include "ringway/server.h"
#include "ringway/store.h"
#include "ringway/text.h"

#include <pthread.h>
#include <stdatomic.h>

enum {
    CONTROL_TICK_MS = 20,
    CONTROL_JOBS_PER_TURN = 16,          /* jobs run per wake-up before HTTP gets a turn */
    ADMIN_CONNECTIONS_MAX = 64,
    ADMIN_EXCHANGES_MAX = 16,
    ADMIN_REQUEST_BUFFER_BYTES = 64 * 1024,
    ADMIN_HEAD_BYTES_MAX = 16 * 1024,
    ADMIN_BODY_BYTES_MAX = 1024 * 1024,
    ADMIN_RESPONSE_BYTES = 256 * 1024,   /* per exchange: one JSON answer or one export page */
    ADMIN_LIST_LIMIT_DEFAULT = 100,
    ADMIN_LIST_LIMIT_MAX = 1000,
    ADMIN_AUDIT_LIMIT_DEFAULT = 100,
    ADMIN_FINGERPRINT_BYTES = 13,        /* 12 hex characters and a NUL */
    ADMIN_MESSAGE_BYTES = 256,
    ADMIN_TIER_MAX = 65535,
    ADMIN_ENTRY_BYTES_MAX = 12 * 1024,   /* the longest user, key, usage or audit entry we format */
};

typedef enum control_state {
    CONTROL_STATE_CREATED = 0,
    CONTROL_STATE_STARTING,
    CONTROL_STATE_RUNNING,
    CONTROL_STATE_FAILED,
    CONTROL_STATE_STOPPED,
} control_state_t;

/* One relay worker's side of the job protocol. The worker pushes jobs and
 * pops replies; the control thread pops jobs and pushes replies. */
typedef struct control_worker {
    channel_t jobs;                             /* control_job_t */
    channel_t replies;                          /* control_reply_t */
    _Atomic int ring_fd;                        /* -1: unbound, the worker polls */
    _Atomic(loop_operation_t *) mailbox;
} control_worker_t;

/* Why an operation was refused, as an HTTP answer in the OpenAI error shape. */
typedef struct admin_failure {
    uint16_t status;
    const char *type;
    const char *code;                           /* NULL: JSON null */
    const char *param;                          /* NULL: JSON null */
    char message[ADMIN_MESSAGE_BYTES];
} admin_failure_t;

/* Export state of an admin exchange that streams usage page by page. */
typedef enum admin_format {
    ADMIN_FORMAT_JSON = 0,
    ADMIN_FORMAT_JSONL,
    ADMIN_FORMAT_CSV,
} admin_format_t;

typedef struct admin_exchange {
    server_exchange_t *exchange;
    char *response;                             /* ADMIN_RESPONSE_BYTES, owned until the exchange ends */
    bool streaming;
    bool stream_done;
    admin_format_t format;
    store_usage_query_t query;                  /* the caller's filters */
    uint64_t sent;                              /* records sent so far */
    uint64_t last_id;                           /* id of the last record sent; UINT64_MAX before any */
    int64_t last_created_ms;
    bool first_page;
} admin_exchange_t;

struct control {
    const config_t *config;
    account_tables_t *tables;
    store_t *store;
    store_thread_t *store_thread;
    uint32_t store_producer;
    uint32_t worker_count;
    uint32_t job_channel_capacity;
    uint64_t next_user_id;
    uint64_t next_key_id;
    uint64_t store_token;
    uint8_t jwt_secret[CONFIG_SECRET_BYTES];
    size_t jwt_secret_length;

    bool admin_enabled;
    uint8_t admin_token_hash[ACCOUNT_KEY_HASH_BYTES];
    char admin_fingerprint[ADMIN_FINGERPRINT_BYTES];

    control_worker_t *workers;                  /* [worker_count], cache-line aligned */

    /* The thread. */
    pthread_t thread;
    bool thread_started;
    _Atomic uint32_t state;                     /* control_state_t */
    _Atomic bool stop_requested;
    char start_error[512];
    _Atomic int ring_fd;                        /* the control ring, -1 until it runs */
    loop_t loop;
    bool loop_ready;
    server_t *server;
    void (*server_tick)(loop_t *loop);
    loop_operation_t mailbox;                   /* doorbells from workers */
    loop_operation_t drain_operation;           /* a NOP that gives the job queue another turn */
    uint32_t next_worker;                       /* round-robin start of the next drain */

    admin_exchange_t exchanges[ADMIN_EXCHANGES_MAX];
    char *response_memory;                      /* ADMIN_EXCHANGES_MAX * ADMIN_RESPONSE_BYTES, mapped */

    store_message_t message;                    /* scratch for store calls */
};

/* ---- control.c ---- */

/* store_thread_call from the control thread (or the bootstrap): a fresh
 * token, the control ring as the doorbell when the thread runs. Returns the
 * ack's status (0 or a negative errno) or -ETIMEDOUT / -EAGAIN. */
int control_store_call(control_t *control, const store_message_t *message, uint32_t flags, store_ack_t *ack);

/* ---- accounts.c: operations shared by the admin API and the jobs ---- */

void admin_fail(admin_failure_t *failure, uint16_t status, const char *type, const char *code, const char *param,
                const char *format, ...) __attribute__((format(printf, 6, 7)));
/* A store status that is not an answer the caller expected, as 500 / 503. */
void admin_fail_store(admin_failure_t *failure, int status, const char *what);

typedef struct admin_user_request {
    const char *email;                          /* validated lower-case form, NUL-terminated */
    const char *password_hash;                  /* "" = none */
    int64_t balance_micros;
    const char *audit_admin;                    /* NULL: not audited; else fingerprint or "system" */
} admin_user_request_t;

/* Creates a user in the store (synced) and publishes it. 409 when the email
 * is taken, 503 when the table is full. Returns true with *user_id set. */
bool admin_user_create(control_t *control, const admin_user_request_t *request, uint64_t *user_id,
                       admin_failure_t *failure);

typedef struct admin_key_request {
    uint64_t user_id;
    const char *name;                           /* validated, NUL-terminated */
    bool all_models;
    char models[STORE_MODELS_BYTES];            /* comma-separated, validated config names */
    uint64_t model_bits[ACCOUNT_MODEL_WORDS];
    uint32_t tier;
    int64_t expires_at_ms;                      /* 0 = never */
    int64_t spend_cap_micros;                   /* -1 = none */
    const char *audit_admin;
} admin_key_request_t;

/* Sets all_models and no cap, tier 0, no expiry. */
void admin_key_request_defaults(admin_key_request_t *request);

/* Generates a key, stores it (synced) and publishes it; the full key text
 * goes to key_text (shown once). Returns the published slot, or NULL with
 * *failure filled (404 unknown user, 503 table full, ...). */
account_key_t *admin_key_create(control_t *control, const admin_key_request_t *request,
                                char key_text[static AUTH_KEY_TEXT_BYTES], admin_failure_t *failure);

/* Applies `update` (fields as in store_key_update_t) to the store (synced),
 * then to the key's atomics. */
bool admin_key_update(control_t *control, account_key_t *key, const store_key_update_t *update,
                      const uint64_t model_bits[ACCOUNT_MODEL_WORDS], admin_failure_t *failure);

/* Parses a list of model names (a JSON array of strings, or null for all
 * models) against the configuration: fills all_models, models text and
 * bits. 400 on an unknown or repeated name or an empty list. */
bool admin_models_parse(control_t *control, const uint8_t *body, size_t length, json_span_t value, json_type_t type,
                        bool *all_models, char models[static STORE_MODELS_BYTES],
                        uint64_t bits[static ACCOUNT_MODEL_WORDS], admin_failure_t *failure);

/* Key names: 1..63 bytes of UTF-8 without control characters. */
bool admin_key_name_valid(const char *name, size_t length);

/* Appends a JSON audit entry for the store (synced); a failure is logged,
 * not reported (the change itself is done). */
void admin_audit(control_t *control, const char *admin, const char *action, const char *target,
                 const char *details);

/* JSON objects: a user (from the tables and its stored record), a key (from
 * the tables and its stored record; with the full key when key_text is not
 * NULL). Return false when the stored record cannot be read. */
bool admin_write_user(control_t *control, text_buffer_t *out, const account_user_t *user);
bool admin_write_key(control_t *control, text_buffer_t *out, const account_key_t *key, const char *key_text);

/* The keys of one user, in creation order. Returns how many were visited;
 * visit returning false stops. */
uint32_t admin_user_keys(control_t *control, uint64_t user_id, bool (*visit)(void *context, account_key_t *key),
                         void *context);

/* ---- jobs.c ---- */

/* Runs one account job; writes the JSON reply into job->reply and returns
 * the HTTP status with *length set. */
uint16_t control_job_run(control_t *control, const control_job_t *job, uint32_t *length);

/* ---- admin.c ---- */

void admin_on_request(server_exchange_t *exchange);
void admin_on_sent(server_exchange_t *exchange);
void admin_on_abort(server_exchange_t *exchange);
/* Prepares the admin token's hash and fingerprint (control_create). */
void admin_prepare(control_t *control);

#endif
