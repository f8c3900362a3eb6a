/* integ_outbox.c - the log of committed events, end to end: a real
 * `parley serve --store postgresql://… --nats …` on a real three-server
 * JetStream cluster (tests/natsserver.h), read back with eventlog_consume
 * as a fan-out dispatcher would.
 *
 * Pinned: every acked message is a `message.new` event, once, in its
 * conversation's partition, in seq order; receipts are `receipt.*`
 * events; a node killed with SIGKILL right after its acks loses no event
 * (another node on the same store sweeps its outbox, and the dedup id
 * keeps the republished ones single); with JetStream out of quorum sends
 * are still acked, and their events arrive once it is back. The store is
 * always PostgreSQL here, whatever $PARLEY_TEST_STORE says. */
#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eventlog.h"
#include "loop.h"
#include "natsserver.h"

static natscluster_t *nc;

/* ---- reading the log ------------------------------------------------ */

#define MAX_SEEN 4096

typedef struct seen {
	int64_t key, seq, user;
	unsigned partition;
	char type[32];
	char body[64];
} seen_t;

static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static seen_t seen[MAX_SEEN];
static size_t nseen;
/* Conversation ids start at 1 in each test's fresh database, and the log
 * keeps every test's events: a test's messages carry its own prefix. */
static const char *prefix = "";
/* Each test's nodes and readers use a log of its own: the nodes'
 * dispatchers would otherwise take up an earlier test's events, of
 * conversations in another database. */
static const char *log_name = "PARLEY";

static int on_event(void *ud, const eventlog_event_t *ev)
{
	json_t *j = json_loadb(ev->data, ev->len, 0, NULL);
	seen_t s = {0};

	(void)ud;
	if (!j)
		return 0;
	s.key = ev->key;
	s.partition = ev->partition;
	s.seq = json_integer_value(json_object_get(j, "seq"));
	s.user = json_integer_value(json_object_get(j, "user"));
	if (!s.user)
		s.user = json_integer_value(json_object_get(j, "from"));
	snprintf(s.type, sizeof s.type, "%s", ev->type);
	if (json_is_string(json_object_get(j, "body")))
		snprintf(s.body, sizeof s.body, "%s", json_string_value(json_object_get(j, "body")));
	json_decref(j);
	if (strcmp(s.type, "message.new") == 0 && strncmp(s.body, prefix, strlen(prefix)) != 0)
		return 0;
	pthread_mutex_lock(&seen_lock);
	if (nseen < MAX_SEEN)
		seen[nseen++] = s;
	pthread_mutex_unlock(&seen_lock);
	return 0;
}

/* A reader of every partition for group, of the messages whose bodies
 * start with want. */
static eventlog_t *reader(const char *group, const char *want)
{
	eventlog_opts_t o;
	eventlog_t *log;
	char err[256];
	unsigned p;

	pthread_mutex_lock(&seen_lock);
	nseen = 0;
	prefix = want;
	pthread_mutex_unlock(&seen_lock);
	eventlog_opts_init(&o);
	o.replicas = 3;
	o.name = log_name;
	if (!(log = eventlog_open(natscluster_urls(nc), &o, err, sizeof err)))
		fail_msg("eventlog_open: %s", err);
	for (p = 0; p < eventlog_partitions(log); p++)
		assert_int_equal(eventlog_consume(log, group, p, on_event, NULL), 0);
	return log;
}

/* How many events of type for conv have been seen. */
static size_t count_of(int64_t conv, const char *type)
{
	size_t i, n = 0;

	pthread_mutex_lock(&seen_lock);
	for (i = 0; i < nseen; i++)
		n += seen[i].key == conv && strcmp(seen[i].type, type) == 0;
	pthread_mutex_unlock(&seen_lock);
	return n;
}

/* Waits until at least want events of type for conv were seen, up to
 * ms; then a little longer, so that a duplicate would show. */
static void wait_for(int64_t conv, const char *type, size_t want, int ms)
{
	int64_t end = clock_mono_ms() + ms;

	while (count_of(conv, type) < want && clock_mono_ms() < end)
		usleep(20 * 1000);
	if (count_of(conv, type) < want)
		fail_msg("conversation %lld: %zu %s events of %zu after %d ms", (long long)conv, count_of(conv, type),
		         type, want, ms);
	usleep(300 * 1000);
}

