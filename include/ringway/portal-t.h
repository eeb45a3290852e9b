/* Types of the control thread (its functions are in admin.h): the admin API
 * (for ringctl) on its own listener, and the account work that must not run
 * on a relay thread (Argon2id password hashing, creating users and keys,
 * reading usage history from the store).
 *
 * Relay workers hand it jobs through one SPSC channel each and get replies
 * through another; both directions ring the other side's doorbell (an
 * io_uring msg_ring CQE whose user_data is the receiver's mailbox
 * operation). A job's memory (request body, argument, reply buffer) belongs
 * to the worker's exchange and stays valid until the worker has taken the
 * reply: a worker whose client left keeps the exchange until then. */
#ifndef RINGWAY_CONTROL_T_H
#define RINGWAY_CONTROL_T_H

#include "ringway/common.h"

typedef enum control_job_kind {
    CONTROL_JOB_REGISTER = 1, /* body: {"email","password"}; reply 200 {token, api_key, balance, ...} */
    CONTROL_JOB_LOGIN,        /* body: {"email","password"}; reply 200 {token, balance} */
    CONTROL_JOB_KEYS_LIST,    /* user_id; reply 200 {"object":"list","data":[masked keys]} */
    CONTROL_JOB_KEY_CREATE,   /* user_id, argument: the name (query value, still URL-encoded) */
    CONTROL_JOB_KEY_DELETE,   /* user_id, argument: the key id from the path */
    CONTROL_JOB_USAGE_LIST,   /* user_id, limit; reply 200 {"object":"list","data":[records newest first]} */
} control_job_kind_t;

typedef struct control_job {
    uint32_t kind;           /* control_job_kind_t */
    uint32_t worker_index;   /* whose reply channel gets the answer */
    uint32_t slot;           /* the worker's stream slot, echoed in the reply */
    uint32_t limit;          /* CONTROL_JOB_USAGE_LIST */
    uint64_t user_id;        /* the authenticated user; 0 for register and login */
    const uint8_t *body;     /* request body (JSON), may be NULL */
    uint32_t body_length;
    uint32_t argument_length;
    const uint8_t *argument; /* see the kinds */
    uint8_t *reply;          /* the JSON response body goes here ... */
    uint32_t reply_capacity; /* ... never more than this */
} control_job_t;

/* A job whose reply buffer is smaller than this is answered 413 without
 * running (the request left no room for the answer in the worker's buffer);
 * give every job at least this much. */
enum { CONTROL_REPLY_BYTES_MIN = 1024 };

typedef struct control_reply {
    uint32_t slot;
    uint16_t status;        /* the HTTP status to answer with */
    uint16_t reserved;
    uint32_t length;        /* bytes of JSON written at job.reply */
} control_reply_t;

#endif
