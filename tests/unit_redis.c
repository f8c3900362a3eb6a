/* unit_redis.c - the Redis client (src/redis.h) against a real
 * redis-server: a round trip with binary values and a DB from the URL; a
 * pipeline of 10,000 commands answered in order; error replies; a command
 * left unanswered ends TIMEOUT and the client drops the connection and
 * comes back; the in-flight bound; redis_free with commands pending; bad
 * URLs and refused commands; a handshake Redis refuses is retried; and
 * Redis killed and restarted empty: pending commands end DISCONNECTED,
 * on_state goes down and up once, each said once in the log, commands
 * work again and subscriptions are restored.
 *
 * The server is tests/redisserver.h's (a free loopback port, a temporary
 * directory, stopped however this process ends). Each test runs its own
 * loop on this thread until a condition holds, checked after every loop
 * turn, with a deadline: the tests wait for events, never for time,
 * except where time is the point (a timeout, retries while Redis is
 * away). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "loop.h"
#include "redis.h"
#include "redisserver.h"

static redisserver_t *rs;
static loop_t *loop;

/* ---- running the loop until something holds ------------------------ */

static int (*until_fn)(void *);
static void *until_arg;
static int64_t until_deadline;
static int until_timed_out;
static int guard_fd = -1;
static loop_watch_t guard_watch;

static void before_sleep(loop_t *l, void *ud)
{
	(void)ud;
	if (until_fn && until_fn(until_arg)) {
		loop_stop(l);
	} else if (clock_mono_ms() >= until_deadline) {
		until_timed_out = 1;
		loop_stop(l);
	}
}

/* Turns the loop every 10 ms, so that before_sleep sees the deadline. */
static void on_guard(loop_t *l, loop_watch_t *w, uint32_t events)
{
	uint64_t n;

	(void)l;
	(void)w;
	(void)events;
	if (read(guard_fd, &n, sizeof n) < 0) {
		/* EAGAIN: nothing to do */
	}
}

/* Runs the loop until cond(arg) holds (1) or ms pass (0). cond NULL: for
 * ms exactly. */
static int run_until(int (*cond)(void *), void *arg, int ms)
{
	if (cond && cond(arg))
		return 1;
	until_fn = cond;
	until_arg = arg;
	until_deadline = clock_mono_ms() + ms;
	until_timed_out = 0;
	loop_run(loop);
	until_fn = NULL;
	return cond ? !until_timed_out : 1;
}

typedef struct goal {
	const int *counter;
	int n;
} goal_t;

static int reached(void *p)
{
	const goal_t *g = p;

	return *g->counter >= g->n;
}

/* Runs until *counter reaches n (1) or ms pass (0). */
static int run_until_count(const int *counter, int n, int ms)
{
	goal_t g = {counter, n};

	return run_until(reached, &g, ms);
}

/* ---- what the callbacks saw ------------------------------------------ */

typedef struct seen {
	int calls;
	redis_status_t status;
	int type;
	long long integer;
	char str[2048];
	size_t len;
} seen_t;

static void on_reply(redis_t *r, void *ud, redis_status_t status, const redisReply *reply)
{
	seen_t *s = ud;

	(void)r;
	s->calls++;
	s->status = status;
	s->type = reply ? reply->type : -1;
	s->integer = reply ? reply->integer : 0;
	s->len = 0;
	s->str[0] = '\0';
	if (reply && reply->str) {
		s->len = reply->len < sizeof s->str - 1 ? reply->len : sizeof s->str - 1;
		memcpy(s->str, reply->str, s->len);
		s->str[s->len] = '\0';
	}
}

/* A subscriber's view. */
typedef struct msgs {
	int n;
	char channel[64];
	char last[64];
	size_t len;
} msgs_t;

static void on_message(redis_t *r, void *ud, const char *channel, const char *msg, size_t len)
{
	msgs_t *m = ud;

	(void)r;
	m->n++;
	snprintf(m->channel, sizeof m->channel, "%s", channel);
	m->len = len < sizeof m->last ? len : sizeof m->last;
	memcpy(m->last, msg, m->len);
}

static int got_message(void *p)
{
	return ((msgs_t *)p)->n > 0;
}

static int called(void *p)
{
	return ((seen_t *)p)->calls > 0;
}

typedef struct state {
	int ups, downs, last;
	int bad_order; /* two calls with the same up in a row */
} state_t;

