/* parley_bench.c - parley-bench, the load generator and benchmark suite.
 *
 *   parley-bench idle [--connections N] [--processes K] [--json]
 *   parley-bench history [--clients K] [--seconds S] [--json]
 *   parley-bench resume [--clients N] [--json]
 *   parley-bench direct [--pairs P] [--rate R] [--seconds S] [--json]
 *   parley-bench direct --throughput S [--window W] [--pairs P] [--json]
 *   parley-bench fleet [--pairs P] [--rate R] [--seconds S] [--log] [--haproxy] [--json]
 *   parley-bench failover [--clients N] [--one-address] [--json]
 *   parley-bench direct --find-max P99_MS [--pairs P] [--json]
 *   parley-bench abuse [--seconds S] [--quick] [--only ATTACK] [--trace FILE] [--json]
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
 * under P99_MS (2 s runs: doubling, then four halvings of the gap). With
 * --throughput S, closed loop instead: each pair keeps up to --window W
 * (default 32) messages unanswered and sends the next as soon as one is
 * answered, for S seconds: acks and deliveries a second, ack and delivery
 * latency from each send, CPU per message -- the relay driven the same way
 * (its answers are the deliveries).
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
 * fleet: two nodes on one PostgreSQL and one Redis (both started here),
 * direct pairs first on one node, then across the two: send -> delivery
 * of each, the fleet's internal publishes per delivered message, and the
 * CPU of every process of the fleet per message (PostgreSQL store only).
 * With --log, also three NATS servers: the nodes deliver across nodes from
 * the event log (dispatch.h), and the NATS servers' CPU is counted too.
 * With --haproxy, a third set of pairs connects through HAProxy
 * (deploy/haproxy.cfg, ?user= routing), its CPU counted too.
 *
 * failover: four nodes on one PostgreSQL and one Redis; N clients (held
 * by 4 client processes) on node A, each in a group with 5 messages it
 * has not seen. A is killed (SIGKILL); each client reconnects at once to
 * its fallback (B, C or D by user id mod 3: HAProxy's consistent hash
 * without HAProxy, which could not hold 2N sockets in one process here),
 * retrying refusals after a jittered 50-250 ms, and resumes. Reported:
 * the time from the kill to 50%, 99% and all of the clients back and
 * resumed, the refused attempts, the surviving nodes' peak RSS. Each
 * client connects from an address of its own (127.20.0.1 and up), as
 * behind a trusted proxy; --one-address: all from 127.0.0.1.
 *
 * abuse: a bystander (127.0.0.1) logs in, lists its conversations and
 * sends direct messages on fixed schedules for S seconds, first with no
 * attack, then beside each attack in turn (from 127.0.0.2 and up): a
 * login flood, slow sockets trickling request heads, an account sending
 * costly watch and resume frames, HTTP pipelining that reads nothing;
 * then with no attack again. Reported per phase: the bystander's p50/p99
 * per operation and their ratios to the first phase, the attack's
 * counters (sent, refused, with which code), the server's CPU by thread.
 * Its server runs with the production limits and password hashing, which
 * are what is measured; no baseline process (the first phase is the
 * baseline). It fails when the bystander is not served at all.
 *
 * Any scenario takes --commit-delay US and --store-writers N, passed on to
 * the server.
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
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "eventlog.h"
#include "pclient.h"
#include "../tests/pgserver.h"
#include "../tests/haproxyserver.h"
#include "../tests/natsserver.h"
#include "../tests/redisserver.h"

#define TIMEOUT 30000

typedef struct proc {
	pid_t pid;
	int port;
	int admin_port;      /* Parley's operator listener, for /metrics */
	char dir[64];
	char store[256];     /* Parley's store: its data directory, or a database's URI */
} proc_t;

/* Set in forked client processes: they leave by _exit, so that the
 * PostgreSQL and Redis servers' atexit handlers (tests/tmpserver.h) run
 * only in the process that started them. */
static int bench_child;

