/* The self-service account endpoints, served on the client
 * listener under /, /v1 and /api/v1:
 *
 *   POST /auth/register, POST /auth/login           -> control thread (Argon2id)
 *   GET /api-keys, POST /api-keys?name=, DELETE /api-keys/{id}   (JWT) -> control thread
 *   GET /billing/balance    (API key or JWT)        -> answered here, from memory
 *   GET /billing/usage?limit=N (API key or JWT)     -> control thread (store read)
 *
 * Work that may block (password hashing, the store) never runs on this
 * thread: it becomes a job for the control thread, whose JSON answer is
 * written into the exchange's request buffer after the request itself and
 * sent from there. */
#include "relay-internal.h"

#include "ringway/auth.h"
#include "ringway/ledger.h"

#include <stdio.h>
#include <string.h>

enum {
    ACCOUNTS_USAGE_LIMIT_DEFAULT = 20,
    ACCOUNTS_USAGE_LIMIT_MAX = 1000,
};

static bool accounts_starts_with(const uint8_t *path, size_t length, const char *prefix) {
    size_t prefix_length = strlen(prefix);
    return length >= prefix_length && memcmp(path, prefix, prefix_length) == 0;
}

/* Finds `name=value` in the query; returns the raw (still URL-encoded)
 * value, or NULL. */
static const uint8_t *accounts_query_value(const server_exchange_t *exchange, const char *name, size_t *length) {
    const http_request_t *request = &exchange->request;
    if (!request->has_query) return NULL;
    const uint8_t *query = exchange->buffer + request->query.offset;
    size_t query_length = request->query.length;
    size_t name_length = strlen(name);
    size_t position = 0;
    while (position < query_length) {
        size_t end = position;
        while (end < query_length && query[end] != '&') end++;
        if (end - position > name_length && memcmp(query + position, name, name_length) == 0 &&
            query[position + name_length] == '=') {
            *length = end - position - name_length - 1;
            return query + position + name_length + 1;
        }
        position = end + 1;
    }
    return NULL;
}

/* The user a session token (JWT) names. Returns NULL after answering 401. */
static account_user_t *accounts_user_from_jwt(relay_stream_t *stream, const auth_token_t *token) {
    const relay_shared_t *shared = stream->worker->shared;
    jwt_claims_t claims;
    jwt_result_t result = jwt_verify(shared->jwt_secret, shared->jwt_secret_length, token->bytes, token->length,
                                     text_wall_ms() / 1000, &claims);
    if (result != JWT_OK) {
        relay_reply_error(stream, 401, "invalid_request_error", jwt_result_message(result), NULL, "invalid_token");
        return NULL;
    }
    account_user_t *user = account_user_get(shared->tables, claims.user_id);
    if (user == NULL) {
        relay_reply_error(stream, 401, "invalid_request_error", "The account of this session token does not exist.",
                            NULL, "invalid_token");
        return NULL;
    }
    return user;
}

/* Who is asking: a session token (JWT), or with allow_key an API key.
 * Returns the user, or NULL after answering 401. */
static account_user_t *accounts_authenticate(relay_stream_t *stream, bool allow_key) {
    server_exchange_t *exchange = stream->exchange;
    const http_request_t *request = &exchange->request;
    const uint8_t *value = request->has_authorization ? exchange->buffer + request->authorization.offset : NULL;
    size_t length = request->has_authorization ? request->authorization.length : 0;
    auth_token_t token;
    auth_bearer_kind_t kind = auth_bearer_parse(value, length, &token);
    if (kind == AUTH_BEARER_API_KEY && allow_key) {
        return relay_admit_key(stream) ? stream->user : NULL;
    }
    if (kind == AUTH_BEARER_OTHER) return accounts_user_from_jwt(stream, &token);
    if (kind == AUTH_BEARER_API_KEY) {
        relay_reply_error(stream, 401, "invalid_request_error",
                            "This endpoint takes the session token from POST /auth/login, not an API key.", NULL,
                            "invalid_token");
        return NULL;
    }
    relay_reply_error(stream, 401, "invalid_request_error",
                        kind == AUTH_BEARER_MISSING
                            ? "You didn't provide a token. Send 'Authorization: Bearer <token>'."
                            : "The Authorization header is malformed. Send 'Authorization: Bearer <token>'.",
                        NULL, "invalid_token");
    return NULL;
}

/* Hands a job to the control thread; the stream waits for the reply. */
static void accounts_submit(relay_stream_t *stream, control_job_t *job) {
    server_exchange_t *exchange = stream->exchange;
    relay_worker_t *worker = stream->worker;
    job->worker_index = worker->index;
    job->slot = server_exchange_index(exchange);
    job->body = server_body(exchange);
    job->body_length = (uint32_t)exchange->body_length;
    /* The answer goes into this stream's buffer (unused by account
     * requests), or after the request in the exchange's buffer when that
     * has more room. */
    uint8_t *reply = stream->buffer;
    size_t capacity = stream->capacity;
    size_t exchange_room = exchange->buffer_capacity - exchange->buffer_length;
    if (exchange_room > capacity) {
        reply = exchange->buffer + exchange->buffer_length;
        capacity = exchange_room;
    }
    job->reply = reply;
    job->reply_capacity = (uint32_t)RW_MIN(capacity, (size_t)UINT32_MAX);
    stream->reply = reply;
    stream->reply_capacity = job->reply_capacity;
    if (!control_submit(worker->shared->control, worker->index, job, &worker->loop.ring)) {
        relay_reply_error_retry_after(stream, 503, "server_error", "the account service is busy, retry shortly",
                                      "server_busy", RELAY_BUSY_RETRY_AFTER_S);
        return;
    }
    stream->phase = RELAY_PHASE_WAITING_CONTROL;
}

