/* The admin API on admin_listen, served by the control thread for ringctl.
 * JSON in and out; every request carries "Authorization: Bearer
 * <admin_token>" (compared as SHA-256 digests in constant time, so neither
 * content nor length leaks). Every change is written to the audit log with
 * the token's fingerprint (first 12 hex digits of its SHA-256); balance and
 * key changes are synced to disk before the answer.
 *
 *   POST  /admin/users                {email, password?, balance?}        201 user
 *   GET   /admin/users?limit=&after=                                       list of users
 *   GET   /admin/users/{id}                                                user with its keys
 *   POST  /admin/users/{id}/balance   {op: top_up|deduct, amount: "1.50"}  user
 *   POST  /admin/users/{id}/suspend | /resume                              user
 *   POST  /admin/keys                 {user_id, name?, models?, tier?, limits?, token_quota?,
 *                                      expires_at?, spend_cap?}            201 key, with the full key once
 *   GET   /admin/keys?user_id=&limit=&after=                               list of keys (masked)
 *   GET   /admin/keys/{id}                                                 key
 *   PATCH /admin/keys/{id}            {models?, tier?, limits?, token_quota?, expires_at?, spend_cap?}
 *                                                                          key; tier: a [tier NAME] or null
 *                                                                          (the default); limits: {NAME: N or
 *                                                                          null (the tier's)}, applied at once
 *   POST  /admin/keys/{id}/disable | /enable                               key
 *   GET   /admin/usage?user_id=&key_id=&from=&to=&limit=&format=json|jsonl|csv
 *                                     newest first; streamed page by page (chunked) when long
 *   GET   /admin/audit?limit=                                              list of audit entries, newest first
 *
 * Lists are {"object":"list","data":[...],"has_more":bool}. Errors are the
 * OpenAI shape: 400 bad input, 401 wrong or missing token, 403 no token
 * configured, 404 unknown user / key / path, 405 wrong method, 409 a
 * conflict (email taken, deduct below zero), 5xx store trouble. */
#include "admin-internal.h"

#include "ringway/breaker.h"
#include "ringway/health.h"
#include "ringway/http.h"
#include "ringway/json.h"
#include "ringway/ledger.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

enum {
    ADMIN_SEGMENTS_MAX = 4,
    ADMIN_PARAMETER_BYTES = 128,
};

typedef struct admin_request {
    admin_context_t *context;
    server_exchange_t *exchange;
    admin_exchange_t *state;
    const uint8_t *body;
    size_t body_length;
    const uint8_t *query;
    size_t query_length;
    http_method_t method;
    uint32_t segment_count;
    const uint8_t *segments[ADMIN_SEGMENTS_MAX];
    size_t segment_lengths[ADMIN_SEGMENTS_MAX];
    text_buffer_t out;
    admin_failure_t failure;
} admin_request_t;

/* ---- Answers ---- */

static void admin_respond_failure(admin_request_t *request) {
    const admin_failure_t *failure = &request->failure;
    server_respond_error(request->exchange, failure->status, failure->type, failure->message, failure->param,
                         failure->code);
}

static void admin_refuse(admin_request_t *request, uint16_t status, const char *type, const char *code,
                         const char *param, const char *message) {
    admin_fail(&request->failure, status, type, code, param, "%s", message);
    admin_respond_failure(request);
}

static void admin_respond_json(admin_request_t *request, uint16_t status) {
    if (request->out.overflow) {
        admin_refuse(request, 500, "server_error", "response_too_large", NULL,
                     "the answer does not fit in the response buffer; ask for fewer entries");
        return;
    }
    server_respond(request->exchange, status, "application/json", request->out.bytes, request->out.length, NULL);
}

static void admin_respond_store_error(admin_request_t *request, int status, const char *what) {
    admin_fail_store(&request->failure, status, what);
    admin_respond_failure(request);
}

/* ---- Reading the request ---- */

static bool admin_segment_is(const admin_request_t *request, uint32_t index, const char *text) {
    return index < request->segment_count &&
           rw_bytes_equal_text(request->segments[index], request->segment_lengths[index], text);
}

/* Splits "/admin/a/b/c" into segments after "admin". false for any other
 * path, an empty segment or too many. */
static bool admin_split_path(admin_request_t *request, const uint8_t *path, size_t length) {
    static const char prefix[] = "/admin/";
    if (length < sizeof prefix - 1 || memcmp(path, prefix, sizeof prefix - 1) != 0) return false;
    size_t position = sizeof prefix - 1;
    while (position < length) {
        size_t end = position;
        while (end < length && path[end] != '/') end++;
        if (end == position || request->segment_count == ADMIN_SEGMENTS_MAX) return false;
        request->segments[request->segment_count] = path + position;
        request->segment_lengths[request->segment_count] = end - position;
        request->segment_count++;
        position = end + 1;
        if (end + 1 == length) return false; /* a trailing slash */
    }
    return request->segment_count > 0;
}

static bool admin_segment_id(const admin_request_t *request, uint32_t index, uint64_t *id) {
    return index < request->segment_count &&
           text_parse_u64((const char *)request->segments[index], request->segment_lengths[index], id) && *id > 0;
}

/* The body must be one JSON object (an empty body counts as {} when
 * empty_ok). */
static bool admin_body_object(admin_request_t *request, bool empty_ok) {
    size_t index = 0;
    while (index < request->body_length && (request->body[index] == ' ' || request->body[index] == '\t' ||
                                            request->body[index] == '\n' || request->body[index] == '\r')) {
        index++;
    }
    if (index == request->body_length && empty_ok) {
        request->body = (const uint8_t *)"{}";
        request->body_length = 2;
        return true;
    }
    json_error_t error;
    if (index == request->body_length || json_validate(request->body, request->body_length, &error) != 0 ||
        request->body[index] != '{') {
        admin_refuse(request, 400, "invalid_request_error", "invalid_json", NULL,
                     "the body must be one JSON object");
        return false;
    }
    return true;
}

/* A member of the body object: 1 present (*value / *type set), 0 absent
 * or null, -1 refused (a repeated member; answered). */
static int admin_member(admin_request_t *request, const char *name, json_span_t *value, json_type_t *type) {
    int found = json_object_find(request->body, request->body_length, name, value, type);
    if (found == -2) {
        admin_fail(&request->failure, 400, "invalid_request_error", "duplicate_member", name,
                   "member '%s' appears more than once", name);
        admin_respond_failure(request);
        return -1;
    }
    if (found != 0 || *type == JSON_TYPE_NULL) return 0;
    return 1;
}

static bool admin_wrong_type(admin_request_t *request, const char *name, const char *expected) {
    admin_fail(&request->failure, 400, "invalid_request_error", "invalid_type", name, "%s must be %s", name,
               expected);
    admin_respond_failure(request);
    return false;
}

/* A string member decoded into out. *present tells whether it was there. */
static bool admin_member_string(admin_request_t *request, const char *name, char *out, size_t capacity,
                                size_t *length, bool *present) {
    json_span_t value;
    json_type_t type;
    int found = admin_member(request, name, &value, &type);
    *present = found == 1;
    if (found <= 0) return found == 0;
    if (type != JSON_TYPE_STRING) return admin_wrong_type(request, name, "a string");
    if (json_string_decode(request->body + value.offset, value.length, out, capacity, length) != 0) {
        admin_fail(&request->failure, 400, "invalid_request_error", "invalid_value", name,
                   "%s is too long (at most %zu bytes)", name, capacity - 1);
        admin_respond_failure(request);
        return false;
    }
    return true;
}

