/* The configuration loader: an incremental, allocation-free parser for the
 * INI-like format described in include/ringway/config.h, then a validation
 * pass over the whole (cross-references, required keys, derived values) and
 * a sorted index of model names for config_find_model.
 *
 * Lines are collected into the parser's fixed line buffer and handled one at
 * a time, so the text may arrive in any split; every key is described once
 * in a table (name, kind of value, field, range) and applied through it. */
#include "ringway/config.h"

#include "ringway/address.h"
#include "ringway/common.h"
#include "ringway/ledger.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Section slots in config_parser_t: the singletons, then upstreams, models. */
enum {
    CONFIG_SLOT_SERVER = 0,
    CONFIG_SLOT_LIMITS = 1,
    CONFIG_SLOT_TIMEOUTS = 2,
    CONFIG_SLOT_RELAY = 3,
    CONFIG_SLOT_BILLING = 4,
    CONFIG_SLOT_AUTH = 5,
    CONFIG_SLOT_RATE_LIMITS = 6,
    CONFIG_SLOT_ACCOUNTS = 7,
    CONFIG_SLOT_ROUTING = 8,
    CONFIG_SLOT_UPSTREAM_FIRST = CONFIG_SECTION_SINGLETONS,
    CONFIG_SLOT_MODEL_FIRST = CONFIG_SECTION_SINGLETONS + CONFIG_UPSTREAMS_MAX,
    CONFIG_SLOT_TIER_FIRST = CONFIG_SECTION_SINGLETONS + CONFIG_UPSTREAMS_MAX + CONFIG_MODELS_MAX,
};
_Static_assert(CONFIG_SLOT_ROUTING + 1 == CONFIG_SECTION_SINGLETONS, "a slot per singleton section");

/* How many bytes of an offending value an error message repeats. */
#define CONFIG_ECHO_BYTES_MAX 100

#define CONFIG_TIMEOUT_MS_MAX 86400000u /* one day */
#define CONFIG_MAX_OUTPUT_TOKENS_DEFAULT 4096
#define CONFIG_GIB ((uint64_t)1024 * 1024 * 1024)

typedef enum config_value_kind {
    CONFIG_VALUE_INTEGER,       /* uint32_t, plain decimal */
    CONFIG_VALUE_BYTES,         /* uint32_t, decimal with optional binary suffix */
    CONFIG_VALUE_BOOL,          /* bool */
    CONFIG_VALUE_ADDRESS,       /* HOST:PORT into a host string and a uint16_t port */
    CONFIG_VALUE_PATH,          /* any printable bytes (UTF-8 allowed) */
    CONFIG_VALUE_TOKEN,         /* printable ASCII without space, '"', '\' */
    CONFIG_VALUE_HOSTNAME,      /* a DNS name or IPv4 literal */
    CONFIG_VALUE_CHOICE,        /* one of the key's choices: an int-sized enum, its index */
    CONFIG_VALUE_BASE_URL,      /* upstream only: fills tls, host, port, base_path */
    CONFIG_VALUE_SECRET,        /* a literal secret (api_key, admin_token, jwt_secret) */
    CONFIG_VALUE_SECRET_ENV,    /* the same secret read from a named environment variable */
    CONFIG_VALUE_SECRET_LIST,   /* up to items_max secrets separated by commas or blanks into
                                 * char[items_max][size], their number at count_offset */
    CONFIG_VALUE_SECRET_ENV_LIST, /* the same, each read from a named environment variable */
    CONFIG_VALUE_ROUTE,         /* model only: UPSTREAM [UPSTREAM_MODEL] [priority=N] [weight=N] */
    CONFIG_VALUE_MONEY,         /* int64_t micros from an exact decimal (ledger_parse_money) */
    CONFIG_VALUE_UPSTREAM_NAME, /* model only: resolved to an index at finish */
    CONFIG_VALUE_TIER_NAME,     /* [rate_limits]: a [tier NAME], resolved to an index at finish */
    CONFIG_VALUE_CIDR_LIST,     /* address ranges separated by commas or spaces into an address_cidr_t
                                 * array, their number at count_offset (a uint32_t) */
} config_value_kind_t;

/* One key of one section: where its value goes and what it accepts. */
typedef struct config_key {
    const char *name;
    config_value_kind_t kind;
    size_t offset;      /* of the field inside the section's struct */
    size_t size;        /* of that field (capacity for strings) */
    size_t port_offset; /* CONFIG_VALUE_ADDRESS: the uint16_t port field */
    size_t count_offset; /* lists: the uint32_t count field */
    uint32_t items_max;  /* secret lists: the array's length (size is one item's) */
    bool repeatable;     /* may be given more than once in a section (route) */
    uint32_t minimum;   /* integers and bytes; secrets: the shortest length accepted */
    uint32_t maximum;
    /* Secrets: the bool set once the secret is known, and the index (in the
     * same section) of the other way of giving it: a literal and its _env
     * form exclude each other. */
    size_t flag_offset;
    uint32_t pair_index;
    /* CONFIG_VALUE_CHOICE: the accepted words, in the enum's order, and the
     * phrase that lists them in an error. */
    const char *const *choices;
    uint32_t choice_count;
    const char *choices_text;
} config_key_t;

typedef struct config_section_spec {
    const char *name;
    bool named; /* [upstream NAME], [model NAME] */
    const config_key_t *keys;
    uint32_t key_count;
} config_section_spec_t;

#define CONFIG_FIELD_SIZE(type, field) sizeof(((type *)0)->field)

#define CONFIG_KEY(type, field, value_kind, low, high)                                   \
    {.name = #field, .kind = (value_kind), .offset = offsetof(type, field),              \
     .size = CONFIG_FIELD_SIZE(type, field), .minimum = (low), .maximum = (high)}

/* A secret and its environment-variable form, e.g. api_key / api_key_env,
 * both writing `field` and setting `flag_field`; `other` is the index of the
 * other form in the same table. */
#define CONFIG_KEY_SECRET(type, key_name, value_kind, field, flag_field, other, length_min) \
    {.name = (key_name), .kind = (value_kind), .offset = offsetof(type, field),           \
     .size = CONFIG_FIELD_SIZE(type, field), .flag_offset = offsetof(type, flag_field),    \
     .pair_index = (other), .minimum = (length_min)}

/* The list form: up to `items` secrets into field[items][...]. */
#define CONFIG_KEY_SECRET_LIST(type, key_name, value_kind, field, count_field, flag_field, other, items) \
    {.name = (key_name), .kind = (value_kind), .offset = offsetof(type, field),           \
     .size = CONFIG_FIELD_SIZE(type, field[0]), .items_max = (items),                     \
     .count_offset = offsetof(type, count_field), .flag_offset = offsetof(type, flag_field), \
     .pair_index = (other), .minimum = 1}

#define CONFIG_KEY_MONEY(type, key_name, field)                                          \
    {.name = (key_name), .kind = CONFIG_VALUE_MONEY, .offset = offsetof(type, field),     \
     .size = CONFIG_FIELD_SIZE(type, field)}

#define CONFIG_KEY_CHOICE(type, field, words, text)                                      \
    {.name = #field, .kind = CONFIG_VALUE_CHOICE, .offset = offsetof(type, field),       \
     .size = CONFIG_FIELD_SIZE(type, field), .choices = (words),                          \
     .choice_count = RW_ARRAY_LENGTH(words), .choices_text = (text)}

#define CONFIG_KEY_ADDRESS(key_name, host_field, port_field)                             \
    {.name = (key_name), .kind = CONFIG_VALUE_ADDRESS, .offset = offsetof(config_t, host_field), \
     .size = CONFIG_FIELD_SIZE(config_t, host_field), .port_offset = offsetof(config_t, port_field)}

static const config_key_t config_server_keys[] = {
    CONFIG_KEY_ADDRESS("listen", listen_host, listen_port),
    CONFIG_KEY(config_t, threads, CONFIG_VALUE_INTEGER, 0, 256),
    CONFIG_KEY(config_t, data_dir, CONFIG_VALUE_PATH, 0, 0),
    CONFIG_KEY_ADDRESS("admin_listen", admin_listen_host, admin_listen_port),
    {.name = "trusted_proxies", .kind = CONFIG_VALUE_CIDR_LIST, .offset = offsetof(config_t, trusted_proxies),
     .size = CONFIG_FIELD_SIZE(config_t, trusted_proxies), .count_offset = offsetof(config_t, trusted_proxy_count)},
};
enum { CONFIG_SERVER_KEY_LISTEN = 0, CONFIG_SERVER_KEY_ADMIN_LISTEN = 3 };

static const config_key_t config_limits_keys[] = {
    CONFIG_KEY(config_t, connections_per_thread, CONFIG_VALUE_INTEGER, 1, 1048576),
    CONFIG_KEY(config_t, streams_per_thread, CONFIG_VALUE_INTEGER, 1, 1048576),
    CONFIG_KEY(config_t, header_bytes_max, CONFIG_VALUE_BYTES, 1024, 1048576),
    CONFIG_KEY(config_t, body_bytes_max, CONFIG_VALUE_BYTES, 1024, 1073741824),
    CONFIG_KEY(config_t, request_buffer_bytes, CONFIG_VALUE_BYTES, 4096, 67108864),
    CONFIG_KEY(config_t, large_bodies_per_thread, CONFIG_VALUE_INTEGER, 0, 65536),
    CONFIG_KEY(config_t, stream_buffer_bytes, CONFIG_VALUE_BYTES, 4096, 16777216),
    CONFIG_KEY(config_t, upstream_connections_per_thread, CONFIG_VALUE_INTEGER, 1, 65536),
    CONFIG_KEY(config_t, drain_bytes_max, CONFIG_VALUE_BYTES, 0, 1073741824),
    CONFIG_KEY(config_t, connections_per_ip, CONFIG_VALUE_INTEGER, 0, 1048576),
    CONFIG_KEY(config_t, large_bodies_per_ip, CONFIG_VALUE_INTEGER, 0, 65536),
};
enum {
    CONFIG_LIMITS_KEY_CONNECTIONS = 0,
    CONFIG_LIMITS_KEY_STREAMS = 1,
    CONFIG_LIMITS_KEY_HEADER_BYTES = 2,
    CONFIG_LIMITS_KEY_REQUEST_BUFFER_BYTES = 4,
};

static const config_key_t config_timeouts_keys[] = {
    CONFIG_KEY(config_t, header_ms, CONFIG_VALUE_INTEGER, 1, CONFIG_TIMEOUT_MS_MAX),
    CONFIG_KEY(config_t, body_ms, CONFIG_VALUE_INTEGER, 1, CONFIG_TIMEOUT_MS_MAX),
    CONFIG_KEY(config_t, keepalive_idle_ms, CONFIG_VALUE_INTEGER, 1, CONFIG_TIMEOUT_MS_MAX),
    CONFIG_KEY(config_t, upstream_connect_ms, CONFIG_VALUE_INTEGER, 1, CONFIG_TIMEOUT_MS_MAX),
    CONFIG_KEY(config_t, upstream_first_byte_ms, CONFIG_VALUE_INTEGER, 1, CONFIG_TIMEOUT_MS_MAX),
    CONFIG_KEY(config_t, upstream_idle_ms, CONFIG_VALUE_INTEGER, 1, CONFIG_TIMEOUT_MS_MAX),
    CONFIG_KEY(config_t, drain_ms, CONFIG_VALUE_INTEGER, 1, CONFIG_TIMEOUT_MS_MAX),
    CONFIG_KEY(config_t, upstream_keepalive_ms, CONFIG_VALUE_INTEGER, 1, CONFIG_TIMEOUT_MS_MAX),
};

