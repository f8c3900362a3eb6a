/* unit_workers.c - the worker pool on a real store: one flow's backlog of
 * slow jobs does not hold up another flow's job by more than about one job
 * per worker (flow 0, the flow of workers_submit, included); a full queue
 * evicts the longest flow's newest job, whose drop is called exactly once,
 * on the submitting thread and outside the pool's lock, and which never
 * runs; the per-flow cap refuses; workers_free runs what is queued.
 *
 * Order is measured, not time: each job takes a sequence number when it
 * starts. Before a scenario is queued, every worker is held in a "gate"
 * job, so the queue is complete before the first pop and the order of
 * pops depends on the queue alone, never on how fast this thread submits. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "store.h"
#include "workers.h"

#define MAX_JOBS 512

/* What happened to each job, by its tag. */
static atomic_int ran[MAX_JOBS], dropped[MAX_JOBS];
static int start_seq[MAX_JOBS];
static atomic_int next_seq;
static atomic_int null_store;

/* For the drops: the pool, and what a drop saw. */
static workers_t *pool;
static pthread_t submitter;
static atomic_int drop_off_thread;
static unsigned queued_in_drop[MAX_JOBS];

#define TAG(n) ((void *)(uintptr_t)(n))
#define UNTAG(p) ((int)(uintptr_t)(p))

static void reset(void)
{
	int i;

	for (i = 0; i < MAX_JOBS; i++) {
		atomic_store(&ran[i], 0);
		atomic_store(&dropped[i], 0);
		start_seq[i] = 0;
		queued_in_drop[i] = 0;
	}
	atomic_store(&next_seq, 0);
	atomic_store(&null_store, 0);
	atomic_store(&drop_off_thread, 0);
	submitter = pthread_self();
}

static void record(store_t *st, void *arg)
{
	int t = UNTAG(arg);

	if (!st)
		atomic_store(&null_store, 1);
	start_seq[t] = atomic_fetch_add(&next_seq, 1) + 1;
	atomic_fetch_add(&ran[t], 1);
}

static void slow_job(store_t *st, void *arg)
{
	record(st, arg);
	usleep(2000);
}

static void fast_job(store_t *st, void *arg)
{
	record(st, arg);
}

/* Asking the pool for its queue length takes its lock: were the drop
 * called under it, this would never return. */
static void drop_job(void *arg)
{
	int t = UNTAG(arg);

	if (!pthread_equal(pthread_self(), submitter))
		atomic_store(&drop_off_thread, 1);
	queued_in_drop[t] = workers_queued(pool);
	atomic_fetch_add(&dropped[t], 1);
}

/* The gate holds every worker in a job until opened. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_open, gates_in;

static void gate_job(store_t *st, void *arg)
{
	(void)st;
	(void)arg;
	pthread_mutex_lock(&gate_lock);
	gates_in++;
	pthread_cond_broadcast(&gate_cond);
	while (!gate_open)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
}

/* Occupies all n workers; returns once each is inside the gate. */
static void close_gate(workers_t *w, int n)
{
	int i;

	pthread_mutex_lock(&gate_lock);
	gate_open = 0;
	gates_in = 0;
	pthread_mutex_unlock(&gate_lock);
	for (i = 0; i < n; i++)
		assert_int_equal(workers_submit(w, gate_job, NULL), 0);
	pthread_mutex_lock(&gate_lock);
	while (gates_in < n)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
	assert_int_equal(workers_queued(w), 0);
}

static void open_gate(void)
{
	pthread_mutex_lock(&gate_lock);
	gate_open = 1;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
}

static char dir[64];

/* A pool of n workers on a fresh store in a temporary directory. */
static workers_t *start(int n, unsigned cap)
{
	snprintf(dir, sizeof dir, "/tmp/parley-unit-workers-XXXXXX");
	assert_non_null(mkdtemp(dir));
	reset();
	pool = workers_new(n, dir, cap);
	assert_non_null(pool);
	return pool;
}

