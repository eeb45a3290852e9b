/* Dispatch, the first stage: which endpoint a request is for. Answers what
 * needs nothing else (health, the model list, 404, 405) and hands the rest
 * to its endpoint: the relayed endpoints to admission (admit.c), the
 * self-service account endpoints to the portal (src/portal). Every
 * endpoint lives under /v1 and /api/v1. */
#include "relay-internal.h"

#include <stdio.h>
#include <string.h>

typedef enum relay_dispatch_kind {
    RELAY_DISPATCH_MODELS,
    RELAY_DISPATCH_RELAYED,
} relay_dispatch_kind_t;

typedef struct relay_dispatch_entry {
    const char *path; /* after the /v1 or /api/v1 prefix */
    http_method_t method;
    const char *method_name;
    relay_dispatch_kind_t kind;
    relay_endpoint_t endpoint;
} relay_dispatch_entry_t;

static const relay_dispatch_entry_t relay_dispatch_table[] = {
    {"/models", HTTP_METHOD_GET, "GET", RELAY_DISPATCH_MODELS, RELAY_ENDPOINT_NONE},
    {"/chat/completions", HTTP_METHOD_POST, "POST", RELAY_DISPATCH_RELAYED, RELAY_ENDPOINT_CHAT},
    {"/embeddings", HTTP_METHOD_POST, "POST", RELAY_DISPATCH_RELAYED, RELAY_ENDPOINT_EMBEDDINGS},
};

/* The path after a /v1 or /api/v1 prefix, or NULL without one. */
static const uint8_t *relay_dispatch_strip_prefix(const uint8_t *path, size_t length, size_t *rest_length) {
    static const char *const prefixes[] = {"/v1/", "/api/v1/"};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(prefixes); index++) {
        size_t prefix_length = strlen(prefixes[index]);
        if (length >= prefix_length && memcmp(path, prefixes[index], prefix_length) == 0) {
            *rest_length = length - prefix_length + 1;
            return path + prefix_length - 1;
        }
    }
    *rest_length = 0;
    return NULL;
}

static void relay_dispatch_unknown(relay_stream_t *stream, const char *method_needed) {
    const server_exchange_t *exchange = stream->exchange;
    const http_request_t *request = &exchange->request;
    char message[300];
    int method_length = (int)RW_MIN(request->method_name.length, 16u);
    int shown_length = (int)RW_MIN(request->path.length, 200u);
    const char *method = (const char *)exchange->buffer + request->method_name.offset;
    const char *path = (const char *)exchange->buffer + request->path.offset;
    if (method_needed != NULL) {
        snprintf(message, sizeof message, "Method %.*s is not allowed on %.*s; use %s.", method_length, method,
                 shown_length, path, method_needed);
        relay_reply_error(stream, 405, "invalid_request_error", message, NULL, "method_not_allowed");
        return;
    }
    snprintf(message, sizeof message, "Invalid URL (%.*s %.*s)", method_length, method, shown_length, path);
    relay_reply_error(stream, 404, "invalid_request_error", message, NULL, "unknown_url");
}

/* The self-service endpoints (src/portal): false when the path is none of
 * them. The portal answers itself or submits a job; the stream then waits
 * for the reply in worker.c's mailbox. */
static bool relay_dispatch_portal(relay_stream_t *stream, const uint8_t *path, size_t path_length) {
    relay_worker_t *worker = stream->worker;
    const relay_shared_t *shared = worker->shared;
    portal_request_t request = {
        .exchange = stream->exchange,
        .portal = shared->portal,
        .worker_index = worker->index,
        .worker_ring = &worker->loop.ring,
        .tables = shared->tables,
        .jwt_secret = shared->jwt_secret,
        .jwt_secret_length = shared->jwt_secret_length,
        .buffer = stream->buffer,
        .capacity = stream->capacity,
        .busy_retry_after_s = RELAY_BUSY_RETRY_AFTER_S,
        .registration_closed = shared->config->registration == CONFIG_REGISTRATION_CLOSED,
        .trusted_proxies = shared->config->trusted_proxies,
        .trusted_proxy_count = shared->config->trusted_proxy_count,
    };
    portal_route_result_t result = portal_route(&request, path, path_length, &stream->portal_wait);
    if (result == PORTAL_ROUTE_NOT_OURS) return false;
    stream->phase = result == PORTAL_ROUTE_WAITING ? RELAY_PHASE_WAITING_CONTROL : RELAY_PHASE_DONE;
    return true;
}

/* Serves or hands on one request whose stream was just reset. */
void relay_dispatch(relay_stream_t *stream) {
    server_exchange_t *exchange = stream->exchange;
    const http_request_t *request = &exchange->request;
    const uint8_t *path = exchange->buffer + request->path.offset;
    size_t path_length = request->path.length;
    if (rw_bytes_equal_text(path, path_length, "/healthz")) {
        stream->phase = RELAY_PHASE_DONE;
        server_respond(exchange, 200, "text/plain", "ok", 2, NULL);
        return;
    }
    size_t rest_length = 0;
    const uint8_t *rest = relay_dispatch_strip_prefix(path, path_length, &rest_length);
    for (size_t index = 0; rest != NULL && index < RW_ARRAY_LENGTH(relay_dispatch_table); index++) {
        const relay_dispatch_entry_t *entry = &relay_dispatch_table[index];
        if (!rw_bytes_equal_text(rest, rest_length, entry->path)) continue;
        if (request->method != entry->method) {
            relay_dispatch_unknown(stream, entry->method_name);
            return;
        }
        if (entry->kind == RELAY_DISPATCH_MODELS) {
            stream->phase = RELAY_PHASE_DONE;
            const router_t *router = stream->worker->shared->router;
            server_respond(exchange, 200, "application/json", router->models_json, router->models_json_length, NULL);
            return;
        }
        relay_admit(stream, entry->endpoint);
        return;
    }
    if (rest != NULL ? relay_dispatch_portal(stream, rest, rest_length)
                     : relay_dispatch_portal(stream, path, path_length)) {
        return;
    }
    relay_dispatch_unknown(stream, NULL);
}
