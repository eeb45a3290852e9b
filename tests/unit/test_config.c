/* Unit tests for src/config/config.c: the demo configuration, defaults, each
 * error with its exact "FILE:LINE: problem" text, base_url parsing, prices,
 * [billing] and [auth], model lookup, byte-by-byte and split feeding, and a
 * seeded mutation loop.
 * Runs with the working directory at the repository root. */
#include "ringway/common.h"
#include "ringway/config.h"
#include "ringway/ledger.h"
#include "unit.h"

#include <stdint.h>
#include <stdlib.h>

static config_t *config_a;
static config_t *config_b;
static char error_a[512];
static char error_b[512];

/* The smallest valid configuration, appended to cases that test [server],
 * [limits] or [timeouts] keys. */
#define MINIMAL_TAIL "[upstream u]\nbase_url = https://api.example.com/v1\n[model m]\nupstream = u\n"

static int parse_text(config_t *config, const char *text, char *error, size_t error_size) {
    return config_parse(config, text, strlen(text), "t.conf", error, error_size);
}

/* Reads a whole file into `buffer` (NUL-terminated); returns its length. */
static size_t read_file(const char *path, char *buffer, size_t capacity) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        return 0;
    }
    size_t length = fread(buffer, 1, capacity - 1, file);
    fclose(file);
    buffer[length] = '\0';
    return length;
}

static void test_demo_configuration(void) {
    int result = config_load(config_a, "conf/ringway.conf", error_a, sizeof error_a);
    if (result != 0) {
        fprintf(stderr, "  %s\n", error_a);
    }
    CHECK_EQ_INT(result, 0);
    CHECK(strcmp(config_a->source_path, "conf/ringway.conf") == 0);
    CHECK(strcmp(config_a->listen_host, "127.0.0.1") == 0);
    CHECK_EQ_INT(config_a->listen_port, 8080);
    CHECK(strcmp(config_a->admin_listen_host, "127.0.0.1") == 0);
    CHECK_EQ_INT(config_a->admin_listen_port, 8081);
    CHECK_EQ_INT(config_a->threads, 0);
    CHECK(strcmp(config_a->data_dir, "./data") == 0);
    CHECK_EQ_INT(config_a->header_bytes_max, 16384);
    CHECK_EQ_INT(config_a->body_bytes_max, 10485760);
    CHECK_EQ_INT(config_a->request_buffer_bytes, 65536);
    CHECK_EQ_INT(config_a->stream_buffer_bytes, 16384);
    CHECK_EQ_INT(config_a->drain_bytes_max, 1048576);
    CHECK_EQ_INT(config_a->client_disconnect, CONFIG_DISCONNECT_DRAIN);
    CHECK_EQ_INT(config_a->upstream_count, 1);
    CHECK_EQ_INT(config_a->model_count, 1);

    const config_upstream_t *mock = &config_a->upstreams[0];
    CHECK(strcmp(mock->name, "mock") == 0);
    CHECK(strcmp(mock->base_url, "https://127.0.0.1:9443/v1") == 0);
    CHECK(mock->tls);
    CHECK(strcmp(mock->host, "127.0.0.1") == 0);
    CHECK_EQ_INT(mock->port, 9443);
    CHECK(strcmp(mock->base_path, "/v1") == 0);
    CHECK(mock->has_api_key);
    CHECK(strcmp(mock->api_keys[0], "demo-upstream-key") == 0);
    CHECK(strcmp(mock->ca_file, "data/certs/ca.pem") == 0);
    CHECK(mock->verify);
    CHECK(strcmp(mock->sni, "") == 0);
    CHECK_EQ_INT(mock->connect_ms, 5000);
    CHECK_EQ_INT(mock->first_byte_ms, 120000);
    CHECK_EQ_INT(mock->idle_ms, 120000);

    const char *name = "ringway-demo";
    const config_model_t *model = config_find_model(config_a, (const uint8_t *)name, strlen(name));
    CHECK(model != NULL);
    if (model != NULL) {
        CHECK(strcmp(model->name, "ringway-demo") == 0);
        CHECK_EQ_INT(model->routes[0].upstream_index, 0);
        CHECK(strcmp(model->routes[0].upstream_model, "mock-small") == 0);
        CHECK(strcmp(model->owned_by, "mock") == 0);
        CHECK_EQ_INT(model->input_price_micros, 250000);
        CHECK_EQ_INT(model->cached_input_price_micros, 125000);
        CHECK_EQ_INT(model->output_price_micros, 1000000);
        CHECK_EQ_INT(model->request_price_micros, 0);
        CHECK_EQ_INT(model->max_output_tokens, 4096);
    }

    /* The three tiers resellers publish; keys get pro, accounts no tier. */
    CHECK_EQ_INT(config_a->tier_count, 3);
    CHECK(strcmp(config_a->tiers[0].name, "free") == 0);
    CHECK_EQ_INT(config_a->tiers[0].limits[CONFIG_LIMIT_REQUESTS_PER_MINUTE], 20);
    CHECK_EQ_INT(config_a->tiers[0].limits[CONFIG_LIMIT_TOKENS_PER_MINUTE], 40000);
    CHECK_EQ_INT(config_a->tiers[1].limits[CONFIG_LIMIT_REQUESTS_PER_MINUTE], 60);
    CHECK_EQ_INT(config_a->tiers[1].limits[CONFIG_LIMIT_TOKENS_PER_MINUTE], 150000);
    CHECK_EQ_INT(config_a->tiers[2].limits[CONFIG_LIMIT_REQUESTS_PER_MINUTE], 300);
    CHECK_EQ_INT(config_a->tiers[2].limits[CONFIG_LIMIT_TOKENS_PER_MINUTE], 1000000);
    CHECK_EQ_INT(config_a->tiers[2].limits[CONFIG_LIMIT_CONCURRENT_REQUESTS], 0);
    CHECK_EQ_INT(config_a->key_tier, 2);
    CHECK(config_a->account_tier == CONFIG_TIER_NONE);

    CHECK_EQ_INT(config_a->sync_interval_ms, 10);
    CHECK_EQ_INT(config_a->free_grant_micros, 1000000);
    CHECK_EQ_INT(config_a->users_max, 100000);
    CHECK_EQ_INT(config_a->keys_max, 262144);
    /* The demo keeps a clearly marked admin token so the README's ringctl
     * examples work; no JWT secret, so the store generates one. */
    CHECK(config_a->has_admin_token);
    CHECK(strcmp(config_a->admin_token, "demo-admin-token-CHANGE-ME") == 0);
    CHECK(!config_a->has_jwt_secret);
    CHECK(strcmp(config_a->jwt_secret, "") == 0);
    CHECK_EQ_INT(config_a->jwt_ttl_s, 86400);
}

/* The commented-out provider example in the demo file is itself valid once
 * uncommented and its variable set. */
static void test_demo_provider_example(void) {
    static char text[65536];
    size_t length = read_file("conf/ringway.conf", text, sizeof text);
    CHECK(length > 0);
    const char *marker = "# [upstream deepseek]";
    char *start = strstr(text, marker);
    CHECK(start != NULL);
    if (start == NULL) {
        return;
    }
    /* Uncomment every "# " line from the marker on. */
    static char edited[65536];
    size_t head = (size_t)(start - text);
    memcpy(edited, text, head);
    size_t out = head;
    for (const char *p = start; *p != '\0';) {
        if (p[0] == '#' && p[1] == ' ') {
            p += 2;
        } else if (p[0] == '#' && p[1] == '\n') {
            p += 1;
        }
        while (*p != '\0' && *p != '\n') {
            edited[out++] = *p++;
        }
        if (*p == '\n') {
            edited[out++] = *p++;
        }
    }
    edited[out] = '\0';
    setenv("DEEPSEEK_API_KEY", "sk-test-deepseek", 1);
    int result = parse_text(config_a, edited, error_a, sizeof error_a);
    if (result != 0) {
        fprintf(stderr, "  %s\n", error_a);
    }
    CHECK_EQ_INT(result, 0);
    CHECK_EQ_INT(config_a->upstream_count, 2);
    CHECK_EQ_INT(config_a->model_count, 2);
    const config_model_t *model = config_find_model(config_a, (const uint8_t *)"deepseek-chat", 13);
    CHECK(model != NULL);
    if (model != NULL) {
        const config_upstream_t *upstream = &config_a->upstreams[model->routes[0].upstream_index];
        CHECK(strcmp(upstream->name, "deepseek") == 0);
        CHECK(strcmp(upstream->host, "api.deepseek.com") == 0);
        CHECK_EQ_INT(upstream->port, 443);
        CHECK(strcmp(upstream->base_path, "/v1") == 0);
        CHECK(strcmp(upstream->api_keys[0], "sk-test-deepseek") == 0);
        CHECK(strcmp(model->routes[0].upstream_model, "deepseek-chat") == 0);
        CHECK(strcmp(model->owned_by, "deepseek") == 0);
        CHECK_EQ_INT(model->input_price_micros, 270000);
        CHECK_EQ_INT(model->cached_input_price_micros, 70000);
        CHECK_EQ_INT(model->output_price_micros, 1100000);
        CHECK_EQ_INT(model->request_price_micros, 0);
        CHECK_EQ_INT(model->max_output_tokens, 8192);
    }
    unsetenv("DEEPSEEK_API_KEY");
    CHECK_EQ_INT(parse_text(config_a, edited, error_a, sizeof error_a), -1);
    CHECK(strstr(error_a, "environment variable 'DEEPSEEK_API_KEY'") != NULL);
}

