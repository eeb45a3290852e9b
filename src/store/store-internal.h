/* Shared by the store's own files (store.c, thread.c) only: the state
 * behind the opaque store_t and store_thread_t handles, key building,
 * RocksDB access with fault injection, and logging. (Unit tests and
 * bench/store_settle.c include it to look at the state.) */
#ifndef RINGWAY_STORE_INTERNAL_H
#define RINGWAY_STORE_INTERNAL_H

#include "ringway/channel.h"
#include "ringway/store.h"

#include <pthread.h>
#include <rocksdb/c.h>
#include <stdarg.h>
#include <stdatomic.h>

/* Behind store_t: allocated by store_open, freed by store_close. */
typedef struct store_state {
    rocksdb_t *db;
    rocksdb_options_t *options;
    rocksdb_writeoptions_t *write_options;              /* WAL on, sync=false */
    rocksdb_writeoptions_t *write_options_sync;         /* WAL on, sync=true */
    rocksdb_readoptions_t *read_options;
    store_options_t config;
    char path[STORE_PATH_BYTES];
    _Atomic uint64_t writes;                            /* write attempts, for fault injection */

    /* Owned by the store thread once it runs (filled by store_open and
     * store_load before): the authoritative settled balance per user and
     * spent per key, and the next ids. */
    int64_t *user_balance_micros;                       /* [users_max], by id - 1 */
    uint8_t *user_present;                              /* [users_max] */
    int64_t *key_spent_micros;                          /* [keys_max], by id - 1 */
    uint8_t *key_present;                               /* [keys_max] */
    uint64_t next_user_id;
    uint64_t next_key_id;
    uint64_t next_usage_id;
    uint64_t next_audit_id;
    int64_t usage_created_ms_last;
} store_state_t;

/* One producer (a relay worker or the control thread): a request channel it
 * pushes into, a reply channel the store thread pushes acks into, and where
 * to ring its doorbell. */
typedef struct store_producer {
    channel_t requests;                                 /* store_message_t */
    channel_t replies;                                  /* store_ack_t */
    int ring_fd;                                        /* the producer's ring, -1 = no doorbell (it polls) */
    loop_operation_t *mailbox;                          /* user_data of its doorbell CQE */
    bool doorbell_pending;                              /* store thread only */
    uint32_t acks_owed;                                 /* store thread only: acks of the round not yet pushed */
} store_producer_t;

/* A round's view of one user or key record: read once (or created) in the
 * round, changed in memory by the round's messages, put once at its end. */
typedef struct store_round_user {
    store_user_record_t record;                         /* balance_micros: taken from the arrays at the put */
    bool created;                                       /* USER_CREATE in this round (its email is taken) */
    bool dirty;                                         /* changed: put at the end of the round */
} store_round_user_t;

typedef struct store_round_key {
    store_key_record_t record;                          /* spent_micros: taken from the arrays at the put */
    bool dirty;
} store_round_key_t;

/* A hold opened or closed in the round (the batch is not readable yet). */
typedef struct store_round_hold {
    store_hold_record_t record;
    bool open;                                          /* false: settled or released in this round */
} store_round_hold_t;

/* An in-memory change of the round, undone when its batch write fails. */
typedef struct store_round_undo {
    int64_t *value_micros;                              /* a balance or spent slot, or NULL */
    uint8_t *present;                                   /* a present flag, or NULL */
    int64_t old_micros;
    uint8_t old_present;
} store_round_undo_t;

typedef struct store_round_ack {
    uint32_t producer;
    bool pushed;                                        /* false: the message asked for no ack */
    store_ack_t ack;
} store_round_ack_t;

/* Behind store_thread_t: allocated by store_thread_create. The round
 * arrays hold at most round_messages_max = producer_count x
 * STORE_THREAD_MESSAGES_PER_PRODUCER entries each (undo: 4 per message). */
