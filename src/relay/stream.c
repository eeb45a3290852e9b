/* Streaming, the fourth stage: the upstream exchange and the relay of its
 * response to the client.
 *
 *   relay_stream_start     the first attempt: a route and key (route.c),
 *                          the request (plan.c), a connection from this
 *                          thread's pool for the route's upstream
 *   relay_failover         an attempt failed before anything reached the
 *                          client: its outcome goes to the breakers, and
 *                          the request goes to the next route while
 *                          [routing] attempts_max and failover_ms allow
 *   relay_send_request     head + spliced body to the upstream
 *   relay_read             upstream bytes into this stream's buffer
 *   relay_on_response_head status mapping, the client's response head
 *   relay_decode           de-chunk in place into payload spans; SSE events
 *                          found by the scanner, usage captured, the
 *                          usage-only event stripped when the client did not
 *                          ask for it
 *   relay_forward          spans go to the client as one chunk per send,
 *                          straight from the buffer they were decrypted into
 *   relay_finish           the upstream connection back to the pool, the
 *                          settlement (settle.c), and only after the store
 *                          acknowledged it (relay_stream_on_settled) the
 *                          response's last bytes
 *
 * Each stream slot belongs to one server exchange (same index) and has a
 * fixed buffer; at most one client send and one upstream receive are in
 * flight, and they alternate, which bounds memory per stream and gives
 * backpressure: a slow client stops upstream reads. */
#include "relay-internal.h"

#include "ringway/http-writer.h"

#include <stdio.h>
#include <string.h>

static void relay_read(relay_stream_t *stream);
static void relay_finish(relay_stream_t *stream);
static void relay_forward(relay_stream_t *stream);
static bool relay_failover(relay_stream_t *stream, relay_outcome_t outcome);

/* ---- small helpers ------------------------------------------------------ */

static void relay_timer_start(relay_stream_t *stream, loop_timer_list_t *list) {
    loop_timer_start(&stream->worker->loop, list, &stream->timer);
}

/* Sends scratch.send_pieces[0, count) to the client, or, while a keep-alive
 * comment is in flight (one send at a time), as soon as it has gone. */
static void relay_client_send(relay_stream_t *stream, uint32_t count, bool last) {
    if (stream->keepalive_in_flight) {
        RW_ASSERT(!stream->send_deferred);
        stream->send_deferred = true;
        stream->deferred_count = count;
        stream->deferred_last = last;
        return;
    }
    server_send(stream->exchange, stream->scratch.send_pieces, count, last);
}

static bool relay_keepalive_on(const relay_stream_t *stream) {
    return stream->mode == RELAY_MODE_SSE && stream->worker->config->sse_keepalive_ms > 0;
}

/* Mid-response, the upstream just sent bytes (or its head): the idle gap
 * starts again. With keep-alives on, their ticks check it against the
 * time the upstream was last heard. */
static void relay_relaying_timer_start(relay_stream_t *stream) {
    if (relay_keepalive_on(stream)) {
        stream->upstream_heard_ms = loop_now_ms(&stream->worker->loop);
        relay_timer_start(stream, &stream->worker->keepalive_timers);
    } else {
        relay_timer_start(stream, &stream->pool->idle_gap_timers);
    }
}


/* The request failed before its response began: the hold is settled (an
 * error costs nothing) and the client gets an OpenAI error saying whether a
 * retry may help. */
static void relay_stream_fail(relay_stream_t *stream, uint16_t status, const char *message, const char *code,
                              bool should_retry) {
    relay_route_report(stream, RELAY_OUTCOME_NEUTRAL); /* the callers reported the real outcome */
    relay_settle(stream, "upstream_error", false);
    relay_reply_upstream_failure(stream, status, message, code, should_retry); /* stops the timer */
}

static void relay_release_upstream(relay_stream_t *stream, bool reusable) {
    if (stream->upstream == NULL) return;
    upstream_release(stream->upstream, reusable);
    stream->upstream = NULL;
}

/* ---- the end of a stream ------------------------------------------------ */

/* Ends a stream whose client has gone: the upstream is released (reused
 * when its response ended cleanly) and the exchange given back. */
static void relay_finish_drain(relay_stream_t *stream) {
    relay_route_report(stream, RELAY_OUTCOME_NEUTRAL); /* an attempt cut before its answer */
    loop_timer_stop(&stream->timer);
    relay_release_upstream(stream, stream->upstream_done && stream->upstream_reusable);
    relay_settle(stream, "client_closed", false);
    stream->phase = RELAY_PHASE_DONE;
    server_exchange_release(stream->exchange);
}

