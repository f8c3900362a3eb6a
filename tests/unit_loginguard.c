/* unit_loginguard.c - per-account backoff for failed logins: free tries,
 * waits that double up to the ceiling, a success or a quiet day forgets,
 * and one name's failures never slow another's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "loginguard.h"

#define NAME(s) s, strlen(s)

static void test_backoff(void **state)
{
	loginguard_t *g = loginguard_new(3, 10000);
	int64_t t = 1000000;
	int i;

	(void)state;
	assert_non_null(g);
	/* Three failures are free. */
	for (i = 0; i < 3; i++) {
		assert_int_equal(loginguard_wait_ms(g, NAME("alice"), t), 0);
		loginguard_failed(g, NAME("alice"), t);
	}
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), t), 0);
	/* Then 1 s, 2 s, 4 s, 8 s, and the ceiling of 10 s. */
	loginguard_failed(g, NAME("alice"), t);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), t), 1000);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), t + 400), 600);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), t + 1000), 0);
	t += 1000;
	loginguard_failed(g, NAME("alice"), t);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), t), 2000);
	t += 2000;
	loginguard_failed(g, NAME("alice"), t);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), t), 4000);
	t += 4000;
	loginguard_failed(g, NAME("alice"), t);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), t), 8000);
	t += 8000;
	loginguard_failed(g, NAME("alice"), t);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), t), 10000);
	for (i = 0; i < 40; i++) { /* no overflow however many */
		t += 10000;
		loginguard_failed(g, NAME("alice"), t);
	}
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), t), 10000);
	/* Another name is untouched. */
	assert_int_equal(loginguard_wait_ms(g, NAME("bob"), t), 0);
	/* A success forgets. */
	loginguard_succeeded(g, NAME("alice"));
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), t), 0);
	for (i = 0; i < 3; i++)
		loginguard_failed(g, NAME("alice"), t);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), t), 0);
	/* So does a day without failures. */
	for (i = 0; i < 3; i++)
		loginguard_failed(g, NAME("carol"), t);
	loginguard_failed(g, NAME("carol"), t);
	assert_int_equal(loginguard_wait_ms(g, NAME("carol"), t), 1000);
	t += 24 * 3600 * 1000LL;
	loginguard_failed(g, NAME("carol"), t);
	assert_int_equal(loginguard_wait_ms(g, NAME("carol"), t), 0);
	loginguard_free(g);
}

/* Many names at once (a spray) cannot unlock a locked account: its slot is
 * kept while it waits. */
static void test_spray_keeps_lock(void **state)
{
	loginguard_t *g = loginguard_new(0, 60000);
	char name[32];
	int64_t t = 5000000;
	int i;

	(void)state;
	assert_non_null(g);
	loginguard_failed(g, NAME("victim"), t);
	assert_int_equal(loginguard_wait_ms(g, NAME("victim"), t), 1000);
	for (i = 0; i < 100000; i++) {
		snprintf(name, sizeof name, "spray%d", i);
		loginguard_failed(g, name, strlen(name), t + 10);
	}
	assert_int_equal(loginguard_wait_ms(g, NAME("victim"), t + 10), 990);
	loginguard_free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_spray_keeps_lock),
	};
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests_name("unit_loginguard", tests, NULL, NULL);
}
