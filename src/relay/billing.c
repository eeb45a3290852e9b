/* Billing on the request path: who pays (the API key), what is held before
 * any upstream call, and what is charged when the response ends.
 *
 * Money moves in two places. In memory, ledger_reserve / ledger_settle move
 * the user's available balance (atomics shared by every thread; the check
 * and the reservation are one compare-and-swap, so no number of concurrent
 * requests can overdraw). Durably, the store thread writes one atomic batch
 * per settlement: the usage record, the user's new balance, the key's
 * spending, the hold's removal. A completed response's last bytes go out
 * only after the store acknowledged that batch, so a kill -9 never loses the
 * usage record of a response the client received in full. */
#include "relay-internal.h"

#include "ringway/auth.h"
#include "ringway/ledger.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t billing_wall_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static uint64_t billing_token(const relay_stream_t *stream) {
    uint32_t slot = server_exchange_index(stream->exchange);
    return ((uint64_t)stream->generation << 32) | slot;
}

/* Hands a message to the store thread. When its channel is full (the store
 * fell behind, e.g. a stalled disk) the message waits in this worker's
 * retry ring, in order, and goes on a later tick; when that ring is full
 * too, the worker waits here for the store: backpressure, never loss. */
static void billing_submit(relay_worker_t *worker, const store_message_t *message) {
    store_thread_t *store_thread = worker->shared->store_thread;
    if (worker->store_retry_count == 0 &&
        store_thread_submit(store_thread, worker->index, message, &worker->loop.ring)) {
        return;
    }
    while (worker->store_retry_count == RELAY_STORE_RETRIES_MAX) {
        io_uring_submit(&worker->loop.ring);
        usleep(100);
        relay_retry_settlements(worker);
    }
    uint32_t slot = (worker->store_retry_first + worker->store_retry_count) % RELAY_STORE_RETRIES_MAX;
    worker->store_retries[slot] = *message;
    worker->store_retry_count++;
}

/* Authenticates the request's API key (Authorization: Bearer sk-...).
 * Returns true with stream->key and stream->user set; false after it
 * answered 401 with the reason (missing, malformed, unknown, disabled,
 * expired). */
bool relay_authenticate_key(relay_stream_t *stream) {
    server_exchange_t *exchange = stream->exchange;
    const http_request_t *request = &exchange->request;
    const uint8_t *value = request->has_authorization ? exchange->buffer + request->authorization.offset : NULL;
    size_t length = request->has_authorization ? request->authorization.length : 0;
    auth_error_t error;
    account_key_t *key = NULL;
    account_user_t *user = NULL;
    auth_result_t result = auth_key_authenticate(stream->worker->shared->tables, value, length, billing_wall_ms(), &key,
                                                 &user, &error);
    if (result != AUTH_OK) {
        relay_respond_error(stream, error.http_status, error.type, error.message, NULL, error.code);
        return false;
    }
    stream->key = key;
    stream->user = user;
    return true;
}

/* Admission for a chat or embeddings request whose route is known: the
 * model allowlist (403), then the hold (402 when the wallet cannot pay or
 * is suspended, or the key's cap is reached). `request` is NULL for
 * embeddings (no output tokens). A chat request that names no max_tokens
 * gets the largest one the wallet can pay for, capped by the model's limit,
 * as a member spliced into the body (stream->max_tokens_member). Returns
 * true with the hold open; false after it answered. */
