/* The store's RocksDB side: opening, loading at start (with the resolution
 * of holds left open by a crash), reads for the control thread, meta values,
 * and the helpers the store thread (thread.c) writes through. */
#include "store-internal.h"

#include "ringway/text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum {
    /* kPointInTimeRecovery: replay the WAL up to the first torn or corrupt
     * record, which a kill -9 or power loss can leave at its tail. */
    STORE_WAL_RECOVERY_POINT_IN_TIME = 2,
    STORE_SCHEMA_VERSION = 2,
};

/* ---- Helpers shared with thread.c ---- */

void store_write_be64(uint8_t *out, uint64_t value) {
    for (int index = 0; index < 8; index++) out[index] = (uint8_t)(value >> (56 - 8 * index));
}

uint64_t store_read_be64(const uint8_t *bytes) {
    uint64_t value = 0;
    for (int index = 0; index < 8; index++) value = value << 8 | bytes[index];
    return value;
}

size_t store_key_id(uint8_t *out, char prefix, uint64_t id) {
    out[0] = (uint8_t)prefix;
    out[1] = '/';
    store_write_be64(out + 2, id);
    return STORE_KEY_ID_BYTES;
}

size_t store_key_usage(uint8_t *out, uint64_t user_id, uint64_t usage_id) {
    out[0] = 'r';
    out[1] = '/';
    store_write_be64(out + 2, user_id);
    out[10] = '/';
    store_write_be64(out + 11, usage_id);
    return STORE_KEY_USAGE_BYTES;
}

size_t store_key_text(uint8_t *out, char prefix, const char *text, bool lower_case) {
    size_t length = strlen(text);
    RW_ASSERT(length + 2 <= STORE_KEY_TEXT_BYTES);
    out[0] = (uint8_t)prefix;
    out[1] = '/';
    for (size_t index = 0; index < length; index++) {
        uint8_t byte = (uint8_t)text[index];
        if (lower_case && byte >= 'A' && byte <= 'Z') byte = (uint8_t)(byte - 'A' + 'a');
        out[2 + index] = byte;
    }
    return length + 2;
}

size_t store_key_meta(uint8_t *out, size_t capacity, const char *name) {
    size_t length = strlen(name);
    RW_ASSERT(length >= 1 && length < STORE_META_NAME_BYTES);
    RW_ASSERT(length + 2 <= capacity);
    out[0] = 'm';
    out[1] = '/';
    memcpy(out + 2, name, length);
    return length + 2;
}


void store_log(const char *format, ...) {
    char line[1024];
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(line, sizeof line, format, arguments);
    va_end(arguments);
    fprintf(stderr, "ringway: store: %s\n", line);
}

/* True when this write attempt is one the options say must fail. */
static bool store_fault_hit(store_t *store) {
    uint64_t attempt = atomic_fetch_add(&store->state->writes, 1) + 1;
    uint64_t first = store->state->config.fault_write_fail_at;
    if (first == 0) return false;
    uint64_t count = store->state->config.fault_write_fail_count == 0 ? 1 : store->state->config.fault_write_fail_count;
    return attempt >= first && attempt - first < count;
}

int store_write(store_t *store, rocksdb_writebatch_t *batch, bool sync, char *error, size_t error_size) {
    RW_ASSERT(store->state->db != NULL && batch != NULL);
    if (store_fault_hit(store)) {
        snprintf(error, error_size, "IO error: injected fault");
        return -EIO;
    }
    char *failure = NULL;
    rocksdb_write(store->state->db, sync ? store->state->write_options_sync : store->state->write_options, batch, &failure);
    if (failure != NULL) {
        snprintf(error, error_size, "%s", failure);
        rocksdb_free(failure);
        return -EIO;
    }
    return 0;
}

int store_sync_wal(store_t *store, char *error, size_t error_size) {
    RW_ASSERT(store->state->db != NULL);
    if (store_fault_hit(store)) {
        snprintf(error, error_size, "IO error: injected fault");
        return -EIO;
    }
    char *failure = NULL;
    rocksdb_flush_wal(store->state->db, 1, &failure);
    if (failure != NULL) {
        snprintf(error, error_size, "%s", failure);
        rocksdb_free(failure);
        return -EIO;
    }
    return 0;
}

int store_get(store_t *store, const uint8_t *key, size_t key_length, uint8_t *value, size_t capacity,
              size_t *length, const char *what) {
    RW_ASSERT(store->state->db != NULL);
    char *failure = NULL;
    rocksdb_pinnableslice_t *slice =
        rocksdb_get_pinned(store->state->db, store->state->read_options, (const char *)key, key_length, &failure);
    if (failure != NULL) {
        store_log("while reading %s: %s", what, failure);
        rocksdb_free(failure);
        if (slice != NULL) rocksdb_pinnableslice_destroy(slice);
        return -EIO;
    }
    if (slice == NULL) return -ENOENT;
    size_t found_length = 0;
    const char *found = rocksdb_pinnableslice_value(slice, &found_length);
    memcpy(value, found, RW_MIN(found_length, capacity));
    *length = found_length;
    rocksdb_pinnableslice_destroy(slice);
    return 0;
}

/* ---- Range scans ---- */

typedef struct store_scan {
    rocksdb_readoptions_t *options;
    rocksdb_iterator_t *iterator;
    bool backwards;
    /* The bounds: RocksDB keeps pointers to them, so they live here. */
    uint8_t lower[STORE_KEY_USAGE_BYTES];
    uint8_t upper[STORE_KEY_USAGE_BYTES];
} store_scan_t;

/* Iterates keys in [lower, upper) forward or backwards. */
static void store_scan_open(store_t *store, store_scan_t *scan, const uint8_t *lower, size_t lower_length,
                            const uint8_t *upper, size_t upper_length, bool backwards) {
    RW_ASSERT(lower_length <= sizeof scan->lower && upper_length <= sizeof scan->upper);
    memcpy(scan->lower, lower, lower_length);
    memcpy(scan->upper, upper, upper_length);
    scan->backwards = backwards;
    scan->options = rocksdb_readoptions_create();
    rocksdb_readoptions_set_iterate_lower_bound(scan->options, (const char *)scan->lower, lower_length);
    rocksdb_readoptions_set_iterate_upper_bound(scan->options, (const char *)scan->upper, upper_length);
    scan->iterator = rocksdb_create_iterator(store->state->db, scan->options);
    if (backwards) {
        rocksdb_iter_seek_to_last(scan->iterator);
    } else {
        rocksdb_iter_seek_to_first(scan->iterator);
    }
}

