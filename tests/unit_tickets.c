/* unit_tickets.c - WebSocket tickets: a ticket stands for its token once,
 * within its time; a device holds one live ticket, so none can fill the
 * table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ticket_once_in_time),
		cmocka_unit_test(test_ticket_one_per_device),
	};

	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests_name("unit_tickets", tests, NULL, NULL);
}
