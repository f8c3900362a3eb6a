/* redis.c - the Redis client of redis.h: hiredis 0.14.1's async API on
 * our loop, with the timeouts, reconnects and bounds hiredis leaves out.
 *
 * One connection at a time. Its life: connect_start makes the hiredis
 * context and queues the handshake (PING, or SELECT for a DB other than
 * 0) as the first command, so that the connect and the first round trip
 * share one deadline; the handshake's reply makes a command client up,
 * and makes a subscriber send its SUBSCRIBEs, which make it up once all
 * are confirmed. Any loss (hiredis sees an error or EOF, a deadline
 * passes, the handshake is refused) ends in conn_lost, which schedules
 * the next attempt.
 *
 * Commands in flight are kept in a ring, in the order sent, which is the
 * order Redis answers in on a connection that is not subscribed; hiredis
 * calls on_reply once per command, with the reply or, when the context is
 * torn down, with NULL. The ring holds each command's deadline. Every
 * command has the same timeout, so deadlines rise along the ring and only
 * its head can be the first to pass.
 *
 * One timerfd serves the head's deadline, the subscriptions' deadline and
 * the next reconnect. It is armed lazily: only when nothing earlier is
 * armed; when it fires early (the head was answered meanwhile) it is
 * armed again for what is due next. A busy pipeline thus costs one
 * timerfd_settime per timeout_ms, not one per command.
 *
 * hiredis is never re-entered from its own callbacks for teardown: a
 * callback that wants the connection gone sets want_drop, and after_io,
 * run after each call into hiredis, frees the context and reports the
 * loss. The loss is noticed through the adapter's cleanup hook, which
 * hiredis calls whichever way a context ends. */
#include "redis.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <hiredis/async.h>

#include "log.h"

#define RING_MIN 64

typedef struct cmd {
	redis_reply_fn fn;
	void *ud;
	int64_t deadline;
	int handshake; /* ours, not the owner's */
} cmd_t;

typedef struct sub {
	redis_t *r;
	redis_message_fn fn;
	void *ud;
	size_t len;
	char channel[]; /* NUL-terminated */
} sub_t;

enum phase {
	PH_NONE,        /* no connection: waiting to reconnect */
	PH_HANDSHAKE,   /* connecting, handshake in flight */
	PH_SUBSCRIBING, /* a subscriber's SUBSCRIBEs in flight */
	PH_UP,
};

struct redis {
	loop_t *loop;
	char addr[64];      /* numeric, for hiredis */
	int port, db;
	char label[160];    /* in log lines */
	int timeout_ms, min_ms, max_ms;
	unsigned max_inflight;
	redis_state_fn on_state;
	void *state_ud;

	redisAsyncContext *ac; /* NULL between connections; cleared by ev_cleanup */
	int fd;
	uint32_t mask;         /* the events fd is watched for; 0: not watched */
	loop_watch_t io_watch;
	enum phase phase;
	int live;              /* a connection was started and its loss not yet handled */
	int want_drop;         /* drop it once hiredis has returned */
	int64_t timeout_cut;   /* while dropping for a timeout: deadlines up to this end TIMEOUT */
	char why[128];         /* why the connection ended, for the log */
	unsigned failed;       /* commands that ended TIMEOUT or DISCONNECTED in this teardown */

	/* Commands in flight, oldest at head; the handshake's included. */
	cmd_t *ring;
	unsigned cap, head, n, nuser;

	sub_t **subs;
	size_t nsubs, capsubs;
	unsigned unconfirmed;  /* SUBSCRIBEs sent and not yet confirmed */
	int64_t sub_deadline;  /* 0: none due */

	int tfd;
	loop_watch_t timer_watch;
	int64_t timer_at;      /* when the timerfd fires; 0: disarmed */
	int64_t reconnect_at;  /* 0: no attempt scheduled */
	unsigned attempts;     /* failed attempts since the last up */
	uint64_t rng;

	int ever_up;
	int up_reported;       /* on_state(up) was the last call */
	int lost_logged;       /* the outage has been logged; the next up says restored */
	int in_cb;             /* depth of the owner's callbacks, for redis_free's assert */
	int closing;
};

#define CONTAINER(p, type, member) ((type *)(void *)((char *)(p) - offsetof(type, member)))

static void after_io(redis_t *r);
static void conn_lost(redis_t *r);

/* ---- timer ---------------------------------------------------------- */

