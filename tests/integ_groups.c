/* integ_groups.c - groups end to end: creation, members events, fan-out
 * to every member's devices, admins adding and removing, leaving, the
 * join floor of history, the 1,024-member limit, and one message reaching
 * hundreds of connected members of a 1,024-member group exactly once.
 * The server hashes passwords at minimum cost so that a thousand users
 * can be registered quickly. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static hx_server_t srv;

static int setup(void **state)
{
	static const char *const args[] = {"--fast-password-hashing", NULL};

	(void)state;
	return hx_start(&srv, NULL, args);
}

static int teardown(void **state)
{
	(void)state;
	hx_finish(&srv);
	return 0;
}

static json_t *api(const char *method, const char *path, const hx_user_t *u, const char *body,
                   int *st)
{
	return hx_http(srv.port, method, path, u ? u->token : NULL, body, st);
}

static void expect_members_event(pc_conn_t *c, int64_t conv, const char *event, int64_t user,
                                 int64_t by, int64_t count)
{
	json_t *j = hx_expect(c, "members");

	assert_int_equal(hx_int(j, "conv"), conv);
	assert_string_equal(hx_str(j, "event"), event);
	if (user)
		assert_int_equal(hx_int(j, "user"), user);
	assert_int_equal(hx_int(j, "by"), by);
	assert_int_equal(hx_int(j, "count"), count);
	json_decref(j);
}

static int64_t create_group(const hx_user_t *creator, const int64_t *others, size_t n,
                            const char *title, json_t **out)
{
	char *body = malloc(32 * n + 256);
	size_t len = 0, i;
	json_t *j;
	int64_t id;
	int st;

	len += (size_t)sprintf(body, "{\"title\":\"%s\",\"members\":[", title);
	for (i = 0; i < n; i++)
		len += (size_t)sprintf(body + len, "%s%lld", i ? "," : "", (long long)others[i]);
	sprintf(body + len, "]}");
	j = api("POST", "/api/v1/conversations", creator, body, &st);
	free(body);
	assert_int_equal(st, 201);
	assert_string_equal(hx_str(j, "kind"), "group");
	id = hx_int(j, "conversation_id");
	if (out)
		*out = j;
	else
		json_decref(j);
	return id;
}

static void send_text(pc_conn_t *c, int64_t conv, const char *cmid, const char *body)
{
	json_t *j;

	hx_sendf(c, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"%s\",\"body\":\"%s\"}", (long long)conv,
	         cmid, body);
	j = hx_expect(c, "ack");
	json_decref(j);
}

static void expect_msg(pc_conn_t *c, int64_t seq, const char *body)
{
	json_t *j = hx_expect(c, "msg");

	assert_int_equal(hx_int(j, "seq"), seq);
	assert_string_equal(hx_str(j, "body"), body);
	json_decref(j);
}

static void test_group_lifecycle(void **state)
{
	hx_user_t a, b, c, d;
	pc_conn_t *ca, *cb, *cc, *cd;
	int64_t conv, others[2];
	char path[160], body[64];
	json_t *j, *g;
	int st;

	(void)state;
	hx_user(srv.port, "ga", &a);
	hx_user(srv.port, "gb", &b);
	hx_user(srv.port, "gc", &c);
	hx_user(srv.port, "gd", &d);
	ca = hx_ws(srv.port, &a);
	cb = hx_ws(srv.port, &b);
	cc = hx_ws(srv.port, &c);
	cd = hx_ws(srv.port, &d);
	others[0] = b.id;
	others[1] = c.id;
	conv = create_group(&a, others, 2, "trio", &g);
	assert_string_equal(hx_str(g, "title"), "trio");
	assert_int_equal(json_array_size(json_object_get(g, "members")), 3);
	assert_int_equal(json_array_size(json_object_get(g, "admins")), 1);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(g, "admins"), 0)), a.id);
	json_decref(g);
	expect_members_event(ca, conv, "created", 0, a.id, 3);
	expect_members_event(cb, conv, "created", 0, a.id, 3);
	expect_members_event(cc, conv, "created", 0, a.id, 3);

	/* A message reaches every member. */
	send_text(ca, conv, "g1", "hello group");
	expect_msg(cb, 1, "hello group");
	expect_msg(cc, 1, "hello group");
	assert_null(hx_recv_within(cd, 200)); /* not a member */

	/* Only admins add. */
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/members", (long long)conv);
	snprintf(body, sizeof body, "{\"user_id\":%lld}", (long long)d.id);
	j = api("POST", path, &b, body, &st);
	assert_int_equal(st, 403);
	json_decref(j);
	j = api("POST", path, &a, body, &st);
	assert_int_equal(st, 204);
	expect_members_event(ca, conv, "added", d.id, a.id, 4);
	expect_members_event(cb, conv, "added", d.id, a.id, 4);
	expect_members_event(cc, conv, "added", d.id, a.id, 4);
	expect_members_event(cd, conv, "added", d.id, a.id, 4);
	j = api("POST", path, &a, body, &st); /* twice: nothing changes */
	assert_int_equal(st, 204);
	/* Dave sees nothing from before he joined. */
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages", (long long)conv);
	j = api("GET", path, &d, NULL, &st);
	assert_int_equal(st, 200);
	assert_int_equal(json_array_size(json_object_get(j, "messages")), 0);
	json_decref(j);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld", (long long)conv);
	j = api("GET", path, &d, NULL, &st);
	assert_int_equal(st, 200);
	assert_int_equal(hx_int(j, "unread"), 0);
	assert_int_equal(hx_int(j, "last_seq"), 1);
	assert_int_equal(json_array_size(json_object_get(j, "members")), 4);
	json_decref(j);
	send_text(cb, conv, "g2", "welcome dave");
	expect_msg(ca, 2, "welcome dave");
	expect_msg(cc, 2, "welcome dave");
	expect_msg(cd, 2, "welcome dave");

	/* Carol is removed: she hears of it, then nothing more. */
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/members/%lld", (long long)conv, (long long)c.id);
	j = api("DELETE", path, &b, NULL, &st);
	assert_int_equal(st, 403); /* not an admin */
	json_decref(j);
	j = api("DELETE", path, &a, NULL, &st);
	assert_int_equal(st, 204);
	expect_members_event(cc, conv, "removed", c.id, a.id, 3);
	expect_members_event(ca, conv, "removed", c.id, a.id, 3);
	expect_members_event(cb, conv, "removed", c.id, a.id, 3);
	expect_members_event(cd, conv, "removed", c.id, a.id, 3);
	send_text(ca, conv, "g3", "carol is gone");
	expect_msg(cb, 3, "carol is gone");
	expect_msg(cd, 3, "carol is gone");
	assert_null(hx_recv_within(cc, 300));
	hx_sendf(cc, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"c9\",\"body\":\"let me in\"}", (long long)conv);
	j = hx_expect(cc, "error");
	assert_string_equal(hx_str(j, "code"), "forbidden");
	json_decref(j);
	hx_sendf(cc, "{\"type\":\"resume\",\"convs\":{\"%lld\":0}}", (long long)conv);
	j = hx_expect(cc, "error");
	assert_string_equal(hx_str(j, "code"), "forbidden");
	json_decref(j);
	json_decref(hx_expect(cc, "resumed"));
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages", (long long)conv);
	j = api("GET", path, &c, NULL, &st);
	assert_int_equal(st, 403);
	json_decref(j);
	j = api("DELETE", "/api/v1/conversations/1/members/1", &c, NULL, &st); /* whatever it is */
	assert_true(st == 403 || st == 404 || st == 400);
	json_decref(j);

	/* Bob leaves; then Alice, the last admin: Dave is promoted. */
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/members/%lld", (long long)conv, (long long)b.id);
	j = api("DELETE", path, &b, NULL, &st);
	assert_int_equal(st, 204);
	expect_members_event(cb, conv, "left", b.id, b.id, 2);
	expect_members_event(ca, conv, "left", b.id, b.id, 2);
	expect_members_event(cd, conv, "left", b.id, b.id, 2);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/members/%lld", (long long)conv, (long long)a.id);
	j = api("DELETE", path, &a, NULL, &st);
	assert_int_equal(st, 204);
	expect_members_event(ca, conv, "left", a.id, a.id, 1);
	expect_members_event(cd, conv, "left", a.id, a.id, 1);
	expect_members_event(cd, conv, "admin", d.id, a.id, 1);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld", (long long)conv);
	j = api("GET", path, &d, NULL, &st);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(j, "admins"), 0)), d.id);
	json_decref(j);
	j = api("GET", path, &a, NULL, &st);
	assert_int_equal(st, 403);
	json_decref(j);
	pc_close(ca);
	pc_close(cb);
	pc_close(cc);
	pc_close(cd);
}

