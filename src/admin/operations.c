/* Account operations, shared by the admin API (admin.c) and the portal's
 * jobs (src/portal/jobs.c), both on the control thread: creating users and
 * keys (store first, synced, then the in-memory tables, so nothing is ever
 * visible that a crash could lose), updating keys, the audit log, the JSON
 * shapes of users and keys, and the blocking store call under all of them
 * (see admin.h for the contracts). */
#include "admin-internal.h"

#include "ringway/json.h"
#include "ringway/ledger.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- The context ---- */

void admin_context_prepare(admin_context_t *context) {
    RW_ASSERT(context != NULL);
    RW_ASSERT(context->config != NULL && context->tables != NULL && context->store != NULL &&
              context->store_thread != NULL);
    RW_ASSERT(context->store_producer < context->store_thread->producer_count);
    RW_ASSERT(context->jwt_secret_length >= JWT_SECRET_BYTES_MIN &&
              context->jwt_secret_length <= CONFIG_SECRET_BYTES);
    RW_ASSERT(context->next_user_id >= 1 && context->next_key_id >= 1);
    const config_t *config = context->config;
    context->admin_enabled = config->has_admin_token && config->admin_token[0] != '\0';
    if (!context->admin_enabled) {
        snprintf(context->admin_fingerprint, sizeof context->admin_fingerprint, "none");
        return;
    }
    auth_key_hash(config->admin_token, strlen(config->admin_token), context->admin_token_hash);
    static const char hex[] = "0123456789abcdef";
    for (uint32_t index = 0; index < (ADMIN_FINGERPRINT_BYTES - 1) / 2; index++) {
        context->admin_fingerprint[index * 2] = hex[context->admin_token_hash[index] >> 4];
        context->admin_fingerprint[index * 2 + 1] = hex[context->admin_token_hash[index] & 15];
    }
    context->admin_fingerprint[ADMIN_FINGERPRINT_BYTES - 1] = '\0';
}

int admin_store_call(admin_context_t *context, const store_message_t *message, uint32_t flags, store_ack_t *ack) {
    store_message_t *copy = &context->message;
    if (copy != message) *copy = *message;
    copy->flags = flags;
    copy->token = ++context->store_token;
    int status = store_thread_call(context->store_thread, context->store_producer, copy, context->ring,
                                   ADMIN_STORE_TIMEOUT_MS, ack);
    if (status != 0) return status;
    return ack->status;
}

/* ---- Failures ---- */

void admin_fail(admin_failure_t *failure, uint16_t status, const char *type, const char *code, const char *param,
                const char *format, ...) {
    failure->status = status;
    failure->type = type;
    failure->code = code;
    failure->param = param;
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(failure->message, sizeof failure->message, format, arguments);
    va_end(arguments);
}

void admin_fail_store(admin_failure_t *failure, int status, const char *what) {
    if (status == -ETIMEDOUT || status == -EAGAIN) {
        admin_fail(failure, 503, "server_error", "store_busy", NULL, "the store did not answer in time while %s",
                   what);
        return;
    }
    admin_fail(failure, 500, "server_error", "store_error", NULL, "the store failed while %s (%s)", what,
               strerror(status < 0 ? -status : status));
}

/* ---- Audit ---- */

/* Appends a JSON audit entry for the store (synced); a failure is logged,
 * not reported (the change itself is done). */
static void admin_audit(admin_context_t *context, const char *admin, const char *action, const char *target,
                        const char *details) {
    store_message_t *message = &context->message;
    memset(message, 0, sizeof *message);
    message->kind = STORE_MESSAGE_AUDIT;
    store_audit_record_t *audit = &message->body.audit;
    snprintf(audit->admin, sizeof audit->admin, "%s", admin);
    snprintf(audit->action, sizeof audit->action, "%s", action);
    snprintf(audit->target, sizeof audit->target, "%s", target);
    snprintf(audit->details, sizeof audit->details, "%s", details);
    store_ack_t ack;
    int status = admin_store_call(context, message, STORE_MESSAGE_FLAG_SYNC, &ack);
    if (status != 0) {
        fprintf(stderr, "ringway: admin: cannot write the audit entry %s %s (%s): %s\n", action, target, details,
                strerror(-status));
    }
}

