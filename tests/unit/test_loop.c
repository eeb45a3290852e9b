/* Unit tests for src/loop/loop.c on a real io_uring: timer lists (expiry at
 * the first tick that reaches the deadline, order within a list, stop,
 * restart, stopping and restarting from inside callbacks), the completion
 * shape of each operation against real sockets, the overflow path when the
 * submission queue is full (more operations than SQ and CQ entries), the
 * provided-buffer ring handing out and recycling buffers, the cached clock,
 * and the iovec bookkeeping for partial sends.
 *
 * Timing facts are relative only (a timer never fires before its deadline as
 * the loop's clock sees it; it fires at the first tick that reaches it): the
 * machine is shared and a tick may come late. Every run of the loop has a
 * completion predicate and a wall-clock bound, so a bug fails a test instead
 * of hanging it. Without io_uring the whole file skips with a message. */
#include "ringway/loop.h"

#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
    TEST_RING_ENTRIES = 64,
    TEST_BUFFER_COUNT = 16,
    TEST_BUFFER_BYTES = 2048,
    TEST_TICK_MS = 2,
    TEST_RUN_TIMEOUT_MS = 4000,
    TEST_TICKS_RECORDED_MAX = 8192,
};

/* ---- running the loop with a bound ------------------------------------ */

static bool (*test_done)(void);
static void (*test_tick_hook)(loop_t *loop);
static uint64_t test_deadline_ms;
static bool test_timed_out;
/* now_ms of every tick, in order: a timer must fire in the first tick whose
 * now_ms reaches its deadline. */
static uint64_t test_tick_now_ms[TEST_TICKS_RECORDED_MAX];
static uint32_t test_tick_count;
static bool test_now_went_backwards;
static bool test_now_ahead_of_clock;
static uint64_t test_last_now_ms;

static void test_on_tick(loop_t *loop) {
    uint64_t now_ms = loop_now_ms(loop);
    if (now_ms < test_last_now_ms) test_now_went_backwards = true;
    if (now_ms > loop_clock_ms()) test_now_ahead_of_clock = true;
    test_last_now_ms = now_ms;
    if (test_tick_count < TEST_TICKS_RECORDED_MAX) test_tick_now_ms[test_tick_count++] = now_ms;
    if (test_tick_hook != NULL) test_tick_hook(loop);
    if (test_done != NULL && test_done()) {
        loop->stopping = true;
    } else if (loop_clock_ms() > test_deadline_ms) {
        test_timed_out = true;
        loop->stopping = true;
    }
}

/* Runs the loop until done() holds at a tick or the wall-clock bound passes.
 * Returns true when done() held. */
static bool test_run(loop_t *loop, bool (*done)(void), void (*hook)(loop_t *loop)) {
    test_done = done;
    test_tick_hook = hook;
    test_timed_out = false;
    test_deadline_ms = loop_clock_ms() + TEST_RUN_TIMEOUT_MS;
    loop->stopping = false;
    loop->on_tick = test_on_tick;
    loop_run(loop, TEST_TICK_MS);
    if (test_timed_out) fprintf(stderr, "  the loop did not reach its goal within %d ms\n", TEST_RUN_TIMEOUT_MS);
    return !test_timed_out;
}

static bool test_loop_open(loop_t *loop, uint32_t ring_entries, uint32_t buffer_count, uint32_t buffer_bytes) {
    char error[256];
    int status = loop_init(loop, ring_entries, buffer_count, buffer_bytes, error, sizeof error);
    if (status != 0) fprintf(stderr, "  loop_init: %s\n", error);
    CHECK_EQ_INT(status, 0);
    test_tick_count = 0;
    test_last_now_ms = 0;
    return status == 0;
}

/* First recorded tick whose now_ms reaches deadline_ms; UINT64_MAX if none. */
static uint64_t test_first_tick_reaching(uint64_t deadline_ms) {
    for (uint32_t index = 0; index < test_tick_count; index++) {
        if (test_tick_now_ms[index] >= deadline_ms) return test_tick_now_ms[index];
    }
    return UINT64_MAX;
}

/* ---- timers ----------------------------------------------------------- */

enum { TEST_TIMERS_MAX = 16 };

typedef struct test_timer_record {
    loop_timer_t timer;
    uint32_t id;
    uint64_t started_now_ms;
    uint64_t deadline_ms;
    uint64_t fired_now_ms;
    uint32_t fired_count;
    uint32_t fired_sequence; /* 1-based order among all firings */
    bool was_active_when_fired;
} test_timer_record_t;

static test_timer_record_t test_timers[TEST_TIMERS_MAX];
static uint32_t test_fired_total;
static uint32_t test_fired_expected;
static loop_t *test_loop_current;

static void test_timer_fired(loop_timer_t *timer) {
    test_timer_record_t *record = timer->owner;
    record->fired_count++;
    record->fired_now_ms = loop_now_ms(test_loop_current);
    record->was_active_when_fired = loop_timer_active(timer);
    record->fired_sequence = ++test_fired_total;
}

static void test_timer_begin(loop_t *loop, loop_timer_list_t *list, uint32_t id) {
    test_timer_record_t *record = &test_timers[id];
    record->started_now_ms = loop_now_ms(loop);
    record->deadline_ms = record->started_now_ms + list->duration_ms;
    loop_timer_start(loop, list, &record->timer);
}

static bool test_all_fired(void) { return test_fired_total >= test_fired_expected; }

static loop_timer_list_t test_list_short;  /* 6 ms */
static loop_timer_list_t test_list_middle; /* 15 ms */
static loop_timer_list_t test_list_long;   /* 40 ms */
static uint32_t test_hook_ticks;

