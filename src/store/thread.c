/* The store thread: the only RocksDB writer while it runs. It sleeps on its
 * own io_uring until a producer's doorbell (a MSG_RING CQE) or the sync
 * interval, then works in rounds. A round takes up to
 * STORE_THREAD_MESSAGES_PER_PRODUCER messages from each producer in turn,
 * applies them one after the other to the in-memory state (the settled
 * balances and key spending in plain arrays, of which it is the single
 * writer, the next ids, and the round's copies of the user and key records
 * it touched), so a message sees the effects of the earlier ones, and
 * accumulates their writes in ONE WriteBatch; it puts each touched user or
 * key record once, writes the batch (WAL on; sync=true when a message asked
 * for it), and only then pushes the acks. A message refused by validation
 * (-ENOENT, -EEXIST, -ERANGE, -EINVAL) changes nothing and is answered on
 * its own; when the batch write fails, every in-memory change of the round
 * is undone and every message of the round is answered -EIO.
 *
 * The WAL is synced by a second thread of the store, the syncer, every sync
 * interval when a batch was written since its last sync: an fdatasync
 * takes milliseconds on a real disk (1 to 3 ms, 15 ms at worst, measured on
 * the bench machine), and made inline it stopped every round, and so every
 * settling request on every relay thread, for that long. RocksDB's SyncWAL
 * does not block writes made meanwhile on other threads. What an ack
 * promises is unchanged: the batch is in the WAL (a kill -9 loses
 * nothing), and on the disk within about one sync interval. */
#include "store-internal.h"

#include "ringway/text.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum {
    STORE_THREAD_RING_ENTRIES = 64,
    /* Messages taken from one producer per round, so one busy producer
     * cannot starve the others. */
    STORE_THREAD_MESSAGES_PER_PRODUCER = 64,
    STORE_MESSAGE_DESCRIPTION_BYTES = 160,
    /* In-memory changes one message can make (a settlement: balance,
     * spent; a creation: present flag and amount). */
    STORE_THREAD_UNDO_PER_MESSAGE = 4,
    /* The longest sleep: producers without a ring (start-up code, tools) and
     * a stop request are noticed within this, whatever the sync interval. */
    STORE_THREAD_POLL_MS = 10,
    STORE_THREAD_TEST_DELAY_MS_MAX = 60000,
    /* Slots of each record cache (direct-mapped by id modulo this): a
     * settlement's user and key are found there unless another account
     * whose id shares the slot settled in between (a lookup in the memtable
     * cost about 1.4% of the relay's CPU at 64 busy connections of one
     * key). */
    STORE_THREAD_RECORD_CACHE_SLOTS = 256,
};

/* ---- The round's in-memory state ---- */

/* What applying one message produced for its ack. */
typedef struct store_apply {
    store_ack_t ack;
} store_apply_t;

/* Names a message for an error log ("the settlement of req_..."): formatted
 * only when a line is logged, never on the way of a message applied. */
static void store_message_describe(const store_message_t *message, char *out, size_t size) {
    switch (message->kind) {
    case STORE_MESSAGE_HOLD_OPEN: snprintf(out, size, "the hold of %.64s", message->body.hold_open.request_id); return;
    case STORE_MESSAGE_HOLD_RELEASE:
        snprintf(out, size, "the release of the hold of %.64s", message->body.hold_release.request_id);
        return;
    case STORE_MESSAGE_SETTLE: snprintf(out, size, "the settlement of %.64s", message->body.settle.usage.request_id); return;
    case STORE_MESSAGE_USER_CREATE:
        snprintf(out, size, "the creation of user %llu", (unsigned long long)message->body.user_create.id);
        return;
    case STORE_MESSAGE_USER_UPDATE:
        snprintf(out, size, "the update of user %llu", (unsigned long long)message->body.user_update.user_id);
        return;
    case STORE_MESSAGE_BALANCE_ADJUST:
        snprintf(out, size, "a balance change of %lld micros for user %llu",
                 (long long)message->body.balance_adjust.delta_micros, (unsigned long long)message->body.balance_adjust.user_id);
        return;
    case STORE_MESSAGE_KEY_CREATE:
        snprintf(out, size, "the creation of key %llu", (unsigned long long)message->body.key_create.id);
        return;
    case STORE_MESSAGE_KEY_UPDATE:
        snprintf(out, size, "the update of key %llu", (unsigned long long)message->body.key_update.key_id);
        return;
    case STORE_MESSAGE_AUDIT: snprintf(out, size, "the audit entry %.48s", message->body.audit.action); return;
    default: snprintf(out, size, "a message of kind %d", (int)message->kind); return;
    }
}

/* The scalars a round may change, as they were when it began. */
typedef struct store_round_start {
    uint64_t next_user_id;
    uint64_t next_key_id;
    uint64_t next_usage_id;
    uint64_t next_audit_id;
    int64_t usage_created_ms_last;
} store_round_start_t;

static bool store_user_known(const store_state_t *state, uint64_t user_id) {
    return user_id >= 1 && user_id <= state->config.users_max && state->user_present[user_id - 1];
}

static bool store_key_known(const store_state_t *state, uint64_t key_id) {
    return key_id >= 1 && key_id <= state->config.keys_max && state->key_present[key_id - 1];
}

static bool store_text_terminated(const char *text, size_t array_bytes) {
    return strnlen(text, array_bytes) < array_bytes;
}

/* Sets an amount slot, remembering the old value for a rollback. */
static void store_round_set_micros(store_thread_state_t *thread, int64_t *slot, int64_t value) {
    RW_ASSERT(thread->round_undo_count < thread->round_messages_max * STORE_THREAD_UNDO_PER_MESSAGE);
    store_round_undo_t *undo = &thread->round_undo[thread->round_undo_count++];
    undo->value_micros = slot;
    undo->present = NULL;
    undo->old_micros = *slot;
    *slot = value;
}

static void store_round_set_present(store_thread_state_t *thread, uint8_t *slot) {
    RW_ASSERT(thread->round_undo_count < thread->round_messages_max * STORE_THREAD_UNDO_PER_MESSAGE);
    store_round_undo_t *undo = &thread->round_undo[thread->round_undo_count++];
    undo->value_micros = NULL;
    undo->present = slot;
    undo->old_present = *slot;
    *slot = 1;
}

/* Reads a record into a round entry's record; the void pointer lets one
 * find-or-load serve both lists. */
typedef int (*store_round_load_t)(store_thread_state_t *thread, uint64_t id, void *record);

/* Both entry types start with their record, and a record with its id, so an
 * entry's id is read at offset 0 whatever the list. */
_Static_assert(offsetof(store_round_user_t, record.id) == 0, "a round user starts with its id");
_Static_assert(offsetof(store_round_key_t, record.id) == 0, "a round key starts with its id");

/* The round's entry for record `id` (known to the arrays) in a list of
 * *count entries of entry_bytes each: found, or read from RocksDB into the
 * next entry (its flags cleared) and counted. Returns 0 with *entry set, or
 * -EIO when the record is missing or does not decode (the arrays know it, so
 * it must exist), or another store error. */
