/* The portal's channels: each relay worker has one SPSC channel of
 * portal_job_t towards the control thread and one of portal_reply_t back
 * (see portal.h for the contracts). A worker that finds its job channel
 * empty before a push rings the control thread's doorbell (a MSG_RING CQE
 * whose user_data is its mailbox); the control thread answers into the
 * worker's reply channel and rings the worker's mailbox the same way. The
 * control thread's tick drains too, which covers jobs pushed before it ran
 * and workers without a ring.
 *
 * Password jobs (registration, login) are also counted in one atomic over
 * all workers, incremented by the submitting worker and decremented by the
 * control thread once the job ran: the bound (password_jobs_max) on the
 * Argon2id work that can wait for the control thread, so a login flood is
 * refused with 503 in the worker instead of becoming a queue of seconds. */
#include "portal-internal.h"

#include "ringway/auth.h"
#include "ringway/channel.h"
#include "ringway/guard.h"
#include "ringway/portal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One relay worker's side of the job protocol. The worker pushes jobs and
 * pops replies; the control thread pops jobs and pushes replies. */
typedef struct portal_worker {
    channel_t jobs;                             /* portal_job_t */
    channel_t replies;                          /* portal_reply_t */
    _Atomic int ring_fd;                        /* -1: unbound, the worker polls */
    _Atomic(loop_operation_t *) mailbox;
} portal_worker_t;

struct portal {
    uint32_t worker_count;
    portal_worker_t *workers;                   /* [worker_count], cache-line aligned */
    _Atomic int control_ring_fd;                /* -1 while the control thread does not run */
    _Atomic(loop_operation_t *) control_mailbox;
    uint32_t next_worker;                       /* round-robin start of the next drain (control thread) */
    uint32_t password_jobs_max;
    _Atomic uint32_t password_jobs_queued;      /* submitted and not yet run */
    guard_t *guard;                             /* the control thread's account guards */
};

/* The guard tables' size: tracked_clients_max rounded up to a power of
 * two. */
static uint32_t portal_guard_entries(const config_t *config) {
    uint32_t entries = GUARD_PROBE_SLOTS;
    while (entries < config->tracked_clients_max) entries *= 2;
    return entries;
}

int portal_create(portal_t **result, uint32_t worker_count, uint32_t job_channel_capacity, const config_t *config,
                  char *error, size_t error_size) {
    RW_ASSERT(result != NULL && config != NULL);
    RW_ASSERT(config->password_jobs_max >= 1);
    RW_ASSERT(worker_count >= 1 && worker_count <= PORTAL_WORKERS_MAX);
    uint32_t capacity = job_channel_capacity != 0 ? job_channel_capacity : PORTAL_JOB_CHANNEL_CAPACITY_DEFAULT;
    RW_ASSERT(capacity >= 2 && (capacity & (capacity - 1)) == 0);
    *result = NULL;
    portal_t *portal = calloc(1, sizeof *portal);
    if (portal == NULL) {
        snprintf(error, error_size, "out of memory for the portal's channels");
        return -1;
    }
    portal->worker_count = worker_count;
    portal->password_jobs_max = config->password_jobs_max;
    atomic_init(&portal->password_jobs_queued, 0);
    atomic_init(&portal->control_ring_fd, -1);
    atomic_init(&portal->control_mailbox, NULL);
    size_t bytes = (size_t)worker_count * sizeof(portal_worker_t);
    bytes = (bytes + CHANNEL_CACHE_LINE_BYTES - 1) / CHANNEL_CACHE_LINE_BYTES * CHANNEL_CACHE_LINE_BYTES;
    portal->workers = aligned_alloc(CHANNEL_CACHE_LINE_BYTES, bytes);
    if (portal->workers == NULL) {
        snprintf(error, error_size, "out of memory for the portal's channels");
        portal_destroy(&portal);
        return -1;
    }
    memset(portal->workers, 0, bytes);
    guard_limits_t limits = {
        .registrations_per_ip_per_hour = config->registrations_per_ip_per_hour,
        .registrations_per_ip_per_day = config->registrations_per_ip_per_day,
        .login_failures_per_ip_per_minute = config->login_failures_per_ip_per_minute,
        .login_failures_before_backoff = config->login_failures_before_backoff,
        .login_backoff_base_s = config->login_backoff_base_s,
        .login_backoff_max_s = config->login_backoff_max_s,
    };
    uint64_t seed = 0;
    if (!auth_random_bytes((uint8_t *)&seed, sizeof seed) ||
        guard_create(&portal->guard, &limits, portal_guard_entries(config), seed) != 0) {
        snprintf(error, error_size, "out of memory for the account guards (%u entries per table)",
                 (unsigned)portal_guard_entries(config));
        portal_destroy(&portal);
        return -1;
    }
    for (uint32_t index = 0; index < worker_count; index++) {
        portal_worker_t *worker = &portal->workers[index];
        atomic_init(&worker->ring_fd, -1);
        atomic_init(&worker->mailbox, NULL);
        if (channel_init(&worker->jobs, capacity, sizeof(portal_job_t)) != 0 ||
            channel_init(&worker->replies, capacity, sizeof(portal_reply_t)) != 0) {
            snprintf(error, error_size, "out of memory for the job channels (%u workers x %u jobs)", worker_count,
                     capacity);
            portal_destroy(&portal);
            return -1;
        }
    }
    *result = portal;
    return 0;
}

