/* Connections to one upstream from one thread: a fixed pool with keep-alive
 * reuse, non-blocking connect through the ring, TLS over buffers, and byte
 * transport for the relay (which owns all HTTP meaning). A connection is
 * used by one relay stream at a time, from upstream_acquire to
 * upstream_release. */
#ifndef RINGWAY_UPSTREAM_H
#define RINGWAY_UPSTREAM_H

#include "ringway/common.h"
#include "ringway/config.h"
#include "ringway/loop.h"
#include "ringway/tls.h"

#include <sys/socket.h>
#include <sys/uio.h>

typedef struct upstream_pool upstream_pool_t;
typedef struct upstream_connection upstream_connection_t;

enum { UPSTREAM_IOVECS_MAX = 16, UPSTREAM_POOL_TIMER_LISTS = 4 };

/* What the user of a connection hears. Each callback is the end of the
 * operation it names; none is called after upstream_release. */
typedef struct upstream_events {
    /* Connected (and TLS established): upstream_send may start. */
    void (*on_ready)(void *user);
    /* Anything fatal: connect refused or timed out, TLS failure, a send or
     * receive error. The connection is already being closed; the user
     * must not call upstream_release. */
    void (*on_failed)(void *user, const char *reason);
    void (*on_sent)(void *user);
    /* `bytes` landed at the receive destination; 0 means the upstream
     * closed the connection cleanly. */
    void (*on_received)(void *user, size_t bytes);
} upstream_events_t;

struct upstream_connection {
    loop_operation_t connect_operation;
    loop_operation_t send_operation;
    loop_operation_t recv_operation;
    loop_operation_t shutdown_operation;
    loop_operation_t cancel_operation;
    loop_timer_t timer; /* connect timeout, then keep-alive expiry while pooled */
    upstream_pool_t *pool;
    upstream_connection_t *next; /* free or idle list */
    upstream_connection_t *previous;
    const upstream_events_t *events;
    void *user;
    int fd;
    enum {
        UPSTREAM_FREE,
        UPSTREAM_CONNECTING,
        UPSTREAM_HANDSHAKING,
        UPSTREAM_READY,   /* acquired, usable */
        UPSTREAM_IDLE,    /* pooled for reuse */
        UPSTREAM_CLOSING, /* waiting for its operations to end */
    } state;
    bool failed;
    bool tls_enabled;
    uint32_t requests;
    tls_session_t tls;
    /* Sends: pieces copied here so the caller's array may be temporary. */
    struct iovec pieces[UPSTREAM_IOVECS_MAX];
    uint32_t piece_count;
    uint32_t piece_index;
    bool sending;
    struct msghdr message;
    /* Receives. */
    uint8_t *destination;
    size_t destination_capacity;
    bool receiving;
};

struct upstream_pool {
    loop_t *loop;
    const config_upstream_t *upstream;
    tls_context_t *tls;
    struct sockaddr_storage address;
    socklen_t address_length;
    upstream_connection_t *connections;
    uint8_t *tls_memory;
    /* TLS upstreams: a request's pieces are gathered here, a record's
     * plaintext at a time, and encrypted as one record (upstream_flush). */
    uint8_t *record_plaintext;
    uint32_t connections_max;
    uint32_t connections_open;
    upstream_connection_t *free;
    upstream_connection_t idle; /* sentinel of the idle list, most recent first */
    uint32_t idle_count;
    loop_timer_list_t connect_timers;
    loop_timer_list_t keepalive_timers;
    /* For the relay's own per-upstream timeouts. */
    loop_timer_list_t first_byte_timers;
    loop_timer_list_t idle_gap_timers;
    const char *server_name; /* SNI and verified name; NULL for none */
    uint64_t handshakes;
    uint64_t reuses;
};

/* Resolves the upstream's address (start-up only) and maps the pool. */
int upstream_pool_init(upstream_pool_t *pool, loop_t *loop, const config_upstream_t *upstream,
                       tls_context_t *tls, uint32_t connections_max, uint32_t keepalive_ms,
                       char *error, size_t error_size);

/* Takes an idle connection (ready now: *reused = true, no on_ready) or
 * starts a new one (on_ready or on_failed follows). NULL when the pool is
 * exhausted. */
upstream_connection_t *upstream_acquire(upstream_pool_t *pool, const upstream_events_t *events, void *user,
                                        bool *reused);
/* Sends all pieces (their memory untouched until on_sent). One at a time. */
void upstream_send(upstream_connection_t *connection, const struct iovec *pieces, uint32_t count);
/* Delivers response bytes to destination. Returns the bytes available at
 * once (TLS plaintext already decrypted, no callback), or 0 when a receive
 * was started (on_received follows). One at a time. */
size_t upstream_receive(upstream_connection_t *connection, uint8_t *destination, size_t capacity);
/* True when response bytes are already buffered (decrypted or not) so that
 * upstream_receive can return some without waiting for the network. */
bool upstream_has_buffered(const upstream_connection_t *connection);
/* The user is done: reusable connections go back to the idle pool (and may
 * serve the next request at once); others are closed. */
void upstream_release(upstream_connection_t *connection, bool reusable);

#endif
