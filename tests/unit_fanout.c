/* unit_fanout.c - the fan-out queue: a small group's message is not held
 * behind a burst into a big one; each conversation's messages keep their
 * order; the sender's own device is skipped; drain waits for everything;
 * and a full queue holds the submitter back instead of growing. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus.h"
#include "fanout.h"

/* A bus that records deliveries: (user, except_device, frame tag). */
typedef struct rec {
	int64_t user, except;
	int64_t tag;
	int32_t scope;
} rec_t;

static rec_t *log_;
static atomic_size_t nlog;
static atomic_int gate_open;
static int32_t scope_now = BUS_EVERY_NODE; /* the scope of the call in progress */

static void fake_deliver(bus_t *b, int64_t user, int64_t except, sbuf_t *frame)
{
	size_t i;

	(void)b;
	/* Hold the first delivery until the test has queued everything. */
	while (!atomic_load(&gate_open))
		usleep(100);
	i = atomic_fetch_add(&nlog, 1);
	log_[i] = (rec_t){user, except, frame->conv, scope_now};
}

static void fake_free(bus_t *b) { (void)b; }
static int fake_attach(bus_t *b, int64_t u, int64_t d, uint64_t c) { (void)b; (void)u; (void)d; (void)c; return 0; }
static void fake_detach(bus_t *b, int64_t u, uint64_t c) { (void)b; (void)u; (void)c; }
static void fake_kick(bus_t *b, int64_t u, int64_t d) { (void)b; (void)u; (void)d; }
static unsigned fake_count(bus_t *b, int64_t u) { (void)b; (void)u; return 0; }

/* The fan-out delivers a quantum of members in one call, as a fleet's bus
 * wants; recorded per member, as the bus would deliver. */
static void fake_deliver_many(bus_t *b, int32_t scope, const int64_t *users, size_t n, int64_t except_user,
                              int64_t except_device, sbuf_t *frame, bus_unreached_fn report, void *ud)
{
	size_t i;

	scope_now = scope;
	for (i = 0; i < n; i++)
		fake_deliver(b, users[i], users[i] == except_user ? except_device : 0, frame);
	if (report)
		report(ud, NULL, 0);
}

static const bus_vtab_t fake_vt = {
	.free = fake_free,
	.attach = fake_attach,
	.detach = fake_detach,
	.deliver = fake_deliver,
	.deliver_many = fake_deliver_many,
	.kick_device = fake_kick,
	.connections = fake_count,
};
static bus_t fake_bus = {&fake_vt};

/* Members looked up by the fan-out thread: conversation 2 has three, the
 * third of whom joined at seq 5. */
static int lookups;

static int lookup(void *ud, int64_t conv, fanout_member_t **out, size_t *n, int64_t *version)
{
	(void)ud;
	if (conv != 2)
		return -1;
	lookups++;
	*out = malloc(3 * sizeof **out);
	(*out)[0] = (fanout_member_t){20001, 0};
	(*out)[1] = (fanout_member_t){20002, 0};
	(*out)[2] = (fanout_member_t){20003, 5};
	*n = 3;
	*version = 7;
	return 0;
}

static sbuf_t *tagged(int64_t tag)
{
	sbuf_t *f = sbuf_copy("x", 1);

	f->conv = tag; /* the test's label for which message this is */
	return f;
}

static int64_t *range(int64_t first, size_t n)
{
	int64_t *m = malloc(n * sizeof *m);
	size_t i;

	for (i = 0; i < n; i++)
		m[i] = first + (int64_t)i;
	return m;
}

static void test_fair_and_ordered(void **state)
{
	fanout_t *f;
	size_t i, first_small = SIZE_MAX, last_big = 0, n;
	int64_t last_tag3 = 0;

	(void)state;
	log_ = calloc(30000, sizeof *log_);
	atomic_store(&nlog, 0);
	atomic_store(&gate_open, 0);
	f = fanout_new(&fake_bus, 1024, lookup, NULL);
	fanout_submit(f, 1, 1, 0, tagged(100), range(1, 10000), 10000, 5, 77); /* a burst: 10,000 */
	fanout_submit(f, 2, 1, 7, tagged(200), NULL, 0, 0, 0); /* a small group, looked up */
	fanout_submit(f, 3, 1, 0, tagged(301), range(30001, 300), 300, 0, 0); /* three in order */
	fanout_submit(f, 3, 2, 0, tagged(302), range(30001, 300), 300, 0, 0);
	fanout_submit(f, 3, 3, 0, tagged(303), range(30001, 300), 300, 0, 0);
	atomic_store(&gate_open, 1);
	fanout_drain(f);
	n = atomic_load(&nlog);
	/* seq 1 of conversation 2 reaches the two who joined before it. */
	assert_int_equal(n, 10000 + 2 + 900);
	for (i = 0; i < n; i++) {
		if (log_[i].tag == 200 && first_small == SIZE_MAX)
			first_small = i;
		if (log_[i].tag == 100)
			last_big = i;
		if (log_[i].tag > 300) {
			assert_true(log_[i].tag >= last_tag3); /* never an older one after */
			last_tag3 = log_[i].tag;
		}
		/* The sender's own device is excepted, nobody else's. */
		if (log_[i].tag == 100)
			assert_int_equal(log_[i].except, log_[i].user == 5 ? 77 : 0);
	}
	/* The small group waited for at most one quantum of the burst. */
	assert_true(first_small <= FANOUT_QUANTUM + 1);
	assert_true(last_big > first_small);
	assert_int_equal(fanout_delivered(f), n);
	fanout_free(f);
	free(log_);
}

