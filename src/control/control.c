/* The control thread: its life cycle, the job channels relay workers use,
 * the doorbells in both directions, blocking calls to the store thread, and
 * the first-start bootstrap (see admin.h for the contracts and the start-up
 * order).
 *
 * Jobs: each worker has one SPSC channel of control_job_t towards this
 * thread and one of control_reply_t back. A worker that finds its job
 * channel empty before a push rings our doorbell (a MSG_RING CQE whose
 * user_data is control->mailbox); we answer into its reply channel and ring
 * its mailbox the same way. We take a job only when its reply is sure to
 * fit, so replies are never dropped; a worker that is slow to read them
 * only delays its own jobs. The tick (CONTROL_TICK_MS) drains too, which
 * covers jobs pushed before the thread ran and workers without a ring. */
#include "admin-internal.h"

#include "ringway/ledger.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The control state whose thread this is (NULL on every other thread). */
static _Thread_local control_t *control_current;

/* ---- Creation ---- */

int control_create(control_t **result, const control_options_t *options, char *error, size_t error_size) {
    RW_ASSERT(result != NULL && options != NULL);
    RW_ASSERT(options->config != NULL && options->tables != NULL && options->store != NULL &&
              options->store_thread != NULL);
    RW_ASSERT(options->worker_count >= 1 && options->worker_count <= CONTROL_WORKERS_MAX);
    RW_ASSERT(options->store_producer < options->store_thread->producer_count);
    RW_ASSERT(options->jwt_secret != NULL && options->jwt_secret_length >= JWT_SECRET_BYTES_MIN &&
              options->jwt_secret_length <= CONFIG_SECRET_BYTES);
    RW_ASSERT(options->next_user_id >= 1 && options->next_key_id >= 1);
    uint32_t capacity = options->job_channel_capacity != 0 ? options->job_channel_capacity : 256;
    RW_ASSERT(capacity >= 2 && (capacity & (capacity - 1)) == 0);
    *result = NULL;

    control_t *control = calloc(1, sizeof *control);
    if (control == NULL) {
        snprintf(error, error_size, "out of memory for the control thread");
        return -1;
    }
    control->config = options->config;
    control->tables = options->tables;
    control->store = options->store;
    control->store_thread = options->store_thread;
    control->store_producer = options->store_producer;
    control->worker_count = options->worker_count;
    control->job_channel_capacity = capacity;
    control->next_user_id = options->next_user_id;
    control->next_key_id = options->next_key_id;
    memcpy(control->jwt_secret, options->jwt_secret, options->jwt_secret_length);
    control->jwt_secret_length = options->jwt_secret_length;
    atomic_init(&control->state, CONTROL_STATE_CREATED);
    atomic_init(&control->stop_requested, false);
    atomic_init(&control->ring_fd, -1);
    admin_prepare(control);

    size_t bytes = (size_t)options->worker_count * sizeof(control_worker_t);
    bytes = (bytes + CHANNEL_CACHE_LINE_BYTES - 1) / CHANNEL_CACHE_LINE_BYTES * CHANNEL_CACHE_LINE_BYTES;
    control->workers = aligned_alloc(CHANNEL_CACHE_LINE_BYTES, bytes);
    control->response_memory = mmap(NULL, (size_t)ADMIN_EXCHANGES_MAX * ADMIN_RESPONSE_BYTES, PROT_READ | PROT_WRITE,
                                    MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    if (control->response_memory == MAP_FAILED) control->response_memory = NULL;
    if (control->workers == NULL || control->response_memory == NULL) {
        snprintf(error, error_size, "out of memory for the control thread's channels and buffers");
        control_destroy(&control);
        return -1;
    }
    memset(control->workers, 0, bytes);
    for (uint32_t index = 0; index < options->worker_count; index++) {
        control_worker_t *worker = &control->workers[index];
        atomic_init(&worker->ring_fd, -1);
        atomic_init(&worker->mailbox, NULL);
        if (channel_init(&worker->jobs, capacity, sizeof(control_job_t)) != 0 ||
            channel_init(&worker->replies, capacity, sizeof(control_reply_t)) != 0) {
            snprintf(error, error_size, "out of memory for the job channels (%u workers x %u jobs)",
                     options->worker_count, capacity);
            control_destroy(&control);
            return -1;
        }
    }
    for (uint32_t index = 0; index < ADMIN_EXCHANGES_MAX; index++) {
        control->exchanges[index].response = control->response_memory + (size_t)index * ADMIN_RESPONSE_BYTES;
    }
    *result = control;
    return 0;
}

void control_destroy(control_t **pointer) {
    RW_ASSERT(pointer != NULL);
    control_t *control = *pointer;
    if (control == NULL) return;
    RW_ASSERT(!control->thread_started);
    if (control->workers != NULL) {
        for (uint32_t index = 0; index < control->worker_count; index++) {
            channel_destroy(&control->workers[index].jobs);
            channel_destroy(&control->workers[index].replies);
        }
        free(control->workers);
        control->workers = NULL;
    }
    if (control->response_memory != NULL) {
        munmap(control->response_memory, (size_t)ADMIN_EXCHANGES_MAX * ADMIN_RESPONSE_BYTES);
        control->response_memory = NULL;
    }
    memset(control->jwt_secret, 0, sizeof control->jwt_secret);
    free(control);
    *pointer = NULL;
}

void control_bind_worker(control_t *control, uint32_t worker, int worker_ring_fd, loop_operation_t *worker_mailbox) {
    RW_ASSERT(control != NULL && worker < control->worker_count);
    RW_ASSERT(worker_ring_fd >= 0 && worker_mailbox != NULL);
    control_worker_t *slot = &control->workers[worker];
    /* The mailbox first: a reader that sees the fd sees its mailbox. */
    atomic_store_explicit(&slot->mailbox, worker_mailbox, memory_order_release);
    atomic_store_explicit(&slot->ring_fd, worker_ring_fd, memory_order_release);
}

/* ---- The workers' side ---- */

bool control_submit(control_t *control, uint32_t worker, const control_job_t *job, struct io_uring *worker_ring) {
    RW_ASSERT(control != NULL && job != NULL && worker < control->worker_count);
    RW_ASSERT(job->kind >= CONTROL_JOB_REGISTER && job->kind <= CONTROL_JOB_USAGE_LIST);
    RW_ASSERT(job->worker_index == worker);
    RW_ASSERT(job->reply != NULL || job->reply_capacity == 0);
    bool was_empty = false;
    if (!channel_push(&control->workers[worker].jobs, job, &was_empty)) return false;
    if (!was_empty || worker_ring == NULL) return true;
    /* channel_push published the job behind a full fence; the control
     * thread publishes its ring fd (seq_cst) before its first drain, so
     * either it sees the job in that drain or we see the fd here. */
    int ring_fd = atomic_load_explicit(&control->ring_fd, memory_order_seq_cst);
    if (ring_fd >= 0) channel_ring_doorbell(worker_ring, ring_fd, &control->mailbox);
    return true;
}

bool control_reply_pop(control_t *control, uint32_t worker, control_reply_t *reply) {
    RW_ASSERT(control != NULL && reply != NULL && worker < control->worker_count);
    return channel_pop(&control->workers[worker].replies, reply);
}

/* ---- The store ---- */

int control_store_call(control_t *control, const store_message_t *message, uint32_t flags, store_ack_t *ack) {
    store_message_t *copy = &control->message;
    if (copy != message) *copy = *message;
    copy->flags = flags;
    copy->token = ++control->store_token;
    /* Only the control thread itself may submit on its ring; the bootstrap
     * runs before it exists and lets the store thread find the message
     * within one sync interval. */
    bool on_thread = control->loop_ready && control_current == control;
    int status = store_thread_call(control->store_thread, control->store_producer, copy,
                                   on_thread ? &control->loop.ring : NULL, CONTROL_STORE_TIMEOUT_MS, ack);
    if (status != 0) return status;
    return ack->status;
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

/* Runs up to CONTROL_JOBS_PER_TURN jobs, one per worker per round so one
 * busy worker cannot starve the others. When jobs remain, a NOP brings us
 * back after the loop has looked at the admin connections. */
static void control_drain_jobs(control_t *control) {
    uint32_t done = 0;
    bool more = true;
    while (more && done < CONTROL_JOBS_PER_TURN) {
        more = false;
        for (uint32_t turn = 0; turn < control->worker_count && done < CONTROL_JOBS_PER_TURN; turn++) {
            uint32_t index = (control->next_worker + turn) % control->worker_count;
            control_worker_t *worker = &control->workers[index];
            if (channel_full(&worker->replies)) continue;
            control_job_t job;
            if (!channel_pop(&worker->jobs, &job)) continue;
            more = true;
            done++;
            control_reply_t reply = {.slot = job.slot};
            reply.status = control_job_run(control, &job, &reply.length);
            RW_ASSERT(reply.length <= job.reply_capacity);
            bool was_empty = false;
            bool pushed = channel_push(&worker->replies, &reply, &was_empty);
            RW_ASSERT(pushed);
            if (!was_empty) continue;
            int ring_fd = atomic_load_explicit(&worker->ring_fd, memory_order_acquire);
            if (ring_fd < 0) continue;
            loop_operation_t *mailbox = atomic_load_explicit(&worker->mailbox, memory_order_acquire);
            channel_ring_doorbell(&control->loop.ring, ring_fd, mailbox);
        }
        control->next_worker = (control->next_worker + 1) % control->worker_count;
    }
    if (more) control_schedule_drain(control);
}

static void control_on_mailbox(loop_operation_t *operation, int32_t result, uint32_t flags) {
    control_drain_jobs(operation->owner);
}

static void control_on_drain(loop_operation_t *operation, int32_t result, uint32_t flags) {
    control_drain_jobs(operation->owner);
}

static void control_on_tick(loop_t *loop) {
    control_t *control = server_handler_context(loop->owner);
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
             control->config->admin_listen_host, (unsigned)control->config->admin_listen_port, error);
    atomic_store_explicit(&control->state, CONTROL_STATE_FAILED, memory_order_release);
}

static void *control_thread_main(void *argument) {
    control_t *control = argument;
    control_current = control;
    char error[512];
    if (loop_init(&control->loop, 256, 64, 16 * 1024, error, sizeof error) != 0) {
        control_fail_start(control, error);
        return NULL;
    }
    control->loop_ready = true;
    const config_t *config = control->config;
    server_config_t server_config = {
        .host = config->admin_listen_host,
        .port = config->admin_listen_port,
        .connections_max = ADMIN_CONNECTIONS_MAX,
        .exchanges_max = ADMIN_EXCHANGES_MAX,
        .request_buffer_bytes = ADMIN_REQUEST_BUFFER_BYTES,
        .large_bodies_max = 1,
        .body_bytes_max = ADMIN_BODY_BYTES_MAX,
        .head_bytes_max = ADMIN_HEAD_BYTES_MAX,
        .header_timeout_ms = 10000,
        .body_timeout_ms = 30000,
        .keepalive_timeout_ms = 60000,
        .tls = NULL,
        .handlers = {.on_request = admin_on_request, .on_sent = admin_on_sent, .on_abort = admin_on_abort},
        .handler_context = control,
        .thread_index = control->store_producer,
    };
    if (server_init(&control->server, &control->loop, &server_config, error, sizeof error) != 0) {
        loop_destroy(&control->loop);
        control->loop_ready = false;
        control_fail_start(control, error);
        return NULL;
    }
    control->server_tick = control->loop.on_tick;
    control->loop.on_tick = control_on_tick;
    control->mailbox = (loop_operation_t){.callback = control_on_mailbox, .owner = control};
    control->drain_operation = (loop_operation_t){.callback = control_on_drain, .owner = control};
    server_start(control->server);
    atomic_store_explicit(&control->ring_fd, control->loop.ring.ring_fd, memory_order_seq_cst);
    atomic_store_explicit(&control->state, CONTROL_STATE_RUNNING, memory_order_release);
    control_drain_jobs(control);
    loop_run(&control->loop, CONTROL_TICK_MS);
    atomic_store_explicit(&control->ring_fd, -1, memory_order_seq_cst);
    atomic_store_explicit(&control->state, CONTROL_STATE_STOPPED, memory_order_release);
    /* The server's pools stay mapped (the process is ending); the ring goes
     * so no doorbell can reach a thread that is gone. */
    control->loop_ready = false;
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
    if (atomic_load_explicit(&control->tables->user_count, memory_order_acquire) > 0) return 0;
    static const char email[] = "admin@ringway.local";
    admin_user_request_t request = {
        .email = email,
        .password_hash = "",
        .balance_micros = control->config->free_grant_micros,
        .audit_admin = "system",
    };
    uint64_t user_id = 0;
    admin_failure_t failure;
    if (!admin_user_create(control, &request, &user_id, &failure)) {
        snprintf(error, error_size, "cannot create the admin account on first start: %s", failure.message);
        return -1;
    }
    char balance[TEXT_MONEY_BYTES];
    text_format_money(control->config->free_grant_micros, balance);
    char ringctl[PATH_MAX];
    control_ringctl_path(ringctl, sizeof ringctl);
    fprintf(stderr,
            "ringway: first start: created the admin account %s (user %llu, balance %s)\n"
            "ringway: make its first API key with:\n"
            "ringway:   %s --config %s keys create --user %llu\n",
            email, (unsigned long long)user_id, balance, ringctl, control->config->source_path,
            (unsigned long long)user_id);
    if (!control->admin_enabled) {
        fprintf(stderr, "ringway: (the admin API is disabled until [auth] admin_token is set in %s)\n",
                control->config->source_path);
    }
    return 0;
}

/* ---- Loading keys ---- */

int admin_key_fields_from_record(const config_t *config, const store_key_record_t *record, account_key_t *fields) {
    RW_ASSERT(config != NULL && record != NULL && fields != NULL);
    memset(fields, 0, sizeof *fields);
    if (record->user_id == 0 || record->user_id > UINT32_MAX || record->id == 0) return -1;
    if (record->spend_cap_micros < -1 || record->spent_micros < 0) return -1;
    memcpy(fields->hash, record->hash, sizeof fields->hash);
    fields->id = record->id;
    fields->user_index = (uint32_t)(record->user_id - 1);
    snprintf(fields->name, sizeof fields->name, "%s", record->name);
    snprintf(fields->prefix, sizeof fields->prefix, "%s", record->prefix);
    snprintf(fields->last4, sizeof fields->last4, "%s", record->last4);
    atomic_init(&fields->status, record->status == ACCOUNT_KEY_DISABLED ? ACCOUNT_KEY_DISABLED : ACCOUNT_KEY_ACTIVE);
    atomic_init(&fields->expires_at_ms, record->expires_at_ms);
    atomic_init(&fields->tier, record->tier);
    atomic_init(&fields->spend_cap_micros, record->spend_cap_micros);
    atomic_init(&fields->spend_available_micros,
                ledger_key_spend_available_initial(record->spend_cap_micros, record->spent_micros));
    atomic_init(&fields->all_models, record->all_models ? 1u : 0u);
    uint64_t bits[ACCOUNT_MODEL_WORDS] = {0};
    if (!record->all_models) {
        const char *name = record->models;
        while (*name != '\0') {
            const char *end = strchr(name, ',');
            size_t length = end != NULL ? (size_t)(end - name) : strlen(name);
            const config_model_t *model = config_find_model(config, (const uint8_t *)name, length);
            if (model != NULL) {
                size_t index = (size_t)(model - config->models);
                if (index < ACCOUNT_MODEL_WORDS * 64) bits[index / 64] |= (uint64_t)1 << (index % 64);
            }
            if (end == NULL) break;
            name = end + 1;
        }
    }
    for (uint32_t word = 0; word < ACCOUNT_MODEL_WORDS; word++) atomic_init(&fields->model_bits[word], bits[word]);
    return 0;
}
