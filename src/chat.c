/* chat.c - the message service (chat.h).
 *
 * Sends and receipts become store ops for the group-commit writer; their
 * completions (on the writer thread) post the ack to the sending connection
 * and hand msg/receipt frames to the bus, encoded once for all recipients.
 *
 * Resume is paged: a worker reads up to RESUME_PAGE_MSGS messages or
 * a quarter of the outbound bound in bodies, the connection queues them, and the next page
 * is read only once its outbound queue has drained, so a client that missed
 * a lot is caught up without its queue ever passing the bound.
 *
 * Order on one connection: per conversation, increasing seqs, never one
 * twice, never one silently missing, whichever node wrote them. Each
 * connection keeps per conversation the range of seqs it has sent (live,
 * or by a resume's replay). A live frame one past it is sent; one at or
 * below it is a repeat and dropped; one further on means frames between
 * are missing: with writers on several nodes they are usually in flight
 * (a conversation's seqs commit in order, so a frame that arrives proves
 * every lower seq is in the store), so it is held, for up to GAP_WAIT_MS,
 * while the missing ones arrive and release it; past that, or past
 * GAP_HELD_MAX frames held, the gap is filled from the store by a worker
 * (`fill`), and what was held follows in order. Where the range begins:
 * at the end of the conversation's replay when the client resumed it,
 * else at the first live frame the connection sees (what came before is
 * the client's history, read as history).
 *
 * Live msg frames of a conversation being replayed are held until its
 * replay is sent, then released minus those the replay covered; the
 * replay skips what went out live before the resume came in, so no
 * message reaches a connection twice. A replay reads the store only once
 * the bus says other nodes can find the connection (bus_sync): what is
 * committed anywhere after the read reaches it live. */
#include "chat.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "budget.h"
#include "bus.h"
#include "clientaddr.h"
#include "dispatch.h"
#include "fanout.h"
#include "frames.h"
#include "ids.h"
#include "log.h"
#include "loop.h"
#include "presence.h"
#include "push.h"
#include "tally.h"
#include "workers.h"
#include "writer.h"
#include "ws.h"

#define BODY_MAX 16384
#define CMID_MAX 64
#define RESUME_CONVS_MAX 4096
#define RESUME_REPLAY_MAX 1000      /* per conversation, the newest */
/* A replay page is at most RESUME_PAGE_MSGS messages and a quarter of the
 * outbound bound in bodies (frames add ~150 bytes each), and the next page
 * is read once the queue is below an eighth of the bound: a replay never
 * comes near the bound that disconnects slow readers. */
#define RESUME_PAGE_MSGS 200
#define RESUME_PAGE_BYTES_MAX (256 * 1024)
#define RESUME_HELD_MAX 10000        /* live frames held during a replay */
/* A gap in a conversation's live frames waits this long for the frames
 * in flight before it is filled from the store, holding at most this
 * many frames of the connection's conversations meanwhile (frames past
 * that are read from the store with the gap). */
#define GAP_WAIT_MS 1000
#define GAP_HELD_MAX 64
#define GAP_FILL_MSGS 200            /* read per fill job */

typedef struct live_range {
	int64_t conv, first, last;
} live_range_t;

typedef struct resume_conv {
	int64_t conv, after, upto;
	int64_t joined;         /* the user's joined_seq: replies quote only after it */
	int64_t from;           /* the first seq of the planned replay */
	int64_t sent;           /* the replay has sent [from, sent] (0: none) */
	int forbidden;
} resume_conv_t;

/* Travels between the connection's thread and a worker; only one of them
 * holds it at a time. */
typedef struct resume {
	server_t *srv;
	uint64_t conn;
	int64_t user;
	resume_conv_t *convs;
	size_t nconvs, cur;
	int planned;            /* the first job fixed the ranges */
	int reported;           /* the loop sent the errors of the plan */
	int failed;             /* the store failed */
	int64_t limited_ms;     /* over the work budget: when to try again */
	size_t page_bytes;      /* body bytes per page */
	sbuf_t *resumed;        /* the closing "resumed" frame */
	sbuf_t **page;
	size_t npage, cappage;
} resume_t;

/* A conversation whose live frames came with a gap before them. */
typedef struct gap {
	int64_t conv;
	int64_t since_ms;       /* when it opened (monotonic) */
	int64_t upto;           /* the highest seq seen, held or not */
	int filling;            /* a worker reads the gap */
	sbuf_t **held;          /* live frames past it, by arrival */
	size_t nheld, capheld;
} gap_t;

typedef struct chat_conn {
	live_range_t *live;
	size_t nlive, caplive;
	gap_t *gaps;
	size_t ngaps, gap_frames; /* gap_frames: held in all gaps */
	resume_t *resume;       /* in progress, or NULL */
	int resume_in_job;      /* a worker (or bus_sync) holds it */
	int resume_wait_drain;
	sbuf_t **held;
	size_t nheld, capheld;
	json_t *pending;        /* a resume that came during another */
	int away;               /* this connection said "away" */
	int64_t *watched;       /* the users it watches, PRESENCE_WATCH_MAX at most */
	size_t nwatched;
	unsigned watch_seq;     /* the latest watch request */
	int64_t typing_conv, typing_ms; /* the last "typing on" passed on */
} chat_conn_t;

typedef struct send_op {
	store_op_t op;          /* first: the writer hands back &op */
	server_t *srv;
	uint64_t origin;
	uint64_t addr;          /* the sender's client address, for the log */
	char cmid[CMID_MAX + 1];
	char body[];
} send_op_t;

typedef struct receipt_op {
	store_op_t op;
	server_t *srv;
	uint64_t origin;
	uint64_t addr;
} receipt_op_t;

static void resume_start(server_t *srv, gw_conn_t *c, chat_conn_t *cc, json_t *convs);
static live_range_t *live_find(chat_conn_t *cc, int64_t conv);
static gap_t *gap_find(chat_conn_t *cc, int64_t conv);
static void gap_release(gw_conn_t *c, chat_conn_t *cc, gap_t *g, live_range_t *r);
static void gap_hold(server_t *srv, gw_conn_t *c, chat_conn_t *cc, sbuf_t *frame);

static chat_conn_t *state_of(gw_conn_t *c, int create)
{
	void **slot = gw_conn_app(c);

	if (!*slot && create)
		*slot = calloc(1, sizeof(chat_conn_t));
	return *slot;
}

/* Logs a refused frame: who, which conversation, what and why. */
static void log_frame_refused(uint64_t addr, int64_t user, int64_t conv, const char *code,
                              const char *message)
{
	char a[ADDR_KEY_STRLEN];

	if (addr_key_format(addr, a, sizeof a) < 0)
		snprintf(a, sizeof a, "?");
	if (conv)
		log_refusal("chat: client %s user %lld: a frame for conversation %lld refused %s: %s", a,
		            (long long)user, (long long)conv, code, message);
	else
		log_refusal("chat: client %s user %lld: a frame refused %s: %s", a, (long long)user, code, message);
}

static void send_error(gw_conn_t *c, const char *code, const char *message, const char *ref,
                       int64_t conv)
{
	sbuf_t *f = frames_error(code, message, ref, conv);

	log_frame_refused(gw_conn_addr(c), gw_conn_user(c), conv, code, message);
	gw_conn_send(c, f);
	sbuf_unref(f);
}

/* Charges cost work units (store lookups the frame will cause) to the
 * connection's user. Returns 0, or -1 after telling the client when to
 * try again. */
static int charge(server_t *srv, gw_conn_t *c, double cost, int64_t conv)
{
	int64_t wait;
	sbuf_t *f;

	if (!srv->work_budget ||
	    (wait = budget_take(srv->work_budget, (uint64_t)gw_conn_user(c), cost, clock_mono_ms())) == 0)
		return 0;
	log_frame_refused(gw_conn_addr(c), gw_conn_user(c), conv, "rate_limited", "over the work budget");
	f = frames_rate_limited("too many requests; slow down", NULL, conv, wait);
	gw_conn_send(c, f);
	sbuf_unref(f);
	return -1;
}

