/* push.c - the push path of push.h.
 *
 * Three stages, each with its own bound:
 *
 *   events    the real-time path's push_message / push_receipt calls, a
 *             ring under in_lock (the only lock the real-time path
 *             takes); the scheduler empties it in batches;
 *   notes     one per (user, conversation) with something pending or
 *             shown, in a hash table; a note waiting for its time sits in
 *             a min-heap by due time; when its time comes the scheduler
 *             makes it a job for the senders;
 *   sends     one per (notification, target), built by a sender from a
 *             job (the store says what to show and where), in one FIFO
 *             per provider; a send to be tried again waits in a second
 *             heap until its time.
 *
 * notes, jobs and sends are under p->lock, which no thread holds across
 * a store call or an HTTP exchange. */
#include "push.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#include "apns.h"
#include "fcm.h"
#include "log.h"
#include "snowflake.h"
#include "store.h"
#include "webpush.h"

#define NOTE_BUCKETS 16384
#define MEMBER_CACHE_SLOTS 256
#define BADGE_CAP 999
#define BACKOFF_BASE_MS 1000
#define BACKOFF_MAX_MS (5 * 60 * 1000)
#define WEBPUSH_TTL_S (4 * 7 * 86400) /* a message's push waits four weeks for an offline browser */
#define APNS_EXPIRY_S (4 * 7 * 86400)
#define FCM_TOKEN_SLACK_S 60          /* an access token is renewed this long before it expires */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- a min-heap by due time -------------------------------------------- */

typedef struct heap_item {
	int64_t due;
	void *item;
	size_t *at;               /* where the item keeps its index, or NULL */
} heap_item_t;

typedef struct heap {
	heap_item_t *v;
	size_t n, cap;
} heap_t;

static void heap_set(heap_t *h, size_t i, heap_item_t it)
{
	h->v[i] = it;
	if (it.at)
		*it.at = i;
}

static void heap_up(heap_t *h, size_t i)
{
	heap_item_t it = h->v[i];

	while (i > 0 && h->v[(i - 1) / 2].due > it.due) {
		heap_set(h, i, h->v[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(h, i, it);
}

static void heap_down(heap_t *h, size_t i)
{
	heap_item_t it = h->v[i];

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && h->v[c + 1].due < h->v[c].due)
			c++;
		if (h->v[c].due >= it.due)
			break;
		heap_set(h, i, h->v[c]);
		i = c;
	}
	heap_set(h, i, it);
}

static int heap_push(heap_t *h, int64_t due, void *item, size_t *at)
{
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		heap_item_t *v = realloc(h->v, cap * sizeof *v);
		if (!v)
			return -1;
		h->v = v;
		h->cap = cap;
	}
	h->v[h->n] = (heap_item_t){due, item, at};
	heap_up(h, h->n++);
	return 0;
}

static void heap_remove(heap_t *h, size_t i)
{
	if (h->v[i].at)
		*h->v[i].at = (size_t)-1;
	if (--h->n > i) {
		heap_set(h, i, h->v[h->n]);
		if (i > 0 && h->v[i].due < h->v[(i - 1) / 2].due)
			heap_up(h, i);
		else
			heap_down(h, i);
	}
}

/* ---- the parts ------------------------------------------------------------ */

enum { EV_MESSAGE = 1, EV_RECEIPT = 2 };

typedef struct event {
	int type, kind, state;
	int64_t conv, seq, user, device, members_version, ts;
	int64_t members[2];       /* a direct chat's; n 0 for a group */
	size_t n;
	char preview[PUSH_PREVIEW_MAX + 1];
} event_t;

enum { NOTE_IDLE = 0, NOTE_WAITING, NOTE_SENDING };

typedef struct note {
	struct note *hnext;
	int64_t user, conv;
	int kind, state;
	int again;                /* a message came while it was being sent */
	int connected;            /* the user had a connection at the burst's first message */
	int64_t seq, from, ts;    /* the newest message for it */
	int64_t delivered, read;  /* what the user's devices said */
	int64_t shown;            /* the seq its notification shows; 0: none shown */
	size_t heap_at;
	char preview[PUSH_PREVIEW_MAX + 1];
} note_t;

typedef struct job {
	struct job *next;
	int clear;
	int64_t user, conv, seq, from, ts, except_device;
	int kind;
	char preview[PUSH_PREVIEW_MAX + 1];
} job_t;

/* What a notification's sends mark in the store once the last of them is
 * done (store_push_mark): refs are its sends not yet done, and one held
 * by the job while it queues them. Under lock. */
typedef struct mark {
	int64_t conv, user, seq;
	unsigned refs;
} mark_t;

typedef struct send {
	struct send *next;
	mark_t *mark;             /* NULL for a clear */
	int provider, attempts, clear;
	int64_t user, target_id, device, conv;
	char *address, *topic, *p256dh, *auth;
	int sandbox;
	char *payload;
} send_t;

typedef struct provider {
	send_t *head, *tail;
	unsigned in_flight;
	double tokens;
	int64_t refilled_ms;
} provider_t;

typedef struct cached_members {
	int64_t conv, version;
	store_member_t *members;
	size_t n;
} cached_members_t;

struct push {
	push_config_t cfg;
	char contact[600];        /* cfg.contact points here */
	/* events: the real-time path's side */
	pthread_mutex_t in_lock;
	pthread_cond_t in_cond;   /* events queued, a note re-armed, or stopping */
	event_t *ring;
	size_t ring_head, ring_n;
	int rearmed;
	/* notes, jobs and sends */
	pthread_mutex_t lock;
	pthread_cond_t work;      /* a job or a send for the senders, or stopping */
	note_t *notes[NOTE_BUCKETS];
	size_t nnotes;
	heap_t waiting;           /* notes by due */
	job_t *job_head, *job_tail;
	provider_t prov[PUSH_PROVIDERS];
	heap_t delayed;           /* sends by when to try again */
	size_t nsends;            /* queued and delayed */
	unsigned rr;
	int stopping;
	push_counts_t counts;     /* under lock (events_dropped under in_lock) */
	/* threads */
	pthread_t scheduler;
	pthread_t *senders;
	unsigned nsenders;
	store_t *sched_store;
	cached_members_t cache[MEMBER_CACHE_SLOTS]; /* the scheduler's own */
	/* credentials, under cred_lock */
	pthread_mutex_t cred_lock;
	EVP_PKEY *apns_key;
	char apns_token[512];
	int64_t apns_token_at;    /* Unix s; 0: make one */
	fcm_account_t fcm;
	int has_fcm;
	char fcm_token[FCM_ACCESS_TOKEN_MAX];
	int64_t fcm_token_until;  /* Unix s; 0: fetch one */
};

const char *push_provider_name(int provider)
{
	static const char *const names[] = {"webpush", "apns", "fcm"};
	return provider >= 0 && provider < PUSH_PROVIDERS ? names[provider] : "unknown";
}

const char *push_fail_name(int reason)
{
	static const char *const names[] = {"unreachable", "rate_limited", "server_error", "auth",
	                                    "invalid_token", "rejected", "not_configured"};
	return reason >= 0 && reason < PUSH_FAIL_REASONS ? names[reason] : "unknown";
}

