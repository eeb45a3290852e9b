/* The store thread: the only RocksDB writer while it runs. It sleeps on its
 * own io_uring until a producer's doorbell (a MSG_RING CQE) or the sync
 * interval, drains every producer's channel, applies each message as one
 * WriteBatch (WAL on, sync=false, or sync=true when the message asks), keeps
 * the authoritative settled balances and key spending in plain arrays (it is
 * their single writer), acknowledges through each producer's reply channel
 * and doorbell, and syncs the WAL every sync interval when it wrote
 * anything (group commit). */
#include "store-internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    STORE_THREAD_RING_ENTRIES = 64,
    /* Messages taken from one producer per round, so one busy producer
     * cannot starve the others. */
    STORE_THREAD_BATCH_PER_PRODUCER = 64,
    /* The longest sleep: producers without a ring (start-up code, tools) and
     * a stop request are noticed within this, whatever the sync interval. */
    STORE_THREAD_POLL_MS = 10,
};

/* ---- Applying one message ---- */

/* What applying a message produced: the batch to write, the values the
 * arrays take once the write succeeds, and the ack. */
typedef struct store_apply {
    rocksdb_writebatch_t *batch;
    store_ack_t ack;
    char what[160];                /* "the settlement of req_..." for error logs */
    bool set_user_balance;
    uint64_t user_id;
    int64_t user_balance_micros;
    bool set_user_present;
    bool set_key_spent;
    uint64_t key_id;
    int64_t key_spent_micros;
    bool set_key_present;
    uint64_t next_usage_id;        /* 0: unchanged */
    int64_t usage_created_ms;
    uint64_t next_audit_id;        /* 0: unchanged */
    uint64_t next_user_id;         /* 0: unchanged */
    uint64_t next_key_id;          /* 0: unchanged */
} store_apply_t;

static bool store_user_known(const store_t *store, uint64_t user_id) {
    return user_id >= 1 && user_id <= store->config.users_max && store->user_present[user_id - 1];
}

static bool store_key_known(const store_t *store, uint64_t key_id) {
    return key_id >= 1 && key_id <= store->config.keys_max && store->key_present[key_id - 1];
}

static void store_batch_put_meta_u64(rocksdb_writebatch_t *batch, const char *name, uint64_t value) {
    uint8_t key[32];
    size_t key_length = store_key_meta(key, sizeof key, name);
    char text[24];
    size_t length = store_format_u64(text, value);
    rocksdb_writebatch_put(batch, (const char *)key, key_length, text, length);
}

/* Puts u/<id> with the stored record's other fields and `balance_micros`
 * (and `status` / `password_hash` when update is given). */
static int store_batch_put_user(store_t *store, rocksdb_writebatch_t *batch, uint64_t user_id,
                                int64_t balance_micros, const store_user_update_t *update) {
    store_user_record_t record;
    int status = store_user_get(store, user_id, &record);
    if (status != 0) return status == -ENOENT ? -EIO : status; /* known to the arrays, so it must exist */
    record.balance_micros = balance_micros;
    if (update != NULL && (update->fields & STORE_USER_FIELD_STATUS)) record.status = update->status;
    if (update != NULL && (update->fields & STORE_USER_FIELD_PASSWORD_HASH)) {
        RW_ASSERT(strnlen(update->password_hash, sizeof update->password_hash) < sizeof update->password_hash);
        memcpy(record.password_hash, update->password_hash, sizeof record.password_hash);
    }
    uint8_t value[STORE_RECORD_BYTES_MAX];
    int length = store_user_encode(&record, value, sizeof value);
    RW_ASSERT(length > 0);
    uint8_t key[STORE_KEY_ID_BYTES];
    store_key_id(key, 'u', user_id);
    rocksdb_writebatch_put(batch, (const char *)key, sizeof key, (const char *)value, (size_t)length);
    return 0;
}

/* Puts k/<id> with the stored record's other fields, `spent_micros`, and
 * the update's fields when given. */
