/* unit_eventlog.c - the event log (eventlog.h) on real NATS JetStream
 * servers (tests/natsserver.h): a cluster of three for everything that
 * replication is part of, one server for the rest (bad input, the
 * in-flight bound, every server down).
 *
 * What is checked: 1,000 events over several keys reach a consumer group
 * once each, in publish order per key, each in its key's partition, and
 * a second group independently gets them all; a dedup id published twice
 * is stored once (also after a publish timed out and was retried); a
 * handler refusing an event gets it again before any later one; a
 * consumer closed and opened again resumes after its last acknowledged
 * event, starting with the events it had fetched but not handled; with
 * one of three servers killed while publishing every acknowledged event
 * is consumed, and the server restarted rejoins with nothing lost; the
 * in-flight bound answers -EAGAIN and never blocks; publishes to a
 * stalled server complete with failure after the timeout; with every
 * server down publishes fail at once and the log recovers by itself; an
 * unreachable URL and bad input are refused with a clear reason.
 *
 * Each test uses a log (stream) of its own, so they do not see each
 * other's events. The kill test runs last: it moves leaders about. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <nats/nats.h>

#include "eventlog.h"
#include "log.h"
#include "natsserver.h"
#include "tmpserver.h"

static natscluster_t *three, *one;

/* ---- what consumers received -------------------------------------- */

#define SINK_MAX 8192

typedef struct got {
	int64_t key;
	int idx; /* the publisher's index within the key */
	unsigned partition;
	uint64_t seq;
	unsigned delivery;
	char type[EVENTLOG_TYPE_MAX + 1];
	char id[64];
} got_t;

typedef struct sink {
	pthread_mutex_t mu;
	got_t ev[SINK_MAX];
	int n;
	int refusals;          /* handler calls that returned non-zero */
	const char *fail_once; /* refuse the event with this dedup id once */
	int fail_from;         /* refuse every event whose idx >= this (when > 0) */
	eventlog_t *log;       /* to check each event's partition */
} sink_t;

static sink_t *sink_new(eventlog_t *log)
{
	sink_t *s = calloc(1, sizeof *s);

	assert_non_null(s);
	pthread_mutex_init(&s->mu, NULL);
	s->log = log;
	return s;
}

static void sink_free(sink_t *s)
{
	pthread_mutex_destroy(&s->mu);
	free(s);
}

static int sink_count(sink_t *s)
{
	int n;

	pthread_mutex_lock(&s->mu);
	n = s->n;
	pthread_mutex_unlock(&s->mu);
	return n;
}

/* Payloads are "key:idx". */
static int on_event(void *ud, const eventlog_event_t *ev)
{
	sink_t *s = ud;
	long long key = 0;
	int idx = -1, r = 0;
	char buf[64];
	got_t *g;

	snprintf(buf, sizeof buf, "%.*s", (int)(ev->len < 63 ? ev->len : 63), (const char *)ev->data);
	if (sscanf(buf, "%lld:%d", &key, &idx) != 2)
		idx = -1;
	pthread_mutex_lock(&s->mu);
	if (s->fail_once && !strcmp(ev->dedup_id, s->fail_once)) {
		s->fail_once = NULL;
		r = -1;
	} else if (s->fail_from > 0 && idx >= s->fail_from) {
		r = -1;
	}
	if (r) {
		s->refusals++;
	} else if (s->n < SINK_MAX) {
		g = &s->ev[s->n++];
		g->key = ev->key;
		g->idx = key == ev->key ? idx : -1;
		g->partition = ev->partition;
		g->seq = ev->seq;
		g->delivery = ev->delivery;
		snprintf(g->type, sizeof g->type, "%s", ev->type);
		snprintf(g->id, sizeof g->id, "%s", ev->dedup_id);
	}
	pthread_mutex_unlock(&s->mu);
	return r;
}

static void wait_count(sink_t *s, int n, int ms)
{
	long long deadline = tmpserver_now_ms() + ms;

	while (sink_count(s) < n) {
		if (tmpserver_now_ms() > deadline)
			fail_msg("consumed %d of %d events in %d ms", sink_count(s), n, ms);
		tmpserver_nap(5);
	}
}

/* Every partition for group. */
static void consume_all(eventlog_t *log, const char *group, sink_t *s)
{
	unsigned p;

	for (p = 0; p < eventlog_partitions(log); p++)
		assert_int_equal(eventlog_consume(log, group, p, on_event, s), 0);
}

/* Each key's indices 0..per_key-1 exactly once and in order, each in its
 * key's partition with the log's sequence rising along the partition. */
