/* integ_dispatch.c - fan-out behind the log, end to end: three real
 * `parley serve` nodes on one PostgreSQL, one Redis and a three-server
 * JetStream cluster, every server started here.
 *
 * Pinned: a message reaches a user on another node through the log's
 * dispatchers, with one publish per target node; a node killed with
 * SIGKILL right after its acks has those messages reach the online
 * recipients on the other nodes anyway, live, each once and in order
 * (another node's sweep publishes what it had not, the dispatcher of the
 * partition delivers it); and a 1,024-member group spread over the three
 * nodes, with senders on all three, gets every message to every member's
 * connection once, in seq order. The store is always PostgreSQL here,
 * whatever $PARLEY_TEST_STORE says. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loop.h"
#include "natsserver.h"
#include "redisserver.h"

#define NODES 3

static natscluster_t *nc;
static redisserver_t *rs;
static hx_server_t node[NODES];
static char store[256];

/* Each test's nodes use a log of their own, so that no dispatcher takes
 * up an earlier test's events (of conversations in another database). */
static void start_nodes(const char *log_name)
{
	/* Fresh ids per test: a killed node's id stays claimed for seconds. */
	static int next_id = 1;
	char ids[NODES][8];
	int i;

	assert_int_equal(hx_fresh_store(store, sizeof store), 0);
	for (i = 0; i < NODES; i++) {
		snprintf(ids[i], sizeof ids[i], "%d", next_id++);
		const char *args[] = {"--nats", natscluster_urls(nc), "--nats-log", log_name, "--redis",
		                      redisserver_url(rs), "--node-id", ids[i], "--fast-password-hashing",
		                      /* A dead node found in 1.5 s: its partitions move sooner. */
		                      "--heartbeat-ms", "500", NULL};
		assert_int_equal(hx_start(&node[i], store, args), 0);
	}
	/* Every node has heard the others' heartbeats (a beat a second) and
	 * the partitions are shared out. */
	for (i = 0; i < 200; i++) {
		double held = 0;
		for (int k = 0; k < NODES; k++)
			held += hx_metric(&node[k], "parley_dispatch_partitions");
		if (held == 16 && hx_metric(&node[0], "parley_dispatch_partitions") < 16 &&
		    hx_metric(&node[1], "parley_dispatch_partitions") < 16)
			return;
		usleep(50 * 1000);
	}
	fail_msg("the nodes did not share the log's partitions out");
}

static double sum_metric(const char *name)
{
	double v = 0;
	int i;

	for (i = 0; i < NODES; i++)
		if (node[i].pid > 0)
			v += hx_metric(&node[i], name);
	return v;
}

