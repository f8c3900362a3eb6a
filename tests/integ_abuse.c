/* integ_abuse.c - attacks on the node, each with an attacker and a
 * bystander: the attack is refused with the protocol's clear error, and
 * the bystander is served normally while it runs.
 *
 * Attackers connect from 127.0.0.2 and up, bystanders from 127.0.0.1, so
 * that limits kept per client address can tell them apart. */
#include "harness.h"

#include <poll.h>
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
	const char *const args[] = {"--request-timeout", "2", NULL};
	const char head[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
	hx_server_t s;
	pc_conn_t *slow, *silent;
	pc_response_t res;
	int64_t start;
	int i;

	(void)state;
	assert_int_equal(hx_start(&s, NULL, args), 0);
	slow = pc_connect_from("127.0.0.2", "127.0.0.1", s.port);
	silent = pc_connect_from("127.0.0.2", "127.0.0.1", s.port);
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
		bystander_served(&s);
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
	hx_finish(&s);
}

/* Fifty sockets trickling a request head hold about what they have sent,
 * not a read-sized buffer each. */
static void test_trickle_memory(void **state)
{
	enum { N = 50, BYTES = 200 };
	const char head[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
	pc_conn_t *c[N];
	hx_server_t s;
	double held;
	int i, k;

	(void)state;
	assert_int_equal(hx_start(&s, NULL, NULL), 0);
	for (i = 0; i < N; i++) {
		assert_non_null(c[i] = pc_connect_from("127.0.0.2", "127.0.0.1", s.port));
		assert_int_equal(pc_send_raw(c[i], head, sizeof head - 1), 0);
	}
	for (k = 0; k < BYTES; k++) {
		for (i = 0; i < N; i++)
			assert_int_equal(pc_send_raw(c[i], "a", 1), 0);
		if (k % 50 == 0)
			usleep(20000); /* let the server read them apart */
	}
	usleep(200000);
	held = hx_metric(&s, "parley_partial_input_bytes");
	/* Each holds its ~240 bytes, rounded up, plus a quarter. */
	assert_true(held > 0);
	assert_true(held <= N * 512.0);
	bystander_served(&s);
	for (i = 0; i < N; i++)
		pc_close(c[i]);
	usleep(200000);
	assert_true(hx_metric(&s, "parley_partial_input_bytes") == 0);
	hx_finish(&s);
}

/* With the node's bound on partial input at 1 MiB, sockets that each hold
 * 30 KB of an unfinished body fill it: the ones past it are answered 503
 * at once, memory stays under the bound, and a bystander's requests, which
 * arrive whole, are served. */
static void test_partial_memory_bound(void **state)
{
	enum { N = 60 };
	const char *const args[] = {"--max-partial-memory", "1048576", NULL};
	const char head[] = "POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	                    "Content-Length: 60000\r\n\r\n";
	static char part[30000];
	pc_conn_t *c[N];
	hx_server_t s;
	hx_user_t u;
	int i, refused = 0;

	(void)state;
	memset(part, ' ', sizeof part);
	assert_int_equal(hx_start(&s, NULL, args), 0);
	for (i = 0; i < N; i++) {
		assert_non_null(c[i] = pc_connect_from("127.0.0.2", "127.0.0.1", s.port));
		assert_int_equal(pc_send_raw(c[i], head, sizeof head - 1), 0);
		pc_send_raw(c[i], part, sizeof part); /* may fail once refused */
	}
	usleep(300000);
	assert_true(hx_metric(&s, "parley_partial_input_bytes") <= 1048576);
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
	hx_user(s.port, "bystander", &u);
	bystander_served(&s);
	for (i = 0; i < N; i++)
		pc_close(c[i]);
	hx_finish(&s);
}

/* Pipelined requests for a large file, none read for a while: every
 * answer arrives, in order, and none is treated as a slow reader (an
 * HTTP client gets one answer at a time while earlier ones are unsent). */
static void test_pipelined_big_answers(void **state)
{
	enum { N = 60 };
	const char req[] = "GET /js/app.js HTTP/1.1\r\nHost: x\r\n\r\n";
	static char all[N * (sizeof req - 1)];
	hx_server_t s;
	pc_conn_t *c;
	size_t first = 0;
	int i;

	(void)state;
	assert_int_equal(hx_start(&s, NULL, NULL), 0);
	for (i = 0; i < N; i++)
		memcpy(all + (size_t)i * (sizeof req - 1), req, sizeof req - 1);
	assert_non_null(c = pc_connect_from("127.0.0.2", "127.0.0.1", s.port));
	assert_int_equal(pc_send_raw(c, all, sizeof all), 0);
	usleep(500000); /* well over the outbound bound of answers wait unread */
	bystander_served(&s);
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
	hx_finish(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_trickled_request),
		cmocka_unit_test(test_trickle_memory),
		cmocka_unit_test(test_partial_memory_bound),
		cmocka_unit_test(test_pipelined_big_answers),
	};

	hx_filter();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