/* A two-byte prefix such as "u/": the range [prefix, prefix with '/'+1). */
static void store_scan_open_prefix(store_t *store, store_scan_t *scan, char prefix, bool backwards) {
    uint8_t lower[2] = {(uint8_t)prefix, '/'};
    uint8_t upper[2] = {(uint8_t)prefix, '/' + 1};
    store_scan_open(store, scan, lower, sizeof lower, upper, sizeof upper, backwards);
}

static bool store_scan_valid(const store_scan_t *scan) { return rocksdb_iter_valid(scan->iterator) != 0; }

static void store_scan_next(store_scan_t *scan) {
    if (scan->backwards) {
        rocksdb_iter_prev(scan->iterator);
    } else {
        rocksdb_iter_next(scan->iterator);
    }
}

static const uint8_t *store_scan_key(const store_scan_t *scan, size_t *length) {
    return (const uint8_t *)rocksdb_iter_key(scan->iterator, length);
}

static const uint8_t *store_scan_value(const store_scan_t *scan, size_t *length) {
    return (const uint8_t *)rocksdb_iter_value(scan->iterator, length);
}

/* Closes the scan; returns 0, or -EIO when the iteration stopped on an
 * error (logged with `what`). */
static int store_scan_close(store_scan_t *scan, const char *what) {
    char *failure = NULL;
    rocksdb_iter_get_error(scan->iterator, &failure);
    rocksdb_iter_destroy(scan->iterator);
    rocksdb_readoptions_destroy(scan->options);
    scan->iterator = NULL;
    scan->options = NULL;
    if (failure != NULL) {
        store_log("while %s: %s", what, failure);
        rocksdb_free(failure);
        return -EIO;
    }
    return 0;
}

/* ---- Usage blocks ---- */

/* The start of each record of a block, oldest first: the count (at most
 * STORE_USAGE_BLOCK_RECORDS_MAX), or -1 when the block does not decode. */
static int store_usage_block_offsets(const uint8_t *bytes, size_t length, uint64_t first_id,
                                     size_t offsets[STORE_USAGE_BLOCK_RECORDS_MAX]) {
    store_usage_block_reader_t block;
    if (store_usage_block_open(&block, bytes, length, first_id) != 0) return -1;
    int count = 0;
    for (;;) {
        size_t offset = block.position;
        store_usage_record_t record;
        int read = store_usage_block_next(&block, &record);
        if (read == 0) break;
        if (read < 0 || count == STORE_USAGE_BLOCK_RECORDS_MAX) return -1;
        offsets[count++] = offset;
    }
    return count == 0 ? -1 : count;
}

/* Decodes the record of a block that starts at offset (one of
 * store_usage_block_offsets'). */
static int store_usage_block_record_at(const uint8_t *bytes, size_t length, uint64_t first_id, size_t offset,
                                       store_usage_record_t *record) {
    store_usage_block_reader_t block;
    if (store_usage_block_open(&block, bytes, length, first_id) != 0) return -1;
    block.position = offset;
    return store_usage_block_next(&block, record) == 1 ? 0 : -1;
}

/* The first usage id of an s/ key (STORE_KEY_ID_BYTES long). */
static uint64_t store_usage_block_first_id(const uint8_t *key, size_t length) {
    return length == STORE_KEY_ID_BYTES ? store_read_be64(key + 2) : 0;
}

/* ---- Open and close ---- */

static int store_make_directories(const char *path, char *error, size_t error_size) {
    char partial[STORE_PATH_BYTES];
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof partial) {
        snprintf(error, error_size, "store path is empty or too long");
        return -1;
    }
    memcpy(partial, path, length + 1);
    for (size_t index = 1; index <= length; index++) {
        if (partial[index] != '/' && partial[index] != '\0') continue;
        char saved = partial[index];
        partial[index] = '\0';
        if (mkdir(partial, 0700) != 0 && errno != EEXIST) {
            snprintf(error, error_size, "cannot create %s: %s", partial, strerror(errno));
            return -1;
        }
        partial[index] = saved;
    }
    return 0;
}

/* Reads m/<name> as a decimal u64; `fallback` when absent. */
static int store_meta_read_u64(store_t *store, const char *name, uint64_t fallback, uint64_t *value) {
    uint8_t text[32];
    int length = store_meta_get(store, name, text, sizeof text);
    if (length == -ENOENT) {
        *value = fallback;
        return 0;
    }
    if (length < 1 || (size_t)length > 20) return -EIO;
    uint64_t parsed = 0;
    for (int index = 0; index < length; index++) {
        if (text[index] < '0' || text[index] > '9') return -EIO;
        uint64_t digit = text[index] - '0';
        if (parsed > (UINT64_MAX - digit) / 10) return -EIO;
        parsed = parsed * 10 + digit;
    }
    *value = parsed;
    return 0;
}

/* The highest id under a "<prefix>/<be64>" range, 0 when empty. */
static int store_last_id(store_t *store, char prefix, uint64_t *id) {
    store_scan_t scan;
    store_scan_open_prefix(store, &scan, prefix, true);
    *id = 0;
    if (store_scan_valid(&scan)) {
        size_t length = 0;
        const uint8_t *key = store_scan_key(&scan, &length);
        if (length == STORE_KEY_ID_BYTES) *id = store_read_be64(key + 2);
    }
    return store_scan_close(&scan, "finding the last id");
}

/* Puts records[0, count) (ascending ids, at most
 * STORE_USAGE_BLOCK_RECORDS_MAX) as one block at s/<first id>, built in
 * buffer (STORE_USAGE_BLOCK_BYTES_MAX). */
void store_batch_put_usage_block(rocksdb_writebatch_t *batch, const store_usage_record_t *records, uint32_t count,
                                 uint8_t *buffer) {
    RW_ASSERT(count >= 1 && count <= STORE_USAGE_BLOCK_RECORDS_MAX);
    int64_t base_created_ms = records[0].created_ms;
    for (uint32_t index = 1; index < count; index++) base_created_ms = RW_MIN(base_created_ms, records[index].created_ms);
    store_usage_block_writer_t block;
    store_usage_block_begin(&block, buffer, STORE_USAGE_BLOCK_BYTES_MAX, records[0].id, base_created_ms);
    for (uint32_t index = 0; index < count; index++) {
        int added = store_usage_block_add(&block, &records[index]);
        RW_ASSERT(added == 0 && "STORE_USAGE_BLOCK_BYTES_MAX holds a full block");
    }
    uint8_t key[STORE_KEY_ID_BYTES];
    store_key_id(key, 's', records[0].id);
    rocksdb_writebatch_put(batch, (const char *)key, sizeof key, (const char *)block.out, block.length);
}

