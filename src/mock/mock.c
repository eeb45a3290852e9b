/* ringway-mock: an OpenAI-compatible upstream for tests and benchmarks, on
 * the same loop and server code as the relay. Behaviour is shaped per
 * request by directives "k=v;k=v" from the x-mock header, a top-level "mock"
 * string in the body, a ":k=v:k=v" suffix of the model name, or the same
 * suffix of the bearer key (stripped before the key is checked: a fault
 * per upstream key); see tests/integration and the README for the list. Responses are formatted
 * into per-exchange scratch memory; long content is sent from one static
 * run of 'x' bytes, so the mock stays cheap next to the relay it feeds. */
#include "ringway/mock.h"

#include "ringway/http-writer.h"
#include "ringway/json.h"
#include "ringway/server.h"
#include "ringway/text.h"

#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum {
    MOCK_SCRATCH_BYTES = 512 * 1024,
    MOCK_FILLER_BYTES = 64 * 1024,
    MOCK_MODEL_BYTES = 256,
    MOCK_THREADS_MAX = 64,
    MOCK_EXCHANGES = 4096,
};

typedef struct mock_options {
    const char *host;
    uint16_t port;
    const char *certificate_file;
    const char *key_file;
    const char *api_key;
    uint32_t threads;
    uint32_t idle_ms; /* idle keep-alive connections are closed after this */
} mock_options_t;

typedef struct mock_directives {
    uint32_t chunks;
    uint32_t gap_ms;
    uint32_t first_byte_ms;
    uint32_t status;
    int64_t disconnect_after;
    uint32_t line_bytes;
    uint32_t split;
    bool usage_on_last;
    bool crlf;
    bool cr;
    bool comments;
    bool echo;
    bool echo_key; /* a completion's content is the bearer key it came with */
    bool interim;
    /* `status` applies to this share of requests only (0 = all), */
    uint32_t fail_percent;
    /* ... and only while this file exists ("" = always). */
    char fail_file[128];
} mock_directives_t;

typedef enum mock_phase {
    MOCK_PHASE_ROLE,
    MOCK_PHASE_CONTENT,
    MOCK_PHASE_USAGE,
    MOCK_PHASE_DONE,
    MOCK_PHASE_END,
} mock_phase_t;

typedef struct mock_stream {
    server_exchange_t *exchange;
    struct mock_worker *worker;
    mock_directives_t directives;
    loop_operation_t sleep_operation;
    struct __kernel_timespec sleep_duration;
    bool streaming;
    bool include_usage;
    bool responded;
    bool aborted;
    bool paced; /* the gap before the current content chunk has passed */
    mock_phase_t phase;
    uint32_t content_index;
    int64_t prompt_tokens;
    uint64_t serial;
    char model[MOCK_MODEL_BYTES];
    char key[MOCK_MODEL_BYTES]; /* the bearer key, without a directive suffix */
    /* An event being sent in split pieces: [split_offset, split_length) of scratch. */
    size_t split_offset;
    size_t split_length;
    uint8_t *scratch;
} mock_stream_t;

typedef struct mock_worker {
    loop_t loop;
    server_t *server;
    const mock_options_t *options;
    mock_stream_t *streams; /* one per server exchange, by server_exchange_index */
    uint8_t *scratch_memory;
    uint32_t index;
    uint64_t serial;
    pthread_t thread;
} mock_worker_t;

static uint8_t mock_filler[MOCK_FILLER_BYTES];
static tls_context_t *mock_tls;
static atomic_uint mock_workers_ready;
static atomic_ullong mock_connections_total;
static atomic_ullong mock_requests_total;

/* ---- directives -------------------------------------------------------- */

static bool mock_key_is(const char *key, size_t key_length, const char *name) {
    return key_length == strlen(name) && memcmp(key, name, key_length) == 0;
}

/* Applies "k=v" pairs separated by `separator`; unknown keys are ignored so
 * tests can annotate freely. */
