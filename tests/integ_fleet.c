/* integ_fleet.c - two real `parley serve` nodes on one PostgreSQL
 * database and one Redis (tests/redisserver.h): alice on node 1, bob on
 * node 2. A message from alice reaches bob live, with its ticks (the ack
 * to alice, the msg to bob, bob's receipt back to alice), both ways;
 * alice, watching bob from node 1, sees him online, away and offline on
 * node 2; a group with members on both nodes gets every message once
 * and in order; a third node with a live node's id is refused; a node
 * killed with SIGKILL takes its users offline within seconds; the cap of
 * connections per user (3 here) counts both nodes', failed logins
 * on either node count towards the backoff on both, and one address's
 * sign-ups spend one budget across both. The store is
 * always PostgreSQL here, whatever $PARLEY_TEST_STORE says: one SQLite
 * directory cannot be shared by two nodes. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "budget.h"
#include "spends.h"
#include "loop.h"
#include "redisserver.h"

static redisserver_t *rs;
static hx_server_t n1, n2;

/* Both nodes, with the options of extra too (NULL-terminated, at most 6;
 * NULL: none). */
static int start_pair(const char *const *extra)
{
	const char *a1[20] = {"--redis", NULL, "--node-id", "1", "--fast-password-hashing", "--presence-grace", "500",
	                      "--max-user-connections", "3"};
	const char *a2[20] = {"--redis", NULL, "--node-id", "2", "--fast-password-hashing", "--presence-grace", "500",
	                      "--max-user-connections", "3"};
	int i;

	for (i = 0; extra && extra[i] && i < 6; i++)
		a1[9 + i] = a2[9 + i] = extra[i];
	if (!rs && !(rs = redisserver_start()))
		return -1;
	a1[1] = a2[1] = redisserver_url(rs);
	if (hx_start(&n1, NULL, a1) < 0)
		return -1;
	/* The second node on the first one's database. */
	if (hx_start(&n2, n1.store, a2) < 0)
		return -1;
	return 0;
}

static int setup(void **state)
{
	(void)state;
	return start_pair(NULL);
}

static int teardown(void **state)
{
	(void)state;
	if (n2.pid > 0) /* not when the test killed it */
		hx_finish(&n2);
	hx_finish(&n1);
	return 0;
}

static void test_chat_across_nodes(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	json_t *ack, *msg, *j;
	int64_t conv;

	(void)state;
	hx_user(n1.port, "alice", &a);
	hx_user(n2.port, "bob", &b);
	conv = hx_direct(n1.port, &a, &b);
	ca = hx_ws(n1.port, &a);
	cb = hx_ws(n2.port, &b);

	hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"f1\",\"body\":\"across\"}", (long long)conv);
	ack = hx_expect(ca, "ack");
	assert_string_equal(hx_str(ack, "cmid"), "f1");
	msg = hx_expect(cb, "msg");
	assert_int_equal(hx_int(msg, "conv"), conv);
	assert_int_equal(hx_int(msg, "seq"), hx_int(ack, "seq"));
	assert_int_equal(hx_int(msg, "from"), a.id);
	assert_string_equal(hx_str(msg, "body"), "across");
	assert_string_equal(hx_str(msg, "id"), hx_str(ack, "id"));
	/* Bob's tick goes back to alice's node. */
	hx_sendf(cb, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"delivered\",\"seq\":%lld}", (long long)conv,
	         (long long)hx_int(msg, "seq"));
	j = hx_expect(ca, "receipt");
	assert_int_equal(hx_int(j, "user"), b.id);
	assert_string_equal(hx_str(j, "state"), "delivered");
	assert_int_equal(hx_int(j, "seq"), hx_int(msg, "seq"));
	json_decref(j);
	json_decref(ack);
	json_decref(msg);
	/* They crossed as envelopes: the msg to node 2, the receipt to
	 * node 1; none was malformed. */
	assert_true(hx_metric(&n1, "parley_bus_publishes_total") >= 1);
	assert_true(hx_metric(&n2, "parley_bus_received_total") >= 1);
	assert_true(hx_metric(&n2, "parley_bus_publishes_total") >= 1);
	assert_int_equal((int)hx_metric(&n1, "parley_bus_malformed_total"), 0);

	/* And back the other way. */
	hx_sendf(cb, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"f2\",\"body\":\"back\"}", (long long)conv);
	json_decref(hx_expect(cb, "ack"));
	msg = hx_expect(ca, "msg");
	assert_int_equal(hx_int(msg, "from"), b.id);
	assert_string_equal(hx_str(msg, "body"), "back");
	json_decref(msg);
	pc_close(ca);
	pc_close(cb);
}