static int store_round_find_or_load(store_thread_state_t *thread, void *entries, size_t entry_bytes, uint32_t *count,
                                    uint64_t id, store_round_load_t load, void **entry) {
    for (uint32_t index = 0; index < *count; index++) {
        uint8_t *candidate = (uint8_t *)entries + (size_t)index * entry_bytes;
        uint64_t candidate_id = 0;
        memcpy(&candidate_id, candidate, sizeof candidate_id);
        if (candidate_id == id) {
            *entry = candidate;
            return 0;
        }
    }
    RW_ASSERT(*count < thread->round_messages_max);
    uint8_t *added = (uint8_t *)entries + (size_t)*count * entry_bytes;
    memset(added, 0, entry_bytes);
    int status = load(thread, id, added);
    if (status != 0) return status == -ENOENT ? -EIO : status;
    (*count)++;
    *entry = added;
    return 0;
}

/* Both loads: the cached copy when it holds this id, else RocksDB's (which
 * then fills the slot). */
static int store_round_load_user(store_thread_state_t *thread, uint64_t id, void *record) {
    store_user_record_t *cached = &thread->cached_users[id % STORE_THREAD_RECORD_CACHE_SLOTS];
    if (cached->id == id) {
        memcpy(record, cached, sizeof *cached);
        return 0;
    }
    int status = store_user_get(thread->store, id, record);
    if (status == 0) memcpy(cached, record, sizeof *cached);
    return status;
}

static int store_round_load_key(store_thread_state_t *thread, uint64_t id, void *record) {
    store_key_record_t *cached = &thread->cached_keys[id % STORE_THREAD_RECORD_CACHE_SLOTS];
    if (cached->id == id) {
        memcpy(record, cached, sizeof *cached);
        return 0;
    }
    int status = store_key_get(thread->store, id, record);
    if (status == 0) memcpy(cached, record, sizeof *cached);
    return status;
}

/* After the round's batch is written: the records it put are what RocksDB
 * holds now. (A failed write changes no slot: each still holds what was
 * read or written before.) */
static void store_round_cache_records(store_thread_state_t *thread) {
    for (uint32_t index = 0; index < thread->round_user_count; index++) {
        const store_round_user_t *user = &thread->round_users[index];
        if (!user->dirty) continue;
        RW_ASSERT(user->record.id != 0);
        thread->cached_users[user->record.id % STORE_THREAD_RECORD_CACHE_SLOTS] = user->record;
    }
    for (uint32_t index = 0; index < thread->round_key_count; index++) {
        const store_round_key_t *key = &thread->round_keys[index];
        if (!key->dirty) continue;
        RW_ASSERT(key->record.id != 0);
        thread->cached_keys[key->record.id % STORE_THREAD_RECORD_CACHE_SLOTS] = key->record;
    }
}

/* The round's copy of user `user_id` (known to the arrays), as
 * store_round_find_or_load. */
static int store_round_user(store_thread_state_t *thread, uint64_t user_id, store_round_user_t **user) {
    void *entry = NULL;
    int status = store_round_find_or_load(thread, thread->round_users, sizeof *thread->round_users,
                                          &thread->round_user_count, user_id, store_round_load_user, &entry);
    *user = entry;
    return status;
}

/* The round's copy of key `key_id` (known to the arrays), as
 * store_round_find_or_load. */
static int store_round_key(store_thread_state_t *thread, uint64_t key_id, store_round_key_t **key) {
    void *entry = NULL;
    int status = store_round_find_or_load(thread, thread->round_keys, sizeof *thread->round_keys,
                                          &thread->round_key_count, key_id, store_round_load_key, &entry);
    *key = entry;
    return status;
}

/* The latest entry of the round for a request's hold, or NULL. */
static store_round_hold_t *store_round_hold_find(store_thread_state_t *thread, const char *request_id) {
    for (uint32_t index = thread->round_hold_count; index > 0; index--) {
        store_round_hold_t *hold = &thread->round_holds[index - 1];
        if (strcmp(hold->record.request_id, request_id) == 0) return hold;
    }
    return NULL;
}

static store_round_hold_t *store_round_hold_add(store_thread_state_t *thread, const store_hold_record_t *record,
                                                bool open) {
    RW_ASSERT(thread->round_hold_count < thread->round_messages_max);
    store_round_hold_t *hold = &thread->round_holds[thread->round_hold_count++];
    hold->record = *record;
    hold->open = open;
    return hold;
}

static bool store_email_equal(const char *a, const char *b) {
    for (;; a++, b++) {
        char left = (*a >= 'A' && *a <= 'Z') ? (char)(*a - 'A' + 'a') : *a;
        char right = (*b >= 'A' && *b <= 'Z') ? (char)(*b - 'A' + 'a') : *b;
        if (left != right) return false;
        if (left == '\0') return true;
    }
}

static void store_batch_put_meta_u64(rocksdb_writebatch_t *batch, const char *name, uint64_t value) {
    uint8_t key[32];
    size_t key_length = store_key_meta(key, sizeof key, name);
    char text[TEXT_DECIMAL_BYTES];
    size_t length = text_format_u64(value, text);
    rocksdb_writebatch_put(batch, (const char *)key, key_length, text, length);
}

/* ---- Applying one message to the round ---- */

static int store_apply_hold_open(store_thread_state_t *thread, const store_hold_record_t *hold,
                                 store_apply_t *apply) {
    store_state_t *state = thread->store->state;
    if (!store_text_terminated(hold->request_id, sizeof hold->request_id) || hold->request_id[0] == '\0' ||
        !store_text_terminated(hold->model, sizeof hold->model) || hold->amount_micros < 0) {
        return -EINVAL;
    }
    if (!store_user_known(state, hold->user_id)) return -ENOENT;
    if (hold->key_id != 0 && !store_key_known(state, hold->key_id)) return -ENOENT;
    uint8_t key[STORE_KEY_TEXT_BYTES];
    size_t key_length = store_key_text(key, 'h', hold->request_id, false);
    uint8_t value[STORE_RECORD_BYTES_MAX];
    int length = store_hold_encode(hold, value, sizeof value);
    RW_ASSERT(length > 0);
    rocksdb_writebatch_put(thread->batch, (const char *)key, key_length, (const char *)value, (size_t)length);
    store_round_hold_add(thread, hold, true);
    apply->ack.id = hold->user_id;
    return 0;
}

static int store_apply_hold_release(store_thread_state_t *thread, const store_hold_release_t *release,
                                    store_apply_t *apply) {
    if (!store_text_terminated(release->request_id, sizeof release->request_id) || release->request_id[0] == '\0') {
        return -EINVAL;
    }
    uint8_t key[STORE_KEY_TEXT_BYTES];
    size_t key_length = store_key_text(key, 'h', release->request_id, false);
    rocksdb_writebatch_delete(thread->batch, (const char *)key, key_length);
    store_round_hold_t *hold = store_round_hold_find(thread, release->request_id);
    if (hold != NULL) {
        hold->open = false;
    } else {
        store_hold_record_t closed;
        memset(&closed, 0, sizeof closed);
        memcpy(closed.request_id, release->request_id, sizeof closed.request_id);
        store_round_hold_add(thread, &closed, false);
    }
    return 0;
}