/* The upstream response is complete: forward what is left and end. */
static void relay_finish(relay_stream_t *stream) {
    loop_timer_stop(&stream->timer);
    relay_release_upstream(stream, stream->upstream_reusable);
    if (stream->client_gone) {
        relay_finish_drain(stream);
        return;
    }
    /* The usage record is written before the response's last bytes leave:
     * relay_stream_on_settled runs when the store acknowledges. */
    if (relay_settle(stream, "completed", true)) return;
    relay_forward(stream);
}

/* The upstream failed after the client's response began. */
static void relay_upstream_broken(relay_stream_t *stream, const char *reason) {
    loop_timer_stop(&stream->timer);
    relay_release_upstream(stream, false);
    relay_settle(stream, "upstream_broken", false);
    if (stream->client_gone || stream->phase == RELAY_PHASE_DRAINING) {
        relay_finish_drain(stream);
        return;
    }
    stream->phase = RELAY_PHASE_DONE;
    if (stream->mode != RELAY_MODE_SSE) {
        /* A JSON body cannot carry an error once begun: cut the connection
         * so the client sees a truncated response, never a wrong one. */
        server_exchange_abort(stream->exchange);
        return;
    }
    char message[256];
    snprintf(message, sizeof message, "the upstream failed mid-stream: %s", reason);
    size_t length = 0;
    memcpy(stream->scratch.error_event, "data: ", 6);
    length = 6;
    length += http_write_error_body(stream->scratch.error_event + length, sizeof stream->scratch.error_event - length - 2, message,
                                    "upstream_error", NULL, "upstream_error");
    RW_ASSERT(length > 6);
    memcpy(stream->scratch.error_event + length, "\n\n", 2);
    length += 2;
    uint32_t count = 0;
    /* Complete events first; a partial event in progress is dropped. */
    for (uint32_t index = 0; index < stream->ready_count; index++) {
        stream->scratch.send_pieces[count++] =
            (struct iovec){.iov_base = stream->buffer + stream->scratch.ready[index].offset, .iov_len = stream->scratch.ready[index].length};
    }
    stream->ready_count = 0;
    stream->pending_count = 0;
    stream->scratch.send_pieces[count++] = (struct iovec){.iov_base = stream->scratch.error_event, .iov_len = length};
    relay_client_send(stream, count, true);
}

/* ---- forwarding to the client ------------------------------------------- */

static void relay_add_span(relay_span_t *spans, uint32_t *count, uint32_t offset, uint32_t length) {
    if (length == 0) return;
    if (*count > 0 && spans[*count - 1].offset + spans[*count - 1].length == offset) {
        spans[*count - 1].length += length;
        return;
    }
    RW_ASSERT(*count < RELAY_SPANS_MAX);
    spans[*count] = (relay_span_t){.offset = offset, .length = length};
    (*count)++;
}

/* Sends the ready spans (and ends the response when the upstream is done). */
static void relay_forward(relay_stream_t *stream) {
    uint32_t count = 0;
    for (uint32_t index = 0; index < stream->ready_count; index++) {
        stream->scratch.send_pieces[count++] =
            (struct iovec){.iov_base = stream->buffer + stream->scratch.ready[index].offset, .iov_len = stream->scratch.ready[index].length};
    }
    if (stream->upstream_done) {
        /* Anything still pending is an event the upstream never ended. */
        for (uint32_t index = 0; index < stream->pending_count; index++) {
            stream->scratch.send_pieces[count++] = (struct iovec){.iov_base = stream->buffer + stream->scratch.pending[index].offset,
                                                          .iov_len = stream->scratch.pending[index].length};
        }
        stream->pending_count = 0;
        stream->phase = RELAY_PHASE_DONE;
    }
    stream->ready_count = 0;
    for (uint32_t index = 0; index < count; index++) stream->forwarded_bytes += stream->scratch.send_pieces[index].iov_len;
    relay_client_send(stream, count, stream->upstream_done);
}

/* After a send: pending (unfinished event) bytes and undecoded raw bytes
 * move to the front of the buffer. Only an event split across reads is
 * ever copied. */
static void relay_compact(relay_stream_t *stream) {
    size_t write = 0;
    for (uint32_t index = 0; index < stream->pending_count; index++) {
        relay_span_t *span = &stream->scratch.pending[index];
        if (span->offset != write) memmove(stream->buffer + write, stream->buffer + span->offset, span->length);
        write += span->length;
    }
    stream->pending_count = 0;
    if (write > 0) stream->scratch.pending[stream->pending_count++] = (relay_span_t){.offset = 0, .length = (uint32_t)write};
    size_t raw = stream->filled - stream->parsed;
    if (raw > 0 && stream->parsed != write) memmove(stream->buffer + write, stream->buffer + stream->parsed, raw);
    stream->parsed = write;
    stream->filled = write + raw;
}

/* ---- decoding the upstream body ----------------------------------------- */

