/* The store: RocksDB under <data_dir>/store, its record encodings, loading at
 * start, read helpers for the control thread, and the store thread, the only
 * writer once it runs. Types and the key schema are in store-t.h.
 *
 * Threads: store_open, store_load, store_meta_put and store_close run before
 * the store thread starts or after it stops (store_meta_put also while it
 * runs, for names the thread never writes). The read helpers may run on any
 * thread at any time (RocksDB reads are thread-safe). Producers talk to the
 * store thread only through store_thread_submit / store_thread_reply_pop.
 *
 * Durability (group commit): the store thread drains its channels in
 * rounds and writes everything it took in one round as ONE WriteBatch, WAL
 * on, sync=false, before it acknowledges any of it, so a kill -9 never
 * loses an acknowledged message and a round is all or nothing. A second
 * thread of the store, the syncer, syncs the WAL every sync_interval_ms
 * when anything was written (the rounds go on meanwhile), so a power loss
 * loses at most about that much; a round holding a message flagged
 * STORE_MESSAGE_FLAG_SYNC is written with sync=true and its acks follow the
 * fsync. */
#ifndef RINGWAY_STORE_H
#define RINGWAY_STORE_H

#include "ringway/loop.h"
#include "ringway/store-t.h"

#include <liburing.h>

/* ---- Record encodings (pure: no I/O, no allocation) ---- */

/* Binary, versioned (a tag byte, version 1, then fixed little-endian
 * integers and u16-length-prefixed strings). Encoders return the length
 * written, or -1 when it does not fit in capacity (STORE_RECORD_BYTES_MAX is
 * always enough). Decoders return 0, or -1 for a truncated, oversized,
 * unknown-version or trailing-garbage record; strings come back
 * NUL-terminated. */
int store_user_encode(const store_user_record_t *record, uint8_t *out, size_t capacity);
int store_user_decode(const uint8_t *bytes, size_t length, store_user_record_t *record);
int store_key_encode(const store_key_record_t *record, uint8_t *out, size_t capacity);
int store_key_decode(const uint8_t *bytes, size_t length, store_key_record_t *record);
int store_hold_encode(const store_hold_record_t *record, uint8_t *out, size_t capacity);
int store_hold_decode(const uint8_t *bytes, size_t length, store_hold_record_t *record);

/* Usage blocks (the layout is in store-t.h). begin starts a block in out
 * (capacity >= STORE_USAGE_BLOCK_HEADER_BYTES; STORE_USAGE_BLOCK_BYTES_MAX
 * always holds a full block); add appends a record whose id and created_ms
 * are at least the block's (asserted): 0, or -1 when it does not fit (the
 * block is unchanged). open starts reading a block stored under first_id:
 * 0, or -1 when the header is not a block's; next decodes the next record:
 * 1, 0 at the end, -1 for a malformed record. */
void store_usage_block_begin(store_usage_block_writer_t *block, uint8_t *out, size_t capacity, uint64_t first_id,
                             int64_t base_created_ms);
int store_usage_block_add(store_usage_block_writer_t *block, const store_usage_record_t *record);
int store_usage_block_open(store_usage_block_reader_t *block, const uint8_t *bytes, size_t length,
                           uint64_t first_id);
int store_usage_block_next(store_usage_block_reader_t *block, store_usage_record_t *record);

/* JSON, one object per record (exported as JSON lines by the ops tool):
 * {"id":..,"request_id":"..","key_id":..,"user_id":..,"model":"..",
 *  "upstream":"..","prompt_tokens":..,"completion_tokens":..,
 *  "cached_tokens":..,"reasoning_tokens":..,"cost_micros":..,"status":"..",
 *  "latency_ms":..,"created_ms":..,"estimated":false,"capped":false}
 * {"id":..,"time_ms":..,"admin":"..","action":"..","target":"..","details":".."}
 * Strings are escaped per RFC 8259; bytes that are not valid UTF-8 become
 * U+FFFD. Encoders return the length (no NUL is written) or -1 when it does
 * not fit (STORE_JSON_BYTES_MAX is always enough). Decoders accept what the
 * encoders write and any equivalent JSON object (members in any order,
 * unknown members ignored, missing ones zero / "" / false, except "id" and
 * "user_id" / "time_ms" which are required); -1 otherwise. */
