/* eventlog_nats.c - the event log (eventlog.h) on NATS JetStream, through
 * libnats (3.4; servers 2.9).
 *
 * Layout on the servers. One stream (opts->name, "PARLEY") holds every
 * partition: JetStream has no partitions, so partition p is the subjects
 * `<prefix>.<p>.<type>`, where prefix is the stream name in lower case
 * plus ".ev" ("parley.ev") and the type's dots are subject token
 * separators: "message.new" in partition 7 is `parley.ev.7.message.new`.
 * (A token cannot hold a '.', and letting the type's dots be tokens keeps
 * it readable and lets a consumer filter `parley.ev.*.receipt.>`.) The
 * key travels in a `Parley-Key` header, the dedup id in `Nats-Msg-Id`
 * (JetStream's de-duplication within the stream's Duplicates window).
 * The partition count is written in the stream's description, so that a
 * node configured with another count is refused instead of silently
 * reordering conversations. A consumer group's partition is a durable
 * pull consumer `<group>_p<p>` filtered on `<prefix>.<p>.>`, explicit
 * acks, MaxAckPending bounded.
 *
 * What this file owns and why it is built this way:
 * - One connection (libnats threads: reader, flusher, a delivery thread
 *   per subscription, a timer thread) that reconnects for ever.
 * - A publisher thread. libnats' js_PublishMsgAsync is not usable from
 *   an event loop: it waits (StallWait) when its pending limit is
 *   reached, and the publish itself may write to the socket, under the
 *   connection's lock, in the caller's thread when the write buffer is
 *   full. And jsCtx_Destroy drops the outstanding publishes without
 *   calling their handlers, so "done exactly once" could not be kept at
 *   close. So eventlog_publish only takes a slot and queues a message;
 *   the publisher thread sends it with a reply subject of our own inbox,
 *   `<inbox>.<slot>.<gen>`, exactly as a JetStream publish is on the wire,
 *   and the ack comes back on our own subscription, whose end we can
 *   wait for. The slot's generation makes a late ack for a slot already
 *   timed out and reused harmless. Deadlines are kept in send order (one
 *   timeout for all), so expiry looks only at the head.
 * - A thread per consumer, fetching batches (short expiry, so that close
 *   is prompt) and calling the handler in order. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <nats/nats.h>

#include "eventlog.h"
#include "log.h"
#include "loop.h"

#define NAME_MAX_LEN 32
#define FETCH_EXPIRE_MS 500 /* how long a consumer's fetch waits: bounds close */
#define RETRY_MAX_MS 1000   /* a failing handler's longest backoff */

enum { PUB_FREE, PUB_RESERVED, PUB_QUEUED, PUB_SENT };

typedef struct pub {
	natsMsg *msg; /* while reserved or queued */
	eventlog_done_fn done;
	void *ud;
	uint64_t gen;
	int64_t deadline; /* ms, monotonic, once sent */
	int state;
	struct pub *prev, *next; /* in the queue, the sent list or the free list */
} pub_t;

typedef struct publist {
	pub_t *head, *tail;
} publist_t;

typedef struct consumer {
	eventlog_t *log;
	char durable[EVENTLOG_GROUP_MAX + 16];
	unsigned partition;
	eventlog_handler_fn h;
	void *ud;
	natsSubscription *sub;
	pthread_t thread;
	atomic_int stop;  /* eventlog_unconsume */
	/* The consumer's pending count after the last event handled, from
	 * its metadata: more waiting, or (0) none when it was sent. */
	uint64_t pending_after;
	struct consumer *next;
} consumer_t;

struct eventlog {
	natsConnection *nc;
	jsCtx *js;
	eventlog_opts_t o;
	char name[NAME_MAX_LEN + 1];
	char prefix[NAME_MAX_LEN + 8]; /* "parley.ev" */
	char inbox[128];               /* "<inbox>" of the acks */
	natsSubscription *acks;

	pthread_mutex_t mu; /* guards everything below */
	pthread_cond_t wake;      /* the publisher: work, or an ack while closing */
	pthread_cond_t acks_gone; /* the ack subscription has completed, or
	                           * the connection's last callback has run */
	pub_t *pubs;              /* o.max_inflight slots */
	publist_t free, queue, sent;
	uint64_t gen;
	int closing, acks_done, conn_closed;
	pthread_t publisher;
	consumer_t *consumers;
	int64_t last_warn_ms;

