/* Channel tests: single-thread semantics (empty, full, order across many
 * wraps, the was_empty report), a two-thread stress of 10 million messages,
 * the doorbell protocol under a sleeping consumer (no lost wake-ups), and a
 * real io_uring MSG_RING doorbell into a loop_t consumer. */
#include "ringway/channel.h"
#include "ringway/loop.h"

#include "unit.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

typedef struct test_message {
    uint64_t sequence;
    uint64_t check;   /* sequence * an odd constant: a torn copy shows */
    uint64_t inverse; /* ~sequence */
} test_message_t;

static test_message_t test_message_make(uint64_t sequence) {
    test_message_t message = {sequence, sequence * 0x9E3779B97F4A7C15ull, ~sequence};
    return message;
}

static bool test_message_valid(const test_message_t *message, uint64_t expected_sequence) {
    return message->sequence == expected_sequence &&
           message->check == expected_sequence * 0x9E3779B97F4A7C15ull && message->inverse == ~expected_sequence;
}

static uint64_t test_now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

/* Waiting for the other thread: a short sleep rather than sched_yield, so the
 * tests progress on an oversubscribed machine (2 CPUs shared with other test
 * binaries) instead of burning their time slices. */
static void test_pause(void) {
    struct timespec pause = {0, 20000};
    nanosleep(&pause, NULL);
}

static alignas(CHANNEL_CACHE_LINE_BYTES) channel_t test_channel;

static void test_layout(void) {
    /* head and tail on different cache lines, the read-only part on a third. */
    size_t head_line = offsetof(channel_t, head) / CHANNEL_CACHE_LINE_BYTES;
    size_t tail_line = offsetof(channel_t, tail) / CHANNEL_CACHE_LINE_BYTES;
    size_t slots_line = offsetof(channel_t, slots) / CHANNEL_CACHE_LINE_BYTES;
    CHECK(head_line != tail_line);
    CHECK(slots_line != tail_line && slots_line != head_line);
    CHECK_EQ_INT(alignof(channel_t), CHANNEL_CACHE_LINE_BYTES);
}

static void test_empty_full_order(void) {
    channel_t *channel = &test_channel;
    CHECK_EQ_INT(channel_init(channel, 4, sizeof(test_message_t)), 0);
    test_message_t out;
    CHECK(!channel_pop(channel, &out));
    CHECK_EQ_INT(channel_count(channel), 0);
    CHECK(!channel_full(channel));

    bool was_empty = false;
    for (uint64_t sequence = 0; sequence < 4; sequence++) {
        test_message_t message = test_message_make(sequence);
        CHECK(channel_push(channel, &message, &was_empty));
        CHECK_EQ_INT(was_empty, sequence == 0); /* only the first finds the consumer idle */
    }
    CHECK_EQ_INT(channel_count(channel), 4);
    CHECK(channel_full(channel));
    test_message_t extra = test_message_make(99);
    was_empty = true;
    CHECK(!channel_push(channel, &extra, &was_empty));
    CHECK(!was_empty);

    /* A peek shows the oldest and leaves it for the pop. */
    const test_message_t *peeked = channel_peek(channel);
    CHECK(peeked != NULL && test_message_valid(peeked, 0));
    CHECK_EQ_INT(channel_count(channel), 4);
    CHECK(channel_pop(channel, &out));
    CHECK(test_message_valid(&out, 0));
    CHECK(!channel_full(channel));
    test_message_t fifth = test_message_make(4);
    CHECK(channel_push(channel, &fifth, &was_empty));
    CHECK(!was_empty); /* messages 1..3 still wait */
    for (uint64_t sequence = 1; sequence <= 4; sequence++) {
        CHECK(channel_pop(channel, &out));
        CHECK(test_message_valid(&out, sequence));
    }
    CHECK(!channel_pop(channel, &out));
    CHECK(channel_peek(channel) == NULL);
    /* Drained: the next push must ask for a doorbell. */
    test_message_t sixth = test_message_make(5);
    CHECK(channel_push(channel, &sixth, &was_empty));
    CHECK(was_empty);
    CHECK(channel_pop(channel, &out));
    CHECK(test_message_valid(&out, 5));
    channel_destroy(channel);
    channel_destroy(channel); /* idempotent */
    CHECK(channel->slots == NULL);
}

