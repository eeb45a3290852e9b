/* Per-thread, per-upstream connection pool (see upstream.h). Sockets are
 * created at set-up time of each connection; every byte moves through the
 * ring; TLS runs over each connection's two ciphertext buffers. */
#include "ringway/upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum {
    UPSTREAM_TLS_BUFFER_BYTES = TLS_RECORD_BYTES_MAX + 512,
    UPSTREAM_RECORD_PLAINTEXT_BYTES = 16384, /* the most one TLS record carries */
};

static void upstream_fail(upstream_connection_t *connection, const char *reason);
static void upstream_close(upstream_connection_t *connection);
static void upstream_handshake_step(upstream_connection_t *connection);

static bool upstream_operations_idle(const upstream_connection_t *connection) {
    return !connection->connect_operation.in_flight && !connection->send_operation.in_flight &&
           !connection->recv_operation.in_flight && !connection->shutdown_operation.in_flight &&
           !connection->cancel_operation.in_flight;
}

/* A shutdown or cancel of ours ended: a closing connection may be free now. */
static void upstream_on_control_done(loop_operation_t *operation, int32_t result, uint32_t flags);

static void upstream_maybe_free(upstream_connection_t *connection) {
    if (connection->state != UPSTREAM_CLOSING || !upstream_operations_idle(connection)) return;
    upstream_pool_t *pool = connection->pool;
    if (connection->tls_enabled) tls_session_release(&connection->tls);
    if (connection->fd >= 0) loop_close(pool->loop, connection->fd);
    connection->fd = -1;
    connection->state = UPSTREAM_FREE;
    RW_ASSERT(pool->connections_open > 0);
    pool->connections_open--;
    connection->next = pool->free;
    pool->free = connection;
}

static void upstream_on_control_done(loop_operation_t *operation, int32_t result, uint32_t flags) {
    upstream_maybe_free(operation->owner);
}

static void upstream_idle_remove(upstream_connection_t *connection) {
    upstream_pool_t *pool = connection->pool;
    connection->previous->next = connection->next;
    connection->next->previous = connection->previous;
    connection->next = NULL;
    connection->previous = NULL;
    RW_ASSERT(pool->idle_count > 0);
    pool->idle_count--;
}

static void upstream_close(upstream_connection_t *connection) {
    if (connection->state == UPSTREAM_CLOSING || connection->state == UPSTREAM_FREE) return;
    if (connection->state == UPSTREAM_IDLE) upstream_idle_remove(connection);
    connection->state = UPSTREAM_CLOSING;
    connection->events = NULL;
    connection->user = NULL;
    loop_timer_stop(&connection->timer);
    if (!upstream_operations_idle(connection) && connection->fd >= 0) {
        /* Ends whatever is pending; its completion frees the connection. */
        loop_shutdown(connection->pool->loop, &connection->shutdown_operation, connection->fd, SHUT_RDWR);
        loop_cancel(connection->pool->loop, &connection->cancel_operation, &connection->recv_operation);
    }
    upstream_maybe_free(connection);
}

/* Tells the user (once) and closes. */
static void upstream_fail(upstream_connection_t *connection, const char *reason) {
    if (connection->state == UPSTREAM_CLOSING) return;
    connection->failed = true;
    const upstream_events_t *events = connection->events;
    void *user = connection->user;
    bool tell = events != NULL && connection->state != UPSTREAM_IDLE;
    upstream_close(connection);
    if (tell) events->on_failed(user, reason);
}

static void upstream_on_timer(loop_timer_t *timer) {
    upstream_connection_t *connection = timer->owner;
    if (connection->state == UPSTREAM_IDLE) {
        upstream_close(connection);
    } else {
        upstream_fail(connection, connection->state == UPSTREAM_CONNECTING ? "connecting to the upstream timed out"
                                                                             : "the TLS handshake timed out");
    }
}

/* ---- sending ----------------------------------------------------------- */