	atomic_int stop; /* the consumers' */
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* A warning at most once a second per log: an election makes hundreds of
 * failures that say the same thing. Called under mu. */
static int warn_due(eventlog_t *log)
{
	int64_t t = now_ms();

	if (t - log->last_warn_ms < 1000)
		return 0;
	log->last_warn_ms = t;
	return 1;
}

static void list_push(publist_t *l, pub_t *p)
{
	p->next = NULL;
	p->prev = l->tail;
	if (l->tail)
		l->tail->next = p;
	else
		l->head = p;
	l->tail = p;
}

static void list_remove(publist_t *l, pub_t *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		l->head = p->next;
	if (p->next)
		p->next->prev = p->prev;
	else
		l->tail = p->prev;
	p->prev = p->next = NULL;
}

static pub_t *list_pop(publist_t *l)
{
	pub_t *p = l->head;

	if (p)
		list_remove(l, p);
	return p;
}

/* ---- names ------------------------------------------------------------ */

static int valid_type(const char *type)
{
	size_t i, n, tok = 0;

	if (!type || !(n = strlen(type)) || n > EVENTLOG_TYPE_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		char c = type[i];
		if (c == '.') {
			if (!tok)
				return 0;
			tok = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-') {
			tok++;
		} else {
			return 0;
		}
	}
	return tok > 0;
}

static int valid_dedup(const char *id)
{
	size_t n;

	if (!id)
		return 1;
	if (!(n = strlen(id)) || n > EVENTLOG_DEDUP_MAX)
		return 0;
	for (; *id; id++)
		if (*id <= ' ' || *id > '~')
			return 0;
	return 1;
}

static int valid_group(const char *g)
{
	size_t n;

	if (!g || !(n = strlen(g)) || n > EVENTLOG_GROUP_MAX)
		return 0;
	for (; *g; g++)
		if (!((*g >= 'a' && *g <= 'z') || (*g >= 'A' && *g <= 'Z') || (*g >= '0' && *g <= '9') ||
		      *g == '_' || *g == '-'))
			return 0;
	return 1;
}

/* ---- partitions ------------------------------------------------------- */

unsigned eventlog_partitions(const eventlog_t *log)
{
	return log->o.partitions;
}

/* splitmix64's finaliser: fixed here for good, since every process must
 * agree on it and a change would move conversations between partitions
 * (and so reorder them) while old events are still in the log. */
unsigned eventlog_partition_of(const eventlog_t *log, int64_t key)
{
	uint64_t z = (uint64_t)key + 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	return (unsigned)(z % log->o.partitions);
}

/* ---- publishing ------------------------------------------------------- */

/* Frees slot p (under mu) and hands back what its done needs. */
static void release_slot(eventlog_t *log, pub_t *p, eventlog_done_fn *done, void **ud)
{
	*done = p->done;
	*ud = p->ud;
	p->state = PUB_FREE;
	p->done = NULL;
	p->ud = NULL;
	list_push(&log->free, p);
	if (log->closing)
		pthread_cond_signal(&log->wake);
}

/* 1 when the reply to a JetStream publish says the message is stored:
 * {"stream":"PARLEY","seq":12[,"duplicate":true]}. Otherwise it is
 * {"error":{...}}, or a 503 status without a body (no responders: no
 * stream, or none reachable). */
static int ack_ok(natsMsg *m, char *why, size_t whylen)
{
	json_error_t jerr;
	json_t *j, *e;
	int ok = 0;

	if (natsMsg_IsNoResponders(m)) {
		snprintf(why, whylen, "no responders (no stream for the subject, or none reachable)");
		return 0;
	}
	j = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, &jerr);
	if (!j) {
		snprintf(why, whylen, "unreadable ack (%d bytes)", natsMsg_GetDataLength(m));
		return 0;
	}
	if ((e = json_object_get(j, "error"))) {
		snprintf(why, whylen, "%s (code %lld)",
		         json_string_value(json_object_get(e, "description")) ? json_string_value(json_object_get(e, "description")) : "error",
		         (long long)json_integer_value(json_object_get(e, "err_code")));
	} else if (json_is_integer(json_object_get(j, "seq"))) {
		ok = 1;
	} else {
		snprintf(why, whylen, "ack without seq");
	}
	json_decref(j);
	return ok;
}

/* libnats' delivery thread of the ack subscription. */
static void on_ack(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
	eventlog_t *log = closure;
	const char *subj = natsMsg_GetSubject(m), *tail;
	size_t ilen = strlen(log->inbox);
	unsigned long long slot, gen;
	eventlog_done_fn done = NULL;
	void *ud = NULL;
	char why[200] = "";
	int ok;

	(void)nc;
	(void)sub;
	if (strncmp(subj, log->inbox, ilen) != 0 || subj[ilen] != '.')
		goto out;
	tail = subj + ilen + 1;
	if (sscanf(tail, "%llu.%llu", &slot, &gen) != 2 || slot >= log->o.max_inflight)
		goto out;
	ok = ack_ok(m, why, sizeof why);
	pthread_mutex_lock(&log->mu);
	if (log->pubs[slot].state == PUB_SENT && log->pubs[slot].gen == gen) {
		list_remove(&log->sent, &log->pubs[slot]);
		release_slot(log, &log->pubs[slot], &done, &ud);
		if (!ok && warn_due(log))
			log_warn("eventlog %s: publish refused: %s", log->name, why);
	}
	pthread_mutex_unlock(&log->mu);
	if (done)
		done(ud, ok);
out:
	natsMsg_Destroy(m);
}

static void on_acks_complete(void *closure)
{
	eventlog_t *log = closure;

	pthread_mutex_lock(&log->mu);
	log->acks_done = 1;
	pthread_cond_broadcast(&log->acks_gone);
	pthread_mutex_unlock(&log->mu);
}

