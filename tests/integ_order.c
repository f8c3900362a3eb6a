/* integ_order.c - a connection's order with writers on several nodes.
 *
 * One node has one writer, whose frames reach a connection in seq order;
 * a fleet has many, and another node's frame can arrive late, or never.
 * This runs a node in the test's own process, so that the test can stand
 * for the other nodes: it stores messages through a store handle of its
 * own (another node's writer) and hands their frames to the node's bus in
 * whatever order it likes (another node's publish), then reads what the
 * client receives. Per conversation the client must get increasing seqs,
 * each once, none missing: a frame that comes early waits for the ones
 * before it; one that never comes is read from the store. The store is
 * the harness's choice ($PARLEY_TEST_STORE), as for every suite. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "bus.h"
#include "frames.h"
#include "harness.h"
#include "ids.h"
#include "loop.h"
#include "server.h"
#include "store.h"

static server_t *srv;
static store_t *other;           /* "another node's" store handle */
static char where[256];         /* the store's location */
static int port;

static int start(void **state)
{
	server_config_t cfg;

	(void)state;
	if (hx_fresh_store(where, sizeof where) < 0)
		return -1;
	server_config_defaults(&cfg);
	snprintf(cfg.host, sizeof cfg.host, "127.0.0.1");
	cfg.port = 0;
	if (hx_store_is_dir(where))
		snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", where);
	else
		snprintf(cfg.store_url, sizeof cfg.store_url, "%s", where);
	cfg.threads = 2;
	cfg.fast_password_hashing = 1;
	cfg.web_dir[0] = 0;
	cfg.signup_rate = cfg.login_rate = 0;
	cfg.work_rate = cfg.read_rate = 0;
	cfg.strangers_per_day = 0;
	if (!(srv = server_start(&cfg)) || !(other = store_open(where)))
		return -1;
	port = server_port(srv);
	return 0;
}

static int stop(void **state)
{
	(void)state;
	store_close(other);
	server_stop(srv);
	hx_drop_store(where);
	return 0;
}

/* Stores a message from `from` in conv as another node's writer would,
 * without telling this node: returns it (seq and all) for its frame. */
static store_message_t store_one(int64_t from, int64_t conv, const char *body)
{
	static int n;
	char cmid[32];
	store_op_t op = {0};
	store_message_t m = {0};

	snprintf(cmid, sizeof cmid, "other-node-%d", ++n);
	op.kind = STORE_OP_SEND;
	op.user = from;
	op.device = 1;
	op.conv = conv;
	op.cmid = cmid;
	op.body = body;
	op.body_len = strlen(body);
	op.now_ms = clock_wall_ms();
	op.new_id = (op.now_ms << 22) | n;
	assert_int_equal(store_apply(other, &op, 1), STORE_OK);
	assert_int_equal(op.status, STORE_OK);
	m.conv = conv;
	m.id = op.out_id;
	m.seq = op.out_seq;
	m.from = from;
	m.ts = op.out_ts;
	m.cmid = strdup(cmid);
	m.body = strdup(body);
	m.body_len = strlen(body);
	store_op_release(&op);
	return m;
}

/* Hands m's frame to this node's bus for user, as another node's publish. */
static void publish(int64_t user, const store_message_t *m)
{
	sbuf_t *f = frames_msg(m);

	assert_non_null(f);
	bus_deliver(srv->bus, user, 0, f);
	sbuf_unref(f);
}

/* The next msg frame's seq (other frames skipped), or -1 when none comes
 * within ms. */
static int64_t next_seq(pc_conn_t *c, int ms)
{
	for (;;) {
		json_t *j = hx_recv_within(c, ms);
		const char *t;
		int64_t seq;

		if (!j)
			return -1;
		t = json_string_value(json_object_get(j, "type"));
		if (t && strcmp(t, "msg") == 0) {
			seq = json_integer_value(json_object_get(j, "seq"));
			json_decref(j);
			return seq;
		}
		json_decref(j);
	}
}

/* bob resumed the conversation (so the node knows he has all of it), then
 * frames come out of order: 2 before 1, a repeat of 1, 4 before 3. He
 * gets 1, 2, 3, 4, each once. */
static void test_early_frames_wait(void **state)
{
	hx_user_t a, b;
	store_message_t m[4];
	pc_conn_t *bc;
	int64_t conv;
	int i;

	(void)state;
	hx_user(port, "early_a", &a);
	hx_user(port, "early_b", &b);
	conv = hx_direct(port, &a, &b);
	assert_non_null(bc = hx_ws(port, &b));
	hx_sendf(bc, "{\"type\":\"resume\",\"convs\":{\"%lld\":0}}", (long long)conv);
	json_decref(hx_expect(bc, "resumed"));
	for (i = 0; i < 4; i++)
		m[i] = store_one(a.id, conv, "hello");
	publish(b.id, &m[1]);
	publish(b.id, &m[0]);
	publish(b.id, &m[0]);
	publish(b.id, &m[3]);
	publish(b.id, &m[2]);
	for (i = 0; i < 4; i++)
		assert_int_equal(next_seq(bc, HX_TIMEOUT), m[i].seq);
	assert_int_equal(next_seq(bc, 300), -1); /* nothing twice */
	for (i = 0; i < 4; i++)
		store_message_clear(&m[i]);
	pc_close(bc);
}

