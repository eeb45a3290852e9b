/* sseload: the benchmark's load generator for OpenAI-style chat completions
 * over HTTP/1.1 keep-alive, plain or TLS (wolfSSL), streamed (SSE) or not.
 *
 * One thread, one epoll set, non-blocking sockets, every connection's state
 * allocated once at start: it holds tens of thousands of concurrent streams
 * on one core. For each request it measures the time to the first response
 * byte, the time to the first SSE event, the gap between consecutive events
 * of a stream (and how much later than the expected pace each one came), the
 * whole request time, events/s, requests/s, errors by kind and stalls. It
 * never judges a figure: it prints them as one JSON object on stdout.
 *
 * Usage (bench/run.py drives it; `sseload --help` lists every option):
 *   sseload --url http://127.0.0.1:8080/v1/chat/completions --body req.json
 *           --connections 1000 --duration-ms 5000 --pace-ms 20
 *
 * Connections start spread evenly over --ramp-ms. Each sends its requests
 * back to back on one keep-alive connection until --duration-ms has passed
 * (or --requests in total, or --requests-per-connection each); requests in
 * flight then get --grace-ms to finish. Every observation counts in the
 * measuring window it happens in: --warmup-ms opens the window later and
 * --measure-ms closes it (by default it spans the run), so a run can hold N
 * streams through their start-up and report only the steady state; what
 * falls outside is reported apart. With --hold a connection that has done
 * its requests stays open, idle, until the end (memory measurements);
 * --ready prints "READY ..." on stderr once every connection has had its
 * first response (or first event) or failed. SIGINT/SIGTERM end the run at
 * once, still printing the report. */
#include "ringway/common.h"

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    SSELOAD_BODIES_MAX = 16,
    SSELOAD_HEADERS_MAX = 16,
    SSELOAD_REQUEST_BYTES_MAX = 64 * 1024,
    SSELOAD_HEAD_BYTES_MAX = 8 * 1024,
    SSELOAD_READ_BYTES = 64 * 1024,
    SSELOAD_EVENT_PREFIX_BYTES = 16,
    SSELOAD_EPOLL_EVENTS = 1024,
    SSELOAD_CONNECTIONS_MAX = 1000000,
    SSELOAD_RETRY_MS = 50,
    SSELOAD_SWEEP_MS = 100,
    /* Histogram: values below 32 exactly, then 32 sub-buckets per power of
     * two up to 2^45 (relative error under 3.2%). */
    SSELOAD_HISTOGRAM_SUB_BITS = 5,
    SSELOAD_HISTOGRAM_BUCKETS = 32 + (45 - 5) * 32,
};

/* ---- histogram -------------------------------------------------------- */

typedef struct sseload_histogram {
    uint64_t counts[SSELOAD_HISTOGRAM_BUCKETS];
    uint64_t count;
    uint64_t sum;
    uint64_t max;
} sseload_histogram_t;

static uint32_t sseload_histogram_index(uint64_t value) {
    if (value < 32) return (uint32_t)value;
    uint32_t exponent = 63u - (uint32_t)__builtin_clzll(value);
    if (exponent >= 45) return SSELOAD_HISTOGRAM_BUCKETS - 1;
    uint32_t sub = (uint32_t)(value >> (exponent - SSELOAD_HISTOGRAM_SUB_BITS)) & 31u;
    uint32_t index = 32u + (exponent - SSELOAD_HISTOGRAM_SUB_BITS) * 32u + sub;
    RW_ASSERT(index < SSELOAD_HISTOGRAM_BUCKETS);
    return index;
}

/* The middle of the bucket's range, so a percentile is off by at most half a
 * bucket (1.6%). */
static uint64_t sseload_histogram_value(uint32_t index) {
    if (index < 32) return index;
    uint32_t exponent = (index - 32u) / 32u + SSELOAD_HISTOGRAM_SUB_BITS;
    uint64_t sub = (index - 32u) % 32u;
    uint64_t low = (32u + sub) << (exponent - SSELOAD_HISTOGRAM_SUB_BITS);
    uint64_t width = (uint64_t)1 << (exponent - SSELOAD_HISTOGRAM_SUB_BITS);
    return low + width / 2;
}

static void sseload_histogram_add(sseload_histogram_t *histogram, uint64_t value) {
    histogram->counts[sseload_histogram_index(value)]++;
    histogram->count++;
    histogram->sum += value;
    if (value > histogram->max) histogram->max = value;
}

/* The smallest recorded value v with at least `fraction` of all values <= v
 * (bucket resolution); the exact maximum for fraction 1; 0 when empty. */
static uint64_t sseload_histogram_percentile(const sseload_histogram_t *histogram, double fraction) {
    if (histogram->count == 0) return 0;
    if (fraction >= 1.0) return histogram->max;
    uint64_t wanted = (uint64_t)(fraction * (double)histogram->count + 0.5);
    if (wanted == 0) wanted = 1;
    uint64_t seen = 0;
    for (uint32_t index = 0; index < SSELOAD_HISTOGRAM_BUCKETS; index++) {
        seen += histogram->counts[index];
        if (seen >= wanted) return RW_MIN(sseload_histogram_value(index), histogram->max);
    }
    return histogram->max;
}

/* ---- configuration and shared state ----------------------------------- */

typedef struct sseload_options {
    char host[256];
    char port[8];
    char path[1024];
    bool tls;
    const char *ca_file;
    const char *body_files[SSELOAD_BODIES_MAX];
    uint32_t body_count;
    const char *headers[SSELOAD_HEADERS_MAX];
    uint32_t header_count;
    uint32_t connections;
    uint64_t duration_ms;
    uint64_t requests_total;
    uint64_t requests_per_connection;
    uint64_t ramp_ms;
    uint64_t pace_ms;
    uint64_t stall_ms;
    uint64_t timeout_ms;
    uint64_t grace_ms;
    uint64_t warmup_ms;
    uint64_t measure_ms;
    bool hold;
    bool ready;
    bool get;
} sseload_options_t;

typedef struct sseload_request {
    uint8_t *bytes;
    size_t length;
} sseload_request_t;

/* What went wrong with a request or connection. */
typedef enum sseload_error {
    SSELOAD_ERROR_CONNECT,     /* TCP connect failed or timed out */
    SSELOAD_ERROR_TLS,         /* TLS handshake failed */
    SSELOAD_ERROR_STATUS,      /* a status other than 200 */
    SSELOAD_ERROR_TRUNCATED,   /* closed or reset mid-request */
    SSELOAD_ERROR_NO_DONE,     /* an event stream that ended without data: [DONE] */
    SSELOAD_ERROR_TIMEOUT,     /* no byte for --timeout-ms mid-request */
    SSELOAD_ERROR_EVENT_ERROR, /* a data: {"error": ...} event */
    SSELOAD_ERROR_PROTOCOL,    /* malformed response, or bytes nobody asked for */
    SSELOAD_ERROR_COUNT,
} sseload_error_t;

static const char *const sseload_error_names[SSELOAD_ERROR_COUNT] = {
    "connect", "tls", "status", "truncated", "no_done", "timeout", "event_error", "protocol",
};

typedef struct sseload_stats {
    uint64_t requests_started;
    uint64_t requests_completed;
    uint64_t responses_ok;
    uint64_t streams_completed;
    uint64_t events;
    uint64_t bytes_received;
    uint64_t stalls;
    uint64_t idle_closed;
    uint64_t unfinished;
    uint64_t connects;
    uint64_t errors[SSELOAD_ERROR_COUNT];
    uint64_t last_completion_ns;
    sseload_histogram_t ttfb_us;
    sseload_histogram_t first_event_us;
    sseload_histogram_t latency_us;
    sseload_histogram_t gap_us;
    sseload_histogram_t lateness_us;
} sseload_stats_t;