static int setup(void **state)
{
	(void)state;
	if (!(rs = redisserver_start()))
		return -1;
	if (!(nc = natscluster_start(3))) {
		redisserver_stop(rs);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	natscluster_stop(nc);
	redisserver_stop(rs);
	return 0;
}

static int stop_nodes(void **state)
{
	int i;

	(void)state;
	for (i = 0; i < NODES; i++)
		hx_kill(&node[i]);
	if (store[0])
		hx_drop_store(store);
	store[0] = 0;
	return 0;
}

/* What clients do on connecting: say what they have of conv (nothing
 * yet). The connection's range of conv starts there, so a message that
 * reaches it late (from another node, or again from the log) takes its
 * place or is read from the store; without it the range would start at
 * whichever message came first. The replay reads the store once the
 * registry has the connection, so nothing committed after falls between. */
static void resume_from_start(pc_conn_t *c, int64_t conv)
{
	hx_sendf(c, "{\"type\":\"resume\",\"convs\":{\"%lld\":0}}", (long long)conv);
	json_decref(hx_expect(c, "resumed"));
}

/* alice on node 1, bob on node 2: bob's messages come from the log's
 * dispatcher of the conversation's partition, which delivers to its own
 * node's connections itself and publishes one frame per other target
 * node: here N publishes (to node 2) if it runs on node 1 or 3, none if
 * on node 2; node 1 reached alice's own connections itself. */
static void test_across_nodes_through_the_log(void **state)
{
	enum { N = 20 };
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	double pub0, disp0[NODES];
	int64_t conv;
	char body[32];
	json_t *j;
	int i, by = -1;

	(void)state;
	start_nodes("DS_ACROSS");
	hx_user(node[0].port, "da", &a);
	hx_user(node[1].port, "db", &b);
	conv = hx_direct(node[0].port, &a, &b);
	ca = hx_ws(node[0].port, &a);
	cb = hx_ws(node[1].port, &b);
	resume_from_start(cb, conv);
	pub0 = sum_metric("parley_bus_publishes_total");
	for (i = 0; i < NODES; i++)
		disp0[i] = hx_metric(&node[i], "parley_dispatch_messages_total");
	for (i = 1; i <= N; i++) {
		snprintf(body, sizeof body, "across %d", i);
		assert_int_equal(hx_say(ca, conv, body), i);
	}
	for (i = 1; i <= N; i++) {
		assert_non_null(j = hx_next_msg(cb, HX_TIMEOUT));
		assert_int_equal(hx_int(j, "seq"), i);
		json_decref(j);
	}
	assert_null(hx_next_msg(cb, 300)); /* none twice */
	/* One dispatcher did it all: the partition's. */
	for (i = 0; i < NODES; i++) {
		double d = hx_metric(&node[i], "parley_dispatch_messages_total") - disp0[i];
		if (d == 0)
			continue;
		assert_int_equal(d, N);
		assert_int_equal(by, -1);
		by = i;
	}
	assert_true(by >= 0);
	assert_int_equal(sum_metric("parley_bus_publishes_total") - pub0, by == 1 ? 0 : N);
	printf("# dispatched by node %d, %g publishes for %d messages\n", by + 1,
	       sum_metric("parley_bus_publishes_total") - pub0, N);
	/* Events and replies keep what they are on the way: kind, target,
	 * reply_to (the log's envelope is the MESSAGE with its additions). */
	hx_sendf(ca, "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"de-1\",\"seq\":1,\"body\":\"across, edited\"}",
	         (long long)conv);
	hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"de-2\",\"body\":\"a reply\",\"reply_to\":2}",
	         (long long)conv);
	hx_sendf(ca, "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"de-3\",\"seq\":3,\"emoji\":\"\\u2705\"}",
	         (long long)conv);
	assert_non_null(j = hx_next_msg(cb, HX_TIMEOUT));
	assert_int_equal(hx_int(j, "seq"), N + 1);
	assert_string_equal(hx_str(j, "kind"), "edit");
	assert_int_equal(hx_int(j, "target"), 1);
	assert_string_equal(hx_str(j, "body"), "across, edited");
	json_decref(j);
	assert_non_null(j = hx_next_msg(cb, HX_TIMEOUT));
	assert_int_equal(hx_int(j, "seq"), N + 2);
	assert_null(json_object_get(j, "kind"));
	assert_int_equal(hx_int(json_object_get(j, "reply_to"), "seq"), 2);
	json_decref(j);
	assert_non_null(j = hx_next_msg(cb, HX_TIMEOUT));
	assert_int_equal(hx_int(j, "seq"), N + 3);
	assert_string_equal(hx_str(j, "kind"), "reaction");
	assert_string_equal(hx_str(j, "body"), "\xe2\x9c\x85");
	json_decref(j);
	pc_close(ca);
	pc_close(cb);
}

/* Receipts cross nodes through the log too: bob on node 2 reads what
 * alice sent from node 1; alice (node 1) gets each receipt once, and so
 * does bob's second device on node 3, from the dispatcher of the
 * conversation's partition (node 2 reached its own connections only). */
