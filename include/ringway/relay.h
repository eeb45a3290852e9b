/* The relay: one worker per thread, each with its own loop, server side,
 * upstream pools and stream slots. What crosses threads is read-only after
 * start (the configuration, the router, the TLS contexts). */
#ifndef RINGWAY_RELAY_H
#define RINGWAY_RELAY_H

#include "ringway/common.h"
#include "ringway/config.h"
#include "ringway/router.h"
#include "ringway/tls.h"

#include <stdatomic.h>

struct account_tables;
struct store_thread;
struct portal;

typedef struct relay_worker relay_worker_t;

/* What every relay thread and the admin API see of the upstreams' keys: the
 * HTTP status (401, 403) with which an upstream refused a key, 0 while the
 * key is in rotation, and until when (loop time, CLOCK_MONOTONIC
 * milliseconds) it stays out: [routing] key_refused_retry_ms after the
 * refusal, UINT64_MAX for good. Written by the thread that saw the refusal
 * or the success that ended it, read by all, relaxed: a thread that reads
 * late sends the key once more, and fails over. */
typedef struct relay_health {
    _Atomic uint16_t key_refused[CONFIG_UPSTREAMS_MAX][CONFIG_UPSTREAM_KEYS_MAX];
    _Atomic uint64_t key_refused_until_ms[CONFIG_UPSTREAMS_MAX][CONFIG_UPSTREAM_KEYS_MAX];
} relay_health_t;

typedef struct relay_shared {
    const config_t *config;
    const router_t *router;
    tls_context_t *upstream_tls[CONFIG_UPSTREAMS_MAX]; /* NULL for plain-http upstreams */
    struct account_tables *tables;   /* users and keys, shared through atomics */
    struct store_thread *store_thread; /* workers are its producers 0..threads-1 */
    struct portal *portal;           /* the self-service endpoints' jobs go there */
    const uint8_t *jwt_secret;
    size_t jwt_secret_length;
    relay_health_t *health;
    uint32_t instance; /* random per process: makes request ids unique across restarts */
} relay_shared_t;

/* Builds a worker on the calling thread (its ring is single-issuer) and
 * opens its listening socket. Returns NULL with `error` filled. */
relay_worker_t *relay_worker_create(const relay_shared_t *shared, uint32_t index, char *error, size_t error_size);
/* Starts accepting and serves until relay_worker_stop is seen by the loop.
 * Call on the worker's thread once the store and control threads know its
 * ring (relay_worker_ring_fd, relay_worker_mailbox). */
void relay_worker_run(relay_worker_t *worker);
int relay_worker_ring_fd(const relay_worker_t *worker);
struct loop_operation *relay_worker_mailbox(relay_worker_t *worker);
/* May be called from any thread: the worker stops at its next tick. */
void relay_worker_stop(relay_worker_t *worker);

#endif
