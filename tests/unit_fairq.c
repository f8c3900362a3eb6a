/* unit_fairq.c - the fair queue: flows take turns and each is FIFO, a
 * flow's backlog delays another flow by one pop at most, the per-flow cap
 * refuses, a full queue evicts the newest job of the longest flow (never a
 * job without a drop) and refuses a pusher that is itself the longest,
 * storage is reused over a million operations checked against a model,
 * and any 64-bit flow id works. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "fairq.h"

/* Items carry their identity in arg, an integer cast to a pointer. */
#define TAG(n) ((void *)(uintptr_t)(n))
#define UNTAG(p) ((uintptr_t)(p))

static void drop_stub(void *arg)
{
	(void)arg;
}

static void run_stub(void)
{
}

static int push(fairq_t *q, uint64_t flow, uintptr_t tag, fairq_item_t *evicted)
{
	fairq_item_t it = {flow, run_stub, drop_stub, TAG(tag)};
	fairq_item_t ignored;

	return fairq_push(q, &it, evicted ? evicted : &ignored);
}

/* Pops one item and returns its tag; fails the test if it is not of flow. */
static uintptr_t pop_from(fairq_t *q, uint64_t flow)
{
	fairq_item_t it;

	assert_int_equal(fairq_pop(q, &it), 0);
	assert_true(it.flow == flow);
	assert_true(it.fn == run_stub);
	return UNTAG(it.arg);
}

/* A1 A2 A3, B1, C1 C2 pop as A1 B1 C1 A2 C2 A3: one item per flow per
 * round, in the order the flows arrived. */
static void test_rotation(void **state)
{
	fairq_t *q = fairq_new(16, 0);

	(void)state;
	assert_non_null(q);
	assert_int_equal(push(q, 'A', 1, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, 'A', 2, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, 'A', 3, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, 'B', 1, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, 'C', 1, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, 'C', 2, NULL), FAIRQ_QUEUED);
	assert_int_equal(fairq_flows(q), 3);
	assert_int_equal(pop_from(q, 'A'), 1);
	assert_int_equal(pop_from(q, 'B'), 1);
	assert_int_equal(pop_from(q, 'C'), 1);
	/* B has left the rotation; a newcomer joins at the end of the round. */
	assert_int_equal(fairq_flows(q), 2);
	assert_int_equal(push(q, 'D', 1, NULL), FAIRQ_QUEUED);
	assert_int_equal(pop_from(q, 'A'), 2);
	assert_int_equal(pop_from(q, 'C'), 2);
	assert_int_equal(pop_from(q, 'D'), 1);
	assert_int_equal(pop_from(q, 'A'), 3);
	assert_int_equal(fairq_count(q), 0);
	assert_int_equal(fairq_flows(q), 0);
	{
		fairq_item_t it;
		assert_int_equal(fairq_pop(q, &it), -1);
	}
	fairq_free(q);
}

/* One flow alone is a plain FIFO. */
static void test_fifo_within_flow(void **state)
{
	fairq_t *q = fairq_new(100, 0);
	uintptr_t i;

	(void)state;
	assert_non_null(q);
	for (i = 0; i < 100; i++)
		assert_int_equal(push(q, 42, i, NULL), FAIRQ_QUEUED);
	assert_int_equal(fairq_flow_count(q, 42), 100);
	for (i = 0; i < 100; i++)
		assert_int_equal(pop_from(q, 42), i);
	assert_int_equal(fairq_flow_count(q, 42), 0);
	fairq_free(q);
}

/* With a cap of 3, a flow's fourth push is refused while others still get
 * in, and a pop makes room for it again. */
static void test_flow_cap(void **state)
{
	fairq_t *q = fairq_new(16, 3);

	(void)state;
	assert_non_null(q);
	assert_int_equal(push(q, 1, 1, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, 1, 2, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, 1, 3, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, 1, 4, NULL), FAIRQ_FLOW_FULL);
	assert_int_equal(fairq_flow_count(q, 1), 3);
	assert_int_equal(push(q, 2, 1, NULL), FAIRQ_QUEUED);
	assert_int_equal(pop_from(q, 1), 1);
	assert_int_equal(push(q, 1, 4, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, 1, 5, NULL), FAIRQ_FLOW_FULL);
	/* Raising the cap to 0 leaves only the total bound. */
	fairq_set_flow_cap(q, 0);
	assert_int_equal(push(q, 1, 5, NULL), FAIRQ_QUEUED);
	assert_int_equal(fairq_flow_count(q, 1), 4);
	fairq_free(q);
}