/* Sends what is queued, fails what has waited too long, until closing
 * and nothing is left. */
static void *publisher_main(void *arg)
{
	eventlog_t *log = arg;
	eventlog_done_fn done;
	void *ud;
	pub_t *p;

	log_set_thread_name("eventlog-pub");
	pthread_mutex_lock(&log->mu);
	for (;;) {
		int64_t t;

		while ((p = list_pop(&log->queue))) {
			natsMsg *m = p->msg;
			uint64_t gen = p->gen;
			natsStatus s;

			p->msg = NULL;
			p->state = PUB_SENT;
			p->deadline = now_ms() + log->o.publish_timeout_ms;
			list_push(&log->sent, p);
			pthread_mutex_unlock(&log->mu);
			/* While reconnecting libnats would buffer the message and
			 * send it whenever it reconnects: fail it now instead, so
			 * that a publisher learns of an outage at once. */
			if (natsConnection_Status(log->nc) != NATS_CONN_STATUS_CONNECTED)
				s = NATS_CONNECTION_DISCONNECTED;
			else
				s = natsConnection_PublishMsg(log->nc, m);
			natsMsg_Destroy(m);
			pthread_mutex_lock(&log->mu);
			if (s != NATS_OK && p->state == PUB_SENT && p->gen == gen) {
				if (warn_due(log))
					log_warn("eventlog %s: publish failed: %s", log->name,
					         natsStatus_GetText(s));
				list_remove(&log->sent, p);
				release_slot(log, p, &done, &ud);
				pthread_mutex_unlock(&log->mu);
				done(ud, 0);
				pthread_mutex_lock(&log->mu);
			}
		}
		t = now_ms();
		while ((p = log->sent.head) && p->deadline <= t) {
			if (p->deadline && warn_due(log))
				log_warn("eventlog %s: no ack within %" PRId64 " ms", log->name,
				         log->o.publish_timeout_ms);
			list_remove(&log->sent, p);
			release_slot(log, p, &done, &ud);
			pthread_mutex_unlock(&log->mu);
			done(ud, 0);
			pthread_mutex_lock(&log->mu);
		}
		if (log->closing && !log->queue.head && !log->sent.head)
			break;
		if (!log->queue.head) {
			int64_t wait = log->sent.head ? log->sent.head->deadline - now_ms() : 1000;
			struct timespec ts;

			if (wait > 0) {
				clock_gettime(CLOCK_MONOTONIC, &ts);
				ts.tv_sec += wait / 1000;
				ts.tv_nsec += (wait % 1000) * 1000000;
				if (ts.tv_nsec >= 1000000000) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000;
				}
				pthread_cond_timedwait(&log->wake, &log->mu, &ts);
			}
		}
	}
	pthread_mutex_unlock(&log->mu);
	return NULL;
}

int eventlog_publish(eventlog_t *log, int64_t key, const char *type, const void *data, size_t len,
                     const char *dedup_id, eventlog_done_fn done, void *ud)
{
	char subject[NAME_MAX_LEN + 32 + EVENTLOG_TYPE_MAX], reply[sizeof log->inbox + 48], keybuf[24];
	natsMsg *m = NULL;
	pub_t *p;
	int r = 0;

	if (!log || !valid_type(type) || !valid_dedup(dedup_id) || !done || (!data && len))
		return -EINVAL;
	if (len > log->o.max_payload)
		return -EMSGSIZE;
	pthread_mutex_lock(&log->mu);
	if (log->closing) {
		pthread_mutex_unlock(&log->mu);
		return -EPIPE;
	}
	if (!(p = list_pop(&log->free))) {
		pthread_mutex_unlock(&log->mu);
		return -EAGAIN;
	}
	p->state = PUB_RESERVED;
	p->gen = ++log->gen;
	pthread_mutex_unlock(&log->mu);

	snprintf(subject, sizeof subject, "%s.%u.%s", log->prefix, eventlog_partition_of(log, key), type);
	snprintf(reply, sizeof reply, "%s.%u.%" PRIu64, log->inbox, (unsigned)(p - log->pubs), p->gen);
	snprintf(keybuf, sizeof keybuf, "%" PRId64, key);
	if (natsMsg_Create(&m, subject, reply, data, (int)len) != NATS_OK ||
	    natsMsgHeader_Set(m, "Parley-Key", keybuf) != NATS_OK ||
	    (dedup_id && natsMsgHeader_Set(m, "Nats-Msg-Id", dedup_id) != NATS_OK)) {
		natsMsg_Destroy(m);
		m = NULL;
		r = -ENOMEM;
	}

	pthread_mutex_lock(&log->mu);
	if (!r && log->closing)
		r = -EPIPE;
	if (r) {
		natsMsg_Destroy(m);
		p->state = PUB_FREE;
		list_push(&log->free, p);
	} else {
		p->msg = m;
		p->done = done;
		p->ud = ud;
		p->state = PUB_QUEUED;
		list_push(&log->queue, p);
		pthread_cond_signal(&log->wake);
	}
	pthread_mutex_unlock(&log->mu);
	return r;
}

/* ---- consuming -------------------------------------------------------- */

