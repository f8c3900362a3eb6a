/* addrconns.c - per-address connection counts (addrconns.h): 64 shards,
 * each a chained hash table under its own mutex. An accept costs one lock
 * and one short chain walk; an entry is freed when its address's last
 * connection closes. */
#include "addrconns.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define SHARDS 64
#define SHARD_BUCKETS 1024

typedef struct entry {
	struct entry *next;
	uint64_t addr;
	uint32_t total, pending;
	uint64_t partial;        /* bytes of unfinished input its connections hold */
} entry_t;

typedef struct shard {
	pthread_mutex_t lock;
	entry_t *buckets[SHARD_BUCKETS];
} shard_t;

struct addrconns {
	unsigned max_total, max_pending;
	atomic_uint_fast64_t addresses, refused;
	shard_t shards[SHARDS];
};

/* Spreads addresses over shards and buckets: keys of one IPv4 /24 or one
 * IPv6 prefix differ in few bits, so mix them first. */
static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	x *= UINT64_C(0xc4ceb9fe1a85ec53);
	x ^= x >> 33;
	return x;
}

addrconns_t *addrconns_new(unsigned max_total, unsigned max_pending)
{
	addrconns_t *a = calloc(1, sizeof *a);
	int i;

	if (!a)
		return NULL;
	a->max_total = max_total;
	a->max_pending = max_pending;
	for (i = 0; i < SHARDS; i++)
		pthread_mutex_init(&a->shards[i].lock, NULL);
	return a;
}

void addrconns_free(addrconns_t *a)
{
	int i, b;

	if (!a)
		return;
	for (i = 0; i < SHARDS; i++) {
		for (b = 0; b < SHARD_BUCKETS; b++) {
			entry_t *e = a->shards[i].buckets[b], *next;
			for (; e; e = next) {
				next = e->next;
				free(e);
			}
		}
		pthread_mutex_destroy(&a->shards[i].lock);
	}
	free(a);
}

/* The shard of addr, locked, and the link that holds (or would hold) its
 * entry. */
static entry_t **find(addrconns_t *a, uint64_t addr, shard_t **out)
{
	uint64_t h = mix(addr);
	shard_t *s = &a->shards[h % SHARDS];
	entry_t **p = &s->buckets[(h / SHARDS) % SHARD_BUCKETS];

	pthread_mutex_lock(&s->lock);
	while (*p && (*p)->addr != addr)
		p = &(*p)->next;
	*out = s;
	return p;
}

int addrconns_open(addrconns_t *a, uint64_t addr)
{
	shard_t *s;
	entry_t **p = find(a, addr, &s), *e = *p;
	int r = ADDRCONNS_OK;

	if (!e) {
		if (!(e = calloc(1, sizeof *e))) {
			r = ADDRCONNS_NOMEM;
			goto out;
		}
		e->addr = addr;
		*p = e;
		atomic_fetch_add(&a->addresses, 1);
	}
	if (a->max_total && e->total >= a->max_total)
		r = ADDRCONNS_TOTAL;
	else if (a->max_pending && e->pending >= a->max_pending)
		r = ADDRCONNS_PENDING;
	if (r == ADDRCONNS_OK) {
		e->total++;
		e->pending++;
	} else {
		atomic_fetch_add(&a->refused, 1);
	}
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

void addrconns_upgraded(addrconns_t *a, uint64_t addr)
{
	shard_t *s;
	entry_t **p = find(a, addr, &s);

	if (*p && (*p)->pending)
		(*p)->pending--;
	pthread_mutex_unlock(&s->lock);
}

void addrconns_close(addrconns_t *a, uint64_t addr, int pending)
{
	shard_t *s;
	entry_t **p = find(a, addr, &s), *e = *p;

	if (e) {
		if (e->total)
			e->total--;
		if (pending && e->pending)
			e->pending--;
		if (e->total == 0) {
			*p = e->next;
			free(e);
			atomic_fetch_sub(&a->addresses, 1);
		}
	}
	pthread_mutex_unlock(&s->lock);
}

int addrconns_partial(addrconns_t *a, uint64_t addr, int64_t delta, uint64_t max)
{
	shard_t *s;
	entry_t **p = find(a, addr, &s), *e = *p;
	int r = 0;

	if (!e) {
		r = delta > 0 ? -1 : 0; /* not a counted address: nothing to charge */
	} else if (delta < 0) {
		e->partial -= (uint64_t)-delta > e->partial ? e->partial : (uint64_t)-delta;
	} else if (max && e->partial + (uint64_t)delta > max) {
		r = -1;
	} else {
		e->partial += (uint64_t)delta;
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

uint64_t addrconns_addresses(addrconns_t *a)
{
	return atomic_load(&a->addresses);
}

uint64_t addrconns_refused(addrconns_t *a)
{
	return atomic_load(&a->refused);
}