/* ---- send ----------------------------------------------------------- */

static int cmid_valid(const json_t *v)
{
	const char *s;
	size_t n, i;

	if (!json_is_string(v))
		return 0;
	s = json_string_value(v);
	n = json_string_length(v);
	if (n < 1 || n > CMID_MAX)
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return 0;
	return 1;
}

/* One code point of s[0..n) at *i (valid UTF-8: the frame was checked),
 * moving *i past it. */
static uint32_t next_code_point(const unsigned char *s, size_t n, size_t *i)
{
	uint32_t c = s[(*i)++];
	int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;

	c &= more == 3 ? 0x07 : more == 2 ? 0x0f : more == 1 ? 0x1f : 0x7f;
	while (more-- > 0 && *i < n)
		c = (c << 6) | (s[(*i)++] & 0x3f);
	return c;
}

/* A reaction: one emoji as a client sends it (a sequence, with its
 * modifiers, joiners and selectors), 1 to STORE_EMOJI_MAX bytes, at most
 * 10 code points. Not a full emoji grammar: what it keeps out is text —
 * no control characters, no spaces, and at least one code point from the
 * blocks emoji come from (letters alone, as in "lol" or "中", are not a
 * reaction; a keycap such as 1️⃣ is). */
static int emoji_valid(const char *s, size_t n)
{
	size_t i = 0, count = 0;
	int pictured = 0;

	if (n < 1 || n > STORE_EMOJI_MAX)
		return 0;
	while (i < n) {
		uint32_t c = next_code_point((const unsigned char *)s, n, &i);
		if (c < 0x21 || (c >= 0x7f && c <= 0xa0) || c == 0x2028 || c == 0x2029 || c == 0x3000 ||
		    (c >= 0x2000 && c <= 0x200a) || c == 0xfeff || ++count > 10)
			return 0;
		/* Unicode's emoji live here: arrows, technical and other
		 * symbols, dingbats, the pictographic planes; and a few
		 * strays (©, ®, ‼, ⁉, ™, ℹ, the keycap's combining mark). */
		if ((c >= 0x2190 && c <= 0x2bff) || (c >= 0x1f000 && c <= 0x1faff) || c == 0xa9 || c == 0xae ||
		    c == 0x203c || c == 0x2049 || c == 0x2122 || c == 0x2139 || c == 0x20e3 || c == 0x3030 ||
		    c == 0x303d || c == 0x3297 || c == 0x3299)
			pictured = 1;
	}
	return pictured;
}

static const char *const frame_names[] = {
	[STORE_MSG_TEXT] = "send",
	[STORE_MSG_EDIT] = "edit",
	[STORE_MSG_DELETE] = "delete",
	[STORE_MSG_REACTION] = "react",
};

/* send, edit, delete and react: each is stored as the next row of its
 * conversation, answered with an ack, and reaches the members as "msg"
 * (docs/protocol.md). */
static void handle_send(server_t *srv, gw_conn_t *c, json_t *j, int kind)
{
	json_t *cmid = json_object_get(j, "cmid"),
	       *body = json_object_get(j, kind == STORE_MSG_REACTION ? "emoji" : "body");
	const char *ref = cmid_valid(cmid) ? json_string_value(cmid) : NULL;
	send_op_t *s;
	int64_t conv, target = 0;
	size_t blen = json_is_string(body) ? json_string_length(body) : 0;
	char why[96];

	if (!ref) {
		send_error(c, "bad_request", "cmid must be 1 to 64 printable ASCII characters", NULL, 0);
		return;
	}
	if (id_from_json(json_object_get(j, "conv"), 1, &conv) < 0) {
		send_error(c, "bad_request", "conv must be a conversation id", ref, 0);
		return;
	}
	if (kind == STORE_MSG_TEXT) {
		json_t *to = json_object_get(j, "reply_to");
		if (to && !json_is_null(to) && id_from_json(to, 1, &target) < 0) {
			send_error(c, "bad_request", "reply_to must be the seq of a message", ref, conv);
			return;
		}
	} else if (id_from_json(json_object_get(j, "seq"), 1, &target) < 0) {
		snprintf(why, sizeof why, "%s needs seq, the message's seq", frame_names[kind]);
		send_error(c, "bad_request", why, ref, conv);
		return;
	}
	if (kind == STORE_MSG_DELETE) {
		body = NULL;
		blen = 0;
	} else if (kind == STORE_MSG_REACTION) {
		if (!json_is_string(body) || (blen && !emoji_valid(json_string_value(body), blen))) {
			send_error(c, "bad_request", "emoji must be one emoji (at most 32 bytes), or \"\" to take "
			           "a reaction back", ref, conv);
			return;
		}
	} else if (!json_is_string(body) || blen < 1 || blen > BODY_MAX) {
		send_error(c, blen > BODY_MAX ? "too_large" : "bad_request",
		           "body must be a string of 1 to 16384 bytes", ref, conv);
		return;
	}
	if (gw_conn_sends_begin(c, srv->cfg.max_sends_in_flight) < 0) {
		send_error(c, "rate_limited", "too many sends awaiting their ack; wait for acks", ref, conv);
		return;
	}
	if (!(s = malloc(sizeof *s + blen + 1))) {
		gw_conn_sends_end(c);
		send_error(c, "unavailable", "out of memory; retry", ref, conv);
		return;
	}
	memset(&s->op, 0, sizeof s->op);
	s->srv = srv;
	s->origin = gw_conn_handle(c);
	s->addr = gw_conn_addr(c);
	strcpy(s->cmid, ref);
	memcpy(s->body, body ? json_string_value(body) : "", blen + 1);
	s->op.kind = STORE_OP_SEND;
	s->op.msg_kind = kind;
	s->op.target = target;
	s->op.edit_window_ms = (int64_t)srv->cfg.edit_window_s * 1000;
	s->op.user = gw_conn_user(c);
	s->op.device = gw_conn_device(c);
	s->op.conv = conv;
	s->op.cmid = s->cmid;
	s->op.body = s->body;
	s->op.body_len = blen;
	if (writer_submit(srv->writer, &s->op) < 0) {
		gw_conn_sends_end(c);
		free(s);
		send_error(c, "unavailable", "the server is overloaded; retry with the same cmid", ref,
		           conv);
	}
}

/* ---- receipt -------------------------------------------------------- */

static void handle_receipt(server_t *srv, gw_conn_t *c, json_t *j)
{
	json_t *state = json_object_get(j, "state"), *seqv = json_object_get(j, "seq");
	receipt_op_t *r;
	int64_t conv;
	int64_t seq;
	int st;

	if (id_from_json(json_object_get(j, "conv"), 1, &conv) < 0) {
		send_error(c, "bad_request", "conv must be a conversation id", NULL, 0);
		return;
	}
	if (!json_is_string(state) || (strcmp(json_string_value(state), "delivered") != 0 &&
	                               strcmp(json_string_value(state), "read") != 0)) {
		send_error(c, "bad_request", "state must be \"delivered\" or \"read\"", NULL, conv);
		return;
	}
	st = strcmp(json_string_value(state), "read") == 0 ? STORE_READ : STORE_DELIVERED;
	if (id_from_json(seqv, 0, &seq) < 0) {
		send_error(c, "bad_request", "seq must be a non-negative integer", NULL, conv);
		return;
	}
	if (seq == 0)
		return; /* below every watermark: nothing to do */
	if (charge(srv, c, 1, conv) < 0)
		return;
	if (!(r = calloc(1, sizeof *r))) {
		send_error(c, "unavailable", "out of memory; retry", NULL, conv);
		return;
	}
	r->srv = srv;
	r->origin = gw_conn_handle(c);
	r->addr = gw_conn_addr(c);
	r->op.kind = STORE_OP_RECEIPT;
	r->op.user = gw_conn_user(c);
	r->op.device = gw_conn_device(c);
	r->op.conv = conv;
	r->op.state = st;
	r->op.seq = seq;
	if (writer_submit(srv->writer, &r->op) < 0) {
		free(r);
		send_error(c, "unavailable", "the server is overloaded; retry", NULL, conv);
	}
}

