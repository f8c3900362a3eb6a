/* gateway.c - connections, HTTP/1.1 and WebSocket transport (gateway.h).
 *
 * Life of a connection, all on one I/O thread:
 *
 *   accept -> HTTP: requests are parsed from the bytes at hand; API requests
 *   go to a worker and the connection waits (reading paused) for the answer;
 *   an upgrade request waits likewise for its token check, then
 *   -> WS: frames are parsed and validated here, complete text messages go
 *   to the message service;
 *   -> CLOSING: a final response or close frame is queued, input ignored;
 *   once it is flushed, -> LINGER: our side is shut down and we read until
 *   the peer closes (or 2 s pass), so that unread input does not make the
 *   kernel reset the connection before the peer has read our last words;
 *   -> dead: marked, and freed at the end of the loop turn, never inside its
 *   own callback (tasks posted to its handle are then dropped).
 *
 * Memory: an idle connection holds only its gw_conn_t. Reads go into one
 * per-thread buffer; only the unconsumed tail of a partial request or frame
 * is copied into a buffer of the connection's own, freed once consumed.
 * Outbound frames are shared sbufs queued by reference; the queue is bounded
 * (out_limit) and a client that lets it fill is dropped.
 *
 * Timers: a wheel of 128 one-second slots. A connection sits in the slot of
 * its next deadline; activity only updates a timestamp, and the slot, when
 * reached, re-files connections that are not due after all. */
#include "gateway.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "addrconns.h"
#include "budget.h"
#include "clientaddr.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "utf8.h"
#include "ws.h"

#define WHEEL 128
#define READ_CHUNK 65536
#define WS_MAX_MESSAGE 65536
#define WS_MAX_FRAME (WS_MAX_MESSAGE + 14)
#define HTTP_MAX_REQUEST (HTTP_MAX_HEAD + HTTP_MAX_BODY)
#define HTTP_HOLD_BYTES 65536     /* unsent answers past which pipelined requests wait */
#define LINGER_S 2
#define ACCEPT_BATCH 64

/* ST_PROXY: a trusted load balancer's connection, before its PROXY header. */
enum { ST_PROXY, ST_HTTP, ST_WS, ST_CLOSING, ST_LINGER };

enum {
	F_BUSY = 1 << 0,        /* a request is with a worker; reading paused */
	F_OUT_WATCH = 1 << 1,   /* EPOLLOUT is being watched */
	F_DIRTY = 1 << 2,       /* on the thread's flush list */
	F_FLUSH_CLOSE = 1 << 3, /* shut down after the queue drains */
	F_DEAD = 1 << 4,        /* on the reap list */
	F_IN_WHEEL = 1 << 5,
	F_READ_OFF = 1 << 6,    /* EPOLLIN not watched */
	F_CONTINUED = 1 << 7,   /* "100 Continue" sent for the request at hand */
	F_SERVED = 1 << 8,      /* has completed a request: idle keep-alive rules */
	F_HTTP_HELD = 1 << 9,   /* answers are unsent: the next request waits */
	F_ADMIN = 1 << 10,      /* accepted on the operator listener */
	F_PROXIED = 1 << 11,    /* from a trusted proxy: its X-Forwarded-For names the client */
	F_COUNTED = 1 << 12,    /* counted in its address's connections (addrconns.h) */
	F_PENDING = 1 << 13,    /* ... as not yet a WebSocket */
	F_QUICK_CLOSE = 1 << 14, /* refused at once: close when flushed, no lingering */
	F_THROTTLED = 1 << 15,  /* over its user's read rate: not read until its timer */
};

/* A connection's outbound queue: references to shared frames, oldest at
 * head, `off` bytes of the oldest already written. Allocated with the first
 * frame queued and freed once drained, so an idle connection holds none;
 * one allocation per burst of frames rather than one per frame. */
typedef struct outq {
	uint32_t head, n, cap;  /* frames buf[head..n-1] are queued */
	uint32_t off;
	sbuf_t *buf[];
} outq_t;

#define OUTQ_FIRST 8

/* A connection's rare byte buffers (the unconsumed tail of its input; the
 * fragments of a message in progress) carry their lengths in front, so
 * that a connection without them holds only a NULL pointer. */
typedef struct bytebuf {
	uint32_t len, cap;
	uint32_t since;          /* loop second it was begun: it must finish in time */
	uint32_t addr_bytes;     /* of cap, charged to the address's share */
	uint8_t data[];
} bytebuf_t;

#define BYTEBUF_NODE_FULL (-2)

typedef struct io_thread io_thread_t;

struct gw_conn {
	loop_watch_t watch;      /* first: the loop calls back through it */
	io_thread_t *t;
	int fd;
	uint32_t slot, gen;
	uint8_t state;
	uint8_t frag_opcode;     /* message in progress: TEXT, BINARY or 0 */
	uint8_t utf8;            /* validator state across fragments */
	uint8_t sends;           /* sends awaiting their ack */
	uint16_t flags;
	uint32_t last_rx, due;   /* loop seconds */
	/* WebSocket: when the server last pinged. HTTP: when the first byte
	 * of the request at hand arrived, which its deadline runs from (a
	 * request trickled a byte at a time must still finish in time). */
	uint32_t since;
	/* Links in the timer wheel and the flush list, as slot + 1 (0: none):
	 * half the size of pointers, in the structure every connection has. */
	uint32_t wprev, wnext;
	uint32_t next_dirty;
	uint32_t out_bytes;
	bytebuf_t *rbuf;         /* unconsumed input, NULL when none */
	outq_t *out;             /* NULL when nothing is queued */
	bytebuf_t *frag;         /* fragments of a message in progress */
	int64_t user, device;
	void *app;               /* the handlers' per-connection state */
	uint64_t addr;           /* the client's address key (clientaddr.h) */
};

/* Every idle connection has one: it must fit the 128-byte malloc chunk
 * (120 bytes usable) the idle-memory figure of docs/benchmarks.md counts. */
_Static_assert(sizeof(struct gw_conn) <= 120, "gw_conn_t grew past its 128-byte chunk");

struct io_thread {
	gateway_t *gw;
	int index;
	pthread_t thread;
	int started;
	loop_t *loop;
	int lfd;
	int accept_paused;
	loop_watch_t lwatch;
	int alfd;                /* the operator listener (thread 0 only), or -1 */
	loop_watch_t awatch;
	gw_conn_t **conns;       /* by slot */
	uint32_t *gens;          /* by slot: survives the connection */
	uint32_t nslots;
	uint32_t *free_slots;
	uint32_t nfree;
	size_t nconns;
	gw_conn_t *dirty;
	gw_conn_t **reap;
	size_t nreap, capreap;
	gw_conn_t *wheel[WHEEL];
	uint32_t wheel_now;
	uint8_t *tbuf;
	int exiting;
	int64_t exit_deadline_ms;
	char name[16];
};

struct gateway {
	server_t *srv;
	int n;
	io_thread_t *t;
	int port, admin_port;
	atomic_int_fast64_t conns, websockets; /* open now, all threads */
	gw_handlers_t h;         /* the server's: routes and WebSocket events */
	/* Bytes held in connections' input buffers (partial requests, frames
	 * and fragmented messages), against srv->cfg.max_partial_bytes. */
	atomic_size_t partial_bytes;
	atomic_uint_fast64_t throttled; /* times a WebSocket was not read for its user's read rate */
};

static void conn_kill(gw_conn_t *c);
static void conn_process(gw_conn_t *c);
static void conn_flush(gw_conn_t *c);
static size_t process_http(gw_conn_t *c, const char *data, size_t len);
static void http_fail(gw_conn_t *c, int status, const char *code, const char *message,
                      const char *extra_header);
static uint64_t request_client(gw_conn_t *c, const http_request_t *req);
static int count_conn(gw_conn_t *c, int pending);
static void watch_partial(gw_conn_t *c);

/* Who a connection is, for a log line: its client address and user.
 * One buffer per thread, valid until the thread's next call. */
static const char *conn_peer(const gw_conn_t *c)
{
	static _Thread_local char buf[96];
	char addr[ADDR_KEY_STRLEN];

	if (addr_key_format(c->addr, addr, sizeof addr) < 0)
		snprintf(addr, sizeof addr, "?");
	if (c->user)
		snprintf(buf, sizeof buf, "client %s user %lld", addr, (long long)c->user);
	else
		snprintf(buf, sizeof buf, "client %s", addr);
	return buf;
}

/* ---- input buffers -------------------------------------------------- */

/* Charges grow more bytes of partial input held by c: to the node's
 * bound, and (for a connection counted against its address) to its
 * address's share of it, a sixteenth, so that one address cannot hold
 * the whole bound against everyone. Returns the bytes charged to the
 * address (0 or grow), or -1 (nothing charged) when either would pass. */
