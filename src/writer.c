/* writer.c - the group-commit writer of writer.h. */
#include "writer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "ratelimit.h"
#include "snowflake.h"

#define MAX_BATCH 1024

struct writer {
	pthread_t thread;
	store_t *store;
	snowflake_t ids;
	ratelimit_t *limits;     /* owned by the writer thread once it runs */
	ratelimit_t *storage;    /* bytes, likewise */
	writer_done_fn done;
	void *ud;

	pthread_mutex_t lock;
	pthread_cond_t more;     /* ops queued or stopping */
	pthread_cond_t drained;  /* queue empty and no batch in hand */
	store_op_t **ring;
	unsigned cap, head, count;
	int busy, stopping;
	unsigned delay_us;       /* see writer_set_commit_delay */
	atomic_uint_fast64_t batches, ops, messages, receipt_writes, limited, storage_limited, stored_bytes;
};

/* What one stored message costs the store besides its body: the cmid
 * (in the row and again in its unique index) and the row's own fields
 * and index entries. Charging it keeps a flood of tiny messages within
 * the storage budget too. */
#define ROW_OVERHEAD 128

static double stored_cost(const store_op_t *op)
{
	return (double)(op->body_len + 2 * strlen(op->cmid) + ROW_OVERHEAD);
}

/* Both budgets, bytes first: a message refused by the second gives back
 * what the first took. */
static int64_t admit(void *ud, store_op_t *op, size_t recipients)
{
	writer_t *w = ud;
	int64_t wait;

	if (w->storage && (wait = ratelimit_take(w->storage, op->user, stored_cost(op), op->now_ms)) > 0) {
		op->out_limit_kind = WRITER_LIMIT_STORAGE;
		return wait;
	}
	if (w->limits && (wait = ratelimit_take(w->limits, op->user, (double)recipients, op->now_ms)) > 0) {
		if (w->storage)
			ratelimit_refund(w->storage, op->user, stored_cost(op), op->now_ms);
		op->out_limit_kind = WRITER_LIMIT_RECIPIENTS;
		return wait;
	}
	return 0;
}

int writer_set_rate_limit(writer_t *w, double rate, double burst)
{
	ratelimit_t *r = rate > 0 ? ratelimit_new(rate, burst) : NULL;

	if (rate > 0 && !r)
		return -1;
	pthread_mutex_lock(&w->lock);
	ratelimit_free(w->limits);
	w->limits = r;
	pthread_mutex_unlock(&w->lock);
	return 0;
}

int writer_set_storage_limit(writer_t *w, double bytes_per_day)
{
	ratelimit_t *r = bytes_per_day > 0 ? ratelimit_new(bytes_per_day / 86400.0, bytes_per_day / 4) : NULL;

	if (bytes_per_day > 0 && !r)
		return -1;
	pthread_mutex_lock(&w->lock);
	ratelimit_free(w->storage);
	w->storage = r;
	pthread_mutex_unlock(&w->lock);
	return 0;
}

void writer_set_commit_delay(writer_t *w, unsigned delay_us)
{
	pthread_mutex_lock(&w->lock);
	w->delay_us = delay_us;
	pthread_mutex_unlock(&w->lock);
}