/* A non-negative integer member no larger than maximum. */
static bool admin_member_u64(admin_request_t *request, const char *name, uint64_t maximum, uint64_t *out,
                             bool *present) {
    json_span_t value;
    json_type_t type;
    int found = admin_member(request, name, &value, &type);
    *present = found == 1;
    if (found <= 0) return found == 0;
    uint64_t number = 0;
    if (type != JSON_TYPE_NUMBER ||
        !text_parse_u64((const char *)request->body + value.offset, value.length, &number) || number > maximum) {
        char expected[64];
        snprintf(expected, sizeof expected, "an integer from 0 to %llu", (unsigned long long)maximum);
        return admin_wrong_type(request, name, expected);
    }
    *out = number;
    return true;
}

/* Money: a decimal string of currency units ("1.50"), exact to the micro. */
static bool admin_parse_money_text(admin_request_t *request, const char *name, const char *text, size_t length,
                                   int64_t *micros) {
    ledger_money_result_t result = ledger_parse_money(text, length, micros);
    if (result == LEDGER_MONEY_OK) return true;
    const char *why = result == LEDGER_MONEY_PRECISION ? "has more than 6 decimal places"
                      : result == LEDGER_MONEY_RANGE   ? "is above 1000000000"
                                                       : "is not a decimal amount like \"1.50\"";
    admin_fail(&request->failure, 400, "invalid_request_error", "invalid_amount", name, "%s %s", name, why);
    admin_respond_failure(request);
    return false;
}

/* A money member: a string like "1.50"; null counts as absent. */
static bool admin_member_money(admin_request_t *request, const char *name, int64_t *micros, bool *present,
                               bool *is_null) {
    json_span_t value;
    json_type_t type;
    int found = json_object_find(request->body, request->body_length, name, &value, &type);
    *is_null = found == 0 && type == JSON_TYPE_NULL;
    found = admin_member(request, name, &value, &type);
    *present = found == 1;
    if (found <= 0) return found == 0;
    if (type != JSON_TYPE_STRING) return admin_wrong_type(request, name, "a decimal string like \"1.50\"");
    char text[64];
    size_t length = 0;
    if (json_string_decode(request->body + value.offset, value.length, text, sizeof text, &length) != 0) {
        return admin_wrong_type(request, name, "a decimal string like \"1.50\"");
    }
    return admin_parse_money_text(request, name, text, length, micros);
}

/* A point in time: milliseconds since the epoch (integer) or an ISO 8601
 * string; null or 0 means "never" (*ms = 0). */
static bool admin_member_time(admin_request_t *request, const char *name, int64_t *ms, bool *present) {
    json_span_t value;
    json_type_t type;
    int found = json_object_find(request->body, request->body_length, name, &value, &type);
    if (found == -2) return admin_member(request, name, &value, &type) == 0;
    *present = found == 0;
    if (found != 0 || type == JSON_TYPE_NULL) {
        *ms = 0;
        return true;
    }
    char text[64];
    size_t length = 0;
    bool parsed = false;
    if (type == JSON_TYPE_NUMBER) {
        parsed = text_time_parse((const char *)request->body + value.offset, value.length, ms) &&
                 value.length <= 15;
    } else if (type == JSON_TYPE_STRING &&
               json_string_decode(request->body + value.offset, value.length, text, sizeof text, &length) == 0) {
        parsed = text_time_parse(text, length, ms);
    }
    if (!parsed) {
        return admin_wrong_type(request, name,
                                "milliseconds since the epoch, an ISO 8601 time like \"2026-01-31T12:00:00Z\", or null");
    }
    return true;
}

/* A query parameter, percent-decoded into out; *present false when absent. */
static bool admin_parameter(admin_request_t *request, const char *name, char *out, size_t capacity, size_t *length,
                            bool *present) {
    const uint8_t *value = NULL;
    size_t value_length = 0;
    int found = admin_query_find(request->query, request->query_length, name, &value, &value_length);
    *present = found == 0;
    if (found == -1) return true;
    if (found == -2 || !admin_url_decode(value, value_length, true, out, capacity, length)) {
        admin_fail(&request->failure, 400, "invalid_request_error", "invalid_parameter", name,
                   "query parameter '%s' is repeated, badly encoded or too long", name);
        admin_respond_failure(request);
        return false;
    }
    return true;
}

static bool admin_parameter_u64(admin_request_t *request, const char *name, uint64_t maximum, uint64_t *out,
                                bool *present) {
    char text[ADMIN_PARAMETER_BYTES];
    size_t length = 0;
    if (!admin_parameter(request, name, text, sizeof text, &length, present)) return false;
    if (!*present) return true;
    if (!text_parse_u64(text, length, out) || *out > maximum) {
        admin_fail(&request->failure, 400, "invalid_request_error", "invalid_parameter", name,
                   "query parameter '%s' must be an integer from 0 to %llu", name, (unsigned long long)maximum);
        admin_respond_failure(request);
        return false;
    }
    return true;
}

static bool admin_parameter_time(admin_request_t *request, const char *name, int64_t *ms, bool *present) {
    char text[ADMIN_PARAMETER_BYTES];
    size_t length = 0;
    if (!admin_parameter(request, name, text, sizeof text, &length, present)) return false;
    if (!*present) return true;
    if (!text_time_parse(text, length, ms)) {
        admin_fail(&request->failure, 400, "invalid_request_error", "invalid_parameter", name,
                   "query parameter '%s' must be milliseconds since the epoch or an ISO 8601 date or time "
                   "(2026-01-31, 2026-01-31T12:00:00Z)",
                   name);
        admin_respond_failure(request);
        return false;
    }
    return true;
}

/* ---- Looking things up ---- */

static account_user_t *admin_find_user(admin_request_t *request, uint32_t segment) {
    uint64_t id = 0;
    account_user_t *user = admin_segment_id(request, segment, &id) ? account_user_get(request->context->tables, id)
                                                                     : NULL;
    if (user == NULL) {
        admin_fail(&request->failure, 404, "invalid_request_error", "user_not_found", NULL, "no user with id %.*s",
                   (int)RW_MIN(request->segment_lengths[segment], (size_t)32), (const char *)request->segments[segment]);
        admin_respond_failure(request);
    }
    return user;
}

static account_key_t *admin_find_key(admin_request_t *request, uint32_t segment) {
    uint64_t id = 0;
    account_key_t *key = admin_segment_id(request, segment, &id) ? account_key_by_id(request->context->tables, id)
                                                                   : NULL;
    if (key == NULL) {
        admin_fail(&request->failure, 404, "invalid_request_error", "key_not_found", NULL, "no key with id %.*s",
                   (int)RW_MIN(request->segment_lengths[segment], (size_t)32), (const char *)request->segments[segment]);
        admin_respond_failure(request);
    }
    return key;
}

static void admin_respond_user(admin_request_t *request, const account_user_t *user, uint16_t status) {
    if (!admin_write_user(request->context, &request->out, user)) {
        admin_respond_store_error(request, -EIO, "reading the user back");
        return;
    }
    admin_respond_json(request, status);
}

static void admin_respond_key(admin_request_t *request, const account_key_t *key, const char *key_text,
                              uint16_t status) {
    if (!admin_write_key(request->context, &request->out, key, key_text)) {
        admin_respond_store_error(request, -EIO, "reading the key back");
        return;
    }
    admin_respond_json(request, status);
}

/* ---- Users ---- */

