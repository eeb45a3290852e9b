/* Rate-limit budgets: exact across threads, no lock, no shared write per
 * request.
 *
 * The algorithm
 * -------------
 * Every limit of every subject (an API key's requests per minute, an
 * account's tokens per day, a key's concurrent requests ...) has one pool:
 * a 64-bit atomic word holding a window number and the budget `granted`
 * out of that window so far. Each relay thread has, per pool, a shard only
 * it touches: the window it belongs to and a `lease`, budget granted to the
 * thread and not used yet.
 *
 *   take(cost):   from the shard's lease when it covers the cost (no shared
 *                 write at all); else one compare-and-swap on the pool
 *                 grants need + (left - need) / (2 x threads), where
 *                 left = limit - granted and need = cost - lease, and
 *                 refuses when need > left.
 *   put back:     a request that used less than it took (its token
 *                 estimate was high) or a concurrency slot that ended
 *                 returns the difference to its own shard's lease.
 *   idle:         on the worker's tick, a shard unused since the previous
 *                 tick returns its lease to the pool (granted -= lease, in
 *                 the same window only), so a thread whose clients went
 *                 quiet does not sit on budget another thread could use.
 *   charge:       a request that used more than it took adds the excess to
 *                 the pool even past the limit, so a window's count
 *                 converges to what was really used.
 *
 * A new window starts at the first take whose window number is later than
 * the pool's: that compare-and-swap replaces the word with (new window,
 * grant), and every lease of the old window is void (a shard resets itself
 * when it sees a later window). Threads whose clocks straddle the boundary
 * agree by the pool: a take that finds the pool already in a later window
 * counts in that window. Windows are fixed and aligned to the clock
 * (minutes, UTC days); a pool that never rolls over (concurrency, a total
 * quota) stays in window 0.
 *
 * Why it is exact
 * ---------------
 * Within one window, `granted` only grows by grants that keep it at or
 * below the limit (the check and the add are one compare-and-swap), and
 * only shrinks by returning leases that were granted in that window and
 * not used. Every admitted request is paid from a lease of its own window.
 * So at every moment, the budget used in a window plus the leases still out
 * equals `granted` (less what charges added), which never exceeds the
 * limit: no schedule of threads can admit more than the limit in a window.
 * For concurrency the same sum is the slots in use plus the free slots
 * leased, so requests in flight never exceed the limit.
 *
 * Why it admits nearly all of the limit
 * -------------------------------------
 * A refusal happens only when need > left, that is when the budget not yet
 * granted is smaller than the request while other threads may hold unused
 * leases. A lease is at most 1 / (2 x threads) of what was left when it was
 * taken, so it shrinks as the window fills: when left is small every lease
 * is about one request. Leases of threads that stop using them come back on
 * the next tick. A client that sends faster than its limit over all
 * threads uses every lease it is granted, so only the last few requests'
 * worth can be out when the window ends (tests/unit/test_limit.c measures
 * both the bound and the share admitted). */
#include "ringway/limit.h"

#define LIMIT_GRANTED_MASK ((((uint64_t)1) << LIMIT_GRANTED_BITS) - 1)

static uint64_t limit_word(uint32_t window, uint64_t granted) {
    RW_ASSERT(granted <= LIMIT_GRANTED_MASK);
    return ((uint64_t)(window & LIMIT_WINDOW_MASK) << LIMIT_GRANTED_BITS) | granted;
}

static uint32_t limit_word_window(uint64_t word) { return (uint32_t)(word >> LIMIT_GRANTED_BITS); }

static uint64_t limit_word_granted(uint64_t word) { return word & LIMIT_GRANTED_MASK; }

/* Whether window `a` is after window `b`. Windows of a windowed limit are
 * numbered 1 to LIMIT_WINDOW_MASK and wrap (the nearer half ahead counts
 * as later); 0 is a pool or shard never used, or a limit without windows:
 * never later than anything, and every other window is later than it. A
 * pool without windows counts its restarts (limit_pool_restart) in the
 * same field, 0 then 1, 2, ... */
static bool limit_window_later(uint32_t a, uint32_t b) {
    if (a == 0) return false;
    if (b == 0) return true;
    uint32_t delta = (a + LIMIT_WINDOW_MASK - b) % LIMIT_WINDOW_MASK;
    return delta != 0 && delta <= LIMIT_WINDOW_MASK / 2;
}

uint32_t limit_window_of(uint64_t now_ms, uint64_t window_ms) {
    RW_ASSERT(window_ms > 0);
    return (uint32_t)((now_ms / window_ms) % LIMIT_WINDOW_MASK) + 1;
}

