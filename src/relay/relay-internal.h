/* Private to src/relay: the stream slot, the worker, and the entry point of
 * each stage of the request path. The stage map: each stage is one file,
 * read top to bottom, and calls only later stages (a reply from the store
 * or the control thread comes back through worker.c's mailbox):
 *
 *   worker.c    the thread: create, run, tick, mailbox, server callbacks
 *   dispatch.c  the endpoint table: path and method -> endpoint; the
 *               self-service endpoints go to the portal (src/portal), whose
 *               job replies come back through worker.c's mailbox
 *   admit.c     authenticate, read the body, route, allowlist, store
 *               backpressure, limits (limits.c), hold
 *   limits.c    the rate limits: take at admission, end at settlement,
 *               the headers; answers nothing itself
 *   stream.c    the attempts: a route (route.c), its request (plan.c),
 *               upstream I/O, response head, failover before the first
 *               byte, decode, forward, finish
 *   route.c     which route and key an attempt takes (priority, smooth
 *               weighted round-robin, breakers), and its outcome
 *   plan.c      the upstream request: head + the client's body in splices
 *   settle.c    the charge, the usage record, the store's queue
 *   reply.c     our own answers (OpenAI errors); a leaf every stage uses
 */
#ifndef RINGWAY_RELAY_INTERNAL_H
#define RINGWAY_RELAY_INTERNAL_H

#include "ringway/account.h"
#include "ringway/breaker.h"
#include "ringway/http.h"
#include "ringway/json.h"
#include "ringway/loop.h"
#include "ringway/portal.h"
#include "ringway/relay.h"
#include "ringway/router.h"
#include "ringway/server.h"
#include "ringway/sse.h"
#include "ringway/store.h"
#include "ringway/text.h"
#include "ringway/upstream.h"

#include <stdatomic.h>
#include <sys/uio.h>

enum {
    RELAY_SPANS_MAX = 48,
    /* Span slack a decode pass keeps free: a chunk adds at most one span to
     * pending and moves at most one to ready per event it completes, so a
     * pass stops while this many are left; a batched extra read needs room
     * for a whole record's worth of events. */
    RELAY_SPANS_SLACK_DECODE = 4,
    RELAY_SPANS_SLACK_BATCH = 8,
    RELAY_REQUEST_HEAD_BYTES = 2048,
    RELAY_EDITS_MAX = 3, /* the model, stream_options, max_tokens */
    RELAY_MAX_TOKENS_TEXT_BYTES = 40,
    RELAY_TICK_MS = 50,
    RELAY_RETRIES_MAX = 2,
    /* The loop's submission queue, and its provided receive buffers. A
     * request's bytes are copied out of the buffers at once, so few are busy
     * at any moment; the ring hands them out in FIFO order, so every one of
     * them ends up resident: keep the count small (512 x 16 KiB = 8 MiB per
     * thread at most). */
    RELAY_RING_ENTRIES = 4096,
    RELAY_RECEIVE_BUFFERS = 512,
    RELAY_RECEIVE_BUFFER_BYTES = 16 * 1024,
    /* Decrypt another buffered record before sending only while this much
     * room is left in the stream buffer. */
    RELAY_BATCH_ROOM_MIN = 2048,
    /* Store messages one held request sends at most: its hold record and
     * its settlement. */
    RELAY_STORE_MESSAGES_PER_HOLD = 2,
    /* One stream slot in this many is kept from billable requests, so
     * requests that need no store (health checks, the model list, account
     * pages) are served while the store is behind. */
    RELAY_STREAMS_KEPT_DIVISOR = 64,
    /* Retry-After, in seconds, of a 503 server_busy. */
    RELAY_BUSY_RETRY_AFTER_S = 1,
    /* drain, hold records, store waits */
    RELAY_WORKER_TIMER_LISTS = 4,
    /* Room for the rate-limit headers of one response (limits.c). */
    RELAY_LIMIT_HEADERS_BYTES = 512,
    /* Rate limits a request can take: a key's five and its quota, an
     * account's five (and an unused sixth). */
    RELAY_LIMIT_BITS = 2 * (ACCOUNT_LIMITS + 1),
};

/* No API key: the upstream is sent no Authorization header. */
#define RELAY_KEY_NONE 0xff

