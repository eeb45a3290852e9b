/* The shared in-memory account tables: users (wallets) and API keys, read by
 * every relay thread from memory on the request path, created only by the
 * control thread (or the loader before the workers start). Types are in
 * account-t.h.
 *
 * Memory-order contract
 * ---------------------
 * 1. One writer creates slots. account_user_publish and account_key_publish
 *    may run on one thread at a time (the control thread, or the loader
 *    before any worker starts); an overlapping second call trips an
 *    assertion. Slots are never freed or reused, and a slot's immutable
 *    fields (user: id, email; key: hash, id, user_index, name, prefix,
 *    last4) are written only before it is published.
 * 2. Publishing a user: the writer fills every field of users[id - 1] with
 *    plain or relaxed stores, then stores state = ACCOUNT_SLOT_READY with
 *    memory_order_release, then raises user_count (release).
 *    account_user_get loads state with memory_order_acquire and returns the
 *    slot only when READY: a reader that sees READY sees every field as
 *    published.
 * 3. Publishing a key: the writer fills keys[slot] (plain and relaxed
 *    stores), stores its state = READY (release), then stores slot + 1 into
 *    the first empty entry of its probe sequence in key_index (release),
 *    the same in key_id_index (release), and finally key_count (release).
 *    account_key_find acquire-loads index entries: an entry that names a
 *    slot synchronizes with the release that wrote it, so the slot's hash
 *    and other fields are complete. Entries go from 0 to their final value
 *    once and are never cleared, so a probe sequence only ever grows at its
 *    end: a key whose index store happened-before the start of a lookup (for
 *    example, the reader acquire-loaded a counter the writer release-stored
 *    after publishing) is always found; a key being published during the
 *    lookup is either found complete or not found at all (by hash first:
 *    account_key_by_id may miss it until its id entry is stored too).
 * 4. Mutable fields are individual atomics (status, expiry, allowlist,
 *    tier, balance, spend cap). Setters here store with release and getters
 *    load with acquire; each field is an independent value, and nothing
 *    else is published through it. The ledger updates available_micros and
 *    spend_available_micros with its own compare-and-swap loops.
 *    The allowlist is several words: a reader concurrent with
 *    account_key_set_models may see, for each model, either the old or the
 *    new answer, never one that neither allowed.
 * 5. Readers (account_user_get, account_user_at, account_key_find,
 *    account_key_at, account_key_by_id and the helpers) are lock-free, never
 *    allocate and make no system calls: they are safe on the request path
 *    of any thread. */
#ifndef RINGWAY_ACCOUNT_H
#define RINGWAY_ACCOUNT_H

#include "ringway/account-t.h"
#include "ringway/common.h"

/* Allocates zeroed tables for users_max users and keys_max keys (each in
 * [1, ACCOUNT_*_MAX_LIMIT]) with anonymous mmap: the pages are committed as
 * slots are first written, so a large budget costs address space, not
 * memory, until it is used. Called once at start, before any other thread
 * sees the tables. Returns false (tables zeroed) when the sizes are out of
 * range or the mapping fails. */
bool account_tables_init(account_tables_t *tables, uint32_t users_max, uint32_t keys_max);

/* Unmaps what account_tables_init mapped and zeroes *tables (pointers
 * NULL). Only when no other thread can touch the tables any more. */
void account_tables_release(account_tables_t *tables);

/* Publishes user `id` (>= 1) into users[id - 1] with the given email
 * (email_length bytes, < ACCOUNT_EMAIL_BYTES, stored NUL-terminated as
 * given: pass the lower-case form auth_email_valid produces), balance and
 * status. Writer thread only (contract 1). Returns the slot index id - 1, or
 * ACCOUNT_INDEX_NONE when id is 0 or above users_max, the slot is already
 * published, or the email is too long. */
uint32_t account_user_publish(account_tables_t *tables, uint64_t id, const char *email,
                              size_t email_length, int64_t available_micros,
                              account_user_status_t status);

/* The published user with this id, or NULL (id out of range or not yet
 * published). Any thread. */
account_user_t *account_user_get(account_tables_t *tables, uint64_t id);