static void *writer_main(void *p)
{
	writer_t *w = p;
	store_op_t **batch = malloc(MAX_BATCH * sizeof *batch);
	store_op_t *ops = malloc(MAX_BATCH * sizeof *ops);

	log_set_thread_name("writer");
	if (!batch || !ops) {
		log_error("writer: out of memory at start");
		abort();
	}
	for (;;) {
		unsigned n, i;
		int64_t now;

		pthread_mutex_lock(&w->lock);
		while (w->count == 0 && !w->stopping) {
			w->busy = 0;
			pthread_cond_broadcast(&w->drained);
			pthread_cond_wait(&w->more, &w->lock);
		}
		if (w->count == 0) {
			w->busy = 0;
			pthread_cond_broadcast(&w->drained);
			pthread_mutex_unlock(&w->lock);
			break;
		}
		/* A plain sleep, not a timed wait: waking on every submit to
		 * recount would spend the very wake-ups the delay saves. */
		if (w->delay_us && w->count < WRITER_DELAY_BATCH && !w->stopping) {
			unsigned us = w->delay_us;
			pthread_mutex_unlock(&w->lock);
			usleep(us);
			pthread_mutex_lock(&w->lock);
		}
		n = w->count < MAX_BATCH ? w->count : MAX_BATCH;
		for (i = 0; i < n; i++)
			batch[i] = w->ring[(w->head + i) % w->cap];
		w->head = (w->head + n) % w->cap;
		w->count -= n;
		w->busy = 1;
		pthread_mutex_unlock(&w->lock);

		/* store_apply wants a contiguous array; the ops themselves live
		 * in their submitters' structures, so copy in and out. */
		now = clock_wall_ms();
		for (i = 0; i < n; i++) {
			ops[i] = *batch[i];
			ops[i].now_ms = now;
			if (ops[i].kind == STORE_OP_SEND) {
				ops[i].new_id = snowflake_next(&w->ids, now);
				ops[i].now_ms = snowflake_time_ms(ops[i].new_id);
				if (w->limits || w->storage) {
					ops[i].admit = admit;
					ops[i].admit_ud = w;
				}
			}
		}
		if (store_apply(w->store, ops, n) != STORE_OK)
			log_error("writer: a batch of %u ops failed; every op is answered with an error", n);
		atomic_fetch_add(&w->batches, 1);
		atomic_fetch_add(&w->ops, n);
		for (i = 0; i < n; i++) {
			if (ops[i].kind == STORE_OP_SEND && ops[i].status == STORE_OK) {
				atomic_fetch_add(&w->messages, 1);
				atomic_fetch_add(&w->stored_bytes, ops[i].body_len);
			} else if (ops[i].kind == STORE_OP_RECEIPT && ops[i].applied) {
				atomic_fetch_add(&w->receipt_writes, 1);
			} else if (ops[i].status == STORE_LIMITED) {
				atomic_fetch_add(ops[i].out_limit_kind == WRITER_LIMIT_STORAGE ? &w->storage_limited
				                                                              : &w->limited,
				                 1);
			}
			*batch[i] = ops[i];
			w->done(batch[i], w->ud);
		}
	}
	free(batch);
	free(ops);
	return NULL;
}

writer_t *writer_new(const char *data_dir, uint32_t node_id, unsigned queue_cap,
                     writer_done_fn done, void *ud)
{
	writer_t *w = calloc(1, sizeof *w);

	if (!w)
		return NULL;
	w->cap = queue_cap;
	w->done = done;
	w->ud = ud;
	snowflake_init(&w->ids, node_id);
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->more, NULL);
	pthread_cond_init(&w->drained, NULL);
	if (!(w->ring = calloc(queue_cap, sizeof *w->ring)) || !(w->store = store_open(data_dir)))
		goto err;
	if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
		log_error("writer: cannot start its thread");
		goto err;
	}
	return w;
err:
	store_close(w->store);
	free(w->ring);
	free(w);
	return NULL;
}

int writer_submit(writer_t *w, store_op_t *op)
{
	int r = -1;

	pthread_mutex_lock(&w->lock);
	if (w->count < w->cap && !w->stopping) {
		w->ring[(w->head + w->count) % w->cap] = op;
		w->count++;
		w->busy = 1;
		pthread_cond_signal(&w->more);
		r = 0;
	}
	pthread_mutex_unlock(&w->lock);
	return r;
}

void writer_drain(writer_t *w)
{
	pthread_mutex_lock(&w->lock);
	while (w->count > 0 || w->busy)
		pthread_cond_wait(&w->drained, &w->lock);
	pthread_mutex_unlock(&w->lock);
}

void writer_free(writer_t *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stopping = 1;
	pthread_cond_signal(&w->more);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	store_close(w->store);
	ratelimit_free(w->limits);
	ratelimit_free(w->storage);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->more);
	pthread_cond_destroy(&w->drained);
	free(w->ring);
	free(w);
}

void writer_counts(writer_t *w, writer_counts_t *out)
{
	out->commits = atomic_load(&w->batches);
	out->ops = atomic_load(&w->ops);
	out->messages = atomic_load(&w->messages);
	out->receipt_writes = atomic_load(&w->receipt_writes);
	out->limited = atomic_load(&w->limited);
	out->storage_limited = atomic_load(&w->storage_limited);
	out->stored_bytes = atomic_load(&w->stored_bytes);
}