static void admin_users_create(admin_request_t *request) {
    admin_context_t *context = request->context;
    if (!admin_body_object(request, false)) return;
    char input[1024];
    size_t length = 0;
    bool present = false;
    if (!admin_member_string(request, "email", input, sizeof input, &length, &present)) return;
    char email[ACCOUNT_EMAIL_BYTES];
    if (!present || !auth_email_valid(input, length, email)) {
        admin_refuse(request, 400, "invalid_request_error", "invalid_email", "email",
                     "email must be a valid email address");
        return;
    }
    char password[PASSWORD_LENGTH_MAX + 2];
    size_t password_length = 0;
    bool has_password = false;
    if (!admin_member_string(request, "password", password, sizeof password, &password_length, &has_password)) return;
    if (has_password && !auth_password_acceptable(password_length)) {
        memset(password, 0, sizeof password);
        admin_refuse(request, 400, "invalid_request_error", "invalid_password", "password",
                     "password must be 8 to 1024 bytes (or absent: the account cannot log in)");
        return;
    }
    int64_t balance = context->config->free_grant_micros;
    bool has_balance = false, balance_null = false;
    if (!admin_member_money(request, "balance", &balance, &has_balance, &balance_null)) return;
    if (!has_balance) balance = context->config->free_grant_micros;
    char encoded[PASSWORD_ENCODED_BYTES] = "";
    if (has_password) {
        store_user_record_t existing;
        if (store_user_get_by_email(context->store, email, &existing) == 0) {
            memset(password, 0, sizeof password);
            admin_refuse(request, 409, "invalid_request_error", "email_taken", "email",
                         "an account with this email already exists");
            return;
        }
        bool hashed = password_hash(password, password_length, encoded);
        memset(password, 0, sizeof password);
        if (!hashed) {
            admin_refuse(request, 500, "server_error", "hash_failed", NULL, "cannot hash the password");
            return;
        }
    }
    admin_user_request_t user_request = {
        .email = email,
        .password_hash = encoded,
        .balance_micros = balance,
        .audit_admin = context->admin_fingerprint,
    };
    uint64_t user_id = 0;
    if (!admin_user_create(context, &user_request, &user_id, &request->failure)) {
        admin_respond_failure(request);
        return;
    }
    admin_respond_user(request, account_user_get(context->tables, user_id), 201);
}

static void admin_users_list(admin_request_t *request) {
    admin_context_t *context = request->context;
    uint64_t limit = ADMIN_LIST_LIMIT_DEFAULT, after = 0;
    bool present = false;
    if (!admin_parameter_u64(request, "limit", ADMIN_LIST_LIMIT_MAX, &limit, &present)) return;
    if (!present || limit == 0) limit = ADMIN_LIST_LIMIT_DEFAULT;
    if (!admin_parameter_u64(request, "after", UINT32_MAX, &after, &present)) return;
    text_buffer_t *out = &request->out;
    text_buffer_text(out, "{\"object\":\"list\",\"data\":[");
    uint32_t count = atomic_load_explicit(&context->tables->user_count, memory_order_acquire);
    uint64_t written = 0;
    bool has_more = false;
    for (uint64_t id = after + 1; id <= count; id++) {
        account_user_t *user = account_user_get(context->tables, id);
        if (user == NULL) continue;
        if (written == limit || text_buffer_room(out) < ADMIN_ENTRY_BYTES_MAX) {
            has_more = true;
            break;
        }
        if (written > 0) text_buffer_text(out, ",");
        if (!admin_write_user(context, out, user)) {
            admin_respond_store_error(request, -EIO, "reading a user");
            return;
        }
        written++;
    }
    text_buffer_format(out, "],\"has_more\":%s}", has_more ? "true" : "false");
    admin_respond_json(request, 200);
}

typedef struct admin_key_list {
    admin_context_t *context;
    text_buffer_t *out;
    uint64_t after;
    uint64_t limit;
    uint64_t written;
    bool has_more;
    bool failed;
} admin_key_list_t;

static bool admin_list_key(void *context, account_key_t *key) {
    admin_key_list_t *list = context;
    if (key->id <= list->after) return true;
    if (list->written == list->limit || text_buffer_room(list->out) < ADMIN_ENTRY_BYTES_MAX) {
        list->has_more = true;
        return false;
    }
    if (list->written > 0) text_buffer_text(list->out, ",");
    if (!admin_write_key(list->context, list->out, key, NULL)) {
        list->failed = true;
        return false;
    }
    list->written++;
    return true;
}

static void admin_users_show(admin_request_t *request) {
    account_user_t *user = admin_find_user(request, 1);
    if (user == NULL) return;
    text_buffer_t *out = &request->out;
    if (!admin_write_user(request->context, out, user)) {
        admin_respond_store_error(request, -EIO, "reading the user");
        return;
    }
    RW_ASSERT(out->overflow || (out->length > 0 && out->bytes[out->length - 1] == '}'));
    if (!out->overflow) out->length--; /* reopen the object to add its keys */
    text_buffer_text(out, ",\"keys\":[");
    admin_key_list_t list = {.context = request->context, .out = out, .limit = ADMIN_LIST_LIMIT_MAX};
    admin_user_keys(request->context, user->id, admin_list_key, &list);
    if (list.failed) {
        admin_respond_store_error(request, -EIO, "reading a key");
        return;
    }
    text_buffer_format(out, "],\"keys_truncated\":%s}", list.has_more ? "true" : "false");
    admin_respond_json(request, 200);
}

static void admin_users_balance(admin_request_t *request) {
    admin_context_t *context = request->context;
    account_user_t *user = admin_find_user(request, 1);
    if (user == NULL || !admin_body_object(request, false)) return;
    char op[32];
    size_t op_length = 0;
    bool present = false;
    if (!admin_member_string(request, "op", op, sizeof op, &op_length, &present)) return;
    bool top_up = present && strcmp(op, "top_up") == 0;
    bool deduct = present && strcmp(op, "deduct") == 0;
    if (!top_up && !deduct) {
        admin_refuse(request, 400, "invalid_request_error", "invalid_value", "op",
                     "op must be \"top_up\" or \"deduct\"");
        return;
    }
    int64_t amount = 0;
    bool amount_null = false;
    if (!admin_member_money(request, "amount", &amount, &present, &amount_null)) return;
    if (!present || amount == 0) {
        admin_refuse(request, 400, "invalid_request_error", "invalid_amount", "amount",
                     "amount must be a positive decimal amount like \"1.50\"");
        return;
    }
    /* A deduction comes out of the available balance first (the same CAS
     * rule as admission: never below zero), so a concurrent request cannot
     * spend the money being taken away. A top-up is added only once it is
     * on disk. */
    if (deduct) {
        int64_t available = atomic_load_explicit(&user->available_micros, memory_order_acquire);
        do {
            if (available < amount) {
                char have[TEXT_MONEY_BYTES], want[TEXT_MONEY_BYTES];
                text_format_money(available, have);
                text_format_money(amount, want);
                admin_fail(&request->failure, 409, "invalid_request_error", "insufficient_balance", "amount",
                           "cannot deduct %s: only %s is available (the balance minus open holds)", want, have);
                admin_respond_failure(request);
                return;
            }
        } while (!atomic_compare_exchange_weak_explicit(&user->available_micros, &available, available - amount,
                                                        memory_order_acq_rel, memory_order_acquire));
    }
    store_message_t *message = &context->message;
    memset(message, 0, sizeof *message);
    message->kind = STORE_MESSAGE_BALANCE_ADJUST;
    message->body.balance_adjust.user_id = user->id;
    message->body.balance_adjust.delta_micros = deduct ? -amount : amount;
    store_ack_t ack;
    int status = admin_store_call(context, message, STORE_MESSAGE_FLAG_SYNC, &ack);
    if (status != 0) {
        /* A refused write gives the money back; one that timed out may still
         * land, so the deduction stays (the conservative side: the store's
         * balance wins at the next start). */
        if (deduct && status != -ETIMEDOUT) {
            atomic_fetch_add_explicit(&user->available_micros, amount, memory_order_acq_rel);
        }
        if (status == -ERANGE) {
            admin_refuse(request, 409, "invalid_request_error", deduct ? "insufficient_balance" : "balance_overflow",
                         "amount",
                         deduct ? "the stored balance is lower than the amount" : "the balance would overflow");
        } else {
            admin_respond_store_error(request, status, "changing the balance");
        }
        return;
    }
    if (top_up) atomic_fetch_add_explicit(&user->available_micros, amount, memory_order_acq_rel);
    char details_memory[STORE_AUDIT_DETAILS_BYTES];
    text_buffer_t details = {.bytes = details_memory, .capacity = sizeof details_memory - 1};
    text_buffer_text(&details, "{\"amount\":\"");
    text_buffer_money(&details, amount);
    text_buffer_text(&details, "\",\"balance_after\":\"");
    text_buffer_money(&details, ack.balance_micros);
    text_buffer_text(&details, "\"}");
    details_memory[text_buffer_result(&details)] = '\0';
    admin_audit_record(context, context->admin_fingerprint, top_up ? "balance.top_up" : "balance.deduct", "user",
                       user->id, details_memory);
    admin_respond_user(request, user, 200);
}

