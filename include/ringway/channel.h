/* Cross-thread messaging: a bounded, lock-free, single-producer
 * single-consumer ring of fixed-size messages, and a doorbell that wakes the
 * consumer's io_uring with IORING_OP_MSG_RING.
 *
 * One thread pushes, one thread pops; nothing else touches a channel after
 * channel_init. Memory is allocated once, at init. `tail` counts messages
 * pushed (written by the producer only), `head` counts messages popped
 * (written by the consumer only); both only grow, so tail - head is the fill
 * level and the slot of message n is n & (capacity - 1). They sit on
 * separate cache lines so the two threads do not bounce one line between
 * them on every message.
 *
 * Doorbell protocol (no lost wake-ups): after publishing a message the
 * producer looks at `head` behind a full fence; if the consumer had already
 * taken every earlier message it may have gone to sleep, so channel_push
 * reports was_empty and the producer rings the doorbell. A consumer pops until
 * channel_pop returns false; channel_pop only returns false after its own full
 * fence and a fresh look at `tail`. Of the two fenced looks at least one sees
 * the other side's store, so either the consumer finds the message or the
 * producer rings. A doorbell may be spurious (the consumer was still awake);
 * it is never missing. */
#ifndef RINGWAY_CHANNEL_H
#define RINGWAY_CHANNEL_H

#include "ringway/common.h"
#include "ringway/loop.h"

#include <liburing.h>
#include <stdalign.h>
#include <stdatomic.h>

enum { CHANNEL_CACHE_LINE_BYTES = 64 };

/* Embed with its alignment respected: a channel_t inside heap memory needs
 * aligned_alloc(CHANNEL_CACHE_LINE_BYTES, ...) or an aligned container. */
typedef struct channel {
    /* Consumer's line: head, and the consumer's last view of tail. */
    alignas(CHANNEL_CACHE_LINE_BYTES) _Atomic uint64_t head;
    uint64_t tail_seen;
    /* Producer's line: tail, and the producer's last view of head. */
    alignas(CHANNEL_CACHE_LINE_BYTES) _Atomic uint64_t tail;
    uint64_t head_seen;
    /* Read-only after channel_init. */
    alignas(CHANNEL_CACHE_LINE_BYTES) uint8_t *slots;
    uint32_t capacity;
    uint32_t mask;
    uint32_t message_bytes;
} channel_t;

/* Allocates capacity * message_bytes bytes of slots. capacity must be a power
 * of two in [2, 2^24] and message_bytes in [1, 1 MiB] (asserted). Returns 0,
 * or -ENOMEM when the allocation fails (the channel is then zeroed). */
int channel_init(channel_t *channel, uint32_t capacity, uint32_t message_bytes);

/* Frees the slots; the channel must no longer be used by either thread. Safe
 * on a zeroed channel and idempotent. */
void channel_destroy(channel_t *channel);

/* Producer only. Copies message_bytes bytes from `message` into the next slot
 * and publishes it. Returns false when the channel is full: nothing is
 * written, *was_empty is false, and the caller retries later or refuses its
 * work (never blocks). On true, *was_empty tells whether the consumer had
 * taken every earlier message when the push was published, i.e. it may be
 * asleep: the producer must then ring the consumer's doorbell. */
bool channel_push(channel_t *channel, const void *message, bool *was_empty);

/* Consumer only. Copies the oldest message into message_out (message_bytes
 * bytes) and frees its slot. Returns false when the channel is empty. A
 * consumer woken by a doorbell pops until this returns false. */
bool channel_pop(channel_t *channel, void *message_out);

/* Consumer only. The oldest message, left in the channel (the next pop
 * takes it), or NULL when the channel looks empty. The memory stays valid
 * until that pop. It never stands in for a pop before sleeping: a NULL
 * here does not order the consumer's view the way an empty pop does. */
const void *channel_peek(channel_t *channel);

/* Producer only: true when a push would fail now. Only the consumer's pops
 * change the answer meanwhile, and they free slots, so after false the
 * producer's next push is certain to succeed. */
bool channel_full(channel_t *channel);

/* Either thread: messages pushed and not yet popped, at some recent moment. */
uint32_t channel_count(const channel_t *channel);

/* Rings a consumer's doorbell: queues an IORING_OP_MSG_RING SQE on the
 * producer's own `source_ring` that posts a CQE into the ring `target_ring_fd`
 * with user_data = target_operation (res 0, flags 0). A consumer running
 * loop_run therefore gets target_operation->callback called; that callback
 * drains the channel. target_operation is only carried as a value: this
 * thread never reads or writes it.
 *
 * The SQE is only queued, not submitted (unless the submission queue is full,
 * then what is queued is submitted first): a producer that is a loop_t passes
 * &loop->ring and the next io_uring_enter of its loop carries the doorbell at
 * no extra syscall; any other producer calls io_uring_submit itself. The SQE
 * asks for no completion on success (IOSQE_CQE_SKIP_SUCCESS) and has
 * user_data 0, so a failure completion (the target ring is gone, -EBADFD) is
 * ignored by loop_run. Needs Linux 5.18 for MSG_RING. */
void channel_ring_doorbell(struct io_uring *source_ring, int target_ring_fd,
                           loop_operation_t *target_operation);

#endif
