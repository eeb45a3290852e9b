/* Unit tests for src/breaker/breaker.c: opening after failures in a row and
 * on the error rate of a window (and not below its minimum of outcomes),
 * the open spell, one probe at a time while half-open, closing on the
 * probe's success and opening again on its failure, a probe without a
 * verdict, late outcomes of requests that began before the breaker opened,
 * and a randomized run checked against a simple model of the same rules. */
#include "ringway/breaker.h"
#include "unit.h"

static const breaker_policy_t test_policy = {
    .failures_max = 3, .error_percent = 50, .window_ms = 1000, .window_requests_min = 10, .open_ms = 500};

static void test_opens_after_failures_in_a_row(void) {
    breaker_t breaker;
    breaker_init(&breaker);
    breaker_policy_check(&test_policy);
    uint64_t now = 10000;
    CHECK(breaker_available(&breaker, &test_policy, now));
    CHECK(!breaker_take(&breaker, &test_policy, now));
    breaker_failure(&breaker, &test_policy, now, false);
    breaker_failure(&breaker, &test_policy, now, false);
    CHECK_EQ_INT(breaker.state, BREAKER_CLOSED);
    /* A success in between starts the count again. */
    breaker_success(&breaker, &test_policy, now, false);
    breaker_failure(&breaker, &test_policy, now, false);
    breaker_failure(&breaker, &test_policy, now, false);
    CHECK_EQ_INT(breaker.state, BREAKER_CLOSED);
    breaker_failure(&breaker, &test_policy, now + 1, false);
    CHECK_EQ_INT(breaker.state, BREAKER_OPEN);
    CHECK_EQ_INT(breaker.times_opened, 1);
    CHECK(!breaker_available(&breaker, &test_policy, now + 1));
    CHECK_EQ_INT(breaker_wait_ms(&breaker, &test_policy, now + 1), 500);
    CHECK_EQ_INT(breaker_wait_ms(&breaker, &test_policy, now + 400), 101);
    CHECK(!breaker_available(&breaker, &test_policy, now + 500));
    CHECK(breaker_available(&breaker, &test_policy, now + 501));
    CHECK_EQ_INT(breaker_wait_ms(&breaker, &test_policy, now + 501), 0);
    CHECK(strcmp(breaker_state_name(breaker.state), "open") == 0);
}

static void test_single_failure_never_opens(void) {
    /* The smallest policy the configuration allows: one failure is never
     * enough, in a row or as a rate. */
    static const breaker_policy_t smallest = {
        .failures_max = 2, .error_percent = 1, .window_ms = 1, .window_requests_min = 2, .open_ms = 1};
    breaker_policy_check(&smallest);
    breaker_t breaker;
    breaker_init(&breaker);
    breaker_failure(&breaker, &smallest, 5, false);
    CHECK_EQ_INT(breaker.state, BREAKER_CLOSED);
    breaker_success(&breaker, &smallest, 9, false);
    breaker_failure(&breaker, &smallest, 20, false);
    CHECK_EQ_INT(breaker.state, BREAKER_CLOSED);
}

static void test_opens_on_error_rate(void) {
    breaker_t breaker;
    breaker_init(&breaker);
    uint64_t now = 1000;
    /* Alternating: never three in a row, but half of the outcomes fail. */
    for (int index = 0; index < 9; index++) {
        if (index % 2 == 0) breaker_failure(&breaker, &test_policy, now, false);
        else breaker_success(&breaker, &test_policy, now, false);
    }
    CHECK_EQ_INT(breaker.state, BREAKER_CLOSED); /* 5 of 9, below the minimum of 10 outcomes */
    breaker_success(&breaker, &test_policy, now, false);
    CHECK_EQ_INT(breaker.state, BREAKER_CLOSED); /* 5 of 10, but the last outcome was a success */
    breaker_failure(&breaker, &test_policy, now, false);
    CHECK_EQ_INT(breaker.state, BREAKER_OPEN); /* 6 of 11 */

    /* A new window forgets the old one's outcomes. */
    breaker_init(&breaker);
    for (int index = 0; index < 9; index++) breaker_success(&breaker, &test_policy, now, false);
    for (int index = 0; index < 2; index++) breaker_failure(&breaker, &test_policy, now + 1000, false);
    breaker_success(&breaker, &test_policy, now + 1000, false);
    CHECK_EQ_INT(breaker.window_outcomes, 3);
    CHECK_EQ_INT(breaker.window_failures, 2);
    CHECK_EQ_INT(breaker.state, BREAKER_CLOSED);
}