/* A full queue: the longest flow loses its newest item to a shorter
 * pusher, and a pusher that holds the most (alone or tied) is refused. */
static void test_eviction(void **state)
{
	fairq_t *q = fairq_new(6, 0);
	fairq_item_t ev;
	uintptr_t i;

	(void)state;
	assert_non_null(q);
	for (i = 1; i <= 6; i++)
		assert_int_equal(push(q, 'A', i, NULL), FAIRQ_QUEUED);
	/* A fills the queue; A itself cannot push more. */
	assert_int_equal(push(q, 'A', 7, NULL), FAIRQ_FULL);
	assert_int_equal(fairq_count(q), 6);
	/* B gets in three times, each time at A's newest: A6, A5, A4. */
	for (i = 1; i <= 3; i++) {
		ev.arg = NULL;
		assert_int_equal(push(q, 'B', i, &ev), FAIRQ_EVICTED);
		assert_true(ev.flow == 'A');
		assert_int_equal(UNTAG(ev.arg), 7 - i);
		assert_true(ev.drop == drop_stub);
		assert_true(ev.fn == run_stub);
	}
	assert_int_equal(fairq_count(q), 6);
	assert_int_equal(fairq_flow_count(q, 'A'), 3);
	assert_int_equal(fairq_flow_count(q, 'B'), 3);
	/* Tied at 3, neither can push out the other. */
	assert_int_equal(push(q, 'B', 4, NULL), FAIRQ_FULL);
	assert_int_equal(push(q, 'A', 4, NULL), FAIRQ_FULL);
	/* A newcomer evicts from one of the tied longest: the one that
	 * reached 3 last (B). */
	assert_int_equal(push(q, 'C', 1, &ev), FAIRQ_EVICTED);
	assert_true(ev.flow == 'B');
	assert_int_equal(UNTAG(ev.arg), 3);
	/* Now A holds the most (3) and A is refused; B (2) may evict A3. */
	assert_int_equal(push(q, 'A', 4, NULL), FAIRQ_FULL);
	assert_int_equal(push(q, 'B', 3, &ev), FAIRQ_EVICTED);
	assert_true(ev.flow == 'A');
	assert_int_equal(UNTAG(ev.arg), 3);
	/* What remains is what was not evicted, in rotation. */
	assert_int_equal(pop_from(q, 'A'), 1);
	assert_int_equal(pop_from(q, 'B'), 1);
	assert_int_equal(pop_from(q, 'C'), 1);
	assert_int_equal(pop_from(q, 'A'), 2);
	assert_int_equal(pop_from(q, 'B'), 2);
	assert_int_equal(pop_from(q, 'B'), 3);
	assert_int_equal(fairq_count(q), 0);
	fairq_free(q);
}

/* An eviction that empties a flow removes it: a newcomer may take the
 * only item of the one flow holding any. */
static void test_eviction_empties_flow(void **state)
{
	fairq_t *q = fairq_new(1, 0);
	fairq_item_t ev;

	(void)state;
	assert_non_null(q);
	assert_int_equal(push(q, 5, 1, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, 6, 1, &ev), FAIRQ_EVICTED);
	assert_true(ev.flow == 5);
	assert_int_equal(fairq_flows(q), 1);
	assert_int_equal(fairq_flow_count(q, 5), 0);
	assert_int_equal(pop_from(q, 6), 1);
	assert_int_equal(fairq_flows(q), 0);
	fairq_free(q);
}

/* A job with no drop is never evicted: a newcomer looks past it to a
 * droppable flow tied for the most, and is refused when there is none. */
