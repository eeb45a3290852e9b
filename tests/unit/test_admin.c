/* Tests of src/admin: the text helpers (whole inputs, bad inputs and a
 * seeded mutation loop), then the control thread for real: a store in a
 * temporary directory, the store thread, the control thread listening on a
 * loopback port, the admin API spoken over HTTP/1.1 sockets, account jobs
 * submitted through the job channels with io_uring doorbells both ways,
 * and a restart that must bring every change back from the store. */
#include "unit.h"

#include "ringway/account.h"
#include "ringway/admin.h"
#include "ringway/control.h"
#include "ringway/portal.h"
#include "ringway/auth.h"
#include "ringway/config.h"
#include "ringway/http.h"
#include "ringway/json.h"
#include "ringway/ledger.h"
#include "ringway/store.h"
#include "ringway/text.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- Text helpers ------------------------------------------------------------ */

static void test_url_decode_and_query(void) {
    char out[32];
    size_t length = 0;
    CHECK(admin_url_decode((const uint8_t *)"my%20key+x%2B", 13, true, out, sizeof out, &length));
    CHECK_EQ_BYTES(out, length, "my key x+");
    CHECK(admin_url_decode((const uint8_t *)"a+b", 3, false, out, sizeof out, &length));
    CHECK_EQ_BYTES(out, length, "a+b");
    CHECK(admin_url_decode((const uint8_t *)"%c3%A9", 6, true, out, sizeof out, &length));
    CHECK_EQ_BYTES(out, length, "\xc3\xa9");
    CHECK(!admin_url_decode((const uint8_t *)"%zz", 3, true, out, sizeof out, &length));
    CHECK(!admin_url_decode((const uint8_t *)"abc%2", 5, true, out, sizeof out, &length));
    CHECK(!admin_url_decode((const uint8_t *)"a%00b", 5, true, out, sizeof out, &length));
    CHECK(!admin_url_decode((const uint8_t *)"abcdef", 6, true, out, 6, &length)); /* no room for the NUL */
    CHECK(admin_url_decode((const uint8_t *)"abcde", 5, true, out, 6, &length));

    const uint8_t *found = NULL;
    size_t found_length = 0;
    const char *query = "user_id=3&format=csv&flag&limit=&x=1&x=2";
    size_t query_length = strlen(query);
    CHECK_EQ_INT(admin_query_find((const uint8_t *)query, query_length, "format", &found, &found_length), 0);
    CHECK_EQ_BYTES(found, found_length, "csv");
    CHECK_EQ_INT(admin_query_find((const uint8_t *)query, query_length, "flag", &found, &found_length), 0);
    CHECK_EQ_INT(found_length, 0);
    CHECK_EQ_INT(admin_query_find((const uint8_t *)query, query_length, "limit", &found, &found_length), 0);
    CHECK_EQ_INT(found_length, 0);
    CHECK_EQ_INT(admin_query_find((const uint8_t *)query, query_length, "x", &found, &found_length), -2);
    CHECK_EQ_INT(admin_query_find((const uint8_t *)query, query_length, "user", &found, &found_length), -1);
    CHECK_EQ_INT(admin_query_find((const uint8_t *)"", 0, "user", &found, &found_length), -1);
}

static void test_csv_field(void) {
    char memory[256];
    text_buffer_t buffer = text_buffer_over(memory, sizeof memory);
    admin_csv_field(&buffer, "plain", 5);
    text_buffer_text(&buffer, "|");
    admin_csv_field(&buffer, "a,b", 3);
    text_buffer_text(&buffer, "|");
    admin_csv_field(&buffer, "say \"hi\"", 8);
    text_buffer_text(&buffer, "|");
    admin_csv_field(&buffer, "line\r\nnext", 10);
    text_buffer_text(&buffer, "|");
    admin_csv_field(&buffer, " padded", 7);
    text_buffer_text(&buffer, "|");
    admin_csv_field(&buffer, "", 0);
    CHECK_EQ_BYTES(memory, buffer.length, "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"line\r\nnext\"|\" padded\"|");
    CHECK(!buffer.overflow);
}

static uint32_t count_elements(const char *document, const char *member) {
    json_span_t array;
    json_type_t type;
    size_t length = strlen(document);
    if (json_object_find((const uint8_t *)document, length, member, &array, &type) != 0 || type != JSON_TYPE_ARRAY) {
        return UINT32_MAX;
    }
    uint32_t cursor = 0, count = 0;
    json_span_t element;
    while (admin_json_array_next((const uint8_t *)document, length, array, &cursor, &element)) count++;
    return count;
}

static void test_json_array_walk(void) {
    const char *document = "{\"a\":[ 1 , \"x,]\\\"\" ,{\"k\":[1,2]},[[]], true,null ,-2.5e3],\"b\":[],\"c\":[ ]}";
    CHECK(json_validate((const uint8_t *)document, strlen(document), NULL) == 0);
    CHECK_EQ_INT(count_elements(document, "a"), 7);
    CHECK_EQ_INT(count_elements(document, "b"), 0);
    CHECK_EQ_INT(count_elements(document, "c"), 0);
    json_span_t array, element;
    json_type_t type;
    size_t length = strlen(document);
    json_object_find((const uint8_t *)document, length, "a", &array, &type);
    uint32_t cursor = 0;
    const char *expected[] = {"1", "\"x,]\\\"\"", "{\"k\":[1,2]}", "[[]]", "true", "null", "-2.5e3"};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(expected); index++) {
        CHECK(admin_json_array_next((const uint8_t *)document, length, array, &cursor, &element));
        CHECK_EQ_BYTES(document + element.offset, element.length, expected[index]);
    }
    CHECK(!admin_json_array_next((const uint8_t *)document, length, array, &cursor, &element));
    /* Not an array, or a span outside the document: nothing, no crash. */
    cursor = 0;
    CHECK(!admin_json_array_next((const uint8_t *)document, length, (json_span_t){0, 5}, &cursor, &element));
    CHECK(!admin_json_array_next((const uint8_t *)document, length, (json_span_t){5, 4000}, &cursor, &element));
}

/* Seeded mutations of valid inputs: no crash, no read outside the input
 * (ASan), and the helpers' invariants hold. */
