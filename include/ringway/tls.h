/* TLS on buffers: wolfSSL driven through its custom I/O callbacks over two
 * caller-owned ciphertext buffers per session. This module never sees a file
 * descriptor, a socket or the ring; the event loop moves ciphertext between
 * the sockets and these buffers:
 *
 *   socket --recv--> tls_input_space()/tls_input_commit() --> wolfSSL
 *   wolfSSL --> tls_output_pending()/tls_output_consume() --send--> socket
 *
 * Plaintext never passes through a buffer of this module: tls_read()
 * decrypts straight into the caller's stream buffer and tls_write() encrypts
 * straight from it.
 *
 * Calling pattern, the same for every operation (handshake, read, write,
 * shutdown): call it; then, whatever it returned (TLS_ERROR included, which
 * may have queued an alert), send what tls_output_pending() reports; on
 * TLS_WANT_READ receive more ciphertext into tls_input_space() and call
 * again; on TLS_WANT_WRITE send pending output and call again.
 *
 * Memory: the caller's pools own the two ciphertext buffers and the session
 * struct. wolfSSL itself still allocates: its context at start-up, and per
 * session the WOLFSSL object and its record buffers (tls_session_init). That
 * is inherent to the library; the number of live sessions is bounded by the
 * caller's connection pool.
 *
 * Threads: call tls_global_init() (idempotent, thread-safe) before anything
 * else, or let the context constructors do it. A tls_context_t is created
 * and configured on one thread at start-up and then shared read-only by
 * every thread: the only operation performed on it afterwards is
 * tls_session_init (wolfSSL_new), which wolfSSL supports on several threads
 * at once for one WOLFSSL_CTX (its reference count is mutex-protected).
 * Destroy a context only after every thread released its sessions. A
 * tls_session_t belongs to the thread that owns its connection and must
 * never be touched by another thread. Each thread calls tls_thread_release()
 * before it exits. */
#ifndef RINGWAY_TLS_H
#define RINGWAY_TLS_H

#include "ringway/common.h"

/* wolfSSL's own session type; kept opaque here so that users of this header
 * need not include wolfSSL (which requires options.h to come first). */
struct WOLFSSL;

/* A configured WOLFSSL_CTX: trust anchors, verification policy, our own
 * certificate (server), protocol versions. Opaque. */
typedef struct tls_context tls_context_t;

/* The small fixed set of outcomes of every session operation. */
typedef enum tls_result {
    TLS_OK = 0,         /* done (tls_read/tls_write: see their byte counts) */
    TLS_WANT_READ = 1,  /* needs more ciphertext in the input buffer */
    TLS_WANT_WRITE = 2, /* the output buffer is full: send it, then call again */
    TLS_CLOSED = 3,     /* the peer sent close_notify; no more plaintext will come */
    TLS_ERROR = -1,     /* fatal for this session; tls_last_error() says why */
} tls_result_t;

typedef enum tls_version {
    TLS_VERSION_1_2 = 12,
    TLS_VERSION_1_3 = 13,
} tls_version_t;

/* Largest TLS record on the wire: 5-byte header plus 2^14 plaintext plus the
 * largest expansion TLS 1.2 allows (2048). Buffers need not hold a whole
 * record (wolfSSL takes ciphertext piecemeal), but a buffer of this size moves
 * one full record per socket operation. */
#define TLS_RECORD_BYTES_MAX ((size_t)5 + 16384 + 2048)
/* Suggested capacity of each of a session's two ciphertext buffers: one full
 * TLS 1.3 record (5 + 16384 + 256 bytes) rounded up. */
#define TLS_BUFFER_CAPACITY_RECOMMENDED ((size_t)17 * RW_KIB)
/* Smallest ciphertext buffer a session accepts: enough for an alert and for
 * wolfSSL to make progress a few bytes at a time. Small buffers work but cost
 * small records and many socket operations. */
#define TLS_BUFFER_CAPACITY_MIN ((size_t)256)
/* Size of the per-session error text, terminator included. */
#define TLS_ERROR_MESSAGE_SIZE 192
/* Longest server name a client session accepts (a DNS name is at most 253
 * bytes), plus the terminator. */
#define TLS_SERVER_NAME_SIZE 254

/* A linear byte buffer owned by the caller: valid bytes are
 * bytes[start, end); free space is bytes[end, capacity). */
typedef struct tls_buffer {
    uint8_t *bytes;
    size_t capacity;
    size_t start;
    size_t end;
} tls_buffer_t;

/* One TLS connection. Embed it in the connection struct; it must not move in
 * memory between tls_session_init and tls_session_release (wolfSSL's I/O
 * callbacks hold its address). An all-zero session is "released". Fields are
 * private to src/tls/tls.c; read them only through the functions below. */
