/* integ_ws.c - the WebSocket layer against the real binary: the upgrade's
 * refusals, RFC 6455 framing rules and their close codes (1002, 1003, 1007,
 * 1009), fragmentation with interleaved control frames, the close
 * handshake, and frames the message service refuses. After every broken
 * connection a bystander's connection must still work. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static hx_server_t srv;
static hx_user_t alice, bob, carol;
static pc_conn_t *bystander;
static int64_t conv_ab;

static int setup(void **state)
{
	(void)state;
	if (hx_start(&srv, NULL, NULL) < 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	pc_close(bystander);
	hx_finish(&srv);
	return 0;
}

static void test_users(void **state)
{
	(void)state;
	hx_user(srv.port, "wsa", &alice);
	hx_user(srv.port, "wsb", &bob);
	hx_user(srv.port, "wsc", &carol);
	conv_ab = hx_direct(srv.port, &alice, &bob);
	bystander = hx_ws(srv.port, &bob);
}

/* The bystander still gets answers. */
static void bystander_ok(void)
{
	json_t *j;

	hx_sendf(bystander, "{\"type\":\"ping\",\"ref\":\"still here\"}");
	j = hx_expect(bystander, "pong");
	assert_string_equal(hx_str(j, "ref"), "still here");
	json_decref(j);
}

static int upgrade_status(const char *path, const char *extra_headers)
{
	pc_conn_t *c = pc_connect("127.0.0.1", srv.port);
	pc_response_t res;
	char req[1024];
	int n, st;

	n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n", path, extra_headers);
	assert_int_equal(pc_send_raw(c, req, (size_t)n), 0);
	assert_int_equal(pc_read_response(c, &res, HX_TIMEOUT), 0);
	st = res.status;
	pc_response_free(&res);
	pc_close(c);
	return st;
}

#define UPGRADE "Upgrade: websocket\r\nConnection: Upgrade\r\n"
#define KEY "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define V13 "Sec-WebSocket-Version: 13\r\n"

static void test_upgrade_refusals(void **state)
{
	char hdr[512], path[128];

	(void)state;
	assert_int_equal(upgrade_status("/chat/v1/ws", UPGRADE KEY V13), 401);
	assert_int_equal(upgrade_status("/chat/v1/ws", UPGRADE KEY V13
	                 "Authorization: Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"), 401);
	assert_int_equal(upgrade_status("/chat/v1/ws?token=forged", UPGRADE KEY V13), 401);
	snprintf(hdr, sizeof hdr, UPGRADE KEY "Sec-WebSocket-Version: 8\r\nAuthorization: Bearer %s\r\n",
	         alice.token);
	assert_int_equal(upgrade_status("/chat/v1/ws", hdr), 426);
	snprintf(hdr, sizeof hdr, UPGRADE V13 "Sec-WebSocket-Key: short\r\nAuthorization: Bearer %s\r\n",
	         alice.token);
	assert_int_equal(upgrade_status("/chat/v1/ws", hdr), 400);
	snprintf(hdr, sizeof hdr, KEY V13 "Authorization: Bearer %s\r\n", alice.token);
	assert_int_equal(upgrade_status("/chat/v1/ws", hdr), 426);
	/* The query-string token works, as browsers need. */
	{
		pc_conn_t *c = pc_connect("127.0.0.1", srv.port);
		json_t *j;
		snprintf(path, sizeof path, "/chat/v1/ws?token=%s", alice.token);
		assert_int_equal(pc_ws_open(c, path, NULL, NULL, HX_TIMEOUT), 0);
		j = hx_expect(c, "ready");
		assert_int_equal(hx_int(j, "user_id"), alice.id);
		assert_true(hx_int(j, "server_time") > 1700000000000LL);
		json_decref(j);
		pc_close(c);
	}
	/* ?user=, the load balancer's routing key: the credential's own user
	 * is served; another user's id is refused like a wrong token (the
	 * client would pick its node), a malformed one as a bad request. */
	{
		pc_conn_t *c = pc_connect("127.0.0.1", srv.port);
		json_t *j;
		snprintf(path, sizeof path, "/chat/v1/ws?token=%s&user=%lld", alice.token, (long long)alice.id);
		assert_int_equal(pc_ws_open(c, path, NULL, NULL, HX_TIMEOUT), 0);
		j = hx_expect(c, "ready");
		assert_int_equal(hx_int(j, "user_id"), alice.id);
		json_decref(j);
		pc_close(c);
	}
	snprintf(hdr, sizeof hdr, UPGRADE KEY V13 "Authorization: Bearer %s\r\n", alice.token);
	snprintf(path, sizeof path, "/chat/v1/ws?user=%lld", (long long)alice.id + 1);
	assert_int_equal(upgrade_status(path, hdr), 401);
	assert_int_equal(upgrade_status("/chat/v1/ws?user=alice", hdr), 400);
	assert_int_equal(upgrade_status("/chat/v1/ws?user=-3", hdr), 400);
	assert_int_equal(upgrade_status("/chat/v1/ws?user=", hdr), 400);
	assert_int_equal(upgrade_status("/chat/v1/ws?user=123456789012345678901234567890", hdr), 400);
	snprintf(path, sizeof path, "/chat/v1/ws?user=%lld", (long long)alice.id);
	assert_int_equal(upgrade_status(path, hdr), 101);
	bystander_ok();
}