static void test_group_refusals(void **state)
{
	hx_user_t a, b, c;
	json_t *j;
	char body[256], path[128];
	int st;

	(void)state;
	hx_user(srv.port, "gr", &a);
	hx_user(srv.port, "gr", &b);
	hx_user(srv.port, "gr", &c);
	snprintf(body, sizeof body, "{\"members\":[%lld,%lld],\"title\":7}", (long long)b.id, (long long)c.id);
	j = api("POST", "/api/v1/conversations", &a, body, &st);
	assert_int_equal(st, 400);
	json_decref(j);
	snprintf(body, sizeof body, "{\"members\":[%lld,9007199254740000]}", (long long)b.id);
	j = api("POST", "/api/v1/conversations", &a, body, &st);
	assert_int_equal(st, 404);
	json_decref(j);
	/* Nothing was created by those. */
	j = api("GET", "/api/v1/conversations", &a, NULL, &st);
	assert_int_equal(json_array_size(json_object_get(j, "conversations")), 0);
	json_decref(j);
	{
		/* 1,024 others make 1,025 members: one too many. */
		char *big = malloc(20 * 1100);
		size_t len = (size_t)sprintf(big, "{\"members\":[");
		for (int i = 0; i < 1024; i++)
			len += (size_t)sprintf(big + len, "%s%d", i ? "," : "", 100000 + i);
		sprintf(big + len, "]}");
		j = api("POST", "/api/v1/conversations", &a, big, &st);
		assert_int_equal(st, 400);
		json_decref(j);
		free(big);
	}
	/* A member of a direct chat cannot add to it. */
	snprintf(body, sizeof body, "{\"members\":[%lld]}", (long long)b.id);
	j = api("POST", "/api/v1/conversations", &a, body, &st);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/members", (long long)hx_int(j, "conversation_id"));
	json_decref(j);
	snprintf(body, sizeof body, "{\"user_id\":%lld}", (long long)c.id);
	j = api("POST", path, &a, body, &st);
	assert_int_equal(st, 400);
	json_decref(j);
}