/* ---- the real-time path's side ------------------------------------------ */

/* At most PUSH_PREVIEW_MAX bytes of body, cut at a character's start. */
static void preview_of(const char *body, size_t len, char out[PUSH_PREVIEW_MAX + 1])
{
	size_t n = len < PUSH_PREVIEW_MAX ? len : PUSH_PREVIEW_MAX;

	if (n < len)
		while (n > 0 && ((unsigned char)body[n] & 0xC0) == 0x80)
			n--;
	memcpy(out, body, n);
	out[n] = 0;
}

static event_t *event_slot(push_t *p)
{
	event_t *e;

	if (p->ring_n == p->cfg.max_events) {
		p->counts.events_dropped++;
		return NULL;
	}
	e = &p->ring[(p->ring_head + p->ring_n++) % p->cfg.max_events];
	memset(e, 0, offsetof(event_t, preview) + 1);
	return e;
}

int push_message(push_t *p, int64_t conv, int kind, int64_t seq, int64_t from, const int64_t *members, size_t n,
                 int64_t members_version, const char *body, size_t len, int64_t ts)
{
	event_t *e;

	if (!p || (members && n > 2))
		return -1;
	pthread_mutex_lock(&p->in_lock);
	if ((e = event_slot(p)) != NULL) {
		e->type = EV_MESSAGE;
		e->kind = kind;
		e->conv = conv;
		e->seq = seq;
		e->user = from;
		e->members_version = members_version;
		e->ts = ts;
		if (members) {
			memcpy(e->members, members, n * sizeof *members);
			e->n = n;
		}
		preview_of(body ? body : "", body ? len : 0, e->preview);
		pthread_cond_signal(&p->in_cond);
	}
	pthread_mutex_unlock(&p->in_lock);
	return e ? 0 : -1;
}

int push_receipt(push_t *p, int64_t conv, int64_t user, int64_t device, int state, int64_t seq)
{
	event_t *e;

	if (!p)
		return -1;
	pthread_mutex_lock(&p->in_lock);
	if ((e = event_slot(p)) != NULL) {
		e->type = EV_RECEIPT;
		e->conv = conv;
		e->user = user;
		e->device = device;
		e->state = state;
		e->seq = seq;
		pthread_cond_signal(&p->in_cond);
	}
	pthread_mutex_unlock(&p->in_lock);
	return e ? 0 : -1;
}

/* ---- notes (under lock) ------------------------------------------------------ */

static note_t **note_slot(push_t *p, int64_t user, int64_t conv)
{
	uint64_t h = ((uint64_t)user * 0x9E3779B97F4A7C15ULL) ^ (uint64_t)conv;
	note_t **n = &p->notes[(h ^ (h >> 29)) % NOTE_BUCKETS];

	while (*n && ((*n)->user != user || (*n)->conv != conv))
		n = &(*n)->hnext;
	return n;
}

/* Frees an idle note that shows nothing: nothing more can happen to it. */
static void note_settle(push_t *p, note_t *n)
{
	note_t **s;

	if (n->state != NOTE_IDLE || n->shown)
		return;
	s = note_slot(p, n->user, n->conv);
	*s = n->hnext;
	p->nnotes--;
	free(n);
}

static int note_wait(push_t *p, note_t *n, int64_t due)
{
	n->state = NOTE_WAITING;
	if (heap_push(&p->waiting, due, n, &n->heap_at) < 0) {
		n->state = NOTE_IDLE;
		return -1;
	}
	return 0;
}

static void note_message(push_t *p, const event_t *e, int64_t user, int connected, int64_t now)
{
	note_t **s = note_slot(p, user, e->conv), *n = *s;

	if (!n) {
		if (p->nnotes >= p->cfg.max_notes || !(n = calloc(1, sizeof *n))) {
			p->counts.notes_dropped++;
			return;
		}
		n->user = user;
		n->conv = e->conv;
		n->heap_at = (size_t)-1;
		*s = n;
		p->nnotes++;
	}
	if (e->seq <= n->delivered || e->seq <= n->seq) /* already delivered here, or a repeat */
		return;
	n->kind = e->kind;
	n->seq = e->seq;
	n->from = e->user;
	n->ts = e->ts;
	memcpy(n->preview, e->preview, sizeof n->preview);
	if (n->state == NOTE_IDLE) {
		n->connected = connected;
		if (note_wait(p, n, now + (connected ? p->cfg.grace_ms : p->cfg.coalesce_ms)) < 0)
			note_settle(p, n);
	} else if (n->state == NOTE_SENDING) {
		n->again = 1;
	}
}

static void job_queue(push_t *p, job_t *j)
{
	j->next = NULL;
	if (p->job_tail)
		p->job_tail->next = j;
	else
		p->job_head = j;
	p->job_tail = j;
	pthread_cond_signal(&p->work);
}

static void note_receipt(push_t *p, const event_t *e)
{
	note_t *n = *note_slot(p, e->user, e->conv);

	if (!n)
		return;
	if (e->seq > n->delivered)
		n->delivered = e->seq;
	if (e->state == STORE_READ && e->seq > n->read)
		n->read = e->seq;
	if (n->state == NOTE_WAITING && n->delivered >= n->seq) {
		heap_remove(&p->waiting, n->heap_at);
		n->state = NOTE_IDLE;
		p->counts.suppressed++;
	}
	if (e->state == STORE_READ && n->shown && n->read >= n->shown) {
		job_t *j = calloc(1, sizeof *j);
		if (j) {
			j->clear = 1;
			j->user = n->user;
			j->conv = n->conv;
			j->seq = n->read;
			j->except_device = e->device;
			job_queue(p, j);
			p->counts.clears++;
		}
		n->shown = 0;
	}
	note_settle(p, n);
}

/* The notes whose time has come become jobs. */
static void notes_due(push_t *p, int64_t now)
{
	while (p->waiting.n && p->waiting.v[0].due <= now) {
		note_t *n = p->waiting.v[0].item;
		job_t *j;

		heap_remove(&p->waiting, 0);
		if (n->delivered >= n->seq || n->read >= n->seq || !(j = calloc(1, sizeof *j))) {
			n->state = NOTE_IDLE;
			p->counts.suppressed += n->delivered >= n->seq || n->read >= n->seq;
			note_settle(p, n);
			continue;
		}
		n->state = NOTE_SENDING;
		n->again = 0;
		j->user = n->user;
		j->conv = n->conv;
		j->kind = n->kind;
		j->seq = n->seq;
		j->from = n->from;
		j->ts = n->ts;
		memcpy(j->preview, n->preview, sizeof j->preview);
		job_queue(p, j);
		p->counts.notifications++;
	}
}

/* ---- the scheduler -------------------------------------------------------- */

/* The members of group conv who joined before seq (into out, malloc'd),
 * through the cache. */
