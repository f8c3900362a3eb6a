/* presence.c - the presence state machine and typing of presence.h.
 *
 * Who is connected, and whether every connection of a user says away, is
 * the bus's registry (bus.h): on one node an in-process table, in a fleet
 * Redis. This module subscribes, through the bus, to the users its own
 * connections watch, hears their state across every node, and turns it
 * into what watchers see: the grace period before "offline", at most one
 * announcement a second, blocks and departures applied at once. Typing
 * is kept here for the typists connected to this node.
 *
 * One table of users under one mutex: watches and typing frames are rare
 * next to messages. A user has an entry only while this node watches it,
 * it types here, or an announcement of it waits: a connected user nobody
 * watches costs nothing here. Frames are built once per change and handed
 * to each watcher's connection (presence) or to each member (typing)
 * through the bus. Calls that may report back (subscribe) are made with
 * the lock released, and reports are ordered by their version, so that
 * reports racing on several threads cannot leave an old state. The
 * ticker thread wakes every 250 ms for the timed parts. */
#include "presence.h"

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

enum { OFFLINE, ONLINE, AWAY };

static const char *const state_names[] = {"offline", "online", "away"};

typedef struct typing {
	int64_t conv;
	int64_t expires_ms, relayed_ms;
	int64_t *members;
	size_t n;
} typing_t;

/* A connection watching a user, and whose connection it is (so that a
 * block can end exactly the blocked user's watches). */
typedef struct watcher {
	uint64_t conn;
	int64_t user;
	int answered;               /* has had its first presence frame */
} watcher_t;

typedef struct user {
	struct user *next;
	int64_t id;
	int known;                  /* the bus has reported it at least once */
	int raw;                    /* BUS_*: as the bus last reported it */
	uint64_t version;           /* of that report */
	int state;                  /* as last announced */
	int pending;                /* a change waits for its turn (below) */
	int64_t announced_ms;       /* when a change was last announced */
	int64_t last_seen;          /* ms: when it was last connected, as known here */
	int64_t offline_at;         /* debounce deadline, 0 when none */
	watcher_t *watchers;
	size_t nwatchers, capwatchers;
	typing_t *typing;
	size_t ntyping;
} user_t;

#define BUCKETS 4096
#define RECENT_MAX 4096

/* A block (a blocked b) or a departure (b left conversation a). */
enum { CHANGE_BLOCK = 1, CHANGE_LEFT = 2 };

typedef struct change {
	uint64_t gen;
	int kind;
	int64_t a, b;
} change_t;

struct presence {
	server_t *srv;
	store_t *store;
	int grace_ms;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int stopping;
	/* The latest blocks and departures, each numbered (gen): a worker's
	 * check made before one of them may allow what it took away, so its
	 * answer is filtered by the events since its gen (changes_since). */
	atomic_uint_fast64_t gen;
	change_t recent[RECENT_MAX];
	user_t *buckets[BUCKETS];
	/* last_seen values to write, gathered under the lock */
	int64_t *seen_users, *seen_times;
	size_t nseen, capseen;
};

/* Records a change. Under the lock. */
static void note_change(presence_t *p, int kind, int64_t a, int64_t b)
{
	uint64_t g = atomic_fetch_add(&p->gen, 1) + 1;
	change_t *c = &p->recent[g % RECENT_MAX];

	*c = (change_t){g, kind, a, b};
}

/* True when a change of this kind about (a, b) happened after gen, or
 * when so many happened since that the record no longer reaches back to
 * gen (then every answer of that age is treated as stale). Under the
 * lock. */
static int changed_since(const presence_t *p, uint64_t gen, int kind, int64_t a, int64_t b)
{
	uint64_t now = atomic_load(&p->gen), g;

	if (now - gen >= RECENT_MAX)
		return 1;
	for (g = now; g > gen; g--) {
		const change_t *c = &p->recent[g % RECENT_MAX];
		if (c->kind == kind && c->a == a && c->b == b)
			return 1;
	}
	return 0;
}

