/* Record encodings of the store: compact versioned binary for users, keys
 * and holds (read only by the relay), JSON objects for usage records and
 * audit entries (exported as JSON lines and CSV by the ops tool). Pure: no
 * I/O, no allocation. */
#include "ringway/json.h"
#include "ringway/store.h"
#include "ringway/text.h"

#include <string.h>

/* Binary layout: tag byte, version byte, then the fields in a fixed order:
 * integers little-endian (u32 4 bytes, u64/i64 8 bytes), booleans one byte
 * (0/1), fixed byte arrays as is, strings as a u16 length and the bytes (no
 * NUL). A later version appends fields; version 1 decoders refuse it. */
enum {
    STORE_TAG_USER = 'U',
    STORE_TAG_KEY = 'K',
    STORE_TAG_HOLD = 'H',
    STORE_TAG_USAGE_BLOCK = 'B',
    STORE_RECORD_VERSION = 1,
    /* Key records since rate limits: the tier by name, the limit overrides,
     * the token quota and the tokens used. Version 1 key records still
     * decode (default tier, no overrides, no quota, nothing used). */
    STORE_KEY_RECORD_VERSION = 2,
};

typedef struct store_writer {
    uint8_t *out;
    size_t capacity;
    size_t length;
    bool overflow;
} store_writer_t;

static void store_writer_bytes(store_writer_t *writer, const void *bytes, size_t length) {
    if (writer->overflow || writer->capacity - writer->length < length) {
        writer->overflow = true;
        return;
    }
    memcpy(writer->out + writer->length, bytes, length);
    writer->length += length;
}

static void store_writer_u8(store_writer_t *writer, uint8_t value) { store_writer_bytes(writer, &value, 1); }

static void store_writer_u32(store_writer_t *writer, uint32_t value) {
    uint8_t bytes[4];
    for (int index = 0; index < 4; index++) bytes[index] = (uint8_t)(value >> (8 * index));
    store_writer_bytes(writer, bytes, sizeof bytes);
}

static void store_writer_u64(store_writer_t *writer, uint64_t value) {
    uint8_t bytes[8];
    for (int index = 0; index < 8; index++) bytes[index] = (uint8_t)(value >> (8 * index));
    store_writer_bytes(writer, bytes, sizeof bytes);
}

/* `text` lives in an array of array_bytes and must be NUL-terminated in it. */
static void store_writer_text(store_writer_t *writer, const char *text, size_t array_bytes) {
    size_t length = strnlen(text, array_bytes);
    RW_ASSERT(length < array_bytes);
    RW_ASSERT(length <= UINT16_MAX);
    uint8_t prefix[2] = {(uint8_t)length, (uint8_t)(length >> 8)};
    store_writer_bytes(writer, prefix, sizeof prefix);
    store_writer_bytes(writer, text, length);
}

static int store_writer_finish(const store_writer_t *writer) {
    if (writer->overflow) return -1;
    RW_ASSERT(writer->length <= INT32_MAX);
    return (int)writer->length;
}

typedef struct store_reader {
    const uint8_t *bytes;
    size_t length;
    size_t position;
    bool failed;
} store_reader_t;

static const uint8_t *store_reader_take(store_reader_t *reader, size_t length) {
    if (reader->failed || reader->length - reader->position < length) {
        reader->failed = true;
        return NULL;
    }
    const uint8_t *bytes = reader->bytes + reader->position;
    reader->position += length;
    return bytes;
}

static uint8_t store_reader_u8(store_reader_t *reader) {
    const uint8_t *bytes = store_reader_take(reader, 1);
    return bytes == NULL ? 0 : bytes[0];
}

static bool store_reader_bool(store_reader_t *reader) {
    uint8_t value = store_reader_u8(reader);
    if (value > 1) reader->failed = true;
    return value == 1;
}

static uint32_t store_reader_u32(store_reader_t *reader) {
    const uint8_t *bytes = store_reader_take(reader, 4);
    if (bytes == NULL) return 0;
    uint32_t value = 0;
    for (int index = 0; index < 4; index++) value |= (uint32_t)bytes[index] << (8 * index);
    return value;
}

