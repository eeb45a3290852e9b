/* The pre-authentication guards (src/guard; types in guard-t.h). Pure
 * bookkeeping: the caller passes the clock (wall milliseconds: windows are
 * fixed minutes, hours and days of the UTC clock, numbered from 1) and
 * decides what to answer. Single-threaded (the control thread). */
#ifndef RINGWAY_GUARD_H
#define RINGWAY_GUARD_H

#include "ringway/guard-t.h"

/* Allocates the three tables, each of entries_per_table slots (a power of
 * two >= GUARD_PROBE_SLOTS), at start. Returns 0, or -1 when memory runs
 * out (*guard is then NULL). */
int guard_create(guard_t **guard, const guard_limits_t *limits, uint32_t entries_per_table, uint64_t seed);

/* Frees the tables; sets *guard to NULL; NULL is fine. */
void guard_destroy(guard_t **guard);

/* Whether `client` may register now. On a refusal returns
 * GUARD_REGISTRATION_LIMITED with *retry_after_s (>= 1) until the window
 * that is full ends. Counts nothing. */
guard_verdict_t guard_registration_check(guard_t *guard, const address_t *client, int64_t now_ms,
                                         uint32_t *retry_after_s);

/* Counts one account made by `client` (call it when the account exists). */
void guard_registration_record(guard_t *guard, const address_t *client, int64_t now_ms);

/* Whether a login from `client` for the account named email[0, length)
 * (as typed; the caller normalises it when it can) may be checked now:
 * GUARD_LOGIN_LIMITED when the address failed too often this minute,
 * GUARD_ACCOUNT_BACKOFF while the account is in backoff; both with
 * *retry_after_s >= 1. Counts nothing: a refused attempt costs no hash and
 * is not a failure. */
guard_verdict_t guard_login_check(guard_t *guard, const address_t *client, const char *email, size_t email_length,
                                  int64_t now_ms, uint32_t *retry_after_s);

/* A failed login: one more for the address's minute, one more in the
 * streak of the account from the client's network (an IPv4 address, an
 * IPv6 /64). From login_failures_before_backoff failures on, the account
 * is refused from that network for base * 2^(streak - before) seconds, at most
 * login_backoff_max_s. A streak is forgotten a day after its last failure. */
void guard_login_failed(guard_t *guard, const address_t *client, const char *email, size_t email_length,
                        int64_t now_ms);

/* A successful login ends the account's streak from that network. */
void guard_login_succeeded(guard_t *guard, const address_t *client, const char *email, size_t email_length,
                           int64_t now_ms);

#endif
