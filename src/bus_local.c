/* bus_local.c - the in-process bus: a registry of user -> connections.
 *
 * The registry is split into shards by user id, each with its own lock, so
 * the writer's fan-out and the I/O threads' attach/detach rarely meet on
 * one lock. A user's entry holds a small array of (device, connection);
 * most users have one to three devices online. */
#include "bus.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 64

typedef struct endpoint {
	int64_t device;
	uint64_t conn;
} endpoint_t;

typedef struct user_entry {
	struct user_entry *next;
	int64_t user;
	uint32_t n, cap;
	endpoint_t ep[];
} user_entry_t;

typedef struct shard {
	pthread_mutex_t lock;
	user_entry_t **buckets;
	size_t nbuckets, nusers;
} shard_t;

typedef struct local_bus {
	bus_t base;
	bus_sink_t sink;
	unsigned max_per_user;
	shard_t shards[SHARDS];
} local_bus_t;

static const bus_vtab_t local_vtab;

static uint64_t mix(int64_t user)
{
	uint64_t x = (uint64_t)user;

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

static shard_t *shard_of(local_bus_t *b, int64_t user, uint64_t *h)
{
	*h = mix(user);
	return &b->shards[*h % SHARDS];
}

/* Returns the bucket slot holding user's entry (or where it would go). */
static user_entry_t **find(shard_t *s, int64_t user, uint64_t h)
{
	user_entry_t **p = &s->buckets[(h / SHARDS) & (s->nbuckets - 1)];

	while (*p && (*p)->user != user)
		p = &(*p)->next;
	return p;
}

static int grow(shard_t *s)
{
	size_t n = s->nbuckets * 2, i;
	user_entry_t **nb = calloc(n, sizeof *nb);

	if (!nb)
		return -1;
	for (i = 0; i < s->nbuckets; i++) {
		user_entry_t *e = s->buckets[i], *next;
		for (; e; e = next) {
			size_t j = (mix(e->user) / SHARDS) & (n - 1);
			next = e->next;
			e->next = nb[j];
			nb[j] = e;
		}
	}
	free(s->buckets);
	s->buckets = nb;
	s->nbuckets = n;
	return 0;
}

bus_t *bus_local_new(const bus_sink_t *sink, unsigned max_per_user)
{
	local_bus_t *b = calloc(1, sizeof *b);
	int i;

	if (!b)
		return NULL;
	b->base.vt = &local_vtab;
	b->sink = *sink;
	b->max_per_user = max_per_user;
	for (i = 0; i < SHARDS; i++) {
		pthread_mutex_init(&b->shards[i].lock, NULL);
		b->shards[i].nbuckets = 64;
		b->shards[i].buckets = calloc(64, sizeof(user_entry_t *));
		if (!b->shards[i].buckets) {
			local_vtab.free(&b->base);
			return NULL;
		}
	}
	return &b->base;
}

static void local_free(bus_t *base)
{
	local_bus_t *b = (local_bus_t *)base;
	size_t i, j;

	for (i = 0; i < SHARDS; i++) {
		shard_t *s = &b->shards[i];
		for (j = 0; s->buckets && j < s->nbuckets; j++) {
			user_entry_t *e = s->buckets[j], *next;
			for (; e; e = next) {
				next = e->next;
				free(e);
			}
		}
		free(s->buckets);
		pthread_mutex_destroy(&s->lock);
	}
	free(b);
}

static int local_attach(bus_t *base, int64_t user, int64_t device, uint64_t conn)
{
	local_bus_t *b = (local_bus_t *)base;
	uint64_t h;
	shard_t *s = shard_of(b, user, &h);
	user_entry_t **p, *e;
	int r = -1;

	pthread_mutex_lock(&s->lock);
	if (s->nusers >= s->nbuckets && grow(s) < 0)
		goto out;
	p = find(s, user, h);
	e = *p;
	if (e && b->max_per_user && e->n >= b->max_per_user) {
		r = BUS_FULL;
		goto out;
	}
	if (!e || e->n == e->cap) {
		uint32_t cap = e ? e->cap * 2 : 1; /* most users: one device online */
		user_entry_t *ne = realloc(e, sizeof *ne + cap * sizeof(endpoint_t));
		if (!ne)
			goto out;
		if (!e) {
			ne->next = NULL;
			ne->user = user;
			ne->n = 0;
			s->nusers++;
		}
		ne->cap = cap;
		*p = ne;
		e = ne;
	}
	e->ep[e->n++] = (endpoint_t){device, conn};
	r = 0;
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

static void local_detach(bus_t *base, int64_t user, uint64_t conn)
{
	local_bus_t *b = (local_bus_t *)base;
	uint64_t h;
	shard_t *s = shard_of(b, user, &h);
	user_entry_t **p, *e;
	uint32_t i;

	pthread_mutex_lock(&s->lock);
	p = find(s, user, h);
	if ((e = *p) != NULL) {
		for (i = 0; i < e->n; i++) {
			if (e->ep[i].conn == conn) {
				e->ep[i] = e->ep[--e->n];
				break;
			}
		}
		if (e->n == 0) {
			*p = e->next;
			free(e);
			s->nusers--;
		}
	}
	pthread_mutex_unlock(&s->lock);
}

static void local_deliver(bus_t *base, int64_t user, int64_t except_device, sbuf_t *frame)
{
	local_bus_t *b = (local_bus_t *)base;
	uint64_t h;
	shard_t *s = shard_of(b, user, &h);
	user_entry_t *e;
	uint32_t i;

	pthread_mutex_lock(&s->lock);
	if ((e = *find(s, user, h)) != NULL)
		for (i = 0; i < e->n; i++)
			if (e->ep[i].device != except_device)
				b->sink.deliver(b->sink.ud, e->ep[i].conn, frame);
	pthread_mutex_unlock(&s->lock);
}

static void local_kick_device(bus_t *base, int64_t user, int64_t device)
{
	local_bus_t *b = (local_bus_t *)base;
	uint64_t h;
	shard_t *s = shard_of(b, user, &h);
	user_entry_t *e;
	uint32_t i;

	pthread_mutex_lock(&s->lock);
	if ((e = *find(s, user, h)) != NULL)
		for (i = 0; i < e->n; i++)
			if (e->ep[i].device == device)
				b->sink.kick(b->sink.ud, e->ep[i].conn);
	pthread_mutex_unlock(&s->lock);
}

static unsigned local_connections(bus_t *base, int64_t user)
{
	local_bus_t *b = (local_bus_t *)base;
	uint64_t h;
	shard_t *s = shard_of(b, user, &h);
	user_entry_t *e;
	unsigned n;

	pthread_mutex_lock(&s->lock);
	n = (e = *find(s, user, h)) != NULL ? e->n : 0;
	pthread_mutex_unlock(&s->lock);
	return n;
}

static const bus_vtab_t local_vtab = {
	.free = local_free,
	.attach = local_attach,
	.detach = local_detach,
	.deliver = local_deliver,
	.kick_device = local_kick_device,
	.connections = local_connections,
};