static int store_batch_put_key(store_t *store, rocksdb_writebatch_t *batch, uint64_t key_id, int64_t spent_micros,
                               const store_key_update_t *update) {
    store_key_record_t record;
    int status = store_key_get(store, key_id, &record);
    if (status != 0) return status == -ENOENT ? -EIO : status;
    record.spent_micros = spent_micros;
    if (update != NULL) {
        if (update->fields & STORE_KEY_FIELD_STATUS) record.status = update->status;
        if (update->fields & STORE_KEY_FIELD_EXPIRES) record.expires_at_ms = update->expires_at_ms;
        if (update->fields & STORE_KEY_FIELD_SPEND_CAP) record.spend_cap_micros = update->spend_cap_micros;
        if (update->fields & STORE_KEY_FIELD_TIER) record.tier = update->tier;
        if (update->fields & STORE_KEY_FIELD_NAME) {
            RW_ASSERT(strnlen(update->name, sizeof update->name) < sizeof update->name);
            memcpy(record.name, update->name, sizeof record.name);
        }
        if (update->fields & STORE_KEY_FIELD_MODELS) {
            RW_ASSERT(strnlen(update->models, sizeof update->models) < sizeof update->models);
            record.all_models = update->all_models;
            memcpy(record.models, update->models, sizeof record.models);
        }
    }
    uint8_t value[STORE_RECORD_BYTES_MAX];
    int length = store_key_encode(&record, value, sizeof value);
    RW_ASSERT(length > 0);
    uint8_t key[STORE_KEY_ID_BYTES];
    store_key_id(key, 'k', key_id);
    rocksdb_writebatch_put(batch, (const char *)key, sizeof key, (const char *)value, (size_t)length);
    return 0;
}

static bool store_text_terminated(const char *text, size_t array_bytes) {
    return strnlen(text, array_bytes) < array_bytes;
}

static int store_apply_hold_open(store_t *store, const store_hold_record_t *hold, store_apply_t *apply) {
    snprintf(apply->what, sizeof apply->what, "the hold of %.64s", hold->request_id);
    if (!store_text_terminated(hold->request_id, sizeof hold->request_id) || hold->request_id[0] == '\0' ||
        !store_text_terminated(hold->model, sizeof hold->model) || hold->amount_micros < 0) {
        return -EINVAL;
    }
    if (!store_user_known(store, hold->user_id)) return -ENOENT;
    if (hold->key_id != 0 && !store_key_known(store, hold->key_id)) return -ENOENT;
    uint8_t key[STORE_KEY_TEXT_BYTES];
    size_t key_length = store_key_text(key, 'h', hold->request_id, false);
    uint8_t value[STORE_RECORD_BYTES_MAX];
    int length = store_hold_encode(hold, value, sizeof value);
    RW_ASSERT(length > 0);
    rocksdb_writebatch_put(apply->batch, (const char *)key, key_length, (const char *)value, (size_t)length);
    apply->ack.id = hold->user_id;
    return 0;
}

static int store_apply_hold_release(store_t *store, const store_hold_release_t *release, store_apply_t *apply) {
    snprintf(apply->what, sizeof apply->what, "the release of the hold of %.64s", release->request_id);
    if (!store_text_terminated(release->request_id, sizeof release->request_id) || release->request_id[0] == '\0') {
        return -EINVAL;
    }
    uint8_t key[STORE_KEY_TEXT_BYTES];
    size_t key_length = store_key_text(key, 'h', release->request_id, false);
    rocksdb_writebatch_delete(apply->batch, (const char *)key, key_length);
    return 0;
}

/* Settlement: the usage record, its two index entries, the user's new
 * settled balance, the key's new spent, the hold's deletion and the usage
 * counter, all in one batch. A settlement is a fact (the request happened),
 * so it is applied even if the balance ends below zero, which the ledger's
 * reservation makes impossible; that is logged. */
