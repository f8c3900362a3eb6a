/* unit_dispatch.c - the log's fan-out dispatchers (dispatch.h), on a real
 * one-server JetStream (tests/natsserver.h) and the in-process bus with a
 * recording sink.
 *
 * Pinned: partition ownership is stable, spread, and moves only what a
 * joining node gains; a message event reaches the members' connections
 * here unless this node committed it (its id's node bits), with a direct
 * message's members taken from the event and a group's read through the
 * fan-out's lookup; a receipt event's frame reaches the other member and
 * the reader's other devices (in a group, only the latter); events that
 * do not parse are counted and dropped,
 * never delivered, never fatal; and end to end, an event published on
 * the log is delivered by the dispatcher that owns its partition. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus.h"
#include "dispatch.h"
#include "eventlog.h"
#include "fanout.h"
#include "natsserver.h"
#include "tmpserver.h"

#define NODE 1
#define CONN(n) (((uint64_t)NODE << BUS_CONN_NODE_SHIFT) | (uint64_t)(n))

static natscluster_t *nc;
static eventlog_t *elog;
static bus_t *bus;
static fanout_t *fan;
static dispatch_t *disp;
static atomic_int lookups;

/* ---- what the sink was handed -------------------------------------- */

static pthread_mutex_t got_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t got_conn[256];
static int64_t got_seq[256];
static int ngot;

static void sink_deliver(void *ud, uint64_t conn, sbuf_t *frame)
{
	(void)ud;
	pthread_mutex_lock(&got_lock);
	if (ngot < 256) {
		got_conn[ngot] = conn;
		got_seq[ngot++] = frame->seq;
	}
	pthread_mutex_unlock(&got_lock);
}

static void sink_kick(void *ud, uint64_t conn)
{
	(void)ud;
	(void)conn;
}

static void sink_presence(void *ud, int64_t user, int state, int64_t last_seen, uint64_t version)
{
	(void)ud;
	(void)user;
	(void)state;
	(void)last_seen;
	(void)version;
}

static int delivered_count(void)
{
	int n;

	pthread_mutex_lock(&got_lock);
	n = ngot;
	pthread_mutex_unlock(&got_lock);
	return n;
}

static void clear(void)
{
	pthread_mutex_lock(&got_lock);
	ngot = 0;
	pthread_mutex_unlock(&got_lock);
}

/* Group 50's members: users 11 and 12. */
static int lookup(void *ud, int64_t conv, fanout_member_t **out, size_t *n, int64_t *version)
{
	(void)ud;
	atomic_fetch_add(&lookups, 1);
	if (conv != 50)
		return -1;
	*out = malloc(2 * sizeof **out);
	(*out)[0] = (fanout_member_t){11, 0};
	(*out)[1] = (fanout_member_t){12, 0};
	*n = 2;
	*version = 3;
	return 0;
}

/* A message id made by node `node`. */
static int64_t id_of(uint32_t node, int n)
{
	return ((int64_t)1000 << 22) | ((int64_t)node << 12) | n;
}

static eventlog_event_t event_of(const char *type, const char *json)
{
	eventlog_event_t ev = {0};

	ev.type = type;
	ev.data = json;
	ev.len = strlen(json);
	ev.dedup_id = "";
	return ev;
}

static int setup(void **state)
{
	bus_sink_t sink = {sink_deliver, sink_kick, sink_presence, NULL};
	eventlog_opts_t o;
	char err[256];

	(void)state;
	if (!(nc = natscluster_start(1)))
		return -1;
	eventlog_opts_init(&o);
	o.name = "DISPATCH_UNIT";
	o.partitions = 4;
	if (!(elog = eventlog_open(natscluster_urls(nc), &o, err, sizeof err)))
		return -1;
	bus = bus_local_new(&sink, NODE, 0);
	fan = fanout_new(bus, 64, lookup, NULL);
	disp = dispatch_new(elog, bus, fan, NULL, NODE);
	if (!bus || !fan || !disp)
		return -1;
	/* Alice (user 1) and bob (user 2) connected here; and user 11. */
	bus_attach(bus, 1, 10, CONN(1));
	bus_attach(bus, 2, 20, CONN(2));
	bus_attach(bus, 11, 110, CONN(11));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	dispatch_free(disp);
	fanout_free(fan);
	eventlog_close(elog);
	bus_free(bus);
	natscluster_stop(nc);
	return 0;
}

/* Owners: the same answer every time and whatever the list's order; 16
 * partitions spread over 3 nodes; a 4th node takes some, and every
 * partition that moves, moves to it. */
