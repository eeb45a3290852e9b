/* The usage scanner: a byte-at-a-time JSON tokenizer and grammar checker with
 * O(1) state, which remembers only what billing needs from the top-level
 * object. Meaning is tracked by "contexts" (what the open object at depth 1,
 * 2 or 3 is) and "slots" (what the value after a key is); everything deeper
 * or elsewhere is skipped without being buffered. */
#include "ringway/sse.h"

#include <string.h>

typedef enum usage_expect {
    USAGE_EXPECT_VALUE,             /* at the start, after ':', after ',' in an array */
    USAGE_EXPECT_VALUE_OR_CLOSE,    /* after '[' */
    USAGE_EXPECT_KEY_OR_CLOSE,      /* after '{' */
    USAGE_EXPECT_KEY,               /* after ',' in an object */
    USAGE_EXPECT_COLON,             /* after a key */
    USAGE_EXPECT_COMMA_OR_CLOSE,    /* after a value inside a container */
    USAGE_EXPECT_END                /* the top-level value is complete */
} usage_expect_t;

typedef enum usage_token {
    USAGE_TOKEN_NONE,
    USAGE_TOKEN_STRING,
    USAGE_TOKEN_ESCAPE,  /* after a backslash */
    USAGE_TOKEN_UNICODE, /* inside \uXXXX */
    USAGE_TOKEN_NUMBER,
    USAGE_TOKEN_LITERAL
} usage_token_t;

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? as a state machine. */
typedef enum usage_number_stage {
    USAGE_NUMBER_SIGN,          /* after '-' */
    USAGE_NUMBER_ZERO,          /* after a leading 0 */
    USAGE_NUMBER_INTEGER,       /* in the integer digits */
    USAGE_NUMBER_POINT,         /* after '.' */
    USAGE_NUMBER_FRACTION,      /* in the fraction digits */
    USAGE_NUMBER_EXPONENT_MARK, /* after 'e' or 'E' */
    USAGE_NUMBER_EXPONENT_SIGN, /* after the exponent's sign */
    USAGE_NUMBER_EXPONENT       /* in the exponent digits */
} usage_number_stage_t;

typedef enum usage_context {
    USAGE_CONTEXT_OTHER,
    USAGE_CONTEXT_TOP,                       /* the top-level object */
    USAGE_CONTEXT_USAGE,                     /* its "usage" object */
    USAGE_CONTEXT_PROMPT_TOKENS_DETAILS,     /* usage.prompt_tokens_details */
    USAGE_CONTEXT_COMPLETION_TOKENS_DETAILS  /* usage.completion_tokens_details */
} usage_context_t;

typedef enum usage_slot {
    USAGE_SLOT_NONE,
    USAGE_SLOT_USAGE,
    USAGE_SLOT_CHOICES,
    USAGE_SLOT_ERROR,
    USAGE_SLOT_PROMPT_TOKENS,
    USAGE_SLOT_COMPLETION_TOKENS,
    USAGE_SLOT_TOTAL_TOKENS,
    USAGE_SLOT_CACHE_HIT_TOKENS,
    USAGE_SLOT_PROMPT_TOKENS_DETAILS,
    USAGE_SLOT_COMPLETION_TOKENS_DETAILS,
    USAGE_SLOT_CACHED_TOKENS,
    USAGE_SLOT_REASONING_TOKENS
} usage_slot_t;

typedef struct usage_key_name {
    usage_context_t context;
    const char *name;
    usage_slot_t slot;
} usage_key_name_t;

static const usage_key_name_t usage_key_names[] = {
    {USAGE_CONTEXT_TOP, "usage", USAGE_SLOT_USAGE},
    {USAGE_CONTEXT_TOP, "choices", USAGE_SLOT_CHOICES},
    {USAGE_CONTEXT_TOP, "error", USAGE_SLOT_ERROR},
    {USAGE_CONTEXT_USAGE, "prompt_tokens", USAGE_SLOT_PROMPT_TOKENS},
    {USAGE_CONTEXT_USAGE, "completion_tokens", USAGE_SLOT_COMPLETION_TOKENS},
    {USAGE_CONTEXT_USAGE, "total_tokens", USAGE_SLOT_TOTAL_TOKENS},
    {USAGE_CONTEXT_USAGE, "prompt_cache_hit_tokens", USAGE_SLOT_CACHE_HIT_TOKENS},
    {USAGE_CONTEXT_USAGE, "prompt_tokens_details", USAGE_SLOT_PROMPT_TOKENS_DETAILS},
    {USAGE_CONTEXT_USAGE, "completion_tokens_details", USAGE_SLOT_COMPLETION_TOKENS_DETAILS},
    {USAGE_CONTEXT_PROMPT_TOKENS_DETAILS, "cached_tokens", USAGE_SLOT_CACHED_TOKENS},
    {USAGE_CONTEXT_COMPLETION_TOKENS_DETAILS, "reasoning_tokens", USAGE_SLOT_REASONING_TOKENS},
};

