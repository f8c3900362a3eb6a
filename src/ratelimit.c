/* ratelimit.c - the token buckets of ratelimit.h, in a chained hash table.
 *
 * A user whose bucket has refilled is indistinguishable from one never
 * seen, so every few thousand takes a sweep drops full buckets: memory
 * follows the users who are actually sending, not everyone who ever did. */
#include "ratelimit.h"

#include <math.h>
#include <stdlib.h>

#define SWEEP_EVERY 4096

typedef struct bucket {
	struct bucket *next;
	int64_t user;
	double tokens;
	int64_t at_ms;       /* when tokens was last brought up to date */
} bucket_t;

struct ratelimit {
	double rate, burst;
	bucket_t **table;
	size_t nbuckets, count;
	unsigned takes;
};

ratelimit_t *ratelimit_new(double rate, double burst)
{
	ratelimit_t *r = calloc(1, sizeof *r);

	if (!r)
		return NULL;
	r->rate = rate;
	r->burst = burst < 1 ? 1 : burst;
	r->nbuckets = 1024;
	if (!(r->table = calloc(r->nbuckets, sizeof *r->table))) {
		free(r);
		return NULL;
	}
	return r;
}

void ratelimit_free(ratelimit_t *r)
{
	size_t i;

	if (!r)
		return;
	for (i = 0; i < r->nbuckets; i++) {
		bucket_t *b = r->table[i], *next;
		for (; b; b = next) {
			next = b->next;
			free(b);
		}
	}
	free(r->table);
	free(r);
}

static void refill(const ratelimit_t *r, bucket_t *b, int64_t now_ms)
{
	if (now_ms > b->at_ms) {
		b->tokens = fmin(r->burst, b->tokens + r->rate * (double)(now_ms - b->at_ms) / 1000.0);
		b->at_ms = now_ms;
	}
}

static void sweep(ratelimit_t *r, int64_t now_ms)
{
	size_t i;

	for (i = 0; i < r->nbuckets; i++) {
		bucket_t **p = &r->table[i];
		while (*p) {
			bucket_t *b = *p;
			refill(r, b, now_ms);
			if (b->tokens >= r->burst) {
				*p = b->next;
				free(b);
				r->count--;
			} else {
				p = &b->next;
			}
		}
	}
}

static void grow(ratelimit_t *r)
{
	size_t n = r->nbuckets * 2, i;
	bucket_t **t = calloc(n, sizeof *t);

	if (!t)
		return; /* longer chains, still correct */
	for (i = 0; i < r->nbuckets; i++) {
		bucket_t *b = r->table[i], *next;
		for (; b; b = next) {
			next = b->next;
			b->next = t[(uint64_t)b->user % n];
			t[(uint64_t)b->user % n] = b;
		}
	}
	free(r->table);
	r->table = t;
	r->nbuckets = n;
}

/* user's bucket, made full when it has none, brought up to now_ms; NULL
 * when out of memory. */
static bucket_t *bucket_of(ratelimit_t *r, int64_t user, int64_t now_ms)
{
	bucket_t **p, *b;

	if (++r->takes % SWEEP_EVERY == 0)
		sweep(r, now_ms);
	p = &r->table[(uint64_t)user % r->nbuckets];
	while (*p && (*p)->user != user)
		p = &(*p)->next;
	if (!(b = *p)) {
		if (!(b = malloc(sizeof *b)))
			return NULL;
		b->next = NULL;
		b->user = user;
		b->tokens = r->burst;
		b->at_ms = now_ms;
		*p = b;
		if (++r->count > 2 * r->nbuckets)
			grow(r); /* b stays valid: only the chains move */
	}
	refill(r, b, now_ms);
	return b;
}

int64_t ratelimit_take(ratelimit_t *r, int64_t user, double cost, int64_t now_ms)
{
	bucket_t *b;

	if (r->rate <= 0)
		return 0;
	if (cost > r->burst)
		cost = r->burst;
	if (!(b = bucket_of(r, user, now_ms)))
		return 0; /* out of memory: admit rather than refuse everyone */
	if (b->tokens >= cost) {
		b->tokens -= cost;
		return 0;
	}
	{
		/* Less a hair, so that float noise does not add a millisecond. */
		int64_t ms = (int64_t)ceil((cost - b->tokens) * 1000.0 / r->rate - 1e-6);
		return ms > 0 ? ms : 1;
	}
}

void ratelimit_refund(ratelimit_t *r, int64_t user, double cost, int64_t now_ms)
{
	bucket_t *b;

	if (r->rate <= 0)
		return;
	if (cost > r->burst)
		cost = r->burst;
	for (b = r->table[(uint64_t)user % r->nbuckets]; b && b->user != user; b = b->next)
		;
	if (b) {
		refill(r, b, now_ms);
		b->tokens = fmin(r->burst, b->tokens + cost);
	}
}

void ratelimit_charge(ratelimit_t *r, int64_t user, double cost, int64_t now_ms)
{
	bucket_t *b;

	if (r->rate <= 0 || !(cost > 0) || !(b = bucket_of(r, user, now_ms)))
		return;
	b->tokens = fmax(-r->burst, b->tokens - cost);
}

uint64_t ratelimit_size(const ratelimit_t *r)
{
	return r->count;
}
