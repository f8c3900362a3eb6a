/* integ_abuse.c - attacks on the node, each with an attacker and a
 * bystander: the attack is refused with the protocol's clear error, and
 * the bystander is served normally while it runs.
 *
 * Attackers connect from 127.0.0.2 and up, bystanders from 127.0.0.1, so
 * that limits kept per client address can tell them apart. */
#include "harness.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* True when the peer closes c within ms (reading and dropping any bytes). */
static int closes_within(pc_conn_t *c, int ms)
{
	int64_t until = now_ms() + ms;
	char buf[4096];

	while (now_ms() < until) {
		struct pollfd p = {.fd = pc_fd(c), .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, (int)(until - now_ms())) <= 0)
			continue;
		if ((n = read(pc_fd(c), buf, sizeof buf)) <= 0)
			return 1;
	}
	return 0;
}

/* The server of the test at hand; the teardown stops it whatever
 * happened, so a failed assertion leaves no server behind. */
static hx_server_t S;

static int stop_server(void **state)
{
	(void)state;
	hx_kill(&S);
	return 0;
}

#define START(...) HX_START(&S, __VA_ARGS__)

/* Waits until S has accepted n connections besides the one asking. */
static void wait_connections(int n)
{
	int64_t until = now_ms() + HX_TIMEOUT;

	while (hx_metric(&S, "parley_connections") < n + 1) {
		if (now_ms() > until)
			fail_msg("the server did not accept %d connections", n);
		usleep(10000);
	}
}

/* A bystander from 127.0.0.1 is answered at once. */
static void bystander_served(const hx_server_t *s)
{
	json_t *j;
	int st;

	j = hx_http(s->port, "GET", "/healthz", NULL, NULL, &st);
	assert_int_equal(st, 200);
	json_decref(j);
}

/* A request head trickled a byte every 200 ms is answered 408 once its
 * time from its first byte is up, not kept open by the trickle; a
 * connection that sends nothing is closed as soon. */
