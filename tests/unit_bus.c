/* unit_bus.c - the bus interface's conformance suite: every method of
 * bus.h, run against every backend in `backends` (the in-process bus
 * today; a Redis bus joins the table). A recording sink stands for the
 * gateway and for presence: it keeps what was delivered to which
 * connection, which were kicked, and every presence report. Its presence
 * callback calls the bus again, which would deadlock were a report made
 * under a lock of the bus's own. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus.h"
#include "bus_redis.h"
#include "redisserver.h"

#define NODE 7
#define CONN(n) (((uint64_t)NODE << BUS_CONN_NODE_SHIFT) | (uint64_t)(n))
#define MAX_EVENTS 256

typedef struct event {
	char kind;               /* 'd' delivered, 'k' kicked, 'p' presence */
	uint64_t conn;
	sbuf_t *frame;
	int64_t user, last_seen;
	int state;
	uint64_t version;
	unsigned conns_then;     /* bus_connections(user) asked from inside the report */
} event_t;

static event_t events[MAX_EVENTS];
static size_t nevents;
static bus_t *bus;
/* A backend over the network calls the sink from a thread of its own. */
static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER;

static void record(event_t e)
{
	pthread_mutex_lock(&events_lock);
	if (nevents < MAX_EVENTS)
		events[nevents++] = e;
	pthread_mutex_unlock(&events_lock);
}

static void sink_deliver(void *ud, uint64_t conn, sbuf_t *frame)
{
	(void)ud;
	record((event_t){'d', conn, sbuf_ref(frame), 0, 0, 0, 0, 0});
}

static void sink_kick(void *ud, uint64_t conn)
{
	(void)ud;
	record((event_t){'k', conn, NULL, 0, 0, 0, 0, 0});
}

static void sink_presence(void *ud, int64_t user, int state, int64_t last_seen, uint64_t version)
{
	(void)ud;
	record((event_t){'p', 0, NULL, user, last_seen, state, version, bus_connections(bus, user)});
}

static const bus_sink_t sink = {sink_deliver, sink_kick, sink_presence, NULL};

static void clear(void)
{
	size_t i;

	for (i = 0; i < nevents; i++)
		sbuf_unref(events[i].frame);
	nevents = 0;
}

/* How many times conn got frame. */
static int got(uint64_t conn, const sbuf_t *frame)
{
	size_t i;
	int n = 0;

	for (i = 0; i < nevents; i++)
		n += events[i].kind == 'd' && events[i].conn == conn && events[i].frame == frame;
	return n;
}

static int count(char kind)
{
	size_t i;
	int n = 0;

	for (i = 0; i < nevents; i++)
		n += events[i].kind == kind;
	return n;
}

/* The last presence report of user, or NULL. */
static const event_t *last_report(int64_t user)
{
	size_t i;

	for (i = nevents; i-- > 0;)
		if (events[i].kind == 'p' && events[i].user == user)
			return &events[i];
	return NULL;
}

/* The Redis bus runs on a throwaway redis-server, started for its first
 * test, with the default heartbeat: nothing here waits for one, and a
 * loaded machine's stall must not pass for a dead node. */
static redisserver_t *rs;

static bus_t *make_redis(const bus_sink_t *s, uint32_t node, unsigned max_per_user)
{
	bus_redis_opts_t o = {BUS_REDIS_HEARTBEAT_MS, 5000};

	if (!rs && !(rs = redisserver_start()))
		return NULL;
	return bus_redis_open(s, node, max_per_user, redisserver_url(rs), &o);
}

static void settle_redis(bus_t *b)
{
	assert_int_equal(bus_redis_settle(b, 5000), 0);
}

typedef struct backend {
	const char *name;
	bus_t *(*make)(const bus_sink_t *sink, uint32_t node, unsigned max_per_user);
	/* Waits until what the calls so far started is done (NULL: at once). */
	void (*settle)(bus_t *bus);
} backend_t;

static const backend_t backends[] = {
	{"local", bus_local_new, NULL},
	{"redis", make_redis, settle_redis},
};

static const backend_t *backend;

static void settle(void)
{
	if (backend->settle)
		backend->settle(bus);
}

static int setup(void **state)
{
	(void)state;
	nevents = 0;
	bus = backend->make(&sink, NODE, 3);
	return bus ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	clear();
	bus_free(bus);
	bus = NULL;
	return 0;
}

/* attach, detach, connections, and the per-user cap. */
static void test_registry(void **state)
{
	(void)state;
	assert_int_equal(bus_connections(bus, 1), 0);
	assert_int_equal(bus_attach(bus, 1, 10, CONN(1)), 0);
	assert_int_equal(bus_attach(bus, 1, 11, CONN(2)), 0);
	assert_int_equal(bus_attach(bus, 1, 11, CONN(3)), 0);
	assert_int_equal(bus_connections(bus, 1), 3);
	assert_int_equal(bus_attach(bus, 1, 12, CONN(4)), BUS_FULL);
	assert_int_equal(bus_connections(bus, 1), 3);
	assert_int_equal(bus_connections(bus, 2), 0);
	bus_detach(bus, 1, CONN(2));
	assert_int_equal(bus_connections(bus, 1), 2);
	bus_detach(bus, 1, CONN(2)); /* twice: harmless */
	bus_detach(bus, 9, CONN(9)); /* never attached: harmless */
	assert_int_equal(bus_connections(bus, 1), 2);
	assert_int_equal(bus_attach(bus, 1, 12, CONN(4)), 0);
	bus_detach(bus, 1, CONN(1));
	bus_detach(bus, 1, CONN(3));
	bus_detach(bus, 1, CONN(4));
	assert_int_equal(bus_connections(bus, 1), 0);
}