/* The plaintext of the next record: the current piece alone when it is the
 * last or fills a record (no copy), else as many pieces as fit, gathered
 * into the pool's record buffer. Every piece is a splice of the request, so
 * one record per piece would cost one AEAD pass and record header per
 * splice. The gather starts where the last tls_write stopped, so bytes
 * wolfSSL must see again after an interrupted write come first. */
static const uint8_t *upstream_next_plaintext(upstream_connection_t *connection, size_t *length) {
    const struct iovec *piece = &connection->pieces[connection->piece_index];
    if (connection->piece_index + 1 == connection->piece_count || piece->iov_len >= UPSTREAM_RECORD_PLAINTEXT_BYTES) {
        *length = piece->iov_len;
        return piece->iov_base;
    }
    uint8_t *gathered = connection->pool->record_plaintext;
    size_t filled = 0;
    for (uint32_t index = connection->piece_index; index < connection->piece_count; index++) {
        const struct iovec *next = &connection->pieces[index];
        size_t take = RW_MIN(next->iov_len, (size_t)UPSTREAM_RECORD_PLAINTEXT_BYTES - filled);
        memcpy(gathered + filled, next->iov_base, take);
        filled += take;
        if (filled == UPSTREAM_RECORD_PLAINTEXT_BYTES) break;
    }
    *length = filled;
    return gathered;
}

/* Moves past `bytes` written bytes of the pieces. */
static void upstream_consume_pieces(upstream_connection_t *connection, size_t bytes) {
    while (bytes > 0) {
        RW_ASSERT(connection->piece_index < connection->piece_count);
        struct iovec *piece = &connection->pieces[connection->piece_index];
        size_t take = RW_MIN(bytes, piece->iov_len);
        piece->iov_base = (uint8_t *)piece->iov_base + take;
        piece->iov_len -= take;
        bytes -= take;
        if (piece->iov_len == 0) connection->piece_index++;
    }
}

static void upstream_flush(upstream_connection_t *connection) {
    loop_t *loop = connection->pool->loop;
    RW_ASSERT(!connection->send_operation.in_flight);
    if (connection->tls_enabled) {
        for (;;) {
            size_t pending = 0;
            const uint8_t *ciphertext = tls_output_pending(&connection->tls, &pending);
            if (pending > 0) {
                loop_send(loop, &connection->send_operation, connection->fd, ciphertext, pending);
                return;
            }
            if (connection->state == UPSTREAM_HANDSHAKING) {
                upstream_handshake_step(connection);
                return;
            }
            if (connection->piece_index >= connection->piece_count) break;
            size_t length = 0;
            const uint8_t *plaintext = upstream_next_plaintext(connection, &length);
            size_t written = 0;
            tls_result_t result = tls_write(&connection->tls, plaintext, length, &written);
            upstream_consume_pieces(connection, written);
            if (result == TLS_ERROR || result == TLS_CLOSED) {
                upstream_fail(connection, tls_last_error(&connection->tls));
                return;
            }
        }
    } else if (connection->piece_index < connection->piece_count) {
        memset(&connection->message, 0, sizeof connection->message);
        connection->message.msg_iov = &connection->pieces[connection->piece_index];
        connection->message.msg_iovlen = connection->piece_count - connection->piece_index;
        loop_sendmsg(loop, &connection->send_operation, connection->fd, &connection->message);
        return;
    }
    if (connection->sending) {
        connection->sending = false;
        connection->events->on_sent(connection->user);
    }
}

static void upstream_on_send(loop_operation_t *operation, int32_t result, uint32_t flags) {
    upstream_connection_t *connection = operation->owner;
    if (connection->state == UPSTREAM_CLOSING) {
        upstream_maybe_free(connection);
        return;
    }
    if (result <= 0) {
        upstream_fail(connection, result == 0 ? "the upstream closed the connection while we were sending"
                                              : strerror(-result));
        return;
    }
    if (connection->tls_enabled) {
        tls_output_consume(&connection->tls, (size_t)result);
    } else {
        loop_iovec_advance(connection->pieces, connection->piece_count, &connection->piece_index, (size_t)result);
    }
    upstream_flush(connection);
}