static int store_apply_settle(store_t *store, const store_settle_t *settle, store_apply_t *apply) {
    const store_usage_record_t *usage = &settle->usage;
    snprintf(apply->what, sizeof apply->what, "the settlement of %.64s", usage->request_id);
    if (!store_text_terminated(usage->request_id, sizeof usage->request_id) || usage->request_id[0] == '\0' ||
        !store_text_terminated(usage->model, sizeof usage->model) ||
        !store_text_terminated(usage->upstream, sizeof usage->upstream) ||
        !store_text_terminated(usage->status, sizeof usage->status)) {
        return -EINVAL;
    }
    if (usage->cost_micros < 0 || settle->hold_micros < 0 || usage->cost_micros > settle->hold_micros) {
        store_log("while applying %s: cost %lld micros outside the hold of %lld", apply->what,
                  (long long)usage->cost_micros, (long long)settle->hold_micros);
        return -EINVAL;
    }
    if (!store_user_known(store, usage->user_id)) return -ENOENT;
    if (usage->key_id != 0 && !store_key_known(store, usage->key_id)) return -ENOENT;

    int64_t balance = store->user_balance_micros[usage->user_id - 1];
    int64_t new_balance = 0;
    if (__builtin_sub_overflow(balance, usage->cost_micros, &new_balance)) return -ERANGE;
    int64_t new_spent = 0;
    if (usage->key_id != 0 &&
        __builtin_add_overflow(store->key_spent_micros[usage->key_id - 1], usage->cost_micros, &new_spent)) {
        return -ERANGE;
    }
    if (new_balance < 0) {
        store_log("while applying %s: user %llu's settled balance goes to %lld micros", apply->what,
                  (unsigned long long)usage->user_id, (long long)new_balance);
    }

    store_usage_record_t record = *usage;
    record.id = store->next_usage_id;
    /* Never decreasing, so usage id order is time order. */
    record.created_ms = RW_MAX(store->usage_created_ms_last, store_wall_ms());
    char json[STORE_JSON_BYTES_MAX];
    int json_length = store_usage_encode(&record, json, sizeof json);
    RW_ASSERT(json_length > 0);

    uint8_t usage_key[STORE_KEY_USAGE_BYTES];
    store_key_usage(usage_key, record.user_id, record.id);
    uint8_t request_key[STORE_KEY_TEXT_BYTES];
    size_t request_key_length = store_key_text(request_key, 'q', record.request_id, false);
    uint8_t sequence_key[STORE_KEY_ID_BYTES];
    store_key_id(sequence_key, 's', record.id);
    uint8_t hold_key[STORE_KEY_TEXT_BYTES];
    size_t hold_key_length = store_key_text(hold_key, 'h', record.request_id, false);

    rocksdb_writebatch_t *batch = apply->batch;
    rocksdb_writebatch_put(batch, (const char *)usage_key, sizeof usage_key, json, (size_t)json_length);
    rocksdb_writebatch_put(batch, (const char *)request_key, request_key_length, (const char *)usage_key,
                           sizeof usage_key);
    rocksdb_writebatch_put(batch, (const char *)sequence_key, sizeof sequence_key, (const char *)usage_key,
                           sizeof usage_key);
    int status = store_batch_put_user(store, batch, record.user_id, new_balance, NULL);
    if (status != 0) return status;
    if (record.key_id != 0) {
        status = store_batch_put_key(store, batch, record.key_id, new_spent, NULL);
        if (status != 0) return status;
    }
    rocksdb_writebatch_delete(batch, (const char *)hold_key, hold_key_length);
    store_batch_put_meta_u64(batch, "next_usage", record.id + 1);

    apply->set_user_balance = true;
    apply->user_id = record.user_id;
    apply->user_balance_micros = new_balance;
    if (record.key_id != 0) {
        apply->set_key_spent = true;
        apply->key_id = record.key_id;
        apply->key_spent_micros = new_spent;
    }
    apply->next_usage_id = record.id + 1;
    apply->usage_created_ms = record.created_ms;
    apply->ack.id = record.id;
    apply->ack.balance_micros = new_balance;
    apply->ack.spent_micros = new_spent;
    return 0;
}