static ptrdiff_t partial_charge(gw_conn_t *c, size_t grow)
{
	gateway_t *gw = c->t->gw;
	size_t bound = gw->srv->cfg.max_partial_bytes;

	if (atomic_fetch_add(&gw->partial_bytes, grow) + grow > bound) {
		atomic_fetch_sub(&gw->partial_bytes, grow);
		return -1;
	}
	if (!(c->flags & F_COUNTED))
		return 0;
	if (addrconns_partial(gw->srv->addrconns, c->addr, (int64_t)grow, bound / 16) < 0) {
		atomic_fetch_sub(&gw->partial_bytes, grow);
		return -1;
	}
	return (ptrdiff_t)grow;
}

/* Gives back bytes of the node's bound, addr_bytes of them also of the
 * address's share. */
static void partial_release(gw_conn_t *c, size_t bytes, size_t addr_bytes)
{
	gateway_t *gw = c->t->gw;

	atomic_fetch_sub(&gw->partial_bytes, bytes);
	if (addr_bytes)
		addrconns_partial(gw->srv->addrconns, c->addr, -(int64_t)addr_bytes, 0);
}

/* Appends p[0..n) to *bp, growing it to what it then holds plus a
 * quarter, never past max bytes. Returns 0; -1 out of memory;
 * BYTEBUF_NODE_FULL when the node's partial input (or this address's
 * share of it) would pass its bound. */
static int bytebuf_append(gw_conn_t *c, bytebuf_t **bp, const uint8_t *p, size_t n, size_t max)
{
	bytebuf_t *b = *bp;
	size_t len = b ? b->len : 0, cap = b ? b->cap : 0, need = len + n;

	if (need > max)
		return -1;
	if (need > cap) {
		size_t ncap = (need + need / 4 + 255) & ~(size_t)255;
		if (ncap > max)
			ncap = max;
		ptrdiff_t charged = partial_charge(c, ncap - cap);
		if (charged < 0)
			return BYTEBUF_NODE_FULL;
		if (!(b = realloc(b, sizeof *b + ncap))) {
			partial_release(c, ncap - cap, (size_t)charged);
			return -1;
		}
		if (!*bp) {
			b->since = c->t->wheel_now;
			b->addr_bytes = 0;
		}
		b->addr_bytes += (uint32_t)charged;
		b->len = (uint32_t)len;
		b->cap = (uint32_t)ncap;
		*bp = b;
	}
	memcpy(b->data + b->len, p, n);
	b->len += (uint32_t)n;
	return 0;
}

/* Gives back most of the room a buffer no longer needs. */
static void bytebuf_shrink(gw_conn_t *c, bytebuf_t **bp)
{
	bytebuf_t *b = *bp, *nb;
	size_t ncap = ((size_t)b->len + 255) & ~(size_t)255;

	if (ncap + 4096 > b->cap || !(nb = realloc(b, sizeof *b + ncap)))
		return;
	{
		size_t freed = nb->cap - ncap, addr = freed < nb->addr_bytes ? freed : nb->addr_bytes;
		partial_release(c, freed, addr);
		nb->addr_bytes -= (uint32_t)addr;
	}
	nb->cap = (uint32_t)ncap;
	*bp = nb;
}

static void bytebuf_free(gw_conn_t *c, bytebuf_t *b)
{
	if (b) {
		partial_release(c, b->cap, b->addr_bytes);
		free(b);
	}
}

/* ---- handles -------------------------------------------------------- */

/* A handle: the node (10 bits, at BUS_CONN_NODE_SHIFT, so that the bus
 * can route a frame for one connection to its node), the I/O thread (6
 * bits; --threads is at most 64), the slot's generation (24 bits: a stale
 * handle is recognised until its slot has been reused 16 million times)
 * and the slot (24 bits). */
#define HANDLE_THREAD_SHIFT 48
#define HANDLE_GEN_SHIFT 24
#define HANDLE_MASK24 0xffffffu
#define SLOTS_MAX (1u << 24)

static uint64_t handle_of(const gw_conn_t *c)
{
	return ((uint64_t)c->t->gw->srv->cfg.node_id << BUS_CONN_NODE_SHIFT) |
	       ((uint64_t)c->t->index << HANDLE_THREAD_SHIFT) |
	       ((uint64_t)(c->gen & HANDLE_MASK24) << HANDLE_GEN_SHIFT) | c->slot;
}

static io_thread_t *thread_of(gateway_t *gw, uint64_t h)
{
	unsigned i = (unsigned)(h >> HANDLE_THREAD_SHIFT) & 0x3f;

	if (BUS_CONN_NODE(h) != gw->srv->cfg.node_id)
		return NULL; /* another node's: not ours to reach */
	return i < (unsigned)gw->n ? &gw->t[i] : NULL;
}

static gw_conn_t *resolve(io_thread_t *t, uint64_t h)
{
	uint32_t slot = (uint32_t)h & HANDLE_MASK24, gen = (uint32_t)(h >> HANDLE_GEN_SHIFT) & HANDLE_MASK24;
	gw_conn_t *c;

	if (slot >= t->nslots || !(c = t->conns[slot]))
		return NULL;
	if ((c->gen & HANDLE_MASK24) != gen || (c->flags & F_DEAD))
		return NULL;
	return c;
}

/* ---- timer wheel ---------------------------------------------------- */

static uint32_t link_of(const gw_conn_t *c)
{
	return c->slot + 1;
}

static gw_conn_t *linked(const io_thread_t *t, uint32_t link)
{
	return link ? t->conns[link - 1] : NULL;
}

static void wheel_unlink(io_thread_t *t, gw_conn_t *c)
{
	if (!(c->flags & F_IN_WHEEL))
		return;
	if (c->wprev)
		linked(t, c->wprev)->wnext = c->wnext;
	else
		t->wheel[c->due % WHEEL] = linked(t, c->wnext);
	if (c->wnext)
		linked(t, c->wnext)->wprev = c->wprev;
	c->wprev = c->wnext = 0;
	c->flags &= ~F_IN_WHEEL;
}

static void schedule(gw_conn_t *c, uint32_t due)
{
	io_thread_t *t = c->t;

	wheel_unlink(t, c);
	if (due <= t->wheel_now)
		due = t->wheel_now + 1;
	if (due > t->wheel_now + WHEEL - 1)
		due = t->wheel_now + WHEEL - 1; /* re-filed when reached */
	c->due = due;
	c->wprev = 0;
	c->wnext = t->wheel[due % WHEEL] ? link_of(t->wheel[due % WHEEL]) : 0;
	if (c->wnext)
		linked(t, c->wnext)->wprev = link_of(c);
	t->wheel[due % WHEEL] = c;
	c->flags |= F_IN_WHEEL;
}

/* ---- output --------------------------------------------------------- */

static void mark_dirty(gw_conn_t *c)
{
	if (!(c->flags & F_DIRTY)) {
		c->flags |= F_DIRTY;
		c->next_dirty = c->t->dirty ? link_of(c->t->dirty) : 0;
		c->t->dirty = c;
	}
}

/* Makes room for one more frame at the end of c's queue. */
static int outq_reserve(gw_conn_t *c)
{
	outq_t *q = c->out;

	if (q && q->n < q->cap)
		return 0;
	if (q && q->head > 0) {
		/* Written frames leave room at the front: slide down. */
		memmove(q->buf, q->buf + q->head, (q->n - q->head) * sizeof *q->buf);
		q->n -= q->head;
		q->head = 0;
		return 0;
	}
	{
		uint32_t cap = q ? q->cap * 2 : OUTQ_FIRST;
		outq_t *nq = realloc(q, sizeof *nq + cap * sizeof *nq->buf);
		if (!nq)
			return -1;
		if (!q)
			nq->head = nq->n = nq->off = 0;
		nq->cap = cap;
		c->out = nq;
	}
	return 0;
}

/* Queues buf (taking over the caller's reference). */
static void conn_queue(gw_conn_t *c, sbuf_t *buf)
{
	if (!buf) {
		log_error("gateway: out of memory for a frame; dropping the connection");
		conn_kill(c);
		return;
	}
	if ((c->flags & F_DEAD) || c->state == ST_LINGER) {
		sbuf_unref(buf);
		return;
	}
	/* The slow-reader bound is for WebSockets, whose frames come
	 * whether or not the client reads. An HTTP connection gets only the
	 * answers it asked for, one request at a time while earlier answers
	 * are unsent (see process_http), each bounded by its endpoint's
	 * page size: a big answer is never mistaken for a slow reader. */
	if (c->user && (uint64_t)c->out_bytes + buf->len > c->t->gw->srv->cfg.out_limit) {
		struct linger hard = {1, 0};

		log_refusal("gateway: %s reads too slowly: %u bytes queued; disconnecting", conn_peer(c),
		         c->out_bytes);
		/* Reset rather than close: a plain close would leave what the
		 * kernel still holds for this reader in an orphaned socket,
		 * the very memory the bound is there to limit. */
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
		sbuf_unref(buf);
		conn_kill(c);
		return;
	}
	if (outq_reserve(c) < 0) {
		log_error("gateway: out of memory for a queue; dropping the connection");
		sbuf_unref(buf);
		conn_kill(c);
		return;
	}
	c->out->buf[c->out->n++] = buf;
	c->out_bytes += buf->len;
	mark_dirty(c);
}

