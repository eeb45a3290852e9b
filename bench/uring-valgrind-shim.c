/* uring-valgrind-shim: LD_PRELOADed into the relay under valgrind (bench
 * scenario 6 only) so that a multi-threaded io_uring program can run there.
 *
 * Valgrind runs one guest thread at a time under its big lock, and valgrind
 * 3.19 does not know that io_uring_enter can block: a thread waiting for
 * completions inside io_uring_enter keeps the lock, and every other thread
 * (the relay's store and control threads, which the worker waits for) stalls
 * until valgrind's time slice ends, which an idle waiter never reaches.
 *
 * The shim replaces liburing's waiting entry points with: submit (without
 * waiting), then wait in poll(2) on the ring's descriptor, which valgrind
 * knows to be a blocking call and during which it lets the other threads
 * run, then flush pending completion work with a non-blocking enter. Poll
 * wakes when completions are posted; a bounded timeout (SHIM_POLL_MS) makes
 * sure deferred completion work is never waited on forever. The semantics
 * the relay relies on are kept: the calls return once at least the wanted
 * number of completions are ready, or on a timeout for the _timeout forms.
 *
 * Not part of the relay: bench/run.py builds nothing into ringway itself and
 * uses this only for the callgrind runs. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include <dlfcn.h>
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

enum { SHIM_POLL_MS = 5 };

typedef int (*shim_submit_t)(struct io_uring *ring);
typedef int (*shim_get_events_t)(struct io_uring *ring);

static shim_submit_t shim_real_submit(void) {
    static shim_submit_t real;
    if (real == NULL) real = (shim_submit_t)dlsym(RTLD_NEXT, "io_uring_submit");
    return real;
}

static shim_get_events_t shim_real_get_events(void) {
    static shim_get_events_t real;
    if (real == NULL) real = (shim_get_events_t)dlsym(RTLD_NEXT, "io_uring_get_events");
    return real;
}

static long long shim_now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* The next completion without waiting. Not io_uring_peek_cqe: that inline
 * falls back to __io_uring_get_cqe, which this file replaces. */
static bool shim_peek(struct io_uring *ring, struct io_uring_cqe **cqe_ptr) {
    return __io_uring_peek_cqe(ring, cqe_ptr, NULL) == 0 && *cqe_ptr != NULL;
}

/* Waits until `wanted` completions are ready or `deadline_ms` (a
 * CLOCK_MONOTONIC time, or -1 for none) passes. Returns 0 or -ETIME. */
static int shim_wait(struct io_uring *ring, unsigned wanted, long long deadline_ms) {
    for (;;) {
        if (io_uring_cq_ready(ring) >= wanted) return 0;
        shim_real_get_events()(ring); /* runs deferred completion work, never blocks */
        if (io_uring_cq_ready(ring) >= wanted) return 0;
        int wait_ms = SHIM_POLL_MS;
        if (deadline_ms >= 0) {
            long long left = deadline_ms - shim_now_ms();
            if (left <= 0) return -ETIME;
            if (left < wait_ms) wait_ms = (int)left;
        }
        struct pollfd descriptor = {.fd = ring->ring_fd, .events = POLLIN};
        poll(&descriptor, 1, wait_ms);
    }
}

int io_uring_submit_and_wait(struct io_uring *ring, unsigned wait_nr) {
    int submitted = shim_real_submit()(ring);
    if (submitted < 0 || wait_nr == 0) return submitted;
    shim_wait(ring, wait_nr, -1);
    return submitted;
}

int io_uring_submit_and_wait_timeout(struct io_uring *ring, struct io_uring_cqe **cqe_ptr, unsigned wait_nr,
                                     struct __kernel_timespec *ts, sigset_t *sigmask) {
    (void)sigmask;
    int submitted = shim_real_submit()(ring);
    if (submitted < 0) return submitted;
    long long deadline = ts == NULL ? -1 : shim_now_ms() + ts->tv_sec * 1000 + ts->tv_nsec / 1000000;
    int status = shim_wait(ring, wait_nr ? wait_nr : 1, deadline);
    if (shim_peek(ring, cqe_ptr)) return submitted;
    return status ? status : -EAGAIN;
}

int io_uring_wait_cqes(struct io_uring *ring, struct io_uring_cqe **cqe_ptr, unsigned wait_nr,
                       struct __kernel_timespec *ts, sigset_t *sigmask) {
    (void)sigmask;
    shim_real_submit()(ring);
    long long deadline = ts == NULL ? -1 : shim_now_ms() + ts->tv_sec * 1000 + ts->tv_nsec / 1000000;
    int status = shim_wait(ring, wait_nr ? wait_nr : 1, deadline);
    if (shim_peek(ring, cqe_ptr)) return 0;
    return status ? status : -EAGAIN;
}

int io_uring_wait_cqe_timeout(struct io_uring *ring, struct io_uring_cqe **cqe_ptr, struct __kernel_timespec *ts) {
    return io_uring_wait_cqes(ring, cqe_ptr, 1, ts, NULL);
}

/* What liburing's inline io_uring_wait_cqe / io_uring_wait_cqe_nr call. */
int __io_uring_get_cqe(struct io_uring *ring, struct io_uring_cqe **cqe_ptr, unsigned submit, unsigned wait_nr,
                       sigset_t *sigmask) {
    (void)sigmask;
    if (submit > 0) shim_real_submit()(ring);
    if (wait_nr > 0) shim_wait(ring, wait_nr, -1);
    else shim_real_get_events()(ring);
    return shim_peek(ring, cqe_ptr) ? 0 : -EAGAIN;
}
