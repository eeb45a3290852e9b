#include "unit.h"

#include "ringway/account.h"
#include "ringway/auth.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- helpers -------------------------------------------------------------- */

/* unit.h's generator; the tests that use it seed it, so failures replay. */
static unit_random_t test_random = {0x5EED};

static void test_hex(const uint8_t *bytes, size_t length, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t index = 0; index < length; index++) {
        out[index * 2] = digits[bytes[index] >> 4];
        out[index * 2 + 1] = digits[bytes[index] & 15];
    }
    out[length * 2] = '\0';
}

static const uint8_t *test_bytes(const char *text) {
    return (const uint8_t *)text;
}

/* Whether a message could be written into JSON as is. */
static bool test_json_safe(const char *text) {
    for (; *text != '\0'; text++) {
        if (*text == '"' || *text == '\\' || (uint8_t)*text < 0x20 || (uint8_t)*text > 0x7E) return false;
    }
    return true;
}

/* A 32-byte secret 0, 1, ... 31 (the one the precomputed token used). */
static void test_secret(uint8_t secret[32]) {
    for (int index = 0; index < 32; index++) secret[index] = (uint8_t)index;
}

/* Builds header.payload.signature from JSON texts with the library's
 * base64url and HMAC (both checked against published vectors below).
 * signature_mode: 0 the right HMAC, 1 an empty signature, 2 the HMAC made
 * with a different secret. */
static size_t test_make_token(const char *header, const char *payload, const uint8_t *secret,
                              size_t secret_length, int signature_mode, char *out, size_t capacity) {
    size_t length = jwt_base64url_encode(test_bytes(header), strlen(header), out, capacity);
    out[length++] = '.';
    length += jwt_base64url_encode(test_bytes(payload), strlen(payload), out + length, capacity - length);
    uint8_t mac[32];
    if (signature_mode == 2) {
        uint8_t other[32];
        memset(other, 0x77, sizeof(other));
        jwt_hmac_sha256(other, sizeof(other), (const uint8_t *)out, length, mac);
    } else {
        jwt_hmac_sha256(secret, secret_length, (const uint8_t *)out, length, mac);
    }
    out[length++] = '.';
    if (signature_mode != 1) length += jwt_base64url_encode(mac, sizeof(mac), out + length, capacity - length);
    out[length] = '\0';
    return length;
}

/* ---- API keys ------------------------------------------------------------- */

static void test_key_encode_vectors(void) {
    uint8_t random[AUTH_KEY_RANDOM_BYTES];
    char key[AUTH_KEY_TEXT_BYTES];

    memset(random, 0, sizeof(random));
    auth_key_encode(random, key);
    CHECK_EQ_BYTES(key, strlen(key), "sk-0000000000000000000000000000000000000000000");

    memset(random, 0xFF, sizeof(random));
    auth_key_encode(random, key);
    CHECK_EQ_BYTES(key, strlen(key), "sk-yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1");

    for (int index = 0; index < 32; index++) random[index] = (uint8_t)index;
    auth_key_encode(random, key);
    CHECK_EQ_BYTES(key, strlen(key), "sk-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf");

    /* The smallest non-zero value ends in '1'; 62 ends in "10". */
    memset(random, 0, sizeof(random));
    random[31] = 1;
    auth_key_encode(random, key);
    CHECK(key[45] == '1' && key[44] == '0');
    random[31] = 62;
    auth_key_encode(random, key);
    CHECK(key[45] == '0' && key[44] == '1' && key[43] == '0');
}

static void test_key_generate(void) {
    enum { COUNT = 1000 };
    static char keys[COUNT][AUTH_KEY_TEXT_BYTES];
    bool seen[256] = {false};
    for (int index = 0; index < COUNT; index++) {
        memset(keys[index], '#', AUTH_KEY_TEXT_BYTES);
        CHECK(auth_key_generate(keys[index]));
        CHECK_EQ_INT(strlen(keys[index]), AUTH_KEY_TEXT_LENGTH);
        CHECK(auth_key_text_valid(keys[index], strlen(keys[index])));
        CHECK(memcmp(keys[index], "sk-", 3) == 0);
        for (int position = 4; position < AUTH_KEY_TEXT_LENGTH; position++) {
            seen[(uint8_t)keys[index][position]] = true;
        }
    }
    /* Every base62 digit shows up in 42000 characters, and nothing else. */
    int distinct = 0;
    for (int byte = 0; byte < 256; byte++) {
        if (!seen[byte]) continue;
        distinct++;
        bool base62 = (byte >= '0' && byte <= '9') || (byte >= 'A' && byte <= 'Z') ||
                      (byte >= 'a' && byte <= 'z');
        CHECK(base62);
    }
    CHECK_EQ_INT(distinct, 62);
    /* All different, and no two share the masked prefix (8 random digits). */
    int collisions = 0;
    for (int first = 0; first < COUNT; first++) {
        for (int second = first + 1; second < COUNT; second++) {
            if (strcmp(keys[first], keys[second]) == 0) collisions++;
        }
    }
    CHECK_EQ_INT(collisions, 0);
}

static void test_key_text_valid(void) {
    const char *good = "sk-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf";
    CHECK(auth_key_text_valid(good, strlen(good)));
    CHECK(!auth_key_text_valid(good, strlen(good) - 1));
    CHECK(!auth_key_text_valid("sk-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlfx", 47));
    CHECK(!auth_key_text_valid("SK-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf", 46));
    CHECK(!auth_key_text_valid("sk_003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf", 46));
    CHECK(!auth_key_text_valid("sk-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBID-f", 46));
    CHECK(!auth_key_text_valid("sk-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBID_f", 46));
    CHECK(!auth_key_text_valid("sk-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBID f", 46));
    CHECK(!auth_key_text_valid("sk-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBID\xc3", 46));
    CHECK(!auth_key_text_valid("", 0));
    /* Every single-byte change to a non-base62 byte is refused. */
    char copy[AUTH_KEY_TEXT_BYTES];
    for (int position = 3; position < AUTH_KEY_TEXT_LENGTH; position++) {
        memcpy(copy, good, sizeof(copy));
        copy[position] = '+';
        CHECK(!auth_key_text_valid(copy, AUTH_KEY_TEXT_LENGTH));
    }
}

