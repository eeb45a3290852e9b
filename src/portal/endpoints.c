/* The portal's worker side, on a relay worker's thread (see portal.h for
 * the endpoints). It authenticates from memory (API keys through auth,
 * session tokens with the JWT secret), answers the balance itself, and
 * turns everything that may block into a job for the control thread, whose
 * JSON answer is written into the stream's buffer or after the request in
 * the exchange's buffer, and sent from there. It never calls the relay: the
 * worker hands it a portal_request_t and keeps the portal_wait_t. */
#include "ringway/account.h"
#include "ringway/address.h"
#include "ringway/auth.h"
#include "ringway/portal.h"
#include "ringway/server.h"
#include "ringway/text.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static bool portal_starts_with(const uint8_t *path, size_t length, const char *prefix) {
    size_t prefix_length = strlen(prefix);
    return length >= prefix_length && memcmp(path, prefix, prefix_length) == 0;
}

/* Finds `name=value` in the query; returns the raw (still URL-encoded)
 * value, or NULL. */
static const uint8_t *portal_query_value(const server_exchange_t *exchange, const char *name, size_t *length) {
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

/* The address the account guards count a registration or login against:
 * the socket peer, or the hop of X-Forwarded-For a trusted proxy names. */
static address_t portal_client_address(const portal_request_t *request) {
    const server_exchange_t *exchange = request->exchange;
    const http_request_t *http = &exchange->request;
    const uint8_t *forwarded = http->has_forwarded_for ? exchange->buffer + http->forwarded_for.offset : NULL;
    size_t forwarded_length = http->has_forwarded_for ? http->forwarded_for.length : 0;
    return address_client(server_exchange_peer(exchange), forwarded, forwarded_length, request->trusted_proxies,
                          request->trusted_proxy_count);
}

/* Answers an OpenAI-shaped error; the request is done. */
static portal_route_result_t portal_refuse(const portal_request_t *request, uint16_t status, const char *type,
                                           const char *message, const char *param, const char *code) {
    server_respond_error(request->exchange, status, type, message, param, code);
    return PORTAL_ROUTE_ANSWERED;
}

/* The user a session token (JWT) names. Returns NULL after answering 401. */
static account_user_t *portal_user_from_jwt(const portal_request_t *request, const auth_token_t *token) {
    jwt_claims_t claims;
    jwt_result_t result = jwt_verify(request->jwt_secret, request->jwt_secret_length, token->bytes, token->length,
                                     text_wall_ms() / 1000, &claims);
    if (result != JWT_OK) {
        portal_refuse(request, 401, "invalid_request_error", jwt_result_message(result), NULL, "invalid_token");
        return NULL;
    }
    account_user_t *user = account_user_get(request->tables, claims.user_id);
    if (user == NULL) {
        portal_refuse(request, 401, "invalid_request_error", "The account of this session token does not exist.",
                      NULL, "invalid_token");
        return NULL;
    }
    return user;
}

/* The user an API key (Authorization: Bearer sk-...) belongs to. Returns
 * NULL after answering 401 with the reason (unknown, disabled, expired). */
static account_user_t *portal_user_from_key(const portal_request_t *request, const uint8_t *value, size_t length) {
    auth_error_t error;
    account_key_t *key = NULL;
    account_user_t *user = NULL;
    if (auth_key_authenticate(request->tables, value, length, text_wall_ms(), &key, &user, &error) != AUTH_OK) {
        portal_refuse(request, error.http_status, error.type, error.message, NULL, error.code);
        return NULL;
    }
    return user;
}

/* Who is asking: a session token (JWT), or with allow_key an API key.
 * Returns the user, or NULL after answering 401. */
static account_user_t *portal_authenticate(const portal_request_t *request, bool allow_key) {
    const server_exchange_t *exchange = request->exchange;
    const http_request_t *http = &exchange->request;
    const uint8_t *value = http->has_authorization ? exchange->buffer + http->authorization.offset : NULL;
    size_t length = http->has_authorization ? http->authorization.length : 0;
    auth_token_t token;
    auth_bearer_kind_t kind = auth_bearer_parse(value, length, &token);
    if (kind == AUTH_BEARER_API_KEY && allow_key) return portal_user_from_key(request, value, length);
    if (kind == AUTH_BEARER_OTHER) return portal_user_from_jwt(request, &token);
    if (kind == AUTH_BEARER_API_KEY) {
        portal_refuse(request, 401, "invalid_request_error",
                      "This endpoint takes the session token from POST /auth/login, not an API key.", NULL,
                      "invalid_token");
        return NULL;
    }
    portal_refuse(request, 401, "invalid_request_error",
                  kind == AUTH_BEARER_MISSING
                      ? "You didn't provide a token. Send 'Authorization: Bearer <token>'."
                      : "The Authorization header is malformed. Send 'Authorization: Bearer <token>'.",
                  NULL, "invalid_token");
    return NULL;
}

/* Hands a job to the control thread: WAITING for the reply, or ANSWERED
 * 503 when the worker's job channel is full or too many password jobs are
 * queued. */
static portal_route_result_t portal_submit_job(const portal_request_t *request, portal_job_t *job,
                                               portal_wait_t *wait) {
    server_exchange_t *exchange = request->exchange;
    job->worker_index = request->worker_index;
    job->slot = server_exchange_index(exchange);
    job->body = server_body(exchange);
    job->body_length = (uint32_t)exchange->body_length;
    /* The answer goes into the stream's buffer (unused by these requests),
     * or after the request in the exchange's buffer when that has more
     * room. */
    uint8_t *reply = request->buffer;
    size_t capacity = request->capacity;
    size_t exchange_room = exchange->buffer_capacity - exchange->buffer_length;
    if (exchange_room > capacity) {
        reply = exchange->buffer + exchange->buffer_length;
        capacity = exchange_room;
    }
    job->reply = reply;
    job->reply_capacity = (uint32_t)RW_MIN(capacity, (size_t)UINT32_MAX);
    wait->reply = reply;
    wait->reply_capacity = job->reply_capacity;
    portal_submit_result_t submitted = portal_submit(request->portal, request->worker_index, job, request->worker_ring);
    if (submitted != PORTAL_SUBMITTED) {
        char header[40];
        int length = snprintf(header, sizeof header, "Retry-After: %u\r\n", (unsigned)request->busy_retry_after_s);
        RW_ASSERT(length > 0 && (size_t)length < sizeof header);
        server_respond_error_with_headers(exchange, 503, "server_error",
                                          submitted == PORTAL_PASSWORD_BUSY
                                              ? "too many sign-ups and logins are being checked, retry shortly"
                                              : "the account service is busy, retry shortly",
                                          NULL, "server_busy", header);
        return PORTAL_ROUTE_ANSWERED;
    }
    return PORTAL_ROUTE_WAITING;
}

static portal_route_result_t portal_balance(const portal_request_t *request, account_user_t *user) {
    int64_t available = atomic_load_explicit(&user->available_micros, memory_order_relaxed);
    char display[TEXT_MONEY_BYTES];
    text_format_money(available < 0 ? 0 : available, display);
    uint8_t *body = request->buffer;
    size_t capacity = request->capacity;
    int length = snprintf((char *)body, capacity,
                          "{\"balance\":%lld,\"balance_display\":\"%s\",\"email\":\"%s\",\"user_id\":%llu,"
                          "\"status\":\"%s\"}",
                          (long long)available, display, user->email, (unsigned long long)user->id,
                          account_user_status(user) == ACCOUNT_USER_SUSPENDED ? "suspended" : "active");
    RW_ASSERT(length > 0 && (size_t)length < capacity);
    server_respond(request->exchange, 200, "application/json", body, (size_t)length, NULL);
    return PORTAL_ROUTE_ANSWERED;
}

/* GET /billing/balance and /billing/usage?limit=N. */
static portal_route_result_t portal_billing(const portal_request_t *request, const uint8_t *path, size_t path_length,
                                            portal_wait_t *wait) {
    if (request->exchange->request.method != HTTP_METHOD_GET) {
        return portal_refuse(request, 405, "invalid_request_error", "Use GET.", NULL, "method_not_allowed");
    }
    account_user_t *user = portal_authenticate(request, true);
    if (user == NULL) return PORTAL_ROUTE_ANSWERED;
    if (path_length == strlen("/billing/balance")) return portal_balance(request, user);
    size_t limit_length = 0;
    const uint8_t *limit_text = portal_query_value(request->exchange, "limit", &limit_length);
    uint32_t limit = PORTAL_USAGE_LIMIT_DEFAULT;
    if (limit_text != NULL) {
        uint64_t value = 0;
        bool valid = limit_length > 0 && limit_length <= 7;
        for (size_t index = 0; valid && index < limit_length; index++) {
            valid = limit_text[index] >= '0' && limit_text[index] <= '9';
            value = value * 10 + (uint64_t)(limit_text[index] - '0');
        }
        if (!valid || value == 0 || value > PORTAL_USAGE_LIMIT_MAX) {
            return portal_refuse(request, 400, "invalid_request_error",
                                 "limit must be a whole number from 1 to 1000.", "limit", NULL);
        }
        limit = (uint32_t)value;
    }
    portal_job_t job;
    memset(&job, 0, sizeof job);
    job.kind = PORTAL_JOB_USAGE_LIST;
    job.user_id = user->id;
    job.limit = limit;
    return portal_submit_job(request, &job, wait);
}

/* GET and POST /api-keys, DELETE /api-keys/{id}: session tokens only. */
static portal_route_result_t portal_keys(const portal_request_t *request, const uint8_t *path, size_t path_length,
                                         portal_wait_t *wait) {
    http_method_t method = request->exchange->request.method;
    bool collection = path_length == strlen("/api-keys");
    if ((collection && method != HTTP_METHOD_GET && method != HTTP_METHOD_POST) ||
        (!collection && method != HTTP_METHOD_DELETE)) {
        return portal_refuse(request, 405, "invalid_request_error",
                             collection ? "Use GET or POST on /api-keys." : "Use DELETE on /api-keys/{id}.", NULL,
                             "method_not_allowed");
    }
    account_user_t *user = portal_authenticate(request, false);
    if (user == NULL) return PORTAL_ROUTE_ANSWERED;
    portal_job_t job;
    memset(&job, 0, sizeof job);
    job.user_id = user->id;
    if (!collection) {
        job.kind = PORTAL_JOB_KEY_DELETE;
        job.argument = path + strlen("/api-keys/");
        job.argument_length = (uint32_t)(path_length - strlen("/api-keys/"));
    } else if (method == HTTP_METHOD_GET) {
        job.kind = PORTAL_JOB_KEYS_LIST;
    } else {
        job.kind = PORTAL_JOB_KEY_CREATE;
        size_t name_length = 0;
        const uint8_t *name = portal_query_value(request->exchange, "name", &name_length);
        job.argument = name;
        job.argument_length = (uint32_t)name_length;
    }
    return portal_submit_job(request, &job, wait);
}

portal_route_result_t portal_route(const portal_request_t *request, const uint8_t *path, size_t path_length,
                                   portal_wait_t *wait) {
    RW_ASSERT(request != NULL && request->exchange != NULL && request->portal != NULL && wait != NULL);
    RW_ASSERT(request->buffer != NULL && request->capacity > 0);
    if (rw_bytes_equal_text(path, path_length, "/auth/register") ||
        rw_bytes_equal_text(path, path_length, "/auth/login")) {
        if (request->exchange->request.method != HTTP_METHOD_POST) {
            return portal_refuse(request, 405, "invalid_request_error", "Use POST.", NULL, "method_not_allowed");
        }
        portal_job_t job;
        memset(&job, 0, sizeof job);
        job.kind = path_length == strlen("/auth/login") ? PORTAL_JOB_LOGIN : PORTAL_JOB_REGISTER;
        if (job.kind == PORTAL_JOB_REGISTER && request->registration_closed) {
            return portal_refuse(request, 403, "permission_error",
                                 "Registration is closed on this service; ask its operator for an account.", NULL,
                                 "registration_closed");
        }
        job.client = portal_client_address(request);
        return portal_submit_job(request, &job, wait);
    }
    if (rw_bytes_equal_text(path, path_length, "/billing/balance") ||
        rw_bytes_equal_text(path, path_length, "/billing/usage")) {
        return portal_billing(request, path, path_length, wait);
    }
    if (rw_bytes_equal_text(path, path_length, "/api-keys") || portal_starts_with(path, path_length, "/api-keys/")) {
        return portal_keys(request, path, path_length, wait);
    }
    return PORTAL_ROUTE_NOT_OURS;
}

void portal_answer(server_exchange_t *exchange, const portal_wait_t *wait, const portal_reply_t *reply,
                   bool client_gone) {
    RW_ASSERT(exchange != NULL && wait != NULL && reply != NULL);
    if (client_gone) {
        server_exchange_release(exchange);
        return;
    }
    RW_ASSERT(reply->length <= wait->reply_capacity);
    char header[40];
    const char *extra = NULL;
    if (reply->retry_after_s > 0) {
        int length = snprintf(header, sizeof header, "Retry-After: %u\r\n", (unsigned)reply->retry_after_s);
        RW_ASSERT(length > 0 && (size_t)length < sizeof header);
        extra = header;
    }
    server_respond(exchange, reply->status, "application/json", wait->reply, reply->length, extra);
}
