/* The chunked transfer coding (RFC 9112 section 7.1), decoded as a stream.
 *
 *   chunked-body = *chunk last-chunk trailer-section CRLF
 *   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   last-chunk   = 1*("0") [ chunk-ext ] CRLF
 *
 * Framing bytes are walked one at a time through a small state machine (they
 * are few and bounded); payload is never copied, only reported as a span of
 * the caller's input. Extensions and trailers are checked for shape and
 * skipped: the relay forwards bodies, it does not act on either. */
#include "ringway/http.h"

#include <string.h>

void http_chunked_decoder_init(http_chunked_decoder_t *decoder) {
    RW_ASSERT(decoder != NULL);
    memset(decoder, 0, sizeof(*decoder));
    decoder->state = HTTP_CHUNKED_STATE_SIZE_FIRST;
}

static int chunked_hex_value(uint8_t byte) {
    if (byte >= '0' && byte <= '9') {
        return byte - '0';
    }
    if (byte >= 'a' && byte <= 'f') {
        return byte - 'a' + 10;
    }
    if (byte >= 'A' && byte <= 'F') {
        return byte - 'A' + 10;
    }
    return -1;
}

/* Bytes allowed inside extensions and trailer values: like a field value. */
static bool chunked_is_text_char(uint8_t byte) {
    return byte == '\t' || (byte >= 0x20 && byte != 0x7f);
}

static http_chunked_result_t chunked_fail(http_chunked_decoder_t *decoder, const char *message) {
    decoder->state = HTTP_CHUNKED_STATE_ERROR;
    decoder->error_message = message;
    return HTTP_CHUNKED_ERROR;
}

/* Advances the framing state machine by one byte that is not payload.
 * Returns HTTP_CHUNKED_AGAIN to go on, HTTP_CHUNKED_DONE after the final LF,
 * or HTTP_CHUNKED_ERROR. */