/* For a SETTLE of a recorded hold (not flagged
 * STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED): finds the
 * recorded hold (opened earlier in this round, else on disk) and checks it
 * against the settlement. Returns 1 when the hold exists (its h/ key must
 * be deleted), 0 when it was never written (its HOLD_OPEN failed: nothing
 * to delete), -EIO on a read error. A hold settled or released twice is a
 * programmer error (asserted): this run's usage record of the request, or
 * the round's own close, shows it. */
static int store_settle_find_hold(store_thread_state_t *thread, const store_settle_t *settle,
                                  store_hold_record_t *hold) {
    const store_usage_record_t *usage = &settle->usage;
    store_round_hold_t *in_round = store_round_hold_find(thread, usage->request_id);
    if (in_round != NULL) {
        RW_ASSERT(in_round->open && "a recorded hold is settled once");
        *hold = in_round->record;
        return 1;
    }
    int status = store_hold_get(thread->store, usage->request_id, hold);
    if (status == 0) return 1;
    memset(hold, 0, sizeof *hold);
    memcpy(hold->request_id, usage->request_id, sizeof hold->request_id);
    if (status != -ENOENT) return -EIO;
    store_usage_record_t earlier;
    status = store_usage_get_by_request(thread->store, usage->request_id, &earlier);
    if (status == 0) {
        /* Request ids restart with the process, so only this run's record
         * of the same user says the hold was settled already. */
        RW_ASSERT((earlier.created_ms < thread->started_wall_ms || earlier.user_id != usage->user_id) &&
                  "a recorded hold is settled once");
    } else if (status != -ENOENT) {
        return -EIO;
    }
    store_log("while settling %s: its recorded hold is not in the store (the hold's write failed); "
              "settling without it", usage->request_id);
    return 0;
}

/* Settlement: the usage record (put in the round's block), the user's new
 * settled balance and the key's new spent (their records are put at the
 * end of the round), and the recorded hold's deletion, all in the round's
 * batch. A settlement is a fact (the request happened), so the only
 * refusals are malformed or unknown ids; the money invariants are checked
 * by assertion: the charge is within the hold (the message's and the
 * recorded one, which must agree) and the settled balance stays >= 0 (the
 * ledger reserved the hold from the available balance, which is never
 * more than the settled one). */
static int store_apply_settle(store_thread_state_t *thread, const store_message_t *message,
                              store_apply_t *apply) {
    store_state_t *state = thread->store->state;
    const store_settle_t *settle = &message->body.settle;
    const store_usage_record_t *usage = &settle->usage;
    if (!store_text_terminated(usage->request_id, sizeof usage->request_id) || usage->request_id[0] == '\0' ||
        !store_text_terminated(usage->model, sizeof usage->model) ||
        !store_text_terminated(usage->upstream, sizeof usage->upstream) ||
        !store_text_terminated(usage->status, sizeof usage->status)) {
        return -EINVAL;
    }
    if (usage->cost_micros < 0 || settle->hold_micros < 0 || usage->cost_micros > settle->hold_micros) {
        char what[STORE_MESSAGE_DESCRIPTION_BYTES];
        store_message_describe(message, what, sizeof what);
        store_log("while applying %s: cost %lld micros outside the hold of %lld", what,
                  (long long)usage->cost_micros, (long long)settle->hold_micros);
        return -EINVAL;
    }
    if (!store_user_known(state, usage->user_id)) return -ENOENT;
    if (usage->key_id != 0 && !store_key_known(state, usage->key_id)) return -ENOENT;

    int64_t new_balance = 0;
    if (__builtin_sub_overflow(state->user_balance_micros[usage->user_id - 1], usage->cost_micros, &new_balance)) {
        return -ERANGE;
    }
    int64_t new_spent = 0;
    if (usage->key_id != 0 &&
        __builtin_add_overflow(state->key_spent_micros[usage->key_id - 1], usage->cost_micros, &new_spent)) {
        return -ERANGE;
    }
    /* Everything that can fail (reads) before anything changes. */
    bool hold_recorded = (message->flags & STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED) == 0;
    store_hold_record_t hold;
    memset(&hold, 0, sizeof hold);
    memcpy(hold.request_id, usage->request_id, sizeof hold.request_id);
    int hold_found = 0;
    if (hold_recorded) {
        hold_found = store_settle_find_hold(thread, settle, &hold);
        if (hold_found < 0) return hold_found;
        if (hold_found == 1) {
            RW_ASSERT(hold.user_id == usage->user_id && hold.key_id == usage->key_id);
            RW_ASSERT(hold.amount_micros == settle->hold_micros && "the recorded hold is the one settled");
        }
    }
    store_round_user_t *user = NULL;
    int status = store_round_user(thread, usage->user_id, &user);
    if (status != 0) return status;
    store_round_key_t *key = NULL;
    if (usage->key_id != 0) {
        status = store_round_key(thread, usage->key_id, &key);
        if (status != 0) return status;
    }
    RW_ASSERT(usage->cost_micros >= 0 && usage->cost_micros <= settle->hold_micros);
    RW_ASSERT(!hold_found || usage->cost_micros <= hold.amount_micros);
    RW_ASSERT(new_balance >= 0 && "a settled balance never goes below zero");

    /* The record and its index entries are put at the end of the round,
     * grouped by key prefix (see store_round_put_records). */
    RW_ASSERT(thread->round_usage_count < thread->round_messages_max);
    /* Only a recorded hold can be looked up by its request id (the restart
     * resolves it, and a second settlement of it is caught): an unrecorded
     * one skips the q/ entry, the round's one insert at a random place. */
    thread->round_usage_indexed[thread->round_usage_count] = hold_recorded;
    store_usage_record_t *record = &thread->round_usages[thread->round_usage_count++];
    *record = *usage;
    record->id = state->next_usage_id;
    /* Never decreasing, so usage id order is time order. */
    record->created_ms = RW_MAX(state->usage_created_ms_last, text_wall_ms());
    if (hold_found == 1) {
        uint8_t hold_key[STORE_KEY_TEXT_BYTES];
        size_t hold_key_length = store_key_text(hold_key, 'h', record->request_id, false);
        rocksdb_writebatch_delete(thread->batch, (const char *)hold_key, hold_key_length);
    }
    if (hold_recorded) {
        /* Closed for the rest of the round, found or not. */
        store_round_hold_t *closed = store_round_hold_find(thread, record->request_id);
        if (closed == NULL) closed = store_round_hold_add(thread, &hold, false);
        closed->open = false;
    }
    /* No m/next_usage: store_open takes the next usage id from the last s/
     * key, so the counter would be one more key per settlement for
     * nothing. */
    store_round_set_micros(thread, &state->user_balance_micros[record->user_id - 1], new_balance);
    user->dirty = true;
    if (key != NULL) {
        store_round_set_micros(thread, &state->key_spent_micros[record->key_id - 1], new_spent);
        /* The token quota's count: the round's copy of the record is what is
         * put (and cached) only when the round's write succeeds. */
        uint64_t tokens = record->prompt_tokens + record->completion_tokens;
        key->record.tokens_used = key->record.tokens_used + RW_MIN(tokens, UINT64_MAX - key->record.tokens_used);
        key->dirty = true;
    }
    state->next_usage_id = record->id + 1;
    state->usage_created_ms_last = record->created_ms;
    apply->ack.id = record->id;
    apply->ack.balance_micros = new_balance;
    apply->ack.spent_micros = new_spent;
    return 0;
}

