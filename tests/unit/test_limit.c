/* Unit tests for src/limit/limit.c: leases, windows, put-backs, charges and
 * idle returns on one thread, then randomized multi-thread schedules that
 * prove the bound (never more than the limit admitted in a window, never
 * more than the limit in flight) and measure the share of the limit a
 * client sending faster than it gets (at least 98%). */
#include "ringway/limit.h"
#include "unit.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

static unit_random_t test_random = {0x9e3779b97f4a7c15ull};

static void test_take_from_lease_then_pool(void) {
    limit_pool_t pool = {0};
    limit_shard_t shard = {0};
    uint32_t window = 7;
    /* One thread: the first take leases 1 + 99 / 2 = 50. */
    CHECK(limit_take(&pool, &shard, 100, &window, 1, 1));
    CHECK_EQ_INT(window, 7);
    CHECK_EQ_INT(shard.lease, 49);
    CHECK_EQ_INT(atomic_load(&pool.word) & LIMIT_VALUE_MAX, 50);
    /* The next 49 come from the lease without touching the pool. */
    uint64_t word = atomic_load(&pool.word);
    for (int index = 0; index < 49; index++) CHECK(limit_take(&pool, &shard, 100, &window, 1, 1));
    CHECK_EQ_INT(shard.lease, 0);
    CHECK(atomic_load(&pool.word) == word);
    /* Then the rest, and exactly 100 in all. */
    int admitted = 50;
    while (limit_take(&pool, &shard, 100, &window, 1, 1)) admitted++;
    CHECK_EQ_INT(admitted, 100);
    CHECK_EQ_INT(limit_remaining(&pool, &shard, 100, 7), 0);
}

static void test_cost_larger_than_left_is_refused_whole(void) {
    limit_pool_t pool = {0};
    limit_shard_t shard = {0};
    uint32_t window = 1;
    CHECK(limit_take(&pool, &shard, 1000, &window, 990, 1));
    CHECK(!limit_take(&pool, &shard, 1000, &window, 11, 1));
    CHECK_EQ_INT(limit_remaining(&pool, &shard, 1000, 1), 10);
    CHECK(limit_take(&pool, &shard, 1000, &window, 10, 1));
    CHECK_EQ_INT(limit_remaining(&pool, &shard, 1000, 1), 0);
    /* A cost above the limit never fits, even in a fresh window. */
    window = 2;
    CHECK(!limit_take(&pool, &shard, 1000, &window, 1001, 1));
    CHECK_EQ_INT(limit_remaining(&pool, &shard, 1000, 2), 1000);
}

static void test_new_window_starts_empty(void) {
    limit_pool_t pool = {0};
    limit_shard_t shard = {0};
    uint32_t window = 5;
    while (limit_take(&pool, &shard, 10, &window, 1, 1)) {
    }
    window = 6;
    int admitted = 0;
    while (limit_take(&pool, &shard, 10, &window, 1, 1)) admitted++;
    CHECK_EQ_INT(admitted, 10);
    CHECK_EQ_INT(window, 6);
}

/* A thread whose clock is still in the previous window counts in the
 * pool's later window once another thread opened it; its own old lease is
 * void there. */
static void test_lagging_clock_joins_the_later_window(void) {
    limit_pool_t pool = {0};
    limit_shard_t ahead = {0};
    limit_shard_t behind = {0};
    uint32_t window = 10;
    CHECK(limit_take(&pool, &behind, 40, &window, 1, 2));
    CHECK(behind.lease > 0);
    uint32_t later = 11;
    CHECK(limit_take(&pool, &ahead, 40, &later, 1, 2));
    /* `behind` still has a lease of window 10 and uses it there. */
    window = 10;
    CHECK(limit_take(&pool, &behind, 40, &window, 1, 2));
    CHECK_EQ_INT(window, 10);
    /* Once its lease is spent it goes to the pool, which is in window 11. */
    behind.lease = 0;
    window = 10;
    CHECK(limit_take(&pool, &behind, 40, &window, 1, 2));
    CHECK_EQ_INT(window, 11);
    CHECK_EQ_INT(behind.window, 11);
}

