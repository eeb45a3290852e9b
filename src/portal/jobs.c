/* The portal's jobs, run on the control thread (portal-t.h): self-service
 * registration and login (Argon2id: tens of milliseconds, so never on a
 * worker), key listing, creation and deletion, and the usage history. Each
 * writes its JSON answer into the job's reply buffer and returns the HTTP
 * status; errors use the OpenAI shape. The worker has already authenticated
 * the caller for every kind but REGISTER and LOGIN (job->user_id). Users
 * and keys are made by the admin module's account operations.
 *
 * REGISTER and LOGIN are the endpoints anyone may call: before any hashing
 * they ask the account guards (src/guard), kept here because this thread
 * runs every one of them. A refusal is 429 rate_limit_error with the
 * seconds to wait (the reply's Retry-After) and costs no Argon2id. */
#include "portal-internal.h"

#include "ringway/account.h"
#include "ringway/admin.h"
#include "ringway/auth.h"
#include "ringway/config.h"
#include "ringway/guard.h"
#include "ringway/store.h"
#include "ringway/text.h"

#include "ringway/http-writer.h"
#include "ringway/json.h"
#include "ringway/ledger.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

enum {
    JOBS_PASSWORD_BYTES = PASSWORD_LENGTH_MAX + 2, /* one more byte than allowed, so "too long" shows */
    JOBS_EMAIL_INPUT_BYTES = 1024,
};

/* Replaces whatever was written with the error; with too little room for
 * it (less than PORTAL_REPLY_BYTES_MIN) the reply is empty. */
static uint16_t jobs_error(text_buffer_t *out, const admin_failure_t *failure) {
    out->length = 0;
    out->overflow = false;
    out->length = http_write_error_body((uint8_t *)out->bytes, out->capacity, failure->message, failure->type,
                                        failure->param, failure->code);
    return failure->status;
}

static uint16_t jobs_refuse(text_buffer_t *out, uint16_t status, const char *type, const char *code,
                            const char *param, const char *message) {
    admin_failure_t failure;
    admin_fail(&failure, status, type, code, param, "%s", message);
    return jobs_error(out, &failure);
}

/* Decodes the string member `name` of a validated JSON object into out.
 * Returns 0, -1 when absent or not a string, -2 when it does not fit. */
static int jobs_string_member(const portal_job_t *job, const char *name, char *out, size_t capacity,
                              size_t *length) {
    json_span_t value;
    json_type_t type;
    if (json_object_find(job->body, job->body_length, name, &value, &type) != 0 || type != JSON_TYPE_STRING) {
        return -1;
    }
    if (json_string_decode(job->body + value.offset, value.length, out, capacity, length) != 0) return -2;
    return 0;
}

static bool jobs_body_is_object(const portal_job_t *job) {
    if (job->body == NULL || job->body_length == 0 || json_validate(job->body, job->body_length, NULL) != 0) {
        return false;
    }
    size_t index = 0;
    while (index < job->body_length && (job->body[index] == ' ' || job->body[index] == '\t' ||
                                        job->body[index] == '\n' || job->body[index] == '\r')) {
        index++;
    }
    return index < job->body_length && job->body[index] == '{';
}

/* The session token for a user: HS256, valid for jwt_ttl_s. */
static size_t jobs_sign(admin_context_t *context, uint64_t user_id, const char *email, char *token, size_t capacity,
                        int64_t *expires_at_s) {
    int64_t now_s = text_wall_ms() / 1000;
    *expires_at_s = now_s + (int64_t)context->config->jwt_ttl_s;
    return jwt_sign(context->jwt_secret, context->jwt_secret_length, user_id, email, strlen(email), now_s,
                    *expires_at_s, token, capacity);
}

/* The 429 of a guard's refusal, with the seconds to wait for the reply's
 * Retry-After (the message repeats them for people reading the body). */
static uint16_t jobs_refuse_guarded(text_buffer_t *out, guard_verdict_t verdict, uint32_t retry_after_s,
                                    uint32_t *retry_after_out) {
    RW_ASSERT(verdict != GUARD_ALLOW && retry_after_s >= 1);
    *retry_after_out = retry_after_s;
    char message[160];
    const char *code = "login_rate_limited";
    if (verdict == GUARD_REGISTRATION_LIMITED) {
        code = "registration_rate_limited";
        snprintf(message, sizeof message, "Too many accounts were made from this address; retry in %u seconds.",
                 (unsigned)retry_after_s);
    } else if (verdict == GUARD_LOGIN_LIMITED) {
        snprintf(message, sizeof message, "Too many failed logins from this address; retry in %u seconds.",
                 (unsigned)retry_after_s);
    } else {
        snprintf(message, sizeof message, "Too many failed logins for this account; retry in %u seconds.",
                 (unsigned)retry_after_s);
    }
    return jobs_refuse(out, 429, "rate_limit_error", code, NULL, message);
}