static void check_ordered(sink_t *s, const int64_t *keys, int nkeys, int per_key, int alternating)
{
	uint64_t last_seq[EVENTLOG_PARTITIONS_MAX] = {0};
	int k, i, next;

	pthread_mutex_lock(&s->mu);
	assert_int_equal(s->n, nkeys * per_key);
	for (i = 0; i < s->n; i++)
		assert_string_equal(s->ev[i].type,
		                    alternating && s->ev[i].idx % 2 ? "receipt.read" : "message.new");
	pthread_mutex_unlock(&s->mu);
	for (k = 0; k < nkeys; k++) {
		next = 0;
		pthread_mutex_lock(&s->mu);
		for (i = 0; i < s->n; i++) {
			got_t *g = &s->ev[i];
			if (g->key != keys[k])
				continue;
			assert_int_equal(g->partition, eventlog_partition_of(s->log, keys[k]));
			if (g->idx != next)
				fail_msg("key %lld: got index %d where %d was due", (long long)keys[k], g->idx, next);
			next++;
		}
		pthread_mutex_unlock(&s->mu);
		assert_int_equal(next, per_key);
	}
	/* Handler calls per partition come from one thread, so the order in
	 * s->ev within a partition is the order of delivery. */
	pthread_mutex_lock(&s->mu);
	for (i = 0; i < s->n; i++) {
		got_t *g = &s->ev[i];
		assert_true(g->seq > last_seq[g->partition]);
		last_seq[g->partition] = g->seq;
	}
	pthread_mutex_unlock(&s->mu);
}

/* ---- publishing ---------------------------------------------------- */

typedef struct outcome {
	atomic_int state; /* 0 pending, 1 stored, 2 failed */
	atomic_int calls; /* done calls: must end at exactly 1 */
} outcome_t;

static void on_done(void *ud, int ok)
{
	outcome_t *o = ud;

	atomic_fetch_add(&o->calls, 1);
	atomic_store(&o->state, ok ? 1 : 2);
}

/* Publishes, retrying while the in-flight bound is reached. */
static void publish(eventlog_t *log, int64_t key, const char *type, const char *data, const char *id,
                    outcome_t *o)
{
	long long deadline = tmpserver_now_ms() + 10000;
	int r;

	atomic_store(&o->state, 0);
	atomic_store(&o->calls, 0);
	while ((r = eventlog_publish(log, key, type, data, strlen(data), id, on_done, o)) == -EAGAIN) {
		if (tmpserver_now_ms() > deadline)
			fail_msg("the in-flight bound stayed full for 10 s");
		tmpserver_nap(1);
	}
	assert_int_equal(r, 0);
}

static int wait_outcome(outcome_t *o, int ms)
{
	long long deadline = tmpserver_now_ms() + ms;

	while (!atomic_load(&o->state)) {
		if (tmpserver_now_ms() > deadline)
			fail_msg("no outcome for a publish in %d ms", ms);
		tmpserver_nap(1);
	}
	return atomic_load(&o->state);
}

/* Publishes until stored: republishing with the same dedup id after a
 * failure, which is what a failure ("not known to be stored") asks for.
 * The number of attempts. */
static int publish_until_stored(eventlog_t *log, int64_t key, const char *data, const char *id, int ms)
{
	long long deadline = tmpserver_now_ms() + ms;
	outcome_t o;
	int attempts = 0;

	for (;;) {
		attempts++;
		publish(log, key, "message.new", data, id, &o);
		if (wait_outcome(&o, ms) == 1)
			break;
		assert_int_equal(atomic_load(&o.calls), 1);
		if (tmpserver_now_ms() > deadline)
			fail_msg("publish %s never stored in %d ms", id, ms);
		tmpserver_nap(20);
	}
	assert_int_equal(atomic_load(&o.calls), 1);
	return attempts;
}

static eventlog_t *open_log(natscluster_t *nc, const char *name, int replicas, unsigned partitions)
{
	eventlog_opts_t o;
	char err[256];
	eventlog_t *log;

	eventlog_opts_init(&o);
	o.name = name;
	o.replicas = replicas;
	o.partitions = partitions;
	o.publish_timeout_ms = 2000;
	o.ack_wait_ms = 5000;
	log = eventlog_open(natscluster_urls(nc), &o, err, sizeof err);
	if (!log)
		fail_msg("eventlog_open %s: %s", name, err);
	return log;
}

/* ---- the tests ----------------------------------------------------- */

