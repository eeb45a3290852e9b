/* Unit tests for src/tls: a client and a server session live in one process
 * and the test plays the network, moving ciphertext from one session's
 * output buffer to the other's input buffer in steps of every size (whole,
 * one byte, small random steps), optionally corrupting a byte on the way.
 * The certificates are generated at run time with the openssl command-line
 * tool into a mkdtemp directory; without openssl the suite fails. */
#include "ringway/tls.h"
#include "unit.h"

/* Only for tests that reach past the API into wolfSSL (a key update). */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEST_BUFFER_CAPACITY TLS_BUFFER_CAPACITY_RECOMMENDED
#define TEST_ROUNDS_MAX 1000000
/* Consecutive rounds without any progress after which a pair is stalled. */
#define TEST_IDLE_ROUNDS_MAX 3
#define TEST_TRANSFER_BYTES_MAX RW_MIB
#define TEST_MUTATION_ITERATIONS 1000
#define TEST_PATH_SIZE 512

typedef struct test_peer {
    tls_session_t session;
    uint8_t input[TEST_BUFFER_CAPACITY];
    uint8_t output[TEST_BUFFER_CAPACITY];
} test_peer_t;

/* The "network" between the two peers: how many bytes move per step and an
 * optional single-byte corruption at an absolute offset of one direction. */
typedef struct test_link {
    size_t step_bytes;      /* 0: as many as fit */
    size_t random_step_max; /* > 0: each step moves 1..random_step_max bytes */
    unit_random_t random; /* unit.h: deterministic for a given seed, so failures replay */
    size_t moved_bytes[2]; /* [0] client to server, [1] server to client */
    bool mutate;
    int mutate_direction;
    size_t mutate_offset;
    uint8_t mutate_mask;
    bool mutated;
} test_link_t;

typedef enum test_outcome {
    TEST_DONE,
    TEST_CLIENT_FAILED,
    TEST_SERVER_FAILED,
    TEST_STALLED,
} test_outcome_t;

static test_peer_t test_client;
static test_peer_t test_server;
static uint8_t test_data[TEST_TRANSFER_BYTES_MAX];
static uint8_t test_received[TEST_TRANSFER_BYTES_MAX];

static char test_directory[64];
static char test_ca_path[TEST_PATH_SIZE];
static char test_other_ca_path[TEST_PATH_SIZE];
static char test_other_ca_key_path[TEST_PATH_SIZE];
static char test_server_certificate_path[TEST_PATH_SIZE];
static char test_server_key_path[TEST_PATH_SIZE];
static bool test_certificates_ready;

static tls_context_t *test_server_context;
static tls_context_t *test_server_context_tls12;
static tls_context_t *test_client_context;

static bool test_contains(const char *text, const char *part) {
    return strstr(text, part) != NULL;
}

/* ---- certificates ---------------------------------------------------- */

static int test_run_command(const char *command) {
    int status = system(command);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "  command failed (status %d): %s\n", status, command);
        return -1;
    }
    return 0;
}

static int test_write_file(const char *path, const char *text) {
    FILE *file = fopen(path, "w");
    if (file == NULL) {
        return -1;
    }
    size_t length = strlen(text);
    size_t written = fwrite(text, 1, length, file);
    return fclose(file) == 0 && written == length ? 0 : -1;
}

/* A throw-away trusted CA, an untrusted CA, and a server certificate from
 * the trusted CA naming DNS:localhost and IP:127.0.0.1 only in its
 * subjectAltName (its common name is not a host name). */
static void test_generate_certificates(void) {
    snprintf(test_directory, sizeof(test_directory), "/tmp/ringway-test-tls-XXXXXX");
    if (mkdtemp(test_directory) == NULL) {
        fprintf(stderr, "  FATAL: mkdtemp failed\n");
        CHECK(false);
        return;
    }
    if (test_run_command("openssl version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "  FATAL: the openssl command-line tool is required to generate the "
                        "throw-away certificates of this test; install openssl\n");
        CHECK(false);
        return;
    }
    snprintf(test_ca_path, sizeof(test_ca_path), "%s/ca.pem", test_directory);
    snprintf(test_other_ca_path, sizeof(test_other_ca_path), "%s/other-ca.pem", test_directory);
    snprintf(test_other_ca_key_path, sizeof(test_other_ca_key_path), "%s/other-ca.key",
             test_directory);
    snprintf(test_server_certificate_path, sizeof(test_server_certificate_path), "%s/server.pem",
             test_directory);
    snprintf(test_server_key_path, sizeof(test_server_key_path), "%s/server.key", test_directory);

    char extensions_path[TEST_PATH_SIZE];
    snprintf(extensions_path, sizeof(extensions_path), "%s/server.ext", test_directory);
    if (test_write_file(extensions_path, "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                         "basicConstraints=critical,CA:FALSE\n"
                                         "keyUsage=critical,digitalSignature\n"
                                         "extendedKeyUsage=serverAuth\n") != 0) {
        fprintf(stderr, "  FATAL: cannot write %s\n", extensions_path);
        CHECK(false);
        return;
    }
    static const char *const steps[] = {
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout ca.key -out ca.pem -days 2 -subj '/CN=Ringway Test CA'",
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout other-ca.key -out other-ca.pem -days 2 -subj '/CN=Ringway Untrusted CA'",
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout server.key -out server.csr -subj '/CN=Ringway Test Server'",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out server.pem -days 2 -extfile server.ext",
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(steps); index++) {
        char command[1024];
        snprintf(command, sizeof(command), "cd '%s' && %s >>openssl.log 2>&1", test_directory,
                 steps[index]);
        if (test_run_command(command) != 0) {
            char show[TEST_PATH_SIZE + 32];
            snprintf(show, sizeof(show), "cat '%s/openssl.log' >&2", test_directory);
            (void)test_run_command(show);
            CHECK(false);
            return;
        }
    }
    test_certificates_ready = true;
}

/* Deletes the flat mkdtemp directory and everything openssl wrote in it. */
static void test_remove_certificates(void) {
    if (strncmp(test_directory, "/tmp/ringway-test-tls-", 22) != 0) {
        return;
    }
    DIR *directory = opendir(test_directory);
    CHECK(directory != NULL);
    if (directory != NULL) {
        struct dirent *entry;
        while ((entry = readdir(directory)) != NULL) {
            if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) {
                continue;
            }
            char path[TEST_PATH_SIZE];
            snprintf(path, sizeof(path), "%s/%s", test_directory, entry->d_name);
            CHECK(unlink(path) == 0);
        }
        closedir(directory);
    }
    CHECK(rmdir(test_directory) == 0);
}

/* ---- the pump -------------------------------------------------------- */

static size_t test_link_step(test_link_t *link) {
    if (link->random_step_max > 0) {
        return 1 + (size_t)(unit_random_next(&link->random) % link->random_step_max);
    }
    return link->step_bytes;
}

