/* harness.c - the integration test harness of harness.h. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pgserver.h"
#include "store.h"

/* ---- the store under test ----------------------------------------- */

/* This process's PostgreSQL server (PARLEY_TEST_STORE=postgresql), made
 * at the first start that needs it; pgserver stops it at exit. */
static pgserver_t *pg;
static int pg_failed;

/* 1 for PostgreSQL, 0 for SQLite; a value it does not know ends the
 * process, for it would otherwise test the wrong store quietly. */
static int on_postgresql(void)
{
	const char *v = getenv("PARLEY_TEST_STORE");

	if (!v || !*v || !strcmp(v, "sqlite"))
		return 0;
	if (!strcmp(v, "postgresql"))
		return 1;
	fprintf(stderr, "harness: PARLEY_TEST_STORE='%s': expected sqlite or postgresql\n", v);
	exit(2);
}

/* A fresh database's URI into out; -1 (said why) without one. */
static int fresh_database(char *out, size_t cap)
{
	if (pg_failed)
		return -1;
	if (!pg) {
		/* The test binary is built from the same tree as the server
		 * it starts: no backend here, none there. */
		if (!store_backend_name("postgresql://probe@127.0.0.1/probe")) {
			fprintf(stderr, "harness: PARLEY_TEST_STORE=postgresql, but this build has no PostgreSQL "
			                "store backend\n");
			pg_failed = 1;
			return -1;
		}
		if (!(pg = pgserver_start())) {
			fprintf(stderr, "harness: no PostgreSQL server for PARLEY_TEST_STORE=postgresql\n");
			pg_failed = 1;
			return -1;
		}
	}
	return pgserver_create_db(pg, NULL, out, cap);
}

struct pgserver *hx_pgserver(void)
{
	return pg;
}

int hx_store_is_dir(const char *store)
{
	return !strstr(store, "://");
}

const char *hx_store_option(const char *store)
{
	return hx_store_is_dir(store) ? "--data" : "--store";
}

int hx_fresh_store(char *out, size_t cap)
{
	if (on_postgresql())
		return fresh_database(out, cap);
	snprintf(out, cap, "/tmp/parley-test-XXXXXX");
	return mkdtemp(out) ? 0 : -1;
}

static int spawn_ready(hx_server_t *s, const char *bin, const char *const *argv, const char *ready, char *line,
                       size_t cap);