static void set_events(gw_conn_t *c)
{
	uint32_t ev = 0;

	if (!(c->flags & F_READ_OFF))
		ev |= EPOLLIN;
	if (c->flags & F_OUT_WATCH)
		ev |= EPOLLOUT;
	if (loop_watch_mod(c->t->loop, c->fd, ev, &c->watch) < 0)
		log_warn("gateway: epoll_ctl(fd %d): %s", c->fd, strerror(errno));
}

static void pause_reading(gw_conn_t *c, int off)
{
	if (!!(c->flags & F_READ_OFF) == !!off)
		return;
	if (off)
		c->flags |= F_READ_OFF;
	else
		c->flags &= ~F_READ_OFF;
	set_events(c);
}

static void start_linger(gw_conn_t *c)
{
	c->state = ST_LINGER;
	c->flags &= ~F_FLUSH_CLOSE;
	shutdown(c->fd, SHUT_WR);
	pause_reading(c, 0);
	schedule(c, c->t->wheel_now + LINGER_S);
}

static void conn_flush(gw_conn_t *c)
{
	while (c->out) {
		struct iovec iov[64];
		outq_t *q = c->out;
		uint32_t i, off = q->off;
		ssize_t w;
		int cnt = 0;

		for (i = q->head; i < q->n && cnt < 64; i++, cnt++, off = 0) {
			iov[cnt].iov_base = q->buf[i]->data + off;
			iov[cnt].iov_len = q->buf[i]->len - off;
		}
		w = writev(c->fd, iov, cnt);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			log_debug("gateway: write to fd %d: %s", c->fd, strerror(errno));
			conn_kill(c);
			return;
		}
		c->out_bytes -= (uint32_t)w;
		while (w > 0) {
			sbuf_t *b = q->buf[q->head];
			if ((size_t)w < b->len - q->off) {
				q->off += (uint32_t)w;
				break;
			}
			w -= b->len - q->off;
			q->off = 0;
			q->head++;
			sbuf_unref(b);
		}
		if (q->head == q->n) {
			free(q);
			c->out = NULL;
		}
	}
	if (c->out) {
		if (!(c->flags & F_OUT_WATCH)) {
			c->flags |= F_OUT_WATCH;
			set_events(c);
		}
		return;
	}
	if (c->flags & F_OUT_WATCH) {
		c->flags &= ~F_OUT_WATCH;
		set_events(c);
	}
	if ((c->flags & (F_FLUSH_CLOSE | F_QUICK_CLOSE)) == (F_FLUSH_CLOSE | F_QUICK_CLOSE)) {
		/* A connection refused as it came: holding its socket while the
		 * client reads would let a flood of refused connections take the
		 * node's file descriptors. */
		shutdown(c->fd, SHUT_WR);
		conn_kill(c);
	} else if (c->flags & F_FLUSH_CLOSE) {
		start_linger(c);
	} else if (c->state == ST_WS) {
		c->t->gw->h.ws_drained(c->t->gw->h.ud, c);
	} else if ((c->flags & F_HTTP_HELD) && c->state == ST_HTTP) {
		c->flags &= ~F_HTTP_HELD;
		if (!(c->flags & F_BUSY))
			pause_reading(c, 0);
		conn_process(c);
	}
}

/* ---- closing -------------------------------------------------------- */

static void conn_kill(gw_conn_t *c)
{
	io_thread_t *t = c->t;

	if (c->flags & F_DEAD)
		return;
	c->flags |= F_DEAD;
	if (t->nreap == t->capreap) {
		size_t cap = t->capreap ? t->capreap * 2 : 64;
		gw_conn_t **r = realloc(t->reap, cap * sizeof *r);
		if (!r) {
			/* Cannot defer: the connection is not inside a callback
			 * of its own only if we are lucky, so leak it instead of
			 * risking a use after free. Closing the fd stops it. */
			log_error("gateway: out of memory reaping fd %d", c->fd);
			shutdown(c->fd, SHUT_RDWR);
			return;
		}
		t->reap = r;
		t->capreap = cap;
	}
	t->reap[t->nreap++] = c;
}

static void conn_free(gw_conn_t *c)
{
	io_thread_t *t = c->t;
	server_t *srv = t->gw->srv;
	uint32_t i;

	wheel_unlink(t, c);
	loop_watch_del(t->loop, c->fd);
	close(c->fd);
	if (c->user) {
		log_debug("gateway: fd %d: user %lld device %lld disconnected", c->fd, (long long)c->user,
		          (long long)c->device);
		t->gw->h.ws_closed(t->gw->h.ud, c);
	}
	for (i = c->out ? c->out->head : 0; c->out && i < c->out->n; i++)
		sbuf_unref(c->out->buf[i]);
	free(c->out);
	bytebuf_free(c, c->rbuf);
	bytebuf_free(c, c->frag);
	if (c->flags & F_COUNTED)
		addrconns_close(srv->addrconns, c->addr, !!(c->flags & F_PENDING));
	atomic_fetch_sub(&t->gw->conns, 1);
	if (c->user)
		atomic_fetch_sub(&t->gw->websockets, 1);
	t->conns[c->slot] = NULL;
	t->gens[c->slot]++;
	t->free_slots[t->nfree++] = c->slot;
	t->nconns--;
	free(c);
}

void gw_conn_close(gw_conn_t *c, int code, const char *reason)
{
	if (c->flags & F_DEAD || c->state == ST_CLOSING || c->state == ST_LINGER)
		return;
	if (c->state == ST_WS) {
		conn_queue(c, ws_close_frame_new(code, reason));
		bytebuf_free(c, c->frag);
		c->frag = NULL;
		c->frag_opcode = 0;
	}
	c->state = ST_CLOSING;
	c->flags |= F_FLUSH_CLOSE;
	mark_dirty(c);
	/* A peer that never reads our last words is not waited for long. */
	schedule(c, c->t->wheel_now + LINGER_S + 3);
}

/* Answers an HTTP request with an error and closes after it is sent. */
static void closing_after(gw_conn_t *c, sbuf_t *response)
{
	conn_queue(c, response);
	c->state = ST_CLOSING;
	c->flags |= F_FLUSH_CLOSE;
	schedule(c, c->t->wheel_now + LINGER_S + 3);
}

static void http_fail(gw_conn_t *c, int status, const char *code, const char *message,
                      const char *extra_header)
{
	closing_after(c, http_error_response(status, code, message, 0, extra_header));
}

/* A refusal after which waiting helps (retry_after_ms in the body). */
static void http_fail_retry(gw_conn_t *c, int status, const char *code, const char *message,
                            int64_t retry_ms)
{
	closing_after(c, http_error_retry(status, code, message, 0, retry_ms));
}

/* ---- HTTP ----------------------------------------------------------- */

/* The WebSocket handshake of RFC 6455 section 4.2.1; what the server
 * then asks of the request (its origin, its credential) is the route's. */
static void handle_upgrade(gw_conn_t *c, const http_request_t *req, const gw_route_t *r)
{
	const http_header_t *h;
	char accept[29];

	if (!(req->method_len == 3 && memcmp(req->method, "GET", 3) == 0)) {
		http_fail(c, 405, "bad_request", "the WebSocket endpoint takes GET", "Allow: GET\r\n");
		return;
	}
	h = http_find_header(req, "upgrade");
	if (!h || !http_value_has_token(h->value, h->value_len, "websocket") ||
	    !(h = http_find_header(req, "connection")) ||
	    !http_value_has_token(h->value, h->value_len, "upgrade")) {
		http_fail(c, 426, "bad_request", "this endpoint speaks WebSocket only",
		          "Upgrade: websocket\r\n");
		return;
	}
	h = http_find_header(req, "sec-websocket-version");
	if (!h || h->value_len != 2 || memcmp(h->value, "13", 2) != 0) {
		http_fail(c, 426, "bad_request", "WebSocket version 13 is required",
		          "Sec-WebSocket-Version: 13\r\n");
		return;
	}
	h = http_find_header(req, "sec-websocket-key");
	if (!h || ws_accept_key(h->value, h->value_len, accept) < 0) {
		http_fail(c, 400, "bad_request", "missing or malformed Sec-WebSocket-Key", NULL);
		return;
	}
	if (c->flags & F_PROXIED) {
		/* From now on the connection is this client's. */
		c->addr = request_client(c, req);
	}
	r->upgrade(c->t->gw->h.ud, c, req, accept);
}

/* The client a request is from: the connection's own address, or for a
 * trusted proxy's connection the one its X-Forwarded-For names. */
static uint64_t request_client(gw_conn_t *c, const http_request_t *req)
{
	server_t *srv = c->t->gw->srv;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	addr_t peer, client;

	if (!(c->flags & F_PROXIED) || getpeername(c->fd, (struct sockaddr *)&ss, &sl) < 0 ||
	    addr_from_sockaddr((struct sockaddr *)&ss, sl, &peer) < 0)
		return c->addr;
	if (xff_client(req, &srv->trusted_proxies, &peer, &client) < 0)
		log_refusal("gateway: %s is a trusted proxy but sent a malformed X-Forwarded-For",
		         conn_peer(c));
	return addr_key(&client);
}

