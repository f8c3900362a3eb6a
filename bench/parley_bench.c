/* parley_bench.c - parley-bench, the load generator and benchmark suite.
 *
 *   parley-bench idle [--connections N] [--processes K] [--json]
 *   parley-bench history [--clients K] [--seconds S] [--json]
 *   parley-bench resume [--clients N] [--json]
 *   parley-bench direct [--pairs P] [--rate R] [--seconds S] [--json]
 *   parley-bench direct --find-max P99_MS [--pairs P] [--json]
 *
 * Each scenario starts its own Parley server (build/parley, a fresh data
 * directory, --fast-password-hashing so that set-up is quick) and the
 * physical baseline (build/bench-relay), drives both the same way in the
 * same run, and reports Parley's figures beside the baseline's and as
 * ratios to them: a readable table, then one JSON object per scenario
 * (machine, commit, parameters, figures) for comparing commits.
 *
 * idle: opens N connections and holds them (to Parley: registered users'
 * authenticated WebSockets, each past its "ready"; to the relay: plain TCP
 * connections) and reports the server process's resident memory per
 * connection (/proc/PID/status) and the kernel's slab memory per
 * connection (/proc/meminfo; both ends of each connection live on this
 * machine). Both are measured over the second half of the connections,
 * once the first half has warmed what does not grow per connection. A
 * process may open at most 20,000 files here, so the connections are held
 * by K client processes (default: one per 10,000) and N is at most 19,500
 * (the server holds them all).
 *
 * history: K clients on keep-alive connections ask for history pages (50
 * messages, at random places in a conversation of 5,000) as fast as they
 * are answered, for S seconds: pages per second and their latency. It has
 * no baseline: a relay keeps no history.
 *
 * resume: N clients, each in 4 direct chats, miss 5 messages in each (20
 * in all) while away; then all reconnect at once and resume. Reported: the
 * time from sending "resume" to receiving "resumed" (all 20 messages in
 * between), p50/p99, and how many clients a second reconnect and resume.
 *
 * direct: P pairs of users in direct chats; each pair's sender sends at a
 * fixed schedule (R messages a second in all, open loop: a send is due at
 * its time whether or not earlier ones were answered, so a slow server
 * cannot hide its latency), for S seconds. Reported: send -> ack and send
 * -> delivery latency p50/p99/p99.9/max, the achieved rate, and the server's
 * CPU per delivered message -- beside the relay driven the same way
 * (unmasked frames from one socket of a pair to the other), and as ratios.
 * With --find-max, it looks for the highest rate whose delivery p99 stays
 * under P99_MS (2 s runs: doubling, then four halvings of the gap).
 *
 * group: one group of N members, K online; for M messages from one member,
 * the sender's ack (beside a direct chat's) and the time to the last online
 * member's delivery; then receipts as clients that batch them send them
 * (every member says delivered and read once per B messages), with the
 * store's row writes and commits from /metrics and the server's CPU. With
 * --throughput S, 4 members then publish as fast as the server acks for S
 * seconds: deliveries per second and server CPU per delivery. Beside it, the
 * relay in fan-out mode (bench-relay --fanout K: every frame a member sends
 * is written to the other K-1) driven the same way: its time from send to
 * the last member's copy, and its deliveries per second and CPU per
 * delivery, with at most 100 frames per sender not yet at the last member.
 *
 * Any scenario takes --commit-delay US, passed on to the server.
 *
 * Set-up (registering users, storing messages) is not measured. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "pclient.h"

#define TIMEOUT 30000

typedef struct proc {
	pid_t pid;
	int port;
	int admin_port;      /* Parley's operator listener, for /metrics */
	char dir[64];
} proc_t;

static void die(const char *what)
{
	fprintf(stderr, "parley-bench: %s\n", what);
	exit(1);
}