void upstream_send(upstream_connection_t *connection, const struct iovec *pieces, uint32_t count) {
    RW_ASSERT(connection->state == UPSTREAM_READY);
    RW_ASSERT(!connection->sending && count > 0 && count <= UPSTREAM_IOVECS_MAX);
    connection->piece_count = 0;
    connection->piece_index = 0;
    for (uint32_t index = 0; index < count; index++) {
        if (pieces[index].iov_len == 0) continue;
        connection->pieces[connection->piece_count++] = pieces[index];
    }
    connection->sending = true;
    connection->requests++;
    upstream_flush(connection);
}

/* ---- receiving --------------------------------------------------------- */

static void upstream_arm_recv(upstream_connection_t *connection) {
    loop_t *loop = connection->pool->loop;
    if (connection->tls_enabled) {
        size_t space = 0;
        uint8_t *input = tls_input_space(&connection->tls, &space);
        RW_ASSERT(space > 0);
        loop_recv(loop, &connection->recv_operation, connection->fd, input, space);
    } else {
        loop_recv(loop, &connection->recv_operation, connection->fd, connection->destination,
                  connection->destination_capacity);
    }
}

/* Decrypts into the destination. Returns bytes (> 0), 0 when more
 * ciphertext is needed, or -1 when the session ended (closed or failed;
 * *clean tells which). */
static int64_t upstream_decrypt(upstream_connection_t *connection, bool *clean) {
    size_t read_bytes = 0;
    tls_result_t result =
        tls_read(&connection->tls, connection->destination, connection->destination_capacity, &read_bytes);
    if (result == TLS_OK && read_bytes > 0) return (int64_t)read_bytes;
    if (result == TLS_WANT_READ || (result == TLS_OK && read_bytes == 0) || result == TLS_WANT_WRITE) return 0;
    *clean = result == TLS_CLOSED;
    return -1;
}

static void upstream_on_recv(loop_operation_t *operation, int32_t result, uint32_t flags) {
    upstream_connection_t *connection = operation->owner;
    if (connection->state == UPSTREAM_CLOSING) {
        upstream_maybe_free(connection);
        return;
    }
    if (connection->state == UPSTREAM_HANDSHAKING) {
        if (result <= 0) {
            upstream_fail(connection, result == 0 ? "the upstream closed the connection during the TLS handshake"
                                                  : strerror(-result));
            return;
        }
        tls_input_commit(&connection->tls, (size_t)result);
        upstream_handshake_step(connection);
        return;
    }
    RW_ASSERT(connection->receiving);
    if (result < 0) {
        upstream_fail(connection, strerror(-result));
        return;
    }
    if (!connection->tls_enabled) {
        connection->receiving = false;
        connection->events->on_received(connection->user, (size_t)result);
        return;
    }
    if (result == 0) {
        tls_input_end(&connection->tls);
    } else {
        tls_input_commit(&connection->tls, (size_t)result);
    }
    bool clean = false;
    int64_t decrypted = upstream_decrypt(connection, &clean);
    if (decrypted > 0) {
        connection->receiving = false;
        connection->events->on_received(connection->user, (size_t)decrypted);
    } else if (decrypted == 0 && result > 0) {
        upstream_arm_recv(connection);
    } else if (clean || result == 0) {
        /* close_notify, or a plain end of the stream: the user decides
         * whether the response was complete. */
        connection->receiving = false;
        connection->failed = true;
        connection->events->on_received(connection->user, 0);
    } else {
        upstream_fail(connection, tls_last_error(&connection->tls));
    }
}

bool upstream_has_buffered(const upstream_connection_t *connection) {
    return connection->tls_enabled && tls_has_buffered_input(&connection->tls);
}

