/* Admission, the second stage: may this request go upstream, and who pays.
 *
 *   1. the API key (401 with the reason)
 *   2. the body, read for what routing and billing need (400), and the
 *      model (404)
 *   3. the key's model allowlist (403)
 *   4. the store's backpressure: when the store thread has fallen behind,
 *      the request waits in this worker's bounded FIFO (or is answered 503
 *      server_busy with Retry-After past its bounds)
 *   5. the rate limits (limits.c, 429): after the wait, so a waiting
 *      request holds no limit, and before the hold, so a request over its
 *      limit never touches the wallet
 *   6. the hold (402): ledger_reserve takes the most the request can cost
 *      out of the wallet's available balance in one compare-and-swap, so no
 *      number of concurrent requests can overdraw it; a refusal gives the
 *      limits back
 *
 * then stream.c. With [billing] mode = off only 1-3 and 5 run. A request that
 * waits in step 4 runs the whole admission again when it resumes: the key
 * may have been disabled meanwhile, and nothing before step 5 has effects. */
#include "relay-internal.h"

#include "ringway/auth.h"
#include "ringway/ledger.h"

#include <stdio.h>
#include <string.h>

/* Authenticates the request's API key (Authorization: Bearer sk-...).
 * Returns true with stream->key and stream->user set; false after it
 * answered 401 with the reason (missing, malformed, unknown, disabled,
 * expired). */
bool relay_admit_key(relay_stream_t *stream) {
    server_exchange_t *exchange = stream->exchange;
    const http_request_t *request = &exchange->request;
    const uint8_t *value = request->has_authorization ? exchange->buffer + request->authorization.offset : NULL;
    size_t length = request->has_authorization ? request->authorization.length : 0;
    auth_error_t error;
    account_key_t *key = NULL;
    account_user_t *user = NULL;
    auth_result_t result = auth_key_authenticate(stream->worker->shared->tables, value, length, text_wall_ms(), &key,
                                                 &user, &error);
    if (result != AUTH_OK) {
        relay_reply_error(stream, error.http_status, error.type, error.message, NULL, error.code);
        return false;
    }
    stream->key = key;
    stream->user = user;
    return true;
}

/* ---- reading the body ---------------------------------------------------- */

static void relay_admit_model_not_found(relay_stream_t *stream, const uint8_t *body, json_span_t value) {
    char message[300];
    int name_length = (int)RW_MIN(value.length >= 2 ? value.length - 2 : 0, 160u);
    snprintf(message, sizeof message, "The model `%.*s` does not exist or you do not have access to it.", name_length,
             (const char *)body + value.offset + 1);
    relay_reply_error(stream, 404, "invalid_request_error", message, "model", "model_not_found");
}

/* Finds the route of the model the body names; false after answering 404. */
static bool relay_admit_route(relay_stream_t *stream, const uint8_t *body, json_span_t model) {
    const router_model_t *routed = router_find(stream->worker->shared->router, body + model.offset, model.length);
    if (routed == NULL) {
        relay_admit_model_not_found(stream, body, model);
        return false;
    }
    stream->model = routed;
    stream->facts.model = model;
    return true;
}

/* A model with affinity = header: the request's value of that header, when
 * it has one, keeps it on one route (route.c). */
static void relay_admit_header_affinity(relay_stream_t *stream) {
    const config_model_t *model = stream->model->config;
    if (model->affinity != CONFIG_AFFINITY_HEADER) return;
    server_exchange_t *exchange = stream->exchange;
    const http_header_t *header = http_request_find_header(&exchange->request, exchange->buffer, model->affinity_header);
    if (header == NULL || header->value.length == 0) return;
    relay_route_set_affinity(stream, exchange->buffer + header->value.offset, header->value.length);
}

/* POST /v1/chat/completions: validates the body into `request` and the
 * stream's facts. False after answering 400 or 404. */
