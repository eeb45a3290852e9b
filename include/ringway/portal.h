/* The portal (src/portal; types in portal-t.h): the self-service account
 * endpoints, served on the client listener under /, /v1 and /api/v1:
 *
 *   POST /auth/register, POST /auth/login           -> control thread (Argon2id)
 *   GET /api-keys, POST /api-keys?name=, DELETE /api-keys/{id}   (JWT) -> control thread
 *   GET /billing/balance    (API key or JWT)        -> answered on the worker, from memory
 *   GET /billing/usage?limit=N (API key or JWT)     -> control thread (store read)
 *
 * Three parts: the worker's side (endpoints.c, on a relay worker's thread),
 * the channels between the workers and the control thread (channels.c),
 * and the jobs (jobs.c, on the control thread, on the admin module's
 * account operations). The portal never calls the relay or the control
 * thread: each hands it what it needs. */
#ifndef RINGWAY_PORTAL_H
#define RINGWAY_PORTAL_H

#include "ringway/admin-t.h"
#include "ringway/common.h"
#include "ringway/config-t.h"
#include "ringway/loop.h"
#include "ringway/portal-t.h"
#include "ringway/server.h"

#include <liburing.h>

/* ---- The channels (channels.c) ---- */

/* Allocates one job channel and one reply channel per worker
 * (1..PORTAL_WORKERS_MAX), each of job_channel_capacity entries (a power of
 * two; 0 = PORTAL_JOB_CHANNEL_CAPACITY_DEFAULT), and the account guards
 * (src/guard) with config's [accounts] limits and table size; at most
 * config->password_jobs_max registrations and logins are queued at once.
 * Returns 0, or -1 with `error` filled when memory runs out. */
int portal_create(portal_t **portal, uint32_t worker_count, uint32_t job_channel_capacity, const config_t *config,
                  char *error, size_t error_size);

/* Frees the channels; nobody may use them any more. Sets *portal to NULL;
 * NULL is fine. */
void portal_destroy(portal_t **portal);

/* Replies to `worker` are announced by a MSG_RING CQE posted into the ring
 * `worker_ring_fd` with user_data `worker_mailbox` (the worker's callback
 * then drains portal_reply_pop). Any thread, at any time; until a worker is
 * bound its replies are only queued, and it must poll. */
void portal_bind_worker(portal_t *portal, uint32_t worker, int worker_ring_fd, loop_operation_t *worker_mailbox);

/* Jobs are announced to the control thread by a MSG_RING CQE into
 * `control_ring_fd` with user_data `control_mailbox`; -1 unbinds (jobs are
 * then only queued). The control thread binds itself before its first
 * portal_drain (with a full fence, so a worker either sees the fd or its job
 * is seen by that drain) and unbinds before its ring goes. */
void portal_bind_control(portal_t *portal, int control_ring_fd, loop_operation_t *control_mailbox);

/* Worker side: queues a job (copied) for the control thread and, when it
 * may be asleep, rings its doorbell through worker_ring (queued only: the
 * worker's next submit carries it). worker_ring may be NULL: the control
 * thread then notices the job within one tick. The job's memory (body,
 * argument, reply) must stay valid until its reply has been popped. Returns
 * PORTAL_SUBMITTED, or (nothing queued) PORTAL_CHANNEL_FULL when the
 * worker's job channel is full, PORTAL_PASSWORD_BUSY when the job is a
 * registration or login and password_jobs_max of them are queued over all
 * workers (one atomic counter: the bound on Argon2id work waiting for the
 * control thread). The worker answers 503 to both. */
portal_submit_result_t portal_submit(portal_t *portal, uint32_t worker, const portal_job_t *job,
                                     struct io_uring *worker_ring);

/* Worker side: takes the next reply for this worker; false when there is
 * none. The reply's bytes are at the job's reply buffer (reply->length of
 * them). */
bool portal_reply_pop(portal_t *portal, uint32_t worker, portal_reply_t *reply);

/* Control thread: runs up to jobs_max jobs with `context`, one per worker
 * per round so one busy worker cannot starve the others, pushes each reply
 * and rings the worker's doorbell through control_ring. Of them at most
 * password_jobs_max are registrations or logins (Argon2id, tens of
 * milliseconds each): a worker whose next job is one, once that many ran,
 * waits for the next call, so the caller bounds how long a drain keeps its
 * thread from other work (the admin API). A job is taken only when its
 * reply is sure to fit, so replies are never dropped. Returns true when
 * jobs may remain (the caller gives them another turn soon). */
bool portal_drain(portal_t *portal, admin_context_t *context, struct io_uring *control_ring, uint32_t jobs_max,
                  uint32_t password_jobs_max);

/* ---- The worker's side (endpoints.c) ---- */

/* Serves `path` (without its /v1 or /api/v1 prefix) when it is one of the
 * portal's endpoints: 405 for a wrong method, 401 for a missing or bad
 * token, 400 for a bad limit, 403 registration_closed for a registration
 * while [accounts] registration = closed, the balance from memory, 503 with
 * Retry-After when the job channel is full or too many password jobs are
 * queued; else submits a job (for registration and login with the client
 * address: the peer, or the X-Forwarded-For hop a trusted proxy names), its
 * answer to be written at *wait. Returns NOT_OURS (nothing was done) for other paths. */
portal_route_result_t portal_route(const portal_request_t *request, const uint8_t *path, size_t path_length,
                                   portal_wait_t *wait);

/* Answers a waiting request with the control thread's reply (with
 * Retry-After when the reply carries one); when the client is gone, only
 * gives the exchange back. */
void portal_answer(server_exchange_t *exchange, const portal_wait_t *wait, const portal_reply_t *reply,
                   bool client_gone);

#endif