bool relay_admit(relay_stream_t *stream, const json_chat_request_t *request, uint64_t completions) {
    const router_route_t *route = stream->route;
    const config_model_t *model = route->model;
    uint32_t model_index = (uint32_t)(model - stream->worker->config->models);
    if (!account_key_allows_model(stream->key, model_index)) {
        char message[300];
        snprintf(message, sizeof message, "This API key is not allowed to use the model `%s`.", model->name);
        relay_respond_error(stream, 403, "permission_error", message, "model", "model_not_allowed");
        return false;
    }
    if (account_user_status(stream->user) == ACCOUNT_USER_SUSPENDED) {
        relay_respond_error(stream, 402, "insufficient_quota",
                            "Your wallet is suspended. Contact your administrator to resume it.", NULL,
                            "wallet_suspended");
        return false;
    }
    uint64_t prompt_bound = stream->exchange->body_length;
    uint64_t max_tokens = 0;
    stream->max_tokens_member[0] = '\0';
    if (request != NULL) {
        if (request->max_tokens.present && request->max_tokens.type == JSON_TYPE_NUMBER) {
            max_tokens = request->max_tokens_value;
        } else if (request->max_completion_tokens.present && request->max_completion_tokens.type == JSON_TYPE_NUMBER) {
            max_tokens = request->max_completion_tokens_value;
        } else {
            /* The hold is prompt + completions x max_tokens of output, so
             * what the wallet affords for all of them is shared out. */
            int64_t available = atomic_load_explicit(&stream->user->available_micros, memory_order_relaxed);
            uint64_t output_tokens = ledger_affordable_max_tokens(model, available, prompt_bound,
                                                                  (uint64_t)model->max_output_tokens * completions);
            max_tokens = output_tokens / completions;
            if (max_tokens == 0) {
                relay_respond_error(stream, 402, "insufficient_quota",
                                    "You exceeded your current quota, please top up your balance.", NULL,
                                    "insufficient_quota");
                return false;
            }
            /* A null limit is the same as none: its value is replaced (the
             * client keeps its choice of field); else a member is added. */
            const json_member_t *null_limit = request->max_tokens.present ? &request->max_tokens
                                              : request->max_completion_tokens.present ? &request->max_completion_tokens
                                                                                       : NULL;
            if (null_limit != NULL) {
                snprintf(stream->max_tokens_member, sizeof stream->max_tokens_member, "%llu",
                         (unsigned long long)max_tokens);
                stream->max_tokens_offset = null_limit->value.offset;
                stream->max_tokens_removed = null_limit->value.length;
            } else {
                snprintf(stream->max_tokens_member, sizeof stream->max_tokens_member, "\"max_tokens\":%llu,",
                         (unsigned long long)max_tokens);
                stream->max_tokens_offset = request->members_offset;
                stream->max_tokens_removed = 0;
            }
        }
    }
    /* n > 1 asks for several completions of the same prompt. */
    int64_t hold = ledger_hold(model, prompt_bound, max_tokens * completions);
    ledger_result_t result = ledger_reserve(stream->user, stream->key, hold);
    if (result == LEDGER_SUSPENDED) {
        relay_respond_error(stream, 402, "insufficient_quota",
                            "Your wallet is suspended. Contact your administrator to resume it.", NULL,
                            "wallet_suspended");
        return false;
    }
    if (result == LEDGER_KEY_CAP_REACHED) {
        relay_respond_error(stream, 402, "insufficient_quota", "This API key has reached its spend cap.", NULL,
                            "key_spend_cap_reached");
        return false;
    }
    if (result != LEDGER_OK) {
        relay_respond_error(stream, 402, "insufficient_quota",
                            "You exceeded your current quota, please top up your balance.", NULL,
                            "insufficient_quota");
        return false;
    }
    stream->hold_micros = hold;
    stream->held = true;
    /* The hold on disk lets a restart after a crash resolve it; nobody
     * waits for it. */
    store_message_t *message = &stream->worker->message;
    memset(message, 0, offsetof(store_message_t, body) + sizeof message->body.hold_open);
    message->kind = STORE_MESSAGE_HOLD_OPEN;
    store_hold_record_t *hold_record = &message->body.hold_open;
    rw_copy_text(hold_record->request_id, sizeof hold_record->request_id, stream->exchange->request_id);
    hold_record->user_id = stream->user->id;
    hold_record->key_id = stream->key->id;
    hold_record->amount_micros = hold;
    hold_record->created_ms = billing_wall_ms();
    rw_copy_text(hold_record->model, sizeof hold_record->model, model->name);
    billing_submit(stream->worker, message);
    return true;
}

/* Settles the stream's hold: the cost of what the upstream reported (or an
 * estimate flagged as such when it reported nothing), never more than the
 * hold; nothing for a request that failed before any output or that the
 * upstream refused. The usage record goes to the store; with wait_for_ack
 * the stream enters RELAY_PHASE_SETTLING and continues in
 * billing_on_settled once the record is written. Returns true when the
 * caller must wait; false when there is nothing to wait for (no hold, or
 * no wait asked). */
