/* The text/event-stream scanner (WHATWG HTML, "Server-sent events",
 * interpreting an event stream). It walks lines without buffering them: a
 * field name is at most a few bytes worth keeping, data values go straight
 * to the event's usage scanner, and everything else is skipped. */
#include "ringway/sse.h"

#include <string.h>

typedef enum sse_line_stage {
    SSE_LINE_START,       /* nothing of the line seen yet */
    SSE_LINE_FIELD_NAME,  /* reading the field name */
    SSE_LINE_VALUE_START, /* just after the ':'; one space may follow */
    SSE_LINE_DATA,        /* in the value of a data field */
    SSE_LINE_SKIP         /* in a comment or the value of another field */
} sse_line_stage_t;

typedef enum sse_field {
    SSE_FIELD_OTHER,
    SSE_FIELD_DATA
} sse_field_t;

/* Field names are kept up to the longest one recognised ("event",
 * "retry"); a longer name is unknown. */
enum { SSE_FIELD_NAME_CAPACITY = 5 };

static const uint8_t sse_done_text[] = "[DONE]";
static const uint8_t sse_byte_order_mark[3] = {0xEF, 0xBB, 0xBF};

/* Forgets the event just reported; what spans events (a pending CR, the
 * byte order mark) is kept. */
static void sse_event_reset(sse_scanner_t *scanner) {
    usage_scanner_init(&scanner->data);
    scanner->pending_bytes = 0;
    scanner->data_line_count = 0;
    scanner->line_stage = SSE_LINE_START;
    scanner->field = SSE_FIELD_OTHER;
    scanner->field_name_length = 0;
    scanner->done_matched = 0;
    scanner->done_mismatch = false;
    scanner->in_event = false;
    scanner->has_comment = false;
    scanner->has_other_fields = false;
}

void sse_scanner_init(sse_scanner_t *scanner) {
    RW_ASSERT(scanner != NULL);
    memset(scanner, 0, sizeof *scanner);
    sse_event_reset(scanner);
}

bool sse_scanner_in_event(const sse_scanner_t *scanner) {
    RW_ASSERT(scanner != NULL);
    return scanner->in_event;
}

uint64_t sse_scanner_pending_bytes(const sse_scanner_t *scanner) {
    RW_ASSERT(scanner != NULL);
    return scanner->pending_bytes;
}

/* Bytes of the event's data: to the usage scanner, and against "[DONE]". */
static void sse_data(sse_scanner_t *scanner, const uint8_t *bytes, size_t length) {
    usage_scanner_feed(&scanner->data, bytes, length);
    size_t done_length = sizeof sse_done_text - 1;
    for (size_t index = 0; index < length && !scanner->done_mismatch; index++) {
        if (scanner->done_matched < done_length &&
            bytes[index] == sse_done_text[scanner->done_matched]) {
            scanner->done_matched++;
        } else {
            scanner->done_mismatch = true;
        }
    }
}

/* The field name of the current line is complete: a data field starts a
 * new data line, joined to the previous one with "\n". */
static void sse_field_begin(sse_scanner_t *scanner) {
    static const uint8_t data_name[] = "data";
    size_t name_length = scanner->field_name_length;
    scanner->field = SSE_FIELD_OTHER;
    if (name_length == sizeof data_name - 1 &&
        memcmp(scanner->field_name, data_name, name_length) == 0) {
        scanner->field = SSE_FIELD_DATA;
        if (scanner->data_line_count > 0) {
            sse_data(scanner, (const uint8_t *)"\n", 1);
        }
        scanner->data_line_count++;
        return;
    }
    /* "event", "id", "retry" and unknown names alike: the relay forwards
     * them untouched and needs nothing from them. */
    scanner->has_other_fields = true;
}

/* input[index] is CR or LF ending a line: returns the index after the line
 * end, taking the LF of a CRLF along, or remembering a CR that ends the
 * input so that an LF starting the next input is swallowed. */
static size_t sse_line_end(sse_scanner_t *scanner, const uint8_t *input, size_t length,
                           size_t index) {
    RW_ASSERT(index < length && (input[index] == '\r' || input[index] == '\n'));
    scanner->line_stage = SSE_LINE_START;
    if (input[index] == '\n') {
        return index + 1;
    }
    if (index + 1 == length) {
        scanner->pending_cr = true;
        return index + 1;
    }
    return input[index + 1] == '\n' ? index + 2 : index + 1;
}