/* In the order of config_disconnect_policy_t and config_billing_mode_t. */
static const char *const config_disconnect_words[] = {"drain", "cancel"};
static const char *const config_billing_mode_words[] = {"on", "off"};
static const char *const config_registration_words[] = {"open", "closed"};
static const char *const config_affinity_words[] = {"off", "user", "header"};
_Static_assert(sizeof(config_disconnect_policy_t) == sizeof(int) && sizeof(config_billing_mode_t) == sizeof(int) &&
                   sizeof(config_registration_t) == sizeof(int),
               "CONFIG_VALUE_CHOICE stores an int");
_Static_assert(sizeof(config_affinity_t) == sizeof(int), "CONFIG_VALUE_CHOICE stores an int");

static const config_key_t config_relay_keys[] = {
    CONFIG_KEY_CHOICE(config_t, client_disconnect, config_disconnect_words, "drain or cancel"),
    CONFIG_KEY(config_t, sse_keepalive_ms, CONFIG_VALUE_INTEGER, 0, CONFIG_TIMEOUT_MS_MAX),
};

/* [billing]: users_max and keys_max stop at 2^24, the most the account
 * tables accept (ACCOUNT_USERS_MAX_LIMIT, ACCOUNT_KEYS_MAX_LIMIT). */
static const config_key_t config_billing_keys[] = {
    CONFIG_KEY(config_t, sync_interval_ms, CONFIG_VALUE_INTEGER, 1, 10000),
    {.name = "mode", .kind = CONFIG_VALUE_CHOICE, .offset = offsetof(config_t, billing_mode),
     .size = CONFIG_FIELD_SIZE(config_t, billing_mode), .choices = config_billing_mode_words,
     .choice_count = RW_ARRAY_LENGTH(config_billing_mode_words), .choices_text = "on or off"},
    CONFIG_KEY(config_t, hold_record_after_ms, CONFIG_VALUE_INTEGER, 0, CONFIG_TIMEOUT_MS_MAX),
    CONFIG_KEY(config_t, store_wait_requests_max, CONFIG_VALUE_INTEGER, 0, 1048576),
    CONFIG_KEY(config_t, store_wait_ms, CONFIG_VALUE_INTEGER, 1, CONFIG_TIMEOUT_MS_MAX),
    CONFIG_KEY_MONEY(config_t, "free_grant", free_grant_micros),
    CONFIG_KEY(config_t, users_max, CONFIG_VALUE_INTEGER, 1, 16777216),
    CONFIG_KEY(config_t, keys_max, CONFIG_VALUE_INTEGER, 1, 16777216),
};

enum {
    CONFIG_AUTH_KEY_ADMIN_TOKEN = 0,
    CONFIG_AUTH_KEY_ADMIN_TOKEN_ENV = 1,
    CONFIG_AUTH_KEY_JWT_SECRET = 2,
    CONFIG_AUTH_KEY_JWT_SECRET_ENV = 3,
};
static const config_key_t config_auth_keys[] = {
    CONFIG_KEY_SECRET(config_t, "admin_token", CONFIG_VALUE_SECRET, admin_token, has_admin_token,
                      CONFIG_AUTH_KEY_ADMIN_TOKEN_ENV, CONFIG_ADMIN_TOKEN_BYTES_MIN),
    CONFIG_KEY_SECRET(config_t, "admin_token_env", CONFIG_VALUE_SECRET_ENV, admin_token,
                      has_admin_token, CONFIG_AUTH_KEY_ADMIN_TOKEN, CONFIG_ADMIN_TOKEN_BYTES_MIN),
    CONFIG_KEY_SECRET(config_t, "jwt_secret", CONFIG_VALUE_SECRET, jwt_secret, has_jwt_secret,
                      CONFIG_AUTH_KEY_JWT_SECRET_ENV, CONFIG_JWT_SECRET_BYTES_MIN),
    CONFIG_KEY_SECRET(config_t, "jwt_secret_env", CONFIG_VALUE_SECRET_ENV, jwt_secret,
                      has_jwt_secret, CONFIG_AUTH_KEY_JWT_SECRET, CONFIG_JWT_SECRET_BYTES_MIN),
    CONFIG_KEY(config_t, jwt_ttl_s, CONFIG_VALUE_INTEGER, 60, 31536000),
};

enum {
    CONFIG_UPSTREAM_KEY_BASE_URL = 0,
    CONFIG_UPSTREAM_KEY_API_KEY = 1,
    CONFIG_UPSTREAM_KEY_API_KEY_ENV = 2,
    CONFIG_UPSTREAM_KEY_CA_FILE = 3,
    CONFIG_UPSTREAM_KEY_VERIFY = 4,
    CONFIG_UPSTREAM_KEY_SNI = 5,
};
static const config_key_t config_upstream_keys[] = {
    CONFIG_KEY(config_upstream_t, base_url, CONFIG_VALUE_BASE_URL, 0, 0),
    CONFIG_KEY_SECRET_LIST(config_upstream_t, "api_key", CONFIG_VALUE_SECRET_LIST, api_keys, api_key_count,
                           has_api_key, CONFIG_UPSTREAM_KEY_API_KEY_ENV, CONFIG_UPSTREAM_KEYS_MAX),
    CONFIG_KEY_SECRET_LIST(config_upstream_t, "api_key_env", CONFIG_VALUE_SECRET_ENV_LIST, api_keys, api_key_count,
                           has_api_key, CONFIG_UPSTREAM_KEY_API_KEY, CONFIG_UPSTREAM_KEYS_MAX),
    CONFIG_KEY(config_upstream_t, ca_file, CONFIG_VALUE_PATH, 0, 0),
    CONFIG_KEY(config_upstream_t, verify, CONFIG_VALUE_BOOL, 0, 0),
    CONFIG_KEY(config_upstream_t, sni, CONFIG_VALUE_HOSTNAME, 0, 0),
    CONFIG_KEY(config_upstream_t, connect_ms, CONFIG_VALUE_INTEGER, 0, CONFIG_TIMEOUT_MS_MAX),
    CONFIG_KEY(config_upstream_t, first_byte_ms, CONFIG_VALUE_INTEGER, 0, CONFIG_TIMEOUT_MS_MAX),
    CONFIG_KEY(config_upstream_t, idle_ms, CONFIG_VALUE_INTEGER, 0, CONFIG_TIMEOUT_MS_MAX),
};

/* [model NAME]: `upstream` and `upstream_model` are the one-route form of
 * `route`, which may repeat; they exclude each other. */
static const config_key_t config_model_keys[] = {
    {.name = "upstream", .kind = CONFIG_VALUE_UPSTREAM_NAME, .offset = offsetof(config_model_t, routes[0].upstream_name),
     .size = CONFIG_UPSTREAM_NAME_BYTES},
    {.name = "upstream_model", .kind = CONFIG_VALUE_TOKEN, .offset = offsetof(config_model_t, routes[0].upstream_model),
     .size = CONFIG_UPSTREAM_MODEL_BYTES},
    CONFIG_KEY(config_model_t, owned_by, CONFIG_VALUE_TOKEN, 0, 0),
    CONFIG_KEY_MONEY(config_model_t, "input_price", input_price_micros),
    CONFIG_KEY_MONEY(config_model_t, "cached_input_price", cached_input_price_micros),
    CONFIG_KEY_MONEY(config_model_t, "output_price", output_price_micros),
    CONFIG_KEY_MONEY(config_model_t, "request_price", request_price_micros),
    CONFIG_KEY(config_model_t, max_output_tokens, CONFIG_VALUE_INTEGER, 1, 10000000),
    {.name = "route", .kind = CONFIG_VALUE_ROUTE, .repeatable = true},
    CONFIG_KEY_CHOICE(config_model_t, affinity, config_affinity_words, "off, user or header"),
    CONFIG_KEY(config_model_t, affinity_header, CONFIG_VALUE_TOKEN, 0, 0),
};
enum {
    CONFIG_MODEL_KEY_UPSTREAM = 0,
    CONFIG_MODEL_KEY_UPSTREAM_MODEL = 1,
    CONFIG_MODEL_KEY_OWNED_BY = 2,
    CONFIG_MODEL_KEY_INPUT_PRICE = 3,
    CONFIG_MODEL_KEY_CACHED_INPUT_PRICE = 4,
    CONFIG_MODEL_KEY_ROUTE = 8,
    CONFIG_MODEL_KEY_AFFINITY = 9,
    CONFIG_MODEL_KEY_AFFINITY_HEADER = 10,
};

/* [routing]: a breaker needs two failures at least, and its error rate two
 * outcomes, so that one 429 never opens it. */
static const config_key_t config_routing_keys[] = {
    CONFIG_KEY(config_t, attempts_max, CONFIG_VALUE_INTEGER, 1, 16),
    CONFIG_KEY(config_t, failover_ms, CONFIG_VALUE_INTEGER, 1, CONFIG_TIMEOUT_MS_MAX),
    CONFIG_KEY(config_t, breaker_failures, CONFIG_VALUE_INTEGER, 2, 1000000),
    CONFIG_KEY(config_t, breaker_error_percent, CONFIG_VALUE_INTEGER, 0, 100),
    CONFIG_KEY(config_t, breaker_window_ms, CONFIG_VALUE_INTEGER, 100, CONFIG_TIMEOUT_MS_MAX),
    CONFIG_KEY(config_t, breaker_window_requests_min, CONFIG_VALUE_INTEGER, 2, 1000000),
    CONFIG_KEY(config_t, breaker_open_ms, CONFIG_VALUE_INTEGER, 1, CONFIG_TIMEOUT_MS_MAX),
    CONFIG_KEY(config_t, key_refused_retry_ms, CONFIG_VALUE_INTEGER, 0, CONFIG_TIMEOUT_MS_MAX),
};

/* [rate_limits]: the tier names go to the parser, resolved at the end. */
static const config_key_t config_rate_limits_keys[] = {
    {.name = "key_tier", .kind = CONFIG_VALUE_TIER_NAME, .offset = offsetof(config_parser_t, key_tier_name),
     .size = CONFIG_FIELD_SIZE(config_parser_t, key_tier_name)},
    {.name = "account_tier", .kind = CONFIG_VALUE_TIER_NAME,
     .offset = offsetof(config_parser_t, account_tier_name),
     .size = CONFIG_FIELD_SIZE(config_parser_t, account_tier_name)},
};

/* [accounts]: the guards of the unauthenticated account endpoints. */
static const config_key_t config_accounts_keys[] = {
    CONFIG_KEY_CHOICE(config_t, registration, config_registration_words, "open or closed"),
    CONFIG_KEY(config_t, registrations_per_ip_per_hour, CONFIG_VALUE_INTEGER, 0, 1000000),
    CONFIG_KEY(config_t, registrations_per_ip_per_day, CONFIG_VALUE_INTEGER, 0, 1000000),
    CONFIG_KEY(config_t, login_failures_per_ip_per_minute, CONFIG_VALUE_INTEGER, 0, 1000000),
    CONFIG_KEY(config_t, login_failures_before_backoff, CONFIG_VALUE_INTEGER, 0, 1000000),
    CONFIG_KEY(config_t, login_backoff_base_s, CONFIG_VALUE_INTEGER, 1, 86400),
    CONFIG_KEY(config_t, login_backoff_max_s, CONFIG_VALUE_INTEGER, 1, 86400),
    CONFIG_KEY(config_t, password_jobs_max, CONFIG_VALUE_INTEGER, 1, 65536),
    CONFIG_KEY(config_t, tracked_clients_max, CONFIG_VALUE_INTEGER, 64, 16777216),
};
enum { CONFIG_ACCOUNTS_KEY_BACKOFF_BASE = 5, CONFIG_ACCOUNTS_KEY_BACKOFF_MAX = 6 };

/* [tier NAME]: each limit up to 2^32 - 1 (0 = unlimited). */
#define CONFIG_KEY_LIMIT(key_name, limit_kind)                                           \
    {.name = (key_name), .kind = CONFIG_VALUE_INTEGER,                                    \
     .offset = offsetof(config_tier_t, limits) + (limit_kind) * sizeof(uint32_t), .size = sizeof(uint32_t), \
     .minimum = 0, .maximum = UINT32_MAX}
