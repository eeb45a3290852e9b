/* API keys: generation, hashing, masking, parsing the Authorization field
 * and authenticating a request against the shared account tables. */
#include "ringway/auth.h"

#include "ringway/account.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/sha256.h>

/* ---- Randomness and comparison --------------------------------------------- */

bool auth_random_bytes(uint8_t *out, size_t length) {
    RW_ASSERT(out != NULL || length == 0);
    size_t filled = 0;
    while (filled < length) {
        ssize_t got = getrandom(out + filled, length - filled, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        filled += (size_t)got;
    }
    return true;
}

bool auth_equal_constant_time(const uint8_t *a, const uint8_t *b, size_t length) {
    RW_ASSERT((a != NULL && b != NULL) || length == 0);
    uint32_t difference = 0;
    for (size_t index = 0; index < length; index++) {
        difference |= (uint32_t)(a[index] ^ b[index]);
        /* Keeps the compiler from turning the loop into an early exit. */
        __asm__ __volatile__("" : "+r"(difference));
    }
    return difference == 0;
}

/* ---- Keys ------------------------------------------------------------------ */

static const char auth_base62_digits[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static bool auth_is_base62(uint8_t byte) {
    return (byte >= '0' && byte <= '9') || (byte >= 'A' && byte <= 'Z') ||
           (byte >= 'a' && byte <= 'z');
}

void auth_key_encode(const uint8_t random[static AUTH_KEY_RANDOM_BYTES],
                     char out[static AUTH_KEY_TEXT_BYTES]) {
    /* Long division of the 256-bit big-endian number by 62, one digit per
     * round, least significant digit first. */
    uint8_t number[AUTH_KEY_RANDOM_BYTES];
    memcpy(number, random, sizeof(number));
    memcpy(out, "sk-", AUTH_KEY_PREFIX_LENGTH);
    for (int digit = AUTH_KEY_BODY_LENGTH - 1; digit >= 0; digit--) {
        uint32_t remainder = 0;
        for (size_t index = 0; index < sizeof(number); index++) {
            uint32_t value = remainder * 256 + number[index];
            number[index] = (uint8_t)(value / 62);
            remainder = value % 62;
        }
        out[AUTH_KEY_PREFIX_LENGTH + digit] = auth_base62_digits[remainder];
    }
    /* 62^43 > 2^256: nothing may be left. */
    for (size_t index = 0; index < sizeof(number); index++) RW_ASSERT(number[index] == 0);
    out[AUTH_KEY_TEXT_LENGTH] = '\0';
}

bool auth_key_generate(char out[static AUTH_KEY_TEXT_BYTES]) {
    uint8_t random[AUTH_KEY_RANDOM_BYTES];
    if (!auth_random_bytes(random, sizeof(random))) return false;
    auth_key_encode(random, out);
    memset(random, 0, sizeof(random));
    return true;
}

bool auth_key_text_valid(const char *text, size_t length) {
    if (length != AUTH_KEY_TEXT_LENGTH) return false;
    RW_ASSERT(text != NULL);
    if (memcmp(text, "sk-", AUTH_KEY_PREFIX_LENGTH) != 0) return false;
    for (size_t index = AUTH_KEY_PREFIX_LENGTH; index < length; index++) {
        if (!auth_is_base62((uint8_t)text[index])) return false;
    }
    return true;
}

void auth_key_hash(const char *text, size_t length, uint8_t hash[static ACCOUNT_KEY_HASH_BYTES]) {
    RW_ASSERT(text != NULL || length == 0);
    RW_ASSERT(length <= UINT32_MAX);
    wc_Sha256 sha;
    int status = wc_InitSha256(&sha);
    RW_ASSERT(status == 0);
    status = wc_Sha256Update(&sha, (const byte *)text, (word32)length);
    RW_ASSERT(status == 0);
    status = wc_Sha256Final(&sha, hash);
    RW_ASSERT(status == 0);
    wc_Sha256Free(&sha);
}

void auth_key_mask(const char *text, size_t length, char prefix[static ACCOUNT_KEY_PREFIX_BYTES],
                   char last4[static ACCOUNT_KEY_LAST4_BYTES]) {
    RW_ASSERT(auth_key_text_valid(text, length));
    size_t prefix_length = AUTH_KEY_PREFIX_LENGTH + AUTH_KEY_SHOWN_LENGTH;
    RW_ASSERT(prefix_length < ACCOUNT_KEY_PREFIX_BYTES);
    RW_ASSERT(AUTH_KEY_LAST_LENGTH < ACCOUNT_KEY_LAST4_BYTES);
    memset(prefix, 0, ACCOUNT_KEY_PREFIX_BYTES);
    memset(last4, 0, ACCOUNT_KEY_LAST4_BYTES);
    memcpy(prefix, text, prefix_length);
    memcpy(last4, text + length - AUTH_KEY_LAST_LENGTH, AUTH_KEY_LAST_LENGTH);
}

/* Appends text to out[*length ...] without passing capacity - 1 bytes;
 * keeps out NUL-terminated. */
static void auth_append(char *out, size_t capacity, size_t *length, const char *text) {
    while (*text != '\0' && *length + 1 < capacity) out[(*length)++] = *text++;
    out[*length] = '\0';
}

size_t auth_key_masked(const char *prefix, const char *last4, char out[static AUTH_KEY_MASKED_BYTES]) {
    RW_ASSERT(prefix != NULL && last4 != NULL);
    size_t length = 0;
    for (size_t index = 0; index < AUTH_KEY_PREFIX_LENGTH + AUTH_KEY_SHOWN_LENGTH && prefix[index] != '\0';
         index++) {
        out[length++] = prefix[index];
    }
    memcpy(out + length, "...", 3);
    length += 3;
    for (size_t index = 0; index < AUTH_KEY_LAST_LENGTH && last4[index] != '\0'; index++) {
        out[length++] = last4[index];
    }
    RW_ASSERT(length < AUTH_KEY_MASKED_BYTES);
    out[length] = '\0';
    return length;
}

/* ---- The Authorization field ----------------------------------------------- */

static bool auth_is_blank(uint8_t byte) {
    return byte == ' ' || byte == '\t';
}

/* token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
static bool auth_is_token68(const uint8_t *bytes, size_t length) {
    size_t index = 0;
    while (index < length) {
        uint8_t byte = bytes[index];
        if (!auth_is_base62(byte) && byte != '-' && byte != '.' && byte != '_' && byte != '~' &&
            byte != '+' && byte != '/') {
            break;
        }
        index++;
    }
    if (index == 0) return false;
    while (index < length && bytes[index] == '=') index++;
    return index == length;
}

static uint8_t auth_lower(uint8_t byte) {
    return (byte >= 'A' && byte <= 'Z') ? (uint8_t)(byte + ('a' - 'A')) : byte;
}

auth_bearer_kind_t auth_bearer_parse(const uint8_t *value, size_t length, auth_token_t *token) {
    RW_ASSERT(token != NULL);
    RW_ASSERT(value != NULL || length == 0);
    token->bytes = NULL;
    token->length = 0;

    size_t start = 0, end = length;
    while (start < end && auth_is_blank(value[start])) start++;
    while (end > start && auth_is_blank(value[end - 1])) end--;
    if (start == end) return AUTH_BEARER_MISSING;

    static const char scheme[] = "bearer";
    size_t scheme_length = sizeof(scheme) - 1;
    if (end - start < scheme_length) return AUTH_BEARER_MALFORMED;
    for (size_t index = 0; index < scheme_length; index++) {
        if (auth_lower(value[start + index]) != (uint8_t)scheme[index]) return AUTH_BEARER_MALFORMED;
    }
    size_t cursor = start + scheme_length;
    if (cursor == end) return AUTH_BEARER_MISSING; /* "Bearer" and nothing else */
    if (!auth_is_blank(value[cursor])) return AUTH_BEARER_MALFORMED; /* "BearerX..." */
    while (cursor < end && auth_is_blank(value[cursor])) cursor++;
    RW_ASSERT(cursor < end); /* trailing blanks were trimmed */

    const uint8_t *bytes = value + cursor;
    size_t token_length = end - cursor;
    if (token_length >= AUTH_KEY_PREFIX_LENGTH && memcmp(bytes, "sk-", AUTH_KEY_PREFIX_LENGTH) == 0) {
        if (!auth_key_text_valid((const char *)bytes, token_length)) return AUTH_BEARER_MALFORMED;
        token->bytes = bytes;
        token->length = token_length;
        return AUTH_BEARER_API_KEY;
    }
    if (token_length > AUTH_TOKEN_LENGTH_MAX || !auth_is_token68(bytes, token_length)) {
        return AUTH_BEARER_MALFORMED;
    }
    token->bytes = bytes;
    token->length = token_length;
    return AUTH_BEARER_OTHER;
}

/* ---- Authentication -------------------------------------------------------- */

/* The message of each failure, indexed by auth_result_t: `before`, then,
 * when `after` is set, the masked key and `after`. */
typedef struct auth_error_message {
    const char *before;
    const char *after; /* NULL: the message names no key */
} auth_error_message_t;

static const auth_error_message_t auth_error_messages[] = {
    [AUTH_OK] = {NULL, NULL},
    [AUTH_MISSING] = {"You didn't provide an API key. You need to provide your API key in an "
                      "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                      NULL},
    [AUTH_MALFORMED] = {"Malformed API key. Expected an Authorization header of the form "
                        "'Bearer sk-...' with a key issued by this relay: sk- followed by 43 "
                        "letters and digits.",
                        NULL},
    [AUTH_UNKNOWN] = {"Incorrect API key provided: ",
                      ". You can list your API keys with GET /api-keys, or ask the operator of "
                      "this relay for one."},
    [AUTH_DISABLED] = {"The API key ", " has been disabled. Create a new key with POST /api-keys, or ask the "
                                       "operator of this relay to enable it."},
    [AUTH_EXPIRED] = {"The API key ", " has expired. Create a new key with POST /api-keys, or ask the operator "
                                      "of this relay to extend it."},
    [AUTH_USER_MISSING] = {"The API key ", " belongs to an account that no longer exists. Ask the operator of this "
                                           "relay for help."},
};
_Static_assert(RW_ARRAY_LENGTH(auth_error_messages) == AUTH_USER_MISSING + 1, "one message per auth result");

void auth_error_describe(auth_result_t result, const char *masked_key, auth_error_t *error) {
    RW_ASSERT(error != NULL);
    RW_ASSERT(result != AUTH_OK);
    error->http_status = 401;
    error->type = "invalid_request_error";
    error->code = "invalid_api_key";
    size_t length = 0;
    char *out = error->message;
    size_t capacity = sizeof(error->message);
    out[0] = '\0';
    const char *masked = masked_key != NULL ? masked_key : "sk-...";
    RW_ASSERT((size_t)result < RW_ARRAY_LENGTH(auth_error_messages));
    const auth_error_message_t *message = &auth_error_messages[result];
    RW_ASSERT(message->before != NULL);
    auth_append(out, capacity, &length, message->before);
    if (message->after != NULL) {
        auth_append(out, capacity, &length, masked);
        auth_append(out, capacity, &length, message->after);
    }
    /* Every message must fit whole: a cut one is a programmer error. */
    RW_ASSERT(length + 1 < capacity);
    error->message_length = (uint32_t)length;
}

/* Fills *error with the masked form of the stored key. */
static void auth_error_for_key(auth_result_t result, const account_key_t *key, auth_error_t *error) {
    char masked[AUTH_KEY_MASKED_BYTES];
    auth_key_masked(key->prefix, key->last4, masked);
    auth_error_describe(result, masked, error);
}

auth_result_t auth_key_authenticate(account_tables_t *tables, const uint8_t *authorization,
                                    size_t length, int64_t now_ms, account_key_t **key,
                                    account_user_t **user, auth_error_t *error) {
    RW_ASSERT(tables != NULL && key != NULL && user != NULL && error != NULL);
    *key = NULL;
    *user = NULL;

    auth_token_t token;
    switch (auth_bearer_parse(authorization, length, &token)) {
    case AUTH_BEARER_MISSING:
        auth_error_describe(AUTH_MISSING, NULL, error);
        return AUTH_MISSING;
    case AUTH_BEARER_MALFORMED:
    case AUTH_BEARER_OTHER:
        auth_error_describe(AUTH_MALFORMED, NULL, error);
        return AUTH_MALFORMED;
    case AUTH_BEARER_API_KEY:
        break;
    }

    uint8_t hash[ACCOUNT_KEY_HASH_BYTES];
    auth_key_hash((const char *)token.bytes, token.length, hash);
    account_key_t *found = account_key_find(tables, hash);
    if (found == NULL) {
        char prefix[ACCOUNT_KEY_PREFIX_BYTES], last4[ACCOUNT_KEY_LAST4_BYTES];
        char masked[AUTH_KEY_MASKED_BYTES];
        auth_key_mask((const char *)token.bytes, token.length, prefix, last4);
        auth_key_masked(prefix, last4, masked);
        auth_error_describe(AUTH_UNKNOWN, masked, error);
        return AUTH_UNKNOWN;
    }
    *key = found;
    if (account_key_status(found) != ACCOUNT_KEY_ACTIVE) {
        auth_error_for_key(AUTH_DISABLED, found, error);
        return AUTH_DISABLED;
    }
    if (account_key_expired(found, now_ms)) {
        auth_error_for_key(AUTH_EXPIRED, found, error);
        return AUTH_EXPIRED;
    }
    account_user_t *owner = account_user_at(tables, found->user_index);
    if (owner == NULL) {
        auth_error_for_key(AUTH_USER_MISSING, found, error);
        return AUTH_USER_MISSING;
    }
    *user = owner;
    return AUTH_OK;
}
