/* bus_redis.c - the bus of a node in a fleet: who is connected where, and
 * presence, shared through Redis; frames for another node's users
 * published to that node.
 *
 * This node's own connections live in an embedded in-process bus
 * (bus_local.c), which delivers, kicks and counts them as on a single
 * node. What only a fleet needs runs on a thread of this module's own,
 * with its own loop and two Redis clients (redis.h): one for commands and
 * one subscribed to this node's channel and to the presence channel.
 * Other threads never touch Redis: they post tasks to that loop, and
 * never wait for it.
 *
 * What Redis holds (every key and channel under "parley:"):
 *   nodes          ZSET node -> its last heartbeat, ms by Redis's clock
 *                  (each heartbeat also reads the live ones: bus_nodes)
 *   node:<id>      the id's claim: a random token of the boot, PX 5 beats
 *   n:<node>       SET of the users the node registered (for reaping it)
 *   u:<user>       ZSET of the nodes holding user's connections
 *   p:<user>       HASH <node> -> 1 online / 2 away on that node,
 *                  a -> the state across nodes, seen -> when last seen
 *   v:<user>       the user's presence version, INCR per change of `a`
 *   c:<user>       HASH <node> -> the user's connections on that node
 *                  (only under a cap, --max-user-connections)
 *   to:<node>      channel: envelopes for the node's connections
 *   presence       channel: "<user> <state> <seen> <version>" per change
 *   cc:<node>      channel: "<user> <connections on the other live nodes>"
 *                  when that changes, to each other node holding the user
 *   notes          channel: "<node> <kind><bytes>", other modules' news
 *                  for every node (bus_redis_note: failed logins)
 * A node is alive while its heartbeat is younger than 3 beats; readers
 * ignore the rest, and the first node to see a dead one reaps it (its
 * users leave the registry, their presence is settled and published).
 * Every script reads the time from Redis, so nodes' clocks do not matter.
 * The scripts name keys they build themselves: a standalone Redis (or one
 * shard per fleet), not Redis Cluster.
 *
 * Registration: after every attach, detach or away of a user, the bus
 * thread reads the user's state on this node and, when it differs from
 * what it last wrote, writes it with one script that also settles the
 * state across nodes and publishes a change. The thread reads the state
 * when it runs, so the last write always carries the last state however
 * the posts raced. On reconnect, or when a heartbeat finds this node was
 * taken for dead, every local user is written again.
 *
 * Delivery: the caller's thread delivers to this node's connections at
 * once; the bus thread asks Redis which other live nodes hold the users
 * (one script per call, however many users) and publishes one envelope
 * per such node. Live delivery is best-effort: while Redis is away, or
 * the queue to the bus thread is full, remote delivery is dropped and
 * counted; clients catch up by seq on resume.
 *
 * The per-user connection cap across nodes: a node refuses an attach
 * when its own connections of the user plus those it knows of on other
 * live nodes reach the cap. It never asks Redis at attach time: the
 * count of the others is a cache on this node (rc_*, any thread reads
 * it), filled by the bus thread from the reply to each write of this
 * node's count (the registration script above writes c:<user> too, and
 * sums the other live nodes') and from cc:<node> messages, which that
 * script and the reap send to the user's other nodes when a count
 * changes. So the cap holds across the fleet but for what is in flight:
 *   - connections made on several nodes within one round trip to Redis
 *     (the time for a write and its cc message) may each be admitted:
 *     at most one extra per node taking connections of the user then;
 *   - a node holding none of the user's connections hears of none of
 *     them, so it admits one (and then knows): at most one extra per
 *     such node. With sticky routing by user (deploy/haproxy.cfg) a
 *     user's connections reach one node, and neither case arises but
 *     while a node fails over.
 * So the bound is cap + (live nodes - 1) at worst. While Redis is away
 * the cache is dropped (logged once, with the outage) and each node
 * holds the cap over its own connections, as a single node does; back,
 * each writes its users again and learns the others' counts anew.
 * Without a cap nothing is counted or sent.
 *
 * Envelopes are bus_envelope.h's; one that does not parse is logged,
 * counted and dropped.
 *
 * Presence versions: Redis's per-user version orders changes across
 * nodes (a report older than one seen is dropped); the version handed to
 * the sink is this bus's own counter, rising with every report, since
 * every report is made on the bus thread in the order it was accepted. */
#include "bus_redis.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "bus_envelope.h"
#include "log.h"
#include "loop.h"
#include "redis.h"

#define MAX_QUEUED 65536       /* tasks posted to the bus thread and not yet run */
#define REAP_BATCH 256         /* users one reap script takes */
#define SHUTDOWN_MS 2000       /* bus_free waits this long for Redis at most */
#define LOG_EVERY_MS 10000     /* repeated warnings at most this often */
#define PRESENCE_CHANNEL "parley:presence"
#define NOTES_CHANNEL "parley:notes"
#define NOTE_KINDS 26          /* 'A' to 'Z' */

/* A user this thread knows of: written to Redis, subscribed to, or both. */
typedef struct uent {
	struct uent *next;
	int64_t user;
	int wstate;            /* what Redis has from us: BUS_*, or -1: write it again */
	int wcount;            /* connections here Redis has from us (-1: no cap, not counted) */
	uint32_t subs;         /* subscriptions of this node */
	int pstate;            /* last state reported (-1: none yet) */
	int64_t pseen;
	uint64_t rv;           /* Redis version of the last accepted state */
} uent_t;

typedef struct waiter {
	struct waiter *next;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int done;
} waiter_t;

/* Connections a user has on other live nodes, as last heard from Redis:
 * read by attach on any thread, written by the bus thread. Only users
 * with some elsewhere are in it, and only while this node holds some of
 * their connections too (only then does Redis tell this node of
 * changes). */
#define RC_SHARDS 16
#define RC_BUCKETS 256

typedef struct rcount {
	struct rcount *next;
	int64_t user;
	unsigned n;
} rcount_t;

typedef struct rcshard {
	pthread_mutex_t lock;
	rcount_t *b[RC_BUCKETS];
} rcshard_t;

typedef struct rbus {
	bus_t base;
	bus_t *local;
	bus_sink_t sink;
	uint32_t node;
	unsigned max_per_user;
	rcshard_t rc[RC_SHARDS];
	atomic_uint rc_entries;  /* 0: attach need not look */
	atomic_ullong refused_remote;
	atomic_ullong notes_sent, notes_heard, notes_dropped;
	atomic_llong notes_logged_at;
	/* The bus thread's: handlers of notes, by kind. */
	bus_redis_note_fn note_fn[NOTE_KINDS];
	void *note_ud[NOTE_KINDS];
	/* bus_redis_on_beat: set from another thread once the bus runs, so
	 * published with release after beat_ud. */
	void (*_Atomic beat_fn)(void *ud);
	void *beat_ud;
	char token[33];
	char url[512];
	int hb_ms, dead_ms, claim_ms;
	loop_t *loop;
	pthread_t thread;
	int thread_started;
	redis_t *cmd, *sub;
	int tfd;
	loop_watch_t tw;

	/* Shared with other threads. */
	atomic_int cmd_up;
	atomic_int closing;
	atomic_uint queued;
	atomic_ullong publishes, received, dropped, malformed;
	atomic_llong dropped_logged_at;
	/* The live nodes of the latest heartbeat (bus_nodes), under lock. */
	uint32_t *live;
	size_t nlive;

	/* Start, told to bus_redis_open's thread. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int start_rc;          /* 0: pending, 1: started, <0: failed */

	/* The bus thread's own. */
	int claimed, registered, sub_up, started, was_down, sub_was_down;
	int resync_pending;
	int stopping, abandon, shutdown_done;
	int muted;             /* bus_redis_mute: the sink is no longer called from here */
	int64_t stop_deadline;
	unsigned inflight;
	uint64_t vclock;
	int64_t claim_logged_at, malformed_logged_at, error_logged_at;
	int just_resynced;     /* a reconnect wrote every user: the next heartbeat need not */
	uent_t **ub;
	size_t nub, nusers;
	waiter_t *waiters;
	struct syncw *muted_syncs; /* bus_sync callbacks held since the mute, for bus_free */
} rbus_t;

static const bus_vtab_t redis_vtab;

/* ---- Lua ---- */

#define LUA_COMMON \
	"local function now_ms() local t = redis.call('TIME') " \
	"return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end\n" \
	"local function settle(user, now, live)\n" \
	"  local uz, ph, vk = 'parley:u:' .. user, 'parley:p:' .. user, 'parley:v:' .. user\n" \
	"  local agg = 0\n" \
	"  local ms = redis.call('ZRANGE', uz, 0, -1)\n" \
	"  for i = 1, #ms do\n" \
	"    local hb = redis.call('ZSCORE', 'parley:nodes', ms[i])\n" \
	"    if hb and tonumber(hb) >= live then\n" \
	"      local s = tonumber(redis.call('HGET', ph, ms[i]) or '0')\n" \
	"      if s == 1 then agg = 1 elseif s == 2 and agg == 0 then agg = 2 end\n" \
	"    end\n" \
	"  end\n" \
	"  local old = tonumber(redis.call('HGET', ph, 'a') or '0')\n" \
	"  local seen = tonumber(redis.call('HGET', ph, 'seen') or '0')\n" \
	"  local v\n" \
	"  if agg ~= old then\n" \
	"    if agg == 0 then seen = now; redis.call('HSET', ph, 'seen', now) end\n" \
	"    redis.call('HSET', ph, 'a', agg)\n" \
	"    v = redis.call('INCR', vk)\n" \
	"    redis.call('PUBLISH', '" PRESENCE_CHANNEL "', user .. ' ' .. agg .. ' ' .. seen .. ' ' .. v)\n" \
	"  else\n" \
	"    v = tonumber(redis.call('GET', vk) or '0')\n" \
	"  end\n" \
	"  if agg == 0 then redis.call('PEXPIRE', ph, 604800000); redis.call('PEXPIRE', vk, 604800000)\n" \
	"  else redis.call('PERSIST', ph); redis.call('PERSIST', vk) end\n" \
	"  return {agg, seen, v}\n" \
	"end\n" \
	"local function counts(user, live, self, tell)\n" \
	"  local h = redis.call('HGETALL', 'parley:c:' .. user)\n" \
	"  local per, total = {}, 0\n" \
	"  for i = 1, #h, 2 do\n" \
	"    local hb = redis.call('ZSCORE', 'parley:nodes', h[i])\n" \
	"    if hb and tonumber(hb) >= live then\n" \
	"      per[h[i]] = tonumber(h[i + 1]); total = total + per[h[i]]\n" \
	"    end\n" \
	"  end\n" \
	"  if tell then\n" \
	"    for n, c in pairs(per) do\n" \
	"      if n ~= self then redis.call('PUBLISH', 'parley:cc:' .. n, user .. ' ' .. (total - c)) end\n" \
	"    end\n" \
	"  end\n" \
	"  return total - (per[self or ''] or 0)\n" \
	"end\n"