static void on_state(redis_t *r, void *ud, int up)
{
	state_t *s = ud;

	(void)r;
	if (s->ups + s->downs > 0 && s->last == up)
		s->bad_order = 1;
	if (s->ups + s->downs == 0 && !up)
		s->bad_order = 1;
	s->last = up;
	if (up)
		s->ups++;
	else
		s->downs++;
}

static int is_up(void *p)
{
	return redis_is_up(p);
}

static redis_t *client(const char *url, redis_opts_t *o, state_t *st)
{
	redis_t *r;

	if (st) {
		o->on_state = on_state;
		o->ud = st;
	}
	r = redis_new(loop, url, o);
	assert_non_null(r);
	return r;
}

static redis_t *client_up(redis_opts_t *o, state_t *st)
{
	redis_t *r = client(redisserver_url(rs), o, st);

	assert_true(run_until(is_up, r, 3000));
	return r;
}

/* ---- stderr capture, for what the module logs ------------------------ */

static int saved_stderr = -1;
static char capture_path[64];

static void capture_start(void)
{
	int fd;

	snprintf(capture_path, sizeof capture_path, "/tmp/unit_redis_log_XXXXXX");
	fd = mkstemp(capture_path);
	assert_true(fd >= 0);
	saved_stderr = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
}

/* Stops capturing, echoes what was captured, returns it (malloc'd). */
static char *capture_end(void)
{
	FILE *f;
	char *buf = calloc(1, 65536);
	size_t n;

	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	f = fopen(capture_path, "r");
	n = f ? fread(buf, 1, 65535, f) : 0;
	buf[n] = '\0';
	if (f)
		fclose(f);
	unlink(capture_path);
	if (write(STDERR_FILENO, buf, n) < 0) {
		/* the echo is only for the reader of the test's output */
	}
	return buf;
}

static int count_of(const char *hay, const char *needle)
{
	int n = 0;

	while ((hay = strstr(hay, needle))) {
		n++;
		hay += strlen(needle);
	}
	return n;
}

/* ---- fixtures -------------------------------------------------------- */

static int group_setup(void **state)
{
	struct itimerspec its = {{0, 10000000}, {0, 10000000}};
	loop_hooks_t hooks = {.before_sleep = before_sleep};

	(void)state;
	rs = redisserver_start();
	if (!rs)
		return -1;
	loop = loop_new(&hooks);
	guard_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (!loop || guard_fd < 0)
		return -1;
	timerfd_settime(guard_fd, 0, &its, NULL);
	guard_watch.on_io = on_guard;
	return loop_watch_add(loop, guard_fd, EPOLLIN, &guard_watch);
}

static int group_teardown(void **state)
{
	(void)state;
	if (loop) {
		loop_watch_del(loop, guard_fd);
		loop_free(loop);
	}
	if (guard_fd >= 0)
		close(guard_fd);
	redisserver_stop(rs);
	return 0;
}

/* ---- tests ----------------------------------------------------------- */

