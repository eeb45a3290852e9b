/* Unit tests for src/server/server.c: a real server on a loopback port with
 * a tiny handler, running on a real io_uring loop in the test's main thread,
 * driven by a real client socket from a second thread. Covered: a request
 * and its exact response bytes, keep-alive reuse, pipelining, a request
 * split byte by byte, a chunked request body, 100-continue, HTTP/1.0 close,
 * the 400 / 413 / 431 / 408 refusals, the connection pool refusing when full
 * (and a freed slot serving again), the exchange pool's static 503, the
 * large-body slot, running out of provided buffers, on_abort when the client
 * leaves mid-response, a handler's own abort, and the keep-alive idle
 * timeout. Three tests show known bugs in src/server and are skipped (with
 * a reason on stderr) unless RINGWAY_RUN_KNOWN_BUGS=1.
 *
 * Bounds: the client's sockets time out after TEST_CLIENT_TIMEOUT_MS, the
 * loop stops at a wall-clock deadline, and every retry loop has a count, so
 * a bug fails a test instead of hanging the suite. Timing facts are only
 * lower bounds that hold on a busy machine (the idle close comes no earlier
 * than the keep-alive time after the request was sent). */
#include "ringway/server.h"

#include "unit.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    TEST_TICK_MS = 5,
    TEST_RUN_TIMEOUT_MS = 8000,
    TEST_CLIENT_TIMEOUT_MS = 3000,
    TEST_CLIENT_BUFFER_BYTES = 32768,
    TEST_EXCHANGES_MAX = 8,
    TEST_REPLY_BYTES = 512,
    TEST_LOG_MAX = 32,
    TEST_INSTANCE = 0x1234abcd,
    TEST_THREAD_INDEX = 7,
    TEST_BODY_BYTES_MAX = 8192,
    TEST_HEAD_BYTES_MAX = 1024,
};

/* ---- the handler (runs on the loop thread) ------------------------------ */

typedef struct test_request_record {
    char target[64];
    char body[256];
    size_t body_length;
    bool first_on_connection;
    char request_id[SERVER_REQUEST_ID_BYTES];
} test_request_record_t;

static test_request_record_t test_log[TEST_LOG_MAX];
static atomic_uint test_log_count;
static char test_replies[TEST_EXCHANGES_MAX][TEST_REPLY_BYTES];
enum { TEST_HELD_MAX = 4 };
static server_exchange_t *test_held[TEST_HELD_MAX]; /* "/hold": answered when the client asks */
static server_exchange_t *test_streaming; /* "/stream": one chunk sent, then nothing */
static server_exchange_t *test_aborted;   /* on_abort seen; released on the next tick */
static server_exchange_t *test_cutting;   /* "/cut": one chunk, then the handler aborts */
static atomic_bool test_release_held;
static atomic_uint test_abort_count;
static atomic_uint test_sent_count;
static atomic_uint test_released_count;
static atomic_bool test_client_finished;
static atomic_bool test_stop_wanted; /* the client asks the loop thread to call server_stop */
static atomic_bool test_stopped;
static server_t *test_server;

static void test_copy_span(char *out, size_t capacity, const uint8_t *bytes, size_t length) {
    size_t step = RW_MIN(length, capacity - 1);
    memcpy(out, bytes, step);
    out[step] = '\0';
}

/* "/hold" and "/stream" are held as described above; anything else is
 * answered at once with "target=T body=N:BODY". */
static void test_on_request(server_exchange_t *exchange) {
    const http_request_t *request = &exchange->request;
    uint32_t index = atomic_load(&test_log_count);
    test_request_record_t *record = &test_log[index < TEST_LOG_MAX ? index : TEST_LOG_MAX - 1];
    test_copy_span(record->target, sizeof record->target, exchange->buffer + request->target.offset,
                   request->target.length);
    test_copy_span(record->body, sizeof record->body, server_body(exchange), exchange->body_length);
    record->body_length = exchange->body_length;
    record->first_on_connection = exchange->first_on_connection;
    rw_copy_text(record->request_id, sizeof record->request_id, exchange->request_id);
    atomic_store(&test_log_count, index + 1);

    if (strcmp(record->target, "/hold") == 0) {
        bool kept = false;
        for (int slot = 0; slot < TEST_HELD_MAX && !kept; slot++) {
            if (test_held[slot] == NULL) {
                test_held[slot] = exchange;
                kept = true;
            }
        }
        RW_ASSERT(kept);
        return;
    }
    if (strcmp(record->target, "/cut") == 0) {
        test_cutting = exchange;
        server_begin(exchange, 200, "text/plain", -1, NULL);
        static const char part[] = "half";
        struct iovec piece = {.iov_base = (void *)part, .iov_len = sizeof part - 1};
        server_send(exchange, &piece, 1, false);
        return;
    }
    if (strcmp(record->target, "/stream") == 0) {
        test_streaming = exchange;
        server_begin(exchange, 200, "text/plain", -1, NULL);
        static const char part[] = "part-1";
        struct iovec piece = {.iov_base = (void *)part, .iov_len = sizeof part - 1};
        server_send(exchange, &piece, 1, false);
        return;
    }
    char *reply = test_replies[server_exchange_index(exchange)];
    if (strcmp(record->target, "/sum") == 0) {
        /* For bodies too long to echo: their length and a position-weighted sum. */
        uint64_t sum = 0;
        for (size_t at = 0; at < exchange->body_length; at++) sum += (at + 1) * server_body(exchange)[at];
        int length = snprintf(reply, TEST_REPLY_BYTES, "length=%zu sum=%llu", exchange->body_length,
                              (unsigned long long)sum);
        server_respond(exchange, 200, "text/plain", reply, (size_t)length, NULL);
        return;
    }
    int length = snprintf(reply, TEST_REPLY_BYTES, "target=%s body=%zu:%.*s", record->target, exchange->body_length,
                          (int)exchange->body_length, (const char *)server_body(exchange));
    server_respond(exchange, 200, "text/plain", reply, (size_t)RW_MIN(length, TEST_REPLY_BYTES - 1), NULL);
}

static void test_on_sent(server_exchange_t *exchange) {
    atomic_fetch_add(&test_sent_count, 1);
    /* The handler gives up once its first chunk is out. */
    if (exchange == test_cutting) {
        test_cutting = NULL;
        server_exchange_abort(exchange);
    }
}

static void test_on_abort(server_exchange_t *exchange) {
    /* The handler may still hold the exchange; it lets go on the next tick,
     * as the relay does after draining. */
    test_aborted = exchange;
    if (exchange == test_streaming) test_streaming = NULL;
    for (int slot = 0; slot < TEST_HELD_MAX; slot++) {
        if (test_held[slot] == exchange) test_held[slot] = NULL;
    }
    atomic_fetch_add(&test_abort_count, 1);
}

/* ---- the loop thread's side ---------------------------------------------- */