static void test_put_back_and_charge(void) {
    limit_pool_t pool = {0};
    limit_shard_t shard = {0};
    uint32_t window = 3;
    CHECK(limit_take(&pool, &shard, 1000, &window, 600, 1));
    CHECK_EQ_INT(limit_remaining(&pool, &shard, 1000, 3), 400);
    /* The request used 100: 500 come back to this thread. */
    limit_put_back(&shard, 3, 500);
    CHECK_EQ_INT(limit_remaining(&pool, &shard, 1000, 3), 900);
    /* Another used 1,500 more than it took: the window is over its limit
     * and refuses until it ends. */
    limit_charge(&pool, &shard, 3, 1500);
    CHECK_EQ_INT(limit_remaining(&pool, &shard, 1000, 3), 0);
    CHECK(!limit_take(&pool, &shard, 1000, &window, 1, 1));
    /* A put-back or charge for a window that is over changes nothing. */
    window = 4;
    CHECK(limit_take(&pool, &shard, 1000, &window, 1, 1));
    uint64_t word = atomic_load(&pool.word);
    uint64_t lease = shard.lease;
    limit_put_back(&shard, 3, 100);
    limit_charge(&pool, &shard, 3, 100);
    CHECK(atomic_load(&pool.word) == word);
    CHECK_EQ_INT(shard.lease, lease);
}

/* A thread that went quiet gives its lease back on the second tick, so the
 * other thread can use the whole window. */
static void test_idle_lease_returns(void) {
    limit_pool_t pool = {0};
    limit_shard_t quiet = {0};
    limit_shard_t busy = {0};
    uint32_t window = 1;
    CHECK(limit_take(&pool, &quiet, 300, &window, 1, 2));
    CHECK(quiet.lease > 0);
    CHECK(limit_shard_idle(&pool, &quiet));  /* used since the last tick: kept */
    CHECK(!limit_shard_idle(&pool, &quiet)); /* unused for a tick: returned */
    CHECK_EQ_INT(quiet.lease, 0);
    int admitted = 0;
    while (limit_take(&pool, &busy, 300, &window, 1, 2)) admitted++;
    CHECK_EQ_INT(admitted, 299);
    /* A lease of a window that ended is not returned into the new one. */
    limit_pool_t rolled = {0};
    limit_shard_t old = {0};
    limit_shard_t fresh = {0};
    window = 1;
    CHECK(limit_take(&rolled, &old, 100, &window, 1, 2));
    uint32_t next = 2;
    CHECK(limit_take(&rolled, &fresh, 100, &next, 1, 2));
    uint64_t word = atomic_load(&rolled.word);
    CHECK(limit_shard_idle(&rolled, &old));
    CHECK(!limit_shard_idle(&rolled, &old));
    CHECK(atomic_load(&rolled.word) == word);
}

static void test_window_numbers(void) {
    CHECK_EQ_INT(limit_window_of(0, 60000), 1);
    CHECK_EQ_INT(limit_window_of(59999, 60000), 1);
    CHECK_EQ_INT(limit_window_of(60000, 60000), 2);
    CHECK_EQ_INT(limit_window_of((uint64_t)(LIMIT_WINDOW_MASK - 1) * 60000, 60000), LIMIT_WINDOW_MASK);
    CHECK_EQ_INT(limit_window_of((uint64_t)LIMIT_WINDOW_MASK * 60000, 60000), 1);
    /* Wrapped numbers still order: the pool in window 1 is later than a
     * shard in the last window before the wrap. */
    limit_pool_t pool = {0};
    limit_shard_t shard = {0};
    uint32_t window = LIMIT_WINDOW_MASK;
    CHECK(limit_take(&pool, &shard, 10, &window, 1, 1));
    limit_shard_t other = {0};
    uint32_t wrapped = 1;
    CHECK(limit_take(&pool, &other, 10, &wrapped, 1, 1));
    CHECK_EQ_INT(wrapped, 1);
    shard.lease = 0;
    window = LIMIT_WINDOW_MASK;
    CHECK(limit_take(&pool, &shard, 10, &window, 1, 1));
    CHECK_EQ_INT(window, 1);
}