/* Waits for "receipts" frames on c until message seq of conv shows the
 * given counts (delivered < 0: must be null). Other frames fail the test. */
static void await_counts(pc_conn_t *c, int64_t conv, int64_t seq, int64_t delivered, int64_t read)
{
	for (;;) {
		json_t *j = hx_expect(c, "receipts"), *e;
		size_t i;
		int done = 0;

		assert_int_equal(hx_int(j, "conv"), conv);
		json_array_foreach(json_object_get(j, "counts"), i, e) {
			json_t *d = json_object_get(e, "delivered");
			if (hx_int(e, "seq") != seq)
				continue;
			if (delivered < 0)
				assert_true(json_is_null(d)); /* never a count in large groups */
			if (hx_int(e, "read") == read &&
			    (delivered < 0 || (json_is_integer(d) && json_integer_value(d) == delivered)))
				done = 1;
		}
		json_decref(j);
		if (done)
			return;
	}
}

static void test_receipt_counts(void **state)
{
	hx_user_t a, b, b2, c;
	pc_conn_t *ca, *cb, *cb2, *cc;
	int64_t conv, others[2];
	json_t *j, *r;
	char path[160];
	size_t idx;
	int st;

	(void)state;
	hx_user(srv.port, "ra", &a);
	hx_user(srv.port, "rb", &b);
	hx_login(srv.port, &b, &b2);
	hx_user(srv.port, "rc", &c);
	ca = hx_ws(srv.port, &a);
	cb = hx_ws(srv.port, &b);
	cb2 = hx_ws(srv.port, &b2);
	cc = hx_ws(srv.port, &c);
	others[0] = b.id;
	others[1] = c.id;
	conv = create_group(&a, others, 2, "counts", NULL);
	json_decref(hx_expect(ca, "members"));
	json_decref(hx_expect(cb, "members"));
	json_decref(hx_expect(cb2, "members"));
	json_decref(hx_expect(cc, "members"));
	send_text(ca, conv, "q1", "one");
	send_text(ca, conv, "q2", "two");
	expect_msg(cb, 1, "one");
	expect_msg(cb, 2, "two");
	expect_msg(cb2, 1, "one");
	expect_msg(cb2, 2, "two");
	expect_msg(cc, 1, "one");
	expect_msg(cc, 2, "two");
	/* Bob reads both, Carol has received the first. */
	hx_sendf(cb, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":2}", (long long)conv);
	hx_sendf(cc, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"delivered\",\"seq\":1}", (long long)conv);
	/* Alice gets counts, not per-member frames. */
	await_counts(ca, conv, 1, 2, 1);
	j = hx_expect(cb2, "receipt"); /* Bob's own other device hears of his read */
	assert_int_equal(hx_int(j, "user"), b.id);
	json_decref(j);
	assert_null(hx_recv_within(cc, 300)); /* Carol hears nothing of Bob */
	/* Per-member detail of a small group. */
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages/1/receipts", (long long)conv);
	j = hx_http(srv.port, "GET", path, a.token, NULL, &st);
	assert_int_equal(st, 200);
	assert_int_equal(json_array_size(json_object_get(j, "receipts")), 2);
	json_array_foreach(json_object_get(j, "receipts"), idx, r) {
		if (hx_int(r, "user_id") == c.id) {
			assert_true(hx_int(r, "delivered_at") > 0);
			assert_true(json_is_null(json_object_get(r, "read_at")));
		} else {
			assert_int_equal(hx_int(r, "user_id"), b.id);
			assert_true(hx_int(r, "read_at") > 0);
		}
	}
	json_decref(j);
	pc_close(ca);
	pc_close(cb);
	pc_close(cb2);
	pc_close(cc);
}