/* Puts the block of records[0, count)'s index entries: r/<user>/<first id>
 * -> how many of its records are that user's (u16 little-endian). */
void store_batch_put_usage_index(rocksdb_writebatch_t *batch, const store_usage_record_t *records, uint32_t count) {
    RW_ASSERT(count >= 1 && count <= STORE_USAGE_BLOCK_RECORDS_MAX);
    uint64_t users[STORE_USAGE_BLOCK_RECORDS_MAX];
    uint16_t counts[STORE_USAGE_BLOCK_RECORDS_MAX];
    uint32_t user_count = 0;
    for (uint32_t index = 0; index < count; index++) {
        uint32_t slot = 0;
        while (slot < user_count && users[slot] != records[index].user_id) slot++;
        if (slot == user_count) {
            users[user_count] = records[index].user_id;
            counts[user_count++] = 0;
        }
        counts[slot]++;
    }
    for (uint32_t slot = 0; slot < user_count; slot++) {
        uint8_t key[STORE_KEY_USAGE_BYTES];
        store_key_usage(key, users[slot], records[0].id);
        uint8_t value[2] = {(uint8_t)counts[slot], (uint8_t)(counts[slot] >> 8)};
        rocksdb_writebatch_put(batch, (const char *)key, sizeof key, (const char *)value, sizeof value);
    }
}

/* Writes m/schema (synced). 0, or -1 with `error`. */
static int store_write_schema(store_t *store, const char *version, char *error, size_t error_size) {
    char *failure = NULL;
    uint8_t key[16];
    size_t key_length = store_key_meta(key, sizeof key, "schema");
    rocksdb_put(store->state->db, store->state->write_options_sync, (const char *)key, key_length, version,
                strlen(version), &failure);
    if (failure == NULL) return 0;
    snprintf(error, error_size, "while writing the schema version: %s", failure);
    rocksdb_free(failure);
    return -1;
}

/* Schema 1 to 2: moves the usage records, oldest first, in groups of
 * STORE_USAGE_BLOCK_RECORDS_MAX, each group in one batch (its block and r/
 * index entries put, its schema 1 s/ and r/ keys deleted), then writes
 * m/schema = "2" (synced). It begins by writing m/schema = "2m" (synced),
 * which an earlier relay refuses to open: a half-moved store is never read
 * as schema 1. A crash in between leaves a store that migrates from where
 * it stopped: a schema 1 s/ value is an r/ key, a schema 2 one a block. q/ entries stay as they are (store_usage_get_by_request reads
 * both forms). Runs at open, before any thread: it may allocate. */
static int store_migrate_usage(store_t *store, char *error, size_t error_size) {
    store_usage_record_t *group = calloc(STORE_USAGE_BLOCK_RECORDS_MAX, sizeof *group);
    uint8_t *block = malloc(STORE_USAGE_BLOCK_BYTES_MAX);
    rocksdb_writebatch_t *batch = rocksdb_writebatch_create();
    int status = group != NULL && block != NULL ? 0 : -1;
    if (status != 0) snprintf(error, error_size, "out of memory for the schema 2 migration");
    if (status == 0 && store_write_schema(store, "2m", error, error_size) != 0) status = -1;
    uint64_t next_id = 0;
    uint64_t moved = 0;
    while (status == 0) {
        uint8_t lower[STORE_KEY_ID_BYTES];
        uint8_t upper[2] = {'s', '/' + 1};
        store_key_id(lower, 's', next_id);
        store_scan_t scan;
        store_scan_open(store, &scan, lower, sizeof lower, upper, sizeof upper, false);
        uint32_t count = 0;
        for (; store_scan_valid(&scan) && count < STORE_USAGE_BLOCK_RECORDS_MAX; store_scan_next(&scan)) {
            size_t key_length = 0;
            size_t value_length = 0;
            const uint8_t *key = store_scan_key(&scan, &key_length);
            const uint8_t *value = store_scan_value(&scan, &value_length);
            uint64_t id = store_usage_block_first_id(key, key_length);
            next_id = id + 1;
            if (value_length > 0 && value[0] == 'B') continue; /* moved before a crash */
            char json[STORE_JSON_BYTES_MAX];
            size_t json_length = 0;
            store_usage_record_t *record = &group[count];
            if (id == 0 || value_length != STORE_KEY_USAGE_BYTES || value[0] != 'r' ||
                store_get(store, value, value_length, (uint8_t *)json, sizeof json, &json_length,
                          "a schema 1 usage record") != 0 ||
                json_length > sizeof json || store_usage_decode(json, json_length, record) != 0 ||
                record->id != id) {
                snprintf(error, error_size, "while migrating usage record %llu to schema 2: it does not read",
                         (unsigned long long)id);
                status = -1;
                break;
            }
            count++;
        }
        if (store_scan_close(&scan, "migrating usage to schema 2") != 0 && status == 0) {
            snprintf(error, error_size, "while migrating usage to schema 2: the scan failed");
            status = -1;
        }
        if (status != 0 || count == 0) break;
        rocksdb_writebatch_clear(batch);
        for (uint32_t index = 0; index < count; index++) {
            uint8_t key[STORE_KEY_USAGE_BYTES];
            store_key_id(key, 's', group[index].id);
            rocksdb_writebatch_delete(batch, (const char *)key, STORE_KEY_ID_BYTES);
            store_key_usage(key, group[index].user_id, group[index].id);
            rocksdb_writebatch_delete(batch, (const char *)key, sizeof key);
        }
        /* After the deletes: s/<first> and perhaps r/<user>/<first> are
         * among the keys deleted above. */
        store_batch_put_usage_block(batch, group, count, block);
        store_batch_put_usage_index(batch, group, count);
        char failure[STORE_ERROR_BYTES];
        if (store_write(store, batch, false, failure, sizeof failure) != 0) {
            snprintf(error, error_size, "while migrating usage to schema 2: %s", failure);
            status = -1;
        }
        moved += count;
    }
    if (status == 0) {
        status = store_write_schema(store, "2", error, error_size);
        if (status == 0) store_log("migrated %llu usage records to schema 2", (unsigned long long)moved);
    }
    rocksdb_writebatch_destroy(batch);
    free(block);
    free(group);
    return status;
}