static int store_apply_user_create(store_t *store, const store_user_record_t *user, store_apply_t *apply) {
    snprintf(apply->what, sizeof apply->what, "the creation of user %llu", (unsigned long long)user->id);
    if (user->id == 0 || user->id > store->config.users_max || user->balance_micros < 0 ||
        !store_text_terminated(user->email, sizeof user->email) || user->email[0] == '\0' ||
        !store_text_terminated(user->password_hash, sizeof user->password_hash)) {
        return -EINVAL;
    }
    if (store->user_present[user->id - 1]) return -EEXIST;
    uint8_t email_key[STORE_KEY_TEXT_BYTES];
    size_t email_key_length = store_key_text(email_key, 'e', user->email, true);
    uint8_t existing[8];
    size_t existing_length = 0;
    int status = store_get(store, email_key, email_key_length, existing, sizeof existing, &existing_length,
                           "the email index");
    if (status == 0) return -EEXIST;
    if (status != -ENOENT) return status;

    uint8_t value[STORE_RECORD_BYTES_MAX];
    int length = store_user_encode(user, value, sizeof value);
    RW_ASSERT(length > 0);
    uint8_t user_key[STORE_KEY_ID_BYTES];
    store_key_id(user_key, 'u', user->id);
    uint8_t id_value[8];
    store_write_be64(id_value, user->id);
    rocksdb_writebatch_put(apply->batch, (const char *)user_key, sizeof user_key, (const char *)value,
                           (size_t)length);
    rocksdb_writebatch_put(apply->batch, (const char *)email_key, email_key_length, (const char *)id_value,
                           sizeof id_value);
    uint64_t next_user_id = RW_MAX(store->next_user_id, user->id + 1);
    store_batch_put_meta_u64(apply->batch, "next_user", next_user_id);

    apply->set_user_present = true;
    apply->set_user_balance = true;
    apply->user_id = user->id;
    apply->user_balance_micros = user->balance_micros;
    apply->next_user_id = next_user_id;
    apply->ack.id = user->id;
    apply->ack.balance_micros = user->balance_micros;
    return 0;
}

static int store_apply_user_update(store_t *store, const store_user_update_t *update, store_apply_t *apply) {
    snprintf(apply->what, sizeof apply->what, "the update of user %llu", (unsigned long long)update->user_id);
    if (!store_text_terminated(update->password_hash, sizeof update->password_hash)) return -EINVAL;
    if (!store_user_known(store, update->user_id)) return -ENOENT;
    int64_t balance = store->user_balance_micros[update->user_id - 1];
    int status = store_batch_put_user(store, apply->batch, update->user_id, balance, update);
    if (status != 0) return status;
    apply->ack.id = update->user_id;
    apply->ack.balance_micros = balance;
    return 0;
}

static int store_apply_balance_adjust(store_t *store, const store_balance_adjust_t *adjust, store_apply_t *apply) {
    snprintf(apply->what, sizeof apply->what, "a balance change of %lld micros for user %llu",
             (long long)adjust->delta_micros, (unsigned long long)adjust->user_id);
    if (!store_user_known(store, adjust->user_id)) return -ENOENT;
    int64_t balance = store->user_balance_micros[adjust->user_id - 1];
    int64_t new_balance = 0;
    if (__builtin_add_overflow(balance, adjust->delta_micros, &new_balance) || new_balance < 0) {
        apply->ack.balance_micros = balance;
        return -ERANGE;
    }
    int status = store_batch_put_user(store, apply->batch, adjust->user_id, new_balance, NULL);
    if (status != 0) return status;
    apply->set_user_balance = true;
    apply->user_id = adjust->user_id;
    apply->user_balance_micros = new_balance;
    apply->ack.id = adjust->user_id;
    apply->ack.balance_micros = new_balance;
    return 0;
}

static int store_apply_key_create(store_t *store, const store_key_record_t *key, store_apply_t *apply) {
    snprintf(apply->what, sizeof apply->what, "the creation of key %llu", (unsigned long long)key->id);
    if (key->id == 0 || key->id > store->config.keys_max || !store_text_terminated(key->name, sizeof key->name) ||
        !store_text_terminated(key->prefix, sizeof key->prefix) ||
        !store_text_terminated(key->last4, sizeof key->last4) ||
        !store_text_terminated(key->models, sizeof key->models)) {
        return -EINVAL;
    }
    if (store->key_present[key->id - 1]) return -EEXIST;
    if (!store_user_known(store, key->user_id)) return -ENOENT;
    store_key_record_t record = *key;
    record.spent_micros = 0;
    uint8_t value[STORE_RECORD_BYTES_MAX];
    int length = store_key_encode(&record, value, sizeof value);
    RW_ASSERT(length > 0);
    uint8_t record_key[STORE_KEY_ID_BYTES];
    store_key_id(record_key, 'k', key->id);
    rocksdb_writebatch_put(apply->batch, (const char *)record_key, sizeof record_key, (const char *)value,
                           (size_t)length);
    uint64_t next_key_id = RW_MAX(store->next_key_id, key->id + 1);
    store_batch_put_meta_u64(apply->batch, "next_key", next_key_id);
    apply->set_key_present = true;
    apply->set_key_spent = true;
    apply->key_id = key->id;
    apply->key_spent_micros = 0;
    apply->next_key_id = next_key_id;
    apply->ack.id = key->id;
    return 0;
}