/* Moves one step of pending ciphertext from one peer's output buffer to the
 * other's input buffer, applying the link's corruption if it falls inside.
 * Returns the number of bytes moved. */
static size_t test_move(test_link_t *link, test_peer_t *from, test_peer_t *to) {
    size_t pending = 0;
    const uint8_t *bytes = tls_output_pending(&from->session, &pending);
    size_t space = 0;
    uint8_t *into = tls_input_space(&to->session, &space);
    size_t count = RW_MIN(pending, space);
    size_t step = test_link_step(link);
    if (step > 0) {
        count = RW_MIN(count, step);
    }
    if (count == 0) {
        return 0;
    }
    memcpy(into, bytes, count);
    int direction = from == &test_client ? 0 : 1;
    size_t offset = link->moved_bytes[direction];
    if (link->mutate && link->mutate_direction == direction && link->mutate_offset >= offset &&
        link->mutate_offset < offset + count) {
        into[link->mutate_offset - offset] ^= link->mutate_mask;
        link->mutated = true;
    }
    link->moved_bytes[direction] += count;
    tls_input_commit(&to->session, count);
    tls_output_consume(&from->session, count);
    return count;
}

static size_t test_pending_output(const test_peer_t *peer) {
    size_t pending = 0;
    (void)tls_output_pending(&peer->session, &pending);
    return pending;
}

static void test_init_pair(tls_context_t *client_context, tls_context_t *server_context,
                           const char *server_name) {
    tls_session_release(&test_client.session);
    tls_session_release(&test_server.session);
    CHECK_EQ_INT(tls_session_init(&test_client.session, client_context, false, server_name,
                                  test_client.input, sizeof(test_client.input), test_client.output,
                                  sizeof(test_client.output)),
                 0);
    CHECK_EQ_INT(tls_session_init(&test_server.session, server_context, true, NULL,
                                  test_server.input, sizeof(test_server.input), test_server.output,
                                  sizeof(test_server.output)),
                 0);
}

/* Runs both handshakes until both complete with nothing left to move, one
 * fails (the other side is pumped on so it sees the alert), or no side can
 * make progress. */
static test_outcome_t test_handshake(test_link_t *link, tls_result_t *client_result,
                                     tls_result_t *server_result) {
    tls_result_t client = TLS_WANT_READ;
    tls_result_t server = TLS_WANT_READ;
    test_outcome_t first_failure = TEST_DONE;
    int idle_rounds = 0;
    for (long round = 0; round < TEST_ROUNDS_MAX; round++) {
        tls_result_t client_before = client;
        tls_result_t server_before = server;
        client = tls_handshake(&test_client.session);
        server = tls_handshake(&test_server.session);
        if (first_failure == TEST_DONE && client == TLS_ERROR) {
            first_failure = TEST_CLIENT_FAILED;
        }
        if (first_failure == TEST_DONE && server == TLS_ERROR) {
            first_failure = TEST_SERVER_FAILED;
        }
        size_t moved = test_move(link, &test_client, &test_server) +
                       test_move(link, &test_server, &test_client);
        if (client == TLS_OK && server == TLS_OK && moved == 0 &&
            test_pending_output(&test_client) == 0 && test_pending_output(&test_server) == 0) {
            break;
        }
        if (client == TLS_ERROR && server == TLS_ERROR) {
            break;
        }
        bool progress = moved > 0 || client != client_before || server != server_before;
        idle_rounds = progress ? 0 : idle_rounds + 1;
        if (idle_rounds > TEST_IDLE_ROUNDS_MAX) {
            break;
        }
    }
    *client_result = client;
    *server_result = server;
    if (first_failure != TEST_DONE) {
        return first_failure;
    }
    return client == TLS_OK && server == TLS_OK ? TEST_DONE : TEST_STALLED;
}

/* Sends length bytes of source from sender to receiver, reading at most
 * read_capacity bytes per tls_read into received. Returns how many bytes
 * arrived; *result is TLS_OK on completion, else the failing result (or
 * TLS_WANT_READ for a stall). */
static size_t test_transfer(test_link_t *link, test_peer_t *sender, test_peer_t *receiver,
                            const uint8_t *source, size_t length, uint8_t *received,
                            size_t read_capacity, tls_result_t *result) {
    size_t sent = 0;
    size_t arrived = 0;
    int idle_rounds = 0;
    *result = TLS_OK;
    for (long round = 0; round < TEST_ROUNDS_MAX && arrived < length; round++) {
        size_t progress = 0;
        if (sent < length) {
            size_t written = 0;
            tls_result_t write_result =
                tls_write(&sender->session, source + sent, length - sent, &written);
            CHECK(written <= length - sent);
            sent += written;
            progress += written;
            if (write_result == TLS_ERROR) {
                *result = TLS_ERROR;
                return arrived;
            }
            CHECK(write_result == TLS_OK || write_result == TLS_WANT_WRITE);
            CHECK(write_result != TLS_OK || sent == length);
        }
        progress += test_move(link, sender, receiver);
        progress += test_move(link, receiver, sender);
        while (arrived < length) {
            size_t read = 0;
            size_t capacity = RW_MIN(read_capacity, length - arrived);
            tls_result_t read_result =
                tls_read(&receiver->session, received + arrived, capacity, &read);
            if (read_result == TLS_OK) {
                CHECK(read > 0 && read <= capacity);
                arrived += read;
                progress += read;
                continue;
            }
            CHECK_EQ_INT(read, 0);
            if (read_result == TLS_WANT_READ || read_result == TLS_WANT_WRITE) {
                break;
            }
            *result = read_result;
            return arrived;
        }
        idle_rounds = progress > 0 ? 0 : idle_rounds + 1;
        if (idle_rounds > TEST_IDLE_ROUNDS_MAX) {
            *result = TLS_WANT_READ;
            return arrived;
        }
    }
    return arrived;
}

static void test_fill_pattern(uint8_t *bytes, size_t length, uint64_t seed) {
    unit_random_t random = {seed};
    for (size_t index = 0; index < length; index++) {
        bytes[index] = (uint8_t)(unit_random_next(&random) >> 56);
    }
}

/* Checks a byte-exact transfer of length bytes in one direction. */
static void test_expect_transfer(test_link_t *link, test_peer_t *sender, test_peer_t *receiver,
                                 size_t length, size_t read_capacity, uint64_t seed) {
    RW_ASSERT(length <= TEST_TRANSFER_BYTES_MAX);
    test_fill_pattern(test_data, length, seed);
    memset(test_received, 0, length);
    tls_result_t result = TLS_ERROR;
    size_t arrived = test_transfer(link, sender, receiver, test_data, length, test_received,
                                   read_capacity, &result);
    CHECK_EQ_INT(result, TLS_OK);
    CHECK_EQ_INT(arrived, length);
    CHECK(memcmp(test_received, test_data, length) == 0);
}