static void test_rate_limit_by_cost(void **state)
{
	/* Budget: 4 recipients at once, refilled at one per 20 s, so that no
	 * refill during the test can make it pass by chance. */
	static const char *const args[] = {"--fast-password-hashing", "--rate-limit", "0.05",
	                                   "--rate-burst", "4", NULL};
	hx_server_t lim;
	hx_user_t a, b, c;
	pc_conn_t *ca;
	int64_t group, direct, others[2];
	char body[128], path[128];
	json_t *j;
	int st;

	(void)state;
	assert_int_equal(hx_start(&lim, NULL, args), 0);
	hx_user(lim.port, "la", &a);
	hx_user(lim.port, "lb", &b);
	hx_user(lim.port, "lc", &c);
	ca = hx_ws(lim.port, &a);
	direct = hx_direct(lim.port, &a, &b);
	others[0] = b.id;
	others[1] = c.id;
	snprintf(body, sizeof body, "{\"members\":[%lld,%lld]}", (long long)b.id, (long long)c.id);
	j = hx_http(lim.port, "POST", "/api/v1/conversations", a.token, body, &st);
	group = hx_int(j, "conversation_id");
	json_decref(j);
	json_decref(hx_expect(ca, "members"));
	(void)others;
	/* Two group posts cost 2 recipients each: the whole burst. */
	hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"p1\",\"body\":\"x\"}", (long long)group);
	json_decref(hx_expect(ca, "ack"));
	hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"p2\",\"body\":\"x\"}", (long long)group);
	json_decref(hx_expect(ca, "ack"));
	/* The third is refused with a hint, and not stored. */
	hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"p3\",\"body\":\"x\"}", (long long)group);
	j = hx_expect(ca, "error");
	assert_string_equal(hx_str(j, "code"), "rate_limited");
	assert_string_equal(hx_str(j, "ref"), "p3");
	assert_true(hx_int(j, "retry_after_ms") > 0);
	assert_true(hx_int(j, "retry_after_ms") <= 40000);
	json_decref(j);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages", (long long)group);
	j = hx_http(lim.port, "GET", path, a.token, NULL, &st);
	assert_int_equal(json_array_size(json_object_get(j, "messages")), 2);
	json_decref(j);
	/* A repeated cmid costs nothing: it is answered from the store. */
	hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"p1\",\"body\":\"x\"}", (long long)group);
	j = hx_expect(ca, "ack");
	assert_int_equal(hx_int(j, "seq"), 1);
	json_decref(j);
	/* The budget is the sender's, across conversations: a direct message
	 * (cost 1) is refused too until the bucket refills. */
	hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"d1\",\"body\":\"x\"}", (long long)direct);
	j = hx_expect(ca, "error");
	assert_string_equal(hx_str(j, "code"), "rate_limited");
	json_decref(j);
	/* Other users are not affected. */
	{
		pc_conn_t *cb = hx_ws(lim.port, &b);
		hx_sendf(cb, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"b1\",\"body\":\"x\"}", (long long)group);
		json_decref(hx_expect(cb, "ack"));
		pc_close(cb);
	}
	pc_close(ca);
	hx_finish(&lim);
}

