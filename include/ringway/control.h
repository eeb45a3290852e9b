/* The control thread (src/control; types in control-t.h): one thread with
 * its own ring that hosts the admin API for ringctl on admin_listen
 * (src/admin) and runs the jobs of the portal's self-service endpoints
 * (src/portal) that relay workers hand it. It is the only thread that
 * creates users and API keys: it hands out their ids and publishes their
 * slots in the shared account tables, and it is store producer
 * `store_producer` (after the workers), talking to the store thread with
 * blocking store_thread_call (it may block; it is never on the data path).
 *
 * Start-up, in this order (main.c):
 *   1. account_tables_init, store_open, store_load (admin_key_fields_from_record
 *      turns each loaded key record into the fields account_key_publish takes),
 *      the JWT secret (config or store), store_thread_create with
 *      config->threads + 1 producers.
 *   2. control_create (no thread yet; workers may be handed control_portal).
 *   3. workers built on their threads; for each: store_thread_bind_producer
 *      and portal_bind_worker with its ring fd and mailbox operation.
 *   4. store_thread_start.
 *   5. control_bootstrap when store_load found no user (the store thread must
 *      run: it writes the admin account).
 *   6. control_start: returns once the admin listener is accepting.
 *   7. the workers start serving.
 * Shutdown: workers stop first, then control_stop, then the store thread. */
#ifndef RINGWAY_CONTROL_H
#define RINGWAY_CONTROL_H

#include "ringway/common.h"
#include "ringway/control-t.h"
#include "ringway/portal-t.h"

/* Allocates the control state, the admin API's buffers and the portal's
 * per-worker job and reply channels. No thread, ring or socket yet. Checks
 * the options (asserts on a programmer error such as a NULL table) and
 * returns 0, or -1 with `error` filled when memory runs out. */
int control_create(control_t **control, const control_options_t *options, char *error, size_t error_size);

/* The portal's channels this control thread drains: the relay workers
 * submit their jobs there (relay_shared_t.portal, portal_bind_worker). */
portal_t *control_portal(control_t *control);

/* First start with an empty store (no users): creates the admin account
 * "admin@ringway.local" (no password, so it cannot log in; balance = the
 * configured free grant; audited as "system") and prints to stderr the
 * exact ringctl command that makes its first API key. Runs on the calling
 * thread before control_start, with the store thread running. Does nothing
 * and returns 0 when users already exist. Returns -1 with `error` filled when
 * the store refuses. */
int control_bootstrap(control_t *control, char *error, size_t error_size);

/* Spawns the control thread, which builds its ring and admin server on
 * itself (single-issuer ring), starts accepting on config admin_listen and
 * takes jobs. Returns 0 once it listens, or -1 with `error` filled (e.g. the
 * admin port is taken; the thread has then ended). */
int control_start(control_t *control, char *error, size_t error_size);

/* Stops accepting admin connections, ends the thread (within one tick,
 * about 20 ms, after any job or request in progress) and joins it. Jobs
 * still queued are not run. Safe when never started; idempotent. */
void control_stop(control_t *control);

/* Frees what control_create allocated; the thread must be stopped. Sets
 * *control to NULL. */
void control_destroy(control_t **control);

#endif
