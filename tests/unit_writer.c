/* unit_writer.c - the group-commit writer: ops submitted from several
 * threads at once are committed in far fewer transactions than ops, every
 * op is completed exactly once and in submission order per thread, ids
 * rise with seq, and writer_drain returns only when all are done; with
 * several lanes, conversations commit side by side and each keeps its
 * seqs gapless and its completions in order. On
 * every backend the build has: SQLite in a temporary directory, and
 * PostgreSQL (a fresh database per test on a throwaway server,
 * tests/pgserver.h) when a backend serves postgresql:// locations. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pgserver.h"
#include "store.h"
#include "writer.h"

#define THREADS 4
#define PER_THREAD 500

typedef struct sent {
	store_op_t op;
	int thread, n;
	char cmid[16];
} sent_t;

static atomic_int done_count;
static int64_t last_seq_seen[THREADS];
static int order_ok = 1;
static int64_t last_id, last_seq;
static int id_order_ok = 1;

static void on_done(store_op_t *op, void *ud)
{
	sent_t *s = (sent_t *)op;

	(void)ud;
	/* Completions run on the writer thread, in commit order. */
	if (op->status != STORE_OK || op->out_seq != last_seq + 1 || op->out_id <= last_id)
		id_order_ok = 0;
	last_seq = op->out_seq;
	last_id = op->out_id;
	if (op->out_seq <= last_seq_seen[s->thread])
		order_ok = 0;
	last_seq_seen[s->thread] = op->out_seq;
	store_op_release(op);
	free(s);
	atomic_fetch_add(&done_count, 1);
}

static writer_t *w;
static int64_t conv, user;

/* The run's backend: NULL for SQLite, else the PostgreSQL server. */
static pgserver_t *pg;
static store_claim_t *claim;

/* A send of "x" from user into conv, for thread t. */
static sent_t *new_send(int t, int n)
{
	sent_t *s = calloc(1, sizeof *s);

	assert_non_null(s);
	s->thread = t;
	s->n = n;
	snprintf(s->cmid, sizeof s->cmid, "t%d-%d", t, n);
	s->op.kind = STORE_OP_SEND;
	s->op.user = user;
	s->op.device = 1;
	s->op.conv = conv;
	s->op.cmid = s->cmid;
	s->op.body = "x";
	s->op.body_len = 1;
	return s;
}

/* A fresh store (its location into loc, cap bytes) with two users and
 * their direct chat (user, conv), and a writer on it; completion state
 * reset. */
static store_t *start(char *loc, size_t cap)
{
	int64_t other;
	store_t *st;
	int created;

	if (pg) {
		assert_int_equal(pgserver_create_db(pg, NULL, loc, cap), 0);
	} else {
		snprintf(loc, cap, "/tmp/parley-unit-writer-XXXXXX");
		assert_non_null(mkdtemp(loc));
	}
	assert_non_null(claim = store_claim(loc));
	st = store_open(loc);
	assert_non_null(st);
	assert_int_equal(store_user_create(st, "u1", "x", 1, &user), STORE_OK);
	assert_int_equal(store_user_create(st, "u2", "x", 1, &other), STORE_OK);
	assert_int_equal(store_direct_open(st, user, other, 1, 0, &conv, &created, NULL), STORE_OK);
	atomic_store(&done_count, 0);
	memset(last_seq_seen, 0, sizeof last_seq_seen);
	last_seq = last_id = 0;
	w = writer_new(loc, 3, 1024, 0, on_done, NULL);
	assert_non_null(w);
	return st;
}

static void stop(store_t *st, const char *loc)
{
	char cmd[600];

	writer_free(w);
	store_close(st);
	store_release(claim);
	claim = NULL;
	if (pg) {
		assert_int_equal(pgserver_drop_db(pg, loc), 0);
		return;
	}
	snprintf(cmd, sizeof cmd, "rm -rf %s", loc);
	assert_int_equal(system(cmd), 0);
}

static void *submitter(void *p)
{
	int t = (int)(intptr_t)p, i;

	for (i = 0; i < PER_THREAD; i++) {
		sent_t *s = new_send(t, i);
		while (writer_submit(w, &s->op) < 0)
			usleep(100);
	}
	return NULL;
}