/* Many wraps with a fill level that wanders between empty and full: order and
 * content are kept, full and empty are reported exactly. */
static void test_wrap_random_fill(void) {
    channel_t *channel = &test_channel;
    CHECK_EQ_INT(channel_init(channel, 8, sizeof(test_message_t)), 0);
    uint64_t next_push = 0;
    uint64_t next_pop = 0;
    uint32_t seed = 12345;
    for (int step = 0; step < 100000; step++) {
        seed = seed * 1103515245u + 12345u;
        bool push = ((seed >> 16) & 3) < 2;
        if (push) {
            test_message_t message = test_message_make(next_push);
            bool was_empty = false;
            bool pushed = channel_push(channel, &message, &was_empty);
            CHECK_EQ_INT(pushed, next_push - next_pop < 8);
            if (pushed) {
                CHECK_EQ_INT(was_empty, next_push == next_pop);
                next_push++;
            }
        } else {
            test_message_t out;
            bool popped = channel_pop(channel, &out);
            CHECK_EQ_INT(popped, next_pop < next_push);
            if (popped) {
                CHECK(test_message_valid(&out, next_pop));
                next_pop++;
            }
        }
        CHECK_EQ_INT(channel_count(channel), next_push - next_pop);
        if (unit_failures_in_test > 0) break;
    }
    CHECK(next_pop > 10000); /* wrapped thousands of times */
    channel_destroy(channel);
}

/* One-byte messages and odd sizes: the slot stride is exactly message_bytes. */
static void test_odd_message_size(void) {
    channel_t *channel = &test_channel;
    CHECK_EQ_INT(channel_init(channel, 16, 3), 0);
    for (int round = 0; round < 50; round++) {
        for (int index = 0; index < 16; index++) {
            uint8_t message[3] = {(uint8_t)round, (uint8_t)index, (uint8_t)(round ^ index)};
            bool was_empty = false;
            CHECK(channel_push(channel, message, &was_empty));
        }
        for (int index = 0; index < 16; index++) {
            uint8_t out[3] = {0};
            CHECK(channel_pop(channel, out));
            CHECK(out[0] == (uint8_t)round && out[1] == (uint8_t)index && out[2] == (uint8_t)(round ^ index));
        }
    }
    channel_destroy(channel);
}

enum { TEST_STRESS_MESSAGES = 10 * 1000 * 1000 };

typedef struct test_stress {
    channel_t *channel;
    uint64_t count;
    uint64_t full_retries;
    uint64_t errors;
} test_stress_t;

static void *test_stress_producer(void *argument) {
    test_stress_t *stress = argument;
    for (uint64_t sequence = 0; sequence < stress->count; sequence++) {
        test_message_t message = test_message_make(sequence);
        bool was_empty = false;
        uint32_t spins = 0;
        while (!channel_push(stress->channel, &message, &was_empty)) {
            stress->full_retries++;
            if (++spins % 64 == 0) test_pause();
        }
    }
    return NULL;
}

static void test_two_thread_stress(void) {
    channel_t *channel = &test_channel;
    CHECK_EQ_INT(channel_init(channel, 1024, sizeof(test_message_t)), 0);
    test_stress_t stress = {channel, TEST_STRESS_MESSAGES, 0, 0};
    pthread_t producer;
    CHECK_EQ_INT(pthread_create(&producer, NULL, test_stress_producer, &stress), 0);
    uint64_t expected = 0;
    uint32_t spins = 0;
    while (expected < stress.count) {
        test_message_t out;
        if (!channel_pop(channel, &out)) {
            if (++spins % 64 == 0) test_pause();
            continue;
        }
        if (!test_message_valid(&out, expected)) {
            stress.errors++;
            if (stress.errors < 5) {
                fprintf(stderr, "  stress: expected %llu, got %llu\n", (unsigned long long)expected,
                        (unsigned long long)out.sequence);
            }
            expected = out.sequence; /* resynchronise so one bad message is not counted forever */
        }
        expected++;
    }
    pthread_join(producer, NULL);
    test_message_t out;
    CHECK(!channel_pop(channel, &out)); /* no duplicate after the last one */
    CHECK_EQ_INT(stress.errors, 0);
    CHECK_EQ_INT(expected, TEST_STRESS_MESSAGES);
    channel_destroy(channel);
}

