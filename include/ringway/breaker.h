/* A circuit breaker: a pure state machine over outcomes and the time, with
 * no I/O and no clock of its own (the caller passes the loop's time). One
 * belongs to one thread.
 *
 *   closed     requests pass; it opens after `failures_max` failures in a
 *              row, or when at least `window_requests_min` outcomes in the
 *              current fixed window of `window_ms` are `error_percent` or
 *              more failures (0 turns the rate off)
 *   open       nothing passes for `open_ms`; then
 *   half-open  one request (the probe) passes: its success closes the
 *              breaker, its failure opens it again, and a probe that ends
 *              without a verdict (the client left) lets another one go
 *
 * Outcomes of requests that began before the breaker opened count for the
 * window only. The caller decides what a failure is: a relay reports a
 * client's own error or a client that left as no failure at all. */
#ifndef RINGWAY_BREAKER_H
#define RINGWAY_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

typedef enum breaker_state {
    BREAKER_CLOSED = 0,
    BREAKER_OPEN = 1,
    BREAKER_HALF_OPEN = 2,
} breaker_state_t;

typedef struct breaker_policy {
    uint32_t failures_max;        /* at least 2 */
    uint32_t error_percent;       /* 0..100; 0 = no rate */
    uint32_t window_ms;           /* at least 1 */
    uint32_t window_requests_min; /* at least 2 */
    uint32_t open_ms;             /* at least 1 */
} breaker_policy_t;

typedef struct breaker {
    breaker_state_t state;
    bool probing;                  /* half-open: the probe is out */
    uint32_t consecutive_failures;
    uint64_t window_started_ms;
    uint32_t window_outcomes;
    uint32_t window_failures;
    uint64_t opened_ms;            /* when it last opened */
    uint64_t times_opened;
} breaker_t;

/* Asserts the policy's ranges (above). */
void breaker_policy_check(const breaker_policy_t *policy);
void breaker_init(breaker_t *breaker);
/* Whether a request may go now; changes nothing. */
bool breaker_available(const breaker_t *breaker, const breaker_policy_t *policy, uint64_t now_ms);
/* A request goes (breaker_available was true). Returns true when it is the
 * half-open probe: its outcome must be reported with probe = true. */
bool breaker_take(breaker_t *breaker, const breaker_policy_t *policy, uint64_t now_ms);
void breaker_success(breaker_t *breaker, const breaker_policy_t *policy, uint64_t now_ms, bool probe);
void breaker_failure(breaker_t *breaker, const breaker_policy_t *policy, uint64_t now_ms, bool probe);
/* An outcome that says nothing about the target. */
void breaker_neutral(breaker_t *breaker, bool probe);
/* Milliseconds until a request may go again (0 when one may go now). */
uint64_t breaker_wait_ms(const breaker_t *breaker, const breaker_policy_t *policy, uint64_t now_ms);
/* "closed", "open" or "half_open". */
const char *breaker_state_name(breaker_state_t state);

#endif
