/* Passwords with Argon2id (libargon2) and the rules for the email and
 * password of a self-service registration. Hashing runs on the control
 * thread only: libargon2 allocates PASSWORD_MEMORY_KIB per call. */
#include "ringway/auth.h"

#include <argon2.h>
#include <string.h>

/* A hash with our parameters of a random password nobody knows (made once
 * with libargon2): password_verify_dummy checks against it so that a login
 * for an unknown email costs the same as one with a wrong password. */
static const char password_dummy_encoded[] =
    "$argon2id$v=19$m=19456,t=2,p=1$e9IqRs58JJo4A3Qe1RFehQ$"
    "px/TfNxzfV8calHLmL37edLwynxOI+ObdaKw7VXBxHk";

static const char password_encoded_prefix[] = "$argon2id$v=19$";

bool auth_password_acceptable(size_t length) {
    return length >= PASSWORD_LENGTH_MIN && length <= PASSWORD_LENGTH_MAX;
}

bool password_hash_with_salt(const char *password, size_t length,
                             const uint8_t salt[static PASSWORD_SALT_BYTES],
                             char encoded[static PASSWORD_ENCODED_BYTES]) {
    RW_ASSERT(password != NULL || length == 0);
    if (!auth_password_acceptable(length)) return false;
    /* The encoded length (with its NUL) depends on the parameters only. */
    RW_ASSERT(argon2_encodedlen(PASSWORD_TIME_COST, PASSWORD_MEMORY_KIB, PASSWORD_PARALLELISM,
                                PASSWORD_SALT_BYTES, PASSWORD_HASH_BYTES, Argon2_id) <=
              PASSWORD_ENCODED_BYTES);
    int status = argon2id_hash_encoded(PASSWORD_TIME_COST, PASSWORD_MEMORY_KIB, PASSWORD_PARALLELISM,
                                       password, length, salt, PASSWORD_SALT_BYTES,
                                       PASSWORD_HASH_BYTES, encoded, PASSWORD_ENCODED_BYTES);
    if (status != ARGON2_OK) {
        encoded[0] = '\0';
        return false;
    }
    return true;
}

bool password_hash(const char *password, size_t length, char encoded[static PASSWORD_ENCODED_BYTES]) {
    uint8_t salt[PASSWORD_SALT_BYTES];
    if (!auth_password_acceptable(length) || !auth_random_bytes(salt, sizeof(salt))) {
        encoded[0] = '\0';
        return false;
    }
    return password_hash_with_salt(password, length, salt, encoded);
}

bool password_verify(const char *encoded, const char *password, size_t length) {
    RW_ASSERT(encoded != NULL);
    RW_ASSERT(password != NULL || length == 0);
    if (length > PASSWORD_LENGTH_MAX) return false;
    if (strnlen(encoded, PASSWORD_ENCODED_BYTES) == PASSWORD_ENCODED_BYTES) return false;
    if (strncmp(encoded, password_encoded_prefix, sizeof(password_encoded_prefix) - 1) != 0) {
        return false;
    }
    return argon2id_verify(encoded, password, length) == ARGON2_OK;
}

void password_verify_dummy(const char *password, size_t length) {
    RW_ASSERT(password != NULL || length == 0);
    if (length > PASSWORD_LENGTH_MAX) length = PASSWORD_LENGTH_MAX;
    (void)argon2id_verify(password_dummy_encoded, password, length);
}

/* ---- Emails ---------------------------------------------------------------- */

static bool password_is_alphanumeric(uint8_t byte) {
    return (byte >= '0' && byte <= '9') || (byte >= 'A' && byte <= 'Z') ||
           (byte >= 'a' && byte <= 'z');
}

/* RFC 5322 atext plus '.', which is checked for position separately. */
static bool password_is_local_byte(uint8_t byte) {
    return password_is_alphanumeric(byte) ||
           (byte != '\0' && strchr("!#$%&'*+-/=?^_`{|}~.", byte) != NULL);
}

static bool password_local_part_valid(const uint8_t *local, size_t length) {
    if (length < 1 || length > 64) return false;
    if (local[0] == '.' || local[length - 1] == '.') return false;
    for (size_t index = 0; index < length; index++) {
        if (!password_is_local_byte(local[index])) return false;
        if (local[index] == '.' && local[index + 1] == '.') return false; /* index + 1 < length: last is not '.' */
    }
    return true;
}

static bool password_domain_valid(const uint8_t *domain, size_t length) {
    size_t labels = 0;
    size_t start = 0;
    while (start <= length) {
        size_t end = start;
        while (end < length && domain[end] != '.') end++;
        size_t label_length = end - start;
        if (label_length < 1 || label_length > 63) return false;
        if (domain[start] == '-' || domain[end - 1] == '-') return false;
        for (size_t index = start; index < end; index++) {
            if (!password_is_alphanumeric(domain[index]) && domain[index] != '-') return false;
        }
        labels++;
        start = end + 1;
    }
    return labels >= 2;
}

bool auth_email_valid(const char *text, size_t length, char out[static ACCOUNT_EMAIL_BYTES]) {
    RW_ASSERT(text != NULL || length == 0);
    out[0] = '\0';
    if (length < 3 || length > 254) return false;
    const uint8_t *bytes = (const uint8_t *)text;
    size_t at = length;
    for (size_t index = 0; index < length; index++) {
        if (bytes[index] <= 0x20 || bytes[index] >= 0x7F) return false;
        if (bytes[index] == '@') {
            if (at != length) return false; /* a second '@' */
            at = index;
        }
    }
    if (at == length) return false;
    if (!password_local_part_valid(bytes, at)) return false;
    if (!password_domain_valid(bytes + at + 1, length - at - 1)) return false;
    for (size_t index = 0; index < length; index++) {
        uint8_t byte = bytes[index];
        out[index] = (char)((byte >= 'A' && byte <= 'Z') ? byte + ('a' - 'A') : byte);
    }
    out[length] = '\0';
    return true;
}
