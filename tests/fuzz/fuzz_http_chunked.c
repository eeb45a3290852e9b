/* Fuzzes the chunked-body decoder (src/http/chunked.c) two ways.
 *
 * Decoding the input as a chunked body, it checks, beyond "no crash, no
 * sanitizer report":
 *   - the same outcome whole, in two pieces (split chosen from the input),
 *     one byte at a time and in random pieces: the same verdict (done,
 *     refused, or waiting for more), the same end offset, the same error
 *     message and the same payload bytes;
 *   - the call contract: consumed never exceeds the input; a payload span is
 *     non-empty, inside the bytes consumed and ends where they end; AGAIN
 *     consumes everything; after DONE or ERROR nothing more is consumed;
 *     payload_bytes_total equals the payload reported;
 *   - agreement with a straightforward reference decoder written here from
 *     RFC 9112 section 7.1 and the bounds in http-t.h: same verdict, same
 *     end of body, same payload.
 * Encoding the input as a chunked body (chunk sizes, hex case, leading zeros,
 * extensions and trailers chosen from the input) and decoding it back, it
 * checks the decoder finishes exactly at the end of the encoding, leaves the
 * bytes after it alone, and returns the input as payload. */
#include "fuzz.h"

#include "ringway/http.h"

enum {
    FUZZ_INPUT_BYTES_MAX = 65536,
    FUZZ_ENCODE_INPUT_BYTES_MAX = 16384,
    /* Worst case per payload byte: a one-byte chunk with its size line,
     * extension and CRLFs. */
    FUZZ_ENCODED_BYTES_MAX = FUZZ_ENCODE_INPUT_BYTES_MAX * 48 + 4096
};

typedef enum verdict {
    VERDICT_DONE,
    VERDICT_INCOMPLETE,
    VERDICT_INVALID
} verdict_t;

typedef struct decode_outcome {
    verdict_t verdict;
    size_t end;                /* stream offset just after the last byte consumed */
    const char *error_message; /* the decoder's, for VERDICT_INVALID */
    size_t payload_length;
    uint8_t *payload;
} decode_outcome_t;

static uint8_t payload_whole[FUZZ_ENCODED_BYTES_MAX];
static uint8_t payload_other[FUZZ_ENCODED_BYTES_MAX];
static uint8_t payload_reference[FUZZ_ENCODED_BYTES_MAX];
static uint8_t encoded[FUZZ_ENCODED_BYTES_MAX];

/* ---- The reference decoder ------------------------------------------------ */

static int reference_hex(uint8_t byte) {
    if (byte >= '0' && byte <= '9') return byte - '0';
    if (byte >= 'a' && byte <= 'f') return byte - 'a' + 10;
    if (byte >= 'A' && byte <= 'F') return byte - 'A' + 10;
    return -1;
}

static bool reference_is_text(uint8_t byte) {
    return byte == '\t' || (byte >= 0x20 && byte != 0x7f);
}

/* Decodes input[0, length) as one chunked body from its first byte, copying
 * the payload to outcome->payload. Written line by line, unlike the state
 * machine under test, so that the two fail differently if either is wrong. */
