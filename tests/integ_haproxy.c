/* integ_haproxy.c - two nodes on one PostgreSQL database behind the
 * deployment's own HAProxy configuration (deploy/haproxy.cfg, run by
 * tests/haproxyserver.h): all of a user's WebSockets reach one node; a
 * drained node takes no new ones while its open ones stay; when a node is
 * killed its users are back at once on the other node, which serves what
 * they had from the shared store, and nobody else moves. Every server is
 * real and started here: PostgreSQL, the two nodes, HAProxy. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "harness.h"
#include "haproxyserver.h"
#include "pclient.h"
#include "pgserver.h"

#define USERS_MAX 40
#define PER_NODE 3      /* users wanted on each node */

static pgserver_t *pg;
static hx_server_t node[2];
static haproxyserver_t *lb;
static int lb_port;

typedef struct placed {
	hx_user_t u;
	int on;              /* the node (0 or 1) its sockets reached */
	pc_conn_t *ws[2];
} placed_t;

static placed_t users[USERS_MAX];
static int nusers;

static double sockets_on(int i)
{
	return hx_metric(&node[i], "parley_websockets");
}

/* A WebSocket for u through the balancer, routed by ?user=; NULL when it
 * could not be opened (status, when not NULL, says why). */
static pc_conn_t *lb_ws(const hx_user_t *u, int *status)
{
	pc_conn_t *c = pc_connect("127.0.0.1", lb_port);
	pc_response_t res = {0};
	char path[64];
	json_t *j;

	assert_non_null(c);
	snprintf(path, sizeof path, "/chat/v1/ws?user=%lld", (long long)u->id);
	if (pc_ws_open(c, path, u->token, &res, HX_TIMEOUT) != 0) {
		if (status)
			*status = res.status;
		pc_response_free(&res);
		pc_close(c);
		return NULL;
	}
	pc_response_free(&res);
	j = hx_expect(c, "ready");
	assert_int_equal(hx_int(j, "user_id"), u->id);
	json_decref(j);
	return c;
}

/* Which node a new socket of u reaches: the one whose count of sockets
 * rose. */
static int open_and_place(const hx_user_t *u, pc_conn_t **ws)
{
	double before[2] = {sockets_on(0), sockets_on(1)}, after[2];

	assert_non_null(*ws = lb_ws(u, NULL));
	after[0] = sockets_on(0);
	after[1] = sockets_on(1);
	assert_true((after[0] == before[0] + 1) != (after[1] == before[1] + 1));
	return after[1] == before[1] + 1;
}

static int teardown(void **state);

/* cmocka skips the group's teardown when its setup fails: a failed setup
 * stops what it started itself. */
static int setup(void **state)
{
	char url[256];
	const char *n1[] = {"--node-id", "1", NULL}, *n2[] = {"--node-id", "2", NULL};
	int ports[2];

	if (!(pg = pgserver_start()) || pgserver_create_db(pg, NULL, url, sizeof url) < 0 ||
	    hx_start(&node[0], url, n1) < 0 || hx_start(&node[1], url, n2) < 0)
		goto err;
	ports[0] = node[0].port;
	ports[1] = node[1].port;
	if (!(lb = haproxyserver_start(ports, 2)))
		goto err;
	lb_port = haproxyserver_port(lb);
	return 0;
err:
	teardown(state);
	return -1;
}

static int teardown(void **state)
{
	int i, k;

	(void)state;
	for (i = 0; i < nusers; i++)
		for (k = 0; k < 2; k++)
			pc_close(users[i].ws[k]);
	haproxyserver_stop(lb);
	hx_kill(&node[0]);
	hx_kill(&node[1]);
	pgserver_stop(pg);
	return 0;
}

/* Users sign up and log in through the balancer (any node: one store);
 * each user's two sockets, opened one after the other, reach the same
 * node, and users land on both nodes. */
static void test_sticky_by_user(void **state)
{
	int count[2] = {0, 0}, status = 0;

	(void)state;
	json_decref(hx_http(lb_port, "GET", "/healthz", NULL, NULL, &status));
	assert_int_equal(status, 200);
	while ((count[0] < PER_NODE || count[1] < PER_NODE) && nusers < USERS_MAX) {
		placed_t *p = &users[nusers++];
		hx_user(lb_port, "lb", &p->u);
		p->on = open_and_place(&p->u, &p->ws[0]);
		assert_int_equal(open_and_place(&p->u, &p->ws[1]), p->on);
		count[p->on]++;
	}
	printf("# %d users: %d on node 1, %d on node 2\n", nusers, count[0], count[1]);
	assert_true(count[0] >= PER_NODE && count[1] >= PER_NODE);
}

static placed_t *first_on(int n, int skip)
{
	int i;

	for (i = 0; i < nusers; i++)
		if (users[i].on == n && skip-- == 0)
			return &users[i];
	fail_msg("no user on node %d", n + 1);
	return NULL;
}

/* Two users of one node chat through the balancer live; a message to a
 * user of the other node is acked by its sender's node and found by the
 * recipient's node in the shared store, by resume. */
