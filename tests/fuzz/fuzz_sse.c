/* Fuzzes the text/event-stream scanner (src/sse/sse.c) and the usage scanner
 * under it (src/sse/usage.c) over what an upstream streams.
 *
 * Properties checked, beyond "no crash, no sanitizer report":
 *   - the scanner agrees with a reference reading of the stream written here
 *     from the WHATWG rules (lines end in CRLF, LF or CR; a blank line ends
 *     an event; ':' starts a comment; "data" values joined with "\n"; one
 *     leading byte order mark skipped): the same events, each with the same
 *     has_data, data_line_count, is_done, comment_only and has_other_fields,
 *     the same usage result as a usage scanner run over the reference's
 *     joined data, and, fed whole, the same end offsets;
 *   - the same events whole, in two pieces (split chosen from the input), one
 *     byte at a time and in random pieces. An event's end may move back one
 *     byte only where a piece ends between the CR and LF of its blank line:
 *     the LF then opens the next input and is counted with the next event;
 *   - byte accounting: each event's bytes are exactly the bytes consumed
 *     since the previous event, consumed never exceeds the input, an event
 *     consumes at least one byte, and the bytes of all events plus
 *     sse_scanner_pending_bytes add up to the input length;
 *   - sse_scanner_in_event at the end says whether an event was begun;
 *   - the usage scanner checks of fuzz_usage.h over each event's data and
 *     over the whole input. */
#include "fuzz.h"
#include "fuzz_usage.h"

#include "ringway/json.h"
#include "ringway/sse.h"

enum { FUZZ_INPUT_BYTES_MAX = 65536, FUZZ_EVENTS_MAX = FUZZ_INPUT_BYTES_MAX };

typedef struct reference_event {
    bool has_data;
    bool is_done;
    bool comment_only;
    bool has_other_fields;
    uint32_t data_line_count;
    size_t end;         /* offset just after the blank line that ended it */
    size_t data_offset; /* its joined data in reference_data */
    size_t data_length;
} reference_event_t;

typedef struct reference_stream {
    size_t event_count;
    bool in_event; /* a line was begun after the last event */
} reference_stream_t;

typedef struct scanned_event {
    sse_event_t event;
    size_t end; /* stream offset just after the bytes consumed with it */
} scanned_event_t;

static reference_event_t reference_events[FUZZ_EVENTS_MAX];
static uint8_t reference_data[FUZZ_INPUT_BYTES_MAX];
static scanned_event_t scanned_whole[FUZZ_EVENTS_MAX];
static scanned_event_t scanned_other[FUZZ_EVENTS_MAX];

static const uint8_t byte_order_mark[3] = {0xEF, 0xBB, 0xBF};

/* ---- The reference reading ------------------------------------------------ */

/* Splits the whole input into lines and events, the plain way. A line that
 * the input ends in without a line end belongs to no event. */
static void reference_read(const uint8_t *input, size_t length, reference_stream_t *stream) {
    size_t position = 0;
    if (length >= 3 && memcmp(input, byte_order_mark, 3) == 0) {
        position = 3;
    }
    bool prefix_of_mark = length < 3 && memcmp(input, byte_order_mark, length) == 0;
    stream->event_count = 0;
    stream->in_event = false;
    size_t data_used = 0;
    reference_event_t current = {0};
    bool has_comment = false;
    current.data_offset = data_used;
    while (position < length) {
        size_t line_start = position;
        while (position < length && input[position] != '\r' && input[position] != '\n') {
            position++;
        }
        size_t line_end = position;
        if (position == length) {
            /* An unfinished line: it begins an event unless it is nothing
             * but the start of a byte order mark. */
            if (line_end > line_start && !prefix_of_mark) {
                stream->in_event = true;
            }
            return;
        }
        position += (input[position] == '\r' && position + 1 < length && input[position + 1] == '\n') ? 2 : 1;
        size_t line_length = line_end - line_start;
        const uint8_t *line = input + line_start;
        if (line_length == 0) {
            current.end = position;
            current.has_data = current.data_line_count > 0;
            current.data_length = data_used - current.data_offset;
            current.is_done = current.has_data && current.data_length == 6 &&
                              memcmp(reference_data + current.data_offset, "[DONE]", 6) == 0;
            current.comment_only = has_comment && !current.has_data && !current.has_other_fields;
            reference_events[stream->event_count++] = current;
            current = (reference_event_t){.data_offset = data_used};
            has_comment = false;
            stream->in_event = false;
            continue;
        }
        stream->in_event = true;
        if (line[0] == ':') {
            has_comment = true;
            continue;
        }
        size_t name_length = 0;
        while (name_length < line_length && line[name_length] != ':') {
            name_length++;
        }
        size_t value_start = name_length < line_length ? name_length + 1 : line_length;
        if (value_start < line_length && line[value_start] == ' ') {
            value_start++;
        }
        if (name_length == 4 && memcmp(line, "data", 4) == 0) {
            if (current.data_line_count > 0) {
                reference_data[data_used++] = '\n';
            }
            memcpy(reference_data + data_used, line + value_start, line_length - value_start);
            data_used += line_length - value_start;
            current.data_line_count++;
        } else {
            current.has_other_fields = true;
        }
    }
}

/* ---- Driving the scanner under test --------------------------------------- */

typedef enum piece_mode {
    PIECES_WHOLE,
    PIECES_TWO,
    PIECES_BYTES,
    PIECES_RANDOM
} piece_mode_t;