static int group_recipients(push_t *p, const event_t *e, int64_t **out, size_t *n)
{
	cached_members_t *c = &p->cache[(uint64_t)e->conv % MEMBER_CACHE_SLOTS];
	size_t i;

	if (c->conv != e->conv || c->version < e->members_version || !c->members) {
		store_member_t *m;
		size_t k;
		int64_t version;

		if (store_member_list(p->sched_store, e->conv, &m, &k, &version) != STORE_OK)
			return -1;
		free(c->members);
		*c = (cached_members_t){e->conv, version, m, k};
	}
	if (!(*out = malloc((c->n ? c->n : 1) * sizeof **out)))
		return -1;
	for (i = 0, *n = 0; i < c->n; i++)
		if (c->members[i].joined_seq < e->seq)
			(*out)[(*n)++] = c->members[i].user_id;
	return 0;
}

static void schedule_message(push_t *p, const event_t *e, int64_t now)
{
	int64_t *to = NULL;
	const int64_t *users = e->members;
	size_t n = e->n, i;
	int *connected;

	if (e->kind == STORE_GROUP) {
		if (group_recipients(p, e, &to, &n) < 0) {
			log_warn("push: the members of group %lld could not be read; its message %lld is not pushed",
			         (long long)e->conv, (long long)e->seq);
			return;
		}
		users = to;
	}
	if (!(connected = malloc((n ? n : 1) * sizeof *connected))) {
		free(to);
		return;
	}
	for (i = 0; i < n; i++)
		connected[i] = users[i] != e->user &&
		               (!p->cfg.connected || p->cfg.connected(p->cfg.connected_ud, users[i]));
	pthread_mutex_lock(&p->lock);
	for (i = 0; i < n; i++)
		if (users[i] != e->user)
			note_message(p, e, users[i], connected[i], now);
	pthread_mutex_unlock(&p->lock);
	free(connected);
	free(to);
}

/* The notifications a push path that stopped still owed, as notes: each
 * waits as a new message's would (its devices may be connected and about
 * to deliver), and its sends check the store again before they go. */
static void recover(push_t *p)
{
	int64_t now = now_ms(), since = now - p->cfg.recover_ms - SNOWFLAKE_EPOCH_MS;
	store_push_pending_t *rows = NULL;
	size_t n = 0, i, taken = 0;

	if (since < 0)
		since = 0;
	if (store_push_pending(p->sched_store, since << 22, p->cfg.max_notes, &rows, &n) != STORE_OK) {
		log_warn("push: could not look for the notifications owed since the last stop; their devices catch "
		         "up when they connect");
		return;
	}
	for (i = 0; i < n; i++) {
		event_t e = {0};
		int connected;

		if (p->cfg.accept && !p->cfg.accept(p->cfg.accept_ud, rows[i].conv))
			continue;
		e.type = EV_MESSAGE;
		e.kind = rows[i].kind;
		e.conv = rows[i].conv;
		e.seq = rows[i].seq;
		e.user = rows[i].from;
		e.ts = rows[i].ts;
		preview_of(rows[i].body, rows[i].body_len, e.preview);
		connected = !p->cfg.connected || p->cfg.connected(p->cfg.connected_ud, rows[i].user);
		pthread_mutex_lock(&p->lock);
		note_message(p, &e, rows[i].user, connected, now);
		p->counts.recovered++;
		pthread_mutex_unlock(&p->lock);
		taken++;
	}
	store_push_pending_free(rows, n);
	if (taken)
		log_info("push: %zu notification%s owed since the last stop, scheduled again", taken,
		         taken == 1 ? "" : "s");
}

static void *scheduler_main(void *arg)
{
	push_t *p = arg;
	event_t *batch = malloc(256 * sizeof *batch);

	log_set_thread_name("push");
	if (!batch) {
		log_error("push: out of memory; the push path stops");
		return NULL;
	}
	if (p->cfg.recover_ms > 0)
		recover(p);
	for (;;) {
		size_t k = 0, i;
		int64_t now = now_ms(), next;

		pthread_mutex_lock(&p->lock);
		notes_due(p, now);
		next = p->waiting.n ? p->waiting.v[0].due : now + 1000;
		pthread_mutex_unlock(&p->lock);

		pthread_mutex_lock(&p->in_lock);
		if (!p->ring_n && !p->rearmed && !p->stopping && next > now) {
			struct timespec ts = {(time_t)(next / 1000), (long)(next % 1000) * 1000000};
			pthread_cond_timedwait(&p->in_cond, &p->in_lock, &ts);
		}
		p->rearmed = 0;
		if (p->stopping) {
			pthread_mutex_unlock(&p->in_lock);
			break;
		}
		while (p->ring_n && k < 256) {
			batch[k++] = p->ring[p->ring_head];
			p->ring_head = (p->ring_head + 1) % p->cfg.max_events;
			p->ring_n--;
		}
		pthread_mutex_unlock(&p->in_lock);

		now = now_ms();
		for (i = 0; i < k; i++) {
			if (batch[i].type == EV_MESSAGE) {
				schedule_message(p, &batch[i], now);
			} else {
				pthread_mutex_lock(&p->lock);
				note_receipt(p, &batch[i]);
				pthread_mutex_unlock(&p->lock);
			}
		}
	}
	free(batch);
	return NULL;
}

/* ---- building sends (a sender, off the lock) ---------------------------------- */

static void send_free(send_t *s)
{
	if (!s)
		return;
	/* Only at shutdown does a send still hold its mark: the push was not
	 * made, and a restart recovers it. */
	if (s->mark && --s->mark->refs == 0)
		free(s->mark);
	free(s->address);
	free(s->topic);
	free(s->p256dh);
	free(s->auth);
	free(s->payload);
	free(s);
}

static int provider_of(int platform)
{
	return platform == STORE_PUSH_APNS ? PUSH_APNS : platform == STORE_PUSH_FCM ? PUSH_FCM : PUSH_WEBPUSH;
}

static int configured(push_t *p, int provider)
{
	return provider == PUSH_APNS ? p->apns_key != NULL : provider == PUSH_FCM ? p->has_fcm : p->cfg.vapid_key != NULL;
}

/* What a notification shows, as each provider carries it. */
typedef struct shown {
	const job_t *j;
	const char *title, *body;
	int64_t badge;
} shown_t;

