/* loginguard.h - slows password guessing against one account.
 *
 * Each username may fail to log in a few times freely; after that, every
 * further failure makes it wait before the next try: 1 s, 2 s, 4 s ... up
 * to a ceiling (15 minutes by default). A success, or a day without
 * failures, forgets the count. The wait is checked before the password is
 * hashed, so a guesser spends none of the server's Argon2id time while it
 * waits. The ceiling bounds how long someone who guesses at another's
 * account can keep its owner out.
 *
 * State is per node, in a fixed table (no allocation per name, so a
 * spray of names cannot grow memory) keyed by a secret-keyed hash of the
 * name (SipHash via libsodium), so names cannot be chosen to collide with
 * a victim's slot. When two names share a slot the one locked longer
 * keeps it. Thread-safe. */
#ifndef PARLEY_LOGINGUARD_H
#define PARLEY_LOGINGUARD_H

#include <stddef.h>
#include <stdint.h>

typedef struct loginguard loginguard_t;

/* free_failures: failures allowed before waits start; max_wait_ms: the
 * ceiling of one wait. NULL when out of memory. */
loginguard_t *loginguard_new(unsigned free_failures, int64_t max_wait_ms);
void loginguard_free(loginguard_t *g);

/* 0 when name may try now, else the milliseconds until it may. */
int64_t loginguard_wait_ms(loginguard_t *g, const char *name, size_t len, int64_t now_ms);
/* Records a failed try for name (also for names with no account: a guess
 * tells nothing either way). */
void loginguard_failed(loginguard_t *g, const char *name, size_t len, int64_t now_ms);
/* Forgets name's failures after a successful login. */
void loginguard_succeeded(loginguard_t *g, const char *name, size_t len);

#endif
