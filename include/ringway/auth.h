/* Authentication: API keys (src/auth/auth.c), session tokens as JWT HS256
 * (src/auth/jwt.c), and passwords with Argon2id plus the email and password
 * rules of self-service registration (src/auth/password.c).
 *
 * What runs where: key parsing, hashing and authentication are on the
 * request path of every worker and only read memory (no allocation, no
 * system call, no lock). JWT signing and verification allocate nothing and
 * may run anywhere. Key and secret generation call getrandom(2); password
 * hashing and verification take tens of milliseconds and 19 MiB, so they
 * run on the control thread only, never on a worker. */
#ifndef RINGWAY_AUTH_H
#define RINGWAY_AUTH_H

#include "ringway/account-t.h"
#include "ringway/common.h"

/* ---- Randomness and comparison (src/auth/auth.c) --------------------------- */

/* Fills out[0, length) from getrandom(2) (the kernel's CSPRNG; blocks only
 * before the pool is first initialized, at boot). Retries on EINTR and short
 * reads. Returns false only when the kernel refuses (no getrandom). */
bool auth_random_bytes(uint8_t *out, size_t length);

/* Whether a[0, length) == b[0, length), in time independent of where they
 * differ (it depends on length only). */
bool auth_equal_constant_time(const uint8_t *a, const uint8_t *b, size_t length);

/* ---- API keys (src/auth/auth.c) -------------------------------------------- */

/* A key is "sk-" followed by 32 random bytes written as a 43-digit base62
 * number (digits 0-9A-Za-z, most significant first, zero-padded): letters
 * and digits only, so it survives double-click selection, URLs, shells,
 * headers and JSON without quoting, and no padding question arises. 62^43 >
 * 2^256, so every 32-byte value has exactly one 43-character spelling. */
enum {
    AUTH_KEY_RANDOM_BYTES = 32,
    AUTH_KEY_PREFIX_LENGTH = 3, /* "sk-" */
    AUTH_KEY_BODY_LENGTH = 43,
    AUTH_KEY_TEXT_LENGTH = AUTH_KEY_PREFIX_LENGTH + AUTH_KEY_BODY_LENGTH, /* 46 */
    AUTH_KEY_TEXT_BYTES = AUTH_KEY_TEXT_LENGTH + 1,                       /* with its NUL */
    AUTH_KEY_SHOWN_LENGTH = 8,  /* characters after "sk-" kept in the masked prefix */
    AUTH_KEY_LAST_LENGTH = 4,   /* characters kept at the end */
    /* "sk-" + 8 + "..." + 4, NUL-terminated: "sk-AbCdEfGh...wxyz" */
    AUTH_KEY_MASKED_BYTES = AUTH_KEY_PREFIX_LENGTH + AUTH_KEY_SHOWN_LENGTH + 3 + AUTH_KEY_LAST_LENGTH + 1,
    /* Bearer tokens that are not API keys (session JWTs) longer than this
     * are refused as malformed. */
    AUTH_TOKEN_LENGTH_MAX = 2048,
    AUTH_ERROR_MESSAGE_BYTES = 256,
};

/* Writes a new key: AUTH_KEY_RANDOM_BYTES from getrandom, encoded by
 * auth_key_encode. The full key is shown to its owner once; only its hash
 * is kept. Returns false (out untouched) when getrandom fails. */
bool auth_key_generate(char out[static AUTH_KEY_TEXT_BYTES]);

/* Encodes 32 bytes as a key: "sk-" + 43 base62 digits + NUL. */
void auth_key_encode(const uint8_t random[static AUTH_KEY_RANDOM_BYTES],
                     char out[static AUTH_KEY_TEXT_BYTES]);

/* Whether text[0, length) has the shape of a key: exactly "sk-" followed
 * by 43 characters of [0-9A-Za-z]. */
bool auth_key_text_valid(const char *text, size_t length);

/* SHA-256 of text[0, length) (any bytes; for a key, the whole "sk-..." text). */
void auth_key_hash(const char *text, size_t length, uint8_t hash[static ACCOUNT_KEY_HASH_BYTES]);

/* The parts of a key that may be shown again: prefix = "sk-" and the next 8
 * characters, last4 = the last 4 characters, both NUL-terminated (the sizes
 * of account_key_t's fields). text must satisfy auth_key_text_valid. */
