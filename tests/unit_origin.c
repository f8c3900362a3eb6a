/* unit_origin.c - which pages may use the server: origins match the
 * Host the request was sent to, the public URL or the allowlist, and
 * nothing else ("null", other schemes, look-alike hosts). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "http.h"
#include "origin.h"

static int allowed(const char *origin, const char *host, const char *public_url, const char *list)
{
	char req[512];
	http_request_t r;

	snprintf(req, sizeof req, "POST /api/v1/x HTTP/1.1\r\n%s%s%s%s%s%s\r\n", host ? "Host: " : "",
	         host ? host : "", host ? "\r\n" : "", origin ? "Origin: " : "", origin ? origin : "",
	         origin ? "\r\n" : "");
	assert_true(http_parse_request(req, strlen(req), &r) > 0);
	return origin_allowed(&r, public_url, list);
}

static void test_origins(void **state)
{
	(void)state;
	assert_true(allowed(NULL, "chat.example.com", "", ""));
	assert_true(allowed("https://chat.example.com", "chat.example.com", "", ""));
	assert_true(allowed("http://CHAT.example.com:8080", "chat.example.com:8080", "", ""));
	assert_false(allowed("https://chat.example.com:444", "chat.example.com", "", ""));
	assert_false(allowed("https://evil.example", "chat.example.com", "", ""));
	assert_false(allowed("null", "chat.example.com", "", ""));
	assert_false(allowed("file://", "chat.example.com", "", ""));
	assert_false(allowed("https://chat.example.com.evil.example", "chat.example.com", "", ""));
	/* Behind a proxy that rewrites Host: the public URL. */
	assert_true(allowed("https://chat.example.com", "10.0.0.5:8080", "https://chat.example.com/", ""));
	assert_false(allowed("http://chat.example.com", "10.0.0.5:8080", "https://chat.example.com", ""));
	assert_true(allowed("https://b.example", "x", "", " https://a.example , https://b.example "));
	assert_false(allowed("https://c.example", "x", "", "https://a.example,https://b.example"));
	assert_true(origin_url_valid("https://chat.example.com"));
	assert_true(origin_url_valid("http://localhost:8080/app"));
	assert_false(origin_url_valid("chat.example.com"));
	assert_false(origin_url_valid("https://"));
	assert_false(origin_url_valid("ftp://x"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_origins),
	};

	return cmocka_run_group_tests_name("unit_origin", tests, NULL, NULL);
}