static void test_receipts_through_the_log(void **state)
{
	enum { N = 5 };
	hx_user_t a, b, b2;
	pc_conn_t *ca, *cb, *cb2;
	double disp0 = 0, disp1 = 0;
	int64_t conv;
	json_t *j;
	int i;

	(void)state;
	start_nodes("DS_RECEIPTS");
	hx_user(node[0].port, "ra", &a);
	hx_user(node[1].port, "rb", &b);
	hx_login(node[2].port, &b, &b2);
	conv = hx_direct(node[0].port, &a, &b);
	ca = hx_ws(node[0].port, &a);
	cb = hx_ws(node[1].port, &b);
	cb2 = hx_ws(node[2].port, &b2);
	resume_from_start(cb, conv);
	resume_from_start(cb2, conv);
	for (i = 0; i < NODES; i++)
		disp0 += hx_metric(&node[i], "parley_dispatch_receipts_total");
	for (i = 1; i <= N; i++) {
		char body[16];
		snprintf(body, sizeof body, "r%d", i);
		assert_int_equal(hx_say(ca, conv, body), i);
		assert_non_null(j = hx_next_msg(cb, HX_TIMEOUT));
		json_decref(j);
		hx_sendf(cb, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":%d}", (long long)conv, i);
		j = hx_expect(ca, "receipt");
		assert_int_equal(hx_int(j, "user"), b.id);
		assert_string_equal(hx_str(j, "state"), "read");
		assert_int_equal(hx_int(j, "seq"), i);
		json_decref(j);
		/* Bob's other device: the message, then his own receipt. */
		assert_non_null(j = hx_next_msg(cb2, HX_TIMEOUT));
		json_decref(j);
		j = hx_expect(cb2, "receipt");
		assert_int_equal(hx_int(j, "seq"), i);
		json_decref(j);
	}
	/* Once each: nothing more comes. */
	assert_null(hx_recv_within(ca, 300));
	assert_null(hx_recv_within(cb2, 300));
	for (i = 0; i < NODES; i++)
		disp1 += hx_metric(&node[i], "parley_dispatch_receipts_total");
	assert_int_equal(disp1 - disp0, N);
	pc_close(ca);
	pc_close(cb);
	pc_close(cb2);
}

/* alice's node is killed the moment her last send is acked: bob, online
 * on node 2 all along, gets every acked message live, once, in order,
 * without reconnecting. Node 1 may have died before publishing some
 * (the sweep of another node publishes them), or while dispatching some
 * (the partition's next owner gets them again). */
static void test_killed_after_ack_reaches_online(void **state)
{
	enum { N = 30 };
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	int64_t conv, t0;
	char cmid[16];
	json_t *j;
	int i, acked = 0;

	(void)state;
	start_nodes("DS_KILLED");
	hx_user(node[0].port, "ka", &a);
	hx_user(node[1].port, "kb", &b);
	conv = hx_direct(node[0].port, &a, &b);
	ca = hx_ws(node[0].port, &a);
	cb = hx_ws(node[1].port, &b);
	resume_from_start(cb, conv);
	/* All at once, then the acks: the kill lands while the last ones
	 * are between commit and log. */
	for (i = 1; i <= N; i++) {
		snprintf(cmid, sizeof cmid, "k%d", i);
		hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"%s\",\"body\":\"killed %d\"}", (long long)conv,
		         cmid, i);
	}
	while (acked < N) {
		j = hx_recv(ca);
		acked += strcmp(hx_str(j, "type"), "ack") == 0;
		json_decref(j);
	}
	assert_int_equal(kill(node[0].pid, SIGKILL), 0);
	t0 = clock_mono_ms();
	for (i = 1; i <= N; i++) {
		/* The sweep waits 3 s for a row's age; a partition of the dead
		 * node moves once it is 3 beats silent, and what it had fetched
		 * comes again after the log's ack wait. */
		assert_non_null(j = hx_next_msg(cb, 30000));
		assert_int_equal(hx_int(j, "seq"), i);
		json_decref(j);
	}
	printf("# the last of %d messages acked before the kill arrived %lld ms after it\n", N,
	       (long long)(clock_mono_ms() - t0));
	assert_null(hx_next_msg(cb, 500)); /* none twice */
	pc_close(ca);
	pc_close(cb);
}