static int store_apply_user_create(store_thread_state_t *thread, const store_user_record_t *user,
                                   store_apply_t *apply) {
    store_state_t *state = thread->store->state;
    if (user->id == 0 || user->id > state->config.users_max || user->balance_micros < 0 ||
        !store_text_terminated(user->email, sizeof user->email) || user->email[0] == '\0' ||
        !store_text_terminated(user->password_hash, sizeof user->password_hash)) {
        return -EINVAL;
    }
    if (state->user_present[user->id - 1]) return -EEXIST;
    /* The email index: this round's creations first (not written yet). */
    for (uint32_t index = 0; index < thread->round_user_count; index++) {
        const store_round_user_t *other = &thread->round_users[index];
        if (other->created && store_email_equal(other->record.email, user->email)) return -EEXIST;
    }
    uint8_t email_key[STORE_KEY_TEXT_BYTES];
    size_t email_key_length = store_key_text(email_key, 'e', user->email, true);
    uint8_t existing[8];
    size_t existing_length = 0;
    int status = store_get(thread->store, email_key, email_key_length, existing, sizeof existing, &existing_length,
                           "the email index");
    if (status == 0) return -EEXIST;
    if (status != -ENOENT) return status;

    RW_ASSERT(thread->round_user_count < thread->round_messages_max);
    store_round_user_t *created = &thread->round_users[thread->round_user_count++];
    created->record = *user;
    created->created = true;
    created->dirty = true;
    uint8_t id_value[8];
    store_write_be64(id_value, user->id);
    rocksdb_writebatch_put(thread->batch, (const char *)email_key, email_key_length, (const char *)id_value,
                           sizeof id_value);
    uint64_t next_user_id = RW_MAX(state->next_user_id, user->id + 1);
    store_batch_put_meta_u64(thread->batch, "next_user", next_user_id);
    store_round_set_present(thread, &state->user_present[user->id - 1]);
    store_round_set_micros(thread, &state->user_balance_micros[user->id - 1], user->balance_micros);
    state->next_user_id = next_user_id;
    apply->ack.id = user->id;
    apply->ack.balance_micros = user->balance_micros;
    return 0;
}

static int store_apply_user_update(store_thread_state_t *thread, const store_user_update_t *update,
                                   store_apply_t *apply) {
    store_state_t *state = thread->store->state;
    if (!store_text_terminated(update->password_hash, sizeof update->password_hash)) return -EINVAL;
    if (!store_user_known(state, update->user_id)) return -ENOENT;
    store_round_user_t *user = NULL;
    int status = store_round_user(thread, update->user_id, &user);
    if (status != 0) return status;
    if (update->fields & STORE_USER_FIELD_STATUS) user->record.status = update->status;
    if (update->fields & STORE_USER_FIELD_PASSWORD_HASH) {
        memcpy(user->record.password_hash, update->password_hash, sizeof user->record.password_hash);
    }
    user->dirty = true;
    apply->ack.id = update->user_id;
    apply->ack.balance_micros = state->user_balance_micros[update->user_id - 1];
    return 0;
}

static int store_apply_balance_adjust(store_thread_state_t *thread, const store_balance_adjust_t *adjust,
                                      store_apply_t *apply) {
    store_state_t *state = thread->store->state;
    if (!store_user_known(state, adjust->user_id)) return -ENOENT;
    int64_t balance = state->user_balance_micros[adjust->user_id - 1];
    int64_t new_balance = 0;
    if (__builtin_add_overflow(balance, adjust->delta_micros, &new_balance) || new_balance < 0) {
        apply->ack.balance_micros = balance;
        return -ERANGE;
    }
    store_round_user_t *user = NULL;
    int status = store_round_user(thread, adjust->user_id, &user);
    if (status != 0) return status;
    store_round_set_micros(thread, &state->user_balance_micros[adjust->user_id - 1], new_balance);
    user->dirty = true;
    apply->ack.id = adjust->user_id;
    apply->ack.balance_micros = new_balance;
    return 0;
}

static int store_apply_key_create(store_thread_state_t *thread, const store_key_record_t *key,
                                  store_apply_t *apply) {
    store_state_t *state = thread->store->state;
    if (key->id == 0 || key->id > state->config.keys_max || !store_text_terminated(key->name, sizeof key->name) ||
        !store_text_terminated(key->prefix, sizeof key->prefix) ||
        !store_text_terminated(key->last4, sizeof key->last4) ||
        !store_text_terminated(key->models, sizeof key->models)) {
        return -EINVAL;
    }
    if (state->key_present[key->id - 1]) return -EEXIST;
    if (!store_user_known(state, key->user_id)) return -ENOENT;
    RW_ASSERT(thread->round_key_count < thread->round_messages_max);
    store_round_key_t *created = &thread->round_keys[thread->round_key_count++];
    created->record = *key;
    created->record.spent_micros = 0;
    created->dirty = true;
    uint64_t next_key_id = RW_MAX(state->next_key_id, key->id + 1);
    store_batch_put_meta_u64(thread->batch, "next_key", next_key_id);
    store_round_set_present(thread, &state->key_present[key->id - 1]);
    store_round_set_micros(thread, &state->key_spent_micros[key->id - 1], 0);
    state->next_key_id = next_key_id;
    apply->ack.id = key->id;
    return 0;
}

static int store_apply_key_update(store_thread_state_t *thread, const store_key_update_t *update,
                                  store_apply_t *apply) {
    store_state_t *state = thread->store->state;
    if (!store_text_terminated(update->name, sizeof update->name) ||
        !store_text_terminated(update->models, sizeof update->models) ||
        !store_text_terminated(update->tier, sizeof update->tier)) {
        return -EINVAL;
    }
    if (!store_key_known(state, update->key_id)) return -ENOENT;
    store_round_key_t *key = NULL;
    int status = store_round_key(thread, update->key_id, &key);
    if (status != 0) return status;
    store_key_record_t *record = &key->record;
    if (update->fields & STORE_KEY_FIELD_STATUS) record->status = update->status;
    if (update->fields & STORE_KEY_FIELD_EXPIRES) record->expires_at_ms = update->expires_at_ms;
    if (update->fields & STORE_KEY_FIELD_SPEND_CAP) record->spend_cap_micros = update->spend_cap_micros;
    if (update->fields & STORE_KEY_FIELD_TIER) memcpy(record->tier, update->tier, sizeof record->tier);
    if (update->fields & STORE_KEY_FIELD_LIMITS) memcpy(record->limits, update->limits, sizeof record->limits);
    if (update->fields & STORE_KEY_FIELD_TOKEN_QUOTA) record->token_quota = update->token_quota;
    if (update->fields & STORE_KEY_FIELD_NAME) memcpy(record->name, update->name, sizeof record->name);
    if (update->fields & STORE_KEY_FIELD_MODELS) {
        record->all_models = update->all_models;
        memcpy(record->models, update->models, sizeof record->models);
    }
    key->dirty = true;
    apply->ack.id = update->key_id;
    apply->ack.spent_micros = state->key_spent_micros[update->key_id - 1];
    return 0;
}

