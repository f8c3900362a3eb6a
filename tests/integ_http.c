/* integ_http.c - the HTTP side against the real binary: keep-alive and
 * pipelining, the caps on request line, headers and body, malformed
 * requests, and every REST endpoint's refusals (bad input, wrong or
 * missing tokens, non-members) -- each answered with the protocol's error
 * and none changing stored data. */
#include "harness.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static hx_server_t srv;

static int setup(void **state)
{
	(void)state;
	return hx_start(&srv, NULL, NULL);
}

static int teardown(void **state)
{
	(void)state;
	hx_finish(&srv);
	return 0;
}

/* Sends raw bytes on a new connection, returns the response status and
 * checks that the server then closes the connection when close is set. */
static int raw_status(const char *bytes, size_t len, int expect_close, char *code, size_t codecap)
{
	pc_conn_t *c = pc_connect("127.0.0.1", srv.port);
	pc_response_t res;
	pc_frame_t f;
	int st;

	assert_non_null(c);
	assert_int_equal(pc_send_raw(c, bytes, len), 0);
	assert_int_equal(pc_read_response(c, &res, HX_TIMEOUT), 0);
	st = res.status;
	if (code) {
		json_t *j = json_loadb(res.body, res.body_len, 0, NULL);
		json_t *e = json_object_get(j, "error");
		assert_non_null(e);
		snprintf(code, codecap, "%s", hx_str(e, "code"));
		assert_true(strlen(hx_str(e, "message")) > 0);
		json_decref(j);
	}
	if (expect_close) /* the next read sees the end, not another answer */
		assert_int_equal(pc_ws_recv(c, &f, HX_TIMEOUT), PC_CLOSED);
	pc_response_free(&res);
	pc_close(c);
	return st;
}

static int raw_str(const char *request, int expect_close, char *code, size_t codecap)
{
	return raw_status(request, strlen(request), expect_close, code, codecap);
}