static void test_mutations(void) {
    const char *seeds[] = {"2026-11-23T20:35:17.123+05:30", "1700000000000", "user_id=1&key_id=2&format=csv",
                           "[1,\"a\",{\"b\":[2,3]},[],null]", "%41%42+c%2"};
    uint64_t state = 0x5eed;
    for (int round = 0; round < 5000; round++) {
        const char *seed = seeds[round % RW_ARRAY_LENGTH(seeds)];
        uint8_t bytes[64];
        size_t length = strlen(seed);
        memcpy(bytes, seed, length);
        int edits = 1 + round % 4;
        for (int edit = 0; edit < edits; edit++) {
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t position = (size_t)(state >> 33) % (length + 1);
            uint8_t byte = (uint8_t)(state >> 17);
            switch ((state >> 8) % 3) {
            case 0:
                if (position < length) bytes[position] = byte;
                break;
            case 1:
                if (length < sizeof bytes) {
                    memmove(bytes + position + 1, bytes + position, length - position);
                    bytes[position] = byte;
                    length++;
                }
                break;
            default:
                if (position < length) {
                    memmove(bytes + position, bytes + position + 1, length - position - 1);
                    length--;
                }
                break;
            }
        }
        /* Exact-size heap copy so ASan sees any read past the end. */
        uint8_t *copy = malloc(length + 1);
        RW_ASSERT(copy != NULL);
        memcpy(copy, bytes, length);
        int64_t ms = -1;
        if (text_time_parse((const char *)copy, length, &ms)) {
            CHECK(ms >= 0);
            char text[TEXT_TIME_BYTES];
            text_time_format(ms, text);
        }
        char decoded[80];
        size_t decoded_length = 0;
        if (admin_url_decode(copy, length, true, decoded, sizeof decoded, &decoded_length)) {
            CHECK(decoded_length <= length);
            CHECK(strlen(decoded) == decoded_length);
        }
        const uint8_t *value = NULL;
        size_t value_length = 0;
        if (admin_query_find(copy, length, "key_id", &value, &value_length) == 0) {
            CHECK(value >= copy && value + value_length <= copy + length);
        }
        json_span_t whole = {0, (uint32_t)length};
        uint32_t cursor = 0, count = 0;
        json_span_t element;
        while (count < 100 && admin_json_array_next(copy, length, whole, &cursor, &element)) {
            CHECK(element.offset + element.length <= length && element.length > 0);
            count++;
        }
        CHECK(count < 100);
        char escaped[512];
        text_buffer_t buffer = {.bytes = escaped, .capacity = sizeof escaped};
        text_buffer_json_string(&buffer, (const char *)copy, length);
        if (text_utf8_valid(copy, length)) CHECK(json_validate((const uint8_t *)escaped, buffer.length, NULL) == 0);
        free(copy);
    }
}

/* ---- The control thread, for real --------------------------------------------- */

static const char admin_token[] = "test-admin-token-0123456789";

typedef struct fixture {
    char directory[256];
    config_t *config;
    account_tables_t tables;
    store_t store;
    store_thread_t store_thread;
    control_t *control;
    struct io_uring worker_ring;     /* the fake relay worker's ring: doorbells land here */
    loop_operation_t worker_mailbox; /* user_data of the control thread's doorbells */
    store_load_result_t loaded;
    uint8_t jwt_secret[JWT_SECRET_BYTES];
} fixture_t;

static fixture_t fixture;

static uint16_t free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    RW_ASSERT(bind(fd, (struct sockaddr *)&address, sizeof address) == 0);
    socklen_t length = sizeof address;
    getsockname(fd, (struct sockaddr *)&address, &length);
    close(fd);
    return ntohs(address.sin_port);
}

typedef struct load_context {
    account_tables_t *tables;
    const config_t *config;
} load_context_t;

static int load_user(void *context, const store_user_record_t *record) {
    load_context_t *load = context;
    return account_user_publish(load->tables, record->id, record->email, strlen(record->email),
                                record->balance_micros, (account_user_status_t)record->status) == ACCOUNT_INDEX_NONE
               ? -1
               : 0;
}

static int load_key(void *context, const store_key_record_t *record) {
    load_context_t *load = context;
    account_key_t fields;
    if (admin_key_fields_from_record(load->config, record, &fields) != 0) return -1;
    return account_key_publish(load->tables, &fields) == NULL ? -1 : 0;
}

/* Opens the store in fixture.directory, loads it, starts the store thread
 * and the control thread (bootstrapping when empty). */
static bool fixture_start(bool with_admin_token) {
    char text[2048];
    uint16_t port = free_port();
    snprintf(text, sizeof text,
             "[server]\nlisten = 127.0.0.1:1\nthreads = 1\ndata_dir = %s\nadmin_listen = 127.0.0.1:%u\n"
             "[billing]\nfree_grant = 1.00\nusers_max = 64\nkeys_max = 256\n"
             "[auth]\n%s\njwt_ttl_s = 3600\n"
             "[upstream u]\nbase_url = http://127.0.0.1:9/v1\n"
             "[model m1]\nupstream = u\nupstream_model = x\n"
             "[model m2]\nupstream = u\nupstream_model = y\n"
             "[tier basic]\nrequests_per_minute = 10\n[tier plus]\nrequests_per_minute = 100\n"
             "[tier max]\nrequests_per_minute = 1000\n",
             fixture.directory, (unsigned)port,
             with_admin_token ? "admin_token = test-admin-token-0123456789" : "");
    char error[512];
    if (config_parse(fixture.config, text, strlen(text), "test.conf", error, sizeof error) != 0) {
        fprintf(stderr, "config: %s\n", error);
        return false;
    }
    fixture.config->threads = 1;
    if (!account_tables_init(&fixture.tables, fixture.config->users_max, fixture.config->keys_max)) return false;
    char path[512];
    snprintf(path, sizeof path, "%s/store", fixture.directory);
    store_options_t options = {.users_max = fixture.config->users_max, .keys_max = fixture.config->keys_max};
    if (store_open(&fixture.store, path, &options, error, sizeof error) != 0) {
        fprintf(stderr, "store_open: %s\n", error);
        return false;
    }
    load_context_t load = {.tables = &fixture.tables, .config = fixture.config};
    store_load_callbacks_t callbacks = {.on_user = load_user, .on_key = load_key};
    if (store_load(&fixture.store, &callbacks, &load, &fixture.loaded, error, sizeof error) != 0) {
        fprintf(stderr, "store_load: %s\n", error);
        return false;
    }
    if (store_thread_create(&fixture.store_thread, &fixture.store, 2, 64, 5, error, sizeof error) != 0) return false;
    control_options_t control_options = {
        .config = fixture.config,
        .tables = &fixture.tables,
        .store = &fixture.store,
        .store_thread = &fixture.store_thread,
        .store_producer = 1,
        .worker_count = 1,
        .next_user_id = fixture.loaded.next_user_id,
        .next_key_id = fixture.loaded.next_key_id,
        .jwt_secret = fixture.jwt_secret,
        .jwt_secret_length = sizeof fixture.jwt_secret,
        .job_channel_capacity = 8,
    };
    if (control_create(&fixture.control, &control_options, error, sizeof error) != 0) return false;
    if (io_uring_queue_init(16, &fixture.worker_ring, 0) != 0) return false;
    portal_bind_worker(control_portal(fixture.control), 0, fixture.worker_ring.ring_fd, &fixture.worker_mailbox);
    if (store_thread_start(&fixture.store_thread) != 0) return false;
    if (fixture.loaded.users == 0 && control_bootstrap(fixture.control, error, sizeof error) != 0) {
        fprintf(stderr, "bootstrap: %s\n", error);
        return false;
    }
    if (control_start(fixture.control, error, sizeof error) != 0) {
        fprintf(stderr, "control_start: %s\n", error);
        return false;
    }
    return true;
}

static void fixture_stop(void) {
    control_stop(fixture.control);
    control_destroy(&fixture.control);
    store_thread_stop(&fixture.store_thread);
    store_thread_destroy(&fixture.store_thread);
    store_close(&fixture.store);
    account_tables_release(&fixture.tables);
    io_uring_queue_exit(&fixture.worker_ring);
}

/* ---- A blocking HTTP/1.1 client ---- */

typedef struct response {
    int status;
    char body[1 << 20];
    size_t length;
    bool chunked;
} response_t;

static response_t response;

/* Sends one request (Connection: close) and reads the whole answer into
 * `response` (chunked bodies decoded). Returns the status or -1. */