static bool test_ready(void) {
    CHECK(test_certificates_ready);
    CHECK(test_server_context != NULL && test_client_context != NULL);
    return test_certificates_ready && test_server_context != NULL && test_client_context != NULL;
}

/* ---- tests ----------------------------------------------------------- */

static void test_certificates_and_contexts(void) {
    test_generate_certificates();
    if (!test_certificates_ready) {
        return;
    }
    CHECK(tls_global_init());
    CHECK(tls_global_init());
    char error[256];
    test_server_context = tls_server_context_create(test_server_certificate_path,
                                                    test_server_key_path, error, sizeof(error));
    CHECK(test_server_context != NULL);
    if (test_server_context == NULL) {
        fprintf(stderr, "  server context: %s\n", error);
    }
    test_server_context_tls12 = tls_server_context_create(
        test_server_certificate_path, test_server_key_path, error, sizeof(error));
    CHECK(test_server_context_tls12 != NULL);
    if (test_server_context_tls12 != NULL) {
        CHECK(tls_context_set_maximum_version(test_server_context_tls12, TLS_VERSION_1_2));
    }
    test_client_context = tls_client_context_create(test_ca_path, true, error, sizeof(error));
    CHECK(test_client_context != NULL);
    if (test_client_context == NULL) {
        fprintf(stderr, "  client context: %s\n", error);
    }
}

static void test_context_errors(void) {
    if (!test_ready()) {
        return;
    }
    char error[256];
    char missing[TEST_PATH_SIZE + 16];
    snprintf(missing, sizeof(missing), "%s/missing.pem", test_directory);

    CHECK(tls_server_context_create(missing, test_server_key_path, error, sizeof(error)) == NULL);
    CHECK(test_contains(error, "certificate chain"));
    CHECK(test_contains(error, "missing.pem"));

    CHECK(tls_server_context_create(test_server_certificate_path, missing, error, sizeof(error)) ==
          NULL);
    CHECK(test_contains(error, "private key"));

    /* A real key that belongs to another certificate. */
    CHECK(tls_server_context_create(test_server_certificate_path, test_other_ca_key_path, error,
                                    sizeof(error)) == NULL);
    CHECK(test_contains(error, "does not match"));

    CHECK(tls_client_context_create(missing, true, error, sizeof(error)) == NULL);
    CHECK(test_contains(error, "cannot load trusted CA certificates"));
    CHECK(test_contains(error, "missing.pem"));

    /* A tiny error buffer is filled, truncated and terminated. */
    char tiny[8];
    CHECK(tls_client_context_create(missing, true, tiny, sizeof(tiny)) == NULL);
    CHECK_EQ_INT(strlen(tiny), sizeof(tiny) - 1);

    /* Without verification the CA file is not even read. */
    tls_context_t *unverified = tls_client_context_create(missing, false, error, sizeof(error));
    CHECK(unverified != NULL);
    tls_context_destroy(unverified);

    /* The system store (Debian: /etc/ssl/certs) loads when it exists. */
    tls_context_t *system_store = tls_client_context_create(NULL, true, error, sizeof(error));
    if (access("/etc/ssl/certs/ca-certificates.crt", R_OK) == 0) {
        CHECK(system_store != NULL);
    } else {
        CHECK(system_store == NULL && error[0] != '\0');
    }
    tls_context_destroy(system_store);
    tls_context_destroy(NULL);
}

static void test_handshake_and_data(tls_context_t *server_context, const char *version,
                                    test_link_t *link, size_t read_capacity) {
    test_init_pair(test_client_context, server_context, "localhost");
    CHECK_EQ_BYTES(tls_session_version(&test_client.session),
                   strlen(tls_session_version(&test_client.session)), "unknown");
    tls_result_t client_result;
    tls_result_t server_result;
    test_outcome_t outcome = test_handshake(link, &client_result, &server_result);
    CHECK_EQ_INT(outcome, TEST_DONE);
    if (outcome != TEST_DONE) {
        fprintf(stderr, "  client: %s / server: %s\n", tls_last_error(&test_client.session),
                tls_last_error(&test_server.session));
        return;
    }
    const char *client_version = tls_session_version(&test_client.session);
    const char *server_version = tls_session_version(&test_server.session);
    CHECK_EQ_BYTES(client_version, strlen(client_version), version);
    CHECK_EQ_BYTES(server_version, strlen(server_version), version);
    CHECK_EQ_INT(tls_handshake(&test_client.session), TLS_OK);
    CHECK_EQ_BYTES(tls_last_error(&test_client.session),
                   strlen(tls_last_error(&test_client.session)), "");

    /* A request, an answer, then larger bodies both ways. */
    test_expect_transfer(link, &test_client, &test_server, 1, read_capacity, 1);
    test_expect_transfer(link, &test_server, &test_client, 1, read_capacity, 2);
    test_expect_transfer(link, &test_client, &test_server, 3000, read_capacity, 3);
    test_expect_transfer(link, &test_server, &test_client, 40000, read_capacity, 4);
}

static void test_tls13_whole_buffers(void) {
    if (!test_ready()) {
        return;
    }
    test_link_t link = {0};
    test_handshake_and_data(test_server_context, "TLSv1.3", &link, 4096);
}

static void test_tls12_forced(void) {
    if (!test_ready()) {
        return;
    }
    test_link_t link = {0};
    test_handshake_and_data(test_server_context_tls12, "TLSv1.2", &link, 4096);

    /* Capping the client instead of the server gives the same result. */
    char error[256];
    tls_context_t *client12 = tls_client_context_create(test_ca_path, true, error, sizeof(error));
    CHECK(client12 != NULL);
    if (client12 == NULL) {
        return;
    }
    CHECK(tls_context_set_maximum_version(client12, TLS_VERSION_1_2));
    test_init_pair(client12, test_server_context, "localhost");
    tls_result_t client_result;
    tls_result_t server_result;
    test_link_t fresh = {0};
    CHECK_EQ_INT(test_handshake(&fresh, &client_result, &server_result), TEST_DONE);
    const char *version = tls_session_version(&test_client.session);
    CHECK_EQ_BYTES(version, strlen(version), "TLSv1.2");
    test_expect_transfer(&fresh, &test_server, &test_client, 20000, 4096, 5);
    tls_session_release(&test_client.session);
    tls_session_release(&test_server.session);
    tls_context_destroy(client12);
}

static void test_one_byte_at_a_time(void) {
    if (!test_ready()) {
        return;
    }
    test_link_t link = {.step_bytes = 1};
    test_handshake_and_data(test_server_context, "TLSv1.3", &link, 1);
    test_link_t link12 = {.step_bytes = 1};
    test_handshake_and_data(test_server_context_tls12, "TLSv1.2", &link12, 1);
}

