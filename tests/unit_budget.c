/* unit_budget.c - the fixed table of per-key token buckets: admitted up to
 * the burst, then exact waits; a cost above the burst; the refill cap;
 * refunds; keys apart; a refilled slot reused but a refilling one never
 * taken over; a spray of keys that answers every key without growing
 * memory or granting more than fresh buckets; live rate changes; takes
 * from four threads that add up exactly; and a budget shared by three
 * nodes through their notes, which admits the fleet what one node would. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <malloc.h>
#include <pthread.h>

#include <cmocka.h>
#include <sodium.h>

#include "budget.h"
#include "spends.h"

#define T0 1000000

static void test_burst_then_wait(void **state)
{
	budget_t *b = budget_new(64, 2, 5); /* 2 a second, 5 at once */
	int i;

	(void)state;
	assert_non_null(b);
	for (i = 0; i < 5; i++)
		assert_int_equal(budget_take(b, 7, 1, T0), 0);
	assert_int_equal(budget_take(b, 7, 1, T0), 500);
	assert_int_equal(budget_take(b, 7, 1, T0 + 499), 1);
	assert_int_equal(budget_take(b, 7, 1, T0 + 500), 0);
	assert_int_equal(budget_take(b, 7, 1, T0 + 500), 500);
	/* Nothing was charged by the refusals: two tokens a second later. */
	assert_int_equal(budget_take(b, 7, 2, T0 + 1500), 0);
	assert_int_equal(budget_take(b, 7, 0.5, T0 + 1500), 250);
	/* A cost of nothing always passes. */
	assert_int_equal(budget_take(b, 7, 0, T0 + 1500), 0);
	/* A thread whose clock lags the bucket's last update waits that much
	 * longer, and its lag refills nothing. */
	assert_int_equal(budget_take(b, 7, 1, T0 + 1000), 1000);
	assert_int_equal(budget_take(b, 7, 0.5, T0 + 1500), 250);
	budget_free(b);
}

static void test_cost_above_burst(void **state)
{
	budget_t *b = budget_new(64, 2, 5);

	(void)state;
	assert_non_null(b);
	/* Charged as the burst, so possible, but only with a full bucket. */
	assert_int_equal(budget_take(b, 1, 50, T0), 0);
	assert_int_equal(budget_take(b, 1, 1, T0), 500);
	assert_int_equal(budget_take(b, 1, 50, T0), 2500);
	assert_int_equal(budget_take(b, 1, 50, T0 + 2499), 1);
	assert_int_equal(budget_take(b, 1, 50, T0 + 2500), 0);
	assert_int_equal(budget_take(b, 1, 1, T0 + 2500), 500);
	budget_free(b);
}

static void test_refill_cap(void **state)
{
	budget_t *b = budget_new(64, 2, 5);
	int i;

	(void)state;
	assert_non_null(b);
	assert_int_equal(budget_take(b, 3, 5, T0), 0);
	/* An hour refills 7,200 tokens' worth, but the bucket holds 5. */
	for (i = 0; i < 5; i++)
		assert_int_equal(budget_take(b, 3, 1, T0 + 3600000), 0);
	assert_int_equal(budget_take(b, 3, 1, T0 + 3600000), 500);
	budget_free(b);
}

static void test_refund(void **state)
{
	/* Three keys: in 64 slots, key 6's two candidates were both taken by
	 * 4 and 5 about once a thousand runs (the table is keyed at random),
	 * and it shared their drained bucket, as a full table is meant to;
	 * 4,096 slots make that about once in ten million. */
	budget_t *b = budget_new(4096, 2, 5);

	(void)state;
	assert_non_null(b);
	assert_int_equal(budget_take(b, 4, 5, T0), 0);
	assert_int_equal(budget_take(b, 4, 1, T0), 500);
	budget_refund(b, 4, 2, T0);
	assert_int_equal(budget_take(b, 4, 2, T0), 0);
	assert_int_equal(budget_take(b, 4, 1, T0), 500);
	/* A refund never lifts a bucket above the burst. */
	assert_int_equal(budget_take(b, 5, 1, T0), 0);
	budget_refund(b, 5, 100, T0);
	assert_int_equal(budget_take(b, 5, 5, T0), 0);
	assert_int_equal(budget_take(b, 5, 1, T0), 500);
	/* Nor does refunding a key never charged make it a bucket of credit. */
	budget_refund(b, 6, 100, T0);
	assert_int_equal(budget_take(b, 6, 5, T0), 0);
	assert_int_equal(budget_take(b, 6, 1, T0), 500);
	budget_free(b);
}

