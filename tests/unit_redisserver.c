/* unit_redisserver.c - the tests' throwaway Redis (redisserver.h) by
 * itself: it starts on a free port answering commands, keeps nothing on
 * disk, is killed and starts again empty on the same port, and stops
 * leaving nothing behind; and a test process that ends without stopping
 * it (a plain exit, a fatal signal, SIGKILL) still leaves no redis-server
 * running and no directory. Needs redis-server: without it it fails,
 * saying what to install. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis.h>

#include "redisserver.h"
#include "tmpserver.h"

static redisContext *connect_to(int port)
{
	struct timeval tv = {2, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);

	if (!c || c->err)
		fail_msg("cannot connect to redis on port %d: %s", port, c ? c->errstr : "out of memory");
	redisSetTimeout(c, tv);
	return c;
}

/* Runs a command; returns the reply (the caller frees it). Fails the
 * test when there is none or it is an error. */
static redisReply *command(redisContext *c, const char *fmt, ...)
{
	redisReply *r;
	va_list ap;

	va_start(ap, fmt);
	r = redisvCommand(c, fmt, ap);
	va_end(ap);
	if (!r)
		fail_msg("%s: %s", fmt, c->errstr);
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("%s: %s", fmt, r->str);
	return r;
}

/* 1 when nothing accepts a connection on the port. */
static int refused(int port)
{
	struct timeval tv = {1, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
	int r = !c || c->err;

	redisFree(c);
	return r;
}

static int exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static void test_lifecycle(void **state)
{
	redisserver_t *rs;
	redisContext *c;
	redisReply *r;
	char dir[160], url[64];
	int port;

	(void)state;
	rs = redisserver_start();
	assert_non_null(rs);
	port = redisserver_port(rs);
	assert_true(port > 0 && port != 6379);
	snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
	assert_string_equal(redisserver_url(rs), url);
	snprintf(dir, sizeof dir, "%s", redisserver_dir(rs));
	assert_true(exists(dir));
	assert_true(redisserver_alive(rs));
	assert_true(redisserver_pid(rs) > 0);

	c = connect_to(port);
	freeReplyObject(command(c, "SET %s %s", "parley:k", "v1"));
	r = command(c, "GET %s", "parley:k");
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	assert_string_equal(r->str, "v1");
	freeReplyObject(r);
	/* Nothing persisted: what a restart brings back is nothing. */
	r = command(c, "CONFIG GET save");
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 2);
	assert_string_equal(r->element[1]->str, "");
	freeReplyObject(r);
	r = command(c, "CONFIG GET appendonly");
	assert_string_equal(r->element[1]->str, "no");
	freeReplyObject(r);
	r = command(c, "CONFIG GET dir");
	assert_string_equal(r->element[1]->str, dir);
	freeReplyObject(r);
	assert_int_equal(redisserver_restart(rs), -1); /* it still runs */

	assert_int_equal(redisserver_kill(rs), 0);
	assert_false(redisserver_alive(rs));
	assert_int_equal(redisserver_pid(rs), 0);
	assert_true(refused(port));
	/* The client sees its connection gone. */
	r = redisCommand(c, "GET %s", "parley:k");
	assert_null(r);
	redisFree(c);
	assert_int_equal(redisserver_kill(rs), -1); /* already gone */

	assert_int_equal(redisserver_restart(rs), 0);
	assert_int_equal(redisserver_port(rs), port);
	assert_true(redisserver_alive(rs));
	c = connect_to(port);
	r = command(c, "GET %s", "parley:k");
	assert_int_equal(r->type, REDIS_REPLY_NIL);
	freeReplyObject(r);
	r = command(c, "DBSIZE");
	assert_int_equal(r->integer, 0);
	freeReplyObject(r);
	redisFree(c);

	redisserver_stop(rs);
	assert_false(exists(dir));
	assert_true(refused(port));
	redisserver_stop(NULL);
}

/* How the child of process_ends leaves. */
enum { END_EXIT, END_SIGTERM, END_SIGKILL };

/* A child process starts a server, tells us where, and ends the given
 * way without stopping it: the server must go, and its directory. A
 * plain exit stops it before the process is gone (atexit); a fatal
 * signal kills it at once (the handler); SIGKILL leaves it to the
 * watchdog. */
static void process_ends(int how)
{
	struct {
		int port;
		pid_t pid;
		char dir[160];
	} where;
	int p[2], status;
	long long deadline;
	pid_t pid;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		redisserver_t *rs = redisserver_start();
		close(p[0]);
		memset(&where, 0, sizeof where);
		if (rs) {
			where.port = redisserver_port(rs);
			where.pid = redisserver_pid(rs);
			snprintf(where.dir, sizeof where.dir, "%s", redisserver_dir(rs));
		}
		if (write(p[1], &where, sizeof where) != (ssize_t)sizeof where || !rs)
			_exit(3);
		switch (how) {
		case END_EXIT:
			exit(0);
		case END_SIGTERM:
			raise(SIGTERM);
			break;
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
	assert_true(where.port > 0 && where.pid > 0);
	if (how == END_EXIT) {
		/* Stopped and removed before the process was gone. */
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		assert_false(exists(where.dir));
		assert_true(tmpserver_pid_gone(where.pid, "redis-server"));
		assert_true(refused(where.port));
		return;
	}
	assert_true(WIFSIGNALED(status));
	/* The watchdog needs a moment: poll for its end. */
	deadline = tmpserver_now_ms() + 10000;
	while (exists(where.dir) || !tmpserver_pid_gone(where.pid, "redis-server") || !refused(where.port)) {
		if (tmpserver_now_ms() > deadline)
			fail_msg("the redis-server of a dead test process is still there (%s, pid %d, port %d)",
			         where.dir, (int)where.pid, where.port);
		tmpserver_nap(10);
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
		cmocka_unit_test(test_sigkill_leaves_it_to_the_watchdog),
	};

	/* What is tested is that nothing is left behind. */
	unsetenv("REDISSERVER_KEEP");
	/* A missing binary fails every test; say why once, up front. */
	if (!redisserver_bin())
		return 1;
	return cmocka_run_group_tests_name("unit_redisserver", tests, NULL, NULL);
}