/* The first route that serves this path on this listener. */
static const gw_route_t *find_route(const gateway_t *gw, const http_request_t *req, int listener)
{
	size_t i, n;

	for (i = 0; i < gw->h.nroutes; i++) {
		const gw_route_t *r = &gw->h.routes[i];

		if (!(r->listeners & listener))
			continue;
		n = strlen(r->path);
		if (r->match == GW_PREFIX ? req->path_len >= n && memcmp(req->target, r->path, n) == 0
		                          : req->path_len == n && memcmp(req->target, r->path, n) == 0)
			return r;
	}
	return NULL;
}

static void handle_request(gw_conn_t *c, const http_request_t *req, const char *body,
                           size_t body_len)
{
	gateway_t *gw = c->t->gw;
	const gw_route_t *r = find_route(gw, req, (c->flags & F_ADMIN) ? GW_OPERATOR : GW_PUBLIC);

	if (!r) {
		gw_conn_respond(c,
		                http_error_response(404, "not_found",
		                                    (c->flags & F_ADMIN) ? "the operator listener serves only "
		                                                           "the operator's endpoints"
		                                                         : "no such endpoint",
		                                    req->keep_alive, NULL),
		                req->keep_alive);
		return;
	}
	if (r->upgrade)
		handle_upgrade(c, req, r);
	else
		r->http(gw->h.ud, c, req, body, body_len);
}

/* Parses and handles requests in data; returns the bytes consumed. */
static size_t process_http(gw_conn_t *c, const char *data, size_t len)
{
	size_t off = 0;

	while (off < len && c->state == ST_HTTP && !(c->flags & (F_BUSY | F_DEAD))) {
		const char *p = data + off;
		size_t avail = len - off, need;
		http_request_t req;
		int r;

		/* Pipelined requests wait while earlier answers are unsent, so
		 * a client that sends many and reads none holds one answer's
		 * memory, not the answers to all of them. */
		if (c->out_bytes >= HTTP_HOLD_BYTES) {
			c->flags |= F_HTTP_HELD;
			pause_reading(c, 1);
			break;
		}
		r = http_parse_request(p, avail, &req);

		if (r == HTTP_INCOMPLETE) {
			size_t scan = avail < HTTP_MAX_REQUEST_LINE ? avail : HTTP_MAX_REQUEST_LINE;
			if (avail > HTTP_MAX_REQUEST_LINE && !memchr(p, '\n', scan))
				http_fail(c, 414, "too_large", "request line too long", NULL);
			else if (avail > HTTP_MAX_HEAD)
				http_fail(c, 431, "too_large", "request headers too large", NULL);
			break;
		}
		if (r == HTTP_TOO_MANY_HEADERS) {
			http_fail(c, 431, "too_large", "too many request headers", NULL);
			break;
		}
		if (r < 0) {
			http_fail(c, 400, "bad_request", "malformed HTTP request", NULL);
			break;
		}
		if (req.target_len > HTTP_MAX_REQUEST_LINE) {
			http_fail(c, 414, "too_large", "request target too long", NULL);
			break;
		}
		if ((size_t)r > HTTP_MAX_HEAD) {
			http_fail(c, 431, "too_large", "request headers too large", NULL);
			break;
		}
		if (req.chunked) {
			http_fail(c, 411, "bad_request", "send a Content-Length; chunked bodies are not accepted",
			          NULL);
			break;
		}
		if (req.content_length > HTTP_MAX_BODY) {
			http_fail(c, 413, "too_large", "request body over 65536 bytes", NULL);
			break;
		}
		need = (size_t)r + (size_t)(req.content_length > 0 ? req.content_length : 0);
		if (avail < need) {
			/* curl and others wait for this before sending a body. */
			const http_header_t *e = http_find_header(&req, "expect");
			if (e && !(c->flags & F_CONTINUED) && e->value_len == 12 &&
			    strncasecmp(e->value, "100-continue", 12) == 0) {
				conn_queue(c, sbuf_copy("HTTP/1.1 100 Continue\r\n\r\n", 25));
				c->flags |= F_CONTINUED;
			}
			break;
		}
		c->flags &= ~F_CONTINUED;
		c->flags |= F_SERVED;
		handle_request(c, &req, p + r, need - (size_t)r);
		off += need;
	}
	return off;
}

/* ---- answering a route ---------------------------------------------- */

void gw_conn_respond(gw_conn_t *c, sbuf_t *response, int keep_alive)
{
	conn_queue(c, response); /* NULL: out of memory, drops the connection */
	if (!keep_alive) {
		c->state = ST_CLOSING;
		c->flags |= F_FLUSH_CLOSE;
	}
}

void gw_conn_refuse(gw_conn_t *c, int status, const char *code, const char *message,
                    const char *extra_header)
{
	http_fail(c, status, code, message, extra_header);
}

void gw_conn_defer(gw_conn_t *c)
{
	c->flags |= F_BUSY;
	pause_reading(c, 1);
}

int gw_conn_operator(const gw_conn_t *c)
{
	return !!(c->flags & F_ADMIN);
}

uint64_t gw_request_client(gw_conn_t *c, const http_request_t *req)
{
	return request_client(c, req);
}

/* ---- WebSocket ------------------------------------------------------ */

static void ws_message(gw_conn_t *c, const uint8_t *data, size_t len)
{
	c->t->gw->h.ws_text(c->t->gw->h.ud, c, data, len);
}

static int frag_append(gw_conn_t *c, const uint8_t *p, size_t n)
{
	int fresh = !c->frag, r = bytebuf_append(c, &c->frag, p, n, WS_MAX_MESSAGE);

	if (r == 0 && fresh)
		watch_partial(c);
	if (r == BYTEBUF_NODE_FULL) {
		log_refusal("gateway: %s: unfinished messages fill its address's share or the node's bound; closing",
		            conn_peer(c));
		gw_conn_close(c, WS_CLOSE_TRY_LATER, "server busy; reconnect later");
	}
	else if (r < 0)
		gw_conn_close(c, WS_CLOSE_INTERNAL, "out of memory");
	return r;
}

static void ws_frame(gw_conn_t *c, const ws_frame_t *f)
{
	int code, bad;

	switch (f->opcode) {
	case WS_OP_PING:
		conn_queue(c, ws_frame_new(WS_OP_PONG, f->payload, f->payload_len));
		return;
	case WS_OP_PONG:
		return; /* last_rx is already updated */
	case WS_OP_CLOSE:
		if ((bad = ws_check_close(f->payload, f->payload_len, &code)) != 0) {
			gw_conn_close(c, bad, "invalid close frame");
			return;
		}
		/* Echo the peer's code, as RFC 6455 section 5.5.1 asks. */
		gw_conn_close(c, code, NULL);
		return;
	case WS_OP_BINARY:
		gw_conn_close(c, WS_CLOSE_UNSUPPORTED, "binary messages are not supported");
		return;
	case WS_OP_CONT:
		if (c->frag_opcode == WS_OP_BINARY) {
			gw_conn_close(c, WS_CLOSE_UNSUPPORTED, "binary messages are not supported");
			return;
		}
		break;
	default:
		break;
	}
	/* Text, whole or in fragments: validate as it comes, fail fast. */
	c->utf8 = (uint8_t)utf8_validate(c->utf8, f->payload, f->payload_len);
	if (c->utf8 == UTF8_REJECT || (f->fin && c->utf8 != UTF8_ACCEPT)) {
		gw_conn_close(c, WS_CLOSE_INVALID_DATA, "invalid UTF-8 in a text message");
		return;
	}
	if (f->opcode == WS_OP_TEXT && f->fin) {
		ws_message(c, f->payload, f->payload_len);
		return;
	}
	if (frag_append(c, f->payload, f->payload_len) < 0)
		return;
	if (f->opcode == WS_OP_TEXT)
		c->frag_opcode = WS_OP_TEXT;
	if (f->fin) {
		bytebuf_t *m = c->frag;

		c->frag = NULL;
		c->frag_opcode = 0;
		ws_message(c, m->data, m->len);
		bytebuf_free(c, m);
	}
}

/* A frame costs its user's read budget before anything looks inside it:
 * parsing a frame costs the node in proportion to its bytes (a resume
 * naming thousands of conversations, a watch of hundreds of users), and a
 * budget checked only after parsing would let one account spend the
 * node's cores on frames it then refuses. Over the budget, the connection
 * is not read until the budget holds the frame again, so that the cost
 * falls on the sender's own TCP window, and the frame waits, unparsed,
 * where it is. The fixed part stands for the work of a frame of any size. */
#define FRAME_READ_COST 64
#define THROTTLE_MAX_S 10

static void throttle_reading(gw_conn_t *c, int64_t wait_ms)
{
	int64_t s = (wait_ms + 999) / 1000;

	if (s > THROTTLE_MAX_S)
		s = THROTTLE_MAX_S; /* looked at again then */
	log_refusal("gateway: %s is over its read rate; not reading it for %llds", conn_peer(c), (long long)s);
	atomic_fetch_add(&c->t->gw->throttled, 1);
	c->flags |= F_THROTTLED;
	pause_reading(c, 1);
	schedule(c, c->t->wheel_now + (uint32_t)s);
}