static void test_trickled_request(void **state)
{
	const char head[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
	pc_conn_t *slow, *silent;
	pc_response_t res;
	int64_t start;
	int i;

	(void)state;
	START("--request-timeout", "2");
	slow = pc_connect_from("127.0.0.2", "127.0.0.1", S.port);
	silent = pc_connect_from("127.0.0.2", "127.0.0.1", S.port);
	assert_non_null(slow);
	assert_non_null(silent);
	start = now_ms();
	assert_int_equal(pc_send_raw(slow, head, sizeof head - 1), 0);
	for (i = 0; i < 30; i++) {
		struct pollfd p = {.fd = pc_fd(slow), .events = POLLIN};
		if (poll(&p, 1, 200) > 0)
			break; /* the answer has come */
		if (pc_send_raw(slow, "a", 1) < 0)
			break;
		bystander_served(&S);
	}
	assert_int_equal(pc_read_response(slow, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 408);
	assert_non_null(strstr(res.body, "\"bad_request\""));
	/* Two seconds from its first byte (the wheel ticks in seconds). */
	assert_true(now_ms() - start < 4500);
	assert_true(closes_within(slow, 3000));
	assert_true(closes_within(silent, 3000));
	pc_response_free(&res);
	pc_close(slow);
	pc_close(silent);
	hx_finish(&S);
}

/* Fifty sockets trickling a request head hold about what they have sent,
 * not a read-sized buffer each. */
static void test_trickle_memory(void **state)
{
	enum { N = 50, BYTES = 200 };
	const char head[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
	pc_conn_t *c[N];
	double held;
	int i, k;

	(void)state;
	START("--request-timeout", "60");
	for (i = 0; i < N; i++) {
		assert_non_null(c[i] = pc_connect_from("127.0.0.2", "127.0.0.1", S.port));
		assert_int_equal(pc_send_raw(c[i], head, sizeof head - 1), 0);
	}
	for (k = 0; k < BYTES; k++) {
		for (i = 0; i < N; i++)
			assert_int_equal(pc_send_raw(c[i], "a", 1), 0);
		if (k % 50 == 0)
			usleep(20000); /* let the server read them apart */
	}
	usleep(200000);
	held = hx_metric(&S, "parley_partial_input_bytes");
	/* Each holds its ~240 bytes, rounded up, plus a quarter. */
	assert_true(held > 0);
	assert_true(held <= N * 512.0);
	bystander_served(&S);
	for (i = 0; i < N; i++)
		pc_close(c[i]);
	usleep(200000);
	assert_true(hx_metric(&S, "parley_partial_input_bytes") == 0);
	hx_finish(&S);
}

/* With the node's bound on partial input at 1 MiB, sockets that each hold
 * 30 KB of an unfinished body fill it: the ones past it are answered 503
 * at once, memory stays under the bound, and a bystander's requests, which
 * arrive whole, are served. */
static void test_partial_memory_bound(void **state)
{
	enum { N = 60 };
	const char head[] = "POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	                    "Content-Length: 60000\r\n\r\n";
	static char part[30000];
	pc_conn_t *c[N];
	hx_user_t u;
	int i, refused = 0;

	(void)state;
	memset(part, ' ', sizeof part);
	START("--max-partial-memory", "1048576");
	for (i = 0; i < N; i++) {
		assert_non_null(c[i] = pc_connect_from("127.0.0.2", "127.0.0.1", S.port));
		assert_int_equal(pc_send_raw(c[i], head, sizeof head - 1), 0);
		pc_send_raw(c[i], part, sizeof part); /* may fail once refused */
	}
	usleep(300000);
	assert_true(hx_metric(&S, "parley_partial_input_bytes") <= 1048576);
	for (i = 0; i < N; i++) {
		struct pollfd p = {.fd = pc_fd(c[i]), .events = POLLIN};
		pc_response_t res;

		if (poll(&p, 1, 0) <= 0)
			continue;
		if (pc_read_response(c[i], &res, HX_TIMEOUT) == 0) {
			assert_int_equal(res.status, 503);
			assert_non_null(strstr(res.body, "\"unavailable\""));
			refused++;
			pc_response_free(&res);
		}
	}
	assert_true(refused >= N - 1048576 / 30000);
	hx_user(S.port, "bystander", &u);
	bystander_served(&S);
	for (i = 0; i < N; i++)
		pc_close(c[i]);
	hx_finish(&S);
}

/* Pipelined requests for a large file, none read for a while: every
 * answer arrives, in order, and none is treated as a slow reader (an
 * HTTP client gets one answer at a time while earlier ones are unsent). */
static void test_pipelined_big_answers(void **state)
{
	enum { N = 60 };
	const char req[] = "GET /js/app.js HTTP/1.1\r\nHost: x\r\n\r\n";
	static char all[N * (sizeof req - 1)];
	pc_conn_t *c;
	size_t first = 0;
	int i;

	(void)state;
	START("--request-timeout", "60");
	for (i = 0; i < N; i++)
		memcpy(all + (size_t)i * (sizeof req - 1), req, sizeof req - 1);
	assert_non_null(c = pc_connect_from("127.0.0.2", "127.0.0.1", S.port));
	assert_int_equal(pc_send_raw(c, all, sizeof all), 0);
	usleep(500000); /* well over the outbound bound of answers wait unread */
	bystander_served(&S);
	for (i = 0; i < N; i++) {
		pc_response_t res;

		assert_int_equal(pc_read_response(c, &res, HX_TIMEOUT), 0);
		assert_int_equal(res.status, 200);
		if (i == 0)
			first = res.body_len;
		assert_true(res.body_len == first && first > 20000);
		pc_response_free(&res);
	}
	pc_close(c);
	hx_finish(&S);
}

/* Sends a login for name with password on a new connection from source,
 * with extra header lines (or ""), and leaves the answer unread. */
static pc_conn_t *login_send(const char *source, int port, const char *name, const char *password,
                             const char *headers)
{
	char body[192], req[768];
	pc_conn_t *c;
	int n;

	snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"%s\"}", name, password);
	n = snprintf(req, sizeof req,
	             "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	             "%sContent-Length: %zu\r\n\r\n%s",
	             headers, strlen(body), body);
	assert_non_null(c = pc_connect_from(source, "127.0.0.1", port));
	assert_int_equal(pc_send_raw(c, req, (size_t)n), 0);
	return c;
}

/* The status of the answer on c, which is then closed; *retry gets the
 * error's retry_after_ms when there is one. */
static int answer_status(pc_conn_t *c, int64_t *retry)
{
	pc_response_t res;
	json_t *j, *e;
	int st;

	assert_int_equal(pc_read_response(c, &res, 60000), 0);
	st = res.status;
	if (retry) {
		*retry = 0;
		j = json_loadb(res.body, res.body_len, 0, NULL);
		if ((e = json_object_get(json_object_get(j, "error"), "retry_after_ms")) != NULL)
			*retry = json_integer_value(e);
		json_decref(j);
	}
	pc_response_free(&res);
	pc_close(c);
	return st;
}

static int login_status(const char *source, int port, const char *name, const char *password,
                        const char *headers, int64_t *retry)
{
	return answer_status(login_send(source, port, name, password, headers), retry);
}

/* One address with no account sends 100 concurrent logins for random
 * names (each a real Argon2id hash): it holds only a few places in the
 * hashing queue, the rest of its flood is refused at once, and a real
 * user's login from another address succeeds while the flood runs. With
 * many attacking addresses the queue fills, and the newcomer still gets
 * in by pushing out the newest job of whoever holds the most. */
static void test_login_flood_fair(void **state)
{
	enum { FLOOD = 100, ADDRS = 20 };
	pc_conn_t *c[FLOOD], *owner;
	hx_user_t u;
	char name[32], src[32];
	int i, refused = 0;

	(void)state;
	START("--login-rate", "0");
	hx_user(S.port, "floodvictim", &u);
	for (i = 0; i < FLOOD; i++) {
		snprintf(name, sizeof name, "nobody%d", i);
		/* Half from one address, half spread over twenty. */
		snprintf(src, sizeof src, "127.0.0.%d", i < FLOOD / 2 ? 2 : 3 + i % ADDRS);
		c[i] = login_send(src, S.port, name, "wrong password", "");
	}
	owner = login_send("127.0.0.1", S.port, u.name, HX_PASSWORD, "");
	assert_int_equal(answer_status(owner, NULL), 201);
	for (i = 0; i < FLOOD; i++) {
		int st = answer_status(c[i], NULL);
		if (st == 503)
			refused++;
		else if (st != 401)
			fail_msg("flood login %d: %d", i, st);
	}
	if (refused < FLOOD / 2 - 10)
		fail_msg("only %d of %d flood logins were refused at once", refused, FLOOD);
}

/* Eight addresses fill the hashing queue with logins for names with no
 * account, four each; then the owner logs in from the address it logged
 * in from before: it goes ahead of the queue, answered after at most the
 * hash already running, where taking turns by address would put it after
 * one hash per flooding address. The same owner from an address never
 * seen takes its turn. */
static void test_known_address_goes_first(void **state)
{
	enum { ADDRS = 8, EACH = 4, FLOOD = ADDRS * EACH };
	pc_conn_t *c[FLOOD], *owner;
	hx_user_t u;
	char name[32], src[32];
	int i, before = 0;

	(void)state;
	START("--login-rate", "0");
	hx_user(S.port, "regular", &u); /* logs in from 127.0.0.1 */
	for (i = 0; i < FLOOD; i++) {
		snprintf(name, sizeof name, "nobody%d", i);
		snprintf(src, sizeof src, "127.0.0.%d", 2 + i % ADDRS);
		c[i] = login_send(src, S.port, name, "wrong password", "");
	}
	while (hx_metric(&S, "parley_hash_queue_jobs") < FLOOD - 2)
		usleep(2000);
	owner = login_send("127.0.0.1", S.port, u.name, HX_PASSWORD, "");
	assert_int_equal(answer_status(owner, NULL), 201);
	for (i = 0; i < FLOOD; i++) {
		struct pollfd p = {.fd = pc_fd(c[i]), .events = POLLIN};
		before += poll(&p, 1, 0) > 0;
	}
	if (before > 3)
		fail_msg("%d flood logins were answered before the owner's from its known address", before);
	for (i = 0; i < FLOOD; i++)
		assert_int_equal(answer_status(c[i], NULL), 401);
}

/* Per-address budgets, checked before any hashing: past its logins a
 * minute an address gets 429 with retry_after_ms; another address is not
 * slowed; sign-ups likewise. */
static void test_login_and_signup_budgets(void **state)
{
	hx_user_t u;
	int64_t retry;
	char body[128];
	json_t *j;
	int i, st;

	(void)state;
	START("--login-rate", "5", "--signup-rate", "3");
	hx_user(S.port, "budgeted", &u); /* from 127.0.0.1: one sign-up, one login */
	for (i = 0; i < 5; i++)
		assert_int_equal(login_status("127.0.0.2", S.port, u.name, "wrong password", "", NULL), 401);
	assert_int_equal(login_status("127.0.0.2", S.port, u.name, HX_PASSWORD, "", &retry), 429);
	assert_true(retry > 0 && retry <= 12000); /* a login every 12 s refills */
	assert_int_equal(login_status("127.0.0.1", S.port, u.name, HX_PASSWORD, "", NULL), 201);
	for (i = 0; i < 4; i++) {
		pc_conn_t *c = pc_connect_from("127.0.0.2", "127.0.0.1", S.port);
		pc_response_t res;
		snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"whatever1\"}", hx_name("spam"));
		assert_non_null(c);
		assert_int_equal(pc_http(c, "POST", "/api/v1/users", NULL, body, &res, HX_TIMEOUT), 0);
		assert_int_equal(res.status, i < 3 ? 201 : 429);
		pc_response_free(&res);
		pc_close(c);
	}
	/* 127.0.0.1 has one sign-up left of its three. */
	snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"whatever1\"}", hx_name("fine"));
	j = hx_http(S.port, "POST", "/api/v1/users", NULL, body, &st);
	assert_int_equal(st, 201);
	json_decref(j);
}

