/* The wallet ledger: money in integer micro-units, prices, holds and
 * settlement. Pure arithmetic and atomics on the shared account tables; no
 * I/O, no allocation, no floating point. The store makes the results durable;
 * this module only decides them.
 *
 * Money
 *   1 currency unit = 1,000,000 micros. Every amount is an int64_t in micros.
 *   Config prices are "micros per 1,000,000 tokens" (input, cached input,
 *   output) or "micros per call" (request price); a price of 0.25 per 1M
 *   tokens is 250000.
 *
 * Rounding
 *   A cost or hold is the exact sum of tokens × price over all token kinds,
 *   divided by 1,000,000 ONCE at the end and rounded UP (a started micro is
 *   charged), plus the per-call price. Rounding once means a request is never
 *   charged more than one micro above the exact price, whatever its mix of
 *   tokens.
 *
 * Overflow bound
 *   Prices are at most LEDGER_MONEY_MICROS_MAX (10^15 < 2^50) and token counts
 *   are below 2^63, so each tokens × price product is below 2^113 and the sum
 *   of three below 2^115: the products are computed exactly in unsigned
 *   128-bit arithmetic. A result that does not fit in int64_t saturates at
 *   INT64_MAX (no wallet can pay it, so admission refuses it).
 *
 * Holds (the one-atomic-step admission)
 *   ledger_reserve takes `hold` micros out of user->available_micros with a
 *   compare-and-swap that never lets it go below zero, so any number of
 *   threads reserving at once cannot overdraw a wallet. ledger_settle gives
 *   back what the request did not use. Between the two, the hold is invisible
 *   money: available = settled balance - open holds.
 *
 * Key spend caps
 *   key->spend_available_micros is maintained on EVERY reserve and settle for
 *   a key passed in, capped or not, and CHECKED only while
 *   key->spend_cap_micros >= 0. It therefore always equals
 *       max(spend_cap_micros, 0) - spent - open holds on this key,
 *   which lets a cap be set, changed or removed at any time with
 *   ledger_key_set_cap (one atomic add of the difference) without knowing
 *   which holds are open. Whoever loads a key from the store initialises it
 *   with ledger_key_spend_available_initial(cap, spent) (no holds are open at
 *   start: restart resolves them first). */
#ifndef RINGWAY_LEDGER_H
#define RINGWAY_LEDGER_H

#include "ringway/account-t.h"
#include "ringway/config-t.h"
#include "ringway/text-t.h"
#include "ringway/usage-t.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LEDGER_MICROS_PER_UNIT 1000000
#define LEDGER_TOKENS_PER_PRICE_UNIT 1000000 /* prices are per 1M tokens */

/* The largest amount ledger_parse_money accepts: 1,000,000,000 units. Large
 * enough for any price, grant or top-up; small enough that thousands of them
 * add up without overflowing int64_t and that the cost arithmetic above has
 * a proven bound. */
#define LEDGER_MONEY_MICROS_MAX ((int64_t)1000000000 * LEDGER_MICROS_PER_UNIT)

/* ledger_estimate_usage's rule: one token per this many bytes, rounded up. */
#define LEDGER_ESTIMATE_BYTES_PER_TOKEN 4

typedef enum ledger_result {
    LEDGER_OK = 0,
    LEDGER_INSUFFICIENT = 1,    /* the wallet's available balance is below the hold */
    LEDGER_SUSPENDED = 2,       /* the wallet is suspended (status ACCOUNT_USER_SUSPENDED) */
    LEDGER_KEY_CAP_REACHED = 3, /* the key's spend cap has less left than the hold */
} ledger_result_t;

typedef enum ledger_money_result {
    LEDGER_MONEY_OK = 0,
    LEDGER_MONEY_SYNTAX = 1,    /* not DIGITS or DIGITS.DIGITS (no sign, space, exponent) */
    LEDGER_MONEY_PRECISION = 2, /* more than 6 digits after the point */
    LEDGER_MONEY_RANGE = 3,     /* above LEDGER_MONEY_MICROS_MAX */
} ledger_money_result_t;

/* ---- Money text ---------------------------------------------------------- */

/* Parses a non-negative decimal amount of currency units, exactly, into
 * micros: "1" -> 1000000, "0.25" -> 250000, "0.000001" -> 1, "007.50" ->
 * 7500000. The grammar is DIGITS [ "." DIGITS ] with 1..6 digits after the
 * point (more, even zeros, is LEDGER_MONEY_PRECISION); signs, spaces,
 * exponents, "1.", ".5" and the empty string are LEDGER_MONEY_SYNTAX; above
 * LEDGER_MONEY_MICROS_MAX (with any number of leading digits) is
 * LEDGER_MONEY_RANGE. `text` need not be NUL-terminated. *micros is written
 * only on LEDGER_MONEY_OK. */
ledger_money_result_t ledger_parse_money(const char *text, size_t length, int64_t *micros);


/* ---- Prices -------------------------------------------------------------- */