/* ---- writer completions (writer thread) ----------------------------- */

/* Answers a send that was not stored: this error instead of its ack
 * (with retry_after_ms when waiting helps), and one log line. */
static void send_refused(send_op_t *s, const char *code, const char *message, int64_t retry_ms)
{
	sbuf_t *f = retry_ms ? frames_rate_limited(message, s->cmid, s->op.conv, retry_ms)
	                     : frames_error(code, message, s->cmid, s->op.conv);

	log_frame_refused(s->addr, s->op.user, s->op.conv, code, message);
	gw_post_ack(s->srv->gw, s->origin, f);
	sbuf_unref(f);
}

/* The ack of a send, on its connection's thread: that connection has
 * the message now (its own device is not sent it as msg), so its range
 * moves past it, as for a live frame. */
typedef struct own_ack {
	server_t *srv;
	sbuf_t *frame;
	int64_t conv, seq;      /* the ack's, a repeat's too */
} own_ack_t;

static void own_ack_arrived(gw_conn_t *c, void *p)
{
	own_ack_t *a = p;
	chat_conn_t *cc;
	live_range_t *r;

	if (c) {
		gw_conn_sends_end(c);
		gw_conn_send(c, a->frame);
		if (a->seq && (cc = state_of(c, 0)) != NULL && (r = live_find(cc, a->conv)) != NULL &&
		    a->seq > r->last) {
			gap_t *g;

			if (a->seq == r->last + 1) {
				r->last = a->seq;
				if ((g = gap_find(cc, a->conv)) != NULL)
					gap_release(c, cc, g, r);
			} else {
				/* Past a gap (another node's frames are late): a
				 * marker holds its place, sent as nothing. */
				sbuf_t *m = sbuf_copy("", 0);
				if (m) {
					m->conv = a->conv;
					m->seq = a->seq;
					gap_hold(a->srv, c, cc, m);
					sbuf_unref(m);
				}
			}
		}
	}
	sbuf_unref(a->frame);
	free(a);
}

static void post_own_ack(server_t *srv, uint64_t origin, sbuf_t *frame, int64_t conv, int64_t seq)
{
	own_ack_t *a;

	if (!frame || !(a = malloc(sizeof *a))) {
		gw_post_ack(srv->gw, origin, frame); /* at least the ack */
		return;
	}
	*a = (own_ack_t){srv, sbuf_ref(frame), conv, seq};
	gw_post_call(srv->gw, origin, own_ack_arrived, a);
}

static void send_done(send_op_t *s)
{
	server_t *srv = s->srv;
	store_op_t *op = &s->op;
	sbuf_t *f;

	switch (op->status) {
	case STORE_OK:
	case STORE_EXISTS:
		if (op->status == STORE_OK) {
			store_message_t m = {.conv = op->conv, .id = op->out_id, .seq = op->out_seq, .from = op->user,
			                     .ts = op->out_ts, .cmid = s->cmid, .body = s->body, .body_len = op->body_len,
			                     .kind = op->msg_kind, .target = op->target};
			if (!(f = frames_msg(&m)))
				log_error("chat: out of memory encoding message %lld; recipients will resume",
				          (long long)op->out_id);
			/* Every device of every member, but the one that sent it.
			 * A group's fan-out is queued so that the next commit does
			 * not wait for it; a direct chat's two members are cheaper
			 * to reach here than to queue, and are reached before the
			 * ack is posted: a sender that has its ack knows the message
			 * is on its way to every connection its peer had. */
			/* With the event log, the committed outbox row takes the
			 * message to the other nodes' connections (dispatch.h):
			 * here only this node's. */
			int32_t scope = srv->dispatch && op->out_outbox ? BUS_THIS_NODE : BUS_EVERY_NODE;
			if (f && op->conv_kind == STORE_GROUP) {
				fanout_submit_scoped(srv->fanout, op->conv, op->out_seq, op->out_members_version, f,
				                     NULL, 0, op->user, op->device, scope, NULL, NULL);
			} else if (f) {
				bus_deliver_scoped(srv->bus, scope, op->members, op->nmembers, op->user, op->device, f,
				                   NULL, NULL);
				sbuf_unref(f);
			}
			/* The push path decides, on its own threads, who is woken;
			 * an edit, delete or reaction wakes nobody. */
			if (op->msg_kind == STORE_MSG_TEXT)
				push_message(srv->push, op->conv, op->conv_kind, op->out_seq, op->user,
			             op->conv_kind == STORE_GROUP ? NULL : op->members,
			             op->conv_kind == STORE_GROUP ? 0 : op->nmembers, op->out_members_version, s->body,
			             op->body_len, op->out_ts);
		}
		/* A repeat was stored and fanned out the first time: the ack
		 * only. Its seq still moves the connection's range (or holds
		 * its place past a gap): the first time may have been on a
		 * node that died before its ack, committing after this
		 * connection's resume had read the head, and a gap's fill
		 * would then send the client its own message. */
		f = frames_ack(s->cmid, op->conv, op->out_id, op->out_seq, op->out_ts);
		post_own_ack(srv, s->origin, f, op->conv, op->out_seq);
		sbuf_unref(f);
		break;
	case STORE_FORBIDDEN:
		send_refused(s, "forbidden", "not a member of this conversation", 0);
		break;
	case STORE_NOT_FOUND:
		send_refused(s, "not_found", op->msg_kind == STORE_MSG_TEXT ? "no such message to reply to"
		                                                            : "no such message", 0);
		break;
	case STORE_DENIED:
		send_refused(s, "forbidden", op->msg_kind == STORE_MSG_DELETE
		                                 ? "only its author or a group's admin may delete a message"
		                                 : "only its author may edit a message", 0);
		break;
	case STORE_EXPIRED:
		send_refused(s, "forbidden", s->srv->cfg.edit_window_s ? "too late to edit: the edit window has passed"
		                                                       : "messages cannot be edited on this server", 0);
		break;
	case STORE_GONE:
		send_refused(s, "conflict", op->msg_kind == STORE_MSG_EDIT
		                                ? "the message was deleted, or a member who joined after it never saw it"
		                                : "the message was deleted", 0);
		break;
	case STORE_LIMITED:
		send_refused(s, "rate_limited",
		             op->out_limit_kind == WRITER_LIMIT_STORAGE
		                 ? "over the storage budget: the bytes of messages one may store a day; "
		                   "retry later with the same cmid"
		                 : "over the sending budget: each message costs the members it reaches; "
		                   "retry later with the same cmid",
		             op->out_retry_ms);
		break;
	case STORE_BLOCKED:
		/* The blocked side is told no more than that it may not send. */
		send_refused(s, "forbidden",
		             op->out_blocked_by_me ? "you have blocked this user; unblock them to send"
		                                   : "you cannot send to this conversation",
		             0);
		break;
	default:
		send_refused(s, "unavailable", "the message could not be stored; retry with the same cmid", 0);
	}
	store_op_release(op);
	free(s);
}