static void test_keys_apart(void **state)
{
	budget_t *b = budget_new(1024, 2, 5);
	int i;

	(void)state;
	assert_non_null(b);
	assert_int_equal(budget_take(b, 1, 5, T0), 0);
	assert_int_equal(budget_take(b, 1, 1, T0), 500);
	for (i = 0; i < 5; i++)
		assert_int_equal(budget_take(b, 2, 1, T0), 0);
	assert_int_equal(budget_take(b, 2, 1, T0), 500);
	/* Key 1 was not charged by key 2's takes, nor refilled by them. */
	assert_int_equal(budget_take(b, 1, 1, T0 + 250), 250);
	assert_int_equal(budget_take(b, 0, 5, T0), 0); /* 0 is a key like any */
	budget_free(b);
}

/* Two slots, so every key's candidates are the same two. */
static void test_refilled_slot_reused(void **state)
{
	budget_t *b = budget_new(2, 2, 5);

	(void)state;
	assert_non_null(b);
	assert_int_equal(budget_take(b, 'A', 5, T0), 0);
	assert_int_equal(budget_take(b, 'B', 5, T0), 0);
	/* 2.5 s later both are full again: a new key takes one over and owns
	 * it (a refund reaches only a key's own slot). */
	assert_int_equal(budget_take(b, 'C', 5, T0 + 2500), 0);
	budget_refund(b, 'C', 5, T0 + 2500);
	assert_int_equal(budget_take(b, 'C', 5, T0 + 2500), 0);
	/* A keeps its slot, or (forgotten) takes the other, full one: 4 left. */
	assert_int_equal(budget_take(b, 'A', 1, T0 + 2500), 0);
	/* D finds both busy (C empty, A at 4): it shares A's and gets no fresh
	 * bucket, which would admit 5. */
	assert_int_equal(budget_take(b, 'D', 5, T0 + 2500), 500);
	assert_int_equal(budget_take(b, 'D', 4, T0 + 2500), 0);
	assert_int_equal(budget_take(b, 'A', 1, T0 + 2500), 500);
	/* D shared, so a refund to it is dropped, not given to A. */
	budget_refund(b, 'D', 4, T0 + 2500);
	assert_int_equal(budget_take(b, 'A', 1, T0 + 2500), 500);
	budget_free(b);
}

static size_t heap_in_use(void)
{
	return mallinfo2().uordblks;
}

/* 100 times more keys than slots, each taking until refused, at two
 * moments: every key is answered with a wait a fresh bucket could have, no
 * memory is allocated, the table admits no more than its buckets hold, and
 * a drained victim stays drained. */
static void test_spray(void **state)
{
	enum { SLOTS = 64, KEYS = 100 * SLOTS };
	budget_t *b = budget_new(SLOTS, 1, 10);
	const uint64_t victim = 0xfeedULL;
	long admitted = 0;
	size_t heap;
	int64_t w, t;
	int round, k, i;

	(void)state;
	assert_non_null(b);
	assert_int_equal(budget_take(b, victim, 10, T0), 0);
	heap = heap_in_use();
	for (round = 0; round < 2; round++) {
		t = T0 + round * 5000;
		for (k = 1; k <= KEYS; k++) {
			for (i = 0; i < 30; i++) {
				w = budget_take(b, (uint64_t)k << 20, 1, t);
				if (w < 0 || w > 1000) /* one token is 1 s away at most */
					fail_msg("key %d: wait %lld", k, (long long)w);
				if (w)
					break;
				admitted++;
			}
			/* A key with no slot of its own may draw on both candidates,
			 * each holding at most a fresh bucket. */
			if (i > 2 * 10)
				fail_msg("key %d: %d takes admitted at once", k, i);
			/* Refused one token, it is refused the burst, with a wait a
			 * fresh bucket's refill bounds. */
			w = budget_take(b, (uint64_t)k << 20, 25, t);
			if (w <= 0 || w > 10000)
				fail_msg("key %d: wait %lld for the burst", k, (long long)w);
		}
		/* The victim's bucket was neither handed to another key fresh nor
		 * refilled by the spray: it holds what 5 s at 1 a second gave it,
		 * less what sharers drew from it. */
		w = budget_take(b, victim, 10, t);
		assert_true(w >= (round == 0 ? 10000 : 5000));
	}
	assert_true(heap_in_use() == heap);
	/* The 64 buckets held 640 tokens (less the victim's 10) at T0 and 64
	 * x 5 more came in 5 s; the first 10-token takes also drew. */
	assert_true(admitted <= SLOTS * 10 - 10 + SLOTS * 5);
	assert_true(admitted > 0);
	budget_free(b);
}

