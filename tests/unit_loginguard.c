/* unit_loginguard.c - login backoff in two layers. Per (name, address):
 * free tries, waits that double up to the ceiling, a success from there or
 * a quiet day forgets. Per name: a stranger's failures never make the owner
 * elsewhere wait until the looser per-name ceiling, past which unknown
 * addresses wait and known ones (a success within 30 days) do not. One
 * name's failures never slow another's, and a spray of names from many
 * addresses keeps memory fixed and never unlocks a victim early. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include <malloc.h>

#include <cmocka.h>
#include <sodium.h>

#include "loginguard.h"

#define NAME(s) s, strlen(s)
#define DAY (24 * 3600 * 1000LL)

/* Addresses: the owner's home and work, and strangers'. */
enum { HOME = 0x1001, WORK = 0x1002, STRANGER = 0x2001, NEWPLACE = 0x3001 };

static loginguard_t *guard(unsigned free_failures, int64_t max_wait_ms, unsigned name_free_failures,
                           int64_t name_max_wait_ms, unsigned slots)
{
	loginguard_config_t cfg;

	loginguard_config_default(&cfg);
	cfg.free_failures = free_failures;
	cfg.max_wait_ms = max_wait_ms;
	cfg.name_free_failures = name_free_failures;
	cfg.name_max_wait_ms = name_max_wait_ms;
	if (slots)
		cfg.pair_slots = cfg.name_slots = cfg.known_slots = slots;
	return loginguard_new_config(&cfg);
}

/* The per-(name, address) layer alone (the per-name one set out of reach). */
static void test_backoff(void **state)
{
	loginguard_t *g = guard(3, 10000, 100000, 10000, 0);
	int64_t t = 1000000;
	int i;

	(void)state;
	assert_non_null(g);
	/* Three failures are free. */
	for (i = 0; i < 3; i++) {
		assert_int_equal(loginguard_wait_ms(g, NAME("alice"), HOME, t), 0);
		loginguard_failed(g, NAME("alice"), HOME, t);
	}
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), HOME, t), 0);
	/* Then 1 s, 2 s, 4 s, 8 s, and the ceiling of 10 s. */
	loginguard_failed(g, NAME("alice"), HOME, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), HOME, t), 1000);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), HOME, t + 400), 600);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), HOME, t + 1000), 0);
	t += 1000;
	loginguard_failed(g, NAME("alice"), HOME, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), HOME, t), 2000);
	t += 2000;
	loginguard_failed(g, NAME("alice"), HOME, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), HOME, t), 4000);
	t += 4000;
	loginguard_failed(g, NAME("alice"), HOME, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), HOME, t), 8000);
	t += 8000;
	loginguard_failed(g, NAME("alice"), HOME, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), HOME, t), 10000);
	for (i = 0; i < 40; i++) { /* no overflow however many */
		t += 10000;
		loginguard_failed(g, NAME("alice"), HOME, t);
	}
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), HOME, t), 10000);
	/* Another name is untouched, from the same address or any. */
	assert_int_equal(loginguard_wait_ms(g, NAME("bob"), HOME, t), 0);
	assert_int_equal(loginguard_wait_ms(g, NAME("bob"), STRANGER, t), 0);
	/* So is the same name from another address. */
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), WORK, t), 0);
	/* A success elsewhere does not forget HOME's failures; one at HOME does. */
	loginguard_succeeded(g, NAME("alice"), WORK, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), HOME, t), 10000);
	loginguard_succeeded(g, NAME("alice"), HOME, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), HOME, t), 0);
	for (i = 0; i < 3; i++)
		loginguard_failed(g, NAME("alice"), HOME, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("alice"), HOME, t), 0);
	/* So does a day without failures. */
	for (i = 0; i < 3; i++)
		loginguard_failed(g, NAME("carol"), STRANGER, t);
	loginguard_failed(g, NAME("carol"), STRANGER, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("carol"), STRANGER, t), 1000);
	t += DAY - 1;
	loginguard_failed(g, NAME("carol"), STRANGER, t); /* not yet a day: 2 s */
	assert_int_equal(loginguard_wait_ms(g, NAME("carol"), STRANGER, t), 2000);
	t += DAY;
	loginguard_failed(g, NAME("carol"), STRANGER, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("carol"), STRANGER, t), 0);
	loginguard_free(g);
}

