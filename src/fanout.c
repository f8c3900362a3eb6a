/* fanout.c - the fair fan-out queue of fanout.h.
 *
 * Each conversation with work has a FIFO of jobs; conversations with work
 * form a ring. The thread takes the ring's head, delivers up to
 * FANOUT_QUANTUM recipients of its oldest job outside the lock, and puts
 * the conversation back at the ring's tail if it has more. Submitters find
 * a conversation's queue through a small hash table that holds only
 * conversations with work. */
#include "fanout.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "log.h"

typedef struct job {
	struct job *next;
	sbuf_t *frame;
	int64_t seq, version;
	int64_t *members;         /* NULL until looked up */
	size_t n, pos;
	int64_t except_user, except_device;
	int32_t scope;            /* bus_deliver_scoped's */
	fanout_done_fn done;      /* called once delivered, or NULL */
	void *done_ud;
} job_t;

typedef struct convq {
	int64_t conv;
	job_t *head, *tail;
	struct convq *ring_next;  /* in the ring of conversations with work */
	struct convq *hash_next;
} convq_t;

#define BUCKETS 1024
#define CACHE_SLOTS 1024  /* member lists kept; a collision replaces */

typedef struct cached {
	int64_t conv, version;
	fanout_member_t *members;
	size_t n;
} cached_t;

struct fanout {
	bus_t *bus;
	fanout_lookup_fn lookup;
	void *lookup_ud;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t work;      /* ring not empty, or stopping */
	pthread_cond_t room;      /* pending went down */
	pthread_cond_t idle;      /* nothing queued or in hand */
	convq_t *buckets[BUCKETS];
	convq_t *ring_head, *ring_tail;
	size_t pending, max_pending;
	int in_hand, stopping;
	atomic_uint_fast64_t delivered;
	cached_t cache[CACHE_SLOTS]; /* the fan-out thread's own */
};

/* The recipients of job j of conv: members who joined before the message,
 * from the kept list if it is as new as the message's membership. */
static int recipients(fanout_t *f, int64_t conv, job_t *j)
{
	cached_t *c = &f->cache[(uint64_t)conv % CACHE_SLOTS];
	size_t i;

	if (c->conv != conv || c->version < j->version || !c->members) {
		fanout_member_t *m;
		size_t n;
		int64_t version;

		if (f->lookup(f->lookup_ud, conv, &m, &n, &version) < 0)
			return -1;
		free(c->members);
		c->conv = conv;
		c->version = version;
		c->members = m;
		c->n = n;
	}
	if (!(j->members = malloc((c->n ? c->n : 1) * sizeof *j->members)))
		return -1;
	j->n = 0;
	for (i = 0; i < c->n; i++)
		if (c->members[i].joined_seq < j->seq)
			j->members[j->n++] = c->members[i].user;
	return 0;
}

static convq_t **slot(fanout_t *f, int64_t conv)
{
	convq_t **p = &f->buckets[(uint64_t)conv % BUCKETS];

	while (*p && (*p)->conv != conv)
		p = &(*p)->hash_next;
	return p;
}

static void ring_push(fanout_t *f, convq_t *q)
{
	q->ring_next = NULL;
	if (f->ring_tail)
		f->ring_tail->ring_next = q;
	else
		f->ring_head = q;
	f->ring_tail = q;
}