/* Sleeps ms in short steps, 1 when asked to stop meanwhile. */
/* Whether consumer c is to stop: the log closing, or c alone. */
static int stopping(consumer_t *c)
{
	return atomic_load(&c->log->stop) || atomic_load(&c->stop);
}

static int nap_unless_stopped(consumer_t *c, int64_t ms)
{
	while (ms > 0 && !stopping(c)) {
		nap_ms(ms < 50 ? ms : 50);
		ms -= 50;
	}
	return stopping(c);
}

/* Handles the fetched message list->Msgs[at] until the handler takes
 * it; 1 when asked to stop first (the message is then handed back). */
static int handle(consumer_t *c, natsMsgList *list, int at)
{
	natsMsg *m = list->Msgs[at];
	eventlog_t *log = c->log;
	const char *subj = natsMsg_GetSubject(m), *v = NULL;
	size_t plen = strlen(log->prefix);
	jsMsgMetaData *meta = NULL;
	eventlog_event_t ev;
	int64_t backoff = 50;
	char *end;

	memset(&ev, 0, sizeof ev);
	ev.partition = c->partition;
	/* "<prefix>.<p>.<type>" */
	ev.type = "";
	if (strncmp(subj, log->prefix, plen) == 0 && subj[plen] == '.' && (end = strchr(subj + plen + 1, '.')))
		ev.type = end + 1;
	if (natsMsgHeader_Get(m, "Parley-Key", &v) == NATS_OK && v)
		ev.key = strtoll(v, NULL, 10);
	ev.dedup_id = "";
	if (natsMsgHeader_Get(m, "Nats-Msg-Id", &v) == NATS_OK && v)
		ev.dedup_id = v;
	ev.data = natsMsg_GetData(m);
	ev.len = (size_t)natsMsg_GetDataLength(m);
	ev.delivery = 1;
	c->pending_after = 1; /* not known: ask */
	if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
		ev.seq = meta->Sequence.Stream;
		ev.delivery = (unsigned)meta->NumDelivered;
		c->pending_after = meta->NumPending;
		jsMsgMetaData_Destroy(meta);
	}
	for (;;) {
		if (c->h(c->ud, &ev) == 0)
			break;
		/* Retried here, not nak'ed: a nak'ed event would come back after
		 * the ones fetched with it, out of order. */
		log_warn("eventlog %s: %s's handler refused seq %" PRIu64 " (delivery %u); again in %" PRId64
		         " ms", log->name, c->durable, ev.seq, ev.delivery, backoff);
		if (nap_unless_stopped(c, backoff)) {
			natsMsg_Nak(m, NULL);
			return 1;
		}
		/* Restart the ack wait of this one and of those fetched with
		 * it, which would otherwise be redelivered meanwhile. */
		for (int i = at; i < list->Count; i++)
			natsMsg_InProgress(list->Msgs[i], NULL);
		backoff = backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : backoff * 2;
		ev.delivery++;
	}
	/* A lost ack only means a redelivery after ack_wait: at least once. */
	natsMsg_Ack(m, NULL);
	return 0;
}

/* Creates (or finds) c's durable consumer and binds a pull subscription
 * to it. 0, or -1 (said why, at most once a second). */
static int bind_consumer(consumer_t *c, int64_t *last_warn)
{
	eventlog_t *log = c->log;
	char filter[NAME_MAX_LEN + 24];
	jsConsumerInfo *ci = NULL;
	jsConsumerConfig cc;
	jsSubOptions so;
	jsErrCode jerr = 0;
	natsStatus s;

	snprintf(filter, sizeof filter, "%s.%u.>", log->prefix, c->partition);
	jsConsumerConfig_Init(&cc);
	cc.Durable = c->durable;
	cc.FilterSubject = filter;
	cc.AckPolicy = js_AckExplicit;
	cc.DeliverPolicy = js_DeliverAll;
	cc.MaxAckPending = log->o.max_ack_pending;
	cc.AckWait = log->o.ack_wait_ms * 1000000;
	cc.MaxDeliver = -1;
	/* Created here, then bound to: a consumer that js_PullSubscribe
	 * creates is deleted by natsSubscription_Unsubscribe, durable or
	 * not (libnats 3.4's jsi->dc). Adding an existing durable with the
	 * same configuration returns it unchanged, its cursor included; with
	 * another one (max_ack_pending, ack_wait changed) it is updated. */
	s = js_AddConsumer(&ci, log->js, log->name, &cc, NULL, &jerr);
	if (s != NATS_OK && jerr == JSConsumerNameExistErr) {
		jerr = 0;
		s = js_UpdateConsumer(&ci, log->js, log->name, &cc, NULL, &jerr);
	}
	if (s == NATS_OK) {
		jsConsumerInfo_Destroy(ci);
		jsSubOptions_Init(&so);
		so.Stream = log->name;
		so.Consumer = c->durable;
		s = js_PullSubscribe(&c->sub, log->js, filter, c->durable, NULL, &so, &jerr);
	}
	if (s != NATS_OK) {
		if (now_ms() - *last_warn >= 1000) {
			const char *detail = nats_GetLastError(NULL);
			*last_warn = now_ms();
			log_warn("eventlog %s: consumer %s: %s (%d)%s%s; trying again", log->name, c->durable,
			         natsStatus_GetText(s), (int)jerr, detail && *detail ? ": " : "", detail && *detail ? detail : "");
		}
		return -1;
	}
	return 0;
}

