/* Settlement, the last stage: what a request is charged, and the store's
 * queue from this worker.
 *
 * Money moves in two places. In memory, ledger_reserve (admit.c) and
 * ledger_settle (here) move the user's available balance, atomics shared by
 * every thread. Durably, the store thread writes the settlement as one
 * atomic batch: the usage record, the user's new balance, the key's
 * spending. A completed response's last bytes go out only after the store
 * acknowledged that batch (stream.c waits for it), so a kill -9 never loses
 * the usage record of a response the client received in full.
 *
 * A hold gets a durable record only when its request is still open after
 * hold_record_after_ms: the persisted balance never contains holds, so a
 * crash loses nothing by an unrecorded hold, and a short request writes
 * only its settlement.
 *
 * The store's queue never blocks this thread. A message that finds the
 * channel full waits in the worker's retry ring, sent again in order on a
 * later tick. Admission (relay_settle_room) takes a hold only while the ring
 * is empty and keeps room in it for the at most RELAY_STORE_MESSAGES_PER_HOLD
 * messages every held request may still send, so the ring cannot overflow;
 * while the store is behind, requests wait in admission instead. The store
 * thread in turn takes a message only when its ack fits, and the reply
 * channel is sized for one ack per stream slot (store_thread_create's
 * capacity from main.c), so neither side ever waits on the other. */
#include "relay-internal.h"

#include "ringway/ledger.h"

#include <stdio.h>
#include <string.h>

static uint64_t relay_settle_token(const relay_stream_t *stream) {
    uint32_t slot = server_exchange_index(stream->exchange);
    return ((uint64_t)stream->generation << 32) | slot;
}

/* Hands a message to the store thread, using one of the reservations the
 * hold made; when the channel is full it waits in the retry ring. */
static void relay_settle_submit(relay_worker_t *worker, const store_message_t *message) {
    RW_ASSERT(worker->store_reserved > 0);
    worker->store_reserved--;
    store_thread_t *store_thread = worker->shared->store_thread;
    if (worker->store_retry_count == 0 &&
        store_thread_submit(store_thread, worker->index, message, &worker->loop.ring)) {
        return;
    }
    RW_ASSERT(worker->store_retry_count < worker->store_retries_max);
    uint32_t slot = (worker->store_retry_first + worker->store_retry_count) % worker->store_retries_max;
    worker->store_retries[slot] = *message;
    worker->store_retry_count++;
}

/* Whether admission may take a new hold now: the store keeps up (nothing
 * waits in the retry ring, not too many streams wait for acks) and the
 * worker's budgets have room for the hold's messages and its stream. */
bool relay_settle_room(const relay_worker_t *worker) {
    RW_ASSERT(worker->store_retry_count + worker->store_reserved <= worker->store_retries_max);
    return worker->store_retry_count == 0 && worker->settling_count < worker->settling_max &&
           worker->held_count + worker->settling_count < worker->held_max &&
           worker->store_reserved + RELAY_STORE_MESSAGES_PER_HOLD <= worker->store_retries_max;
}

static void relay_settle_record_hold(relay_stream_t *stream) {
    relay_worker_t *worker = stream->worker;
    RW_ASSERT(stream->held && !stream->hold_recorded);
    store_message_t *message = &worker->message;
    memset(message, 0, offsetof(store_message_t, body) + sizeof message->body.hold_open);
    message->kind = STORE_MESSAGE_HOLD_OPEN;
    store_hold_record_t *record = &message->body.hold_open;
    rw_copy_text(record->request_id, sizeof record->request_id, stream->exchange->request_id);
    record->user_id = stream->user->id;
    record->key_id = stream->key->id;
    record->amount_micros = stream->hold_micros;
    record->created_ms = text_wall_ms();
    rw_copy_text(record->model, sizeof record->model, stream->model->config->name);
    stream->hold_recorded = true;
    relay_settle_submit(worker, message);
}

