/* Routing of one attempt: which of the model's routes, and which key of its
 * upstream, an attempt takes; and what its outcome says about them.
 *
 * A route is a candidate when it was not tried yet by this request, its
 * upstream's breaker lets a request go, and its upstream has a key that
 * was not tried yet, is in rotation (not refused with 401/403) and whose
 * breaker lets a request go (or the upstream has no keys). Among the
 * candidates of the highest priority the choice is the smooth weighted
 * round-robin (as in nginx's upstream module): every candidate's current
 * weight grows by its weight, the largest is chosen and loses the total.
 * It spreads requests exactly by weight over any run, interleaved, with
 * no random numbers, so a test or an operator can predict it; with two
 * threads each spreads its own requests the same way. Keys of an upstream
 * are used in turn.
 *
 * Session affinity (a model's `affinity`): a request with a user (or the
 * configured header) takes, among the same candidates, the one with the
 * highest score of a hash of that value and the route (rendezvous hashing,
 * scaled by weight), and the same way the key: the same user lands on the
 * same route and key while they stay healthy, so the upstream's prompt
 * cache keeps hitting; when one fails, only its users move, to their next
 * best, and come back once it is healthy.
 *
 * The breakers are per thread, like the rest of a worker: one thread's
 * breaker opens on what that thread saw. A key refused with 401/403 leaves
 * rotation for every thread (health_t) for [routing]
 * key_refused_retry_ms; then one request tries it again, and a success
 * brings it back. Both are logged. */
#include "relay-internal.h"

#include <stdio.h>

void relay_route_init(relay_worker_t *worker) {
    const config_t *config = worker->config;
    worker->breaker_policy = (breaker_policy_t){
        .failures_max = config->breaker_failures,
        .error_percent = config->breaker_error_percent,
        .window_ms = config->breaker_window_ms,
        .window_requests_min = config->breaker_window_requests_min,
        .open_ms = config->breaker_open_ms,
    };
    breaker_policy_check(&worker->breaker_policy);
    for (uint32_t upstream = 0; upstream < CONFIG_UPSTREAMS_MAX; upstream++) {
        relay_upstream_health_t *health = &worker->health[upstream];
        breaker_init(&health->breaker);
        for (uint32_t key = 0; key < CONFIG_UPSTREAM_KEYS_MAX; key++) breaker_init(&health->key_breakers[key]);
        health->key_next = 0;
    }
}

static void relay_route_publish_one(health_breaker_view_t *view, const breaker_t *breaker) {
    atomic_store_explicit(&view->state, (uint32_t)breaker->state, memory_order_relaxed);
    atomic_store_explicit(&view->consecutive_failures, breaker->consecutive_failures, memory_order_relaxed);
    atomic_store_explicit(&view->times_opened, breaker->times_opened, memory_order_relaxed);
}

/* This thread's breakers of `upstream` (and of its key `key`, unless
 * RELAY_KEY_NONE) for the admin API. */
static void relay_route_publish(relay_worker_t *worker, uint32_t upstream, uint8_t key) {
    health_t *shared = worker->shared->health;
    RW_ASSERT(worker->index < shared->thread_count);
    health_thread_view_t *view = &shared->threads[worker->index];
    const relay_upstream_health_t *health = &worker->health[upstream];
    relay_route_publish_one(&view->upstreams[upstream], &health->breaker);
    if (key != RELAY_KEY_NONE) relay_route_publish_one(&view->keys[upstream][key], &health->key_breakers[key]);
}

/* The affinity of this request: the user's (or the header's) bytes, hashed
 * (FNV-1a, then mixed). */
void relay_route_set_affinity(relay_stream_t *stream, const uint8_t *bytes, size_t length) {
    uint64_t hash = 0xcbf29ce484222325ull;
    for (size_t index = 0; index < length; index++) hash = (hash ^ bytes[index]) * 0x100000001b3ull;
    stream->affinity_hash = rw_mix64(hash);
    stream->has_affinity = true;
}

/* A candidate's rendezvous score for this request: its hash's top 32 bits
 * times its weight. */
static uint64_t relay_route_score(const relay_stream_t *stream, uint64_t salt, uint32_t weight) {
    return (rw_mix64(stream->affinity_hash ^ rw_mix64(salt + 1)) >> 32) * weight;
}