static const char *const usage_literals[] = {"true", "false", "null"};

static const usage_counts_t usage_counts_unset = {
    .prompt_tokens = -1,
    .completion_tokens = -1,
    .total_tokens = -1,
    .cached_tokens = -1,
    .reasoning_tokens = -1,
};

void usage_scanner_init(usage_scanner_t *scanner) {
    RW_ASSERT(scanner != NULL);
    memset(scanner, 0, sizeof *scanner);
    scanner->expect = USAGE_EXPECT_VALUE;
    scanner->token = USAGE_TOKEN_NONE;
    scanner->counts = usage_counts_unset;
    scanner->cache_hit_tokens = -1;
}

static usage_context_t usage_context_at(const usage_scanner_t *scanner, uint32_t depth) {
    if (depth == 0 || depth >= RW_ARRAY_LENGTH(scanner->contexts)) {
        return USAGE_CONTEXT_OTHER;
    }
    return (usage_context_t)scanner->contexts[depth];
}

static bool usage_top_is_object(const usage_scanner_t *scanner) {
    RW_ASSERT(scanner->depth > 0 && scanner->depth <= USAGE_DEPTH_MAX);
    uint32_t bit = scanner->depth - 1;
    return (scanner->object_bits[bit / 64] >> (bit % 64)) & 1;
}

static int64_t *usage_count_for_slot(usage_scanner_t *scanner, usage_slot_t slot) {
    switch (slot) {
    case USAGE_SLOT_PROMPT_TOKENS:
        return &scanner->counts.prompt_tokens;
    case USAGE_SLOT_COMPLETION_TOKENS:
        return &scanner->counts.completion_tokens;
    case USAGE_SLOT_TOTAL_TOKENS:
        return &scanner->counts.total_tokens;
    case USAGE_SLOT_CACHE_HIT_TOKENS:
        return &scanner->cache_hit_tokens;
    case USAGE_SLOT_CACHED_TOKENS:
        return &scanner->counts.cached_tokens;
    case USAGE_SLOT_REASONING_TOKENS:
        return &scanner->counts.reasoning_tokens;
    default:
        return NULL;
    }
}

/* A value just ended: the grammar now wants a separator, or nothing more. */
static void usage_value_done(usage_scanner_t *scanner) {
    scanner->expect = scanner->depth == 0 ? USAGE_EXPECT_END : USAGE_EXPECT_COMMA_OR_CLOSE;
}

static void usage_open(usage_scanner_t *scanner, bool is_object, usage_slot_t slot) {
    if (scanner->depth >= USAGE_DEPTH_MAX) {
        scanner->invalid = true;
        return;
    }
    uint32_t bit = scanner->depth;
    uint64_t mask = (uint64_t)1 << (bit % 64);
    if (is_object) {
        scanner->object_bits[bit / 64] |= mask;
    } else {
        scanner->object_bits[bit / 64] &= ~mask;
    }
    scanner->depth++;
    if (scanner->depth < RW_ARRAY_LENGTH(scanner->contexts)) {
        usage_context_t context = USAGE_CONTEXT_OTHER;
        if (is_object && scanner->depth == 1) {
            context = USAGE_CONTEXT_TOP;
        } else if (is_object && slot == USAGE_SLOT_USAGE) {
            context = USAGE_CONTEXT_USAGE;
        } else if (is_object && slot == USAGE_SLOT_PROMPT_TOKENS_DETAILS) {
            context = USAGE_CONTEXT_PROMPT_TOKENS_DETAILS;
        } else if (is_object && slot == USAGE_SLOT_COMPLETION_TOKENS_DETAILS) {
            context = USAGE_CONTEXT_COMPLETION_TOKENS_DETAILS;
        }
        scanner->contexts[scanner->depth] = (uint8_t)context;
    }
    scanner->expect = is_object ? USAGE_EXPECT_KEY_OR_CLOSE : USAGE_EXPECT_VALUE_OR_CLOSE;
}

