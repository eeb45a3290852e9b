/* Single-producer single-consumer message ring and the io_uring doorbell; the
 * protocol and its reasoning are in include/ringway/channel.h. */
#include "ringway/channel.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum {
    CHANNEL_CAPACITY_MAX = 1u << 24,
    CHANNEL_MESSAGE_BYTES_MAX = 1u << 20,
};

int channel_init(channel_t *channel, uint32_t capacity, uint32_t message_bytes) {
    RW_ASSERT(channel != NULL);
    RW_ASSERT(capacity >= 2 && capacity <= CHANNEL_CAPACITY_MAX);
    RW_ASSERT((capacity & (capacity - 1)) == 0);
    RW_ASSERT(message_bytes >= 1 && message_bytes <= CHANNEL_MESSAGE_BYTES_MAX);
    RW_ASSERT(((uintptr_t)channel % CHANNEL_CACHE_LINE_BYTES) == 0);
    memset(channel, 0, sizeof *channel);
    size_t bytes = (size_t)capacity * message_bytes;
    /* aligned_alloc wants a multiple of the alignment. */
    size_t rounded = (bytes + CHANNEL_CACHE_LINE_BYTES - 1) / CHANNEL_CACHE_LINE_BYTES * CHANNEL_CACHE_LINE_BYTES;
    uint8_t *slots = aligned_alloc(CHANNEL_CACHE_LINE_BYTES, rounded);
    if (slots == NULL) return -ENOMEM;
    memset(slots, 0, rounded);
    atomic_init(&channel->head, 0);
    atomic_init(&channel->tail, 0);
    channel->slots = slots;
    channel->capacity = capacity;
    channel->mask = capacity - 1;
    channel->message_bytes = message_bytes;
    return 0;
}

void channel_destroy(channel_t *channel) {
    RW_ASSERT(channel != NULL);
    free(channel->slots);
    channel->slots = NULL;
    channel->capacity = 0;
    channel->mask = 0;
    channel->message_bytes = 0;
}

static uint8_t *channel_slot(const channel_t *channel, uint64_t position) {
    return channel->slots + (size_t)(position & channel->mask) * channel->message_bytes;
}

bool channel_push(channel_t *channel, const void *message, bool *was_empty) {
    RW_ASSERT(channel->slots != NULL && message != NULL && was_empty != NULL);
    uint64_t tail = atomic_load_explicit(&channel->tail, memory_order_relaxed);
    RW_ASSERT(tail - channel->head_seen <= channel->capacity);
    if (tail - channel->head_seen == channel->capacity) {
        /* Acquire: the consumer's copy out of the slot happens before we
         * overwrite it. */
        channel->head_seen = atomic_load_explicit(&channel->head, memory_order_acquire);
        RW_ASSERT(tail - channel->head_seen <= channel->capacity);
        if (tail - channel->head_seen == channel->capacity) {
            *was_empty = false;
            return false;
        }
    }
    memcpy(channel_slot(channel, tail), message, channel->message_bytes);
    atomic_store_explicit(&channel->tail, tail + 1, memory_order_release);
    /* Pairs with the fence in channel_pop: either the consumer's fresh look
     * at tail sees this message, or our look at head sees that it had taken
     * everything before it (and may be asleep). */
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t head = atomic_load_explicit(&channel->head, memory_order_acquire);
    /* head == tail + 1: the consumer already took this very message. */
    RW_ASSERT(head <= tail + 1);
    channel->head_seen = head;
    *was_empty = head == tail;
    return true;
}

const void *channel_peek(channel_t *channel) {
    RW_ASSERT(channel->slots != NULL);
    uint64_t head = atomic_load_explicit(&channel->head, memory_order_relaxed);
    RW_ASSERT(head <= channel->tail_seen);
    if (head == channel->tail_seen) {
        channel->tail_seen = atomic_load_explicit(&channel->tail, memory_order_acquire);
        if (head == channel->tail_seen) return NULL;
        RW_ASSERT(channel->tail_seen - head <= channel->capacity);
    }
    return channel_slot(channel, head);
}

bool channel_pop(channel_t *channel, void *message_out) {
    RW_ASSERT(channel->slots != NULL && message_out != NULL);
    uint64_t head = atomic_load_explicit(&channel->head, memory_order_relaxed);
    RW_ASSERT(head <= channel->tail_seen);
    if (head == channel->tail_seen) {
        channel->tail_seen = atomic_load_explicit(&channel->tail, memory_order_acquire);
        if (head == channel->tail_seen) {
            /* About to report empty, after which the caller may sleep: the
             * fence orders our last head store before this look at tail (see
             * channel_push). */
            atomic_thread_fence(memory_order_seq_cst);
            channel->tail_seen = atomic_load_explicit(&channel->tail, memory_order_acquire);
            if (head == channel->tail_seen) return false;
        }
        RW_ASSERT(channel->tail_seen - head <= channel->capacity);
    }
    memcpy(message_out, channel_slot(channel, head), channel->message_bytes);
    atomic_store_explicit(&channel->head, head + 1, memory_order_release);
    return true;
}

bool channel_full(channel_t *channel) {
    RW_ASSERT(channel->slots != NULL);
    uint64_t tail = atomic_load_explicit(&channel->tail, memory_order_relaxed);
    if (tail - channel->head_seen < channel->capacity) return false;
    channel->head_seen = atomic_load_explicit(&channel->head, memory_order_acquire);
    return tail - channel->head_seen == channel->capacity;
}

uint32_t channel_count(const channel_t *channel) {
    uint64_t head = atomic_load_explicit(&channel->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&channel->tail, memory_order_acquire);
    /* Two separate loads: head may have moved past the tail we read. */
    return tail > head ? (uint32_t)(tail - head) : 0;
}

void channel_ring_doorbell(struct io_uring *source_ring, int target_ring_fd,
                           loop_operation_t *target_operation) {
    RW_ASSERT(source_ring != NULL);
    RW_ASSERT(target_ring_fd >= 0);
    struct io_uring_sqe *sqe = io_uring_get_sqe(source_ring);
    while (sqe == NULL) {
        int submitted = io_uring_submit(source_ring);
        RW_ASSERT(submitted >= 0 || submitted == -EBUSY || submitted == -EAGAIN || submitted == -EINTR);
        sqe = io_uring_get_sqe(source_ring);
    }
    io_uring_prep_msg_ring(sqe, target_ring_fd, 0, (uint64_t)(uintptr_t)target_operation, 0);
    io_uring_sqe_set_data(sqe, NULL);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
}