/* conv's message.new events are exactly seqs 1..n, once each, all in one
 * partition, in any order: an event whose publish failed is sent again by
 * the sweep, after later ones went through (consumers order by seq, as the
 * nodes' own delivery does). */
static void check_messages_once(int64_t conv, int64_t n)
{
	char *got = calloc((size_t)n + 1, 1);
	int64_t count = 0;
	size_t i;

	assert_non_null(got);
	pthread_mutex_lock(&seen_lock);
	for (i = 0; i < nseen; i++) {
		int64_t q = seen[i].seq;
		if (seen[i].key != conv || strcmp(seen[i].type, "message.new") != 0)
			continue;
		if (q < 1 || q > n || got[q]) {
			pthread_mutex_unlock(&seen_lock);
			free(got);
			fail_msg("conversation %lld: seq %lld unexpected or twice", (long long)conv, (long long)q);
		}
		got[q] = 1;
		count++;
	}
	pthread_mutex_unlock(&seen_lock);
	free(got);
	assert_int_equal(count, n);
}

/* conv's message.new events are exactly seqs 1..n, once each, in order,
 * all in one partition: what the log holds when nothing failed. */
static void check_messages(int64_t conv, int64_t n)
{
	size_t i;
	int64_t next = 1;
	unsigned part = 0;
	int first = 1;

	pthread_mutex_lock(&seen_lock);
	for (i = 0; i < nseen; i++) {
		if (seen[i].key != conv || strcmp(seen[i].type, "message.new") != 0)
			continue;
		if (seen[i].seq != next) {
			pthread_mutex_unlock(&seen_lock);
			fail_msg("conversation %lld: seq %lld where %lld was due", (long long)conv,
			         (long long)seen[i].seq, (long long)next);
		}
		if (!first && seen[i].partition != part) {
			pthread_mutex_unlock(&seen_lock);
			fail_msg("conversation %lld in two partitions", (long long)conv);
		}
		part = seen[i].partition;
		first = 0;
		next++;
	}
	pthread_mutex_unlock(&seen_lock);
	assert_int_equal(next - 1, n);
}

/* ---- nodes ---------------------------------------------------------- */

static hx_server_t n1, n2;

static void start_node(hx_server_t *s, const char *store, const char *id)
{
	const char *args[] = {"--nats", natscluster_urls(nc), "--nats-log", log_name, "--node-id", id,
	                      "--fast-password-hashing", NULL};

	assert_int_equal(hx_start(s, store, args), 0);
}

static int teardown(void **state)
{
	(void)state;
	hx_kill(&n2);
	hx_kill(&n1);
	return 0;
}

static void test_events(void **state)
{
	hx_user_t a, b, c;
	pc_conn_t *ca, *cb;
	int64_t d1, d2, i, last = 0;
	eventlog_t *log;
	char body[32];

	(void)state;
	log_name = "OB_EVENTS";
	start_node(&n1, NULL, "1");
	hx_user(n1.port, "oa", &a);
	hx_user(n1.port, "ob", &b);
	hx_user(n1.port, "oc", &c);
	d1 = hx_direct(n1.port, &a, &b);
	d2 = hx_direct(n1.port, &a, &c);
	ca = hx_ws(n1.port, &a);
	cb = hx_ws(n1.port, &b);
	for (i = 1; i <= 10; i++) {
		snprintf(body, sizeof body, "e-m%lld", (long long)i);
		assert_int_equal(hx_say(ca, i % 2 ? d1 : d2, body), (i + 1) / 2);
	}
	hx_sendf(cb, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"b1\",\"body\":\"e-from b\"}", (long long)d1);
	for (;;) {
		json_t *j = hx_recv(cb);
		int ack = strcmp(hx_str(j, "type"), "ack") == 0;
		if (ack)
			last = hx_int(j, "seq");
		json_decref(j);
		if (ack)
			break;
	}
	assert_int_equal(last, 6);
	hx_sendf(cb, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"delivered\",\"seq\":5}", (long long)d1);
	hx_sendf(cb, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":5}", (long long)d1);

	log = reader("test_events", "e-");
	wait_for(d1, "message.new", 6, 10000);
	wait_for(d2, "message.new", 5, 10000);
	wait_for(d1, "receipt.read", 1, 10000);
	check_messages(d1, 6);
	check_messages(d2, 5);
	assert_int_equal(count_of(d1, "receipt.delivered"), 1);
	assert_int_equal(count_of(d1, "receipt.read"), 1);
	eventlog_close(log);
	/* Published and deleted: the node's relay says so. */
	pc_close(ca);
	pc_close(cb);
	hx_finish(&n1);
}

