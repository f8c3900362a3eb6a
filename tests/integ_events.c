/* integ_events.c - edits, deletes, reactions and replies (docs/protocol.md,
 * "Edits, deletes, reactions and replies"), against the real binary on
 * the store the run names ($PARLEY_TEST_STORE): each is acked and reaches
 * the other members live as a "msg" with the next seq, a repeat of its
 * cmid is answered with the same ack and stores nothing; history, resume
 * and search give the state the events left (new text found, deleted text
 * gone); and every refusal (someone else's message, past the window, a
 * deleted target, an event as a target, a message a member never saw, a
 * malformed frame) gets its clear error and changes nothing. */
#include "harness.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Long enough for the tests that edit at once; test_edit_window waits it
 * out. */
#define EDIT_WINDOW_S 3

static hx_server_t S;
static int last_status;

static int setup(void **state)
{
	(void)state;
	HX_START(&S, "--fast-password-hashing", "--edit-window", "3");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	hx_finish(&S);
	return 0;
}

/* Sends a frame (printf-style) whose cmid is cmid and returns what
 * answers it: its ack, or the error naming it. */
static json_t *askv(pc_conn_t *c, const char *cmid, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
static json_t *askv(pc_conn_t *c, const char *cmid, const char *fmt, va_list ap)
{
	char frame[2048];

	vsnprintf(frame, sizeof frame, fmt, ap);
	hx_sendf(c, "%s", frame);
	for (;;) {
		json_t *j = hx_recv(c);
		const char *t = hx_str(j, "type");
		json_t *ref = json_object_get(j, strcmp(t, "ack") == 0 ? "cmid" : "ref");
		if ((!strcmp(t, "ack") || !strcmp(t, "error")) && json_is_string(ref) &&
		    !strcmp(json_string_value(ref), cmid))
			return j;
		json_decref(j);
	}
}

static json_t *ask(pc_conn_t *c, const char *cmid, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static json_t *ask(pc_conn_t *c, const char *cmid, const char *fmt, ...)
{
	va_list ap;
	json_t *j;

	va_start(ap, fmt);
	j = askv(c, cmid, fmt, ap);
	va_end(ap);
	return j;
}

/* ask, which must be acked: the ack's seq. */
static int64_t acked(pc_conn_t *c, const char *cmid, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int64_t acked(pc_conn_t *c, const char *cmid, const char *fmt, ...)
{
	va_list ap;
	json_t *j;
	int64_t seq;

	va_start(ap, fmt);
	j = askv(c, cmid, fmt, ap);
	va_end(ap);
	if (strcmp(hx_str(j, "type"), "ack") != 0)
		fail_msg("%s was refused: %s", cmid, json_dumps(j, JSON_COMPACT));
	seq = hx_int(j, "seq");
	json_decref(j);
	return seq;
}

/* ask, which must be refused with code, its message containing says. */
static void refused(json_t *j, const char *code, const char *says)
{
	if (strcmp(hx_str(j, "type"), "error") != 0)
		fail_msg("expected a refusal, got %s", json_dumps(j, JSON_COMPACT));
	assert_string_equal(hx_str(j, "code"), code);
	if (says && !strstr(hx_str(j, "message"), says))
		fail_msg("\"%s\" does not say \"%s\"", hx_str(j, "message"), says);
	json_decref(j);
}

/* The next msg on c, which must have seq. */
static json_t *next_msg(pc_conn_t *c, int64_t seq)
{
	json_t *m = hx_next_msg(c, 5000);

	if (!m)
		fail_msg("no msg %lld came", (long long)seq);
	assert_int_equal(hx_int(m, "seq"), seq);
	return m;
}

/* The history of conv for u, newest page, as a JSON array (owned by the
 * returned object). */
static json_t *history(const hx_user_t *u, int64_t conv)
{
	char path[128];
	json_t *j;

	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?limit=200", (long long)conv);
	j = hx_http(S.port, "GET", path, u->token, NULL, &last_status);
	assert_int_equal(last_status, 200);
	return j;
}

/* The message at seq in a history answer. */
static json_t *at(json_t *h, int64_t seq)
{
	json_t *ms = json_object_get(h, "messages"), *m;
	size_t i;

	json_array_foreach(ms, i, m) {
		if (hx_int(m, "seq") == seq)
			return m;
	}
	fail_msg("no message %lld in the history", (long long)seq);
	return NULL;
}

static size_t found(const hx_user_t *u, const char *word)
{
	char path[128];
	json_t *j;
	size_t n;

	snprintf(path, sizeof path, "/api/v1/search?q=%s", word);
	j = hx_http(S.port, "GET", path, u->token, NULL, &last_status);
	assert_int_equal(last_status, 200);
	n = json_array_size(json_object_get(j, "results"));
	json_decref(j);
	return n;
}

static void test_edit(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	int64_t conv, s1, s2, again;
	json_t *m, *h;

	(void)state;
	hx_user(S.port, "ea", &a);
	hx_user(S.port, "eb", &b);
	conv = hx_direct(S.port, &a, &b);
	ca = hx_ws(S.port, &a);
	cb = hx_ws(S.port, &b);
	s1 = hx_say(ca, conv, "see you at the aquarium");
	json_decref(next_msg(cb, s1));
	s2 = acked(ca, "fix-1", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"fix-1\",\"seq\":%lld,"
	           "\"body\":\"see you at the planetarium\"}", (long long)conv, (long long)s1);
	assert_int_equal(s2, s1 + 1);
	/* Live: the event, with the next seq. */
	m = next_msg(cb, s2);
	assert_string_equal(hx_str(m, "kind"), "edit");
	assert_int_equal(hx_int(m, "target"), s1);
	assert_int_equal(hx_int(m, "from"), a.id);
	assert_string_equal(hx_str(m, "body"), "see you at the planetarium");
	json_decref(m);
	/* The same cmid again: the same ack, nothing new. */
	again = acked(ca, "fix-1", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"fix-1\",\"seq\":%lld,"
	              "\"body\":\"see you at the planetarium\"}", (long long)conv, (long long)s1);
	assert_int_equal(again, s2);
	assert_null(hx_recv_within(cb, 300));
	/* History: the message as it is now, marked edited; the event too. */
	h = history(&b, conv);
	m = at(h, s1);
	assert_string_equal(hx_str(m, "body"), "see you at the planetarium");
	assert_true(hx_int(m, "edited_at") > 0);
	assert_int_equal(hx_int(m, "state_seq"), s2);
	assert_null(json_object_get(m, "kind"));
	assert_string_equal(hx_str(at(h, s2), "kind"), "edit");
	json_decref(h);
	/* Search finds the new words, not the old. */
	assert_int_equal(found(&b, "planetarium"), 1);
	assert_int_equal(found(&b, "aquarium"), 0);
	/* The conversation's last message is the message, not the event. */
	{
		char path[96];
		json_t *c;
		snprintf(path, sizeof path, "/api/v1/conversations/%lld", (long long)conv);
		c = hx_http(S.port, "GET", path, b.token, NULL, &last_status);
		assert_int_equal(last_status, 200);
		assert_int_equal(hx_int(json_object_get(c, "last_message"), "seq"), s1);
		assert_int_equal(hx_int(c, "unread"), 1); /* the event is not unread */
		json_decref(c);
	}
	pc_close(ca);
	pc_close(cb);
}

static void test_edit_refused(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	int64_t conv, s1, e;
	json_t *h;

	(void)state;
	hx_user(S.port, "xa", &a);
	hx_user(S.port, "xb", &b);
	conv = hx_direct(S.port, &a, &b);
	ca = hx_ws(S.port, &a);
	cb = hx_ws(S.port, &b);
	s1 = hx_say(ca, conv, "original words");
	/* Not one's own. */
	refused(ask(cb, "x1", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"x1\",\"seq\":%lld,\"body\":\"mine now\"}",
	            (long long)conv, (long long)s1), "forbidden", "author");
	/* No such message; an event is no target. */
	refused(ask(ca, "x2", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"x2\",\"seq\":999,\"body\":\"x\"}",
	            (long long)conv), "not_found", NULL);
	e = acked(ca, "x3", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"x3\",\"seq\":%lld,\"body\":\"changed words\"}",
	          (long long)conv, (long long)s1);
	refused(ask(ca, "x4", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"x4\",\"seq\":%lld,\"body\":\"x\"}",
	            (long long)conv, (long long)e), "not_found", NULL);
	/* Malformed. */
	refused(ask(ca, "x5", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"x5\",\"body\":\"x\"}", (long long)conv),
	        "bad_request", "seq");
	refused(ask(ca, "x6", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"x6\",\"seq\":%lld,\"body\":\"\"}",
	            (long long)conv, (long long)s1), "bad_request", "body");
	refused(ask(ca, "x7", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"x7\",\"seq\":\"1\",\"body\":\"x\"}",
	            (long long)conv), "bad_request", "seq");
	/* Past the window. */
	sleep(EDIT_WINDOW_S + 1);
	refused(ask(ca, "x8", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"x8\",\"seq\":%lld,\"body\":\"late\"}",
	            (long long)conv, (long long)s1), "forbidden", "window");
	/* Nothing of it changed anything. */
	h = history(&a, conv);
	assert_int_equal(json_array_size(json_object_get(h, "messages")), 2);
	assert_string_equal(hx_str(at(h, s1), "body"), "changed words");
	json_decref(h);
	pc_close(ca);
	pc_close(cb);
}

static void test_delete(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	int64_t conv, s1, s2, d, r;
	json_t *m, *h;

	(void)state;
	hx_user(S.port, "da", &a);
	hx_user(S.port, "db", &b);
	conv = hx_direct(S.port, &a, &b);
	ca = hx_ws(S.port, &a);
	cb = hx_ws(S.port, &b);
	s1 = hx_say(ca, conv, "a secret rhubarb recipe");
	s2 = acked(ca, "d0", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"d0\",\"seq\":%lld,"
	           "\"body\":\"a secret rhubarb crumble\"}", (long long)conv, (long long)s1);
	r = acked(cb, "d1", "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"d1\",\"seq\":%lld,\"emoji\":\"\\ud83d\\ude0b\"}",
	          (long long)conv, (long long)s1);
	/* Someone else's, in a direct chat: refused. */
	refused(ask(cb, "d2", "{\"type\":\"delete\",\"conv\":%lld,\"cmid\":\"d2\",\"seq\":%lld}", (long long)conv,
	            (long long)s1), "forbidden", "author");
	d = acked(ca, "d3", "{\"type\":\"delete\",\"conv\":%lld,\"cmid\":\"d3\",\"seq\":%lld}", (long long)conv,
	          (long long)s1);
	assert_int_equal(d, r + 1);
	/* (bob's asks passed over the frames before it) */
	m = next_msg(cb, d);
	assert_string_equal(hx_str(m, "kind"), "delete");
	assert_int_equal(hx_int(m, "target"), s1);
	assert_string_equal(hx_str(m, "body"), "");
	json_decref(m);
	/* Nothing more may happen to it. */
	refused(ask(ca, "d4", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"d4\",\"seq\":%lld,\"body\":\"back\"}",
	            (long long)conv, (long long)s1), "conflict", "deleted");
	refused(ask(cb, "d5", "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"d5\",\"seq\":%lld,\"emoji\":\"\\u2764\"}",
	            (long long)conv, (long long)s1), "conflict", "deleted");
	refused(ask(ca, "d6", "{\"type\":\"delete\",\"conv\":%lld,\"cmid\":\"d6\",\"seq\":%lld}", (long long)conv,
	            (long long)s1), "conflict", "deleted");
	/* A tombstone: no text, no reactions, and its edit's text gone too. */
	h = history(&b, conv);
	m = at(h, s1);
	assert_string_equal(hx_str(m, "body"), "");
	assert_true(json_is_true(json_object_get(m, "deleted")));
	assert_null(json_object_get(m, "reactions"));
	assert_int_equal(hx_int(m, "state_seq"), d);
	assert_string_equal(hx_str(at(h, s2), "body"), "");
	json_decref(h);
	assert_int_equal(found(&b, "rhubarb"), 0);
	assert_int_equal(found(&b, "crumble"), 0);
	pc_close(ca);
	pc_close(cb);
}

static void test_reactions_and_replies(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	int64_t conv, s1, s2, reply, r;
	json_t *m, *h, *rs, *to;

	(void)state;
	hx_user(S.port, "ra", &a);
	hx_user(S.port, "rb", &b);
	conv = hx_direct(S.port, &a, &b);
	ca = hx_ws(S.port, &a);
	cb = hx_ws(S.port, &b);
	s1 = hx_say(ca, conv, "lunch at noon?");
	s2 = hx_say(ca, conv, "or one?");
	json_decref(next_msg(cb, s1));
	json_decref(next_msg(cb, s2));
	/* Both react; bob changes his, then alice takes hers back. */
	r = acked(cb, "r1", "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"r1\",\"seq\":%lld,\"emoji\":\"\\ud83d\\udc4d\"}",
	          (long long)conv, (long long)s1);
	m = next_msg(ca, r);
	assert_string_equal(hx_str(m, "kind"), "reaction");
	assert_string_equal(hx_str(m, "body"), "\xf0\x9f\x91\x8d");
	json_decref(m);
	acked(ca, "r2", "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"r2\",\"seq\":%lld,\"emoji\":\"\\ud83d\\udc4d\"}",
	      (long long)conv, (long long)s1);
	acked(cb, "r3", "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"r3\",\"seq\":%lld,\"emoji\":\"\\ud83d\\ude02\"}",
	      (long long)conv, (long long)s1);
	h = history(&a, conv);
	rs = json_object_get(at(h, s1), "reactions");
	assert_int_equal(json_array_size(rs), 2);
	assert_string_equal(hx_str(json_array_get(rs, 0), "emoji"), "\xf0\x9f\x91\x8d");
	assert_int_equal(json_array_size(json_object_get(json_array_get(rs, 0), "users")), 1);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(json_array_get(rs, 0), "users"), 0)), a.id);
	assert_string_equal(hx_str(json_array_get(rs, 1), "emoji"), "\xf0\x9f\x98\x82");
	json_decref(h);
	r = acked(ca, "r4", "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"r4\",\"seq\":%lld,\"emoji\":\"\"}",
	          (long long)conv, (long long)s1);
	h = history(&a, conv);
	rs = json_object_get(at(h, s1), "reactions");
	assert_int_equal(json_array_size(rs), 1);
	assert_int_equal(hx_int(at(h, s1), "state_seq"), r);
	json_decref(h);
	/* Not an emoji, too long, not a string. */
	refused(ask(cb, "r5", "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"r5\",\"seq\":%lld,\"emoji\":\"lol\"}",
	            (long long)conv, (long long)s1), "bad_request", "emoji");
	refused(ask(cb, "r6", "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"r6\",\"seq\":%lld,\"emoji\":\"\\u2764 \\u2764\"}",
	            (long long)conv, (long long)s1), "bad_request", "emoji");
	refused(ask(cb, "r7", "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"r7\",\"seq\":%lld,\"emoji\":1}",
	            (long long)conv, (long long)s1), "bad_request", "emoji");
	refused(ask(cb, "r8", "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"r8\",\"seq\":%lld,\"emoji\":\"\\u4e2d\"}",
	            (long long)conv, (long long)s1), "bad_request", "emoji");
	/* A keycap is one: a digit, a selector, the combining keycap. */
	acked(cb, "r9", "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"r9\",\"seq\":%lld,\"emoji\":\"1\\ufe0f\\u20e3\"}",
	      (long long)conv, (long long)s2);

	/* A reply: live it names its target; history quotes it as it is. */
	reply = acked(cb, "p1", "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"p1\",\"body\":\"noon works\",\"reply_to\":%lld}",
	              (long long)conv, (long long)s1);
	for (;;) {
		m = hx_next_msg(ca, 5000);
		assert_non_null(m);
		if (hx_int(m, "seq") == reply)
			break;
		json_decref(m);
	}
	assert_int_equal(hx_int(json_object_get(m, "reply_to"), "seq"), s1);
	json_decref(m);
	h = history(&a, conv);
	to = json_object_get(at(h, reply), "reply_to");
	assert_int_equal(hx_int(to, "seq"), s1);
	assert_int_equal(hx_int(to, "from"), a.id);
	assert_string_equal(hx_str(to, "body"), "lunch at noon?");
	json_decref(h);
	acked(ca, "p2", "{\"type\":\"delete\",\"conv\":%lld,\"cmid\":\"p2\",\"seq\":%lld}", (long long)conv, (long long)s1);
	h = history(&a, conv);
	to = json_object_get(at(h, reply), "reply_to");
	assert_true(json_is_true(json_object_get(to, "deleted")));
	assert_null(json_object_get(to, "body"));
	json_decref(h);
	refused(ask(cb, "p3", "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"p3\",\"body\":\"?\",\"reply_to\":5000}",
	            (long long)conv), "not_found", "reply");
	refused(ask(cb, "p4", "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"p4\",\"body\":\"?\",\"reply_to\":-1}",
	            (long long)conv), "bad_request", "reply_to");
	pc_close(ca);
	pc_close(cb);
}