void admin_audit_record(admin_context_t *context, const char *admin, const char *action, const char *kind,
                        uint64_t id, const char *details) {
    char target[32];
    snprintf(target, sizeof target, "%s:%llu", kind, (unsigned long long)id);
    admin_audit(context, admin, action, target, details);
}

/* The 500 for a `kind` record ("user", "key") the store took but the
 * in-memory tables refused. */
static void admin_fail_unpublished(admin_failure_t *failure, const char *kind, uint64_t id) {
    admin_fail(failure, 500, "server_error", "publish_failed", NULL, "%s %llu was stored but cannot be published in memory",
               kind, (unsigned long long)id);
}

/* ---- Users ---- */

bool admin_user_create(admin_context_t *context, const admin_user_request_t *request, uint64_t *user_id,
                       admin_failure_t *failure) {
    RW_ASSERT(request->email != NULL && request->password_hash != NULL && request->balance_micros >= 0);
    store_user_record_t existing;
    int status = store_user_get_by_email(context->store, request->email, &existing);
    if (status == 0) {
        admin_fail(failure, 409, "invalid_request_error", "email_taken", "email",
                   "an account with this email already exists");
        return false;
    }
    if (status != -ENOENT) {
        admin_fail_store(failure, status, "looking up the email");
        return false;
    }
    uint64_t id = context->next_user_id;
    if (id > context->tables->users_max) {
        admin_fail(failure, 503, "server_error", "users_full", NULL,
                   "the user table is full (users_max = %u in [billing])", context->tables->users_max);
        return false;
    }
    store_message_t *message = &context->message;
    memset(message, 0, sizeof *message);
    message->kind = STORE_MESSAGE_USER_CREATE;
    store_user_record_t *record = &message->body.user_create;
    record->id = id;
    record->status = ACCOUNT_USER_ACTIVE;
    record->balance_micros = request->balance_micros;
    record->created_ms = text_wall_ms();
    snprintf(record->email, sizeof record->email, "%s", request->email);
    snprintf(record->password_hash, sizeof record->password_hash, "%s", request->password_hash);
    store_ack_t ack;
    status = admin_store_call(context, message, STORE_MESSAGE_FLAG_SYNC, &ack);
    if (status == -ETIMEDOUT) context->next_user_id = id + 1; /* it may still be written: never reuse the id */
    if (status == -EEXIST) {
        admin_fail(failure, 409, "invalid_request_error", "email_taken", "email",
                   "an account with this email already exists");
        return false;
    }
    if (status != 0) {
        admin_fail_store(failure, status, "creating the user");
        return false;
    }
    context->next_user_id = id + 1;
    uint32_t index = account_user_publish(context->tables, id, request->email, strlen(request->email),
                                          request->balance_micros, ACCOUNT_USER_ACTIVE);
    if (index == ACCOUNT_INDEX_NONE) {
        admin_fail_unpublished(failure, "user", id);
        return false;
    }
    *user_id = id;
    if (request->audit_admin != NULL) {
        char details_memory[STORE_AUDIT_DETAILS_BYTES];
        text_buffer_t details = {.bytes = details_memory, .capacity = sizeof details_memory - 1};
        text_buffer_text(&details, "{\"email\":");
        text_buffer_json_string(&details, request->email, strlen(request->email));
        text_buffer_text(&details, ",\"balance\":\"");
        text_buffer_money(&details, request->balance_micros);
        text_buffer_format(&details, "\",\"password\":%s}", request->password_hash[0] != '\0' ? "true" : "false");
        details_memory[text_buffer_result(&details)] = '\0';
        admin_audit_record(context, request->audit_admin, "user.create", "user", id, details_memory);
    }
    return true;
}

