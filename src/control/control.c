/* The control thread: its life cycle, its loop and mailbox, the admin API
 * it hosts (src/admin) and the portal's jobs it runs (src/portal), and the
 * first-start bootstrap (see control.h for the contracts and the start-up
 * order).
 *
 * Jobs: a worker that finds its job channel empty before a push rings our
 * doorbell (a MSG_RING CQE whose user_data is control->mailbox); we drain
 * the channels (portal_drain) at most CONTROL_JOBS_PER_TURN jobs at a time,
 * then let the admin connections have a turn. The tick (CONTROL_TICK_MS)
 * drains too, which covers jobs pushed before the thread ran and workers
 * without a ring.
 *
 * The admin API and the jobs share this one thread, and an admin request
 * takes a few loop turns (accept, receive, send). Of the jobs of a turn at
 * most CONTROL_PASSWORD_JOBS_PER_TURN hash a password (Argon2id, tens of
 * milliseconds; the rest are store reads of a millisecond or less), so a
 * login flood delays an admin request by a few hashes, not by the whole
 * queue: with 16 hashes a turn a `ringctl users list` waited seconds. Two
 * more things keep that short. What this turn's callbacks queued (an admin
 * response's send, a receive armed on a new admin connection) is submitted
 * before any job runs, so it does not wait behind the hash. And when
 * completions are already waiting (an admin request arrived), the drain
 * gives way once to the next turn, which reaps them first; only once, so
 * the jobs cannot be starved by a steady stream of completions. */
#include "ringway/account.h"
#include "ringway/admin.h"
#include "ringway/config.h"
#include "ringway/control.h"
#include "ringway/loop.h"
#include "ringway/portal.h"
#include "ringway/server.h"
#include "ringway/text.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    CONTROL_TICK_MS = 20,
    CONTROL_JOBS_PER_TURN = 16, /* jobs run per wake-up before HTTP gets a turn */
    CONTROL_PASSWORD_JOBS_PER_TURN = 1, /* of them registrations and logins */
};

typedef enum control_state {
    CONTROL_STATE_CREATED = 0,
    CONTROL_STATE_STARTING,
    CONTROL_STATE_RUNNING,
    CONTROL_STATE_FAILED,
    CONTROL_STATE_STOPPED,
} control_state_t;

struct control {
    admin_context_t admin;                      /* what the admin API and the portal's jobs run with */
    admin_api_t *admin_api;
    portal_t *portal;

    /* The thread. */
    pthread_t thread;
    bool thread_started;
    _Atomic uint32_t state;                     /* control_state_t */
    _Atomic bool stop_requested;
    char start_error[512];
    loop_t loop;
    server_t *server;
    void (*server_tick)(loop_t *loop);
    loop_operation_t mailbox;                   /* doorbells from workers */
    loop_operation_t drain_operation;           /* a NOP that gives the job queue another turn */
    bool drain_gave_way;                        /* the last drain yielded to waiting completions */
};

/* ---- Creation ---- */

int control_create(control_t **result, const control_options_t *options, char *error, size_t error_size) {
    RW_ASSERT(result != NULL && options != NULL);
    RW_ASSERT(options->jwt_secret != NULL && options->jwt_secret_length <= CONFIG_SECRET_BYTES);
    *result = NULL;
    control_t *control = calloc(1, sizeof *control);
    if (control == NULL) {
        snprintf(error, error_size, "out of memory for the control thread");
        return -1;
    }
    admin_context_t *admin = &control->admin;
    admin->config = options->config;
    admin->tables = options->tables;
    admin->store = options->store;
    admin->store_thread = options->store_thread;
    admin->health = options->health;
    admin->store_producer = options->store_producer;
    admin->next_user_id = options->next_user_id;
    admin->next_key_id = options->next_key_id;
    memcpy(admin->jwt_secret, options->jwt_secret, options->jwt_secret_length);
    admin->jwt_secret_length = options->jwt_secret_length;
    admin->ring = NULL;
    admin_context_prepare(admin);
    atomic_init(&control->state, CONTROL_STATE_CREATED);
    atomic_init(&control->stop_requested, false);
    if (portal_create(&control->portal, options->worker_count, options->job_channel_capacity, options->config, error,
                      error_size) != 0 ||
        admin_api_create(&control->admin_api, admin, error, error_size) != 0) {
        control_destroy(&control);
        return -1;
    }
    *result = control;
    return 0;
}