typedef enum sseload_state {
    SSELOAD_STATE_WAITING,    /* not started yet, or waiting to retry */
    SSELOAD_STATE_CONNECTING, /* TCP connect in progress */
    SSELOAD_STATE_HANDSHAKE,  /* TLS handshake in progress */
    SSELOAD_STATE_SENDING,    /* request bytes going out */
    SSELOAD_STATE_READING,    /* response coming in */
    SSELOAD_STATE_HOLDING,    /* done with its requests, kept open (--hold) */
    SSELOAD_STATE_DONE,       /* closed for good */
} sseload_state_t;

typedef enum sseload_body_kind {
    SSELOAD_BODY_NONE,
    SSELOAD_BODY_LENGTH,
    SSELOAD_BODY_CHUNKED,
    SSELOAD_BODY_UNTIL_CLOSE,
} sseload_body_kind_t;

typedef enum sseload_chunk_state {
    SSELOAD_CHUNK_SIZE,
    SSELOAD_CHUNK_EXTENSION,
    SSELOAD_CHUNK_SIZE_LF,
    SSELOAD_CHUNK_DATA,
    SSELOAD_CHUNK_DATA_CR,
    SSELOAD_CHUNK_DATA_LF,
    SSELOAD_CHUNK_TRAILER_START,
    SSELOAD_CHUNK_TRAILER_LINE,
    SSELOAD_CHUNK_TRAILER_LF,
    SSELOAD_CHUNK_FINAL_LF,
} sseload_chunk_state_t;

typedef struct sseload_connection {
    int fd;
    WOLFSSL *tls;
    sseload_state_t state;
    bool want_write;
    bool ready_counted;
    uint32_t index;
    uint64_t start_at_ns;
    uint64_t last_activity_ns;
    uint64_t requests_done;
    /* The request in flight. */
    const sseload_request_t *request;
    size_t request_sent;
    uint64_t request_sent_ns;
    /* The response head, accumulated until its blank line. */
    uint8_t head[SSELOAD_HEAD_BYTES_MAX];
    size_t head_length;
    bool head_done;
    uint32_t status;
    bool event_stream;
    bool close_after;
    bool first_byte_seen;
    sseload_body_kind_t body_kind;
    uint64_t body_remaining;
    sseload_chunk_state_t chunk_state;
    uint64_t chunk_remaining;
    /* SSE scanning of the decoded body. */
    uint32_t line_length;
    bool event_has_bytes;
    uint8_t event_prefix[SSELOAD_EVENT_PREFIX_BYTES];
    uint32_t event_prefix_length;
    uint64_t last_event_ns;
    bool saw_done;
    bool saw_error_event;
} sseload_connection_t;

static sseload_options_t sseload_options;
static sseload_stats_t sseload_stats;         /* observations inside the measuring window */
static sseload_stats_t sseload_outside_stats; /* observations before or after it */
static uint64_t sseload_window_start_ns;
static uint64_t sseload_window_end_ns;
static uint64_t sseload_in_flight_sum;
static uint64_t sseload_in_flight_samples;
static uint64_t sseload_in_flight_min;
static uint64_t sseload_silence_max_ns; /* longest wait for a stream's next byte seen inside the window */
static sseload_request_t sseload_requests[SSELOAD_BODIES_MAX];
static uint64_t sseload_request_serial;
static sseload_connection_t *sseload_connections;
static struct addrinfo *sseload_address;
static WOLFSSL_CTX *sseload_tls_context;
static int sseload_epoll_fd;
static uint8_t sseload_read_buffer[SSELOAD_READ_BYTES];
static volatile sig_atomic_t sseload_interrupted;
static uint64_t sseload_start_ns;
static uint64_t sseload_deadline_ns;
static uint64_t sseload_ready_count;
static bool sseload_ready_printed;

static uint64_t sseload_now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static void sseload_on_signal(int signal_number) {
    (void)signal_number;
    sseload_interrupted = 1;
}

/* ---- start-up ---------------------------------------------------------- */

static void sseload_usage(FILE *out) {
    fprintf(out,
            "usage: sseload --url http[s]://HOST:PORT/PATH --body FILE [options]\n"
            "  --url URL                  target (POST, or GET with --get); https uses wolfSSL\n"
            "  --ca FILE                  https: verify the server against this CA (default: no verification)\n"
            "  --body FILE                request body (repeatable, up to 16, used in turn)\n"
            "  --get                      send GET requests without a body instead\n"
            "  --header 'Name: value'     extra request header (repeatable)\n"
            "  --connections N            concurrent connections (default 1)\n"
            "  --duration-ms MS           start requests for this long (default 0 = until the request limits)\n"
            "  --requests N               stop after N requests in total (default 0 = no limit)\n"
            "  --requests-per-connection N  each connection makes at most N requests (0 = no limit)\n"
            "  --ramp-ms MS               spread connection starts over this time (default 0)\n"
            "  --pace-ms MS               expected gap between events; lateness = gap - pace (default 0)\n"
            "  --stall-ms MS              a gap longer than this is a stall (default 10 x pace, or 1000)\n"
            "  --timeout-ms MS            no byte for this long on a request in flight = error (default 30000)\n"
            "  --grace-ms MS              after the duration, time for requests in flight (default 5000)\n"
            "  --warmup-ms MS             the measuring window opens MS after the start (default 0)\n"
            "  --measure-ms MS            ... and closes MS later (default: at the end of the run); what\n"
            "                             happens outside the window is reported apart as outside_window\n"
            "  --hold                     keep connections open, idle, after their requests, until the end\n"
            "  --ready                    print READY on stderr once every connection has its first response\n"
            "Prints one JSON object on stdout.\n");
}

static bool sseload_parse_number(const char *text, uint64_t *value) {
    char *end = NULL;
    errno = 0;
    unsigned long long parsed = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0') return false;
    *value = parsed;
    return true;
}

/* Splits http[s]://HOST[:PORT][/PATH] into the options. Refuses anything
 * else (no user info, no IPv6 brackets: the bench targets 127.0.0.1). */
static bool sseload_parse_url(const char *url) {
    const char *rest;
    if (strncmp(url, "http://", 7) == 0) {
        rest = url + 7;
        sseload_options.tls = false;
    } else if (strncmp(url, "https://", 8) == 0) {
        rest = url + 8;
        sseload_options.tls = true;
    } else {
        return false;
    }
    const char *slash = strchr(rest, '/');
    size_t authority_length = slash ? (size_t)(slash - rest) : strlen(rest);
    const char *colon = memchr(rest, ':', authority_length);
    size_t host_length = colon ? (size_t)(colon - rest) : authority_length;
    if (host_length == 0 || host_length >= sizeof sseload_options.host) return false;
    memcpy(sseload_options.host, rest, host_length);
    sseload_options.host[host_length] = '\0';
    const char *port = colon ? colon + 1 : (sseload_options.tls ? "443" : "80");
    size_t port_length = colon ? authority_length - host_length - 1 : strlen(port);
    if (port_length == 0 || port_length >= sizeof sseload_options.port) return false;
    memcpy(sseload_options.port, port, port_length);
    sseload_options.port[port_length] = '\0';
    const char *path = slash ? slash : "/";
    if (strlen(path) >= sizeof sseload_options.path) return false;
    snprintf(sseload_options.path, sizeof sseload_options.path, "%s", path);
    return true;
}