static char *payload_for(int provider, const shown_t *w, const store_push_target_t *t)
{
	const job_t *j = w->j;
	char collapse[32];
	json_t *o;
	char *text;

	snprintf(collapse, sizeof collapse, "c%lld", (long long)j->conv);
	if (provider == PUSH_WEBPUSH) {
		/* The service worker's: it shows (or closes) the notification
		 * tagged collapse. */
		o = j->clear ? json_pack("{s:s, s:I, s:I, s:s}", "type", "clear", "conv", (json_int_t)j->conv, "seq",
		                         (json_int_t)j->seq, "tag", collapse)
		             : json_pack("{s:s, s:I, s:I, s:s, s:s, s:I, s:s}", "type", "message", "conv",
		                         (json_int_t)j->conv, "seq", (json_int_t)j->seq, "title", w->title, "body", w->body,
		                         "badge", (json_int_t)w->badge, "tag", collapse);
	} else if (provider == PUSH_APNS) {
		o = j->clear ? json_pack("{s:{s:i, s:I}, s:s, s:I, s:I}", "aps", "content-available", 1, "badge",
		                         (json_int_t)w->badge, "type", "clear", "conv", (json_int_t)j->conv, "seq",
		                         (json_int_t)j->seq)
		             : json_pack("{s:{s:{s:s, s:s}, s:I, s:s, s:s}, s:s, s:I, s:I}", "aps", "alert", "title",
		                         w->title, "body", w->body, "badge", (json_int_t)w->badge, "sound", "default",
		                         "thread-id", collapse, "type", "message", "conv", (json_int_t)j->conv, "seq",
		                         (json_int_t)j->seq);
	} else {
		/* FCM: data values are strings; a message's notification is
		 * shown by the system, tagged so that the next one replaces it. */
		char conv[24], seq[24], badge[24];
		snprintf(conv, sizeof conv, "%lld", (long long)j->conv);
		snprintf(seq, sizeof seq, "%lld", (long long)j->seq);
		snprintf(badge, sizeof badge, "%lld", (long long)w->badge);
		o = j->clear ? json_pack("{s:{s:s, s:{s:s, s:s, s:s}, s:{s:s}}}", "message", "token", t->address, "data",
		                         "type", "clear", "conv", conv, "seq", seq, "android", "priority", "NORMAL")
		             : json_pack("{s:{s:s, s:{s:s, s:s, s:s, s:s}, s:{s:s, s:s}, s:{s:s, s:s, s:{s:s, s:I}}}}",
		                         "message", "token", t->address, "data", "type", "message", "conv", conv, "seq",
		                         seq, "badge", badge, "notification", "title", w->title, "body", w->body,
		                         "android", "collapse_key", collapse, "priority", "HIGH", "notification", "tag",
		                         collapse, "notification_count", (json_int_t)w->badge);
	}
	if (!o)
		return NULL;
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return text;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : strdup("");
}

/* Queues the sends of w's job to targets t[0..n): how many were queued
 * (not those of providers without credentials, nor those the full queue
 * refused). */
static size_t queue_sends(push_t *p, const shown_t *w, const store_push_target_t *t, size_t n, mark_t *m)
{
	size_t i, queued = 0;

	for (i = 0; i < n; i++) {
		int provider = provider_of(t[i].platform);
		send_t *s;
		provider_t *pr;

		if (!configured(p, provider)) {
			pthread_mutex_lock(&p->lock);
			p->counts.provider[provider].failures[PUSH_FAIL_NOT_CONFIGURED]++;
			pthread_mutex_unlock(&p->lock);
			continue;
		}
		if (!(s = calloc(1, sizeof *s)) || !(s->payload = payload_for(provider, w, &t[i])) ||
		    !(s->address = dup_or_null(t[i].address)) || !(s->topic = dup_or_null(t[i].topic)) ||
		    !(s->p256dh = dup_or_null(t[i].p256dh)) || !(s->auth = dup_or_null(t[i].auth))) {
			send_free(s);
			continue;
		}
		s->provider = provider;
		s->clear = w->j->clear;
		s->user = t[i].user;
		s->target_id = t[i].id;
		s->device = t[i].device;
		s->conv = w->j->conv;
		s->sandbox = t[i].sandbox;
		pthread_mutex_lock(&p->lock);
		if (p->nsends >= p->cfg.max_sends) {
			p->counts.sends_dropped++;
			pthread_mutex_unlock(&p->lock);
			send_free(s);
			continue;
		}
		pr = &p->prov[provider];
		if (pr->tail)
			pr->tail->next = s;
		else
			pr->head = s;
		pr->tail = s;
		if ((s->mark = m) != NULL)
			m->refs++;
		p->nsends++;
		queued++;
		pthread_cond_signal(&p->work);
		pthread_mutex_unlock(&p->lock);
	}
	return queued;
}

/* Moves the targets of the user's devices used lately, but except's, to
 * the front of t; *n becomes their number (the rest stay behind them, to
 * be freed with them). */
static void usable_targets(push_t *p, store_t *st, int64_t user, int64_t except, store_push_target_t *t, size_t *n)
{
	store_device_t *d = NULL;
	size_t nd = 0, i, k, keep = 0;
	int have_devices = 0;

	if (p->cfg.device_idle_ms > 0 &&
	    store_devices(st, user, now_ms() - p->cfg.device_idle_ms, &d, &nd) == STORE_OK)
		have_devices = 1;
	for (i = 0; i < *n; i++) {
		int ok = t[i].device != except || !except;
		if (ok && have_devices) {
			for (k = 0, ok = 0; k < nd && !ok; k++)
				ok = d[k].id == t[i].device;
		}
		if (ok) {
			store_push_target_t tmp = t[keep];
			t[keep++] = t[i];
			t[i] = tmp;
		}
	}
	free(d);
	*n = keep;
}

/* Finishes note (user, conv) once its job is handled: shown seq shows
 * now (0: nothing was sent), and a burst that came meanwhile waits its
 * turn. */
static void note_done(push_t *p, const job_t *j, int64_t shown)
{
	note_t *n;
	int rearmed = 0;

	pthread_mutex_lock(&p->lock);
	if ((n = *note_slot(p, j->user, j->conv)) != NULL && n->state == NOTE_SENDING) {
		if (shown)
			n->shown = shown;
		n->state = NOTE_IDLE;
		if (n->again && n->seq > n->delivered && n->seq > n->read) {
			rearmed = note_wait(p, n, now_ms() + p->cfg.coalesce_ms) == 0;
		}
		n->again = 0;
		note_settle(p, n);
	}
	pthread_mutex_unlock(&p->lock);
	if (rearmed) {
		pthread_mutex_lock(&p->in_lock);
		p->rearmed = 1;
		pthread_cond_signal(&p->in_cond);
		pthread_mutex_unlock(&p->in_lock);
	}
}

/* The last send of a notification is done (sent, or failed for good):
 * a push path that restarts will neither repeat nor recover it. */
static void mark_pushed(store_t *st, const mark_t *m)
{
	int r = store_push_mark(st, m->conv, m->user, m->seq);

	if (r != STORE_OK && r != STORE_FORBIDDEN) /* forbidden: the user left the group meanwhile */
		log_warn("push: could not record the push of conversation %lld seq %lld to user %lld; a restart may "
		         "send it again", (long long)m->conv, (long long)m->seq, (long long)m->user);
}