/* Whether a refused key is still out of rotation now. */
static bool relay_route_key_refused(const relay_worker_t *worker, uint32_t upstream, uint32_t key) {
    const health_t *health = worker->shared->health;
    if (atomic_load_explicit(&health->key_refused[upstream][key], memory_order_relaxed) == 0) return false;
    uint64_t until_ms = atomic_load_explicit(&health->key_refused_until_ms[upstream][key], memory_order_relaxed);
    return loop_now_ms(&worker->loop) < until_ms;
}

/* The key the route's upstream would use next, RELAY_KEY_NONE when it has
 * none; false when it has keys but none may be used now. */
static bool relay_route_pick_key(const relay_stream_t *stream, uint32_t route_index, uint8_t *key_index) {
    const relay_worker_t *worker = stream->worker;
    uint32_t upstream = stream->model->routes[route_index].upstream_index;
    const config_upstream_t *configured = &worker->config->upstreams[upstream];
    const relay_upstream_health_t *health = &worker->health[upstream];
    uint32_t count = configured->api_key_count;
    if (count == 0) {
        *key_index = RELAY_KEY_NONE;
        return true;
    }
    RW_ASSERT(count <= CONFIG_UPSTREAM_KEYS_MAX);
    uint64_t now_ms = loop_now_ms(&worker->loop);
    bool found = false;
    uint64_t best_score = 0;
    for (uint32_t turn = 0; turn < count; turn++) {
        uint32_t key = (health->key_next + turn) % count;
        if (stream->keys_tried[route_index] & (1u << key)) continue;
        if (relay_route_key_refused(worker, upstream, key)) continue;
        if (!breaker_available(&health->key_breakers[key], &worker->breaker_policy, now_ms)) continue;
        if (!stream->has_affinity) {
            *key_index = (uint8_t)key;
            return true;
        }
        uint64_t score = relay_route_score(stream, ((uint64_t)upstream << 8 | key) ^ 0x6b6579, 1);
        if (!found || score > best_score) {
            best_score = score;
            *key_index = (uint8_t)key;
        }
        found = true;
    }
    return found;
}

/* Whether a route is a candidate, with the key it would use: the choice
 * keeps that key, since another thread may refuse keys in between. */
static bool relay_route_is_candidate(const relay_stream_t *stream, uint32_t route_index, uint8_t *key) {
    if (stream->routes_tried & (1u << route_index)) return false;
    const relay_worker_t *worker = stream->worker;
    uint32_t upstream = stream->model->routes[route_index].upstream_index;
    if (!breaker_available(&worker->health[upstream].breaker, &worker->breaker_policy, loop_now_ms(&worker->loop))) {
        return false;
    }
    return relay_route_pick_key(stream, route_index, key);
}

/* Chooses the next attempt's route and key and takes them (their breakers'
 * probes included): stream->route, route_index, key_index and pool are
 * set. False when no route is a candidate: nothing changed. */