static void test_defaults(void) {
    config_set_defaults(config_a);
    CHECK(strcmp(config_a->listen_host, "127.0.0.1") == 0);
    CHECK_EQ_INT(config_a->listen_port, 8080);
    CHECK_EQ_INT(config_a->threads, 0);
    CHECK(strcmp(config_a->data_dir, "./data") == 0);
    CHECK(strcmp(config_a->admin_listen_host, "127.0.0.1") == 0);
    CHECK_EQ_INT(config_a->admin_listen_port, 8081);
    CHECK_EQ_INT(config_a->connections_per_thread, 4096);
    CHECK_EQ_INT(config_a->streams_per_thread, 1024);
    CHECK_EQ_INT(config_a->header_bytes_max, 16384);
    CHECK_EQ_INT(config_a->body_bytes_max, 10485760);
    CHECK_EQ_INT(config_a->request_buffer_bytes, 65536);
    CHECK_EQ_INT(config_a->large_bodies_per_thread, 4);
    CHECK_EQ_INT(config_a->stream_buffer_bytes, 16384);
    CHECK_EQ_INT(config_a->upstream_connections_per_thread, 256);
    CHECK_EQ_INT(config_a->drain_bytes_max, 1048576);
    CHECK_EQ_INT(config_a->header_ms, 10000);
    CHECK_EQ_INT(config_a->body_ms, 60000);
    CHECK_EQ_INT(config_a->keepalive_idle_ms, 75000);
    CHECK_EQ_INT(config_a->upstream_connect_ms, 5000);
    CHECK_EQ_INT(config_a->upstream_first_byte_ms, 120000);
    CHECK_EQ_INT(config_a->upstream_idle_ms, 120000);
    CHECK_EQ_INT(config_a->drain_ms, 30000);
    CHECK_EQ_INT(config_a->upstream_keepalive_ms, 60000);
    CHECK_EQ_INT(config_a->client_disconnect, CONFIG_DISCONNECT_DRAIN);
    CHECK_EQ_INT(config_a->sync_interval_ms, 10);
    CHECK_EQ_INT(config_a->free_grant_micros, 1000000);
    CHECK_EQ_INT(config_a->users_max, 100000);
    CHECK_EQ_INT(config_a->keys_max, 262144);
    CHECK(!config_a->has_admin_token);
    CHECK(strcmp(config_a->admin_token, "") == 0);
    CHECK(!config_a->has_jwt_secret);
    CHECK(strcmp(config_a->jwt_secret, "") == 0);
    CHECK_EQ_INT(config_a->jwt_ttl_s, 86400);
    CHECK_EQ_INT(config_a->upstream_count, 0);
    CHECK_EQ_INT(config_a->model_count, 0);

    /* A minimal file keeps all of them and fills the per-section defaults. */
    CHECK_EQ_INT(parse_text(config_b, MINIMAL_TAIL, error_b, sizeof error_b), 0);
    CHECK(strcmp(config_b->source_path, "t.conf") == 0);
    CHECK_EQ_INT(config_b->connections_per_thread, 4096);
    CHECK_EQ_INT(config_b->upstream_keepalive_ms, 60000);
    const config_upstream_t *upstream = &config_b->upstreams[0];
    CHECK(strcmp(upstream->name, "u") == 0);
    CHECK(!upstream->has_api_key);
    CHECK(strcmp(upstream->api_keys[0], "") == 0);
    CHECK_EQ_INT(upstream->api_key_count, 0);
    CHECK(upstream->verify);
    CHECK(strcmp(upstream->ca_file, "") == 0);
    CHECK(strcmp(upstream->sni, "") == 0);
    CHECK_EQ_INT(upstream->connect_ms, 5000);
    CHECK_EQ_INT(upstream->first_byte_ms, 120000);
    CHECK_EQ_INT(upstream->idle_ms, 120000);
    const config_model_t *model = &config_b->models[0];
    CHECK(strcmp(model->name, "m") == 0);
    CHECK(strcmp(model->routes[0].upstream_model, "m") == 0);
    CHECK(strcmp(model->owned_by, "u") == 0);
    CHECK_EQ_INT(model->input_price_micros, 0);
    CHECK_EQ_INT(model->cached_input_price_micros, 0);
    CHECK_EQ_INT(model->output_price_micros, 0);
    CHECK_EQ_INT(model->request_price_micros, 0);
    CHECK_EQ_INT(model->max_output_tokens, 4096);
    CHECK(!config_b->has_admin_token);
    CHECK(!config_b->has_jwt_secret);
    CHECK_EQ_INT(config_b->free_grant_micros, 1000000);
}

/* [accounts], [server] trusted_proxies and the per-address [limits]. */
static void test_accounts_and_client_addresses(void) {
    config_set_defaults(config_a);
    CHECK_EQ_INT(config_a->registration, CONFIG_REGISTRATION_OPEN);
    CHECK_EQ_INT(config_a->registrations_per_ip_per_hour, 10);
    CHECK_EQ_INT(config_a->registrations_per_ip_per_day, 50);
    CHECK_EQ_INT(config_a->login_failures_per_ip_per_minute, 10);
    CHECK_EQ_INT(config_a->login_failures_before_backoff, 5);
    CHECK_EQ_INT(config_a->login_backoff_base_s, 1);
    CHECK_EQ_INT(config_a->login_backoff_max_s, 900);
    CHECK_EQ_INT(config_a->password_jobs_max, 64);
    CHECK_EQ_INT(config_a->tracked_clients_max, 16384);
    CHECK_EQ_INT(config_a->trusted_proxy_count, 0);
    CHECK_EQ_INT(config_a->connections_per_ip, 0);
    CHECK_EQ_INT(config_a->large_bodies_per_ip, 0);
    const char *text =
        "[server]\n"
        "trusted_proxies = 127.0.0.1/32, 10.0.0.0/8 ::1,fd00::/8\n"
        "[limits]\n"
        "connections_per_ip = 16\n"
        "large_bodies_per_ip = 1\n"
        "[accounts]\n"
        "registration = closed\n"
        "registrations_per_ip_per_hour = 0\n"
        "registrations_per_ip_per_day = 7\n"
        "login_failures_per_ip_per_minute = 3\n"
        "login_failures_before_backoff = 0\n"
        "login_backoff_base_s = 2\n"
        "login_backoff_max_s = 2\n"
        "password_jobs_max = 1\n"
        "tracked_clients_max = 64\n" MINIMAL_TAIL;
    CHECK_EQ_INT(parse_text(config_a, text, error_a, sizeof error_a), 0);
    CHECK_EQ_INT(config_a->trusted_proxy_count, 4);
    CHECK_EQ_INT(config_a->trusted_proxies[0].prefix_bits, 128);
    CHECK_EQ_INT(config_a->trusted_proxies[1].prefix_bits, 104);
    CHECK_EQ_INT(config_a->trusted_proxies[2].prefix_bits, 128);
    CHECK_EQ_INT(config_a->trusted_proxies[3].prefix_bits, 8);
    CHECK_EQ_INT(config_a->connections_per_ip, 16);
    CHECK_EQ_INT(config_a->large_bodies_per_ip, 1);
    CHECK_EQ_INT(config_a->registration, CONFIG_REGISTRATION_CLOSED);
    CHECK_EQ_INT(config_a->registrations_per_ip_per_hour, 0);
    CHECK_EQ_INT(config_a->registrations_per_ip_per_day, 7);
    CHECK_EQ_INT(config_a->login_failures_per_ip_per_minute, 3);
    CHECK_EQ_INT(config_a->login_failures_before_backoff, 0);
    CHECK_EQ_INT(config_a->login_backoff_base_s, 2);
    CHECK_EQ_INT(config_a->login_backoff_max_s, 2);
    CHECK_EQ_INT(config_a->password_jobs_max, 1);
    CHECK_EQ_INT(config_a->tracked_clients_max, 64);
}

/* [billing], [auth] and model prices: exact decimal money, secrets from
 * literals and from the environment, defaults that follow other keys. */
