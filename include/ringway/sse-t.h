/* Types of the SSE module (functions are in sse.h): the incremental usage
 * scanner for OpenAI chat-completion JSON and the text/event-stream scanner
 * built on it. Both keep a small fixed state however long the input, so a
 * relay can hold one per stream without any budget beyond sizeof. */
#ifndef RINGWAY_SSE_T_H
#define RINGWAY_SSE_T_H

#include "ringway/usage-t.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Usage scanner ------------------------------------------------------- */

/* Arrays and objects may nest this deep (as in json.h); one more makes the
 * document invalid. */
enum { USAGE_DEPTH_MAX = 128 };

/* Object keys longer than this can never be ones the scanner looks for, so
 * they are not buffered. */
enum { USAGE_KEY_CAPACITY = 64 };

/* What one document said, from its top-level object only: the same names
 * nested anywhere else (inside choices, inside strings) are ignored. */
typedef struct usage_result {
    bool usage_present;   /* the last top-level "usage" is an object (not null) */
    usage_counts_t usage; /* all -1 unless usage_present */
    bool choices_empty;   /* the last top-level "choices" is exactly [] */
    bool has_error;       /* there is a top-level "error" whose value is not null */
    bool complete;        /* one whole JSON value was read, then only whitespace */
    bool invalid;         /* the bytes are not JSON; scanning stopped there */
} usage_result_t;

/* The scanner's state: a container stack of one bit per level, a key buffer,
 * a number accumulator and a few small enums (see usage.c). Treat it as
 * opaque. */
typedef struct usage_scanner {
    uint64_t object_bits[USAGE_DEPTH_MAX / 64]; /* bit d-1: the container at depth d is an object */
    usage_counts_t counts;       /* cached_tokens here is the prompt_tokens_details one */
    int64_t cache_hit_tokens;    /* DeepSeek's prompt_cache_hit_tokens */
    uint64_t number_value;
    uint32_t depth;              /* open arrays and objects */
    uint8_t expect;              /* what the grammar allows next (usage_expect_t) */
    uint8_t token;               /* the token being read (usage_token_t) */
    uint8_t number_stage;        /* where in the number grammar (usage_number_stage_t) */
    uint8_t literal_kind;        /* 0 true, 1 false, 2 null */
    uint8_t literal_matched;     /* bytes of the literal read so far */
    uint8_t hex_digits_left;     /* of a \u escape */
    uint8_t pending_slot;        /* what the value after the current key means (usage_slot_t) */
    uint8_t value_slot;          /* what the scalar being read means */
    uint8_t contexts[4];         /* what the object at depth 1..3 is (usage_context_t) */
    uint8_t key_length;
    bool key_ignored;            /* the key is uninteresting: too long, escaped or in a dull object */
    bool string_is_key;
    bool number_negative;
    bool number_overflow;
    bool choices_opened;         /* "choices" just opened an array; is the next token ']'? */
    bool usage_present;
    bool choices_empty;
    bool has_error;
    bool invalid;
    uint8_t key[USAGE_KEY_CAPACITY];
} usage_scanner_t;

/* ---- Event-stream scanner ------------------------------------------------ */

typedef enum sse_result {
    SSE_AGAIN = 0, /* all input consumed, no event ended; call again with more */
    SSE_EVENT = 1  /* an event ended; *event is filled */
} sse_result_t;

/* One event: the lines up to and including the blank line that ended it. */
typedef struct sse_event {
    bool has_data;         /* at least one data field (possibly empty) */
    bool is_done;          /* the data is exactly "[DONE]" */
    bool comment_only;     /* only comment lines, e.g. ": keep-alive" (forward it anyway) */
    bool has_other_fields; /* an event, id or retry field, or an unknown field name */
    uint32_t data_line_count;
    usage_result_t json;   /* the usage scanner over the data lines joined by "\n" */
    uint64_t bytes;        /* raw bytes of the event, line ends included (see sse.h) */
} sse_event_t;

/* The scanner's state; treat it as opaque (see sse.c). */
typedef struct sse_scanner {
    usage_scanner_t data;   /* over the current event's data */
    uint64_t pending_bytes; /* consumed by earlier calls for the event not yet reported */
    uint32_t data_line_count;
    uint8_t line_stage;     /* where in the current line (sse_line_stage_t) */
    uint8_t field;          /* the current line's field (sse_field_t) */
    uint8_t field_name_length; /* 6, one more than fits, means too long to be known */
    uint8_t field_name[5];
    uint8_t done_matched;   /* bytes of "[DONE]" matched by the data so far */
    uint8_t bom_matched;    /* bytes of a leading UTF-8 byte order mark seen */
    bool done_mismatch;
    bool stream_started;    /* past the place where a byte order mark may be */
    bool pending_cr;        /* a line ended with CR at the end of the last input */
    bool in_event;          /* a line of the current event has started */
    bool has_comment;
    bool has_other_fields;
} sse_scanner_t;

#endif