/* ARGV: node, state (-1: only read), user, dead_ms, connections here (-1:
 * not counted: no cap). Returns {state, seen, version, connections on
 * the other live nodes}; a changed count is told to the user's other
 * nodes on their parley:cc:<node> channels. */
static const char lua_presence[] = LUA_COMMON
	"local node, st, user = ARGV[1], tonumber(ARGV[2]), ARGV[3]\n"
	"local now = now_ms()\n"
	"local cn, ck, tell = tonumber(ARGV[5]), 'parley:c:' .. user, false\n"
	"if cn >= 0 then\n"
	"  local old = tonumber(redis.call('HGET', ck, node) or '0')\n"
	"  if cn ~= old then\n"
	"    tell = true\n"
	"    if cn == 0 then redis.call('HDEL', ck, node) else redis.call('HSET', ck, node, cn) end\n"
	"  end\n"
	"end\n"
	"if st == 0 then\n"
	"  redis.call('ZREM', 'parley:u:' .. user, node)\n"
	"  redis.call('HDEL', 'parley:p:' .. user, node)\n"
	"  redis.call('SREM', 'parley:n:' .. node, user)\n"
	"elseif st > 0 then\n"
	"  redis.call('ZADD', 'parley:u:' .. user, now, node)\n"
	"  redis.call('HSET', 'parley:p:' .. user, node, st)\n"
	"  redis.call('SADD', 'parley:n:' .. node, user)\n"
	"end\n"
	"local r = settle(user, now, now - tonumber(ARGV[4]))\n"
	"r[4] = counts(user, now - tonumber(ARGV[4]), node, tell)\n"
	"return r\n";

/* ARGV: node, dead_ms, force, batch. Takes a batch of the node's users out
 * of the registry, unless the node is alive again (and not forced).
 * Returns 1 while more are left. */
static const char lua_reap[] = LUA_COMMON
	"local node = ARGV[1]\n"
	"local now = now_ms()\n"
	"local live = now - tonumber(ARGV[2])\n"
	"if ARGV[3] ~= '1' then\n"
	"  local hb = redis.call('ZSCORE', 'parley:nodes', node)\n"
	"  if hb and tonumber(hb) >= live then return 0 end\n"
	"end\n"
	"local set = 'parley:n:' .. node\n"
	"local users = redis.call('SPOP', set, tonumber(ARGV[4]))\n"
	"for i = 1, #users do\n"
	"  redis.call('ZREM', 'parley:u:' .. users[i], node)\n"
	"  redis.call('HDEL', 'parley:p:' .. users[i], node)\n"
	"  settle(users[i], now, live)\n"
	"  if redis.call('HDEL', 'parley:c:' .. users[i], node) == 1 then counts(users[i], live, nil, true) end\n"
	"end\n"
	"if redis.call('SCARD', set) > 0 then return 1 end\n"
	"if ARGV[3] ~= '1' then redis.call('ZREM', 'parley:nodes', node) end\n"
	"return 0\n";

/* ARGV: node, token, claim_ms, dead_ms. Refreshes (or takes back, after a
 * Redis restart) the id's claim and the heartbeat. Returns {claimed,
 * was alive, dead nodes, live nodes}. */
