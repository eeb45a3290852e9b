/* Types of the control thread (src/control; its functions are in
 * control.h). */
#ifndef RINGWAY_CONTROL_T_H
#define RINGWAY_CONTROL_T_H

#include "ringway/account-t.h"
#include "ringway/common.h"
#include "ringway/config-t.h"
#include "ringway/store-t.h"

typedef struct control control_t;

typedef struct control_options {
    const config_t *config;           /* admin_listen, [auth], [billing], models; outlives the control thread */
    account_tables_t *tables;         /* loaded; the control thread becomes their only slot publisher */
    store_t *store;                   /* opened and loaded */
    store_thread_t *store_thread;     /* created; must run before control_bootstrap / control_start */
    uint32_t store_producer;          /* the control thread's producer index (config->threads) */
    uint32_t worker_count;            /* relay workers 0..worker_count-1 (1..PORTAL_WORKERS_MAX) */
    uint64_t next_user_id;            /* store_load_result_t.next_user_id */
    uint64_t next_key_id;             /* store_load_result_t.next_key_id */
    const uint8_t *jwt_secret;        /* HS256 key, >= JWT_SECRET_BYTES_MIN bytes; copied */
    size_t jwt_secret_length;         /* <= CONFIG_SECRET_BYTES */
    uint32_t job_channel_capacity;    /* per worker and direction, a power of two; 0 = 256 */
    const struct health *health;      /* for GET /admin/upstreams; written by the relay threads */
} control_options_t;

#endif