static void timer_arm(redis_t *r, int64_t at)
{
	struct itimerspec its = {{0, 0}, {0, 0}};

	if (at <= 0 || (r->timer_at && r->timer_at <= at))
		return;
	its.it_value.tv_sec = at / 1000;
	its.it_value.tv_nsec = (long)(at % 1000) * 1000000;
	if (timerfd_settime(r->tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
		log_error("redis: %s: timerfd_settime: %s", r->label, strerror(errno));
		return;
	}
	r->timer_at = at;
}

/* Arms the timer for whatever is due first. */
static void timer_rearm(redis_t *r)
{
	if (r->ac && r->n)
		timer_arm(r, r->ring[r->head].deadline);
	if (r->ac && r->sub_deadline)
		timer_arm(r, r->sub_deadline);
	if (!r->ac && r->reconnect_at)
		timer_arm(r, r->reconnect_at);
}

/* ---- the ring of commands in flight --------------------------------- */

/* Makes room for one more command, so that ring_push cannot fail once
 * hiredis has taken the command (on_reply will come for it). */
static int ring_reserve(redis_t *r)
{
	unsigned cap = r->cap * 2, i;
	cmd_t *ring;

	if (r->n < r->cap)
		return 0;
	ring = malloc(cap * sizeof *ring);
	if (!ring)
		return -1;
	for (i = 0; i < r->n; i++)
		ring[i] = r->ring[(r->head + i) & (r->cap - 1)];
	free(r->ring);
	r->ring = ring;
	r->cap = cap;
	r->head = 0;
	return 0;
}

static void ring_push(redis_t *r, cmd_t c)
{
	assert(r->n < r->cap);
	r->ring[(r->head + r->n) & (r->cap - 1)] = c;
	r->n++;
	if (!c.handshake)
		r->nuser++;
}

static cmd_t ring_shift(redis_t *r)
{
	cmd_t c = r->ring[r->head];

	r->head = (r->head + 1) & (r->cap - 1);
	r->n--;
	if (!c.handshake)
		r->nuser--;
	return c;
}

/* ---- the adapter: hiredis's event hooks on our loop ------------------ */

static void ev_update(redis_t *r, uint32_t mask)
{
	int rc;

	if (mask == r->mask || r->fd < 0)
		return;
	if (!r->mask)
		rc = loop_watch_add(r->loop, r->fd, mask, &r->io_watch);
	else if (!mask)
		rc = loop_watch_del(r->loop, r->fd);
	else
		rc = loop_watch_mod(r->loop, r->fd, mask, &r->io_watch);
	/* Only a lack of kernel memory makes epoll_ctl fail here; the
	 * connection then stalls until its deadline drops it. */
	if (rc < 0)
		log_error("redis: %s: epoll_ctl: %s", r->label, strerror(errno));
	else
		r->mask = mask;
}

static void ev_add_read(void *p)
{
	redis_t *r = p;

	ev_update(r, r->mask | EPOLLIN);
}

static void ev_del_read(void *p)
{
	redis_t *r = p;

	ev_update(r, r->mask & ~(uint32_t)EPOLLIN);
}

static void ev_add_write(void *p)
{
	redis_t *r = p;

	ev_update(r, r->mask | EPOLLOUT);
}

static void ev_del_write(void *p)
{
	redis_t *r = p;

	ev_update(r, r->mask & ~(uint32_t)EPOLLOUT);
}

/* hiredis is freeing the context (it closes fd right after). */
static void ev_cleanup(void *p)
{
	redis_t *r = p;

	ev_update(r, 0);
	if (r->ac && r->ac->err && !r->why[0])
		snprintf(r->why, sizeof r->why, "%s", r->ac->errstr);
	r->ac = NULL;
	r->fd = -1;
	r->phase = PH_NONE;
}

static void on_io(loop_t *loop, loop_watch_t *w, uint32_t events)
{
	redis_t *r = CONTAINER(w, redis_t, io_watch);
	redisAsyncContext *ac = r->ac;

	(void)loop;
	/* A connection dropped earlier in this turn may leave an event. */
	if (!ac)
		return;
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		redisAsyncHandleRead(ac);
	if (r->ac == ac && (events & EPOLLOUT))
		redisAsyncHandleWrite(ac);
	after_io(r);
}

/* ---- replies -------------------------------------------------------- */

static void call_state(redis_t *r, int up)
{
	if (!r->on_state)
		return;
	r->in_cb++;
	r->on_state(r, r->state_ud, up);
	r->in_cb--;
}

static void go_up(redis_t *r)
{
	r->phase = PH_UP;
	r->attempts = 0;
	if (!r->ever_up)
		log_info("redis: %s: connected", r->label);
	else if (r->lost_logged)
		log_info("redis: %s: connection restored", r->label);
	r->lost_logged = 0;
	r->ever_up = 1;
	r->up_reported = 1;
	call_state(r, 1);
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata);

static int send_subscribe(redis_t *r, sub_t *s)
{
	const char *argv[2] = {"SUBSCRIBE", s->channel};
	size_t lens[2] = {9, s->len};

	if (redisAsyncCommandArgv(r->ac, on_sub_reply, s, 2, argv, lens) != REDIS_OK)
		return -1;
	if (!r->unconfirmed++ && !r->sub_deadline) {
		r->sub_deadline = clock_mono_ms() + r->timeout_ms;
		timer_rearm(r);
	}
	return 0;
}

static void handshake_done(redis_t *r, redis_status_t st, const redisReply *reply)
{
	size_t i;

	if (st == REDIS_STATUS_ERROR) {
		/* -LOADING, -ERR DB index is out of range, -NOAUTH...: try
		 * again later, on a fresh connection. */
		snprintf(r->why, sizeof r->why, "Redis refused the handshake: %s", reply->str);
		r->want_drop = 1;
		return;
	}
	if (st != REDIS_STATUS_OK)
		return; /* the connection is going; conn_lost follows */
	if (!r->nsubs) {
		go_up(r);
		return;
	}
	r->phase = PH_SUBSCRIBING;
	for (i = 0; i < r->nsubs; i++) {
		if (send_subscribe(r, r->subs[i]) < 0) {
			snprintf(r->why, sizeof r->why, "cannot send SUBSCRIBE");
			r->want_drop = 1;
			return;
		}
	}
}

/* hiredis's callback for every command of ours, in the order sent. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	redis_t *r = privdata;
	const redisReply *rep = reply;
	redis_status_t st;
	cmd_t c;

	(void)ac;
	assert(r->n > 0);
	c = ring_shift(r);
	if (!rep) {
		/* The context is being torn down: nothing is taken any more,
		 * even from the callbacks run below. */
		r->phase = PH_NONE;
		st = r->timeout_cut && c.deadline <= r->timeout_cut ? REDIS_STATUS_TIMEOUT
		                                                    : REDIS_STATUS_DISCONNECTED;
		if (!c.handshake)
			r->failed++;
	} else {
		st = rep->type == REDIS_REPLY_ERROR ? REDIS_STATUS_ERROR : REDIS_STATUS_OK;
	}
	if (c.handshake) {
		handshake_done(r, st, rep);
	} else if (c.fn) {
		r->in_cb++;
		c.fn(r, c.ud, st, rep);
		r->in_cb--;
	}
}