/* Admission took a hold: its messages are reserved, and its record is
 * written now or when the request is still open after
 * hold_record_after_ms. */
void relay_settle_hold_opened(relay_stream_t *stream) {
    relay_worker_t *worker = stream->worker;
    RW_ASSERT(stream->held && stream->hold_micros >= 0);
    worker->held_count++;
    worker->store_reserved += RELAY_STORE_MESSAGES_PER_HOLD;
    RW_ASSERT(worker->store_retry_count + worker->store_reserved <= worker->store_retries_max);
    if (worker->config->hold_record_after_ms == 0) {
        relay_settle_record_hold(stream);
    } else {
        loop_timer_start(&worker->loop, &worker->hold_record_timers, &stream->hold_timer);
    }
}

void relay_settle_on_hold_timer(loop_timer_t *timer) {
    relay_stream_t *stream = timer->owner;
    if (stream->held && !stream->hold_recorded) relay_settle_record_hold(stream);
}

/* Body bytes decoded but not sent yet: a response that ends settles before
 * its last spans go out (they wait for the store's ack). */
static uint64_t relay_settle_unsent_bytes(const relay_stream_t *stream) {
    uint64_t bytes = 0;
    for (uint32_t index = 0; index < stream->ready_count; index++) bytes += stream->scratch.ready[index].length;
    if (stream->upstream_done) {
        for (uint32_t index = 0; index < stream->pending_count; index++) bytes += stream->scratch.pending[index].length;
    }
    return bytes;
}

/* Whether the upstream refused the request (an error status) or never
 * answered (no status): such a request costs nothing. */
static bool relay_settle_refused(const relay_stream_t *stream) {
    return stream->response.status >= 400 || stream->response.status == 0;
}

/* What the request is charged: the cost of what the upstream reported, or
 * an estimate flagged as such when it reported nothing; nothing for a
 * request the upstream refused or that failed before any output. */
static int64_t relay_settle_cost(const relay_stream_t *stream, usage_counts_t *usage, usage_counts_t *billed,
                                 bool *estimated) {
    *usage = (usage_counts_t){0, 0, 0, 0, 0};
    *billed = *usage;
    *estimated = false;
    bool nothing_delivered = stream->forwarded_bytes == 0 && !stream->usage_seen && !stream->upstream_done;
    if (relay_settle_refused(stream)) return 0;
    if (stream->usage_seen) {
        *usage = stream->usage;
    } else if (nothing_delivered) {
        return 0;
    } else {
        /* No usage from the upstream: prompt from the request's size, the
         * completion from what was delivered (one token per streamed
         * content event, else 4 bytes a token). */
        uint64_t completion_bytes = stream->mode == RELAY_MODE_SSE
                                        ? stream->content_events * LEDGER_ESTIMATE_BYTES_PER_TOKEN
                                        : stream->forwarded_bytes + relay_settle_unsent_bytes(stream);
        ledger_estimate_usage(stream->exchange->body_length, completion_bytes, usage);
        *estimated = true;
    }
    *billed = *usage;
    return ledger_cost(stream->model->config, usage, billed);
}

static uint64_t relay_settle_count(int64_t tokens) { return tokens > 0 ? (uint64_t)tokens : 0; }

/* Settles the stream's hold, once (and ends its rate limits): the charge (never more than the hold)
 * leaves the wallet in memory and the usage record goes to the store. With
 * wait_for_ack the stream enters RELAY_PHASE_SETTLING and stream.c goes on
 * in relay_stream_on_settled once the record is written. Returns true when
 * the caller must wait; false when there is nothing to wait for (no hold,
 * or no wait asked). */
