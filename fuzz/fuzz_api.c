/* fuzz_api.c - libFuzzer target for the REST handlers (/api/v1/...):
 * sequences of HTTP requests on one keep-alive connection to a real node
 * with a real store, in this process (node.h).
 *
 * Input: requests of two lines each, at most MAX_REQUESTS of them and
 * MAX_INPUT bytes in all. The first line is three selector bytes and a
 * path; the second is the body (empty: none).
 * - byte 0, the method: G GET, P POST, D DELETE, U PUT, X PATCH, O OPTIONS,
 *   any other byte one of the methods[] table;
 * - byte 1, the token: a alice's, n none, m malformed, w well-formed but
 *   wrong, l the latest one a login of this input returned (none before);
 *   any other byte one of these by its value;
 * - byte 2, how it is sent: r raw (lower-case headers, a charset in the
 *   Content-Type, the path as it is), p pipelined with the next request
 *   (both written, then both answers read), c with Connection: close, o
 *   with the Origin of another site, j with Content-Type: text/plain;
 *   anything else through pc_http; but for r, the path's spaces and
 *   control bytes are %-escaped;
 * - the rest, the path: one that does not start with '/' is put after
 *   /api/v1/, so that most of them reach the API.
 * In the path and the body, '$' stands for the latest conversation_id,
 * '@' for the latest user_id, '^' for the latest device_id and '~' for
 * the latest next_cursor an answer of this input named, so that an input
 * can work on a group, an account or a page it got itself whatever the
 * node already holds (before any, they stay as they are).
 * Alice is user 1, bob 2, carol 3; alice-bob is conversation 1, the group
 * of the three 2, bob-carol 3, the group of 299 (alice, bob and users 4
 * to 300) 4, carol-alice 5 (node.h). HEAD is never sent: pclient would
 * wait for the body a HEAD answer does not have.
 *
 * Every answer must be one the protocol knows (node.h: fuzz_check_response:
 * status, error body and code, never 500), and none may show the
 * bystander's conversation, bob-carol, to anyone but bob and carol: no 2xx
 * for a request about it, no entry for it in a list. Conversation objects
 * must be as the protocol says (members ascending, alice among those she
 * is shown, two in a direct chat, a group's admins among its members), and
 * a page of history one conversation's messages, ascending without gaps.
 * Every CHECK_EVERY inputs: /healthz answers, and bob-carol has gained
 * nothing (no request here sends a message). When an input may have
 * logged alice's harness token out, it is checked and replaced. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "node.h"
#include "pclient.h"

#define MAX_INPUT 65536
#define MAX_REQUESTS 16
#define CHECK_EVERY 16
#define TIMEOUT_MS 15000
/* Alice's conversations grow with every group an input makes (the list
 * is paged, so answers do not), and her budget of first contacts is
 * spent within a few hundred inputs; measured, 1,000 and 10,000 inputs
 * between restarts run equally fast (~370/s). A restart costs ~60 ms. */
#define RESTART_EVERY 5000

static const char *const methods[] = {"GET",   "POST",    "DELETE", "PUT",
                                      "PATCH", "OPTIONS", "get",    "BREW"};

enum { TOK_ALICE, TOK_NONE, TOK_MALFORMED, TOK_WRONG, TOK_LATEST, TOK_KINDS };

typedef struct request {
	const char *method;
	int token;
	char mode;
	const char *path, *body; /* in the input; body NULL: none */
	size_t path_len, body_len;
	char *sent_path;         /* as sent (NUL-terminated), once sent */
	char *sent_body;
} request_t;

typedef struct session {
	pc_conn_t *c;
	char latest[64];      /* the latest token a login answered */
	int64_t conv, user, device; /* what '$', '@', '^' stand for; 0: nothing yet */
	char cursor[64];      /* and '~' */
	int token_at_risk;    /* alice's harness token may be gone */
} session_t;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_node_init("fuzz_api", RESTART_EVERY, argc, argv);
	return 0;
}