static void test_tiny_random_steps(void) {
    if (!test_ready()) {
        return;
    }
    for (uint64_t seed = 1; seed <= 8; seed++) {
        test_link_t link = {.random_step_max = 1 + (size_t)seed * 5, .random = {seed}};
        tls_context_t *server = seed % 2 == 0 ? test_server_context : test_server_context_tls12;
        test_handshake_and_data(server, seed % 2 == 0 ? "TLSv1.3" : "TLSv1.2", &link,
                                1 + (size_t)seed * 97);
    }
}

static void test_megabyte_both_ways(void) {
    if (!test_ready()) {
        return;
    }
    tls_context_t *servers[2] = {test_server_context, test_server_context_tls12};
    for (size_t index = 0; index < 2; index++) {
        test_link_t link = {0};
        test_init_pair(test_client_context, servers[index], "localhost");
        tls_result_t client_result;
        tls_result_t server_result;
        CHECK_EQ_INT(test_handshake(&link, &client_result, &server_result), TEST_DONE);
        test_expect_transfer(&link, &test_client, &test_server, RW_MIB, 16384, 10 + index);
        test_expect_transfer(&link, &test_server, &test_client, RW_MIB, 5000, 20 + index);
        /* Small flushes across a large transfer. */
        test_link_t slow = {.step_bytes = 1000};
        test_expect_transfer(&slow, &test_server, &test_client, 200000, 777, 30 + index);
    }
}

/* Runs a handshake that must fail on the client, and returns the client's
 * reason (the server must fail too, from the alert). */
static const char *test_failing_handshake(tls_context_t *client_context, const char *name) {
    test_init_pair(client_context, test_server_context, name);
    test_link_t link = {0};
    tls_result_t client_result;
    tls_result_t server_result;
    test_outcome_t outcome = test_handshake(&link, &client_result, &server_result);
    CHECK_EQ_INT(outcome, TEST_CLIENT_FAILED);
    CHECK_EQ_INT(client_result, TLS_ERROR);
    CHECK_EQ_INT(server_result, TLS_ERROR);
    CHECK(tls_last_error(&test_server.session)[0] != '\0');
    /* The failure is sticky. */
    CHECK_EQ_INT(tls_handshake(&test_client.session), TLS_ERROR);
    return tls_last_error(&test_client.session);
}

static void test_expect_handshake_ok(tls_context_t *client_context, const char *name) {
    test_init_pair(client_context, test_server_context, name);
    test_link_t link = {0};
    tls_result_t client_result;
    tls_result_t server_result;
    test_outcome_t outcome = test_handshake(&link, &client_result, &server_result);
    CHECK_EQ_INT(outcome, TEST_DONE);
    if (outcome != TEST_DONE) {
        fprintf(stderr, "  name %s: client: %s\n", name != NULL ? name : "(none)",
                tls_last_error(&test_client.session));
    }
}

static void test_hostname_verification(void) {
    if (!test_ready()) {
        return;
    }
    test_expect_handshake_ok(test_client_context, "localhost");
    test_expect_handshake_ok(test_client_context, "127.0.0.1");
    test_expect_handshake_ok(test_client_context, NULL); /* chain only */

    const char *reason = test_failing_handshake(test_client_context, "wrong.example");
    CHECK(test_contains(reason, "hostname mismatch"));
    CHECK(test_contains(reason, "wrong.example"));
    CHECK(test_contains(tls_last_error(&test_server.session), "alert"));

    /* The common name is not a DNS name of the certificate either. */
    reason = test_failing_handshake(test_client_context, "ringway.test");
    CHECK(test_contains(reason, "hostname mismatch"));

    reason = test_failing_handshake(test_client_context, "127.0.0.2");
    CHECK(test_contains(reason, "hostname mismatch"));
    CHECK(test_contains(reason, "127.0.0.2"));

    reason = test_failing_handshake(test_client_context, "::1");
    CHECK(test_contains(reason, "hostname mismatch"));

    /* Names that cannot be a host are refused at init. */
    char long_name[300];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    tls_session_release(&test_client.session);
    CHECK_EQ_INT(tls_session_init(&test_client.session, test_client_context, false, long_name,
                                  test_client.input, sizeof(test_client.input), test_client.output,
                                  sizeof(test_client.output)),
                 -1);
    CHECK(test_contains(tls_last_error(&test_client.session), "invalid server name"));
    CHECK(test_client.session.ssl == NULL);
    tls_session_release(&test_client.session);
}

static void test_untrusted_ca(void) {
    if (!test_ready()) {
        return;
    }
    char error[256];
    tls_context_t *other =
        tls_client_context_create(test_other_ca_path, true, error, sizeof(error));
    CHECK(other != NULL);
    if (other == NULL) {
        return;
    }
    const char *reason = test_failing_handshake(other, "localhost");
    CHECK(test_contains(reason, "certificate verification failed"));
    CHECK(test_contains(reason, "no trusted CA"));
    tls_context_destroy(other);

    /* verify_peer false accepts the same certificate, even for a wrong name. */
    tls_context_t *unverified =
        tls_client_context_create(test_other_ca_path, false, error, sizeof(error));
    CHECK(unverified != NULL);
    if (unverified == NULL) {
        return;
    }
    test_expect_handshake_ok(unverified, "wrong.example");
    test_link_t link = {0};
    test_expect_transfer(&link, &test_client, &test_server, 100, 100, 40);
    tls_session_release(&test_client.session);
    tls_session_release(&test_server.session);
    tls_context_destroy(unverified);
}

static void test_close_notify(void) {
    if (!test_ready()) {
        return;
    }
    test_expect_handshake_ok(test_client_context, "localhost");
    test_link_t link = {0};
    /* Data before the close_notify is delivered first. */
    size_t written = 0;
    CHECK_EQ_INT(tls_write(&test_client.session, (const uint8_t *)"bye", 3, &written), TLS_OK);
    CHECK_EQ_INT(written, 3);
    CHECK_EQ_INT(tls_shutdown(&test_client.session), TLS_OK);
    CHECK_EQ_INT(tls_shutdown(&test_client.session), TLS_OK);
    CHECK(test_pending_output(&test_client) > 0);
    CHECK(test_move(&link, &test_client, &test_server) > 0);

    uint8_t buffer[16];
    size_t read = 0;
    CHECK_EQ_INT(tls_read(&test_server.session, buffer, sizeof(buffer), &read), TLS_OK);
    CHECK_EQ_BYTES(buffer, read, "bye");
    CHECK_EQ_INT(tls_read(&test_server.session, buffer, sizeof(buffer), &read), TLS_CLOSED);
    CHECK_EQ_INT(read, 0);
    CHECK_EQ_INT(tls_read(&test_server.session, buffer, sizeof(buffer), &read), TLS_CLOSED);
    CHECK_EQ_BYTES(tls_last_error(&test_server.session),
                   strlen(tls_last_error(&test_server.session)), "");

    /* The server answers with its own close_notify. */
    CHECK_EQ_INT(tls_shutdown(&test_server.session), TLS_OK);
    (void)test_move(&link, &test_server, &test_client);
    CHECK_EQ_INT(tls_read(&test_client.session, buffer, sizeof(buffer), &read), TLS_CLOSED);

    /* Shutdown waits for room in a full output buffer. */
    test_expect_handshake_ok(test_client_context, "localhost");
    size_t total = 0;
    tls_result_t result = TLS_OK;
    while (result == TLS_OK && total < TEST_TRANSFER_BYTES_MAX) {
        result = tls_write(&test_client.session, test_data, 1000, &written);
        total += written;
    }
    CHECK_EQ_INT(result, TLS_WANT_WRITE);
    size_t pending = test_pending_output(&test_client);
    if (TEST_BUFFER_CAPACITY - pending < 128) {
        CHECK_EQ_INT(tls_shutdown(&test_client.session), TLS_WANT_WRITE);
    }
    link = (test_link_t){0};
    while (test_move(&link, &test_client, &test_server) > 0) {
        while (tls_read(&test_server.session, test_received, 4096, &read) == TLS_OK) {
        }
    }
    CHECK_EQ_INT(tls_shutdown(&test_client.session), TLS_OK);
    (void)test_move(&link, &test_client, &test_server);
    while ((result = tls_read(&test_server.session, test_received, 4096, &read)) == TLS_OK) {
    }
    CHECK_EQ_INT(result, TLS_CLOSED);
}