/* Today's window numbers on a fresh pool and shard (both 0, which is no
 * window): the limit holds in this minute and starts again in the next. */
static void test_real_clock_windows_from_fresh_state(void) {
    limit_pool_t pool = {0};
    limit_shard_t shard = {0};
    uint64_t now_ms = 1796301843000ull; /* 2026-12-03 */
    uint32_t minute = limit_window_of(now_ms, 60000);
    int admitted = 0;
    for (int index = 0; index < 8; index++) {
        uint32_t window = minute;
        if (limit_take(&pool, &shard, 5, &window, 1, 1)) {
            CHECK_EQ_INT(window, minute);
            admitted++;
        }
    }
    CHECK_EQ_INT(admitted, 5);
    CHECK_EQ_INT(limit_remaining(&pool, &shard, 5, minute), 0);
    uint32_t next = limit_window_of(now_ms + 60000, 60000);
    CHECK_EQ_INT(limit_remaining(&pool, &shard, 5, next), 5);
    admitted = 0;
    for (int index = 0; index < 8; index++) {
        uint32_t window = next;
        if (limit_take(&pool, &shard, 5, &window, 1, 1)) admitted++;
    }
    CHECK_EQ_INT(admitted, 5);
    /* The remaining count includes this thread's own lease. */
    limit_pool_t fresh = {0};
    limit_shard_t own = {0};
    uint32_t window = minute;
    CHECK(limit_take(&fresh, &own, 5, &window, 1, 1));
    CHECK_EQ_INT(limit_remaining(&fresh, &own, 5, minute), 4);
}

static void test_trim_returns_what_is_kept_beyond(void) {
    limit_pool_t pool = {0};
    limit_shard_t shard = {0};
    uint32_t window = 0;
    CHECK(limit_take(&pool, &shard, 10, &window, 1, 1)); /* leases 1 + 9 / 2 = 5 */
    CHECK_EQ_INT(shard.lease, 4);
    limit_trim(&pool, &shard, 1);
    CHECK_EQ_INT(shard.lease, 1);
    CHECK_EQ_INT(atomic_load(&pool.word) & LIMIT_VALUE_MAX, 2);
    limit_trim(&pool, &shard, 5); /* keeps what it has */
    CHECK_EQ_INT(shard.lease, 1);
}

/* A quota that changes restarts its pool: leases of before are void (not
 * usable, not returned into the new count) and the new count starts at the
 * given value. */
static void test_pool_restart_voids_old_leases(void) {
    limit_pool_t pool = {0};
    limit_shard_t busy = {0};
    limit_shard_t other = {0};
    uint32_t window = limit_pool_window(&pool);
    CHECK_EQ_INT(window, 0);
    CHECK(limit_take(&pool, &busy, 1000, &window, 10, 2)); /* leases 10 + 990 / 4 */
    CHECK(busy.lease > 100);
    limit_pool_restart(&pool, 990);
    uint32_t epoch = limit_pool_window(&pool);
    CHECK_EQ_INT(epoch, 1);
    /* The old lease does not admit in the new epoch; 10 are left for all. */
    window = epoch;
    CHECK(!limit_take(&pool, &busy, 1000, &window, 11, 2));
    window = epoch;
    CHECK(limit_take(&pool, &other, 1000, &window, 10, 2));
    /* A restart never counts less than the pool had granted (requests in
     * flight are in it); a caller that read the epoch before the restart
     * joins the new one. */
    limit_pool_restart(&pool, 0);
    CHECK_EQ_INT(limit_pool_window(&pool), 2);
    window = epoch;
    CHECK(!limit_take(&pool, &busy, 1000, &window, 1, 2));
    window = epoch;
    CHECK(limit_take(&pool, &busy, 1001, &window, 1, 2));
    CHECK_EQ_INT(window, 2);
    /* Leases of an old epoch neither go back nor trip the count. */
    limit_shard_t stale = other;
    limit_put_back(&stale, 1, 5);
    stale.used = 0;
    uint64_t word = atomic_load(&pool.word);
    CHECK(!limit_shard_idle(&pool, &stale));
    CHECK(atomic_load(&pool.word) == word);
}