static void accounts_balance(relay_stream_t *stream, account_user_t *user) {
    int64_t available = atomic_load_explicit(&user->available_micros, memory_order_relaxed);
    char display[TEXT_MONEY_BYTES];
    text_format_money(available < 0 ? 0 : available, display);
    server_exchange_t *exchange = stream->exchange;
    uint8_t *body = stream->buffer;
    size_t capacity = stream->capacity;
    int length = snprintf((char *)body, capacity,
                          "{\"balance\":%lld,\"balance_display\":\"%s\",\"email\":\"%s\",\"user_id\":%llu,"
                          "\"status\":\"%s\"}",
                          (long long)available, display, user->email, (unsigned long long)user->id,
                          account_user_status(user) == ACCOUNT_USER_SUSPENDED ? "suspended" : "active");
    RW_ASSERT(length > 0 && (size_t)length < capacity);
    stream->phase = RELAY_PHASE_DONE;
    server_respond(exchange, 200, "application/json", body, (size_t)length, NULL);
}

/* Serves the account endpoints; false when the path is none of them.
 * `path` is without its /v1 or /api/v1 prefix (dispatch.c strips it). */
bool relay_accounts_route(relay_stream_t *stream, const uint8_t *path, size_t path_length) {
    server_exchange_t *exchange = stream->exchange;
    http_method_t method = exchange->request.method;
    control_job_t job;
    memset(&job, 0, sizeof job);
    if (rw_bytes_equal_text(path, path_length, "/auth/register") ||
        rw_bytes_equal_text(path, path_length, "/auth/login")) {
        if (method != HTTP_METHOD_POST) {
            relay_reply_error(stream, 405, "invalid_request_error", "Use POST.", NULL, "method_not_allowed");
            return true;
        }
        job.kind = path_length == strlen("/auth/login") ? CONTROL_JOB_LOGIN : CONTROL_JOB_REGISTER;
        accounts_submit(stream, &job);
        return true;
    }
    if (rw_bytes_equal_text(path, path_length, "/billing/balance") ||
        rw_bytes_equal_text(path, path_length, "/billing/usage")) {
        if (method != HTTP_METHOD_GET) {
            relay_reply_error(stream, 405, "invalid_request_error", "Use GET.", NULL, "method_not_allowed");
            return true;
        }
        account_user_t *user = accounts_authenticate(stream, true);
        if (user == NULL) return true;
        if (path_length == strlen("/billing/balance")) {
            accounts_balance(stream, user);
            return true;
        }
        size_t limit_length = 0;
        const uint8_t *limit_text = accounts_query_value(exchange, "limit", &limit_length);
        uint32_t limit = ACCOUNTS_USAGE_LIMIT_DEFAULT;
        if (limit_text != NULL) {
            uint64_t value = 0;
            bool valid = limit_length > 0 && limit_length <= 7;
            for (size_t index = 0; valid && index < limit_length; index++) {
                valid = limit_text[index] >= '0' && limit_text[index] <= '9';
                value = value * 10 + (uint64_t)(limit_text[index] - '0');
            }
            if (!valid || value == 0 || value > ACCOUNTS_USAGE_LIMIT_MAX) {
                relay_reply_error(stream, 400, "invalid_request_error", "limit must be a whole number from 1 to 1000.",
                                    "limit", NULL);
                return true;
            }
            limit = (uint32_t)value;
        }
        job.kind = CONTROL_JOB_USAGE_LIST;
        job.user_id = user->id;
        job.limit = limit;
        accounts_submit(stream, &job);
        return true;
    }
    if (rw_bytes_equal_text(path, path_length, "/api-keys") || accounts_starts_with(path, path_length, "/api-keys/")) {
        bool collection = path_length == strlen("/api-keys");
        if ((collection && method != HTTP_METHOD_GET && method != HTTP_METHOD_POST) ||
            (!collection && method != HTTP_METHOD_DELETE)) {
            relay_reply_error(stream, 405, "invalid_request_error",
                                collection ? "Use GET or POST on /api-keys." : "Use DELETE on /api-keys/{id}.", NULL,
                                "method_not_allowed");
            return true;
        }
        account_user_t *user = accounts_authenticate(stream, false);
        if (user == NULL) return true;
        job.user_id = user->id;
        if (!collection) {
            job.kind = CONTROL_JOB_KEY_DELETE;
            job.argument = path + strlen("/api-keys/");
            job.argument_length = (uint32_t)(path_length - strlen("/api-keys/"));
        } else if (method == HTTP_METHOD_GET) {
            job.kind = CONTROL_JOB_KEYS_LIST;
        } else {
            job.kind = CONTROL_JOB_KEY_CREATE;
            size_t name_length = 0;
            const uint8_t *name = accounts_query_value(exchange, "name", &name_length);
            job.argument = name;
            job.argument_length = (uint32_t)name_length;
        }
        accounts_submit(stream, &job);
        return true;
    }
    return false;
}

/* The control thread answered a job of this stream. */
void relay_accounts_on_reply(relay_stream_t *stream, const control_reply_t *reply) {
    server_exchange_t *exchange = stream->exchange;
    stream->phase = RELAY_PHASE_DONE;
    if (stream->client_gone) {
        server_exchange_release(exchange);
        return;
    }
    RW_ASSERT(reply->length <= stream->reply_capacity);
    server_respond(exchange, reply->status, "application/json", stream->reply, reply->length, NULL);
}
