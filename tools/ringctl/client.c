/* ringctl's HTTP client (see client.h). Blocking sockets with timeouts:
 * ringctl is a command-line tool, one request at a time. */
#include "client.h"

#include "ringway/http.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
    CLIENT_HEAD_BYTES_MAX = 16 * 1024,
    CLIENT_READ_BYTES = 64 * 1024,
    CLIENT_REQUEST_HEAD_BYTES = 2048,
};

bool client_parse_url(const char *url, client_target_t *target, char *error, size_t error_size) {
    memset(target, 0, sizeof *target);
    static const char scheme[] = "http://";
    if (strncmp(url, "https://", 8) == 0) {
        snprintf(error, error_size, "'%s': the admin API speaks plain HTTP (keep it on loopback); use http://", url);
        return false;
    }
    if (strncmp(url, scheme, sizeof scheme - 1) != 0) {
        snprintf(error, error_size, "'%s' is not an http:// URL", url);
        return false;
    }
    const char *host = url + sizeof scheme - 1;
    const char *host_end = NULL;
    const char *after = NULL;
    if (*host == '[') {
        host_end = strchr(host, ']');
        if (host_end == NULL) {
            snprintf(error, error_size, "'%s': unclosed '[' in the host", url);
            return false;
        }
        after = host_end + 1;
        host++;
    } else {
        host_end = host + strcspn(host, ":/");
        after = host_end;
    }
    size_t host_length = (size_t)(host_end - host);
    if (host_length == 0 || host_length >= sizeof target->host) {
        snprintf(error, error_size, "'%s': missing or overlong host", url);
        return false;
    }
    memcpy(target->host, host, host_length);
    target->port = 80;
    if (*after == ':') {
        char *end = NULL;
        long port = strtol(after + 1, &end, 10);
        if (end == after + 1 || port < 1 || port > 65535 || (*end != '\0' && *end != '/')) {
            snprintf(error, error_size, "'%s': the port must be 1-65535", url);
            return false;
        }
        target->port = (uint16_t)port;
        after = end;
    }
    if (*after != '\0' && *after != '/') {
        snprintf(error, error_size, "'%s': unexpected text after the host", url);
        return false;
    }
    size_t prefix_length = strlen(after);
    while (prefix_length > 0 && after[prefix_length - 1] == '/') prefix_length--;
    if (prefix_length >= sizeof target->prefix || memchr(after, '?', prefix_length) != NULL) {
        snprintf(error, error_size, "'%s': the path must be a plain prefix", url);
        return false;
    }
    memcpy(target->prefix, after, prefix_length);
    return true;
}

/* Connects with a deadline: a non-blocking connect and poll, then the
 * socket goes back to blocking with send/receive timeouts. */