static const config_key_t config_tier_keys[] = {
    CONFIG_KEY_LIMIT("requests_per_minute", CONFIG_LIMIT_REQUESTS_PER_MINUTE),
    CONFIG_KEY_LIMIT("tokens_per_minute", CONFIG_LIMIT_TOKENS_PER_MINUTE),
    CONFIG_KEY_LIMIT("requests_per_day", CONFIG_LIMIT_REQUESTS_PER_DAY),
    CONFIG_KEY_LIMIT("tokens_per_day", CONFIG_LIMIT_TOKENS_PER_DAY),
    CONFIG_KEY_LIMIT("concurrent_requests", CONFIG_LIMIT_CONCURRENT_REQUESTS),
};
_Static_assert(RW_ARRAY_LENGTH(config_tier_keys) == CONFIG_LIMIT_COUNT, "a key per limit");

#define CONFIG_SECTION(section_name, is_named, key_table)                                \
    {.name = (section_name), .named = (is_named), .keys = (key_table),                   \
     .key_count = (uint32_t)RW_ARRAY_LENGTH(key_table)}

static const config_section_spec_t config_sections[] = {
    [CONFIG_SECTION_SERVER] = CONFIG_SECTION("server", false, config_server_keys),
    [CONFIG_SECTION_LIMITS] = CONFIG_SECTION("limits", false, config_limits_keys),
    [CONFIG_SECTION_TIMEOUTS] = CONFIG_SECTION("timeouts", false, config_timeouts_keys),
    [CONFIG_SECTION_RELAY] = CONFIG_SECTION("relay", false, config_relay_keys),
    [CONFIG_SECTION_BILLING] = CONFIG_SECTION("billing", false, config_billing_keys),
    [CONFIG_SECTION_AUTH] = CONFIG_SECTION("auth", false, config_auth_keys),
    [CONFIG_SECTION_RATE_LIMITS] = CONFIG_SECTION("rate_limits", false, config_rate_limits_keys),
    [CONFIG_SECTION_ACCOUNTS] = CONFIG_SECTION("accounts", false, config_accounts_keys),
    [CONFIG_SECTION_ROUTING] = CONFIG_SECTION("routing", false, config_routing_keys),
    [CONFIG_SECTION_UPSTREAM] = CONFIG_SECTION("upstream", true, config_upstream_keys),
    [CONFIG_SECTION_MODEL] = CONFIG_SECTION("model", true, config_model_keys),
    [CONFIG_SECTION_TIER] = CONFIG_SECTION("tier", true, config_tier_keys),
};

_Static_assert(RW_ARRAY_LENGTH(config_server_keys) <= CONFIG_SECTION_KEYS_MAX, "server keys");
_Static_assert(RW_ARRAY_LENGTH(config_limits_keys) <= CONFIG_SECTION_KEYS_MAX, "limits keys");
_Static_assert(RW_ARRAY_LENGTH(config_timeouts_keys) <= CONFIG_SECTION_KEYS_MAX, "timeout keys");
_Static_assert(RW_ARRAY_LENGTH(config_billing_keys) <= CONFIG_SECTION_KEYS_MAX, "billing keys");
_Static_assert(RW_ARRAY_LENGTH(config_auth_keys) <= CONFIG_SECTION_KEYS_MAX, "auth keys");
_Static_assert(RW_ARRAY_LENGTH(config_accounts_keys) <= CONFIG_SECTION_KEYS_MAX, "accounts keys");
_Static_assert(RW_ARRAY_LENGTH(config_upstream_keys) <= CONFIG_SECTION_KEYS_MAX, "upstream keys");
_Static_assert(RW_ARRAY_LENGTH(config_model_keys) <= CONFIG_SECTION_KEYS_MAX, "model keys");
_Static_assert(RW_ARRAY_LENGTH(config_routing_keys) <= CONFIG_SECTION_KEYS_MAX, "routing keys");
_Static_assert(CONFIG_MODELS_MAX <= UINT16_MAX, "models_by_name holds uint16_t indexes");
_Static_assert(CONFIG_UPSTREAM_NAME_BYTES <= CONFIG_OWNED_BY_BYTES, "owned_by defaults to the upstream name");
_Static_assert(CONFIG_MODEL_NAME_BYTES <= CONFIG_UPSTREAM_MODEL_BYTES, "upstream_model defaults to the model name");

/* ---------------------------------------------------------------------- */
/* Small helpers                                                           */

static bool config_is_space(char c) {
    return c == ' ' || c == '\t';
}

static bool config_is_digit(char c) {
    return c >= '0' && c <= '9';
}

static bool config_is_alnum(char c) {
    return config_is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool config_bytes_equal(const char *bytes, size_t length, const char *literal) {
    return strlen(literal) == length && memcmp(bytes, literal, length) == 0;
}

/* Copies `length` bytes and a NUL into `destination`; the caller has checked
 * that they fit. */
static void config_copy(char *destination, size_t capacity, const char *source, size_t length) {
    RW_ASSERT(length < capacity);
    memcpy(destination, source, length);
    destination[length] = '\0';
}

/* Like config_copy, but cuts what does not fit (for names used in messages). */
static void config_copy_truncated(char *destination, size_t capacity, const char *source) {
    RW_ASSERT(capacity > 0);
    size_t length = strnlen(source, capacity - 1);
    memcpy(destination, source, length);
    destination[length] = '\0';
}

/* Writes "SOURCE:LINE: message" (or "SOURCE: message" for line 0) into the
 * caller's error buffer, marks the parser failed and returns -1 so callers
 * can `return config_fail(...)`. */
__attribute__((format(printf, 3, 4))) static int config_fail(config_parser_t *parser, uint32_t line,
                                                             const char *format, ...) {
    RW_ASSERT(!parser->failed);
    parser->failed = true;
    int prefix_length;
    if (line > 0) {
        prefix_length = snprintf(parser->error, parser->error_size, "%s:%u: ",
                                 parser->config->source_path, (unsigned)line);
    } else {
        prefix_length = snprintf(parser->error, parser->error_size, "%s: ",
                                 parser->config->source_path);
    }
    if (prefix_length >= 0 && (size_t)prefix_length < parser->error_size) {
        va_list arguments;
        va_start(arguments, format);
        vsnprintf(parser->error + prefix_length, parser->error_size - (size_t)prefix_length,
                  format, arguments);
        va_end(arguments);
    }
    /* The message quotes bytes from the file: a control or non-ASCII byte
     * becomes '?', so the message is one printable line for any terminal or
     * log. The replacement keeps the length, so a short buffer still holds
     * a prefix of the same text. */
    for (char *byte = parser->error; *byte != '\0'; byte++) {
        unsigned char value = (unsigned char)*byte;
        if (value < 0x20 || value >= 0x7f) *byte = '?';
    }
    return -1;
}

/* "[server]", "[upstream NAME]" or "[model NAME]" for the section in `slot`. */
static void config_section_label(const config_parser_t *parser, uint32_t slot, char *label,
                                 size_t label_size) {
    const config_t *config = parser->config;
    if (slot >= CONFIG_SLOT_TIER_FIRST) {
        snprintf(label, label_size, "[tier %s]", config->tiers[slot - CONFIG_SLOT_TIER_FIRST].name);
    } else if (slot >= CONFIG_SLOT_MODEL_FIRST) {
        snprintf(label, label_size, "[model %s]", config->models[slot - CONFIG_SLOT_MODEL_FIRST].name);
    } else if (slot >= CONFIG_SLOT_UPSTREAM_FIRST) {
        snprintf(label, label_size, "[upstream %s]",
                 config->upstreams[slot - CONFIG_SLOT_UPSTREAM_FIRST].name);
    } else {
        static const char *const singletons[] = {"[server]", "[limits]", "[timeouts]", "[relay]",
                                                 "[billing]", "[auth]", "[rate_limits]", "[accounts]",
                                                 "[routing]"};
        RW_ASSERT(slot < RW_ARRAY_LENGTH(singletons));
        snprintf(label, label_size, "%s", singletons[slot]);
    }
}

/* ---------------------------------------------------------------------- */
/* Names, hosts, ports, URLs                                               */

/* Upstream names: 1..63 bytes of A-Z a-z 0-9 _ . - */
static bool config_upstream_name_is_valid(const char *name, size_t length) {
    if (length == 0 || length >= CONFIG_UPSTREAM_NAME_BYTES) {
        return false;
    }
    for (size_t i = 0; i < length; i++) {
        char c = name[i];
        if (!config_is_alnum(c) && c != '_' && c != '.' && c != '-') {
            return false;
        }
    }
    return true;
}

static bool config_tier_name_is_valid(const char *name, size_t length) {
    return length < CONFIG_TIER_NAME_BYTES && config_upstream_name_is_valid(name, length);
}

/* Tokens (model names, upstream_model, owned_by): printable ASCII without
 * space, '"' or '\', so they can be written into JSON as they are. */
static bool config_token_is_valid(const char *token, size_t length) {
    if (length == 0) {
        return false;
    }
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)token[i];
        if (c <= ' ' || c >= 0x7f || c == '"' || c == '\\') {
            return false;
        }
    }
    return true;
}

/* A header-safe secret: visible ASCII, no spaces. */
static bool config_secret_is_valid(const char *secret, size_t length) {
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)secret[i];
        if (c <= ' ' || c >= 0x7f) {
            return false;
        }
    }
    return length > 0;
}

/* A strict dotted-quad IPv4 literal ("127.0.0.1"; not "127.1"). */
static bool config_parse_ipv4(const char *text, size_t length, struct in_addr *address) {
    char literal[INET_ADDRSTRLEN];
    if (length == 0 || length >= sizeof literal) {
        return false;
    }
    config_copy(literal, sizeof literal, text, length);
    return inet_pton(AF_INET, literal, address) == 1;
}

static bool config_parse_ipv6(const char *text, size_t length, struct in6_addr *address) {
    char literal[INET6_ADDRSTRLEN];
    if (length == 0 || length >= sizeof literal) {
        return false;
    }
    config_copy(literal, sizeof literal, text, length);
    return inet_pton(AF_INET6, literal, address) == 1;
}

/* A DNS name or an IPv4 literal: 1..255 bytes of A-Z a-z 0-9 . - _, not
 * starting with '.' or '-'. Something made only of digits and dots must be a
 * strict dotted quad, so "127.1" (which resolvers read as 127.0.0.1) cannot
 * slip past the loopback check as a "name". */
static bool config_host_name_is_valid(const char *host, size_t length) {
    if (length == 0 || length >= CONFIG_HOST_BYTES || host[0] == '.' || host[0] == '-') {
        return false;
    }
    bool numeric = true;
    for (size_t i = 0; i < length; i++) {
        char c = host[i];
        if (!config_is_alnum(c) && c != '.' && c != '-' && c != '_') {
            return false;
        }
        if (!config_is_digit(c) && c != '.') {
            numeric = false;
        }
    }
    struct in_addr ignored;
    return !numeric || config_parse_ipv4(host, length, &ignored);
}

/* True for "localhost", 127.0.0.0/8, ::1 and ::ffff:127.x.y.z. `host` is a
 * validated host without brackets. */
static bool config_host_is_loopback(const char *host) {
    if (strcasecmp(host, "localhost") == 0) {
        return true;
    }
    size_t length = strlen(host);
    struct in_addr ipv4;
    if (config_parse_ipv4(host, length, &ipv4)) {
        return (ntohl(ipv4.s_addr) >> 24) == 127;
    }
    struct in6_addr ipv6;
    if (config_parse_ipv6(host, length, &ipv6)) {
        return IN6_IS_ADDR_LOOPBACK(&ipv6) || (IN6_IS_ADDR_V4MAPPED(&ipv6) && ipv6.s6_addr[12] == 127);
    }
    return false;
}

