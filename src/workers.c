/* workers.c - the worker pool of workers.h: a fair queue (fairq.c) under
 * one mutex and condition variable. Jobs are coarse (a store query, an
 * Argon2 hash), so one lock is not where the time goes; the queue's own
 * operations are O(1) and never allocate, so holding the lock stays
 * short. An evicted job's drop is called after the lock is released,
 * because it posts to a loop and frees, and may even submit again. */
#include "workers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "fairq.h"
#include "log.h"

typedef struct worker {
	pthread_t thread;
	struct workers *pool;
	store_t *store;
	char name[24];
	int started;
} worker_t;

struct workers {
	pthread_mutex_t lock;
	pthread_cond_t cond;      /* a job was queued, or stopping */
	fairq_t *queue;
	fairq_t *first;           /* served before queue: see workers_submit_first */
	int stopping;
	int n;
	worker_t *w;
	atomic_uint_fast64_t evicted;
};

static void *worker_main(void *p)
{
	worker_t *self = p;
	workers_t *pool = self->pool;

	log_set_thread_name(self->name);
	for (;;) {
		fairq_item_t job;

		pthread_mutex_lock(&pool->lock);
		while (fairq_count(pool->first) + fairq_count(pool->queue) == 0 && !pool->stopping)
			pthread_cond_wait(&pool->cond, &pool->lock);
		/* Stopping still drains: the queues empty before a worker
		 * leaves, so workers_free runs every job. */
		if (fairq_pop(pool->first, &job) < 0 && fairq_pop(pool->queue, &job) < 0) {
			pthread_mutex_unlock(&pool->lock);
			break;
		}
		pthread_mutex_unlock(&pool->lock);
		((worker_fn)job.fn)(self->store, job.arg);
	}
	return NULL;
}

workers_t *workers_new(int n, const char *data_dir, unsigned queue_cap)
{
	workers_t *pool = calloc(1, sizeof *pool);
	int i;

	if (!pool)
		return NULL;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->cond, NULL);
	atomic_init(&pool->evicted, 0);
	pool->queue = fairq_new(queue_cap, 0);
	pool->first = fairq_new(queue_cap, 0);
	pool->w = calloc((size_t)n, sizeof *pool->w);
	pool->n = n;
	if (!pool->queue || !pool->first || !pool->w) {
		log_error("workers: out of memory for a queue of %u", queue_cap);
		goto err;
	}
	for (i = 0; i < n; i++) {
		worker_t *w = &pool->w[i];
		w->pool = pool;
		snprintf(w->name, sizeof w->name, "worker-%d", i);
		if (!(w->store = store_open(data_dir)))
			goto err;
		if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
			log_error("workers: cannot start a thread");
			goto err;
		}
		w->started = 1;
	}
	return pool;
err:
	workers_free(pool);
	return NULL;
}

int workers_submit(workers_t *pool, worker_fn fn, void *arg)
{
	return workers_submit_flow(pool, 0, fn, NULL, arg);
}

static int submit(workers_t *pool, int first, uint64_t flow, worker_fn fn, worker_drop_fn drop,
                  void *arg)
{
	fairq_item_t job = {flow, (fairq_fn)fn, drop, arg}, out;
	int r = FAIRQ_FULL;

	if (!drop && flow != 0) {
		log_error("workers: a job in flow %llu has no drop function",
		          (unsigned long long)flow);
		return -1;
	}
	pthread_mutex_lock(&pool->lock);
	if (!pool->stopping) {
		r = fairq_push(first ? pool->first : pool->queue, &job, &out);
		if (r >= 0)
			pthread_cond_signal(&pool->cond);
	}
	pthread_mutex_unlock(&pool->lock);
	if (r == FAIRQ_EVICTED) {
		atomic_fetch_add(&pool->evicted, 1);
		out.drop(out.arg);
	}
	return r >= 0 ? 0 : -1;
}

int workers_submit_flow(workers_t *pool, uint64_t flow, worker_fn fn, worker_drop_fn drop,
                        void *arg)
{
	return submit(pool, 0, flow, fn, drop, arg);
}

int workers_submit_first(workers_t *pool, uint64_t flow, worker_fn fn, worker_drop_fn drop,
                         void *arg)
{
	return submit(pool, 1, flow, fn, drop, arg);
}

void workers_set_flow_cap(workers_t *pool, unsigned cap)
{
	pthread_mutex_lock(&pool->lock);
	fairq_set_flow_cap(pool->queue, cap);
	fairq_set_flow_cap(pool->first, cap);
	pthread_mutex_unlock(&pool->lock);
}

unsigned workers_queued(workers_t *pool)
{
	unsigned n;

	pthread_mutex_lock(&pool->lock);
	n = fairq_count(pool->queue) + fairq_count(pool->first);
	pthread_mutex_unlock(&pool->lock);
	return n;
}

uint64_t workers_evicted(workers_t *pool)
{
	return atomic_load(&pool->evicted);
}

void workers_free(workers_t *pool)
{
	int i;

	if (!pool)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = 1;
	pthread_cond_broadcast(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
	for (i = 0; pool->w && i < pool->n; i++) {
		if (pool->w[i].started)
			pthread_join(pool->w[i].thread, NULL);
		store_close(pool->w[i].store);
	}
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->cond);
	fairq_free(pool->queue);
	fairq_free(pool->first);
	free(pool->w);
	free(pool);
}
