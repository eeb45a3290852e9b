/* The HTTP/1.1 server side of one thread (see server.h for the contract).
 *
 * Memory: connections, exchanges (each with a request buffer) and large-body
 * slots are fixed pools mapped at start; pages are touched only when used,
 * so an idle keep-alive connection costs its small struct and nothing else.
 * Bytes arrive in the loop's provided buffers and are copied once into the
 * exchange's request buffer (or decrypted straight into it under TLS). */
#include "ringway/server.h"

#include "ringway/address.h"
#include "ringway/http-writer.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

enum { SERVER_TLS_BUFFER_BYTES = TLS_RECORD_BYTES_MAX + 512 };

typedef struct server_held_buffer {
    uint16_t id;
    uint32_t offset;
    uint32_t length;
} server_held_buffer_t;

struct server_connection {
    loop_operation_t recv_operation;
    loop_operation_t send_operation;
    loop_operation_t shutdown_operation;
    loop_operation_t cancel_operation;
    loop_timer_t timer;
    server_t *server;
    server_exchange_t *exchange;
    server_connection_t *next_free;
    server_connection_t *next_starved;
    tls_session_t *tls;
    int fd;
    bool in_use;
    bool closing;        /* no new requests; close when the last operation ends */
    bool peer_gone;
    bool starved;        /* receive stopped for want of buffers; re-armed on tick */
    bool recv_wanted;    /* a multishot receive should be armed */
    bool tls_ready;
    bool refusing;       /* sending the static 503 before closing */
    bool lingering;      /* response sent, write side shut: reading and discarding until
                          * the client closes or the linger time ends, so a client still
                          * sending does not get a reset that destroys our answer */
    bool counted;        /* counted in server->peer_counts (connections_per_ip) */
    address_t peer;      /* the socket's peer, read once at accept */
    uint32_t held_count;
    uint32_t requests; /* exchanges started on this connection */
    server_held_buffer_t held[SERVER_HELD_BUFFERS_MAX];
    /* Sends: one in flight; the queue lives in the exchange. */
    struct msghdr message;
    const char *refusal;
    size_t refusal_sent;
};

typedef struct server_send_queue {
    struct iovec pieces[SERVER_IOVECS_MAX];
    uint32_t count;
    uint32_t index;
    bool active;
} server_send_queue_t;

struct server {
    loop_t *loop;
    server_config_t config;
    int listen_fd;
    bool accepting;
    loop_operation_t accept_operation;
    loop_operation_t accept_cancel_operation;
    server_connection_t *connections;
    server_connection_t *free_connections;
    server_exchange_t *exchanges;
    server_send_queue_t *send_queues;
    server_exchange_t *free_exchanges;
    uint8_t *exchange_memory;
    uint8_t *large_memory;
    bool *large_used;
    address_t *large_owners;        /* [large_bodies_max]: the peer of each used slot */
    address_counts_t peer_counts;   /* open connections per peer, when connections_per_ip is set */
    tls_session_t *tls_sessions;
    uint8_t *tls_memory;
    server_connection_t *starved;
    loop_timer_list_t header_timers;
    loop_timer_list_t body_timers;
    loop_timer_list_t keepalive_timers;
    loop_timer_list_t linger_timers;
    uint64_t request_counter;
    uint32_t instance; /* random per process start, in every request id */
};

/* Sent from static memory when no exchange is free (there is nowhere else
 * to format it); its length is checked against the body at start-up. */
#define SERVER_BUSY_BODY                                                                                  \
    "{\"error\":{\"message\":\"the server is at capacity, retry shortly\",\"type\":\"server_error\","       \
    "\"param\":null,\"code\":\"server_busy\"}}"