/* Address 0 (unknown) is one address like any for the first layer: the
 * per-name backoff of old, which the HTTP test relies on. */
static void test_unknown_address(void **state)
{
	loginguard_t *g = loginguard_new(5, 15 * 60 * 1000);
	int64_t t = 1000000;
	int i;

	(void)state;
	assert_non_null(g);
	for (i = 0; i < 5; i++)
		loginguard_failed(g, NAME("dave"), 0, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("dave"), 0, t), 0);
	loginguard_failed(g, NAME("dave"), 0, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("dave"), 0, t), 1000);
	assert_int_equal(loginguard_wait_ms(g, NAME("dave"), HOME, t), 0);
	loginguard_succeeded(g, NAME("dave"), 0, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("dave"), 0, t), 0);
	loginguard_free(g);
}

/* A stranger guessing from many addresses: each address has its own free
 * tries, the owner elsewhere is never slowed until the name has 100
 * failures; past that, unknown addresses wait (1 s, 2 s ...) while the
 * owner's known addresses do not, though they keep their own layer. */
static void test_stranger_cannot_lock_out(void **state)
{
	loginguard_t *g = guard(5, 15 * 60 * 1000, 100, 60000, 0);
	int64_t t = 1000000;
	uint64_t a;
	int i, n = 0;

	(void)state;
	assert_non_null(g);
	loginguard_succeeded(g, NAME("owner"), HOME, t - 1000); /* HOME is known */
	/* Six wrong passwords from the stranger: the stranger waits, the owner
	 * at home and at a place never seen before do not. */
	for (i = 0; i < 6; i++, n++)
		loginguard_failed(g, NAME("owner"), STRANGER, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), STRANGER, t), 1000);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), HOME, t), 0);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), NEWPLACE, t), 0);
	/* A botnet: five tries from each of many addresses, 100 in all. */
	for (a = 0x5000; n < 100; a++)
		for (i = 0; i < 5 && n < 100; i++, n++) {
			assert_int_equal(loginguard_wait_ms(g, NAME("owner"), a, t), 0);
			loginguard_failed(g, NAME("owner"), a, t);
		}
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), a, t), 0);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), NEWPLACE, t), 0);
	/* The 101st: every unknown address now waits, the owner at home not. */
	loginguard_failed(g, NAME("owner"), a + 1, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), a + 2, t), 1000);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), NEWPLACE, t), 1000);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), 0, t), 1000);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), HOME, t), 0);
	/* The name's waits double up to their ceiling of 60 s. */
	t += 1000;
	loginguard_failed(g, NAME("owner"), a + 3, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), NEWPLACE, t), 2000);
	for (i = 0; i < 10; i++) {
		t += 60000;
		loginguard_failed(g, NAME("owner"), a + 4 + i, t);
	}
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), NEWPLACE, t), 60000);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), HOME, t), 0);
	/* The stranger's own 1 s is long over: it waits the name's 60 s. */
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), STRANGER, t), 60000);
	/* The owner logs in at work (past the wait, the password right): WORK
	 * is known from then on. The name's count stays: NEWPLACE still waits. */
	t += 60000;
	loginguard_succeeded(g, NAME("owner"), WORK, t);
	loginguard_failed(g, NAME("owner"), a + 20, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), WORK, t), 0);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), NEWPLACE, t), 60000);
	/* A known address keeps its own layer: six failures at home wait. */
	for (i = 0; i < 6; i++)
		loginguard_failed(g, NAME("owner"), HOME, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), HOME, t), 1000);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), WORK, t), 0);
	/* Address 0 is never known, even after a success from it. */
	loginguard_succeeded(g, NAME("owner"), 0, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), 0, t), 60000);
	/* wait_ms answers the larger: eight more from the stranger make its
	 * own wait 256 s, above the name's 60 s. */
	for (i = 0; i < 8; i++)
		loginguard_failed(g, NAME("owner"), STRANGER, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), STRANGER, t), 256000);
	assert_int_equal(loginguard_wait_ms(g, NAME("owner"), NEWPLACE, t), 60000);
	/* Other names are untouched by all this. */
	assert_int_equal(loginguard_wait_ms(g, NAME("bystander"), NEWPLACE, t), 0);
	assert_int_equal(loginguard_wait_ms(g, NAME("bystander"), a + 2, t), 0);
	loginguard_free(g);
}

