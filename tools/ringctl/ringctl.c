/* ringctl: the operator's tool for a running Ringway relay. It speaks to the
 * admin API (src/admin/admin.c) over plain HTTP on loopback, prints aligned
 * tables (or the raw JSON with --json), and exits with codes scripts can
 * trust: 0 done, 1 usage error (nothing sent), 2 the relay refused (4xx),
 * 3 cannot connect, server error or an answer it cannot read.
 *
 * Tables are printed in two passes over the JSON answer (widths, then rows),
 * so nothing is copied or allocated; the answer itself lands in one static
 * buffer. */
#include "client.h"

#include "ringway/admin-text.h"
#include "ringway/config.h"
#include "ringway/json.h"
#include "ringway/ledger.h"
#include "ringway/limit.h"
#include "ringway/text.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    RINGCTL_EXIT_OK = 0,
    RINGCTL_EXIT_USAGE = 1,
    RINGCTL_EXIT_REFUSED = 2,
    RINGCTL_EXIT_FAILED = 3,
    RINGCTL_BODY_BYTES = 32 * 1024 * 1024,
    RINGCTL_REQUEST_BYTES = 8192,
    RINGCTL_PATH_BYTES = 2048,
    RINGCTL_CELL_BYTES = 512,
    RINGCTL_COLUMNS_MAX = 12,
    RINGCTL_TIMEOUT_MS_DEFAULT = 30000,
    RINGCTL_USAGE_LIMIT_DEFAULT = 20,
};

static const char ringctl_default_url[] = "http://127.0.0.1:8081";

/* ---- Arguments ---- */

typedef struct ringctl_arguments {
    const char *user;
    const char *key;
    const char *email;
    const char *password;
    const char *balance;
    const char *name;
    const char *models;
    const char *tier;
    const char *expires;
    const char *cap;
    const char *amount;
    const char *limit;
    const char *after;
    const char *from;
    const char *to;
    const char *format;
    const char *output;
    const char *setting;   /* keys set-limit: NAME=VALUE */
    const char *quota;     /* keys set-quota, keys create --quota */
    bool password_stdin;
} ringctl_arguments_t;

typedef struct ringctl_flag {
    const char *name; /* without "--" */
    size_t offset;    /* of its const char * in ringctl_arguments_t */
} ringctl_flag_t;

#define RINGCTL_FLAG(name, field) {name, offsetof(ringctl_arguments_t, field)}
static const ringctl_flag_t ringctl_flags[] = {
    RINGCTL_FLAG("user", user),       RINGCTL_FLAG("key", key),         RINGCTL_FLAG("email", email),
    RINGCTL_FLAG("password", password), RINGCTL_FLAG("balance", balance), RINGCTL_FLAG("name", name),
    RINGCTL_FLAG("models", models),   RINGCTL_FLAG("tier", tier),       RINGCTL_FLAG("expires", expires),
    RINGCTL_FLAG("cap", cap),         RINGCTL_FLAG("amount", amount),   RINGCTL_FLAG("limit", limit),
    RINGCTL_FLAG("after", after),     RINGCTL_FLAG("from", from),       RINGCTL_FLAG("to", to),
    RINGCTL_FLAG("format", format),   RINGCTL_FLAG("output", output),   RINGCTL_FLAG("quota", quota),
    RINGCTL_FLAG("setting", setting),
};

typedef struct ringctl ringctl_t;

typedef struct ringctl_command {
    const char *group;
    const char *name;
    const char *synopsis;
    const char *summary;
    const char *details;
    const char *positionals[2]; /* slot names, in order */
    const char *flags;          /* allowed flags, space-separated */
    int (*run)(ringctl_t *ctl, const ringctl_arguments_t *arguments);
} ringctl_command_t;

struct ringctl {
    client_target_t target;
    char url[1024];
    const char *token;
    bool json;
    uint32_t timeout_ms;
    client_response_t response;
    const ringctl_command_t *command;
};

static char ringctl_body[RINGCTL_BODY_BYTES + 1];

static void ringctl_error(const char *format, ...) __attribute__((format(printf, 1, 2)));
static void ringctl_error(const char *format, ...) {
    va_list arguments;
    va_start(arguments, format);
    fputs("ringctl: ", stderr);
    vfprintf(stderr, format, arguments);
    fputc('\n', stderr);
    va_end(arguments);
}

/* ---- Checking values before anything is sent ---- */

static bool ringctl_id(const char *what, const char *text, uint64_t *id) {
    if (text == NULL) {
        ringctl_error("%s is required (see --help)", what);
        return false;
    }
    if (!text_parse_u64(text, strlen(text), id) || *id == 0) {
        ringctl_error("%s must be a positive integer id, got '%s'", what, text);
        return false;
    }
    return true;
}

static bool ringctl_count(const char *what, const char *text, uint64_t maximum, uint64_t *value) {
    if (!text_parse_u64(text, strlen(text), value) || *value > maximum) {
        ringctl_error("%s must be an integer from 0 to %llu, got '%s'", what, (unsigned long long)maximum, text);
        return false;
    }
    return true;
}

static bool ringctl_money(const char *what, const char *text, int64_t *micros) {
    ledger_money_result_t result = ledger_parse_money(text, strlen(text), micros);
    if (result == LEDGER_MONEY_OK) return true;
    ringctl_error("%s: '%s' %s", what, text,
                  result == LEDGER_MONEY_PRECISION ? "has more than 6 decimal places"
                  : result == LEDGER_MONEY_RANGE   ? "is above 1000000000"
                                                   : "is not an amount like 1.50 (digits, optional point, up to 6 decimals)");
    return false;
}

static bool ringctl_time(const char *what, const char *text, int64_t *ms) {
    if (!text_time_parse(text, strlen(text), ms)) {
        ringctl_error("%s: '%s' is not a time: use 2026-01-31, 2026-01-31T12:00:00Z (ISO 8601, UTC unless an "
                      "offset is given) or milliseconds since the epoch",
                      what, text);
        return false;
    }
    return true;
}

/* ---- Talking to the relay ---- */

/* Sends one request; returns 0 for a 2xx answer (in ctl->response), or
 * prints why not and returns the exit code. */
static int ringctl_call(ringctl_t *ctl, const char *method, const char *path, const char *body, FILE *sink) {
    client_response_t *response = &ctl->response;
    response->buffer = ringctl_body;
    response->capacity = RINGCTL_BODY_BYTES;
    response->sink = sink;
    client_result_t result = client_request(&ctl->target, method, path, ctl->token, body,
                                            body != NULL ? strlen(body) : 0, ctl->timeout_ms, response);
    if (result == CLIENT_CONNECT) {
        ringctl_error("cannot reach the admin API at %s: %s (is ringway running? see --admin-url or --config)",
                      ctl->url, response->error);
        return RINGCTL_EXIT_FAILED;
    }
    if (result != CLIENT_OK) {
        ringctl_error("%s %s: %s", method, path, response->error);
        return RINGCTL_EXIT_FAILED;
    }
    ringctl_body[response->length] = '\0'; /* the buffer has one byte more than its capacity */
    if (response->status >= 200 && response->status <= 299) return RINGCTL_EXIT_OK;
    if (ctl->json) {
        fwrite(response->buffer, 1, response->length, stdout);
        if (response->length > 0 && response->buffer[response->length - 1] != '\n') fputc('\n', stdout);
    }
    /* The OpenAI error shape: {"error":{"message":..,"code":..}}. */
    char message[1024] = "";
    char code[128] = "";
    json_span_t error, value;
    json_type_t type;
    const uint8_t *document = (const uint8_t *)response->buffer;
    if (json_validate(document, response->length, NULL) == 0 &&
        json_object_find(document, response->length, "error", &error, &type) == 0 && type == JSON_TYPE_OBJECT) {
        size_t length = 0;
        if (json_object_find(document + error.offset, error.length, "message", &value, &type) == 0 &&
            type == JSON_TYPE_STRING) {
            json_string_decode(document + error.offset + value.offset, value.length, message, sizeof message, &length);
        }
        if (json_object_find(document + error.offset, error.length, "code", &value, &type) == 0 &&
            type == JSON_TYPE_STRING) {
            json_string_decode(document + error.offset + value.offset, value.length, code, sizeof code, &length);
        }
    }
    if (message[0] == '\0') snprintf(message, sizeof message, "no error message in the answer");
    bool refused = response->status >= 400 && response->status <= 499;
    const char *hint = "";
    if (response->status == 401) hint = " (check --token, RINGCTL_ADMIN_TOKEN or --config)";
    if (response->status == 403) hint = " (set admin_token in the [auth] section of the relay's configuration)";
    ringctl_error("%s (%d%s%s): %s%s", refused ? "the relay refused" : "the relay failed", response->status,
                  code[0] != '\0' ? " " : "", code, message, hint);
    return refused ? RINGCTL_EXIT_REFUSED : RINGCTL_EXIT_FAILED;
}

/* Prints the raw answer for --json. */
static void ringctl_print_raw(const ringctl_t *ctl) {
    fwrite(ctl->response.buffer, 1, ctl->response.length, stdout);
    if (ctl->response.length > 0 && ctl->response.buffer[ctl->response.length - 1] != '\n') fputc('\n', stdout);
}

static bool ringctl_answer_valid(const ringctl_t *ctl) {
    if (json_validate((const uint8_t *)ctl->response.buffer, ctl->response.length, NULL) == 0) return true;
    ringctl_error("the relay's answer is not valid JSON");
    return false;
}

/* ---- Reading answers ---- */