static void run_job(push_t *p, store_t *st, job_t *j)
{
	store_push_target_t *t = NULL;
	size_t n = 0, all = 0;
	store_conv_t c = {0};
	char from[STORE_USERNAME_MAX + 1] = "", body[PUSH_PREVIEW_MAX + STORE_USERNAME_MAX + 8];
	shown_t w = {j, "", j->preview, 0};
	store_settings_t settings = {0};
	mark_t *m = NULL;
	int64_t shown = 0;
	size_t queued;
	int last;

	if (store_push_targets(st, j->user, &t, &n) != STORE_OK) {
		log_warn("push: the push targets of user %lld could not be read; conversation %lld not pushed",
		         (long long)j->user, (long long)j->conv);
		goto done;
	}
	all = n;
	usable_targets(p, st, j->user, j->clear ? j->except_device : 0, t, &n);
	if (!n) {
		if (!j->clear) {
			pthread_mutex_lock(&p->lock);
			p->counts.no_targets++;
			pthread_mutex_unlock(&p->lock);
		}
		goto done;
	}
	if (store_unread_total(st, j->user, BADGE_CAP, &w.badge) != STORE_OK)
		w.badge = 0;
	if (!j->clear) {
		if (store_conv_get(st, j->conv, j->user, &c) != STORE_OK) /* left the group meanwhile */
			goto done;
		if (c.muted) {
			pthread_mutex_lock(&p->lock);
			p->counts.muted++;
			pthread_mutex_unlock(&p->lock);
			goto done;
		}
		if (c.read_seq >= j->seq || c.delivered_seq >= j->seq) {
			/* Read or delivered meanwhile, on a device of any node. */
			pthread_mutex_lock(&p->lock);
			p->counts.suppressed++;
			pthread_mutex_unlock(&p->lock);
			goto done;
		}
		if (c.pushed_seq >= j->seq) {
			/* Pushed already: by this path before it restarted (the
			 * event came again), or by another. */
			pthread_mutex_lock(&p->lock);
			p->counts.repeats++;
			pthread_mutex_unlock(&p->lock);
			goto done;
		}
		if (store_settings_get(st, j->user, &settings) != STORE_OK)
			settings.push_previews = 0; /* unsure: the safe side */
		if (store_user_by_id(st, j->from, from) != STORE_OK)
			snprintf(from, sizeof from, "someone");
		if (!settings.push_previews) {
			/* Neither who nor what: a lock screen shows only that
			 * something came. */
			w.title = "Parley";
			w.body = "New message";
		} else if (c.kind == STORE_GROUP) {
			w.title = c.title && c.title[0] ? c.title : "a group";
			snprintf(body, sizeof body, "%s: %s", from, j->preview);
			w.body = body;
		} else {
			w.title = from;
		}
	}
	if (!j->clear && (m = calloc(1, sizeof *m)) != NULL)
		*m = (mark_t){j->conv, j->user, j->seq, 1};
	queued = queue_sends(p, &w, t, n, m);
	if (queued > 0 && !j->clear)
		shown = j->seq;
	if (m) {
		pthread_mutex_lock(&p->lock);
		last = --m->refs == 0;
		pthread_mutex_unlock(&p->lock);
		if (last) {
			if (queued)
				mark_pushed(st, m);
			free(m);
		}
	}
done:
	store_conv_clear(&c);
	store_push_targets_free(t, all);
	if (!j->clear)
		note_done(p, j, shown);
	free(j);
}

/* ---- sending (a sender, off the lock) -------------------------------------------- */

enum { OUT_SENT, OUT_INVALID, OUT_RETRY, OUT_FAILED };

typedef struct outcome {
	int kind;
	int reason;               /* PUSH_FAIL_* when not sent */
	int64_t retry_after_ms;
	double seconds;
	int answered;
	char why[300];
} outcome_t;