static bool sseload_parse_arguments(int argc, char **argv) {
    sseload_options_t *options = &sseload_options;
    options->connections = 1;
    options->timeout_ms = 30000;
    options->grace_ms = 5000;
    bool have_url = false;
    for (int index = 1; index < argc; index++) {
        const char *name = argv[index];
        if (strcmp(name, "--help") == 0) {
            sseload_usage(stdout);
            exit(0);
        }
        if (strcmp(name, "--hold") == 0) {
            options->hold = true;
            continue;
        }
        if (strcmp(name, "--ready") == 0) {
            options->ready = true;
            continue;
        }
        if (strcmp(name, "--get") == 0) {
            options->get = true;
            continue;
        }
        if (index + 1 >= argc) {
            fprintf(stderr, "sseload: %s needs a value\n", name);
            return false;
        }
        const char *value = argv[++index];
        uint64_t number = 0;
        bool numeric = sseload_parse_number(value, &number);
        if (strcmp(name, "--url") == 0) {
            if (!sseload_parse_url(value)) {
                fprintf(stderr, "sseload: cannot parse --url '%s'\n", value);
                return false;
            }
            have_url = true;
        } else if (strcmp(name, "--ca") == 0) {
            options->ca_file = value;
        } else if (strcmp(name, "--body") == 0) {
            if (options->body_count == SSELOAD_BODIES_MAX) {
                fprintf(stderr, "sseload: at most %d bodies\n", SSELOAD_BODIES_MAX);
                return false;
            }
            options->body_files[options->body_count++] = value;
        } else if (strcmp(name, "--header") == 0) {
            if (options->header_count == SSELOAD_HEADERS_MAX || strchr(value, '\r') || strchr(value, '\n')) {
                fprintf(stderr, "sseload: bad or too many --header\n");
                return false;
            }
            options->headers[options->header_count++] = value;
        } else if (!numeric) {
            fprintf(stderr, "sseload: unknown option '%s' or bad number '%s'\n", name, value);
            return false;
        } else if (strcmp(name, "--connections") == 0) {
            if (number == 0 || number > SSELOAD_CONNECTIONS_MAX) return false;
            options->connections = (uint32_t)number;
        } else if (strcmp(name, "--duration-ms") == 0) {
            options->duration_ms = number;
        } else if (strcmp(name, "--requests") == 0) {
            options->requests_total = number;
        } else if (strcmp(name, "--requests-per-connection") == 0) {
            options->requests_per_connection = number;
        } else if (strcmp(name, "--ramp-ms") == 0) {
            options->ramp_ms = number;
        } else if (strcmp(name, "--pace-ms") == 0) {
            options->pace_ms = number;
        } else if (strcmp(name, "--stall-ms") == 0) {
            options->stall_ms = number;
        } else if (strcmp(name, "--timeout-ms") == 0) {
            options->timeout_ms = number;
        } else if (strcmp(name, "--grace-ms") == 0) {
            options->grace_ms = number;
        } else if (strcmp(name, "--warmup-ms") == 0) {
            options->warmup_ms = number;
        } else if (strcmp(name, "--measure-ms") == 0) {
            options->measure_ms = number;
        } else {
            fprintf(stderr, "sseload: unknown option '%s'\n", name);
            return false;
        }
    }
    if (!have_url || (options->body_count == 0 && !options->get)) {
        fprintf(stderr, "sseload: --url and --body (or --get) are required\n");
        return false;
    }
    if (options->get && options->body_count != 0) {
        fprintf(stderr, "sseload: --get sends no body\n");
        return false;
    }
    if (options->duration_ms == 0 && options->requests_total == 0 && options->requests_per_connection == 0) {
        fprintf(stderr, "sseload: give --duration-ms, --requests or --requests-per-connection\n");
        return false;
    }
    if (options->stall_ms == 0) options->stall_ms = options->pace_ms ? options->pace_ms * 10 : 1000;
    return true;
}

/* Builds the complete request (head + body) for each body file once; with
 * --get, one bodiless GET. */
static bool sseload_build_requests(void) {
    if (sseload_options.get) {
        static uint8_t get_request[4096];
        int written = snprintf((char *)get_request, sizeof get_request, "GET %s HTTP/1.1\r\nHost: %s:%s\r\n",
                               sseload_options.path, sseload_options.host, sseload_options.port);
        RW_ASSERT(written > 0 && (size_t)written < sizeof get_request);
        size_t length = (size_t)written;
        for (uint32_t header = 0; header < sseload_options.header_count; header++) {
            written = snprintf((char *)get_request + length, sizeof get_request - length, "%s\r\n",
                               sseload_options.headers[header]);
            if (written < 0 || (size_t)written >= sizeof get_request - length - 2) return false;
            length += (size_t)written;
        }
        memcpy(get_request + length, "\r\n", 2);
        sseload_requests[0].bytes = get_request;
        sseload_requests[0].length = length + 2;
        sseload_options.body_count = 1;
        return true;
    }
    for (uint32_t index = 0; index < sseload_options.body_count; index++) {
        FILE *file = fopen(sseload_options.body_files[index], "rb");
        if (file == NULL) {
            fprintf(stderr, "sseload: cannot open %s: %s\n", sseload_options.body_files[index], strerror(errno));
            return false;
        }
        static uint8_t body[SSELOAD_REQUEST_BYTES_MAX];
        size_t body_length = fread(body, 1, sizeof body, file);
        bool too_long = !feof(file);
        fclose(file);
        if (too_long) {
            fprintf(stderr, "sseload: %s is larger than %d bytes\n", sseload_options.body_files[index],
                    SSELOAD_REQUEST_BYTES_MAX);
            return false;
        }
        size_t capacity = body_length + 4096;
        uint8_t *bytes = malloc(capacity);
        if (bytes == NULL) return false;
        int written = snprintf((char *)bytes, capacity,
                               "POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
                               "Accept: */*\r\nContent-Length: %zu\r\n",
                               sseload_options.path, sseload_options.host, sseload_options.port, body_length);
        RW_ASSERT(written > 0 && (size_t)written < capacity);
        size_t length = (size_t)written;
        for (uint32_t header = 0; header < sseload_options.header_count; header++) {
            written = snprintf((char *)bytes + length, capacity - length, "%s\r\n", sseload_options.headers[header]);
            if (written < 0 || (size_t)written >= capacity - length - body_length - 2) return false;
            length += (size_t)written;
        }
        memcpy(bytes + length, "\r\n", 2);
        length += 2;
        memcpy(bytes + length, body, body_length);
        length += body_length;
        sseload_requests[index].bytes = bytes;
        sseload_requests[index].length = length;
    }
    return true;
}

/* Raises RLIMIT_NOFILE to cover every connection plus slack; as root the
 * hard limit is raised too. Returns false when the limit stays too low. */
static bool sseload_raise_file_limit(uint64_t wanted) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return false;
    if (limit.rlim_cur >= wanted) return true;
    if (limit.rlim_max < wanted) limit.rlim_max = wanted;
    limit.rlim_cur = wanted;
    if (setrlimit(RLIMIT_NOFILE, &limit) == 0) return true;
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    fprintf(stderr, "sseload: RLIMIT_NOFILE is %llu, %llu wanted\n", (unsigned long long)limit.rlim_cur,
            (unsigned long long)wanted);
    return limit.rlim_cur >= wanted;
}

/* ---- connection life cycle -------------------------------------------- */

static void sseload_close(sseload_connection_t *connection, bool abortive);
static void sseload_send_next(sseload_connection_t *connection, uint64_t now);

static void sseload_watch(sseload_connection_t *connection, bool want_write) {
    struct epoll_event event = {.events = EPOLLIN | (want_write ? EPOLLOUT : 0u), .data.ptr = connection};
    if (connection->want_write == want_write) return;
    connection->want_write = want_write;
    int result = epoll_ctl(sseload_epoll_fd, EPOLL_CTL_MOD, connection->fd, &event);
    RW_ASSERT(result == 0);
}

static uint64_t sseload_errors_total(const sseload_stats_t *stats) {
    uint64_t total = 0;
    for (uint32_t kind = 0; kind < SSELOAD_ERROR_COUNT; kind++) total += stats->errors[kind];
    return total;
}

/* Every observation (a connect, a request started, a byte, an event, a
 * completion, a failure) counts in the window it happens in: the figures
 * describe the measuring window, whatever the streams did before it. */
