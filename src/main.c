/* ringway: start-up and shutdown.
 *
 * Start-up, in order: load the configuration; open the store (RocksDB under
 * <data_dir>/store) and load users and keys into the shared account tables
 * (open holds left by a crash are resolved there); build what threads share
 * read-only (router, TLS contexts, JWT secret); start one relay worker per
 * thread (each builds its own ring and pools on its own thread, then waits);
 * bind the workers to the store thread and the control thread, start those
 * two; then let the workers accept. Shutdown (SIGINT/SIGTERM) runs the other
 * way: workers stop, then the control thread, then the store thread, which
 * writes and syncs everything already handed to it. */
#include "ringway/account.h"
#include "ringway/admin.h"
#include "ringway/auth.h"
#include "ringway/config.h"
#include "ringway/control.h"
#include "ringway/ledger.h"
#include "ringway/portal.h"
#include "ringway/relay.h"
#include "ringway/router.h"
#include "ringway/store.h"
#include "ringway/tls.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    MAIN_THREADS_MAX = 256,
};

typedef struct main_thread {
    pthread_t thread;
    uint32_t index;
    const relay_shared_t *shared;
    relay_worker_t *worker;
} main_thread_t;

static atomic_uint main_workers_ready;
static atomic_uint main_workers_failed;
static atomic_bool main_workers_go;
static volatile sig_atomic_t main_stop_requested;

static void main_usage(FILE *out) {
    fprintf(out,
            "usage: ringway [--config FILE]\n"
            "Ringway, an OpenAI-compatible API relay.\n"
            "  --config FILE   the configuration (default: conf/ringway.conf)\n"
            "  --version       print the version\n"
            "  --help          this text\n"
            "Every option of the configuration is documented in conf/ringway.conf.\n");
}

/* Each worker is built on its own thread (its ring is single-issuer), then
 * waits until the store and control threads know its ring. */
static void *main_worker_thread(void *argument) {
    main_thread_t *thread = argument;
    char error[512];
    thread->worker = relay_worker_create(thread->shared, thread->index, error, sizeof error);
    if (thread->worker == NULL) {
        fprintf(stderr, "ringway: thread %u: %s\n", thread->index, error);
        atomic_fetch_add(&main_workers_failed, 1);
        return NULL;
    }
    atomic_fetch_add(&main_workers_ready, 1);
    while (!atomic_load(&main_workers_go)) {
        if (main_stop_requested) return NULL;
        usleep(1000);
    }
    relay_worker_run(thread->worker);
    tls_thread_release();
    return NULL;
}

/* ---- loading the account tables from the store ---------------------------- */

typedef struct main_load_context {
    account_tables_t *tables;
    const config_t *config;
} main_load_context_t;

static int main_load_user(void *context, const store_user_record_t *record) {
    main_load_context_t *load = context;
    uint32_t index = account_user_publish(load->tables, record->id, record->email, strlen(record->email),
                                          record->balance_micros, (account_user_status_t)record->status);
    return index == ACCOUNT_INDEX_NONE ? -1 : 0;
}

static int main_load_key(void *context, const store_key_record_t *record) {
    main_load_context_t *load = context;
    account_key_t fields;
    if (admin_key_fields_from_record(load->config, record, &fields) != 0) return -1;
    return account_key_publish(load->tables, &fields) == NULL ? -1 : 0;
}

/* The JWT secret: from the configuration, else from the store, else a new
 * one kept in the store so logins survive restarts. */
static int main_jwt_secret(const config_t *config, store_t *store, uint8_t *secret, size_t capacity,
                           size_t *length) {
    if (config->has_jwt_secret) {
        size_t configured = strlen(config->jwt_secret);
        if (configured > capacity) return -1;
        memcpy(secret, config->jwt_secret, configured);
        *length = configured;
        return 0;
    }
    int stored = store_meta_get(store, "jwt_secret", secret, capacity);
    if (stored >= (int)JWT_SECRET_BYTES_MIN && (size_t)stored <= capacity) {
        *length = (size_t)stored;
        return 0;
    }
    if (stored != -ENOENT) return -1;
    if (!jwt_secret_generate(secret)) return -1;
    if (store_meta_put(store, "jwt_secret", secret, JWT_SECRET_BYTES) != 0) return -1;
    *length = JWT_SECRET_BYTES;
    return 0;
}