static void mock_parse_directives(mock_directives_t *directives, const char *text, size_t length, char separator) {
    size_t position = 0;
    while (position < length) {
        size_t end = position;
        while (end < length && text[end] != separator) end++;
        const char *pair = text + position;
        size_t pair_length = end - position;
        const char *equals = memchr(pair, '=', pair_length);
        if (equals != NULL) {
            size_t key_length = (size_t)(equals - pair);
            uint64_t value = 0;
            for (const char *digit = equals + 1; digit < pair + pair_length; digit++) {
                if (*digit < '0' || *digit > '9') break;
                if (value < 100000000000ull) value = value * 10 + (uint64_t)(*digit - '0');
            }
            if (mock_key_is(pair, key_length, "chunks")) directives->chunks = (uint32_t)RW_MIN(value, 1000000u);
            else if (mock_key_is(pair, key_length, "gap_ms")) directives->gap_ms = (uint32_t)RW_MIN(value, 600000u);
            else if (mock_key_is(pair, key_length, "first_byte_ms"))
                directives->first_byte_ms = (uint32_t)RW_MIN(value, 600000u);
            else if (mock_key_is(pair, key_length, "status")) directives->status = (uint32_t)value;
            else if (mock_key_is(pair, key_length, "disconnect_after")) directives->disconnect_after = (int64_t)value;
            else if (mock_key_is(pair, key_length, "line_bytes"))
                directives->line_bytes = (uint32_t)RW_MIN(value, 64u * 1024 * 1024);
            else if (mock_key_is(pair, key_length, "split")) directives->split = (uint32_t)value;
            else if (mock_key_is(pair, key_length, "usage_on_last")) directives->usage_on_last = value != 0;
            else if (mock_key_is(pair, key_length, "crlf")) directives->crlf = value != 0;
            else if (mock_key_is(pair, key_length, "cr")) directives->cr = value != 0;
            else if (mock_key_is(pair, key_length, "comments")) directives->comments = value != 0;
            else if (mock_key_is(pair, key_length, "echo")) directives->echo = value != 0;
            else if (mock_key_is(pair, key_length, "interim")) directives->interim = value != 0;
            else if (mock_key_is(pair, key_length, "echo_key")) directives->echo_key = value != 0;
            else if (mock_key_is(pair, key_length, "fail_percent"))
                directives->fail_percent = (uint32_t)RW_MIN(value, 100u);
            else if (mock_key_is(pair, key_length, "fail_file")) {
                size_t file_length = RW_MIN(pair_length - key_length - 1, sizeof directives->fail_file - 1);
                memcpy(directives->fail_file, equals + 1, file_length);
                directives->fail_file[file_length] = '\0';
            }
        }
        position = end + 1;
    }
}

/* ---- formatting -------------------------------------------------------- */

/* The mock's answers are sized to fit its scratch buffer; one that does not
 * is a bug in the mock, so every append asserts. */
static void mock_append(text_buffer_t *text, const void *bytes, size_t length) {
    text_buffer_append(text, bytes, length);
    RW_ASSERT(!text->overflow);
}

static void mock_append_text(text_buffer_t *text, const char *value) { mock_append(text, value, strlen(value)); }