static void test_group_commit(void **state)
{
	char loc[512];
	pthread_t th[THREADS];
	writer_counts_t wc;
	uint64_t batches, ops;
	store_t *st;
	int i;

	(void)state;
	st = start(loc, sizeof loc);
	for (i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, submitter, (void *)(intptr_t)i);
	for (i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	writer_drain(w);
	assert_int_equal(atomic_load(&done_count), THREADS * PER_THREAD);
	writer_counts(w, &wc);
	batches = wc.commits;
	ops = wc.ops;
	assert_int_equal(wc.messages, THREADS * PER_THREAD);
	assert_int_equal(ops, THREADS * PER_THREAD);
	/* Each fsync carried many sends: the point of group commit. */
	printf("# %llu ops in %llu commits\n", (unsigned long long)ops, (unsigned long long)batches);
	assert_true(batches * 4 <= ops);
	assert_true(order_ok);
	assert_true(id_order_ok);
	stop(st, loc);
}

/* With a commit delay, sends that arrive a moment apart share one commit
 * instead of each taking its own: the first waits (10 ms) for the others,
 * which come 1 ms later. Without the delay the first is committed alone. */
static void test_commit_delay(void **state)
{
	char loc[512];
	writer_counts_t wc;
	store_t *st;
	int i;

	(void)state;
	st = start(loc, sizeof loc);
	writer_set_commit_delay(w, 10000);
	for (i = 0; i < 3; i++) {
		sent_t *s = new_send(0, i);
		assert_int_equal(writer_submit(w, &s->op), 0);
		if (i == 0)
			usleep(1000);
	}
	writer_drain(w);
	writer_counts(w, &wc);
	assert_int_equal(atomic_load(&done_count), 3);
	assert_int_equal(wc.messages, 3);
	assert_int_equal(wc.commits, 1);
	assert_true(id_order_ok);
	stop(st, loc);
}

/* Several lanes: sends to many conversations from several threads. Each
 * conversation's completions come in seq order with no gap and rising
 * ids, every id of the node is unique, and a store with one writer
 * (SQLite) gets one lane whatever is asked. */
#define LANE_CONVS 12
#define LANE_SENDS 300

static pthread_mutex_t lane_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t lane_convs[LANE_CONVS], lane_seq[LANE_CONVS], lane_id[LANE_CONVS];
static int64_t lane_ids[THREADS * LANE_SENDS];
static int lane_nids, lane_ok = 1;

static void on_lane_done(store_op_t *op, void *ud)
{
	sent_t *s = (sent_t *)op;
	int c;

	(void)ud;
	pthread_mutex_lock(&lane_lock);
	for (c = 0; c < LANE_CONVS && lane_convs[c] != op->conv; c++)
		;
	if (c == LANE_CONVS || op->status != STORE_OK || op->out_seq != lane_seq[c] + 1 ||
	    op->out_id <= lane_id[c])
		lane_ok = 0;
	if (c < LANE_CONVS) {
		lane_seq[c] = op->out_seq;
		lane_id[c] = op->out_id;
	}
	if (lane_nids < THREADS * LANE_SENDS)
		lane_ids[lane_nids++] = op->out_id;
	pthread_mutex_unlock(&lane_lock);
	store_op_release(op);
	free(s);
	atomic_fetch_add(&done_count, 1);
}

static void *lane_submitter(void *p)
{
	int t = (int)(intptr_t)p, i;

	for (i = 0; i < LANE_SENDS; i++) {
		sent_t *s = new_send(t, i);
		s->op.conv = lane_convs[(t + i) % LANE_CONVS];
		while (writer_submit(w, &s->op) < 0)
			usleep(100);
	}
	return NULL;
}

static int cmp_id(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static void test_lanes(void **state)
{
	char loc[512], name[16];
	pthread_t th[THREADS];
	writer_counts_t wc;
	store_t *st;
	int i, created;

	(void)state;
	st = start(loc, sizeof loc);
	writer_free(w);
	for (i = 0; i < LANE_CONVS; i++) {
		int64_t other;
		snprintf(name, sizeof name, "peer%d", i);
		assert_int_equal(store_user_create(st, name, "x", 1, &other), STORE_OK);
		assert_int_equal(store_direct_open(st, user, other, 1, 0, &lane_convs[i], &created, NULL),
		                 STORE_OK);
		lane_seq[i] = lane_id[i] = 0;
	}
	lane_nids = 0;
	w = writer_new(loc, 3, 64, 4, on_lane_done, NULL);
	assert_non_null(w);
	assert_int_equal(writer_lanes(w), pg ? 4 : 1); /* as asked, where it helps */
	for (i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, lane_submitter, (void *)(intptr_t)i);
	for (i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	writer_drain(w);
	assert_int_equal(atomic_load(&done_count), THREADS * LANE_SENDS);
	writer_counts(w, &wc);
	assert_int_equal(wc.messages, THREADS * LANE_SENDS);
	assert_true(lane_ok);
	for (i = 0; i < LANE_CONVS; i++)
		assert_int_equal(lane_seq[i], THREADS * LANE_SENDS / LANE_CONVS);
	assert_int_equal(lane_nids, THREADS * LANE_SENDS);
	qsort(lane_ids, (size_t)lane_nids, sizeof *lane_ids, cmp_id);
	for (i = 1; i < lane_nids; i++)
		assert_true(lane_ids[i] > lane_ids[i - 1]);
	printf("# %d lanes: %llu ops in %llu commits\n", (int)writer_lanes(w),
	       (unsigned long long)wc.ops, (unsigned long long)wc.commits);
	stop(st, loc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_group_commit),
		cmocka_unit_test(test_commit_delay),
		cmocka_unit_test(test_lanes),
	};
	int failed = cmocka_run_group_tests_name("unit_writer[SQLite]", tests, NULL, NULL);

	/* As unit_store: the PostgreSQL run once a backend is registered. */
	if (!store_backend_name("postgresql://probe@127.0.0.1/probe")) {
		printf("unit_writer: PostgreSQL backend not built: skipping its run\n");
		return failed;
	}
	if (!(pg = pgserver_start())) {
		fprintf(stderr, "unit_writer: no PostgreSQL server for the PostgreSQL run\n");
		return failed + 1;
	}
	failed += cmocka_run_group_tests_name("unit_writer[PostgreSQL]", tests, NULL, NULL);
	pgserver_stop(pg);
	return failed;
}