static bool relay_admit_read_chat(relay_stream_t *stream, json_chat_request_t *request) {
    server_exchange_t *exchange = stream->exchange;
    const uint8_t *body = server_body(exchange);
    json_error_t error;
    if (json_scan_chat_request(body, exchange->body_length, request, &error) != 0) {
        relay_reply_error(stream, 400, "invalid_request_error", error.message, error.param, NULL);
        return false;
    }
    if (!relay_admit_route(stream, body, request->model.value)) return false;
    const config_model_t *model = stream->model->config;
    if (model->affinity == CONFIG_AFFINITY_USER && request->user.type == JSON_TYPE_STRING &&
        request->user.value.length > 2) {
        relay_route_set_affinity(stream, body + request->user.value.offset, request->user.value.length);
    }
    relay_admit_header_affinity(stream);
    relay_request_facts_t *facts = &stream->facts;
    stream->client_streaming = request->stream_value;
    stream->client_wants_usage = request->include_usage.present && request->include_usage_value;
    facts->completions =
        request->n.present && request->n.type == JSON_TYPE_NUMBER && request->n_value > 1 ? request->n_value : 1;
    facts->wants_usage_inserted = stream->client_streaming && !stream->client_wants_usage;
    facts->members_offset = request->members_offset;
    facts->stream_options_present = request->stream_options.present;
    facts->stream_options_is_object = request->stream_options.type == JSON_TYPE_OBJECT;
    facts->stream_options = request->stream_options.value;
    facts->include_usage_present = request->include_usage.present;
    facts->include_usage = request->include_usage.value;
    return true;
}

/* POST /v1/embeddings: a JSON object with a model and an input (a string
 * or an array). False after answering 400 or 404. */
static bool relay_admit_read_embeddings(relay_stream_t *stream) {
    server_exchange_t *exchange = stream->exchange;
    const uint8_t *body = server_body(exchange);
    json_error_t error;
    if (json_validate(body, exchange->body_length, &error) != 0) {
        relay_reply_error(stream, 400, "invalid_request_error", error.message, error.param, NULL);
        return false;
    }
    json_span_t model;
    json_type_t model_type = JSON_TYPE_NONE;
    json_span_t input;
    json_type_t input_type = JSON_TYPE_NONE;
    if (json_object_find(body, exchange->body_length, "model", &model, &model_type) != 0 ||
        model_type != JSON_TYPE_STRING || model.length <= 2) {
        relay_reply_error(stream, 400, "invalid_request_error", "you must provide a model parameter", "model", NULL);
        return false;
    }
    if (json_object_find(body, exchange->body_length, "input", &input, &input_type) != 0 ||
        (input_type != JSON_TYPE_STRING && input_type != JSON_TYPE_ARRAY)) {
        relay_reply_error(stream, 400, "invalid_request_error", "'input' must be a string or an array", "input", NULL);
        return false;
    }
    if (!relay_admit_route(stream, body, model)) return false;
    json_span_t user;
    json_type_t user_type = JSON_TYPE_NONE;
    if (stream->model->config->affinity == CONFIG_AFFINITY_USER &&
        json_object_find(body, exchange->body_length, "user", &user, &user_type) == 0 &&
        user_type == JSON_TYPE_STRING && user.length > 2) {
        relay_route_set_affinity(stream, body + user.offset, user.length);
    }
    relay_admit_header_affinity(stream);
    stream->facts.completions = 1;
    return true;
}

/* ---- waiting for the store ----------------------------------------------- */

static void relay_admit_unlink(relay_stream_t *stream) {
    relay_worker_t *worker = stream->worker;
    RW_ASSERT(stream->phase == RELAY_PHASE_WAITING_STORE && worker->wait_count > 0);
    if (stream->wait_prev != NULL) stream->wait_prev->wait_next = stream->wait_next;
    else worker->wait_first = stream->wait_next;
    if (stream->wait_next != NULL) stream->wait_next->wait_prev = stream->wait_prev;
    else worker->wait_last = stream->wait_prev;
    stream->wait_next = NULL;
    stream->wait_prev = NULL;
    worker->wait_count--;
    loop_timer_stop(&stream->timer);
}

static void relay_admit_refuse_busy(relay_stream_t *stream) {
    relay_reply_error_retry_after(stream, 503, "server_error",
                                  "The relay is at capacity for billed requests; retry shortly.", "server_busy",
                                  RELAY_BUSY_RETRY_AFTER_S);
}

/* Parks the stream at the end of the worker's FIFO, or answers 503 when it
 * is full. */