static void test_pool_set(void) {
    limit_pool_t pool;
    limit_pool_set(&pool, 950);
    limit_shard_t shard = {0};
    uint32_t window = 0;
    CHECK_EQ_INT(limit_remaining(&pool, &shard, 1000, 0), 50);
    CHECK(limit_take(&pool, &shard, 1000, &window, 50, 1));
    CHECK(!limit_take(&pool, &shard, 1000, &window, 1, 1));
}

/* ---------------------------------------------------------------------- */
/* Several threads                                                         */

enum {
    STORM_THREADS = 4,
    STORM_WINDOWS = 40,
    STORM_LIMIT = 997,
};

typedef struct storm {
    limit_pool_t pool;
    _Atomic uint32_t window;                 /* the driver's clock: 1, 2, ... */
    _Atomic uint32_t refused_in[STORM_WINDOWS + 2];  /* threads that met a refusal in window w */
    _Atomic int64_t used_in[STORM_WINDOWS + 2];      /* admitted minus put back, per window */
    _Atomic bool stop;
    _Atomic int64_t in_flight;
    _Atomic int64_t in_flight_max;
    bool concurrency;
    uint64_t seed;
} storm_t;

typedef struct storm_thread {
    storm_t *storm;
    limit_shard_t shard;
    unit_random_t random;
    uint32_t index;
} storm_thread_t;

static void storm_note_in_flight(storm_t *storm, int64_t now) {
    int64_t seen = atomic_load(&storm->in_flight_max);
    while (now > seen && !atomic_compare_exchange_weak(&storm->in_flight_max, &seen, now)) {
    }
}

/* Windowed requests: random costs, some put back at once (an estimate that
 * was high), an idle tick now and then; every thread notes its first
 * refusal of each window. */
static void storm_windowed(storm_thread_t *thread) {
    storm_t *storm = thread->storm;
    uint32_t noted = UINT32_MAX;
    while (!atomic_load(&storm->stop)) {
        uint32_t window = atomic_load(&storm->window);
        /* Now and then this thread's clock lags a window behind. */
        if (window > 1 && unit_random_below(&thread->random, 16) == 0) window--;
        uint64_t cost = 1 + unit_random_below(&thread->random, 3);
        uint32_t counted = window;
        if (limit_take(&storm->pool, &thread->shard, STORM_LIMIT, &counted, cost, STORM_THREADS)) {
            RW_ASSERT(counted <= STORM_WINDOWS + 1);
            int64_t used = (int64_t)cost;
            if (cost > 1 && unit_random_below(&thread->random, 4) == 0) {
                limit_put_back(&thread->shard, counted, 1);
                used--;
            }
            atomic_fetch_add(&storm->used_in[counted], used);
        } else if (noted != window && window == atomic_load(&storm->window)) {
            noted = window;
            atomic_fetch_add(&storm->refused_in[window], 1);
        }
        /* A tick, or two in a row: a thread that went quiet for a tick
         * gives its lease back. */
        size_t tick = unit_random_below(&thread->random, 64);
        if (tick <= 1) limit_shard_idle(&storm->pool, &thread->shard);
        if (tick == 0) limit_shard_idle(&storm->pool, &thread->shard);
        if (unit_random_below(&thread->random, 8) == 0) sched_yield();
    }
}

/* Concurrency: take a slot, hold it a moment, give it back to the shard. */
static void storm_concurrent(storm_thread_t *thread) {
    storm_t *storm = thread->storm;
    while (!atomic_load(&storm->stop)) {
        uint32_t window = 0;
        if (limit_take(&storm->pool, &thread->shard, STORM_LIMIT / 100, &window, 1, STORM_THREADS)) {
            int64_t now = atomic_fetch_add(&storm->in_flight, 1) + 1;
            storm_note_in_flight(storm, now);
            if (unit_random_below(&thread->random, 2) == 0) sched_yield();
            atomic_fetch_sub(&storm->in_flight, 1);
            limit_put_back(&thread->shard, 0, 1);
            /* The relay keeps a thread's share of free slots and returns
             * the rest at once. */
            limit_trim(&storm->pool, &thread->shard, unit_random_below(&thread->random, 3));
        }
        size_t tick = unit_random_below(&thread->random, 32);
        if (tick <= 1) limit_shard_idle(&storm->pool, &thread->shard);
        if (tick == 0) limit_shard_idle(&storm->pool, &thread->shard);
    }
}