static void test_bad_input(void **state)
{
	eventlog_opts_t o;
	eventlog_t *log;
	outcome_t out;
	char big[300], err[256];
	unsigned p;

	(void)state;
	eventlog_opts_init(&o);
	o.name = "BAD";
	o.max_payload = 256;
	log = eventlog_open(natscluster_urls(one), &o, err, sizeof err);
	assert_non_null(log);
	assert_int_equal(eventlog_partitions(log), 16);
	memset(big, 'x', sizeof big);

	assert_int_equal(eventlog_publish(NULL, 1, "message.new", "x", 1, NULL, on_done, &out), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, NULL, "x", 1, NULL, on_done, &out), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, "", "x", 1, NULL, on_done, &out), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, "message.", "x", 1, NULL, on_done, &out), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, ".new", "x", 1, NULL, on_done, &out), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, "message..new", "x", 1, NULL, on_done, &out), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, "message.*", "x", 1, NULL, on_done, &out), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, "receipt.>", "x", 1, NULL, on_done, &out), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, "Message.New", "x", 1, NULL, on_done, &out), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, "message new", "x", 1, NULL, on_done, &out), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, "message.new", NULL, 1, NULL, on_done, &out), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, "message.new", "x", 1, NULL, NULL, NULL), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, "message.new", "x", 1, "", on_done, &out), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, "message.new", "x", 1, "a b", on_done, &out), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, "message.new", "x", 1, "a\r\nX: y", on_done, &out), -EINVAL);
	assert_int_equal(eventlog_publish(log, 1, "message.new", big, 257, NULL, on_done, &out), -EMSGSIZE);
	assert_int_equal(eventlog_consume(log, "", 0, on_event, NULL), -EINVAL);
	assert_int_equal(eventlog_consume(log, "a.b", 0, on_event, NULL), -EINVAL);
	assert_int_equal(eventlog_consume(log, "a*", 0, on_event, NULL), -EINVAL);
	assert_int_equal(eventlog_consume(log, "g", 16, on_event, NULL), -EINVAL);
	assert_int_equal(eventlog_consume(log, "g", 0, NULL, NULL), -EINVAL);

	/* The largest allowed payload, an empty one, and no dedup id. */
	publish(log, 1, "message.new", "", NULL, &out);
	assert_int_equal(wait_outcome(&out, 5000), 1);
	atomic_store(&out.state, 0);
	atomic_store(&out.calls, 0);
	assert_int_equal(eventlog_publish(log, 1, "message.new", big, 256, "big", on_done, &out), 0);
	assert_int_equal(wait_outcome(&out, 5000), 1);
	assert_int_equal(atomic_load(&out.calls), 1);

	/* Keys spread over every partition, each always to the same one. */
	{
		int seen[16] = {0}, k;
		for (k = 0; k < 1000; k++) {
			p = eventlog_partition_of(log, k);
			assert_true(p < 16);
			assert_int_equal(eventlog_partition_of(log, k), p);
			seen[p]++;
		}
		for (p = 0; p < 16; p++)
			assert_true(seen[p] > 20);
	}
	eventlog_close(log);

	/* Another partition count for the same log is refused. */
	o.partitions = 8;
	assert_null(eventlog_open(natscluster_urls(one), &o, err, sizeof err));
	assert_non_null(strstr(err, "16 partitions"));
	/* Bad options and URLs. */
	o.partitions = 0;
	o.replicas = 7;
	assert_null(eventlog_open(natscluster_urls(one), &o, err, sizeof err));
	assert_null(eventlog_open("", NULL, err, sizeof err));
	assert_non_null(strstr(err, "bad NATS URL"));
	assert_null(eventlog_open("http://127.0.0.1:4222", NULL, err, sizeof err));
	assert_null(eventlog_open(NULL, NULL, NULL, 0));
	o.replicas = 1;
	o.name = "NO.DOTS";
	assert_null(eventlog_open(natscluster_urls(one), &o, err, sizeof err));
	assert_non_null(strstr(err, "bad log name"));
	o.name = "A_NAME_OF_MORE_THAN_THIRTY_TWO_BYTES";
	assert_null(eventlog_open(natscluster_urls(one), &o, err, sizeof err));
	eventlog_close(NULL);
}

static void test_unreachable(void **state)
{
	eventlog_opts_t o;
	char err[256], url[64];
	long long t0;

	(void)state;
	/* A port nothing listens on. */
	snprintf(url, sizeof url, "nats://127.0.0.1:%d", tmpserver_free_port());
	eventlog_opts_init(&o);
	o.connect_timeout_ms = 500;
	t0 = tmpserver_now_ms();
	assert_null(eventlog_open(url, &o, err, sizeof err));
	assert_true(tmpserver_now_ms() - t0 < 3000);
	assert_non_null(strstr(err, "cannot reach NATS at"));
	assert_non_null(strstr(err, url));
}