static int store_apply_audit(store_thread_state_t *thread, const store_audit_record_t *audit,
                             store_apply_t *apply) {
    store_state_t *state = thread->store->state;
    if (!store_text_terminated(audit->admin, sizeof audit->admin) ||
        !store_text_terminated(audit->action, sizeof audit->action) ||
        !store_text_terminated(audit->target, sizeof audit->target) ||
        !store_text_terminated(audit->details, sizeof audit->details)) {
        return -EINVAL;
    }
    store_audit_record_t record = *audit;
    record.id = state->next_audit_id;
    record.time_ms = text_wall_ms();
    char json[STORE_JSON_BYTES_MAX];
    int json_length = store_audit_encode(&record, json, sizeof json);
    RW_ASSERT(json_length > 0);
    uint8_t key[STORE_KEY_ID_BYTES];
    store_key_id(key, 'a', record.id);
    rocksdb_writebatch_put(thread->batch, (const char *)key, sizeof key, json, (size_t)json_length);
    store_batch_put_meta_u64(thread->batch, "next_audit", record.id + 1);
    state->next_audit_id = record.id + 1;
    apply->ack.id = record.id;
    return 0;
}

/* Applies `message` to the round. Returns 0, or a negative errno; then the
 * message changed nothing (every apply function validates and reads before
 * it writes into the batch or the arrays). */
static int store_apply_message(store_thread_state_t *thread, const store_message_t *message,
                               store_apply_t *apply) {
    switch (message->kind) {
    case STORE_MESSAGE_HOLD_OPEN: return store_apply_hold_open(thread, &message->body.hold_open, apply);
    case STORE_MESSAGE_HOLD_RELEASE: return store_apply_hold_release(thread, &message->body.hold_release, apply);
    case STORE_MESSAGE_SETTLE: return store_apply_settle(thread, message, apply);
    case STORE_MESSAGE_USER_CREATE: return store_apply_user_create(thread, &message->body.user_create, apply);
    case STORE_MESSAGE_USER_UPDATE: return store_apply_user_update(thread, &message->body.user_update, apply);
    case STORE_MESSAGE_BALANCE_ADJUST:
        return store_apply_balance_adjust(thread, &message->body.balance_adjust, apply);
    case STORE_MESSAGE_KEY_CREATE: return store_apply_key_create(thread, &message->body.key_create, apply);
    case STORE_MESSAGE_KEY_UPDATE: return store_apply_key_update(thread, &message->body.key_update, apply);
    case STORE_MESSAGE_AUDIT: return store_apply_audit(thread, &message->body.audit, apply);
    default: break;
    }
    RW_ASSERT(!"unknown store message kind");
    return -EINVAL;
}

/* ---- One round ---- */

static uint64_t store_thread_now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static void store_round_begin(store_thread_state_t *thread, store_round_start_t *start) {
    const store_state_t *state = thread->store->state;
    start->next_user_id = state->next_user_id;
    start->next_key_id = state->next_key_id;
    start->next_usage_id = state->next_usage_id;
    start->next_audit_id = state->next_audit_id;
    start->usage_created_ms_last = state->usage_created_ms_last;
    rocksdb_writebatch_clear(thread->batch);
    thread->round_ack_count = 0;
    thread->round_user_count = 0;
    thread->round_key_count = 0;
    thread->round_hold_count = 0;
    thread->round_usage_count = 0;
    thread->round_undo_count = 0;
    thread->round_sync = false;
}

/* Takes one message from `producer` and applies it. */
static void store_round_take(store_thread_state_t *thread, uint32_t producer_index, const store_message_t *message) {
    store_producer_t *producer = &thread->producers[producer_index];
    store_apply_t apply;
    memset(&apply, 0, sizeof apply);
    apply.ack.token = message->token;
    apply.ack.kind = message->kind;
    int status = store_apply_message(thread, message, &apply);
    if (status == 0 && (message->flags & STORE_MESSAGE_FLAG_SYNC)) thread->round_sync = true;
    if (status == -EINVAL) {
        char what[STORE_MESSAGE_DESCRIPTION_BYTES];
        store_message_describe(message, what, sizeof what);
        store_log("while applying %s: the message is malformed", what);
    }
    /* -ENOENT, -EEXIST, -ERANGE are answers to the producer; a read's -EIO
     * was logged where it happened. */
    apply.ack.status = status;
    RW_ASSERT(thread->round_ack_count < thread->round_messages_max);
    store_round_ack_t *ack = &thread->round_acks[thread->round_ack_count++];
    ack->producer = producer_index;
    ack->pushed = (message->flags & (STORE_MESSAGE_FLAG_ACK | STORE_MESSAGE_FLAG_SYNC)) != 0;
    ack->ack = apply.ack;
    if (ack->pushed) producer->acks_owed++;
    atomic_fetch_add_explicit(&thread->messages, 1, memory_order_relaxed);
}

/* Puts the round's usage records as blocks of up to
 * STORE_USAGE_BLOCK_RECORDS_MAX (one s/ key each, however many requests the
 * round settled: a memtable insert costs the same for a record as for a
 * block), each block's r/ entry per user in it, and for recorded holds their
 * q/ entries, grouped by prefix: the memtable's skip list inserts a key
 * cheaply when it lands next to the one inserted before (RocksDB keeps the
 * last insert's position, the "splice"), and s/ keys grow with the usage id
 * and q/ keys with each worker's request counter. */
static void store_round_put_usage(store_thread_state_t *thread) {
    rocksdb_writebatch_t *batch = thread->batch;
    for (uint32_t index = 0; index < thread->round_usage_count; index++) {
        if (!thread->round_usage_indexed[index]) continue;
        const store_usage_record_t *record = &thread->round_usages[index];
        uint8_t request_key[STORE_KEY_TEXT_BYTES];
        size_t request_key_length = store_key_text(request_key, 'q', record->request_id, false);
        uint8_t usage_id[8];
        store_write_be64(usage_id, record->id);
        rocksdb_writebatch_put(batch, (const char *)request_key, request_key_length, (const char *)usage_id,
                               sizeof usage_id);
    }
    for (uint32_t first = 0; first < thread->round_usage_count; first += STORE_USAGE_BLOCK_RECORDS_MAX) {
        uint32_t count = RW_MIN(thread->round_usage_count - first, (uint32_t)STORE_USAGE_BLOCK_RECORDS_MAX);
        store_batch_put_usage_block(batch, &thread->round_usages[first], count, thread->usage_block);
    }
    for (uint32_t first = 0; first < thread->round_usage_count; first += STORE_USAGE_BLOCK_RECORDS_MAX) {
        uint32_t count = RW_MIN(thread->round_usage_count - first, (uint32_t)STORE_USAGE_BLOCK_RECORDS_MAX);
        store_batch_put_usage_index(batch, &thread->round_usages[first], count);
    }
}