static user_t *find(presence_t *p, int64_t id, int create)
{
	user_t **b = &p->buckets[(uint64_t)id % BUCKETS], *u;

	for (u = *b; u; u = u->next)
		if (u->id == id)
			return u;
	if (!create || !(u = calloc(1, sizeof *u)))
		return NULL;
	u->id = id;
	u->next = *b;
	*b = u;
	return u;
}

/* The user's entry, made if missing (its state unknown until the bus
 * reports it). */
static user_t *entry(presence_t *p, int64_t id)
{
	return find(p, id, 1);
}

/* Drops u from the table when nothing refers to it any more. */
static void maybe_forget(presence_t *p, user_t *u)
{
	user_t **b;

	if (u->nwatchers || u->ntyping || u->offline_at || u->pending)
		return;
	for (b = &p->buckets[(uint64_t)u->id % BUCKETS]; *b != u; b = &(*b)->next)
		;
	*b = u->next;
	free(u->watchers);
	free(u->typing);
	free(u);
}

static sbuf_t *presence_frame(int64_t user, int state, int64_t last_seen)
{
	jbuf_t b;
	sbuf_t *f;

	jbuf_init(&b);
	jbuf_lit(&b, "{\"type\":\"presence\",\"user\":");
	jbuf_int(&b, user);
	jbuf_lit(&b, ",\"state\":");
	jbuf_cstr(&b, state_names[state]);
	jbuf_lit(&b, ",\"last_seen\":");
	if (last_seen)
		jbuf_int(&b, last_seen);
	else
		jbuf_lit(&b, "null");
	jbuf_lit(&b, "}");
	f = frames_from_json(&b);
	jbuf_free(&b);
	return f;
}

/* The state the user's connections on every node add up to, after the
 * grace period. */
static int current(const user_t *u)
{
	if (u->raw == BUS_ABSENT)
		return u->offline_at ? u->state : OFFLINE; /* debounced */
	return u->raw == BUS_AWAY ? AWAY : ONLINE;
}

/* A presence frame of u as it stands, for one of its watchers. */
static sbuf_t *frame_now(const user_t *u, int64_t now)
{
	/* While connected, "last seen" is now. */
	return presence_frame(u->id, u->state, u->state == OFFLINE ? u->last_seen : now);
}

/* Announces u's state to its watchers if it changed. Under the lock. */
/* A user's changes are announced at most once per PRESENCE_ANNOUNCE_MS:
 * one toggling away and back as fast as it can costs each watcher one
 * frame a second, not one per toggle (which a stranger the victim
 * watches could otherwise use to flood it off the server). A change
 * inside the window waits, and the ticker announces where the user ends
 * up, or nothing if that is where it started. */
static void announce(presence_t *p, user_t *u, int64_t now)
{
	int state = current(u);
	sbuf_t *f;
	size_t i;

	if (state == u->state) {
		u->pending = 0;
		return;
	}
	if (now - u->announced_ms < PRESENCE_ANNOUNCE_MS) {
		u->pending = 1;
		return;
	}
	u->pending = 0;
	u->announced_ms = now;
	u->state = state;
	f = frame_now(u, now);
	for (i = 0; f && i < u->nwatchers; i++)
		if (u->watchers[i].answered)
			bus_send(p->srv->bus, u->watchers[i].conn, f);
	sbuf_unref(f);
}

/* Gives each watcher that has had no answer yet its first frame. */
static void answer_new(presence_t *p, user_t *u, int64_t now)
{
	sbuf_t *f = NULL;
	size_t i;

	for (i = 0; i < u->nwatchers; i++) {
		if (u->watchers[i].answered)
			continue;
		if (!f && !(f = frame_now(u, now)))
			return;
		bus_send(p->srv->bus, u->watchers[i].conn, f);
		u->watchers[i].answered = 1;
	}
	sbuf_unref(f);
}

