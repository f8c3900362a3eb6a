/* presence.c - the presence and typing registry of presence.h.
 *
 * One table of users under one mutex: connects, disconnects, watches and
 * typing frames are rare next to messages. A user has an entry only while
 * it is watched, typing, away or going offline: a connected user nobody
 * watches costs nothing here, and how many connections a user has is
 * asked of the bus, which knows it anyway. Frames are built once per
 * change and handed to each watcher's connection (presence) or to each
 * member through the bus (typing). The ticker thread wakes every 250 ms
 * for the timed parts. */
#include "presence.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "gateway.h"
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
} watcher_t;

typedef struct user {
	struct user *next;
	int64_t id;
	uint32_t conns, away;       /* WebSockets open; how many say away */
	int state;                  /* as last announced */
	int pending;                /* a change waits for its turn (below) */
	int64_t announced_ms;       /* when a change was last announced */
	int64_t last_seen;          /* ms: when it was last connected */
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

/* The user's entry, made if missing with its connections as the bus
 * counts them now. */
static user_t *entry(presence_t *p, int64_t id)
{
	user_t *u = find(p, id, 0);

	if (!u && (u = find(p, id, 1)) != NULL) {
		u->conns = bus_connections(p->srv->bus, id);
		u->state = u->conns ? ONLINE : OFFLINE;
	}
	return u;
}

/* Drops u from the table when nothing refers to it any more. */
static void maybe_forget(presence_t *p, user_t *u)
{
	user_t **b;

	if (u->away || u->nwatchers || u->ntyping || u->offline_at || u->pending)
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

/* The state the user's connections add up to. */
static int current(const user_t *u)
{
	if (u->conns == 0)
		return u->offline_at ? u->state : OFFLINE; /* debounced */
	return u->away >= u->conns ? AWAY : ONLINE;
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
	/* While connected, "last seen" is now. */
	f = presence_frame(u->id, state, state == OFFLINE ? u->last_seen : now);
	for (i = 0; f && i < u->nwatchers; i++)
		gw_post_frame(p->srv->gw, u->watchers[i].conn, f);
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

/* The bus is told of a connection before presence is, so its count is
 * the truth; presence keeps a copy only to compare states. */
void presence_connected(presence_t *p, int64_t user)
{
	int64_t now = clock_wall_ms();
	user_t *u;

	pthread_mutex_lock(&p->lock);
	if ((u = find(p, user, 0)) != NULL) {
		u->conns = bus_connections(p->srv->bus, user);
		u->offline_at = 0; /* back within the grace period: no flap */
		u->last_seen = now;
		announce(p, u, now);
	}
	pthread_mutex_unlock(&p->lock);
}

void presence_disconnected(presence_t *p, int64_t user, int was_away)
{
	int64_t now = clock_wall_ms();
	unsigned conns = bus_connections(p->srv->bus, user);
	user_t *u;

	pthread_mutex_lock(&p->lock);
	if ((u = find(p, user, 0)) != NULL) {
		u->conns = conns;
		if (was_away && u->away)
			u->away--;
		u->last_seen = now;
		if (u->conns == 0) {
			u->offline_at = now + p->grace_ms;
			while (u->ntyping) /* the typist is gone */
				typing_end(p, u, 0);
		}
		announce(p, u, now);
		maybe_forget(p, u);
	} else if (conns == 0) {
		remember_seen(p, user, now); /* nobody watches: just the record */
	}
	pthread_mutex_unlock(&p->lock);
}

void presence_away(presence_t *p, int64_t user, int away)
{
	int64_t now = clock_wall_ms();
	user_t *u;

	pthread_mutex_lock(&p->lock);
	/* Away users keep an entry: a watcher who comes later must see it. */
	if ((u = away ? entry(p, user) : find(p, user, 0)) != NULL) {
		if (away && u->away < u->conns)
			u->away++;
		else if (!away && u->away)
			u->away--;
		announce(p, u, now);
		maybe_forget(p, u);
	}
	pthread_mutex_unlock(&p->lock);
}

static void unwatch_locked(presence_t *p, uint64_t conn, const int64_t *users, size_t n)
{
	size_t i, k;

	for (i = 0; i < n; i++) {
		user_t *u = find(p, users[i], 0);
		if (!u)
			continue;
		for (k = 0; k < u->nwatchers; k++) {
			if (u->watchers[k].conn == conn) {
				u->watchers[k] = u->watchers[--u->nwatchers];
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
	size_t i;

	pthread_mutex_lock(&p->lock);
	/* Unwatch only those no longer asked for, and only after the new
	 * ones hold their entries: a user watched before and after keeps its
	 * entry (and the last_seen it may not have stored yet). */
	for (i = 0; i < nold; i++) {
		size_t k;
		for (k = 0; k < n && users[k] != old[i]; k++)
			;
		if (k == n)
			unwatch_locked(p, conn, &old[i], 1);
	}
	for (i = 0; i < n; i++) {
		user_t *u;
		size_t k;

		int state = OFFLINE;
		int64_t seen = stored_last_seen[i];
		sbuf_t *f;

		/* Blocked since it was checked: left out, as if never allowed. */
		if (changed_since(p, gen, CHANGE_BLOCK, users[i], watcher) || !(u = entry(p, users[i])))
			continue;
		for (k = 0; k < u->nwatchers && u->watchers[k].conn != conn; k++)
			;
		if (k < u->nwatchers)
			goto answer; /* watched already */
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
		u->watchers[u->nwatchers++] = (watcher_t){conn, watcher};
answer:
		if (u->conns || u->offline_at) {
			state = u->state;
			seen = state == OFFLINE ? u->last_seen : now;
		} else if (u->last_seen > seen) {
			seen = u->last_seen; /* newer than what the store has yet */
		}
		if ((f = presence_frame(u->id, state, seen)) != NULL) {
			gw_post_frame(p->srv->gw, conn, f);
			sbuf_unref(f);
		}
	}
	pthread_mutex_unlock(&p->lock);
}

void presence_unwatch(presence_t *p, uint64_t conn, const int64_t *users, size_t n)
{
	pthread_mutex_lock(&p->lock);
	unwatch_locked(p, conn, users, n);
	pthread_mutex_unlock(&p->lock);
}

void presence_typing(presence_t *p, uint64_t gen, int64_t user, int64_t conv, int on, int64_t *members,
                     size_t n)
{
	int64_t now = clock_mono_ms();
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
	if (!bus_connections(p->srv->bus, user) || !(u = on ? entry(p, user) : find(p, user, 0))) {
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
	user_t *u;
	size_t i;

	pthread_mutex_lock(&p->lock);
	note_change(p, CHANGE_BLOCK, user, other);
	if ((u = find(p, user, 0)) != NULL) {
		for (i = 0; i < u->nwatchers;) {
			if (u->watchers[i].user == other)
				u->watchers[i] = u->watchers[--u->nwatchers];
			else
				i++;
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
			if (u->offline_at && u->offline_at <= wall && u->conns == 0) {
				u->offline_at = 0;
				announce(p, u, wall);
				remember_seen(p, u->id, u->last_seen);
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
	int64_t now = clock_wall_ms();
	size_t b, i;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thread, NULL);
	/* Whoever is still here was seen until now. */
	for (b = 0; b < BUCKETS; b++) {
		user_t *u = p->buckets[b], *next;
		for (; u; u = next) {
			next = u->next;
			if (u->conns || u->offline_at)
				remember_seen(p, u->id, u->conns ? now : u->last_seen);
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