int store_usage_encode(const store_usage_record_t *record, char *out, size_t capacity);
int store_usage_decode(const char *json, size_t length, store_usage_record_t *record);
int store_audit_encode(const store_audit_record_t *record, char *out, size_t capacity);
int store_audit_decode(const char *json, size_t length, store_audit_record_t *record);

/* ---- Opening, loading, closing ---- */

/* Opens (creating it and its parent directories if missing) the RocksDB
 * database at `path` (the caller passes <data_dir>/store), checks m/schema,
 * reads the next ids and allocates the store thread's balance arrays for
 * options->users_max / keys_max. Returns 0, or -1 with `error` filled. */
int store_open(store_t *store, const char *path, const store_options_t *options, char *error,
               size_t error_size);

/* Loads the durable state at start, before any thread uses the tables:
 * calls on_user for every u/ record and on_key for every k/ record (in id
 * order, users first), filling the store thread's balance and spent arrays;
 * then resolves every open hold h/ left by a crash: settled when q/ names a
 * usage record of the same user and key created no earlier than the hold,
 * released otherwise; either way the hold is deleted and an audit entry
 * ("hold.settled_at_restart" / "hold.released_at_restart") written, synced.
 * Balances need no correction: holds are never part of the persisted
 * balance. Returns 0 with *result filled, or -1 with `error` filled (a
 * record that does not decode, an id beyond users_max / keys_max, a
 * callback's refusal, a RocksDB error). */
int store_load(store_t *store, const store_load_callbacks_t *callbacks, void *context,
               store_load_result_t *result, char *error, size_t error_size);

/* Closes the database and frees everything; the store thread must be
 * stopped. Safe on a zeroed store_t and idempotent. */
void store_close(store_t *store);

/* ---- Reads (any thread) ---- */

/* Each returns 0 with *record filled, -ENOENT when absent, -EIO on a RocksDB
 * error or a record that does not decode (logged). */
int store_user_get(store_t *store, uint64_t user_id, store_user_record_t *record);
/* The email is compared ASCII case-insensitively (e/ holds it lower-cased):
 * for login, record->id and record->password_hash. */
int store_user_get_by_email(store_t *store, const char *email, store_user_record_t *record);
int store_key_get(store_t *store, uint64_t key_id, store_key_record_t *record);
int store_hold_get(store_t *store, const char *request_id, store_hold_record_t *record);
/* The usage record of a request whose hold was recorded (a settlement not
 * flagged STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED), through the q/ index;
 * -ENOENT for any other request. */
int store_usage_get_by_request(store_t *store, const char *request_id, store_usage_record_t *record);

/* Visits usage records newest first: of one user (r/<user>/ backwards), of
 * one key (its user's records, filtered), or of everyone (s/ backwards),
 * with created_ms in [from_ms, to_ms), at most limit of them. Because usage
 * created_ms never decreases with the id, the walk stops at the first record
 * older than from_ms. Returns the number visited (>= 0), -ENOENT for an
 * unknown key id, or -EIO. */
int store_usage_list(store_t *store, const store_usage_query_t *query, store_usage_visit_t visit,
                     void *context);

/* Visits audit entries newest first, at most limit (0 = all). Returns the
 * number visited or -EIO. */
int store_audit_list(store_t *store, uint32_t limit, store_audit_visit_t visit, void *context);

/* Meta values under m/<name> (e.g. "jwt_secret"). get copies at most
 * capacity bytes and returns the value's full length (which may exceed
 * capacity), -ENOENT or -EIO. put writes synced and returns 0 or -EIO; the
 * names the store manages itself (schema, next_*) are refused by assertion.
 * Names are 1..STORE_META_NAME_BYTES-1 bytes. */
int store_meta_get(store_t *store, const char *name, uint8_t *value, size_t capacity);
int store_meta_put(store_t *store, const char *name, const uint8_t *value, size_t length);

/* ---- The store thread ---- */