static void test_set_live(void **state)
{
	budget_t *b = budget_new(64, 2, 5);
	int i;

	(void)state;
	assert_non_null(b);
	assert_int_equal(budget_take(b, 9, 5, T0), 0);
	budget_set(b, 10, 20); /* a reload: faster, larger */
	assert_int_equal(budget_take(b, 9, 1, T0 + 100), 0);
	assert_int_equal(budget_take(b, 9, 1, T0 + 100), 100);
	assert_int_equal(budget_take(b, 9, 20, T0 + 10000), 0);
	budget_set(b, 1, 3); /* slower, smaller: a full bucket is cut */
	assert_int_equal(budget_take(b, 9, 4, T0 + 30000), 0); /* charged 3 */
	assert_int_equal(budget_take(b, 9, 1, T0 + 30000), 1000);
	budget_set(b, 0, 3); /* off */
	for (i = 0; i < 100; i++)
		assert_int_equal(budget_take(b, 9, 3, T0 + 30000), 0);
	budget_set(b, 1, 3);
	assert_int_equal(budget_take(b, 9, 1, T0 + 30000), 1000);
	budget_free(b);
}

enum { THREADS = 4, WINDOW_MS = 200000 };

static pthread_barrier_t start;

typedef struct taker {
	budget_t *b;
	uint64_t key;     /* 0: a different key on every take */
	long admitted;
} taker_t;

static void *take_loop(void *arg)
{
	taker_t *tk = arg;
	uint64_t k;
	int64_t t;

	pthread_barrier_wait(&start); /* all at once, or they hardly overlap */
	for (t = 0; t <= WINDOW_MS; t++) {
		k = tk->key ? tk->key : (uint64_t)t * 7919 % 64 + 1;
		if (budget_take(tk->b, k, 1, T0 + t) == 0)
			tk->admitted++;
	}
	return NULL;
}

static long run_takers(budget_t *b, uint64_t key)
{
	pthread_t th[THREADS];
	taker_t tk[THREADS];
	long sum = 0;
	int i;

	pthread_barrier_init(&start, NULL, THREADS);
	for (i = 0; i < THREADS; i++) {
		tk[i] = (taker_t){ .b = b, .key = key };
		assert_int_equal(pthread_create(&th[i], NULL, take_loop, &tk[i]), 0);
	}
	for (i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		sum += tk[i].admitted;
	}
	pthread_barrier_destroy(&start);
	return sum;
}

/* Four threads, one key, 1,000 a second and 100 at once, each trying a
 * take every millisecond of a 200 s window: demand always exceeds supply,
 * so exactly the burst plus 200,000 refilled are admitted. A lost update would
 * admit more, a torn one less. Then 64 keys on a table of 16 from four
 * threads: never more than the table's buckets can hold. */
static void test_threads(void **state)
{
	budget_t *b = budget_new(1024, 1000, 100);
	long sum;

	(void)state;
	assert_non_null(b);
	sum = run_takers(b, 42);
	assert_int_equal(sum, 100 + WINDOW_MS);
	budget_free(b);
	b = budget_new(16, 1000, 100);
	assert_non_null(b);
	sum = run_takers(b, 0);
	assert_true(sum <= 16 * (100 + WINDOW_MS));
	assert_true(sum > 0);
	budget_free(b);
}

/* Three "nodes" of one budget, each note handed at once to the other
 * two, as the Redis bus does (a little later). */
#define NODES 3
static budget_t *node_b[NODES];
static int notes_sent;

static void share_to_others(void *ud, const void *note, size_t len)
{
	int from = (int)(intptr_t)ud, i;

	notes_sent++;
	for (i = 0; i < NODES; i++)
		if (i != from)
			assert_int_equal(budget_apply_note(node_b[i], note, len, T0), 0);
}

/* 5 sign-ups an hour per address on each of three nodes: one address
 * that spreads its tries over the nodes still gets 5 at first, not 15,
 * and then what the rate gives the fleet; spends of another key are
 * kept apart; budget_take stays local. */
static void test_shared_by_nodes(void **state)
{
	int i, admitted = 0;

	(void)state;
	for (i = 0; i < NODES; i++) {
		assert_non_null(node_b[i] = budget_new(64, 5 / 3600.0, 5));
		assert_int_equal(budget_set_share(node_b[i], share_to_others, (void *)(intptr_t)i), 0);
	}
	/* A try a second, round the nodes: every note goes out at once, the
	 * interval having passed since each node's last. */
	for (i = 0; i < 30; i++)
		admitted += budget_take_shared(node_b[i % NODES], 42, 1, T0 + i * 1000) == 0;
	assert_int_equal(admitted, 5);
	/* Another address is untouched on every node. */
	for (i = 0; i < NODES; i++)
		assert_int_equal(budget_take_shared(node_b[i], 43, 1, T0 + 30000), 0);
	/* An hour on, the fleet refilled 5 in all, not 5 a node. */
	admitted = 0;
	for (i = 0; i < 30; i++)
		admitted += budget_take_shared(node_b[i % NODES], 42, 1, T0 + 3600000 + i * 1000) == 0;
	assert_int_equal(admitted, 5);
	/* budget_take is not shared. */
	notes_sent = 0;
	assert_int_equal(budget_take(node_b[0], 44, 1, T0 + 7200000), 0);
	assert_int_equal(notes_sent, 0);
	for (i = 0; i < NODES; i++)
		budget_free(node_b[i]);
}