/* Puts every user and key record the round changed, once, with the
 * balance and spent the arrays hold now, then the usage records. */
static void store_round_put_records(store_thread_state_t *thread) {
    const store_state_t *state = thread->store->state;
    uint8_t value[STORE_RECORD_BYTES_MAX];
    uint8_t key[STORE_KEY_ID_BYTES];
    for (uint32_t index = 0; index < thread->round_user_count; index++) {
        store_round_user_t *user = &thread->round_users[index];
        if (!user->dirty) continue;
        user->record.balance_micros = state->user_balance_micros[user->record.id - 1];
        RW_ASSERT(user->record.balance_micros >= 0);
        int length = store_user_encode(&user->record, value, sizeof value);
        RW_ASSERT(length > 0);
        store_key_id(key, 'u', user->record.id);
        rocksdb_writebatch_put(thread->batch, (const char *)key, sizeof key, (const char *)value, (size_t)length);
    }
    for (uint32_t index = 0; index < thread->round_key_count; index++) {
        store_round_key_t *round_key = &thread->round_keys[index];
        if (!round_key->dirty) continue;
        round_key->record.spent_micros = state->key_spent_micros[round_key->record.id - 1];
        int length = store_key_encode(&round_key->record, value, sizeof value);
        RW_ASSERT(length > 0);
        store_key_id(key, 'k', round_key->record.id);
        rocksdb_writebatch_put(thread->batch, (const char *)key, sizeof key, (const char *)value, (size_t)length);
    }
    store_round_put_usage(thread);
}

/* Undoes the round's in-memory changes, newest first. */
static void store_round_roll_back(store_thread_state_t *thread, const store_round_start_t *start) {
    for (uint32_t index = thread->round_undo_count; index > 0; index--) {
        const store_round_undo_t *undo = &thread->round_undo[index - 1];
        if (undo->value_micros != NULL) *undo->value_micros = undo->old_micros;
        if (undo->present != NULL) *undo->present = undo->old_present;
    }
    thread->round_undo_count = 0;
    store_state_t *state = thread->store->state;
    state->next_user_id = start->next_user_id;
    state->next_key_id = start->next_key_id;
    state->next_usage_id = start->next_usage_id;
    state->next_audit_id = start->next_audit_id;
    state->usage_created_ms_last = start->usage_created_ms_last;
}

/* The test-only stall (see store.h): sleeps before the round's write while
 * the delay applies. */