static void typing_relay(presence_t *p, int64_t user, const typing_t *t, int on)
{
	jbuf_t b;
	sbuf_t *f;
	size_t i;

	jbuf_init(&b);
	jbuf_lit(&b, "{\"type\":\"typing\",\"conv\":");
	jbuf_int(&b, t->conv);
	jbuf_lit(&b, ",\"user\":");
	jbuf_int(&b, user);
	jbuf_lit(&b, on ? ",\"on\":true}" : ",\"on\":false}");
	f = frames_from_json(&b);
	jbuf_free(&b);
	for (i = 0; f && i < t->n; i++)
		if (t->members[i] != user)
			bus_deliver(p->srv->bus, t->members[i], 0, f);
	sbuf_unref(f);
}

/* Ends typing entry i of u, telling the members. Under the lock. */
static void typing_end(presence_t *p, user_t *u, size_t i)
{
	typing_relay(p, u->id, &u->typing[i], 0);
	free(u->typing[i].members);
	u->typing[i] = u->typing[--u->ntyping];
}

/* Queues a last_seen write. Under the lock. */
static void remember_seen(presence_t *p, int64_t user, int64_t when)
{
	if (p->nseen == p->capseen) {
		size_t cap = p->capseen ? p->capseen * 2 : 64;
		int64_t *a = realloc(p->seen_users, cap * sizeof *a);
		int64_t *b = a ? realloc(p->seen_times, cap * sizeof *b) : NULL;
		if (a)
			p->seen_users = a;
		if (!a || !b)
			return; /* lost: the next disconnect writes it again */
		p->seen_times = b;
		p->capseen = cap;
	}
	p->seen_users[p->nseen] = user;
	p->seen_times[p->nseen++] = when;
}

void presence_on_state(presence_t *p, int64_t user, int state, int64_t last_seen, uint64_t version)
{
	int64_t now = clock_wall_ms();
	user_t *u;

	pthread_mutex_lock(&p->lock);
	if ((u = find(p, user, 0)) == NULL) {
		pthread_mutex_unlock(&p->lock); /* watched no longer */
		return;
	}
	if (last_seen > u->last_seen)
		u->last_seen = last_seen;
	if (!u->known || version > u->version) {
		int first = !u->known;

		u->known = 1;
		u->version = version;
		if (state == BUS_ABSENT && u->raw != BUS_ABSENT && !first) {
			/* Gone from every node: offline only if it stays so for
			 * the grace period (a phone between networks). */
			u->offline_at = now + p->grace_ms;
			if (!last_seen)
				u->last_seen = now; /* a bus that does not say: it left now */
		} else if (state != BUS_ABSENT) {
			u->offline_at = 0;
		}
		u->raw = state;
		if (first) {
			/* Its first report is what watchers are first told, at
			 * once, not a change to hold back. */
			u->state = current(u);
			u->announced_ms = 0;
		}
		announce(p, u, now);
	}
	answer_new(p, u, now);
	maybe_forget(p, u);
	pthread_mutex_unlock(&p->lock);
}

void presence_disconnected(presence_t *p, int64_t user)
{
	int64_t now = clock_wall_ms();
	/* Asked before the lock: the bus is never called under it. */
	unsigned conns = bus_connections(p->srv->bus, user);
	user_t *u;

	pthread_mutex_lock(&p->lock);
	if (conns == 0) {
		/* Its typing here ends with its last connection here. */
		if ((u = find(p, user, 0)) != NULL) {
			while (u->ntyping)
				typing_end(p, u, 0);
			maybe_forget(p, u);
		}
		remember_seen(p, user, now);
	}
	pthread_mutex_unlock(&p->lock);
}

void presence_away(presence_t *p, int64_t user, uint64_t conn, int away)
{
	bus_set_away(p->srv->bus, user, conn, away);
}

/* Users whose watchers went, to unsubscribe from once the lock is gone:
 * one unsubscribe per watcher removed, as there was one subscribe per
 * watcher added. */
