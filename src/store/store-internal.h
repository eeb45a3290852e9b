/* Shared by the store's own files (store.c, thread.c) only: key building,
 * RocksDB access with fault injection, and logging. */
#ifndef RINGWAY_STORE_INTERNAL_H
#define RINGWAY_STORE_INTERNAL_H

#include "ringway/store.h"

#include <rocksdb/c.h>
#include <stdarg.h>

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

/* Wall clock, milliseconds since the epoch. */
int64_t store_wall_ms(void);

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

/* Decimal meta value helpers for m/next_*. */
size_t store_format_u64(char *out, uint64_t value);

#endif
