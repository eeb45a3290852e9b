/* Types of the configuration module: the loaded configuration (config_t) and
 * the incremental parser that fills it (config_parser_t). Types only; the
 * functions are in config.h.
 *
 * Everything is fixed-size so a configuration is one flat value: the caller
 * allocates one config_t (about 1.5 MiB) at start, e.g.
 * `config_t *config = calloc(1, sizeof *config)`, and nothing inside points
 * anywhere else. A later reload parses into a second config_t and swaps. */
#ifndef RINGWAY_CONFIG_T_H
#define RINGWAY_CONFIG_T_H

#include "ringway/address-t.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_UPSTREAMS_MAX 64
#define CONFIG_MODELS_MAX 256
#define CONFIG_TIERS_MAX 32
#define CONFIG_TRUSTED_PROXIES_MAX 32
#define CONFIG_ROUTES_MAX 8        /* routes of one [model NAME] */
#define CONFIG_UPSTREAM_KEYS_MAX 8 /* API keys of one [upstream NAME] */

/* Capacities include the terminating NUL: a name[64] holds 63 bytes. */
#define CONFIG_SOURCE_PATH_BYTES 4096
#define CONFIG_HOST_BYTES 256
#define CONFIG_PATH_BYTES 4096
#define CONFIG_UPSTREAM_NAME_BYTES 64
#define CONFIG_BASE_URL_BYTES 1024
#define CONFIG_BASE_PATH_BYTES 512
#define CONFIG_API_KEY_BYTES 512
#define CONFIG_MODEL_NAME_BYTES 128
#define CONFIG_UPSTREAM_MODEL_BYTES 256
#define CONFIG_OWNED_BY_BYTES 64
#define CONFIG_SECRET_BYTES 512 /* admin_token, jwt_secret */
#define CONFIG_TIER_NAME_BYTES 32

/* Shortest secrets accepted: an admin token is a password for the whole
 * service; an HS256 key should carry at least 256 bits. */
#define CONFIG_ADMIN_TOKEN_BYTES_MIN 16
#define CONFIG_JWT_SECRET_BYTES_MIN 32

/* The longest line the parser accepts, without its line ending. Large enough
 * for the longest value (a 4095-byte path, quoted) plus its key. */
#define CONFIG_LINE_BYTES_MAX 8192

/* Keys a single section can have; sizes the parser's duplicate tracking. */
#define CONFIG_SECTION_KEYS_MAX 12

/* What happens to an upstream request when its client goes away mid-stream:
 * DRAIN keeps reading it (up to drain_bytes_max / drain_ms) so the usage
 * record and the pooled connection survive; CANCEL closes the upstream
 * connection at once. */
typedef enum config_disconnect_policy {
    CONFIG_DISCONNECT_DRAIN = 0,
    CONFIG_DISCONNECT_CANCEL = 1,
} config_disconnect_policy_t;

/* [billing] mode: `on` holds, settles and records every billable request;
 * `off` only relays (API keys are still checked). */
typedef enum config_billing_mode {
    CONFIG_BILLING_ON = 0,
    CONFIG_BILLING_OFF = 1,
} config_billing_mode_t;

/* [accounts] registration: `open` lets anyone make an account with
 * POST /auth/register; `closed` refuses it (403 registration_closed), so
 * only the admin API makes accounts. */
typedef enum config_registration {
    CONFIG_REGISTRATION_OPEN = 0,
    CONFIG_REGISTRATION_CLOSED = 1,
} config_registration_t;

/* One [upstream NAME] section, validated and resolved. `host` holds no
 * brackets even for an IPv6 literal: whoever writes a Host header or a URL
 * must bracket a host that contains ':'. */