/* The property the outbox is for: acked, then the node dies at once;
 * another node on the same store and log sends what the first had not. */
static void test_killed_after_ack(void **state)
{
	enum { N = 40 };
	hx_user_t a, b;
	pc_conn_t *ca;
	int64_t conv, i;
	eventlog_t *log;

	(void)state;
	log_name = "OB_KILLED";
	start_node(&n1, NULL, "3");
	hx_user(n1.port, "ka", &a);
	hx_user(n1.port, "kb", &b);
	conv = hx_direct(n1.port, &a, &b);
	ca = hx_ws(n1.port, &a);
	/* Pipelined, so that the last acks come while earlier events are
	 * still on their way to the log. */
	for (i = 1; i <= N; i++)
		hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"k%lld\",\"body\":\"k-%lld\"}",
		         (long long)conv, (long long)i, (long long)i);
	for (i = 0; i < N;) {
		json_t *j = hx_recv(ca);
		i += strcmp(hx_str(j, "type"), "ack") == 0;
		json_decref(j);
	}
	assert_int_equal(hx_stop(&n1, SIGKILL), 128 + SIGKILL);
	pc_close(ca);
	start_node(&n2, n1.store, "4");
	log = reader("test_killed", "k-");
	wait_for(conv, "message.new", N, 15000);
	check_messages(conv, N);
	eventlog_close(log);
	hx_finish(&n2);
	hx_cleanup(&n1);
	memset(&n1, 0, sizeof n1);
}

/* JetStream without a quorum (two of three servers killed): sends are
 * still acked (the store is the truth), and once the servers are back the
 * events arrive, each once. */
static void test_log_down(void **state)
{
	enum { N = 5 };
	hx_user_t a, b;
	pc_conn_t *ca;
	int64_t conv, i;
	eventlog_t *log;
	char body[32];

	(void)state;
	log_name = "OB_DOWN";
	start_node(&n1, NULL, "5");
	hx_user(n1.port, "da", &a);
	hx_user(n1.port, "db", &b);
	conv = hx_direct(n1.port, &a, &b);
	ca = hx_ws(n1.port, &a);
	assert_int_equal(hx_say(ca, conv, "d-before"), 1);
	assert_int_equal(natscluster_kill(nc, 1), 0);
	assert_int_equal(natscluster_kill(nc, 2), 0);
	for (i = 2; i <= N + 1; i++) {
		snprintf(body, sizeof body, "d-down %lld", (long long)i);
		assert_int_equal(hx_say(ca, conv, body), i);
	}
	/* Back: the first server's own health check can wait on replicas
	 * only the second brings back (JetStream 2.9 reports healthy once
	 * every replica it holds is current), so its answer is not the test;
	 * both must run, and the events must come. */
	(void)natscluster_restart(nc, 1);
	(void)natscluster_restart(nc, 2);
	assert_true(natscluster_alive(nc, 1) && natscluster_alive(nc, 2));
	log = reader("test_down", "d-");
	wait_for(conv, "message.new", N + 1, 25000);
	check_messages_once(conv, N + 1);
	eventlog_close(log);
	pc_close(ca);
	hx_finish(&n1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_events, teardown),
		cmocka_unit_test_teardown(test_killed_after_ack, teardown),
		cmocka_unit_test_teardown(test_log_down, teardown),
	};
	int failed;

	setenv("PARLEY_TEST_STORE", "postgresql", 1);
	hx_filter();
	if (!(nc = natscluster_start(3)))
		return 1;
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	natscluster_stop(nc);
	return failed;
}