/* Parses "HOST", "HOST:PORT", "[IPV6]" or "[IPV6]:PORT". On success writes
 * the host without brackets into `host` (CONFIG_HOST_BYTES), sets *has_port
 * and, if present, *port (1..65535), and returns NULL; otherwise returns the
 * reason, for an error message. */
static const char *config_parse_authority(const char *text, size_t length, char *host,
                                          uint16_t *port, bool *has_port) {
    size_t rest;
    if (length > 0 && text[0] == '[') {
        const char *close = memchr(text, ']', length);
        if (close == NULL) {
            return "missing ']' after IPv6 address";
        }
        size_t host_length = (size_t)(close - text) - 1;
        struct in6_addr ignored;
        if (!config_parse_ipv6(text + 1, host_length, &ignored)) {
            return "bad IPv6 address";
        }
        config_copy(host, CONFIG_HOST_BYTES, text + 1, host_length);
        rest = host_length + 2;
    } else {
        const char *colon = memchr(text, ':', length);
        size_t host_length = colon != NULL ? (size_t)(colon - text) : length;
        if (colon != NULL && memchr(colon + 1, ':', length - host_length - 1) != NULL) {
            return "an IPv6 address needs brackets, e.g. [::1]";
        }
        if (!config_host_name_is_valid(text, host_length)) {
            return "bad host";
        }
        config_copy(host, CONFIG_HOST_BYTES, text, host_length);
        rest = host_length;
    }
    *has_port = false;
    if (rest == length) {
        return NULL;
    }
    if (text[rest] != ':') {
        return "unexpected text after the host";
    }
    const char *digits = text + rest + 1;
    size_t digit_count = length - rest - 1;
    uint32_t value = 0;
    if (digit_count == 0 || digit_count > 5) {
        return "bad port (expected 1..65535)";
    }
    for (size_t i = 0; i < digit_count; i++) {
        if (!config_is_digit(digits[i])) {
            return "bad port (expected 1..65535)";
        }
        value = value * 10 + (uint32_t)(digits[i] - '0');
    }
    if (value == 0 || value > 65535) {
        return "bad port (expected 1..65535)";
    }
    *port = (uint16_t)value;
    *has_port = true;
    return NULL;
}

/* Splits an upstream base URL into `upstream`'s tls, host, port and
 * base_path: https://HOST[:PORT][/PATH] or http://HOST[:PORT][/PATH] with a
 * loopback HOST. The path loses trailing slashes ("https://h/v1/" → "/v1",
 * "https://h/" → ""); user info, queries and fragments are refused. Returns
 * NULL or the reason. */
static const char *config_parse_base_url(const char *url, size_t length,
                                         config_upstream_t *upstream) {
    size_t scheme_length;
    if (length >= 8 && strncasecmp(url, "https://", 8) == 0) {
        upstream->tls = true;
        scheme_length = 8;
    } else if (length >= 7 && strncasecmp(url, "http://", 7) == 0) {
        upstream->tls = false;
        scheme_length = 7;
    } else {
        return "expected https://HOST[:PORT][/PATH]";
    }
    const char *authority = url + scheme_length;
    size_t rest_length = length - scheme_length;
    const char *slash = memchr(authority, '/', rest_length);
    size_t authority_length = slash != NULL ? (size_t)(slash - authority) : rest_length;
    for (size_t i = 0; i < rest_length; i++) {
        unsigned char c = (unsigned char)authority[i];
        if (c == '?' || c == '#') {
            return "a query or fragment is not allowed";
        }
        if (c <= ' ' || c >= 0x7f) {
            return "only printable ASCII without spaces is allowed";
        }
        if (c == '@' && i < authority_length) {
            return "user info is not allowed (use api_key)";
        }
    }
    bool has_port;
    const char *reason = config_parse_authority(authority, authority_length, upstream->host,
                                                &upstream->port, &has_port);
    if (reason != NULL) {
        return reason;
    }
    if (!has_port) {
        upstream->port = upstream->tls ? 443 : 80;
    }
    size_t path_length = rest_length - authority_length;
    while (path_length > 0 && authority[authority_length + path_length - 1] == '/') {
        path_length--;
    }
    if (path_length >= CONFIG_BASE_PATH_BYTES) {
        return "the path is too long";
    }
    config_copy(upstream->base_path, sizeof upstream->base_path, authority + authority_length,
                path_length);
    if (!upstream->tls && !config_host_is_loopback(upstream->host)) {
        return "plain http is only allowed to loopback hosts (127.0.0.0/8, ::1, localhost); "
               "use https";
    }
    return NULL;
}

/* Reads an unsigned decimal integer. Returns 1 for a number (saturated at
 * UINT64_MAX, which no range accepts), 0 for anything that is not one. Bytes
 * keys also take a binary suffix. */
static int config_parse_number(const char *text, size_t length, bool allow_suffix,
                               uint64_t *value) {
    size_t digit_count = 0;
    uint64_t number = 0;
    while (digit_count < length && config_is_digit(text[digit_count])) {
        uint64_t digit = (uint64_t)(text[digit_count] - '0');
        number = number > (UINT64_MAX - digit) / 10 ? UINT64_MAX : number * 10 + digit;
        digit_count++;
    }
    if (digit_count == 0) {
        return 0;
    }
    const char *suffix = text + digit_count;
    size_t suffix_length = length - digit_count;
    uint64_t multiplier;
    if (suffix_length == 0) {
        multiplier = 1;
    } else if (!allow_suffix) {
        return 0;
    } else if (config_bytes_equal(suffix, suffix_length, "k") ||
               config_bytes_equal(suffix, suffix_length, "K") ||
               config_bytes_equal(suffix, suffix_length, "KiB")) {
        multiplier = 1024;
    } else if (config_bytes_equal(suffix, suffix_length, "m") ||
               config_bytes_equal(suffix, suffix_length, "M") ||
               config_bytes_equal(suffix, suffix_length, "MiB")) {
        multiplier = 1024 * 1024;
    } else if (config_bytes_equal(suffix, suffix_length, "g") ||
               config_bytes_equal(suffix, suffix_length, "G") ||
               config_bytes_equal(suffix, suffix_length, "GiB")) {
        multiplier = CONFIG_GIB;
    } else {
        return 0;
    }
    *value = number > UINT64_MAX / multiplier ? UINT64_MAX : number * multiplier;
    return 1;
}

/* ---------------------------------------------------------------------- */
/* Applying one key                                                        */

/* Stores `value` for `key` in the section struct at `target`. Reports bad
 * values at the current line and returns -1. */
/* The next item of a list separated by commas and/or blanks: true with
 * [start, start + length) of value, false at the end. */
static bool config_next_item(const char *value, size_t value_length, size_t *position, size_t *start,
                             size_t *length) {
    size_t at = *position;
    while (at < value_length && (value[at] == ',' || config_is_space(value[at]))) at++;
    size_t first = at;
    while (at < value_length && value[at] != ',' && !config_is_space(value[at])) at++;
    *position = at;
    *start = first;
    *length = at - first;
    return at > first;
}

/* One secret of a secret key: the literal, or (the _env kinds) the
 * environment variable `value` names, checked and copied into
 * destination[key->size]. Never echoes the secret. */
static int config_apply_secret(config_parser_t *parser, const config_key_t *key, const char *label,
                               const char *value, size_t value_length, char *destination) {
    uint32_t line = parser->line_number;
    int echo_length = (int)RW_MIN(value_length, (size_t)CONFIG_ECHO_BYTES_MAX);
    const char *secret = value;
    size_t secret_length = value_length;
    char variable[128];
    if (key->kind == CONFIG_VALUE_SECRET_ENV || key->kind == CONFIG_VALUE_SECRET_ENV_LIST) {
        bool name_ok = value_length > 0 && value_length < sizeof variable && !config_is_digit(value[0]);
        for (size_t i = 0; name_ok && i < value_length; i++) {
            name_ok = config_is_alnum(value[i]) || value[i] == '_';
        }
        if (!name_ok) {
            return config_fail(parser, line, "bad value '%.*s' for '%s': expected an environment variable name",
                               echo_length, value, key->name);
        }
        config_copy(variable, sizeof variable, value, value_length);
        secret = getenv(variable);
        if (secret == NULL) {
            return config_fail(parser, line, "environment variable '%s' (%s of %s) is not set", variable,
                               key->name, label);
        }
        secret_length = strlen(secret);
        if (secret_length >= key->size) {
            return config_fail(parser, line, "environment variable '%s' (%s of %s) is too long (max %u bytes)",
                               variable, key->name, label, (unsigned)(key->size - 1));
        }
        if (!config_secret_is_valid(secret, secret_length)) {
            return config_fail(parser, line,
                               "environment variable '%s' (%s of %s) must be non-empty visible "
                               "ASCII without spaces",
                               variable, key->name, label);
        }
        if (secret_length < key->minimum) {
            return config_fail(parser, line, "environment variable '%s' (%s of %s) is too short (min %u bytes)",
                               variable, key->name, label, (unsigned)key->minimum);
        }
    } else {
        if (secret_length >= key->size) {
            return config_fail(parser, line, "value for '%s' is too long (max %u bytes)", key->name,
                               (unsigned)(key->size - 1));
        }
        if (!config_secret_is_valid(secret, secret_length)) {
            return config_fail(parser, line, "value for '%s' must be visible ASCII without spaces", key->name);
        }
        if (secret_length < key->minimum) {
            return config_fail(parser, line, "value for '%s' is too short (min %u bytes)", key->name,
                               (unsigned)key->minimum);
        }
    }
    config_copy(destination, key->size, secret, secret_length);
    return 0;
}

/* `route = UPSTREAM [UPSTREAM_MODEL] [priority=N] [weight=N]`, the words
 * separated by blanks, into the model's next route; the upstream's name is
 * resolved at the end. */