static void relay_event_complete(relay_stream_t *stream, const sse_event_t *event) {
    if (event->json.usage_present) {
        stream->usage = event->json.usage;
        stream->usage_seen = true;
    }
    /* `data: [DONE]` (and anything after it) stays pending until the body
     * ends and the usage record is written: a client that stops reading at
     * [DONE] must never have a response whose charge could still be lost. */
    if (event->is_done) stream->done_seen = true;
    if (stream->done_seen) return;
    bool usage_only = event->json.usage_present && event->json.choices_empty;
    if (event->has_data && !event->is_done && !usage_only) stream->content_events++;
    if (usage_only && !stream->client_wants_usage && !stream->event_partly_forwarded) {
        stream->pending_count = 0;
    } else {
        for (uint32_t index = 0; index < stream->pending_count; index++) {
            relay_add_span(stream->scratch.ready, &stream->ready_count, stream->scratch.pending[index].offset,
                           stream->scratch.pending[index].length);
        }
        stream->pending_count = 0;
    }
    stream->event_partly_forwarded = false;
}

static void relay_payload(relay_stream_t *stream, size_t offset, size_t length) {
    if (stream->mode == RELAY_MODE_PASS) {
        usage_scanner_feed(&stream->usage_scanner, stream->buffer + offset, length);
        relay_add_span(stream->scratch.ready, &stream->ready_count, (uint32_t)offset, (uint32_t)length);
        return;
    }
    size_t position = 0;
    while (position < length) {
        size_t consumed = 0;
        sse_event_t event;
        sse_result_t result =
            sse_scan(&stream->sse, stream->buffer + offset + position, length - position, &consumed, &event);
        relay_add_span(stream->scratch.pending, &stream->pending_count, (uint32_t)(offset + position), (uint32_t)consumed);
        position += consumed;
        if (result == SSE_EVENT) relay_event_complete(stream, &event);
    }
}

static void relay_body_ended(relay_stream_t *stream) {
    stream->upstream_done = true;
    stream->upstream_reusable = stream->response.keep_alive && stream->parsed == stream->filled;
    if (stream->mode == RELAY_MODE_PASS) {
        usage_result_t result;
        usage_scanner_result(&stream->usage_scanner, &result);
        if (result.usage_present) {
            stream->usage = result.usage;
            stream->usage_seen = true;
        }
    }
}

/* De-chunks raw bytes [parsed, filled) into payload spans. Stops early when
 * the span arrays are nearly full (the rest waits for the next pass).
 * Returns false when the body is malformed. */
static bool relay_decode(relay_stream_t *stream) {
    while (stream->parsed < stream->filled && !stream->upstream_done) {
        if (stream->ready_count + stream->pending_count + RELAY_SPANS_SLACK_DECODE >= RELAY_SPANS_MAX) break;
        size_t available = stream->filled - stream->parsed;
        if (stream->response.chunked) {
            size_t consumed = 0, data_offset = 0, data_length = 0;
            http_chunked_result_t result = http_chunked_decode(&stream->chunked, stream->buffer + stream->parsed,
                                                               available, &consumed, &data_offset, &data_length);
            if (result == HTTP_CHUNKED_ERROR) return false;
            size_t base = stream->parsed;
            stream->parsed += consumed;
            if (result == HTTP_CHUNKED_DATA) relay_payload(stream, base + data_offset, data_length);
            if (result == HTTP_CHUNKED_DONE) relay_body_ended(stream);
        } else if (stream->response.content_length >= 0) {
            size_t length = RW_MIN(available, (size_t)stream->body_remaining);
            size_t base = stream->parsed;
            stream->parsed += length;
            stream->body_remaining -= (int64_t)length;
            relay_payload(stream, base, length);
            if (stream->body_remaining == 0) relay_body_ended(stream);
        } else {
            size_t base = stream->parsed;
            stream->parsed = stream->filled;
            relay_payload(stream, base, available);
        }
    }
    return true;
}

/* ---- the response head -------------------------------------------------- */

/* What a final status says about the route: the client's own errors say
 * the upstream works. */
static relay_outcome_t relay_outcome_of_status(uint16_t status) {
    if (status == 429) return RELAY_OUTCOME_KEY_LIMITED;
    if (status == 401 || status == 403) return RELAY_OUTCOME_KEY_REFUSED;
    if ((status >= 200 && status < 300) || status == 400 || status == 404 || status == 409 || status == 413 ||
        status == 422) {
        return RELAY_OUTCOME_SUCCESS;
    }
    return RELAY_OUTCOME_UPSTREAM_FAILED;
}

static bool relay_status_passes_through(uint16_t status) {
    return (status >= 200 && status < 300) || status == 400 || status == 404 || status == 409 || status == 413 ||
           status == 422 || status == 429;
}