static void test_roundtrip(void **state)
{
	static const char value[] = "a\0b\r\n\0c";
	redis_opts_t o = {0};
	state_t st = {0};
	seen_t set = {0}, get = {0}, nil = {0}, db = {0};
	const char *argv[2] = {"GET", "bin"};
	char url[128];
	redis_t *r, *r2;

	(void)state;
	r = client_up(&o, &st);
	assert_int_equal(st.ups, 1);
	assert_int_equal(redis_command(r, on_reply, &set, "SET bin %b", value, sizeof value - 1), 0);
	assert_int_equal(redis_commandv(r, on_reply, &get, 2, argv, NULL), 0);
	assert_int_equal(redis_command(r, on_reply, &nil, "GET %s", "no-such-key"), 0);
	assert_true(run_until(called, &nil, 2000));
	assert_int_equal(set.calls, 1);
	assert_int_equal(set.status, REDIS_STATUS_OK);
	assert_string_equal(set.str, "OK");
	assert_int_equal(get.calls, 1);
	assert_int_equal(get.status, REDIS_STATUS_OK);
	assert_int_equal(get.type, REDIS_REPLY_STRING);
	assert_int_equal(get.len, sizeof value - 1);
	assert_memory_equal(get.str, value, sizeof value - 1);
	assert_int_equal(nil.status, REDIS_STATUS_OK);
	assert_int_equal(nil.type, REDIS_REPLY_NIL);

	/* A key with NULs in its name and value, through the argv form. */
	{
		const char *av[3] = {"SET", "k\0ey", "v\0al"};
		const size_t al[3] = {3, 4, 4};
		const char *gv[2] = {"GET", "k\0ey"};
		const size_t gl[2] = {3, 4};
		seen_t s1 = {0}, s2 = {0};

		assert_int_equal(redis_commandv(r, on_reply, &s1, 3, av, al), 0);
		assert_int_equal(redis_commandv(r, on_reply, &s2, 2, gv, gl), 0);
		assert_true(run_until(called, &s2, 2000));
		assert_int_equal(s2.len, 4);
		assert_memory_equal(s2.str, "v\0al", 4);
	}

	/* The URL's DB is selected on connect (and on every reconnect). */
	snprintf(url, sizeof url, "%s/3", redisserver_url(rs));
	r2 = client(url, &o, NULL);
	assert_true(run_until(is_up, r2, 3000));
	assert_int_equal(redis_command(r2, on_reply, &db, "GET bin"), 0);
	assert_true(run_until(called, &db, 2000));
	assert_int_equal(db.type, REDIS_REPLY_NIL);
	memset(&db, 0, sizeof db);
	assert_int_equal(redis_command(r2, on_reply, &db, "CLIENT INFO"), 0);
	assert_true(run_until(called, &db, 2000));
	assert_non_null(strstr(db.str, " db=3 "));
	redis_free(r2);
	assert_int_equal(st.downs, 0);
	redis_free(r);
	assert_int_equal(st.downs, 0); /* redis_free calls no on_state */
}

#define PIPELINE 10000

static int pipe_next, pipe_bad;

static void on_pipe(redis_t *r, void *ud, redis_status_t status, const redisReply *reply)
{
	int i = (int)(intptr_t)ud;

	(void)r;
	if (i != pipe_next || status != REDIS_STATUS_OK || reply->type != REDIS_REPLY_INTEGER ||
	    reply->integer != i + 1)
		pipe_bad++;
	pipe_next++;
}

static void test_pipeline(void **state)
{
	redis_opts_t o = {0};
	seen_t del = {0};
	redis_t *r;
	int i;

	(void)state;
	r = client_up(&o, NULL);
	assert_int_equal(redis_command(r, on_reply, &del, "DEL counter"), 0);
	assert_true(run_until(called, &del, 2000));
	pipe_next = pipe_bad = 0;
	/* All sent before the loop turns once: 10,000 in flight at once. */
	for (i = 0; i < PIPELINE; i++)
		assert_int_equal(redis_command(r, on_pipe, (void *)(intptr_t)i, "INCR counter"), 0);
	assert_true(run_until_count(&pipe_next, PIPELINE, 5000));
	assert_int_equal(pipe_bad, 0);
	assert_true(redis_is_up(r));
	redis_free(r);
}

static void test_error_reply(void **state)
{
	redis_opts_t o = {0};
	seen_t set = {0}, push = {0}, after = {0}, unknown = {0};
	redis_t *r;

	(void)state;
	r = client_up(&o, NULL);
	assert_int_equal(redis_command(r, on_reply, &set, "SET str x"), 0);
	assert_int_equal(redis_command(r, on_reply, &push, "LPUSH str y"), 0);
	assert_int_equal(redis_command(r, on_reply, &unknown, "NOSUCHCOMMAND"), 0);
	assert_int_equal(redis_command(r, on_reply, &after, "GET str"), 0);
	assert_true(run_until(called, &after, 2000));
	assert_int_equal(push.calls, 1);
	assert_int_equal(push.status, REDIS_STATUS_ERROR);
	assert_int_equal(push.type, REDIS_REPLY_ERROR);
	assert_true(!strncmp(push.str, "WRONGTYPE", 9));
	assert_int_equal(unknown.status, REDIS_STATUS_ERROR);
	assert_true(!strncmp(unknown.str, "ERR unknown command", 19));
	/* An error reply is an answer: the connection stays. */
	assert_int_equal(after.status, REDIS_STATUS_OK);
	assert_string_equal(after.str, "x");
	assert_true(redis_is_up(r));
	redis_free(r);
}