bool admin_write_user(admin_context_t *context, text_buffer_t *out, const account_user_t *user) {
    store_user_record_t record;
    if (store_user_get(context->store, user->id, &record) != 0) return false;
    char created[TEXT_TIME_BYTES];
    text_time_format(record.created_ms >= 0 ? record.created_ms : 0, created);
    int64_t available = atomic_load_explicit(&((account_user_t *)user)->available_micros, memory_order_acquire);
    account_user_status_t status = account_user_status(user);
    text_buffer_format(out, "{\"id\":%llu,\"object\":\"user\",\"email\":", (unsigned long long)user->id);
    text_buffer_json_string(out, user->email, strlen(user->email));
    text_buffer_format(out, ",\"status\":\"%s\",\"balance_micros\":%lld,\"balance\":\"",
                        status == ACCOUNT_USER_SUSPENDED ? "suspended" : "active", (long long)record.balance_micros);
    text_buffer_money(out, record.balance_micros);
    text_buffer_format(out, "\",\"available_micros\":%lld,\"available\":\"", (long long)available);
    text_buffer_money(out, available);
    text_buffer_format(out, "\",\"has_password\":%s,\"created_ms\":%lld,\"created\":\"%s\"}",
                        record.password_hash[0] != '\0' ? "true" : "false", (long long)record.created_ms, created);
    return true;
}

/* ---- Keys ---- */

bool admin_key_name_valid(const char *name, size_t length) {
    if (length == 0 || length >= ACCOUNT_KEY_NAME_BYTES) return false;
    for (size_t index = 0; index < length; index++) {
        uint8_t byte = (uint8_t)name[index];
        if (byte < 0x20 || byte == 0x7F) return false;
    }
    return text_utf8_valid((const uint8_t *)name, length);
}

void admin_key_request_defaults(admin_key_request_t *request) {
    memset(request, 0, sizeof *request);
    request->all_models = true;
    request->spend_cap_micros = -1;
    for (uint32_t kind = 0; kind < STORE_KEY_LIMITS; kind++) request->limits[kind] = STORE_LIMIT_INHERIT;
}

/* Adds one model name to an allowlist being built. */
static bool admin_models_add(admin_context_t *context, const char *name, size_t length, char *models, size_t *models_length,
                             uint64_t *bits, admin_failure_t *failure) {
    const config_t *config = context->config;
    const config_model_t *model = config_find_model(config, (const uint8_t *)name, length);
    if (model == NULL) {
        admin_fail(failure, 400, "invalid_request_error", "model_not_found", "models",
                   "unknown model '%.*s' (models are the [model NAME] sections of the configuration)",
                   (int)RW_MIN(length, (size_t)128), name);
        return false;
    }
    size_t index = (size_t)(model - config->models);
    if (index >= ACCOUNT_MODEL_WORDS * 64) {
        admin_fail(failure, 400, "invalid_request_error", "model_not_allowed", "models",
                   "model '%s' is beyond the 256 models an allowlist can name", model->name);
        return false;
    }
    uint64_t bit = (uint64_t)1 << (index % 64);
    if (bits[index / 64] & bit) {
        admin_fail(failure, 400, "invalid_request_error", "invalid_value", "models", "model '%s' is listed twice",
                   model->name);
        return false;
    }
    size_t needed = length + (*models_length > 0 ? 1 : 0);
    if (*models_length + needed >= STORE_MODELS_BYTES) {
        admin_fail(failure, 400, "invalid_request_error", "invalid_value", "models",
                   "the model list is too long (at most %d bytes of names)", STORE_MODELS_BYTES - 1);
        return false;
    }
    if (*models_length > 0) models[(*models_length)++] = ',';
    memcpy(models + *models_length, name, length);
    *models_length += length;
    models[*models_length] = '\0';
    bits[index / 64] |= bit;
    return true;
}