/* hiredis's callback for one channel: confirmations and messages. */
static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	const redisReply *rep = reply;
	sub_t *s = privdata;
	redis_t *r = s->r;
	const char *kind;

	(void)ac;
	if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
	    rep->element[0]->type != REDIS_REPLY_STRING)
		return;
	kind = rep->element[0]->str;
	if (!strcasecmp(kind, "message") && rep->element[2]->type == REDIS_REPLY_STRING) {
		r->in_cb++;
		s->fn(r, s->ud, s->channel, rep->element[2]->str, rep->element[2]->len);
		r->in_cb--;
	} else if (!strcasecmp(kind, "subscribe") && r->unconfirmed) {
		/* The deadline moves with each confirmation: it catches a
		 * Redis that stopped answering, not a long list. */
		r->sub_deadline = --r->unconfirmed ? clock_mono_ms() + r->timeout_ms : 0;
		if (!r->unconfirmed && r->phase == PH_SUBSCRIBING)
			go_up(r);
	}
}

/* ---- connection lifecycle ------------------------------------------- */

static uint64_t rng_next(redis_t *r)
{
	/* xorshift64: jitter needs spread between nodes, not quality. */
	r->rng ^= r->rng << 13;
	r->rng ^= r->rng >> 7;
	r->rng ^= r->rng << 17;
	return r->rng;
}

