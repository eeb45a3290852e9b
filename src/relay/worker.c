/* The worker: one per event-loop thread, with its loop, its server side,
 * its upstream pools and its stream slots (one per server exchange, same
 * index). It turns the server's and the other threads' events into calls of
 * the stages (dispatch.c first; the map is in relay-internal.h) and owns
 * nothing of the request path itself. */
#include "relay-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void relay_worker_on_timer(loop_timer_t *timer);

_Static_assert(UPSTREAM_POOL_TIMER_LISTS * CONFIG_UPSTREAMS_MAX + SERVER_TIMER_LISTS + RELAY_WORKER_TIMER_LISTS <=
                   LOOP_TIMER_LISTS_MAX,
               "a worker's timer lists fit its loop with every upstream configured");

/* Makes the slot ready for the exchange's request: every per-request field
 * is zeroed at once (see relay_stream_t), the fixed ones are kept. */
static void relay_stream_reset(relay_stream_t *stream, server_exchange_t *exchange) {
    RW_ASSERT(!stream->held && !loop_timer_active(&stream->hold_timer));
    RW_ASSERT(stream->limits_taken == 0 && "a request's rate limits end with it");
    RW_ASSERT(!stream->attempt_pending && "an attempt's outcome reaches its breakers when it ends");
    loop_timer_stop(&stream->timer);
    uint8_t *begin = (uint8_t *)&stream->exchange;
    uint8_t *end = (uint8_t *)&stream->scratch;
    memset(begin, 0, (size_t)(end - begin));
    stream->exchange = exchange;
    stream->generation++;
    stream->started_ms = loop_now_ms(&stream->worker->loop);
    http_response_parser_init(&stream->response_parser, stream->worker->config->header_bytes_max);
}

static void relay_worker_on_request(server_exchange_t *exchange) {
    relay_worker_t *worker = server_handler_context(exchange->server);
    relay_stream_t *stream = &worker->streams[server_exchange_index(exchange)];
    relay_stream_reset(stream, exchange);
    exchange->handler_state = stream;
    relay_dispatch(stream);
}

static void relay_worker_on_sent(server_exchange_t *exchange) { relay_stream_on_sent(exchange->handler_state); }

static void relay_worker_on_abort(server_exchange_t *exchange) {
    relay_stream_t *stream = exchange->handler_state;
    if (stream->phase == RELAY_PHASE_WAITING_STORE) {
        stream->client_gone = true;
        relay_admit_forget(stream);
        return;
    }
    relay_stream_on_abort(stream);
}

static void relay_worker_on_timer(loop_timer_t *timer) {
    relay_stream_t *stream = timer->owner;
    if (stream->phase == RELAY_PHASE_WAITING_STORE) {
        relay_admit_on_wait_timeout(stream);
        return;
    }
    relay_stream_on_timer(stream);
}

/* The store thread's acks and the portal's job replies (from the control
 * thread) for this worker. Each names the stream slot (and, for acks, the
 * generation, so an ack for an earlier request of the slot is dropped). Run
 * on every doorbell and on every tick: a doorbell is rung only when a
 * channel turns non-empty, so one that was lost (a full completion queue)
 * must not leave replies unread for ever. */
static void relay_worker_read_replies(relay_worker_t *worker) {
    store_ack_t ack;
    while (store_thread_reply_pop(worker->shared->store_thread, worker->index, &ack)) {
        uint32_t slot = (uint32_t)(ack.token & 0xffffffffu);
        uint32_t generation = (uint32_t)(ack.token >> 32);
        if (ack.kind != STORE_MESSAGE_SETTLE || slot >= worker->config->streams_per_thread) continue;
        relay_stream_t *stream = &worker->streams[slot];
        if (stream->generation != generation || stream->phase != RELAY_PHASE_SETTLING) continue;
        relay_settle_acknowledged(stream);
        relay_stream_on_settled(stream, &ack);
    }
    portal_reply_t reply;
    while (portal_reply_pop(worker->shared->portal, worker->index, &reply)) {
        if (reply.slot >= worker->config->streams_per_thread) continue;
        relay_stream_t *stream = &worker->streams[reply.slot];
        if (stream->phase != RELAY_PHASE_WAITING_CONTROL) continue;
        stream->phase = RELAY_PHASE_DONE;
        portal_answer(stream->exchange, &stream->portal_wait, &reply, stream->client_gone);
    }
}

/* The mailbox: a doorbell from the store or the control thread. */
static void relay_worker_on_mailbox(loop_operation_t *operation, int32_t result, uint32_t flags) {
    relay_worker_t *worker = operation->owner;
    relay_worker_read_replies(worker);
    /* The store made progress: waiting messages and requests go on. */
    relay_settle_retry(worker);
    relay_admit_resume(worker);
}

static void relay_worker_tick(loop_t *loop) {
    relay_worker_t *worker = (relay_worker_t *)((uint8_t *)loop - offsetof(relay_worker_t, loop));
    if (worker->server_tick != NULL) worker->server_tick(loop);
    relay_worker_read_replies(worker);
    relay_settle_retry(worker);
    relay_admit_resume(worker);
    relay_limits_tick(worker);
    if (atomic_load_explicit(&worker->stop_requested, memory_order_relaxed)) loop->stopping = true;
}

/* The budgets of billable requests (see settle.c): a retry ring with room
 * for every message the held streams may send, and maxima that keep stream
 * slots for requests that need no store. */
