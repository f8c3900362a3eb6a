/* fuzz_frames.c - libFuzzer target for the WebSocket frame handlers (send,
 * receipt, resume, ping, typing, presence, watch, and whatever types come
 * next): sequences of text frames sent by alice or bob over a real
 * WebSocket to a real node with a real store, in this process (node.h).
 *
 * Input: a header line, then one text frame per line ('\n' separates
 * frames; empty lines are skipped), at most MAX_FRAMES frames and MAX_INPUT
 * bytes. The header's first byte is 'b' for bob's connection, anything
 * else for alice's; a 'q' anywhere in it puts the token in the query
 * string instead of the Authorization header, a 't' (without a 'q') opens
 * it with a ticket (POST /api/v1/ws-tickets), an 'f' sends each frame in
 * two fragments, a 'p' also opens the other user's connection and reads
 * what reaches it. Alice is user 1, bob 2, carol 3; alice-bob is
 * conversation 1, the group of the three 2, bob-carol 3, the group of 299
 * (alice, bob and users 4 to 300) 4, carol-alice 5 (node.h).
 *
 * Frames that are not UTF-8 are not sent: the codec has its own fuzzer,
 * and they would only close the connection. After the input's frames the
 * harness sends a ping with a ref of its own and reads until its pong: the
 * I/O thread has handled every frame before it. When the input may have
 * given the writer work, a send of the harness's own follows (always the
 * same cmid to alice-bob, so stored once) and the harness reads until its
 * ack: the writer takes ops in order, so the input's are done and their
 * acks, and a direct chat's msgs to the peer, are out. Checked on the way:
 * - every server frame is a typed JSON object; every error frame has a
 *   known code and a message, and never says the store failed;
 * - the node closes neither connection (no frame sent breaks the WebSocket
 *   protocol, so any close, 1011 above all, is a finding);
 * - alice hears nothing of bob-carol but refusals;
 * - acks and the other user's msgs agree: one (conv, cmid) is one (id,
 *   seq), one (conv, seq) one message;
 * - live msgs come in increasing seq per conversation, never twice, never
 *   to the device that sent them (checked on a connection that sent no
 *   resume, since a replay may repeat and reorder); no typing frame comes
 *   from the connection's own user;
 * and every CHECK_EVERY inputs: /healthz answers, and bob-carol holds only
 * messages from bob and carol, no more than were sent to it (node.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "node.h"
#include "pclient.h"
#include "utf8.h"

#define MAX_INPUT 65536
#define MAX_FRAMES 64
#define WRITER_BARRIER "fuzz-writer-barrier"
#define CHECK_EVERY 16
#define TIMEOUT_MS 15000
/* Frames add messages, never conversations: executions slow by about a
 * tenth over 80,000 inputs (470 to 420 a second); a restart costs ~60 ms. */
#define RESTART_EVERY 20000

static unsigned long barrier_count;
static unsigned barrier_nonce;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_node_init("fuzz_frames", RESTART_EVERY, argc, argv);
	barrier_nonce = (unsigned)getpid() * 2654435761u;
	return 0;
}

/* What one input's connections have seen, for the checks across frames. */
#define SEEN_MAX 512

typedef struct stored {
	int64_t conv, seq, from;
	char id[24], cmid[72];
} stored_t;

typedef struct seen {
	stored_t stored[SEEN_MAX];  /* acks of the input's sends, and msgs of them */
	size_t nstored;
} seen_t;

typedef struct ws {
	pc_conn_t *c;
	int who;
	int live_only;   /* no resume was sent: every msg is a live one */
	const char *name;
	seen_t *seen;    /* shared by the input's connections */
	struct {
		int64_t conv, seq;
	} last[SEEN_MAX]; /* per conversation, the last msg */
	size_t nlast;
} ws_t;

