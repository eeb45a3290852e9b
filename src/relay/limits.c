/* The rate-limit stage, between authentication and the hold (admit.c calls
 * it; settle.c ends what it took). A key's limits are its tier's (its own,
 * else [rate_limits] key_tier) with the key's overrides over them, plus its
 * total token quota; an account's are [rate_limits] account_tier's, over
 * all of its keys together. Each is a lease pool of src/limit (the
 * algorithm and why it is exact are there); this worker's shards of those
 * pools live here, one per key or account slot and limit. A change of a
 * key's tier or limits (admin API) is read by the next request on every
 * thread.
 *
 *   requests per minute / per day   1 per request, fixed UTC windows
 *   tokens per minute / per day     the estimate at admission: the prompt
 *                                   (body bytes / LEDGER_ESTIMATE_BYTES_PER_TOKEN)
 *                                   plus the output the client asked for
 *                                   (max_tokens or max_completion_tokens,
 *                                   times n), at least 1; corrected at the
 *                                   end to prompt + completion tokens the
 *                                   upstream reported (or the billing
 *                                   estimate when it reported none)
 *   concurrent requests             a slot from admission until the
 *                                   stream's end (settle.c), drain included
 *   token quota (keys only)         tokens in all, charged and corrected
 *                                   like the token limits; the store keeps
 *                                   the tokens used (k/ records), so it
 *                                   survives restarts
 *
 * A request is admitted only when every limit admits it; what the earlier
 * ones took is given back when a later one refuses, or when a later stage
 * of admission refuses (the wallet's 402). Nothing here answers the client
 * or calls another stage: admit.c answers the 429 this file describes. */
#include "relay-internal.h"

#include "ringway/ledger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define RELAY_LIMIT_MINUTE_MS 60000u
#define RELAY_LIMIT_DAY_MS 86400000u

_Static_assert(ACCOUNT_LIMITS == CONFIG_LIMIT_COUNT, "a pool per tier limit");

enum {
    RELAY_LIMIT_KEY = 0,
    RELAY_LIMIT_ACCOUNT = 1,
    /* A key's sixth limit, after the tier's: its token quota. */
    RELAY_LIMIT_QUOTA = ACCOUNT_LIMITS,
    RELAY_LIMIT_KINDS = ACCOUNT_LIMITS + 1,
};
_Static_assert(2 * RELAY_LIMIT_KINDS <= 16, "limits_taken has a bit per subject and limit");
_Static_assert(2 * RELAY_LIMIT_KINDS == RELAY_LIMIT_BITS, "a window per bit");

static uint64_t relay_limit_window_ms(const relay_worker_t *worker, uint32_t kind) {
    switch (kind) {
    case CONFIG_LIMIT_REQUESTS_PER_MINUTE:
    case CONFIG_LIMIT_TOKENS_PER_MINUTE: return worker->limit_minute_ms;
    case CONFIG_LIMIT_REQUESTS_PER_DAY:
    case CONFIG_LIMIT_TOKENS_PER_DAY: return RELAY_LIMIT_DAY_MS;
    default: return 0; /* concurrency, the quota: no window */
    }
}

static bool relay_limit_counts_tokens(uint32_t kind) {
    return kind == CONFIG_LIMIT_TOKENS_PER_MINUTE || kind == CONFIG_LIMIT_TOKENS_PER_DAY || kind == RELAY_LIMIT_QUOTA;
}

/* A subject's limits now, by kind (0 = unlimited): the tier's values with a
 * key's overrides over them, and a key's quota as RELAY_LIMIT_QUOTA. */
static void relay_limit_values(const relay_stream_t *stream, uint32_t subject, uint64_t values[RELAY_LIMIT_KINDS]) {
    const config_t *config = stream->worker->config;
    uint32_t tier = config->account_tier;
    if (subject == RELAY_LIMIT_KEY) {
        tier = account_key_tier(stream->key);
        if (tier == ACCOUNT_TIER_DEFAULT) tier = config->key_tier;
    }
    for (uint32_t kind = 0; kind < ACCOUNT_LIMITS; kind++) {
        values[kind] = tier < config->tier_count ? config->tiers[tier].limits[kind] : 0;
        if (subject == RELAY_LIMIT_KEY) {
            uint32_t own = account_key_limit(stream->key, kind);
            if (own != ACCOUNT_LIMIT_INHERIT) values[kind] = own;
        }
    }
    values[RELAY_LIMIT_QUOTA] = subject == RELAY_LIMIT_KEY ? RW_MIN(account_key_token_quota(stream->key), LIMIT_VALUE_MAX)
                                                           : 0;
}