/* Starts a few more timers on the first ticks so timers of one list have
 * different start times. */
static void test_ordering_hook(loop_t *loop) {
    test_hook_ticks++;
    if (test_hook_ticks == 1) {
        test_timer_begin(loop, &test_list_long, 6);
        test_timer_begin(loop, &test_list_short, 7);
    } else if (test_hook_ticks == 3) {
        test_timer_begin(loop, &test_list_short, 8);
        test_timer_begin(loop, &test_list_middle, 9);
    }
}

/* Each timer fires once, never before start + duration on the loop's
 * clock, and exactly at the first tick that reaches its deadline (not a
 * tick later); within one list timers fire in start order. */
static void test_timers_fire_at_first_due_tick_in_order(void) {
    loop_t loop;
    if (!test_loop_open(&loop, TEST_RING_ENTRIES, TEST_BUFFER_COUNT, TEST_BUFFER_BYTES)) return;
    test_loop_current = &loop;
    memset(test_timers, 0, sizeof test_timers);
    test_fired_total = 0;
    test_hook_ticks = 0;
    loop_timer_list_init(&loop, &test_list_long, 40);
    loop_timer_list_init(&loop, &test_list_short, 6);
    loop_timer_list_init(&loop, &test_list_middle, 15);
    for (uint32_t id = 0; id < 10; id++) {
        test_timers[id].id = id;
        loop_timer_init(&test_timers[id].timer, test_timer_fired, &test_timers[id]);
        CHECK(!loop_timer_active(&test_timers[id].timer));
    }
    /* Started before the loop runs: ids 0..5 across the three lists. */
    test_timer_begin(&loop, &test_list_long, 0);
    test_timer_begin(&loop, &test_list_short, 1);
    test_timer_begin(&loop, &test_list_middle, 2);
    test_timer_begin(&loop, &test_list_short, 3);
    test_timer_begin(&loop, &test_list_long, 4);
    test_timer_begin(&loop, &test_list_middle, 5);
    for (uint32_t id = 0; id < 6; id++) CHECK(loop_timer_active(&test_timers[id].timer));
    test_fired_expected = 10;
    CHECK(test_run(&loop, test_all_fired, test_ordering_hook));

    CHECK_EQ_INT(test_fired_total, 10);
    for (uint32_t id = 0; id < 10; id++) {
        test_timer_record_t *record = &test_timers[id];
        CHECK_EQ_INT(record->fired_count, 1);
        CHECK(record->fired_now_ms >= record->deadline_ms);
        CHECK_EQ_INT(record->fired_now_ms, test_first_tick_reaching(record->deadline_ms));
        CHECK(!record->was_active_when_fired);
        CHECK(!loop_timer_active(&record->timer));
    }
    /* Start order within each list: long 0,4,6; short 1,3,7,8; middle 2,5,9. */
    CHECK(test_timers[0].fired_sequence < test_timers[4].fired_sequence);
    CHECK(test_timers[4].fired_sequence < test_timers[6].fired_sequence);
    CHECK(test_timers[1].fired_sequence < test_timers[3].fired_sequence);
    CHECK(test_timers[3].fired_sequence < test_timers[7].fired_sequence);
    CHECK(test_timers[7].fired_sequence < test_timers[8].fired_sequence);
    CHECK(test_timers[2].fired_sequence < test_timers[5].fired_sequence);
    CHECK(test_timers[5].fired_sequence < test_timers[9].fired_sequence);
    /* Across lists: a 6 ms timer started with a 40 ms one fires no later
     * (in the same tick when a late tick reaches both deadlines). */
    CHECK(test_timers[1].fired_now_ms <= test_timers[0].fired_now_ms);
    CHECK(test_timers[2].fired_now_ms <= test_timers[0].fired_now_ms);
    CHECK(!test_now_went_backwards);
    CHECK(!test_now_ahead_of_clock);
    loop_destroy(&loop);
}

/* Callbacks of the stop/restart test. Timer ids in the 40 ms list: 0
 * stopped before the loop ran, 1 restarted by timer 7 of the 10 ms list
 * (whose list expires first, so the restart happens before 1 is due even
 * when a tick comes late), 2 and 3 due together (2's callback stops 3), 4
 * and 5 due together (4's callback restarts 5), 6 periodic (restarts itself
 * until it has fired five times). */
static loop_timer_list_t test_list_restarter;
static loop_timer_list_t test_list_stop;
static uint64_t test_restart_now_ms;
static uint64_t test_periodic_now_ms[8];

static void test_stopper_fired(loop_timer_t *timer) {
    test_timer_fired(timer);
    loop_timer_stop(&test_timers[3].timer);
}

static void test_restarter_fired(loop_timer_t *timer) {
    test_timer_fired(timer);
    test_timer_begin(test_loop_current, &test_list_stop, 5);
}

static void test_restart_one_fired(loop_timer_t *timer) {
    test_timer_fired(timer);
    test_restart_now_ms = loop_now_ms(test_loop_current);
    test_timer_begin(test_loop_current, &test_list_stop, 1);
}

static void test_periodic_fired(loop_timer_t *timer) {
    test_timer_record_t *record = timer->owner;
    test_timer_fired(timer);
    test_periodic_now_ms[record->fired_count - 1] = record->fired_now_ms;
    if (record->fired_count < 5) test_timer_begin(test_loop_current, &test_list_stop, 6);
}

/* Done once everything expected has fired and two more durations have
 * passed beyond the stopped timers' deadlines. */