static void *consumer_main(void *arg)
{
	consumer_t *c = arg;
	eventlog_t *log = c->log;
	unsigned batch = log->o.max_ack_pending < 64 ? log->o.max_ack_pending : 64;
	int64_t last_warn = 0;

	log_set_thread_name("eventlog-cons");
	/* Here rather than in eventlog_consume: creating a replicated
	 * consumer takes ~0.5 s on 2.9, so a node's consumers are created
	 * side by side, and a creation refused during an election is simply
	 * tried again. */
	while (!stopping(c) && bind_consumer(c, &last_warn) < 0)
		nap_unless_stopped(c, 250);
	while (!stopping(c)) {
		natsMsgList list = {0};
		jsFetchRequest req;
		jsErrCode jerr = 0;
		natsStatus s;
		int i;

		/* What is there, at once; when nothing is, wait for one.
		 * natsSubscription_Fetch alone would wait for a whole batch
		 * (up to its expiry) whenever the partition is idle, and so
		 * delay a lone event by FETCH_EXPIRE_MS. When the last event
		 * said nothing was pending after it, the no-wait request would
		 * only be answered "none" (a round trip per event on a partition
		 * that keeps up): wait for the next one at once. */
		s = NATS_NOT_FOUND;
		if (c->pending_after) {
			jsFetchRequest_Init(&req);
			req.Batch = (int)batch;
			req.NoWait = true;
			req.Expires = (int64_t)FETCH_EXPIRE_MS * 1000000;
			s = natsSubscription_FetchRequest(&list, c->sub, &req);
		}
		if (s == NATS_NOT_FOUND || s == NATS_TIMEOUT)
			s = natsSubscription_Fetch(&list, c->sub, 1, FETCH_EXPIRE_MS, &jerr);
		if (s == NATS_TIMEOUT || s == NATS_NOT_FOUND)
			continue;
		if (s != NATS_OK) {
			/* Disconnected, or an election under way: try again. */
			if (now_ms() - last_warn >= 1000) {
				const char *detail = nats_GetLastError(NULL);
				last_warn = now_ms();
				log_warn("eventlog %s: %s fetch: %s (%d)%s%s", log->name, c->durable,
				         natsStatus_GetText(s), (int)jerr, detail && *detail ? ": " : "", detail && *detail ? detail : "");
			}
			nap_unless_stopped(c, 100);
			continue;
		}
		for (i = 0; i < list.Count; i++) {
			int stopped = stopping(c);
			if (!stopped && handle(c, &list, i)) {
				stopped = 1;
				i++; /* handle has handed that one back */
			}
			if (stopped) {
				/* Handed back in order, so that the next consumer of
				 * the cursor starts with them rather than after ack_wait. */
				for (; i < list.Count; i++)
					if (natsMsg_Nak(list.Msgs[i], NULL) != NATS_OK)
						break;
				break;
			}
		}
		natsMsgList_Destroy(&list);
	}
	return NULL;
}

int eventlog_consume(eventlog_t *log, const char *group, unsigned partition, eventlog_handler_fn h,
                     void *ud)
{
	consumer_t *c, *o;

	if (!log || !valid_group(group) || partition >= log->o.partitions || !h)
		return -EINVAL;
	if (!(c = calloc(1, sizeof *c)))
		return -ENOMEM;
	c->log = log;
	c->partition = partition;
	c->h = h;
	c->ud = ud;
	snprintf(c->durable, sizeof c->durable, "%s_p%u", group, partition);
	pthread_mutex_lock(&log->mu);
	for (o = log->consumers; o; o = o->next)
		if (!strcmp(o->durable, c->durable))
			break;
	if (o || log->closing) {
		pthread_mutex_unlock(&log->mu);
		free(c);
		return o ? -EEXIST : -EPIPE;
	}
	if (pthread_create(&c->thread, NULL, consumer_main, c) != 0) {
		pthread_mutex_unlock(&log->mu);
		free(c);
		return -ENOMEM;
	}
	c->next = log->consumers;
	log->consumers = c;
	pthread_mutex_unlock(&log->mu);
	return 0;
}

int eventlog_unconsume(eventlog_t *log, const char *group, unsigned partition)
{
	char durable[EVENTLOG_GROUP_MAX + 16];
	consumer_t **p, *c;

	if (!log || !valid_group(group))
		return -EINVAL;
	snprintf(durable, sizeof durable, "%s_p%u", group, partition);
	pthread_mutex_lock(&log->mu);
	for (p = &log->consumers; *p && strcmp((*p)->durable, durable); p = &(*p)->next)
		;
	if (!(c = *p)) {
		pthread_mutex_unlock(&log->mu);
		return -ENOENT;
	}
	*p = c->next;
	pthread_mutex_unlock(&log->mu);
	atomic_store(&c->stop, 1);
	pthread_join(c->thread, NULL);
	natsSubscription_Destroy(c->sub);
	free(c);
	return 0;
}