static http_chunked_result_t chunked_step(http_chunked_decoder_t *decoder, uint8_t byte) {
    switch (decoder->state) {
    case HTTP_CHUNKED_STATE_SIZE_FIRST:
    case HTTP_CHUNKED_STATE_SIZE:
    case HTTP_CHUNKED_STATE_SIZE_SPACE:
    case HTTP_CHUNKED_STATE_EXTENSION:
        if (byte != '\r') {
            decoder->line_bytes++;
            if (decoder->line_bytes > HTTP_CHUNK_LINE_BYTES_MAX) {
                return chunked_fail(decoder, "chunk size line too long");
            }
        }
        break;
    case HTTP_CHUNKED_STATE_TRAILER_START:
    case HTTP_CHUNKED_STATE_TRAILER_NAME:
    case HTTP_CHUNKED_STATE_TRAILER_VALUE:
    case HTTP_CHUNKED_STATE_TRAILER_LF:
    case HTTP_CHUNKED_STATE_FINAL_LF:
        decoder->trailer_bytes++;
        if (decoder->trailer_bytes > HTTP_CHUNK_TRAILER_BYTES_MAX) {
            return chunked_fail(decoder, "chunked trailer section too long");
        }
        break;
    default:
        break;
    }

    switch (decoder->state) {
    case HTTP_CHUNKED_STATE_SIZE_FIRST: {
        int digit = chunked_hex_value(byte);
        if (digit < 0) {
            return chunked_fail(decoder, "invalid chunk size");
        }
        decoder->chunk_remaining = (uint64_t)digit;
        decoder->state = HTTP_CHUNKED_STATE_SIZE;
        return HTTP_CHUNKED_AGAIN;
    }
    case HTTP_CHUNKED_STATE_SIZE: {
        int digit = chunked_hex_value(byte);
        if (digit >= 0) {
            if (decoder->chunk_remaining > (HTTP_CHUNK_SIZE_MAX - (uint64_t)digit) / 16) {
                return chunked_fail(decoder, "chunk size too large");
            }
            decoder->chunk_remaining = decoder->chunk_remaining * 16 + (uint64_t)digit;
        } else if (byte == '\r') {
            decoder->state = HTTP_CHUNKED_STATE_SIZE_LF;
        } else if (byte == ';') {
            decoder->state = HTTP_CHUNKED_STATE_EXTENSION;
        } else if (byte == ' ' || byte == '\t') {
            decoder->state = HTTP_CHUNKED_STATE_SIZE_SPACE;
        } else if (byte == '\n') {
            return chunked_fail(decoder, "bare lf in chunked body");
        } else {
            return chunked_fail(decoder, "invalid chunk size");
        }
        return HTTP_CHUNKED_AGAIN;
    }
    case HTTP_CHUNKED_STATE_SIZE_SPACE:
        /* BWS is allowed only before a ';' that starts an extension. */
        if (byte == ';') {
            decoder->state = HTTP_CHUNKED_STATE_EXTENSION;
        } else if (byte != ' ' && byte != '\t') {
            return chunked_fail(decoder, "invalid chunk size");
        }
        return HTTP_CHUNKED_AGAIN;
    case HTTP_CHUNKED_STATE_EXTENSION:
        if (byte == '\r') {
            decoder->state = HTTP_CHUNKED_STATE_SIZE_LF;
        } else if (byte == '\n') {
            return chunked_fail(decoder, "bare lf in chunked body");
        } else if (!chunked_is_text_char(byte)) {
            return chunked_fail(decoder, "invalid chunk extension");
        }
        return HTTP_CHUNKED_AGAIN;
    case HTTP_CHUNKED_STATE_SIZE_LF:
        if (byte != '\n') {
            return chunked_fail(decoder, "missing lf after chunk size");
        }
        if (decoder->chunk_remaining == 0) {
            decoder->trailer_bytes = 0;
            decoder->state = HTTP_CHUNKED_STATE_TRAILER_START;
        } else {
            decoder->state = HTTP_CHUNKED_STATE_DATA;
        }
        return HTTP_CHUNKED_AGAIN;
    case HTTP_CHUNKED_STATE_DATA_CR:
        if (byte != '\r') {
            return chunked_fail(decoder, byte == '\n' ? "bare lf in chunked body"
                                                      : "missing crlf after chunk data");
        }
        decoder->state = HTTP_CHUNKED_STATE_DATA_LF;
        return HTTP_CHUNKED_AGAIN;
    case HTTP_CHUNKED_STATE_DATA_LF:
        if (byte != '\n') {
            return chunked_fail(decoder, "missing crlf after chunk data");
        }
        decoder->line_bytes = 0;
        decoder->state = HTTP_CHUNKED_STATE_SIZE_FIRST;
        return HTTP_CHUNKED_AGAIN;
    case HTTP_CHUNKED_STATE_TRAILER_START:
        if (byte == '\r') {
            decoder->state = HTTP_CHUNKED_STATE_FINAL_LF;
        } else if (http_is_token_char(byte)) {
            decoder->state = HTTP_CHUNKED_STATE_TRAILER_NAME;
        } else if (byte == '\n') {
            return chunked_fail(decoder, "bare lf in chunked body");
        } else {
            return chunked_fail(decoder, "invalid chunked trailer field");
        }
        return HTTP_CHUNKED_AGAIN;
    case HTTP_CHUNKED_STATE_TRAILER_NAME:
        if (byte == ':') {
            decoder->state = HTTP_CHUNKED_STATE_TRAILER_VALUE;
        } else if (!http_is_token_char(byte)) {
            return chunked_fail(decoder, "invalid chunked trailer field");
        }
        return HTTP_CHUNKED_AGAIN;
    case HTTP_CHUNKED_STATE_TRAILER_VALUE:
        if (byte == '\r') {
            decoder->state = HTTP_CHUNKED_STATE_TRAILER_LF;
        } else if (byte == '\n') {
            return chunked_fail(decoder, "bare lf in chunked body");
        } else if (!chunked_is_text_char(byte)) {
            return chunked_fail(decoder, "invalid chunked trailer field");
        }
        return HTTP_CHUNKED_AGAIN;
    case HTTP_CHUNKED_STATE_TRAILER_LF:
        if (byte != '\n') {
            return chunked_fail(decoder, "missing lf after chunked trailer field");
        }
        decoder->state = HTTP_CHUNKED_STATE_TRAILER_START;
        return HTTP_CHUNKED_AGAIN;
    case HTTP_CHUNKED_STATE_FINAL_LF:
        if (byte != '\n') {
            return chunked_fail(decoder, "missing lf at end of chunked body");
        }
        decoder->state = HTTP_CHUNKED_STATE_DONE;
        return HTTP_CHUNKED_DONE;
    case HTTP_CHUNKED_STATE_DATA:
    case HTTP_CHUNKED_STATE_DONE:
    case HTTP_CHUNKED_STATE_ERROR:
        break;
    }
    RW_ASSERT(false && "chunked_step called in a state that takes no framing byte");
    return HTTP_CHUNKED_ERROR;
}

http_chunked_result_t http_chunked_decode(http_chunked_decoder_t *decoder, const uint8_t *input,
                                          size_t length, size_t *consumed, size_t *data_offset,
                                          size_t *data_length) {
    RW_ASSERT(decoder != NULL && consumed != NULL && data_offset != NULL && data_length != NULL);
    RW_ASSERT(input != NULL || length == 0);
    *consumed = 0;
    *data_offset = 0;
    *data_length = 0;
    if (decoder->state == HTTP_CHUNKED_STATE_DONE) {
        return HTTP_CHUNKED_DONE;
    }
    if (decoder->state == HTTP_CHUNKED_STATE_ERROR) {
        return HTTP_CHUNKED_ERROR;
    }
    size_t position = 0;
    while (position < length) {
        if (decoder->state == HTTP_CHUNKED_STATE_DATA) {
            RW_ASSERT(decoder->chunk_remaining > 0);
            uint64_t available = (uint64_t)(length - position);
            uint64_t take = RW_MIN(decoder->chunk_remaining, available);
            decoder->chunk_remaining -= take;
            decoder->payload_bytes_total += take;
            if (decoder->chunk_remaining == 0) {
                decoder->state = HTTP_CHUNKED_STATE_DATA_CR;
            }
            *data_offset = position;
            *data_length = (size_t)take;
            *consumed = position + (size_t)take;
            RW_ASSERT(*data_length > 0 && *consumed <= length);
            return HTTP_CHUNKED_DATA;
        }
        http_chunked_result_t result = chunked_step(decoder, input[position]);
        position++;
        if (result != HTTP_CHUNKED_AGAIN) {
            *consumed = position;
            return result;
        }
    }
    *consumed = length;
    return HTTP_CHUNKED_AGAIN;
}
