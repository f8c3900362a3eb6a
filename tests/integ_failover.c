/* integ_failover.c - the fleet's failures under traffic, through the
 * deployment's own HAProxy: three `parley serve` nodes on one PostgreSQL,
 * one Redis (the presence registry and the bus) and a three-server NATS
 * JetStream cluster (the log, through the outbox), every server real and
 * started here on loopback.
 *
 * Thirty users, each one WebSocket through the balancer (sticky by
 * ?user=), chat without pause: every user in two direct conversations
 * (a ring, so most pairs sit on two nodes) and in one group of all of
 * them, one send at a time, a new one ~20 ms after the last ack. Under
 * that traffic a test breaks one part: a NATS server (killed, then
 * restarted), Redis (killed, restarted empty), PostgreSQL (stopped, then
 * restarted: sends are refused `unavailable` meanwhile and retried with
 * their cmids), a node stopped (SIGTERM: it drains, telling its clients
 * close 1012) or killed (kill -9); a moved client reconnects through the
 * balancer, resumes, and resends what had no ack with the same cmid, as
 * a client does. Then, traffic stopped, every
 * client resumes once more, and what each holds must be, per
 * conversation, every acked message exactly once: no gap, no repeat on a
 * connection, seqs increasing on a connection, the acked id at each seq.
 *
 * The modules below, one per concern: the fleet (servers), the ledger
 * (what was acked), clients (one simulated device each: its socket, what
 * it holds, its send in flight), the traffic loop (poll over every
 * socket, never a sleep for correctness), and the final check.
 *
 * The store is always PostgreSQL, started here, whatever
 * $PARLEY_TEST_STORE says: three nodes cannot share a SQLite directory. */
#include "harness.h"

#include <inttypes.h>
#include <stdarg.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "haproxyserver.h"
#include "loop.h"
#include "natsserver.h"
#include "pgserver.h"
#include "redisserver.h"

#define NODES 3
#define CLIENTS 30
#define SEND_EVERY_MS 20 /* per client, after its last ack */
#define GROUP_EVERY 5    /* every fifth send of a client goes to the group */
#define INFLIGHT_MAX 32  /* sends awaiting their ack, per client */
#define PIPELINED 20     /* sends test_acked_before_kill_live makes at once */

/* ---- the fleet ------------------------------------------------------ */

static pgserver_t *pg;
static redisserver_t *rs;
static natscluster_t *nc;
static hx_server_t node[NODES]; /* node[i] runs --node-id i+1 */
static char store_url[256];     /* the database every node serves */
static haproxyserver_t *lb;
static int lb_port;

static int teardown(void **state);

/* Starts node i on the fleet's database: on a free port, or on port (a
 * restart: the balancer knows the nodes by port). */
static int start_node(int i, int port)
{
	char id[12], listen[32];
	/* The recipients' budget is off: one group post costs 29, and the
	 * traffic is the test's, not a sender's abuse. A drain of 2 s, not
	 * the harness's 0 (later arguments win): only a SIGTERM reads it,
	 * and test_node_drained wants the clients told a batch at a time. */
	const char *args[] = {"--node-id", id, "--redis", redisserver_url(rs), "--nats", natscluster_urls(nc),
	                      "--fast-password-hashing", "--rate-limit", "1000000", "--rate-burst", "1000000",
	                      "--drain-seconds", "2", port ? "--listen" : NULL, listen, NULL};

	snprintf(id, sizeof id, "%d", i + 1);
	snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
	return hx_start(&node[i], store_url, args);
}

/* cmocka skips the group's teardown when its setup fails: a failed setup
 * stops what it started itself. */
static int setup(void **state)
{
	int ports[NODES], i;

	if (!(pg = pgserver_start()) || pgserver_create_db(pg, NULL, store_url, sizeof store_url) < 0 ||
	    !(rs = redisserver_start()) || !(nc = natscluster_start(3)))
		goto err;
	for (i = 0; i < NODES; i++) {
		if (start_node(i, 0) < 0)
			goto err;
		ports[i] = node[i].port;
	}
	if (!(lb = haproxyserver_start(ports, NODES)))
		goto err;
	lb_port = haproxyserver_port(lb);
	return 0;
err:
	teardown(state);
	return -1;
}

/* A node's id from a message id: a Snowflake's bits 12..21 (see
 * docs/protocol.md): the node that stored the message, which is the
 * sender's node at that moment. */
static int node_of_id(uint64_t id)
{
	return (int)((id >> 12) & 0x3ff);
}

/* ---- the ledger: every acked message -------------------------------- */

/* A conversation as the senders saw it: acked[seq] is the id of the
 * message acked at seq (0: none yet), acked_at[seq] when its ack came. */
typedef struct conv {
	int64_t id;
	uint64_t *acked;
	int64_t *acked_at;
	int64_t n;      /* the highest seq acked */
	int64_t cap;
} conv_t;

#define CONVS_MAX (CLIENTS + 1)
static conv_t convs[CONVS_MAX];
static int nconvs;

/* Makes room for seq in arrays of cap entries (grown together). */
static void grow(int64_t seq, int64_t *cap, uint64_t **ids, void **extra, size_t extra_size)
{
	int64_t want = *cap ? *cap : 256;

	if (seq < *cap)
		return;
	while (want <= seq)
		want *= 2;
	assert_non_null(*ids = realloc(*ids, (size_t)want * sizeof **ids));
	memset(*ids + *cap, 0, (size_t)(want - *cap) * sizeof **ids);
	assert_non_null(*extra = realloc(*extra, (size_t)want * extra_size));
	memset((char *)*extra + (size_t)*cap * extra_size, 0, (size_t)(want - *cap) * extra_size);
	*cap = want;
}