static size_t process_ws(gw_conn_t *c, uint8_t *data, size_t len)
{
	budget_t *rb = c->t->gw->srv->read_budget;
	size_t off = 0;

	while (off < len && c->state == ST_WS && !(c->flags & F_DEAD)) {
		ws_frame_t f;
		uint64_t plen;
		long r;
		int64_t wait;

		if (rb && ws_frame_whole(data + off, len - off, &plen) &&
		    (wait = budget_take(rb, (uint64_t)c->user, (double)plen + FRAME_READ_COST,
		                        loop_now_ms(c->t->loop))) > 0) {
			throttle_reading(c, wait);
			break;
		}
		r = ws_next_frame(data + off, len - off, c->frag_opcode, c->frag ? c->frag->len : 0,
		                  WS_MAX_MESSAGE, &f);
		if (r == WS_INCOMPLETE)
			break;
		if (r < 0) {
			gw_conn_close(c, (int)-r, r == -WS_CLOSE_TOO_BIG ? "message too big"
			                                                  : "WebSocket protocol error");
			return len;
		}
		off += (size_t)r;
		ws_frame(c, &f);
	}
	return off;
}

/* ---- input ---------------------------------------------------------- */

/* The PROXY header a trusted load balancer sends first: the client's
 * address. Returns the bytes consumed. */
static size_t process_proxy(gw_conn_t *c, const uint8_t *data, size_t len)
{
	proxy_result_t pr;
	int r = proxy_parse(data, len, &pr);

	if (r == PROXY_INCOMPLETE)
		return 0;
	if (r < 0) {
		log_refusal("gateway: %s is a trusted proxy but sent no valid PROXY header; closing",
		         conn_peer(c));
		conn_kill(c);
		return len;
	}
	if (!pr.local)
		c->addr = addr_key(&pr.src);
	c->state = ST_HTTP;
	if (count_conn(c, 1) < 0)
		return len;
	return (size_t)r + process_http(c, (const char *)data + r, len - (size_t)r);
}

static size_t process_bytes(gw_conn_t *c, uint8_t *data, size_t len)
{
	switch (c->state) {
	case ST_PROXY:
		return process_proxy(c, data, len);
	case ST_HTTP:
		return process_http(c, (const char *)data, len);
	case ST_WS:
		return process_ws(c, data, len);
	default:
		return len; /* closing: input is ignored */
	}
}

/* Runs what is buffered in rbuf (after a worker's answer unpaused us). */
static void conn_process(gw_conn_t *c)
{
	bytebuf_t *b = c->rbuf;
	size_t used;

	if (!b)
		return;
	used = process_bytes(c, b->data, b->len);
	if (c->flags & F_DEAD)
		return;
	if (used >= b->len) {
		bytebuf_free(c, b);
		c->rbuf = NULL;
	} else if (used) {
		memmove(b->data, b->data + used, b->len - used);
		b->len -= (uint32_t)used;
		bytebuf_shrink(c, &c->rbuf);
		/* What is left begins the next request: its deadline runs
		 * from now at the earliest. */
		if (c->state == ST_HTTP)
			c->since = loop_now_s(c->t->loop);
	}
}

static uint32_t input_cap(const gw_conn_t *c)
{
	return c->state == ST_WS ? WS_MAX_FRAME : HTTP_MAX_REQUEST;
}

/* Keeps the unconsumed tail of a read. Returns 0, or -1 after refusing
 * the connection (node-wide partial memory full, or out of memory). */
static int keep_tail(gw_conn_t *c, const uint8_t *p, size_t n)
{
	int r;

	if (!c->rbuf && c->state <= ST_HTTP) {
		/* A request has begun: it must be complete in time. */
		c->since = loop_now_s(c->t->loop);
		uint32_t due = c->since + (uint32_t)c->t->gw->srv->cfg.request_timeout_s;
		if (!(c->flags & F_IN_WHEEL) || c->due > due)
			schedule(c, due);
	}
	if ((r = bytebuf_append(c, &c->rbuf, p, n, input_cap(c))) == 0) {
		if (c->rbuf->len == n)
			watch_partial(c); /* just begun */
		return 0;
	}
	if (r == BYTEBUF_NODE_FULL) {
		log_refusal("gateway: %s: unfinished requests fill its address's share or the node's bound "
		            "(%zu bytes held); refusing", conn_peer(c), (size_t)atomic_load(&c->t->gw->partial_bytes));
		if (c->state == ST_HTTP)
			http_fail_retry(c, 503, "unavailable", "the server is busy; retry shortly", 5000);
		else if (c->state == ST_WS)
			gw_conn_close(c, WS_CLOSE_TRY_LATER, "server busy; reconnect later");
		else
			conn_kill(c);
	} else {
		conn_kill(c);
	}
	return -1;
}

static void conn_read(gw_conn_t *c)
{
	io_thread_t *t = c->t;
	server_t *srv = t->gw->srv;
	int i;

	/* Reads always land in the thread's buffer; a connection keeps only
	 * the unconsumed tail, in a buffer sized to what it holds, so a
	 * request trickled a byte at a time holds about what it has sent. */
	for (i = 0; i < 4 && !(c->flags & (F_DEAD | F_READ_OFF)); i++) {
		size_t room = READ_CHUNK, used;
		ssize_t n;

		if (c->rbuf) {
			uint32_t cap = input_cap(c);
			if (c->rbuf->len >= cap) {
				/* The parser would have refused this by now. */
				conn_kill(c);
				return;
			}
			/* Leave what would not fit in the kernel's buffer. */
			if (room > cap - c->rbuf->len)
				room = cap - c->rbuf->len;
		}
		n = read(c->fd, t->tbuf, room);
		if (n == 0) {
			conn_kill(c);
			return;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				conn_kill(c);
			return;
		}
		c->last_rx = loop_now_s(t->loop);
		if (c->state >= ST_CLOSING || atomic_load(&srv->draining)) {
			continue; /* no new work once closing or shutting down */
		}
		if (!c->rbuf) {
			used = process_bytes(c, t->tbuf, (size_t)n);
			if (c->flags & F_DEAD)
				return;
			if (used < (size_t)n && keep_tail(c, t->tbuf + used, (size_t)n - used) < 0)
				return;
		} else {
			if (keep_tail(c, t->tbuf, (size_t)n) < 0)
				return;
			conn_process(c);
		}
		if ((size_t)n < room)
			break;
	}
}

static void conn_on_io(loop_t *loop, loop_watch_t *w, uint32_t events)
{
	gw_conn_t *c = (gw_conn_t *)w;

	(void)loop;
	if (c->flags & F_DEAD)
		return;
	if (events & EPOLLOUT)
		conn_flush(c);
	if (c->flags & F_DEAD)
		return;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		if ((events & (EPOLLHUP | EPOLLERR)) && (c->flags & F_READ_OFF)) {
			conn_kill(c); /* gone while a worker had its request */
			return;
		}
		conn_read(c);
	}
}

/* ---- timers --------------------------------------------------------- */

/* When the oldest unfinished input of c began: 1 with *since, or 0 when
 * it holds none. */
static int partial_since(const gw_conn_t *c, uint32_t *since)
{
	if (!c->rbuf && !c->frag)
		return 0;
	*since = c->rbuf ? c->rbuf->since : c->frag->since;
	if (c->rbuf && c->frag && c->frag->since < *since)
		*since = c->frag->since;
	return 1;
}

/* A WebSocket has begun a frame or a message: its deadline may come
 * before the timer's next visit. */
static void watch_partial(gw_conn_t *c)
{
	uint32_t due = c->t->wheel_now + (uint32_t)c->t->gw->srv->cfg.request_timeout_s;

	if (c->state == ST_WS && (!(c->flags & F_IN_WHEEL) || c->due > due))
		schedule(c, due);
}