/* The publisher never blocks: with the server stopped (SIGSTOP: the
 * connection stays up, no ack comes) the bound fills and answers
 * -EAGAIN at once; each publish then fails after the timeout, exactly
 * once; and republished with the same ids once the server runs again,
 * each is stored once although the first attempts did land too. */
static void test_inflight_bound_and_timeout(void **state)
{
	enum { N = 8 };
	eventlog_opts_t o;
	eventlog_t *log;
	outcome_t out[N], extra;
	sink_t *s;
	char err[256], id[32], data[32];
	long long t0;
	pid_t pid = natscluster_pid(one, 0);
	int i;

	(void)state;
	eventlog_opts_init(&o);
	o.name = "BOUND";
	o.max_inflight = N;
	o.publish_timeout_ms = 1000;
	o.partitions = 1;
	log = eventlog_open(natscluster_urls(one), &o, err, sizeof err);
	assert_non_null(log);
	s = sink_new(log);

	assert_int_equal(kill(pid, SIGSTOP), 0);
	t0 = tmpserver_now_ms();
	for (i = 0; i < N; i++) {
		snprintf(id, sizeof id, "b-%d", i);
		snprintf(data, sizeof data, "7:%d", i);
		atomic_store(&out[i].state, 0);
		atomic_store(&out[i].calls, 0);
		assert_int_equal(eventlog_publish(log, 7, "message.new", data, strlen(data), id, on_done, &out[i]), 0);
	}
	assert_int_equal(eventlog_publish(log, 7, "message.new", "7:99", 4, "b-99", on_done, &extra), -EAGAIN);
	assert_int_equal(eventlog_publish(log, 7, "message.new", "7:99", 4, "b-99", on_done, &extra), -EAGAIN);
	assert_true(tmpserver_now_ms() - t0 < 500); /* none of it waited */
	for (i = 0; i < N; i++)
		assert_int_equal(wait_outcome(&out[i], 3000), 2);
	assert_true(tmpserver_now_ms() - t0 >= 1000);
	assert_int_equal(kill(pid, SIGCONT), 0);
	for (i = 0; i < N; i++)
		assert_int_equal(atomic_load(&out[i].calls), 1);

	for (i = 0; i < N; i++) {
		snprintf(id, sizeof id, "b-%d", i);
		snprintf(data, sizeof data, "7:%d", i);
		publish_until_stored(log, 7, data, id, 8000);
	}
	consume_all(log, "g", s);
	wait_count(s, N, 5000);
	tmpserver_nap(300); /* a duplicate would come now */
	{
		const int64_t keys[] = {7};
		int k, types_ok = 1;
		pthread_mutex_lock(&s->mu);
		for (k = 0; k < s->n; k++)
			types_ok &= !strcmp(s->ev[k].type, "message.new");
		pthread_mutex_unlock(&s->mu);
		assert_true(types_ok);
		/* check_ordered wants alternating types; count and order here. */
		pthread_mutex_lock(&s->mu);
		assert_int_equal(s->n, N);
		for (k = 0; k < N; k++) {
			assert_int_equal(s->ev[k].key, keys[0]);
			assert_int_equal(s->ev[k].idx, k);
		}
		pthread_mutex_unlock(&s->mu);
	}
	eventlog_close(log);
	sink_free(s);
}

/* 1,000 events over 10 keys, half before the consumers exist and half
 * while they run; two groups each get every one, once, in order. */
static void test_order_two_groups(void **state)
{
	enum { KEYS = 10, PER_KEY = 100 };
	static outcome_t out[KEYS * PER_KEY];
	int64_t keys[KEYS];
	eventlog_t *log;
	sink_t *fan, *push;
	char data[32], id[32];
	int i, k, stored = 0;

	(void)state;
	log = open_log(three, "ORDER", 3, 16);
	fan = sink_new(log);
	push = sink_new(log);
	for (k = 0; k < KEYS; k++)
		keys[k] = 1000003LL * (k + 1);
	for (i = 0; i < PER_KEY; i++) {
		if (i == PER_KEY / 2) {
			consume_all(log, "fanout", fan);
			consume_all(log, "push", push);
		}
		for (k = 0; k < KEYS; k++) {
			snprintf(data, sizeof data, "%lld:%d", (long long)keys[k], i);
			snprintf(id, sizeof id, "o-%d-%d", k, i);
			publish(log, keys[k], i % 2 ? "receipt.read" : "message.new", data, id, &out[i * KEYS + k]);
		}
	}
	for (i = 0; i < KEYS * PER_KEY; i++) {
		stored += wait_outcome(&out[i], 5000) == 1;
		assert_int_equal(atomic_load(&out[i].calls), 1);
	}
	assert_int_equal(stored, KEYS * PER_KEY);
	wait_count(fan, KEYS * PER_KEY, 15000);
	wait_count(push, KEYS * PER_KEY, 15000);
	tmpserver_nap(200); /* a duplicate would come now */
	check_ordered(fan, keys, KEYS, PER_KEY, 1);
	check_ordered(push, keys, KEYS, PER_KEY, 1);
	assert_int_equal(eventlog_consume(log, "push", 3, on_event, push), -EEXIST);
	eventlog_close(log);
	sink_free(fan);
	sink_free(push);
}