typedef struct config_upstream {
    char name[CONFIG_UPSTREAM_NAME_BYTES];
    char base_url[CONFIG_BASE_URL_BYTES]; /* as written in the file */
    bool tls;                             /* https (true) or loopback http (false) */
    char host[CONFIG_HOST_BYTES];
    uint16_t port;                          /* 443 / 80 unless the URL names one */
    char base_path[CONFIG_BASE_PATH_BYTES]; /* "" or "/v1": no trailing '/' */
    /* Sent as "Authorization: Bearer <key>", used in turn (route.c). */
    char api_keys[CONFIG_UPSTREAM_KEYS_MAX][CONFIG_API_KEY_BYTES];
    uint32_t api_key_count;
    bool has_api_key;                       /* false: no Authorization header upstream */
    char ca_file[CONFIG_PATH_BYTES];        /* "" = the system CA store */
    bool verify;                            /* false only for testing: no certificate check */
    char sni[CONFIG_HOST_BYTES];            /* "" = use host (the TLS module skips SNI for IP literals) */
    uint32_t connect_ms;                    /* resolved: never 0 after a successful parse */
    uint32_t first_byte_ms;
    uint32_t idle_ms;
} config_upstream_t;

/* One route of a model: an upstream and that upstream's name for the model.
 * A request goes to the highest priority that has a healthy route, and by
 * weight among the routes of that priority. */
typedef struct config_route {
    char upstream_name[CONFIG_UPSTREAM_NAME_BYTES];
    uint32_t upstream_index; /* into config_t.upstreams, resolved at the end of the parse */
    char upstream_model[CONFIG_UPSTREAM_MODEL_BYTES];
    uint32_t priority;       /* larger first; 0 unless given */
    uint32_t weight;         /* 1..CONFIG_ROUTE_WEIGHT_MAX; 1 unless given */
} config_route_t;

#define CONFIG_ROUTE_WEIGHT_MAX 1000
#define CONFIG_ROUTE_PRIORITY_MAX 1000

/* [model NAME] affinity: which requests stay on the same route and key
 * while it is healthy, so the upstream's prompt cache keeps hitting. */
typedef enum config_affinity {
    CONFIG_AFFINITY_OFF = 0,
    CONFIG_AFFINITY_USER = 1,   /* the request body's "user" */
    CONFIG_AFFINITY_HEADER = 2, /* the value of the header affinity_header names */
} config_affinity_t;

#define CONFIG_HEADER_NAME_BYTES 64

/* One [model NAME] section: the public name clients send, where it goes and
 * what it costs. Prices are integer micro-units of the reseller's currency
 * (1 unit = 1,000,000 micros; see ledger.h), each at most
 * LEDGER_MONEY_MICROS_MAX. */
typedef struct config_model {
    char name[CONFIG_MODEL_NAME_BYTES];
    config_route_t routes[CONFIG_ROUTES_MAX]; /* in the file's order; at least one */
    uint32_t route_count;
    char owned_by[CONFIG_OWNED_BY_BYTES];
    int64_t input_price_micros;        /* per 1,000,000 prompt tokens not served from cache */
    int64_t cached_input_price_micros; /* per 1,000,000 cached prompt tokens; defaults to input */
    int64_t output_price_micros;       /* per 1,000,000 completion tokens (reasoning included) */
    int64_t request_price_micros;      /* per call, on top of the token prices */
    uint32_t max_output_tokens;        /* sent upstream when a request names no max_tokens */
    config_affinity_t affinity;
    char affinity_header[CONFIG_HEADER_NAME_BYTES]; /* CONFIG_AFFINITY_HEADER only */
} config_model_t;

/* The limits of a [tier NAME] section, in this order in config_tier_t;
 * 0 means unlimited. Minutes and days are fixed windows of the UTC clock. */
typedef enum config_limit_kind {
    CONFIG_LIMIT_REQUESTS_PER_MINUTE = 0,
    CONFIG_LIMIT_TOKENS_PER_MINUTE,
    CONFIG_LIMIT_REQUESTS_PER_DAY,
    CONFIG_LIMIT_TOKENS_PER_DAY,
    CONFIG_LIMIT_CONCURRENT_REQUESTS,
    CONFIG_LIMIT_COUNT,
} config_limit_kind_t;