static void relay_copy_header(const relay_stream_t *stream, const char *name, char *out, size_t capacity,
                              size_t *length) {
    const http_header_t *header = http_response_find_header(&stream->response, stream->buffer, name);
    if (header == NULL || header->value.length == 0) return;
    int written = snprintf(out + *length, capacity - *length, "%s: %.*s\r\n", name, (int)header->value.length,
                           (const char *)stream->buffer + header->value.offset);
    if (written > 0 && (size_t)written < capacity - *length) *length += (size_t)written;
}

/* Returns false when the stream is over (mapped to an error). */
static bool relay_on_response_head(relay_stream_t *stream) {
    const http_response_t *response = &stream->response;
    uint16_t status = response->status;
    RW_ASSERT(status >= 200 && "interim heads are skipped before");
    relay_outcome_t outcome = relay_outcome_of_status(status);
    if (outcome != RELAY_OUTCOME_SUCCESS && relay_failover(stream, outcome)) return false;
    relay_route_report(stream, outcome);
    if (!relay_status_passes_through(status)) {
        relay_release_upstream(stream, false);
        if (stream->client_gone) {
            relay_finish_drain(stream);
            return false;
        }
        char message[200];
        if (status == 401 || status == 403) {
            snprintf(message, sizeof message, "the upstream '%s' refused the relay's credentials (HTTP %u)",
                     stream->pool->upstream->name, (unsigned)status);
        } else {
            snprintf(message, sizeof message, "the upstream '%s' failed with HTTP %u", stream->pool->upstream->name,
                     (unsigned)status);
        }
        /* Our credentials refused: the operator must act, a retry cannot help. */
        relay_stream_fail(stream, 502, message, "upstream_error", status != 401 && status != 403);
        return false;
    }
    stream->phase = RELAY_PHASE_RELAYING;
    /* The media type may carry parameters ("; charset=utf-8"). */
    static const char event_stream_type[] = "text/event-stream";
    const uint32_t event_stream_length = sizeof event_stream_type - 1;
    bool event_stream = response->has_content_type && response->content_type.length >= event_stream_length &&
                        http_span_equals_ignore_case(stream->buffer,
                                                     (http_span_t){response->content_type.offset, event_stream_length},
                                                     event_stream_type);
    stream->mode = (status == 200 && event_stream) ? RELAY_MODE_SSE : RELAY_MODE_PASS;
    relay_relaying_timer_start(stream);
    if (stream->mode == RELAY_MODE_SSE) {
        sse_scanner_init(&stream->sse);
        rw_copy_text(stream->scratch.content_type, sizeof stream->scratch.content_type, "text/event-stream");
    } else {
        usage_scanner_init(&stream->usage_scanner);
        if (response->has_content_type && response->content_type.length < sizeof stream->scratch.content_type) {
            memcpy(stream->scratch.content_type, stream->buffer + response->content_type.offset, response->content_type.length);
            stream->scratch.content_type[response->content_type.length] = '\0';
        } else {
            rw_copy_text(stream->scratch.content_type, sizeof stream->scratch.content_type, "application/json");
        }
    }
    size_t extra_length = 0;
    char *extra = stream->scratch.extra_headers;
    /* The rate-limit headers go last, in the room kept for them. */
    size_t before_limits = sizeof stream->scratch.extra_headers - RELAY_LIMIT_HEADERS_BYTES;
    extra[0] = '\0';
    if (stream->mode == RELAY_MODE_SSE) {
        extra_length = (size_t)snprintf(extra, before_limits, "Cache-Control: no-cache\r\n");
    }
    relay_copy_header(stream, "Retry-After", extra, before_limits, &extra_length);
    extra_length += relay_limits_headers(stream, extra + extra_length, sizeof stream->scratch.extra_headers - extra_length);
    extra[extra_length] = '\0';
    int64_t content_length = -1;
    if (stream->mode == RELAY_MODE_PASS && !response->chunked && response->content_length >= 0) {
        content_length = response->content_length;
    }
    if (response->body_absent) content_length = 0;
    server_begin(stream->exchange, status, stream->scratch.content_type, content_length,
                 extra_length > 0 ? stream->scratch.extra_headers : NULL);
    stream->head_begun = true;
    stream->parsed = response->head_length;
    if (response->body_absent) {
        relay_body_ended(stream);
    } else if (response->chunked) {
        http_chunked_decoder_init(&stream->chunked);
    } else if (response->content_length >= 0) {
        stream->body_remaining = response->content_length;
        if (stream->body_remaining == 0) relay_body_ended(stream);
    }
    return true;
}

/* ---- upstream I/O -------------------------------------------------------- */

static bool relay_retry(relay_stream_t *stream);

/* Parses the response head in buffer[0, filled), skipping interim (1xx)
 * heads: the final head may have arrived in the same read as one, and
 * nothing more may come until it is answered. A 101 is refused: the relay
 * never asks an upstream to switch protocols. */