static void test_half_open_probe(void) {
    breaker_t breaker;
    breaker_init(&breaker);
    uint64_t now = 50;
    for (int index = 0; index < 3; index++) breaker_failure(&breaker, &test_policy, now, false);
    CHECK_EQ_INT(breaker.state, BREAKER_OPEN);
    now += 500;
    CHECK(breaker_available(&breaker, &test_policy, now));
    CHECK(breaker_take(&breaker, &test_policy, now)); /* the probe */
    CHECK_EQ_INT(breaker.state, BREAKER_HALF_OPEN);
    CHECK(!breaker_available(&breaker, &test_policy, now)); /* one at a time */
    CHECK(breaker_wait_ms(&breaker, &test_policy, now) > 0);
    /* The probe fails: open again for a whole spell. */
    breaker_failure(&breaker, &test_policy, now + 7, true);
    CHECK_EQ_INT(breaker.state, BREAKER_OPEN);
    CHECK_EQ_INT(breaker.times_opened, 2);
    CHECK(!breaker_available(&breaker, &test_policy, now + 506));
    CHECK(breaker_available(&breaker, &test_policy, now + 507));
    now += 507;
    /* A probe whose client left says nothing: another may go. */
    CHECK(breaker_take(&breaker, &test_policy, now));
    breaker_neutral(&breaker, true);
    CHECK_EQ_INT(breaker.state, BREAKER_HALF_OPEN);
    CHECK(breaker_available(&breaker, &test_policy, now));
    CHECK(breaker_take(&breaker, &test_policy, now));
    /* A late failure of a request from before the opening changes nothing. */
    breaker_failure(&breaker, &test_policy, now, false);
    breaker_neutral(&breaker, false);
    CHECK_EQ_INT(breaker.state, BREAKER_HALF_OPEN);
    breaker_success(&breaker, &test_policy, now + 1, true);
    CHECK_EQ_INT(breaker.state, BREAKER_CLOSED);
    CHECK_EQ_INT(breaker.times_opened, 2);
    CHECK_EQ_INT(breaker.consecutive_failures, 0);
    CHECK(breaker_available(&breaker, &test_policy, now + 1));
    /* Closed again, it needs three new failures in a row. */
    breaker_failure(&breaker, &test_policy, now + 2, false);
    breaker_failure(&breaker, &test_policy, now + 2, false);
    CHECK_EQ_INT(breaker.state, BREAKER_CLOSED);
}

/* Random outcomes against a model of the rules: the breaker is open exactly
 * when the model says, and never opens on a single failure. */
static void test_random_against_model(void) {
    unit_random_t random = {0x2545f4914f6cdd1dull};
    static const breaker_policy_t policy = {
        .failures_max = 4, .error_percent = 30, .window_ms = 200, .window_requests_min = 6, .open_ms = 50};
    for (int run = 0; run < 200; run++) {
        breaker_t breaker;
        breaker_init(&breaker);
        uint64_t now = 1 + unit_random_below(&random, 1000);
        bool open = false;
        uint64_t opened = 0;
        uint32_t in_a_row = 0, outcomes = 0, failures = 0;
        uint64_t window_start = 0; /* as breaker_init: the first window began at time 0 */
        bool probe_out = false;
        for (int step = 0; step < 400; step++) {
            now += unit_random_below(&random, 20);
            bool model_available = !open || (now >= opened + policy.open_ms && !probe_out);
            CHECK(breaker_available(&breaker, &policy, now) == model_available);
            if (!model_available) continue;
            bool probe = breaker_take(&breaker, &policy, now);
            CHECK(probe == open);
            if (probe) probe_out = true;
            uint64_t roll = unit_random_below(&random, 10);
            if (roll < 4) {
                breaker_failure(&breaker, &policy, now, probe);
                if (probe) {
                    opened = now;
                    probe_out = false;
                    in_a_row = outcomes = failures = 0;
                    window_start = now;
                } else {
                    if (now - window_start >= policy.window_ms) {
                        window_start = now;
                        outcomes = failures = 0;
                    }
                    in_a_row++;
                    outcomes++;
                    failures++;
                    if (in_a_row >= policy.failures_max ||
                        (outcomes >= policy.window_requests_min && failures * 100 >= policy.error_percent * outcomes)) {
                        CHECK(in_a_row >= 2 || outcomes >= 2);
                        open = true;
                        opened = now;
                        in_a_row = outcomes = failures = 0;
                        window_start = now;
                    }
                }
            } else if (roll < 9) {
                breaker_success(&breaker, &policy, now, probe);
                if (probe) {
                    open = false;
                    probe_out = false;
                    in_a_row = outcomes = failures = 0;
                    window_start = now;
                }
                if (now - window_start >= policy.window_ms) {
                    window_start = now;
                    outcomes = failures = 0;
                }
                in_a_row = 0;
                outcomes++;
            } else {
                breaker_neutral(&breaker, probe);
                if (probe) probe_out = false;
            }
            CHECK((breaker.state != BREAKER_CLOSED) == open);
        }
    }
}

int main(void) {
    RUN_TEST(test_opens_after_failures_in_a_row);
    RUN_TEST(test_single_failure_never_opens);
    RUN_TEST(test_opens_on_error_rate);
    RUN_TEST(test_half_open_probe);
    RUN_TEST(test_random_against_model);
    return UNIT_REPORT();
}