/* Sends one raw frame on a fresh connection; returns the close code. */
static int close_code_after(int fin, int opcode, const void *data, size_t len, int mask, int rsv)
{
	pc_conn_t *c = hx_ws(srv.port, &alice);
	int code;

	assert_int_equal(pc_ws_send_frame(c, fin, opcode, data, len, mask, rsv), 0);
	code = hx_expect_close(c);
	pc_close(c);
	return code;
}

static void test_framing_errors(void **state)
{
	char *big;

	(void)state;
	assert_int_equal(close_code_after(1, 1, "{}", 2, 0, 0), 1002);   /* unmasked */
	assert_int_equal(close_code_after(1, 1, "{}", 2, 1, 4), 1002);   /* RSV1 */
	assert_int_equal(close_code_after(1, 3, "x", 1, 1, 0), 1002);    /* reserved opcode */
	assert_int_equal(close_code_after(1, 0xB, "x", 1, 1, 0), 1002);  /* reserved control */
	assert_int_equal(close_code_after(1, 0, "x", 1, 1, 0), 1002);    /* continuation first */
	assert_int_equal(close_code_after(0, 9, "x", 1, 1, 0), 1002);    /* fragmented ping */
	big = calloc(1, 70000);
	memset(big, 'a', 200);
	assert_int_equal(close_code_after(1, 9, big, 126, 1, 0), 1002);  /* long control frame */
	assert_int_equal(close_code_after(1, 1, big, 70000, 1, 0), 1009); /* over 64 KiB */
	assert_int_equal(close_code_after(1, 2, "\x01", 1, 1, 0), 1003);  /* binary */
	assert_int_equal(close_code_after(1, 1, "\xc3\x28", 2, 1, 0), 1007);
	assert_int_equal(close_code_after(1, 1, "\xed\xa0\x80", 3, 1, 0), 1007); /* surrogate */
	assert_int_equal(close_code_after(1, 1, "\xc0\xaf", 2, 1, 0), 1007); /* overlong */
	free(big);
	bystander_ok();
}