static void test_no_drop_never_evicted(void **state)
{
	fairq_t *q = fairq_new(4, 0);
	fairq_item_t pinned = {0, run_stub, NULL, TAG(1)}, ev;

	(void)state;
	assert_non_null(q);
	assert_int_equal(fairq_push(q, &pinned, &ev), FAIRQ_QUEUED);
	pinned.arg = TAG(2);
	assert_int_equal(fairq_push(q, &pinned, &ev), FAIRQ_QUEUED);
	assert_int_equal(push(q, 9, 1, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, 9, 2, NULL), FAIRQ_QUEUED);
	/* Flow 9 reached 2 last, so it heads the list: evicted first. */
	assert_int_equal(push(q, 7, 1, &ev), FAIRQ_EVICTED);
	assert_true(ev.flow == 9);
	/* Now flow 0 alone holds the most, and its newest has no drop. */
	assert_int_equal(push(q, 7, 2, NULL), FAIRQ_FULL);
	assert_int_equal(fairq_flow_count(q, 0), 2);
	fairq_free(q);

	/* The same with the pinned flow at the head of the tied list. */
	q = fairq_new(4, 0);
	assert_non_null(q);
	assert_int_equal(push(q, 9, 1, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, 9, 2, NULL), FAIRQ_QUEUED);
	pinned.arg = TAG(1);
	assert_int_equal(fairq_push(q, &pinned, &ev), FAIRQ_QUEUED);
	assert_int_equal(fairq_push(q, &pinned, &ev), FAIRQ_QUEUED);
	assert_int_equal(push(q, 7, 1, &ev), FAIRQ_EVICTED);
	assert_true(ev.flow == 9);
	assert_int_equal(UNTAG(ev.arg), 2);
	fairq_free(q);
}

/* A flow of 1,000 items delays another flow's single item by one pop at
 * most, whether it arrives before the backlog is touched or in its
 * middle. */
static void test_backlog_does_not_delay(void **state)
{
	fairq_t *q = fairq_new(2000, 0);
	uintptr_t i;
	int pops;
	fairq_item_t it;

	(void)state;
	assert_non_null(q);
	for (i = 0; i < 1000; i++)
		assert_int_equal(push(q, 1, i, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, 2, 0, NULL), FAIRQ_QUEUED);
	for (pops = 1;; pops++) {
		assert_int_equal(fairq_pop(q, &it), 0);
		if (it.flow == 2)
			break;
	}
	assert_true(pops <= 2);
	/* Halfway through the backlog. */
	for (i = 0; i < 500; i++)
		assert_int_equal(fairq_pop(q, &it), 0);
	assert_int_equal(push(q, 3, 0, NULL), FAIRQ_QUEUED);
	for (pops = 1;; pops++) {
		assert_int_equal(fairq_pop(q, &it), 0);
		if (it.flow == 3)
			break;
	}
	assert_true(pops <= 2);
	fairq_free(q);
}

/* Flow ids at both ends of the range are flows like any other. */
static void test_extreme_ids(void **state)
{
	fairq_t *q = fairq_new(8, 0);

	(void)state;
	assert_non_null(q);
	assert_int_equal(push(q, 0, 1, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, UINT64_MAX, 1, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, 0, 2, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, UINT64_MAX, 2, NULL), FAIRQ_QUEUED);
	assert_int_equal(push(q, UINT64_MAX - 1, 1, NULL), FAIRQ_QUEUED);
	assert_int_equal(fairq_flows(q), 3);
	assert_int_equal(fairq_flow_count(q, 0), 2);
	assert_int_equal(fairq_flow_count(q, UINT64_MAX), 2);
	assert_int_equal(fairq_flow_count(q, UINT64_MAX - 1), 1);
	assert_int_equal(fairq_flow_count(q, 1), 0);
	assert_int_equal(pop_from(q, 0), 1);
	assert_int_equal(pop_from(q, UINT64_MAX), 1);
	assert_int_equal(pop_from(q, UINT64_MAX - 1), 1);
	assert_int_equal(pop_from(q, 0), 2);
	assert_int_equal(pop_from(q, UINT64_MAX), 2);
	assert_int_equal(fairq_flows(q), 0);
	fairq_free(q);
}

/* A million random pushes and pops over 37 flows in a queue of 64, with
 * a per-flow cap of 20, checked step by step against a model: each flow's
 * FIFO of tags. Pops must return some flow's oldest, evictions the
 * longest flow's newest; counts must match throughout. Any node or flow
 * slot lost or reused twice shows as a mismatch (or under ASan). */
#define MODEL_CAP 64
#define MODEL_FLOWS 37
#define MODEL_FLOW_CAP 20
#define MODEL_OPS 1000000

typedef struct model_flow {
	uint64_t id;
	uintptr_t tags[MODEL_CAP];
	unsigned head, n;
} model_flow_t;

static model_flow_t model[MODEL_FLOWS];

static model_flow_t *model_of(uint64_t id)
{
	int i;

	for (i = 0; i < MODEL_FLOWS; i++)
		if (model[i].id == id)
			return &model[i];
	fail_msg("item of unknown flow %llu", (unsigned long long)id);
	return NULL;
}

