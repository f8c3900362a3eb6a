/* integ_pgfaults.c - the node over PostgreSQL when PostgreSQL fails.
 *
 * A real PostgreSQL (tests/pgserver.h) is stopped with `pg_ctl stop -m
 * immediate` (a crash: no checkpoint, connections cut) in the middle of a
 * burst of sends, then started again on the same port and data. While it
 * is down every send is answered, at once, with `unavailable` (never an
 * ack, never silence) and REST requests with 503; once it is back the node
 * reconnects by itself, the client retries what was not acked with the
 * same cmids, and in the end every message is stored exactly once, its
 * seqs gapless, a retry of one whose commit's outcome the crash hid
 * answered with the seq it already had. */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include <libpq-fe.h>
#include <sys/wait.h>

#include "harness.h"
#include "pgserver.h"
#include "store.h"

#define N 300
#define WINDOW 32                 /* sends in flight (the cap is 128) */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct sent {
	int answered;             /* this round */
	int64_t seq;              /* acked: its seq; 0 not yet */
	int errors;               /* unavailable answers, over all rounds */
} sent_t;

static sent_t sent[N];

/* Reads answers until `want` sends of this round are answered or the
 * timeout passes; returns how many were. */
static int read_answers(pc_conn_t *c, int want, int ms)
{
	int got = 0;
	int64_t until = now_ms() + ms;

	while (got < want && now_ms() < until) {
		json_t *j = hx_recv_within(c, (int)(until - now_ms()));
		const char *t, *cmid;
		int i;

		if (!j)
			break;
		t = json_string_value(json_object_get(j, "type"));
		/* An ack names its send by cmid, an error by ref. */
		cmid = json_string_value(json_object_get(j, t && !strcmp(t, "error") ? "ref" : "cmid"));
		if (!t || !cmid || sscanf(cmid, "burst-%d", &i) != 1 || i < 0 || i >= N) {
			json_decref(j);
			continue;
		}
		if (!strcmp(t, "ack")) {
			int64_t seq = json_integer_value(json_object_get(j, "seq"));
			/* A repeat of one acked before answers with the same seq. */
			if (sent[i].seq)
				assert_int_equal(seq, sent[i].seq);
			sent[i].seq = seq;
		} else {
			assert_string_equal(t, "error");
			assert_string_equal(hx_str(j, "code"), "unavailable");
			sent[i].errors++;
		}
		if (!sent[i].answered) {
			sent[i].answered = 1;
			got++;
		}
		json_decref(j);
	}
	return got;
}

static void send_one(pc_conn_t *c, int64_t conv, int i)
{
	hx_sendf(c, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"burst-%d\",\"body\":\"message %d\"}",
	         (long long)conv, i, i);
}

static void test_crash_mid_burst(void **state)
{
	pgserver_t *pg;
	hx_server_t s;
	hx_user_t a, b;
	pc_conn_t *ca;
	char url[256], path[128];
	int64_t conv, until;
	int i, inflight, acked, rounds = 0, st;
	json_t *j, *msgs;
	static int64_t seen[N + 1];

	(void)state;
	if (getenv("PARLEY_TEST_STORE") && !strcmp(getenv("PARLEY_TEST_STORE"), "postgresql")) {
		printf("integ_pgfaults: runs in the SQLite pass (it starts its own PostgreSQL)\n");
		return;
	}
	if (!store_backend_name("postgresql://probe@127.0.0.1/probe")) {
		printf("integ_pgfaults: PostgreSQL backend not built: skipping\n");
		return;
	}
	assert_non_null(pg = pgserver_start());
	assert_int_equal(pgserver_create_db(pg, NULL, url, sizeof url), 0);
	assert_int_equal(hx_start(&s, url, NULL), 0);
	hx_user(s.port, "crash_a", &a);
	hx_user(s.port, "crash_b", &b);
	conv = hx_direct(s.port, &a, &b);
	assert_non_null(ca = hx_ws(s.port, &a));

	/* The burst, WINDOW at a time; PostgreSQL dies a third of the way. */
	for (i = 0, inflight = 0; i < N; i++) {
		if (i == N / 3)
			assert_int_equal(pgserver_crash(pg), 0);
		send_one(ca, conv, i);
		if (++inflight == WINDOW) {
			inflight -= read_answers(ca, inflight, HX_TIMEOUT);
			assert_int_equal(inflight, 0); /* every send answered, none hangs */
		}
	}
	assert_int_equal(read_answers(ca, inflight, HX_TIMEOUT), inflight);
	for (i = N / 3 + WINDOW; i < N; i++)
		assert_int_equal(sent[i].seq, 0); /* nothing acked while it is down */
	/* While it is down, REST fails fast too. */
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages", (long long)conv);
	j = hx_http(s.port, "GET", path, a.token, NULL, &st);
	assert_int_equal(st, 503);
	json_decref(j);

	/* Back; the node finds it again by itself. The client retries what
	 * was not acked, with the same cmids, until everything is. */
	assert_int_equal(pgserver_restart(pg), 0);
	for (until = now_ms() + 60000, acked = 0; acked < N; rounds++) {
		assert_true(now_ms() < until);
		for (i = 0, inflight = 0, acked = 0; i < N; i++) {
			sent[i].answered = 0;
			if (sent[i].seq) {
				acked++;
				continue;
			}
			send_one(ca, conv, i);
			if (++inflight == WINDOW)
				inflight -= read_answers(ca, inflight, HX_TIMEOUT);
		}
		read_answers(ca, inflight, HX_TIMEOUT);
		if (acked < N)
			usleep(200000);
	}
	/* Each cmid stored once: seqs 1..N, each taken once. */
	for (i = 0; i < N; i++) {
		assert_true(sent[i].seq >= 1 && sent[i].seq <= N);
		assert_int_equal(seen[sent[i].seq], 0);
		seen[sent[i].seq] = i + 1;
	}
	/* ... and the store says the same: N messages, no more. */
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?limit=1", (long long)conv);
	j = hx_http(s.port, "GET", path, a.token, NULL, &st);
	assert_int_equal(st, 200);
	msgs = json_object_get(j, "messages");
	assert_int_equal(json_array_size(msgs), 1);
	assert_int_equal(hx_int(json_array_get(msgs, 0), "seq"), N);
	json_decref(j);
	printf("integ_pgfaults: %d sends, %d retry rounds after the restart\n", N, rounds);
	pc_close(ca);
	hx_finish(&s);
	pgserver_drop_db(pg, url);
	pgserver_stop(pg);
}