typedef struct ringctl_object {
    const char *document; /* the whole answer */
    size_t length;        /* of the whole answer */
    json_span_t span;     /* this value inside it */
} ringctl_object_t;

/* The whole answer, without surrounding whitespace. */
static ringctl_object_t ringctl_root(const ringctl_t *ctl) {
    const char *document = ctl->response.buffer;
    size_t start = 0, end = ctl->response.length;
    while (start < end && (document[start] == ' ' || document[start] == '\n' || document[start] == '\r' ||
                           document[start] == '\t')) {
        start++;
    }
    while (end > start && (document[end - 1] == ' ' || document[end - 1] == '\n' || document[end - 1] == '\r' ||
                           document[end - 1] == '\t')) {
        end--;
    }
    return (ringctl_object_t){document, ctl->response.length, {(uint32_t)start, (uint32_t)(end - start)}};
}

static bool ringctl_member(ringctl_object_t object, const char *name, json_span_t *value, json_type_t *type) {
    if (json_object_find((const uint8_t *)object.document + object.span.offset, object.span.length, name, value,
                         type) != 0) {
        return false;
    }
    value->offset += object.span.offset;
    return true;
}

/* A member as display text: strings decoded, null as "-", other values as
 * written. */
static const char *ringctl_text(ringctl_object_t object, const char *name, char *out, size_t capacity) {
    json_span_t value;
    json_type_t type;
    if (!ringctl_member(object, name, &value, &type) || type == JSON_TYPE_NULL) return "-";
    if (type == JSON_TYPE_STRING) {
        size_t length = 0;
        if (json_string_decode((const uint8_t *)object.document + value.offset, value.length, out, capacity,
                               &length) != 0) {
            return "?";
        }
        return out;
    }
    snprintf(out, capacity, "%.*s", (int)value.length, object.document + value.offset);
    return out;
}

static int64_t ringctl_integer(ringctl_object_t object, const char *name) {
    json_span_t value;
    json_type_t type;
    if (!ringctl_member(object, name, &value, &type) || type != JSON_TYPE_NUMBER) return 0;
    return strtoll(object.document + value.offset, NULL, 10);
}

static bool ringctl_child(ringctl_object_t object, const char *name, json_type_t expected, ringctl_object_t *child) {
    json_span_t value;
    json_type_t type;
    if (!ringctl_member(object, name, &value, &type) || type != expected) return false;
    *child = (ringctl_object_t){object.document, object.length, value};
    return true;
}

/* "1.500000" -> "1.50": trailing zeros dropped down to two decimals. */
static const char *ringctl_money_text(const char *text, char *out, size_t capacity) {
    snprintf(out, capacity, "%s", text);
    char *point = strchr(out, '.');
    if (point == NULL) return out;
    size_t length = strlen(out);
    while (length > (size_t)(point - out) + 3 && out[length - 1] == '0') out[--length] = '\0';
    return out;
}

static const char *ringctl_money_micros(int64_t micros, char *out, size_t capacity) {
    char text[TEXT_MONEY_BYTES];
    text_format_money(micros, text);
    return ringctl_money_text(text, out, capacity);
}

/* Milliseconds since the epoch as "2026-01-31 12:00:00" (UTC). */
static const char *ringctl_time_text(int64_t ms, char *out, size_t capacity) {
    if (ms <= 0) return "-";
    char text[TEXT_TIME_BYTES];
    text_time_format(ms, text);
    snprintf(out, capacity, "%.10s %.8s", text, text + 11);
    return out;
}

/* ---- Tables ---- */

typedef const char *(*ringctl_cell_t)(ringctl_object_t row, char *out, size_t capacity);

typedef struct ringctl_column {
    const char *header;
    ringctl_cell_t cell;
    bool right; /* right-aligned (numbers) */
} ringctl_column_t;

/* Display width: UTF-8 code points (close enough for names and emails). */
static size_t ringctl_width(const char *text) {
    size_t width = 0;
    for (; *text != '\0'; text++) width += ((uint8_t)*text & 0xC0) != 0x80;
    return width;
}

static void ringctl_print_cell(const char *text, size_t width, bool right, bool last) {
    size_t pad = width - RW_MIN(width, ringctl_width(text));
    if (right) {
        for (size_t index = 0; index < pad; index++) fputc(' ', stdout);
    }
    fputs(text, stdout);
    if (!right && !last) {
        for (size_t index = 0; index < pad; index++) fputc(' ', stdout);
    }
    if (!last) fputs("  ", stdout);
}

/* Prints the objects of `array` as a table, or `empty` when there is none. */
static void ringctl_table(ringctl_object_t array, const ringctl_column_t *columns, uint32_t column_count,
                          const char *empty) {
    RW_ASSERT(column_count <= RINGCTL_COLUMNS_MAX);
    size_t widths[RINGCTL_COLUMNS_MAX];
    for (uint32_t column = 0; column < column_count; column++) widths[column] = ringctl_width(columns[column].header);
    char cell[RINGCTL_CELL_BYTES];
    uint32_t rows = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            if (rows == 0) {
                printf("%s\n", empty);
                return;
            }
            for (uint32_t column = 0; column < column_count; column++) {
                ringctl_print_cell(columns[column].header, widths[column], columns[column].right,
                                   column + 1 == column_count);
            }
            fputc('\n', stdout);
        }
        uint32_t cursor = 0;
        json_span_t element;
        while (admin_json_array_next((const uint8_t *)array.document, array.length, array.span, &cursor, &element)) {
            ringctl_object_t row = {array.document, array.length, element};
            if (pass == 0) rows++;
            for (uint32_t column = 0; column < column_count; column++) {
                const char *text = columns[column].cell(row, cell, sizeof cell);
                if (pass == 0) {
                    widths[column] = RW_MAX(widths[column], ringctl_width(text));
                } else {
                    ringctl_print_cell(text, widths[column], columns[column].right, column + 1 == column_count);
                }
            }
            if (pass == 1) fputc('\n', stdout);
        }
    }
}

static bool ringctl_has_more(ringctl_object_t root) {
    char text[16];
    return strcmp(ringctl_text(root, "has_more", text, sizeof text), "true") == 0;
}

/* The last element's id, for "--after" hints. */
static int64_t ringctl_last_id(ringctl_object_t array) {
    uint32_t cursor = 0;
    json_span_t element;
    int64_t id = 0;
    while (admin_json_array_next((const uint8_t *)array.document, array.length, array.span, &cursor, &element)) {
        id = ringctl_integer((ringctl_object_t){array.document, array.length, element}, "id");
    }
    return id;
}

/* Cells. */
#define RINGCTL_TEXT_CELL(function, member)                                                 \
    static const char *function(ringctl_object_t row, char *out, size_t capacity) {        \
        return ringctl_text(row, member, out, capacity);                                     \
    }
RINGCTL_TEXT_CELL(ringctl_cell_id, "id")
RINGCTL_TEXT_CELL(ringctl_cell_email, "email")
RINGCTL_TEXT_CELL(ringctl_cell_status, "status")
RINGCTL_TEXT_CELL(ringctl_cell_name, "name")
RINGCTL_TEXT_CELL(ringctl_cell_masked, "masked_key")
RINGCTL_TEXT_CELL(ringctl_cell_tier, "tier")
RINGCTL_TEXT_CELL(ringctl_cell_user_id, "user_id")
RINGCTL_TEXT_CELL(ringctl_cell_key_id, "key_id")
RINGCTL_TEXT_CELL(ringctl_cell_model, "model")
RINGCTL_TEXT_CELL(ringctl_cell_prompt, "prompt_tokens")
RINGCTL_TEXT_CELL(ringctl_cell_completion, "completion_tokens")
RINGCTL_TEXT_CELL(ringctl_cell_request, "request_id")
RINGCTL_TEXT_CELL(ringctl_cell_admin, "admin")
RINGCTL_TEXT_CELL(ringctl_cell_action, "action")
RINGCTL_TEXT_CELL(ringctl_cell_target, "target")
RINGCTL_TEXT_CELL(ringctl_cell_details, "details")

static const char *ringctl_cell_money_member(ringctl_object_t row, const char *member, char *out, size_t capacity) {
    char text[64];
    const char *value = ringctl_text(row, member, text, sizeof text);
    if (strcmp(value, "-") == 0) return "-";
    return ringctl_money_text(value, out, capacity);
}

