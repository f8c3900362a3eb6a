/* integ_pushcluster.c - the push service of a fleet, `parley push`, as
 * its own processes beside two real `parley serve` nodes, on one
 * PostgreSQL, one Redis and a JetStream server, every server started
 * here; pushes go to the fake Web Push service (tests/fakes/
 * webpush_service.mjs), which decrypts them.
 *
 * Pinned: two push processes, each on half the log's partitions, wake an
 * offline user once per conversation and leave a user whose devices
 * delivered alone; while the provider hangs on every push, users on two
 * nodes talk as ever (the nodes do not know the push service exists);
 * and a push process killed with SIGKILL, with notifications pending
 * and a message arriving while it is down, comes back to push each of
 * them once, and nothing it had pushed before again. The store is
 * always PostgreSQL here, whatever $PARLEY_TEST_STORE says. */
#include "harness.h"
#include "pushfakes.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "natsserver.h"
#include "redisserver.h"

#define NODES 2
#define GRACE_MS 1500
#define COALESCE_MS 500
/* Long enough to kill the push process while notifications wait. */
#define KILL_GRACE_MS 4000

static natscluster_t *nc;
static redisserver_t *rs;
static pf_webpush_t fake;
static char dir[] = "/tmp/parley-pushcluster-XXXXXX";
static hx_server_t node[NODES], pusher[2];
static char store[256], log_name[32];

/* Each test has a log and a database of its own: no consumer takes up
 * an earlier test's events. */
static void start_nodes(void)
{
	static int next_id = 1, next_log = 1;
	char ids[NODES][8];
	int i;

	assert_int_equal(hx_fresh_store(store, sizeof store), 0);
	snprintf(log_name, sizeof log_name, "PUSHT%d", next_log++);
	for (i = 0; i < NODES; i++) {
		snprintf(ids[i], sizeof ids[i], "%d", next_id++);
		const char *args[] = {"--nats", natscluster_urls(nc), "--nats-log", log_name, "--redis",
		                      redisserver_url(rs), "--node-id", ids[i], "--fast-password-hashing",
		                      "--push-allow-http-endpoints", "--heartbeat-ms", "500", NULL};
		assert_int_equal(hx_start(&node[i], store, args), 0);
	}
}

/* The push service's shard i of n, giving devices grace_ms to deliver. */
static void start_pusher(int i, int n, int grace_ms)
{
	char shard[16], grace[16], coalesce[16];

	snprintf(shard, sizeof shard, "%d/%d", i, n);
	snprintf(grace, sizeof grace, "%d", grace_ms);
	snprintf(coalesce, sizeof coalesce, "%d", COALESCE_MS);
	{
		const char *args[] = {"--nats", natscluster_urls(nc), "--nats-log", log_name, "--push-shard", shard,
		                      "--push-allow-http-endpoints", "--push-grace-ms", grace, "--push-coalesce-ms",
		                      coalesce, "--push-timeout-ms", "3000", NULL};
		assert_int_equal(hx_start_push(&pusher[i], store, args), 0);
	}
	/* Ready when its consumers have their cursors. */
	assert_true(hx_metric(&pusher[i], "parley_push_log_partitions") > 0);
}

static int setup(void **state)
{
	(void)state;
	if (!mkdtemp(dir) || !(rs = redisserver_start()))
		return -1;
	if (!(nc = natscluster_start(1))) {
		redisserver_stop(rs);
		return -1;
	}
	pf_webpush_start(&fake, dir);
	return 0;
}