static void usage_close(usage_scanner_t *scanner, uint8_t c) {
    RW_ASSERT(scanner->depth > 0);
    if (c != (usage_top_is_object(scanner) ? '}' : ']')) {
        scanner->invalid = true;
        return;
    }
    scanner->depth--;
    usage_value_done(scanner);
}

/* The first byte c of a value: notes what it means for its slot, then
 * opens a container or starts a token. */
static void usage_start_value(usage_scanner_t *scanner, uint8_t c) {
    usage_slot_t slot = (usage_slot_t)scanner->pending_slot;
    scanner->pending_slot = USAGE_SLOT_NONE;
    switch (slot) {
    case USAGE_SLOT_USAGE:
        scanner->usage_present = c == '{';
        scanner->counts = usage_counts_unset;
        scanner->cache_hit_tokens = -1;
        break;
    case USAGE_SLOT_CHOICES:
        scanner->choices_empty = false;
        scanner->choices_opened = c == '[';
        break;
    case USAGE_SLOT_ERROR:
        scanner->has_error = c != 'n';
        break;
    default: {
        int64_t *count = usage_count_for_slot(scanner, slot);
        if (count != NULL) {
            *count = -1;
        }
        break;
    }
    }
    if (c == '{' || c == '[') {
        usage_open(scanner, c == '{', slot);
        return;
    }
    scanner->value_slot = (uint8_t)slot;
    if (c == '"') {
        scanner->token = USAGE_TOKEN_STRING;
        scanner->string_is_key = false;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        scanner->token = USAGE_TOKEN_NUMBER;
        scanner->number_negative = c == '-';
        scanner->number_overflow = false;
        scanner->number_value = c == '-' ? 0 : (uint64_t)(c - '0');
        scanner->number_stage = c == '-' ? USAGE_NUMBER_SIGN
                                : c == '0' ? USAGE_NUMBER_ZERO
                                           : USAGE_NUMBER_INTEGER;
    } else if (c == 't' || c == 'f' || c == 'n') {
        scanner->token = USAGE_TOKEN_LITERAL;
        scanner->literal_kind = c == 't' ? 0 : c == 'f' ? 1 : 2;
        scanner->literal_matched = 1;
    } else {
        scanner->invalid = true;
    }
}

static void usage_start_key(usage_scanner_t *scanner) {
    scanner->token = USAGE_TOKEN_STRING;
    scanner->string_is_key = true;
    scanner->key_length = 0;
    scanner->key_ignored = usage_context_at(scanner, scanner->depth) == USAGE_CONTEXT_OTHER;
}

/* A key just ended: looks it up among the names wanted in its object. */
static void usage_key_done(usage_scanner_t *scanner) {
    usage_slot_t slot = USAGE_SLOT_NONE;
    if (!scanner->key_ignored) {
        usage_context_t context = usage_context_at(scanner, scanner->depth);
        for (size_t index = 0; index < RW_ARRAY_LENGTH(usage_key_names); index++) {
            const usage_key_name_t *entry = &usage_key_names[index];
            if (entry->context == context && strlen(entry->name) == scanner->key_length &&
                memcmp(entry->name, scanner->key, scanner->key_length) == 0) {
                slot = entry->slot;
                break;
            }
        }
    }
    scanner->pending_slot = (uint8_t)slot;
    scanner->expect = USAGE_EXPECT_COLON;
}

/* A number just ended (the byte after it is not part of it). */
static void usage_number_done(usage_scanner_t *scanner) {
    usage_number_stage_t stage = (usage_number_stage_t)scanner->number_stage;
    scanner->token = USAGE_TOKEN_NONE;
    if (stage == USAGE_NUMBER_SIGN || stage == USAGE_NUMBER_POINT ||
        stage == USAGE_NUMBER_EXPONENT_MARK || stage == USAGE_NUMBER_EXPONENT_SIGN) {
        scanner->invalid = true;
        return;
    }
    bool is_count = (stage == USAGE_NUMBER_ZERO || stage == USAGE_NUMBER_INTEGER) &&
                    !scanner->number_negative && !scanner->number_overflow;
    int64_t *count = usage_count_for_slot(scanner, (usage_slot_t)scanner->value_slot);
    if (count != NULL && is_count) {
        *count = (int64_t)scanner->number_value;
    }
    usage_value_done(scanner);
}

