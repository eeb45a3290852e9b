/* Private to src/portal: what the channels (channels.c) call in the jobs
 * (jobs.c), both on the control thread. */
#ifndef RINGWAY_PORTAL_INTERNAL_H
#define RINGWAY_PORTAL_INTERNAL_H

#include "ringway/admin-t.h"
#include "ringway/guard-t.h"
#include "ringway/portal-t.h"

/* True for the kinds that hash a password (Argon2id): registration and
 * login, the ones password_jobs_max bounds. */
static inline bool portal_job_hashes_password(uint32_t kind) {
    return kind == PORTAL_JOB_REGISTER || kind == PORTAL_JOB_LOGIN;
}

/* Runs one job with the admin module's account operations, registration
 * and login first checked against (and counted in) `guard`; writes the JSON
 * reply into job->reply (never more than job->reply_capacity bytes) and
 * returns the HTTP status with *length set and *retry_after_s (0 = none, or
 * the seconds of a guard's 429). */
uint16_t portal_job_run(admin_context_t *context, guard_t *guard, const portal_job_t *job, uint32_t *length,
                        uint32_t *retry_after_s);

#endif