static sseload_stats_t *sseload_stats_for(uint64_t now) {
    return now >= sseload_window_start_ns && now < sseload_window_end_ns ? &sseload_stats : &sseload_outside_stats;
}

static void sseload_mark_ready(sseload_connection_t *connection) {
    if (connection->ready_counted) return;
    connection->ready_counted = true;
    sseload_ready_count++;
    if (sseload_options.ready && !sseload_ready_printed && sseload_ready_count == sseload_options.connections) {
        sseload_ready_printed = true;
        uint64_t ok = sseload_stats.responses_ok + sseload_outside_stats.responses_ok;
        uint64_t errors = sseload_errors_total(&sseload_stats) + sseload_errors_total(&sseload_outside_stats);
        fprintf(stderr, "READY ok=%llu errors=%llu\n", (unsigned long long)ok, (unsigned long long)errors);
        fflush(stderr);
    }
}

/* Whether this connection may start another request now. */
static bool sseload_may_start(const sseload_connection_t *connection, uint64_t now) {
    const sseload_options_t *options = &sseload_options;
    if (sseload_interrupted) return false;
    if (options->duration_ms != 0 && now >= sseload_deadline_ns) return false;
    uint64_t started = sseload_stats.requests_started + sseload_outside_stats.requests_started;
    if (options->requests_total != 0 && started >= options->requests_total) return false;
    if (options->requests_per_connection != 0 && connection->requests_done >= options->requests_per_connection) {
        return false;
    }
    return true;
}

/* A failed request or connection: counts the error, closes, and retries
 * after SSELOAD_RETRY_MS while requests may still start. The connection
 * counts as ready (it will not get a first response this time). */
static void sseload_fail(sseload_connection_t *connection, sseload_error_t kind, uint64_t now) {
    RW_ASSERT(kind < SSELOAD_ERROR_COUNT);
    sseload_stats_for(now)->errors[kind]++;
    sseload_close(connection, true);
    sseload_mark_ready(connection);
    if (sseload_may_start(connection, now)) {
        connection->state = SSELOAD_STATE_WAITING;
        connection->start_at_ns = now + (uint64_t)SSELOAD_RETRY_MS * 1000000u;
    }
}

static void sseload_begin_connect(sseload_connection_t *connection, uint64_t now) {
    int fd = socket(sseload_address->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "sseload: socket: %s\n", strerror(errno));
        sseload_fail(connection, SSELOAD_ERROR_CONNECT, now);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    connection->fd = fd;
    connection->want_write = true;
    connection->last_activity_ns = now;
    sseload_stats_for(now)->connects++;
    struct epoll_event event = {.events = EPOLLIN | EPOLLOUT, .data.ptr = connection};
    int result = epoll_ctl(sseload_epoll_fd, EPOLL_CTL_ADD, fd, &event);
    RW_ASSERT(result == 0);
    if (connect(fd, sseload_address->ai_addr, sseload_address->ai_addrlen) != 0 && errno != EINPROGRESS) {
        sseload_fail(connection, SSELOAD_ERROR_CONNECT, now);
        return;
    }
    connection->state = SSELOAD_STATE_CONNECTING;
}

/* Closes the socket (abortive: RST, so the load side leaves no TIME_WAIT
 * behind to exhaust loopback ports between runs). */
static void sseload_close(sseload_connection_t *connection, bool abortive) {
    if (connection->tls != NULL) {
        wolfSSL_free(connection->tls);
        connection->tls = NULL;
    }
    if (connection->fd >= 0) {
        if (abortive) {
            struct linger linger = {.l_onoff = 1, .l_linger = 0};
            setsockopt(connection->fd, SOL_SOCKET, SO_LINGER, &linger, sizeof linger);
        }
        close(connection->fd);
        connection->fd = -1;
    }
    connection->state = SSELOAD_STATE_DONE;
    connection->want_write = false;
}

static bool sseload_start_tls(sseload_connection_t *connection) {
    connection->tls = wolfSSL_new(sseload_tls_context);
    if (connection->tls == NULL) return false;
    if (wolfSSL_set_fd(connection->tls, connection->fd) != WOLFSSL_SUCCESS) return false;
    connection->state = SSELOAD_STATE_HANDSHAKE;
    return true;
}

/* Drives the TLS handshake; on completion sends the first request. */
static void sseload_handshake(sseload_connection_t *connection, uint64_t now) {
    int result = wolfSSL_connect(connection->tls);
    if (result == WOLFSSL_SUCCESS) {
        sseload_send_next(connection, now);
        return;
    }
    int error = wolfSSL_get_error(connection->tls, result);
    if (error == WOLFSSL_ERROR_WANT_READ) {
        sseload_watch(connection, false);
    } else if (error == WOLFSSL_ERROR_WANT_WRITE) {
        sseload_watch(connection, true);
    } else {
        sseload_fail(connection, SSELOAD_ERROR_TLS, now);
    }
}

/* Writes what is left of the request. Returns false if the connection
 * failed (already handled). */
static bool sseload_write(sseload_connection_t *connection, uint64_t now) {
    const sseload_request_t *request = connection->request;
    while (connection->request_sent < request->length) {
        const uint8_t *bytes = request->bytes + connection->request_sent;
        size_t left = request->length - connection->request_sent;
        if (connection->tls != NULL) {
            int written = wolfSSL_write(connection->tls, bytes, (int)left);
            if (written > 0) {
                connection->request_sent += (size_t)written;
                continue;
            }
            int error = wolfSSL_get_error(connection->tls, written);
            if (error == WOLFSSL_ERROR_WANT_WRITE || error == WOLFSSL_ERROR_WANT_READ) {
                sseload_watch(connection, error == WOLFSSL_ERROR_WANT_WRITE);
                return true;
            }
            sseload_fail(connection, SSELOAD_ERROR_TRUNCATED, now);
            return false;
        }
        ssize_t written = send(connection->fd, bytes, left, MSG_NOSIGNAL);
        if (written > 0) {
            connection->request_sent += (size_t)written;
            continue;
        }
        if (written < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            sseload_watch(connection, true);
            return true;
        }
        if (written < 0 && errno == EINTR) continue;
        sseload_fail(connection, SSELOAD_ERROR_TRUNCATED, now);
        return false;
    }
    connection->state = SSELOAD_STATE_READING;
    sseload_watch(connection, false);
    return true;
}

static void sseload_reset_response(sseload_connection_t *connection) {
    connection->head_length = 0;
    connection->head_done = false;
    connection->status = 0;
    connection->event_stream = false;
    connection->close_after = false;
    connection->first_byte_seen = false;
    connection->body_kind = SSELOAD_BODY_NONE;
    connection->body_remaining = 0;
    connection->chunk_state = SSELOAD_CHUNK_SIZE;
    connection->chunk_remaining = 0;
    connection->line_length = 0;
    connection->event_has_bytes = false;
    connection->event_prefix_length = 0;
    connection->last_event_ns = 0;
    connection->saw_done = false;
    connection->saw_error_event = false;
}

/* Starts the next request on an open connection, or holds or closes it
 * when its requests are done. */
static void sseload_send_next(sseload_connection_t *connection, uint64_t now) {
    if (!sseload_may_start(connection, now)) {
        if (sseload_options.hold && !sseload_interrupted) {
            connection->state = SSELOAD_STATE_HOLDING;
            sseload_watch(connection, false);
        } else {
            sseload_close(connection, true);
        }
        return;
    }
    connection->request = &sseload_requests[sseload_request_serial++ % sseload_options.body_count];
    connection->request_sent = 0;
    connection->request_sent_ns = now;
    connection->last_activity_ns = now;
    connection->state = SSELOAD_STATE_SENDING;
    sseload_reset_response(connection);
    sseload_stats_for(now)->requests_started++;
    sseload_write(connection, now);
}

