/* Types of the JSON module (functions are in json.h). Plain data: the scanner
 * refers to the caller's request body by offsets, so nothing is allocated and
 * the body may move after scanning. */
#ifndef RINGWAY_JSON_T_H
#define RINGWAY_JSON_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Arrays and objects may nest this deep (the top-level value counts as one);
 * one more is refused. It bounds the validator's stack at 128 bytes. */
enum { JSON_DEPTH_MAX = 128 };

/* Bodies are addressed with 32-bit offsets; longer ones are refused. */
#define JSON_BODY_LENGTH_MAX ((size_t)UINT32_MAX - 1)

/* Largest value accepted for max_tokens, max_completion_tokens and n (the
 * upstream API takes 32-bit signed integers). */
#define JSON_COUNT_MAX ((uint32_t)2147483647)

/* A run of bytes inside the caller's body: body[offset .. offset + length). */
typedef struct json_span {
    uint32_t offset;
    uint32_t length;
} json_span_t;

typedef enum json_type {
    JSON_TYPE_NONE = 0, /* the member is absent */
    JSON_TYPE_NULL,
    JSON_TYPE_BOOLEAN, /* true or false: the value span's first byte tells which */
    JSON_TYPE_NUMBER,
    JSON_TYPE_STRING,
    JSON_TYPE_ARRAY,
    JSON_TYPE_OBJECT
} json_type_t;

/* Why a body was refused, for a 400 in the OpenAI error shape. message is a
 * static sentence for the client; param is NULL or the static name of the
 * offending member ("model", "messages", "stream", ...); offset is the byte
 * of the body where the problem was found (0 when a member is missing). */
typedef struct json_error {
    const char *message;
    const char *param;
    uint32_t offset;
} json_error_t;

/* One top-level member of the request object. member runs from the key's
 * opening quote to the last byte of the value (so the caller can splice the
 * whole member out or replace it); value covers the value alone, quotes
 * included for a string. Both are zero when present is false. */
typedef struct json_member {
    bool present;
    json_type_t type;
    json_span_t member;
    json_span_t value;
} json_member_t;

/* What the relay needs from a chat-completion request body. Filled by
 * json_scan_chat_request. A member whose value is null is reported present
 * with type JSON_TYPE_NULL and treated as not given (OpenAI declares every
 * optional member nullable). The *_value fields are meaningful only when the
 * member's type says so (BOOLEAN for stream, NUMBER for the counts). */
typedef struct json_chat_request {
    bool is_object;
    bool is_empty_object;    /* "{}" or "{ }": insert a member without a comma */
    uint32_t members_offset; /* just after the top-level '{': where to insert a member */
    uint32_t close_offset;   /* the top-level '}' */

    json_member_t model;    /* a non-empty string when scanning succeeds */
    json_member_t messages; /* an array of messages_count (>= 1) elements when scanning succeeds */
    uint32_t messages_count;

    json_member_t stream; /* boolean or null */
    bool stream_value;    /* false when absent or null */

    json_member_t stream_options; /* object or null */
    /* stream_options.include_usage: member and value spans are offsets in the
     * body, like every other span. Boolean or null. */
    json_member_t include_usage;
    bool include_usage_value;

    /* Non-negative integers up to JSON_COUNT_MAX, or null. Any spelling
     * with an integral value counts, as in JSON Schema: 1e2, 100.0, -0. */
    json_member_t max_tokens;
    uint32_t max_tokens_value;
    json_member_t max_completion_tokens;
    uint32_t max_completion_tokens_value;
    json_member_t n;
    uint32_t n_value;

    json_member_t mock; /* any type; the mock upstream reads a string value */
    json_member_t user; /* a string or null: the end user, for session affinity */
} json_chat_request_t;

#endif