static void reference_decode(const uint8_t *input, size_t length, decode_outcome_t *outcome) {
    size_t position = 0;
    outcome->payload_length = 0;
    outcome->error_message = NULL;
#define REFERENCE_NEED_BYTE()                                                                     \
    do {                                                                                           \
        if (position == length) {                                                                  \
            outcome->verdict = VERDICT_INCOMPLETE;                                                 \
            outcome->end = length;                                                                 \
            return;                                                                                \
        }                                                                                          \
    } while (0)
#define REFERENCE_REFUSE()                                                                         \
    do {                                                                                           \
        outcome->verdict = VERDICT_INVALID;                                                        \
        return;                                                                                    \
    } while (0)
    for (;;) {
        /* chunk-size [ BWS ";" extension ] CRLF; the bytes before CR count
         * against HTTP_CHUNK_LINE_BYTES_MAX. */
        size_t line_bytes = 0;
        uint64_t chunk_size = 0;
        size_t digits = 0;
        for (;;) {
            REFERENCE_NEED_BYTE();
            int digit = reference_hex(input[position]);
            if (digit < 0) {
                break;
            }
            if (++line_bytes > HTTP_CHUNK_LINE_BYTES_MAX) REFERENCE_REFUSE();
            chunk_size = chunk_size * 16 + (uint64_t)digit;
            if (chunk_size > HTTP_CHUNK_SIZE_MAX) REFERENCE_REFUSE();
            digits++;
            position++;
        }
        if (digits == 0) REFERENCE_REFUSE();
        bool saw_space = false;
        while (input[position] == ' ' || input[position] == '\t') {
            if (++line_bytes > HTTP_CHUNK_LINE_BYTES_MAX) REFERENCE_REFUSE();
            saw_space = true;
            position++;
            REFERENCE_NEED_BYTE();
        }
        if (input[position] == ';') {
            for (;;) {
                if (++line_bytes > HTTP_CHUNK_LINE_BYTES_MAX) REFERENCE_REFUSE();
                position++;
                REFERENCE_NEED_BYTE();
                if (input[position] == '\r') {
                    break;
                }
                if (!reference_is_text(input[position])) {
                    if (++line_bytes > HTTP_CHUNK_LINE_BYTES_MAX) REFERENCE_REFUSE();
                    REFERENCE_REFUSE();
                }
            }
        } else if (input[position] != '\r' || saw_space) {
            if (input[position] != '\r' && ++line_bytes > HTTP_CHUNK_LINE_BYTES_MAX) REFERENCE_REFUSE();
            REFERENCE_REFUSE();
        }
        position++; /* the CR */
        REFERENCE_NEED_BYTE();
        if (input[position] != '\n') REFERENCE_REFUSE();
        position++;

        if (chunk_size > 0) {
            size_t available = length - position;
            size_t take = chunk_size < available ? (size_t)chunk_size : available;
            memcpy(outcome->payload + outcome->payload_length, input + position, take);
            outcome->payload_length += take;
            position += take;
            if (take < chunk_size) {
                REFERENCE_NEED_BYTE();
            }
            REFERENCE_NEED_BYTE();
            if (input[position] != '\r') REFERENCE_REFUSE();
            position++;
            REFERENCE_NEED_BYTE();
            if (input[position] != '\n') REFERENCE_REFUSE();
            position++;
            continue;
        }

        /* trailer-section CRLF: every byte counts against the trailer bound. */
        size_t trailer_bytes = 0;
#define REFERENCE_TRAILER_BYTE()                                                                  \
    do {                                                                                           \
        REFERENCE_NEED_BYTE();                                                                     \
        if (++trailer_bytes > HTTP_CHUNK_TRAILER_BYTES_MAX) REFERENCE_REFUSE();                    \
    } while (0)
        for (;;) {
            REFERENCE_TRAILER_BYTE();
            if (input[position] == '\r') {
                position++;
                REFERENCE_TRAILER_BYTE();
                if (input[position] != '\n') REFERENCE_REFUSE();
                outcome->verdict = VERDICT_DONE;
                outcome->end = position + 1;
                return;
            }
            if (!http_is_token_char(input[position])) REFERENCE_REFUSE();
            position++;
            for (;;) { /* the rest of the name, then ':' */
                REFERENCE_TRAILER_BYTE();
                uint8_t byte = input[position++];
                if (byte == ':') break;
                if (!http_is_token_char(byte)) REFERENCE_REFUSE();
            }
            for (;;) { /* the value, then CR */
                REFERENCE_TRAILER_BYTE();
                uint8_t byte = input[position++];
                if (byte == '\r') break;
                if (!reference_is_text(byte)) REFERENCE_REFUSE();
            }
            REFERENCE_TRAILER_BYTE();
            if (input[position] != '\n') REFERENCE_REFUSE();
            position++;
        }
#undef REFERENCE_TRAILER_BYTE
    }
#undef REFERENCE_NEED_BYTE
#undef REFERENCE_REFUSE
}

/* ---- Driving the decoder under test --------------------------------------- */

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

