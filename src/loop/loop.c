#include "ringway/loop.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { LOOP_COMPLETION_BATCH = 256 };

uint64_t loop_clock_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

uint64_t loop_now_ms(const loop_t *loop) { return loop->now_ms; }

static void loop_register_buffers(loop_t *loop, uint32_t count) {
    int mask = io_uring_buf_ring_mask(loop->buffer_count);
    for (uint32_t index = 0; index < count; index++) {
        io_uring_buf_ring_add(loop->buffer_ring, loop->buffer_memory + (size_t)index * loop->buffer_bytes,
                              loop->buffer_bytes, (unsigned short)index, mask, (int)index);
    }
    io_uring_buf_ring_advance(loop->buffer_ring, (int)count);
}

int loop_init(loop_t *loop, uint32_t ring_entries, uint32_t buffer_count, uint32_t buffer_bytes,
              char *error, size_t error_size) {
    RW_ASSERT(buffer_count > 0 && buffer_count <= 32768);
    RW_ASSERT((buffer_count & (buffer_count - 1)) == 0);
    RW_ASSERT(buffer_bytes >= 1024);
    memset(loop, 0, sizeof *loop);

    struct io_uring_params params;
    memset(&params, 0, sizeof params);
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL;
    params.flags |= IORING_SETUP_CQSIZE;
    params.cq_entries = ring_entries * 4;
    int status = io_uring_queue_init_params(ring_entries, &loop->ring, &params);
    if (status == -EINVAL) {
        memset(&params, 0, sizeof params);
        status = io_uring_queue_init_params(ring_entries, &loop->ring, &params);
    }
    if (status < 0) {
        snprintf(error, error_size, "io_uring_queue_init: %s", strerror(-status));
        return status;
    }

    loop->buffer_count = buffer_count;
    loop->buffer_bytes = buffer_bytes;
    loop->buffer_group = 0;
    size_t ring_bytes = sizeof(struct io_uring_buf) * buffer_count;
    loop->buffer_ring = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    loop->buffer_memory = mmap(NULL, (size_t)buffer_count * buffer_bytes, PROT_READ | PROT_WRITE,
                               MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (loop->buffer_ring == MAP_FAILED || loop->buffer_memory == MAP_FAILED) {
        snprintf(error, error_size, "mmap of receive buffers: %s", strerror(errno));
        return -ENOMEM;
    }
    io_uring_buf_ring_init(loop->buffer_ring);
    struct io_uring_buf_reg registration;
    memset(&registration, 0, sizeof registration);
    registration.ring_addr = (uint64_t)(uintptr_t)loop->buffer_ring;
    registration.ring_entries = buffer_count;
    registration.bgid = loop->buffer_group;
    status = io_uring_register_buf_ring(&loop->ring, &registration, 0);
    if (status < 0) {
        snprintf(error, error_size, "io_uring_register_buf_ring: %s", strerror(-status));
        return status;
    }
    loop_register_buffers(loop, buffer_count);
    loop->now_ms = loop_clock_ms();
    return 0;
}

void loop_destroy(loop_t *loop) {
    io_uring_queue_exit(&loop->ring);
    if (loop->buffer_ring != NULL && loop->buffer_ring != MAP_FAILED) {
        munmap(loop->buffer_ring, sizeof(struct io_uring_buf) * loop->buffer_count);
    }
    if (loop->buffer_memory != NULL && loop->buffer_memory != MAP_FAILED) {
        munmap(loop->buffer_memory, (size_t)loop->buffer_count * loop->buffer_bytes);
    }
    loop->buffer_ring = NULL;
    loop->buffer_memory = NULL;
}

/* Returns a free SQE. When the submission queue is full, what is queued is
 * submitted first: the overflow never drops an operation. */
static struct io_uring_sqe *loop_sqe(loop_t *loop) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&loop->ring);
    while (sqe == NULL) {
        int submitted = io_uring_submit(&loop->ring);
        RW_ASSERT(submitted >= 0 || submitted == -EBUSY || submitted == -EAGAIN);
        sqe = io_uring_get_sqe(&loop->ring);
    }
    return sqe;
}

static void loop_track(struct io_uring_sqe *sqe, loop_operation_t *operation) {
    RW_ASSERT(operation->callback != NULL);
    RW_ASSERT(!operation->in_flight);
    operation->in_flight = true;
    io_uring_sqe_set_data(sqe, operation);
}

void loop_accept_multishot(loop_t *loop, loop_operation_t *operation, int listen_fd) {
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_multishot_accept(sqe, listen_fd, NULL, NULL, SOCK_CLOEXEC);
    loop_track(sqe, operation);
}