/* A device that was away resumes and gets the events in order, then
 * resumed; applying them to what it held gives what history says. */
static void test_resume_carries_events(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	int64_t conv, s1, e, r, d, s2;
	json_t *m;

	(void)state;
	hx_user(S.port, "sa", &a);
	hx_user(S.port, "sb", &b);
	conv = hx_direct(S.port, &a, &b);
	ca = hx_ws(S.port, &a);
	s1 = hx_say(ca, conv, "first draft");
	s2 = hx_say(ca, conv, "to be removed");
	e = acked(ca, "s1", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"s1\",\"seq\":%lld,\"body\":\"final draft\"}",
	          (long long)conv, (long long)s1);
	r = acked(ca, "s2", "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"s2\",\"seq\":%lld,\"emoji\":\"\\u2705\"}",
	          (long long)conv, (long long)s1);
	d = acked(ca, "s3", "{\"type\":\"delete\",\"conv\":%lld,\"cmid\":\"s3\",\"seq\":%lld}", (long long)conv,
	          (long long)s2);
	cb = hx_ws(S.port, &b);
	hx_sendf(cb, "{\"type\":\"resume\",\"convs\":{\"%lld\":%lld}}", (long long)conv, (long long)s2);
	m = hx_expect(cb, "msg");
	assert_int_equal(hx_int(m, "seq"), e);
	assert_string_equal(hx_str(m, "kind"), "edit");
	assert_string_equal(hx_str(m, "body"), "final draft");
	json_decref(m);
	m = hx_expect(cb, "msg");
	assert_int_equal(hx_int(m, "seq"), r);
	assert_string_equal(hx_str(m, "kind"), "reaction");
	json_decref(m);
	m = hx_expect(cb, "msg");
	assert_int_equal(hx_int(m, "seq"), d);
	assert_string_equal(hx_str(m, "kind"), "delete");
	assert_int_equal(hx_int(m, "target"), s2);
	json_decref(m);
	json_decref(hx_expect(cb, "resumed"));
	/* From the start: the messages carry their state. */
	hx_sendf(cb, "{\"type\":\"resume\",\"convs\":{\"%lld\":0}}", (long long)conv);
	m = hx_expect(cb, "msg");
	assert_string_equal(hx_str(m, "body"), "final draft");
	assert_int_equal(hx_int(m, "state_seq"), r);
	assert_int_equal(json_array_size(json_object_get(m, "reactions")), 1);
	json_decref(m);
	m = hx_expect(cb, "msg");
	assert_true(json_is_true(json_object_get(m, "deleted")));
	json_decref(m);
	pc_close(ca);
	pc_close(cb);
}