static void test_billing_and_auth(void) {
    const char *text =
        "[billing]\n"
        "sync_interval_ms = 10000\n"
        "free_grant = 0.000001\n"
        "users_max = 1\n"
        "keys_max = 16777216\n"
        "mode = off\n"
        "hold_record_after_ms = 0\n"
        "store_wait_requests_max = 0\n"
        "store_wait_ms = 1\n"
        "[auth]\n"
        "admin_token = 0123456789abcdef   # exactly 16\n"
        "jwt_secret = \"0123456789abcdef0123456789abcdef\"\n"
        "jwt_ttl_s = 60\n"
        "[upstream u]\nbase_url = https://a.example\n"
        "[model cheap]\n"
        "upstream = u\n"
        "input_price = 0.25\n"
        "output_price = 1\n"
        "request_price = 0.01\n"
        "max_output_tokens = 10000000\n"
        "[model priced]\n"
        "upstream = u\n"
        "cached_input_price = 0.000001\n"
        "input_price = 1000000000\n"
        "output_price = 007.500000\n"
        "max_output_tokens = 1\n";
    int result = parse_text(config_a, text, error_a, sizeof error_a);
    if (result != 0) {
        fprintf(stderr, "  %s\n", error_a);
    }
    CHECK_EQ_INT(result, 0);
    CHECK_EQ_INT(config_a->sync_interval_ms, 10000);
    CHECK_EQ_INT(config_a->free_grant_micros, 1);
    CHECK_EQ_INT(config_a->users_max, 1);
    CHECK_EQ_INT(config_a->keys_max, 16777216);
    CHECK_EQ_INT(config_a->billing_mode, CONFIG_BILLING_OFF);
    CHECK_EQ_INT(config_a->hold_record_after_ms, 0);
    CHECK_EQ_INT(config_a->store_wait_requests_max, 0);
    CHECK_EQ_INT(config_a->store_wait_ms, 1);
    CHECK(config_a->has_admin_token);
    CHECK(strcmp(config_a->admin_token, "0123456789abcdef") == 0);
    CHECK(config_a->has_jwt_secret);
    CHECK(strcmp(config_a->jwt_secret, "0123456789abcdef0123456789abcdef") == 0);
    CHECK_EQ_INT(config_a->jwt_ttl_s, 60);
    const config_model_t *cheap = &config_a->models[0];
    CHECK_EQ_INT(cheap->input_price_micros, 250000);
    CHECK_EQ_INT(cheap->cached_input_price_micros, 250000); /* follows input_price */
    CHECK_EQ_INT(cheap->output_price_micros, 1000000);
    CHECK_EQ_INT(cheap->request_price_micros, 10000);
    CHECK_EQ_INT(cheap->max_output_tokens, 10000000);
    const config_model_t *priced = &config_a->models[1];
    CHECK_EQ_INT(priced->input_price_micros, LEDGER_MONEY_MICROS_MAX);
    CHECK_EQ_INT(priced->cached_input_price_micros, 1); /* set before input_price: kept */
    CHECK_EQ_INT(priced->output_price_micros, 7500000);
    CHECK_EQ_INT(priced->request_price_micros, 0);
    CHECK_EQ_INT(priced->max_output_tokens, 1);

    /* free_grant = 0 is allowed (accounts start empty). */
    CHECK_EQ_INT(parse_text(config_a, "[billing]\nfree_grant = 0\n" MINIMAL_TAIL, error_a,
                            sizeof error_a),
                 0);
    CHECK_EQ_INT(config_a->free_grant_micros, 0);
    /* The billing defaults: on, holds recorded after 2 s, a bounded wait. */
    CHECK_EQ_INT(config_a->billing_mode, CONFIG_BILLING_ON);
    CHECK_EQ_INT(config_a->hold_record_after_ms, 2000);
    CHECK_EQ_INT(config_a->store_wait_requests_max, 1024);
    CHECK_EQ_INT(config_a->store_wait_ms, 5000);
    CHECK_EQ_INT(parse_text(config_a, "[billing]\nmode = on\n" MINIMAL_TAIL, error_a, sizeof error_a), 0);
    CHECK_EQ_INT(config_a->billing_mode, CONFIG_BILLING_ON);

    /* Secrets from the environment. */
    setenv("RINGWAY_TEST_ADMIN", "admin-token-from-environment", 1);
    setenv("RINGWAY_TEST_JWT", "jwt-secret-from-environment-0123456789", 1);
    CHECK_EQ_INT(parse_text(config_a,
                            "[auth]\nadmin_token_env = RINGWAY_TEST_ADMIN\n"
                            "jwt_secret_env = RINGWAY_TEST_JWT\n" MINIMAL_TAIL,
                            error_a, sizeof error_a),
                 0);
    CHECK(config_a->has_admin_token);
    CHECK(strcmp(config_a->admin_token, "admin-token-from-environment") == 0);
    CHECK(config_a->has_jwt_secret);
    CHECK(strcmp(config_a->jwt_secret, "jwt-secret-from-environment-0123456789") == 0);

    setenv("RINGWAY_TEST_ADMIN", "short-token", 1);
    CHECK_EQ_INT(parse_text(config_a, "[auth]\nadmin_token_env = RINGWAY_TEST_ADMIN\n" MINIMAL_TAIL,
                            error_a, sizeof error_a),
                 -1);
    CHECK(strcmp(error_a, "t.conf:2: environment variable 'RINGWAY_TEST_ADMIN' (admin_token_env "
                          "of [auth]) is too short (min 16 bytes)") == 0);
    setenv("RINGWAY_TEST_ADMIN", "", 1);
    CHECK_EQ_INT(parse_text(config_a, "[auth]\nadmin_token_env = RINGWAY_TEST_ADMIN\n" MINIMAL_TAIL,
                            error_a, sizeof error_a),
                 -1);
    CHECK(strcmp(error_a, "t.conf:2: environment variable 'RINGWAY_TEST_ADMIN' (admin_token_env "
                          "of [auth]) must be non-empty visible ASCII without spaces") == 0);
    setenv("RINGWAY_TEST_JWT", "thirty-one-bytes-of-jwt-secret!", 1);
    CHECK_EQ_INT(parse_text(config_a, "[auth]\njwt_secret_env = RINGWAY_TEST_JWT\n" MINIMAL_TAIL,
                            error_a, sizeof error_a),
                 -1);
    CHECK(strcmp(error_a, "t.conf:2: environment variable 'RINGWAY_TEST_JWT' (jwt_secret_env of "
                          "[auth]) is too short (min 32 bytes)") == 0);
    CHECK(strstr(error_a, "thirty-one") == NULL);
    unsetenv("RINGWAY_TEST_ADMIN");
    unsetenv("RINGWAY_TEST_JWT");

    /* Money errors through the configuration, one per kind of refusal. */
    static const struct {
        const char *value;
        const char *problem;
    } bad_money[] = {
        {"-1", "bad value '-1' for 'input_price': expected a non-negative decimal amount such as "
               "0.25"},
        {"+1", "bad value '+1' for 'input_price': expected a non-negative decimal amount such as "
               "0.25"},
        {"1e3", "bad value '1e3' for 'input_price': expected a non-negative decimal amount such as "
                "0.25"},
        {"1.", "bad value '1.' for 'input_price': expected a non-negative decimal amount such as "
               "0.25"},
        {".5", "bad value '.5' for 'input_price': expected a non-negative decimal amount such as "
               "0.25"},
        {"1,5", "bad value '1,5' for 'input_price': expected a non-negative decimal amount such as "
                "0.25"},
        {"0.0000001", "bad value '0.0000001' for 'input_price': at most 6 decimal places "
                      "(0.000001 is the smallest amount)"},
        {"1.0000000", "bad value '1.0000000' for 'input_price': at most 6 decimal places "
                      "(0.000001 is the smallest amount)"},
        {"1000000000.000001", "value '1000000000.000001' for 'input_price' is out of range "
                              "(0..1000000000)"},
        {"99999999999999999999999", "value '99999999999999999999999' for 'input_price' is out of "
                                    "range (0..1000000000)"},
    };
    for (size_t i = 0; i < RW_ARRAY_LENGTH(bad_money); i++) {
        char buffer[512];
        snprintf(buffer, sizeof buffer,
                 "[upstream u]\nbase_url = https://a.example\n[model m]\nupstream = u\n"
                 "input_price = %s\n",
                 bad_money[i].value);
        CHECK_EQ_INT(parse_text(config_a, buffer, error_a, sizeof error_a), -1);
        char expected[512];
        snprintf(expected, sizeof expected, "t.conf:5: %s", bad_money[i].problem);
        if (strcmp(error_a, expected) != 0) {
            fprintf(stderr, "  expected: %s\n  got:      %s\n", expected, error_a);
            CHECK(false);
        }
    }
}

/* Values: sizes with suffixes, quotes, comments, overrides, order
 * independence ([timeouts] after the upstream still feeds its defaults). */
static void test_values(void) {
    const char *text =
        "# leading comment\n"
        "   # indented comment\n"
        "\n"
        "[upstream up.stream-1_x]   # a header comment\n"
        "base_url = https://api.example.com:8443/openai/v1/\n"
        "api_key = \"sk-abc#def\"   # quoted keeps '#'\n"
        "verify = false\n"
        "sni = front.example.com\n"
        "ca_file = \"  /etc/ssl/my ca.pem \"\n"
        "first_byte_ms = 7\n"
        "[model gpt-4o]\n"
        "upstream=up.stream-1_x\n"
        "upstream_model = a#b\n"
        "owned_by = someone # trailing comment\n"
        "[ server ]\n"
        "listen = [::1]:9000\n"
        "admin_listen = localhost:9001\n"
        "threads = 256\n"
        "data_dir = /var/lib/ringway data\n"
        "[limits]\n"
        "header_bytes_max = 1k\n"
        "body_bytes_max = 1g\n"
        "request_buffer_bytes = 64MiB\n"
        "stream_buffer_bytes = 16K\n"
        "drain_bytes_max = 0\n"
        "large_bodies_per_thread = 0\n"
        "connections_per_thread = 1048576\n"
        "streams_per_thread = 1048576\n"
        "upstream_connections_per_thread = \"12\"\n"
        "[timeouts]\n"
        "upstream_connect_ms = 1234\n"
        "upstream_idle_ms = 86400000\n"
        "[relay]\n"
        "client_disconnect = cancel\n";
    int result = parse_text(config_a, text, error_a, sizeof error_a);
    if (result != 0) {
        fprintf(stderr, "  %s\n", error_a);
    }
    CHECK_EQ_INT(result, 0);
    const config_upstream_t *upstream = &config_a->upstreams[0];
    CHECK(strcmp(upstream->name, "up.stream-1_x") == 0);
    CHECK_EQ_INT(upstream->port, 8443);
    CHECK(strcmp(upstream->base_path, "/openai/v1") == 0);
    CHECK(strcmp(upstream->api_keys[0], "sk-abc#def") == 0);
    CHECK(!upstream->verify);
    CHECK(strcmp(upstream->sni, "front.example.com") == 0);
    CHECK(strcmp(upstream->ca_file, "  /etc/ssl/my ca.pem ") == 0);
    CHECK_EQ_INT(upstream->connect_ms, 1234);
    CHECK_EQ_INT(upstream->first_byte_ms, 7);
    CHECK_EQ_INT(upstream->idle_ms, 86400000);
    const config_model_t *model = &config_a->models[0];
    CHECK(strcmp(model->routes[0].upstream_model, "a#b") == 0);
    CHECK(strcmp(model->owned_by, "someone") == 0);
    CHECK(strcmp(config_a->listen_host, "::1") == 0);
    CHECK_EQ_INT(config_a->listen_port, 9000);
    CHECK(strcmp(config_a->admin_listen_host, "localhost") == 0);
    CHECK_EQ_INT(config_a->admin_listen_port, 9001);
    CHECK_EQ_INT(config_a->threads, 256);
    CHECK(strcmp(config_a->data_dir, "/var/lib/ringway data") == 0);
    CHECK_EQ_INT(config_a->header_bytes_max, 1024);
    CHECK_EQ_INT(config_a->body_bytes_max, 1073741824);
    CHECK_EQ_INT(config_a->request_buffer_bytes, 67108864);
    CHECK_EQ_INT(config_a->stream_buffer_bytes, 16384);
    CHECK_EQ_INT(config_a->drain_bytes_max, 0);
    CHECK_EQ_INT(config_a->large_bodies_per_thread, 0);
    CHECK_EQ_INT(config_a->connections_per_thread, 1048576);
    CHECK_EQ_INT(config_a->upstream_connections_per_thread, 12);
    CHECK_EQ_INT(config_a->client_disconnect, CONFIG_DISCONNECT_CANCEL);

    /* Every spelling of each suffix. */
    static const struct {
        const char *value;
        uint32_t bytes;
    } sizes[] = {
        {"4096", 4096},      {"4k", 4096},          {"4K", 4096},    {"4KiB", 4096},
        {"1m", 1048576},     {"1M", 1048576},       {"1MiB", 1048576}, {"0g", 0},
        {"1G", 1073741824},  {"1GiB", 1073741824},  {"0", 0},        {"00012", 12},
    };
    for (size_t i = 0; i < RW_ARRAY_LENGTH(sizes); i++) {
        char buffer[256];
        snprintf(buffer, sizeof buffer, "[limits]\ndrain_bytes_max = %s\n" MINIMAL_TAIL,
                 sizes[i].value);
        CHECK_EQ_INT(parse_text(config_a, buffer, error_a, sizeof error_a), 0);
        CHECK_EQ_INT(config_a->drain_bytes_max, sizes[i].bytes);
    }

    /* Environment variables: resolved at load time. */
    setenv("RINGWAY_TEST_KEY", "sk-from-env", 1);
    CHECK_EQ_INT(parse_text(config_a,
                            "[upstream u]\nbase_url = https://a.example\n"
                            "api_key_env = RINGWAY_TEST_KEY\n[model m]\nupstream = u\n",
                            error_a, sizeof error_a),
                 0);
    CHECK(config_a->upstreams[0].has_api_key);
    CHECK(strcmp(config_a->upstreams[0].api_keys[0], "sk-from-env") == 0);
    setenv("RINGWAY_TEST_KEY", "", 1);
    CHECK_EQ_INT(parse_text(config_a,
                            "[upstream u]\nbase_url = https://a.example\n"
                            "api_key_env = RINGWAY_TEST_KEY\n[model m]\nupstream = u\n",
                            error_a, sizeof error_a),
                 -1);
    CHECK(strcmp(error_a, "t.conf:3: environment variable 'RINGWAY_TEST_KEY' (api_key_env of "
                          "[upstream u]) must be non-empty visible ASCII without spaces") == 0);
    unsetenv("RINGWAY_TEST_KEY");
}