static uint16_t jobs_register(admin_context_t *context, guard_t *guard, const portal_job_t *job, text_buffer_t *out,
                              uint32_t *retry_after_s) {
    int64_t now_ms = text_wall_ms();
    uint32_t wait_s = 0;
    guard_verdict_t verdict = guard_registration_check(guard, &job->client, now_ms, &wait_s);
    if (verdict != GUARD_ALLOW) return jobs_refuse_guarded(out, verdict, wait_s, retry_after_s);
    if (!jobs_body_is_object(job)) {
        return jobs_refuse(out, 400, "invalid_request_error", "invalid_json", NULL,
                           "the body must be a JSON object with \"email\" and \"password\"");
    }
    char email_input[JOBS_EMAIL_INPUT_BYTES];
    size_t email_length = 0;
    char email[ACCOUNT_EMAIL_BYTES];
    if (jobs_string_member(job, "email", email_input, sizeof email_input, &email_length) != 0 ||
        !auth_email_valid(email_input, email_length, email)) {
        return jobs_refuse(out, 400, "invalid_request_error", "invalid_email", "email",
                           "email must be a valid email address");
    }
    char password[JOBS_PASSWORD_BYTES];
    size_t password_length = 0;
    int found = jobs_string_member(job, "password", password, sizeof password, &password_length);
    if (found == -1) {
        return jobs_refuse(out, 400, "invalid_request_error", "invalid_password", "password",
                           "password must be a string of 8 to 1024 bytes");
    }
    if (found == -2 || !auth_password_acceptable(password_length)) {
        memset(password, 0, sizeof password);
        return jobs_refuse(out, 400, "invalid_request_error", "invalid_password", "password",
                           password_length < PASSWORD_LENGTH_MIN && found == 0
                               ? "password must be at least 8 characters"
                               : "password must be at most 1024 bytes");
    }
    /* A taken email is refused before spending Argon2's time on it. */
    store_user_record_t existing;
    if (store_user_get_by_email(context->store, email, &existing) == 0) {
        memset(password, 0, sizeof password);
        return jobs_refuse(out, 409, "invalid_request_error", "email_taken", "email",
                           "an account with this email already exists");
    }
    char encoded[PASSWORD_ENCODED_BYTES];
    bool hashed = password_hash(password, password_length, encoded);
    memset(password, 0, sizeof password);
    if (!hashed) {
        return jobs_refuse(out, 500, "server_error", "hash_failed", NULL, "cannot hash the password (out of memory?)");
    }
    admin_failure_t failure;
    admin_user_request_t user_request = {
        .email = email,
        .password_hash = encoded,
        .balance_micros = context->config->free_grant_micros,
        .audit_admin = NULL,
    };
    uint64_t user_id = 0;
    if (!admin_user_create(context, &user_request, &user_id, &failure)) return jobs_error(out, &failure);
    admin_key_request_t key_request;
    admin_key_request_defaults(&key_request);
    key_request.user_id = user_id;
    key_request.name = "default";
    char key_text[AUTH_KEY_TEXT_BYTES];
    /* The account exists from here on: it counts, even if its key fails. */
    guard_registration_record(guard, &job->client, now_ms);
    account_key_t *key = admin_key_create(context, &key_request, key_text, &failure);
    if (key == NULL) return jobs_error(out, &failure);
    char token[JWT_TOKEN_BYTES_MAX + 1];
    int64_t expires_at_s = 0;
    size_t token_length = jobs_sign(context, user_id, email, token, sizeof token, &expires_at_s);
    RW_ASSERT(token_length > 0);

    int64_t balance = context->config->free_grant_micros;
    text_buffer_format(out, "{\"user_id\":%llu,\"email\":", (unsigned long long)user_id);
    text_buffer_json_string(out, email, strlen(email));
    text_buffer_format(out, ",\"token\":\"%s\",\"token_type\":\"Bearer\",\"expires_at\":%lld", token,
                        (long long)expires_at_s);
    text_buffer_format(out, ",\"api_key\":\"%s\",\"api_key_id\":%llu,\"balance\":%lld,\"balance_display\":\"",
                        key_text, (unsigned long long)key->id, (long long)balance);
    text_buffer_money(out, balance);
    text_buffer_text(out, "\",\"message\":\"Registered. Keep the API key: it is shown only once.\"}");
    memset(key_text, 0, sizeof key_text);
    return 200;
}