/* One [tier NAME] section: a named set of limits. */
typedef struct config_tier {
    char name[CONFIG_TIER_NAME_BYTES];
    uint32_t limits[CONFIG_LIMIT_COUNT]; /* by config_limit_kind_t; 0 = unlimited */
} config_tier_t;

/* No tier: CONFIG_TIER_NONE in config_t's tier indexes. */
#define CONFIG_TIER_NONE UINT32_MAX

typedef struct config {
    char source_path[CONFIG_SOURCE_PATH_BYTES]; /* the name errors were reported against */

    /* [server] */
    char listen_host[CONFIG_HOST_BYTES];
    uint16_t listen_port;
    uint32_t threads; /* 0 = one per online CPU, resolved by the caller */
    char data_dir[CONFIG_PATH_BYTES];
    char admin_listen_host[CONFIG_HOST_BYTES];
    uint16_t admin_listen_port;
    /* Peers whose X-Forwarded-For is believed (address_client); none by default. */
    address_cidr_t trusted_proxies[CONFIG_TRUSTED_PROXIES_MAX];
    uint32_t trusted_proxy_count;

    /* [limits], all per event-loop thread unless the name says otherwise */
    uint32_t connections_per_thread;
    uint32_t streams_per_thread;
    uint32_t header_bytes_max;
    uint32_t body_bytes_max;
    uint32_t request_buffer_bytes;
    uint32_t large_bodies_per_thread;
    uint32_t stream_buffer_bytes;
    uint32_t upstream_connections_per_thread; /* per upstream */
    uint32_t drain_bytes_max;
    uint32_t connections_per_ip;     /* per thread, by socket peer; 0 = no cap */
    uint32_t large_bodies_per_ip;    /* per thread, by socket peer; 0 = no cap */

    /* [timeouts] */
    uint32_t header_ms;
    uint32_t body_ms;
    uint32_t keepalive_idle_ms;
    uint32_t upstream_connect_ms;
    uint32_t upstream_first_byte_ms;
    uint32_t upstream_idle_ms;
    uint32_t drain_ms;
    uint32_t upstream_keepalive_ms;

    /* [relay] */
    config_disconnect_policy_t client_disconnect;
    /* [relay] sse_keepalive_ms: while an SSE response's upstream is silent
     * this long between events, the client gets a ": keep-alive" comment;
     * 0 = never. */
    uint32_t sse_keepalive_ms;

    /* [routing]: failover and circuit breakers (route.c, src/breaker). */
    uint32_t attempts_max;            /* routes one request may try, the first included */
    uint32_t failover_ms;             /* no new attempt starts this long after the first */
    uint32_t breaker_failures;        /* consecutive failures that open a breaker (at least 2) */
    uint32_t breaker_error_percent;   /* failures in a window that open it; 0 = off */
    uint32_t breaker_window_ms;
    uint32_t breaker_window_requests_min; /* the percentage counts from this many outcomes */
    uint32_t breaker_open_ms;         /* open this long, then one probe (half-open) */
    uint32_t key_refused_retry_ms;    /* a key refused with 401/403 is tried again after this; 0 = never */

    /* [billing] */
    config_billing_mode_t billing_mode; /* off: keys checked, no holds, records or wallet */
    uint32_t sync_interval_ms;  /* the store's group-commit (fsync) period */
    uint32_t hold_record_after_ms;   /* a hold still open this long gets a durable record */
    uint32_t store_wait_requests_max; /* per thread: requests waiting for a store that fell behind */
    uint32_t store_wait_ms;          /* the longest such a wait; then 503 */
    int64_t free_grant_micros;  /* starting balance of a self-registered account */
    uint32_t users_max;         /* slots in the in-memory user table */
    uint32_t keys_max;          /* slots in the in-memory API key table */

    /* [auth] */
    char admin_token[CONFIG_SECRET_BYTES];
    bool has_admin_token;       /* false: the admin API refuses every request */
    char jwt_secret[CONFIG_SECRET_BYTES];
    bool has_jwt_secret;        /* false: generated at first start and kept in the store */
    uint32_t jwt_ttl_s;         /* lifetime of a login token */

    /* [rate_limits]: the tier every API key has, and the tier whose limits
     * every account has over all of its keys together (indexes into
     * tiers[], CONFIG_TIER_NONE = no limits). */
    uint32_t key_tier;
    uint32_t account_tier;

    /* [accounts]: protection of the unauthenticated account endpoints
     * (src/guard, on the control thread); 0 turns a limit off. */
    config_registration_t registration;
    uint32_t registrations_per_ip_per_hour;
    uint32_t registrations_per_ip_per_day;
    uint32_t login_failures_per_ip_per_minute;
    uint32_t login_failures_before_backoff;
    uint32_t login_backoff_base_s;
    uint32_t login_backoff_max_s;
    uint32_t password_jobs_max;      /* registrations and logins queued for Argon2id, all workers together */
    uint32_t tracked_clients_max;    /* entries per guard table (rounded up to a power of two) */

    config_upstream_t upstreams[CONFIG_UPSTREAMS_MAX];
    uint32_t upstream_count;
    config_model_t models[CONFIG_MODELS_MAX];
    uint32_t model_count;
    config_tier_t tiers[CONFIG_TIERS_MAX];
    uint32_t tier_count;

    /* Indexes into models[], sorted by name (bytewise, shorter first on a
     * common prefix), built at the end of a successful parse so
     * config_find_model is a binary search. */
    uint16_t models_by_name[CONFIG_MODELS_MAX];
} config_t;

