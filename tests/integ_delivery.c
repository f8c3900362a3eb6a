/* integ_delivery.c - delivery under pressure: resume that overlaps live
 * traffic, resume of more than one page and past the 1,000-message cap, a
 * client too slow to read (dropped, without hurting anyone else), and the
 * keep-alive timers. The server runs with short timers (--ping-interval 1
 * --idle-timeout 3) and a small outbound bound so that each runs quickly. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static hx_server_t srv;

static int setup(void **state)
{
	static const char *const args[] = {"--ping-interval", "1", "--idle-timeout", "3",
	                                   "--out-limit", "262144", NULL};
	(void)state;
	return hx_start(&srv, NULL, args);
}

static int teardown(void **state)
{
	(void)state;
	hx_finish(&srv);
	return 0;
}

/* Sends n messages numbered from first; waits for every ack. */
static void send_n(pc_conn_t *c, int64_t conv, int first, int n, const char *body)
{
	int i, acked = 0;

	for (i = first; i < first + n; i++) {
		hx_sendf(c, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"n%d\",\"body\":\"%s\"}", (long long)conv,
		         i, body);
		if (i - first - acked >= 100) { /* keep within the in-flight cap */
			json_decref(hx_expect(c, "ack"));
			acked++;
		}
	}
	for (; acked < n; acked++)
		json_decref(hx_expect(c, "ack"));
}

static void test_live_before_resume_not_repeated(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	json_t *j;
	int64_t conv, seq;

	(void)state;
	hx_user(srv.port, "lbr", &a);
	hx_user(srv.port, "lbr", &b);
	conv = hx_direct(srv.port, &a, &b);
	ca = hx_ws(srv.port, &a);
	send_n(ca, conv, 1, 5, "old");
	/* Bob connects; a live message reaches him before he resumes. */
	cb = hx_ws(srv.port, &b);
	send_n(ca, conv, 6, 1, "live");
	j = hx_expect(cb, "msg");
	assert_int_equal(hx_int(j, "seq"), 6);
	json_decref(j);
	/* He holds only seq 2: the replay brings 3, 4, 5 -- and not 6 again. */
	hx_sendf(cb, "{\"type\":\"resume\",\"convs\":{\"%lld\":2}}", (long long)conv);
	for (seq = 3; seq <= 5; seq++) {
		j = hx_expect(cb, "msg");
		assert_int_equal(hx_int(j, "seq"), seq);
		json_decref(j);
	}
	json_decref(hx_expect(cb, "resumed"));
	send_n(ca, conv, 7, 1, "next");
	j = hx_expect(cb, "msg");
	assert_int_equal(hx_int(j, "seq"), 7);
	json_decref(j);
	assert_null(hx_recv_within(cb, 200));
	pc_close(ca);
	pc_close(cb);
}

static void test_resume_pages_and_cap(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	json_t *j;
	int64_t conv, seq;
	char body[2001];

	(void)state;
	hx_user(srv.port, "big", &a);
	hx_user(srv.port, "big", &b);
	conv = hx_direct(srv.port, &a, &b);
	ca = hx_ws(srv.port, &a);
	memset(body, 'q', 2000);
	body[2000] = 0;
	/* 1,200 messages of 2 KB: 2.4 MB, ten times the outbound bound, so
	 * the replay must be paged to fit. */
	send_n(ca, conv, 1, 1200, body);
	cb = hx_ws(srv.port, &b);
	hx_sendf(cb, "{\"type\":\"resume\",\"convs\":{\"%lld\":0}}", (long long)conv);
	/* The newest 1,000, in order; older ones come from history. */
	for (seq = 201; seq <= 1200; seq++) {
		j = hx_expect(cb, "msg");
		assert_int_equal(hx_int(j, "seq"), seq);
		json_decref(j);
	}
	j = hx_expect(cb, "resumed");
	{
		char key[24];
		snprintf(key, sizeof key, "%lld", (long long)conv);
		assert_int_equal(hx_int(json_object_get(j, "heads"), key), 1200);
	}
	json_decref(j);
	pc_close(ca);
	pc_close(cb);
}

