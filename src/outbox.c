/* outbox.c - the outbox relay of outbox.h: a queue of committed rows fed by
 * the writer's lanes, a thread that publishes them and deletes what the log
 * acknowledged, and the sweep of rows left behind. */
#include "outbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "frames.h"
#include "jbuf.h"
#include "log.h"
#include "loop.h"

/* A failing log is reported at most this often, with how many events
 * failed meanwhile. */
#define WARN_EVERY_MS 10000
/* Sweep batches per look: a backlog drains at this many batches a second
 * while the log takes them, and a dead log costs no more than this. */
#define SWEEP_ROUNDS 8

/* One publish awaiting the log's answer. */
typedef struct pending {
	struct outbox_relay *r;
	int64_t id;
} pending_t;

struct outbox_relay {
	eventlog_t *log;
	store_t *store;          /* the relay thread's own */
	pthread_t thread;
	int started;

	pthread_mutex_t lock;
	pthread_cond_t wake;
	/* Rows from the commit path, in commit order: a ring. */
	store_outbox_t *queue;
	size_t head, count, bytes;
	/* Ids the log acknowledged, to delete. At most the log's in-flight
	 * bound at a time, plus those whose delete failed and is retried. */
	int64_t *acked;
	size_t nacked, acked_cap;
	int stopping;

	atomic_uint_fast64_t published, failed, swept, dropped;
	uint32_t node;
};

/* What the commit path knew beside the row, for the dispatchers: a group
 * or a direct chat, a group message's membership version, a direct
 * message's or receipt's two members, a receipt's previous watermark,
 * reading device and committing node. A swept row adds nothing, and its
 * dispatcher looks up what it needs. */
static void event_route(jbuf_t *b, const store_outbox_t *row)
{
	size_t i;

	if (!row->conv_kind)
		return;
	jbuf_key(b, "conv_kind", 0);
	jbuf_cstr(b, row->conv_kind == STORE_GROUP ? "group" : "direct");
	if (row->kind == STORE_EVENT_MESSAGE && row->conv_kind == STORE_GROUP && row->members_version) {
		jbuf_key(b, "members_version", 0);
		jbuf_int(b, row->members_version);
	}
	if (row->nmembers) {
		jbuf_key(b, "members", 0);
		jbuf_raw(b, "[", 1);
		for (i = 0; i < row->nmembers; i++) {
			if (i)
				jbuf_raw(b, ",", 1);
			jbuf_int(b, row->members[i]);
		}
		jbuf_raw(b, "]", 1);
	}
	if (row->kind != STORE_EVENT_MESSAGE && row->prev >= 0) {
		jbuf_key(b, "prev", 0);
		jbuf_int(b, row->prev);
	}
	if (row->kind != STORE_EVENT_MESSAGE && row->device > 0) {
		jbuf_key(b, "device", 0);
		jbuf_int(b, row->device);
	}
	if (row->kind != STORE_EVENT_MESSAGE && row->node >= 0) {
		jbuf_key(b, "node", 0);
		jbuf_int(b, row->node);
	}
}

int outbox_event(const store_outbox_t *row, char **payload, size_t *len, const char **type, char *dedup)
{
	jbuf_t b;

	jbuf_init(&b);
	if (row->kind == STORE_EVENT_MESSAGE) {
		if (!row->msg.body || !row->msg.cmid)
			return -1;
		jbuf_lit(&b, "{");
		frames_message_json(&b, &row->msg);
		event_route(&b, row);
		jbuf_lit(&b, "}");
		*type = "message.new";
		snprintf(dedup, EVENTLOG_DEDUP_MAX + 1, "m:%lld", (long long)row->msg.id);
	} else {
		const char *state = row->kind == STORE_EVENT_READ ? "read" : "delivered";
		jbuf_lit(&b, "{\"type\":\"receipt\"");
		jbuf_key(&b, "conv", 0);
		jbuf_int(&b, row->conv);
		jbuf_key(&b, "user", 0);
		jbuf_int(&b, row->user);
		jbuf_key(&b, "state", 0);
		jbuf_cstr(&b, state);
		jbuf_key(&b, "seq", 0);
		jbuf_int(&b, row->seq);
		event_route(&b, row);
		jbuf_lit(&b, "}");
		*type = row->kind == STORE_EVENT_READ ? "receipt.read" : "receipt.delivered";
		snprintf(dedup, EVENTLOG_DEDUP_MAX + 1, "r:%lld:%lld:%s:%lld", (long long)row->conv,
		         (long long)row->user, state, (long long)row->seq);
	}
	if (b.oom) {
		jbuf_free(&b);
		return -1;
	}
	*payload = b.data;
	*len = b.len;
	return 0;
}