/* Where the parser is: which section the current line belongs to. */
typedef enum config_section_kind {
    CONFIG_SECTION_NONE = 0,
    CONFIG_SECTION_SERVER,
    CONFIG_SECTION_LIMITS,
    CONFIG_SECTION_TIMEOUTS,
    CONFIG_SECTION_RELAY,
    CONFIG_SECTION_BILLING,
    CONFIG_SECTION_AUTH,
    CONFIG_SECTION_RATE_LIMITS,
    CONFIG_SECTION_ACCOUNTS,
    CONFIG_SECTION_ROUTING,
    CONFIG_SECTION_UPSTREAM,
    CONFIG_SECTION_MODEL,
    CONFIG_SECTION_TIER,
} config_section_kind_t;

/* Sections the parser tracks lines for: the nine singletons, then one slot
 * per upstream, one per model, one per tier. */
#define CONFIG_SECTION_SINGLETONS 9
#define CONFIG_SECTION_SLOTS (CONFIG_SECTION_SINGLETONS + CONFIG_UPSTREAMS_MAX + CONFIG_MODELS_MAX + CONFIG_TIERS_MAX)

/* An incremental parser: bytes in (any split), a filled config_t out. It
 * allocates nothing; it is about 40 KiB, so config_parse and config_load keep
 * one on the stack. Fields are private to config.c. */
typedef struct config_parser {
    config_t *config;
    char *error;
    size_t error_size;
    bool failed;
    bool finished;

    uint32_t line_number; /* 1-based number of the line being collected */
    uint32_t line_length;
    config_section_kind_t section_kind;
    uint32_t section_slot; /* valid when section_kind != NONE */

    /* Line of each section header (0 = not seen) and of each key that has
     * been set (0 = not set), for duplicate detection and for pointing
     * validation errors at the right line. */
    uint32_t section_lines[CONFIG_SECTION_SLOTS];
    uint32_t key_lines[CONFIG_SECTION_SLOTS][CONFIG_SECTION_KEYS_MAX];

    /* The line of each model's routes, for errors found at the end. */
    uint32_t route_lines[CONFIG_MODELS_MAX][CONFIG_ROUTES_MAX];
    /* [rate_limits]' tier names, resolved to indexes at the end. */
    char key_tier_name[CONFIG_TIER_NAME_BYTES];
    char account_tier_name[CONFIG_TIER_NAME_BYTES];

    char line[CONFIG_LINE_BYTES_MAX];
} config_parser_t;

#endif