static int config_apply_route(config_parser_t *parser, config_model_t *model, const char *label, const char *value,
                              size_t value_length) {
    uint32_t line = parser->line_number;
    uint32_t model_index = parser->section_slot - CONFIG_SLOT_MODEL_FIRST;
    RW_ASSERT(model_index < CONFIG_MODELS_MAX);
    const uint32_t *key_lines = parser->key_lines[parser->section_slot];
    uint32_t shorthand_line = RW_MAX(key_lines[CONFIG_MODEL_KEY_UPSTREAM], key_lines[CONFIG_MODEL_KEY_UPSTREAM_MODEL]);
    if (shorthand_line != 0) {
        return config_fail(parser, line, "%s sets both route and upstream/upstream_model (line %u); use one", label,
                           (unsigned)shorthand_line);
    }
    if (model->route_count == CONFIG_ROUTES_MAX) {
        return config_fail(parser, line, "too many routes in %s (max %u)", label, (unsigned)CONFIG_ROUTES_MAX);
    }
    config_route_t *route = &model->routes[model->route_count];
    memset(route, 0, sizeof *route);
    route->weight = 1;
    bool has_model = false, has_priority = false, has_weight = false;
    uint32_t words = 0;
    size_t position = 0;
    while (position < value_length) {
        while (position < value_length && config_is_space(value[position])) position++;
        size_t start = position;
        while (position < value_length && !config_is_space(value[position])) position++;
        if (position == start) break;
        const char *word = value + start;
        size_t length = position - start;
        int echo = (int)RW_MIN(length, (size_t)CONFIG_ECHO_BYTES_MAX);
        words++;
        if (words == 1) {
            if (!config_upstream_name_is_valid(word, length)) {
                return config_fail(parser, line,
                                   "bad route '%.*s': expected an upstream name (1..63 of A-Z a-z 0-9 _ . -) first",
                                   echo, word);
            }
            config_copy(route->upstream_name, sizeof route->upstream_name, word, length);
            continue;
        }
        /* priority=N and weight=N are options; any other second word is
         * the upstream's model name (which may hold '=' itself). */
        bool is_priority = length >= 9 && memcmp(word, "priority=", 9) == 0;
        bool is_weight = length >= 7 && memcmp(word, "weight=", 7) == 0;
        if (!is_priority && !is_weight) {
            if (has_model || has_priority || has_weight) {
                return config_fail(parser, line,
                                   "bad route word '%.*s': expected priority=N or weight=N (the upstream's model "
                                   "name comes second)",
                                   echo, word);
            }
            if (length >= sizeof route->upstream_model || !config_token_is_valid(word, length)) {
                return config_fail(parser, line,
                                   "bad upstream model '%.*s' in a route: use at most %u bytes of printable ASCII "
                                   "without spaces, '\"' or '\\'",
                                   echo, word, (unsigned)(sizeof route->upstream_model - 1));
            }
            config_copy(route->upstream_model, sizeof route->upstream_model, word, length);
            has_model = true;
            continue;
        }
        size_t name_length = is_priority ? 8 : 6;
        const char *equals = word + name_length;
        if ((is_priority && has_priority) || (is_weight && has_weight)) {
            return config_fail(parser, line, "route sets %s twice", is_priority ? "priority" : "weight");
        }
        uint64_t number = 0;
        uint32_t low = is_priority ? 0 : 1;
        uint32_t high = is_priority ? CONFIG_ROUTE_PRIORITY_MAX : CONFIG_ROUTE_WEIGHT_MAX;
        if (config_parse_number(equals + 1, length - name_length - 1, false, &number) == 0 || number < low ||
            number > high) {
            return config_fail(parser, line, "bad route word '%.*s': %s is an integer in %u..%u", echo, word,
                               is_priority ? "priority" : "weight", (unsigned)low, (unsigned)high);
        }
        if (is_priority) {
            route->priority = (uint32_t)number;
            has_priority = true;
        } else {
            route->weight = (uint32_t)number;
            has_weight = true;
        }
    }
    RW_ASSERT(words > 0); /* an empty value was refused before */
    if (!has_model) config_copy_truncated(route->upstream_model, sizeof route->upstream_model, model->name);
    parser->route_lines[model_index][model->route_count] = line;
    model->route_count++;
    return 0;
}

static int config_apply_value(config_parser_t *parser, const config_key_t *key, char *target,
                              const char *value, size_t value_length) {
    uint32_t line = parser->line_number;
    int echo_length = (int)RW_MIN(value_length, (size_t)CONFIG_ECHO_BYTES_MAX);
    char label[CONFIG_MODEL_NAME_BYTES + 16];
    config_section_label(parser, parser->section_slot, label, sizeof label);

    switch (key->kind) {
    case CONFIG_VALUE_INTEGER:
    case CONFIG_VALUE_BYTES: {
        RW_ASSERT(key->size == sizeof(uint32_t));
        bool is_bytes = key->kind == CONFIG_VALUE_BYTES;
        uint64_t number;
        if (config_parse_number(value, value_length, is_bytes, &number) == 0) {
            return config_fail(parser, line, "bad value '%.*s' for '%s': expected %s", echo_length,
                               value, key->name,
                               is_bytes ? "bytes: an integer with optional suffix k, KiB, m, MiB, "
                                          "g or GiB (powers of 1024)"
                                        : "an unsigned decimal integer");
        }
        if (number < key->minimum || number > key->maximum) {
            return config_fail(parser, line, "value '%.*s' for '%s' is out of range (%u..%u)",
                               echo_length, value, key->name, (unsigned)key->minimum,
                               (unsigned)key->maximum);
        }
        uint32_t stored = (uint32_t)number;
        memcpy(target + key->offset, &stored, sizeof stored);
        return 0;
    }
    case CONFIG_VALUE_BOOL: {
        RW_ASSERT(key->size == sizeof(bool));
        bool flag;
        if (config_bytes_equal(value, value_length, "true")) {
            flag = true;
        } else if (config_bytes_equal(value, value_length, "false")) {
            flag = false;
        } else {
            return config_fail(parser, line, "bad value '%.*s' for '%s': expected true or false",
                               echo_length, value, key->name);
        }
        memcpy(target + key->offset, &flag, sizeof flag);
        return 0;
    }
    case CONFIG_VALUE_CHOICE: {
        RW_ASSERT(key->size == sizeof(int) && key->choice_count > 0);
        for (uint32_t index = 0; index < key->choice_count; index++) {
            if (!config_bytes_equal(value, value_length, key->choices[index])) continue;
            int chosen = (int)index;
            memcpy(target + key->offset, &chosen, sizeof chosen);
            return 0;
        }
        return config_fail(parser, line, "bad value '%.*s' for '%s': expected %s", echo_length, value, key->name,
                           key->choices_text);
    }
    case CONFIG_VALUE_ADDRESS: {
        RW_ASSERT(key->size == CONFIG_HOST_BYTES);
        char host[CONFIG_HOST_BYTES];
        uint16_t port = 0;
        bool has_port = false;
        const char *reason = config_parse_authority(value, value_length, host, &port, &has_port);
        if (reason == NULL && !has_port) {
            reason = "missing :PORT";
        }
        if (reason != NULL) {
            return config_fail(parser, line,
                               "bad value '%.*s' for '%s': %s; expected HOST:PORT such as "
                               "127.0.0.1:8080 or [::1]:8080",
                               echo_length, value, key->name, reason);
        }
        config_copy_truncated(target + key->offset, key->size, host);
        memcpy(target + key->port_offset, &port, sizeof port);
        return 0;
    }
    case CONFIG_VALUE_PATH:
    case CONFIG_VALUE_TOKEN:
    case CONFIG_VALUE_HOSTNAME:
        if (value_length >= key->size) {
            return config_fail(parser, line, "value for '%s' is too long (max %u bytes)", key->name,
                               (unsigned)(key->size - 1));
        }
        if (key->kind == CONFIG_VALUE_TOKEN && !config_token_is_valid(value, value_length)) {
            return config_fail(parser, line,
                               "bad value '%.*s' for '%s': use printable ASCII without spaces, "
                               "'\"' or '\\'",
                               echo_length, value, key->name);
        }
        if (key->kind == CONFIG_VALUE_HOSTNAME && !config_host_name_is_valid(value, value_length)) {
            return config_fail(parser, line, "bad value '%.*s' for '%s': expected a host name",
                               echo_length, value, key->name);
        }
        config_copy(target + key->offset, key->size, value, value_length);
        return 0;
    case CONFIG_VALUE_BASE_URL: {
        config_upstream_t *upstream = (config_upstream_t *)(void *)target;
        if (value_length >= sizeof upstream->base_url) {
            return config_fail(parser, line, "value for '%s' is too long (max %u bytes)", key->name,
                               (unsigned)(sizeof upstream->base_url - 1));
        }
        const char *reason = config_parse_base_url(value, value_length, upstream);
        if (reason != NULL) {
            return config_fail(parser, line, "bad base_url '%.*s': %s", echo_length, value, reason);
        }
        config_copy(upstream->base_url, sizeof upstream->base_url, value, value_length);
        return 0;
    }
    case CONFIG_VALUE_SECRET:
    case CONFIG_VALUE_SECRET_ENV:
    case CONFIG_VALUE_SECRET_LIST:
    case CONFIG_VALUE_SECRET_ENV_LIST: {
        /* The secret itself is never echoed in an error. */
        const config_section_spec_t *spec = &config_sections[parser->section_kind];
        RW_ASSERT(key->pair_index < spec->key_count);
        const config_key_t *other = &spec->keys[key->pair_index];
        RW_ASSERT(other->pair_index == (uint32_t)(key - spec->keys));
        uint32_t other_line = parser->key_lines[parser->section_slot][key->pair_index];
        if (other_line != 0) {
            bool literal = key->kind == CONFIG_VALUE_SECRET || key->kind == CONFIG_VALUE_SECRET_LIST;
            const char *literal_name = literal ? key->name : other->name;
            const char *env_name = literal ? other->name : key->name;
            return config_fail(parser, line, "%s sets both %s and %s (line %u); use one", label,
                               literal_name, env_name, (unsigned)other_line);
        }
        if (key->kind == CONFIG_VALUE_SECRET || key->kind == CONFIG_VALUE_SECRET_ENV) {
            if (config_apply_secret(parser, key, label, value, value_length, target + key->offset) != 0) return -1;
        } else {
            uint32_t count = 0;
            size_t position = 0, start = 0, item_length = 0;
            while (config_next_item(value, value_length, &position, &start, &item_length)) {
                if (count == key->items_max) {
                    return config_fail(parser, line, "too many values for '%s' (max %u)", key->name,
                                       (unsigned)key->items_max);
                }
                char *item = target + key->offset + (size_t)count * key->size;
                if (config_apply_secret(parser, key, label, value + start, item_length, item) != 0) return -1;
                count++;
            }
            RW_ASSERT(count > 0);
            memcpy(target + key->count_offset, &count, sizeof count);
        }
        bool known = true;
        memcpy(target + key->flag_offset, &known, sizeof known);
        return 0;
    }
    case CONFIG_VALUE_MONEY: {
        RW_ASSERT(key->size == sizeof(int64_t));
        int64_t micros = 0;
        switch (ledger_parse_money(value, value_length, &micros)) {
        case LEDGER_MONEY_OK:
            RW_ASSERT(micros >= 0 && micros <= LEDGER_MONEY_MICROS_MAX);
            memcpy(target + key->offset, &micros, sizeof micros);
            return 0;
        case LEDGER_MONEY_SYNTAX:
            return config_fail(parser, line,
                               "bad value '%.*s' for '%s': expected a non-negative decimal amount "
                               "such as 0.25",
                               echo_length, value, key->name);
        case LEDGER_MONEY_PRECISION:
            return config_fail(parser, line,
                               "bad value '%.*s' for '%s': at most 6 decimal places (0.000001 is "
                               "the smallest amount)",
                               echo_length, value, key->name);
        case LEDGER_MONEY_RANGE:
            return config_fail(parser, line, "value '%.*s' for '%s' is out of range (0..%lld)",
                               echo_length, value, key->name,
                               (long long)(LEDGER_MONEY_MICROS_MAX / LEDGER_MICROS_PER_UNIT));
        }
        RW_ASSERT(!"unknown money result");
        return -1;
    }
    case CONFIG_VALUE_UPSTREAM_NAME: {
        RW_ASSERT(parser->section_slot >= CONFIG_SLOT_MODEL_FIRST && key->size == CONFIG_UPSTREAM_NAME_BYTES);
        if (!config_upstream_name_is_valid(value, value_length)) {
            return config_fail(parser, line,
                               "bad value '%.*s' for '%s': expected an upstream name "
                               "(1..63 of A-Z a-z 0-9 _ . -)",
                               echo_length, value, key->name);
        }
        config_copy(target + key->offset, key->size, value, value_length);
        return 0;
    }
    case CONFIG_VALUE_ROUTE:
        return config_apply_route(parser, (config_model_t *)(void *)target, label, value, value_length);
    case CONFIG_VALUE_CIDR_LIST: {
        /* Items separated by commas and/or blanks; at most the array's length. */
        RW_ASSERT(key->size % sizeof(address_cidr_t) == 0);
        uint32_t capacity = (uint32_t)(key->size / sizeof(address_cidr_t));
        address_cidr_t *list = (address_cidr_t *)(void *)(target + key->offset);
        uint32_t count = 0;
        size_t position = 0, start = 0, item_length = 0;
        while (config_next_item(value, value_length, &position, &start, &item_length)) {
            int item_echo = (int)RW_MIN(item_length, (size_t)CONFIG_ECHO_BYTES_MAX);
            if (count == capacity) {
                return config_fail(parser, line, "too many ranges for '%s' (max %u)", key->name, (unsigned)capacity);
            }
            if (!address_cidr_parse(value + start, item_length, &list[count])) {
                return config_fail(parser, line,
                                   "bad range '%.*s' for '%s': expected an IPv4 or IPv6 address, optionally "
                                   "with /PREFIX, such as 10.0.0.0/8 or ::1",
                                   item_echo, value + start, key->name);
            }
            count++;
        }
        memcpy(target + key->count_offset, &count, sizeof count);
        return 0;
    }
    case CONFIG_VALUE_TIER_NAME: {
        if (!config_tier_name_is_valid(value, value_length)) {
            return config_fail(parser, line,
                               "bad value '%.*s' for '%s': expected a tier name (1..31 of A-Z a-z 0-9 _ . -)",
                               echo_length, value, key->name);
        }
        config_copy(target + key->offset, key->size, value, value_length);
        return 0;
    }
    }
    RW_ASSERT(!"unknown value kind");
    return -1;
}