bool admin_models_parse(admin_context_t *context, const uint8_t *body, size_t length, json_span_t value, json_type_t type,
                        bool *all_models, char models[static STORE_MODELS_BYTES],
                        uint64_t bits[static ACCOUNT_MODEL_WORDS], admin_failure_t *failure) {
    memset(bits, 0, ACCOUNT_MODEL_WORDS * sizeof(uint64_t));
    models[0] = '\0';
    if (type == JSON_TYPE_NULL) {
        *all_models = true;
        return true;
    }
    if (type != JSON_TYPE_ARRAY) {
        admin_fail(failure, 400, "invalid_request_error", "invalid_type", "models",
                   "models must be an array of model names, or null for every model");
        return false;
    }
    size_t models_length = 0;
    uint32_t cursor = 0;
    json_span_t element;
    uint32_t count = 0;
    while (admin_json_array_next(body, length, value, &cursor, &element)) {
        char name[CONFIG_MODEL_NAME_BYTES];
        size_t name_length = 0;
        if (body[element.offset] != '"' ||
            json_string_decode(body + element.offset, element.length, name, sizeof name, &name_length) != 0) {
            admin_fail(failure, 400, "invalid_request_error", "invalid_type", "models",
                       "models must be an array of model names (strings of at most %d bytes)",
                       CONFIG_MODEL_NAME_BYTES - 1);
            return false;
        }
        if (!admin_models_add(context, name, name_length, models, &models_length, bits, failure)) return false;
        count++;
    }
    if (count == 0) {
        admin_fail(failure, 400, "invalid_request_error", "invalid_value", "models",
                   "models must name at least one model (null allows every model)");
        return false;
    }
    *all_models = false;
    return true;
}

uint32_t admin_user_keys(admin_context_t *context, uint64_t user_id,
                         bool (*visit)(void *context, account_key_t *key), void *visit_context) {
    uint32_t count = account_key_count(context->tables);
    uint32_t visited = 0;
    for (uint32_t slot = 0; slot < count; slot++) {
        account_key_t *key = account_key_at(context->tables, slot);
        if (key == NULL || (uint64_t)key->user_index + 1 != user_id) continue;
        visited++;
        if (!visit(visit_context, key)) break;
    }
    return visited;
}

static void admin_key_audit_details(text_buffer_t *details, const admin_key_request_t *request) {
    text_buffer_format(details, "{\"user_id\":%llu,\"name\":", (unsigned long long)request->user_id);
    text_buffer_json_string(details, request->name, strlen(request->name));
    text_buffer_text(details, ",\"models\":");
    if (request->all_models) {
        text_buffer_text(details, "null");
    } else {
        text_buffer_json_string(details, request->models, strlen(request->models));
    }
    text_buffer_text(details, ",\"tier\":");
    if (request->tier[0] == '\0') text_buffer_text(details, "null");
    else text_buffer_json_string(details, request->tier, strlen(request->tier));
    text_buffer_format(details, ",\"token_quota\":%llu,\"expires_at_ms\":%lld,\"spend_cap\":",
                       (unsigned long long)request->token_quota, (long long)request->expires_at_ms);
    if (request->spend_cap_micros < 0) {
        text_buffer_text(details, "null}");
    } else {
        text_buffer_text(details, "\"");
        text_buffer_money(details, request->spend_cap_micros);
        text_buffer_text(details, "\"}");
    }
}