/* The same dedup id twice, the second after the first's ack: stored
 * once; a handler refusing an event once gets it again before the next
 * event of its partition. */
static void test_dedup_and_redelivery(void **state)
{
	eventlog_t *log;
	sink_t *s;

	(void)state;
	log = open_log(three, "DEDUP", 3, 4);
	s = sink_new(log);
	s->fail_once = "d-1";
	assert_int_equal(publish_until_stored(log, 5, "5:0", "d-0", 5000), 1);
	assert_int_equal(publish_until_stored(log, 5, "5:1", "d-1", 5000), 1);
	assert_int_equal(publish_until_stored(log, 5, "5:1", "d-1", 5000), 1); /* again */
	assert_int_equal(publish_until_stored(log, 5, "5:2", "d-2", 5000), 1);
	consume_all(log, "g", s);
	wait_count(s, 3, 10000);
	tmpserver_nap(300);
	pthread_mutex_lock(&s->mu);
	assert_int_equal(s->n, 3);
	assert_int_equal(s->refusals, 1);
	assert_string_equal(s->ev[0].id, "d-0");
	assert_string_equal(s->ev[1].id, "d-1");
	assert_int_equal(s->ev[1].delivery, 2);
	assert_string_equal(s->ev[2].id, "d-2");
	assert_int_equal(s->ev[2].delivery, 1);
	assert_int_equal(s->ev[0].key, 5);
	assert_true(s->ev[0].seq < s->ev[1].seq && s->ev[1].seq < s->ev[2].seq);
	pthread_mutex_unlock(&s->mu);
	eventlog_close(log);
	sink_free(s);
}

/* A consumer closed while it holds fetched events it has not handled
 * (its handler refusing from index 5 on), then opened again: it resumes
 * with index 5, after the last acknowledged event, in order, and gets
 * what was published while it was away. */
static void test_resume_after_close(void **state)
{
	eventlog_t *log;
	sink_t *s;
	outcome_t out[20];
	char data[32], id[32];
	int i;

	(void)state;
	log = open_log(three, "RESUME", 3, 1);
	s = sink_new(log);
	s->fail_from = 5;
	for (i = 0; i < 10; i++) {
		snprintf(data, sizeof data, "9:%d", i);
		snprintf(id, sizeof id, "r-%d", i);
		publish(log, 9, "message.new", data, id, &out[i]);
	}
	for (i = 0; i < 10; i++)
		assert_int_equal(wait_outcome(&out[i], 5000), 1);
	consume_all(log, "g", s);
	wait_count(s, 5, 10000);
	while (1) { /* it is retrying index 5 */
		int r;
		pthread_mutex_lock(&s->mu);
		r = s->refusals;
		pthread_mutex_unlock(&s->mu);
		if (r)
			break;
		tmpserver_nap(5);
	}
	eventlog_close(log);
	assert_int_equal(sink_count(s), 5);

	/* Published while no consumer runs. */
	log = open_log(three, "RESUME", 3, 1);
	for (i = 10; i < 20; i++) {
		snprintf(data, sizeof data, "9:%d", i);
		snprintf(id, sizeof id, "r-%d", i);
		publish(log, 9, "message.new", data, id, &out[i]);
	}
	for (i = 10; i < 20; i++)
		assert_int_equal(wait_outcome(&out[i], 5000), 1);
	eventlog_close(log);

	log = open_log(three, "RESUME", 3, 1);
	s->fail_from = 0;
	s->log = log;
	consume_all(log, "g", s);
	wait_count(s, 20, 10000);
	tmpserver_nap(300);
	pthread_mutex_lock(&s->mu);
	assert_int_equal(s->n, 20);
	for (i = 0; i < 20; i++) {
		assert_int_equal(s->ev[i].idx, i);
		if (i > 0)
			assert_true(s->ev[i].seq > s->ev[i - 1].seq);
	}
	pthread_mutex_unlock(&s->mu);
	eventlog_close(log);
	sink_free(s);
}