static void store_round_test_delay(const store_thread_state_t *thread) {
    if (thread->test_delay_ms == 0) return;
    if (thread->test_delay_file[0] != '\0' && access(thread->test_delay_file, F_OK) != 0) return;
    struct timespec pause = {(time_t)(thread->test_delay_ms / 1000), (long)(thread->test_delay_ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

/* Writes the round's batch (when it holds anything), then commits or rolls
 * back the in-memory side and fixes the acks' answers. */
static void store_round_write(store_thread_state_t *thread, const store_round_start_t *start) {
    store_round_put_records(thread);
    if (rocksdb_writebatch_count(thread->batch) == 0) return; /* every message was refused */
    store_round_test_delay(thread);
    char failure[STORE_ERROR_BYTES];
    int status = store_write(thread->store, thread->batch, thread->round_sync, failure, sizeof failure);
    if (status == 0) {
        /* A synced write is counted as a sync; the syncer still syncs
         * after it (it cannot tell which batches it covered), which costs
         * one fdatasync per interval at most. */
        atomic_fetch_add_explicit(&thread->batch_writes, 1, memory_order_release);
        store_round_cache_records(thread);
        if (thread->round_sync) atomic_fetch_add_explicit(&thread->syncs, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&thread->write_errors, 1, memory_order_relaxed);
    store_log("while writing the batch of a round of %u messages (all answered -EIO): %s", thread->round_ack_count,
              failure);
    store_round_roll_back(thread, start);
    for (uint32_t index = 0; index < thread->round_ack_count; index++) {
        store_round_ack_t *ack = &thread->round_acks[index];
        ack->ack.status = -EIO;
        ack->ack.id = 0;
    }
}

static void store_round_push_acks(store_thread_state_t *thread) {
    for (uint32_t index = 0; index < thread->round_ack_count; index++) {
        const store_round_ack_t *ack = &thread->round_acks[index];
        if (!ack->pushed) continue;
        store_producer_t *producer = &thread->producers[ack->producer];
        bool was_empty = false;
        bool pushed = channel_push(&producer->replies, &ack->ack, &was_empty);
        RW_ASSERT(pushed); /* its slot was sure before the message was taken */
        RW_ASSERT(producer->acks_owed > 0);
        producer->acks_owed--;
        if (was_empty && producer->ring_fd >= 0) producer->doorbell_pending = true;
    }
}

/* One round over every producer: takes, applies, writes one batch, acks.
 * Returns the number of messages taken. */
static uint32_t store_thread_round(store_thread_state_t *thread) {
    store_round_start_t start;
    store_round_begin(thread, &start);
    for (uint32_t index = 0; index < thread->producer_count; index++) {
        store_producer_t *producer = &thread->producers[index];
        for (uint32_t count = 0; count < STORE_THREAD_MESSAGES_PER_PRODUCER; count++) {
            /* Only take a message when its ack is sure to fit beside the
             * acks this round already owes: the producer is behind on its
             * replies otherwise, and waits. */
            if (channel_count(&producer->replies) + producer->acks_owed >= producer->replies.capacity) break;
            store_message_t message;
            if (!channel_pop(&producer->requests, &message)) break;
            store_round_take(thread, index, &message);
        }
    }
    uint32_t taken = thread->round_ack_count;
    if (taken == 0) return 0;
    atomic_fetch_add_explicit(&thread->rounds, 1, memory_order_relaxed);
    store_round_write(thread, &start);
    store_round_push_acks(thread);
    return taken;
}

/* ---- The loop ---- */

static void store_thread_ring_doorbells(store_thread_state_t *thread) {
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

/* Sleeps until a doorbell or STORE_THREAD_POLL_MS, then consumes every CQE
 * (doorbells carry no data: the channels say what to do). */
static void store_thread_wait(store_thread_state_t *thread) {
    struct __kernel_timespec timeout = {STORE_THREAD_POLL_MS / 1000, (STORE_THREAD_POLL_MS % 1000) * 1000000LL};
    struct io_uring_cqe *cqe = NULL;
    int status = io_uring_submit_and_wait_timeout(&thread->ring, &cqe, 1, &timeout, NULL);
    if (status < 0 && status != -ETIME && status != -EINTR && status != -EAGAIN && status != -EBUSY) {
        store_log("while waiting for doorbells: %s", strerror(-status));
    }
    unsigned head = 0;
    unsigned count = 0;
    io_uring_for_each_cqe(&thread->ring, head, cqe) {
        /* user_data 0 with res < 0: a doorbell we rang failed (the
         * producer's ring is gone); it polls its replies anyway. */
        count++;
    }
    io_uring_cq_advance(&thread->ring, count);
}

static void *store_thread_main(void *argument) {
    store_thread_state_t *thread = argument;
    /* The perf level is per thread: off here too (see store_open). */
    rocksdb_set_perf_level(rocksdb_disable);
    for (;;) {
        bool stopping = atomic_load_explicit(&thread->stop_requested, memory_order_acquire);
        /* Drain: rounds until a round finds nothing (a producer whose
         * replies are full yields nothing until it reads them). */
        for (;;) {
            uint32_t taken = store_thread_round(thread);
            store_thread_ring_doorbells(thread);
            if (taken == 0) break;
        }
        if (stopping) {
            /* The flag was read before this drain, so everything pushed
             * before the stop request has been applied (the syncer syncs
             * it when it stops). */
            break;
        }
        store_thread_wait(thread);
    }
    return NULL;
}

/* ---- The syncer ---- */

/* Syncs the WAL when a batch was written since the last sync that
 * succeeded. A failure is logged, counted and retried at the next
 * interval. Syncer thread only. */
static void store_syncer_sync(store_thread_state_t *thread) {
    uint64_t written = atomic_load_explicit(&thread->batch_writes, memory_order_acquire);
    if (written == thread->syncer_synced_writes) return;
    char failure[STORE_ERROR_BYTES];
    if (store_sync_wal(thread->store, failure, sizeof failure) != 0) {
        atomic_fetch_add_explicit(&thread->write_errors, 1, memory_order_relaxed);
        store_log("while syncing the WAL: %s", failure);
        return;
    }
    /* Every batch counted before the sync began is on the disk. */
    thread->syncer_synced_writes = written;
    atomic_fetch_add_explicit(&thread->syncs, 1, memory_order_relaxed);
}

/* Sleeps a sync interval at a time (a plain thread, not an event loop:
 * sleeping is its job), syncing after each; a stop wakes it at once for
 * one last sync. */
static void *store_syncer_main(void *argument) {
    store_thread_state_t *thread = argument;
    rocksdb_set_perf_level(rocksdb_disable);
    pthread_mutex_lock(&thread->syncer_lock);
    while (!thread->syncer_stop) {
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        uint64_t nanoseconds = (uint64_t)deadline.tv_nsec + (uint64_t)thread->sync_interval_ms * 1000000u;
        deadline.tv_sec += (time_t)(nanoseconds / 1000000000u);
        deadline.tv_nsec = (long)(nanoseconds % 1000000000u);
        int status = 0;
        while (!thread->syncer_stop && status != ETIMEDOUT) {
            status = pthread_cond_timedwait(&thread->syncer_wake, &thread->syncer_lock, &deadline);
        }
        if (thread->syncer_stop) break;
        pthread_mutex_unlock(&thread->syncer_lock);
        store_syncer_sync(thread);
        pthread_mutex_lock(&thread->syncer_lock);
    }
    pthread_mutex_unlock(&thread->syncer_lock);
    store_syncer_sync(thread);
    return NULL;
}

static void store_syncer_stop(store_thread_state_t *state) {
    if (!state->syncer_started) return;
    pthread_mutex_lock(&state->syncer_lock);
    state->syncer_stop = true;
    pthread_cond_signal(&state->syncer_wake);
    pthread_mutex_unlock(&state->syncer_lock);
    pthread_join(state->syncer, NULL);
    state->syncer_started = false;
}

/* ---- Life cycle and the producers' side ---- */

uint32_t store_thread_channel_capacity_for(uint32_t streams_per_thread) {
    /* channel_init takes at most 2^24 slots. */
    RW_ASSERT(streams_per_thread >= 1 && streams_per_thread <= (1u << 24) / 3);
    uint32_t needed = 3 * streams_per_thread;
    uint32_t capacity = 4;
    while (capacity < needed) capacity <<= 1;
    RW_ASSERT(capacity >= needed && (capacity & (capacity - 1)) == 0);
    return capacity;
}

/* Reads the test-only stall settings (see store.h) from the environment. */
static void store_thread_read_test_delay(store_thread_state_t *state) {
    state->test_delay_ms = 0;
    state->test_delay_file[0] = '\0';
    const char *delay = getenv("RINGWAY_TEST_STORE_DELAY_MS");
    if (delay == NULL || delay[0] == '\0') return;
    char *end = NULL;
    unsigned long delay_ms = strtoul(delay, &end, 10);
    if (*end != '\0' || delay_ms == 0) return;
    state->test_delay_ms = (uint32_t)RW_MIN(delay_ms, (unsigned long)STORE_THREAD_TEST_DELAY_MS_MAX);
    const char *file = getenv("RINGWAY_TEST_STORE_DELAY_FILE");
    if (file != NULL && strlen(file) < sizeof state->test_delay_file) {
        memcpy(state->test_delay_file, file, strlen(file) + 1);
    }
    store_log("test-only delay of %u ms before every batch write%s%s", state->test_delay_ms,
              state->test_delay_file[0] != '\0' ? " while this file exists: " : "", state->test_delay_file);
}

int store_thread_create(store_thread_t *thread, store_t *store, uint32_t producer_count,
                        uint32_t channel_capacity, uint32_t sync_interval_ms, char *error,
                        size_t error_size) {
    RW_ASSERT(thread != NULL && store != NULL && store->state != NULL && store->state->db != NULL);
    RW_ASSERT(producer_count >= 1 && producer_count <= UINT32_MAX / STORE_THREAD_MESSAGES_PER_PRODUCER);
    RW_ASSERT(channel_capacity >= 2 && (channel_capacity & (channel_capacity - 1)) == 0);
    RW_ASSERT(sync_interval_ms >= 1);
    memset(thread, 0, sizeof *thread);
    store_thread_state_t *state = calloc(1, sizeof *state);
    if (state == NULL) {
        snprintf(error, error_size, "out of memory for the store thread");
        return -ENOMEM;
    }
    thread->state = state;
    thread->producer_count = producer_count;
    atomic_init(&state->stop_requested, false);
    state->store = store;
    state->producer_count = producer_count;
    state->sync_interval_ms = sync_interval_ms;
    size_t bytes = (size_t)producer_count * sizeof(store_producer_t);
    bytes = (bytes + CHANNEL_CACHE_LINE_BYTES - 1) / CHANNEL_CACHE_LINE_BYTES * CHANNEL_CACHE_LINE_BYTES;
    state->producers = aligned_alloc(CHANNEL_CACHE_LINE_BYTES, bytes);
    /* The round's arrays, sized for the most a round can take. */
    uint32_t round_max = producer_count * STORE_THREAD_MESSAGES_PER_PRODUCER;
    state->round_messages_max = round_max;
    state->round_acks = calloc(round_max, sizeof *state->round_acks);
    state->round_users = calloc(round_max, sizeof *state->round_users);
    state->round_keys = calloc(round_max, sizeof *state->round_keys);
    state->round_holds = calloc(round_max, sizeof *state->round_holds);
    state->round_usages = calloc(round_max, sizeof *state->round_usages);
    state->round_usage_indexed = calloc(round_max, sizeof *state->round_usage_indexed);
    state->usage_block = malloc(STORE_USAGE_BLOCK_BYTES_MAX);
    state->round_undo = calloc((size_t)round_max * STORE_THREAD_UNDO_PER_MESSAGE, sizeof *state->round_undo);
    state->cached_users = calloc(STORE_THREAD_RECORD_CACHE_SLOTS, sizeof *state->cached_users);
    state->cached_keys = calloc(STORE_THREAD_RECORD_CACHE_SLOTS, sizeof *state->cached_keys);
    if (state->producers == NULL || state->round_acks == NULL || state->round_users == NULL ||
        state->round_keys == NULL || state->round_holds == NULL || state->round_usages == NULL || state->round_usage_indexed == NULL ||
        state->usage_block == NULL ||
        state->round_undo == NULL || state->cached_users == NULL || state->cached_keys == NULL) {
        snprintf(error, error_size, "out of memory for %u store producers", producer_count);
        store_thread_destroy(thread);
        return -ENOMEM;
    }
    memset(state->producers, 0, bytes);
    for (uint32_t index = 0; index < producer_count; index++) {
        store_producer_t *producer = &state->producers[index];
        producer->ring_fd = -1;
        if (channel_init(&producer->requests, channel_capacity, sizeof(store_message_t)) != 0 ||
            channel_init(&producer->replies, channel_capacity, sizeof(store_ack_t)) != 0) {
            snprintf(error, error_size, "out of memory for the store channels (%u x %u messages)", producer_count,
                     channel_capacity);
            store_thread_destroy(thread);
            return -ENOMEM;
        }
    }
    state->batch = rocksdb_writebatch_create();
    int status = io_uring_queue_init(STORE_THREAD_RING_ENTRIES, &state->ring, 0);
    if (status < 0) {
        snprintf(error, error_size, "io_uring_queue_init for the store thread: %s", strerror(-status));
        store_thread_destroy(thread);
        return status;
    }
    state->ring_ready = true;
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    status = pthread_cond_init(&state->syncer_wake, &attributes);
    pthread_condattr_destroy(&attributes);
    if (status == 0) status = pthread_mutex_init(&state->syncer_lock, NULL);
    RW_ASSERT(status == 0 && "condition variables and mutexes of default kinds always initialise on Linux");
    state->syncer_ready = true;
    return 0;
}

void store_thread_bind_producer(store_thread_t *thread, uint32_t producer, int ring_fd,
                                loop_operation_t *mailbox) {
    RW_ASSERT(thread != NULL && thread->state != NULL && !thread->state->started);
    RW_ASSERT(producer < thread->producer_count);
    RW_ASSERT(ring_fd >= 0);
    thread->state->producers[producer].ring_fd = ring_fd;
    thread->state->producers[producer].mailbox = mailbox;
}

int store_thread_start(store_thread_t *thread) {
    RW_ASSERT(thread != NULL && thread->state != NULL);
    store_thread_state_t *state = thread->state;
    RW_ASSERT(state->ring_ready && !state->started);
    store_thread_read_test_delay(state);
    /* Records may have been written while the thread was stopped. */
    memset(state->cached_users, 0, STORE_THREAD_RECORD_CACHE_SLOTS * sizeof *state->cached_users);
    memset(state->cached_keys, 0, STORE_THREAD_RECORD_CACHE_SLOTS * sizeof *state->cached_keys);
    state->started_wall_ms = text_wall_ms();
    state->syncer_stop = false;
    state->syncer_synced_writes = atomic_load_explicit(&state->batch_writes, memory_order_relaxed);
    int status = pthread_create(&state->syncer, NULL, store_syncer_main, state);
    if (status != 0) return -status;
    state->syncer_started = true;
    status = pthread_create(&state->thread, NULL, store_thread_main, state);
    if (status != 0) {
        store_syncer_stop(state);
        return -status;
    }
    state->started = true;
    return 0;
}

void store_thread_stop(store_thread_t *thread) {
    RW_ASSERT(thread != NULL);
    store_thread_state_t *state = thread->state;
    if (state == NULL || !state->started) return;
    atomic_store_explicit(&state->stop_requested, true, memory_order_release);
    pthread_join(state->thread, NULL);
    /* After the store thread: its last batches are synced. */
    store_syncer_stop(state);
    state->started = false;
}

void store_thread_destroy(store_thread_t *thread) {
    RW_ASSERT(thread != NULL);
    store_thread_state_t *state = thread->state;
    if (state == NULL) return;
    RW_ASSERT(!state->started);
    if (state->ring_ready) io_uring_queue_exit(&state->ring);
    if (state->syncer_ready) {
        pthread_cond_destroy(&state->syncer_wake);
        pthread_mutex_destroy(&state->syncer_lock);
    }
    if (state->batch != NULL) rocksdb_writebatch_destroy(state->batch);
    if (state->producers != NULL) {
        for (uint32_t index = 0; index < state->producer_count; index++) {
            channel_destroy(&state->producers[index].requests);
            channel_destroy(&state->producers[index].replies);
        }
        free(state->producers);
    }
    free(state->round_acks);
    free(state->round_users);
    free(state->round_keys);
    free(state->round_holds);
    free(state->round_usages);
    free(state->usage_block);
    free(state->round_usage_indexed);
    free(state->round_undo);
    free(state->cached_users);
    free(state->cached_keys);
    free(state);
    thread->state = NULL;
}

void store_thread_statistics(const store_thread_t *thread, store_thread_statistics_t *statistics) {
    RW_ASSERT(thread != NULL && thread->state != NULL && statistics != NULL);
    const store_thread_state_t *state = thread->state;
    statistics->messages = atomic_load_explicit(&state->messages, memory_order_relaxed);
    statistics->rounds = atomic_load_explicit(&state->rounds, memory_order_relaxed);
    statistics->batch_writes = atomic_load_explicit(&state->batch_writes, memory_order_relaxed);
    statistics->write_errors = atomic_load_explicit(&state->write_errors, memory_order_relaxed);
    statistics->syncs = atomic_load_explicit(&state->syncs, memory_order_relaxed);
}

bool store_thread_submit(store_thread_t *thread, uint32_t producer, const store_message_t *message,
                         struct io_uring *producer_ring) {
    RW_ASSERT(thread != NULL && thread->state != NULL && message != NULL && producer < thread->producer_count);
    RW_ASSERT(message->kind >= STORE_MESSAGE_HOLD_OPEN && message->kind <= STORE_MESSAGE_AUDIT);
    RW_ASSERT(!(message->flags & STORE_MESSAGE_FLAG_HOLD_NOT_RECORDED) || message->kind == STORE_MESSAGE_SETTLE);
    store_thread_state_t *state = thread->state;
    bool was_empty = false;
    if (!channel_push(&state->producers[producer].requests, message, &was_empty)) return false;
    if (was_empty && producer_ring != NULL) channel_ring_doorbell(producer_ring, state->ring.ring_fd, &state->doorbell);
    return true;
}

bool store_thread_reply_pop(store_thread_t *thread, uint32_t producer, store_ack_t *ack) {
    RW_ASSERT(thread != NULL && thread->state != NULL && ack != NULL && producer < thread->producer_count);
    return channel_pop(&thread->state->producers[producer].replies, ack);
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