account_key_t *admin_key_create(admin_context_t *context, const admin_key_request_t *request,
                                char key_text[static AUTH_KEY_TEXT_BYTES], admin_failure_t *failure) {
    RW_ASSERT(request->name != NULL && admin_key_name_valid(request->name, strlen(request->name)));
    RW_ASSERT(request->spend_cap_micros >= -1 && request->expires_at_ms >= 0);
    if (account_user_get(context->tables, request->user_id) == NULL) {
        admin_fail(failure, 404, "invalid_request_error", "user_not_found", "user_id", "no user with id %llu",
                   (unsigned long long)request->user_id);
        return NULL;
    }
    uint64_t id = context->next_key_id;
    if (id > context->tables->keys_max || account_key_count(context->tables) >= context->tables->keys_max) {
        admin_fail(failure, 503, "server_error", "keys_full", NULL,
                   "the API key table is full (keys_max = %u in [billing])", context->tables->keys_max);
        return NULL;
    }
    if (!auth_key_generate(key_text)) {
        admin_fail(failure, 500, "server_error", "no_randomness", NULL, "getrandom failed: cannot make a key");
        return NULL;
    }
    store_message_t *message = &context->message;
    memset(message, 0, sizeof *message);
    message->kind = STORE_MESSAGE_KEY_CREATE;
    store_key_record_t *record = &message->body.key_create;
    record->id = id;
    record->user_id = request->user_id;
    auth_key_hash(key_text, AUTH_KEY_TEXT_LENGTH, record->hash);
    auth_key_mask(key_text, AUTH_KEY_TEXT_LENGTH, record->prefix, record->last4);
    record->status = ACCOUNT_KEY_ACTIVE;
    memcpy(record->tier, request->tier, sizeof record->tier);
    memcpy(record->limits, request->limits, sizeof record->limits);
    record->token_quota = request->token_quota;
    record->expires_at_ms = request->expires_at_ms;
    record->spend_cap_micros = request->spend_cap_micros;
    record->spent_micros = 0;
    record->created_ms = text_wall_ms();
    record->all_models = request->all_models;
    snprintf(record->name, sizeof record->name, "%s", request->name);
    snprintf(record->models, sizeof record->models, "%s", request->all_models ? "" : request->models);
    account_key_t fields;
    int converted = admin_key_fields_from_record(context->config, record, &fields);
    RW_ASSERT(converted == 0);
    store_ack_t ack;
    int status = admin_store_call(context, message, STORE_MESSAGE_FLAG_SYNC, &ack);
    if (status == -ETIMEDOUT) context->next_key_id = id + 1;
    if (status == -ENOENT) {
        admin_fail(failure, 404, "invalid_request_error", "user_not_found", "user_id", "no user with id %llu",
                   (unsigned long long)request->user_id);
        return NULL;
    }
    if (status != 0) {
        admin_fail_store(failure, status, "creating the key");
        return NULL;
    }
    context->next_key_id = id + 1;
    account_key_t *key = account_key_publish(context->tables, &fields);
    if (key == NULL) {
        admin_fail_unpublished(failure, "key", id);
        return NULL;
    }
    if (request->audit_admin != NULL) {
        char details_memory[STORE_AUDIT_DETAILS_BYTES];
        text_buffer_t details = {.bytes = details_memory, .capacity = sizeof details_memory - 1};
        admin_key_audit_details(&details, request);
        details_memory[text_buffer_result(&details)] = '\0';
        admin_audit_record(context, request->audit_admin, "key.create", "key", id, details_memory);
    }
    return key;
}

bool admin_key_update(admin_context_t *context, account_key_t *key, const store_key_update_t *update,
                      const uint64_t model_bits[ACCOUNT_MODEL_WORDS], admin_failure_t *failure) {
    RW_ASSERT(!(update->fields & STORE_KEY_FIELD_NAME)); /* names are immutable in memory */
    store_message_t *message = &context->message;
    memset(message, 0, sizeof *message);
    message->kind = STORE_MESSAGE_KEY_UPDATE;
    message->body.key_update = *update;
    message->body.key_update.key_id = key->id;
    store_ack_t ack;
    int status = admin_store_call(context, message, STORE_MESSAGE_FLAG_SYNC, &ack);
    if (status == -ENOENT) {
        admin_fail(failure, 404, "invalid_request_error", "key_not_found", NULL, "no key with id %llu",
                   (unsigned long long)key->id);
        return false;
    }
    if (status != 0) {
        admin_fail_store(failure, status, "updating the key");
        return false;
    }
    if (update->fields & STORE_KEY_FIELD_STATUS) account_key_set_status(key, (account_key_status_t)update->status);
    if (update->fields & STORE_KEY_FIELD_EXPIRES) account_key_set_expiry(key, update->expires_at_ms);
    if (update->fields & STORE_KEY_FIELD_TIER) {
        uint32_t tier = ACCOUNT_TIER_DEFAULT;
        if (update->tier[0] != '\0') {
            tier = config_find_tier(context->config, update->tier);
            RW_ASSERT(tier != CONFIG_TIER_NONE && "the caller checked the tier's name");
        }
        account_key_set_tier(key, tier);
    }
    if (update->fields & STORE_KEY_FIELD_LIMITS) {
        for (uint32_t kind = 0; kind < STORE_KEY_LIMITS; kind++) account_key_set_limit(key, kind, update->limits[kind]);
    }
    if (update->fields & STORE_KEY_FIELD_TOKEN_QUOTA) {
        /* The new quota first, then a fresh pool: a lease taken in between
         * is of the old pool, and void. The fresh pool counts at least what
         * the store settled (without a quota the relay counts nothing in
         * the pool) and at least what the old pool had granted (requests in
         * flight are in it, not yet in the store). */
        account_key_set_token_quota(key, update->token_quota);
        store_key_record_t record;
        uint64_t settled = store_key_get(context->store, key->id, &record) == 0 ? record.tokens_used : 0;
        limit_pool_restart(&key->quota_pool, settled);
    }
    if (update->fields & (STORE_KEY_FIELD_TIER | STORE_KEY_FIELD_LIMITS | STORE_KEY_FIELD_TOKEN_QUOTA)) {
        atomic_fetch_add_explicit(&key->limits_generation, 1, memory_order_release);
    }
    if (update->fields & STORE_KEY_FIELD_SPEND_CAP) ledger_key_set_cap(key, update->spend_cap_micros);
    if (update->fields & STORE_KEY_FIELD_MODELS) account_key_set_models(key, update->all_models, model_bits);
    return true;
}

