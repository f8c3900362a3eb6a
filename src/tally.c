/* tally.c - the receipt counts of tally.h.
 *
 * Marks are appended to an array under a mutex; each interval the thread
 * swaps the array out, merges the marks per conversation into one seq
 * range, keeps the newest TALLY_SPAN seqs of it (older counts a client can
 * ask for with the receipts endpoint), and recomputes. Counting is done in
 * memory over the group's watermarks: at most 1,024 members by TALLY_SPAN
 * messages of comparisons, microseconds, instead of a query per message. */
#include "tally.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "jbuf.h"
#include "frames.h"
#include "log.h"
#include "loop.h"
#include "store.h"

#define TALLY_SPAN 200
#define EXPIRY_EVERY_MS (3600 * 1000)  /* receipt detail is swept hourly */
#define EXPIRY_SLICE 5000
#define TALLY_MAX_MARKS 262144

typedef struct mark {
	int64_t conv, lo, hi;
} mark_t;

struct tally {
	server_t *srv;
	store_t *store;
	int interval_ms;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	mark_t *marks;
	size_t nmarks, cap;
	int stopping, warned;
	atomic_uint_fast64_t frames;
};

void tally_mark(tally_t *t, int64_t conv, int64_t lo, int64_t hi)
{
	pthread_mutex_lock(&t->lock);
	if (t->nmarks == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 256;
		mark_t *m = cap <= TALLY_MAX_MARKS ? realloc(t->marks, cap * sizeof *m) : NULL;
		if (!m) {
			/* Counts are a courtesy: the watermarks are stored, and the
			 * next receipt in this group marks it again. */
			if (!t->warned++)
				log_warn("tally: too many receipt marks in one interval; some counts are late");
			pthread_mutex_unlock(&t->lock);
			return;
		}
		t->marks = m;
		t->cap = cap;
	}
	t->marks[t->nmarks++] = (mark_t){conv, lo, hi};
	pthread_mutex_unlock(&t->lock);
}

static int by_conv(const void *a, const void *b)
{
	const mark_t *x = a, *y = b;

	return x->conv < y->conv ? -1 : x->conv > y->conv;
}

/* Recomputes the counts of messages lo..hi of conv and sends each sender
 * its frame. */
static void tally_conv(tally_t *t, int64_t conv, int64_t lo, int64_t hi)
{
	store_watermark_t *w = NULL;
	store_sent_t *sent = NULL;
	size_t nw, ns, i, k, done;
	int large;
	jbuf_t b;

	if (hi - lo + 1 > TALLY_SPAN)
		lo = hi - TALLY_SPAN + 1;
	if (store_watermarks(t->store, conv, &w, &nw) != STORE_OK ||
	    store_senders(t->store, conv, lo, hi, &sent, &ns) != STORE_OK)
		goto out;
	large = nw > STORE_RECEIPT_DETAIL_MAX;
	jbuf_init(&b);
	/* One frame per sender: walk the messages once per distinct sender. */
	for (done = 0; done < ns; done++) {
		int64_t sender = sent[done].sender;
		int first = 1;
		sbuf_t *f;

		if (sender == 0)
			continue; /* this sender's frame is already sent */
		/* A sender no longer a member hears no more of the group. */
		for (k = 0; k < nw && w[k].user_id != sender; k++)
			;
		if (k == nw) {
			for (i = done; i < ns; i++)
				if (sent[i].sender == sender)
					sent[i].sender = 0;
			continue;
		}
		jbuf_reset(&b);
		jbuf_lit(&b, "{\"type\":\"receipts\",\"conv\":");
		jbuf_int(&b, conv);
		jbuf_lit(&b, ",\"counts\":[");
		for (i = done; i < ns; i++) {
			int64_t seq = sent[i].seq, delivered = 0, read = 0;

			if (sent[i].sender != sender)
				continue;
			sent[i].sender = 0;
			for (k = 0; k < nw; k++) {
				/* Members since before the message, but its sender. */
				if (w[k].user_id == sender || w[k].joined_seq >= seq)
					continue;
				if (w[k].delivered_seq >= seq || w[k].read_seq >= seq)
					delivered++;
				if (w[k].read_seq >= seq)
					read++;
			}
			if (!first)
				jbuf_raw(&b, ",", 1);
			first = 0;
			jbuf_lit(&b, "{\"seq\":");
			jbuf_int(&b, seq);
			jbuf_lit(&b, ",\"delivered\":");
			if (large)
				jbuf_lit(&b, "null");
			else
				jbuf_int(&b, delivered);
			jbuf_lit(&b, ",\"read\":");
			jbuf_int(&b, read);
			jbuf_lit(&b, "}");
		}
		jbuf_lit(&b, "]}");
		if ((f = frames_from_json(&b)) != NULL) {
			atomic_fetch_add(&t->frames, 1);
			bus_deliver(t->srv->bus, sender, 0, f);
			sbuf_unref(f);
		}
	}
	jbuf_free(&b);
out:
	free(w);
	free(sent);
}