static void test_storage_reuse(void **state)
{
	fairq_t *q = fairq_new(MODEL_CAP, MODEL_FLOW_CAP);
	uint64_t rng = 0x2545f4914f6cdd1dULL;
	unsigned long pushed = 0, popped = 0, evicted = 0, refused = 0;
	uintptr_t tag = 0;
	unsigned total = 0;
	long op;
	int i;

	(void)state;
	assert_non_null(q);
	for (i = 0; i < MODEL_FLOWS; i++) {
		model[i].id = (uint64_t)i * 0x100000001ULL;
		model[i].head = model[i].n = 0;
	}
	model[1].id = UINT64_MAX;
	for (op = 0; op < MODEL_OPS; op++) {
		unsigned r;

		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		r = (unsigned)(rng >> 32);
		/* A few flows are busy, most are not; pushes outnumber pops
		 * a little, so the queue is often full. */
		if (r % 100 < 53) {
			model_flow_t *m = &model[(r >> 8) % 4 == 0 ? (r >> 12) % MODEL_FLOWS : (r >> 12) % 3];
			unsigned longest = 0;
			fairq_item_t ev;
			int res;

			for (i = 0; i < MODEL_FLOWS; i++)
				if (model[i].n > longest)
					longest = model[i].n;
			res = push(q, m->id, ++tag, &ev);
			if (m->n >= MODEL_FLOW_CAP) {
				assert_int_equal(res, FAIRQ_FLOW_FULL);
				refused++;
				continue;
			}
			if (total == MODEL_CAP && m->n >= longest) {
				assert_int_equal(res, FAIRQ_FULL);
				refused++;
				continue;
			}
			if (total == MODEL_CAP) {
				model_flow_t *v;

				assert_int_equal(res, FAIRQ_EVICTED);
				v = model_of(ev.flow);
				assert_int_equal(v->n, longest);
				assert_int_equal(UNTAG(ev.arg), v->tags[(v->head + v->n - 1) % MODEL_CAP]);
				v->n--;
				total--;
				evicted++;
			} else {
				assert_int_equal(res, FAIRQ_QUEUED);
			}
			m->tags[(m->head + m->n) % MODEL_CAP] = tag;
			m->n++;
			total++;
			pushed++;
		} else {
			fairq_item_t it;

			if (total == 0) {
				assert_int_equal(fairq_pop(q, &it), -1);
				continue;
			}
			assert_int_equal(fairq_pop(q, &it), 0);
			{
				model_flow_t *m = model_of(it.flow);
				assert_true(m->n > 0);
				assert_int_equal(UNTAG(it.arg), m->tags[m->head]);
				m->head = (m->head + 1) % MODEL_CAP;
				m->n--;
			}
			total--;
			popped++;
		}
		assert_int_equal(fairq_count(q), total);
		if (op % 1024 == 0) {
			unsigned active = 0;

			for (i = 0; i < MODEL_FLOWS; i++) {
				assert_int_equal(fairq_flow_count(q, model[i].id), model[i].n);
				active += model[i].n > 0;
			}
			assert_int_equal(fairq_flows(q), active);
		}
	}
	/* Every kind of step happened many times. */
	assert_true(pushed > 100000 && popped > 100000 && evicted > 1000 && refused > 1000);
	assert_int_equal(pushed, popped + evicted + total);
	while (total) {
		fairq_item_t it;
		assert_int_equal(fairq_pop(q, &it), 0);
		total--;
	}
	assert_int_equal(fairq_count(q), 0);
	assert_int_equal(fairq_flows(q), 0);
	fairq_free(q);
}

/* cap 0 refuses everything, and a cap too large is refused at creation. */
static void test_limits(void **state)
{
	fairq_t *q = fairq_new(0, 0);

	(void)state;
	assert_non_null(q);
	assert_int_equal(push(q, 1, 1, NULL), FAIRQ_FULL);
	assert_int_equal(fairq_count(q), 0);
	fairq_free(q);
	assert_null(fairq_new(1u << 30, 0));
	fairq_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rotation),
		cmocka_unit_test(test_fifo_within_flow),
		cmocka_unit_test(test_flow_cap),
		cmocka_unit_test(test_eviction),
		cmocka_unit_test(test_eviction_empties_flow),
		cmocka_unit_test(test_no_drop_never_evicted),
		cmocka_unit_test(test_backlog_does_not_delay),
		cmocka_unit_test(test_extreme_ids),
		cmocka_unit_test(test_storage_reuse),
		cmocka_unit_test(test_limits),
	};
	return cmocka_run_group_tests_name("unit_fairq", tests, NULL, NULL);
}