/* In a group an admin deletes anyone's message, a member only its own;
 * a message from before someone joined is not edited (they never had
 * it), and a reply to it quotes nothing to them. */
static void test_group_rules(void **state)
{
	hx_user_t a, b, c;
	pc_conn_t *ca, *cb, *cc;
	int64_t conv, s1, s2, s3, reply;
	char body[128], path[96];
	json_t *j, *h, *to;

	(void)state;
	hx_user(S.port, "ga", &a);
	hx_user(S.port, "gb", &b);
	hx_user(S.port, "gc", &c);
	snprintf(body, sizeof body, "{\"members\":[%lld,%lld],\"title\":\"events\"}", (long long)b.id, (long long)c.id);
	j = hx_http(S.port, "POST", "/api/v1/conversations", a.token, body, &last_status);
	assert_int_equal(last_status, 201);
	conv = hx_int(j, "conversation_id");
	json_decref(j);
	ca = hx_ws(S.port, &a);
	cb = hx_ws(S.port, &b);
	s1 = hx_say(cb, conv, "bob's first");
	s2 = hx_say(ca, conv, "alice's first");
	refused(ask(cb, "g1", "{\"type\":\"delete\",\"conv\":%lld,\"cmid\":\"g1\",\"seq\":%lld}", (long long)conv,
	            (long long)s2), "forbidden", "admin");
	acked(ca, "g2", "{\"type\":\"delete\",\"conv\":%lld,\"cmid\":\"g2\",\"seq\":%lld}", (long long)conv, (long long)s1);
	/* Carol leaves and is added back: she joins after s2. */
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/members/%lld", (long long)conv, (long long)c.id);
	json_decref(hx_http(S.port, "DELETE", path, c.token, NULL, &last_status));
	assert_int_equal(last_status, 204);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/members", (long long)conv);
	snprintf(body, sizeof body, "{\"user_id\":%lld}", (long long)c.id);
	json_decref(hx_http(S.port, "POST", path, a.token, body, &last_status));
	assert_int_equal(last_status, 204);
	refused(ask(ca, "g3", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"g3\",\"seq\":%lld,\"body\":\"new\"}",
	            (long long)conv, (long long)s2), "conflict", "joined");
	reply = acked(cb, "g4", "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"g4\",\"body\":\"agreed\",\"reply_to\":%lld}",
	              (long long)conv, (long long)s2);
	/* Carol cannot reach what came before her. */
	cc = hx_ws(S.port, &c);
	refused(ask(cc, "g5", "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"g5\",\"seq\":%lld,\"emoji\":\"\\u2705\"}",
	            (long long)conv, (long long)s2), "not_found", NULL);
	h = history(&c, conv);
	to = json_object_get(at(h, reply), "reply_to");
	assert_int_equal(hx_int(to, "seq"), s2);
	assert_null(json_object_get(to, "body"));
	assert_null(json_object_get(to, "from"));
	json_decref(h);
	h = history(&b, conv);
	to = json_object_get(at(h, reply), "reply_to");
	assert_string_equal(hx_str(to, "body"), "alice's first");
	json_decref(h);
	/* A message after she joined may be edited. */
	s3 = hx_say(ca, conv, "after carol");
	acked(ca, "g6", "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"g6\",\"seq\":%lld,\"body\":\"after carol came\"}",
	      (long long)conv, (long long)s3);
	pc_close(ca);
	pc_close(cb);
	pc_close(cc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_edit),
		cmocka_unit_test(test_edit_refused),
		cmocka_unit_test(test_delete),
		cmocka_unit_test(test_reactions_and_replies),
		cmocka_unit_test(test_resume_carries_events),
		cmocka_unit_test(test_group_rules),
	};

	hx_filter();
	return cmocka_run_group_tests(tests, setup, teardown);
}