/* ---- open and close --------------------------------------------------- */

#define STREAM_READY_MS 30000  /* how long open waits for JetStream to elect a leader */

/* Makes sure the stream exists with our settings. 0; -1 with err; or -2
 * with err when JetStream is not ready yet (no leader elected, not enough
 * peers, another node creating the stream at this very moment): worth
 * trying again. */
static int ensure_stream(eventlog_t *log, char *err, size_t errlen)
{
	char subject[NAME_MAX_LEN + 16], desc[96];
	const char *subjects[] = {subject};
	jsStreamInfo *si = NULL;
	jsStreamConfig cfg;
	jsErrCode jerr = 0;
	unsigned have;
	natsStatus s;

	snprintf(subject, sizeof subject, "%s.>", log->prefix);
	snprintf(desc, sizeof desc, "parley event log, %u partitions", log->o.partitions);
	jsStreamConfig_Init(&cfg);
	cfg.Name = log->name;
	cfg.Description = desc;
	cfg.Subjects = subjects;
	cfg.SubjectsLen = 1;
	cfg.Storage = js_FileStorage;
	cfg.Replicas = log->o.replicas;
	cfg.MaxAge = log->o.max_age_ms * 1000000;
	cfg.MaxBytes = log->o.max_bytes ? log->o.max_bytes : -1;
	cfg.MaxMsgSize = (int32_t)log->o.max_payload + 4096; /* headers too */
	cfg.Duplicates = log->o.dedup_window_ms * 1000000;
	cfg.Discard = js_DiscardOld;
	cfg.Retention = js_LimitsPolicy;

	s = js_GetStreamInfo(&si, log->js, log->name, NULL, &jerr);
	if (s == NATS_OK) {
		const char *d = si->Config->Description;
		if (!d || sscanf(d, "parley event log, %u partitions", &have) != 1 || have != log->o.partitions) {
			snprintf(err, errlen, "stream %s exists with \"%s\", not %u partitions: refusing to "
			         "reorder conversations", log->name, d ? d : "", log->o.partitions);
			jsStreamInfo_Destroy(si);
			return -1;
		}
		jsStreamInfo_Destroy(si);
		si = NULL;
		s = js_UpdateStream(&si, log->js, &cfg, NULL, &jerr);
	} else if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
		s = js_AddStream(&si, log->js, &cfg, NULL, &jerr);
	}
	if (s != NATS_OK) {
		const char *detail = nats_GetLastError(NULL);
		snprintf(err, errlen, "stream %s (replicas %d): %s (%d)%s%s", log->name, log->o.replicas,
		         natsStatus_GetText(s), (int)jerr, detail && *detail ? ": " : "", detail && *detail ? detail : "");
		jsStreamInfo_Destroy(si);
		return s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS || jerr == JSClusterNotAvailErr ||
		               jerr == JSClusterNoPeersErr || jerr == JSStreamNameExistErr
		           ? -2
		           : -1;
	}
	jsStreamInfo_Destroy(si);
	return 0;
}

void eventlog_opts_init(eventlog_opts_t *opts)
{
	memset(opts, 0, sizeof *opts);
}

/* The acks of what was sent on the connection that went would come to
 * it, not to the next one: fail those publishes now rather than after
 * their timeout, so that a publisher retrying (same dedup id) does not
 * stall for publish_timeout_ms at every lost server. */
static void on_disconnected(natsConnection *nc, void *closure)
{
	eventlog_t *log = closure;
	unsigned n = 0;
	pub_t *p;

	(void)nc;
	if (atomic_load(&log->stop))
		return; /* eventlog_close */
	pthread_mutex_lock(&log->mu);
	for (p = log->sent.head; p; p = p->next, n++)
		p->deadline = 0; /* the list stays in deadline order */
	if (n)
		pthread_cond_signal(&log->wake);
	pthread_mutex_unlock(&log->mu);
	log_warn("eventlog %s: disconnected from NATS; reconnecting (%u publishes in flight fail)", log->name, n);
}

/* The connection's last callback: libnats calls its callbacks on a
 * thread of its own, after natsConnection_Close has returned, so log may
 * be freed only once this one has run. */
static void on_closed(natsConnection *nc, void *closure)
{
	eventlog_t *log = closure;

	(void)nc;
	pthread_mutex_lock(&log->mu);
	log->conn_closed = 1;
	pthread_cond_broadcast(&log->acks_gone);
	pthread_mutex_unlock(&log->mu);
}

/* Waits (at most 5 s, under mu) until *flag is set. */
static void wait_flag(eventlog_t *log, int *flag, const char *what)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 5;
	while (!*flag)
		if (pthread_cond_timedwait(&log->acks_gone, &log->mu, &ts) != 0 && !*flag) {
			log_error("eventlog %s: %s did not end in 5 s", log->name, what);
			break;
		}
}

/* Closes the connection and returns once libnats will call none of our
 * callbacks again. */