void loop_recv_multishot(loop_t *loop, loop_operation_t *operation, int fd) {
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = loop->buffer_group;
    loop_track(sqe, operation);
}

void loop_recv(loop_t *loop, loop_operation_t *operation, int fd, void *buffer, size_t length) {
    RW_ASSERT(length > 0);
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_recv(sqe, fd, buffer, length, 0);
    loop_track(sqe, operation);
}

void loop_send(loop_t *loop, loop_operation_t *operation, int fd, const void *buffer, size_t length) {
    RW_ASSERT(length > 0);
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_send(sqe, fd, buffer, length, MSG_NOSIGNAL);
    loop_track(sqe, operation);
}

void loop_sendmsg(loop_t *loop, loop_operation_t *operation, int fd, const struct msghdr *message) {
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_sendmsg(sqe, fd, message, MSG_NOSIGNAL);
    loop_track(sqe, operation);
}

void loop_connect(loop_t *loop, loop_operation_t *operation, int fd, const struct sockaddr *address,
                  socklen_t address_length) {
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_connect(sqe, fd, address, address_length);
    loop_track(sqe, operation);
}

void loop_sleep(loop_t *loop, loop_operation_t *operation, struct __kernel_timespec *duration) {
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_timeout(sqe, duration, 0, 0);
    loop_track(sqe, operation);
}

void loop_close(loop_t *loop, int fd) {
    RW_ASSERT(fd >= 0);
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_close(sqe, fd);
    io_uring_sqe_set_data(sqe, NULL);
}

void loop_cancel(loop_t *loop, loop_operation_t *operation, loop_operation_t *target) {
    if (!target->in_flight || operation->in_flight) return;
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_cancel(sqe, target, 0);
    loop_track(sqe, operation);
}

void loop_shutdown(loop_t *loop, loop_operation_t *operation, int fd, int how) {
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_shutdown(sqe, fd, how);
    loop_track(sqe, operation);
}

void loop_iovec_advance(struct iovec *pieces, uint32_t count, uint32_t *index, size_t sent) {
    while (sent > 0 && *index < count) {
        struct iovec *piece = &pieces[*index];
        size_t step = RW_MIN(sent, piece->iov_len);
        piece->iov_base = (uint8_t *)piece->iov_base + step;
        piece->iov_len -= step;
        sent -= step;
        if (piece->iov_len == 0) (*index)++;
    }
    RW_ASSERT(sent == 0);
}

uint8_t *loop_buffer(loop_t *loop, uint16_t buffer_id) {
    RW_ASSERT(buffer_id < loop->buffer_count);
    return loop->buffer_memory + (size_t)buffer_id * loop->buffer_bytes;
}

void loop_buffer_release(loop_t *loop, uint16_t buffer_id) {
    RW_ASSERT(buffer_id < loop->buffer_count);
    io_uring_buf_ring_add(loop->buffer_ring, loop_buffer(loop, buffer_id), loop->buffer_bytes, buffer_id,
                          io_uring_buf_ring_mask(loop->buffer_count), 0);
    io_uring_buf_ring_advance(loop->buffer_ring, 1);
}

void loop_timer_list_init(loop_t *loop, loop_timer_list_t *list, uint64_t duration_ms) {
    RW_ASSERT(loop->timer_list_count < LOOP_TIMER_LISTS_MAX);
    memset(list, 0, sizeof *list);
    list->sentinel.next = &list->sentinel;
    list->sentinel.previous = &list->sentinel;
    list->duration_ms = duration_ms;
    loop->timer_lists[loop->timer_list_count++] = list;
}

void loop_timer_init(loop_timer_t *timer, loop_timer_callback_t callback, void *owner) {
    memset(timer, 0, sizeof *timer);
    timer->callback = callback;
    timer->owner = owner;
}

void loop_timer_stop(loop_timer_t *timer) {
    if (timer->list == NULL) return;
    timer->previous->next = timer->next;
    timer->next->previous = timer->previous;
    timer->previous = NULL;
    timer->next = NULL;
    timer->list = NULL;
}

void loop_timer_start(loop_t *loop, loop_timer_list_t *list, loop_timer_t *timer) {
    RW_ASSERT(timer->callback != NULL);
    loop_timer_stop(timer);
    timer->deadline_ms = loop->now_ms + list->duration_ms;
    timer->list = list;
    timer->previous = list->sentinel.previous;
    timer->next = &list->sentinel;
    list->sentinel.previous->next = timer;
    list->sentinel.previous = timer;
}