static const char lua_heartbeat[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local ck = 'parley:node:' .. ARGV[1]\n"
	"local owner = redis.call('GET', ck)\n"
	"local claim = 0\n"
	"if owner == ARGV[2] then redis.call('PEXPIRE', ck, ARGV[3]); claim = 1\n"
	"elseif not owner then redis.call('SET', ck, ARGV[2], 'PX', ARGV[3]); claim = 1 end\n"
	"local fresh = 0\n"
	"local prev = redis.call('ZSCORE', 'parley:nodes', ARGV[1])\n"
	"if prev and tonumber(prev) >= now - tonumber(ARGV[4]) then fresh = 1 end\n"
	"if claim == 1 then redis.call('ZADD', 'parley:nodes', now, ARGV[1]) end\n"
	"local dead = redis.call('ZRANGEBYSCORE', 'parley:nodes', '-inf', '(' .. (now - tonumber(ARGV[4])))\n"
	"local live = redis.call('ZRANGEBYSCORE', 'parley:nodes', now - tonumber(ARGV[4]), '+inf')\n"
	"return {claim, fresh, dead, live}\n";

/* ARGV: node, token. */
static const char lua_release[] =
	"if redis.call('GET', 'parley:node:' .. ARGV[1]) == ARGV[2] then\n"
	"  redis.call('DEL', 'parley:node:' .. ARGV[1])\n"
	"  redis.call('ZREM', 'parley:nodes', ARGV[1])\n"
	"end\n"
	"return 1\n";

/* ARGV: dead_ms, users... Returns per user the live nodes holding it. */
static const char lua_lookup[] =
	"local t = redis.call('TIME')\n"
	"local live = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])\n"
	"local alive, out = {}, {}\n"
	"for k = 2, #ARGV do\n"
	"  local ms = redis.call('ZRANGE', 'parley:u:' .. ARGV[k], 0, -1)\n"
	"  local r = {}\n"
	"  for i = 1, #ms do\n"
	"    local a = alive[ms[i]]\n"
	"    if a == nil then\n"
	"      local hb = redis.call('ZSCORE', 'parley:nodes', ms[i])\n"
	"      a = hb ~= false and tonumber(hb) >= live\n"
	"      alive[ms[i]] = a\n"
	"    end\n"
	"    if a then r[#r + 1] = tonumber(ms[i]) end\n"
	"  end\n"
	"  out[#out + 1] = r\n"
	"end\n"
	"return out\n";

/* ---- the bus thread's table of users ---- */

static uint64_t mix(int64_t user)
{
	uint64_t x = (uint64_t)user;

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

static uent_t **uslot(rbus_t *b, int64_t user)
{
	uent_t **p = &b->ub[mix(user) & (b->nub - 1)];

	while (*p && (*p)->user != user)
		p = &(*p)->next;
	return p;
}

static uent_t *ufind(rbus_t *b, int64_t user)
{
	return *uslot(b, user);
}

static uent_t *uget(rbus_t *b, int64_t user)
{
	uent_t **p = uslot(b, user), *e;

	if (*p)
		return *p;
	if (b->nusers >= b->nub) {
		size_t n = b->nub * 2, i;
		uent_t **nb = calloc(n, sizeof *nb);
		if (nb) {
			for (i = 0; i < b->nub; i++) {
				uent_t *x = b->ub[i], *next;
				for (; x; x = next) {
					next = x->next;
					x->next = nb[mix(x->user) & (n - 1)];
					nb[mix(x->user) & (n - 1)] = x;
				}
			}
			free(b->ub);
			b->ub = nb;
			b->nub = n;
			p = uslot(b, user);
		}
	}
	if (!(e = calloc(1, sizeof *e)))
		return NULL;
	e->user = user;
	e->pstate = -1;
	e->wcount = b->max_per_user ? 0 : -1;
	*p = e;
	b->nusers++;
	return e;
}

/* Forgets an entry that holds nothing any more. */
static void uidle(rbus_t *b, uent_t *e)
{
	uent_t **p;

	if (!e || e->wstate != BUS_ABSENT || e->subs)
		return;
	p = uslot(b, e->user);
	*p = e->next;
	free(e);
	b->nusers--;
}

/* ---- connections elsewhere, for the cap ---- */

static rcshard_t *rc_shard(rbus_t *b, int64_t user, rcount_t ***head)
{
	uint64_t h = mix(user);
	rcshard_t *s = &b->rc[h % RC_SHARDS];

	*head = &s->b[(h / RC_SHARDS) % RC_BUCKETS];
	return s;
}

/* How many connections user has on other live nodes, as far as this node
 * knows (0 when it knows of none). Any thread. */
static unsigned rc_get(rbus_t *b, int64_t user)
{
	rcount_t **head, *e;
	rcshard_t *s;
	unsigned n = 0;

	if (!atomic_load(&b->rc_entries))
		return 0;
	s = rc_shard(b, user, &head);
	pthread_mutex_lock(&s->lock);
	for (e = *head; e && e->user != user; e = e->next)
		;
	if (e)
		n = e->n;
	pthread_mutex_unlock(&s->lock);
	return n;
}

/* Sets it (0 forgets the user). The bus thread only. */
static void rc_set(rbus_t *b, int64_t user, unsigned n)
{
	rcount_t **head, **p, *e;
	rcshard_t *s;

	if (!b->max_per_user || (!n && !atomic_load(&b->rc_entries)))
		return;
	s = rc_shard(b, user, &head);
	pthread_mutex_lock(&s->lock);
	for (p = head; *p && (*p)->user != user; p = &(*p)->next)
		;
	if ((e = *p) != NULL) {
		if (n) {
			e->n = n;
		} else {
			*p = e->next;
			free(e);
			atomic_fetch_sub(&b->rc_entries, 1);
		}
	} else if (n) {
		if ((e = malloc(sizeof *e)) != NULL) {
			*e = (rcount_t){*head, user, n};
			*head = e;
			atomic_fetch_add(&b->rc_entries, 1);
		}
		/* else: no memory; this node's own cap still holds */
	}
	pthread_mutex_unlock(&s->lock);
}

/* Forgets every count: Redis is away, and the cap is per node until it
 * is back. The bus thread, or after it has stopped. */
static void rc_clear(rbus_t *b)
{
	size_t i, k;

	for (i = 0; i < RC_SHARDS; i++) {
		rcshard_t *s = &b->rc[i];
		pthread_mutex_lock(&s->lock);
		for (k = 0; k < RC_BUCKETS; k++) {
			rcount_t *e = s->b[k], *next;
			for (; e; e = next) {
				next = e->next;
				free(e);
				atomic_fetch_sub(&b->rc_entries, 1);
			}
			s->b[k] = NULL;
		}
		pthread_mutex_unlock(&s->lock);
	}
}

/* What Redis said user has elsewhere, while this node holds some of the
 * user's connections (else it is not told of changes, so it keeps none). */
static void rc_heard(rbus_t *b, int64_t user, long long remote)
{
	uent_t *e = ufind(b, user);

	rc_set(b, user, e && e->wcount > 0 && remote > 0 ? (unsigned)remote : 0);
}

/* ---- commands ---- */

typedef void (*rb_reply_fn)(rbus_t *b, void *ctx, int64_t user, const redisReply *reply);

typedef struct pending {
	rbus_t *b;
	rb_reply_fn fn;
	void *ctx;
	int64_t user;
} pending_t;

static void settled_check(rbus_t *b);
static void stop_check(rbus_t *b);

static int rate_ok(int64_t *last)
{
	int64_t now = clock_mono_ms();

	if (*last && now - *last < LOG_EVERY_MS)
		return 0;
	*last = now;
	return 1;
}

static void on_reply(redis_t *r, void *ud, redis_status_t st, const redisReply *reply)
{
	pending_t *p = ud;
	rbus_t *b = p->b;

	(void)r;
	if (st == REDIS_STATUS_ERROR) {
		if (rate_ok(&b->error_logged_at))
			log_warn("bus: Redis said: %s", reply->str);
		reply = NULL;
	} else if (st != REDIS_STATUS_OK) {
		reply = NULL;
	}
	b->inflight--;
	if (p->fn)
		p->fn(b, p->ctx, p->user, reply);
	free(p);
	settled_check(b);
	stop_check(b);
}

/* Sends argv on the command client. 0, or a negative errno (fn is then
 * not called). */
static int rb_cmd(rbus_t *b, rb_reply_fn fn, void *ctx, int64_t user, int argc, const char **argv,
                  const size_t *lens)
{
	pending_t *p;
	int rc;

	if (!b->cmd || !atomic_load(&b->cmd_up))
		return -ENOTCONN;
	if (!(p = malloc(sizeof *p)))
		return -ENOMEM;
	*p = (pending_t){b, fn, ctx, user};
	if ((rc = redis_commandv(b->cmd, on_reply, p, argc, argv, lens)) < 0) {
		free(p);
		return rc;
	}
	b->inflight++;
	return 0;
}

/* EVAL script 0 args... */
static int rb_eval(rbus_t *b, rb_reply_fn fn, void *ctx, int64_t user, const char *script, int nargs,
                   const char **args)
{
	const char *small[12], **argv = small;
	int rc, i;

	if (nargs + 3 > 12 && !(argv = malloc((size_t)(nargs + 3) * sizeof *argv)))
		return -ENOMEM;
	argv[0] = "EVAL";
	argv[1] = script;
	argv[2] = "0";
	for (i = 0; i < nargs; i++)
		argv[3 + i] = args[i];
	rc = rb_cmd(b, fn, ctx, user, nargs + 3, argv, NULL);
	if (argv != small)
		free(argv);
	return rc;
}

static long long rint_at(const redisReply *r, size_t i)
{
	if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements)
		return 0;
	r = r->element[i];
	if (r->type == REDIS_REPLY_INTEGER)
		return r->integer;
	if (r->type == REDIS_REPLY_STRING)
		return strtoll(r->str, NULL, 10);
	return 0;
}

/* ---- presence ---- */

static void report(rbus_t *b, uent_t *e)
{
	if (b->sink.presence && e->subs && e->pstate >= 0 && !b->muted)
		b->sink.presence(b->sink.ud, e->user, e->pstate, e->pstate == BUS_ABSENT ? e->pseen : 0,
		                 ++b->vclock);
}

/* A state of user at Redis version rv: reported when newer than what was
 * reported (or always, for a subscribe's answer). */
static void presence_seen(rbus_t *b, int64_t user, int state, int64_t seen, uint64_t rv, int force)
{
	uent_t *e = ufind(b, user);

	if (!e || !e->subs)
		return;
	if (rv > e->rv || (rv == e->rv && e->pstate < 0)) {
		int changed = state != e->pstate || seen != e->pseen;
		e->rv = rv;
		e->pstate = state;
		e->pseen = seen;
		if (changed || force)
			report(b, e);
	} else if (force) {
		report(b, e);
	}
}

static void on_presence_reply(rbus_t *b, void *ctx, int64_t user, const redisReply *reply)
{
	int force = ctx != NULL;

	if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) {
		uent_t *e;
		/* Redis did not answer: a subscribe is still answered, from
		 * this node's connections alone. */
		if (force && (e = ufind(b, user)) && e->subs) {
			if (e->pstate < 0)
				e->pstate = bus_local_state(b->local, user);
			report(b, e);
		}
		return;
	}
	if (reply->elements >= 4)
		rc_heard(b, user, rint_at(reply, 3));
	presence_seen(b, user, (int)rint_at(reply, 0), rint_at(reply, 1), (uint64_t)rint_at(reply, 2), force);
}

/* count: user's connections here, to be written (-1: leave as is). */
static int presence_eval(rbus_t *b, int64_t user, int state, int count, int force)
{
	char node[16], st[8], u[24], dead[16], cn[16];
	const char *args[5] = {node, st, u, dead, cn};

	snprintf(node, sizeof node, "%" PRIu32, b->node);
	snprintf(st, sizeof st, "%d", state);
	snprintf(u, sizeof u, "%" PRId64, user);
	snprintf(dead, sizeof dead, "%d", b->dead_ms);
	snprintf(cn, sizeof cn, "%d", count);
	return rb_eval(b, on_presence_reply, force ? (void *)1 : NULL, user, lua_presence, 5, args);
}

/* Writes user's state on this node to Redis when it is not what Redis
 * has (or always, forced). */
static void write_state(rbus_t *b, int64_t user, int force)
{
	int st = bus_local_state(b->local, user);
	/* Counted only under a cap: without one, nothing changes for Redis. */
	int n = b->max_per_user ? (int)bus_connections(b->local, user) : -1;
	uent_t *e = ufind(b, user);

	if (b->stopping)
		return;
	if (!e) {
		if (st == BUS_ABSENT && !force)
			return;
		if (!(e = uget(b, user))) {
			log_error("bus: out of memory for user %" PRId64 "'s registration", user);
			b->resync_pending = 1;
			return;
		}
	}
	if (!force && e->wstate == st && e->wcount == n)
		return;
	if (!atomic_load(&b->cmd_up) || presence_eval(b, user, st, n, 0) < 0) {
		e->wstate = -1; /* written when Redis is back */
		b->resync_pending = 1;
		return;
	}
	e->wstate = st;
	e->wcount = n;
	if (n <= 0)
		rc_set(b, user, 0); /* told of no changes from now on */
	uidle(b, e);
}

typedef struct users_acc {
	int64_t *v;
	size_t n, cap;
	int oom;
} users_acc_t;

static void acc_push(users_acc_t *a, int64_t user)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 256;
		int64_t *v = realloc(a->v, cap * sizeof *v);
		if (!v) {
			a->oom = 1;
			return;
		}
		a->v = v;
		a->cap = cap;
	}
	a->v[a->n++] = user;
}

static void acc_local(void *ud, int64_t user)
{
	acc_push(ud, user);
}

/* Writes every entry marked -1 again; what cannot be sent now is left
 * marked for the next heartbeat. */
static void flush_unknown(rbus_t *b)
{
	users_acc_t a = {0};
	size_t i;

	b->resync_pending = 0;
	for (i = 0; i < b->nub; i++)
		for (uent_t *e = b->ub[i]; e; e = e->next)
			if (e->wstate < 0)
				acc_push(&a, e->user);
	if (a.oom)
		b->resync_pending = 1;
	for (i = 0; i < a.n; i++)
		write_state(b, a.v[i], 1);
	free(a.v);
}

/* Registers every local user again: Redis may have lost them. */
static void resync_registry(rbus_t *b)
{
	users_acc_t a = {0};
	size_t i;

	for (i = 0; i < b->nub; i++)
		for (uent_t *e = b->ub[i]; e; e = e->next)
			if (e->wstate != BUS_ABSENT)
				e->wstate = -1;
	bus_local_users(b->local, acc_local, &a);
	for (i = 0; i < a.n; i++) {
		uent_t *e = uget(b, a.v[i]);
		if (e)
			e->wstate = -1;
		else
			a.oom = 1;
	}
	if (a.oom)
		log_error("bus: out of memory registering users again; some stay unknown to other nodes");
	free(a.v);
	flush_unknown(b);
}