static int store_apply_key_update(store_t *store, const store_key_update_t *update, store_apply_t *apply) {
    snprintf(apply->what, sizeof apply->what, "the update of key %llu", (unsigned long long)update->key_id);
    if (!store_text_terminated(update->name, sizeof update->name) ||
        !store_text_terminated(update->models, sizeof update->models)) {
        return -EINVAL;
    }
    if (!store_key_known(store, update->key_id)) return -ENOENT;
    int64_t spent = store->key_spent_micros[update->key_id - 1];
    int status = store_batch_put_key(store, apply->batch, update->key_id, spent, update);
    if (status != 0) return status;
    apply->ack.id = update->key_id;
    apply->ack.spent_micros = spent;
    return 0;
}

static int store_apply_audit(store_t *store, const store_audit_record_t *audit, store_apply_t *apply) {
    snprintf(apply->what, sizeof apply->what, "the audit entry %.48s", audit->action);
    if (!store_text_terminated(audit->admin, sizeof audit->admin) ||
        !store_text_terminated(audit->action, sizeof audit->action) ||
        !store_text_terminated(audit->target, sizeof audit->target) ||
        !store_text_terminated(audit->details, sizeof audit->details)) {
        return -EINVAL;
    }
    store_audit_record_t record = *audit;
    record.id = store->next_audit_id;
    record.time_ms = store_wall_ms();
    char json[STORE_JSON_BYTES_MAX];
    int json_length = store_audit_encode(&record, json, sizeof json);
    RW_ASSERT(json_length > 0);
    uint8_t key[STORE_KEY_ID_BYTES];
    store_key_id(key, 'a', record.id);
    rocksdb_writebatch_put(apply->batch, (const char *)key, sizeof key, json, (size_t)json_length);
    store_batch_put_meta_u64(apply->batch, "next_audit", record.id + 1);
    apply->next_audit_id = record.id + 1;
    apply->ack.id = record.id;
    return 0;
}

/* Builds the batch for `message` into apply. Returns 0 or a negative errno
 * (then nothing is written). */
static int store_apply_build(store_t *store, const store_message_t *message, store_apply_t *apply) {
    switch (message->kind) {
    case STORE_MESSAGE_HOLD_OPEN: return store_apply_hold_open(store, &message->body.hold_open, apply);
    case STORE_MESSAGE_HOLD_RELEASE: return store_apply_hold_release(store, &message->body.hold_release, apply);
    case STORE_MESSAGE_SETTLE: return store_apply_settle(store, &message->body.settle, apply);
    case STORE_MESSAGE_USER_CREATE: return store_apply_user_create(store, &message->body.user_create, apply);
    case STORE_MESSAGE_USER_UPDATE: return store_apply_user_update(store, &message->body.user_update, apply);
    case STORE_MESSAGE_BALANCE_ADJUST:
        return store_apply_balance_adjust(store, &message->body.balance_adjust, apply);
    case STORE_MESSAGE_KEY_CREATE: return store_apply_key_create(store, &message->body.key_create, apply);
    case STORE_MESSAGE_KEY_UPDATE: return store_apply_key_update(store, &message->body.key_update, apply);
    case STORE_MESSAGE_AUDIT: return store_apply_audit(store, &message->body.audit, apply);
    default: break;
    }
    RW_ASSERT(!"unknown store message kind");
    return -EINVAL;
}

/* Commits the array side of a written batch. */
static void store_apply_commit(store_t *store, const store_apply_t *apply) {
    if (apply->set_user_present) store->user_present[apply->user_id - 1] = 1;
    if (apply->set_user_balance) store->user_balance_micros[apply->user_id - 1] = apply->user_balance_micros;
    if (apply->set_key_present) store->key_present[apply->key_id - 1] = 1;
    if (apply->set_key_spent) store->key_spent_micros[apply->key_id - 1] = apply->key_spent_micros;
    if (apply->next_usage_id != 0) {
        store->next_usage_id = apply->next_usage_id;
        store->usage_created_ms_last = apply->usage_created_ms;
    }
    if (apply->next_audit_id != 0) store->next_audit_id = apply->next_audit_id;
    if (apply->next_user_id != 0) store->next_user_id = apply->next_user_id;
    if (apply->next_key_id != 0) store->next_key_id = apply->next_key_id;
}