/* Alice is in neither bob-carol nor anything about it, refusals aside. */
static void check_alice_frame(json_t *j, const char *text)
{
	const char *type = json_string_value(json_object_get(j, "type"));
	json_t *conv = json_object_get(j, "conv"), *heads;
	char key[24];

	if (strcmp(type, "error") == 0)
		return;
	if (json_is_integer(conv) && json_integer_value(conv) == fuzz_node.conv_bc)
		fuzz_fail("alice got a frame about bob-carol: %.300s", text);
	snprintf(key, sizeof key, "%lld", (long long)fuzz_node.conv_bc);
	if (strcmp(type, "resumed") == 0 && (heads = json_object_get(j, "heads")) &&
	    json_object_get(heads, key))
		fuzz_fail("alice's resumed names bob-carol: %.300s", text);
}

/* One stored message as an ack or a msg names it: the same (conv, from,
 * cmid) always has the same id and seq (an idempotent send), and one
 * (conv, seq) is one message. from: the sender (an ack's: the
 * connection's user). */
static void check_stored(seen_t *sn, int64_t from, json_t *j, const char *text)
{
	json_t *conv = json_object_get(j, "conv"), *seq = json_object_get(j, "seq");
	const char *id = json_string_value(json_object_get(j, "id"));
	const char *cmid = json_string_value(json_object_get(j, "cmid"));
	stored_t *st;
	size_t i;

	if (!json_is_integer(conv) || !json_is_integer(seq) || json_integer_value(seq) < 1 || !id ||
	    !*id || strspn(id, "0123456789") != strlen(id) || strlen(id) >= sizeof st->id || !cmid ||
	    strlen(cmid) >= sizeof st->cmid)
		fuzz_fail("a malformed %s", text);
	for (i = 0; i < sn->nstored; i++) {
		st = &sn->stored[i];
		if (st->conv != json_integer_value(conv))
			continue;
		if ((st->seq == json_integer_value(seq)) != (st->from == from && strcmp(st->cmid, cmid) == 0) ||
		    (st->seq == json_integer_value(seq) && strcmp(st->id, id) != 0))
			fuzz_fail("%s disagrees with seq %lld, id %s, cmid \"%s\" seen before", text,
			          (long long)st->seq, st->id, st->cmid);
		if (st->seq == json_integer_value(seq))
			return;
	}
	if (sn->nstored == SEEN_MAX)
		return;
	st = &sn->stored[sn->nstored++];
	st->conv = json_integer_value(conv);
	st->seq = json_integer_value(seq);
	st->from = from;
	strcpy(st->id, id);
	strcpy(st->cmid, cmid);
}

/* Live messages: never the connection's own device's, and in increasing
 * seq per conversation, never twice (protocol rules 3 and 6). */
static void check_live(ws_t *w, json_t *j, const char *text)
{
	json_t *conv = json_object_get(j, "conv"), *seq = json_object_get(j, "seq");
	json_t *from = json_object_get(j, "from");
	size_t i;

	if (!json_is_integer(conv) || !json_is_integer(seq) || !json_is_integer(from))
		fuzz_fail("%s: a malformed msg: %.300s", w->name, text);
	if (json_integer_value(from) == fuzz_node.user[w->who])
		fuzz_fail("%s: its own message came back live: %.300s", w->name, text);
	for (i = 0; i < w->nlast; i++)
		if (w->last[i].conv == json_integer_value(conv)) {
			if (json_integer_value(seq) <= w->last[i].seq)
				fuzz_fail("%s: seq %lld of conversation %lld after seq %lld: %.300s", w->name,
				          (long long)json_integer_value(seq), (long long)w->last[i].conv,
				          (long long)w->last[i].seq, text);
			w->last[i].seq = json_integer_value(seq);
			return;
		}
	if (w->nlast < SEEN_MAX) {
		w->last[w->nlast].conv = json_integer_value(conv);
		w->last[w->nlast++].seq = json_integer_value(seq);
	}
}