static void die(const char *what)
{
	fprintf(stderr, "parley-bench: %s\n", what);
	if (bench_child)
		_exit(1);
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
	pid_t parent = getpid();

	if ((p->pid = fork()) == 0) {
		/* The servers' logs are not the results; $PARLEY_BENCH_SERVER_LOG
		 * keeps them, appended to that file, when a run needs looking into. */
		const char *keep = getenv("PARLEY_BENCH_SERVER_LOG");
		int null = keep && *keep ? open(keep, O_WRONLY | O_CREAT | O_APPEND, 0644) : open("/dev/null", O_WRONLY);
		/* The servers end with the tool however it ends (die() and a
		 * kill included). */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
			_exit(127);
		dup2(fd[1], 1);
		if (null >= 0)
			dup2(null, 2);
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
/* --store-writers, likewise ("0": the store's choice). */
static char store_writers[16] = "0";

/* The store the scenarios run on (--store): "sqlite", a data directory; or
 * "postgresql", a fresh database on a throwaway PostgreSQL server the
 * tool starts at its first need (tests/pgserver.h: initdb into a
 * temporary directory, fsync on) and that stops when it exits. */
static const char *bench_store = "sqlite";
static pgserver_t *bench_pg;

/* Starts a Parley server on a fresh store (dir: 32 bytes, the data
 * directory when the store is SQLite's). */
static void start_parley(proc_t *srv, char *dir)
{
	char *argv[] = {"build/parley", "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data", dir,
	                "--signup-rate", "0", "--login-rate", "0", "--max-address-connections", "0",
	                "--max-address-pending", "0", "--strangers-per-day", "0", "--work-rate", "0",
	                "--storage-per-day", "0", "--read-rate", "0",
	                "--fast-password-hashing", "--rate-limit", "0", "--commit-delay", commit_delay,
	                "--store-writers", store_writers, NULL};

	snprintf(dir, 32, "/tmp/parley-bench-XXXXXX");
	if (!mkdtemp(dir))
		die("mkdtemp");
	if (!strcmp(bench_store, "postgresql")) {
		if (!bench_pg && !(bench_pg = pgserver_start()))
			die("cannot start a PostgreSQL server for --store postgresql");
		if (pgserver_create_db(bench_pg, NULL, srv->store, sizeof srv->store) < 0)
			die("cannot create a database for --store postgresql");
		argv[6] = "--store";
		argv[7] = srv->store;
	} else {
		snprintf(srv->store, sizeof srv->store, "%s", dir);
	}
	spawn(srv, argv);
}

static void stop_parley(proc_t *srv, const char *dir)
{
	stop_proc(srv);
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	if (bench_pg && strstr(srv->store, "://"))
		pgserver_drop_db(bench_pg, srv->store);
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
	printf("{\"scenario\":\"idle\",\"machine\":\"%s\",\"commit\":\"%s\",\"store\":\"%s\",\"parameters\":{\"connections\":%d,\"client_processes\":%d},"
	       "\"figures\":{\"parley_user_bytes_per_conn\":%.0f,\"relay_user_bytes_per_conn\":%.0f,"
	       "\"user_bytes_ratio\":%.2f,\"parley_store_cache_bytes_per_conn\":%.0f,"
	       "\"parley_kernel_bytes_per_conn\":%.0f,"
	       "\"relay_kernel_bytes_per_conn\":%.0f}}\n",
	       machine, commit, bench_store, n, procs, p.user_bytes, r.user_bytes, ratio(p.user_bytes, r.user_bytes),
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
	printf("{\"scenario\":\"history\",\"machine\":\"%s\",\"commit\":\"%s\",\"store\":\"%s\",\"parameters\":{\"clients\":%d,"
	       "\"seconds\":%.0f,\"page\":50,\"messages\":%d},\"figures\":{\"pages_per_second\":%.0f,"
	       "\"latency_p50_ms\":%.3f,\"latency_p99_ms\":%.3f,\"latency_max_ms\":%.3f}}\n",
	       machine, commit, bench_store, clients, seconds, HISTORY_MESSAGES, rate, p50, p99, max);
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
	int window;              /* closed loop: at most this many unanswered (0: open loop) */
	int cap;                 /* closed loop: room in the arrays */
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
	int total = p->window ? p->cap : (int)(p->seconds * 1000 / p->interval_ms);
	double end = p->start + p->seconds * 1000;
	struct pollfd pf[2] = {{pc_fd(p->a), POLLIN, 0}, {pc_fd(p->b), POLLIN, 0}};
	char frame[160];

	p->sent_at = calloc((size_t)total + 1, sizeof(double));
	p->ack_ms = calloc((size_t)total + 1, sizeof(double));
	p->deliver_ms = calloc((size_t)total + 1, sizeof(double));
	for (;;) {
		double now = now_ms(), due = p->start + p->sends * p->interval_ms;
		/* Closed loop: the window's answers are acks from Parley and
		 * deliveries from the relay, which has no acks. */
		int answered = p->conv ? p->acks : p->delivered;
		int may_send = p->window ? p->sends < total && now >= p->start && now < end &&
		                               p->sends - answered < p->window
		                         : p->sends < total && now >= due;
		pc_frame_t f;
		int k, wait;

		if (p->window ? (now >= end || p->sends == total) && p->delivered == p->sends &&
		                    (!p->conv || p->acks == p->sends)
		              : p->delivered >= total && (!p->conv || p->acks >= total))
			break;
		if (may_send) {
			/* Open loop: latency counts from when the send was due;
			 * closed loop: from when it went. */
			p->sent_at[p->sends] = p->window ? now : due;
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
		if (p->window)
			wait = now_ms() < p->start ? (int)(p->start - now_ms()) : 10;
		else
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
	double acks;                /* acks a second */
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
/* Runs the pairs against a server (conv ids set) or the relay: open loop
 * at rate, or, with a window, closed loop for seconds, each pair keeping
 * up to window messages unanswered. */
static direct_result_t drive(pair_t *pairs, int npairs, double rate, double seconds, int window, pid_t server)
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
		pairs[i].interval_ms = window ? 0 : 1000.0 * npairs / rate;
		pairs[i].window = window;
		/* Room for 400,000 messages a second in all. */
		pairs[i].cap = window ? (int)(400000.0 * seconds / npairs) + window : 0;
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
	res.acks = (double)na / ((t1 - t0) / 1000.0);
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

static int run_direct(int npairs, double rate, double seconds, double find_max, int window, int json_only)
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
	rr = drive(pairs, npairs, rate, seconds, window, relay.pid);
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
			x = drive(pairs, npairs, r, 2, 0, srv.pid);
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
			x = drive(pairs, npairs, r, 2, 0, srv.pid);
			if (!json_only)
				printf("  %8.0f msg/s: p99 %.3f ms, achieved %.0f\n", r, x.deliver[1], x.rate);
			if (x.deliver[1] > find_max || x.rate < 0.95 * r)
				hi = r;
			else
				lo = r;
		}
		printf("{\"scenario\":\"direct-max\",\"machine\":\"%s\",\"commit\":\"%s\",\"store\":\"%s\",\"parameters\":"
		       "{\"pairs\":%d,\"p99_bound_ms\":%.2f},\"figures\":{\"max_rate\":%.0f}}\n",
		       machine, commit, bench_store, npairs, find_max, lo);
		for (i = 0; i < npairs; i++) {
			pc_close(pairs[i].a);
			pc_close(pairs[i].b);
		}
		stop_parley(&srv, dir);
		free(pairs);
		return 0;
	}
	pr = drive(pairs, npairs, rate, seconds, window, srv.pid);
	for (i = 0; i < npairs; i++) {
		pc_close(pairs[i].a);
		pc_close(pairs[i].b);
	}
	stop_parley(&srv, dir);
	free(pairs);
	if (window) {
		if (!json_only) {
			printf("direct: %d pairs, each with up to %d unanswered, as fast as answered, %.0f s (%s, commit %s)\n",
			       npairs, window, seconds, machine, commit);
			printf("  %-34s %10s %10s %8s\n", "", "parley", "relay", "ratio");
			printf("  %-34s %10.0f %10s\n", "acks/s", pr.acks, "-");
			printf("  %-34s %10.0f %10.0f %8.2f\n", "deliveries/s", pr.rate, rr.rate, ratio(pr.rate, rr.rate));
			printf("  %-34s %10.3f %10s\n", "send -> ack p50 (ms)", pr.ack[0], "-");
			printf("  %-34s %10.3f %10s\n", "send -> ack p99 (ms)", pr.ack[1], "-");
			printf("  %-34s %10.3f %10.3f\n", "send -> delivery p50 (ms)", pr.deliver[0], rr.deliver[0]);
			printf("  %-34s %10.3f %10.3f\n", "send -> delivery p99 (ms)", pr.deliver[1], rr.deliver[1]);
			printf("  %-34s %10.1f %10.1f %8.2f\n", "server CPU per delivered message (us)",
			       pr.cpu_us_per_msg, rr.cpu_us_per_msg, ratio(pr.cpu_us_per_msg, rr.cpu_us_per_msg));
		}
		printf("{\"scenario\":\"direct-throughput\",\"machine\":\"%s\",\"commit\":\"%s\",\"store\":\"%s\","
		       "\"parameters\":{\"pairs\":%d,\"window\":%d,\"seconds\":%.0f},\"figures\":{\"acks_per_s\":%.0f,"
		       "\"deliveries_per_s\":%.0f,\"ack_p50_ms\":%.3f,\"ack_p99_ms\":%.3f,\"deliver_p50_ms\":%.3f,"
		       "\"deliver_p99_ms\":%.3f,\"cpu_us_per_message\":%.2f,\"relay_deliveries_per_s\":%.0f,"
		       "\"relay_deliver_p99_ms\":%.3f,\"relay_cpu_us_per_message\":%.2f,\"cpu_ratio\":%.2f}}\n",
		       machine, commit, bench_store, npairs, window, seconds, pr.acks, pr.rate, pr.ack[0], pr.ack[1],
		       pr.deliver[0], pr.deliver[1], pr.cpu_us_per_msg, rr.rate, rr.deliver[1], rr.cpu_us_per_msg,
		       ratio(pr.cpu_us_per_msg, rr.cpu_us_per_msg));
		return 0;
	}
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
	printf("{\"scenario\":\"direct\",\"machine\":\"%s\",\"commit\":\"%s\",\"store\":\"%s\",\"parameters\":{\"pairs\":%d,"
	       "\"rate\":%.0f,\"seconds\":%.0f},\"figures\":{\"achieved_rate\":%.0f,\"ack_p50_ms\":%.3f,"
	       "\"ack_p99_ms\":%.3f,\"ack_p999_ms\":%.3f,\"ack_max_ms\":%.3f,\"deliver_p50_ms\":%.3f,"
	       "\"deliver_p99_ms\":%.3f,\"deliver_p999_ms\":%.3f,\"deliver_max_ms\":%.3f,"
	       "\"cpu_us_per_message\":%.2f,\"relay_deliver_p99_ms\":%.3f,\"relay_cpu_us_per_message\":%.2f,"
	       "\"p99_ratio\":%.2f,\"cpu_ratio\":%.2f}}\n",
	       machine, commit, bench_store, npairs, rate, seconds, pr.rate, pr.ack[0], pr.ack[1], pr.ack[2], pr.ack[3],
	       pr.deliver[0], pr.deliver[1], pr.deliver[2], pr.deliver[3], pr.cpu_us_per_msg, rr.deliver[1],
	       rr.cpu_us_per_msg, ratio(pr.deliver[1], rr.deliver[1]), ratio(pr.cpu_us_per_msg, rr.cpu_us_per_msg));
	return 0;
}

/* ---- fleet ----------------------------------------------------------- */

/* fleet --log: the nodes put their messages on a 3-server JetStream
 * cluster and deliver across nodes from it (dispatch.h). */
static int fleet_log;
/* fleet --haproxy: a third set of pairs whose clients all connect through
 * HAProxy (deploy/haproxy.cfg), each where the ring puts its user. */
static int fleet_haproxy;

/* CPU (µs) of every process of the fleet: the nodes, Redis, and the
 * PostgreSQL server's postmaster with its children (backends, WAL
 * writer, checkpointer...), found through /proc by parent. */
static double fleet_cpu(const proc_t *nodes, int n, pid_t redis, pid_t postmaster, const natscluster_t *nats)
{
	double total = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;
	int i;

	for (i = 0; i < n; i++)
		total += cpu_us(nodes[i].pid);
	total += cpu_us(redis);
	for (i = 0; nats && i < natscluster_size(nats); i++)
		total += cpu_us(natscluster_pid(nats, i));
	if (!d)
		return total;
	while ((e = readdir(d)) != NULL) {
		char path[64], buf[512], *p;
		int pid = atoi(e->d_name), ppid = 0;
		FILE *f;

		if (pid <= 0)
			continue;
		snprintf(path, sizeof path, "/proc/%d/stat", pid);
		if (!(f = fopen(path, "r")))
			continue;
		if (fgets(buf, sizeof buf, f) && (p = strrchr(buf, ')')))
			sscanf(p + 2, "%*c %d", &ppid);
		fclose(f);
		if (pid == postmaster || ppid == postmaster)
			total += cpu_us(pid);
	}
	closedir(d);
	return total;
}

static pid_t postmaster_pid(pgserver_t *pg)
{
	char path[300];
	FILE *f;
	int pid = 0;

	snprintf(path, sizeof path, "%s/data/postmaster.pid", pgserver_dir(pg));
	if ((f = fopen(path, "r"))) {
		if (fscanf(f, "%d", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	return pid;
}

/* One counter of a node's /metrics. */
static double node_metric(const proc_t *node, const char *name)
{
	int keep = gb_admin_port;
	double v;

	gb_admin_port = node->admin_port;
	v = metric(name);
	gb_admin_port = keep;
	return v;
}

/* Two nodes on one PostgreSQL database and one Redis. Half the pairs have
 * both users on node 1 (same node), half a sender on node 1 and a
 * recipient on node 2 (across nodes); each half is driven open loop at
 * the rate, one after the other in the same fleet. Reported: send ->
 * delivery p50/p99 of each, the fleet's internal publishes per delivered
 * message (one per target node is the design: here 1 across, 0 on the
 * same node), and the CPU of every process of the fleet (both nodes,
 * Redis, PostgreSQL) per message, beside the same figure on one node. */
static int run_fleet(int npairs, double rate, double seconds, int json_only)
{
	char machine[256], commit[32], url[256], name[32], tok[2][64], body[128], node_id[2][4];
	int phases = fleet_haproxy ? 3 : 2;
	pair_t *pairs = calloc((size_t)npairs * 3, sizeof *pairs);
	proc_t node[2];
	redisserver_t *redis;
	direct_result_t res[3];
	double pub[3], cpu[3], msgs[3];
	pc_response_t r;
	pc_conn_t *http;
	natscluster_t *nats = NULL;
	haproxyserver_t *lb = NULL;
	pid_t pm;
	json_t *j;
	int i, k;

	describe(machine, sizeof machine, commit, sizeof commit);
	if (!pairs)
		die("out of memory");
	if (fleet_log && !(nats = natscluster_start(3)))
		die("cannot start NATS for the fleet");
	if (!(bench_pg = pgserver_start()) || pgserver_create_db(bench_pg, NULL, url, sizeof url) < 0)
		die("cannot start PostgreSQL for the fleet");
	if (!(redis = redisserver_start()))
		die("cannot start Redis for the fleet");
	pm = postmaster_pid(bench_pg);
	for (k = 0; k < 2; k++) {
		char *argv[] = {"build/parley", "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		                "--store", url, "--redis", (char *)redisserver_url(redis), "--node-id", node_id[k],
		                "--signup-rate", "0", "--login-rate", "0", "--max-address-connections", "0",
		                "--max-address-pending", "0", "--strangers-per-day", "0", "--work-rate", "0",
		                "--storage-per-day", "0", "--read-rate", "0", "--fast-password-hashing",
		                "--rate-limit", "0", "--commit-delay", commit_delay, "--store-writers", store_writers,
		                nats ? "--nats" : NULL, nats ? (char *)natscluster_urls(nats) : NULL, NULL};
		snprintf(node_id[k], sizeof node_id[k], "%d", k + 1);
		memset(&node[k], 0, sizeof node[k]);
		spawn(&node[k], argv);
	}
	if (fleet_haproxy) {
		int ports[2] = {node[0].port, node[1].port};
		if (!(lb = haproxyserver_start(ports, 2)))
			die("cannot start HAProxy for the fleet");
	}
	if (!(http = pc_connect("127.0.0.1", node[0].port)))
		die("cannot connect");
	for (i = 0; i < phases * npairs; i++) {
		int64_t a, b;
		pair_t *p = &pairs[i];
		snprintf(name, sizeof name, "fa%d", i);
		a = user_with_token(http, name, tok[0]);
		snprintf(name, sizeof name, "fb%d", i);
		b = user_with_token(http, name, tok[1]);
		snprintf(body, sizeof body, "{\"members\":[%lld]}", (long long)b);
		if (pc_http(http, "POST", "/api/v1/conversations", tok[0], body, &r, TIMEOUT) < 0 || r.status != 201)
			die("cannot open a conversation");
		j = json_loadb(r.body, r.body_len, 0, NULL);
		p->conv = json_integer_value(json_object_get(j, "conversation_id"));
		json_decref(j);
		pc_response_free(&r);
		/* The third set through the balancer, routed by ?user= as the
		 * web client is: same node or across, as the ring has it. */
		if (i >= 2 * npairs) {
			char pa[64], pb[64];
			snprintf(pa, sizeof pa, "/chat/v1/ws?user=%lld", (long long)a);
			snprintf(pb, sizeof pb, "/chat/v1/ws?user=%lld", (long long)b);
			if (!(p->a = pc_connect("127.0.0.1", haproxyserver_port(lb))) ||
			    pc_ws_open(p->a, pa, tok[0], NULL, TIMEOUT) < 0 ||
			    !(p->b = pc_connect("127.0.0.1", haproxyserver_port(lb))) ||
			    pc_ws_open(p->b, pb, tok[1], NULL, TIMEOUT) < 0)
				die("cannot open WebSockets through HAProxy");
			continue;
		}
		/* The first npairs on one node, the rest across the two. */
		if (!(p->a = pc_connect("127.0.0.1", node[0].port)) ||
		    pc_ws_open(p->a, "/chat/v1/ws", tok[0], NULL, TIMEOUT) < 0 ||
		    !(p->b = pc_connect("127.0.0.1", node[i < npairs ? 0 : 1].port)) ||
		    pc_ws_open(p->b, "/chat/v1/ws", tok[1], NULL, TIMEOUT) < 0)
			die("cannot open WebSockets");
	}
	pc_close(http);
	settle();
	for (k = 0; k < phases; k++) {
		double p0 = node_metric(&node[0], "parley_bus_publishes_total") +
		            node_metric(&node[1], "parley_bus_publishes_total");
		double c0 = fleet_cpu(node, 2, redisserver_pid(redis), pm, nats) + (lb ? cpu_us(haproxyserver_pid(lb)) : 0);
		size_t d = 0;
		res[k] = drive(pairs + k * npairs, npairs, rate, seconds, 0, node[0].pid);
		for (i = 0; i < npairs; i++)
			d += (size_t)pairs[k * npairs + i].delivered;
		msgs[k] = (double)d;
		cpu[k] = (fleet_cpu(node, 2, redisserver_pid(redis), pm, nats) + (lb ? cpu_us(haproxyserver_pid(lb)) : 0) -
		          c0) /
		         msgs[k];
		pub[k] = (node_metric(&node[0], "parley_bus_publishes_total") +
		          node_metric(&node[1], "parley_bus_publishes_total") - p0) /
		         msgs[k];
	}
	for (i = 0; i < phases * npairs; i++) {
		pc_close(pairs[i].a);
		pc_close(pairs[i].b);
	}
	haproxyserver_stop(lb);
	for (k = 0; k < 2; k++)
		stop_proc(&node[k]);
	redisserver_stop(redis);
	natscluster_stop(nats);
	free(pairs);
	if (!json_only) {
		printf("fleet: 2 nodes, one PostgreSQL, one Redis%s; %d pairs on one node, then %d across, %.0f msg/s "
		       "each, %.0f s, open loop (%s, commit %s)\n",
		       nats ? ", 3 NATS servers (delivery across nodes from the log)" : "", npairs, npairs, rate, seconds,
		       machine, commit);
		printf("  %-44s %10s %10s%s\n", "", "same node", "across", lb ? "    HAProxy" : "");
		printf("  %-44s %10.0f %10.0f", "achieved messages/s", res[0].rate, res[1].rate);
		if (lb)
			printf(" %10.0f", res[2].rate);
		printf("\n  %-44s %10.3f %10.3f", "send -> delivery p50 (ms)", res[0].deliver[0], res[1].deliver[0]);
		if (lb)
			printf(" %10.3f", res[2].deliver[0]);
		printf("\n  %-44s %10.3f %10.3f", "send -> delivery p99 (ms)", res[0].deliver[1], res[1].deliver[1]);
		if (lb)
			printf(" %10.3f", res[2].deliver[1]);
		printf("\n  %-44s %10.2f %10.2f", "internal publishes per delivered message", pub[0], pub[1]);
		if (lb)
			printf(" %10.2f", pub[2]);
		printf("\n  %-44s %10.1f %10.1f", "CPU per message, every process (us)", cpu[0], cpu[1]);
		if (lb)
			printf(" %10.1f", cpu[2]);
		printf("\n");
	}
	printf("{\"scenario\":\"fleet\",\"machine\":\"%s\",\"commit\":\"%s\",\"store\":\"postgresql\",\"parameters\":"
	       "{\"nodes\":2,\"log\":%s,\"pairs\":%d,\"rate\":%.0f,\"seconds\":%.0f},\"figures\":{\"same_deliver_p50_ms\":%.3f,"
	       "\"same_deliver_p99_ms\":%.3f,\"cross_deliver_p50_ms\":%.3f,\"cross_deliver_p99_ms\":%.3f,"
	       "\"same_publishes_per_message\":%.3f,\"cross_publishes_per_message\":%.3f,"
	       "\"same_cpu_us_per_message\":%.1f,\"cross_cpu_us_per_message\":%.1f",
	       machine, commit, nats ? "true" : "false", npairs, rate, seconds, res[0].deliver[0], res[0].deliver[1], res[1].deliver[0],
	       res[1].deliver[1], pub[0], pub[1], cpu[0], cpu[1]);
	if (lb)
		printf(",\"haproxy_deliver_p50_ms\":%.3f,\"haproxy_deliver_p99_ms\":%.3f,\"haproxy_publishes_per_message\":%.3f,"
		       "\"haproxy_cpu_us_per_message\":%.1f",
		       res[2].deliver[0], res[2].deliver[1], pub[2], cpu[2]);
	printf("}}\n");
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
	printf("{\"scenario\":\"group\",\"machine\":\"%s\",\"commit\":\"%s\",\"store\":\"%s\",\"parameters\":{\"members\":%d,\"online\":%d,\"messages\":%d,\"batch\":%d},\"figures\":{"
	       "\"receipt_frames_per_message\":%.1f,\"store_rows_per_message\":%.1f,"
	       "\"store_commits_per_message\":%.1f,\"ack_direct_p50_ms\":%.3f,\"ack_group_p50_ms\":%.3f,"
	       "\"deliver_last_p50_ms\":%.3f,\"deliver_last_p99_ms\":%.3f,\"counts_converge_p50_ms\":%.0f,\"cpu_us_direct_message\":%.0f,\"cpu_us_group_message\":%.0f,\"cpu_us_group_storm\":%.0f,\"throughput_deliveries_per_s\":%.0f,\"throughput_cpu_us_per_delivery\":%.3f,\"relay_deliver_last_p99_ms\":%.3f,\"p99_ratio\":%.2f,\"relay_throughput_deliveries_per_s\":%.0f,\"relay_cpu_us_per_delivery\":%.3f,\"cpu_ratio\":%.2f}}\n",
	       machine, commit, bench_store, members, online, messages, batch, 2.0 * (online - 1) / batch, rows_per_msg, commits_per_msg,
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
	printf("{\"scenario\":\"resume\",\"machine\":\"%s\",\"commit\":\"%s\",\"store\":\"%s\",\"parameters\":{\"clients\":%d,"
	       "\"missed\":%d,\"conversations\":%d},\"figures\":{\"resume_p50_ms\":%.3f,\"resume_p99_ms\":%.3f,"
	       "\"reconnects_per_second\":%.0f}}\n",
	       machine, commit, bench_store, clients, RESUME_CONVS * RESUME_MISSED, RESUME_CONVS, p50, p99, rate);
	free(rc);
	free(lat);
	return 0;
}

/* ---- failover ------------------------------------------------------- */

/* A fleet of four nodes on one PostgreSQL and one Redis. Node A holds
 * every client; B, C and D start empty. A is killed (SIGKILL) and each
 * client, seeing its socket end, reconnects at once to its fallback node
 * and resumes. HAProxy cannot be in the path at this size (it would hold
 * two sockets per client in one process, and a process opens at most
 * 20,000 files here), so each client picks its fallback itself from its
 * user id (id mod 3 over B, C, D): HAProxy's consistent hash of ?user=
 * modelled without HAProxy. */

#define FO_NODES 4
#define FO_PROCS 4            /* client processes: N/4 sockets each */
#define FO_GROUP 1000         /* members per group, its sender included */
#define FO_MISSED 5           /* messages per group the clients have not seen */
#define FO_EVENTS 256
#define FO_DEADLINE_MS 180000 /* after the kill: a client not back by then is counted as not back */

enum { FO_ON_A, FO_CONNECTING, FO_UPGRADING, FO_AWAIT_READY, FO_RESUMING, FO_BACKOFF, FO_BACK };

/* --one-address: every client from 127.0.0.1, as if behind a proxy
 * the nodes do not trust (they then share one address's places in a
 * node's work queue); by default each client has an address of its own,
 * as it has directly or behind a trusted proxy's X-Forwarded-For. */
static int fo_one_address;

typedef struct fo_client {
	pc_conn_t *c;
	int64_t id, conv;
	char token[64];
	char addr[16];              /* its source address */
	int state;
	double retry_at, back_at;   /* now_ms(); back_at 0: not back */
	int got;                    /* messages the resume replayed */
} fo_client_t;

/* What a client process sends back after the kill: its figures, then one
 * back_at per client. */
typedef struct fo_report {
	int count, back, short_replays;
	/* Attempts that did not get the client back, by how they ended: */
	int refused;        /* connect refused (nothing listening, or a full backlog's RST) */
	int failed;         /* connect failed otherwise */
	int http_refused;   /* answered, but not 101 */
	int http_status;    /* the last such answer's status */
	int dropped;        /* closed after the 101, before "resumed" */
	int close_code;     /* the last close frame's code, if one came */
} fo_report_t;

static int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		ssize_t r = read(fd, p, len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t r = write(fd, p, len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* One refused or failed attempt: as a client would, wait 50-250 ms
 * (jittered, so that the refused do not come back in step) and retry. */
static void fo_backoff(fo_client_t *cl, int *counter, unsigned *seed)
{
	pc_close(cl->c);
	cl->c = NULL;
	cl->state = FO_BACKOFF;
	cl->retry_at = now_ms() + 50 + rand_r(seed) % 201;
	(*counter)++;
}

/* A client's source address, NULL for the one address. An explicit
 * bind() to 127.0.0.1 port 0 must find a port no other socket on that
 * address holds, whatever its peer, a search through tens of thousands
 * in use: it cost the client processes about 7 ms of CPU per reconnect,
 * where connect()'s own choice needs only a free 4-tuple. */
static const char *fo_source(const fo_client_t *cl)
{
	return cl->addr[0] ? cl->addr : NULL;
}

static void fo_connect(fo_client_t *cl, const int *ports, fo_report_t *rep, unsigned *seed)
{
	/* The fallback: B, C or D by user id, as a consistent hash would. */
	if (!(cl->c = pc_connect_start(fo_source(cl), "127.0.0.1", ports[1 + (int)(cl->id % 3)]))) {
		fo_backoff(cl, errno == ECONNREFUSED ? &rep->refused : &rep->failed, seed);
		return;
	}
	cl->state = FO_CONNECTING;
}

static void fo_watch(int ep, fo_client_t *cl, int i, uint32_t events, int op)
{
	struct epoll_event e = {.events = events, .data.u32 = (uint32_t)i};

	if (epoll_ctl(ep, op, pc_fd(cl->c), &e) < 0)
		die("epoll_ctl");
}

/* Everything a client's socket has for it now (timeout 0: pclient keeps
 * a partial frame for the next call). Returns -1 when the socket ended. */
static int fo_drain(fo_client_t *cl, fo_report_t *rep)
{
	for (;;) {
		pc_frame_t f;
		int r = pc_ws_recv(cl->c, &f, 0);

		if (r == PC_TIMEOUT)
			return 0;
		if (r < 0)
			return -1;
		if (f.opcode == 0x9) {
			pc_ws_send_frame(cl->c, 1, 0xA, f.data, f.len, 1, 0);
		} else if (f.opcode == 0x8) {
			if (f.len >= 2)
				rep->close_code = f.data[0] << 8 | f.data[1];
			pc_frame_free(&f);
			return -1;
		} else if (cl->state == FO_AWAIT_READY && strstr((char *)f.data, "\"type\":\"ready\"")) {
			char frame[128];
			/* Its last seq: 0, it saw none of the group's messages. */
			snprintf(frame, sizeof frame, "{\"type\":\"resume\",\"convs\":{\"%lld\":0}}", (long long)cl->conv);
			pc_ws_send_text(cl->c, frame);
			cl->state = FO_RESUMING;
		} else if (cl->state == FO_RESUMING && strstr((char *)f.data, "\"type\":\"msg\"")) {
			cl->got++;
		} else if (cl->state == FO_RESUMING && strstr((char *)f.data, "\"type\":\"resumed\"")) {
			cl->state = FO_BACK;
			cl->back_at = now_ms();
		}
		pc_frame_free(&f);
	}
}

/* One client process: users first..first+count-1. Set-up on node
 * `setup` (any node will do: they share the store): it registers them,
 * puts them in groups of FO_GROUP with a sender of its own, who sends
 * FO_MISSED messages to each group; then it opens every client's
 * WebSocket to node A, says 'r' and waits, serving its sockets (pings),
 * for A to die. Each client then reconnects and resumes; when all are
 * back (or FO_DEADLINE_MS after the kill) it reads the kill's time from
 * `down`, writes its fo_report_t and back_at times to `up`, and holds its
 * sockets until told 'q'. */
static void fo_child(const int *ports, int setup, int first, int count, int up, int down)
{
	fo_client_t *cl = calloc((size_t)count, sizeof *cl);
	char name[48], tok[64], *body = malloc(FO_GROUP * 24 + 64);
	unsigned seed = (unsigned)first * 2654435761u + 1;
	int i, g, back = 0, left = count;
	double t_kill = 0, deadline = 0;
	fo_report_t rep = {0};
	struct epoll_event ev[FO_EVENTS];
	double next_retry = 0;
	int ep, waiting = 0;
	pc_conn_t *http;
	char go;

	bench_child = 1;
	if (!cl || !body)
		die("out of memory");
	if (!(http = pc_connect("127.0.0.1", ports[setup])))
		die("cannot connect for set-up");
	for (i = 0; i < count; i++) {
		int a = first + i;
		snprintf(name, sizeof name, "fo%d", a);
		cl[i].id = user_with_token(http, name, cl[i].token);
		if (fo_one_address)
			cl[i].addr[0] = 0; /* no bind(): see fo_source */
		else
			snprintf(cl[i].addr, sizeof cl[i].addr, "127.%d.%d.%d", 20 + a / (254 * 256), a / 254 % 256,
			         a % 254 + 1);
	}
	for (g = 0; g * (FO_GROUP - 1) < count; g++) {
		int lo = g * (FO_GROUP - 1), hi = lo + FO_GROUP - 1 > count ? count : lo + FO_GROUP - 1, n, k;
		pc_conn_t *ws;
		int64_t conv;
		json_t *j;

		snprintf(name, sizeof name, "fos%d_%d", first, g);
		user_with_token(http, name, tok);
		n = snprintf(body, FO_GROUP * 24 + 64, "{\"title\":\"failover\",\"members\":[");
		for (i = lo; i < hi; i++)
			n += snprintf(body + n, (size_t)(FO_GROUP * 24 + 64 - n), "%s%lld", i > lo ? "," : "",
			              (long long)cl[i].id);
		snprintf(body + n, (size_t)(FO_GROUP * 24 + 64 - n), "]}");
		j = http_json(http, "POST", "/api/v1/conversations", tok, body, 201);
		conv = json_integer_value(json_object_get(j, "conversation_id"));
		json_decref(j);
		for (i = lo; i < hi; i++)
			cl[i].conv = conv;
		if (!(ws = pc_connect("127.0.0.1", ports[setup])) || pc_ws_open(ws, "/chat/v1/ws", tok, NULL, TIMEOUT) < 0)
			die("cannot open the sender's WebSocket");
		for (k = 0; k < FO_MISSED; k++) {
			snprintf(body, FO_GROUP * 24 + 64,
			         "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"f%d\",\"body\":\"while node A was up\"}",
			         (long long)conv, k);
			pc_ws_send_text(ws, body);
		}
		for (k = 0; k < FO_MISSED; k++)
			json_decref(expect_type(ws, "ack"));
		pc_close(ws);
	}
	pc_close(http);
	for (i = 0; i < count; i++) {
		pc_frame_t f;
		pc_response_t res = {0};
		int tries = 0;

		/* A refusal here (a 503 while the other processes' upgrades
		 * fill the address's share) is retried: set-up is not measured. */
		while (!(cl[i].c = pc_connect_from(fo_source(&cl[i]), "127.0.0.1", ports[0])) ||
		       pc_ws_open(cl[i].c, "/chat/v1/ws", cl[i].token, &res, TIMEOUT) < 0 ||
		       pc_ws_recv(cl[i].c, &f, TIMEOUT) < 0) {
			if (res.status)
				fprintf(stderr, "parley-bench: node A answered %d: %s\n", res.status, res.body ? res.body : "");
			pc_response_free(&res);
			pc_close(cl[i].c);
			if (++tries == 5)
				die("cannot open a WebSocket to node A");
			usleep(200000);
		}
		pc_frame_free(&f); /* ready */
		cl[i].state = FO_ON_A;
	}
	/* epoll, not poll: poll's walk of every socket at each wake-up cost
	 * the client processes more CPU than the nodes had at 19,000
	 * sockets, on the same 2 cores. */
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
		die("epoll");
	for (i = 0; i < count; i++)
		fo_watch(ep, &cl[i], i, EPOLLIN, EPOLL_CTL_ADD);
	{
		struct epoll_event e = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
		if (epoll_ctl(ep, EPOLL_CTL_ADD, down, &e) < 0)
			die("epoll_ctl");
	}
	if (write(up, "r", 1) != 1)
		_exit(1);
	while (left > 0) {
		double now = now_ms(), wake = now + 1000;
		int n, r;

		if (deadline && now > deadline)
			break;
		if (waiting && next_retry < wake)
			wake = next_retry;
		n = epoll_wait(ep, ev, FO_EVENTS, wake > now ? (int)(wake - now) + 1 : 0);
		if (n < 0 && errno != EINTR)
			die("epoll_wait");
		for (int k = 0; k < n; k++) {
			fo_client_t *c;

			if (ev[k].data.u32 == UINT32_MAX) {
				if (read_full(down, &t_kill, sizeof t_kill) < 0)
					_exit(1);
				deadline = t_kill + FO_DEADLINE_MS;
				epoll_ctl(ep, EPOLL_CTL_DEL, down, NULL);
				continue;
			}
			c = &cl[ev[k].data.u32];
			switch (c->state) {
			case FO_ON_A:
				if (fo_drain(c, &rep) < 0) {
					/* Node A is gone: straight to the fallback. */
					pc_close(c->c);
					fo_connect(c, ports, &rep, &seed);
					if (c->state == FO_CONNECTING)
						fo_watch(ep, c, (int)ev[k].data.u32, EPOLLOUT, EPOLL_CTL_ADD);
				}
				break;
			case FO_CONNECTING:
				r = pc_connect_result(c->c);
				if (r == PC_CLOSED)
					fo_backoff(c, &rep.refused, &seed);
				else if (r < 0 || pc_ws_open_send(c->c, "/chat/v1/ws", c->token) < 0)
					fo_backoff(c, &rep.failed, &seed);
				else {
					c->state = FO_UPGRADING;
					fo_watch(ep, c, (int)ev[k].data.u32, EPOLLIN, EPOLL_CTL_MOD);
				}
				break;
			case FO_UPGRADING: {
				pc_response_t res = {0};
				r = pc_ws_open_finish(c->c, &res, 0);
				if (r == PC_TIMEOUT)
					break;
				if (r < 0) {
					if (res.status) {
						rep.http_status = res.status;
						pc_response_free(&res);
						fo_backoff(c, &rep.http_refused, &seed);
					} else {
						fo_backoff(c, &rep.dropped, &seed);
					}
					break;
				}
			}
				/* ready may have come in with the 101 */
				c->state = FO_AWAIT_READY;
				/* fall through */
			default:
				if (c->state == FO_BACK) {
					/* Back: read what comes (pings, presence) so that
					 * its level-triggered event does not come again. */
					if (fo_drain(c, &rep) < 0) {
						pc_close(c->c);
						c->c = NULL;
					}
					break;
				}
				if (fo_drain(c, &rep) < 0)
					fo_backoff(c, &rep.dropped, &seed);
				else if (c->state == FO_BACK) {
					back++;
					left--;
				}
			}
		}
		/* The waiting: retry those due, and find the next due. */
		now = now_ms();
		waiting = 0;
		next_retry = now + 1000;
		for (i = 0; i < count; i++) {
			if (cl[i].state != FO_BACKOFF)
				continue;
			if (cl[i].retry_at <= now) {
				fo_connect(&cl[i], ports, &rep, &seed);
				if (cl[i].state == FO_CONNECTING)
					fo_watch(ep, &cl[i], i, EPOLLOUT, EPOLL_CTL_ADD);
			}
			if (cl[i].state == FO_BACKOFF) {
				waiting++;
				if (cl[i].retry_at < next_retry)
					next_retry = cl[i].retry_at;
			}
		}
	}
	if (!t_kill && read_full(down, &t_kill, sizeof t_kill) < 0)
		_exit(1);
	rep.count = count;
	rep.back = back;
	for (i = 0; i < count; i++)
		if (cl[i].state == FO_BACK && cl[i].got != FO_MISSED)
			rep.short_replays++;
	if (write_full(up, &rep, sizeof rep) < 0)
		_exit(1);
	for (i = 0; i < count; i++)
		if (write_full(up, &cl[i].back_at, sizeof cl[i].back_at) < 0)
			_exit(1);
	/* Held until the surviving nodes' memory has been read. */
	if (read(down, &go, 1) != 1)
		_exit(1);
	_exit(0);
}

/* One number a command prints (its first line), or -1: the PostgreSQL
 * and Redis servers' own counters, read through their command-line
 * clients so that the tool needs neither client library for them. */
static double fo_command_number(const char *cmd)
{
	char line[256];
	double v = -1;
	FILE *f = popen(cmd, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (v < 0 && (line[0] >= '0' && line[0] <= '9'))
			v = strtod(line, NULL);
		else if (v < 0 && !strncmp(line, "total_commands_processed:", 25))
			v = strtod(line + 25, NULL);
	pclose(f);
	return v;
}

/* What the recovery cost, between two readings: the CPU of the surviving
 * nodes, of PostgreSQL (postmaster and backends), of Redis and of the
 * client processes; PostgreSQL's transactions and Redis's commands. */
typedef struct fo_costs {
	double nodes_us, pg_us, redis_us, clients_us, pg_xacts, redis_cmds;
} fo_costs_t;

static fo_costs_t fo_read_costs(const proc_t *node, redisserver_t *redis, pid_t pm, const char *url,
                                const pid_t *kids)
{
	fo_costs_t c = {0};
	char cmd[512];
	int k;

	for (k = 1; k < FO_NODES; k++)
		c.nodes_us += cpu_us(node[k].pid);
	c.redis_us = cpu_us(redisserver_pid(redis));
	c.pg_us = fleet_cpu(node, 0, redisserver_pid(redis), pm, NULL) - c.redis_us;
	{
		/* Backends that ended (node A's, once it died) are no longer
		 * children to count; the postmaster's reaped children's time
		 * (cutime, cstime) still holds theirs. */
		char path[64], buf[1024], *p;
		unsigned long long cut = 0, cst = 0;
		FILE *f;

		snprintf(path, sizeof path, "/proc/%d/stat", (int)pm);
		if ((f = fopen(path, "r"))) {
			if (fgets(buf, sizeof buf, f) && (p = strrchr(buf, ')')))
				sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %llu %llu", &cut, &cst);
			fclose(f);
		}
		c.pg_us += (double)(cut + cst) * 1e6 / (double)sysconf(_SC_CLK_TCK);
	}
	for (k = 0; k < FO_PROCS; k++)
		c.clients_us += cpu_us(kids[k]);
	snprintf(cmd, sizeof cmd,
	         "psql -X -At '%s' -c 'SELECT xact_commit + xact_rollback FROM pg_stat_database "
	         "WHERE datname = current_database()' 2>/dev/null",
	         url);
	c.pg_xacts = fo_command_number(cmd);
	snprintf(cmd, sizeof cmd, "redis-cli -p %d info stats 2>/dev/null", redisserver_port(redis));
	c.redis_cmds = fo_command_number(cmd);
	return c;
}

static int run_failover(int n, int json_only)
{
	char machine[256], commit[32], url[256], node_id[FO_NODES][4];
	int up[FO_PROCS], down[FO_PROCS], ports[FO_NODES], i, k, back = 0, short_replays = 0;
	fo_report_t sum = {0};
	double *lat = calloc((size_t)n, sizeof *lat), t_setup, setup_s, t_kill, p50, p99, all, hwm[FO_NODES] = {0};
	pid_t kids[FO_PROCS];
	proc_t node[FO_NODES];
	redisserver_t *redis;
	fo_costs_t c0, c1;
	pid_t pm;
	int status;

	describe(machine, sizeof machine, commit, sizeof commit);
	if (!lat)
		die("out of memory");
	if (!(bench_pg = pgserver_start()) || pgserver_create_db(bench_pg, NULL, url, sizeof url) < 0)
		die("cannot start PostgreSQL for the fleet");
	if (!(redis = redisserver_start()))
		die("cannot start Redis for the fleet");
	pm = postmaster_pid(bench_pg);
	for (k = 0; k < FO_NODES; k++) {
		char *argv[] = {"build/parley", "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		                "--store", url, "--redis", (char *)redisserver_url(redis), "--node-id", node_id[k],
		                "--signup-rate", "0", "--login-rate", "0", "--max-address-connections", "0",
		                "--max-address-pending", "0", "--strangers-per-day", "0", "--work-rate", "0",
		                "--storage-per-day", "0", "--read-rate", "0", "--fast-password-hashing",
		                "--rate-limit", "0", "--commit-delay", commit_delay, "--store-writers", store_writers,
		                NULL};
		snprintf(node_id[k], sizeof node_id[k], "%d", k + 1);
		memset(&node[k], 0, sizeof node[k]);
		spawn(&node[k], argv);
		ports[k] = node[k].port;
	}
	t_setup = now_ms();
	fflush(stdout);
	for (i = 0; i < FO_PROCS; i++) {
		int first = (int)((long)n * i / FO_PROCS), count = (int)((long)n * (i + 1) / FO_PROCS) - first;
		int u[2], d[2];

		if (pipe(u) < 0 || pipe(d) < 0)
			die("pipe");
		if ((kids[i] = fork()) < 0)
			die("fork");
		if (kids[i] == 0) {
			close(u[0]);
			close(d[1]);
			/* Set-up spread over B, C and D, which hold nobody yet. */
			fo_child(ports, 1 + i % 3, first, count, u[1], d[0]);
		}
		close(u[1]);
		close(d[0]);
		up[i] = u[0];
		down[i] = d[1];
	}
	idle_wait_all(up, FO_PROCS, 'r');
	setup_s = (now_ms() - t_setup) / 1000;
	settle();
	c0 = fo_read_costs(node, redis, pm, url, kids);
	t_kill = now_ms();
	kill(node[0].pid, SIGKILL);
	for (i = 0; i < FO_PROCS; i++)
		if (write_full(down[i], &t_kill, sizeof t_kill) < 0)
			die("a client process went away");
	waitpid(node[0].pid, &status, 0);
	node[0].pid = 0;
	for (i = 0, k = 0; i < FO_PROCS; i++) {
		fo_report_t rep;
		if (read_full(up[i], &rep, sizeof rep) < 0)
			die("a client process failed");
		back += rep.back;
		short_replays += rep.short_replays;
		sum.refused += rep.refused;
		sum.failed += rep.failed;
		sum.http_refused += rep.http_refused;
		sum.dropped += rep.dropped;
		if (rep.http_status)
			sum.http_status = rep.http_status;
		if (rep.close_code)
			sum.close_code = rep.close_code;
		for (int c = 0; c < rep.count; c++) {
			double at;
			if (read_full(up[i], &at, sizeof at) < 0)
				die("a client process failed");
			if (at > 0)
				lat[k++] = at - t_kill;
		}
	}
	for (k = 1; k < FO_NODES; k++) {
		char path[64];
		snprintf(path, sizeof path, "/proc/%d/status", (int)node[k].pid);
		hwm[k] = proc_kb(path, "VmHWM");
	}
	/* PostgreSQL's backends report their counts at most once a second. */
	sleep(1);
	c1 = fo_read_costs(node, redis, pm, url, kids);
	idle_tell_all(down, FO_PROCS);
	for (i = 0; i < FO_PROCS; i++) {
		waitpid(kids[i], &status, 0);
		close(up[i]);
		close(down[i]);
	}
	for (k = 1; k < FO_NODES; k++)
		stop_proc(&node[k]);
	redisserver_stop(redis);
	qsort(lat, (size_t)back, sizeof *lat, cmp_double);
	/* The k-th recovered of all n: a percentile of the clients, not of
	 * those that made it back. */
	p50 = back >= (n + 1) / 2 ? lat[(n + 1) / 2 - 1] : -1;
	p99 = back >= (int)(n * 0.99 + 0.999) ? lat[(int)(n * 0.99 + 0.999) - 1] : -1;
	all = back == n ? lat[n - 1] : -1;
	free(lat);
	if (!json_only) {
		printf("failover: 4 nodes, one PostgreSQL, one Redis; %d clients on node A, A killed (SIGKILL); each "
		       "reconnects to B, C or D by user id mod 3 (HAProxy's consistent hashing modelled without "
		       "HAProxy), retrying refusals after 50-250 ms, and resumes a group with %d messages it has "
		       "not seen; %s (%s, commit %s; set-up %.0f s)\n",
		       n, FO_MISSED, fo_one_address ? "all from one address" : "each from an address of its own", machine,
		       commit, setup_s);
		printf("  back and resumed: 50%% %.0f ms, 99%% %.0f ms, all %.0f ms (%d of %d back)\n", p50, p99, all,
		       back, n);
		printf("  reconnect attempts refused: %d (connect refused %d, failed %d; answered not 101: %d, "
		       "last status %d; closed before resumed: %d, last close code %d)\n",
		       sum.refused + sum.failed + sum.http_refused + sum.dropped, sum.refused, sum.failed,
		       sum.http_refused, sum.http_status, sum.dropped, sum.close_code);
		printf("  replays not exactly %d messages: %d\n", FO_MISSED, short_replays);
		printf("  surviving nodes' peak RSS: B %.0f MiB, C %.0f MiB, D %.0f MiB\n", hwm[1] / 1048576,
		       hwm[2] / 1048576, hwm[3] / 1048576);
		printf("  per client back, from the kill to the end: CPU of B+C+D %.0f us, PostgreSQL %.0f us, Redis "
		       "%.0f us, the client processes %.0f us; %.1f PostgreSQL transactions, %.1f Redis commands\n",
		       (c1.nodes_us - c0.nodes_us) / n, (c1.pg_us - c0.pg_us) / n, (c1.redis_us - c0.redis_us) / n,
		       (c1.clients_us - c0.clients_us) / n, (c1.pg_xacts - c0.pg_xacts) / n,
		       (c1.redis_cmds - c0.redis_cmds) / n);
	}
	printf("{\"scenario\":\"failover\",\"machine\":\"%s\",\"commit\":\"%s\",\"store\":\"postgresql\",\"parameters\":"
	       "{\"clients\":%d,\"nodes\":%d,\"missed\":%d,\"one_address\":%s},\"figures\":{\"recovered_p50_ms\":%.0f,"
	       "\"recovered_p99_ms\":%.0f,\"recovered_all_ms\":%.0f,\"recovered\":%d,\"refused_reconnects\":%d,"
	       "\"connect_refused\":%d,\"connect_failed\":%d,\"upgrade_refused\":%d,\"closed_before_resumed\":%d,"
	       "\"short_replays\":%d,\"survivor_peak_rss_mib\":[%.0f,%.0f,%.0f],\"cpu_us_per_client\":{\"nodes\":%.0f,"
	       "\"postgresql\":%.0f,\"redis\":%.0f,\"clients\":%.0f},\"pg_xacts_per_client\":%.1f,"
	       "\"redis_commands_per_client\":%.1f}}\n",
	       machine, commit, n, FO_NODES, FO_MISSED, fo_one_address ? "true" : "false", p50, p99, all, back,
	       sum.refused + sum.failed + sum.http_refused + sum.dropped, sum.refused, sum.failed, sum.http_refused,
	       sum.dropped, short_replays,
	       hwm[1] / 1048576, hwm[2] / 1048576, hwm[3] / 1048576, (c1.nodes_us - c0.nodes_us) / n,
	       (c1.pg_us - c0.pg_us) / n, (c1.redis_us - c0.redis_us) / n, (c1.clients_us - c0.clients_us) / n,
	       (c1.pg_xacts - c0.pg_xacts) / n, (c1.redis_cmds - c0.redis_cmds) / n);
	return back == n && !short_replays ? 0 : 1;
}

/* ---- abuse ---------------------------------------------------------- */

/* A bystander's latency while one attack at a time runs, beside the same
 * with no attack in the same run. The server runs with its production
 * defaults for everything under test (per-address caps and budgets, work
 * budgets, real password hashing): those defences are what is measured.
 * The bystander is 127.0.0.1, the attackers 127.0.0.2 and up, so that the
 * server tells them apart by address as it would on the Internet. */

#define BYSTANDER_ADDR "127.0.0.1"
#define SETUP_ADDR "127.0.0.250"    /* set-up spends no budget of the bystander's */
#define BY_TIMEOUT 10000            /* ms: an operation slower than this was not served */
#define LOGIN_EVERY_MS 1500.0       /* 40 a minute: inside the 60 a minute per address */
#define REST_EVERY_MS 50.0
#define SEND_EVERY_MS 20.0
/* limit=2 costs 11 work units: 20 a second stay inside the 500 a second the
 * user may spend (the default limit, 100, would cost 501 each). */
#define REST_PATH "/api/v1/conversations?limit=2"
#define TRICKLE_MS 100.0            /* a slow socket's byte per connection */
#define WATCH_IDS 500               /* the most a watch may name */
#define RESUME_CONVS_LISTED 4000    /* of at most 4,096 */
#define PIPE_BATCH 32               /* requests per write buffer */
#define ATTACK_COUNTERS 24

enum { OP_LOGIN, OP_REST, OP_ACK, OP_DELIVER, OPS };
static const char *const op_name[OPS] = {"login", "rest", "ack", "deliver"};
static const char *const op_label[OPS] = {"login", "REST list", "send->ack", "send->delivery"};

typedef struct samples {
	double *v;               /* milliseconds */
	int n, cap;
} samples_t;

static void sample_add(samples_t *s, double v)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 256;
		if (!(s->v = realloc(s->v, (size_t)s->cap * sizeof *s->v)))
			die("out of memory");
	}
	s->v[s->n++] = v;
}

/* --trace FILE: every sample of the abuse scenario, as "phase op start
 * latency" (milliseconds from the start of the run), to see what a tail
 * coincides with. */
static FILE *abuse_trace;
static double abuse_t0;

static void trace(int phase, const char *what, double start, double ms)
{
	if (abuse_trace)
		fprintf(abuse_trace, "%d %s %.3f %.3f\n", phase, what, start - abuse_t0, ms);
}

static double sample_pct(samples_t *s, double p)
{
	return s->n ? pct(s->v, s->n, p) : 0;
}

/* The bystander of one phase: three threads, one per kind of operation,
 * each on a fixed schedule until `end`, open loop: an operation goes when
 * it is due whether or not earlier ones have been answered, so a server
 * that stalls cannot hide the stall by taking fewer samples. Its latency
 * counts from when it was sent; when the bystander had to hold it back
 * (as many in flight as it allows), from when it was due. */
typedef struct bystander {
	int port;
	char token[64];          /* alice's: the conversation list and the sends */
	char peer_token[64];     /* bob's: the deliveries */
	int64_t conv;            /* their direct chat */
	int phase;
	double end;
	pthread_mutex_t lock;    /* s[OP_LOGIN] (one thread per login), failures, failure */
	samples_t s[OPS];
	int failures;
	char failure[200];       /* the first, for the report */
} bystander_t;

static void by_fail(bystander_t *b, const char *op, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void by_fail(bystander_t *b, const char *op, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&b->lock);
	if (!b->failures++) {
		int n = snprintf(b->failure, sizeof b->failure, "%s: ", op);
		va_start(ap, fmt);
		vsnprintf(b->failure + n, sizeof b->failure - (size_t)n, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&b->lock);
}

static void sleep_until(double t)
{
	double now = now_ms();

	if (t > now)
		usleep((useconds_t)((t - now) * 1000));
}

/* One login of the bystander's, on a new connection, with the right
 * password; the new device is logged out again (not timed), since a user
 * keeps at most 32 and a 33rd login would log out the oldest. */
typedef struct by_login {
	pthread_t thread;
	bystander_t *b;
} by_login_t;

static void *by_login_once(void *arg)
{
	bystander_t *b = ((by_login_t *)arg)->b;
	const char *body = "{\"username\":\"carol\",\"password\":\"benchmark\"}";
	double start = now_ms(), done;
	char token[64] = "";
	pc_response_t r;
	pc_conn_t *c;
	json_t *j;
	int rc;

	if (!(c = pc_connect_from(BYSTANDER_ADDR, "127.0.0.1", b->port))) {
		by_fail(b, "login", "cannot connect");
		return NULL;
	}
	if ((rc = pc_http(c, "POST", "/api/v1/sessions", NULL, body, &r, BY_TIMEOUT)) < 0) {
		by_fail(b, "login", "%s", rc == PC_TIMEOUT ? "no answer in 10 s" : "connection lost");
		goto out;
	}
	if (r.status != 201) {
		by_fail(b, "login", "answered %d %.120s", r.status, r.body);
		pc_response_free(&r);
		goto out;
	}
	done = now_ms();
	pthread_mutex_lock(&b->lock);
	sample_add(&b->s[OP_LOGIN], done - start);
	pthread_mutex_unlock(&b->lock);
	trace(b->phase, "login", start, done - start);
	if ((j = json_loadb(r.body, r.body_len, 0, NULL)) != NULL)
		snprintf(token, sizeof token, "%s", json_string_value(json_object_get(j, "token")));
	json_decref(j);
	pc_response_free(&r);
	if ((rc = pc_http(c, "DELETE", "/api/v1/sessions/current", token, NULL, &r, BY_TIMEOUT)) < 0) {
		by_fail(b, "login", "the logout after it: %s", rc == PC_TIMEOUT ? "no answer in 10 s" : "connection lost");
		goto out;
	}
	if (r.status != 204)
		by_fail(b, "login", "the logout after it was answered %d", r.status);
	pc_response_free(&r);
out:
	pc_close(c);
	return NULL;
}

/* A login every LOGIN_EVERY_MS, each in a thread of its own. */
static void *by_login_main(void *arg)
{
	bystander_t *b = arg;
	int cap = (int)((b->end - now_ms()) / LOGIN_EVERY_MS) + 2, n = 0, i;
	by_login_t *l = calloc((size_t)cap, sizeof *l);
	double due;

	if (!l)
		die("out of memory");
	for (due = now_ms(); due < b->end && n < cap; due += LOGIN_EVERY_MS) {
		sleep_until(due);
		l[n].b = b;
		if (pthread_create(&l[n].thread, NULL, by_login_once, &l[n]) != 0)
			die("cannot start a thread");
		n++;
	}
	for (i = 0; i < n; i++)
		pthread_join(l[i].thread, NULL);
	free(l);
	return NULL;
}

/* GET the conversation list every REST_EVERY_MS, each on a free one of up
 * to REST_CONNS keep-alive connections (as a browser keeps a few per
 * host). */
#define REST_CONNS 6

static void *by_rest_main(void *arg)
{
	bystander_t *b = arg;
	pc_conn_t *c[REST_CONNS] = {0};
	double since[REST_CONNS] = {0};  /* its request's start; 0: free */
	struct pollfd pf[REST_CONNS];
	double due = now_ms();
	int busy = 0, held = 0, failed = 0, i, len;
	char req[256];

	len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: parley\r\nAuthorization: Bearer %s\r\n\r\n",
	               REST_PATH, b->token);
	while (!failed && (due < b->end || busy)) {
		double now = now_ms();
		int wait;

		if (due < b->end && now >= due) {
			for (i = 0; i < REST_CONNS && since[i] > 0; i++)
				;
			if (i == REST_CONNS) {
				held = 1;
			} else {
				if (!c[i] && !(c[i] = pc_connect_from(BYSTANDER_ADDR, "127.0.0.1", b->port))) {
					by_fail(b, "rest", "cannot connect");
					break;
				}
				if (pc_send_raw(c[i], req, (size_t)len) < 0) {
					by_fail(b, "rest", "connection lost");
					break;
				}
				since[i] = held ? due : now;
				held = 0;
				busy++;
				due += REST_EVERY_MS;
				continue;
			}
		}
		for (i = 0; i < REST_CONNS; i++) {
			pf[i].fd = c[i] && since[i] > 0 ? pc_fd(c[i]) : -1;
			pf[i].events = POLLIN;
			pf[i].revents = 0;
		}
		wait = due < b->end && !held ? (int)(due - now) + 1 : 20;
		poll(pf, REST_CONNS, wait < 0 ? 0 : wait);
		now = now_ms();
		for (i = 0; i < REST_CONNS && !failed; i++) {
			pc_response_t r;
			char conn[16];
			int rc;

			if (since[i] <= 0)
				continue;
			if (pf[i].revents && (rc = pc_read_response(c[i], &r, 0)) != PC_TIMEOUT) {
				if (rc < 0) {
					by_fail(b, "rest", "connection lost");
					failed = 1;
					break;
				}
				if (r.status != 200) {
					by_fail(b, "rest", "answered %d %.120s", r.status, r.body);
					failed = 1;
				} else {
					now = now_ms();
					sample_add(&b->s[OP_REST], now - since[i]);
					trace(b->phase, "rest", since[i], now - since[i]);
				}
				if (pc_response_header(&r, "connection", conn, sizeof conn) > 0 && !strcasecmp(conn, "close")) {
					pc_close(c[i]);
					c[i] = NULL;
				}
				pc_response_free(&r);
				since[i] = 0;
				busy--;
			} else if (now - since[i] > BY_TIMEOUT) {
				by_fail(b, "rest", "no answer in 10 s");
				failed = 1;
			}
		}
	}
	for (i = 0; i < REST_CONNS; i++)
		pc_close(c[i]);
	return NULL;
}

/* Alice sends to Bob every SEND_EVERY_MS, with at most SEND_INFLIGHT not
 * yet acked (the server allows 128): send -> ack on her connection, send
 * -> delivery on his. Cmids are "by<phase>_<index>". */
#define SEND_INFLIGHT 100

typedef struct by_sends {
	bystander_t *b;
	int n;
	double *start, *acked, *delivered;
	int nacked, ndelivered;
} by_sends_t;

/* Reads what c has (answering pings), recording acks (or deliveries, on
 * Bob's side). Returns 0, or -1 after a failure. */
static int by_pump(by_sends_t *s, pc_conn_t *c, int bob)
{
	bystander_t *b = s->b;
	pc_frame_t f;
	int rc;

	while ((rc = pc_ws_recv(c, &f, 0)) == 0) {
		const char *t, *cmid;
		int phase, k;
		json_t *j;

		if (f.opcode == 0x9) {
			pc_ws_send_frame(c, 1, 0xA, f.data, f.len, 1, 0);
		} else if (f.opcode == 0x8) {
			by_fail(b, "send", "the server closed %s WebSocket", bob ? "the peer's" : "the sender's");
			pc_frame_free(&f);
			return -1;
		} else if (f.opcode == 0x1 && (j = json_loadb((char *)f.data, f.len, 0, NULL)) != NULL) {
			double now = now_ms();
			t = json_string_value(json_object_get(j, "type"));
			cmid = json_string_value(json_object_get(j, "cmid"));
			if (t && !strcmp(t, "error")) {
				by_fail(b, "send", "error frame %.120s", (char *)f.data);
				json_decref(j);
				pc_frame_free(&f);
				return -1;
			}
			if (t && cmid && sscanf(cmid, "by%d_%d", &phase, &k) == 2 && phase == b->phase && k >= 0 &&
			    k < s->n) {
				if (!bob && !strcmp(t, "ack") && !s->acked[k]) {
					s->acked[k] = now;
					s->nacked++;
					sample_add(&b->s[OP_ACK], now - s->start[k]);
					trace(b->phase, "ack", s->start[k], now - s->start[k]);
				} else if (bob && !strcmp(t, "msg") && !s->delivered[k]) {
					s->delivered[k] = now;
					s->ndelivered++;
					sample_add(&b->s[OP_DELIVER], now - s->start[k]);
					trace(b->phase, "deliver", s->start[k], now - s->start[k]);
				}
			}
			json_decref(j);
		}
		pc_frame_free(&f);
	}
	if (rc != PC_TIMEOUT) {
		by_fail(b, "send", "%s WebSocket closed", bob ? "the peer's" : "the sender's");
		return -1;
	}
	return 0;
}

static void *by_send_main(void *arg)
{
	bystander_t *b = arg;
	pc_conn_t *a = pc_connect_from(BYSTANDER_ADDR, "127.0.0.1", b->port);
	pc_conn_t *p = pc_connect_from(BYSTANDER_ADDR, "127.0.0.1", b->port);
	by_sends_t s = {b, (int)((b->end - now_ms()) / SEND_EVERY_MS) + 2, NULL, NULL, NULL, 0, 0};
	double due;
	pc_frame_t f;
	int sent = 0, held = 0, oldest = 0;

	s.start = calloc((size_t)s.n, sizeof(double));
	s.acked = calloc((size_t)s.n, sizeof(double));
	s.delivered = calloc((size_t)s.n, sizeof(double));
	if (!s.start || !s.acked || !s.delivered)
		die("out of memory");
	if (!a || !p || pc_ws_open(a, "/chat/v1/ws", b->token, NULL, BY_TIMEOUT) < 0 ||
	    pc_ws_open(p, "/chat/v1/ws", b->peer_token, NULL, BY_TIMEOUT) < 0 ||
	    pc_ws_recv(a, &f, BY_TIMEOUT) < 0) {
		by_fail(b, "send", "cannot open the WebSockets");
		goto out;
	}
	pc_frame_free(&f);
	if (pc_ws_recv(p, &f, BY_TIMEOUT) < 0) {
		by_fail(b, "send", "no ready frame");
		goto out;
	}
	pc_frame_free(&f);
	due = now_ms();
	for (;;) {
		struct pollfd pf[2] = {{pc_fd(a), POLLIN, 0}, {pc_fd(p), POLLIN, 0}};
		int sending = due < b->end && sent < s.n, wait;
		double now = now_ms();

		if (sending && now >= due) {
			if (sent - s.nacked >= SEND_INFLIGHT) {
				held = 1;
			} else {
				char frame[200];
				snprintf(frame, sizeof frame,
				         "{\"type\":\"send\",\"conv\":%" PRId64 ",\"cmid\":\"by%d_%d\",\"body\":\"hello there\"}",
				         b->conv, b->phase, sent);
				s.start[sent] = held ? due : now;
				held = 0;
				if (pc_ws_send_text(a, frame) < 0) {
					by_fail(b, "send", "cannot send");
					break;
				}
				sent++;
				due += SEND_EVERY_MS;
				continue;
			}
		}
		if (by_pump(&s, a, 0) < 0 || by_pump(&s, p, 1) < 0)
			break;
		while (oldest < sent && s.acked[oldest] > 0 && s.delivered[oldest] > 0)
			oldest++;
		if (!sending && oldest == sent)
			break;
		if (oldest < sent && now_ms() - s.start[oldest] > BY_TIMEOUT) {
			by_fail(b, "send", "no %s in 10 s", s.acked[oldest] > 0 ? "delivery" : "ack");
			break;
		}
		wait = sending && !held ? (int)(due - now_ms()) + 1 : 20;
		poll(pf, 2, wait < 0 ? 0 : wait);
	}
	/* Alice's client shows the chat, so her read watermark follows her
	 * own messages (a seq past the last is lowered to it). Without it her
	 * conversation list counts her unread past a watermark left at 0, a
	 * scan that grows by 500 messages a phase, and later phases would
	 * look slower for it. Untimed. */
	{
		char frame[128];
		snprintf(frame, sizeof frame, "{\"type\":\"receipt\",\"conv\":%" PRId64 ",\"state\":\"read\",\"seq\":%lld}",
		         b->conv, 9007199254740991LL);
		pc_ws_send_text(a, frame);
		usleep(100000);
	}
out:
	pc_close(a);
	pc_close(p);
	free(s.start);
	free(s.acked);
	free(s.delivered);
	return NULL;
}

/* ---- the attacks ---- */

enum { ATTACK_NONE, ATTACK_FLOOD, ATTACK_SLOW, ATTACK_COSTLY, ATTACK_PIPE };

typedef struct attack {
	pthread_t thread;
	int kind, port;
	int size;                /* logins in flight, or connections */
	int naddr;               /* from 127.0.0.2 .. 127.0.0.(1 + naddr) */
	const char *token;       /* the attacker's account, when it needs one */
	atomic_int stop, ready;
	/* Written by the attack's thread, read once it has been joined. */
	int ncounts;
	char names[ATTACK_COUNTERS][24];
	long counts[ATTACK_COUNTERS];
} attack_t;

static void bump(attack_t *a, const char *name, long by)
{
	int i;

	for (i = 0; i < a->ncounts; i++)
		if (!strcmp(a->names[i], name)) {
			a->counts[i] += by;
			return;
		}
	if (a->ncounts == ATTACK_COUNTERS)
		return;
	snprintf(a->names[i], sizeof a->names[i], "%s", name);
	a->counts[i] = by;
	a->ncounts++;
}

static long counted(const attack_t *a, const char *name)
{
	for (int i = 0; i < a->ncounts; i++)
		if (!strcmp(a->names[i], name))
			return a->counts[i];
	return 0;
}

static void bump_status(attack_t *a, int status)
{
	char name[24];

	snprintf(name, sizeof name, "http_%d", status);
	bump(a, name, 1);
}

/* The address of the attacker's i-th connection. */
static void attacker_addr(const attack_t *a, int i, char out[24])
{
	snprintf(out, 24, "127.0.0.%d", 2 + i % a->naddr);
}

/* Login flood: `size` logins for random names always in flight, spread
 * over the attacker's addresses, each sent as soon as the previous answer
 * on its connection came. */
static void *flood_main(void *arg)
{
	attack_t *a = arg;
	int n = a->size, i;
	pc_conn_t **c = calloc((size_t)n, sizeof *c);
	double *sent_at = calloc((size_t)n, sizeof *sent_at); /* 0: nothing in flight */
	struct pollfd *pf = calloc((size_t)n, sizeof *pf);
	unsigned seed = (unsigned)getpid();
	long k = 0;

	if (!c || !sent_at || !pf)
		die("out of memory");
	while (!atomic_load(&a->stop)) {
		for (i = 0; i < n; i++) {
			char addr[24], req[400];
			int len;

			if (!c[i]) {
				attacker_addr(a, i, addr);
				if (!(c[i] = pc_connect_from(addr, "127.0.0.1", a->port))) {
					bump(a, "connect_failed", 1);
					continue;
				}
				bump(a, "connections", 1);
			}
			if (sent_at[i] == 0) {
				char body[128];
				int blen = snprintf(body, sizeof body, "{\"username\":\"f%08x%ld\",\"password\":\"not-the-password\"}",
				                    (unsigned)rand_r(&seed), k++);
				len = snprintf(req, sizeof req, "POST /api/v1/sessions HTTP/1.1\r\nHost: parley\r\n"
				               "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", blen, body);
				if (pc_send_raw(c[i], req, (size_t)len) < 0) {
					bump(a, "closed_by_server", 1);
					pc_close(c[i]);
					c[i] = NULL;
					continue;
				}
				sent_at[i] = now_ms();
				bump(a, "logins_sent", 1);
			}
		}
		atomic_store(&a->ready, 1);
		for (i = 0; i < n; i++) {
			pf[i].fd = c[i] ? pc_fd(c[i]) : -1;
			pf[i].events = POLLIN;
			pf[i].revents = 0;
		}
		poll(pf, (nfds_t)n, 10);
		for (i = 0; i < n; i++) {
			pc_response_t r;
			char conn[16];
			int rc;

			if (!c[i])
				continue;
			if (!pf[i].revents) {
				if (sent_at[i] && now_ms() - sent_at[i] > TIMEOUT) {
					bump(a, "timed_out", 1);
					pc_close(c[i]);
					c[i] = NULL;
					sent_at[i] = 0;
				}
				continue;
			}
			if ((rc = pc_read_response(c[i], &r, 0)) == PC_TIMEOUT)
				continue;
			sent_at[i] = 0;
			if (rc < 0) {
				bump(a, "closed_unanswered", 1);
				pc_close(c[i]);
				c[i] = NULL;
				continue;
			}
			bump_status(a, r.status);
			if (pc_response_header(&r, "connection", conn, sizeof conn) > 0 && !strcasecmp(conn, "close")) {
				pc_close(c[i]);
				c[i] = NULL;
			}
			pc_response_free(&r);
		}
	}
	for (i = 0; i < n; i++) {
		if (c[i] && sent_at[i])
			bump(a, "in_flight_at_end", 1);
		pc_close(c[i]);
	}
	free(c);
	free(sent_at);
	free(pf);
	return NULL;
}

/* Slow sockets: `size` connections, each sending a request head one byte
 * every TRICKLE_MS and never finishing it. A connection the server
 * refuses (429) is tried again a second later; one it closes (408, the
 * request took too long) at once, as a real attacker would. */
typedef struct slow_slot {
	pc_conn_t *c;
	double retry_at, next_byte;
	int pos;
} slow_slot_t;

static void *slow_main(void *arg)
{
	static const char head[] = "GET /api/v1/conversations HTTP/1.1\r\nHost: parley\r\nX-Slow: ";
	attack_t *a = arg;
	int n = a->size, i, np;
	slow_slot_t *s = calloc((size_t)n, sizeof *s);
	struct pollfd *pf = calloc((size_t)n, sizeof *pf);
	int *of = calloc((size_t)n, sizeof *of);

	if (!s || !pf || !of)
		die("out of memory");
	while (!atomic_load(&a->stop)) {
		double now = now_ms();

		for (i = 0, np = 0; i < n; i++) {
			char addr[24];

			if (!s[i].c) {
				if (now < s[i].retry_at)
					continue;
				attacker_addr(a, i, addr);
				if (!(s[i].c = pc_connect_from(addr, "127.0.0.1", a->port))) {
					bump(a, "connect_failed", 1);
					s[i].retry_at = now + 1000;
					continue;
				}
				bump(a, "connections", 1);
				s[i].pos = 0;
				s[i].next_byte = now;
			}
			if (now >= s[i].next_byte) {
				char ch = s[i].pos < (int)sizeof head - 1 ? head[s[i].pos] : 'a';
				/* A failed send means the server has closed: its answer,
				 * if any, is read below. */
				if (send(pc_fd(s[i].c), &ch, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1) {
					bump(a, "bytes_sent", 1);
					s[i].pos++;
				}
				s[i].next_byte = now + TRICKLE_MS;
			}
			pf[np].fd = pc_fd(s[i].c);
			pf[np].events = POLLIN;
			pf[np].revents = 0;
			of[np++] = i;
		}
		atomic_store(&a->ready, 1);
		poll(pf, (nfds_t)np, 10);
		for (int k = 0; k < np; k++) {
			pc_response_t r;
			int rc;

			i = of[k];
			if (!pf[k].revents || (rc = pc_read_response(s[i].c, &r, 0)) == PC_TIMEOUT)
				continue;
			if (rc < 0) {
				bump(a, "closed_unanswered", 1);
				s[i].retry_at = now_ms();
			} else {
				bump_status(a, r.status);
				s[i].retry_at = now_ms() + (r.status == 429 ? 1000 : 0);
				pc_response_free(&r);
			}
			pc_close(s[i].c);
			s[i].c = NULL;
		}
	}
	for (i = 0; i < n; i++) {
		if (s[i].c)
			bump(a, "open_at_end", 1);
		pc_close(s[i].c);
	}
	free(s);
	free(pf);
	free(of);
	return NULL;
}

/* Opens an authenticated WebSocket from addr past its "ready"; NULL if
 * refused. */
static pc_conn_t *attacker_ws(const attack_t *a, const char *addr)
{
	pc_conn_t *c = pc_connect_from(addr, "127.0.0.1", a->port);
	struct timeval tv = {2, 0};
	pc_frame_t f;

	if (!c || pc_ws_open(c, "/chat/v1/ws", a->token, NULL, TIMEOUT) < 0 || pc_ws_recv(c, &f, TIMEOUT) < 0) {
		pc_close(c);
		return NULL;
	}
	pc_frame_free(&f);
	/* A send that cannot go out in 2 s drops the connection rather than
	 * hanging the attack. */
	setsockopt(pc_fd(c), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	return c;
}

/* Reads what an attacker's WebSocket has, counting frames by kind.
 * Returns -1 once it is closed. */
static int costly_drain(attack_t *a, pc_conn_t *c)
{
	pc_frame_t f;
	int rc;

	while ((rc = pc_ws_recv(c, &f, 0)) == 0) {
		const char *d = (const char *)f.data, *code;
		char name[40];

		if (f.opcode == 0x9)
			pc_ws_send_frame(c, 1, 0xA, f.data, f.len, 1, 0);
		else if (f.opcode == 0x8) {
			pc_frame_free(&f);
			return -1;
		} else if (strstr(d, "\"type\":\"error\"") && (code = strstr(d, "\"code\":\"")) != NULL) {
			snprintf(name, sizeof name, "error_%.*s", (int)strcspn(code + 8, "\""), code + 8);
			bump(a, name, 1);
		} else if (strstr(d, "\"type\":\"presence\""))
			bump(a, "presence", 1);
		else if (strstr(d, "\"type\":\"resumed\""))
			bump(a, "resumed", 1);
		else
			bump(a, "other_frames", 1);
		pc_frame_free(&f);
	}
	return rc == PC_TIMEOUT ? 0 : -1;
}

/* Costly frames: `size` WebSockets of one account, from as many addresses,
 * each sending `watch` of WATCH_IDS users and `resume` listing
 * RESUME_CONVS_LISTED conversations in turn, as fast as the socket takes
 * them, and reading every answer (a client that does not read is dropped
 * at its outbound bound, which would end the attack). */
static void *costly_main(void *arg)
{
	attack_t *a = arg;
	int n = a->size, i, len;
	pc_conn_t **c = calloc((size_t)n, sizeof *c);
	struct pollfd *pf = calloc((size_t)n, sizeof *pf);
	int *turn = calloc((size_t)n, sizeof *turn);
	char *watch = malloc(WATCH_IDS * 8 + 64), *resume = malloc(RESUME_CONVS_LISTED * 16 + 64);

	if (!c || !pf || !turn || !watch || !resume)
		die("out of memory");
	len = sprintf(watch, "{\"type\":\"watch\",\"users\":[");
	for (i = 1; i <= WATCH_IDS; i++)
		len += sprintf(watch + len, "%s%d", i > 1 ? "," : "", i);
	sprintf(watch + len, "]}");
	/* Conversations this account is not in: each listed one costs a work
	 * unit and, when the resume is let through, an error frame. */
	len = sprintf(resume, "{\"type\":\"resume\",\"convs\":{");
	for (i = 1; i <= RESUME_CONVS_LISTED; i++)
		len += sprintf(resume + len, "%s\"%d\":0", i > 1 ? "," : "", i);
	sprintf(resume + len, "}}");
	while (!atomic_load(&a->stop)) {
		for (i = 0; i < n; i++) {
			char addr[24];
			if (!c[i]) {
				attacker_addr(a, i, addr);
				if (!(c[i] = attacker_ws(a, addr))) {
					bump(a, "connect_failed", 1);
					continue;
				}
				bump(a, "connections", 1);
			}
			pf[i].fd = pc_fd(c[i]);
			pf[i].events = POLLIN | POLLOUT;
			pf[i].revents = 0;
		}
		atomic_store(&a->ready, 1);
		poll(pf, (nfds_t)n, 10);
		for (i = 0; i < n; i++) {
			if (!c[i])
				continue;
			if ((pf[i].revents & (POLLIN | POLLHUP | POLLERR)) && costly_drain(a, c[i]) < 0) {
				bump(a, "disconnected", 1);
				pc_close(c[i]);
				c[i] = NULL;
				continue;
			}
			if (pf[i].revents & POLLOUT) {
				int w = turn[i]++ & 1;
				if (pc_ws_send_text(c[i], w ? resume : watch) < 0) {
					bump(a, "send_stalled", 1);
					pc_close(c[i]);
					c[i] = NULL;
					continue;
				}
				bump(a, w ? "resume_sent" : "watch_sent", 1);
			}
		}
	}
	for (i = 0; i < n; i++)
		pc_close(c[i]);
	free(c);
	free(pf);
	free(turn);
	free(watch);
	free(resume);
	return NULL;
}

/* Pipelining: `size` keep-alive connections, each writing authenticated
 * GETs of the conversation list as fast as its socket takes them and
 * reading nothing. After the phase, what the answers were is read back for
 * a second (the server answers in order, so the first answers tell). */
static void *pipe_main(void *arg)
{
	attack_t *a = arg;
	int n = a->size, i, rlen;
	pc_conn_t **c = calloc((size_t)n, sizeof *c);
	struct pollfd *pf = calloc((size_t)n, sizeof *pf);
	long *written = calloc((size_t)n, sizeof *written);
	char req[256], *batch;
	size_t blen;
	double end;

	if (!c || !pf || !written)
		die("out of memory");
	rlen = snprintf(req, sizeof req, "GET /api/v1/conversations HTTP/1.1\r\nHost: parley\r\n"
	                "Authorization: Bearer %s\r\n\r\n", a->token);
	blen = (size_t)rlen * PIPE_BATCH;
	if (!(batch = malloc(blen)))
		die("out of memory");
	for (i = 0; i < PIPE_BATCH; i++)
		memcpy(batch + (size_t)i * (size_t)rlen, req, (size_t)rlen);
	while (!atomic_load(&a->stop)) {
		for (i = 0; i < n; i++) {
			char addr[24];
			if (!c[i]) {
				attacker_addr(a, i, addr);
				if (!(c[i] = pc_connect_from(addr, "127.0.0.1", a->port))) {
					bump(a, "connect_failed", 1);
					continue;
				}
				fcntl(pc_fd(c[i]), F_SETFL, fcntl(pc_fd(c[i]), F_GETFL) | O_NONBLOCK);
				written[i] = 0;
				bump(a, "connections", 1);
			}
			pf[i].fd = pc_fd(c[i]);
			pf[i].events = POLLOUT;
			pf[i].revents = 0;
		}
		atomic_store(&a->ready, 1);
		poll(pf, (nfds_t)n, 10);
		for (i = 0; i < n; i++) {
			if (!c[i] || !(pf[i].revents & (POLLOUT | POLLERR | POLLHUP)))
				continue;
			for (;;) {
				size_t off = (size_t)(written[i] % (long)blen);
				ssize_t w = send(pc_fd(c[i]), batch + off, blen - off, MSG_NOSIGNAL);
				if (w > 0) {
					/* Count the requests written whole. */
					bump(a, "requests_sent", (written[i] + w) / rlen - written[i] / rlen);
					written[i] += w;
					continue;
				}
				if (w < 0 && (errno == EAGAIN || errno == EINTR))
					break;
				bump(a, "reset_by_server", 1);
				pc_close(c[i]);
				c[i] = NULL;
				break;
			}
		}
	}
	/* What the server answered, from the first answers of each. */
	end = now_ms() + 1000;
	while (now_ms() < end) {
		int open = 0;
		for (i = 0; i < n; i++) {
			pc_response_t r;
			int rc;
			if (!c[i])
				continue;
			open++;
			while ((rc = pc_read_response(c[i], &r, 0)) == 0) {
				bump_status(a, r.status);
				pc_response_free(&r);
			}
			if (rc != PC_TIMEOUT) {
				pc_close(c[i]);
				c[i] = NULL;
			}
		}
		if (!open)
			break;
		usleep(10000);
	}
	for (i = 0; i < n; i++)
		pc_close(c[i]);
	free(c);
	free(pf);
	free(written);
	free(batch);
	return NULL;
}

/* ---- the phases ---- */

#define MAX_THREADS 64

/* The server's threads' CPU, by thread id. */
typedef struct thread_cpu {
	int n;
	int tid[MAX_THREADS];
	char name[MAX_THREADS][24];
	double us[MAX_THREADS];      /* on a CPU */
	double wait_us[MAX_THREADS]; /* runnable, waiting for one */
} thread_cpu_t;

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

static void threads_read(pid_t pid, thread_cpu_t *t)
{
	char path[64], sub[400];
	int tids[MAX_THREADS], n = 0, i, j;
	struct dirent *d;
	DIR *dir;

	t->n = 0;
	snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
	if (!(dir = opendir(path)))
		return;
	while ((d = readdir(dir)) != NULL && n < MAX_THREADS)
		if (d->d_name[0] != '.')
			tids[n++] = atoi(d->d_name);
	closedir(dir);
	qsort(tids, (size_t)n, sizeof *tids, cmp_int);
	for (i = 0; i < n; i++) {
		unsigned long long ns = 0, wait = 0;
		FILE *f;

		t->tid[t->n] = tids[i];
		t->name[t->n][0] = 0;
		t->us[t->n] = 0;
		snprintf(sub, sizeof sub, "%s/%d/comm", path, tids[i]);
		if ((f = fopen(sub, "r")) != NULL) {
			if (fgets(t->name[t->n], sizeof t->name[t->n], f))
				t->name[t->n][strcspn(t->name[t->n], "\n")] = 0;
			fclose(f);
		}
		/* Both pools name their threads worker-N; the second started
		 * is the password hashing one (server.c). */
		for (j = 0; j < t->n; j++)
			if (!strncmp(t->name[t->n], "worker-", 7) && !strcmp(t->name[j], t->name[t->n]))
				memcpy(t->name[t->n], "hasher", 6);
		snprintf(sub, sizeof sub, "%s/%d/schedstat", path, tids[i]);
		if ((f = fopen(sub, "r")) != NULL) {
			if (fscanf(f, "%llu %llu", &ns, &wait) == 2) {
				t->us[t->n] = (double)ns / 1000.0;
				t->wait_us[t->n] = (double)wait / 1000.0;
			}
			fclose(f);
		}
		t->n++;
	}
}

typedef struct phase_def {
	const char *key, *label;
	int kind;
	int size, naddr;             /* full run */
	int quick_size, quick_naddr; /* --quick */
} phase_def_t;

static const phase_def_t abuse_phases[] = {
	{"baseline", "no attack", ATTACK_NONE, 0, 0, 0, 0},
	{"login_flood", "login flood", ATTACK_FLOOD, 100, 8, 8, 2},
	{"slow_sockets", "slow sockets", ATTACK_SLOW, 1000, 8, 110, 1},
	{"costly_frames", "costly frames", ATTACK_COSTLY, 8, 8, 1, 1},
	{"pipelining", "pipelining", ATTACK_PIPE, 80, 8, 4, 2},
	{"baseline_again", "no attack, again", ATTACK_NONE, 0, 0, 0, 0},
};
#define ABUSE_PHASES (int)(sizeof abuse_phases / sizeof abuse_phases[0])

typedef struct phase_result {
	int skipped;                     /* --only named another attack */
	samples_t s[OPS];
	int failures;
	char failure[200];
	double server_cpu, bench_cpu;    /* percent of one core */
	double other_cpu;                /* other processes, likewise */
	double irq_cpu;                  /* interrupts (loopback TCP) and steal, likewise */
	double server_wait;              /* the server's threads' time waiting for a CPU, likewise */
	double connections;              /* the server's, at the end of the window */
	int size, naddr;
	int nthreads;
	char thread[MAX_THREADS][24];
	double thread_cpu[MAX_THREADS];  /* percent of one core, busiest first */
	attack_t attack;
} phase_result_t;

/* This process's CPU time in microseconds, threads that have ended
 * included (the bystander's end before it is read). */
static double self_cpu_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* The machine's busy CPU time in microseconds, all processes and cores,
 * from /proc/stat: *tasks what processes ran (user, nice, system), *irq
 * what went to interrupts (irq, softirq: much of loopback TCP's work is
 * counted there, to no process) or to the hypervisor (steal). Beside the
 * server's and ours, it shows whether anything else ran during a phase. */
static void machine_cpu_us(double *tasks, double *irq)
{
	unsigned long long v[8] = {0};
	double us = 1e6 / (double)sysconf(_SC_CLK_TCK);
	FILE *f = fopen("/proc/stat", "r");

	*tasks = *irq = 0;
	if (!f)
		return;
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
	           &v[6], &v[7]) == 8) {
		*tasks = (double)(v[0] + v[1] + v[2]) * us;
		*irq = (double)(v[5] + v[6] + v[7]) * us;
	}
	fclose(f);
}

/* Waits until the server is nearly idle (under 5% of a core for 250 ms)
 * and so is the rest of the machine (under 15%), at most 15 s: what an
 * attack left queued (hashes, answers, lingering connections) must not
 * land in the next phase, and on a shared machine a phase had better not
 * start in someone else's burst. The phase's figures show what else ran. */
static void abuse_settle(pid_t pid)
{
	double end = now_ms() + 15000;

	while (now_ms() < end) {
		double c0 = cpu_us(pid), s0 = self_cpu_us(), t0 = now_ms(), m0, i0, m1, i1, ms, server;
		machine_cpu_us(&m0, &i0);
		usleep(250000);
		machine_cpu_us(&m1, &i1);
		ms = (now_ms() - t0) * 1000;
		server = (cpu_us(pid) - c0) / ms;
		if (server < 0.05 && (m1 + i1 - m0 - i0) / ms - server - (self_cpu_us() - s0) / ms < 0.15)
			return;
	}
}

static void run_phase(const phase_def_t *def, int phase, int quick, double seconds, bystander_t *by,
                      pid_t pid, const char *attack_token[], phase_result_t *res)
{
	static void *(*const mains[])(void *) = {NULL, flood_main, slow_main, costly_main, pipe_main};
	attack_t *a = &res->attack;
	pthread_t th[3];
	thread_cpu_t t0, t1;
	double cpu0, self0, all0, irq0, all1, irq1, w0, w1, limit;
	int i, j;

	memset(by->s, 0, sizeof by->s);
	by->phase = phase;
	by->failures = 0;
	by->failure[0] = 0;
	res->size = quick ? def->quick_size : def->size;
	res->naddr = quick ? def->quick_naddr : def->naddr;
	if (def->kind != ATTACK_NONE) {
		a->kind = def->kind;
		a->port = by->port;
		a->size = res->size;
		a->naddr = res->naddr;
		a->token = attack_token[def->kind];
		pthread_create(&a->thread, NULL, mains[def->kind], a);
		/* Let the attack reach its full size before measuring. */
		for (limit = now_ms() + TIMEOUT; !atomic_load(&a->ready) && now_ms() < limit;)
			usleep(10000);
		usleep(quick ? 100000 : 500000);
	}
	threads_read(pid, &t0);
	cpu0 = cpu_us(pid);
	self0 = self_cpu_us();
	machine_cpu_us(&all0, &irq0);
	w0 = now_ms();
	by->end = w0 + seconds * 1000;
	pthread_create(&th[0], NULL, by_login_main, by);
	pthread_create(&th[1], NULL, by_rest_main, by);
	pthread_create(&th[2], NULL, by_send_main, by);
	for (i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	w1 = now_ms();
	res->server_cpu = (cpu_us(pid) - cpu0) / ((w1 - w0) * 10);
	res->bench_cpu = (self_cpu_us() - self0) / ((w1 - w0) * 10);
	machine_cpu_us(&all1, &irq1);
	res->irq_cpu = (irq1 - irq0) / ((w1 - w0) * 10);
	res->other_cpu = (all1 - all0) / ((w1 - w0) * 10) - res->server_cpu - res->bench_cpu;
	if (res->other_cpu < 0)
		res->other_cpu = 0; /* /proc/stat counts in ticks */
	threads_read(pid, &t1);
	res->connections = metric("parley_connections");
	if (def->kind != ATTACK_NONE) {
		atomic_store(&a->stop, 1);
		pthread_join(a->thread, NULL);
	}
	memcpy(res->s, by->s, sizeof res->s);
	res->failures = by->failures;
	memcpy(res->failure, by->failure, sizeof res->failure);
	/* Each thread's share in the window, busiest first. */
	res->nthreads = 0;
	res->server_wait = 0;
	for (i = 0; i < t1.n; i++) {
		double before = 0, waited = 0, share;
		for (j = 0; j < t0.n; j++)
			if (t0.tid[j] == t1.tid[i]) {
				before = t0.us[j];
				waited = t0.wait_us[j];
			}
		share = (t1.us[i] - before) / ((w1 - w0) * 10);
		res->server_wait += (t1.wait_us[i] - waited) / ((w1 - w0) * 10);
		for (j = res->nthreads; j > 0 && res->thread_cpu[j - 1] < share; j--) {
			res->thread_cpu[j] = res->thread_cpu[j - 1];
			memcpy(res->thread[j], res->thread[j - 1], sizeof res->thread[j]);
		}
		res->thread_cpu[j] = share;
		memcpy(res->thread[j], t1.name[i], sizeof res->thread[j]);
		res->nthreads++;
	}
}

/* What each attack is, in one line, for the table. */
static void attack_summary(const phase_def_t *def, const phase_result_t *r, char *out, size_t cap)
{
	const attack_t *a = &r->attack;
	char from[48];

	snprintf(from, sizeof from, "from %d address%s", r->naddr, r->naddr == 1 ? "" : "es");
	switch (def->kind) {
	case ATTACK_FLOOD:
		snprintf(out, cap, "%d logins for random names in flight %s: %ld sent; answered 401 %ld, "
		         "refused 429 %ld, 503 %ld; %ld closed unanswered",
		         r->size, from, counted(a, "logins_sent"), counted(a, "http_401"), counted(a, "http_429"),
		         counted(a, "http_503"), counted(a, "closed_unanswered"));
		break;
	case ATTACK_SLOW:
		snprintf(out, cap, "%d connections trickling a head a byte per %.0f ms %s: %ld opened, "
		         "refused 429 %ld, timed out 408 %ld, closed silently %ld; %ld bytes",
		         r->size, TRICKLE_MS, from, counted(a, "connections"), counted(a, "http_429"),
		         counted(a, "http_408"), counted(a, "closed_unanswered"), counted(a, "bytes_sent"));
		break;
	case ATTACK_COSTLY:
		snprintf(out, cap, "%d WebSockets of one account %s: watch (%d ids) %ld, resume (%d convs) %ld sent; "
		         "refused rate_limited %ld; forbidden %ld, presence %ld, resumed %ld; %ld dropped",
		         r->size, from, WATCH_IDS, counted(a, "watch_sent"), RESUME_CONVS_LISTED,
		         counted(a, "resume_sent"), counted(a, "error_rate_limited"), counted(a, "error_forbidden"),
		         counted(a, "presence"), counted(a, "resumed"),
		         counted(a, "disconnected") + counted(a, "send_stalled"));
		break;
	case ATTACK_PIPE: {
		long other = 0;
		for (int i = 0; i < a->ncounts; i++)
			if (!strncmp(a->names[i], "http_", 5) && strcmp(a->names[i], "http_200") &&
			    strcmp(a->names[i], "http_429"))
				other += a->counts[i];
		snprintf(out, cap, "%d keep-alive connections %s writing GET /api/v1/conversations, reading "
		         "nothing: %ld requests written; of the answers read afterwards 200 %ld, 429 %ld, other %ld; "
		         "%ld reset",
		         r->size, from, counted(a, "requests_sent"), counted(a, "http_200"), counted(a, "http_429"),
		         other, counted(a, "reset_by_server"));
		break;
	}
	default:
		snprintf(out, cap, "none");
	}
}

static pid_t abuse_server_pid;
static char abuse_dir[32];

/* Whatever ends the run, the server goes with it. */
static void abuse_cleanup(void)
{
	if (abuse_server_pid > 0) {
		kill(abuse_server_pid, SIGTERM);
		waitpid(abuse_server_pid, NULL, 0);
		abuse_server_pid = 0;
		nftw(abuse_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	}
}

/* SIGALRM (the run took far too long), SIGINT, SIGTERM: the server must
 * not outlive us. Only async-signal-safe calls; the data directory stays. */
static void abuse_stop(int sig)
{
	static const char late[] = "parley-bench: abuse: the run took far too long; stopped\n";

	if (abuse_server_pid > 0)
		kill(abuse_server_pid, SIGKILL);
	if (sig == SIGALRM && write(2, late, sizeof late - 1) < 0)
		_exit(1);
	_exit(1);
}

static int run_abuse(double seconds, int quick, const char *only, const char *trace_file, int json_only)
{
	char *argv[] = {"build/parley", "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
	                "--data", abuse_dir, "--commit-delay", commit_delay, NULL};
	char machine[256], commit[32], tok[4][64], body[128];
	const char *attack_token[5] = {NULL};
	phase_result_t *res = calloc(ABUSE_PHASES, sizeof *res);
	bystander_t by;
	pc_conn_t *http;
	proc_t srv;
	json_t *j;
	int64_t bob;
	int p, o, failed = 0;

	if (!res)
		die("out of memory");
	if (trace_file && !(abuse_trace = fopen(trace_file, "w")))
		die("cannot write the --trace file");
	abuse_t0 = now_ms();
	describe(machine, sizeof machine, commit, sizeof commit);
	/* Production defaults: no limit is lifted, passwords are hashed at
	 * the real cost. */
	snprintf(abuse_dir, sizeof abuse_dir, "/tmp/parley-bench-XXXXXX");
	if (!mkdtemp(abuse_dir))
		die("mkdtemp");
	spawn(&srv, argv);
	abuse_server_pid = srv.pid;
	atexit(abuse_cleanup);
	signal(SIGALRM, abuse_stop);
	signal(SIGINT, abuse_stop);
	signal(SIGTERM, abuse_stop);
	alarm((unsigned)(ABUSE_PHASES * (seconds + 60) + 120));
	gb_port = srv.port;
	gb_admin_port = srv.admin_port;

	/* Set-up, not timed, from an address of its own: alice writes to bob
	 * (the bystander's sends, list and deliveries), carol logs in (the
	 * bystander's logins), mallory sends costly frames, trudy pipelines.
	 * Five accounts: at the real hashing cost each takes a moment. */
	memset(&by, 0, sizeof by);
	pthread_mutex_init(&by.lock, NULL);
	by.port = srv.port;
	if (!(http = pc_connect_from(SETUP_ADDR, "127.0.0.1", srv.port)))
		die("cannot connect");
	user_with_token(http, "alice", by.token);
	bob = user_with_token(http, "bob", by.peer_token);
	user_with_token(http, "carol", tok[0]);
	user_with_token(http, "mallory", tok[1]);
	user_with_token(http, "trudy", tok[2]);
	snprintf(body, sizeof body, "{\"members\":[%" PRId64 "]}", bob);
	j = http_json(http, "POST", "/api/v1/conversations", by.token, body, 201);
	by.conv = json_integer_value(json_object_get(j, "conversation_id"));
	json_decref(j);
	pc_close(http);
	attack_token[ATTACK_COSTLY] = tok[1];
	attack_token[ATTACK_PIPE] = tok[2];

	for (p = 0; p < ABUSE_PHASES; p++) {
		res[p].skipped = only && p > 0 && strcmp(only, abuse_phases[p].key);
		if (res[p].skipped)
			continue;
		abuse_settle(srv.pid);
		if (!json_only)
			fprintf(stderr, "parley-bench: abuse: phase %d, %s\n", p, abuse_phases[p].label);
		run_phase(&abuse_phases[p], p, quick, seconds, &by, srv.pid, attack_token, &res[p]);
		if (res[p].failures)
			failed = 1;
	}
	abuse_cleanup();
	if (abuse_trace)
		fclose(abuse_trace);

	if (!json_only) {
		printf("abuse: a bystander (%s) while attackers (127.0.0.2 and up) run, %.0f s a phase, production "
		       "limits and password hashing%s (%s, commit %s)\n",
		       BYSTANDER_ADDR, seconds, quick ? ", small attacks (--quick)" : "", machine, commit);
		printf("  bystander: a login every %.1f s (new connection), GET %s every %.0f ms (keep-alive), a "
		       "direct message every %.0f ms; latency in ms, ratio to phase 0\n",
		       LOGIN_EVERY_MS / 1000, REST_PATH, REST_EVERY_MS, SEND_EVERY_MS);
		printf("  %-18s %-15s %6s %9s %9s %7s %7s\n", "phase", "operation", "n", "p50", "p99", "p50 x",
		       "p99 x");
		for (p = 0; p < ABUSE_PHASES; p++) {
			char line[600];
			if (res[p].skipped)
				continue;
			for (o = 0; o < OPS; o++) {
				samples_t *s = &res[p].s[o], *b0 = &res[0].s[o];
				double p50 = sample_pct(s, .5), p99 = sample_pct(s, .99);
				printf("  %-18s %-15s %6d %9.2f %9.2f", o ? "" : abuse_phases[p].label, op_label[o], s->n,
				       p50, p99);
				if (p)
					printf(" %7.2f %7.2f", ratio(p50, sample_pct(b0, .5)), ratio(p99, sample_pct(b0, .99)));
				printf("\n");
			}
			printf("  %-18s server CPU %.0f%% of a core (", "", res[p].server_cpu);
			for (o = 0; o < 4 && o < res[p].nthreads; o++)
				printf("%s%s %.0f%%", o ? ", " : "", res[p].thread[o], res[p].thread_cpu[o]);
			printf("), waiting for a core %.0f%%; load generator %.0f%%; interrupts and steal %.0f%%; "
			       "other processes %.0f%%; server connections %.0f\n",
			       res[p].server_wait, res[p].bench_cpu, res[p].irq_cpu, res[p].other_cpu, res[p].connections);
			if (abuse_phases[p].kind != ATTACK_NONE) {
				attack_summary(&abuse_phases[p], &res[p], line, sizeof line);
				printf("  %-18s attack: %s\n", "", line);
			}
			if (res[p].failures)
				printf("  %-18s NOT SERVED: %d failure%s, first: %s\n", "", res[p].failures,
				       res[p].failures == 1 ? "" : "s", res[p].failure);
		}
	}
	printf("{\"scenario\":\"abuse\",\"machine\":\"%s\",\"commit\":\"%s\",\"store\":\"%s\",\"parameters\":{\"seconds\":%.0f,"
	       "\"quick\":%s,\"only\":\"%s\",\"password_hashing\":\"production\",\"login_every_ms\":%.0f,\"rest_every_ms\":%.0f,"
	       "\"send_every_ms\":%.0f},\"figures\":{",
	       machine, commit, bench_store, seconds, quick ? "true" : "false", only ? only : "", LOGIN_EVERY_MS, REST_EVERY_MS, SEND_EVERY_MS);
	for (p = 0; p < ABUSE_PHASES; p++) {
		const attack_t *a = &res[p].attack;
		if (res[p].skipped)
			continue;
		printf("%s\"%s\":{", p ? "," : "", abuse_phases[p].key);
		for (o = 0; o < OPS; o++) {
			samples_t *s = &res[p].s[o], *b0 = &res[0].s[o];
			double p50 = sample_pct(s, .5), p99 = sample_pct(s, .99);
			printf("%s\"%s_n\":%d,\"%s_p50_ms\":%.3f,\"%s_p99_ms\":%.3f", o ? "," : "", op_name[o], s->n,
			       op_name[o], p50, op_name[o], p99);
			if (p)
				printf(",\"%s_p50_ratio\":%.2f,\"%s_p99_ratio\":%.2f", op_name[o],
				       ratio(p50, sample_pct(b0, .5)), op_name[o], ratio(p99, sample_pct(b0, .99)));
		}
		printf(",\"failures\":%d,\"server_cpu_pct\":%.1f,\"server_wait_pct\":%.1f,\"bench_cpu_pct\":%.1f,"
		       "\"irq_cpu_pct\":%.1f,\"other_cpu_pct\":%.1f,\"server_connections\":%.0f,\"server_threads_cpu_pct\":{",
		       res[p].failures, res[p].server_cpu, res[p].server_wait, res[p].bench_cpu, res[p].irq_cpu, res[p].other_cpu,
		       res[p].connections);
		for (o = 0; o < res[p].nthreads; o++)
			printf("%s\"%s\":%.1f", o ? "," : "", res[p].thread[o], res[p].thread_cpu[o]);
		printf("}");
		if (abuse_phases[p].kind != ATTACK_NONE) {
			printf(",\"attack\":{\"size\":%d,\"addresses\":%d", res[p].size, res[p].naddr);
			for (o = 0; o < a->ncounts; o++)
				printf(",\"%s\":%ld", a->names[o], a->counts[o]);
			printf("}");
		}
		printf("}");
	}
	printf("}}\n");
	fflush(stdout);
	for (p = 0; p < ABUSE_PHASES; p++) {
		if (res[p].failures)
			fprintf(stderr, "parley-bench: abuse: the bystander was not served in phase %d (%s): %s\n", p,
			        abuse_phases[p].label, res[p].failure);
		for (o = 0; o < OPS; o++)
			free(res[p].s[o].v);
	}
	free(res);
	return failed ? 1 : 0;
}

/* ---- log: the event log alone ---------------------------------------- */

/* Three JetStream servers (the stream replicated 3 ways, as the fleet
 * runs it), one process publishing at a fixed rate and consuming every
 * partition as one group, as a node's outbox relay and dispatchers do:
 * what the log costs per event (the servers' CPU and this process's),
 * and how long an event takes from publish to handler, without a node,
 * a store or clients around it. */
#define LOG_EVENT_BYTES 300
#define LOG_KEYS 1000

/* log --publish-only: no consumers, so the publishing half of the cost
 * stands alone (the difference is the consuming half's). */
static int log_publish_only;

typedef struct log_bench {
	pthread_mutex_t lock;
	double *lat;      /* ms, publish to handler, first deliveries */
	size_t n, cap;
	atomic_ullong handled, redelivered, acked, failed;
} log_bench_t;

static int log_bench_handle(void *ud, const eventlog_event_t *ev)
{
	log_bench_t *b = ud;
	double sent;

	if (ev->len < sizeof sent)
		return 0;
	memcpy(&sent, ev->data, sizeof sent);
	if (ev->delivery > 1) {
		atomic_fetch_add(&b->redelivered, 1);
		return 0;
	}
	pthread_mutex_lock(&b->lock);
	if (sent > 0 && b->n < b->cap)
		b->lat[b->n++] = now_ms() - sent;
	pthread_mutex_unlock(&b->lock);
	atomic_fetch_add(&b->handled, 1);
	return 0;
}

static void log_bench_done(void *ud, int ok)
{
	log_bench_t *b = ud;

	atomic_fetch_add(ok ? &b->acked : &b->failed, 1);
}

/* Publishes one event of key, stamped with the time (0: a warm-up event,
 * not measured); retries while the publisher is full. */
static void log_bench_publish(eventlog_t *log, log_bench_t *b, int64_t key, double stamp)
{
	char data[LOG_EVENT_BYTES];
	int rc;

	memset(data, 'x', sizeof data);
	memcpy(data, &stamp, sizeof stamp);
	while ((rc = eventlog_publish(log, key, "message.new", data, sizeof data, NULL, log_bench_done, b)) == -EAGAIN)
		usleep(1000);
	if (rc < 0)
		die(strerror(-rc));
}

static int run_log(double rate, double seconds, int json_only)
{
	char machine[256], commit[32], err[256];
	natscluster_t *nats;
	eventlog_opts_t o;
	eventlog_t *log;
	log_bench_t b;
	size_t total = (size_t)(rate * seconds), i;
	unsigned p, parts;
	double t0, cpu0[3], self0, cpu1[3], self1, servers = 0, p50 = 0, p99 = 0, wall;
	int64_t end;

	describe(machine, sizeof machine, commit, sizeof commit);
	memset(&b, 0, sizeof b);
	pthread_mutex_init(&b.lock, NULL);
	b.cap = total;
	if (!(b.lat = calloc(total ? total : 1, sizeof *b.lat)))
		die("out of memory");
	if (!(nats = natscluster_start(3)))
		die("cannot start three NATS servers");
	eventlog_opts_init(&o);
	o.name = "BENCHLOG";
	o.replicas = 3;
	if (!(log = eventlog_open(natscluster_urls(nats), &o, err, sizeof err)))
		die(err);
	parts = eventlog_partitions(log);
	for (p = 0; p < parts && !log_publish_only; p++)
		if (eventlog_consume(log, "bench", p, log_bench_handle, &b) < 0)
			die("eventlog_consume");
	/* Warm-up: an event on every partition, until each consumer has its
	 * cursor and has handled it (published only: acked). */
	{
		unsigned covered = 0;
		int64_t key;
		char seen[EVENTLOG_PARTITIONS_MAX] = {0};
		for (key = 1; covered < parts && key < 100000; key++) {
			unsigned q = eventlog_partition_of(log, key);
			if (seen[q])
				continue;
			seen[q] = 1;
			covered++;
			log_bench_publish(log, &b, key, 0);
		}
	}
	end = (int64_t)now_ms() + 60000;
	while ((log_publish_only ? atomic_load(&b.acked) : atomic_load(&b.handled)) < parts && (int64_t)now_ms() < end)
		usleep(10000);
	if ((log_publish_only ? atomic_load(&b.acked) : atomic_load(&b.handled)) < parts)
		die("the log did not take events within 60 s");
	atomic_store(&b.handled, 0);
	atomic_store(&b.acked, 0);
	for (i = 0; i < 3; i++)
		cpu0[i] = cpu_us(natscluster_pid(nats, (int)i));
	self0 = self_cpu_us();
	t0 = now_ms();
	/* Open loop: event i is due at t0 + i / rate, whatever came before. */
	for (i = 0; i < total; i++) {
		double due = t0 + (double)i * 1000.0 / rate, now = now_ms();
		if (due > now)
			usleep((useconds_t)((due - now) * 1000));
		log_bench_publish(log, &b, 1 + (int64_t)(i * 7919 % LOG_KEYS), now_ms());
	}
	end = (int64_t)now_ms() + 30000;
	while ((log_publish_only ? atomic_load(&b.acked) + atomic_load(&b.failed) : atomic_load(&b.handled)) < total &&
	       (int64_t)now_ms() < end)
		usleep(10000);
	wall = now_ms() - t0;
	for (i = 0; i < 3; i++) {
		cpu1[i] = cpu_us(natscluster_pid(nats, (int)i));
		servers += cpu1[i] - cpu0[i];
	}
	self1 = self_cpu_us();
	pthread_mutex_lock(&b.lock);
	qsort(b.lat, b.n, sizeof *b.lat, cmp_double);
	if (b.n) {
		p50 = b.lat[b.n / 2];
		p99 = b.lat[(size_t)((double)(b.n - 1) * 0.99)];
	}
	pthread_mutex_unlock(&b.lock);
	if (!json_only) {
		printf("log: %.0f events/s for %.0f s, %u partitions, 3 JetStream servers, replicas 3%s (%s, commit %s)\n",
		       rate, seconds, parts, log_publish_only ? ", published only" : "", machine, commit);
		printf("  publishes acked %llu, failed %llu\n", (unsigned long long)atomic_load(&b.acked),
		       (unsigned long long)atomic_load(&b.failed));
		printf("  handled %llu of %zu (redelivered %llu), publish to handler p50 %.2f ms, p99 %.2f ms\n",
		       (unsigned long long)atomic_load(&b.handled), total, (unsigned long long)atomic_load(&b.redelivered),
		       p50, p99);
		printf("  CPU per event: JetStream servers %.0f us, this process (publisher and consumers) %.0f us\n",
		       servers / (double)total, (self1 - self0) / (double)total);
	}
	printf("{\"scenario\":\"log\",\"machine\":\"%s\",\"commit\":\"%s\",\"parameters\":{\"rate\":%.0f,"
	       "\"seconds\":%.0f,\"partitions\":%u,\"replicas\":3,\"event_bytes\":%d,\"publish_only\":%s},"
	       "\"figures\":{\"acked\":%llu,\"handled\":%llu,\"redelivered\":%llu,\"publish_failed\":%llu,\"latency_p50_ms\":%.3f,"
	       "\"latency_p99_ms\":%.3f,\"servers_cpu_us_per_event\":%.1f,\"client_cpu_us_per_event\":%.1f,"
	       "\"wall_ms\":%.0f}}\n",
	       machine, commit, rate, seconds, parts, LOG_EVENT_BYTES, log_publish_only ? "true" : "false",
	       (unsigned long long)atomic_load(&b.acked), (unsigned long long)atomic_load(&b.handled),
	       (unsigned long long)atomic_load(&b.redelivered), (unsigned long long)atomic_load(&b.failed), p50, p99,
	       servers / (double)total, (self1 - self0) / (double)total, wall);
	eventlog_close(log);
	natscluster_stop(nats);
	free(b.lat);
	pthread_mutex_destroy(&b.lock);
	return (log_publish_only ? atomic_load(&b.acked) : atomic_load(&b.handled)) >= total ? 0 : 1;
}

static int usage(void)
{
	fprintf(stderr, "usage: parley-bench idle [--connections N] [--processes K] [--json]\n"
	                "       parley-bench direct [--pairs P] [--rate R] [--seconds S] [--json]\n"
	                "       parley-bench direct --throughput S [--window W] [--pairs P] [--json]\n"
	                "       parley-bench fleet [--pairs P] [--rate R] [--seconds S] [--log] [--haproxy] [--json]\n"
	                "       parley-bench failover [--clients N] [--one-address] [--json]\n"
	                "       parley-bench log [--rate R] [--seconds S] [--publish-only] [--json]\n"
	                "       parley-bench direct --find-max P99_MS [--pairs P] [--json]\n"
	                "  (any scenario: --commit-delay US starts the server with that commit delay,\n"
	                "   --store-writers N with that many write transactions in flight)\n"
	                "       parley-bench history [--clients K] [--seconds S] [--json]\n"
	                "       parley-bench resume [--clients N] [--json]\n"
	                "       parley-bench group [--members N] [--online K] [--messages M] [--batch B]\n"
	                "                          [--throughput SECONDS] [--json]\n"
	                "       parley-bench abuse [--seconds S] [--quick] [--only ATTACK] [--trace FILE] [--json]\n"
	                "  (any scenario: --store sqlite|postgresql|both, the store Parley runs on; both runs\n"
	                "   the scenario once on each, in this order)\n");
	return 2;
}

int main(int argc, char **argv)
{
	int n = 2000, procs = 0, clients = 4, client_set = 0, json_only = 0, pairs = 50, quick = 0, i;
	double seconds = 5, rate = 2000, find_max = 0, throughput = 0;
	int seconds_set = 0, window = 32;
	const char *trace_file = NULL, *only = NULL, *store = "sqlite";
	int members = 1024, online = 800, messages = 30, batch = 10;

	signal(SIGPIPE, SIG_IGN);
	if (argc < 2 || (strcmp(argv[1], "idle") && strcmp(argv[1], "history") &&
	                 strcmp(argv[1], "resume") && strcmp(argv[1], "direct") && strcmp(argv[1], "group") && strcmp(argv[1], "fleet") &&
	                 strcmp(argv[1], "failover") && strcmp(argv[1], "log") &&
	                 strcmp(argv[1], "abuse")))
		return usage();
	for (i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--connections") && i + 1 < argc)
			n = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--processes") && i + 1 < argc)
			procs = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--clients") && i + 1 < argc)
			clients = atoi(argv[++i]), client_set = 1;
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]), seconds_set = 1;
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
		else if (!strcmp(argv[i], "--window") && i + 1 < argc)
			window = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--throughput") && i + 1 < argc)
			throughput = atof(argv[++i]);
		else if (!strcmp(argv[i], "--store-writers") && i + 1 < argc)
			snprintf(store_writers, sizeof store_writers, "%u", (unsigned)atoi(argv[++i]));
		else if (!strcmp(argv[i], "--commit-delay") && i + 1 < argc)
			snprintf(commit_delay, sizeof commit_delay, "%d", atoi(argv[++i]));
		else if (!strcmp(argv[i], "--json"))
			json_only = 1;
		else if (!strcmp(argv[i], "--one-address"))
			fo_one_address = 1;
		else if (!strcmp(argv[i], "--log"))
			fleet_log = 1;
		else if (!strcmp(argv[i], "--haproxy"))
			fleet_haproxy = 1;
		else if (!strcmp(argv[i], "--publish-only"))
			log_publish_only = 1;
		else if (!strcmp(argv[i], "--quick"))
			quick = 1;
		else if (!strcmp(argv[i], "--trace") && i + 1 < argc)
			trace_file = argv[++i];
		else if (!strcmp(argv[i], "--only") && i + 1 < argc)
			only = argv[++i];
		else if (!strcmp(argv[i], "--store") && i + 1 < argc)
			store = argv[++i];
		else
			return usage();
	}
	if (strcmp(store, "sqlite") && strcmp(store, "postgresql") && strcmp(store, "both"))
		die("--store: sqlite, postgresql or both");
	if (!strcmp(store, "both")) {
		/* The same scenario on each store, one after the other, each
		 * run as if alone (its own server, its own figures). */
		char *sub[64];
		int k, r = 0, rc;

		if (argc + 2 > 64)
			die("too many arguments");
		for (k = 0; k < argc; k++)
			sub[k] = argv[k];
		sub[argc] = "--store";
		sub[argc + 2] = NULL;
		for (k = 0; k < 2 && r == 0; k++) {
			pid_t pid;

			sub[argc + 1] = k ? "postgresql" : "sqlite";
			fflush(stdout);
			if ((pid = fork()) == 0) {
				execv("/proc/self/exe", sub);
				_exit(127);
			}
			if (pid < 0 || waitpid(pid, &rc, 0) < 0)
				die("cannot run a store's pass");
			r = WIFEXITED(rc) ? WEXITSTATUS(rc) : 1;
		}
		return r;
	}
	bench_store = store;
	if (!strcmp(argv[1], "fleet")) {
		if (pairs < 1 || pairs > 250 || !(rate > 0 && rate <= 1e6) || !(seconds > 0 && seconds <= 3600))
			die("--pairs: 1 to 250; --rate: up to 1000000; --seconds: up to 3600");
		return run_fleet(pairs, rate, seconds, json_only);
	}
	if (!strcmp(argv[1], "log")) {
		if (!(rate > 0 && rate <= 100000) || !(seconds > 0 && seconds <= 3600))
			die("--rate: up to 100000; --seconds: up to 3600");
		return run_log(rate, seconds, json_only);
	}
	if (!strcmp(argv[1], "failover")) {
		/* Node A holds all N, a process opens at most 20,000 files. */
		if (client_set && (clients < 100 || clients > 19000))
			die("--clients: 100 to 19000");
		return run_failover(client_set ? clients : 19000, json_only);
	}
	if (!strcmp(argv[1], "direct")) {
		if (pairs < 1 || pairs > 500 || !(rate > 0 && rate <= 1e6) || !(seconds > 0 && seconds <= 3600))
			die("--pairs: 1 to 500; --rate: up to 1000000; --seconds: up to 3600");
		return run_direct(pairs, rate, throughput > 0 ? throughput : seconds, find_max,
		                  throughput > 0 ? window : 0, json_only);
	}
	if (!strcmp(argv[1], "abuse")) {
		if (!(seconds > 0 && seconds <= 3600))
			die("--seconds: up to 3600");
		for (i = 1; only && i < ABUSE_PHASES && strcmp(only, abuse_phases[i].key); i++)
			;
		if (only && (i == ABUSE_PHASES || abuse_phases[i].kind == ATTACK_NONE))
			die("--only: login_flood, slow_sockets, costly_frames or pipelining");
		return run_abuse(seconds_set ? seconds : 10, quick, only, trace_file, json_only);
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
