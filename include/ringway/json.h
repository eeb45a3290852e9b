/* JSON per RFC 8259 for request bodies the relay must understand before it
 * forwards them: a strict validator, a chat-completion request scanner that
 * records where the members it cares about are, and small helpers for
 * reading strings and top-level members. The body is one contiguous buffer;
 * nothing is allocated and nothing is copied except by json_string_decode. */
#ifndef RINGWAY_JSON_H
#define RINGWAY_JSON_H

#include "ringway/common.h"
#include "ringway/json-t.h"

/* Validates a whole document strictly per RFC 8259: one value of any type
 * with optional surrounding whitespace (space, tab, LF, CR) and nothing else;
 * no byte order mark; strings in valid UTF-8 (no overlong forms, no encoded
 * surrogates, nothing above U+10FFFF) without raw control characters, with
 * only the escapes \" \\ \/ \b \f \n \r \t \uXXXX, where a \u high surrogate
 * must be followed by a \u low surrogate and a low surrogate may not stand
 * alone; numbers per the RFC grammar (no leading zeros, no '+', no NaN);
 * at most JSON_DEPTH_MAX nested arrays and objects; length at most
 * JSON_BODY_LENGTH_MAX. Returns 0 when valid, -1 with *error filled
 * (error may be NULL). */
int json_validate(const uint8_t *body, size_t length, json_error_t *error);

/* Validates a chat-completion request body like json_validate, then checks
 * what OpenAI checks before billing matters: the body is an object; "model"
 * is present and a non-empty string; "messages" is present and a non-empty
 * array; "stream" is a boolean or null; "stream_options" is an object or
 * null and its "include_usage" a boolean or null; "max_tokens",
 * "max_completion_tokens" and "n" are non-negative integers (at most
 * JSON_COUNT_MAX, spelled any way whose value is integral: 1e2 and 100.0
 * are 100) or null. A member named by the scanner ("model",
 * "messages", "stream", "stream_options", "max_tokens",
 * "max_completion_tokens", "n", "mock", and "include_usage" inside
 * stream_options) that appears twice is refused, keys being compared after
 * unescaping, because upstreams disagree on which copy wins and the relay
 * bills by what it read. Other keys may repeat: comparing every pair would
 * cost quadratic time.
 * Returns 0 with *out filled, or -1 with *error filled: syntax errors have
 * param NULL and take precedence over semantic ones, which name the member.
 * After a semantic error *out is complete; after a syntax error it is
 * partial and must not be used. */
int json_scan_chat_request(const uint8_t *body, size_t length, json_chat_request_t *out,
                           json_error_t *error);

/* Unescapes one JSON string, given with its quotes, into UTF-8 at out and
 * writes a terminating NUL (so \u0000 inside the string shows only in
 * *out_length). Expects a string json_validate accepted; anything else
 * (missing quotes, a bad escape, an unpaired surrogate) returns -1, as does
 * a result that needs more than out_capacity bytes with its NUL. Returns 0
 * with *out_length the decoded length without the NUL. */
int json_string_decode(const uint8_t *quoted, size_t length, char *out, size_t out_capacity,
                       size_t *out_length);

/* Finds the value of the top-level member named key (compared after
 * unescaping) in a body that is an object, for small bodies like
 * {"email":..,"password":..}. Meant for bodies json_validate accepted, but
 * safe on any bytes. Returns 0 with *value and *type filled when the key
 * occurs exactly once, -1 when it is absent or the body is not a well-formed
 * object, -2 when it occurs more than once (refuse such bodies). */
int json_object_find(const uint8_t *body, size_t length, const char *key, json_span_t *value,
                     json_type_t *type);

#endif
