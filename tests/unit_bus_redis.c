/* unit_bus_redis.c - what only a fleet of Redis buses does, beyond the
 * conformance suite (unit_bus.c runs that against the Redis bus too):
 * two or three nodes in one process on one throwaway Redis. A frame for
 * a user on another node reaches it; deliver_many makes one publish per
 * node that holds some of the users and reports those on none; presence
 * is seen across nodes, and a node that stops heartbeating (freed without
 * a word, as kill -9 leaves it) goes absent within a few heartbeats;
 * after Redis is killed and restarted empty the registry is back and
 * delivery works again; a second node with a live node's id is refused;
 * a malformed envelope is dropped and counted. Tests wait for what they
 * expect with a deadline, never a bare sleep. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "bus.h"
#include "bus_redis.h"
#include "loop.h"
#include "redisserver.h"

#define HB_MS 300 /* dead after 900 ms: short, but above a loaded machine's stalls */
#define CONN(node, n) (((uint64_t)(node) << BUS_CONN_NODE_SHIFT) | (uint64_t)(n))
#define MAX_EVENTS 512

typedef struct event {
	char kind;
	uint64_t conn;
	sbuf_t *frame;
	int64_t user, last_seen;
	int state;
	uint64_t version;
} event_t;

/* What one node's sink was told. */
typedef struct rec {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	event_t ev[MAX_EVENTS];
	size_t n;
} rec_t;

static rec_t recs[4];
static redisserver_t *rs;