void portal_destroy(portal_t **pointer) {
    RW_ASSERT(pointer != NULL);
    portal_t *portal = *pointer;
    if (portal == NULL) return;
    if (portal->workers != NULL) {
        for (uint32_t index = 0; index < portal->worker_count; index++) {
            channel_destroy(&portal->workers[index].jobs);
            channel_destroy(&portal->workers[index].replies);
        }
        free(portal->workers);
        portal->workers = NULL;
    }
    guard_destroy(&portal->guard);
    free(portal);
    *pointer = NULL;
}

void portal_bind_worker(portal_t *portal, uint32_t worker, int worker_ring_fd, loop_operation_t *worker_mailbox) {
    RW_ASSERT(portal != NULL && worker < portal->worker_count);
    RW_ASSERT(worker_ring_fd >= 0 && worker_mailbox != NULL);
    portal_worker_t *slot = &portal->workers[worker];
    /* The mailbox first: a reader that sees the fd sees its mailbox. */
    atomic_store_explicit(&slot->mailbox, worker_mailbox, memory_order_release);
    atomic_store_explicit(&slot->ring_fd, worker_ring_fd, memory_order_release);
}

void portal_bind_control(portal_t *portal, int control_ring_fd, loop_operation_t *control_mailbox) {
    RW_ASSERT(portal != NULL);
    RW_ASSERT(control_ring_fd < 0 || control_mailbox != NULL);
    if (control_ring_fd >= 0) atomic_store_explicit(&portal->control_mailbox, control_mailbox, memory_order_release);
    atomic_store_explicit(&portal->control_ring_fd, control_ring_fd < 0 ? -1 : control_ring_fd, memory_order_seq_cst);
}

/* ---- The workers' side ---- */

