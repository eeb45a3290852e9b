/* The circuit breaker of include/ringway/breaker.h. */
#include "ringway/breaker.h"

#include "ringway/common.h"

#include <string.h>

void breaker_policy_check(const breaker_policy_t *policy) {
    RW_ASSERT(policy->failures_max >= 2);
    RW_ASSERT(policy->error_percent <= 100);
    RW_ASSERT(policy->window_ms >= 1 && policy->window_requests_min >= 2);
    RW_ASSERT(policy->open_ms >= 1);
}

void breaker_init(breaker_t *breaker) {
    memset(breaker, 0, sizeof *breaker);
    breaker->state = BREAKER_CLOSED;
}

static bool breaker_open_elapsed(const breaker_t *breaker, const breaker_policy_t *policy, uint64_t now_ms) {
    return now_ms >= breaker->opened_ms + policy->open_ms;
}

bool breaker_available(const breaker_t *breaker, const breaker_policy_t *policy, uint64_t now_ms) {
    switch (breaker->state) {
    case BREAKER_CLOSED:
        return true;
    case BREAKER_OPEN:
        return breaker_open_elapsed(breaker, policy, now_ms);
    case BREAKER_HALF_OPEN:
        return !breaker->probing;
    }
    RW_ASSERT(!"unknown breaker state");
    return false;
}

bool breaker_take(breaker_t *breaker, const breaker_policy_t *policy, uint64_t now_ms) {
    RW_ASSERT(breaker_available(breaker, policy, now_ms));
    if (breaker->state == BREAKER_CLOSED) return false;
    breaker->state = BREAKER_HALF_OPEN;
    breaker->probing = true;
    return true;
}

static void breaker_open(breaker_t *breaker, uint64_t now_ms) {
    breaker->state = BREAKER_OPEN;
    breaker->probing = false;
    breaker->opened_ms = now_ms;
    breaker->times_opened++;
    breaker->consecutive_failures = 0;
    breaker->window_started_ms = now_ms;
    breaker->window_outcomes = 0;
    breaker->window_failures = 0;
}

/* Counts one outcome in the current fixed window, starting a new window
 * when the old one is over. */
static void breaker_count(breaker_t *breaker, const breaker_policy_t *policy, uint64_t now_ms, bool failed) {
    if (now_ms < breaker->window_started_ms || now_ms - breaker->window_started_ms >= policy->window_ms) {
        breaker->window_started_ms = now_ms;
        breaker->window_outcomes = 0;
        breaker->window_failures = 0;
    }
    breaker->window_outcomes++;
    if (failed) breaker->window_failures++;
    RW_ASSERT(breaker->window_failures <= breaker->window_outcomes);
}

void breaker_success(breaker_t *breaker, const breaker_policy_t *policy, uint64_t now_ms, bool probe) {
    if (probe) {
        RW_ASSERT(breaker->state == BREAKER_HALF_OPEN && breaker->probing);
        uint64_t times_opened = breaker->times_opened;
        breaker_init(breaker);
        breaker->times_opened = times_opened;
        breaker->window_started_ms = now_ms;
    }
    if (breaker->state != BREAKER_CLOSED) return;
    breaker->consecutive_failures = 0;
    breaker_count(breaker, policy, now_ms, false);
}

void breaker_failure(breaker_t *breaker, const breaker_policy_t *policy, uint64_t now_ms, bool probe) {
    if (probe) {
        RW_ASSERT(breaker->state == BREAKER_HALF_OPEN && breaker->probing);
        breaker_open(breaker, now_ms);
        return;
    }
    if (breaker->state != BREAKER_CLOSED) return;
    breaker->consecutive_failures++;
    breaker_count(breaker, policy, now_ms, true);
    bool too_many_in_a_row = breaker->consecutive_failures >= policy->failures_max;
    bool rate_too_high = policy->error_percent > 0 && breaker->window_outcomes >= policy->window_requests_min &&
                         (uint64_t)breaker->window_failures * 100 >=
                             (uint64_t)policy->error_percent * breaker->window_outcomes;
    if (too_many_in_a_row || rate_too_high) breaker_open(breaker, now_ms);
}

void breaker_neutral(breaker_t *breaker, bool probe) {
    if (!probe) return;
    RW_ASSERT(breaker->state == BREAKER_HALF_OPEN && breaker->probing);
    breaker->probing = false;
}

uint64_t breaker_wait_ms(const breaker_t *breaker, const breaker_policy_t *policy, uint64_t now_ms) {
    if (breaker_available(breaker, policy, now_ms)) return 0;
    if (breaker->state == BREAKER_OPEN) return breaker->opened_ms + policy->open_ms - now_ms;
    return policy->open_ms; /* half-open with its probe out: at most as long as an open spell */
}

const char *breaker_state_name(breaker_state_t state) {
    switch (state) {
    case BREAKER_CLOSED:
        return "closed";
    case BREAKER_OPEN:
        return "open";
    case BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "unknown";
}