static limit_pool_t *relay_limit_pool(const relay_stream_t *stream, uint32_t subject, uint32_t kind) {
    if (subject == RELAY_LIMIT_ACCOUNT) return &stream->user->limit_pools[kind];
    return kind == RELAY_LIMIT_QUOTA ? &stream->key->quota_pool : &stream->key->limit_pools[kind];
}

/* Shard number (subject, slot, kind): the worker's list entries. */
static uint32_t relay_limit_shard_number(const relay_stream_t *stream, uint32_t subject, uint32_t kind) {
    const account_tables_t *tables = stream->worker->shared->tables;
    uint32_t slot = subject == RELAY_LIMIT_KEY ? (uint32_t)(stream->key - tables->keys)
                                               : (uint32_t)(stream->user - tables->users);
    return (subject << 31) | (slot * RELAY_LIMIT_KINDS + kind);
}

static limit_shard_t *relay_limit_shard_at(relay_worker_t *worker, uint32_t number) {
    uint32_t index = number & 0x7fffffffu;
    return (number >> 31) == RELAY_LIMIT_KEY ? &worker->limit_key_shards[index] : &worker->limit_user_shards[index];
}

static limit_pool_t *relay_limit_pool_at(relay_worker_t *worker, uint32_t number) {
    account_tables_t *tables = worker->shared->tables;
    uint32_t index = number & 0x7fffffffu;
    uint32_t slot = index / RELAY_LIMIT_KINDS;
    uint32_t kind = index % RELAY_LIMIT_KINDS;
    if ((number >> 31) == RELAY_LIMIT_ACCOUNT) return &tables->users[slot].limit_pools[kind];
    return kind == RELAY_LIMIT_QUOTA ? &tables->keys[slot].quota_pool : &tables->keys[slot].limit_pools[kind];
}

/* A shard that holds a lease is visited on ticks until it gives it back;
 * when the list is full the lease goes back at once instead. */
static void relay_limit_list(relay_worker_t *worker, uint32_t number) {
    limit_shard_t *shard = relay_limit_shard_at(worker, number);
    if (shard->listed || shard->lease == 0) return;
    if (worker->limit_list_count == worker->limit_list_max) {
        limit_pool_t *pool = relay_limit_pool_at(worker, number);
        shard->used = 0;
        limit_shard_idle(pool, shard);
        return;
    }
    shard->listed = 1;
    worker->limit_list[worker->limit_list_count++] = number;
}