static size_t sse_find_line_end(const uint8_t *input, size_t length, size_t index) {
    while (index < length && input[index] != '\n' && input[index] != '\r') {
        index++;
    }
    return index;
}

/* A blank line ended the event at input[.. end): reports it and resets. */
static sse_result_t sse_dispatch(sse_scanner_t *scanner, size_t end, size_t *consumed,
                                 sse_event_t *event) {
    memset(event, 0, sizeof *event);
    event->has_data = scanner->data_line_count > 0;
    event->data_line_count = scanner->data_line_count;
    event->is_done = event->has_data && !scanner->done_mismatch &&
                     scanner->done_matched == sizeof sse_done_text - 1;
    event->has_other_fields = scanner->has_other_fields;
    event->comment_only = scanner->has_comment && !event->has_data && !scanner->has_other_fields;
    usage_scanner_result(&scanner->data, &event->json);
    event->bytes = scanner->pending_bytes + end;
    *consumed = end;
    sse_event_reset(scanner);
    return SSE_EVENT;
}

sse_result_t sse_scan(sse_scanner_t *scanner, const uint8_t *input, size_t length,
                      size_t *consumed, sse_event_t *event) {
    RW_ASSERT(scanner != NULL && consumed != NULL && event != NULL);
    RW_ASSERT(input != NULL || length == 0);
    size_t index = 0;
    while (index < length) {
        uint8_t c = input[index];
        if (scanner->pending_cr) {
            scanner->pending_cr = false;
            if (c == '\n') {
                index++;
                continue;
            }
        }
        if (!scanner->stream_started) {
            if (c == sse_byte_order_mark[scanner->bom_matched]) {
                scanner->bom_matched++;
                scanner->stream_started = scanner->bom_matched == sizeof sse_byte_order_mark;
                index++;
                continue;
            }
            scanner->stream_started = true;
            if (scanner->bom_matched > 0) {
                /* Not a byte order mark after all: those bytes began a
                 * field name that cannot be one we know. */
                scanner->in_event = true;
                scanner->line_stage = SSE_LINE_FIELD_NAME;
                scanner->field_name_length = SSE_FIELD_NAME_CAPACITY + 1;
            }
        }
        switch ((sse_line_stage_t)scanner->line_stage) {
        case SSE_LINE_START:
            if (c == '\n' || c == '\r') {
                return sse_dispatch(scanner, sse_line_end(scanner, input, length, index),
                                    consumed, event);
            }
            scanner->in_event = true;
            if (c == ':') {
                scanner->has_comment = true;
                scanner->line_stage = SSE_LINE_SKIP;
                index++;
            } else {
                scanner->line_stage = SSE_LINE_FIELD_NAME;
                scanner->field_name_length = 0;
            }
            break;
        case SSE_LINE_FIELD_NAME:
            if (c == ':') {
                sse_field_begin(scanner);
                scanner->line_stage = SSE_LINE_VALUE_START;
                index++;
            } else if (c == '\n' || c == '\r') {
                sse_field_begin(scanner); /* a field with an empty value */
                index = sse_line_end(scanner, input, length, index);
            } else {
                if (scanner->field_name_length < SSE_FIELD_NAME_CAPACITY) {
                    scanner->field_name[scanner->field_name_length] = c;
                }
                if (scanner->field_name_length <= SSE_FIELD_NAME_CAPACITY) {
                    scanner->field_name_length++;
                }
                index++;
            }
            break;
        case SSE_LINE_VALUE_START:
            if (c == ' ') {
                index++;
            }
            scanner->line_stage =
                scanner->field == SSE_FIELD_DATA ? SSE_LINE_DATA : SSE_LINE_SKIP;
            break;
        case SSE_LINE_DATA:
        case SSE_LINE_SKIP: {
            size_t end = sse_find_line_end(input, length, index);
            if (scanner->line_stage == SSE_LINE_DATA) {
                sse_data(scanner, input + index, end - index);
            }
            index = end < length ? sse_line_end(scanner, input, length, end) : end;
            break;
        }
        }
    }
    scanner->pending_bytes += length;
    *consumed = length;
    return SSE_AGAIN;
}
