/* store_settle: the store thread's cost per request, for issue 7 ("settlement
 * that costs almost nothing"). Not a test and not built by build.zig; run it
 * under callgrind for repeatable instruction counts:
 *
 *   tools/zig cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Isrc/store bench/store_settle.c \
 *       src/store/store.c src/store/codec.c src/store/thread.c src/channel/channel.c src/util/assert.c \
 *       src/json/json.c (and src/text/ once it exists) \
 *       -lrocksdb -luring -lpthread -o /tmp/store_settle
 *   valgrind --tool=callgrind --toggle-collect=store_thread_main /tmp/store_settle DIR N CONCURRENCY HOLD
 *
 * One producer (no ring: it polls) sends N requests, CONCURRENCY at a time:
 * per request a HOLD_OPEN when HOLD is 1 (today every request; after issue 7
 * only the long ones), then a SETTLE that asks for an ack; it waits for the
 * CONCURRENCY acks before the next group, as a loaded worker would have that
 * many settlements in flight. The Ir collected inside store_thread_main,
 * divided by N, is the store thread's instructions per request (RocksDB's
 * background threads are not in it; at these sizes no memtable is flushed).
 * It prints the WAL bytes and memtable entries per request (the keys written
 * per hold + settle). Build with -DSTORE_SETTLE_BEFORE against the code
 * before issue 7 (public store_t, no HOLD_NOT_RECORDED flag). */
#include "ringway/store.h"
#include "store-internal.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static int64_t bench_wall_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static uint64_t bench_wal_bytes(const char *path) {
    DIR *directory = opendir(path);
    if (directory == NULL) return 0;
    uint64_t total = 0;
    struct dirent *entry = NULL;
    while ((entry = readdir(directory)) != NULL) {
        size_t length = strlen(entry->d_name);
        if (length < 4 || strcmp(entry->d_name + length - 4, ".log") != 0) continue;
        char file[4200];
        snprintf(file, sizeof file, "%s/%s", path, entry->d_name);
        struct stat status;
        if (stat(file, &status) == 0) total += (uint64_t)status.st_size;
    }
    closedir(directory);
    return total;
}

static rocksdb_t *bench_db(store_t *store) {
#ifdef STORE_SETTLE_BEFORE
    return store->db;
#else
    return store_db(store);
#endif
}

static uint64_t bench_memtable_entries(store_t *store) {
    char *value = rocksdb_property_value(bench_db(store), "rocksdb.num-entries-active-mem-table");
    uint64_t entries = value != NULL ? strtoull(value, NULL, 10) : 0;
    rocksdb_free(value);
    char *deletes = rocksdb_property_value(bench_db(store), "rocksdb.num-deletes-active-mem-table");
    uint64_t deleted = deletes != NULL ? strtoull(deletes, NULL, 10) : 0;
    rocksdb_free(deletes);
    (void)deleted;
    return entries;
}

