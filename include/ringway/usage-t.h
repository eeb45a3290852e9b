/* The token counts of one response: what the SSE scanner captures
 * (sse-t.h), what the ledger prices (ledger.h) and the relay bills. A type of
 * its own so the ledger does not depend on the SSE module. */
#ifndef RINGWAY_USAGE_T_H
#define RINGWAY_USAGE_T_H

#include <stdint.h>

/* Token counts of one response. Each is -1 when the response did not give it
 * as a non-negative integer that fits in int64_t: absent, null, negative,
 * a fraction or exponent (12.0, 1e3), a string, or too large. */
typedef struct usage_counts {
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t total_tokens;
    /* usage.prompt_tokens_details.cached_tokens, or else DeepSeek's
     * usage.prompt_cache_hit_tokens */
    int64_t cached_tokens;
    int64_t reasoning_tokens; /* usage.completion_tokens_details.reasoning_tokens */
} usage_counts_t;

#endif