static void relay_admit_wait(relay_stream_t *stream) {
    relay_worker_t *worker = stream->worker;
    /* Waiting and settling streams keep their exchanges too: together with
     * the held ones they stay below held_max, so the kept slots stay free. */
    if (worker->wait_count >= worker->wait_max ||
        worker->held_count + worker->settling_count + worker->wait_count >= worker->held_max) {
        relay_admit_refuse_busy(stream);
        return;
    }
    stream->phase = RELAY_PHASE_WAITING_STORE;
    stream->wait_prev = worker->wait_last;
    stream->wait_next = NULL;
    if (worker->wait_last != NULL) worker->wait_last->wait_next = stream;
    else worker->wait_first = stream;
    worker->wait_last = stream;
    worker->wait_count++;
    loop_timer_start(&worker->loop, &worker->store_wait_timers, &stream->timer);
}

/* A waiting stream's client went away: it leaves the FIFO, the exchange
 * goes back. Nothing was held. */
void relay_admit_forget(relay_stream_t *stream) {
    relay_admit_unlink(stream);
    stream->phase = RELAY_PHASE_DONE;
    server_exchange_release(stream->exchange);
}

/* A waiting stream's store_wait_ms ran out. */
void relay_admit_on_wait_timeout(relay_stream_t *stream) {
    relay_admit_unlink(stream);
    relay_admit_refuse_busy(stream);
}

/* ---- the hold ------------------------------------------------------------ */

static void relay_admit_refuse_wallet(relay_stream_t *stream, ledger_result_t result) {
    /* The request is not run: its limits go back before the answer, whose
     * rate-limit headers then do not count it. */
    relay_limits_cancel(stream);
    if (result == LEDGER_SUSPENDED) {
        relay_reply_error(stream, 402, "insufficient_quota",
                          "Your wallet is suspended. Contact your administrator to resume it.", NULL,
                          "wallet_suspended");
    } else if (result == LEDGER_KEY_CAP_REACHED) {
        relay_reply_error(stream, 402, "insufficient_quota", "This API key has reached its spend cap.", NULL,
                          "key_spend_cap_reached");
    } else {
        relay_reply_error(stream, 402, "insufficient_quota",
                          "You exceeded your current quota, please top up your balance.", NULL,
                          "insufficient_quota");
    }
}

/* The output tokens the hold covers per completion: the client's limit, or
 * when it set none the most the wallet can pay (capped by the model's
 * limit), which plan.c splices into the body (a null limit's value is
 * replaced, keeping the client's choice of field; else a member is added).
 * Embeddings (`request` NULL) have none. False when the wallet cannot pay
 * for a single output token. */
static bool relay_admit_output_tokens(relay_stream_t *stream, const json_chat_request_t *request, uint64_t *tokens) {
    *tokens = 0;
    if (request == NULL) return true;
    if (request->max_tokens.present && request->max_tokens.type == JSON_TYPE_NUMBER) {
        *tokens = request->max_tokens_value;
        return true;
    }
    if (request->max_completion_tokens.present && request->max_completion_tokens.type == JSON_TYPE_NUMBER) {
        *tokens = request->max_completion_tokens_value;
        return true;
    }
    relay_request_facts_t *facts = &stream->facts;
    const config_model_t *model = stream->model->config;
    /* The hold is prompt + completions x max_tokens of output, so what the
     * wallet affords for all of them is shared out. */
    int64_t available = atomic_load_explicit(&stream->user->available_micros, memory_order_relaxed);
    uint64_t affordable = ledger_affordable_max_tokens(model, available, stream->exchange->body_length,
                                                       (uint64_t)model->max_output_tokens * facts->completions);
    uint64_t max_tokens = affordable / facts->completions;
    if (max_tokens == 0) return false;
    const json_member_t *null_limit = request->max_tokens.present              ? &request->max_tokens
                                      : request->max_completion_tokens.present ? &request->max_completion_tokens
                                                                               : NULL;
    /* Built without printf: this runs for every billed request. */
    static const char member[] = "\"max_tokens\":";
    char digits[TEXT_DECIMAL_BYTES];
    size_t digits_length = text_format_u64(max_tokens, digits);
    size_t length = 0;
    if (null_limit != NULL) {
        facts->max_tokens_offset = null_limit->value.offset;
        facts->max_tokens_removed = null_limit->value.length;
    } else {
        memcpy(facts->max_tokens_text, member, sizeof member - 1);
        length = sizeof member - 1;
        facts->max_tokens_offset = request->members_offset;
        facts->max_tokens_removed = 0;
    }
    RW_ASSERT(length + digits_length + 1 < sizeof facts->max_tokens_text);
    memcpy(facts->max_tokens_text + length, digits, digits_length);
    length += digits_length;
    if (null_limit == NULL) facts->max_tokens_text[length++] = ',';
    facts->max_tokens_text[length] = '\0';
    facts->max_tokens_length = (uint32_t)length;
    *tokens = max_tokens;
    return true;
}