/* The doorbell protocol with a consumer that really sleeps between doorbells
 * (a counter stands in for the CQE). With a doorbell decision taken before the
 * push is published, this test hangs and fails on its deadline. */
enum { TEST_DOORBELL_MESSAGES = 1000 * 1000 };

typedef struct test_doorbell_protocol {
    channel_t *channel;
    _Atomic uint64_t doorbells;
    _Atomic bool consumer_done;
    uint32_t seed;
} test_doorbell_protocol_t;

static void *test_doorbell_protocol_producer(void *argument) {
    test_doorbell_protocol_t *test = argument;
    uint32_t seed = test->seed;
    for (uint64_t sequence = 0; sequence < TEST_DOORBELL_MESSAGES; sequence++) {
        test_message_t message = test_message_make(sequence);
        bool was_empty = false;
        while (!channel_push(test->channel, &message, &was_empty)) {
            if (atomic_load(&test->consumer_done)) return NULL;
            test_pause();
        }
        if (was_empty) atomic_fetch_add(&test->doorbells, 1);
        seed = seed * 1103515245u + 12345u;
        if (((seed >> 16) & 255) == 0) sched_yield(); /* let the consumer catch up and sleep */
    }
    return NULL;
}

static void test_doorbell_protocol_no_lost_wakeup(void) {
    channel_t *channel = &test_channel;
    CHECK_EQ_INT(channel_init(channel, 64, sizeof(test_message_t)), 0);
    test_doorbell_protocol_t test = {.channel = channel, .seed = 777};
    atomic_init(&test.doorbells, 0);
    atomic_init(&test.consumer_done, false);
    pthread_t producer;
    CHECK_EQ_INT(pthread_create(&producer, NULL, test_doorbell_protocol_producer, &test), 0);
    uint64_t expected = 0;
    uint64_t sleeps = 0;
    bool timed_out = false;
    uint64_t deadline_ms = test_now_ms() + 60000;
    while (expected < TEST_DOORBELL_MESSAGES && !timed_out) {
        uint64_t doorbells_seen = atomic_load(&test.doorbells);
        test_message_t out;
        while (channel_pop(channel, &out)) {
            CHECK(test_message_valid(&out, expected));
            expected++;
        }
        if (expected == TEST_DOORBELL_MESSAGES) break;
        /* Empty: sleep until the next doorbell. */
        sleeps++;
        while (atomic_load(&test.doorbells) == doorbells_seen) {
            if (test_now_ms() > deadline_ms) {
                timed_out = true;
                break;
            }
            test_pause();
        }
    }
    atomic_store(&test.consumer_done, true);
    pthread_join(producer, NULL);
    CHECK(!timed_out);
    CHECK_EQ_INT(expected, TEST_DOORBELL_MESSAGES);
    CHECK(sleeps > 0);
    /* At most one doorbell per sleep plus one per wake-up race. */
    CHECK(atomic_load(&test.doorbells) >= 1);
    channel_destroy(channel);
}

/* A real MSG_RING doorbell: the consumer is a loop_t on its own thread whose
 * mailbox operation is the doorbell's user_data; the producer has a plain
 * io_uring. The consumer only ever learns of messages through its callback. */
enum { TEST_LOOP_MESSAGES = 200000 };

typedef struct test_loop_consumer {
    channel_t *channel;
    loop_t loop;
    loop_operation_t mailbox;
    _Atomic int ring_fd; /* -1 until the loop exists, -2 when loop_init failed */
    _Atomic bool finished;
    uint64_t received;
    uint64_t callbacks;
    uint64_t errors;
    uint64_t deadline_ms;
    bool timed_out;
} test_loop_consumer_t;

static void test_loop_on_mailbox(loop_operation_t *operation, int32_t result, uint32_t flags) {
    test_loop_consumer_t *consumer = operation->owner;
    consumer->callbacks++;
    if (result != 0) consumer->errors++;
    test_message_t out;
    while (channel_pop(consumer->channel, &out)) {
        if (!test_message_valid(&out, consumer->received)) consumer->errors++;
        consumer->received++;
    }
    if (consumer->received == TEST_LOOP_MESSAGES) consumer->loop.stopping = true;
}