static int http_call(const char *method, const char *target, const char *token, const char *body) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(fixture.config->admin_listen_port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        close(fd);
        return -1;
    }
    static char request[1 << 16];
    char authorization[256] = "";
    if (token != NULL) snprintf(authorization, sizeof authorization, "Authorization: Bearer %s\r\n", token);
    int length = snprintf(request, sizeof request,
                          "%s %s HTTP/1.1\r\nHost: admin\r\n%sContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                          method, target, authorization, body != NULL ? strlen(body) : 0, body != NULL ? body : "");
    RW_ASSERT(length > 0 && (size_t)length < sizeof request);
    for (int sent = 0; sent < length;) {
        ssize_t written = send(fd, request + sent, (size_t)(length - sent), MSG_NOSIGNAL);
        if (written <= 0) break;
        sent += (int)written;
    }
    static uint8_t raw[4 << 20];
    size_t received = 0;
    for (;;) {
        struct pollfd poller = {.fd = fd, .events = POLLIN};
        if (poll(&poller, 1, 10000) <= 0) break;
        ssize_t got = recv(fd, raw + received, sizeof raw - received, 0);
        if (got <= 0) break;
        received += (size_t)got;
        if (received == sizeof raw) break;
    }
    close(fd);
    http_response_parser_t parser;
    http_response_t head;
    http_response_parser_init(&parser, 16384);
    if (http_response_parse(&parser, &head, raw, received) != HTTP_PARSE_DONE) return -1;
    response.status = head.status;
    response.chunked = head.chunked;
    response.length = 0;
    if (head.chunked) {
        http_chunked_decoder_t decoder;
        http_chunked_decoder_init(&decoder);
        size_t position = head.head_length;
        for (;;) {
            size_t consumed = 0, offset = 0, data_length = 0;
            http_chunked_result_t result = http_chunked_decode(&decoder, raw + position, received - position,
                                                               &consumed, &offset, &data_length);
            if (result == HTTP_CHUNKED_DATA) {
                RW_ASSERT(response.length + data_length < sizeof response.body);
                memcpy(response.body + response.length, raw + position + offset, data_length);
                response.length += data_length;
            }
            position += consumed;
            if (result == HTTP_CHUNKED_DONE) break;
            if (result != HTTP_CHUNKED_DATA) return -1; /* truncated or bad framing */
        }
    } else {
        size_t body_length = received - head.head_length;
        RW_ASSERT(body_length < sizeof response.body);
        memcpy(response.body, raw + head.head_length, body_length);
        response.length = body_length;
    }
    response.body[response.length] = '\0';
    return response.status;
}

static int admin_call(const char *method, const char *target, const char *body) {
    return http_call(method, target, admin_token, body);
}

/* A member of a JSON object (the whole body by default): as integer or text. */
static bool member_span(const char *document, size_t length, const char *name, json_span_t *value, json_type_t *type) {
    return json_object_find((const uint8_t *)document, length, name, value, type) == 0;
}

static long long member_int(const char *document, size_t length, const char *name) {
    json_span_t value;
    json_type_t type;
    if (!member_span(document, length, name, &value, &type) || type != JSON_TYPE_NUMBER) return -999999;
    return strtoll(document + value.offset, NULL, 10);
}

static const char *member_text(const char *document, size_t length, const char *name) {
    static char text[4096];
    json_span_t value;
    json_type_t type;
    size_t text_length = 0;
    if (!member_span(document, length, name, &value, &type)) return "<absent>";
    if (type == JSON_TYPE_NULL) return "<null>";
    if (type != JSON_TYPE_STRING) {
        snprintf(text, sizeof text, "%.*s", (int)value.length, document + value.offset);
        return text;
    }
    if (json_string_decode((const uint8_t *)document + value.offset, value.length, text, sizeof text,
                           &text_length) != 0) {
        return "<bad>";
    }
    return text;
}

static long long body_int(const char *name) { return member_int(response.body, response.length, name); }
static const char *body_text(const char *name) { return member_text(response.body, response.length, name); }

static const char *error_code(void) {
    json_span_t error;
    json_type_t type;
    if (!member_span(response.body, response.length, "error", &error, &type)) return "<no error>";
    return member_text(response.body + error.offset, error.length, "code");
}

/* The data array of a list answer: element count, and element `index`. */
static uint32_t list_count(void) {
    return count_elements(response.body, "data");
}

static bool list_element(uint32_t index, json_span_t *element) {
    json_span_t array;
    json_type_t type;
    if (!member_span(response.body, response.length, "data", &array, &type)) return false;
    uint32_t cursor = 0;
    for (uint32_t at = 0; at <= index; at++) {
        if (!admin_json_array_next((const uint8_t *)response.body, response.length, array, &cursor, element)) {
            return false;
        }
    }
    return true;
}

static void test_admin_auth(void) {
    CHECK_EQ_INT(http_call("GET", "/admin/users", NULL, NULL), 401);
    CHECK(strcmp(error_code(), "invalid_admin_token") == 0);
    CHECK_EQ_INT(http_call("GET", "/admin/users", "wrong-token-wrong-token", NULL), 401);
    CHECK(strstr(response.body, "invalid admin token") != NULL);
    CHECK_EQ_INT(http_call("GET", "/admin/users", "test-admin-token-012345678", NULL), 401); /* a prefix */
    CHECK_EQ_INT(admin_call("GET", "/admin/nothing", NULL), 404);
    CHECK_EQ_INT(admin_call("GET", "/admin/users/", NULL), 404);
    CHECK_EQ_INT(admin_call("GET", "/v1/models", NULL), 404);
    CHECK_EQ_INT(admin_call("DELETE", "/admin/users", NULL), 405);
    CHECK_EQ_INT(admin_call("GET", "/admin/users/1/balance", NULL), 405);
}

static void test_admin_bootstrap(void) {
    account_user_t *admin = account_user_get(&fixture.tables, 1);
    CHECK(admin != NULL);
    if (admin == NULL) return;
    CHECK(strcmp(admin->email, "admin@ringway.local") == 0);
    CHECK_EQ_INT(atomic_load(&admin->available_micros), 1000000);
    CHECK_EQ_INT(admin_call("GET", "/admin/users/1", NULL), 200);
    CHECK(strcmp(body_text("email"), "admin@ringway.local") == 0);
    CHECK(strcmp(body_text("has_password"), "false") == 0);
    CHECK(strcmp(body_text("balance"), "1.000000") == 0);
    CHECK_EQ_INT(count_elements(response.body, "keys"), 0);
}

static uint64_t alice_id;