/* Advances the number by c. Returns false when c is not part of it (the
 * number then ends and c is read again as a structural byte). */
static bool usage_number_step(usage_scanner_t *scanner, uint8_t c) {
    bool digit = c >= '0' && c <= '9';
    switch ((usage_number_stage_t)scanner->number_stage) {
    case USAGE_NUMBER_SIGN:
        if (!digit) {
            return false;
        }
        scanner->number_value = (uint64_t)(c - '0');
        scanner->number_stage = c == '0' ? USAGE_NUMBER_ZERO : USAGE_NUMBER_INTEGER;
        return true;
    case USAGE_NUMBER_ZERO:
    case USAGE_NUMBER_INTEGER:
        if (digit) {
            if (scanner->number_stage == USAGE_NUMBER_ZERO) {
                scanner->invalid = true; /* a leading zero */
                return true;
            }
            uint64_t digit_value = (uint64_t)(c - '0');
            if (scanner->number_value > ((uint64_t)INT64_MAX - digit_value) / 10) {
                scanner->number_overflow = true;
            } else {
                scanner->number_value = scanner->number_value * 10 + digit_value;
            }
            return true;
        }
        if (c == '.') {
            scanner->number_stage = USAGE_NUMBER_POINT;
            return true;
        }
        if (c == 'e' || c == 'E') {
            scanner->number_stage = USAGE_NUMBER_EXPONENT_MARK;
            return true;
        }
        return false;
    case USAGE_NUMBER_POINT:
    case USAGE_NUMBER_FRACTION:
        if (digit) {
            scanner->number_stage = USAGE_NUMBER_FRACTION;
            return true;
        }
        if (scanner->number_stage == USAGE_NUMBER_FRACTION && (c == 'e' || c == 'E')) {
            scanner->number_stage = USAGE_NUMBER_EXPONENT_MARK;
            return true;
        }
        return false;
    case USAGE_NUMBER_EXPONENT_MARK:
        if (c == '+' || c == '-') {
            scanner->number_stage = USAGE_NUMBER_EXPONENT_SIGN;
            return true;
        }
        if (digit) {
            scanner->number_stage = USAGE_NUMBER_EXPONENT;
        }
        return digit;
    case USAGE_NUMBER_EXPONENT_SIGN:
    case USAGE_NUMBER_EXPONENT:
        if (digit) {
            scanner->number_stage = USAGE_NUMBER_EXPONENT;
        }
        return digit;
    }
    RW_ASSERT(false);
    return false;
}

/* Reads string contents from bytes[index ..): runs of plain bytes go by in
 * a tight loop (only keys worth looking up are copied). Returns the index
 * after what it consumed. */
static size_t usage_scan_string(usage_scanner_t *scanner, const uint8_t *bytes, size_t length,
                                size_t index) {
    size_t run_start = index;
    while (index < length) {
        uint8_t c = bytes[index];
        if (c == '"' || c == '\\' || c < 0x20) {
            break;
        }
        index++;
    }
    if (scanner->string_is_key && !scanner->key_ignored) {
        size_t run_length = index - run_start;
        if (run_length > USAGE_KEY_CAPACITY - scanner->key_length) {
            scanner->key_ignored = true;
        } else {
            memcpy(scanner->key + scanner->key_length, bytes + run_start, run_length);
            scanner->key_length = (uint8_t)(scanner->key_length + run_length);
        }
    }
    if (index == length) {
        return index;
    }
    uint8_t c = bytes[index];
    if (c == '"') {
        scanner->token = USAGE_TOKEN_NONE;
        if (scanner->string_is_key) {
            usage_key_done(scanner);
        } else {
            usage_value_done(scanner);
        }
    } else if (c == '\\') {
        scanner->token = USAGE_TOKEN_ESCAPE;
        scanner->key_ignored = true; /* harmless for values */
    } else {
        scanner->invalid = true; /* a raw control character */
    }
    return index + 1;
}