static const char *ringctl_cell_balance(ringctl_object_t row, char *out, size_t capacity) {
    return ringctl_cell_money_member(row, "balance", out, capacity);
}
static const char *ringctl_cell_available(ringctl_object_t row, char *out, size_t capacity) {
    return ringctl_cell_money_member(row, "available", out, capacity);
}
static const char *ringctl_cell_cap(ringctl_object_t row, char *out, size_t capacity) {
    return ringctl_cell_money_member(row, "spend_cap", out, capacity);
}
static const char *ringctl_cell_spent(ringctl_object_t row, char *out, size_t capacity) {
    return ringctl_cell_money_member(row, "spent", out, capacity);
}
static const char *ringctl_cell_created(ringctl_object_t row, char *out, size_t capacity) {
    return ringctl_time_text(ringctl_integer(row, "created_ms"), out, capacity);
}
static const char *ringctl_cell_expires(ringctl_object_t row, char *out, size_t capacity) {
    int64_t ms = ringctl_integer(row, "expires_at_ms");
    if (ms <= 0) return "never";
    return ringctl_time_text(ms, out, capacity);
}
static const char *ringctl_cell_time_ms(ringctl_object_t row, char *out, size_t capacity) {
    return ringctl_time_text(ringctl_integer(row, "time_ms"), out, capacity);
}
static const char *ringctl_cell_password(ringctl_object_t row, char *out, size_t capacity) {
    char text[16];
    return strcmp(ringctl_text(row, "has_password", text, sizeof text), "true") == 0 ? "yes" : "no";
}
static const char *ringctl_cell_key_status(ringctl_object_t row, char *out, size_t capacity) {
    char expired[16];
    ringctl_text(row, "status", out, capacity);
    if (strcmp(out, "active") == 0 && strcmp(ringctl_text(row, "expired", expired, sizeof expired), "true") == 0) {
        return "expired";
    }
    return out;
}
static const char *ringctl_cell_models(ringctl_object_t row, char *out, size_t capacity) {
    ringctl_object_t models;
    if (!ringctl_child(row, "models", JSON_TYPE_ARRAY, &models)) return "all";
    text_buffer_t buffer = {.bytes = out, .capacity = capacity - 1};
    uint32_t cursor = 0;
    json_span_t element;
    while (admin_json_array_next((const uint8_t *)models.document, models.length, models.span, &cursor, &element)) {
        char name[256];
        size_t length = 0;
        if (json_string_decode((const uint8_t *)models.document + element.offset, element.length, name, sizeof name,
                               &length) != 0) {
            continue;
        }
        if (buffer.length > 0) text_buffer_text(&buffer, ",");
        text_buffer_append(&buffer, name, length);
    }
    if (buffer.overflow) return "(many)";
    out[buffer.length] = '\0';
    return buffer.length > 0 ? out : "none";
}
static const char *ringctl_cell_cost(ringctl_object_t row, char *out, size_t capacity) {
    return ringctl_money_micros(ringctl_integer(row, "cost_micros"), out, capacity);
}
static const char *ringctl_cell_usage_status(ringctl_object_t row, char *out, size_t capacity) {
    char flag[16];
    ringctl_text(row, "status", out, capacity);
    size_t length = strlen(out);
    if (strcmp(ringctl_text(row, "estimated", flag, sizeof flag), "true") == 0 && length + 12 < capacity) {
        memcpy(out + length, " (estimated)", 13);
        length += 12;
    }
    if (strcmp(ringctl_text(row, "capped", flag, sizeof flag), "true") == 0 && length + 9 < capacity) {
        memcpy(out + length, " (capped)", 10);
    }
    return out;
}

/* GET /admin/upstreams: a row's breaker (all threads together). */
static const char *ringctl_cell_breaker(ringctl_object_t row, char *out, size_t capacity) {
    ringctl_object_t breaker;
    if (!ringctl_child(row, "breaker", JSON_TYPE_OBJECT, &breaker)) return "-";
    char state[32];
    ringctl_text(breaker, "state", state, sizeof state);
    snprintf(out, capacity, "%s (open on %lld of %lld threads)", state, (long long)ringctl_integer(breaker, "threads_open"),
             (long long)ringctl_integer(breaker, "threads"));
    return out;
}
static const char *ringctl_cell_breaker_failures(ringctl_object_t row, char *out, size_t capacity) {
    ringctl_object_t breaker;
    if (!ringctl_child(row, "breaker", JSON_TYPE_OBJECT, &breaker)) return "-";
    snprintf(out, capacity, "%lld", (long long)ringctl_integer(breaker, "consecutive_failures"));
    return out;
}
static const char *ringctl_cell_breaker_opened(ringctl_object_t row, char *out, size_t capacity) {
    ringctl_object_t breaker;
    if (!ringctl_child(row, "breaker", JSON_TYPE_OBJECT, &breaker)) return "-";
    snprintf(out, capacity, "%lld", (long long)ringctl_integer(breaker, "times_opened"));
    return out;
}
/* Each key by its place in the upstream's list: "ok", "open" (its
 * breaker), or "refused 401 (retry in 42 s)". */
static const char *ringctl_cell_upstream_keys(ringctl_object_t row, char *out, size_t capacity) {
    ringctl_object_t keys;
    if (!ringctl_child(row, "keys", JSON_TYPE_ARRAY, &keys)) return "-";
    text_buffer_t buffer = {.bytes = out, .capacity = capacity - 1};
    uint32_t cursor = 0;
    json_span_t element;
    while (admin_json_array_next((const uint8_t *)keys.document, keys.length, keys.span, &cursor, &element)) {
        ringctl_object_t key = {keys.document, keys.length, element};
        if (buffer.length > 0) text_buffer_text(&buffer, ", ");
        text_buffer_format(&buffer, "#%lld ", (long long)ringctl_integer(key, "index"));
        char flag[16];
        if (strcmp(ringctl_text(key, "in_rotation", flag, sizeof flag), "false") == 0) {
            text_buffer_format(&buffer, "refused %lld", (long long)ringctl_integer(key, "refused_status"));
            int64_t retry_ms = ringctl_integer(key, "retry_in_ms");
            if (retry_ms > 0) text_buffer_format(&buffer, " (retry in %lld s)", (long long)((retry_ms + 999) / 1000));
            continue;
        }
        ringctl_object_t breaker;
        char state[32] = "closed";
        if (ringctl_child(key, "breaker", JSON_TYPE_OBJECT, &breaker)) ringctl_text(breaker, "state", state, sizeof state);
        text_buffer_text(&buffer, strcmp(state, "closed") == 0 ? "ok" : state);
    }
    if (buffer.overflow) return "(many)";
    out[buffer.length] = '\0';
    return buffer.length > 0 ? out : "none";
}

static const ringctl_column_t ringctl_upstream_columns[] = {
    {"NAME", ringctl_cell_name, false},           {"BREAKER", ringctl_cell_breaker, false},
    {"FAILURES", ringctl_cell_breaker_failures, true}, {"OPENED", ringctl_cell_breaker_opened, true},
    {"KEYS", ringctl_cell_upstream_keys, false},
};

static const ringctl_column_t ringctl_user_columns[] = {
    {"ID", ringctl_cell_id, true},          {"EMAIL", ringctl_cell_email, false},
    {"STATUS", ringctl_cell_status, false}, {"BALANCE", ringctl_cell_balance, true},
    {"AVAILABLE", ringctl_cell_available, true}, {"PASSWORD", ringctl_cell_password, false},
    {"CREATED (UTC)", ringctl_cell_created, false},
};

static const ringctl_column_t ringctl_key_columns[] = {
    {"ID", ringctl_cell_id, true},          {"USER", ringctl_cell_user_id, true},
    {"NAME", ringctl_cell_name, false},     {"KEY", ringctl_cell_masked, false},
    {"STATUS", ringctl_cell_key_status, false}, {"TIER", ringctl_cell_tier, true},
    {"MODELS", ringctl_cell_models, false}, {"EXPIRES (UTC)", ringctl_cell_expires, false},
    {"CAP", ringctl_cell_cap, true},        {"SPENT", ringctl_cell_spent, true},
};

static const ringctl_column_t ringctl_usage_columns[] = {
    {"TIME (UTC)", ringctl_cell_created, false}, {"USER", ringctl_cell_user_id, true},
    {"KEY", ringctl_cell_key_id, true},          {"MODEL", ringctl_cell_model, false},
    {"PROMPT", ringctl_cell_prompt, true},       {"COMPLETION", ringctl_cell_completion, true},
    {"COST", ringctl_cell_cost, true},           {"STATUS", ringctl_cell_usage_status, false},
    {"REQUEST", ringctl_cell_request, false},
};

static const ringctl_column_t ringctl_audit_columns[] = {
    {"TIME (UTC)", ringctl_cell_time_ms, false}, {"ADMIN", ringctl_cell_admin, false},
    {"ACTION", ringctl_cell_action, false},      {"TARGET", ringctl_cell_target, false},
    {"DETAILS", ringctl_cell_details, false},
};

/* ---- Printing one user or key ---- */

static void ringctl_print_user(ringctl_object_t user) {
    char a[RINGCTL_CELL_BYTES], b[RINGCTL_CELL_BYTES], c[RINGCTL_CELL_BYTES];
    printf("user %s  %s\n", ringctl_text(user, "id", a, sizeof a), ringctl_text(user, "email", b, sizeof b));
    printf("  status     %s\n", ringctl_text(user, "status", a, sizeof a));
    printf("  balance    %s (available %s: the balance minus open holds)\n", ringctl_cell_balance(user, b, sizeof b),
           ringctl_cell_available(user, c, sizeof c));
    printf("  password   %s\n", ringctl_cell_password(user, a, sizeof a));
    printf("  created    %s UTC\n", ringctl_cell_created(user, a, sizeof a));
}

