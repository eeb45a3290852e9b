/* Types of the portal (src/portal; its functions are in portal.h): the
 * self-service account endpoints on the client listener, as one feature
 * with two sides. A relay worker routes the request and answers what it can
 * from memory; work that may block (Argon2id, the store) becomes a job for
 * the control thread, which runs it and writes the JSON answer back.
 *
 * Relay workers hand the control thread jobs through one SPSC channel each
 * and get replies through another; both directions ring the other side's
 * doorbell (an io_uring msg_ring CQE whose user_data is the receiver's
 * mailbox operation). A job's memory (request body, argument, reply buffer)
 * belongs to the worker's exchange and stays valid until the worker has
 * taken the reply: a worker whose client left keeps the exchange until
 * then. */
#ifndef RINGWAY_PORTAL_T_H
#define RINGWAY_PORTAL_T_H

#include "ringway/address-t.h"
#include "ringway/common.h"

struct account_tables;
struct io_uring;
struct server_exchange;

/* The job and reply channels of every worker, with their doorbells. */
typedef struct portal portal_t;

enum {
    PORTAL_WORKERS_MAX = 256,
    PORTAL_JOB_CHANNEL_CAPACITY_DEFAULT = 256,
    PORTAL_KEYS_PER_USER_MAX = 100,   /* self-service key creation refuses more (slots are never reused) */
    PORTAL_USAGE_LIMIT_DEFAULT = 20,  /* GET /billing/usage without ?limit */
    PORTAL_USAGE_LIMIT_MAX = 1000,
};

typedef enum portal_job_kind {
    PORTAL_JOB_REGISTER = 1, /* body: {"email","password"}; reply 200 {token, api_key, balance, ...} */
    PORTAL_JOB_LOGIN,        /* body: {"email","password"}; reply 200 {token, balance} */
    PORTAL_JOB_KEYS_LIST,    /* user_id; reply 200 {"object":"list","data":[masked keys]} */
    PORTAL_JOB_KEY_CREATE,   /* user_id, argument: the name (query value, still URL-encoded) */
    PORTAL_JOB_KEY_DELETE,   /* user_id, argument: the key id from the path */
    PORTAL_JOB_USAGE_LIST,   /* user_id, limit; reply 200 {"object":"list","data":[records newest first]} */
} portal_job_kind_t;

typedef struct portal_job {
    uint32_t kind;           /* portal_job_kind_t */
    uint32_t worker_index;   /* whose reply channel gets the answer */
    uint32_t slot;           /* the worker's stream slot, echoed in the reply */
    uint32_t limit;          /* PORTAL_JOB_USAGE_LIST */
    uint64_t user_id;        /* the authenticated user; 0 for register and login */
    address_t client;        /* register and login: the client address their limits count */
    const uint8_t *body;     /* request body (JSON), may be NULL */
    uint32_t body_length;
    uint32_t argument_length;
    const uint8_t *argument; /* see the kinds */
    uint8_t *reply;          /* the JSON response body goes here ... */
    uint32_t reply_capacity; /* ... never more than this */
} portal_job_t;

/* A job whose reply buffer is smaller than this is answered 413 without
 * running (the request left no room for the answer in the worker's buffer);
 * give every job at least this much. */
enum { PORTAL_REPLY_BYTES_MIN = 1024 };

typedef struct portal_reply {
    uint32_t slot;
    uint16_t status;        /* the HTTP status to answer with */
    uint16_t reserved;
    uint32_t length;        /* bytes of JSON written at job.reply */
    uint32_t retry_after_s; /* > 0: answered with Retry-After (a 429 of the account guards) */
} portal_reply_t;

/* What portal_submit did with a job. */
typedef enum portal_submit_result {
    PORTAL_SUBMITTED = 0,
    PORTAL_CHANNEL_FULL,   /* the worker's job channel is full: 503 */
    PORTAL_PASSWORD_BUSY,  /* password_jobs_max registrations and logins are queued already: 503 */
} portal_submit_result_t;

/* ---- The worker's side ---- */

/* One request on a relay worker, as the portal sees it: the exchange, what
 * the worker shares with the portal, and the room it lends. */
typedef struct portal_request {
    struct server_exchange *exchange;
    portal_t *portal;
    uint32_t worker_index;
    struct io_uring *worker_ring;       /* carries the doorbell to the control thread */
    struct account_tables *tables;      /* API keys and users, from memory */
    const uint8_t *jwt_secret;
    size_t jwt_secret_length;
    uint8_t *buffer;                    /* the stream's buffer, free during these requests ... */
    size_t capacity;                    /* ... this long */
    uint32_t busy_retry_after_s;        /* Retry-After of the 503 when the job channel is full */
    bool registration_closed;           /* [accounts] registration = closed: 403 */
    const address_cidr_t *trusted_proxies; /* whose X-Forwarded-For names the client ([server]) */
    uint32_t trusted_proxy_count;
} portal_request_t;

/* What a stream waiting for the control thread keeps (the relay holds it in
 * its stream slot): where the answer is being written. */
typedef struct portal_wait {
    uint8_t *reply;
    uint32_t reply_capacity;
} portal_wait_t;

typedef enum portal_route_result {
    PORTAL_ROUTE_NOT_OURS = 0, /* none of the portal's paths: the caller goes on */
    PORTAL_ROUTE_ANSWERED,     /* answered (from memory, or an error): the request is done */
    PORTAL_ROUTE_WAITING,      /* a job is with the control thread: wait for its reply */
} portal_route_result_t;

#endif