typedef struct bad_case {
    const char *text;
    const char *expected;
} bad_case_t;

static const bad_case_t bad_cases[] = {
    {"[accounts]\nregistration = maybe\n",
     "t.conf:2: bad value 'maybe' for 'registration': expected open or closed"},
    {"[accounts]\nlogin_backoff_base_s = 10\nlogin_backoff_max_s = 5\n" MINIMAL_TAIL,
     "t.conf:3: login_backoff_base_s (10) must not exceed login_backoff_max_s (5)"},
    {"[accounts]\npassword_jobs_max = 0\n", "t.conf:2: value '0' for 'password_jobs_max' is out of range (1..65536)"},
    {"[accounts]\n[accounts]\n", "t.conf:2: duplicate section [accounts] (first on line 1)"},
    {"[accounts]\nlisten = 1\n", "t.conf:2: unknown key 'listen' in [accounts]"},
    {"[server]\ntrusted_proxies = 10.0.0.0/33\n",
     "t.conf:2: bad range '10.0.0.0/33' for 'trusted_proxies': expected an IPv4 or IPv6 address, optionally "
     "with /PREFIX, such as 10.0.0.0/8 or ::1"},
    {"[server]\ntrusted_proxies = proxy.example\n",
     "t.conf:2: bad range 'proxy.example' for 'trusted_proxies': expected an IPv4 or IPv6 address, optionally "
     "with /PREFIX, such as 10.0.0.0/8 or ::1"},
    {"[server]\ntrusted_proxies = 1.0.0.1 1.0.0.2 1.0.0.3 1.0.0.4 1.0.0.5 1.0.0.6 1.0.0.7 1.0.0.8 1.0.0.9 1.0.0.10 "
     "1.0.0.11 1.0.0.12 1.0.0.13 1.0.0.14 1.0.0.15 1.0.0.16 1.0.0.17 1.0.0.18 1.0.0.19 1.0.0.20 1.0.0.21 1.0.0.22 "
     "1.0.0.23 1.0.0.24 1.0.0.25 1.0.0.26 1.0.0.27 1.0.0.28 1.0.0.29 1.0.0.30 1.0.0.31 1.0.0.32 1.0.0.33\n",
     "t.conf:2: too many ranges for 'trusted_proxies' (max 32)"},
    {"[server]\ntreads = 4\n", "t.conf:2: unknown key 'treads' in [server]"},
    {"[server]\nthreads = 4\nthreads = 5\n",
     "t.conf:3: duplicate key 'threads' in [server] (first on line 2)"},
    {"[server]\nthreads = four\n",
     "t.conf:2: bad value 'four' for 'threads': expected an unsigned decimal integer"},
    {"[server]\nthreads = -1\n",
     "t.conf:2: bad value '-1' for 'threads': expected an unsigned decimal integer"},
    {"[server]\nthreads = 4 4\n",
     "t.conf:2: bad value '4 4' for 'threads': expected an unsigned decimal integer"},
    {"[server]\nthreads = 257\n", "t.conf:2: value '257' for 'threads' is out of range (0..256)"},
    {"[server]\nthreads = 99999999999999999999999\n",
     "t.conf:2: value '99999999999999999999999' for 'threads' is out of range (0..256)"},
    {"[limits]\nheader_bytes_max = 16KB\n",
     "t.conf:2: bad value '16KB' for 'header_bytes_max': expected bytes: an integer with optional "
     "suffix k, KiB, m, MiB, g or GiB (powers of 1024)"},
    {"[limits]\nheader_bytes_max = 16 KiB\n",
     "t.conf:2: bad value '16 KiB' for 'header_bytes_max': expected bytes: an integer with "
     "optional suffix k, KiB, m, MiB, g or GiB (powers of 1024)"},
    {"[limits]\nheader_bytes_max = 2m\n",
     "t.conf:2: value '2m' for 'header_bytes_max' is out of range (1024..1048576)"},
    {"[limits]\nbody_bytes_max = 17179869184g\n",
     "t.conf:2: value '17179869184g' for 'body_bytes_max' is out of range (1024..1073741824)"},
    {"[limits]\nconnections_per_thread = 16k\n",
     "t.conf:2: bad value '16k' for 'connections_per_thread': expected an unsigned decimal "
     "integer"},
    {"[limits]\nconnections_per_thread = 0\n",
     "t.conf:2: value '0' for 'connections_per_thread' is out of range (1..1048576)"},
    {"[timeouts]\nheader_ms = 0\n", "t.conf:2: value '0' for 'header_ms' is out of range (1..86400000)"},
    {"[timeouts]\nheader_ms = 10s\n",
     "t.conf:2: bad value '10s' for 'header_ms': expected an unsigned decimal integer"},
    {"[bogus]\n", "t.conf:1: unknown section [bogus]"},
    {"[Server]\n", "t.conf:1: unknown section [Server]"},
    {"threads = 4\n", "t.conf:1: key 'threads' outside of any section"},
    {"[server]\n[limits]\n[server]\n", "t.conf:3: duplicate section [server] (first on line 1)"},
    {"[server main]\n", "t.conf:1: section [server] takes no name"},
    {"[upstream]\n", "t.conf:1: section [upstream] needs a name: [upstream NAME]"},
    {"[upstream a b]\n", "t.conf:1: bad upstream name 'a b': use 1..63 of A-Z a-z 0-9 _ . -"},
    {"[upstream a/b]\n", "t.conf:1: bad upstream name 'a/b': use 1..63 of A-Z a-z 0-9 _ . -"},
    {"[model a\"b]\n",
     "t.conf:1: bad model name 'a\"b': use 1..127 printable ASCII bytes without spaces, '\"' or "
     "'\\'"},
    {"[model a b]\n",
     "t.conf:1: bad model name 'a b': use 1..127 printable ASCII bytes without spaces, '\"' or "
     "'\\'"},
    {"[server\n", "t.conf:1: expected ']' at the end of the section header"},
    {"[server] x\n", "t.conf:1: expected ']' at the end of the section header"},
    {"[server]#x\n", "t.conf:1: expected ']' at the end of the section header"},
    {"[server]\nthreads\n", "t.conf:2: expected '=' after 'threads'"},
    {"[server]\nthreads: 4\n", "t.conf:2: expected '=' after 'threads'"},
    {"[server]\n= 4\n", "t.conf:2: expected 'key = value', '[section]' or a comment"},
    {"[server]\nthreads =\n", "t.conf:2: missing value for 'threads'"},
    {"[server]\nthreads = # four\n", "t.conf:2: missing value for 'threads'"},
    {"[server]\ndata_dir = \"\"\n", "t.conf:2: missing value for 'data_dir'"},
    {"[server]\ndata_dir = \"abc\n", "t.conf:2: unterminated quoted value for 'data_dir'"},
    {"[server]\ndata_dir = \"abc\" x\n",
     "t.conf:2: unexpected text after the quoted value for 'data_dir'"},
    {"[server]\ndata_dir = a\001b\n", "t.conf:2: control character in the value for 'data_dir'"},
    {"[server]\ndata_dir = a\tb\n", "t.conf:2: control character in the value for 'data_dir'"},
    {"[relay]\nclient_disconnect = abort\n",
     "t.conf:2: bad value 'abort' for 'client_disconnect': expected drain or cancel"},
    {"[server]\nlisten = 127.0.0.1\n",
     "t.conf:2: bad value '127.0.0.1' for 'listen': missing :PORT; expected HOST:PORT such as "
     "127.0.0.1:8080 or [::1]:8080"},
    {"[server]\nlisten = 127.0.0.1:0\n",
     "t.conf:2: bad value '127.0.0.1:0' for 'listen': bad port (expected 1..65535); expected "
     "HOST:PORT such as 127.0.0.1:8080 or [::1]:8080"},
    {"[server]\nlisten = 127.0.0.1:65536\n",
     "t.conf:2: bad value '127.0.0.1:65536' for 'listen': bad port (expected 1..65535); expected "
     "HOST:PORT such as 127.0.0.1:8080 or [::1]:8080"},
    {"[server]\nadmin_listen = ::1:8080\n",
     "t.conf:2: bad value '::1:8080' for 'admin_listen': an IPv6 address needs brackets, e.g. "
     "[::1]; expected HOST:PORT such as 127.0.0.1:8080 or [::1]:8080"},
    {"[server]\nlisten = 999.0.0.1:80\n",
     "t.conf:2: bad value '999.0.0.1:80' for 'listen': bad host; expected HOST:PORT such as "
     "127.0.0.1:8080 or [::1]:8080"},
    {"[upstream u]\nverify = yes\n", "t.conf:2: bad value 'yes' for 'verify': expected true or false"},
    {"[upstream u]\nbase_urll = https://a.example\n",
     "t.conf:2: unknown key 'base_urll' in [upstream u]"},
    {"[upstream u]\nbase_url = http://api.example.com/v1\n",
     "t.conf:2: bad base_url 'http://api.example.com/v1': plain http is only allowed to loopback "
     "hosts (127.0.0.0/8, ::1, localhost); use https"},
    {"[upstream u]\nbase_url = ftp://api.example.com\n",
     "t.conf:2: bad base_url 'ftp://api.example.com': expected https://HOST[:PORT][/PATH]"},
    {"[upstream u]\nsni = a_b c\n", "t.conf:2: bad value 'a_b c' for 'sni': expected a host name"},
    {"[upstream u]\napi_key = \"a\xc3\xa9\"\n",
     "t.conf:2: value for 'api_key' must be visible ASCII without spaces"},
    {"[upstream u]\napi_key_env = RINGWAY_TEST_UNSET_VARIABLE\n",
     "t.conf:2: environment variable 'RINGWAY_TEST_UNSET_VARIABLE' (api_key_env of [upstream u]) "
     "is not set"},
    {"[upstream u]\napi_key_env = 1BAD\n",
     "t.conf:2: bad value '1BAD' for 'api_key_env': expected an environment variable name"},
    {"[upstream u]\nbase_url = https://a.example\napi_key = k\napi_key_env = HOME\n",
     "t.conf:4: [upstream u] sets both api_key and api_key_env (line 3); use one"},
    {"[upstream u]\nconnect_ms = 86400001\n",
     "t.conf:2: value '86400001' for 'connect_ms' is out of range (0..86400000)"},
    /* [billing], [auth], prices. */
    {"[billing]\nsync_interval_ms = 0\n",
     "t.conf:2: value '0' for 'sync_interval_ms' is out of range (1..10000)"},
    {"[billing]\nsync_interval_ms = 10001\n",
     "t.conf:2: value '10001' for 'sync_interval_ms' is out of range (1..10000)"},
    {"[billing]\nusers_max = 0\n", "t.conf:2: value '0' for 'users_max' is out of range (1..16777216)"},
    {"[billing]\nmode = maybe\n", "t.conf:2: bad value 'maybe' for 'mode': expected on or off"},
    {"[billing]\nmode = ON\n", "t.conf:2: bad value 'ON' for 'mode': expected on or off"},
    {"[billing]\nstore_wait_ms = 0\n", "t.conf:2: value '0' for 'store_wait_ms' is out of range (1..86400000)"},
    {"[billing]\nhold_record_after_ms = 86400001\n",
     "t.conf:2: value '86400001' for 'hold_record_after_ms' is out of range (0..86400000)"},
    {"[billing]\nkeys_max = 16777217\n",
     "t.conf:2: value '16777217' for 'keys_max' is out of range (1..16777216)"},
    {"[billing]\nfree_grant = 1.5 EUR\n",
     "t.conf:2: bad value '1.5 EUR' for 'free_grant': expected a non-negative decimal amount such "
     "as 0.25"},
    {"[billing]\nfree_grant = -0.01\n",
     "t.conf:2: bad value '-0.01' for 'free_grant': expected a non-negative decimal amount such "
     "as 0.25"},
    {"[billing]\nfree_grant = 0.1234567\n",
     "t.conf:2: bad value '0.1234567' for 'free_grant': at most 6 decimal places (0.000001 is the "
     "smallest amount)"},
    {"[billing]\nfree_grant = 1\nfree_grant = 2\n",
     "t.conf:3: duplicate key 'free_grant' in [billing] (first on line 2)"},
    {"[billing]\n[billing]\n", "t.conf:2: duplicate section [billing] (first on line 1)"},
    {"[billing x]\n", "t.conf:1: section [billing] takes no name"},
    {"[billing]\nadmin_token = 0123456789abcdef\n",
     "t.conf:2: unknown key 'admin_token' in [billing]"},
    {"[auth]\nadmin_token = 0123456789abcde\n",
     "t.conf:2: value for 'admin_token' is too short (min 16 bytes)"},
    {"[auth]\nadmin_token = \"0123456789 abcdef\"\n",
     "t.conf:2: value for 'admin_token' must be visible ASCII without spaces"},
    {"[auth]\nadmin_token = 0123456789abcdef\nadmin_token_env = HOME\n",
     "t.conf:3: [auth] sets both admin_token and admin_token_env (line 2); use one"},
    {"[auth]\nadmin_token_env = RINGWAY_TEST_LONG_SECRET\nadmin_token = 0123456789abcdef\n",
     "t.conf:3: [auth] sets both admin_token and admin_token_env (line 2); use one"},
    {"[auth]\nadmin_token_env = RINGWAY_TEST_UNSET_VARIABLE\n",
     "t.conf:2: environment variable 'RINGWAY_TEST_UNSET_VARIABLE' (admin_token_env of [auth]) "
     "is not set"},
    {"[auth]\nadmin_token_env = A-B\n",
     "t.conf:2: bad value 'A-B' for 'admin_token_env': expected an environment variable name"},
    {"[auth]\njwt_secret = 0123456789abcdef0123456789abcde\n",
     "t.conf:2: value for 'jwt_secret' is too short (min 32 bytes)"},
    {"[auth]\njwt_secret_env = RINGWAY_TEST_LONG_SECRET\n"
     "jwt_secret = 0123456789abcdef0123456789abcdef\n",
     "t.conf:3: [auth] sets both jwt_secret and jwt_secret_env (line 2); use one"},
    {"[auth]\njwt_ttl_s = 59\n", "t.conf:2: value '59' for 'jwt_ttl_s' is out of range (60..31536000)"},
    {"[auth]\njwt_ttl_s = 31536001\n",
     "t.conf:2: value '31536001' for 'jwt_ttl_s' is out of range (60..31536000)"},
    {"[auth]\nadmin_token =\n", "t.conf:2: missing value for 'admin_token'"},
    {"[model m]\nmax_output_tokens = 0\n",
     "t.conf:2: value '0' for 'max_output_tokens' is out of range (1..10000000)"},
    {"[model m]\nmax_output_tokens = 10000001\n",
     "t.conf:2: value '10000001' for 'max_output_tokens' is out of range (1..10000000)"},
    {"[model m]\noutput_price = 0.5.1\n",
     "t.conf:2: bad value '0.5.1' for 'output_price': expected a non-negative decimal amount such "
     "as 0.25"},
    {"[model m]\nrequest_price = 2000000000\n",
     "t.conf:2: value '2000000000' for 'request_price' is out of range (0..1000000000)"},
    {"[model m]\ncached_input_price = 1e-3\n",
     "t.conf:2: bad value '1e-3' for 'cached_input_price': expected a non-negative decimal amount "
     "such as 0.25"},
    {"[model m]\ninput_price = 1\ninput_price = 1\n",
     "t.conf:3: duplicate key 'input_price' in [model m] (first on line 2)"},
    {"[upstream u]\nbase_url = https://a.example\n[upstream u]\n",
     "t.conf:3: duplicate section [upstream u] (first on line 1)"},
    {"[model m]\n[model n]\n[model m]\n", "t.conf:3: duplicate section [model m] (first on line 1)"},
    {"[model m]\nupstream = a b\n",
     "t.conf:2: bad value 'a b' for 'upstream': expected an upstream name (1..63 of A-Z a-z 0-9 _ "
     ". -)"},
    {"[model m]\nowned_by = a\\b\n",
     "t.conf:2: bad value 'a\\b' for 'owned_by': use printable ASCII without spaces, '\"' or '\\'"},
    {"[model m]\nowned_by = 0123456789012345678901234567890123456789012345678901234567890123\n",
     "t.conf:2: value for 'owned_by' is too long (max 63 bytes)"},
    {"[model m]\nupstream = u\nupstream_model = \n", "t.conf:3: missing value for 'upstream_model'"},
    /* Whole-file validation. */
    {"[upstream u]\nbase_url = https://a.example\n[model m]\nupstream = nope\n",
     "t.conf:4: unknown upstream 'nope' in [model m]"},
    {"[upstream u]\nbase_url = https://a.example\n", "t.conf: at least one [model NAME] section is required"},
    {"", "t.conf: at least one [model NAME] section is required"},
    {"[upstream u]\napi_key = x\n[model m]\nupstream = u\n",
     "t.conf:1: missing required key 'base_url' in [upstream u]"},
    {"[upstream u]\nbase_url = https://a.example\n[model m]\nowned_by = me\n",
     "t.conf:3: missing required key 'upstream' (or 'route') in [model m]"},
    /* Routes, keys and [routing]. */
    {"[model m]\nroute = u\nupstream = u\n",
     "t.conf:3: [model m] sets both route and upstream/upstream_model (line 2); use one"},
    {"[model m]\nupstream_model = x\nroute = u\n",
     "t.conf:3: [model m] sets both route and upstream/upstream_model (line 2); use one"},
    {"[model m]\nroute = u a b\n",
     "t.conf:2: bad route word 'b': expected priority=N or weight=N (the upstream's model name comes second)"},
    {"[model m]\nroute = u weight=2 a\n",
     "t.conf:2: bad route word 'a': expected priority=N or weight=N (the upstream's model name comes second)"},
    {"[model m]\nroute = u weight=0\n", "t.conf:2: bad route word 'weight=0': weight is an integer in 1..1000"},
    {"[model m]\nroute = u priority=1001\n",
     "t.conf:2: bad route word 'priority=1001': priority is an integer in 0..1000"},
    {"[model m]\nroute = u m speed=3\n",
     "t.conf:2: bad route word 'speed=3': expected priority=N or weight=N (the upstream's model name comes second)"},
    {"[model m]\nroute = u weight=\n", "t.conf:2: bad route word 'weight=': weight is an integer in 1..1000"},
    {"[model m]\nroute = u weight=2 weight=3\n", "t.conf:2: route sets weight twice"},
    {"[model m]\nroute = u:x\n",
     "t.conf:2: bad route 'u:x': expected an upstream name (1..63 of A-Z a-z 0-9 _ . -) first"},
    {"[model m]\nroute = a\nroute = b\nroute = c\nroute = d\nroute = e\nroute = f\nroute = g\nroute = h\n"
     "route = i\n",
     "t.conf:10: too many routes in [model m] (max 8)"},
    {"[upstream u]\nbase_url = https://a.example\n[model m]\nroute = u\nroute = nope x\n",
     "t.conf:5: unknown upstream 'nope' in [model m]"},
    {"[upstream u]\nbase_url = https://a.example\n[model m]\nroute = u x\nroute = u x weight=3\n",
     "t.conf:5: [model m] repeats the route to 'u' model 'x' (line 4)"},
    {"[upstream u]\nbase_url = https://a.example\n[model m]\nupstream_model = x\n",
     "t.conf:4: upstream_model in [model m] needs upstream (or use route)"},
    {"[upstream u]\napi_key = a,b,c,d,e,f,g,h,i\n", "t.conf:2: too many values for 'api_key' (max 8)"},
    {"[routing]\nbreaker_failures = 1\n", "t.conf:2: value '1' for 'breaker_failures' is out of range (2..1000000)"},
    {"[routing]\nbreaker_window_requests_min = 1\n",
     "t.conf:2: value '1' for 'breaker_window_requests_min' is out of range (2..1000000)"},
    {"[routing]\nattempts_max = 0\n", "t.conf:2: value '0' for 'attempts_max' is out of range (1..16)"},
    {"[routing]\n[routing]\n", "t.conf:2: duplicate section [routing] (first on line 1)"},
    {"[model m]\naffinity = sometimes\n", "t.conf:2: bad value 'sometimes' for 'affinity': expected off, user or header"},
    {"[upstream u]\nbase_url = https://a.example\n[model m]\nupstream = u\naffinity = header\n",
     "t.conf:5: affinity = header and affinity_header go together in [model m]"},
    {"[upstream u]\nbase_url = https://a.example\n[model m]\nupstream = u\naffinity_header = x-session\n",
     "t.conf:5: affinity = header and affinity_header go together in [model m]"},
    {"[upstream u]\nbase_url = http://127.0.0.1:9000\nca_file = x.pem\n[model m]\nupstream = u\n",
     "t.conf:3: key 'ca_file' in [upstream u] needs an https base_url"},
    {"[upstream u]\nverify = false\nbase_url = http://[::1]:9000\n[model m]\nupstream = u\n",
     "t.conf:2: key 'verify' in [upstream u] needs an https base_url"},
    {"[limits]\nconnections_per_thread = 10\n" MINIMAL_TAIL,
     "t.conf:2: streams_per_thread (1024) must not exceed connections_per_thread (10)"},
    {"[limits]\nrequest_buffer_bytes = 8k\n" MINIMAL_TAIL,
     "t.conf:2: header_bytes_max (16384) must not exceed request_buffer_bytes (8192)"},
    {"[rate_limits]\nkey_tier = gold\n[tier free]\n" MINIMAL_TAIL,
     "t.conf:2: unknown tier 'gold' for 'key_tier' in [rate_limits]"},
    {"[rate_limits]\naccount_tier = bad name\n",
     "t.conf:2: bad value 'bad name' for 'account_tier': expected a tier name (1..31 of A-Z a-z 0-9 _ . -)"},
    {"[tier free]\nrequests_per_minute = 1\n[tier free]\n",
     "t.conf:3: duplicate section [tier free] (first on line 1)"},
    {"[tier free]\nrequests_per_minute = 4294967296\n",
     "t.conf:2: value '4294967296' for 'requests_per_minute' is out of range (0..4294967295)"},
    {"[tier free]\nrequests_per_hour = 1\n", "t.conf:2: unknown key 'requests_per_hour' in [tier free]"},
    {"[tier]\n", "t.conf:1: section [tier] needs a name: [tier NAME]"},
    {"[server]\nadmin_listen = 0.0.0.0:8080\n" MINIMAL_TAIL,
     "t.conf:2: admin_listen (0.0.0.0 port 8080) overlaps listen (127.0.0.1 port 8080)"},
};