void auth_key_mask(const char *text, size_t length, char prefix[static ACCOUNT_KEY_PREFIX_BYTES],
                   char last4[static ACCOUNT_KEY_LAST4_BYTES]);

/* Writes "<prefix>...<last4>" (e.g. "sk-AbCdEfGh...wxyz") and returns its
 * length. prefix and last4 are NUL-terminated, as auth_key_mask makes them;
 * longer ones are cut to fit. */
size_t auth_key_masked(const char *prefix, const char *last4, char out[static AUTH_KEY_MASKED_BYTES]);

/* What an Authorization field value holds. */
typedef enum auth_bearer_kind {
    AUTH_BEARER_MISSING = 0, /* no field, an empty value, or "Bearer" with no token */
    AUTH_BEARER_MALFORMED,   /* not "Bearer <token>", or a token that starts with "sk-" but
                              * is not a key's shape, or a token with bytes outside token68 */
    AUTH_BEARER_API_KEY,     /* "Bearer sk-..." whose token satisfies auth_key_text_valid */
    AUTH_BEARER_OTHER,       /* "Bearer <token68>" not starting with "sk-" (e.g. a session JWT) */
} auth_bearer_kind_t;

typedef struct auth_token {
    const uint8_t *bytes; /* inside the value given to auth_bearer_parse */
    size_t length;
} auth_token_t;

/* Classifies an Authorization field value (value may be NULL when length is
 * 0: pass length 0 for an absent field). Accepted: optional SP/HTAB, the
 * scheme "Bearer" in any case (RFC 9110 11.1), one or more SP/HTAB, the
 * token, optional SP/HTAB. The token must be token68 (RFC 9110 11.2:
 * letters, digits, "-._~+/" and trailing "="), at most
 * AUTH_TOKEN_LENGTH_MAX bytes. *token is set for AUTH_BEARER_API_KEY and
 * AUTH_BEARER_OTHER, zeroed otherwise. Pure: no allocation, no state. */
auth_bearer_kind_t auth_bearer_parse(const uint8_t *value, size_t length, auth_token_t *token);

typedef enum auth_result {
    AUTH_OK = 0,
    AUTH_MISSING,      /* no key sent */
    AUTH_MALFORMED,    /* something sent that cannot be one of our keys */
    AUTH_UNKNOWN,      /* a key's shape, but no such key */
    AUTH_DISABLED,     /* the key exists and is disabled */
    AUTH_EXPIRED,      /* the key exists and its expiry has passed */
    AUTH_USER_MISSING, /* the key's owner is not in the tables */
} auth_result_t;

/* An authentication failure in the OpenAI error shape:
 * {"error": {"message": message, "type": type, "param": null, "code": code}}
 * with HTTP status http_status. message is NUL-terminated and JSON-safe (no
 * '"', no '\\', no control characters), so it can be written as is; it shows
 * at most the masked form of a key, never the key. */
typedef struct auth_error {
    uint16_t http_status; /* 401 */
    const char *type;     /* "invalid_request_error" */
    const char *code;     /* "invalid_api_key" */
    uint32_t message_length;
    char message[AUTH_ERROR_MESSAGE_BYTES];
} auth_error_t;

/* Fills *error for a result other than AUTH_OK. masked_key is the key's
 * masked form (auth_key_masked) for AUTH_UNKNOWN, AUTH_DISABLED,
 * AUTH_EXPIRED and AUTH_USER_MISSING, and ignored (may be NULL) for
 * AUTH_MISSING and AUTH_MALFORMED. Messages, one per result:
 *   missing:      "You didn't provide an API key. ..."
 *   malformed:    "Malformed API key. ..."
 *   unknown:      "Incorrect API key provided: sk-AbCdEfGh...wxyz. ..."
 *   disabled:     "The API key sk-AbCdEfGh...wxyz has been disabled. ..."
 *   expired:      "The API key sk-AbCdEfGh...wxyz has expired. ..."
 *   user missing: "The API key sk-AbCdEfGh...wxyz belongs to an account that no longer exists. ..." */
void auth_error_describe(auth_result_t result, const char *masked_key, auth_error_t *error);