/* Reads every subscribed user's state again (after a gap in what the
 * subscriber heard, or a Redis that forgot), reporting what changed. */
static void reread_subs(rbus_t *b, int reset)
{
	size_t i;

	for (i = 0; i < b->nub; i++)
		for (uent_t *e = b->ub[i]; e; e = e->next)
			if (e->subs) {
				if (reset)
					e->rv = 0;
				presence_eval(b, e->user, -1, -1, 0);
			}
}

/* Reads again what every user held here has elsewhere (after a gap in
 * what the subscriber heard). */
static void reread_counts(rbus_t *b)
{
	size_t i;

	if (!b->max_per_user)
		return;
	for (i = 0; i < b->nub; i++)
		for (uent_t *e = b->ub[i]; e; e = e->next)
			if (e->wcount > 0)
				presence_eval(b, e->user, -1, -1, 0);
}

/* ---- node id, heartbeat, reaping ---- */

enum { REAP_PLAIN, REAP_START, REAP_STOP };

typedef struct reap_ctx {
	uint32_t node;
	int force, phase;
} reap_ctx_t;

static void heartbeat(rbus_t *b);
static void release(rbus_t *b);

static void start_done(rbus_t *b, int rc)
{
	pthread_mutex_lock(&b->lock);
	if (b->start_rc == 0)
		b->start_rc = rc;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

static void start_check(rbus_t *b)
{
	if (!b->started && b->registered && b->sub_up) {
		b->started = 1;
		start_done(b, 1);
	}
}

static int reap_send(rbus_t *b, reap_ctx_t *c);

static void on_reap(rbus_t *b, void *ctx, int64_t user, const redisReply *reply)
{
	reap_ctx_t *c = ctx;

	(void)user;
	if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1 && reap_send(b, c) == 0)
		return;
	if (c->phase == REAP_START) {
		heartbeat(b);
	} else if (c->phase == REAP_STOP) {
		release(b);
	} else if (reply) {
		log_info("bus: node %" PRIu32 " stopped heartbeating; its users left the registry", c->node);
	}
	free(c);
}

static int reap_send(rbus_t *b, reap_ctx_t *c)
{
	char node[16], dead[16], batch[16];
	const char *args[4] = {node, dead, c->force ? "1" : "0", batch};

	snprintf(node, sizeof node, "%" PRIu32, c->node);
	snprintf(dead, sizeof dead, "%d", b->dead_ms);
	snprintf(batch, sizeof batch, "%d", REAP_BATCH);
	return rb_eval(b, on_reap, c, 0, lua_reap, 4, args);
}

static void reap(rbus_t *b, uint32_t node, int force, int phase)
{
	reap_ctx_t *c = malloc(sizeof *c);

	if (c) {
		*c = (reap_ctx_t){node, force, phase};
		if (reap_send(b, c) == 0)
			return;
		free(c);
	}
	if (phase == REAP_START)
		heartbeat(b);
	else if (phase == REAP_STOP)
		release(b);
}