static void test_timeout(void **state)
{
	redis_opts_t o = {.timeout_ms = 200, .reconnect_min_ms = 20, .reconnect_max_ms = 50};
	state_t st = {0};
	seen_t blpop = {0}, behind = {0}, ping = {0}, late = {0};
	redis_t *r;
	int64_t t0, took;

	(void)state;
	r = client_up(&o, &st);
	/* BLPOP on an empty list blocks this connection for 2 s: no reply
	 * within 200 ms. (Not DEBUG SLEEP: Redis 7 refuses DEBUG unless
	 * enable-debug-command is set, and it would stall every test's
	 * server, not one connection.) */
	t0 = clock_mono_ms();
	assert_int_equal(redis_command(r, on_reply, &blpop, "BLPOP empty-list 2"), 0);
	assert_int_equal(redis_command(r, on_reply, &behind, "PING"), 0);
	assert_true(run_until(called, &behind, 3000));
	took = clock_mono_ms() - t0;
	assert_int_equal(blpop.calls, 1);
	assert_int_equal(blpop.status, REDIS_STATUS_TIMEOUT);
	/* Waiting behind it, it never had its answer either: its own time
	 * was up too (TIMEOUT), or, sent a moment later on a busy machine,
	 * it went with the connection (DISCONNECTED) -- never the BLPOP's
	 * reply or another's. */
	assert_true(behind.status == REDIS_STATUS_TIMEOUT || behind.status == REDIS_STATUS_DISCONNECTED);
	assert_true(took >= 200);
	/* Before Redis would have answered the BLPOP (at 2 s). */
	assert_true(took < 2000);
	/* The connection went with it. */
	assert_int_equal(st.downs, 1);
	assert_false(redis_is_up(r));
	assert_int_equal(redis_command(r, on_reply, &late, "PING"), -ENOTCONN);
	assert_int_equal(late.calls, 0);
	/* ... and comes back; its replies are its own. */
	assert_true(run_until(is_up, r, 3000));
	assert_int_equal(st.ups, 2);
	assert_int_equal(redis_command(r, on_reply, &ping, "ECHO after-timeout"), 0);
	assert_true(run_until(called, &ping, 2000));
	assert_int_equal(ping.status, REDIS_STATUS_OK);
	assert_string_equal(ping.str, "after-timeout");
	assert_int_equal(blpop.calls, 1);
	assert_int_equal(st.bad_order, 0);
	redis_free(r);
}

static void test_inflight_bound(void **state)
{
	redis_opts_t o = {.max_inflight = 4};
	seen_t s[6];
	redis_t *r;
	int i;

	(void)state;
	memset(s, 0, sizeof s);
	r = client_up(&o, NULL);
	for (i = 0; i < 4; i++)
		assert_int_equal(redis_command(r, on_reply, &s[i], "PING"), 0);
	assert_int_equal(redis_command(r, on_reply, &s[4], "PING"), -EAGAIN);
	assert_int_equal(s[4].calls, 0);
	assert_true(run_until(called, &s[3], 2000));
	for (i = 0; i < 4; i++)
		assert_int_equal(s[i].calls, 1);
	/* Room again once answered. */
	assert_int_equal(redis_command(r, on_reply, &s[5], "PING"), 0);
	assert_true(run_until(called, &s[5], 2000));
	assert_int_equal(s[4].calls, 0);
	redis_free(r);
}

/* Waits until Redis has n clients blocked (in BLPOP), asking through a
 * client of its own. */
static void wait_blocked(int n)
{
	redis_opts_t o = {0};
	redis_t *probe = client_up(&o, NULL);
	char want[32];
	int i;

	snprintf(want, sizeof want, "blocked_clients:%d\r", n);
	for (i = 0; i < 200; i++) {
		seen_t s = {0};

		assert_int_equal(redis_command(probe, on_reply, &s, "INFO clients"), 0);
		assert_true(run_until(called, &s, 2000));
		if (strstr(s.str, want))
			break;
	}
	redis_free(probe);
	assert_true(i < 200);
}

#define PENDING 100

static int pending_calls[PENDING], pending_disc;

static void on_pending(redis_t *r, void *ud, redis_status_t status, const redisReply *reply)
{
	int i = (int)(intptr_t)ud;
	seen_t again = {0};

	pending_calls[i]++;
	if (status == REDIS_STATUS_DISCONNECTED && !reply)
		pending_disc++;
	/* A callback run by redis_free may try to send: refused. */
	if (redis_command(r, on_reply, &again, "PING") != -ENOTCONN)
		pending_disc = -100000;
}

