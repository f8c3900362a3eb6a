/* integ_chat.c - direct chats end to end over real sockets: send, ack and
 * msg; echo to the sender's other devices; idempotent sends; delivered and
 * read watermarks and per-message receipts; resume of exactly the missed
 * messages; history paging; the conversation list; logout. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

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

/* Two fresh users, alice and bob, and their direct chat. */
static int64_t pair(hx_user_t *a, hx_user_t *b)
{
	hx_user(srv.port, "alice", a);
	hx_user(srv.port, "bob", b);
	return hx_direct(srv.port, a, b);
}

/* Sends body with cmid into conv and returns the ack. */
static json_t *send_msg(pc_conn_t *c, int64_t conv, const char *cmid, const char *body)
{
	json_t *ack;

	hx_sendf(c, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"%s\",\"body\":\"%s\"}", (long long)conv,
	         cmid, body);
	ack = hx_expect(c, "ack");
	assert_string_equal(hx_str(ack, "cmid"), cmid);
	assert_int_equal(hx_int(ack, "conv"), conv);
	return ack;
}

static void test_send_ack_msg(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	json_t *ack, *msg;
	int64_t conv;

	(void)state;
	conv = pair(&a, &b);
	assert_int_equal(hx_direct(srv.port, &b, &a), conv); /* same pair, same chat */
	ca = hx_ws(srv.port, &a);
	cb = hx_ws(srv.port, &b);

	ack = send_msg(ca, conv, "m1", "hello \\\"bob\\\" \\u00e9");
	assert_int_equal(hx_int(ack, "seq"), 1);
	assert_true(strlen(hx_str(ack, "id")) > 10);
	msg = hx_expect(cb, "msg");
	assert_int_equal(hx_int(msg, "conv"), conv);
	assert_int_equal(hx_int(msg, "seq"), 1);
	assert_int_equal(hx_int(msg, "from"), a.id);
	assert_string_equal(hx_str(msg, "cmid"), "m1");
	assert_string_equal(hx_str(msg, "body"), "hello \"bob\" \xc3\xa9");
	assert_string_equal(hx_str(msg, "id"), hx_str(ack, "id"));
	assert_int_equal(hx_int(msg, "ts"), hx_int(ack, "ts"));
	json_decref(ack);
	json_decref(msg);

	/* The reply gets seq 2, and ids increase. */
	ack = send_msg(cb, conv, "r1", "hi alice");
	assert_int_equal(hx_int(ack, "seq"), 2);
	msg = hx_expect(ca, "msg");
	assert_int_equal(hx_int(msg, "seq"), 2);
	assert_int_equal(hx_int(msg, "from"), b.id);
	json_decref(ack);
	json_decref(msg);
	pc_close(ca);
	pc_close(cb);
}

static void test_multi_device_echo(void **state)
{
	hx_user_t a, a2, b;
	pc_conn_t *ca, *ca2, *cb;
	json_t *ack, *msg;
	int64_t conv;

	(void)state;
	hx_user(srv.port, "alice", &a);
	hx_login(srv.port, &a, &a2);
	hx_user(srv.port, "bob", &b);
	assert_int_not_equal(a.device, a2.device);
	conv = hx_direct(srv.port, &a, &b);
	ca = hx_ws(srv.port, &a);
	ca2 = hx_ws(srv.port, &a2);
	cb = hx_ws(srv.port, &b);

	ack = send_msg(ca, conv, "x1", "from the phone");
	msg = hx_expect(ca2, "msg"); /* the sender's other device */
	assert_string_equal(hx_str(msg, "body"), "from the phone");
	assert_int_equal(hx_int(msg, "from"), a.id);
	json_decref(msg);
	msg = hx_expect(cb, "msg");
	json_decref(msg);
	/* ... but not the sending device itself: it got the ack. */
	assert_null(hx_recv_within(ca, 300));
	json_decref(ack);
	pc_close(ca);
	pc_close(ca2);
	pc_close(cb);
}