static void test_key_hash(void) {
    uint8_t hash[ACCOUNT_KEY_HASH_BYTES];
    char hex[65];
    auth_key_hash("abc", 3, hash);
    test_hex(hash, sizeof(hash), hex);
    CHECK_EQ_BYTES(hex, 64, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    auth_key_hash("", 0, hash);
    test_hex(hash, sizeof(hash), hex);
    CHECK_EQ_BYTES(hex, 64, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    auth_key_hash("sk-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf", 46, hash);
    test_hex(hash, sizeof(hash), hex);
    CHECK_EQ_BYTES(hex, 64, "b59020adf7c1278714f3843607923b74d534d448d58351004a8622d18ead0cd9");
}

static void test_key_mask(void) {
    const char *key = "sk-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf";
    char prefix[ACCOUNT_KEY_PREFIX_BYTES], last4[ACCOUNT_KEY_LAST4_BYTES];
    memset(prefix, '#', sizeof(prefix));
    memset(last4, '#', sizeof(last4));
    auth_key_mask(key, strlen(key), prefix, last4);
    CHECK(strcmp(prefix, "sk-003aUlTJ") == 0);
    CHECK(strcmp(last4, "IDlf") == 0);
    char masked[AUTH_KEY_MASKED_BYTES];
    size_t length = auth_key_masked(prefix, last4, masked);
    CHECK_EQ_BYTES(masked, length, "sk-003aUlTJ...IDlf");
    CHECK_EQ_INT(length, AUTH_KEY_MASKED_BYTES - 1);
    /* Over-long inputs are cut, never overflow. */
    length = auth_key_masked("sk-0123456789abcdef", "wxyz-more", masked);
    CHECK_EQ_BYTES(masked, length, "sk-01234567...wxyz");
    length = auth_key_masked("", "", masked);
    CHECK_EQ_BYTES(masked, length, "...");
}

/* ---- The Authorization field ---------------------------------------------- */

#define TEST_KEY "sk-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf"

typedef struct bearer_case {
    const char *value;
    auth_bearer_kind_t kind;
    const char *token; /* expected token for API_KEY / OTHER */
} bearer_case_t;

static void test_bearer_parse_cases(void) {
    static char long_token[AUTH_TOKEN_LENGTH_MAX + 16];
    static const bearer_case_t cases[] = {
        {"", AUTH_BEARER_MISSING, NULL},
        {"   ", AUTH_BEARER_MISSING, NULL},
        {"\t", AUTH_BEARER_MISSING, NULL},
        {"Bearer", AUTH_BEARER_MISSING, NULL},
        {"Bearer   ", AUTH_BEARER_MISSING, NULL},
        {"bearer\t", AUTH_BEARER_MISSING, NULL},
        {"Bearer " TEST_KEY, AUTH_BEARER_API_KEY, TEST_KEY},
        {"bearer " TEST_KEY, AUTH_BEARER_API_KEY, TEST_KEY},
        {"BEARER " TEST_KEY, AUTH_BEARER_API_KEY, TEST_KEY},
        {"BeArEr " TEST_KEY, AUTH_BEARER_API_KEY, TEST_KEY},
        {"Bearer   " TEST_KEY, AUTH_BEARER_API_KEY, TEST_KEY},
        {"  Bearer " TEST_KEY "  ", AUTH_BEARER_API_KEY, TEST_KEY},
        {"\tBearer\t" TEST_KEY "\t", AUTH_BEARER_API_KEY, TEST_KEY},
        {"Bearer" TEST_KEY, AUTH_BEARER_MALFORMED, NULL},
        {"Bearer:" TEST_KEY, AUTH_BEARER_MALFORMED, NULL},
        {"Bearer\n" TEST_KEY, AUTH_BEARER_MALFORMED, NULL},
        {TEST_KEY, AUTH_BEARER_MALFORMED, NULL},
        {"Basic dXNlcjpwYXNz", AUTH_BEARER_MALFORMED, NULL},
        {"Bear " TEST_KEY, AUTH_BEARER_MALFORMED, NULL},
        {"Bear", AUTH_BEARER_MALFORMED, NULL},
        {"Token " TEST_KEY, AUTH_BEARER_MALFORMED, NULL},
        {"Bearer sk-", AUTH_BEARER_MALFORMED, NULL},
        {"Bearer sk-short", AUTH_BEARER_MALFORMED, NULL},
        {"Bearer " TEST_KEY "x", AUTH_BEARER_MALFORMED, NULL},
        {"Bearer sk-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBID_f", AUTH_BEARER_MALFORMED, NULL},
        {"Bearer " TEST_KEY " extra", AUTH_BEARER_MALFORMED, NULL},
        {"Bearer " TEST_KEY " " TEST_KEY, AUTH_BEARER_MALFORMED, NULL},
        {"Bearer \"" TEST_KEY "\"", AUTH_BEARER_MALFORMED, NULL},
        {"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc-_", AUTH_BEARER_OTHER,
         "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc-_"},
        {"Bearer abc==", AUTH_BEARER_OTHER, "abc=="},
        {"Bearer a~b+c/d", AUTH_BEARER_OTHER, "a~b+c/d"},
        {"Bearer SK-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf", AUTH_BEARER_OTHER,
         "SK-003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf"},
        {"Bearer =abc", AUTH_BEARER_MALFORMED, NULL},
        {"Bearer abc=d", AUTH_BEARER_MALFORMED, NULL},
        {"Bearer ab,c", AUTH_BEARER_MALFORMED, NULL},
        {"Bearer ab\x80", AUTH_BEARER_MALFORMED, NULL},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        const bearer_case_t *item = &cases[index];
        auth_token_t token = {(const uint8_t *)"x", 99};
        size_t length = strlen(item->value);
        auth_bearer_kind_t kind = auth_bearer_parse(test_bytes(item->value), length, &token);
        if (kind != item->kind) fprintf(stderr, "  case %zu: \"%s\"\n", index, item->value);
        CHECK_EQ_INT(kind, item->kind);
        if (item->token != NULL) {
            CHECK_EQ_BYTES(token.bytes, token.length, item->token);
            CHECK(token.bytes >= test_bytes(item->value) &&
                  token.bytes + token.length <= test_bytes(item->value) + length);
        } else {
            CHECK(token.bytes == NULL && token.length == 0);
        }
    }
    /* Absent field. */
    auth_token_t token;
    CHECK_EQ_INT(auth_bearer_parse(NULL, 0, &token), AUTH_BEARER_MISSING);
    /* A NUL inside the value is just a bad byte. */
    CHECK_EQ_INT(auth_bearer_parse(test_bytes("Bearer a\0b"), 10, &token), AUTH_BEARER_MALFORMED);
    /* Token length bound for non-key tokens. */
    memcpy(long_token, "Bearer ", 7);
    memset(long_token + 7, 'a', AUTH_TOKEN_LENGTH_MAX);
    CHECK_EQ_INT(auth_bearer_parse(test_bytes(long_token), 7 + AUTH_TOKEN_LENGTH_MAX, &token),
                 AUTH_BEARER_OTHER);
    CHECK_EQ_INT(token.length, AUTH_TOKEN_LENGTH_MAX);
    long_token[7 + AUTH_TOKEN_LENGTH_MAX] = 'a';
    CHECK_EQ_INT(auth_bearer_parse(test_bytes(long_token), 8 + AUTH_TOKEN_LENGTH_MAX, &token),
                 AUTH_BEARER_MALFORMED);
}

/* Every prefix of a valid field value: only the whole one is a key (the
 * parser sees whole values, so this is its byte-by-byte test). */
static void test_bearer_parse_prefixes(void) {
    const char *value = "  Bearer  " TEST_KEY;
    size_t length = strlen(value);
    for (size_t cut = 0; cut <= length; cut++) {
        auth_token_t token;
        auth_bearer_kind_t kind = auth_bearer_parse(test_bytes(value), cut, &token);
        if (cut == length) {
            CHECK_EQ_INT(kind, AUTH_BEARER_API_KEY);
        } else if (cut <= 2 || (cut >= 8 && cut <= 12)) {
            /* blanks, "Bearer", "Bearer ", "Bearer  ", "Bearer  s" ... */
            CHECK(kind == AUTH_BEARER_MISSING || kind == AUTH_BEARER_OTHER);
        } else {
            CHECK(kind == AUTH_BEARER_MALFORMED || kind == AUTH_BEARER_OTHER);
        }
        CHECK(kind != AUTH_BEARER_API_KEY || cut == length);
    }
}

/* Seeded random mutations of valid values: no crash, and the result's
 * invariants hold. */
static void test_bearer_parse_mutations(void) {
    const char *seeds[] = {("Bearer " TEST_KEY), "bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "Bearer"};
    static const char alphabet[] = "sk-Bb ear\t=._~+/0Zz\"\x80";
    test_random.state = 1;
    for (int round = 0; round < 5000; round++) {
        uint8_t value[128];
        const char *seed = seeds[round % 3];
        size_t length = strlen(seed);
        memcpy(value, seed, length);
        int edits = 1 + (int)(unit_random_next(&test_random) % 4);
        for (int edit = 0; edit < edits; edit++) {
            uint64_t choice = unit_random_next(&test_random);
            size_t position = length == 0 ? 0 : (size_t)(choice >> 8) % length;
            uint8_t byte = (uint8_t)alphabet[(choice >> 40) % (sizeof(alphabet) - 1)];
            switch (choice % 3) {
            case 0: /* replace */
                if (length > 0) value[position] = byte;
                break;
            case 1: /* insert */
                if (length < sizeof(value)) {
                    memmove(value + position + 1, value + position, length - position);
                    value[position] = byte;
                    length++;
                }
                break;
            default: /* delete */
                if (length > 0) {
                    memmove(value + position, value + position + 1, length - position - 1);
                    length--;
                }
                break;
            }
        }
        auth_token_t token;
        auth_bearer_kind_t kind = auth_bearer_parse(value, length, &token);
        if (kind == AUTH_BEARER_API_KEY) {
            CHECK(auth_key_text_valid((const char *)token.bytes, token.length));
        }
        if (kind == AUTH_BEARER_API_KEY || kind == AUTH_BEARER_OTHER) {
            CHECK(token.length > 0 && token.bytes >= value && token.bytes + token.length <= value + length);
            for (size_t index = 0; index < token.length; index++) {
                CHECK(token.bytes[index] > 0x20 && token.bytes[index] < 0x7F && token.bytes[index] != '"');
            }
        } else {
            CHECK(token.bytes == NULL && token.length == 0);
        }
        if (kind == AUTH_BEARER_OTHER) CHECK(token.length < 3 || memcmp(token.bytes, "sk-", 3) != 0);
    }
}

/* ---- Authentication -------------------------------------------------------- */

typedef struct auth_fixture {
    account_tables_t tables;
    char keys[5][AUTH_KEY_TEXT_BYTES];
    account_key_t *slots[5];
} auth_fixture_t;

/* Keys: 0 active (user 1), 1 disabled, 2 expires at 1000 ms, 3 disabled and
 * expired, 4 owned by user 3 who is not published. */
static void auth_fixture_init(auth_fixture_t *fixture) {
    CHECK(account_tables_init(&fixture->tables, 4, 16));
    CHECK_EQ_INT(account_user_publish(&fixture->tables, 1, "a@b.co", 6, 1000, ACCOUNT_USER_ACTIVE), 0);
    CHECK_EQ_INT(account_user_publish(&fixture->tables, 2, "c@d.co", 6, 0, ACCOUNT_USER_SUSPENDED), 1);
    for (int index = 0; index < 5; index++) {
        CHECK(auth_key_generate(fixture->keys[index]));
        account_key_t fields;
        memset(&fields, 0, sizeof(fields));
        auth_key_hash(fixture->keys[index], AUTH_KEY_TEXT_LENGTH, fields.hash);
        auth_key_mask(fixture->keys[index], AUTH_KEY_TEXT_LENGTH, fields.prefix, fields.last4);
        fields.id = (uint64_t)index + 1;
        fields.user_index = index == 4 ? 2 : (uint32_t)(index % 2);
        snprintf(fields.name, sizeof(fields.name), "key %d", index);
        atomic_init(&fields.status, index == 1 || index == 3 ? ACCOUNT_KEY_DISABLED : ACCOUNT_KEY_ACTIVE);
        atomic_init(&fields.expires_at_ms, index == 2 || index == 3 ? 1000 : 0);
        atomic_init(&fields.all_models, 1);
        atomic_init(&fields.spend_cap_micros, -1);
        fixture->slots[index] = account_key_publish(&fixture->tables, &fields);
        CHECK(fixture->slots[index] != NULL);
    }
}

static auth_result_t auth_fixture_try(auth_fixture_t *fixture, const char *header, int64_t now_ms,
                                      account_key_t **key, account_user_t **user, auth_error_t *error) {
    memset(error, 0, sizeof(*error));
    return auth_key_authenticate(&fixture->tables, test_bytes(header), strlen(header), now_ms, key,
                                 user, error);
}

static void test_authenticate(void) {
    auth_fixture_t fixture;
    auth_fixture_init(&fixture);
    char header[128];
    account_key_t *key;
    account_user_t *user;
    auth_error_t error;
    const char *messages[7] = {NULL};

    /* OK: pointers to the slot and its owner, error untouched. */
    snprintf(header, sizeof(header), "Bearer %s", fixture.keys[0]);
    CHECK_EQ_INT(auth_fixture_try(&fixture, header, 5000, &key, &user, &error), AUTH_OK);
    CHECK(key == fixture.slots[0]);
    CHECK(user == account_user_get(&fixture.tables, 1));
    CHECK_EQ_INT(error.http_status, 0);

    /* Missing. */
    CHECK_EQ_INT(auth_fixture_try(&fixture, "", 5000, &key, &user, &error), AUTH_MISSING);
    CHECK(key == NULL && user == NULL);
    CHECK(strncmp(error.message, "You didn't provide an API key.", 30) == 0);
    static char missing[AUTH_ERROR_MESSAGE_BYTES];
    memcpy(missing, error.message, sizeof(missing));
    messages[AUTH_MISSING] = missing;
    CHECK_EQ_INT(auth_key_authenticate(&fixture.tables, NULL, 0, 5000, &key, &user, &error), AUTH_MISSING);

    /* Malformed: another scheme, a JWT, a bad key shape. */
    CHECK_EQ_INT(auth_fixture_try(&fixture, "Basic abc", 5000, &key, &user, &error), AUTH_MALFORMED);
    CHECK_EQ_INT(auth_fixture_try(&fixture, "Bearer eyJ.eyJ.sig", 5000, &key, &user, &error), AUTH_MALFORMED);
    CHECK_EQ_INT(auth_fixture_try(&fixture, "Bearer sk-abc", 5000, &key, &user, &error), AUTH_MALFORMED);
    CHECK(key == NULL && user == NULL);
    CHECK(strncmp(error.message, "Malformed API key.", 18) == 0);
    CHECK(strstr(error.message, "sk-abc") == NULL);
    static char malformed[AUTH_ERROR_MESSAGE_BYTES];
    memcpy(malformed, error.message, sizeof(malformed));
    messages[AUTH_MALFORMED] = malformed;

    /* Unknown: masked, never the whole key. */
    CHECK_EQ_INT(auth_fixture_try(&fixture, "Bearer " TEST_KEY, 5000, &key, &user, &error), AUTH_UNKNOWN);
    CHECK(key == NULL && user == NULL);
    CHECK(strncmp(error.message, "Incorrect API key provided: sk-003aUlTJ...IDlf. ", 48) == 0);
    CHECK(strstr(error.message, TEST_KEY) == NULL);
    CHECK(strstr(error.message, "C7tjlCTQ") == NULL);
    static char unknown[AUTH_ERROR_MESSAGE_BYTES];
    memcpy(unknown, error.message, sizeof(unknown));
    messages[AUTH_UNKNOWN] = unknown;

    /* Disabled (before expiry is even looked at). */
    char masked[AUTH_KEY_MASKED_BYTES];
    snprintf(header, sizeof(header), "Bearer %s", fixture.keys[1]);
    CHECK_EQ_INT(auth_fixture_try(&fixture, header, 5000, &key, &user, &error), AUTH_DISABLED);
    CHECK(key == fixture.slots[1] && user == NULL);
    auth_key_masked(fixture.slots[1]->prefix, fixture.slots[1]->last4, masked);
    CHECK(strstr(error.message, masked) != NULL);
    CHECK(strstr(error.message, "has been disabled") != NULL);
    CHECK(strstr(error.message, fixture.keys[1]) == NULL);
    static char disabled[AUTH_ERROR_MESSAGE_BYTES];
    memcpy(disabled, error.message, sizeof(disabled));
    messages[AUTH_DISABLED] = disabled;
    snprintf(header, sizeof(header), "Bearer %s", fixture.keys[3]);
    CHECK_EQ_INT(auth_fixture_try(&fixture, header, 5000, &key, &user, &error), AUTH_DISABLED);

    /* Expired: at and after the instant, not before. */
    snprintf(header, sizeof(header), "Bearer %s", fixture.keys[2]);
    CHECK_EQ_INT(auth_fixture_try(&fixture, header, 999, &key, &user, &error), AUTH_OK);
    CHECK_EQ_INT(auth_fixture_try(&fixture, header, 1000, &key, &user, &error), AUTH_EXPIRED);
    CHECK(key == fixture.slots[2] && user == NULL);
    CHECK(strstr(error.message, "has expired") != NULL);
    static char expired[AUTH_ERROR_MESSAGE_BYTES];
    memcpy(expired, error.message, sizeof(expired));
    messages[AUTH_EXPIRED] = expired;

    /* The owner is not published. */
    snprintf(header, sizeof(header), "Bearer %s", fixture.keys[4]);
    CHECK_EQ_INT(auth_fixture_try(&fixture, header, 5000, &key, &user, &error), AUTH_USER_MISSING);
    CHECK(key == fixture.slots[4] && user == NULL);
    static char user_missing[AUTH_ERROR_MESSAGE_BYTES];
    memcpy(user_missing, error.message, sizeof(user_missing));
    messages[AUTH_USER_MISSING] = user_missing;
    CHECK_EQ_INT(account_user_publish(&fixture.tables, 3, "e@f.co", 6, 0, ACCOUNT_USER_ACTIVE), 2);
    CHECK_EQ_INT(auth_fixture_try(&fixture, header, 5000, &key, &user, &error), AUTH_OK);

    /* Changes to the table show at once: disable, re-enable. */
    snprintf(header, sizeof(header), "Bearer %s", fixture.keys[0]);
    account_key_set_status(fixture.slots[0], ACCOUNT_KEY_DISABLED);
    CHECK_EQ_INT(auth_fixture_try(&fixture, header, 5000, &key, &user, &error), AUTH_DISABLED);
    account_key_set_status(fixture.slots[0], ACCOUNT_KEY_ACTIVE);
    CHECK_EQ_INT(auth_fixture_try(&fixture, header, 5000, &key, &user, &error), AUTH_OK);
    /* A suspended owner still authenticates (the ledger answers 402). */
    snprintf(header, sizeof(header), "Bearer %s", fixture.keys[1]);
    account_key_set_status(fixture.slots[1], ACCOUNT_KEY_ACTIVE);
    CHECK_EQ_INT(auth_fixture_try(&fixture, header, 5000, &key, &user, &error), AUTH_OK);
    CHECK(user == account_user_get(&fixture.tables, 2));

    /* Every message: distinct, JSON-safe, 401 invalid_api_key. */
    for (int first = AUTH_MISSING; first <= AUTH_USER_MISSING; first++) {
        CHECK(messages[first] != NULL);
        if (messages[first] == NULL) continue;
        CHECK(test_json_safe(messages[first]));
        for (int second = first + 1; second <= AUTH_USER_MISSING; second++) {
            CHECK(messages[second] == NULL || strcmp(messages[first], messages[second]) != 0);
        }
    }
    for (int result = AUTH_MISSING; result <= AUTH_USER_MISSING; result++) {
        auth_error_describe((auth_result_t)result, "sk-AbCdEfGh...wxyz", &error);
        CHECK_EQ_INT(error.http_status, 401);
        CHECK(strcmp(error.type, "invalid_request_error") == 0);
        CHECK(strcmp(error.code, "invalid_api_key") == 0);
        CHECK_EQ_INT(error.message_length, strlen(error.message));
        CHECK(test_json_safe(error.message));
    }
    account_tables_release(&fixture.tables);
}

/* ---- JWT: primitives ------------------------------------------------------ */

static void test_base64url(void) {
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *encoded[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    char out[16];
    uint8_t decoded[16];
    size_t length;
    for (size_t index = 0; index < RW_ARRAY_LENGTH(plain); index++) {
        length = jwt_base64url_encode(test_bytes(plain[index]), strlen(plain[index]), out, sizeof(out));
        CHECK_EQ_BYTES(out, length, encoded[index]);
        CHECK(jwt_base64url_decode(test_bytes(encoded[index]), strlen(encoded[index]), decoded,
                                   sizeof(decoded), &length));
        CHECK_EQ_BYTES(decoded, length, plain[index]);
    }
    /* The URL alphabet: 0xfb 0xff -> "-_8". */
    const uint8_t high[] = {0xfb, 0xff};
    length = jwt_base64url_encode(high, 2, out, sizeof(out));
    CHECK_EQ_BYTES(out, length, "-_8");
    /* Strictness. */
    static const char *refused[] = {"Zg=", "Zg==", "Z", "Zm9vY", "Zh", "Zm9", "Zm+v", "Zm/v",
                                    "Zm v", "Zm9v\n", "Zm9v.", "-_9"};
    for (size_t index = 0; index < RW_ARRAY_LENGTH(refused); index++) {
        CHECK(!jwt_base64url_decode(test_bytes(refused[index]), strlen(refused[index]), decoded,
                                    sizeof(decoded), &length));
    }
    /* Capacity. */
    CHECK(!jwt_base64url_decode(test_bytes("Zm9vYmFy"), 8, decoded, 5, &length));
    CHECK(jwt_base64url_decode(test_bytes("Zm9vYmFy"), 8, decoded, 6, &length));
    CHECK_EQ_INT(jwt_base64url_encode(test_bytes("foobar"), 6, out, 7), 0);
    CHECK_EQ_INT(jwt_base64url_encode(test_bytes("foobar"), 6, out, 8), 8);
    /* Round trips of random bytes of every length up to 100. */
    test_random.state = 7;
    for (size_t size = 0; size <= 100; size++) {
        uint8_t input[100], back[100];
        char text[140];
        for (size_t index = 0; index < size; index++) input[index] = (uint8_t)unit_random_next(&test_random);
        size_t text_length = jwt_base64url_encode(input, size, text, sizeof(text));
        CHECK_EQ_INT(text_length, (size * 4 + 2) / 3);
        size_t back_length = 0;
        CHECK(jwt_base64url_decode(test_bytes(text), text_length, back, sizeof(back), &back_length));
        CHECK(back_length == size && memcmp(input, back, size) == 0);
    }
}

static void test_hmac_vectors(void) {
    uint8_t mac[32];
    char hex[65];
    /* RFC 4231 test cases 1 and 2. */
    uint8_t key[20];
    memset(key, 0x0b, sizeof(key));
    jwt_hmac_sha256(key, sizeof(key), test_bytes("Hi There"), 8, mac);
    test_hex(mac, 32, hex);
    CHECK_EQ_BYTES(hex, 64, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    jwt_hmac_sha256(test_bytes("Jefe"), 4, test_bytes("what do ya want for nothing?"), 28, mac);
    test_hex(mac, 32, hex);
    CHECK_EQ_BYTES(hex, 64, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

/* RFC 7515 appendix A.1: the example HS256 JWS. */
static const char rfc7515_key[] =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
static const char rfc7515_token[] =
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

static void test_jwt_rfc7515(void) {
    uint8_t key[64];
    size_t key_length = 0;
    CHECK(jwt_base64url_decode(test_bytes(rfc7515_key), strlen(rfc7515_key), key, sizeof(key), &key_length));
    CHECK_EQ_INT(key_length, 64);
    /* The decoded parts are the RFC's JSON, CR LF included. */
    uint8_t part[256];
    size_t part_length = 0;
    CHECK(jwt_base64url_decode(test_bytes(rfc7515_token), 40, part, sizeof(part), &part_length));
    CHECK_EQ_BYTES(part, part_length, "{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}");
    /* The signature over "header.payload" is the RFC's. */
    const char *last_dot = strrchr(rfc7515_token, '.');
    uint8_t mac[32];
    jwt_hmac_sha256(key, key_length, test_bytes(rfc7515_token), (size_t)(last_dot - rfc7515_token), mac);
    char signature[64];
    size_t signature_length = jwt_base64url_encode(mac, sizeof(mac), signature, sizeof(signature));
    CHECK_EQ_BYTES(signature, signature_length, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");

    /* jwt_verify accepts its header and signature; the payload has no
     * "sub", so it is not one of our session tokens. */
    jwt_claims_t claims;
    CHECK_EQ_INT(jwt_verify(key, key_length, test_bytes(rfc7515_token), strlen(rfc7515_token),
                            1300819379, &claims), JWT_MALFORMED);
    char tampered[sizeof(rfc7515_token)];
    memcpy(tampered, rfc7515_token, sizeof(tampered));
    tampered[sizeof(tampered) - 5] = tampered[sizeof(tampered) - 5] == 'A' ? 'B' : 'A';
    CHECK_EQ_INT(jwt_verify(key, key_length, test_bytes(tampered), strlen(tampered), 1300819379, &claims),
                 JWT_BAD_SIGNATURE);
    /* With the same key, a token in the RFC's style that has our claims. */
    char token[512];
    size_t length = test_make_token("{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}",
                                    "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"sub\":\"7\",\r\n"
                                    " \"http://example.com/is_root\":true}",
                                    key, key_length, 0, token, sizeof(token));
    CHECK_EQ_INT(jwt_verify(key, key_length, test_bytes(token), length, 1300819379, &claims), JWT_OK);
    CHECK_EQ_INT(claims.user_id, 7);
    CHECK_EQ_INT(claims.expires_at_s, 1300819380);
    CHECK_EQ_INT(claims.issued_at_s, 0);
    CHECK_EQ_INT(claims.email_length, 0);
    CHECK_EQ_INT(jwt_verify(key, key_length, test_bytes(token), length, 1300819380, &claims), JWT_EXPIRED);
}

/* ---- JWT: our tokens ------------------------------------------------------ */

/* Made with python3's hmac and hashlib for secret bytes 0..31. */
static const char known_token[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiI0MiIsImVtYWlsIjoiYWxpY2VAZXhhbXBsZS5jb20iLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDA4NjQwMH0"
    ".CcWTXBhJSsiMvMB4BUr7gnfSY95cBxhpd18Z5Bt1yC4";

static void test_jwt_sign_and_verify(void) {
    uint8_t secret[32];
    test_secret(secret);
    char token[JWT_TOKEN_BYTES_MAX + 1];
    size_t length = jwt_sign(secret, sizeof(secret), 42, "alice@example.com", 17, 1700000000,
                             1700086400, token, sizeof(token));
    CHECK_EQ_BYTES(token, length, known_token);
    CHECK_EQ_INT(strlen(token), length);

    jwt_claims_t claims;
    memset(&claims, 0xAA, sizeof(claims));
    CHECK_EQ_INT(jwt_verify(secret, sizeof(secret), test_bytes(token), length, 1700000000, &claims), JWT_OK);
    CHECK_EQ_INT(claims.user_id, 42);
    CHECK_EQ_INT(claims.issued_at_s, 1700000000);
    CHECK_EQ_INT(claims.expires_at_s, 1700086400);
    CHECK_EQ_BYTES(claims.email, claims.email_length, "alice@example.com");
    CHECK(claims.email[claims.email_length] == '\0');

    /* exp is enforced: valid strictly before it. */
    CHECK_EQ_INT(jwt_verify(secret, sizeof(secret), test_bytes(token), length, 1700086399, &claims), JWT_OK);
    memset(&claims, 0x55, sizeof(claims));
    CHECK_EQ_INT(jwt_verify(secret, sizeof(secret), test_bytes(token), length, 1700086400, &claims),
                 JWT_EXPIRED);
    CHECK_EQ_INT(claims.user_id, UINT64_C(0x5555555555555555)); /* untouched unless OK */
    CHECK_EQ_INT(jwt_verify(secret, sizeof(secret), test_bytes(token), length, INT64_MAX, &claims),
                 JWT_EXPIRED);

    /* Another secret. */
    uint8_t other[32];
    memset(other, 0x42, sizeof(other));
    CHECK_EQ_INT(jwt_verify(other, sizeof(other), test_bytes(token), length, 1700000000, &claims),
                 JWT_BAD_SIGNATURE);
    /* A longer secret is fine; one differing in its last byte is not the same. */
    other[0] = 0;
    memcpy(other, secret, 32);
    other[31] ^= 1;
    CHECK_EQ_INT(jwt_verify(other, sizeof(other), test_bytes(token), length, 1700000000, &claims),
                 JWT_BAD_SIGNATURE);

    /* Largest user id, empty email, zero times. */
    length = jwt_sign(secret, sizeof(secret), UINT64_MAX, "", 0, 0, 1, token, sizeof(token));
    CHECK(length > 0);
    CHECK_EQ_INT(jwt_verify(secret, sizeof(secret), test_bytes(token), length, 0, &claims), JWT_OK);
    CHECK(claims.user_id == UINT64_MAX && claims.email_length == 0 && claims.expires_at_s == 1);

    /* The longest email fits under JWT_TOKEN_BYTES_MAX. */
    char email[ACCOUNT_EMAIL_BYTES];
    memset(email, 'e', 255);
    email[255] = '\0';
    length = jwt_sign(secret, sizeof(secret), 1, email, 255, INT64_MAX - 1, INT64_MAX, token, sizeof(token));
    CHECK(length > 0 && length <= JWT_TOKEN_BYTES_MAX);
    CHECK_EQ_INT(jwt_verify(secret, sizeof(secret), test_bytes(token), length, 0, &claims), JWT_OK);
    CHECK_EQ_INT(claims.email_length, 255);
    CHECK_EQ_INT(claims.expires_at_s, INT64_MAX);

    /* Refusals of jwt_sign. */
    CHECK_EQ_INT(jwt_sign(secret, 32, 1, "a\"b@c.de", 8, 0, 1, token, sizeof(token)), 0);
    CHECK_EQ_INT(jwt_sign(secret, 32, 1, "a\\b@c.de", 8, 0, 1, token, sizeof(token)), 0);
    CHECK_EQ_INT(jwt_sign(secret, 32, 1, "a\nb@c.de", 8, 0, 1, token, sizeof(token)), 0);
    CHECK_EQ_INT(jwt_sign(secret, 32, 1, "\xc3\xa9@c.de", 7, 0, 1, token, sizeof(token)), 0);
    CHECK_EQ_INT(jwt_sign(secret, 32, 1, email, 256, 0, 1, token, sizeof(token)), 0);
    CHECK_EQ_INT(jwt_sign(secret, 32, 1, "a@b.cd", 6, -1, 1, token, sizeof(token)), 0);
    CHECK_EQ_INT(jwt_sign(secret, 32, 1, "a@b.cd", 6, 0, -1, token, sizeof(token)), 0);
    /* Every capacity too small for the token and its NUL is refused. */
    size_t full = jwt_sign(secret, 32, 42, "alice@example.com", 17, 1700000000, 1700086400, token,
                           sizeof(token));
    for (size_t capacity = 0; capacity <= full; capacity++) {
        char small[sizeof(known_token)];
        CHECK_EQ_INT(jwt_sign(secret, 32, 42, "alice@example.com", 17, 1700000000, 1700086400, small,
                              capacity), 0);
    }
    char exact[sizeof(known_token)];
    CHECK_EQ_INT(jwt_sign(secret, 32, 42, "alice@example.com", 17, 1700000000, 1700086400, exact,
                          sizeof(exact)), full);
}

/* Changing any one byte of a token makes it fail. */
static void test_jwt_tamper_every_byte(void) {
    uint8_t secret[32];
    test_secret(secret);
    size_t length = strlen(known_token);
    static const char replacements[] = "AaZz09-_.=+ ";
    int counts[5] = {0};
    for (size_t position = 0; position < length; position++) {
        for (size_t choice = 0; choice < sizeof(replacements) - 1; choice++) {
            if (replacements[choice] == known_token[position]) continue;
            char token[sizeof(known_token)];
            memcpy(token, known_token, sizeof(token));
            token[position] = replacements[choice];
            jwt_claims_t claims;
            jwt_result_t result = jwt_verify(secret, 32, test_bytes(token), length, 1700000000, &claims);
            CHECK(result != JWT_OK);
            counts[result]++;
        }
    }
    /* Payload and signature changes are caught by the signature, header
     * changes by parsing or the signature. */
    CHECK(counts[JWT_BAD_SIGNATURE] > 0 && counts[JWT_MALFORMED] > 0);
    CHECK_EQ_INT(counts[JWT_OK], 0);
    /* Truncation at every length, and one byte appended. */
    for (size_t cut = 0; cut < length; cut++) {
        jwt_claims_t claims;
        CHECK(jwt_verify(secret, 32, test_bytes(known_token), cut, 1700000000, &claims) != JWT_OK);
    }
    char longer[sizeof(known_token) + 1];
    memcpy(longer, known_token, length);
    longer[length] = 'A';
    jwt_claims_t claims;
    CHECK(jwt_verify(secret, 32, test_bytes(longer), length + 1, 1700000000, &claims) != JWT_OK);
}

typedef struct jwt_case {
    const char *header;
    const char *payload;
    int signature_mode;
    jwt_result_t expected;
} jwt_case_t;

#define GOOD_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define GOOD_PAYLOAD "{\"sub\":\"5\",\"email\":\"a@b.co\",\"iat\":100,\"exp\":2000}"

static void test_jwt_cases(void) {
    static const jwt_case_t cases[] = {
        {GOOD_HEADER, GOOD_PAYLOAD, 0, JWT_OK},
        {"{\"alg\":\"HS256\"}", GOOD_PAYLOAD, 0, JWT_OK},
        {" { \"typ\" : \"JWT\" , \"alg\" : \"HS256\" } ", GOOD_PAYLOAD, 0, JWT_OK},
        {"{\"alg\":\"HS\\u0032\\u0035\\u0036\"}", GOOD_PAYLOAD, 0, JWT_OK}, /* same string in JSON */
        {"{\"alg\":\"HS256\",\"kid\":\"1\"}", GOOD_PAYLOAD, 0, JWT_OK},
        /* The algorithm is pinned. */
        {"{\"alg\":\"none\",\"typ\":\"JWT\"}", GOOD_PAYLOAD, 1, JWT_WRONG_ALGORITHM},
        {"{\"alg\":\"none\",\"typ\":\"JWT\"}", GOOD_PAYLOAD, 0, JWT_WRONG_ALGORITHM},
        {"{\"alg\":\"None\"}", GOOD_PAYLOAD, 1, JWT_WRONG_ALGORITHM},
        {"{\"alg\":\"HS512\"}", GOOD_PAYLOAD, 0, JWT_WRONG_ALGORITHM},
        {"{\"alg\":\"HS384\"}", GOOD_PAYLOAD, 0, JWT_WRONG_ALGORITHM},
        {"{\"alg\":\"RS256\"}", GOOD_PAYLOAD, 0, JWT_WRONG_ALGORITHM},
        {"{\"alg\":\"hs256\"}", GOOD_PAYLOAD, 0, JWT_WRONG_ALGORITHM},
        {"{\"alg\":\"HS256 \"}", GOOD_PAYLOAD, 0, JWT_WRONG_ALGORITHM},
        {"{\"alg\":\"HS2560000\"}", GOOD_PAYLOAD, 0, JWT_WRONG_ALGORITHM},
        {"{\"alg\":\"\"}", GOOD_PAYLOAD, 0, JWT_WRONG_ALGORITHM},
        {"{\"alg\":256}", GOOD_PAYLOAD, 0, JWT_WRONG_ALGORITHM},
        {"{\"alg\":null}", GOOD_PAYLOAD, 0, JWT_WRONG_ALGORITHM},
        {"{\"alg\":[\"HS256\"]}", GOOD_PAYLOAD, 0, JWT_WRONG_ALGORITHM},
        /* Other header problems. */
        {"{\"typ\":\"JWT\"}", GOOD_PAYLOAD, 0, JWT_MALFORMED},
        {"{\"alg\":\"HS256\",\"alg\":\"HS256\"}", GOOD_PAYLOAD, 0, JWT_MALFORMED},
        {"{\"alg\":\"HS256\",\"alg\":\"none\"}", GOOD_PAYLOAD, 0, JWT_MALFORMED},
        {"{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", GOOD_PAYLOAD, 0, JWT_MALFORMED},
        {"{\"alg\":\"HS256\",\"typ\":\"JWS\"}", GOOD_PAYLOAD, 0, JWT_MALFORMED},
        {"{\"alg\":\"HS256\",\"typ\":1}", GOOD_PAYLOAD, 0, JWT_MALFORMED},
        {"[\"alg\",\"HS256\"]", GOOD_PAYLOAD, 0, JWT_MALFORMED},
        {"{\"alg\":\"HS256\"", GOOD_PAYLOAD, 0, JWT_MALFORMED},
        {"", GOOD_PAYLOAD, 0, JWT_MALFORMED},
        /* Signatures. */
        {GOOD_HEADER, GOOD_PAYLOAD, 1, JWT_BAD_SIGNATURE},
        {GOOD_HEADER, GOOD_PAYLOAD, 2, JWT_BAD_SIGNATURE},
        /* Claims (signed correctly). */
        {GOOD_HEADER, "{\"email\":\"a@b.co\",\"exp\":2000}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":5,\"exp\":2000}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"0\",\"exp\":2000}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"05\",\"exp\":2000}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"-5\",\"exp\":2000}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5a\",\"exp\":2000}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"\",\"exp\":2000}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"18446744073709551616\",\"exp\":2000}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"18446744073709551615\",\"exp\":2000}", 0, JWT_OK},
        {GOOD_HEADER, "{\"sub\":\"5\",\"sub\":\"6\",\"exp\":2000}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\"}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":\"2000\"}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":2000.0}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":2e3}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":-1}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":null}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":99999999999999999999}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":9999999999999999999}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":9223372036854775808}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":9223372036854775807}", 0, JWT_OK},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":2000,\"iat\":9223372036854775808}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":2000,\"exp\":3000}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":2000,\"iat\":\"1\"}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":2000,\"email\":7}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":2000,\"email\":\"a\\u0000b\"}", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":2000,\"email\":\"a\\u0040b.co\"}", 0, JWT_OK},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":2000,\"other\":{\"x\":[1,2]}}", 0, JWT_OK},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":1000}", 0, JWT_EXPIRED},
        {GOOD_HEADER, "[\"sub\",\"5\"]", 0, JWT_MALFORMED},
        {GOOD_HEADER, "{\"sub\":\"5\",\"exp\":2000", 0, JWT_MALFORMED},
        {GOOD_HEADER, "", 0, JWT_MALFORMED},
    };
    uint8_t secret[32];
    test_secret(secret);
    for (size_t index = 0; index < RW_ARRAY_LENGTH(cases); index++) {
        const jwt_case_t *item = &cases[index];
        char token[JWT_TOKEN_BYTES_MAX + 1];
        size_t length = test_make_token(item->header, item->payload, secret, 32, item->signature_mode,
                                        token, sizeof(token));
        jwt_claims_t claims;
        jwt_result_t result = jwt_verify(secret, 32, test_bytes(token), length, 1000, &claims);
        if (result != item->expected) {
            fprintf(stderr, "  case %zu: %s . %s -> %d\n", index, item->header, item->payload, result);
        }
        CHECK_EQ_INT(result, item->expected);
    }
}

static void test_jwt_structure(void) {
    uint8_t secret[32];
    test_secret(secret);
    jwt_claims_t claims;
    char token[2 * JWT_TOKEN_BYTES_MAX];
    size_t length = strlen(known_token);
    const uint8_t *good = test_bytes(known_token);
    CHECK_EQ_INT(jwt_verify(secret, 32, good, 0, 1700000000, &claims), JWT_MALFORMED);
    CHECK_EQ_INT(jwt_verify(secret, 32, test_bytes("a.b"), 3, 1700000000, &claims), JWT_MALFORMED);
    CHECK_EQ_INT(jwt_verify(secret, 32, test_bytes(".."), 2, 1700000000, &claims), JWT_MALFORMED);
    /* Four parts. */
    memcpy(token, known_token, length);
    memcpy(token + length, ".AA", 3);
    CHECK_EQ_INT(jwt_verify(secret, 32, test_bytes(token), length + 3, 1700000000, &claims), JWT_MALFORMED);
    /* Padding, whitespace. */
    memcpy(token + length, "=", 1);
    CHECK_EQ_INT(jwt_verify(secret, 32, test_bytes(token), length + 1, 1700000000, &claims), JWT_MALFORMED);
    memcpy(token + length, " ", 1);
    CHECK_EQ_INT(jwt_verify(secret, 32, test_bytes(token), length + 1, 1700000000, &claims), JWT_MALFORMED);
    token[0] = ' ';
    memcpy(token + 1, known_token, length);
    CHECK_EQ_INT(jwt_verify(secret, 32, test_bytes(token), length + 1, 1700000000, &claims), JWT_MALFORMED);
    /* A signature of 30 bytes (40 characters, valid base64url): a bad
     * signature; 41 characters cannot be base64url; 42 leave bits set. */
    CHECK_EQ_INT(jwt_verify(secret, 32, good, length - 3, 1700000000, &claims), JWT_BAD_SIGNATURE);
    CHECK_EQ_INT(jwt_verify(secret, 32, good, length - 2, 1700000000, &claims), JWT_MALFORMED);
    CHECK_EQ_INT(jwt_verify(secret, 32, good, length - 1, 1700000000, &claims), JWT_MALFORMED);
    /* Too long: refused unread, even with a valid signature. */
    static char big_payload[JWT_TOKEN_BYTES_MAX];
    int written = snprintf(big_payload, sizeof(big_payload), "{\"sub\":\"5\",\"exp\":2000,\"pad\":\"");
    memset(big_payload + written, 'x', 700);
    memcpy(big_payload + written + 700, "\"}", 3);
    length = test_make_token(GOOD_HEADER, big_payload, secret, 32, 0, token, sizeof(token));
    CHECK(length > JWT_TOKEN_BYTES_MAX);
    CHECK_EQ_INT(jwt_verify(secret, 32, test_bytes(token), length, 1000, &claims), JWT_MALFORMED);
    big_payload[written + 500] = '"';
    big_payload[written + 501] = '}';
    big_payload[written + 502] = '\0';
    length = test_make_token(GOOD_HEADER, big_payload, secret, 32, 0, token, sizeof(token));
    CHECK(length <= JWT_TOKEN_BYTES_MAX);
    CHECK_EQ_INT(jwt_verify(secret, 32, test_bytes(token), length, 1000, &claims), JWT_OK);
}

/* Seeded random mutations of a valid token: never accepted unless unchanged. */
static void test_jwt_mutations(void) {
    uint8_t secret[32];
    test_secret(secret);
    static const char alphabet[] = "AZaz09-_.=+/ \"{}e";
    size_t base_length = strlen(known_token);
    test_random.state = 99;
    for (int round = 0; round < 4000; round++) {
        char token[sizeof(known_token) + 8];
        size_t length = base_length;
        memcpy(token, known_token, length);
        int edits = 1 + (int)(unit_random_next(&test_random) % 3);
        for (int edit = 0; edit < edits; edit++) {
            uint64_t choice = unit_random_next(&test_random);
            size_t position = length == 0 ? 0 : (size_t)(choice >> 8) % length;
            char byte = alphabet[(choice >> 40) % (sizeof(alphabet) - 1)];
            if (choice % 3 == 0 && length > 0) {
                token[position] = byte;
            } else if (choice % 3 == 1 && length < sizeof(token)) {
                memmove(token + position + 1, token + position, length - position);
                token[position] = byte;
                length++;
            } else if (length > 0) {
                memmove(token + position, token + position + 1, length - position - 1);
                length--;
            }
        }
        bool unchanged = length == base_length && memcmp(token, known_token, length) == 0;
        jwt_claims_t claims;
        jwt_result_t result = jwt_verify(secret, 32, test_bytes(token), length, 1700000000, &claims);
        CHECK((result == JWT_OK) == unchanged);
        CHECK(result >= JWT_OK && result <= JWT_WRONG_ALGORITHM);
    }
}

static void test_jwt_secret_and_messages(void) {
    uint8_t first[JWT_SECRET_BYTES], second[JWT_SECRET_BYTES], zero[JWT_SECRET_BYTES] = {0};
    CHECK(jwt_secret_generate(first));
    CHECK(jwt_secret_generate(second));
    CHECK(memcmp(first, second, sizeof(first)) != 0);
    CHECK(memcmp(first, zero, sizeof(first)) != 0);
    /* A generated secret signs and verifies. */
    char token[JWT_TOKEN_BYTES_MAX + 1];
    size_t length = jwt_sign(first, sizeof(first), 3, "x@y.zz", 6, 10, 20, token, sizeof(token));
    jwt_claims_t claims;
    CHECK_EQ_INT(jwt_verify(first, sizeof(first), test_bytes(token), length, 15, &claims), JWT_OK);
    CHECK_EQ_INT(jwt_verify(second, sizeof(second), test_bytes(token), length, 15, &claims), JWT_BAD_SIGNATURE);
    for (int first_result = JWT_OK; first_result <= JWT_WRONG_ALGORITHM; first_result++) {
        const char *message = jwt_result_message((jwt_result_t)first_result);
        CHECK(message != NULL && test_json_safe(message));
        for (int other = first_result + 1; other <= JWT_WRONG_ALGORITHM; other++) {
            CHECK(strcmp(message, jwt_result_message((jwt_result_t)other)) != 0);
        }
    }
}

/* ---- Passwords ------------------------------------------------------------- */

static void test_password_acceptable(void) {
    CHECK(!auth_password_acceptable(0));
    CHECK(!auth_password_acceptable(7));
    CHECK(auth_password_acceptable(8));
    CHECK(auth_password_acceptable(1024));
    CHECK(!auth_password_acceptable(1025));
    CHECK(!auth_password_acceptable(SIZE_MAX));
}

static void test_password_hash_verify(void) {
    char encoded[PASSWORD_ENCODED_BYTES];
    char again[PASSWORD_ENCODED_BYTES];
    const char *password = "correct horse battery staple";
    size_t length = strlen(password);
    CHECK(password_hash(password, length, encoded));
    const char *prefix = "$argon2id$v=19$m=19456,t=2,p=1$";
    CHECK(strncmp(encoded, prefix, strlen(prefix)) == 0);
    CHECK_EQ_INT(strlen(encoded), 97);
    CHECK(password_verify(encoded, password, length));
    CHECK(!password_verify(encoded, password, length - 1));
    CHECK(!password_verify(encoded, "correct horse battery staplE", length));
    CHECK(!password_verify(encoded, "", 0));

    /* Salts are random: the same password hashes differently. */
    CHECK(password_hash(password, length, again));
    CHECK(strcmp(encoded, again) != 0);
    CHECK(password_verify(again, password, length));

    /* A given salt is deterministic and shows in the encoding. */
    uint8_t salt[PASSWORD_SALT_BYTES];
    memcpy(salt, "somesaltsomesalt", 16);
    CHECK(password_hash_with_salt(password, length, salt, encoded));
    CHECK(password_hash_with_salt(password, length, salt, again));
    CHECK(strcmp(encoded, again) == 0);
    CHECK(strncmp(encoded + strlen(prefix), "c29tZXNhbHRzb21lc2FsdA$", 23) == 0);

    /* Bytes after a NUL count. */
    CHECK(password_hash("password\0tail", 13, encoded));
    CHECK(password_verify(encoded, "password\0tail", 13));
    CHECK(!password_verify(encoded, "password\0tAil", 13));
    CHECK(!password_verify(encoded, "password", 8));

    /* Lengths outside the rule are refused. */
    CHECK(!password_hash("short", 5, encoded));
    CHECK(encoded[0] == '\0');
    static char huge[PASSWORD_LENGTH_MAX + 1];
    memset(huge, 'h', sizeof(huge));
    CHECK(!password_hash(huge, sizeof(huge), encoded));
    CHECK(password_hash(huge, PASSWORD_LENGTH_MAX, encoded));
    CHECK(password_verify(encoded, huge, PASSWORD_LENGTH_MAX));
    CHECK(!password_verify(encoded, huge, PASSWORD_LENGTH_MAX + 1));
}

static void test_password_verify_foreign(void) {
    /* The reference implementation's argon2id vector (t=2, m=64 MiB, p=1):
     * other parameters are read from the string. */
    const char *reference =
        "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
    CHECK(password_verify(reference, "password", 8));
    CHECK(!password_verify(reference, "Password", 8));
    /* Not argon2id, not an encoding, or not terminated within the bound. */
    CHECK(!password_verify("$argon2i$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
                           "password", 8));
    CHECK(!password_verify("", "password", 8));
    CHECK(!password_verify("$argon2id$v=19$", "password", 8));
    CHECK(!password_verify("$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$", "password", 8));
    CHECK(!password_verify("plaintext-password", "plaintext-password", 18));
    static char unterminated[PASSWORD_ENCODED_BYTES + 1];
    memset(unterminated, 'a', PASSWORD_ENCODED_BYTES);
    memcpy(unterminated, "$argon2id$v=19$", 15);
    unterminated[PASSWORD_ENCODED_BYTES] = '\0';
    CHECK(!password_verify(unterminated, "password", 8));
    /* The dummy runs (and does not crash on any length). */
    password_verify_dummy("whatever", 8);
    password_verify_dummy("", 0);
}

/* ---- Emails ---------------------------------------------------------------- */

static void test_email_valid(void) {
    char out[ACCOUNT_EMAIL_BYTES];
    static const char *good[][2] = {
        {"alice@example.com", "alice@example.com"},
        {"Alice.Smith+tag@Example.CO.uk", "alice.smith+tag@example.co.uk"},
        {"a@b.co", "a@b.co"},
        {"o'brien@x-y.io", "o'brien@x-y.io"},
        {"x!#$%&'*+-/=?^_`{|}~@a1.b2", "x!#$%&'*+-/=?^_`{|}~@a1.b2"},
        {"1@2.3", "1@2.3"},
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(good); index++) {
        memset(out, '#', sizeof(out));
        bool valid = auth_email_valid(good[index][0], strlen(good[index][0]), out);
        if (!valid) fprintf(stderr, "  refused: %s\n", good[index][0]);
        CHECK(valid);
        CHECK(strcmp(out, good[index][1]) == 0);
    }
    static const char *bad[] = {
        "", "a", "@", "a@", "@b.co", "alice@example", "alice@@example.com", "a@b@c.com",
        "al ice@example.com", "alice@exa mple.com", "alice@example.com ", " alice@example.com",
        "al\"ice@x.com", "al\\ice@x.com", "al,ice@x.com", "al;ice@x.com", "al(ice)@x.com",
        "<alice@x.com>", "alice@.example.com", "alice@example..com", "alice@example.com.",
        ".alice@x.com", "alice.@x.com", "al..ice@x.com", "alice@-x.com", "alice@x-.com",
        "alice@x_y.com", "a\x01@x.com", "a\x7f@x.com", "jos\xc3\xa9@x.com", "alice@[127.0.0.1]",
        "alice@x.com\n",
    };
    for (size_t index = 0; index < RW_ARRAY_LENGTH(bad); index++) {
        memset(out, '#', sizeof(out));
        bool valid = auth_email_valid(bad[index], strlen(bad[index]), out);
        if (valid) fprintf(stderr, "  accepted: %s\n", bad[index]);
        CHECK(!valid);
        CHECK(out[0] == '\0');
    }
    CHECK(!auth_email_valid("a\0b@x.com", 9, out));

    /* Length limits: local part 64, label 63, whole 254. */
    char text[300];
    memset(text, 'l', 64);
    memcpy(text + 64, "@x.com", 7);
    CHECK(auth_email_valid(text, 70, out));
    memset(text, 'l', 65);
    memcpy(text + 65, "@x.com", 7);
    CHECK(!auth_email_valid(text, 71, out));
    memcpy(text, "a@", 2);
    memset(text + 2, 'd', 63);
    memcpy(text + 65, ".com", 5);
    CHECK(auth_email_valid(text, 69, out));
    memcpy(text, "a@", 2);
    memset(text + 2, 'd', 64);
    memcpy(text + 66, ".com", 5);
    CHECK(!auth_email_valid(text, 70, out));
    /* 254 bytes: 64 local + '@' + 189 of domain as labels of 62 and dots. */
    size_t length = 0;
    memset(text, 'l', 64);
    length = 64;
    text[length++] = '@';
    while (length < 254) {
        size_t label = RW_MIN((size_t)62, 254 - length - 2);
        memset(text + length, 'd', label);
        length += label;
        if (length < 252) text[length++] = '.';
        else break;
    }
    while (length < 254) text[length++] = 'z';
    CHECK_EQ_INT(length, 254);
    bool accepted = auth_email_valid(text, 254, out);
    CHECK(accepted);
    CHECK(!accepted || strlen(out) == 254);
    text[254] = 'z';
    CHECK(!auth_email_valid(text, 255, out));
}

/* Every prefix of a valid address, and seeded random mutations: no crash;
 * whatever is accepted is the lower-case input with one '@' and no byte
 * that would need escaping. */
static void test_email_mutations(void) {
    const char *seed = "Alice.Smith+tag@Example.CO.uk";
    char out[ACCOUNT_EMAIL_BYTES];
    size_t seed_length = strlen(seed);
    for (size_t cut = 0; cut <= seed_length; cut++) {
        bool valid = auth_email_valid(seed, cut, out);
        /* "Alice.Smith+tag@Example.C" and longer are valid, shorter are
         * not, nor is "...@Example.CO." (27 bytes) with its trailing dot. */
        CHECK(valid == (cut >= 25 && cut != 27));
    }
    static const char alphabet[] = "aZ.@-_+ \"\\,\x01\x80";
    test_random.state = 4242;
    for (int round = 0; round < 5000; round++) {
        char text[64];
        size_t length = seed_length;
        memcpy(text, seed, length);
        int edits = 1 + (int)(unit_random_next(&test_random) % 3);
        for (int edit = 0; edit < edits; edit++) {
            uint64_t choice = unit_random_next(&test_random);
            size_t position = length == 0 ? 0 : (size_t)(choice >> 8) % length;
            char byte = alphabet[(choice >> 40) % (sizeof(alphabet) - 1)];
            if (choice % 3 == 0 && length > 0) {
                text[position] = byte;
            } else if (choice % 3 == 1 && length < sizeof(text)) {
                memmove(text + position + 1, text + position, length - position);
                text[position] = byte;
                length++;
            } else if (length > 0) {
                memmove(text + position, text + position + 1, length - position - 1);
                length--;
            }
        }
        if (!auth_email_valid(text, length, out)) {
            CHECK(out[0] == '\0');
            continue;
        }
        CHECK_EQ_INT(strlen(out), length);
        int at_signs = 0;
        for (size_t index = 0; index < length; index++) {
            uint8_t byte = (uint8_t)out[index];
            uint8_t original = (uint8_t)text[index];
            CHECK(byte == ((original >= 'A' && original <= 'Z') ? original + 32 : original));
            CHECK(byte > 0x20 && byte < 0x7F && byte != '"' && byte != '\\' && byte != ',');
            CHECK(!(byte >= 'A' && byte <= 'Z'));
            if (byte == '@') at_signs++;
        }
        CHECK_EQ_INT(at_signs, 1);
    }
}

int main(void) {
    RUN_TEST(test_key_encode_vectors);
    RUN_TEST(test_key_generate);
    RUN_TEST(test_key_text_valid);
    RUN_TEST(test_key_hash);
    RUN_TEST(test_key_mask);
    RUN_TEST(test_bearer_parse_cases);
    RUN_TEST(test_bearer_parse_prefixes);
    RUN_TEST(test_bearer_parse_mutations);
    RUN_TEST(test_authenticate);
    RUN_TEST(test_base64url);
    RUN_TEST(test_hmac_vectors);
    RUN_TEST(test_jwt_rfc7515);
    RUN_TEST(test_jwt_sign_and_verify);
    RUN_TEST(test_jwt_tamper_every_byte);
    RUN_TEST(test_jwt_cases);
    RUN_TEST(test_jwt_structure);
    RUN_TEST(test_jwt_mutations);
    RUN_TEST(test_jwt_secret_and_messages);
    RUN_TEST(test_password_acceptable);
    RUN_TEST(test_password_hash_verify);
    RUN_TEST(test_password_verify_foreign);
    RUN_TEST(test_email_valid);
    RUN_TEST(test_email_mutations);
    return UNIT_REPORT();
}