/* The published user in slot index (account_key_t.user_index), or NULL.
 * Any thread. */
account_user_t *account_user_at(account_tables_t *tables, uint32_t index);

/* Sets a user's status (release). Any thread; the store remains the
 * durable copy, so callers change it there too. */
void account_user_set_status(account_user_t *user, account_user_status_t status);
account_user_status_t account_user_status(const account_user_t *user);

/* Publishes a key into the next free slot. Copies from *fields: hash, id
 * (>= 1), user_index (< users_max), name, prefix, last4 (each must hold a
 * NUL within its array) and the current values of status, expires_at_ms,
 * all_models, model_bits, spend_cap_micros, spend_available_micros, tier,
 * limit_overrides, token_quota and quota_pool;
 * fields->state is ignored. *fields is the caller's private copy (a local
 * variable), never a published slot. Writer thread only (contract 1).
 * Returns the published slot, or NULL when the table is full, or a key with
 * the same hash or the same id is already published. */
account_key_t *account_key_publish(account_tables_t *tables, const account_key_t *fields);

/* Finds the published key whose SHA-256 hash is `hash`: probes key_index
 * from the hash's first 8 bytes (read little-endian) and compares the whole
 * 32 bytes of each candidate in constant time. Returns the slot, or NULL.
 * Lock-free, no allocation, no system call: the request path's lookup. */
account_key_t *account_key_find(account_tables_t *tables, const uint8_t hash[ACCOUNT_KEY_HASH_BYTES]);

/* The published key with this store id, or NULL. Meant for the control
 * thread (admin and account jobs), safe on any thread. */
account_key_t *account_key_by_id(account_tables_t *tables, uint64_t id);

/* The published key in slot (0 <= slot < keys_max), or NULL. For listing:
 * iterate slot < account_key_count(). */
account_key_t *account_key_at(account_tables_t *tables, uint32_t slot);
uint32_t account_key_count(account_tables_t *tables);

/* Whether the key may use the configured model with this index: true when
 * the key has no allowlist (all_models), else when the model's bit is set.
 * An index of 256 or more is allowed only by all_models. */
bool account_key_allows_model(const account_key_t *key, uint32_t model_index);

/* Whether the key has expired at now_ms (wall clock, ms since the epoch):
 * expires_at_ms != 0 and now_ms >= expires_at_ms. */
bool account_key_expired(const account_key_t *key, int64_t now_ms);

/* Replaces the allowlist: all_models true means no allowlist (bits is then
 * ignored, may be NULL, and the stored words are left as they are: clearing
 * them after the flag could make a concurrent reader that saw the old flag
 * refuse a model both the old and the new setting allow); otherwise exactly
 * the models whose bit is set in bits[ACCOUNT_MODEL_WORDS], written before
 * the flag is cleared. See contract 4 for concurrent readers. */
void account_key_set_models(account_key_t *key, bool all_models,
                            const uint64_t bits[ACCOUNT_MODEL_WORDS]);

/* Single-field setters and getters (release / acquire). */
void account_key_set_status(account_key_t *key, account_key_status_t status);
account_key_status_t account_key_status(const account_key_t *key);
void account_key_set_expiry(account_key_t *key, int64_t expires_at_ms);
void account_key_set_tier(account_key_t *key, uint32_t tier);
uint32_t account_key_tier(const account_key_t *key);
/* One limit override (kind < ACCOUNT_LIMITS; ACCOUNT_LIMIT_INHERIT = the
 * tier's value), and the total token quota (0 = none). */
void account_key_set_limit(account_key_t *key, uint32_t kind, uint32_t value);
uint32_t account_key_limit(const account_key_t *key, uint32_t kind);
void account_key_set_token_quota(account_key_t *key, uint64_t tokens);
uint64_t account_key_token_quota(const account_key_t *key);

/* Compares two 32-byte hashes in time independent of where they differ. */
bool account_hash_equal(const uint8_t a[ACCOUNT_KEY_HASH_BYTES],
                        const uint8_t b[ACCOUNT_KEY_HASH_BYTES]);

#endif