static void *storm_main(void *argument) {
    storm_thread_t *thread = argument;
    if (thread->storm->concurrency) storm_concurrent(thread);
    else storm_windowed(thread);
    return NULL;
}

static void storm_run(storm_t *storm, void (*drive)(storm_t *)) {
    pthread_t threads[STORM_THREADS];
    storm_thread_t states[STORM_THREADS];
    for (uint32_t index = 0; index < STORM_THREADS; index++) {
        states[index] = (storm_thread_t){.storm = storm, .index = index,
                                         .random = {storm->seed + 0x1234567ull * (index + 1)}};
        RW_ASSERT(pthread_create(&threads[index], NULL, storm_main, &states[index]) == 0);
    }
    drive(storm);
    atomic_store(&storm->stop, true);
    for (uint32_t index = 0; index < STORM_THREADS; index++) pthread_join(threads[index], NULL);
}

/* The clock moves to the next window once every thread was refused in the
 * current one: the client always sends faster than its limit. */
static void storm_drive_windows(storm_t *storm) {
    for (uint32_t window = 1; window <= STORM_WINDOWS; window++) {
        while (atomic_load(&storm->refused_in[window]) < STORM_THREADS) sched_yield();
        atomic_store(&storm->window, window + 1);
    }
}

static void test_storm_never_more_than_the_limit_and_nearly_all_of_it(void) {
    for (int schedule = 0; schedule < 4; schedule++) {
        static storm_t storm;
        memset(&storm, 0, sizeof storm);
        storm.seed = unit_random_next(&test_random) | 1;
        atomic_store(&storm.window, 1); /* windowed limits number windows from 1 */
        storm_run(&storm, storm_drive_windows);
        int64_t lowest = STORM_LIMIT;
        for (uint32_t window = 1; window <= STORM_WINDOWS; window++) {
            int64_t used = atomic_load(&storm.used_in[window]);
            CHECK(used <= STORM_LIMIT);
            if (used < lowest) lowest = used;
        }
        /* The share admitted of a window: every thread kept asking until it
         * was refused, so only the leases smaller than a request were left. */
        CHECK(lowest * 100 >= STORM_LIMIT * 98);
        if (lowest * 100 < STORM_LIMIT * 98) fprintf(stderr, "  lowest window admitted %lld of %d\n",
                                                     (long long)lowest, STORM_LIMIT);
    }
}

static void storm_drive_time(storm_t *storm) {
    struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
}

static void test_storm_concurrency_never_above_the_limit(void) {
    for (int schedule = 0; schedule < 3; schedule++) {
        static storm_t storm;
        memset(&storm, 0, sizeof storm);
        storm.concurrency = true;
        storm.seed = unit_random_next(&test_random) | 1;
        storm_run(&storm, storm_drive_time);
        CHECK(atomic_load(&storm.in_flight_max) <= STORM_LIMIT / 100);
        CHECK(atomic_load(&storm.in_flight_max) >= 1);
        CHECK_EQ_INT(atomic_load(&storm.in_flight), 0);
    }
}

int main(void) {
    RUN_TEST(test_take_from_lease_then_pool);
    RUN_TEST(test_cost_larger_than_left_is_refused_whole);
    RUN_TEST(test_new_window_starts_empty);
    RUN_TEST(test_lagging_clock_joins_the_later_window);
    RUN_TEST(test_put_back_and_charge);
    RUN_TEST(test_idle_lease_returns);
    RUN_TEST(test_window_numbers);
    RUN_TEST(test_real_clock_windows_from_fresh_state);
    RUN_TEST(test_trim_returns_what_is_kept_beyond);
    RUN_TEST(test_pool_restart_voids_old_leases);
    RUN_TEST(test_pool_set);
    RUN_TEST(test_storm_never_more_than_the_limit_and_nearly_all_of_it);
    RUN_TEST(test_storm_concurrency_never_above_the_limit);
    return UNIT_REPORT();
}