static void close_connection(eventlog_t *log)
{
	atomic_store(&log->stop, 1); /* no "disconnected" line for this */
	natsConnection_Close(log->nc);
	pthread_mutex_lock(&log->mu);
	wait_flag(log, &log->conn_closed, "the connection");
	pthread_mutex_unlock(&log->mu);
	natsConnection_Destroy(log->nc);
	log->nc = NULL;
}

static void on_reconnected(natsConnection *nc, void *closure)
{
	char url[256] = "";

	natsConnection_GetConnectedUrl(nc, url, sizeof url);
	log_info("eventlog %s: reconnected to %s", ((eventlog_t *)closure)->name, url);
}

/* Splits "a,b,c" into servers (pointers into buf). The count, or -1. */
static int split_urls(const char *urls, char *buf, size_t buflen, const char **servers, int max)
{
	int n = 0;
	char *tok, *save = NULL;

	if (strlen(urls) >= buflen)
		return -1;
	strcpy(buf, urls);
	for (tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		if (n == max || strncmp(tok, "nats://", 7) != 0)
			return -1;
		servers[n++] = tok;
	}
	return n ? n : -1;
}

eventlog_t *eventlog_open(const char *urls, const eventlog_opts_t *opts, char *err, size_t errlen)
{
	char ebuf[512], ubuf[1024], inbox[100];
	const char *servers[16];
	natsOptions *no = NULL;
	eventlog_t *log = NULL;
	natsInbox *ib = NULL;
	natsStatus s;
	unsigned i;
	int n;

	if (!err || !errlen) {
		err = ebuf;
		errlen = sizeof ebuf;
	}
	err[0] = 0;
	if (!urls || (n = split_urls(urls, ubuf, sizeof ubuf, servers, 16)) < 0) {
		snprintf(err, errlen, "bad NATS URL list \"%s\" (want nats://host:port[,nats://...])",
		         urls ? urls : "(null)");
		goto fail;
	}
	if (!(log = calloc(1, sizeof *log))) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (opts)
		log->o = *opts;
	if (log->o.name && (strlen(log->o.name) > NAME_MAX_LEN || !valid_group(log->o.name))) {
		snprintf(err, errlen, "bad log name \"%.64s\" (1 to %d of A-Z a-z 0-9 _ -)", log->o.name,
		         NAME_MAX_LEN);
		goto fail_free;
	}
	snprintf(log->name, sizeof log->name, "%s", log->o.name ? log->o.name : "PARLEY");
	log->o.name = log->name;
	if (!log->o.partitions)
		log->o.partitions = 16;
	if (!log->o.replicas)
		log->o.replicas = 1;
	if (!log->o.max_age_ms)
		log->o.max_age_ms = 7LL * 24 * 3600 * 1000;
	if (!log->o.max_payload)
		log->o.max_payload = 64 * 1024;
	if (!log->o.max_inflight)
		log->o.max_inflight = 4096;
	if (!log->o.publish_timeout_ms)
		log->o.publish_timeout_ms = 5000;
	if (!log->o.dedup_window_ms)
		log->o.dedup_window_ms = 120000;
	if (!log->o.max_ack_pending)
		log->o.max_ack_pending = 256;
	if (!log->o.ack_wait_ms)
		log->o.ack_wait_ms = 30000;
	if (!log->o.connect_timeout_ms)
		log->o.connect_timeout_ms = 2000;
	if (log->o.partitions > EVENTLOG_PARTITIONS_MAX || log->o.replicas < 1 || log->o.replicas > 5 ||
	    log->o.max_payload > 8u << 20 || log->o.max_inflight > 1u << 20 || log->o.publish_timeout_ms < 0 ||
	    log->o.max_age_ms < 0 || log->o.max_bytes < 0 || log->o.dedup_window_ms < 0 ||
	    log->o.ack_wait_ms < 0 || log->o.max_ack_pending > 1u << 20) {
		snprintf(err, errlen, "option out of range");
		goto fail_free;
	}
	for (i = 0; log->name[i]; i++)
		log->prefix[i] = (char)((log->name[i] >= 'A' && log->name[i] <= 'Z') ? log->name[i] + 32
		                                                                      : log->name[i]);
	strcat(log->prefix, ".ev");

	pthread_mutex_init(&log->mu, NULL);
	{
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&log->wake, &ca);
		pthread_condattr_destroy(&ca);
	}
	pthread_cond_init(&log->acks_gone, NULL);
	if (!(log->pubs = calloc(log->o.max_inflight, sizeof *log->pubs))) {
		snprintf(err, errlen, "out of memory");
		goto fail_sync;
	}
	for (i = 0; i < log->o.max_inflight; i++)
		list_push(&log->free, &log->pubs[i]);

	if (natsOptions_Create(&no) != NATS_OK || natsOptions_SetServers(no, servers, n) != NATS_OK ||
	    natsOptions_SetTimeout(no, log->o.connect_timeout_ms) != NATS_OK ||
	    /* For ever, a moment apart: a log that has lost every server
	     * recovers by itself when one is back. */
	    natsOptions_SetMaxReconnect(no, -1) != NATS_OK ||
	    natsOptions_SetReconnectWait(no, 250) != NATS_OK ||
	    natsOptions_SetReconnectJitter(no, 100, 1000) != NATS_OK ||
	    /* Notice a dead server within ~3 s even when no write fails. */
	    natsOptions_SetPingInterval(no, 1000) != NATS_OK || natsOptions_SetMaxPingsOut(no, 3) != NATS_OK ||
	    natsOptions_SetDisconnectedCB(no, on_disconnected, log) != NATS_OK ||
	    natsOptions_SetReconnectedCB(no, on_reconnected, log) != NATS_OK ||
	    natsOptions_SetClosedCB(no, on_closed, log) != NATS_OK) {
		snprintf(err, errlen, "cannot set NATS options");
		goto fail_opts;
	}
	s = natsConnection_Connect(&log->nc, no);
	natsOptions_Destroy(no);
	no = NULL;
	if (s != NATS_OK) {
		snprintf(err, errlen, "cannot reach NATS at %s: %s", urls, natsStatus_GetText(s));
		goto fail_opts;
	}
	if (natsConnection_JetStream(&log->js, log->nc, NULL) != NATS_OK) {
		snprintf(err, errlen, "no JetStream context");
		goto fail_conn;
	}
	/* Nodes and NATS servers start in any order: a cluster that has just
	 * come up elects its leader for a few seconds. */
	{
		int64_t give_up = clock_mono_ms() + STREAM_READY_MS;
		int r, said = 0;
		while ((r = ensure_stream(log, err, errlen)) == -2 && clock_mono_ms() < give_up) {
			if (!said++)
				log_info("eventlog %s: JetStream not ready yet (%s); trying again", log->name, err);
			usleep(250 * 1000);
		}
		if (r < 0)
			goto fail_conn;
	}

	if (natsInbox_Create(&ib) != NATS_OK) {
		snprintf(err, errlen, "out of memory");
		goto fail_conn;
	}
	snprintf(inbox, sizeof inbox, "%s", (const char *)ib);
	natsInbox_Destroy(ib);
	snprintf(log->inbox, sizeof log->inbox, "%s", inbox);
	{
		char subj[sizeof log->inbox + 4];
		snprintf(subj, sizeof subj, "%s.>", log->inbox);
		s = natsConnection_Subscribe(&log->acks, log->nc, subj, on_ack, log);
	}
	if (s != NATS_OK || natsSubscription_SetPendingLimits(log->acks, -1, -1) != NATS_OK ||
	    natsSubscription_SetOnCompleteCB(log->acks, on_acks_complete, log) != NATS_OK) {
		snprintf(err, errlen, "cannot subscribe for acks: %s", natsStatus_GetText(s));
		goto fail_sub;
	}
	if (pthread_create(&log->publisher, NULL, publisher_main, log) != 0) {
		snprintf(err, errlen, "cannot start the publisher thread");
		goto fail_sub;
	}
	log_info("eventlog %s: open on %s (%u partitions, %d replicas)", log->name, urls, log->o.partitions,
	         log->o.replicas);
	return log;