static void (*test_server_tick)(loop_t *loop);
static uint64_t test_deadline_ms;
static bool test_timed_out;

static void test_on_tick(loop_t *loop) {
    test_server_tick(loop);
    if (test_aborted != NULL) {
        server_exchange_release(test_aborted);
        test_aborted = NULL;
        atomic_fetch_add(&test_released_count, 1);
    }
    for (int slot = 0; slot < TEST_HELD_MAX && atomic_load(&test_release_held); slot++) {
        if (test_held[slot] == NULL) continue;
        static const char held_reply[] = "released";
        server_exchange_t *exchange = test_held[slot];
        test_held[slot] = NULL;
        server_respond(exchange, 200, "text/plain", held_reply, sizeof held_reply - 1, NULL);
    }
    if (atomic_load(&test_stop_wanted) && !atomic_load(&test_stopped)) {
        server_stop(test_server);
        atomic_store(&test_stopped, true);
    }
    if (atomic_load(&test_client_finished)) {
        loop->stopping = true;
    } else if (loop_clock_ms() > test_deadline_ms) {
        test_timed_out = true;
        loop->stopping = true;
    }
}

typedef struct test_setup {
    uint32_t connections_max;
    uint32_t exchanges_max;
    uint64_t header_timeout_ms;
    uint64_t body_timeout_ms;
    uint64_t keepalive_timeout_ms;
    uint32_t loop_buffer_count; /* provided receive buffers of 1 KiB; 0: 64 of 4 KiB */
} test_setup_t;

static uint16_t test_port;

/* Reserves a free loopback port: a socket bound with SO_REUSEPORT (and not
 * listening, so it takes no connections) keeps anyone else off the port
 * while the server binds it too. */