static int store_open_meta(store_t *store, char *error, size_t error_size) {
    uint8_t schema[16];
    int schema_length = store_meta_get(store, "schema", schema, sizeof schema);
    if (schema_length == -ENOENT) {
        if (store_write_schema(store, "2", error, error_size) != 0) return -1;
    } else if ((schema_length == 1 && schema[0] == '1') ||
               (schema_length == 2 && schema[0] == '2' && schema[1] == 'm')) {
        /* "2m": a migration that a crash stopped. */
        if (store_migrate_usage(store, error, error_size) != 0) return -1;
    } else if (schema_length != 1 || schema[0] != '0' + STORE_SCHEMA_VERSION) {
        snprintf(error, error_size, "the store at %s has an unknown schema version (this relay reads version %d)",
                 store->state->path, STORE_SCHEMA_VERSION);
        return -1;
    }
    if (store_meta_read_u64(store, "next_user", 1, &store->state->next_user_id) != 0 ||
        store_meta_read_u64(store, "next_key", 1, &store->state->next_key_id) != 0 ||
        store_meta_read_u64(store, "next_usage", 1, &store->state->next_usage_id) != 0 ||
        store_meta_read_u64(store, "next_audit", 1, &store->state->next_audit_id) != 0) {
        snprintf(error, error_size, "while reading the next ids: a meta value is unreadable");
        return -1;
    }
    /* The counters are written in the same batches as the records, so they
     * agree; the records win if they ever did not. */
    uint64_t last_usage = 0;
    uint64_t last_audit = 0;
    if (store_last_id(store, 's', &last_usage) != 0 || store_last_id(store, 'a', &last_audit) != 0) {
        snprintf(error, error_size, "while reading the last usage and audit ids");
        return -1;
    }
    store->state->next_usage_id = RW_MAX(store->state->next_usage_id, last_usage + 1);
    store->state->next_audit_id = RW_MAX(store->state->next_audit_id, last_audit + 1);
    store->state->usage_created_ms_last = 0;
    if (last_usage != 0) {
        /* last_usage is the newest block's first id: its last record is the
         * newest. */
        uint8_t block_key[STORE_KEY_ID_BYTES];
        store_key_id(block_key, 's', last_usage);
        static _Thread_local uint8_t block[STORE_USAGE_BLOCK_BYTES_MAX];
        size_t length = 0;
        size_t offsets[STORE_USAGE_BLOCK_RECORDS_MAX];
        int count = -1;
        store_usage_record_t record;
        if (store_get(store, block_key, sizeof block_key, block, sizeof block, &length, "the last usage block") == 0 &&
            length <= sizeof block) {
            count = store_usage_block_offsets(block, length, last_usage, offsets);
        }
        if (count < 0 || store_usage_block_record_at(block, length, last_usage, offsets[count - 1], &record) != 0) {
            snprintf(error, error_size, "while reading the last usage record: its block does not decode");
            return -1;
        }
        store->state->next_usage_id = RW_MAX(store->state->next_usage_id, record.id + 1);
        store->state->usage_created_ms_last = record.created_ms;
    }
    return 0;
}

int store_open(store_t *store, const char *path, const store_options_t *options, char *error,
               size_t error_size) {
    RW_ASSERT(store != NULL && path != NULL && options != NULL);
    RW_ASSERT(options->users_max >= 1 && options->keys_max >= 1);
    memset(store, 0, sizeof *store);
    /* RocksDB's perf context counts every operation in thread-local
     * storage (a __tls_get_addr per counter): off on this thread, and the
     * store thread turns it off on its own (callgrind: 15% of RocksDB's
     * instructions per settlement). The rest of the options are defaults on
     * purpose: statistics stay off, and the skip-list memtable stays (a
     * vector memtable cost 21 times more, its reads sort it; turning off
     * concurrent memtable writes changed nothing for a single writer). */
    rocksdb_set_perf_level(rocksdb_disable);
    if (strlen(path) >= STORE_PATH_BYTES) {
        snprintf(error, error_size, "store path too long");
        return -1;
    }
    store_state_t *state = calloc(1, sizeof *state);
    if (state == NULL) {
        snprintf(error, error_size, "out of memory for the store");
        return -1;
    }
    store->state = state;
    atomic_init(&state->writes, 0);
    state->config = *options;
    snprintf(state->path, sizeof state->path, "%s", path);
    if (store_make_directories(path, error, error_size) != 0) {
        store_close(store);
        return -1;
    }

    state->user_balance_micros = calloc(options->users_max, sizeof *state->user_balance_micros);
    state->user_present = calloc(options->users_max, sizeof *state->user_present);
    state->key_spent_micros = calloc(options->keys_max, sizeof *state->key_spent_micros);
    state->key_present = calloc(options->keys_max, sizeof *state->key_present);
    if (state->user_balance_micros == NULL || state->user_present == NULL || state->key_spent_micros == NULL ||
        state->key_present == NULL) {
        snprintf(error, error_size, "out of memory for %u users and %u keys", options->users_max,
                 options->keys_max);
        store_close(store);
        return -1;
    }

    state->options = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(state->options, 1);
    rocksdb_options_set_wal_recovery_mode(state->options, STORE_WAL_RECOVERY_POINT_IN_TIME);
    rocksdb_options_set_keep_log_file_num(state->options, 4);
    state->write_options = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(state->write_options, 0);
    state->write_options_sync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(state->write_options_sync, 1);
    state->read_options = rocksdb_readoptions_create();

    char *failure = NULL;
    state->db = rocksdb_open(state->options, path, &failure);
    if (failure != NULL || state->db == NULL) {
        snprintf(error, error_size, "cannot open the store at %s: %s", path, failure ? failure : "unknown error");
        rocksdb_free(failure);
        state->db = NULL;
        store_close(store);
        return -1;
    }
    if (store_open_meta(store, error, error_size) != 0) {
        store_close(store);
        return -1;
    }
    return 0;
}

void store_close(store_t *store) {
    RW_ASSERT(store != NULL);
    store_state_t *state = store->state;
    if (state == NULL) return;
    if (state->db != NULL) rocksdb_close(state->db);
    if (state->options != NULL) rocksdb_options_destroy(state->options);
    if (state->write_options != NULL) rocksdb_writeoptions_destroy(state->write_options);
    if (state->write_options_sync != NULL) rocksdb_writeoptions_destroy(state->write_options_sync);
    if (state->read_options != NULL) rocksdb_readoptions_destroy(state->read_options);
    free(state->user_balance_micros);
    free(state->user_present);
    free(state->key_spent_micros);
    free(state->key_present);
    free(state);
    store->state = NULL;
}