typedef struct store_thread_clock {
    uint64_t last_sync_ms;
    uint64_t writes_since_sync;
} store_thread_clock_t;

static uint64_t store_thread_now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

/* Applies one message: builds its batch, writes it (synced when flagged),
 * updates the arrays on success, and fills *ack either way. */
static void store_thread_apply(store_thread_t *thread, const store_message_t *message, store_ack_t *ack,
                               store_thread_clock_t *clock) {
    store_t *store = thread->store;
    store_apply_t apply;
    memset(&apply, 0, sizeof apply);
    apply.ack.token = message->token;
    apply.ack.kind = message->kind;
    rocksdb_writebatch_clear(thread->batch);
    apply.batch = thread->batch;
    int status = store_apply_build(store, message, &apply);
    if (status == 0) {
        bool sync = (message->flags & STORE_MESSAGE_FLAG_SYNC) != 0;
        char failure[STORE_ERROR_BYTES];
        status = store_write(store, apply.batch, sync, failure, sizeof failure);
        if (status == 0) {
            store_apply_commit(store, &apply);
            if (sync) {
                clock->writes_since_sync = 0;
                clock->last_sync_ms = store_thread_now_ms();
                thread->syncs++;
            } else {
                clock->writes_since_sync++;
            }
        } else {
            thread->write_errors++;
            store_log("while writing %s: %s", apply.what, failure);
        }
    } else if (status == -EINVAL) {
        store_log("while applying %s: the message is malformed", apply.what);
    }
    /* -ENOENT, -EEXIST, -ERANGE are answers to the producer; a read's -EIO
     * was logged where it happened. */
    apply.ack.status = status;
    *ack = apply.ack;
    thread->messages++;
}

/* ---- The loop ---- */

/* One round over every producer. Returns the number of messages applied. */
static uint32_t store_thread_round(store_thread_t *thread, store_thread_clock_t *clock) {
    uint32_t applied = 0;
    for (uint32_t index = 0; index < thread->producer_count; index++) {
        store_producer_t *producer = &thread->producers[index];
        for (uint32_t count = 0; count < STORE_THREAD_BATCH_PER_PRODUCER; count++) {
            /* Only take a message when its ack is sure to fit: the producer
             * is behind on its replies otherwise, and waits. */
            if (channel_full(&producer->replies)) break;
            store_message_t message;
            if (!channel_pop(&producer->requests, &message)) break;
            store_ack_t ack;
            store_thread_apply(thread, &message, &ack, clock);
            applied++;
            if (!(message.flags & (STORE_MESSAGE_FLAG_ACK | STORE_MESSAGE_FLAG_SYNC))) continue;
            bool was_empty = false;
            bool pushed = channel_push(&producer->replies, &ack, &was_empty);
            RW_ASSERT(pushed);
            if (was_empty && producer->ring_fd >= 0) producer->doorbell_pending = true;
        }
    }
    return applied;
}

static void store_thread_ring_doorbells(store_thread_t *thread) {
    bool any = false;
    for (uint32_t index = 0; index < thread->producer_count; index++) {
        store_producer_t *producer = &thread->producers[index];
        if (!producer->doorbell_pending) continue;
        producer->doorbell_pending = false;
        channel_ring_doorbell(&thread->ring, producer->ring_fd, producer->mailbox);
        any = true;
    }
    if (any) {
        int submitted = io_uring_submit(&thread->ring);
        if (submitted < 0) store_log("while ringing producers' doorbells: %s", strerror(-submitted));
    }
}

static void store_thread_group_commit(store_thread_t *thread, store_thread_clock_t *clock, bool force) {
    if (clock->writes_since_sync == 0) return;
    uint64_t now_ms = store_thread_now_ms();
    if (!force && now_ms - clock->last_sync_ms < thread->sync_interval_ms) return;
    char failure[STORE_ERROR_BYTES];
    if (store_sync_wal(thread->store, failure, sizeof failure) != 0) {
        thread->write_errors++;
        store_log("while syncing the WAL: %s", failure);
        /* Retried at the next interval; the writes stay counted. */
        clock->last_sync_ms = now_ms;
        return;
    }
    thread->syncs++;
    clock->writes_since_sync = 0;
    clock->last_sync_ms = now_ms;
}