int main(int argc, char **argv) {
    const char *config_path = "conf/ringway.conf";
    for (int index = 1; index < argc; index++) {
        if (strcmp(argv[index], "--help") == 0 || strcmp(argv[index], "-h") == 0) {
            main_usage(stdout);
            return 0;
        }
        if (strcmp(argv[index], "--version") == 0) {
            printf("ringway %s\n", RW_VERSION);
            return 0;
        }
        if (strcmp(argv[index], "--config") == 0 && index + 1 < argc) {
            config_path = argv[++index];
            continue;
        }
        fprintf(stderr, "ringway: unknown or incomplete option '%s'\n", argv[index]);
        main_usage(stderr);
        return 2;
    }

    /* SIGINT and SIGTERM are taken by sigwait on this thread alone: blocked
     * here, before any thread exists (RocksDB starts its own in
     * store_open), so every thread inherits the mask and no handler runs on
     * a thread nobody waits on. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    char error[1024];
    config_t *config = calloc(1, sizeof *config);
    if (config == NULL) {
        fprintf(stderr, "ringway: out of memory\n");
        return 1;
    }
    if (config_load(config, config_path, error, sizeof error) != 0) {
        fprintf(stderr, "ringway: %s\n", error);
        return 1;
    }
    if (config->threads == 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        config->threads = online > 0 ? (uint32_t)RW_MIN(online, (long)MAIN_THREADS_MAX) : 1;
    }

    /* The store and the account tables. */
    static account_tables_t tables;
    if (!account_tables_init(&tables, config->users_max, config->keys_max)) {
        fprintf(stderr, "ringway: cannot allocate the account tables (users_max %u, keys_max %u)\n",
                config->users_max, config->keys_max);
        return 1;
    }
    static store_t store;
    char store_path[CONFIG_PATH_BYTES + 16];
    snprintf(store_path, sizeof store_path, "%s/store", config->data_dir);
    store_options_t store_options = {.users_max = config->users_max, .keys_max = config->keys_max};
    if (store_open(&store, store_path, &store_options, error, sizeof error) != 0) {
        fprintf(stderr, "ringway: %s\n", error);
        return 1;
    }
    main_load_context_t load_context = {.tables = &tables, .config = config};
    store_load_callbacks_t callbacks = {.on_user = main_load_user, .on_key = main_load_key};
    store_load_result_t loaded;
    if (store_load(&store, &callbacks, &load_context, &loaded, error, sizeof error) != 0) {
        fprintf(stderr, "ringway: %s: %s\n", store_path, error);
        return 1;
    }
    if (loaded.holds_settled + loaded.holds_released > 0) {
        fprintf(stderr, "ringway: resolved %u holds left open by the last run (%u settled, %u released)\n",
                loaded.holds_settled + loaded.holds_released, loaded.holds_settled, loaded.holds_released);
    }
    static uint8_t jwt_secret[CONFIG_SECRET_BYTES];
    size_t jwt_secret_length = 0;
    if (main_jwt_secret(config, &store, jwt_secret, sizeof jwt_secret, &jwt_secret_length) != 0) {
        fprintf(stderr, "ringway: cannot read or create the JWT secret in %s\n", store_path);
        return 1;
    }

    static router_t router;
    if (router_init(&router, config, error, sizeof error) != 0) {
        fprintf(stderr, "ringway: %s\n", error);
        return 1;
    }
    if (!tls_global_init()) {
        fprintf(stderr, "ringway: cannot initialise wolfSSL\n");
        return 1;
    }
    static relay_shared_t shared;
    static health_t health;
    shared.config = config;
    shared.router = &router;
    shared.health = &health;
    health.thread_count = config->threads;
    health.threads = calloc(config->threads, sizeof *health.threads);
    if (health.threads == NULL) {
        fprintf(stderr, "ringway: out of memory for the upstream health table\n");
        return 1;
    }
    shared.tables = &tables;
    shared.jwt_secret = jwt_secret;
    shared.jwt_secret_length = jwt_secret_length;
    if (!auth_random_bytes((uint8_t *)&shared.instance, sizeof shared.instance)) {
        fprintf(stderr, "ringway: getrandom failed\n");
        return 1;
    }
    for (uint32_t index = 0; index < config->upstream_count; index++) {
        const config_upstream_t *upstream = &config->upstreams[index];
        if (!upstream->tls) continue;
        shared.upstream_tls[index] = tls_client_context_create(upstream->ca_file[0] ? upstream->ca_file : NULL,
                                                               upstream->verify, error, sizeof error);
        if (shared.upstream_tls[index] == NULL) {
            fprintf(stderr, "ringway: %s: upstream '%s': %s\n", config->source_path, upstream->name, error);
            return 1;
        }
    }

    /* The store thread: producers are the workers (0..threads-1) and the
     * control thread (threads). Channels hold everything a worker's streams
     * can have outstanding (3 per stream, see store.h), so neither side
     * waits for the other. */
    static store_thread_t store_thread;
    uint32_t store_channel_capacity = store_thread_channel_capacity_for(config->streams_per_thread);
    if (store_thread_create(&store_thread, &store, config->threads + 1, store_channel_capacity,
                            config->sync_interval_ms, error, sizeof error) != 0) {
        fprintf(stderr, "ringway: %s\n", error);
        return 1;
    }
    shared.store_thread = &store_thread;

    control_options_t control_options = {
        .config = config,
        .tables = &tables,
        .store = &store,
        .store_thread = &store_thread,
        .store_producer = config->threads,
        .worker_count = config->threads,
        .next_user_id = loaded.next_user_id,
        .next_key_id = loaded.next_key_id,
        .jwt_secret = jwt_secret,
        .jwt_secret_length = jwt_secret_length,
        .health = &health,
    };
    control_t *control = NULL;
    if (control_create(&control, &control_options, error, sizeof error) != 0) {
        fprintf(stderr, "ringway: %s\n", error);
        return 1;
    }
    shared.portal = control_portal(control);


    static main_thread_t threads[MAIN_THREADS_MAX];
    for (uint32_t index = 0; index < config->threads; index++) {
        threads[index].index = index;
        threads[index].shared = &shared;
        if (pthread_create(&threads[index].thread, NULL, main_worker_thread, &threads[index]) != 0) {
            fprintf(stderr, "ringway: cannot start thread %u\n", index);
            return 1;
        }
    }
    while (atomic_load(&main_workers_ready) + atomic_load(&main_workers_failed) < config->threads) usleep(1000);
    if (atomic_load(&main_workers_failed) > 0) return 1;
    for (uint32_t index = 0; index < config->threads; index++) {
        relay_worker_t *worker = threads[index].worker;
        store_thread_bind_producer(&store_thread, index, relay_worker_ring_fd(worker), relay_worker_mailbox(worker));
        portal_bind_worker(shared.portal, index, relay_worker_ring_fd(worker), relay_worker_mailbox(worker));
    }
    if (store_thread_start(&store_thread) != 0) {
        fprintf(stderr, "ringway: cannot start the store thread\n");
        return 1;
    }
    if (loaded.users == 0 && control_bootstrap(control, error, sizeof error) != 0) {
        fprintf(stderr, "ringway: %s\n", error);
        return 1;
    }
    if (control_start(control, error, sizeof error) != 0) {
        fprintf(stderr, "ringway: %s\n", error);
        return 1;
    }
    atomic_store(&main_workers_go, true);
    fprintf(stderr, "ringway: listening on %s:%u (%u threads), admin API on %s:%u\n", config->listen_host,
            (unsigned)config->listen_port, config->threads, config->admin_listen_host,
            (unsigned)config->admin_listen_port);

    int received = 0;
    sigwait(&stop_signals, &received);
    main_stop_requested = 1;
    fprintf(stderr, "ringway: stopping (%s)\n", received == SIGINT ? "SIGINT" : "SIGTERM");
    for (uint32_t index = 0; index < config->threads; index++) relay_worker_stop(threads[index].worker);
    for (uint32_t index = 0; index < config->threads; index++) pthread_join(threads[index].thread, NULL);
    control_stop(control);
    store_thread_stop(&store_thread);
    store_thread_statistics_t statistics;
    store_thread_statistics(&store_thread, &statistics);
    fprintf(stderr,
            "ringway: store wrote %llu messages in %llu rounds (%llu batch writes, %llu syncs, %llu write errors)\n",
            (unsigned long long)statistics.messages, (unsigned long long)statistics.rounds,
            (unsigned long long)statistics.batch_writes, (unsigned long long)statistics.syncs,
            (unsigned long long)statistics.write_errors);
    store_thread_destroy(&store_thread);
    store_close(&store);
    return 0;
}