typedef struct store_thread_state {
    store_t *store;
    store_producer_t *producers;                        /* [producer_count], cache-line aligned */
    uint32_t producer_count;
    uint32_t sync_interval_ms;
    rocksdb_writebatch_t *batch;                        /* the round's batch (cleared per round) */
    struct io_uring ring;                               /* doorbells in (MSG_RING CQEs) and out */
    bool ring_ready;
    loop_operation_t doorbell;                          /* user_data of doorbells to the store thread */
    pthread_t thread;
    bool started;
    _Atomic bool stop_requested;
    int64_t started_wall_ms;                            /* usage records at or after this are this run's */
    /* The syncer (thread.c): syncer_stop under syncer_lock; synced_writes
     * is the syncer's own. */
    pthread_t syncer;
    bool syncer_ready;                                  /* lock and condition initialised */
    bool syncer_started;
    pthread_mutex_t syncer_lock;
    pthread_cond_t syncer_wake;
    bool syncer_stop;
    uint64_t syncer_synced_writes;                      /* batch_writes when its last sync began */

    uint32_t round_messages_max;
    store_round_ack_t *round_acks;                      /* one per message taken, acked or not */
    uint32_t round_ack_count;
    store_round_user_t *round_users;
    uint32_t round_user_count;
    store_round_key_t *round_keys;
    uint32_t round_key_count;
    store_round_hold_t *round_holds;
    uint32_t round_hold_count;
    store_usage_record_t *round_usages;                 /* settlements of the round, ids assigned */
    bool *round_usage_indexed;                          /* [i]: its hold was recorded: a q/ entry too */
    uint8_t *usage_block;                               /* STORE_USAGE_BLOCK_BYTES_MAX: a block being put */
    uint32_t round_usage_count;
    store_round_undo_t *round_undo;
    uint32_t round_undo_count;
    bool round_sync;                                    /* a message of the round asked for sync */
    /* The user and key records as last read or written by this thread (their
     * only writer while it runs), so a round need not read them from RocksDB
     * again: direct-mapped by id; a slot whose record id is 0 is empty. */
    store_user_record_t *cached_users;
    store_key_record_t *cached_keys;

    /* Test-only stall (see store_thread_stop in store.h). */
    uint32_t test_delay_ms;
    char test_delay_file[STORE_PATH_BYTES];             /* "" = no file: the delay always applies */

    /* Statistics (store thread writes, store_thread_statistics reads). */
    _Atomic uint64_t messages;
    _Atomic uint64_t rounds;
    _Atomic uint64_t batch_writes;                      /* also what the syncer syncs after */
    _Atomic uint64_t write_errors;
    _Atomic uint64_t syncs;
} store_thread_state_t;

/* The RocksDB handle of an open store (for bench/store_settle.c). */
rocksdb_t *store_db(store_t *store);

enum {
    STORE_KEY_ID_BYTES = 10,    /* "u/" + big-endian u64 */
    STORE_KEY_USAGE_BYTES = 19, /* "r/" + user + "/" + usage id */
    STORE_KEY_TEXT_BYTES = 2 + ACCOUNT_EMAIL_BYTES,
    STORE_ERROR_BYTES = 512,
};

/* "<prefix>/" followed by id big-endian; returns STORE_KEY_ID_BYTES. */
size_t store_key_id(uint8_t *out, char prefix, uint64_t id);
/* "r/<user id>/<usage id>"; returns STORE_KEY_USAGE_BYTES. */
size_t store_key_usage(uint8_t *out, uint64_t user_id, uint64_t usage_id);
/* "<prefix>/" followed by text (lower-cased ASCII when lower_case); out has
 * STORE_KEY_TEXT_BYTES. Returns the length; text must fit (asserted). */
size_t store_key_text(uint8_t *out, char prefix, const char *text, bool lower_case);
/* "m/<name>" */
size_t store_key_meta(uint8_t *out, size_t capacity, const char *name);

uint64_t store_read_be64(const uint8_t *bytes);
void store_write_be64(uint8_t *out, uint64_t value);

/* Puts records[0, count) (ascending ids, at most
 * STORE_USAGE_BLOCK_RECORDS_MAX, one block's) as the block at s/<first id>,
 * built in buffer (STORE_USAGE_BLOCK_BYTES_MAX); and that block's r/ index
 * entries, one per user in it. */
void store_batch_put_usage_block(rocksdb_writebatch_t *batch, const store_usage_record_t *records, uint32_t count,
                                 uint8_t *buffer);
void store_batch_put_usage_index(rocksdb_writebatch_t *batch, const store_usage_record_t *records, uint32_t count);

/* Writes a batch (counted for fault injection). Returns 0, or -EIO with the
 * reason in error. */
int store_write(store_t *store, rocksdb_writebatch_t *batch, bool sync, char *error, size_t error_size);
/* Syncs the WAL (group commit; counted for fault injection). */
int store_sync_wal(store_t *store, char *error, size_t error_size);

/* Point read: 0 with the value copied (at most capacity bytes; *length is
 * the full length), -ENOENT, or -EIO (logged with `what`). */
int store_get(store_t *store, const uint8_t *key, size_t key_length, uint8_t *value, size_t capacity,
              size_t *length, const char *what);

/* "ringway: store: " + message + newline, on stderr. */
void store_log(const char *format, ...) __attribute__((format(printf, 1, 2)));


#endif