static int b64url_decode(const char *s, unsigned char *out, size_t want)
{
	size_t n;

	if (sodium_base642bin(out, want, s, strlen(s), NULL, &n, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0 &&
	    n == want)
		return 0;
	if (sodium_base642bin(out, want, s, strlen(s), NULL, &n, NULL, sodium_base64_VARIANT_URLSAFE) == 0 && n == want)
		return 0;
	return -1;
}

/* What an answer said, for the log: the provider's reason, or, when it
 * gave none (an answer not in its format: a proxy's page), the start of
 * the body. */
static void answer_why(outcome_t *o, long status, const char *reason, const pushhttp_result_t *r)
{
	if (reason[0])
		snprintf(o->why, sizeof o->why, "%ld %s", status, reason);
	else
		snprintf(o->why, sizeof o->why, "%ld, no reason given; the answer began \"%.120s\"", status, r->body);
}

/* The status classes every provider shares. */
static void classify_status(long status, int64_t retry_after_ms, outcome_t *o)
{
	if (status == 429) {
		o->kind = OUT_RETRY;
		o->reason = PUSH_FAIL_RATE_LIMITED;
		o->retry_after_ms = retry_after_ms;
	} else if (status >= 500) {
		o->kind = OUT_RETRY;
		o->reason = PUSH_FAIL_SERVER;
		o->retry_after_ms = retry_after_ms;
	} else {
		o->kind = OUT_FAILED;
		o->reason = PUSH_FAIL_REJECTED;
	}
}

static void send_webpush(push_t *p, CURL *curl, const send_t *s, outcome_t *o)
{
	unsigned char point[WEBPUSH_POINT_LEN], secret[WEBPUSH_AUTH_LEN], body[WEBPUSH_BODY_MAX];
	char auth[WEBPUSH_AUTH_HEADER_MAX], topic[32];
	size_t len;
	webpush_request_t rq = {0};
	webpush_result_t r;

	if (b64url_decode(s->p256dh, point, sizeof point) < 0 || b64url_decode(s->auth, secret, sizeof secret) < 0 ||
	    webpush_encrypt(point, secret, s->payload, strlen(s->payload), body, &len) < 0 ||
	    webpush_vapid_authorization(p->cfg.vapid_key, p->cfg.vapid_public, s->address, p->cfg.contact,
	                                now_ms() / 1000, auth, sizeof auth) < 0) {
		o->kind = OUT_FAILED;
		o->reason = PUSH_FAIL_REJECTED;
		snprintf(o->why, sizeof o->why, "the push could not be encrypted or signed for this subscription");
		return;
	}
	snprintf(topic, sizeof topic, "c%lld", (long long)s->conv);
	rq.endpoint = s->address;
	rq.body = body;
	rq.len = len;
	rq.authorization = auth;
	rq.ttl_s = s->clear ? 3600 : WEBPUSH_TTL_S;
	rq.urgency = s->clear ? WEBPUSH_NORMAL : WEBPUSH_HIGH;
	rq.topic = topic;
	rq.allow_local = p->cfg.allow_local;
	rq.timeout_ms = p->cfg.timeout_ms;
	if (webpush_send(curl, &rq, &r) < 0) {
		o->kind = OUT_RETRY;
		o->reason = PUSH_FAIL_UNREACHABLE;
		snprintf(o->why, sizeof o->why, "%s", r.reason);
		return;
	}
	o->answered = 1;
	snprintf(o->why, sizeof o->why, "%ld %.200s", r.status, r.reason);
	if (r.status >= 200 && r.status < 300)
		o->kind = OUT_SENT;
	else if (r.status == 404 || r.status == 410)
		o->kind = OUT_INVALID, o->reason = PUSH_FAIL_INVALID_TOKEN;
	else if (r.status == 401 || r.status == 403)
		o->kind = OUT_FAILED, o->reason = PUSH_FAIL_AUTH;
	else
		classify_status(r.status, r.retry_after_ms, o);
}

/* The APNs provider token, made again when it is older than
 * APNS_TOKEN_REFRESH_S or was refused (stale set). */
static int apns_token(push_t *p, int stale, char *out, size_t cap)
{
	int64_t now = now_ms() / 1000;
	int rc = 0;

	pthread_mutex_lock(&p->cred_lock);
	if (stale || !p->apns_token_at || now - p->apns_token_at >= APNS_TOKEN_REFRESH_S) {
		if (apns_provider_token(p->apns_key, p->cfg.apns_key_id, p->cfg.apns_team_id, now, p->apns_token,
		                        sizeof p->apns_token) == 0)
			p->apns_token_at = now;
		else
			rc = -1;
	}
	snprintf(out, cap, "%s", p->apns_token);
	pthread_mutex_unlock(&p->cred_lock);
	return rc;
}

static void send_apns(push_t *p, CURL *curl, const send_t *s, outcome_t *o)
{
	char token[512], reason[128], collapse[32];
	apns_request_t rq = {0};
	pushhttp_result_t r;

	if (apns_token(p, 0, token, sizeof token) < 0) {
		o->kind = OUT_FAILED;
		o->reason = PUSH_FAIL_AUTH;
		snprintf(o->why, sizeof o->why, "the provider token could not be signed");
		return;
	}
	snprintf(collapse, sizeof collapse, "c%lld", (long long)s->conv);
	rq.base_url = s->sandbox ? p->cfg.apns_sandbox_url : p->cfg.apns_url;
	rq.device_token = s->address;
	rq.topic = s->topic;
	rq.provider_token = token;
	rq.push_type = s->clear ? "background" : "alert";
	rq.priority = s->clear ? 5 : 10;
	rq.collapse_id = s->clear ? NULL : collapse;
	rq.expiration_s = now_ms() / 1000 + (s->clear ? 3600 : APNS_EXPIRY_S);
	rq.payload = s->payload;
	rq.timeout_ms = p->cfg.timeout_ms;
	if (apns_send(curl, &rq, &r, reason, sizeof reason) < 0) {
		o->kind = OUT_RETRY;
		o->reason = PUSH_FAIL_UNREACHABLE;
		snprintf(o->why, sizeof o->why, "%s", r.reason);
		return;
	}
	o->answered = 1;
	o->seconds = r.seconds;
	answer_why(o, r.status, reason, &r);
	if (r.status == 200)
		o->kind = OUT_SENT;
	else if (r.status == 410 || !strcmp(reason, "BadDeviceToken") || !strcmp(reason, "DeviceTokenNotForTopic") ||
	         !strcmp(reason, "Unregistered"))
		o->kind = OUT_INVALID, o->reason = PUSH_FAIL_INVALID_TOKEN;
	else if (r.status == 403 && (!strcmp(reason, "ExpiredProviderToken") || !strcmp(reason, "InvalidProviderToken"))) {
		/* A new token, and the send again. */
		apns_token(p, 1, token, sizeof token);
		o->kind = OUT_RETRY, o->reason = PUSH_FAIL_AUTH;
	} else if (r.status == 403)
		o->kind = OUT_FAILED, o->reason = PUSH_FAIL_AUTH;
	else
		classify_status(r.status, r.retry_after_ms, o);
}

/* The FCM access token, fetched again when it is about to expire or was
 * refused (stale set). */
static int fcm_token(push_t *p, CURL *curl, int stale, char *out, size_t cap, char *err, size_t errlen)
{
	int64_t now = now_ms() / 1000, life;
	int rc = 0;

	pthread_mutex_lock(&p->cred_lock);
	if (stale)
		p->fcm_token_until = 0;
	if (p->fcm_token_until - FCM_TOKEN_SLACK_S <= now) {
		if (fcm_access_token(curl, &p->fcm, now, p->fcm_token, sizeof p->fcm_token, &life, err, errlen) == 0)
			p->fcm_token_until = now + life;
		else
			rc = -1;
	}
	snprintf(out, cap, "%s", p->fcm_token);
	pthread_mutex_unlock(&p->cred_lock);
	return rc;
}

static void send_fcm(push_t *p, CURL *curl, const send_t *s, outcome_t *o)
{
	char token[FCM_ACCESS_TOKEN_MAX], code[64], err[300];
	pushhttp_result_t r;

	if (fcm_token(p, curl, 0, token, sizeof token, err, sizeof err) < 0) {
		o->kind = OUT_RETRY;
		o->reason = PUSH_FAIL_AUTH;
		snprintf(o->why, sizeof o->why, "no access token: %.270s", err);
		return;
	}
	if (fcm_send(curl, p->cfg.fcm_url, &p->fcm, token, s->payload, &r, code, sizeof code) < 0) {
		o->kind = OUT_RETRY;
		o->reason = PUSH_FAIL_UNREACHABLE;
		snprintf(o->why, sizeof o->why, "%s", r.reason);
		return;
	}
	o->answered = 1;
	o->seconds = r.seconds;
	answer_why(o, r.status, code, &r);
	if (r.status == 200)
		o->kind = OUT_SENT;
	else if (r.status == 404 || !strcmp(code, "UNREGISTERED") || !strcmp(code, "SENDER_ID_MISMATCH"))
		o->kind = OUT_INVALID, o->reason = PUSH_FAIL_INVALID_TOKEN;
	else if (r.status == 401) {
		fcm_token(p, curl, 1, token, sizeof token, err, sizeof err);
		o->kind = OUT_RETRY, o->reason = PUSH_FAIL_AUTH;
	} else if (r.status == 403)
		o->kind = OUT_FAILED, o->reason = PUSH_FAIL_AUTH;
	else
		classify_status(r.status, r.retry_after_ms, o);
}

/* When a send that failed `attempts` times goes again: the provider's
 * Retry-After, else an exponential backoff with jitter (half to all of
 * BACKOFF_BASE_MS doubling per attempt, at most BACKOFF_MAX_MS). */
static int64_t retry_delay(int attempts, int64_t retry_after_ms)
{
	int64_t d = BACKOFF_BASE_MS;
	int i;

	if (retry_after_ms > 0)
		return retry_after_ms;
	for (i = 1; i < attempts && d < BACKOFF_MAX_MS; i++)
		d *= 2;
	if (d > BACKOFF_MAX_MS)
		d = BACKOFF_MAX_MS;
	return d / 2 + (int64_t)randombytes_uniform((uint32_t)(d / 2 + 1));
}

static void sent(push_t *p, store_t *st, CURL *curl, send_t *s)
{
	outcome_t o = {0};
	provider_t *pr = &p->prov[s->provider];
	int64_t started = now_ms();
	mark_t *done_mark = NULL;

	if (s->provider == PUSH_WEBPUSH)
		send_webpush(p, curl, s, &o);
	else if (s->provider == PUSH_APNS)
		send_apns(p, curl, s, &o);
	else
		send_fcm(p, curl, s, &o);
	if (!o.seconds)
		o.seconds = (double)(now_ms() - started) / 1000.0;
	s->attempts++;
	if (o.kind == OUT_INVALID) {
		int r = store_push_target_delete(st, s->user, s->target_id);
		log_info("push: %s target %lld of user %lld is gone (%s): %s", push_provider_name(s->provider),
		         (long long)s->target_id, (long long)s->user, o.why, r == STORE_OK ? "removed" : "not removed");
	} else if (o.kind == OUT_FAILED) {
		log_warn("push: %s refused a push to target %lld of user %lld: %s (%s); not tried again",
		         push_provider_name(s->provider), (long long)s->target_id, (long long)s->user, o.why,
		         push_fail_name(o.reason));
	} else if (o.kind == OUT_RETRY && s->attempts >= p->cfg.max_attempts) {
		log_warn("push: %s push to target %lld of user %lld failed %d times (last: %s, %s); dead-lettered",
		         push_provider_name(s->provider), (long long)s->target_id, (long long)s->user, s->attempts, o.why,
		         push_fail_name(o.reason));
	} else if (o.kind == OUT_RETRY) {
		log_info("push: %s push to target %lld of user %lld failed (%s, %s); attempt %d of %d follows",
		         push_provider_name(s->provider), (long long)s->target_id, (long long)s->user, o.why,
		         push_fail_name(o.reason), s->attempts + 1, p->cfg.max_attempts);
	}

	pthread_mutex_lock(&p->lock);
	pr->in_flight--;
	if (o.answered) {
		p->counts.provider[s->provider].latency_sum += o.seconds;
		p->counts.provider[s->provider].latency_count++;
	}
	if (o.kind == OUT_SENT) {
		p->counts.provider[s->provider].sent++;
	} else {
		p->counts.provider[s->provider].failures[o.reason]++;
		if (o.kind == OUT_INVALID)
			p->counts.provider[s->provider].removed++;
		else if (o.kind == OUT_FAILED || s->attempts >= p->cfg.max_attempts)
			p->counts.provider[s->provider].dead_letter++;
	}
	if (o.kind == OUT_RETRY && s->attempts < p->cfg.max_attempts && !p->stopping &&
	    heap_push(&p->delayed, now_ms() + retry_delay(s->attempts, o.retry_after_ms), s, NULL) == 0) {
		p->counts.provider[s->provider].retries++;
		s = NULL; /* kept */
	} else {
		p->nsends--;
		if (s->mark && --s->mark->refs == 0)
			done_mark = s->mark;
		s->mark = NULL;
	}
	pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->lock);
	send_free(s);
	if (done_mark) {
		mark_pushed(st, done_mark);
		free(done_mark);
	}
}