static uint64_t store_reader_u64(store_reader_t *reader) {
    const uint8_t *bytes = store_reader_take(reader, 8);
    if (bytes == NULL) return 0;
    uint64_t value = 0;
    for (int index = 0; index < 8; index++) value |= (uint64_t)bytes[index] << (8 * index);
    return value;
}

static int64_t store_reader_i64(store_reader_t *reader) { return (int64_t)store_reader_u64(reader); }

/* The `length` bytes of a string whose length prefix was read: refuses one
 * that does not fit with its NUL or holds a NUL byte. */
static void store_reader_text_bytes(store_reader_t *reader, size_t length, char *out, size_t out_bytes) {
    if (length >= out_bytes) {
        reader->failed = true;
        return;
    }
    const uint8_t *bytes = store_reader_take(reader, length);
    if (bytes == NULL) return;
    if (memchr(bytes, '\0', length) != NULL) {
        reader->failed = true;
        return;
    }
    memcpy(out, bytes, length);
    out[length] = '\0';
}

/* A string as a u16 little-endian length and the bytes. */
static void store_reader_text(store_reader_t *reader, char *out, size_t out_bytes) {
    out[0] = '\0';
    const uint8_t *prefix = store_reader_take(reader, 2);
    if (prefix == NULL) return;
    store_reader_text_bytes(reader, (size_t)prefix[0] | (size_t)prefix[1] << 8, out, out_bytes);
}

static void store_reader_header(store_reader_t *reader, uint8_t tag) {
    if (store_reader_u8(reader) != tag) reader->failed = true;
    if (store_reader_u8(reader) != STORE_RECORD_VERSION) reader->failed = true;
}

static int store_reader_finish(const store_reader_t *reader) {
    return !reader->failed && reader->position == reader->length ? 0 : -1;
}

int store_user_encode(const store_user_record_t *record, uint8_t *out, size_t capacity) {
    RW_ASSERT(record != NULL && out != NULL);
    store_writer_t writer = {out, capacity, 0, false};
    store_writer_u8(&writer, STORE_TAG_USER);
    store_writer_u8(&writer, STORE_RECORD_VERSION);
    store_writer_u64(&writer, record->id);
    store_writer_u32(&writer, record->status);
    store_writer_u64(&writer, (uint64_t)record->balance_micros);
    store_writer_u64(&writer, (uint64_t)record->created_ms);
    store_writer_text(&writer, record->email, sizeof record->email);
    store_writer_text(&writer, record->password_hash, sizeof record->password_hash);
    return store_writer_finish(&writer);
}

int store_user_decode(const uint8_t *bytes, size_t length, store_user_record_t *record) {
    RW_ASSERT(record != NULL && (bytes != NULL || length == 0));
    memset(record, 0, sizeof *record);
    store_reader_t reader = {bytes, length, 0, false};
    store_reader_header(&reader, STORE_TAG_USER);
    record->id = store_reader_u64(&reader);
    record->status = store_reader_u32(&reader);
    record->balance_micros = store_reader_i64(&reader);
    record->created_ms = store_reader_i64(&reader);
    store_reader_text(&reader, record->email, sizeof record->email);
    store_reader_text(&reader, record->password_hash, sizeof record->password_hash);
    return store_reader_finish(&reader);
}

