/* unit_store_pg.c - what only the PostgreSQL backend has to get right, on
 * a throwaway server this test starts and stops itself: several handles
 * (as several nodes would) sending into one conversation at once get
 * unique, gapless seqs and store each cmid once; two handles racing the
 * same cmid end one STORE_OK and one STORE_EXISTS with the same message,
 * as does an insert that meets a twin stored behind the probe's back;
 * batches over several conversations in different orders do not deadlock;
 * the schema is created by racing claims once and a newer or missing one
 * is refused; a lost connection fails calls quickly and is made again.
 *
 * The server is tests/pgserver.h's: initdb and pg_ctl run as the postgres
 * user when we are root (PostgreSQL refuses root), a free loopback port, a
 * temporary directory, stopped however this process ends. Without
 * PostgreSQL installed the test fails, saying so: it never skips. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "pgserver.h"
#include "store.h"

#define NOW (1704067200000LL + 86400000LL)

/* The throwaway server (tests/pgserver.h: initdb into a temporary
 * directory, a free port, stopped however this process ends), and the
 * base of its databases' URIs. */
static pgserver_t *pg;
static char base_url[128];
static int db_counter;

/* Runs SQL on the server (database db), for the test's own checks. */
static PGresult *sql(const char *db, const char *q)
{
	char url[200];
	PGconn *c;
	PGresult *r;

	snprintf(url, sizeof url, "%s/%s", base_url, db);
	c = PQconnectdb(url);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "unit_store_pg: %s: %s", url, PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	r = PQexec(c, q);
	if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
		fprintf(stderr, "unit_store_pg: %s: %s", q, PQerrorMessage(c));
		PQclear(r);
		r = NULL;
	}
	PQfinish(c);
	return r;
}

/* A new empty database; its URL into url. */
static int new_db(char *url, size_t size)
{
	char name[32];

	snprintf(name, sizeof name, "t%d", db_counter++);
	return pgserver_create_db(pg, name, url, size);
}

static int setup(void **state)
{
	(void)state;
	if (!(pg = pgserver_start()))
		return -1;
	snprintf(base_url, sizeof base_url, "postgresql://postgres@127.0.0.1:%d", pgserver_port(pg));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	pgserver_stop(pg);
	pg = NULL;
	return 0;
}

/* A database with the schema, users a and b and their direct chat. */
typedef struct world {
	char url[160];
	int64_t a, b, conv;
} world_t;

static void make_world(world_t *w)
{
	int created, from, to;
	store_t *s;

	assert_int_equal(new_db(w->url, sizeof w->url), 0);
	assert_int_equal(store_migrate(w->url, &from, &to), 0);
	assert_int_equal(from, 0);
	assert_non_null(s = store_open(w->url));
	assert_int_equal(store_user_create(s, "a", "x", 1, &w->a), STORE_OK);
	assert_int_equal(store_user_create(s, "b", "x", 1, &w->b), STORE_OK);
	assert_int_equal(store_direct_open(s, w->a, w->b, NOW, 0, &w->conv, &created, NULL), STORE_OK);
	store_close(s);
}

static store_op_t send_op(int64_t user, int64_t conv, const char *cmid, const char *body, int64_t id)
{
	store_op_t op = {0};

	op.kind = STORE_OP_SEND;
	op.user = user;
	op.conv = conv;
	op.cmid = cmid;
	op.body = body;
	op.body_len = strlen(body);
	op.new_id = id;
	op.now_ms = NOW;
	return op;
}

/* ---- two handles, one cmid ------------------------------------------ */

#define RACES 40

typedef struct racer {
	world_t *w;
	pthread_barrier_t *go;
	int n;                   /* which of the two */
	store_op_t ops[RACES];
	int rc[RACES];
	char cmids[RACES][24];
} racer_t;

static void *race(void *p)
{
	racer_t *r = p;
	store_t *s = store_open(r->w->url);
	int i;

	for (i = 0; i < RACES; i++) {
		snprintf(r->cmids[i], sizeof r->cmids[i], "race-%d", i);
		/* Different ids, as two nodes' snowflakes would be. */
		r->ops[i] = send_op(r->w->a, r->w->conv, r->cmids[i], "the same message",
		                    ((int64_t)(1000 + i) << 22) | r->n);
		pthread_barrier_wait(r->go);
		r->rc[i] = s ? store_apply(s, &r->ops[i], 1) : -100;
		store_op_release(&r->ops[i]);
	}
	store_close(s);
	return NULL;
}