static size_t next_piece_end(piece_mode_t mode, size_t position, size_t length, size_t split,
                             fuzz_random_t *random) {
    switch (mode) {
    case PIECES_WHOLE:
        return length;
    case PIECES_TWO:
        return position < split ? split : length;
    case PIECES_BYTES:
        return position + 1;
    case PIECES_RANDOM:
        return position + 1 + fuzz_random_upto(random, RW_MIN(length - position - 1, (size_t)40));
    }
    return length;
}

/* Scans input in pieces; returns the number of events, and whether an event
 * was begun at the end in *in_event. */
static size_t scan_in_pieces(const uint8_t *input, size_t length, piece_mode_t mode, size_t split,
                             fuzz_random_t *random, scanned_event_t *events, bool *in_event) {
    sse_scanner_t scanner;
    sse_scanner_init(&scanner);
    size_t count = 0;
    size_t position = 0;
    size_t previous_end = 0;
    while (position < length) {
        size_t piece_end = next_piece_end(mode, position, length, split, random);
        FUZZ_CHECK(piece_end > position && piece_end <= length);
        while (position < piece_end) {
            size_t available = piece_end - position;
            size_t consumed = available + 1;
            sse_event_t event;
            sse_result_t result = sse_scan(&scanner, input + position, available, &consumed, &event);
            FUZZ_CHECK(consumed <= available);
            position += consumed;
            if (result == SSE_AGAIN) {
                FUZZ_CHECK(consumed == available);
                FUZZ_CHECK(sse_scanner_pending_bytes(&scanner) == position - previous_end);
                continue;
            }
            FUZZ_CHECK(result == SSE_EVENT && consumed >= 1);
            FUZZ_CHECK(event.bytes == position - previous_end);
            FUZZ_CHECK(sse_scanner_pending_bytes(&scanner) == 0);
            previous_end = position;
            FUZZ_CHECK(count < FUZZ_EVENTS_MAX);
            events[count].event = event;
            events[count].end = position;
            count++;
        }
    }
    FUZZ_CHECK(sse_scanner_pending_bytes(&scanner) == length - previous_end);
    *in_event = sse_scanner_in_event(&scanner);
    return count;
}

static void check_event_flags(const sse_event_t *event, const reference_event_t *reference) {
    FUZZ_CHECK(event->has_data == reference->has_data);
    FUZZ_CHECK(event->data_line_count == reference->data_line_count);
    FUZZ_CHECK(event->is_done == reference->is_done);
    FUZZ_CHECK(event->comment_only == reference->comment_only);
    FUZZ_CHECK(event->has_other_fields == reference->has_other_fields);
    FUZZ_CHECK(!event->is_done || event->has_data);
}

/* The end an event may have when scanned in pieces: where the reference
 * says, or one byte earlier when its blank line ends in CRLF (a piece ended
 * after the CR; the LF went to the next event). */
static bool end_is_acceptable(const uint8_t *input, size_t reference_end, size_t end) {
    if (end == reference_end) {
        return true;
    }
    return end + 1 == reference_end && reference_end >= 2 && input[reference_end - 1] == '\n' &&
           input[reference_end - 2] == '\r';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > FUZZ_INPUT_BYTES_MAX) {
        return 0;
    }
    fuzz_random_t random = {fuzz_hash(data, size)};
    reference_stream_t stream;
    reference_read(data, size, &stream);

    bool in_event = false;
    size_t count = scan_in_pieces(data, size, PIECES_WHOLE, size, &random, scanned_whole, &in_event);
    FUZZ_CHECK(count == stream.event_count);
    FUZZ_CHECK(in_event == stream.in_event);
    for (size_t index = 0; index < count; index++) {
        const reference_event_t *reference = &reference_events[index];
        check_event_flags(&scanned_whole[index].event, reference);
        FUZZ_CHECK(scanned_whole[index].end == reference->end);
        usage_result_t expected;
        const uint8_t *joined = reference_data + reference->data_offset;
        usage_scan(joined, reference->data_length, reference->data_length, &expected);
        FUZZ_CHECK(memcmp(&expected, &scanned_whole[index].event.json, sizeof expected) == 0);
        if (reference->has_data) {
            bool valid = json_validate(joined, reference->data_length, NULL) == 0;
            check_usage_scanner(joined, reference->data_length, valid,
                                fuzz_random_upto(&random, reference->data_length));
        }
    }

    static const piece_mode_t modes[] = {PIECES_TWO, PIECES_BYTES, PIECES_RANDOM};
    for (size_t mode = 0; mode < RW_ARRAY_LENGTH(modes); mode++) {
        size_t split = fuzz_split_point(data, size, &random);
        bool other_in_event = false;
        size_t other_count =
            scan_in_pieces(data, size, modes[mode], split, &random, scanned_other, &other_in_event);
        FUZZ_CHECK(other_count == count);
        FUZZ_CHECK(other_in_event == in_event);
        for (size_t index = 0; index < count; index++) {
            const sse_event_t *event = &scanned_other[index].event;
            check_event_flags(event, &reference_events[index]);
            FUZZ_CHECK(memcmp(&event->json, &scanned_whole[index].event.json, sizeof event->json) == 0);
            FUZZ_CHECK(end_is_acceptable(data, reference_events[index].end, scanned_other[index].end));
        }
    }

    /* The whole input as one JSON document, for the usage scanner alone. */
    check_usage_scanner(data, size, json_validate(data, size, NULL) == 0,
                        fuzz_split_point(data, size, &random));
    return 0;
}
