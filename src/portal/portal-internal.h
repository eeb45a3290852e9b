/* Private to src/portal: what the channels (channels.c) call in the jobs
 * (jobs.c), both on the control thread. */
#ifndef RINGWAY_PORTAL_INTERNAL_H
#define RINGWAY_PORTAL_INTERNAL_H

#include "ringway/admin-t.h"
#include "ringway/portal-t.h"

/* Runs one job with the admin module's account operations; writes the JSON
 * reply into job->reply (never more than job->reply_capacity bytes) and
 * returns the HTTP status with *length set. */
uint16_t portal_job_run(admin_context_t *context, const portal_job_t *job, uint32_t *length);

#endif