bool relay_route_choose(relay_stream_t *stream) {
    RW_ASSERT(!stream->attempt_pending);
    const router_model_t *model = stream->model;
    relay_worker_t *worker = stream->worker;
    RW_ASSERT(model->route_count >= 1 && model->route_count <= CONFIG_ROUTES_MAX);
    bool candidate[CONFIG_ROUTES_MAX] = {false};
    uint8_t keys[CONFIG_ROUTES_MAX] = {0};
    bool any = false;
    uint32_t best_priority = 0;
    for (uint32_t index = 0; index < model->route_count; index++) {
        candidate[index] = relay_route_is_candidate(stream, index, &keys[index]);
        if (!candidate[index]) continue;
        uint32_t priority = model->routes[index].priority;
        if (!any || priority > best_priority) best_priority = priority;
        any = true;
    }
    if (!any) return false;
    uint32_t chosen = CONFIG_ROUTES_MAX;
    if (stream->has_affinity) {
        uint64_t best_score = 0;
        for (uint32_t index = 0; index < model->route_count; index++) {
            if (!candidate[index] || model->routes[index].priority != best_priority) continue;
            uint64_t score = relay_route_score(stream, index, model->routes[index].weight);
            if (chosen == CONFIG_ROUTES_MAX || score > best_score) {
                best_score = score;
                chosen = index;
            }
        }
    } else {
        int32_t *current = worker->route_weights[model->index];
        int32_t total = 0;
        for (uint32_t index = 0; index < model->route_count; index++) {
            if (!candidate[index] || model->routes[index].priority != best_priority) continue;
            int32_t weight = (int32_t)model->routes[index].weight;
            current[index] += weight;
            total += weight;
            if (chosen == CONFIG_ROUTES_MAX || current[index] > current[chosen]) chosen = index;
        }
        RW_ASSERT(total > 0);
        current[chosen] -= total;
    }
    RW_ASSERT(chosen < model->route_count);

    const router_route_t *route = &model->routes[chosen];
    uint32_t upstream = route->upstream_index;
    relay_upstream_health_t *health = &worker->health[upstream];
    uint64_t now_ms = loop_now_ms(&worker->loop);
    uint8_t key = keys[chosen];
    stream->route = route;
    stream->route_index = (uint8_t)chosen;
    stream->key_index = key;
    stream->pool = &worker->pools[upstream];
    stream->upstream_probe = breaker_take(&health->breaker, &worker->breaker_policy, now_ms);
    stream->key_probe = false;
    if (key != RELAY_KEY_NONE) {
        stream->key_probe = breaker_take(&health->key_breakers[key], &worker->breaker_policy, now_ms);
        if (!stream->has_affinity) health->key_next = (key + 1u) % worker->config->upstreams[upstream].api_key_count;
    }
    relay_route_publish(worker, upstream, key);
    stream->attempt_pending = true;
    stream->attempts++;
    if (stream->attempts == 1) stream->first_attempt_ms = now_ms;
    return true;
}

static void relay_route_refuse_key(relay_stream_t *stream, uint16_t status) {
    relay_worker_t *worker = stream->worker;
    health_t *health = worker->shared->health;
    uint32_t upstream = stream->route->upstream_index;
    uint32_t key = stream->key_index;
    uint32_t retry_ms = worker->config->key_refused_retry_ms;
    uint64_t until_ms = retry_ms == 0 ? UINT64_MAX : loop_now_ms(&worker->loop) + retry_ms;
    atomic_store_explicit(&health->key_refused_until_ms[upstream][key], until_ms, memory_order_relaxed);
    uint16_t was = atomic_exchange_explicit(&health->key_refused[upstream][key], status, memory_order_relaxed);
    if (was != 0) return; /* refused again after its wait: logged when it first left */
    if (retry_ms == 0) {
        fprintf(stderr, "ringway: the upstream '%s' refused its API key #%u with HTTP %u; the key leaves rotation\n",
                worker->config->upstreams[upstream].name, key + 1u, (unsigned)status);
    } else {
        fprintf(stderr,
                "ringway: the upstream '%s' refused its API key #%u with HTTP %u; the key leaves rotation and is "
                "tried again in %u ms\n",
                worker->config->upstreams[upstream].name, key + 1u, (unsigned)status, (unsigned)retry_ms);
    }
}

/* A key that had been refused answered: it is back in rotation. */
static void relay_route_key_answered(relay_stream_t *stream) {
    relay_worker_t *worker = stream->worker;
    uint32_t upstream = stream->route->upstream_index;
    _Atomic uint16_t *refused = &worker->shared->health->key_refused[upstream][stream->key_index];
    if (atomic_load_explicit(refused, memory_order_relaxed) == 0) return;
    if (atomic_exchange_explicit(refused, 0, memory_order_relaxed) == 0) return;
    fprintf(stderr, "ringway: the upstream '%s' took its API key #%u again; the key is back in rotation\n",
            worker->config->upstreams[upstream].name, (unsigned)stream->key_index + 1u);
}

/* The current attempt ended with `outcome`: its breakers learn it, and what
 * it rules out for the next attempt of this request is marked tried. Does
 * nothing when the outcome was reported already. */