static void test_truncation(void) {
    if (!test_ready()) {
        return;
    }
    test_expect_handshake_ok(test_client_context, "localhost");
    size_t written = 0;
    CHECK_EQ_INT(tls_write(&test_client.session, (const uint8_t *)"partial", 7, &written), TLS_OK);
    test_link_t link = {0};
    (void)test_move(&link, &test_client, &test_server);
    tls_input_end(&test_server.session);
    uint8_t buffer[16];
    size_t read = 0;
    CHECK_EQ_INT(tls_read(&test_server.session, buffer, sizeof(buffer), &read), TLS_OK);
    CHECK_EQ_BYTES(buffer, read, "partial");
    CHECK_EQ_INT(tls_read(&test_server.session, buffer, sizeof(buffer), &read), TLS_ERROR);
    CHECK(test_contains(tls_last_error(&test_server.session), "without close_notify"));

    /* End of stream in the middle of the handshake. */
    test_init_pair(test_client_context, test_server_context, "localhost");
    CHECK_EQ_INT(tls_handshake(&test_client.session), TLS_WANT_READ);
    tls_input_end(&test_client.session);
    CHECK_EQ_INT(tls_handshake(&test_client.session), TLS_ERROR);
    CHECK(test_contains(tls_last_error(&test_client.session), "without close_notify"));
}

static void test_feed(test_peer_t *peer, const char *text) {
    size_t space = 0;
    uint8_t *into = tls_input_space(&peer->session, &space);
    size_t length = strlen(text);
    RW_ASSERT(length <= space);
    memcpy(into, text, length);
    tls_input_commit(&peer->session, length);
}