static void test_racing_retries(void **state)
{
	pthread_barrier_t go;
	pthread_t t[2];
	racer_t r[2];
	world_t w;
	store_message_t *m;
	store_t *s;
	size_t n;
	int i, k;

	(void)state;
	make_world(&w);
	pthread_barrier_init(&go, NULL, 2);
	for (k = 0; k < 2; k++) {
		memset(&r[k], 0, sizeof r[k]);
		r[k].w = &w;
		r[k].go = &go;
		r[k].n = k;
		assert_int_equal(pthread_create(&t[k], NULL, race, &r[k]), 0);
	}
	for (k = 0; k < 2; k++)
		pthread_join(t[k], NULL);
	pthread_barrier_destroy(&go);
	for (i = 0; i < RACES; i++) {
		store_op_t *x = &r[0].ops[i], *y = &r[1].ops[i], *ok = x->status == STORE_OK ? x : y,
		           *again = ok == x ? y : x;
		assert_int_equal(r[0].rc[i], STORE_OK);
		assert_int_equal(r[1].rc[i], STORE_OK);
		/* One stored it, the other was answered with what was stored. */
		assert_int_equal(ok->status, STORE_OK);
		assert_int_equal(again->status, STORE_EXISTS);
		assert_int_equal(again->out_id, ok->out_id);
		assert_int_equal(again->out_seq, ok->out_seq);
		assert_int_equal(ok->out_id, ok->new_id);
		assert_int_equal(ok->out_seq, i + 1); /* no gap from the loser */
	}
	assert_non_null(s = store_open(w.url));
	assert_int_equal(store_replay(s, w.conv, 0, 0, INT64_MAX, 1000, SIZE_MAX, &m, &n), STORE_OK);
	assert_int_equal(n, RACES);
	for (i = 0; i < RACES; i++)
		assert_int_equal(m[i].seq, i + 1);
	store_messages_free(m, n);
	store_close(s);
}

/* ---- many handles, one conversation, several conversations ----------- */

#define SENDERS 6
#define PER_SENDER 300
#define CONVS 3

typedef struct sender {
	world_t *w;
	int64_t convs[CONVS];
	int n, errors, bad;
	int64_t stored;
} sender_t;

/* Batches of 1 to 16 ops over the conversations in a shuffled order,
 * with repeats of cmids already sent and receipts mixed in: every apply
 * must succeed (a deadlock would fail one), each repeat must be answered
 * with its first ack. */
static void *send_many(void *p)
{
	sender_t *sd = p;
	store_t *s = store_open(sd->w->url);
	static _Thread_local char cmids[PER_SENDER][24];
	int64_t seq_of[PER_SENDER] = {0}, id_of[PER_SENDER] = {0};
	unsigned seed = (unsigned)sd->n * 7919u + 1;
	int sent = 0;

	if (!s) {
		sd->errors++;
		return NULL;
	}
	while (sent < PER_SENDER) {
		store_op_t ops[16];
		int idx[16], k = 0, want = 1 + (int)(rand_r(&seed) % 16), i;
		while (k < want && sent < PER_SENDER) {
			int roll = (int)(rand_r(&seed) % 10);
			if (roll == 0 && sent > 0) { /* a repeat of an earlier one */
				int j = (int)(rand_r(&seed) % (unsigned)sent);
				ops[k] = send_op(sd->n % 2 ? sd->w->b : sd->w->a, sd->convs[j % CONVS], cmids[j], "again",
				                 0);
				idx[k++] = j;
			} else if (roll == 1) {
				store_op_t op = {0};
				op.kind = STORE_OP_RECEIPT;
				op.user = sd->n % 2 ? sd->w->a : sd->w->b;
				op.conv = sd->convs[rand_r(&seed) % CONVS];
				op.state = rand_r(&seed) % 2 ? STORE_READ : STORE_DELIVERED;
				op.seq = (int64_t)(rand_r(&seed) % 1000);
				op.now_ms = NOW;
				ops[k] = op;
				idx[k++] = -1;
			} else {
				snprintf(cmids[sent], sizeof cmids[sent], "s%d-%d", sd->n, sent);
				ops[k] = send_op(sd->n % 2 ? sd->w->b : sd->w->a, sd->convs[sent % CONVS], cmids[sent],
				                 "body", ((int64_t)(2000 + sent) << 22) | ((int64_t)sd->n << 12));
				idx[k++] = sent++;
			}
		}
		if (store_apply(s, ops, (size_t)k) != STORE_OK) {
			sd->errors++;
			continue;
		}
		for (i = 0; i < k; i++) {
			store_op_t *op = &ops[i];
			int j = idx[i];
			if (j < 0) {
				sd->bad += op->status != STORE_OK;
			} else if (!seq_of[j]) {
				/* A repeat can come first only within one batch. */
				if (op->status != STORE_OK) {
					sd->bad++;
				} else {
					seq_of[j] = op->out_seq;
					id_of[j] = op->out_id;
					sd->stored++;
				}
			} else if (op->status != STORE_EXISTS || op->out_seq != seq_of[j] || op->out_id != id_of[j]) {
				sd->bad++;
			}
			store_op_release(op);
		}
	}
	store_close(s);
	return NULL;
}

