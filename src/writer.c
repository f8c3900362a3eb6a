/* writer.c - the group-commit writer of writer.h. */
#include "writer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "ratelimit.h"
#include "snowflake.h"

#define MAX_BATCH 1024
#define MAX_LANES 64

/* One transaction at a time, on a store handle of its own, for the
 * conversations that hash to it. */
typedef struct lane {
	pthread_t thread;
	struct writer *w;
	store_t *store;
	unsigned index;
	int started;

	pthread_mutex_t lock;
	pthread_cond_t more;     /* ops queued or stopping */
	pthread_cond_t drained;  /* queue empty and no batch in hand */
	store_op_t **ring;
	unsigned head, count;
	int busy, stopping;
	/* Failed batches since the last line said so: an outage of the store
	 * is one line every FAIL_LOG_MS per lane, not one per batch. */
	int64_t fail_logged_ms;
	unsigned long long failed_batches, failed_ops;
} lane_t;

#define FAIL_LOG_MS 5000

struct writer {
	writer_done_fn done;
	void *ud;
	unsigned cap;            /* of each lane's queue */
	unsigned nlanes;
	lane_t *lanes;

	/* What every lane shares: the node's one snowflake generator (ids
	 * unique per node) and the senders' budgets, taken under this lock
	 * by whichever lane stores the sender's message. */
	pthread_mutex_t shared;
	snowflake_t ids;
	ratelimit_t *limits;
	ratelimit_t *storage;    /* bytes, likewise */
	writer_admit_fn admit_fn; /* writer_on_admit */
	void *admit_ud;
	atomic_uint delay_us;    /* see writer_set_commit_delay */
	writer_committed_fn committed; /* writer_set_outbox; NULL: none */
	void *committed_ud;
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
 * what the first took. Called inside a lane's transaction; the lock is
 * held for a few arithmetic steps. */
static int64_t admit(void *ud, store_op_t *op, size_t recipients)
{
	writer_t *w = ud;
	int64_t wait = 0;

	pthread_mutex_lock(&w->shared);
	if (w->storage && (wait = ratelimit_take(w->storage, op->user, stored_cost(op), op->now_ms)) > 0) {
		op->out_limit_kind = WRITER_LIMIT_STORAGE;
	} else if (w->limits && (wait = ratelimit_take(w->limits, op->user, (double)recipients, op->now_ms)) > 0) {
		if (w->storage)
			ratelimit_refund(w->storage, op->user, stored_cost(op), op->now_ms);
		op->out_limit_kind = WRITER_LIMIT_RECIPIENTS;
	} else {
		wait = 0;
	}
	pthread_mutex_unlock(&w->shared);
	if (!wait && w->admit_fn && (w->limits || w->storage))
		w->admit_fn(w->admit_ud, op->user, w->limits ? (double)recipients : 0, w->storage ? stored_cost(op) : 0,
		            op->now_ms);
	return wait;
}

int writer_set_rate_limit(writer_t *w, double rate, double burst)
{
	ratelimit_t *r = rate > 0 ? ratelimit_new(rate, burst) : NULL;

	if (rate > 0 && !r)
		return -1;
	pthread_mutex_lock(&w->shared);
	ratelimit_free(w->limits);
	w->limits = r;
	pthread_mutex_unlock(&w->shared);
	return 0;
}

int writer_set_storage_limit(writer_t *w, double bytes_per_day)
{
	ratelimit_t *r = bytes_per_day > 0 ? ratelimit_new(bytes_per_day / 86400.0, bytes_per_day / 4) : NULL;

	if (bytes_per_day > 0 && !r)
		return -1;
	pthread_mutex_lock(&w->shared);
	ratelimit_free(w->storage);
	w->storage = r;
	pthread_mutex_unlock(&w->shared);
	return 0;
}

void writer_on_admit(writer_t *w, writer_admit_fn fn, void *ud)
{
	w->admit_ud = ud;
	w->admit_fn = fn;
}

void writer_charge(writer_t *w, int64_t user, double recipients, double bytes, int64_t now_ms)
{
	pthread_mutex_lock(&w->shared);
	if (w->limits && recipients > 0)
		ratelimit_charge(w->limits, user, recipients, now_ms);
	if (w->storage && bytes > 0)
		ratelimit_charge(w->storage, user, bytes, now_ms);
	pthread_mutex_unlock(&w->shared);
}

void writer_set_commit_delay(writer_t *w, unsigned delay_us)
{
	atomic_store(&w->delay_us, delay_us);
}

/* Ids and times for a batch's sends, in op order, so that within a
 * conversation (always one lane) ids rise with seq. */
static void stamp(writer_t *w, store_op_t *ops, unsigned n)
{
	int limited;
	unsigned i;
	int64_t now;

	pthread_mutex_lock(&w->shared);
	limited = w->limits || w->storage;
	now = clock_wall_ms();
	for (i = 0; i < n; i++) {
		ops[i].now_ms = now;
		if (ops[i].kind != STORE_OP_SEND)
			continue;
		ops[i].new_id = snowflake_next(&w->ids, now);
		ops[i].now_ms = snowflake_time_ms(ops[i].new_id);
		if (limited) {
			ops[i].admit = admit;
			ops[i].admit_ud = w;
		}
	}
	pthread_mutex_unlock(&w->shared);
}

static void *lane_main(void *p)
{
	lane_t *l = p;
	writer_t *w = l->w;
	store_op_t **batch = malloc(MAX_BATCH * sizeof *batch);
	store_op_t *ops = malloc(MAX_BATCH * sizeof *ops);
	char name[16];

	snprintf(name, sizeof name, w->nlanes > 1 ? "writer-%u" : "writer", l->index);
	log_set_thread_name(name);
	if (!batch || !ops) {
		log_error("writer: out of memory at start");
		abort();
	}
	for (;;) {
		unsigned n, i, delay;

		pthread_mutex_lock(&l->lock);
		while (l->count == 0 && !l->stopping) {
			l->busy = 0;
			pthread_cond_broadcast(&l->drained);
			pthread_cond_wait(&l->more, &l->lock);
		}
		if (l->count == 0) {
			l->busy = 0;
			pthread_cond_broadcast(&l->drained);
			pthread_mutex_unlock(&l->lock);
			break;
		}
		/* A plain sleep, not a timed wait: waking on every submit to
		 * recount would spend the very wake-ups the delay saves. */
		delay = atomic_load_explicit(&w->delay_us, memory_order_relaxed);
		if (delay && l->count < WRITER_DELAY_BATCH && !l->stopping) {
			pthread_mutex_unlock(&l->lock);
			usleep(delay);
			pthread_mutex_lock(&l->lock);
		}
		n = l->count < MAX_BATCH ? l->count : MAX_BATCH;
		for (i = 0; i < n; i++)
			batch[i] = l->ring[(l->head + i) % w->cap];
		l->head = (l->head + n) % w->cap;
		l->count -= n;
		l->busy = 1;
		pthread_mutex_unlock(&l->lock);

		/* store_apply wants a contiguous array; the ops themselves live
		 * in their submitters' structures, so copy in and out. */
		for (i = 0; i < n; i++)
			ops[i] = *batch[i];
		stamp(w, ops, n);
		if (store_apply(l->store, ops, n) != STORE_OK) {
			int64_t now = clock_mono_ms();
			l->failed_batches++;
			l->failed_ops += n;
			if (!l->fail_logged_ms || now - l->fail_logged_ms >= FAIL_LOG_MS) {
				log_error("writer: lane %u: %llu batch%s (%llu ops) failed%s; every op is answered with an "
				          "error",
				          l->index, l->failed_batches, l->failed_batches == 1 ? "" : "es", l->failed_ops,
				          l->fail_logged_ms ? " in the last few seconds" : "");
				l->fail_logged_ms = now;
				l->failed_batches = l->failed_ops = 0;
			}
		}
		/* Before the acks: a row handed on here is published at once, and
		 * one that is not (the node dies now) waits in the outbox for a
		 * sweep. */
		if (w->committed)
			w->committed(w->committed_ud, ops, n);
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

/* Stops and frees the lanes started so far. */
static void lanes_free(writer_t *w)
{
	unsigned i;

	for (i = 0; i < w->nlanes; i++) {
		lane_t *l = &w->lanes[i];
		if (l->started) {
			pthread_mutex_lock(&l->lock);
			l->stopping = 1;
			pthread_cond_signal(&l->more);
			pthread_mutex_unlock(&l->lock);
			pthread_join(l->thread, NULL);
		}
		store_close(l->store);
		pthread_mutex_destroy(&l->lock);
		pthread_cond_destroy(&l->more);
		pthread_cond_destroy(&l->drained);
		free(l->ring);
	}
	free(w->lanes);
	w->lanes = NULL;
}

writer_t *writer_new(const char *location, uint32_t node_id, unsigned queue_cap, unsigned lanes,
                     writer_done_fn done, void *ud)
{
	writer_t *w = calloc(1, sizeof *w);
	unsigned i;

	if (!w)
		return NULL;
	if (!lanes || store_writers(location) == 1)
		lanes = store_writers(location);
	if (lanes > MAX_LANES)
		lanes = MAX_LANES;
	if (!lanes)
		lanes = 1;
	w->cap = queue_cap;
	w->done = done;
	w->ud = ud;
	snowflake_init(&w->ids, node_id);
	pthread_mutex_init(&w->shared, NULL);
	if (!(w->lanes = calloc(lanes, sizeof *w->lanes))) {
		free(w);
		return NULL;
	}
	w->nlanes = lanes;
	for (i = 0; i < lanes; i++) {
		lane_t *l = &w->lanes[i];
		l->w = w;
		l->index = i;
		pthread_mutex_init(&l->lock, NULL);
		pthread_cond_init(&l->more, NULL);
		pthread_cond_init(&l->drained, NULL);
	}
	for (i = 0; i < lanes; i++) {
		lane_t *l = &w->lanes[i];
		if (!(l->ring = calloc(queue_cap, sizeof *l->ring)) || !(l->store = store_open(location)))
			goto err;
		if (pthread_create(&l->thread, NULL, lane_main, l) != 0) {
			log_error("writer: cannot start its thread");
			goto err;
		}
		l->started = 1;
	}
	return w;
err:
	lanes_free(w);
	pthread_mutex_destroy(&w->shared);
	free(w);
	return NULL;
}

unsigned writer_lanes(const writer_t *w)
{
	return w->nlanes;
}

/* Every op of a conversation goes to the same lane, so that its sends
 * and receipts are applied, and completed, in submission order. The
 * multiplier spreads ids that differ in low bits only. */
static lane_t *lane_of(writer_t *w, int64_t conv)
{
	uint64_t h = (uint64_t)conv * 0x9e3779b97f4a7c15ull;

	return &w->lanes[w->nlanes > 1 ? (h >> 32) % w->nlanes : 0];
}

int writer_set_outbox(writer_t *w, writer_committed_fn committed, void *ud)
{
	unsigned i;

	/* The lanes have not touched their handles yet (no submit so far);
	 * the first submit's lock publishes these writes to them. */
	for (i = 0; i < w->nlanes; i++)
		if (store_set_outbox(w->lanes[i].store, 1) != STORE_OK)
			return -1;
	w->committed = committed;
	w->committed_ud = ud;
	return 0;
}

int writer_submit(writer_t *w, store_op_t *op)
{
	lane_t *l = lane_of(w, op->conv);
	int r = -1;

	pthread_mutex_lock(&l->lock);
	if (l->count < w->cap && !l->stopping) {
		l->ring[(l->head + l->count) % w->cap] = op;
		l->count++;
		l->busy = 1;
		pthread_cond_signal(&l->more);
		r = 0;
	}
	pthread_mutex_unlock(&l->lock);
	return r;
}

void writer_drain(writer_t *w)
{
	unsigned i;

	for (i = 0; i < w->nlanes; i++) {
		lane_t *l = &w->lanes[i];
		pthread_mutex_lock(&l->lock);
		while (l->count > 0 || l->busy)
			pthread_cond_wait(&l->drained, &l->lock);
		pthread_mutex_unlock(&l->lock);
	}
}

void writer_free(writer_t *w)
{
	if (!w)
		return;
	lanes_free(w);
	ratelimit_free(w->limits);
	ratelimit_free(w->storage);
	pthread_mutex_destroy(&w->shared);
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
