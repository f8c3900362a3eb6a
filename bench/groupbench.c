/* groupbench.c - what one message to a big group costs.
 *
 *   groupbench [--server HOST:PORT] [--members N] [--online K] [--messages M]
 *
 * Against a running server (start it with --fast-password-hashing and
 * --rate-limit 0 so that setup is quick and the budget does not interfere),
 * it registers N users, connects K of them, makes one group of all N, and
 * then, for M messages from one member:
 *   - the sender's ack latency, beside the same for a direct chat;
 *   - the time from send to the last online member's delivery;
 *   - a receipt storm: every online member says delivered and read for the
 *     message (2 frames each); the store's row writes and commits (fsyncs)
 *     it caused, from /metrics, and the time until the sender's read count
 *     reaches K - 1.
 * Prints a table and one JSON object. Timings are wall-clock on this
 * machine; run it twice and compare medians, never a single figure. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "pclient.h"

#define TIMEOUT 30000

static char host[256] = "127.0.0.1";
static int port = 8080;

typedef struct user {
	int64_t id;
	char token[64];
	pc_conn_t *ws;
} user_t;

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void die(const char *what)
{
	fprintf(stderr, "groupbench: %s\n", what);
	exit(1);
}

static json_t *http_json(pc_conn_t *c, const char *method, const char *path, const char *token,
                         const char *body, int expect)
{
	pc_response_t res;
	json_t *j;

	if (pc_http(c, method, path, token, body, &res, TIMEOUT) < 0)
		die("no HTTP answer");
	if (res.status != expect) {
		fprintf(stderr, "groupbench: %s %s: %d %s\n", method, path, res.status, res.body);
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
	pc_conn_t *c = pc_connect(host, port);
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

/* CPU time of process pid in microseconds, or -1: the sum over its
 * threads of schedstat's time on CPU (nanoseconds, unlike /proc/PID/stat's
 * 10 ms ticks). */
static double cpu_us(int pid)
{
	char path[64], sub[400];
	struct dirent *d;
	double total = 0;
	DIR *dir;

	if (pid <= 0)
		return -1;
	snprintf(path, sizeof path, "/proc/%d/task", pid);
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

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
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

int main(int argc, char **argv)
{
	int members = 1024, online = 800, messages = 20, batch = 1, storms = 0, i, m, pid = 0;
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

	for (i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--server")) {
			char *colon = strrchr(argv[i + 1], ':');
			if (!colon)
				die("--server wants HOST:PORT");
			snprintf(host, sizeof host, "%.*s", (int)(colon - argv[i + 1]), argv[i + 1]);
			port = atoi(colon + 1);
		} else if (!strcmp(argv[i], "--members")) {
			members = atoi(argv[i + 1]);
		} else if (!strcmp(argv[i], "--online")) {
			online = atoi(argv[i + 1]);
		} else if (!strcmp(argv[i], "--batch")) {
			batch = atoi(argv[i + 1]);
		} else if (!strcmp(argv[i], "--pid")) {
			pid = atoi(argv[i + 1]);
		} else if (!strcmp(argv[i], "--messages")) {
			messages = atoi(argv[i + 1]);
		} else {
			die("usage: groupbench [--server HOST:PORT] [--members N] [--online K] [--messages M] "
			    "[--pid SERVER_PID]");
		}
	}
	if (members < 3 || members > 1024 || online < 2 || online > members || messages < 1 ||
	    batch < 1 || batch > messages)
		die("need 3 <= members <= 1024, 2 <= online <= members, 1 <= batch <= messages");

	/* Set-up, not timed. */
	u = calloc((size_t)members, sizeof *u);
	if (!(http = pc_connect(host, port)))
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
		if (!(u[i].ws = pc_connect(host, port)) || pc_ws_open(u[i].ws, "/chat/v1/ws", u[i].token, NULL, TIMEOUT) < 0)
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
	printf("  send -> last online member p50 %.2f ms  p99 %.2f ms\n", pct(deliver, messages, .5),
	       pct(deliver, messages, .99));
	printf("  storm -> sender's read count complete  p50 %.0f ms (counts come at most once a second)\n",
	       pct(converge, storms, .5));
	if (cpu_group >= 0)
		printf("  server CPU per message: direct %.0f us; group %.0f us to deliver (%.2f us per "
		       "delivery) + %.0f us for its receipts\n",
		       cpu_direct, cpu_group, cpu_group / (online - 1), cpu_storm);
	printf("{\"scenario\":\"group\",\"members\":%d,\"online\":%d,\"messages\":%d,\"batch\":%d,"
	       "\"receipt_frames_per_message\":%.1f,\"store_rows_per_message\":%.1f,"
	       "\"store_commits_per_message\":%.1f,\"ack_direct_p50_ms\":%.3f,\"ack_group_p50_ms\":%.3f,"
	       "\"deliver_last_p50_ms\":%.3f,\"deliver_last_p99_ms\":%.3f,\"counts_converge_p50_ms\":%.0f,\"cpu_us_direct_message\":%.0f,\"cpu_us_group_message\":%.0f,\"cpu_us_group_storm\":%.0f}\n",
	       members, online, messages, batch, 2.0 * (online - 1) / batch, rows_per_msg, commits_per_msg,
	       pct(ack_direct, messages, .5), pct(ack_group, messages, .5), pct(deliver, messages, .5),
	       pct(deliver, messages, .99), pct(converge, storms, .5), cpu_direct, cpu_group, cpu_storm);
	for (i = 0; i < online; i++)
		pc_close(u[i].ws);
	pc_close(http);
	return 0;
}