portal_submit_result_t portal_submit(portal_t *portal, uint32_t worker, const portal_job_t *job,
                                     struct io_uring *worker_ring) {
    RW_ASSERT(portal != NULL && job != NULL && worker < portal->worker_count);
    RW_ASSERT(job->kind >= PORTAL_JOB_REGISTER && job->kind <= PORTAL_JOB_USAGE_LIST);
    RW_ASSERT(job->worker_index == worker);
    RW_ASSERT(job->reply != NULL || job->reply_capacity == 0);
    bool password = portal_job_hashes_password(job->kind);
    if (password) {
        /* Take a place first: the control thread gives it back after the
         * run, so queued never exceeds the bound however many workers race. */
        uint32_t before = atomic_fetch_add_explicit(&portal->password_jobs_queued, 1, memory_order_relaxed);
        if (before >= portal->password_jobs_max) {
            atomic_fetch_sub_explicit(&portal->password_jobs_queued, 1, memory_order_relaxed);
            return PORTAL_PASSWORD_BUSY;
        }
    }
    bool was_empty = false;
    if (!channel_push(&portal->workers[worker].jobs, job, &was_empty)) {
        if (password) atomic_fetch_sub_explicit(&portal->password_jobs_queued, 1, memory_order_relaxed);
        return PORTAL_CHANNEL_FULL;
    }
    if (!was_empty || worker_ring == NULL) return PORTAL_SUBMITTED;
    /* channel_push published the job behind a full fence; the control
     * thread publishes its ring fd (seq_cst) before its first drain, so
     * either it sees the job in that drain or we see the fd here. */
    int ring_fd = atomic_load_explicit(&portal->control_ring_fd, memory_order_seq_cst);
    if (ring_fd < 0) return PORTAL_SUBMITTED;
    loop_operation_t *mailbox = atomic_load_explicit(&portal->control_mailbox, memory_order_acquire);
    channel_ring_doorbell(worker_ring, ring_fd, mailbox);
    return PORTAL_SUBMITTED;
}

bool portal_reply_pop(portal_t *portal, uint32_t worker, portal_reply_t *reply) {
    RW_ASSERT(portal != NULL && reply != NULL && worker < portal->worker_count);
    return channel_pop(&portal->workers[worker].replies, reply);
}

/* ---- The control thread's side ---- */

bool portal_drain(portal_t *portal, admin_context_t *context, struct io_uring *control_ring, uint32_t jobs_max,
                  uint32_t password_jobs_max) {
    RW_ASSERT(portal != NULL && context != NULL && control_ring != NULL && jobs_max >= 1);
    RW_ASSERT(password_jobs_max >= 1);
    uint32_t done = 0;
    uint32_t password_done = 0;
    bool more = true;
    bool held_back = false; /* a password job waits for the next call */
    while (more && done < jobs_max) {
        more = false;
        for (uint32_t turn = 0; turn < portal->worker_count && done < jobs_max; turn++) {
            uint32_t index = (portal->next_worker + turn) % portal->worker_count;
            portal_worker_t *worker = &portal->workers[index];
            if (channel_full(&worker->replies)) continue;
            if (password_done == password_jobs_max) {
                /* FIFO per worker: its password job cannot be skipped, only
                 * left for the next call. */
                const portal_job_t *next = channel_peek(&worker->jobs);
                if (next != NULL && portal_job_hashes_password(next->kind)) {
                    held_back = true;
                    continue;
                }
            }
            portal_job_t job;
            if (!channel_pop(&worker->jobs, &job)) continue;
            more = true;
            done++;
            bool password = portal_job_hashes_password(job.kind);
            portal_reply_t reply = {.slot = job.slot};
            reply.status = portal_job_run(context, portal->guard, &job, &reply.length, &reply.retry_after_s);
            RW_ASSERT(reply.length <= job.reply_capacity);
            if (password) {
                password_done++;
                uint32_t before = atomic_fetch_sub_explicit(&portal->password_jobs_queued, 1, memory_order_relaxed);
                RW_ASSERT(before >= 1 && before <= portal->password_jobs_max);
            }
            bool was_empty = false;
            bool pushed = channel_push(&worker->replies, &reply, &was_empty);
            RW_ASSERT(pushed);
            if (!was_empty) continue;
            int ring_fd = atomic_load_explicit(&worker->ring_fd, memory_order_acquire);
            if (ring_fd < 0) continue;
            loop_operation_t *mailbox = atomic_load_explicit(&worker->mailbox, memory_order_acquire);
            channel_ring_doorbell(control_ring, ring_fd, mailbox);
        }
        portal->next_worker = (portal->next_worker + 1) % portal->worker_count;
    }
    return more || held_back;
}