static int teardown(void **state)
{
	char cmd[400];

	(void)state;
	pf_webpush_stop(&fake);
	natscluster_stop(nc);
	redisserver_stop(rs);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* A push process stops cleanly at SIGTERM (under ASan: without a leak);
 * the nodes are killed. */
static int stop_all(void **state)
{
	int i, rc = 0;

	(void)state;
	for (i = 0; i < 2; i++)
		if (pusher[i].pid > 0 && hx_stop(&pusher[i], SIGTERM) != 0) {
			fprintf(stderr, "push process %d did not exit cleanly\n", i);
			rc = -1;
		}
	for (i = 0; i < NODES; i++)
		hx_kill(&node[i]);
	memset(pusher, 0, sizeof pusher);
	if (store[0])
		hx_drop_store(store);
	store[0] = 0;
	return rc;
}

/* The pushes recorded at path for conversation conv. */
static size_t pushes_of(const char *path, int64_t conv)
{
	json_t *r = pf_records(fake.log, "path", path, 201), *rec;
	size_t i, n = 0;

	json_array_foreach(r, i, rec)
	{
		json_t *p = json_object_get(rec, "payload");
		const char *type = json_string_value(json_object_get(p, "type"));
		if (type && !strcmp(type, "message") && json_integer_value(json_object_get(p, "conv")) == conv)
			n++;
	}
	json_decref(r);
	return n;
}

/* Waits (up to 20 s) for a push of conv at path; its payload's body. */
static void wait_push(const char *path, int64_t conv, const char *body)
{
	int i;

	for (i = 0; i < 400; i++) {
		json_t *r = pf_records(fake.log, "path", path, 201), *rec;
		size_t k;
		json_array_foreach(r, k, rec)
		{
			json_t *p = json_object_get(rec, "payload");
			const char *b = json_string_value(json_object_get(p, "body"));
			if (json_integer_value(json_object_get(p, "conv")) == conv && b && !strcmp(b, body)) {
				json_decref(r);
				return;
			}
		}
		json_decref(r);
		pf_pause_ms(50);
	}
	fail_msg("no push of conversation %lld saying '%s' at %s", (long long)conv, body, path);
}

/* Six people each write to Bob, who has no connection: with two push
 * processes sharing the log, each conversation is pushed once, the
 * newest of its burst. Carol, connected on the other node, delivers
 * what she is sent and is not pushed. */
static void test_push_service_wakes_offline_users(void **state)
{
	enum { SENDERS = 6 };
	hx_user_t bob, carol, s[SENDERS];
	char bob_wp[80], carol_wp[80], text[64];
	int64_t conv[SENDERS], to_carol;
	pc_conn_t *c[SENDERS], *cc;
	int i, k;

	(void)state;
	start_nodes();
	start_pusher(0, 2, GRACE_MS);
	start_pusher(1, 2, GRACE_MS);
	hx_user(node[1].port, "pc_bob", &bob);
	hx_user(node[1].port, "pc_carol", &carol);
	snprintf(bob_wp, sizeof bob_wp, "/push/cluster-bob-%lld", (long long)bob.id);
	snprintf(carol_wp, sizeof carol_wp, "/push/cluster-carol-%lld", (long long)carol.id);
	pf_add_webpush(node[1].port, &bob, &fake, bob_wp);
	pf_add_webpush(node[1].port, &carol, &fake, carol_wp);
	for (i = 0; i < SENDERS; i++) {
		hx_user(node[0].port, "pc_sender", &s[i]);
		conv[i] = hx_direct(node[0].port, &s[i], &bob);
		c[i] = hx_ws(node[0].port, &s[i]);
	}
	to_carol = hx_direct(node[0].port, &s[0], &carol);
	cc = hx_ws(node[1].port, &carol);
	for (k = 1; k <= 3; k++)
		for (i = 0; i < SENDERS; i++) {
			snprintf(text, sizeof text, "from %d, %d of 3", i, k);
			hx_say(c[i], conv[i], text);
		}
	for (k = 0; k < 3; k++) {
		int64_t seq = hx_say(c[0], to_carol, "carol, live");
		json_t *m = hx_next_msg(cc, HX_TIMEOUT);
		assert_non_null(m);
		assert_int_equal(hx_int(m, "seq"), seq);
		hx_sendf(cc, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"delivered\",\"seq\":%lld}",
		         (long long)to_carol, (long long)seq);
		json_decref(m);
	}
	for (i = 0; i < SENDERS; i++) {
		snprintf(text, sizeof text, "from %d, 3 of 3", i);
		wait_push(bob_wp, conv[i], text);
	}
	pf_pause_ms(GRACE_MS + 1500);
	for (i = 0; i < SENDERS; i++)
		assert_int_equal(pushes_of(bob_wp, conv[i]), 1);
	assert_int_equal(pushes_of(carol_wp, to_carol), 0);
	/* Both shards had conversations (six conversations on 16
	 * partitions: one shard alone is unlikely, so this checks the
	 * split rather than assumes it). */
	assert_true(hx_metric(&pusher[0], "parley_push_log_events_total") +
	                hx_metric(&pusher[1], "parley_push_log_events_total") >=
	            SENDERS * 3);
	assert_true(hx_metric(&pusher[0], "parley_push_suppressed_total") +
	                hx_metric(&pusher[1], "parley_push_suppressed_total") >
	            0);
	for (i = 0; i < SENDERS; i++)
		pc_close(c[i]);
	pc_close(cc);
}

/* The provider hangs on every push to Carol; meanwhile Alice (node 0)
 * and Bob (node 1) talk, every message arriving, while the push service
 * holds hung sends. */
static void test_hanging_provider_leaves_fleet_delivery(void **state)
{
	hx_user_t alice, bob, carol;
	char wp[80], text[32];
	int64_t to_carol, to_bob;
	pc_conn_t *a, *b;
	int i;

	(void)state;
	start_nodes();
	start_pusher(0, 1, GRACE_MS);
	hx_user(node[0].port, "ph_alice", &alice);
	hx_user(node[1].port, "ph_bob", &bob);
	hx_user(node[1].port, "ph_carol", &carol);
	snprintf(wp, sizeof wp, "/push/hang-cluster-%lld", (long long)carol.id);
	pf_add_webpush(node[1].port, &carol, &fake, wp);
	to_carol = hx_direct(node[0].port, &alice, &carol);
	to_bob = hx_direct(node[0].port, &alice, &bob);
	a = hx_ws(node[0].port, &alice);
	b = hx_ws(node[1].port, &bob);
	hx_say(a, to_carol, "carol?");
	json_decref(pf_wait_records(fake.log, "path", wp, 0, 1)); /* held by the provider */
	for (i = 1; i <= 50; i++) {
		int64_t seq;
		json_t *m;

		snprintf(text, sizeof text, "live %d", i);
		hx_say(a, to_carol, "still there?");
		seq = hx_say(a, to_bob, text);
		m = hx_next_msg(b, HX_TIMEOUT);
		assert_non_null(m);
		assert_int_equal(hx_int(m, "seq"), seq);
		assert_string_equal(hx_str(m, "body"), text);
		json_decref(m);
	}
	assert_true(hx_metric(&pusher[0], "parley_push_in_flight{provider=\"webpush\"}") +
	                hx_metric(&pusher[0], "parley_push_retries_total{provider=\"webpush\"}") >
	            0);
	pc_close(a);
	pc_close(b);
}

/* Bob is pushed Alice's first message. Then Carol and Dave write to him
 * and the push process is killed (SIGKILL) within the grace, their
 * notifications still pending; Erin writes while it is down. Started
 * again, it pushes Carol's, Dave's and Erin's once each, and Alice's not
 * again. */
static void test_killed_push_service_resumes(void **state)
{
	hx_user_t bob, w[4];
	const char *names[4] = {"pk_alice", "pk_carol", "pk_dave", "pk_erin"};
	char wp[80];
	int64_t conv[4];
	pc_conn_t *c[4];
	double events;
	int i;

	(void)state;
	start_nodes();
	start_pusher(0, 1, KILL_GRACE_MS);
	hx_user(node[1].port, "pk_bob", &bob);
	snprintf(wp, sizeof wp, "/push/resume-bob-%lld", (long long)bob.id);
	pf_add_webpush(node[1].port, &bob, &fake, wp);
	for (i = 0; i < 4; i++) {
		hx_user(node[0].port, names[i], &w[i]);
		conv[i] = hx_direct(node[0].port, &w[i], &bob);
		c[i] = hx_ws(node[0].port, &w[i]);
	}
	hx_say(c[0], conv[0], "before");
	wait_push(wp, conv[0], "before");

	events = hx_metric(&pusher[0], "parley_push_log_events_total");
	hx_say(c[1], conv[1], "pending one");
	hx_say(c[2], conv[2], "pending two");
	/* Handed to the push path (and so acknowledged to the log), not yet
	 * pushed: the grace has not run out. */
	for (i = 0; i < 200 && hx_metric(&pusher[0], "parley_push_log_events_total") < events + 2; i++)
		pf_pause_ms(10);
	assert_true(hx_metric(&pusher[0], "parley_push_log_events_total") >= events + 2);
	assert_int_equal(hx_metric(&pusher[0], "parley_push_notifications_total"), 1);
	hx_kill(&pusher[0]);
	assert_int_equal(pushes_of(wp, conv[1]) + pushes_of(wp, conv[2]), 0);

	hx_say(c[3], conv[3], "while down");
	start_pusher(0, 1, KILL_GRACE_MS);
	wait_push(wp, conv[1], "pending one");
	wait_push(wp, conv[2], "pending two");
	wait_push(wp, conv[3], "while down");
	pf_pause_ms(KILL_GRACE_MS + 1500);
	for (i = 0; i < 4; i++)
		assert_int_equal(pushes_of(wp, conv[i]), 1);
	assert_true(hx_metric(&pusher[0], "parley_push_recovered_total") >= 2);
	for (i = 0; i < 4; i++)
		pc_close(c[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_push_service_wakes_offline_users, stop_all),
		cmocka_unit_test_teardown(test_hanging_provider_leaves_fleet_delivery, stop_all),
		cmocka_unit_test_teardown(test_killed_push_service_resumes, stop_all),
	};

	setenv("PARLEY_TEST_STORE", "postgresql", 1); /* one store for every process */
	hx_filter();
	return cmocka_run_group_tests(tests, setup, teardown);
}