/* Starts argv[0] and waits for its "listening on ...:PORT" line. */
static void spawn(proc_t *p, char *const argv[])
{
	char line[512];
	size_t len = 0;
	int fd[2];
	time_t deadline = time(NULL) + 30;

	if (pipe(fd) < 0)
		die("pipe");
	if ((p->pid = fork()) == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(fd[1], 1);
		if (null >= 0)
			dup2(null, 2); /* the servers' logs are not the results */
		close(fd[0]);
		execv(argv[0], argv);
		fprintf(stderr, "parley-bench: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(fd[1]);
	while (time(NULL) < deadline) {
		struct pollfd pf = {fd[0], POLLIN, 0};
		ssize_t r;
		char *at;

		if (poll(&pf, 1, 1000) <= 0)
			continue;
		if ((r = read(fd[0], line + len, sizeof line - 1 - len)) <= 0)
			break;
		len += (size_t)r;
		line[len] = 0;
		if ((at = strstr(line, "listening on ")) && strchr(at, '\n')) {
			char *admin = strstr(at, "admin http://"), *colon;
			if (admin && (colon = strchr(admin + 13, ':')))
				p->admin_port = atoi(colon + 1);
			colon = strrchr(strtok(at + 13, " \n"), ':');
			p->port = colon ? atoi(colon + 1) : 0;
			close(fd[0]);
			if (p->port > 0)
				return;
			break;
		}
	}
	die("a server did not start");
}

static void stop_proc(proc_t *p)
{
	int status;

	if (p->pid > 0) {
		kill(p->pid, SIGTERM);
		waitpid(p->pid, &status, 0);
		p->pid = 0;
	}
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* A line "Key:   N kB" of a /proc file, in bytes. */
static double proc_kb(const char *file, const char *key)
{
	char line[256];
	size_t klen = strlen(key);
	double v = -1;
	FILE *f = fopen(file, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, klen) && line[klen] == ':') {
			v = strtod(line + klen + 1, NULL) * 1024;
			break;
		}
	fclose(f);
	return v;
}

static double rss(pid_t pid)
{
	char path[64];

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	return proc_kb(path, "VmRSS");
}

/* Lets the servers settle (accepts, handshakes, allocator) before reading. */
static void settle(void)
{
	usleep(500000);
}

/* The Parley server the group and idle scenarios talk to, and its
 * operator listener, where /metrics is read. */
static int gb_port, gb_admin_port;
static double metric(const char *name);

typedef struct idle_result {
	double user_bytes, kernel_bytes;
	double store_bytes;  /* of user_bytes: the store's caches (Parley only) */
} idle_result_t;

/* --commit-delay, passed on to the server ("0": none). */
static char commit_delay[16] = "0";

/* Starts a Parley server on a fresh data directory (dir: 32 bytes). */
static void start_parley(proc_t *srv, char *dir)
{
	char *argv[] = {"build/parley", "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data", dir,
	                "--signup-rate", "0", "--login-rate", "0", "--max-address-connections", "0",
	                "--max-address-pending", "0", "--strangers-per-day", "0", "--work-rate", "0",
	                "--storage-per-day", "0",
	                "--fast-password-hashing", "--rate-limit", "0", "--commit-delay", commit_delay, NULL};

	snprintf(dir, 32, "/tmp/parley-bench-XXXXXX");
	if (!mkdtemp(dir))
		die("mkdtemp");
	spawn(srv, argv);
}

static void stop_parley(proc_t *srv, const char *dir)
{
	stop_proc(srv);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Opens one idle connection: to Parley an authenticated WebSocket past its
 * "ready", to the relay a plain TCP connection (token NULL). */
static pc_conn_t *idle_open(int port, const char *token)
{
	pc_conn_t *c = pc_connect("127.0.0.1", port);
	pc_frame_t f;

	if (!c)
		die("cannot connect");
	if (token) {
		if (pc_ws_open(c, "/chat/v1/ws", token, NULL, TIMEOUT) < 0 || pc_ws_recv(c, &f, TIMEOUT) < 0)
			die("cannot open a WebSocket");
		pc_frame_free(&f); /* ready */
	}
	return c;
}

/* One client process's share of the idle connections, users first..first+
 * count-1: it registers them (Parley only), opens the first half, says 'h'
 * and waits for a byte, opens the rest, says 'd' and waits for a byte, then
 * closes them all and exits. Several such processes hold more connections
 * than one process may open files. */
static void idle_client(int port, int parley, int first, int count, int up, int down)
{
	pc_conn_t **c = calloc((size_t)count, sizeof *c);
	char (*tokens)[64] = calloc((size_t)count, 64);
	char body[128], go;
	pc_conn_t *http;
	int i;

	if (!c || !tokens)
		die("set-up");
	if (parley) {
		if (!(http = pc_connect("127.0.0.1", port)))
			die("cannot connect to parley");
		for (i = 0; i < count; i++) {
			pc_response_t r;
			json_t *j;

			snprintf(body, sizeof body, "{\"username\":\"idle%d\",\"password\":\"benchmark\"}", first + i);
			if (pc_http(http, "POST", "/api/v1/users", NULL, body, &r, TIMEOUT) < 0 || r.status != 201)
				die("cannot register");
			pc_response_free(&r);
			if (pc_http(http, "POST", "/api/v1/sessions", NULL, body, &r, TIMEOUT) < 0 || r.status != 201)
				die("cannot log in");
			j = json_loadb(r.body, r.body_len, 0, NULL);
			snprintf(tokens[i], 64, "%s", json_string_value(json_object_get(j, "token")));
			json_decref(j);
			pc_response_free(&r);
		}
		pc_close(http);
	}
	for (i = 0; i < count; i++) {
		if (i == count / 2 && (write(up, "h", 1) != 1 || read(down, &go, 1) != 1))
			_exit(1);
		c[i] = idle_open(port, parley ? tokens[i] : NULL);
	}
	if (write(up, "d", 1) != 1 || read(down, &go, 1) != 1)
		_exit(1);
	for (i = 0; i < count; i++)
		pc_close(c[i]);
	_exit(0);
}

/* Every client process says `want` once; any other answer is a failure. */
static void idle_wait_all(int *up, int procs, char want)
{
	char got;
	int i;

	for (i = 0; i < procs; i++)
		if (read(up[i], &got, 1) != 1 || got != want)
			die("a client process failed");
}

static void idle_tell_all(int *down, int procs)
{
	int i;

	for (i = 0; i < procs; i++)
		if (write(down[i], "g", 1) != 1)
			die("a client process went away");
}

/* Holds n connections to the server `pid` listening on `port`, spread over
 * `procs` client processes. The first half of each process's share warms
 * what does not grow per connection (caches, arenas, tables); the second
 * half's growth is the figure. */
static idle_result_t idle_measure(int port, pid_t pid, int parley, int n, int procs)
{
	int *up = calloc((size_t)procs, sizeof *up), *down = calloc((size_t)procs, sizeof *down);
	pid_t *kids = calloc((size_t)procs, sizeof *kids);
	double rss0, slab0, store0 = 0;
	idle_result_t res = {0};
	int i, measured = 0;

	if (!up || !down || !kids)
		die("set-up");
	fflush(stdout);
	for (i = 0; i < procs; i++) {
		int first = (int)((long)n * i / procs), count = (int)((long)n * (i + 1) / procs) - first;
		int u[2], d[2];

		if (pipe(u) < 0 || pipe(d) < 0)
			die("pipe");
		if ((kids[i] = fork()) < 0)
			die("fork");
		if (kids[i] == 0) {
			close(u[0]);
			close(d[1]);
			idle_client(port, parley, first, count, u[1], d[0]);
		}
		close(u[1]);
		close(d[0]);
		up[i] = u[0];
		down[i] = d[1];
		measured += count - count / 2;
	}
	idle_wait_all(up, procs, 'h');
	settle();
	if (parley)
		store0 = metric("parley_store_memory_bytes");
	rss0 = rss(pid);
	slab0 = proc_kb("/proc/meminfo", "Slab");
	idle_tell_all(down, procs);
	idle_wait_all(up, procs, 'd');
	settle();
	res.user_bytes = (rss(pid) - rss0) / measured;
	res.kernel_bytes = (proc_kb("/proc/meminfo", "Slab") - slab0) / measured;
	if (parley)
		res.store_bytes = (metric("parley_store_memory_bytes") - store0) / measured;
	idle_tell_all(down, procs);
	for (i = 0; i < procs; i++) {
		int status;
		waitpid(kids[i], &status, 0);
		close(up[i]);
		close(down[i]);
	}
	free(up);
	free(down);
	free(kids);
	return res;
}

static idle_result_t idle_parley(int n, int procs)
{
	idle_result_t res;
	char dir[32];
	proc_t srv;

	start_parley(&srv, dir);
	gb_port = srv.port;
	gb_admin_port = srv.admin_port;
	res = idle_measure(srv.port, srv.pid, 1, n, procs);
	stop_parley(&srv, dir);
	return res;
}

static idle_result_t idle_relay(int n, int procs)
{
	char *argv[] = {"build/bench-relay", "--listen", "127.0.0.1:0", NULL};
	idle_result_t res;
	proc_t relay;

	spawn(&relay, argv);
	res = idle_measure(relay.port, relay.pid, 0, n, procs);
	stop_proc(&relay);
	return res;
}

static void describe(char *machine, size_t mcap, char *commit, size_t ccap)
{
	struct utsname u;
	FILE *f;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	uname(&u);
	snprintf(machine, mcap, "%ld cores, %.0f GiB, %s %s", cores,
	         proc_kb("/proc/meminfo", "MemTotal") / (1024.0 * 1024 * 1024), u.sysname, u.machine);
	snprintf(commit, ccap, "unknown");
	if ((f = popen("git rev-parse --short HEAD 2>/dev/null", "r")) != NULL) {
		if (fgets(commit, (int)ccap, f))
			commit[strcspn(commit, "\n")] = 0;
		pclose(f);
	}
}

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

static int run_idle(int n, int procs, int json_only)
{
	char machine[256], commit[32];
	idle_result_t p, r;

	describe(machine, sizeof machine, commit, sizeof commit);
	r = idle_relay(n, procs);
	p = idle_parley(n, procs);
	if (!json_only) {
		printf("idle: %d connections held open by %d client process%s (%s, commit %s)\n", n, procs,
		       procs == 1 ? "" : "es", machine, commit);
		printf("  %-38s %10s %10s %8s\n", "", "parley", "relay", "ratio");
		printf("  %-38s %10.0f %10.0f %8.2f\n", "server user-space bytes per connection",
		       p.user_bytes, r.user_bytes, ratio(p.user_bytes, r.user_bytes));
		printf("  %-38s %10.0f %10s\n", "  of which the store's page caches", p.store_bytes, "-");
		printf("  %-38s %10.0f %10.0f %8.2f\n", "  the rest: connection state", p.user_bytes - p.store_bytes,
		       r.user_bytes, ratio(p.user_bytes - p.store_bytes, r.user_bytes));
		printf("  %-38s %10.0f %10.0f %8.2f\n", "kernel slab bytes per connection", p.kernel_bytes,
		       r.kernel_bytes, ratio(p.kernel_bytes, r.kernel_bytes));
	}
	printf("{\"scenario\":\"idle\",\"machine\":\"%s\",\"commit\":\"%s\",\"parameters\":{\"connections\":%d,\"client_processes\":%d},"
	       "\"figures\":{\"parley_user_bytes_per_conn\":%.0f,\"relay_user_bytes_per_conn\":%.0f,"
	       "\"user_bytes_ratio\":%.2f,\"parley_store_cache_bytes_per_conn\":%.0f,"
	       "\"parley_kernel_bytes_per_conn\":%.0f,"
	       "\"relay_kernel_bytes_per_conn\":%.0f}}\n",
	       machine, commit, n, procs, p.user_bytes, r.user_bytes, ratio(p.user_bytes, r.user_bytes),
	       p.store_bytes, p.kernel_bytes, r.kernel_bytes);
	return 0;
}

/* ---- history -------------------------------------------------------- */

#define HISTORY_MESSAGES 5000

typedef struct history_client {
	pthread_t thread;
	int port;
	int64_t conv;
	const char *token;
	double seconds;
	double *lat;          /* milliseconds */
	size_t n, cap;
	unsigned seed;
} history_client_t;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void *history_main(void *arg)
{
	history_client_t *h = arg;
	pc_conn_t *c = pc_connect("127.0.0.1", h->port);
	double end = now_ms() + h->seconds * 1000;
	char path[128];

	if (!c)
		die("cannot connect");
	while (now_ms() < end) {
		pc_response_t r;
		double t0;
		int before = 51 + (int)(rand_r(&h->seed) % (HISTORY_MESSAGES - 49));

		snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?limit=50&before=%d",
		         (long long)h->conv, before);
		t0 = now_ms();
		if (pc_http(c, "GET", path, h->token, NULL, &r, TIMEOUT) < 0 || r.status != 200)
			die("a history request failed");
		if (h->n == h->cap) {
			h->cap = h->cap ? h->cap * 2 : 4096;
			if (!(h->lat = realloc(h->lat, h->cap * sizeof *h->lat)))
				die("out of memory");
		}
		h->lat[h->n++] = now_ms() - t0;
		pc_response_free(&r);
	}
	pc_close(c);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int run_history(int clients, double seconds, int json_only)
{
	char dir[32], machine[256], commit[32], body[256], tokens[2][64];
	history_client_t *h = calloc((size_t)clients, sizeof *h);
	double *all, p50, p99, max, rate;
	pc_conn_t *http, *ws;
	pc_response_t r;
	size_t total = 0, k;
	int64_t conv, ids[2];
	json_t *j;
	proc_t srv;
	int i;

	describe(machine, sizeof machine, commit, sizeof commit);
	start_parley(&srv, dir);
	/* Set-up: Alice and Bob, a direct chat of HISTORY_MESSAGES messages
	 * from Alice; Bob reads the history. */
	if (!(http = pc_connect("127.0.0.1", srv.port)))
		die("cannot connect");
	for (i = 0; i < 2; i++) {
		snprintf(body, sizeof body, "{\"username\":\"hist%d\",\"password\":\"benchmark\"}", i);
		if (pc_http(http, "POST", "/api/v1/users", NULL, body, &r, TIMEOUT) < 0 || r.status != 201)
			die("cannot register");
		j = json_loadb(r.body, r.body_len, 0, NULL);
		ids[i] = json_integer_value(json_object_get(j, "user_id"));
		json_decref(j);
		pc_response_free(&r);
		if (pc_http(http, "POST", "/api/v1/sessions", NULL, body, &r, TIMEOUT) < 0 || r.status != 201)
			die("cannot log in");
		j = json_loadb(r.body, r.body_len, 0, NULL);
		snprintf(tokens[i], sizeof tokens[i], "%s", json_string_value(json_object_get(j, "token")));
		json_decref(j);
		pc_response_free(&r);
	}
	snprintf(body, sizeof body, "{\"members\":[%lld]}", (long long)ids[1]);
	if (pc_http(http, "POST", "/api/v1/conversations", tokens[0], body, &r, TIMEOUT) < 0 ||
	    r.status != 201)
		die("cannot open a conversation");
	j = json_loadb(r.body, r.body_len, 0, NULL);
	conv = json_integer_value(json_object_get(j, "conversation_id"));
	json_decref(j);
	pc_response_free(&r);
	pc_close(http);
	if (!(ws = pc_connect("127.0.0.1", srv.port)) ||
	    pc_ws_open(ws, "/chat/v1/ws", tokens[0], NULL, TIMEOUT) < 0)
		die("cannot open a WebSocket");
	{
		pc_frame_t f;
		int sent = 0, acked = 0;
		while (acked < HISTORY_MESSAGES) {
			while (sent < HISTORY_MESSAGES && sent - acked < 100) {
				snprintf(body, sizeof body,
				         "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"h%d\",\"body\":\"history page filler %d\"}",
				         (long long)conv, sent, sent);
				pc_ws_send_text(ws, body);
				sent++;
			}
			if (pc_ws_recv(ws, &f, TIMEOUT) < 0)
				die("no ack");
			if (strstr((char *)f.data, "\"type\":\"ack\""))
				acked++;
			pc_frame_free(&f);
		}
		pc_close(ws);
	}
	for (i = 0; i < clients; i++) {
		h[i].port = srv.port;
		h[i].conv = conv;
		h[i].token = tokens[1];
		h[i].seconds = seconds;
		h[i].seed = (unsigned)i + 1;
		pthread_create(&h[i].thread, NULL, history_main, &h[i]);
	}
	for (i = 0; i < clients; i++) {
		pthread_join(h[i].thread, NULL);
		total += h[i].n;
	}
	stop_parley(&srv, dir);
	if (!total)
		die("no history request completed");
	all = malloc(total * sizeof *all);
	for (i = 0, k = 0; i < clients; i++) {
		memcpy(all + k, h[i].lat, h[i].n * sizeof *all);
		k += h[i].n;
		free(h[i].lat);
	}
	free(h);
	qsort(all, total, sizeof *all, cmp_double);
	p50 = all[total / 2];
	p99 = all[(size_t)((double)(total - 1) * 0.99)];
	max = all[total - 1];
	rate = (double)total / seconds;
	free(all);
	if (!json_only) {
		printf("history: %d clients for %.0f s, pages of 50 from %d messages (%s, commit %s)\n", clients,
		       seconds, HISTORY_MESSAGES, machine, commit);
		printf("  pages per second %.0f; latency p50 %.3f ms, p99 %.3f ms, max %.3f ms\n", rate, p50, p99,
		       max);
	}
	printf("{\"scenario\":\"history\",\"machine\":\"%s\",\"commit\":\"%s\",\"parameters\":{\"clients\":%d,"
	       "\"seconds\":%.0f,\"page\":50,\"messages\":%d},\"figures\":{\"pages_per_second\":%.0f,"
	       "\"latency_p50_ms\":%.3f,\"latency_p99_ms\":%.3f,\"latency_max_ms\":%.3f}}\n",
	       machine, commit, clients, seconds, HISTORY_MESSAGES, rate, p50, p99, max);
	return 0;
}

/* Registers name and logs it in; returns its id and token. */
static int64_t user_with_token(pc_conn_t *http, const char *name, char token[64])
{
	char body[128];
	pc_response_t r;
	json_t *j;
	int64_t id;

	snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"benchmark\"}", name);
	if (pc_http(http, "POST", "/api/v1/users", NULL, body, &r, TIMEOUT) < 0 || r.status != 201)
		die("cannot register");
	j = json_loadb(r.body, r.body_len, 0, NULL);
	id = json_integer_value(json_object_get(j, "user_id"));
	json_decref(j);
	pc_response_free(&r);
	if (pc_http(http, "POST", "/api/v1/sessions", NULL, body, &r, TIMEOUT) < 0 || r.status != 201)
		die("cannot log in");
	j = json_loadb(r.body, r.body_len, 0, NULL);
	snprintf(token, 64, "%s", json_string_value(json_object_get(j, "token")));
	json_decref(j);
	pc_response_free(&r);
	return id;
}

/* ---- direct ---------------------------------------------------------- */

/* CPU time of a process in microseconds: the sum over its threads of
 * schedstat's time on CPU (nanoseconds, finer than /proc/PID/stat). */
static double cpu_us(pid_t pid)
{
	char path[64], sub[400];
	struct dirent *d;
	double total = 0;
	DIR *dir;

	snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
	if (!(dir = opendir(path)))
		return -1;
	while ((d = readdir(dir)) != NULL) {
		unsigned long long ns;
		FILE *f;

		if (d->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof sub, "%s/%s/schedstat", path, d->d_name);
		if ((f = fopen(sub, "r")) != NULL) {
			if (fscanf(f, "%llu", &ns) == 1)
				total += (double)ns / 1000.0;
			fclose(f);
		}
	}
	closedir(dir);
	return total;
}

typedef struct pair {
	pthread_t thread;
	pc_conn_t *a, *b;        /* sender, receiver */
	int64_t conv;            /* 0: the relay */
	double interval_ms, start, seconds;
	int sends, acks, delivered;
	int base;                /* added to indices: cmids differ between runs */
	double *sent_at;         /* by message index */
	double *ack_ms, *deliver_ms;
} pair_t;

/* The index a frame carries: "cmid":"bN" for Parley, "bN" for the relay. */
static int frame_index(const pc_frame_t *f)
{
	const char *p = strstr((const char *)f->data, "\"b");

	return p ? atoi(p + 2) : -1;
}

static void *pair_main(void *arg)
{
	pair_t *p = arg;
	int total = (int)(p->seconds * 1000 / p->interval_ms);
	struct pollfd pf[2] = {{pc_fd(p->a), POLLIN, 0}, {pc_fd(p->b), POLLIN, 0}};
	char frame[160];

	p->sent_at = calloc((size_t)total + 1, sizeof(double));
	p->ack_ms = calloc((size_t)total + 1, sizeof(double));
	p->deliver_ms = calloc((size_t)total + 1, sizeof(double));
	while (p->delivered < total || (p->conv && p->acks < total)) {
		double now = now_ms(), due = p->start + p->sends * p->interval_ms;
		pc_frame_t f;
		int k, wait;

		if (p->sends < total && now >= due) {
			/* Open loop: latency counts from when the send was due. */
			p->sent_at[p->sends] = due;
			if (p->conv) {
				snprintf(frame, sizeof frame,
				         "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"b%d\",\"body\":\"hello there\"}",
				         (long long)p->conv, p->base + p->sends);
				pc_ws_send_text(p->a, frame);
			} else {
				snprintf(frame, sizeof frame, "\"b%d\" hello there", p->base + p->sends);
				pc_ws_send_frame(p->a, 1, 1, frame, strlen(frame), 0, 0);
			}
			p->sends++;
			continue;
		}
		for (k = 0; k < 2; k++) {
			pc_conn_t *c = k ? p->b : p->a;
			while (pc_ws_recv(c, &f, 0) == 0) {
				int idx = frame_index(&f) - p->base;
				if (f.opcode == 0x9) {
					pc_ws_send_frame(c, 1, 0xA, f.data, f.len, p->conv != 0, 0);
				} else if (idx >= 0 && idx < total) {
					if (!k && strstr((char *)f.data, "\"type\":\"ack\"")) {
						p->ack_ms[p->acks++] = now_ms() - p->sent_at[idx];
					} else if (k) {
						p->deliver_ms[p->delivered++] = now_ms() - p->sent_at[idx];
					}
				}
				pc_frame_free(&f);
			}
		}
		wait = p->sends < total ? (int)(due - now_ms()) : 50;
		if (wait < 0)
			wait = 0;
		if (poll(pf, 2, wait) < 0 && errno != EINTR)
			die("poll");
		if (now_ms() > p->start + p->seconds * 1000 + TIMEOUT)
			die("deliveries stopped");
	}
	return NULL;
}

typedef struct direct_result {
	double ack[4], deliver[4];  /* p50, p99, p99.9, max */
	double rate, cpu_us_per_msg;
} direct_result_t;

static void percentiles(double *v, size_t n, double out[4])
{
	qsort(v, n, sizeof *v, cmp_double);
	out[0] = v[n / 2];
	out[1] = v[(size_t)((double)(n - 1) * 0.99)];
	out[2] = v[(size_t)((double)(n - 1) * 0.999)];
	out[3] = v[n - 1];
}

/* Runs the pairs against a server (conv ids set) or the relay. */
static direct_result_t drive(pair_t *pairs, int npairs, double rate, double seconds, pid_t server)
{
	direct_result_t res = {0};
	size_t nd = 0, na = 0, k;
	double *d, *a, cpu0, t0, t1;
	int i;

	cpu0 = cpu_us(server);
	t0 = now_ms() + 50;
	for (i = 0; i < npairs; i++) {
		pairs[i].base += pairs[i].sends + 1000000;
		pairs[i].sends = pairs[i].acks = pairs[i].delivered = 0;
		pairs[i].interval_ms = 1000.0 * npairs / rate;
		/* Spread the pairs' schedules over one interval. */
		pairs[i].start = t0 + pairs[i].interval_ms * i / npairs;
		pairs[i].seconds = seconds;
		pthread_create(&pairs[i].thread, NULL, pair_main, &pairs[i]);
	}
	for (i = 0; i < npairs; i++) {
		pthread_join(pairs[i].thread, NULL);
		nd += (size_t)pairs[i].delivered;
		na += (size_t)pairs[i].acks;
	}
	t1 = now_ms();
	res.cpu_us_per_msg = (cpu_us(server) - cpu0) / (double)nd;
	res.rate = (double)nd / ((t1 - t0) / 1000.0);
	d = malloc(nd * sizeof *d);
	a = malloc((na ? na : 1) * sizeof *a);
	for (i = 0, nd = 0, na = 0; i < npairs; i++) {
		for (k = 0; k < (size_t)pairs[i].delivered; k++)
			d[nd++] = pairs[i].deliver_ms[k];
		for (k = 0; k < (size_t)pairs[i].acks; k++)
			a[na++] = pairs[i].ack_ms[k];
		free(pairs[i].sent_at);
		free(pairs[i].ack_ms);
		free(pairs[i].deliver_ms);
	}
	percentiles(d, nd, res.deliver);
	if (na)
		percentiles(a, na, res.ack);
	free(d);
	free(a);
	return res;
}

static int run_direct(int npairs, double rate, double seconds, double find_max, int json_only)
{
	char dir[32], machine[256], commit[32], name[32], tok[2][64], body[128];
	char *relay_argv[] = {"build/bench-relay", "--listen", "127.0.0.1:0", NULL};
	pair_t *pairs = calloc((size_t)npairs, sizeof *pairs);
	direct_result_t pr, rr;
	pc_conn_t *http;
	pc_response_t r;
	proc_t srv, relay;
	json_t *j;
	int i;

	describe(machine, sizeof machine, commit, sizeof commit);
	memset(&rr, 0, sizeof rr);
	if (find_max > 0)
		goto parley;
	/* The relay first: pairs are made in the order of connection. */
	spawn(&relay, relay_argv);
	for (i = 0; i < npairs; i++)
		if (!(pairs[i].a = pc_connect("127.0.0.1", relay.port)) ||
		    !(pairs[i].b = pc_connect("127.0.0.1", relay.port)))
			die("cannot connect to the relay");
	rr = drive(pairs, npairs, rate, seconds, relay.pid);
	for (i = 0; i < npairs; i++) {
		pc_close(pairs[i].a);
		pc_close(pairs[i].b);
	}
	stop_proc(&relay);
	memset(pairs, 0, (size_t)npairs * sizeof *pairs);
parley:
	start_parley(&srv, dir);
	if (!(http = pc_connect("127.0.0.1", srv.port)))
		die("cannot connect");
	for (i = 0; i < npairs; i++) {
		int64_t b;
		snprintf(name, sizeof name, "pa%d", i);
		user_with_token(http, name, tok[0]);
		snprintf(name, sizeof name, "pb%d", i);
		b = user_with_token(http, name, tok[1]);
		snprintf(body, sizeof body, "{\"members\":[%lld]}", (long long)b);
		if (pc_http(http, "POST", "/api/v1/conversations", tok[0], body, &r, TIMEOUT) < 0 || r.status != 201)
			die("cannot open a conversation");
		j = json_loadb(r.body, r.body_len, 0, NULL);
		pairs[i].conv = json_integer_value(json_object_get(j, "conversation_id"));
		json_decref(j);
		pc_response_free(&r);
		if (!(pairs[i].a = pc_connect("127.0.0.1", srv.port)) ||
		    pc_ws_open(pairs[i].a, "/chat/v1/ws", tok[0], NULL, TIMEOUT) < 0 ||
		    !(pairs[i].b = pc_connect("127.0.0.1", srv.port)) ||
		    pc_ws_open(pairs[i].b, "/chat/v1/ws", tok[1], NULL, TIMEOUT) < 0)
			die("cannot open WebSockets");
	}
	pc_close(http);
	if (find_max > 0) {
		/* Double the rate until p99 passes the bound (or the server falls
		 * behind its schedule), then halve the gap four times. */
		double lo = 0, hi = 0, r = 500;
		direct_result_t x;
		int steps;

		for (;;) {
			x = drive(pairs, npairs, r, 2, srv.pid);
			if (!json_only)
				printf("  %8.0f msg/s: p99 %.3f ms, achieved %.0f\n", r, x.deliver[1], x.rate);
			if (x.deliver[1] > find_max || x.rate < 0.95 * r) {
				hi = r;
				break;
			}
			lo = r;
			r *= 2;
			if (r > 200000)
				break;
		}
		for (steps = 0; hi > 0 && steps < 4; steps++) {
			r = (lo + hi) / 2;
			x = drive(pairs, npairs, r, 2, srv.pid);
			if (!json_only)
				printf("  %8.0f msg/s: p99 %.3f ms, achieved %.0f\n", r, x.deliver[1], x.rate);
			if (x.deliver[1] > find_max || x.rate < 0.95 * r)
				hi = r;
			else
				lo = r;
		}
		printf("{\"scenario\":\"direct-max\",\"machine\":\"%s\",\"commit\":\"%s\",\"parameters\":"
		       "{\"pairs\":%d,\"p99_bound_ms\":%.2f},\"figures\":{\"max_rate\":%.0f}}\n",
		       machine, commit, npairs, find_max, lo);
		for (i = 0; i < npairs; i++) {
			pc_close(pairs[i].a);
			pc_close(pairs[i].b);
		}
		stop_parley(&srv, dir);
		free(pairs);
		return 0;
	}
	pr = drive(pairs, npairs, rate, seconds, srv.pid);
	for (i = 0; i < npairs; i++) {
		pc_close(pairs[i].a);
		pc_close(pairs[i].b);
	}
	stop_parley(&srv, dir);
	free(pairs);
	if (!json_only) {
		printf("direct: %d pairs, %.0f messages/s scheduled, %.0f s, open loop (%s, commit %s)\n", npairs,
		       rate, seconds, machine, commit);
		printf("  %-34s %10s %10s %8s\n", "", "parley", "relay", "ratio");
		printf("  %-34s %10.0f %10.0f\n", "achieved messages/s", pr.rate, rr.rate);
		printf("  %-34s %10.3f %10s\n", "send -> ack p50 (ms)", pr.ack[0], "-");
		printf("  %-34s %10.3f %10s\n", "send -> ack p99 (ms)", pr.ack[1], "-");
		printf("  %-34s %10.3f %10.3f %8.2f\n", "send -> delivery p50 (ms)", pr.deliver[0], rr.deliver[0],
		       ratio(pr.deliver[0], rr.deliver[0]));
		printf("  %-34s %10.3f %10.3f %8.2f\n", "send -> delivery p99 (ms)", pr.deliver[1], rr.deliver[1],
		       ratio(pr.deliver[1], rr.deliver[1]));
		printf("  %-34s %10.3f %10.3f\n", "send -> delivery p99.9 (ms)", pr.deliver[2], rr.deliver[2]);
		printf("  %-34s %10.3f %10.3f\n", "send -> delivery max (ms)", pr.deliver[3], rr.deliver[3]);
		printf("  %-34s %10.1f %10.1f %8.2f\n", "server CPU per delivered message (us)", pr.cpu_us_per_msg,
		       rr.cpu_us_per_msg, ratio(pr.cpu_us_per_msg, rr.cpu_us_per_msg));
	}
	printf("{\"scenario\":\"direct\",\"machine\":\"%s\",\"commit\":\"%s\",\"parameters\":{\"pairs\":%d,"
	       "\"rate\":%.0f,\"seconds\":%.0f},\"figures\":{\"achieved_rate\":%.0f,\"ack_p50_ms\":%.3f,"
	       "\"ack_p99_ms\":%.3f,\"ack_p999_ms\":%.3f,\"ack_max_ms\":%.3f,\"deliver_p50_ms\":%.3f,"
	       "\"deliver_p99_ms\":%.3f,\"deliver_p999_ms\":%.3f,\"deliver_max_ms\":%.3f,"
	       "\"cpu_us_per_message\":%.2f,\"relay_deliver_p99_ms\":%.3f,\"relay_cpu_us_per_message\":%.2f,"
	       "\"p99_ratio\":%.2f,\"cpu_ratio\":%.2f}}\n",
	       machine, commit, npairs, rate, seconds, pr.rate, pr.ack[0], pr.ack[1], pr.ack[2], pr.ack[3],
	       pr.deliver[0], pr.deliver[1], pr.deliver[2], pr.deliver[3], pr.cpu_us_per_msg, rr.deliver[1],
	       rr.cpu_us_per_msg, ratio(pr.deliver[1], rr.deliver[1]), ratio(pr.cpu_us_per_msg, rr.cpu_us_per_msg));
	return 0;
}

/* ---- group ---------------------------------------------------------- */

typedef struct user {
	int64_t id;
	char token[64];
	pc_conn_t *ws;
} user_t;

static json_t *http_json(pc_conn_t *c, const char *method, const char *path, const char *token,
                         const char *body, int expect)
{
	pc_response_t res;
	json_t *j;

	if (pc_http(c, method, path, token, body, &res, TIMEOUT) < 0)
		die("no HTTP answer");
	if (res.status != expect) {
		fprintf(stderr, "parley-bench: %s %s: %d %s\n", method, path, res.status, res.body);
		exit(1);
	}
	j = json_loadb(res.body, res.body_len, 0, NULL);
	pc_response_free(&res);
	return j;
}

/* Reads the next text frame of c as JSON (answering pings). */
static json_t *next_frame(pc_conn_t *c, int timeout_ms)
{
	for (;;) {
		pc_frame_t f;
		json_t *j;
		int r = pc_ws_recv(c, &f, timeout_ms);

		if (r == PC_TIMEOUT)
			return NULL;
		if (r < 0)
			die("a connection closed");
		if (f.opcode == 0x9) {
			pc_ws_send_frame(c, 1, 0xA, f.data, f.len, 1, 0);
			pc_frame_free(&f);
			continue;
		}
		j = json_loadb((char *)f.data, f.len, 0, NULL);
		pc_frame_free(&f);
		if (j)
			return j;
	}
}

static json_t *expect_type(pc_conn_t *c, const char *type)
{
	for (;;) {
		json_t *j = next_frame(c, TIMEOUT);
		if (!j)
			die("timed out waiting for a frame");
		if (!strcmp(json_string_value(json_object_get(j, "type")), type))
			return j;
		json_decref(j);
	}
}

/* One counter of /metrics, on a connection of its own (the set-up's may
 * have idled out during a long run). */
static double metric(const char *name)
{
	pc_conn_t *c = pc_connect("127.0.0.1", gb_admin_port);
	pc_response_t res;
	const char *p;
	char key[128];
	double v = -1;

	if (!c || pc_http(c, "GET", "/metrics", NULL, NULL, &res, TIMEOUT) < 0 || res.status != 200)
		die("no /metrics");
	pc_close(c);
	snprintf(key, sizeof key, "\n%s ", name);
	if ((p = strstr(res.body, key)) != NULL)
		v = strtod(p + strlen(key), NULL);
	pc_response_free(&res);
	return v;
}

static double pct(double *v, int n, double p)
{
	int i = (int)(p * (n - 1) + 0.5);

	qsort(v, (size_t)n, sizeof *v, cmp_double);
	return v[i];
}

/* Waits until every online member but the sender has msg seq of conv. */
static double await_everyone(user_t *u, int online, int64_t conv, int64_t seq, double t0)
{
	struct pollfd *p = calloc((size_t)online, sizeof *p);
	char *got = calloc((size_t)online, 1);
	int left = online - 1, i;
	double last = 0;

	for (i = 0; i < online; i++) {
		p[i].fd = pc_fd(u[i].ws);
		p[i].events = POLLIN;
	}
	got[0] = 1;
	while (left > 0) {
		/* Frames may already sit in a connection's buffer: drain all,
		 * then wait for the sockets. */
		for (i = 1; i < online; i++) {
			json_t *j;
			while (!got[i] && (j = next_frame(u[i].ws, 0)) != NULL) {
				const char *t = json_string_value(json_object_get(j, "type"));
				if (t && !strcmp(t, "msg") && json_integer_value(json_object_get(j, "conv")) == conv &&
				    json_integer_value(json_object_get(j, "seq")) == seq) {
					got[i] = 1;
					left--;
					last = now_ms() - t0;
				}
				json_decref(j);
			}
		}
		if (left > 0 && poll(p, (nfds_t)online, TIMEOUT) <= 0)
			die("timed out waiting for deliveries");
	}
	free(p);
	free(got);
	return last;
}

/* Throughput: SENDERS members publish into the group as fast as the server
 * acks (100 in flight each) for `seconds`, while every online member
 * drains its socket. Returns deliveries per second; *cpu gets the server's
 * CPU per delivery. */
#define SENDERS 4

static double group_throughput(user_t *u, int online, int64_t group, double seconds, int pid,
                               double *cpu)
{
	struct pollfd *pf = calloc((size_t)online, sizeof *pf);
	int inflight[SENDERS] = {0}, s, i;
	long sent = 0, acked = 0, delivered = 0, expect;
	double t0 = now_ms(), end = t0 + seconds * 1000, cpu0 = cpu_us(pid), t1;
	char body[200];

	for (i = 0; i < online; i++) {
		pf[i].fd = pc_fd(u[i].ws);
		pf[i].events = POLLIN;
	}
	for (;;) {
		int sending = now_ms() < end;
		for (s = 0; sending && s < SENDERS; s++) {
			while (inflight[s] < 100) {
				snprintf(body, sizeof body,
				         "{\"type\":\"send\",\"conv\":%" PRId64 ",\"cmid\":\"t%d_%ld\",\"body\":\"throughput\"}",
				         group, s, sent);
				pc_ws_send_text(u[s].ws, body);
				inflight[s]++;
				sent++;
			}
		}
		for (i = 0; i < online; i++) {
			pc_frame_t f;
			while (pc_ws_recv(u[i].ws, &f, 0) == 0) {
				if (f.opcode == 0x9)
					pc_ws_send_frame(u[i].ws, 1, 0xA, f.data, f.len, 1, 0);
				else if (strstr((char *)f.data, "\"type\":\"msg\""))
					delivered++;
				else if (i < SENDERS && strstr((char *)f.data, "\"type\":\"ack\"")) {
					inflight[i]--;
					acked++;
				}
				pc_frame_free(&f);
			}
		}
		expect = sent * (online - 1);
		if (!sending && acked == sent && delivered >= expect)
			break;
		if (now_ms() > end + TIMEOUT)
			die("throughput: deliveries stopped");
		poll(pf, (nfds_t)online, 10);
	}
	t1 = now_ms();
	*cpu = (cpu_us(pid) - cpu0) / (double)delivered;
	free(pf);
	return delivered / ((t1 - t0) / 1000.0);
}

/* The relay beside the group: `online` connections in one fan-out group;
 * member 0 sends `messages` frames one at a time (each waits for the last
 * member's copy), then SENDERS members publish for `seconds` with at most
 * 100 frames each not yet seen by the last member. Fills in the relay's
 * send -> last delivery latencies, deliveries per second and CPU per
 * delivery. The frames are as long as a Parley group "msg" frame. */
typedef struct group_relay_result {
	double last_p50, last_p99, tput, cpu_per_delivery;
} group_relay_result_t;

static group_relay_result_t group_relay(int online, int messages, double seconds)
{
	char fanout[16], frame[200];
	char *argv[] = {"build/bench-relay", "--listen", "127.0.0.1:0", "--fanout", fanout, NULL};
	pc_conn_t **c = calloc((size_t)online, sizeof *c);
	struct pollfd *pf = calloc((size_t)online, sizeof *pf);
	double *last = calloc((size_t)messages, sizeof *last);
	group_relay_result_t res = {0};
	long sent[SENDERS] = {0}, seen[SENDERS] = {0}, total = 0, delivered = 0;
	proc_t relay;
	int i, m, s;

	if (!c || !pf || !last)
		die("set-up");
	snprintf(fanout, sizeof fanout, "%d", online);
	spawn(&relay, argv);
	for (i = 0; i < online; i++) {
		if (!(c[i] = pc_connect("127.0.0.1", relay.port)))
			die("cannot connect to the relay");
		pf[i].fd = pc_fd(c[i]);
		pf[i].events = POLLIN;
	}
	for (m = 0; m < messages; m++) {
		double t0 = now_ms();
		int left = online - 1;
		snprintf(frame, sizeof frame, "{\"type\":\"msg\",\"conv\":1,\"seq\":%d,\"id\":\"1\",\"from\":1,"
		         "\"cmid\":\"g%d\",\"ts\":1,\"body\":\"to everyone\"}", m + 1, m);
		pc_ws_send_frame(c[0], 1, 1, frame, strlen(frame), 0, 0);
		while (left > 0) {
			for (i = 1; i < online; i++) {
				pc_frame_t f;
				while (pc_ws_recv(c[i], &f, 0) == 0) {
					left--;
					pc_frame_free(&f);
				}
			}
			if (left > 0 && poll(pf, (nfds_t)online, TIMEOUT) <= 0)
				die("relay: deliveries stopped");
		}
		last[m] = now_ms() - t0;
	}
	res.last_p50 = pct(last, messages, .5);
	res.last_p99 = pct(last, messages, .99);
	if (seconds > 0 && online > SENDERS) {
		double t0 = now_ms(), end = t0 + seconds * 1000, cpu0 = cpu_us(relay.pid), t1;
		for (;;) {
			int sending = now_ms() < end;
			for (s = 0; sending && s < SENDERS; s++)
				while (sent[s] - seen[s] < 100) {
					snprintf(frame, sizeof frame, "{\"type\":\"msg\",\"conv\":1,\"seq\":1,\"id\":\"1\","
					         "\"from\":1,\"cmid\":\"t%d_%ld\",\"ts\":1,\"body\":\"throughput\"}", s, sent[s]);
					pc_ws_send_frame(c[s], 1, 1, frame, strlen(frame), 0, 0);
					sent[s]++;
					total++;
				}
			for (i = 0; i < online; i++) {
				pc_frame_t f;
				while (pc_ws_recv(c[i], &f, 0) == 0) {
					const char *t = strstr((const char *)f.data, "\"cmid\":\"t");
					delivered++;
					/* The last member's copies pace the senders. */
					if (i == online - 1 && t && t[9] >= '0' && t[9] < '0' + SENDERS)
						seen[t[9] - '0']++;
					pc_frame_free(&f);
				}
			}
			if (!sending && delivered >= total * (online - 1))
				break;
			if (now_ms() > end + TIMEOUT)
				die("relay throughput: deliveries stopped");
			poll(pf, (nfds_t)online, 10);
		}
		t1 = now_ms();
		res.cpu_per_delivery = (cpu_us(relay.pid) - cpu0) / (double)delivered;
		res.tput = delivered / ((t1 - t0) / 1000.0);
	}
	for (i = 0; i < online; i++)
		pc_close(c[i]);
	stop_proc(&relay);
	free(c);
	free(pf);
	free(last);
	return res;
}

static int run_group(int members, int online, int messages, int batch, double tput_s, int json_only)
{
	int storms = 0, i, m, pid;
	double cpu0, cpu_direct = -1, cpu_group = -1, cpu_storm = -1;
	user_t *u;
	pc_conn_t *http;
	char body[256], *big;
	size_t len;
	int64_t group, direct;
	json_t *j;
	double *ack_direct, *ack_group, *deliver, *converge, t0;
	double writes0, commits0, writes1, commits1, rows_per_msg, commits_per_msg;
	int64_t *seqs;
	char dir[32], machine[256], commit[32];
	proc_t srv;
	double tput = 0, tput_cpu = 0;
	group_relay_result_t rel;

	if (members < 3 || members > 1024 || online < 2 || online > members || messages < 1 ||
	    batch < 1 || batch > messages)
		die("need 3 <= members <= 1024, 2 <= online <= members, 1 <= batch <= messages");

	describe(machine, sizeof machine, commit, sizeof commit);
	rel = group_relay(online, messages, tput_s);
	start_parley(&srv, dir);
	gb_port = srv.port;
	gb_admin_port = srv.admin_port;
	pid = srv.pid;
	/* Set-up, not timed. */
	u = calloc((size_t)members, sizeof *u);
	if (!(http = pc_connect("127.0.0.1", gb_port)))
		die("cannot connect");
	for (i = 0; i < members; i++) {
		char name[32];
		snprintf(name, sizeof name, "gb%d_%d", (int)(time(NULL) % 100000), i);
		snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"benchmark\"}", name);
		j = http_json(http, "POST", "/api/v1/users", NULL, body, 201);
		u[i].id = json_integer_value(json_object_get(j, "user_id"));
		json_decref(j);
		j = http_json(http, "POST", "/api/v1/sessions", NULL, body, 201);
		snprintf(u[i].token, sizeof u[i].token, "%s", json_string_value(json_object_get(j, "token")));
		json_decref(j);
	}
	for (i = 0; i < online; i++) {
		if (!(u[i].ws = pc_connect("127.0.0.1", gb_port)) || pc_ws_open(u[i].ws, "/chat/v1/ws", u[i].token, NULL, TIMEOUT) < 0)
			die("cannot open a WebSocket");
		json_decref(expect_type(u[i].ws, "ready"));
	}
	big = malloc((size_t)members * 24 + 64);
	len = (size_t)sprintf(big, "{\"title\":\"bench\",\"members\":[");
	for (i = 1; i < members; i++)
		len += (size_t)sprintf(big + len, "%s%" PRId64, i > 1 ? "," : "", u[i].id);
	sprintf(big + len, "]}");
	j = http_json(http, "POST", "/api/v1/conversations", u[0].token, big, 201);
	group = json_integer_value(json_object_get(j, "conversation_id"));
	json_decref(j);
	free(big);
	for (i = 0; i < online; i++)
		json_decref(expect_type(u[i].ws, "members"));
	snprintf(body, sizeof body, "{\"members\":[%" PRId64 "]}", u[1].id);
	j = http_json(http, "POST", "/api/v1/conversations", u[0].token, body, 201);
	direct = json_integer_value(json_object_get(j, "conversation_id"));
	json_decref(j);

	ack_direct = calloc((size_t)messages, sizeof(double));
	ack_group = calloc((size_t)messages, sizeof(double));
	deliver = calloc((size_t)messages, sizeof(double));
	converge = calloc((size_t)messages, sizeof(double));

	/* Direct chat: ack latency. */
	cpu0 = cpu_us(pid);
	for (m = 0; m < messages; m++) {
		snprintf(body, sizeof body, "{\"type\":\"send\",\"conv\":%" PRId64 ",\"cmid\":\"d%d\",\"body\":\"hi\"}",
		         direct, m);
		t0 = now_ms();
		pc_ws_send_text(u[0].ws, body);
		json_decref(expect_type(u[0].ws, "ack"));
		ack_direct[m] = now_ms() - t0;
		json_decref(expect_type(u[1].ws, "msg"));
	}

	if (cpu0 >= 0)
		cpu_direct = (cpu_us(pid) - cpu0) / messages;
	/* Group: ack latency and the last online member's delivery, sent
	 * back to back like the direct chat's. */
	seqs = calloc((size_t)messages, sizeof *seqs);
	cpu0 = cpu_us(pid);
	for (m = 0; m < messages; m++) {
		snprintf(body, sizeof body, "{\"type\":\"send\",\"conv\":%" PRId64 ",\"cmid\":\"g%d\",\"body\":\"to everyone\"}",
		         group, m);
		t0 = now_ms();
		pc_ws_send_text(u[0].ws, body);
		j = expect_type(u[0].ws, "ack");
		ack_group[m] = now_ms() - t0;
		seqs[m] = json_integer_value(json_object_get(j, "seq"));
		json_decref(j);
		deliver[m] = await_everyone(u, online, group, seqs[m], t0);
	}

	if (cpu0 >= 0)
		cpu_group = (cpu_us(pid) - cpu0) / messages;
	/* The storms: everyone online says delivered and read, once per
	 * --batch messages (one frame covering them all, as clients that batch
	 * receipts do); what the store wrote, and when the sender's count is
	 * complete. */
	writes0 = metric("parley_receipt_writes_total");
	commits0 = metric("parley_store_commits_total");
	cpu0 = cpu_us(pid);
	for (m = batch - 1; m < messages; m += batch) {
		int64_t seq = seqs[m];
		t0 = now_ms();
		for (i = 1; i < online; i++) {
			snprintf(body, sizeof body,
			         "{\"type\":\"receipt\",\"conv\":%" PRId64 ",\"state\":\"delivered\",\"seq\":%" PRId64 "}",
			         group, seq);
			pc_ws_send_text(u[i].ws, body);
			snprintf(body, sizeof body,
			         "{\"type\":\"receipt\",\"conv\":%" PRId64 ",\"state\":\"read\",\"seq\":%" PRId64 "}",
			         group, seq);
			pc_ws_send_text(u[i].ws, body);
		}
		for (;;) {
			json_t *e;
			size_t k;
			int done = 0;
			j = expect_type(u[0].ws, "receipts");
			json_array_foreach(json_object_get(j, "counts"), k, e)
				if (json_integer_value(json_object_get(e, "seq")) == seq &&
				    json_integer_value(json_object_get(e, "read")) == online - 1)
					done = 1;
			json_decref(j);
			if (done)
				break;
		}
		converge[storms++] = now_ms() - t0;
	}
	if (cpu0 >= 0)
		cpu_storm = (cpu_us(pid) - cpu0) / messages; /* per message covered */
	writes1 = metric("parley_receipt_writes_total");
	commits1 = metric("parley_store_commits_total");
	rows_per_msg = (writes1 - writes0) / messages + 1; /* + the message row */
	commits_per_msg = (commits1 - commits0) / messages;
	free(seqs);
	if (tput_s > 0)
		tput = group_throughput(u, online, group, tput_s, pid, &tput_cpu);

	if (!json_only) {
	printf("group of %d members, %d online, %d messages (one sender), receipts every %d\n", members,
	       online, messages, batch);
	printf("  receipt frames in per message          %.1f (delivered + read from %d members)\n",
	       2.0 * (online - 1) / batch, online - 1);
	printf("  store row writes per message           %.1f (message 1 + read watermarks)\n", rows_per_msg);
	printf("  store commits (fsyncs) per message     %.1f (for its receipts)\n", commits_per_msg);
	printf("  ack latency, direct chat   p50 %.2f ms  p99 %.2f ms\n", pct(ack_direct, messages, .5),
	       pct(ack_direct, messages, .99));
	printf("  ack latency, group         p50 %.2f ms  p99 %.2f ms\n", pct(ack_group, messages, .5),
	       pct(ack_group, messages, .99));
	printf("  send -> last online member p50 %.2f ms  p99 %.2f ms (relay: p50 %.2f, p99 %.2f; "
	       "p99 ratio %.2f)\n", pct(deliver, messages, .5), pct(deliver, messages, .99), rel.last_p50,
	       rel.last_p99, ratio(pct(deliver, messages, .99), rel.last_p99));
	printf("  storm -> sender's read count complete  p50 %.0f ms (counts come at most once a second)\n",
	       pct(converge, storms, .5));
	if (cpu_group >= 0)
		printf("  server CPU per message: direct %.0f us; group %.0f us to deliver (%.2f us per "
		       "delivery) + %.0f us for its receipts\n",
		       cpu_direct, cpu_group, cpu_group / (online - 1), cpu_storm);
	if (tput > 0)
		printf("  throughput: %d senders, %.0f deliveries/s, %.3f us of server CPU per delivery "
		       "(relay: %.0f/s, %.3f us; CPU ratio %.2f)\n", SENDERS, tput, tput_cpu, rel.tput,
		       rel.cpu_per_delivery, ratio(tput_cpu, rel.cpu_per_delivery));
	}
	printf("{\"scenario\":\"group\",\"machine\":\"%s\",\"commit\":\"%s\",\"parameters\":{\"members\":%d,\"online\":%d,\"messages\":%d,\"batch\":%d},\"figures\":{"
	       "\"receipt_frames_per_message\":%.1f,\"store_rows_per_message\":%.1f,"
	       "\"store_commits_per_message\":%.1f,\"ack_direct_p50_ms\":%.3f,\"ack_group_p50_ms\":%.3f,"
	       "\"deliver_last_p50_ms\":%.3f,\"deliver_last_p99_ms\":%.3f,\"counts_converge_p50_ms\":%.0f,\"cpu_us_direct_message\":%.0f,\"cpu_us_group_message\":%.0f,\"cpu_us_group_storm\":%.0f,\"throughput_deliveries_per_s\":%.0f,\"throughput_cpu_us_per_delivery\":%.3f,\"relay_deliver_last_p99_ms\":%.3f,\"p99_ratio\":%.2f,\"relay_throughput_deliveries_per_s\":%.0f,\"relay_cpu_us_per_delivery\":%.3f,\"cpu_ratio\":%.2f}}\n",
	       machine, commit, members, online, messages, batch, 2.0 * (online - 1) / batch, rows_per_msg, commits_per_msg,
	       pct(ack_direct, messages, .5), pct(ack_group, messages, .5), pct(deliver, messages, .5),
	       pct(deliver, messages, .99), pct(converge, storms, .5), cpu_direct, cpu_group, cpu_storm, tput, tput_cpu,
	       rel.last_p99, ratio(pct(deliver, messages, .99), rel.last_p99), rel.tput, rel.cpu_per_delivery,
	       ratio(tput_cpu, rel.cpu_per_delivery));
	for (i = 0; i < online; i++)
		pc_close(u[i].ws);
	pc_close(http);
	stop_parley(&srv, dir);
	free(u);
	free(ack_direct);
	free(ack_group);
	free(deliver);
	free(converge);
	return 0;
}

/* ---- resume --------------------------------------------------------- */

#define RESUME_CONVS 4
#define RESUME_MISSED 5   /* per conversation */

typedef struct resume_client {
	pthread_t thread;
	int port;
	char token[64];
	int64_t convs[RESUME_CONVS];
	pthread_barrier_t *start;
	double resume_ms, done_at;
	int got;
} resume_client_t;

static void *resume_main(void *arg)
{
	resume_client_t *rc = arg;
	pc_conn_t *c;
	pc_frame_t f;
	char frame[256];
	double t0;
	int n;

	pthread_barrier_wait(rc->start);
	if (!(c = pc_connect("127.0.0.1", rc->port)) ||
	    pc_ws_open(c, "/chat/v1/ws", rc->token, NULL, TIMEOUT) < 0 || pc_ws_recv(c, &f, TIMEOUT) < 0)
		die("cannot reconnect");
	pc_frame_free(&f); /* ready */
	n = snprintf(frame, sizeof frame, "{\"type\":\"resume\",\"convs\":{");
	for (int i = 0; i < RESUME_CONVS; i++)
		n += snprintf(frame + n, sizeof frame - (size_t)n, "%s\"%lld\":0", i ? "," : "",
		              (long long)rc->convs[i]);
	snprintf(frame + n, sizeof frame - (size_t)n, "}}");
	t0 = now_ms();
	pc_ws_send_text(c, frame);
	for (;;) {
		if (pc_ws_recv(c, &f, TIMEOUT) < 0)
			die("no resumed frame");
		if (strstr((char *)f.data, "\"type\":\"msg\""))
			rc->got++;
		if (strstr((char *)f.data, "\"type\":\"resumed\"")) {
			pc_frame_free(&f);
			break;
		}
		pc_frame_free(&f);
	}
	rc->done_at = now_ms();
	rc->resume_ms = rc->done_at - t0;
	pc_close(c);
	return NULL;
}

static int run_resume(int clients, int json_only)
{
	char dir[32], machine[256], commit[32], name[32], body[256];
	char senders[RESUME_CONVS][64];
	resume_client_t *rc = calloc((size_t)clients, sizeof *rc);
	double *lat = calloc((size_t)clients, sizeof *lat), start, end = 0, p50, p99, rate;
	pthread_barrier_t barrier;
	pc_conn_t *http, *ws[RESUME_CONVS];
	pc_response_t r;
	proc_t srv;
	json_t *j;
	int i, s;

	describe(machine, sizeof machine, commit, sizeof commit);
	start_parley(&srv, dir);
	if (!(http = pc_connect("127.0.0.1", srv.port)))
		die("cannot connect");
	for (s = 0; s < RESUME_CONVS; s++) {
		snprintf(name, sizeof name, "sender%d", s);
		user_with_token(http, name, senders[s]);
	}
	for (i = 0; i < clients; i++) {
		int64_t id;
		snprintf(name, sizeof name, "away%d", i);
		id = user_with_token(http, name, rc[i].token);
		rc[i].port = srv.port;
		rc[i].start = &barrier;
		for (s = 0; s < RESUME_CONVS; s++) {
			snprintf(body, sizeof body, "{\"members\":[%lld]}", (long long)id);
			if (pc_http(http, "POST", "/api/v1/conversations", senders[s], body, &r, TIMEOUT) < 0 ||
			    r.status != 201)
				die("cannot open a conversation");
			j = json_loadb(r.body, r.body_len, 0, NULL);
			rc[i].convs[s] = json_integer_value(json_object_get(j, "conversation_id"));
			json_decref(j);
			pc_response_free(&r);
		}
	}
	pc_close(http);
	/* While the clients are away, each sender sends 5 to each of them. */
	for (s = 0; s < RESUME_CONVS; s++) {
		int sent = 0, acked = 0, total = clients * RESUME_MISSED;
		pc_frame_t f;
		if (!(ws[s] = pc_connect("127.0.0.1", srv.port)) ||
		    pc_ws_open(ws[s], "/chat/v1/ws", senders[s], NULL, TIMEOUT) < 0)
			die("cannot open a WebSocket");
		while (acked < total) {
			while (sent < total && sent - acked < 100) {
				snprintf(body, sizeof body,
				         "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"m%d\",\"body\":\"while you were away\"}",
				         (long long)rc[sent % clients].convs[s], sent);
				pc_ws_send_text(ws[s], body);
				sent++;
			}
			if (pc_ws_recv(ws[s], &f, TIMEOUT) < 0)
				die("no ack");
			if (strstr((char *)f.data, "\"type\":\"ack\""))
				acked++;
			pc_frame_free(&f);
		}
		pc_close(ws[s]);
	}
	/* All come back at once. */
	pthread_barrier_init(&barrier, NULL, (unsigned)clients + 1);
	for (i = 0; i < clients; i++)
		pthread_create(&rc[i].thread, NULL, resume_main, &rc[i]);
	start = now_ms();
	pthread_barrier_wait(&barrier);
	for (i = 0; i < clients; i++) {
		pthread_join(rc[i].thread, NULL);
		if (rc[i].got != RESUME_CONVS * RESUME_MISSED)
			die("a client did not get exactly its missed messages");
		lat[i] = rc[i].resume_ms;
		if (rc[i].done_at > end)
			end = rc[i].done_at;
	}
	pthread_barrier_destroy(&barrier);
	stop_parley(&srv, dir);
	qsort(lat, (size_t)clients, sizeof *lat, cmp_double);
	p50 = lat[clients / 2];
	p99 = lat[(int)((clients - 1) * 0.99)];
	rate = clients / ((end - start) / 1000.0);
	if (!json_only) {
		printf("resume: %d clients, each missed %d messages in %d conversations, back at once (%s, commit %s)\n",
		       clients, RESUME_CONVS * RESUME_MISSED, RESUME_CONVS, machine, commit);
		printf("  resume -> resumed p50 %.2f ms, p99 %.2f ms; %.0f clients reconnected and resumed per second\n",
		       p50, p99, rate);
	}
	printf("{\"scenario\":\"resume\",\"machine\":\"%s\",\"commit\":\"%s\",\"parameters\":{\"clients\":%d,"
	       "\"missed\":%d,\"conversations\":%d},\"figures\":{\"resume_p50_ms\":%.3f,\"resume_p99_ms\":%.3f,"
	       "\"reconnects_per_second\":%.0f}}\n",
	       machine, commit, clients, RESUME_CONVS * RESUME_MISSED, RESUME_CONVS, p50, p99, rate);
	free(rc);
	free(lat);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: parley-bench idle [--connections N] [--processes K] [--json]\n"
	                "       parley-bench direct [--pairs P] [--rate R] [--seconds S] [--json]\n"
	                "       parley-bench direct --find-max P99_MS [--pairs P] [--json]\n"
	                "  (any scenario: --commit-delay US starts the server with that commit delay)\n"
	                "       parley-bench history [--clients K] [--seconds S] [--json]\n"
	                "       parley-bench resume [--clients N] [--json]\n"
	                "       parley-bench group [--members N] [--online K] [--messages M] [--batch B]\n"
	                "                          [--throughput SECONDS] [--json]\n");
	return 2;
}

