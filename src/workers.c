/* workers.c - the worker pool of workers.h: a ring of jobs under one mutex
 * and condition variable. Jobs are coarse (a store query, an Argon2 hash),
 * so one lock is not where the time goes. */
#include "workers.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"

typedef struct job {
	worker_fn fn;
	void *arg;
} job_t;

typedef struct worker {
	pthread_t thread;
	struct workers *pool;
	store_t *store;
	char name[24];
	int started;
} worker_t;

struct workers {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	job_t *ring;
	unsigned cap, head, count;
	int stopping;
	int n;
	worker_t *w;
};

static void *worker_main(void *p)
{
	worker_t *self = p;
	workers_t *pool = self->pool;

	log_set_thread_name(self->name);
	for (;;) {
		job_t job;

		pthread_mutex_lock(&pool->lock);
		while (pool->count == 0 && !pool->stopping)
			pthread_cond_wait(&pool->cond, &pool->lock);
		if (pool->count == 0) {
			pthread_mutex_unlock(&pool->lock);
			break;
		}
		job = pool->ring[pool->head];
		pool->head = (pool->head + 1) % pool->cap;
		pool->count--;
		pthread_mutex_unlock(&pool->lock);
		job.fn(self->store, job.arg);
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
	pool->cap = queue_cap;
	pool->ring = calloc(queue_cap, sizeof *pool->ring);
	pool->w = calloc((size_t)n, sizeof *pool->w);
	pool->n = n;
	if (!pool->ring || !pool->w)
		goto err;
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
	int r = -1;

	pthread_mutex_lock(&pool->lock);
	if (pool->count < pool->cap && !pool->stopping) {
		pool->ring[(pool->head + pool->count) % pool->cap] = (job_t){fn, arg};
		pool->count++;
		pthread_cond_signal(&pool->cond);
		r = 0;
	}
	pthread_mutex_unlock(&pool->lock);
	return r;
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
	free(pool->ring);
	free(pool->w);
	free(pool);
}
