/* Rate-limit budgets shared by every relay thread without a lock: one
 * global pool per (subject, limit) and, on each thread, a shard holding the
 * part of the pool that thread leased. The algorithm and why it is exact are
 * in src/limit/limit.c. Pure: no allocation, no system call, no clock (the
 * caller passes the window number). */
#ifndef RINGWAY_LIMIT_H
#define RINGWAY_LIMIT_H

#include "ringway/common.h"

#include <stdatomic.h>

enum {
    /* A pool word: the window number (low LIMIT_WINDOW_BITS bits of it)
     * above the budget granted in that window. */
    LIMIT_WINDOW_BITS = 24,
    LIMIT_GRANTED_BITS = 40,
};

/* The largest limit a pool can count; a configured value above it is
 * refused by the config (it is as good as unlimited). */
#define LIMIT_VALUE_MAX ((((uint64_t)1) << LIMIT_GRANTED_BITS) - 1)
#define LIMIT_WINDOW_MASK ((((uint32_t)1) << LIMIT_WINDOW_BITS) - 1)

/* The global side: written only when a thread leases or gives back budget,
 * never per request. Zero is a valid empty pool (window 0, nothing granted). */
typedef struct limit_pool {
    _Atomic uint64_t word;
} limit_pool_t;

/* One thread's side of one pool, touched by that thread alone. */
typedef struct limit_shard {
    uint32_t window;   /* the window `lease` belongs to */
    uint16_t used;     /* takes since the last limit_shard_idle (saturating) */
    uint16_t listed;   /* the owner's: on its list of shards to visit on ticks */
    uint64_t lease;    /* granted to this thread and not used yet */
} limit_shard_t;

/* The window number of `now` (ms) for windows of `window_ms`, as a pool
 * keeps it: 1 to LIMIT_WINDOW_MASK, wrapping. Pools that never roll over
 * (concurrency, a total quota) use 0, which is also what a fresh pool or
 * shard holds. */
uint32_t limit_window_of(uint64_t now_ms, uint64_t window_ms);

/* Takes `cost` (>= 1) from the budget of `limit` in `window`: from the
 * shard's lease, else by leasing more from the pool. `threads` (>= 1) is
 * how many shards share the pool: a lease takes what is needed plus
 * 1 / (2 x threads) of what is left. Returns false, with nothing taken,
 * when the window's budget cannot cover `cost`. When the pool is already
 * in a later window (another thread's clock passed the boundary first)
 * the request counts in that window: *window is set to it. */
bool limit_take(limit_pool_t *pool, limit_shard_t *shard, uint64_t limit, uint32_t *window, uint64_t cost,
                uint32_t threads);

/* Gives `amount` taken in `window` back to the shard (a request that used
 * less than it took, or a concurrency slot that ended). Nothing when the
 * shard has moved to another window: that budget is gone with its window. */
void limit_put_back(limit_shard_t *shard, uint32_t window, uint64_t amount);

/* Charges `amount` more in `window` than was taken (a request that used
 * more tokens than its estimate): from the shard's lease, the rest added to
 * the pool even past the limit (saturating), so later requests of the
 * window are refused. Nothing when the pool's window has ended. */
void limit_charge(limit_pool_t *pool, limit_shard_t *shard, uint32_t window, uint64_t amount);

/* Gives the shard's lease beyond `keep` back to the pool now (when the
 * pool is still in the shard's window; else the lease is void anyway). */
void limit_trim(limit_pool_t *pool, limit_shard_t *shard, uint64_t keep);

/* Called on a periodic tick: when the shard was not used since the
 * previous call, its lease goes back to the pool (when the pool is still in
 * its window) and the shard is empty. Returns true when the shard holds a
 * lease afterwards (the caller keeps it on its list of shards to visit). */
bool limit_shard_idle(limit_pool_t *pool, limit_shard_t *shard);

/* What `window` has left for a request on this thread: the limit minus the
 * pool's granted budget plus this shard's lease (other threads' unused
 * leases count as used), never below 0. */
uint64_t limit_remaining(const limit_pool_t *pool, const limit_shard_t *shard, uint64_t limit, uint32_t window);

/* Sets a pool that never rolls over (window 0) to `granted`: the start's
 * load of a total quota already used. Before any thread uses the pool. */
void limit_pool_set(limit_pool_t *pool, uint64_t granted);

/* Starts a pool without windows afresh while threads use it (a quota that
 * changed): its window number moves on, so every lease of before is void,
 * and takes must pass limit_pool_window as their window. It counts
 * `granted` or what it had granted, the larger. */
void limit_pool_restart(limit_pool_t *pool, uint64_t granted);
uint32_t limit_pool_window(const limit_pool_t *pool);

#endif