/* On one of the log's threads: only queue the outcome. */
static void on_done(void *ud, int ok)
{
	pending_t *p = ud;
	outbox_relay_t *r = p->r;

	pthread_mutex_lock(&r->lock);
	if (ok && r->nacked == r->acked_cap) {
		size_t cap = r->acked_cap ? r->acked_cap * 2 : 256;
		int64_t *a = realloc(r->acked, cap * sizeof *a);
		if (a) {
			r->acked = a;
			r->acked_cap = cap;
		}
	}
	if (ok && r->nacked < r->acked_cap) {
		r->acked[r->nacked++] = p->id;
		pthread_cond_signal(&r->wake);
	}
	pthread_mutex_unlock(&r->lock);
	/* An acked row whose id found no room is deleted by nobody: the sweep
	 * publishes it again, which the dedup id makes harmless. */
	atomic_fetch_add(ok ? &r->published : &r->failed, 1);
	free(p);
}

/* Publishes one row's event. A row that cannot be published now stays in
 * the outbox for the sweep. */
static void publish(outbox_relay_t *r, const store_outbox_t *row)
{
	char dedup[EVENTLOG_DEDUP_MAX + 1], *payload;
	const char *type;
	size_t len;
	pending_t *p;
	int rc;

	if (outbox_event(row, &payload, &len, &type, dedup) < 0) {
		log_warn("outbox: row %lld (conversation %lld) cannot become an event; left in place",
		         (long long)row->id, (long long)row->conv);
		atomic_fetch_add(&r->failed, 1);
		return;
	}
	if (!(p = malloc(sizeof *p))) {
		free(payload);
		atomic_fetch_add(&r->failed, 1);
		return;
	}
	p->r = r;
	p->id = row->id;
	rc = eventlog_publish(r->log, row->conv, type, payload, len, dedup, on_done, p);
	free(payload);
	if (rc < 0) {
		free(p);
		atomic_fetch_add(&r->failed, 1);
	}
}

static void entry_clear(store_outbox_t *e)
{
	store_message_clear(&e->msg);
	free(e->members);
	e->members = NULL;
}