size_t upstream_receive(upstream_connection_t *connection, uint8_t *destination, size_t capacity) {
    RW_ASSERT(connection->state == UPSTREAM_READY);
    RW_ASSERT(!connection->receiving && capacity > 0);
    connection->destination = destination;
    connection->destination_capacity = capacity;
    if (connection->tls_enabled && tls_has_buffered_input(&connection->tls)) {
        bool clean = false;
        int64_t decrypted = upstream_decrypt(connection, &clean);
        if (decrypted > 0) return (size_t)decrypted;
        if (decrypted < 0 && !clean) {
            /* Report through the callback path so the user sees one shape. */
            connection->receiving = true;
            upstream_fail(connection, tls_last_error(&connection->tls));
            return 0;
        }
    }
    connection->receiving = true;
    upstream_arm_recv(connection);
    return 0;
}

/* ---- connecting -------------------------------------------------------- */

static void upstream_become_ready(upstream_connection_t *connection) {
    loop_timer_stop(&connection->timer);
    connection->state = UPSTREAM_READY;
    connection->events->on_ready(connection->user);
}

static void upstream_handshake_step(upstream_connection_t *connection) {
    tls_result_t result = tls_handshake(&connection->tls);
    size_t pending = 0;
    tls_output_pending(&connection->tls, &pending);
    if (result == TLS_ERROR || result == TLS_CLOSED) {
        upstream_fail(connection, tls_last_error(&connection->tls));
        return;
    }
    if (pending > 0) {
        if (!connection->send_operation.in_flight) upstream_flush(connection);
        return;
    }
    if (result == TLS_OK) {
        connection->pool->handshakes++;
        upstream_become_ready(connection);
        return;
    }
    if (!connection->recv_operation.in_flight) upstream_arm_recv(connection);
}

static void upstream_on_connect(loop_operation_t *operation, int32_t result, uint32_t flags) {
    upstream_connection_t *connection = operation->owner;
    if (connection->state == UPSTREAM_CLOSING) {
        upstream_maybe_free(connection);
        return;
    }
    if (result < 0) {
        char reason[160];
        snprintf(reason, sizeof reason, "cannot connect to the upstream: %s", strerror(-result));
        upstream_fail(connection, reason);
        return;
    }
    if (!connection->tls_enabled) {
        upstream_become_ready(connection);
        return;
    }
    connection->state = UPSTREAM_HANDSHAKING;
    upstream_handshake_step(connection);
}