typedef struct tls_session {
    struct WOLFSSL *ssl;
    tls_buffer_t input;  /* ciphertext received from the peer, not yet taken by wolfSSL */
    tls_buffer_t output; /* ciphertext produced by wolfSSL, not yet sent to the peer */
    /* Plaintext length of a wolfSSL_write that returned WANT_WRITE. wolfSSL
     * has already encrypted that record and requires the retry to pass the
     * same bytes and length; 0 when nothing is owed. */
    size_t write_retry_bytes;
    /* Ciphertext wolfSSL produced but could not hand to the output buffer
     * yet (for example a KeyUpdate reply made while reading); it sends it
     * before anything else. */
    size_t wolfssl_held_bytes;
    bool wolfssl_write_stale; /* a wolfSSL_write was ever interrupted (see tls_write) */
    bool is_server;
    bool handshake_complete;
    bool input_ended;     /* the caller reported end of the transport stream */
    bool close_received;  /* the peer's close_notify arrived */
    bool close_sent;      /* our close_notify was handed to wolfSSL */
    bool send_blocked;    /* during the current wolfSSL call, the output buffer was full */
    bool receive_blocked; /* during the current wolfSSL call, the input buffer was empty */
    bool failed;          /* a TLS_ERROR was returned; every later call fails too */
    char server_name[TLS_SERVER_NAME_SIZE]; /* client: the name or address verified, for messages */
    char error_message[TLS_ERROR_MESSAGE_SIZE];
} tls_session_t;

/* Initialises wolfSSL once per process (pthread_once). Returns false if
 * wolfSSL_Init failed; every later call returns the same answer. */
bool tls_global_init(void);

/* Frees the calling thread's wolfSSL caches: this wolfSSL build keeps an
 * ECC fixed-point table per thread (megabytes once the thread has done ECC
 * handshakes). Call it on every thread that used sessions, just before the
 * thread exits; sessions may be used on the thread again afterwards (the
 * table is rebuilt). */
void tls_thread_release(void);

/* Process exit only, after every context was destroyed: releases the
 * calling thread's caches and wolfSSL's global state. tls_global_init does
 * not initialise wolfSSL again afterwards. */
void tls_global_release(void);

/* A client context for upstream connections, accepting TLS 1.2 and 1.3.
 * ca_file_or_null names a PEM file of trust anchors; NULL means the system CA
 * store. verify_peer false disables certificate and hostname verification
 * entirely (tests, private upstreams only). Returns NULL and fills error (a
 * terminated string of at most error_size bytes) if wolfSSL cannot be
 * initialised or the trust anchors cannot be loaded. Start-up only: it reads
 * files. */
tls_context_t *tls_client_context_create(const char *ca_file_or_null, bool verify_peer, char *error,
                                         size_t error_size);

/* A server context (the mock upstream) presenting certificate_file_pem (leaf
 * first, then any intermediates) with private_key_file_pem, accepting TLS 1.2
 * and 1.3 and not asking for client certificates. Returns NULL and fills error
 * if a file is unreadable or the key does not match the certificate. */
tls_context_t *tls_server_context_create(const char *certificate_file_pem,
                                         const char *private_key_file_pem, char *error,
                                         size_t error_size);

/* Caps the protocol version future sessions of this context negotiate (for
 * example TLS_VERSION_1_2 to exercise an older upstream). Start-up only,
 * before the context is shared. Returns false if wolfSSL refuses. */
bool tls_context_set_maximum_version(tls_context_t *context, tls_version_t version);

/* Frees the context. Every session created from it must be released first.
 * Accepts NULL. */
void tls_context_destroy(tls_context_t *context);

/* Prepares a session over the caller's two ciphertext buffers (each at
 * least TLS_BUFFER_CAPACITY_MIN bytes, TLS_BUFFER_CAPACITY_RECOMMENDED
 * suggested; they must not overlap and must outlive the session). is_server must match the context's side. For a client,
 * server_name_or_null is the upstream's host:
 *   - a DNS name is sent as SNI and, when the context verifies peers, the
 *     certificate must match it (wolfSSL_check_domain_name: a DNS
 *     subjectAltName or the subject common name, "*." wildcards allowed);
 *   - an IPv4/IPv6 literal is not sent as SNI (RFC 6066 forbids it) and,
 *     when verifying, must appear as an IP-address subjectAltName;
 *   - NULL sends no SNI and checks only the chain of trust.
 * A server ignores server_name_or_null. Returns 0, or -1 with
 * tls_last_error() set if wolfSSL cannot allocate the session (the session is
 * then released). The session must be released (or all-zero) beforehand. */
int tls_session_init(tls_session_t *session, tls_context_t *context, bool is_server,
                     const char *server_name_or_null, uint8_t *input_buffer, size_t input_capacity,
                     uint8_t *output_buffer, size_t output_capacity);

/* Frees the WOLFSSL object and forgets the buffers (their contents are the
 * caller's). Safe to call twice and on an all-zero session; afterwards the
 * session may be initialised again. Sends nothing: call tls_shutdown first
 * for an orderly close. */