static void test_fragmentation(void **state)
{
	pc_conn_t *c = hx_ws(srv.port, &alice);
	const char *msg = "{\"type\":\"ping\",\"ref\":\"caf\xc3\xa9\"}";
	/* Split inside the two bytes of the e-acute. */
	size_t split = (size_t)(strchr(msg, '\xc3') - msg) + 1;
	pc_frame_t f;
	json_t *j;
	char *big;
	size_t i;
	int code;

	(void)state;
	assert_true((unsigned char)msg[split - 1] == 0xc3);
	/* A text message in three fragments, a ping between them. */
	assert_int_equal(pc_ws_send_frame(c, 0, 1, msg, 10, 1, 0), 0);
	assert_int_equal(pc_ws_send_frame(c, 1, 9, "hb", 2, 1, 0), 0);
	assert_int_equal(pc_ws_send_frame(c, 0, 0, msg + 10, split - 10, 1, 0), 0);
	assert_int_equal(pc_ws_send_frame(c, 1, 0, msg + split, strlen(msg) - split, 1, 0), 0);
	assert_int_equal(pc_ws_recv(c, &f, HX_TIMEOUT), 0); /* the pong comes first */
	assert_int_equal(f.opcode, 0xA);
	assert_int_equal(f.len, 2);
	assert_memory_equal(f.data, "hb", 2);
	pc_frame_free(&f);
	j = hx_expect(c, "pong");
	assert_string_equal(hx_str(j, "ref"), "caf\xc3\xa9");
	json_decref(j);

	/* Invalid UTF-8 across fragments: valid lead byte, bad continuation. */
	assert_int_equal(pc_ws_send_frame(c, 0, 1, "{\"a\":\"\xe2\x82", 8, 1, 0), 0);
	assert_int_equal(pc_ws_send_frame(c, 1, 0, "(\"}", 3, 1, 0), 0);
	assert_int_equal(hx_expect_close(c), 1007);
	pc_close(c);

	/* A text frame while a message is in progress. */
	c = hx_ws(srv.port, &alice);
	assert_int_equal(pc_ws_send_frame(c, 0, 1, "{", 1, 1, 0), 0);
	assert_int_equal(pc_ws_send_frame(c, 1, 1, "{}", 2, 1, 0), 0);
	assert_int_equal(hx_expect_close(c), 1002);
	pc_close(c);

	/* Fragments adding up to more than 64 KiB. */
	c = hx_ws(srv.port, &alice);
	big = malloc(40000);
	memset(big, ' ', 40000);
	assert_int_equal(pc_ws_send_frame(c, 0, 1, big, 40000, 1, 0), 0);
	assert_int_equal(pc_ws_send_frame(c, 1, 0, big, 40000, 1, 0), 0);
	assert_int_equal(hx_expect_close(c), 1009);
	pc_close(c);

	/* A 60 KiB message in many small fragments is fine. */
	c = hx_ws(srv.port, &alice);
	memcpy(big, "{\"type\":\"ping\",\"ref\":\"", 22);
	for (i = 22; i < 39000; i++)
		big[i] = 'x';
	memcpy(big + 39000, "\"}", 2);
	for (i = 0; i < 39002; i += 1000) {
		size_t n = 39002 - i < 1000 ? 39002 - i : 1000;
		assert_int_equal(pc_ws_send_frame(c, i + n == 39002, i ? 0 : 1, big + i, n, 1, 0), 0);
	}
	j = hx_expect(c, "pong");
	assert_int_equal(strlen(hx_str(j, "ref")), 39000 - 22);
	json_decref(j);
	free(big);

	/* The close handshake: our code echoed. */
	assert_int_equal(pc_ws_send_frame(c, 1, 8, "\x03\xe8" "bye", 5, 1, 0), 0);
	code = hx_expect_close(c);
	assert_int_equal(code, 1000);
	pc_close(c);
	bystander_ok();
}

static void test_close_frames(void **state)
{
	(void)state;
	assert_int_equal(close_code_after(1, 8, "\x03", 1, 1, 0), 1002);        /* 1-byte payload */
	assert_int_equal(close_code_after(1, 8, "\x03\xe7", 2, 1, 0), 1002);    /* code 999 */
	assert_int_equal(close_code_after(1, 8, "\x03\xed", 2, 1, 0), 1002);    /* 1005 is local only */
	assert_int_equal(close_code_after(1, 8, "\x03\xe8\xff", 3, 1, 0), 1007); /* bad reason */
	assert_int_equal(close_code_after(1, 8, "", 0, 1, 0), 1005);            /* empty: empty echo */
	assert_int_equal(close_code_after(1, 8, "\x0f\xa0", 2, 1, 0), 4000);    /* private range */
	bystander_ok();
}

static void expect_error_frame(pc_conn_t *c, const char *code, const char *ref)
{
	json_t *j = hx_expect(c, "error");

	assert_string_equal(hx_str(j, "code"), code);
	assert_true(strlen(hx_str(j, "message")) > 0);
	if (ref)
		assert_string_equal(hx_str(j, "ref"), ref);
	json_decref(j);
}