static void test_concurrent_senders(void **state)
{
	pthread_t t[SENDERS];
	sender_t sd[SENDERS];
	world_t w;
	store_t *s;
	int64_t others[1], total = 0;
	int i, k;
	PGresult *r;

	(void)state;
	make_world(&w);
	assert_non_null(s = store_open(w.url));
	for (i = 0; i < SENDERS; i++) {
		memset(&sd[i], 0, sizeof sd[i]);
		sd[i].w = &w;
		sd[i].n = i;
		sd[i].convs[0] = w.conv;
	}
	/* Two groups of a and b besides their direct chat. */
	others[0] = w.b;
	for (k = 1; k < CONVS; k++) {
		int64_t g;
		assert_int_equal(store_group_create(s, w.a, others, 1, "g", NOW, 0, &g, NULL), STORE_OK);
		for (i = 0; i < SENDERS; i++)
			sd[i].convs[k] = g;
	}
	for (i = 0; i < SENDERS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, send_many, &sd[i]), 0);
	for (i = 0; i < SENDERS; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(sd[i].errors, 0);
		assert_int_equal(sd[i].bad, 0);
		assert_int_equal(sd[i].stored, PER_SENDER);
		total += sd[i].stored;
	}
	/* Every conversation: seqs 1..last_seq, each once, each cmid once. */
	assert_non_null(r = sql(strrchr(w.url, '/') + 1,
	                        "SELECT (SELECT count(*) FROM messages), "
	                        "(SELECT count(DISTINCT (conv_id, seq)) FROM messages), "
	                        "(SELECT count(DISTINCT (conv_id, sender, cmid)) FROM messages), "
	                        "(SELECT sum(last_seq) FROM conversations), "
	                        "(SELECT count(*) FROM conversations c WHERE last_seq <> "
	                        "(SELECT coalesce(max(seq), 0) FROM messages m WHERE m.conv_id = c.id)), "
	                        "(SELECT count(*) FROM messages WHERE seq < 1)"));
	assert_int_equal(atoll(PQgetvalue(r, 0, 0)), total);
	assert_int_equal(atoll(PQgetvalue(r, 0, 1)), total);
	assert_int_equal(atoll(PQgetvalue(r, 0, 2)), total);
	assert_int_equal(atoll(PQgetvalue(r, 0, 3)), total); /* count = max per conversation: no gap */
	assert_int_equal(atoll(PQgetvalue(r, 0, 4)), 0);
	assert_int_equal(atoll(PQgetvalue(r, 0, 5)), 0);
	PQclear(r);
	store_close(s);
}

/* ---- the schema ----------------------------------------------------- */

typedef struct claimer {
	const char *url;
	store_claim_t *claim;
	pthread_barrier_t *go;
} claimer_t;

static void *claim_one(void *p)
{
	claimer_t *c = p;

	pthread_barrier_wait(c->go);
	c->claim = store_claim(c->url);
	return NULL;
}