int relay_limits_init(relay_worker_t *worker, char *error, size_t error_size) {
    const config_t *config = worker->config;
    size_t key_bytes = (size_t)config->keys_max * RELAY_LIMIT_KINDS * sizeof(limit_shard_t);
    size_t user_bytes = (size_t)config->users_max * RELAY_LIMIT_KINDS * sizeof(limit_shard_t);
    /* Pages are committed as keys and accounts are first limited here. */
    worker->limit_key_shards = mmap(NULL, key_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE,
                                    -1, 0);
    worker->limit_user_shards = mmap(NULL, user_bytes, PROT_READ | PROT_WRITE,
                                     MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    worker->limit_key_generations = mmap(NULL, (size_t)config->keys_max * sizeof(uint32_t), PROT_READ | PROT_WRITE,
                                         MAP_ANONYMOUS | MAP_PRIVATE | MAP_NORESERVE, -1, 0);
    worker->limit_list_max = 2 * RELAY_LIMIT_KINDS * config->streams_per_thread;
    worker->limit_list = calloc(worker->limit_list_max, sizeof(uint32_t));
    if (worker->limit_key_shards == MAP_FAILED || worker->limit_user_shards == MAP_FAILED ||
        worker->limit_key_generations == MAP_FAILED || worker->limit_list == NULL) {
        snprintf(error, error_size, "cannot allocate the rate-limit shards (%zu bytes)", key_bytes + user_bytes);
        return -1;
    }
    worker->limit_reset_minute = UINT64_MAX;
    /* Test-only: a shorter "minute", so tests can watch several windows. */
    worker->limit_minute_ms = RELAY_LIMIT_MINUTE_MS;
    const char *minute = getenv("RINGWAY_TEST_MINUTE_MS");
    if (minute != NULL && atoi(minute) > 0) worker->limit_minute_ms = (uint64_t)atoi(minute);
    return 0;
}

/* A concurrency slot that ended: it stays on this thread only while the
 * thread keeps fewer free slots than its share, the rest goes back to the
 * pool at once, so a small limit's slot is free for every thread without
 * waiting for a tick. */
static void relay_limit_free_slot(relay_stream_t *stream, uint32_t subject, limit_shard_t *shard) {
    relay_worker_t *worker = stream->worker;
    uint32_t kind = CONFIG_LIMIT_CONCURRENT_REQUESTS;
    limit_put_back(shard, 0, 1);
    uint64_t values[RELAY_LIMIT_KINDS];
    relay_limit_values(stream, subject, values);
    limit_trim(relay_limit_pool(stream, subject, kind), shard, values[kind] / (2u * worker->config->threads));
}

/* Gives back what the stream took for the limits in `taken` (bits), as if
 * the request never ran. */
static void relay_limits_give_back(relay_stream_t *stream, uint16_t taken) {
    relay_worker_t *worker = stream->worker;
    for (uint32_t bit = 0; bit < 2 * RELAY_LIMIT_KINDS; bit++) {
        if (!(taken & (1u << bit))) continue;
        uint32_t subject = bit / RELAY_LIMIT_KINDS;
        uint32_t kind = bit % RELAY_LIMIT_KINDS;
        uint32_t number = relay_limit_shard_number(stream, subject, kind);
        limit_shard_t *shard = relay_limit_shard_at(worker, number);
        if (kind == CONFIG_LIMIT_CONCURRENT_REQUESTS) {
            relay_limit_free_slot(stream, subject, shard);
        } else {
            uint64_t amount = relay_limit_counts_tokens(kind) ? stream->limit_tokens : 1;
            limit_put_back(shard, stream->limit_windows[bit], amount);
        }
        relay_limit_list(worker, number);
    }
    stream->limits_taken &= (uint16_t)~taken;
}

/* Seconds until `window` of `window_ms` ends, at least 1. */
static uint32_t relay_limit_seconds_left(uint64_t now_ms, uint64_t window_ms) {
    uint64_t end = (now_ms / window_ms + 1) * window_ms;
    return (uint32_t)RW_MAX(1u, (end - now_ms + 999) / 1000);
}

static void relay_limit_describe(const relay_worker_t *worker, relay_limit_refusal_t *refusal, uint32_t subject,
                                 uint32_t kind, uint64_t limit, uint64_t cost, uint64_t now_ms) {
    const char *who = subject == RELAY_LIMIT_KEY ? "this API key" : "your account";
    refusal->retry_after_s = 1;
    refusal->should_retry = true;
    switch (kind) {
    case CONFIG_LIMIT_REQUESTS_PER_MINUTE:
    case CONFIG_LIMIT_TOKENS_PER_MINUTE: {
        bool tokens = kind == CONFIG_LIMIT_TOKENS_PER_MINUTE;
        refusal->code = tokens ? "tokens_rate_limit_exceeded" : "rate_limit_exceeded";
        if (tokens && cost > limit) {
            refusal->should_retry = false;
            snprintf(refusal->message, sizeof refusal->message,
                     "Request too large: %s is limited to %llu tokens per minute and this request needs about %llu. "
                     "Send fewer tokens or ask for less output.", who, (unsigned long long)limit,
                     (unsigned long long)cost);
            break;
        }
        refusal->retry_after_s = relay_limit_seconds_left(now_ms, worker->limit_minute_ms);
        snprintf(refusal->message, sizeof refusal->message,
                 "Rate limit exceeded: %s is limited to %llu %s per minute. Please retry after %u seconds.", who,
                 (unsigned long long)limit, tokens ? "tokens" : "requests", refusal->retry_after_s);
        break;
    }
    case CONFIG_LIMIT_REQUESTS_PER_DAY:
    case CONFIG_LIMIT_TOKENS_PER_DAY:
        refusal->code = "daily_limit_reached";
        refusal->should_retry = false;
        refusal->retry_after_s = relay_limit_seconds_left(now_ms, RELAY_LIMIT_DAY_MS);
        snprintf(refusal->message, sizeof refusal->message,
                 "Daily limit reached: %s is limited to %llu %s per day (UTC). It resets at midnight UTC.", who,
                 (unsigned long long)limit, kind == CONFIG_LIMIT_REQUESTS_PER_DAY ? "requests" : "tokens");
        break;
    case RELAY_LIMIT_QUOTA:
        refusal->code = "token_quota_exhausted";
        refusal->should_retry = false;
        refusal->retry_after_s = 0; /* waiting never helps: no Retry-After */
        snprintf(refusal->message, sizeof refusal->message,
                 "Token quota exhausted: this API key may use %llu tokens in all and has too few left for this "
                 "request (about %llu). Ask your provider for a larger quota.",
                 (unsigned long long)limit, (unsigned long long)cost);
        break;
    default:
        refusal->code = "concurrency_limit_exceeded";
        snprintf(refusal->message, sizeof refusal->message,
                 "Too many concurrent requests: %s is limited to %llu requests at a time. Please retry when one of "
                 "them has finished.", who, (unsigned long long)limit);
        break;
    }
}

/* The tokens admission charges to the token limits (see the top). */
static uint64_t relay_limit_estimate(const relay_stream_t *stream, const json_chat_request_t *request) {
    uint64_t tokens = stream->exchange->body_length / LEDGER_ESTIMATE_BYTES_PER_TOKEN;
    if (request != NULL) {
        uint64_t output = 0;
        if (request->max_tokens.present && request->max_tokens.type == JSON_TYPE_NUMBER) {
            output = request->max_tokens_value;
        } else if (request->max_completion_tokens.present && request->max_completion_tokens.type == JSON_TYPE_NUMBER) {
            output = request->max_completion_tokens_value;
        }
        uint64_t requested = 0;
        if (__builtin_mul_overflow(RW_MIN(output, LIMIT_VALUE_MAX), (uint64_t)stream->facts.completions, &requested)) {
            requested = LIMIT_VALUE_MAX;
        }
        tokens += RW_MIN(requested, LIMIT_VALUE_MAX);
    }
    return RW_MAX(1u, RW_MIN(tokens, LIMIT_VALUE_MAX));
}

/* The key's tier, limits or quota changed since this thread last used it:
 * its leases of the key go back to the pools (unused budget, so exact), and
 * the next takes lease under the new values. */
static void relay_limit_key_changed(relay_stream_t *stream) {
    relay_worker_t *worker = stream->worker;
    uint32_t slot = (uint32_t)(stream->key - worker->shared->tables->keys);
    uint32_t generation = atomic_load_explicit(&stream->key->limits_generation, memory_order_acquire);
    if (worker->limit_key_generations[slot] == generation) return;
    worker->limit_key_generations[slot] = generation;
    for (uint32_t kind = 0; kind < RELAY_LIMIT_KINDS; kind++) {
        uint32_t number = relay_limit_shard_number(stream, RELAY_LIMIT_KEY, kind);
        limit_trim(relay_limit_pool(stream, RELAY_LIMIT_KEY, kind), relay_limit_shard_at(worker, number), 0);
    }
}

bool relay_limits_admit(relay_stream_t *stream, const json_chat_request_t *request, relay_limit_refusal_t *refusal) {
    relay_worker_t *worker = stream->worker;
    RW_ASSERT(stream->limits_taken == 0);
    relay_limit_key_changed(stream);
    uint64_t now_ms = (uint64_t)text_wall_ms();
    stream->limit_tokens = relay_limit_estimate(stream, request);
    for (uint32_t subject = RELAY_LIMIT_KEY; subject <= RELAY_LIMIT_ACCOUNT; subject++) {
        uint64_t values[RELAY_LIMIT_KINDS];
        relay_limit_values(stream, subject, values);
        for (uint32_t kind = 0; kind < RELAY_LIMIT_KINDS; kind++) {
            uint64_t limit = values[kind];
            if (limit == 0) continue;
            uint64_t window_ms = relay_limit_window_ms(worker, kind);
            uint32_t window = window_ms != 0 ? limit_window_of(now_ms, window_ms)
                              : kind == RELAY_LIMIT_QUOTA ? limit_pool_window(relay_limit_pool(stream, subject, kind))
                                                          : 0;
            uint64_t cost = relay_limit_counts_tokens(kind) ? stream->limit_tokens : 1;
            uint32_t number = relay_limit_shard_number(stream, subject, kind);
            limit_shard_t *shard = relay_limit_shard_at(worker, number);
            if (!limit_take(relay_limit_pool(stream, subject, kind), shard, limit, &window, cost,
                            worker->config->threads)) {
                relay_limits_give_back(stream, stream->limits_taken);
                relay_limit_describe(worker, refusal, subject, kind, limit, cost, now_ms);
                return false;
            }
            uint32_t bit = subject * RELAY_LIMIT_KINDS + kind;
            stream->limit_windows[bit] = window;
            stream->limits_taken |= (uint16_t)(1u << bit);
            relay_limit_list(worker, number);
        }
    }
    return true;
}

void relay_limits_cancel(relay_stream_t *stream) { relay_limits_give_back(stream, stream->limits_taken); }

void relay_limits_finish(relay_stream_t *stream, uint64_t tokens_used) {
    if (stream->limits_taken == 0) return;
    relay_worker_t *worker = stream->worker;
    for (uint32_t bit = 0; bit < 2 * RELAY_LIMIT_KINDS; bit++) {
        if (!(stream->limits_taken & (1u << bit))) continue;
        uint32_t subject = bit / RELAY_LIMIT_KINDS;
        uint32_t kind = bit % RELAY_LIMIT_KINDS;
        uint32_t number = relay_limit_shard_number(stream, subject, kind);
        limit_shard_t *shard = relay_limit_shard_at(worker, number);
        uint32_t window = stream->limit_windows[bit];
        if (kind == CONFIG_LIMIT_CONCURRENT_REQUESTS) {
            relay_limit_free_slot(stream, subject, shard);
        } else if (relay_limit_counts_tokens(kind)) {
            if (tokens_used < stream->limit_tokens) {
                limit_put_back(shard, window, stream->limit_tokens - tokens_used);
            } else if (tokens_used > stream->limit_tokens) {
                limit_charge(relay_limit_pool(stream, subject, kind), shard, window,
                             tokens_used - stream->limit_tokens);
            }
        }
        relay_limit_list(worker, number);
    }
    stream->limits_taken = 0;
}

void relay_limits_tick(relay_worker_t *worker) {
    uint32_t index = 0;
    while (index < worker->limit_list_count) {
        uint32_t number = worker->limit_list[index];
        limit_shard_t *shard = relay_limit_shard_at(worker, number);
        if (limit_shard_idle(relay_limit_pool_at(worker, number), shard)) {
            index++;
            continue;
        }
        shard->listed = 0;
        worker->limit_list[index] = worker->limit_list[--worker->limit_list_count];
    }
}

/* "6m0s", "59s": a duration as OpenAI's reset headers write it. */
static void relay_limit_duration(text_buffer_t *out, uint32_t seconds) {
    if (seconds >= 3600) {
        text_buffer_u64(out, seconds / 3600);
        text_buffer_append(out, "h", 1);
    }
    if (seconds >= 60) {
        text_buffer_u64(out, seconds / 60 % 60);
        text_buffer_append(out, "m", 1);
    }
    text_buffer_u64(out, seconds % 60);
    text_buffer_append(out, "s", 1);
}

/* "Name: value\r\n" with a number. */
#define RELAY_LIMIT_LINE(out, name, value)                                                 \
    do {                                                                                     \
        text_buffer_append((out), name ": ", sizeof(name ": ") - 1);                         \
        text_buffer_u64((out), (value));                                                     \
        text_buffer_append((out), "\r\n", 2);                                                \
    } while (0)

/* The subject whose limit of `kind` the headers show: the key's when its
 * tier has one, else the account's; false when neither has. */
static bool relay_limit_shown(uint64_t values[2][RELAY_LIMIT_KINDS], config_limit_kind_t kind,
                              uint32_t *subject, uint64_t *limit) {
    for (uint32_t candidate = RELAY_LIMIT_KEY; candidate <= RELAY_LIMIT_ACCOUNT; candidate++) {
        if (values[candidate][kind] != 0) {
            *subject = candidate;
            *limit = values[candidate][kind];
            return true;
        }
    }
    return false;
}

/* Written on every authenticated response, so without printf: appends of
 * names the compiler knows and of digits. */
size_t relay_limits_headers(relay_stream_t *stream, char *out, size_t capacity) {
    RW_ASSERT(capacity >= RELAY_LIMIT_HEADERS_BYTES);
    if (stream->key == NULL) return 0;
    relay_worker_t *worker = stream->worker;
    uint64_t now_ms = (uint64_t)text_wall_ms();
    uint32_t minute = limit_window_of(now_ms, worker->limit_minute_ms);
    uint32_t seconds_left = relay_limit_seconds_left(now_ms, worker->limit_minute_ms);
    text_buffer_t buffer = text_buffer_over(out, RELAY_LIMIT_HEADERS_BYTES - 1); /* and the caller's NUL */
    uint64_t values[2][RELAY_LIMIT_KINDS];
    relay_limit_values(stream, RELAY_LIMIT_KEY, values[RELAY_LIMIT_KEY]);
    relay_limit_values(stream, RELAY_LIMIT_ACCOUNT, values[RELAY_LIMIT_ACCOUNT]);
    for (uint32_t kind = CONFIG_LIMIT_REQUESTS_PER_MINUTE; kind <= CONFIG_LIMIT_TOKENS_PER_MINUTE; kind++) {
        uint32_t subject = 0;
        uint64_t limit = 0;
        if (!relay_limit_shown(values, (config_limit_kind_t)kind, &subject, &limit)) continue;
        uint32_t number = relay_limit_shard_number(stream, subject, kind);
        uint64_t remaining = limit_remaining(relay_limit_pool(stream, subject, kind),
                                             relay_limit_shard_at(worker, number), limit, minute);
        if (kind == CONFIG_LIMIT_REQUESTS_PER_MINUTE) {
            uint64_t minute_start = now_ms / worker->limit_minute_ms;
            if (worker->limit_reset_minute != minute_start) {
                /* Once a minute: "YYYY-MM-DDTHH:MM:00Z", the window's end. */
                char stamp[TEXT_TIME_BYTES];
                size_t stamp_length =
                    text_time_format((int64_t)((minute_start + 1) * worker->limit_minute_ms), stamp);
                RW_ASSERT(stamp_length == 24);
                memcpy(worker->limit_reset_text, stamp, 19);
                memcpy(worker->limit_reset_text + 19, "Z", 2);
                worker->limit_reset_minute = minute_start;
            }
            RELAY_LIMIT_LINE(&buffer, "X-RateLimit-Limit", limit);
            RELAY_LIMIT_LINE(&buffer, "X-RateLimit-Remaining", remaining);
            text_buffer_append(&buffer, "X-RateLimit-Reset: ", 19);
            text_buffer_append(&buffer, worker->limit_reset_text, 20);
            text_buffer_append(&buffer, "\r\n", 2);
            RELAY_LIMIT_LINE(&buffer, "x-ratelimit-limit-requests", limit);
            RELAY_LIMIT_LINE(&buffer, "x-ratelimit-remaining-requests", remaining);
            text_buffer_append(&buffer, "x-ratelimit-reset-requests: ", 28);
        } else {
            RELAY_LIMIT_LINE(&buffer, "x-ratelimit-limit-tokens", limit);
            RELAY_LIMIT_LINE(&buffer, "x-ratelimit-remaining-tokens", remaining);
            text_buffer_append(&buffer, "x-ratelimit-reset-tokens: ", 26);
        }
        relay_limit_duration(&buffer, seconds_left);
        text_buffer_append(&buffer, "\r\n", 2);
    }
    RW_ASSERT(!buffer.overflow && "RELAY_LIMIT_HEADERS_BYTES holds every header");
    return text_buffer_result(&buffer);
}