static void test_bad_frames(void **state)
{
	pc_conn_t *c = hx_ws(srv.port, &alice), *cc = hx_ws(srv.port, &carol);
	char *body;
	json_t *j;
	char path[128];
	int st;

	(void)state;
	hx_sendf(c, "not json");
	expect_error_frame(c, "bad_request", NULL);
	hx_sendf(c, "[1,2]");
	expect_error_frame(c, "bad_request", NULL);
	hx_sendf(c, "{\"type\":\"teleport\"}");
	expect_error_frame(c, "bad_request", NULL);
	hx_sendf(c, "{\"conv\":1}");
	expect_error_frame(c, "bad_request", NULL);
	hx_sendf(c, "{\"type\":\"send\",\"conv\":%lld,\"body\":\"no cmid\"}", (long long)conv_ab);
	expect_error_frame(c, "bad_request", NULL);
	hx_sendf(c, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"\",\"body\":\"x\"}", (long long)conv_ab);
	expect_error_frame(c, "bad_request", NULL);
	hx_sendf(c, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"a\\nb\",\"body\":\"x\"}", (long long)conv_ab);
	expect_error_frame(c, "bad_request", NULL);
	hx_sendf(c, "{\"type\":\"send\",\"conv\":\"%lld\",\"cmid\":\"k1\",\"body\":\"x\"}", (long long)conv_ab);
	expect_error_frame(c, "bad_request", "k1");
	hx_sendf(c, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"k2\",\"body\":\"\"}", (long long)conv_ab);
	expect_error_frame(c, "bad_request", "k2");
	hx_sendf(c, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"k3\",\"body\":7}", (long long)conv_ab);
	expect_error_frame(c, "bad_request", "k3");
	body = malloc(16386);
	memset(body, 'b', 16385);
	body[16385] = 0;
	hx_sendf(c, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"k4\",\"body\":\"%s\"}", (long long)conv_ab, body);
	expect_error_frame(c, "too_large", "k4");
	body[16384] = 0; /* exactly the limit is fine */
	hx_sendf(c, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"k5\",\"body\":\"%s\"}", (long long)conv_ab, body);
	j = hx_expect(c, "ack");
	assert_int_equal(hx_int(j, "seq"), 1);
	json_decref(j);
	json_decref(hx_expect(bystander, "msg"));
	free(body);
	hx_sendf(c, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"seen\",\"seq\":1}", (long long)conv_ab);
	expect_error_frame(c, "bad_request", NULL);
	hx_sendf(c, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":-1}", (long long)conv_ab);
	expect_error_frame(c, "bad_request", NULL);
	hx_sendf(c, "{\"type\":\"resume\",\"convs\":[1]}");
	expect_error_frame(c, "bad_request", NULL);
	hx_sendf(c, "{\"type\":\"resume\",\"convs\":{\"x\":1}}");
	expect_error_frame(c, "bad_request", NULL);
	hx_sendf(c, "{\"type\":\"ping\"}");
	j = hx_expect(c, "pong");
	assert_null(json_object_get(j, "ref"));
	json_decref(j);

	/* Carol is no member of Alice and Bob's chat. */
	hx_sendf(cc, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"intrude\",\"body\":\"hi\"}", (long long)conv_ab);
	expect_error_frame(cc, "forbidden", "intrude");
	hx_sendf(cc, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":1}", (long long)conv_ab);
	expect_error_frame(cc, "forbidden", NULL);
	hx_sendf(cc, "{\"type\":\"resume\",\"convs\":{\"%lld\":0}}", (long long)conv_ab);
	expect_error_frame(cc, "forbidden", NULL);
	j = hx_expect(cc, "resumed");
	assert_int_equal(json_object_size(json_object_get(j, "heads")), 0);
	json_decref(j);
	hx_sendf(cc, "{\"type\":\"send\",\"conv\":999999,\"cmid\":\"nowhere\",\"body\":\"hi\"}");
	expect_error_frame(cc, "forbidden", "nowhere");
	/* Nothing of that was stored or delivered. */
	assert_null(hx_recv_within(bystander, 300));
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages", (long long)conv_ab);
	j = hx_http(srv.port, "GET", path, bob.token, NULL, &st);
	assert_int_equal(json_array_size(json_object_get(j, "messages")), 1);
	json_decref(j);
	/* Bob's read watermark did not move either. */
	j = hx_http(srv.port, "GET", "/api/v1/conversations", bob.token, NULL, &st);
	assert_int_equal(hx_int(json_array_get(json_object_get(j, "conversations"), 0), "unread"), 1);
	json_decref(j);
	pc_close(c);
	pc_close(cc);
	bystander_ok();
}