/* ---------------------------------------------------------------------- */
/* Lines                                                                   */

/* What sets the two named sections, [upstream NAME] and [model NAME], apart
 * when one more is opened. */
typedef struct config_named_sections {
    const char *kind;                                      /* as in the section header */
    bool (*name_is_valid)(const char *name, size_t length);
    const char *name_rule;                                 /* how to write a valid name, for the error */
    uint32_t count_max;
    uint32_t slot_first;                                   /* the i-th one's line: section_lines[slot_first + i] */
    uint32_t (*count)(const config_t *config);             /* how many were opened so far */
    const char *(*name_at)(const config_t *config, uint32_t index);
} config_named_sections_t;

static bool config_model_name_is_valid(const char *name, size_t length) {
    return length < CONFIG_MODEL_NAME_BYTES && config_token_is_valid(name, length);
}

static uint32_t config_upstream_count(const config_t *config) {
    return config->upstream_count;
}

static const char *config_upstream_name_at(const config_t *config, uint32_t index) {
    return config->upstreams[index].name;
}

static uint32_t config_model_count(const config_t *config) {
    return config->model_count;
}

static const char *config_model_name_at(const config_t *config, uint32_t index) {
    return config->models[index].name;
}

static const config_named_sections_t config_upstream_sections = {
    .kind = "upstream",
    .name_is_valid = config_upstream_name_is_valid,
    .name_rule = "use 1..63 of A-Z a-z 0-9 _ . -",
    .count_max = CONFIG_UPSTREAMS_MAX,
    .slot_first = CONFIG_SLOT_UPSTREAM_FIRST,
    .count = config_upstream_count,
    .name_at = config_upstream_name_at,
};

static const config_named_sections_t config_model_sections = {
    .kind = "model",
    .name_is_valid = config_model_name_is_valid,
    .name_rule = "use 1..127 printable ASCII bytes without spaces, '\"' or '\\'",
    .count_max = CONFIG_MODELS_MAX,
    .slot_first = CONFIG_SLOT_MODEL_FIRST,
    .count = config_model_count,
    .name_at = config_model_name_at,
};

static uint32_t config_tier_count(const config_t *config) {
    return config->tier_count;
}

static const char *config_tier_name_at(const config_t *config, uint32_t index) {
    return config->tiers[index].name;
}

static const config_named_sections_t config_tier_sections = {
    .kind = "tier",
    .name_is_valid = config_tier_name_is_valid,
    .name_rule = "use 1..31 of A-Z a-z 0-9 _ . -",
    .count_max = CONFIG_TIERS_MAX,
    .slot_first = CONFIG_SLOT_TIER_FIRST,
    .count = config_tier_count,
    .name_at = config_tier_name_at,
};

/* Whether one more section of `sections` named `name` may be opened: refuses
 * (through config_fail, so -1) a name that breaks the rule, a name an
 * earlier section of the kind took (saying on which line) and a section past
 * the kind's cap. Returns 0 when the caller may add it. */
static int config_named_section_check(config_parser_t *parser, uint32_t line, const config_named_sections_t *sections,
                                      const char *name, size_t name_length) {
    const config_t *config = parser->config;
    int name_echo = (int)RW_MIN(name_length, (size_t)CONFIG_ECHO_BYTES_MAX);
    if (!sections->name_is_valid(name, name_length)) {
        return config_fail(parser, line, "bad %s name '%.*s': %s", sections->kind, name_echo, name,
                           sections->name_rule);
    }
    uint32_t count = sections->count(config);
    for (uint32_t i = 0; i < count; i++) {
        if (config_bytes_equal(name, name_length, sections->name_at(config, i))) {
            return config_fail(parser, line, "duplicate section [%s %.*s] (first on line %u)", sections->kind,
                               name_echo, name, (unsigned)parser->section_lines[sections->slot_first + i]);
        }
    }
    if (count == sections->count_max) {
        return config_fail(parser, line, "too many [%s] sections (max %u)", sections->kind,
                           (unsigned)sections->count_max);
    }
    return 0;
}

/* Handles "[kind]" or "[kind NAME]" (the comment already cut, `content`
 * being the text between the brackets): opens the section or reports why
 * not. */
static int config_open_section(config_parser_t *parser, const char *content, size_t length) {
    config_t *config = parser->config;
    uint32_t line = parser->line_number;
    size_t start = 0;
    while (start < length && config_is_space(content[start])) {
        start++;
    }
    while (length > start && config_is_space(content[length - 1])) {
        length--;
    }
    size_t kind_end = start;
    while (kind_end < length && !config_is_space(content[kind_end])) {
        kind_end++;
    }
    size_t name_start = kind_end;
    while (name_start < length && config_is_space(content[name_start])) {
        name_start++;
    }
    const char *kind_text = content + start;
    size_t kind_length = kind_end - start;
    const char *name = content + name_start;
    size_t name_length = length - name_start;
    int echo_length = (int)RW_MIN(length - start, (size_t)CONFIG_ECHO_BYTES_MAX);

    config_section_kind_t kind = CONFIG_SECTION_NONE;
    for (uint32_t k = CONFIG_SECTION_SERVER; k <= CONFIG_SECTION_TIER; k++) {
        if (config_bytes_equal(kind_text, kind_length, config_sections[k].name)) {
            kind = (config_section_kind_t)k;
        }
    }
    if (kind == CONFIG_SECTION_NONE) {
        return config_fail(parser, line, "unknown section [%.*s]", echo_length, kind_text);
    }
    const config_section_spec_t *spec = &config_sections[kind];
    if (!spec->named) {
        if (name_length > 0) {
            return config_fail(parser, line, "section [%s] takes no name", spec->name);
        }
        uint32_t slot = (uint32_t)kind - (uint32_t)CONFIG_SECTION_SERVER;
        RW_ASSERT(slot < CONFIG_SLOT_UPSTREAM_FIRST);
        if (parser->section_lines[slot] != 0) {
            return config_fail(parser, line, "duplicate section [%s] (first on line %u)", spec->name,
                               (unsigned)parser->section_lines[slot]);
        }
        parser->section_lines[slot] = line;
        parser->section_kind = kind;
        parser->section_slot = slot;
        return 0;
    }
    if (name_length == 0) {
        return config_fail(parser, line, "section [%s] needs a name: [%s NAME]", spec->name,
                           spec->name);
    }
    if (kind == CONFIG_SECTION_UPSTREAM) {
        if (config_named_section_check(parser, line, &config_upstream_sections, name, name_length) != 0) return -1;
        uint32_t index = config->upstream_count++;
        config_upstream_t *upstream = &config->upstreams[index];
        config_copy(upstream->name, sizeof upstream->name, name, name_length);
        upstream->verify = true;
        parser->section_slot = CONFIG_SLOT_UPSTREAM_FIRST + index;
    } else if (kind == CONFIG_SECTION_TIER) {
        if (config_named_section_check(parser, line, &config_tier_sections, name, name_length) != 0) return -1;
        uint32_t index = config->tier_count++;
        config_copy(config->tiers[index].name, sizeof config->tiers[index].name, name, name_length);
        parser->section_slot = CONFIG_SLOT_TIER_FIRST + index;
    } else {
        RW_ASSERT(kind == CONFIG_SECTION_MODEL);
        if (config_named_section_check(parser, line, &config_model_sections, name, name_length) != 0) return -1;
        uint32_t index = config->model_count++;
        config_copy(config->models[index].name, sizeof config->models[index].name, name,
                    name_length);
        config->models[index].max_output_tokens = CONFIG_MAX_OUTPUT_TOKENS_DEFAULT;
        parser->section_slot = CONFIG_SLOT_MODEL_FIRST + index;
    }
    parser->section_lines[parser->section_slot] = line;
    parser->section_kind = kind;
    return 0;
}

/* Handles "key = value" in the current section: finds the key, refuses a
 * second setting, extracts the (optionally quoted) value and applies it. */
static int config_set_key(config_parser_t *parser, const char *text, size_t length) {
    uint32_t line = parser->line_number;
    size_t key_length = 0;
    while (key_length < length && (config_is_alnum(text[key_length]) || text[key_length] == '_')) {
        key_length++;
    }
    if (key_length == 0) {
        return config_fail(parser, line, "expected 'key = value', '[section]' or a comment");
    }
    int key_echo = (int)RW_MIN(key_length, (size_t)CONFIG_ECHO_BYTES_MAX);
    size_t position = key_length;
    while (position < length && config_is_space(text[position])) {
        position++;
    }
    if (position == length || text[position] != '=') {
        return config_fail(parser, line, "expected '=' after '%.*s'", key_echo, text);
    }
    position++;
    if (parser->section_kind == CONFIG_SECTION_NONE) {
        return config_fail(parser, line, "key '%.*s' outside of any section", key_echo, text);
    }
    char label[CONFIG_MODEL_NAME_BYTES + 16];
    config_section_label(parser, parser->section_slot, label, sizeof label);
    const config_section_spec_t *spec = &config_sections[parser->section_kind];
    uint32_t key_index = spec->key_count;
    for (uint32_t i = 0; i < spec->key_count; i++) {
        if (config_bytes_equal(text, key_length, spec->keys[i].name)) {
            key_index = i;
        }
    }
    if (key_index == spec->key_count) {
        return config_fail(parser, line, "unknown key '%.*s' in %s", key_echo, text, label);
    }
    const config_key_t *key = &spec->keys[key_index];
    uint32_t *key_line = &parser->key_lines[parser->section_slot][key_index];
    if (*key_line != 0 && !key->repeatable) {
        return config_fail(parser, line, "duplicate key '%s' in %s (first on line %u)", key->name,
                           label, (unsigned)*key_line);
    }
    if (parser->section_kind == CONFIG_SECTION_MODEL &&
        (key_index == CONFIG_MODEL_KEY_UPSTREAM || key_index == CONFIG_MODEL_KEY_UPSTREAM_MODEL)) {
        uint32_t route_line = parser->key_lines[parser->section_slot][CONFIG_MODEL_KEY_ROUTE];
        if (route_line != 0) {
            return config_fail(parser, line, "%s sets both route and upstream/upstream_model (line %u); use one",
                               label, (unsigned)route_line);
        }
    }

    while (position < length && config_is_space(text[position])) {
        position++;
    }
    const char *value = text + position;
    size_t value_length;
    if (position < length && text[position] == '"') {
        const char *close = memchr(value + 1, '"', length - position - 1);
        if (close == NULL) {
            return config_fail(parser, line, "unterminated quoted value for '%s'", key->name);
        }
        value++;
        value_length = (size_t)(close - value);
        size_t after = (size_t)(close - text) + 1;
        while (after < length && config_is_space(text[after])) {
            after++;
        }
        if (after < length && text[after] != '#') {
            return config_fail(parser, line, "unexpected text after the quoted value for '%s'",
                               key->name);
        }
    } else {
        value_length = length - position;
        for (size_t i = 1; i < value_length; i++) {
            if (value[i] == '#' && config_is_space(value[i - 1])) {
                value_length = i;
                break;
            }
        }
        if (value_length > 0 && value[0] == '#') {
            value_length = 0; /* "key = # comment": no value */
        }
        while (value_length > 0 && config_is_space(value[value_length - 1])) {
            value_length--;
        }
    }
    if (value_length == 0) {
        return config_fail(parser, line, "missing value for '%s'", key->name);
    }
    for (size_t i = 0; i < value_length; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < ' ' || c == 0x7f) {
            return config_fail(parser, line, "control character in the value for '%s'", key->name);
        }
    }
    if (*key_line == 0) *key_line = line; /* a repeated key keeps its first line */

    char *target;
    if (parser->section_kind == CONFIG_SECTION_UPSTREAM) {
        target = (char *)&parser->config->upstreams[parser->section_slot - CONFIG_SLOT_UPSTREAM_FIRST];
    } else if (parser->section_kind == CONFIG_SECTION_MODEL) {
        target = (char *)&parser->config->models[parser->section_slot - CONFIG_SLOT_MODEL_FIRST];
    } else if (parser->section_kind == CONFIG_SECTION_TIER) {
        target = (char *)&parser->config->tiers[parser->section_slot - CONFIG_SLOT_TIER_FIRST];
    } else if (parser->section_kind == CONFIG_SECTION_RATE_LIMITS) {
        target = (char *)parser;
    } else {
        target = (char *)parser->config;
    }
    return config_apply_value(parser, key, target, value, value_length);
}