static void test_garbage(void) {
    if (!test_ready()) {
        return;
    }
    /* Plain HTTP sent to a TLS server. */
    test_init_pair(test_client_context, test_server_context, "localhost");
    test_feed(&test_server, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    CHECK_EQ_INT(tls_handshake(&test_server.session), TLS_ERROR);
    CHECK(tls_last_error(&test_server.session)[0] != '\0');
    CHECK_EQ_INT(tls_handshake(&test_server.session), TLS_ERROR);

    /* An HTTP answer where the ServerHello should be. */
    CHECK_EQ_INT(tls_handshake(&test_client.session), TLS_WANT_READ);
    test_feed(&test_client, "HTTP/1.1 400 Bad Request\r\n\r\n");
    CHECK_EQ_INT(tls_handshake(&test_client.session), TLS_ERROR);
    CHECK(test_contains(tls_last_error(&test_client.session), "handshake"));

    /* A corrupted application record after a good handshake. */
    test_expect_handshake_ok(test_client_context, "localhost");
    size_t written = 0;
    CHECK_EQ_INT(tls_write(&test_client.session, (const uint8_t *)"secret", 6, &written), TLS_OK);
    size_t pending = 0;
    (void)tls_output_pending(&test_client.session, &pending);
    test_link_t link = {
        .mutate = true, .mutate_direction = 0, .mutate_offset = pending - 3, .mutate_mask = 0x01};
    (void)test_move(&link, &test_client, &test_server);
    CHECK(link.mutated);
    uint8_t buffer[16];
    size_t read = 0;
    CHECK_EQ_INT(tls_read(&test_server.session, buffer, sizeof(buffer), &read), TLS_ERROR);
    CHECK_EQ_INT(read, 0);
    CHECK(tls_last_error(&test_server.session)[0] != '\0');
    CHECK_EQ_INT(tls_read(&test_server.session, buffer, sizeof(buffer), &read), TLS_ERROR);
    CHECK_EQ_INT(tls_write(&test_server.session, buffer, 1, &written), TLS_ERROR);
    CHECK_EQ_INT(tls_shutdown(&test_server.session), TLS_ERROR);
}

/* One handshake plus a 300-byte exchange each way; returns true if it all
 * completed, checking that whatever plaintext arrived is unaltered. */
static bool test_exchange(test_link_t *link, tls_context_t *server, uint64_t seed) {
    test_init_pair(test_client_context, server, "localhost");
    tls_result_t client_result;
    tls_result_t server_result;
    if (test_handshake(link, &client_result, &server_result) != TEST_DONE) {
        return false;
    }
    for (int direction = 0; direction < 2; direction++) {
        test_peer_t *sender = direction == 0 ? &test_client : &test_server;
        test_peer_t *receiver = direction == 0 ? &test_server : &test_client;
        size_t length = 300;
        test_fill_pattern(test_data, length, seed + (uint64_t)direction);
        tls_result_t result = TLS_OK;
        size_t arrived =
            test_transfer(link, sender, receiver, test_data, length, test_received, 128, &result);
        CHECK(memcmp(test_received, test_data, arrived) == 0);
        CHECK(result == TLS_OK || result == TLS_ERROR || result == TLS_WANT_READ ||
              result == TLS_CLOSED);
        if (result != TLS_OK) {
            return false;
        }
    }
    return true;
}

/* Seeded corruption of one bit anywhere in either direction of a handshake
 * plus a small exchange (TLS 1.3 and 1.2 alternately, random step sizes):
 * never a crash, never altered plaintext, every run completes or ends in
 * TLS_ERROR or a stall, runs whose corruption fell past the end of the
 * stream complete, and nearly every corruption is detected. */
static void test_random_corruption(void) {
    if (!test_ready()) {
        return;
    }
    tls_context_t *servers[2] = {test_server_context, test_server_context_tls12};
    size_t stream_bytes[2][2];
    for (int version = 0; version < 2; version++) {
        test_link_t clean = {0};
        CHECK(test_exchange(&clean, servers[version], 0));
        stream_bytes[version][0] = clean.moved_bytes[0];
        stream_bytes[version][1] = clean.moved_bytes[1];
    }
    unit_random_t random = {0x5EED5EED};
    int mutated = 0;
    int detected = 0;
    int untouched = 0;
    for (int iteration = 0; iteration < TEST_MUTATION_ITERATIONS; iteration++) {
        int version = iteration % 2;
        int direction = (int)(unit_random_next(&random) % 2);
        /* A tenth of the offsets fall past the end of the stream. */
        size_t range = stream_bytes[version][direction] + stream_bytes[version][direction] / 10;
        test_link_t link = {.random_step_max = 1 + unit_random_next(&random) % 2000,
                            .random = {unit_random_next(&random) | 1},
                            .mutate = true,
                            .mutate_direction = direction,
                            .mutate_offset = unit_random_next(&random) % range,
                            .mutate_mask = (uint8_t)(1u << (unit_random_next(&random) % 8))};
        bool completed = test_exchange(&link, servers[version], (uint64_t)iteration);
        if (!link.mutated) {
            CHECK(completed);
            untouched++;
        } else {
            mutated++;
            detected += !completed;
        }
    }
    fprintf(stderr, "  (corruption: %d of %d detected, %d runs untouched)\n", detected, mutated,
            untouched);
    CHECK(untouched > 0);
    CHECK(mutated > TEST_MUTATION_ITERATIONS / 2);
    CHECK(detected * 10 >= mutated * 9);
}

static void test_release_and_reinit(void) {
    if (!test_ready()) {
        return;
    }
    tls_session_t zero;
    memset(&zero, 0, sizeof(zero));
    tls_session_release(&zero);
    tls_session_release(&zero);
    CHECK(!tls_has_buffered_input(&zero));

    for (int round = 0; round < 3; round++) {
        test_expect_handshake_ok(test_client_context, "localhost");
        test_link_t link = {0};
        test_expect_transfer(&link, &test_client, &test_server, 5000, 1000, 50 + (uint64_t)round);
        test_expect_transfer(&link, &test_server, &test_client, 5000, 1000, 60 + (uint64_t)round);
        tls_session_release(&test_client.session);
        tls_session_release(&test_client.session);
        CHECK(test_client.session.ssl == NULL);
    }
    /* Released half-way through a handshake, then reused. */
    test_init_pair(test_client_context, test_server_context, "localhost");
    CHECK_EQ_INT(tls_handshake(&test_client.session), TLS_WANT_READ);
    test_expect_handshake_ok(test_client_context, "localhost");
    tls_session_release(&test_client.session);
    tls_session_release(&test_server.session);
}

static void test_buffered_input(void) {
    if (!test_ready()) {
        return;
    }
    test_expect_handshake_ok(test_client_context, "localhost");
    test_link_t link = {0};
    /* Three records of 4000 bytes travel in one move. */
    test_fill_pattern(test_data, 12000, 70);
    for (int record = 0; record < 3; record++) {
        size_t written = 0;
        CHECK_EQ_INT(tls_write(&test_server.session, test_data + record * 4000, 4000, &written),
                     TLS_OK);
        CHECK_EQ_INT(written, 4000);
    }
    (void)test_move(&link, &test_server, &test_client);
    CHECK_EQ_INT(test_pending_output(&test_server), 0);
    CHECK(tls_has_buffered_input(&test_client.session));

    size_t arrived = 0;
    uint8_t small[100];
    while (tls_has_buffered_input(&test_client.session)) {
        size_t read = 0;
        tls_result_t result = tls_read(&test_client.session, small, sizeof(small), &read);
        if (result != TLS_OK) {
            CHECK_EQ_INT(result, TLS_WANT_READ);
            break;
        }
        CHECK(arrived + read <= 12000);
        CHECK(memcmp(small, test_data + arrived, read) == 0);
        arrived += read;
    }
    CHECK_EQ_INT(arrived, 12000);
    CHECK(!tls_has_buffered_input(&test_client.session));
    size_t read = 0;
    CHECK_EQ_INT(tls_read(&test_client.session, small, sizeof(small), &read), TLS_WANT_READ);

    /* A partial record is buffered input that still needs more. */
    size_t written = 0;
    CHECK_EQ_INT(tls_write(&test_server.session, test_data, 500, &written), TLS_OK);
    test_link_t half = {.step_bytes = 200};
    (void)test_move(&half, &test_server, &test_client);
    CHECK(tls_has_buffered_input(&test_client.session));
    CHECK_EQ_INT(tls_read(&test_client.session, small, sizeof(small), &read), TLS_WANT_READ);
    /* The input buffer was handed to wolfSSL and is empty again. */
    size_t space = 0;
    (void)tls_input_space(&test_client.session, &space);
    CHECK_EQ_INT(space, TEST_BUFFER_CAPACITY);
    while (test_move(&half, &test_server, &test_client) > 0) {
    }
    CHECK_EQ_INT(tls_read(&test_client.session, small, sizeof(small), &read), TLS_OK);
    CHECK_EQ_INT(read, 100);
}

static void test_write_backpressure(void) {
    if (!test_ready()) {
        return;
    }
    test_expect_handshake_ok(test_client_context, "localhost");
    test_fill_pattern(test_data, 100000, 80);
    size_t written = 0;
    /* Nothing is flushed: the output fills, then tls_write refuses more. */
    tls_result_t result = tls_write(&test_client.session, test_data, 100000, &written);
    CHECK_EQ_INT(result, TLS_WANT_WRITE);
    CHECK(written > 0 && written < 100000);
    size_t pending = test_pending_output(&test_client);
    CHECK(pending > written && pending <= TEST_BUFFER_CAPACITY);
    size_t again = 0;
    CHECK_EQ_INT(tls_write(&test_client.session, test_data + written, 100000 - written, &again),
                 TLS_WANT_WRITE);
    CHECK_EQ_INT(again, 0);
    CHECK_EQ_INT(test_pending_output(&test_client), pending);
    CHECK_EQ_INT(test_client.session.write_retry_bytes, 0);

    /* Flush a little at a time and continue with the remainder. */
    size_t sent = written;
    size_t arrived = 0;
    test_link_t link = {.step_bytes = 3333};
    for (int round = 0; round < 10000 && arrived < 100000; round++) {
        if (sent < 100000) {
            result = tls_write(&test_client.session, test_data + sent, 100000 - sent, &again);
            CHECK(result == TLS_OK || result == TLS_WANT_WRITE);
            sent += again;
        }
        (void)test_move(&link, &test_client, &test_server);
        size_t read = 0;
        while (tls_read(&test_server.session, test_received + arrived, 100000 - arrived, &read) ==
               TLS_OK) {
            arrived += read;
            if (arrived == 100000) {
                break;
            }
        }
    }
    CHECK_EQ_INT(arrived, 100000);
    CHECK(memcmp(test_received, test_data, 100000) == 0);
    CHECK_EQ_INT(tls_write(&test_client.session, test_data, 0, &written), TLS_OK);
    CHECK_EQ_INT(written, 0);
}

/* A small output buffer still carries records (sized to the buffer). */
static void test_small_buffers(void) {
    if (!test_ready()) {
        return;
    }
    static uint8_t client_input[TLS_BUFFER_CAPACITY_MIN];
    static uint8_t client_output[TLS_BUFFER_CAPACITY_MIN];
    static uint8_t server_input[TLS_BUFFER_CAPACITY_MIN + 7];
    static uint8_t server_output[TLS_BUFFER_CAPACITY_MIN + 7];
    tls_session_release(&test_client.session);
    tls_session_release(&test_server.session);
    CHECK_EQ_INT(tls_session_init(&test_client.session, test_client_context, false, "localhost",
                                  client_input, sizeof(client_input), client_output,
                                  sizeof(client_output)),
                 0);
    CHECK_EQ_INT(tls_session_init(&test_server.session, test_server_context, true, NULL,
                                  server_input, sizeof(server_input), server_output,
                                  sizeof(server_output)),
                 0);
    test_link_t link = {.step_bytes = 100};
    tls_result_t client_result;
    tls_result_t server_result;
    test_outcome_t outcome = test_handshake(&link, &client_result, &server_result);
    CHECK_EQ_INT(outcome, TEST_DONE);
    if (outcome != TEST_DONE) {
        fprintf(stderr, "  client: %s / server: %s\n", tls_last_error(&test_client.session),
                tls_last_error(&test_server.session));
        return;
    }
    test_expect_transfer(&link, &test_client, &test_server, 50000, 300, 90);
    test_expect_transfer(&link, &test_server, &test_client, 50000, 300, 91);
    tls_session_release(&test_client.session);
    tls_session_release(&test_server.session);
}

/* Makes wolfSSL hold a KeyUpdate inside itself: the server requests a key
 * update and the client processes it with wolfSSL_read directly while its
 * output buffer looks full (tls_read refuses to read without room for such
 * a reply, so this cannot happen through the API). The output buffer is
 * restored afterwards. */
static void test_hold_key_update(void) {
    test_link_t link = {0};
    CHECK_EQ_INT(wolfSSL_update_keys(test_server.session.ssl), WOLFSSL_SUCCESS);
    (void)test_move(&link, &test_server, &test_client);
    tls_buffer_t *output = &test_client.session.output;
    size_t saved_end = output->end;
    output->end = output->capacity;
    uint8_t small[16];
    test_client.session.send_blocked = false;
    int status = wolfSSL_read(test_client.session.ssl, small, sizeof(small));
    CHECK(status <= 0);
    CHECK(test_client.session.send_blocked);
    CHECK_EQ_INT(output->end, output->capacity);
    output->end = saved_end;
}

/* Writes target_pending - overhead bytes so that the client's output holds
 * exactly target_pending bytes. Returns the plaintext written. */
static size_t test_pad_output(size_t offset, size_t target_pending) {
    int overhead_bytes = wolfSSL_GetOutputSize(test_client.session.ssl, 1) - 1;
    CHECK(overhead_bytes > 0);
    size_t written = 0;
    CHECK_EQ_INT(tls_write(&test_client.session, test_data + offset,
                           target_pending - (size_t)overhead_bytes, &written),
                 TLS_OK);
    CHECK_EQ_INT(test_pending_output(&test_client), target_pending);
    return written;
}

/* Moves everything from client to server and reads it into test_received. */
static void test_drain_to_server(size_t *arrived, size_t length) {
    test_link_t all = {0};
    for (int round = 0; round < 1000; round++) {
        size_t moved = test_move(&all, &test_client, &test_server);
        size_t read = 0;
        while (*arrived < length && tls_read(&test_server.session, test_received + *arrived,
                                             length - *arrived, &read) == TLS_OK) {
            *arrived += read;
        }
        (void)test_move(&all, &test_server, &test_client);
        if (moved == 0) {
            break;
        }
    }
}

/* A held KeyUpdate counts against the free output space: the record that
 * would have fitted without it waits for a flush instead of interrupting
 * wolfSSL_write. */
static void test_write_after_held_reply(void) {
    if (!test_ready()) {
        return;
    }
    test_expect_handshake_ok(test_client_context, "localhost");
    test_link_t link = {0};
    test_expect_transfer(&link, &test_server, &test_client, 10, 10, 100);
    size_t length = 8 * 16384;
    test_fill_pattern(test_data, length, 101);
    int record_bytes = wolfSSL_GetOutputSize(test_client.session.ssl, 16384);
    CHECK(record_bytes > 16384);
    /* One full record plus two bytes stays free. */
    size_t target_pending = TEST_BUFFER_CAPACITY - (size_t)record_bytes - 2;

    size_t sent = 0;
    size_t arrived = 0;
    for (int cycle = 0; cycle < 3; cycle++) {
        sent += test_pad_output(sent, target_pending);
        test_hold_key_update();
        CHECK(test_client.session.wolfssl_held_bytes > 0);
        size_t written = 0;
        CHECK_EQ_INT(tls_write(&test_client.session, test_data + sent, 16384, &written),
                     TLS_WANT_WRITE);
        CHECK_EQ_INT(written, 0);
        CHECK_EQ_INT(test_client.session.write_retry_bytes, 0);
        test_drain_to_server(&arrived, length);
        CHECK_EQ_INT(tls_write(&test_client.session, test_data + sent, 16384, &written), TLS_OK);
        CHECK_EQ_INT(test_client.session.wolfssl_held_bytes, 0);
        sent += written;
        test_drain_to_server(&arrived, length);
    }
    CHECK(!test_client.session.wolfssl_write_stale);
    CHECK_EQ_INT(arrived, sent);
    CHECK(memcmp(test_received, test_data, arrived) == 0);
}

/* wolfSSL's retry rule: a wolfSSL_write that returned WANT_WRITE must be
 * called again with the same buffer and length. Provoked by hiding a held
 * KeyUpdate from the session's accounting: wolfSSL sends it in front of the
 * next record, which then no longer fits. tls_write must report only the
 * bytes before that record, and the remainder call must complete it. A later
 * held message then makes wolfSSL's stale write state dangerous: tls_write
 * must fail cleanly instead of letting wolfSSL skip plaintext. */
static void test_write_retry_rule(void) {
    if (!test_ready()) {
        return;
    }
    test_expect_handshake_ok(test_client_context, "localhost");
    test_link_t link = {0};
    test_expect_transfer(&link, &test_server, &test_client, 10, 10, 100);
    size_t length = 8 * 16384;
    test_fill_pattern(test_data, length, 102);
    int record_bytes = wolfSSL_GetOutputSize(test_client.session.ssl, 16384);
    size_t target_pending = TEST_BUFFER_CAPACITY - (size_t)record_bytes - 2;

    size_t sent = test_pad_output(0, target_pending);
    size_t arrived = 0;
    test_hold_key_update();
    test_client.session.wolfssl_held_bytes = 0; /* the accounting miss */
    size_t written = 0;
    CHECK_EQ_INT(tls_write(&test_client.session, test_data + sent, 3 * 16384, &written),
                 TLS_WANT_WRITE);
    CHECK_EQ_INT(written, 0);
    CHECK_EQ_INT(test_client.session.write_retry_bytes, 16384);
    CHECK(test_client.session.wolfssl_write_stale);
    /* Flush part of the output; the record is resubmitted first. */
    for (int round = 0; round < 100 && test_client.session.write_retry_bytes > 0; round++) {
        test_link_t flush = {.step_bytes = 5000};
        (void)test_move(&flush, &test_client, &test_server);
        tls_result_t result =
            tls_write(&test_client.session, test_data + sent, 3 * 16384, &written);
        CHECK(result == TLS_OK || result == TLS_WANT_WRITE);
        sent += written;
        if (written > 0) {
            CHECK(written >= 16384);
            break;
        }
    }
    CHECK_EQ_INT(test_client.session.write_retry_bytes, 0);
    test_drain_to_server(&arrived, length);
    while (sent < 4 * 16384) {
        tls_result_t result =
            tls_write(&test_client.session, test_data + sent, 4 * 16384 - sent, &written);
        CHECK(result == TLS_OK || result == TLS_WANT_WRITE);
        sent += written;
        test_drain_to_server(&arrived, length);
    }
    CHECK_EQ_INT(arrived, sent);
    CHECK(memcmp(test_received, test_data, arrived) == 0);

    /* Now a held reply after that interrupted write: refuse, do not corrupt. */
    test_hold_key_update();
    CHECK(test_client.session.wolfssl_held_bytes > 0);
    CHECK_EQ_INT(tls_write(&test_client.session, test_data + sent, 100, &written), TLS_ERROR);
    CHECK_EQ_INT(written, 0);
    CHECK(test_contains(tls_last_error(&test_client.session), "cannot continue safely"));
}

/* Sessions of several threads share the read-only contexts. */
#define TEST_THREADS 4
#define TEST_THREAD_HANDSHAKES 10

typedef struct test_thread {
    pthread_t thread;
    test_peer_t client;
    test_peer_t server;
    int completed;
} test_thread_t;

static test_thread_t test_threads[TEST_THREADS];

static size_t test_thread_move(test_peer_t *from, test_peer_t *to) {
    size_t pending = 0;
    const uint8_t *bytes = tls_output_pending(&from->session, &pending);
    size_t space = 0;
    uint8_t *into = tls_input_space(&to->session, &space);
    size_t count = RW_MIN(pending, space);
    memcpy(into, bytes, count);
    tls_input_commit(&to->session, count);
    tls_output_consume(&from->session, count);
    return count;
}

static void *test_thread_main(void *argument) {
    test_thread_t *self = argument;
    RW_ASSERT(tls_global_init());
    for (int handshake = 0; handshake < TEST_THREAD_HANDSHAKES; handshake++) {
        if (tls_session_init(&self->client.session, test_client_context, false, "localhost",
                             self->client.input, sizeof(self->client.input), self->client.output,
                             sizeof(self->client.output)) != 0 ||
            tls_session_init(&self->server.session, test_server_context, true, NULL,
                             self->server.input, sizeof(self->server.input), self->server.output,
                             sizeof(self->server.output)) != 0) {
            break;
        }
        tls_result_t client = TLS_WANT_READ;
        tls_result_t server = TLS_WANT_READ;
        for (int round = 0; round < 100; round++) {
            client = tls_handshake(&self->client.session);
            server = tls_handshake(&self->server.session);
            size_t moved = test_thread_move(&self->client, &self->server) +
                           test_thread_move(&self->server, &self->client);
            if ((client == TLS_OK && server == TLS_OK && moved == 0) || client == TLS_ERROR ||
                server == TLS_ERROR) {
                break;
            }
        }
        uint8_t byte = 0;
        size_t count = 0;
        if (client == TLS_OK && server == TLS_OK &&
            tls_write(&self->client.session, (const uint8_t *)"!", 1, &count) == TLS_OK &&
            test_thread_move(&self->client, &self->server) > 0 &&
            tls_read(&self->server.session, &byte, 1, &count) == TLS_OK && byte == '!') {
            self->completed++;
        }
        tls_session_release(&self->client.session);
        tls_session_release(&self->server.session);
    }
    tls_thread_release();
    return NULL;
}

static void test_threads_share_contexts(void) {
    if (!test_ready()) {
        return;
    }
    for (int index = 0; index < TEST_THREADS; index++) {
        CHECK_EQ_INT(pthread_create(&test_threads[index].thread, NULL, test_thread_main,
                                    &test_threads[index]),
                     0);
    }
    for (int index = 0; index < TEST_THREADS; index++) {
        CHECK_EQ_INT(pthread_join(test_threads[index].thread, NULL), 0);
        CHECK_EQ_INT(test_threads[index].completed, TEST_THREAD_HANDSHAKES);
    }
}

static void test_teardown(void) {
    tls_session_release(&test_client.session);
    tls_session_release(&test_server.session);
    tls_context_destroy(test_client_context);
    tls_context_destroy(test_server_context);
    tls_context_destroy(test_server_context_tls12);
    test_client_context = NULL;
    test_server_context = NULL;
    test_server_context_tls12 = NULL;
    test_remove_certificates();
    tls_global_release();
}

int main(void) {
    RUN_TEST(test_certificates_and_contexts);
    RUN_TEST(test_context_errors);
    RUN_TEST(test_tls13_whole_buffers);
    RUN_TEST(test_tls12_forced);
    RUN_TEST(test_one_byte_at_a_time);
    RUN_TEST(test_tiny_random_steps);
    RUN_TEST(test_megabyte_both_ways);
    RUN_TEST(test_hostname_verification);
    RUN_TEST(test_untrusted_ca);
    RUN_TEST(test_close_notify);
    RUN_TEST(test_truncation);
    RUN_TEST(test_garbage);
    RUN_TEST(test_random_corruption);
    RUN_TEST(test_release_and_reinit);
    RUN_TEST(test_buffered_input);
    RUN_TEST(test_write_backpressure);
    RUN_TEST(test_small_buffers);
    RUN_TEST(test_write_after_held_reply);
    RUN_TEST(test_write_retry_rule);
    RUN_TEST(test_threads_share_contexts);
    RUN_TEST(test_teardown);
    return UNIT_REPORT();
}
