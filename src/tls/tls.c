/* TLS on buffers. wolfSSL reads ciphertext through tls_io_receive (from the
 * session's input buffer) and writes it through tls_io_send (into the
 * session's output buffer); the event loop moves those bytes to and from the
 * sockets. Nothing here performs I/O except the context constructors, which
 * read certificate files at start-up. */
#include "ringway/tls.h"

/* wolfSSL's build options must precede every other wolfSSL header, or the
 * structures seen here differ from the ones the library was built with. */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/openssl/evp.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include <arpa/inet.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tls_context {
    WOLFSSL_CTX *wolfssl_context;
    bool is_server;
    bool verify_peer;
};

/* Longest DNS name (RFC 1035), the bound on server_name_or_null. */
#define TLS_SERVER_NAME_LENGTH_MAX ((size_t)TLS_SERVER_NAME_SIZE - 1)
/* Upper bound on one encrypted alert record (header, explicit IV, 2-byte
 * alert, MAC or tag, padding) for every suite wolfSSL offers. */
#define TLS_ALERT_BYTES_MAX ((size_t)128)
_Static_assert(TLS_ALERT_BYTES_MAX < TLS_BUFFER_CAPACITY_MIN, "an alert must fit an empty buffer");
/* Attempts to shrink a record until its ciphertext fits the free output
 * space: block-cipher padding makes the size step by at most one block per
 * attempt, so a few suffice. */
#define TLS_RECORD_FIT_ATTEMPTS_MAX 8
/* TLS's limit on plaintext per record (2^14). */
#define TLS_PLAINTEXT_RECORD_BYTES_MAX ((size_t)16384)

static pthread_once_t tls_global_once = PTHREAD_ONCE_INIT;
static bool tls_global_ready;

/* ---- wolfSSL's memory ------------------------------------------------------
 * wolfSSL grows and shrinks its record buffers around every record it reads
 * or writes (this build has no large static buffers), which would put
 * malloc and free on the relay's hot path several times per request. Its
 * allocations go through these callbacks instead: blocks come in power-of-two
 * size classes and freed blocks wait in a cache owned by the freeing thread,
 * bounded per class, so in steady state a thread reuses its own blocks and
 * never reaches the system allocator. A block freed by another thread just
 * joins that thread's cache: blocks carry their class, not their owner. */
enum {
    TLS_MEMORY_CLASS_MIN_SHIFT = 6,   /* 64 bytes */
    TLS_MEMORY_CLASSES = 10,          /* up to 32 KiB */
    TLS_MEMORY_CACHED_PER_CLASS = 256,
    TLS_MEMORY_HEADER_BYTES = 16,     /* keeps the payload 16-byte aligned */
    TLS_MEMORY_CLASS_LARGE = 0xffff,  /* larger blocks go straight to malloc */
};

typedef struct tls_memory_cache {
    void *blocks[TLS_MEMORY_CLASSES][TLS_MEMORY_CACHED_PER_CLASS];
    uint32_t counts[TLS_MEMORY_CLASSES];
} tls_memory_cache_t;

static _Thread_local tls_memory_cache_t tls_memory_cache;

static size_t tls_memory_class_bytes(uint32_t size_class) {
    return (size_t)1 << (TLS_MEMORY_CLASS_MIN_SHIFT + size_class);
}

static void *tls_memory_allocate(size_t size) {
    uint32_t size_class = 0;
    while (size_class < TLS_MEMORY_CLASSES && tls_memory_class_bytes(size_class) < size) size_class++;
    uint8_t *block = NULL;
    if (size_class == TLS_MEMORY_CLASSES) {
        block = malloc(TLS_MEMORY_HEADER_BYTES + size);
        size_class = TLS_MEMORY_CLASS_LARGE;
    } else if (tls_memory_cache.counts[size_class] > 0) {
        block = tls_memory_cache.blocks[size_class][--tls_memory_cache.counts[size_class]];
    } else {
        block = malloc(TLS_MEMORY_HEADER_BYTES + tls_memory_class_bytes(size_class));
    }
    if (block == NULL) return NULL;
    memcpy(block, &size_class, sizeof size_class);
    return block + TLS_MEMORY_HEADER_BYTES;
}

static void tls_memory_free(void *pointer) {
    if (pointer == NULL) return;
    uint8_t *block = (uint8_t *)pointer - TLS_MEMORY_HEADER_BYTES;
    uint32_t size_class = 0;
    memcpy(&size_class, block, sizeof size_class);
    RW_ASSERT(size_class < TLS_MEMORY_CLASSES || size_class == TLS_MEMORY_CLASS_LARGE);
    if (size_class != TLS_MEMORY_CLASS_LARGE && tls_memory_cache.counts[size_class] < TLS_MEMORY_CACHED_PER_CLASS) {
        tls_memory_cache.blocks[size_class][tls_memory_cache.counts[size_class]++] = block;
        return;
    }
    free(block);
}