int main(int argc, char **argv)
{
	int n = 2000, procs = 0, clients = 4, client_set = 0, json_only = 0, pairs = 50, i;
	double seconds = 5, rate = 2000, find_max = 0, throughput = 0;
	int members = 1024, online = 800, messages = 30, batch = 10;

	signal(SIGPIPE, SIG_IGN);
	if (argc < 2 || (strcmp(argv[1], "idle") && strcmp(argv[1], "history") &&
	                 strcmp(argv[1], "resume") && strcmp(argv[1], "direct") && strcmp(argv[1], "group")))
		return usage();
	for (i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--connections") && i + 1 < argc)
			n = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--processes") && i + 1 < argc)
			procs = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--clients") && i + 1 < argc)
			clients = atoi(argv[++i]), client_set = 1;
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--pairs") && i + 1 < argc)
			pairs = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--rate") && i + 1 < argc)
			rate = atof(argv[++i]);
		else if (!strcmp(argv[i], "--find-max") && i + 1 < argc)
			find_max = atof(argv[++i]);
		else if (!strcmp(argv[i], "--members") && i + 1 < argc)
			members = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--online") && i + 1 < argc)
			online = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--messages") && i + 1 < argc)
			messages = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
			batch = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--throughput") && i + 1 < argc)
			throughput = atof(argv[++i]);
		else if (!strcmp(argv[i], "--commit-delay") && i + 1 < argc)
			snprintf(commit_delay, sizeof commit_delay, "%d", atoi(argv[++i]));
		else if (!strcmp(argv[i], "--json"))
			json_only = 1;
		else
			return usage();
	}
	if (!strcmp(argv[1], "direct")) {
		if (pairs < 1 || pairs > 500 || !(rate > 0 && rate <= 1e6) || !(seconds > 0 && seconds <= 3600))
			die("--pairs: 1 to 500; --rate: up to 1000000; --seconds: up to 3600");
		return run_direct(pairs, rate, seconds, find_max, json_only);
	}
	if (!strcmp(argv[1], "group"))
		return run_group(members, online, messages, batch, throughput, json_only);
	if (!strcmp(argv[1], "resume")) {
		if (clients < 1 || clients > 2000)
			die("--clients: 1 to 2000");
		return run_resume(clients == 4 && !client_set ? 200 : clients, json_only);
	}
	if (!strcmp(argv[1], "history")) {
		if (clients < 1 || clients > 256 || !(seconds > 0 && seconds <= 3600))
			die("--clients: 1 to 256; --seconds: up to 3600");
		return run_history(clients, seconds, json_only);
	}
	/* A process may open at most 20,000 files here, the server included:
	 * it holds every connection, each client process at most 10,000. */
	if (procs == 0)
		procs = (n + 9999) / 10000;
	if (n < 2 || n > 19500 || procs < 1 || procs > 64 || n / procs > 19000)
		die("--connections: 2 to 19500 (the server opens at most 20,000 files here); "
		    "--processes: 1 to 64, at most 19,000 connections each");
	return run_idle(n, procs, json_only);
}