upstream_connection_t *upstream_acquire(upstream_pool_t *pool, const upstream_events_t *events, void *user,
                                        bool *reused) {
    RW_ASSERT(events != NULL);
    if (pool->idle.next != &pool->idle) {
        upstream_connection_t *connection = pool->idle.next;
        upstream_idle_remove(connection);
        loop_timer_stop(&connection->timer);
        connection->state = UPSTREAM_READY;
        connection->events = events;
        connection->user = user;
        pool->reuses++;
        *reused = true;
        return connection;
    }
    upstream_connection_t *connection = pool->free;
    if (connection == NULL) return NULL;
    int fd = socket(pool->address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return NULL;
    pool->free = connection->next;
    pool->connections_open++;
    uint32_t index = (uint32_t)(connection - pool->connections);
    memset(connection, 0, sizeof *connection);
    connection->pool = pool;
    connection->fd = fd;
    connection->events = events;
    connection->user = user;
    connection->connect_operation = (loop_operation_t){.callback = upstream_on_connect, .owner = connection};
    connection->send_operation = (loop_operation_t){.callback = upstream_on_send, .owner = connection};
    connection->recv_operation = (loop_operation_t){.callback = upstream_on_recv, .owner = connection};
    connection->shutdown_operation = (loop_operation_t){.callback = upstream_on_control_done, .owner = connection};
    connection->cancel_operation = (loop_operation_t){.callback = upstream_on_control_done, .owner = connection};
    loop_timer_init(&connection->timer, upstream_on_timer, connection);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (pool->upstream->tls) {
        uint8_t *memory = pool->tls_memory + (size_t)index * 2 * UPSTREAM_TLS_BUFFER_BYTES;
        if (tls_session_init(&connection->tls, pool->tls, false, pool->server_name, memory, UPSTREAM_TLS_BUFFER_BYTES,
                             memory + UPSTREAM_TLS_BUFFER_BYTES, UPSTREAM_TLS_BUFFER_BYTES) != 0) {
            close(fd);
            connection->fd = -1;
            connection->state = UPSTREAM_FREE;
            pool->connections_open--;
            connection->next = pool->free;
            pool->free = connection;
            return NULL;
        }
        connection->tls_enabled = true;
    }
    connection->state = UPSTREAM_CONNECTING;
    loop_timer_start(pool->loop, &pool->connect_timers, &connection->timer);
    loop_connect(pool->loop, &connection->connect_operation, fd, (struct sockaddr *)&pool->address,
                 pool->address_length);
    *reused = false;
    return connection;
}

void upstream_release(upstream_connection_t *connection, bool reusable) {
    RW_ASSERT(connection->state == UPSTREAM_READY || connection->state == UPSTREAM_CONNECTING ||
              connection->state == UPSTREAM_HANDSHAKING);
    upstream_pool_t *pool = connection->pool;
    if (!reusable || connection->failed || connection->state != UPSTREAM_READY ||
        !upstream_operations_idle(connection) || connection->sending || connection->receiving ||
        (connection->tls_enabled && tls_has_buffered_input(&connection->tls))) {
        upstream_close(connection);
        return;
    }
    connection->state = UPSTREAM_IDLE;
    connection->events = NULL;
    connection->user = NULL;
    connection->next = pool->idle.next;
    connection->previous = &pool->idle;
    pool->idle.next->previous = connection;
    pool->idle.next = connection;
    pool->idle_count++;
    loop_timer_start(pool->loop, &pool->keepalive_timers, &connection->timer);
}

int upstream_pool_init(upstream_pool_t *pool, loop_t *loop, const config_upstream_t *upstream, tls_context_t *tls,
                       uint32_t connections_max, uint32_t keepalive_ms, char *error, size_t error_size) {
    RW_ASSERT(connections_max > 0);
    memset(pool, 0, sizeof *pool);
    pool->loop = loop;
    pool->upstream = upstream;
    pool->tls = tls;
    pool->connections_max = connections_max;
    if (loop_resolve(upstream->host, upstream->port, &pool->address, &pool->address_length, error, error_size) != 0) {
        return -1;
    }
    pool->connections = mmap(NULL, sizeof(upstream_connection_t) * connections_max, PROT_READ | PROT_WRITE,
                             MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    if (pool->connections == MAP_FAILED) {
        snprintf(error, error_size, "cannot map the upstream pool: %s", strerror(errno));
        return -1;
    }
    if (upstream->tls) {
        RW_ASSERT(tls != NULL);
        pool->tls_memory = mmap(NULL, (size_t)2 * UPSTREAM_TLS_BUFFER_BYTES * connections_max, PROT_READ | PROT_WRITE,
                                MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
        if (pool->tls_memory == MAP_FAILED) {
            snprintf(error, error_size, "cannot map the upstream TLS buffers: %s", strerror(errno));
            return -1;
        }
        pool->record_plaintext = mmap(NULL, UPSTREAM_RECORD_PLAINTEXT_BYTES, PROT_READ | PROT_WRITE,
                                      MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
        if (pool->record_plaintext == MAP_FAILED) {
            snprintf(error, error_size, "cannot map the upstream record buffer: %s", strerror(errno));
            return -1;
        }
        const char *name = upstream->sni[0] != '\0' ? upstream->sni : upstream->host;
        pool->server_name = name;
    }
    for (uint32_t index = connections_max; index-- > 0;) {
        pool->connections[index].fd = -1;
        pool->connections[index].next = pool->free;
        pool->free = &pool->connections[index];
    }
    pool->idle.next = &pool->idle;
    pool->idle.previous = &pool->idle;
    loop_timer_list_init(loop, &pool->connect_timers, upstream->connect_ms);
    loop_timer_list_init(loop, &pool->keepalive_timers, keepalive_ms);
    loop_timer_list_init(loop, &pool->first_byte_timers, upstream->first_byte_ms);
    loop_timer_list_init(loop, &pool->idle_gap_timers, upstream->idle_ms);
    return 0;
}