static int relay_worker_budgets(relay_worker_t *worker, char *error, size_t error_size) {
    const config_t *config = worker->config;
    uint32_t streams = config->streams_per_thread;
    worker->held_max = streams - streams / RELAY_STREAMS_KEPT_DIVISOR;
    worker->settling_max = RW_MAX(1u, streams / 2);
    worker->wait_max = RW_MIN(config->store_wait_requests_max, worker->held_max);
    worker->store_retries_max = RELAY_STORE_MESSAGES_PER_HOLD * worker->held_max;
    worker->store_retries = calloc(worker->store_retries_max, sizeof(store_message_t));
    if (worker->store_retries == NULL) {
        snprintf(error, error_size, "out of memory for the store retry ring (%u messages)",
                 (unsigned)worker->store_retries_max);
        return -1;
    }
    return 0;
}

relay_worker_t *relay_worker_create(const relay_shared_t *shared, uint32_t index, char *error, size_t error_size) {
    const config_t *config = shared->config;
    relay_worker_t *worker = calloc(1, sizeof *worker);
    if (worker == NULL) {
        snprintf(error, error_size, "out of memory for a worker");
        return NULL;
    }
    worker->shared = shared;
    worker->config = config;
    worker->index = index;
    uint32_t exchanges = config->streams_per_thread;
    if (loop_init(&worker->loop, RELAY_RING_ENTRIES, RELAY_RECEIVE_BUFFERS, RELAY_RECEIVE_BUFFER_BYTES, error,
                  error_size) != 0) {
        return NULL;
    }
    worker->streams = calloc(exchanges, sizeof(relay_stream_t));
    worker->stream_memory = mmap(NULL, (size_t)exchanges * config->stream_buffer_bytes, PROT_READ | PROT_WRITE,
                                 MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    if (worker->streams == NULL || worker->stream_memory == MAP_FAILED) {
        snprintf(error, error_size, "cannot allocate stream slots: %s", strerror(errno));
        return NULL;
    }
    for (uint32_t slot = 0; slot < exchanges; slot++) {
        relay_stream_t *stream = &worker->streams[slot];
        stream->worker = worker;
        stream->buffer = worker->stream_memory + (size_t)slot * config->stream_buffer_bytes;
        stream->capacity = config->stream_buffer_bytes;
        loop_timer_init(&stream->timer, relay_worker_on_timer, stream);
        loop_timer_init(&stream->hold_timer, relay_settle_on_hold_timer, stream);
    }
    for (uint32_t upstream = 0; upstream < config->upstream_count; upstream++) {
        if (upstream_pool_init(&worker->pools[upstream], &worker->loop, &config->upstreams[upstream],
                               shared->upstream_tls[upstream], config->upstream_connections_per_thread,
                               config->upstream_keepalive_ms, error, error_size) != 0) {
            return NULL;
        }
    }
    loop_timer_list_init(&worker->loop, &worker->drain_timers, config->drain_ms);
    loop_timer_list_init(&worker->loop, &worker->hold_record_timers, config->hold_record_after_ms);
    loop_timer_list_init(&worker->loop, &worker->store_wait_timers, config->store_wait_ms);
    loop_timer_list_init(&worker->loop, &worker->keepalive_timers, RW_MAX(config->sse_keepalive_ms, 1u));
    if (relay_worker_budgets(worker, error, error_size) != 0) return NULL;
    if (relay_limits_init(worker, error, error_size) != 0) return NULL;
    relay_route_init(worker);
    server_config_t server_config = {
        .host = config->listen_host,
        .port = config->listen_port,
        .connections_max = config->connections_per_thread,
        .exchanges_max = exchanges,
        .request_buffer_bytes = config->request_buffer_bytes,
        .large_bodies_max = config->large_bodies_per_thread,
        .connections_per_ip = config->connections_per_ip,
        .large_bodies_per_ip = config->large_bodies_per_ip,
        .body_bytes_max = config->body_bytes_max,
        .head_bytes_max = config->header_bytes_max,
        .header_timeout_ms = config->header_ms,
        .body_timeout_ms = config->body_ms,
        .keepalive_timeout_ms = config->keepalive_idle_ms,
        .tls = NULL,
        .handlers = {.on_request = relay_worker_on_request,
                     .on_sent = relay_worker_on_sent,
                     .on_abort = relay_worker_on_abort},
        .handler_context = worker,
        .thread_index = index,
        .instance = shared->instance,
    };
    if (server_init(&worker->server, &worker->loop, &server_config, error, error_size) != 0) return NULL;
    worker->server_tick = worker->loop.on_tick;
    worker->loop.on_tick = relay_worker_tick;
    worker->mailbox = (loop_operation_t){.callback = relay_worker_on_mailbox, .owner = worker};
    return worker;
}

void relay_worker_run(relay_worker_t *worker) {
    server_start(worker->server);
    loop_run(&worker->loop, RELAY_TICK_MS);
}

int relay_worker_ring_fd(const relay_worker_t *worker) { return worker->loop.ring.ring_fd; }

loop_operation_t *relay_worker_mailbox(relay_worker_t *worker) { return &worker->mailbox; }

void relay_worker_stop(relay_worker_t *worker) {
    atomic_store_explicit(&worker->stop_requested, true, memory_order_relaxed);
}
