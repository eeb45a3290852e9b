/* The wallet ledger: exact money parsing, prices in integer micro-units,
 * holds and settlement on the shared account tables (see ledger.h for the
 * rules: rounding once and up, the overflow bound, the key spend counter).
 *
 * Products of tokens and prices are computed in unsigned 128-bit integers
 * (a GCC/Clang extension available on every target Ringway builds for), so
 * no intermediate can overflow; only final results are saturated into
 * int64_t. The counters are changed only by atomic read-modify-write
 * operations; relaxed ordering is enough because each counter is its own
 * invariant (a single atomic has one total modification order) and no other
 * memory is published through it. */
#include "ringway/ledger.h"

#include "ringway/common.h"
#include "ringway/text.h"

#include <stdatomic.h>

__extension__ typedef unsigned __int128 ledger_wide_t;

_Static_assert(LEDGER_MONEY_MICROS_MAX < ((int64_t)1 << 50), "the overflow bound in ledger.h");

static bool ledger_is_digit(char c) {
    return c >= '0' && c <= '9';
}

static int64_t ledger_max_int64(int64_t a, int64_t b) {
    return a > b ? a : b;
}

/* Prices come from a validated configuration; anything else is a bug. */
static void ledger_check_prices(const config_model_t *prices) {
    RW_ASSERT(prices != NULL);
    RW_ASSERT(prices->input_price_micros >= 0 && prices->input_price_micros <= LEDGER_MONEY_MICROS_MAX);
    RW_ASSERT(prices->cached_input_price_micros >= 0 &&
              prices->cached_input_price_micros <= LEDGER_MONEY_MICROS_MAX);
    RW_ASSERT(prices->output_price_micros >= 0 &&
              prices->output_price_micros <= LEDGER_MONEY_MICROS_MAX);
    RW_ASSERT(prices->request_price_micros >= 0 &&
              prices->request_price_micros <= LEDGER_MONEY_MICROS_MAX);
}

/* ceil(numerator / 1e6) + request_price, saturated at INT64_MAX. The
 * numerator is below 2^116 by the bound in ledger.h, so adding 999999
 * cannot wrap. */
static int64_t ledger_round_up(ledger_wide_t numerator, int64_t request_price_micros) {
    RW_ASSERT(numerator >> 120 == 0);
    RW_ASSERT(request_price_micros >= 0);
    ledger_wide_t rounded = (numerator + (LEDGER_TOKENS_PER_PRICE_UNIT - 1)) /
                            LEDGER_TOKENS_PER_PRICE_UNIT;
    ledger_wide_t total = rounded + (ledger_wide_t)request_price_micros;
    return total > (ledger_wide_t)INT64_MAX ? INT64_MAX : (int64_t)total;
}

/* ---------------------------------------------------------------------- */
/* Money text                                                              */

ledger_money_result_t ledger_parse_money(const char *text, size_t length, int64_t *micros) {
    RW_ASSERT(text != NULL || length == 0);
    RW_ASSERT(micros != NULL);
    const uint64_t units_max = (uint64_t)(LEDGER_MONEY_MICROS_MAX / LEDGER_MICROS_PER_UNIT);

    /* Whole units: stop accumulating once above the maximum (the digits
     * must still all be digits for the text to be a number at all). */
    size_t position = 0;
    uint64_t units = 0;
    bool too_large = false;
    while (position < length && ledger_is_digit(text[position])) {
        if (!too_large) {
            units = units * 10 + (uint64_t)(text[position] - '0');
            too_large = units > units_max;
        }
        position++;
    }
    if (position == 0) {
        return LEDGER_MONEY_SYNTAX;
    }

    uint64_t fraction = 0;
    size_t fraction_digits = 0;
    if (position < length) {
        if (text[position] != '.') {
            return LEDGER_MONEY_SYNTAX;
        }
        position++;
        while (position < length && ledger_is_digit(text[position])) {
            if (fraction_digits < 6) {
                fraction = fraction * 10 + (uint64_t)(text[position] - '0');
            }
            fraction_digits++;
            position++;
        }
        if (position < length || fraction_digits == 0) {
            return LEDGER_MONEY_SYNTAX;
        }
        if (fraction_digits > 6) {
            return LEDGER_MONEY_PRECISION;
        }
    }
    if (too_large) {
        return LEDGER_MONEY_RANGE;
    }
    for (size_t i = fraction_digits; i < 6; i++) {
        fraction *= 10;
    }
    RW_ASSERT(fraction < (uint64_t)LEDGER_MICROS_PER_UNIT);
    uint64_t total = units * (uint64_t)LEDGER_MICROS_PER_UNIT + fraction;
    if (total > (uint64_t)LEDGER_MONEY_MICROS_MAX) {
        return LEDGER_MONEY_RANGE;
    }
    *micros = (int64_t)total;
    return LEDGER_MONEY_OK;
}

