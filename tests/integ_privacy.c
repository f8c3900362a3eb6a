/* integ_privacy.c - what one user can do to another, against the real
 * binary: blocks, who may add whom to groups, the first-contact budget,
 * the caps on conversations, work and storage, lists too big for their
 * reader, membership that ends everywhere at once, and the browser rules
 * (Origin, JSON bodies, WebSocket tickets, devices). Each attack has a
 * bystander who is served normally. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static hx_server_t S;

static int stop_server(void **state)
{
	(void)state;
	hx_kill(&S);
	return 0;
}

#define START(...) HX_START(&S, __VA_ARGS__)

/* The error code of an HTTP answer's body (which it frees). */
static void expect_error(json_t *j, const char *code)
{
	json_t *e = json_object_get(j, "error");

	assert_non_null(e);
	assert_string_equal(hx_str(e, "code"), code);
	assert_true(strlen(hx_str(e, "message")) > 0);
	json_decref(j);
}

static json_t *post(const hx_user_t *u, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int last_status;

/* POST body (printf-style) as u; the status is in last_status. */
static json_t *post(const hx_user_t *u, const char *path, const char *fmt, ...)
{
	char body[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(body, sizeof body, fmt, ap);
	va_end(ap);
	return hx_http(S.port, "POST", path, u ? u->token : NULL, body, &last_status);
}

static json_t *req(const hx_user_t *u, const char *method, const char *path)
{
	return hx_http(S.port, method, path, u ? u->token : NULL, NULL, &last_status);
}

static int64_t group_of(const hx_user_t *creator, const hx_user_t *a, const hx_user_t *b)
{
	json_t *j = post(creator, "/api/v1/conversations", "{\"members\":[%lld,%lld]}", (long long)a->id,
	                 (long long)b->id);
	int64_t id;

	assert_int_equal(last_status, 201);
	id = hx_int(j, "conversation_id");
	json_decref(j);
	return id;
}

/* The next error frame on c, skipping others. */
static json_t *next_error(pc_conn_t *c)
{
	for (;;) {
		json_t *j = hx_recv(c);
		if (!strcmp(hx_str(j, "type"), "error"))
			return j;
		json_decref(j);
	}
}

/* ---- blocks --------------------------------------------------------- */

/* Alice blocks Bob: his watch of her ends, neither may send in their
 * chat (he is told only that he may not; she, that it is her block), he
 * cannot add her to a group, neither sees the other type in a group they
 * share, and a stranger she blocked cannot open a chat with her. Unblock
 * undoes it. Carol, a bystander in the same group, sees everything. */
static void test_block(void **state)
{
	hx_user_t a, b, c, d;
	pc_conn_t *ca, *cb, *cc;
	int64_t ab, g;
	json_t *j;

	(void)state;
	START("--presence-grace", "0");
	hx_user(S.port, "blocker", &a);
	hx_user(S.port, "blocked", &b);
	hx_user(S.port, "bystander", &c);
	hx_user(S.port, "stranger", &d);
	ab = hx_direct(S.port, &a, &b);
	g = group_of(&c, &a, &b);
	ca = hx_ws(S.port, &a);
	cb = hx_ws(S.port, &b);
	cc = hx_ws(S.port, &c);
	hx_say(ca, ab, "hi bob");
	json_decref(hx_expect(cb, "msg"));
	hx_say(cb, ab, "hi alice");
	json_decref(hx_expect(ca, "msg"));
	hx_sendf(cb, "{\"type\":\"watch\",\"users\":[%lld]}", (long long)a.id);
	json_decref(hx_expect(cb, "presence"));

	j = post(&a, "/api/v1/blocks", "{\"user_id\":%lld}", (long long)b.id);
	assert_int_equal(last_status, 204);
	json_decref(j);
	json_decref(post(&a, "/api/v1/blocks", "{\"user_id\":%lld}", (long long)b.id));
	assert_int_equal(last_status, 204); /* twice: harmless */
	/* Her presence no longer reaches him. */
	hx_sendf(ca, "{\"type\":\"presence\",\"state\":\"away\"}");
	assert_null(hx_recv_within(cb, 500));
	/* He may not send; he is told no more than that. */
	hx_sendf(cb, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"x1\",\"body\":\"please\"}", (long long)ab);
	j = next_error(cb);
	assert_string_equal(hx_str(j, "code"), "forbidden");
	assert_string_equal(hx_str(j, "message"), "you cannot send to this conversation");
	assert_string_equal(hx_str(j, "ref"), "x1");
	json_decref(j);
	/* She is told it is her own block. */
	hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"y1\",\"body\":\"bye\"}", (long long)ab);
	j = next_error(ca);
	assert_string_equal(hx_str(j, "code"), "forbidden");
	assert_non_null(strstr(hx_str(j, "message"), "blocked"));
	json_decref(j);
	/* Typing in the group: not between them; the bystander still sees it. */
	hx_sendf(cb, "{\"type\":\"typing\",\"conv\":%lld,\"on\":true}", (long long)g);
	j = hx_expect(cc, "typing");
	assert_int_equal(hx_int(j, "user"), b.id);
	json_decref(j);
	assert_null(hx_recv_within(ca, 400));
	hx_sendf(ca, "{\"type\":\"typing\",\"conv\":%lld,\"on\":true}", (long long)g);
	json_decref(hx_expect(cc, "typing"));
	assert_null(hx_recv_within(cb, 400));
	/* He cannot add her to a group; the refusal is the generic one. */
	expect_error(post(&b, "/api/v1/conversations", "{\"members\":[%lld,%lld]}", (long long)a.id,
	                  (long long)c.id),
	             "forbidden");
	assert_int_equal(last_status, 403);
	/* A stranger she blocks cannot open a chat with her. */
	json_decref(post(&a, "/api/v1/blocks", "{\"user_id\":%lld}", (long long)d.id));
	expect_error(post(&d, "/api/v1/conversations", "{\"members\":[%lld]}", (long long)a.id), "forbidden");
	assert_int_equal(last_status, 403);
	/* And she cannot open one with him while she blocks him. */
	expect_error(post(&a, "/api/v1/conversations", "{\"members\":[%lld]}", (long long)d.id), "forbidden");
	/* The list: both, with names; her entry of the chat says blocked. */
	j = req(&a, "GET", "/api/v1/blocks");
	assert_int_equal(last_status, 200);
	assert_int_equal(json_array_size(json_object_get(j, "blocks")), 2);
	assert_true(json_is_null(json_object_get(j, "next_cursor")));
	json_decref(j);
	{
		char path[64];
		snprintf(path, sizeof path, "/api/v1/conversations/%lld", (long long)ab);
		j = req(&a, "GET", path);
		assert_true(json_is_true(json_object_get(j, "blocked")));
		json_decref(j);
		j = req(&b, "GET", path);
		assert_false(json_is_true(json_object_get(j, "blocked")));
		json_decref(j);
		/* Unblock: he may send again. */
		snprintf(path, sizeof path, "/api/v1/blocks/%lld", (long long)b.id);
		json_decref(req(&a, "DELETE", path));
		assert_int_equal(last_status, 204);
		expect_error(req(&a, "DELETE", path), "not_found");
	}
	hx_say(cb, ab, "thanks");
	json_decref(hx_expect(ca, "msg"));
	pc_close(ca);
	pc_close(cb);
	pc_close(cc);
	hx_finish(&S);
}

/* Who may add me to groups: with "contacts", only people Bob has
 * written to; anyone else gets the generic refusal and nothing is made. */
static void test_group_adds(void **state)
{
	hx_user_t a, b, c;
	pc_conn_t *cb;
	int64_t g;
	json_t *j;
	char path[64];

	(void)state;
	START("--presence-grace", "0");
	hx_user(S.port, "adder", &a);
	hx_user(S.port, "picky", &b);
	hx_user(S.port, "third", &c);
	j = hx_http(S.port, "PATCH", "/api/v1/settings", b.token, "{\"group_adds\":\"contacts\"}", &last_status);
	assert_int_equal(last_status, 200);
	assert_string_equal(hx_str(j, "group_adds"), "contacts");
	json_decref(j);
	expect_error(hx_http(S.port, "PATCH", "/api/v1/settings", b.token, "{\"group_adds\":\"nobody\"}", &last_status),
	             "bad_request");
	expect_error(hx_http(S.port, "PATCH", "/api/v1/settings", b.token, "{\"colour\":\"blue\"}", &last_status),
	             "bad_request");
	expect_error(post(&a, "/api/v1/conversations", "{\"members\":[%lld,%lld]}", (long long)b.id, (long long)c.id),
	             "forbidden");
	{
		/* A group with a and c, then an add of b: refused. */
		hx_user_t d;
		hx_user(S.port, "fourth", &d);
		g = group_of(&a, &c, &d);
		snprintf(path, sizeof path, "/api/v1/conversations/%lld/members", (long long)g);
		expect_error(post(&a, path, "{\"user_id\":%lld}", (long long)b.id), "forbidden");
		/* Bob writes to Alice: she is his contact now, and may add him. */
		cb = hx_ws(S.port, &b);
		hx_say(cb, hx_direct(S.port, &b, &a), "hi, add me");
		json_decref(post(&a, path, "{\"user_id\":%lld}", (long long)b.id));
		assert_int_equal(last_status, 204);
		pc_close(cb);
	}
	j = req(&b, "GET", "/api/v1/settings");
	assert_string_equal(hx_str(j, "group_adds"), "contacts");
	json_decref(j);
	hx_finish(&S);
}

/* The first-contact budget: three a day here. A fourth stranger is
 * refused with when to retry, and nothing is created; a group needing
 * more than the budget is refused outright; reaching contacts (who wrote
 * first) costs nothing; an operator's exemption lifts it live. */
static void test_strangers_budget(void **state)
{
	hx_user_t spammer, v[6], friend_, friend2;
	pc_conn_t *cf;
	json_t *j;
	int i;

	(void)state;
	START("--strangers-per-day", "3");
	hx_user(S.port, "spammer", &spammer);
	hx_user(S.port, "friend", &friend_);
	hx_user(S.port, "friend", &friend2);
	for (i = 0; i < 6; i++)
		hx_user(S.port, "victim", &v[i]);
	for (i = 0; i < 3; i++) {
		json_decref(post(&spammer, "/api/v1/conversations", "{\"members\":[%lld]}", (long long)v[i].id));
		assert_int_equal(last_status, 201);
	}
	j = post(&spammer, "/api/v1/conversations", "{\"members\":[%lld]}", (long long)v[3].id);
	assert_int_equal(last_status, 429);
	assert_true(hx_int(json_object_get(j, "error"), "retry_after_ms") > 23 * 3600 * 1000LL);
	expect_error(j, "rate_limited");
	/* Opening an existing chat again costs nothing. */
	json_decref(post(&spammer, "/api/v1/conversations", "{\"members\":[%lld]}", (long long)v[0].id));
	assert_int_equal(last_status, 200);
	/* Nothing was made for v3: the spammer has three conversations. */
	j = req(&spammer, "GET", "/api/v1/conversations");
	assert_int_equal(json_array_size(json_object_get(j, "conversations")), 3);
	json_decref(j);
	/* A group of strangers over the whole budget is refused outright. */
	expect_error(post(&spammer, "/api/v1/conversations", "{\"members\":[%lld,%lld,%lld,%lld]}",
	                  (long long)v[2].id, (long long)v[3].id, (long long)v[4].id, (long long)v[5].id),
	             "forbidden");
	/* People who wrote to it first are no strangers: a group of them is
	 * free, over budget as it is. */
	cf = hx_ws(S.port, &friend_);
	hx_say(cf, hx_direct(S.port, &friend_, &spammer), "hello");
	pc_close(cf);
	cf = hx_ws(S.port, &friend2);
	hx_say(cf, hx_direct(S.port, &friend2, &spammer), "hello too");
	pc_close(cf);
	json_decref(post(&spammer, "/api/v1/conversations", "{\"members\":[%lld,%lld]}",
	                 (long long)friend_.id, (long long)friend2.id));
	assert_int_equal(last_status, 201);
	/* The operator exempts the account (a business): live, no restart. */
	{
		char cmd[512];
		snprintf(cmd, sizeof cmd, "%s admin strangers-exempt %s on %s '%s' >/dev/null",
		         getenv("PARLEY_BIN") ? getenv("PARLEY_BIN") : "build/parley", spammer.name,
		         hx_store_option(S.store), S.store);
		assert_int_equal(system(cmd), 0);
	}
	json_decref(post(&spammer, "/api/v1/conversations", "{\"members\":[%lld]}", (long long)v[3].id));
	assert_int_equal(last_status, 201);
	hx_finish(&S);
}

/* Concurrent opens from one account cannot pass the budget between them:
 * 16 at once on 4 workers, a budget of 3, exactly 3 made. */
static void test_strangers_budget_concurrent(void **state)
{
	enum { N = 16 };
	hx_user_t spammer, v[N];
	pc_conn_t *c[N];
	char body[64], req[512];
	int i, made = 0;

	(void)state;
	START("--strangers-per-day", "3", "--threads", "4");
	hx_user(S.port, "racer", &spammer);
	for (i = 0; i < N; i++)
		hx_user(S.port, "raced", &v[i]);
	for (i = 0; i < N; i++) {
		int n = snprintf(body, sizeof body, "{\"members\":[%lld]}", (long long)v[i].id);
		n = snprintf(req, sizeof req,
		             "POST /api/v1/conversations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
		             "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		             spammer.token, n, body);
		assert_non_null(c[i] = pc_connect("127.0.0.1", S.port));
		assert_int_equal(pc_send_raw(c[i], req, (size_t)n), 0);
	}
	for (i = 0; i < N; i++) {
		pc_response_t res;
		assert_int_equal(pc_read_response(c[i], &res, HX_TIMEOUT), 0);
		if (res.status == 201)
			made++;
		else
			assert_int_equal(res.status, 429);
		pc_response_free(&res);
		pc_close(c[i]);
	}
	assert_int_equal(made, 3);
	hx_finish(&S);
}

/* Blocks received from the people one reached shrink the budget: with 20
 * a day, ten blocks make it ten. Blocks from people it never reached
 * count for nothing, so puppets cannot shrink an innocent's budget. */
static void test_blocks_shrink_budget(void **state)
{
	hx_user_t spammer, v[22], innocent, puppet[10];
	int i, made = 0;

	(void)state;
	START("--strangers-per-day", "20");
	hx_user(S.port, "pest", &spammer);
	hx_user(S.port, "innocent", &innocent);
	for (i = 0; i < 22; i++)
		hx_user(S.port, "target", &v[i]);
	for (i = 0; i < 10; i++) {
		hx_user(S.port, "puppet", &puppet[i]);
		json_decref(post(&puppet[i], "/api/v1/blocks", "{\"user_id\":%lld}", (long long)innocent.id));
		assert_int_equal(last_status, 204);
	}
	for (i = 0; i < 20; i++) {
		json_decref(post(&innocent, "/api/v1/conversations", "{\"members\":[%lld]}", (long long)v[i].id));
		assert_int_equal(last_status, 201); /* the whole budget still */
	}
	for (i = 0; i < 10; i++) {
		json_decref(post(&spammer, "/api/v1/conversations", "{\"members\":[%lld]}", (long long)v[i].id));
		assert_int_equal(last_status, 201);
		json_decref(post(&v[i], "/api/v1/blocks", "{\"user_id\":%lld}", (long long)spammer.id));
		assert_int_equal(last_status, 204);
	}
	for (i = 10; i < 22; i++) {
		json_decref(post(&spammer, "/api/v1/conversations", "{\"members\":[%lld]}", (long long)v[i].id));
		if (last_status == 201)
			made++;
		else
			assert_int_equal(last_status, 429);
	}
	/* 20 * 10 / (10 + 10) = 10, all used by the first ten. */
	assert_int_equal(made, 0);
	hx_finish(&S);
}

/* Nobody is in more than --max-conversations: an attacker cannot fill a
 * victim's list past it, and the refusal names who is full. */
static void test_conversation_cap(void **state)
{
	hx_user_t att, vic, x;
	json_t *j;
	int i;

	(void)state;
	START("--max-conversations", "3");
	hx_user(S.port, "filler", &att);
	hx_user(S.port, "full", &vic);
	hx_user(S.port, "extra", &x);
	for (i = 0; i < 3; i++) {
		json_decref(post(&att, "/api/v1/conversations", "{\"members\":[%lld,%lld]}", (long long)vic.id,
		                 (long long)x.id));
		assert_int_equal(last_status, i < 3 ? 201 : 409);
	}
	j = post(&att, "/api/v1/conversations", "{\"members\":[%lld]}", (long long)vic.id);
	assert_int_equal(last_status, 409);
	assert_non_null(strstr(hx_str(json_object_get(j, "error"), "message"), "you are in"));
	expect_error(j, "conflict");
	hx_finish(&S);
}

/* ---- answers too big for their reader ------------------------------- */

/* Waits for the next ack on c, skipping other frames. */
static void await_ack(pc_conn_t *c)
{
	for (;;) {
		json_t *j = hx_recv(c);
		int ack = !strcmp(hx_str(j, "type"), "ack");
		if (!strcmp(hx_str(j, "type"), "error"))
			fail_msg("refused: %s", hx_str(j, "message"));
		json_decref(j);
		if (ack)
			return;
	}
}

/* Another user makes the victim's answers huge: 40 groups with the
 * victim, one 16 KiB message (escaping to 32 KiB) in each, and 64 such
 * messages in one. The list and history come in pages that fit, none is
 * refused or reset, every entry comes exactly once; resume completes. */
static void test_victim_answers_paged(void **state)
{
	enum { GROUPS = 40, HIST = 64 };
	static char body[16384 * 2 + 1], frame[16384 * 2 + 256];
	hx_user_t att, vic, other;
	pc_conn_t *ca, *cv;
	int64_t groups[GROUPS], seen = 0, before = 0, got = 0;
	char path[160], cursor[64] = "";
	json_t *j;
	int i, k, more = 1;

	(void)state;
	START("--presence-grace", "0");
	for (i = 0; i < 16384; i++)
		memcpy(body + 2 * i, "\\\"", 2); /* a quote, escaped in JSON */
	body[2 * 16384] = 0;
	hx_user(S.port, "bigsender", &att);
	hx_user(S.port, "victim", &vic);
	hx_user(S.port, "other", &other);
	ca = hx_ws(S.port, &att);
	for (i = 0; i < GROUPS; i++) {
		groups[i] = group_of(&att, &vic, &other);
		snprintf(frame, sizeof frame, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"big%d\",\"body\":\"%s\"}",
		         (long long)groups[i], i, body);
		assert_int_equal(pc_ws_send_text(ca, frame), 0);
		await_ack(ca);
	}
	for (i = 1; i < HIST; i++) {
		snprintf(frame, sizeof frame, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"more%d\",\"body\":\"%s\"}",
		         (long long)groups[0], i, body);
		assert_int_equal(pc_ws_send_text(ca, frame), 0);
		await_ack(ca);
	}
	/* The list: every group once, in pages under the bound. */
	while (more) {
		pc_conn_t *c = pc_connect("127.0.0.1", S.port);
		pc_response_t res;
		json_t *convs, *e;
		size_t n;

		snprintf(path, sizeof path, "/api/v1/conversations%s%s", cursor[0] ? "?cursor=" : "", cursor);
		assert_int_equal(pc_http(c, "GET", path, vic.token, NULL, &res, HX_TIMEOUT), 0);
		assert_int_equal(res.status, 200);
		assert_true(res.body_len < 320 * 1024);
		j = json_loadb(res.body, res.body_len, 0, NULL);
		convs = json_object_get(j, "conversations");
		json_array_foreach(convs, n, e) {
			int64_t id = hx_int(e, "conversation_id");
			for (k = 0; k < GROUPS && groups[k] != id; k++)
				;
			assert_true(k < GROUPS);
			assert_true(!(seen & (1LL << k))); /* never twice */
			seen |= 1LL << k;
		}
		e = json_object_get(j, "next_cursor");
		more = !json_is_null(e);
		if (more)
			snprintf(cursor, sizeof cursor, "%s", json_string_value(e));
		json_decref(j);
		pc_response_free(&res);
		pc_close(c);
	}
	assert_int_equal(seen, (1LL << GROUPS) - 1);
	/* History at limit=64: pages that fit, then all 64 in all. */
	more = 1;
	while (more) {
		pc_conn_t *c = pc_connect("127.0.0.1", S.port);
		pc_response_t res;
		json_t *ms;

		if (before)
			snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?limit=64&before=%lld",
			         (long long)groups[0], (long long)before);
		else
			snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?limit=64", (long long)groups[0]);
		assert_int_equal(pc_http(c, "GET", path, vic.token, NULL, &res, HX_TIMEOUT), 0);
		assert_int_equal(res.status, 200);
		assert_true(res.body_len < 320 * 1024);
		j = json_loadb(res.body, res.body_len, 0, NULL);
		ms = json_object_get(j, "messages");
		assert_true(json_array_size(ms) >= 1 && json_array_size(ms) < HIST);
		got += (int64_t)json_array_size(ms);
		before = hx_int(json_array_get(ms, 0), "seq");
		more = json_is_true(json_object_get(j, "has_more"));
		json_decref(j);
		pc_response_free(&res);
		pc_close(c);
	}
	assert_int_equal(got, HIST);
	/* Resume of everything from nothing: every message, then resumed. */
	cv = hx_ws(S.port, &vic);
	{
		char convs[2048];
		size_t n = 0;
		n += (size_t)snprintf(convs + n, sizeof convs - n, "{\"type\":\"resume\",\"convs\":{");
		for (i = 0; i < GROUPS; i++)
			n += (size_t)snprintf(convs + n, sizeof convs - n, "%s\"%lld\":0", i ? "," : "",
			                      (long long)groups[i]);
		snprintf(convs + n, sizeof convs - n, "}}");
		assert_int_equal(pc_ws_send_text(cv, convs), 0);
		for (k = 0; k < GROUPS + HIST - 1; k++)
			json_decref(hx_expect(cv, "msg"));
		json_decref(hx_expect(cv, "resumed"));
	}
	pc_close(cv);
	pc_close(ca);
	hx_finish(&S);
}

/* ---- work and storage ------------------------------------------------ */

/* Watch frames of 500 ids cost 501 units each: with a budget of 1,000 at
 * once the third is refused with when to retry, and a bystander's
 * requests are answered meanwhile. */
static void test_work_budget(void **state)
{
	static char frame[500 * 20 + 64];
	hx_user_t att, by;
	pc_conn_t *ca;
	json_t *j;
	size_t n = 0;
	int i;

	(void)state;
	START("--work-rate", "1", "--work-burst", "1100");
	hx_user(S.port, "watcher", &att);
	hx_user(S.port, "bystander", &by);
	n += (size_t)snprintf(frame + n, sizeof frame - n, "{\"type\":\"watch\",\"users\":[");
	for (i = 0; i < 500; i++)
		n += (size_t)snprintf(frame + n, sizeof frame - n, "%s%d", i ? "," : "", 100000 + i);
	snprintf(frame + n, sizeof frame - n, "]}");
	ca = hx_ws(S.port, &att);
	for (i = 0; i < 2; i++)
		assert_int_equal(pc_ws_send_text(ca, frame), 0);
	assert_int_equal(pc_ws_send_text(ca, frame), 0);
	j = next_error(ca);
	assert_string_equal(hx_str(j, "code"), "rate_limited");
	assert_true(hx_int(j, "retry_after_ms") > 0);
	json_decref(j);
	/* Its REST requests are charged to the same budget. */
	expect_error(req(&att, "GET", "/api/v1/conversations"), "rate_limited");
	assert_int_equal(last_status, 429);
	/* The bystander's are not. */
	j = req(&by, "GET", "/api/v1/conversations");
	assert_int_equal(last_status, 200);
	json_decref(j);
	pc_close(ca);
	hx_finish(&S);
}

/* A resume asked for while another is under way waits for it, and is
 * answered however that one ends: here the budget refuses the first's
 * replay (200 rows cost 20 units, and an earlier resume took 23 of the
 * 40, a resume frame 3 of them), and the second, which came meanwhile,
 * gets its own answer (another refusal, as nothing has refilled) rather
 * than waiting for a third. */
static void test_resume_during_refused_resume(void **state)
{
	char frame[128];
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	int64_t conv;
	json_t *j;
	int i;

	(void)state;
	START("--work-rate", "0.01", "--work-burst", "40");
	hx_user(S.port, "talker", &a);
	hx_user(S.port, "reader", &b);
	conv = hx_direct(S.port, &a, &b);
	ca = hx_ws(S.port, &a);
	for (i = 0; i < 200; i++)
		hx_say(ca, conv, "history");
	cb = hx_ws(S.port, &b);
	snprintf(frame, sizeof frame, "{\"type\":\"resume\",\"convs\":{\"%lld\":0}}", (long long)conv);
	assert_int_equal(pc_ws_send_text(cb, frame), 0);
	for (i = 0; !i;) { /* the 200, then "resumed" */
		j = hx_recv(cb);
		i = !strcmp(hx_str(j, "type"), "resumed");
		json_decref(j);
	}
	{
		/* Both in one write, so that the second is read while the
		 * first is with a worker: masked frames, with a zero mask. */
		unsigned char two[2 * (6 + sizeof frame)];
		size_t len = strlen(frame), n = 0;
		assert_true(len < 126);
		for (i = 0; i < 2; i++) {
			two[n++] = 0x81;
			two[n++] = (unsigned char)(0x80 | len);
			memset(two + n, 0, 4);
			n += 4;
			memcpy(two + n, frame, len);
			n += len;
		}
		assert_int_equal(pc_send_raw(cb, two, n), 0);
	}
	for (i = 0; i < 2; i++) {
		j = next_error(cb);
		assert_string_equal(hx_str(j, "code"), "rate_limited");
		assert_non_null(strstr(hx_str(j, "message"), "replay"));
		assert_true(hx_int(j, "retry_after_ms") > 0);
		json_decref(j);
	}
	pc_close(cb);
	pc_close(ca);
	hx_finish(&S);
}

/* The storage budget: 100,000 bytes a day, a quarter at once. A second
 * 16 KiB message passes it: refused with when to retry, not stored, and
 * counted in /metrics; another user sends as before. */
static void test_storage_budget(void **state)
{
	static char body[16001], frame[16300];
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	int64_t conv;
	json_t *j;

	(void)state;
	START("--storage-per-day", "100000");
	memset(body, 'x', 16000);
	hx_user(S.port, "hoarder", &a);
	hx_user(S.port, "neighbour", &b);
	conv = hx_direct(S.port, &a, &b);
	ca = hx_ws(S.port, &a);
	cb = hx_ws(S.port, &b);
	snprintf(frame, sizeof frame, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"s1\",\"body\":\"%s\"}", (long long)conv, body);
	assert_int_equal(pc_ws_send_text(ca, frame), 0);
	json_decref(hx_expect(ca, "ack"));
	snprintf(frame, sizeof frame, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"s2\",\"body\":\"%s\"}", (long long)conv, body);
	assert_int_equal(pc_ws_send_text(ca, frame), 0);
	j = next_error(ca);
	assert_string_equal(hx_str(j, "code"), "rate_limited");
	assert_string_equal(hx_str(j, "ref"), "s2");
	assert_non_null(strstr(hx_str(j, "message"), "storage"));
	assert_true(hx_int(j, "retry_after_ms") > 1000);
	json_decref(j);
	assert_true(hx_metric(&S, "parley_sends_storage_limited_total") >= 1);
	hx_say(cb, conv, "small and fine");
	{
		char path[96];
		snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages", (long long)conv);
		j = req(&b, "GET", path);
		assert_int_equal(json_array_size(json_object_get(j, "messages")), 2);
		json_decref(j);
	}
	pc_close(ca);
	pc_close(cb);
	hx_finish(&S);
}

/* ---- membership ends everywhere at once ----------------------------- */

/* Carol is removed from a group while Bob is typing there: his typing
 * (and its end) no longer reaches her, nor do the receipt counts of a
 * message she sent there before. */
static void test_removed_member(void **state)
{
	hx_user_t a, b, c;
	pc_conn_t *ca, *cb, *cc;
	int64_t g, seq;
	char path[96];
	json_t *j;

	(void)state;
	START("--presence-grace", "0");
	hx_user(S.port, "admin", &a);
	hx_user(S.port, "stays", &b);
	hx_user(S.port, "goes", &c);
	g = group_of(&a, &b, &c);
	ca = hx_ws(S.port, &a);
	cb = hx_ws(S.port, &b);
	cc = hx_ws(S.port, &c);
	seq = hx_say(cc, g, "my last words here");
	json_decref(hx_expect(cb, "msg"));
	json_decref(hx_expect(ca, "msg"));
	/* Bob types before she goes: she is told, as a member. */
	hx_sendf(cb, "{\"type\":\"typing\",\"conv\":%lld,\"on\":true}", (long long)g);
	json_decref(hx_expect(ca, "typing"));
	json_decref(hx_expect(cc, "typing"));
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/members/%lld", (long long)g, (long long)c.id);
	json_decref(req(&a, "DELETE", path));
	assert_int_equal(last_status, 204);
	j = hx_expect(cc, "members");
	assert_string_equal(hx_str(j, "event"), "removed");
	json_decref(j);
	json_decref(hx_expect(ca, "members"));
	json_decref(hx_expect(cb, "members"));
	/* His typing ends: only Alice hears of it (the relay held Carol
	 * among its recipients until she left), and typing that starts
	 * anew reaches only Alice too. */
	hx_sendf(cb, "{\"type\":\"typing\",\"conv\":%lld,\"on\":false}", (long long)g);
	json_decref(hx_expect(ca, "typing"));
	hx_sendf(cb, "{\"type\":\"typing\",\"conv\":%lld,\"on\":true}", (long long)g);
	json_decref(hx_expect(ca, "typing"));
	hx_sendf(cb, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":%lld}", (long long)g,
	         (long long)seq);
	/* Counts are sent once a second: wait past it. */
	assert_null(hx_recv_within(cc, 2000));
	pc_close(ca);
	pc_close(cb);
	pc_close(cc);
	hx_finish(&S);
}

/* ---- browsers ------------------------------------------------------- */

static int raw_status(const char *request)
{
	pc_conn_t *c = pc_connect("127.0.0.1", S.port);
	pc_response_t res;
	int st;

	assert_non_null(c);
	assert_int_equal(pc_send_raw(c, request, strlen(request)), 0);
	assert_int_equal(pc_read_response(c, &res, HX_TIMEOUT), 0);
	st = res.status;
	pc_response_free(&res);
	pc_close(c);
	return st;
}

/* A page of another origin can change nothing and open no socket; the
 * server's own origin, the allowed ones and clients without Origin can;
 * a body declared as anything but JSON is refused unread. */
static void test_origin_and_content_type(void **state)
{
	char r[1024];
	hx_user_t u;
	const char body[] = "{\"members\":[1]}";

	(void)state;
	START("--allowed-origins", "https://app.example.com, https://other.example.com");
	hx_user(S.port, "browser", &u);
#define POST_CONV(origin, type)                                                                       \
	(snprintf(r, sizeof r,                                                                        \
	          "POST /api/v1/conversations HTTP/1.1\r\nHost: chat.local:8080\r\n%s%sAuthorization: Bearer %s\r\n" \
	          "Content-Length: %zu\r\n\r\n%s",                                                    \
	          origin, type, u.token, sizeof body - 1, body),                                      \
	 raw_status(r))
	assert_int_equal(POST_CONV("Origin: https://evil.example\r\n", "Content-Type: application/json\r\n"), 403);
	assert_int_equal(POST_CONV("Origin: null\r\n", "Content-Type: application/json\r\n"), 403);
	/* Own origin (the Host), an allowed one, none at all: served (400:
	 * user 1 is the caller itself, which is a bad request, not a refusal). */
	assert_int_equal(POST_CONV("Origin: http://chat.local:8080\r\n", "Content-Type: application/json\r\n"), 400);
	assert_int_equal(POST_CONV("Origin: https://other.example.com\r\n", "Content-Type: application/json\r\n"), 400);
	assert_int_equal(POST_CONV("", "Content-Type: application/json; charset=utf-8\r\n"), 400);
	/* Not JSON: what a form on another site could send without asking. */
	assert_int_equal(POST_CONV("", "Content-Type: text/plain\r\n"), 415);
	assert_int_equal(POST_CONV("", "Content-Type: application/x-www-form-urlencoded\r\n"), 415);
	assert_int_equal(POST_CONV("", "Content-Type: multipart/form-data; boundary=x\r\n"), 415);
	/* No type at all: read as JSON, as the protocol's bodies are. */
	assert_int_equal(POST_CONV("", ""), 400);
	/* GETs carry no Origin check. */
	snprintf(r, sizeof r, "GET /api/v1/conversations HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n"
	                      "Authorization: Bearer %s\r\n\r\n", u.token);
	assert_int_equal(raw_status(r), 200);
	/* The upgrade. */
	snprintf(r, sizeof r,
	         "GET /chat/v1/ws?token=%s HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nUpgrade: websocket\r\n"
	         "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
	         u.token);
	assert_int_equal(raw_status(r), 403);
	snprintf(r, sizeof r,
	         "GET /chat/v1/ws?token=%s HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\nUpgrade: websocket\r\n"
	         "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
	         u.token);
	assert_int_equal(raw_status(r), 101);
#undef POST_CONV
	hx_finish(&S);
}

/* A ticket opens one WebSocket, once; after its device logs out it
 * opens nothing. */
static void test_tickets(void **state)
{
	hx_user_t u;
	pc_conn_t *c;
	pc_response_t res;
	char path[128], ticket[64];
	json_t *j;

	(void)state;
	START("--presence-grace", "0");
	hx_user(S.port, "ticketed", &u);
	j = post(&u, "/api/v1/ws-tickets", "{}");
	assert_int_equal(last_status, 201);
	assert_int_equal(hx_int(j, "expires_in_ms"), 30000);
	snprintf(ticket, sizeof ticket, "%s", hx_str(j, "ticket"));
	json_decref(j);
	snprintf(path, sizeof path, "/chat/v1/ws?ticket=%s", ticket);
	assert_non_null(c = pc_connect("127.0.0.1", S.port));
	assert_int_equal(pc_ws_open(c, path, NULL, NULL, HX_TIMEOUT), 0);
	json_decref(hx_expect(c, "ready"));
	pc_close(c);
	/* Once only. */
	assert_non_null(c = pc_connect("127.0.0.1", S.port));
	assert_int_equal(pc_ws_open(c, path, NULL, &res, HX_TIMEOUT), PC_ERROR);
	assert_int_equal(res.status, 401);
	pc_response_free(&res);
	pc_close(c);
	/* A ticket of a device that then logs out is worthless. */
	j = post(&u, "/api/v1/ws-tickets", "{}");
	snprintf(path, sizeof path, "/chat/v1/ws?ticket=%s", hx_str(j, "ticket"));
	json_decref(j);
	json_decref(req(&u, "DELETE", "/api/v1/sessions/current"));
	assert_non_null(c = pc_connect("127.0.0.1", S.port));
	assert_int_equal(pc_ws_open(c, path, NULL, &res, HX_TIMEOUT), PC_ERROR);
	assert_int_equal(res.status, 401);
	pc_response_free(&res);
	pc_close(c);
	hx_finish(&S);
}

/* A user sees its devices and logs any of them out: that device's token
 * stops working and its socket closes with 1008. */
static void test_devices(void **state)
{
	hx_user_t u, second;
	pc_conn_t *c2;
	json_t *j, *d;
	char path[64];
	size_t i;
	int current = 0;

	(void)state;
	START("--presence-grace", "0");
	hx_user(S.port, "twodevices", &u);
	hx_login(S.port, &u, &second);
	c2 = hx_ws(S.port, &second);
	j = req(&u, "GET", "/api/v1/devices");
	assert_int_equal(last_status, 200);
	assert_int_equal(json_array_size(json_object_get(j, "devices")), 2);
	json_array_foreach(json_object_get(j, "devices"), i, d) {
		if (json_is_true(json_object_get(d, "current"))) {
			current++;
			assert_int_equal(hx_int(d, "device_id"), u.device);
		}
		assert_true(hx_int(d, "last_used") > 0);
	}
	assert_int_equal(current, 1);
	json_decref(j);
	snprintf(path, sizeof path, "/api/v1/devices/%lld", (long long)second.device);
	json_decref(req(&u, "DELETE", path));
	assert_int_equal(last_status, 204);
	assert_int_equal(hx_expect_close(c2), 1008);
	expect_error(req(&second, "GET", "/api/v1/conversations"), "unauthorized");
	expect_error(req(&u, "DELETE", path), "not_found");
	pc_close(c2);
	hx_finish(&S);
}

/* With an operator token, /metrics opens on the public listener to that
 * token only. */
static void test_operator_token(void **state)
{
	char file[] = "/tmp/parley-optoken-XXXXXX";
	int fd = mkstemp(file);
	hx_user_t u;

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "operator-secret-0123456789\n", 27), 27);
	close(fd);
	START("--operator-token-file", file);
	hx_user(S.port, "user", &u);
	{
		pc_conn_t *c = pc_connect("127.0.0.1", S.port);
		pc_response_t res;
		assert_int_equal(pc_http(c, "GET", "/metrics", "operator-secret-0123456789", NULL, &res, HX_TIMEOUT), 0);
		assert_int_equal(res.status, 200);
		assert_non_null(strstr(res.body, "parley_connections"));
		pc_response_free(&res);
		pc_close(c);
	}
	expect_error(hx_http(S.port, "GET", "/metrics", "operator-secret-wrong", NULL, &last_status), "not_found");
	expect_error(hx_http(S.port, "GET", "/metrics", u.token, NULL, &last_status), "not_found");
	unlink(file);
	hx_finish(&S);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_block, stop_server),
		cmocka_unit_test_teardown(test_group_adds, stop_server),
		cmocka_unit_test_teardown(test_strangers_budget, stop_server),
		cmocka_unit_test_teardown(test_strangers_budget_concurrent, stop_server),
		cmocka_unit_test_teardown(test_blocks_shrink_budget, stop_server),
		cmocka_unit_test_teardown(test_conversation_cap, stop_server),
		cmocka_unit_test_teardown(test_victim_answers_paged, stop_server),
		cmocka_unit_test_teardown(test_work_budget, stop_server),
		cmocka_unit_test_teardown(test_resume_during_refused_resume, stop_server),
		cmocka_unit_test_teardown(test_storage_budget, stop_server),
		cmocka_unit_test_teardown(test_removed_member, stop_server),
		cmocka_unit_test_teardown(test_origin_and_content_type, stop_server),
		cmocka_unit_test_teardown(test_tickets, stop_server),
		cmocka_unit_test_teardown(test_devices, stop_server),
		cmocka_unit_test_teardown(test_operator_token, stop_server),
	};

	hx_filter();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