/* A 1,024-member group, its members spread over the three nodes, a
 * sender on each: every member's connection gets all the messages, each
 * once, in seq order. */
static void test_big_group_over_three_nodes(void **state)
{
	enum { MEMBERS = 1024, PER_SENDER = 4, SENDERS = 3 };
	hx_user_t *m = calloc(MEMBERS, sizeof *m);
	pc_conn_t **c = calloc(MEMBERS, sizeof *c);
	size_t cap = 16 * MEMBERS, len;
	char *body = malloc(cap);
	int64_t conv;
	json_t *j;
	int st, i, k;

	(void)state;
	assert_non_null(m);
	assert_non_null(c);
	assert_non_null(body);
	start_nodes("DS_GROUP");
	for (i = 0; i < MEMBERS; i++)
		hx_user(node[i % NODES].port, "bg", &m[i]);
	len = (size_t)snprintf(body, cap, "{\"title\":\"fleet of 1024\",\"members\":[");
	for (i = 1; i < MEMBERS; i++)
		len += (size_t)snprintf(body + len, cap - len, "%s%lld", i > 1 ? "," : "", (long long)m[i].id);
	snprintf(body + len, cap - len, "]}");
	j = hx_http(node[0].port, "POST", "/api/v1/conversations", m[0].token, body, &st);
	assert_int_equal(st, 201);
	conv = hx_int(j, "conversation_id");
	json_decref(j);
	/* Each connection says what it has (nothing yet), as clients do on
	 * connecting: its range starts there, and a message that arrives
	 * ahead of a lower one (this node's own sender's, before another
	 * node's through the log) waits for it. */
	for (i = 0; i < MEMBERS; i++) {
		assert_non_null(c[i] = hx_ws(node[i % NODES].port, &m[i]));
		hx_sendf(c[i], "{\"type\":\"resume\",\"convs\":{\"%lld\":0}}", (long long)conv);
	}
	for (i = 0; i < MEMBERS; i++)
		json_decref(hx_expect(c[i], "resumed"));
	/* Members 0, 1 and 2 send, on nodes 1, 2 and 3, interleaved. */
	for (k = 0; k < PER_SENDER; k++)
		for (i = 0; i < SENDERS; i++) {
			char cmid[16];
			snprintf(cmid, sizeof cmid, "g%d", k);
			hx_sendf(c[i], "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"%s\",\"body\":\"from %d, %d\"}",
			         (long long)conv, cmid, i, k);
		}
	for (i = 0; i < MEMBERS; i++) {
		int64_t last = 0;
		int got = 0, own = i < SENDERS ? PER_SENDER : 0;
		/* A sender's own messages come back as acks, not msgs. */
		while (got < SENDERS * PER_SENDER - own) {
			j = hx_next_msg(c[i], 3 * HX_TIMEOUT);
			if (!j)
				fail_msg("member %d (node %d): %d of %d messages", i, i % NODES + 1, got,
				         SENDERS * PER_SENDER - own);
			assert_int_equal(hx_int(j, "conv"), conv);
			if (hx_int(j, "seq") <= last)
				fail_msg("member %d: seq %lld after %lld", i, (long long)hx_int(j, "seq"), (long long)last);
			last = hx_int(j, "seq");
			json_decref(j);
			got++;
		}
	}
	for (i = 0; i < MEMBERS; i++) {
		if (i % 97 == 0)
			assert_null(hx_next_msg(c[i], 100)); /* none twice, on a sample */
		pc_close(c[i]);
	}
	free(m);
	free(c);
	free(body);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_across_nodes_through_the_log, stop_nodes),
		cmocka_unit_test_teardown(test_receipts_through_the_log, stop_nodes),
		cmocka_unit_test_teardown(test_killed_after_ack_reaches_online, stop_nodes),
		cmocka_unit_test_teardown(test_big_group_over_three_nodes, stop_nodes),
	};

	setenv("PARLEY_TEST_STORE", "postgresql", 1); /* one store for three nodes */
	hx_filter();
	return cmocka_run_group_tests(tests, setup, teardown);
}