/* Handles the complete line in parser->line (without its "\n"): blank,
 * comment, section header or key. */
static int config_parse_line(config_parser_t *parser) {
    const char *text = parser->line;
    size_t length = parser->line_length;
    if (length > 0 && text[length - 1] == '\r') {
        length--;
    }
    size_t start = 0;
    while (start < length && config_is_space(text[start])) {
        start++;
    }
    if (start == length || text[start] == '#') {
        return 0;
    }
    text += start;
    length -= start;
    if (text[0] != '[') {
        return config_set_key(parser, text, length);
    }
    for (size_t i = 1; i < length; i++) {
        if (text[i] == '#' && config_is_space(text[i - 1])) {
            length = i;
            break;
        }
    }
    while (length > 0 && config_is_space(text[length - 1])) {
        length--;
    }
    if (length < 2 || text[length - 1] != ']') {
        return config_fail(parser, parser->line_number, "expected ']' at the end of the section header");
    }
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < ' ' && c != '\t') {
            return config_fail(parser, parser->line_number, "control character in the section header");
        }
    }
    return config_open_section(parser, text + 1, length - 2);
}

/* ---------------------------------------------------------------------- */
/* Validation of the whole                                                 */

static int config_compare_models(const config_t *config, uint16_t a, uint16_t b) {
    return strcmp(config->models[a].name, config->models[b].name);
}

/* Sorts model indexes by name (insertion sort: at most 256, once per load). */
static void config_build_model_index(config_t *config) {
    for (uint32_t i = 0; i < config->model_count; i++) {
        uint16_t current = (uint16_t)i;
        uint32_t j = i;
        while (j > 0 && config_compare_models(config, config->models_by_name[j - 1], current) > 0) {
            config->models_by_name[j] = config->models_by_name[j - 1];
            j--;
        }
        config->models_by_name[j] = current;
    }
    for (uint32_t i = 1; i < config->model_count; i++) {
        RW_ASSERT(config_compare_models(config, config->models_by_name[i - 1],
                                        config->models_by_name[i]) < 0);
    }
}