void tls_session_release(tls_session_t *session);

/* Where to receive ciphertext: returns the start of the free space and its
 * size in *space (0 when the input buffer is full: call tls_read or
 * tls_handshake to let wolfSSL take bytes first). Compacts the buffer when
 * the free tail runs low. */
uint8_t *tls_input_space(tls_session_t *session, size_t *space);

/* Commits bytes the caller wrote at tls_input_space(); bytes must not exceed
 * the space reported. */
void tls_input_commit(tls_session_t *session, size_t bytes);

/* Tells the session the transport reached end of stream (recv returned 0).
 * Once the buffered ciphertext is used up, an operation that needs more
 * input fails with TLS_ERROR ("closed without close_notify") unless the
 * peer's close_notify arrived, in which case tls_read reports TLS_CLOSED. */
void tls_input_end(tls_session_t *session);

/* Ciphertext waiting to be sent: returns its start and its length in *bytes
 * (0 when nothing is waiting). */
const uint8_t *tls_output_pending(const tls_session_t *session, size_t *bytes);

/* Marks bytes of the pending output as sent; bytes must not exceed what
 * tls_output_pending reported. */
void tls_output_consume(tls_session_t *session, size_t bytes);

/* Drives the handshake as far as the buffers allow. TLS_OK once it is
 * complete (send any pending output, the last flight may be in it); then
 * tls_read/tls_write may be used. Verification failures are TLS_ERROR with a
 * reason such as "certificate verification failed: ..." or "hostname
 * mismatch: ...". Calling it again after completion returns TLS_OK. */
tls_result_t tls_handshake(tls_session_t *session);

/* Decrypts up to capacity plaintext bytes straight into destination.
 * TLS_OK with *read_bytes > 0; TLS_WANT_READ (more ciphertext needed),
 * TLS_WANT_WRITE (wolfSSL must send before it can go on),
 * TLS_CLOSED (close_notify received) and TLS_ERROR with *read_bytes == 0.
 * After TLS_OK call again, or check tls_has_buffered_input, before waiting
 * for the socket: wolfSSL may hold further records. The handshake must be
 * complete. */
tls_result_t tls_read(tls_session_t *session, uint8_t *destination, size_t capacity,
                      size_t *read_bytes);

/* Encrypts from source into the output buffer, as many whole records as the
 * free output space takes (never more plaintext than that, so a turn's output
 * is bounded by the buffer). *written_bytes says how many plaintext bytes are
 * now the session's responsibility. TLS_OK when all length bytes were taken;
 * TLS_WANT_WRITE when only *written_bytes (possibly 0) were: send pending
 * output, then call again with the remainder, i.e. source + *written_bytes,
 * length - *written_bytes, with the same byte values. length 0 is TLS_OK.
 * The handshake must be complete.
 *
 * wolfSSL's rule is that a wolfSSL_write which returned WANT_WRITE must be
 * retried with the same buffer and length. tls_write avoids the situation:
 * it sizes each record so its ciphertext, plus anything wolfSSL still holds,
 * fits the free output space, and otherwise asks for a flush first. Where it
 * still happens (a buffer smaller than one record), the session remembers
 * the record's plaintext length (write_retry_bytes), leaves those bytes out
 * of *written_bytes and resubmits exactly that length first on the next
 * call, so the remainder contract above satisfies the rule; the remainder may
 * not be shortened below that length (asserted). wolfSSL 5.5.4 never forgets
 * an interrupted write, and would skip plaintext if it later had to flush a
 * held post-handshake message at the start of a write; tls_write detects
 * that combination and fails the session (TLS_ERROR) rather than corrupt the
 * stream. */
tls_result_t tls_write(tls_session_t *session, const uint8_t *source, size_t length,
                       size_t *written_bytes);

/* Queues our close_notify. TLS_OK once it is in the output buffer (send it,
 * then close the socket; we do not wait for the peer's close_notify),
 * TLS_WANT_WRITE if the output buffer lacks room for the alert (send, call
 * again), TLS_ERROR if the session already failed or wolfSSL cannot send
 * the alert. Calling it again after TLS_OK returns TLS_OK. */
tls_result_t tls_shutdown(tls_session_t *session);

/* True when a tls_read could make progress without a new socket read:
 * decrypted plaintext or unprocessed ciphertext waits inside wolfSSL, or the
 * input buffer still holds ciphertext wolfSSL has not taken. (It may still
 * answer TLS_WANT_READ if the held bytes are only part of a record.) */
bool tls_has_buffered_input(const tls_session_t *session);

/* Human-readable reason for the last TLS_ERROR (or failed init); "" if none. */
const char *tls_last_error(const tls_session_t *session);

/* "TLSv1.2" / "TLSv1.3" once the handshake completed, for logs and tests;
 * "unknown" before. */
const char *tls_session_version(const tls_session_t *session);

#endif