static http_parse_result_t relay_parse_final_head(relay_stream_t *stream) {
    for (;;) {
        http_parse_result_t result =
            http_response_parse(&stream->response_parser, &stream->response, stream->buffer, stream->filled);
        if (result != HTTP_PARSE_DONE) return result;
        uint16_t status = stream->response.status;
        if (status >= 200) return result;
        if (status == 101) return HTTP_PARSE_ERROR;
        size_t head_length = stream->response.head_length;
        RW_ASSERT(head_length <= stream->filled);
        memmove(stream->buffer, stream->buffer + head_length, stream->filled - head_length);
        stream->filled -= head_length;
        memset(&stream->response, 0, sizeof stream->response);
        http_response_parser_init(&stream->response_parser, stream->worker->config->header_bytes_max);
    }
}

/* New response bytes at buffer[filled, filled + bytes). Returns true when
 * the caller should read more now; false when the stream waits for
 * something else (a client send) or is over. */
static bool relay_on_bytes(relay_stream_t *stream, size_t bytes) {
    stream->filled += bytes;
    if (stream->phase == RELAY_PHASE_WAITING_HEAD ||
        (stream->phase == RELAY_PHASE_DRAINING && !stream->head_begun && stream->response.status == 0)) {
        http_parse_result_t result = relay_parse_final_head(stream);
        if (result == HTTP_PARSE_ERROR || (result == HTTP_PARSE_AGAIN && stream->filled == stream->capacity)) {
            if (stream->client_gone) {
                relay_release_upstream(stream, false);
                relay_finish_drain(stream);
                return false;
            }
            if (relay_failover(stream, RELAY_OUTCOME_UPSTREAM_FAILED)) return false;
            relay_release_upstream(stream, false);
            relay_stream_fail(stream, 502, "the upstream sent an invalid HTTP response", "upstream_error", true);
            return false;
        }
        if (result == HTTP_PARSE_AGAIN) return true;
        if (stream->client_gone) {
            /* Draining: note the framing only, nothing goes to the client. */
            relay_route_report(stream, relay_outcome_of_status(stream->response.status));
            stream->parsed = stream->response.head_length;
            stream->mode = stream->client_streaming ? RELAY_MODE_SSE : RELAY_MODE_PASS;
            sse_scanner_init(&stream->sse);
            usage_scanner_init(&stream->usage_scanner);
            stream->head_begun = true;
            if (stream->response.chunked) http_chunked_decoder_init(&stream->chunked);
            else if (stream->response.content_length >= 0) stream->body_remaining = stream->response.content_length;
            if (stream->response.body_absent || stream->response.content_length == 0) relay_body_ended(stream);
        } else {
            if (!relay_on_response_head(stream)) return false;
        }
    } else if (stream->phase == RELAY_PHASE_RELAYING) {
        relay_relaying_timer_start(stream);
    }
    if (!relay_decode(stream)) {
        relay_upstream_broken(stream, "the upstream's chunked framing is invalid");
        return false;
    }
    if (stream->phase == RELAY_PHASE_DRAINING || stream->client_gone) {
        stream->drained_bytes += bytes;
        stream->ready_count = 0;
        stream->pending_count = 0;
        relay_compact(stream);
        if (stream->upstream_done || stream->drained_bytes > stream->worker->config->drain_bytes_max) {
            relay_finish_drain(stream);
            return false;
        }
        return true;
    }
    if (stream->upstream_done) {
        relay_finish(stream);
        return false;
    }
    if (stream->ready_count > 0) {
        /* More records already sit in the TLS buffer: decrypt them too, so
         * one send carries every event that has arrived. */
        if (stream->upstream != NULL && upstream_has_buffered(stream->upstream) &&
            stream->capacity - stream->filled >= RELAY_BATCH_ROOM_MIN &&
            stream->ready_count + stream->pending_count + RELAY_SPANS_SLACK_BATCH < RELAY_SPANS_MAX) {
            return true;
        }
        relay_forward(stream);
        return false;
    }
    if (stream->parsed < stream->filled && stream->pending_count + RELAY_SPANS_SLACK_DECODE >= RELAY_SPANS_MAX) {
        /* Spans are full of one unfinished event: flush it as it is. */
        for (uint32_t index = 0; index < stream->pending_count; index++) {
            relay_add_span(stream->scratch.ready, &stream->ready_count, stream->scratch.pending[index].offset,
                           stream->scratch.pending[index].length);
        }
        stream->pending_count = 0;
        stream->event_partly_forwarded = true;
        relay_forward(stream);
        return false;
    }
    relay_compact(stream);
    if (stream->filled == stream->capacity) {
        /* One event larger than the buffer: forward its first part now
         * (it can no longer be stripped) and keep scanning the rest. */
        for (uint32_t index = 0; index < stream->pending_count; index++) {
            relay_add_span(stream->scratch.ready, &stream->ready_count, stream->scratch.pending[index].offset,
                           stream->scratch.pending[index].length);
        }
        stream->pending_count = 0;
        stream->event_partly_forwarded = true;
        if (stream->ready_count > 0) {
            relay_forward(stream);
            return false;
        }
        relay_upstream_broken(stream, "a response head or chunk line is larger than the stream buffer");
        return false;
    }
    return true;
}