static void *fanout_main(void *p)
{
	fanout_t *f = p;

	log_set_thread_name("fanout");
	pthread_mutex_lock(&f->lock);
	for (;;) {
		convq_t *q;
		job_t *j, *done = NULL;
		size_t from, to;

		while (!f->ring_head && !f->stopping) {
			pthread_cond_broadcast(&f->idle);
			pthread_cond_wait(&f->work, &f->lock);
		}
		if (!f->ring_head)
			break;
		q = f->ring_head;
		f->ring_head = q->ring_next;
		if (!f->ring_head)
			f->ring_tail = NULL;
		j = q->head;
		f->in_hand = 1;
		pthread_mutex_unlock(&f->lock);

		/* Out of the ring, q is ours: submitters only append to it. */
		if (!j->members && recipients(f, q->conv, j) < 0) {
			log_error("fanout: cannot look up the members of conversation %lld; they will "
			          "catch up on resume", (long long)q->conv);
			j->members = NULL;
			j->n = 0;
		}
		from = j->pos;
		to = j->n - from > FANOUT_QUANTUM ? from + FANOUT_QUANTUM : j->n;
		/* One call per quantum: a fleet's bus makes one publish per
		 * node that holds some of these members. */
		bus_deliver_scoped(f->bus, j->scope, j->members + from, to - from, j->except_user, j->except_device,
		                   j->frame, NULL, NULL);

		pthread_mutex_lock(&f->lock);
		f->in_hand = 0;
		j->pos = to;
		atomic_fetch_add(&f->delivered, to - from);
		if (j->pos == j->n) {
			f->pending--;
			q->head = j->next;
			if (!q->head)
				q->tail = NULL;
			done = j;
		}
		if (q->head) {
			ring_push(f, q);
		} else {
			*slot(f, q->conv) = q->hash_next;
			free(q);
		}
		pthread_cond_broadcast(&f->room);
		if (done) {
			pthread_mutex_unlock(&f->lock);
			if (done->done)
				done->done(done->done_ud);
			sbuf_unref(done->frame);
			free(done->members);
			free(done);
			pthread_mutex_lock(&f->lock);
		}
	}
	pthread_cond_broadcast(&f->idle);
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

fanout_t *fanout_new(bus_t *bus, size_t max_pending, fanout_lookup_fn lookup, void *ud)
{
	fanout_t *f = calloc(1, sizeof *f);

	if (!f)
		return NULL;
	f->bus = bus;
	f->lookup = lookup;
	f->lookup_ud = ud;
	f->max_pending = max_pending;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->work, NULL);
	pthread_cond_init(&f->room, NULL);
	pthread_cond_init(&f->idle, NULL);
	if (pthread_create(&f->thread, NULL, fanout_main, f) != 0) {
		log_error("fanout: cannot start its thread");
		free(f);
		return NULL;
	}
	return f;
}

void fanout_submit(fanout_t *f, int64_t conv, int64_t seq, int64_t version, sbuf_t *frame,
                   int64_t *members, size_t n, int64_t except_user, int64_t except_device)
{
	fanout_submit_scoped(f, conv, seq, version, frame, members, n, except_user, except_device,
	                     BUS_EVERY_NODE, NULL, NULL);
}

void fanout_submit_scoped(fanout_t *f, int64_t conv, int64_t seq, int64_t version, sbuf_t *frame,
                          int64_t *members, size_t n, int64_t except_user, int64_t except_device,
                          int32_t scope, fanout_done_fn done, void *done_ud)
{
	job_t *j = malloc(sizeof *j);
	convq_t **s, *q;

	if (!j || (members && n == 0)) {
		if (!j)
			log_error("fanout: out of memory; the members of conversation %lld will catch "
			          "up on resume", (long long)conv);
		free(j);
		free(members);
		sbuf_unref(frame);
		if (done)
			done(done_ud);
		return;
	}
	*j = (job_t){NULL, frame, seq, version, members, n, 0, except_user, except_device, scope, done, done_ud};
	pthread_mutex_lock(&f->lock);
	while (f->pending >= f->max_pending && !f->stopping)
		pthread_cond_wait(&f->room, &f->lock);
	s = slot(f, conv);
	if (!(q = *s)) {
		if (!(q = calloc(1, sizeof *q))) {
			pthread_mutex_unlock(&f->lock);
			log_error("fanout: out of memory; the members of conversation %lld will catch "
			          "up on resume", (long long)conv);
			sbuf_unref(frame);
			free(members);
			free(j);
			if (done)
				done(done_ud);
			return;
		}
		q->conv = conv;
		*s = q;
		ring_push(f, q);
		pthread_cond_signal(&f->work);
	}
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
	f->pending++;
	pthread_mutex_unlock(&f->lock);
}

void fanout_drain(fanout_t *f)
{
	pthread_mutex_lock(&f->lock);
	while (f->ring_head || f->in_hand)
		pthread_cond_wait(&f->idle, &f->lock);
	pthread_mutex_unlock(&f->lock);
}

void fanout_free(fanout_t *f)
{
	if (!f)
		return;
	fanout_drain(f);
	pthread_mutex_lock(&f->lock);
	f->stopping = 1;
	pthread_cond_broadcast(&f->work);
	pthread_cond_broadcast(&f->room);
	pthread_mutex_unlock(&f->lock);
	pthread_join(f->thread, NULL);
	for (size_t i = 0; i < CACHE_SLOTS; i++)
		free(f->cache[i].members);
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->work);
	pthread_cond_destroy(&f->room);
	pthread_cond_destroy(&f->idle);
	free(f);
}

uint64_t fanout_delivered(fanout_t *f)
{
	return atomic_load(&f->delivered);
}
