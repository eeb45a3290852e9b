/* Reading what an upstream says while relaying it: an incremental scanner
 * that pulls the token usage out of OpenAI chat-completion JSON, and a
 * text/event-stream scanner that finds event boundaries in a streamed
 * response and runs the usage scanner over each event's data. Both take
 * their input in pieces split anywhere, keep O(1) state, allocate nothing
 * and never copy the caller's bytes. */
#ifndef RINGWAY_SSE_H
#define RINGWAY_SSE_H

#include "ringway/common.h"
#include "ringway/sse-t.h"

/* ---- Usage scanner (src/sse/usage.c) ------------------------------------- */

/* Prepares a scanner for one JSON document: a whole non-streaming response
 * body, or the data of one event. */
void usage_scanner_init(usage_scanner_t *scanner);

/* Feeds the next bytes of the document, in pieces of any size split
 * anywhere; the result does not depend on the split. The grammar is checked
 * as RFC 8259 except that string contents are not checked for UTF-8
 * validity or surrogate pairing. Once the bytes stop being JSON (or nest
 * deeper than USAGE_DEPTH_MAX, or something follows the value) the scanner
 * is invalid and ignores the rest. Strings cost O(1) memory however long;
 * keys containing escapes are never taken for the names looked for. */
void usage_scanner_feed(usage_scanner_t *scanner, const uint8_t *bytes, size_t length);

/* What the bytes fed so far say. Counts are final only once the usage
 * object has closed; check complete before trusting them. A bare top-level
 * number is complete only if the document may end where the input stops. */
void usage_scanner_result(const usage_scanner_t *scanner, usage_result_t *result);

/* ---- Event-stream scanner (src/sse/sse.c) -------------------------------- */

void sse_scanner_init(sse_scanner_t *scanner);

/* Scans the decoded body of a text/event-stream response per the WHATWG
 * rules: lines end with LF, CRLF or CR; a blank line ends an event; a line
 * starting with ':' is a comment; the field name runs to the first ':' and
 * one space after it is dropped; the values of "data" fields are joined
 * with "\n" and fed to a usage scanner; "event", "id", "retry" and unknown
 * fields are recognised and otherwise ignored; a leading UTF-8 byte order
 * mark is skipped. Lines may be any length: memory stays O(1).
 * Returns SSE_EVENT when an event ends within input: *consumed is the bytes
 * through the line end that ended it, and *event describes it; call again
 * with the rest. Returns SSE_AGAIN with *consumed = length otherwise.
 * A blank line with no lines before it (a stray line end) is reported as an
 * event with every flag false, so the caller's byte accounting stays simple.
 * A CR that ends the input ends its line at once; an LF arriving first in
 * the next input is the rest of that line end, is swallowed, and is counted
 * in the bytes of the next event. The sum of event bytes plus
 * sse_scanner_pending_bytes always equals the bytes consumed. */
sse_result_t sse_scan(sse_scanner_t *scanner, const uint8_t *input, size_t length,
                      size_t *consumed, sse_event_t *event);

/* Whether part of an event has been consumed but the event has not ended
 * (a swallowed LF or a byte order mark alone does not count), so the relay
 * can decide to flush a huge event before it ends. */
bool sse_scanner_in_event(const sse_scanner_t *scanner);

/* Bytes consumed by earlier sse_scan calls that belong to the event not yet
 * reported (they will be counted in its bytes). */
uint64_t sse_scanner_pending_bytes(const sse_scanner_t *scanner);

#endif