/* An ack: a seq is acked with one id only, whoever asks again. */
static void ledger_ack(conv_t *cv, int64_t seq, uint64_t id)
{
	assert_true(seq >= 1);
	grow(seq, &cv->cap, &cv->acked, (void **)&cv->acked_at, sizeof *cv->acked_at);
	if (cv->acked[seq] && cv->acked[seq] != id)
		fail_msg("conversation %lld: seq %lld acked as %" PRIu64 " and as %" PRIu64, (long long)cv->id,
		         (long long)seq, cv->acked[seq], id);
	if (!cv->acked[seq]) {
		cv->acked[seq] = id;
		cv->acked_at[seq] = clock_mono_ms();
	}
	if (seq > cv->n)
		cv->n = seq;
}

/* ---- clients -------------------------------------------------------- */

/* What one client holds of one conversation: have[seq] is the id it got
 * at seq (by msg, or by the ack of its own send), conn[seq] the
 * connection (1, 2, ...) it came on, with BY_ACK for its own. */
#define BY_ACK 0x80000000u /* in view_t.conn: held by the ack of its own send */

typedef struct view {
	conv_t *conv;
	uint64_t *have;
	unsigned *conn;
	int64_t cap;
	int64_t last_msg; /* the highest seq of a msg on the current connection */
} view_t;

typedef struct sent {
	conv_t *conv;
	char cmid[32];
	int64_t first_at; /* its first attempt */
	int64_t retry_at; /* refused (rate_limited, unavailable): send again then; 0: waiting */
} sent_t;

typedef enum { C_DOWN, C_RESUMING, C_UP } client_state_t;

typedef struct client {
	hx_user_t u;
	int index;
	pc_conn_t *ws;
	client_state_t state;
	unsigned conn;       /* connections opened so far; the current one's number */
	int node;            /* the node (1..3) of its last ack, 0 before one */
	view_t views[3];     /* two direct conversations and the group */
	int nviews;
	sent_t inflight[INFLIGHT_MAX];
	int ninflight;
	unsigned nsent;      /* sends made, which names the next cmid */
	int64_t next_send_at;
	int64_t retry_at;    /* when down: the next reconnect */
	int64_t resumed_at;
	unsigned lost;       /* connections that ended under it */
	unsigned acks, msgs; /* counters the tests read */
	unsigned unavailable; /* sends answered unavailable */
	unsigned told_1012;   /* connections ended by a close 1012 (a drain) */
	int64_t told_at;      /* when the last one came */
	unsigned fresh_cross; /* see test_redis_restarted_empty */
} client_t;

/* ---- the trace: each client's last events, shown when a check fails */

#define TRACE 48 /* events kept per client */
#define TRACE_LEN 80

static char trace[CLIENTS][TRACE][TRACE_LEN];
static unsigned ntrace[CLIENTS];

