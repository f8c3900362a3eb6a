/* budget.c - the fixed, two-choice table of token buckets of budget.h.
 *
 * A slot holds the keyed hash of its key, its tokens and when they were
 * last brought up to date; refilling is lazy, done whenever a slot is
 * looked at. Slot i is guarded by mutex i % STRIPES; a take locks the
 * stripes of both its candidates (in ascending order, so two takes never
 * wait on each other crosswise), and budget_set locks every stripe, so the
 * rates read under any one stripe are always a consistent pair. */
#include "budget.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "spends.h"

/* Enough that a few threads rarely meet on one mutex; small enough that
 * budget_set, which takes them all, stays cheap. */
#define STRIPES 64

typedef struct bucket {
	uint64_t key;      /* keyed hash of the caller's key; 0: empty */
	double tokens;
	int64_t at_ms;     /* when tokens was last brought up to date */
} bucket_t;

struct budget {
	pthread_mutex_t locks[STRIPES];
	spends_t *share;      /* budget_set_share */
	double rate, burst;  /* read under any stripe, written under all */
	unsigned nslots;
	unsigned char hash_key[crypto_shorthash_KEYBYTES];
	bucket_t slots[];
};

static void normalize(double *rate, double *burst)
{
	if (!(*rate > 0))
		*rate = 0;
	if (!(*burst >= 1)) /* also NaN */
		*burst = 1;
}

budget_t *budget_new(unsigned slots, double rate_per_s, double burst)
{
	budget_t *b;
	size_t n;
	unsigned i;

	if (slots < 2)
		slots = 2; /* two distinct candidates */
	n = slots;
	if (n > (SIZE_MAX - sizeof *b) / sizeof(bucket_t))
		return NULL; /* only where size_t is 32 bits */
	if (!(b = calloc(1, sizeof *b + n * sizeof(bucket_t))))
		return NULL;
	for (i = 0; i < STRIPES; i++)
		pthread_mutex_init(&b->locks[i], NULL);
	normalize(&rate_per_s, &burst);
	b->rate = rate_per_s;
	b->burst = burst;
	b->nslots = slots;
	crypto_shorthash_keygen(b->hash_key);
	return b;
}

void budget_free(budget_t *b)
{
	unsigned i;

	if (!b)
		return;
	for (i = 0; i < STRIPES; i++)
		pthread_mutex_destroy(&b->locks[i]);
	spends_free(b->share);
	sodium_memzero(b->hash_key, sizeof b->hash_key);
	free(b);
}

/* A key's place: its keyed hash (never 0, which marks an empty slot) and
 * its two candidate slots, from the hash's two halves, always distinct. */
typedef struct place {
	uint64_t h;
	unsigned i1, i2;
	unsigned s1, s2;     /* their stripes, s1 <= s2 */
} place_t;

static void place_of(const budget_t *b, uint64_t key, place_t *p)
{
	unsigned char in[sizeof key], out[crypto_shorthash_BYTES];
	unsigned t;

	memcpy(in, &key, sizeof key);
	crypto_shorthash(out, in, sizeof in, b->hash_key);
	memcpy(&p->h, out, sizeof p->h);
	if (!p->h)
		p->h = 1;
	p->i1 = (unsigned)((uint32_t)p->h % b->nslots);
	p->i2 = (unsigned)((uint32_t)(p->h >> 32) % b->nslots);
	if (p->i2 == p->i1)
		p->i2 = (p->i1 + 1) % b->nslots;
	p->s1 = p->i1 % STRIPES;
	p->s2 = p->i2 % STRIPES;
	if (p->s1 > p->s2) {
		t = p->s1;
		p->s1 = p->s2;
		p->s2 = t;
	}
}

static void lock_place(budget_t *b, const place_t *p)
{
	pthread_mutex_lock(&b->locks[p->s1]);
	if (p->s2 != p->s1)
		pthread_mutex_lock(&b->locks[p->s2]);
}

static void unlock_place(budget_t *b, const place_t *p)
{
	if (p->s2 != p->s1)
		pthread_mutex_unlock(&b->locks[p->s2]);
	pthread_mutex_unlock(&b->locks[p->s1]);
}

/* Brings s up to now. A time before its last update adds nothing, but a
 * burst made smaller by budget_set still cuts it. */
static void refill(const budget_t *b, bucket_t *s, int64_t now_ms)
{
	if (now_ms > s->at_ms) {
		s->tokens += b->rate * (double)(now_ms - s->at_ms) / 1000.0;
		s->at_ms = now_ms;
	}
	if (s->tokens > b->burst)
		s->tokens = b->burst;
}

/* The slot key is found in, or NULL. */
static bucket_t *find(budget_t *b, const place_t *p)
{
	if (b->slots[p->i1].key == p->h)
		return &b->slots[p->i1];
	if (b->slots[p->i2].key == p->h)
		return &b->slots[p->i2];
	return NULL;
}