static int by_node(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Keeps the live nodes a heartbeat read, ascending, this node among them
 * (it has just beaten). Out of memory: the last list stays. */
static void note_live(rbus_t *b, const redisReply *nodes)
{
	size_t i, n = 0;
	uint32_t *v = malloc((nodes->elements + 1) * sizeof *v);

	if (!v)
		return;
	v[n++] = b->node;
	for (i = 0; i < nodes->elements; i++) {
		uint32_t node;
		if (nodes->element[i]->type != REDIS_REPLY_STRING)
			continue;
		node = (uint32_t)strtoul(nodes->element[i]->str, NULL, 10);
		if (node != b->node)
			v[n++] = node;
	}
	qsort(v, n, sizeof *v, by_node);
	pthread_mutex_lock(&b->lock);
	free(b->live);
	b->live = v;
	b->nlive = n;
	pthread_mutex_unlock(&b->lock);
}

static void on_heartbeat(rbus_t *b, void *ctx, int64_t user, const redisReply *reply)
{
	size_t i;

	(void)ctx;
	(void)user;
	if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
		return;
	if (rint_at(reply, 0) != 1) {
		if (rate_ok(&b->claim_logged_at))
			log_error("bus: node id %" PRIu32 " is claimed in Redis by another live node; ids must be "
			          "unique (this node keeps its connections but is not registered)",
			          b->node);
		return;
	}
	if (!b->registered) {
		b->registered = 1;
		start_check(b);
	} else if (rint_at(reply, 1) != 1 && !b->just_resynced) {
		/* Taken for dead (a stall, or a Redis that forgot us): our users
		 * may have been reaped. */
		log_warn("bus: node %" PRIu32 " was taken for dead; registering its users again", b->node);
		resync_registry(b);
	}
	b->just_resynced = 0;
	if (b->resync_pending)
		flush_unknown(b);
	if (reply->elements >= 4 && reply->element[3]->type == REDIS_REPLY_ARRAY)
		note_live(b, reply->element[3]);
	if (reply->element[2]->type != REDIS_REPLY_ARRAY)
		return;
	for (i = 0; i < reply->element[2]->elements; i++) {
		const redisReply *d = reply->element[2]->element[i];
		uint32_t node;
		if (d->type != REDIS_REPLY_STRING)
			continue;
		node = (uint32_t)strtoul(d->str, NULL, 10);
		if (node != b->node)
			reap(b, node, 0, REAP_PLAIN);
	}
}

static void heartbeat(rbus_t *b)
{
	char node[16], claim[16], dead[16];
	const char *args[4] = {node, b->token, claim, dead};

	snprintf(node, sizeof node, "%" PRIu32, b->node);
	snprintf(claim, sizeof claim, "%d", b->claim_ms);
	snprintf(dead, sizeof dead, "%d", b->dead_ms);
	rb_eval(b, on_heartbeat, NULL, 0, lua_heartbeat, 4, args);
}

static void on_claim(rbus_t *b, void *ctx, int64_t user, const redisReply *reply)
{
	(void)ctx;
	(void)user;
	if (!reply)
		return; /* tried again at the next connect */
	if (reply->type == REDIS_REPLY_NIL) {
		log_error("bus: node id %" PRIu32 " is in use by another live node; ids must be unique", b->node);
		start_done(b, -EADDRINUSE);
		return;
	}
	b->claimed = 1;
	/* What a previous life of this id left behind goes first. */
	reap(b, b->node, 1, REAP_START);
}

static void claim(rbus_t *b)
{
	char key[32], px[16];
	const char *argv[6] = {"SET", key, b->token, "NX", "PX", px};

	snprintf(key, sizeof key, "parley:node:%" PRIu32, b->node);
	snprintf(px, sizeof px, "%d", b->claim_ms);
	rb_cmd(b, on_claim, NULL, 0, 6, argv, NULL);
}

static void on_release(rbus_t *b, void *ctx, int64_t user, const redisReply *reply)
{
	(void)ctx;
	(void)user;
	(void)reply;
	b->shutdown_done = 1;
}

static void release(rbus_t *b)
{
	char node[16];
	const char *args[2] = {node, b->token};

	snprintf(node, sizeof node, "%" PRIu32, b->node);
	if (rb_eval(b, on_release, NULL, 0, lua_release, 2, args) < 0)
		b->shutdown_done = 1;
}

static void on_cmd_state(redis_t *r, void *ud, int up)
{
	rbus_t *b = ud;

	(void)r;
	atomic_store(&b->cmd_up, up);
	if (!up) {
		b->was_down = 1;
		rc_clear(b);
		log_warn("bus: Redis is away; remote delivery stops until it is back%s",
		         b->max_per_user ? ", and the connection cap counts this node's connections only" : "");
		return;
	}
	if (b->stopping)
		return;
	if (!b->claimed) {
		claim(b);
		return;
	}
	log_info("bus: Redis is back; registering this node's users again");
	/* In this order on one connection: the heartbeat (taking the id back
	 * from a Redis that forgot it) before the users it makes alive. */
	heartbeat(b);
	resync_registry(b);
	b->just_resynced = 1;
	reread_subs(b, 1);
}

static void on_sub_state(redis_t *r, void *ud, int up)
{
	rbus_t *b = ud;

	(void)r;
	if (!up) {
		b->sub_up = 0;
		b->sub_was_down = 1;
		return;
	}
	b->sub_up = 1;
	if (!b->started)
		start_check(b);
	else if (b->sub_was_down && !b->stopping) {
		reread_subs(b, 0); /* changes published while we were not listening */
		reread_counts(b);
	}
}

/* ---- envelopes ---- */

static void publish(rbus_t *b, uint32_t node, const uint8_t *env, size_t len)
{
	char chan[32];
	const char *argv[3] = {"PUBLISH", chan, (const char *)env};
	size_t lens[3] = {7, 0, len};

	snprintf(chan, sizeof chan, "parley:to:%" PRIu32, node);
	lens[1] = strlen(chan);
	if (rb_cmd(b, NULL, NULL, 0, 3, argv, lens) == 0)
		atomic_fetch_add(&b->publishes, 1);
	else
		atomic_fetch_add(&b->dropped, 1);
}

static void malformed(rbus_t *b, const char *what, size_t len)
{
	atomic_fetch_add(&b->malformed, 1);
	if (rate_ok(&b->malformed_logged_at))
		log_warn("bus: dropped a malformed %s of %zu bytes", what, len);
}

static void on_node_msg(redis_t *r, void *ud, const char *channel, const char *msg, size_t len)
{
	rbus_t *b = ud;
	bus_envelope_t env;
	int64_t small[64], *users = small;
	sbuf_t *f;
	uint32_t i;

	(void)r;
	(void)channel;
	if (b->muted)
		return;
	if (bus_envelope_parse((const uint8_t *)msg, len, &env) < 0) {
		malformed(b, "envelope", len);
		return;
	}
	atomic_fetch_add(&b->received, 1);
	if (env.type == 'K') {
		bus_kick_device(b->local, env.user, env.device);
		return;
	}
	if (!(f = sbuf_copy(env.frame, env.frame_len)))
		goto oom;
	f->conv = env.conv;
	f->seq = env.seq;
	if (env.type == 'S') {
		bus_send(b->local, env.conn, f);
	} else {
		if (env.n > sizeof small / sizeof *small && !(users = malloc(env.n * sizeof *users))) {
			sbuf_unref(f);
			goto oom;
		}
		for (i = 0; i < env.n; i++)
			users[i] = bus_envelope_user(&env, i);
		bus_deliver_many(b->local, users, env.n, env.except_user, env.except_device, f, NULL, NULL);
		if (users != small)
			free(users);
	}
	sbuf_unref(f);
	return;
oom:
	log_error("bus: out of memory for a frame from another node; dropped");
}

/* "<node> <kind><bytes>" from any node, this one's own included. */
static void on_notes_msg(redis_t *r, void *ud, const char *channel, const char *msg, size_t len)
{
	rbus_t *b = ud;
	const char *p = msg, *end = msg + len;
	unsigned long node = 0;
	int k;

	(void)r;
	(void)channel;
	if (b->muted)
		return;
	while (p < end && *p >= '0' && *p <= '9' && node < 0xffffffffUL)
		node = node * 10 + (unsigned long)(*p++ - '0');
	if (p == msg || end - p < 2 || *p != ' ' || p[1] < 'A' || p[1] > 'Z') {
		malformed(b, "note", len);
		return;
	}
	if (node == b->node)
		return;
	k = p[1] - 'A';
	atomic_fetch_add(&b->notes_heard, 1);
	if (b->note_fn[k])
		b->note_fn[k](b->note_ud[k], (const uint8_t *)p + 2, (size_t)(end - p - 2));
}

/* "<user> <connections on other live nodes>", for a user this node holds. */
static void on_count_msg(redis_t *r, void *ud, const char *channel, const char *msg, size_t len)
{
	rbus_t *b = ud;
	long long user, n;
	int used = 0;

	(void)r;
	(void)channel;
	if (sscanf(msg, "%lld %lld%n", &user, &n, &used) != 2 || (size_t)used != len || n < 0) {
		malformed(b, "connection count", len);
		return;
	}
	rc_heard(b, user, n);
}

static void on_presence_msg(redis_t *r, void *ud, const char *channel, const char *msg, size_t len)
{
	rbus_t *b = ud;
	long long user, state, seen;
	unsigned long long rv;
	int used = 0;

	(void)r;
	(void)channel;
	if (sscanf(msg, "%lld %lld %lld %llu%n", &user, &state, &seen, &rv, &used) != 4 || (size_t)used != len ||
	    state < 0 || state > 2) {
		malformed(b, "presence message", len);
		return;
	}
	presence_seen(b, user, (int)state, seen, rv, 0);
}

/* ---- jobs from other threads ---- */

typedef struct job {
	rbus_t *b;
	char type;             /* 'D' deliver, 'S' send, 'K' kick */
	int64_t except_user, except_device, device;
	int64_t skip_node;     /* 'D': a node left out (-1: none) */
	uint64_t conn;
	sbuf_t *frame;
	bus_unreached_fn report;
	void *ud;
	size_t n;
	int64_t *users;
	uint8_t *unreached;    /* per user: not reached on this node */
} job_t;

static void job_free(job_t *j)
{
	sbuf_unref(j->frame);
	free(j);
}

/* Reports the users reached on no node: those unreached here whose
 * lookup (when there is one) found no other node. */
static void job_report(job_t *j, const redisReply *nodes)
{
	int64_t small[64] = {0}, *out = small;
	size_t i, k, n = 0;

	if (!j->report)
		return;
	if (j->n > sizeof small / sizeof *small && !(out = malloc(j->n * sizeof *out))) {
		log_error("bus: out of memory for a report of %zu users; reporting none", j->n);
		j->report(j->ud, small, 0);
		return;
	}
	for (i = 0; i < j->n; i++) {
		int remote = 0;
		if (!j->unreached[i])
			continue;
		if (nodes && i < nodes->elements && nodes->element[i]->type == REDIS_REPLY_ARRAY)
			for (k = 0; k < nodes->element[i]->elements; k++) {
				long long node = nodes->element[i]->element[k]->integer;
				remote |= node != (long long)j->b->node && node != j->skip_node;
			}
		if (!remote)
			out[n++] = j->users[i];
	}
	j->report(j->ud, out, n);
	if (out != small)
		free(out);
}

static void drop_note(rbus_t *b)
{
	unsigned long long n = atomic_fetch_add(&b->dropped, 1) + 1;
	long long now = clock_mono_ms(), last = atomic_load(&b->dropped_logged_at);

	if ((!last || now - last >= LOG_EVERY_MS) && atomic_compare_exchange_strong(&b->dropped_logged_at, &last, now))
		log_warn("bus: Redis is away or behind; %llu deliveries to other nodes dropped so far (clients "
		         "catch up on resume)",
		         n);
}

typedef struct target {
	uint32_t node;
	size_t n;
	size_t *idx;
} target_t;

static void publish_deliver(rbus_t *b, job_t *j, const target_t *t)
{
	size_t len = BUS_ENV_D_HEAD + 8 * t->n + j->frame->len, i;
	uint8_t *env = malloc(len);
	bus_envelope_t head = {.type = 'D', .n = (uint32_t)t->n, .except_user = j->except_user,
	                       .except_device = j->except_device, .conv = j->frame->conv, .seq = j->frame->seq};

	if (!env) {
		drop_note(b);
		return;
	}
	bus_envelope_head(&head, env);
	for (i = 0; i < t->n; i++)
		bus_envelope_put64(env + BUS_ENV_D_HEAD + 8 * i, (uint64_t)j->users[t->idx[i]]);
	memcpy(env + BUS_ENV_D_HEAD + 8 * t->n, j->frame->data, j->frame->len);
	publish(b, t->node, env, len);
	free(env);
}

static void on_lookup(rbus_t *b, void *ctx, int64_t user, const redisReply *reply)
{
	job_t *j = ctx;
	target_t small[8], *t = small;
	size_t nt = 0, capt = 8, i, k, m;
	size_t *idx = NULL;

	(void)user;
	if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != j->n) {
		drop_note(b);
		job_report(j, NULL);
		job_free(j);
		return;
	}
	if (j->type == 'K') {
		uint8_t env[BUS_ENV_K_LEN];
		bus_envelope_t head = {.type = 'K', .user = j->users[0], .device = j->device};
		bus_envelope_head(&head, env);
		for (k = 0; k < reply->element[0]->elements; k++) {
			long long node = reply->element[0]->element[k]->integer;
			if (node != (long long)b->node)
				publish(b, (uint32_t)node, env, sizeof env);
		}
		job_free(j);
		return;
	}
	/* Group the users by node: one envelope per node, naming its users
	 * in the order (and as many times) they were named. */
	if (!(idx = malloc((j->n ? j->n : 1) * sizeof *idx * 2)))
		goto oom;
	for (i = 0; i < j->n; i++) {
		const redisReply *nodes = reply->element[i];
		if (nodes->type != REDIS_REPLY_ARRAY)
			continue;
		for (k = 0; k < nodes->elements; k++) {
			uint32_t node = (uint32_t)nodes->element[k]->integer;
			if (node == b->node || (int64_t)node == j->skip_node)
				continue;
			for (m = 0; m < nt && t[m].node != node; m++)
				;
			if (m == nt) {
				if (nt == capt) {
					target_t *nt2 = malloc(2 * capt * sizeof *nt2);
					if (!nt2)
						goto oom;
					memcpy(nt2, t, nt * sizeof *t);
					if (t != small)
						free(t);
					t = nt2;
					capt *= 2;
				}
				t[nt++] = (target_t){node, 0, NULL};
			}
			t[m].n++;
		}
	}
	/* Each node's share of idx: at most n entries each, so lay them out
	 * by count. */
	{
		size_t total = 0, off = 0;
		for (m = 0; m < nt; m++)
			total += t[m].n;
		if (total > 2 * (j->n ? j->n : 1)) {
			free(idx);
			if (!(idx = malloc(total * sizeof *idx)))
				goto oom;
		}
		for (m = 0; m < nt; m++) {
			t[m].idx = idx + off;
			off += t[m].n;
			t[m].n = 0;
		}
	}
	for (i = 0; i < j->n; i++) {
		const redisReply *nodes = reply->element[i];
		if (nodes->type != REDIS_REPLY_ARRAY)
			continue;
		for (k = 0; k < nodes->elements; k++) {
			uint32_t node = (uint32_t)nodes->element[k]->integer;
			if (node == b->node || (int64_t)node == j->skip_node)
				continue;
			for (m = 0; t[m].node != node; m++)
				;
			t[m].idx[t[m].n++] = i;
		}
	}
	for (m = 0; m < nt; m++)
		publish_deliver(b, j, &t[m]);
	job_report(j, reply);
	free(idx);
	if (t != small)
		free(t);
	job_free(j);
	return;
oom:
	log_error("bus: out of memory delivering to other nodes; dropped");
	atomic_fetch_add(&b->dropped, 1);
	job_report(j, reply);
	free(idx);
	if (t != small)
		free(t);
	job_free(j);
}