static void *tls_memory_reallocate(void *pointer, size_t size) {
    if (pointer == NULL) return tls_memory_allocate(size);
    uint8_t *block = (uint8_t *)pointer - TLS_MEMORY_HEADER_BYTES;
    uint32_t size_class = 0;
    memcpy(&size_class, block, sizeof size_class);
    if (size_class != TLS_MEMORY_CLASS_LARGE && size <= tls_memory_class_bytes(size_class)) return pointer;
    void *grown = tls_memory_allocate(size);
    if (grown == NULL) return NULL;
    /* The old block's usable size bounds what is copied; for a large block
     * it is unknown here, so large blocks are reallocated by the system. */
    if (size_class == TLS_MEMORY_CLASS_LARGE) {
        tls_memory_free(grown);
        uint8_t *resized = realloc(block, TLS_MEMORY_HEADER_BYTES + size);
        return resized == NULL ? NULL : resized + TLS_MEMORY_HEADER_BYTES;
    }
    memcpy(grown, pointer, tls_memory_class_bytes(size_class));
    tls_memory_free(pointer);
    return grown;
}

/* Returns this thread's cached blocks to the system (at thread exit). */
static void tls_memory_release_cache(void) {
    for (uint32_t size_class = 0; size_class < TLS_MEMORY_CLASSES; size_class++) {
        while (tls_memory_cache.counts[size_class] > 0) {
            free(tls_memory_cache.blocks[size_class][--tls_memory_cache.counts[size_class]]);
        }
    }
}

static void tls_global_init_once(void) {
    /* Before wolfSSL_Init: every block wolfSSL frees must be one of ours. */
    bool allocators = wolfSSL_SetAllocators(tls_memory_allocate, tls_memory_free, tls_memory_reallocate) == 0;
    tls_global_ready = allocators && wolfSSL_Init() == WOLFSSL_SUCCESS;
}

bool tls_global_init(void) {
    int status = pthread_once(&tls_global_once, tls_global_init_once);
    RW_ASSERT(status == 0);
    return tls_global_ready;
}

void tls_thread_release(void) {
    /* This wolfSSL build (FP_ECC with thread-local storage) keeps an ECC
     * fixed-point table per thread; nothing else frees it. */
    wc_ecc_fp_free();
    wolfSSL_ERR_clear_error();
    tls_memory_release_cache();
}

void tls_global_release(void) {
    tls_thread_release();
    if (tls_global_ready) {
        wolfSSL_Cleanup();
    }
}

/* Writes a formatted message into a caller's error buffer, always
 * terminated, truncated if needed. */
