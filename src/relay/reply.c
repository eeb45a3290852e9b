/* Our own answers on the request path: OpenAI-shaped errors. A leaf every
 * stage uses; it bills nothing. A stage that holds money settles the hold
 * (settle.c) before it answers, so an answer here never has a hold open.
 * An answer to an authenticated request carries the key's rate-limit
 * headers (limits.c), as every authenticated response does. */
#include "relay-internal.h"

#include <stdio.h>
#include <string.h>

/* Answers with `headers` (lines of "Name: value\r\n", `length` bytes of
 * the scratch's extra_headers) and the rate-limit headers after them. */
static void relay_reply_with(relay_stream_t *stream, uint16_t status, const char *type, const char *message,
                             const char *param, const char *code, size_t length) {
    RW_ASSERT(!stream->held);
    loop_timer_stop(&stream->timer);
    stream->phase = RELAY_PHASE_DONE;
    char *headers = stream->scratch.extra_headers;
    size_t capacity = sizeof stream->scratch.extra_headers;
    RW_ASSERT(length + RELAY_LIMIT_HEADERS_BYTES <= capacity);
    length += relay_limits_headers(stream, headers + length, capacity - length);
    headers[length] = '\0';
    server_respond_error_with_headers(stream->exchange, status, type, message, param, code,
                                      length > 0 ? headers : NULL);
}

void relay_reply_error(relay_stream_t *stream, uint16_t status, const char *type, const char *message,
                       const char *param, const char *code) {
    relay_reply_with(stream, status, type, message, param, code, 0);
}

/* An upstream failure before the response began, with x-should-retry:
 * whether the same request may succeed later (the SDKs retry 5xx answers
 * unless told not to). */
void relay_reply_upstream_failure(relay_stream_t *stream, uint16_t status, const char *message, const char *code,
                                  bool should_retry) {
    static const char retry_yes[] = "x-should-retry: true\r\n";
    static const char retry_no[] = "x-should-retry: false\r\n";
    const char *line = should_retry ? retry_yes : retry_no;
    size_t length = should_retry ? sizeof retry_yes - 1 : sizeof retry_no - 1;
    memcpy(stream->scratch.extra_headers, line, length);
    relay_reply_with(stream, status, "upstream_error", message, NULL, code, length);
}

/* The same with a Retry-After header (for 503s a client should retry, so
 * x-should-retry says so too). */
void relay_reply_error_retry_after(relay_stream_t *stream, uint16_t status, const char *type, const char *message,
                                   const char *code, uint32_t retry_after_s) {
    int length = snprintf(stream->scratch.extra_headers, sizeof stream->scratch.extra_headers,
                          "Retry-After: %u\r\nx-should-retry: true\r\n", (unsigned)retry_after_s);
    RW_ASSERT(length > 0);
    relay_reply_with(stream, status, type, message, NULL, code, (size_t)length);
}

/* 429 for a limit limits.c refused: Retry-After in seconds (none when no
 * wait can help: an exhausted quota) and x-should-retry, so the official
 * SDKs wait and retry by themselves exactly when waiting can help. */
void relay_reply_rate_limited(relay_stream_t *stream, const relay_limit_refusal_t *refusal) {
    int length = 0;
    if (refusal->retry_after_s > 0) {
        length = snprintf(stream->scratch.extra_headers, sizeof stream->scratch.extra_headers, "Retry-After: %u\r\n",
                          (unsigned)refusal->retry_after_s);
    }
    length += snprintf(stream->scratch.extra_headers + length, sizeof stream->scratch.extra_headers - (size_t)length,
                       "x-should-retry: %s\r\n", refusal->should_retry ? "true" : "false");
    RW_ASSERT(length > 0);
    relay_reply_with(stream, 429, "rate_limit_error", refusal->message, NULL, refusal->code, (size_t)length);
}
