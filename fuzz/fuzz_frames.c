/* fuzz_frames.c - libFuzzer target for the WebSocket frame handlers (send,
 * receipt, resume, ping, typing, presence, watch, and whatever types come
 * next): sequences of text frames sent by alice or bob over a real
 * WebSocket to a real node with a real store, in this process (node.h).
 *
 * Input: a header line, then one text frame per line ('\n' separates
 * frames; empty lines are skipped), at most MAX_FRAMES frames and MAX_INPUT
 * bytes. The header's first byte is 'b' for bob's connection, anything
 * else for alice's; a 'q' anywhere in it puts the token in the query
 * string instead of the Authorization header, an 'f' sends each frame in
 * two fragments, a 'p' also opens the other user's connection and reads
 * what reaches it. Alice is user 1, bob 2, carol 3; alice-bob is
 * conversation 1, the group of the three 2, bob-carol 3 (node.h).
 *
 * Frames that are not UTF-8 are not sent: the codec has its own fuzzer,
 * and they would only close the connection. After the input's frames the
 * harness sends a ping with a ref of its own and reads until its pong: the
 * I/O thread has handled every frame before it. Checked on the way:
 * - every server frame is a typed JSON object; every error frame has a
 *   known code and a message, and never says the store failed;
 * - the node closes neither connection (no frame sent breaks the WebSocket
 *   protocol, so any close, 1011 above all, is a finding);
 * - alice hears nothing of bob-carol but refusals;
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

/* Reads frames until the pong whose ref is barrier (NULL: only what has
 * already arrived). Fails on a close, a timeout, or a bad frame. */
static void read_until(pc_conn_t *c, int who, const char *barrier, const char *what)
{
	for (;;) {
		pc_frame_t f;
		int r = pc_ws_recv(c, &f, barrier ? TIMEOUT_MS : 0);
		json_t *j, *ref;
		int done = 0;

		if (r == PC_TIMEOUT && !barrier)
			return;
		if (r < 0)
			fuzz_fail("%s: %s before the pong", what, r == PC_TIMEOUT ? "no answer" : "connection lost");
		if (fuzz_verbose)
			fprintf(stderr, "  %s <- %d %.*s\n", who == FZ_BOB ? "bob" : "alice", f.opcode,
			        f.len > 400 ? 400 : (int)f.len, (const char *)f.data);
		switch (f.opcode) {
		case 0x1:
			j = fuzz_check_server_frame((const char *)f.data, f.len, what);
			if (who == FZ_ALICE)
				check_alice_frame(j, (const char *)f.data);
			ref = json_object_get(j, "ref");
			done = barrier && strcmp(json_string_value(json_object_get(j, "type")), "pong") == 0 &&
			       json_is_string(ref) && strcmp(json_string_value(ref), barrier) == 0;
			json_decref(j);
			break;
		case 0x8:
			fuzz_fail("%s: the node closed the WebSocket with %d (%.*s)", what,
			          f.len >= 2 ? f.data[0] << 8 | f.data[1] : 1005, f.len > 2 ? (int)f.len - 2 : 0,
			          f.len > 2 ? (const char *)f.data + 2 : "");
		case 0x9:
		case 0xA:
			break; /* the node's keep-alive */
		default:
			fuzz_fail("%s: a frame with opcode %d", what, f.opcode);
		}
		pc_frame_free(&f);
		if (done)
			return;
	}
}

static pc_conn_t *open_ws(int who, int query, const char *what)
{
	pc_conn_t *c = fuzz_connect();
	pc_response_t res;
	char path[128];

	if (query)
		snprintf(path, sizeof path, "/chat/v1/ws?token=%s", fuzz_node.token[who]);
	else
		snprintf(path, sizeof path, "/chat/v1/ws");
	if (pc_ws_open(c, path, query ? NULL : fuzz_node.token[who], &res, TIMEOUT_MS) < 0)
		fuzz_fail("%s: the upgrade failed: %d %s", what, res.status, res.body ? res.body : "");
	return c;
}

static void send_frame(pc_conn_t *c, const char *p, size_t n, int fragment, int who,
                       const char *what)
{
	int r;

	if (fragment && n > 1) {
		r = pc_ws_send_frame(c, 0, 0x1, p, n / 2, 1, 0);
		if (r == 0)
			r = pc_ws_send_frame(c, 1, 0x0, p + n / 2, n - n / 2, 1, 0);
	} else {
		r = pc_ws_send_frame(c, 1, 0x1, p, n, 1, 0);
	}
	if (r < 0) /* the node closed it: say how */
		read_until(c, who, "", what);
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
	const char *in = (const char *)data, *end = in + size, *p, *nl;
	char barrier[64], ping[96];
	int who, other, query, fragment, peer_too, frames = 0;
	pc_conn_t *c, *peer = NULL;

	if (size > MAX_INPUT)
		return 0;
	fuzz_node_next_input();
	nl = memchr(in, '\n', size);
	p = nl ? nl + 1 : end;
	who = size && in[0] == 'b' ? FZ_BOB : FZ_ALICE;
	other = who == FZ_BOB ? FZ_ALICE : FZ_BOB;
	query = memchr(in, 'q', (size_t)(p - in)) != NULL;
	fragment = memchr(in, 'f', (size_t)(p - in)) != NULL;
	peer_too = memchr(in, 'p', (size_t)(p - in)) != NULL;

	c = open_ws(who, query, "upgrade");
	if (peer_too)
		peer = open_ws(other, 0, "the peer's upgrade");
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
			send_frame(c, p, n, fragment, who, "a frame");
			frames++;
		}
		p = nl ? nl + 1 : end;
	}
	snprintf(barrier, sizeof barrier, "fuzz-barrier-%08x-%lu", barrier_nonce, ++barrier_count);
	snprintf(ping, sizeof ping, "{\"type\":\"ping\",\"ref\":\"%s\"}", barrier);
	send_frame(c, ping, strlen(ping), 0, who, "the barrier ping");
	read_until(c, who, barrier, "the input's connection");
	if (peer) {
		send_frame(peer, ping, strlen(ping), 0, other, "the peer's barrier ping");
		read_until(peer, other, barrier, "the peer's connection");
		pc_ws_send_frame(peer, 1, 0x8, "\x03\xe8", 2, 1, 0);
		pc_close(peer);
	}
	/* Whatever else has come (acks, replays) is checked too. */
	read_until(c, who, NULL, "the input's connection");
	pc_ws_send_frame(c, 1, 0x8, "\x03\xe8", 2, 1, 0);
	pc_close(c);
	if (fuzz_node.inputs % CHECK_EVERY == 0) {
		fuzz_check_health();
		fuzz_check_bystander();
	}
	return 0;
}