static void run_job(loop_t *loop, void *p, uint64_t u)
{
	job_t *j = p;
	rbus_t *b = j->b;

	(void)loop;
	(void)u;
	atomic_fetch_sub(&b->queued, 1);
	if (j->type == 'S') {
		size_t len = BUS_ENV_S_HEAD + j->frame->len;
		uint8_t *env = malloc(len);
		if (env && !b->stopping && atomic_load(&b->cmd_up)) {
			bus_envelope_t head = {.type = 'S', .conn = j->conn, .conv = j->frame->conv, .seq = j->frame->seq};
			bus_envelope_head(&head, env);
			memcpy(env + BUS_ENV_S_HEAD, j->frame->data, j->frame->len);
			publish(b, BUS_CONN_NODE(j->conn), env, len);
		} else {
			drop_note(b);
		}
		free(env);
		job_free(j);
	} else {
		const char *small[66], **args = small;
		char *nums = malloc(j->n * 24 + 16);
		size_t i;
		int rc = -ENOMEM;

		if (j->n + 1 > sizeof small / sizeof *small && !(args = malloc((j->n + 1) * sizeof *args)))
			args = NULL;
		if (nums && args && !b->stopping) {
			snprintf(nums, 16, "%d", b->dead_ms);
			args[0] = nums;
			for (i = 0; i < j->n; i++) {
				char *s = nums + 16 + 24 * i;
				snprintf(s, 24, "%" PRId64, j->users[i]);
				args[i + 1] = s;
			}
			rc = rb_eval(b, on_lookup, j, 0, lua_lookup, (int)j->n + 1, args);
		}
		free(nums);
		if (args != small)
			free(args);
		if (rc < 0) {
			drop_note(b);
			job_report(j, NULL);
			job_free(j);
		}
	}
	settled_check(b);
}

/* Whether remote work may be queued now; on 1 the caller posts and the
 * task takes the count back. */
static int may_queue(rbus_t *b)
{
	if (atomic_fetch_add(&b->queued, 1) >= MAX_QUEUED || atomic_load(&b->closing) || !atomic_load(&b->cmd_up)) {
		atomic_fetch_sub(&b->queued, 1);
		return 0;
	}
	return 1;
}

static int post_job(rbus_t *b, job_t *j)
{
	if (loop_post(b->loop, run_job, j, 0) == 0)
		return 0;
	atomic_fetch_sub(&b->queued, 1);
	return -1;
}

static job_t *job_new(rbus_t *b, char type, size_t n, sbuf_t *frame)
{
	job_t *j = calloc(1, sizeof *j + n * (sizeof(int64_t) + 1));

	if (!j)
		return NULL;
	j->b = b;
	j->type = type;
	j->skip_node = -1;
	j->n = n;
	j->users = (int64_t *)(j + 1);
	j->unreached = (uint8_t *)(j->users + n);
	j->frame = frame ? sbuf_ref(frame) : NULL;
	return j;
}

/* A job for the bus thread with a slot in its queue, or NULL (the drop
 * counted) when the queue is full, Redis is away, or memory is out. */
static job_t *job_reserve(rbus_t *b, char type, size_t n, sbuf_t *frame)
{
	job_t *j;

	if (!may_queue(b)) {
		drop_note(b);
		return NULL;
	}
	if (!(j = job_new(b, type, n, frame))) {
		atomic_fetch_sub(&b->queued, 1);
		drop_note(b);
	}
	return j;
}

/* Hands j to the bus thread; -1 (j freed, the drop counted) when the
 * loop cannot take it. */
static int job_post(rbus_t *b, job_t *j)
{
	if (post_job(b, j) == 0)
		return 0;
	job_free(j);
	drop_note(b);
	return -1;
}

/* ---- tasks for the thread's own state ---- */

static void task_changed(loop_t *loop, void *p, uint64_t u)
{
	rbus_t *b = p;

	(void)loop;
	atomic_fetch_sub(&b->queued, 1);
	write_state(b, (int64_t)u, 0);
	settled_check(b);
}

static void task_subscribe(loop_t *loop, void *p, uint64_t u)
{
	rbus_t *b = p;
	int64_t user = (int64_t)u;
	uent_t *e;

	(void)loop;
	atomic_fetch_sub(&b->queued, 1);
	if (!(e = uget(b, user))) {
		log_error("bus: out of memory for a presence subscription");
	} else {
		e->subs++;
		if (presence_eval(b, user, -1, -1, 1) < 0) {
			if (e->pstate < 0)
				e->pstate = bus_local_state(b->local, user);
			report(b, e);
		}
	}
	settled_check(b);
}

static void task_unsubscribe(loop_t *loop, void *p, uint64_t u)
{
	rbus_t *b = p;
	uent_t *e = ufind(b, (int64_t)u);

	(void)loop;
	atomic_fetch_sub(&b->queued, 1);
	if (e && e->subs && --e->subs == 0) {
		e->pstate = -1;
		e->rv = 0;
		uidle(b, e);
	}
	settled_check(b);
}

/* A bus_sync: a PING behind the registration writes this thread already
 * sent on the same connection, so that its reply means Redis has run
 * them. */
typedef struct syncw {
	struct syncw *next;
	bus_sync_fn fn;
	void *arg;
} syncw_t;

/* The barrier is passed (or Redis is away, or the bus is stopping). Once
 * muted, the sink's peers are going: kept for bus_free, which says so. */
static void sync_done(rbus_t *b, syncw_t *w)
{
	if (b->muted) {
		w->next = b->muted_syncs;
		b->muted_syncs = w;
		return;
	}
	w->fn(w->arg, 1);
	free(w);
}

static void on_sync_reply(rbus_t *b, void *ctx, int64_t user, const redisReply *reply)
{
	(void)user;
	(void)reply; /* an error or a lost connection passes it too: the writes are redone on reconnect */
	sync_done(b, ctx);
}

static void task_sync(loop_t *loop, void *p, uint64_t u)
{
	rbus_t *b = p;
	syncw_t *w = (syncw_t *)(uintptr_t)u;
	const char *argv[] = {"PING"};

	(void)loop;
	atomic_fetch_sub(&b->queued, 1);
	if (b->stopping || rb_cmd(b, on_sync_reply, w, 0, 1, argv, NULL) < 0)
		sync_done(b, w);
	settled_check(b);
}

static void post_task(rbus_t *b, loop_task_fn fn, uint64_t u)
{
	atomic_fetch_add(&b->queued, 1);
	if (loop_post(b->loop, fn, b, u) < 0) {
		atomic_fetch_sub(&b->queued, 1);
		log_error("bus: out of memory queueing to the bus thread");
	}
}

static void settled_check(rbus_t *b)
{
	waiter_t *w, *next;

	if (!b->waiters || b->inflight || atomic_load(&b->queued))
		return;
	for (w = b->waiters, b->waiters = NULL; w; w = next) {
		next = w->next;
		pthread_mutex_lock(&w->lock);
		w->done = 1;
		pthread_cond_signal(&w->cond);
		pthread_mutex_unlock(&w->lock);
	}
}

static void task_settle(loop_t *loop, void *p, uint64_t u)
{
	rbus_t *b = loop_hooks_ud(loop);
	waiter_t *w = p;

	(void)u;
	atomic_fetch_sub(&b->queued, 1);
	w->next = b->waiters;
	b->waiters = w;
	settled_check(b);
}

static void stop_check(rbus_t *b)
{
	if (!b->stopping)
		return;
	if ((b->shutdown_done && !b->inflight && !atomic_load(&b->queued)) || clock_mono_ms() >= b->stop_deadline)
		loop_stop(b->loop);
}

static void task_stop(loop_t *loop, void *p, uint64_t u)
{
	rbus_t *b = p;

	(void)loop;
	atomic_fetch_sub(&b->queued, 1);
	b->stopping = 1;
	b->stop_deadline = clock_mono_ms() + SHUTDOWN_MS;
	b->abandon = (int)u;
	if (b->abandon || !b->claimed || !atomic_load(&b->cmd_up))
		b->shutdown_done = 1;
	else
		reap(b, b->node, 1, REAP_STOP); /* then release */
	stop_check(b);
}

static void on_timer(loop_t *loop, loop_watch_t *w, uint32_t events)
{
	rbus_t *b = (rbus_t *)((char *)w - offsetof(rbus_t, tw));
	uint64_t n;

	(void)loop;
	(void)events;
	if (read(b->tfd, &n, sizeof n) < 0)
		return;
	if (b->stopping) {
		stop_check(b);
		return;
	}
	if (b->claimed && atomic_load(&b->cmd_up))
		heartbeat(b);
	if (!b->muted) {
		void (*fn)(void *) = atomic_load_explicit(&b->beat_fn, memory_order_acquire);
		if (fn)
			fn(b->beat_ud);
	}
}

static void *run(void *arg)
{
	rbus_t *b = arg;

	log_set_thread_name("bus");
	loop_run(b->loop);
	atomic_store(&b->cmd_up, 0); /* nothing more is sent */
	/* Commands still pending complete now, as disconnected. */
	redis_free(b->cmd);
	redis_free(b->sub);
	b->cmd = b->sub = NULL;
	return NULL;
}

/* ---- the interface ---- */