rocksdb_t *store_db(store_t *store) {
    RW_ASSERT(store != NULL && store->state != NULL);
    return store->state->db;
}

/* ---- Loading ---- */

/* What the load loop needs to know of one record kind (users, keys). */
typedef struct store_load_kind {
    char prefix;                                        /* 'u' or 'k' */
    const char *noun;                                   /* "user" */
    const char *limit_name;                             /* "users_max" */
    uint32_t id_max;                                    /* ids are 1..id_max */
    uint8_t *present;                                   /* [id_max] */
    int64_t *micros;                                    /* [id_max]: balance or spent */
    uint32_t *loaded;                                   /* result->users or ->keys */
    uint64_t *loaded_id_max;                            /* result->user_id_max or ->key_id_max */
    /* Decodes a value into *record; returns 0 with the id, the amount kept
     * in `micros` and the owning user (0: none) set, or -1. */
    int (*decode)(const uint8_t *value, size_t length, void *record, uint64_t *id, int64_t *micros,
                  uint64_t *owner_id);
    /* The caller's callback for this kind (0 when there is none). */
    int (*visit)(const store_load_callbacks_t *callbacks, void *context, const void *record);
} store_load_kind_t;

static int store_load_user_decode(const uint8_t *value, size_t length, void *record, uint64_t *id,
                                  int64_t *micros, uint64_t *owner_id) {
    store_user_record_t *user = record;
    if (store_user_decode(value, length, user) != 0) return -1;
    *id = user->id;
    *micros = user->balance_micros;
    *owner_id = 0;
    return 0;
}

static int store_load_key_decode(const uint8_t *value, size_t length, void *record, uint64_t *id,
                                 int64_t *micros, uint64_t *owner_id) {
    store_key_record_t *key = record;
    if (store_key_decode(value, length, key) != 0) return -1;
    *id = key->id;
    *micros = key->spent_micros;
    *owner_id = key->user_id;
    return 0;
}

static int store_load_user_visit(const store_load_callbacks_t *callbacks, void *context, const void *record) {
    return callbacks != NULL && callbacks->on_user != NULL ? callbacks->on_user(context, record) : 0;
}

static int store_load_key_visit(const store_load_callbacks_t *callbacks, void *context, const void *record) {
    return callbacks != NULL && callbacks->on_key != NULL ? callbacks->on_key(context, record) : 0;
}

/* Loads every record of one kind in id order: checks that it decodes, that
 * its id matches its key and is within the kind's limit, and (keys) that
 * its user was loaded; fills the present and amount arrays, counts it and
 * calls the caller's callback. Returns 0, or -1 with `error` filled. */
static int store_load_records(store_t *store, const store_load_kind_t *kind, const store_load_callbacks_t *callbacks,
                              void *context, char *error, size_t error_size) {
    store_scan_t scan;
    store_scan_open_prefix(store, &scan, kind->prefix, false);
    /* The larger of the two records, so one buffer serves both kinds. */
    union {
        store_user_record_t user;
        store_key_record_t key;
    } record;
    int status = 0;
    for (; store_scan_valid(&scan); store_scan_next(&scan)) {
        size_t key_length = 0;
        size_t value_length = 0;
        const uint8_t *key = store_scan_key(&scan, &key_length);
        const uint8_t *value = store_scan_value(&scan, &value_length);
        uint64_t id = 0;
        int64_t micros = 0;
        uint64_t owner_id = 0;
        if (key_length != STORE_KEY_ID_BYTES || kind->decode(value, value_length, &record, &id, &micros, &owner_id) != 0 ||
            id != store_read_be64(key + 2) || id == 0) {
            snprintf(error, error_size, "while loading %ss: a %s record does not decode", kind->noun, kind->noun);
            status = -1;
            break;
        }
        if (id > kind->id_max) {
            snprintf(error, error_size, "while loading %ss: %s id %llu is beyond %s (%u)", kind->noun, kind->noun,
                     (unsigned long long)id, kind->limit_name, kind->id_max);
            status = -1;
            break;
        }
        if (kind->prefix == 'k' && (owner_id == 0 || owner_id > store->state->config.users_max ||
                                    !store->state->user_present[owner_id - 1])) {
            snprintf(error, error_size, "while loading keys: key %llu belongs to unknown user %llu",
                     (unsigned long long)id, (unsigned long long)owner_id);
            status = -1;
            break;
        }
        kind->present[id - 1] = 1;
        kind->micros[id - 1] = micros;
        (*kind->loaded)++;
        *kind->loaded_id_max = RW_MAX(*kind->loaded_id_max, id);
        if (kind->visit(callbacks, context, &record) != 0) {
            snprintf(error, error_size, "while loading %ss: %s %llu was refused", kind->noun, kind->noun,
                     (unsigned long long)id);
            status = -1;
            break;
        }
    }
    if (store_scan_close(&scan, "loading records") != 0 && status == 0) {
        snprintf(error, error_size, "while loading %ss: read error", kind->noun);
        status = -1;
    }
    return status;
}

/* Deletes one open hold and records why, in one batch. */
static int store_resolve_hold(store_t *store, const uint8_t *hold_key, size_t hold_key_length,
                              const store_hold_record_t *hold, bool settled, char *error, size_t error_size) {
    store_audit_record_t audit;
    memset(&audit, 0, sizeof audit);
    audit.id = store->state->next_audit_id;
    audit.time_ms = text_wall_ms();
    snprintf(audit.admin, sizeof audit.admin, "system");
    snprintf(audit.action, sizeof audit.action, "%s",
             settled ? "hold.settled_at_restart" : "hold.released_at_restart");
    snprintf(audit.target, sizeof audit.target, "user:%llu", (unsigned long long)hold->user_id);
    snprintf(audit.details, sizeof audit.details,
             "{\"request_id\":\"%s\",\"key_id\":%llu,\"amount_micros\":%lld,\"model\":\"%.64s\"}",
             hold->request_id, (unsigned long long)hold->key_id, (long long)hold->amount_micros, hold->model);
    char json[STORE_JSON_BYTES_MAX];
    int json_length = store_audit_encode(&audit, json, sizeof json);
    RW_ASSERT(json_length > 0);
    uint8_t audit_key[STORE_KEY_ID_BYTES];
    store_key_id(audit_key, 'a', audit.id);
    uint8_t meta_key[32];
    size_t meta_key_length = store_key_meta(meta_key, sizeof meta_key, "next_audit");
    char next_text[TEXT_DECIMAL_BYTES];
    size_t next_length = text_format_u64(audit.id + 1, next_text);

    rocksdb_writebatch_t *batch = rocksdb_writebatch_create();
    rocksdb_writebatch_delete(batch, (const char *)hold_key, hold_key_length);
    rocksdb_writebatch_put(batch, (const char *)audit_key, sizeof audit_key, json, (size_t)json_length);
    rocksdb_writebatch_put(batch, (const char *)meta_key, meta_key_length, next_text, next_length);
    char failure[STORE_ERROR_BYTES];
    int status = store_write(store, batch, false, failure, sizeof failure);
    rocksdb_writebatch_destroy(batch);
    if (status != 0) {
        snprintf(error, error_size, "while resolving the open hold of %s at restart: %s", hold->request_id, failure);
        return -1;
    }
    store->state->next_audit_id = audit.id + 1;
    return 0;
}

