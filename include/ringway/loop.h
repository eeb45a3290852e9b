/* The per-thread event loop: one io_uring, one provided-buffer ring for
 * multishot receives, fixed-duration timer lists, and the completion shape
 * every module uses. A loop belongs to exactly one thread; nothing here is
 * shared or locked. The loop knows nothing of HTTP, TLS or policy. */
#ifndef RINGWAY_LOOP_H
#define RINGWAY_LOOP_H

#include "ringway/common.h"

#include <liburing.h>
#include <sys/socket.h>
#include <sys/uio.h>

typedef struct loop loop_t;
typedef struct loop_operation loop_operation_t;

/* Called once per completion. `result` is the CQE's res (negative errno on
 * failure); `flags` the CQE's flags (IORING_CQE_F_MORE while a multishot
 * operation stays armed, IORING_CQE_F_BUFFER with a provided buffer). */
typedef void (*loop_callback_t)(loop_operation_t *operation, int32_t result, uint32_t flags);

/* One pending operation: embedded in its owner (a connection), its address
 * is the SQE's user_data. `in_flight` is true from submission until the
 * completion that ends it (the last one of a multishot), so an owner can
 * tell when no completion can reach it any more and it may be reused. */
struct loop_operation {
    loop_callback_t callback;
    void *owner;
    bool in_flight;
};

typedef struct loop_timer loop_timer_t;
typedef struct loop_timer_list loop_timer_list_t;
typedef void (*loop_timer_callback_t)(loop_timer_t *timer);

/* A timer sits in at most one list. Every timer of a list has the list's
 * duration, so appending at the tail keeps the list sorted by deadline and
 * expiry only looks at heads: O(1) per start, stop and expiry. */
struct loop_timer {
    loop_timer_t *previous;
    loop_timer_t *next;
    loop_timer_list_t *list;
    uint64_t deadline_ms;
    loop_timer_callback_t callback;
    void *owner;
};

struct loop_timer_list {
    loop_timer_t sentinel;
    uint64_t duration_ms;
};

/* Timer lists one loop holds: a relay worker's are 4 per upstream pool (64
 * upstreams at most), 4 of its server and its own few; worker.c checks the
 * sum at compile time. */
enum { LOOP_TIMER_LISTS_MAX = 288 };

struct loop {
    struct io_uring ring;
    struct io_uring_buf_ring *buffer_ring;
    uint8_t *buffer_memory;
    uint32_t buffer_count;
    uint32_t buffer_bytes;
    uint16_t buffer_group;
    uint32_t buffers_returned_pending;
    uint64_t now_ms;
    bool stopping;
    loop_operation_t tick_operation;
    struct __kernel_timespec tick_interval;
    loop_timer_list_t *timer_lists[LOOP_TIMER_LISTS_MAX];
    uint32_t timer_list_count;
    void (*on_tick)(loop_t *loop);
    void *owner;
};

/* Creates the ring (`ring_entries` SQEs) and `buffer_count` provided buffers
 * of `buffer_bytes` each (buffer_count a power of two, at most 32768).
 * Returns 0, or a negative errno with `error` filled. */
int loop_init(loop_t *loop, uint32_t ring_entries, uint32_t buffer_count, uint32_t buffer_bytes,
              char *error, size_t error_size);
void loop_destroy(loop_t *loop);

/* Runs until loop->stopping is set (by a callback or on_tick) and no more
 * completions are needed by the caller. Reaps completions in batches, then
 * runs callbacks; expires timers every tick (tick_ms). */
void loop_run(loop_t *loop, uint32_t tick_ms);

/* Monotonic milliseconds, cached per loop iteration. */
uint64_t loop_now_ms(const loop_t *loop);
uint64_t loop_clock_ms(void);

/* Submission helpers. Each marks `operation` in flight; when the SQ is full
 * they submit what is queued and retry, so an operation is never dropped. */
void loop_accept_multishot(loop_t *loop, loop_operation_t *operation, int listen_fd);
void loop_recv_multishot(loop_t *loop, loop_operation_t *operation, int fd);
void loop_recv(loop_t *loop, loop_operation_t *operation, int fd, void *buffer, size_t length);
void loop_send(loop_t *loop, loop_operation_t *operation, int fd, const void *buffer, size_t length);
void loop_sendmsg(loop_t *loop, loop_operation_t *operation, int fd, const struct msghdr *message);
void loop_connect(loop_t *loop, loop_operation_t *operation, int fd, const struct sockaddr *address,
                  socklen_t address_length);
/* Completes once `duration` (which must stay valid until then) has passed;
 * result -ETIME is the normal outcome. */
void loop_sleep(loop_t *loop, loop_operation_t *operation, struct __kernel_timespec *duration);
/* Fire-and-forget: its completion reaches nobody. Submit it only when no
 * operation on `fd` is in flight any more (a close can overtake an
 * operation that io_uring runs asynchronously, and the descriptor number
 * may then belong to a new connection). */
void loop_close(loop_t *loop, int fd);
/* Tracked, like every operation that names a descriptor or another
 * operation: the owner waits for `operation` before it closes the
 * descriptor or reuses the target's struct. A cancel is skipped when the
 * target is not in flight or a cancel through `operation` still is. */
void loop_cancel(loop_t *loop, loop_operation_t *operation, loop_operation_t *target);
void loop_shutdown(loop_t *loop, loop_operation_t *operation, int fd, int how);

/* After a send of `sent` bytes from pieces[*index, count): moves *index and
 * trims the first unsent piece so the rest can be sent again. A stream
 * socket may send part of what was asked. */
void loop_iovec_advance(struct iovec *pieces, uint32_t count, uint32_t *index, size_t sent);

/* Provided buffers: a receive completion with IORING_CQE_F_BUFFER names a
 * buffer; its owner must give it back exactly once. */
static inline uint16_t loop_buffer_id(uint32_t cqe_flags) {
    return (uint16_t)(cqe_flags >> IORING_CQE_BUFFER_SHIFT);
}
uint8_t *loop_buffer(loop_t *loop, uint16_t buffer_id);
void loop_buffer_release(loop_t *loop, uint16_t buffer_id);

void loop_timer_list_init(loop_t *loop, loop_timer_list_t *list, uint64_t duration_ms);
void loop_timer_init(loop_timer_t *timer, loop_timer_callback_t callback, void *owner);
/* (Re)starts `timer` in `list`: it fires once, duration_ms from now. */
void loop_timer_start(loop_t *loop, loop_timer_list_t *list, loop_timer_t *timer);
void loop_timer_stop(loop_timer_t *timer);
static inline bool loop_timer_active(const loop_timer_t *timer) { return timer->list != NULL; }

/* Sockets: a listening socket with SO_REUSEPORT so every thread has its own;
 * a resolved address for outgoing connections. Set-up time only. */
int loop_listen_socket(const char *host, uint16_t port, int backlog, char *error, size_t error_size);
int loop_resolve(const char *host, uint16_t port, struct sockaddr_storage *address,
                 socklen_t *address_length, char *error, size_t error_size);

#endif
