/* Planning, the third stage: the upstream request as our head followed by
 * the client's body in splices (no copy of the body). The edits: the public
 * model name becomes the upstream's; a streaming request that did not ask
 * for usage asks for it (billing needs it; stream.c strips the usage-only
 * event again on the way back); a chat request that set no output limit
 * gets the one admission chose. Planned again for each attempt (stream.c),
 * for the attempt's route and key. */
#include "relay-internal.h"

#include <stdio.h>
#include <string.h>

static bool relay_plan_object_is_empty(const uint8_t *body, json_span_t value) {
    for (uint32_t index = 1; index + 1 < value.length; index++) {
        uint8_t byte = body[value.offset + index];
        if (byte != ' ' && byte != '\t' && byte != '\r' && byte != '\n') return false;
    }
    return true;
}

/* The edit that makes a streaming request ask for usage. */
static relay_edit_t relay_plan_usage_edit(const relay_request_facts_t *facts, const uint8_t *body) {
    static const char insert_member[] = "\"stream_options\":{\"include_usage\":true},";
    static const char whole_object[] = "{\"include_usage\":true}";
    static const char member_with_comma[] = "\"include_usage\":true,";
    static const char true_text[] = "true";
    if (!facts->stream_options_present) {
        return (relay_edit_t){.offset = facts->members_offset, .removed = 0, .text = insert_member,
                              .length = sizeof insert_member - 1};
    }
    if (!facts->stream_options_is_object) {
        return (relay_edit_t){.offset = facts->stream_options.offset, .removed = facts->stream_options.length,
                              .text = whole_object, .length = sizeof whole_object - 1};
    }
    if (facts->include_usage_present) {
        return (relay_edit_t){.offset = facts->include_usage.offset, .removed = facts->include_usage.length,
                              .text = true_text, .length = sizeof true_text - 1};
    }
    /* Inside an existing object: with a comma unless the object is empty. */
    bool empty = relay_plan_object_is_empty(body, facts->stream_options);
    return (relay_edit_t){.offset = facts->stream_options.offset + 1, .removed = 0, .text = member_with_comma,
                          .length = (uint32_t)(sizeof member_with_comma - 1 - (empty ? 1 : 0))};
}

/* Writes the request head and the pieces: head, then the body between the
 * edits (sorted here by offset) with each edit's text in its place. */
static void relay_plan_pieces(relay_stream_t *stream, const char *endpoint, relay_edit_t *edits, uint32_t edit_count,
                              bool wants_event_stream) {
    server_exchange_t *exchange = stream->exchange;
    const config_upstream_t *upstream = stream->pool->upstream;
    const char *key = relay_route_key(stream);
    const uint8_t *body = server_body(exchange);
    size_t body_length = exchange->body_length;
    relay_stream_scratch_t *scratch = &stream->scratch;
    RW_ASSERT(edit_count <= RELAY_EDITS_MAX);
    for (uint32_t index = 1; index < edit_count; index++) {
        for (uint32_t at = index; at > 0 && edits[at].offset < edits[at - 1].offset; at--) {
            relay_edit_t swap = edits[at];
            edits[at] = edits[at - 1];
            edits[at - 1] = swap;
        }
    }
    size_t new_length = body_length;
    for (uint32_t index = 0; index < edit_count; index++) new_length = new_length - edits[index].removed + edits[index].length;
    bool default_port = (upstream->tls && upstream->port == 443) || (!upstream->tls && upstream->port == 80);
    char port_text[8] = "";
    if (!default_port) snprintf(port_text, sizeof port_text, ":%u", (unsigned)upstream->port);
    int head_length = snprintf((char *)scratch->request_head, sizeof scratch->request_head,
                               "POST %s%s HTTP/1.1\r\nHost: %s%s\r\n%s%s%sContent-Type: application/json\r\n"
                               "Accept: %s\r\nAccept-Encoding: identity\r\nUser-Agent: ringway/%s\r\n"
                               "Content-Length: %zu\r\n\r\n",
                               upstream->base_path, endpoint, upstream->host, port_text,
                               key != NULL ? "Authorization: Bearer " : "", key != NULL ? key : "",
                               key != NULL ? "\r\n" : "",
                               wants_event_stream ? "text/event-stream" : "application/json", RW_VERSION, new_length);
    RW_ASSERT(head_length > 0 && (size_t)head_length < sizeof scratch->request_head);
    uint32_t count = 0;
    scratch->request_pieces[count++] = (struct iovec){.iov_base = scratch->request_head, .iov_len = (size_t)head_length};
    size_t position = 0;
    for (uint32_t index = 0; index < edit_count; index++) {
        RW_ASSERT(edits[index].offset >= position && edits[index].offset + edits[index].removed <= body_length);
        scratch->request_pieces[count++] =
            (struct iovec){.iov_base = (void *)(body + position), .iov_len = edits[index].offset - position};
        scratch->request_pieces[count++] =
            (struct iovec){.iov_base = (void *)edits[index].text, .iov_len = edits[index].length};
        position = edits[index].offset + edits[index].removed;
    }
    scratch->request_pieces[count++] =
        (struct iovec){.iov_base = (void *)(body + position), .iov_len = body_length - position};
    RW_ASSERT(count <= UPSTREAM_IOVECS_MAX);
    stream->request_piece_count = count;
}

/* Plans the request of the current attempt into scratch.request_pieces. */
void relay_plan(relay_stream_t *stream) {
    const relay_request_facts_t *facts = &stream->facts;
    const router_route_t *route = stream->route;
    RW_ASSERT(route != NULL && stream->pool != NULL);
    const uint8_t *body = server_body(stream->exchange);
    relay_edit_t edits[RELAY_EDITS_MAX];
    uint32_t edit_count = 0;
    edits[edit_count++] = (relay_edit_t){.offset = facts->model.offset, .removed = facts->model.length,
                                         .text = route->upstream_model_json,
                                         .length = (uint32_t)route->upstream_model_json_length};
    if (stream->endpoint == RELAY_ENDPOINT_EMBEDDINGS) {
        relay_plan_pieces(stream, "/embeddings", edits, edit_count, false);
        return;
    }
    RW_ASSERT(stream->endpoint == RELAY_ENDPOINT_CHAT);
    if (facts->wants_usage_inserted) edits[edit_count++] = relay_plan_usage_edit(facts, body);
    if (facts->max_tokens_length > 0) {
        edits[edit_count++] = (relay_edit_t){.offset = facts->max_tokens_offset, .removed = facts->max_tokens_removed,
                                             .text = facts->max_tokens_text, .length = facts->max_tokens_length};
    }
    relay_plan_pieces(stream, "/chat/completions", edits, edit_count, stream->client_streaming);
}