static const char *method_of(unsigned char b)
{
	switch (b) {
	case 'G': return "GET";
	case 'P': return "POST";
	case 'D': return "DELETE";
	case 'U': return "PUT";
	case 'X': return "PATCH";
	case 'O': return "OPTIONS";
	default: return methods[b % (sizeof methods / sizeof methods[0])];
	}
}

static int token_of(unsigned char b)
{
	switch (b) {
	case 'a': return TOK_ALICE;
	case 'n': return TOK_NONE;
	case 'm': return TOK_MALFORMED;
	case 'w': return TOK_WRONG;
	case 'l': return TOK_LATEST;
	default: return b % TOK_KINDS;
	}
}

/* The token text for a kind, or NULL for none. */
static const char *token_text(const session_t *s, int kind, char wrong[64])
{
	switch (kind) {
	case TOK_ALICE:
		return fuzz_node.token[FZ_ALICE];
	case TOK_MALFORMED:
		return "not a token, with spaces";
	case TOK_WRONG:
		/* Alice's, one character changed: the right shape, no device. */
		snprintf(wrong, 64, "%s", fuzz_node.token[FZ_ALICE]);
		wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
		return wrong;
	case TOK_LATEST:
		return s->latest[0] ? s->latest : NULL;
	default:
		return NULL;
	}
}

/* Appends n bytes of p to out at *o (room for 3 bytes each and 64 for
 * each placeholder): the placeholders replaced, and, when escape is set,
 * spaces and control bytes %-escaped. */
static void expand(const session_t *s, char *out, size_t *o, const char *p, size_t n, int escape)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];
		if ((ch == '$' && s->conv) || (ch == '@' && s->user) || (ch == '^' && s->device))
			*o += (size_t)sprintf(out + *o, "%lld",
			                      (long long)(ch == '$' ? s->conv : ch == '@' ? s->user : s->device));
		else if (ch == '~' && s->cursor[0])
			*o += (size_t)sprintf(out + *o, "%s", s->cursor);
		else if (escape && (ch <= 0x20 || ch >= 0x7f))
			*o += (size_t)sprintf(out + *o, "%%%02X", ch);
		else
			out[(*o)++] = ch ? (char)ch : '0'; /* the request is a C string */
	}
	out[*o] = 0;
}

/* Makes the path and the body as sent: /api/v1/ in front of a path that
 * does not start with '/'; the path escaped unless raw. */
static void make_request(const session_t *s, request_t *r)
{
	size_t o = 0;

	free(r->sent_path);
	free(r->sent_body);
	if (!(r->sent_path = malloc(8 + 64 * r->path_len + 1)))
		abort();
	if (!r->path_len || r->path[0] != '/') {
		memcpy(r->sent_path, "/api/v1/", 8);
		o = 8;
	}
	expand(s, r->sent_path, &o, r->path, r->path_len, r->mode != 'r');
	r->sent_body = NULL;
	if (r->body) {
		o = 0;
		if (!(r->sent_body = malloc(64 * r->body_len + 1)))
			abort();
		expand(s, r->sent_body, &o, r->body, r->body_len, 0);
	}
}

/* Splits the input into requests; returns how many. */
static size_t parse_input(const char *in, size_t size, request_t *rq)
{
	const char *end = in + size, *p = in;
	size_t n = 0;

	while (p < end && n < MAX_REQUESTS) {
		const char *nl = memchr(p, '\n', (size_t)(end - p)), *line_end = nl ? nl : end;
		const char *body, *body_end;
		size_t len = (size_t)(line_end - p);
		request_t *r = &rq[n];

		if (len < 3) { /* too short to hold the selectors */
			p = nl ? nl + 1 : end;
			continue;
		}
		memset(r, 0, sizeof *r);
		r->method = method_of((unsigned char)p[0]);
		r->token = token_of((unsigned char)p[1]);
		r->mode = p[2];
		r->path = p + 3;
		r->path_len = len - 3;
		body = nl ? nl + 1 : end;
		nl = memchr(body, '\n', (size_t)(end - body));
		body_end = nl ? nl : end;
		if (body_end > body) {
			r->body = body;
			r->body_len = (size_t)(body_end - body);
		}
		p = nl ? nl + 1 : end;
		n++;
	}
	return n;
}