static void rb_destroy(rbus_t *b, int abandon)
{
	size_t i;

	if (b->thread_started) {
		atomic_store(&b->closing, 1);
		post_task(b, task_stop, (uint64_t)abandon);
		pthread_join(b->thread, NULL);
	} else {
		redis_free(b->cmd);
		redis_free(b->sub);
	}
	if (b->tfd >= 0)
		close(b->tfd);
	loop_free(b->loop); /* runs what was still posted: a sync among them ends here */
	while (b->muted_syncs) {
		syncw_t *w = b->muted_syncs;
		b->muted_syncs = w->next;
		w->fn(w->arg, 0);
		free(w);
	}
	for (i = 0; i < b->nub; i++) {
		uent_t *e = b->ub[i], *next;
		for (; e; e = next) {
			next = e->next;
			free(e);
		}
	}
	free(b->ub);
	free(b->live);
	rc_clear(b);
	for (i = 0; i < RC_SHARDS; i++)
		pthread_mutex_destroy(&b->rc[i].lock);
	bus_free(b->local);
	pthread_mutex_destroy(&b->lock);
	pthread_cond_destroy(&b->cond);
	free(b);
}

bus_t *bus_redis_open(const bus_sink_t *sink, uint32_t node, unsigned max_per_user, const char *redis_url,
                      const bus_redis_opts_t *opts)
{
	rbus_t *b = calloc(1, sizeof *b);
	bus_sink_t inner = {sink->deliver, sink->kick, NULL, sink->ud};
	loop_hooks_t hooks = {NULL, NULL, NULL};
	redis_opts_t ro = {0};
	uint8_t raw[16];
	struct itimerspec its;
	struct timespec deadline;
	int timeout_ms, rc, i;

	if (!b)
		return NULL;
	b->base.vt = &redis_vtab;
	b->sink = *sink;
	b->node = node;
	b->max_per_user = max_per_user;
	b->tfd = -1;
	for (i = 0; i < RC_SHARDS; i++)
		pthread_mutex_init(&b->rc[i].lock, NULL);
	b->hb_ms = opts && opts->heartbeat_ms > 0 ? opts->heartbeat_ms : BUS_REDIS_HEARTBEAT_MS;
	b->dead_ms = 3 * b->hb_ms;
	b->claim_ms = 5 * b->hb_ms;
	timeout_ms = opts && opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 5000;
	snprintf(b->url, sizeof b->url, "%s", redis_url);
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->cond, NULL);
	hooks.ud = b;
	b->nub = 256;
	if (!(b->ub = calloc(b->nub, sizeof *b->ub)))
		goto err;
	if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
		log_error("bus: getrandom: %s", strerror(errno));
		goto err;
	}
	for (i = 0; i < 16; i++)
		snprintf(b->token + 2 * i, 3, "%02x", raw[i]);
	if (!(b->local = bus_local_new(&inner, node, max_per_user)))
		goto err;
	if (!(b->loop = loop_new(&hooks)))
		goto err;
	if ((b->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0)
		goto err;
	b->tw.on_io = on_timer;
	if (loop_watch_add(b->loop, b->tfd, EPOLLIN, &b->tw) < 0)
		goto err;
	ro.on_state = on_cmd_state;
	ro.ud = b;
	ro.name = "bus";
	/* Before the thread runs: the clients are its from then on. */
	if (!(b->cmd = redis_new(b->loop, redis_url, &ro)))
		goto err;
	ro.on_state = on_sub_state;
	ro.name = "bus-subscriber";
	if (!(b->sub = redis_new(b->loop, redis_url, &ro)))
		goto err;
	{
		char chan[32], cchan[32];
		snprintf(chan, sizeof chan, "parley:to:%" PRIu32, node);
		snprintf(cchan, sizeof cchan, "parley:cc:%" PRIu32, node);
		if (redis_subscribe(b->sub, chan, on_node_msg, b) < 0 ||
		    redis_subscribe(b->sub, PRESENCE_CHANNEL, on_presence_msg, b) < 0 ||
		    redis_subscribe(b->sub, NOTES_CHANNEL, on_notes_msg, b) < 0 ||
		    (max_per_user && redis_subscribe(b->sub, cchan, on_count_msg, b) < 0))
			goto err;
	}
	its.it_interval.tv_sec = b->hb_ms / 1000;
	its.it_interval.tv_nsec = (long)(b->hb_ms % 1000) * 1000000;
	its.it_value = its.it_interval;
	if (timerfd_settime(b->tfd, 0, &its, NULL) < 0)
		goto err;
	if (pthread_create(&b->thread, NULL, run, b) != 0)
		goto err;
	b->thread_started = 1;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&b->lock);
	while (b->start_rc == 0)
		if (pthread_cond_timedwait(&b->cond, &b->lock, &deadline) == ETIMEDOUT)
			break;
	rc = b->start_rc;
	if (rc == 0)
		b->start_rc = -ETIMEDOUT;
	pthread_mutex_unlock(&b->lock);
	if (rc == 1) {
		log_info("bus: node %" PRIu32 " registered in Redis at %s", node, redis_url);
		return &b->base;
	}
	if (rc == 0)
		log_error("bus: Redis at %s did not answer within %d ms; a node with --redis needs it to start "
		          "(it claims its node id there)",
		          redis_url, timeout_ms);
	/* Not ours to release: the id may be another node's. */
	rb_destroy(b, 1);
	return NULL;
err:
	log_error("bus: cannot start the Redis bus: %s", errno ? strerror(errno) : "see above");
	rb_destroy(b, 1);
	return NULL;
}

bus_t *bus_redis_new(const bus_sink_t *sink, uint32_t node, unsigned max_per_user, const char *redis_url)
{
	return bus_redis_open(sink, node, max_per_user, redis_url, NULL);
}

static void redis_bus_free(bus_t *base)
{
	rb_destroy((rbus_t *)base, 0);
}

void bus_redis_abandon(bus_t *base)
{
	if (base)
		rb_destroy((rbus_t *)base, 1);
}

void bus_redis_stats(bus_t *base, bus_redis_stats_t *out)
{
	rbus_t *b = (rbus_t *)base;

	out->publishes = atomic_load(&b->publishes);
	out->received = atomic_load(&b->received);
	out->dropped = atomic_load(&b->dropped);
	out->malformed = atomic_load(&b->malformed);
	out->refused_elsewhere = atomic_load(&b->refused_remote);
	out->users_elsewhere = atomic_load(&b->rc_entries);
	out->notes_sent = atomic_load(&b->notes_sent);
	out->notes_heard = atomic_load(&b->notes_heard);
	out->notes_dropped = atomic_load(&b->notes_dropped);
}

typedef struct note {
	rbus_t *b;
	int kind;
	bus_redis_note_fn fn;
	void *ud;
	size_t len;
	char data[];
} note_t;

static void task_on_note(loop_t *loop, void *p, uint64_t u)
{
	note_t *n = p;

	(void)loop;
	(void)u;
	atomic_fetch_sub(&n->b->queued, 1);
	n->b->note_fn[n->kind] = n->fn;
	n->b->note_ud[n->kind] = n->ud;
	free(n);
}

int bus_redis_on_note(bus_t *base, char kind, bus_redis_note_fn fn, void *ud)
{
	rbus_t *b = (rbus_t *)base;
	note_t *n;

	if (kind < 'A' || kind > 'Z')
		return -EINVAL;
	if (!(n = calloc(1, sizeof *n)))
		return -ENOMEM;
	*n = (note_t){.b = b, .kind = kind - 'A', .fn = fn, .ud = ud};
	atomic_fetch_add(&b->queued, 1);
	if (loop_post(b->loop, task_on_note, n, 0) < 0) {
		atomic_fetch_sub(&b->queued, 1);
		free(n);
		return -ENOMEM;
	}
	return 0;
}

static void note_dropped(rbus_t *b)
{
	unsigned long long n = atomic_fetch_add(&b->notes_dropped, 1) + 1;
	long long now = clock_mono_ms(), last = atomic_load(&b->notes_logged_at);

	if ((!last || now - last >= LOG_EVERY_MS) && atomic_compare_exchange_strong(&b->notes_logged_at, &last, now))
		log_warn("bus: Redis is away or behind; %llu notes for other nodes dropped so far (login backoff "
		         "counts this node's failures only meanwhile)",
		         n);
}

static void task_note(loop_t *loop, void *p, uint64_t u)
{
	note_t *n = p;
	rbus_t *b = n->b;
	char head[16];
	const char *argv[3] = {"PUBLISH", NOTES_CHANNEL, n->data};
	size_t lens[3] = {7, sizeof NOTES_CHANNEL - 1, 0};
	int hl;

	(void)loop;
	(void)u;
	atomic_fetch_sub(&b->queued, 1);
	/* The head was left room for in front of the bytes. */
	hl = snprintf(head, sizeof head, "%" PRIu32 " %c", b->node, 'A' + n->kind);
	memcpy(n->data + 16 - hl, head, (size_t)hl);
	argv[2] = n->data + 16 - hl;
	lens[2] = (size_t)hl + n->len;
	if (!b->stopping && rb_cmd(b, NULL, NULL, 0, 3, argv, lens) == 0)
		atomic_fetch_add(&b->notes_sent, 1);
	else
		note_dropped(b);
	free(n);
	settled_check(b);
}

void bus_redis_note(bus_t *base, char kind, const void *bytes, size_t len)
{
	rbus_t *b = (rbus_t *)base;
	note_t *n;

	if (kind < 'A' || kind > 'Z')
		return;
	if (!may_queue(b)) {
		note_dropped(b);
		return;
	}
	if (!(n = malloc(sizeof *n + 16 + len))) {
		atomic_fetch_sub(&b->queued, 1);
		note_dropped(b);
		return;
	}
	*n = (note_t){.b = b, .kind = kind - 'A', .len = len};
	memcpy(n->data + 16, bytes, len);
	if (loop_post(b->loop, task_note, n, 0) < 0) {
		atomic_fetch_sub(&b->queued, 1);
		free(n);
		note_dropped(b);
	}
}