/* The cost in micros of a response with this usage under this model's
 * prices:
 *     ceil((uncached_prompt × input_price + cached × cached_input_price
 *           + completion × output_price) / 1e6) + request_price
 * Unknown counts (-1) are handled so: a missing prompt_tokens or
 * completion_tokens is derived from total_tokens when the other one is known
 * and total is not smaller; otherwise an unknown count is 0. A missing
 * cached_tokens is 0 (all prompt tokens at the input price); cached_tokens
 * above prompt_tokens is clamped to prompt_tokens. Reasoning tokens are part
 * of completion tokens (OpenAI semantics) and never charged on their own.
 * When `billed` is not NULL it receives the counts actually charged: all
 * non-negative, total = prompt + completion (saturated), reasoning as given
 * or 0. Saturates at INT64_MAX (see the overflow bound above). */
int64_t ledger_cost(const config_model_t *prices, const usage_counts_t *usage,
                    usage_counts_t *billed);

/* The hold to reserve at admission:
 *     ceil((prompt_bound_tokens × max(input_price, cached_input_price)
 *           + max_tokens × output_price) / 1e6) + request_price
 * where prompt_bound_tokens bounds the prompt from above (the relay passes
 * the request body's byte count: every token covers at least one byte of it).
 * It is never below ledger_cost of any usage with prompt <= the bound and
 * completion <= max_tokens. Saturates at INT64_MAX. */
int64_t ledger_hold(const config_model_t *prices, uint64_t prompt_bound_tokens,
                    uint64_t max_tokens);

/* The largest max_tokens in [1, model_max_tokens] whose hold the wallet can
 * pay (ledger_hold(prices, prompt_bound_tokens, n) <= available_micros), or
 * 0 when not even one token is affordable (or model_max_tokens is 0). With a
 * zero output price, every n costs the same, so the answer is
 * model_max_tokens or 0. Exact: no rounding loss against ledger_hold (it
 * compares the unsaturated hold, which matters only for a wallet of
 * INT64_MAX). */
uint64_t ledger_affordable_max_tokens(const config_model_t *prices, int64_t available_micros,
                                      uint64_t prompt_bound_tokens, uint64_t model_max_tokens);

/* The usage to bill when the upstream reported none (the record is then
 * flagged `estimated`): one token per LEDGER_ESTIMATE_BYTES_PER_TOKEN bytes,
 * rounded up, for the prompt (pass the request body's bytes: JSON framing
 * makes this an overestimate) and for the completion (pass the bytes of the
 * generated text if known, else the response body's bytes, again an
 * overestimate). cached and reasoning are 0; total is the sum. The charge is
 * still capped by the hold at settlement, so an overestimate can never exceed
 * what admission reserved. */
void ledger_estimate_usage(uint64_t prompt_bytes, uint64_t completion_bytes,
                           usage_counts_t *usage);

/* ---- Holds --------------------------------------------------------------- */

/* Admission, one atomic step per counter. Refuses a suspended wallet
 * (LEDGER_SUSPENDED), then takes `hold_micros` (>= 0) out of
 * user->available_micros with a CAS loop that refuses (LEDGER_INSUFFICIENT)
 * rather than go below zero. With a key, also takes it out of
 * key->spend_available_micros: with a cap (spend_cap_micros >= 0) by a CAS
 * loop that refuses below zero (LEDGER_KEY_CAP_REACHED, after giving the
 * user's part back), without a cap by a plain atomic subtraction.
 *
 * Why the give-back is safe: the user's counter only ever decreases through
 * the checked CAS and the give-back is an atomic add, so no thread ever reads
 * a negative value; in the short window before the give-back the wallet looks
 * poorer than it is, so a concurrent reservation may be refused that would
 * have fitted (conservative), never the other way round.
 *
 * On LEDGER_OK the caller owns the hold and must end it with exactly one
 * ledger_settle or ledger_release with the same user, key (or NULL) and
 * hold_micros. On any other result nothing is held. */
ledger_result_t ledger_reserve(account_user_t *user, account_key_t *key_or_null,
                               int64_t hold_micros);

/* Ends a hold taken by ledger_reserve with the request's cost (>= 0):
 * charges min(cost, hold) and gives the rest of the hold back to the wallet
 * (and to the key's spend counter) with one atomic add each. *charged_micros
 * is what was charged; *capped is true when the cost exceeded the hold (the
 * difference is not charged and the usage record says so). Never fails. */
void ledger_settle(account_user_t *user, account_key_t *key_or_null, int64_t hold_micros,
                   int64_t cost_micros, int64_t *charged_micros, bool *capped);

/* Ends a hold with nothing charged (an upstream failure before any output,
 * a request refused after admission): ledger_settle with cost 0. */
void ledger_release(account_user_t *user, account_key_t *key_or_null, int64_t hold_micros);

/* ---- Key spend caps ------------------------------------------------------ */

/* The spend_available_micros a key starts with when loaded from the store
 * with no open holds: max(cap, 0) - spent. `cap_micros` is -1 for none. */
int64_t ledger_key_spend_available_initial(int64_t cap_micros, int64_t spent_micros);

/* Sets, changes or removes (cap_micros = -1) a key's spend cap while
 * requests may be in flight: swaps the cap and adds the difference of
 * max(cap, 0) to spend_available_micros, so spent and open holds stay
 * accounted for exactly. A reservation racing with the change may be checked
 * against either cap. Returns the previous cap. */
int64_t ledger_key_set_cap(account_key_t *key, int64_t cap_micros);

#endif