static void test_free_pending(void **state)
{
	redis_opts_t o = {0};
	seen_t ping = {0};
	redis_t *r;
	int i;

	(void)state;
	memset(pending_calls, 0, sizeof pending_calls);
	pending_disc = 0;
	r = client_up(&o, NULL);
	/* One command written and blocked in Redis... */
	assert_int_equal(redis_command(r, on_pending, (void *)(intptr_t)0, "BLPOP empty-list 5"), 0);
	assert_int_equal(redis_command(r, on_reply, &ping, "PING"), 0);
	wait_blocked(1);
	/* ... a PING queued behind it in Redis, and the rest not even
	 * written. */
	for (i = 1; i < PENDING; i++)
		assert_int_equal(redis_command(r, on_pending, (void *)(intptr_t)i, "PING"), 0);
	redis_free(r);
	for (i = 0; i < PENDING; i++)
		assert_int_equal(pending_calls[i], 1);
	assert_int_equal(pending_disc, PENDING);
	assert_int_equal(ping.calls, 1);
	assert_int_equal(ping.status, REDIS_STATUS_DISCONNECTED);
	/* Nothing more comes from the loop afterwards. */
	run_until(NULL, NULL, 30);
	for (i = 0; i < PENDING; i++)
		assert_int_equal(pending_calls[i], 1);
}

static void test_refused(void **state)
{
	redis_opts_t o = {0};
	seen_t s = {0};
	const char *none[1] = {NULL};
	redis_t *r;

	(void)state;
	r = client(redisserver_url(rs), &o, NULL);
	/* Not up yet: refused at once, not queued. */
	assert_false(redis_is_up(r));
	assert_int_equal(redis_command(r, on_reply, &s, "PING"), -ENOTCONN);
	assert_true(run_until(is_up, r, 3000));
	assert_int_equal(redis_command(r, on_reply, &s, "SUBSCRIBE x"), -EINVAL);
	assert_int_equal(redis_command(r, on_reply, &s, "psubscribe x*"), -EINVAL);
	assert_int_equal(redis_command(r, on_reply, &s, "SSUBSCRIBE x"), -EINVAL);
	assert_int_equal(redis_command(r, on_reply, &s, "MONITOR"), -EINVAL);
	assert_int_equal(redis_command(r, on_reply, &s, "select 2"), -EINVAL);
	assert_int_equal(redis_command(r, on_reply, &s, ""), -EINVAL);
	assert_int_equal(redis_commandv(r, on_reply, &s, 0, none, NULL), -EINVAL);
	run_until(NULL, NULL, 20);
	assert_int_equal(s.calls, 0);
	/* A client with commands in flight cannot become a subscriber. */
	assert_int_equal(redis_command(r, on_reply, &s, "PING"), 0);
	assert_int_equal(redis_subscribe(r, "ch", on_message, NULL), -EINVAL);
	assert_true(run_until(called, &s, 2000));
	redis_free(r);
}

static void test_bad_urls(void **state)
{
	static const struct {
		const char *url, *says;
	} bad[] = {
		{"127.0.0.1:6379", "does not start with redis://"},
		{"http://127.0.0.1:6379", "does not start with redis://"},
		{"redis://", "no host"},
		{"redis://:6379", "no host"},
		{"redis://127.0.0.1:0", "port"},
		{"redis://127.0.0.1:65536", "port"},
		{"redis://127.0.0.1:", "port"},
		{"redis://127.0.0.1:12x", "unexpected"},
		{"redis://127.0.0.1:6379/x", "DB"},
		{"redis://127.0.0.1:6379/1/2", "unexpected"},
		{"redis://127.0.0.1:6379?timeout=1", "options"},
		{"redis://[::1:6379", "not closed"},
		{"rediss://127.0.0.1:6379", "TLS"},
		{"unix:///run/redis.sock", "Unix sockets"},
		{"redis://a..b:6379", "cannot resolve"},
	};
	char *log;
	size_t i;

	(void)state;
	capture_start();
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		errno = 0;
		if (redis_new(loop, bad[i].url, NULL) != NULL || errno != EINVAL) {
			capture_end();
			fail_msg("accepted %s", bad[i].url);
		}
	}
	errno = 0;
	assert_null(redis_new(loop, "redis://user:s3cret@127.0.0.1:6379", NULL));
	log = capture_end();
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char line[256];

		if (!strcmp(bad[i].says, "cannot resolve"))
			snprintf(line, sizeof line, "%s", bad[i].says);
		else
			snprintf(line, sizeof line, "bad URL \"%s\": ", bad[i].url);
		if (!strstr(log, line) || !strstr(log, bad[i].says))
			fail_msg("no clear message for %s in:\n%s", bad[i].url, log);
	}
	assert_non_null(strstr(log, "credentials in the URL are not supported"));
	assert_null(strstr(log, "s3cret")); /* never logged */
	free(log);

	/* The forms that are good: a name, a default port, IPv6. */
	{
		char url[128];
		redis_t *r;

		snprintf(url, sizeof url, "redis://localhost:%d/", redisserver_port(rs));
		r = client(url, &(redis_opts_t){0}, NULL);
		assert_true(run_until(is_up, r, 3000));
		redis_free(r);
		snprintf(url, sizeof url, "redis://[::1]:%d", redisserver_port(rs));
		r = client(url, &(redis_opts_t){0}, NULL);
		redis_free(r);
	}
}