static void test_schema(void **state)
{
	char url[160], q[64];
	claimer_t c[4];
	pthread_t t[4];
	pthread_barrier_t go;
	PGresult *r;
	store_t *s;
	int i, from, to;

	(void)state;
	assert_int_equal(new_db(url, sizeof url), 0);
	/* No schema yet: open refuses (it never migrates). */
	assert_null(store_open(url));
	/* Nodes starting together: each claim succeeds, the schema is made once. */
	pthread_barrier_init(&go, NULL, 4);
	for (i = 0; i < 4; i++) {
		c[i].url = url;
		c[i].go = &go;
		assert_int_equal(pthread_create(&t[i], NULL, claim_one, &c[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_non_null(c[i].claim);
		store_release(c[i].claim);
	}
	pthread_barrier_destroy(&go);
	assert_non_null(s = store_open(url));
	store_close(s);
	assert_int_equal(store_migrate(url, &from, &to), 0);
	assert_int_equal(from, to);
	/* A newer schema than this binary knows: claim, migrate and open refuse. */
	snprintf(q, sizeof q, "UPDATE parley_meta SET value = %d", to + 1);
	assert_non_null(r = sql(strrchr(url, '/') + 1, q));
	PQclear(r);
	assert_null(store_claim(url));
	assert_int_equal(store_migrate(url, &from, &to), -1);
	assert_null(store_open(url));
	/* Unreachable, malformed: refused, not hung. */
	assert_null(store_claim("postgresql://postgres@127.0.0.1:1/x"));
	assert_null(store_claim("postgresql://127.0.0.1:notaport/x"));
}

/* ---- faults --------------------------------------------------------- */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct blocked_send {
	store_t *s;
	store_op_t op;
	int rc;
} blocked_send_t;

static void *apply_one(void *p)
{
	blocked_send_t *b = p;

	b->rc = store_apply(b->s, &b->op, 1);
	return NULL;
}

/* The pid of our handle's session, once it waits for a lock (0: never). */
static int waiting_session(const char *db)
{
	char q[300];
	PGresult *r;
	int tries, pid = 0;

	snprintf(q, sizeof q, "SELECT pid FROM pg_stat_activity WHERE datname = '%s' AND application_name = "
	         "'parley' AND wait_event_type = 'Lock'", db);
	for (tries = 0; tries < 100 && !pid; tries++) {
		if ((r = sql("postgres", q)) && PQntuples(r) == 1)
			pid = atoi(PQgetvalue(r, 0, 0));
		PQclear(r);
		if (!pid)
			usleep(50 * 1000);
	}
	return pid;
}

typedef struct batch {
	store_t *s;
	store_op_t *ops;
	int rc;
} batch_t;

static void *apply_two(void *p)
{
	batch_t *bt = p;

	bt->rc = store_apply(bt->s, bt->ops, 2);
	return NULL;
}

/* A writer that does not take the conversation's lock (none of ours:
 * an outside one, or a bug) stores the cmid while a batch is between its
 * probe and its insert: the insert meets it, bumps nothing, and the op
 * ends STORE_EXISTS with that row, the rest of its batch stored. */
static void test_insert_meets_a_twin(void **state)
{
	world_t w;
	store_t *s;
	store_op_t ops[2];
	pthread_t t;
	batch_t bt;
	PGconn *other;
	PGresult *r;
	char q[300];
	const char *db;

	(void)state;
	make_world(&w);
	db = strrchr(w.url, '/') + 1;
	assert_non_null(s = store_open(w.url));
	snprintf(q, sizeof q, "%s/%s", base_url, db);
	other = PQconnectdb(q);
	assert_int_equal(PQstatus(other), CONNECTION_OK);
	snprintf(q, sizeof q, "BEGIN; INSERT INTO messages(id, conv_id, seq, sender, cmid, body, ts) "
	         "VALUES(77, %lld, 1000, %lld, 'twin', 'first', 5)", (long long)w.conv, (long long)w.a);
	r = PQexec(other, q);
	assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);
	ops[0] = send_op(w.a, w.conv, "twin", "second", (int64_t)4000 << 22);
	ops[1] = send_op(w.b, w.conv, "other", "bystander", (int64_t)4001 << 22);
	/* Both ops in one batch, through a thread that waits on the twin. */
	bt.s = s;
	bt.ops = ops;
	assert_int_equal(pthread_create(&t, NULL, apply_two, &bt), 0);
	assert_int_not_equal(waiting_session(db), 0);
	PQclear(PQexec(other, "COMMIT"));
	pthread_join(t, NULL);
	assert_int_equal(bt.rc, STORE_OK);
	PQfinish(other);
	assert_int_equal(ops[0].status, STORE_EXISTS);
	assert_int_equal(ops[0].out_id, 77);
	assert_int_equal(ops[0].out_seq, 1000);
	assert_int_equal(ops[0].nmembers, 0);
	assert_int_equal(ops[1].status, STORE_OK);
	assert_int_equal(ops[1].out_seq, 1); /* nothing was bumped for the twin */
	store_op_release(&ops[0]);
	store_op_release(&ops[1]);
	store_close(s);
}

static void test_lost_connection(void **state)
{
	world_t w;
	store_t *s;
	store_op_t op;
	blocked_send_t b;
	pthread_t t;
	char name[33], q[200], url[200];
	const char *db;
	PGconn *holder;
	PGresult *r;
	int64_t t0;
	int tries, pid;

	(void)state;
	make_world(&w);
	db = strrchr(w.url, '/') + 1;
	assert_non_null(s = store_open(w.url));
	assert_int_equal(store_user_by_id(s, w.a, name), STORE_OK);
	/* The server ends our idle session: the next call notices before it
	 * starts, and reconnects for it (a second after the last connection
	 * was made: never more often). */
	snprintf(q, sizeof q, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' "
	         "AND application_name = 'parley'", db);
	assert_non_null(r = sql("postgres", q));
	PQclear(r);
	usleep(1100 * 1000);
	assert_int_equal(store_user_by_id(s, w.a, name), STORE_OK);
	/* The session ends in the middle of a batch (waiting for the
	 * conversation's lock, held here): the batch fails, quickly, and
	 * nothing of it is stored. */
	snprintf(url, sizeof url, "%s/%s", base_url, db);
	holder = PQconnectdb(url);
	assert_int_equal(PQstatus(holder), CONNECTION_OK);
	snprintf(q, sizeof q, "BEGIN; SELECT 1 FROM conversations WHERE id = %lld FOR UPDATE", (long long)w.conv);
	r = PQexec(holder, q);
	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	PQclear(r);
	b.s = s;
	b.op = send_op(w.a, w.conv, "lost-1", "hello", (int64_t)3000 << 22);
	assert_int_equal(pthread_create(&t, NULL, apply_one, &b), 0);
	assert_int_not_equal(pid = waiting_session(db), 0);
	t0 = mono_ms();
	snprintf(q, sizeof q, "SELECT pg_terminate_backend(%d)", pid);
	assert_non_null(r = sql("postgres", q));
	PQclear(r);
	pthread_join(t, NULL);
	assert_true(mono_ms() - t0 < 2000);
	assert_int_equal(b.rc, STORE_ERROR);
	assert_int_equal(b.op.status, STORE_ERROR);
	PQclear(PQexec(holder, "ROLLBACK"));
	PQfinish(holder);
	snprintf(q, sizeof q, "SELECT count(*) FROM messages");
	assert_non_null(r = sql(db, q));
	assert_string_equal(PQgetvalue(r, 0, 0), "0");
	PQclear(r);
	/* A later call reconnects (within a backoff period or two) and the
	 * client's retry with the same cmid is stored, at seq 1. */
	for (tries = 0; tries < 50; tries++) {
		op = send_op(w.a, w.conv, "lost-1", "hello", (int64_t)3001 << 22);
		if (store_apply(s, &op, 1) == STORE_OK)
			break;
		usleep(100 * 1000);
	}
	assert_int_equal(op.status, STORE_OK);
	assert_int_equal(op.out_seq, 1);
	store_op_release(&op);
	/* The whole server goes away: calls fail fast, without a connection
	 * attempt on every one; it comes back, and so does the handle. */
	assert_int_equal(pgserver_crash(pg), 0);
	t0 = mono_ms();
	for (tries = 0; tries < 20; tries++)
		assert_int_equal(store_user_by_id(s, w.a, name), STORE_ERROR);
	assert_true(mono_ms() - t0 < 3000);
	assert_int_equal(pgserver_restart(pg), 0);
	for (tries = 0; tries < 100 && store_user_by_id(s, w.a, name) != STORE_OK; tries++)
		usleep(100 * 1000);
	assert_int_equal(store_user_by_id(s, w.a, name), STORE_OK);
	assert_string_equal(name, "a");
	op = send_op(w.a, w.conv, "lost-1", "hello", (int64_t)3002 << 22);
	assert_int_equal(store_apply(s, &op, 1), STORE_OK);
	assert_int_equal(op.status, STORE_EXISTS);
	assert_int_equal(op.out_id, (int64_t)3001 << 22);
	store_op_release(&op);
	store_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_racing_retries),
		cmocka_unit_test(test_concurrent_senders),
		cmocka_unit_test(test_insert_meets_a_twin),
		cmocka_unit_test(test_schema),
		cmocka_unit_test(test_lost_connection),
	};
	return cmocka_run_group_tests_name("unit_store_pg", tests, setup, teardown);
}