/* A scoped job reaches the bus with its scope, and its done callback
 * runs once, after the last of its recipients was handed over. */
static atomic_size_t done_calls, delivered_at_done;

static void on_done(void *ud)
{
	(void)ud;
	atomic_store(&delivered_at_done, atomic_load(&nlog));
	atomic_fetch_add(&done_calls, 1);
}

static void test_scope_and_done(void **state)
{
	fanout_t *f;
	size_t i;

	(void)state;
	log_ = calloc(2000, sizeof *log_);
	atomic_store(&nlog, 0);
	atomic_store(&gate_open, 1);
	atomic_store(&done_calls, 0);
	f = fanout_new(&fake_bus, 1024, lookup, NULL);
	/* More than one quantum: done waits for the last. */
	fanout_submit_scoped(f, 4, 1, 0, tagged(400), range(1, 3 * FANOUT_QUANTUM + 5), 3 * FANOUT_QUANTUM + 5, 0, 0,
	                     7, on_done, NULL);
	fanout_submit_scoped(f, 4, 2, 0, tagged(401), range(1, 2), 2, 0, 0, BUS_THIS_NODE, NULL, NULL);
	fanout_drain(f);
	assert_int_equal(atomic_load(&done_calls), 1);
	assert_int_equal(atomic_load(&delivered_at_done), 3 * FANOUT_QUANTUM + 5);
	assert_int_equal(atomic_load(&nlog), 3 * FANOUT_QUANTUM + 5 + 2);
	for (i = 0; i < atomic_load(&nlog); i++)
		assert_int_equal(log_[i].scope, log_[i].tag == 400 ? 7 : BUS_THIS_NODE);
	/* A job that cannot be queued (members given, none in it) is done at once. */
	fanout_submit_scoped(f, 4, 3, 0, tagged(402), malloc(8), 0, 0, 0, 7, on_done, NULL);
	assert_int_equal(atomic_load(&done_calls), 2);
	fanout_free(f);
	scope_now = BUS_EVERY_NODE;
	free(log_);
}

static fanout_t *bounded;
static atomic_int second_queued;

static void *submit_two(void *p)
{
	(void)p;
	fanout_submit(bounded, 9, 1, 0, tagged(901), range(1, 100), 100, 0, 0);
	fanout_submit(bounded, 9, 2, 0, tagged(902), range(1, 100), 100, 0, 0); /* must wait */
	atomic_store(&second_queued, 1);
	return NULL;
}

static void test_bounded(void **state)
{
	pthread_t th;
	size_t i;

	(void)state;
	log_ = calloc(1000, sizeof *log_);
	atomic_store(&nlog, 0);
	atomic_store(&gate_open, 0);
	bounded = fanout_new(&fake_bus, 1, lookup, NULL); /* room for one message */
	pthread_create(&th, NULL, submit_two, NULL);
	usleep(200000);
	/* The first job is stuck at the gate; the second does not fit. */
	assert_int_equal(atomic_load(&second_queued), 0);
	atomic_store(&gate_open, 1);
	pthread_join(th, NULL);
	assert_int_equal(atomic_load(&second_queued), 1);
	fanout_drain(bounded);
	assert_int_equal(atomic_load(&nlog), 200);
	for (i = 0; i < 100; i++)
		assert_int_equal(log_[i].tag, 901);
	fanout_free(bounded);
	free(log_);
}

/* The member list is kept between messages, read again only when a
 * message was stored under a newer membership, and the join floor holds. */
static void test_member_cache(void **state)
{
	fanout_t *f;
	size_t i, n, to_third = 0;

	(void)state;
	log_ = calloc(100, sizeof *log_);
	atomic_store(&nlog, 0);
	atomic_store(&gate_open, 1);
	lookups = 0;
	f = fanout_new(&fake_bus, 1024, lookup, NULL);
	fanout_submit(f, 2, 4, 7, tagged(1), NULL, 0, 0, 0);  /* before the third joined */
	fanout_submit(f, 2, 6, 7, tagged(2), NULL, 0, 0, 0);  /* after: all three */
	fanout_submit(f, 2, 7, 6, tagged(3), NULL, 0, 0, 0);  /* an older membership: kept list serves */
	fanout_drain(f);
	assert_int_equal(lookups, 1);
	fanout_submit(f, 2, 8, 8, tagged(4), NULL, 0, 0, 0);  /* newer than kept: read again */
	fanout_drain(f);
	assert_int_equal(lookups, 2);
	n = atomic_load(&nlog);
	assert_int_equal(n, 2 + 3 + 3 + 3);
	for (i = 0; i < n; i++)
		if (log_[i].user == 20003)
			to_third++;
	assert_int_equal(to_third, 3);
	fanout_free(f);
	free(log_);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scope_and_done),
		cmocka_unit_test(test_fair_and_ordered),
		cmocka_unit_test(test_bounded),
		cmocka_unit_test(test_member_cache),
	};
	return cmocka_run_group_tests_name("unit_fanout", tests, NULL, NULL);
}
