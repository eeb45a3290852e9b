/* UTF-8 validation per RFC 3629 (Unicode table 3-7, "well-formed byte
 * sequences"): the second byte's range depends on the lead, which is what
 * excludes overlong forms, surrogates and code points above U+10FFFF. */
#include "ringway/text.h"

size_t text_utf8_sequence_length(const uint8_t *bytes, size_t length) {
    RW_ASSERT(bytes != NULL && length >= 1);
    uint8_t lead = bytes[0];
    if (lead < 0x80) return 1;
    size_t continuation_count = 0;
    uint8_t second_low = 0x80;
    uint8_t second_high = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
        continuation_count = 1;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        continuation_count = 2;
        if (lead == 0xE0) second_low = 0xA0;  /* below: overlong */
        if (lead == 0xED) second_high = 0x9F; /* above: surrogates */
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        continuation_count = 3;
        if (lead == 0xF0) second_low = 0x90;  /* below: overlong */
        if (lead == 0xF4) second_high = 0x8F; /* above: beyond U+10FFFF */
    } else {
        return 0;
    }
    if (length < continuation_count + 1) return 0;
    if (bytes[1] < second_low || bytes[1] > second_high) return 0;
    for (size_t index = 2; index <= continuation_count; index++) {
        if (bytes[index] < 0x80 || bytes[index] > 0xBF) return 0;
    }
    return continuation_count + 1;
}

bool text_utf8_valid(const uint8_t *bytes, size_t length) {
    RW_ASSERT(bytes != NULL || length == 0);
    size_t index = 0;
    while (index < length) {
        if (bytes[index] < 0x80) {
            index++;
            continue;
        }
        size_t sequence = text_utf8_sequence_length(bytes + index, length - index);
        if (sequence == 0) return false;
        index += sequence;
    }
    return true;
}