static void admin_users_status(admin_request_t *request, account_user_status_t status) {
    admin_context_t *context = request->context;
    account_user_t *user = admin_find_user(request, 1);
    if (user == NULL) return;
    store_message_t *message = &context->message;
    memset(message, 0, sizeof *message);
    message->kind = STORE_MESSAGE_USER_UPDATE;
    message->body.user_update.user_id = user->id;
    message->body.user_update.fields = STORE_USER_FIELD_STATUS;
    message->body.user_update.status = status;
    store_ack_t ack;
    int result = admin_store_call(context, message, STORE_MESSAGE_FLAG_SYNC, &ack);
    if (result != 0) {
        admin_respond_store_error(request, result, "changing the account's status");
        return;
    }
    account_user_set_status(user, status);
    admin_audit_record(context, context->admin_fingerprint,
                       status == ACCOUNT_USER_SUSPENDED ? "user.suspend" : "user.resume", "user", user->id, "{}");
    admin_respond_user(request, user, 200);
}

/* ---- Keys ---- */

/* "tier": a configured tier's name, or null for [rate_limits] key_tier. */
static bool admin_key_tier(admin_request_t *request, store_key_update_t *update) {
    json_span_t value;
    json_type_t type;
    int found = json_object_find(request->body, request->body_length, "tier", &value, &type);
    if (found == -2) return admin_member(request, "tier", &value, &type) == 0;
    if (found != 0) return true;
    update->fields |= STORE_KEY_FIELD_TIER;
    if (type == JSON_TYPE_NULL) return true;
    char name[STORE_TIER_NAME_BYTES];
    size_t length = 0;
    if (type != JSON_TYPE_STRING ||
        json_string_decode(request->body + value.offset, value.length, name, sizeof name, &length) != 0 ||
        config_find_tier(request->context->config, name) == CONFIG_TIER_NONE) {
        const config_t *config = request->context->config;
        char names[CONFIG_TIERS_MAX * (CONFIG_TIER_NAME_BYTES + 2)];
        text_buffer_t list = text_buffer_over(names, sizeof names - 1);
        for (uint32_t index = 0; index < config->tier_count; index++) {
            text_buffer_format(&list, "%s%s", index == 0 ? "" : ", ", config->tiers[index].name);
        }
        names[text_buffer_result(&list)] = '\0';
        admin_fail(&request->failure, 400, "invalid_request_error", "invalid_value", "tier",
                   "tier must be the name of a [tier NAME] section (%s) or null for the default",
                   config->tier_count > 0 ? names : "none configured");
        admin_respond_failure(request);
        return false;
    }
    memcpy(update->tier, name, length + 1);
    return true;
}

/* "limits": {"requests_per_minute": N | null, ...}: the key's own value of
 * each limit named (0 = unlimited; null = the tier's); *given has a bit per
 * limit named. Other members are ignored. */
static bool admin_key_limits(admin_request_t *request, store_key_update_t *update, uint32_t *given) {
    *given = 0;
    json_span_t object;
    json_type_t type;
    int found = admin_member(request, "limits", &object, &type);
    if (found <= 0) return found == 0;
    if (type != JSON_TYPE_OBJECT) return admin_wrong_type(request, "limits", "an object of limits");
    const uint8_t *body = request->body + object.offset;
    for (uint32_t kind = 0; kind < STORE_KEY_LIMITS; kind++) {
        const char *name = config_limit_name((config_limit_kind_t)kind);
        json_span_t value;
        json_type_t value_type;
        int member = json_object_find(body, object.length, name, &value, &value_type);
        if (member == -2) return admin_wrong_type(request, "limits", "an object naming each limit once");
        if (member != 0) continue;
        *given |= 1u << kind;
        update->limits[kind] = STORE_LIMIT_INHERIT;
        if (value_type == JSON_TYPE_NULL) continue;
        uint64_t number = 0;
        if (value_type != JSON_TYPE_NUMBER || !text_parse_u64((const char *)body + value.offset, value.length, &number) ||
            number >= STORE_LIMIT_INHERIT) {
            char what[96];
            snprintf(what, sizeof what, "limits.%s", name);
            return admin_wrong_type(request, what, "an integer from 0 (unlimited) to 4294967294, or null");
        }
        update->limits[kind] = (uint32_t)number;
    }
    if (*given != 0) update->fields |= STORE_KEY_FIELD_LIMITS;
    return true;
}

/* Reads models, tier, limits, token_quota, expires_at and spend_cap from
 * the body into *update (fields set for each present member; for limits,
 * *limits_given says which were named) and the model bits. */
static bool admin_key_settings(admin_request_t *request, store_key_update_t *update,
                               uint64_t bits[ACCOUNT_MODEL_WORDS], uint32_t *limits_given) {
    memset(update, 0, sizeof *update);
    memset(bits, 0, ACCOUNT_MODEL_WORDS * sizeof(uint64_t));
    for (uint32_t kind = 0; kind < STORE_KEY_LIMITS; kind++) update->limits[kind] = STORE_LIMIT_INHERIT;
    json_span_t value;
    json_type_t type;
    int found = json_object_find(request->body, request->body_length, "models", &value, &type);
    if (found == -2) return admin_member(request, "models", &value, &type) == 0;
    if (found == 0) {
        if (!admin_models_parse(request->context, request->body, request->body_length, value, type,
                                &update->all_models, update->models, bits, &request->failure)) {
            admin_respond_failure(request);
            return false;
        }
        update->fields |= STORE_KEY_FIELD_MODELS;
    }
    if (!admin_key_tier(request, update) || !admin_key_limits(request, update, limits_given)) return false;
    bool present = false;
    json_span_t quota_value;
    json_type_t quota_type;
    if (json_object_find(request->body, request->body_length, "token_quota", &quota_value, &quota_type) == 0 &&
        quota_type == JSON_TYPE_NULL) {
        update->token_quota = 0;
        update->fields |= STORE_KEY_FIELD_TOKEN_QUOTA;
    }
    uint64_t quota = 0;
    if (!admin_member_u64(request, "token_quota", LIMIT_VALUE_MAX, &quota, &present)) return false;
    if (present) {
        update->token_quota = quota;
        update->fields |= STORE_KEY_FIELD_TOKEN_QUOTA;
    }
    if (update->token_quota != 0 && request->context->config->billing_mode == CONFIG_BILLING_OFF) {
        /* The store counts a key's tokens at settlement, which billing off
         * has none of: the quota would count from zero at every start. */
        admin_refuse(request, 400, "invalid_request_error", "invalid_value", "token_quota",
                     "token quotas need [billing] mode = on: the store counts the tokens when it settles");
        return false;
    }
    int64_t expires_at_ms = 0;
    if (!admin_member_time(request, "expires_at", &expires_at_ms, &present)) return false;
    if (present) {
        update->expires_at_ms = expires_at_ms;
        update->fields |= STORE_KEY_FIELD_EXPIRES;
    }
    int64_t cap = -1;
    bool cap_null = false;
    if (!admin_member_money(request, "spend_cap", &cap, &present, &cap_null)) return false;
    if (present || cap_null) {
        update->spend_cap_micros = present ? cap : -1;
        update->fields |= STORE_KEY_FIELD_SPEND_CAP;
    }
    return true;
}