static void test_resume_with_traffic(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	json_t *j;
	int64_t conv, next = 1;
	int resumed = 0, i;

	(void)state;
	hx_user(srv.port, "race", &a);
	hx_user(srv.port, "race", &b);
	conv = hx_direct(srv.port, &a, &b);
	ca = hx_ws(srv.port, &a);
	send_n(ca, conv, 1, 300, "before");
	cb = hx_ws(srv.port, &b);
	/* Resume while Alice keeps sending: every seq exactly once, rising. */
	hx_sendf(cb, "{\"type\":\"resume\",\"convs\":{\"%lld\":0}}", (long long)conv);
	for (i = 301; i <= 400; i++)
		hx_sendf(ca, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"n%d\",\"body\":\"during\"}",
		         (long long)conv, i);
	while (next <= 400) {
		j = hx_recv(cb);
		if (strcmp(hx_str(j, "type"), "resumed") == 0) {
			resumed = 1;
		} else {
			assert_string_equal(hx_str(j, "type"), "msg");
			assert_int_equal(hx_int(j, "seq"), next);
			next++;
		}
		json_decref(j);
	}
	if (!resumed)
		json_decref(hx_expect(cb, "resumed"));
	assert_null(hx_recv_within(cb, 200));
	for (i = 0; i < 100; i++)
		json_decref(hx_expect(ca, "ack"));
	pc_close(ca);
	pc_close(cb);
}

static void test_slow_reader_dropped(void **state)
{
	hx_user_t a, b, c;
	pc_conn_t *ca, *cb, *cc;
	json_t *j;
	int64_t conv_ab, conv_ac;
	char *body = malloc(16385);
	int code;

	(void)state;
	hx_user(srv.port, "slow", &a);
	hx_user(srv.port, "slow", &b);
	hx_user(srv.port, "slow", &c);
	conv_ab = hx_direct(srv.port, &a, &b);
	conv_ac = hx_direct(srv.port, &a, &c);
	ca = hx_ws(srv.port, &a);
	cb = hx_ws(srv.port, &b);
	memset(body, 'w', 16384);
	body[16384] = 0;
	/* Bob never reads: 1,000 x 16 KiB is far past the 256 KiB bound and
	 * what the kernel buffers for a connection (at most 10 MiB here). */
	send_n(ca, conv_ab, 1, 1000, body);
	free(body);
	/* Carol, on the same server, is served as usual. (She connects now:
	 * a client that reads nothing for the 3 s idle timeout, pings
	 * unanswered, is closed, and the burst may take that long.) */
	cc = hx_ws(srv.port, &c);
	send_n(ca, conv_ac, 1, 1, "hello carol");
	j = hx_expect(cc, "msg");
	assert_string_equal(hx_str(j, "body"), "hello carol");
	json_decref(j);
	/* Bob finds his connection reset: what the kernel held for him was
	 * dropped with it. */
	for (;;) {
		pc_frame_t f;
		int r = pc_ws_recv(cb, &f, HX_TIMEOUT);
		if (r < 0) {
			code = r;
			break;
		}
		pc_frame_free(&f);
	}
	assert_int_equal(code, PC_CLOSED);
	pc_close(cb);
	/* He reconnects and resumes: everything is there. */
	cb = hx_ws(srv.port, &b);
	hx_sendf(cb, "{\"type\":\"resume\",\"convs\":{\"%lld\":990}}", (long long)conv_ab);
	for (int s = 991; s <= 1000; s++) {
		j = hx_expect(cb, "msg");
		assert_int_equal(hx_int(j, "seq"), s);
		json_decref(j);
	}
	json_decref(hx_expect(cb, "resumed"));
	pc_close(ca);
	pc_close(cb);
	pc_close(cc);
}

static void test_keepalive_ping_and_idle_close(void **state)
{
	hx_user_t a;
	pc_conn_t *c;
	pc_frame_t f;
	time_t start;
	int pings = 0, code = 0;

	(void)state;
	hx_user(srv.port, "idle", &a);
	c = hx_ws(srv.port, &a);
	/* Say nothing: pings come every second, then a close at 3 s. */
	start = time(NULL);
	while (pc_ws_recv(c, &f, HX_TIMEOUT) == 0) {
		if (f.opcode == 0x9)
			pings++;
		if (f.opcode == 0x8) {
			code = (f.data[0] << 8) | f.data[1];
			pc_frame_free(&f);
			break;
		}
		pc_frame_free(&f);
	}
	assert_int_equal(code, 1001);
	assert_true(pings >= 1);
	assert_true(time(NULL) - start >= 2);
	pc_close(c);

	/* A client that answers pings stays connected past the timeout. */
	c = hx_ws(srv.port, &a);
	start = time(NULL);
	while (time(NULL) - start < 5) {
		json_t *j = hx_recv_within(c, 500); /* answers pings itself */
		assert_null(j);
	}
	hx_sendf(c, "{\"type\":\"ping\",\"ref\":1}");
	json_decref(hx_expect(c, "pong"));
	pc_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_live_before_resume_not_repeated),
		cmocka_unit_test(test_resume_pages_and_cap),
		cmocka_unit_test(test_resume_with_traffic),
		cmocka_unit_test(test_slow_reader_dropped),
		cmocka_unit_test(test_keepalive_ping_and_idle_close),
	};
	hx_filter();
	return cmocka_run_group_tests_name("integ_delivery", tests, setup, teardown);
}