static void flush(tally_t *t, mark_t *marks, size_t n)
{
	size_t i = 0;

	qsort(marks, n, sizeof *marks, by_conv);
	while (i < n) {
		int64_t conv = marks[i].conv, lo = marks[i].lo, hi = marks[i].hi;

		for (i++; i < n && marks[i].conv == conv; i++) {
			if (marks[i].lo < lo)
				lo = marks[i].lo;
			if (marks[i].hi > hi)
				hi = marks[i].hi;
		}
		tally_conv(t, conv, lo, hi);
	}
}

/* Deletes receipt detail past its keeping time, and first contacts past
 * any budget's window, a slice at a time. */
static void expire(tally_t *t)
{
	int64_t before = clock_wall_ms() - (int64_t)STORE_RECEIPT_DETAIL_DAYS * 86400000;
	size_t deleted, total = 0;

	do {
		if (store_expire_receipts(t->store, before, EXPIRY_SLICE, &deleted) != STORE_OK)
			return;
		total += deleted;
	} while (deleted == EXPIRY_SLICE);
	if (total)
		log_info("tally: expired %zu receipt marks older than %d days", total,
		         STORE_RECEIPT_DETAIL_DAYS);
	/* First contacts count over a day, and say for 30 days whose blocks
	 * shrink a budget; a day's margin past that. */
	before = clock_wall_ms() - 31LL * 86400000;
	do {
		if (store_expire_first_contacts(t->store, before, EXPIRY_SLICE, &deleted) != STORE_OK)
			return;
	} while (deleted == EXPIRY_SLICE);
}

static void *tally_main(void *p)
{
	tally_t *t = p;
	mark_t *spare = NULL;
	size_t sparecap = 0;
	int64_t next_expiry = 0;

	log_set_thread_name("tally");
	pthread_mutex_lock(&t->lock);
	for (;;) {
		struct timespec until;
		mark_t *marks;
		size_t n, cap;
		int stopping;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (long)(t->interval_ms % 1000) * 1000000L;
		until.tv_sec += t->interval_ms / 1000 + until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		/* Sleep the whole interval: marks gather, and each conversation
		 * costs one recount per interval however many receipts came. */
		while (!t->stopping && pthread_cond_timedwait(&t->cond, &t->lock, &until) != ETIMEDOUT)
			;
		stopping = t->stopping;
		marks = t->marks;
		n = t->nmarks;
		cap = t->cap;
		t->marks = spare;
		t->cap = sparecap;
		t->nmarks = 0;
		t->warned = 0;
		pthread_mutex_unlock(&t->lock);
		if (n)
			flush(t, marks, n);
		if (clock_mono_ms() >= next_expiry) {
			expire(t);
			next_expiry = clock_mono_ms() + EXPIRY_EVERY_MS;
		}
		spare = marks;
		sparecap = cap;
		pthread_mutex_lock(&t->lock);
		if (stopping)
			break;
	}
	pthread_mutex_unlock(&t->lock);
	free(spare);
	return NULL;
}

tally_t *tally_new(server_t *srv, int interval_ms)
{
	tally_t *t = calloc(1, sizeof *t);

	if (!t)
		return NULL;
	t->srv = srv;
	t->interval_ms = interval_ms;
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	if (!(t->store = store_open(srv->store_at)))
		goto err;
	if (pthread_create(&t->thread, NULL, tally_main, t) != 0) {
		log_error("tally: cannot start its thread");
		goto err;
	}
	return t;
err:
	store_close(t->store);
	free(t);
	return NULL;
}

uint64_t tally_frames(tally_t *t)
{
	return atomic_load(&t->frames);
}

void tally_free(tally_t *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	t->stopping = 1;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
	pthread_join(t->thread, NULL);
	store_close(t->store);
	free(t->marks);
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->cond);
	free(t);
}