static void test_owner(void **state)
{
	const uint32_t three[] = {1, 2, 3}, shuffled[] = {3, 1, 2}, four[] = {1, 2, 3, 4};
	int count[5] = {0}, moved = 0;
	unsigned p;

	(void)state;
	for (p = 0; p < 16; p++) {
		uint32_t o3 = dispatch_owner(p, three, 3), o4 = dispatch_owner(p, four, 4);
		assert_int_equal(o3, dispatch_owner(p, shuffled, 3));
		assert_int_equal(dispatch_owner(p, three, 1), 1);
		count[o3]++;
		if (o4 != o3) {
			assert_int_equal(o4, 4);
			moved++;
		}
	}
	assert_true(count[1] >= 2 && count[2] >= 2 && count[3] >= 2);
	assert_true(moved >= 1 && moved <= 8);
}

/* A direct message from another node (its id's node bits: 5) reaches
 * bob's connection here, with the members the event names; the same
 * message committed here reaches nobody (its node served them). */
static void test_message_scope(void **state)
{
	char json[512];
	eventlog_event_t ev;
	dispatch_counts_t dc;

	(void)state;
	clear();
	snprintf(json, sizeof json,
	         "{\"conv\":7,\"id\":\"%lld\",\"seq\":3,\"from\":1,\"cmid\":\"c3\",\"body\":\"hi\",\"ts\":1,"
	         "\"conv_kind\":\"direct\",\"members\":[1,2]}",
	         (long long)id_of(5, 1));
	ev = event_of("message.new", json);
	assert_int_equal(dispatch_handle(disp, &ev), 0);
	/* Handled means handed to the bus: no waiting here. */
	assert_int_equal(delivered_count(), 2); /* alice's device and bob's: only her sending device was on node 5 */
	assert_int_equal(got_seq[0], 3);
	snprintf(json, sizeof json,
	         "{\"conv\":7,\"id\":\"%lld\",\"seq\":4,\"from\":1,\"cmid\":\"c4\",\"body\":\"hi\",\"ts\":1,"
	         "\"conv_kind\":\"direct\",\"members\":[1,2]}",
	         (long long)id_of(NODE, 2));
	ev = event_of("message.new", json);
	assert_int_equal(dispatch_handle(disp, &ev), 0);
	assert_int_equal(delivered_count(), 2);
	/* A group message without members: read through the lookup. */
	atomic_store(&lookups, 0);
	snprintf(json, sizeof json,
	         "{\"conv\":50,\"id\":\"%lld\",\"seq\":9,\"from\":12,\"cmid\":\"g\",\"body\":\"all\",\"ts\":1,"
	         "\"conv_kind\":\"group\",\"members_version\":3}",
	         (long long)id_of(6, 3));
	ev = event_of("message.new", json);
	assert_int_equal(dispatch_handle(disp, &ev), 0);
	assert_int_equal(delivered_count(), 3); /* user 11 */
	assert_int_equal(got_conn[2], CONN(11));
	assert_int_equal(atomic_load(&lookups), 1);
	dispatch_counts(disp, &dc);
	assert_true(dc.messages >= 3);
}

static int got_conn_is(int i, uint64_t conn)
{
	int yes;

	pthread_mutex_lock(&got_lock);
	yes = i < ngot && got_conn[i] == conn;
	pthread_mutex_unlock(&got_lock);
	return yes;
}

/* A receipt event's frame: in a direct chat to the other member and the
 * reader's other devices, on every node but the committing one; in a
 * group to the reader's other devices only (the members get counts);
 * swept from the outbox (no kind, no node), to the reader's devices. */
static void test_receipt_scope(void **state)
{
	eventlog_event_t ev;
	dispatch_counts_t before, after;
	int i;

	(void)state;
	assert_int_equal(bus_attach(bus, 2, 21, CONN(3)), 0); /* bob's second device */
	dispatch_counts(disp, &before);
	clear();
	ev = event_of("receipt.read", "{\"type\":\"receipt\",\"conv\":7,\"user\":2,\"state\":\"read\",\"seq\":4,"
	                              "\"conv_kind\":\"direct\",\"members\":[1,2],\"prev\":3,\"device\":20,\"node\":5}");
	assert_int_equal(dispatch_handle(disp, &ev), 0);
	assert_int_equal(delivered_count(), 2);
	for (i = 0; i < 2; i++) {
		assert_true(got_conn_is(i, CONN(1)) || got_conn_is(i, CONN(3)));
		assert_int_equal(got_seq[i], 0); /* a receipt frame is not in a conversation's order */
	}
	/* Committed here: this node's own delivery reached them. */
	clear();
	ev = event_of("receipt.read", "{\"type\":\"receipt\",\"conv\":7,\"user\":2,\"state\":\"read\",\"seq\":4,"
	                              "\"conv_kind\":\"direct\",\"members\":[1,2],\"device\":20,\"node\":1}");
	assert_int_equal(dispatch_handle(disp, &ev), 0);
	assert_int_equal(delivered_count(), 0);
	/* A group's: not to the other members (user 11 is one, here). */
	clear();
	ev = event_of("receipt.delivered", "{\"type\":\"receipt\",\"conv\":50,\"user\":12,\"state\":\"delivered\","
	                                   "\"seq\":9,\"conv_kind\":\"group\",\"prev\":8,\"device\":120,\"node\":5}");
	assert_int_equal(dispatch_handle(disp, &ev), 0);
	assert_int_equal(delivered_count(), 0);
	/* Swept: the reader's devices, both (no device to leave out). */
	clear();
	ev = event_of("receipt.read", "{\"type\":\"receipt\",\"conv\":7,\"user\":2,\"state\":\"read\",\"seq\":4}");
	assert_int_equal(dispatch_handle(disp, &ev), 0);
	assert_int_equal(delivered_count(), 2);
	for (i = 0; i < 2; i++)
		assert_true(got_conn_is(i, CONN(2)) || got_conn_is(i, CONN(3)));
	dispatch_counts(disp, &after);
	assert_int_equal(after.receipts - before.receipts, 4);
	bus_detach(bus, 2, CONN(3));
}