static void relay_read(relay_stream_t *stream) {
    /* Bytes already buffered but not decoded (the span arrays filled up
     * last time) are processed before anything new is read. */
    if (stream->parsed < stream->filled && stream->phase != RELAY_PHASE_WAITING_HEAD) {
        if (!relay_on_bytes(stream, 0)) return;
    }
    for (;;) {
        if (stream->upstream == NULL) return;
        RW_ASSERT(stream->filled < stream->capacity);
        size_t bytes = upstream_receive(stream->upstream, stream->buffer + stream->filled,
                                        stream->capacity - stream->filled);
        if (bytes == 0) return;
        if (!relay_on_bytes(stream, bytes)) return;
    }
}

static void relay_on_upstream_received(void *user, size_t bytes) {
    relay_stream_t *stream = user;
    if (bytes == 0) {
        /* The upstream closed its side. */
        if (stream->phase == RELAY_PHASE_WAITING_HEAD && stream->filled == 0 && relay_retry(stream)) return;
        if (stream->head_begun && !stream->response.chunked && stream->response.content_length < 0) {
            relay_body_ended(stream);
            stream->upstream_reusable = false;
            if (stream->client_gone || stream->phase == RELAY_PHASE_DRAINING) {
                relay_finish_drain(stream);
            } else {
                relay_finish(stream);
            }
            return;
        }
        if (stream->phase == RELAY_PHASE_WAITING_HEAD) {
            if (relay_failover(stream, RELAY_OUTCOME_UPSTREAM_FAILED)) return;
            relay_release_upstream(stream, false);
            relay_stream_fail(stream, 502, "the upstream closed the connection without answering", "upstream_error",
                              true);
            return;
        }
        relay_upstream_broken(stream, "the upstream closed the connection");
        return;
    }
    if (relay_on_bytes(stream, bytes)) relay_read(stream);
}

static void relay_on_upstream_sent(void *user) {
    relay_stream_t *stream = user;
    if (stream->phase == RELAY_PHASE_SENDING) stream->phase = RELAY_PHASE_WAITING_HEAD;
    if (stream->phase != RELAY_PHASE_DRAINING) relay_timer_start(stream, &stream->pool->first_byte_timers);
    relay_read(stream);
}

/* The send has a deadline too (the first-byte one): an upstream that stops
 * reading must not keep the stream, and its hold, for ever. A draining
 * stream keeps its drain deadline. */
static void relay_send_request(relay_stream_t *stream) {
    if (stream->phase != RELAY_PHASE_DRAINING) {
        stream->phase = RELAY_PHASE_SENDING;
        relay_timer_start(stream, &stream->pool->first_byte_timers);
    }
    upstream_send(stream->upstream, stream->scratch.request_pieces, stream->request_piece_count);
}

static void relay_on_upstream_ready(void *user) {
    relay_stream_t *stream = user;
    relay_send_request(stream);
}

static void relay_on_upstream_failed(void *user, const char *reason) {
    relay_stream_t *stream = user;
    stream->upstream = NULL; /* already closed by the upstream module */
    if (stream->phase == RELAY_PHASE_DRAINING) {
        relay_route_report(stream, RELAY_OUTCOME_UPSTREAM_FAILED);
        relay_finish_drain(stream);
        return;
    }
    if (stream->phase == RELAY_PHASE_RELAYING) {
        relay_upstream_broken(stream, reason);
        return;
    }
    if (stream->filled == 0 && relay_retry(stream)) return;
    if (relay_failover(stream, RELAY_OUTCOME_UPSTREAM_FAILED)) return;
    char message[256];
    snprintf(message, sizeof message, "the upstream '%s' is unavailable: %s", stream->pool->upstream->name, reason);
    relay_stream_fail(stream, 502, message, "upstream_error", true);
}

static const upstream_events_t relay_upstream_events = {
    .on_ready = relay_on_upstream_ready,
    .on_failed = relay_on_upstream_failed,
    .on_sent = relay_on_upstream_sent,
    .on_received = relay_on_upstream_received,
};

/* Takes a connection to the current attempt's upstream and sends its
 * request (planned already). No free connection on this thread: another
 * route may have one; when none has, 503 server_busy. */