static void receipt_done(receipt_op_t *r)
{
	server_t *srv = r->srv;
	store_op_t *op = &r->op;
	sbuf_t *f;
	size_t i;

	/* A device that says it has a message needs no push for it (even
	 * where the store keeps no delivered watermark: large groups). */
	if (op->status == STORE_OK)
		push_receipt(srv->push, op->conv, op->user, op->device, op->state, op->applied ? op->out_seq : op->seq);
	if (op->status == STORE_OK && op->applied) {
		/* Groups: the senders of the messages it covers get counts,
		 * from the dispatcher of the group's partition when there is a
		 * log (one node counts each group), else from here. */
		if (op->conv_kind == STORE_GROUP && !(srv->dispatch && op->out_outbox))
			tally_mark(srv->tally, op->conv, op->out_prev + 1, op->out_seq);
		if ((f = frames_receipt(op->conv, op->user, op->state, op->out_seq)) != NULL) {
			/* The reader's own other devices, in every conversation;
			 * the other member of a direct chat. With a log, this
			 * node's connections now and the others' from the
			 * dispatcher of the receipt's event (dispatch.c), which
			 * gets there even when this node dies in between. */
			int32_t scope = srv->dispatch && op->out_outbox ? BUS_THIS_NODE : BUS_EVERY_NODE;
			bus_deliver_scoped(srv->bus, scope, &op->user, 1, op->user, op->device, f, NULL, NULL);
			for (i = 0; i < op->nmembers; i++)
				if (op->members[i] != op->user)
					bus_deliver_scoped(srv->bus, scope, &op->members[i], 1, 0, 0, f, NULL, NULL);
			sbuf_unref(f);
		}
	} else if (op->status == STORE_FORBIDDEN) {
		log_frame_refused(r->addr, op->user, op->conv, "forbidden", "not a member of this conversation");
		f = frames_error("forbidden", "not a member of this conversation", NULL, op->conv);
		gw_post_frame(srv->gw, r->origin, f);
		sbuf_unref(f);
	} else if (op->status != STORE_OK) {
		f = frames_error("unavailable", "the receipt could not be stored; retry", NULL, op->conv);
		gw_post_frame(srv->gw, r->origin, f);
		sbuf_unref(f);
	}
	store_op_release(op);
	free(r);
}

void chat_writer_done(store_op_t *op, void *ud)
{
	(void)ud;
	if (op->kind == STORE_OP_SEND)
		send_done((send_op_t *)op);
	else
		receipt_done((receipt_op_t *)op);
}

/* ---- live delivery and resume --------------------------------------- */

static live_range_t *live_find(chat_conn_t *cc, int64_t conv)
{
	size_t i;

	for (i = 0; i < cc->nlive; i++)
		if (cc->live[i].conv == conv)
			return &cc->live[i];
	return NULL;
}

/* The connection's range of conversation conv, made from `after` (all up
 * to it delivered, or not the connection's) when it has none. NULL when
 * out of memory (the connection is then closed). */
static live_range_t *live_range(gw_conn_t *c, chat_conn_t *cc, int64_t conv, int64_t after)
{
	live_range_t *r = live_find(cc, conv);

	if (r)
		return r;
	if (cc->nlive == cc->caplive) {
		size_t cap = cc->caplive ? cc->caplive * 2 : 4;
		live_range_t *l = realloc(cc->live, cap * sizeof *l);
		if (!l) {
			gw_conn_close(c, WS_CLOSE_INTERNAL, "out of memory");
			return NULL;
		}
		cc->live = l;
		cc->caplive = cap;
	}
	cc->live[cc->nlive] = (live_range_t){conv, after + 1, after};
	return &cc->live[cc->nlive++];
}

static gap_t *gap_find(chat_conn_t *cc, int64_t conv)
{
	size_t i;

	for (i = 0; i < cc->ngaps; i++)
		if (cc->gaps[i].conv == conv)
			return &cc->gaps[i];
	return NULL;
}

static void gap_remove(chat_conn_t *cc, gap_t *g)
{
	size_t i;

	for (i = 0; i < g->nheld; i++)
		sbuf_unref(g->held[i]);
	cc->gap_frames -= g->nheld;
	free(g->held);
	*g = cc->gaps[--cc->ngaps];
}

static void gap_fill(server_t *srv, gw_conn_t *c, chat_conn_t *cc, gap_t *g);

/* 1 when the gap of conv holds the marker of this connection's own send
 * at seq: the store's copy of that message (a fill, a replay) is not for
 * this connection, which has its ack. */
static int gap_own_send(chat_conn_t *cc, int64_t conv, int64_t seq)
{
	gap_t *g = gap_find(cc, conv);
	size_t i;

	for (i = 0; g && i < g->nheld; i++)
		if (g->held[i]->seq == seq && g->held[i]->len == 0)
			return 1;
	return 0;
}

/* Sends what the gap holds that now follows the range, in order, and
 * drops what the range has passed; ends the gap once it holds nothing and
 * no worker reads it. */
static void gap_release(gw_conn_t *c, chat_conn_t *cc, gap_t *g, live_range_t *r)
{
	size_t i;
	int progress = 1;

	while (progress) {
		progress = 0;
		for (i = 0; i < g->nheld;) {
			sbuf_t *f = g->held[i];
			if (f->seq > r->last + 1) {
				i++;
				continue;
			}
			if (f->seq == r->last + 1) {
				if (f->len) /* not the marker of the connection's own send */
					gw_conn_send(c, f);
				r->last = f->seq;
				progress = 1;
			}
			sbuf_unref(f);
			g->held[i] = g->held[--g->nheld];
			cc->gap_frames--;
		}
	}
	if (g->nheld == 0 && !g->filling && r->last >= g->upto)
		gap_remove(cc, g);
}

/* Holds frame, which is past a gap in its conversation. */
static void gap_hold(server_t *srv, gw_conn_t *c, chat_conn_t *cc, sbuf_t *frame)
{
	gap_t *g = gap_find(cc, frame->conv);
	size_t i;

	if (!g) {
		gap_t *a = realloc(cc->gaps, (cc->ngaps + 1) * sizeof *a);
		if (!a) {
			gw_conn_close(c, WS_CLOSE_INTERNAL, "out of memory");
			return;
		}
		cc->gaps = a;
		g = &cc->gaps[cc->ngaps++];
		*g = (gap_t){frame->conv, clock_mono_ms(), 0, 0, NULL, 0, 0};
		gw_conn_wake(c, (GAP_WAIT_MS + 999) / 1000);
	}
	if (frame->seq > g->upto)
		g->upto = frame->seq;
	for (i = 0; i < g->nheld; i++)
		if (g->held[i]->seq == frame->seq)
			return; /* held already */
	if (cc->gap_frames >= GAP_HELD_MAX && frame->len) {
		/* Not held: the store has it (a conversation's seqs commit
		 * in order), and the fill reads up to it. The marker of an
		 * own send is held whatever the count (a few bytes each, as
		 * many as the connection's acks while the gap waits): the
		 * store cannot tell the fill that this connection has it, and
		 * without it the fill would send the client its own message. */
		gap_fill(srv, c, cc, g);
		return;
	}
	if (g->nheld == g->capheld) {
		size_t cap = g->capheld ? g->capheld * 2 : 4;
		sbuf_t **h = realloc(g->held, cap * sizeof *h);
		if (!h) {
			gap_fill(srv, c, cc, g); /* as when full */
			return;
		}
		g->held = h;
		g->capheld = cap;
	}
	g->held[g->nheld++] = sbuf_ref(frame);
	cc->gap_frames++;
}

/* Sends a live msg frame in its conversation's order (see the top). */
static void send_live(server_t *srv, gw_conn_t *c, chat_conn_t *cc, sbuf_t *frame)
{
	live_range_t *r = live_find(cc, frame->conv);
	gap_t *g;

	if (!r) {
		/* The first this connection sees of the conversation. */
		if ((r = live_range(c, cc, frame->conv, frame->seq - 1)) == NULL)
			return;
	}
	if (frame->seq <= r->last)
		return; /* already on this connection */
	if (frame->seq > r->last + 1) {
		gap_hold(srv, c, cc, frame);
		return;
	}
	gw_conn_send(c, frame);
	r->last = frame->seq;
	if ((g = gap_find(cc, frame->conv)) != NULL)
		gap_release(c, cc, g, r);
}

/* ---- filling a gap from the store --------------------------------- */

/* Travels to a worker and back, like a resume page. */
typedef struct fill {
	server_t *srv;
	uint64_t conn;
	int64_t user, conv;
	int64_t after, upto;    /* reads (after, upto] */
	int64_t floor;          /* seqs up to this are not the user's (before it joined) */
	int forbidden, failed;
	sbuf_t **frames;
	size_t n;
} fill_t;

static void fill_free(fill_t *f)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		sbuf_unref(f->frames[i]);
	free(f->frames);
	free(f);
}

static void fill_done(gw_conn_t *c, void *p);