static void test_bad_configurations(void) {
    unsetenv("RINGWAY_TEST_UNSET_VARIABLE");
    setenv("HOME", "/root", 0);
    setenv("RINGWAY_TEST_LONG_SECRET", "a-secret-long-enough-for-any-key-0123456789", 1);
    for (size_t i = 0; i < RW_ARRAY_LENGTH(bad_cases); i++) {
        memset(error_a, 'x', sizeof error_a);
        int result = parse_text(config_a, bad_cases[i].text, error_a, sizeof error_a);
        CHECK_EQ_INT(result, -1);
        if (strcmp(error_a, bad_cases[i].expected) != 0) {
            fprintf(stderr, "  case %zu:\n    expected: %s\n    got:      %s\n", i,
                    bad_cases[i].expected, error_a);
            CHECK(strcmp(error_a, bad_cases[i].expected) == 0);
        }
    }

    /* Errors that need bytes a string literal cannot end with. */
    static const char nul_text[] = "[server]\nthreads = 4\0\n";
    CHECK_EQ_INT(config_parse(config_a, nul_text, sizeof nul_text - 1, "t.conf", error_a,
                              sizeof error_a),
                 -1);
    CHECK(strcmp(error_a, "t.conf:2: NUL byte in the text") == 0);

    static char long_line[CONFIG_LINE_BYTES_MAX + 64];
    size_t used = (size_t)snprintf(long_line, sizeof long_line, "[server]\n# ");
    while (used < CONFIG_LINE_BYTES_MAX + 20) {
        long_line[used++] = 'a';
    }
    long_line[used++] = '\n';
    long_line[used] = '\0';
    CHECK_EQ_INT(parse_text(config_a, long_line, error_a, sizeof error_a), -1);
    CHECK(strcmp(error_a, "t.conf:2: line is longer than 8191 bytes") == 0);

    /* A long value is echoed only in part; a small buffer truncates cleanly. */
    static char long_value[4096];
    used = (size_t)snprintf(long_value, sizeof long_value, "[server]\nthreads = ");
    while (used < 1000) {
        long_value[used++] = 'z';
    }
    long_value[used] = '\0';
    CHECK_EQ_INT(parse_text(config_a, long_value, error_a, sizeof error_a), -1);
    CHECK(strlen(error_a) < 300);
    CHECK(strncmp(error_a, "t.conf:2: bad value 'zzz", 24) == 0);
    char tiny[8];
    CHECK_EQ_INT(parse_text(config_a, "[server]\ntreads = 4\n", tiny, sizeof tiny), -1);
    CHECK(strcmp(tiny, "t.conf:") == 0);

    /* The secret itself never appears in an error. */
    CHECK_EQ_INT(parse_text(config_a, "[upstream u]\napi_key = \"sk-secret-\xc3\xa9\"\n", error_a,
                            sizeof error_a),
                 -1);
    CHECK(strstr(error_a, "sk-secret") == NULL);
    CHECK_EQ_INT(parse_text(config_a, "[auth]\nadmin_token = admin-secret-short\x01\n", error_a,
                            sizeof error_a),
                 -1);
    CHECK(strstr(error_a, "admin-secret") == NULL);
    CHECK_EQ_INT(parse_text(config_a, "[auth]\njwt_secret = jwt-secret-too-short\n", error_a,
                            sizeof error_a),
                 -1);
    CHECK(strstr(error_a, "jwt-secret-too") == NULL);

    /* The upstream and model counts are bounded. */
    static char many[CONFIG_UPSTREAMS_MAX * 64 + 4096];
    used = 0;
    for (int i = 0; i <= CONFIG_UPSTREAMS_MAX; i++) {
        used += (size_t)snprintf(many + used, sizeof many - used,
                                 "[upstream u%d]\nbase_url = https://a.example\n", i);
    }
    CHECK_EQ_INT(parse_text(config_a, many, error_a, sizeof error_a), -1);
    CHECK(strcmp(error_a, "t.conf:129: too many [upstream] sections (max 64)") == 0);
}