/* ---- response parsing --------------------------------------------------- */

static bool sseload_header_is(const uint8_t *line, size_t length, const char *name, const uint8_t **value,
                              size_t *value_length) {
    size_t name_length = strlen(name);
    if (length <= name_length || line[name_length] != ':' || strncasecmp((const char *)line, name, name_length) != 0) {
        return false;
    }
    size_t start = name_length + 1;
    while (start < length && (line[start] == ' ' || line[start] == '\t')) start++;
    size_t end = length;
    while (end > start && (line[end - 1] == ' ' || line[end - 1] == '\t')) end--;
    *value = line + start;
    *value_length = end - start;
    return true;
}

static bool sseload_value_contains(const uint8_t *value, size_t length, const char *token) {
    size_t token_length = strlen(token);
    for (size_t start = 0; start + token_length <= length; start++) {
        if (strncasecmp((const char *)value + start, token, token_length) == 0) return true;
    }
    return false;
}

/* Parses the complete head in connection->head (ending in a blank line).
 * Returns false on a malformed head. */
static bool sseload_parse_head(sseload_connection_t *connection) {
    const uint8_t *head = connection->head;
    size_t length = connection->head_length;
    if (length < 12 || memcmp(head, "HTTP/1.", 7) != 0 || head[8] != ' ') return false;
    uint32_t status = 0;
    for (size_t index = 9; index < 12; index++) {
        if (head[index] < '0' || head[index] > '9') return false;
        status = status * 10 + (uint32_t)(head[index] - '0');
    }
    connection->status = status;
    if (head[7] == '0') connection->close_after = true;
    bool have_length = false;
    size_t position = 0;
    while (position < length) {
        const uint8_t *line_end = memchr(head + position, '\n', length - position);
        if (line_end == NULL) break;
        size_t line_length = (size_t)(line_end - (head + position));
        const uint8_t *line = head + position;
        if (line_length > 0 && line[line_length - 1] == '\r') line_length--;
        const uint8_t *value;
        size_t value_length;
        if (sseload_header_is(line, line_length, "content-length", &value, &value_length)) {
            uint64_t parsed = 0;
            for (size_t index = 0; index < value_length; index++) {
                if (value[index] < '0' || value[index] > '9') return false;
                parsed = parsed * 10 + (uint64_t)(value[index] - '0');
            }
            connection->body_remaining = parsed;
            have_length = true;
        } else if (sseload_header_is(line, line_length, "transfer-encoding", &value, &value_length)) {
            if (sseload_value_contains(value, value_length, "chunked")) connection->body_kind = SSELOAD_BODY_CHUNKED;
        } else if (sseload_header_is(line, line_length, "connection", &value, &value_length)) {
            if (sseload_value_contains(value, value_length, "close")) connection->close_after = true;
        } else if (sseload_header_is(line, line_length, "content-type", &value, &value_length)) {
            if (sseload_value_contains(value, value_length, "text/event-stream")) connection->event_stream = true;
        }
        position += (size_t)(line_end - (head + position)) + 1;
    }
    if (connection->body_kind != SSELOAD_BODY_CHUNKED) {
        if (have_length) {
            connection->body_kind = connection->body_remaining ? SSELOAD_BODY_LENGTH : SSELOAD_BODY_NONE;
        } else if (status == 204 || status == 304) {
            connection->body_kind = SSELOAD_BODY_NONE;
        } else {
            connection->body_kind = SSELOAD_BODY_UNTIL_CLOSE;
            connection->close_after = true;
        }
    }
    return true;
}

/* One complete SSE event (its first bytes in event_prefix). */
static void sseload_on_event(sseload_connection_t *connection, uint64_t now) {
    sseload_stats_t *stats = sseload_stats_for(now);
    stats->events++;
    const uint8_t *prefix = connection->event_prefix;
    uint32_t length = connection->event_prefix_length;
    if (length >= 12 && memcmp(prefix, "data: [DONE]", 12) == 0) connection->saw_done = true;
    if (length >= 15 && memcmp(prefix, "data: {\"error\"", 14) == 0) connection->saw_error_event = true;
    if (connection->last_event_ns == 0) {
        sseload_histogram_add(&stats->first_event_us, (now - connection->request_sent_ns) / 1000u);
        sseload_mark_ready(connection);
    } else {
        uint64_t gap_ns = now - connection->last_event_ns;
        uint64_t pace_ns = sseload_options.pace_ms * 1000000u;
        sseload_histogram_add(&stats->gap_us, gap_ns / 1000u);
        sseload_histogram_add(&stats->lateness_us, gap_ns > pace_ns ? (gap_ns - pace_ns) / 1000u : 0);
        if (gap_ns > sseload_options.stall_ms * 1000000u) stats->stalls++;
    }
    connection->last_event_ns = now;
}

/* Scans decoded body bytes for SSE event boundaries (a blank line; CR
 * bytes are ignored, so LF and CRLF framing both count). */
static void sseload_scan_events(sseload_connection_t *connection, const uint8_t *bytes, size_t length, uint64_t now) {
    size_t position = 0;
    while (position < length) {
        const uint8_t *newline = memchr(bytes + position, '\n', length - position);
        size_t run_end = newline ? (size_t)(newline - bytes) : length;
        for (size_t index = position; index < run_end; index++) {
            if (bytes[index] == '\r') continue;
            connection->line_length++;
            connection->event_has_bytes = true;
            if (connection->event_prefix_length < SSELOAD_EVENT_PREFIX_BYTES) {
                connection->event_prefix[connection->event_prefix_length++] = bytes[index];
            } else {
                connection->line_length += (uint32_t)(run_end - index - 1);
                break;
            }
        }
        if (newline == NULL) return;
        if (connection->line_length == 0 && connection->event_has_bytes) {
            sseload_on_event(connection, now);
            connection->event_has_bytes = false;
            connection->event_prefix_length = 0;
        }
        connection->line_length = 0;
        position = run_end + 1;
    }
}

static void sseload_body_bytes(sseload_connection_t *connection, const uint8_t *bytes, size_t length, uint64_t now) {
    if (connection->event_stream) sseload_scan_events(connection, bytes, length, now);
}

/* Decodes chunked framing. Returns the bytes consumed; sets *finished at
 * the end of the trailers; -1 on malformed framing. */