/* Reads one byte between tokens. */
static void usage_structural(usage_scanner_t *scanner, uint8_t c) {
    switch ((usage_expect_t)scanner->expect) {
    case USAGE_EXPECT_VALUE:
        usage_start_value(scanner, c);
        return;
    case USAGE_EXPECT_VALUE_OR_CLOSE: {
        bool choices_opened = scanner->choices_opened;
        scanner->choices_opened = false;
        if (c == ']') {
            scanner->choices_empty = scanner->choices_empty || choices_opened;
            usage_close(scanner, c);
        } else {
            usage_start_value(scanner, c);
        }
        return;
    }
    case USAGE_EXPECT_KEY_OR_CLOSE:
        if (c == '}') {
            usage_close(scanner, c);
            return;
        }
        /* fall through */
    case USAGE_EXPECT_KEY:
        if (c == '"') {
            usage_start_key(scanner);
        } else {
            scanner->invalid = true;
        }
        return;
    case USAGE_EXPECT_COLON:
        if (c == ':') {
            scanner->expect = USAGE_EXPECT_VALUE;
        } else {
            scanner->invalid = true;
        }
        return;
    case USAGE_EXPECT_COMMA_OR_CLOSE:
        if (c == ',') {
            scanner->expect =
                usage_top_is_object(scanner) ? USAGE_EXPECT_KEY : USAGE_EXPECT_VALUE;
        } else if (c == '}' || c == ']') {
            usage_close(scanner, c);
        } else {
            scanner->invalid = true;
        }
        return;
    case USAGE_EXPECT_END:
        scanner->invalid = true;
        return;
    }
    RW_ASSERT(false);
}

void usage_scanner_feed(usage_scanner_t *scanner, const uint8_t *bytes, size_t length) {
    RW_ASSERT(scanner != NULL);
    RW_ASSERT(bytes != NULL || length == 0);
    size_t index = 0;
    while (index < length && !scanner->invalid) {
        uint8_t c = bytes[index];
        switch ((usage_token_t)scanner->token) {
        case USAGE_TOKEN_STRING:
            index = usage_scan_string(scanner, bytes, length, index);
            break;
        case USAGE_TOKEN_ESCAPE:
            if (c == 'u') {
                scanner->token = USAGE_TOKEN_UNICODE;
                scanner->hex_digits_left = 4;
            } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' ||
                       c == 'r' || c == 't') {
                scanner->token = USAGE_TOKEN_STRING;
            } else {
                scanner->invalid = true;
            }
            index++;
            break;
        case USAGE_TOKEN_UNICODE:
            if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) {
                scanner->hex_digits_left--;
                if (scanner->hex_digits_left == 0) {
                    scanner->token = USAGE_TOKEN_STRING;
                }
            } else {
                scanner->invalid = true;
            }
            index++;
            break;
        case USAGE_TOKEN_NUMBER:
            if (usage_number_step(scanner, c)) {
                index++;
            } else {
                usage_number_done(scanner); /* c is read again below */
            }
            break;
        case USAGE_TOKEN_LITERAL: {
            const char *literal = usage_literals[scanner->literal_kind];
            if (c != (uint8_t)literal[scanner->literal_matched]) {
                scanner->invalid = true;
                break;
            }
            scanner->literal_matched++;
            index++;
            if (literal[scanner->literal_matched] == '\0') {
                scanner->token = USAGE_TOKEN_NONE;
                usage_value_done(scanner);
            }
            break;
        }
        case USAGE_TOKEN_NONE:
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                usage_structural(scanner, c);
            }
            index++;
            break;
        }
    }
}

void usage_scanner_result(const usage_scanner_t *scanner, usage_result_t *result) {
    RW_ASSERT(scanner != NULL && result != NULL);
    memset(result, 0, sizeof *result);
    result->invalid = scanner->invalid;
    bool number_may_end = scanner->token == USAGE_TOKEN_NUMBER && scanner->depth == 0 &&
                          (scanner->number_stage == USAGE_NUMBER_ZERO ||
                           scanner->number_stage == USAGE_NUMBER_INTEGER ||
                           scanner->number_stage == USAGE_NUMBER_FRACTION ||
                           scanner->number_stage == USAGE_NUMBER_EXPONENT);
    result->complete =
        !scanner->invalid && (scanner->expect == USAGE_EXPECT_END || number_may_end);
    result->usage_present = scanner->usage_present;
    result->usage = usage_counts_unset;
    if (scanner->usage_present) {
        result->usage = scanner->counts;
        if (result->usage.cached_tokens < 0) {
            result->usage.cached_tokens = scanner->cache_hit_tokens;
        }
    }
    result->choices_empty = scanner->choices_empty;
    result->has_error = scanner->has_error;
}