static void conn_timer(gw_conn_t *c, uint32_t now)
{
	const server_config_t *cfg = &c->t->gw->srv->cfg;
	uint32_t deadline, next, since;
	unsigned wake;

	switch (c->state) {
	case ST_PROXY:
	case ST_HTTP:
		if (c->flags & F_BUSY) {
			schedule(c, now + 5);
			return;
		}
		/* A request must be complete within its time from its first
		 * byte, however it trickles in; a new connection must begin
		 * one as quickly; only between requests may a keep-alive
		 * connection idle longer. */
		if (c->rbuf || !(c->flags & F_SERVED))
			deadline = c->since + (uint32_t)cfg->request_timeout_s;
		else
			deadline = c->last_rx + (uint32_t)cfg->http_timeout_s;
		if (now >= deadline) {
			if (c->state == ST_HTTP && c->rbuf && !(c->flags & F_HTTP_HELD)) {
				log_refusal("gateway: %s did not finish its request in %ds; closing", conn_peer(c),
				         cfg->request_timeout_s);
				http_fail(c, 408, "bad_request", "the request took too long to arrive", NULL);
			} else {
				conn_kill(c);
			}
			return;
		}
		schedule(c, deadline);
		return;
	case ST_WS:
		if (c->flags & F_THROTTLED) {
			/* Its input waited for us, not for the client: it was
			 * neither silent nor slow meanwhile. */
			c->flags &= ~F_THROTTLED;
			c->last_rx = now;
			if (c->rbuf)
				c->rbuf->since = now;
			if (c->frag)
				c->frag->since = now;
			pause_reading(c, 0);
			conn_process(c);
			if (c->flags & (F_DEAD | F_THROTTLED))
				return; /* gone, or paused again with its timer set */
		}
		/* A frame or a fragmented message must arrive whole in time, as
		 * a request must: pongs between its pieces keep the connection
		 * alive, not what it holds. */
		if (partial_since(c, &since) && now - since >= (uint32_t)cfg->request_timeout_s) {
			log_refusal("gateway: %s did not finish a message in %ds; closing", conn_peer(c),
			            cfg->request_timeout_s);
			gw_conn_close(c, WS_CLOSE_TRY_LATER, "a message took too long to arrive");
			schedule(c, now + LINGER_S + 1);
			return;
		}
		if (now - c->last_rx >= (uint32_t)cfg->idle_timeout_s) {
			log_debug("gateway: user %lld silent for %ds; closing", (long long)c->user,
			          cfg->idle_timeout_s);
			gw_conn_close(c, WS_CLOSE_GOING_AWAY, "idle timeout");
			schedule(c, now + LINGER_S + 1);
			return;
		}
		if (now - c->since >= (uint32_t)cfg->ping_interval_s) {
			conn_queue(c, ws_frame_new(WS_OP_PING, NULL, 0));
			c->since = now;
		}
		wake = c->t->gw->h.ws_timer(c->t->gw->h.ud, c);
		if (c->flags & F_DEAD)
			return;
		next = c->since + (uint32_t)cfg->ping_interval_s;
		if (wake && now + wake < next)
			next = now + wake;
		if (c->last_rx + (uint32_t)cfg->idle_timeout_s < next)
			next = c->last_rx + (uint32_t)cfg->idle_timeout_s;
		if (partial_since(c, &since) && since + (uint32_t)cfg->request_timeout_s < next)
			next = since + (uint32_t)cfg->request_timeout_s;
		schedule(c, next);
		return;
	default:
		/* Closing or lingering past its time. */
		conn_kill(c);
	}
}

static void on_tick(loop_t *loop, void *ud, uint32_t now)
{
	io_thread_t *t = ud;

	(void)loop;
	if (t->accept_paused && t->lfd >= 0 &&
	    loop_watch_add(t->loop, t->lfd, EPOLLIN, &t->lwatch) == 0) {
		t->accept_paused = 0;
		if (t->alfd >= 0)
			loop_watch_add(t->loop, t->alfd, EPOLLIN, &t->awatch);
	}
	while (t->wheel_now < now) {
		gw_conn_t *c, *next;
		uint32_t slot;

		t->wheel_now++;
		slot = t->wheel_now % WHEEL;
		c = t->wheel[slot];
		t->wheel[slot] = NULL;
		for (; c; c = next) {
			next = linked(t, c->wnext);
			c->wprev = c->wnext = 0;
			c->flags &= ~F_IN_WHEEL;
			if (c->flags & F_DEAD)
				continue;
			if (c->due > t->wheel_now)
				schedule(c, c->due);
			else
				conn_timer(c, t->wheel_now);
		}
	}
}

/* ---- accepting ------------------------------------------------------ */

static int slot_alloc(io_thread_t *t, uint32_t *slot)
{
	if (!t->nfree) {
		uint32_t n = t->nslots ? t->nslots * 2 : 1024, i;
		gw_conn_t **c;
		uint32_t *g, *f;

		if (n > SLOTS_MAX || !(c = realloc(t->conns, n * sizeof *c)))
			return -1;
		t->conns = c;
		if (!(g = realloc(t->gens, n * sizeof *g)))
			return -1;
		t->gens = g;
		if (!(f = realloc(t->free_slots, n * sizeof *f)))
			return -1;
		t->free_slots = f;
		for (i = t->nslots; i < n; i++) {
			t->conns[i] = NULL;
			t->gens[i] = 0;
		}
		for (i = n; i > t->nslots; i--)
			t->free_slots[t->nfree++] = i - 1;
		t->nslots = n;
	}
	*slot = t->free_slots[--t->nfree];
	return 0;
}

/* Counts c as a connection of its address, or refuses it with 429.
 * Returns 0 or -1 (refused). */
static int count_conn(gw_conn_t *c, int pending)
{
	server_t *srv = c->t->gw->srv;
	int r = addrconns_open(srv->addrconns, c->addr);

	if (r == ADDRCONNS_OK) {
		c->flags |= F_COUNTED | F_PENDING;
		if (!pending) {
			addrconns_upgraded(srv->addrconns, c->addr);
			c->flags &= ~F_PENDING;
		}
		return 0;
	}
	if (r == ADDRCONNS_NOMEM) {
		http_fail(c, 503, "unavailable", "out of memory", NULL);
		return -1;
	}
	log_refusal("gateway: %s holds %u connections%s; refusing another", conn_peer(c),
	         r == ADDRCONNS_TOTAL ? srv->cfg.max_address_connections : srv->cfg.max_address_pending,
	         r == ADDRCONNS_TOTAL ? "" : " that are not WebSockets");
	http_fail_retry(c, 429, "rate_limited",
	                r == ADDRCONNS_TOTAL ? "too many connections from your address; close some first"
	                                     : "too many unfinished connections from your address; finish or close some first",
	                10000);
	c->flags |= F_QUICK_CLOSE;
	return -1;
}

static void accept_from(io_thread_t *t, int lfd, uint16_t flags)
{
	loop_t *loop = t->loop;
	server_t *srv = t->gw->srv;
	int i;

	for (i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
		gw_conn_t *c;
		uint32_t slot;
		addr_t peer;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
				/* Level-triggered: the listener would wake us at once
				 * again. Stop watching it until the next tick. */
				log_warn("gateway: accept: %s; pausing accepts for a second", strerror(errno));
				loop_watch_del(loop, t->lfd);
				if (t->alfd >= 0)
					loop_watch_del(loop, t->alfd);
				t->accept_paused = 1;
			}
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		if (!(c = calloc(1, sizeof *c)) || slot_alloc(t, &slot) < 0) {
			log_warn("gateway: out of memory for a new connection");
			free(c);
			close(fd);
			return;
		}
		c->watch.on_io = conn_on_io;
		c->t = t;
		c->fd = fd;
		c->slot = slot;
		c->gen = t->gens[slot];
		c->state = ST_HTTP;
		c->flags = flags;
		c->last_rx = c->since = loop_now_s(loop);
		t->conns[slot] = c;
		t->nconns++;
		atomic_fetch_add(&t->gw->conns, 1);
		if (loop_watch_add(loop, fd, EPOLLIN, &c->watch) < 0) {
			log_warn("gateway: epoll_ctl: %s", strerror(errno));
			conn_kill(c);
			continue;
		}
		schedule(c, c->since + (uint32_t)srv->cfg.request_timeout_s);
		if (addr_from_sockaddr((struct sockaddr *)&ss, sl, &peer) < 0)
			memset(&peer, 0, sizeof peer);
		c->addr = addr_key(&peer);
		/* A trusted load balancer's connection speaks for a client it
		 * names: in a PROXY header before anything else, or in each
		 * request's X-Forwarded-For. Its own connections are not
		 * counted against an address; the clients they name are. */
		if (!(flags & F_ADMIN) && addr_list_match(&srv->trusted_proxies, &peer)) {
			if (srv->cfg.proxy_protocol)
				c->state = ST_PROXY;
			else
				c->flags |= F_PROXIED;
		} else if (!(flags & F_ADMIN)) {
			count_conn(c, 1);
		}
	}
}

static void on_accept(loop_t *loop, loop_watch_t *w, uint32_t events)
{
	io_thread_t *t = (io_thread_t *)((char *)w - offsetof(io_thread_t, lwatch));

	(void)loop;
	(void)events;
	accept_from(t, t->lfd, 0);
}

static void on_accept_admin(loop_t *loop, loop_watch_t *w, uint32_t events)
{
	io_thread_t *t = (io_thread_t *)((char *)w - offsetof(io_thread_t, awatch));

	(void)loop;
	(void)events;
	accept_from(t, t->alfd, F_ADMIN);
}

/* ---- end of each loop turn ------------------------------------------ */