static uint16_t jobs_login(admin_context_t *context, guard_t *guard, const portal_job_t *job, text_buffer_t *out,
                           uint32_t *retry_after_s) {
    int64_t now_ms = text_wall_ms();
    if (!jobs_body_is_object(job)) {
        return jobs_refuse(out, 400, "invalid_request_error", "invalid_json", NULL,
                           "the body must be a JSON object with \"email\" and \"password\"");
    }
    static const char wrong[] = "invalid email or password";
    /* The account the guards count: the normalised email when it is one,
     * else the bytes as sent (so garbage has a streak of its own). */
    char email_input[JOBS_EMAIL_INPUT_BYTES];
    size_t email_length = 0;
    char email[ACCOUNT_EMAIL_BYTES];
    bool email_found = jobs_string_member(job, "email", email_input, sizeof email_input, &email_length) == 0;
    bool email_valid = email_found && auth_email_valid(email_input, email_length, email);
    const char *subject = email_valid ? email : email_input;
    size_t subject_length = email_valid ? strlen(email) : (email_found ? email_length : 0);
    uint32_t wait_s = 0;
    guard_verdict_t verdict = guard_login_check(guard, &job->client, subject, subject_length, now_ms, &wait_s);
    if (verdict != GUARD_ALLOW) return jobs_refuse_guarded(out, verdict, wait_s, retry_after_s);

    char password[JOBS_PASSWORD_BYTES];
    size_t password_length = 0;
    if (jobs_string_member(job, "password", password, sizeof password, &password_length) != 0 ||
        password_length > PASSWORD_LENGTH_MAX) {
        memset(password, 0, sizeof password);
        guard_login_failed(guard, &job->client, subject, subject_length, now_ms);
        return jobs_refuse(out, 401, "invalid_request_error", "invalid_credentials", NULL, wrong);
    }
    store_user_record_t record;
    bool known = email_valid && store_user_get_by_email(context->store, email, &record) == 0 &&
                 record.password_hash[0] != '\0';
    /* Unknown emails and password-less accounts cost the same time as a
     * wrong password and get the same answer. */
    bool verified = false;
    if (known) {
        verified = password_verify(record.password_hash, password, password_length);
    } else {
        password_verify_dummy(password, password_length);
    }
    memset(password, 0, sizeof password);
    account_user_t *user = verified ? account_user_get(context->tables, record.id) : NULL;
    if (user == NULL) {
        guard_login_failed(guard, &job->client, subject, subject_length, now_ms);
        return jobs_refuse(out, 401, "invalid_request_error", "invalid_credentials", NULL, wrong);
    }
    guard_login_succeeded(guard, &job->client, subject, subject_length, now_ms);

    char token[JWT_TOKEN_BYTES_MAX + 1];
    int64_t expires_at_s = 0;
    size_t token_length = jobs_sign(context, user->id, user->email, token, sizeof token, &expires_at_s);
    RW_ASSERT(token_length > 0);
    int64_t balance = atomic_load_explicit(&user->available_micros, memory_order_acquire);
    text_buffer_format(out, "{\"user_id\":%llu,\"email\":", (unsigned long long)user->id);
    text_buffer_json_string(out, user->email, strlen(user->email));
    text_buffer_format(out, ",\"token\":\"%s\",\"token_type\":\"Bearer\",\"expires_at\":%lld,\"balance\":%lld"
                             ",\"balance_display\":\"",
                        token, (long long)expires_at_s, (long long)balance);
    text_buffer_money(out, balance);
    text_buffer_format(out, "\",\"status\":\"%s\"}",
                        account_user_status(user) == ACCOUNT_USER_SUSPENDED ? "suspended" : "active");
    return 200;
}

typedef struct jobs_key_list {
    admin_context_t *context;
    text_buffer_t *out;
    uint32_t written;
    bool truncated;
    bool failed;
} jobs_key_list_t;

static bool jobs_list_key(void *context, account_key_t *key) {
    jobs_key_list_t *list = context;
    if (text_buffer_room(list->out) < ADMIN_ENTRY_BYTES_MAX / 2) {
        list->truncated = true;
        return false;
    }
    size_t mark = list->out->length;
    if (list->written > 0) text_buffer_text(list->out, ",");
    if (!admin_write_key(list->context, list->out, key, NULL)) {
        list->failed = true;
        return false;
    }
    if (list->out->overflow) {
        list->out->overflow = false;
        list->out->length = mark;
        list->truncated = true;
        return false;
    }
    list->written++;
    return true;
}