static bool test_restart_done(void) {
    return test_timers[6].fired_count == 5 && test_timers[1].fired_count == 1 && test_timers[5].fired_count == 1 &&
           loop_now_ms(test_loop_current) >= test_timers[3].deadline_ms + 2 * test_list_stop.duration_ms;
}

/* A stopped timer never fires; a restarted one fires once, a full duration
 * after the restart; stopping the next due timer from a callback keeps it
 * from firing in the same expiry pass; restarting another due timer moves it
 * to a later deadline; a timer may restart itself; starting an active timer
 * moves it to the tail instead of linking it twice. */
static void test_timer_stop_and_restart(void) {
    loop_t loop;
    if (!test_loop_open(&loop, TEST_RING_ENTRIES, TEST_BUFFER_COUNT, TEST_BUFFER_BYTES)) return;
    test_loop_current = &loop;
    memset(test_timers, 0, sizeof test_timers);
    memset(test_periodic_now_ms, 0, sizeof test_periodic_now_ms);
    test_fired_total = 0;
    test_restart_now_ms = 0;
    loop_timer_list_init(&loop, &test_list_restarter, 10);
    loop_timer_list_init(&loop, &test_list_stop, 40);
    loop_timer_init(&test_timers[0].timer, test_timer_fired, &test_timers[0]);
    loop_timer_init(&test_timers[1].timer, test_timer_fired, &test_timers[1]);
    loop_timer_init(&test_timers[2].timer, test_stopper_fired, &test_timers[2]);
    loop_timer_init(&test_timers[3].timer, test_timer_fired, &test_timers[3]);
    loop_timer_init(&test_timers[4].timer, test_restarter_fired, &test_timers[4]);
    loop_timer_init(&test_timers[5].timer, test_timer_fired, &test_timers[5]);
    loop_timer_init(&test_timers[6].timer, test_periodic_fired, &test_timers[6]);
    loop_timer_init(&test_timers[7].timer, test_restart_one_fired, &test_timers[7]);

    /* Stopping a timer that never started, twice, changes nothing. */
    loop_timer_stop(&test_timers[0].timer);
    loop_timer_stop(&test_timers[0].timer);
    CHECK(!loop_timer_active(&test_timers[0].timer));
    for (uint32_t id = 0; id < 7; id++) test_timer_begin(&loop, &test_list_stop, id);
    test_timer_begin(&loop, &test_list_restarter, 7);
    uint64_t first_start_ms = test_timers[1].started_now_ms;
    loop_timer_stop(&test_timers[0].timer);
    CHECK(!loop_timer_active(&test_timers[0].timer));
    CHECK(loop_timer_active(&test_timers[1].timer));
    /* Starting an active timer again only moves it to the tail. */
    test_timer_begin(&loop, &test_list_stop, 6);
    CHECK(test_list_stop.sentinel.previous == &test_timers[6].timer);
    CHECK(test_timers[5].timer.next == &test_timers[6].timer);
    uint32_t linked = 0;
    for (loop_timer_t *timer = test_list_stop.sentinel.next; timer != &test_list_stop.sentinel && linked < 16;
         timer = timer->next) {
        linked++;
    }
    CHECK_EQ_INT(linked, 6);
    CHECK(test_run(&loop, test_restart_done, NULL));

    CHECK_EQ_INT(test_timers[0].fired_count, 0);
    CHECK_EQ_INT(test_timers[7].fired_count, 1);
    CHECK(test_restart_now_ms >= first_start_ms + test_list_restarter.duration_ms);
    CHECK_EQ_INT(test_timers[1].fired_count, 1);
    CHECK(test_timers[1].fired_now_ms >= test_restart_now_ms + test_list_stop.duration_ms);
    CHECK_EQ_INT(test_timers[1].fired_now_ms, test_first_tick_reaching(test_timers[1].deadline_ms));
    CHECK_EQ_INT(test_timers[2].fired_count, 1);
    CHECK_EQ_INT(test_timers[3].fired_count, 0);
    CHECK(!loop_timer_active(&test_timers[3].timer));
    CHECK_EQ_INT(test_timers[4].fired_count, 1);
    /* Timer 5 was due with 4 but moved: it fired once, a duration after 4. */
    CHECK_EQ_INT(test_timers[5].fired_count, 1);
    CHECK(test_timers[5].fired_now_ms >= test_timers[4].fired_now_ms + test_list_stop.duration_ms);
    CHECK_EQ_INT(test_timers[6].fired_count, 5);
    for (uint32_t index = 1; index < 5; index++) {
        CHECK(test_periodic_now_ms[index] >= test_periodic_now_ms[index - 1] + test_list_stop.duration_ms);
    }
    CHECK(!loop_timer_active(&test_timers[6].timer));
    /* The lists are empty again: each sentinel points at itself. */
    CHECK(test_list_stop.sentinel.next == &test_list_stop.sentinel);
    CHECK(test_list_stop.sentinel.previous == &test_list_stop.sentinel);
    CHECK(test_list_restarter.sentinel.next == &test_list_restarter.sentinel);
    loop_destroy(&loop);
}

/* ---- operations ------------------------------------------------------- */

enum { TEST_OPERATIONS_MAX = 8 };

typedef struct test_completion {
    loop_operation_t operation;
    uint32_t count;
    int32_t result;
    uint32_t flags;
    bool in_flight_in_callback;
    uint64_t completed_now_ms;
} test_completion_t;

static test_completion_t test_completions[TEST_OPERATIONS_MAX];