void outbox_committed(outbox_relay_t *r, const store_op_t *ops, size_t n)
{
	size_t i;

	if (!r)
		return;
	pthread_mutex_lock(&r->lock);
	for (i = 0; i < n; i++) {
		const store_op_t *op = &ops[i];
		store_outbox_t *e;
		size_t cost;
		if (!op->out_outbox)
			continue;
		cost = sizeof *e + (op->kind == STORE_OP_SEND ? op->body_len + strlen(op->cmid) : 0);
		if (r->count == OUTBOX_QUEUE_MAX || r->bytes + cost > OUTBOX_QUEUE_BYTES || r->stopping) {
			atomic_fetch_add(&r->dropped, 1);
			continue;
		}
		e = &r->queue[(r->head + r->count) % OUTBOX_QUEUE_MAX];
		memset(e, 0, sizeof *e);
		e->id = op->out_outbox;
		e->conv = op->conv;
		e->seq = op->out_seq;
		e->user = op->user;
		e->created_at = op->now_ms;
		e->conv_kind = op->conv_kind;
		e->prev = -1;
		e->node = -1;
		if (op->kind == STORE_OP_SEND) {
			e->kind = STORE_EVENT_MESSAGE;
			e->msg.conv = op->conv;
			e->msg.id = op->out_id;
			e->msg.seq = op->out_seq;
			e->msg.from = op->user;
			e->msg.ts = op->out_ts;
			e->msg.kind = op->msg_kind;
			e->msg.target = op->target;
			e->msg.cmid = strdup(op->cmid);
			e->msg.body = malloc(op->body_len + 1);
			if (!e->msg.cmid || !e->msg.body) {
				entry_clear(e);
				atomic_fetch_add(&r->dropped, 1);
				continue;
			}
			memcpy(e->msg.body, op->body, op->body_len);
			e->msg.body[op->body_len] = 0;
			e->msg.body_len = op->body_len;
			e->members_version = op->out_members_version;
			if (op->conv_kind == STORE_DIRECT && op->nmembers &&
			    (e->members = malloc(op->nmembers * sizeof *e->members)) != NULL) {
				memcpy(e->members, op->members, op->nmembers * sizeof *e->members);
				e->nmembers = op->nmembers;
			}
		} else {
			e->kind = op->state == STORE_READ ? STORE_EVENT_READ : STORE_EVENT_DELIVERED;
			e->prev = op->out_prev;
			e->device = op->device;
			e->node = (int32_t)r->node;
			if (op->conv_kind == STORE_DIRECT && op->nmembers &&
			    (e->members = malloc(op->nmembers * sizeof *e->members)) != NULL) {
				memcpy(e->members, op->members, op->nmembers * sizeof *e->members);
				e->nmembers = op->nmembers;
			}
		}
		r->count++;
		r->bytes += cost;
	}
	pthread_cond_signal(&r->wake);
	pthread_mutex_unlock(&r->lock);
}

/* Deletes the acknowledged rows; those a failed delete leaves are tried
 * again at the next turn. Relay thread. */
static void delete_acked(outbox_relay_t *r)
{
	int64_t *ids;
	size_t n;

	pthread_mutex_lock(&r->lock);
	n = r->nacked;
	ids = n ? malloc(n * sizeof *ids) : NULL;
	if (ids) {
		memcpy(ids, r->acked, n * sizeof *ids);
		r->nacked = 0;
	}
	pthread_mutex_unlock(&r->lock);
	if (!ids)
		return;
	if (store_outbox_delete(r->store, ids, n) != STORE_OK) {
		pthread_mutex_lock(&r->lock);
		/* Back in front; the room was there a moment ago or more came
		 * meanwhile: keep what fits, the sweep covers the rest. */
		if (r->nacked + n <= r->acked_cap) {
			memmove(r->acked + n, r->acked, r->nacked * sizeof *ids);
			memcpy(r->acked, ids, n * sizeof *ids);
			r->nacked += n;
		}
		pthread_mutex_unlock(&r->lock);
	}
	free(ids);
}

/* Takes rows left behind (by a dead node, a failed publish, a full queue)
 * and publishes them again. Relay thread. */
static void sweep(outbox_relay_t *r)
{
	int round;

	for (round = 0; round < SWEEP_ROUNDS; round++) {
		store_outbox_t *rows;
		size_t n, i;
		if (store_outbox_take(r->store, clock_wall_ms(), OUTBOX_AGE_MS, OUTBOX_SWEEP_BATCH, &rows, &n) !=
		    STORE_OK)
			return;
		for (i = 0; i < n; i++)
			publish(r, &rows[i]);
		store_outbox_free(rows, n);
		atomic_fetch_add(&r->swept, n);
		if (n < OUTBOX_SWEEP_BATCH)
			return;
	}
}