static void test_handshake_refused(void **state)
{
	redis_opts_t o = {.reconnect_min_ms = 20, .reconnect_max_ms = 40};
	state_t st = {0};
	char url[128], *log;
	redis_t *r;

	(void)state;
	/* Redis has 16 DBs: SELECT 99 fails on every attempt. */
	snprintf(url, sizeof url, "%s/99", redisserver_url(rs));
	capture_start();
	r = client(url, &o, &st);
	run_until(NULL, NULL, 300);
	redis_free(r);
	log = capture_end();
	assert_int_equal(st.ups, 0);
	assert_int_equal(st.downs, 0);
	/* Said once, not once per attempt. */
	assert_int_equal(count_of(log, "Redis refused the handshake: ERR DB index is out of range"), 1);
	free(log);
}

/* Publishes msg (len bytes) on channel from r, waits for the receiver
 * count. */
static long long publish(redis_t *r, const char *channel, const char *msg, size_t len)
{
	seen_t s = {0};

	assert_int_equal(redis_command(r, on_reply, &s, "PUBLISH %s %b", channel, msg, len), 0);
	assert_true(run_until(called, &s, 2000));
	assert_int_equal(s.status, REDIS_STATUS_OK);
	return s.integer;
}

/* PUBSUB NUMSUB's answer, [channel, count]: the count. */
static void on_numsub(redis_t *r, void *ud, redis_status_t status, const redisReply *reply)
{
	seen_t *s = ud;

	(void)r;
	s->calls++;
	s->status = status;
	s->integer = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 ? reply->element[1]->integer : -1;
}

static void test_subscribe(void **state)
{
	redis_opts_t o = {0};
	state_t sst = {0};
	msgs_t a = {0}, b = {0};
	seen_t s = {0};
	redis_t *cmd, *sub;
	int i;

	(void)state;
	cmd = client_up(&o, NULL);
	sub = client(redisserver_url(rs), &o, &sst);
	assert_int_equal(redis_subscribe(sub, "chan:a", on_message, &a), 0);
	assert_int_equal(redis_subscribe(sub, "chan:a", on_message, &a), -EEXIST);
	/* Up means subscribed: a message published now arrives. */
	assert_true(run_until(is_up, sub, 3000));
	assert_int_equal(publish(cmd, "chan:a", "he\0llo", 6), 1);
	assert_true(run_until(got_message, &a, 2000));
	assert_string_equal(a.channel, "chan:a");
	assert_int_equal(a.len, 6);
	assert_memory_equal(a.last, "he\0llo", 6);
	assert_int_equal(redis_command(sub, on_reply, &s, "PING"), -EINVAL);

	/* Subscribing while up: it takes effect once Redis has the
	 * SUBSCRIBE, which PUBSUB NUMSUB shows. */
	assert_int_equal(redis_subscribe(sub, "chan:b", on_message, &b), 0);
	for (i = 0; i < 100; i++) {
		memset(&s, 0, sizeof s);
		assert_int_equal(redis_command(cmd, on_numsub, &s, "PUBSUB NUMSUB chan:b"), 0);
		assert_true(run_until(called, &s, 2000));
		if (s.integer == 1)
			break;
	}
	assert_true(i < 100);
	assert_int_equal(publish(cmd, "chan:b", "x", 1), 1);
	assert_true(run_until(got_message, &b, 2000));
	assert_string_equal(b.channel, "chan:b");
	assert_int_equal(a.n, 1);
	assert_int_equal(sst.ups, 1);
	redis_free(sub);
	redis_free(cmd);
}