void bus_redis_on_beat(bus_t *base, void (*fn)(void *ud), void *ud)
{
	rbus_t *b = (rbus_t *)base;

	b->beat_ud = ud;
	atomic_store_explicit(&b->beat_fn, fn, memory_order_release);
}

unsigned bus_redis_elsewhere(bus_t *base, int64_t user)
{
	return rc_get((rbus_t *)base, user);
}

static void task_mute(loop_t *loop, void *p, uint64_t u)
{
	rbus_t *b = loop_hooks_ud(loop);
	waiter_t *w = p;

	(void)u;
	atomic_fetch_sub(&b->queued, 1);
	b->muted = 1;
	pthread_mutex_lock(&w->lock);
	w->done = 1;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

void bus_redis_mute(bus_t *base)
{
	rbus_t *b = (rbus_t *)base;
	waiter_t w = {0};

	if (!b)
		return;
	pthread_mutex_init(&w.lock, NULL);
	pthread_cond_init(&w.cond, NULL);
	atomic_fetch_add(&b->queued, 1);
	if (loop_post(b->loop, task_mute, &w, 0) == 0) {
		pthread_mutex_lock(&w.lock);
		while (!w.done)
			pthread_cond_wait(&w.cond, &w.lock);
		pthread_mutex_unlock(&w.lock);
	} else {
		atomic_fetch_sub(&b->queued, 1);
		log_error("bus: out of memory muting the bus thread");
	}
	pthread_mutex_destroy(&w.lock);
	pthread_cond_destroy(&w.cond);
}

int bus_redis_settle(bus_t *base, int timeout_ms)
{
	rbus_t *b = (rbus_t *)base;
	waiter_t w = {0};
	struct timespec deadline;
	int rc = 0;

	pthread_mutex_init(&w.lock, NULL);
	pthread_cond_init(&w.cond, NULL);
	atomic_fetch_add(&b->queued, 1);
	if (loop_post(b->loop, task_settle, &w, 0) < 0) {
		atomic_fetch_sub(&b->queued, 1);
		rc = -1;
		goto out;
	}
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&w.lock);
	while (!w.done)
		if (pthread_cond_timedwait(&w.cond, &w.lock, &deadline) == ETIMEDOUT)
			break;
	rc = w.done ? 0 : -1;
	pthread_mutex_unlock(&w.lock);
	if (rc < 0) {
		/* The waiter is on the bus thread's list: it must not outlive
		 * this frame, so wait for it after all (Redis's timeouts bound
		 * how long). */
		pthread_mutex_lock(&w.lock);
		while (!w.done)
			pthread_cond_wait(&w.cond, &w.lock);
		pthread_mutex_unlock(&w.lock);
	}
out:
	pthread_mutex_destroy(&w.lock);
	pthread_cond_destroy(&w.cond);
	return rc;
}

static int rb_attach(bus_t *base, int64_t user, int64_t device, uint64_t conn)
{
	rbus_t *b = (rbus_t *)base;
	unsigned elsewhere = b->max_per_user ? rc_get(b, user) : 0;
	int rc;

	/* Connections on other nodes, as last heard: the cap holds across the
	 * fleet but for what crossed in flight (see the header). */
	if (elsewhere && (elsewhere >= b->max_per_user ||
	                  bus_connections(b->local, user) + elsewhere >= b->max_per_user)) {
		atomic_fetch_add(&b->refused_remote, 1);
		return BUS_FULL;
	}
	rc = bus_attach(b->local, user, device, conn);

	if (rc == 0 && !atomic_load(&b->closing))
		post_task(b, task_changed, (uint64_t)user);
	return rc;
}

static void rb_detach(bus_t *base, int64_t user, uint64_t conn)
{
	rbus_t *b = (rbus_t *)base;

	bus_detach(b->local, user, conn);
	if (!atomic_load(&b->closing))
		post_task(b, task_changed, (uint64_t)user);
}

static void rb_set_away(bus_t *base, int64_t user, uint64_t conn, int away)
{
	rbus_t *b = (rbus_t *)base;

	bus_set_away(b->local, user, conn, away);
	if (!atomic_load(&b->closing))
		post_task(b, task_changed, (uint64_t)user);
}

static void rb_deliver(bus_t *base, int64_t user, int64_t except_device, sbuf_t *frame)
{
	rbus_t *b = (rbus_t *)base;
	job_t *j;

	bus_deliver(b->local, user, except_device, frame);
	if (!(j = job_reserve(b, 'D', 1, frame)))
		return;
	j->users[0] = user;
	j->except_user = user;
	j->except_device = except_device;
	job_post(b, j);
}

typedef struct capture {
	int64_t *v;
	size_t n;
} capture_t;

static void capture_unreached(void *ud, const int64_t *users, size_t n)
{
	capture_t *c = ud;

	if (n && (c->v = malloc(n * sizeof *users)) != NULL) {
		memcpy(c->v, users, n * sizeof *users);
		c->n = n;
	}
}

static void rb_deliver_many(bus_t *base, int32_t scope, const int64_t *users, size_t n,
                            int64_t except_user, int64_t except_device, sbuf_t *frame,
                            bus_unreached_fn report_fn, void *ud)
{
	rbus_t *b = (rbus_t *)base;
	capture_t c = {NULL, 0};
	job_t *j = NULL;
	size_t i, k;

	/* The embedded bus is node b->node: a scope naming it leaves it out. */
	bus_deliver_scoped(b->local, scope == BUS_THIS_NODE ? BUS_EVERY_NODE : scope, users, n, except_user,
	                   except_device, frame, report_fn ? capture_unreached : NULL, &c);
	if (scope == BUS_THIS_NODE)
		goto local_only;
	if (n == 0) {
		/* Never a NULL array, even empty: the report may memcpy it. */
		if (report_fn)
			report_fn(ud, users ? users : &except_user, 0);
		return;
	}
	if (!(j = job_reserve(b, 'D', n, frame)))
		goto local_only;
	memcpy(j->users, users, n * sizeof *users);
	j->except_user = except_user;
	j->except_device = except_device;
	j->skip_node = scope >= 0 ? scope : -1;
	j->report = report_fn;
	j->ud = ud;
	/* The local report names its users in order, a subsequence of users. */
	for (i = 0, k = 0; i < n && k < c.n; i++)
		if (users[i] == c.v[k]) {
			j->unreached[i] = 1;
			k++;
		}
	if (job_post(b, j) < 0)
		goto local_only;
	free(c.v);
	return;
local_only:
	if (report_fn)
		report_fn(ud, c.v ? c.v : users, c.n);
	free(c.v);
}

static void rb_send(bus_t *base, uint64_t conn, sbuf_t *frame)
{
	rbus_t *b = (rbus_t *)base;
	job_t *j;

	if (BUS_CONN_NODE(conn) == b->node) {
		bus_send(b->local, conn, frame);
		return;
	}
	if (!(j = job_reserve(b, 'S', 0, frame)))
		return;
	j->conn = conn;
	job_post(b, j);
}

static void rb_kick_device(bus_t *base, int64_t user, int64_t device)
{
	rbus_t *b = (rbus_t *)base;
	job_t *j;

	bus_kick_device(b->local, user, device);
	if (!(j = job_reserve(b, 'K', 1, NULL)))
		return;
	j->users[0] = user;
	j->device = device;
	job_post(b, j);
}

static unsigned rb_connections(bus_t *base, int64_t user)
{
	return bus_connections(((rbus_t *)base)->local, user);
}

static void rb_subscribe(bus_t *base, int64_t user)
{
	post_task((rbus_t *)base, task_subscribe, (uint64_t)user);
}

static void rb_unsubscribe(bus_t *base, int64_t user)
{
	post_task((rbus_t *)base, task_unsubscribe, (uint64_t)user);
}

static size_t rb_nodes(bus_t *base, uint32_t *out, size_t max)
{
	rbus_t *b = (rbus_t *)base;
	size_t n;

	pthread_mutex_lock(&b->lock);
	n = b->nlive;
	if (n && max) /* b->live is NULL until a heartbeat has answered */
		memcpy(out, b->live, (n < max ? n : max) * sizeof *out);
	pthread_mutex_unlock(&b->lock);
	if (n == 0 && max) {
		/* No heartbeat answered yet: only this node is known. */
		out[0] = b->node;
		n = 1;
	}
	return n;
}

static int rb_sync(bus_t *base, bus_sync_fn fn, void *arg)
{
	rbus_t *b = (rbus_t *)base;
	syncw_t *w;

	/* Redis away: the writes wait for it, and nothing is gained by
	 * waiting here. */
	if (atomic_load(&b->closing) || !atomic_load(&b->cmd_up) || !(w = malloc(sizeof *w)))
		return 1;
	*w = (syncw_t){NULL, fn, arg};
	atomic_fetch_add(&b->queued, 1);
	if (loop_post(b->loop, task_sync, b, (uint64_t)(uintptr_t)w) < 0) {
		atomic_fetch_sub(&b->queued, 1);
		free(w);
		return 1;
	}
	return 0;
}

static const bus_vtab_t redis_vtab = {
	.free = redis_bus_free,
	.attach = rb_attach,
	.detach = rb_detach,
	.set_away = rb_set_away,
	.deliver = rb_deliver,
	.deliver_many = rb_deliver_many,
	.nodes = rb_nodes,
	.send = rb_send,
	.kick_device = rb_kick_device,
	.connections = rb_connections,
	.subscribe = rb_subscribe,
	.unsubscribe = rb_unsubscribe,
	.sync = rb_sync,
};