/* A hold is settled when its request has a usage record of the same user
 * and key made no earlier than the hold (request ids restart with the
 * process, so an old record of a reused id must not count). */
static bool store_hold_is_settled(store_t *store, const store_hold_record_t *hold) {
    store_usage_record_t usage;
    if (store_usage_get_by_request(store, hold->request_id, &usage) != 0) return false;
    return usage.user_id == hold->user_id && usage.key_id == hold->key_id && usage.created_ms >= hold->created_ms;
}

static int store_load_holds(store_t *store, store_load_result_t *result, char *error, size_t error_size) {
    store_scan_t scan;
    store_scan_open_prefix(store, &scan, 'h', false);
    int status = 0;
    for (; store_scan_valid(&scan); store_scan_next(&scan)) {
        size_t key_length = 0;
        size_t value_length = 0;
        const uint8_t *key = store_scan_key(&scan, &key_length);
        const uint8_t *value = store_scan_value(&scan, &value_length);
        store_hold_record_t hold;
        if (store_hold_decode(value, value_length, &hold) != 0) {
            /* Unreadable: release it anyway (it holds no money) but say so. */
            store_log("while loading holds: an open hold does not decode; releasing it");
            memset(&hold, 0, sizeof hold);
            size_t shown = RW_MIN(key_length - RW_MIN(key_length, 2), sizeof hold.request_id - 1);
            memcpy(hold.request_id, key + RW_MIN(key_length, 2), shown);
            for (size_t index = 0; index < shown; index++) {
                if (hold.request_id[index] == '\0' || hold.request_id[index] == '"') hold.request_id[index] = '?';
            }
        }
        bool settled = store_hold_is_settled(store, &hold);
        /* The scan reads a consistent view, so deleting as we go is safe. */
        if (store_resolve_hold(store, key, key_length, &hold, settled, error, error_size) != 0) {
            status = -1;
            break;
        }
        if (settled) {
            result->holds_settled++;
        } else {
            result->holds_released++;
        }
    }
    if (store_scan_close(&scan, "loading holds") != 0 && status == 0) {
        snprintf(error, error_size, "while loading holds: read error");
        status = -1;
    }
    if (status == 0 && result->holds_settled + result->holds_released > 0) {
        char failure[STORE_ERROR_BYTES];
        if (store_sync_wal(store, failure, sizeof failure) != 0) {
            snprintf(error, error_size, "while syncing the resolved holds: %s", failure);
            status = -1;
        }
    }
    return status;
}

int store_load(store_t *store, const store_load_callbacks_t *callbacks, void *context,
               store_load_result_t *result, char *error, size_t error_size) {
    RW_ASSERT(store != NULL && store->state != NULL && store->state->db != NULL && result != NULL);
    memset(result, 0, sizeof *result);
    memset(store->state->user_present, 0, store->state->config.users_max);
    memset(store->state->key_present, 0, store->state->config.keys_max);
    store_state_t *state = store->state;
    /* Users first, so a key's user is known. */
    const store_load_kind_t users = {'u', "user", "users_max", state->config.users_max, state->user_present,
                                     state->user_balance_micros, &result->users, &result->user_id_max,
                                     store_load_user_decode, store_load_user_visit};
    const store_load_kind_t keys = {'k', "key", "keys_max", state->config.keys_max, state->key_present,
                                    state->key_spent_micros, &result->keys, &result->key_id_max,
                                    store_load_key_decode, store_load_key_visit};
    if (store_load_records(store, &users, callbacks, context, error, error_size) != 0) return -1;
    if (store_load_records(store, &keys, callbacks, context, error, error_size) != 0) return -1;
    if (store_load_holds(store, result, error, error_size) != 0) return -1;
    store->state->next_user_id = RW_MAX(store->state->next_user_id, result->user_id_max + 1);
    store->state->next_key_id = RW_MAX(store->state->next_key_id, result->key_id_max + 1);
    result->next_user_id = store->state->next_user_id;
    result->next_key_id = store->state->next_key_id;
    result->next_usage_id = store->state->next_usage_id;
    result->next_audit_id = store->state->next_audit_id;
    return 0;
}

/* ---- Reads ---- */

typedef int (*store_record_decode_t)(const uint8_t *bytes, size_t length, void *record);

static int store_user_decode_any(const uint8_t *bytes, size_t length, void *record) {
    return store_user_decode(bytes, length, record);
}

static int store_key_decode_any(const uint8_t *bytes, size_t length, void *record) {
    return store_key_decode(bytes, length, record);
}

static int store_hold_decode_any(const uint8_t *bytes, size_t length, void *record) {
    return store_hold_decode(bytes, length, record);
}

/* Reads the binary record at `key` and decodes it: 0, -ENOENT, or -EIO
 * (a read error, or a record that does not decode: logged as `what`). */
static int store_record_get(store_t *store, const uint8_t *key, size_t key_length, store_record_decode_t decode,
                            void *record, const char *what) {
    uint8_t value[STORE_RECORD_BYTES_MAX];
    size_t length = 0;
    int status = store_get(store, key, key_length, value, sizeof value, &length, what);
    if (status != 0) return status;
    if (length > sizeof value || decode(value, length, record) != 0) {
        /* Which one: an id key ("u/" + be64) or a text key ("h/" + request id). */
        if (key_length == STORE_KEY_ID_BYTES) {
            store_log("while reading %s (%c/%llu): the record does not decode", what, key[0],
                      (unsigned long long)store_read_be64(key + 2));
        } else {
            store_log("while reading %s (%.*s): the record does not decode", what, (int)key_length, (const char *)key);
        }
        return -EIO;
    }
    return 0;
}