static void mock_append_format(text_buffer_t *text, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void mock_append_format(text_buffer_t *text, const char *format, ...) {
    va_list arguments;
    va_start(arguments, format);
    text_buffer_vformat(text, format, arguments);
    va_end(arguments);
    RW_ASSERT(!text->overflow);
}

static const char *mock_line_end(const mock_stream_t *stream) {
    if (stream->directives.crlf) return "\r\n";
    if (stream->directives.cr) return "\r";
    return "\n";
}

static void mock_append_echo(text_buffer_t *text, const mock_stream_t *stream) {
    const server_exchange_t *exchange = stream->exchange;
    /* Worst case 6 bytes per input byte; keep 4 KiB for the rest. */
    size_t room = text_buffer_room(text) - 4096;
    size_t length = RW_MIN(exchange->body_length, room / 6);
    text_buffer_json_escaped(text, (const char *)server_body(exchange), length);
    RW_ASSERT(!text->overflow);
}

static void mock_append_usage(text_buffer_t *text, const mock_stream_t *stream) {
    int64_t completion = stream->directives.chunks;
    mock_append_format(text,
                       "\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld}",
                       (long long)stream->prompt_tokens, (long long)completion,
                       (long long)(stream->prompt_tokens + completion));
}

static void mock_append_chunk_prefix(text_buffer_t *text, const mock_stream_t *stream) {
    if (stream->directives.comments) {
        mock_append_text(text, ": keep-alive");
        mock_append_text(text, mock_line_end(stream));
        mock_append_text(text, mock_line_end(stream));
    }
    mock_append_format(text,
                       "data: {\"id\":\"chatcmpl-mock-%llu\",\"object\":\"chat.completion.chunk\",\"created\":%lld,"
                       "\"model\":\"%s\",\"choices\":[",
                       (unsigned long long)stream->serial, (long long)time(NULL), stream->model);
}

static void mock_append_event_end(text_buffer_t *text, const mock_stream_t *stream) {
    mock_append_text(text, "}");
    mock_append_text(text, mock_line_end(stream));
    mock_append_text(text, mock_line_end(stream));
}

/* ---- responses --------------------------------------------------------- */


static void mock_respond_json(mock_stream_t *stream, uint16_t status, text_buffer_t *text) {
    stream->responded = true;
    server_respond(stream->exchange, status, "application/json", text->bytes, text->length, NULL);
}

static void mock_send_pieces(mock_stream_t *stream, const struct iovec *pieces, uint32_t count, bool last) {
    server_send(stream->exchange, pieces, count, last);
}

static void mock_respond_completion(mock_stream_t *stream) {
    text_buffer_t text = text_buffer_over(stream->scratch, MOCK_SCRATCH_BYTES);
    mock_append_format(&text,
                       "{\"id\":\"chatcmpl-mock-%llu\",\"object\":\"chat.completion\",\"created\":%lld,"
                       "\"model\":\"%s\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                       "\"content\":\"",
                       (unsigned long long)stream->serial, (long long)time(NULL), stream->model);
    if (stream->directives.echo_key) {
        mock_append_text(&text, stream->key);
    } else if (stream->directives.echo) {
        mock_append_echo(&text, stream);
    } else {
        for (uint32_t index = 0; index < stream->directives.chunks; index++) {
            if (text.capacity - text.length < 64) break;
            mock_append_format(&text, "tok%u ", index);
        }
    }
    mock_append_text(&text, "\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}],");
    mock_append_usage(&text, stream);
    mock_append_text(&text, "}");
    mock_respond_json(stream, 200, &text);
}

static void mock_respond_error(mock_stream_t *stream, uint16_t status, const char *message, const char *code) {
    stream->responded = true;
    server_respond_error(stream->exchange, status, "mock_error", message, NULL, code);
}

/* Sends the next event of a stream (or the next split piece of it). */
static void mock_stream_next(mock_stream_t *stream);

static void mock_on_sleep(loop_operation_t *operation, int32_t result, uint32_t flags) {
    mock_stream_t *stream = operation->owner;
    if (stream->aborted) {
        server_exchange_release(stream->exchange);
        return;
    }
    mock_stream_next(stream);
}

static void mock_sleep(mock_stream_t *stream, uint32_t milliseconds) {
    stream->sleep_duration.tv_sec = milliseconds / 1000;
    stream->sleep_duration.tv_nsec = (long long)(milliseconds % 1000) * 1000000;
    loop_sleep(&stream->worker->loop, &stream->sleep_operation, &stream->sleep_duration);
}

static void mock_stream_begin(mock_stream_t *stream) {
    stream->responded = true;
    server_begin(stream->exchange, 200, "text/event-stream", -1, "Cache-Control: no-cache\r\n");
    stream->phase = MOCK_PHASE_ROLE;
    mock_stream_next(stream);
}

/* Formats the content delta of chunk `index` and sends it. Long deltas
 * point at the static filler so no event is copied. */
static void mock_send_content(mock_stream_t *stream) {
    uint32_t index = stream->content_index;
    bool last_content = index + 1 == stream->directives.chunks;
    text_buffer_t text = text_buffer_over(stream->scratch, MOCK_SCRATCH_BYTES);
    mock_append_chunk_prefix(&text, stream);
    mock_append_text(&text, "{\"index\":0,\"delta\":{\"content\":\"");
    size_t prefix_length = text.length;
    struct iovec pieces[SERVER_IOVECS_MAX - 8];
    uint32_t count = 0;
    size_t filler_remaining = 0;
    if (stream->directives.echo && index == 0) {
        mock_append_echo(&text, stream);
        prefix_length = text.length;
    } else if (stream->directives.line_bytes > 0) {
        filler_remaining = stream->directives.line_bytes;
    } else {
        mock_append_format(&text, "tok%u ", index);
        prefix_length = text.length;
    }
    size_t suffix_start = text.length;
    mock_append_format(&text, "\"},\"finish_reason\":%s}]", last_content ? "\"stop\"" : "null");
    if (last_content && stream->include_usage && stream->directives.usage_on_last) {
        mock_append_text(&text, ",");
        mock_append_usage(&text, stream);
    }
    mock_append_event_end(&text, stream);
    if (stream->directives.split > 0 || filler_remaining == 0) {
        /* Contiguous event text (filler copied in when splitting). */
        if (filler_remaining > 0) {
            size_t suffix_length = text.length - suffix_start;
            RW_ASSERT(suffix_start + filler_remaining + suffix_length <= MOCK_SCRATCH_BYTES);
            memmove(text.bytes + suffix_start + filler_remaining, text.bytes + suffix_start, suffix_length);
            memset(text.bytes + suffix_start, 'x', filler_remaining);
            text.length += filler_remaining;
        }
        stream->split_offset = 0;
        stream->split_length = text.length;
        stream->content_index++;
        mock_stream_next(stream);
        return;
    }
    pieces[count++] = (struct iovec){.iov_base = text.bytes, .iov_len = prefix_length};
    while (filler_remaining > 0) {
        RW_ASSERT(count < RW_ARRAY_LENGTH(pieces) - 1);
        size_t step = RW_MIN(filler_remaining, (size_t)MOCK_FILLER_BYTES);
        pieces[count++] = (struct iovec){.iov_base = mock_filler, .iov_len = step};
        filler_remaining -= step;
    }
    pieces[count++] = (struct iovec){.iov_base = text.bytes + suffix_start, .iov_len = text.length - suffix_start};
    stream->content_index++;
    mock_send_pieces(stream, pieces, count, false);
}

static void mock_stream_next(mock_stream_t *stream) {
    /* A pending event being written in split pieces goes first. */
    if (stream->split_length > 0) {
        size_t step = stream->split_length - stream->split_offset;
        if (stream->directives.split > 0) step = RW_MIN(step, (size_t)stream->directives.split);
        struct iovec piece = {.iov_base = stream->scratch + stream->split_offset, .iov_len = step};
        stream->split_offset += step;
        if (stream->split_offset == stream->split_length) {
            stream->split_offset = 0;
            stream->split_length = 0;
        }
        bool last = stream->phase == MOCK_PHASE_END && stream->split_length == 0;
        mock_send_pieces(stream, &piece, 1, last);
        return;
    }
    text_buffer_t text = text_buffer_over(stream->scratch, MOCK_SCRATCH_BYTES);
    switch (stream->phase) {
    case MOCK_PHASE_ROLE:
        mock_append_chunk_prefix(&text, stream);
        mock_append_text(&text, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                                "\"logprobs\":null,\"finish_reason\":null}]");
        mock_append_event_end(&text, stream);
        stream->phase = stream->directives.chunks > 0 ? MOCK_PHASE_CONTENT : MOCK_PHASE_USAGE;
        break;
    case MOCK_PHASE_CONTENT:
        if (stream->directives.disconnect_after >= 0 &&
            stream->content_index == (uint64_t)stream->directives.disconnect_after) {
            stream->aborted = true;
            server_exchange_abort(stream->exchange);
            return;
        }
        if (stream->directives.gap_ms > 0 && stream->content_index > 0 && !stream->paced) {
            /* Pace: sleep first, then come back to send this chunk. */
            stream->paced = true;
            mock_sleep(stream, stream->directives.gap_ms);
            return;
        }
        stream->paced = false;
        if (stream->content_index + 1 >= stream->directives.chunks) {
            stream->phase = stream->include_usage && !stream->directives.usage_on_last ? MOCK_PHASE_USAGE
                                                                                        : MOCK_PHASE_DONE;
        }
        mock_send_content(stream);
        return;
    case MOCK_PHASE_USAGE:
        if (!stream->include_usage) {
            stream->phase = MOCK_PHASE_DONE;
            mock_stream_next(stream);
            return;
        }
        mock_append_chunk_prefix(&text, stream);
        mock_append_text(&text, "],");
        mock_append_usage(&text, stream);
        mock_append_event_end(&text, stream);
        stream->phase = MOCK_PHASE_DONE;
        break;
    case MOCK_PHASE_DONE:
        mock_append_text(&text, "data: [DONE]");
        mock_append_text(&text, mock_line_end(stream));
        mock_append_text(&text, mock_line_end(stream));
        stream->phase = MOCK_PHASE_END;
        break;
    case MOCK_PHASE_END:
        mock_send_pieces(stream, NULL, 0, true);
        return;
    }
    stream->split_offset = 0;
    stream->split_length = text.length;
    mock_stream_next(stream);
}

/* ---- requests ---------------------------------------------------------- */

static bool mock_path_is(const server_exchange_t *exchange, const char *path) {
    const http_request_t *request = &exchange->request;
    return rw_bytes_equal_text(exchange->buffer + request->path.offset, request->path.length, path);
}

/* Reads the bearer key (its ":k=v" suffix into the directives) and checks
 * it against --api-key, when one was given. */
static bool mock_authorized(mock_stream_t *stream) {
    const server_exchange_t *exchange = stream->exchange;
    const char *expected = stream->worker->options->api_key;
    const http_request_t *request = &exchange->request;
    const uint8_t *value = exchange->buffer + request->authorization.offset;
    size_t length = request->has_authorization ? request->authorization.length : 0;
    if (length > 7 && memcmp(value, "Bearer ", 7) == 0) {
        const uint8_t *key = value + 7;
        size_t key_length = length - 7;
        const uint8_t *colon = memchr(key, ':', key_length);
        if (colon != NULL) {
            mock_parse_directives(&stream->directives, (const char *)colon + 1, key_length - (size_t)(colon - key) - 1,
                                  ':');
            key_length = (size_t)(colon - key);
        }
        key_length = RW_MIN(key_length, sizeof stream->key - 1);
        memcpy(stream->key, key, key_length);
        stream->key[key_length] = '\0';
    }
    if (expected == NULL) return true;
    return strcmp(stream->key, expected) == 0;
}

/* Whether the status directive applies to this request: to every one, or
 * to fail_percent of them (spread over the serial numbers), and only while
 * fail_file exists when one is named. */
static bool mock_fault_applies(const mock_stream_t *stream) {
    const mock_directives_t *directives = &stream->directives;
    if (directives->fail_file[0] != '\0' && access(directives->fail_file, F_OK) != 0) return false;
    if (directives->fail_percent > 0 && (stream->serial * 37) % 100 >= directives->fail_percent) return false;
    return true;
}

static void mock_copy_model(mock_stream_t *stream, const uint8_t *body, const json_member_t *model) {
    size_t length = model->value.length >= 2 ? model->value.length - 2 : 0;
    const uint8_t *text = body + model->value.offset + 1;
    const uint8_t *colon = memchr(text, ':', length);
    if (colon != NULL) {
        mock_parse_directives(&stream->directives, (const char *)colon + 1, length - (size_t)(colon - text) - 1, ':');
        length = (size_t)(colon - text);
    }
    length = RW_MIN(length, sizeof stream->model - 1);
    memcpy(stream->model, text, length);
    stream->model[length] = '\0';
}

static void mock_handle_models(mock_stream_t *stream) {
    static const char body[] = "{\"object\":\"list\",\"data\":[{\"id\":\"mock-small\",\"object\":\"model\","
                               "\"created\":1700000000,\"owned_by\":\"ringway-mock\"}]}";
    stream->responded = true;
    server_respond(stream->exchange, 200, "application/json", body, sizeof body - 1, NULL);
}

static void mock_handle_embeddings(mock_stream_t *stream) {
    text_buffer_t text = text_buffer_over(stream->scratch, MOCK_SCRATCH_BYTES);
    mock_append_text(&text, "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[");
    for (int index = 0; index < 16; index++) {
        mock_append_format(&text, "%s0.%03d", index ? "," : "", (int)((stream->serial * 31 + (uint64_t)index * 7) % 1000));
    }
    mock_append_format(&text, "]}],\"model\":\"%s\",\"usage\":{\"prompt_tokens\":%lld,\"total_tokens\":%lld}}",
                       stream->model, (long long)stream->prompt_tokens, (long long)stream->prompt_tokens);
    mock_respond_json(stream, 200, &text);
}

/* Runs the request once any first-byte delay has passed. */
static void mock_dispatch(mock_stream_t *stream) {
    server_exchange_t *exchange = stream->exchange;
    /* An interim response in the same write as the final head (and, for a
     * short response, its body): a relay must parse on past it. */
    if (stream->directives.interim) exchange->interim_head = "HTTP/1.1 103 Early Hints\r\nLink: </x.css>; rel=preload\r\n\r\n";
    bool faulty = stream->directives.fail_percent > 0 || stream->directives.fail_file[0] != '\0';
    if (faulty && stream->directives.status == 0) stream->directives.status = 503;
    if (stream->directives.status >= 400 && stream->directives.status <= 599 && mock_fault_applies(stream)) {
        char message[64];
        char code[32];
        snprintf(message, sizeof message, "mock error %u", stream->directives.status);
        snprintf(code, sizeof code, "mock_%u", stream->directives.status);
        mock_respond_error(stream, (uint16_t)stream->directives.status, message, code);
        return;
    }
    if (mock_path_is(exchange, "/v1/embeddings") || mock_path_is(exchange, "/embeddings")) {
        mock_handle_embeddings(stream);
        return;
    }
    if (stream->directives.disconnect_after >= 0 && !stream->streaming) {
        server_exchange_abort(exchange);
        return;
    }
    if (stream->streaming) {
        mock_stream_begin(stream);
        return;
    }
    mock_respond_completion(stream);
}

static void mock_on_first_byte_delay(loop_operation_t *operation, int32_t result, uint32_t flags) {
    mock_stream_t *stream = operation->owner;
    stream->sleep_operation.callback = mock_on_sleep;
    if (stream->aborted) {
        server_exchange_release(stream->exchange);
        return;
    }
    mock_dispatch(stream);
}

static void mock_on_request(server_exchange_t *exchange) {
    mock_worker_t *worker = server_handler_context(exchange->server);
    mock_stream_t *stream = &worker->streams[server_exchange_index(exchange)];
    uint8_t *scratch = stream->scratch;
    memset(stream, 0, sizeof *stream);
    stream->scratch = scratch;
    stream->exchange = exchange;
    stream->worker = worker;
    stream->serial = ++worker->serial;
    atomic_fetch_add_explicit(&mock_requests_total, 1, memory_order_relaxed);
    if (exchange->first_on_connection) atomic_fetch_add_explicit(&mock_connections_total, 1, memory_order_relaxed);
    stream->directives.chunks = 8;
    stream->directives.disconnect_after = -1;
    stream->sleep_operation = (loop_operation_t){.callback = mock_on_sleep, .owner = stream};
    exchange->handler_state = stream;
    snprintf(stream->model, sizeof stream->model, "mock-small");

    const http_request_t *request = &exchange->request;
    if (request->method == HTTP_METHOD_GET && mock_path_is(exchange, "/mock/stats")) {
        /* For tests of the relay's connection reuse: how many connections
         * (and so TLS handshakes) and requests the mock has seen. */
        text_buffer_t text = text_buffer_over(stream->scratch, MOCK_SCRATCH_BYTES);
        mock_append_format(&text, "{\"connections\":%llu,\"requests\":%llu}",
                           (unsigned long long)atomic_load(&mock_connections_total),
                           (unsigned long long)atomic_load(&mock_requests_total));
        mock_respond_json(stream, 200, &text);
        return;
    }
    if (request->method == HTTP_METHOD_GET && mock_path_is(exchange, "/healthz")) {
        stream->responded = true;
        server_respond(exchange, 200, "text/plain", "ok", 2, NULL);
        return;
    }
    if (!mock_authorized(stream)) {
        mock_respond_error(stream, 401, "mock: missing or wrong API key", "invalid_api_key");
        return;
    }
    if (request->method == HTTP_METHOD_GET && (mock_path_is(exchange, "/v1/models") || mock_path_is(exchange, "/models"))) {
        mock_handle_models(stream);
        return;
    }
    bool chat = mock_path_is(exchange, "/v1/chat/completions") || mock_path_is(exchange, "/chat/completions");
    bool embeddings = mock_path_is(exchange, "/v1/embeddings") || mock_path_is(exchange, "/embeddings");
    if (request->method != HTTP_METHOD_POST || (!chat && !embeddings)) {
        mock_respond_error(stream, 404, "mock: no such endpoint", "not_found");
        return;
    }
    const http_header_t *header = http_request_find_header(request, exchange->buffer, "x-mock");
    if (header != NULL) {
        mock_parse_directives(&stream->directives, (const char *)exchange->buffer + header->value.offset,
                              header->value.length, ';');
    }
    const uint8_t *body = server_body(exchange);
    stream->prompt_tokens = (int64_t)(exchange->body_length / 4) + 1;
    if (chat) {
        json_chat_request_t chat_request;
        json_error_t error;
        if (json_scan_chat_request(body, exchange->body_length, &chat_request, &error) != 0) {
            stream->responded = true;
            server_respond_error(exchange, 400, "invalid_request_error", error.message, error.param, NULL);
            return;
        }
        mock_copy_model(stream, body, &chat_request.model);
        if (chat_request.mock.present && chat_request.mock.type == JSON_TYPE_STRING && chat_request.mock.value.length >= 2) {
            mock_parse_directives(&stream->directives, (const char *)body + chat_request.mock.value.offset + 1,
                                  chat_request.mock.value.length - 2, ';');
        }
        stream->streaming = chat_request.stream_value;
        stream->include_usage = chat_request.include_usage_value;
    } else {
        json_span_t value;
        json_type_t type;
        if (json_object_find(body, exchange->body_length, "model", &value, &type) == 0 && type == JSON_TYPE_STRING) {
            json_member_t model = {.present = true, .type = type, .value = value};
            mock_copy_model(stream, body, &model);
        }
    }
    if (stream->directives.first_byte_ms > 0) {
        stream->sleep_operation.callback = mock_on_first_byte_delay;
        mock_sleep(stream, stream->directives.first_byte_ms);
        return;
    }
    mock_dispatch(stream);
}

static void mock_on_sent(server_exchange_t *exchange) {
    mock_stream_t *stream = exchange->handler_state;
    mock_stream_next(stream);
}

static void mock_on_abort(server_exchange_t *exchange) {
    mock_stream_t *stream = exchange->handler_state;
    if (stream->sleep_operation.in_flight) {
        /* The sleep's completion releases the exchange. */
        stream->aborted = true;
        return;
    }
    server_exchange_release(exchange);
}

/* ---- threads and start-up ------------------------------------------------ */

/* Sets up one worker on its own thread (the ring is single-issuer: it must
 * be created by the thread that submits to it), then runs its loop. A
 * set-up failure ends the process: the mock is useless half-started. */
static void *mock_worker_run(void *argument) {
    mock_worker_t *worker = argument;
    char error[512];
    const uint32_t exchanges = MOCK_EXCHANGES;
    if (loop_init(&worker->loop, 4096, 4096, 16 * 1024, error, sizeof error) != 0) {
        fprintf(stderr, "ringway-mock: %s\n", error);
        exit(1);
    }
    worker->streams = calloc(exchanges, sizeof(mock_stream_t));
    worker->scratch_memory = mmap(NULL, (size_t)exchanges * MOCK_SCRATCH_BYTES, PROT_READ | PROT_WRITE,
                                  MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    if (worker->streams == NULL || worker->scratch_memory == MAP_FAILED) {
        fprintf(stderr, "ringway-mock: out of memory\n");
        exit(1);
    }
    for (uint32_t slot = 0; slot < exchanges; slot++) {
        worker->streams[slot].scratch = worker->scratch_memory + (size_t)slot * MOCK_SCRATCH_BYTES;
        worker->streams[slot].worker = worker;
    }
    const mock_options_t *options = worker->options;
    server_config_t config = {
        .host = options->host,
        .port = options->port,
        .connections_max = 16384,
        .exchanges_max = exchanges,
        .request_buffer_bytes = 64 * 1024,
        .large_bodies_max = 2,
        .body_bytes_max = 16 * 1024 * 1024,
        .head_bytes_max = 16 * 1024,
        .header_timeout_ms = 30000,
        .body_timeout_ms = 60000,
        .keepalive_timeout_ms = options->idle_ms,
        .tls = mock_tls,
        .handlers = {.on_request = mock_on_request, .on_sent = mock_on_sent, .on_abort = mock_on_abort},
        .handler_context = worker,
        .thread_index = worker->index,
    };
    if (server_init(&worker->server, &worker->loop, &config, error, sizeof error) != 0) {
        fprintf(stderr, "ringway-mock: %s\n", error);
        exit(1);
    }
    server_start(worker->server);
    atomic_fetch_add(&mock_workers_ready, 1);
    loop_run(&worker->loop, 50);
    return NULL;
}

static void mock_usage(FILE *out) {
    fprintf(out,
            "usage: ringway-mock --listen HOST:PORT [--tls-cert CERT.pem --tls-key KEY.pem]\n"
            "                    [--threads N] [--api-key KEY] [--idle-ms MS]\n"
            "An OpenAI-compatible mock upstream for Ringway's tests and benchmarks.\n"
            "Per-request directives (x-mock header \"k=v;k=v\", body \"mock\" string, or a model or\n"
            "bearer key suffix \":k=v\"): chunks, gap_ms, first_byte_ms, status, disconnect_after,\n"
            "line_bytes, split, usage_on_last, crlf, cr, comments, echo, interim, fail_percent,\n"
            "fail_file, echo_key.\n");
}

static int mock_parse_listen(const char *text, char *host, size_t host_size, uint16_t *port) {
    const char *colon = strrchr(text, ':');
    if (colon == NULL || colon == text) return -1;
    size_t host_length = (size_t)(colon - text);
    if (text[0] == '[' && colon[-1] == ']') {
        text++;
        host_length -= 2;
    }
    if (host_length >= host_size) return -1;
    memcpy(host, text, host_length);
    host[host_length] = '\0';
    char *end = NULL;
    long value = strtol(colon + 1, &end, 10);
    if (*end != '\0' || value < 0 || value > 65535) return -1;
    *port = (uint16_t)value;
    return 0;
}


int mock_main(int argc, char **argv) {
    static char host[256] = "127.0.0.1";
    mock_options_t options = {.host = host, .port = 9443, .threads = 1, .idle_ms = 300000};
    for (int index = 1; index < argc; index++) {
        const char *argument = argv[index];
        const char *value = index + 1 < argc ? argv[index + 1] : NULL;
        if (strcmp(argument, "--help") == 0 || strcmp(argument, "-h") == 0) {
            mock_usage(stdout);
            return 0;
        } else if (strcmp(argument, "--version") == 0) {
            printf("ringway-mock %s\n", RW_VERSION);
            return 0;
        } else if (value == NULL) {
            fprintf(stderr, "ringway-mock: %s needs a value\n", argument);
            mock_usage(stderr);
            return 2;
        } else if (strcmp(argument, "--listen") == 0) {
            if (mock_parse_listen(value, host, sizeof host, &options.port) != 0) {
                fprintf(stderr, "ringway-mock: --listen wants HOST:PORT, got '%s'\n", value);
                return 2;
            }
            index++;
        } else if (strcmp(argument, "--tls-cert") == 0) {
            options.certificate_file = value;
            index++;
        } else if (strcmp(argument, "--tls-key") == 0) {
            options.key_file = value;
            index++;
        } else if (strcmp(argument, "--api-key") == 0) {
            options.api_key = value;
            index++;
        } else if (strcmp(argument, "--idle-ms") == 0) {
            options.idle_ms = (uint32_t)atoi(value);
            if (options.idle_ms == 0) {
                fprintf(stderr, "ringway-mock: --idle-ms must be a positive number of milliseconds\n");
                return 2;
            }
            index++;
        } else if (strcmp(argument, "--threads") == 0) {
            options.threads = (uint32_t)atoi(value);
            if (options.threads == 0 || options.threads > MOCK_THREADS_MAX) {
                fprintf(stderr, "ringway-mock: --threads must be 1..%d\n", MOCK_THREADS_MAX);
                return 2;
            }
            index++;
        } else {
            fprintf(stderr, "ringway-mock: unknown option '%s'\n", argument);
            mock_usage(stderr);
            return 2;
        }
    }
    if ((options.certificate_file == NULL) != (options.key_file == NULL)) {
        fprintf(stderr, "ringway-mock: --tls-cert and --tls-key go together\n");
        return 2;
    }
    memset(mock_filler, 'x', sizeof mock_filler);
    signal(SIGPIPE, SIG_IGN);
    char error[512];
    tls_context_t *tls = NULL;
    if (options.certificate_file != NULL) {
        tls_global_init();
        tls = tls_server_context_create(options.certificate_file, options.key_file, error, sizeof error);
        if (tls == NULL) {
            fprintf(stderr, "ringway-mock: %s\n", error);
            return 1;
        }
    }
    static mock_worker_t workers[MOCK_THREADS_MAX];
    mock_tls = tls;
    /* SIGINT/SIGTERM are taken by sigwait below: blocked before the
     * workers start, so they inherit the mask. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    for (uint32_t index = 0; index < options.threads; index++) {
        workers[index].index = index;
        workers[index].options = &options;
        pthread_create(&workers[index].thread, NULL, mock_worker_run, &workers[index]);
    }
    while (atomic_load(&mock_workers_ready) < options.threads) usleep(1000);
    fprintf(stderr, "ringway-mock: listening on %s:%u (%u threads%s)\n", options.host, (unsigned)options.port,
            options.threads, tls != NULL ? ", TLS" : "");
    int received = 0;
    sigwait(&stop_signals, &received);
    /* Worker threads hold no state worth flushing: exit at once. */
    return 0;
}