bool admin_write_key(admin_context_t *context, text_buffer_t *out, const account_key_t *key, const char *key_text) {
    account_key_t *mutable_key = (account_key_t *)key;
    store_key_record_t record;
    if (store_key_get(context->store, key->id, &record) != 0) return false;
    char masked[AUTH_KEY_MASKED_BYTES];
    size_t masked_length = auth_key_masked(key->prefix, key->last4, masked);
    char time_text[TEXT_TIME_BYTES];
    text_time_format(record.created_ms >= 0 ? record.created_ms : 0, time_text);
    account_key_status_t status = account_key_status(key);
    int64_t expires_at_ms = atomic_load_explicit(&mutable_key->expires_at_ms, memory_order_acquire);
    int64_t cap = atomic_load_explicit(&mutable_key->spend_cap_micros, memory_order_acquire);
    bool all_models = atomic_load_explicit(&mutable_key->all_models, memory_order_acquire) != 0;

    text_buffer_format(out, "{\"id\":%llu,\"object\":\"api_key\",\"user_id\":%llu,\"name\":",
                        (unsigned long long)key->id, (unsigned long long)key->user_index + 1);
    text_buffer_json_string(out, key->name, strlen(key->name));
    text_buffer_text(out, ",\"masked_key\":");
    text_buffer_json_string(out, masked, masked_length);
    if (key_text != NULL) {
        text_buffer_text(out, ",\"key\":");
        text_buffer_json_string(out, key_text, strlen(key_text));
    }
    text_buffer_format(out, ",\"status\":\"%s\",\"expired\":%s,\"created_ms\":%lld,\"created\":\"%s\"",
                        status == ACCOUNT_KEY_DISABLED ? "disabled" : "active",
                        account_key_expired(key, text_wall_ms()) ? "true" : "false", (long long)record.created_ms,
                        time_text);
    if (expires_at_ms > 0) {
        text_time_format(expires_at_ms, time_text);
        text_buffer_format(out, ",\"expires_at_ms\":%lld,\"expires_at\":\"%s\"", (long long)expires_at_ms, time_text);
    } else {
        text_buffer_text(out, ",\"expires_at_ms\":null,\"expires_at\":null");
    }
    text_buffer_text(out, ",\"models\":");
    if (all_models) {
        text_buffer_text(out, "null");
    } else {
        text_buffer_text(out, "[");
        bool first = true;
        const config_t *config = context->config;
        for (uint32_t index = 0; index < config->model_count && index < ACCOUNT_MODEL_WORDS * 64; index++) {
            if (!account_key_allows_model(key, index)) continue;
            if (!first) text_buffer_text(out, ",");
            first = false;
            text_buffer_json_string(out, config->models[index].name, strlen(config->models[index].name));
        }
        text_buffer_text(out, "]");
    }
    uint32_t tier = account_key_tier(key);
    text_buffer_text(out, ",\"tier\":");
    if (tier == ACCOUNT_TIER_DEFAULT) text_buffer_text(out, "null");
    else text_buffer_json_string(out, context->config->tiers[tier].name, strlen(context->config->tiers[tier].name));
    text_buffer_text(out, ",\"limits\":{");
    for (uint32_t kind = 0; kind < STORE_KEY_LIMITS; kind++) {
        uint32_t value = account_key_limit(key, kind);
        text_buffer_format(out, "%s\"%s\":", kind == 0 ? "" : ",", config_limit_name((config_limit_kind_t)kind));
        if (value == ACCOUNT_LIMIT_INHERIT) text_buffer_text(out, "null");
        else text_buffer_format(out, "%u", value);
    }
    uint64_t quota = account_key_token_quota(key);
    text_buffer_text(out, "},\"token_quota\":");
    if (quota == 0) text_buffer_text(out, "null");
    else text_buffer_format(out, "%llu", (unsigned long long)quota);
    text_buffer_format(out, ",\"tokens_used\":%llu", (unsigned long long)record.tokens_used);
    if (cap >= 0) {
        text_buffer_format(out, ",\"spend_cap_micros\":%lld,\"spend_cap\":\"", (long long)cap);
        text_buffer_money(out, cap);
        text_buffer_text(out, "\"");
    } else {
        text_buffer_text(out, ",\"spend_cap_micros\":null,\"spend_cap\":null");
    }
    text_buffer_format(out, ",\"spent_micros\":%lld,\"spent\":\"", (long long)record.spent_micros);
    text_buffer_money(out, record.spent_micros);
    text_buffer_text(out, "\"}");
    return true;
}