static void test_missing_file(void) {
    CHECK_EQ_INT(config_load(config_a, "conf/does-not-exist.conf", error_a, sizeof error_a), -1);
    CHECK(strcmp(error_a, "conf/does-not-exist.conf: cannot read: No such file or directory") == 0);
    CHECK_EQ_INT(config_load(config_a, "conf", error_a, sizeof error_a), -1);
    CHECK(strcmp(error_a, "conf: cannot read: Is a directory") == 0);
}

/* Bytes quoted from the file never reach the message raw: control and
 * non-ASCII bytes become '?', length kept. */
static void test_error_messages_are_printable(void) {
    static const char text[] = "[server]\nlisten = 127.0.0.1:80\xff\xfex\n[model m]\nupstream = u\n";
    CHECK_EQ_INT(config_parse(config_a, text, sizeof text - 1, "t.conf", error_a, sizeof error_a), -1);
    CHECK(strstr(error_a, "t.conf:2: bad value '127.0.0.1:80??x' for 'listen'") == error_a);
    for (const char *byte = error_a; *byte != '\0'; byte++) {
        CHECK((unsigned char)*byte >= 0x20 && (unsigned char)*byte < 0x7f);
    }
}

typedef struct url_case {
    const char *url;
    bool tls;
    const char *host;
    uint16_t port;
    const char *base_path;
} url_case_t;

static void test_base_urls(void) {
    static const url_case_t good[] = {
        {"https://api.deepseek.com/v1", true, "api.deepseek.com", 443, "/v1"},
        {"https://api.deepseek.com", true, "api.deepseek.com", 443, ""},
        {"https://api.deepseek.com/", true, "api.deepseek.com", 443, ""},
        {"https://api.example.com:8443/openai/v1//", true, "api.example.com", 8443, "/openai/v1"},
        {"HTTPS://API.example.com/V1", true, "API.example.com", 443, "/V1"},
        {"https://10.1.2.3:1/x", true, "10.1.2.3", 1, "/x"},
        {"https://[2001:db8::1]/v1", true, "2001:db8::1", 443, "/v1"},
        {"https://[2001:db8::1]:65535", true, "2001:db8::1", 65535, ""},
        {"http://127.0.0.1:9000/v1", false, "127.0.0.1", 9000, "/v1"},
        {"http://127.255.1.2", false, "127.255.1.2", 80, ""},
        {"http://localhost", false, "localhost", 80, ""},
        {"http://LocalHost:1234/a/b", false, "LocalHost", 1234, "/a/b"},
        {"http://[::1]:8080/v1", false, "::1", 8080, "/v1"},
        {"http://[0:0:0:0:0:0:0:1]", false, "0:0:0:0:0:0:0:1", 80, ""},
        {"http://[::ffff:127.0.0.1]:81", false, "::ffff:127.0.0.1", 81, ""},
    };
    for (size_t i = 0; i < RW_ARRAY_LENGTH(good); i++) {
        char text[512];
        snprintf(text, sizeof text, "[upstream u]\nbase_url = %s\n[model m]\nupstream = u\n",
                 good[i].url);
        int result = parse_text(config_a, text, error_a, sizeof error_a);
        if (result != 0) {
            fprintf(stderr, "  %s: %s\n", good[i].url, error_a);
        }
        CHECK_EQ_INT(result, 0);
        const config_upstream_t *upstream = &config_a->upstreams[0];
        CHECK(strcmp(upstream->base_url, good[i].url) == 0);
        CHECK_EQ_INT(upstream->tls, good[i].tls);
        CHECK(strcmp(upstream->host, good[i].host) == 0);
        CHECK_EQ_INT(upstream->port, good[i].port);
        CHECK(strcmp(upstream->base_path, good[i].base_path) == 0);
    }

    static const struct {
        const char *url;
        const char *reason;
    } bad[] = {
        {"http://10.0.0.1", "plain http is only allowed"},
        {"http://[2001:db8::1]", "plain http is only allowed"},
        {"http://localhost.evil.example", "plain http is only allowed"},
        {"http://127.0.0.1.nip.io", "plain http is only allowed"},
        {"http://[::ffff:10.0.0.1]", "plain http is only allowed"},
        {"http://127.1", "bad host"},
        {"http://0x7f000001", "plain http is only allowed"},
        {"https://", "bad host"},
        {"https:///v1", "bad host"},
        {"https://-a.example", "bad host"},
        {"https://a.example:0", "bad port"},
        {"https://a.example:65536", "bad port"},
        {"https://a.example:", "bad port"},
        {"https://a.example:x1", "bad port"},
        {"https://a.example:443:1", "an IPv6 address needs brackets"},
        {"https://[::1", "missing ']'"},
        {"https://[zz::1]/", "bad IPv6 address"},
        {"https://[::1]x/", "unexpected text after the host"},
        {"https://user:pw@a.example/v1", "user info is not allowed"},
        {"https://a.example/v1?x=1", "a query or fragment is not allowed"},
        {"https://a.example/v1#x", "a query or fragment is not allowed"},
        {"https://a.example/a b", "only printable ASCII without spaces is allowed"},
        {"api.example.com", "expected https://HOST[:PORT][/PATH]"},
        {"https:/a.example", "expected https://HOST[:PORT][/PATH]"},
    };
    for (size_t i = 0; i < RW_ARRAY_LENGTH(bad); i++) {
        char text[512];
        snprintf(text, sizeof text, "[upstream u]\nbase_url = %s\n[model m]\nupstream = u\n",
                 bad[i].url);
        int result = parse_text(config_a, text, error_a, sizeof error_a);
        CHECK_EQ_INT(result, -1);
        char expected[512];
        snprintf(expected, sizeof expected, "t.conf:2: bad base_url '%s': %s", bad[i].url,
                 bad[i].reason);
        if (strncmp(error_a, expected, strlen(expected)) != 0) {
            fprintf(stderr, "  %s:\n    expected: %s\n    got:      %s\n", bad[i].url, expected,
                    error_a);
            CHECK(false);
        }
    }
}