/* The checks of one text frame from the node. */
static int check_frame(ws_t *w, const char *text, size_t len, const char *barrier)
{
	json_t *j = fuzz_check_server_frame(text, len, w->name), *ref, *user;
	const char *type = json_string_value(json_object_get(j, "type"));
	int done;

	if (w->who == FZ_ALICE)
		check_alice_frame(j, text);
	if (strcmp(type, "ack") == 0)
		check_stored(w->seen, fuzz_node.user[w->who], j, text);
	if (strcmp(type, "msg") == 0) {
		json_t *from = json_object_get(j, "from");
		if (json_is_integer(from))
			check_stored(w->seen, json_integer_value(from), j, text);
		if (w->live_only)
			check_live(w, j, text);
	}
	user = json_object_get(j, "user");
	if (strcmp(type, "typing") == 0 && (!json_is_integer(user) ||
	                                    json_integer_value(user) == fuzz_node.user[w->who]))
		fuzz_fail("%s: typing from itself: %.300s", w->name, text);
	/* The barrier: the pong of a ping, or the answer to a send, that
	 * carries it. */
	ref = json_object_get(j, strcmp(type, "ack") == 0 ? "cmid" : "ref");
	done = barrier &&
	       (strcmp(type, "pong") == 0 || strcmp(type, "ack") == 0 || strcmp(type, "error") == 0) &&
	       json_is_string(ref) && strcmp(json_string_value(ref), barrier) == 0;
	json_decref(j);
	return done;
}

/* Reads frames until the pong, ack or error whose ref (cmid) is barrier
 * (NULL: only what has already arrived). Fails on a close, a timeout, or
 * a bad frame. */
static void read_until(ws_t *w, const char *barrier)
{
	for (;;) {
		pc_frame_t f;
		int r = pc_ws_recv(w->c, &f, barrier ? TIMEOUT_MS : 0);
		int done = 0;

		if (r == PC_TIMEOUT && !barrier)
			return;
		if (r < 0)
			fuzz_fail("%s: %s before the pong", w->name, r == PC_TIMEOUT ? "no answer" : "connection lost");
		if (fuzz_verbose)
			fprintf(stderr, "  %s <- %d %.*s\n", w->who == FZ_BOB ? "bob" : "alice", f.opcode,
			        f.len > 400 ? 400 : (int)f.len, (const char *)f.data);
		switch (f.opcode) {
		case 0x1:
			done = check_frame(w, (const char *)f.data, f.len, barrier);
			break;
		case 0x8:
			fuzz_fail("%s: the node closed the WebSocket with %d (%.*s)", w->name,
			          f.len >= 2 ? f.data[0] << 8 | f.data[1] : 1005, f.len > 2 ? (int)f.len - 2 : 0,
			          f.len > 2 ? (const char *)f.data + 2 : "");
		case 0x9:
		case 0xA:
			break; /* the node's keep-alive */
		default:
			fuzz_fail("%s: a frame with opcode %d", w->name, f.opcode);
		}
		pc_frame_free(&f);
		if (done)
			return;
	}
}

/* How the upgrade names the user. */
enum { AUTH_HEADER, AUTH_QUERY, AUTH_TICKET };

static void open_ws(ws_t *w, int who, int auth, const char *name, seen_t *sn)
{
	pc_response_t res;
	char path[256], ticket[128];

	w->c = fuzz_connect();
	w->who = who;
	w->name = name;
	w->seen = sn;
	w->live_only = 1;
	w->nlast = 0;
	if (auth == AUTH_QUERY) {
		snprintf(path, sizeof path, "/chat/v1/ws?token=%s", fuzz_node.token[who]);
	} else if (auth == AUTH_TICKET) {
		fuzz_ticket(who, ticket, sizeof ticket);
		snprintf(path, sizeof path, "/chat/v1/ws?ticket=%s", ticket);
	} else {
		snprintf(path, sizeof path, "/chat/v1/ws");
	}
	if (pc_ws_open(w->c, path, auth == AUTH_HEADER ? fuzz_node.token[who] : NULL, &res,
	               TIMEOUT_MS) < 0)
		fuzz_fail("%s: the upgrade failed: %d %s", name, res.status, res.body ? res.body : "");
}

static void send_frame(ws_t *w, const char *p, size_t n, int fragment)
{
	int r;

	if (fragment && n > 1) {
		r = pc_ws_send_frame(w->c, 0, 0x1, p, n / 2, 1, 0);
		if (r == 0)
			r = pc_ws_send_frame(w->c, 1, 0x0, p + n / 2, n - n / 2, 1, 0);
	} else {
		r = pc_ws_send_frame(w->c, 1, 0x1, p, n, 1, 0);
	}
	if (r < 0) /* the node closed it: say how */
		read_until(w, "");
}