/* ---- the senders ---------------------------------------------------------------- */

typedef struct sender_arg {
	push_t *p;
	unsigned index;
} sender_arg_t;

/* A send a sender may make now: a provider with a send queued, room in
 * its concurrency and a token in its rate. *wait_ms lowers to when a
 * token comes. Under lock. */
static send_t *take_send(push_t *p, int64_t now, int64_t *wait_ms)
{
	unsigned k;

	for (k = 0; k < PUSH_PROVIDERS; k++) {
		unsigned i = (p->rr + k) % PUSH_PROVIDERS;
		provider_t *pr = &p->prov[i];
		send_t *s;

		if (!pr->head || pr->in_flight >= p->cfg.provider_concurrency)
			continue;
		if (p->cfg.provider_rate > 0) {
			double burst = p->cfg.provider_rate < 1 ? 1 : p->cfg.provider_rate;
			pr->tokens += (double)(now - pr->refilled_ms) * p->cfg.provider_rate / 1000.0;
			if (pr->tokens > burst)
				pr->tokens = burst;
			pr->refilled_ms = now;
			if (pr->tokens < 1) {
				int64_t w = (int64_t)((1 - pr->tokens) * 1000.0 / p->cfg.provider_rate) + 1;
				if (w < *wait_ms)
					*wait_ms = w;
				continue;
			}
			pr->tokens -= 1;
		}
		s = pr->head;
		if (!(pr->head = s->next))
			pr->tail = NULL;
		s->next = NULL;
		pr->in_flight++;
		p->rr = i + 1;
		return s;
	}
	return NULL;
}

static void *sender_main(void *arg)
{
	sender_arg_t *a = arg;
	push_t *p = a->p;
	store_t *st;
	CURL *curl;
	char name[16];

	snprintf(name, sizeof name, "push-send-%u", a->index);
	log_set_thread_name(name);
	free(a);
	st = store_open(p->cfg.store_at);
	curl = curl_easy_init();
	if (!st || !curl) {
		log_error("push: a sender could not open the store or libcurl; it stops");
		store_close(st);
		if (curl)
			curl_easy_cleanup(curl);
		return NULL;
	}
	pthread_mutex_lock(&p->lock);
	while (!p->stopping) {
		int64_t now = now_ms(), wait_ms = 1000;
		job_t *j;
		send_t *s;

		while (p->delayed.n && p->delayed.v[0].due <= now) {
			provider_t *pr;
			s = p->delayed.v[0].item;
			heap_remove(&p->delayed, 0);
			pr = &p->prov[s->provider];
			if (pr->tail)
				pr->tail->next = s;
			else
				pr->head = s;
			pr->tail = s;
		}
		if ((j = p->job_head) != NULL) {
			if (!(p->job_head = j->next))
				p->job_tail = NULL;
			pthread_mutex_unlock(&p->lock);
			run_job(p, st, j);
			pthread_mutex_lock(&p->lock);
			continue;
		}
		if ((s = take_send(p, now, &wait_ms)) != NULL) {
			pthread_mutex_unlock(&p->lock);
			sent(p, st, curl, s);
			pthread_mutex_lock(&p->lock);
			continue;
		}
		if (p->delayed.n && p->delayed.v[0].due - now < wait_ms)
			wait_ms = p->delayed.v[0].due - now;
		{
			int64_t until = now_ms() + (wait_ms > 0 ? wait_ms : 1);
			struct timespec ts = {(time_t)(until / 1000), (long)(until % 1000) * 1000000};
			pthread_cond_timedwait(&p->work, &p->lock, &ts);
		}
	}
	pthread_mutex_unlock(&p->lock);
	curl_easy_cleanup(curl);
	store_close(st);
	return NULL;
}

/* ---- life ---------------------------------------------------------------------- */

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && n < 1 << 20 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1)) != NULL) {
		if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		} else {
			buf[n] = 0;
			*len = (size_t)n;
		}
	}
	fclose(f);
	return buf;
}