/* Whatever the log holds that is not an event of ours is counted and
 * acknowledged: never delivered, never a crash. */
static void test_malformed(void **state)
{
	static const char *bad[] = {
		"", "{", "[]", "null", "\"text\"", "{\"conv\":7}", "{\"conv\":\"7\",\"seq\":1}",
		"{\"conv\":7,\"id\":\"x\",\"seq\":1,\"from\":1,\"cmid\":\"c\",\"body\":\"b\"}",
		"{\"conv\":7,\"id\":\"99\",\"seq\":-1,\"from\":1,\"cmid\":\"c\",\"body\":\"b\"}",
		"{\"conv\":7,\"id\":\"99\",\"seq\":1,\"from\":1,\"cmid\":5,\"body\":\"b\"}",
		"{\"conv\":7,\"id\":\"99\",\"seq\":1,\"from\":1,\"cmid\":\"c\",\"body\":null}",
		"{\"conv\":7,\"conv\":8}",
		"{\"conv\":99999999999999999999999}",
		"\xff\xfe",
	};
	dispatch_counts_t before, after;
	eventlog_event_t ev;
	size_t i;

	(void)state;
	clear();
	dispatch_counts(disp, &before);
	for (i = 0; i < sizeof bad / sizeof *bad; i++) {
		ev = event_of("message.new", bad[i]);
		assert_int_equal(dispatch_handle(disp, &ev), 0);
		ev = event_of("receipt.read", bad[i]);
		assert_int_equal(dispatch_handle(disp, &ev), 0);
	}
	/* Members that are not users are not delivered to. */
	ev = event_of("message.new", "{\"conv\":7,\"id\":\"20480\",\"seq\":1,\"from\":1,\"cmid\":\"c\",\"body\":\"b\","
	                             "\"conv_kind\":\"direct\",\"members\":[\"x\",-4,0]}");
	assert_int_equal(dispatch_handle(disp, &ev), 0);
	ev = event_of("something.else", "{}");
	assert_int_equal(dispatch_handle(disp, &ev), 0);
	dispatch_counts(disp, &after);
	assert_true(after.malformed - before.malformed >= 2 * 12);
	assert_int_equal(delivered_count(), 0);
}

/* End to end: this node is the only one, so it owns every partition and
 * delivers what is published on the log. */
static atomic_int published;

static void on_published(void *ud, int ok)
{
	(void)ud;
	atomic_store(&published, ok ? 1 : -1);
}

static void test_through_the_log(void **state)
{
	char json[512];
	int64_t deadline = tmpserver_now_ms() + 20000;
	dispatch_counts_t dc;

	(void)state;
	clear();
	do {
		assert_true(tmpserver_now_ms() < deadline);
		tmpserver_nap(20);
		dispatch_counts(disp, &dc);
	} while (dc.partitions != 4);
	snprintf(json, sizeof json,
	         "{\"conv\":8,\"id\":\"%lld\",\"seq\":1,\"from\":1,\"cmid\":\"l1\",\"body\":\"logged\",\"ts\":1,"
	         "\"conv_kind\":\"direct\",\"members\":[1,2]}",
	         (long long)id_of(9, 4));
	assert_int_equal(eventlog_publish(elog, 8, "message.new", json, strlen(json), "m:unit-1", on_published, NULL),
	                 0);
	while (delivered_count() < 2) {
		assert_true(tmpserver_now_ms() < deadline);
		tmpserver_nap(10);
	}
	assert_int_equal(atomic_load(&published), 1);
	tmpserver_nap(200);
	assert_int_equal(delivered_count(), 2); /* once */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_owner),
		cmocka_unit_test(test_message_scope),
		cmocka_unit_test(test_receipt_scope),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_through_the_log),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
