/* The path of one request through the relay (one function per stage):
 *
 *   relay_on_request      route the path: models, health, chat, embeddings
 *   relay_chat            validate the body, find the model's route, plan the
 *                         upstream body as splices of the client's bytes
 *   relay_start_upstream  take a connection from this thread's pool
 *   relay_send_request    head + spliced body to the upstream
 *   relay_read            upstream bytes into this stream's buffer
 *   relay_on_response_head  status mapping, the client's response head
 *   relay_decode          de-chunk in place into payload spans; SSE events
 *                         found by the scanner, usage captured, the
 *                         usage-only event stripped when the client did not
 *                         ask for it
 *   relay_forward         spans go to the client as one chunk per send,
 *                         straight from the buffer they were decrypted into
 *   relay_finish          the upstream connection back to the pool, the
 *                         response ended (or the client's absence drained)
 *
 * Each stream slot belongs to one server exchange (same index) and has a
 * fixed buffer; at most one client send and one upstream receive are in
 * flight, and they alternate, which bounds memory per stream and gives
 * backpressure: a slow client stops upstream reads. */
#include "relay-internal.h"

#include "ringway/http-writer.h"
#include "ringway/json.h"
#include "ringway/loop.h"
#include "ringway/server.h"
#include "ringway/sse.h"
#include "ringway/upstream.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static void relay_read(relay_stream_t *stream);
static void relay_finish(relay_stream_t *stream);

/* ---- small helpers ------------------------------------------------------ */

static void relay_timer_start(relay_stream_t *stream, loop_timer_list_t *list) {
    loop_timer_start(&stream->worker->loop, list, &stream->timer);
}

/* Answers with an OpenAI error; the stream is done. A hold taken for this
 * request is released: an error costs nothing. */
void relay_respond_error(relay_stream_t *stream, uint16_t status, const char *type, const char *message,
                         const char *param, const char *code) {
    loop_timer_stop(&stream->timer);
    relay_bill(stream, "upstream_error", false);
    stream->phase = RELAY_PHASE_DONE;
    server_respond_error(stream->exchange, status, type, message, param, code);
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
    loop_timer_stop(&stream->timer);
    relay_release_upstream(stream, stream->upstream_done && stream->upstream_reusable);
    relay_bill(stream, "client_closed", false);
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
     * relay_forward runs when the store acknowledges (billing.c). */
    if (relay_bill(stream, "completed", true)) return;
    relay_forward(stream);
}

/* The upstream failed after the client's response began. */
static void relay_upstream_broken(relay_stream_t *stream, const char *reason) {
    loop_timer_stop(&stream->timer);
    relay_release_upstream(stream, false);
    relay_bill(stream, "upstream_broken", false);
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
    memcpy(stream->error_event, "data: ", 6);
    length = 6;
    length += http_write_error_body(stream->error_event + length, sizeof stream->error_event - length - 2, message,
                                    "upstream_error", NULL, "upstream_error");
    RW_ASSERT(length > 6);
    memcpy(stream->error_event + length, "\n\n", 2);
    length += 2;
    uint32_t count = 0;
    /* Complete events first; a partial event in progress is dropped. */
    for (uint32_t index = 0; index < stream->ready_count; index++) {
        stream->send_pieces[count++] =
            (struct iovec){.iov_base = stream->buffer + stream->ready[index].offset, .iov_len = stream->ready[index].length};
    }
    stream->ready_count = 0;
    stream->pending_count = 0;
    stream->send_pieces[count++] = (struct iovec){.iov_base = stream->error_event, .iov_len = length};
    server_send(stream->exchange, stream->send_pieces, count, true);
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
void relay_forward(relay_stream_t *stream) {
    uint32_t count = 0;
    for (uint32_t index = 0; index < stream->ready_count; index++) {
        stream->send_pieces[count++] =
            (struct iovec){.iov_base = stream->buffer + stream->ready[index].offset, .iov_len = stream->ready[index].length};
    }
    if (stream->upstream_done) {
        /* Anything still pending is an event the upstream never ended. */
        for (uint32_t index = 0; index < stream->pending_count; index++) {
            stream->send_pieces[count++] = (struct iovec){.iov_base = stream->buffer + stream->pending[index].offset,
                                                          .iov_len = stream->pending[index].length};
        }
        stream->pending_count = 0;
        stream->phase = RELAY_PHASE_DONE;
    }
    stream->ready_count = 0;
    for (uint32_t index = 0; index < count; index++) stream->forwarded_bytes += stream->send_pieces[index].iov_len;
    server_send(stream->exchange, stream->send_pieces, count, stream->upstream_done);
}

/* After a send: pending (unfinished event) bytes and undecoded raw bytes
 * move to the front of the buffer. Only an event split across reads is
 * ever copied. */
static void relay_compact(relay_stream_t *stream) {
    size_t write = 0;
    for (uint32_t index = 0; index < stream->pending_count; index++) {
        relay_span_t *span = &stream->pending[index];
        if (span->offset != write) memmove(stream->buffer + write, stream->buffer + span->offset, span->length);
        write += span->length;
    }
    stream->pending_count = 0;
    if (write > 0) stream->pending[stream->pending_count++] = (relay_span_t){.offset = 0, .length = (uint32_t)write};
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
            relay_add_span(stream->ready, &stream->ready_count, stream->pending[index].offset,
                           stream->pending[index].length);
        }
        stream->pending_count = 0;
    }
    stream->event_partly_forwarded = false;
}