static void test_model_lookup(void) {
    static const char *const names[] = {"gpt-4o", "gpt-4", "gpt-4o-mini", "a", "zz", "gpt-4o-2024",
                                        "Z/model:1", "deepseek-chat", "~"};
    static char text[8192];
    size_t used = (size_t)snprintf(text, sizeof text, "[upstream one]\nbase_url = https://a.example\n"
                                                      "[upstream two]\nbase_url = https://b.example\n");
    for (size_t i = 0; i < RW_ARRAY_LENGTH(names); i++) {
        used += (size_t)snprintf(text + used, sizeof text - used, "[model %s]\nupstream = %s\n",
                                 names[i], i % 2 == 0 ? "one" : "two");
    }
    CHECK_EQ_INT(parse_text(config_a, text, error_a, sizeof error_a), 0);
    CHECK_EQ_INT(config_a->model_count, RW_ARRAY_LENGTH(names));
    for (size_t i = 0; i < RW_ARRAY_LENGTH(names); i++) {
        const config_model_t *model =
            config_find_model(config_a, (const uint8_t *)names[i], strlen(names[i]));
        CHECK(model == &config_a->models[i]);
        CHECK_EQ_INT(model != NULL ? model->routes[0].upstream_index : 99, i % 2);
    }
    static const char *const absent[] = {"gpt-4o-min", "gpt-4o-minii", "b", "", "gpt", "GPT-4o",
                                         "zzz", "\x7f", " gpt-4o"};
    for (size_t i = 0; i < RW_ARRAY_LENGTH(absent); i++) {
        CHECK(config_find_model(config_a, (const uint8_t *)absent[i], strlen(absent[i])) == NULL);
    }
    /* Length is what counts, not a NUL: "gpt-4o" is found inside a longer buffer. */
    CHECK(config_find_model(config_a, (const uint8_t *)"gpt-4o-mini", 6) == &config_a->models[0]);
    CHECK(config_find_model(config_a, (const uint8_t *)"gpt-4\0", 6) == NULL);
    CHECK(config_find_model(config_a, NULL, 0) == NULL);

    /* The maximum number of models, inserted in descending order. */
    static char big[CONFIG_MODELS_MAX * 48 + 1024];
    used = (size_t)snprintf(big, sizeof big, "[upstream u]\nbase_url = https://a.example\n");
    for (int i = CONFIG_MODELS_MAX - 1; i >= 0; i--) {
        used += (size_t)snprintf(big + used, sizeof big - used, "[model m%03d]\nupstream = u\n", i);
    }
    CHECK_EQ_INT(parse_text(config_a, big, error_a, sizeof error_a), 0);
    CHECK_EQ_INT(config_a->model_count, CONFIG_MODELS_MAX);
    for (int i = 0; i < CONFIG_MODELS_MAX; i++) {
        char name[16];
        int length = snprintf(name, sizeof name, "m%03d", i);
        const config_model_t *model = config_find_model(config_a, (const uint8_t *)name, (size_t)length);
        CHECK(model != NULL && strcmp(model->name, name) == 0);
    }
    CHECK(config_find_model(config_a, (const uint8_t *)"m256", 4) == NULL);
    used += (size_t)snprintf(big + used, sizeof big - used, "[model extra]\nupstream = u\n");
    CHECK_EQ_INT(parse_text(config_a, big, error_a, sizeof error_a), -1);
    CHECK(strcmp(error_a, "t.conf:515: too many [model] sections (max 256)") == 0);
}

/* Feeds `text` in pieces of the given sizes (cycled) into config_b. */
static int parse_in_pieces(const char *text, size_t length, const size_t *sizes, size_t size_count) {
    config_parser_t *parser = malloc(sizeof *parser);
    RW_ASSERT(parser != NULL);
    config_parser_begin(parser, config_b, "t.conf", error_b, sizeof error_b);
    size_t offset = 0;
    size_t turn = 0;
    int result = 0;
    while (offset < length && result == 0) {
        size_t wanted = sizes[turn++ % size_count];
        size_t piece = RW_MIN(wanted, length - offset);
        result = config_parser_feed(parser, text + offset, piece);
        offset += piece;
    }
    /* Empty feeds are harmless, and feeding after an error keeps failing. */
    if (config_parser_feed(parser, text, 0) != result) {
        result = 99;
    }
    int finished = config_parser_finish(parser);
    free(parser);
    return result != 0 ? result : finished;
}

/* Both parses of the same text must agree: same result, same error, and
 * byte-identical configurations on success. */
static void check_same_outcome(int whole, int pieces) {
    CHECK_EQ_INT(pieces, whole);
    if (pieces != whole) {
        fprintf(stderr, "    whole: %s\n    pieces: %s\n", whole == 0 ? "ok" : error_a,
                pieces == 0 ? "ok" : error_b);
    }
    if (whole == 0 && pieces == 0) {
        CHECK(memcmp(config_a, config_b, sizeof *config_a) == 0);
    } else {
        CHECK(strcmp(error_a, error_b) == 0);
    }
}

static void test_byte_by_byte(void) {
    static char text[65536];
    size_t length = read_file("conf/ringway.conf", text, sizeof text);
    CHECK(length > 0);
    int whole = config_parse(config_a, text, length, "t.conf", error_a, sizeof error_a);
    CHECK_EQ_INT(whole, 0);
    static const size_t one[] = {1};
    check_same_outcome(whole, parse_in_pieces(text, length, one, 1));
    static const size_t odd[] = {7, 1, 300, 2, 13};
    check_same_outcome(whole, parse_in_pieces(text, length, odd, RW_ARRAY_LENGTH(odd)));

    /* Every split point of a smaller file, valid and not. */
    static const char *const samples[] = {
        "[server]\r\nthreads = 3\r\ndata_dir = \" d # d \" \r\n[upstream u]\r\n"
        "base_url = https://a.example/v1\r\napi_key = k#k\r\n[model m]\r\nupstream = u # c\r\nowned_by = o",
        "[server]\nthreads = 3\n[upstream u]\nbase_url = http://a.example/v1\n",
        "[billing]\r\nfree_grant = 2.5\r\n[auth]\nadmin_token = \"0123456789abcdef\" # c\n"
        "[upstream u]\nbase_url = https://a.example\n[model m]\nupstream = u\n"
        "input_price = 0.25 # c\noutput_price = 1.000001",
        "[limits]\nbody_bytes_max = 10MiB\n[model m]\nupstream = u\n[upstream u]\nbase_url = "
        "https://[::1]:99\n",
    };
    for (size_t s = 0; s < RW_ARRAY_LENGTH(samples); s++) {
        size_t sample_length = strlen(samples[s]);
        int sample_whole = parse_text(config_a, samples[s], error_a, sizeof error_a);
        CHECK_EQ_INT(sample_whole, s == 1 ? -1 : 0);
        for (size_t split = 0; split <= sample_length; split++) {
            size_t sizes[2] = {split, sample_length};
            if (split == 0) {
                sizes[0] = sample_length;
            }
            check_same_outcome(sample_whole, parse_in_pieces(samples[s], sample_length, sizes, 2));
        }
    }
    CHECK(strcmp(config_a->upstreams[0].host, "::1") == 0);

    /* CRLF line endings give the same configuration as LF. */
    static char crlf[131072];
    size_t crlf_length = 0;
    for (size_t i = 0; i < length; i++) {
        if (text[i] == '\n') {
            crlf[crlf_length++] = '\r';
        }
        crlf[crlf_length++] = text[i];
    }
    CHECK_EQ_INT(config_parse(config_a, text, length, "t.conf", error_a, sizeof error_a), 0);
    CHECK_EQ_INT(config_parse(config_b, crlf, crlf_length, "t.conf", error_b, sizeof error_b), 0);
    CHECK(memcmp(config_a, config_b, sizeof *config_a) == 0);
}

/* Every prefix of the demo file: never a crash; either a valid configuration
 * or an error pointing at a line that exists. */
static void test_truncations(void) {
    static char text[65536];
    size_t length = read_file("conf/ringway.conf", text, sizeof text);
    uint32_t total_lines = 1;
    for (size_t i = 0; i < length; i++) {
        total_lines += text[i] == '\n';
    }
    int successes = 0;
    for (size_t cut = 0; cut <= length; cut += 3) {
        int result = config_parse(config_a, text, cut, "t.conf", error_a, sizeof error_a);
        if (result == 0) {
            successes++;
            CHECK(config_a->model_count == 1);
            continue;
        }
        CHECK(strncmp(error_a, "t.conf:", 7) == 0);
        unsigned line = (unsigned)strtoul(error_a + 7, NULL, 10);
        CHECK(line <= total_lines);
    }
    CHECK(successes > 0);
}

/* unit.h's generator, seeded, so failures replay. */
static unit_random_t test_random = {0x9e3779b97f4a7c15ull};

/* Seeded random mutations of the demo file: no crash, whole and split
 * parses agree, and every accepted configuration satisfies the invariants
 * the rest of Ringway relies on. */