/* A quiet day forgets the name's count; a known address stays known for 30
 * days from its last success, then waits like any. */
static void test_days(void **state)
{
	loginguard_t *g = guard(5, 15 * 60 * 1000, 100, 60000, 0);
	int64_t t = 1000000;
	int i;

	(void)state;
	assert_non_null(g);
	assert_int_equal(loginguard_known(g, NAME("erin"), HOME, t), 0);
	loginguard_succeeded(g, NAME("erin"), HOME, t);
	assert_int_equal(loginguard_known(g, NAME("erin"), HOME, t), 1);
	assert_int_equal(loginguard_known(g, NAME("erin"), NEWPLACE, t), 0);
	assert_int_equal(loginguard_known(g, NAME("erin2"), HOME, t), 0);
	loginguard_succeeded(g, NAME("erin"), 0, t);
	assert_int_equal(loginguard_known(g, NAME("erin"), 0, t), 0);
	for (i = 0; i < 101; i++)
		loginguard_failed(g, NAME("erin"), 0x7000 + (uint64_t)i, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("erin"), NEWPLACE, t), 1000);
	/* Not quite a day: the next failure still doubles. */
	t += DAY - 1;
	loginguard_failed(g, NAME("erin"), 0x7000, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("erin"), NEWPLACE, t), 2000);
	/* A day later the count is gone: 100 free again. */
	t += DAY;
	assert_int_equal(loginguard_wait_ms(g, NAME("erin"), NEWPLACE, t), 0);
	for (i = 0; i < 100; i++)
		loginguard_failed(g, NAME("erin"), 0x8000 + (uint64_t)i, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("erin"), NEWPLACE, t), 0);
	/* Just short of 30 days after its success, HOME is still known... */
	t = 1000000 + 30 * DAY - 10;
	for (i = 0; i < 101; i++)
		loginguard_failed(g, NAME("erin"), 0x9000 + (uint64_t)i, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("erin"), NEWPLACE, t), 1000);
	assert_int_equal(loginguard_wait_ms(g, NAME("erin"), HOME, t), 0);
	assert_int_equal(loginguard_known(g, NAME("erin"), HOME, t), 1);
	/* ...and after 30 it is not. */
	t = 1000000 + 30 * DAY;
	assert_int_equal(loginguard_known(g, NAME("erin"), HOME, t), 0);
	loginguard_failed(g, NAME("erin"), 0x9000, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("erin"), HOME, t), 2000);
	/* A new success makes it known again. */
	loginguard_succeeded(g, NAME("erin"), HOME, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("erin"), HOME, t), 0);
	assert_int_equal(loginguard_wait_ms(g, NAME("erin"), NEWPLACE, t), 2000);
	loginguard_free(g);
}

/* A pair table of two slots, so that every entry's two candidates are the
 * same: a newcomer takes the slot of the entry with fewer failures, never
 * of one waiting; when both wait it goes uncounted there, but the name
 * table still counts it; forgotten entries give way. Then a known table of
 * two, where the older success gives way. */