static void relay_payload(relay_stream_t *stream, size_t offset, size_t length) {
    if (stream->mode == RELAY_MODE_PASS) {
        usage_scanner_feed(&stream->usage_scanner, stream->buffer + offset, length);
        relay_add_span(stream->ready, &stream->ready_count, (uint32_t)offset, (uint32_t)length);
        return;
    }
    size_t position = 0;
    while (position < length) {
        size_t consumed = 0;
        sse_event_t event;
        sse_result_t result =
            sse_scan(&stream->sse, stream->buffer + offset + position, length - position, &consumed, &event);
        relay_add_span(stream->pending, &stream->pending_count, (uint32_t)(offset + position), (uint32_t)consumed);
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
        if (stream->ready_count + stream->pending_count + 4 >= RELAY_SPANS_MAX) break;
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
    if (status >= 100 && status < 200) {
        /* An interim response: skip it and parse the real head after it. */
        memmove(stream->buffer, stream->buffer + response->head_length, stream->filled - response->head_length);
        stream->filled -= response->head_length;
        http_response_parser_init(&stream->response_parser, stream->worker->config->header_bytes_max);
        return true;
    }
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
        relay_respond_error(stream, 502, "upstream_error", message, NULL, "upstream_error");
        return false;
    }
    stream->phase = RELAY_PHASE_RELAYING;
    relay_timer_start(stream, &stream->pool->idle_gap_timers);
    bool event_stream = response->has_content_type &&
                        response->content_type.length >= 17 &&
                        http_span_equals_ignore_case(stream->buffer,
                                                     (http_span_t){response->content_type.offset, 17},
                                                     "text/event-stream");
    stream->mode = (status == 200 && event_stream) ? RELAY_MODE_SSE : RELAY_MODE_PASS;
    if (stream->mode == RELAY_MODE_SSE) {
        sse_scanner_init(&stream->sse);
        rw_copy_text(stream->content_type, sizeof stream->content_type, "text/event-stream");
    } else {
        usage_scanner_init(&stream->usage_scanner);
        if (response->has_content_type && response->content_type.length < sizeof stream->content_type) {
            memcpy(stream->content_type, stream->buffer + response->content_type.offset, response->content_type.length);
            stream->content_type[response->content_type.length] = '\0';
        } else {
            rw_copy_text(stream->content_type, sizeof stream->content_type, "application/json");
        }
    }
    size_t extra_length = 0;
    stream->extra_headers[0] = '\0';
    if (stream->mode == RELAY_MODE_SSE) {
        extra_length = (size_t)snprintf(stream->extra_headers, sizeof stream->extra_headers, "Cache-Control: no-cache\r\n");
    }
    relay_copy_header(stream, "Retry-After", stream->extra_headers, sizeof stream->extra_headers, &extra_length);
    int64_t content_length = -1;
    if (stream->mode == RELAY_MODE_PASS && !response->chunked && response->content_length >= 0) {
        content_length = response->content_length;
    }
    if (response->body_absent) content_length = 0;
    server_begin(stream->exchange, status, stream->content_type, content_length,
                 extra_length > 0 ? stream->extra_headers : NULL);
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

/* New response bytes at buffer[filled, filled + bytes). Returns true when
 * the caller should read more now; false when the stream waits for
 * something else (a client send) or is over. */
static bool relay_on_bytes(relay_stream_t *stream, size_t bytes) {
    stream->filled += bytes;
    if (stream->phase == RELAY_PHASE_WAITING_HEAD ||
        (stream->phase == RELAY_PHASE_DRAINING && !stream->head_begun && stream->response.status == 0)) {
        http_parse_result_t result =
            http_response_parse(&stream->response_parser, &stream->response, stream->buffer, stream->filled);
        if (result == HTTP_PARSE_ERROR || (result == HTTP_PARSE_AGAIN && stream->filled == stream->capacity)) {
            if (stream->client_gone) {
                relay_release_upstream(stream, false);
                relay_finish_drain(stream);
                return false;
            }
            relay_release_upstream(stream, false);
            relay_respond_error(stream, 502, "upstream_error", "the upstream sent an invalid HTTP response", NULL,
                                "upstream_error");
            return false;
        }
        if (result == HTTP_PARSE_AGAIN) return true;
        if (stream->client_gone) {
            /* Draining: note the framing only, nothing goes to the client. */
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
            if (stream->phase == RELAY_PHASE_WAITING_HEAD) return true; /* an interim 1xx was skipped */
        }
    } else if (stream->phase == RELAY_PHASE_RELAYING) {
        relay_timer_start(stream, &stream->pool->idle_gap_timers);
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
            stream->ready_count + stream->pending_count + 8 < RELAY_SPANS_MAX) {
            return true;
        }
        relay_forward(stream);
        return false;
    }
    if (stream->parsed < stream->filled && stream->pending_count + 4 >= RELAY_SPANS_MAX) {
        /* Spans are full of one unfinished event: flush it as it is. */
        for (uint32_t index = 0; index < stream->pending_count; index++) {
            relay_add_span(stream->ready, &stream->ready_count, stream->pending[index].offset,
                           stream->pending[index].length);
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
            relay_add_span(stream->ready, &stream->ready_count, stream->pending[index].offset,
                           stream->pending[index].length);
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
            relay_release_upstream(stream, false);
            relay_respond_error(stream, 502, "upstream_error", "the upstream closed the connection without answering",
                                NULL, "upstream_error");
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
    relay_timer_start(stream, &stream->pool->first_byte_timers);
    relay_read(stream);
}

static void relay_send_request(relay_stream_t *stream) {
    if (stream->phase != RELAY_PHASE_DRAINING) stream->phase = RELAY_PHASE_SENDING;
    upstream_send(stream->upstream, stream->request_pieces, stream->request_piece_count);
}

static void relay_on_upstream_ready(void *user) {
    relay_stream_t *stream = user;
    relay_send_request(stream);
}

static void relay_on_upstream_failed(void *user, const char *reason) {
    relay_stream_t *stream = user;
    stream->upstream = NULL; /* already closed by the upstream module */
    if (stream->phase == RELAY_PHASE_DRAINING) {
        relay_finish_drain(stream);
        return;
    }
    if (stream->phase == RELAY_PHASE_RELAYING) {
        relay_upstream_broken(stream, reason);
        return;
    }
    if (stream->filled == 0 && relay_retry(stream)) return;
    char message[256];
    snprintf(message, sizeof message, "the upstream '%s' is unavailable: %s", stream->pool->upstream->name, reason);
    relay_respond_error(stream, 502, "upstream_error", message, NULL, "upstream_error");
}

static const upstream_events_t relay_upstream_events = {
    .on_ready = relay_on_upstream_ready,
    .on_failed = relay_on_upstream_failed,
    .on_sent = relay_on_upstream_sent,
    .on_received = relay_on_upstream_received,
};

/* Takes a connection and sends the planned request. */
static void relay_start_upstream(relay_stream_t *stream) {
    bool reused = false;
    upstream_connection_t *connection = upstream_acquire(stream->pool, &relay_upstream_events, stream, &reused);
    if (connection == NULL) {
        relay_respond_error(stream, 503, "server_error", "no upstream connection is free on this relay thread", NULL,
                            "server_busy");
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
    relay_start_upstream(stream);
    return true;
}

/* ---- planning the upstream request ------------------------------------ */

static void relay_plan_request(relay_stream_t *stream, const char *endpoint, relay_edit_t *edits, uint32_t edit_count,
                               bool wants_event_stream) {
    server_exchange_t *exchange = stream->exchange;
    const config_upstream_t *upstream = stream->pool->upstream;
    const uint8_t *body = server_body(exchange);
    size_t body_length = exchange->body_length;
    /* Edits in body order (insertion sort: at most RELAY_EDITS_MAX). */
    RW_ASSERT(edit_count <= RELAY_EDITS_MAX);
    for (uint32_t index = 1; index < edit_count; index++) {
        for (uint32_t at = index; at > 0 && edits[at].offset < edits[at - 1].offset; at--) {
            relay_edit_t swap = edits[at];
            edits[at] = edits[at - 1];
            edits[at - 1] = swap;
        }
    }
    size_t new_length = body_length;
    for (uint32_t index = 0; index < edit_count; index++) new_length = new_length - edits[index].removed + edits[index].length;
    bool default_port = (upstream->tls && upstream->port == 443) || (!upstream->tls && upstream->port == 80);
    char port_text[8] = "";
    if (!default_port) snprintf(port_text, sizeof port_text, ":%u", (unsigned)upstream->port);
    int head_length = snprintf((char *)stream->request_head, sizeof stream->request_head,
                               "POST %s%s HTTP/1.1\r\nHost: %s%s\r\n%s%s%sContent-Type: application/json\r\n"
                               "Accept: %s\r\nAccept-Encoding: identity\r\nUser-Agent: ringway/%s\r\n"
                               "Content-Length: %zu\r\n\r\n",
                               upstream->base_path, endpoint, upstream->host, port_text,
                               upstream->has_api_key ? "Authorization: Bearer " : "",
                               upstream->has_api_key ? upstream->api_key : "", upstream->has_api_key ? "\r\n" : "",
                               wants_event_stream ? "text/event-stream" : "application/json", RW_VERSION, new_length);
    RW_ASSERT(head_length > 0 && (size_t)head_length < sizeof stream->request_head);
    uint32_t count = 0;
    stream->request_pieces[count++] = (struct iovec){.iov_base = stream->request_head, .iov_len = (size_t)head_length};
    size_t position = 0;
    for (uint32_t index = 0; index < edit_count; index++) {
        RW_ASSERT(edits[index].offset >= position);
        stream->request_pieces[count++] =
            (struct iovec){.iov_base = (void *)(body + position), .iov_len = edits[index].offset - position};
        stream->request_pieces[count++] = (struct iovec){.iov_base = (void *)edits[index].text, .iov_len = edits[index].length};
        position = edits[index].offset + edits[index].removed;
    }
    stream->request_pieces[count++] = (struct iovec){.iov_base = (void *)(body + position), .iov_len = body_length - position};
    stream->request_piece_count = count;
}

static bool relay_object_is_empty(const uint8_t *body, json_span_t value) {
    for (uint32_t index = 1; index + 1 < value.length; index++) {
        uint8_t byte = body[value.offset + index];
        if (byte != ' ' && byte != '\t' && byte != '\r' && byte != '\n') return false;
    }
    return true;
}

static void relay_not_found_model(relay_stream_t *stream, const uint8_t *body, json_span_t value) {
    char message[300];
    int name_length = (int)RW_MIN(value.length >= 2 ? value.length - 2 : 0, 160u);
    snprintf(message, sizeof message, "The model `%.*s` does not exist or you do not have access to it.", name_length,
             (const char *)body + value.offset + 1);
    relay_respond_error(stream, 404, "invalid_request_error", message, "model", "model_not_found");
}

/* POST /v1/chat/completions: validate, route, plan the splices, go. */
static void relay_chat(relay_stream_t *stream) {
    server_exchange_t *exchange = stream->exchange;
    const uint8_t *body = server_body(exchange);
    json_chat_request_t request;
    json_error_t error;
    if (json_scan_chat_request(body, exchange->body_length, &request, &error) != 0) {
        relay_respond_error(stream, 400, "invalid_request_error", error.message, error.param, NULL);
        return;
    }
    const router_route_t *route = router_find(stream->worker->shared->router, body + request.model.value.offset,
                                              request.model.value.length);
    if (route == NULL) {
        relay_not_found_model(stream, body, request.model.value);
        return;
    }
    stream->route = route;
    stream->pool = &stream->worker->pools[route->upstream_index];
    stream->client_streaming = request.stream_value;
    stream->client_wants_usage = request.include_usage.present && request.include_usage_value;
    uint64_t completions = request.n.present && request.n.type == JSON_TYPE_NUMBER && request.n_value > 1
                               ? request.n_value
                               : 1;
    if (!relay_admit(stream, &request, completions)) return;

    relay_edit_t edits[RELAY_EDITS_MAX];
    uint32_t edit_count = 0;
    edits[edit_count++] = (relay_edit_t){.offset = request.model.value.offset,
                                         .removed = request.model.value.length,
                                         .text = route->upstream_model_json,
                                         .length = (uint32_t)route->upstream_model_json_length};
    if (stream->client_streaming && !stream->client_wants_usage) {
        /* Always ask for usage: billing needs it; the usage-only event is
         * stripped again on the way back. */
        static const char insert_member[] = "\"stream_options\":{\"include_usage\":true},";
        static const char whole_object[] = "{\"include_usage\":true}";
        static const char member_with_comma[] = "\"include_usage\":true,";
        static const char true_text[] = "true";
        if (!request.stream_options.present) {
            edits[edit_count++] = (relay_edit_t){.offset = request.members_offset, .removed = 0,
                                                 .text = insert_member, .length = sizeof insert_member - 1};
        } else if (request.stream_options.type != JSON_TYPE_OBJECT) {
            edits[edit_count++] = (relay_edit_t){.offset = request.stream_options.value.offset,
                                                 .removed = request.stream_options.value.length,
                                                 .text = whole_object, .length = sizeof whole_object - 1};
        } else if (request.include_usage.present) {
            edits[edit_count++] = (relay_edit_t){.offset = request.include_usage.value.offset,
                                                 .removed = request.include_usage.value.length,
                                                 .text = true_text, .length = sizeof true_text - 1};
        } else {
            bool empty = relay_object_is_empty(body, request.stream_options.value);
            edits[edit_count++] = (relay_edit_t){.offset = request.stream_options.value.offset + 1, .removed = 0,
                                                 .text = member_with_comma,
                                                 .length = (uint32_t)(sizeof member_with_comma - 1 - (empty ? 1 : 0))};
        }
    }
    if (stream->max_tokens_member[0] != '\0') {
        edits[edit_count++] = (relay_edit_t){.offset = stream->max_tokens_offset,
                                             .removed = stream->max_tokens_removed,
                                             .text = stream->max_tokens_member,
                                             .length = (uint32_t)strlen(stream->max_tokens_member)};
    }
    relay_plan_request(stream, "/chat/completions", edits, edit_count, stream->client_streaming);
    relay_start_upstream(stream);
}

/* POST /v1/embeddings: the same path with one splice (the model). */
static void relay_embeddings(relay_stream_t *stream) {
    server_exchange_t *exchange = stream->exchange;
    const uint8_t *body = server_body(exchange);
    json_error_t error;
    if (json_validate(body, exchange->body_length, &error) != 0) {
        relay_respond_error(stream, 400, "invalid_request_error", error.message, error.param, NULL);
        return;
    }
    json_span_t model;
    json_type_t model_type = JSON_TYPE_NONE;
    json_span_t input;
    json_type_t input_type = JSON_TYPE_NONE;
    if (body[0] != '{' && json_object_find(body, exchange->body_length, "model", &model, &model_type) != 0) {
        model_type = JSON_TYPE_NONE;
    }
    if (json_object_find(body, exchange->body_length, "model", &model, &model_type) != 0 ||
        model_type != JSON_TYPE_STRING || model.length <= 2) {
        relay_respond_error(stream, 400, "invalid_request_error", "you must provide a model parameter", "model", NULL);
        return;
    }
    if (json_object_find(body, exchange->body_length, "input", &input, &input_type) != 0 ||
        (input_type != JSON_TYPE_STRING && input_type != JSON_TYPE_ARRAY)) {
        relay_respond_error(stream, 400, "invalid_request_error", "'input' must be a string or an array", "input",
                            NULL);
        return;
    }
    const router_route_t *route = router_find(stream->worker->shared->router, body + model.offset, model.length);
    if (route == NULL) {
        relay_not_found_model(stream, body, model);
        return;
    }
    stream->route = route;
    stream->pool = &stream->worker->pools[route->upstream_index];
    if (!relay_admit(stream, NULL, 1)) return;
    relay_edit_t edit = {.offset = model.offset, .removed = model.length, .text = route->upstream_model_json,
                         .length = (uint32_t)route->upstream_model_json_length};
    relay_plan_request(stream, "/embeddings", &edit, 1, false);
    relay_start_upstream(stream);
}

/* ---- the server's handler callbacks --------------------------------------- */

static void relay_on_timer(loop_timer_t *timer);

static void relay_stream_reset(relay_stream_t *stream, server_exchange_t *exchange) {
    uint8_t *buffer = stream->buffer;
    size_t capacity = stream->capacity;
    struct relay_worker *worker = stream->worker;
    loop_timer_stop(&stream->timer);
    memset(stream, 0, offsetof(relay_stream_t, ready));
    stream->buffer = buffer;
    stream->capacity = capacity;
    stream->worker = worker;
    stream->exchange = exchange;
    stream->ready_count = 0;
    stream->pending_count = 0;
    loop_timer_init(&stream->timer, relay_on_timer, stream);
    RW_ASSERT(!stream->held);
    stream->generation++;
    stream->route = NULL;
    stream->user = NULL;
    stream->key = NULL;
    stream->hold_micros = 0;
    stream->started_ms = loop_now_ms(&worker->loop);
    stream->content_events = 0;
    stream->forwarded_bytes = 0;
    stream->max_tokens_member[0] = '\0';
    http_response_parser_init(&stream->response_parser, worker->config->header_bytes_max);
}

static void relay_on_timer(loop_timer_t *timer) {
    relay_stream_t *stream = timer->owner;
    switch (stream->phase) {
    case RELAY_PHASE_WAITING_HEAD:
    case RELAY_PHASE_SENDING:
        relay_release_upstream(stream, false);
        relay_respond_error(stream, 504, "upstream_error", "the upstream did not answer in time", NULL,
                            "upstream_timeout");
        break;
    case RELAY_PHASE_RELAYING:
        relay_upstream_broken(stream, "the upstream stalled mid-response");
        break;
    case RELAY_PHASE_DRAINING:
        relay_finish_drain(stream);
        break;
    default:
        break;
    }
}

static bool relay_path_is(const uint8_t *path, size_t length, const char *text) {
    return rw_bytes_equal_text(path, length, text);
}

static void relay_on_request(server_exchange_t *exchange) {
    relay_worker_t *worker = server_handler_context(exchange->server);
    relay_stream_t *stream = &worker->streams[server_exchange_index(exchange)];
    relay_stream_reset(stream, exchange);
    exchange->handler_state = stream;

    const http_request_t *request = &exchange->request;
    const uint8_t *path = exchange->buffer + request->path.offset;
    size_t path_length = request->path.length;
    if (relay_path_is(path, path_length, "/healthz")) {
        stream->phase = RELAY_PHASE_DONE;
        server_respond(exchange, 200, "text/plain", "ok", 2, NULL);
        return;
    }
    /* Every endpoint lives under /v1 and /api/v1. */
    const uint8_t *rest = NULL;
    size_t rest_length = 0;
    if (path_length >= 4 && memcmp(path, "/v1/", 4) == 0) {
        rest = path + 3;
        rest_length = path_length - 3;
    } else if (path_length >= 8 && memcmp(path, "/api/v1/", 8) == 0) {
        rest = path + 7;
        rest_length = path_length - 7;
    }
    const char *method_needed = NULL;
    if (rest != NULL && relay_path_is(rest, rest_length, "/models")) {
        if (request->method == HTTP_METHOD_GET) {
            stream->phase = RELAY_PHASE_DONE;
            const router_t *router = worker->shared->router;
            server_respond(exchange, 200, "application/json", router->models_json, router->models_json_length, NULL);
            return;
        }
        method_needed = "GET";
    } else if (rest != NULL && relay_path_is(rest, rest_length, "/chat/completions")) {
        if (request->method == HTTP_METHOD_POST) {
            /* The key first: a caller without one learns nothing else. */
            if (relay_authenticate_key(stream)) relay_chat(stream);
            return;
        }
        method_needed = "POST";
    } else if (rest != NULL && relay_path_is(rest, rest_length, "/embeddings")) {
        if (request->method == HTTP_METHOD_POST) {
            if (relay_authenticate_key(stream)) relay_embeddings(stream);
            return;
        }
        method_needed = "POST";
    } else if (relay_accounts_route(stream, path, path_length)) {
        return;
    }
    char message[300];
    int method_length = (int)RW_MIN(request->method_name.length, 16u);
    int shown_length = (int)RW_MIN(path_length, 200u);
    if (method_needed != NULL) {
        snprintf(message, sizeof message, "Method %.*s is not allowed on %.*s; use %s.", method_length,
                 (const char *)exchange->buffer + request->method_name.offset, shown_length, (const char *)path,
                 method_needed);
        relay_respond_error(stream, 405, "invalid_request_error", message, NULL, "method_not_allowed");
        return;
    }
    snprintf(message, sizeof message, "Invalid URL (%.*s %.*s)", method_length,
             (const char *)exchange->buffer + request->method_name.offset, shown_length, (const char *)path);
    relay_respond_error(stream, 404, "invalid_request_error", message, NULL, "unknown_url");
}

static void relay_on_sent(server_exchange_t *exchange) {
    relay_stream_t *stream = exchange->handler_state;
    RW_ASSERT(stream->phase == RELAY_PHASE_RELAYING);
    relay_compact(stream);
    relay_read(stream);
}

static void relay_on_abort(server_exchange_t *exchange) {
    relay_stream_t *stream = exchange->handler_state;
    stream->client_gone = true;
    bool drain = stream->worker->config->client_disconnect == CONFIG_DISCONNECT_DRAIN;
    switch (stream->phase) {
    case RELAY_PHASE_CONNECTING:
    case RELAY_PHASE_SENDING:
    case RELAY_PHASE_WAITING_HEAD:
    case RELAY_PHASE_RELAYING:
        if (!drain || stream->upstream == NULL) {
            loop_timer_stop(&stream->timer);
            relay_release_upstream(stream, false);
            relay_bill(stream, "client_closed", false);
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
         * names this slot: keep the exchange until it came (billing.c,
         * accounts.c release it). */
        return;
    default:
        /* Nothing upstream: the response was ours alone. */
        server_exchange_release(exchange);
        return;
    }
}

/* ---- the worker ----------------------------------------------------------- */

static void relay_worker_tick(loop_t *loop) {
    relay_worker_t *worker = (relay_worker_t *)((uint8_t *)loop - offsetof(relay_worker_t, loop));
    if (worker->server_tick != NULL) worker->server_tick(loop);
    relay_retry_settlements(worker);
    if (atomic_load_explicit(&worker->stop_requested, memory_order_relaxed)) loop->stopping = true;
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
    if (loop_init(&worker->loop, 4096, RELAY_RECEIVE_BUFFERS, 16 * 1024, error, error_size) != 0) return NULL;
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
        loop_timer_init(&stream->timer, relay_on_timer, stream);
    }
    for (uint32_t upstream = 0; upstream < config->upstream_count; upstream++) {
        if (upstream_pool_init(&worker->pools[upstream], &worker->loop, &config->upstreams[upstream],
                               shared->upstream_tls[upstream], config->upstream_connections_per_thread,
                               config->upstream_keepalive_ms, error, error_size) != 0) {
            return NULL;
        }
    }
    loop_timer_list_init(&worker->loop, &worker->drain_timers, config->drain_ms);
    server_config_t server_config = {
        .host = config->listen_host,
        .port = config->listen_port,
        .connections_max = config->connections_per_thread,
        .exchanges_max = exchanges,
        .request_buffer_bytes = config->request_buffer_bytes,
        .large_bodies_max = config->large_bodies_per_thread,
        .body_bytes_max = config->body_bytes_max,
        .head_bytes_max = config->header_bytes_max,
        .header_timeout_ms = config->header_ms,
        .body_timeout_ms = config->body_ms,
        .keepalive_timeout_ms = config->keepalive_idle_ms,
        .tls = NULL,
        .handlers = {.on_request = relay_on_request, .on_sent = relay_on_sent, .on_abort = relay_on_abort},
        .handler_context = worker,
        .thread_index = index,
        .instance = shared->instance,
    };
    if (server_init(&worker->server, &worker->loop, &server_config, error, error_size) != 0) return NULL;
    worker->server_tick = worker->loop.on_tick;
    worker->loop.on_tick = relay_worker_tick;
    worker->mailbox = (loop_operation_t){.callback = relay_on_mailbox, .owner = worker};
    worker->store_retries = calloc(RELAY_STORE_RETRIES_MAX, sizeof(store_message_t));
    if (worker->store_retries == NULL) {
        snprintf(error, error_size, "out of memory for the store retry ring");
        return NULL;
    }
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
