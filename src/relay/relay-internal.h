/* Private to src/relay: the stream slot and the worker, shared by the
 * request path (relay.c), billing (billing.c) and the account endpoints
 * (accounts.c). */
#ifndef RINGWAY_RELAY_INTERNAL_H
#define RINGWAY_RELAY_INTERNAL_H

#include "ringway/account.h"
#include "ringway/admin.h"
#include "ringway/control-t.h"
#include "ringway/http.h"
#include "ringway/json.h"
#include "ringway/loop.h"
#include "ringway/relay.h"
#include "ringway/router.h"
#include "ringway/server.h"
#include "ringway/sse.h"
#include "ringway/store.h"
#include "ringway/upstream.h"

#include <stdatomic.h>
#include <sys/uio.h>

enum {
    RELAY_SPANS_MAX = 48,
    RELAY_REQUEST_HEAD_BYTES = 2048,
    RELAY_EDITS_MAX = 3, /* the model, stream_options, max_tokens */
    RELAY_TICK_MS = 50,
    RELAY_RETRIES_MAX = 2,
    /* Provided receive buffers per thread. A request's bytes are copied out
     * of them at once, so few are busy at any moment; the ring hands them
     * out in FIFO order, so every one of them ends up resident: keep the
     * count small (512 x 16 KiB = 8 MiB per thread at most). */
    RELAY_RECEIVE_BUFFERS = 512,
    /* Decrypt another buffered record before sending only while this much
     * room is left in the stream buffer. */
    RELAY_BATCH_ROOM_MIN = 2048,
    /* Settlements kept per thread while the store's channel is full. */
    RELAY_STORE_RETRIES_MAX = 1024,
};

typedef struct relay_span {
    uint32_t offset;
    uint32_t length;
} relay_span_t;

typedef struct relay_edit {
    uint32_t offset; /* in the client's body */
    uint32_t removed;
    const char *text;
    uint32_t length;
} relay_edit_t;

typedef enum relay_phase {
    RELAY_PHASE_IDLE,
    RELAY_PHASE_CONNECTING,
    RELAY_PHASE_SENDING,
    RELAY_PHASE_WAITING_HEAD,
    RELAY_PHASE_RELAYING,
    RELAY_PHASE_DRAINING,
    RELAY_PHASE_SETTLING,        /* the response is complete; waiting for the store's ack
                                  * of the usage record before its last bytes go out */
    RELAY_PHASE_WAITING_CONTROL, /* an account request is with the control thread */
    RELAY_PHASE_DONE,
} relay_phase_t;

typedef enum relay_mode {
    RELAY_MODE_PASS, /* a JSON body, forwarded as it comes, usage scanned */
    RELAY_MODE_SSE,  /* an event stream, forwarded event by event */
} relay_mode_t;

typedef struct relay_stream {
    struct relay_worker *worker;
    server_exchange_t *exchange;
    upstream_pool_t *pool;
    upstream_connection_t *upstream;
    loop_timer_t timer;
    relay_phase_t phase;
    relay_mode_t mode;
    bool client_streaming;
    bool client_wants_usage;
    bool client_gone;
    bool reused;
    bool upstream_done;
    bool upstream_reusable;
    bool event_partly_forwarded; /* the event in progress was flushed early: never strip it */
    bool done_seen;              /* the upstream sent data: [DONE]; it waits for the settlement */
    bool head_begun;
    uint8_t retries;
    /* The upstream request: our head, then the client's body in splices. */
    struct iovec request_pieces[UPSTREAM_IOVECS_MAX];
    uint32_t request_piece_count;
    uint8_t request_head[RELAY_REQUEST_HEAD_BYTES];
    /* The upstream response. */
    uint8_t *buffer;
    size_t capacity;
    size_t filled;
    size_t parsed; /* raw bytes up to here are decoded (or are the head) */
    http_response_parser_t response_parser;
    http_response_t response;
    http_chunked_decoder_t chunked;
    int64_t body_remaining;
    sse_scanner_t sse;
    usage_scanner_t usage_scanner;
    usage_counts_t usage;
    bool usage_seen;
    uint64_t drained_bytes;
    relay_span_t ready[RELAY_SPANS_MAX];
    uint32_t ready_count;
    relay_span_t pending[RELAY_SPANS_MAX];
    uint32_t pending_count;
    struct iovec send_pieces[RELAY_SPANS_MAX + 2];
    char content_type[128];
    char extra_headers[256];
    uint8_t error_event[640];
    /* Billing (billing.c): who pays, what is held, what was delivered. */
    uint32_t generation;           /* bumped per request: stale acks are recognised */
    const router_route_t *route;
    account_user_t *user;
    account_key_t *key;
    int64_t hold_micros;
    bool held;                     /* a hold is open until relay_bill settles it */
    uint64_t started_ms;
    uint64_t content_events;       /* SSE data events forwarded: the estimate when no usage comes */
    uint64_t forwarded_bytes;
    char max_tokens_member[40];    /* "\"max_tokens\":N," spliced when the client set none, */
    uint32_t max_tokens_offset;    /* ... at this body offset, */
    uint32_t max_tokens_removed;   /* ... replacing these bytes (a null limit's value) */
    uint8_t *reply;                /* where the control thread writes an account answer */
    uint32_t reply_capacity;
} relay_stream_t;

struct relay_worker {
    loop_t loop;
    server_t *server;
    const relay_shared_t *shared;
    const config_t *config;
    uint32_t index;
    upstream_pool_t pools[CONFIG_UPSTREAMS_MAX];
    relay_stream_t *streams;
    uint8_t *stream_memory;
    loop_timer_list_t drain_timers;
    atomic_bool stop_requested;
    void (*server_tick)(loop_t *loop);
    /* Messages from the store and control threads arrive as a msg_ring CQE
     * for this operation; its callback drains both reply channels. */
    loop_operation_t mailbox;
    /* Store messages that found the channel full, retried every tick in
     * order (a ring of RELAY_STORE_RETRIES_MAX). */
    store_message_t *store_retries;
    uint32_t store_retry_first;
    uint32_t store_retry_count;
    store_message_t message;       /* scratch: messages are copied into the channel */
};

/* relay.c */
void relay_forward(relay_stream_t *stream);
void relay_respond_error(relay_stream_t *stream, uint16_t status, const char *type, const char *message,
                         const char *param, const char *code);

/* billing.c: admission and settlement (see the contracts there). */
bool relay_authenticate_key(relay_stream_t *stream);
bool relay_admit(relay_stream_t *stream, const json_chat_request_t *request, uint64_t completions);
bool relay_bill(relay_stream_t *stream, const char *status, bool wait_for_ack);
void relay_on_mailbox(loop_operation_t *operation, int32_t result, uint32_t flags);
void relay_retry_settlements(relay_worker_t *worker);

/* accounts.c: the account endpoints (self-service, seed 003). */
bool relay_accounts_route(relay_stream_t *stream, const uint8_t *path, size_t path_length);
void relay_accounts_on_reply(relay_stream_t *stream, const control_reply_t *reply);


#endif