static void test_idempotent_send(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	json_t *ack1, *ack2, *msg, *hist;
	int64_t conv;
	char path[128];
	int st;

	(void)state;
	conv = pair(&a, &b);
	ca = hx_ws(srv.port, &a);
	cb = hx_ws(srv.port, &b);
	ack1 = send_msg(ca, conv, "same", "once");
	msg = hx_expect(cb, "msg");
	json_decref(msg);
	/* Repeated, even on a new connection: the same ack, stored once. */
	pc_close(ca);
	ca = hx_ws(srv.port, &a);
	ack2 = send_msg(ca, conv, "same", "once");
	assert_string_equal(hx_str(ack1, "id"), hx_str(ack2, "id"));
	assert_int_equal(hx_int(ack1, "seq"), hx_int(ack2, "seq"));
	assert_int_equal(hx_int(ack1, "ts"), hx_int(ack2, "ts"));
	assert_null(hx_recv_within(cb, 300)); /* no second delivery */
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages", (long long)conv);
	hist = hx_http(srv.port, "GET", path, a.token, NULL, &st);
	assert_int_equal(st, 200);
	assert_int_equal(json_array_size(json_object_get(hist, "messages")), 1);
	json_decref(hist);
	json_decref(ack1);
	json_decref(ack2);
	pc_close(ca);
	pc_close(cb);
}

static void test_receipts(void **state)
{
	hx_user_t a, b, b2;
	pc_conn_t *ca, *cb, *cb2;
	json_t *j, *r, *list, *conv_entry;
	int64_t conv;
	char path[128];
	int st, i;

	(void)state;
	hx_user(srv.port, "alice", &a);
	hx_user(srv.port, "bob", &b);
	hx_login(srv.port, &b, &b2);
	conv = hx_direct(srv.port, &a, &b);
	ca = hx_ws(srv.port, &a);
	cb = hx_ws(srv.port, &b);
	cb2 = hx_ws(srv.port, &b2);
	for (i = 1; i <= 3; i++) {
		char cmid[16];
		snprintf(cmid, sizeof cmid, "c%d", i);
		json_decref(send_msg(ca, conv, cmid, "ping"));
		json_decref(hx_expect(cb, "msg"));
		json_decref(hx_expect(cb2, "msg"));
	}
	/* Bob's unread count before he reads. */
	list = hx_http(srv.port, "GET", "/api/v1/conversations", b.token, NULL, &st);
	conv_entry = json_array_get(json_object_get(list, "conversations"), 0);
	assert_int_equal(hx_int(conv_entry, "conversation_id"), conv);
	assert_int_equal(hx_int(conv_entry, "unread"), 3);
	assert_int_equal(hx_int(conv_entry, "last_seq"), 3);
	assert_string_equal(hx_str(json_object_get(conv_entry, "last_message"), "cmid"), "c3");
	json_decref(list);

	/* Delivered up to 3: one frame covers all three messages. */
	hx_sendf(cb, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"delivered\",\"seq\":3}",
	         (long long)conv);
	j = hx_expect(ca, "receipt");
	assert_int_equal(hx_int(j, "user"), b.id);
	assert_string_equal(hx_str(j, "state"), "delivered");
	assert_int_equal(hx_int(j, "seq"), 3);
	json_decref(j);
	j = hx_expect(cb2, "receipt"); /* Bob's other device learns too */
	assert_int_equal(hx_int(j, "user"), b.id);
	json_decref(j);

	/* Read up to 2 on the second device. */
	hx_sendf(cb2, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":2}", (long long)conv);
	j = hx_expect(ca, "receipt");
	assert_string_equal(hx_str(j, "state"), "read");
	assert_int_equal(hx_int(j, "seq"), 2);
	json_decref(j);
	j = hx_expect(cb, "receipt"); /* the phone's badge clears */
	assert_string_equal(hx_str(j, "state"), "read");
	assert_int_equal(hx_int(j, "user"), b.id);
	json_decref(j);

	/* A lower watermark is ignored: nothing is forwarded. */
	hx_sendf(cb, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":1}", (long long)conv);
	/* A watermark past the head is clamped to it. */
	hx_sendf(cb, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":99}", (long long)conv);
	j = hx_expect(ca, "receipt");
	assert_int_equal(hx_int(j, "seq"), 3);
	json_decref(j);

	list = hx_http(srv.port, "GET", "/api/v1/conversations", b.token, NULL, &st);
	conv_entry = json_array_get(json_object_get(list, "conversations"), 0);
	assert_int_equal(hx_int(conv_entry, "read_seq"), 3);
	assert_int_equal(hx_int(conv_entry, "unread"), 0);
	json_decref(list);

	/* Per-message receipts: message 3 was delivered before it was read,
	 * message 1 read when the watermark passed 2. */
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages/3/receipts", (long long)conv);
	j = hx_http(srv.port, "GET", path, a.token, NULL, &st);
	assert_int_equal(st, 200);
	assert_int_equal(json_array_size(json_object_get(j, "receipts")), 1);
	r = json_array_get(json_object_get(j, "receipts"), 0);
	assert_int_equal(hx_int(r, "user_id"), b.id);
	assert_true(hx_int(r, "delivered_at") > 0);
	assert_true(hx_int(r, "read_at") >= hx_int(r, "delivered_at"));
	json_decref(j);
	/* Bob cannot have receipts for messages that do not exist. */
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages/4/receipts", (long long)conv);
	j = hx_http(srv.port, "GET", path, a.token, NULL, &st);
	assert_int_equal(st, 404);
	json_decref(j);
	pc_close(ca);
	pc_close(cb);
	pc_close(cb2);
}