static void fill_job(store_t *st, void *arg)
{
	fill_t *f = arg;
	int64_t head, joined;
	store_message_t *ms = NULL;
	size_t n = 0, i;
	int r = store_member_head(st, f->conv, f->user, &head, &joined);

	if (r == STORE_FORBIDDEN) {
		f->forbidden = 1;
		goto out;
	}
	if (r != STORE_OK) {
		f->failed = 1;
		goto out;
	}
	f->floor = joined;
	if (f->after < joined)
		f->after = joined;
	if (f->upto > head)
		f->upto = head;
	if (f->after < f->upto &&
	    store_replay(st, f->conv, joined, f->after, f->upto, GAP_FILL_MSGS, RESUME_PAGE_BYTES_MAX, &ms, &n) != STORE_OK) {
		f->failed = 1;
		goto out;
	}
	if (n && !(f->frames = calloc(n, sizeof *f->frames))) {
		f->failed = 1;
		goto out;
	}
	for (i = 0; i < n; i++)
		if ((f->frames[f->n] = frames_msg(&ms[i])) != NULL)
			f->n++;
	if (f->n < n)
		f->failed = 1; /* out of memory: what was made goes; the rest later */
out:
	store_messages_free(ms, n);
	gw_post_call(f->srv->gw, f->conn, fill_done, f);
}

static void fill_dropped(void *arg)
{
	fill_t *f = arg;

	f->failed = 1;
	gw_post_call(f->srv->gw, f->conn, fill_done, f);
}

/* Reads the gap's missing frames, unless a worker is at it already. */
static void gap_fill(server_t *srv, gw_conn_t *c, chat_conn_t *cc, gap_t *g)
{
	live_range_t *r = live_find(cc, g->conv);
	fill_t *f;

	if (g->filling || !r)
		return;
	if (!(f = calloc(1, sizeof *f))) {
		gw_conn_close(c, WS_CLOSE_INTERNAL, "out of memory");
		return;
	}
	*f = (fill_t){srv, gw_conn_handle(c), gw_conn_user(c), g->conv, r->last, g->upto, 0, 0, 0, NULL, 0};
	g->filling = 1;
	if (workers_submit_flow(srv->workers, FLOW_OF_USER(f->user), fill_job, fill_dropped, f) < 0) {
		g->filling = 0;
		g->since_ms = clock_mono_ms(); /* the queue is full: again later */
		gw_conn_wake(c, (GAP_WAIT_MS + 999) / 1000);
		free(f);
	}
}

static void fill_done(gw_conn_t *c, void *p)
{
	fill_t *f = p;
	chat_conn_t *cc;
	live_range_t *r;
	gap_t *g;
	size_t i;

	if (!c || !(cc = state_of(c, 0)) || !(g = gap_find(cc, f->conv)) || !(r = live_find(cc, f->conv))) {
		fill_free(f);
		return;
	}
	g->filling = 0;
	if (f->forbidden) {
		/* No longer a member: what was held is not the user's now. */
		gap_remove(cc, g);
		fill_free(f);
		return;
	}
	if (r->last < f->floor)
		r->last = f->floor; /* from before it joined: not its to see */
	for (i = 0; i < f->n; i++) {
		sbuf_t *m = f->frames[i];
		if (m->seq == r->last + 1) {
			if (!gap_own_send(cc, f->conv, m->seq)) /* it has the ack */
				gw_conn_send(c, m);
			r->last = m->seq;
		}
	}
	if (!f->failed && f->n == 0 && r->last < g->upto) {
		/* The store has nothing of the gap (it cannot, with seqs that
		 * commit in order; a replica behind its primary could): go on
		 * from the lowest frame held rather than hold the conversation
		 * for ever, and say so. */
		int64_t lowest = g->upto + 1;

		for (i = 0; i < g->nheld; i++)
			if (g->held[i]->seq < lowest)
				lowest = g->held[i]->seq;
		log_warn("chat: user %lld conversation %lld: seqs %lld to %lld never came; going on without them",
		         (long long)f->user, (long long)f->conv, (long long)r->last + 1, (long long)lowest - 1);
		r->last = lowest - 1;
	}
	gap_release(c, cc, g, r);
	if ((g = gap_find(cc, f->conv)) != NULL) {
		if (f->failed) {
			g->since_ms = clock_mono_ms(); /* again, after the wait */
			gw_conn_wake(c, (GAP_WAIT_MS + 999) / 1000);
		} else {
			gap_fill(f->srv, c, cc, g); /* more of it than one job reads */
		}
	}
	fill_free(f);
}

/* The connection's timer: fills the gaps that have waited their time.
 * Returns the seconds until the next one will have, or 0. */
unsigned chat_on_timer(server_t *srv, gw_conn_t *c)
{
	chat_conn_t *cc = state_of(c, 0);
	int64_t now = clock_mono_ms(), next = 0;
	size_t i;

	for (i = 0; cc && i < cc->ngaps; i++) {
		gap_t *g = &cc->gaps[i];
		int64_t due = g->since_ms + GAP_WAIT_MS;

		if (g->filling)
			continue;
		if (due <= now)
			gap_fill(srv, c, cc, g);
		else if (!next || due - now < next)
			next = due - now;
	}
	return next ? (unsigned)((next + 999) / 1000) : 0;
}

static resume_conv_t *resume_conv(resume_t *r, int64_t conv)
{
	size_t i;

	for (i = 0; i < r->nconvs; i++)
		if (r->convs[i].conv == conv)
			return &r->convs[i];
	return NULL;
}

void chat_on_live(server_t *srv, gw_conn_t *c, sbuf_t *frame)
{
	chat_conn_t *cc;

	(void)srv;
	if (!frame->seq) { /* not a message: no ordering to keep */
		gw_conn_send(c, frame);
		return;
	}
	if (!(cc = state_of(c, 1))) {
		gw_conn_close(c, WS_CLOSE_INTERNAL, "out of memory");
		return;
	}
	if (cc->resume && resume_conv(cc->resume, frame->conv)) {
		if (cc->nheld == RESUME_HELD_MAX) {
			gw_conn_close(c, 1013, "too far behind; reconnect and resume");
			return;
		}
		if (cc->nheld == cc->capheld) {
			size_t cap = cc->capheld ? cc->capheld * 2 : 16;
			sbuf_t **h = realloc(cc->held, cap * sizeof *h);
			if (!h) {
				gw_conn_close(c, WS_CLOSE_INTERNAL, "out of memory");
				return;
			}
			cc->held = h;
			cc->capheld = cap;
		}
		cc->held[cc->nheld++] = sbuf_ref(frame);
		return;
	}
	send_live(srv, c, cc, frame);
}

static void resume_free(resume_t *r)
{
	size_t i;

	if (!r)
		return;
	for (i = 0; i < r->npage; i++)
		sbuf_unref(r->page[i]);
	free(r->page);
	free(r->convs);
	sbuf_unref(r->resumed);
	free(r);
}

static int page_add(resume_t *r, sbuf_t *f)
{
	if (r->npage == r->cappage) {
		size_t cap = r->cappage ? r->cappage * 2 : 64;
		sbuf_t **p = realloc(r->page, cap * sizeof *p);
		if (!p)
			return -1;
		r->page = p;
		r->cappage = cap;
	}
	r->page[r->npage++] = f;
	return 0;
}

/* Fixes what to replay: for each listed conversation the range
 * (after, head], at most the newest RESUME_REPLAY_MAX; and the heads. */
static int resume_plan(store_t *st, resume_t *r)
{
	store_head_t *heads;
	size_t n, i;
	jbuf_t b;

	for (i = 0; i < r->nconvs; i++) {
		resume_conv_t *rc = &r->convs[i];
		int64_t head, joined;
		int x = store_member_head(st, rc->conv, r->user, &head, &joined);

		if (x == STORE_FORBIDDEN) {
			rc->forbidden = 1;
			continue;
		}
		if (x != STORE_OK)
			return -1;
		rc->upto = head;
		rc->joined = joined;
		if (rc->after < head - RESUME_REPLAY_MAX)
			rc->after = head - RESUME_REPLAY_MAX;
		if (rc->after < joined)
			rc->after = joined; /* nothing from before it joined */
		if (rc->after > head)
			rc->after = head;
		rc->from = rc->after + 1;
	}
	if (store_heads(st, r->user, &heads, &n) != STORE_OK)
		return -1;
	jbuf_init(&b);
	jbuf_lit(&b, "{\"type\":\"resumed\",\"heads\":{");
	for (i = 0; i < n; i++) {
		char key[24];
		if (i)
			jbuf_raw(&b, ",", 1);
		snprintf(key, sizeof key, "\"%lld\":", (long long)heads[i].conv);
		jbuf_lit(&b, key);
		jbuf_int(&b, heads[i].last_seq);
	}
	jbuf_lit(&b, "}}");
	free(heads);
	r->resumed = frames_from_json(&b);
	jbuf_free(&b);
	return r->resumed ? 0 : -1;
}