/* The request's bytes, as pc_http would write them or in the raw and
 * close variants. */
static char *render(const session_t *s, request_t *r, size_t *len)
{
	char wrong[64], *b;
	const char *tok = token_text(s, r->token, wrong);
	size_t blen, cap;
	int n;

	make_request(s, r);
	blen = r->sent_body ? strlen(r->sent_body) : 0;
	cap = strlen(r->method) + strlen(r->sent_path) + (tok ? strlen(tok) : 0) + blen + 256;
	if (!(b = malloc(cap)))
		abort();
	if (r->mode == 'r')
		n = snprintf(b, cap, "%s %s HTTP/1.1\r\nhost: parley\r\n%s%s%s%scontent-length: %zu\r\n\r\n%s",
		             r->method, r->sent_path, tok ? "authorization: bearer " : "", tok ? tok : "",
		             tok ? "\r\n" : "", blen ? "content-type: application/json; charset=utf-8\r\n" : "",
		             blen, r->sent_body ? r->sent_body : "");
	else
		n = snprintf(b, cap, "%s %s HTTP/1.1\r\nHost: parley\r\n%s%s%s%sContent-Type: %s\r\n"
		             "Content-Length: %zu\r\n\r\n%s",
		             r->method, r->sent_path, tok ? "Authorization: Bearer " : "", tok ? tok : "",
		             tok ? "\r\n" : "",
		             r->mode == 'c'   ? "Connection: close\r\n"
		             : r->mode == 'o' ? "Origin: https://elsewhere.example\r\n"
		                              : "",
		             r->mode == 'j' ? "text/plain" : "application/json", blen,
		             r->sent_body ? r->sent_body : "");
	*len = (size_t)n;
	return b;
}

/* The conversation a path of the API names, or 0. */
static int64_t path_conv(const char *path)
{
	static const char prefix[] = "/api/v1/conversations/";
	const char *p;
	int64_t id = 0;

	if (strncmp(path, prefix, sizeof prefix - 1) != 0)
		return 0;
	for (p = path + sizeof prefix - 1; *p >= '0' && *p <= '9' && id < (INT64_C(1) << 53); p++)
		id = id * 10 + (*p - '0');
	return *p == 0 || *p == '/' || *p == '?' ? id : 0;
}

/* A conversation object as the protocol describes it: members ascending,
 * the caller among them; a direct chat has two, a group its admins among
 * them. caller 0: unknown. */
static void check_conversation(json_t *c, int64_t caller, const char *what)
{
	json_t *members = json_object_get(c, "members"), *admins = json_object_get(c, "admins"), *v;
	const char *kind = json_string_value(json_object_get(c, "kind"));
	int64_t prev = 0;
	size_t i, k;
	int has_caller = 0;

	if (!json_is_integer(json_object_get(c, "conversation_id")) || !kind || !json_is_array(members))
		fuzz_fail("%s: a conversation without conversation_id, kind or members", what);
	json_array_foreach(members, i, v) {
		if (!json_is_integer(v) || json_integer_value(v) <= prev)
			fuzz_fail("%s: members not ascending", what);
		prev = json_integer_value(v);
		has_caller |= prev == caller;
	}
	if (caller && !has_caller)
		fuzz_fail("%s: the caller is not among the members", what);
	if (strcmp(kind, "direct") == 0) {
		if (json_array_size(members) != 2 || admins)
			fuzz_fail("%s: a direct conversation of %zu members%s", what, json_array_size(members),
			          admins ? ", with admins" : "");
	} else if (strcmp(kind, "group") == 0) {
		if (!json_is_array(admins) || json_array_size(admins) == 0)
			fuzz_fail("%s: a group without admins", what);
		json_array_foreach(admins, i, v) {
			for (k = 0; k < json_array_size(members); k++)
				if (json_equal(v, json_array_get(members, k)))
					break;
			if (k == json_array_size(members))
				fuzz_fail("%s: an admin who is not a member", what);
		}
	} else {
		fuzz_fail("%s: kind \"%s\"", what, kind);
	}
}