static void decode_in_pieces(const uint8_t *input, size_t length, piece_mode_t mode, size_t split,
                             fuzz_random_t *random, decode_outcome_t *outcome) {
    http_chunked_decoder_t decoder;
    http_chunked_decoder_init(&decoder);
    outcome->payload_length = 0;
    outcome->error_message = NULL;
    size_t position = 0;
    http_chunked_result_t result = HTTP_CHUNKED_AGAIN;
    while (position < length) {
        size_t piece_end = next_piece_end(mode, position, length, split, random);
        FUZZ_CHECK(piece_end > position && piece_end <= length);
        for (;;) {
            size_t available = piece_end - position;
            size_t consumed = 999;
            size_t data_offset = 999;
            size_t data_length = 999;
            result = http_chunked_decode(&decoder, input + position, available, &consumed,
                                         &data_offset, &data_length);
            FUZZ_CHECK(consumed <= available);
            if (result == HTTP_CHUNKED_DATA) {
                FUZZ_CHECK(data_length > 0);
                FUZZ_CHECK(data_offset + data_length == consumed);
                memcpy(outcome->payload + outcome->payload_length, input + position + data_offset,
                       data_length);
                outcome->payload_length += data_length;
            } else {
                FUZZ_CHECK(data_length == 0);
            }
            if (result == HTTP_CHUNKED_AGAIN) {
                FUZZ_CHECK(consumed == available);
            }
            if (result == HTTP_CHUNKED_DONE || result == HTTP_CHUNKED_ERROR) {
                FUZZ_CHECK(consumed >= 1);
            }
            position += consumed;
            FUZZ_CHECK(decoder.payload_bytes_total == outcome->payload_length);
            if (result != HTTP_CHUNKED_DATA || position == piece_end) {
                break;
            }
        }
        if (result == HTTP_CHUNKED_DONE || result == HTTP_CHUNKED_ERROR) {
            break;
        }
    }
    outcome->end = position;
    if (result == HTTP_CHUNKED_DONE || result == HTTP_CHUNKED_ERROR) {
        outcome->verdict = result == HTTP_CHUNKED_DONE ? VERDICT_DONE : VERDICT_INVALID;
        outcome->error_message = decoder.error_message;
        FUZZ_CHECK((result == HTTP_CHUNKED_ERROR) == (decoder.error_message != NULL));
        /* Finished: further calls consume nothing and say the same. */
        size_t consumed = 999;
        size_t data_offset = 999;
        size_t data_length = 999;
        http_chunked_result_t again = http_chunked_decode(
            &decoder, input + position, length - position, &consumed, &data_offset, &data_length);
        FUZZ_CHECK(again == result && consumed == 0 && data_length == 0);
    } else {
        outcome->verdict = VERDICT_INCOMPLETE;
        FUZZ_CHECK(position == length);
    }
}

static void check_same(const decode_outcome_t *a, const decode_outcome_t *b) {
    FUZZ_CHECK(a->verdict == b->verdict);
    FUZZ_CHECK(a->end == b->end);
    FUZZ_CHECK(a->error_message == b->error_message);
    FUZZ_CHECK(a->payload_length == b->payload_length);
    FUZZ_CHECK(memcmp(a->payload, b->payload, a->payload_length) == 0);
}

static void check_against_reference(const uint8_t *input, size_t length,
                                    const decode_outcome_t *outcome) {
    decode_outcome_t reference = {.payload = payload_reference};
    reference_decode(input, length, &reference);
    FUZZ_CHECK(reference.verdict == outcome->verdict);
    FUZZ_CHECK(reference.payload_length == outcome->payload_length);
    FUZZ_CHECK(memcmp(reference.payload, outcome->payload, outcome->payload_length) == 0);
    if (outcome->verdict != VERDICT_INVALID) {
        FUZZ_CHECK(reference.end == outcome->end);
    }
}

/* Decodes input every way, checks they agree with each other and with the
 * reference; returns the whole-input outcome in *whole. */
static void check_decoding(const uint8_t *input, size_t length, fuzz_random_t *random,
                           decode_outcome_t *whole) {
    whole->payload = payload_whole;
    decode_in_pieces(input, length, PIECES_WHOLE, length, random, whole);
    check_against_reference(input, length, whole);

    decode_outcome_t other = {.payload = payload_other};
    size_t split = fuzz_split_point(input, length, random);
    decode_in_pieces(input, length, PIECES_TWO, split, random, &other);
    check_same(whole, &other);
    decode_in_pieces(input, length, PIECES_BYTES, 0, random, &other);
    check_same(whole, &other);
    decode_in_pieces(input, length, PIECES_RANDOM, 0, random, &other);
    check_same(whole, &other);
}