static void test_receipt_before_any_read(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	json_t *j, *r;
	int64_t conv;
	char path[128];
	int st;

	(void)state;
	conv = pair(&a, &b);
	ca = hx_ws(srv.port, &a);
	cb = hx_ws(srv.port, &b);
	json_decref(send_msg(ca, conv, "u1", "unread"));
	json_decref(hx_expect(cb, "msg"));
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages/1/receipts", (long long)conv);
	j = hx_http(srv.port, "GET", path, a.token, NULL, &st);
	assert_int_equal(st, 200);
	r = json_array_get(json_object_get(j, "receipts"), 0);
	assert_true(json_is_null(json_object_get(r, "delivered_at")));
	assert_true(json_is_null(json_object_get(r, "read_at")));
	json_decref(j);
	pc_close(ca);
	pc_close(cb);
}

static void test_resume(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	json_t *j;
	int64_t conv, i;
	char cmid[32];

	(void)state;
	conv = pair(&a, &b);
	ca = hx_ws(srv.port, &a);
	cb = hx_ws(srv.port, &b);
	json_decref(send_msg(ca, conv, "s1", "one"));
	json_decref(hx_expect(cb, "msg"));
	pc_close(cb); /* Bob goes into the subway */
	for (i = 2; i <= 6; i++) {
		snprintf(cmid, sizeof cmid, "s%lld", (long long)i);
		json_decref(send_msg(ca, conv, cmid, "while away"));
	}
	cb = hx_ws(srv.port, &b);
	hx_sendf(cb, "{\"type\":\"resume\",\"convs\":{\"%lld\":1}}", (long long)conv);
	for (i = 2; i <= 6; i++) {
		j = hx_expect(cb, "msg");
		assert_int_equal(hx_int(j, "seq"), i);
		assert_int_equal(hx_int(j, "conv"), conv);
		json_decref(j);
	}
	j = hx_expect(cb, "resumed");
	snprintf(cmid, sizeof cmid, "%lld", (long long)conv);
	assert_int_equal(hx_int(json_object_get(j, "heads"), cmid), 6);
	json_decref(j);
	/* A live message after the resume arrives once, in order. */
	json_decref(send_msg(ca, conv, "s7", "back"));
	j = hx_expect(cb, "msg");
	assert_int_equal(hx_int(j, "seq"), 7);
	json_decref(j);
	assert_null(hx_recv_within(cb, 200));
	pc_close(ca);
	pc_close(cb);
}

static void test_resume_heads_and_empty(void **state)
{
	hx_user_t a, b, c;
	pc_conn_t *ca;
	json_t *j, *heads;
	int64_t conv1, conv2;
	char key[24];

	(void)state;
	hx_user(srv.port, "alice", &a);
	hx_user(srv.port, "bob", &b);
	hx_user(srv.port, "carol", &c);
	conv1 = hx_direct(srv.port, &a, &b);
	conv2 = hx_direct(srv.port, &c, &a); /* Alice does not know of it yet */
	ca = hx_ws(srv.port, &a);
	json_decref(send_msg(ca, conv1, "h1", "x"));
	/* Nothing missing: no messages, and heads name every conversation. */
	hx_sendf(ca, "{\"type\":\"resume\",\"convs\":{\"%lld\":1}}", (long long)conv1);
	j = hx_expect(ca, "resumed");
	heads = json_object_get(j, "heads");
	snprintf(key, sizeof key, "%lld", (long long)conv1);
	assert_int_equal(hx_int(heads, key), 1);
	snprintf(key, sizeof key, "%lld", (long long)conv2);
	assert_int_equal(hx_int(heads, key), 0);
	assert_int_equal(json_object_size(heads), 2);
	json_decref(j);
	pc_close(ca);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_send_ack_msg),
		cmocka_unit_test(test_multi_device_echo),
		cmocka_unit_test(test_idempotent_send),
		cmocka_unit_test(test_receipts),
		cmocka_unit_test(test_receipt_before_any_read),
		cmocka_unit_test(test_resume),
		cmocka_unit_test(test_resume_heads_and_empty),
	};
	hx_filter();
	return cmocka_run_group_tests_name("integ_chat", tests, setup, teardown);
}
