/* integ_durability.c - "ack means durable" and the process lifecycle.
 *
 * Several devices send concurrently; the moment the last ack arrives the
 * server is killed with SIGKILL. After a restart on the same store
 * every acknowledged message is there, with its acked id and seq, and the
 * conversation's seqs run 1..N without a gap. A send repeated after the
 * restart gets the original ack. Also: the command line's refusals, the
 * readiness of /healthz, and a clean SIGTERM that tells WebSockets to
 * reconnect (1012) after acknowledging what was in flight, a batch at a
 * time over its drain window, and exits 0. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEVICES 4
#define PER_DEVICE 150

typedef struct acked {
	char id[24];
	int64_t seq;
} acked_t;

static void test_kill9_keeps_acked(void **state)
{
	hx_server_t srv;
	hx_user_t a, b, dev[DEVICES];
	pc_conn_t *c[DEVICES];
	acked_t *acks = calloc(DEVICES * PER_DEVICE, sizeof *acks);
	char path[160], store[256];
	int64_t conv, before = 0;
	int d, i, st, got = 0, total = DEVICES * PER_DEVICE;
	json_t *j;

	(void)state;
	assert_int_equal(hx_start(&srv, NULL, NULL), 0);
	snprintf(store, sizeof store, "%s", srv.store);
	hx_user(srv.port, "dur", &a);
	hx_user(srv.port, "dur", &b);
	conv = hx_direct(srv.port, &a, &b);
	for (d = 0; d < DEVICES; d++) {
		hx_login(srv.port, &a, &dev[d]);
		c[d] = hx_ws(srv.port, &dev[d]);
	}
	/* All devices send at once, in rounds of 50 in flight each. */
	for (i = 0; i < PER_DEVICE; i += 50) {
		int k;
		for (d = 0; d < DEVICES; d++)
			for (k = i; k < i + 50; k++)
				hx_sendf(c[d], "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"d%d-%d\",\"body\":\"m %d %d\"}",
				         (long long)conv, d, k, d, k);
		for (d = 0; d < DEVICES; d++) {
			for (k = i; k < i + 50;) {
				int dd, kk;
				j = hx_recv(c[d]);
				if (strcmp(hx_str(j, "type"), "ack") != 0) { /* the other devices' msgs */
					json_decref(j);
					continue;
				}
				assert_int_equal(sscanf(hx_str(j, "cmid"), "d%d-%d", &dd, &kk), 2);
				assert_int_equal(dd, d);
				snprintf(acks[d * PER_DEVICE + kk].id, 24, "%s", hx_str(j, "id"));
				acks[d * PER_DEVICE + kk].seq = hx_int(j, "seq");
				json_decref(j);
				got++;
				k++;
			}
		}
	}
	assert_int_equal(got, total);
	/* Acked: now pull the plug. */
	assert_int_equal(hx_stop(&srv, SIGKILL), 128 + SIGKILL);
	for (d = 0; d < DEVICES; d++)
		pc_close(c[d]);

	assert_int_equal(hx_start(&srv, store, NULL), 0);
	srv.own_store = 1;
	/* Page through history from the newest, checking every seq. */
	{
		char *seen = calloc((size_t)total + 1, 1);
		int64_t expect = total;
		for (;;) {
			json_t *msgs, *m;
			size_t n, x;
			if (before)
				snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?limit=200&before=%lld",
				         (long long)conv, (long long)before);
			else
				snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?limit=200",
				         (long long)conv);
			j = hx_http(srv.port, "GET", path, b.token, NULL, &st);
			assert_int_equal(st, 200);
			msgs = json_object_get(j, "messages");
			n = json_array_size(msgs);
			for (x = n; x-- > 0;) {
				int dd, kk;
				m = json_array_get(msgs, x);
				assert_int_equal(hx_int(m, "seq"), expect); /* gapless */
				assert_int_equal(sscanf(hx_str(m, "cmid"), "d%d-%d", &dd, &kk), 2);
				assert_int_equal(acks[dd * PER_DEVICE + kk].seq, expect);
				assert_string_equal(acks[dd * PER_DEVICE + kk].id, hx_str(m, "id"));
				seen[expect] = 1;
				expect--;
			}
			before = n ? hx_int(json_array_get(msgs, 0), "seq") : 0;
			if (!json_is_true(json_object_get(j, "has_more"))) {
				json_decref(j);
				break;
			}
			json_decref(j);
		}
		assert_int_equal(expect, 0);
		free(seen);
	}
	/* Idempotent across the restart: the first message's ack again. */
	c[0] = hx_ws(srv.port, &dev[0]);
	hx_sendf(c[0], "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"d0-0\",\"body\":\"m 0 0\"}", (long long)conv);
	j = hx_expect(c[0], "ack");
	assert_string_equal(hx_str(j, "id"), acks[0].id);
	assert_int_equal(hx_int(j, "seq"), acks[0].seq);
	json_decref(j);
	/* And a new message continues the sequence. */
	hx_sendf(c[0], "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"after\",\"body\":\"x\"}", (long long)conv);
	j = hx_expect(c[0], "ack");
	assert_int_equal(hx_int(j, "seq"), total + 1);
	json_decref(j);
	pc_close(c[0]);
	hx_finish(&srv);
	free(acks);
}