static void schedule_reconnect(redis_t *r)
{
	int64_t d = r->min_ms;
	unsigned i;

	for (i = 0; i < r->attempts && d < r->max_ms; i++)
		d *= 2;
	if (d > r->max_ms)
		d = r->max_ms;
	/* Drawn in [d/2, d], so that nodes cut off together do not all
	 * come back in the same millisecond. */
	d = d / 2 + (int64_t)(rng_next(r) % (uint64_t)(d / 2 + 1));
	if (d < 1)
		d = 1;
	r->attempts++;
	r->reconnect_at = clock_mono_ms() + d;
	timer_rearm(r);
}

/* Called once hiredis has returned, when the context it had is gone. */
static void conn_lost(redis_t *r)
{
	int was_up = r->up_reported;
	unsigned failed = r->failed;

	r->up_reported = 0;

	r->live = 0;
	r->phase = PH_NONE;
	r->timeout_cut = 0;
	r->want_drop = 0;
	r->unconfirmed = 0;
	r->sub_deadline = 0;
	r->failed = 0;
	/* hiredis has called back every command it held. */
	assert(r->n == 0);
	if (r->closing)
		return;
	if (!r->why[0])
		snprintf(r->why, sizeof r->why, "connection closed");
	if (!r->lost_logged) {
		if (r->ever_up)
			log_warn("redis: %s: connection lost (%s), %u command%s failed; reconnecting",
			         r->label, r->why, failed, failed == 1 ? "" : "s");
		else
			log_warn("redis: %s: cannot connect (%s); retrying", r->label, r->why);
		r->lost_logged = 1;
	} else {
		log_debug("redis: %s: attempt %u failed (%s)", r->label, r->attempts, r->why);
	}
	r->why[0] = '\0';
	schedule_reconnect(r);
	if (was_up)
		call_state(r, 0);
}

static void connect_start(redis_t *r)
{
	redisAsyncContext *ac;
	cmd_t hs = {NULL, NULL, 0, 1};
	int rc;

	r->reconnect_at = 0;
	r->live = 1;
	r->why[0] = '\0';
	/* hiredis connects without blocking; its getaddrinfo sees a numeric
	 * address (see redis_new). */
	ac = redisAsyncConnect(r->addr, r->port);
	if (!ac || ac->err) {
		snprintf(r->why, sizeof r->why, "%s", ac ? ac->errstr : "out of memory");
		if (ac)
			redisAsyncFree(ac);
		conn_lost(r);
		return;
	}
	ac->data = r;
	ac->ev.data = r;
	ac->ev.addRead = ev_add_read;
	ac->ev.delRead = ev_del_read;
	ac->ev.addWrite = ev_add_write;
	ac->ev.delWrite = ev_del_write;
	ac->ev.cleanup = ev_cleanup;
	r->ac = ac;
	r->fd = ac->c.fd;
	r->mask = 0;
	r->phase = PH_HANDSHAKE;
	/* A peer that vanishes without a FIN (a dead host) is found by
	 * keepalive even on a subscriber, which sends nothing of its own. */
	redisEnableKeepAlive(&ac->c);
	if (r->db)
		rc = redisAsyncCommand(ac, on_reply, r, "SELECT %d", r->db);
	else
		rc = redisAsyncCommand(ac, on_reply, r, "PING");
	if (rc != REDIS_OK) {
		snprintf(r->why, sizeof r->why, "out of memory");
		r->want_drop = 1;
		after_io(r);
		return;
	}
	/* The ring is empty between connections: there is room. */
	hs.deadline = clock_mono_ms() + r->timeout_ms;
	ring_push(r, hs);
	timer_rearm(r);
}

static void drop(redis_t *r)
{
	if (r->ac)
		redisAsyncFree(r->ac);
}

static void after_io(redis_t *r)
{
	if (r->ac && r->want_drop) {
		r->want_drop = 0;
		drop(r);
	}
	if (!r->ac && r->live)
		conn_lost(r);
}

static int overdue(const redis_t *r, int64_t now)
{
	return (r->n && r->ring[r->head].deadline <= now) || (r->sub_deadline && r->sub_deadline <= now);
}