static void resume_page_ready(gw_conn_t *c, void *p);

/* Worker: plans (first time) and reads the next page. */
static void resume_job(store_t *st, void *arg)
{
	resume_t *r = arg;
	size_t count = 0, bytes = 0;

	if (!r->planned) {
		double rows = 0;
		size_t i;

		if (resume_plan(st, r) < 0) {
			r->failed = 1;
			goto out;
		}
		r->planned = 1;
		/* The replay is charged by the rows it will read, a tenth of a
		 * unit each, as history is: resume is no cheaper way round. */
		for (i = 0; i < r->nconvs; i++)
			if (!r->convs[i].forbidden)
				rows += (double)(r->convs[i].upto - r->convs[i].after);
		if (r->srv->work_budget && rows >= 10 &&
		    (r->limited_ms = budget_take(r->srv->work_budget, (uint64_t)r->user, rows / 10, clock_mono_ms())) > 0)
			goto out;
	}
	while (r->cur < r->nconvs && count < RESUME_PAGE_MSGS && bytes < r->page_bytes) {
		resume_conv_t *rc = &r->convs[r->cur];
		store_message_t *ms;
		size_t n, i;

		if (rc->forbidden || rc->after >= rc->upto) {
			r->cur++;
			continue;
		}
		if (store_replay(st, rc->conv, rc->joined, rc->after, rc->upto, RESUME_PAGE_MSGS - count,
		                 r->page_bytes - bytes, &ms, &n) != STORE_OK) {
			r->failed = 1;
			goto out;
		}
		if (n == 0)
			rc->after = rc->upto;
		for (i = 0; i < n; i++) {
			sbuf_t *f = frames_msg(&ms[i]);
			if (!f || page_add(r, f) < 0) {
				sbuf_unref(f);
				r->failed = 1;
				store_messages_free(ms, n);
				goto out;
			}
			rc->after = ms[i].seq;
			bytes += ms[i].body_len;
			count++;
		}
		store_messages_free(ms, n);
	}
out:
	gw_post_call(r->srv->gw, r->conn, resume_page_ready, r);
}

/* A resume page evicted from a full worker queue: it comes back failed,
 * and the client is told to retry. */
static void resume_dropped(void *arg)
{
	resume_t *r = arg;

	r->failed = 1;
	gw_post_call(r->srv->gw, r->conn, resume_page_ready, r);
}

static void resume_next(gw_conn_t *c, chat_conn_t *cc)
{
	resume_t *r = cc->resume;

	cc->resume_in_job = 1;
	if (workers_submit_flow(r->srv->workers, FLOW_OF_USER(r->user), resume_job, resume_dropped, r) < 0) {
		cc->resume_in_job = 0;
		gw_conn_close(c, 1013, "server overloaded; reconnect and resume");
	}
}

static void resume_finish(gw_conn_t *c, chat_conn_t *cc)
{
	resume_t *r = cc->resume;
	server_t *srv = r->srv;
	size_t i;
	json_t *pending;
	gap_t *g;

	gw_conn_send(c, r->resumed);
	cc->resume = NULL;
	/* The client has each resumed conversation up to the replay's end:
	 * live frames go on from there, and one further on is a gap. */
	for (i = 0; i < r->nconvs; i++) {
		resume_conv_t *rc = &r->convs[i];
		live_range_t *lr;

		if (rc->forbidden)
			continue;
		if (!(lr = live_range(c, cc, rc->conv, rc->upto))) {
			resume_free(r);
			return;
		}
		if (lr->last < rc->upto)
			lr->last = rc->upto;
		/* and from where it began: a later resume of the same range
		 * (a client's retry) skips what it has */
		if (rc->from && rc->from <= rc->upto && lr->first > rc->from)
			lr->first = rc->from;
		if ((g = gap_find(cc, rc->conv)) != NULL)
			gap_release(c, cc, g, lr); /* what the replay covered goes */
	}
	/* Release held live frames; the replay has covered those up to its
	 * range's end. */
	for (i = 0; i < cc->nheld; i++) {
		sbuf_t *f = cc->held[i];
		resume_conv_t *rc = resume_conv(r, f->conv);
		if (!rc || rc->forbidden || f->seq > rc->upto)
			send_live(srv, c, cc, f);
		sbuf_unref(f);
	}
	cc->nheld = 0;
	free(cc->held);
	cc->held = NULL;
	cc->capheld = 0;
	resume_free(r);
	if ((pending = cc->pending) != NULL) {
		cc->pending = NULL;
		resume_start(srv, c, cc, pending);
		json_decref(pending);
	}
}

/* A replay that stops part way (the store failed) has sent each
 * conversation [from, sent]: the connection's range must say so, or the
 * held live frames released next would open a gap below them that a fill
 * reads again from the store, and the client's retry would be replayed
 * what it has; both would reach the connection twice. The union with the
 * range is one range when they touch (the replay skipped what the range
 * held); when they do not, the range is kept and the client's next resume
 * brings the seqs between. -1 when out of memory (the connection is
 * closed). */
static int replay_sent(gw_conn_t *c, chat_conn_t *cc, const resume_t *r)
{
	size_t i;

	for (i = 0; i < r->nconvs; i++) {
		const resume_conv_t *rc = &r->convs[i];
		live_range_t *lr;

		if (rc->forbidden || !rc->sent || rc->sent < rc->from)
			continue;
		if (!(lr = live_find(cc, rc->conv))) {
			if (!(lr = live_range(c, cc, rc->conv, rc->sent)))
				return -1;
			lr->first = rc->from;
		} else if (lr->first <= rc->sent + 1 && lr->last + 1 >= rc->from) {
			if (lr->last < rc->sent)
				lr->last = rc->sent;
			if (lr->first > rc->from)
				lr->first = rc->from;
		}
	}
	return 0;
}

static void resume_page_ready(gw_conn_t *c, void *p)
{
	resume_t *r = p;
	server_t *srv = r->srv;
	chat_conn_t *cc;
	json_t *pending;
	size_t i;
	resume_conv_t *rc = NULL;
	int ok;

	if (!c || !(cc = state_of(c, 0)) || cc->resume != r) {
		resume_free(r);
		return;
	}
	cc->resume_in_job = 0;
	if (r->failed || r->limited_ms > 0) {
		if (r->limited_ms > 0) {
			sbuf_t *f = frames_rate_limited("a replay of that much history is over the work budget; "
			                                "resume less at once, or later",
			                                NULL, 0, r->limited_ms);
			log_frame_refused(gw_conn_addr(c), r->user, 0, "rate_limited", "a replay over the work budget");
			gw_conn_send(c, f);
			sbuf_unref(f);
		} else {
			send_error(c, "unavailable", "resume failed; retry", NULL, 0);
		}
		cc->resume = NULL;
		ok = replay_sent(c, cc, r) == 0;
		for (i = 0; i < cc->nheld; i++) {
			if (ok)
				send_live(r->srv, c, cc, cc->held[i]);
			sbuf_unref(cc->held[i]);
		}
		cc->nheld = 0;
		resume_free(r);
		/* A resume that came meanwhile is the client's latest word:
		 * it is answered, not left for the next one to start. */
		if (ok && (pending = cc->pending) != NULL) {
			cc->pending = NULL;
			resume_start(srv, c, cc, pending);
			json_decref(pending);
		}
		return;
	}
	if (!r->reported) {
		r->reported = 1;
		for (i = 0; i < r->nconvs; i++)
			if (r->convs[i].forbidden)
				send_error(c, "forbidden", "not a member of this conversation", NULL,
				           r->convs[i].conv);
	}
	for (i = 0; i < r->npage; i++) {
		sbuf_t *f = r->page[i];
		live_range_t *lr = live_find(cc, f->conv);
		/* Skip what went out live before the resume came in, and
		 * the connection's own sends held past a gap (it has their
		 * acks). */
		if (!rc || rc->conv != f->conv) /* a page is a conversation or a few, in order */
			rc = resume_conv(r, f->conv);
		if ((!lr || f->seq < lr->first || f->seq > lr->last) && !gap_own_send(cc, f->conv, f->seq))
			gw_conn_send(c, f);
		if (rc && f->seq > rc->sent)
			rc->sent = f->seq;
		sbuf_unref(f);
	}
	r->npage = 0;
	/* The next page, and the closing "resumed" (which names every
	 * conversation of the user), wait until the queue is low: a replay
	 * never comes near the bound that drops slow readers. */
	if (gw_conn_queued(c) >= r->srv->cfg.out_limit / 8)
		cc->resume_wait_drain = 1;
	else if (r->cur >= r->nconvs)
		resume_finish(c, cc);
	else
		resume_next(c, cc);
}