static void admin_keys_create(admin_request_t *request) {
    admin_context_t *context = request->context;
    if (!admin_body_object(request, false)) return;
    uint64_t user_id = 0;
    bool present = false;
    if (!admin_member_u64(request, "user_id", UINT32_MAX, &user_id, &present)) return;
    if (!present || user_id == 0) {
        admin_refuse(request, 400, "invalid_request_error", "missing_member", "user_id",
                     "user_id (the owner's id) is required");
        return;
    }
    char name[ACCOUNT_KEY_NAME_BYTES * 4];
    size_t name_length = 0;
    if (!admin_member_string(request, "name", name, sizeof name, &name_length, &present)) return;
    if (!present) {
        snprintf(name, sizeof name, "default");
        name_length = strlen(name);
    }
    if (!admin_key_name_valid(name, name_length)) {
        admin_refuse(request, 400, "invalid_request_error", "invalid_name", "name",
                     "name must be 1 to 63 bytes of UTF-8 without control characters");
        return;
    }
    store_key_update_t settings;
    uint64_t bits[ACCOUNT_MODEL_WORDS];
    uint32_t limits_given = 0;
    if (!admin_key_settings(request, &settings, bits, &limits_given)) return;
    admin_key_request_t key_request;
    admin_key_request_defaults(&key_request);
    key_request.user_id = user_id;
    key_request.name = name;
    key_request.audit_admin = context->admin_fingerprint;
    if (settings.fields & STORE_KEY_FIELD_MODELS) {
        key_request.all_models = settings.all_models;
        memcpy(key_request.models, settings.models, sizeof key_request.models);
        memcpy(key_request.model_bits, bits, sizeof key_request.model_bits);
    }
    if (settings.fields & STORE_KEY_FIELD_TIER) memcpy(key_request.tier, settings.tier, sizeof key_request.tier);
    memcpy(key_request.limits, settings.limits, sizeof key_request.limits);
    if (settings.fields & STORE_KEY_FIELD_TOKEN_QUOTA) key_request.token_quota = settings.token_quota;
    if (settings.fields & STORE_KEY_FIELD_EXPIRES) key_request.expires_at_ms = settings.expires_at_ms;
    if (settings.fields & STORE_KEY_FIELD_SPEND_CAP) key_request.spend_cap_micros = settings.spend_cap_micros;
    char key_text[AUTH_KEY_TEXT_BYTES];
    account_key_t *key = admin_key_create(context, &key_request, key_text, &request->failure);
    if (key == NULL) {
        admin_respond_failure(request);
        return;
    }
    admin_respond_key(request, key, key_text, 201);
    memset(key_text, 0, sizeof key_text);
}

static void admin_keys_list(admin_request_t *request) {
    admin_context_t *context = request->context;
    uint64_t user_id = 0, limit = ADMIN_LIST_LIMIT_DEFAULT, after = 0;
    bool has_user = false, present = false;
    if (!admin_parameter_u64(request, "user_id", UINT32_MAX, &user_id, &has_user)) return;
    if (!admin_parameter_u64(request, "limit", ADMIN_LIST_LIMIT_MAX, &limit, &present)) return;
    if (!present || limit == 0) limit = ADMIN_LIST_LIMIT_DEFAULT;
    if (!admin_parameter_u64(request, "after", UINT64_MAX / 2, &after, &present)) return;
    if (has_user && account_user_get(context->tables, user_id) == NULL) {
        admin_fail(&request->failure, 404, "invalid_request_error", "user_not_found", "user_id",
                   "no user with id %llu", (unsigned long long)user_id);
        admin_respond_failure(request);
        return;
    }
    text_buffer_t *out = &request->out;
    text_buffer_text(out, "{\"object\":\"list\",\"data\":[");
    admin_key_list_t list = {.context = context, .out = out, .after = after, .limit = limit};
    if (has_user) {
        admin_user_keys(context, user_id, admin_list_key, &list);
    } else {
        uint32_t count = account_key_count(context->tables);
        for (uint32_t slot = 0; slot < count; slot++) {
            account_key_t *key = account_key_at(context->tables, slot);
            if (key != NULL && !admin_list_key(&list, key)) break;
        }
    }
    if (list.failed) {
        admin_respond_store_error(request, -EIO, "reading a key");
        return;
    }
    text_buffer_format(out, "],\"has_more\":%s}", list.has_more ? "true" : "false");
    admin_respond_json(request, 200);
}

/* Audit details for a key change: the request body when it fits, else the
 * names of the changed fields. */
static void admin_key_change_details(const admin_request_t *request, uint32_t fields, char *out, size_t capacity) {
    if (request->body_length < capacity) {
        memcpy(out, request->body, request->body_length);
        out[request->body_length] = '\0';
        return;
    }
    snprintf(out, capacity, "{\"fields\":\"%s%s%s%s%s%s\"}", (fields & STORE_KEY_FIELD_MODELS) ? "models " : "",
             (fields & STORE_KEY_FIELD_TIER) ? "tier " : "", (fields & STORE_KEY_FIELD_LIMITS) ? "limits " : "",
             (fields & STORE_KEY_FIELD_TOKEN_QUOTA) ? "token_quota " : "",
             (fields & STORE_KEY_FIELD_EXPIRES) ? "expires_at " : "", (fields & STORE_KEY_FIELD_SPEND_CAP) ? "spend_cap" : "");
}

static void admin_keys_update(admin_request_t *request) {
    admin_context_t *context = request->context;
    account_key_t *key = admin_find_key(request, 1);
    if (key == NULL || !admin_body_object(request, false)) return;
    store_key_update_t update;
    uint64_t bits[ACCOUNT_MODEL_WORDS];
    uint32_t limits_given = 0;
    if (!admin_key_settings(request, &update, bits, &limits_given)) return;
    if (update.fields == 0) {
        admin_refuse(request, 400, "invalid_request_error", "nothing_to_change", NULL,
                     "name at least one of models, tier, limits, token_quota, expires_at, spend_cap");
        return;
    }
    /* The limits not named keep their values. */
    for (uint32_t kind = 0; kind < STORE_KEY_LIMITS; kind++) {
        if (!(limits_given & (1u << kind))) update.limits[kind] = account_key_limit(key, kind);
    }
    if (!admin_key_update(context, key, &update, bits, &request->failure)) {
        admin_respond_failure(request);
        return;
    }
    char details[STORE_AUDIT_DETAILS_BYTES];
    admin_key_change_details(request, update.fields, details, sizeof details);
    admin_audit_record(context, context->admin_fingerprint, "key.update", "key", key->id, details);
    admin_respond_key(request, key, NULL, 200);
}

static void admin_keys_status(admin_request_t *request, account_key_status_t status) {
    admin_context_t *context = request->context;
    account_key_t *key = admin_find_key(request, 1);
    if (key == NULL) return;
    store_key_update_t update;
    memset(&update, 0, sizeof update);
    update.fields = STORE_KEY_FIELD_STATUS;
    update.status = status;
    if (!admin_key_update(context, key, &update, NULL, &request->failure)) {
        admin_respond_failure(request);
        return;
    }
    admin_audit_record(context, context->admin_fingerprint,
                       status == ACCOUNT_KEY_DISABLED ? "key.disable" : "key.enable", "key", key->id, "{}");
    admin_respond_key(request, key, NULL, 200);
}

