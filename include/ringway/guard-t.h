/* Types of the guard module (src/guard; functions in guard.h): the counters
 * that protect the unauthenticated account endpoints, kept by the control
 * thread (which runs every registration and login, so nothing is shared):
 * registrations per client address per hour and per day, failed logins per
 * client address per minute, and consecutive failed logins per account with
 * an exponential backoff. */
#ifndef RINGWAY_GUARD_T_H
#define RINGWAY_GUARD_T_H

#include "ringway/address-t.h"
#include "ringway/common.h"

/* The limits, from [accounts]; 0 turns one off. */
typedef struct guard_limits {
    uint32_t registrations_per_ip_per_hour;
    uint32_t registrations_per_ip_per_day;
    uint32_t login_failures_per_ip_per_minute;
    uint32_t login_failures_before_backoff; /* consecutive failures of one account before it is refused */
    uint32_t login_backoff_base_s;          /* the first refusal's length; doubled by each further failure */
    uint32_t login_backoff_max_s;           /* the longest refusal */
} guard_limits_t;

/* One tracked subject (an address or an account), found by a keyed 64-bit
 * hash of it. Two subjects whose hashes collide share an entry: with a
 * random key per process that takes about 2^32 subjects, far beyond a
 * table's size. */
typedef struct guard_entry {
    uint64_t key;              /* 0 = empty */
    int64_t last_ms;           /* last change: the oldest is evicted first */
    uint32_t windows[2];       /* window numbers (from 1) of counts[] */
    uint32_t counts[2];        /* events in those windows; for accounts counts[0] is the failure streak */
    int64_t blocked_until_ms;  /* accounts: refused before this */
} guard_entry_t;

/* A fixed table: open addressing, each key looked for in GUARD_PROBE_SLOTS
 * slots from its home; a new key takes an empty one or evicts the entry
 * changed longest ago among them. Bounded work per call, never grows. */
typedef struct guard_table {
    guard_entry_t *entries; /* [mask + 1] */
    uint32_t mask;
} guard_table_t;

enum { GUARD_PROBE_SLOTS = 8 };

typedef struct guard {
    guard_limits_t limits;
    uint64_t seed;
    guard_table_t registrations;  /* by client address: [0] the hour, [1] the day */
    guard_table_t login_failures; /* by client address: [0] the minute */
    guard_table_t accounts;       /* by email and client network: the failure streak and the backoff */
} guard_t;

/* Why a request is refused (GUARD_ALLOW: it is not). */
typedef enum guard_verdict {
    GUARD_ALLOW = 0,
    GUARD_REGISTRATION_LIMITED, /* this address made too many accounts this hour or day */
    GUARD_LOGIN_LIMITED,        /* this address failed too many logins this minute */
    GUARD_ACCOUNT_BACKOFF,      /* this account failed too many logins in a row */
} guard_verdict_t;

#endif