void chat_on_drained(server_t *srv, gw_conn_t *c)
{
	chat_conn_t *cc = state_of(c, 0);

	(void)srv;
	if (cc && cc->resume && cc->resume_wait_drain && !cc->resume_in_job) {
		cc->resume_wait_drain = 0;
		if (cc->resume->cur >= cc->resume->nconvs)
			resume_finish(c, cc);
		else
			resume_next(c, cc);
	}
}

/* Back on the connection's thread from bus_sync. */
static void resume_synced(gw_conn_t *c, void *p)
{
	resume_t *r = p;
	chat_conn_t *cc;

	if (!c || !(cc = state_of(c, 0)) || cc->resume != r) {
		resume_free(r);
		return;
	}
	cc->resume_in_job = 0;
	resume_next(c, cc);
}

/* On a thread of the bus's. ok 0: the node is stopping, its connections
 * are gone (chat_conn_closed left r to this). */
static void resume_synced_bus(void *arg, int ok)
{
	resume_t *r = arg;

	if (!ok) {
		resume_free(r);
		return;
	}
	gw_post_call(r->srv->gw, r->conn, resume_synced, r);
}

static void resume_start(server_t *srv, gw_conn_t *c, chat_conn_t *cc, json_t *convs)
{
	resume_t *r = calloc(1, sizeof *r);
	const char *key;
	json_t *v;

	if (!r || (json_object_size(convs) &&
	           !(r->convs = calloc(json_object_size(convs), sizeof *r->convs)))) {
		free(r);
		send_error(c, "unavailable", "out of memory; retry", NULL, 0);
		return;
	}
	r->srv = srv;
	r->conn = gw_conn_handle(c);
	r->user = gw_conn_user(c);
	r->page_bytes = srv->cfg.out_limit / 4;
	if (r->page_bytes > RESUME_PAGE_BYTES_MAX)
		r->page_bytes = RESUME_PAGE_BYTES_MAX;
	json_object_foreach(convs, key, v) {
		resume_conv_t *rc = &r->convs[r->nconvs++];
		rc->conv = strtoll(key, NULL, 10);
		rc->after = json_integer_value(v);
	}
	cc->resume = r;
	cc->resume_wait_drain = 0;
	/* The store is read only once the bus has this connection where
	 * other nodes' dispatchers look (bus_sync): a message committed after
	 * the read is then delivered live, whichever node commits it. Held
	 * as by a worker meanwhile. */
	cc->resume_in_job = 1;
	if (bus_sync(srv->bus, resume_synced_bus, r) == 1) {
		cc->resume_in_job = 0;
		resume_next(c, cc);
	}
}

static void handle_resume(server_t *srv, gw_conn_t *c, json_t *j)
{
	json_t *convs = json_object_get(j, "convs"), *v;
	chat_conn_t *cc;
	const char *key;
	int64_t conv, seq;

	if (!json_is_object(convs)) {
		send_error(c, "bad_request", "convs must be an object of conversation id -> last seq",
		           NULL, 0);
		return;
	}
	if (json_object_size(convs) > RESUME_CONVS_MAX) {
		send_error(c, "too_large", "at most 4096 conversations per resume", NULL, 0);
		return;
	}
	json_object_foreach(convs, key, v) {
		if (id_parse(key, strlen(key), 1, &conv) < 0 || id_from_json(v, 0, &seq) < 0) {
			send_error(c, "bad_request", "convs must map conversation ids to seqs (>= 0)", NULL, 0);
			return;
		}
	}
	/* A lookup a conversation and the heads; the replay itself is paced
	 * by the client's reading. */
	if (charge(srv, c, 2 + (double)json_object_size(convs), 0) < 0)
		return;
	if (!(cc = state_of(c, 1))) {
		send_error(c, "unavailable", "out of memory; retry", NULL, 0);
		return;
	}
	if (cc->resume) {
		/* One replay at a time per connection; the latest request waits. */
		json_decref(cc->pending);
		cc->pending = json_incref(convs);
		return;
	}
	resume_start(srv, c, cc, convs);
}

void chat_conn_opened(server_t *srv, gw_conn_t *c)
{
	/* The bus has it (routes.c), which is all presence needs. */
	(void)srv;
	(void)c;
}

void chat_conn_closed(server_t *srv, gw_conn_t *c)
{
	chat_conn_t *cc = state_of(c, 0);
	size_t i;

	presence_disconnected(srv->presence, gw_conn_user(c));
	if (!cc)
		return;
	presence_unwatch(srv->presence, gw_conn_handle(c), cc->watched, cc->nwatched);
	free(cc->watched);
	/* A resume held by a worker is freed when it comes back and finds
	 * the connection gone. */
	if (!cc->resume_in_job)
		resume_free(cc->resume);
	for (i = 0; i < cc->nheld; i++)
		sbuf_unref(cc->held[i]);
	free(cc->held);
	while (cc->ngaps)
		gap_remove(cc, &cc->gaps[0]);
	free(cc->gaps);
	free(cc->live);
	json_decref(cc->pending);
	free(cc);
	*gw_conn_app(c) = NULL;
}

/* ---- presence, watch, typing ---------------------------------------- */

static void handle_presence(server_t *srv, gw_conn_t *c, json_t *j)
{
	json_t *state = json_object_get(j, "state");
	chat_conn_t *cc;
	int away;

	if (!json_is_string(state) || (strcmp(json_string_value(state), "online") != 0 &&
	                               strcmp(json_string_value(state), "away") != 0)) {
		send_error(c, "bad_request", "state must be \"online\" or \"away\"", NULL, 0);
		return;
	}
	away = strcmp(json_string_value(state), "away") == 0;
	if (charge(srv, c, 1, 0) < 0)
		return;
	if (!(cc = state_of(c, 1))) {
		send_error(c, "unavailable", "out of memory; retry", NULL, 0);
		return;
	}
	if (cc->away != away) {
		cc->away = away;
		presence_away(srv->presence, gw_conn_user(c), gw_conn_handle(c), away);
	}
}

typedef struct watch_job {
	server_t *srv;
	uint64_t conn;
	int64_t user;
	unsigned seq;
	uint64_t gen;            /* presence_gen when the checks began */
	size_t n, nallowed;
	int64_t *users;          /* asked for; then those allowed */
	int64_t *last_seen;
} watch_job_t;

static void watch_job_free(watch_job_t *w)
{
	free(w->users);
	free(w->last_seen);
	free(w);
}

static void watch_done(gw_conn_t *c, void *p)
{
	watch_job_t *w = p;
	chat_conn_t *cc;

	if (c && (cc = state_of(c, 0)) != NULL && cc->watch_seq == w->seq) {
		presence_watch(w->srv->presence, w->gen, w->conn, w->user, cc->watched, cc->nwatched, w->users,
		               w->last_seen, w->nallowed);
		free(cc->watched);
		cc->watched = w->users;
		cc->nwatched = w->nallowed;
		w->users = NULL;
	}
	watch_job_free(w);
}