_Static_assert(LEDGER_MICROS_PER_UNIT == TEXT_MICROS_PER_UNIT, "money text and ledger agree on the unit");

/* ---------------------------------------------------------------------- */
/* Prices                                                                  */

int64_t ledger_cost(const config_model_t *prices, const usage_counts_t *usage,
                    usage_counts_t *billed) {
    ledger_check_prices(prices);
    RW_ASSERT(usage != NULL);

    int64_t prompt = usage->prompt_tokens;
    int64_t completion = usage->completion_tokens;
    int64_t total = usage->total_tokens;
    if (prompt < 0 && completion >= 0 && total >= completion) {
        prompt = total - completion;
    }
    if (completion < 0 && prompt >= 0 && total >= prompt) {
        completion = total - prompt;
    }
    prompt = ledger_max_int64(prompt, 0);
    completion = ledger_max_int64(completion, 0);
    int64_t cached = usage->cached_tokens < 0 ? 0 : usage->cached_tokens;
    if (cached > prompt) {
        cached = prompt;
    }
    int64_t uncached = prompt - cached;
    RW_ASSERT(uncached >= 0 && cached >= 0 && completion >= 0);

    ledger_wide_t numerator = (ledger_wide_t)uncached * (uint64_t)prices->input_price_micros +
                              (ledger_wide_t)cached * (uint64_t)prices->cached_input_price_micros +
                              (ledger_wide_t)completion * (uint64_t)prices->output_price_micros;
    int64_t cost = ledger_round_up(numerator, prices->request_price_micros);
    RW_ASSERT(cost >= prices->request_price_micros);

    if (billed != NULL) {
        billed->prompt_tokens = prompt;
        billed->completion_tokens = completion;
        billed->total_tokens = prompt > INT64_MAX - completion ? INT64_MAX : prompt + completion;
        billed->cached_tokens = cached;
        billed->reasoning_tokens = usage->reasoning_tokens < 0 ? 0 : usage->reasoning_tokens;
    }
    return cost;
}

/* The price per 1M tokens applied to the prompt bound: the higher of the two
 * input prices, so the hold covers any split into cached and uncached. */
static int64_t ledger_prompt_bound_price(const config_model_t *prices) {
    return ledger_max_int64(prices->input_price_micros, prices->cached_input_price_micros);
}

int64_t ledger_hold(const config_model_t *prices, uint64_t prompt_bound_tokens,
                    uint64_t max_tokens) {
    ledger_check_prices(prices);
    ledger_wide_t numerator =
        (ledger_wide_t)prompt_bound_tokens * (uint64_t)ledger_prompt_bound_price(prices) +
        (ledger_wide_t)max_tokens * (uint64_t)prices->output_price_micros;
    return ledger_round_up(numerator, prices->request_price_micros);
}

uint64_t ledger_affordable_max_tokens(const config_model_t *prices, int64_t available_micros,
                                      uint64_t prompt_bound_tokens, uint64_t model_max_tokens) {
    ledger_check_prices(prices);
    if (model_max_tokens == 0 || available_micros < prices->request_price_micros) {
        return 0;
    }
    /* hold(n) <= available  <=>  ceil(X / 1e6) <= budget  <=>  X <= budget × 1e6,
     * with X = prompt part + n × output price and budget an integer >= 0. */
    int64_t budget_micros = available_micros - prices->request_price_micros;
    ledger_wide_t budget = (ledger_wide_t)(uint64_t)budget_micros * LEDGER_TOKENS_PER_PRICE_UNIT;
    ledger_wide_t prompt_part =
        (ledger_wide_t)prompt_bound_tokens * (uint64_t)ledger_prompt_bound_price(prices);
    if (prompt_part > budget) {
        return 0;
    }
    uint64_t affordable = model_max_tokens;
    if (prices->output_price_micros > 0) {
        ledger_wide_t tokens = (budget - prompt_part) / (uint64_t)prices->output_price_micros;
        if (tokens < (ledger_wide_t)model_max_tokens) {
            affordable = (uint64_t)tokens;
        }
    }
    /* The same property checked through ledger_hold itself. */
    if (affordable > 0) {
        RW_ASSERT(ledger_hold(prices, prompt_bound_tokens, affordable) <= available_micros);
    }
    if (affordable < model_max_tokens && available_micros < INT64_MAX) {
        RW_ASSERT(ledger_hold(prices, prompt_bound_tokens, affordable + 1) > available_micros);
    }
    return affordable;
}

static int64_t ledger_estimate_tokens(uint64_t bytes) {
    uint64_t tokens = bytes / LEDGER_ESTIMATE_BYTES_PER_TOKEN +
                      (bytes % LEDGER_ESTIMATE_BYTES_PER_TOKEN != 0 ? 1 : 0);
    return (int64_t)tokens; /* at most 2^62 */
}