/* A partition handed from one consumer to another, as dispatchers on two
 * nodes hand it over: eventlog_unconsume stops one (the event refused in
 * place is handed back), the other picks the cursor up where it was, and
 * between them every event arrives once, in order. */
static void test_unconsume_hands_over(void **state)
{
	eventlog_t *a, *b;
	sink_t *s;
	outcome_t out[20];
	char data[32], id[32];
	int i;

	(void)state;
	a = open_log(three, "HANDOVER", 3, 2);
	b = open_log(three, "HANDOVER", 3, 2);
	s = sink_new(a);
	s->fail_from = 5;
	assert_int_equal(eventlog_unconsume(a, "g", 0), -ENOENT);
	assert_int_equal(eventlog_unconsume(a, "bad group!", 0), -EINVAL);
	for (i = 0; i < 10; i++) {
		snprintf(data, sizeof data, "4:%d", i);
		snprintf(id, sizeof id, "h-%d", i);
		publish(a, 4, "message.new", data, id, &out[i]);
	}
	for (i = 0; i < 10; i++)
		assert_int_equal(wait_outcome(&out[i], 5000), 1);
	assert_int_equal(eventlog_consume(a, "g", eventlog_partition_of(a, 4), on_event, s), 0);
	wait_count(s, 5, 10000);
	assert_int_equal(eventlog_unconsume(a, "g", eventlog_partition_of(a, 4)), 0);
	assert_int_equal(eventlog_unconsume(a, "g", eventlog_partition_of(a, 4)), -ENOENT);
	assert_int_equal(sink_count(s), 5);
	for (i = 10; i < 20; i++) {
		snprintf(data, sizeof data, "4:%d", i);
		snprintf(id, sizeof id, "h-%d", i);
		publish(a, 4, "message.new", data, id, &out[i]);
	}
	for (i = 10; i < 20; i++)
		assert_int_equal(wait_outcome(&out[i], 5000), 1);
	pthread_mutex_lock(&s->mu);
	s->fail_from = 0;
	s->log = b;
	pthread_mutex_unlock(&s->mu);
	assert_int_equal(eventlog_consume(b, "g", eventlog_partition_of(b, 4), on_event, s), 0);
	wait_count(s, 20, 10000);
	tmpserver_nap(300);
	pthread_mutex_lock(&s->mu);
	assert_int_equal(s->n, 20);
	for (i = 0; i < 20; i++)
		assert_int_equal(s->ev[i].idx, i);
	pthread_mutex_unlock(&s->mu);
	/* And back: the first log may consume it again. */
	assert_int_equal(eventlog_unconsume(b, "g", eventlog_partition_of(b, 4)), 0);
	assert_int_equal(eventlog_consume(a, "g", eventlog_partition_of(a, 4), on_event, s), 0);
	eventlog_close(b);
	eventlog_close(a);
	sink_free(s);
}

/* Every server down (the one-server cluster killed): publishes fail at
 * once, not after the timeout; the server back, the log recovers by
 * itself and the events stored before are still there. */
static void test_all_down_recovers(void **state)
{
	eventlog_t *log;
	sink_t *s;
	outcome_t out;
	long long t0;
	int attempts;

	(void)state;
	log = open_log(one, "DOWN", 1, 2);
	s = sink_new(log);
	assert_int_equal(publish_until_stored(log, 3, "3:0", "dn-0", 5000), 1);
	assert_int_equal(natscluster_kill(one, 0), 0);
	tmpserver_nap(100); /* the client sees the connection go */
	t0 = tmpserver_now_ms();
	publish(log, 3, "message.new", "3:1", "dn-1", &out);
	assert_int_equal(wait_outcome(&out, 3000), 2);
	assert_true(tmpserver_now_ms() - t0 < 1000); /* not the 2 s timeout */
	assert_int_equal(atomic_load(&out.calls), 1);

	assert_int_equal(natscluster_restart(one, 0), 0);
	attempts = publish_until_stored(log, 3, "3:1", "dn-1", 10000);
	assert_true(attempts >= 1);
	consume_all(log, "g", s);
	wait_count(s, 2, 10000);
	tmpserver_nap(200);
	pthread_mutex_lock(&s->mu);
	assert_int_equal(s->n, 2);
	assert_int_equal(s->ev[0].idx, 0);
	assert_int_equal(s->ev[1].idx, 1);
	pthread_mutex_unlock(&s->mu);
	/* Closing with every server down is bounded too: the consumers
	 * stop, an outstanding publish fails. */
	assert_int_equal(natscluster_kill(one, 0), 0);
	publish(log, 3, "message.new", "3:2", "dn-2", &out);
	t0 = tmpserver_now_ms();
	eventlog_close(log);
	assert_true(tmpserver_now_ms() - t0 < 4000);
	assert_int_equal(atomic_load(&out.calls), 1);
	assert_int_equal(atomic_load(&out.state), 2);
	sink_free(s);
	assert_int_equal(natscluster_restart(one, 0), 0);
}