static int client_connect(const client_target_t *target, uint32_t timeout_ms, char *error, size_t error_size) {
    char port[8];
    snprintf(port, sizeof port, "%u", (unsigned)target->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *addresses = NULL;
    int status = getaddrinfo(target->host, port, &hints, &addresses);
    if (status != 0) {
        snprintf(error, error_size, "cannot resolve %s: %s", target->host, gai_strerror(status));
        return -1;
    }
    int fd = -1;
    int last_errno = ECONNREFUSED;
    for (struct addrinfo *address = addresses; address != NULL && fd < 0; address = address->ai_next) {
        fd = socket(address->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        if (connect(fd, address->ai_addr, address->ai_addrlen) != 0 && errno != EINPROGRESS) {
            last_errno = errno;
            close(fd);
            fd = -1;
            continue;
        }
        struct pollfd poller = {.fd = fd, .events = POLLOUT};
        int ready = poll(&poller, 1, (int)timeout_ms);
        int socket_error = 0;
        socklen_t length = sizeof socket_error;
        if (ready <= 0) {
            socket_error = ready == 0 ? ETIMEDOUT : errno;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &socket_error, &length) != 0) {
            socket_error = errno;
        }
        if (socket_error != 0) {
            last_errno = socket_error;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(addresses);
    if (fd < 0) {
        snprintf(error, error_size, "cannot connect to %s:%u: %s", target->host, (unsigned)target->port,
                 strerror(last_errno));
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct timeval timeout = {.tv_sec = timeout_ms / 1000, .tv_usec = (long)(timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    return fd;
}

static bool client_send_all(int fd, const char *bytes, size_t length) {
    while (length > 0) {
        ssize_t sent = send(fd, bytes, length, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR) continue;
        if (sent <= 0) return false;
        bytes += sent;
        length -= (size_t)sent;
    }
    return true;
}

/* Body bytes to the caller: the buffer or the sink. */
static bool client_deliver(client_response_t *response, const uint8_t *bytes, size_t length) {
    if (length == 0) return true;
    if (response->sink != NULL && response->status >= 200 && response->status <= 299) {
        if (fwrite(bytes, 1, length, response->sink) != length) {
            snprintf(response->error, sizeof response->error, "cannot write the output: %s", strerror(errno));
            return false;
        }
        response->sink_bytes += length;
        return true;
    }
    if (length > response->capacity - response->length) {
        snprintf(response->error, sizeof response->error,
                 "the answer is larger than %zu bytes (ask for fewer entries, or use usage export)",
                 response->capacity);
        return false;
    }
    memcpy(response->buffer + response->length, bytes, length);
    response->length += length;
    return true;
}

client_result_t client_request(const client_target_t *target, const char *method, const char *path,
                               const char *token, const char *body, size_t body_length, uint32_t timeout_ms,
                               client_response_t *response) {
    response->status = 0;
    response->length = 0;
    response->sink_bytes = 0;
    response->content_type[0] = '\0';
    response->error[0] = '\0';
    int fd = client_connect(target, timeout_ms, response->error, sizeof response->error);
    if (fd < 0) return CLIENT_CONNECT;

    char head[CLIENT_REQUEST_HEAD_BYTES];
    bool bracket = strchr(target->host, ':') != NULL;
    int head_length = snprintf(head, sizeof head,
                               "%s %s%s HTTP/1.1\r\nHost: %s%s%s:%u\r\nUser-Agent: ringctl/" RW_VERSION
                               "\r\nAccept: */*\r\nConnection: close\r\n",
                               method, target->prefix, path, bracket ? "[" : "", target->host, bracket ? "]" : "",
                               (unsigned)target->port);
    if (head_length > 0 && (size_t)head_length < sizeof head && token != NULL) {
        head_length += snprintf(head + head_length, sizeof head - (size_t)head_length,
                                "Authorization: Bearer %s\r\n", token);
    }
    if (head_length > 0 && (size_t)head_length < sizeof head && body != NULL) {
        head_length += snprintf(head + head_length, sizeof head - (size_t)head_length,
                                "Content-Type: application/json\r\nContent-Length: %zu\r\n", body_length);
    }
    if (head_length > 0 && (size_t)head_length < sizeof head) {
        head_length += snprintf(head + head_length, sizeof head - (size_t)head_length, "\r\n");
    }
    if (head_length <= 0 || (size_t)head_length >= sizeof head) {
        close(fd);
        snprintf(response->error, sizeof response->error, "the request head is too long");
        return CLIENT_PROTOCOL;
    }
    if (!client_send_all(fd, head, (size_t)head_length) || (body != NULL && !client_send_all(fd, body, body_length))) {
        snprintf(response->error, sizeof response->error, "cannot send the request: %s", strerror(errno));
        close(fd);
        return CLIENT_PROTOCOL;
    }

    static uint8_t input[CLIENT_HEAD_BYTES_MAX + CLIENT_READ_BYTES];
    size_t filled = 0;
    http_response_parser_t parser;
    http_response_t parsed;
    http_response_parser_init(&parser, CLIENT_HEAD_BYTES_MAX);
    bool head_done = false;
    bool body_done = false;
    int64_t remaining = -1;
    http_chunked_decoder_t chunked;
    http_chunked_decoder_init(&chunked);
    size_t parsed_offset = 0; /* input[0, parsed_offset) is consumed */
    client_result_t result = CLIENT_PROTOCOL;
    for (;;) {
        /* Make room: drop what is consumed. */
        if (parsed_offset > 0) {
            memmove(input, input + parsed_offset, filled - parsed_offset);
            filled -= parsed_offset;
            parsed_offset = 0;
        }
        ssize_t got = 0;
        if (filled < sizeof input) {
            got = recv(fd, input + filled, sizeof input - filled, 0);
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) {
                snprintf(response->error, sizeof response->error, "%s while reading the answer",
                         errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : strerror(errno));
                break;
            }
            filled += (size_t)got;
        }
        bool closed = got == 0;
        if (!head_done) {
            http_parse_result_t status = http_response_parse(&parser, &parsed, input, filled);
            if (status == HTTP_PARSE_ERROR) {
                snprintf(response->error, sizeof response->error, "malformed answer: %s", parser.error_message);
                break;
            }
            if (status == HTTP_PARSE_AGAIN) {
                if (closed) {
                    snprintf(response->error, sizeof response->error, "the connection closed before an answer");
                    break;
                }
                continue;
            }
            head_done = true;
            response->status = parsed.status;
            if (parsed.has_content_type) {
                size_t length = RW_MIN((size_t)parsed.content_type.length, sizeof response->content_type - 1);
                memcpy(response->content_type, input + parsed.content_type.offset, length);
                response->content_type[length] = '\0';
            }
            parsed_offset = parsed.head_length;
            remaining = parsed.body_absent ? 0 : parsed.content_length;
            if (remaining == 0) body_done = true;
        }
        if (!body_done && parsed.chunked) {
            bool failed = false;
            while (parsed_offset < filled && !body_done) {
                size_t consumed = 0, data_offset = 0, data_length = 0;
                http_chunked_result_t status = http_chunked_decode(&chunked, input + parsed_offset,
                                                                   filled - parsed_offset, &consumed, &data_offset,
                                                                   &data_length);
                if (status == HTTP_CHUNKED_ERROR) {
                    snprintf(response->error, sizeof response->error, "malformed chunked answer: %s",
                             chunked.error_message);
                    failed = true;
                    break;
                }
                if (status == HTTP_CHUNKED_DATA &&
                    !client_deliver(response, input + parsed_offset + data_offset, data_length)) {
                    failed = true;
                    break;
                }
                parsed_offset += consumed;
                if (status == HTTP_CHUNKED_DONE) body_done = true;
            }
            if (failed) break;
        } else if (!body_done) {
            size_t available = filled - parsed_offset;
            size_t take = remaining >= 0 ? (size_t)RW_MIN((int64_t)available, remaining) : available;
            if (!client_deliver(response, input + parsed_offset, take)) break;
            parsed_offset += take;
            if (remaining >= 0) {
                remaining -= (int64_t)take;
                if (remaining == 0) body_done = true;
            }
        }
        if (body_done) {
            result = CLIENT_OK;
            break;
        }
        if (closed) {
            if (remaining < 0 && !parsed.chunked) {
                result = CLIENT_OK; /* a body delimited by the close */
            } else {
                snprintf(response->error, sizeof response->error,
                         "the connection closed in the middle of the answer (incomplete)");
            }
            break;
        }
    }
    close(fd);
    if (response->buffer != NULL && response->sink == NULL && response->length < response->capacity) {
        response->buffer[response->length] = '\0';
    }
    return result;
}