static void on_timer(loop_t *loop, loop_watch_t *w, uint32_t events)
{
	redis_t *r = CONTAINER(w, redis_t, timer_watch);
	uint64_t expirations;
	int64_t now = clock_mono_ms();

	(void)loop;
	(void)events;
	if (read(r->tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
		log_warn("redis: %s: timerfd read: %s", r->label, strerror(errno));
	r->timer_at = 0;
	if (r->ac && overdue(r, now)) {
		/* The loop may have been slow and the reply be waiting in the
		 * socket, its event later in this turn: read before judging. */
		if (r->ac->c.flags & REDIS_CONNECTED) {
			redisAsyncHandleRead(r->ac);
			after_io(r);
		}
		if (r->ac && overdue(r, now)) {
			if (r->n)
				snprintf(r->why, sizeof r->why, "no reply within %d ms", r->timeout_ms);
			else
				snprintf(r->why, sizeof r->why, "subscriptions unconfirmed after %d ms",
				         r->timeout_ms);
			r->timeout_cut = now;
			drop(r);
			after_io(r);
		}
	}
	if (!r->ac && !r->live && r->reconnect_at && r->reconnect_at <= now)
		connect_start(r);
	timer_rearm(r);
}

/* ---- URL ------------------------------------------------------------ */

/* Parses "redis://HOST[:PORT][/DB]". Returns 0, or -1 with *why set. */
static int parse_url(const char *url, char *host, size_t hostcap, int *port, int *db, const char **why)
{
	const char *p, *h;
	size_t hl;
	long v;

	*port = 6379;
	*db = 0;
	if (!strncasecmp(url, "rediss://", 9)) {
		*why = "TLS (rediss://) is not supported";
		return -1;
	}
	if (!strncasecmp(url, "unix://", 7) || !strncasecmp(url, "redis+unix://", 13)) {
		*why = "Unix sockets are not supported";
		return -1;
	}
	if (strncasecmp(url, "redis://", 8)) {
		*why = "it does not start with redis://";
		return -1;
	}
	p = url + 8;
	if (strchr(p, '@')) {
		*why = "credentials in the URL are not supported";
		return -1;
	}
	if (*p == '[') {
		h = ++p;
		while (*p && *p != ']' && (strchr("0123456789abcdefABCDEF:.", *p)))
			p++;
		if (*p != ']') {
			*why = "a bracketed IPv6 address is not closed by ]";
			return -1;
		}
		hl = (size_t)(p++ - h);
	} else {
		h = p;
		while (*p && (strchr("-._", *p) || (*p >= '0' && *p <= '9') || ((*p | 32) >= 'a' && (*p | 32) <= 'z')))
			p++;
		hl = (size_t)(p - h);
	}
	if (!hl) {
		*why = "no host";
		return -1;
	}
	if (hl >= hostcap) {
		*why = "the host is too long";
		return -1;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (*p == ':') {
		p++;
		for (v = 0; *p >= '0' && *p <= '9' && v <= 65535; p++)
			v = v * 10 + (*p - '0');
		if (v < 1 || v > 65535 || (p[-1] < '0' || p[-1] > '9')) {
			*why = "the port is not a number from 1 to 65535";
			return -1;
		}
		*port = (int)v;
	}
	if (*p == '/') {
		const char *d = ++p;

		for (v = 0; *p >= '0' && *p <= '9' && v <= INT_MAX; p++)
			v = v * 10 + (*p - '0');
		if (v > INT_MAX || (p == d && *p)) {
			*why = "the DB is not a number";
			return -1;
		}
		*db = (int)v;
	}
	if (*p) {
		*why = *p == '?' ? "URL options are not supported" : "unexpected characters after the host, port or DB";
		return -1;
	}
	return 0;
}

/* Resolves host once (see redis.h) into a numeric address, IPv4 first as
 * hiredis would. */
static int resolve(const char *host, char *addr, size_t cap, const char **why)
{
	struct addrinfo hints, *res, *ai, *pick = NULL;
	int rc;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc) {
		*why = gai_strerror(rc);
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next)
		if (!pick || (ai->ai_family == AF_INET && pick->ai_family != AF_INET))
			pick = ai;
	rc = getnameinfo(pick->ai_addr, pick->ai_addrlen, addr, (socklen_t)cap, NULL, 0, NI_NUMERICHOST);
	freeaddrinfo(res);
	if (rc) {
		*why = gai_strerror(rc);
		return -1;
	}
	return 0;
}

/* ---- public --------------------------------------------------------- */

redis_t *redis_new(loop_t *loop, const char *url, const redis_opts_t *opts)
{
	static const redis_opts_t none;
	redis_t *r;
	char host[256];
	const char *why;
	int port, db;

	if (!opts)
		opts = &none;
	if (!url || parse_url(url, host, sizeof host, &port, &db, &why) < 0) {
		/* A URL with credentials is not echoed into the log. */
		if (!url)
			log_error("redis: no URL (expected redis://HOST[:PORT][/DB])");
		else if (strchr(url, '@'))
			log_error("redis: bad URL: %s (expected redis://HOST[:PORT][/DB])", why);
		else
			log_error("redis: bad URL \"%s\": %s (expected redis://HOST[:PORT][/DB])", url, why);
		errno = EINVAL;
		return NULL;
	}
	r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->loop = loop;
	r->port = port;
	r->db = db;
	r->fd = -1;
	r->tfd = -1;
	if (resolve(host, r->addr, sizeof r->addr, &why) < 0) {
		log_error("redis: cannot resolve the host of %s: %s", url, why);
		errno = EINVAL;
		goto err;
	}
	{
		/* "presence at 10.0.0.5:6379/2", "[::1]:6379" */
		int v6 = strchr(r->addr, ':') != NULL;
		char dbs[16] = "";

		if (db)
			snprintf(dbs, sizeof dbs, "/%d", db);
		snprintf(r->label, sizeof r->label, "%s%s%s%s%s:%d%s", opts->name ? opts->name : "",
		         opts->name ? " at " : "", v6 ? "[" : "", r->addr, v6 ? "]" : "", port, dbs);
	}
	r->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : REDIS_DEFAULT_TIMEOUT_MS;
	r->max_inflight = opts->max_inflight ? opts->max_inflight : REDIS_DEFAULT_MAX_INFLIGHT;
	r->min_ms = opts->reconnect_min_ms > 0 ? opts->reconnect_min_ms : REDIS_DEFAULT_RECONNECT_MIN_MS;
	r->max_ms = opts->reconnect_max_ms > 0 ? opts->reconnect_max_ms : REDIS_DEFAULT_RECONNECT_MAX_MS;
	if (r->max_ms < r->min_ms)
		r->max_ms = r->min_ms;
	r->on_state = opts->on_state;
	r->state_ud = opts->ud;
	r->rng = (uint64_t)clock_mono_ms() ^ ((uint64_t)(uintptr_t)r << 16) ^ 0x9e3779b97f4a7c15ull;
	r->cap = RING_MIN;
	r->ring = malloc(r->cap * sizeof *r->ring);
	if (!r->ring)
		goto err;
	r->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (r->tfd < 0) {
		log_error("redis: %s: timerfd_create: %s", r->label, strerror(errno));
		goto err;
	}
	r->io_watch.on_io = on_io;
	r->timer_watch.on_io = on_timer;
	if (loop_watch_add(loop, r->tfd, EPOLLIN, &r->timer_watch) < 0) {
		log_error("redis: %s: epoll_ctl: %s", r->label, strerror(errno));
		goto err;
	}
	connect_start(r);
	return r;
err:
	if (r->tfd >= 0)
		close(r->tfd);
	free(r->ring);
	free(r);
	return NULL;
}

void redis_free(redis_t *r)
{
	size_t i;

	if (!r)
		return;
	assert(!r->in_cb);
	r->closing = 1;
	if (r->phase == PH_UP)
		r->phase = PH_NONE;
	drop(r); /* calls back every pending command, DISCONNECTED */
	if (r->live)
		conn_lost(r);
	loop_watch_del(r->loop, r->tfd);
	close(r->tfd);
	for (i = 0; i < r->nsubs; i++)
		free(r->subs[i]);
	free(r->subs);
	free(r->ring);
	free(r);
}

/* The command's name, from hiredis's formatting of it ("*N\r\n$L\r\nNAME"). */
static int command_name(const char *cmd, size_t len, const char **name, size_t *namelen)
{
	const char *p = memchr(cmd, '\n', len), *end = cmd + len;
	size_t nl = 0;

	if (len < 4 || cmd[0] != '*' || cmd[1] == '0' || !p || ++p >= end || *p++ != '$')
		return -1;
	while (p < end && *p >= '0' && *p <= '9')
		nl = nl * 10 + (size_t)(*p++ - '0');
	if (end - p < 2 || (size_t)(end - p - 2) < nl)
		return -1;
	*name = p + 2;
	*namelen = nl;
	return 0;
}

static int forbidden(const char *name, size_t len)
{
	/* Each would change the connection under this module: subscribed
	 * or monitoring connections answer out of order, and SELECT, RESET
	 * and HELLO change what the next reconnect would not restore. */
	static const char *const words[] = {"subscribe", "psubscribe", "ssubscribe", "unsubscribe",
	                                    "punsubscribe", "sunsubscribe", "monitor", "select",
	                                    "reset", "hello"};
	size_t i;

	for (i = 0; i < sizeof words / sizeof words[0]; i++)
		if (strlen(words[i]) == len && !strncasecmp(words[i], name, len))
			return 1;
	return 0;
}

/* Sends an already formatted command; takes no ownership of cmd. */
static int send_formatted(redis_t *r, redis_reply_fn cb, void *ud, const char *cmd, size_t len)
{
	cmd_t c = {cb, ud, 0, 0};
	const char *name;
	size_t namelen;

	if (command_name(cmd, len, &name, &namelen) < 0 || forbidden(name, namelen))
		return -EINVAL;
	if (ring_reserve(r) < 0 || redisAsyncFormattedCommand(r->ac, on_reply, r, cmd, len) != REDIS_OK)
		return -ENOMEM;
	c.deadline = clock_mono_ms() + r->timeout_ms;
	ring_push(r, c);
	timer_arm(r, c.deadline);
	return 0;
}

static int check_sendable(const redis_t *r)
{
	if (r->nsubs)
		return -EINVAL;
	if (r->phase != PH_UP || !r->ac)
		return -ENOTCONN;
	if (r->nuser >= r->max_inflight)
		return -EAGAIN;
	return 0;
}

int redis_command(redis_t *r, redis_reply_fn cb, void *ud, const char *fmt, ...)
{
	va_list ap;
	char *cmd;
	int len, rc;

	if ((rc = check_sendable(r)) < 0)
		return rc;
	va_start(ap, fmt);
	len = redisvFormatCommand(&cmd, fmt, ap);
	va_end(ap);
	if (len == -2)
		return -EINVAL;
	if (len < 0)
		return -ENOMEM;
	rc = send_formatted(r, cb, ud, cmd, (size_t)len);
	redisFreeCommand(cmd);
	return rc;
}

int redis_commandv(redis_t *r, redis_reply_fn cb, void *ud, int argc, const char **argv,
                   const size_t *argvlen)
{
	char *cmd;
	int len, rc;

	if ((rc = check_sendable(r)) < 0)
		return rc;
	if (argc < 1 || !argv)
		return -EINVAL;
	len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
	if (len < 0)
		return -ENOMEM;
	rc = send_formatted(r, cb, ud, cmd, (size_t)len);
	redisFreeCommand(cmd);
	return rc;
}

int redis_subscribe(redis_t *r, const char *channel, redis_message_fn fn, void *ud)
{
	size_t i, len;
	sub_t *s;

	if (!channel || !*channel || !fn || r->nuser)
		return -EINVAL;
	len = strlen(channel);
	for (i = 0; i < r->nsubs; i++)
		if (r->subs[i]->len == len && !memcmp(r->subs[i]->channel, channel, len))
			return -EEXIST;
	if (r->nsubs == r->capsubs) {
		size_t cap = r->capsubs ? r->capsubs * 2 : 8;
		sub_t **subs = realloc(r->subs, cap * sizeof *subs);

		if (!subs)
			return -ENOMEM;
		r->subs = subs;
		r->capsubs = cap;
	}
	s = malloc(sizeof *s + len + 1);
	if (!s)
		return -ENOMEM;
	s->r = r;
	s->fn = fn;
	s->ud = ud;
	s->len = len;
	memcpy(s->channel, channel, len + 1);
	r->subs[r->nsubs++] = s;
	/* Up or subscribing: send now. Otherwise the next handshake will. */
	if (r->ac && (r->phase == PH_UP || r->phase == PH_SUBSCRIBING) && send_subscribe(r, s) < 0) {
		/* Out of memory: this may run inside a hiredis callback, which
		 * cannot free the context, so let the timer drop it; the next
		 * connection subscribes to everything. */
		snprintf(r->why, sizeof r->why, "cannot send SUBSCRIBE");
		r->sub_deadline = clock_mono_ms();
		timer_rearm(r);
	}
	return 0;
}

int redis_is_up(const redis_t *r)
{
	return r->phase == PH_UP;
}