static void bench_call(store_thread_t *thread, store_message_t *message) {
    store_ack_t ack;
    if (store_thread_call(thread, 0, message, NULL, 10000, &ack) != 0 || ack.status != 0) {
        fprintf(stderr, "setup message %u failed\n", message->kind);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s DIR REQUESTS CONCURRENCY HOLD(0|1)\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    uint64_t requests = strtoull(argv[2], NULL, 10);
    uint32_t concurrency = (uint32_t)strtoul(argv[3], NULL, 10);
    bool hold_recorded = strcmp(argv[4], "1") == 0;
    if (concurrency == 0 || concurrency > 256) return 2;

    store_t store;
    memset(&store, 0, sizeof store);
    store_options_t options = {.users_max = 16, .keys_max = 16};
    char error[512];
    if (store_open(&store, path, &options, error, sizeof error) != 0) {
        fprintf(stderr, "%s\n", error);
        return 1;
    }
    store_load_result_t loaded;
    if (store_load(&store, NULL, NULL, &loaded, error, sizeof error) != 0) return 1;
    store_thread_t thread;
    if (store_thread_create(&thread, &store, 1, 1024, 10, error, sizeof error) != 0) return 1;
    if (store_thread_start(&thread) != 0) return 1;

    store_message_t message;
    memset(&message, 0, sizeof message);
    message.kind = STORE_MESSAGE_USER_CREATE;
    message.body.user_create.id = 1;
    message.body.user_create.balance_micros = INT64_MAX / 2;
    message.body.user_create.created_ms = bench_wall_ms();
    snprintf(message.body.user_create.email, sizeof message.body.user_create.email, "bench@example.com");
    bench_call(&thread, &message);
    memset(&message, 0, sizeof message);
    message.kind = STORE_MESSAGE_KEY_CREATE;
    store_key_record_t *key = &message.body.key_create;
    key->id = 1;
    key->user_id = 1;
    key->spend_cap_micros = -1;
    key->all_models = true;
    key->created_ms = bench_wall_ms();
    snprintf(key->name, sizeof key->name, "bench key");
    snprintf(key->prefix, sizeof key->prefix, "sk-benchabc");
    snprintf(key->last4, sizeof key->last4, "wxyz");
    bench_call(&thread, &message);

    uint64_t wal_before = bench_wal_bytes(path);
    uint64_t entries_before = bench_memtable_entries(&store);
    uint64_t sent = 0;
    uint64_t failures = 0;
    while (sent < requests) {
        uint32_t group = (uint32_t)(requests - sent < concurrency ? requests - sent : concurrency);
        for (uint32_t index = 0; index < group; index++) {
            char request_id[STORE_REQUEST_ID_BYTES];
            snprintf(request_id, sizeof request_id, "chatcmpl-%016llx%08x", (unsigned long long)(sent + index),
                     0x5eedu);
            if (hold_recorded) {
                memset(&message, 0, sizeof message);
                message.kind = STORE_MESSAGE_HOLD_OPEN;
                store_hold_record_t *hold = &message.body.hold_open;
                snprintf(hold->request_id, sizeof hold->request_id, "%s", request_id);
                hold->user_id = 1;
                hold->key_id = 1;
                hold->amount_micros = 20000;
                hold->created_ms = bench_wall_ms();
                snprintf(hold->model, sizeof hold->model, "gpt-4o-mini");
                while (!store_thread_submit(&thread, 0, &message, NULL)) {
                }
            }
            memset(&message, 0, sizeof message);
            message.kind = STORE_MESSAGE_SETTLE;
            message.flags = STORE_MESSAGE_FLAG_ACK;
#ifndef STORE_SETTLE_BEFORE
            if (!hold_recorded) message.flags |= STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED;
#endif
            message.token = sent + index;
            store_usage_record_t *usage = &message.body.settle.usage;
            snprintf(usage->request_id, sizeof usage->request_id, "%s", request_id);
            usage->user_id = 1;
            usage->key_id = 1;
            snprintf(usage->model, sizeof usage->model, "gpt-4o-mini");
            snprintf(usage->upstream, sizeof usage->upstream, "openai");
            snprintf(usage->status, sizeof usage->status, "completed");
            usage->prompt_tokens = 812;
            usage->completion_tokens = 240;
            usage->cost_micros = 1234;
            usage->latency_ms = 900;
            message.body.settle.hold_micros = 20000;
            while (!store_thread_submit(&thread, 0, &message, NULL)) {
            }
        }
        uint32_t acked = 0;
        while (acked < group) {
            store_ack_t ack;
            if (store_thread_reply_pop(&thread, 0, &ack)) {
                if (ack.status != 0) failures++;
                acked++;
                continue;
            }
            struct timespec pause = {0, 20000};
            nanosleep(&pause, NULL);
        }
        sent += group;
    }
    uint64_t entries = bench_memtable_entries(&store) - entries_before;
    store_thread_stop(&thread);
#ifndef STORE_SETTLE_BEFORE
    store_thread_statistics_t statistics;
    store_thread_statistics(&thread, &statistics);
    printf("store thread: %llu messages, %llu rounds, %llu batch writes (setup included)\n",
           (unsigned long long)statistics.messages, (unsigned long long)statistics.rounds,
           (unsigned long long)statistics.batch_writes);
#endif
    uint64_t wal = bench_wal_bytes(path) - wal_before;
    printf("requests %llu concurrency %u hold %d failures %llu\n", (unsigned long long)requests, concurrency,
           hold_recorded, (unsigned long long)failures);
    printf("memtable entries per request %.2f\n", requests ? (double)entries / (double)requests : 0.0);
    printf("WAL bytes per request %.1f\n", requests ? (double)wal / (double)requests : 0.0);
    store_thread_destroy(&thread);
    store_close(&store);
    return failures == 0 ? 0 : 1;
}
