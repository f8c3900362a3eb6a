/* unit_http.c - the HTTP request parser and helpers.
 *
 * Inputs are placed right before an unreadable page (as picohttpparser's
 * tests do), so a read one byte past the end crashes the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "http.h"

/* Copies s to the end of a page followed by a PROT_NONE page. */
static char *guarded(const char *s, size_t n)
{
	static char *region;
	static size_t pg;

	if (!region) {
		pg = (size_t)sysconf(_SC_PAGESIZE);
		region = mmap(NULL, 5 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		assert_true(region != MAP_FAILED);
		assert_int_equal(mprotect(region + 4 * pg, pg, PROT_NONE), 0);
	}
	assert_true(n <= 4 * pg);
	memcpy(region + 4 * pg - n, s, n);
	return region + 4 * pg - n;
}

static int parse(const char *s, http_request_t *r)
{
	return http_parse_request(guarded(s, strlen(s)), strlen(s), r);
}

static void test_simple_get(void **state)
{
	const char *s = "GET /api/v1/users?username=bob HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n\r\n";
	http_request_t r;
	const http_header_t *h;

	(void)state;
	assert_int_equal(parse(s, &r), (int)strlen(s));
	assert_int_equal(r.method_len, 3);
	assert_memory_equal(r.method, "GET", 3);
	assert_int_equal(r.target_len, strlen("/api/v1/users?username=bob"));
	assert_int_equal(r.path_len, strlen("/api/v1/users"));
	assert_int_equal(r.minor_version, 1);
	assert_int_equal(r.nheaders, 2);
	assert_int_equal(r.content_length, -1);
	assert_true(r.keep_alive);
	h = http_find_header(&r, "HOST");
	assert_non_null(h);
	assert_int_equal(h->value_len, 1);
	h = http_find_header(&r, "x-empty");
	assert_non_null(h);
	assert_int_equal(h->value_len, 0);
	assert_null(http_find_header(&r, "absent"));
	assert_true(http_is(&r, "GET", "/api/v1/users"));
	assert_false(http_is(&r, "POST", "/api/v1/users"));
}

static void test_every_prefix_is_incomplete(void **state)
{
	const char *s = "POST /x HTTP/1.1\r\nContent-Length: 4\r\nConnection: keep-alive\r\n\r\n";
	size_t n = strlen(s), i;
	http_request_t r;

	(void)state;
	for (i = 0; i < n; i++)
		assert_int_equal(http_parse_request(guarded(s, i), i, &r), HTTP_INCOMPLETE);
	assert_int_equal(http_parse_request(guarded(s, n), n, &r), (int)n);
	assert_int_equal(r.content_length, 4);
}

static void test_bare_lf_and_leading_blank_lines(void **state)
{
	http_request_t r;

	(void)state;
	assert_int_equal(parse("\r\nGET / HTTP/1.1\nHost: a\n\n", &r), 26);
	assert_int_equal(r.nheaders, 1);
}

static void test_malformed(void **state)
{
	http_request_t r;
	static const char *bad[] = {
		"GET\r\n\r\n",
		"GET  / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1 \r\n\r\n",
		"GET noslash HTTP/1.1\r\n\r\n",
		"GET / HTTP/2.0\r\n\r\n",
		"GET / HTTP/1.10\r\n\r\n",
		"G(T / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nNo Colon\r\n\r\n",
		"GET / HTTP/1.1\r\nName : v\r\n\r\n",
		"GET / HTTP/1.1\r\n folded\r\n\r\n",
		"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
		"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: 12a\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET /a b HTTP/1.1\r\n\r\n",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof *bad; i++)
		if (parse(bad[i], &r) != HTTP_MALFORMED)
			fail_msg("accepted: %s", bad[i]);
}

static void test_header_limits_and_semantics(void **state)
{
	char buf[4096];
	size_t n;
	http_request_t r;
	int i;

	(void)state;
	n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\n");
	for (i = 0; i < HTTP_MAX_HEADERS + 1; i++)
		n += (size_t)sprintf(buf + n, "H%d: v\r\n", i);
	n += (size_t)sprintf(buf + n, "\r\n");
	assert_int_equal(http_parse_request(guarded(buf, n), n, &r), HTTP_TOO_MANY_HEADERS);

	assert_true(parse("GET / HTTP/1.0\r\n\r\n", &r) > 0);
	assert_false(r.keep_alive);
	assert_true(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r) > 0);
	assert_true(r.keep_alive);
	assert_true(parse("GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n", &r) > 0);
	assert_false(r.keep_alive);
	assert_true(parse("GET / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", &r) > 0);
	assert_int_equal(r.content_length, 5);
	assert_true(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &r) > 0);
	assert_true(r.chunked);
}

static void test_tokens_and_query(void **state)
{
	const char *t = "/x?a=1&token=ab%2Bc+d&empty=&flag&bad=%zz";
	char out[32];

	(void)state;
	assert_true(http_value_has_token("keep-alive, Upgrade", 19, "upgrade"));
	assert_true(http_value_has_token(" upgrade ", 9, "upgrade"));
	assert_false(http_value_has_token("upgrades", 8, "upgrade"));
	assert_false(http_value_has_token("", 0, "upgrade"));
	assert_int_equal(http_query_param(t, strlen(t), "token", out, sizeof out), 6);
	assert_string_equal(out, "ab+c d");
	assert_int_equal(http_query_param(t, strlen(t), "a", out, sizeof out), 1);
	assert_int_equal(http_query_param(t, strlen(t), "empty", out, sizeof out), 0);
	assert_int_equal(http_query_param(t, strlen(t), "flag", out, sizeof out), 0);
	assert_int_equal(http_query_param(t, strlen(t), "bad", out, sizeof out), -2);
	assert_int_equal(http_query_param(t, strlen(t), "missing", out, sizeof out), -1);
	assert_int_equal(http_query_param("/x", 2, "a", out, sizeof out), -1);
	assert_int_equal(http_query_param(t, strlen(t), "token", out, 4), -2);
}

static void test_response(void **state)
{
	sbuf_t *b = http_response(201, "application/json", "{}", 2, 1, "X-A: b\r\n");
	const char expect[] = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
	                      "Content-Length: 2\r\nX-A: b\r\n\r\n{}";

	(void)state;
	assert_int_equal(b->len, sizeof expect - 1);
	assert_memory_equal(b->data, expect, b->len);
	sbuf_unref(b);
	b = http_response(204, NULL, NULL, 0, 0, NULL);
	assert_memory_equal(b->data, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n", b->len);
	sbuf_unref(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_get),
		cmocka_unit_test(test_every_prefix_is_incomplete),
		cmocka_unit_test(test_bare_lf_and_leading_blank_lines),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_header_limits_and_semantics),
		cmocka_unit_test(test_tokens_and_query),
		cmocka_unit_test(test_response),
	};
	return cmocka_run_group_tests_name("unit_http", tests, NULL, NULL);
}