static uint16_t jobs_keys_list(admin_context_t *context, const portal_job_t *job, text_buffer_t *out) {
    if (account_user_get(context->tables, job->user_id) == NULL) {
        return jobs_refuse(out, 404, "invalid_request_error", "user_not_found", NULL, "no such account");
    }
    text_buffer_text(out, "{\"object\":\"list\",\"data\":[");
    jobs_key_list_t list = {.context = context, .out = out};
    admin_user_keys(context, job->user_id, jobs_list_key, &list);
    if (list.failed) {
        return jobs_refuse(out, 500, "server_error", "store_error", NULL, "cannot read a key from the store");
    }
    text_buffer_format(out, "],\"has_more\":%s}", list.truncated ? "true" : "false");
    return 200;
}

static bool jobs_count_key(void *context, account_key_t *key) { return true; }

static uint16_t jobs_key_create(admin_context_t *context, const portal_job_t *job, text_buffer_t *out) {
    if (account_user_get(context->tables, job->user_id) == NULL) {
        return jobs_refuse(out, 404, "invalid_request_error", "user_not_found", NULL, "no such account");
    }
    char name[ACCOUNT_KEY_NAME_BYTES * 4];
    size_t name_length = 0;
    if (job->argument == NULL || job->argument_length == 0) {
        snprintf(name, sizeof name, "default");
        name_length = strlen(name);
    } else if (!admin_url_decode(job->argument, job->argument_length, true, name, sizeof name, &name_length) ||
               !admin_key_name_valid(name, name_length)) {
        return jobs_refuse(out, 400, "invalid_request_error", "invalid_name", "name",
                           "name must be 1 to 63 bytes of UTF-8 without control characters");
    }
    if (admin_user_keys(context, job->user_id, jobs_count_key, NULL) >= PORTAL_KEYS_PER_USER_MAX) {
        char message[128];
        snprintf(message, sizeof message, "an account can have at most %d API keys (disabled ones included)",
                 PORTAL_KEYS_PER_USER_MAX);
        return jobs_refuse(out, 409, "invalid_request_error", "key_limit_reached", NULL, message);
    }
    admin_key_request_t request;
    admin_key_request_defaults(&request);
    request.user_id = job->user_id;
    request.name = name;
    char key_text[AUTH_KEY_TEXT_BYTES];
    admin_failure_t failure;
    account_key_t *key = admin_key_create(context, &request, key_text, &failure);
    if (key == NULL) return jobs_error(out, &failure);
    bool written = admin_write_key(context, out, key, key_text);
    memset(key_text, 0, sizeof key_text);
    if (!written) return jobs_refuse(out, 500, "server_error", "store_error", NULL, "cannot read the new key back");
    return 200;
}

static uint16_t jobs_key_delete(admin_context_t *context, const portal_job_t *job, text_buffer_t *out) {
    uint64_t key_id = 0;
    account_key_t *key = NULL;
    if (job->argument != NULL && text_parse_u64((const char *)job->argument, job->argument_length, &key_id)) {
        key = account_key_by_id(context->tables, key_id);
    }
    if (key == NULL || (uint64_t)key->user_index + 1 != job->user_id) {
        return jobs_refuse(out, 404, "invalid_request_error", "key_not_found", NULL, "no such API key");
    }
    if (account_key_status(key) != ACCOUNT_KEY_DISABLED) {
        store_key_update_t update;
        memset(&update, 0, sizeof update);
        update.fields = STORE_KEY_FIELD_STATUS;
        update.status = ACCOUNT_KEY_DISABLED;
        admin_failure_t failure;
        if (!admin_key_update(context, key, &update, NULL, &failure)) return jobs_error(out, &failure);
    }
    text_buffer_format(out, "{\"id\":%llu,\"object\":\"api_key\",\"deleted\":true,\"status\":\"disabled\"}",
                        (unsigned long long)key->id);
    return 200;
}

typedef struct jobs_usage_list {
    text_buffer_t *out;
    uint32_t limit;
    uint32_t written;
    bool has_more;
} jobs_usage_list_t;