static void test_on_completion(loop_operation_t *operation, int32_t result, uint32_t flags) {
    test_completion_t *completion = operation->owner;
    completion->count++;
    completion->result = result;
    completion->flags = flags;
    completion->in_flight_in_callback = operation->in_flight;
    completion->completed_now_ms = loop_now_ms(test_loop_current);
}

static loop_operation_t *test_operation(uint32_t index) {
    test_completion_t *completion = &test_completions[index];
    memset(completion, 0, sizeof *completion);
    completion->operation.callback = test_on_completion;
    completion->operation.owner = completion;
    return &completion->operation;
}

static uint32_t test_completions_wanted;
static bool test_completions_done(void) {
    for (uint32_t index = 0; index < test_completions_wanted; index++) {
        if (test_completions[index].count == 0) return false;
    }
    return true;
}

static bool test_run_completions(loop_t *loop, uint32_t wanted) {
    test_completions_wanted = wanted;
    return test_run(loop, test_completions_done, NULL);
}

/* A TCP port on 127.0.0.1 that is bound but not listening: a connect to it
 * is refused, and nobody else can take the port while fd is open. */
static uint16_t test_refusing_port(int *fd) {
    *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    RW_ASSERT(*fd >= 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    RW_ASSERT(bind(*fd, (struct sockaddr *)&address, sizeof address) == 0);
    socklen_t length = sizeof address;
    RW_ASSERT(getsockname(*fd, (struct sockaddr *)&address, &length) == 0);
    return ntohs(address.sin_port);
}

/* Each helper's completion carries the operation's own result: a sleep
 * ends with -ETIME after at least its duration, a send and a receive with
 * their byte counts (the bytes cross a real socket pair), a shutdown with 0
 * and the peer then reads end-of-file, a refused connect with -ECONNREFUSED;
 * in_flight is already false in the callback of a single-shot operation. */
static void test_operation_results(void) {
    loop_t loop;
    if (!test_loop_open(&loop, TEST_RING_ENTRIES, TEST_BUFFER_COUNT, TEST_BUFFER_BYTES)) return;
    test_loop_current = &loop;
    int pair[2];
    RW_ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);

    /* Sleep: -ETIME, no earlier than 25 ms on the loop's clock. */
    struct __kernel_timespec duration = {.tv_sec = 0, .tv_nsec = 25 * 1000000};
    loop_operation_t *sleep_operation = test_operation(0);
    uint64_t sleep_started_ms = loop_clock_ms();
    loop_sleep(&loop, sleep_operation, &duration);
    CHECK(sleep_operation->in_flight);
    /* Receive into our buffer what the peer wrote; send to the peer. */
    static const char hello[] = "hello, ring";
    RW_ASSERT(write(pair[1], hello, sizeof hello - 1) == (ssize_t)(sizeof hello - 1));
    uint8_t received[64];
    memset(received, 0, sizeof received);
    loop_recv(&loop, test_operation(1), pair[0], received, sizeof received);
    static const char reply[] = "reply bytes";
    loop_send(&loop, test_operation(2), pair[0], reply, sizeof reply - 1);
    int refusing_fd = -1;
    uint16_t port = test_refusing_port(&refusing_fd);
    int client_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    RW_ASSERT(client_fd >= 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    loop_connect(&loop, test_operation(3), client_fd, (struct sockaddr *)&address, sizeof address);
    CHECK(test_run_completions(&loop, 4));

    CHECK_EQ_INT(test_completions[0].count, 1);
    CHECK_EQ_INT(test_completions[0].result, -ETIME);
    CHECK(!test_completions[0].in_flight_in_callback);
    CHECK(test_completions[0].completed_now_ms >= sleep_started_ms + 25);
    CHECK_EQ_INT(test_completions[1].count, 1);
    CHECK_EQ_INT(test_completions[1].result, (int32_t)(sizeof hello - 1));
    CHECK_EQ_BYTES(received, (size_t)(test_completions[1].result > 0 ? test_completions[1].result : 0), hello);
    CHECK(!(test_completions[1].flags & IORING_CQE_F_BUFFER));
    CHECK(!test_completions[1].in_flight_in_callback);
    CHECK_EQ_INT(test_completions[2].result, (int32_t)(sizeof reply - 1));
    char peer[64];
    ssize_t peer_length = read(pair[1], peer, sizeof peer);
    CHECK_EQ_BYTES(peer, (size_t)(peer_length > 0 ? peer_length : 0), reply);
    CHECK_EQ_INT(test_completions[3].result, -ECONNREFUSED);

    /* sendmsg gathers pieces in order; shutdown ends our side: the peer
     * reads the pieces, then end-of-file. */
    struct iovec pieces[3] = {{.iov_base = "one,", .iov_len = 4},
                              {.iov_base = "two,", .iov_len = 4},
                              {.iov_base = "three", .iov_len = 5}};
    struct msghdr message = {.msg_iov = pieces, .msg_iovlen = 3};
    loop_sendmsg(&loop, test_operation(0), pair[0], &message);
    CHECK(test_run_completions(&loop, 1));
    CHECK_EQ_INT(test_completions[0].result, 13);
    loop_shutdown(&loop, test_operation(0), pair[0], SHUT_WR);
    CHECK(test_run_completions(&loop, 1));
    CHECK_EQ_INT(test_completions[0].result, 0);
    peer_length = read(pair[1], peer, sizeof peer);
    CHECK_EQ_BYTES(peer, (size_t)(peer_length > 0 ? peer_length : 0), "one,two,three");
    CHECK_EQ_INT(read(pair[1], peer, sizeof peer), 0);

    /* A receive on a socket whose peer has shut its side ends with 0. */
    RW_ASSERT(shutdown(pair[1], SHUT_WR) == 0);
    loop_recv(&loop, test_operation(0), pair[0], received, sizeof received);
    CHECK(test_run_completions(&loop, 1));
    CHECK_EQ_INT(test_completions[0].result, 0);

    close(client_fd);
    close(refusing_fd);
    close(pair[0]);
    close(pair[1]);
    loop_destroy(&loop);
}

/* A pending receive is cancelled: it completes with -ECANCELED and the
 * cancel itself with 0; a second cancel while none is pending is skipped
 * (nothing is submitted, so it never completes). */
static void test_cancel_pending_receive(void) {
    loop_t loop;
    if (!test_loop_open(&loop, TEST_RING_ENTRIES, TEST_BUFFER_COUNT, TEST_BUFFER_BYTES)) return;
    test_loop_current = &loop;
    int pair[2];
    RW_ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    uint8_t received[16];
    loop_operation_t *receive = test_operation(0);
    loop_operation_t *cancel = test_operation(1);
    loop_recv(&loop, receive, pair[0], received, sizeof received);
    loop_cancel(&loop, cancel, receive);
    CHECK(cancel->in_flight);
    CHECK(test_run_completions(&loop, 2));
    CHECK_EQ_INT(test_completions[0].count, 1);
    CHECK_EQ_INT(test_completions[0].result, -ECANCELED);
    CHECK_EQ_INT(test_completions[1].count, 1);
    CHECK_EQ_INT(test_completions[1].result, 0);
    CHECK(!receive->in_flight && !cancel->in_flight);
    /* The target is no longer in flight: the cancel is not submitted. */
    loop_cancel(&loop, cancel, receive);
    CHECK(!cancel->in_flight);
    close(pair[0]);
    close(pair[1]);
    loop_destroy(&loop);
}

/* A multishot accept stays armed across connections (IORING_CQE_F_MORE,
 * in_flight still true) and hands out a new descriptor per connection; a
 * cancel ends it with a last completion without the flag. */
static uint32_t test_accepted_count;
static int test_accepted_fds[8];
static bool test_accept_in_flight_each[8];
static int32_t test_accept_last_result;
static uint32_t test_accept_last_flags;

static void test_on_accept(loop_operation_t *operation, int32_t result, uint32_t flags) {
    test_accept_last_result = result;
    test_accept_last_flags = flags;
    if (result >= 0 && test_accepted_count < 8) {
        test_accept_in_flight_each[test_accepted_count] = operation->in_flight && (flags & IORING_CQE_F_MORE);
        test_accepted_fds[test_accepted_count++] = result;
    }
}

static bool test_three_accepted(void) { return test_accepted_count >= 3; }

static void test_accept_multishot(void) {
    loop_t loop;
    if (!test_loop_open(&loop, TEST_RING_ENTRIES, TEST_BUFFER_COUNT, TEST_BUFFER_BYTES)) return;
    test_loop_current = &loop;
    char error[256];
    int listen_fd = loop_listen_socket("127.0.0.1", 0, 16, error, sizeof error);
    CHECK(listen_fd >= 0);
    if (listen_fd < 0) {
        loop_destroy(&loop);
        return;
    }
    struct sockaddr_in address;
    socklen_t length = sizeof address;
    RW_ASSERT(getsockname(listen_fd, (struct sockaddr *)&address, &length) == 0);
    test_accepted_count = 0;
    loop_operation_t accept_operation = {.callback = test_on_accept, .owner = NULL};
    loop_accept_multishot(&loop, &accept_operation, listen_fd);
    int clients[3];
    for (int index = 0; index < 3; index++) {
        clients[index] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        RW_ASSERT(clients[index] >= 0);
        CHECK_EQ_INT(connect(clients[index], (struct sockaddr *)&address, length), 0);
    }
    CHECK(test_run(&loop, test_three_accepted, NULL));
    CHECK_EQ_INT(test_accepted_count, 3);
    for (uint32_t index = 0; index < test_accepted_count && index < 3; index++) {
        CHECK(test_accepted_fds[index] >= 0);
        CHECK(test_accept_in_flight_each[index]);
        for (uint32_t other = 0; other < index; other++) CHECK(test_accepted_fds[other] != test_accepted_fds[index]);
    }
    /* Bytes written on an accepted descriptor reach the matching client. */
    if (test_accepted_count == 3) {
        CHECK_EQ_INT(write(test_accepted_fds[0], "x", 1), 1);
        int ready = 0;
        for (int index = 0; index < 3; index++) {
            char byte = 0;
            if (recv(clients[index], &byte, 1, MSG_DONTWAIT) == 1 && byte == 'x') ready++;
        }
        CHECK_EQ_INT(ready, 1);
    }
    loop_operation_t *cancel = test_operation(0);
    loop_cancel(&loop, cancel, &accept_operation);
    test_completions_wanted = 1;
    CHECK(test_run_completions(&loop, 1));
    CHECK(!accept_operation.in_flight);
    CHECK_EQ_INT(test_accept_last_result, -ECANCELED);
    CHECK(!(test_accept_last_flags & IORING_CQE_F_MORE));
    for (uint32_t index = 0; index < test_accepted_count; index++) close(test_accepted_fds[index]);
    for (int index = 0; index < 3; index++) close(clients[index]);
    close(listen_fd);
    loop_destroy(&loop);
}

/* ---- the overflow path ------------------------------------------------ */

enum {
    TEST_OVERFLOW_RING_ENTRIES = 4, /* SQ 4, CQ 16 */
    TEST_OVERFLOW_FIRST = 256,      /* submitted before the loop runs */
    TEST_OVERFLOW_CHAINED = 64,     /* submitted from callbacks, SQ full again */
    TEST_OVERFLOW_TOTAL = TEST_OVERFLOW_FIRST + TEST_OVERFLOW_CHAINED,
};

static loop_operation_t test_overflow_operations[TEST_OVERFLOW_TOTAL];
static struct __kernel_timespec test_overflow_durations[TEST_OVERFLOW_TOTAL];
static uint32_t test_overflow_counts[TEST_OVERFLOW_TOTAL];
static uint32_t test_overflow_bad_results;
static uint32_t test_overflow_completed;
static uint32_t test_overflow_chained;

static void test_on_overflow_sleep(loop_operation_t *operation, int32_t result, uint32_t flags) {
    uint32_t index = (uint32_t)(operation - test_overflow_operations);
    RW_ASSERT(index < TEST_OVERFLOW_TOTAL);
    test_overflow_counts[index]++;
    test_overflow_completed++;
    if (result != -ETIME || operation->in_flight) test_overflow_bad_results++;
    /* The first completions each submit one more, while the SQ is refilled
     * by the others: submission from callbacks takes the overflow path too. */
    if (index < TEST_OVERFLOW_CHAINED && test_overflow_chained < TEST_OVERFLOW_CHAINED) {
        uint32_t next = TEST_OVERFLOW_FIRST + test_overflow_chained++;
        loop_sleep(test_loop_current, &test_overflow_operations[next], &test_overflow_durations[next]);
    }
}

static bool test_overflow_done(void) { return test_overflow_completed >= TEST_OVERFLOW_TOTAL; }

/* 320 operations through a ring of 4 submission and 16 completion entries:
 * every one is submitted (none dropped when the SQ is full) and completes
 * exactly once with its own result, also when the CQ itself overflows. */
static void test_submission_queue_overflow(void) {
    loop_t loop;
    if (!test_loop_open(&loop, TEST_OVERFLOW_RING_ENTRIES, TEST_BUFFER_COUNT, TEST_BUFFER_BYTES)) return;
    test_loop_current = &loop;
    memset(test_overflow_counts, 0, sizeof test_overflow_counts);
    test_overflow_bad_results = 0;
    test_overflow_completed = 0;
    test_overflow_chained = 0;
    for (uint32_t index = 0; index < TEST_OVERFLOW_TOTAL; index++) {
        test_overflow_operations[index] = (loop_operation_t){.callback = test_on_overflow_sleep};
        /* 0 .. 3 ms: many complete together, more than the CQ holds. */
        test_overflow_durations[index] = (struct __kernel_timespec){.tv_sec = 0, .tv_nsec = (index % 4) * 1000000};
    }
    for (uint32_t index = 0; index < TEST_OVERFLOW_FIRST; index++) {
        loop_sleep(&loop, &test_overflow_operations[index], &test_overflow_durations[index]);
    }
    CHECK(test_run(&loop, test_overflow_done, NULL));
    CHECK_EQ_INT(test_overflow_completed, TEST_OVERFLOW_TOTAL);
    CHECK_EQ_INT(test_overflow_chained, TEST_OVERFLOW_CHAINED);
    CHECK_EQ_INT(test_overflow_bad_results, 0);
    uint32_t not_once = 0;
    for (uint32_t index = 0; index < TEST_OVERFLOW_TOTAL; index++) {
        if (test_overflow_counts[index] != 1) not_once++;
    }
    CHECK_EQ_INT(not_once, 0);
    loop_destroy(&loop);
}

/* ---- provided buffers --------------------------------------------------- */

enum { TEST_SMALL_BUFFER_COUNT = 4, TEST_SMALL_BUFFER_BYTES = 1024 };

typedef struct test_receipt {
    int32_t result;
    uint32_t flags;
    char bytes[TEST_SMALL_BUFFER_BYTES];
} test_receipt_t;

static test_receipt_t test_receipts[16];
static uint32_t test_receipt_count;
static loop_t *test_buffer_loop;

static void test_on_multishot(loop_operation_t *operation, int32_t result, uint32_t flags) {
    RW_ASSERT(test_receipt_count < RW_ARRAY_LENGTH(test_receipts));
    test_receipt_t *receipt = &test_receipts[test_receipt_count++];
    receipt->result = result;
    receipt->flags = flags;
    if (result > 0 && (flags & IORING_CQE_F_BUFFER)) {
        RW_ASSERT((size_t)result <= sizeof receipt->bytes);
        memcpy(receipt->bytes, loop_buffer(test_buffer_loop, loop_buffer_id(flags)), (size_t)result);
    }
}

static uint32_t test_receipts_wanted;
static bool test_receipts_done(void) { return test_receipt_count >= test_receipts_wanted; }

/* Writes one message and runs the loop until it has been received. */
static bool test_deliver(loop_t *loop, int fd, const char *text) {
    size_t length = strlen(text);
    RW_ASSERT(write(fd, text, length) == (ssize_t)length);
    test_receipts_wanted = test_receipt_count + 1;
    return test_run(loop, test_receipts_done, NULL);
}

/* A multishot receive takes the ring's buffers in order (0, 1, 2, 3), each
 * holding exactly the bytes of its message; with all four held the next
 * message ends the receive with -ENOBUFS and stays in the socket; buffers
 * given back are handed out again in the order they were released, with the
 * next bytes in them. */
static void test_provided_buffers_hand_out_and_recycle(void) {
    loop_t loop;
    if (!test_loop_open(&loop, TEST_RING_ENTRIES, TEST_SMALL_BUFFER_COUNT, TEST_SMALL_BUFFER_BYTES)) return;
    test_loop_current = &loop;
    test_buffer_loop = &loop;
    test_receipt_count = 0;
    int pair[2];
    RW_ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    loop_operation_t receive = {.callback = test_on_multishot};
    loop_recv_multishot(&loop, &receive, pair[0]);
    static const char *const first[4] = {"alpha", "bravo-bravo", "charlie", "delta!"};
    for (uint32_t index = 0; index < 4; index++) CHECK(test_deliver(&loop, pair[1], first[index]));
    CHECK_EQ_INT(test_receipt_count, 4);
    for (uint32_t index = 0; index < 4 && index < test_receipt_count; index++) {
        test_receipt_t *receipt = &test_receipts[index];
        CHECK(receipt->flags & IORING_CQE_F_BUFFER);
        CHECK(receipt->flags & IORING_CQE_F_MORE);
        CHECK_EQ_INT(loop_buffer_id(receipt->flags), index);
        CHECK_EQ_BYTES(receipt->bytes, (size_t)(receipt->result > 0 ? receipt->result : 0), first[index]);
    }
    CHECK(receive.in_flight);
    /* Every buffer is held: the receive ends, the bytes wait in the socket. */
    CHECK(test_deliver(&loop, pair[1], "echo"));
    CHECK_EQ_INT(test_receipt_count, 5);
    CHECK_EQ_INT(test_receipts[4].result, -ENOBUFS);
    CHECK(!(test_receipts[4].flags & IORING_CQE_F_MORE));
    CHECK(!receive.in_flight);

    static const uint16_t release_order[4] = {2, 0, 3, 1};
    for (uint32_t index = 0; index < 4; index++) loop_buffer_release(&loop, release_order[index]);
    loop_recv_multishot(&loop, &receive, pair[0]);
    test_receipts_wanted = 6;
    CHECK(test_run(&loop, test_receipts_done, NULL));
    CHECK_EQ_INT(test_receipt_count, 6);
    CHECK_EQ_INT(loop_buffer_id(test_receipts[5].flags), 2);
    CHECK_EQ_BYTES(test_receipts[5].bytes, (size_t)(test_receipts[5].result > 0 ? test_receipts[5].result : 0),
                   "echo");
    static const char *const second[3] = {"foxtrot", "golf", "hotel"};
    for (uint32_t index = 0; index < 3; index++) CHECK(test_deliver(&loop, pair[1], second[index]));
    CHECK_EQ_INT(test_receipt_count, 9);
    for (uint32_t index = 0; index < 3 && 6 + index < test_receipt_count; index++) {
        test_receipt_t *receipt = &test_receipts[6 + index];
        CHECK_EQ_INT(loop_buffer_id(receipt->flags), release_order[index + 1]);
        CHECK_EQ_BYTES(receipt->bytes, (size_t)(receipt->result > 0 ? receipt->result : 0), second[index]);
    }
    /* A message longer than a buffer is split across buffers, none
     * overfilled: release one, send 1500 bytes, get 1024 then the rest. */
    loop_buffer_release(&loop, 2);
    loop_buffer_release(&loop, 0);
    char large[1501];
    for (size_t index = 0; index < 1500; index++) large[index] = (char)('a' + index % 26);
    large[1500] = '\0';
    RW_ASSERT(write(pair[1], large, 1500) == 1500);
    test_receipts_wanted = test_receipt_count + 2;
    CHECK(test_run(&loop, test_receipts_done, NULL));
    CHECK_EQ_INT(test_receipt_count, 11);
    if (test_receipt_count == 11) {
        CHECK_EQ_INT(test_receipts[9].result, TEST_SMALL_BUFFER_BYTES);
        CHECK_EQ_INT(test_receipts[10].result, 1500 - TEST_SMALL_BUFFER_BYTES);
        CHECK(memcmp(test_receipts[9].bytes, large, TEST_SMALL_BUFFER_BYTES) == 0);
        CHECK(memcmp(test_receipts[10].bytes, large + TEST_SMALL_BUFFER_BYTES, 1500 - TEST_SMALL_BUFFER_BYTES) == 0);
        CHECK_EQ_INT(loop_buffer_id(test_receipts[9].flags), 2);
        CHECK_EQ_INT(loop_buffer_id(test_receipts[10].flags), 0);
    }
    /* Distinct buffers are distinct memory, each buffer_bytes long. */
    CHECK(loop_buffer(&loop, 1) - loop_buffer(&loop, 0) == TEST_SMALL_BUFFER_BYTES);
    CHECK(loop_buffer(&loop, 3) - loop_buffer(&loop, 0) == 3 * TEST_SMALL_BUFFER_BYTES);
    /* The peer closes: the multishot receive ends with 0 (it still picks a
     * buffer first, so one is given back before). */
    loop_buffer_release(&loop, 1);
    close(pair[1]);
    test_receipts_wanted = test_receipt_count + 1;
    CHECK(test_run(&loop, test_receipts_done, NULL));
    CHECK_EQ_INT(test_receipts[test_receipt_count - 1].result, 0);
    CHECK(!receive.in_flight);
    close(pair[0]);
    loop_destroy(&loop);
}

/* ---- clock, iovecs, addresses --------------------------------------------- */

static uint32_t test_clock_ticks;
static bool test_clock_ticks_done(void) { return ++test_clock_ticks >= 20; }

/* loop_now_ms never goes backwards and is never ahead of the real clock;
 * it is refreshed while the loop runs (it advances over 20 ticks of 2 ms). */
static void test_now_ms_monotonic(void) {
    loop_t loop;
    if (!test_loop_open(&loop, TEST_RING_ENTRIES, TEST_BUFFER_COUNT, TEST_BUFFER_BYTES)) return;
    test_loop_current = &loop;
    uint64_t before_ms = loop_clock_ms();
    uint64_t initial_ms = loop_now_ms(&loop);
    CHECK(initial_ms <= before_ms);
    test_now_went_backwards = false;
    test_now_ahead_of_clock = false;
    test_last_now_ms = initial_ms;
    test_clock_ticks = 0;
    CHECK(test_run(&loop, test_clock_ticks_done, NULL));
    CHECK(!test_now_went_backwards);
    CHECK(!test_now_ahead_of_clock);
    CHECK(test_tick_count >= 20);
    /* 20 ticks of at least 2 ms each: the cached clock moved by 40 ms. */
    CHECK(test_tick_now_ms[test_tick_count - 1] >= initial_ms + 20 * TEST_TICK_MS);
    CHECK(loop_now_ms(&loop) <= loop_clock_ms());
    loop_destroy(&loop);
}

/* A partial send moves the index past whole pieces and trims the first
 * unsent one; exact ends land on the next piece. */
static void test_iovec_advance(void) {
    char text[] = "abcdefghij";
    struct iovec pieces[3] = {{.iov_base = text, .iov_len = 3},
                              {.iov_base = text + 3, .iov_len = 5},
                              {.iov_base = text + 8, .iov_len = 2}};
    uint32_t index = 0;
    loop_iovec_advance(pieces, 3, &index, 0);
    CHECK_EQ_INT(index, 0);
    CHECK_EQ_INT(pieces[0].iov_len, 3);
    loop_iovec_advance(pieces, 3, &index, 4);
    CHECK_EQ_INT(index, 1);
    CHECK(pieces[1].iov_base == text + 4);
    CHECK_EQ_INT(pieces[1].iov_len, 4);
    loop_iovec_advance(pieces, 3, &index, 4);
    CHECK_EQ_INT(index, 2);
    CHECK_EQ_INT(pieces[1].iov_len, 0);
    CHECK(pieces[2].iov_base == text + 8);
    loop_iovec_advance(pieces, 3, &index, 1);
    CHECK_EQ_INT(index, 2);
    CHECK_EQ_BYTES(pieces[2].iov_base, pieces[2].iov_len, "j");
    loop_iovec_advance(pieces, 3, &index, 1);
    CHECK_EQ_INT(index, 3);
}

/* Resolution gives the address and port asked for; an unknown name fails
 * with a message; a listening socket takes connections on its port. */
static void test_resolve_and_listen(void) {
    struct sockaddr_storage address;
    socklen_t length = 0;
    char error[256] = "";
    CHECK_EQ_INT(loop_resolve("127.0.0.1", 4321, &address, &length, error, sizeof error), 0);
    CHECK_EQ_INT(address.ss_family, AF_INET);
    CHECK_EQ_INT(length, sizeof(struct sockaddr_in));
    const struct sockaddr_in *inet = (const struct sockaddr_in *)&address;
    CHECK_EQ_INT(ntohs(inet->sin_port), 4321);
    CHECK_EQ_INT(ntohl(inet->sin_addr.s_addr), INADDR_LOOPBACK);
    CHECK_EQ_INT(loop_resolve("no-such-host.invalid", 80, &address, &length, error, sizeof error), -1);
    CHECK(strstr(error, "cannot resolve no-such-host.invalid") != NULL);

    int listen_fd = loop_listen_socket("127.0.0.1", 0, 4, error, sizeof error);
    CHECK(listen_fd >= 0);
    if (listen_fd < 0) return;
    CHECK(fcntl(listen_fd, F_GETFD) & FD_CLOEXEC);
    struct sockaddr_in bound;
    socklen_t bound_length = sizeof bound;
    RW_ASSERT(getsockname(listen_fd, (struct sockaddr *)&bound, &bound_length) == 0);
    CHECK(ntohs(bound.sin_port) != 0);
    int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_EQ_INT(connect(client, (struct sockaddr *)&bound, bound_length), 0);
    int accepted = accept(listen_fd, NULL, NULL);
    CHECK(accepted >= 0);
    if (accepted >= 0) close(accepted);
    close(client);
    close(listen_fd);
}

/* io_uring may be missing (old kernel, seccomp): skip the file cleanly. */
static bool test_io_uring_available(void) {
    loop_t loop;
    char error[256];
    if (loop_init(&loop, 8, 4, 1024, error, sizeof error) != 0) {
        fprintf(stderr, "SKIP test_loop: %s\n", error);
        return false;
    }
    loop_destroy(&loop);
    return true;
}

int main(void) {
    RUN_TEST(test_iovec_advance);
    RUN_TEST(test_resolve_and_listen);
    if (!test_io_uring_available()) return UNIT_REPORT();
    RUN_TEST(test_timers_fire_at_first_due_tick_in_order);
    RUN_TEST(test_timer_stop_and_restart);
    RUN_TEST(test_operation_results);
    RUN_TEST(test_cancel_pending_receive);
    RUN_TEST(test_accept_multishot);
    RUN_TEST(test_submission_queue_overflow);
    RUN_TEST(test_provided_buffers_hand_out_and_recycle);
    RUN_TEST(test_now_ms_monotonic);
    return UNIT_REPORT();
}