static int test_reserve_port(uint16_t *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    RW_ASSERT(fd >= 0);
    int one = 1;
    RW_ASSERT(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
    RW_ASSERT(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    RW_ASSERT(bind(fd, (struct sockaddr *)&address, sizeof address) == 0);
    socklen_t length = sizeof address;
    RW_ASSERT(getsockname(fd, (struct sockaddr *)&address, &length) == 0);
    *port = ntohs(address.sin_port);
    return fd;
}

static void (*test_client_function)(void);
static void *test_client_main(void *unused) {
    test_client_function();
    return NULL;
}

/* Starts a server on a fresh port, runs `client` in a second thread while
 * the loop serves, and returns once the client is done (or the deadline
 * passed: a failure). */
static void test_serve(const test_setup_t *setup, void (*client)(void)) {
    memset(test_log, 0, sizeof test_log);
    atomic_store(&test_log_count, 0);
    memset(test_held, 0, sizeof test_held);
    test_streaming = NULL;
    test_aborted = NULL;
    test_cutting = NULL;
    atomic_store(&test_release_held, false);
    atomic_store(&test_abort_count, 0);
    atomic_store(&test_sent_count, 0);
    atomic_store(&test_released_count, 0);
    atomic_store(&test_client_finished, false);
    atomic_store(&test_stop_wanted, false);
    atomic_store(&test_stopped, false);

    static loop_t loop;
    char error[256];
    uint32_t buffer_count = setup->loop_buffer_count != 0 ? setup->loop_buffer_count : 64;
    uint32_t buffer_bytes = setup->loop_buffer_count != 0 ? 1024 : 4096;
    if (loop_init(&loop, 256, buffer_count, buffer_bytes, error, sizeof error) != 0) {
        fprintf(stderr, "  loop_init: %s\n", error);
        CHECK(!"loop_init failed");
        return;
    }
    int reservation = test_reserve_port(&test_port);
    server_config_t config = {
        .host = "127.0.0.1",
        .port = test_port,
        .connections_max = setup->connections_max,
        .exchanges_max = setup->exchanges_max,
        .request_buffer_bytes = 4096,
        .large_bodies_max = 1,
        .body_bytes_max = TEST_BODY_BYTES_MAX,
        .head_bytes_max = TEST_HEAD_BYTES_MAX,
        .header_timeout_ms = setup->header_timeout_ms,
        .body_timeout_ms = setup->body_timeout_ms,
        .keepalive_timeout_ms = setup->keepalive_timeout_ms,
        .tls = NULL,
        .handlers = {.on_request = test_on_request, .on_sent = test_on_sent, .on_abort = test_on_abort},
        .handler_context = NULL,
        .thread_index = TEST_THREAD_INDEX,
        .instance = TEST_INSTANCE,
    };
    RW_ASSERT(setup->exchanges_max <= TEST_EXCHANGES_MAX);
    server_t *server = NULL;
    int status = server_init(&server, &loop, &config, error, sizeof error);
    close(reservation);
    if (status != 0) {
        fprintf(stderr, "  server_init: %s\n", error);
        CHECK(!"server_init failed");
        loop_destroy(&loop);
        return;
    }
    test_server = server;
    server_start(server);
    test_server_tick = loop.on_tick;
    loop.on_tick = test_on_tick;
    test_deadline_ms = loop_clock_ms() + TEST_RUN_TIMEOUT_MS;
    test_timed_out = false;

    pthread_t thread;
    test_client_function = client;
    RW_ASSERT(pthread_create(&thread, NULL, test_client_main, NULL) == 0);
    loop_run(&loop, TEST_TICK_MS);
    pthread_join(thread, NULL);
    if (test_timed_out) fprintf(stderr, "  the server test did not finish within %d ms\n", TEST_RUN_TIMEOUT_MS);
    CHECK(!test_timed_out);
    /* The server has no destroy call: its pools stay mapped (small here)
     * and its listening socket open; the ring goes. */
    loop_destroy(&loop);
}

/* ---- the client's side (second thread) ------------------------------------ */

typedef struct test_client {
    int fd;
    char buffer[TEST_CLIENT_BUFFER_BYTES];
    size_t length;
} test_client_t;

typedef struct test_response {
    int status;
    char head[2048];
    size_t head_length;
    char body[4096];
    size_t body_length;
    bool chunked;
} test_response_t;

static bool test_connect(test_client_t *client) {
    client->length = 0;
    client->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    RW_ASSERT(client->fd >= 0);
    struct timeval timeout = {.tv_sec = TEST_CLIENT_TIMEOUT_MS / 1000, .tv_usec = (TEST_CLIENT_TIMEOUT_MS % 1000) * 1000};
    setsockopt(client->fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(client->fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    int one = 1;
    setsockopt(client->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(test_port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(client->fd, (struct sockaddr *)&address, sizeof address) != 0) {
        fprintf(stderr, "  connect: %s\n", strerror(errno));
        return false;
    }
    return true;
}

static void test_close(test_client_t *client) {
    if (client->fd >= 0) close(client->fd);
    client->fd = -1;
}

static bool test_send_bytes(test_client_t *client, const void *bytes, size_t length) {
    const uint8_t *cursor = bytes;
    while (length > 0) {
        ssize_t sent = send(client->fd, cursor, length, MSG_NOSIGNAL);
        if (sent <= 0) return false;
        cursor += sent;
        length -= (size_t)sent;
    }
    return true;
}

static bool test_send_text(test_client_t *client, const char *text) {
    return test_send_bytes(client, text, strlen(text));
}

/* Receives more bytes into the client's buffer: > 0 bytes, 0 end of
 * stream, -1 error or timeout. */
static ssize_t test_receive_more(test_client_t *client) {
    if (client->length == sizeof client->buffer) return -1;
    ssize_t received = recv(client->fd, client->buffer + client->length, sizeof client->buffer - client->length, 0);
    if (received > 0) client->length += (size_t)received;
    return received;
}

static void test_consume(test_client_t *client, size_t length) {
    memmove(client->buffer, client->buffer + length, client->length - length);
    client->length -= length;
}

/* Finds `text` in the head (case-sensitive: the server's spelling). */
static const char *test_head_find(const test_response_t *response, const char *text) {
    return strstr(response->head, text);
}

/* Reads one whole response (Content-Length or chunked body); bytes after it
 * stay buffered for the next. False on timeout, early end or bad framing. */
static bool test_read_response(test_client_t *client, test_response_t *response) {
    memset(response, 0, sizeof *response);
    for (uint32_t round = 0;; round++) {
        char *end = memmem(client->buffer, client->length, "\r\n\r\n", 4);
        if (end != NULL) {
            response->head_length = (size_t)(end + 4 - client->buffer);
            break;
        }
        if (round > 10000 || test_receive_more(client) <= 0) return false;
    }
    if (response->head_length >= sizeof response->head) return false;
    memcpy(response->head, client->buffer, response->head_length);
    response->head[response->head_length] = '\0';
    test_consume(client, response->head_length);
    if (sscanf(response->head, "HTTP/1.1 %3d ", &response->status) != 1) return false;
    const char *length_field = test_head_find(response, "Content-Length: ");
    if (length_field != NULL) {
        size_t length = strtoul(length_field + 16, NULL, 10);
        if (length > sizeof response->body) return false;
        for (uint32_t round = 0; client->length < length; round++) {
            if (round > 10000 || test_receive_more(client) <= 0) return false;
        }
        memcpy(response->body, client->buffer, length);
        response->body_length = length;
        test_consume(client, length);
        return true;
    }
    if (test_head_find(response, "Transfer-Encoding: chunked\r\n") == NULL) return false;
    response->chunked = true;
    for (uint32_t chunks = 0; chunks < 1000; chunks++) {
        char *line_end = NULL;
        for (uint32_t round = 0; (line_end = memmem(client->buffer, client->length, "\r\n", 2)) == NULL; round++) {
            if (round > 10000 || test_receive_more(client) <= 0) return false;
        }
        size_t size = strtoul(client->buffer, NULL, 16);
        size_t line_length = (size_t)(line_end + 2 - client->buffer);
        for (uint32_t round = 0; client->length < line_length + size + 2; round++) {
            if (round > 10000 || test_receive_more(client) <= 0) return false;
        }
        if (response->body_length + size > sizeof response->body) return false;
        memcpy(response->body + response->body_length, client->buffer + line_length, size);
        response->body_length += size;
        if (memcmp(client->buffer + line_length + size, "\r\n", 2) != 0) return false;
        test_consume(client, line_length + size + 2);
        if (size == 0) return true;
    }
    return false;
}

/* True when the server ends the connection (end of stream or reset) with
 * no further bytes. */
static bool test_read_end(test_client_t *client) {
    if (client->length > 0) return false;
    char byte;
    ssize_t received = recv(client->fd, &byte, 1, 0);
    return received == 0 || (received < 0 && errno == ECONNRESET);
}

static bool test_body_is(const test_response_t *response, const char *expected) {
    bool same = response->body_length == strlen(expected) && memcmp(response->body, expected, response->body_length) == 0;
    if (!same) fprintf(stderr, "  body \"%.*s\", expected \"%s\"\n", (int)response->body_length, response->body, expected);
    return same;
}

static void test_client_done(void) { atomic_store(&test_client_finished, true); }

static void test_pause_ms(uint32_t milliseconds) {
    struct timespec pause = {.tv_sec = milliseconds / 1000, .tv_nsec = (long)(milliseconds % 1000) * 1000000};
    nanosleep(&pause, NULL);
}

static const test_setup_t test_default_setup = {
    .connections_max = 4, .exchanges_max = 4, .header_timeout_ms = 2000, .body_timeout_ms = 2000,
    .keepalive_timeout_ms = 2000};

/* ---- the tests --------------------------------------------------------------- */

/* A GET and a POST on one keep-alive connection: the exact response bytes
 * (status line, headers in order, the request id made of the instance, the
 * thread and a counter), the handler sees target and body, and only the
 * first request is marked first on its connection. */
static void test_client_request_and_keepalive(void) {
    test_client_t client;
    test_response_t response;
    CHECK(test_connect(&client));
    CHECK(test_send_text(&client, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test_read_response(&client, &response));
    static const char expected_head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
                                        "x-request-id: req_1234abcd070000000001\r\n\r\n";
    CHECK_EQ_BYTES(response.head, response.head_length, expected_head);
    CHECK(test_body_is(&response, "target=/hello body=0:"));
    CHECK(test_send_text(&client, "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"));
    CHECK(test_read_response(&client, &response));
    CHECK_EQ_INT(response.status, 200);
    CHECK(test_head_find(&response, "x-request-id: req_1234abcd070000000002\r\n") != NULL);
    CHECK(test_head_find(&response, "Connection: close") == NULL);
    CHECK(test_body_is(&response, "target=/v1/echo body=11:hello world"));
    CHECK(test_send_text(&client, "GET /third HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, "target=/third body=0:"));
    test_close(&client);
    test_client_done();
}

static void test_request_and_keepalive(void) {
    test_serve(&test_default_setup, test_client_request_and_keepalive);
    CHECK_EQ_INT(atomic_load(&test_log_count), 3);
    CHECK(test_log[0].first_on_connection);
    CHECK(!test_log[1].first_on_connection);
    CHECK(!test_log[2].first_on_connection);
    CHECK(strcmp(test_log[1].body, "hello world") == 0);
    CHECK(strcmp(test_log[2].request_id, "req_1234abcd070000000003") == 0);
}

/* Two requests in one write, then a POST with its body and a GET in one
 * write: answered in order, each body intact. */
static void test_client_pipelining(void) {
    test_client_t client;
    test_response_t response;
    CHECK(test_connect(&client));
    CHECK(test_send_text(&client, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, "target=/a body=0:"));
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, "target=/b body=0:"));
    CHECK(test_send_text(&client, "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n12345"
                                  "GET /d HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                                  "GET /f HTTP/1.1\r\nHost: x\r\n\r\n"));
    static const char *const expected[4] = {"target=/c body=5:12345", "target=/d body=0:", "target=/e body=5:abcde",
                                            "target=/f body=0:"};
    for (int index = 0; index < 4; index++) {
        CHECK(test_read_response(&client, &response));
        CHECK(test_body_is(&response, expected[index]));
    }
    test_close(&client);
    test_client_done();
}

static void test_pipelining(void) {
    test_serve(&test_default_setup, test_client_pipelining);
    CHECK_EQ_INT(atomic_load(&test_log_count), 6);
}

/* A POST sent one byte per send (TCP_NODELAY, a pause between bytes) is
 * assembled into one request with its whole body; then a chunked request
 * byte by byte too. */
static void test_client_byte_by_byte(void) {
    test_client_t client;
    test_response_t response;
    CHECK(test_connect(&client));
    static const char request[] = "POST /split HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789";
    for (size_t index = 0; index < sizeof request - 1; index++) {
        CHECK(test_send_bytes(&client, request + index, 1));
        if (index % 8 == 0) test_pause_ms(1);
    }
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, "target=/split body=10:0123456789"));
    static const char chunked[] = "POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  "4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n";
    for (size_t index = 0; index < sizeof chunked - 1; index++) {
        CHECK(test_send_bytes(&client, chunked + index, 1));
        if (index % 8 == 0) test_pause_ms(1);
    }
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, "target=/chunks body=9:wikipedia"));
    test_close(&client);
    test_client_done();
}

static void test_byte_by_byte(void) {
    test_serve(&test_default_setup, test_client_byte_by_byte);
    CHECK_EQ_INT(atomic_load(&test_log_count), 2);
}

/* Expect: 100-continue gets the interim response before the body is sent;
 * an HTTP/1.0 request is answered with Connection: close and the
 * connection ends. */
static void test_client_continue_and_http10(void) {
    test_client_t client;
    test_response_t response;
    CHECK(test_connect(&client));
    CHECK(test_send_text(&client, "POST /wait HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"));
    static const char interim[] = "HTTP/1.1 100 Continue\r\n\r\n";
    for (uint32_t round = 0; client.length < sizeof interim - 1 && round < 100; round++) {
        if (test_receive_more(&client) <= 0) break;
    }
    CHECK(client.length >= sizeof interim - 1 && memcmp(client.buffer, interim, sizeof interim - 1) == 0);
    if (client.length >= sizeof interim - 1) test_consume(&client, sizeof interim - 1);
    CHECK(test_send_text(&client, "body"));
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, "target=/wait body=4:body"));
    test_close(&client);

    CHECK(test_connect(&client));
    CHECK(test_send_text(&client, "GET /old HTTP/1.0\r\n\r\n"));
    CHECK(test_read_response(&client, &response));
    CHECK_EQ_INT(response.status, 200);
    CHECK(test_head_find(&response, "Connection: close\r\n") != NULL);
    CHECK(test_body_is(&response, "target=/old body=0:"));
    CHECK(test_read_end(&client));
    test_close(&client);
    test_client_done();
}

static void test_continue_and_http10(void) { test_serve(&test_default_setup, test_client_continue_and_http10); }

/* One refused request: `request` is sent, the response must have `status`
 * and an OpenAI error body with `code`, Connection: close, then the end. */
static void test_expect_refusal(const char *request, size_t request_length, int status, const char *code) {
    test_client_t client;
    test_response_t response;
    CHECK(test_connect(&client));
    CHECK(test_send_bytes(&client, request, request_length));
    CHECK(test_read_response(&client, &response));
    CHECK_EQ_INT(response.status, status);
    CHECK(test_head_find(&response, "Content-Type: application/json\r\n") != NULL);
    CHECK(test_head_find(&response, "Connection: close\r\n") != NULL);
    char code_member[96];
    snprintf(code_member, sizeof code_member, "\"code\":\"%s\"}}", code);
    response.body[RW_MIN(response.body_length, sizeof response.body - 1)] = '\0';
    CHECK(strncmp(response.body, "{\"error\":{\"message\":\"", 21) == 0);
    CHECK(strstr(response.body, "\"type\":\"invalid_request_error\",\"param\":null,") != NULL);
    CHECK(response.body_length > strlen(code_member) &&
          strcmp(response.body + response.body_length - strlen(code_member), code_member) == 0);
    CHECK(test_read_end(&client));
    test_close(&client);
}

/* A malformed head is 400; a declared body over body_bytes_max is 413
 * before any body byte is sent; a head over head_bytes_max is 431; none
 * reaches the handler, and the server still serves afterwards. */
static void test_client_refusals(void) {
    static const char bad_head[] = "GET /x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n";
    test_expect_refusal(bad_head, sizeof bad_head - 1, 400, "invalid_request");
    char large_body[128];
    int length = snprintf(large_body, sizeof large_body, "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n",
                          TEST_BODY_BYTES_MAX + 1);
    test_expect_refusal(large_body, (size_t)length, 413, "request_too_large");
    static char large_head[2 * TEST_HEAD_BYTES_MAX];
    length = snprintf(large_head, sizeof large_head, "GET /x HTTP/1.1\r\nHost: x\r\nX-Filler: ");
    memset(large_head + length, 'f', TEST_HEAD_BYTES_MAX);
    length += TEST_HEAD_BYTES_MAX;
    length += snprintf(large_head + length, sizeof large_head - (size_t)length, "\r\n\r\n");
    test_expect_refusal(large_head, (size_t)length, 431, "invalid_request");

    /* A chunked body whose total passes the cap is 413 as it arrives. */
    test_client_t client;
    test_response_t response;
    CHECK(test_connect(&client));
    char chunked[64];
    length = snprintf(chunked, sizeof chunked, "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n",
                      TEST_BODY_BYTES_MAX + 1);
    CHECK(test_send_bytes(&client, chunked, (size_t)length));
    static char filler[TEST_BODY_BYTES_MAX + 1];
    memset(filler, 'z', sizeof filler);
    (void)test_send_bytes(&client, filler, sizeof filler); /* the server may close before taking it all */
    CHECK(test_read_response(&client, &response));
    CHECK_EQ_INT(response.status, 413);
    test_close(&client);

    CHECK(test_connect(&client));
    CHECK(test_send_text(&client, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, "target=/after body=0:"));
    test_close(&client);
    test_client_done();
}

static void test_refusals(void) {
    test_serve(&test_default_setup, test_client_refusals);
    CHECK_EQ_INT(atomic_load(&test_log_count), 1);
    CHECK(strcmp(test_log[0].target, "/after") == 0);
}

/* A head that stops arriving is answered 408 after the header timeout. */
static void test_client_header_timeout(void) {
    test_client_t client;
    test_response_t response;
    CHECK(test_connect(&client));
    uint64_t sent_ms = loop_clock_ms();
    CHECK(test_send_text(&client, "GET /slow HTTP/1.1\r\nHost:"));
    CHECK(test_read_response(&client, &response));
    uint64_t answered_ms = loop_clock_ms();
    CHECK_EQ_INT(response.status, 408);
    CHECK(answered_ms >= sent_ms + 300);
    CHECK(test_head_find(&response, "Connection: close\r\n") != NULL);
    CHECK(test_read_end(&client));
    test_close(&client);
    test_client_done();
}

static void test_header_timeout(void) {
    test_setup_t setup = test_default_setup;
    setup.header_timeout_ms = 300;
    setup.keepalive_timeout_ms = 2 * TEST_CLIENT_TIMEOUT_MS;
    test_serve(&setup, test_client_header_timeout);
    CHECK_EQ_INT(atomic_load(&test_log_count), 0);
}

/* Connects until a request on a new connection is served (a slot freed by a
 * closed connection comes back once the server has seen the close); bounded
 * by a count of attempts. */
static bool test_served_on_new_connection(test_client_t *client, const char *target) {
    char request[128];
    snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", target);
    for (uint32_t attempt = 0; attempt < 100; attempt++) {
        if (!test_connect(client)) return false;
        test_response_t response;
        if (test_send_text(client, request) && test_read_response(client, &response) && response.status == 200) {
            return true;
        }
        test_close(client);
        test_pause_ms(20);
    }
    return false;
}

/* With connections_max 2, a third connection is closed at once without a
 * byte; the two served connections keep working; once one closes, a new
 * connection is served in its slot. */
static void test_client_connection_pool(void) {
    test_client_t first, second, third;
    test_response_t response;
    CHECK(test_connect(&first));
    CHECK(test_send_text(&first, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test_read_response(&first, &response));
    CHECK(test_connect(&second));
    CHECK(test_send_text(&second, "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test_read_response(&second, &response));
    CHECK(test_connect(&third));
    (void)test_send_text(&third, "GET /3 HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(test_read_end(&third));
    test_close(&third);
    CHECK(test_send_text(&second, "GET /2again HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test_read_response(&second, &response));
    CHECK(test_body_is(&response, "target=/2again body=0:"));
    test_close(&first);
    CHECK(test_served_on_new_connection(&third, "/4"));
    test_close(&third);
    test_close(&second);
    test_client_done();
}

static void test_connection_pool_full(void) {
    test_setup_t setup = test_default_setup;
    setup.connections_max = 2;
    test_serve(&setup, test_client_connection_pool);
    /* /3 never reached the handler. */
    for (uint32_t index = 0; index < atomic_load(&test_log_count) && index < TEST_LOG_MAX; index++) {
        CHECK(strcmp(test_log[index].target, "/3") != 0);
    }
}

/* With one exchange, held by a request the handler has not answered, a
 * second connection's request gets the static 503 (byte for byte) and the
 * connection ends; once the held request is answered, the exchange serves
 * again. */
static void test_client_exchange_pool(void) {
    test_client_t holder, refused;
    test_response_t response;
    CHECK(test_connect(&holder));
    CHECK(test_send_text(&holder, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"));
    for (uint32_t wait = 0; atomic_load(&test_log_count) == 0 && wait < 200; wait++) test_pause_ms(5);
    CHECK_EQ_INT(atomic_load(&test_log_count), 1);
    CHECK(test_connect(&refused));
    CHECK(test_send_text(&refused, "GET /busy HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test_read_response(&refused, &response));
    static const char busy_head[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                    "Content-Length: 120\r\nx-request-id: refused\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";
    CHECK_EQ_BYTES(response.head, response.head_length, busy_head);
    CHECK(test_body_is(&response, "{\"error\":{\"message\":\"the server is at capacity, retry shortly\","
                                  "\"type\":\"server_error\",\"param\":null,\"code\":\"server_busy\"}}"));
    CHECK(test_read_end(&refused));
    test_close(&refused);
    atomic_store(&test_release_held, true);
    CHECK(test_read_response(&holder, &response));
    CHECK(test_body_is(&response, "released"));
    CHECK(test_send_text(&holder, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test_read_response(&holder, &response));
    CHECK(test_body_is(&response, "target=/next body=0:"));
    test_close(&holder);
    test_client_done();
}

static void test_exchange_pool_full(void) {
    test_setup_t setup = test_default_setup;
    setup.exchanges_max = 1;
    test_serve(&setup, test_client_exchange_pool);
    CHECK_EQ_INT(atomic_load(&test_log_count), 2);
    CHECK(strcmp(test_log[1].target, "/next") == 0);
}

/* The client reads the first chunk of a streamed response and leaves: the
 * handler hears on_abort once, releases the exchange, and the connection's
 * slot (the only one) serves a new connection. */
static void test_client_abort(void) {
    test_client_t client;
    CHECK(test_connect(&client));
    CHECK(test_send_text(&client, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"));
    static const char expected[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                                   "x-request-id: req_1234abcd070000000001\r\n\r\n6\r\npart-1\r\n";
    for (uint32_t round = 0; client.length < sizeof expected - 1 && round < 100; round++) {
        if (test_receive_more(&client) <= 0) break;
    }
    CHECK_EQ_BYTES(client.buffer, client.length, expected);
    /* The first chunk's send completes: on_sent, once, before we leave. */
    for (uint32_t wait = 0; atomic_load(&test_sent_count) == 0 && wait < 400; wait++) test_pause_ms(5);
    CHECK_EQ_INT(atomic_load(&test_sent_count), 1);
    test_close(&client);
    for (uint32_t wait = 0; atomic_load(&test_released_count) == 0 && wait < 400; wait++) test_pause_ms(5);
    CHECK_EQ_INT(atomic_load(&test_abort_count), 1);
    CHECK_EQ_INT(atomic_load(&test_released_count), 1);
    CHECK(test_served_on_new_connection(&client, "/fresh"));
    test_close(&client);
    test_client_done();
}

static void test_abort_when_client_leaves(void) {
    test_setup_t setup = test_default_setup;
    setup.connections_max = 1;
    test_serve(&setup, test_client_abort);
    CHECK_EQ_INT(atomic_load(&test_abort_count), 1);
    /* on_sent came for the first chunk only, none after the client left. */
    CHECK_EQ_INT(atomic_load(&test_sent_count), 1);
}

/* An idle keep-alive connection is closed by the server, never earlier than
 * the keep-alive time after the request was sent (the timer starts after
 * the response's last byte, which comes after the request). */
static void test_client_idle_timeout(void) {
    test_client_t client;
    test_response_t response;
    CHECK(test_connect(&client));
    uint64_t sent_ms = loop_clock_ms();
    CHECK(test_send_text(&client, "GET /idle HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test_read_response(&client, &response));
    CHECK(test_head_find(&response, "Connection: close") == NULL);
    CHECK(test_read_end(&client));
    uint64_t closed_ms = loop_clock_ms();
    CHECK(closed_ms >= sent_ms + 300);
    CHECK(closed_ms < sent_ms + TEST_CLIENT_TIMEOUT_MS);
    test_close(&client);
    test_client_done();
}

static void test_idle_keepalive_timeout(void) {
    test_setup_t setup = test_default_setup;
    setup.keepalive_timeout_ms = 300;
    /* Longer than the client waits: a close by the wrong timer fails. */
    setup.header_timeout_ms = 2 * TEST_CLIENT_TIMEOUT_MS;
    test_serve(&setup, test_client_idle_timeout);
    CHECK_EQ_INT(atomic_load(&test_log_count), 1);
}

/* The reply "/sum" gives for `body`. */
static void test_expected_sum(const uint8_t *body, size_t length, char *out, size_t capacity) {
    uint64_t sum = 0;
    for (size_t index = 0; index < length; index++) sum += (index + 1) * body[index];
    snprintf(out, capacity, "length=%zu sum=%llu", length, (unsigned long long)sum);
}

/* Bodies larger than the request buffer (4096) but within the cap move to
 * the one large-body slot, for a Content-Length and a chunked body alike;
 * while one request holds the slot, a second large body is refused 503
 * server_busy, and once the first is answered the slot serves again. */
static void test_client_large_bodies(void) {
    static uint8_t body[7000];
    for (size_t index = 0; index < sizeof body; index++) body[index] = (uint8_t)('A' + (index * 7) % 26);
    char expected[64];
    test_expected_sum(body, sizeof body, expected, sizeof expected);
    test_client_t client, other;
    test_response_t response;
    CHECK(test_connect(&client));
    char head[128];
    int length = snprintf(head, sizeof head, "POST /sum HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", sizeof body);
    CHECK(test_send_bytes(&client, head, (size_t)length));
    CHECK(test_send_bytes(&client, body, sizeof body));
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, expected));

    /* Chunked, 1000 bytes per chunk, on the same connection. */
    CHECK(test_send_text(&client, "POST /sum HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
    for (size_t offset = 0; offset < sizeof body; offset += 1000) {
        char size_line[16];
        int size_length = snprintf(size_line, sizeof size_line, "%x\r\n", 1000);
        CHECK(test_send_bytes(&client, size_line, (size_t)size_length));
        CHECK(test_send_bytes(&client, body + offset, 1000));
        CHECK(test_send_text(&client, "\r\n"));
    }
    CHECK(test_send_text(&client, "0\r\n\r\n"));
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, expected));

    /* The slot is taken by a body still arriving: a second is refused. The
     * interim 100 shows the server has read the head (and taken the slot). */
    char continue_head[160];
    int continue_length = snprintf(continue_head, sizeof continue_head,
                                   "POST /sum HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n"
                                   "Expect: 100-continue\r\n\r\n", sizeof body);
    CHECK(test_send_bytes(&client, continue_head, (size_t)continue_length));
    static const char interim[] = "HTTP/1.1 100 Continue\r\n\r\n";
    for (uint32_t round = 0; client.length < sizeof interim - 1 && round < 100; round++) {
        if (test_receive_more(&client) <= 0) break;
    }
    CHECK(client.length >= sizeof interim - 1 && memcmp(client.buffer, interim, sizeof interim - 1) == 0);
    if (client.length >= sizeof interim - 1) test_consume(&client, sizeof interim - 1);
    CHECK(test_send_bytes(&client, body, 5000));
    CHECK(test_connect(&other));
    CHECK(test_send_bytes(&other, head, (size_t)length));
    CHECK(test_read_response(&other, &response));
    CHECK_EQ_INT(response.status, 503);
    response.body[RW_MIN(response.body_length, sizeof response.body - 1)] = '\0';
    CHECK(strstr(response.body, "\"code\":\"server_busy\"") != NULL);
    test_close(&other);
    CHECK(test_send_bytes(&client, body + 5000, sizeof body - 5000));
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, expected));
    test_close(&client);
    CHECK(test_connect(&other));
    CHECK(test_send_bytes(&other, head, (size_t)length));
    CHECK(test_send_bytes(&other, body, sizeof body));
    CHECK(test_read_response(&other, &response));
    CHECK(test_body_is(&response, expected));
    test_close(&other);
    test_client_done();
}

static void test_large_bodies(void) {
    test_serve(&test_default_setup, test_client_large_bodies);
    CHECK_EQ_INT(atomic_load(&test_log_count), 4);
}

/* Connection: close on the first of two pipelined requests: only the first
 * is answered (with Connection: close), then the connection ends. A request
 * that arrives while the handler still holds the previous one waits and is
 * answered after it, in order. */
static void test_client_close_and_held_pipelining(void) {
    test_client_t client;
    test_response_t response;
    CHECK(test_connect(&client));
    CHECK(test_send_text(&client, "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                  "GET /never HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, "target=/last body=0:"));
    CHECK(test_head_find(&response, "Connection: close\r\n") != NULL);
    CHECK(test_read_end(&client));
    test_close(&client);

    CHECK(test_connect(&client));
    CHECK(test_send_text(&client, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"));
    for (uint32_t wait = 0; atomic_load(&test_log_count) < 2 && wait < 200; wait++) test_pause_ms(5);
    CHECK(test_send_text(&client, "GET /queued HTTP/1.1\r\nHost: x\r\n\r\n"));
    test_pause_ms(30);
    CHECK_EQ_INT(atomic_load(&test_log_count), 2); /* /queued waits for /hold */
    atomic_store(&test_release_held, true);
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, "released"));
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, "target=/queued body=0:"));
    test_close(&client);
    test_client_done();
}

static void test_close_and_held_pipelining(void) {
    test_serve(&test_default_setup, test_client_close_and_held_pipelining);
    CHECK_EQ_INT(atomic_load(&test_log_count), 3);
    for (uint32_t index = 0; index < atomic_load(&test_log_count) && index < TEST_LOG_MAX; index++) {
        CHECK(strcmp(test_log[index].target, "/never") != 0);
    }
}

/* The handler aborts mid-response (server_exchange_abort after its first
 * chunk): the client gets the chunk, then the connection breaks with no
 * terminating chunk; on_abort is not called (the handler chose it); the
 * only connection slot serves a new connection afterwards. */
static void test_client_handler_abort(void) {
    test_client_t client;
    CHECK(test_connect(&client));
    CHECK(test_send_text(&client, "GET /cut HTTP/1.1\r\nHost: x\r\n\r\n"));
    static const char expected[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                                   "x-request-id: req_1234abcd070000000001\r\n\r\n4\r\nhalf\r\n";
    ssize_t last = 1;
    for (uint32_t round = 0; round < 100; round++) {
        last = test_receive_more(&client);
        if (last <= 0) break;
    }
    CHECK(last == 0 || (last < 0 && errno == ECONNRESET));
    CHECK_EQ_BYTES(client.buffer, client.length, expected);
    test_close(&client);
    CHECK(test_served_on_new_connection(&client, "/whole"));
    test_close(&client);
    test_client_done();
}

static void test_handler_abort(void) {
    test_setup_t setup = test_default_setup;
    setup.connections_max = 1;
    test_serve(&setup, test_client_handler_abort);
    CHECK_EQ_INT(atomic_load(&test_abort_count), 0);
    CHECK_EQ_INT(atomic_load(&test_log_count), 2);
}

/* A second request that starts on a keep-alive connection and stalls is
 * timed by the header timeout, not the (much longer) keep-alive time:
 * 408 comes, long before the keep-alive time would end. */
static void test_client_stalled_second_head(void) {
    test_client_t client;
    test_response_t response;
    CHECK(test_connect(&client));
    CHECK(test_send_text(&client, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, "target=/first body=0:"));
    uint64_t sent_ms = loop_clock_ms();
    CHECK(test_send_text(&client, "GET /second HTTP/1.1\r\nHo"));
    CHECK(test_read_response(&client, &response));
    CHECK_EQ_INT(response.status, 408);
    CHECK(loop_clock_ms() >= sent_ms + 300);
    response.body[RW_MIN(response.body_length, sizeof response.body - 1)] = '\0';
    CHECK(strstr(response.body, "\"message\":\"the request head did not arrive in time\"") != NULL);
    CHECK(test_read_end(&client));
    test_close(&client);
    test_client_done();
}

static void test_stalled_second_head(void) {
    test_setup_t setup = test_default_setup;
    setup.header_timeout_ms = 300;
    setup.keepalive_timeout_ms = 2 * TEST_CLIENT_TIMEOUT_MS;
    test_serve(&setup, test_client_stalled_second_head);
    CHECK_EQ_INT(atomic_load(&test_log_count), 1);
}

/* Receive buffers run out: two connections each hold one (a second request
 * arrives while the handler holds their first), so a third connection's
 * receive fails for want of buffers; it is re-armed on ticks and served as
 * soon as the held bytes are taken, and the held requests are served too. */
static void test_client_buffer_starvation(void) {
    test_client_t holders[2], starved;
    test_response_t response;
    for (int index = 0; index < 2; index++) {
        CHECK(test_connect(&holders[index]));
        CHECK(test_send_text(&holders[index], "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"));
        for (uint32_t wait = 0; atomic_load(&test_log_count) < (uint32_t)index + 1 && wait < 200; wait++) {
            test_pause_ms(5);
        }
        CHECK(test_send_text(&holders[index], index == 0 ? "GET /queued-0 HTTP/1.1\r\nHost: x\r\n\r\n"
                                                         : "GET /queued-1 HTTP/1.1\r\nHost: x\r\n\r\n"));
    }
    test_pause_ms(30);
    CHECK(test_connect(&starved));
    CHECK(test_send_text(&starved, "GET /starved HTTP/1.1\r\nHost: x\r\n\r\n"));
    test_pause_ms(50);
    CHECK_EQ_INT(atomic_load(&test_log_count), 2); /* nothing more could be read */
    atomic_store(&test_release_held, true);
    CHECK(test_read_response(&starved, &response));
    CHECK(test_body_is(&response, "target=/starved body=0:"));
    for (int index = 0; index < 2; index++) {
        CHECK(test_read_response(&holders[index], &response));
        CHECK(test_body_is(&response, "released"));
        CHECK(test_read_response(&holders[index], &response));
        CHECK(test_body_is(&response, index == 0 ? "target=/queued-0 body=0:" : "target=/queued-1 body=0:"));
        test_close(&holders[index]);
    }
    test_close(&starved);
    test_client_done();
}

static void test_buffer_starvation(void) {
    test_setup_t setup = test_default_setup;
    setup.loop_buffer_count = 2;
    test_serve(&setup, test_client_buffer_starvation);
    CHECK_EQ_INT(atomic_load(&test_log_count), 5);
}

/* A burst of pipelined requests larger than the request buffer and than
 * one receive buffer, in one write: requests straddle buffer ends, the
 * leftover of one exchange plus held bytes make the next; every request is
 * answered once, in order. */
enum { TEST_BURST_REQUESTS = 120, TEST_LARGE_BURST_REQUESTS = 1000 };
static int test_burst_requests;

static void test_client_pipelined_burst(void) {
    static char burst[TEST_LARGE_BURST_REQUESTS * 128];
    size_t length = 0;
    for (int index = 0; index < test_burst_requests; index++) {
        /* Lengths vary so boundaries fall everywhere. */
        length += (size_t)snprintf(burst + length, sizeof burst - length,
                                   "GET /p-%03d HTTP/1.1\r\nHost: x\r\nX-Pad: %.*s\r\n\r\n", index,
                                   1 + (index * 37) % 60,
                                   "................................................................");
    }
    test_client_t client;
    test_response_t response;
    CHECK(test_connect(&client));
    CHECK(test_send_bytes(&client, burst, length));
    int answered = 0;
    for (int index = 0; index < test_burst_requests; index++) {
        if (!test_read_response(&client, &response)) break;
        char expected[64];
        snprintf(expected, sizeof expected, "target=/p-%03d body=0:", index);
        if (!test_body_is(&response, expected)) break;
        answered++;
    }
    CHECK_EQ_INT(answered, test_burst_requests);
    test_close(&client);
    test_client_done();
}

static void test_pipelined_burst(void) {
    test_burst_requests = TEST_BURST_REQUESTS;
    test_serve(&test_default_setup, test_client_pipelined_burst);
    CHECK_EQ_INT(atomic_load(&test_log_count), TEST_BURST_REQUESTS);
}

/* Known bug, skipped unless RINGWAY_RUN_KNOWN_BUGS=1 (see the report of
 * issue 7): the same burst, about 72 KB. The multishot receive fills
 * provided buffers faster than the cancel issued after the first held one
 * takes effect; at SERVER_HELD_BUFFERS_MAX (8) held buffers server_on_recv
 * closes the connection, so after the first response the other 999
 * requests, already received, are dropped without an answer (here from
 * about 36 KB: the 4 KiB request buffer plus 8 held 4 KiB buffers). Bounded,
 * but as silent loss rather than backpressure: the bytes could stay in the
 * socket. */
static void test_large_pipelined_burst(void) {
    const char *run = getenv("RINGWAY_RUN_KNOWN_BUGS");
    if (run == NULL || strcmp(run, "1") != 0) {
        fprintf(stderr, "SKIP test_large_pipelined_burst: known bug, a pipelined burst over the held-buffer bound closes the "
               "connection after one response (set RINGWAY_RUN_KNOWN_BUGS=1 to run)\n");
        return;
    }
    test_burst_requests = TEST_LARGE_BURST_REQUESTS;
    test_serve(&test_default_setup, test_client_pipelined_burst);
    CHECK_EQ_INT(atomic_load(&test_log_count), TEST_LARGE_BURST_REQUESTS);
}

/* A body that stops arriving is answered 408 after the body timeout (the
 * head came in time), with the body-specific message. */
static void test_client_body_timeout(void) {
    test_client_t client;
    test_response_t response;
    CHECK(test_connect(&client));
    uint64_t sent_ms = loop_clock_ms();
    CHECK(test_send_text(&client, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345"));
    CHECK(test_read_response(&client, &response));
    CHECK(loop_clock_ms() >= sent_ms + 300);
    CHECK_EQ_INT(response.status, 408);
    response.body[RW_MIN(response.body_length, sizeof response.body - 1)] = '\0';
    CHECK(strstr(response.body, "\"message\":\"the request body did not arrive in time\"") != NULL);
    CHECK(strstr(response.body, "\"code\":\"request_timeout\"") != NULL);
    CHECK(test_read_end(&client));
    test_close(&client);
    test_client_done();
}

static void test_body_timeout(void) {
    test_setup_t setup = test_default_setup;
    setup.body_timeout_ms = 300;
    setup.header_timeout_ms = 2 * TEST_CLIENT_TIMEOUT_MS;
    setup.keepalive_timeout_ms = 2 * TEST_CLIENT_TIMEOUT_MS;
    test_serve(&setup, test_client_body_timeout);
    CHECK_EQ_INT(atomic_load(&test_log_count), 0);
}

/* server.h: server_stop "stops accepting; open connections end as their
 * exchanges end". After the stop, a request on a keep-alive connection that
 * was open before is still answered, but its response must say
 * Connection: close and the connection must end. */
static void test_client_stop(void) {
    test_client_t client;
    test_response_t response;
    CHECK(test_connect(&client));
    CHECK(test_send_text(&client, "GET /before HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test_read_response(&client, &response));
    CHECK(test_head_find(&response, "Connection: close") == NULL);
    atomic_store(&test_stop_wanted, true);
    for (uint32_t wait = 0; !atomic_load(&test_stopped) && wait < 400; wait++) test_pause_ms(5);
    CHECK(atomic_load(&test_stopped));
    CHECK(test_send_text(&client, "GET /after-stop HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(test_read_response(&client, &response));
    CHECK(test_body_is(&response, "target=/after-stop body=0:"));
    CHECK(test_head_find(&response, "Connection: close\r\n") != NULL);
    CHECK(test_read_end(&client));
    test_close(&client);
    test_client_done();
}

/* Known bug, skipped unless RINGWAY_RUN_KNOWN_BUGS=1 (see the report of
 * issue 7): server_format_head decides keep-alive without looking at
 * server->accepting, so after server_stop an open keep-alive connection
 * keeps serving request after request, each answered as keep-alive, and
 * ends only once it sits idle for the keep-alive time. */
static void test_stop_ends_keepalive_connections(void) {
    const char *run = getenv("RINGWAY_RUN_KNOWN_BUGS");
    if (run == NULL || strcmp(run, "1") != 0) {
        fprintf(stderr, "SKIP test_stop_ends_keepalive_connections: known bug, server_stop leaves keep-alive connections "
               "serving (set RINGWAY_RUN_KNOWN_BUGS=1 to run)\n");
        return;
    }
    test_serve(&test_default_setup, test_client_stop);
}

/* server.h: "If the client goes away while the handler owns the exchange,
 * on_abort is called". Here the client sends a second (pipelined) request
 * while the handler holds its first, then leaves. The bytes of the second
 * request are held and the receive is cancelled, so nothing watches the
 * socket: the client's end is not seen, and on_abort does not come while
 * the handler keeps the exchange (for the relay: a whole non-streamed
 * upstream response, with client_disconnect = cancel not honoured). */
static void test_client_leaves_with_pipelined_bytes(void) {
    test_client_t client;
    CHECK(test_connect(&client));
    CHECK(test_send_text(&client, "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n"));
    for (uint32_t wait = 0; atomic_load(&test_log_count) == 0 && wait < 200; wait++) test_pause_ms(5);
    CHECK(test_send_text(&client, "GET /queued HTTP/1.1\r\nHost: x\r\n\r\n"));
    test_pause_ms(20);
    test_close(&client);
    for (uint32_t wait = 0; atomic_load(&test_abort_count) == 0 && wait < 200; wait++) test_pause_ms(5);
    CHECK_EQ_INT(atomic_load(&test_abort_count), 1);
    atomic_store(&test_release_held, true);
    test_client_done();
}

/* Known bug, skipped unless RINGWAY_RUN_KNOWN_BUGS=1 (see the report of
 * issue 7): server_on_recv cancels the multishot receive while received
 * bytes are held and re-arms it only once they are taken, so a client that
 * pipelined bytes behind a request the handler still serves can leave
 * unnoticed until the handler's next send fails. */
static void test_abort_seen_with_pipelined_bytes(void) {
    const char *run = getenv("RINGWAY_RUN_KNOWN_BUGS");
    if (run == NULL || strcmp(run, "1") != 0) {
        fprintf(stderr, "SKIP test_abort_seen_with_pipelined_bytes: known bug, a client leaving with pipelined bytes held "
               "gets no on_abort while the handler holds the exchange (set RINGWAY_RUN_KNOWN_BUGS=1 to run)\n");
        return;
    }
    test_serve(&test_default_setup, test_client_leaves_with_pipelined_bytes);
}

static bool test_io_uring_available(void) {
    loop_t loop;
    char error[256];
    if (loop_init(&loop, 8, 4, 1024, error, sizeof error) != 0) {
        fprintf(stderr, "SKIP test_server: %s\n", error);
        return false;
    }
    loop_destroy(&loop);
    return true;
}

int main(void) {
    if (!test_io_uring_available()) return UNIT_REPORT();
    RUN_TEST(test_request_and_keepalive);
    RUN_TEST(test_pipelining);
    RUN_TEST(test_byte_by_byte);
    RUN_TEST(test_continue_and_http10);
    RUN_TEST(test_refusals);
    RUN_TEST(test_header_timeout);
    RUN_TEST(test_connection_pool_full);
    RUN_TEST(test_exchange_pool_full);
    RUN_TEST(test_abort_when_client_leaves);
    RUN_TEST(test_idle_keepalive_timeout);
    RUN_TEST(test_body_timeout);
    RUN_TEST(test_large_bodies);
    RUN_TEST(test_close_and_held_pipelining);
    RUN_TEST(test_handler_abort);
    RUN_TEST(test_stalled_second_head);
    RUN_TEST(test_buffer_starvation);
    RUN_TEST(test_pipelined_burst);
    RUN_TEST(test_stop_ends_keepalive_connections);
    RUN_TEST(test_abort_seen_with_pipelined_bytes);
    RUN_TEST(test_large_pipelined_burst);
    return UNIT_REPORT();
}