void relay_route_report(relay_stream_t *stream, relay_outcome_t outcome) {
    if (!stream->attempt_pending) return;
    stream->attempt_pending = false;
    relay_worker_t *worker = stream->worker;
    const breaker_policy_t *policy = &worker->breaker_policy;
    uint32_t upstream = stream->route->upstream_index;
    relay_upstream_health_t *health = &worker->health[upstream];
    bool has_key = stream->key_index != RELAY_KEY_NONE;
    breaker_t *key_breaker = has_key ? &health->key_breakers[stream->key_index] : NULL;
    uint64_t now_ms = loop_now_ms(&worker->loop);
    uint8_t route_bit = (uint8_t)(1u << stream->route_index);
    switch (outcome) {
    case RELAY_OUTCOME_SUCCESS:
        breaker_success(&health->breaker, policy, now_ms, stream->upstream_probe);
        if (has_key) {
            breaker_success(key_breaker, policy, now_ms, stream->key_probe);
            relay_route_key_answered(stream);
        }
        break;
    case RELAY_OUTCOME_UPSTREAM_FAILED:
        breaker_failure(&health->breaker, policy, now_ms, stream->upstream_probe);
        if (has_key) breaker_neutral(key_breaker, stream->key_probe);
        stream->routes_tried |= route_bit;
        break;
    case RELAY_OUTCOME_KEY_LIMITED:
        if (has_key) {
            /* The upstream answered: it is up, whatever the key's quota. */
            breaker_success(&health->breaker, policy, now_ms, stream->upstream_probe);
            breaker_failure(key_breaker, policy, now_ms, stream->key_probe);
            stream->keys_tried[stream->route_index] |= (uint8_t)(1u << stream->key_index);
        } else {
            breaker_failure(&health->breaker, policy, now_ms, stream->upstream_probe);
            stream->routes_tried |= route_bit;
        }
        break;
    case RELAY_OUTCOME_KEY_REFUSED:
        breaker_neutral(&health->breaker, stream->upstream_probe);
        if (has_key) {
            breaker_neutral(key_breaker, stream->key_probe);
            relay_route_refuse_key(stream, stream->response.status);
            stream->keys_tried[stream->route_index] |= (uint8_t)(1u << stream->key_index);
        } else {
            stream->routes_tried |= route_bit;
        }
        break;
    case RELAY_OUTCOME_NEUTRAL:
        breaker_neutral(&health->breaker, stream->upstream_probe);
        if (has_key) breaker_neutral(key_breaker, stream->key_probe);
        break;
    }
    stream->upstream_probe = false;
    stream->key_probe = false;
    relay_route_publish(worker, upstream, stream->key_index);
}

/* Seconds until one of the model's routes may take a request again, for
 * the Retry-After of a 503 when none may now: at least 1. */
uint32_t relay_route_retry_after_s(const relay_stream_t *stream) {
    const relay_worker_t *worker = stream->worker;
    const router_model_t *model = stream->model;
    uint64_t now_ms = loop_now_ms(&worker->loop);
    uint64_t soonest_ms = UINT64_MAX;
    for (uint32_t index = 0; index < model->route_count; index++) {
        uint32_t upstream = model->routes[index].upstream_index;
        const relay_upstream_health_t *health = &worker->health[upstream];
        uint64_t wait_ms = breaker_wait_ms(&health->breaker, &worker->breaker_policy, now_ms);
        uint32_t count = worker->config->upstreams[upstream].api_key_count;
        if (count > 0) {
            uint64_t key_wait_ms = UINT64_MAX;
            for (uint32_t key = 0; key < count; key++) {
                if (relay_route_key_refused(worker, upstream, key)) continue;
                key_wait_ms = RW_MIN(key_wait_ms, breaker_wait_ms(&health->key_breakers[key], &worker->breaker_policy,
                                                                  now_ms));
            }
            if (key_wait_ms == UINT64_MAX) continue; /* every key refused: no waiting helps */
            wait_ms = RW_MAX(wait_ms, key_wait_ms);
        }
        soonest_ms = RW_MIN(soonest_ms, wait_ms);
    }
    if (soonest_ms == UINT64_MAX) return 0;
    return (uint32_t)RW_MAX(1u, (soonest_ms + 999) / 1000);
}

/* The API key of the current attempt, NULL for none. */
const char *relay_route_key(const relay_stream_t *stream) {
    if (stream->key_index == RELAY_KEY_NONE) return NULL;
    const config_upstream_t *upstream = stream->pool->upstream;
    RW_ASSERT(stream->key_index < upstream->api_key_count);
    return upstream->api_keys[stream->key_index];
}