static int all_down(void *p)
{
	state_t **s = p;

	return s[0]->downs >= 1 && s[1]->downs >= 1;
}

static int all_up(void *p)
{
	state_t **s = p;

	return s[0]->ups >= 2 && s[1]->ups >= 2 && s[2]->ups >= 1;
}

static void test_kill_restart(void **state)
{
	redis_opts_t o = {.timeout_ms = 5000, .reconnect_min_ms = 50, .reconnect_max_ms = 200};
	state_t cst = {0}, sst = {0}, lst = {0};
	state_t *states[3] = {&cst, &sst, &lst};
	seen_t blpop = {0}, set = {0}, get = {0}, s = {0};
	msgs_t m = {0};
	redis_t *cmd, *sub, *late;
	char *log;

	(void)state;
	o.name = "cmd";
	cmd = client(redisserver_url(rs), &o, &cst);
	o.name = "sub";
	sub = client(redisserver_url(rs), &o, &sst);
	assert_int_equal(redis_subscribe(sub, "node:7", on_message, &m), 0);
	assert_true(run_until(is_up, cmd, 3000));
	assert_true(run_until(is_up, sub, 3000));
	assert_int_equal(redis_command(cmd, on_reply, &set, "SET before-kill 1"), 0);
	assert_true(run_until(called, &set, 2000));
	/* Pending when Redis dies: */
	assert_int_equal(redis_command(cmd, on_reply, &blpop, "BLPOP empty-list 4"), 0);
	wait_blocked(1);

	capture_start();
	assert_int_equal(redisserver_kill(rs), 0);
	if (!run_until(all_down, states, 3000)) {
		free(capture_end());
		fail_msg("on_state(down) not called");
	}
	/* Killed, with the command pending. */
	assert_int_equal(blpop.calls, 1);
	assert_int_equal(blpop.status, REDIS_STATUS_DISCONNECTED);
	assert_false(redis_is_up(cmd));
	assert_int_equal(redis_command(cmd, on_reply, &s, "PING"), -ENOTCONN);
	/* A client made while Redis is away keeps trying, as do the others:
	 * several attempts fail in this time. */
	o.name = "late";
	late = client(redisserver_url(rs), &o, &lst);
	run_until(NULL, NULL, 400);
	assert_int_equal(lst.ups + lst.downs, 0);
	assert_int_equal(cst.downs, 1);

	assert_int_equal(redisserver_restart(rs), 0);
	if (!run_until(all_up, states, 5000)) {
		free(capture_end());
		fail_msg("on_state(up) not called after the restart");
	}
	log = capture_end();
	/* Each transition said once per client, not once per attempt. */
	assert_int_equal(count_of(log, "redis: cmd at "), 2);
	assert_int_equal(count_of(log, "redis: sub at "), 2);
	assert_int_equal(count_of(log, "connection lost"), 2);
	assert_int_equal(count_of(log, "connection restored"), 2);
	assert_int_equal(count_of(log, "redis: late at "), 2); /* cannot connect, connected */
	free(log);

	/* Restarted empty; commands work again. */
	assert_int_equal(redis_command(cmd, on_reply, &get, "GET before-kill"), 0);
	assert_true(run_until(called, &get, 2000));
	assert_int_equal(get.status, REDIS_STATUS_OK);
	assert_int_equal(get.type, REDIS_REPLY_NIL);
	/* The subscription is back: up means subscribed again. */
	assert_int_equal(publish(late, "node:7", "after", 5), 1);
	assert_true(run_until(got_message, &m, 2000));
	assert_memory_equal(m.last, "after", 5);
	assert_int_equal(cst.bad_order + sst.bad_order + lst.bad_order, 0);
	assert_int_equal(cst.ups, 2);
	assert_int_equal(sst.ups, 2);
	redis_free(late);
	redis_free(sub);
	redis_free(cmd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_pipeline),
		cmocka_unit_test(test_error_reply),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_inflight_bound),
		cmocka_unit_test(test_free_pending),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_bad_urls),
		cmocka_unit_test(test_handshake_refused),
		cmocka_unit_test(test_subscribe),
		cmocka_unit_test(test_kill_restart),
	};

	return cmocka_run_group_tests_name("unit_redis", tests, group_setup, group_teardown);
}
