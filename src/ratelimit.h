/* ratelimit.h - a sender's budget, charged by what its messages cost.
 *
 * Each user has a token bucket of recipients: a message costs the number
 * of members it reaches (a direct message 1, a post to a 1,024-member group
 * 1,023), so a bot posting into a big group spends its budget a thousand
 * times faster than a person chatting. Buckets refill at `rate` tokens a
 * second up to `burst`; a message that costs more than the whole burst is
 * charged the burst, so that it can always be sent eventually.
 *
 * Not thread-safe: the writer owns it, and asks it inside the transaction
 * that would store the message, once the recipients are known. */
#ifndef PARLEY_RATELIMIT_H
#define PARLEY_RATELIMIT_H

#include <stdint.h>

typedef struct ratelimit ratelimit_t;

/* rate <= 0 disables limiting (every take admits). NULL when out of memory. */
ratelimit_t *ratelimit_new(double rate, double burst);
void ratelimit_free(ratelimit_t *r);

/* Charges cost to user at time now_ms. Returns 0 when admitted, or how
 * many milliseconds until the bucket holds enough (nothing is charged). */
int64_t ratelimit_take(ratelimit_t *r, int64_t user, double cost, int64_t now_ms);

/* Gives back cost taken by user at now_ms (a message admitted by this
 * budget and refused by another), never above the burst. */
void ratelimit_refund(ratelimit_t *r, int64_t user, double cost, int64_t now_ms);

/* Charges cost spent by user on another node (spends.h): taken whatever
 * the bucket holds, down to minus the burst, so that the fleet's spends
 * count here too. */
void ratelimit_charge(ratelimit_t *r, int64_t user, double cost, int64_t now_ms);

/* Buckets held (a full bucket is forgotten when next swept). */
uint64_t ratelimit_size(const ratelimit_t *r);

#endif