static void close_ws(ws_t *w)
{
	pc_ws_send_frame(w->c, 1, 0x8, "\x03\xe8", 2, 1, 0);
	pc_close(w->c);
}

/* Bob's sends to bob-carol bound what it may hold. */
static void count_bob_send(const char *p, size_t n)
{
	json_t *j = json_loadb(p, n, 0, NULL), *conv;
	const char *type = json_string_value(json_object_get(j, "type"));

	conv = json_object_get(j, "conv");
	if (type && strcmp(type, "send") == 0 && json_is_integer(conv) &&
	    json_integer_value(conv) == fuzz_node.conv_bc)
		fuzz_node.bc_sends++;
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static seen_t seen;
	static ws_t w, peer; /* large: not on the stack */
	const char *in = (const char *)data, *end = in + size, *p, *nl;
	char barrier[64], ping[96];
	int who, auth, fragment, peer_too, frames = 0;

	if (size > MAX_INPUT)
		return 0;
	fuzz_node_next_input();
	seen.nstored = 0;
	nl = memchr(in, '\n', size);
	p = nl ? nl + 1 : end;
	who = size && in[0] == 'b' ? FZ_BOB : FZ_ALICE;
	auth = memchr(in, 'q', (size_t)(p - in)) ? AUTH_QUERY
	       : memchr(in, 't', (size_t)(p - in)) ? AUTH_TICKET : AUTH_HEADER;
	fragment = memchr(in, 'f', (size_t)(p - in)) != NULL;
	peer_too = memchr(in, 'p', (size_t)(p - in)) != NULL;

	open_ws(&w, who, auth, "the input's connection", &seen);
	/* A replay may repeat and reorder what came live. */
	w.live_only = !memmem(p, (size_t)(end - p), "resume", 6);
	if (peer_too)
		open_ws(&peer, who == FZ_BOB ? FZ_ALICE : FZ_BOB, AUTH_HEADER, "the peer's connection", &seen);
	while (p < end && frames < MAX_FRAMES) {
		size_t n;
		nl = memchr(p, '\n', (size_t)(end - p));
		n = (size_t)((nl ? nl : end) - p);
		if (n && utf8_validate(UTF8_ACCEPT, p, n) == UTF8_ACCEPT) {
			if (who == FZ_BOB)
				count_bob_send(p, n);
			if (fuzz_verbose)
				fprintf(stderr, "%s -> %.*s\n", who == FZ_BOB ? "bob" : "alice",
				        n > 400 ? 400 : (int)n, p);
			send_frame(&w, p, n, fragment);
			frames++;
		}
		p = nl ? nl + 1 : end;
	}
	snprintf(barrier, sizeof barrier, "fuzz-barrier-%08x-%lu", barrier_nonce, ++barrier_count);
	snprintf(ping, sizeof ping, "{\"type\":\"ping\",\"ref\":\"%s\"}", barrier);
	send_frame(&w, ping, strlen(ping), 0);
	read_until(&w, barrier);
	if (memmem(in, size, "send", 4) || memmem(in, size, "receipt", 7)) {
		/* The writer takes ops in order: once a send after the input's
		 * is answered, theirs are too, and a direct chat's msgs have
		 * gone to the peer. The same cmid every time: stored once,
		 * then only acknowledged again. */
		static const char wb[] = "{\"type\":\"send\",\"conv\":1,\"cmid\":\"" WRITER_BARRIER
		                         "\",\"body\":\"barrier\"}";
		send_frame(&w, wb, sizeof wb - 1, 0);
		read_until(&w, WRITER_BARRIER);
	}
	if (peer_too) {
		send_frame(&peer, ping, strlen(ping), 0);
		read_until(&peer, barrier);
		close_ws(&peer);
	}
	/* Whatever else has come (acks, replays) is checked too. */
	read_until(&w, NULL);
	close_ws(&w);
	if (fuzz_node.inputs % CHECK_EVERY == 0) {
		fuzz_check_health();
		fuzz_check_bystander();
	}
	return 0;
}