/* What an attempt's end says about its route (route.c). */
typedef enum relay_outcome {
    RELAY_OUTCOME_SUCCESS,          /* an answer: 2xx, or the client's own error (400, 404, 413, 422) */
    RELAY_OUTCOME_UPSTREAM_FAILED,  /* connect, TLS, timeout, 5xx, an invalid or missing answer */
    RELAY_OUTCOME_KEY_LIMITED,      /* 429: the key's quota, not the upstream's health */
    RELAY_OUTCOME_KEY_REFUSED,      /* 401/403: the key leaves rotation */
    RELAY_OUTCOME_NEUTRAL,          /* the client left, or no connection was free */
} relay_outcome_t;

/* The routing state of one upstream on one thread (route.c). */
typedef struct relay_upstream_health {
    breaker_t breaker;
    breaker_t key_breakers[CONFIG_UPSTREAM_KEYS_MAX];
    uint32_t key_next; /* round-robin position over its keys */
} relay_upstream_health_t;

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
    RELAY_PHASE_WAITING_STORE,   /* admitted up to the hold; the store is behind (admit.c) */
    RELAY_PHASE_CONNECTING,
    RELAY_PHASE_SENDING,
    RELAY_PHASE_WAITING_HEAD,
    RELAY_PHASE_RELAYING,
    RELAY_PHASE_DRAINING,
    RELAY_PHASE_SETTLING,        /* the response is complete; waiting for the store's ack
                                  * of the usage record before its last bytes go out */
    RELAY_PHASE_WAITING_CONTROL, /* a self-service request's job is with the control thread (src/portal) */
    RELAY_PHASE_DONE,
} relay_phase_t;

typedef enum relay_mode {
    RELAY_MODE_PASS, /* a JSON body, forwarded as it comes, usage scanned */
    RELAY_MODE_SSE,  /* an event stream, forwarded event by event */
} relay_mode_t;

typedef enum relay_endpoint {
    RELAY_ENDPOINT_NONE,
    RELAY_ENDPOINT_CHAT,       /* POST /v1/chat/completions */
    RELAY_ENDPOINT_EMBEDDINGS, /* POST /v1/embeddings */
} relay_endpoint_t;

/* What admission read from a request body, for plan.c. Spans are offsets
 * in the client's body. */
typedef struct relay_request_facts {
    json_span_t model;              /* the "model" value, quotes included */
    bool wants_usage_inserted;      /* streaming without include_usage: ask for it */
    bool stream_options_present;
    bool stream_options_is_object;
    json_span_t stream_options;     /* its value */
    bool include_usage_present;
    json_span_t include_usage;      /* its value */
    uint32_t members_offset;        /* just after the top-level '{' */
    uint32_t completions;           /* n, at least 1 */
    char max_tokens_text[RELAY_MAX_TOKENS_TEXT_BYTES]; /* spliced when the client set no limit, */
    uint32_t max_tokens_length;     /* ... this long (0: nothing spliced), */
    uint32_t max_tokens_offset;     /* ... at this body offset, */
    uint32_t max_tokens_removed;    /* ... replacing these bytes (a null limit's value) */
} relay_request_facts_t;

/* Buffers whose contents are valid only up to the counts kept beside them:
 * a new request never needs them cleared. */
typedef struct relay_stream_scratch {
    relay_span_t ready[RELAY_SPANS_MAX];
    relay_span_t pending[RELAY_SPANS_MAX];
    struct iovec send_pieces[RELAY_SPANS_MAX + 2];
    /* The upstream request: our head, then the client's body in splices. */
    struct iovec request_pieces[UPSTREAM_IOVECS_MAX];
    uint8_t request_head[RELAY_REQUEST_HEAD_BYTES];
    char content_type[128];
    char extra_headers[256 + RELAY_LIMIT_HEADERS_BYTES];
    uint8_t error_event[640];
} relay_stream_scratch_t;