static void test_sigterm_closes_with_1012(void **state)
{
	hx_server_t srv;
	hx_user_t a, b;
	pc_conn_t *ca;
	pc_frame_t f;
	json_t *j;
	char store[256], path[128];
	int64_t conv;
	int i, acks = 0, code = -1, st;

	(void)state;
	assert_int_equal(hx_start(&srv, NULL, NULL), 0);
	snprintf(store, sizeof store, "%s", srv.store);
	hx_user(srv.port, "term", &a);
	hx_user(srv.port, "term", &b);
	conv = hx_direct(srv.port, &a, &b);
	ca = hx_ws(srv.port, &a);
	/* Sends in flight when the signal comes: those the server took are
	 * stored and acknowledged before the 1012 close; the rest are not
	 * stored, and the client will retry them. */
	for (i = 0; i < 50; i++)
		hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"t%d\",\"body\":\"x\"}",
		         (long long)conv, i);
	kill(srv.pid, SIGTERM);
	while (pc_ws_recv(ca, &f, HX_TIMEOUT) == 0) {
		if (f.opcode == 0x8) {
			code = (f.data[0] << 8) | f.data[1];
			pc_frame_free(&f);
			break;
		}
		assert_int_equal(f.opcode, 1);
		j = json_loadb((char *)f.data, f.len, 0, NULL);
		assert_string_equal(hx_str(j, "type"), "ack");
		assert_int_equal(hx_int(j, "seq"), ++acks); /* in order, gapless */
		json_decref(j);
		pc_frame_free(&f);
	}
	assert_int_equal(code, 1012);
	assert_int_equal(hx_stop(&srv, 0), 0);
	pc_close(ca);

	assert_int_equal(hx_start(&srv, store, NULL), 0);
	srv.own_store = 1;
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?limit=200", (long long)conv);
	j = hx_http(srv.port, "GET", path, b.token, NULL, &st);
	assert_int_equal(json_array_size(json_object_get(j, "messages")), acks);
	json_decref(j);
	hx_finish(&srv);
}