/* Registers and logs in n users over one keep-alive connection. */
static void many_users(int n, hx_user_t *users)
{
	pc_conn_t *c = pc_connect("127.0.0.1", srv.port);
	char body[128];
	int i;

	assert_non_null(c);
	for (i = 0; i < n; i++) {
		pc_response_t res;
		json_t *j;

		snprintf(users[i].name, sizeof users[i].name, "%s", hx_name("m"));
		snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"correct horse\"}", users[i].name);
		assert_int_equal(pc_http(c, "POST", "/api/v1/users", NULL, body, &res, HX_TIMEOUT), 0);
		assert_int_equal(res.status, 201);
		j = json_loads(res.body, 0, NULL);
		users[i].id = hx_int(j, "user_id");
		json_decref(j);
		pc_response_free(&res);
		assert_int_equal(pc_http(c, "POST", "/api/v1/sessions", NULL, body, &res, HX_TIMEOUT), 0);
		assert_int_equal(res.status, 201);
		j = json_loads(res.body, 0, NULL);
		users[i].device = hx_int(j, "device_id");
		snprintf(users[i].token, sizeof users[i].token, "%s", hx_str(j, "token"));
		json_decref(j);
		pc_response_free(&res);
	}
	pc_close(c);
}

#define BIG 1024
#define ONLINE 300

static void test_big_group_fanout(void **state)
{
	hx_user_t *u = calloc(BIG, sizeof *u);
	pc_conn_t **c = calloc(ONLINE, sizeof *c);
	int64_t *others = calloc(BIG, sizeof *others), conv;
	json_t *j;
	int i;

	(void)state;
	many_users(BIG, u);
	for (i = 1; i < BIG; i++)
		others[i - 1] = u[i].id;
	/* The creator and the first ONLINE - 1 others are connected. */
	for (i = 0; i < ONLINE; i++)
		c[i] = hx_ws(srv.port, &u[i]);
	conv = create_group(&u[0], others, BIG - 1, "everyone", NULL);
	for (i = 0; i < ONLINE; i++)
		expect_members_event(c[i], conv, "created", 0, u[0].id, BIG);
	send_text(c[0], conv, "big1", "to all 1024");
	for (i = 1; i < ONLINE; i++) {
		j = hx_expect(c[i], "msg");
		assert_int_equal(hx_int(j, "seq"), 1);
		assert_int_equal(hx_int(j, "from"), u[0].id);
		json_decref(j);
	}
	/* Exactly once: a second message is the next thing everyone gets. */
	send_text(c[0], conv, "big2", "again");
	for (i = 1; i < ONLINE; i++)
		expect_msg(c[i], 2, "again");
	for (i = 0; i < ONLINE; i += 37)
		assert_null(hx_recv_within(c[i], 50));

	/* A receipt storm: every online member reads both messages (and says
	 * delivered first, which a large group does not keep). */
	for (i = 1; i < ONLINE; i++) {
		hx_sendf(c[i], "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"delivered\",\"seq\":2}",
		         (long long)conv);
		hx_sendf(c[i], "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":2}",
		         (long long)conv);
	}
	/* The sender's counts converge, with no delivered count. */
	await_counts(c[0], conv, 1, -1, ONLINE - 1);
	{
		char path[128];
		int st;
		snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages/2/receipts", (long long)conv);
		j = hx_http(srv.port, "GET", path, u[5].token, NULL, &st);
		assert_int_equal(st, 200);
		assert_true(json_is_null(json_object_get(j, "delivered")));
		assert_int_equal(hx_int(j, "read"), ONLINE - 1);
		json_decref(j);
	}
	/* Members hear nothing of each other's receipts. */
	for (i = 1; i < ONLINE; i += 23)
		assert_null(hx_recv_within(c[i], 20));
	for (i = 0; i < ONLINE; i++)
		pc_close(c[i]);
	free(c);
	free(u);
	free(others);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_group_lifecycle),
		cmocka_unit_test(test_group_refusals),
		cmocka_unit_test(test_receipt_counts),
		cmocka_unit_test(test_rate_limit_by_cost),
		cmocka_unit_test(test_big_group_fanout),
	};
	hx_filter();
	return cmocka_run_group_tests_name("integ_groups", tests, setup, teardown);
}