/* ---- Encoding the input as a chunked body --------------------------------- */

static size_t encode_text(size_t at, const char *text) {
    size_t length = strlen(text);
    memcpy(encoded + at, text, length);
    return at + length;
}

/* Writes data as a valid chunked body with choices taken from random;
 * returns its length. */
static size_t encode_chunked(const uint8_t *data, size_t size, fuzz_random_t *random) {
    static const char *const extensions[] = {";a=b", " ;x", "\t; name=\"quoted value\"", ";", ";k=v;k2"};
    static const char *const trailers[] = {"X-Trailer: t\r\n", "Server-Timing: total;dur=12\r\n",
                                           "a:\r\n", "Digest: sha-256=abc\r\n"};
    size_t at = 0;
    size_t offset = 0;
    while (offset < size) {
        size_t chunk_bytes_max = fuzz_random_upto(random, 3) == 0 ? 4096 : 64;
        size_t chunk = 1 + fuzz_random_upto(random, RW_MIN(size - offset - 1, chunk_bytes_max));
        char line[64];
        int zeros = fuzz_random_upto(random, 7) == 0 ? (int)fuzz_random_upto(random, 20) : 0;
        bool upper = fuzz_random_upto(random, 1) == 0;
        int written = snprintf(line, sizeof line, "%0*zx", zeros + 1, chunk);
        FUZZ_CHECK(written > 0 && (size_t)written < sizeof line);
        for (int index = 0; upper && index < written; index++) {
            if (line[index] >= 'a' && line[index] <= 'f') {
                line[index] = (char)(line[index] - 'a' + 'A');
            }
        }
        at = encode_text(at, line);
        if (fuzz_random_upto(random, 5) == 0) {
            at = encode_text(at, extensions[fuzz_random_upto(random, RW_ARRAY_LENGTH(extensions) - 1)]);
        }
        at = encode_text(at, "\r\n");
        memcpy(encoded + at, data + offset, chunk);
        at += chunk;
        offset += chunk;
        at = encode_text(at, "\r\n");
    }
    at = encode_text(at, fuzz_random_upto(random, 3) == 0 ? "000" : "0");
    if (fuzz_random_upto(random, 3) == 0) {
        at = encode_text(at, extensions[fuzz_random_upto(random, RW_ARRAY_LENGTH(extensions) - 1)]);
    }
    at = encode_text(at, "\r\n");
    size_t trailer_count = fuzz_random_upto(random, 3) == 0 ? fuzz_random_upto(random, 3) : 0;
    for (size_t index = 0; index < trailer_count; index++) {
        at = encode_text(at, trailers[fuzz_random_upto(random, RW_ARRAY_LENGTH(trailers) - 1)]);
    }
    at = encode_text(at, "\r\n");
    FUZZ_CHECK(at <= FUZZ_ENCODED_BYTES_MAX - 64);
    return at;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > FUZZ_INPUT_BYTES_MAX) {
        return 0;
    }
    fuzz_random_t random = {fuzz_hash(data, size)};
    decode_outcome_t whole;
    check_decoding(data, size, &random, &whole);

    /* Round trip: the input as the payload of a body we encode. The bytes
     * of a next message follow it and must not be consumed. */
    size_t payload_size = RW_MIN(size, (size_t)FUZZ_ENCODE_INPUT_BYTES_MAX);
    size_t body_length = encode_chunked(data, payload_size, &random);
    size_t total = encode_text(body_length, "HTTP/1.1 200 OK\r\n");
    check_decoding(encoded, total, &random, &whole);
    FUZZ_CHECK(whole.verdict == VERDICT_DONE);
    FUZZ_CHECK(whole.end == body_length);
    FUZZ_CHECK(whole.payload_length == payload_size);
    FUZZ_CHECK(memcmp(whole.payload, data, payload_size) == 0);
    return 0;
}