static ssize_t sseload_decode_chunked(sseload_connection_t *connection, const uint8_t *bytes, size_t length,
                                      uint64_t now, bool *finished) {
    size_t position = 0;
    while (position < length && !*finished) {
        uint8_t byte = bytes[position];
        switch (connection->chunk_state) {
        case SSELOAD_CHUNK_SIZE: {
            int digit = -1;
            if (byte >= '0' && byte <= '9') digit = byte - '0';
            else if (byte >= 'a' && byte <= 'f') digit = byte - 'a' + 10;
            else if (byte >= 'A' && byte <= 'F') digit = byte - 'A' + 10;
            if (digit >= 0) {
                if (connection->chunk_remaining > (UINT64_MAX >> 8)) return -1;
                connection->chunk_remaining = connection->chunk_remaining * 16 + (uint64_t)digit;
            } else if (byte == ';' || byte == ' ' || byte == '\t') {
                connection->chunk_state = SSELOAD_CHUNK_EXTENSION;
            } else if (byte == '\r') {
                connection->chunk_state = SSELOAD_CHUNK_SIZE_LF;
            } else {
                return -1;
            }
            position++;
            break;
        }
        case SSELOAD_CHUNK_EXTENSION:
            if (byte == '\r') connection->chunk_state = SSELOAD_CHUNK_SIZE_LF;
            position++;
            break;
        case SSELOAD_CHUNK_SIZE_LF:
            if (byte != '\n') return -1;
            position++;
            connection->chunk_state =
                connection->chunk_remaining == 0 ? SSELOAD_CHUNK_TRAILER_START : SSELOAD_CHUNK_DATA;
            break;
        case SSELOAD_CHUNK_DATA: {
            size_t take = (size_t)RW_MIN((uint64_t)(length - position), connection->chunk_remaining);
            sseload_body_bytes(connection, bytes + position, take, now);
            position += take;
            connection->chunk_remaining -= take;
            if (connection->chunk_remaining == 0) connection->chunk_state = SSELOAD_CHUNK_DATA_CR;
            break;
        }
        case SSELOAD_CHUNK_DATA_CR:
            if (byte != '\r') return -1;
            position++;
            connection->chunk_state = SSELOAD_CHUNK_DATA_LF;
            break;
        case SSELOAD_CHUNK_DATA_LF:
            if (byte != '\n') return -1;
            position++;
            connection->chunk_state = SSELOAD_CHUNK_SIZE;
            break;
        case SSELOAD_CHUNK_TRAILER_START:
            position++;
            if (byte == '\r') connection->chunk_state = SSELOAD_CHUNK_FINAL_LF;
            else connection->chunk_state = SSELOAD_CHUNK_TRAILER_LINE;
            break;
        case SSELOAD_CHUNK_TRAILER_LINE:
            position++;
            if (byte == '\r') connection->chunk_state = SSELOAD_CHUNK_TRAILER_LF;
            break;
        case SSELOAD_CHUNK_TRAILER_LF:
            if (byte != '\n') return -1;
            position++;
            connection->chunk_state = SSELOAD_CHUNK_TRAILER_START;
            break;
        case SSELOAD_CHUNK_FINAL_LF:
            if (byte != '\n') return -1;
            position++;
            *finished = true;
            break;
        }
    }
    return (ssize_t)position;
}

/* A whole response has arrived: judge it, then go on with the connection. */
static void sseload_complete(sseload_connection_t *connection, uint64_t now) {
    sseload_stats_t *stats = sseload_stats_for(now);
    stats->requests_completed++;
    stats->last_completion_ns = now;
    connection->requests_done++;
    sseload_histogram_add(&stats->latency_us, (now - connection->request_sent_ns) / 1000u);
    bool failed = false;
    if (connection->status != 200) {
        stats->errors[SSELOAD_ERROR_STATUS]++;
        failed = true;
    } else if (connection->event_stream && connection->saw_error_event) {
        stats->errors[SSELOAD_ERROR_EVENT_ERROR]++;
        failed = true;
    } else if (connection->event_stream && !connection->saw_done) {
        stats->errors[SSELOAD_ERROR_NO_DONE]++;
        failed = true;
    }
    if (!failed) {
        stats->responses_ok++;
        if (connection->event_stream) stats->streams_completed++;
    }
    sseload_mark_ready(connection);
    if (connection->close_after) {
        sseload_close(connection, false);
        if (sseload_may_start(connection, now)) {
            connection->state = SSELOAD_STATE_WAITING;
            connection->start_at_ns = now;
        } else if (sseload_options.hold) {
            sseload_stats_for(now)->idle_closed++;
        }
        return;
    }
    sseload_send_next(connection, now);
}

/* Feeds received bytes to the response parser. Returns false when the
 * connection is no longer reading (closed, failed or finished with bytes
 * left over, which is a protocol error: we never pipeline). */
static bool sseload_on_bytes(sseload_connection_t *connection, const uint8_t *bytes, size_t length, uint64_t now) {
    sseload_stats_for(now)->bytes_received += length;
    connection->last_activity_ns = now;
    if (connection->state == SSELOAD_STATE_HOLDING) {
        sseload_fail(connection, SSELOAD_ERROR_PROTOCOL, now);
        return false;
    }
    if (!connection->first_byte_seen) {
        connection->first_byte_seen = true;
        sseload_histogram_add(&sseload_stats_for(now)->ttfb_us, (now - connection->request_sent_ns) / 1000u);
    }
    size_t position = 0;
    while (position < length) {
        if (!connection->head_done) {
            size_t take = RW_MIN(length - position, SSELOAD_HEAD_BYTES_MAX - connection->head_length);
            /* Look for the blank line, including one split across reads. */
            size_t search_from = connection->head_length >= 3 ? connection->head_length - 3 : 0;
            memcpy(connection->head + connection->head_length, bytes + position, take);
            size_t total = connection->head_length + take;
            size_t end = 0;
            for (size_t index = search_from; index + 3 < total; index++) {
                if (memcmp(connection->head + index, "\r\n\r\n", 4) == 0) {
                    end = index + 4;
                    break;
                }
            }
            if (end == 0) {
                if (total == SSELOAD_HEAD_BYTES_MAX) {
                    sseload_fail(connection, SSELOAD_ERROR_PROTOCOL, now);
                    return false;
                }
                connection->head_length = total;
                return true;
            }
            size_t used = end - connection->head_length;
            connection->head_length = end;
            position += used;
            connection->head_done = true;
            if (!sseload_parse_head(connection)) {
                sseload_fail(connection, SSELOAD_ERROR_PROTOCOL, now);
                return false;
            }
            if (connection->status == 100) {
                sseload_reset_response(connection);
                connection->first_byte_seen = true;
                continue;
            }
            if (connection->body_kind == SSELOAD_BODY_NONE) {
                if (position != length) {
                    sseload_fail(connection, SSELOAD_ERROR_PROTOCOL, now);
                    return false;
                }
                sseload_complete(connection, now);
                return false;
            }
            continue;
        }
        const uint8_t *body = bytes + position;
        size_t body_length = length - position;
        if (connection->body_kind == SSELOAD_BODY_UNTIL_CLOSE) {
            sseload_body_bytes(connection, body, body_length, now);
            return true;
        }
        if (connection->body_kind == SSELOAD_BODY_LENGTH) {
            size_t take = (size_t)RW_MIN((uint64_t)body_length, connection->body_remaining);
            sseload_body_bytes(connection, body, take, now);
            connection->body_remaining -= take;
            position += take;
            if (connection->body_remaining == 0) {
                if (position != length) {
                    sseload_fail(connection, SSELOAD_ERROR_PROTOCOL, now);
                    return false;
                }
                sseload_complete(connection, now);
                return false;
            }
            continue;
        }
        bool finished = false;
        ssize_t used = sseload_decode_chunked(connection, body, body_length, now, &finished);
        if (used < 0) {
            sseload_fail(connection, SSELOAD_ERROR_PROTOCOL, now);
            return false;
        }
        position += (size_t)used;
        if (finished) {
            if (position != length) {
                sseload_fail(connection, SSELOAD_ERROR_PROTOCOL, now);
                return false;
            }
            sseload_complete(connection, now);
            return false;
        }
    }
    return true;
}

/* The peer closed (or reset) the connection. */
static void sseload_on_closed(sseload_connection_t *connection, uint64_t now) {
    if (connection->state == SSELOAD_STATE_HOLDING) {
        sseload_stats_for(now)->idle_closed++;
        sseload_close(connection, false);
        return;
    }
    if (connection->state == SSELOAD_STATE_READING && connection->head_done &&
        connection->body_kind == SSELOAD_BODY_UNTIL_CLOSE) {
        connection->close_after = true;
        sseload_complete(connection, now);
        return;
    }
    sseload_fail(connection, SSELOAD_ERROR_TRUNCATED, now);
}

/* Reads everything available (plain: until EAGAIN; TLS: until wolfSSL
 * wants more ciphertext, which also drains records it already holds). */