/* The next presence frame on c. A message bob sent just before alice
 * connected may still be crossing the bus and reach her live first:
 * that is delivery working, so "msg" frames are passed over. */
static json_t *expect_presence(pc_conn_t *c, int64_t user, const char *st)
{
	json_t *j;

	for (;;) {
		j = hx_recv(c);
		if (strcmp(hx_str(j, "type"), "msg") != 0)
			break;
		json_decref(j);
	}
	assert_string_equal(hx_str(j, "type"), "presence");

	assert_int_equal(hx_int(j, "user"), user);
	assert_string_equal(hx_str(j, "state"), st);
	return j;
}

static void test_presence_across_nodes(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	int64_t conv;

	(void)state;
	hx_user(n1.port, "pa", &a);
	hx_user(n2.port, "pb", &b);
	conv = hx_direct(n2.port, &b, &a);
	cb = hx_ws(n2.port, &b);
	hx_say(cb, conv, "hi alice"); /* bob wrote to alice: she may watch him */
	ca = hx_ws(n1.port, &a);
	hx_sendf(ca, "{\"type\":\"watch\",\"users\":[%lld]}", (long long)b.id);
	json_decref(expect_presence(ca, b.id, "online"));
	hx_sendf(cb, "{\"type\":\"presence\",\"state\":\"away\"}");
	json_decref(expect_presence(ca, b.id, "away"));
	pc_close(cb);
	json_decref(expect_presence(ca, b.id, "offline"));
	pc_close(ca);
}

/* A WebSocket for u on port: 0 and *out on 101, else the refusal's
 * status. */
static int ws_try(int port, const hx_user_t *u, pc_conn_t **out)
{
	pc_conn_t *c = pc_connect("127.0.0.1", port);
	pc_response_t res = {0};
	int st;

	assert_non_null(c);
	if (pc_ws_open(c, "/chat/v1/ws", u->token, &res, HX_TIMEOUT) == 0) {
		*out = c;
		return 0;
	}
	st = res.status;
	if (st == 429)
		assert_non_null(strstr(res.body, "\"rate_limited\""));
	pc_response_free(&res);
	pc_close(c);
	*out = NULL;
	return st;
}

/* Waits (a few seconds at most) until a WebSocket for u on port is
 * refused 429; one admitted meanwhile, while the other node's count is
 * still on its way (the documented overshoot), is closed and tried
 * again. Returns 429 or the last status. */
static int refused_soon(int port, const hx_user_t *u)
{
	int64_t end = clock_mono_ms() + 5000;
	pc_conn_t *c;
	int st;

	while ((st = ws_try(port, u, &c)) == 0 && clock_mono_ms() < end) {
		pc_close(c);
		usleep(50000);
	}
	if (c)
		pc_close(c);
	return st;
}

/* Waits until a WebSocket for u on port is admitted; returns it. */
static pc_conn_t *admitted_soon(int port, const hx_user_t *u)
{
	int64_t end = clock_mono_ms() + 5000;
	pc_conn_t *c;

	while (ws_try(port, u, &c) == 429 && clock_mono_ms() < end)
		usleep(50000);
	return c;
}

/* Cap 3 per user across the fleet: two on node 1 and one on node 2 fill
 * it; a fourth is refused 429 on either node; after a close there is
 * room again. */