int store_key_encode(const store_key_record_t *record, uint8_t *out, size_t capacity) {
    RW_ASSERT(record != NULL && out != NULL);
    store_writer_t writer = {out, capacity, 0, false};
    store_writer_u8(&writer, STORE_TAG_KEY);
    store_writer_u8(&writer, STORE_KEY_RECORD_VERSION);
    store_writer_u64(&writer, record->id);
    store_writer_u64(&writer, record->user_id);
    store_writer_bytes(&writer, record->hash, sizeof record->hash);
    store_writer_u32(&writer, record->status);
    store_writer_u64(&writer, (uint64_t)record->expires_at_ms);
    store_writer_u64(&writer, (uint64_t)record->spend_cap_micros);
    store_writer_u64(&writer, (uint64_t)record->spent_micros);
    store_writer_u64(&writer, (uint64_t)record->created_ms);
    store_writer_u8(&writer, record->all_models ? 1 : 0);
    store_writer_text(&writer, record->name, sizeof record->name);
    store_writer_text(&writer, record->prefix, sizeof record->prefix);
    store_writer_text(&writer, record->last4, sizeof record->last4);
    store_writer_text(&writer, record->models, sizeof record->models);
    store_writer_text(&writer, record->tier, sizeof record->tier);
    for (uint32_t kind = 0; kind < STORE_KEY_LIMITS; kind++) store_writer_u32(&writer, record->limits[kind]);
    store_writer_u64(&writer, record->token_quota);
    store_writer_u64(&writer, record->tokens_used);
    return store_writer_finish(&writer);
}

int store_key_decode(const uint8_t *bytes, size_t length, store_key_record_t *record) {
    RW_ASSERT(record != NULL && (bytes != NULL || length == 0));
    memset(record, 0, sizeof *record);
    store_reader_t reader = {bytes, length, 0, false};
    if (store_reader_u8(&reader) != STORE_TAG_KEY) reader.failed = true;
    uint8_t version = store_reader_u8(&reader);
    if (version != STORE_RECORD_VERSION && version != STORE_KEY_RECORD_VERSION) reader.failed = true;
    record->id = store_reader_u64(&reader);
    record->user_id = store_reader_u64(&reader);
    const uint8_t *hash = store_reader_take(&reader, sizeof record->hash);
    if (hash != NULL) memcpy(record->hash, hash, sizeof record->hash);
    record->status = store_reader_u32(&reader);
    if (version == STORE_RECORD_VERSION) (void)store_reader_u32(&reader); /* a numeric tier, never enforced */
    record->expires_at_ms = store_reader_i64(&reader);
    record->spend_cap_micros = store_reader_i64(&reader);
    record->spent_micros = store_reader_i64(&reader);
    record->created_ms = store_reader_i64(&reader);
    record->all_models = store_reader_bool(&reader);
    store_reader_text(&reader, record->name, sizeof record->name);
    store_reader_text(&reader, record->prefix, sizeof record->prefix);
    store_reader_text(&reader, record->last4, sizeof record->last4);
    store_reader_text(&reader, record->models, sizeof record->models);
    for (uint32_t kind = 0; kind < STORE_KEY_LIMITS; kind++) record->limits[kind] = STORE_LIMIT_INHERIT;
    if (version == STORE_KEY_RECORD_VERSION) {
        store_reader_text(&reader, record->tier, sizeof record->tier);
        for (uint32_t kind = 0; kind < STORE_KEY_LIMITS; kind++) record->limits[kind] = store_reader_u32(&reader);
        record->token_quota = store_reader_u64(&reader);
        record->tokens_used = store_reader_u64(&reader);
    }
    return store_reader_finish(&reader);
}

int store_hold_encode(const store_hold_record_t *record, uint8_t *out, size_t capacity) {
    RW_ASSERT(record != NULL && out != NULL);
    store_writer_t writer = {out, capacity, 0, false};
    store_writer_u8(&writer, STORE_TAG_HOLD);
    store_writer_u8(&writer, STORE_RECORD_VERSION);
    store_writer_u64(&writer, record->user_id);
    store_writer_u64(&writer, record->key_id);
    store_writer_u64(&writer, (uint64_t)record->amount_micros);
    store_writer_u64(&writer, (uint64_t)record->created_ms);
    store_writer_text(&writer, record->request_id, sizeof record->request_id);
    store_writer_text(&writer, record->model, sizeof record->model);
    return store_writer_finish(&writer);
}

int store_hold_decode(const uint8_t *bytes, size_t length, store_hold_record_t *record) {
    RW_ASSERT(record != NULL && (bytes != NULL || length == 0));
    memset(record, 0, sizeof *record);
    store_reader_t reader = {bytes, length, 0, false};
    store_reader_header(&reader, STORE_TAG_HOLD);
    record->user_id = store_reader_u64(&reader);
    record->key_id = store_reader_u64(&reader);
    record->amount_micros = store_reader_i64(&reader);
    record->created_ms = store_reader_i64(&reader);
    store_reader_text(&reader, record->request_id, sizeof record->request_id);
    store_reader_text(&reader, record->model, sizeof record->model);
    return store_reader_finish(&reader);
}