/* The index of the server named "nI". */
static int index_of(const char *name)
{
	return name && name[0] == 'n' ? atoi(name + 1) - 1 : -1;
}

/* A connection of the test's own to the three. */
static natsConnection *connect_three(jsCtx **js)
{
	natsConnection *conn = NULL;

	assert_int_equal(natsConnection_ConnectTo(&conn, natscluster_urls(three)), NATS_OK);
	assert_int_equal(natsConnection_JetStream(js, conn, NULL), NATS_OK);
	return conn;
}

/* The index of the server leading the stream, and its message count. */
static int stream_leader(const char *stream, uint64_t *msgs)
{
	jsStreamInfo *si = NULL;
	jsCtx *js = NULL;
	natsConnection *conn = connect_three(&js);
	jsErrCode jerr = 0;
	int leader = -1;

	assert_int_equal(js_GetStreamInfo(&si, js, stream, NULL, &jerr), NATS_OK);
	if (si->Cluster)
		leader = index_of(si->Cluster->Leader);
	if (msgs)
		*msgs = si->State.Msgs;
	jsStreamInfo_Destroy(si);
	jsCtx_Destroy(js);
	natsConnection_Destroy(conn);
	return leader;
}

/* The earlier tests' logs, gone: a server restarted waits until every
 * replica it holds is current, and 2.9 can take long to call an idle
 * consumer current again. */
static void delete_streams(const char *const *names)
{
	jsCtx *js = NULL;
	natsConnection *conn = connect_three(&js);

	for (; *names; names++)
		assert_int_equal(js_DeleteStream(js, *names, NULL, NULL), NATS_OK);
	jsCtx_Destroy(js);
	natsConnection_Destroy(conn);
}

/* One of three servers killed while publishing and consuming: every
 * publish is stored once (republished after a failure with its dedup
 * id) and consumed; the server restarted rejoins and nothing is lost.
 * At least once: a consumer whose leader or connection moves may see an
 * event again (its ack lost), and then it is the same event, same seq. */