static void sseload_read(sseload_connection_t *connection, uint64_t now) {
    for (;;) {
        ssize_t received;
        if (connection->tls != NULL) {
            int result = wolfSSL_read(connection->tls, sseload_read_buffer, (int)sizeof sseload_read_buffer);
            if (result <= 0) {
                int error = wolfSSL_get_error(connection->tls, result);
                if (error == WOLFSSL_ERROR_WANT_READ) return;
                if (error == WOLFSSL_ERROR_WANT_WRITE) {
                    sseload_watch(connection, true);
                    return;
                }
                sseload_on_closed(connection, now);
                return;
            }
            received = result;
        } else {
            received = recv(connection->fd, sseload_read_buffer, sizeof sseload_read_buffer, 0);
            if (received < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) return;
                if (errno == EINTR) continue;
                sseload_on_closed(connection, now);
                return;
            }
            if (received == 0) {
                sseload_on_closed(connection, now);
                return;
            }
        }
        if (connection->state != SSELOAD_STATE_READING && connection->state != SSELOAD_STATE_HOLDING) {
            sseload_fail(connection, SSELOAD_ERROR_PROTOCOL, now);
            return;
        }
        bool still_reading = sseload_on_bytes(connection, sseload_read_buffer, (size_t)received, now);
        if (!still_reading && connection->state != SSELOAD_STATE_READING) return;
    }
}

static void sseload_on_ready(sseload_connection_t *connection, uint32_t events, uint64_t now) {
    switch (connection->state) {
    case SSELOAD_STATE_CONNECTING: {
        int error = 0;
        socklen_t error_length = sizeof error;
        getsockopt(connection->fd, SOL_SOCKET, SO_ERROR, &error, &error_length);
        if (error != 0 || (events & (EPOLLERR | EPOLLHUP))) {
            sseload_fail(connection, SSELOAD_ERROR_CONNECT, now);
            return;
        }
        if (!(events & EPOLLOUT)) return;
        if (sseload_options.tls) {
            if (!sseload_start_tls(connection)) {
                sseload_fail(connection, SSELOAD_ERROR_TLS, now);
                return;
            }
            sseload_handshake(connection, now);
        } else {
            sseload_send_next(connection, now);
        }
        return;
    }
    case SSELOAD_STATE_HANDSHAKE:
        sseload_handshake(connection, now);
        return;
    case SSELOAD_STATE_SENDING:
        /* Also on EPOLLIN: wolfSSL may want to read before it can write. */
        if (!sseload_write(connection, now)) return;
        if (connection->state == SSELOAD_STATE_READING && (events & EPOLLIN)) sseload_read(connection, now);
        return;
    case SSELOAD_STATE_READING:
        if (connection->want_write) sseload_watch(connection, false);
        sseload_read(connection, now);
        return;
    case SSELOAD_STATE_HOLDING:
        sseload_read(connection, now);
        return;
    case SSELOAD_STATE_WAITING:
    case SSELOAD_STATE_DONE:
        return;
    }
}

/* Starts due connections and times out silent ones; every
 * SSELOAD_SWEEP_MS inside the window it also samples how many requests are
 * in flight (the concurrency actually held). Returns whether any connection
 * still has work (waiting to start, a request in flight, or holding before
 * the end of the duration). */
static bool sseload_sweep(uint64_t now, bool periodic) {
    bool busy = false;
    uint64_t timeout_ns = sseload_options.timeout_ms * 1000000u;
    uint64_t in_flight = 0;
    for (uint32_t index = 0; index < sseload_options.connections; index++) {
        sseload_connection_t *connection = &sseload_connections[index];
        switch (connection->state) {
        case SSELOAD_STATE_WAITING:
            if (!sseload_may_start(connection, now)) {
                connection->state = SSELOAD_STATE_DONE;
                sseload_mark_ready(connection);
                break;
            }
            busy = true;
            if (now >= connection->start_at_ns) sseload_begin_connect(connection, now);
            break;
        case SSELOAD_STATE_CONNECTING:
        case SSELOAD_STATE_HANDSHAKE:
        case SSELOAD_STATE_SENDING:
        case SSELOAD_STATE_READING:
            busy = true;
            in_flight += connection->state == SSELOAD_STATE_SENDING || connection->state == SSELOAD_STATE_READING;
            if (periodic && connection->state == SSELOAD_STATE_READING && sseload_stats_for(now) == &sseload_stats) {
                /* A stream that receives nothing never produces a gap: catch
                 * its silence here, so a stuck relay does not look punctual. */
                uint64_t since = RW_MAX(connection->last_event_ns, connection->request_sent_ns);
                if (now - since > sseload_silence_max_ns) sseload_silence_max_ns = now - since;
            }
            if (periodic && now - connection->last_activity_ns > timeout_ns) {
                bool connecting = connection->state == SSELOAD_STATE_CONNECTING;
                sseload_fail(connection, connecting ? SSELOAD_ERROR_CONNECT : SSELOAD_ERROR_TIMEOUT, now);
            }
            break;
        case SSELOAD_STATE_HOLDING:
            busy = busy || (sseload_options.duration_ms != 0 && now < sseload_deadline_ns);
            break;
        case SSELOAD_STATE_DONE:
            break;
        }
    }
    if (periodic && sseload_stats_for(now) == &sseload_stats) {
        sseload_in_flight_sum += in_flight;
        sseload_in_flight_samples++;
        if (in_flight < sseload_in_flight_min) sseload_in_flight_min = in_flight;
    }
    return busy;
}

/* ---- report ------------------------------------------------------------- */

static void sseload_print_histogram(const char *name, const sseload_histogram_t *histogram, bool last) {
    double mean = histogram->count ? (double)histogram->sum / (double)histogram->count : 0.0;
    printf("  \"%s\": {\"count\": %llu, \"mean\": %.1f, \"p50\": %llu, \"p90\": %llu, \"p99\": %llu, "
           "\"p999\": %llu, \"max\": %llu}%s\n",
           name, (unsigned long long)histogram->count, mean,
           (unsigned long long)sseload_histogram_percentile(histogram, 0.50),
           (unsigned long long)sseload_histogram_percentile(histogram, 0.90),
           (unsigned long long)sseload_histogram_percentile(histogram, 0.99),
           (unsigned long long)sseload_histogram_percentile(histogram, 0.999),
           (unsigned long long)histogram->max, last ? "" : ",");
}

static void sseload_print_errors(const sseload_stats_t *stats) {
    printf("{");
    for (uint32_t kind = 0; kind < SSELOAD_ERROR_COUNT; kind++) {
        printf("%s\"%s\": %llu", kind ? ", " : "", sseload_error_names[kind], (unsigned long long)stats->errors[kind]);
    }
    printf("}");
}

/* Prints the JSON report: the figures of the measuring window (the whole
 * run unless --warmup-ms / --measure-ms), then what happened outside it.
 * Rates divide by the window's length: up to --measure-ms, or else up to
 * the last completed request. CPU is this process's whole run. */