/* ---- Loading keys ---- */

int admin_key_fields_from_record(const config_t *config, const store_key_record_t *record, account_key_t *fields) {
    RW_ASSERT(config != NULL && record != NULL && fields != NULL);
    memset(fields, 0, sizeof *fields);
    if (record->user_id == 0 || record->user_id > UINT32_MAX || record->id == 0) return -1;
    if (record->spend_cap_micros < -1 || record->spent_micros < 0) return -1;
    memcpy(fields->hash, record->hash, sizeof fields->hash);
    fields->id = record->id;
    fields->user_index = (uint32_t)(record->user_id - 1);
    snprintf(fields->name, sizeof fields->name, "%s", record->name);
    snprintf(fields->prefix, sizeof fields->prefix, "%s", record->prefix);
    snprintf(fields->last4, sizeof fields->last4, "%s", record->last4);
    atomic_init(&fields->status, record->status == ACCOUNT_KEY_DISABLED ? ACCOUNT_KEY_DISABLED : ACCOUNT_KEY_ACTIVE);
    atomic_init(&fields->expires_at_ms, record->expires_at_ms);
    uint32_t tier = ACCOUNT_TIER_DEFAULT;
    if (record->tier[0] != '\0') {
        tier = config_find_tier(config, record->tier);
        if (tier == CONFIG_TIER_NONE) {
            fprintf(stderr, "ringway: key %llu has the tier '%s', which the config no longer has: it gets the "
                            "default tier\n", (unsigned long long)record->id, record->tier);
            tier = ACCOUNT_TIER_DEFAULT;
        }
    }
    atomic_init(&fields->tier, tier);
    for (uint32_t kind = 0; kind < STORE_KEY_LIMITS; kind++) atomic_init(&fields->limit_overrides[kind], record->limits[kind]);
    atomic_init(&fields->token_quota, record->token_quota);
    limit_pool_set(&fields->quota_pool, record->tokens_used);
    atomic_init(&fields->spend_cap_micros, record->spend_cap_micros);
    atomic_init(&fields->spend_available_micros,
                ledger_key_spend_available_initial(record->spend_cap_micros, record->spent_micros));
    atomic_init(&fields->all_models, record->all_models ? 1u : 0u);
    uint64_t bits[ACCOUNT_MODEL_WORDS] = {0};
    if (!record->all_models) {
        const char *name = record->models;
        while (*name != '\0') {
            const char *end = strchr(name, ',');
            size_t length = end != NULL ? (size_t)(end - name) : strlen(name);
            const config_model_t *model = config_find_model(config, (const uint8_t *)name, length);
            if (model != NULL) {
                size_t index = (size_t)(model - config->models);
                if (index < ACCOUNT_MODEL_WORDS * 64) bits[index / 64] |= (uint64_t)1 << (index % 64);
            }
            if (end == NULL) break;
            name = end + 1;
        }
    }
    for (uint32_t word = 0; word < ACCOUNT_MODEL_WORDS; word++) atomic_init(&fields->model_bits[word], bits[word]);
    return 0;
}