/* ---- Usage export ---- */

static const char admin_csv_header[] =
    "id,created_ms,created,request_id,user_id,key_id,model,upstream,prompt_tokens,completion_tokens,"
    "cached_tokens,reasoning_tokens,cost_micros,cost,status,latency_ms,estimated,capped,attempts\r\n";

typedef struct admin_usage_page {
    admin_exchange_t *state;
    text_buffer_t *out;
    bool full;       /* stopped for room: more may follow */
    bool limit_hit;  /* stopped at the caller's limit */
} admin_usage_page_t;

static void admin_usage_csv(text_buffer_t *out, const store_usage_record_t *record) {
    char created[TEXT_TIME_BYTES];
    text_time_format(record->created_ms >= 0 ? record->created_ms : 0, created);
    text_buffer_format(out, "%llu,%lld,%s,", (unsigned long long)record->id, (long long)record->created_ms, created);
    admin_csv_field(out, record->request_id, strlen(record->request_id));
    text_buffer_format(out, ",%llu,%llu,", (unsigned long long)record->user_id, (unsigned long long)record->key_id);
    admin_csv_field(out, record->model, strlen(record->model));
    text_buffer_text(out, ",");
    admin_csv_field(out, record->upstream, strlen(record->upstream));
    text_buffer_format(out, ",%llu,%llu,%llu,%llu,%lld,", (unsigned long long)record->prompt_tokens,
                        (unsigned long long)record->completion_tokens, (unsigned long long)record->cached_tokens,
                        (unsigned long long)record->reasoning_tokens, (long long)record->cost_micros);
    text_buffer_money(out, record->cost_micros);
    text_buffer_text(out, ",");
    admin_csv_field(out, record->status, strlen(record->status));
    text_buffer_format(out, ",%llu,%s,%s,%u\r\n", (unsigned long long)record->latency_ms,
                        record->estimated ? "true" : "false", record->capped ? "true" : "false",
                        (unsigned)record->attempts);
}

static int admin_usage_visit(void *context, const store_usage_record_t *record, const char *json,
                             size_t json_length) {
    admin_usage_page_t *page = context;
    admin_exchange_t *state = page->state;
    if (record->id >= state->last_id) return 0; /* sent on an earlier page */
    if (state->query.limit != 0 && state->sent == state->query.limit) {
        page->limit_hit = true;
        return 1;
    }
    if (text_buffer_room(page->out) < 2 * ADMIN_ENTRY_BYTES_MAX) {
        page->full = true;
        return 1;
    }
    switch (state->format) {
    case ADMIN_FORMAT_JSON:
        text_buffer_text(page->out, state->sent > 0 ? ",\n" : "\n");
        text_buffer_append(page->out, json, json_length);
        break;
    case ADMIN_FORMAT_JSONL:
        text_buffer_append(page->out, json, json_length);
        text_buffer_text(page->out, "\n");
        break;
    case ADMIN_FORMAT_CSV: admin_usage_csv(page->out, record); break;
    }
    RW_ASSERT(!page->out->overflow);
    state->sent++;
    state->last_id = record->id;
    state->last_created_ms = record->created_ms;
    return 0;
}

/* Fills the exchange's response buffer with the next page of the export.
 * Records come newest first; a later page resumes below the last one sent
 * (created_ms <= the last one's, id below it). Returns the page length, or a
 * negative errno from the store. */
static int admin_usage_page(admin_context_t *context, admin_exchange_t *state) {
    text_buffer_t out = {.bytes = state->response, .capacity = ADMIN_RESPONSE_BYTES};
    if (state->first_page) {
        if (state->format == ADMIN_FORMAT_JSON) text_buffer_text(&out, "[");
        if (state->format == ADMIN_FORMAT_CSV) text_buffer_text(&out, admin_csv_header);
    }
    store_usage_query_t query = state->query;
    query.limit = 0;
    if (!state->first_page) {
        int64_t resume_to = state->last_created_ms + 1;
        query.to_ms = query.to_ms != 0 ? RW_MIN(query.to_ms, resume_to) : resume_to;
    }
    state->first_page = false;
    admin_usage_page_t page = {.state = state, .out = &out};
    int visited = store_usage_list(context->store, &query, admin_usage_visit, &page);
    if (visited < 0) return visited;
    state->stream_done = !page.full;
    if (state->stream_done && state->format == ADMIN_FORMAT_JSON) text_buffer_text(&out, state->sent > 0 ? "\n]\n" : "]\n");
    RW_ASSERT(!out.overflow);
    return (int)out.length;
}

static void admin_usage(admin_request_t *request) {
    admin_context_t *context = request->context;
    admin_exchange_t *state = request->state;
    char format[16] = "json";
    size_t format_length = 4;
    bool present = false;
    if (!admin_parameter(request, "format", format, sizeof format, &format_length, &present)) return;
    if (strcmp(format, "json") == 0) {
        state->format = ADMIN_FORMAT_JSON;
    } else if (strcmp(format, "jsonl") == 0) {
        state->format = ADMIN_FORMAT_JSONL;
    } else if (strcmp(format, "csv") == 0) {
        state->format = ADMIN_FORMAT_CSV;
    } else {
        admin_refuse(request, 400, "invalid_request_error", "invalid_parameter", "format",
                     "format must be json, jsonl or csv");
        return;
    }
    uint64_t user_id = 0, key_id = 0, limit = 0;
    bool has_user = false, has_key = false, has_from = false, has_to = false;
    int64_t from_ms = 0, to_ms = 0;
    if (!admin_parameter_u64(request, "user_id", UINT32_MAX, &user_id, &has_user) ||
        !admin_parameter_u64(request, "key_id", UINT64_MAX / 2, &key_id, &has_key) ||
        !admin_parameter_u64(request, "limit", UINT32_MAX, &limit, &present) ||
        !admin_parameter_time(request, "from", &from_ms, &has_from) ||
        !admin_parameter_time(request, "to", &to_ms, &has_to)) {
        return;
    }
    if (has_user && account_user_get(context->tables, user_id) == NULL) {
        admin_fail(&request->failure, 404, "invalid_request_error", "user_not_found", "user_id",
                   "no user with id %llu", (unsigned long long)user_id);
        admin_respond_failure(request);
        return;
    }
    account_key_t *key = has_key ? account_key_by_id(context->tables, key_id) : NULL;
    if (has_key && key == NULL) {
        admin_fail(&request->failure, 404, "invalid_request_error", "key_not_found", "key_id", "no key with id %llu",
                   (unsigned long long)key_id);
        admin_respond_failure(request);
        return;
    }
    if (key != NULL && has_user && (uint64_t)key->user_index + 1 != user_id) {
        admin_fail(&request->failure, 400, "invalid_request_error", "invalid_parameter", "key_id",
                   "key %llu does not belong to user %llu", (unsigned long long)key_id, (unsigned long long)user_id);
        admin_respond_failure(request);
        return;
    }
    if (has_from && has_to && to_ms <= from_ms) {
        admin_refuse(request, 400, "invalid_request_error", "invalid_parameter", "to", "to must be later than from");
        return;
    }
    /* to = 0 would mean "no bound" to the store; the epoch itself as an
     * upper bound selects nothing. */
    if (has_to && to_ms == 0) to_ms = 1;
    state->query = (store_usage_query_t){.user_id = has_user ? user_id : 0,
                                         .key_id = has_key ? key_id : 0,
                                         .from_ms = from_ms,
                                         .to_ms = has_to ? to_ms : 0,
                                         .limit = (uint32_t)limit};
    state->last_id = UINT64_MAX;
    state->first_page = true;
    state->sent = 0;
    int length = admin_usage_page(context, state);
    if (length < 0) {
        if (length == -ENOENT) {
            admin_refuse(request, 404, "invalid_request_error", "key_not_found", "key_id", "no such key");
        } else {
            admin_respond_store_error(request, length, "reading usage records");
        }
        return;
    }
    const char *content_type = state->format == ADMIN_FORMAT_CSV     ? "text/csv; charset=utf-8"
                               : state->format == ADMIN_FORMAT_JSONL ? "application/x-ndjson"
                                                                     : "application/json";
    if (state->stream_done) {
        server_respond(request->exchange, 200, content_type, state->response, (size_t)length, NULL);
        return;
    }
    state->streaming = true;
    server_begin(request->exchange, 200, content_type, -1, NULL);
    struct iovec piece = {.iov_base = state->response, .iov_len = (size_t)length};
    server_send(request->exchange, &piece, 1, false);
}