/* Frames that never come: 2 and 3 are stored but their frames lost; 4
 * comes. After the wait, 2 and 3 are read from the store and 4 follows:
 * bob gets 1, 2, 3, 4. The same for a gap opened before any frame of a
 * conversation bob did not resume but has seen live. */
static void test_lost_frames_are_filled(void **state)
{
	hx_user_t a, b;
	store_message_t m[5];
	pc_conn_t *bc;
	int64_t conv;
	int i;

	(void)state;
	hx_user(port, "lost_a", &a);
	hx_user(port, "lost_b", &b);
	conv = hx_direct(port, &a, &b);
	assert_non_null(bc = hx_ws(port, &b));
	for (i = 0; i < 5; i++)
		m[i] = store_one(a.id, conv, "where did it go");
	publish(b.id, &m[0]);        /* seen live: from here on he has it all */
	assert_int_equal(next_seq(bc, HX_TIMEOUT), m[0].seq);
	publish(b.id, &m[3]);        /* 2 and 3 lost */
	for (i = 1; i < 4; i++)
		assert_int_equal(next_seq(bc, HX_TIMEOUT), m[i].seq);
	publish(b.id, &m[2]);        /* the lost one, very late: not again */
	publish(b.id, &m[4]);
	assert_int_equal(next_seq(bc, HX_TIMEOUT), m[4].seq);
	assert_int_equal(next_seq(bc, 300), -1);
	for (i = 0; i < 5; i++)
		store_message_clear(&m[i]);
	pc_close(bc);
}

/* More frames early than the connection holds (64): the rest are read
 * from the store, and every one arrives once, in order. */
static void test_many_early_frames(void **state)
{
	enum { N = 150 };
	hx_user_t a, b;
	store_message_t *m = calloc(N, sizeof *m);
	pc_conn_t *bc;
	int64_t conv;
	int i;

	(void)state;
	hx_user(port, "many_a", &a);
	hx_user(port, "many_b", &b);
	conv = hx_direct(port, &a, &b);
	assert_non_null(bc = hx_ws(port, &b));
	hx_sendf(bc, "{\"type\":\"resume\",\"convs\":{\"%lld\":0}}", (long long)conv);
	json_decref(hx_expect(bc, "resumed"));
	for (i = 0; i < N; i++)
		m[i] = store_one(a.id, conv, "a flood from far away");
	for (i = 1; i < N; i++)      /* all but the first, which is lost */
		publish(b.id, &m[i]);
	for (i = 0; i < N; i++)
		assert_int_equal(next_seq(bc, HX_TIMEOUT), m[i].seq);
	assert_int_equal(next_seq(bc, 300), -1);
	for (i = 0; i < N; i++)
		store_message_clear(&m[i]);
	free(m);
	pc_close(bc);
}

/* The connection's own send: its ack, not a msg frame, tells it, and its
 * range moves past it, so the next frame (another node's) is no gap and
 * its own message is never read back to it. */
static void test_own_send_is_no_gap(void **state)
{
	hx_user_t a, b;
	store_message_t m;
	pc_conn_t *bc;
	int64_t conv, mine;

	(void)state;
	hx_user(port, "own_a", &a);
	hx_user(port, "own_b", &b);
	conv = hx_direct(port, &a, &b);
	assert_non_null(bc = hx_ws(port, &b));
	hx_sendf(bc, "{\"type\":\"resume\",\"convs\":{\"%lld\":0}}", (long long)conv);
	json_decref(hx_expect(bc, "resumed"));
	mine = hx_say(bc, conv, "my own words");
	m = store_one(a.id, conv, "an answer from far away");
	assert_int_equal(m.seq, mine + 1);
	publish(b.id, &m);
	assert_int_equal(next_seq(bc, HX_TIMEOUT), m.seq);
	assert_int_equal(next_seq(bc, 1500), -1); /* past the gap wait: nothing read back */
	store_message_clear(&m);
	pc_close(bc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_early_frames_wait),
		cmocka_unit_test(test_lost_frames_are_filled),
		cmocka_unit_test(test_many_early_frames),
		cmocka_unit_test(test_own_send_is_no_gap),
	};

	hx_filter();
	return cmocka_run_group_tests(tests, start, stop);
}