/* A page of history: one conversation's, ascending, without gaps. */
static void check_history(json_t *msgs, int64_t conv, const char *what)
{
	json_t *m;
	int64_t prev = 0;
	size_t i;

	json_array_foreach(msgs, i, m) {
		json_t *c = json_object_get(m, "conv"), *seq = json_object_get(m, "seq");
		if (!json_is_integer(c) || json_integer_value(c) != conv || !json_is_integer(seq) ||
		    (i && json_integer_value(seq) != prev + 1))
			fuzz_fail("%s: message %zu is out of place", what, i);
		prev = json_integer_value(seq);
	}
}

/* What the answer may not show, and what it changes for the harness. */
static void check_answer(session_t *s, const request_t *r, const pc_response_t *res)
{
	char what[160];
	json_t *j, *list, *e;
	int64_t caller;
	size_t i;

	snprintf(what, sizeof what, "%s %.100s (token %d, mode '%c')", r->method, r->sent_path,
	         r->token, r->mode);
	if (fuzz_verbose)
		fprintf(stderr, "%s\n  %.300s\n  <- %d %.300s\n", what, r->sent_body ? r->sent_body : "",
		        res->status, res->body);
	fuzz_check_response(res, what);
	if (res->status / 100 != 2)
		return;
	if (path_conv(r->sent_path) == fuzz_node.conv_bc)
		fuzz_fail("%s: %d for the bystander's conversation: %.300s", what, res->status, res->body);
	/* A logout (of this device or another), or a login that may push the
	 * oldest device out. */
	if (!strcmp(r->method, "DELETE") ||
	    (!strcmp(r->method, "POST") && strstr(r->sent_path, "session")))
		s->token_at_risk = 1;
	if (!res->body_len || !(j = json_loadb(res->body, res->body_len, 0, NULL)))
		return;
	if (res->status == 201 && json_is_string(json_object_get(j, "token")) &&
	    strlen(json_string_value(json_object_get(j, "token"))) < sizeof s->latest)
		strcpy(s->latest, json_string_value(json_object_get(j, "token")));
	if (json_is_integer(json_object_get(j, "user_id")))
		s->user = json_integer_value(json_object_get(j, "user_id"));
	if (json_is_integer(json_object_get(j, "conversation_id")))
		s->conv = json_integer_value(json_object_get(j, "conversation_id"));
	if (json_is_integer(json_object_get(j, "device_id")))
		s->device = json_integer_value(json_object_get(j, "device_id"));
	if (json_is_string(json_object_get(j, "next_cursor")) &&
	    strlen(json_string_value(json_object_get(j, "next_cursor"))) < sizeof s->cursor)
		strcpy(s->cursor, json_string_value(json_object_get(j, "next_cursor")));
	caller = r->token == TOK_ALICE ? fuzz_node.user[FZ_ALICE] : 0;
	list = json_object_get(j, "conversations");
	json_array_foreach(list, i, e) {
		json_t *id = json_object_get(e, "conversation_id");
		if (json_is_integer(id) && json_integer_value(id) == fuzz_node.conv_bc)
			fuzz_fail("%s: the list shows the bystander's conversation: %.300s", what, res->body);
		check_conversation(e, caller, what);
	}
	if (json_is_integer(json_object_get(j, "conversation_id"))) {
		if (json_integer_value(json_object_get(j, "conversation_id")) == fuzz_node.conv_bc)
			fuzz_fail("%s: the answer shows the bystander's conversation: %.300s", what, res->body);
		check_conversation(j, caller, what);
	}
	if (json_is_array(json_object_get(j, "messages")))
		check_history(json_object_get(j, "messages"), path_conv(r->sent_path), what);
	json_decref(j);
}

