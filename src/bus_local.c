/* bus_local.c - the in-process bus: a registry of user -> connections, and
 * the presence of the users this node subscribed to.
 *
 * The registry is split into shards by user id, each with its own lock, so
 * the writer's fan-out and the I/O threads' attach/detach rarely meet on
 * one lock. A user's entry holds a small array of (device, connection);
 * most users have one to three devices online. Subscriptions live in a
 * second, small table per shard: only watched users have one, so a
 * connected user nobody watches costs the registry nothing more.
 *
 * Presence reports are made after the shard's lock is released (the sink
 * may call the bus again), in an order that threads can race; each carries
 * the shard's clock, which orders them (bus.h). */
#include "bus.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "loop.h"

#define SHARDS 64

/* A connection. Device ids are positive and far below 2^62: the bit above
 * them holds whether the connection says it is away, so that an endpoint
 * stays 16 bytes (every idle connection has one). */
typedef struct endpoint {
	int64_t device;
	uint64_t conn;
} endpoint_t;

#define EP_AWAY ((int64_t)1 << 62)
#define EP_DEVICE(ep) ((ep)->device & ~EP_AWAY)

typedef struct user_entry {
	struct user_entry *next;
	int64_t user;
	uint32_t n, cap;
	endpoint_t ep[];
} user_entry_t;

/* A user this node watches: how many subscribed, and when it was last
 * seen leaving (kept here, as a Redis registry would, for later
 * subscribers). */
typedef struct sub {
	struct sub *next;
	int64_t user;
	uint32_t count;
	int64_t last_seen;
} sub_t;

#define SUB_BUCKETS 256

typedef struct shard {
	pthread_mutex_t lock;
	user_entry_t **buckets;
	size_t nbuckets, nusers;
	sub_t *subs[SUB_BUCKETS];
	uint64_t clock;          /* orders this shard's presence reports */
} shard_t;

typedef struct local_bus {
	bus_t base;
	bus_sink_t sink;
	uint32_t node;
	unsigned max_per_user;
	shard_t shards[SHARDS];
} local_bus_t;

/* A presence report gathered under a shard's lock, made after it. */
typedef struct report {
	int due;
	int64_t user, last_seen;
	int state;
	uint64_t version;
} report_t;

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

static sub_t **sub_find(shard_t *s, int64_t user, uint64_t h)
{
	sub_t **p = &s->subs[(h / SHARDS) % SUB_BUCKETS];

	while (*p && (*p)->user != user)
		p = &(*p)->next;
	return p;
}

static int state_of(const user_entry_t *e)
{
	uint32_t i;

	if (!e || e->n == 0)
		return BUS_ABSENT;
	for (i = 0; i < e->n; i++)
		if (!(e->ep[i].device & EP_AWAY))
			return BUS_ONLINE;
	return BUS_AWAY;
}

/* Under s's lock, after user's entry changed from state `before`: when a
 * subscriber should hear of it, fills r (made once the lock is gone). */
static void note(shard_t *s, int64_t user, uint64_t h, int before, int force, report_t *r)
{
	sub_t *sub = *sub_find(s, user, h);
	user_entry_t *e = *find(s, user, h);
	int now = state_of(e);

	r->due = 0;
	if (!sub || (now == before && !force))
		return;
	if (now == BUS_ABSENT && before != BUS_ABSENT)
		sub->last_seen = clock_wall_ms();
	*r = (report_t){1, user, now == BUS_ABSENT ? sub->last_seen : 0, now, ++s->clock};
}

static void report(local_bus_t *b, const report_t *r)
{
	if (r->due && b->sink.presence)
		b->sink.presence(b->sink.ud, r->user, r->state, r->last_seen, r->version);
}