/* The bucket a take by key draws on, brought up to now_ms: its own, or a
 * candidate it claims, or (both candidates busy) the one it shares. */
static bucket_t *find_or_place(budget_t *b, const place_t *p, int64_t now_ms)
{
	bucket_t *s = find(b, p), *c1 = &b->slots[p->i1], *c2 = &b->slots[p->i2];

	if (s) {
		refill(b, s, now_ms);
		return s;
	}
	refill(b, c1, now_ms);
	refill(b, c2, now_ms);
	/* A full bucket is what a fresh one would be: taking it over loses
	 * nothing its old key could tell. */
	if (!c1->key || c1->tokens >= b->burst)
		s = c1;
	else if (!c2->key || c2->tokens >= b->burst)
		s = c2;
	else /* sharing: the fuller one, which hurts its owner least */
		return c1->tokens >= c2->tokens ? c1 : c2;
	s->key = p->h;
	s->tokens = b->burst;
	s->at_ms = now_ms;
	return s;
}

int64_t budget_take(budget_t *b, uint64_t key, double cost, int64_t now_ms)
{
	place_t p;
	bucket_t *s;
	double ms;
	int64_t wait = 0;

	place_of(b, key, &p);
	lock_place(b, &p);
	if (b->rate <= 0 || !(cost > 0))
		goto out;
	if (cost > b->burst)
		cost = b->burst; /* else it could never be admitted */
	s = find_or_place(b, &p, now_ms);
	if (s->tokens >= cost) {
		s->tokens -= cost;
		goto out;
	}
	/* The bucket holds s->tokens at s->at_ms, which a racing thread's clock
	 * may have put a little after ours. Less a hair, so that float noise
	 * does not add a millisecond. */
	ms = (cost - s->tokens) * 1000.0 / b->rate + (double)(s->at_ms - now_ms);
	wait = (int64_t)ceil(ms - 1e-6);
	if (wait < 1)
		wait = 1;
out:
	unlock_place(b, &p);
	return wait;
}

void budget_refund(budget_t *b, uint64_t key, double cost, int64_t now_ms)
{
	place_t p;
	bucket_t *s;

	place_of(b, key, &p);
	lock_place(b, &p);
	if (cost > 0 && (s = find(b, &p))) {
		refill(b, s, now_ms);
		s->tokens += cost; /* the next refill cuts it to the burst */
	}
	unlock_place(b, &p);
}

void budget_set(budget_t *b, double rate_per_s, double burst)
{
	int i;

	normalize(&rate_per_s, &burst);
	for (i = 0; i < STRIPES; i++)
		pthread_mutex_lock(&b->locks[i]);
	b->rate = rate_per_s;
	b->burst = burst;
	for (i = STRIPES - 1; i >= 0; i--)
		pthread_mutex_unlock(&b->locks[i]);
}

/* ---- sharing with a fleet (budget.h) ---------------------------------- */

int budget_set_share(budget_t *b, budget_share_fn fn, void *ud)
{
	if (!fn || b->share || !(b->share = spends_new(fn, ud)))
		return -1;
	return 0;
}

int64_t budget_take_shared(budget_t *b, uint64_t key, double cost, int64_t now_ms)
{
	int64_t wait = budget_take(b, key, cost, now_ms);
	double burst;

	if (wait == 0 && b->share && cost > 0) {
		pthread_mutex_lock(&b->locks[0]);
		burst = b->burst;
		pthread_mutex_unlock(&b->locks[0]);
		spends_add(b->share, key, cost > burst ? burst : cost, now_ms);
	}
	return wait;
}

void budget_share_flush(budget_t *b, int64_t now_ms)
{
	if (b->share)
		spends_flush(b->share, now_ms);
}

unsigned long long budget_share_dropped(budget_t *b)
{
	return b->share ? spends_dropped(b->share) : 0;
}

/* Charges one key of another node's note, down to minus the burst. */
typedef struct charge_ctx {
	budget_t *b;
	int64_t now_ms;
} charge_ctx_t;

static void charge_key(void *ud, uint64_t key, double cost)
{
	charge_ctx_t *c = ud;
	budget_t *b = c->b;
	place_t pl;
	bucket_t *s;

	place_of(b, key, &pl);
	lock_place(b, &pl);
	if (b->rate > 0) {
		s = find_or_place(b, &pl, c->now_ms);
		s->tokens -= cost;
		if (s->tokens < -b->burst)
			s->tokens = -b->burst;
	}
	unlock_place(b, &pl);
}

int budget_apply_note(budget_t *b, const void *note, size_t len, int64_t now_ms)
{
	charge_ctx_t c = {b, now_ms};

	return spends_parse(note, len, charge_key, &c);
}