static bool config_host_is_wildcard(const char *host) {
    return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

/* Checks what single lines cannot: required keys, https-only keys, model →
 * upstream references, limits that depend on each other; then fills the
 * defaults that depend on other values. */
static int config_validate(config_parser_t *parser) {
    config_t *config = parser->config;
    char label[CONFIG_MODEL_NAME_BYTES + 16];

    for (uint32_t i = 0; i < config->upstream_count; i++) {
        uint32_t slot = CONFIG_SLOT_UPSTREAM_FIRST + i;
        const uint32_t *key_lines = parser->key_lines[slot];
        config_upstream_t *upstream = &config->upstreams[i];
        config_section_label(parser, slot, label, sizeof label);
        if (key_lines[CONFIG_UPSTREAM_KEY_BASE_URL] == 0) {
            return config_fail(parser, parser->section_lines[slot],
                               "missing required key 'base_url' in %s", label);
        }
        static const uint32_t tls_only_keys[] = {
            CONFIG_UPSTREAM_KEY_CA_FILE, CONFIG_UPSTREAM_KEY_VERIFY, CONFIG_UPSTREAM_KEY_SNI};
        for (uint32_t k = 0; k < RW_ARRAY_LENGTH(tls_only_keys); k++) {
            uint32_t key_index = tls_only_keys[k];
            if (!upstream->tls && key_lines[key_index] != 0) {
                return config_fail(parser, key_lines[key_index],
                                   "key '%s' in %s needs an https base_url",
                                   config_upstream_keys[key_index].name, label);
            }
        }
        if (upstream->connect_ms == 0) {
            upstream->connect_ms = config->upstream_connect_ms;
        }
        if (upstream->first_byte_ms == 0) {
            upstream->first_byte_ms = config->upstream_first_byte_ms;
        }
        if (upstream->idle_ms == 0) {
            upstream->idle_ms = config->upstream_idle_ms;
        }
    }

    for (uint32_t i = 0; i < config->model_count; i++) {
        uint32_t slot = CONFIG_SLOT_MODEL_FIRST + i;
        const uint32_t *key_lines = parser->key_lines[slot];
        config_model_t *model = &config->models[i];
        config_section_label(parser, slot, label, sizeof label);
        if (key_lines[CONFIG_MODEL_KEY_UPSTREAM] != 0) {
            RW_ASSERT(model->route_count == 0);
            config_route_t *only = &model->routes[0];
            if (key_lines[CONFIG_MODEL_KEY_UPSTREAM_MODEL] == 0) {
                config_copy_truncated(only->upstream_model, sizeof only->upstream_model, model->name);
            }
            only->priority = 0;
            only->weight = 1;
            model->route_count = 1;
            parser->route_lines[i][0] = key_lines[CONFIG_MODEL_KEY_UPSTREAM];
        } else if (key_lines[CONFIG_MODEL_KEY_UPSTREAM_MODEL] != 0) {
            return config_fail(parser, key_lines[CONFIG_MODEL_KEY_UPSTREAM_MODEL],
                               "upstream_model in %s needs upstream (or use route)", label);
        }
        if (model->route_count == 0) {
            return config_fail(parser, parser->section_lines[slot],
                               "missing required key 'upstream' (or 'route') in %s", label);
        }
        for (uint32_t r = 0; r < model->route_count; r++) {
            config_route_t *route = &model->routes[r];
            uint32_t route_line = parser->route_lines[i][r];
            uint32_t found = config->upstream_count;
            for (uint32_t u = 0; u < config->upstream_count; u++) {
                if (strcmp(config->upstreams[u].name, route->upstream_name) == 0) found = u;
            }
            if (found == config->upstream_count) {
                return config_fail(parser, route_line, "unknown upstream '%s' in %s", route->upstream_name, label);
            }
            route->upstream_index = found;
            for (uint32_t earlier = 0; earlier < r; earlier++) {
                const config_route_t *other = &model->routes[earlier];
                if (other->upstream_index == found && strcmp(other->upstream_model, route->upstream_model) == 0) {
                    return config_fail(parser, route_line, "%s repeats the route to '%s' model '%s' (line %u)", label,
                                       route->upstream_name, route->upstream_model,
                                       (unsigned)parser->route_lines[i][earlier]);
                }
            }
        }
        const char *upstream_name = model->routes[0].upstream_name;
        bool by_header = model->affinity == CONFIG_AFFINITY_HEADER;
        bool has_header = key_lines[CONFIG_MODEL_KEY_AFFINITY_HEADER] != 0;
        if (by_header != has_header) {
            return config_fail(parser, by_header ? key_lines[CONFIG_MODEL_KEY_AFFINITY] : key_lines[CONFIG_MODEL_KEY_AFFINITY_HEADER],
                               "affinity = header and affinity_header go together in %s", label);
        }
        if (key_lines[CONFIG_MODEL_KEY_OWNED_BY] == 0) {
            config_copy_truncated(model->owned_by, sizeof model->owned_by, upstream_name);
        }
        if (key_lines[CONFIG_MODEL_KEY_CACHED_INPUT_PRICE] == 0) {
            model->cached_input_price_micros = model->input_price_micros;
        }
        RW_ASSERT(model->max_output_tokens >= 1);
    }
    if (config->model_count == 0) {
        return config_fail(parser, 0, "at least one [model NAME] section is required");
    }

    const uint32_t *limits_lines = parser->key_lines[CONFIG_SLOT_LIMITS];
    if (config->streams_per_thread > config->connections_per_thread) {
        return config_fail(parser,
                           RW_MAX(limits_lines[CONFIG_LIMITS_KEY_STREAMS],
                                  limits_lines[CONFIG_LIMITS_KEY_CONNECTIONS]),
                           "streams_per_thread (%u) must not exceed connections_per_thread (%u)",
                           (unsigned)config->streams_per_thread,
                           (unsigned)config->connections_per_thread);
    }
    if (config->header_bytes_max > config->request_buffer_bytes) {
        return config_fail(parser,
                           RW_MAX(limits_lines[CONFIG_LIMITS_KEY_HEADER_BYTES],
                                  limits_lines[CONFIG_LIMITS_KEY_REQUEST_BUFFER_BYTES]),
                           "header_bytes_max (%u) must not exceed request_buffer_bytes (%u)",
                           (unsigned)config->header_bytes_max,
                           (unsigned)config->request_buffer_bytes);
    }
    const uint32_t *server_lines = parser->key_lines[CONFIG_SLOT_SERVER];
    bool same_host = strcmp(config->listen_host, config->admin_listen_host) == 0 ||
                     config_host_is_wildcard(config->listen_host) ||
                     config_host_is_wildcard(config->admin_listen_host);
    if (config->listen_port == config->admin_listen_port && same_host) {
        return config_fail(parser,
                           RW_MAX(server_lines[CONFIG_SERVER_KEY_LISTEN],
                                  server_lines[CONFIG_SERVER_KEY_ADMIN_LISTEN]),
                           "admin_listen (%s port %u) overlaps listen (%s port %u)",
                           config->admin_listen_host, (unsigned)config->admin_listen_port,
                           config->listen_host, (unsigned)config->listen_port);
    }

    const uint32_t *accounts_lines = parser->key_lines[CONFIG_SLOT_ACCOUNTS];
    if (config->login_backoff_base_s > config->login_backoff_max_s) {
        return config_fail(parser,
                           RW_MAX(accounts_lines[CONFIG_ACCOUNTS_KEY_BACKOFF_BASE],
                                  accounts_lines[CONFIG_ACCOUNTS_KEY_BACKOFF_MAX]),
                           "login_backoff_base_s (%u) must not exceed login_backoff_max_s (%u)",
                           (unsigned)config->login_backoff_base_s, (unsigned)config->login_backoff_max_s);
    }

    const uint32_t *rate_lines = parser->key_lines[CONFIG_SLOT_RATE_LIMITS];
    const char *tier_names[2] = {parser->key_tier_name, parser->account_tier_name};
    uint32_t *tier_indexes[2] = {&config->key_tier, &config->account_tier};
    for (uint32_t k = 0; k < 2; k++) {
        *tier_indexes[k] = CONFIG_TIER_NONE;
        if (rate_lines[k] == 0) continue;
        *tier_indexes[k] = config_find_tier(config, tier_names[k]);
        if (*tier_indexes[k] == CONFIG_TIER_NONE) {
            return config_fail(parser, rate_lines[k], "unknown tier '%s' for '%s' in [rate_limits]", tier_names[k],
                               config_rate_limits_keys[k].name);
        }
    }

    config_build_model_index(config);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Public interface                                                        */

uint32_t config_find_tier(const config_t *config, const char *name) {
    for (uint32_t index = 0; index < config->tier_count; index++) {
        if (strcmp(config->tiers[index].name, name) == 0) return index;
    }
    return CONFIG_TIER_NONE;
}

const char *config_limit_name(config_limit_kind_t kind) {
    RW_ASSERT((uint32_t)kind < CONFIG_LIMIT_COUNT);
    return config_tier_keys[kind].name;
}

void config_set_defaults(config_t *config) {
    RW_ASSERT(config != NULL);
    memset(config, 0, sizeof *config);

    config_copy_truncated(config->listen_host, sizeof config->listen_host, "127.0.0.1");
    config->listen_port = 8080;
    config->threads = 0;
    config_copy_truncated(config->data_dir, sizeof config->data_dir, "./data");
    config_copy_truncated(config->admin_listen_host, sizeof config->admin_listen_host, "127.0.0.1");
    config->admin_listen_port = 8081;

    config->connections_per_thread = 4096;
    config->streams_per_thread = 1024;
    config->header_bytes_max = 16384;
    config->body_bytes_max = 10485760;
    config->request_buffer_bytes = 65536;
    config->large_bodies_per_thread = 4;
    config->stream_buffer_bytes = 16384;
    config->upstream_connections_per_thread = 256;
    config->drain_bytes_max = 1048576;

    config->header_ms = 10000;
    config->body_ms = 60000;
    config->keepalive_idle_ms = 75000;
    config->upstream_connect_ms = 5000;
    config->upstream_first_byte_ms = 120000;
    config->upstream_idle_ms = 120000;
    config->drain_ms = 30000;
    config->upstream_keepalive_ms = 60000;

    config->client_disconnect = CONFIG_DISCONNECT_DRAIN;

    config->attempts_max = 3;
    config->failover_ms = 30000;
    config->breaker_failures = 5;
    config->breaker_error_percent = 50;
    config->breaker_window_ms = 10000;
    config->breaker_window_requests_min = 20;
    config->breaker_open_ms = 5000;
    config->key_refused_retry_ms = 60000;

    config->billing_mode = CONFIG_BILLING_ON;
    config->sync_interval_ms = 10;
    config->hold_record_after_ms = 2000;
    config->store_wait_requests_max = 1024;
    config->store_wait_ms = 5000;
    config->free_grant_micros = 1 * LEDGER_MICROS_PER_UNIT;
    config->users_max = 100000;
    config->keys_max = 262144;

    config->has_admin_token = false;
    config->has_jwt_secret = false;
    config->jwt_ttl_s = 86400;

    config->registration = CONFIG_REGISTRATION_OPEN;
    config->registrations_per_ip_per_hour = 10;
    config->registrations_per_ip_per_day = 50;
    config->login_failures_per_ip_per_minute = 10;
    config->login_failures_before_backoff = 5;
    config->login_backoff_base_s = 1;
    config->login_backoff_max_s = 900;
    config->password_jobs_max = 64;
    config->tracked_clients_max = 16384;

    config->upstream_count = 0;
    config->model_count = 0;
}

/* The key-index constants used by validation must name the keys they mean;
 * a reordered table would otherwise point errors at the wrong key. */
static void config_check_key_tables(void) {
    RW_ASSERT(strcmp(config_server_keys[CONFIG_SERVER_KEY_LISTEN].name, "listen") == 0);
    RW_ASSERT(strcmp(config_server_keys[CONFIG_SERVER_KEY_ADMIN_LISTEN].name, "admin_listen") == 0);
    RW_ASSERT(strcmp(config_limits_keys[CONFIG_LIMITS_KEY_CONNECTIONS].name,
                     "connections_per_thread") == 0);
    RW_ASSERT(strcmp(config_limits_keys[CONFIG_LIMITS_KEY_STREAMS].name, "streams_per_thread") == 0);
    RW_ASSERT(strcmp(config_limits_keys[CONFIG_LIMITS_KEY_HEADER_BYTES].name, "header_bytes_max") == 0);
    RW_ASSERT(strcmp(config_limits_keys[CONFIG_LIMITS_KEY_REQUEST_BUFFER_BYTES].name,
                     "request_buffer_bytes") == 0);
    RW_ASSERT(strcmp(config_upstream_keys[CONFIG_UPSTREAM_KEY_BASE_URL].name, "base_url") == 0);
    RW_ASSERT(strcmp(config_upstream_keys[CONFIG_UPSTREAM_KEY_API_KEY].name, "api_key") == 0);
    RW_ASSERT(strcmp(config_upstream_keys[CONFIG_UPSTREAM_KEY_API_KEY_ENV].name, "api_key_env") == 0);
    RW_ASSERT(strcmp(config_upstream_keys[CONFIG_UPSTREAM_KEY_CA_FILE].name, "ca_file") == 0);
    RW_ASSERT(strcmp(config_upstream_keys[CONFIG_UPSTREAM_KEY_VERIFY].name, "verify") == 0);
    RW_ASSERT(strcmp(config_upstream_keys[CONFIG_UPSTREAM_KEY_SNI].name, "sni") == 0);
    RW_ASSERT(strcmp(config_model_keys[CONFIG_MODEL_KEY_UPSTREAM].name, "upstream") == 0);
    RW_ASSERT(strcmp(config_model_keys[CONFIG_MODEL_KEY_UPSTREAM_MODEL].name, "upstream_model") == 0);
    RW_ASSERT(strcmp(config_model_keys[CONFIG_MODEL_KEY_OWNED_BY].name, "owned_by") == 0);
    RW_ASSERT(strcmp(config_model_keys[CONFIG_MODEL_KEY_ROUTE].name, "route") == 0);
    RW_ASSERT(strcmp(config_model_keys[CONFIG_MODEL_KEY_AFFINITY].name, "affinity") == 0);
    RW_ASSERT(strcmp(config_model_keys[CONFIG_MODEL_KEY_AFFINITY_HEADER].name, "affinity_header") == 0);
    RW_ASSERT(strcmp(config_model_keys[CONFIG_MODEL_KEY_INPUT_PRICE].name, "input_price") == 0);
    RW_ASSERT(strcmp(config_model_keys[CONFIG_MODEL_KEY_CACHED_INPUT_PRICE].name,
                     "cached_input_price") == 0);
    RW_ASSERT(strcmp(config_accounts_keys[CONFIG_ACCOUNTS_KEY_BACKOFF_BASE].name, "login_backoff_base_s") == 0);
    RW_ASSERT(strcmp(config_accounts_keys[CONFIG_ACCOUNTS_KEY_BACKOFF_MAX].name, "login_backoff_max_s") == 0);
    RW_ASSERT(strcmp(config_auth_keys[CONFIG_AUTH_KEY_ADMIN_TOKEN].name, "admin_token") == 0);
    RW_ASSERT(strcmp(config_auth_keys[CONFIG_AUTH_KEY_ADMIN_TOKEN_ENV].name, "admin_token_env") == 0);
    RW_ASSERT(strcmp(config_auth_keys[CONFIG_AUTH_KEY_JWT_SECRET].name, "jwt_secret") == 0);
    RW_ASSERT(strcmp(config_auth_keys[CONFIG_AUTH_KEY_JWT_SECRET_ENV].name, "jwt_secret_env") == 0);
}

void config_parser_begin(config_parser_t *parser, config_t *config, const char *source_name,
                         char *error, size_t error_size) {
    RW_ASSERT(parser != NULL && config != NULL && source_name != NULL);
    config_check_key_tables();
    RW_ASSERT(error != NULL && error_size > 0);
    memset(parser, 0, sizeof *parser);
    parser->config = config;
    parser->error = error;
    parser->error_size = error_size;
    parser->line_number = 1;
    parser->section_kind = CONFIG_SECTION_NONE;
    error[0] = '\0';
    config_set_defaults(config);
    config_copy_truncated(config->source_path, sizeof config->source_path, source_name);
}

int config_parser_feed(config_parser_t *parser, const char *bytes, size_t length) {
    RW_ASSERT(!parser->finished);
    RW_ASSERT(bytes != NULL || length == 0);
    if (parser->failed) {
        return -1;
    }
    for (size_t i = 0; i < length; i++) {
        char c = bytes[i];
        if (c == '\n') {
            if (config_parse_line(parser) != 0) {
                return -1;
            }
            parser->line_number++;
            parser->line_length = 0;
            continue;
        }
        if (c == '\0') {
            return config_fail(parser, parser->line_number, "NUL byte in the text");
        }
        if (parser->line_length == CONFIG_LINE_BYTES_MAX - 1) {
            return config_fail(parser, parser->line_number, "line is longer than %u bytes",
                               (unsigned)(CONFIG_LINE_BYTES_MAX - 1));
        }
        parser->line[parser->line_length++] = c;
    }
    return 0;
}

int config_parser_finish(config_parser_t *parser) {
    RW_ASSERT(!parser->finished);
    parser->finished = true;
    if (parser->failed) {
        return -1;
    }
    if (parser->line_length > 0 && config_parse_line(parser) != 0) {
        return -1;
    }
    if (config_validate(parser) != 0) {
        return -1;
    }
    RW_ASSERT(parser->config->model_count >= 1);
    RW_ASSERT(parser->config->upstream_count >= 1);
    return 0;
}

int config_parse(config_t *config, const char *text, size_t length, const char *source_name,
                 char *error, size_t error_size) {
    config_parser_t parser;
    config_parser_begin(&parser, config, source_name, error, error_size);
    if (config_parser_feed(&parser, text, length) != 0) {
        parser.finished = true;
        return -1;
    }
    return config_parser_finish(&parser);
}

int config_load(config_t *config, const char *path, char *error, size_t error_size) {
    RW_ASSERT(path != NULL && error != NULL && error_size > 0);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(error, error_size, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    config_parser_t parser;
    config_parser_begin(&parser, config, path, error, error_size);
    char chunk[16384];
    for (;;) {
        ssize_t received = read(fd, chunk, sizeof chunk);
        if (received < 0 && errno == EINTR) {
            continue;
        }
        if (received < 0) {
            int saved = errno;
            close(fd);
            snprintf(error, error_size, "%s: cannot read: %s", path, strerror(saved));
            return -1;
        }
        if (received == 0) {
            break;
        }
        if (config_parser_feed(&parser, chunk, (size_t)received) != 0) {
            close(fd);
            return -1;
        }
    }
    close(fd);
    return config_parser_finish(&parser);
}

/* Orders `name` (name_length bytes) against a NUL-terminated model name the
 * same way strcmp orders two names, so the binary search agrees with the
 * sort in config_build_model_index. */
static int config_compare_name(const uint8_t *name, size_t name_length, const char *model_name) {
    size_t model_length = strlen(model_name);
    size_t common = RW_MIN(name_length, model_length);
    int order = memcmp(name, model_name, common);
    if (order != 0) {
        return order;
    }
    return name_length < model_length ? -1 : (name_length > model_length ? 1 : 0);
}

const config_model_t *config_find_model(const config_t *config, const uint8_t *name,
                                        size_t name_length) {
    RW_ASSERT(config != NULL);
    RW_ASSERT(name != NULL || name_length == 0);
    RW_ASSERT(config->model_count <= CONFIG_MODELS_MAX);
    if (name_length == 0 || name_length >= CONFIG_MODEL_NAME_BYTES) {
        return NULL;
    }
    uint32_t low = 0;
    uint32_t high = config->model_count;
    while (low < high) {
        uint32_t middle = low + (high - low) / 2;
        uint16_t index = config->models_by_name[middle];
        RW_ASSERT(index < config->model_count);
        int order = config_compare_name(name, name_length, config->models[index].name);
        if (order == 0) {
            return &config->models[index];
        }
        if (order < 0) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    return NULL;
}