static void test_connection_cap_across_nodes(void **state)
{
	hx_user_t u, u2;
	pc_conn_t *c[3], *more;
	json_t *j;

	(void)state;
	hx_user(n1.port, "capf", &u);
	hx_login(n2.port, &u, &u2); /* a second device counts too */
	c[0] = hx_ws(n1.port, &u);
	c[1] = hx_ws(n1.port, &u2);
	c[2] = hx_ws(n2.port, &u);
	assert_int_equal(refused_soon(n1.port, &u), 429);
	assert_int_equal(refused_soon(n2.port, &u2), 429);
	assert_true(hx_metric(&n1, "parley_bus_cap_refused_elsewhere_total") >= 1);
	assert_true(hx_metric(&n2, "parley_bus_cap_refused_elsewhere_total") >= 1);
	/* The open ones still work. */
	hx_sendf(c[2], "{\"type\":\"ping\",\"ref\":1}");
	json_decref(hx_expect(c[2], "pong"));
	/* Node 2's one closes: node 1 admits a third of its own, and then
	 * the cap is full again on both. */
	pc_close(c[2]);
	more = admitted_soon(n1.port, &u);
	assert_non_null(more);
	j = hx_expect(more, "ready");
	json_decref(j);
	assert_int_equal(refused_soon(n1.port, &u2), 429);
	pc_close(more);
	pc_close(c[0]);
	pc_close(c[1]);
}

static int login(int port, const hx_user_t *u, const char *password)
{
	char body[192];
	json_t *j;
	int st;

	snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"%s\"}", u->name, password);
	j = hx_http(port, "POST", "/api/v1/sessions", NULL, body, &st);
	json_decref(j);
	return st;
}

/* Waits until the node has heard at least want notes from the other. */
static void notes_wait(const hx_server_t *n, double want)
{
	int64_t end = clock_mono_ms() + 5000;

	while (hx_metric(n, "parley_bus_notes_heard_total") < want && clock_mono_ms() < end)
		usleep(10000);
	assert_true(hx_metric(n, "parley_bus_notes_heard_total") >= want);
}

/* Failed logins count on every node: 6 wrong passwords, 3 on each node
 * (5 are free per name and address), and the right password then waits
 * on both; alone, each node would have let it in. */
static void test_login_backoff_across_nodes(void **state)
{
	hx_user_t u;
	double h1, h2;
	int i;

	(void)state;
	hx_user(n1.port, "guessed", &u);
	h1 = hx_metric(&n1, "parley_bus_notes_heard_total");
	h2 = hx_metric(&n2, "parley_bus_notes_heard_total");
	for (i = 0; i < 6; i++)
		assert_int_equal(login(i % 2 ? n2.port : n1.port, &u, "wrong guess"), 401);
	notes_wait(&n1, h1 + 3);
	notes_wait(&n2, h2 + 3);
	/* The sixth failure made the name wait 1 s from this address. */
	assert_int_equal(login(n1.port, &u, HX_PASSWORD), 429);
	assert_int_equal(login(n2.port, &u, HX_PASSWORD), 429);
	assert_true(hx_metric(&n1, "parley_bus_notes_sent_total") >= 3);
	assert_int_equal((int)hx_metric(&n1, "parley_bus_notes_dropped_total"), 0);
}

/* Sign-ups per address are shared by the fleet: 20 an hour (the default)
 * from one address, spread over both nodes, gets 20, not 20 on each.
 * Paced past the share interval and waiting for each node to hear the
 * other's notes, so the count is exact; unpaced, the fleet admits at
 * most an interval's unshared spends more (budget.h). */
static void test_signup_budget_across_nodes(void **state)
{
	char body[192];
	int i, st, admitted = 0, refused = 0;

	(void)state;
	/* The harness turns the budget off; back on, at its default. */
	hx_finish(&n2);
	hx_finish(&n1);
	{
		static const char *const extra[] = {"--signup-rate", "20", NULL};
		assert_int_equal(start_pair(extra), 0);
	}
	for (i = 0; i < 30; i++) {
		const hx_server_t *at = i % 2 ? &n2 : &n1, *other = i % 2 ? &n1 : &n2;
		double sent0 = hx_metric(at, "parley_bus_notes_sent_total");
		double heard0 = hx_metric(other, "parley_bus_notes_heard_total");
		int64_t end;
		json_t *j;

		snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"" HX_PASSWORD "\"}",
		         hx_name("spread"));
		j = hx_http(at->port, "POST", "/api/v1/users", NULL, body, &st);
		json_decref(j);
		if (st == 201)
			admitted++;
		else if (st == 429)
			refused++;
		usleep((SPENDS_EVERY_MS + 50) * 1000);
		end = clock_mono_ms() + 5000;
		while (hx_metric(other, "parley_bus_notes_heard_total") - heard0 <
		               hx_metric(at, "parley_bus_notes_sent_total") - sent0 &&
		       clock_mono_ms() < end)
			usleep(10000);
	}
	assert_int_equal(admitted, 20);
	assert_int_equal(refused, 10);
	assert_int_equal((int)hx_metric(&n1, "parley_bus_notes_dropped_total"), 0);
	assert_int_equal((int)hx_metric(&n2, "parley_bus_notes_dropped_total"), 0);
}