bus_t *bus_local_new(const bus_sink_t *sink, uint32_t node, unsigned max_per_user)
{
	local_bus_t *b = calloc(1, sizeof *b);
	int i;

	if (!b)
		return NULL;
	b->base.vt = &local_vtab;
	b->sink = *sink;
	b->node = node;
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
		for (j = 0; j < SUB_BUCKETS; j++) {
			sub_t *u = s->subs[j], *next;
			for (; u; u = next) {
				next = u->next;
				free(u);
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
	report_t rep = {0};
	int r = -1, before;

	pthread_mutex_lock(&s->lock);
	if (s->nusers >= s->nbuckets && grow(s) < 0)
		goto out;
	p = find(s, user, h);
	e = *p;
	before = state_of(e);
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
	e->ep[e->n++] = (endpoint_t){device & ~EP_AWAY, conn};
	r = 0;
	note(s, user, h, before, 0, &rep);
out:
	pthread_mutex_unlock(&s->lock);
	report(b, &rep);
	return r;
}

static void local_detach(bus_t *base, int64_t user, uint64_t conn)
{
	local_bus_t *b = (local_bus_t *)base;
	uint64_t h;
	shard_t *s = shard_of(b, user, &h);
	user_entry_t **p, *e;
	report_t rep = {0};
	uint32_t i;

	pthread_mutex_lock(&s->lock);
	p = find(s, user, h);
	if ((e = *p) != NULL) {
		int before = state_of(e);

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
		note(s, user, h, before, 0, &rep);
	}
	pthread_mutex_unlock(&s->lock);
	report(b, &rep);
}

static void local_set_away(bus_t *base, int64_t user, uint64_t conn, int away)
{
	local_bus_t *b = (local_bus_t *)base;
	uint64_t h;
	shard_t *s = shard_of(b, user, &h);
	user_entry_t *e;
	report_t rep = {0};
	uint32_t i;

	pthread_mutex_lock(&s->lock);
	if ((e = *find(s, user, h)) != NULL) {
		int before = state_of(e);

		for (i = 0; i < e->n; i++)
			if (e->ep[i].conn == conn)
				e->ep[i].device = away ? e->ep[i].device | EP_AWAY : EP_DEVICE(&e->ep[i]);
		note(s, user, h, before, 0, &rep);
	}
	pthread_mutex_unlock(&s->lock);
	report(b, &rep);
}

/* Delivers to one user; returns whether any connection of it took the
 * frame (or would have, but for the excepted device). */
static int deliver_one(local_bus_t *b, int64_t user, int64_t except_device, sbuf_t *frame)
{
	uint64_t h;
	shard_t *s = shard_of(b, user, &h);
	user_entry_t *e;
	uint32_t i;
	int reached;

	pthread_mutex_lock(&s->lock);
	e = *find(s, user, h);
	reached = e && e->n > 0;
	for (i = 0; e && i < e->n; i++)
		if (EP_DEVICE(&e->ep[i]) != except_device)
			b->sink.deliver(b->sink.ud, e->ep[i].conn, frame);
	pthread_mutex_unlock(&s->lock);
	return reached;
}

static void local_deliver(bus_t *base, int64_t user, int64_t except_device, sbuf_t *frame)
{
	deliver_one((local_bus_t *)base, user, except_device, frame);
}

static void local_deliver_many(bus_t *base, int32_t scope, const int64_t *users, size_t n,
                               int64_t except_user, int64_t except_device, sbuf_t *frame,
                               bus_unreached_fn report_fn, void *ud)
{
	local_bus_t *b = (local_bus_t *)base;
	int64_t small[64], *unreached = small;
	size_t i, nun = 0;

	if (scope >= 0 && (uint32_t)scope == b->node) {
		/* This node is left out: nobody is reached. */
		if (report_fn)
			report_fn(ud, n ? users : &except_user, n);
		return;
	}
	if (report_fn && n > sizeof small / sizeof *small && !(unreached = malloc(n * sizeof *unreached))) {
		log_error("bus: out of memory for a report of %zu users; reporting none", n);
		report_fn = NULL;
	}
	for (i = 0; i < n; i++)
		if (!deliver_one(b, users[i], users[i] == except_user ? except_device : 0, frame) && report_fn)
			unreached[nun++] = users[i];
	if (report_fn)
		report_fn(ud, unreached, nun);
	if (unreached != small)
		free(unreached);
}

static void local_send(bus_t *base, uint64_t conn, sbuf_t *frame)
{
	local_bus_t *b = (local_bus_t *)base;

	/* Every connection is on this node; a handle of another is stale. */
	if (BUS_CONN_NODE(conn) == b->node)
		b->sink.deliver(b->sink.ud, conn, frame);
}

static void local_subscribe(bus_t *base, int64_t user)
{
	local_bus_t *b = (local_bus_t *)base;
	uint64_t h;
	shard_t *s = shard_of(b, user, &h);
	sub_t **p, *sub;
	report_t rep = {0};

	pthread_mutex_lock(&s->lock);
	p = sub_find(s, user, h);
	if (!(sub = *p) && (sub = calloc(1, sizeof *sub)) != NULL) {
		sub->user = user;
		*p = sub;
	}
	if (sub) {
		sub->count++;
		note(s, user, h, BUS_ABSENT, 1, &rep);
	} else {
		log_error("bus: out of memory for a presence subscription");
	}
	pthread_mutex_unlock(&s->lock);
	report(b, &rep);
}

static void local_unsubscribe(bus_t *base, int64_t user)
{
	local_bus_t *b = (local_bus_t *)base;
	uint64_t h;
	shard_t *s = shard_of(b, user, &h);
	sub_t **p, *sub;

	pthread_mutex_lock(&s->lock);
	p = sub_find(s, user, h);
	if ((sub = *p) != NULL && --sub->count == 0) {
		*p = sub->next;
		free(sub);
	}
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
			if (EP_DEVICE(&e->ep[i]) == device)
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

int bus_local_state(bus_t *base, int64_t user)
{
	local_bus_t *b = (local_bus_t *)base;
	uint64_t h;
	shard_t *s = shard_of(b, user, &h);
	int st;

	pthread_mutex_lock(&s->lock);
	st = state_of(*find(s, user, h));
	pthread_mutex_unlock(&s->lock);
	return st;
}

void bus_local_users(bus_t *base, void (*fn)(void *ud, int64_t user), void *ud)
{
	local_bus_t *b = (local_bus_t *)base;
	size_t i, j;

	for (i = 0; i < SHARDS; i++) {
		shard_t *s = &b->shards[i];
		pthread_mutex_lock(&s->lock);
		for (j = 0; j < s->nbuckets; j++)
			for (user_entry_t *e = s->buckets[j]; e; e = e->next)
				fn(ud, e->user);
		pthread_mutex_unlock(&s->lock);
	}
}

static size_t local_nodes(bus_t *base, uint32_t *out, size_t max)
{
	if (max)
		out[0] = ((local_bus_t *)base)->node;
	return 1;
}

/* The registry is this node's memory: an attach is visible at once. */
static int local_sync(bus_t *base, bus_sync_fn fn, void *arg)
{
	(void)base;
	(void)fn;
	(void)arg;
	return 1;
}

static const bus_vtab_t local_vtab = {
	.free = local_free,
	.attach = local_attach,
	.detach = local_detach,
	.set_away = local_set_away,
	.deliver = local_deliver,
	.deliver_many = local_deliver_many,
	.send = local_send,
	.kick_device = local_kick_device,
	.connections = local_connections,
	.subscribe = local_subscribe,
	.unsubscribe = local_unsubscribe,
	.nodes = local_nodes,
	.sync = local_sync,
};