/* ---- Usage blocks ---- */

/* Unsigned LEB128: seven bits per byte, low first, the high bit set on every
 * byte but the last. At most ten bytes for a u64. */
static void store_writer_varint(store_writer_t *writer, uint64_t value) {
    uint8_t bytes[10];
    size_t length = 0;
    while (value >= 0x80) {
        bytes[length++] = (uint8_t)(value | 0x80);
        value >>= 7;
    }
    bytes[length++] = (uint8_t)value;
    store_writer_bytes(writer, bytes, length);
}

/* Signed values as zigzag varints (0, -1, 1, -2 ... as 0, 1, 2, 3 ...). */
static void store_writer_signed(store_writer_t *writer, int64_t value) {
    store_writer_varint(writer, ((uint64_t)value << 1) ^ (uint64_t)(value >> 63));
}

/* A string of at most 255 bytes as a u8 length and the bytes. */
static void store_writer_short_text(store_writer_t *writer, const char *text, size_t array_bytes) {
    size_t length = strnlen(text, array_bytes);
    RW_ASSERT(length < array_bytes && length <= UINT8_MAX);
    store_writer_u8(writer, (uint8_t)length);
    store_writer_bytes(writer, text, length);
}

static uint64_t store_reader_varint(store_reader_t *reader) {
    uint64_t value = 0;
    for (uint32_t shift = 0; shift < 64; shift += 7) {
        uint8_t byte = store_reader_u8(reader);
        if (reader->failed) return 0;
        if (shift == 63 && byte > 1) break; /* more than 64 bits */
        value |= (uint64_t)(byte & 0x7f) << shift;
        if ((byte & 0x80) == 0) return value;
    }
    reader->failed = true;
    return 0;
}

static int64_t store_reader_signed(store_reader_t *reader) {
    uint64_t value = store_reader_varint(reader);
    return (int64_t)((value >> 1) ^ (0 - (value & 1)));
}

static void store_reader_short_text(store_reader_t *reader, char *out, size_t out_bytes) {
    out[0] = '\0';
    size_t length = store_reader_u8(reader);
    if (reader->failed) return;
    store_reader_text_bytes(reader, length, out, out_bytes);
}

enum {
    STORE_USAGE_BLOCK_VERSION_1 = 1,
    STORE_USAGE_BLOCK_VERSION = 2, /* adds the attempts */
    STORE_USAGE_FLAG_ESTIMATED = 1u << 0,
    STORE_USAGE_FLAG_CAPPED = 1u << 1,
};

void store_usage_block_begin(store_usage_block_writer_t *block, uint8_t *out, size_t capacity, uint64_t first_id,
                             int64_t base_created_ms) {
    RW_ASSERT(block != NULL && out != NULL && capacity >= STORE_USAGE_BLOCK_HEADER_BYTES);
    block->out = out;
    block->capacity = capacity;
    block->first_id = first_id;
    block->base_created_ms = base_created_ms;
    block->count = 0;
    store_writer_t writer = {out, capacity, 0, false};
    store_writer_u8(&writer, STORE_TAG_USAGE_BLOCK);
    store_writer_u8(&writer, STORE_USAGE_BLOCK_VERSION);
    store_writer_u64(&writer, (uint64_t)base_created_ms);
    RW_ASSERT(!writer.overflow && writer.length == STORE_USAGE_BLOCK_HEADER_BYTES);
    block->length = writer.length;
}

