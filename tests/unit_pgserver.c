/* unit_pgserver.c - the tests' throwaway PostgreSQL (pgserver.h) by
 * itself: it starts, makes databases a client reaches by their URI,
 * crashes (immediate shutdown) losing only what was not committed,
 * starts again on the same port and data, and stops leaving nothing
 * behind; and a test process that ends without stopping it (a plain
 * exit, a fatal signal, SIGKILL) still leaves no server running and no
 * directory. Needs PostgreSQL's server binaries: without them it fails,
 * saying what to install. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "pgserver.h"

/* Runs sql on the database at url; returns the first value of the
 * first row (malloc'd), or NULL for a command. Fails the test on error. */
static char *sql1(const char *url, const char *sql)
{
	PGconn *c = PQconnectdb(url);
	PGresult *r;
	char *v = NULL;

	if (PQstatus(c) != CONNECTION_OK)
		fail_msg("cannot connect to %s: %s", url, PQerrorMessage(c));
	r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
		fail_msg("%s: %s", sql, PQerrorMessage(c));
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
		v = strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(c);
	return v;
}

static int exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static void test_lifecycle(void **state)
{
	char url[256], url2[256], *v;
	pgserver_t *pg;
	PGconn *open_tx;
	PGresult *r;
	char dir[160];
	int port;

	(void)state;
	pg = pgserver_start();
	assert_non_null(pg);
	port = pgserver_port(pg);
	snprintf(dir, sizeof dir, "%s", pgserver_dir(pg));
	assert_true(pgserver_alive(pg));
	/* fsync stays on: the store's durability is what is under test. */
	v = sql1(pgserver_url(pg), "SHOW fsync");
	assert_string_equal(v, "on");
	free(v);
	assert_int_equal(pgserver_create_db(pg, "pgs_one", url, sizeof url), 0);
	assert_non_null(strstr(url, "/pgs_one"));
	assert_int_equal(pgserver_create_db(pg, "pgs_one", url2, sizeof url2), -1); /* taken */
	assert_int_equal(pgserver_create_db(pg, "No-Such;Name", url2, sizeof url2), -1);
	free(sql1(url, "CREATE TABLE t(x integer)"));
	free(sql1(url, "INSERT INTO t VALUES (42)"));
	/* A transaction still open when the server goes is lost, whole. */
	open_tx = PQconnectdb(url);
	assert_int_equal(PQstatus(open_tx), CONNECTION_OK);
	PQclear(PQexec(open_tx, "BEGIN"));
	PQclear(PQexec(open_tx, "INSERT INTO t VALUES (99)"));

	assert_int_equal(pgserver_crash(pg), 0);
	assert_false(pgserver_alive(pg));
	r = PQexec(open_tx, "COMMIT");
	assert_int_not_equal(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);
	PQfinish(open_tx);

	assert_int_equal(pgserver_restart(pg), 0);
	assert_int_equal(pgserver_port(pg), port);
	assert_true(pgserver_alive(pg));
	v = sql1(url, "SELECT string_agg(x::text, ',') FROM t");
	assert_string_equal(v, "42");
	free(v);
	/* Unique names, and dropping one with a client still on it. */
	assert_int_equal(pgserver_create_db(pg, NULL, url2, sizeof url2), 0);
	assert_string_not_equal(url, url2);
	open_tx = PQconnectdb(url2);
	assert_int_equal(PQstatus(open_tx), CONNECTION_OK);
	assert_int_equal(pgserver_drop_db(pg, url2), 0);
	PQfinish(open_tx);
	assert_int_equal(pgserver_drop_db(pg, "postgres"), -1);

	pgserver_stop(pg);
	assert_false(exists(dir));
	{
		char ci[128];
		snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=postgres dbname=postgres", port);
		assert_int_equal(PQping(ci), PQPING_NO_RESPONSE);
	}
}

/* How the child of test_process_ends leaves. */
enum { END_EXIT, END_SIGTERM, END_ABORT, END_SIGKILL };

/* A child process starts a server, tells us where, and ends the given
 * way without stopping it: the server must go, and its directory. A
 * plain exit stops it before the process is gone (atexit); a fatal
 * signal shuts it down at once (the handler); SIGKILL leaves it to the
 * watchdog. */
static void process_ends(int how)
{
	struct {
		int port;
		char dir[160];
	} where;
	char ci[128];
	int p[2], status;
	time_t deadline;
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		pgserver_t *pg = pgserver_start();
		close(p[0]);
		memset(&where, 0, sizeof where);
		if (pg) {
			where.port = pgserver_port(pg);
			snprintf(where.dir, sizeof where.dir, "%s", pgserver_dir(pg));
		}
		if (write(p[1], &where, sizeof where) != (ssize_t)sizeof where || !pg)
			_exit(3);
		switch (how) {
		case END_EXIT:
			exit(0);
		case END_SIGTERM:
			raise(SIGTERM);
			break;
		case END_ABORT: {
			/* A failed assert() outside cmocka's reach; no core
			 * file left in the working tree. */
			struct rlimit none = {0, 0};
			setrlimit(RLIMIT_CORE, &none);
			abort();
		}
		case END_SIGKILL:
			raise(SIGKILL);
			break;
		}
		_exit(4);
	}
	close(p[1]);
	assert_int_equal(read(p[0], &where, sizeof where), (ssize_t)sizeof where);
	close(p[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	assert_true(where.port > 0);
	snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=2",
	         where.port);
	if (how == END_EXIT) {
		/* Stopped and removed before the process was gone. */
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		assert_false(exists(where.dir));
		assert_int_equal(PQping(ci), PQPING_NO_RESPONSE);
		return;
	}
	assert_true(WIFSIGNALED(status));
	/* A shutdown under way takes a moment: poll for its end. */
	deadline = time(NULL) + 60;
	while (exists(where.dir) || PQping(ci) != PQPING_NO_RESPONSE) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		if (time(NULL) > deadline)
			fail_msg("the server of a dead test process is still there (%s, port %d)", where.dir,
			         where.port);
		nanosleep(&ts, NULL);
	}
}

static void test_exit_stops_it(void **state)
{
	(void)state;
	process_ends(END_EXIT);
}

static void test_fatal_signal_stops_it(void **state)
{
	(void)state;
	process_ends(END_SIGTERM);
}

static void test_abort_stops_it(void **state)
{
	(void)state;
	process_ends(END_ABORT);
}

static void test_sigkill_leaves_it_to_the_watchdog(void **state)
{
	(void)state;
	process_ends(END_SIGKILL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lifecycle),
		cmocka_unit_test(test_exit_stops_it),
		cmocka_unit_test(test_fatal_signal_stops_it),
		cmocka_unit_test(test_abort_stops_it),
		cmocka_unit_test(test_sigkill_leaves_it_to_the_watchdog),
	};

	/* What is tested is that nothing is left behind. */
	unsetenv("PGSERVER_KEEP");
	/* Missing binaries fail every test; say why once, up front. */
	if (!pgserver_bindir())
		return 1;
	return cmocka_run_group_tests_name("unit_pgserver", tests, NULL, NULL);
}