static void *relay_main(void *arg)
{
	outbox_relay_t *r = arg;
	int64_t next_sweep = clock_mono_ms() + OUTBOX_SWEEP_MS, next_warn = 0;
	uint64_t failed_seen = 0;
	store_outbox_t *batch = malloc(256 * sizeof *batch);

	log_set_thread_name("outbox");
	if (!batch) {
		log_error("outbox: out of memory at start");
		return NULL;
	}
	for (;;) {
		size_t n = 0, i;
		int stop;
		int64_t now;

		pthread_mutex_lock(&r->lock);
		while (!r->count && !r->nacked && !r->stopping && clock_mono_ms() < next_sweep) {
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_nsec += 100 * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&r->wake, &r->lock, &ts);
		}
		while (n < 256 && r->count) {
			store_outbox_t *e = &r->queue[r->head];
			batch[n++] = *e;
			r->bytes -= sizeof *e + (e->kind == STORE_EVENT_MESSAGE ? e->msg.body_len + strlen(e->msg.cmid) : 0);
			r->head = (r->head + 1) % OUTBOX_QUEUE_MAX;
			r->count--;
		}
		stop = r->stopping;
		pthread_mutex_unlock(&r->lock);

		for (i = 0; i < n; i++) {
			publish(r, &batch[i]);
			entry_clear(&batch[i]);
		}
		delete_acked(r);
		if (stop)
			break;
		now = clock_mono_ms();
		if (now >= next_sweep) {
			sweep(r);
			next_sweep = now + OUTBOX_SWEEP_MS;
		}
		if (now >= next_warn) {
			uint64_t f = atomic_load(&r->failed);
			if (f > failed_seen)
				log_warn("outbox: %llu events not stored on the log in the last %d s (is NATS down?); "
				         "their rows stay in the outbox and the sweep sends them again",
				         (unsigned long long)(f - failed_seen), WARN_EVERY_MS / 1000);
			failed_seen = f;
			next_warn = now + WARN_EVERY_MS;
		}
	}
	free(batch);
	return NULL;
}

outbox_relay_t *outbox_relay_new(const char *location, eventlog_t *log, uint32_t node)
{
	outbox_relay_t *r = calloc(1, sizeof *r);
	pthread_condattr_t ca;

	if (!r) {
		eventlog_close(log);
		return NULL;
	}
	r->log = log;
	r->node = node;
	pthread_mutex_init(&r->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->wake, &ca);
	pthread_condattr_destroy(&ca);
	/* The relay's own writes (deletes, sweep marks) are safe to lose:
	 * they commit without a flush of their own, so they do not double
	 * the fsyncs the writer's commits wait on. */
	if (!(r->queue = calloc(OUTBOX_QUEUE_MAX, sizeof *r->queue)) || !(r->store = store_open(location)) ||
	    store_set_lazy_commit(r->store, 1) != STORE_OK)
		goto err;
	if (pthread_create(&r->thread, NULL, relay_main, r) != 0) {
		log_error("outbox: cannot start its thread");
		goto err;
	}
	r->started = 1;
	return r;
err:
	outbox_relay_free(r);
	return NULL;
}

void outbox_relay_counts(outbox_relay_t *r, outbox_counts_t *out)
{
	out->published = atomic_load(&r->published);
	out->failed = atomic_load(&r->failed);
	out->swept = atomic_load(&r->swept);
	out->dropped = atomic_load(&r->dropped);
}

void outbox_relay_free(outbox_relay_t *r)
{
	size_t i;

	if (!r)
		return;
	if (r->started) {
		pthread_mutex_lock(&r->lock);
		r->stopping = 1;
		pthread_cond_signal(&r->wake);
		pthread_mutex_unlock(&r->lock);
		pthread_join(r->thread, NULL);
	}
	/* Every done is called by now; the acked rows go. */
	eventlog_close(r->log);
	if (r->store)
		delete_acked(r);
	for (i = 0; i < r->count; i++)
		entry_clear(&r->queue[(r->head + i) % OUTBOX_QUEUE_MAX]);
	store_close(r->store);
	free(r->queue);
	free(r->acked);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->wake);
	free(r);
}