int store_usage_block_add(store_usage_block_writer_t *block, const store_usage_record_t *record) {
    RW_ASSERT(block != NULL && record != NULL);
    RW_ASSERT(record->id >= block->first_id && record->created_ms >= block->base_created_ms);
    store_writer_t writer = {block->out, block->capacity, block->length, false};
    store_writer_varint(&writer, record->id - block->first_id);
    store_writer_varint(&writer, (uint64_t)(record->created_ms - block->base_created_ms));
    store_writer_varint(&writer, record->user_id);
    store_writer_varint(&writer, record->key_id);
    store_writer_varint(&writer, record->prompt_tokens);
    store_writer_varint(&writer, record->completion_tokens);
    store_writer_varint(&writer, record->cached_tokens);
    store_writer_varint(&writer, record->reasoning_tokens);
    store_writer_signed(&writer, record->cost_micros);
    store_writer_varint(&writer, record->latency_ms);
    store_writer_u8(&writer, (uint8_t)((record->estimated ? STORE_USAGE_FLAG_ESTIMATED : 0) |
                                       (record->capped ? STORE_USAGE_FLAG_CAPPED : 0)));
    store_writer_short_text(&writer, record->request_id, sizeof record->request_id);
    store_writer_short_text(&writer, record->model, sizeof record->model);
    store_writer_short_text(&writer, record->upstream, sizeof record->upstream);
    store_writer_short_text(&writer, record->status, sizeof record->status);
    store_writer_varint(&writer, record->attempts);
    if (writer.overflow) return -1;
    block->length = writer.length;
    block->count++;
    return 0;
}

int store_usage_block_open(store_usage_block_reader_t *block, const uint8_t *bytes, size_t length,
                           uint64_t first_id) {
    RW_ASSERT(block != NULL && (bytes != NULL || length == 0));
    memset(block, 0, sizeof *block);
    store_reader_t reader = {bytes, length, 0, false};
    if (store_reader_u8(&reader) != STORE_TAG_USAGE_BLOCK) return -1;
    uint8_t version = store_reader_u8(&reader);
    if (version != STORE_USAGE_BLOCK_VERSION_1 && version != STORE_USAGE_BLOCK_VERSION) return -1;
    int64_t base_created_ms = store_reader_i64(&reader);
    if (reader.failed) return -1;
    block->version = version;
    block->bytes = bytes;
    block->length = length;
    block->position = reader.position;
    block->first_id = first_id;
    block->base_created_ms = base_created_ms;
    return 0;
}

int store_usage_block_next(store_usage_block_reader_t *block, store_usage_record_t *record) {
    RW_ASSERT(block != NULL && record != NULL);
    if (block->position == block->length) return 0;
    memset(record, 0, sizeof *record);
    store_reader_t reader = {block->bytes, block->length, block->position, false};
    uint64_t id_offset = store_reader_varint(&reader);
    uint64_t created_offset = store_reader_varint(&reader);
    record->user_id = store_reader_varint(&reader);
    record->key_id = store_reader_varint(&reader);
    record->prompt_tokens = store_reader_varint(&reader);
    record->completion_tokens = store_reader_varint(&reader);
    record->cached_tokens = store_reader_varint(&reader);
    record->reasoning_tokens = store_reader_varint(&reader);
    record->cost_micros = store_reader_signed(&reader);
    record->latency_ms = store_reader_varint(&reader);
    uint8_t flags = store_reader_u8(&reader);
    store_reader_short_text(&reader, record->request_id, sizeof record->request_id);
    store_reader_short_text(&reader, record->model, sizeof record->model);
    store_reader_short_text(&reader, record->upstream, sizeof record->upstream);
    store_reader_short_text(&reader, record->status, sizeof record->status);
    uint64_t attempts = block->version == STORE_USAGE_BLOCK_VERSION_1 ? 1 : store_reader_varint(&reader);
    if (attempts > UINT32_MAX) reader.failed = true;
    record->attempts = (uint32_t)attempts;
    if ((flags & ~(STORE_USAGE_FLAG_ESTIMATED | STORE_USAGE_FLAG_CAPPED)) != 0) reader.failed = true;
    if (__builtin_add_overflow(block->first_id, id_offset, &record->id) || record->id == 0) reader.failed = true;
    if (created_offset > (uint64_t)INT64_MAX ||
        __builtin_add_overflow(block->base_created_ms, (int64_t)created_offset, &record->created_ms)) {
        reader.failed = true;
    }
    if (record->user_id == 0) reader.failed = true;
    if (reader.failed) return -1;
    record->estimated = (flags & STORE_USAGE_FLAG_ESTIMATED) != 0;
    record->capped = (flags & STORE_USAGE_FLAG_CAPPED) != 0;
    block->position = reader.position;
    block->index++;
    return 1;
}