/* Waits until the node has heard as many notes from the other as that
 * one has sent since the counts given (both read before). */
static void notes_caught_up(const hx_server_t *from, double sent0, const hx_server_t *to, double heard0)
{
	int64_t end = clock_mono_ms() + 5000;

	while (hx_metric(to, "parley_bus_notes_heard_total") - heard0 <
	               hx_metric(from, "parley_bus_notes_sent_total") - sent0 &&
	       clock_mono_ms() < end)
		usleep(10000);
}

/* The reply to a send with cmid: 1 acked, 0 refused over budget. */
static int send_outcome(pc_conn_t *c, int64_t conv, const char *cmid)
{
	hx_sendf(c, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"%s\",\"body\":\"spend\"}", (long long)conv, cmid);
	for (;;) {
		json_t *j = hx_recv(c);
		const char *t = hx_str(j, "type");
		int r = -1;
		if (!strcmp(t, "ack"))
			r = 1;
		else if (!strcmp(t, "error"))
			r = strcmp(hx_str(j, "code"), "rate_limited") == 0 ? 0 : -1;
		if (r >= 0 || !strcmp(t, "error")) {
			assert_true(r >= 0);
			json_decref(j);
			return r;
		}
		json_decref(j);
	}
}

/* A sender connected to both nodes (as when a client reaches nodes
 * directly, or moves mid-failover) spends one budget across them: 10
 * recipients at once, barely refilling, over both nodes, admits 10
 * messages, not 10 on each. Paced as the sign-up test is. */
static void test_sender_budget_across_nodes(void **state)
{
	static const char *const extra[] = {"--rate-limit", "0.001", "--rate-burst", "10", NULL};
	hx_user_t a, a2, b;
	pc_conn_t *c1, *c2;
	int64_t conv, end;
	int i, acked = 0, refused = 0;

	(void)state;
	hx_finish(&n2);
	hx_finish(&n1);
	assert_int_equal(start_pair(extra), 0);
	hx_user(n1.port, "spender", &a);
	hx_login(n2.port, &a, &a2);
	hx_user(n1.port, "spent_on", &b);
	conv = hx_direct(n1.port, &a, &b);
	c1 = hx_ws(n1.port, &a);
	c2 = hx_ws(n2.port, &a2);
	end = clock_mono_ms() + 5000;
	while ((hx_metric(&n1, "parley_bus_users_elsewhere") < 1 || hx_metric(&n2, "parley_bus_users_elsewhere") < 1) &&
	       clock_mono_ms() < end)
		usleep(10000);
	assert_true(hx_metric(&n1, "parley_bus_users_elsewhere") >= 1);
	assert_true(hx_metric(&n2, "parley_bus_users_elsewhere") >= 1);
	for (i = 0; i < 20; i++) {
		const hx_server_t *at = i % 2 ? &n2 : &n1, *other = i % 2 ? &n1 : &n2;
		double sent0 = hx_metric(at, "parley_bus_notes_sent_total");
		double heard0 = hx_metric(other, "parley_bus_notes_heard_total");
		char cmid[16];
		snprintf(cmid, sizeof cmid, "s%d", i);
		if (send_outcome(i % 2 ? c2 : c1, conv, cmid))
			acked++;
		else
			refused++;
		usleep((SPENDS_EVERY_MS + 50) * 1000);
		notes_caught_up(at, sent0, other, heard0);
	}
	assert_int_equal(acked, 10);
	assert_int_equal(refused, 10);
	pc_close(c1);
	pc_close(c2);
}