typedef struct relay_stream {
    /* ---- Fixed for the slot's life (set once by worker.c). ---- */
    struct relay_worker *worker;
    uint8_t *buffer; /* the upstream response, stream_buffer_bytes */
    size_t capacity;
    loop_timer_t timer;      /* the phase's deadline */
    loop_timer_t hold_timer; /* when the hold gets its durable record (settle.c) */
    uint32_t generation;     /* bumped per request: stale acks are recognised */

    /* ---- Per request: everything from `exchange` up to `scratch` is
     * zeroed by relay_stream_reset, so a field added here starts at zero. */
    server_exchange_t *exchange;
    relay_phase_t phase;
    relay_endpoint_t endpoint;
    relay_mode_t mode;
    upstream_pool_t *pool;
    upstream_connection_t *upstream;
    bool client_streaming;
    bool client_wants_usage;
    bool client_gone;
    bool reused;
    bool upstream_done;
    bool upstream_reusable;
    bool event_partly_forwarded; /* the event in progress was flushed early: never strip it */
    bool done_seen;              /* the upstream sent data: [DONE]; it waits for the settlement */
    bool head_begun;
    /* SSE keep-alives (stream.c): when the upstream last sent bytes (loop
     * time); a comment in flight to the client; and a send that waits for
     * it (its pieces in scratch.send_pieces). */
    uint64_t upstream_heard_ms;
    bool keepalive_in_flight;
    bool send_deferred;
    bool deferred_last;
    uint32_t deferred_count;
    uint8_t retries;
    /* Attempts (stream.c, route.c): the route and key of the current one,
     * what was tried already, and whether its outcome is still owed to
     * the breakers (and whether it took their half-open probes). */
    const router_route_t *route;
    uint8_t route_index;
    uint8_t key_index;             /* RELAY_KEY_NONE: no key */
    uint8_t attempts;
    uint8_t routes_tried;          /* a bit per route */
    uint8_t keys_tried[CONFIG_ROUTES_MAX]; /* per route, a bit per key of its upstream */
    bool attempt_pending;
    bool has_affinity;             /* the model keeps this request's user (or header) on one route */
    uint64_t affinity_hash;
    bool upstream_probe;
    bool key_probe;
    uint64_t first_attempt_ms;
    uint32_t request_piece_count;
    /* The upstream response. */
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
    uint32_t ready_count;
    uint32_t pending_count;
    relay_request_facts_t facts;
    /* Billing: who pays, what is held, what was delivered. */
    const router_model_t *model;
    account_user_t *user;
    account_key_t *key;
    int64_t hold_micros;
    bool held;                     /* a hold is open until relay_settle settles it */
    bool hold_recorded;            /* its durable record went to the store */
    uint64_t started_ms;
    uint64_t content_events;       /* SSE data events forwarded: the estimate when no usage comes */
    uint64_t forwarded_bytes;
    /* Rate limits (limits.c): what admission took, a bit per subject and
     * limit, the window each was taken in, and the token estimate the token
     * limits were charged. */
    uint16_t limits_taken;
    uint32_t limit_windows[RELAY_LIMIT_BITS];
    uint64_t limit_tokens;
    /* Waiting for the store (admit.c): links of the worker's FIFO. */
    struct relay_stream *wait_next;
    struct relay_stream *wait_prev;
    portal_wait_t portal_wait;     /* a self-service request's job (RELAY_PHASE_WAITING_CONTROL) */

    /* ---- Scratch, never cleared. ---- */
    relay_stream_scratch_t scratch;
} relay_stream_t;

struct relay_worker {
    loop_t loop;
    server_t *server;
    const relay_shared_t *shared;
    const config_t *config;
    uint32_t index;
    upstream_pool_t pools[CONFIG_UPSTREAMS_MAX];
    /* Routing (route.c): breakers and key turns per upstream, the smooth
     * weighted round-robin's current weights per model and route. */
    relay_upstream_health_t health[CONFIG_UPSTREAMS_MAX];
    int32_t route_weights[CONFIG_MODELS_MAX][CONFIG_ROUTES_MAX];
    breaker_policy_t breaker_policy;
    relay_stream_t *streams;
    uint8_t *stream_memory;
    loop_timer_list_t drain_timers;
    loop_timer_list_t hold_record_timers; /* hold_record_after_ms */
    loop_timer_list_t store_wait_timers;  /* store_wait_ms */
    loop_timer_list_t keepalive_timers;   /* sse_keepalive_ms (when on) */
    atomic_bool stop_requested;
    void (*server_tick)(loop_t *loop);
    /* Messages from the store and control threads arrive as a msg_ring CQE
     * for this operation; its callback drains both reply channels. */
    loop_operation_t mailbox;
    /* Store messages that found the channel full, sent again in order on a
     * later tick (a ring of store_retries_max). Admission keeps room in it
     * for every message a held request may still send (store_reserved), so
     * it never overflows: see relay_settle_room. */
    store_message_t *store_retries;
    uint32_t store_retries_max;
    uint32_t store_retry_first;
    uint32_t store_retry_count;
    uint32_t store_reserved;
    /* Billable streams (settle.c): holding money, and waiting for the
     * store's ack of their settlement; admission stops at the maxima. */
    uint32_t held_count;
    uint32_t held_max;
    uint32_t settling_count;
    uint32_t settling_max;
    /* Requests waiting for the store (admit.c), oldest first. */
    relay_stream_t *wait_first;
    relay_stream_t *wait_last;
    uint32_t wait_count;
    uint32_t wait_max;
    store_message_t message;       /* scratch: messages are copied into the channel */
    /* Rate limits (limits.c): this thread's shards, keys_max and users_max
     * times six, and the shards holding a lease, visited on
     * ticks until they give it back. */
    limit_shard_t *limit_key_shards;
    limit_shard_t *limit_user_shards;
    uint32_t *limit_key_generations; /* keys_max: each key's limits_generation this thread last saw */
    uint32_t *limit_list;
    uint32_t limit_list_count;
    uint32_t limit_list_max;
    uint64_t limit_minute_ms;      /* 60,000 (tests may shorten it) */
    uint64_t limit_reset_minute;   /* the minute limit_reset_text is for */
    char limit_reset_text[24];     /* its end, ISO 8601 UTC */
};