typedef struct unsubs {
	int64_t *users;
	size_t n, cap;
} unsubs_t;

static void unsub_add(unsubs_t *un, int64_t user)
{
	if (un->n == un->cap) {
		size_t cap = un->cap ? un->cap * 2 : 16;
		int64_t *a = realloc(un->users, cap * sizeof *a);
		if (!a) {
			/* The bus keeps a subscription too many: reports of this
			 * user come and are ignored; memory, not correctness. */
			log_error("presence: out of memory; a subscription to user %lld stays", (long long)user);
			return;
		}
		un->users = a;
		un->cap = cap;
	}
	un->users[un->n++] = user;
}

static void unsub_flush(presence_t *p, unsubs_t *un)
{
	size_t i;

	for (i = 0; i < un->n; i++)
		bus_unsubscribe(p->srv->bus, un->users[i]);
	free(un->users);
}

static void unwatch_locked(presence_t *p, uint64_t conn, const int64_t *users, size_t n, unsubs_t *un)
{
	size_t i, k;

	for (i = 0; i < n; i++) {
		user_t *u = find(p, users[i], 0);
		if (!u)
			continue;
		for (k = 0; k < u->nwatchers; k++) {
			if (u->watchers[k].conn == conn) {
				u->watchers[k] = u->watchers[--u->nwatchers];
				unsub_add(un, u->id);
				break;
			}
		}
		maybe_forget(p, u);
	}
}

void presence_watch(presence_t *p, uint64_t gen, uint64_t conn, int64_t watcher, const int64_t *old,
                    size_t nold, const int64_t *users, const int64_t *stored_last_seen, size_t n)
{
	int64_t now = clock_wall_ms();
	int64_t *subs = n ? malloc(n * sizeof *subs) : NULL;
	unsubs_t un = {0};
	size_t i, nsubs = 0;

	if (n && !subs) {
		log_error("presence: out of memory for a watch of %zu users", n);
		return;
	}
	pthread_mutex_lock(&p->lock);
	/* Unwatch only those no longer asked for, and only after the new
	 * ones hold their entries: a user watched before and after keeps its
	 * entry (and what it knows of its state). */
	for (i = 0; i < nold; i++) {
		size_t k;
		for (k = 0; k < n && users[k] != old[i]; k++)
			;
		if (k == n)
			unwatch_locked(p, conn, &old[i], 1, &un);
	}
	for (i = 0; i < n; i++) {
		user_t *u;
		size_t k;

		/* Blocked since it was checked: left out, as if never allowed. */
		if (changed_since(p, gen, CHANGE_BLOCK, users[i], watcher) || !(u = entry(p, users[i])))
			continue;
		if (stored_last_seen[i] > u->last_seen)
			u->last_seen = stored_last_seen[i]; /* what the store knows */
		for (k = 0; k < u->nwatchers && u->watchers[k].conn != conn; k++)
			;
		if (k < u->nwatchers) {
			/* Watched already: answered again, with what is known. */
			sbuf_t *f = u->known ? frame_now(u, now) : NULL;
			if (f) {
				bus_send(p->srv->bus, conn, f);
				sbuf_unref(f);
			}
			continue;
		}
		if (u->nwatchers == u->capwatchers) {
			size_t cap = u->capwatchers ? u->capwatchers * 2 : 4;
			watcher_t *w = realloc(u->watchers, cap * sizeof *w);
			if (!w) {
				maybe_forget(p, u);
				continue;
			}
			u->watchers = w;
			u->capwatchers = cap;
		}
		u->watchers[u->nwatchers++] = (watcher_t){conn, watcher, 0};
		subs[nsubs++] = u->id;
		/* Known already (another watcher here): answered at once; else
		 * its subscription's first report answers it. */
		if (u->known)
			answer_new(p, u, now);
	}
	pthread_mutex_unlock(&p->lock);
	unsub_flush(p, &un);
	for (i = 0; i < nsubs; i++)
		bus_subscribe(p->srv->bus, subs[i]);
	free(subs);
}