static void stop(workers_t *w)
{
	char cmd[128];

	workers_free(w);
	pool = NULL;
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* 200 slow jobs of flow 1, then one job of flow 2: with 2 workers, flow 2's
 * job is among the first three to start (a FIFO would make it the 201st). */
static void test_backlog_does_not_delay(void **state)
{
	const int n = 2, backlog = 200;
	workers_t *w = start(n, 1024);
	int i;

	(void)state;
	close_gate(w, n);
	for (i = 0; i < backlog; i++)
		assert_int_equal(workers_submit_flow(w, 1, slow_job, drop_job, TAG(i)), 0);
	assert_int_equal(workers_submit_flow(w, 2, slow_job, drop_job, TAG(backlog)), 0);
	assert_int_equal(workers_queued(w), backlog + 1);
	open_gate();
	stop(w);
	for (i = 0; i <= backlog; i++) {
		assert_int_equal(atomic_load(&ran[i]), 1);
		assert_int_equal(atomic_load(&dropped[i]), 0);
	}
	assert_false(atomic_load(&null_store));
	assert_true(start_seq[backlog] >= 1 && start_seq[backlog] <= n + 1);
}

/* Jobs of the first queue start before any of the ordinary queue's,
 * however many wait there, and take turns among their own flows. */
static void test_first_queue(void **state)
{
	const int backlog = 50;
	workers_t *w = start(1, 1024);
	int i;

	(void)state;
	close_gate(w, 1);
	for (i = 0; i < backlog; i++)
		assert_int_equal(workers_submit_flow(w, 1, fast_job, drop_job, TAG(i)), 0);
	/* Flow 5 queues two first, then flow 6 one: 5, 6, 5. */
	assert_int_equal(workers_submit_first(w, 5, fast_job, drop_job, TAG(backlog)), 0);
	assert_int_equal(workers_submit_first(w, 5, fast_job, drop_job, TAG(backlog + 1)), 0);
	assert_int_equal(workers_submit_first(w, 6, fast_job, drop_job, TAG(backlog + 2)), 0);
	assert_int_equal(workers_queued(w), backlog + 3);
	open_gate();
	stop(w);
	for (i = 0; i < backlog + 3; i++)
		assert_int_equal(atomic_load(&ran[i]), 1);
	assert_int_equal(start_seq[backlog], 1);
	assert_int_equal(start_seq[backlog + 2], 2);
	assert_int_equal(start_seq[backlog + 1], 3);
	for (i = 0; i < backlog; i++)
		assert_true(start_seq[i] > 3);
}

/* The same with the backlog in flow 0, through the old workers_submit:
 * flow 0 takes its turn like any other flow. */
static void test_flow0_takes_turns(void **state)
{
	const int n = 2, backlog = 100;
	workers_t *w = start(n, 1024);
	int i;

	(void)state;
	close_gate(w, n);
	for (i = 0; i < backlog; i++)
		assert_int_equal(workers_submit(w, fast_job, TAG(i)), 0);
	assert_int_equal(workers_submit_flow(w, 77, fast_job, drop_job, TAG(backlog)), 0);
	open_gate();
	stop(w);
	for (i = 0; i <= backlog; i++)
		assert_int_equal(atomic_load(&ran[i]), 1);
	assert_true(start_seq[backlog] >= 1 && start_seq[backlog] <= n + 1);
}

/* A queue of 8 filled by flow 1 (jobs 0-7); flow 2 submits 3 (8-10), each
 * evicting flow 1's newest (7, 6, 5): their drops run once, at once, on
 * this thread, with the lock free and the new job already queued; they
 * never run. Flow 1, now the longest, is refused. */
static void test_eviction(void **state)
{
	workers_t *w = start(1, 8);
	int i;

	(void)state;
	close_gate(w, 1);
	for (i = 0; i < 8; i++)
		assert_int_equal(workers_submit_flow(w, 1, fast_job, drop_job, TAG(i)), 0);
	assert_int_equal(workers_queued(w), 8);
	for (i = 0; i < 3; i++) {
		assert_int_equal(workers_submit_flow(w, 2, fast_job, drop_job, TAG(8 + i)), 0);
		/* The drop ran before the submit returned. */
		assert_int_equal(atomic_load(&dropped[7 - i]), 1);
		assert_int_equal(queued_in_drop[7 - i], 8);
		assert_int_equal(workers_evicted(w), (uint64_t)i + 1);
	}
	/* Flow 1 holds 5, flow 2 holds 3: flow 1 is refused and keeps arg. */
	assert_int_equal(workers_submit_flow(w, 1, fast_job, drop_job, TAG(11)), -1);
	/* A job outside flow 0 with no drop is refused however much room. */
	assert_int_equal(workers_submit_flow(w, 3, fast_job, NULL, TAG(12)), -1);
	assert_int_equal(workers_queued(w), 8);
	open_gate();
	stop(w);
	for (i = 0; i < 13; i++) {
		int evicted = i >= 5 && i <= 7;
		int refused = i >= 11;

		assert_int_equal(atomic_load(&ran[i]), evicted || refused ? 0 : 1);
		assert_int_equal(atomic_load(&dropped[i]), evicted ? 1 : 0);
	}
	assert_false(atomic_load(&drop_off_thread));
}

/* Jobs of workers_submit have no drop, so they are never evicted: a queue
 * full of them refuses another flow, as a full queue always did. */
static void test_no_drop_not_evicted(void **state)
{
	workers_t *w = start(1, 4);
	int i;

	(void)state;
	close_gate(w, 1);
	for (i = 0; i < 4; i++)
		assert_int_equal(workers_submit(w, fast_job, TAG(i)), 0);
	assert_int_equal(workers_submit(w, fast_job, TAG(4)), -1);
	assert_int_equal(workers_submit_flow(w, 9, fast_job, drop_job, TAG(5)), -1);
	assert_int_equal(workers_evicted(w), 0);
	open_gate();
	stop(w);
	for (i = 0; i < 6; i++) {
		assert_int_equal(atomic_load(&ran[i]), i < 4 ? 1 : 0);
		assert_int_equal(atomic_load(&dropped[i]), 0);
	}
}

/* With a cap of 3 per flow, a flow's fourth job is refused while another
 * flow still gets in. */
static void test_flow_cap(void **state)
{
	workers_t *w = start(1, 64);
	int i;

	(void)state;
	workers_set_flow_cap(w, 3);
	close_gate(w, 1);
	for (i = 0; i < 3; i++)
		assert_int_equal(workers_submit_flow(w, 1, fast_job, drop_job, TAG(i)), 0);
	assert_int_equal(workers_submit_flow(w, 1, fast_job, drop_job, TAG(3)), -1);
	assert_int_equal(workers_submit_flow(w, 2, fast_job, drop_job, TAG(4)), 0);
	assert_int_equal(workers_queued(w), 4);
	assert_int_equal(workers_evicted(w), 0);
	open_gate();
	stop(w);
	for (i = 0; i < 5; i++)
		assert_int_equal(atomic_load(&ran[i]), i == 3 ? 0 : 1);
}

/* workers_free, called while 40 slow jobs wait, runs them all first. */
static void test_free_runs_queued(void **state)
{
	workers_t *w = start(1, 64);
	int i;

	(void)state;
	close_gate(w, 1);
	for (i = 0; i < 40; i++)
		assert_int_equal(workers_submit_flow(w, (uint64_t)(i % 4), slow_job, drop_job, TAG(i)), 0);
	assert_int_equal(workers_queued(w), 40);
	open_gate();
	stop(w);
	for (i = 0; i < 40; i++) {
		assert_int_equal(atomic_load(&ran[i]), 1);
		assert_int_equal(atomic_load(&dropped[i]), 0);
	}
	assert_int_equal(atomic_load(&next_seq), 40);
}

/* After a failed assertion the pool is still up, its workers held in the
 * gate: release and free it, so the next test starts clean. */
static int teardown(void **state)
{
	(void)state;
	if (pool) {
		open_gate();
		stop(pool);
	}
	return 0;
}

#define TEST(f) cmocka_unit_test_teardown(f, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		TEST(test_backlog_does_not_delay),
		TEST(test_flow0_takes_turns),
		TEST(test_first_queue),
		TEST(test_eviction),
		TEST(test_no_drop_not_evicted),
		TEST(test_flow_cap),
		TEST(test_free_runs_queued),
	};

	/* A drop called under the pool's lock deadlocks in drop_job; a
	 * deadlock must end the run as a failure, not hang it. */
	alarm(120);
	return cmocka_run_group_tests_name("unit_workers", tests, NULL, NULL);
}