/* Sleeps until a doorbell, the next sync deadline or STORE_THREAD_POLL_MS,
 * then consumes every CQE (doorbells carry no data: the channels say what to
 * do). */
static void store_thread_wait(store_thread_t *thread, const store_thread_clock_t *clock) {
    uint64_t wait_ms = STORE_THREAD_POLL_MS;
    if (clock->writes_since_sync > 0) {
        uint64_t elapsed_ms = store_thread_now_ms() - clock->last_sync_ms;
        uint64_t until_sync_ms = elapsed_ms >= thread->sync_interval_ms ? 0 : thread->sync_interval_ms - elapsed_ms;
        wait_ms = RW_MIN(wait_ms, until_sync_ms);
    }
    if (wait_ms > 0) {
        struct __kernel_timespec timeout = {(long long)(wait_ms / 1000), (long long)(wait_ms % 1000) * 1000000};
        struct io_uring_cqe *cqe = NULL;
        int status = io_uring_submit_and_wait_timeout(&thread->ring, &cqe, 1, &timeout, NULL);
        if (status < 0 && status != -ETIME && status != -EINTR && status != -EAGAIN && status != -EBUSY) {
            store_log("while waiting for doorbells: %s", strerror(-status));
        }
    }
    unsigned head = 0;
    unsigned count = 0;
    struct io_uring_cqe *cqe = NULL;
    io_uring_for_each_cqe(&thread->ring, head, cqe) {
        /* user_data 0 with res < 0: a doorbell we rang failed (the
         * producer's ring is gone); it polls its replies anyway. */
        count++;
    }
    io_uring_cq_advance(&thread->ring, count);
}

static void *store_thread_main(void *argument) {
    store_thread_t *thread = argument;
    store_thread_clock_t clock = {store_thread_now_ms(), 0};
    for (;;) {
        bool stopping = atomic_load_explicit(&thread->stop_requested, memory_order_acquire);
        /* Drain: rounds until a round finds nothing (a producer whose
         * replies are full yields nothing until it reads them). */
        for (;;) {
            uint32_t applied = store_thread_round(thread, &clock);
            store_thread_ring_doorbells(thread);
            store_thread_group_commit(thread, &clock, false);
            if (applied == 0) break;
        }
        if (stopping) {
            /* The flag was read before this drain, so everything pushed
             * before the stop request has been applied. */
            store_thread_group_commit(thread, &clock, true);
            break;
        }
        store_thread_wait(thread, &clock);
    }
    return NULL;
}

/* ---- Life cycle and the producers' side ---- */

int store_thread_create(store_thread_t *thread, store_t *store, uint32_t producer_count,
                        uint32_t channel_capacity, uint32_t sync_interval_ms, char *error,
                        size_t error_size) {
    RW_ASSERT(thread != NULL && store != NULL && store->db != NULL);
    RW_ASSERT(producer_count >= 1);
    RW_ASSERT(channel_capacity >= 2 && (channel_capacity & (channel_capacity - 1)) == 0);
    RW_ASSERT(sync_interval_ms >= 1);
    memset(thread, 0, sizeof *thread);
    atomic_init(&thread->stop_requested, false);
    thread->store = store;
    thread->producer_count = producer_count;
    thread->sync_interval_ms = sync_interval_ms;
    size_t bytes = (size_t)producer_count * sizeof(store_producer_t);
    bytes = (bytes + CHANNEL_CACHE_LINE_BYTES - 1) / CHANNEL_CACHE_LINE_BYTES * CHANNEL_CACHE_LINE_BYTES;
    thread->producers = aligned_alloc(CHANNEL_CACHE_LINE_BYTES, bytes);
    if (thread->producers == NULL) {
        snprintf(error, error_size, "out of memory for %u store producers", producer_count);
        return -ENOMEM;
    }
    memset(thread->producers, 0, bytes);
    for (uint32_t index = 0; index < producer_count; index++) {
        store_producer_t *producer = &thread->producers[index];
        producer->ring_fd = -1;
        if (channel_init(&producer->requests, channel_capacity, sizeof(store_message_t)) != 0 ||
            channel_init(&producer->replies, channel_capacity, sizeof(store_ack_t)) != 0) {
            snprintf(error, error_size, "out of memory for the store channels (%u x %u messages)", producer_count,
                     channel_capacity);
            store_thread_destroy(thread);
            return -ENOMEM;
        }
    }
    thread->batch = rocksdb_writebatch_create();
    int status = io_uring_queue_init(STORE_THREAD_RING_ENTRIES, &thread->ring, 0);
    if (status < 0) {
        snprintf(error, error_size, "io_uring_queue_init for the store thread: %s", strerror(-status));
        store_thread_destroy(thread);
        return status;
    }
    thread->ring_ready = true;
    return 0;
}