static void sseload_report(uint64_t end_ns) {
    const sseload_stats_t *stats = &sseload_stats;
    const sseload_stats_t *outside = &sseload_outside_stats;
    uint64_t window_start = sseload_window_start_ns;
    uint64_t window_end = sseload_window_end_ns != UINT64_MAX ? RW_MIN(sseload_window_end_ns, end_ns)
                          : stats->last_completion_ns > window_start ? stats->last_completion_ns
                                                                     : end_ns;
    double window_s = window_end > window_start ? (double)(window_end - window_start) / 1e9 : 1e-9;
    double wall_s = (double)(end_ns - sseload_start_ns) / 1e9;
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    double user_s = (double)usage.ru_utime.tv_sec + (double)usage.ru_utime.tv_usec / 1e6;
    double system_s = (double)usage.ru_stime.tv_sec + (double)usage.ru_stime.tv_usec / 1e6;
    uint64_t errors_total = sseload_errors_total(stats);
    uint64_t failed = errors_total + stats->unfinished;
    uint64_t outcomes = stats->requests_completed + failed;
    printf("{\n");
    printf("  \"connections\": %u,\n", sseload_options.connections);
    printf("  \"tls\": %s,\n", sseload_options.tls ? "true" : "false");
    printf("  \"pace_ms\": %llu,\n", (unsigned long long)sseload_options.pace_ms);
    printf("  \"stall_ms\": %llu,\n", (unsigned long long)sseload_options.stall_ms);
    printf("  \"wall_s\": %.4f,\n", wall_s);
    printf("  \"window_s\": %.4f,\n", window_s);
    printf("  \"connects\": %llu,\n", (unsigned long long)(stats->connects + outside->connects));
    printf("  \"requests_started\": %llu,\n", (unsigned long long)stats->requests_started);
    printf("  \"requests_completed\": %llu,\n", (unsigned long long)stats->requests_completed);
    printf("  \"responses_ok\": %llu,\n", (unsigned long long)stats->responses_ok);
    printf("  \"streams_completed\": %llu,\n", (unsigned long long)stats->streams_completed);
    printf("  \"unfinished\": %llu,\n", (unsigned long long)stats->unfinished);
    printf("  \"events\": %llu,\n", (unsigned long long)stats->events);
    printf("  \"bytes_received\": %llu,\n", (unsigned long long)stats->bytes_received);
    printf("  \"requests_per_s\": %.2f,\n", (double)stats->requests_completed / window_s);
    printf("  \"events_per_s\": %.2f,\n", (double)stats->events / window_s);
    printf("  \"stalls\": %llu,\n", (unsigned long long)stats->stalls);
    printf("  \"idle_closed\": %llu,\n", (unsigned long long)(stats->idle_closed + outside->idle_closed));
    printf("  \"in_flight_mean\": %.1f,\n",
           sseload_in_flight_samples ? (double)sseload_in_flight_sum / (double)sseload_in_flight_samples : 0.0);
    printf("  \"silence_max_us\": %llu,\n", (unsigned long long)(sseload_silence_max_ns / 1000u));
    printf("  \"in_flight_min\": %llu,\n",
           (unsigned long long)(sseload_in_flight_samples ? sseload_in_flight_min : 0));
    printf("  \"errors_total\": %llu,\n", (unsigned long long)errors_total);
    printf("  \"error_ratio\": %.6f,\n", outcomes ? (double)failed / (double)outcomes : 0.0);
    printf("  \"errors\": ");
    sseload_print_errors(stats);
    printf(",\n  \"outside_window\": {\"requests_started\": %llu, \"requests_completed\": %llu, "
           "\"events\": %llu, \"unfinished\": %llu, \"errors_total\": %llu, \"errors\": ",
           (unsigned long long)outside->requests_started, (unsigned long long)outside->requests_completed,
           (unsigned long long)outside->events, (unsigned long long)outside->unfinished,
           (unsigned long long)sseload_errors_total(outside));
    sseload_print_errors(outside);
    printf("},\n");
    printf("  \"cpu_user_s\": %.4f,\n", user_s);
    printf("  \"cpu_system_s\": %.4f,\n", system_s);
    printf("  \"cpu_fraction\": %.4f,\n", wall_s > 0 ? (user_s + system_s) / wall_s : 0.0);
    sseload_print_histogram("ttfb_us", &stats->ttfb_us, false);
    sseload_print_histogram("first_event_us", &stats->first_event_us, false);
    sseload_print_histogram("latency_us", &stats->latency_us, false);
    sseload_print_histogram("gap_us", &stats->gap_us, false);
    sseload_print_histogram("lateness_us", &stats->lateness_us, true);
    printf("}\n");
    fflush(stdout);
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv) {
    if (!sseload_parse_arguments(argc, argv)) {
        sseload_usage(stderr);
        return 2;
    }
    if (!sseload_build_requests()) return 1;
    if (!sseload_raise_file_limit((uint64_t)sseload_options.connections + 64)) return 1;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int resolved = getaddrinfo(sseload_options.host, sseload_options.port, &hints, &sseload_address);
    if (resolved != 0) {
        fprintf(stderr, "sseload: cannot resolve %s: %s\n", sseload_options.host, gai_strerror(resolved));
        return 1;
    }
    if (sseload_options.tls) {
        wolfSSL_Init();
        sseload_tls_context = wolfSSL_CTX_new(wolfTLS_client_method());
        if (sseload_tls_context == NULL) return 1;
        if (sseload_options.ca_file != NULL) {
            if (wolfSSL_CTX_load_verify_locations(sseload_tls_context, sseload_options.ca_file, NULL) !=
                WOLFSSL_SUCCESS) {
                fprintf(stderr, "sseload: cannot load CA %s\n", sseload_options.ca_file);
                return 1;
            }
            wolfSSL_CTX_set_verify(sseload_tls_context, WOLFSSL_VERIFY_PEER, NULL);
        } else {
            wolfSSL_CTX_set_verify(sseload_tls_context, WOLFSSL_VERIFY_NONE, NULL);
        }
    }
    sseload_connections = calloc(sseload_options.connections, sizeof *sseload_connections);
    sseload_epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (sseload_connections == NULL || sseload_epoll_fd < 0) {
        fprintf(stderr, "sseload: out of memory or epoll: %s\n", strerror(errno));
        return 1;
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = sseload_on_signal;
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    signal(SIGPIPE, SIG_IGN);

    sseload_start_ns = sseload_now_ns();
    sseload_deadline_ns = sseload_start_ns + sseload_options.duration_ms * 1000000u;
    sseload_window_start_ns = sseload_start_ns + sseload_options.warmup_ms * 1000000u;
    sseload_window_end_ns =
        sseload_options.measure_ms ? sseload_window_start_ns + sseload_options.measure_ms * 1000000u : UINT64_MAX;
    sseload_in_flight_min = UINT64_MAX;
    uint64_t ramp_ns = sseload_options.ramp_ms * 1000000u;
    for (uint32_t index = 0; index < sseload_options.connections; index++) {
        sseload_connection_t *connection = &sseload_connections[index];
        connection->fd = -1;
        connection->index = index;
        connection->state = SSELOAD_STATE_WAITING;
        connection->start_at_ns = sseload_start_ns + ramp_ns * index / sseload_options.connections;
    }

    static struct epoll_event events[SSELOAD_EPOLL_EVENTS];
    uint64_t last_timeout_check = sseload_start_ns;
    uint64_t grace_ns = sseload_options.grace_ms * 1000000u;
    for (;;) {
        uint64_t now = sseload_now_ns();
        bool periodic = now - last_timeout_check >= (uint64_t)SSELOAD_SWEEP_MS * 1000000u;
        if (periodic) last_timeout_check = now;
        bool busy = sseload_sweep(now, periodic);
        if (sseload_interrupted || !busy) break;
        if (sseload_options.duration_ms != 0 && now > sseload_deadline_ns + grace_ns) break;
        bool ramping = now < sseload_start_ns + ramp_ns;
        int count = epoll_wait(sseload_epoll_fd, events, SSELOAD_EPOLL_EVENTS, ramping ? 1 : 10);
        if (count < 0 && errno != EINTR) {
            fprintf(stderr, "sseload: epoll_wait: %s\n", strerror(errno));
            return 1;
        }
        now = sseload_now_ns();
        for (int index = 0; index < count; index++) {
            sseload_on_ready(events[index].data.ptr, events[index].events, now);
        }
    }
    uint64_t end_ns = sseload_now_ns();
    for (uint32_t index = 0; index < sseload_options.connections; index++) {
        sseload_connection_t *connection = &sseload_connections[index];
        if (connection->state == SSELOAD_STATE_CONNECTING || connection->state == SSELOAD_STATE_HANDSHAKE ||
            connection->state == SSELOAD_STATE_SENDING || connection->state == SSELOAD_STATE_READING) {
            sseload_stats_for(end_ns)->unfinished++;
        }
        sseload_close(connection, true);
    }
    sseload_report(end_ns);
    return 0;
}