/* Why limits.c refused a request: admit.c answers 429 with it. */
typedef struct relay_limit_refusal {
    const char *code;              /* rate_limit_exceeded, tokens_rate_limit_exceeded, ... */
    uint32_t retry_after_s;        /* 0: no Retry-After (nothing to wait for) */
    bool should_retry;             /* x-should-retry: false when waiting a little cannot help */
    char message[256];
} relay_limit_refusal_t;

/* reply.c: our own answers. The stream is done afterwards; nothing is
 * billed here (a stage that holds money settles it before answering). */
void relay_reply_error(relay_stream_t *stream, uint16_t status, const char *type, const char *message,
                       const char *param, const char *code);
void relay_reply_error_retry_after(relay_stream_t *stream, uint16_t status, const char *type, const char *message,
                                   const char *code, uint32_t retry_after_s);
void relay_reply_upstream_failure(relay_stream_t *stream, uint16_t status, const char *message, const char *code,
                                  bool should_retry);
struct relay_limit_refusal;
void relay_reply_rate_limited(relay_stream_t *stream, const struct relay_limit_refusal *refusal);

/* dispatch.c */
void relay_dispatch(relay_stream_t *stream);

/* admit.c */
void relay_admit(relay_stream_t *stream, relay_endpoint_t endpoint);
bool relay_admit_key(relay_stream_t *stream);
void relay_admit_resume(relay_worker_t *worker);
void relay_admit_forget(relay_stream_t *stream);
void relay_admit_on_wait_timeout(relay_stream_t *stream);

/* limits.c */
int relay_limits_init(relay_worker_t *worker, char *error, size_t error_size);
bool relay_limits_admit(relay_stream_t *stream, const json_chat_request_t *request, relay_limit_refusal_t *refusal);
void relay_limits_cancel(relay_stream_t *stream);
void relay_limits_finish(relay_stream_t *stream, uint64_t tokens_used);
void relay_limits_tick(relay_worker_t *worker);
size_t relay_limits_headers(relay_stream_t *stream, char *out, size_t capacity);

/* route.c */
void relay_route_init(relay_worker_t *worker);
bool relay_route_choose(relay_stream_t *stream);
void relay_route_report(relay_stream_t *stream, relay_outcome_t outcome);
uint32_t relay_route_retry_after_s(const relay_stream_t *stream);
void relay_route_set_affinity(relay_stream_t *stream, const uint8_t *bytes, size_t length);
const char *relay_route_key(const relay_stream_t *stream);

/* plan.c */
void relay_plan(relay_stream_t *stream);

/* stream.c */
void relay_stream_start(relay_stream_t *stream);
void relay_stream_on_sent(relay_stream_t *stream);
void relay_stream_on_abort(relay_stream_t *stream);
void relay_stream_on_timer(relay_stream_t *stream);
void relay_stream_on_settled(relay_stream_t *stream, const store_ack_t *ack);

/* settle.c */
bool relay_settle_room(const relay_worker_t *worker);
void relay_settle_hold_opened(relay_stream_t *stream);
bool relay_settle(relay_stream_t *stream, const char *status, bool wait_for_ack);
void relay_settle_retry(relay_worker_t *worker);
void relay_settle_acknowledged(relay_stream_t *stream);
void relay_settle_on_hold_timer(loop_timer_t *timer);

#endif
