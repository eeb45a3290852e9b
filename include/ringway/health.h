/* The health of the upstreams as every relay thread and the admin API see
 * it. Types only; written by the relay (src/relay/route.c), read by the
 * admin API (GET /admin/upstreams) on the control thread. All relaxed
 * atomics: a reader may see one thread's view a request late.
 *
 *   - A key an upstream refused (401/403): the status, 0 while the key is
 *     in rotation, and until when (CLOCK_MONOTONIC ms, the loops' clock) it
 *     stays out: [routing] key_refused_retry_ms after the refusal,
 *     UINT64_MAX for good. Shared by every thread: a refusal takes the key
 *     out of rotation everywhere.
 *   - Each thread's breakers (they are per thread, like everything a relay
 *     thread decides on): published by their owner after every change. */
#ifndef RINGWAY_HEALTH_H
#define RINGWAY_HEALTH_H

#include "ringway/config-t.h"

#include <stdatomic.h>
#include <stdint.h>

/* One breaker as its thread last published it (breaker_state_t values). */
typedef struct health_breaker_view {
    _Atomic uint32_t state;
    _Atomic uint32_t consecutive_failures;
    _Atomic uint64_t times_opened;
} health_breaker_view_t;

/* One relay thread's breakers: per upstream, and per upstream key. */
typedef struct health_thread_view {
    health_breaker_view_t upstreams[CONFIG_UPSTREAMS_MAX];
    health_breaker_view_t keys[CONFIG_UPSTREAMS_MAX][CONFIG_UPSTREAM_KEYS_MAX];
} health_thread_view_t;

typedef struct health {
    _Atomic uint16_t key_refused[CONFIG_UPSTREAMS_MAX][CONFIG_UPSTREAM_KEYS_MAX];
    _Atomic uint64_t key_refused_until_ms[CONFIG_UPSTREAMS_MAX][CONFIG_UPSTREAM_KEYS_MAX];
    uint32_t thread_count;
    health_thread_view_t *threads; /* thread_count of them, zeroed (closed) at start */
} health_t;

#endif