static void push(rec_t *r, event_t e)
{
	pthread_mutex_lock(&r->lock);
	if (r->n < MAX_EVENTS)
		r->ev[r->n++] = e;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static void sink_deliver(void *ud, uint64_t conn, sbuf_t *frame)
{
	push(ud, (event_t){'d', conn, sbuf_ref(frame), 0, 0, 0, 0});
}

static void sink_kick(void *ud, uint64_t conn)
{
	push(ud, (event_t){'k', conn, NULL, 0, 0, 0, 0});
}

static void sink_presence(void *ud, int64_t user, int state, int64_t last_seen, uint64_t version)
{
	push(ud, (event_t){'p', 0, NULL, user, last_seen, state, version});
}

static void rec_clear(rec_t *r)
{
	size_t i;

	pthread_mutex_lock(&r->lock);
	for (i = 0; i < r->n; i++)
		sbuf_unref(r->ev[i].frame);
	r->n = 0;
	pthread_mutex_unlock(&r->lock);
}

typedef int (*match_fn)(const event_t *e, const void *arg);

/* Counts r's events that match. */
static int rec_count(rec_t *r, match_fn m, const void *arg)
{
	size_t i;
	int n = 0;

	pthread_mutex_lock(&r->lock);
	for (i = 0; i < r->n; i++)
		n += m(&r->ev[i], arg);
	pthread_mutex_unlock(&r->lock);
	return n;
}

/* Waits up to ms for at least `want` matching events; returns how many. */
static int rec_wait(rec_t *r, match_fn m, const void *arg, int want, int ms)
{
	int64_t end = clock_mono_ms() + ms;
	int n;

	for (;;) {
		struct timespec ts;
		size_t i;

		pthread_mutex_lock(&r->lock);
		for (i = 0, n = 0; i < r->n; i++)
			n += m(&r->ev[i], arg);
		if (n >= want || clock_mono_ms() >= end) {
			pthread_mutex_unlock(&r->lock);
			return n;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&r->cond, &r->lock, &ts);
		pthread_mutex_unlock(&r->lock);
	}
}

typedef struct dmatch {
	uint64_t conn;
	const char *bytes;
} dmatch_t;

static int is_delivery(const event_t *e, const void *arg)
{
	const dmatch_t *d = arg;

	return e->kind == 'd' && e->conn == d->conn && e->frame->len == strlen(d->bytes) &&
	       memcmp(e->frame->data, d->bytes, e->frame->len) == 0;
}

static int is_kick(const event_t *e, const void *arg)
{
	return e->kind == 'k' && e->conn == *(const uint64_t *)arg;
}

typedef struct pmatch {
	int64_t user;
	int state;
} pmatch_t;

static int is_presence(const event_t *e, const void *arg)
{
	const pmatch_t *p = arg;

	return e->kind == 'p' && e->user == p->user && e->state == p->state;
}

static const event_t *last_presence(rec_t *r, int64_t user)
{
	const event_t *e = NULL;
	size_t i;

	pthread_mutex_lock(&r->lock);
	for (i = 0; i < r->n; i++)
		if (r->ev[i].kind == 'p' && r->ev[i].user == user)
			e = &r->ev[i];
	pthread_mutex_unlock(&r->lock);
	return e;
}

static bus_t *node_new(uint32_t node)
{
	bus_sink_t s = {sink_deliver, sink_kick, sink_presence, &recs[node]};
	bus_redis_opts_t o = {HB_MS, 5000};

	rec_clear(&recs[node]);
	return bus_redis_open(&s, node, 0, redisserver_url(rs), &o);
}

static bus_t *node_capped(uint32_t node, unsigned cap)
{
	bus_sink_t s = {sink_deliver, sink_kick, sink_presence, &recs[node]};
	bus_redis_opts_t o = {HB_MS, 5000};

	rec_clear(&recs[node]);
	return bus_redis_open(&s, node, cap, redisserver_url(rs), &o);
}

/* Waits up to ms until bus knows of `want` connections of user elsewhere. */
static int elsewhere_wait(bus_t *bus, int64_t user, unsigned want, int ms)
{
	int64_t end = clock_mono_ms() + ms;

	while (bus_redis_elsewhere(bus, user) != want && clock_mono_ms() < end) {
		struct timespec ts = {0, 10 * 1000000};
		nanosleep(&ts, NULL);
	}
	return (int)bus_redis_elsewhere(bus, user);
}

static redisContext *rconn(void)
{
	redisContext *c = redisConnect("127.0.0.1", redisserver_port(rs));

	assert_non_null(c);
	assert_int_equal(c->err, 0);
	return c;
}

static int setup(void **state)
{
	redisContext *c;
	redisReply *r;

	(void)state;
	if (!rs && !(rs = redisserver_start()))
		return -1;
	c = rconn();
	r = redisCommand(c, "FLUSHALL");
	freeReplyObject(r);
	redisFree(c);
	return 0;
}

/* deliver, send and kick from node 1 reach the user's connection on node
 * 2, with the frame's bytes and its conv/seq labels. */
static void test_cross_node(void **state)
{
	bus_t *b1 = node_new(1), *b2 = node_new(2);
	sbuf_t *f = sbuf_copy("hello", 5);
	dmatch_t d = {CONN(2, 5), "hello"};
	uint64_t c = CONN(2, 5);
	size_t i;
	int64_t conv = 0, seq = 0;

	(void)state;
	assert_non_null(b1);
	assert_non_null(b2);
	f->conv = 77;
	f->seq = 9;
	assert_int_equal(bus_attach(b2, 5, 50, CONN(2, 5)), 0);
	assert_int_equal(bus_redis_settle(b2, 5000), 0);
	bus_deliver(b1, 5, 0, f);
	assert_int_equal(rec_wait(&recs[2], is_delivery, &d, 1, 5000), 1);
	pthread_mutex_lock(&recs[2].lock);
	for (i = 0; i < recs[2].n; i++)
		if (recs[2].ev[i].kind == 'd') {
			conv = recs[2].ev[i].frame->conv;
			seq = recs[2].ev[i].frame->seq;
		}
	pthread_mutex_unlock(&recs[2].lock);
	assert_int_equal(conv, 77);
	assert_int_equal(seq, 9);
	/* The excepted device is left out on the other node too. */
	bus_deliver(b1, 5, 50, f);
	assert_int_equal(bus_redis_settle(b1, 5000), 0);
	bus_send(b1, CONN(2, 5), f);
	assert_int_equal(rec_wait(&recs[2], is_delivery, &d, 2, 5000), 2);
	assert_int_equal(rec_count(&recs[2], is_delivery, &d), 2);
	bus_kick_device(b1, 5, 50);
	assert_int_equal(rec_wait(&recs[2], is_kick, &c, 1, 5000), 1);
	/* Nothing came back to node 1's own sink. */
	assert_int_equal(recs[1].n, 0);
	sbuf_unref(f);
	bus_free(b1);
	bus_free(b2);
}

static int64_t unreached[16];
static size_t nunreached;
static int nreports;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_unreached(void *ud, const int64_t *users, size_t n)
{
	(void)ud;
	pthread_mutex_lock(&report_lock);
	nunreached = n < 16 ? n : 16;
	memcpy(unreached, users, nunreached * sizeof *users);
	nreports++;
	pthread_mutex_unlock(&report_lock);
}

/* Users on nodes 1 and 2, one on none, node 3 holding none of them: one
 * publish, to node 2 only, whatever its share; the report names only the
 * user connected nowhere. */
static void test_deliver_many_per_node(void **state)
{
	bus_t *b1 = node_new(1), *b2 = node_new(2), *b3 = node_new(3);
	const int64_t users[] = {1, 3, 4, 9, 2, 3};
	sbuf_t *f = sbuf_copy("many", 4);
	dmatch_t d3 = {CONN(2, 3), "many"}, d4 = {CONN(2, 4), "many"}, d1 = {CONN(1, 1), "many"};
	bus_redis_stats_t s1a, s1b, s2a, s2b, s3a, s3b;

	(void)state;
	assert_non_null(b1);
	assert_non_null(b2);
	assert_non_null(b3);
	assert_int_equal(bus_attach(b1, 1, 10, CONN(1, 1)), 0);
	assert_int_equal(bus_attach(b1, 2, 20, CONN(1, 2)), 0);
	assert_int_equal(bus_attach(b2, 3, 30, CONN(2, 3)), 0);
	assert_int_equal(bus_attach(b2, 4, 40, CONN(2, 4)), 0);
	assert_int_equal(bus_attach(b3, 8, 80, CONN(3, 8)), 0);
	assert_int_equal(bus_redis_settle(b1, 5000), 0);
	assert_int_equal(bus_redis_settle(b2, 5000), 0);
	assert_int_equal(bus_redis_settle(b3, 5000), 0);
	bus_redis_stats(b1, &s1a);
	bus_redis_stats(b2, &s2a);
	bus_redis_stats(b3, &s3a);
	nreports = 0;
	bus_deliver_many(b1, users, 6, 0, 0, f, on_unreached, NULL);
	assert_int_equal(bus_redis_settle(b1, 5000), 0);
	assert_int_equal(rec_wait(&recs[2], is_delivery, &d3, 2, 5000), 2); /* named twice */
	assert_int_equal(rec_wait(&recs[2], is_delivery, &d4, 1, 5000), 1);
	assert_int_equal(rec_count(&recs[1], is_delivery, &d1), 1);
	bus_redis_stats(b1, &s1b);
	bus_redis_stats(b2, &s2b);
	bus_redis_stats(b3, &s3b);
	assert_int_equal(s1b.publishes - s1a.publishes, 1);
	assert_int_equal(s2b.received - s2a.received, 1);
	assert_int_equal(s3b.received - s3a.received, 0);
	pthread_mutex_lock(&report_lock);
	assert_int_equal(nreports, 1);
	assert_int_equal(nunreached, 1);
	assert_int_equal(unreached[0], 9);
	pthread_mutex_unlock(&report_lock);
	/* With node 3's user among them: one more publish, to node 3. */
	{
		const int64_t more[] = {3, 8, 9};
		dmatch_t d8 = {CONN(3, 8), "many"};
		bus_deliver_many(b1, more, 3, 0, 0, f, on_unreached, NULL);
		assert_int_equal(bus_redis_settle(b1, 5000), 0);
		assert_int_equal(rec_wait(&recs[3], is_delivery, &d8, 1, 5000), 1);
		bus_redis_stats(b1, &s1a);
		assert_int_equal(s1a.publishes - s1b.publishes, 2);
	}
	sbuf_unref(f);
	bus_free(b1);
	bus_free(b2);
	bus_free(b3);
}

/* Scopes, as the log's dispatchers use them: BUS_THIS_NODE reaches only
 * the caller's connections and publishes nothing; a node id leaves that
 * node out, the caller's own included. bus_nodes lists the live nodes,
 * and a node freed without a word drops out of it. */
static void test_scoped_delivery(void **state)
{
	bus_t *b1 = node_new(1), *b2 = node_new(2), *b3 = node_new(3);
	const int64_t users[] = {1, 3, 8};
	sbuf_t *f = sbuf_copy("scoped", 6);
	dmatch_t d1 = {CONN(1, 1), "scoped"}, d3 = {CONN(2, 3), "scoped"}, d8 = {CONN(3, 8), "scoped"};
	bus_redis_stats_t a, b;
	uint32_t nodes[8];
	int i;

	(void)state;
	assert_non_null(b1);
	assert_non_null(b2);
	assert_non_null(b3);
	assert_int_equal(bus_attach(b1, 1, 10, CONN(1, 1)), 0);
	assert_int_equal(bus_attach(b2, 3, 30, CONN(2, 3)), 0);
	assert_int_equal(bus_attach(b3, 8, 80, CONN(3, 8)), 0);
	assert_int_equal(bus_redis_settle(b1, 5000), 0);
	assert_int_equal(bus_redis_settle(b2, 5000), 0);
	assert_int_equal(bus_redis_settle(b3, 5000), 0);
	rec_clear(&recs[1]);
	rec_clear(&recs[2]);
	rec_clear(&recs[3]);
	/* Every node hears every heartbeat within a beat or two. */
	for (i = 0; i < 50 && bus_nodes(b1, nodes, 8) != 3; i++)
		usleep(HB_MS * 1000 / 3);
	assert_int_equal(bus_nodes(b1, nodes, 8), 3);
	assert_int_equal(nodes[0], 1);
	assert_int_equal(nodes[1], 2);
	assert_int_equal(nodes[2], 3);
	assert_int_equal(bus_nodes(b1, nodes, 2), 3); /* the count, however little room */

	bus_redis_stats(b1, &a);
	bus_deliver_scoped(b1, BUS_THIS_NODE, users, 3, 0, 0, f, NULL, NULL);
	assert_int_equal(bus_redis_settle(b1, 5000), 0);
	assert_int_equal(rec_count(&recs[1], is_delivery, &d1), 1);
	bus_redis_stats(b1, &b);
	assert_int_equal(b.publishes - a.publishes, 0);

	/* Every node but 2: this one and node 3. */
	bus_deliver_scoped(b1, 2, users, 3, 0, 0, f, NULL, NULL);
	assert_int_equal(bus_redis_settle(b1, 5000), 0);
	assert_int_equal(rec_wait(&recs[3], is_delivery, &d8, 1, 5000), 1);
	assert_int_equal(rec_count(&recs[1], is_delivery, &d1), 2);
	bus_redis_stats(b1, &a);
	assert_int_equal(a.publishes - b.publishes, 1);

	/* Every node but this one: nodes 2 and 3, one publish each. */
	bus_deliver_scoped(b1, 1, users, 3, 0, 0, f, NULL, NULL);
	assert_int_equal(bus_redis_settle(b1, 5000), 0);
	assert_int_equal(rec_wait(&recs[2], is_delivery, &d3, 1, 5000), 1);
	assert_int_equal(rec_wait(&recs[3], is_delivery, &d8, 2, 5000), 2);
	assert_int_equal(rec_count(&recs[1], is_delivery, &d1), 2);
	bus_redis_stats(b1, &b);
	assert_int_equal(b.publishes - a.publishes, 2);
	assert_int_equal(rec_count(&recs[2], is_delivery, &d3), 1); /* node 2 was left out before */

	/* Node 3 stops without a word: gone from the list within 3 beats. */
	bus_redis_abandon(b3);
	for (i = 0; i < 100 && bus_nodes(b1, nodes, 8) != 2; i++)
		usleep(HB_MS * 1000 / 3);
	assert_int_equal(bus_nodes(b1, nodes, 8), 2);
	assert_int_equal(nodes[1], 2);
	sbuf_unref(f);
	bus_free(b1);
	bus_free(b2);
}

/* Presence of a user on node 2, as node 1 hears it: online, away, gone
 * (with when); online again, then node 2 falls silent without a word and
 * the user goes absent within a few heartbeats. */
static void test_presence_across(void **state)
{
	bus_t *b1 = node_new(1), *b2 = node_new(2);
	pmatch_t on = {5, BUS_ONLINE}, away = {5, BUS_AWAY}, gone = {5, BUS_ABSENT};
	const event_t *e;
	uint64_t v;
	int64_t t0, took;

	(void)state;
	assert_non_null(b1);
	assert_non_null(b2);
	bus_subscribe(b1, 5);
	assert_int_equal(rec_wait(&recs[1], is_presence, &gone, 1, 5000), 1);
	v = last_presence(&recs[1], 5)->version;
	assert_int_equal(bus_attach(b2, 5, 50, CONN(2, 5)), 0);
	assert_int_equal(rec_wait(&recs[1], is_presence, &on, 1, 5000), 1);
	assert_true((e = last_presence(&recs[1], 5))->version > v);
	v = e->version;
	bus_set_away(b2, 5, CONN(2, 5), 1);
	assert_int_equal(rec_wait(&recs[1], is_presence, &away, 1, 5000), 1);
	assert_true((e = last_presence(&recs[1], 5))->version > v);
	/* Online on node 1 too: online while either is. */
	assert_int_equal(bus_attach(b1, 5, 51, CONN(1, 6)), 0);
	assert_int_equal(rec_wait(&recs[1], is_presence, &on, 2, 5000), 2);
	bus_detach(b1, 5, CONN(1, 6));
	assert_int_equal(rec_wait(&recs[1], is_presence, &away, 2, 5000), 2);
	bus_detach(b2, 5, CONN(2, 5));
	assert_int_equal(rec_wait(&recs[1], is_presence, &gone, 2, 5000), 2);
	e = last_presence(&recs[1], 5);
	assert_int_equal(e->state, BUS_ABSENT);
	assert_true(e->last_seen > 0);
	/* A subscriber on node 2 gets the state now, with last_seen. */
	bus_subscribe(b2, 5);
	assert_int_equal(rec_wait(&recs[2], is_presence, &gone, 1, 5000), 1);
	assert_true(last_presence(&recs[2], 5)->last_seen > 0);
	/* kill -9 of node 2. */
	assert_int_equal(bus_attach(b2, 5, 50, CONN(2, 5)), 0);
	assert_int_equal(rec_wait(&recs[1], is_presence, &on, 3, 5000), 3);
	t0 = clock_mono_ms();
	bus_redis_abandon(b2);
	assert_int_equal(rec_wait(&recs[1], is_presence, &gone, 3, 5000), 3);
	took = clock_mono_ms() - t0;
	print_message("absent %lld ms after its node fell silent (heartbeat %d ms)\n", (long long)took, HB_MS);
	assert_true(took <= 6 * HB_MS + 1000);
	bus_free(b1);
}

static int registered(const char *user, const char *node)
{
	redisContext *c = rconn();
	redisReply *r = redisCommand(c, "ZSCORE parley:u:%s %s", user, node);
	int ok = r && r->type == REDIS_REPLY_STRING;

	freeReplyObject(r);
	redisFree(c);
	return ok;
}

/* Redis killed and restarted empty: node 2 registers its user again by
 * itself, and node 1's frames reach it again. */
static void test_redis_restart(void **state)
{
	bus_t *b1 = node_new(1), *b2 = node_new(2);
	sbuf_t *f = sbuf_copy("again", 5);
	dmatch_t d = {CONN(2, 5), "again"};
	int64_t end;
	int n = 0;

	(void)state;
	assert_non_null(b1);
	assert_non_null(b2);
	assert_int_equal(bus_attach(b2, 5, 50, CONN(2, 5)), 0);
	assert_int_equal(bus_redis_settle(b2, 5000), 0);
	assert_true(registered("5", "2"));
	assert_int_equal(redisserver_kill(rs), 0);
	/* Meanwhile: local delivery goes on; remote is dropped and counted. */
	{
		dmatch_t dl = {CONN(2, 5), "local"};
		sbuf_t *l = sbuf_copy("local", 5);
		bus_redis_stats_t s;
		bus_deliver(b2, 5, 0, l);
		assert_int_equal(rec_count(&recs[2], is_delivery, &dl), 1);
		bus_deliver(b1, 5, 0, l);
		/* Dropped at once when node 1 has seen Redis go, or when its
		 * command fails: either way by the time it settles. */
		assert_int_equal(bus_redis_settle(b1, 5000), 0);
		bus_redis_stats(b1, &s);
		assert_true(s.dropped >= 1);
		sbuf_unref(l);
	}
	assert_int_equal(redisserver_restart(rs), 0);
	end = clock_mono_ms() + 10000;
	while (clock_mono_ms() < end && !registered("5", "2"))
		rec_wait(&recs[2], is_delivery, &d, 1, 50);
	assert_true(registered("5", "2"));
	/* Node 1 may take a moment to reconnect: deliver until it arrives. */
	while (clock_mono_ms() < end && (n = rec_count(&recs[2], is_delivery, &d)) == 0) {
		bus_deliver(b1, 5, 0, f);
		rec_wait(&recs[2], is_delivery, &d, 1, 100);
	}
	assert_true(rec_count(&recs[2], is_delivery, &d) >= 1);
	(void)n;
	sbuf_unref(f);
	bus_free(b1);
	bus_free(b2);
}

/* bus_sync's callback, told to the test's thread. */
typedef struct synced {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int calls, ok;
} synced_t;

static void on_synced(void *arg, int ok)
{
	synced_t *s = arg;

	pthread_mutex_lock(&s->lock);
	s->calls++;
	s->ok = ok;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

/* bus_sync on b: 1 when it returned at once, else waits up to ms for the
 * callback and returns its ok + 2 (so 2 or 3), or -1 on timeout. */
static int sync_wait(bus_t *b, synced_t *s, int ms)
{
	int64_t end = clock_mono_ms() + ms;
	int rc = -1;

	s->calls = 0;
	if (bus_sync(b, on_synced, s) == 1)
		return 1;
	pthread_mutex_lock(&s->lock);
	while (!s->calls && clock_mono_ms() < end) {
		struct timespec ts = {0, 0};
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&s->cond, &s->lock, &ts);
	}
	if (s->calls)
		rc = s->ok + 2;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* Once bus_sync calls back, Redis has every attach made before it (the
 * registry is read straight from Redis here), so another node's delivery
 * finds the connection: what a resume waits for before it reads the
 * store. With Redis away it does not wait. */
static void test_sync(void **state)
{
	enum { N = 50 };
	bus_t *b1 = node_new(1), *b2 = node_new(2);
	synced_t s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
	sbuf_t *f = sbuf_copy("synced", 6);
	char user[16];
	int i;

	(void)state;
	assert_non_null(b1);
	assert_non_null(b2);
	for (i = 0; i < N; i++) {
		dmatch_t d = {CONN(2, 100 + i), "synced"};
		assert_int_equal(bus_attach(b2, 100 + i, 1, CONN(2, 100 + i)), 0);
		assert_int_equal(sync_wait(b2, &s, 5000), 3);
		snprintf(user, sizeof user, "%d", 100 + i);
		assert_true(registered(user, "2"));
		bus_deliver(b1, 100 + i, 0, f);
		assert_int_equal(rec_wait(&recs[2], is_delivery, &d, 1, 5000), 1);
	}
	assert_int_equal(redisserver_kill(rs), 0);
	assert_int_equal(bus_attach(b2, 99, 1, CONN(2, 99)), 0);
	i = sync_wait(b2, &s, 10000);
	assert_true(i == 1 || i == 3);
	assert_int_equal(redisserver_restart(rs), 0);
	sbuf_unref(f);
	bus_free(b1);
	bus_free(b2);
}

/* A sync that passes after the bus is muted (the node is stopping and
 * the gateway going) is not called back then, but by bus_free, with ok 0:
 * its owner releases what it holds and touches nothing else. */
static void test_sync_muted(void **state)
{
	bus_t *b = node_new(1);
	synced_t s = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

	(void)state;
	assert_non_null(b);
	assert_int_equal(bus_attach(b, 5, 1, CONN(1, 5)), 0);
	bus_redis_mute(b);
	s.calls = 0;
	assert_int_equal(bus_sync(b, on_synced, &s), 0);
	assert_int_equal(bus_redis_settle(b, 5000), 0);
	assert_int_equal(s.calls, 0);
	bus_free(b);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.ok, 0);
}

/* A cap of 3 per user across two nodes: two connections on node 1 and
 * one on node 2 fill it, and a fourth is refused on either; once one
 * closes, the other node admits again. With Redis away each node counts
 * only its own. */
static void test_cap_across_nodes(void **state)
{
	bus_t *b1 = node_capped(1, 3), *b2 = node_capped(2, 3);
	bus_redis_stats_t s;

	(void)state;
	assert_non_null(b1);
	assert_non_null(b2);
	assert_int_equal(bus_attach(b1, 7, 70, CONN(1, 1)), 0);
	assert_int_equal(bus_attach(b1, 7, 71, CONN(1, 2)), 0);
	assert_int_equal(bus_redis_settle(b1, 5000), 0);
	assert_int_equal(bus_attach(b2, 7, 72, CONN(2, 3)), 0);
	assert_int_equal(bus_redis_settle(b2, 5000), 0);
	/* Node 2 heard of node 1's two in the reply to its own write; node 1
	 * of node 2's one on its channel. */
	assert_int_equal(elsewhere_wait(b2, 7, 2, 5000), 2);
	assert_int_equal(elsewhere_wait(b1, 7, 1, 5000), 1);
	assert_int_equal(bus_attach(b1, 7, 73, CONN(1, 4)), BUS_FULL);
	assert_int_equal(bus_attach(b2, 7, 73, CONN(2, 4)), BUS_FULL);
	assert_int_equal(bus_connections(b1, 7), 2);
	assert_int_equal(bus_connections(b2, 7), 1);
	bus_redis_stats(b1, &s);
	assert_int_equal((int)s.refused_elsewhere, 1);
	/* Another user is not affected. */
	assert_int_equal(bus_attach(b2, 8, 80, CONN(2, 9)), 0);

	/* Node 2's one closes: node 1 may have a third again. */
	bus_detach(b2, 7, CONN(2, 3));
	assert_int_equal(bus_redis_settle(b2, 5000), 0);
	assert_int_equal(elsewhere_wait(b1, 7, 0, 5000), 0);
	assert_int_equal(bus_attach(b1, 7, 73, CONN(1, 4)), 0);
	assert_int_equal(bus_redis_settle(b1, 5000), 0);
	/* Node 2 holds none of them now, and a new one there sees the 3. */
	assert_int_equal(bus_attach(b2, 7, 74, CONN(2, 5)), 0); /* the documented overshoot: it knew of none */
	assert_int_equal(bus_redis_settle(b2, 5000), 0);
	assert_int_equal(elsewhere_wait(b2, 7, 3, 5000), 3);
	assert_int_equal(bus_attach(b2, 7, 75, CONN(2, 6)), BUS_FULL);
	assert_int_equal(elsewhere_wait(b1, 7, 1, 5000), 1);
	assert_int_equal(bus_attach(b1, 7, 75, CONN(1, 6)), BUS_FULL);
	bus_detach(b2, 7, CONN(2, 5));
	assert_int_equal(bus_redis_settle(b2, 5000), 0);
	assert_int_equal(elsewhere_wait(b1, 7, 0, 5000), 0);

	/* Node 2 connects again, then Redis goes: each node falls back to
	 * its own count. */
	assert_int_equal(bus_attach(b2, 7, 74, CONN(2, 5)), 0);
	assert_int_equal(bus_redis_settle(b2, 5000), 0);
	assert_int_equal(elsewhere_wait(b1, 7, 1, 5000), 1);
	assert_int_equal(redisserver_kill(rs), 0);
	assert_int_equal(elsewhere_wait(b1, 7, 0, 5000), 0);
	assert_int_equal(elsewhere_wait(b2, 7, 0, 5000), 0);
	assert_int_equal(bus_attach(b2, 7, 76, CONN(2, 7)), 0);
	assert_int_equal(bus_attach(b2, 7, 77, CONN(2, 8)), 0);
	assert_int_equal(bus_attach(b2, 7, 78, CONN(2, 10)), BUS_FULL); /* its own 3 */
	assert_int_equal(redisserver_restart(rs), 0);
	/* Back: each writes its users again and learns the other's count. */
	assert_int_equal(elsewhere_wait(b1, 7, 3, 10000), 3);
	assert_int_equal(elsewhere_wait(b2, 7, 3, 10000), 3);
	bus_free(b1);
	bus_free(b2);
}

/* Notes: one sent on node 1 reaches node 2's handler of its kind, bytes
 * intact, and not node 1's own; a kind without a handler is dropped. */
static char heard[64];
static size_t nheard;
static int heard_count;
static pthread_mutex_t heard_lock = PTHREAD_MUTEX_INITIALIZER;

static void on_note(void *ud, const uint8_t *bytes, size_t len)
{
	pthread_mutex_lock(&heard_lock);
	nheard = len < sizeof heard ? len : sizeof heard;
	memcpy(heard, bytes, nheard);
	heard_count += (int)(intptr_t)ud;
	pthread_mutex_unlock(&heard_lock);
}

static int heard_wait(int want, int ms)
{
	int64_t end = clock_mono_ms() + ms;
	int n;

	for (;;) {
		struct timespec ts = {0, 10 * 1000000};
		pthread_mutex_lock(&heard_lock);
		n = heard_count;
		pthread_mutex_unlock(&heard_lock);
		if (n >= want || clock_mono_ms() >= end)
			return n;
		nanosleep(&ts, NULL);
	}
}

static void test_notes(void **state)
{
	bus_t *b1 = node_new(1), *b2 = node_new(2);
	bus_redis_stats_t s;

	(void)state;
	assert_non_null(b1);
	assert_non_null(b2);
	heard_count = 0;
	assert_int_equal(bus_redis_on_note(b1, 'L', on_note, (void *)(intptr_t)100), 0);
	assert_int_equal(bus_redis_on_note(b2, 'L', on_note, (void *)(intptr_t)1), 0);
	assert_int_equal(bus_redis_on_note(b2, 'a', on_note, NULL), -EINVAL);
	assert_int_equal(bus_redis_settle(b1, 5000), 0);
	assert_int_equal(bus_redis_settle(b2, 5000), 0);
	bus_redis_note(b1, 'Q', "nobody", 6); /* no handler on node 2 */
	bus_redis_note(b1, 'L', "f 7 a\0b", 7);
	assert_int_equal(bus_redis_settle(b1, 5000), 0);
	assert_int_equal(heard_wait(1, 5000), 1);
	pthread_mutex_lock(&heard_lock);
	assert_int_equal(nheard, 7);
	assert_memory_equal(heard, "f 7 a\0b", 7);
	pthread_mutex_unlock(&heard_lock);
	bus_redis_stats(b1, &s);
	assert_int_equal((int)s.notes_sent, 2);
	/* Node 1's own note came back to it and was not handed on. */
	assert_int_equal(bus_redis_settle(b2, 5000), 0);
	bus_redis_stats(b2, &s);
	assert_int_equal((int)s.notes_heard, 2);
	assert_int_equal(heard_wait(100, 200), 1);
	bus_free(b1);
	bus_free(b2);
}

/* A second node with a live node's id is refused; once the first is
 * gone (freed: it releases its id), the id may be used. */
static void test_duplicate_id(void **state)
{
	bus_t *b1 = node_new(1), *dup;

	(void)state;
	assert_non_null(b1);
	assert_null(dup = node_new(1));
	bus_free(b1);
	assert_non_null(dup = node_new(1));
	bus_free(dup);
}

/* Garbage on a node's channel is dropped and counted; the node goes on
 * delivering. */
static void test_malformed(void **state)
{
	bus_t *b1 = node_new(1), *b2 = node_new(2);
	static const char *bad[] = {"", "P", "X\x01" "D", "P\x01" "D\x05", "P\x01" "Z" "12345678",
	                            "P\x01" "K" "short", "P\x02" "K0123456789abcdef"};
	redisContext *c = rconn();
	bus_redis_stats_t s;
	sbuf_t *f = sbuf_copy("fine", 4);
	dmatch_t d = {CONN(2, 5), "fine"};
	size_t i;
	int64_t end;
	uint8_t huge[3 + 4 + 32 + 8] = {'P', 1, 'D', 0xff, 0xff, 0xff, 0xff};

	(void)state;
	assert_non_null(b1);
	assert_non_null(b2);
	for (i = 0; i < sizeof bad / sizeof *bad; i++)
		freeReplyObject(redisCommand(c, "PUBLISH parley:to:2 %b", bad[i], strlen(bad[i])));
	/* A count of users far beyond the bytes that follow. */
	freeReplyObject(redisCommand(c, "PUBLISH parley:to:2 %b", huge, sizeof huge));
	freeReplyObject(redisCommand(c, "PUBLISH parley:presence %s", "5 online nonsense"));
	redisFree(c);
	end = clock_mono_ms() + 5000;
	do {
		bus_redis_stats(b2, &s);
		if (s.malformed >= sizeof bad / sizeof *bad + 2)
			break;
		rec_wait(&recs[2], is_delivery, &d, 1, 20);
	} while (clock_mono_ms() < end);
	assert_int_equal(s.malformed, sizeof bad / sizeof *bad + 2);
	assert_int_equal(s.received, 0);
	assert_int_equal(bus_attach(b2, 5, 50, CONN(2, 5)), 0);
	assert_int_equal(bus_redis_settle(b2, 5000), 0);
	bus_deliver(b1, 5, 0, f);
	assert_int_equal(rec_wait(&recs[2], is_delivery, &d, 1, 5000), 1);
	sbuf_unref(f);
	bus_free(b1);
	bus_free(b2);
}

/* A muted bus (a node shutting down) hands nothing more to its sink:
 * neither frames from other nodes nor presence reports. */
static void test_mute(void **state)
{
	bus_t *b1 = node_new(1), *b2 = node_new(2);
	sbuf_t *f = sbuf_copy("late", 4);
	dmatch_t d = {CONN(2, 5), "late"};
	pmatch_t on = {6, BUS_ONLINE};

	(void)state;
	assert_non_null(b1);
	assert_non_null(b2);
	assert_int_equal(bus_attach(b2, 5, 50, CONN(2, 5)), 0);
	bus_subscribe(b2, 6);
	assert_int_equal(bus_redis_settle(b2, 5000), 0);
	rec_clear(&recs[2]);
	bus_redis_mute(b2);
	bus_deliver(b1, 5, 0, f);
	assert_int_equal(bus_attach(b1, 6, 60, CONN(1, 6)), 0);
	assert_int_equal(bus_redis_settle(b1, 5000), 0);
	assert_int_equal(rec_wait(&recs[2], is_delivery, &d, 1, 300), 0);
	assert_int_equal(rec_count(&recs[2], is_presence, &on), 0);
	/* Its own connections still take local delivery. */
	bus_deliver(b2, 5, 0, f);
	assert_int_equal(rec_count(&recs[2], is_delivery, &d), 1);
	sbuf_unref(f);
	bus_free(b1);
	bus_free(b2);
}

/* An unreachable Redis: the bus is not made, and says why. */
static void test_unreachable(void **state)
{
	bus_sink_t s = {sink_deliver, sink_kick, sink_presence, &recs[1]};
	bus_redis_opts_t o = {HB_MS, 500};

	(void)state;
	/* Port 1 on loopback: nothing listens there. */
	assert_null(bus_redis_open(&s, 1, 0, "redis://127.0.0.1:1", &o));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_cross_node, setup),
		cmocka_unit_test_setup(test_deliver_many_per_node, setup),
		cmocka_unit_test_setup(test_scoped_delivery, setup),
		cmocka_unit_test_setup(test_presence_across, setup),
		cmocka_unit_test_setup(test_redis_restart, setup),
		cmocka_unit_test_setup(test_sync, setup),
		cmocka_unit_test_setup(test_sync_muted, setup),
		cmocka_unit_test_setup(test_cap_across_nodes, setup),
		cmocka_unit_test_setup(test_notes, setup),
		cmocka_unit_test_setup(test_duplicate_id, setup),
		cmocka_unit_test_setup(test_malformed, setup),
		cmocka_unit_test_setup(test_mute, setup),
		cmocka_unit_test_setup(test_unreachable, setup),
	};
	int failed, i;

	for (i = 0; i < 4; i++) {
		pthread_mutex_init(&recs[i].lock, NULL);
		pthread_cond_init(&recs[i].cond, NULL);
	}
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	for (i = 0; i < 4; i++)
		rec_clear(&recs[i]);
	redisserver_stop(rs);
	return failed;
}
