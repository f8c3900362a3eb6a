/* budget.h - per-key token buckets in a fixed, secret-keyed table.
 *
 * For limits keyed by values an attacker chooses: sign-ups per client
 * address, logins per address, work units per user. Each key has a token
 * bucket that refills at `rate` tokens a second up to `burst`; a take of
 * `cost` tokens is admitted when the bucket holds them.
 *
 * Unlike ratelimit.h (one bucket per user, in a table that grows), a budget
 * never allocates after budget_new: its `slots` entries are made at
 * creation, so a spray of keys cannot grow memory (24 bytes a slot). Keys
 * are placed by SipHash (libsodium crypto_shorthash) under a key made at
 * creation, so nobody can choose keys that land on a victim's slot. Each
 * key has two candidate slots ("power of two choices"): a key found in
 * either uses it; a new key takes an empty candidate, or one whose bucket
 * has refilled completely (a full bucket is indistinguishable from a fresh
 * one, so forgetting it is exact). When both candidates hold buckets still
 * refilling, the new key SHARES the one holding more tokens: no bucket ever
 * holds more than a fresh one, and no take is ever admitted that a fresh
 * bucket would refuse. The price, under a spray of more live keys than
 * slots: unrelated keys may share a bucket (a key may be slowed by another's
 * spending), and a key with no slot of its own may draw on both of its
 * candidates in turn, so up to two buckets' worth, taken from the keys it
 * shares with. The table as a whole never admits more than
 * slots x (burst + rate x seconds).
 *
 * A per-key limit does not bound an attacker who holds many keys (many
 * addresses); pair it with a global limit where that matters.
 *
 * Thread-safe: any thread may call any function but budget_free, with no
 * lock of its own; slots are guarded by a small array of striped mutexes,
 * not one global lock. Times are the caller's clock in milliseconds; a time
 * older than a bucket's last update refills nothing (threads racing with
 * slightly different clocks never make tokens out of a clock going back). */
#ifndef PARLEY_BUDGET_H
#define PARLEY_BUDGET_H

#include <stddef.h>
#include <stdint.h>

typedef struct budget budget_t;

/* A table of `slots` buckets (at least 2) refilling at rate_per_s tokens a
 * second up to burst. rate_per_s <= 0 disables the limit (every take
 * admits); a burst below 1 is taken as 1. Needs sodium_init() first. NULL
 * when out of memory. */
budget_t *budget_new(unsigned slots, double rate_per_s, double burst);
/* Frees b and everything it holds; NULL is fine. No call on b may be in
 * progress or follow. */
void budget_free(budget_t *b);

/* Charges cost to key at time now_ms. Returns 0 when admitted (cost is
 * charged), else the milliseconds until the bucket will hold cost (nothing
 * is charged). A cost above the burst is charged as the burst, so that it is
 * admitted eventually; a cost of 0 or less is admitted and charges nothing. */
int64_t budget_take(budget_t *b, uint64_t key, double cost, int64_t now_ms);

/* Gives back cost taken from key (capped at the burst, as the take was),
 * for a request admitted here and refused later for another reason, so that
 * it does not count. The bucket never rises above the burst. When key has no
 * slot of its own (it shared one, or its slot was reclaimed once full) the
 * refund is dropped: refunding a bucket that may belong to another key
 * could raise it above what that key spent. */
void budget_refund(budget_t *b, uint64_t key, double cost, int64_t now_ms);

/* Changes the rates live (a configuration reload), with the meaning of
 * budget_new. Takes effect for every bucket at its next use: a bucket above
 * a smaller burst is cut to it, and the time since a bucket's last use
 * refills at the new rate. */
void budget_set(budget_t *b, double rate_per_s, double burst);

/* ---- Sharing a budget across a fleet ----------------------------------
 *
 * A per-address budget on one node of several would admit as many times
 * its rate as there are nodes: the load balancer routes by user, so one
 * address's sign-ups and logins reach every node. spends.h says how the
 * nodes tell each other what they admitted, and what that bounds.
 *
 * budget_set_share: from now on budget_take_shared gathers what it
 * admits (spends.h: fn gets the notes, on the taking thread or
 * budget_share_flush's, outside the budget's locks). Call before other
 * threads use b. 0, or -1 (out of memory, or already set).
 *
 * budget_take_shared: budget_take, and when admitted, gathered for the
 * fleet; budget_take stays local (for keys routing already keeps on one
 * node, such as users under sticky routing, where sharing would only
 * cost).
 *
 * budget_apply_note: charges another node's note; a bucket may go below
 * empty, down to minus the burst, so that a fleet's spends are not
 * forgotten by a full node. 0, or -1 when the note is malformed (nothing
 * is charged). */
typedef void (*budget_share_fn)(void *ud, const void *note, size_t len);
int budget_set_share(budget_t *b, budget_share_fn fn, void *ud);
int64_t budget_take_shared(budget_t *b, uint64_t key, double cost, int64_t now_ms);
void budget_share_flush(budget_t *b, int64_t now_ms);
int budget_apply_note(budget_t *b, const void *note, size_t len, int64_t now_ms);
/* Spends not shared (spends_dropped). */
unsigned long long budget_share_dropped(budget_t *b);

#endif