void ledger_estimate_usage(uint64_t prompt_bytes, uint64_t completion_bytes,
                           usage_counts_t *usage) {
    RW_ASSERT(usage != NULL);
    usage->prompt_tokens = ledger_estimate_tokens(prompt_bytes);
    usage->completion_tokens = ledger_estimate_tokens(completion_bytes);
    usage->total_tokens = usage->prompt_tokens > INT64_MAX - usage->completion_tokens
                              ? INT64_MAX
                              : usage->prompt_tokens + usage->completion_tokens;
    usage->cached_tokens = 0;
    usage->reasoning_tokens = 0;
}

/* ---------------------------------------------------------------------- */
/* Holds                                                                   */

/* Subtracts `amount` from `counter` unless that would leave it below zero;
 * returns whether it did. Lock-free: a failed CAS means another thread's
 * update succeeded. */
static bool ledger_take(_Atomic int64_t *counter, int64_t amount) {
    RW_ASSERT(amount >= 0);
    int64_t current = atomic_load_explicit(counter, memory_order_relaxed);
    for (;;) {
        if (current < amount) {
            return false;
        }
        if (atomic_compare_exchange_weak_explicit(counter, &current, current - amount,
                                                  memory_order_relaxed, memory_order_relaxed)) {
            return true;
        }
    }
}

ledger_result_t ledger_reserve(account_user_t *user, account_key_t *key_or_null,
                               int64_t hold_micros) {
    RW_ASSERT(user != NULL);
    RW_ASSERT(hold_micros >= 0);
    if (atomic_load_explicit(&user->status, memory_order_relaxed) == ACCOUNT_USER_SUSPENDED) {
        return LEDGER_SUSPENDED;
    }
    if (!ledger_take(&user->available_micros, hold_micros)) {
        return LEDGER_INSUFFICIENT;
    }
    if (key_or_null == NULL) {
        return LEDGER_OK;
    }
    if (atomic_load_explicit(&key_or_null->spend_cap_micros, memory_order_relaxed) < 0) {
        atomic_fetch_sub_explicit(&key_or_null->spend_available_micros, hold_micros,
                                  memory_order_relaxed);
        return LEDGER_OK;
    }
    if (!ledger_take(&key_or_null->spend_available_micros, hold_micros)) {
        /* Undo the wallet's part: see ledger.h for why this is safe. */
        atomic_fetch_add_explicit(&user->available_micros, hold_micros, memory_order_relaxed);
        return LEDGER_KEY_CAP_REACHED;
    }
    return LEDGER_OK;
}

void ledger_settle(account_user_t *user, account_key_t *key_or_null, int64_t hold_micros,
                   int64_t cost_micros, int64_t *charged_micros, bool *capped) {
    RW_ASSERT(user != NULL && charged_micros != NULL && capped != NULL);
    RW_ASSERT(hold_micros >= 0 && cost_micros >= 0);
    int64_t charged = cost_micros < hold_micros ? cost_micros : hold_micros;
    int64_t returned = hold_micros - charged;
    RW_ASSERT(charged >= 0 && returned >= 0);
    if (returned > 0) {
        atomic_fetch_add_explicit(&user->available_micros, returned, memory_order_relaxed);
        if (key_or_null != NULL) {
            atomic_fetch_add_explicit(&key_or_null->spend_available_micros, returned,
                                      memory_order_relaxed);
        }
    }
    *charged_micros = charged;
    *capped = cost_micros > hold_micros;
}

void ledger_release(account_user_t *user, account_key_t *key_or_null, int64_t hold_micros) {
    int64_t charged = 0;
    bool capped = false;
    ledger_settle(user, key_or_null, hold_micros, 0, &charged, &capped);
    RW_ASSERT(charged == 0 && !capped);
}

/* ---------------------------------------------------------------------- */
/* Key spend caps                                                          */

int64_t ledger_key_spend_available_initial(int64_t cap_micros, int64_t spent_micros) {
    RW_ASSERT(cap_micros >= -1);
    RW_ASSERT(spent_micros >= 0);
    return ledger_max_int64(cap_micros, 0) - spent_micros;
}

int64_t ledger_key_set_cap(account_key_t *key, int64_t cap_micros) {
    RW_ASSERT(key != NULL);
    RW_ASSERT(cap_micros >= -1);
    int64_t previous = atomic_exchange_explicit(&key->spend_cap_micros, cap_micros,
                                                memory_order_relaxed);
    RW_ASSERT(previous >= -1);
    int64_t difference = ledger_max_int64(cap_micros, 0) - ledger_max_int64(previous, 0);
    if (difference != 0) {
        atomic_fetch_add_explicit(&key->spend_available_micros, difference, memory_order_relaxed);
    }
    return previous;
}