/* ---- JSON ---- */

typedef struct store_json_writer {
    text_buffer_t buffer;
    bool first_member;
} store_json_writer_t;

/* `text` lives in an array of array_bytes and must be NUL-terminated in it. */
static void store_json_string(store_json_writer_t *writer, const char *text, size_t array_bytes) {
    size_t length = strnlen(text, array_bytes);
    RW_ASSERT(length < array_bytes);
    text_buffer_json_string(&writer->buffer, text, length);
}

/* A member name as a string literal, quoted with its colon, and its length:
 * both known at compile time, so a member's name is one append. */
#define STORE_JSON_NAME(name) ("\"" name "\":"), (sizeof("\"" name "\":") - 1)

static void store_json_key(store_json_writer_t *writer, const char *quoted_name, size_t length) {
    if (!writer->first_member) text_buffer_append(&writer->buffer, ",", 1);
    writer->first_member = false;
    text_buffer_append(&writer->buffer, quoted_name, length);
}

static void store_json_u64(store_json_writer_t *writer, const char *quoted_name, size_t length, uint64_t value) {
    store_json_key(writer, quoted_name, length);
    text_buffer_u64(&writer->buffer, value);
}

static void store_json_i64(store_json_writer_t *writer, const char *quoted_name, size_t length, int64_t value) {
    store_json_key(writer, quoted_name, length);
    text_buffer_i64(&writer->buffer, value);
}

static void store_json_bool(store_json_writer_t *writer, const char *quoted_name, size_t length, bool value) {
    store_json_key(writer, quoted_name, length);
    text_buffer_text(&writer->buffer, value ? "true" : "false");
}

static void store_json_member_string(store_json_writer_t *writer, const char *quoted_name, size_t length,
                                     const char *text, size_t array_bytes) {
    store_json_key(writer, quoted_name, length);
    store_json_string(writer, text, array_bytes);
}

static int store_json_finish(const store_json_writer_t *writer) {
    if (writer->buffer.overflow) return -1;
    RW_ASSERT(writer->buffer.length <= INT32_MAX);
    return (int)writer->buffer.length;
}

int store_usage_encode(const store_usage_record_t *record, char *out, size_t capacity) {
    RW_ASSERT(record != NULL && out != NULL);
    store_json_writer_t writer = {text_buffer_over(out, capacity), true};
    text_buffer_append(&writer.buffer, "{", 1);
    store_json_u64(&writer, STORE_JSON_NAME("id"), record->id);
    store_json_member_string(&writer, STORE_JSON_NAME("request_id"), record->request_id, sizeof record->request_id);
    store_json_u64(&writer, STORE_JSON_NAME("key_id"), record->key_id);
    store_json_u64(&writer, STORE_JSON_NAME("user_id"), record->user_id);
    store_json_member_string(&writer, STORE_JSON_NAME("model"), record->model, sizeof record->model);
    store_json_member_string(&writer, STORE_JSON_NAME("upstream"), record->upstream, sizeof record->upstream);
    store_json_u64(&writer, STORE_JSON_NAME("prompt_tokens"), record->prompt_tokens);
    store_json_u64(&writer, STORE_JSON_NAME("completion_tokens"), record->completion_tokens);
    store_json_u64(&writer, STORE_JSON_NAME("cached_tokens"), record->cached_tokens);
    store_json_u64(&writer, STORE_JSON_NAME("reasoning_tokens"), record->reasoning_tokens);
    store_json_i64(&writer, STORE_JSON_NAME("cost_micros"), record->cost_micros);
    store_json_member_string(&writer, STORE_JSON_NAME("status"), record->status, sizeof record->status);
    store_json_u64(&writer, STORE_JSON_NAME("latency_ms"), record->latency_ms);
    store_json_i64(&writer, STORE_JSON_NAME("created_ms"), record->created_ms);
    store_json_bool(&writer, STORE_JSON_NAME("estimated"), record->estimated);
    store_json_bool(&writer, STORE_JSON_NAME("capped"), record->capped);
    store_json_u64(&writer, STORE_JSON_NAME("attempts"), record->attempts);
    text_buffer_append(&writer.buffer, "}", 1);
    return store_json_finish(&writer);
}