/* A user may hold at most --max-user-connections WebSockets, all devices
 * together: one more is refused with 429 rate_limited (others unaffected),
 * and once one closes the next is accepted. */
static void test_connection_cap(void **state)
{
	const char *extra[] = {"--max-user-connections", "3", NULL};
	hx_server_t cap;
	hx_user_t u, u2, other;
	pc_conn_t *ws[3], *more, *fine;
	pc_response_t res;
	int i;

	(void)state;
	assert_int_equal(hx_start(&cap, NULL, extra), 0);
	hx_user(cap.port, "capped", &u);
	hx_login(cap.port, &u, &u2); /* a second device counts too */
	hx_user(cap.port, "uncapped", &other);
	ws[0] = hx_ws(cap.port, &u);
	ws[1] = hx_ws(cap.port, &u2);
	ws[2] = hx_ws(cap.port, &u);
	more = pc_connect("127.0.0.1", cap.port);
	assert_non_null(more);
	assert_int_equal(pc_ws_open(more, "/chat/v1/ws", u2.token, &res, HX_TIMEOUT), PC_ERROR);
	assert_int_equal(res.status, 429);
	assert_non_null(strstr(res.body, "\"rate_limited\""));
	pc_response_free(&res);
	pc_close(more);
	/* Another user is not limited by it; the open ones still work. */
	fine = hx_ws(cap.port, &other);
	hx_sendf(ws[1], "{\"type\":\"ping\",\"ref\":1}");
	json_decref(hx_expect(ws[1], "pong"));
	/* One closes: the server notices, and then there is room. */
	pc_close(ws[0]);
	for (i = 0; i < 50; i++) {
		more = pc_connect("127.0.0.1", cap.port);
		if (pc_ws_open(more, "/chat/v1/ws", u.token, NULL, HX_TIMEOUT) == 0)
			break;
		pc_close(more);
		more = NULL;
		usleep(20000);
	}
	assert_non_null(more);
	pc_close(more);
	pc_close(ws[1]);
	pc_close(ws[2]);
	pc_close(fine);
	hx_finish(&cap);
}

/* Past --max-devices logins, a new login logs out the user's oldest
 * device: its socket closes with 1008 and its token stops working. */
static void test_device_cap(void **state)
{
	const char *extra[] = {"--max-devices", "2", NULL};
	hx_server_t cap;
	hx_user_t first, second, third;
	pc_conn_t *ws1, *ws2;
	json_t *j;
	int st;

	(void)state;
	assert_int_equal(hx_start(&cap, NULL, extra), 0);
	hx_user(cap.port, "manydev", &first);
	hx_login(cap.port, &first, &second);
	ws1 = hx_ws(cap.port, &first);
	ws2 = hx_ws(cap.port, &second);
	hx_login(cap.port, &first, &third);
	assert_int_equal(hx_expect_close(ws1), 1008);
	j = hx_http(cap.port, "GET", "/api/v1/conversations", first.token, NULL, &st);
	assert_int_equal(st, 401);
	json_decref(j);
	/* The second and third work. */
	hx_sendf(ws2, "{\"type\":\"ping\",\"ref\":2}");
	json_decref(hx_expect(ws2, "pong"));
	j = hx_http(cap.port, "GET", "/api/v1/conversations", third.token, NULL, &st);
	assert_int_equal(st, 200);
	json_decref(j);
	pc_close(ws1);
	pc_close(ws2);
	hx_finish(&cap);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_users),
		cmocka_unit_test(test_upgrade_refusals),
		cmocka_unit_test(test_framing_errors),
		cmocka_unit_test(test_fragmentation),
		cmocka_unit_test(test_close_frames),
		cmocka_unit_test(test_bad_frames),
		cmocka_unit_test(test_connection_cap),
		cmocka_unit_test(test_device_cap),
	};
	hx_filter();
	return cmocka_run_group_tests_name("integ_ws", tests, setup, teardown);
}
