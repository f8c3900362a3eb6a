/* loginguard.h - slows password guessing against one account, without
 * letting a stranger lock its owner out.
 *
 * Two layers, both checked before the password is hashed, so a guesser
 * spends none of the server's Argon2id time while it waits:
 *
 * - Per (username, client address): free_failures failed tries are free
 *   (5); after that every further failure makes this name wait, from this
 *   address, 1 s, 2 s, 4 s ... up to max_wait_ms (15 minutes). A success
 *   from that address, or a day without failures from it, forgets them.
 *   Guessing from address A never slows the owner at address B.
 * - Per username, looser, against guessing spread over many addresses:
 *   name_free_failures failures (100) from all addresses together are
 *   free; every further one makes the name wait 1 s, 2 s ... up to
 *   name_max_wait_ms (15 minutes). A day without any failure for the name
 *   forgets them; a success does not, or the owner's every login would
 *   hand a botnet another 100 free guesses. Addresses from which this name
 *   logged in within the last 30 days ("known addresses") are exempt from
 *   this layer, though not from their own: the owner at home or at work
 *   keeps logging in while a botnet guesses; only the owner at a new
 *   address waits with the botnet, never more than name_max_wait_ms.
 *
 * wait_ms answers the larger of the waits that apply. Address 0 means
 * "unknown": every such client shares the one (name, 0) entry, which is
 * the per-name backoff of old, and 0 is never a known address.
 *
 * State is per node, in three tables of fixed size made at creation:
 * (name, address) pairs, names, and known (name, address) successes. Nothing
 * is allocated after loginguard_new, so a spray of names or addresses
 * cannot grow memory: by default 16384 slots each, of 24, 24 and 16 bytes,
 * 1 MiB in all. Entries are placed by a secret-keyed hash (SipHash via
 * libsodium, keys made at creation), so names and addresses cannot be
 * chosen to collide with a victim's, and each entry has two candidate
 * slots. A new failure takes an empty or forgotten candidate, else one not
 * waiting (the one with fewer failures); when both are waiting, the one
 * locked longer keeps its slot and the newcomer goes uncounted in that
 * table (the other table still counts it): a spray never unlocks a victim
 * early. A new known address whose candidates both hold successes younger
 * than 30 days replaces the older: a flood of logins can age a known
 * address out (size known_slots for the logins of a month), which costs
 * its owner the exemption only.
 *
 * Across a fleet (--redis) every node's guard hears of every other's
 * failures and successes: loginguard_failed and loginguard_succeeded
 * hand a short note to the share callback, which the node publishes to
 * the others through the Redis bus (bus_redis_note; never waiting for
 * Redis), and each applies what it hears with loginguard_apply_note, as
 * if it had happened there. So an attacker gains nothing by spreading
 * guesses over nodes: the backoff holds across nodes but for the notes
 * in flight, one Redis round trip (about a millisecond) of failures per
 * node, which the backoff's own rate (one password hash per try) keeps
 * to a few. While Redis is away notes are dropped (the bus logs it) and
 * each node counts its own failures only, as a single node does; what
 * was dropped is not sent again. A node that starts later knows none of
 * the failures before it started, as after a restart today. Names longer
 * than LOGINGUARD_NOTE_NAME_MAX bytes (no valid username is) are counted
 * on their node only.
 *
 * Thread-safe: one mutex, held for a few slot reads and writes. One lock
 * is enough because every call comes with a password hash of tens of
 * milliseconds, run by a small pool. Needs sodium_init() first. */
#ifndef PARLEY_LOGINGUARD_H
#define PARLEY_LOGINGUARD_H

#include <stddef.h>
#include <stdint.h>

typedef struct loginguard loginguard_t;

typedef struct loginguard_config {
	unsigned free_failures;      /* per (name, address), before waits start */
	int64_t max_wait_ms;         /* per (name, address), one wait's ceiling */
	unsigned name_free_failures; /* per name, all addresses together */
	int64_t name_max_wait_ms;    /* per name, one wait's ceiling */
	unsigned pair_slots;         /* table sizes; 0 for the default (16384) */
	unsigned name_slots;
	unsigned known_slots;
} loginguard_config_t;

/* Fills cfg with the defaults named above: 5 and 15 minutes, 100 and 15
 * minutes, 16384 slots each. */
void loginguard_config_default(loginguard_config_t *cfg);

/* A guard configured by cfg (copied; NULL for the defaults; a wait
 * ceiling above a day is cut to a day, since a day without failures
 * forgets them anyway). NULL when out of memory. */
loginguard_t *loginguard_new_config(const loginguard_config_t *cfg);
/* The defaults, with the per-(name, address) layer's free_failures and
 * max_wait_ms given; the per-name ceiling is max_wait_ms too. */
loginguard_t *loginguard_new(unsigned free_failures, int64_t max_wait_ms);
/* NULL is fine. No call on g may be in progress or follow. */
void loginguard_free(loginguard_t *g);

/* Longest name a note carries. */
#define LOGINGUARD_NOTE_NAME_MAX 256

/* Called by loginguard_failed and loginguard_succeeded, after recording,
 * with a note of len bytes (borrowed for the call) for the other nodes;
 * on the caller's thread, without the guard's lock held. */
typedef void (*loginguard_share_fn)(void *ud, const void *note, size_t len);

/* Sets the share callback; before any other call on g, once. */
void loginguard_set_share(loginguard_t *g, loginguard_share_fn fn, void *ud);

/* Records what another node's note says happened (at now_ms here),
 * without sharing it again. 0, or -1 for a note that does not parse
 * (nothing recorded). Any thread. */
int loginguard_apply_note(loginguard_t *g, const void *note, size_t len, int64_t now_ms);

/* 0 when name may try now from addr, else the milliseconds until it may. */
int64_t loginguard_wait_ms(loginguard_t *g, const char *name, size_t len, uint64_t addr, int64_t now_ms);
/* 1 when addr (not 0) is a known address of name (a login for it
 * succeeded from there in the last 30 days), else 0. */
int loginguard_known(loginguard_t *g, const char *name, size_t len, uint64_t addr, int64_t now_ms);
/* Records a failed try for name from addr (also for names with no
 * account: a guess tells nothing either way). */
void loginguard_failed(loginguard_t *g, const char *name, size_t len, uint64_t addr, int64_t now_ms);
/* After a successful login: forgets the failures of name from addr, and
 * makes addr (unless 0) a known address of name for 30 days. The per-name
 * count stays. */
void loginguard_succeeded(loginguard_t *g, const char *name, size_t len, uint64_t addr, int64_t now_ms);

#endif