int store_audit_encode(const store_audit_record_t *record, char *out, size_t capacity) {
    RW_ASSERT(record != NULL && out != NULL);
    store_json_writer_t writer = {text_buffer_over(out, capacity), true};
    text_buffer_append(&writer.buffer, "{", 1);
    store_json_u64(&writer, STORE_JSON_NAME("id"), record->id);
    store_json_i64(&writer, STORE_JSON_NAME("time_ms"), record->time_ms);
    store_json_member_string(&writer, STORE_JSON_NAME("admin"), record->admin, sizeof record->admin);
    store_json_member_string(&writer, STORE_JSON_NAME("action"), record->action, sizeof record->action);
    store_json_member_string(&writer, STORE_JSON_NAME("target"), record->target, sizeof record->target);
    store_json_member_string(&writer, STORE_JSON_NAME("details"), record->details, sizeof record->details);
    text_buffer_append(&writer.buffer, "}", 1);
    return store_json_finish(&writer);
}

/* A JSON document being decoded: the validated object and whether every
 * member read so far was well-typed. */
typedef struct store_json_reader {
    const uint8_t *body;
    size_t length;
    bool failed;
} store_json_reader_t;

/* Finds `name`; returns false when absent (and fails the reader when
 * `required`, when the member repeats, or when its type is not `type`). */
static bool store_json_find(store_json_reader_t *reader, const char *name, json_type_t type, bool required,
                            json_span_t *value) {
    json_type_t found_type = JSON_TYPE_NONE;
    int status = json_object_find(reader->body, reader->length, name, value, &found_type);
    if (status == -1) {
        if (required) reader->failed = true;
        return false;
    }
    if (status != 0 || found_type != type) {
        reader->failed = true;
        return false;
    }
    return true;
}

/* Integers only: an optional '-' (when allow_negative) and digits; no
 * fraction, no exponent, no overflow. */
static bool store_json_parse_integer(const uint8_t *text, size_t length, bool allow_negative, uint64_t *magnitude,
                                     bool *negative) {
    size_t index = 0;
    *negative = false;
    *magnitude = 0;
    if (index < length && text[index] == '-') {
        if (!allow_negative) return false;
        *negative = true;
        index++;
    }
    if (index == length) return false;
    for (; index < length; index++) {
        uint8_t byte = text[index];
        if (byte < '0' || byte > '9') return false;
        uint64_t digit = byte - '0';
        if (*magnitude > (UINT64_MAX - digit) / 10) return false;
        *magnitude = *magnitude * 10 + digit;
    }
    return true;
}

static uint64_t store_json_read_u64(store_json_reader_t *reader, const char *name, bool required) {
    json_span_t value;
    if (!store_json_find(reader, name, JSON_TYPE_NUMBER, required, &value)) return 0;
    uint64_t magnitude = 0;
    bool negative = false;
    if (!store_json_parse_integer(reader->body + value.offset, value.length, false, &magnitude, &negative)) {
        reader->failed = true;
        return 0;
    }
    return magnitude;
}

static int64_t store_json_read_i64(store_json_reader_t *reader, const char *name, bool required) {
    json_span_t value;
    if (!store_json_find(reader, name, JSON_TYPE_NUMBER, required, &value)) return 0;
    uint64_t magnitude = 0;
    bool negative = false;
    if (!store_json_parse_integer(reader->body + value.offset, value.length, true, &magnitude, &negative) ||
        magnitude > (negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)) {
        reader->failed = true;
        return 0;
    }
    return negative ? (int64_t)((uint64_t)0 - magnitude) : (int64_t)magnitude;
}