static void loop_expire_timers(loop_t *loop) {
    for (uint32_t index = 0; index < loop->timer_list_count; index++) {
        loop_timer_list_t *list = loop->timer_lists[index];
        /* Bounded: each expired timer leaves the list before its callback,
         * and a callback restarting it puts it at the tail with a later deadline. */
        while (list->sentinel.next != &list->sentinel) {
            loop_timer_t *timer = list->sentinel.next;
            if (timer->deadline_ms > loop->now_ms) break;
            loop_timer_stop(timer);
            timer->callback(timer);
        }
    }
}

static void loop_arm_tick(loop_t *loop);

static void loop_on_tick(loop_operation_t *operation, int32_t result, uint32_t flags) {
    loop_t *loop = operation->owner;
    loop->now_ms = loop_clock_ms();
    loop_expire_timers(loop);
    if (loop->on_tick != NULL) loop->on_tick(loop);
    if (!loop->stopping) loop_arm_tick(loop);
}

static void loop_arm_tick(loop_t *loop) {
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_timeout(sqe, &loop->tick_interval, 0, 0);
    loop_track(sqe, &loop->tick_operation);
}

void loop_run(loop_t *loop, uint32_t tick_ms) {
    RW_ASSERT(tick_ms > 0);
    loop->tick_interval.tv_sec = tick_ms / 1000;
    loop->tick_interval.tv_nsec = (long long)(tick_ms % 1000) * 1000000;
    loop->tick_operation.callback = loop_on_tick;
    loop->tick_operation.owner = loop;
    loop_arm_tick(loop);

    struct io_uring_cqe *completions[LOOP_COMPLETION_BATCH];
    while (!loop->stopping || loop->tick_operation.in_flight) {
        int status = io_uring_submit_and_wait(&loop->ring, 1);
        if (status < 0 && status != -EINTR && status != -EAGAIN && status != -EBUSY) {
            fprintf(stderr, "ringway: io_uring_submit_and_wait: %s\n", strerror(-status));
            RW_ASSERT(!"io_uring_submit_and_wait failed");
        }
        loop->now_ms = loop_clock_ms();
        unsigned count = io_uring_peek_batch_cqe(&loop->ring, completions, LOOP_COMPLETION_BATCH);
        /* Copy out first, then advance, so callbacks may submit freely. */
        struct {
            loop_operation_t *operation;
            int32_t result;
            uint32_t flags;
        } batch[LOOP_COMPLETION_BATCH];
        for (unsigned index = 0; index < count; index++) {
            batch[index].operation = io_uring_cqe_get_data(completions[index]);
            batch[index].result = completions[index]->res;
            batch[index].flags = completions[index]->flags;
        }
        io_uring_cq_advance(&loop->ring, count);
        for (unsigned index = 0; index < count; index++) {
            loop_operation_t *operation = batch[index].operation;
            if (operation == NULL) continue;
            if (!(batch[index].flags & IORING_CQE_F_MORE)) operation->in_flight = false;
            operation->callback(operation, batch[index].result, batch[index].flags);
        }
    }
}

static int loop_fill_address(const char *host, uint16_t port, int passive, struct sockaddr_storage *address,
                             socklen_t *address_length, char *error, size_t error_size) {
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    char port_text[8];
    snprintf(port_text, sizeof port_text, "%u", (unsigned)port);
    struct addrinfo *results = NULL;
    int status = getaddrinfo(host, port_text, &hints, &results);
    if (status != 0 || results == NULL) {
        snprintf(error, error_size, "cannot resolve %s: %s", host, gai_strerror(status));
        return -1;
    }
    RW_ASSERT(results->ai_addrlen <= sizeof *address);
    memcpy(address, results->ai_addr, results->ai_addrlen);
    *address_length = results->ai_addrlen;
    freeaddrinfo(results);
    return 0;
}

int loop_resolve(const char *host, uint16_t port, struct sockaddr_storage *address,
                 socklen_t *address_length, char *error, size_t error_size) {
    return loop_fill_address(host, port, 0, address, address_length, error, error_size);
}

int loop_listen_socket(const char *host, uint16_t port, int backlog, char *error, size_t error_size) {
    struct sockaddr_storage address;
    socklen_t address_length = 0;
    if (loop_fill_address(host, port, 1, &address, &address_length, error, error_size) != 0) return -1;
    int fd = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(error, error_size, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&address, address_length) != 0 || listen(fd, backlog) != 0) {
        snprintf(error, error_size, "cannot listen on %s:%u: %s", host, (unsigned)port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}