/* Runs parley with args; returns its exit status and stderr's first line. */
static int run_cli(const char *const *args, char *err, size_t cap)
{
	const char *bin = getenv("PARLEY_BIN") ? getenv("PARLEY_BIN") : "build/parley";
	const char *argv[16];
	int p[2], n = 0, status;
	pid_t pid;
	ssize_t r;

	argv[n++] = bin;
	while (*args && n < 15)
		argv[n++] = *args++;
	argv[n] = NULL;
	assert_int_equal(pipe(p), 0);
	pid = fork();
	if (pid == 0) {
		dup2(p[1], 2);
		dup2(p[1], 1);
		close(p[0]);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	/* Keep the first cap bytes; read the rest too, or a long help text
	 * would die of SIGPIPE. */
	{
		size_t got = 0;
		char sink[4096];
		while ((r = read(p[0], got < cap - 1 ? err + got : sink,
		                 got < cap - 1 ? cap - 1 - got : sizeof sink)) > 0)
			if (got < cap - 1)
				got += (size_t)r;
		err[got] = 0;
	}
	close(p[0]);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_command_line(void **state)
{
	char out[4096];
	hx_server_t srv;
	const char *help[] = {"serve", "--help", NULL};
	const char *bogus[] = {"serve", "--bogus", "1", NULL};
	const char *threads[] = {"serve", "--threads", "0", NULL};
	const char *listen[] = {"serve", "--listen", "nocolon", NULL};
	const char *node[] = {"serve", "--node-id", "1024", NULL};
	const char *missing[] = {"serve", "--data", NULL};
	const char *nodir[] = {"serve", "--listen", "127.0.0.1:0", "--data", "/proc/parley-cannot", NULL};
	const char *cmd[] = {"frobnicate", NULL};
	const char *inuse[8] = {"serve", "--listen", "127.0.0.1:0", "--data", NULL, NULL};

	(void)state;
	assert_int_equal(run_cli(help, out, sizeof out), 0);
	assert_non_null(strstr(out, "--listen HOST:PORT"));
	assert_int_equal(run_cli(bogus, out, sizeof out), 2);
	assert_non_null(strstr(out, "unknown option '--bogus'"));
	assert_int_equal(run_cli(threads, out, sizeof out), 2);
	assert_int_equal(run_cli(listen, out, sizeof out), 2);
	assert_int_equal(run_cli(node, out, sizeof out), 2);
	assert_int_equal(run_cli(missing, out, sizeof out), 2);
	assert_int_equal(run_cli(cmd, out, sizeof out), 2);
	assert_int_not_equal(run_cli(nodir, out, sizeof out), 0);
	assert_non_null(strstr(out, "data directory"));
	/* Two servers on one data directory: the second refuses. (SQLite's
	 * rule: the nodes of a fleet share one PostgreSQL store, so there a
	 * second server would serve, and run_cli wait for it forever.) */
	assert_int_equal(hx_start(&srv, NULL, NULL), 0);
	if (hx_store_is_dir(srv.store)) {
		inuse[4] = srv.store;
		assert_int_not_equal(run_cli(inuse, out, sizeof out), 0);
		assert_non_null(strstr(out, "in use"));
	}
	{
		int st;
		json_t *j = hx_http(srv.port, "GET", "/healthz", NULL, NULL, &st);
		assert_int_equal(st, 200);
		assert_string_equal(hx_str(j, "status"), "ok");
		json_decref(j);
	}
	assert_int_equal(hx_stop(&srv, SIGINT), 0);
	hx_cleanup(&srv);
}

/* SIGTERM with a drain window: the node stops accepting at once (so a
 * load balancer sends newcomers elsewhere), while its WebSockets stay
 * served and are told to reconnect (1012) a batch at a time across the
 * window, not all at once; then it exits 0. */
#define DRAIN_SOCKETS 40

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_drain_spreads_closes(void **state)
{
	hx_server_t srv;
	hx_user_t u[4];
	pc_conn_t *c[DRAIN_SOCKETS], *late;
	long long closed_at[DRAIN_SOCKETS], t0;
	int i, k, refused, left;
	json_t *j;

	(void)state;
	HX_START(&srv, "--drain-seconds", "2");
	for (k = 0; k < 4; k++)
		hx_user(srv.port, "drain", &u[k]);
	for (i = 0; i < DRAIN_SOCKETS; i++)
		c[i] = hx_ws(srv.port, &u[i % 4]);
	for (i = 0; i < DRAIN_SOCKETS; i++)
		closed_at[i] = -1;
	kill(srv.pid, SIGTERM);
	t0 = now_ms();
	/* No new connections: the listener is closed. */
	for (refused = 0, k = 0; k < 50 && !refused; k++) {
		late = pc_connect("127.0.0.1", srv.port);
		refused = !late;
		pc_close(late);
		if (!refused)
			usleep(20 * 1000);
	}
	assert_true(refused);
	/* Those not yet told are served meanwhile. */
	hx_sendf(c[DRAIN_SOCKETS - 1], "{\"type\":\"ping\",\"ref\":1}");
	j = hx_expect(c[DRAIN_SOCKETS - 1], "pong");
	json_decref(j);
	/* Every socket watched at once, each close timed as it comes. */
	for (left = DRAIN_SOCKETS; left > 0 && now_ms() - t0 < 4 * HX_TIMEOUT;) {
		for (i = 0; i < DRAIN_SOCKETS; i++) {
			pc_frame_t f;
			if (closed_at[i] >= 0 || pc_ws_recv(c[i], &f, 0) != 0)
				continue;
			if (f.opcode == 0x8) {
				assert_true(f.len >= 2);
				assert_int_equal((f.data[0] << 8) | f.data[1], 1012);
				closed_at[i] = now_ms() - t0;
				left--;
			}
			pc_frame_free(&f);
		}
		usleep(5 * 1000);
	}
	assert_int_equal(left, 0);
	for (i = 0; i < DRAIN_SOCKETS; i++)
		pc_close(c[i]);
	/* Spread: the first batch goes at once, the last near the end of the
	 * 2 s window. */
	{
		long long first = closed_at[0], last = 0;
		for (i = 0; i < DRAIN_SOCKETS; i++) {
			first = closed_at[i] < first ? closed_at[i] : first;
			last = closed_at[i] > last ? closed_at[i] : last;
		}
		printf("# closes from %lld ms to %lld ms after SIGTERM\n", first, last);
		assert_true(first < 1000);
		assert_true(last >= 1000);
		assert_true(last < 2000 + 3000);
	}
	assert_int_equal(hx_stop(&srv, 0), 0);
	hx_cleanup(&srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kill9_keeps_acked),
		cmocka_unit_test(test_sigterm_closes_with_1012),
		cmocka_unit_test(test_drain_spreads_closes),
		cmocka_unit_test(test_command_line),
	};
	hx_filter();
	return cmocka_run_group_tests_name("integ_durability", tests, NULL, NULL);
}