static void tls_format_error(char *error, size_t error_size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static void tls_format_error(char *error, size_t error_size, const char *format, ...) {
    RW_ASSERT(error != NULL);
    RW_ASSERT(error_size > 0);
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(error, error_size, format, arguments);
    va_end(arguments);
}

/* wolfSSL's text for one of its (negative) error codes. */
static const char *tls_wolfssl_error_text(int code) {
    const char *text = wolfSSL_ERR_reason_error_string((unsigned long)code);
    return text != NULL ? text : "unknown wolfSSL error";
}

/* The wolfSSL side of the I/O: these run inside wolfSSL_connect/accept/read/
 * write/shutdown, on the thread that called them, with the session as ctx. */

/* Hands wolfSSL up to size ciphertext bytes from the input buffer. Empty
 * buffer: WANT_READ, or CONN_CLOSE once the caller reported end of stream. */
static int tls_io_receive(WOLFSSL *ssl, char *destination, int size, void *user_context) {
    tls_session_t *session = user_context;
    RW_ASSERT(session != NULL && session->ssl == ssl);
    RW_ASSERT(size > 0);
    tls_buffer_t *input = &session->input;
    RW_ASSERT(input->start <= input->end && input->end <= input->capacity);

    size_t available = input->end - input->start;
    if (available == 0) {
        session->receive_blocked = true;
        return session->input_ended ? WOLFSSL_CBIO_ERR_CONN_CLOSE : WOLFSSL_CBIO_ERR_WANT_READ;
    }
    size_t taken = RW_MIN(available, (size_t)size);
    memcpy(destination, input->bytes + input->start, taken);
    input->start += taken;
    if (input->start == input->end) {
        input->start = 0;
        input->end = 0;
    }
    return (int)taken;
}

/* Appends up to size ciphertext bytes to the output buffer, moving the
 * unsent bytes to the front first if the tail is too short. A full buffer
 * is WANT_WRITE; wolfSSL keeps the rest and offers it again on the next
 * call. */
static int tls_io_send(WOLFSSL *ssl, char *source, int size, void *user_context) {
    tls_session_t *session = user_context;
    RW_ASSERT(session != NULL && session->ssl == ssl);
    RW_ASSERT(size > 0);
    tls_buffer_t *output = &session->output;
    RW_ASSERT(output->start <= output->end && output->end <= output->capacity);

    if (output->capacity - output->end < (size_t)size && output->start > 0) {
        size_t pending = output->end - output->start;
        memmove(output->bytes, output->bytes + output->start, pending);
        output->start = 0;
        output->end = pending;
    }
    size_t space = output->capacity - output->end;
    /* wolfSSL always offers everything it holds, so what is not taken now
     * is exactly what it keeps for its next send. */
    if (space == 0) {
        session->send_blocked = true;
        session->wolfssl_held_bytes = (size_t)size;
        return WOLFSSL_CBIO_ERR_WANT_WRITE;
    }
    size_t stored = RW_MIN(space, (size_t)size);
    memcpy(output->bytes + output->end, source, stored);
    output->end += stored;
    session->wolfssl_held_bytes = (size_t)size - stored;
    return (int)stored;
}

#define TLS_CIPHER_PREFERENCE                                                                           \
    "TLS13-CHACHA20-POLY1305-SHA256:TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:"                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:"          \
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"

/* Creates a WOLFSSL_CTX for TLS 1.2 and 1.3 with our I/O callbacks, or
 * explains the failure in error. */
static WOLFSSL_CTX *tls_wolfssl_context_new(bool is_server, char *error, size_t error_size) {
    if (!tls_global_init()) {
        tls_format_error(error, error_size, "cannot initialise wolfSSL");
        return NULL;
    }
    WOLFSSL_METHOD *method = is_server ? wolfSSLv23_server_method() : wolfSSLv23_client_method();
    if (method == NULL) {
        tls_format_error(error, error_size, "cannot allocate a wolfSSL method (out of memory)");
        return NULL;
    }
    WOLFSSL_CTX *wolfssl_context = wolfSSL_CTX_new(method);
    if (wolfssl_context == NULL) {
        tls_format_error(error, error_size, "cannot allocate a wolfSSL context (out of memory)");
        return NULL;
    }
    int status = wolfSSL_CTX_SetMinVersion(wolfssl_context, WOLFSSL_TLSV1_2);
    if (status != WOLFSSL_SUCCESS) {
        tls_format_error(error, error_size, "cannot set the minimum TLS version to 1.2: %s",
                         tls_wolfssl_error_text(status));
        wolfSSL_CTX_free(wolfssl_context);
        return NULL;
    }
    /* ChaCha20-Poly1305 first: Debian's wolfSSL has no AES-NI, and its
     * plain-C AES-GCM was most of the cost of every relayed record
     * (callgrind); ChaCha20 is fast without special instructions. AES-GCM
     * stays acceptable for peers that offer nothing else. */
    status = wolfSSL_CTX_set_cipher_list(wolfssl_context, TLS_CIPHER_PREFERENCE);
    if (status != WOLFSSL_SUCCESS) {
        tls_format_error(error, error_size, "cannot set the cipher preference: %s", tls_wolfssl_error_text(status));
        wolfSSL_CTX_free(wolfssl_context);
        return NULL;
    }
    wolfSSL_CTX_SetIORecv(wolfssl_context, tls_io_receive);
    wolfSSL_CTX_SetIOSend(wolfssl_context, tls_io_send);
    return wolfssl_context;
}

static tls_context_t *tls_context_wrap(WOLFSSL_CTX *wolfssl_context, bool is_server,
                                       bool verify_peer, char *error, size_t error_size) {
    /* Start-up allocation: one per configured upstream TLS policy. */
    tls_context_t *context = calloc(1, sizeof(*context));
    if (context == NULL) {
        tls_format_error(error, error_size, "cannot allocate a TLS context (out of memory)");
        wolfSSL_CTX_free(wolfssl_context);
        return NULL;
    }
    context->wolfssl_context = wolfssl_context;
    context->is_server = is_server;
    context->verify_peer = verify_peer;
    return context;
}

tls_context_t *tls_client_context_create(const char *ca_file_or_null, bool verify_peer, char *error,
                                         size_t error_size) {
    RW_ASSERT(error != NULL && error_size > 0);
    error[0] = '\0';
    WOLFSSL_CTX *wolfssl_context = tls_wolfssl_context_new(false, error, error_size);
    if (wolfssl_context == NULL) {
        return NULL;
    }
    if (verify_peer) {
        int status;
        if (ca_file_or_null != NULL) {
            status = wolfSSL_CTX_load_verify_locations(wolfssl_context, ca_file_or_null, NULL);
        } else {
            status = wolfSSL_CTX_load_system_CA_certs(wolfssl_context);
        }
        if (status != WOLFSSL_SUCCESS) {
            tls_format_error(error, error_size, "cannot load trusted CA certificates from %s: %s",
                             ca_file_or_null != NULL ? ca_file_or_null : "the system store",
                             tls_wolfssl_error_text(status));
            wolfSSL_CTX_free(wolfssl_context);
            return NULL;
        }
        wolfSSL_CTX_set_verify(wolfssl_context, WOLFSSL_VERIFY_PEER, NULL);
    } else {
        wolfSSL_CTX_set_verify(wolfssl_context, WOLFSSL_VERIFY_NONE, NULL);
    }
    return tls_context_wrap(wolfssl_context, false, verify_peer, error, error_size);
}

/* Signs a test message with the context's private key and verifies it with
 * the certificate's public key. wolfSSL 5.5.4's wolfSSL_CTX_check_private_key
 * accepts a mismatched EC key, which would otherwise surface only as failed
 * handshakes. Start-up only. */
static bool tls_private_key_matches(WOLFSSL_CTX *wolfssl_context) {
    WOLFSSL_X509 *certificate = wolfSSL_CTX_get0_certificate(wolfssl_context);
    WOLFSSL_EVP_PKEY *private_key = wolfSSL_CTX_get0_privatekey(wolfssl_context);
    if (certificate == NULL || private_key == NULL) {
        return false;
    }
    WOLFSSL_EVP_PKEY *public_key = wolfSSL_X509_get_pubkey(certificate);
    WOLFSSL_EVP_MD_CTX *digest = wolfSSL_EVP_MD_CTX_new();
    static const uint8_t message[] = "ringway private key check";
    uint8_t signature[1024]; /* an RSA-8192 signature fits */
    size_t signature_length = sizeof(signature);
    bool matches =
        public_key != NULL && digest != NULL &&
        wolfSSL_EVP_DigestSignInit(digest, NULL, wolfSSL_EVP_sha256(), NULL, private_key) ==
            WOLFSSL_SUCCESS &&
        wolfSSL_EVP_DigestSignUpdate(digest, message, sizeof(message)) == WOLFSSL_SUCCESS &&
        wolfSSL_EVP_DigestSignFinal(digest, signature, &signature_length) == WOLFSSL_SUCCESS;
    if (digest != NULL) {
        wolfSSL_EVP_MD_CTX_free(digest);
    }
    digest = matches ? wolfSSL_EVP_MD_CTX_new() : NULL;
    matches = digest != NULL &&
              wolfSSL_EVP_DigestVerifyInit(digest, NULL, wolfSSL_EVP_sha256(), NULL, public_key) ==
                  WOLFSSL_SUCCESS &&
              wolfSSL_EVP_DigestVerifyUpdate(digest, message, sizeof(message)) == WOLFSSL_SUCCESS &&
              wolfSSL_EVP_DigestVerifyFinal(digest, signature, signature_length) == WOLFSSL_SUCCESS;
    if (digest != NULL) {
        wolfSSL_EVP_MD_CTX_free(digest);
    }
    wolfSSL_EVP_PKEY_free(public_key);
    return matches;
}

tls_context_t *tls_server_context_create(const char *certificate_file_pem,
                                         const char *private_key_file_pem, char *error,
                                         size_t error_size) {
    RW_ASSERT(certificate_file_pem != NULL && private_key_file_pem != NULL);
    RW_ASSERT(error != NULL && error_size > 0);
    error[0] = '\0';
    WOLFSSL_CTX *wolfssl_context = tls_wolfssl_context_new(true, error, error_size);
    if (wolfssl_context == NULL) {
        return NULL;
    }
    int status = wolfSSL_CTX_use_certificate_chain_file(wolfssl_context, certificate_file_pem);
    if (status != WOLFSSL_SUCCESS) {
        tls_format_error(error, error_size, "cannot load the certificate chain %s: %s",
                         certificate_file_pem, tls_wolfssl_error_text(status));
        wolfSSL_CTX_free(wolfssl_context);
        return NULL;
    }
    status = wolfSSL_CTX_use_PrivateKey_file(wolfssl_context, private_key_file_pem,
                                             WOLFSSL_FILETYPE_PEM);
    if (status != WOLFSSL_SUCCESS) {
        tls_format_error(error, error_size, "cannot load the private key %s: %s",
                         private_key_file_pem, tls_wolfssl_error_text(status));
        wolfSSL_CTX_free(wolfssl_context);
        return NULL;
    }
    if (wolfSSL_CTX_check_private_key(wolfssl_context) != WOLFSSL_SUCCESS ||
        !tls_private_key_matches(wolfssl_context)) {
        tls_format_error(error, error_size, "the private key %s does not match the certificate %s",
                         private_key_file_pem, certificate_file_pem);
        wolfSSL_CTX_free(wolfssl_context);
        return NULL;
    }
    wolfSSL_CTX_set_verify(wolfssl_context, WOLFSSL_VERIFY_NONE, NULL);
    return tls_context_wrap(wolfssl_context, true, false, error, error_size);
}

bool tls_context_set_maximum_version(tls_context_t *context, tls_version_t version) {
    RW_ASSERT(context != NULL && context->wolfssl_context != NULL);
    RW_ASSERT(version == TLS_VERSION_1_2 || version == TLS_VERSION_1_3);
    int protocol = version == TLS_VERSION_1_2 ? TLS1_2_VERSION : TLS1_3_VERSION;
    return wolfSSL_CTX_set_max_proto_version(context->wolfssl_context, protocol) == WOLFSSL_SUCCESS;
}

void tls_context_destroy(tls_context_t *context) {
    if (context == NULL) {
        return;
    }
    wolfSSL_CTX_free(context->wolfssl_context);
    context->wolfssl_context = NULL;
    free(context);
}

/* Records why the session failed and makes the failure sticky. */
static tls_result_t tls_fail(tls_session_t *session, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static tls_result_t tls_fail(tls_session_t *session, const char *format, ...) {
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(session->error_message, sizeof(session->error_message), format, arguments);
    va_end(arguments);
    session->failed = true;
    /* wolfSSL's per-thread error queue must not carry this session's errors
     * into the next session served by this thread. */
    wolfSSL_ERR_clear_error();
    return TLS_ERROR;
}

static bool tls_is_ip_literal(const char *name) {
    uint8_t address[16];
    return inet_pton(AF_INET, name, address) == 1 || inet_pton(AF_INET6, name, address) == 1;
}

/* Configures SNI and the identity the peer certificate must carry. */
static int tls_session_set_server_name(tls_session_t *session, const tls_context_t *context,
                                       const char *server_name) {
    size_t length = strlen(server_name);
    if (length == 0 || length > TLS_SERVER_NAME_LENGTH_MAX) {
        tls_fail(session, "invalid server name (length %zu)", length);
        return -1;
    }
    memcpy(session->server_name, server_name, length + 1);
    if (tls_is_ip_literal(server_name)) {
        if (context->verify_peer) {
            WOLFSSL_X509_VERIFY_PARAM *parameters = wolfSSL_get0_param(session->ssl);
            if (parameters == NULL ||
                wolfSSL_X509_VERIFY_PARAM_set1_ip_asc(parameters, server_name) != WOLFSSL_SUCCESS) {
                tls_fail(session, "cannot set the IP address %s to verify", server_name);
                return -1;
            }
        }
        return 0;
    }
    if (wolfSSL_UseSNI(session->ssl, WOLFSSL_SNI_HOST_NAME, server_name, (unsigned short)length) !=
        WOLFSSL_SUCCESS) {
        tls_fail(session, "cannot set the SNI server name %s", server_name);
        return -1;
    }
    if (context->verify_peer &&
        wolfSSL_check_domain_name(session->ssl, server_name) != WOLFSSL_SUCCESS) {
        tls_fail(session, "cannot set the host name %s to verify", server_name);
        return -1;
    }
    return 0;
}

int tls_session_init(tls_session_t *session, tls_context_t *context, bool is_server,
                     const char *server_name_or_null, uint8_t *input_buffer, size_t input_capacity,
                     uint8_t *output_buffer, size_t output_capacity) {
    RW_ASSERT(session != NULL);
    RW_ASSERT(session->ssl == NULL); /* released or never used */
    RW_ASSERT(context != NULL && context->wolfssl_context != NULL);
    RW_ASSERT(context->is_server == is_server);
    RW_ASSERT(input_buffer != NULL && input_capacity >= TLS_BUFFER_CAPACITY_MIN);
    RW_ASSERT(output_buffer != NULL && output_capacity >= TLS_BUFFER_CAPACITY_MIN);
    uintptr_t input_address = (uintptr_t)input_buffer;
    uintptr_t output_address = (uintptr_t)output_buffer;
    RW_ASSERT(input_address + input_capacity <= output_address ||
              output_address + output_capacity <= input_address);

    memset(session, 0, sizeof(*session));
    session->input.bytes = input_buffer;
    session->input.capacity = input_capacity;
    session->output.bytes = output_buffer;
    session->output.capacity = output_capacity;
    session->is_server = is_server;

    session->ssl = wolfSSL_new(context->wolfssl_context);
    if (session->ssl == NULL) {
        tls_fail(session, "cannot allocate a wolfSSL session (out of memory)");
        return -1;
    }
    wolfSSL_SetIOReadCtx(session->ssl, session);
    wolfSSL_SetIOWriteCtx(session->ssl, session);
    if (!is_server && server_name_or_null != NULL &&
        tls_session_set_server_name(session, context, server_name_or_null) != 0) {
        char reason[TLS_ERROR_MESSAGE_SIZE];
        memcpy(reason, session->error_message, sizeof(reason));
        tls_session_release(session);
        memcpy(session->error_message, reason, sizeof(reason));
        session->failed = true;
        return -1;
    }
    return 0;
}

void tls_session_release(tls_session_t *session) {
    RW_ASSERT(session != NULL);
    if (session->ssl != NULL) {
        wolfSSL_free(session->ssl);
        session->ssl = NULL;
    }
    memset(session, 0, sizeof(*session));
}

uint8_t *tls_input_space(tls_session_t *session, size_t *space) {
    RW_ASSERT(session != NULL && session->ssl != NULL && space != NULL);
    tls_buffer_t *input = &session->input;
    RW_ASSERT(input->start <= input->end && input->end <= input->capacity);
    /* Compact only when the free tail has shrunk below a quarter of the
     * buffer: one memmove of (usually a partial record of) ciphertext. */
    if (input->start > 0 && input->capacity - input->end < input->capacity / 4) {
        size_t held = input->end - input->start;
        memmove(input->bytes, input->bytes + input->start, held);
        input->start = 0;
        input->end = held;
    }
    *space = input->capacity - input->end;
    return input->bytes + input->end;
}

void tls_input_commit(tls_session_t *session, size_t bytes) {
    RW_ASSERT(session != NULL && session->ssl != NULL);
    tls_buffer_t *input = &session->input;
    RW_ASSERT(bytes <= input->capacity - input->end);
    RW_ASSERT(!session->input_ended);
    input->end += bytes;
}

void tls_input_end(tls_session_t *session) {
    RW_ASSERT(session != NULL && session->ssl != NULL);
    session->input_ended = true;
}

const uint8_t *tls_output_pending(const tls_session_t *session, size_t *bytes) {
    RW_ASSERT(session != NULL && bytes != NULL);
    const tls_buffer_t *output = &session->output;
    RW_ASSERT(output->start <= output->end && output->end <= output->capacity);
    *bytes = output->end - output->start;
    if (output->bytes == NULL) {
        return NULL; /* released session */
    }
    return output->bytes + output->start;
}

void tls_output_consume(tls_session_t *session, size_t bytes) {
    RW_ASSERT(session != NULL);
    tls_buffer_t *output = &session->output;
    RW_ASSERT(bytes <= output->end - output->start);
    output->start += bytes;
    if (output->start == output->end) {
        output->start = 0;
        output->end = 0;
    }
}

/* Words for the wolfSSL codes that mean "the peer's certificate chain is not
 * acceptable"; NULL for every other code. */
static const char *tls_certificate_problem(int code) {
    switch (code) {
    case ASN_NO_SIGNER_E:
        return "no trusted CA signed the certificate chain";
    case ASN_AFTER_DATE_E:
        return "the certificate has expired";
    case ASN_BEFORE_DATE_E:
        return "the certificate is not valid yet";
    case ASN_SIG_CONFIRM_E:
        return "a certificate signature does not verify";
    case VERIFY_CERT_ERROR:
        return "the certificate was rejected";
    default:
        return NULL;
    }
}

/* Forgets whether the I/O callbacks blocked; called before each wolfSSL
 * operation so tls_classify sees only that operation's blocking. */
static void tls_io_flags_clear(tls_session_t *session) {
    session->send_blocked = false;
    session->receive_blocked = false;
}

/* Turns a failed wolfSSL call (return value `status`) into our result:
 * blocked on I/O, closed by the peer, or a fatal error explained in words.
 * `operation` names what we were doing, for the message. */
static tls_result_t tls_classify(tls_session_t *session, int status, const char *operation) {
    int error = wolfSSL_get_error(session->ssl, status);
    if (error == WOLFSSL_ERROR_WANT_READ) {
        return TLS_WANT_READ;
    }
    if (error == WOLFSSL_ERROR_WANT_WRITE) {
        return TLS_WANT_WRITE;
    }
    /* wolfSSL 5.5.4's TLS 1.3 server sometimes fails with no error code
     * when our send callback blocked part-way through its first flight;
     * calling wolfSSL_accept again resumes correctly. So a failure without a
     * reason during which our callbacks blocked is that block. */
    if (error == WOLFSSL_ERROR_NONE && session->send_blocked) {
        return TLS_WANT_WRITE;
    }
    if (error == WOLFSSL_ERROR_NONE && session->receive_blocked) {
        return TLS_WANT_READ;
    }
    bool close_notify_received =
        (wolfSSL_get_shutdown(session->ssl) & WOLFSSL_RECEIVED_SHUTDOWN) != 0;
    if (error == WOLFSSL_ERROR_ZERO_RETURN && close_notify_received) {
        session->close_received = true;
        if (session->handshake_complete) {
            return TLS_CLOSED;
        }
        return tls_fail(session, "the peer closed the connection during the TLS handshake");
    }

    /* wolfSSL_get_error returns its own (negative) code for fatal errors;
     * the generic OpenSSL-style values only when it has nothing better. */
    int code = error < 0 ? error : wolfSSL_state(session->ssl);
    if (session->input_ended &&
        (code == SOCKET_PEER_CLOSED_E || code == SOCKET_ERROR_E ||
         error == WOLFSSL_ERROR_ZERO_RETURN || error == WOLFSSL_ERROR_SYSCALL)) {
        return tls_fail(session,
                        "the peer closed the connection without close_notify during TLS %s",
                        operation);
    }
    if (code == DOMAIN_NAME_MISMATCH) {
        return tls_fail(session, "hostname mismatch: the certificate is not valid for %s",
                        session->server_name);
    }
    if (code == IPADDR_MISMATCH) {
        return tls_fail(session,
                        "hostname mismatch: the certificate has no IP address entry for %s",
                        session->server_name);
    }
    long verify_result = wolfSSL_get_verify_result(session->ssl);
    const char *problem = tls_certificate_problem(code);
    if (problem != NULL || verify_result != X509_V_OK) {
        if (problem == NULL) {
            problem = wolfSSL_X509_verify_cert_error_string(verify_result);
        }
        return tls_fail(session, "certificate verification failed: %s (wolfSSL error %d)", problem,
                        code);
    }
    if (code == FATAL_ERROR) {
        WOLFSSL_ALERT_HISTORY history;
        memset(&history, 0, sizeof(history));
        wolfSSL_get_alert_history(session->ssl, &history);
        return tls_fail(session, "the peer sent a fatal alert during TLS %s: %s", operation,
                        wolfSSL_alert_desc_string_long(history.last_rx.code));
    }
    return tls_fail(session, "TLS %s failed: %s (wolfSSL error %d)", operation,
                    tls_wolfssl_error_text(code), code);
}

tls_result_t tls_handshake(tls_session_t *session) {
    RW_ASSERT(session != NULL && session->ssl != NULL);
    if (session->failed) {
        return TLS_ERROR;
    }
    if (session->handshake_complete) {
        return TLS_OK;
    }
    tls_io_flags_clear(session);
    int status = session->is_server ? wolfSSL_accept(session->ssl) : wolfSSL_connect(session->ssl);
    if (status == WOLFSSL_SUCCESS) {
        session->handshake_complete = true;
        return TLS_OK;
    }
    return tls_classify(session, status, "handshake");
}

tls_result_t tls_read(tls_session_t *session, uint8_t *destination, size_t capacity,
                      size_t *read_bytes) {
    RW_ASSERT(session != NULL && session->ssl != NULL);
    RW_ASSERT(destination != NULL && capacity > 0 && read_bytes != NULL);
    RW_ASSERT(session->handshake_complete);
    *read_bytes = 0;
    if (session->failed) {
        return TLS_ERROR;
    }
    if (session->close_received) {
        return TLS_CLOSED;
    }
    int request = (int)RW_MIN(capacity, (size_t)INT_MAX);
    tls_io_flags_clear(session);
    int status = wolfSSL_read(session->ssl, destination, request);
    if (status > 0) {
        RW_ASSERT(status <= request);
        *read_bytes = (size_t)status;
        return TLS_OK;
    }
    return tls_classify(session, status, "read");
}

/* How much plaintext the next record should carry: the largest amount, up to
 * `remaining` and the record size limit, whose ciphertext fits the output
 * space left after what is pending and what wolfSSL still holds (it sends
 * that first). 0 means "send the pending output first". When the buffer is
 * empty and still too small for a whole record, a record sized to the space
 * is chosen, or, if not even that fits, the whole record is handed to
 * wolfSSL and the retry rule takes over. */
static size_t tls_write_chunk_bytes(tls_session_t *session, size_t remaining) {
    int fragment_max = wolfSSL_GetMaxOutputSize(session->ssl);
    size_t wanted =
        RW_MIN(remaining, fragment_max > 0 ? (size_t)fragment_max : TLS_PLAINTEXT_RECORD_BYTES_MAX);
    const tls_buffer_t *output = &session->output;
    size_t pending = output->end - output->start;
    size_t used = pending + session->wolfssl_held_bytes;
    size_t space = used < output->capacity ? output->capacity - used : 0;

    int ciphertext = wolfSSL_GetOutputSize(session->ssl, (int)wanted);
    if (ciphertext <= 0 || (size_t)ciphertext <= space) {
        return wanted;
    }
    if (pending > 0) {
        return 0;
    }
    size_t overhead = (size_t)ciphertext - wanted;
    if (space <= overhead) {
        return wanted;
    }
    size_t candidate = space - overhead;
    for (int attempt = 0; attempt < TLS_RECORD_FIT_ATTEMPTS_MAX && candidate > 0; attempt++) {
        ciphertext = wolfSSL_GetOutputSize(session->ssl, (int)candidate);
        if (ciphertext > 0 && (size_t)ciphertext <= space) {
            return candidate;
        }
        candidate = candidate > 16 ? candidate - 16 : 0;
    }
    return wanted;
}

tls_result_t tls_write(tls_session_t *session, const uint8_t *source, size_t length,
                       size_t *written_bytes) {
    RW_ASSERT(session != NULL && session->ssl != NULL);
    RW_ASSERT(written_bytes != NULL && (source != NULL || length == 0));
    RW_ASSERT(session->handshake_complete);
    /* A record wolfSSL already encrypted must be resubmitted whole. */
    RW_ASSERT(length >= session->write_retry_bytes);
    *written_bytes = 0;
    if (session->failed) {
        return TLS_ERROR;
    }

    size_t written = 0;
    while (written < length) {
        size_t chunk = session->write_retry_bytes;
        if (chunk == 0) {
            chunk = tls_write_chunk_bytes(session, length - written);
            if (chunk == 0) {
                *written_bytes = written;
                return TLS_WANT_WRITE;
            }
            /* wolfSSL never resets its record of an interrupted write; if it
             * now flushed a held message before this record, it would count
             * that stale record as part of this one and skip plaintext. */
            if (session->wolfssl_write_stale && session->wolfssl_held_bytes > 0) {
                *written_bytes = written;
                return tls_fail(session, "TLS write cannot continue safely: wolfSSL holds a "
                                         "post-handshake message after an interrupted write");
            }
        }
        tls_io_flags_clear(session);
        int status = wolfSSL_write(session->ssl, source + written, (int)chunk);
        if (status > 0) {
            RW_ASSERT((size_t)status == chunk);
            session->write_retry_bytes = 0;
            written += chunk;
            continue;
        }
        tls_result_t result = tls_classify(session, status, "write");
        RW_ASSERT(result != TLS_OK);
        if (result == TLS_WANT_WRITE || result == TLS_WANT_READ) {
            session->write_retry_bytes = chunk;
            session->wolfssl_write_stale = true;
        }
        *written_bytes = written;
        return result;
    }
    *written_bytes = written;
    return TLS_OK;
}

tls_result_t tls_shutdown(tls_session_t *session) {
    RW_ASSERT(session != NULL && session->ssl != NULL);
    if (session->failed) {
        return TLS_ERROR;
    }
    if (session->close_sent) {
        return TLS_OK;
    }
    /* Make room before asking wolfSSL: an alert it cannot hand over stays in
     * its own buffer, and a second wolfSSL_shutdown would then try to read
     * the peer's close_notify instead of flushing ours. (With nothing left
     * to flush on our side, waiting would not help.) */
    const tls_buffer_t *output = &session->output;
    size_t pending = output->end - output->start;
    if (pending > 0 &&
        pending + session->wolfssl_held_bytes + TLS_ALERT_BYTES_MAX > output->capacity) {
        return TLS_WANT_WRITE;
    }
    tls_io_flags_clear(session);
    int status = wolfSSL_shutdown(session->ssl);
    if (status == WOLFSSL_SUCCESS || status == WOLFSSL_SHUTDOWN_NOT_DONE) {
        session->close_sent = true;
        return TLS_OK;
    }
    return tls_classify(session, status, "shutdown");
}

bool tls_has_buffered_input(const tls_session_t *session) {
    RW_ASSERT(session != NULL);
    if (session->ssl == NULL) {
        return false;
    }
    return session->input.end > session->input.start || wolfSSL_has_pending(session->ssl) != 0;
}

const char *tls_last_error(const tls_session_t *session) {
    RW_ASSERT(session != NULL);
    return session->error_message;
}

const char *tls_session_version(const tls_session_t *session) {
    RW_ASSERT(session != NULL);
    if (session->ssl == NULL || !session->handshake_complete) {
        return "unknown";
    }
    return wolfSSL_get_version(session->ssl);
}