static void test_mutations(void) {
    static char original[65536];
    static char text[65536 + 4096];
    size_t original_length = read_file("conf/ringway.conf", original, sizeof original);
    CHECK(original_length > 0);
    static const char interesting[] = "[]=#\"\n \t:/.0159kKmMiBg-_\r\\@?x\0";
    int accepted = 0;
    for (int iteration = 0; iteration < 3000; iteration++) {
        memcpy(text, original, original_length);
        size_t length = original_length;
        int mutations = 1 + (int)(unit_random_next(&test_random) % 4);
        for (int m = 0; m < mutations; m++) {
            size_t position = (size_t)(unit_random_next(&test_random) % (length + 1));
            switch (unit_random_next(&test_random) % 4) {
            case 0: /* replace a byte */
                if (position < length) {
                    text[position] = unit_random_next(&test_random) % 2 == 0
                                         ? interesting[unit_random_next(&test_random) % (sizeof interesting - 1)]
                                         : (char)(unit_random_next(&test_random) & 0xff);
                }
                break;
            case 1: { /* delete a range */
                size_t wanted = (size_t)(unit_random_next(&test_random) % 40);
                size_t count = RW_MIN(wanted, length - position);
                memmove(text + position, text + position + count, length - position - count);
                length -= count;
                break;
            }
            case 2: { /* insert an interesting byte */
                memmove(text + position + 1, text + position, length - position);
                text[position] = interesting[unit_random_next(&test_random) % (sizeof interesting - 1)];
                length++;
                break;
            }
            default: { /* duplicate a range elsewhere */
                size_t source = (size_t)(unit_random_next(&test_random) % (length + 1));
                size_t wanted = (size_t)(unit_random_next(&test_random) % 200);
                size_t count = RW_MIN(wanted, length - source);
                if (length + count < sizeof text) {
                    memmove(text + position + count, text + position, length - position);
                    size_t from = source >= position ? source + count : source;
                    memmove(text + position, text + from, count);
                    length += count;
                }
                break;
            }
            }
        }
        int whole = config_parse(config_a, text, length, "t.conf", error_a, sizeof error_a);
        CHECK(whole == 0 || whole == -1);
        size_t sizes[3] = {1 + (size_t)(unit_random_next(&test_random) % 97), 1, 1 + (size_t)(unit_random_next(&test_random) % 4000)};
        check_same_outcome(whole, parse_in_pieces(text, length, sizes, 3));
        if (whole != 0) {
            CHECK(strncmp(error_a, "t.conf:", 7) == 0 || strncmp(error_a, "t.conf: ", 8) == 0);
            CHECK(strlen(error_a) > 8 && strlen(error_a) < sizeof error_a);
            CHECK(strchr(error_a, '\n') == NULL);
            continue;
        }
        accepted++;
        CHECK(config_a->model_count >= 1 && config_a->model_count <= CONFIG_MODELS_MAX);
        CHECK(config_a->upstream_count >= 1 && config_a->upstream_count <= CONFIG_UPSTREAMS_MAX);
        CHECK(config_a->threads <= 256);
        CHECK(config_a->streams_per_thread <= config_a->connections_per_thread);
        CHECK(config_a->header_bytes_max <= config_a->request_buffer_bytes);
        for (uint32_t i = 0; i < config_a->upstream_count; i++) {
            const config_upstream_t *upstream = &config_a->upstreams[i];
            CHECK(upstream->port != 0 && upstream->host[0] != '\0');
            CHECK(upstream->connect_ms > 0 && upstream->first_byte_ms > 0 && upstream->idle_ms > 0);
            CHECK(upstream->base_url[0] != '\0');
        }
        CHECK(config_a->sync_interval_ms >= 1 && config_a->sync_interval_ms <= 10000);
        CHECK(config_a->free_grant_micros >= 0 && config_a->free_grant_micros <= LEDGER_MONEY_MICROS_MAX);
        CHECK(config_a->users_max >= 1 && config_a->keys_max >= 1);
        CHECK(!config_a->has_admin_token || strlen(config_a->admin_token) >= 16);
        CHECK(config_a->has_admin_token || config_a->admin_token[0] == '\0');
        CHECK(!config_a->has_jwt_secret || strlen(config_a->jwt_secret) >= 32);
        CHECK(config_a->jwt_ttl_s >= 60 && config_a->jwt_ttl_s <= 31536000);
        for (uint32_t i = 0; i < config_a->model_count; i++) {
            const config_model_t *model = &config_a->models[i];
            CHECK(model->routes[0].upstream_index < config_a->upstream_count);
            CHECK(model->input_price_micros >= 0 &&
                  model->input_price_micros <= LEDGER_MONEY_MICROS_MAX);
            CHECK(model->cached_input_price_micros >= 0 &&
                  model->cached_input_price_micros <= LEDGER_MONEY_MICROS_MAX);
            CHECK(model->output_price_micros >= 0 &&
                  model->output_price_micros <= LEDGER_MONEY_MICROS_MAX);
            CHECK(model->request_price_micros >= 0 &&
                  model->request_price_micros <= LEDGER_MONEY_MICROS_MAX);
            CHECK(model->max_output_tokens >= 1 && model->max_output_tokens <= 10000000);
            CHECK(model->routes[0].upstream_model[0] != '\0' && model->owned_by[0] != '\0');
            CHECK(config_find_model(config_a, (const uint8_t *)model->name, strlen(model->name)) ==
                  model);
        }
    }
    /* Some mutations (inside comments) leave the file valid. */
    CHECK(accepted > 0);
}

/* Several routes per model (in file order, priority and weight given or
 * defaulted, upstream model defaulting to the public name), several keys
 * per upstream from a literal list or from environment variables, and the
 * [routing] section with its defaults. */
static void test_routes_and_keys(void) {
    setenv("RINGWAY_TEST_KEY_A", "sk-env-a", 1);
    setenv("RINGWAY_TEST_KEY_B", "sk-env-b", 1);
    static const char text[] =
        "[routing]\nattempts_max = 4\nfailover_ms = 9000\nbreaker_failures = 3\nbreaker_error_percent = 0\n"
        "breaker_window_ms = 2000\nbreaker_window_requests_min = 10\nbreaker_open_ms = 700\n"
        "[upstream a]\nbase_url = https://a.example/v1\napi_key = k1, k2 k3\n"
        "[upstream b]\nbase_url = https://b.example/v1\napi_key_env = RINGWAY_TEST_KEY_A,RINGWAY_TEST_KEY_B\n"
        "[model m]\nroute = a\nroute = b b-model:k=v priority=2 weight=7\nroute = a other weight=1000\n"
        "[model n]\nupstream = b\naffinity = header\naffinity_header = x-session-id\n";
    int result = parse_text(config_a, text, error_a, sizeof error_a);
    if (result != 0) fprintf(stderr, "  %s\n", error_a);
    CHECK_EQ_INT(result, 0);
    CHECK_EQ_INT(config_a->attempts_max, 4);
    CHECK_EQ_INT(config_a->failover_ms, 9000);
    CHECK_EQ_INT(config_a->breaker_failures, 3);
    CHECK_EQ_INT(config_a->breaker_error_percent, 0);
    CHECK_EQ_INT(config_a->breaker_window_ms, 2000);
    CHECK_EQ_INT(config_a->breaker_window_requests_min, 10);
    CHECK_EQ_INT(config_a->breaker_open_ms, 700);
    const config_upstream_t *a = &config_a->upstreams[0];
    CHECK(a->has_api_key);
    CHECK_EQ_INT(a->api_key_count, 3);
    CHECK(strcmp(a->api_keys[0], "k1") == 0 && strcmp(a->api_keys[1], "k2") == 0 && strcmp(a->api_keys[2], "k3") == 0);
    const config_upstream_t *b = &config_a->upstreams[1];
    CHECK_EQ_INT(b->api_key_count, 2);
    CHECK(strcmp(b->api_keys[0], "sk-env-a") == 0 && strcmp(b->api_keys[1], "sk-env-b") == 0);
    const config_model_t *m = &config_a->models[0];
    CHECK_EQ_INT(m->route_count, 3);
    CHECK_EQ_INT(m->routes[0].upstream_index, 0);
    CHECK(strcmp(m->routes[0].upstream_model, "m") == 0);
    CHECK_EQ_INT(m->routes[0].priority, 0);
    CHECK_EQ_INT(m->routes[0].weight, 1);
    CHECK_EQ_INT(m->routes[1].upstream_index, 1);
    CHECK(strcmp(m->routes[1].upstream_model, "b-model:k=v") == 0);
    CHECK_EQ_INT(m->routes[1].priority, 2);
    CHECK_EQ_INT(m->routes[1].weight, 7);
    CHECK_EQ_INT(m->routes[2].upstream_index, 0);
    CHECK(strcmp(m->routes[2].upstream_model, "other") == 0);
    CHECK_EQ_INT(m->routes[2].weight, 1000);
    CHECK(strcmp(m->owned_by, "a") == 0); /* the first route's upstream */
    const config_model_t *n = &config_a->models[1];
    CHECK_EQ_INT(n->route_count, 1);
    CHECK_EQ_INT(n->routes[0].upstream_index, 1);
    CHECK(strcmp(n->routes[0].upstream_model, "n") == 0);
    CHECK_EQ_INT(n->affinity, CONFIG_AFFINITY_HEADER);
    CHECK(strcmp(n->affinity_header, "x-session-id") == 0);
    CHECK_EQ_INT(m->affinity, CONFIG_AFFINITY_OFF);

    /* Defaults of [routing]. */
    CHECK_EQ_INT(parse_text(config_b, MINIMAL_TAIL, error_b, sizeof error_b), 0);
    CHECK_EQ_INT(config_b->attempts_max, 3);
    CHECK_EQ_INT(config_b->failover_ms, 30000);
    CHECK_EQ_INT(config_b->breaker_failures, 5);
    CHECK_EQ_INT(config_b->breaker_error_percent, 50);
    CHECK_EQ_INT(config_b->breaker_window_ms, 10000);
    CHECK_EQ_INT(config_b->breaker_window_requests_min, 20);
    CHECK_EQ_INT(config_b->breaker_open_ms, 5000);
    CHECK_EQ_INT(config_b->models[0].route_count, 1);
    unsetenv("RINGWAY_TEST_KEY_A");
    unsetenv("RINGWAY_TEST_KEY_B");
}

int main(void) {
    config_a = calloc(1, sizeof *config_a);
    config_b = calloc(1, sizeof *config_b);
    RW_ASSERT(config_a != NULL && config_b != NULL);
    RUN_TEST(test_demo_configuration);
    RUN_TEST(test_demo_provider_example);
    RUN_TEST(test_defaults);
    RUN_TEST(test_accounts_and_client_addresses);
    RUN_TEST(test_values);
    RUN_TEST(test_billing_and_auth);
    RUN_TEST(test_bad_configurations);
    RUN_TEST(test_routes_and_keys);
    RUN_TEST(test_missing_file);
    RUN_TEST(test_error_messages_are_printable);
    RUN_TEST(test_base_urls);
    RUN_TEST(test_model_lookup);
    RUN_TEST(test_byte_by_byte);
    RUN_TEST(test_truncations);
    RUN_TEST(test_mutations);
    free(config_a);
    free(config_b);
    return UNIT_REPORT();
}