static bool store_json_read_bool(store_json_reader_t *reader, const char *name) {
    json_span_t value;
    if (!store_json_find(reader, name, JSON_TYPE_BOOLEAN, false, &value)) return false;
    return reader->body[value.offset] == 't';
}

static void store_json_read_string(store_json_reader_t *reader, const char *name, char *out, size_t out_bytes) {
    out[0] = '\0';
    json_span_t value;
    if (!store_json_find(reader, name, JSON_TYPE_STRING, false, &value)) return;
    size_t out_length = 0;
    if (json_string_decode(reader->body + value.offset, value.length, out, out_bytes, &out_length) != 0 ||
        strlen(out) != out_length) { /* too long, or an embedded \u0000 */
        out[0] = '\0';
        reader->failed = true;
    }
}

static bool store_json_reader_init(store_json_reader_t *reader, const char *json, size_t length) {
    reader->body = (const uint8_t *)json;
    reader->length = length;
    reader->failed = false;
    json_error_t error;
    if (json == NULL || json_validate(reader->body, length, &error) != 0) return false;
    size_t index = 0;
    while (index < length && (json[index] == ' ' || json[index] == '\t' || json[index] == '\n' || json[index] == '\r')) {
        index++;
    }
    return index < length && json[index] == '{';
}

int store_usage_decode(const char *json, size_t length, store_usage_record_t *record) {
    RW_ASSERT(record != NULL);
    memset(record, 0, sizeof *record);
    store_json_reader_t reader;
    if (!store_json_reader_init(&reader, json, length)) return -1;
    record->id = store_json_read_u64(&reader, "id", true);
    store_json_read_string(&reader, "request_id", record->request_id, sizeof record->request_id);
    record->key_id = store_json_read_u64(&reader, "key_id", false);
    record->user_id = store_json_read_u64(&reader, "user_id", true);
    store_json_read_string(&reader, "model", record->model, sizeof record->model);
    store_json_read_string(&reader, "upstream", record->upstream, sizeof record->upstream);
    record->prompt_tokens = store_json_read_u64(&reader, "prompt_tokens", false);
    record->completion_tokens = store_json_read_u64(&reader, "completion_tokens", false);
    record->cached_tokens = store_json_read_u64(&reader, "cached_tokens", false);
    record->reasoning_tokens = store_json_read_u64(&reader, "reasoning_tokens", false);
    record->cost_micros = store_json_read_i64(&reader, "cost_micros", false);
    store_json_read_string(&reader, "status", record->status, sizeof record->status);
    record->latency_ms = store_json_read_u64(&reader, "latency_ms", false);
    record->created_ms = store_json_read_i64(&reader, "created_ms", false);
    record->estimated = store_json_read_bool(&reader, "estimated");
    record->capped = store_json_read_bool(&reader, "capped");
    /* Records from before there were routes carry no attempts: one. */
    json_span_t attempts_value;
    json_type_t attempts_type = JSON_TYPE_NONE;
    bool has_attempts = json_object_find(reader.body, reader.length, "attempts", &attempts_value, &attempts_type) != -1;
    uint64_t attempts = has_attempts ? store_json_read_u64(&reader, "attempts", true) : 1;
    if (attempts > UINT32_MAX) reader.failed = true;
    record->attempts = (uint32_t)attempts;
    return reader.failed ? -1 : 0;
}

int store_audit_decode(const char *json, size_t length, store_audit_record_t *record) {
    RW_ASSERT(record != NULL);
    memset(record, 0, sizeof *record);
    store_json_reader_t reader;
    if (!store_json_reader_init(&reader, json, length)) return -1;
    record->id = store_json_read_u64(&reader, "id", true);
    record->time_ms = store_json_read_i64(&reader, "time_ms", true);
    store_json_read_string(&reader, "admin", record->admin, sizeof record->admin);
    store_json_read_string(&reader, "action", record->action, sizeof record->action);
    store_json_read_string(&reader, "target", record->target, sizeof record->target);
    store_json_read_string(&reader, "details", record->details, sizeof record->details);
    return reader.failed ? -1 : 0;
}