void store_thread_bind_producer(store_thread_t *thread, uint32_t producer, int ring_fd,
                                loop_operation_t *mailbox) {
    RW_ASSERT(thread != NULL && !thread->started);
    RW_ASSERT(producer < thread->producer_count);
    RW_ASSERT(ring_fd >= 0);
    thread->producers[producer].ring_fd = ring_fd;
    thread->producers[producer].mailbox = mailbox;
}

int store_thread_start(store_thread_t *thread) {
    RW_ASSERT(thread != NULL && thread->ring_ready && !thread->started);
    int status = pthread_create(&thread->thread, NULL, store_thread_main, thread);
    if (status != 0) return -status;
    thread->started = true;
    return 0;
}

void store_thread_stop(store_thread_t *thread) {
    RW_ASSERT(thread != NULL);
    if (!thread->started) return;
    atomic_store_explicit(&thread->stop_requested, true, memory_order_release);
    pthread_join(thread->thread, NULL);
    thread->started = false;
}

void store_thread_destroy(store_thread_t *thread) {
    RW_ASSERT(thread != NULL && !thread->started);
    if (thread->ring_ready) io_uring_queue_exit(&thread->ring);
    thread->ring_ready = false;
    if (thread->batch != NULL) rocksdb_writebatch_destroy(thread->batch);
    thread->batch = NULL;
    if (thread->producers != NULL) {
        for (uint32_t index = 0; index < thread->producer_count; index++) {
            channel_destroy(&thread->producers[index].requests);
            channel_destroy(&thread->producers[index].replies);
        }
        free(thread->producers);
        thread->producers = NULL;
    }
}

bool store_thread_submit(store_thread_t *thread, uint32_t producer, const store_message_t *message,
                         struct io_uring *producer_ring) {
    RW_ASSERT(thread != NULL && message != NULL && producer < thread->producer_count);
    RW_ASSERT(message->kind >= STORE_MESSAGE_HOLD_OPEN && message->kind <= STORE_MESSAGE_AUDIT);
    bool was_empty = false;
    if (!channel_push(&thread->producers[producer].requests, message, &was_empty)) return false;
    if (was_empty && producer_ring != NULL) channel_ring_doorbell(producer_ring, thread->ring.ring_fd, &thread->doorbell);
    return true;
}

bool store_thread_reply_pop(store_thread_t *thread, uint32_t producer, store_ack_t *ack) {
    RW_ASSERT(thread != NULL && ack != NULL && producer < thread->producer_count);
    return channel_pop(&thread->producers[producer].replies, ack);
}

int store_thread_call(store_thread_t *thread, uint32_t producer, const store_message_t *message,
                      struct io_uring *producer_ring, uint32_t timeout_ms, store_ack_t *ack) {
    store_message_t copy = *message;
    copy.flags |= STORE_MESSAGE_FLAG_ACK;
    if (!store_thread_submit(thread, producer, &copy, producer_ring)) return -EAGAIN;
    if (producer_ring != NULL) io_uring_submit(producer_ring);
    uint64_t deadline_ms = store_thread_now_ms() + timeout_ms;
    for (;;) {
        while (store_thread_reply_pop(thread, producer, ack)) {
            if (ack->token == copy.token && ack->kind == copy.kind) return 0;
        }
        if (store_thread_now_ms() > deadline_ms) return -ETIMEDOUT;
        struct timespec pause = {0, 100000};
        nanosleep(&pause, NULL);
    }
}