static void admin_on_sent(server_exchange_t *exchange) {
    admin_exchange_t *state = exchange->handler_state;
    RW_ASSERT(state != NULL && state->streaming && !state->stream_done);
    admin_api_t *api = server_handler_context(exchange->server);
    int length = admin_usage_page(api->context, state);
    if (length < 0) {
        /* Mid-stream the status is sent: cut the connection so the client
         * sees an incomplete body, never a silently short export. */
        fprintf(stderr, "ringway: admin: while exporting usage: the store failed (%s)\n", strerror(-length));
        server_exchange_abort(exchange);
        return;
    }
    struct iovec piece = {.iov_base = state->response, .iov_len = (size_t)length};
    server_send(exchange, &piece, length > 0 ? 1 : 0, state->stream_done);
}

static void admin_on_abort(server_exchange_t *exchange) { server_exchange_release(exchange); }

/* ---- Audit ---- */

typedef struct admin_audit_list {
    text_buffer_t *out;
    uint64_t limit;
    uint64_t written;
    bool has_more;
} admin_audit_list_t;

static int admin_audit_visit(void *context, const store_audit_record_t *record, const char *json,
                             size_t json_length) {
    admin_audit_list_t *list = context;
    if (list->written == list->limit || text_buffer_room(list->out) < json_length + 64) {
        list->has_more = true;
        return 1;
    }
    if (list->written > 0) text_buffer_text(list->out, ",");
    text_buffer_append(list->out, json, json_length);
    list->written++;
    return 0;
}

static void admin_audit_list(admin_request_t *request) {
    uint64_t limit = ADMIN_AUDIT_LIMIT_DEFAULT;
    bool present = false;
    if (!admin_parameter_u64(request, "limit", ADMIN_LIST_LIMIT_MAX, &limit, &present)) return;
    if (!present || limit == 0) limit = ADMIN_AUDIT_LIMIT_DEFAULT;
    text_buffer_t *out = &request->out;
    text_buffer_text(out, "{\"object\":\"list\",\"data\":[");
    admin_audit_list_t list = {.out = out, .limit = limit};
    int visited = store_audit_list(request->context->store, (uint32_t)limit + 1, admin_audit_visit, &list);
    if (visited < 0) {
        admin_respond_store_error(request, visited, "reading the audit log");
        return;
    }
    text_buffer_format(out, "],\"has_more\":%s}", list.has_more ? "true" : "false");
    admin_respond_json(request, 200);
}

/* ---- Upstreams ---- */

/* One breaker over every relay thread: the worst state (open, then
 * half-open, then closed), how many threads have it open, its longest run
 * of failures and how often it opened in all. */
static void admin_breaker_json(text_buffer_t *out, const health_t *health, uint32_t upstream, int32_t key) {
    uint32_t worst = BREAKER_CLOSED, threads_open = 0, failures = 0;
    uint64_t times_opened = 0;
    for (uint32_t thread = 0; thread < health->thread_count; thread++) {
        const health_thread_view_t *view = &health->threads[thread];
        const health_breaker_view_t *breaker = key < 0 ? &view->upstreams[upstream] : &view->keys[upstream][key];
        uint32_t state = atomic_load_explicit(&breaker->state, memory_order_relaxed);
        if (state == BREAKER_OPEN) threads_open++;
        if (state == BREAKER_OPEN || (state == BREAKER_HALF_OPEN && worst == BREAKER_CLOSED)) worst = state;
        failures = RW_MAX(failures, atomic_load_explicit(&breaker->consecutive_failures, memory_order_relaxed));
        times_opened += atomic_load_explicit(&breaker->times_opened, memory_order_relaxed);
    }
    text_buffer_format(out,
                       "\"breaker\":{\"state\":\"%s\",\"threads_open\":%u,\"threads\":%u,"
                       "\"consecutive_failures\":%u,\"times_opened\":%llu}",
                       breaker_state_name((breaker_state_t)worst), (unsigned)threads_open,
                       (unsigned)health->thread_count, (unsigned)failures, (unsigned long long)times_opened);
}

/* GET /admin/upstreams: each upstream's breaker and its keys (never the
 * keys themselves: their place in the list, whether they are in rotation,
 * the status that refused one, their breakers). */
static void admin_upstreams_list(admin_request_t *request) {
    const admin_context_t *context = request->context;
    const health_t *health = context->health;
    if (health == NULL) {
        admin_refuse(request, 503, "server_error", "unavailable", NULL, "no relay threads report upstream health");
        return;
    }
    const config_t *config = context->config;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    uint64_t now_ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
    text_buffer_t *out = &request->out;
    text_buffer_text(out, "{\"object\":\"list\",\"data\":[");
    for (uint32_t upstream = 0; upstream < config->upstream_count; upstream++) {
        const config_upstream_t *configured = &config->upstreams[upstream];
        text_buffer_text(out, upstream ? ",{\"name\":" : "{\"name\":");
        text_buffer_json_string(out, configured->name, strlen(configured->name));
        text_buffer_text(out, ",\"base_url\":");
        text_buffer_json_string(out, configured->base_url, strlen(configured->base_url));
        text_buffer_text(out, ",");
        admin_breaker_json(out, health, upstream, -1);
        text_buffer_text(out, ",\"keys\":[");
        for (uint32_t key = 0; key < configured->api_key_count; key++) {
            uint16_t refused = atomic_load_explicit(&health->key_refused[upstream][key], memory_order_relaxed);
            uint64_t until_ms = atomic_load_explicit(&health->key_refused_until_ms[upstream][key], memory_order_relaxed);
            bool out_of_rotation = refused != 0 && now_ms < until_ms;
            text_buffer_format(out, "%s{\"index\":%u,\"in_rotation\":%s,\"refused_status\":", key ? "," : "",
                               (unsigned)key + 1, out_of_rotation ? "false" : "true");
            if (refused != 0) {
                text_buffer_format(out, "%u", (unsigned)refused);
            } else {
                text_buffer_text(out, "null");
            }
            text_buffer_text(out, ",\"retry_in_ms\":");
            if (out_of_rotation && until_ms != UINT64_MAX) {
                text_buffer_format(out, "%llu", (unsigned long long)(until_ms - now_ms));
            } else {
                text_buffer_text(out, "null");
            }
            text_buffer_text(out, ",");
            admin_breaker_json(out, health, upstream, (int32_t)key);
            text_buffer_text(out, "}");
        }
        text_buffer_text(out, "]}");
    }
    text_buffer_text(out, "]}");
    admin_respond_json(request, 200);
}

/* ---- Routing ---- */

static void admin_method_not_allowed(admin_request_t *request) {
    admin_refuse(request, 405, "invalid_request_error", "method_not_allowed", NULL,
                 "this method is not allowed on this path");
}

