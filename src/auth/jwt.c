/* Session tokens: JWT (RFC 7519) signed with HMAC-SHA256 (JWS, RFC 7515),
 * the algorithm pinned. Everything happens in caller-owned or stack
 * buffers bounded by JWT_TOKEN_BYTES_MAX; nothing is allocated. */
#include "ringway/auth.h"

#include "ringway/json.h"
#include "ringway/text.h"

#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/hmac.h>

/* The only header we write. */
static const char jwt_header_json[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

/* Decoded parts are at most 3/4 of the token. */
enum { JWT_DECODED_BYTES_MAX = JWT_TOKEN_BYTES_MAX / 4 * 3 };

/* ---- base64url ------------------------------------------------------------- */

static const char jwt_base64url_digits[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t jwt_base64url_encode(const uint8_t *input, size_t length, char *out, size_t capacity) {
    RW_ASSERT(input != NULL || length == 0);
    size_t needed = length / 3 * 4 + (length % 3 == 0 ? 0 : length % 3 + 1);
    if (needed > capacity) return 0;
    size_t written = 0;
    size_t index = 0;
    for (; index + 3 <= length; index += 3) {
        uint32_t group = (uint32_t)input[index] << 16 | (uint32_t)input[index + 1] << 8 | input[index + 2];
        out[written++] = jwt_base64url_digits[(group >> 18) & 63];
        out[written++] = jwt_base64url_digits[(group >> 12) & 63];
        out[written++] = jwt_base64url_digits[(group >> 6) & 63];
        out[written++] = jwt_base64url_digits[group & 63];
    }
    size_t rest = length - index;
    if (rest == 1) {
        uint32_t group = (uint32_t)input[index] << 16;
        out[written++] = jwt_base64url_digits[(group >> 18) & 63];
        out[written++] = jwt_base64url_digits[(group >> 12) & 63];
    } else if (rest == 2) {
        uint32_t group = (uint32_t)input[index] << 16 | (uint32_t)input[index + 1] << 8;
        out[written++] = jwt_base64url_digits[(group >> 18) & 63];
        out[written++] = jwt_base64url_digits[(group >> 12) & 63];
        out[written++] = jwt_base64url_digits[(group >> 6) & 63];
    }
    RW_ASSERT(written == needed);
    return written;
}

/* The 6-bit value of a base64url digit, or -1. */
static int jwt_base64url_value(uint8_t byte) {
    if (byte >= 'A' && byte <= 'Z') return byte - 'A';
    if (byte >= 'a' && byte <= 'z') return byte - 'a' + 26;
    if (byte >= '0' && byte <= '9') return byte - '0' + 52;
    if (byte == '-') return 62;
    if (byte == '_') return 63;
    return -1;
}

bool jwt_base64url_decode(const uint8_t *input, size_t length, uint8_t *out, size_t capacity,
                          size_t *out_length) {
    RW_ASSERT(input != NULL || length == 0);
    RW_ASSERT(out_length != NULL);
    if (length % 4 == 1) return false;
    size_t needed = length / 4 * 3 + (length % 4 == 0 ? 0 : length % 4 - 1);
    if (needed > capacity) return false;
    size_t written = 0;
    uint32_t group = 0;
    size_t digits = 0;
    for (size_t index = 0; index < length; index++) {
        int value = jwt_base64url_value(input[index]);
        if (value < 0) return false;
        group = group << 6 | (uint32_t)value;
        if (++digits == 4) {
            out[written++] = (uint8_t)(group >> 16);
            out[written++] = (uint8_t)(group >> 8);
            out[written++] = (uint8_t)group;
            group = 0;
            digits = 0;
        }
    }
    if (digits == 2) {
        if ((group & 0xF) != 0) return false; /* 4 unused bits must be zero */
        out[written++] = (uint8_t)(group >> 4);
    } else if (digits == 3) {
        if ((group & 0x3) != 0) return false; /* 2 unused bits must be zero */
        out[written++] = (uint8_t)(group >> 10);
        out[written++] = (uint8_t)(group >> 2);
    }
    RW_ASSERT(written == needed);
    *out_length = written;
    return true;
}

/* ---- HMAC, secrets --------------------------------------------------------- */

void jwt_hmac_sha256(const uint8_t *key, size_t key_length, const uint8_t *message,
                     size_t length, uint8_t mac[static JWT_SIGNATURE_BYTES]) {
    RW_ASSERT(key != NULL && key_length > 0 && key_length <= UINT32_MAX);
    RW_ASSERT((message != NULL || length == 0) && length <= UINT32_MAX);
    Hmac hmac;
    int status = wc_HmacInit(&hmac, NULL, INVALID_DEVID);
    RW_ASSERT(status == 0);
    status = wc_HmacSetKey(&hmac, WC_SHA256, key, (word32)key_length);
    RW_ASSERT(status == 0);
    status = wc_HmacUpdate(&hmac, message, (word32)length);
    RW_ASSERT(status == 0);
    status = wc_HmacFinal(&hmac, mac);
    RW_ASSERT(status == 0);
    wc_HmacFree(&hmac);
}

bool jwt_secret_generate(uint8_t out[static JWT_SECRET_BYTES]) {
    return auth_random_bytes(out, JWT_SECRET_BYTES);
}

/* ---- Signing --------------------------------------------------------------- */

/* Appends bytes to out[*length ...] if they fit in capacity; false if not. */
static bool jwt_append(char *out, size_t capacity, size_t *length, const char *bytes, size_t count) {
    if (count > capacity - *length) return false;
    memcpy(out + *length, bytes, count);
    *length += count;
    return true;
}

/* Whether the email can go into a JSON string without escaping. */
static bool jwt_email_plain(const char *email, size_t length) {
    for (size_t index = 0; index < length; index++) {
        uint8_t byte = (uint8_t)email[index];
        if (byte < 0x20 || byte > 0x7E || byte == '"' || byte == '\\') return false;
    }
    return true;
}

size_t jwt_sign(const uint8_t *secret, size_t secret_length, uint64_t user_id, const char *email,
                size_t email_length, int64_t issued_at_s, int64_t expires_at_s, char *out,
                size_t capacity) {
    RW_ASSERT(secret != NULL && secret_length >= JWT_SECRET_BYTES_MIN);
    RW_ASSERT(user_id >= 1);
    RW_ASSERT(out != NULL);
    RW_ASSERT(email != NULL || email_length == 0);
    if (email_length >= ACCOUNT_EMAIL_BYTES || !jwt_email_plain(email, email_length)) return 0;
    if (issued_at_s < 0 || expires_at_s < 0) return 0;

    char payload[64 + ACCOUNT_EMAIL_BYTES + 3 * 20];
    text_buffer_t claims = text_buffer_over(payload, sizeof payload);
    text_buffer_text(&claims, "{\"sub\":\"");
    text_buffer_u64(&claims, user_id);
    text_buffer_text(&claims, "\",\"email\":\"");
    text_buffer_append(&claims, email, email_length);
    text_buffer_text(&claims, "\",\"iat\":");
    text_buffer_u64(&claims, (uint64_t)issued_at_s);
    text_buffer_text(&claims, ",\"exp\":");
    text_buffer_u64(&claims, (uint64_t)expires_at_s);
    text_buffer_text(&claims, "}");
    RW_ASSERT(!claims.overflow); /* sized for the largest email and numbers */

    size_t length = 0;
    size_t written = jwt_base64url_encode((const uint8_t *)jwt_header_json, sizeof(jwt_header_json) - 1,
                                          out, capacity);
    if (written == 0) return 0;
    length += written;
    if (!jwt_append(out, capacity, &length, ".", 1)) return 0;
    written = jwt_base64url_encode((const uint8_t *)payload, claims.length, out + length,
                                   capacity - length);
    if (written == 0) return 0;
    length += written;

    uint8_t mac[JWT_SIGNATURE_BYTES];
    jwt_hmac_sha256(secret, secret_length, (const uint8_t *)out, length, mac);
    if (!jwt_append(out, capacity, &length, ".", 1)) return 0;
    written = jwt_base64url_encode(mac, sizeof(mac), out + length, capacity - length);
    if (written == 0) return 0;
    length += written;
    if (length >= capacity) return 0; /* no room for the NUL */
    out[length] = '\0';
    RW_ASSERT(length <= JWT_TOKEN_BYTES_MAX);
    return length;
}

/* ---- Verification ---------------------------------------------------------- */

/* Whether the JSON document (already validated) is an object. */
static bool jwt_json_is_object(const uint8_t *json, size_t length) {
    size_t index = 0;
    while (index < length && (json[index] == ' ' || json[index] == '\t' || json[index] == '\n' ||
                              json[index] == '\r')) {
        index++;
    }
    return index < length && json[index] == '{';
}

/* Finds member `name` in a validated object and decodes it as a string
 * into out. Returns 1 when found and decoded, 0 when absent, -1 when it
 * repeats, is not a string or does not fit. */
static int jwt_json_string(const uint8_t *json, size_t length, const char *name, char *out,
                           size_t capacity, size_t *out_length) {
    json_span_t value;
    json_type_t type;
    int found = json_object_find(json, length, name, &value, &type);
    if (found == -1) return 0;
    if (found != 0 || type != JSON_TYPE_STRING) return -1;
    if (json_string_decode(json + value.offset, value.length, out, capacity, out_length) != 0) return -1;
    return 1;
}

/* Finds member `name` as a non-negative integer written with digits only
 * (no sign, fraction or exponent) that fits in int64_t. Same returns. */
static int jwt_json_integer(const uint8_t *json, size_t length, const char *name, int64_t *result) {
    json_span_t value;
    json_type_t type;
    int found = json_object_find(json, length, name, &value, &type);
    if (found == -1) return 0;
    if (found != 0 || type != JSON_TYPE_NUMBER || value.length == 0 || value.length > 19) return -1;
    int64_t number = 0;
    for (uint32_t index = 0; index < value.length; index++) {
        uint8_t byte = json[value.offset + index];
        if (byte < '0' || byte > '9') return -1;
        int64_t digit = byte - '0';
        if (number > (INT64_MAX - digit) / 10) return -1;
        number = number * 10 + digit;
    }
    *result = number;
    return 1;
}

/* Checks the decoded header: "alg" exactly "HS256", no "crit", "typ"
 * absent or "JWT". */
static jwt_result_t jwt_check_header(const uint8_t *header, size_t length) {
    if (json_validate(header, length, NULL) != 0 || !jwt_json_is_object(header, length)) {
        return JWT_MALFORMED;
    }
    char text[8];
    size_t text_length = 0;
    json_span_t value;
    json_type_t type;
    int found = json_object_find(header, length, "alg", &value, &type);
    if (found != 0) return JWT_MALFORMED; /* absent, or repeated */
    if (type != JSON_TYPE_STRING ||
        json_string_decode(header + value.offset, value.length, text, sizeof(text), &text_length) != 0 ||
        text_length != 5 || memcmp(text, "HS256", 5) != 0) {
        return JWT_WRONG_ALGORITHM;
    }
    if (json_object_find(header, length, "crit", &value, &type) != -1) return JWT_MALFORMED;
    int typ = jwt_json_string(header, length, "typ", text, sizeof(text), &text_length);
    if (typ < 0 || (typ == 1 && (text_length != 3 || memcmp(text, "JWT", 3) != 0))) return JWT_MALFORMED;
    return JWT_OK;
}

/* Reads the claims of a decoded payload whose signature was verified. */
static jwt_result_t jwt_read_claims(const uint8_t *payload, size_t length, jwt_claims_t *claims) {
    if (json_validate(payload, length, NULL) != 0 || !jwt_json_is_object(payload, length)) {
        return JWT_MALFORMED;
    }
    char subject[24];
    size_t subject_length = 0;
    if (jwt_json_string(payload, length, "sub", subject, sizeof(subject), &subject_length) != 1) {
        return JWT_MALFORMED;
    }
    if (subject_length == 0 || subject_length > 20 || subject[0] == '0') return JWT_MALFORMED;
    uint64_t user_id = 0;
    for (size_t index = 0; index < subject_length; index++) {
        if (subject[index] < '0' || subject[index] > '9') return JWT_MALFORMED;
        uint64_t digit = (uint64_t)(subject[index] - '0');
        if (user_id > (UINT64_MAX - digit) / 10) return JWT_MALFORMED;
        user_id = user_id * 10 + digit;
    }
    claims->user_id = user_id;
    if (jwt_json_integer(payload, length, "exp", &claims->expires_at_s) != 1) return JWT_MALFORMED;
    claims->issued_at_s = 0;
    if (jwt_json_integer(payload, length, "iat", &claims->issued_at_s) < 0) return JWT_MALFORMED;
    claims->email[0] = '\0';
    claims->email_length = 0;
    if (jwt_json_string(payload, length, "email", claims->email, sizeof(claims->email),
                        &claims->email_length) < 0) {
        return JWT_MALFORMED;
    }
    if (memchr(claims->email, '\0', claims->email_length) != NULL) return JWT_MALFORMED;
    return JWT_OK;
}

jwt_result_t jwt_verify(const uint8_t *secret, size_t secret_length, const uint8_t *token,
                        size_t length, int64_t now_s, jwt_claims_t *claims) {
    RW_ASSERT(secret != NULL && secret_length >= JWT_SECRET_BYTES_MIN);
    RW_ASSERT(claims != NULL);
    RW_ASSERT(token != NULL || length == 0);
    if (length == 0 || length > JWT_TOKEN_BYTES_MAX) return JWT_MALFORMED;

    size_t dots[2];
    size_t dot_count = 0;
    for (size_t index = 0; index < length; index++) {
        if (token[index] != '.') continue;
        if (dot_count == 2) return JWT_MALFORMED;
        dots[dot_count++] = index;
    }
    if (dot_count != 2) return JWT_MALFORMED;
    const uint8_t *header_part = token;
    size_t header_part_length = dots[0];
    const uint8_t *payload_part = token + dots[0] + 1;
    size_t payload_part_length = dots[1] - dots[0] - 1;
    const uint8_t *signature_part = token + dots[1] + 1;
    size_t signature_part_length = length - dots[1] - 1;

    uint8_t decoded[JWT_DECODED_BYTES_MAX];
    size_t decoded_length = 0;
    if (!jwt_base64url_decode(header_part, header_part_length, decoded, sizeof(decoded), &decoded_length)) {
        return JWT_MALFORMED;
    }
    jwt_result_t result = jwt_check_header(decoded, decoded_length);
    if (result != JWT_OK) return result;

    if (!jwt_base64url_decode(signature_part, signature_part_length, decoded, sizeof(decoded),
                              &decoded_length)) {
        return JWT_MALFORMED;
    }
    uint8_t expected[JWT_SIGNATURE_BYTES];
    jwt_hmac_sha256(secret, secret_length, token, dots[1], expected);
    if (decoded_length != JWT_SIGNATURE_BYTES ||
        !auth_equal_constant_time(decoded, expected, JWT_SIGNATURE_BYTES)) {
        return JWT_BAD_SIGNATURE;
    }

    if (!jwt_base64url_decode(payload_part, payload_part_length, decoded, sizeof(decoded),
                              &decoded_length)) {
        return JWT_MALFORMED;
    }
    jwt_claims_t read;
    result = jwt_read_claims(decoded, decoded_length, &read);
    if (result != JWT_OK) return result;
    if (now_s >= read.expires_at_s) return JWT_EXPIRED;
    *claims = read;
    return JWT_OK;
}

const char *jwt_result_message(jwt_result_t result) {
    switch (result) {
    case JWT_OK:
        return "The session token is valid.";
    case JWT_MALFORMED:
        return "Invalid session token: it is not a well-formed token issued by this relay. "
               "Log in again with POST /auth/login.";
    case JWT_BAD_SIGNATURE:
        return "Invalid session token: its signature does not match. Log in again with "
               "POST /auth/login.";
    case JWT_EXPIRED:
        return "The session token has expired. Log in again with POST /auth/login.";
    case JWT_WRONG_ALGORITHM:
        return "Invalid session token: only HS256 tokens issued by this relay are accepted. "
               "Log in again with POST /auth/login.";
    }
    return "Invalid session token. Log in again with POST /auth/login.";
}