static void test_kill_one_of_three(void **state)
{
	enum { KEYS = 16, PER_PHASE = 30, TOTAL = 3 * PER_PHASE };
	static const char *const old[] = {"ORDER", "DEDUP", "RESUME", NULL};
	int64_t keys[KEYS];
	uint64_t seq_of[KEYS][TOTAL], msgs = 0;
	eventlog_t *log, *pub;
	sink_t *s;
	char data[32], id[32];
	int victim, sl, ml, i, k, retried = 0, dups = 0, next[KEYS] = {0};

	(void)state;
	for (k = 0; k < KEYS; k++)
		keys[k] = 11 + k;
	delete_streams(old);
	log = open_log(three, "KILL", 3, 4);
	s = sink_new(log);
	consume_all(log, "ft", s);
	sl = stream_leader("KILL", NULL);
	ml = natscluster_meta_leader(three);
	assert_true(sl >= 0 && ml >= 0);
	/* A follower of both: the test is of losing a server, not of the
	 * ~3.5 s elections (a consumer led by it still has one). */
	for (victim = 0; victim == sl || victim == ml; victim++)
		;
	/* The publisher is given the victim's URL alone: it must find the
	 * others through the cluster (the servers tell their clients) and
	 * go on through them when its server dies. */
	{
		eventlog_opts_t o;
		char err[256];
		eventlog_opts_init(&o);
		o.name = "KILL";
		o.replicas = 3;
		o.partitions = 4;
		o.publish_timeout_ms = 2000;
		o.ack_wait_ms = 5000;
		pub = eventlog_open(natscluster_url(three, victim), &o, err, sizeof err);
		if (!pub)
			fail_msg("eventlog_open on n%d: %s", victim + 1, err);
	}
	/* Each key's events one at a time (a failed one republished, same
	 * dedup id, before the next: order per key is the publisher's to
	 * keep), the keys side by side, so that the kill and the restart
	 * fall on publishes in flight. */
	{
		outcome_t out[KEYS];
		int stored = 0, cur[KEYS], killed = 0, kill_due = 0, restarted = 0;
		long long deadline = tmpserver_now_ms() + 30000;

		for (k = 0; k < KEYS; k++) {
			cur[k] = 0;
			snprintf(data, sizeof data, "%lld:0", (long long)keys[k]);
			snprintf(id, sizeof id, "k-%d-0", k);
			publish(pub, keys[k], "message.new", data, id, &out[k]);
		}
		while (stored < KEYS * TOTAL) {
			if (!killed && !kill_due && stored >= KEYS * PER_PHASE) {
				/* Once every consumer is up: the test is of a server
				 * lost under traffic, not of a creation waiting out
				 * JetStream's 5 s API timeout. The kill follows the
				 * next round of publishes, so that they are in flight. */
				wait_count(s, KEYS * PER_PHASE, 15000);
				kill_due = 1;
			}
			if (killed && !restarted && stored >= 2 * KEYS * PER_PHASE) {
				/* Consumption went on with it dead. */
				wait_count(s, stored - KEYS, 15000);
				assert_int_equal(natscluster_restart(three, victim), 0);
				restarted = 1;
			}
			if (tmpserver_now_ms() > deadline)
				fail_msg("%d of %d stored in 30 s", stored, KEYS * TOTAL);
			for (k = 0; k < KEYS; k++) {
				int st = atomic_load(&out[k].state);
				if (!st || cur[k] == TOTAL)
					continue;
				assert_int_equal(atomic_load(&out[k].calls), 1);
				if (st == 1) {
					stored++;
					if (++cur[k] == TOTAL)
						continue;
				} else {
					retried++;
				}
				snprintf(data, sizeof data, "%lld:%d", (long long)keys[k], cur[k]);
				snprintf(id, sizeof id, "k-%d-%d", k, cur[k]);
				publish(pub, keys[k], "message.new", data, id, &out[k]);
			}
			if (kill_due && !killed) {
				assert_int_equal(natscluster_kill(three, victim), 0);
				killed = 1;
			}
			tmpserver_nap(1);
		}
		assert_true(killed && restarted);
	}
	wait_count(s, KEYS * TOTAL, 15000);
	eventlog_close(pub);
	tmpserver_nap(300);
	stream_leader("KILL", &msgs);
	assert_int_equal(msgs, KEYS * TOTAL); /* each stored once */

	/* Every event, each key's in order of first delivery; a repeat is the
	 * same stored event. */
	memset(seq_of, 0, sizeof seq_of);
	pthread_mutex_lock(&s->mu);
	for (i = 0; i < s->n; i++) {
		got_t *g = &s->ev[i];
		for (k = 0; k < KEYS && keys[k] != g->key; k++)
			;
		assert_true(k < KEYS && g->idx >= 0 && g->idx < TOTAL);
		assert_int_equal(g->partition, eventlog_partition_of(log, g->key));
		if (seq_of[k][g->idx]) {
			assert_int_equal(seq_of[k][g->idx], g->seq);
			dups++;
			continue;
		}
		if (g->idx != next[k])
			fail_msg("key %lld: got index %d where %d was due", (long long)g->key, g->idx, next[k]);
		seq_of[k][g->idx] = g->seq;
		next[k]++;
	}
	pthread_mutex_unlock(&s->mu);
	for (k = 0; k < KEYS; k++)
		assert_int_equal(next[k], TOTAL);
	print_message("killed n%d (stream leader n%d, meta leader n%d): %d publishes retried, %d redelivered\n",
	              victim + 1, sl + 1, ml + 1, retried, dups);
	eventlog_close(log);
	sink_free(s);
}

static int setup(void **state)
{
	(void)state;
	log_level = LOG_WARN;
	one = natscluster_start(1);
	three = natscluster_start(3);
	return one && three ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	natscluster_stop(three);
	natscluster_stop(one);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_unreachable),
		cmocka_unit_test(test_inflight_bound_and_timeout),
		cmocka_unit_test(test_all_down_recovers),
		cmocka_unit_test(test_order_two_groups),
		cmocka_unit_test(test_dedup_and_redelivery),
		cmocka_unit_test(test_resume_after_close),
		cmocka_unit_test(test_unconsume_hands_over),
		/* Last: it moves leaders about. */
		cmocka_unit_test(test_kill_one_of_three),
	};
	int failed;

	if (!natscluster_bin())
		return 1;
	failed = cmocka_run_group_tests_name("unit_eventlog", tests, setup, teardown);
	/* libnats' threads and memory, for the leak checker. */
	nats_CloseAndWait(5000);
	return failed;
}
