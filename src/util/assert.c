#include "ringway/common.h"

#include <stdio.h>
#include <stdlib.h>

/* Prints where the broken invariant is and aborts, so a core dump or the
 * test runner shows the exact place. Never returns. */
void rw_assert_fail(const char *expression, const char *file, int line, const char *function) {
    fprintf(stderr, "ringway: assertion failed: %s (%s:%d in %s)\n", expression, file, line,
            function);
    fflush(stderr);
    abort();
}
