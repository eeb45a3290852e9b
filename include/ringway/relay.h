/* The relay: one worker per thread, each with its own loop, server side,
 * upstream pools and stream slots. What crosses threads is read-only after
 * start (the configuration, the router, the TLS contexts). */
#ifndef RINGWAY_RELAY_H
#define RINGWAY_RELAY_H

#include "ringway/common.h"
#include "ringway/config.h"
#include "ringway/router.h"
#include "ringway/tls.h"

typedef struct relay_worker relay_worker_t;

typedef struct relay_shared {
    const config_t *config;
    const router_t *router;
    tls_context_t *upstream_tls[CONFIG_UPSTREAMS_MAX]; /* NULL for plain-http upstreams */
} relay_shared_t;

/* Builds a worker on the calling thread (its ring is single-issuer) and
 * opens its listening socket. Returns NULL with `error` filled. */
relay_worker_t *relay_worker_create(const relay_shared_t *shared, uint32_t index, char *error, size_t error_size);
/* Serves until relay_worker_stop is seen by the loop. */
void relay_worker_run(relay_worker_t *worker);
/* May be called from any thread: the worker stops at its next tick. */
void relay_worker_stop(relay_worker_t *worker);

#endif