static void relay_attempt_connect(relay_stream_t *stream) {
    bool reused = false;
    upstream_connection_t *connection = upstream_acquire(stream->pool, &relay_upstream_events, stream, &reused);
    if (connection == NULL) {
        stream->routes_tried |= (uint8_t)(1u << stream->route_index);
        if (relay_failover(stream, RELAY_OUTCOME_NEUTRAL)) return;
        relay_settle(stream, "upstream_error", false);
        relay_reply_error_retry_after(stream, 503, "server_error",
                                      "no upstream connection is free on this relay thread", "server_busy",
                                      RELAY_BUSY_RETRY_AFTER_S);
        return;
    }
    stream->upstream = connection;
    stream->reused = reused;
    if (reused) {
        relay_send_request(stream);
    } else {
        stream->phase = RELAY_PHASE_CONNECTING;
    }
}

/* No route may take the request: every route's breaker is open (503
 * provider_unavailable, with the wait until one may take it again), or
 * every key of every route was refused (502: the operator must act). */
static void relay_no_route(relay_stream_t *stream) {
    uint32_t retry_after_s = relay_route_retry_after_s(stream);
    relay_settle(stream, "upstream_error", false);
    char message[256];
    if (retry_after_s == 0) {
        snprintf(message, sizeof message, "every upstream API key of the model '%s' was refused",
                 stream->model->config->name);
        relay_reply_upstream_failure(stream, 502, message, "upstream_error", false);
        return;
    }
    snprintf(message, sizeof message,
             "every upstream of the model '%s' is failing; retry later or switch model", stream->model->config->name);
    relay_reply_error_retry_after(stream, 503, "upstream_error", message, "provider_unavailable", retry_after_s);
}

/* Starts the admitted request (from admit.c): its first attempt. */
void relay_stream_start(relay_stream_t *stream) {
    RW_ASSERT(stream->attempts == 0 && stream->model != NULL);
    if (!relay_route_choose(stream)) {
        relay_no_route(stream);
        return;
    }
    relay_plan(stream);
    relay_attempt_connect(stream);
}

/* Forgets what the failed attempt received: the next one starts clean. */
static void relay_attempt_clear(relay_stream_t *stream) {
    stream->filled = 0;
    stream->parsed = 0;
    memset(&stream->response, 0, sizeof stream->response);
    http_response_parser_init(&stream->response_parser, stream->worker->config->header_bytes_max);
    stream->retries = 0;
    stream->reused = false;
    stream->head_begun = false;
    stream->upstream_done = false;
    stream->upstream_reusable = false;
    stream->body_remaining = 0;
    stream->ready_count = 0;
    stream->pending_count = 0;
    stream->usage_seen = false;
}

/* The current attempt failed before anything reached the client: the
 * breakers learn `outcome`, and when the client is still there, the
 * attempts and the time allow ([routing] attempts_max, failover_ms) and a
 * route is left, the request goes there. Returns true when it did; false
 * with the outcome reported and the attempt's connection untouched, for
 * the caller's final answer. */
static bool relay_failover(relay_stream_t *stream, relay_outcome_t outcome) {
    RW_ASSERT(!stream->head_begun || stream->client_gone);
    relay_route_report(stream, outcome);
    if (stream->client_gone || stream->head_begun) return false;
    const config_t *config = stream->worker->config;
    if (stream->attempts >= config->attempts_max) return false;
    if (loop_now_ms(&stream->worker->loop) - stream->first_attempt_ms >= config->failover_ms) return false;
    if (!relay_route_choose(stream)) return false;
    relay_release_upstream(stream, false);
    loop_timer_stop(&stream->timer);
    relay_attempt_clear(stream);
    relay_plan(stream);
    relay_attempt_connect(stream);
    return true;
}

/* A reused keep-alive connection can turn out closed by the upstream before
 * it read our request (the keep-alive race): no byte of an answer came, so
 * the same request goes again on another connection, at most
 * RELAY_RETRIES_MAX times. The request pieces are intact: the upstream
 * module sends from its own copy of them. Returns true when it retried (or
 * answered: a retry that finds no free connection answers 503). */
static bool relay_retry(relay_stream_t *stream) {
    if (!stream->reused || stream->retries >= RELAY_RETRIES_MAX || stream->client_gone) return false;
    if (stream->filled > 0 || stream->request_piece_count == 0) return false;
    stream->retries++;
    relay_release_upstream(stream, false);
    loop_timer_stop(&stream->timer);
    stream->parsed = 0;
    http_response_parser_init(&stream->response_parser, stream->worker->config->header_bytes_max);
    relay_attempt_connect(stream);
    return true;
}


/* The store wrote (or failed to write) the settlement this stream waits
 * for: the response's last bytes go out now. */