/* Authenticates a request from its Authorization field value (length 0 when
 * the field is absent): parses it (auth_bearer_parse; a non-key token is
 * AUTH_MALFORMED here), hashes the key, finds it in the tables (constant-
 * time comparison of the 32-byte hash), then checks, in this order, that it
 * is not disabled, not expired at now_ms (wall clock, ms since the epoch),
 * and that its owner is published. On AUTH_OK *key and *user are set and
 * *error is untouched. Otherwise *error is filled (auth_error_describe),
 * *key is the key found (NULL for missing, malformed and unknown), *user
 * is NULL. The user's suspension is the ledger's business (402), not
 * checked here. Request path: no allocation, no system call, no lock. */
auth_result_t auth_key_authenticate(account_tables_t *tables, const uint8_t *authorization,
                                    size_t length, int64_t now_ms, account_key_t **key,
                                    account_user_t **user, auth_error_t *error);

/* ---- Session tokens: JWT HS256 (src/auth/jwt.c) ---------------------------- */

enum {
    JWT_SECRET_BYTES = 32,     /* what jwt_secret_generate makes */
    JWT_SECRET_BYTES_MIN = 32, /* RFC 7518 3.2: a key at least as long as the hash */
    JWT_TOKEN_BYTES_MAX = 1024, /* longer tokens are refused unread; ours are < 600 */
    JWT_SIGNATURE_BYTES = 32,
};

typedef enum jwt_result {
    JWT_OK = 0,
    JWT_MALFORMED,       /* not three strict base64url parts, bad JSON, missing or bad claims, too long */
    JWT_BAD_SIGNATURE,   /* the HMAC does not match (wrong secret or tampered token) */
    JWT_EXPIRED,         /* now_s >= exp */
    JWT_WRONG_ALGORITHM, /* the header's alg is anything but exactly "HS256" (e.g. "none") */
} jwt_result_t;

/* The claims of a verified token: {"sub":"<user id>","email":..,"iat":..,"exp":..}. */
typedef struct jwt_claims {
    uint64_t user_id;     /* sub, a decimal string, >= 1 */
    int64_t issued_at_s;  /* iat; 0 when absent */
    int64_t expires_at_s; /* exp, required */
    char email[ACCOUNT_EMAIL_BYTES]; /* email; "" when absent */
    size_t email_length;
} jwt_claims_t;

/* Signs a session token for user_id (>= 1) into out, NUL-terminated:
 * header {"alg":"HS256","typ":"JWT"}, payload
 * {"sub":"<user_id>","email":"<email>","iat":<issued_at_s>,"exp":<expires_at_s>}.
 * secret must be at least JWT_SECRET_BYTES_MIN bytes (an assertion: the
 * config refuses shorter secrets). The email is written as is, so it must
 * need no JSON escaping (auth_email_valid guarantees this). Returns the
 * token's length, or 0 when the email needs escaping or is too long, a
 * time is negative, or the token and its NUL do not fit in capacity
 * (JWT_TOKEN_BYTES_MAX + 1 always fits). Allocates nothing. */
size_t jwt_sign(const uint8_t *secret, size_t secret_length, uint64_t user_id, const char *email,
                size_t email_length, int64_t issued_at_s, int64_t expires_at_s, char *out,
                size_t capacity);

/* Verifies token[0, length) at now_s (seconds since the epoch), in this
 * order: at most JWT_TOKEN_BYTES_MAX bytes and exactly three parts, each
 * strict base64url (RFC 7515 2 / RFC 4648 5: no padding, no whitespace,
 * unused bits zero) -> JWT_MALFORMED; the header a JSON object whose "alg"
 * is exactly "HS256" (any other value, "none" included ->
 * JWT_WRONG_ALGORITHM; no alg, a repeated alg, a "crit" member, or a "typ"
 * other than "JWT" -> JWT_MALFORMED); the signature part 32 bytes equal,
 * in constant time, to HMAC-SHA256(secret, header "." payload) ->
 * JWT_BAD_SIGNATURE; the payload a JSON object with "sub" (a decimal
 * string >= 1) and "exp" (a non-negative integer), optionally "iat" and
 * "email", each at most once -> JWT_MALFORMED; now_s < exp ->
 * JWT_EXPIRED. Only on JWT_OK is *claims filled. Allocates nothing. */
jwt_result_t jwt_verify(const uint8_t *secret, size_t secret_length, const uint8_t *token,
                        size_t length, int64_t now_s, jwt_claims_t *claims);

/* A short sentence for a 401 on a failed jwt_verify (JSON-safe, static). */
const char *jwt_result_message(jwt_result_t result);

/* Fills out with JWT_SECRET_BYTES from getrandom. Returns false when
 * getrandom fails. */