static int load_credentials(push_t *p)
{
	const push_config_t *c = &p->cfg;
	char *text, err[256];
	size_t len = 0;

	if (c->apns_key_file && c->apns_key_file[0]) {
		if (!(text = read_file(c->apns_key_file, &len))) {
			log_error("push: --apns-key-file %s: %s", c->apns_key_file, strerror(errno ? errno : EIO));
			return -1;
		}
		p->apns_key = apns_key_from_p8(text, len);
		sodium_memzero(text, len);
		free(text);
		if (!p->apns_key) {
			log_error("push: --apns-key-file %s is not a P-256 private key (an APNs .p8 file)", c->apns_key_file);
			return -1;
		}
		if (apns_provider_token(p->apns_key, c->apns_key_id, c->apns_team_id, now_ms() / 1000, p->apns_token,
		                        sizeof p->apns_token) < 0) {
			log_error("push: --apns-key-id and --apns-team-id must be 10 of [A-Z0-9] each (Apple's ids)");
			return -1;
		}
		p->apns_token_at = now_ms() / 1000;
		log_info("push: APNs on, key %s of team %s, at %s (sandbox %s)", c->apns_key_id, c->apns_team_id,
		         c->apns_url, c->apns_sandbox_url);
	}
	if (c->fcm_account_file && c->fcm_account_file[0]) {
		if (!(text = read_file(c->fcm_account_file, &len))) {
			log_error("push: --fcm-service-account %s: %s", c->fcm_account_file, strerror(errno ? errno : EIO));
			return -1;
		}
		if (fcm_account_parse(text, len, &p->fcm, err, sizeof err) < 0) {
			sodium_memzero(text, len);
			free(text);
			log_error("push: --fcm-service-account %s: %s", c->fcm_account_file, err);
			return -1;
		}
		sodium_memzero(text, len);
		free(text);
		p->has_fcm = 1;
		log_info("push: FCM on, project %s as %s, at %s", p->fcm.project_id, p->fcm.client_email, c->fcm_url);
	}
	return 0;
}

push_t *push_new(const push_config_t *cfg)
{
	push_t *p = calloc(1, sizeof *p);
	unsigned i;

	if (!p)
		return NULL;
	p->cfg = *cfg;
	if (!p->cfg.senders)
		p->cfg.senders = 4;
	if (!p->cfg.provider_concurrency)
		p->cfg.provider_concurrency = 2;
	if (!p->cfg.max_events)
		p->cfg.max_events = 16384;
	if (!p->cfg.max_notes)
		p->cfg.max_notes = 100000;
	if (!p->cfg.max_sends)
		p->cfg.max_sends = 65536;
	if (p->cfg.max_attempts <= 0)
		p->cfg.max_attempts = 6;
	if (!p->cfg.apns_url)
		p->cfg.apns_url = APNS_PRODUCTION_URL;
	if (!p->cfg.apns_sandbox_url)
		p->cfg.apns_sandbox_url = APNS_SANDBOX_URL;
	if (!p->cfg.fcm_url)
		p->cfg.fcm_url = FCM_URL;
	snprintf(p->contact, sizeof p->contact, "%s", cfg->contact ? cfg->contact : "mailto:postmaster@localhost");
	p->cfg.contact = p->contact;
	pthread_mutex_init(&p->in_lock, NULL);
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->cred_lock, NULL);
	{
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_REALTIME);
		pthread_cond_init(&p->in_cond, &ca);
		pthread_cond_init(&p->work, &ca);
		pthread_condattr_destroy(&ca);
	}
	if (load_credentials(p) < 0)
		goto fail;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || sodium_init() < 0) {
		log_error("push: libcurl or libsodium would not start");
		goto fail;
	}
	if (!(p->ring = calloc(p->cfg.max_events, sizeof *p->ring)) ||
	    !(p->senders = calloc(p->cfg.senders, sizeof *p->senders)) ||
	    !(p->sched_store = store_open(p->cfg.store_at))) {
		log_error("push: out of memory, or the store would not open");
		goto fail;
	}
	for (i = 0; i < PUSH_PROVIDERS; i++)
		p->prov[i].refilled_ms = now_ms();
	if (pthread_create(&p->scheduler, NULL, scheduler_main, p) != 0)
		goto fail;
	for (i = 0; i < p->cfg.senders; i++) {
		sender_arg_t *a = malloc(sizeof *a);
		if (!a)
			break;
		*a = (sender_arg_t){p, i};
		if (pthread_create(&p->senders[i], NULL, sender_main, a) != 0) {
			free(a);
			break;
		}
		p->nsenders++;
	}
	if (!p->nsenders) {
		push_free(p);
		return NULL;
	}
	log_info("push: %u senders; a connected user's devices have %d ms to deliver, an unconnected user's "
	         "burst %d ms to gather",
	         p->nsenders, p->cfg.grace_ms, p->cfg.coalesce_ms);
	return p;
fail:
	p->nsenders = 0;
	store_close(p->sched_store);
	EVP_PKEY_free(p->apns_key);
	if (p->has_fcm)
		fcm_account_clear(&p->fcm);
	free(p->ring);
	free(p->senders);
	free(p);
	return NULL;
}

void push_free(push_t *p)
{
	size_t i, dropped = 0;
	job_t *j;

	if (!p)
		return;
	pthread_mutex_lock(&p->in_lock);
	p->stopping = 1;
	pthread_cond_broadcast(&p->in_cond);
	pthread_mutex_unlock(&p->in_lock);
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->scheduler, NULL);
	for (i = 0; i < p->nsenders; i++)
		pthread_join(p->senders[i], NULL);
	while ((j = p->job_head) != NULL) {
		p->job_head = j->next;
		free(j);
		dropped++;
	}
	for (i = 0; i < PUSH_PROVIDERS; i++)
		while (p->prov[i].head) {
			send_t *s = p->prov[i].head;
			p->prov[i].head = s->next;
			send_free(s);
			dropped++;
		}
	for (i = 0; i < p->delayed.n; i++, dropped++)
		send_free(p->delayed.v[i].item);
	for (i = 0; i < NOTE_BUCKETS; i++)
		while (p->notes[i]) {
			note_t *n = p->notes[i];
			p->notes[i] = n->hnext;
			dropped += n->state != NOTE_IDLE;
			free(n);
		}
	if (dropped || p->ring_n)
		log_info("push: stopping with %zu pushes and %zu events not handled", dropped, p->ring_n);
	for (i = 0; i < MEMBER_CACHE_SLOTS; i++)
		free(p->cache[i].members);
	free(p->waiting.v);
	free(p->delayed.v);
	store_close(p->sched_store);
	EVP_PKEY_free(p->apns_key);
	if (p->has_fcm)
		fcm_account_clear(&p->fcm);
	sodium_memzero(p->apns_token, sizeof p->apns_token);
	sodium_memzero(p->fcm_token, sizeof p->fcm_token);
	pthread_mutex_destroy(&p->in_lock);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->cred_lock);
	pthread_cond_destroy(&p->in_cond);
	pthread_cond_destroy(&p->work);
	free(p->ring);
	free(p->senders);
	free(p);
}

void push_counts(push_t *p, push_counts_t *out)
{
	unsigned i;

	pthread_mutex_lock(&p->lock);
	*out = p->counts;
	out->notes = p->nnotes;
	out->sends_queued = p->nsends;
	for (i = 0; i < PUSH_PROVIDERS; i++)
		out->provider[i].in_flight = p->prov[i].in_flight;
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_lock(&p->in_lock);
	out->events_dropped = p->counts.events_dropped;
	out->events_queued = p->ring_n;
	pthread_mutex_unlock(&p->in_lock);
}