/* Runs build/parley with args; its exit status, and what it printed in out. */
static int run_parley(const char *const *args, char *out, size_t cap)
{
	const char *bin = getenv("PARLEY_BIN") ? getenv("PARLEY_BIN") : "build/parley";
	const char *argv[16];
	int p[2], n = 0, status;
	size_t got = 0;
	ssize_t r;
	pid_t pid;

	argv[n++] = bin;
	while (*args && n < 15)
		argv[n++] = *args++;
	argv[n] = NULL;
	assert_int_equal(pipe(p), 0);
	if ((pid = fork()) == 0) {
		dup2(p[1], 1);
		dup2(p[1], 2);
		close(p[0]);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	while ((r = read(p[0], out + got, cap - 1 - got)) > 0 && got + (size_t)r < cap - 1)
		got += (size_t)r;
	if (r > 0)
		got += (size_t)r;
	out[got] = 0;
	close(p[0]);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Bad store locations: an unreachable server, a malformed URI, a scheme
 * no backend serves, a database of a newer schema. Each is one clear
 * message naming the cause and a non-zero exit, never a half-started
 * node; migrate refuses the newer schema too. */
static void test_bad_locations(void **state)
{
	static char out[8192];
	char url[256], sql[128];
	pgserver_t *pg;
	PGconn *c;
	PGresult *r;
	const char *refused[] = {"serve", "--listen", "127.0.0.1:0", "--store", "postgresql://postgres@127.0.0.1:1/none",
	                         NULL};
	const char *malformed[] = {"serve", "--listen", "127.0.0.1:0", "--store", "postgresql://[::1", NULL};
	const char *unknown[] = {"serve", "--listen", "127.0.0.1:0", "--store", "mysql://db/parley", NULL};
	const char *newer[] = {"serve", "--listen", "127.0.0.1:0", "--store", url, NULL};
	const char *migrate[] = {"migrate", "--store", url, NULL};

	(void)state;
	if (getenv("PARLEY_TEST_STORE") && !strcmp(getenv("PARLEY_TEST_STORE"), "postgresql")) {
		printf("integ_pgfaults: runs in the SQLite pass (it starts its own PostgreSQL)\n");
		return;
	}
	assert_int_not_equal(run_parley(refused, out, sizeof out), 0);
	assert_non_null(strstr(out, "Connection refused"));
	assert_null(strstr(out, "listening on"));
	assert_int_not_equal(run_parley(malformed, out, sizeof out), 0);
	assert_non_null(strstr(out, "store"));
	assert_null(strstr(out, "listening on"));
	assert_int_not_equal(run_parley(unknown, out, sizeof out), 0);
	assert_non_null(strstr(out, "no backend serves"));
	assert_non_null(pg = pgserver_start());
	assert_int_equal(pgserver_create_db(pg, NULL, url, sizeof url), 0);
	assert_int_equal(run_parley(migrate, out, sizeof out), 0);
	assert_non_null(strstr(out, "created the PostgreSQL store's schema"));
	assert_int_equal(run_parley(migrate, out, sizeof out), 0);
	assert_non_null(strstr(out, "already"));
	/* A newer parley migrated it: this one must not serve it. */
	assert_non_null(c = PQconnectdb(url));
	assert_int_equal(PQstatus(c), CONNECTION_OK);
	snprintf(sql, sizeof sql, "UPDATE parley_meta SET value = 99 WHERE key = 'schema_version'");
	r = PQexec(c, sql);
	assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);
	PQfinish(c);
	assert_int_not_equal(run_parley(newer, out, sizeof out), 0);
	assert_non_null(strstr(out, "99"));
	assert_null(strstr(out, "listening on"));
	assert_int_not_equal(run_parley(migrate, out, sizeof out), 0);
	assert_non_null(strstr(out, "99"));
	pgserver_drop_db(pg, url);
	pgserver_stop(pg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crash_mid_burst),
		cmocka_unit_test(test_bad_locations),
	};

	hx_filter();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
