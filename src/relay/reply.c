/* Our own answers on the request path: OpenAI-shaped errors. A leaf every
 * stage uses; it bills nothing. A stage that holds money settles the hold
 * (settle.c) before it answers, so an answer here never has a hold open. */
#include "relay-internal.h"

#include <stdio.h>

void relay_reply_error(relay_stream_t *stream, uint16_t status, const char *type, const char *message,
                       const char *param, const char *code) {
    RW_ASSERT(!stream->held);
    loop_timer_stop(&stream->timer);
    stream->phase = RELAY_PHASE_DONE;
    server_respond_error(stream->exchange, status, type, message, param, code);
}

/* The same with a Retry-After header (for 503s a client should retry). */
void relay_reply_error_retry_after(relay_stream_t *stream, uint16_t status, const char *type, const char *message,
                                   const char *code, uint32_t retry_after_s) {
    RW_ASSERT(!stream->held);
    loop_timer_stop(&stream->timer);
    stream->phase = RELAY_PHASE_DONE;
    char header[40];
    int length = snprintf(header, sizeof header, "Retry-After: %u\r\n", (unsigned)retry_after_s);
    RW_ASSERT(length > 0 && (size_t)length < sizeof header);
    server_respond_error_with_headers(stream->exchange, status, type, message, NULL, code, header);
}