bool limit_take(limit_pool_t *pool, limit_shard_t *shard, uint64_t limit, uint32_t *window, uint64_t cost,
                uint32_t threads) {
    RW_ASSERT(cost >= 1 && threads >= 1 && limit <= LIMIT_VALUE_MAX);
    uint32_t wanted = *window & LIMIT_WINDOW_MASK;
    if (limit_window_later(shard->window, wanted)) wanted = shard->window;
    if (shard->window != wanted) {
        shard->window = wanted;
        shard->lease = 0;
    }
    if (shard->lease >= cost) {
        shard->lease -= cost;
        if (shard->used < UINT16_MAX) shard->used++;
        *window = wanted;
        return true;
    }
    uint64_t old = atomic_load_explicit(&pool->word, memory_order_relaxed);
    for (;;) {
        uint32_t pool_window = limit_word_window(old);
        uint32_t target = wanted;
        uint64_t granted = limit_word_granted(old);
        if (pool_window != wanted) {
            if (limit_window_later(pool_window, wanted)) {
                target = pool_window; /* our clock is behind the pool's */
            } else {
                granted = 0; /* the pool's window is over: ours starts empty */
            }
        }
        uint64_t lease = target == shard->window ? shard->lease : 0;
        uint64_t need = cost - lease;
        uint64_t left = limit > granted ? limit - granted : 0;
        if (need > left) return false;
        uint64_t grant = need + (left - need) / (2u * (uint64_t)threads);
        RW_ASSERT(grant >= need && granted + grant <= limit);
        if (atomic_compare_exchange_weak_explicit(&pool->word, &old, limit_word(target, granted + grant),
                                                  memory_order_relaxed, memory_order_relaxed)) {
            shard->window = target;
            shard->lease = lease + grant - cost;
            if (shard->used < UINT16_MAX) shard->used++;
            *window = target;
            return true;
        }
    }
}

void limit_put_back(limit_shard_t *shard, uint32_t window, uint64_t amount) {
    if (shard->window != (window & LIMIT_WINDOW_MASK)) return;
    shard->lease += amount;
}

void limit_charge(limit_pool_t *pool, limit_shard_t *shard, uint32_t window, uint64_t amount) {
    window &= LIMIT_WINDOW_MASK;
    if (shard->window == window) {
        uint64_t from_lease = RW_MIN(shard->lease, amount);
        shard->lease -= from_lease;
        amount -= from_lease;
    }
    if (amount == 0) return;
    uint64_t old = atomic_load_explicit(&pool->word, memory_order_relaxed);
    for (;;) {
        if (limit_word_window(old) != window) return; /* that window is over */
        uint64_t granted = limit_word_granted(old);
        uint64_t charged = granted + RW_MIN(amount, LIMIT_GRANTED_MASK - granted);
        if (atomic_compare_exchange_weak_explicit(&pool->word, &old, limit_word(window, charged),
                                                  memory_order_relaxed, memory_order_relaxed)) {
            return;
        }
    }
}

/* Returns `amount` of the shard's lease (already taken off it) to the pool,
 * in the shard's window only. */
static void limit_return(limit_pool_t *pool, const limit_shard_t *shard, uint64_t amount) {
    uint64_t old = atomic_load_explicit(&pool->word, memory_order_relaxed);
    for (;;) {
        if (limit_word_window(old) != shard->window) return; /* the lease died with its window */
        uint64_t granted = limit_word_granted(old);
        RW_ASSERT(granted >= amount && "a lease is part of its window's granted budget");
        if (atomic_compare_exchange_weak_explicit(&pool->word, &old, limit_word(shard->window, granted - amount),
                                                  memory_order_relaxed, memory_order_relaxed)) {
            return;
        }
    }
}

void limit_trim(limit_pool_t *pool, limit_shard_t *shard, uint64_t keep) {
    if (shard->lease <= keep) return;
    uint64_t amount = shard->lease - keep;
    shard->lease = keep;
    limit_return(pool, shard, amount);
}

bool limit_shard_idle(limit_pool_t *pool, limit_shard_t *shard) {
    if (shard->used > 0) {
        shard->used = 0;
        return shard->lease > 0;
    }
    limit_trim(pool, shard, 0);
    return false;
}

uint64_t limit_remaining(const limit_pool_t *pool, const limit_shard_t *shard, uint64_t limit, uint32_t window) {
    window &= LIMIT_WINDOW_MASK;
    uint64_t word = atomic_load_explicit(&((limit_pool_t *)pool)->word, memory_order_relaxed);
    uint64_t granted = limit_word_window(word) == window || limit_window_later(limit_word_window(word), window)
                           ? limit_word_granted(word)
                           : 0;
    uint64_t left = limit > granted ? limit - granted : 0;
    if (shard->window == window) left += shard->lease;
    return RW_MIN(left, limit);
}

uint32_t limit_pool_window(const limit_pool_t *pool) {
    return limit_word_window(atomic_load_explicit(&((limit_pool_t *)pool)->word, memory_order_relaxed));
}

void limit_pool_restart(limit_pool_t *pool, uint64_t granted) {
    uint64_t old = atomic_load_explicit(&pool->word, memory_order_relaxed);
    for (;;) {
        uint32_t next = (limit_word_window(old) % LIMIT_WINDOW_MASK) + 1;
        uint64_t counted = RW_MAX(RW_MIN(granted, LIMIT_GRANTED_MASK), limit_word_granted(old));
        if (atomic_compare_exchange_weak_explicit(&pool->word, &old, limit_word(next, counted),
                                                  memory_order_relaxed, memory_order_relaxed)) {
            return;
        }
    }
}

void limit_pool_set(limit_pool_t *pool, uint64_t granted) {
    atomic_store_explicit(&pool->word, limit_word(0, RW_MIN(granted, LIMIT_GRANTED_MASK)), memory_order_relaxed);
}