static void before_sleep(loop_t *loop, void *ud)
{
	io_thread_t *t = ud;
	size_t i;

	/* Flush every connection written to in this turn: one writev per
	 * connection per turn however many frames it got. */
	while (t->dirty) {
		gw_conn_t *c = t->dirty;
		t->dirty = linked(t, c->next_dirty);
		c->next_dirty = 0;
		c->flags &= ~F_DIRTY;
		if (!(c->flags & F_DEAD))
			conn_flush(c);
	}
	for (i = 0; i < t->nreap; i++)
		conn_free(t->reap[i]);
	t->nreap = 0;
	if (t->exiting) {
		if (t->nconns == 0 || loop_now_ms(loop) >= t->exit_deadline_ms) {
			uint32_t s;
			for (s = 0; s < t->nslots; s++)
				if (t->conns[s])
					conn_free(t->conns[s]);
			loop_stop(loop);
		}
	}
}

/* ---- posted tasks --------------------------------------------------- */

static void task_live(loop_t *loop, void *p, uint64_t u)
{
	io_thread_t *t = loop_hooks_ud(loop);
	sbuf_t *frame = p;
	gw_conn_t *c = resolve(t, u);

	if (c && c->state == ST_WS)
		t->gw->h.ws_live(t->gw->h.ud, c, frame);
	sbuf_unref(frame);
}

static void task_frame(loop_t *loop, void *p, uint64_t u)
{
	io_thread_t *t = loop_hooks_ud(loop);
	gw_conn_t *c = resolve(t, u);

	if (c && c->state == ST_WS)
		conn_queue(c, p);
	else
		sbuf_unref(p);
}

static void task_ack(loop_t *loop, void *p, uint64_t u)
{
	io_thread_t *t = loop_hooks_ud(loop);
	gw_conn_t *c = resolve(t, u);

	if (c && c->sends)
		c->sends--;
	if (c && c->state == ST_WS)
		conn_queue(c, p);
	else
		sbuf_unref(p);
}

typedef struct call {
	gw_call_fn fn;
	void *p;
} call_t;

static void task_call(loop_t *loop, void *p, uint64_t u)
{
	io_thread_t *t = loop_hooks_ud(loop);
	call_t *call = p;
	gw_conn_t *c = resolve(t, u);

	call->fn(c && c->state == ST_WS ? c : NULL, call->p);
	free(call);
}

static void http_done(loop_t *loop, sbuf_t *resp, uint64_t u, int keep)
{
	io_thread_t *t = loop_hooks_ud(loop);
	gw_conn_t *c = resolve(t, u);

	if (!c || !(c->flags & F_BUSY)) {
		sbuf_unref(resp);
		return;
	}
	c->flags &= ~F_BUSY;
	conn_queue(c, resp);
	if (!keep || atomic_load(&t->gw->srv->draining) || t->exiting) {
		c->state = ST_CLOSING;
		c->flags |= F_FLUSH_CLOSE;
		return;
	}
	c->last_rx = loop_now_s(loop);
	pause_reading(c, 0);
	conn_process(c); /* a pipelined request may be waiting */
}

static void task_http_keep(loop_t *loop, void *p, uint64_t u)
{
	http_done(loop, p, u, 1);
}

static void task_http_close(loop_t *loop, void *p, uint64_t u)
{
	http_done(loop, p, u, 0);
}

typedef struct upgrade {
	int64_t user, device;
	char accept[29];
} upgrade_t;

/* Asks the server whether (user, device) may open this WebSocket. The
 * connection is theirs while the server decides (its handlers read
 * gw_conn_user); refused, it is no one's again, so that closing it calls
 * no handler. */
static int admit(gw_conn_t *c, int64_t user, int64_t device, gw_refusal_t *why)
{
	gateway_t *gw = c->t->gw;

	c->user = user;
	c->device = device;
	if (gw->h.ws_admit(gw->h.ud, c, why) < 0) {
		c->user = c->device = 0;
		return -1;
	}
	return 0;
}

static void task_upgrade(loop_t *loop, void *p, uint64_t u)
{
	io_thread_t *t = loop_hooks_ud(loop);
	server_t *srv = t->gw->srv;
	upgrade_t *up = p;
	gw_conn_t *c = resolve(t, u);
	gw_refusal_t why = {503, "unavailable", "refused", NULL};
	char head[256];
	int n;

	if (!c || !(c->flags & F_BUSY) || c->state != ST_HTTP) {
		free(up);
		return;
	}
	c->flags &= ~F_BUSY;
	if (atomic_load(&srv->draining) || t->exiting) {
		http_fail(c, 503, "unavailable", "shutting down", NULL);
	} else if (!up->user) {
		http_fail(c, 401, "unauthorized", "invalid or expired token", NULL);
	} else if ((c->flags & F_PROXIED) && count_conn(c, 0) < 0) {
		/* refused: this client holds too many connections */
	} else if (admit(c, up->user, up->device, &why) < 0) {
		http_fail(c, why.status, why.code, why.message, why.extra_header);
	} else {
		n = snprintf(head, sizeof head,
		             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
		             "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", up->accept);
		conn_queue(c, sbuf_copy(head, (size_t)n));
		c->flags &= ~F_PROXIED; /* the connection is its client's now */
		if (c->flags & F_PENDING) {
			addrconns_upgraded(srv->addrconns, c->addr);
			c->flags &= ~F_PENDING;
		}
		c->state = ST_WS;
		atomic_fetch_add(&t->gw->websockets, 1);
		c->last_rx = c->since = loop_now_s(loop);
		t->gw->h.ws_opened(t->gw->h.ud, c);
		log_debug("gateway: fd %d: user %lld device %lld connected", c->fd, (long long)c->user,
		          (long long)c->device);
		schedule(c, c->since + (uint32_t)srv->cfg.ping_interval_s);
		pause_reading(c, 0);
		conn_process(c);
	}
	free(up);
}

static void task_kick(loop_t *loop, void *p, uint64_t u)
{
	io_thread_t *t = loop_hooks_ud(loop);
	gw_conn_t *c = resolve(t, u);

	(void)p;
	if (c && c->state == ST_WS)
		gw_conn_close(c, WS_CLOSE_POLICY, "session ended");
}

static void task_stop_accept(loop_t *loop, void *p, uint64_t u)
{
	io_thread_t *t = loop_hooks_ud(loop);

	(void)p;
	(void)u;
	if (t->lfd >= 0) {
		if (!t->accept_paused)
			loop_watch_del(loop, t->lfd);
		close(t->lfd);
		t->lfd = -1;
	}
	if (t->alfd >= 0) {
		if (!t->accept_paused)
			loop_watch_del(loop, t->alfd);
		close(t->alfd);
		t->alfd = -1;
	}
}

static void task_goaway(loop_t *loop, void *p, uint64_t u)
{
	io_thread_t *t = loop_hooks_ud(loop);
	uint32_t s;

	(void)p;
	t->exiting = 1;
	t->exit_deadline_ms = loop_now_ms(loop) + (int64_t)u;
	for (s = 0; s < t->nslots; s++) {
		gw_conn_t *c = t->conns[s];
		if (!c || (c->flags & F_DEAD))
			continue;
		if (c->state == ST_WS)
			gw_conn_close(c, WS_CLOSE_GOING_AWAY, "server shutting down");
		else if (c->state <= ST_HTTP && !(c->flags & F_BUSY))
			conn_kill(c);
	}
}

/* u: how many to close (low 32 bits), and whether to close those with
 * sends in flight too (bit 32). */
static void task_close_some(loop_t *loop, void *p, uint64_t u)
{
	io_thread_t *t = loop_hooks_ud(loop);
	uint32_t left = (uint32_t)u, s;
	int force = (int)((u >> 32) & 1);

	(void)p;
	for (s = 0; s < t->nslots && left > 0; s++) {
		gw_conn_t *c = t->conns[s];
		if (!c || (c->flags & F_DEAD) || c->state != ST_WS || (c->sends && !force))
			continue;
		gw_conn_close(c, WS_CLOSE_SERVICE_RESTART, "node restarting; reconnect");
		left--;
	}
}

/* ---- public: any thread --------------------------------------------- */

static void post(gateway_t *gw, uint64_t conn, loop_task_fn fn, void *p)
{
	io_thread_t *t = thread_of(gw, conn);

	if (!t || loop_post(t->loop, fn, p, conn) < 0) {
		log_error("gateway: cannot post to connection %llx", (unsigned long long)conn);
		/* Run it with a handle that resolves to nothing so that it
		 * releases what it carries. */
		fn(t ? t->loop : gw->t[0].loop, p, ~0ULL);
	}
}

void gw_post_frame(gateway_t *gw, uint64_t conn, sbuf_t *frame)
{
	if (frame)
		post(gw, conn, task_frame, sbuf_ref(frame));
}

void gw_post_ack(gateway_t *gw, uint64_t conn, sbuf_t *frame)
{
	if (frame)
		post(gw, conn, task_ack, sbuf_ref(frame));
}

void gw_post_call(gateway_t *gw, uint64_t conn, gw_call_fn fn, void *p)
{
	call_t *call = malloc(sizeof *call);

	if (!call) {
		fn(NULL, p);
		return;
	}
	call->fn = fn;
	call->p = p;
	post(gw, conn, task_call, call);
}

void gw_post_http(gateway_t *gw, uint64_t conn, sbuf_t *response, int keep_alive)
{
	if (!response)
		response = sbuf_copy("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
		                     "Connection: close\r\n\r\n", 76);
	post(gw, conn, keep_alive ? task_http_keep : task_http_close, response);
}