static int jobs_list_usage(void *context, const store_usage_record_t *record, const char *json, size_t json_length) {
    jobs_usage_list_t *list = context;
    text_buffer_t *out = list->out;
    if (list->written == list->limit || text_buffer_room(out) < ADMIN_ENTRY_BYTES_MAX) {
        list->has_more = true;
        return 1;
    }
    size_t mark = out->length;
    char created[TEXT_TIME_BYTES];
    text_time_format(record->created_ms >= 0 ? record->created_ms : 0, created);
    if (list->written > 0) text_buffer_text(out, ",");
    text_buffer_format(out, "{\"id\":%llu,\"request_id\":", (unsigned long long)record->id);
    text_buffer_json_string(out, record->request_id, strlen(record->request_id));
    text_buffer_text(out, ",\"model\":");
    text_buffer_json_string(out, record->model, strlen(record->model));
    text_buffer_format(out,
                        ",\"key_id\":%llu,\"prompt_tokens\":%llu,\"completion_tokens\":%llu,\"total_tokens\":%llu"
                        ",\"cached_tokens\":%llu,\"reasoning_tokens\":%llu,\"cost_micros\":%lld,\"cost\":\"",
                        (unsigned long long)record->key_id, (unsigned long long)record->prompt_tokens,
                        (unsigned long long)record->completion_tokens,
                        (unsigned long long)(record->prompt_tokens + record->completion_tokens),
                        (unsigned long long)record->cached_tokens, (unsigned long long)record->reasoning_tokens,
                        (long long)record->cost_micros);
    text_buffer_money(out, record->cost_micros);
    text_buffer_text(out, "\",\"status\":");
    text_buffer_json_string(out, record->status, strlen(record->status));
    text_buffer_format(out, ",\"latency_ms\":%llu,\"created_ms\":%lld,\"created\":\"%s\",\"estimated\":%s"
                             ",\"capped\":%s}",
                        (unsigned long long)record->latency_ms, (long long)record->created_ms, created,
                        record->estimated ? "true" : "false", record->capped ? "true" : "false");
    if (out->overflow) {
        out->overflow = false;
        out->length = mark;
        list->has_more = true;
        return 1;
    }
    list->written++;
    return 0;
}

static uint16_t jobs_usage_list(admin_context_t *context, const portal_job_t *job, text_buffer_t *out) {
    if (account_user_get(context->tables, job->user_id) == NULL) {
        return jobs_refuse(out, 404, "invalid_request_error", "user_not_found", NULL, "no such account");
    }
    uint32_t limit = job->limit == 0 ? PORTAL_USAGE_LIMIT_DEFAULT : RW_MIN(job->limit, (uint32_t)PORTAL_USAGE_LIMIT_MAX);
    text_buffer_text(out, "{\"object\":\"list\",\"data\":[");
    jobs_usage_list_t list = {.out = out, .limit = limit};
    /* One more than asked: seeing it tells has_more. */
    store_usage_query_t query = {.user_id = job->user_id, .limit = limit + 1};
    int visited = store_usage_list(context->store, &query, jobs_list_usage, &list);
    if (visited < 0) {
        return jobs_refuse(out, 500, "server_error", "store_error", NULL, "cannot read the usage history");
    }
    text_buffer_format(out, "],\"has_more\":%s}", list.has_more ? "true" : "false");
    return 200;
}

uint16_t portal_job_run(admin_context_t *context, guard_t *guard, const portal_job_t *job, uint32_t *length,
                        uint32_t *retry_after_s) {
    RW_ASSERT(context != NULL && guard != NULL && job != NULL && length != NULL && retry_after_s != NULL);
    *retry_after_s = 0;
    text_buffer_t out = {.bytes = (char *)job->reply, .capacity = job->reply_capacity};
    if (job->reply_capacity < PORTAL_REPLY_BYTES_MIN) {
        uint16_t status = jobs_refuse(&out, 413, "invalid_request_error", "request_too_large", NULL,
                                      "the request is too large for this endpoint");
        *length = (uint32_t)out.length;
        return status;
    }
    uint16_t status = 500;
    switch (job->kind) {
    case PORTAL_JOB_REGISTER: status = jobs_register(context, guard, job, &out, retry_after_s); break;
    case PORTAL_JOB_LOGIN: status = jobs_login(context, guard, job, &out, retry_after_s); break;
    case PORTAL_JOB_KEYS_LIST: status = jobs_keys_list(context, job, &out); break;
    case PORTAL_JOB_KEY_CREATE: status = jobs_key_create(context, job, &out); break;
    case PORTAL_JOB_KEY_DELETE: status = jobs_key_delete(context, job, &out); break;
    case PORTAL_JOB_USAGE_LIST: status = jobs_usage_list(context, job, &out); break;
    default: RW_ASSERT(!"unknown portal job kind");
    }
    if (out.overflow) {
        status = jobs_refuse(&out, 500, "server_error", "reply_too_large", NULL,
                             "the answer does not fit in the reply buffer");
        *retry_after_s = 0;
    }
    *length = (uint32_t)out.length;
    return status;
}