bool relay_settle(relay_stream_t *stream, const char *status, bool wait_for_ack) {
    if (!stream->held && stream->limits_taken == 0) return false;
    usage_counts_t usage;
    usage_counts_t billed;
    bool estimated = false;
    int64_t cost = relay_settle_cost(stream, &usage, &billed, &estimated);
    RW_ASSERT(cost >= 0);
    /* The rate limits end here too, on every path a relayed request ends
     * by: its concurrency slot, and its tokens corrected to what was used. */
    relay_limits_finish(stream, relay_settle_count(usage.prompt_tokens) + relay_settle_count(usage.completion_tokens));
    if (!stream->held) return false;
    relay_worker_t *worker = stream->worker;
    RW_ASSERT(worker->held_count > 0);
    stream->held = false;
    worker->held_count--;
    loop_timer_stop(&stream->hold_timer);
    if (!stream->hold_recorded) {
        RW_ASSERT(worker->store_reserved > 0);
        worker->store_reserved--; /* the record it never needed */
    }
    int64_t charged = 0;
    bool capped = false;
    ledger_settle(stream->user, stream->key, stream->hold_micros, cost, &charged, &capped);
    RW_ASSERT(charged >= 0 && charged <= stream->hold_micros);
    RW_ASSERT(charged == cost || (capped && charged < cost));

    store_message_t *message = &worker->message;
    memset(message, 0, offsetof(store_message_t, body) + sizeof message->body.settle);
    message->kind = STORE_MESSAGE_SETTLE;
    message->token = relay_settle_token(stream);
    store_usage_record_t *record = &message->body.settle.usage;
    rw_copy_text(record->request_id, sizeof record->request_id, stream->exchange->request_id);
    record->key_id = stream->key->id;
    record->user_id = stream->user->id;
    rw_copy_text(record->model, sizeof record->model, stream->model->config->name);
    /* The upstream of the attempt that answered (the last one); none when
     * no route could take the request. */
    rw_copy_text(record->upstream, sizeof record->upstream, stream->pool != NULL ? stream->pool->upstream->name : "");
    record->prompt_tokens = relay_settle_count(billed.prompt_tokens);
    record->completion_tokens = relay_settle_count(billed.completion_tokens);
    record->cached_tokens = relay_settle_count(billed.cached_tokens);
    record->reasoning_tokens = relay_settle_count(usage.reasoning_tokens);
    record->cost_micros = charged;
    record->attempts = stream->attempts;
    if (relay_settle_refused(stream) && stream->response.status >= 400 && strcmp(status, "completed") == 0) {
        snprintf(record->status, sizeof record->status, "upstream_%u", (unsigned)stream->response.status);
    } else {
        rw_copy_text(record->status, sizeof record->status, status);
    }
    record->latency_ms = loop_now_ms(&worker->loop) - stream->started_ms;
    record->estimated = estimated;
    record->capped = capped;
    message->body.settle.hold_micros = stream->hold_micros;
    if (wait_for_ack) message->flags |= STORE_MESSAGE_FLAG_ACK;
    if (!stream->hold_recorded) message->flags |= STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED;
    relay_settle_submit(worker, message);
    if (!wait_for_ack) return false;
    worker->settling_count++;
    stream->phase = RELAY_PHASE_SETTLING;
    return true;
}

/* The store acknowledged the settlement `stream` waits for (before
 * stream.c sends the last bytes). */
void relay_settle_acknowledged(relay_stream_t *stream) {
    relay_worker_t *worker = stream->worker;
    RW_ASSERT(stream->phase == RELAY_PHASE_SETTLING && !stream->held && worker->settling_count > 0);
    worker->settling_count--;
}

/* Called on every tick and after the store's acks: messages that found the
 * store's channel full go again, in order. */
void relay_settle_retry(relay_worker_t *worker) {
    while (worker->store_retry_count > 0) {
        const store_message_t *message = &worker->store_retries[worker->store_retry_first];
        if (!store_thread_submit(worker->shared->store_thread, worker->index, message, &worker->loop.ring)) return;
        worker->store_retry_first = (worker->store_retry_first + 1) % worker->store_retries_max;
        worker->store_retry_count--;
    }
}