void control_destroy(control_t **pointer) {
    RW_ASSERT(pointer != NULL);
    control_t *control = *pointer;
    if (control == NULL) return;
    RW_ASSERT(!control->thread_started);
    portal_destroy(&control->portal);
    admin_api_destroy(&control->admin_api);
    memset(control->admin.jwt_secret, 0, sizeof control->admin.jwt_secret);
    free(control);
    *pointer = NULL;
}

portal_t *control_portal(control_t *control) {
    RW_ASSERT(control != NULL && control->portal != NULL);
    return control->portal;
}

/* ---- Jobs ---- */

static void control_schedule_drain(control_t *control) {
    if (control->drain_operation.in_flight) return;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&control->loop.ring);
    if (sqe == NULL) {
        io_uring_submit(&control->loop.ring);
        sqe = io_uring_get_sqe(&control->loop.ring);
    }
    if (sqe == NULL) return; /* the tick drains instead */
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data(sqe, &control->drain_operation);
    control->drain_operation.in_flight = true;
}

/* Runs up to CONTROL_JOBS_PER_TURN jobs, CONTROL_PASSWORD_JOBS_PER_TURN of
 * them hashing. When jobs remain, a NOP brings us back after the loop has
 * looked at the admin connections. */
static void control_drain_jobs(control_t *control) {
    struct io_uring *ring = &control->loop.ring;
    if (!control->drain_gave_way && io_uring_cq_ready(ring) > 0) {
        control->drain_gave_way = true;
        control_schedule_drain(control);
        return;
    }
    control->drain_gave_way = false;
    io_uring_submit(ring);
    if (portal_drain(control->portal, &control->admin, &control->loop.ring, CONTROL_JOBS_PER_TURN,
                     CONTROL_PASSWORD_JOBS_PER_TURN)) {
        control_schedule_drain(control);
    }
}

static void control_on_mailbox(loop_operation_t *operation, int32_t result, uint32_t flags) {
    control_drain_jobs(operation->owner);
}

static void control_on_drain(loop_operation_t *operation, int32_t result, uint32_t flags) {
    control_drain_jobs(operation->owner);
}

static void control_on_tick(loop_t *loop) {
    control_t *control = (control_t *)((uint8_t *)loop - offsetof(control_t, loop));
    control->server_tick(loop);
    if (atomic_load_explicit(&control->stop_requested, memory_order_acquire)) {
        if (!loop->stopping) server_stop(control->server);
        loop->stopping = true;
        return;
    }
    control_drain_jobs(control);
}

/* ---- The thread ---- */

static void control_fail_start(control_t *control, const char *error) {
    snprintf(control->start_error, sizeof control->start_error, "admin API on %s:%u: %s",
             control->admin.config->admin_listen_host, (unsigned)control->admin.config->admin_listen_port, error);
    atomic_store_explicit(&control->state, CONTROL_STATE_FAILED, memory_order_release);
}

static void *control_thread_main(void *argument) {
    control_t *control = argument;
    char error[512];
    if (loop_init(&control->loop, 256, 64, 16 * 1024, error, sizeof error) != 0) {
        control_fail_start(control, error);
        return NULL;
    }
    control->admin.ring = &control->loop.ring;
    const config_t *config = control->admin.config;
    server_config_t server_config = {
        .host = config->admin_listen_host,
        .port = config->admin_listen_port,
        .tls = NULL,
        .thread_index = control->admin.store_producer,
    };
    admin_api_server_config(control->admin_api, &server_config);
    if (server_init(&control->server, &control->loop, &server_config, error, sizeof error) != 0) {
        control->admin.ring = NULL;
        loop_destroy(&control->loop);
        control_fail_start(control, error);
        return NULL;
    }
    control->server_tick = control->loop.on_tick;
    control->loop.on_tick = control_on_tick;
    control->mailbox = (loop_operation_t){.callback = control_on_mailbox, .owner = control};
    control->drain_operation = (loop_operation_t){.callback = control_on_drain, .owner = control};
    server_start(control->server);
    portal_bind_control(control->portal, control->loop.ring.ring_fd, &control->mailbox);
    atomic_store_explicit(&control->state, CONTROL_STATE_RUNNING, memory_order_release);
    control_drain_jobs(control);
    loop_run(&control->loop, CONTROL_TICK_MS);
    portal_bind_control(control->portal, -1, NULL);
    atomic_store_explicit(&control->state, CONTROL_STATE_STOPPED, memory_order_release);
    /* The server's pools stay mapped (the process is ending); the ring goes
     * so no doorbell can reach a thread that is gone. */
    control->admin.ring = NULL;
    loop_destroy(&control->loop);
    return NULL;
}