static void test_chat_across_nodes(void **state)
{
	placed_t *a = first_on(0, 0), *b = first_on(0, 1), *c = first_on(1, 0);
	int64_t ab, ac, seq;
	json_t *j;

	(void)state;
	ab = hx_direct(lb_port, &a->u, &b->u);
	seq = hx_say(a->ws[0], ab, "same node");
	j = hx_expect(b->ws[0], "msg");
	assert_int_equal(hx_int(j, "seq"), seq);
	assert_string_equal(hx_str(j, "body"), "same node");
	json_decref(j);

	ac = hx_direct(lb_port, &a->u, &c->u);
	seq = hx_say(a->ws[0], ac, "other node");
	hx_sendf(c->ws[0], "{\"type\":\"resume\",\"convs\":{\"%lld\":0}}", (long long)ac);
	j = hx_expect(c->ws[0], "msg");
	assert_int_equal(hx_int(j, "seq"), seq);
	assert_string_equal(hx_str(j, "body"), "other node");
	json_decref(j);
	json_decref(hx_expect(c->ws[0], "resumed"));
}

/* Drained through the runtime API, a node gets no new sockets (its users'
 * new ones go to the other node) while those it holds stay open; back to
 * ready, its users' new sockets reach it again. */
static void test_drain(void **state)
{
	placed_t *p = first_on(0, 0);
	pc_conn_t *moved, *back;
	char out[256];
	json_t *j;

	(void)state;
	assert_int_equal(haproxyserver_command(lb, "set server parley/n1 state drain", out, sizeof out), 0);
	assert_int_equal(haproxyserver_wait_node(lb, 1, 2, HX_TIMEOUT), 0);
	assert_int_equal(open_and_place(&p->u, &moved), 1);
	hx_sendf(p->ws[0], "{\"type\":\"ping\",\"ref\":7}");
	j = hx_expect(p->ws[0], "pong");
	json_decref(j);
	pc_close(moved);
	assert_int_equal(haproxyserver_command(lb, "set server parley/n1 state ready", out, sizeof out), 0);
	assert_int_equal(haproxyserver_wait_node(lb, 1, 1, HX_TIMEOUT), 0);
	assert_int_equal(open_and_place(&p->u, &back), 0);
	pc_close(back);
}

/* Node 1 is killed (SIGKILL): its users' sockets end; they reconnect at
 * once through the balancer, reach node 2, and resume what node 1 had
 * acked; node 2's users stay where they are. */
static void test_node_killed(void **state)
{
	placed_t *a = first_on(0, 0), *c = first_on(1, 0);
	int64_t ac, seq;
	pc_conn_t *again;
	double before;
	json_t *j;
	int i, k;

	(void)state;
	ac = hx_direct(lb_port, &a->u, &c->u);
	seq = hx_say(a->ws[0], ac, "acked before the kill");
	assert_int_equal(kill(node[0].pid, SIGKILL), 0);
	for (i = 0; i < nusers; i++) {
		if (users[i].on != 0)
			continue;
		for (k = 0; k < 2; k++) {
			hx_expect_close(users[i].ws[k]);
			pc_close(users[i].ws[k]);
			users[i].ws[k] = NULL;
		}
	}
	/* Reconnects come at once, as a client's do: the balancer sends a
	 * connection the dead node refuses to the other node, and marks the
	 * dead one down, before its health checks would have. A connection
	 * that reached the node while it was dying is answered 502; the
	 * client tries again, as clients do, a moment later. */
	before = hx_metric(&node[1], "parley_websockets");
	for (i = 0; i < 20 && !(again = lb_ws(&a->u, &k)); i++) {
		printf("# reconnect %d after the kill: %d\n", i + 1, k);
		usleep(100 * 1000);
	}
	assert_non_null(again);
	assert_true(hx_metric(&node[1], "parley_websockets") == before + 1);
	hx_sendf(again, "{\"type\":\"resume\",\"convs\":{\"%lld\":%lld}}", (long long)ac, (long long)seq - 1);
	j = hx_expect(again, "msg");
	assert_int_equal(hx_int(j, "seq"), seq);
	json_decref(j);
	json_decref(hx_expect(again, "resumed"));
	pc_close(again);
	/* Node 2 counts that socket gone before the count below is taken
	 * (the close reaches it a moment later). */
	for (i = 0; i < 200 && hx_metric(&node[1], "parley_websockets") != before; i++)
		usleep(10 * 1000);
	assert_true(hx_metric(&node[1], "parley_websockets") == before);
	/* Once the checks have taken node 1 out, node 2's users still reach
	 * node 2 and their open sockets never moved. */
	assert_int_equal(haproxyserver_wait_node(lb, 1, 0, 4 * HX_TIMEOUT), 0);
	before = hx_metric(&node[1], "parley_websockets");
	assert_non_null(again = lb_ws(&c->u, NULL));
	assert_true(hx_metric(&node[1], "parley_websockets") == before + 1);
	pc_close(again);
	hx_sendf(c->ws[1], "{\"type\":\"ping\",\"ref\":8}");
	json_decref(hx_expect(c->ws[1], "pong"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sticky_by_user),
		cmocka_unit_test(test_chat_across_nodes),
		cmocka_unit_test(test_drain),
		cmocka_unit_test(test_node_killed),
	};

	hx_filter();
	return cmocka_run_group_tests(tests, setup, teardown);
}