static void test_collisions(void **state)
{
	loginguard_config_t cfg;
	loginguard_t *g;
	int64_t t = 1000000;
	int i;

	(void)state;
	loginguard_config_default(&cfg);
	cfg.free_failures = 5;
	cfg.name_free_failures = 8;
	cfg.pair_slots = 2;
	assert_non_null(g = loginguard_new_config(&cfg));
	for (i = 0; i < 4; i++)
		loginguard_failed(g, NAME("x"), STRANGER, t);
	loginguard_failed(g, NAME("y"), STRANGER, t);
	loginguard_failed(g, NAME("z"), STRANGER, t); /* takes y's slot, not x's */
	loginguard_failed(g, NAME("x"), STRANGER, t);
	loginguard_failed(g, NAME("x"), STRANGER, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("x"), STRANGER, t), 1000);
	for (i = 0; i < 5; i++)
		loginguard_failed(g, NAME("z"), STRANGER, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("z"), STRANGER, t), 1000);
	/* Both slots wait: w is not counted per pair, but per name it is. */
	for (i = 0; i < 8; i++)
		loginguard_failed(g, NAME("w"), STRANGER, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("w"), STRANGER, t), 0);
	loginguard_failed(g, NAME("w"), STRANGER, t);
	loginguard_failed(g, NAME("w"), STRANGER, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("w"), STRANGER, t), 2000);
	assert_int_equal(loginguard_wait_ms(g, NAME("x"), STRANGER, t), 1000);
	assert_int_equal(loginguard_wait_ms(g, NAME("z"), STRANGER, t), 1000);
	/* A day on, x and z are forgotten and give way to w: six failures of
	 * w's now make it wait per pair (its name count is forgotten too). */
	t += DAY;
	for (i = 0; i < 6; i++)
		loginguard_failed(g, NAME("w"), STRANGER, t);
	assert_int_equal(loginguard_wait_ms(g, NAME("w"), STRANGER, t), 1000);
	loginguard_free(g);
	/* A known table of two: a third known address replaces the oldest. */
	loginguard_config_default(&cfg);
	cfg.name_free_failures = 0;
	cfg.known_slots = 2;
	assert_non_null(g = loginguard_new_config(&cfg));
	loginguard_succeeded(g, NAME("v"), HOME, t);
	loginguard_succeeded(g, NAME("v"), WORK, t + 1);
	loginguard_succeeded(g, NAME("v"), HOME, t + 2); /* HOME is the newer now */
	loginguard_succeeded(g, NAME("v"), NEWPLACE, t + 3);
	loginguard_failed(g, NAME("v"), STRANGER, t + 3);
	assert_int_equal(loginguard_wait_ms(g, NAME("v"), STRANGER, t + 3), 1000);
	assert_int_equal(loginguard_wait_ms(g, NAME("v"), WORK, t + 3), 1000);
	assert_int_equal(loginguard_wait_ms(g, NAME("v"), HOME, t + 3), 0);
	assert_int_equal(loginguard_wait_ms(g, NAME("v"), NEWPLACE, t + 3), 0);
	loginguard_free(g);
}

static size_t heap_in_use(void)
{
	return mallinfo2().uordblks;
}

/* Many names from many addresses (a spray) cannot unlock a victim: its
 * entries are kept while they wait, in every table, and memory does not
 * move. With tables of 64 slots every one is fought over; with the
 * default 16384 the spray is six times the table. */
static void spray(unsigned slots, int names)
{
	loginguard_t *g = guard(0, 60000, 3, 60000, slots);
	char name[32];
	int64_t t = 5000000, w;
	size_t heap;
	int i;

	assert_non_null(g);
	loginguard_succeeded(g, NAME("victim"), HOME, t - 1);
	for (i = 0; i < 4; i++)
		loginguard_failed(g, NAME("victim"), STRANGER, t);
	/* The stranger's pair: 8 s (four failures, none free); the name: 1 s
	 * (its fourth, three free). HOME is known and not waiting. */
	assert_int_equal(loginguard_wait_ms(g, NAME("victim"), STRANGER, t), 8000);
	assert_int_equal(loginguard_wait_ms(g, NAME("victim"), NEWPLACE, t), 1000);
	assert_int_equal(loginguard_wait_ms(g, NAME("victim"), HOME, t), 0);
	heap = heap_in_use();
	for (i = 0; i < names; i++) {
		snprintf(name, sizeof name, "spray%d", i);
		/* Each name fails from its own address, four times (so that it
		 * waits in both layers), and succeeds from another (so that it
		 * fights over the known table too). */
		loginguard_failed(g, name, strlen(name), 0x100000 + (uint64_t)i, t + 10);
		loginguard_failed(g, name, strlen(name), 0x100000 + (uint64_t)i, t + 10);
		loginguard_failed(g, name, strlen(name), 0x100000 + (uint64_t)i, t + 10);
		loginguard_failed(g, name, strlen(name), 0x100000 + (uint64_t)i, t + 10);
		loginguard_succeeded(g, name, strlen(name), 0x200000 + (uint64_t)i, t + 10);
		w = loginguard_wait_ms(g, name, strlen(name), 0x100000 + (uint64_t)i, t + 10);
		if (w < 0 || w > 60000)
			fail_msg("%s: wait %lld", name, (long long)w);
	}
	assert_true(heap_in_use() == heap);
	assert_int_equal(loginguard_wait_ms(g, NAME("victim"), STRANGER, t + 10), 7990);
	assert_int_equal(loginguard_wait_ms(g, NAME("victim"), NEWPLACE, t + 10), 990);
	loginguard_free(g);
}

