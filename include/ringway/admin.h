/* The control thread (src/admin): the admin API for ringctl on its own
 * listener, and the account jobs relay workers hand it (control-t.h). It is the
 * only thread that creates users and API keys: it hands out their ids and
 * publishes their slots in the shared account tables, and it is store
 * producer `store_producer` (after the workers), talking to the store thread
 * with blocking store_thread_call (it may block; it is never on the data
 * path). The text helpers the admin API shares with ringctl are in
 * admin-text.h.
 *
 * Start-up, in this order (main.c):
 *   1. account_tables_init, store_open, store_load (admin_key_fields_from_record
 *      turns each loaded key record into the fields account_key_publish takes),
 *      the JWT secret (config or store), store_thread_create with
 *      config->threads + 1 producers.
 *   2. control_create (no thread yet; workers may be handed the pointer).
 *   3. workers built on their threads; for each: store_thread_bind_producer
 *      and control_bind_worker with its ring fd and mailbox operation.
 *   4. store_thread_start.
 *   5. control_bootstrap when store_load found no user (the store thread must
 *      run: it writes the admin account).
 *   6. control_start: returns once the admin listener is accepting.
 *   7. the workers start serving.
 * Shutdown: workers stop first, then control_stop, then the store thread. */
#ifndef RINGWAY_ADMIN_H
#define RINGWAY_ADMIN_H

#include "ringway/account-t.h"
#include "ringway/admin-text.h"
#include "ringway/common.h"
#include "ringway/config-t.h"
#include "ringway/control-t.h"
#include "ringway/json-t.h"
#include "ringway/loop.h"
#include "ringway/store-t.h"

#include <liburing.h>

typedef struct control control_t;

typedef struct control_options {
    const config_t *config;           /* admin_listen, [auth], [billing], models; outlives the control thread */
    account_tables_t *tables;         /* loaded; the control thread becomes their only slot publisher */
    store_t *store;                   /* opened and loaded */
    store_thread_t *store_thread;     /* created; must run before control_bootstrap / control_start */
    uint32_t store_producer;          /* the control thread's producer index (config->threads) */
    uint32_t worker_count;            /* relay workers 0..worker_count-1 (1..CONTROL_WORKERS_MAX) */
    uint64_t next_user_id;            /* store_load_result_t.next_user_id */
    uint64_t next_key_id;             /* store_load_result_t.next_key_id */
    const uint8_t *jwt_secret;        /* HS256 key, >= JWT_SECRET_BYTES_MIN bytes; copied */
    size_t jwt_secret_length;         /* <= CONFIG_SECRET_BYTES */
    uint32_t job_channel_capacity;    /* per worker and direction, a power of two; 0 = 256 */
} control_options_t;

enum {
    CONTROL_WORKERS_MAX = 256,
    CONTROL_STORE_TIMEOUT_MS = 30000, /* a store_thread_call that takes longer is reported as 503 */
    CONTROL_KEYS_PER_USER_MAX = 100,  /* self-service key creation refuses more (slots are never reused) */
    CONTROL_USAGE_LIMIT_DEFAULT = 20, /* GET /billing/usage without ?limit */
    CONTROL_USAGE_LIMIT_MAX = 1000,
};

/* Allocates the control state and the per-worker job and reply channels.
 * No thread, ring or socket yet. Checks the options (asserts on a
 * programmer error such as a NULL table) and returns 0, or -1 with `error`
 * filled when memory runs out. */
int control_create(control_t **control, const control_options_t *options, char *error, size_t error_size);

/* Replies to `worker` are announced by a MSG_RING CQE posted into the ring
 * `worker_ring_fd` with user_data `worker_mailbox` (the worker's callback
 * then drains control_reply_pop). Any thread, before or after
 * control_start; until a worker is bound its replies are only queued, and it
 * must poll. */
void control_bind_worker(control_t *control, uint32_t worker, int worker_ring_fd, loop_operation_t *worker_mailbox);

/* First start with an empty store (no users): creates the admin account
 * "admin@ringway.local" (no password, so it cannot log in; balance = the
 * configured free grant; audited as "system") and prints to stderr the
 * exact ringctl command that makes its first API key. Runs on the calling
 * thread before control_start, with the store thread running. Does nothing
 * and returns 0 when users already exist. Returns -1 with `error` filled when
 * the store refuses. */
int control_bootstrap(control_t *control, char *error, size_t error_size);

/* Spawns the control thread, which builds its ring and admin server on
 * itself (single-issuer ring), starts accepting on config admin_listen and
 * takes jobs. Returns 0 once it listens, or -1 with `error` filled (e.g. the
 * admin port is taken; the thread has then ended). */
int control_start(control_t *control, char *error, size_t error_size);

/* Stops accepting admin connections, ends the thread (within one tick,
 * about 20 ms, after any job or request in progress) and joins it. Jobs
 * still queued are not run. Safe when never started; idempotent. */
void control_stop(control_t *control);

/* Frees what control_create allocated; the thread must be stopped. Sets
 * *control to NULL. */
void control_destroy(control_t **control);

/* ---- The worker's side (called on the worker's thread) ---- */

/* Queues a job (copied) for the control thread and, when it may be asleep,
 * rings its doorbell through worker_ring (queued only: the worker's next
 * submit carries it). worker_ring may be NULL: the control thread then
 * notices the job within one tick. The job's memory (body, argument, reply)
 * must stay valid until its reply has been popped. Returns false when the
 * worker's job channel is full (the worker answers 503). */
bool control_submit(control_t *control, uint32_t worker, const control_job_t *job, struct io_uring *worker_ring);

/* Takes the next reply for this worker; false when there is none. The
 * reply's bytes are at the job's reply buffer (reply->length of them). */
bool control_reply_pop(control_t *control, uint32_t worker, control_reply_t *reply);

/* ---- Keys loaded from the store ---- */

/* Fills *fields (zeroed first) for account_key_publish from a stored key
 * record: hash, id, user_index = user_id - 1, name, prefix, last4, status,
 * expiry, tier, spend cap and spend_available_micros =
 * ledger_key_spend_available_initial(cap, spent), and the allowlist: the
 * record's model names mapped to config model indexes (a name the config no
 * longer has is dropped, so the key loses that model; all_models stays
 * all_models). Returns 0, or -1 for a record that cannot be published (user
 * id 0, a cap below -1, negative spent). */
int admin_key_fields_from_record(const config_t *config, const store_key_record_t *record, account_key_t *fields);

#endif
