/* The admin module (src/admin; types in admin-t.h): the admin API for
 * ringctl (admin.c), and the account operations it shares with the portal's
 * jobs (operations.c): creating users and keys (store first, synced, then
 * the in-memory tables), updating keys, the audit log, the JSON shapes of
 * users and keys, and the blocking store call they are built on. Everything
 * runs on the thread that owns the admin_context_t (the control thread; the
 * bootstrap before it runs), never on a relay worker. The text helpers the
 * admin API shares with ringctl are in admin-text.h. Nothing here calls the
 * control thread or the portal. */
#ifndef RINGWAY_ADMIN_H
#define RINGWAY_ADMIN_H

#include "ringway/account-t.h"
#include "ringway/admin-t.h"
#include "ringway/admin-text.h"
#include "ringway/auth.h"
#include "ringway/common.h"
#include "ringway/config-t.h"
#include "ringway/json-t.h"
#include "ringway/server.h"
#include "ringway/store-t.h"
#include "ringway/text-t.h"

/* ---- The context (operations.c) ---- */

/* Checks the fields the owner filled (asserts on a programmer error such as
 * a NULL table or a short JWT secret) and derives the admin token's hash
 * and fingerprint: admin_enabled is false, and the fingerprint "none",
 * without a configured admin_token. */
void admin_context_prepare(admin_context_t *context);

/* store_thread_call as the context's producer: a fresh token, context->ring
 * as the doorbell (NULL before the control thread runs). Blocks up to
 * ADMIN_STORE_TIMEOUT_MS. Returns the ack's status (0 or a negative errno)
 * or -ETIMEDOUT / -EAGAIN. `message` may be &context->message. */
int admin_store_call(admin_context_t *context, const store_message_t *message, uint32_t flags, store_ack_t *ack);

/* ---- Account operations (operations.c) ---- */

void admin_fail(admin_failure_t *failure, uint16_t status, const char *type, const char *code, const char *param,
                const char *format, ...) __attribute__((format(printf, 6, 7)));
/* A store status that is not an answer the caller expected, as 500 / 503. */
void admin_fail_store(admin_failure_t *failure, int status, const char *what);

/* Creates a user in the store (synced) and publishes it. 409 when the email
 * is taken, 503 when the table is full. Returns true with *user_id set. */
bool admin_user_create(admin_context_t *context, const admin_user_request_t *request, uint64_t *user_id,
                       admin_failure_t *failure);

/* Sets all_models and no cap, the default tier without overrides, no
 * token quota, no expiry. */
void admin_key_request_defaults(admin_key_request_t *request);

/* Generates a key, stores it (synced) and publishes it; the full key text
 * goes to key_text (shown once). Returns the published slot, or NULL with
 * *failure filled (404 unknown user, 503 table full, ...). */
account_key_t *admin_key_create(admin_context_t *context, const admin_key_request_t *request,
                                char key_text[static AUTH_KEY_TEXT_BYTES], admin_failure_t *failure);

/* Applies `update` (fields as in store_key_update_t) to the store (synced),
 * then to the key's atomics. */
bool admin_key_update(admin_context_t *context, account_key_t *key, const store_key_update_t *update,
                      const uint64_t model_bits[ACCOUNT_MODEL_WORDS], admin_failure_t *failure);

/* Parses a list of model names (a JSON array of strings, or null for all
 * models) against the configuration: fills all_models, models text and
 * bits. 400 on an unknown or repeated name or an empty list. */
bool admin_models_parse(admin_context_t *context, const uint8_t *body, size_t length, json_span_t value,
                        json_type_t type, bool *all_models, char models[static STORE_MODELS_BYTES],
                        uint64_t bits[static ACCOUNT_MODEL_WORDS], admin_failure_t *failure);

/* Key names: 1..63 bytes of UTF-8 without control characters. */
bool admin_key_name_valid(const char *name, size_t length);

/* Appends a JSON audit entry for the store (synced) on the record
 * `kind`:`id` (the target "user:7", "key:12"); a failure is logged, not
 * reported (the change itself is done). */
void admin_audit_record(admin_context_t *context, const char *admin, const char *action, const char *kind,
                        uint64_t id, const char *details);

/* JSON objects: a user (from the tables and its stored record), a key (from
 * the tables and its stored record; with the full key when key_text is not
 * NULL). Return false when the stored record cannot be read. */
bool admin_write_user(admin_context_t *context, text_buffer_t *out, const account_user_t *user);
bool admin_write_key(admin_context_t *context, text_buffer_t *out, const account_key_t *key, const char *key_text);

/* The keys of one user, in creation order. Returns how many were visited;
 * visit returning false stops. */
uint32_t admin_user_keys(admin_context_t *context, uint64_t user_id,
                         bool (*visit)(void *context, account_key_t *key), void *visit_context);

/* Fills *fields (zeroed first) for account_key_publish from a stored key
 * record: hash, id, user_index = user_id - 1, name, prefix, last4, status,
 * expiry, the tier (by name: a name the config no longer has is the
 * default tier, and logged), the limit overrides, the token quota and its
 * pool (the tokens used), spend cap and spend_available_micros =
 * ledger_key_spend_available_initial(cap, spent), and the allowlist: the
 * record's model names mapped to config model indexes (a name the config no
 * longer has is dropped, so the key loses that model; all_models stays
 * all_models). Returns 0, or -1 for a record that cannot be published (user
 * id 0, a cap below -1, negative spent). Any thread (main.c's store_load). */
int admin_key_fields_from_record(const config_t *config, const store_key_record_t *record, account_key_t *fields);

/* ---- The admin API (admin.c) ---- */

/* Allocates the API's exchanges and their response buffers, serving
 * requests with `context` (which must outlive the API). Returns 0, or -1
 * with `error` filled when memory runs out. */
int admin_api_create(admin_api_t **api, admin_context_t *context, char *error, size_t error_size);

/* Frees what admin_api_create allocated (the server using it must be gone
 * or never served). Sets *api to NULL; NULL is fine. */
void admin_api_destroy(admin_api_t **api);

/* Fills the admin API's part of a server configuration: its budgets
 * (connections, exchanges, buffers, timeouts), handlers and handler
 * context. The caller sets host, port, thread index and TLS. */
void admin_api_server_config(admin_api_t *api, server_config_t *config);

#endif