static void watch_dropped(void *arg)
{
	watch_job_t *w = arg;
	sbuf_t *f = frames_error("unavailable", "the server is busy; send the watch again shortly", NULL, 0);

	gw_post_frame(w->srv->gw, w->conn, f);
	sbuf_unref(f);
	watch_job_free(w);
}

/* Worker: keeps the users whose presence the watcher may see. */
static void watch_job(store_t *st, void *arg)
{
	watch_job_t *w = arg;
	size_t i;

	w->gen = presence_gen(w->srv->presence);
	for (i = 0; i < w->n; i++) {
		int64_t seen = 0;
		int r = store_watchable(st, w->user, w->users[i], &seen);
		if (r == STORE_OK) {
			w->users[w->nallowed] = w->users[i];
			w->last_seen[w->nallowed++] = seen;
		} else if (r != STORE_FORBIDDEN) {
			break; /* the store failed: the rest stay unwatched */
		}
	}
	gw_post_call(w->srv->gw, w->conn, watch_done, w);
}

static void handle_watch(server_t *srv, gw_conn_t *c, json_t *j)
{
	json_t *users = json_object_get(j, "users"), *v;
	chat_conn_t *cc;
	watch_job_t *w = NULL;
	size_t i, k;
	int64_t id;

	if (!json_is_array(users)) {
		send_error(c, "bad_request", "users must be an array of user ids", NULL, 0);
		return;
	}
	if (json_array_size(users) > PRESENCE_WATCH_MAX) {
		send_error(c, "too_large", "a connection watches at most 500 users", NULL, 0);
		return;
	}
	if (!(cc = state_of(c, 1)) || !(w = calloc(1, sizeof *w)) ||
	    !(w->users = malloc((json_array_size(users) + 1) * sizeof *w->users)) ||
	    !(w->last_seen = malloc((json_array_size(users) + 1) * sizeof *w->last_seen))) {
		if (cc && w)
			watch_job_free(w);
		send_error(c, "unavailable", "out of memory; retry", NULL, 0);
		return;
	}
	w->srv = srv;
	w->conn = gw_conn_handle(c);
	w->user = gw_conn_user(c);
	json_array_foreach(users, i, v) {
		if (id_from_json(v, 1, &id) < 0) {
			send_error(c, "bad_request", "users must be an array of user ids", NULL, 0);
			watch_job_free(w);
			return;
		}
		for (k = 0; k < w->n && w->users[k] != id; k++)
			;
		if (k == w->n && id != w->user) /* each once; oneself is not watched */
			w->users[w->n++] = id;
	}
	if (charge(srv, c, 1 + (double)w->n, 0) < 0) {
		watch_job_free(w);
		return;
	}
	w->seq = ++cc->watch_seq;
	if (workers_submit_flow(srv->workers, FLOW_OF_USER(w->user), watch_job, watch_dropped, w) < 0) {
		watch_job_free(w);
		send_error(c, "unavailable", "the server is overloaded; retry", NULL, 0);
	}
}

typedef struct typing_job {
	server_t *srv;
	uint64_t conn;
	int64_t user, conv;
	int on;
} typing_job_t;

/* Worker: checks membership and finds whom to tell. */
static void typing_job(store_t *st, void *arg)
{
	typing_job_t *t = arg;
	int64_t last, joined, *members;
	uint64_t gen = presence_gen(t->srv->presence);
	size_t n;
	int r = store_member_head(st, t->conv, t->user, &last, &joined);

	if (r == STORE_FORBIDDEN) {
		sbuf_t *f = frames_error("forbidden", "not a member of this conversation", NULL, t->conv);
		gw_post_frame(t->srv->gw, t->conn, f);
		sbuf_unref(f);
	} else if (r == STORE_OK && store_members(st, t->conv, &members, &n) == STORE_OK) {
		int64_t *blocked = NULL;
		size_t nblocked = 0, i, k;

		/* Large groups drop typing: 1,024 devices told of every
		 * keystroke pause is noise, not information. Nor does it reach
		 * anyone the typist blocked, or who blocked it. */
		if (n > STORE_RECEIPT_DETAIL_MAX ||
		    store_blocked_in_conv(st, t->user, t->conv, &blocked, &nblocked) != STORE_OK) {
			free(members);
		} else {
			for (i = 0; i < n;) {
				for (k = 0; k < nblocked && blocked[k] != members[i]; k++)
					;
				if (k < nblocked)
					members[i] = members[--n];
				else
					i++;
			}
			presence_typing(t->srv->presence, gen, t->user, t->conv, t->on, members, n);
		}
		free(blocked);
	}
	free(t);
}

static void handle_typing(server_t *srv, gw_conn_t *c, json_t *j)
{
	json_t *on = json_object_get(j, "on");
	chat_conn_t *cc;
	typing_job_t *t;
	int64_t conv, now = clock_mono_ms();

	if (id_from_json(json_object_get(j, "conv"), 1, &conv) < 0 || !json_is_boolean(on)) {
		send_error(c, "bad_request", "typing needs conv and on (true or false)", NULL, 0);
		return;
	}
	if (!(cc = state_of(c, 1)))
		return;
	/* Keystrokes arrive faster than anyone needs to hear of them; the
	 * registry throttles relays, this spares the store the checks. */
	if (json_is_true(on) && cc->typing_conv == conv && now - cc->typing_ms < 1000)
		return;
	cc->typing_conv = json_is_true(on) ? conv : 0;
	cc->typing_ms = now;
	if (charge(srv, c, 3, conv) < 0 || !(t = malloc(sizeof *t)))
		return;
	*t = (typing_job_t){srv, gw_conn_handle(c), gw_conn_user(c), conv, json_is_true(on)};
	/* Typing is a courtesy: dropped under overload. */
	if (workers_submit_flow(srv->workers, FLOW_OF_USER(t->user), typing_job, free, t) < 0)
		free(t);
}

/* ---- dispatch ------------------------------------------------------- */

static void handle_ping(gw_conn_t *c, json_t *j)
{
	json_t *ref = json_object_get(j, "ref");
	char *text = ref ? json_dumps(ref, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
	sbuf_t *f = frames_pong(text);

	free(text);
	gw_conn_send(c, f);
	sbuf_unref(f);
}

void chat_on_text(server_t *srv, gw_conn_t *c, const uint8_t *data, size_t len)
{
	json_error_t err;
	json_t *j = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &err), *type;
	const char *t;

	if (!j || !json_is_object(j)) {
		send_error(c, "bad_request", j ? "a frame must be a JSON object" : "a frame must be valid JSON",
		           NULL, 0);
		json_decref(j);
		return;
	}
	type = json_object_get(j, "type");
	t = json_is_string(type) ? json_string_value(type) : "";
	if (strcmp(t, "send") == 0)
		handle_send(srv, c, j, STORE_MSG_TEXT);
	else if (strcmp(t, "edit") == 0)
		handle_send(srv, c, j, STORE_MSG_EDIT);
	else if (strcmp(t, "delete") == 0)
		handle_send(srv, c, j, STORE_MSG_DELETE);
	else if (strcmp(t, "react") == 0)
		handle_send(srv, c, j, STORE_MSG_REACTION);
	else if (strcmp(t, "receipt") == 0)
		handle_receipt(srv, c, j);
	else if (strcmp(t, "resume") == 0)
		handle_resume(srv, c, j);
	else if (strcmp(t, "ping") == 0)
		handle_ping(c, j);
	else if (strcmp(t, "typing") == 0)
		handle_typing(srv, c, j);
	else if (strcmp(t, "presence") == 0)
		handle_presence(srv, c, j);
	else if (strcmp(t, "watch") == 0)
		handle_watch(srv, c, j);
	else
		send_error(c, "bad_request", "unknown frame type", NULL, 0);
	json_decref(j);
}