/* The channel capacity (a power of two, >= 4) for producers that run up to
 * streams_per_thread streams (>= 1), such that neither side ever waits for
 * the other. The store thread takes a message only when the reply channel
 * has room for its ack beyond the acks it already owes in the round
 * (otherwise that producer is skipped until it reads its replies), so a
 * full reply channel would stall the producer's requests behind it. A
 * stream owes at most one ack (the settlement it waits for), so the reply
 * channel, at 3 x streams_per_thread slots, never fills. The request channel
 * can: a finished stream's settlement may still wait there while its slot
 * serves the next request. A producer must therefore handle a full request
 * channel without waiting on the store (the relay keeps such messages in a
 * bounded retry ring and stops taking holds until it drains: settle.c). */
uint32_t store_thread_channel_capacity_for(uint32_t streams_per_thread);

/* Prepares the store thread for producer_count producers (relay workers and
 * the control thread; indexes 0..producer_count-1): two channels of
 * channel_capacity messages each per producer (a power of two), its io_uring.
 * sync_interval_ms is the syncer's WAL sync period (>= 1; default 10). Producers
 * are unbound (ring_fd -1) until store_thread_bind_producer. Returns 0, or a
 * negative errno with `error` filled. */
int store_thread_create(store_thread_t *thread, store_t *store, uint32_t producer_count,
                        uint32_t channel_capacity, uint32_t sync_interval_ms, char *error,
                        size_t error_size);

/* Before store_thread_start: acks to `producer` are announced by a MSG_RING
 * CQE posted into the ring `ring_fd` with user_data `mailbox` (for a loop_t
 * producer: its ring's fd and an operation whose callback drains
 * store_thread_reply_pop). Unbound producers must poll their replies. */
void store_thread_bind_producer(store_thread_t *thread, uint32_t producer, int ring_fd,
                                loop_operation_t *mailbox);

/* Starts the thread and its syncer. Returns 0 or a negative errno. */
int store_thread_start(store_thread_t *thread);

/* Asks the thread to stop, waits for it: it first applies and acknowledges
 * every message already pushed (except from a producer whose reply channel
 * stays full); then the syncer syncs the WAL and stops. Takes at most
 * STORE_THREAD_POLL_MS (10 ms) plus the drain and the sync.
 *
 * Test-only fault hook (a "store stall"): when the environment variable
 * RINGWAY_TEST_STORE_DELAY_MS is set (read once, at store_thread_start), the
 * thread sleeps that many milliseconds (at most 60000) before each round's
 * batch write, for as long as the file named by RINGWAY_TEST_STORE_DELAY_FILE
 * exists (checked with access() once per round; variable unset: always).
 * Removing the file ends the stall. Never set these in production. */
void store_thread_stop(store_thread_t *thread);

/* Frees the channels and the ring; the thread must be stopped (or never
 * started). Idempotent. */
void store_thread_destroy(store_thread_t *thread);

/* The producer's side: pushes `message` into its request channel and, when
 * the store thread may be asleep, rings its doorbell through producer_ring
 * (queued only; a loop_t producer's next submit carries it, any other
 * producer must io_uring_submit). producer_ring may be NULL for a producer
 * without a ring: the store thread then notices the message within 10 ms (it
 * never sleeps longer). Returns false when the channel is full (nothing sent). */
bool store_thread_submit(store_thread_t *thread, uint32_t producer, const store_message_t *message,
                         struct io_uring *producer_ring);

/* Copies the thread's counters (see store_thread_statistics_t). Any thread. */
void store_thread_statistics(const store_thread_t *thread, store_thread_statistics_t *statistics);

/* The producer's side: takes the next ack, false when there is none. */
bool store_thread_reply_pop(store_thread_t *thread, uint32_t producer, store_ack_t *ack);

/* For a producer with nothing else in flight (start-up code, tools, tests):
 * submits `message` with the ACK flag and waits (polling its replies every
 * 100 us, up to timeout_ms) for its ack. producer_ring as in
 * store_thread_submit (submitted here). Returns 0 with *ack filled, -EAGAIN
 * when the channel stayed full, -ETIMEDOUT. */
int store_thread_call(store_thread_t *thread, uint32_t producer, const store_message_t *message,
                      struct io_uring *producer_ring, uint32_t timeout_ms, store_ack_t *ack);

#endif