static void tracef(const client_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tracef(const client_t *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(trace[c->index][ntrace[c->index]++ % TRACE], TRACE_LEN, fmt, ap);
	va_end(ap);
}

static void trace_show(const client_t *c)
{
	unsigned i, n = ntrace[c->index];

	for (i = n > TRACE ? n - TRACE : 0; i < n; i++)
		fprintf(stderr, "# client %d: %s\n", c->index, trace[c->index][i % TRACE]);
}

/* Fails the test, after what led there on that client. */
#define client_fail(c, ...)             \
	do {                            \
		trace_show(c);          \
		fail_msg(__VA_ARGS__);  \
	} while (0)

static client_t clients[CLIENTS];
static int nclients;
static conv_t *group;
static int sending;           /* the traffic loop makes new sends */
static int64_t fresh_after;   /* an ack after this counts for fresh_cross; 0: off */
static unsigned refused;      /* reconnects that failed (a 502 from the balancer) */
static unsigned resent;       /* sends made again on a new connection, after its resume */
static int64_t pg_down_at;    /* PostgreSQL stopped then (0: running): no new send may be acked */
static int64_t first_ack_after; /* the first ack after this is noted in first_ack_at; 0: off */
static int64_t first_ack_at;

static view_t *view_of(client_t *c, int64_t conv)
{
	int i;

	for (i = 0; i < c->nviews; i++)
		if (c->views[i].conv->id == conv)
			return &c->views[i];
	fail_msg("client %d got conversation %lld, not one of its own", c->index, (long long)conv);
	return NULL;
}

/* Up to which seq the client holds everything of v: what it resumes
 * from. Not its highest seq: its own ack at seq 10 may have come before
 * another node's msg at 9, which the connection that died never got. */
static int64_t view_prefix(const view_t *v)
{
	int64_t s = 0;

	while (s + 1 < v->cap && v->have[s + 1])
		s++;
	return s;
}

/* The client got (conv, seq, id), by msg (is_msg) or by its own ack. A
 * msg of a seq this connection had already is a repeat; a seq held with
 * another id is a lie; on one connection msgs come in increasing seq. A
 * new connection's replay may bring again what an earlier one had. */
static void view_have(client_t *c, view_t *v, int64_t seq, uint64_t id, int is_msg)
{
	assert_true(seq >= 1);
	tracef(c, "%s conv %lld seq %lld, connection %u%s", is_msg ? "msg" : "ack", (long long)v->conv->id,
	       (long long)seq, c->conn, c->state == C_RESUMING ? ", resuming" : "");
	grow(seq, &v->cap, &v->have, (void **)&v->conn, sizeof *v->conn);
	if (v->have[seq] && v->have[seq] != id)
		client_fail(c, "client %d, conversation %lld: seq %lld was %" PRIu64 ", now %" PRIu64, c->index,
		            (long long)v->conv->id, (long long)seq, v->have[seq], id);
	if (is_msg) {
		if (v->have[seq] && (v->conn[seq] & ~BY_ACK) == c->conn)
			client_fail(c, "client %d, conversation %lld: seq %lld twice on one connection (first by %s)",
			            c->index, (long long)v->conv->id, (long long)seq,
			            v->conn[seq] & BY_ACK ? "its own ack" : "msg");
		/* A replay may fill in below what reached the socket live
		 * before the server had the resume (docs/protocol.md, rule
		 * 6); outside a resume, seqs only rise. */
		if (seq <= v->last_msg && c->state != C_RESUMING)
			client_fail(c, "client %d, conversation %lld: seq %lld after %lld on one connection", c->index,
			            (long long)v->conv->id, (long long)seq, (long long)v->last_msg);
		if (seq > v->last_msg)
			v->last_msg = seq;
		c->msgs++;
		if (fresh_after && seq < v->conv->cap && v->conv->acked_at[seq] > fresh_after &&
		    node_of_id(id) != c->node)
			c->fresh_cross++;
	}
	v->have[seq] = id;
	v->conn[seq] = c->conn | (is_msg ? 0 : BY_ACK);
}

static void client_lost(client_t *c)
{
	pc_close(c->ws);
	c->ws = NULL;
	c->state = C_DOWN;
	c->lost++;
	c->retry_at = clock_mono_ms();
}

/* Sends a text frame; a failed write is a lost connection (its sends
 * are made again on the next one). */
static void client_send(client_t *c, const char *text)
{
	if (c->ws && pc_ws_send_text(c->ws, text) != 0)
		client_lost(c);
}

static void client_resume(client_t *c)
{
	char text[256];
	size_t len;
	int i;

	len = (size_t)snprintf(text, sizeof text, "{\"type\":\"resume\",\"convs\":{");
	for (i = 0; i < c->nviews; i++)
		len += (size_t)snprintf(text + len, sizeof text - len, "%s\"%lld\":%lld", i ? "," : "",
		                        (long long)c->views[i].conv->id, (long long)view_prefix(&c->views[i]));
	snprintf(text + len, sizeof text - len, "}}");
	c->state = C_RESUMING;
	tracef(c, "%s", text);
	client_send(c, text);
}

static void client_send_one(client_t *c, sent_t *s)
{
	char text[128];

	snprintf(text, sizeof text, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"%s\",\"body\":\"%s\"}",
	         (long long)s->conv->id, s->cmid, s->cmid);
	s->retry_at = 0;
	client_send(c, text);
}

/* A new send to conv, the next cmid. */
static void client_send_new(client_t *c, conv_t *conv)
{
	sent_t *s;

	assert_true(c->ninflight < INFLIGHT_MAX);
	s = &c->inflight[c->ninflight++];
	s->conv = conv;
	s->first_at = clock_mono_ms();
	snprintf(s->cmid, sizeof s->cmid, "c%d-%u", c->index, c->nsent++);
	client_send_one(c, s);
}

/* One attempt at a WebSocket through the balancer, as a client makes
 * it: 0 once the socket is open and its resume sent; -1 when the
 * balancer refused (502 while it has not yet seen a node die) or the
 * node went away before its ready frame. */
static int client_connect(client_t *c)
{
	pc_response_t res = {0};
	pc_frame_t f;
	char path[64];
	json_t *j;
	int ok;

	if (!(c->ws = pc_connect("127.0.0.1", lb_port)))
		return -1;
	snprintf(path, sizeof path, "/chat/v1/ws?user=%lld", (long long)c->u.id);
	if (pc_ws_open(c->ws, path, c->u.token, &res, HX_TIMEOUT) != 0) {
		pc_response_free(&res);
		goto err;
	}
	pc_response_free(&res);
	if (pc_ws_recv(c->ws, &f, HX_TIMEOUT) != 0)
		goto err;
	j = f.opcode == 0x1 ? json_loadb((char *)f.data, f.len, 0, NULL) : NULL;
	ok = j && json_is_string(json_object_get(j, "type")) &&
	     !strcmp(json_string_value(json_object_get(j, "type")), "ready");
	json_decref(j);
	pc_frame_free(&f);
	if (!ok)
		goto err;
	c->conn++;
	for (ok = 0; ok < c->nviews; ok++)
		c->views[ok].last_msg = 0;
	client_resume(c);
	return c->ws ? 0 : -1;
err:
	pc_close(c->ws);
	c->ws = NULL;
	return -1;
}

static sent_t *inflight_find(client_t *c, const char *cmid)
{
	int i;

	for (i = 0; i < c->ninflight; i++)
		if (!strcmp(c->inflight[i].cmid, cmid))
			return &c->inflight[i];
	return NULL;
}

static void on_ack(client_t *c, json_t *j)
{
	sent_t *s = inflight_find(c, hx_str(j, "cmid"));
	uint64_t id = strtoull(hx_str(j, "id"), NULL, 10);
	int64_t seq = hx_int(j, "seq");

	if (!s)
		client_fail(c, "client %d: an ack of %s, which it is not waiting for", c->index, hx_str(j, "cmid"));
	assert_int_equal(hx_int(j, "conv"), s->conv->id);
	/* Sent first after PostgreSQL stopped, it cannot be stored: an ack
	 * would be a lie (one sent before may have committed in time). */
	if (pg_down_at && s->first_at > pg_down_at)
		client_fail(c, "client %d: %s acked while PostgreSQL was down", c->index, s->cmid);
	if (first_ack_after && !first_ack_at)
		first_ack_at = clock_mono_ms();
	ledger_ack(s->conv, seq, id);
	view_have(c, view_of(c, s->conv->id), seq, id, 0);
	c->node = node_of_id(id);
	c->acks++;
	*s = c->inflight[--c->ninflight];
}

/* A refused send is made again with its cmid: later, when the refusal
 * says so (rate_limited), else after a moment (unavailable: the store
 * or the writer's queue). Any other error is a failure of the test. */
static void on_error(client_t *c, json_t *j)
{
	json_t *ref = json_object_get(j, "ref"), *after = json_object_get(j, "retry_after_ms");
	const char *code = hx_str(j, "code");
	sent_t *s = json_is_string(ref) ? inflight_find(c, json_string_value(ref)) : NULL;

	if (s && (!strcmp(code, "rate_limited") || !strcmp(code, "unavailable"))) {
		s->retry_at = clock_mono_ms() + (json_is_integer(after) ? json_integer_value(after) : 50);
		c->unavailable += !strcmp(code, "unavailable");
		tracef(c, "%s: %s", s->cmid, code);
		return;
	}
	if (!strcmp(code, "unavailable") && c->state == C_RESUMING) {
		client_resume(c); /* "resume failed; retry" */
		return;
	}
	client_fail(c, "client %d: error %s: %s", c->index, code, hx_str(j, "message"));
}

static void on_frame(client_t *c, json_t *j)
{
	const char *type = hx_str(j, "type");

	if (!strcmp(type, "ack")) {
		on_ack(c, j);
	} else if (!strcmp(type, "msg")) {
		int64_t conv = hx_int(j, "conv");
		view_have(c, view_of(c, conv), hx_int(j, "seq"), strtoull(hx_str(j, "id"), NULL, 10), 1);
	} else if (!strcmp(type, "resumed")) {
		int i;
		tracef(c, "resumed");
		c->state = C_UP;
		c->resumed_at = clock_mono_ms();
		/* What had no ack goes again, same cmid: a repeat is answered
		 * with the original ack and stored once. */
		for (i = 0; i < c->ninflight; i++)
			client_send_one(c, &c->inflight[i]);
		resent += (unsigned)c->ninflight;
	} else if (!strcmp(type, "error")) {
		on_error(c, j);
	}
	/* receipts, presence, members: not this test's */
}

/* Reads every complete frame the client has, without waiting. */
static void client_pump(client_t *c)
{
	while (c->ws) {
		pc_frame_t f;
		json_t *j;
		int r = pc_ws_recv(c->ws, &f, 0);

		if (r == PC_TIMEOUT)
			return;
		if (r < 0 || f.opcode == 0x8) { /* the socket ended: a node died, or drains */
			if (r == 0) {
				int code = f.opcode == 0x8 && f.len >= 2 ? (f.data[0] << 8) | f.data[1] : -1;
				tracef(c, "close %d", code);
				if (code == 1012)
					c->told_1012++, c->told_at = clock_mono_ms();
				pc_frame_free(&f);
			}
			client_lost(c);
			return;
		}
		if (f.opcode == 0x9) {
			pc_ws_send_frame(c->ws, 1, 0xA, f.data, f.len, 1, 0);
		} else if (f.opcode == 0x1) {
			if (!(j = json_loadb((char *)f.data, f.len, 0, NULL)))
				fail_msg("client %d: a frame that is not JSON: %s", c->index, f.data);
			on_frame(c, j);
			json_decref(j);
		}
		pc_frame_free(&f);
	}
}

/* What is due now: a reconnect when down (every 100 ms, as a client
 * retries), a refused send again, a new send when nothing is in flight. */
static void client_due(client_t *c, int64_t now)
{
	int i;

	if (c->state == C_DOWN) {
		if (now >= c->retry_at && client_connect(c) < 0) {
			c->retry_at = now + 100;
			refused++;
		}
		else if (c->ws)
			client_pump(c); /* the upgrade's read may hold frames */
		return;
	}
	if (c->state != C_UP)
		return;
	for (i = 0; i < c->ninflight; i++)
		if (c->inflight[i].retry_at && now >= c->inflight[i].retry_at)
			client_send_one(c, &c->inflight[i]);
	if (sending && c->ninflight == 0 && now >= c->next_send_at) {
		unsigned k = c->nsent;
		conv_t *to = k % GROUP_EVERY == GROUP_EVERY - 1 ? group : c->views[k % 2].conv;
		client_send_new(c, to);
		c->next_send_at = now + SEND_EVERY_MS;
	}
}

/* ---- the traffic loop ----------------------------------------------- */

/* One turn: waits (up to 5 ms) for any socket to be readable, reads
 * what came, then does what is due. pc_ws_recv reads until no complete
 * frame is left, so a socket with nothing readable has nothing pending. */
static void traffic_turn(void)
{
	struct pollfd p[CLIENTS];
	client_t *of[CLIENTS];
	int n = 0, i;
	int64_t now;

	for (i = 0; i < nclients; i++) {
		if (!clients[i].ws)
			continue;
		p[n] = (struct pollfd){.fd = pc_fd(clients[i].ws), .events = POLLIN};
		of[n++] = &clients[i];
	}
	if (poll(p, (nfds_t)n, 5) > 0)
		for (i = 0; i < n; i++)
			if (p[i].revents)
				client_pump(of[i]);
	now = clock_mono_ms();
	for (i = 0; i < nclients; i++)
		client_due(&clients[i], now);
}

static void traffic_for(int ms)
{
	int64_t end = clock_mono_ms() + ms;

	while (clock_mono_ms() < end)
		traffic_turn();
}

typedef int (*traffic_cond_t)(void);

/* Turns until cond holds; 0, or -1 when ms passed first. */
static int traffic_until(traffic_cond_t cond, int ms)
{
	int64_t end = clock_mono_ms() + ms;

	while (!cond()) {
		if (clock_mono_ms() >= end)
			return -1;
		traffic_turn();
	}
	return 0;
}

static int all_settled(void)
{
	int i;

	for (i = 0; i < nclients; i++)
		if (clients[i].state != C_UP || clients[i].ninflight)
			return 0;
	return 1;
}

/* ---- the population ------------------------------------------------- */

static int64_t make_group(void)
{
	char body[32 * CLIENTS + 64];
	size_t len;
	json_t *j;
	int64_t id;
	int st, i;

	len = (size_t)snprintf(body, sizeof body, "{\"title\":\"all\",\"members\":[");
	for (i = 1; i < nclients; i++)
		len += (size_t)snprintf(body + len, sizeof body - len, "%s%lld", i > 1 ? "," : "",
		                        (long long)clients[i].u.id);
	snprintf(body + len, sizeof body - len, "]}");
	j = hx_http(lb_port, "POST", "/api/v1/conversations", clients[0].u.token, body, &st);
	assert_int_equal(st, 201);
	id = hx_int(j, "conversation_id");
	json_decref(j);
	return id;
}

static void add_view(client_t *c, conv_t *cv)
{
	c->views[c->nviews++] = (view_t){.conv = cv};
}

/* Once per run: the users (through the balancer: any node, one store),
 * the ring of direct conversations and the group, every client's socket
 * open and resumed; then traffic until every client knows its node (from
 * an ack), and all three nodes hold some. */
static void population(void)
{
	int count[NODES + 1] = {0}, i;

	if (nclients)
		return;
	for (i = 0; i < CLIENTS; i++) {
		clients[i].index = i;
		hx_user(lb_port, "fo", &clients[i].u);
	}
	nclients = CLIENTS;
	for (i = 0; i < CLIENTS; i++) {
		conv_t *cv = &convs[nconvs++];
		cv->id = hx_direct(lb_port, &clients[i].u, &clients[(i + 1) % CLIENTS].u);
		add_view(&clients[i], cv);
		add_view(&clients[(i + 1) % CLIENTS], cv);
	}
	group = &convs[nconvs++];
	group->id = make_group();
	for (i = 0; i < CLIENTS; i++) {
		add_view(&clients[i], group);
		assert_int_equal(client_connect(&clients[i]), 0);
	}
	sending = 1;
	traffic_for(500);
	sending = 0;
	assert_int_equal(traffic_until(all_settled, 4 * HX_TIMEOUT), 0);
	for (i = 0; i < CLIENTS; i++) {
		assert_true(clients[i].node >= 1 && clients[i].node <= NODES);
		count[clients[i].node]++;
	}
	printf("# %d clients: %d on node 1, %d on node 2, %d on node 3\n", CLIENTS, count[1], count[2], count[3]);
	for (i = 1; i <= NODES; i++)
		assert_true(count[i] > 0);
}

static int on_node(int n)
{
	int i, k = 0;

	for (i = 0; i < nclients; i++)
		k += clients[i].node == n;
	return k;
}

/* ---- the final check ------------------------------------------------ */

static int id_order(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Traffic stopped: every send acked, every client up; then one more
 * resume each, and what each holds must be, per conversation, seqs 1..n
 * each at the id its sender's ack gave, n the highest acked. */
static void check_everything(void)
{
	int i, k;
	int64_t total = 0;

	sending = 0;
	if (traffic_until(all_settled, 4 * HX_TIMEOUT) < 0) {
		for (i = 0; i < nclients; i++)
			if (clients[i].state != C_UP || clients[i].ninflight)
				printf("# client %d: state %d, %d in flight\n", i, clients[i].state, clients[i].ninflight);
		fail_msg("the traffic did not settle");
	}
	for (i = 0; i < nclients; i++)
		client_resume(&clients[i]);
	assert_int_equal(traffic_until(all_settled, 4 * HX_TIMEOUT), 0);
	for (k = 0; k < nconvs; k++) {
		conv_t *cv = &convs[k];
		int64_t s;
		for (s = 1; s <= cv->n; s++)
			if (!cv->acked[s])
				fail_msg("conversation %lld: seq %lld never acked (its highest: %lld)", (long long)cv->id,
				         (long long)s, (long long)cv->n);
		total += cv->n;
	}
	for (i = 0; i < nclients; i++) {
		client_t *c = &clients[i];
		for (k = 0; k < c->nviews; k++) {
			view_t *v = &c->views[k];
			int64_t s;
			for (s = 1; s < v->cap; s++) {
				if (s <= v->conv->n && v->have[s] != v->conv->acked[s])
					fail_msg("client %d, conversation %lld: seq %lld %s", i, (long long)v->conv->id,
					         (long long)s, v->have[s] ? "with another id" : "missing");
				if (s > v->conv->n && v->have[s])
					fail_msg("client %d, conversation %lld: seq %lld, never acked", i,
					         (long long)v->conv->id, (long long)s);
			}
			if (v->cap <= v->conv->n)
				fail_msg("client %d, conversation %lld: holds less than seq %lld", i,
				         (long long)v->conv->id, (long long)v->conv->n);
		}
	}
	/* Ids are unique: the ledger holds one id per seq; no id at two. */
	for (k = 0; k < nconvs; k++) {
		conv_t *cv = &convs[k];
		uint64_t *ids = malloc((size_t)cv->n * sizeof *ids + 1);
		int64_t s;

		assert_non_null(ids);
		memcpy(ids, cv->acked + 1, (size_t)cv->n * sizeof *ids);
		qsort(ids, (size_t)cv->n, sizeof *ids, id_order);
		for (s = 1; s < cv->n; s++)
			if (ids[s] == ids[s - 1]) {
				uint64_t twice = ids[s];
				free(ids);
				fail_msg("conversation %lld: id %" PRIu64 " at two seqs", (long long)cv->id, twice);
			}
		free(ids);
	}
	printf("# %lld messages acked so far, every one held by each of its recipients once\n", (long long)total);
}

/* ---- the tests ------------------------------------------------------ */

/* One of the three NATS servers dies under traffic (the meta leader: the
 * harder case): the store is the truth, so sends are still acked, and
 * every client still gets messages; nothing acked is lost or repeated.
 * It comes back afterwards. */
static void test_nats_server_killed(void **state)
{
	unsigned acks[CLIENTS], msgs[CLIENTS], conn[CLIENTS];
	int victim, i, r;

	(void)state;
	population();
	sending = 1;
	traffic_for(800);
	victim = natscluster_meta_leader(nc);
	if (victim < 0)
		victim = 0;
	for (i = 0; i < nclients; i++) {
		acks[i] = clients[i].acks;
		msgs[i] = clients[i].msgs;
		conn[i] = clients[i].conn;
	}
	assert_int_equal(natscluster_kill(nc, victim), 0);
	printf("# NATS server n%d killed\n", victim + 1);
	traffic_for(2000);
	for (i = 0; i < nclients; i++) {
		if (clients[i].acks == acks[i] || clients[i].msgs == msgs[i])
			fail_msg("client %d: %u acks and %u msgs since the NATS server died", i,
			         clients[i].acks - acks[i], clients[i].msgs - msgs[i]);
		if (clients[i].conn != conn[i] || clients[i].state == C_DOWN)
			fail_msg("client %d lost its socket when a NATS server died", i);
	}
	r = natscluster_restart(nc, victim);
	if (r < 0)
		printf("# NATS server n%d restarted, not yet healthy\n", victim + 1);
	assert_true(natscluster_alive(nc, victim));
	traffic_for(500);
	check_everything();
}

static int all_fresh_cross(void)
{
	int i;

	for (i = 0; i < nclients; i++)
		if (!clients[i].fresh_cross)
			return 0;
	return 1;
}

/* Redis (the registry of who is where, and the bus between nodes) is
 * killed under traffic and comes back empty: nothing acked is lost, and
 * live delivery across nodes comes back by itself: every client, on the
 * socket it had all along, gets a message sent from another node after
 * the restart. */
static void test_redis_restarted_empty(void **state)
{
	unsigned conn[CLIENTS];
	int64_t restarted;
	int i;

	(void)state;
	population();
	for (i = 0; i < nclients; i++) {
		conn[i] = clients[i].conn;
		clients[i].fresh_cross = 0;
	}
	sending = 1;
	traffic_for(800);
	assert_int_equal(redisserver_kill(rs), 0);
	traffic_for(1000);
	assert_int_equal(redisserver_restart(rs), 0);
	restarted = clock_mono_ms();
	fresh_after = restarted;
	/* A few seconds: each node finds Redis back and registers its users
	 * again (docs/architecture.md, "Redis restarted empty"). */
	if (traffic_until(all_fresh_cross, 10000) < 0) {
		for (i = 0; i < nclients; i++)
			if (!clients[i].fresh_cross)
				printf("# client %d (node %d): nothing live from another node since the restart\n", i,
				       clients[i].node);
		fail_msg("live delivery across nodes did not come back after Redis restarted empty");
	}
	printf("# live delivery across nodes back %lld ms after Redis restarted empty\n",
	       (long long)(clock_mono_ms() - restarted));
	fresh_after = 0;
	for (i = 0; i < nclients; i++)
		if (clients[i].conn != conn[i])
			fail_msg("client %d reconnected while Redis was away", i);
	check_everything();
}

static unsigned unavailable_at_crash[CLIENTS];
static unsigned acks_at_restart[CLIENTS];

static int all_told_unavailable(void)
{
	int i;

	for (i = 0; i < nclients; i++)
		if (clients[i].unavailable == unavailable_at_crash[i])
			return 0;
	return 1;
}

static int all_acked_since_restart(void)
{
	int i;

	for (i = 0; i < nclients; i++)
		if (clients[i].acks == acks_at_restart[i])
			return 0;
	return 1;
}

/* PostgreSQL, the store every node shares, stops under traffic (an
 * immediate shutdown: connections cut mid-transaction) and starts again
 * on the same port and data. While it is down every send is answered
 * `unavailable` (never silence, never an ack: on_ack fails the test
 * should a send first made after the stop be acked); the clients retry
 * each with its cmid 50 ms later, and once it is back the nodes
 * reconnect by themselves and the retries are acked, each cmid once.
 * Nobody loses a socket: the nodes stay up. It stays down at least
 * 1.5 s, and until every client has been told `unavailable`. */
static void test_postgres_restarted(void **state)
{
	unsigned conn[CLIENTS], total = 0, fewest = ~0u;
	int64_t down_at, restarting, restarted;
	int i;

	(void)state;
	population();
	for (i = 0; i < nclients; i++)
		conn[i] = clients[i].conn;
	sending = 1;
	traffic_for(800);
	for (i = 0; i < nclients; i++)
		unavailable_at_crash[i] = clients[i].unavailable;
	assert_int_equal(pgserver_crash(pg), 0);
	down_at = pg_down_at = clock_mono_ms();
	traffic_for(1500);
	if (traffic_until(all_told_unavailable, 4 * HX_TIMEOUT) < 0) {
		for (i = 0; i < nclients; i++)
			if (clients[i].unavailable == unavailable_at_crash[i])
				printf("# client %d (node %d): %d in flight, never told unavailable\n", i,
				       clients[i].node, clients[i].ninflight);
		fail_msg("sends went unanswered while PostgreSQL was down");
	}
	for (i = 0; i < nclients; i++) {
		unsigned k = clients[i].unavailable - unavailable_at_crash[i];
		total += k;
		if (k < fewest)
			fewest = k;
		acks_at_restart[i] = clients[i].acks;
	}
	restarting = clock_mono_ms();
	assert_int_equal(pgserver_restart(pg), 0);
	pg_down_at = 0;
	restarted = clock_mono_ms();
	first_ack_at = 0;
	first_ack_after = restarted;
	printf("# PostgreSQL stopped for %lld ms, then %lld ms restarting (crash recovery, traffic paused): %u sends "
	       "answered unavailable (each client at least %u), retried with their cmids\n",
	       (long long)(restarting - down_at), (long long)(restarted - restarting), total, fewest);
	assert_true(total > 0);
	/* Reconnecting is each node's own: a store call after the restart
	 * finds the connection gone and makes another. */
	if (traffic_until(all_acked_since_restart, 4 * HX_TIMEOUT) < 0) {
		for (i = 0; i < nclients; i++)
			if (clients[i].acks == acks_at_restart[i])
				printf("# client %d (node %d): no ack since PostgreSQL restarted\n", i, clients[i].node);
		fail_msg("sends were not acked again after PostgreSQL restarted");
	}
	first_ack_after = 0;
	printf("# first ack %lld ms after PostgreSQL accepted connections again, every client acked within %lld ms\n",
	       (long long)(first_ack_at - restarted), (long long)(clock_mono_ms() - restarted));
	traffic_for(500);
	for (i = 0; i < nclients; i++)
		if (clients[i].conn != conn[i])
			fail_msg("client %d reconnected while PostgreSQL was away", i);
	check_everything();
}

static int killed_node;          /* 1..3 */
static int was_on[CLIENTS];      /* each client's node at the kill */
static int64_t killed_at;

static int moved_resumed(void)
{
	int i;

	for (i = 0; i < nclients; i++)
		if (was_on[i] == killed_node && !(clients[i].state == C_UP && clients[i].resumed_at > killed_at))
			return 0;
	return 1;
}

/* The live node holding the most clients (1-based). */
static int busiest_node(void)
{
	int n, best = 0;

	for (n = 1; n <= NODES; n++)
		if (node[n - 1].pid > 0 && (!best || on_node(n) > on_node(best)))
			best = n;
	return best;
}

/* The node with the most clients is killed (SIGKILL) under traffic: its
 * clients see their sockets end, reconnect through the balancer (which
 * sends them to the two others), resume from what they hold, and resend
 * what had no ack with its cmid; nobody else moves, and at the end every
 * acked message is held once by each of its recipients. */
static void test_node_killed(void **state)
{
	unsigned lost[CLIENTS];
	int best, moved, i;

	(void)state;
	population();
	best = busiest_node();
	sending = 1;
	traffic_for(1500);
	for (i = 0; i < nclients; i++) {
		lost[i] = clients[i].lost;
		was_on[i] = clients[i].node;
	}
	killed_node = best;
	moved = on_node(best);
	refused = 0;
	killed_at = clock_mono_ms();
	assert_int_equal(hx_stop(&node[best - 1], SIGKILL), 128 + SIGKILL);
	if (traffic_until(moved_resumed, 4 * HX_TIMEOUT) < 0)
		fail_msg("node %d's clients were not all back", best);
	printf("# node %d killed: its %d clients resumed on the others %lld ms after the kill (%u reconnects "
	       "refused on the way)\n",
	       best, moved, (long long)(clock_mono_ms() - killed_at), refused);
	traffic_for(1500);
	for (i = 0; i < nclients; i++) {
		if (was_on[i] != best && clients[i].lost != lost[i])
			fail_msg("client %d, on node %d, lost its socket when node %d died", i, was_on[i], best);
		if (was_on[i] == best && (clients[i].lost == lost[i] || clients[i].node == best))
			fail_msg("client %d did not move off the dead node %d", i, best);
	}
	check_everything();
}

static int64_t drain_exited_at; /* when the drained node's exit was seen */

/* Whether the drained node has exited, without reaping it (hx_stop then
 * reaps it and reads its status). */
static int drained_exited(void)
{
	siginfo_t si;

	memset(&si, 0, sizeof si);
	if (!drain_exited_at && waitid(P_PID, (id_t)node[killed_node - 1].pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
	    si.si_pid)
		drain_exited_at = clock_mono_ms();
	return drain_exited_at != 0;
}

static int drained_and_moved(void)
{
	return drained_exited() && moved_resumed();
}

/* The node with the most clients is stopped (SIGTERM) under traffic:
 * it drains over its --drain-seconds, telling its WebSockets close 1012
 * a batch at a time, each after its sends' acks, and exits 0. Its
 * clients reconnect through the balancer (the node's listener is
 * closed: it sends them to the others), resume and resend what had no
 * ack with its cmid; nobody else moves. Then the node starts again on
 * its port and id (a clean exit freed the id at once) for the tests
 * after this one. */
static void test_node_drained(void **state)
{
	unsigned lost[CLIENTS], told[CLIENTS];
	int best, moved, port, i;
	int64_t moved_at = 0, told_first = 0, told_last = 0;

	(void)state;
	population();
	best = busiest_node();
	sending = 1;
	traffic_for(1000);
	for (i = 0; i < nclients; i++) {
		lost[i] = clients[i].lost;
		told[i] = clients[i].told_1012;
		was_on[i] = clients[i].node;
	}
	killed_node = best;
	moved = on_node(best);
	port = node[best - 1].port;
	refused = resent = 0;
	drain_exited_at = 0;
	killed_at = clock_mono_ms();
	assert_int_equal(kill(node[best - 1].pid, SIGTERM), 0);
	/* Traffic goes on meanwhile: the drain waits for acks the clients
	 * must read, and they move while the node still runs. */
	if (traffic_until(drained_and_moved, 4 * HX_TIMEOUT) < 0)
		fail_msg("node %d did not finish draining (%s) or its clients were not all back", best,
		         drain_exited_at ? "exited" : "still running");
	for (i = 0; i < nclients; i++) {
		if (was_on[i] != best)
			continue;
		if (clients[i].resumed_at > moved_at)
			moved_at = clients[i].resumed_at;
		if (clients[i].told_at > killed_at && (!told_first || clients[i].told_at < told_first))
			told_first = clients[i].told_at;
		if (clients[i].told_at > told_last)
			told_last = clients[i].told_at;
	}
	assert_int_equal(hx_stop(&node[best - 1], SIGTERM), 0);
	printf("# node %d drained: exited 0 %lld ms after SIGTERM; its %d clients told 1012 from %lld to %lld ms, all "
	       "resumed on the others within %lld ms, %u sends resent with their cmids (%u reconnects refused on the "
	       "way)\n",
	       best, (long long)(drain_exited_at - killed_at), moved, (long long)(told_first - killed_at),
	       (long long)(told_last - killed_at), (long long)(moved_at - killed_at), resent, refused);
	traffic_for(1000);
	for (i = 0; i < nclients; i++) {
		if (was_on[i] != best && clients[i].lost != lost[i])
			fail_msg("client %d, on node %d, lost its socket when node %d drained", i, was_on[i], best);
		if (was_on[i] == best && (clients[i].told_1012 == told[i] || clients[i].node == best))
			client_fail(&clients[i], "client %d was not moved off node %d by a close 1012", i, best);
	}
	check_everything();
	assert_int_equal(start_node(best - 1, port), 0);
	assert_int_equal(haproxyserver_wait_node(lb, best, 1, 4 * HX_TIMEOUT), 0);
	printf("# node %d back on port %d\n", best, port);
}

static client_t *live_sender;
static unsigned conn_at_kill[CLIENTS]; /* each client's connection when the node died */
static int64_t live_first; /* the group's first seq of the pipelined sends */

/* Whether every client that kept its socket on a surviving node holds
 * the pipelined sends, seqs live_first .. live_first + PIPELINED - 1. */
static int pipelined_seen(void)
{
	int i;

	for (i = 0; i < nclients; i++) {
		client_t *c = &clients[i];
		view_t *v = view_of(c, group->id);
		int64_t s;
		if (c == live_sender || c->state != C_UP || c->conn != conn_at_kill[i])
			continue;
		for (s = live_first; s < live_first + PIPELINED; s++)
			if (s >= v->cap || !v->have[s])
				return 0;
	}
	return 1;
}

/* A message acked just before its node dies still reaches the online
 * recipients on the other nodes live, without their reconnecting: once
 * acked it is on the log (the outbox), and delivery across nodes is to
 * read it from there. A sender pipelines PIPELINED posts to the group,
 * gets every ack, and its node is killed at once. */
static void test_acked_before_kill_live(void **state)
{
	int n, i, best = 0;
	int64_t killed;

	(void)state;
	population();
	sending = 0;
	assert_int_equal(traffic_until(all_settled, 4 * HX_TIMEOUT), 0);
	/* The sender: on a live node, with recipients on another one. */
	for (n = 1; n <= NODES; n++)
		if (node[n - 1].pid > 0 && on_node(n) > 0 && on_node(n) < nclients && (!best || on_node(n) < on_node(best)))
			best = n;
	if (!best)
		skip();
	for (i = 0; i < nclients && clients[i].node != best; i++)
		;
	live_sender = &clients[i];
	live_first = group->n + 1;
	for (i = 0; i < PIPELINED; i++)
		client_send_new(live_sender, group);
	while (live_sender->ninflight && live_sender->ws)
		traffic_turn();
	assert_int_equal(live_sender->ninflight, 0);
	for (i = 0; i < nclients; i++)
		conn_at_kill[i] = clients[i].conn;
	assert_int_equal(hx_stop(&node[best - 1], SIGKILL), 128 + SIGKILL);
	killed = clock_mono_ms();
	/* The other nodes' sweep takes what the dead node had not published
	 * once 3 s old; a partition the dead node dispatched moves once it is
	 * 3 s silent, and what it had fetched comes again after the log's
	 * ack wait (DISPATCH_ACK_WAIT_MS). */
	if (traffic_until(pipelined_seen, 30000) < 0) {
		for (i = 0; i < nclients; i++) {
			client_t *c = &clients[i];
			view_t *v = view_of(c, group->id);
			int64_t s;
			int got = 0;
			if (c == live_sender || c->state != C_UP || c->conn != conn_at_kill[i])
				continue;
			for (s = live_first; s < live_first + PIPELINED; s++)
				got += s < v->cap && v->have[s];
			if (got < PIPELINED)
				printf("# client %d (node %d, socket kept): %d of the %d acked before the kill\n", i,
				       c->node, got, PIPELINED);
		}
		check_everything(); /* by resume they are there */
		fail_msg("messages acked just before node %d died did not reach the other nodes' clients live", best);
	}
	printf("# node %d killed right after %d acks: all reached the other nodes live in %lld ms\n", best, PIPELINED,
	       (long long)(clock_mono_ms() - killed));
	check_everything();
}

static int teardown(void **state)
{
	int i;

	(void)state;
	for (i = 0; i < nclients; i++)
		pc_close(clients[i].ws), clients[i].ws = NULL;
	haproxyserver_stop(lb);
	lb = NULL;
	for (i = 0; i < NODES; i++)
		hx_kill(&node[i]);
	natscluster_stop(nc);
	nc = NULL;
	redisserver_stop(rs);
	rs = NULL;
	pgserver_stop(pg);
	pg = NULL;
	return 0;
}

int main(void)
{
	/* The nodes killed go last: the tests before want the whole fleet,
	 * and a killed node's id is free again only after 5 s. A drained
	 * node comes back at once (its clean exit frees its id), so the
	 * drain goes before the kills, which it leaves three nodes. */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nats_server_killed),
		cmocka_unit_test(test_redis_restarted_empty),
		cmocka_unit_test(test_postgres_restarted),
		cmocka_unit_test(test_node_drained),
		cmocka_unit_test(test_node_killed),
		cmocka_unit_test(test_acked_before_kill_live),
	};

	hx_filter();
	return cmocka_run_group_tests(tests, setup, teardown);
}