fail_sub:
	natsSubscription_Destroy(log->acks);
fail_conn:
	jsCtx_Destroy(log->js);
	close_connection(log);
fail_opts:
	natsOptions_Destroy(no);
	free(log->pubs);
fail_sync:
	pthread_cond_destroy(&log->acks_gone);
	pthread_cond_destroy(&log->wake);
	pthread_mutex_destroy(&log->mu);
fail_free:
	free(log);
fail:
	log_error("eventlog: %s", err);
	return NULL;
}

void eventlog_close(eventlog_t *log)
{
	consumer_t *c;

	if (!log)
		return;
	/* Consumers first: they may publish from their handlers. */
	atomic_store(&log->stop, 1);
	while ((c = log->consumers)) {
		log->consumers = c->next;
		pthread_join(c->thread, NULL);
		/* Destroy, not Unsubscribe: the durable consumer stays. (NULL
		 * when it was stopped before it could bind.) */
		natsSubscription_Destroy(c->sub);
		free(c);
	}
	/* Then the publisher sends what is queued and waits out every ack
	 * (each bounded by publish_timeout_ms). */
	pthread_mutex_lock(&log->mu);
	log->closing = 1;
	pthread_cond_signal(&log->wake);
	pthread_mutex_unlock(&log->mu);
	pthread_join(log->publisher, NULL);
	/* No ack callback may run once log is freed: wait for the end of
	 * the subscription's delivery. */
	if (natsSubscription_Unsubscribe(log->acks) != NATS_OK)
		natsConnection_Close(log->nc); /* closes every subscription */
	pthread_mutex_lock(&log->mu);
	wait_flag(log, &log->acks_done, "the ack subscription");
	pthread_mutex_unlock(&log->mu);
	natsSubscription_Destroy(log->acks);
	jsCtx_Destroy(log->js);
	close_connection(log);
	free(log->pubs);
	pthread_cond_destroy(&log->acks_gone);
	pthread_cond_destroy(&log->wake);
	pthread_mutex_destroy(&log->mu);
	free(log);
}