void relay_stream_on_settled(relay_stream_t *stream, const store_ack_t *ack) {
    RW_ASSERT(stream->phase == RELAY_PHASE_SETTLING && !stream->held);
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

/* A keep-alive tick of a relaying SSE response. Past the upstream's idle
 * gap since it was last heard, the stream is broken as without keep-alives
 * (measured in time, whatever the client does: a client that stops reading
 * must not keep a dead upstream's connection and hold). Otherwise, when the
 * relay waits on the upstream between whole events (nothing of the event in
 * progress has reached the client) and no comment is still on its way, a
 * comment goes out: SSE clients ignore it, and proxies and clients that
 * time out silent connections see bytes. Ticks come at the loop's timer
 * resolution at best. */
static void relay_keepalive_tick(relay_stream_t *stream) {
    uint64_t now_ms = loop_now_ms(&stream->worker->loop);
    if (now_ms - stream->upstream_heard_ms >= stream->pool->upstream->idle_ms) {
        relay_upstream_broken(stream, "the upstream stalled mid-response");
        return;
    }
    if (!stream->keepalive_in_flight && !stream->send_deferred) {
        bool waiting_on_upstream = stream->upstream != NULL && stream->upstream->receiving && !stream->upstream_done;
        if (waiting_on_upstream && !stream->event_partly_forwarded && stream->ready_count == 0) {
            static const char comment[] = ": keep-alive\n\n";
            struct iovec piece = {.iov_base = (void *)comment, .iov_len = sizeof comment - 1};
            stream->keepalive_in_flight = true;
            server_send(stream->exchange, &piece, 1, false);
        }
    }
    relay_timer_start(stream, &stream->worker->keepalive_timers);
}

/* ---- the server's callbacks, by way of worker.c ---------------------------- */

/* The phase's deadline passed. */
void relay_stream_on_timer(relay_stream_t *stream) {
    switch (stream->phase) {
    case RELAY_PHASE_WAITING_HEAD:
    case RELAY_PHASE_SENDING:
        if (relay_failover(stream, RELAY_OUTCOME_UPSTREAM_FAILED)) break;
        relay_release_upstream(stream, false);
        relay_stream_fail(stream, 504, "the upstream did not answer in time", "upstream_timeout", true);
        break;
    case RELAY_PHASE_RELAYING:
        if (relay_keepalive_on(stream)) {
            relay_keepalive_tick(stream);
            break;
        }
        relay_upstream_broken(stream, "the upstream stalled mid-response");
        break;
    case RELAY_PHASE_DRAINING:
        relay_finish_drain(stream);
        break;
    default:
        break;
    }
}

/* A send to the client completed: read on. */
void relay_stream_on_sent(relay_stream_t *stream) {
    if (stream->keepalive_in_flight) {
        /* The upstream receive is still armed; a send that waited goes now,
         * and its own completion reads on. */
        stream->keepalive_in_flight = false;
        if (stream->send_deferred) {
            stream->send_deferred = false;
            server_send(stream->exchange, stream->scratch.send_pieces, stream->deferred_count, stream->deferred_last);
        }
        return;
    }
    RW_ASSERT(stream->phase == RELAY_PHASE_RELAYING);
    relay_compact(stream);
    relay_read(stream);
}

/* The client went away while the stream owned its exchange. */
void relay_stream_on_abort(relay_stream_t *stream) {
    server_exchange_t *exchange = stream->exchange;
    stream->client_gone = true;
    bool drain = stream->worker->config->client_disconnect == CONFIG_DISCONNECT_DRAIN;
    switch (stream->phase) {
    case RELAY_PHASE_CONNECTING:
    case RELAY_PHASE_SENDING:
    case RELAY_PHASE_WAITING_HEAD:
    case RELAY_PHASE_RELAYING:
        if (!drain || stream->upstream == NULL) {
            if (!stream->head_begun) relay_route_report(stream, RELAY_OUTCOME_NEUTRAL);
            loop_timer_stop(&stream->timer);
            relay_release_upstream(stream, false);
            relay_settle(stream, "client_closed", false);
            stream->phase = RELAY_PHASE_DONE;
            server_exchange_release(exchange);
            return;
        }
        {
            bool was_waiting_for_client = stream->phase == RELAY_PHASE_RELAYING && !stream->upstream->receiving &&
                                          !stream->upstream_done;
            stream->phase = RELAY_PHASE_DRAINING;
            relay_timer_start(stream, &stream->worker->drain_timers);
            stream->ready_count = 0;
            stream->pending_count = 0;
            relay_compact(stream);
            if (was_waiting_for_client) relay_read(stream);
        }
        return;
    case RELAY_PHASE_SETTLING:
    case RELAY_PHASE_WAITING_CONTROL:
        /* A reply is on its way from the store or the control thread and
         * names this slot: keep the exchange until it came (settle.c, and
         * portal_answer from worker.c's mailbox, release it). */
        return;
    default:
        /* Nothing upstream: the response was ours alone. */
        server_exchange_release(exchange);
        return;
    }
}