static void ringctl_print_key(ringctl_object_t key) {
    char a[RINGCTL_CELL_BYTES], b[RINGCTL_CELL_BYTES], c[RINGCTL_CELL_BYTES];
    printf("key %s  \"%s\"  %s\n", ringctl_text(key, "id", a, sizeof a), ringctl_text(key, "name", b, sizeof b),
           ringctl_cell_masked(key, c, sizeof c));
    printf("  user       %s\n", ringctl_text(key, "user_id", a, sizeof a));
    printf("  status     %s\n", ringctl_cell_key_status(key, a, sizeof a));
    printf("  models     %s\n", ringctl_cell_models(key, a, sizeof a));
    const char *tier = ringctl_text(key, "tier", a, sizeof a);
    printf("  tier       %s\n", strcmp(tier, "-") == 0 ? "default" : tier);
    ringctl_object_t limits;
    if (ringctl_child(key, "limits", JSON_TYPE_OBJECT, &limits)) {
        for (uint32_t kind = 0; kind < CONFIG_LIMIT_COUNT; kind++) {
            const char *name = config_limit_name((config_limit_kind_t)kind);
            const char *value = ringctl_text(limits, name, b, sizeof b);
            if (strcmp(value, "-") != 0) printf("  limit      %s = %s%s\n", name, value, strcmp(value, "0") == 0 ? " (unlimited)" : "");
        }
    }
    const char *quota = ringctl_text(key, "token_quota", a, sizeof a);
    printf("  tokens     %s used of %s\n", ringctl_text(key, "tokens_used", b, sizeof b),
           strcmp(quota, "-") == 0 ? "no quota" : quota);
    const char *expires = ringctl_cell_expires(key, a, sizeof a);
    printf("  expires    %s%s\n", expires, strcmp(expires, "never") == 0 ? "" : " UTC");
    const char *cap = ringctl_cell_cap(key, a, sizeof a);
    printf("  spend cap  %s\n", strcmp(cap, "-") == 0 ? "none" : cap);
    printf("  spent      %s\n", ringctl_cell_spent(key, a, sizeof a));
    printf("  created    %s UTC\n", ringctl_cell_created(key, a, sizeof a));
}

/* Prints the answer: raw with --json, else through `print`. */
static int ringctl_show(ringctl_t *ctl, void (*print)(ringctl_object_t object)) {
    if (ctl->json) {
        ringctl_print_raw(ctl);
        return RINGCTL_EXIT_OK;
    }
    if (!ringctl_answer_valid(ctl)) return RINGCTL_EXIT_FAILED;
    print(ringctl_root(ctl));
    return RINGCTL_EXIT_OK;
}

/* Prints a list answer as a table with a "more" hint. */
static int ringctl_show_list(ringctl_t *ctl, const ringctl_column_t *columns, uint32_t count, const char *empty,
                             const char *more_hint) {
    if (ctl->json) {
        ringctl_print_raw(ctl);
        return RINGCTL_EXIT_OK;
    }
    if (!ringctl_answer_valid(ctl)) return RINGCTL_EXIT_FAILED;
    ringctl_object_t root = ringctl_root(ctl), data;
    if (!ringctl_child(root, "data", JSON_TYPE_ARRAY, &data)) {
        ringctl_error("the relay's answer has no data list");
        return RINGCTL_EXIT_FAILED;
    }
    ringctl_table(data, columns, count, empty);
    if (ringctl_has_more(root) && more_hint != NULL) {
        printf("(more entries: %s %lld)\n", more_hint, (long long)ringctl_last_id(data));
    }
    return RINGCTL_EXIT_OK;
}

/* ---- JSON request bodies ---- */

typedef struct ringctl_body {
    char bytes[RINGCTL_REQUEST_BYTES];
    text_buffer_t buffer;
    bool first;
} ringctl_body_t;

static void ringctl_body_begin(ringctl_body_t *body) {
    body->buffer = (text_buffer_t){.bytes = body->bytes, .capacity = sizeof body->bytes - 1};
    body->first = true;
    text_buffer_text(&body->buffer, "{");
}

static void ringctl_body_key(ringctl_body_t *body, const char *name) {
    if (!body->first) text_buffer_text(&body->buffer, ",");
    body->first = false;
    text_buffer_json_string(&body->buffer, name, strlen(name));
    text_buffer_text(&body->buffer, ":");
}

static void ringctl_body_string(ringctl_body_t *body, const char *name, const char *value) {
    ringctl_body_key(body, name);
    text_buffer_json_string(&body->buffer, value, strlen(value));
}

static void ringctl_body_raw(ringctl_body_t *body, const char *name, const char *value) {
    ringctl_body_key(body, name);
    text_buffer_text(&body->buffer, value);
}

static void ringctl_body_u64(ringctl_body_t *body, const char *name, uint64_t value) {
    ringctl_body_key(body, name);
    text_buffer_format(&body->buffer, "%llu", (unsigned long long)value);
}

static const char *ringctl_body_end(ringctl_body_t *body) {
    text_buffer_text(&body->buffer, "}");
    if (body->buffer.overflow) return NULL;
    body->bytes[body->buffer.length] = '\0';
    return body->bytes;
}

/* --models: "all" (null) or comma-separated names (a JSON array). */
static bool ringctl_body_models(ringctl_body_t *body, const char *models) {
    if (strcmp(models, "all") == 0) {
        ringctl_body_raw(body, "models", "null");
        return true;
    }
    ringctl_body_key(body, "models");
    text_buffer_text(&body->buffer, "[");
    const char *name = models;
    bool first = true;
    for (;;) {
        const char *end = strchr(name, ',');
        size_t length = end != NULL ? (size_t)(end - name) : strlen(name);
        if (length == 0) {
            ringctl_error("--models: empty model name in '%s' (use a,b or all)", models);
            return false;
        }
        if (!first) text_buffer_text(&body->buffer, ",");
        first = false;
        text_buffer_json_string(&body->buffer, name, length);
        if (end == NULL) break;
        name = end + 1;
    }
    text_buffer_text(&body->buffer, "]");
    return true;
}

/* A setting's word for "none" (never, none, default) sends the member as
 * null: true when `text` is that word. */
static bool ringctl_body_null_word(ringctl_body_t *body, const char *member, const char *text, const char *word) {
    if (strcmp(text, word) != 0) return false;
    ringctl_body_raw(body, member, "null");
    return true;
}

/* --expires: "never" (null) or a time. */
static bool ringctl_body_expires(ringctl_body_t *body, const char *expires) {
    if (ringctl_body_null_word(body, "expires_at", expires, "never")) return true;
    int64_t ms = 0;
    if (!ringctl_time("--expires", expires, &ms)) return false;
    ringctl_body_u64(body, "expires_at", (uint64_t)ms);
    return true;
}

/* --cap: "none" (null) or an amount. */
static bool ringctl_body_cap(ringctl_body_t *body, const char *cap) {
    if (ringctl_body_null_word(body, "spend_cap", cap, "none")) return true;
    int64_t micros = 0;
    if (!ringctl_money("--cap", cap, &micros)) return false;
    ringctl_body_string(body, "spend_cap", cap);
    return true;
}

/* --tier: a [tier NAME] of the relay's config, or "default". */
static bool ringctl_body_tier(ringctl_body_t *body, const char *tier) {
    if (ringctl_body_null_word(body, "tier", tier, "default")) return true;
    if (tier[0] == '\0') {
        ringctl_error("--tier: name a [tier NAME] of the config, or default");
        return false;
    }
    ringctl_body_string(body, "tier", tier);
    return true;
}

/* --quota: a number of tokens, or "none". */
static bool ringctl_body_quota(ringctl_body_t *body, const char *quota) {
    if (ringctl_body_null_word(body, "token_quota", quota, "none")) return true;
    uint64_t value = 0;
    if (!ringctl_count("--quota", quota, LIMIT_VALUE_MAX, &value)) return false;
    if (value == 0) {
        ringctl_error("--quota must be a number of tokens from 1, or none");
        return false;
    }
    ringctl_body_u64(body, "token_quota", value);
    return true;
}

/* NAME=VALUE: one limit of the key; VALUE a number (0 = unlimited) or
 * "default" (the tier's). */
static bool ringctl_body_limit(ringctl_body_t *body, const char *setting) {
    const char *equals = strchr(setting, '=');
    size_t name_length = equals != NULL ? (size_t)(equals - setting) : 0;
    uint32_t kind = CONFIG_LIMIT_COUNT;
    for (uint32_t candidate = 0; candidate < CONFIG_LIMIT_COUNT && equals != NULL; candidate++) {
        const char *name = config_limit_name((config_limit_kind_t)candidate);
        if (strlen(name) == name_length && memcmp(name, setting, name_length) == 0) kind = candidate;
    }
    if (kind == CONFIG_LIMIT_COUNT) {
        ringctl_error("LIMIT must be NAME=VALUE with NAME one of requests_per_minute, tokens_per_minute, "
                      "requests_per_day, tokens_per_day, concurrent_requests");
        return false;
    }
    char member[96];
    snprintf(member, sizeof member, "{\"%s\":", config_limit_name((config_limit_kind_t)kind));
    const char *value = equals + 1;
    char object[160];
    if (strcmp(value, "default") == 0) {
        snprintf(object, sizeof object, "%snull}", member);
    } else {
        uint64_t number = 0;
        if (!ringctl_count("VALUE", value, 4294967294ull, &number)) return false;
        snprintf(object, sizeof object, "%s%llu}", member, (unsigned long long)number);
    }
    ringctl_body_raw(body, "limits", object);
    return true;
}

/* ---- Query strings ---- */

typedef struct ringctl_query {
    char path[RINGCTL_PATH_BYTES];
    text_buffer_t buffer;
    bool first;
} ringctl_query_t;

static void ringctl_query_begin(ringctl_query_t *query, const char *path) {
    query->buffer = (text_buffer_t){.bytes = query->path, .capacity = sizeof query->path - 1};
    text_buffer_text(&query->buffer, path);
    query->first = true;
}