void presence_unwatch(presence_t *p, uint64_t conn, const int64_t *users, size_t n)
{
	unsubs_t un = {0};

	pthread_mutex_lock(&p->lock);
	unwatch_locked(p, conn, users, n, &un);
	pthread_mutex_unlock(&p->lock);
	unsub_flush(p, &un);
}

void presence_typing(presence_t *p, uint64_t gen, int64_t user, int64_t conv, int on, int64_t *members,
                     size_t n)
{
	int64_t now = clock_mono_ms();
	/* Asked before the lock: the bus is never called under it. */
	unsigned conns = bus_connections(p->srv->bus, user);
	user_t *u;
	size_t i;

	pthread_mutex_lock(&p->lock);
	/* Members who left, or a block between typist and member, since the
	 * members were read: they hear nothing. */
	for (i = 0; on && i < n;) {
		if (changed_since(p, gen, CHANGE_LEFT, conv, members[i]) ||
		    changed_since(p, gen, CHANGE_BLOCK, user, members[i]) ||
		    changed_since(p, gen, CHANGE_BLOCK, members[i], user))
			members[i] = members[--n];
		else
			i++;
	}
	/* The typist gone, or "off" with nothing on. */
	if (!conns || !(u = on ? entry(p, user) : find(p, user, 0))) {
		/* Gone before its frame was checked, or "off" with nothing on. */
		pthread_mutex_unlock(&p->lock);
		free(members);
		return;
	}
	for (i = 0; i < u->ntyping && u->typing[i].conv != conv; i++)
		;
	if (!on) {
		if (i < u->ntyping)
			typing_end(p, u, i);
		free(members);
		maybe_forget(p, u);
	} else if (i < u->ntyping) {
		typing_t *t = &u->typing[i];
		t->expires_ms = now + PRESENCE_TYPING_TTL_MS;
		free(t->members);
		t->members = members;
		t->n = n;
		/* Still typing: tell the members again only now and then. */
		if (now - t->relayed_ms >= PRESENCE_TYPING_RELAY_MS) {
			t->relayed_ms = now;
			typing_relay(p, user, t, 1);
		}
	} else {
		typing_t *ty = realloc(u->typing, (u->ntyping + 1) * sizeof *ty);
		if (!ty) {
			free(members);
		} else {
			u->typing = ty;
			ty[u->ntyping] = (typing_t){conv, now + PRESENCE_TYPING_TTL_MS, now, members, n};
			typing_relay(p, user, &ty[u->ntyping], 1);
			u->ntyping++;
		}
	}
	pthread_mutex_unlock(&p->lock);
}

/* Removes user from the recipients of typing entry t. */
static void typing_drop_member(typing_t *t, int64_t user)
{
	size_t i;

	for (i = 0; i < t->n; i++) {
		if (t->members[i] == user) {
			t->members[i] = t->members[--t->n];
			return;
		}
	}
}

uint64_t presence_gen(presence_t *p)
{
	return atomic_load(&p->gen);
}



void presence_forbid(presence_t *p, int64_t user, int64_t other)
{
	unsubs_t un = {0};
	user_t *u;
	size_t i;

	pthread_mutex_lock(&p->lock);
	note_change(p, CHANGE_BLOCK, user, other);
	if ((u = find(p, user, 0)) != NULL) {
		for (i = 0; i < u->nwatchers;) {
			if (u->watchers[i].user == other) {
				u->watchers[i] = u->watchers[--u->nwatchers];
				unsub_add(&un, user);
			} else {
				i++;
			}
		}
		for (i = 0; i < u->ntyping; i++)
			typing_drop_member(&u->typing[i], other);
		maybe_forget(p, u);
	}
	/* Nor does user see other type. */
	if ((u = find(p, other, 0)) != NULL) {
		for (i = 0; i < u->ntyping; i++)
			typing_drop_member(&u->typing[i], user);
	}
	pthread_mutex_unlock(&p->lock);
	unsub_flush(p, &un);
}

