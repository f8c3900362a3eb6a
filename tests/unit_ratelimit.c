/* unit_ratelimit.c - the senders' budgets: charged by cost, refilled by
 * time, capped at the burst, per user, and forgotten once full again;
 * spends from other nodes charged below empty, down to minus the burst. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ratelimit.h"

static void test_buckets(void **state)
{
	ratelimit_t *r = ratelimit_new(100, 1000); /* 100 a second, 1000 at once */
	int64_t t = 1000000;

	(void)state;
	assert_int_equal(ratelimit_take(r, 1, 1000, t), 0);   /* the whole burst */
	assert_int_equal(ratelimit_take(r, 1, 1, t), 10);     /* 1 token: 10 ms away */
	assert_int_equal(ratelimit_take(r, 2, 1, t), 0);      /* another user: untouched */
	assert_int_equal(ratelimit_take(r, 1, 50, t + 499), 1); /* 49.9 refilled */
	assert_int_equal(ratelimit_take(r, 1, 50, t + 500), 0);
	/* A cost above the burst is charged the burst: possible, eventually. */
	assert_int_equal(ratelimit_take(r, 3, 5000, t), 0);
	assert_int_equal(ratelimit_take(r, 3, 5000, t), 10000);
	assert_int_equal(ratelimit_take(r, 3, 5000, t + 10000), 0);
	/* Refill stops at the burst. */
	assert_int_equal(ratelimit_take(r, 2, 1000, t + 3600000), 0);
	assert_int_equal(ratelimit_take(r, 2, 1, t + 3600000), 10);
	assert_int_equal(ratelimit_size(r), 3);
	ratelimit_free(r);
}

static void test_sweep_and_off(void **state)
{
	ratelimit_t *r = ratelimit_new(10, 100);
	int64_t i;

	(void)state;
	/* Many users once each: their full buckets are swept away later. */
	for (i = 1; i <= 5000; i++)
		assert_int_equal(ratelimit_take(r, i, 1, 0), 0);
	for (i = 0; i < 5000; i++)
		ratelimit_take(r, 1, 0, 100000); /* time passes; sweeps run */
	assert_true(ratelimit_size(r) < 100);
	ratelimit_free(r);
	r = ratelimit_new(0, 10); /* off */
	for (i = 0; i < 100; i++)
		assert_int_equal(ratelimit_take(r, 1, 1000, 0), 0);
	ratelimit_free(r);
}

/* What a user spent on other nodes counts here: a fresh user charged 300
 * has 700 left; charged past empty, the bucket owes it, but never more
 * than a burst; a charge when off, or of nothing, changes nothing. */
static void test_charge(void **state)
{
	ratelimit_t *r = ratelimit_new(100, 1000), *off = ratelimit_new(0, 10);
	int64_t t = 1000000;

	(void)state;
	ratelimit_charge(r, 1, 300, t);
	assert_int_equal(ratelimit_take(r, 1, 701, t), 10);
	assert_int_equal(ratelimit_take(r, 1, 700, t), 0);
	ratelimit_charge(r, 1, 500, t);               /* -500 */
	assert_int_equal(ratelimit_take(r, 1, 1, t), 5010);
	ratelimit_charge(r, 1, 5000, t);              /* -1000 at most */
	assert_int_equal(ratelimit_take(r, 1, 1, t), 10010);
	ratelimit_charge(r, 2, 0, t);
	ratelimit_charge(r, 2, -5, t);
	assert_int_equal(ratelimit_take(r, 2, 1000, t), 0);
	ratelimit_charge(off, 1, 100, t);
	assert_int_equal(ratelimit_take(off, 1, 100, t), 0);
	ratelimit_free(r);
	ratelimit_free(off);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buckets),
		cmocka_unit_test(test_sweep_and_off),
		cmocka_unit_test(test_charge),
	};
	return cmocka_run_group_tests_name("unit_ratelimit", tests, NULL, NULL);
}