/* Dispatches on the path segments after /admin/ and the method. */
static void admin_route(admin_request_t *request) {
    http_method_t method = request->method;
    bool get = method == HTTP_METHOD_GET, post = method == HTTP_METHOD_POST, patch = method == HTTP_METHOD_PATCH;
    uint32_t count = request->segment_count;
    bool users = admin_segment_is(request, 0, "users");
    bool keys = admin_segment_is(request, 0, "keys");
    if (users && count == 1) {
        if (post) {
            admin_users_create(request);
        } else if (get) {
            admin_users_list(request);
        } else {
            admin_method_not_allowed(request);
        }
    } else if (users && count == 2) {
        if (get) {
            admin_users_show(request);
        } else {
            admin_method_not_allowed(request);
        }
    } else if (users && count == 3 && admin_segment_is(request, 2, "balance")) {
        if (post) {
            admin_users_balance(request);
        } else {
            admin_method_not_allowed(request);
        }
    } else if (users && count == 3 &&
               (admin_segment_is(request, 2, "suspend") || admin_segment_is(request, 2, "resume"))) {
        if (post) {
            admin_users_status(request,
                               admin_segment_is(request, 2, "suspend") ? ACCOUNT_USER_SUSPENDED : ACCOUNT_USER_ACTIVE);
        } else {
            admin_method_not_allowed(request);
        }
    } else if (keys && count == 1) {
        if (post) {
            admin_keys_create(request);
        } else if (get) {
            admin_keys_list(request);
        } else {
            admin_method_not_allowed(request);
        }
    } else if (keys && count == 2) {
        if (get) {
            account_key_t *key = admin_find_key(request, 1);
            if (key != NULL) admin_respond_key(request, key, NULL, 200);
        } else if (patch) {
            admin_keys_update(request);
        } else {
            admin_method_not_allowed(request);
        }
    } else if (keys && count == 3 &&
               (admin_segment_is(request, 2, "disable") || admin_segment_is(request, 2, "enable"))) {
        if (post) {
            admin_keys_status(request,
                              admin_segment_is(request, 2, "disable") ? ACCOUNT_KEY_DISABLED : ACCOUNT_KEY_ACTIVE);
        } else {
            admin_method_not_allowed(request);
        }
    } else if (count == 1 && admin_segment_is(request, 0, "usage")) {
        if (get) {
            admin_usage(request);
        } else {
            admin_method_not_allowed(request);
        }
    } else if (count == 1 && admin_segment_is(request, 0, "upstreams")) {
        if (get) {
            admin_upstreams_list(request);
        } else {
            admin_method_not_allowed(request);
        }
    } else if (count == 1 && admin_segment_is(request, 0, "audit")) {
        if (get) {
            admin_audit_list(request);
        } else {
            admin_method_not_allowed(request);
        }
    } else {
        admin_refuse(request, 404, "invalid_request_error", "not_found", NULL, "no such admin endpoint");
    }
}

/* Checks "Authorization: Bearer <admin_token>": both sides are hashed, so
 * the comparison takes the same time whatever was sent. */
static bool admin_authorized(admin_request_t *request) {
    admin_context_t *context = request->context;
    if (!context->admin_enabled) {
        admin_refuse(request, 403, "permission_error", "admin_disabled", NULL,
                     "the admin API is disabled: set admin_token");
        return false;
    }
    const server_exchange_t *exchange = request->exchange;
    const http_request_t *http = &exchange->request;
    auth_token_t token;
    auth_bearer_kind_t kind = AUTH_BEARER_MISSING;
    if (http->has_authorization) {
        kind = auth_bearer_parse(exchange->buffer + http->authorization.offset, http->authorization.length, &token);
    }
    if (kind != AUTH_BEARER_API_KEY && kind != AUTH_BEARER_OTHER) {
        admin_refuse(request, 401, "invalid_request_error", "invalid_admin_token", NULL,
                     kind == AUTH_BEARER_MISSING ? "missing admin token: send Authorization: Bearer <admin_token>"
                                                 : "malformed Authorization header: send Bearer <admin_token>");
        return false;
    }
    uint8_t hash[ACCOUNT_KEY_HASH_BYTES];
    auth_key_hash((const char *)token.bytes, token.length, hash);
    if (!auth_equal_constant_time(hash, context->admin_token_hash, sizeof hash)) {
        admin_refuse(request, 401, "invalid_request_error", "invalid_admin_token", NULL, "invalid admin token");
        return false;
    }
    return true;
}

static void admin_on_request(server_exchange_t *exchange) {
    admin_api_t *api = server_handler_context(exchange->server);
    admin_exchange_t *state = &api->exchanges[server_exchange_index(exchange)];
    char *response = state->response;
    memset(state, 0, sizeof *state);
    state->response = response;
    state->exchange = exchange;
    exchange->handler_state = state;

    admin_request_t request;
    memset(&request, 0, sizeof request);
    request.context = api->context;
    request.exchange = exchange;
    request.state = state;
    request.method = exchange->request.method;
    request.body = server_body(exchange);
    request.body_length = exchange->body_length;
    request.query = exchange->buffer + exchange->request.query.offset;
    request.query_length = exchange->request.query.length;
    request.out = (text_buffer_t){.bytes = state->response, .capacity = ADMIN_RESPONSE_BYTES};
    if (!admin_authorized(&request)) return;
    if (!admin_split_path(&request, exchange->buffer + exchange->request.path.offset,
                          exchange->request.path.length)) {
        admin_refuse(&request, 404, "invalid_request_error", "not_found", NULL, "no such admin endpoint");
        return;
    }
    admin_route(&request);
}

/* ---- The API's life cycle ---- */

int admin_api_create(admin_api_t **result, admin_context_t *context, char *error, size_t error_size) {
    RW_ASSERT(result != NULL && context != NULL);
    *result = NULL;
    admin_api_t *api = calloc(1, sizeof *api);
    if (api == NULL) {
        snprintf(error, error_size, "out of memory for the admin API");
        return -1;
    }
    api->context = context;
    api->response_memory = mmap(NULL, (size_t)ADMIN_EXCHANGES_MAX * ADMIN_RESPONSE_BYTES, PROT_READ | PROT_WRITE,
                                MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    if (api->response_memory == MAP_FAILED) {
        snprintf(error, error_size, "out of memory for the admin API's response buffers");
        free(api);
        return -1;
    }
    for (uint32_t index = 0; index < ADMIN_EXCHANGES_MAX; index++) {
        api->exchanges[index].response = api->response_memory + (size_t)index * ADMIN_RESPONSE_BYTES;
    }
    *result = api;
    return 0;
}

void admin_api_destroy(admin_api_t **pointer) {
    RW_ASSERT(pointer != NULL);
    admin_api_t *api = *pointer;
    if (api == NULL) return;
    munmap(api->response_memory, (size_t)ADMIN_EXCHANGES_MAX * ADMIN_RESPONSE_BYTES);
    api->response_memory = NULL;
    free(api);
    *pointer = NULL;
}

void admin_api_server_config(admin_api_t *api, server_config_t *config) {
    RW_ASSERT(api != NULL && config != NULL);
    config->connections_max = ADMIN_CONNECTIONS_MAX;
    config->exchanges_max = ADMIN_EXCHANGES_MAX;
    config->request_buffer_bytes = ADMIN_REQUEST_BUFFER_BYTES;
    config->large_bodies_max = 1;
    config->body_bytes_max = ADMIN_BODY_BYTES_MAX;
    config->head_bytes_max = ADMIN_HEAD_BYTES_MAX;
    config->header_timeout_ms = 10000;
    config->body_timeout_ms = 30000;
    config->keepalive_timeout_ms = 60000;
    config->handlers = (server_handlers_t){
        .on_request = admin_on_request, .on_sent = admin_on_sent, .on_abort = admin_on_abort};
    config->handler_context = api;
}