static void test_healthz_and_keepalive(void **state)
{
	pc_conn_t *c = pc_connect("127.0.0.1", srv.port);
	pc_response_t res;
	const char two[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
	int i;

	(void)state;
	assert_non_null(c);
	for (i = 0; i < 3; i++) { /* one connection, several requests */
		assert_int_equal(pc_http(c, "GET", "/healthz", NULL, NULL, &res, HX_TIMEOUT), 0);
		assert_int_equal(res.status, 200);
		assert_string_equal(res.body, "{\"status\":\"ok\"}");
		pc_response_free(&res);
	}
	/* Two pipelined requests in one write: two answers, in order. */
	assert_int_equal(pc_send_raw(c, two, sizeof two - 1), 0);
	for (i = 0; i < 2; i++) {
		assert_int_equal(pc_read_response(c, &res, HX_TIMEOUT), 0);
		assert_int_equal(res.status, 200);
		pc_response_free(&res);
	}
	pc_close(c);
}

/* The value of one metric line of a /metrics page, or -1. */
static double metric_of(const char *page, const char *name)
{
	char key[96];
	const char *p;

	snprintf(key, sizeof key, "\n%s ", name);
	return (p = strstr(page, key)) ? strtod(p + strlen(key), NULL) : -1;
}

/* /metrics is the operator's: on the public listener it does not exist;
 * the operator listener serves it (and /healthz) and nothing else. */
static void test_metrics(void **state)
{
	pc_conn_t *c = pc_connect("127.0.0.1", srv.port);
	pc_response_t res;
	char type[64];
	json_t *j;
	int st;

	(void)state;
	j = hx_http(srv.port, "GET", "/metrics", NULL, NULL, &st);
	assert_int_equal(st, 404);
	assert_string_equal(hx_str(json_object_get(j, "error"), "code"), "not_found");
	json_decref(j);
	j = hx_http(srv.admin_port, "GET", "/api/v1/conversations", NULL, NULL, &st);
	assert_int_equal(st, 404);
	json_decref(j);
	j = hx_http(srv.admin_port, "GET", "/healthz", NULL, NULL, &st);
	assert_int_equal(st, 200);
	json_decref(j);
	pc_close(c);
	c = pc_connect("127.0.0.1", srv.admin_port);
	assert_non_null(c);
	assert_int_equal(pc_http(c, "GET", "/metrics", NULL, NULL, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 200);
	assert_true(pc_response_header(&res, "Content-Type", type, sizeof type) > 0);
	assert_string_equal(type, "text/plain; version=0.0.4");
	/* This very connection is counted; the store holds its caches. */
	assert_true(metric_of(res.body, "parley_connections") >= 1);
	assert_true(metric_of(res.body, "parley_websockets") >= 0);
	assert_true(metric_of(res.body, "parley_store_commits_total") >= 0);
	/* An embedded store's page caches are this process's memory; a
	 * database server's are not (the PostgreSQL backend reports 0). */
	if (hx_store_is_dir(srv.store))
		assert_true(metric_of(res.body, "parley_store_memory_bytes") > 0);
	else
		assert_true(metric_of(res.body, "parley_store_memory_bytes") >= 0);
	pc_response_free(&res);
	pc_close(c);
}

/* Password guessing: five wrong passwords are answered 401; after the
 * sixth the username must wait (429 rate_limited, Retry-After, and
 * retry_after_ms), even with the right password; then the right password
 * works and forgets the count. Another user is never slowed. */
static void test_login_backoff(void **state)
{
	hx_user_t u, other;
	char wrong[128], right[128], header[32];
	pc_conn_t *c;
	pc_response_t res;
	json_t *j;
	int i, st;

	(void)state;
	hx_user(srv.port, "guessme", &u);
	hx_user(srv.port, "bystander", &other);
	snprintf(wrong, sizeof wrong, "{\"username\":\"%s\",\"password\":\"not-the-password\"}", u.name);
	snprintf(right, sizeof right, "{\"username\":\"%s\",\"password\":\"%s\"}", u.name, HX_PASSWORD);
	for (i = 0; i < 6; i++) {
		j = hx_http(srv.port, "POST", "/api/v1/sessions", NULL, wrong, &st);
		assert_int_equal(st, 401);
		json_decref(j);
	}
	c = pc_connect("127.0.0.1", srv.port);
	assert_int_equal(pc_http(c, "POST", "/api/v1/sessions", NULL, right, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 429);
	assert_true(pc_response_header(&res, "Retry-After", header, sizeof header) > 0);
	assert_int_equal(atoi(header), 1);
	j = json_loadb(res.body, res.body_len, 0, NULL);
	assert_string_equal(hx_str(json_object_get(j, "error"), "code"), "rate_limited");
	assert_true(hx_int(json_object_get(j, "error"), "retry_after_ms") > 0);
	assert_true(hx_int(json_object_get(j, "error"), "retry_after_ms") <= 1000);
	json_decref(j);
	pc_response_free(&res);
	pc_close(c);
	/* The bystander logs in at once. */
	snprintf(right, sizeof right, "{\"username\":\"%s\",\"password\":\"%s\"}", other.name, HX_PASSWORD);
	j = hx_http(srv.port, "POST", "/api/v1/sessions", NULL, right, &st);
	assert_int_equal(st, 201);
	json_decref(j);
	/* After the wait, the right password works, and the slate is clean. */
	usleep(1100 * 1000);
	snprintf(right, sizeof right, "{\"username\":\"%s\",\"password\":\"%s\"}", u.name, HX_PASSWORD);
	j = hx_http(srv.port, "POST", "/api/v1/sessions", NULL, right, &st);
	assert_int_equal(st, 201);
	json_decref(j);
	j = hx_http(srv.port, "POST", "/api/v1/sessions", NULL, wrong, &st);
	assert_int_equal(st, 401);
	json_decref(j);
	j = hx_http(srv.port, "POST", "/api/v1/sessions", NULL, right, &st);
	assert_int_equal(st, 201);
	json_decref(j);
}

/* A burst of logins (each an Argon2id hash of tens of milliseconds) runs
 * in a pool of its own: a token holder's request is answered at once, and
 * one address holds only a few places in the hashing queue, so most of a
 * burst from one address is refused at once with 503 rather than queued
 * (integ_abuse shows another address is served meanwhile). */
#define BURST 72
static void test_logins_do_not_starve(void **state)
{
	pc_conn_t *c[BURST], *http;
	pc_response_t res;
	hx_user_t u;
	char body[128];
	int i, refused = 0, answered = 0;

	(void)state;
	hx_user(srv.port, "notstarved", &u);
	for (i = 0; i < BURST; i++) {
		char req[512];
		int n;
		snprintf(body, sizeof body, "{\"username\":\"burst%d\",\"password\":\"wrong password\"}", i);
		n = snprintf(req, sizeof req,
		             "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
		             "Content-Length: %zu\r\n\r\n%s",
		             strlen(body), body);
		assert_non_null(c[i] = pc_connect("127.0.0.1", srv.port));
		assert_int_equal(pc_send_raw(c[i], req, (size_t)n), 0);
	}
	http = pc_connect("127.0.0.1", srv.port);
	assert_int_equal(pc_http(http, "GET", "/api/v1/conversations", u.token, NULL, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 200);
	pc_response_free(&res);
	pc_close(http);
	for (i = 0; i < BURST; i++) {
		assert_int_equal(pc_read_response(c[i], &res, 60000), 0);
		if (res.status == 503)
			refused++;
		else if (res.status == 401)
			answered++;
		else
			fail_msg("login %d: %d", i, res.status);
		pc_response_free(&res);
		pc_close(c[i]);
	}
	/* A hasher and four queued places, and a few more as they free up
	 * while the burst arrives. */
	assert_true(answered > 0);
	if (answered > 16 || refused < BURST - 16)
		fail_msg("%d logins answered, %d refused: one address took more than its share", answered,
		         refused);
}

static void test_pipelined_api_requests(void **state)
{
	pc_conn_t *c = pc_connect("127.0.0.1", srv.port);
	pc_response_t res;
	char req[1024];
	const char *n1, *n2;
	char a[40], b[40];
	int len;

	(void)state;
	n1 = hx_name("pipe");
	snprintf(a, sizeof a, "%s", n1);
	n2 = hx_name("pipe");
	snprintf(b, sizeof b, "%s", n2);
	{
		char ba[128], bb[128];
		int la = snprintf(ba, sizeof ba, "{\"username\":\"%s\",\"password\":\"12345678\"}", a);
		int lb = snprintf(bb, sizeof bb, "{\"username\":\"%s\",\"password\":\"12345678\"}", b);
		len = snprintf(req, sizeof req,
		               "POST /api/v1/users HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
		               "POST /api/v1/users HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		               la, ba, lb, bb);
	}
	assert_int_equal(pc_send_raw(c, req, (size_t)len), 0);
	assert_int_equal(pc_read_response(c, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 201);
	assert_non_null(strstr(res.body, a));
	pc_response_free(&res);
	assert_int_equal(pc_read_response(c, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 201);
	assert_non_null(strstr(res.body, b));
	pc_response_free(&res);
	pc_close(c);
}

static void test_expect_continue(void **state)
{
	pc_conn_t *c = pc_connect("127.0.0.1", srv.port);
	pc_response_t res;
	char head[256], body[128];
	int hn, bn;

	(void)state;
	bn = snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"12345678\"}", hx_name("cont"));
	hn = snprintf(head, sizeof head,
	              "POST /api/v1/users HTTP/1.1\r\nExpect: 100-continue\r\nContent-Type: application/json\r\n"
	              "Content-Length: %d\r\n\r\n", bn);
	assert_int_equal(pc_send_raw(c, head, (size_t)hn), 0);
	assert_int_equal(pc_read_response(c, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 100);
	pc_response_free(&res);
	assert_int_equal(pc_send_raw(c, body, (size_t)bn), 0);
	assert_int_equal(pc_read_response(c, &res, HX_TIMEOUT), 0);
	assert_int_equal(res.status, 201);
	pc_response_free(&res);
	pc_close(c);
}

static void test_malformed_and_oversized(void **state)
{
	char code[32], *big;
	size_t n;

	(void)state;
	assert_int_equal(raw_str("GARBAGE\r\n\r\n", 1, code, sizeof code), 400);
	assert_string_equal(code, "bad_request");
	assert_int_equal(raw_str("GET /healthz HTTP/2.0\r\n\r\n", 1, NULL, 0), 400);
	assert_int_equal(raw_str("GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n", 1, NULL, 0), 400);
	assert_int_equal(raw_str("GET /healthz HTTP/1.1\r\n folded: x\r\n\r\n", 1, NULL, 0), 400);
	assert_int_equal(raw_str("POST /api/v1/users HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 1, NULL, 0), 400);
	assert_int_equal(raw_str("POST /api/v1/users HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 1, NULL, 0), 411);
	/* A body over 64 KiB is refused from its header, unread. */
	assert_int_equal(raw_str("POST /api/v1/users HTTP/1.1\r\nContent-Length: 70000\r\n\r\n", 1, code,
	                            sizeof code), 413);
	assert_string_equal(code, "too_large");

	/* Request line over 8 KiB. */
	big = malloc(20000);
	n = (size_t)sprintf(big, "GET /");
	memset(big + n, 'a', 9000);
	n += 9000;
	n += (size_t)sprintf(big + n, " HTTP/1.1\r\n\r\n");
	assert_int_equal(raw_status(big, n, 1, NULL, 0), 414);
	/* Headers over 16 KiB. */
	n = (size_t)sprintf(big, "GET /healthz HTTP/1.1\r\n");
	while (n < 17500)
		n += (size_t)sprintf(big + n, "X-Pad: %0100d\r\n", 0);
	n += (size_t)sprintf(big + n, "\r\n");
	assert_int_equal(raw_status(big, n, 1, NULL, 0), 431);
	free(big);
	/* Too many headers. */
	big = malloc(4096);
	n = (size_t)sprintf(big, "GET /healthz HTTP/1.1\r\n");
	for (int i = 0; i < 40; i++)
		n += (size_t)sprintf(big + n, "X-H%d: v\r\n", i);
	n += (size_t)sprintf(big + n, "\r\n");
	assert_int_equal(raw_status(big, n, 1, NULL, 0), 431);
	free(big);
}

static void test_routes(void **state)
{
	json_t *j;
	int st;

	(void)state;
	j = hx_http(srv.port, "GET", "/nope", NULL, NULL, &st);
	assert_int_equal(st, 404);
	assert_string_equal(hx_str(json_object_get(j, "error"), "code"), "not_found");
	json_decref(j);
	j = hx_http(srv.port, "GET", "/api/v1/nope", NULL, NULL, &st);
	assert_int_equal(st, 404);
	json_decref(j);
	j = hx_http(srv.port, "PUT", "/api/v1/users", NULL, "{}", &st);
	assert_int_equal(st, 405);
	json_decref(j);
	j = hx_http(srv.port, "POST", "/healthz", NULL, NULL, &st);
	assert_int_equal(st, 405);
	json_decref(j);
}

static void expect_error(int port, const char *method, const char *path, const char *token,
                         const char *body, int status, const char *code)
{
	int st;
	json_t *j = hx_http(port, method, path, token, body, &st);

	if (st != status)
		fail_msg("%s %s %s: expected %d, got %d", method, path, body ? body : "", status, st);
	assert_string_equal(hx_str(json_object_get(j, "error"), "code"), code);
	json_decref(j);
}

static void test_accounts_bad_input(void **state)
{
	hx_user_t a;
	char body[256];

	(void)state;
	hx_user(srv.port, "acct", &a);
	expect_error(srv.port, "POST", "/api/v1/users", NULL, "not json", 400, "bad_request");
	expect_error(srv.port, "POST", "/api/v1/users", NULL, "[1,2]", 400, "bad_request");
	expect_error(srv.port, "POST", "/api/v1/users", NULL, "", 400, "bad_request");
	expect_error(srv.port, "POST", "/api/v1/users", NULL, "{\"username\":\"ab\",\"password\":\"12345678\"}",
	             400, "bad_request");
	expect_error(srv.port, "POST", "/api/v1/users", NULL,
	             "{\"username\":\"Capital\",\"password\":\"12345678\"}", 400, "bad_request");
	expect_error(srv.port, "POST", "/api/v1/users", NULL,
	             "{\"username\":\"okname\",\"password\":\"short\"}", 400, "bad_request");
	expect_error(srv.port, "POST", "/api/v1/users", NULL,
	             "{\"username\":\"okname\",\"password\":12345678}", 400, "bad_request");
	expect_error(srv.port, "POST", "/api/v1/users", NULL,
	             "{\"username\":\"okname\",\"username\":\"other\",\"password\":\"12345678\"}", 400,
	             "bad_request");
	snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"different pw\"}", a.name);
	expect_error(srv.port, "POST", "/api/v1/users", NULL, body, 409, "conflict");
	/* The taken name still logs in with its own password only. */
	expect_error(srv.port, "POST", "/api/v1/sessions", NULL, body, 401, "unauthorized");
	expect_error(srv.port, "POST", "/api/v1/sessions", NULL,
	             "{\"username\":\"nobody_here\",\"password\":\"correct horse\"}", 401, "unauthorized");
	expect_error(srv.port, "POST", "/api/v1/sessions", NULL, "{\"username\":1}", 400, "bad_request");

	/* Tokens: missing, forged, malformed. */
	expect_error(srv.port, "GET", "/api/v1/conversations", NULL, NULL, 401, "unauthorized");
	expect_error(srv.port, "GET", "/api/v1/conversations", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	             NULL, 401, "unauthorized");
	expect_error(srv.port, "GET", "/api/v1/conversations", "short", NULL, 401, "unauthorized");
	expect_error(srv.port, "GET", "/api/v1/users?username=nobody_here", a.token, NULL, 404,
	             "not_found");
	expect_error(srv.port, "GET", "/api/v1/users", a.token, NULL, 400, "bad_request");
	{ /* the lookup needs no token */
		char path[96];
		int st;
		json_t *j;
		snprintf(path, sizeof path, "/api/v1/users?username=%s", a.name);
		j = hx_http(srv.port, "GET", path, NULL, NULL, &st);
		assert_int_equal(st, 200);
		assert_int_equal(hx_int(j, "user_id"), a.id);
		json_decref(j);
	}
}

static void test_conversations_bad_input(void **state)
{
	hx_user_t a, b, c;
	char body[128], path[128];
	json_t *j;
	int64_t conv;
	int st;

	(void)state;
	hx_user(srv.port, "conv", &a);
	hx_user(srv.port, "conv", &b);
	hx_user(srv.port, "conv", &c);
	expect_error(srv.port, "POST", "/api/v1/conversations", a.token, "{}", 400, "bad_request");
	expect_error(srv.port, "POST", "/api/v1/conversations", a.token, "{\"members\":[]}", 400,
	             "bad_request");
	expect_error(srv.port, "POST", "/api/v1/conversations", a.token, "{\"members\":[\"x\"]}", 400,
	             "bad_request");
	expect_error(srv.port, "POST", "/api/v1/conversations", a.token, "{\"members\":[1.5]}", 400,
	             "bad_request");
	snprintf(body, sizeof body, "{\"members\":[%lld]}", (long long)a.id);
	expect_error(srv.port, "POST", "/api/v1/conversations", a.token, body, 400, "bad_request");
	expect_error(srv.port, "POST", "/api/v1/conversations", a.token, "{\"members\":[9007199254740991]}",
	             404, "not_found");
	expect_error(srv.port, "POST", "/api/v1/conversations", a.token, "{\"members\":[9007199254740992]}",
	             400, "bad_request");
	/* None of that made a conversation. */
	j = hx_http(srv.port, "GET", "/api/v1/conversations", a.token, NULL, &st);
	assert_int_equal(st, 200);
	assert_int_equal(json_array_size(json_object_get(j, "conversations")), 0);
	json_decref(j);

	conv = hx_direct(srv.port, &a, &b);
	/* Carol is not a member: no history, receipts or members for her. */
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages", (long long)conv);
	expect_error(srv.port, "GET", path, c.token, NULL, 403, "forbidden");
	expect_error(srv.port, "GET", path, NULL, NULL, 401, "unauthorized");
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?limit=0", (long long)conv);
	expect_error(srv.port, "GET", path, a.token, NULL, 400, "bad_request");
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?limit=201", (long long)conv);
	expect_error(srv.port, "GET", path, a.token, NULL, 400, "bad_request");
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?before=-1", (long long)conv);
	expect_error(srv.port, "GET", path, a.token, NULL, 400, "bad_request");
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages/1/receipts", (long long)conv);
	expect_error(srv.port, "GET", path, c.token, NULL, 403, "forbidden");
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/members", (long long)conv);
	snprintf(body, sizeof body, "{\"user_id\":%lld}", (long long)c.id);
	expect_error(srv.port, "POST", path, c.token, body, 403, "forbidden");
	expect_error(srv.port, "POST", path, a.token, body, 400, "bad_request");
	expect_error(srv.port, "GET", "/api/v1/conversations/abc/messages", a.token, NULL, 404,
	             "not_found");
	expect_error(srv.port, "GET", "/api/v1/conversations/999999/messages", a.token, NULL, 403,
	             "forbidden");
	/* Carol's own list does not show it. */
	j = hx_http(srv.port, "GET", "/api/v1/conversations", c.token, NULL, &st);
	assert_int_equal(json_array_size(json_object_get(j, "conversations")), 0);
	json_decref(j);
}

static void test_history_pages(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca;
	json_t *j, *msgs;
	int64_t conv, i;
	char path[160];
	int st;

	(void)state;
	hx_user(srv.port, "hist", &a);
	hx_user(srv.port, "hist", &b);
	conv = hx_direct(srv.port, &a, &b);
	ca = hx_ws(srv.port, &a);
	for (i = 1; i <= 25; i++)
		hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"h%lld\",\"body\":\"n%lld\"}",
		         (long long)conv, (long long)i, (long long)i);
	for (i = 1; i <= 25; i++) {
		j = hx_expect(ca, "ack");
		assert_int_equal(hx_int(j, "seq"), i);
		json_decref(j);
	}
	/* Newest page first, ascending inside. */
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?limit=10", (long long)conv);
	j = hx_http(srv.port, "GET", path, b.token, NULL, &st);
	assert_int_equal(st, 200);
	msgs = json_object_get(j, "messages");
	assert_int_equal(json_array_size(msgs), 10);
	assert_int_equal(hx_int(json_array_get(msgs, 0), "seq"), 16);
	assert_int_equal(hx_int(json_array_get(msgs, 9), "seq"), 25);
	assert_string_equal(hx_str(json_array_get(msgs, 9), "body"), "n25");
	assert_true(json_is_true(json_object_get(j, "has_more")));
	json_decref(j);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?before=6&limit=10", (long long)conv);
	j = hx_http(srv.port, "GET", path, b.token, NULL, &st);
	msgs = json_object_get(j, "messages");
	assert_int_equal(json_array_size(msgs), 5);
	assert_int_equal(hx_int(json_array_get(msgs, 0), "seq"), 1);
	assert_true(json_is_false(json_object_get(j, "has_more")));
	json_decref(j);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages", (long long)conv);
	j = hx_http(srv.port, "GET", path, b.token, NULL, &st);
	assert_int_equal(json_array_size(json_object_get(j, "messages")), 25);
	json_decref(j);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?before=0", (long long)conv);
	j = hx_http(srv.port, "GET", path, b.token, NULL, &st);
	assert_int_equal(st, 200);
	assert_int_equal(json_array_size(json_object_get(j, "messages")), 0);
	assert_true(json_is_false(json_object_get(j, "has_more")));
	json_decref(j);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?before=007", (long long)conv);
	expect_error(srv.port, "GET", path, b.token, NULL, 400, "bad_request");
	pc_close(ca);
}

static void test_list_order(void **state)
{
	hx_user_t a, b, c;
	pc_conn_t *ca;
	json_t *j, *list;
	int64_t conv_b, conv_c;
	int st;

	(void)state;
	hx_user(srv.port, "order", &a);
	hx_user(srv.port, "order", &b);
	hx_user(srv.port, "order", &c);
	conv_b = hx_direct(srv.port, &a, &b);
	conv_c = hx_direct(srv.port, &a, &c);
	ca = hx_ws(srv.port, &a);
	hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"1\",\"body\":\"to c\"}", (long long)conv_c);
	json_decref(hx_expect(ca, "ack"));
	hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"1\",\"body\":\"to b\"}", (long long)conv_b);
	json_decref(hx_expect(ca, "ack"));
	j = hx_http(srv.port, "GET", "/api/v1/conversations", a.token, NULL, &st);
	list = json_object_get(j, "conversations");
	assert_int_equal(json_array_size(list), 2);
	assert_int_equal(hx_int(json_array_get(list, 0), "conversation_id"), conv_b);
	assert_int_equal(hx_int(json_array_get(list, 1), "conversation_id"), conv_c);
	/* Own messages are not unread. */
	assert_int_equal(hx_int(json_array_get(list, 0), "unread"), 0);
	json_decref(j);
	j = hx_http(srv.port, "GET", "/api/v1/conversations", b.token, NULL, &st);
	list = json_object_get(j, "conversations");
	assert_int_equal(hx_int(json_array_get(list, 0), "unread"), 1);
	json_decref(j);
	pc_close(ca);
}

static void test_logout(void **state)
{
	hx_user_t a, a2;
	pc_conn_t *c1, *c2;
	json_t *j;
	int st;

	(void)state;
	hx_user(srv.port, "bye", &a);
	hx_login(srv.port, &a, &a2);
	c1 = hx_ws(srv.port, &a);
	c2 = hx_ws(srv.port, &a2);
	j = hx_http(srv.port, "DELETE", "/api/v1/sessions/current", a.token, NULL, &st);
	assert_int_equal(st, 204);
	assert_null(j);
	assert_int_equal(hx_expect_close(c1), 1008); /* that device's socket closes */
	expect_error(srv.port, "GET", "/api/v1/conversations", a.token, NULL, 401, "unauthorized");
	/* The other device goes on. */
	hx_sendf(c2, "{\"type\":\"ping\",\"ref\":7}");
	j = hx_expect(c2, "pong");
	assert_int_equal(hx_int(j, "ref"), 7);
	json_decref(j);
	j = hx_http(srv.port, "GET", "/api/v1/conversations", a2.token, NULL, &st);
	assert_int_equal(st, 200);
	json_decref(j);
	pc_close(c1);
	pc_close(c2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_healthz_and_keepalive),
		cmocka_unit_test(test_metrics),
		cmocka_unit_test(test_login_backoff),
		cmocka_unit_test(test_logins_do_not_starve),
		cmocka_unit_test(test_pipelined_api_requests),
		cmocka_unit_test(test_expect_continue),
		cmocka_unit_test(test_malformed_and_oversized),
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_accounts_bad_input),
		cmocka_unit_test(test_conversations_bad_input),
		cmocka_unit_test(test_history_pages),
		cmocka_unit_test(test_list_order),
		cmocka_unit_test(test_logout),
	};
	hx_filter();
	return cmocka_run_group_tests_name("integ_http", tests, setup, teardown);
}