/* deliver reaches every connection but the excepted device's; kick closes
 * exactly one device's; send reaches one connection, of this node only. */
static void test_deliver_kick_send(void **state)
{
	sbuf_t *f = sbuf_copy("x", 1);

	(void)state;
	assert_int_equal(bus_attach(bus, 1, 10, CONN(1)), 0);
	assert_int_equal(bus_attach(bus, 1, 11, CONN(2)), 0);
	assert_int_equal(bus_attach(bus, 2, 20, CONN(3)), 0);
	bus_deliver(bus, 1, 0, f);
	assert_int_equal(got(CONN(1), f), 1);
	assert_int_equal(got(CONN(2), f), 1);
	assert_int_equal(got(CONN(3), f), 0);
	clear();
	bus_deliver(bus, 1, 10, f);
	assert_int_equal(got(CONN(1), f), 0);
	assert_int_equal(got(CONN(2), f), 1);
	bus_deliver(bus, 5, 0, f); /* nobody: nothing */
	assert_int_equal(count('d'), 1);
	clear();
	bus_kick_device(bus, 1, 11);
	assert_int_equal(count('k'), 1);
	assert_int_equal(events[0].conn, CONN(2));
	clear();
	bus_send(bus, CONN(3), f);
	assert_int_equal(got(CONN(3), f), 1);
	bus_send(bus, ((uint64_t)(NODE + 1) << BUS_CONN_NODE_SHIFT) | 3, f); /* another node's */
	assert_int_equal(count('d'), 1);
	sbuf_unref(f);
}

static int64_t unreached[16];
static size_t nunreached;
static int reports;

static void on_unreached(void *ud, const int64_t *users, size_t n)
{
	assert_ptr_equal(ud, &reports);
	assert_true(n <= 16);
	memcpy(unreached, users, n * sizeof *users);
	nunreached = n;
	reports++;
	/* Called with no lock of the bus's held: the bus may be used. */
	(void)bus_connections(bus, 1);
}

/* deliver_many: each named user's connections, the sender's own device
 * excepted, once per naming; one report naming exactly those reached
 * nowhere (a user whose only connection is the excepted device was
 * reached). */
static void test_deliver_many(void **state)
{
	const int64_t users[] = {1, 2, 3, 4, 2};
	sbuf_t *f = sbuf_copy("y", 1);

	(void)state;
	assert_int_equal(bus_attach(bus, 1, 10, CONN(1)), 0);
	settle();
	assert_int_equal(bus_attach(bus, 1, 11, CONN(2)), 0);
	settle();
	assert_int_equal(bus_attach(bus, 2, 20, CONN(3)), 0);
	settle();
	assert_int_equal(bus_attach(bus, 4, 40, CONN(4)), 0);
	settle();
	reports = 0;
	bus_deliver_many(bus, users, 5, 1, 10, f, on_unreached, &reports);
	settle();
	assert_int_equal(reports, 1);
	assert_int_equal(got(CONN(1), f), 0); /* the sender's own device */
	assert_int_equal(got(CONN(2), f), 1);
	assert_int_equal(got(CONN(3), f), 2); /* named twice */
	assert_int_equal(got(CONN(4), f), 1);
	assert_int_equal(nunreached, 1);
	assert_int_equal(unreached[0], 3);
	/* No report asked for: delivered all the same. */
	clear();
	bus_deliver_many(bus, users, 2, 0, 0, f, NULL, NULL);
	settle();
	assert_int_equal(count('d'), 3);
	/* Nobody to deliver to: one report, empty. */
	reports = 0;
	bus_deliver_many(bus, users, 0, 0, 0, f, on_unreached, &reports);
	settle();
	assert_int_equal(reports, 1);
	assert_int_equal(nunreached, 0);
	/* Scopes: this node only, or every node but another, reach this
	 * node's connections; every node but this one reaches none here. */
	clear();
	bus_deliver_scoped(bus, BUS_THIS_NODE, users, 2, 0, 0, f, NULL, NULL);
	settle();
	assert_int_equal(count('d'), 3);
	clear();
	bus_deliver_scoped(bus, NODE + 1, users, 2, 0, 0, f, NULL, NULL);
	settle();
	assert_int_equal(count('d'), 3);
	clear();
	reports = 0;
	bus_deliver_scoped(bus, NODE, users, 2, 0, 0, f, on_unreached, &reports);
	settle();
	assert_int_equal(count('d'), 0);
	assert_int_equal(reports, 1);
	assert_int_equal(nunreached, 2);
	sbuf_unref(f);
}

