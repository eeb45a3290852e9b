/* The relay: one worker per thread, each with its own loop, server side,
 * upstream pools and stream slots. What crosses threads is read-only after
 * start (the configuration, the router, the TLS contexts). */
#ifndef RINGWAY_RELAY_H
#define RINGWAY_RELAY_H

#include "ringway/common.h"
#include "ringway/config.h"
#include "ringway/router.h"
#include "ringway/health.h"
#include "ringway/tls.h"

struct account_tables;
struct store_thread;
struct portal;

typedef struct relay_worker relay_worker_t;

typedef struct relay_shared {
    const config_t *config;
    const router_t *router;
    tls_context_t *upstream_tls[CONFIG_UPSTREAMS_MAX]; /* NULL for plain-http upstreams */
    struct account_tables *tables;   /* users and keys, shared through atomics */
    struct store_thread *store_thread; /* workers are its producers 0..threads-1 */
    struct portal *portal;           /* the self-service endpoints' jobs go there */
    const uint8_t *jwt_secret;
    size_t jwt_secret_length;
    health_t *health;                /* keys refused, breakers published (health.h) */
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
