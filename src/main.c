/* ringway: start-up and shutdown. Loads the configuration, builds what the
 * threads share read-only (router, TLS contexts), starts one relay worker
 * per thread, and waits for SIGINT or SIGTERM. */
#include "ringway/config.h"
#include "ringway/relay.h"
#include "ringway/router.h"
#include "ringway/tls.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MAIN_THREADS_MAX = 256 };

typedef struct main_thread {
    pthread_t thread;
    uint32_t index;
    const relay_shared_t *shared;
    relay_worker_t *worker;
} main_thread_t;

static atomic_uint main_workers_ready;
static atomic_uint main_workers_failed;
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

/* Each worker is built on its own thread: its ring is single-issuer. */
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
    relay_worker_run(thread->worker);
    tls_thread_release();
    return NULL;
}

static void main_on_signal(int signal_number) {
    (void)signal_number;
    main_stop_requested = 1;
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

    static router_t router;
    if (router_init(&router, config, error, sizeof error) != 0) {
        fprintf(stderr, "ringway: %s\n", error);
        return 1;
    }
    static relay_shared_t shared;
    shared.config = config;
    shared.router = &router;
    if (!tls_global_init()) {
        fprintf(stderr, "ringway: cannot initialise wolfSSL\n");
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

    signal(SIGPIPE, SIG_IGN);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = main_on_signal;
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);

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
    fprintf(stderr, "ringway: listening on %s:%u (%u threads)\n", config->listen_host, (unsigned)config->listen_port,
            config->threads);

    while (!main_stop_requested) pause();
    fprintf(stderr, "ringway: stopping\n");
    for (uint32_t index = 0; index < config->threads; index++) relay_worker_stop(threads[index].worker);
    for (uint32_t index = 0; index < config->threads; index++) pthread_join(threads[index].thread, NULL);
    return 0;
}