static void test_spray_keeps_lock(void **state)
{
	(void)state;
	spray(64, 10000);
	spray(0, 100000);
}

/* Two guards, as on two nodes, each handing its notes to the other (the
 * bus's part, here a direct call): failures spread over both trip the
 * backoff on both; a success on one forgets the failures on the other
 * and makes the address known there; notes applied are not shared again;
 * malformed notes are refused. */
typedef struct peer {
	loginguard_t *to;
	int64_t now;
	int shared;
} peer_t;

static void to_peer(void *ud, const void *note, size_t len)
{
	peer_t *p = ud;

	p->shared++;
	assert_int_equal(loginguard_apply_note(p->to, note, len, p->now), 0);
}

static void test_notes_across_nodes(void **state)
{
	loginguard_t *g1 = guard(3, 10000, 100000, 10000, 0), *g2 = guard(3, 10000, 100000, 10000, 0);
	peer_t p1 = {g2, 1000000, 0}, p2 = {g1, 1000000, 0};
	int64_t t = 1000000;
	int i;

	(void)state;
	assert_non_null(g1);
	assert_non_null(g2);
	loginguard_set_share(g1, to_peer, &p1);
	loginguard_set_share(g2, to_peer, &p2);
	/* Two failures on each: 4 > 3 free, so both make alice wait. */
	for (i = 0; i < 4; i++)
		loginguard_failed(i % 2 ? g2 : g1, NAME("alice"), STRANGER, t);
	assert_int_equal(p1.shared, 2);
	assert_int_equal(p2.shared, 2); /* applied notes were not sent back */
	assert_int_equal(loginguard_wait_ms(g1, NAME("alice"), STRANGER, t), 1000);
	assert_int_equal(loginguard_wait_ms(g2, NAME("alice"), STRANGER, t), 1000);
	/* Alone, each would have had two: not enough. */
	{
		loginguard_t *lone = guard(3, 10000, 100000, 10000, 0);
		loginguard_failed(lone, NAME("alice"), STRANGER, t);
		loginguard_failed(lone, NAME("alice"), STRANGER, t);
		assert_int_equal(loginguard_wait_ms(lone, NAME("alice"), STRANGER, t), 0);
		loginguard_free(lone);
	}
	/* A success on node 2 forgets the failures on node 1 too, and the
	 * address is known on both. */
	loginguard_succeeded(g2, NAME("alice"), STRANGER, t + 1000);
	assert_int_equal(loginguard_wait_ms(g1, NAME("alice"), STRANGER, t + 1000), 0);
	assert_int_equal(loginguard_known(g1, NAME("alice"), STRANGER, t + 1000), 1);
	assert_int_equal(loginguard_known(g2, NAME("alice"), STRANGER, t + 1000), 1);
	/* Malformed notes change nothing. */
	assert_int_equal(loginguard_apply_note(g1, "", 0, t), -1);
	assert_int_equal(loginguard_apply_note(g1, "x 1 bob", 7, t), -1);
	assert_int_equal(loginguard_apply_note(g1, "f bob", 5, t), -1);
	assert_int_equal(loginguard_apply_note(g1, "f 12 ", 5, t), -1);
	assert_int_equal(loginguard_apply_note(g1, "f 99999999999999999999999 bob", 29, t), -1);
	assert_int_equal(loginguard_apply_note(g1, "f 12 bob", 8, t), 0);
	loginguard_free(g1);
	loginguard_free(g2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_unknown_address),
		cmocka_unit_test(test_stranger_cannot_lock_out),
		cmocka_unit_test(test_days),
		cmocka_unit_test(test_collisions),
		cmocka_unit_test(test_spray_keeps_lock),
		cmocka_unit_test(test_notes_across_nodes),
	};
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests_name("unit_loginguard", tests, NULL, NULL);
}
