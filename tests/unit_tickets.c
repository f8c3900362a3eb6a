/* unit_tickets.c - WebSocket tickets and the Origin rule: a ticket
 * stands for its token once, within its time; a full table refuses
 * rather than forgets live tickets; origins match the Host, the public
 * URL or the allowlist, and nothing else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "http.h"
#include "origin.h"
#include "tickets.h"

static void test_ticket_once_in_time(void **state)
{
	tickets_t *t = tickets_new(16);
	uint8_t tok[32], tok2[32], got[32];
	char a[TICKET_LEN + 1], b[TICKET_LEN + 1], c[TICKET_LEN + 1];

	(void)state;
	assert_non_null(t);
	memset(tok, 7, sizeof tok);
	memset(tok2, 8, sizeof tok2);
	assert_int_equal(tickets_issue(t, tok, 1000, a), 0);
	assert_int_equal(strlen(a), TICKET_LEN);
	assert_int_equal(tickets_redeem(t, a, strlen(a), 1000 + TICKETS_TTL_MS - 1, got), 0);
	assert_memory_equal(got, tok, 32);
	assert_int_equal(tickets_redeem(t, a, strlen(a), 1001, got), -1); /* once */
	/* A device's new ticket replaces its unused one; another device's
	 * stays. */
	assert_int_equal(tickets_issue(t, tok, 2000, a), 0);
	assert_int_equal(tickets_issue(t, tok2, 2000, c), 0);
	assert_int_equal(tickets_issue(t, tok, 2000, b), 0);
	assert_string_not_equal(a, b);
	assert_int_equal(tickets_redeem(t, a, strlen(a), 2001, got), -1);
	assert_int_equal(tickets_redeem(t, c, strlen(c), 2001, got), 0);
	assert_memory_equal(got, tok2, 32);
	assert_int_equal(tickets_redeem(t, b, strlen(b), 2000 + TICKETS_TTL_MS, got), -1); /* expired */
	assert_int_equal(tickets_redeem(t, "short", 5, 1000, got), -1);
	assert_int_equal(tickets_issue(t, tok, 3000, b), 0);
	b[10] = b[10] == 'A' ? 'B' : 'A'; /* a forged one, naming a live slot */
	assert_int_equal(tickets_redeem(t, b, strlen(b), 3001, got), -1);
	tickets_free(t);
}

/* One live ticket per device: however many a device asks for, it holds
 * one slot, and other devices still get theirs. */
static void test_ticket_one_per_device(void **state)
{
	tickets_t *t = tickets_new(8);
	uint8_t tok[32] = {1}, other[32] = {2}, got[32];
	char tk[TICKET_LEN + 1], last[TICKET_LEN + 1];
	int i;

	(void)state;
	for (i = 0; i < 10000; i++)
		assert_int_equal(tickets_issue(t, tok, 5, last), 0);
	assert_int_equal(tickets_issue(t, other, 5, tk), 0);
	assert_int_equal(tickets_redeem(t, last, strlen(last), 6, got), 0);
	assert_int_equal(tickets_redeem(t, tk, strlen(tk), 6, got), 0);
	tickets_free(t);
}

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
		cmocka_unit_test(test_ticket_once_in_time),
		cmocka_unit_test(test_ticket_one_per_device),
		cmocka_unit_test(test_origins),
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests_name("unit_tickets", tests, NULL, NULL);
}