bool jwt_secret_generate(uint8_t out[static JWT_SECRET_BYTES]);

/* HMAC-SHA256 (RFC 2104) through wolfCrypt. */
void jwt_hmac_sha256(const uint8_t *key, size_t key_length, const uint8_t *message,
                     size_t length, uint8_t mac[static JWT_SIGNATURE_BYTES]);

/* base64url without padding (RFC 4648 5). Encode returns the length written
 * (not NUL-terminated), or 0 when capacity is too small for a non-empty
 * input. Decode is strict: only [A-Za-z0-9_-], length % 4 != 1, the unused
 * low bits of the last character zero; returns false on anything else or
 * when the result does not fit in capacity. */
size_t jwt_base64url_encode(const uint8_t *input, size_t length, char *out, size_t capacity);
bool jwt_base64url_decode(const uint8_t *input, size_t length, uint8_t *out, size_t capacity,
                          size_t *out_length);

/* ---- Passwords and emails (src/auth/password.c) ---------------------------- */

/* Argon2id (RFC 9106) with t = 2 passes over m = 19 MiB, p = 1 lane: the
 * minimum OWASP's Password Storage Cheat Sheet recommends. It is what a
 * control thread can afford per login (about 20-50 ms, one at a time, so at
 * most 19 MiB in use) while making each guess of an attacker holding the
 * store cost the same memory. Salt: 16 bytes from getrandom; hash: 32 bytes.
 * The result is the PHC string "$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>"
 * (97 characters). */
enum {
    PASSWORD_TIME_COST = 2,
    PASSWORD_MEMORY_KIB = 19 * 1024,
    PASSWORD_PARALLELISM = 1,
    PASSWORD_SALT_BYTES = 16,
    PASSWORD_HASH_BYTES = 32,
    PASSWORD_ENCODED_BYTES = 128, /* room for the encoded string and its NUL */
    PASSWORD_LENGTH_MIN = 8,      /* bytes */
    PASSWORD_LENGTH_MAX = 1024,   /* bytes: bounds the work an attacker can make us do */
};

/* Whether a password of this many bytes may be registered: 8 to 1024. */
bool auth_password_acceptable(size_t length);

/* Hashes password[0, length) (any bytes, NUL included) with a fresh salt
 * into encoded (NUL-terminated). Control thread only: libargon2 allocates
 * the 19 MiB and takes tens of milliseconds. Returns false when length is
 * not acceptable, getrandom fails or Argon2 fails (out of memory). */
bool password_hash(const char *password, size_t length, char encoded[static PASSWORD_ENCODED_BYTES]);

/* password_hash with a given salt: deterministic, for tests. */
bool password_hash_with_salt(const char *password, size_t length,
                             const uint8_t salt[static PASSWORD_SALT_BYTES],
                             char encoded[static PASSWORD_ENCODED_BYTES]);

/* Whether password[0, length) matches encoded, a NUL-terminated
 * "$argon2id$v=19$..." string shorter than PASSWORD_ENCODED_BYTES (the
 * parameters are read from it, so hashes made with other costs still
 * verify). false for a mismatch, a malformed or non-argon2id string, or a
 * password longer than PASSWORD_LENGTH_MAX. libargon2 compares in constant
 * time. Control thread only. */
bool password_verify(const char *encoded, const char *password, size_t length);

/* Spends the same time as a password_verify that fails, for a login whose
 * email is unknown, so response times do not tell which emails exist. */
void password_verify_dummy(const char *password, size_t length);

/* Whether text[0, length) is an email address we accept, and if so writes
 * its lower-case form to out (NUL-terminated, same length). Pragmatic, not
 * RFC 5321: 3 to 254 bytes of printable ASCII; exactly one '@'; a local
 * part of 1 to 64 bytes from letters, digits and !#$%&'*+-/=?^_`{|}~.
 * without a leading, trailing or doubled dot; a domain of labels of letters,
 * digits and '-' (1 to 63 bytes, not starting or ending with '-') with at
 * least one dot. An accepted address therefore never needs escaping in
 * JSON, CSV or an HTTP header: no quote, backslash, comma, semicolon,
 * space, control or non-ASCII byte (internationalized addresses are
 * refused; they would need UTF-8 validation and normalization). */
bool auth_email_valid(const char *text, size_t length, char out[static ACCOUNT_EMAIL_BYTES]);

#endif