void presence_left(presence_t *p, int64_t conv, int64_t user, const int64_t *members, size_t n)
{
	size_t k, i;

	pthread_mutex_lock(&p->lock);
	note_change(p, CHANGE_LEFT, conv, user);
	/* Only members can be typing there: look at them, and the one who
	 * left, not at every user. */
	for (k = 0; k <= n; k++) {
		user_t *u = find(p, k < n ? members[k] : user, 0);
		if (!u)
			continue;
		for (i = 0; i < u->ntyping;) {
			if (u->typing[i].conv != conv) {
				i++;
			} else if (u->id == user) {
				/* The typist itself left: the others hear it end. */
				typing_end(p, u, i);
			} else {
				typing_drop_member(&u->typing[i], user);
				i++;
			}
		}
		maybe_forget(p, u);
	}
	pthread_mutex_unlock(&p->lock);
}

/* The timed part: debounced offline, typing expiry. Under the lock. */
static void tick(presence_t *p, int64_t wall, int64_t mono)
{
	size_t b, i;

	for (b = 0; b < BUCKETS; b++) {
		user_t *u = p->buckets[b], *next;
		for (; u; u = next) {
			next = u->next;
			for (i = 0; i < u->ntyping;) {
				if (u->typing[i].expires_ms <= mono)
					typing_end(p, u, i);
				else
					i++;
			}
			if (u->offline_at && u->offline_at <= wall) {
				u->offline_at = 0;
				announce(p, u, wall);
			}
			if (u->pending && wall - u->announced_ms >= PRESENCE_ANNOUNCE_MS)
				announce(p, u, wall);
			maybe_forget(p, u);
		}
	}
}

static void write_seen(presence_t *p)
{
	int64_t *users, *times;
	size_t n;

	pthread_mutex_lock(&p->lock);
	users = p->seen_users;
	times = p->seen_times;
	n = p->nseen;
	p->seen_users = p->seen_times = NULL;
	p->nseen = p->capseen = 0;
	pthread_mutex_unlock(&p->lock);
	if (n && store_last_seen_set(p->store, users, times, n) != STORE_OK)
		log_warn("presence: %zu last_seen values not stored", n);
	free(users);
	free(times);
}

static void *presence_main(void *arg)
{
	presence_t *p = arg;

	log_set_thread_name("presence");
	pthread_mutex_lock(&p->lock);
	while (!p->stopping) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 250 * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&p->cond, &p->lock, &until);
		tick(p, clock_wall_ms(), clock_mono_ms());
		if (p->nseen) {
			pthread_mutex_unlock(&p->lock);
			write_seen(p);
			pthread_mutex_lock(&p->lock);
		}
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

presence_t *presence_new(server_t *srv, int grace_ms)
{
	presence_t *p = calloc(1, sizeof *p);

	if (!p)
		return NULL;
	p->srv = srv;
	p->grace_ms = grace_ms;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	if (!(p->store = store_open(srv->store_at)))
		goto err;
	if (pthread_create(&p->thread, NULL, presence_main, p) != 0) {
		log_error("presence: cannot start its thread");
		goto err;
	}
	return p;
err:
	store_close(p->store);
	free(p);
	return NULL;
}

void presence_free(presence_t *p)
{
	size_t b, i;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thread, NULL);
	/* Every connection has closed by now, each one recorded when its
	 * user was last seen (presence_disconnected). */
	for (b = 0; b < BUCKETS; b++) {
		user_t *u = p->buckets[b], *next;
		for (; u; u = next) {
			next = u->next;
			for (i = 0; i < u->ntyping; i++)
				free(u->typing[i].members);
			free(u->typing);
			free(u->watchers);
			free(u);
		}
	}
	write_seen(p);
	store_close(p->store);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	free(p);
}