static void ringctl_query_add(ringctl_query_t *query, const char *name, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
static void ringctl_query_add(ringctl_query_t *query, const char *name, const char *format, ...) {
    text_buffer_text(&query->buffer, query->first ? "?" : "&");
    query->first = false;
    text_buffer_text(&query->buffer, name);
    text_buffer_text(&query->buffer, "=");
    char value[256];
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(value, sizeof value, format, arguments);
    va_end(arguments);
    text_buffer_text(&query->buffer, value); /* numbers and fixed words only: nothing to escape */
}

static const char *ringctl_query_end(ringctl_query_t *query) {
    RW_ASSERT(!query->buffer.overflow);
    query->path[query->buffer.length] = '\0';
    return query->path;
}

/* --limit / --after for lists. */
static bool ringctl_query_paging(ringctl_query_t *query, const ringctl_arguments_t *arguments, uint64_t limit_max) {
    uint64_t value = 0;
    if (arguments->limit != NULL) {
        if (!ringctl_count("--limit", arguments->limit, limit_max, &value)) return false;
        ringctl_query_add(query, "limit", "%llu", (unsigned long long)value);
    }
    if (arguments->after != NULL) {
        if (!ringctl_count("--after", arguments->after, UINT64_MAX / 2, &value)) return false;
        ringctl_query_add(query, "after", "%llu", (unsigned long long)value);
    }
    return true;
}

/* ---- Commands: users ---- */

/* One line from stdin without its line ending (--password-stdin). */
static bool ringctl_read_password(char *out, size_t capacity) {
    if (fgets(out, (int)capacity, stdin) == NULL) {
        ringctl_error("--password-stdin: nothing to read on standard input");
        return false;
    }
    size_t length = strlen(out);
    if (length > 0 && out[length - 1] == '\n') out[--length] = '\0';
    if (length > 0 && out[length - 1] == '\r') out[--length] = '\0';
    return true;
}

static int ringctl_users_create(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    if (arguments->email == NULL) {
        ringctl_error("users create: --email is required");
        return RINGCTL_EXIT_USAGE;
    }
    static char password[2048];
    const char *chosen = arguments->password;
    if (arguments->password_stdin) {
        if (chosen != NULL) {
            ringctl_error("users create: give --password or --password-stdin, not both");
            return RINGCTL_EXIT_USAGE;
        }
        if (!ringctl_read_password(password, sizeof password)) return RINGCTL_EXIT_USAGE;
        chosen = password;
    }
    ringctl_body_t body;
    ringctl_body_begin(&body);
    ringctl_body_string(&body, "email", arguments->email);
    if (chosen != NULL) ringctl_body_string(&body, "password", chosen);
    if (arguments->balance != NULL) {
        int64_t micros = 0;
        if (!ringctl_money("--balance", arguments->balance, &micros)) return RINGCTL_EXIT_USAGE;
        ringctl_body_string(&body, "balance", arguments->balance);
    }
    const char *text = ringctl_body_end(&body);
    memset(password, 0, sizeof password);
    if (text == NULL) {
        ringctl_error("users create: the arguments are too long");
        return RINGCTL_EXIT_USAGE;
    }
    int status = ringctl_call(ctl, "POST", "/admin/users", text, NULL);
    memset(body.bytes, 0, sizeof body.bytes);
    if (status != RINGCTL_EXIT_OK) return status;
    return ringctl_show(ctl, ringctl_print_user);
}

static int ringctl_users_list(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    ringctl_query_t query;
    ringctl_query_begin(&query, "/admin/users");
    if (!ringctl_query_paging(&query, arguments, 1000)) return RINGCTL_EXIT_USAGE;
    int status = ringctl_call(ctl, "GET", ringctl_query_end(&query), NULL, NULL);
    if (status != RINGCTL_EXIT_OK) return status;
    return ringctl_show_list(ctl, ringctl_user_columns, RW_ARRAY_LENGTH(ringctl_user_columns), "no users",
                             "ringctl users list --after");
}

static void ringctl_print_user_and_keys(ringctl_object_t user) {
    ringctl_print_user(user);
    ringctl_object_t keys;
    printf("\n");
    if (ringctl_child(user, "keys", JSON_TYPE_ARRAY, &keys)) {
        ringctl_table(keys, ringctl_key_columns, RW_ARRAY_LENGTH(ringctl_key_columns), "no API keys");
    }
}

static int ringctl_users_show(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    uint64_t user = 0;
    if (!ringctl_id("USER", arguments->user, &user)) return RINGCTL_EXIT_USAGE;
    char path[64];
    snprintf(path, sizeof path, "/admin/users/%llu", (unsigned long long)user);
    int status = ringctl_call(ctl, "GET", path, NULL, NULL);
    if (status != RINGCTL_EXIT_OK) return status;
    return ringctl_show(ctl, ringctl_print_user_and_keys);
}

/* ---- Commands: keys ---- */

static void ringctl_print_new_key(ringctl_object_t key) {
    char text[RINGCTL_CELL_BYTES];
    ringctl_print_key(key);
    printf("\nAPI key (shown only this once; store it now):\n%s\n", ringctl_text(key, "key", text, sizeof text));
}

static int ringctl_keys_create(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    uint64_t user = 0;
    if (!ringctl_id("--user", arguments->user, &user)) return RINGCTL_EXIT_USAGE;
    ringctl_body_t body;
    ringctl_body_begin(&body);
    ringctl_body_u64(&body, "user_id", user);
    if (arguments->name != NULL) ringctl_body_string(&body, "name", arguments->name);
    if (arguments->models != NULL && !ringctl_body_models(&body, arguments->models)) return RINGCTL_EXIT_USAGE;
    if (arguments->tier != NULL && !ringctl_body_tier(&body, arguments->tier)) return RINGCTL_EXIT_USAGE;
    if (arguments->quota != NULL && !ringctl_body_quota(&body, arguments->quota)) return RINGCTL_EXIT_USAGE;
    if (arguments->expires != NULL && !ringctl_body_expires(&body, arguments->expires)) return RINGCTL_EXIT_USAGE;
    if (arguments->cap != NULL && !ringctl_body_cap(&body, arguments->cap)) return RINGCTL_EXIT_USAGE;
    const char *text = ringctl_body_end(&body);
    if (text == NULL) {
        ringctl_error("keys create: the arguments are too long");
        return RINGCTL_EXIT_USAGE;
    }
    int status = ringctl_call(ctl, "POST", "/admin/keys", text, NULL);
    if (status != RINGCTL_EXIT_OK) return status;
    return ringctl_show(ctl, ringctl_print_new_key);
}

static int ringctl_keys_list(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    ringctl_query_t query;
    ringctl_query_begin(&query, "/admin/keys");
    if (arguments->user != NULL) {
        uint64_t user = 0;
        if (!ringctl_id("--user", arguments->user, &user)) return RINGCTL_EXIT_USAGE;
        ringctl_query_add(&query, "user_id", "%llu", (unsigned long long)user);
    }
    if (!ringctl_query_paging(&query, arguments, 1000)) return RINGCTL_EXIT_USAGE;
    int status = ringctl_call(ctl, "GET", ringctl_query_end(&query), NULL, NULL);
    if (status != RINGCTL_EXIT_OK) return status;
    return ringctl_show_list(ctl, ringctl_key_columns, RW_ARRAY_LENGTH(ringctl_key_columns), "no API keys",
                             "ringctl keys list --after");
}

static int ringctl_key_path(const ringctl_arguments_t *arguments, const char *suffix, char *path, size_t capacity) {
    uint64_t key = 0;
    if (!ringctl_id("KEY", arguments->key, &key)) return RINGCTL_EXIT_USAGE;
    snprintf(path, capacity, "/admin/keys/%llu%s", (unsigned long long)key, suffix);
    return RINGCTL_EXIT_OK;
}

static int ringctl_keys_show(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    char path[64];
    if (ringctl_key_path(arguments, "", path, sizeof path) != RINGCTL_EXIT_OK) return RINGCTL_EXIT_USAGE;
    int status = ringctl_call(ctl, "GET", path, NULL, NULL);
    if (status != RINGCTL_EXIT_OK) return status;
    return ringctl_show(ctl, ringctl_print_key);
}

static int ringctl_keys_status(ringctl_t *ctl, const ringctl_arguments_t *arguments, const char *suffix) {
    char path[64];
    if (ringctl_key_path(arguments, suffix, path, sizeof path) != RINGCTL_EXIT_OK) return RINGCTL_EXIT_USAGE;
    int status = ringctl_call(ctl, "POST", path, NULL, NULL);
    if (status != RINGCTL_EXIT_OK) return status;
    return ringctl_show(ctl, ringctl_print_key);
}

static int ringctl_keys_disable(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    return ringctl_keys_status(ctl, arguments, "/disable");
}

static int ringctl_keys_enable(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    return ringctl_keys_status(ctl, arguments, "/enable");
}

/* PATCH /admin/keys/{id} with one setting. */
static int ringctl_keys_patch(ringctl_t *ctl, const ringctl_arguments_t *arguments, const char *what,
                              const char *value, bool (*add)(ringctl_body_t *body, const char *value)) {
    char path[64];
    if (ringctl_key_path(arguments, "", path, sizeof path) != RINGCTL_EXIT_OK) return RINGCTL_EXIT_USAGE;
    if (value == NULL) {
        ringctl_error("%s is required (see --help)", what);
        return RINGCTL_EXIT_USAGE;
    }
    ringctl_body_t body;
    ringctl_body_begin(&body);
    if (!add(&body, value)) return RINGCTL_EXIT_USAGE;
    const char *text = ringctl_body_end(&body);
    if (text == NULL) {
        ringctl_error("%s is too long", what);
        return RINGCTL_EXIT_USAGE;
    }
    int status = ringctl_call(ctl, "PATCH", path, text, NULL);
    if (status != RINGCTL_EXIT_OK) return status;
    return ringctl_show(ctl, ringctl_print_key);
}

static int ringctl_keys_set_models(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    return ringctl_keys_patch(ctl, arguments, "MODELS", arguments->models, ringctl_body_models);
}
static int ringctl_keys_set_tier(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    return ringctl_keys_patch(ctl, arguments, "TIER", arguments->tier, ringctl_body_tier);
}
static int ringctl_keys_set_limit(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    return ringctl_keys_patch(ctl, arguments, "LIMIT", arguments->setting, ringctl_body_limit);
}
static int ringctl_keys_set_quota(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    return ringctl_keys_patch(ctl, arguments, "TOKENS", arguments->quota, ringctl_body_quota);
}
static int ringctl_keys_set_expiry(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    return ringctl_keys_patch(ctl, arguments, "WHEN", arguments->expires, ringctl_body_expires);
}
static int ringctl_keys_set_cap(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    return ringctl_keys_patch(ctl, arguments, "AMOUNT", arguments->cap, ringctl_body_cap);
}

/* ---- Commands: balance ---- */

static void ringctl_print_balance(ringctl_object_t user) {
    char a[RINGCTL_CELL_BYTES], b[RINGCTL_CELL_BYTES], c[RINGCTL_CELL_BYTES], d[RINGCTL_CELL_BYTES];
    char e[RINGCTL_CELL_BYTES];
    printf("user %s (%s): balance %s, available %s, %s\n", ringctl_text(user, "id", a, sizeof a),
           ringctl_text(user, "email", b, sizeof b), ringctl_cell_balance(user, c, sizeof c),
           ringctl_cell_available(user, d, sizeof d), ringctl_text(user, "status", e, sizeof e));
}

static int ringctl_balance_change(ringctl_t *ctl, const ringctl_arguments_t *arguments, const char *op) {
    uint64_t user = 0;
    if (!ringctl_id("USER", arguments->user, &user)) return RINGCTL_EXIT_USAGE;
    if (arguments->amount == NULL) {
        ringctl_error("AMOUNT is required (e.g. 1.50)");
        return RINGCTL_EXIT_USAGE;
    }
    int64_t micros = 0;
    if (!ringctl_money("AMOUNT", arguments->amount, &micros)) return RINGCTL_EXIT_USAGE;
    if (micros == 0) {
        ringctl_error("AMOUNT must be above zero");
        return RINGCTL_EXIT_USAGE;
    }
    ringctl_body_t body;
    ringctl_body_begin(&body);
    ringctl_body_string(&body, "op", op);
    ringctl_body_string(&body, "amount", arguments->amount);
    char path[64];
    snprintf(path, sizeof path, "/admin/users/%llu/balance", (unsigned long long)user);
    int status = ringctl_call(ctl, "POST", path, ringctl_body_end(&body), NULL);
    if (status != RINGCTL_EXIT_OK) return status;
    return ringctl_show(ctl, ringctl_print_balance);
}

static int ringctl_balance_top_up(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    return ringctl_balance_change(ctl, arguments, "top_up");
}
static int ringctl_balance_deduct(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    return ringctl_balance_change(ctl, arguments, "deduct");
}

static int ringctl_balance_status(ringctl_t *ctl, const ringctl_arguments_t *arguments, const char *suffix) {
    uint64_t user = 0;
    if (!ringctl_id("USER", arguments->user, &user)) return RINGCTL_EXIT_USAGE;
    char path[64];
    snprintf(path, sizeof path, "/admin/users/%llu/%s", (unsigned long long)user, suffix);
    int status = ringctl_call(ctl, "POST", path, NULL, NULL);
    if (status != RINGCTL_EXIT_OK) return status;
    return ringctl_show(ctl, ringctl_print_balance);
}

static int ringctl_balance_suspend(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    return ringctl_balance_status(ctl, arguments, "suspend");
}
static int ringctl_balance_resume(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    return ringctl_balance_status(ctl, arguments, "resume");
}

/* ---- Commands: usage and audit ---- */

/* The usage filters shared by list and export. */
static bool ringctl_usage_query(ringctl_query_t *query, const ringctl_arguments_t *arguments, const char *format,
                                uint64_t default_limit) {
    ringctl_query_begin(query, "/admin/usage");
    ringctl_query_add(query, "format", "%s", format);
    uint64_t id = 0;
    if (arguments->user != NULL) {
        if (!ringctl_id("--user", arguments->user, &id)) return false;
        ringctl_query_add(query, "user_id", "%llu", (unsigned long long)id);
    }
    if (arguments->key != NULL) {
        if (!ringctl_id("--key", arguments->key, &id)) return false;
        ringctl_query_add(query, "key_id", "%llu", (unsigned long long)id);
    }
    int64_t from = 0, to = 0;
    if (arguments->from != NULL) {
        if (!ringctl_time("--from", arguments->from, &from)) return false;
        ringctl_query_add(query, "from", "%lld", (long long)from);
    }
    if (arguments->to != NULL) {
        if (!ringctl_time("--to", arguments->to, &to)) return false;
        ringctl_query_add(query, "to", "%lld", (long long)to);
    }
    if (arguments->from != NULL && arguments->to != NULL && to <= from) {
        ringctl_error("--to must be later than --from");
        return false;
    }
    uint64_t limit = default_limit;
    if (arguments->limit != NULL && !ringctl_count("--limit", arguments->limit, UINT32_MAX, &limit)) return false;
    if (limit > 0) ringctl_query_add(query, "limit", "%llu", (unsigned long long)limit);
    return true;
}

static int ringctl_usage_list(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    ringctl_query_t query;
    if (!ringctl_usage_query(&query, arguments, "json", RINGCTL_USAGE_LIMIT_DEFAULT)) return RINGCTL_EXIT_USAGE;
    int status = ringctl_call(ctl, "GET", ringctl_query_end(&query), NULL, NULL);
    if (status != RINGCTL_EXIT_OK) return status;
    if (ctl->json) {
        ringctl_print_raw(ctl);
        return RINGCTL_EXIT_OK;
    }
    if (!ringctl_answer_valid(ctl)) return RINGCTL_EXIT_FAILED;
    ringctl_table(ringctl_root(ctl), ringctl_usage_columns, RW_ARRAY_LENGTH(ringctl_usage_columns),
                  "no usage records");
    return RINGCTL_EXIT_OK;
}

static int ringctl_usage_export(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    const char *format = arguments->format != NULL ? arguments->format : "csv";
    if (strcmp(format, "csv") != 0 && strcmp(format, "jsonl") != 0 && strcmp(format, "json") != 0) {
        ringctl_error("--format must be csv, jsonl or json, got '%s'", format);
        return RINGCTL_EXIT_USAGE;
    }
    ringctl_query_t query;
    if (!ringctl_usage_query(&query, arguments, format, 0)) return RINGCTL_EXIT_USAGE;
    FILE *sink = stdout;
    if (arguments->output != NULL && strcmp(arguments->output, "-") != 0) {
        sink = fopen(arguments->output, "wb");
        if (sink == NULL) {
            ringctl_error("cannot write %s: %s", arguments->output, strerror(errno));
            return RINGCTL_EXIT_USAGE;
        }
    }
    int status = ringctl_call(ctl, "GET", ringctl_query_end(&query), NULL, sink);
    bool flushed = fflush(sink) == 0;
    if (sink != stdout) {
        flushed = fclose(sink) == 0 && flushed;
        if (status != RINGCTL_EXIT_OK || !flushed) unlink(arguments->output); /* never leave a partial export */
    }
    if (status == RINGCTL_EXIT_OK && !flushed) {
        ringctl_error("cannot write the export: %s", strerror(errno));
        return RINGCTL_EXIT_FAILED;
    }
    if (status == RINGCTL_EXIT_OK && sink != stdout) {
        fprintf(stderr, "ringctl: wrote %llu bytes to %s\n", (unsigned long long)ctl->response.sink_bytes,
                arguments->output);
    }
    return status;
}

static int ringctl_audit_list(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    ringctl_query_t query;
    ringctl_query_begin(&query, "/admin/audit");
    uint64_t limit = 0;
    if (arguments->limit != NULL) {
        if (!ringctl_count("--limit", arguments->limit, 1000, &limit)) return RINGCTL_EXIT_USAGE;
        ringctl_query_add(&query, "limit", "%llu", (unsigned long long)limit);
    }
    int status = ringctl_call(ctl, "GET", ringctl_query_end(&query), NULL, NULL);
    if (status != RINGCTL_EXIT_OK) return status;
    return ringctl_show_list(ctl, ringctl_audit_columns, RW_ARRAY_LENGTH(ringctl_audit_columns), "no audit entries",
                             NULL);
}

/* ---- Commands: upstreams ---- */

static int ringctl_upstreams_list(ringctl_t *ctl, const ringctl_arguments_t *arguments) {
    int status = ringctl_call(ctl, "GET", "/admin/upstreams", NULL, NULL);
    if (status != RINGCTL_EXIT_OK) return status;
    return ringctl_show_list(ctl, ringctl_upstream_columns, RW_ARRAY_LENGTH(ringctl_upstream_columns), "no upstreams",
                             NULL);
}

/* ---- The command table and help ---- */

static const ringctl_command_t ringctl_commands[] = {
    {"users", "create", "--email EMAIL [--password-stdin | --password PASSWORD] [--balance AMOUNT]",
     "create an account",
     "Creates an account. Without a password it cannot log in (API keys still work).\n"
     "--password-stdin reads the password from the first line of standard input (keeps it out of\n"
     "the process list); --password is shown to anyone who can list processes. The starting\n"
     "balance defaults to the relay's free_grant.",
     {NULL, NULL}, "email password password-stdin balance", ringctl_users_create},
    {"users", "list", "[--limit N] [--after USER]", "list accounts (100 per page by default)",
     "Lists accounts in id order: balance (settled), available (balance minus open holds).",
     {NULL, NULL}, "limit after", ringctl_users_list},
    {"users", "show", "USER", "show one account and its API keys", "Shows an account and its keys (masked).",
     {"user", NULL}, "user", ringctl_users_show},
    {"keys", "create",
     "--user USER [--name NAME] [--models a,b|all] [--tier NAME] [--quota TOKENS] [--expires WHEN|never] "
     "[--cap AMOUNT|none]",
     "create an API key (printed once)",
     "Creates an API key for USER and prints it once; only its hash is kept. --models limits it to\n"
     "some configured models (default all); --tier names a [tier NAME] of the config (default: the\n"
     "[rate_limits] key_tier); --quota limits the tokens it may use in all; --cap limits what it may\n"
     "spend in total.",
     {NULL, NULL}, "user name models tier quota expires cap", ringctl_keys_create},
    {"keys", "list", "[--user USER] [--limit N] [--after KEY]", "list API keys (masked)",
     "Lists keys, all or one user's, masked as sk-XXXXXXXX...XXXX.", {NULL, NULL}, "user limit after",
     ringctl_keys_list},
    {"keys", "show", "KEY", "show one API key", "Shows one key (masked).", {"key", NULL}, "key", ringctl_keys_show},
    {"keys", "disable", "KEY", "disable a key (requests with it get 401)", "Disables a key at once.",
     {"key", NULL}, "key", ringctl_keys_disable},
    {"keys", "enable", "KEY", "enable a disabled key", "Enables a key again.", {"key", NULL}, "key",
     ringctl_keys_enable},
    {"keys", "set-models", "KEY MODELS|all", "limit a key to some models",
     "MODELS is a comma-separated list of configured model names, or all.", {"key", "models"}, "key models",
     ringctl_keys_set_models},
    {"keys", "set-tier", "KEY TIER|default", "set a key's rate-limit tier",
     "TIER is a [tier NAME] of the relay's config; default is [rate_limits] key_tier. It applies at\n"
     "once, on every relay thread.",
     {"key", "tier"}, "key tier", ringctl_keys_set_tier},
    {"keys", "set-limit", "KEY NAME=VALUE|NAME=default", "set one rate limit of a key over its tier's",
     "NAME is requests_per_minute, tokens_per_minute, requests_per_day, tokens_per_day or\n"
     "concurrent_requests; VALUE a number (0 = unlimited), default the tier's value. It applies at once.",
     {"key", "setting"}, "key setting", ringctl_keys_set_limit},
    {"keys", "set-quota", "KEY TOKENS|none", "set the total tokens a key may use",
     "TOKENS counts prompt and completion tokens over the key's life; none removes the quota. A key\n"
     "past it gets 429 token_quota_exhausted.",
     {"key", "quota"}, "key quota", ringctl_keys_set_quota},
    {"keys", "set-expiry", "KEY WHEN|never", "set when a key expires",
     "WHEN is 2026-01-31, 2026-01-31T12:00:00Z (UTC unless an offset is given) or milliseconds\n"
     "since the epoch; never removes the expiry.",
     {"key", "expires"}, "key expires", ringctl_keys_set_expiry},
    {"keys", "set-cap", "KEY AMOUNT|none", "set a key's total spend cap",
     "AMOUNT is money like 1.50; none removes the cap.", {"key", "cap"}, "key cap", ringctl_keys_set_cap},
    {"balance", "top-up", "USER AMOUNT", "add money to an account",
     "Adds AMOUNT (like 1.50) to the account; written to disk before the answer, and audited.",
     {"user", "amount"}, "user amount", ringctl_balance_top_up},
    {"balance", "deduct", "USER AMOUNT", "take money from an account",
     "Takes AMOUNT from what is available (balance minus open holds); refused (exit 2) rather\n"
     "than going below zero.",
     {"user", "amount"}, "user amount", ringctl_balance_deduct},
    {"balance", "suspend", "USER", "suspend an account (requests get 402)", "Suspends the account's wallet.",
     {"user", NULL}, "user", ringctl_balance_suspend},
    {"balance", "resume", "USER", "resume a suspended account", "Lifts a suspension.", {"user", NULL}, "user",
     ringctl_balance_resume},
    {"usage", "list", "[--user USER] [--key KEY] [--from WHEN] [--to WHEN] [--limit N]",
     "show usage records, newest first (20 by default)",
     "Shows usage records newest first. --from is inclusive, --to exclusive; WHEN as for\n"
     "keys set-expiry.",
     {NULL, NULL}, "user key from to limit", ringctl_usage_list},
    {"usage", "export", "[--format csv|jsonl|json] [--user USER] [--key KEY] [--from WHEN] [--to WHEN] [--limit N] [--output FILE]",
     "export usage records (CSV by default)",
     "Streams every matching record (newest first) to standard output or --output FILE: CSV with\n"
     "a header row (RFC 4180), JSON lines, or one JSON array. An interrupted export exits 3 and\n"
     "leaves no partial --output file.",
     {NULL, NULL}, "format user key from to limit output", ringctl_usage_export},
    {"upstreams", "list", "", "show each upstream's circuit breaker and API keys",
     "Per upstream: its breaker over all relay threads (the worst state, on how many threads it\n"
     "is open, the longest run of failures, how often it opened) and each of its API keys by its\n"
     "place in the list: ok, its breaker's state, or refused with the upstream's status and when\n"
     "it is tried again. The keys themselves are never shown.",
     {NULL, NULL}, "", ringctl_upstreams_list},
    {"audit", "list", "[--limit N]", "show the admin audit log, newest first (100 by default)",
     "Every admin change: when, by which admin token (fingerprint), what, on what.", {NULL, NULL}, "limit",
     ringctl_audit_list},
};

static const char ringctl_exit_codes[] =
    "Exit codes:\n"
    "  0  done\n"
    "  1  usage error (bad arguments; nothing was sent)\n"
    "  2  the relay refused the request (4xx: unknown user or key, bad amount, wrong token, ...)\n"
    "  3  cannot connect, the relay failed (5xx), or its answer was cut or unreadable\n";

static void ringctl_usage(FILE *out) {
    fprintf(out,
            "usage: ringctl [OPTIONS] COMMAND SUBCOMMAND [ARGUMENTS]\n"
            "Manage a running Ringway relay through its admin API.\n\n"
            "Options:\n"
            "  --admin-url URL    the admin API (default: the config's admin_listen, $RINGCTL_ADMIN_URL,\n"
            "                     or %s)\n"
            "  --token TOKEN      the admin token (default: the config's admin_token, or $RINGCTL_ADMIN_TOKEN)\n"
            "  --config FILE      read admin_listen and admin_token from a ringway configuration\n"
            "  --json             print the relay's JSON answers as they are (for scripts)\n"
            "  --timeout-ms MS    give up on an unresponsive relay after MS (default %d)\n"
            "  --help, --version\n\n"
            "Commands:\n",
            ringctl_default_url, RINGCTL_TIMEOUT_MS_DEFAULT);
    for (size_t index = 0; index < RW_ARRAY_LENGTH(ringctl_commands); index++) {
        const ringctl_command_t *command = &ringctl_commands[index];
        char name[48];
        snprintf(name, sizeof name, "%s %s", command->group, command->name);
        fprintf(out, "  %-20s %s\n", name, command->summary);
    }
    fprintf(out,
            "\nUSER and KEY are ids (users list, keys list). AMOUNT is money like 1.50 (up to 6 decimals).\n"
            "Run `ringctl COMMAND SUBCOMMAND --help` for the arguments of each.\n\n%s",
            ringctl_exit_codes);
}

static void ringctl_group_usage(FILE *out, const char *group) {
    fprintf(out, "usage: ringctl [OPTIONS] %s SUBCOMMAND [ARGUMENTS]\n\nSubcommands:\n", group);
    for (size_t index = 0; index < RW_ARRAY_LENGTH(ringctl_commands); index++) {
        const ringctl_command_t *command = &ringctl_commands[index];
        if (strcmp(command->group, group) != 0) continue;
        fprintf(out, "  %s %s %s\n      %s\n", group, command->name, command->synopsis, command->summary);
    }
    fprintf(out, "\n%s", ringctl_exit_codes);
}

static void ringctl_command_usage(FILE *out, const ringctl_command_t *command) {
    fprintf(out, "usage: ringctl [OPTIONS] %s %s %s\n%s.\n\n%s\n", command->group, command->name, command->synopsis,
            command->summary, command->details);
    if (command->positionals[0] != NULL) {
        fprintf(out, "Positional arguments may also be given as --%s%s%s.\n", command->positionals[0],
                command->positionals[1] != NULL ? " and --" : "",
                command->positionals[1] != NULL ? command->positionals[1] : "");
    }
    fprintf(out, "Add --json (before the command) for the raw JSON answer.\n\n%s", ringctl_exit_codes);
}

static bool ringctl_group_known(const char *group) {
    for (size_t index = 0; index < RW_ARRAY_LENGTH(ringctl_commands); index++) {
        if (strcmp(ringctl_commands[index].group, group) == 0) return true;
    }
    return false;
}

/* Whether `name` is one of the space-separated words in `list`. */
static bool ringctl_word_in(const char *list, const char *name) {
    size_t length = strlen(name);
    for (const char *at = list; *at != '\0';) {
        const char *end = strchr(at, ' ');
        size_t word = end != NULL ? (size_t)(end - at) : strlen(at);
        if (word == length && strncmp(at, name, length) == 0) return true;
        if (end == NULL) break;
        at = end + 1;
    }
    return false;
}

static const char **ringctl_slot(ringctl_arguments_t *arguments, const char *name) {
    for (size_t index = 0; index < RW_ARRAY_LENGTH(ringctl_flags); index++) {
        if (strcmp(ringctl_flags[index].name, name) == 0) {
            return (const char **)((char *)arguments + ringctl_flags[index].offset);
        }
    }
    return NULL;
}

/* Parses a subcommand's arguments (after its name). Returns -1 when done,
 * or an exit code (0 after --help). */
static int ringctl_parse_arguments(const ringctl_command_t *command, int argc, char **argv,
                                   ringctl_arguments_t *arguments) {
    memset(arguments, 0, sizeof *arguments);
    uint32_t positional = 0;
    for (int index = 0; index < argc; index++) {
        const char *argument = argv[index];
        if (strcmp(argument, "--help") == 0 || strcmp(argument, "-h") == 0) {
            ringctl_command_usage(stdout, command);
            return RINGCTL_EXIT_OK;
        }
        if (strncmp(argument, "--", 2) == 0 && argument[2] != '\0') {
            const char *name = argument + 2;
            char flag[32];
            const char *equals = strchr(name, '=');
            const char *value = NULL;
            if (equals != NULL) {
                snprintf(flag, sizeof flag, "%.*s", (int)(equals - name), name);
                value = equals + 1;
                name = flag;
            }
            if (!ringctl_word_in(command->flags, name)) {
                ringctl_error("%s %s: unknown option --%s (see --help)", command->group, command->name, name);
                return RINGCTL_EXIT_USAGE;
            }
            if (strcmp(name, "password-stdin") == 0) {
                arguments->password_stdin = true;
                continue;
            }
            if (value == NULL) {
                if (index + 1 >= argc) {
                    ringctl_error("%s %s: --%s needs a value", command->group, command->name, name);
                    return RINGCTL_EXIT_USAGE;
                }
                value = argv[++index];
            }
            const char **slot = ringctl_slot(arguments, name);
            RW_ASSERT(slot != NULL);
            if (*slot != NULL) {
                ringctl_error("%s %s: --%s given twice", command->group, command->name, name);
                return RINGCTL_EXIT_USAGE;
            }
            *slot = value;
            continue;
        }
        if (positional >= RW_ARRAY_LENGTH(command->positionals) || command->positionals[positional] == NULL) {
            ringctl_error("%s %s: unexpected argument '%s' (see --help)", command->group, command->name, argument);
            return RINGCTL_EXIT_USAGE;
        }
        const char **slot = ringctl_slot(arguments, command->positionals[positional++]);
        RW_ASSERT(slot != NULL);
        if (*slot != NULL) {
            ringctl_error("%s %s: %s given twice", command->group, command->name, command->positionals[positional - 1]);
            return RINGCTL_EXIT_USAGE;
        }
        *slot = argument;
    }
    return -1;
}

/* --config FILE: admin_listen becomes the URL (a wildcard address means
 * this machine's loopback), admin_token the token. */
static int ringctl_load_config(const char *path, char *url, size_t url_size, char *token, size_t token_size,
                               bool *has_token) {
    static config_t config;
    char error[1024];
    if (config_load(&config, path, error, sizeof error) != 0) {
        ringctl_error("%s", error);
        return RINGCTL_EXIT_USAGE;
    }
    const char *host = config.admin_listen_host;
    if (strcmp(host, "0.0.0.0") == 0 || host[0] == '\0') host = "127.0.0.1";
    if (strcmp(host, "::") == 0) host = "::1";
    bool bracket = strchr(host, ':') != NULL;
    snprintf(url, url_size, "http://%s%s%s:%u", bracket ? "[" : "", host, bracket ? "]" : "",
             (unsigned)config.admin_listen_port);
    *has_token = config.has_admin_token;
    if (config.has_admin_token) snprintf(token, token_size, "%s", config.admin_token);
    memset(config.admin_token, 0, sizeof config.admin_token);
    return RINGCTL_EXIT_OK;
}

int main(int argc, char **argv) {
    static ringctl_t ctl;
    ctl.timeout_ms = RINGCTL_TIMEOUT_MS_DEFAULT;
    const char *url = NULL;
    const char *token = NULL;
    const char *config_path = NULL;
    int index = 1;
    for (; index < argc && strncmp(argv[index], "-", 1) == 0; index++) {
        const char *argument = argv[index];
        const char *value = index + 1 < argc ? argv[index + 1] : NULL;
        if (strcmp(argument, "--help") == 0 || strcmp(argument, "-h") == 0) {
            ringctl_usage(stdout);
            return RINGCTL_EXIT_OK;
        } else if (strcmp(argument, "--version") == 0) {
            printf("ringctl %s\n", RW_VERSION);
            return RINGCTL_EXIT_OK;
        } else if (strcmp(argument, "--json") == 0) {
            ctl.json = true;
        } else if (strcmp(argument, "--admin-url") == 0 || strcmp(argument, "--token") == 0 ||
                   strcmp(argument, "--config") == 0 || strcmp(argument, "--timeout-ms") == 0) {
            if (value == NULL) {
                ringctl_error("%s needs a value", argument);
                return RINGCTL_EXIT_USAGE;
            }
            index++;
            if (strcmp(argument, "--admin-url") == 0) url = value;
            if (strcmp(argument, "--token") == 0) token = value;
            if (strcmp(argument, "--config") == 0) config_path = value;
            if (strcmp(argument, "--timeout-ms") == 0) {
                uint64_t timeout = 0;
                if (!text_parse_u64(value, strlen(value), &timeout) || timeout == 0 || timeout > 3600000) {
                    ringctl_error("--timeout-ms must be 1 to 3600000, got '%s'", value);
                    return RINGCTL_EXIT_USAGE;
                }
                ctl.timeout_ms = (uint32_t)timeout;
            }
        } else {
            ringctl_error("unknown option '%s' (options go before the command; see --help)", argument);
            return RINGCTL_EXIT_USAGE;
        }
    }
    if (index >= argc) {
        ringctl_usage(stderr);
        return RINGCTL_EXIT_USAGE;
    }
    const char *group = argv[index++];
    if (!ringctl_group_known(group)) {
        ringctl_error("unknown command '%s' (see --help)", group);
        return RINGCTL_EXIT_USAGE;
    }
    /* `ringctl upstreams` is `ringctl upstreams list`: a status view that
     * operators type often. */
    bool asks_help = index < argc && (strcmp(argv[index], "--help") == 0 || strcmp(argv[index], "-h") == 0);
    bool implied = strcmp(group, "upstreams") == 0 && !asks_help && (index >= argc || argv[index][0] == '-');
    const char *only = "list";
    if (!implied && (index >= argc || strcmp(argv[index], "--help") == 0 || strcmp(argv[index], "-h") == 0)) {
        bool help = index < argc;
        ringctl_group_usage(help ? stdout : stderr, group);
        return help ? RINGCTL_EXIT_OK : RINGCTL_EXIT_USAGE;
    }
    const char *name = implied ? only : argv[index++];
    for (size_t command = 0; command < RW_ARRAY_LENGTH(ringctl_commands) && ctl.command == NULL; command++) {
        if (strcmp(ringctl_commands[command].group, group) == 0 && strcmp(ringctl_commands[command].name, name) == 0) {
            ctl.command = &ringctl_commands[command];
        }
    }
    if (ctl.command == NULL) {
        ringctl_error("unknown subcommand '%s %s' (see ringctl %s --help)", group, name, group);
        return RINGCTL_EXIT_USAGE;
    }
    ringctl_arguments_t arguments;
    int parsed = ringctl_parse_arguments(ctl.command, argc - index, argv + index, &arguments);
    if (parsed >= 0) return parsed;

    /* Where and with what: flags, then the config file, then the environment. */
    static char config_url[1024], config_token[CONFIG_SECRET_BYTES];
    bool config_has_token = false;
    if (config_path != NULL) {
        int status = ringctl_load_config(config_path, config_url, sizeof config_url, config_token,
                                         sizeof config_token, &config_has_token);
        if (status != RINGCTL_EXIT_OK) return status;
    }
    if (url == NULL && config_path != NULL) url = config_url;
    if (url == NULL) url = getenv("RINGCTL_ADMIN_URL");
    if (url == NULL || url[0] == '\0') url = ringctl_default_url;
    if (token == NULL && config_has_token) token = config_token;
    if (token == NULL) token = getenv("RINGCTL_ADMIN_TOKEN");
    if (token != NULL && token[0] == '\0') token = NULL;
    if (token == NULL) {
        ringctl_error("no admin token: pass --token, set RINGCTL_ADMIN_TOKEN, or --config a file with admin_token");
        return RINGCTL_EXIT_USAGE;
    }
    ctl.token = token;
    snprintf(ctl.url, sizeof ctl.url, "%s", url);
    char error[CLIENT_ERROR_BYTES];
    if (!client_parse_url(url, &ctl.target, error, sizeof error)) {
        ringctl_error("--admin-url: %s", error);
        return RINGCTL_EXIT_USAGE;
    }
    return ctl.command->run(&ctl, &arguments);
}