/* A stranger's wrong passwords from another address do not lock the owner
 * out: the backoff is kept per (username, address). */
static void test_stranger_cannot_lock_out(void **state)
{
	hx_user_t u;
	int64_t retry;
	int i;

	(void)state;
	START("--login-rate", "0");
	hx_user(S.port, "lockme", &u);
	for (i = 0; i < 6; i++)
		assert_int_equal(login_status("127.0.0.2", S.port, u.name, "wrong password", "", NULL), 401);
	assert_int_equal(login_status("127.0.0.2", S.port, u.name, HX_PASSWORD, "", &retry), 429);
	assert_true(retry > 0);
	assert_int_equal(login_status("127.0.0.1", S.port, u.name, HX_PASSWORD, "", NULL), 201);
}

/* Connections per address: past the cap of unfinished connections, and
 * past the cap of all connections, a new one is answered 429 at once; a
 * bystander's address is not counted with the attacker's. */
static void test_address_connection_caps(void **state)
{
	enum { PENDING = 5, TOTAL = 12 };
	pc_conn_t *c[TOTAL + 1], *extra;
	pc_response_t res;
	hx_user_t u;
	int i;

	(void)state;
	START("--max-address-pending", "5", "--max-address-connections", "12");
	hx_user(S.port, "hoarder", &u);
	for (i = 0; i < PENDING; i++)
		assert_non_null(c[i] = pc_connect_from("127.0.0.2", "127.0.0.1", S.port));
	/* Accepted (two I/O threads accept apart; the sixth must come last). */
	wait_connections(PENDING);
	assert_non_null(extra = pc_connect_from("127.0.0.2", "127.0.0.1", S.port));
	assert_int_equal(pc_read_response(extra, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 429);
	assert_non_null(strstr(res.body, "\"rate_limited\""));
	pc_response_free(&res);
	pc_close(extra);
	bystander_served(&S);
	for (i = 0; i < PENDING; i++)
		pc_close(c[i]);
	usleep(100000);
	/* WebSockets count only against the total. */
	for (i = 0; i < TOTAL; i++) {
		assert_non_null(c[i] = pc_connect_from("127.0.0.2", "127.0.0.1", S.port));
		assert_int_equal(pc_ws_open(c[i], "/chat/v1/ws", u.token, NULL, HX_TIMEOUT), 0);
	}
	wait_connections(TOTAL);
	assert_non_null(extra = pc_connect_from("127.0.0.2", "127.0.0.1", S.port));
	assert_int_equal(pc_read_response(extra, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 429);
	pc_response_free(&res);
	pc_close(extra);
	bystander_served(&S);
	for (i = 0; i < TOTAL; i++)
		pc_close(c[i]);
}

/* Behind a trusted proxy the client is the one its X-Forwarded-For names;
 * a client that is not a trusted proxy cannot name another by sending the
 * header itself. */
static void test_forwarded_for(void **state)
{
	hx_user_t u;
	int i;

	(void)state;
	START("--trusted-proxies", "127.0.0.3", "--login-rate", "3");
	hx_user(S.port, "proxied", &u);
	for (i = 0; i < 3; i++)
		assert_int_equal(login_status("127.0.0.3", S.port, u.name, HX_PASSWORD,
		                              "X-Forwarded-For: 198.51.100.7\r\n", NULL), 201);
	assert_int_equal(login_status("127.0.0.3", S.port, u.name, HX_PASSWORD,
	                              "X-Forwarded-For: 198.51.100.7\r\n", NULL), 429);
	/* Another client behind the same proxy has a budget of its own; a
	 * spoofed entry to the left of the proxy's is the client's own text. */
	assert_int_equal(login_status("127.0.0.3", S.port, u.name, HX_PASSWORD,
	                              "X-Forwarded-For: 198.51.100.7, 198.51.100.8\r\n", NULL), 201);
	/* Not a trusted proxy: its header counts for nothing. */
	for (i = 0; i < 3; i++) {
		char h[64];
		snprintf(h, sizeof h, "X-Forwarded-For: 203.0.113.%d\r\n", i + 1);
		assert_int_equal(login_status("127.0.0.2", S.port, u.name, HX_PASSWORD, h, NULL), 201);
	}
	assert_int_equal(login_status("127.0.0.2", S.port, u.name, HX_PASSWORD,
	                              "X-Forwarded-For: 203.0.113.99\r\n", NULL), 429);
}

/* With --proxy-protocol, a trusted proxy's connection begins with a PROXY
 * header naming the client, and per-address caps count that client; a
 * trusted peer without the header is dropped, and an untrusted peer's
 * header is just a malformed request. */
static void test_proxy_protocol(void **state)
{
	const char v1a[] = "PROXY TCP4 198.51.100.7 127.0.0.1 40000 8080\r\n";
	const char v1b[] = "PROXY TCP4 198.51.100.8 127.0.0.1 40001 8080\r\n";
	const char get[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
	pc_conn_t *a[2], *c;
	pc_response_t res;
	int i;

	(void)state;
	START("--trusted-proxies", "127.0.0.3", "--proxy-protocol", "--max-address-pending", "2");
	for (i = 0; i < 2; i++) {
		assert_non_null(a[i] = pc_connect_from("127.0.0.3", "127.0.0.1", S.port));
		assert_int_equal(pc_send_raw(a[i], v1a, sizeof v1a - 1), 0);
	}
	wait_connections(2);
	usleep(50000); /* and their headers read */
	/* Both are 198.51.100.7's: a third is refused, another client's is not. */
	assert_non_null(c = pc_connect_from("127.0.0.3", "127.0.0.1", S.port));
	assert_int_equal(pc_send_raw(c, v1a, sizeof v1a - 1), 0);
	assert_int_equal(pc_read_response(c, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 429);
	pc_response_free(&res);
	pc_close(c);
	assert_non_null(c = pc_connect_from("127.0.0.3", "127.0.0.1", S.port));
	assert_int_equal(pc_send_raw(c, v1b, sizeof v1b - 1), 0);
	assert_int_equal(pc_send_raw(c, get, sizeof get - 1), 0);
	assert_int_equal(pc_read_response(c, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 200);
	pc_response_free(&res);
	pc_close(c);
	/* A trusted peer that sends no header is dropped. */
	assert_non_null(c = pc_connect_from("127.0.0.3", "127.0.0.1", S.port));
	assert_int_equal(pc_send_raw(c, get, sizeof get - 1), 0);
	assert_true(closes_within(c, HX_TIMEOUT));
	pc_close(c);
	/* An untrusted one that sends it has sent a malformed request. */
	assert_non_null(c = pc_connect_from("127.0.0.2", "127.0.0.1", S.port));
	assert_int_equal(pc_send_raw(c, v1a, sizeof v1a - 1), 0);
	assert_int_equal(pc_read_response(c, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 400);
	pc_response_free(&res);
	pc_close(c);
	bystander_served(&S);
	for (i = 0; i < 2; i++)
		pc_close(a[i]);
}

/* The kernel's arrival time of the first unread byte on fd (SO_TIMESTAMPNS,
 * set before it came), in ns of CLOCK_REALTIME; waits up to ms for it; -1
 * when none came. The byte stays unread. */
static int64_t arrival_ns(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char byte, ctl[CMSG_SPACE(sizeof(struct timespec))];
	struct iovec iov = {&byte, 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
	struct cmsghdr *cm;

	if (poll(&p, 1, ms) <= 0 || recvmsg(fd, &m, MSG_PEEK | MSG_DONTWAIT) <= 0)
		return -1;
	for (cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
			struct timespec ts;
			memcpy(&ts, CMSG_DATA(cm), sizeof ts);
			return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
		}
	return -1;
}

static void stamp_arrivals(int fd)
{
	int on = 1;

	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on), 0);
}

/* One client's backlog never delays another's: an attacker queues 250
 * costly requests (512 lookups each) on 250 connections, and a
 * bystander's request, sent once many of them wait, is answered while
 * most of those still wait: it waited for about one job a worker, not for
 * all of them. Told by order, not time: how many of the attacker's answers
 * arrived between the bystander's request and its answer, by the kernel's
 * arrival stamps (so that this process being descheduled meanwhile, on a
 * busy machine, changes nothing). (How many get queued depends on how
 * fast this process sends next to how fast the workers work, so the bound
 * is on the jobs seen waiting.) */
static void test_worker_fairness(void **state)
{
	enum { FLOOD = 250 };
	static char req[256 * 17 + 256];
	pc_conn_t *c[FLOOD], *bc;
	pc_response_t res;
	hx_user_t att, by;
	char breq[512];
	size_t n;
	int i, between = 0, bn;
	double queued = 0;
	int64_t until, sent_ns, answered_ns;
	struct timespec ts;

	(void)state;
	START("--work-rate", "0", "--max-address-pending", "0");
	hx_user(S.port, "flooder", &att);
	hx_user(S.port, "bystander", &by);
	n = (size_t)snprintf(req, sizeof req, "GET /api/v1/users?ids=");
	for (i = 0; i < 256; i++)
		n += (size_t)snprintf(req + n, sizeof req - n, "%s%d", i ? "," : "", 100000 + i);
	n += (size_t)snprintf(req + n, sizeof req - n, " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n",
	                      att.token);
	for (i = 0; i < FLOOD; i++) {
		assert_non_null(c[i] = pc_connect_from("127.0.0.2", "127.0.0.1", S.port));
		stamp_arrivals(pc_fd(c[i]));
		assert_int_equal(pc_send_raw(c[i], req, n), 0);
	}
	for (until = now_ms() + 20000; (queued = hx_metric(&S, "parley_worker_queue_jobs")) < FLOOD / 4;) {
		if (now_ms() > until)
			fail_msg("the flood never had %d jobs waiting (at most %.0f): the premise failed", FLOOD / 4,
			         queued);
		usleep(1000);
	}
	assert_non_null(bc = pc_connect("127.0.0.1", S.port));
	stamp_arrivals(pc_fd(bc));
	bn = snprintf(breq, sizeof breq, "GET /api/v1/conversations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n",
	              by.token);
	clock_gettime(CLOCK_REALTIME, &ts);
	sent_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	assert_int_equal(pc_send_raw(bc, breq, (size_t)bn), 0);
	assert_true((answered_ns = arrival_ns(pc_fd(bc), HX_TIMEOUT)) > 0);
	assert_int_equal(pc_read_response(bc, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 200);
	pc_response_free(&res);
	pc_close(bc);
	for (i = 0; i < FLOOD; i++) {
		int64_t t = arrival_ns(pc_fd(c[i]), HX_TIMEOUT);
		assert_true(t > 0);
		between += t > sent_ns && t < answered_ns;
	}
	if (between > queued / 2)
		fail_msg("%d of the %.0f flood requests waiting were answered before the bystander's", between, queued);
	printf("# %d of the %.0f waiting were answered before the bystander's\n", between, queued);
	for (i = 0; i < FLOOD; i++) {
		assert_int_equal(pc_read_response(c[i], &res, HX_TIMEOUT), 0);
		assert_true(res.status == 200 || res.status == 503);
		pc_response_free(&res);
		pc_close(c[i]);
	}
}

/* A WebSocket that begins a message and never finishes it, keeping the
 * connection alive with pings, is closed once the message's time is up
 * (1013); and one address holds at most a sixteenth of the node's bound
 * on unfinished input, so a bystander's message in pieces still fits. */
static void test_unfinished_ws_message(void **state)
{
	static char chunk[40000];
	hx_user_t att, by;
	pc_conn_t *a[3], *b;
	pc_frame_t f;
	int i, closed = 0, code;

	(void)state;
	START("--request-timeout", "2", "--max-partial-memory", "1048576");
	hx_user(S.port, "fragmenter", &att);
	hx_user(S.port, "bystander", &by);
	memset(chunk, 'x', sizeof chunk);
	memcpy(chunk, "{\"type\":\"ping\",\"ref\":\"", 22);
	/* Three sockets of one address each begin a 40 KB message: the
	 * address's share (64 KiB) takes the first only. */
	for (i = 0; i < 3; i++) {
		assert_non_null(a[i] = pc_connect_from("127.0.0.2", "127.0.0.1", S.port));
		assert_int_equal(pc_ws_open(a[i], "/chat/v1/ws", att.token, NULL, HX_TIMEOUT), 0);
		assert_int_equal(pc_ws_recv(a[i], &f, HX_TIMEOUT), 0); /* ready */
		pc_frame_free(&f);
		assert_int_equal(pc_ws_send_frame(a[i], 0, 1, chunk, sizeof chunk, 1, 0), 0);
	}
	/* The bystander's message in two pieces is served meanwhile. */
	assert_non_null(b = hx_ws(S.port, &by));
	assert_int_equal(pc_ws_send_frame(b, 0, 1, "{\"type\":\"ping\",", 15, 1, 0), 0);
	assert_int_equal(pc_ws_send_frame(b, 1, 0, "\"ref\":7}", 8, 1, 0), 0);
	json_decref(hx_expect(b, "pong"));
	/* Every attacker socket closes with 1013: over the share at once,
	 * or when its message's time is up, pings or not. */
	for (i = 0; i < 3; i++) {
		int64_t until = now_ms() + 8000;
		while (now_ms() < until) {
			int r;
			pc_ws_send_frame(a[i], 1, 9, "k", 1, 1, 0); /* a ping: still here */
			r = pc_ws_recv(a[i], &f, 500);
			if (r == PC_TIMEOUT)
				continue;
			if (r < 0)
				break;
			code = f.opcode == 8 && f.len >= 2 ? (f.data[0] << 8) | f.data[1] : 0;
			pc_frame_free(&f);
			if (code) {
				assert_int_equal(code, 1013);
				closed++;
				break;
			}
		}
	}
	assert_int_equal(closed, 3);
	for (i = 0; i < 3; i++)
		pc_close(a[i]);
	pc_close(b);
}

/* A user's WebSockets together are read at the read rate: frames past it
 * wait, unparsed, while the node does not read them (the node counts each
 * pause), and then are all answered, in order, none lost; the connections
 * are not taken for silent or slow meanwhile (the request timeout is
 * shorter than the pause); another user is served as usual. */
static void test_read_rate(void **state)
{
	enum { CONNS = 2, FRAMES = 6, PAD = 1000 };
	static char frame[PAD + 64];
	hx_user_t st, by;
	pc_conn_t *s[CONNS], *b;
	int i, k;

	(void)state;
	START("--read-rate", "3000", "--read-burst", "3000", "--request-timeout", "2");
	hx_user(S.port, "streamer", &st);
	hx_user(S.port, "bystander", &by);
	for (i = 0; i < CONNS; i++)
		assert_non_null(s[i] = hx_ws(S.port, &st));
	assert_non_null(b = hx_ws(S.port, &by));
	/* 12 KB at once from one user: four times its burst. */
	for (k = 0; k < FRAMES; k++)
		for (i = 0; i < CONNS; i++) {
			int n = snprintf(frame, sizeof frame, "{\"type\":\"ping\",\"ref\":\"%d-%d-", i, k);
			memset(frame + n, 'x', PAD);
			memcpy(frame + n + PAD, "\"}", 3);
			assert_int_equal(pc_ws_send_text(s[i], frame), 0);
		}
	assert_int_equal(pc_ws_send_text(b, "{\"type\":\"ping\",\"ref\":1}"), 0);
	json_decref(hx_expect(b, "pong"));
	for (i = 0; i < CONNS; i++)
		for (k = 0; k < FRAMES; k++) {
			json_t *p = hx_expect(s[i], "pong");
			char want[32];
			const char *ref;

			assert_non_null(p);
			ref = json_string_value(json_object_get(p, "ref"));
			snprintf(want, sizeof want, "%d-%d-", i, k);
			assert_non_null(ref);
			assert_memory_equal(ref, want, strlen(want));
			json_decref(p);
		}
	/* Counted once the frames are answered, not when the bystander is:
	 * the node may serve the bystander before it reaches the streamer's
	 * frames past the burst (it did so once in CI, under ASan). */
	assert_true(hx_metric(&S, "parley_websockets_throttled_total") >= 1);
	for (i = 0; i < CONNS; i++)
		pc_close(s[i]);
	pc_close(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_trickled_request, stop_server),
		cmocka_unit_test_teardown(test_trickle_memory, stop_server),
		cmocka_unit_test_teardown(test_partial_memory_bound, stop_server),
		cmocka_unit_test_teardown(test_pipelined_big_answers, stop_server),
		cmocka_unit_test_teardown(test_login_flood_fair, stop_server),
		cmocka_unit_test_teardown(test_known_address_goes_first, stop_server),
		cmocka_unit_test_teardown(test_login_and_signup_budgets, stop_server),
		cmocka_unit_test_teardown(test_stranger_cannot_lock_out, stop_server),
		cmocka_unit_test_teardown(test_address_connection_caps, stop_server),
		cmocka_unit_test_teardown(test_forwarded_for, stop_server),
		cmocka_unit_test_teardown(test_proxy_protocol, stop_server),
		cmocka_unit_test_teardown(test_worker_fairness, stop_server),
		cmocka_unit_test_teardown(test_unfinished_ws_message, stop_server),
		cmocka_unit_test_teardown(test_read_rate, stop_server),
	};

	hx_filter();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