/* Takes the hold; false after answering 402. */
static bool relay_admit_hold(relay_stream_t *stream, const json_chat_request_t *request) {
    if (account_user_status(stream->user) == ACCOUNT_USER_SUSPENDED) {
        relay_admit_refuse_wallet(stream, LEDGER_SUSPENDED);
        return false;
    }
    uint64_t output_tokens = 0;
    if (!relay_admit_output_tokens(stream, request, &output_tokens)) {
        relay_admit_refuse_wallet(stream, LEDGER_INSUFFICIENT);
        return false;
    }
    uint64_t held_output = 0;
    if (__builtin_mul_overflow(output_tokens, (uint64_t)stream->facts.completions, &held_output)) {
        held_output = UINT64_MAX; /* the ledger saturates: no wallet covers it */
    }
    int64_t hold = ledger_hold(stream->model->config, stream->exchange->body_length, held_output);
    RW_ASSERT(hold >= 0);
    ledger_result_t result = ledger_reserve(stream->user, stream->key, hold);
    if (result != LEDGER_OK) {
        relay_admit_refuse_wallet(stream, result);
        return false;
    }
    stream->hold_micros = hold;
    stream->held = true;
    relay_settle_hold_opened(stream);
    return true;
}

/* ---- the stage ------------------------------------------------------------ */

static void relay_admit_run(relay_stream_t *stream, bool resuming) {
    relay_worker_t *worker = stream->worker;
    if (!relay_admit_key(stream)) return;
    json_chat_request_t chat;
    const json_chat_request_t *request = NULL;
    memset(&stream->facts, 0, sizeof stream->facts);
    if (stream->endpoint == RELAY_ENDPOINT_CHAT) {
        if (!relay_admit_read_chat(stream, &chat)) return;
        request = &chat;
    } else {
        RW_ASSERT(stream->endpoint == RELAY_ENDPOINT_EMBEDDINGS);
        if (!relay_admit_read_embeddings(stream)) return;
    }
    const config_model_t *model = stream->model->config;
    uint32_t model_index = (uint32_t)(model - worker->config->models);
    if (!account_key_allows_model(stream->key, model_index)) {
        char message[300];
        snprintf(message, sizeof message, "This API key is not allowed to use the model `%s`.", model->name);
        relay_reply_error(stream, 403, "permission_error", message, "model", "model_not_allowed");
        return;
    }
    bool billing = worker->config->billing_mode != CONFIG_BILLING_OFF;
    if (billing && (!relay_settle_room(worker) || (!resuming && worker->wait_first != NULL))) {
        relay_admit_wait(stream);
        return;
    }
    relay_limit_refusal_t refusal;
    if (!relay_limits_admit(stream, request, &refusal)) {
        relay_reply_rate_limited(stream, &refusal);
        return;
    }
    if (billing && !relay_admit_hold(stream, request)) return; /* its limits went back with the 402 */
    relay_stream_start(stream);
}

/* Admits a request of a relayed endpoint and, when admitted, hands it to
 * stream.c; otherwise it answered (or the request waits for the store). */
void relay_admit(relay_stream_t *stream, relay_endpoint_t endpoint) {
    stream->endpoint = endpoint;
    relay_admit_run(stream, false);
}

/* Called when the store may have caught up (a tick, an ack): admits
 * waiting requests in order while there is room. */
void relay_admit_resume(relay_worker_t *worker) {
    while (worker->wait_first != NULL && relay_settle_room(worker)) {
        relay_stream_t *stream = worker->wait_first;
        relay_admit_unlink(stream);
        stream->phase = RELAY_PHASE_IDLE;
        relay_admit_run(stream, true);
    }
}