/* Reads the record at the id key `prefix`/id: as store_record_get. */
static int store_record_get_by_id(store_t *store, char prefix, uint64_t id, store_record_decode_t decode,
                                  void *record, const char *what) {
    uint8_t key[STORE_KEY_ID_BYTES];
    store_key_id(key, prefix, id);
    return store_record_get(store, key, sizeof key, decode, record, what);
}

/* Builds the text key `prefix`/text for a lookup: its length (at least the
 * prefix and slash), or 0 when text does not fit in text_bytes with its NUL,
 * so nothing can be stored under it and the lookup answers -ENOENT unread. */
static size_t store_lookup_key_text(uint8_t key[STORE_KEY_TEXT_BYTES], char prefix, const char *text,
                                    size_t text_bytes, bool lower_case) {
    RW_ASSERT(text != NULL);
    if (strlen(text) >= text_bytes) return 0;
    size_t key_length = store_key_text(key, prefix, text, lower_case);
    RW_ASSERT(key_length > 0);
    return key_length;
}

int store_user_get(store_t *store, uint64_t user_id, store_user_record_t *record) {
    return store_record_get_by_id(store, 'u', user_id, store_user_decode_any, record, "a user record");
}

int store_user_get_by_email(store_t *store, const char *email, store_user_record_t *record) {
    uint8_t key[STORE_KEY_TEXT_BYTES];
    size_t key_length = store_lookup_key_text(key, 'e', email, ACCOUNT_EMAIL_BYTES, true);
    if (key_length == 0) return -ENOENT;
    uint8_t value[8];
    size_t length = 0;
    int status = store_get(store, key, key_length, value, sizeof value, &length, "an email index entry");
    if (status != 0) return status;
    if (length != sizeof value) {
        store_log("while reading the email index: an entry is %zu bytes", length);
        return -EIO;
    }
    return store_user_get(store, store_read_be64(value), record);
}

int store_key_get(store_t *store, uint64_t key_id, store_key_record_t *record) {
    return store_record_get_by_id(store, 'k', key_id, store_key_decode_any, record, "a key record");
}

int store_hold_get(store_t *store, const char *request_id, store_hold_record_t *record) {
    uint8_t key[STORE_KEY_TEXT_BYTES];
    size_t key_length = store_lookup_key_text(key, 'h', request_id, STORE_REQUEST_ID_BYTES, false);
    if (key_length == 0) return -ENOENT;
    return store_record_get(store, key, key_length, store_hold_decode_any, record, "a hold");
}

/* Finds the record with usage id `id`: in the block whose first id is the
 * greatest at or below it. 0, -ENOENT, or -EIO. */
static int store_usage_get_by_id(store_t *store, uint64_t id, store_usage_record_t *record) {
    /* The id comes from the disk (a q/ entry): 0 and the largest are no
     * record's. */
    if (id == 0 || id == UINT64_MAX) return -EIO;
    store_scan_t scan;
    /* [s/, s/<id + 1>): the last key is the block at or below id. */
    uint8_t lower[2] = {'s', '/'};
    uint8_t upper[STORE_KEY_ID_BYTES];
    store_key_id(upper, 's', id + 1);
    store_scan_open(store, &scan, lower, sizeof lower, upper, sizeof upper, true);
    int status = -ENOENT;
    if (store_scan_valid(&scan)) {
        size_t key_length = 0;
        size_t value_length = 0;
        const uint8_t *key = store_scan_key(&scan, &key_length);
        const uint8_t *value = store_scan_value(&scan, &value_length);
        uint64_t first_id = store_usage_block_first_id(key, key_length);
        store_usage_block_reader_t block;
        if (first_id == 0 || store_usage_block_open(&block, value, value_length, first_id) != 0) {
            store_log("while reading usage record %llu: its block does not decode", (unsigned long long)id);
            status = -EIO;
        } else {
            for (;;) {
                int read = store_usage_block_next(&block, record);
                if (read < 0) {
                    store_log("while reading usage record %llu: its block does not decode", (unsigned long long)id);
                    status = -EIO;
                }
                if (read <= 0 || record->id > id) break;
                if (record->id == id) {
                    status = 0;
                    break;
                }
            }
        }
    }
    if (store_scan_close(&scan, "reading a usage record") != 0) status = -EIO;
    return status;
}

int store_usage_get_by_request(store_t *store, const char *request_id, store_usage_record_t *record) {
    uint8_t key[STORE_KEY_TEXT_BYTES];
    size_t key_length = store_lookup_key_text(key, 'q', request_id, STORE_REQUEST_ID_BYTES, false);
    if (key_length == 0) return -ENOENT;
    uint8_t entry[STORE_KEY_USAGE_BYTES];
    size_t length = 0;
    int status = store_get(store, key, key_length, entry, sizeof entry, &length, "a request index entry");
    if (status != 0) return status;
    /* Schema 2 holds the usage id; schema 1 held the r/ key, which ends in it. */
    if (length != 8 && length != STORE_KEY_USAGE_BYTES) {
        store_log("while reading the request index of %s: the entry is %zu bytes", request_id, length);
        return -EIO;
    }
    status = store_usage_get_by_id(store, store_read_be64(entry + length - 8), record);
    return status == -ENOENT ? -EIO : status; /* an index entry without its record */
}

/* Applies the query's time and key filters to one record: 1 visit it, 0 skip
 * it, -1 stop (older than from_ms: everything after is older still). */
static int store_usage_filter(const store_usage_query_t *query, const store_usage_record_t *record) {
    if (query->from_ms != 0 && record->created_ms < query->from_ms) return -1;
    if (query->to_ms != 0 && record->created_ms >= query->to_ms) return 0;
    if (query->key_id != 0 && record->key_id != query->key_id) return 0;
    if (query->user_id != 0 && record->user_id != query->user_id) return 0;
    return 1;
}

typedef struct store_usage_listing {
    const store_usage_query_t *query;
    uint64_t user_id;                              /* 0 = every user */
    store_usage_visit_t visit;
    void *context;
    int visited;
    bool done;
} store_usage_listing_t;

/* Visits one block's records newest first. 0, or -EIO when it does not
 * decode. */
