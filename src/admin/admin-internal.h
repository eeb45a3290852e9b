/* Private to src/admin: the admin API's state (admin.c) and its budgets.
 * The account operations (operations.c) and their types are public
 * (admin.h, admin-t.h): the portal's jobs use them too. Everything here runs
 * on the control thread. */
#ifndef RINGWAY_ADMIN_INTERNAL_H
#define RINGWAY_ADMIN_INTERNAL_H

#include "ringway/account.h"
#include "ringway/admin.h"
#include "ringway/auth.h"
#include "ringway/config.h"
#include "ringway/server.h"
#include "ringway/store.h"
#include "ringway/text.h"

#include <stdatomic.h>

enum {
    ADMIN_CONNECTIONS_MAX = 64,
    ADMIN_EXCHANGES_MAX = 16,
    ADMIN_REQUEST_BUFFER_BYTES = 64 * 1024,
    ADMIN_HEAD_BYTES_MAX = 16 * 1024,
    ADMIN_BODY_BYTES_MAX = 1024 * 1024,
    ADMIN_RESPONSE_BYTES = 256 * 1024,   /* per exchange: one JSON answer or one export page */
    ADMIN_LIST_LIMIT_DEFAULT = 100,
    ADMIN_LIST_LIMIT_MAX = 1000,
    ADMIN_AUDIT_LIMIT_DEFAULT = 100,
};

/* Export state of an admin exchange that streams usage page by page. */
typedef enum admin_format {
    ADMIN_FORMAT_JSON = 0,
    ADMIN_FORMAT_JSONL,
    ADMIN_FORMAT_CSV,
} admin_format_t;

typedef struct admin_exchange {
    server_exchange_t *exchange;
    char *response;                             /* ADMIN_RESPONSE_BYTES, owned until the exchange ends */
    bool streaming;
    bool stream_done;
    admin_format_t format;
    store_usage_query_t query;                  /* the caller's filters */
    uint64_t sent;                              /* records sent so far */
    uint64_t last_id;                           /* id of the last record sent; UINT64_MAX before any */
    int64_t last_created_ms;
    bool first_page;
} admin_exchange_t;

struct admin_api {
    admin_context_t *context;
    admin_exchange_t exchanges[ADMIN_EXCHANGES_MAX];
    char *response_memory;                      /* ADMIN_EXCHANGES_MAX * ADMIN_RESPONSE_BYTES, mapped */
};

#endif