static const char server_busy_response[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 120\r\n"
    "x-request-id: refused\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" SERVER_BUSY_BODY;

static void server_connection_process(server_connection_t *connection);
static void server_flush(server_connection_t *connection);
static void server_connection_close(server_connection_t *connection);
static void server_connection_maybe_free(server_connection_t *connection);
static void server_connection_linger(server_connection_t *connection);
static void server_release_held(server_connection_t *connection);

static void *server_map(size_t bytes) {
    if (bytes == 0) bytes = 1;
    void *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    return memory == MAP_FAILED ? NULL : memory;
}

static server_send_queue_t *server_queue(server_exchange_t *exchange) {
    server_t *server = exchange->server;
    size_t index = (size_t)(exchange - server->exchanges);
    RW_ASSERT(index < server->config.exchanges_max);
    return &server->send_queues[index];
}

void *server_handler_context(const server_t *server) { return server->config.handler_context; }

const address_t *server_exchange_peer(const server_exchange_t *exchange) {
    RW_ASSERT(exchange != NULL && exchange->connection != NULL);
    return &exchange->connection->peer;
}

uint32_t server_exchange_index(const server_exchange_t *exchange) {
    size_t index = (size_t)(exchange - exchange->server->exchanges);
    RW_ASSERT(index < exchange->server->config.exchanges_max);
    return (uint32_t)index;
}

/* ---- pools ------------------------------------------------------------ */

static server_exchange_t *server_exchange_acquire(server_t *server, server_connection_t *connection) {
    server_exchange_t *exchange = server->free_exchanges;
    if (exchange == NULL) return NULL;
    server->free_exchanges = exchange->next_free;
    uint8_t *buffer = exchange->buffer;
    size_t capacity = exchange->buffer_capacity;
    memset(exchange, 0, offsetof(server_exchange_t, head));
    exchange->buffer = buffer;
    exchange->buffer_capacity = capacity;
    exchange->connection = connection;
    exchange->server = server;
    exchange->started_ms = loop_now_ms(server->loop);
    http_request_parser_init(&exchange->parser, server->config.head_bytes_max);
    server->request_counter++;
    /* Unique across threads and restarts: the process's random instance
     * tag, the thread, a counter. Usage records are found by request id. */
    snprintf(exchange->request_id, sizeof exchange->request_id, "req_%08x%02x%010llx", server->instance,
             server->config.thread_index & 0xff, (unsigned long long)server->request_counter);
    memset(server_queue(exchange), 0, sizeof(server_send_queue_t));
    return exchange;
}

/* Head, the largest body allowed, and room for chunk framing. */
static size_t server_large_slot_bytes(const server_t *server) {
    return (size_t)server->config.head_bytes_max + server->config.body_bytes_max + 64 * RW_KIB;
}

static void server_large_release(server_t *server, server_exchange_t *exchange) {
    if (!exchange->large) return;
    size_t slot = (size_t)(exchange->buffer - server->large_memory) / server_large_slot_bytes(server);
    RW_ASSERT(slot < server->config.large_bodies_max && server->large_used[slot]);
    /* Give the pages back: a large body is rare and 10 MiB each. */
    madvise(exchange->buffer, server_large_slot_bytes(server), MADV_DONTNEED);
    server->large_used[slot] = false;
    size_t index = (size_t)(exchange - server->exchanges);
    exchange->buffer = server->exchange_memory + index * server->config.request_buffer_bytes;
    exchange->buffer_capacity = server->config.request_buffer_bytes;
    exchange->large = false;
}

typedef enum server_large_result {
    SERVER_LARGE_TAKEN = 0,
    SERVER_LARGE_NONE_FREE,     /* every slot of the thread is busy: 503 */
    SERVER_LARGE_PEER_AT_CAP,   /* this peer holds large_bodies_per_ip slots: 429 */
} server_large_result_t;

/* Moves the exchange's bytes into a large-body slot, unless none is free or
 * the connection's peer already holds its share (a scan of the few slots:
 * large_bodies_max is small, and this runs once per large body). */
static server_large_result_t server_large_acquire(server_t *server, server_exchange_t *exchange) {
    const address_t *peer = &exchange->connection->peer;
    uint32_t cap = server->config.large_bodies_per_ip;
    if (cap != 0) {
        uint32_t held = 0;
        for (uint32_t slot = 0; slot < server->config.large_bodies_max; slot++) {
            if (server->large_used[slot] && address_equal(&server->large_owners[slot], peer)) held++;
        }
        if (held >= cap) return SERVER_LARGE_PEER_AT_CAP;
    }
    for (uint32_t slot = 0; slot < server->config.large_bodies_max; slot++) {
        if (server->large_used[slot]) continue;
        server->large_used[slot] = true;
        server->large_owners[slot] = *peer;
        uint8_t *large = server->large_memory + (size_t)slot * server_large_slot_bytes(server);
        memcpy(large, exchange->buffer, exchange->buffer_length);
        exchange->buffer = large;
        exchange->buffer_capacity = server_large_slot_bytes(server);
        exchange->large = true;
        return SERVER_LARGE_TAKEN;
    }
    return SERVER_LARGE_NONE_FREE;
}

static void server_exchange_free(server_t *server, server_exchange_t *exchange) {
    server_large_release(server, exchange);
    exchange->connection = NULL;
    exchange->next_free = server->free_exchanges;
    server->free_exchanges = exchange;
}

/* ---- sends ------------------------------------------------------------ */

static void server_queue_piece(server_exchange_t *exchange, const void *bytes, size_t length) {
    if (length == 0) return;
    server_send_queue_t *queue = server_queue(exchange);
    RW_ASSERT(queue->count < SERVER_IOVECS_MAX);
    queue->pieces[queue->count].iov_base = (void *)bytes;
    queue->pieces[queue->count].iov_len = length;
    queue->count++;
    queue->active = true;
}

static void server_queue_head(server_exchange_t *exchange) {
    if (exchange->head_length == 0) return;
    if (exchange->interim_head != NULL) {
        server_queue_piece(exchange, exchange->interim_head, strlen(exchange->interim_head));
        exchange->interim_head = NULL;
    }
    server_queue_piece(exchange, exchange->head, exchange->head_length);
    exchange->head_length = 0;
}

static void server_format_head(server_exchange_t *exchange, uint16_t status, const char *content_type,
                               int64_t content_length, const char *extra_headers) {
    server_connection_t *connection = exchange->connection;
    bool keep_alive = exchange->request.keep_alive && !connection->closing && exchange->head_done &&
                      exchange->body_done;
    if (!keep_alive) connection->closing = true;
    exchange->response_status = status;
    exchange->chunked_response = content_length < 0;
    exchange->head_length = http_write_response_head(exchange->head, sizeof exchange->head, status, content_type,
                                                     content_length, keep_alive, exchange->request_id,
                                                     extra_headers);
    RW_ASSERT(exchange->head_length > 0);
}

void server_begin(server_exchange_t *exchange, uint16_t status, const char *content_type, int64_t content_length,
                  const char *extra_headers) {
    RW_ASSERT(exchange->handler_owned && !exchange->ending && exchange->response_status == 0);
    server_format_head(exchange, status, content_type, content_length, extra_headers);
}

void server_send(server_exchange_t *exchange, const struct iovec *pieces, uint32_t count, bool last) {
    RW_ASSERT(exchange->handler_owned && !exchange->ending);
    RW_ASSERT(exchange->response_status != 0);
    server_send_queue_t *queue = server_queue(exchange);
    /* Only the server's own interim "100 Continue" may still be queued. */
    if (!queue->active) {
        queue->count = 0;
        queue->index = 0;
    }
    RW_ASSERT(queue->count + count + 5 <= SERVER_IOVECS_MAX);
    server_queue_head(exchange);
    size_t total = 0;
    for (uint32_t index = 0; index < count; index++) total += pieces[index].iov_len;
    if (exchange->chunked_response && total > 0) {
        size_t length = http_write_chunk_header(exchange->chunk_header, sizeof exchange->chunk_header, total);
        server_queue_piece(exchange, exchange->chunk_header, length);
    }
    for (uint32_t index = 0; index < count; index++) {
        server_queue_piece(exchange, pieces[index].iov_base, pieces[index].iov_len);
    }
    if (exchange->chunked_response && total > 0) server_queue_piece(exchange, "\r\n", 2);
    if (last) {
        if (exchange->chunked_response) server_queue_piece(exchange, "0\r\n\r\n", 5);
        exchange->ending = true;
    }
    queue->active = true;
    if (exchange->aborted) return;
    server_flush(exchange->connection);
}

void server_respond(server_exchange_t *exchange, uint16_t status, const char *content_type, const void *body,
                    size_t body_length, const char *extra_headers) {
    server_begin(exchange, status, content_type, (int64_t)body_length, extra_headers);
    struct iovec piece = {.iov_base = (void *)body, .iov_len = body_length};
    server_send(exchange, &piece, body_length > 0 ? 1 : 0, true);
}

void server_respond_error(server_exchange_t *exchange, uint16_t status, const char *type, const char *message,
                          const char *param, const char *code) {
    server_respond_error_with_headers(exchange, status, type, message, param, code, NULL);
}

void server_respond_error_with_headers(server_exchange_t *exchange, uint16_t status, const char *type,
                                       const char *message, const char *param, const char *code,
                                       const char *extra_headers) {
    size_t length = http_write_error_body(exchange->error_body, sizeof exchange->error_body, message, type, param,
                                          code);
    if (length == 0) {
        length = http_write_error_body(exchange->error_body, sizeof exchange->error_body, "error", type, NULL, code);
    }
    RW_ASSERT(length > 0);
    server_respond(exchange, status, "application/json", exchange->error_body, length, extra_headers);
}

/* Answers on the server's behalf (the handler never saw this request) and
 * closes the connection afterwards. */
static void server_refuse(server_exchange_t *exchange, uint16_t status, const char *type, const char *message,
                          const char *code) {
    exchange->handler_owned = true;
    exchange->connection->closing = true;
    server_respond_error(exchange, status, type, message, NULL, code);
}

/* Answers a request whose large body could not get a slot. */
static void server_refuse_large(server_exchange_t *exchange, server_large_result_t result) {
    RW_ASSERT(result != SERVER_LARGE_TAKEN);
    exchange->handler_owned = true;
    exchange->connection->closing = true;
    if (result == SERVER_LARGE_PEER_AT_CAP) {
        server_respond_error_with_headers(exchange, 429, "rate_limit_error",
                                          "too many large request bodies from this address at once, retry shortly",
                                          NULL, "too_many_large_bodies", "Retry-After: 1\r\n");
        return;
    }
    server_respond_error(exchange, 503, "server_error", "the server is at capacity for large request bodies", NULL,
                         "server_busy");
}

static void server_on_drained(server_connection_t *connection);
static void server_exchange_progress(server_connection_t *connection);

/* Drives the one send of this connection: TLS ciphertext first, then the
 * queued plaintext (encrypted on the way under TLS). */
static void server_flush(server_connection_t *connection) {
    if (connection->send_operation.in_flight || connection->peer_gone) return;
    loop_t *loop = connection->server->loop;
    if (connection->refusing) {
        size_t remaining = sizeof server_busy_response - 1 - connection->refusal_sent;
        if (remaining > 0) {
            loop_send(loop, &connection->send_operation, connection->fd,
                      server_busy_response + connection->refusal_sent, remaining);
        } else {
            server_connection_close(connection);
        }
        return;
    }
    server_exchange_t *exchange = connection->exchange;
    server_send_queue_t *queue = exchange != NULL ? server_queue(exchange) : NULL;
    if (connection->tls != NULL) {
        for (;;) {
            size_t pending = 0;
            const uint8_t *ciphertext = tls_output_pending(connection->tls, &pending);
            if (pending > 0) {
                loop_send(loop, &connection->send_operation, connection->fd, ciphertext, pending);
                return;
            }
            if (queue == NULL || queue->index >= queue->count) break;
            struct iovec *piece = &queue->pieces[queue->index];
            size_t written = 0;
            tls_result_t result = tls_write(connection->tls, piece->iov_base, piece->iov_len, &written);
            piece->iov_base = (uint8_t *)piece->iov_base + written;
            piece->iov_len -= written;
            if (piece->iov_len == 0) queue->index++;
            if (result == TLS_ERROR || result == TLS_CLOSED) {
                connection->peer_gone = true;
                server_connection_close(connection);
                return;
            }
        }
    } else if (queue != NULL && queue->index < queue->count) {
        memset(&connection->message, 0, sizeof connection->message);
        connection->message.msg_iov = &queue->pieces[queue->index];
        connection->message.msg_iovlen = queue->count - queue->index;
        loop_sendmsg(loop, &connection->send_operation, connection->fd, &connection->message);
        return;
    }
    if (queue != NULL && queue->active) {
        queue->active = false;
        queue->count = 0;
        queue->index = 0;
        server_on_drained(connection);
    }
}

/* A shutdown or cancel of ours ended: the connection may now be free. */
static void server_on_control_done(loop_operation_t *operation, int32_t result, uint32_t flags) {
    server_connection_maybe_free(operation->owner);
}

static void server_on_send(loop_operation_t *operation, int32_t result, uint32_t flags) {
    server_connection_t *connection = operation->owner;
    if (result <= 0) {
        connection->peer_gone = true;
        server_connection_close(connection);
        return;
    }
    if (connection->refusing) {
        connection->refusal_sent += (size_t)result;
    } else if (connection->tls != NULL) {
        tls_output_consume(connection->tls, (size_t)result);
    } else {
        server_send_queue_t *queue = server_queue(connection->exchange);
        loop_iovec_advance(queue->pieces, queue->count, &queue->index, (size_t)result);
    }
    server_flush(connection);
    server_connection_maybe_free(connection);
}

/* ---- the exchange's end and keep-alive --------------------------------- */

static void server_rearm_recv(server_connection_t *connection) {
    if (connection->peer_gone || connection->starved) return;
    if (connection->closing && !connection->lingering) return;
    if (connection->recv_operation.in_flight) return;
    loop_recv_multishot(connection->server->loop, &connection->recv_operation, connection->fd);
}

/* The response's last byte left: start the next request or close. */
static void server_exchange_finish(server_connection_t *connection) {
    server_t *server = connection->server;
    server_exchange_t *exchange = connection->exchange;
    RW_ASSERT(exchange != NULL && exchange->ending);
    exchange->handler_owned = false;
    if (exchange->aborted) {
        server_connection_close(connection);
        return;
    }
    if (connection->closing) {
        server_connection_linger(connection);
        return;
    }
    /* Pipelined bytes after this request move to the front of the buffer. */
    size_t request_end = exchange->body_offset + exchange->body_length;
    if (exchange->request.chunked) request_end = exchange->body_offset + exchange->raw_length;
    size_t leftover = exchange->buffer_length > request_end ? exchange->buffer_length - request_end : 0;
    if (leftover > 0 && !exchange->large) {
        uint8_t *buffer = exchange->buffer;
        memmove(buffer, buffer + request_end, leftover);
        server_exchange_free(server, exchange);
        connection->exchange = NULL;
        server_exchange_t *next = server_exchange_acquire(server, connection);
        RW_ASSERT(next != NULL); /* we just freed one */
        connection->requests++;
        if (next->buffer != buffer) memcpy(next->buffer, buffer, leftover);
        next->buffer_length = leftover;
        connection->exchange = next;
        loop_timer_start(server->loop, &server->header_timers, &connection->timer);
        server_exchange_progress(connection);
        if (connection->exchange != next || next->handler_owned || connection->closing) return;
    } else {
        if (leftover > 0) {
            /* A large body's leftover is rare; refuse to keep pipelining. */
            connection->closing = true;
            server_connection_close(connection);
            return;
        }
        server_exchange_free(server, exchange);
        connection->exchange = NULL;
        loop_timer_start(server->loop, &server->keepalive_timers, &connection->timer);
    }
    server_connection_process(connection);
    if (connection->held_count == 0) server_rearm_recv(connection);
}

static void server_on_drained(server_connection_t *connection) {
    server_exchange_t *exchange = connection->exchange;
    if (exchange == NULL) return;
    if (exchange->ending) {
        server_exchange_finish(connection);
    } else if (exchange->handler_owned && !exchange->aborted) {
        connection->server->config.handlers.on_sent(exchange);
    }
}

void server_exchange_release(server_exchange_t *exchange) {
    RW_ASSERT(exchange->aborted && exchange->handler_owned);
    exchange->handler_owned = false;
    server_connection_maybe_free(exchange->connection);
}

/* ---- closing ----------------------------------------------------------- */

enum { SERVER_LINGER_MS = 2000 };

/* After the last response of a connection we close only our sending side
 * and keep reading (and discarding) for a bounded time. */
static void server_connection_linger(server_connection_t *connection) {
    server_t *server = connection->server;
    server_release_held(connection);
    server_exchange_t *exchange = connection->exchange;
    if (exchange != NULL) {
        server_exchange_free(server, exchange);
        connection->exchange = NULL;
    }
    connection->lingering = true;
    loop_shutdown(server->loop, &connection->shutdown_operation, connection->fd, SHUT_WR);
    loop_timer_start(server->loop, &server->linger_timers, &connection->timer);
    server_rearm_recv(connection);
}

void server_exchange_abort(server_exchange_t *exchange) {
    RW_ASSERT(exchange->handler_owned);
    server_connection_t *connection = exchange->connection;
    exchange->aborted = true;
    exchange->handler_owned = false;
    connection->closing = true;
    server_connection_close(connection);
}

static void server_release_held(server_connection_t *connection) {
    for (uint32_t index = 0; index < connection->held_count; index++) {
        loop_buffer_release(connection->server->loop, connection->held[index].id);
    }
    connection->held_count = 0;
}

/* Starts closing: no more reads, the handler is told if it owns the
 * exchange; the struct returns to the pool once nothing refers to it. */
static void server_connection_close(server_connection_t *connection) {
    server_t *server = connection->server;
    if (!connection->in_use) return;
    connection->closing = true;
    loop_timer_stop(&connection->timer);
    server_release_held(connection);
    if (connection->fd >= 0 && !connection->peer_gone && !connection->shutdown_operation.in_flight) {
        /* Ends the multishot receive and any send: their completions come back. */
        loop_shutdown(server->loop, &connection->shutdown_operation, connection->fd, SHUT_RDWR);
    }
    connection->peer_gone = true;
    loop_cancel(server->loop, &connection->cancel_operation, &connection->recv_operation);
    server_exchange_t *exchange = connection->exchange;
    if (exchange != NULL && exchange->handler_owned && !exchange->ending && !exchange->aborted) {
        exchange->aborted = true;
        server->config.handlers.on_abort(exchange);
    } else if (exchange != NULL && exchange->ending) {
        exchange->handler_owned = false;
        exchange->aborted = true;
    }
    server_connection_maybe_free(connection);
}

static void server_connection_maybe_free(server_connection_t *connection) {
    if (!connection->in_use || !connection->closing || !connection->peer_gone) return;
    if (connection->recv_operation.in_flight || connection->send_operation.in_flight ||
        connection->shutdown_operation.in_flight || connection->cancel_operation.in_flight) {
        return;
    }
    server_exchange_t *exchange = connection->exchange;
    if (exchange != NULL && exchange->handler_owned) return;
    server_t *server = connection->server;
    if (exchange != NULL) {
        server_exchange_free(server, exchange);
        connection->exchange = NULL;
    }
    if (connection->tls != NULL) tls_session_release(connection->tls);
    if (connection->counted) {
        address_counts_decrement(&server->peer_counts, &connection->peer);
        connection->counted = false;
    }
    if (connection->fd >= 0) loop_close(server->loop, connection->fd);
    connection->fd = -1;
    connection->in_use = false;
    if (connection->starved) {
        server_connection_t **link = &server->starved;
        while (*link != NULL && *link != connection) link = &(*link)->next_starved;
        if (*link == connection) *link = connection->next_starved;
        connection->starved = false;
    }
    connection->next_free = server->free_connections;
    server->free_connections = connection;
}

/* ---- reading requests -------------------------------------------------- */

static void server_on_timer(loop_timer_t *timer) {
    server_connection_t *connection = timer->owner;
    server_exchange_t *exchange = connection->exchange;
    if (connection->lingering || exchange == NULL || exchange->handler_owned || exchange->buffer_length == 0) {
        /* Keep-alive idle time is over, or nothing of a request came. */
        server_connection_close(connection);
        return;
    }
    server_refuse(exchange, 408, "invalid_request_error",
                  exchange->head_done ? "the request body did not arrive in time"
                                      : "the request head did not arrive in time",
                  "request_timeout");
}

/* A complete head: checks what can be decided before the body. Returns
 * false when it has answered (and the exchange is no longer the parser's). */
static bool server_on_head(server_connection_t *connection, server_exchange_t *exchange) {
    server_t *server = connection->server;
    http_request_t *request = &exchange->request;
    exchange->head_done = true;
    exchange->body_offset = request->head_length;
    if (request->content_length > (int64_t)server->config.body_bytes_max) {
        server_refuse(exchange, 413, "invalid_request_error", "the request body is larger than the relay accepts",
                      "request_too_large");
        return false;
    }
    if (request->content_length > 0 &&
        (size_t)request->content_length > exchange->buffer_capacity - exchange->body_offset) {
        server_large_result_t large = server_large_acquire(server, exchange);
        if (large != SERVER_LARGE_TAKEN) {
            server_refuse_large(exchange, large);
            return false;
        }
    }
    if (request->chunked) http_chunked_decoder_init(&exchange->chunked);
    bool body_expected = request->chunked || request->content_length > 0;
    if (!body_expected) {
        exchange->body_done = true;
    } else {
        loop_timer_start(server->loop, &server->body_timers, &connection->timer);
        if (request->expect_continue && request->version_minor == 1) {
            size_t received = exchange->buffer_length - exchange->body_offset;
            if (received == 0) {
                exchange->continue_sent = true;
                static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";
                server_queue_piece(exchange, continue_line, sizeof continue_line - 1);
                server_flush(connection);
            }
        }
    }
    return true;
}

/* Decodes newly arrived chunked body bytes in place: payload spans move down
 * to follow the payload decoded so far. Returns false when it answered. */
static bool server_decode_chunked(server_connection_t *connection, server_exchange_t *exchange) {
    server_t *server = connection->server;
    uint8_t *buffer = exchange->buffer;
    size_t raw_end = exchange->body_offset + exchange->raw_length;
    while (raw_end < exchange->buffer_length) {
        size_t consumed = 0, data_offset = 0, data_length = 0;
        http_chunked_result_t result =
            http_chunked_decode(&exchange->chunked, buffer + raw_end, exchange->buffer_length - raw_end, &consumed,
                                &data_offset, &data_length);
        if (result == HTTP_CHUNKED_ERROR) {
            server_refuse(exchange, 400, "invalid_request_error", exchange->chunked.error_message,
                          "invalid_chunked_body");
            return false;
        }
        if (exchange->chunked.payload_bytes_total > server->config.body_bytes_max) {
            server_refuse(exchange, 413, "invalid_request_error",
                          "the request body is larger than the relay accepts", "request_too_large");
            return false;
        }
        if (result == HTTP_CHUNKED_DATA) {
            memmove(buffer + exchange->body_offset + exchange->body_length, buffer + raw_end + data_offset,
                    data_length);
            exchange->body_length += data_length;
        }
        raw_end += consumed;
        exchange->raw_length = raw_end - exchange->body_offset;
        if (result == HTTP_CHUNKED_DONE) {
            /* Pipelined bytes after the body follow the decoded payload. */
            size_t leftover = exchange->buffer_length - raw_end;
            size_t decoded_end = exchange->body_offset + exchange->body_length;
            memmove(buffer + decoded_end, buffer + raw_end, leftover);
            exchange->buffer_length = decoded_end + leftover;
            exchange->raw_length = exchange->body_length;
            exchange->body_done = true;
            return true;
        }
        if (result == HTTP_CHUNKED_AGAIN) break;
    }
    return true;
}

/* Parses what the exchange holds: head, then body; hands a complete request
 * to the handler. */
static void server_exchange_progress(server_connection_t *connection) {
    server_t *server = connection->server;
    server_exchange_t *exchange = connection->exchange;
    if (exchange == NULL || exchange->handler_owned || exchange->buffer_length == 0) return;
    if (!exchange->head_done) {
        http_parse_result_t result =
            http_request_parse(&exchange->parser, &exchange->request, exchange->buffer, exchange->buffer_length);
        if (result == HTTP_PARSE_ERROR) {
            server_refuse(exchange, exchange->parser.error_status, "invalid_request_error",
                          exchange->parser.error_message, "invalid_request");
            return;
        }
        if (result == HTTP_PARSE_AGAIN) {
            if (!loop_timer_active(&connection->timer) || connection->timer.list == &server->keepalive_timers) {
                loop_timer_start(server->loop, &server->header_timers, &connection->timer);
            }
            return;
        }
        if (!server_on_head(connection, exchange)) return;
    }
    if (!exchange->body_done) {
        if (exchange->request.chunked) {
            if (!server_decode_chunked(connection, exchange)) return;
        } else {
            size_t available = exchange->buffer_length - exchange->body_offset;
            exchange->body_length = RW_MIN(available, (size_t)exchange->request.content_length);
            exchange->body_done = exchange->body_length == (size_t)exchange->request.content_length;
        }
        if (!exchange->body_done) return;
    }
    loop_timer_stop(&connection->timer);
    exchange->handler_owned = true;
    server->config.handlers.on_request(exchange);
}

/* Room left in the exchange's buffer for more request bytes, taking a large
 * slot for a chunked body that outgrows the normal buffer. Returns 0 when
 * it answered or when the request is complete (the rest is held). */
static size_t server_exchange_room(server_connection_t *connection, server_exchange_t *exchange) {
    size_t room = exchange->buffer_capacity - exchange->buffer_length;
    if (room > 0) return room;
    if (!exchange->head_done) return 0;
    if (exchange->large) {
        /* A large slot holds the head, the largest body allowed and a
         * margin of chunk framing: full means the body is too large. */
        server_refuse(exchange, 413, "invalid_request_error", "the request body is larger than the relay accepts",
                      "request_too_large");
        return 0;
    }
    server_large_result_t large = server_large_acquire(connection->server, exchange);
    if (large != SERVER_LARGE_TAKEN) {
        server_refuse_large(exchange, large);
        return 0;
    }
    return exchange->buffer_capacity - exchange->buffer_length;
}

static bool server_ensure_exchange(server_connection_t *connection) {
    if (connection->exchange != NULL) return true;
    connection->exchange = server_exchange_acquire(connection->server, connection);
    if (connection->exchange != NULL) {
        connection->exchange->first_on_connection = connection->requests == 0;
        connection->requests++;
        return true;
    }
    /* Every exchange is busy: answer 503 from static memory and close. */
    connection->refusing = true;
    connection->closing = true;
    loop_timer_stop(&connection->timer);
    server_flush(connection);
    return false;
}

/* Copies up to `capacity` bytes of the oldest held receive buffer to
 * `destination`, giving the buffer back to the ring once it is used up.
 * Returns the bytes copied (> 0: there is a held buffer). */
static size_t server_take_held(server_connection_t *connection, uint8_t *destination, size_t capacity) {
    RW_ASSERT(connection->held_count > 0 && capacity > 0);
    loop_t *loop = connection->server->loop;
    server_held_buffer_t *held = &connection->held[0];
    size_t step = RW_MIN(capacity, (size_t)held->length);
    memcpy(destination, loop_buffer(loop, held->id) + held->offset, step);
    held->offset += (uint32_t)step;
    held->length -= (uint32_t)step;
    if (held->length == 0) {
        loop_buffer_release(loop, held->id);
        memmove(&connection->held[0], &connection->held[1], (connection->held_count - 1) * sizeof connection->held[0]);
        connection->held_count--;
    }
    return step;
}

/* Consumes held receive buffers into the exchange while it can take bytes:
 * plain bytes are copied into the request buffer, TLS bytes go through the
 * session and are decrypted into it. */
static void server_connection_process(server_connection_t *connection) {
    for (;;) {
        if (connection->closing || connection->refusing) return;
        server_exchange_t *exchange = connection->exchange;
        if (exchange != NULL && exchange->handler_owned) return;
        bool progressed = false;
        if (connection->tls != NULL) {
            /* Ciphertext from held buffers into the session. */
            while (connection->held_count > 0) {
                size_t space = 0;
                uint8_t *input = tls_input_space(connection->tls, &space);
                if (space == 0) break;
                tls_input_commit(connection->tls, server_take_held(connection, input, space));
                progressed = true;
            }
            if (!connection->tls_ready) {
                tls_result_t result = tls_handshake(connection->tls);
                server_flush(connection);
                if (result == TLS_ERROR || result == TLS_CLOSED) {
                    server_connection_close(connection);
                    return;
                }
                if (result != TLS_OK) return;
                connection->tls_ready = true;
                progressed = true;
            }
            for (;;) {
                if (!server_ensure_exchange(connection)) return;
                exchange = connection->exchange;
                size_t room = server_exchange_room(connection, exchange);
                if (room == 0) break;
                size_t read_bytes = 0;
                tls_result_t result =
                    tls_read(connection->tls, exchange->buffer + exchange->buffer_length, room, &read_bytes);
                if (result == TLS_OK && read_bytes > 0) {
                    exchange->buffer_length += read_bytes;
                    progressed = true;
                    continue;
                }
                if (result == TLS_CLOSED || result == TLS_ERROR) {
                    server_connection_close(connection);
                    return;
                }
                break;
            }
        } else {
            if (connection->held_count == 0) break;
            if (!server_ensure_exchange(connection)) return;
            exchange = connection->exchange;
            size_t room = server_exchange_room(connection, exchange);
            if (room == 0) break;
            exchange->buffer_length += server_take_held(connection, exchange->buffer + exchange->buffer_length, room);
            progressed = true;
        }
        if (connection->exchange != NULL) server_exchange_progress(connection);
        if (!progressed) break;
    }
}

/* While bytes are held, new bytes go after the last held ones when they fit
 * in its buffer: the new buffer goes straight back to the ring. Returns
 * false when there is nothing held or no room. */
static bool server_hold_append(server_connection_t *connection, uint16_t buffer_id, uint32_t length) {
    if (connection->held_count == 0) return false;
    loop_t *loop = connection->server->loop;
    server_held_buffer_t *last = &connection->held[connection->held_count - 1];
    uint32_t end = last->offset + last->length;
    if (loop->buffer_bytes - end < length) return false;
    memcpy(loop_buffer(loop, last->id) + end, loop_buffer(loop, buffer_id), length);
    last->length += length;
    loop_buffer_release(loop, buffer_id);
    return true;
}

static void server_on_recv(loop_operation_t *operation, int32_t result, uint32_t flags) {
    server_connection_t *connection = operation->owner;
    server_t *server = connection->server;
    if (result > 0 && (flags & IORING_CQE_F_BUFFER)) {
        uint16_t buffer_id = loop_buffer_id(flags);
        if (connection->closing || connection->peer_gone) {
            loop_buffer_release(server->loop, buffer_id);
        } else if (server_hold_append(connection, buffer_id, (uint32_t)result)) {
            /* Coalesced into the last held buffer (a client trickling bytes
             * while its previous response is still being sent). */
            loop_cancel(server->loop, &connection->cancel_operation, &connection->recv_operation);
        } else if (connection->held_count == SERVER_HELD_BUFFERS_MAX) {
            /* The client keeps sending while we cannot take more: bounded. */
            loop_buffer_release(server->loop, buffer_id);
            server_connection_close(connection);
        } else {
            connection->held[connection->held_count++] =
                (server_held_buffer_t){.id = buffer_id, .offset = 0, .length = (uint32_t)result};
            server_connection_process(connection);
            /* Bytes we could not take yet: stop receiving until they are. */
            if (connection->held_count > 0) {
                loop_cancel(server->loop, &connection->cancel_operation, &connection->recv_operation);
            }
        }
    } else if (result == -ENOBUFS) {
        if (!connection->starved && !connection->closing) {
            connection->starved = true;
            connection->next_starved = server->starved;
            server->starved = connection;
        }
    } else if (result == -ECANCELED) {
        /* We stopped it; server_exchange_finish re-arms when bytes are taken. */
    } else if (result <= 0) {
        /* The peer closed (0) or the connection failed. */
        if (!connection->peer_gone) {
            connection->peer_gone = true;
            server_connection_close(connection);
        }
    }
    if (!(flags & IORING_CQE_F_MORE) && connection->held_count == 0) {
        server_exchange_t *exchange = connection->exchange;
        bool busy = exchange != NULL && exchange->handler_owned;
        /* While the handler runs we still want to see the client leave. */
        if (!busy || connection->held_count == 0) server_rearm_recv(connection);
    }
    server_connection_maybe_free(connection);
}

/* ---- accepting --------------------------------------------------------- */

static void server_on_accept_cancelled(loop_operation_t *operation, int32_t result, uint32_t flags) {}

static void server_arm_accept(server_t *server) {
    if (!server->accepting) return;
    loop_accept_multishot(server->loop, &server->accept_operation, server->listen_fd);
}

/* The peer of an accepted socket: one getpeername per connection (the
 * multishot accept does not return addresses). Zero when it fails. */
static address_t server_peer_of(int fd) {
    struct sockaddr_storage storage;
    socklen_t length = sizeof storage;
    memset(&storage, 0, sizeof storage);
    if (getpeername(fd, (struct sockaddr *)&storage, &length) != 0) storage.ss_family = AF_UNSPEC;
    return address_from_sockaddr(&storage);
}

/* True when the peer may open one more connection on this thread (and
 * counts it). An unknown (zero) peer is counted like any other. */
static bool server_peer_admit(server_t *server, const address_t *peer) {
    if (server->config.connections_per_ip == 0) return true;
    if (address_counts_get(&server->peer_counts, peer) >= server->config.connections_per_ip) return false;
    address_counts_increment(&server->peer_counts, peer);
    return true;
}

static void server_on_accept(loop_operation_t *operation, int32_t result, uint32_t flags) {
    server_t *server = operation->owner;
    if (result >= 0) {
        server_connection_t *connection = server->free_connections;
        /* Refused by closing right away: every connection is in use, or
         * this address holds its share of the thread's connections. */
        bool admitted = connection != NULL && server->accepting;
        address_t peer;
        memset(&peer, 0, sizeof peer);
        if (admitted) {
            peer = server_peer_of(result);
            admitted = server_peer_admit(server, &peer);
        }
        if (!admitted) {
            loop_close(server->loop, result);
        } else {
            server->free_connections = connection->next_free;
            uint32_t index = (uint32_t)(connection - server->connections);
            memset(connection, 0, sizeof *connection);
            connection->server = server;
            connection->fd = result;
            connection->in_use = true;
            connection->peer = peer;
            connection->counted = server->config.connections_per_ip != 0;
            connection->recv_operation = (loop_operation_t){.callback = server_on_recv, .owner = connection};
            connection->send_operation = (loop_operation_t){.callback = server_on_send, .owner = connection};
            connection->shutdown_operation = (loop_operation_t){.callback = server_on_control_done, .owner = connection};
            connection->cancel_operation = (loop_operation_t){.callback = server_on_control_done, .owner = connection};
            loop_timer_init(&connection->timer, server_on_timer, connection);
            int one = 1;
            setsockopt(result, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (server->config.tls != NULL) {
                uint8_t *memory = server->tls_memory + (size_t)index * 2 * SERVER_TLS_BUFFER_BYTES;
                connection->tls = &server->tls_sessions[index];
                if (tls_session_init(connection->tls, server->config.tls, true, NULL, memory, SERVER_TLS_BUFFER_BYTES,
                                     memory + SERVER_TLS_BUFFER_BYTES, SERVER_TLS_BUFFER_BYTES) != 0) {
                    connection->tls = NULL;
                    connection->closing = true;
                    connection->peer_gone = true;
                    server_connection_maybe_free(connection);
                    goto rearm;
                }
            }
            loop_timer_start(server->loop, &server->header_timers, &connection->timer);
            server_rearm_recv(connection);
        }
    }
rearm:
    if (!(flags & IORING_CQE_F_MORE)) server_arm_accept(server);
}

static void server_on_tick(server_t *server) {
    /* Re-arm receives that stopped for want of provided buffers. */
    server_connection_t *connection = server->starved;
    server->starved = NULL;
    while (connection != NULL) {
        server_connection_t *next = connection->next_starved;
        connection->starved = false;
        connection->next_starved = NULL;
        if (connection->held_count == 0) server_rearm_recv(connection);
        connection = next;
    }
}

static void server_loop_tick(loop_t *loop) { server_on_tick(loop->owner); }

int server_init(server_t **result, loop_t *loop, const server_config_t *config, char *error, size_t error_size) {
    {
        char expected[32];
        snprintf(expected, sizeof expected, "Content-Length: %zu\r\n", sizeof SERVER_BUSY_BODY - 1);
        RW_ASSERT(strstr(server_busy_response, expected) != NULL);
    }
    RW_ASSERT(config->connections_max > 0 && config->exchanges_max > 0);
    RW_ASSERT(config->request_buffer_bytes >= config->head_bytes_max);
    RW_ASSERT(config->handlers.on_request && config->handlers.on_sent && config->handlers.on_abort);
    server_t *server = calloc(1, sizeof *server);
    if (server == NULL) {
        snprintf(error, error_size, "out of memory for the server");
        return -1;
    }
    server->loop = loop;
    server->config = *config;
    server->instance = config->instance;
    server->connections = server_map(sizeof(server_connection_t) * config->connections_max);
    server->exchanges = server_map(sizeof(server_exchange_t) * config->exchanges_max);
    server->send_queues = server_map(sizeof(server_send_queue_t) * config->exchanges_max);
    server->exchange_memory = server_map((size_t)config->request_buffer_bytes * config->exchanges_max);
    server->large_memory = server_map(server_large_slot_bytes(server) * RW_MAX(config->large_bodies_max, 1u));
    server->large_used = calloc(RW_MAX(config->large_bodies_max, 1u), sizeof(bool));
    server->large_owners = calloc(RW_MAX(config->large_bodies_max, 1u), sizeof(address_t));
    /* At most connections_max peers have a count at once: twice that many
     * slots keeps every probe short and the table never full. */
    uint32_t peer_slots = 2;
    while (config->connections_per_ip != 0 && peer_slots < 2 * config->connections_max) peer_slots *= 2;
    address_count_slot_t *peer_memory = server_map(sizeof(address_count_slot_t) * peer_slots);
    if (config->tls != NULL) {
        server->tls_sessions = server_map(sizeof(tls_session_t) * config->connections_max);
        server->tls_memory = server_map((size_t)2 * SERVER_TLS_BUFFER_BYTES * config->connections_max);
    }
    if (server->connections == NULL || server->exchanges == NULL || server->send_queues == NULL ||
        server->exchange_memory == NULL || server->large_memory == NULL || server->large_used == NULL ||
        server->large_owners == NULL || peer_memory == NULL ||
        (config->tls != NULL && (server->tls_sessions == NULL || server->tls_memory == NULL))) {
        snprintf(error, error_size, "cannot map the server's pools: %s", strerror(errno));
        return -1;
    }
    /* A seed nobody can guess, so no client can choose addresses that
     * collide in the table (the instance and thread numbers are not secret). */
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        seed = ((uint64_t)config->instance << 32 | config->thread_index) ^ (uint64_t)(uintptr_t)server;
    }
    address_counts_init(&server->peer_counts, peer_memory, peer_slots, seed * 0x9e3779b97f4a7c15ull | 1);
    for (uint32_t index = config->connections_max; index-- > 0;) {
        server->connections[index].fd = -1;
        server->connections[index].next_free = server->free_connections;
        server->free_connections = &server->connections[index];
    }
    for (uint32_t index = config->exchanges_max; index-- > 0;) {
        server_exchange_t *exchange = &server->exchanges[index];
        exchange->buffer = server->exchange_memory + (size_t)index * config->request_buffer_bytes;
        exchange->buffer_capacity = config->request_buffer_bytes;
        exchange->server = server;
        exchange->next_free = server->free_exchanges;
        server->free_exchanges = exchange;
    }
    loop_timer_list_init(loop, &server->header_timers, config->header_timeout_ms);
    loop_timer_list_init(loop, &server->body_timers, config->body_timeout_ms);
    loop_timer_list_init(loop, &server->keepalive_timers, config->keepalive_timeout_ms);
    loop_timer_list_init(loop, &server->linger_timers, SERVER_LINGER_MS);
    server->listen_fd = loop_listen_socket(config->host, config->port, 4096, error, error_size);
    if (server->listen_fd < 0) return -1;
    server->accept_operation = (loop_operation_t){.callback = server_on_accept, .owner = server};
    server->accept_cancel_operation = (loop_operation_t){.callback = server_on_accept_cancelled, .owner = server};
    loop->owner = server;
    loop->on_tick = server_loop_tick;
    *result = server;
    return 0;
}

void server_start(server_t *server) {
    server->accepting = true;
    server_arm_accept(server);
}

void server_stop(server_t *server) {
    server->accepting = false;
    loop_cancel(server->loop, &server->accept_cancel_operation, &server->accept_operation);
}