int control_start(control_t *control, char *error, size_t error_size) {
    RW_ASSERT(control != NULL && !control->thread_started);
    RW_ASSERT(atomic_load(&control->state) == CONTROL_STATE_CREATED);
    atomic_store(&control->state, CONTROL_STATE_STARTING);
    int status = pthread_create(&control->thread, NULL, control_thread_main, control);
    if (status != 0) {
        snprintf(error, error_size, "cannot start the control thread: %s", strerror(status));
        atomic_store(&control->state, CONTROL_STATE_FAILED);
        return -1;
    }
    control->thread_started = true;
    for (;;) {
        uint32_t state = atomic_load_explicit(&control->state, memory_order_acquire);
        if (state == CONTROL_STATE_RUNNING) return 0;
        if (state == CONTROL_STATE_FAILED) {
            pthread_join(control->thread, NULL);
            control->thread_started = false;
            snprintf(error, error_size, "%s", control->start_error);
            return -1;
        }
        usleep(1000);
    }
}

void control_stop(control_t *control) {
    if (control == NULL || !control->thread_started) return;
    atomic_store_explicit(&control->stop_requested, true, memory_order_release);
    pthread_join(control->thread, NULL);
    control->thread_started = false;
}

/* ---- First start ---- */

/* Where ringctl is, for the hint: beside this executable when it is there
 * (zig-out/bin), shown relative to the working directory when below it. */
static void control_ringctl_path(char *out, size_t capacity) {
    snprintf(out, capacity, "ringctl");
    char self[PATH_MAX];
    ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
    if (length <= 0) return;
    self[length] = '\0';
    char *slash = strrchr(self, '/');
    if (slash == NULL || (size_t)(slash - self) + sizeof "/ringctl" > sizeof self) return;
    memcpy(slash, "/ringctl", sizeof "/ringctl");
    if (access(self, X_OK) != 0) return;
    char cwd[PATH_MAX];
    const char *shown = self;
    if (getcwd(cwd, sizeof cwd) != NULL) {
        size_t cwd_length = strlen(cwd);
        if (strncmp(self, cwd, cwd_length) == 0 && self[cwd_length] == '/') shown = self + cwd_length + 1;
    }
    snprintf(out, capacity, "%s", shown);
}

int control_bootstrap(control_t *control, char *error, size_t error_size) {
    RW_ASSERT(control != NULL && !control->thread_started);
    if (atomic_load_explicit(&control->admin.tables->user_count, memory_order_acquire) > 0) return 0;
    static const char email[] = "admin@ringway.local";
    admin_user_request_t request = {
        .email = email,
        .password_hash = "",
        .balance_micros = control->admin.config->free_grant_micros,
        .audit_admin = "system",
    };
    uint64_t user_id = 0;
    admin_failure_t failure;
    if (!admin_user_create(&control->admin, &request, &user_id, &failure)) {
        snprintf(error, error_size, "cannot create the admin account on first start: %s", failure.message);
        return -1;
    }
    char balance[TEXT_MONEY_BYTES];
    text_format_money(control->admin.config->free_grant_micros, balance);
    char ringctl[PATH_MAX];
    control_ringctl_path(ringctl, sizeof ringctl);
    fprintf(stderr,
            "ringway: first start: created the admin account %s (user %llu, balance %s)\n"
            "ringway: make its first API key with:\n"
            "ringway:   %s --config %s keys create --user %llu\n",
            email, (unsigned long long)user_id, balance, ringctl, control->admin.config->source_path,
            (unsigned long long)user_id);
    if (!control->admin.admin_enabled) {
        fprintf(stderr, "ringway: (the admin API is disabled until [auth] admin_token is set in %s)\n",
                control->admin.config->source_path);
    }
    return 0;
}
