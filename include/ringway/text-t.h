/* Types of the text module (functions are in text.h): the bounded output
 * buffer every formatter in Ringway writes into, and the sizes of the
 * fixed-width texts the module produces. */
#ifndef RINGWAY_TEXT_T_H
#define RINGWAY_TEXT_T_H

#include "ringway/common.h"

/* An append-only byte buffer over caller memory. An append that does not fit
 * sets `overflow`, writes nothing, and every later append is refused too
 * (sticky), so a caller builds a whole answer and checks once at the end.
 * Nothing is ever written at or past bytes[capacity]; no NUL is added. */
typedef struct text_buffer {
    char *bytes;
    size_t capacity;
    size_t length;  /* bytes[0, length) are written; length <= capacity */
    bool overflow;  /* an append did not fit; the content is incomplete */
} text_buffer_t;

enum {
    TEXT_DECIMAL_BYTES = 21,    /* "-9223372036854775808" or "18446744073709551615", and a NUL */
    TEXT_MONEY_BYTES = 32,      /* "-9223372036854.775808" and a NUL */
    TEXT_TIME_BYTES = 32,       /* "2026-11-23T20:35:17.123Z" and a NUL */
    TEXT_MICROS_PER_UNIT = 1000000,
};

#endif