static void test_duplicate_node_id(void **state)
{
	const char *a3[] = {"--redis", redisserver_url(rs), "--node-id", "1", NULL};
	hx_server_t n3 = {0};

	(void)state;
	assert_int_equal(hx_start(&n3, n1.store, a3), -1);
}

/* A group with members on both nodes: every member's connection gets
 * each message once, in seq order, whichever node holds it. */
static void test_group_across_nodes(void **state)
{
	enum { MEMBERS = 6, MSGS = 5 };
	hx_user_t owner, m[MEMBERS];
	pc_conn_t *co, *cm[MEMBERS];
	char body[512];
	size_t len;
	json_t *j;
	int64_t conv;
	int st, i, k;

	(void)state;
	hx_user(n1.port, "gown", &owner);
	len = (size_t)snprintf(body, sizeof body, "{\"title\":\"fleet\",\"members\":[");
	for (i = 0; i < MEMBERS; i++) {
		hx_user(i % 2 ? n2.port : n1.port, "gm", &m[i]);
		len += (size_t)snprintf(body + len, sizeof body - len, "%s%lld", i ? "," : "", (long long)m[i].id);
	}
	snprintf(body + len, sizeof body - len, "]}");
	j = hx_http(n1.port, "POST", "/api/v1/conversations", owner.token, body, &st);
	assert_int_equal(st, 201);
	conv = hx_int(j, "conversation_id");
	json_decref(j);
	co = hx_ws(n1.port, &owner);
	for (i = 0; i < MEMBERS; i++)
		cm[i] = hx_ws(i % 2 ? n2.port : n1.port, &m[i]);
	for (k = 1; k <= MSGS; k++) {
		char cmid[16];
		snprintf(cmid, sizeof cmid, "g%d", k);
		hx_sendf(co, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"%s\",\"body\":\"n%d\"}", (long long)conv,
		         cmid, k);
		json_decref(hx_expect(co, "ack"));
	}
	for (i = 0; i < MEMBERS; i++) {
		for (k = 1; k <= MSGS; k++) {
			j = hx_next_msg(cm[i], HX_TIMEOUT);
			assert_non_null(j);
			assert_int_equal(hx_int(j, "conv"), conv);
			assert_int_equal(hx_int(j, "seq"), k);
			json_decref(j);
		}
		assert_null(hx_next_msg(cm[i], 200)); /* none twice */
		pc_close(cm[i]);
	}
	pc_close(co);
}

/* kill -9 of bob's node: alice, watching from node 1, sees him offline
 * once node 1 finds node 2 silent (3 heartbeats of 1 s) and the presence
 * grace has passed. */
static void test_node_killed(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	json_t *j;
	int64_t conv, t0;

	(void)state;
	hx_user(n1.port, "ka", &a);
	hx_user(n2.port, "kb", &b);
	conv = hx_direct(n2.port, &b, &a);
	cb = hx_ws(n2.port, &b);
	hx_say(cb, conv, "about to go");
	ca = hx_ws(n1.port, &a);
	hx_sendf(ca, "{\"type\":\"watch\",\"users\":[%lld]}", (long long)b.id);
	json_decref(expect_presence(ca, b.id, "online"));
	t0 = clock_mono_ms();
	assert_int_equal(hx_stop(&n2, SIGKILL), 128 + SIGKILL);
	j = expect_presence(ca, b.id, "offline");
	print_message("bob offline on node 1 %lld ms after node 2 was killed\n", (long long)(clock_mono_ms() - t0));
	json_decref(j);
	pc_close(cb);
	pc_close(ca);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_chat_across_nodes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_presence_across_nodes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_across_nodes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_cap_across_nodes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_login_backoff_across_nodes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signup_budget_across_nodes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sender_budget_across_nodes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_node_id, setup, teardown),
		/* Last: node 2's id stays claimed for 5 s after its kill. */
		cmocka_unit_test_setup_teardown(test_node_killed, setup, teardown),
	};
	int failed;

	setenv("PARLEY_TEST_STORE", "postgresql", 1);
	hx_filter();
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	redisserver_stop(rs);
	return failed;
}