int hx_start(hx_server_t *s, const char *store, const char *const *extra)
{
	const char *bin = getenv("PARLEY_BIN") ? getenv("PARLEY_BIN") : "build/parley";
	const char *argv[64];
	char line[512];
	int n = 0, i;

	memset(s, 0, sizeof *s);
	if (store) {
		snprintf(s->store, sizeof s->store, "%s", store);
	} else {
		if (hx_fresh_store(s->store, sizeof s->store) < 0)
			return -1;
		s->own_store = 1;
	}
	argv[n++] = bin;
	argv[n++] = "serve";
	argv[n++] = "--listen";
	argv[n++] = "127.0.0.1:0";
	argv[n++] = hx_store_option(s->store);
	argv[n++] = s->store;
	argv[n++] = "--threads";
	argv[n++] = "2";
	argv[n++] = "--admin-listen";
	argv[n++] = "127.0.0.1:0";
	/* Tests register hundreds of users from one address; the tests of
	 * these budgets turn them on again (later arguments win). */
	argv[n++] = "--signup-rate";
	argv[n++] = "0";
	argv[n++] = "--login-rate";
	argv[n++] = "0";
	argv[n++] = "--strangers-per-day";
	argv[n++] = "0";
	argv[n++] = "--work-rate";
	argv[n++] = "0";
	argv[n++] = "--read-rate";
	argv[n++] = "0";
	/* A stop tells every WebSocket at once (still after its acks): the
	 * drain's spread over time has a test of its own. */
	argv[n++] = "--drain-seconds";
	argv[n++] = "0";
	for (i = 0; extra && extra[i] && n < 62; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	if (spawn_ready(s, bin, argv, "listening on http://", line, sizeof line) < 0)
		return -1;
	{
		char *at = strstr(line, "listening on http://"), *admin = strstr(at, "admin http://"), *colon;
		if (admin && (colon = strchr(admin + 13, ':')))
			s->admin_port = atoi(colon + 1);
		colon = strrchr(strtok(at + 20, " \n"), ':');
		s->port = colon ? atoi(colon + 1) : 0;
	}
	return s->port > 0 ? 0 : -1;
}

int hx_start_push(hx_server_t *s, const char *store, const char *const *extra)
{
	const char *bin = getenv("PARLEY_BIN") ? getenv("PARLEY_BIN") : "build/parley";
	const char *argv[64];
	char line[512], *admin, *colon;
	int n = 0, i;

	memset(s, 0, sizeof *s);
	snprintf(s->store, sizeof s->store, "%s", store);
	argv[n++] = bin;
	argv[n++] = "push";
	argv[n++] = "--store";
	argv[n++] = s->store;
	argv[n++] = "--admin-listen";
	argv[n++] = "127.0.0.1:0";
	for (i = 0; extra && extra[i] && n < 62; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	if (spawn_ready(s, bin, argv, "push service on", line, sizeof line) < 0)
		return -1;
	if ((admin = strstr(line, "admin http://")) && (colon = strchr(admin + 13, ':')))
		s->admin_port = atoi(colon + 1);
	return s->admin_port > 0 ? 0 : -1;
}

/* Runs argv (bin's) with its stdout on s->out_fd until it prints a line
 * holding ready (within 30 s): 0 with that output in line, else -1 with
 * the process killed. */
static int spawn_ready(hx_server_t *s, const char *bin, const char *const *argv, const char *ready, char *line,
                       size_t cap)
{
	size_t len = 0;
	int pipefd[2];
	time_t deadline;
	pid_t parent;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -1;
	parent = getpid();
	s->pid = fork();
	if (s->pid < 0)
		return -1;
	if (s->pid == 0) {
		/* The server ends with the test however the test ends (killed
		 * included: no teardown runs then). */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(127);
		dup2(pipefd[1], STDOUT_FILENO);
		execv(bin, (char *const *)argv);
		fprintf(stderr, "harness: cannot run %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	close(pipefd[1]);
	s->out_fd = pipefd[0];
	/* The process prints one line when it is ready. */
	deadline = time(NULL) + 30;
	while (time(NULL) < deadline && len < cap - 1) {
		struct pollfd p = {.fd = s->out_fd, .events = POLLIN};
		ssize_t r;
		char *at;

		if (poll(&p, 1, 1000) <= 0)
			continue;
		r = read(s->out_fd, line + len, cap - 1 - len);
		if (r <= 0)
			break;
		len += (size_t)r;
		line[len] = 0;
		if ((at = strstr(line, ready)) && strchr(at, '\n'))
			return 0;
	}
	hx_stop(s, SIGKILL);
	return -1;
}

int hx_node(const char *const *argv, const char *port_file, pid_t *pid)
{
	const char *args[32];
	pid_t parent = getpid();
	int port = 0, i, n = 0;

	args[n++] = "node";
	for (i = 0; argv[i] && n < 31; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	unlink(port_file);
	if ((*pid = fork()) == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(127);
		execvp("node", (char *const *)args);
		_exit(127);
	}
	assert_true(*pid > 0);
	for (i = 0; i < 600 && !port; i++) {
		FILE *f = fopen(port_file, "r");
		struct timespec ts = {0, 50 * 1000000};
		if (f) {
			if (fscanf(f, "%d", &port) != 1)
				port = 0;
			fclose(f);
		}
		if (port)
			break;
		if (waitpid(*pid, NULL, WNOHANG) == *pid)
			fail_msg("the fake %s exited before it listened (is node installed?)", argv[0]);
		nanosleep(&ts, NULL);
	}
	if (!port)
		fail_msg("the fake %s did not say its port within 30 s", argv[0]);
	return port;
}

void hx_node_stop(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

int hx_stop(hx_server_t *s, int sig)
{
	int status = 0;

	if (s->pid <= 0)
		return -1;
	kill(s->pid, sig);
	while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
		;
	s->pid = 0;
	if (s->out_fd > 0)
		close(s->out_fd);
	s->out_fd = 0;
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void hx_drop_store(const char *store)
{
	if (hx_store_is_dir(store))
		nftw(store, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	else if (pg)
		pgserver_drop_db(pg, store); /* else the server's end takes it */
}

void hx_cleanup(hx_server_t *s)
{
	if (!s->own_store || !s->store[0])
		return;
	hx_drop_store(s->store);
	s->own_store = 0;
}

void hx_kill(hx_server_t *s)
{
	if (s->pid > 0) {
		hx_stop(s, SIGKILL);
		hx_cleanup(s);
	}
	memset(s, 0, sizeof *s);
}

void hx_finish(hx_server_t *s)
{
	assert_int_equal(hx_stop(s, SIGTERM), 0);
	hx_cleanup(s);
}

const char *hx_name(const char *prefix)
{
	static char buf[40];
	static unsigned counter;

	snprintf(buf, sizeof buf, "%.12s_%d_%u", prefix, (int)getpid() % 100000, ++counter);
	return buf;
}

json_t *hx_http(int port, const char *method, const char *path, const char *token,
                const char *body, int *status)
{
	pc_conn_t *c = pc_connect("127.0.0.1", port);
	pc_response_t res;
	json_t *j = NULL;

	assert_non_null(c);
	assert_int_equal(pc_http(c, method, path, token, body, &res, HX_TIMEOUT), 0);
	*status = res.status;
	if (res.body_len) {
		j = json_loadb(res.body, res.body_len, 0, NULL);
		if (!j)
			fail_msg("response body is not JSON: %s", res.body);
	}
	pc_response_free(&res);
	pc_close(c);
	return j;
}

void hx_user(int port, const char *prefix, hx_user_t *u)
{
	char body[256];
	json_t *j;
	int st;

	memset(u, 0, sizeof *u);
	snprintf(u->name, sizeof u->name, "%s", hx_name(prefix));
	snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"" HX_PASSWORD "\"}", u->name);
	j = hx_http(port, "POST", "/api/v1/users", NULL, body, &st);
	assert_int_equal(st, 201);
	u->id = hx_int(j, "user_id");
	json_decref(j);
	hx_login(port, u, u);
}

void hx_login(int port, hx_user_t *u, hx_user_t *device)
{
	char body[256];
	json_t *j;
	int st;

	snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"" HX_PASSWORD "\"}", u->name);
	j = hx_http(port, "POST", "/api/v1/sessions", NULL, body, &st);
	assert_int_equal(st, 201);
	if (device != u)
		*device = *u;
	assert_int_equal(hx_int(j, "user_id"), u->id);
	device->device = hx_int(j, "device_id");
	snprintf(device->token, sizeof device->token, "%s", hx_str(j, "token"));
	json_decref(j);
}

int64_t hx_direct(int port, const hx_user_t *a, const hx_user_t *b)
{
	char body[64];
	json_t *j;
	int64_t id;
	int st;

	snprintf(body, sizeof body, "{\"members\":[%lld]}", (long long)b->id);
	j = hx_http(port, "POST", "/api/v1/conversations", a->token, body, &st);
	assert_true(st == 201 || st == 200);
	id = hx_int(j, "conversation_id");
	json_decref(j);
	return id;
}

pc_conn_t *hx_ws(int port, const hx_user_t *u)
{
	pc_conn_t *c = pc_connect("127.0.0.1", port);
	json_t *j;

	assert_non_null(c);
	assert_int_equal(pc_ws_open(c, "/chat/v1/ws", u->token, NULL, HX_TIMEOUT), 0);
	j = hx_expect(c, "ready");
	assert_int_equal(hx_int(j, "user_id"), u->id);
	assert_int_equal(hx_int(j, "device_id"), u->device);
	json_decref(j);
	return c;
}

void hx_sendf(pc_conn_t *c, const char *fmt, ...)
{
	char *text;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&text, fmt, ap);
	va_end(ap);
	assert_true(n >= 0);
	assert_int_equal(pc_ws_send_text(c, text), 0);
	free(text);
}

json_t *hx_recv_within(pc_conn_t *c, int ms)
{
	for (;;) {
		pc_frame_t f;
		json_t *j;
		int r = pc_ws_recv(c, &f, ms);

		if (r == PC_TIMEOUT)
			return NULL;
		if (r < 0)
			fail_msg("connection ended while waiting for a frame (%d)", r);
		if (f.opcode == 0x9) { /* ping: answer and keep waiting */
			pc_ws_send_frame(c, 1, 0xA, f.data, f.len, 1, 0);
			pc_frame_free(&f);
			continue;
		}
		if (f.opcode != 0x1)
			fail_msg("expected a text frame, got opcode %d (%s)", f.opcode,
			         f.len > 2 ? (char *)f.data + 2 : "");
		j = json_loadb((char *)f.data, f.len, 0, NULL);
		if (!j)
			fail_msg("frame is not JSON: %s", f.data);
		pc_frame_free(&f);
		return j;
	}
}

json_t *hx_recv(pc_conn_t *c)
{
	json_t *j = hx_recv_within(c, HX_TIMEOUT);

	if (!j)
		fail_msg("no frame within %d ms", HX_TIMEOUT);
	return j;
}

json_t *hx_next_msg(pc_conn_t *c, int ms)
{
	json_t *j;

	while ((j = hx_recv_within(c, ms)) != NULL) {
		if (strcmp(hx_str(j, "type"), "msg") == 0)
			return j;
		json_decref(j);
	}
	return NULL;
}

json_t *hx_expect(pc_conn_t *c, const char *type)
{
	json_t *j = hx_recv(c);
	const char *t = json_string_value(json_object_get(j, "type"));

	if (!t || strcmp(t, type) != 0) {
		char *text = json_dumps(j, JSON_COMPACT);
		fail_msg("expected a \"%s\" frame, got %s", type, text);
	}
	return j;
}

int hx_expect_close(pc_conn_t *c)
{
	for (;;) {
		pc_frame_t f;
		int code;

		if (pc_ws_recv(c, &f, HX_TIMEOUT) < 0)
			return -1;
		if (f.opcode == 0x8) {
			code = f.len >= 2 ? (f.data[0] << 8) | f.data[1] : 1005;
			pc_frame_free(&f);
			return code;
		}
		pc_frame_free(&f);
	}
}

int64_t hx_int(const json_t *j, const char *key)
{
	json_t *v = json_object_get(j, key);

	if (!json_is_integer(v)) {
		char *text = json_dumps(j, JSON_COMPACT);
		fail_msg("no integer \"%s\" in %s", key, text ? text : "(null)");
	}
	return json_integer_value(v);
}

const char *hx_str(const json_t *j, const char *key)
{
	json_t *v = json_object_get(j, key);

	if (!json_is_string(v)) {
		char *text = json_dumps(j, JSON_COMPACT);
		fail_msg("no string \"%s\" in %s", key, text ? text : "(null)");
	}
	return json_string_value(v);
}

void hx_filter(void)
{
	const char *f = getenv("HX_FILTER");

	if (f && *f)
		cmocka_set_test_filter(f);
}

double hx_metric(const hx_server_t *s, const char *name)
{
	pc_conn_t *c = pc_connect("127.0.0.1", s->admin_port);
	pc_response_t res;
	char key[128];
	const char *p;
	double v;

	assert_non_null(c);
	assert_int_equal(pc_http(c, "GET", "/metrics", NULL, NULL, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 200);
	snprintf(key, sizeof key, "\n%s ", name);
	p = strstr(res.body, key);
	assert_non_null(p);
	v = strtod(p + strlen(key), NULL);
	pc_response_free(&res);
	pc_close(c);
	return v;
}

int64_t hx_say(pc_conn_t *c, int64_t conv, const char *body)
{
	static unsigned n;
	char cmid[32];
	int64_t seq;
	json_t *j;

	snprintf(cmid, sizeof cmid, "say-%d-%u", (int)getpid(), ++n);
	hx_sendf(c, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"%s\",\"body\":\"%s\"}", (long long)conv,
	         cmid, body);
	for (;;) {
		j = hx_recv(c);
		if (!strcmp(hx_str(j, "type"), "ack") && !strcmp(hx_str(j, "cmid"), cmid))
			break;
		if (!strcmp(hx_str(j, "type"), "error"))
			fail_msg("send refused: %s", hx_str(j, "message"));
		json_decref(j);
	}
	seq = hx_int(j, "seq");
	json_decref(j);
	return seq;
}