void gw_post_upgrade(gateway_t *gw, uint64_t conn, int64_t user, int64_t device,
                     const char accept[29])
{
	upgrade_t *up = malloc(sizeof *up);

	if (!up) {
		gw_post_http(gw, conn, NULL, 0);
		return;
	}
	up->user = user;
	up->device = device;
	memcpy(up->accept, accept, 29);
	post(gw, conn, task_upgrade, up);
}

void gw_post_live(gateway_t *gw, uint64_t conn, sbuf_t *frame)
{
	post(gw, conn, task_live, sbuf_ref(frame));
}

void gw_post_kick(gateway_t *gw, uint64_t conn)
{
	post(gw, conn, task_kick, NULL);
}

/* ---- public: connection's own thread -------------------------------- */

uint64_t gw_conn_handle(const gw_conn_t *c)
{
	return handle_of(c);
}

int64_t gw_conn_user(const gw_conn_t *c)
{
	return c->user;
}

int64_t gw_conn_device(const gw_conn_t *c)
{
	return c->device;
}

uint64_t gw_conn_addr(const gw_conn_t *c)
{
	return c->addr;
}

const char *gw_conn_peer(const gw_conn_t *c)
{
	return conn_peer(c);
}

void **gw_conn_app(gw_conn_t *c)
{
	return &c->app;
}

void gw_conn_send(gw_conn_t *c, sbuf_t *frame)
{
	if (frame)
		conn_queue(c, sbuf_ref(frame));
}

void gw_conn_wake(gw_conn_t *c, unsigned seconds)
{
	uint32_t due = c->t->wheel_now + (seconds ? seconds : 1);

	if (c->state == ST_WS && (!(c->flags & F_IN_WHEEL) || c->due > due))
		schedule(c, due);
}

size_t gw_conn_queued(const gw_conn_t *c)
{
	return c->out_bytes;
}

int gw_conn_sends_begin(gw_conn_t *c, int max)
{
	if (c->sends >= max || c->sends == UINT8_MAX)
		return -1;
	c->sends++;
	return 0;
}

void gw_conn_sends_end(gw_conn_t *c)
{
	if (c->sends)
		c->sends--;
}

/* ---- set-up and shut-down ------------------------------------------- */

static int listen_on(const char *host, int port, int *out_port)
{
	struct addrinfo hints = {0}, *res = NULL;
	char portstr[16];
	int fd = -1, one = 1, rc;

	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(portstr, sizeof portstr, "%d", port);
	if ((rc = getaddrinfo(host, portstr, &hints, &res)) != 0) {
		log_error("gateway: cannot resolve %s: %s", host, gai_strerror(rc));
		return -1;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
		log_error("gateway: cannot listen on %s:%d: %s", host, port, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return -1;
	}
	if (out_port) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		getsockname(fd, (struct sockaddr *)&ss, &sl);
		*out_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
		                                           : ((struct sockaddr_in *)&ss)->sin_port);
	}
	freeaddrinfo(res);
	return fd;
}

gateway_t *gateway_new(server_t *srv, const gw_handlers_t *h)
{
	gateway_t *gw = calloc(1, sizeof *gw);
	int i;

	if (!gw)
		return NULL;
	gw->srv = srv;
	gw->h = *h;
	gw->n = srv->cfg.threads;
	if (!(gw->t = calloc((size_t)gw->n, sizeof *gw->t)))
		goto err;
	for (i = 0; i < gw->n; i++) {
		io_thread_t *t = &gw->t[i];
		loop_hooks_t hooks = {before_sleep, on_tick, t};

		t->gw = gw;
		t->index = i;
		t->lfd = t->alfd = -1;
		snprintf(t->name, sizeof t->name, "io-%d", i);
		/* SO_REUSEPORT: one listener per thread and the kernel spreads
		 * connections among them; with port 0 the first picks it. */
		t->lfd = listen_on(srv->cfg.host, i == 0 ? srv->cfg.port : gw->port,
		                   i == 0 ? &gw->port : NULL);
		if (t->lfd < 0)
			goto err;
		if (!(t->loop = loop_new(&hooks)) || !(t->tbuf = malloc(READ_CHUNK)))
			goto err;
		t->lwatch.on_io = on_accept;
		if (loop_watch_add(t->loop, t->lfd, EPOLLIN, &t->lwatch) < 0)
			goto err;
		t->alfd = -1;
		if (i == 0 && srv->cfg.admin_host[0]) {
			t->alfd = listen_on(srv->cfg.admin_host, srv->cfg.admin_port, &gw->admin_port);
			t->awatch.on_io = on_accept_admin;
			if (t->alfd < 0 || loop_watch_add(t->loop, t->alfd, EPOLLIN, &t->awatch) < 0)
				goto err;
		}
		t->wheel_now = loop_now_s(t->loop);
	}
	return gw;
err:
	gateway_free(gw);
	return NULL;
}

static void *io_main(void *p)
{
	io_thread_t *t = p;

	log_set_thread_name(t->name);
	t->wheel_now = (uint32_t)(clock_mono_ms() / 1000);
	loop_run(t->loop);
	return NULL;
}

int gateway_start(gateway_t *gw)
{
	int i;

	for (i = 0; i < gw->n; i++) {
		if (pthread_create(&gw->t[i].thread, NULL, io_main, &gw->t[i]) != 0) {
			log_error("gateway: cannot start I/O thread %d", i);
			return -1;
		}
		gw->t[i].started = 1;
	}
	return 0;
}

int gateway_port(const gateway_t *gw)
{
	return gw->port;
}

int gateway_admin_port(const gateway_t *gw)
{
	return gw->admin_port;
}

void gateway_stats(gateway_t *gw, gateway_stats_t *out)
{
	out->conns = (uint64_t)atomic_load(&gw->conns);
	out->websockets = (uint64_t)atomic_load(&gw->websockets);
	out->partial_bytes = (uint64_t)atomic_load(&gw->partial_bytes);
	out->throttled = (uint64_t)atomic_load(&gw->throttled);
}

void gateway_stop_accepting(gateway_t *gw)
{
	int i;

	for (i = 0; i < gw->n; i++)
		post(gw, ((uint64_t)gw->srv->cfg.node_id << BUS_CONN_NODE_SHIFT) | ((uint64_t)i << HANDLE_THREAD_SHIFT),
		     task_stop_accept, NULL);
}

typedef struct barrier {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int left;
} barrier_t;

static void task_barrier(loop_t *loop, void *p, uint64_t u)
{
	barrier_t *b = p;

	(void)loop;
	(void)u;
	pthread_mutex_lock(&b->lock);
	if (--b->left == 0)
		pthread_cond_signal(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

void gateway_quiesce(gateway_t *gw)
{
	barrier_t b;
	int i;

	pthread_mutex_init(&b.lock, NULL);
	pthread_cond_init(&b.cond, NULL);
	b.left = gw->n;
	for (i = 0; i < gw->n; i++)
		if (loop_post(gw->t[i].loop, task_barrier, &b, 0) < 0)
			task_barrier(gw->t[i].loop, &b, 0);
	pthread_mutex_lock(&b.lock);
	while (b.left > 0)
		pthread_cond_wait(&b.cond, &b.lock);
	pthread_mutex_unlock(&b.lock);
	pthread_mutex_destroy(&b.lock);
	pthread_cond_destroy(&b.cond);
}

void gateway_close_websockets(gateway_t *gw, unsigned per_thread, int force)
{
	uint64_t u = (uint64_t)per_thread | ((uint64_t)(force != 0) << 32);
	int i;

	for (i = 0; i < gw->n; i++)
		if (loop_post(gw->t[i].loop, task_close_some, NULL, u) < 0)
			log_error("gateway: cannot tell I/O thread %d to close WebSockets", i);
}

void gateway_shutdown(gateway_t *gw, int grace_ms)
{
	int i;

	for (i = 0; i < gw->n; i++)
		if (loop_post(gw->t[i].loop, task_goaway, NULL, (uint64_t)grace_ms) < 0)
			log_error("gateway: cannot tell I/O thread %d to stop", i);
	for (i = 0; i < gw->n; i++) {
		if (gw->t[i].started)
			pthread_join(gw->t[i].thread, NULL);
		gw->t[i].started = 0;
	}
}

void gateway_free(gateway_t *gw)
{
	int i;
	uint32_t s;

	if (!gw)
		return;
	for (i = 0; gw->t && i < gw->n; i++) {
		io_thread_t *t = &gw->t[i];
		for (s = 0; s < t->nslots; s++)
			if (t->conns[s])
				conn_free(t->conns[s]);
		/* Tasks still queued resolve to no connection and only release
		 * what they carry. */
		loop_free(t->loop);
		if (t->lfd >= 0)
			close(t->lfd);
		if (t->alfd >= 0)
			close(t->alfd);
		free(t->conns);
		free(t->gens);
		free(t->free_slots);
		free(t->reap);
		free(t->tbuf);
	}
	free(gw->t);
	free(gw);
}