static int store_usage_list_block(store_usage_listing_t *listing, const uint8_t *bytes, size_t length,
                                  uint64_t first_id) {
    size_t offsets[STORE_USAGE_BLOCK_RECORDS_MAX];
    int count = store_usage_block_offsets(bytes, length, first_id, offsets);
    if (count < 0) {
        store_log("while listing usage: the block of usage record %llu does not decode", (unsigned long long)first_id);
        return -EIO;
    }
    char json[STORE_JSON_BYTES_MAX];
    for (int index = count - 1; index >= 0 && !listing->done; index--) {
        const store_usage_query_t *query = listing->query;
        if (query->limit != 0 && (uint32_t)listing->visited >= query->limit) {
            listing->done = true;
            break;
        }
        store_usage_record_t record;
        int status = store_usage_block_record_at(bytes, length, first_id, offsets[index], &record);
        RW_ASSERT(status == 0); /* store_usage_block_offsets decoded it */
        if (listing->user_id != 0 && record.user_id != listing->user_id) continue;
        int verdict = store_usage_filter(query, &record);
        if (verdict < 0) {
            listing->done = true;
            break;
        }
        if (verdict == 0) continue;
        int json_length = store_usage_encode(&record, json, sizeof json);
        RW_ASSERT(json_length > 0);
        listing->visited++;
        if (listing->visit(listing->context, &record, json, (size_t)json_length) != 0) listing->done = true;
        if (query->limit != 0 && (uint32_t)listing->visited >= query->limit) listing->done = true;
    }
    return 0;
}

int store_usage_list(store_t *store, const store_usage_query_t *query, store_usage_visit_t visit,
                     void *context) {
    RW_ASSERT(store != NULL && query != NULL && visit != NULL);
    uint64_t user_id = query->user_id;
    if (user_id == 0 && query->key_id != 0) {
        store_key_record_t key;
        int status = store_key_get(store, query->key_id, &key);
        if (status != 0) return status;
        user_id = key.user_id;
    }
    store_usage_listing_t listing = {query, user_id, visit, context, 0, false};
    store_scan_t scan;
    if (user_id != 0) {
        uint8_t lower[11];
        uint8_t upper[11];
        store_key_usage(lower, user_id, 0); /* "r/<user>/" is its first 11 bytes */
        memcpy(upper, lower, sizeof upper);
        upper[10] = '/' + 1;
        store_scan_open(store, &scan, lower, sizeof lower, upper, sizeof upper, true);
    } else {
        store_scan_open_prefix(store, &scan, 's', true);
    }
    int status = 0;
    /* A block is at most STORE_USAGE_BLOCK_BYTES_MAX: read by id (a user's
     * index entry names it) into this buffer, on the stack so a visitor may
     * list usage itself. */
    uint8_t block[STORE_USAGE_BLOCK_BYTES_MAX];
    for (; store_scan_valid(&scan) && !listing.done && status == 0; store_scan_next(&scan)) {
        size_t key_length = 0;
        const uint8_t *key = store_scan_key(&scan, &key_length);
        if (user_id == 0) {
            size_t value_length = 0;
            const uint8_t *value = store_scan_value(&scan, &value_length);
            status = store_usage_list_block(&listing, value, value_length, store_usage_block_first_id(key, key_length));
            continue;
        }
        if (key_length != STORE_KEY_USAGE_BYTES) {
            store_log("while listing usage: an r/ index key is %zu bytes", key_length);
            status = -EIO;
            break;
        }
        uint64_t first_id = store_read_be64(key + 11);
        uint8_t block_key[STORE_KEY_ID_BYTES];
        store_key_id(block_key, 's', first_id);
        size_t block_length = 0;
        status = store_get(store, block_key, sizeof block_key, block, sizeof block, &block_length, "a usage block");
        if (status == 0 && block_length > sizeof block) status = -EIO;
        if (status == -ENOENT) {
            store_log("while listing usage: the r/ index names block %llu, which is missing",
                      (unsigned long long)first_id);
            status = -EIO;
        }
        if (status == 0) status = store_usage_list_block(&listing, block, block_length, first_id);
    }
    if (store_scan_close(&scan, "listing usage") != 0) status = -EIO;
    return status != 0 ? status : listing.visited;
}

int store_audit_list(store_t *store, uint32_t limit, store_audit_visit_t visit, void *context) {
    RW_ASSERT(store != NULL && visit != NULL);
    store_scan_t scan;
    store_scan_open_prefix(store, &scan, 'a', true);
    int visited = 0;
    int status = 0;
    for (; store_scan_valid(&scan); store_scan_next(&scan)) {
        if (limit != 0 && (uint32_t)visited >= limit) break;
        size_t value_length = 0;
        const char *value = (const char *)store_scan_value(&scan, &value_length);
        store_audit_record_t record;
        if (store_audit_decode(value, value_length, &record) != 0) {
            store_log("while listing the audit log: an entry does not decode");
            status = -EIO;
            break;
        }
        visited++;
        if (visit(context, &record, value, value_length) != 0) break;
    }
    if (store_scan_close(&scan, "listing the audit log") != 0) status = -EIO;
    return status != 0 ? status : visited;
}

/* ---- Meta values ---- */

int store_meta_get(store_t *store, const char *name, uint8_t *value, size_t capacity) {
    RW_ASSERT(store != NULL && name != NULL && (value != NULL || capacity == 0));
    uint8_t key[2 + STORE_META_NAME_BYTES];
    size_t key_length = store_key_meta(key, sizeof key, name);
    size_t length = 0;
    int status = store_get(store, key, key_length, value, capacity, &length, "a meta value");
    if (status != 0) return status;
    if (length > INT32_MAX) return -EIO;
    return (int)length;
}

int store_meta_put(store_t *store, const char *name, const uint8_t *value, size_t length) {
    RW_ASSERT(store != NULL && name != NULL && (value != NULL || length == 0));
    RW_ASSERT(strcmp(name, "schema") != 0 && strncmp(name, "next_", 5) != 0);
    uint8_t key[2 + STORE_META_NAME_BYTES];
    size_t key_length = store_key_meta(key, sizeof key, name);
    rocksdb_writebatch_t *batch = rocksdb_writebatch_create();
    rocksdb_writebatch_put(batch, (const char *)key, key_length, (const char *)value, length);
    char failure[STORE_ERROR_BYTES];
    int status = store_write(store, batch, true, failure, sizeof failure);
    rocksdb_writebatch_destroy(batch);
    if (status != 0) store_log("while writing meta value %s: %s", name, failure);
    return status;
}