static void test_admin_users(void) {
    CHECK_EQ_INT(admin_call("POST", "/admin/users",
                            "{\"email\":\"Alice@Example.COM\",\"password\":\"correct horse\",\"balance\":\"2.50\"}"),
                 201);
    alice_id = (uint64_t)body_int("id");
    CHECK_EQ_INT(alice_id, 2);
    CHECK(strcmp(body_text("email"), "alice@example.com") == 0);
    CHECK_EQ_INT(body_int("balance_micros"), 2500000);
    CHECK_EQ_INT(body_int("available_micros"), 2500000);
    CHECK(strcmp(body_text("has_password"), "true") == 0);
    CHECK(strcmp(body_text("status"), "active") == 0);
    account_user_t *alice = account_user_get(&fixture.tables, alice_id);
    CHECK(alice != NULL && atomic_load(&alice->available_micros) == 2500000);

    CHECK_EQ_INT(admin_call("POST", "/admin/users", "{\"email\":\"alice@example.com\"}"), 409);
    CHECK(strcmp(error_code(), "email_taken") == 0);
    CHECK_EQ_INT(admin_call("POST", "/admin/users", "{\"email\":\"not-an-email\"}"), 400);
    CHECK(strcmp(error_code(), "invalid_email") == 0);
    CHECK_EQ_INT(admin_call("POST", "/admin/users", "{\"email\":\"c@example.com\",\"password\":\"short\"}"), 400);
    CHECK(strcmp(error_code(), "invalid_password") == 0);
    CHECK_EQ_INT(admin_call("POST", "/admin/users", "{\"email\":\"c@example.com\",\"balance\":\"1.1234567\"}"), 400);
    CHECK(strcmp(error_code(), "invalid_amount") == 0);
    CHECK_EQ_INT(admin_call("POST", "/admin/users", "{\"email\":\"c@example.com\",\"balance\":\"-1\"}"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/users", "{\"email\":\"c@example.com\",\"balance\":1.5}"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/users", "{\"email\":\"c@example.com\",\"email\":\"d@example.com\"}"), 400);
    CHECK(strcmp(error_code(), "duplicate_member") == 0);
    CHECK_EQ_INT(admin_call("POST", "/admin/users", "[1]"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/users", "{\"email\":"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/users", NULL), 400);

    /* Without balance: the free grant; without password: cannot log in. */
    CHECK_EQ_INT(admin_call("POST", "/admin/users", "{\"email\":\"carol@example.com\"}"), 201);
    CHECK_EQ_INT(body_int("balance_micros"), 1000000);
    CHECK(strcmp(body_text("has_password"), "false") == 0);

    CHECK_EQ_INT(admin_call("GET", "/admin/users", NULL), 200);
    CHECK_EQ_INT(list_count(), 3);
    CHECK(strcmp(body_text("has_more"), "false") == 0);
    CHECK_EQ_INT(admin_call("GET", "/admin/users?limit=2", NULL), 200);
    CHECK_EQ_INT(list_count(), 2);
    CHECK(strcmp(body_text("has_more"), "true") == 0);
    CHECK_EQ_INT(admin_call("GET", "/admin/users?limit=2&after=2", NULL), 200);
    CHECK_EQ_INT(list_count(), 1);
    json_span_t element;
    CHECK(list_element(0, &element));
    CHECK_EQ_INT(member_int(response.body + element.offset, element.length, "id"), 3);
    CHECK_EQ_INT(admin_call("GET", "/admin/users?limit=abc", NULL), 400);
    CHECK_EQ_INT(admin_call("GET", "/admin/users?limit=1&limit=2", NULL), 400);

    CHECK_EQ_INT(admin_call("GET", "/admin/users/99", NULL), 404);
    CHECK(strcmp(error_code(), "user_not_found") == 0);
    CHECK_EQ_INT(admin_call("GET", "/admin/users/abc", NULL), 404);
    CHECK_EQ_INT(admin_call("GET", "/admin/users/0", NULL), 404);
}

static uint64_t alice_key_id;
static char alice_key[AUTH_KEY_TEXT_BYTES];

static void test_admin_keys(void) {
    char body[512];
    snprintf(body, sizeof body,
             "{\"user_id\":%llu,\"name\":\"ci \\u00e9\",\"models\":[\"m1\"],\"tier\":\"plus\","
             "\"expires_at\":\"2099-01-01\",\"spend_cap\":\"0.50\"}",
             (unsigned long long)alice_id);
    CHECK_EQ_INT(admin_call("POST", "/admin/keys", body), 201);
    alice_key_id = (uint64_t)body_int("id");
    snprintf(alice_key, sizeof alice_key, "%s", body_text("key"));
    CHECK(auth_key_text_valid(alice_key, strlen(alice_key)));
    CHECK(strcmp(body_text("name"), "ci \xc3\xa9") == 0);
    CHECK(strcmp(body_text("tier"), "plus") == 0);
    CHECK_EQ_INT(body_int("spend_cap_micros"), 500000);
    CHECK_EQ_INT(body_int("expires_at_ms"), 4070908800000LL);
    CHECK(strcmp(body_text("expires_at"), "2099-01-01T00:00:00.000Z") == 0);
    CHECK(strcmp(body_text("models"), "[\"m1\"]") == 0);
    CHECK(strncmp(body_text("masked_key"), alice_key, 11) == 0);

    /* In memory, findable by hash, with every setting. */
    uint8_t hash[ACCOUNT_KEY_HASH_BYTES];
    auth_key_hash(alice_key, strlen(alice_key), hash);
    account_key_t *key = account_key_find(&fixture.tables, hash);
    CHECK(key != NULL);
    if (key == NULL) return;
    CHECK_EQ_INT(key->id, alice_key_id);
    CHECK_EQ_INT(key->user_index + 1, alice_id);
    CHECK(account_key_allows_model(key, 0) && !account_key_allows_model(key, 1));
    CHECK_EQ_INT(account_key_tier(key), 1); /* plus, the config's second tier */
    CHECK_EQ_INT(atomic_load(&key->spend_cap_micros), 500000);
    CHECK_EQ_INT(atomic_load(&key->spend_available_micros), 500000);
    CHECK_EQ_INT(atomic_load(&key->expires_at_ms), 4070908800000LL);

    /* Bad input. */
    CHECK_EQ_INT(admin_call("POST", "/admin/keys", "{\"user_id\":99}"), 404);
    CHECK(strcmp(error_code(), "user_not_found") == 0);
    CHECK_EQ_INT(admin_call("POST", "/admin/keys", "{}"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/keys", "{\"user_id\":2,\"models\":[\"nope\"]}"), 400);
    CHECK(strcmp(error_code(), "model_not_found") == 0);
    CHECK_EQ_INT(admin_call("POST", "/admin/keys", "{\"user_id\":2,\"models\":[\"m1\",\"m1\"]}"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/keys", "{\"user_id\":2,\"models\":[]}"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/keys", "{\"user_id\":2,\"models\":\"m1\"}"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/keys",
                            "{\"user_id\":2,\"name\":\"0123456789012345678901234567890123456789012345678901234567890123\"}"),
                 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/keys", "{\"user_id\":2,\"name\":\"tab\\there\"}"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/keys", "{\"user_id\":2,\"tier\":-1}"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/keys", "{\"user_id\":2,\"tier\":\"gold\"}"), 400);
    CHECK(strstr(response.body, "basic, plus, max") != NULL); /* the message names the tiers */
    CHECK_EQ_INT(admin_call("POST", "/admin/keys", "{\"user_id\":2,\"expires_at\":\"next week\"}"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/keys", "{\"user_id\":2,\"spend_cap\":\"lots\"}"), 400);

    /* A second key with defaults: all models, no cap, never expires. */
    CHECK_EQ_INT(admin_call("POST", "/admin/keys", "{\"user_id\":2}"), 201);
    CHECK(strcmp(body_text("name"), "default") == 0);
    CHECK(strcmp(body_text("models"), "<null>") == 0);
    CHECK(strcmp(body_text("spend_cap"), "<null>") == 0);
    CHECK(strcmp(body_text("expires_at"), "<null>") == 0);

    CHECK_EQ_INT(admin_call("GET", "/admin/keys?user_id=2", NULL), 200);
    CHECK_EQ_INT(list_count(), 2);
    CHECK(strstr(response.body, alice_key) == NULL); /* never the full key again */
    CHECK_EQ_INT(admin_call("GET", "/admin/keys", NULL), 200);
    CHECK_EQ_INT(list_count(), 2);
    CHECK_EQ_INT(admin_call("GET", "/admin/keys?user_id=99", NULL), 404);
    CHECK_EQ_INT(admin_call("GET", "/admin/users/2", NULL), 200);
    CHECK_EQ_INT(count_elements(response.body, "keys"), 2);

    /* PATCH: everything back to open, in memory and in the answer. */
    char target[64];
    snprintf(target, sizeof target, "/admin/keys/%llu", (unsigned long long)alice_key_id);
    CHECK_EQ_INT(admin_call("PATCH", target, "{\"models\":null,\"tier\":\"max\",\"spend_cap\":null,\"expires_at\":null,"
                                             "\"limits\":{\"tokens_per_day\":77},\"token_quota\":4000}"),
                 200);
    CHECK(strcmp(body_text("models"), "<null>") == 0);
    CHECK(strcmp(body_text("tier"), "max") == 0);
    CHECK_EQ_INT(account_key_tier(key), 2);
    CHECK_EQ_INT(account_key_limit(key, CONFIG_LIMIT_TOKENS_PER_DAY), 77);
    CHECK(account_key_limit(key, CONFIG_LIMIT_REQUESTS_PER_MINUTE) == ACCOUNT_LIMIT_INHERIT);
    CHECK_EQ_INT(account_key_token_quota(key), 4000);
    CHECK(account_key_allows_model(key, 1));
    CHECK_EQ_INT(atomic_load(&key->spend_cap_micros), -1);
    CHECK_EQ_INT(atomic_load(&key->expires_at_ms), 0);
    CHECK_EQ_INT(admin_call("PATCH", target, "{\"models\":[\"m2\"],\"spend_cap\":\"0.25\",\"expires_at\":1}"), 200);
    CHECK(!account_key_allows_model(key, 0) && account_key_allows_model(key, 1));
    CHECK_EQ_INT(atomic_load(&key->spend_cap_micros), 250000);
    CHECK(strcmp(body_text("expired"), "true") == 0);
    CHECK_EQ_INT(admin_call("PATCH", target, "{\"expires_at\":0}"), 200);
    CHECK(strcmp(body_text("expired"), "false") == 0);
    CHECK_EQ_INT(admin_call("PATCH", target, "{}"), 400);
    CHECK(strcmp(error_code(), "nothing_to_change") == 0);
    CHECK_EQ_INT(admin_call("PATCH", "/admin/keys/999", "{\"tier\":\"max\"}"), 404);
    CHECK_EQ_INT(admin_call("GET", target, NULL), 200);
    CHECK_EQ_INT(body_int("id"), alice_key_id);

    snprintf(target, sizeof target, "/admin/keys/%llu/disable", (unsigned long long)alice_key_id);
    CHECK_EQ_INT(admin_call("POST", target, NULL), 200);
    CHECK(strcmp(body_text("status"), "disabled") == 0);
    CHECK_EQ_INT(account_key_status(key), ACCOUNT_KEY_DISABLED);
    snprintf(target, sizeof target, "/admin/keys/%llu/enable", (unsigned long long)alice_key_id);
    CHECK_EQ_INT(admin_call("POST", target, NULL), 200);
    CHECK_EQ_INT(account_key_status(key), ACCOUNT_KEY_ACTIVE);
    CHECK_EQ_INT(admin_call("POST", "/admin/keys/999/disable", NULL), 404);
}

static void test_admin_balance(void) {
    account_user_t *alice = account_user_get(&fixture.tables, alice_id);
    CHECK(alice != NULL);
    if (alice == NULL) return;
    CHECK_EQ_INT(admin_call("POST", "/admin/users/2/balance", "{\"op\":\"top_up\",\"amount\":\"1.50\"}"), 200);
    CHECK_EQ_INT(body_int("balance_micros"), 4000000);
    CHECK_EQ_INT(atomic_load(&alice->available_micros), 4000000);
    /* An open hold makes available lower than the balance: deduct is limited by available. */
    atomic_fetch_sub(&alice->available_micros, 3500000);
    CHECK_EQ_INT(admin_call("POST", "/admin/users/2/balance", "{\"op\":\"deduct\",\"amount\":\"0.6\"}"), 409);
    CHECK(strcmp(error_code(), "insufficient_balance") == 0);
    CHECK_EQ_INT(atomic_load(&alice->available_micros), 500000);
    CHECK_EQ_INT(admin_call("POST", "/admin/users/2/balance", "{\"op\":\"deduct\",\"amount\":\"0.5\"}"), 200);
    CHECK_EQ_INT(atomic_load(&alice->available_micros), 0);
    CHECK_EQ_INT(body_int("balance_micros"), 3500000);
    atomic_fetch_add(&alice->available_micros, 3500000); /* the hold ends */
    CHECK_EQ_INT(admin_call("POST", "/admin/users/2/balance", "{\"op\":\"deduct\",\"amount\":\"100\"}"), 409);
    CHECK_EQ_INT(admin_call("POST", "/admin/users/2/balance", "{\"op\":\"deduct\",\"amount\":\"abc\"}"), 400);
    CHECK(strcmp(error_code(), "invalid_amount") == 0);
    CHECK_EQ_INT(admin_call("POST", "/admin/users/2/balance", "{\"op\":\"deduct\",\"amount\":\"0\"}"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/users/2/balance", "{\"op\":\"steal\",\"amount\":\"1\"}"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/users/2/balance", "{\"amount\":\"1\"}"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/users/2/balance", "{\"op\":\"top_up\"}"), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/users/99/balance", "{\"op\":\"top_up\",\"amount\":\"1\"}"), 404);
    CHECK_EQ_INT(atomic_load(&alice->available_micros), 3500000);

    CHECK_EQ_INT(admin_call("POST", "/admin/users/2/suspend", NULL), 200);
    CHECK(strcmp(body_text("status"), "suspended") == 0);
    CHECK_EQ_INT(account_user_status(alice), ACCOUNT_USER_SUSPENDED);
    CHECK_EQ_INT(admin_call("POST", "/admin/users/2/resume", NULL), 200);
    CHECK_EQ_INT(account_user_status(alice), ACCOUNT_USER_ACTIVE);
    CHECK_EQ_INT(admin_call("POST", "/admin/users/2/suspend", NULL), 200); /* stays suspended across the restart */
}

static void test_admin_audit(void) {
    CHECK_EQ_INT(admin_call("GET", "/admin/audit?limit=1000", NULL), 200);
    const char *actions[] = {"user.create", "key.create", "key.update", "key.disable", "key.enable",
                             "balance.top_up", "balance.deduct", "user.suspend", "user.resume"};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(actions); index++) {
        char needle[64];
        snprintf(needle, sizeof needle, "\"action\":\"%s\"", actions[index]);
        if (strstr(response.body, needle) == NULL) fprintf(stderr, "  no audit entry %s\n", actions[index]);
        CHECK(strstr(response.body, needle) != NULL);
    }
    /* Newest first: the last change was the suspension; by this token's fingerprint. */
    json_span_t first;
    CHECK(list_element(0, &first));
    CHECK(strcmp(member_text(response.body + first.offset, first.length, "action"), "user.suspend") == 0);
    CHECK(strcmp(member_text(response.body + first.offset, first.length, "target"), "user:2") == 0);
    uint8_t hash[32];
    auth_key_hash(admin_token, strlen(admin_token), hash);
    char fingerprint[13];
    for (int index = 0; index < 6; index++) snprintf(fingerprint + index * 2, 3, "%02x", hash[index]);
    CHECK(strcmp(member_text(response.body + first.offset, first.length, "admin"), fingerprint) == 0);
    CHECK(strstr(response.body, "\"admin\":\"system\"") != NULL); /* the bootstrap */
    CHECK(strstr(response.body, admin_token) == NULL);
    CHECK_EQ_INT(admin_call("GET", "/admin/audit?limit=2", NULL), 200);
    CHECK_EQ_INT(list_count(), 2);
    CHECK(strcmp(body_text("has_more"), "true") == 0);
}

/* Settles `count` usage records for alice's first key through the store
 * thread, as a relay worker (producer 0) would. */
static void settle_usage(uint32_t count, int64_t cost_micros) {
    for (uint32_t index = 0; index < count; index++) {
        store_message_t message;
        memset(&message, 0, sizeof message);
        message.kind = STORE_MESSAGE_SETTLE;
        message.token = index + 1;
        store_usage_record_t *usage = &message.body.settle.usage;
        snprintf(usage->request_id, sizeof usage->request_id, "req,\"%u\"", index);
        usage->user_id = alice_id;
        usage->key_id = alice_key_id;
        snprintf(usage->model, sizeof usage->model, "m1");
        snprintf(usage->upstream, sizeof usage->upstream, "u");
        snprintf(usage->status, sizeof usage->status, "completed");
        usage->prompt_tokens = 10 + index;
        usage->completion_tokens = 5;
        usage->cost_micros = cost_micros;
        message.body.settle.hold_micros = cost_micros;
        store_ack_t ack;
        int status = store_thread_call(&fixture.store_thread, 0, &message, NULL, 10000, &ack);
        CHECK_EQ_INT(status, 0);
        CHECK_EQ_INT(ack.status, 0);
    }
}

enum { USAGE_RECORDS = 1500 };

static void test_admin_usage_export(void) {
    settle_usage(USAGE_RECORDS, 7);
    /* JSON: one array, every record once, newest first; long enough to be chunked. */
    CHECK_EQ_INT(admin_call("GET", "/admin/usage?user_id=2&format=json", NULL), 200);
    CHECK(response.chunked);
    CHECK(json_validate((const uint8_t *)response.body, response.length, NULL) == 0);
    json_span_t whole = {0, (uint32_t)response.length};
    while (whole.length > 0 && response.body[whole.length - 1] == '\n') whole.length--;
    uint32_t cursor = 0, count = 0;
    json_span_t element;
    long long previous = LLONG_MAX;
    bool descending = true;
    while (admin_json_array_next((const uint8_t *)response.body, response.length, whole, &cursor, &element)) {
        long long id = member_int(response.body + element.offset, element.length, "id");
        descending = descending && id < previous;
        previous = id;
        count++;
    }
    CHECK_EQ_INT(count, USAGE_RECORDS);
    CHECK(descending);
    CHECK_EQ_INT(previous, 1);

    /* JSONL with a limit; by key; CSV with quoting; ranges. */
    CHECK_EQ_INT(admin_call("GET", "/admin/usage?format=jsonl&limit=10", NULL), 200);
    CHECK(!response.chunked);
    uint32_t lines = 0;
    for (size_t index = 0; index < response.length; index++) lines += response.body[index] == '\n';
    CHECK_EQ_INT(lines, 10);
    char target[128];
    snprintf(target, sizeof target, "/admin/usage?key_id=%llu&format=csv", (unsigned long long)alice_key_id);
    CHECK_EQ_INT(admin_call("GET", target, NULL), 200);
    CHECK(strncmp(response.body, "id,created_ms,created,request_id,user_id,key_id,model,", 54) == 0);
    lines = 0;
    for (size_t index = 0; index + 1 < response.length; index++) {
        lines += response.body[index] == '\r' && response.body[index + 1] == '\n';
    }
    CHECK_EQ_INT(lines, USAGE_RECORDS + 1);
    CHECK(strstr(response.body, ",\"req,\"\"1499\"\"\",2,") != NULL);
    CHECK(strstr(response.body, ",0.000007,completed,") != NULL);

    CHECK_EQ_INT(admin_call("GET", "/admin/usage?from=2099-01-01", NULL), 200);
    CHECK_EQ_INT(response.length, 3); /* "[]\n" */
    CHECK_EQ_INT(admin_call("GET", "/admin/usage?to=1970-01-01T00:00:00.001Z&format=jsonl", NULL), 200);
    CHECK_EQ_INT(response.length, 0);
    CHECK_EQ_INT(admin_call("GET", "/admin/usage?from=1970-01-02&to=1970-01-01", NULL), 400);
    CHECK_EQ_INT(admin_call("GET", "/admin/usage?from=yesterday", NULL), 400);
    CHECK(strcmp(error_code(), "invalid_parameter") == 0);
    CHECK_EQ_INT(admin_call("GET", "/admin/usage?format=xml", NULL), 400);
    CHECK_EQ_INT(admin_call("GET", "/admin/usage?user_id=99", NULL), 404);
    CHECK_EQ_INT(admin_call("GET", "/admin/usage?key_id=999", NULL), 404);
    CHECK_EQ_INT(admin_call("GET", "/admin/usage?user_id=1&key_id=1", NULL), 400);
    CHECK_EQ_INT(admin_call("POST", "/admin/usage", NULL), 405);
}

/* ---- Jobs through the channels ---- */

static uint8_t job_reply[64 * 1024];

/* Submits one job as worker 0 (ringing the control thread's doorbell on the
 * fake worker ring) and waits for the doorbell that announces the reply. */
static uint32_t job_reply_capacity = sizeof job_reply - 1;

static int run_job(uint32_t kind, uint64_t user_id, const char *body, const char *argument, uint32_t limit) {
    static uint32_t slot;
    portal_job_t job = {
        .kind = kind,
        .worker_index = 0,
        .slot = ++slot,
        .limit = limit,
        .user_id = user_id,
        .body = (const uint8_t *)body,
        .body_length = body != NULL ? (uint32_t)strlen(body) : 0,
        .argument = (const uint8_t *)argument,
        .argument_length = argument != NULL ? (uint32_t)strlen(argument) : 0,
        .reply = job_reply,
        .reply_capacity = job_reply_capacity,
    };
    CHECK(portal_submit(control_portal(fixture.control), 0, &job, &fixture.worker_ring) == PORTAL_SUBMITTED);
    io_uring_submit(&fixture.worker_ring);
    portal_reply_t reply;
    for (int attempt = 0; attempt < 400; attempt++) {
        struct io_uring_cqe *cqe = NULL;
        struct __kernel_timespec timeout = {0, 50 * 1000 * 1000};
        if (io_uring_wait_cqe_timeout(&fixture.worker_ring, &cqe, &timeout) == 0) {
            bool doorbell = io_uring_cqe_get_data(cqe) == &fixture.worker_mailbox;
            io_uring_cqe_seen(&fixture.worker_ring, cqe);
            if (!doorbell) continue;
        }
        if (portal_reply_pop(control_portal(fixture.control), 0, &reply)) {
            CHECK_EQ_INT(reply.slot, slot);
            memcpy(response.body, job_reply, reply.length);
            response.body[reply.length] = '\0';
            response.length = reply.length;
            response.status = reply.status;
            return reply.status;
        }
    }
    return -1;
}

static void test_jobs(void) {
    CHECK_EQ_INT(run_job(PORTAL_JOB_REGISTER, 0, "{\"email\":\"Bob@Example.com\",\"password\":\"hunter2hunter2\"}",
                         NULL, 0),
                 200);
    long long bob_id = body_int("user_id");
    CHECK_EQ_INT(bob_id, 4);
    CHECK_EQ_INT(body_int("balance"), 1000000);
    CHECK(strcmp(body_text("balance_display"), "1.000000") == 0);
    char key[AUTH_KEY_TEXT_BYTES];
    snprintf(key, sizeof key, "%s", body_text("api_key"));
    uint8_t hash[ACCOUNT_KEY_HASH_BYTES];
    auth_key_hash(key, strlen(key), hash);
    account_key_t *bob_key = account_key_find(&fixture.tables, hash);
    CHECK(bob_key != NULL && bob_key->user_index + 1 == (uint64_t)bob_id);
    char token[2048];
    snprintf(token, sizeof token, "%s", body_text("token"));
    jwt_claims_t claims;
    CHECK_EQ_INT(jwt_verify(fixture.jwt_secret, sizeof fixture.jwt_secret, (const uint8_t *)token, strlen(token),
                            time(NULL), &claims),
                 JWT_OK);
    CHECK_EQ_INT(claims.user_id, bob_id);
    CHECK(claims.expires_at_s - claims.issued_at_s == 3600);
    CHECK(strcmp(claims.email, "bob@example.com") == 0);

    CHECK_EQ_INT(run_job(PORTAL_JOB_REGISTER, 0, "{\"email\":\"bob@example.com\",\"password\":\"hunter2hunter2\"}",
                         NULL, 0),
                 409);
    CHECK_EQ_INT(run_job(PORTAL_JOB_REGISTER, 0, "{\"email\":\"bob@\",\"password\":\"hunter2hunter2\"}", NULL, 0),
                 400);
    CHECK(strcmp(error_code(), "invalid_email") == 0);
    CHECK_EQ_INT(run_job(PORTAL_JOB_REGISTER, 0, "{\"email\":\"dan@example.com\",\"password\":\"1234567\"}", NULL, 0),
                 400);
    CHECK(strcmp(error_code(), "invalid_password") == 0);
    CHECK_EQ_INT(run_job(PORTAL_JOB_REGISTER, 0, "{\"email\":\"dan@example.com\"}", NULL, 0), 400);
    CHECK_EQ_INT(run_job(PORTAL_JOB_REGISTER, 0, "not json", NULL, 0), 400);
    CHECK_EQ_INT(run_job(PORTAL_JOB_REGISTER, 0, NULL, NULL, 0), 400);

    CHECK_EQ_INT(run_job(PORTAL_JOB_LOGIN, 0, "{\"email\":\"BOB@example.com\",\"password\":\"hunter2hunter2\"}", NULL,
                         0),
                 200);
    CHECK_EQ_INT(body_int("user_id"), bob_id);
    CHECK_EQ_INT(body_int("balance"), 1000000);
    CHECK_EQ_INT(run_job(PORTAL_JOB_LOGIN, 0, "{\"email\":\"bob@example.com\",\"password\":\"wrong-password\"}", NULL,
                         0),
                 401);
    char wrong_message[256];
    size_t wrong_length = RW_MIN(response.length, sizeof wrong_message - 1);
    memcpy(wrong_message, response.body, wrong_length);
    wrong_message[wrong_length] = '\0';
    CHECK_EQ_INT(run_job(PORTAL_JOB_LOGIN, 0, "{\"email\":\"nobody@example.com\",\"password\":\"hunter2hunter2\"}",
                         NULL, 0),
                 401);
    CHECK(strcmp(wrong_message, response.body) == 0); /* the same answer: emails do not leak */
    CHECK_EQ_INT(run_job(PORTAL_JOB_LOGIN, 0, "{\"email\":\"admin@ringway.local\",\"password\":\"\"}", NULL, 0), 401);
    CHECK_EQ_INT(run_job(PORTAL_JOB_LOGIN, 0, "{\"email\":\"carol@example.com\",\"password\":\"anything-at-all\"}",
                         NULL, 0),
                 401);

    CHECK_EQ_INT(run_job(PORTAL_JOB_KEY_CREATE, (uint64_t)bob_id, NULL, "my%20laptop+key", 0), 200);
    CHECK(strcmp(body_text("name"), "my laptop key") == 0);
    CHECK(auth_key_text_valid(body_text("key"), AUTH_KEY_TEXT_LENGTH));
    long long second_key = body_int("id");
    CHECK_EQ_INT(run_job(PORTAL_JOB_KEY_CREATE, (uint64_t)bob_id, NULL, "%zz", 0), 400);
    CHECK_EQ_INT(run_job(PORTAL_JOB_KEY_CREATE, (uint64_t)bob_id, NULL, "a%0Ab", 0), 400);
    CHECK_EQ_INT(run_job(PORTAL_JOB_KEY_CREATE, (uint64_t)bob_id, NULL, NULL, 0), 200);
    CHECK(strcmp(body_text("name"), "default") == 0);

    CHECK_EQ_INT(run_job(PORTAL_JOB_KEYS_LIST, (uint64_t)bob_id, NULL, NULL, 0), 200);
    CHECK_EQ_INT(list_count(), 3);
    CHECK(strstr(response.body, key) == NULL);
    CHECK(strstr(response.body, "\"key\":") == NULL);
    CHECK(strstr(response.body, "...") != NULL);

    char argument[32];
    snprintf(argument, sizeof argument, "%llu", (unsigned long long)alice_key_id);
    CHECK_EQ_INT(run_job(PORTAL_JOB_KEY_DELETE, (uint64_t)bob_id, NULL, argument, 0), 404); /* alice's key */
    CHECK_EQ_INT(run_job(PORTAL_JOB_KEY_DELETE, (uint64_t)bob_id, NULL, "abc", 0), 404);
    snprintf(argument, sizeof argument, "%lld", second_key);
    CHECK_EQ_INT(run_job(PORTAL_JOB_KEY_DELETE, (uint64_t)bob_id, NULL, argument, 0), 200);
    CHECK(strcmp(body_text("deleted"), "true") == 0);
    account_key_t *deleted = account_key_by_id(&fixture.tables, (uint64_t)second_key);
    CHECK(deleted != NULL && account_key_status(deleted) == ACCOUNT_KEY_DISABLED);

    CHECK_EQ_INT(run_job(PORTAL_JOB_USAGE_LIST, alice_id, NULL, NULL, 5), 200);
    CHECK_EQ_INT(list_count(), 5);
    CHECK(strcmp(body_text("has_more"), "true") == 0);
    json_span_t first;
    CHECK(list_element(0, &first));
    CHECK_EQ_INT(member_int(response.body + first.offset, first.length, "id"), USAGE_RECORDS);
    CHECK(strcmp(member_text(response.body + first.offset, first.length, "cost"), "0.000007") == 0);
    CHECK_EQ_INT(member_int(response.body + first.offset, first.length, "total_tokens"), 10 + USAGE_RECORDS - 1 + 5);
    CHECK_EQ_INT(run_job(PORTAL_JOB_USAGE_LIST, alice_id, NULL, NULL, 0), 200);
    CHECK_EQ_INT(list_count(), PORTAL_USAGE_LIMIT_DEFAULT);
    CHECK_EQ_INT(run_job(PORTAL_JOB_USAGE_LIST, (uint64_t)bob_id, NULL, NULL, 0), 200);
    CHECK_EQ_INT(list_count(), 0);
    CHECK(strcmp(body_text("has_more"), "false") == 0);
    CHECK_EQ_INT(run_job(PORTAL_JOB_USAGE_LIST, 60, NULL, NULL, 0), 404);

    /* A reply buffer below PORTAL_REPLY_BYTES_MIN: refused, never overrun. */
    job_reply_capacity = PORTAL_REPLY_BYTES_MIN - 1;
    CHECK_EQ_INT(run_job(PORTAL_JOB_KEYS_LIST, (uint64_t)bob_id, NULL, NULL, 0), 413);
    CHECK(strcmp(error_code(), "request_too_large") == 0);
    memset(job_reply, 'z', sizeof job_reply);
    job_reply_capacity = 40;
    CHECK_EQ_INT(run_job(PORTAL_JOB_REGISTER, 0, "{}", NULL, 0), 413);
    CHECK_EQ_INT(response.length, 0);
    CHECK(job_reply[40] == 'z'); /* nothing written past the capacity */
    /* Just enough room: a key list too long for it is cut short with has_more. */
    job_reply_capacity = 2500;
    CHECK_EQ_INT(run_job(PORTAL_JOB_KEYS_LIST, (uint64_t)bob_id, NULL, NULL, 0), 200);
    CHECK(json_validate((const uint8_t *)response.body, response.length, NULL) == 0);
    CHECK(list_count() < 3);
    CHECK(strcmp(body_text("has_more"), "true") == 0);
    job_reply_capacity = sizeof job_reply - 1;
}

/* Everything survives a restart: the store is the truth the tables come from. */
static void test_restart(void) {
    fixture_stop();
    CHECK(fixture_start(true));
    CHECK_EQ_INT(fixture.loaded.users, 4);
    CHECK_EQ_INT(fixture.loaded.keys, 5);
    account_user_t *alice = account_user_get(&fixture.tables, alice_id);
    CHECK(alice != NULL);
    if (alice == NULL) return;
    CHECK_EQ_INT(account_user_status(alice), ACCOUNT_USER_SUSPENDED);
    /* 2.50 + 1.50 - 0.50, minus 1500 settlements of 7 micros. */
    CHECK_EQ_INT(atomic_load(&alice->available_micros), 3500000 - USAGE_RECORDS * 7);
    account_key_t *key = account_key_by_id(&fixture.tables, alice_key_id);
    CHECK(key != NULL);
    if (key == NULL) return;
    CHECK(!account_key_allows_model(key, 0) && account_key_allows_model(key, 1));
    CHECK_EQ_INT(account_key_tier(key), 2);
    CHECK_EQ_INT(account_key_limit(key, CONFIG_LIMIT_TOKENS_PER_DAY), 77);
    CHECK_EQ_INT(account_key_token_quota(key), 4000);
    CHECK_EQ_INT(atomic_load(&key->spend_cap_micros), 250000);
    CHECK_EQ_INT(atomic_load(&key->spend_available_micros), 250000 - USAGE_RECORDS * 7);
    /* New ids continue after the old ones; the bootstrap did not run again. */
    CHECK_EQ_INT(admin_call("POST", "/admin/users", "{\"email\":\"erin@example.com\"}"), 201);
    CHECK_EQ_INT(body_int("id"), 5);
    CHECK_EQ_INT(admin_call("POST", "/admin/keys", "{\"user_id\":5}"), 201);
    CHECK_EQ_INT(body_int("id"), 6);
    CHECK_EQ_INT(admin_call("GET", "/admin/audit?limit=1000", NULL), 200);
    uint32_t system_entries = 0;
    for (const char *at = response.body; (at = strstr(at, "\"admin\":\"system\"")) != NULL; at++) system_entries++;
    CHECK_EQ_INT(system_entries, 1);
}

static void test_admin_disabled(void) {
    fixture_stop();
    CHECK(fixture_start(false));
    CHECK_EQ_INT(admin_call("GET", "/admin/users", NULL), 403);
    CHECK(strstr(response.body, "the admin API is disabled: set admin_token") != NULL);
    CHECK(strcmp(error_code(), "admin_disabled") == 0);
    /* Jobs still work without the admin API. */
    CHECK_EQ_INT(run_job(PORTAL_JOB_LOGIN, 0, "{\"email\":\"bob@example.com\",\"password\":\"hunter2hunter2\"}", NULL,
                         0),
                 200);
}

static void test_port_taken(void) {
    /* A second control thread on the same port must fail cleanly: the
     * server's socket uses SO_REUSEPORT, so take the port without it. */
    control_t *second = NULL;
    control_options_t options = {
        .config = fixture.config, .tables = &fixture.tables, .store = &fixture.store,
        .store_thread = &fixture.store_thread, .store_producer = 1, .worker_count = 1,
        .next_user_id = 100, .next_key_id = 100, .jwt_secret = fixture.jwt_secret,
        .jwt_secret_length = sizeof fixture.jwt_secret,
    };
    char error[512];
    CHECK_EQ_INT(control_create(&second, &options, error, sizeof error), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    uint16_t port = free_port();
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK(bind(fd, (struct sockaddr *)&address, sizeof address) == 0 && listen(fd, 1) == 0);
    config_t *config = fixture.config;
    uint16_t saved = config->admin_listen_port;
    config->admin_listen_port = port;
    CHECK_EQ_INT(control_start(second, error, sizeof error), -1);
    CHECK(strstr(error, "admin API on 127.0.0.1:") != NULL);
    config->admin_listen_port = saved;
    close(fd);
    control_destroy(&second);
    CHECK(second == NULL);
}

int main(void) {
    RUN_TEST(test_url_decode_and_query);
    RUN_TEST(test_csv_field);
    RUN_TEST(test_json_array_walk);
    RUN_TEST(test_mutations);

    snprintf(fixture.directory, sizeof fixture.directory, "/tmp/ringway-test-admin-XXXXXX");
    fixture.config = calloc(1, sizeof *fixture.config);
    RW_ASSERT(fixture.config != NULL && mkdtemp(fixture.directory) != NULL);
    memset(fixture.jwt_secret, 'j', sizeof fixture.jwt_secret);
    fixture.worker_mailbox = (loop_operation_t){0};
    if (!fixture_start(true)) {
        fprintf(stderr, "cannot start the control thread fixture\n");
        return 1;
    }
    RUN_TEST(test_admin_auth);
    RUN_TEST(test_admin_bootstrap);
    RUN_TEST(test_admin_users);
    RUN_TEST(test_admin_keys);
    RUN_TEST(test_admin_balance);
    RUN_TEST(test_admin_audit);
    RUN_TEST(test_admin_usage_export);
    RUN_TEST(test_jobs);
    RUN_TEST(test_restart);
    RUN_TEST(test_port_taken);
    RUN_TEST(test_admin_disabled);
    fixture_stop();
    char command[512];
    snprintf(command, sizeof command, "rm -rf '%s'", fixture.directory);
    if (system(command) != 0) fprintf(stderr, "cannot remove %s\n", fixture.directory);
    free(fixture.config);
    return UNIT_REPORT();
}