static void test_loop_on_tick(loop_t *loop) {
    test_loop_consumer_t *consumer = loop->owner;
    if (loop_now_ms(loop) > consumer->deadline_ms) {
        consumer->timed_out = true;
        loop->stopping = true;
    }
}

static void *test_loop_consumer_main(void *argument) {
    test_loop_consumer_t *consumer = argument;
    char error[256];
    /* The loop's ring is single-issuer: create it on the thread that runs it. */
    if (loop_init(&consumer->loop, 64, 16, 4096, error, sizeof error) != 0) {
        fprintf(stderr, "  loop_init: %s\n", error);
        atomic_store(&consumer->ring_fd, -2);
        atomic_store(&consumer->finished, true);
        return NULL;
    }
    consumer->loop.owner = consumer;
    consumer->loop.on_tick = test_loop_on_tick;
    consumer->mailbox.callback = test_loop_on_mailbox;
    consumer->mailbox.owner = consumer;
    atomic_store(&consumer->ring_fd, consumer->loop.ring.ring_fd);
    loop_run(&consumer->loop, 5);
    loop_destroy(&consumer->loop);
    atomic_store(&consumer->finished, true);
    return NULL;
}

static void test_doorbell_into_loop(void) {
    channel_t *channel = &test_channel;
    CHECK_EQ_INT(channel_init(channel, 256, sizeof(test_message_t)), 0);
    static test_loop_consumer_t consumer;
    memset(&consumer, 0, sizeof consumer);
    consumer.channel = channel;
    consumer.deadline_ms = loop_clock_ms() + 30000;
    atomic_init(&consumer.ring_fd, -1);
    atomic_init(&consumer.finished, false);
    pthread_t thread;
    CHECK_EQ_INT(pthread_create(&thread, NULL, test_loop_consumer_main, &consumer), 0);
    while (atomic_load(&consumer.ring_fd) == -1) test_pause();
    int target_fd = atomic_load(&consumer.ring_fd);
    CHECK(target_fd >= 0);

    struct io_uring producer_ring;
    int status = io_uring_queue_init(8, &producer_ring, 0); /* SQ of 8: the full-SQ path is exercised too */
    CHECK_EQ_INT(status, 0);
    uint64_t doorbells = 0;
    if (target_fd >= 0 && status == 0) {
        for (uint64_t sequence = 0; sequence < TEST_LOOP_MESSAGES; sequence++) {
            test_message_t message = test_message_make(sequence);
            bool was_empty = false;
            bool gave_up = false;
            while (!channel_push(channel, &message, &was_empty)) {
                /* Full: the consumer must have been told about what it holds. */
                CHECK(io_uring_submit(&producer_ring) >= 0);
                if (atomic_load(&consumer.finished)) {
                    gave_up = true;
                    break;
                }
                test_pause();
            }
            if (gave_up) break;
            if (was_empty) {
                channel_ring_doorbell(&producer_ring, target_fd, &consumer.mailbox);
                doorbells++;
                /* Submit now and then only, so several doorbells queue up in
                 * the SQ and a full SQ must be submitted by the helper. */
                if (doorbells % 4 == 0) CHECK(io_uring_submit(&producer_ring) >= 0);
            }
        }
        CHECK(io_uring_submit(&producer_ring) >= 0);
    }
    pthread_join(thread, NULL);
    /* Doorbells succeed silently (CQE_SKIP_SUCCESS): no completion here. */
    struct io_uring_cqe *cqe = NULL;
    CHECK(io_uring_peek_cqe(&producer_ring, &cqe) == -EAGAIN);
    if (status == 0) io_uring_queue_exit(&producer_ring);

    CHECK(!consumer.timed_out);
    CHECK_EQ_INT(consumer.received, TEST_LOOP_MESSAGES);
    CHECK_EQ_INT(consumer.errors, 0);
    CHECK(consumer.callbacks >= 1);
    CHECK(consumer.callbacks <= doorbells);
    channel_destroy(channel);
}

int main(void) {
    RUN_TEST(test_layout);
    RUN_TEST(test_empty_full_order);
    RUN_TEST(test_wrap_random_fill);
    RUN_TEST(test_odd_message_size);
    RUN_TEST(test_two_thread_stress);
    RUN_TEST(test_doorbell_protocol_no_lost_wakeup);
    RUN_TEST(test_doorbell_into_loop);
    return UNIT_REPORT();
}