/* Reads one answer; reopens the connection after one that closes it. A
 * well-formed request that gets no answer is a finding; a raw one may be
 * malformed, and then the node may close without one. */
static int read_answer(session_t *s, const request_t *r)
{
	pc_response_t res;
	char v[32];
	int rc = pc_read_response(s->c, &res, TIMEOUT_MS);

	if (rc < 0) {
		if (rc == PC_TIMEOUT || r->mode != 'r')
			fuzz_fail("%s %.100s: %s", r->method, r->sent_path,
			          rc == PC_TIMEOUT ? "no answer" : "closed unanswered");
		pc_close(s->c);
		s->c = fuzz_connect();
		return -1;
	}
	check_answer(s, r, &res);
	if (pc_response_header(&res, "connection", v, sizeof v) > 0 && strcmp(v, "close") == 0) {
		pc_response_free(&res);
		pc_close(s->c);
		s->c = fuzz_connect();
		return -1;
	}
	pc_response_free(&res);
	return 0;
}

static void send_bytes(session_t *s, const char *b, size_t n)
{
	if (pc_send_raw(s->c, b, n) < 0)
		fuzz_fail("the node closed a keep-alive connection between answers");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	request_t rq[MAX_REQUESTS];
	session_t s = {0};
	size_t n, i;

	if (size > MAX_INPUT)
		return 0;
	fuzz_node_next_input();
	n = parse_input((const char *)data, size, rq);
	s.c = fuzz_connect();
	for (i = 0; i < n; i++) {
		request_t *r = &rq[i];
		char wrong[64];
		pc_response_t res;
		int rc;

		if (r->mode == 'p' && i + 1 < n) {
			/* Both requests in one write, then both answers. */
			size_t l1, l2;
			char *b1 = render(&s, r, &l1), *b2 = render(&s, &rq[i + 1], &l2), *both = malloc(l1 + l2);
			if (!both)
				abort();
			memcpy(both, b1, l1);
			memcpy(both + l1, b2, l2);
			send_bytes(&s, both, l1 + l2);
			free(b1);
			free(b2);
			free(both);
			if (read_answer(&s, r) == 0)
				read_answer(&s, &rq[i + 1]);
			i++;
		} else if (r->mode && strchr("rcpoj", r->mode)) {
			size_t l;
			char *b = render(&s, r, &l);
			send_bytes(&s, b, l);
			free(b);
			read_answer(&s, r);
		} else {
			make_request(&s, r);
			rc = pc_http(s.c, r->method, r->sent_path, token_text(&s, r->token, wrong), r->sent_body,
			             &res, TIMEOUT_MS);
			if (rc < 0)
				fuzz_fail("%s %.100s: %s", r->method, r->sent_path,
				          rc == PC_TIMEOUT ? "no answer" : "the connection was lost");
			check_answer(&s, r, &res);
			{
				char v[32];
				if (pc_response_header(&res, "connection", v, sizeof v) > 0 && strcmp(v, "close") == 0) {
					pc_close(s.c);
					s.c = fuzz_connect();
				}
			}
			pc_response_free(&res);
		}
	}
	pc_close(s.c);
	for (i = 0; i < n; i++) {
		free(rq[i].sent_path);
		free(rq[i].sent_body);
	}
	if (s.token_at_risk)
		fuzz_refresh_token(FZ_ALICE);
	if (fuzz_node.inputs % CHECK_EVERY == 0) {
		fuzz_check_health();
		fuzz_check_bystander();
	}
	return 0;
}