/* The live nodes: this one alone. */
static void test_nodes(void **state)
{
	uint32_t nodes[4] = {0};

	(void)state;
	assert_int_equal(bus_nodes(bus, nodes, 4), 1);
	assert_int_equal(nodes[0], NODE);
}

/* bus_sync: nothing to wait for (1), or exactly one callback with ok 1
 * soon after, on some thread of the bus's. */
static atomic_int synced_calls, synced_ok;

static void on_synced(void *arg, int ok)
{
	(void)arg;
	atomic_store(&synced_ok, ok);
	atomic_fetch_add(&synced_calls, 1);
}

static void test_sync(void **state)
{
	int i, rc;

	(void)state;
	assert_int_equal(bus_attach(bus, 5, 50, CONN(1)), 0);
	atomic_store(&synced_calls, 0);
	rc = bus_sync(bus, on_synced, NULL);
	assert_true(rc == 0 || rc == 1);
	for (i = 0; rc == 0 && i < 500 && atomic_load(&synced_calls) == 0; i++)
		usleep(10000);
	settle();
	assert_int_equal(atomic_load(&synced_calls), rc == 0 ? 1 : 0);
	if (rc == 0)
		assert_int_equal(atomic_load(&synced_ok), 1);
	bus_detach(bus, 5, CONN(1));
}

/* Presence: a subscribe is answered at once with the state now; every
 * change after (online, away when every connection says so, back, gone
 * with a last_seen) is reported with a rising version, from no lock of the
 * bus's (the sink asks the bus from inside the report); a user nobody
 * subscribed to is never reported; subscriptions count. */
static void test_presence(void **state)
{
	const event_t *e;
	uint64_t v;

	(void)state;
	assert_int_equal(bus_attach(bus, 8, 80, CONN(8)), 0); /* never subscribed */
	bus_subscribe(bus, 1);
	settle();
	assert_non_null(e = last_report(1));
	assert_int_equal(e->state, BUS_ABSENT);
	v = e->version;
	assert_int_equal(bus_attach(bus, 1, 10, CONN(1)), 0);
	settle();
	assert_non_null(e = last_report(1));
	assert_int_equal(e->state, BUS_ONLINE);
	assert_int_equal(e->conns_then, 1);
	assert_true(e->version > v);
	v = e->version;
	assert_int_equal(bus_attach(bus, 1, 11, CONN(2)), 0);
	settle();
	assert_true(last_report(1)->version == v); /* still online: no report */
	bus_set_away(bus, 1, CONN(1), 1);
	settle();
	assert_true(last_report(1)->version == v); /* one of two away: online */
	bus_set_away(bus, 1, CONN(2), 1);
	settle();
	assert_non_null(e = last_report(1));
	assert_int_equal(e->state, BUS_AWAY);
	assert_true(e->version > v);
	v = e->version;
	bus_set_away(bus, 1, CONN(2), 0);
	settle();
	assert_int_equal((e = last_report(1))->state, BUS_ONLINE);
	assert_true(e->version > v);
	v = e->version;
	/* A second subscriber: answered too, with the same state. */
	bus_subscribe(bus, 1);
	settle();
	assert_int_equal((e = last_report(1))->state, BUS_ONLINE);
	assert_true(e->version > v);
	bus_detach(bus, 1, CONN(1));
	settle();
	bus_detach(bus, 1, CONN(2));
	settle();
	assert_non_null(e = last_report(1));
	assert_int_equal(e->state, BUS_ABSENT);
	assert_int_equal(e->conns_then, 0);
	assert_true(e->last_seen > 0);
	v = e->version;
	/* One unsubscribe of two: still reported. */
	bus_unsubscribe(bus, 1);
	settle();
	assert_int_equal(bus_attach(bus, 1, 10, CONN(1)), 0);
	settle();
	assert_true((e = last_report(1))->version > v);
	assert_int_equal(e->state, BUS_ONLINE);
	/* The last: no more reports. */
	bus_unsubscribe(bus, 1);
	settle();
	v = last_report(1)->version;
	bus_detach(bus, 1, CONN(1));
	settle();
	assert_true(last_report(1)->version == v);
	assert_null(last_report(8));
	/* A later subscriber hears when it was last seen. */
	bus_subscribe(bus, 1);
	settle();
	assert_int_equal((e = last_report(1))->state, BUS_ABSENT);
	bus_unsubscribe(bus, 1);
	settle();
	bus_unsubscribe(bus, 1); /* one too many: harmless */
	bus_detach(bus, 8, CONN(8));
	settle();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_registry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_kick_send, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_many, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nodes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_presence, setup, teardown),
	};
	size_t i;
	int failed = 0;

	for (i = 0; i < sizeof backends / sizeof *backends; i++) {
		backend = &backends[i];
		failed += _cmocka_run_group_tests(backend->name, tests, sizeof tests / sizeof *tests, NULL, NULL);
	}
	redisserver_stop(rs);
	return failed;
}