/* Within the interval spends are gathered, merged by key, and go in one
 * note on the next take after it, or on budget_share_flush; more keys
 * than a note carries are counted as dropped; a malformed note charges
 * nothing. */
static uint8_t last_note[SPENDS_KEYS * 12];
static size_t last_len;

static void keep_note(void *ud, const void *note, size_t len)
{
	(void)ud;
	notes_sent++;
	memcpy(last_note, note, len);
	last_len = len;
}

static void test_share_batches(void **state)
{
	budget_t *b = budget_new(4096, 100, 100), *o = budget_new(4096, 100, 100);
	unsigned k;

	(void)state;
	assert_non_null(b);
	assert_non_null(o);
	assert_int_equal(budget_set_share(b, keep_note, NULL), 0);
	notes_sent = 0;
	assert_int_equal(budget_take_shared(b, 1, 2, T0), 0); /* the first goes at once */
	assert_int_equal(notes_sent, 1);
	assert_int_equal(last_len, 12);
	assert_int_equal(budget_take_shared(b, 1, 3, T0 + 10), 0);
	assert_int_equal(budget_take_shared(b, 2, 1, T0 + 20), 0);
	assert_int_equal(budget_take_shared(b, 1, 4, T0 + 30), 0);
	assert_int_equal(notes_sent, 1);
	assert_int_equal(budget_take_shared(b, 2, 1, T0 + 10 + SPENDS_EVERY_MS), 0);
	assert_int_equal(notes_sent, 2);
	assert_int_equal(last_len, 24); /* key 1: 7; key 2: 2 */
	/* Applied elsewhere: key 1 there has 100 - 7 left, so 94 is refused
	 * and 93 admitted. */
	assert_int_equal(budget_apply_note(o, last_note, last_len, T0), 0);
	assert_true(budget_take(o, 1, 94, T0) > 0);
	assert_int_equal(budget_take(o, 1, 93, T0), 0);
	assert_true(budget_take(o, 2, 99, T0) > 0);
	assert_int_equal(budget_take(o, 2, 98, T0), 0);
	/* Charged below empty, the bucket owes it, down to minus its burst:
	 * 210 more spent elsewhere leaves it at -100, a token 1.01 s off. */
	for (k = 0; k < 30; k++)
		assert_int_equal(budget_apply_note(o, last_note, 12, T0), 0);
	assert_int_equal(budget_take(o, 1, 1, T0), 1010);
	/* The backstop sends what waits within the interval; when nothing
	 * waits, nothing. */
	notes_sent = 0;
	budget_share_flush(b, T0 + 40 + SPENDS_EVERY_MS);
	assert_int_equal(notes_sent, 0);
	assert_int_equal(budget_take_shared(b, 3, 1, T0 + 60 + SPENDS_EVERY_MS), 0);
	assert_int_equal(notes_sent, 0);
	budget_share_flush(b, T0 + 70 + SPENDS_EVERY_MS);
	assert_int_equal(notes_sent, 1);
	assert_int_equal(last_len, 12);
	/* A spray of keys within one interval: a note's worth, the rest
	 * counted. */
	notes_sent = 0;
	for (k = 0; k < SPENDS_KEYS + 10; k++)
		assert_int_equal(budget_take_shared(b, 1000 + k, 1, T0 + 80 + SPENDS_EVERY_MS), 0);
	assert_int_equal(budget_share_dropped(b), 10);
	budget_share_flush(b, T0 + 90 + SPENDS_EVERY_MS);
	assert_int_equal(last_len, SPENDS_KEYS * 12);
	/* Malformed: not a whole record, or longer than any note. */
	assert_int_equal(budget_apply_note(o, last_note, 13, T0), -1);
	assert_int_equal(budget_take(o, 5000, 100, T0), 0);
	budget_free(b);
	budget_free(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_burst_then_wait),
		cmocka_unit_test(test_cost_above_burst),
		cmocka_unit_test(test_refill_cap),
		cmocka_unit_test(test_refund),
		cmocka_unit_test(test_keys_apart),
		cmocka_unit_test(test_refilled_slot_reused),
		cmocka_unit_test(test_spray),
		cmocka_unit_test(test_set_live),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_shared_by_nodes),
		cmocka_unit_test(test_share_batches),
	};
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests_name("unit_budget", tests, NULL, NULL);
}