bool relay_bill(relay_stream_t *stream, const char *status, bool wait_for_ack) {
    if (!stream->held) return false;
    stream->held = false;
    relay_worker_t *worker = stream->worker;
    const config_model_t *model = stream->route->model;
    store_message_t *message = &worker->message;
    memset(message, 0, offsetof(store_message_t, body) + sizeof message->body.settle);
    message->kind = STORE_MESSAGE_SETTLE;
    message->token = billing_token(stream);
    store_usage_record_t *record = &message->body.settle.usage;

    usage_counts_t usage = {0, 0, 0, 0, 0};
    bool refused = stream->response.status >= 400 || stream->response.status == 0;
    bool nothing_delivered = stream->forwarded_bytes == 0 && !stream->usage_seen && !stream->upstream_done;
    bool estimated = false;
    if (refused) {
        /* The upstream refused or never answered: nothing to charge. */
    } else if (stream->usage_seen) {
        usage = stream->usage;
    } else if (!nothing_delivered) {
        /* No usage from the upstream: prompt from the request's size, the
         * completion from what was delivered (one token per streamed
         * content event, else 4 bytes a token). */
        uint64_t completion_bytes = stream->mode == RELAY_MODE_SSE ? stream->content_events * LEDGER_ESTIMATE_BYTES_PER_TOKEN
                                                                   : stream->forwarded_bytes;
        ledger_estimate_usage(stream->exchange->body_length, completion_bytes, &usage);
        estimated = true;
    }
    int64_t cost = 0;
    usage_counts_t billed = usage;
    if (!refused && (stream->usage_seen || estimated)) cost = ledger_cost(model, &usage, &billed);
    int64_t charged = 0;
    bool capped = false;
    ledger_settle(stream->user, stream->key, stream->hold_micros, cost, &charged, &capped);

    rw_copy_text(record->request_id, sizeof record->request_id, stream->exchange->request_id);
    record->key_id = stream->key->id;
    record->user_id = stream->user->id;
    rw_copy_text(record->model, sizeof record->model, model->name);
    rw_copy_text(record->upstream, sizeof record->upstream, stream->pool->upstream->name);
    record->prompt_tokens = billed.prompt_tokens > 0 ? (uint64_t)billed.prompt_tokens : 0;
    record->completion_tokens = billed.completion_tokens > 0 ? (uint64_t)billed.completion_tokens : 0;
    record->cached_tokens = billed.cached_tokens > 0 ? (uint64_t)billed.cached_tokens : 0;
    record->reasoning_tokens = usage.reasoning_tokens > 0 ? (uint64_t)usage.reasoning_tokens : 0;
    record->cost_micros = charged;
    if (refused && stream->response.status >= 400 && strcmp(status, "completed") == 0) {
        snprintf(record->status, sizeof record->status, "upstream_%u", (unsigned)stream->response.status);
    } else {
        rw_copy_text(record->status, sizeof record->status, status);
    }
    record->latency_ms = loop_now_ms(&worker->loop) - stream->started_ms;
    record->estimated = estimated;
    record->capped = capped;
    message->body.settle.hold_micros = stream->hold_micros;
    if (wait_for_ack) message->flags |= STORE_MESSAGE_FLAG_ACK;

    billing_submit(worker, message);
    if (!wait_for_ack) return false;
    stream->phase = RELAY_PHASE_SETTLING;
    return true;
}

/* Called on every tick: messages that found the store channel full. */
void relay_retry_settlements(relay_worker_t *worker) {
    while (worker->store_retry_count > 0) {
        const store_message_t *message = &worker->store_retries[worker->store_retry_first];
        if (!store_thread_submit(worker->shared->store_thread, worker->index, message, &worker->loop.ring)) return;
        worker->store_retry_first = (worker->store_retry_first + 1) % RELAY_STORE_RETRIES_MAX;
        worker->store_retry_count--;
    }
}

/* The store wrote (or failed to write) a settlement the stream waits for. */
static void billing_on_settled(relay_stream_t *stream, const store_ack_t *ack) {
    if (ack->status != STORE_OK) {
        fprintf(stderr, "ringway: the store could not write the usage record of %s (error %d); the response "
                        "is sent anyway\n", stream->exchange->request_id, ack->status);
    }
    if (stream->client_gone) {
        stream->phase = RELAY_PHASE_DONE;
        server_exchange_release(stream->exchange);
        return;
    }
    stream->phase = RELAY_PHASE_RELAYING;
    relay_forward(stream);
}

/* The mailbox: the store thread's acks and the control thread's replies
 * for this worker. Each names the stream slot (and, for acks, the
 * generation, so an ack for an earlier request of the slot is dropped). */
void relay_on_mailbox(loop_operation_t *operation, int32_t result, uint32_t flags) {
    relay_worker_t *worker = operation->owner;
    store_ack_t ack;
    while (store_thread_reply_pop(worker->shared->store_thread, worker->index, &ack)) {
        uint32_t slot = (uint32_t)(ack.token & 0xffffffffu);
        uint32_t generation = (uint32_t)(ack.token >> 32);
        if (ack.kind != STORE_MESSAGE_SETTLE || slot >= worker->config->streams_per_thread) continue;
        relay_stream_t *stream = &worker->streams[slot];
        if (stream->generation != generation || stream->phase != RELAY_PHASE_SETTLING) continue;
        billing_on_settled(stream, &ack);
    }
    control_reply_t reply;
    while (control_reply_pop(worker->shared->control, worker->index, &reply)) {
        if (reply.slot >= worker->config->streams_per_thread) continue;
        relay_stream_t *stream = &worker->streams[reply.slot];
        if (stream->phase != RELAY_PHASE_WAITING_CONTROL) continue;
        relay_accounts_on_reply(stream, &reply);
    }
}
