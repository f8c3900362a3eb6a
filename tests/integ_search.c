/* integ_search.c - GET /api/v1/search and history around a seq, against
 * the real binary on the store the run names ($PARLEY_TEST_STORE): a word
 * finds its message, ranked, with the word marked in a snippet, in the
 * caller's conversations only, from when it joined, not after it left;
 * whatever the engines' query languages would read as syntax (quotes,
 * operators, prefixes, column filters) is taken as words or refused with
 * bad_request, never a 500; and a result's seq opens its chat with
 * ?around=SEQ, paged either way from there. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static hx_server_t S;
static hx_user_t alice, bob, carol;
static int64_t direct;
static int last_status;

static json_t *get(const hx_user_t *u, const char *path)
{
	return hx_http(S.port, "GET", path, u ? u->token : NULL, NULL, &last_status);
}

static void refused(json_t *j, int status, const char *code, const char *says)
{
	json_t *e = json_object_get(j, "error");

	assert_int_equal(last_status, status);
	assert_string_equal(hx_str(e, "code"), code);
	if (says && !strstr(hx_str(e, "message"), says))
		fail_msg("\"%s\" does not say \"%s\"", hx_str(e, "message"), says);
	json_decref(j);
}

/* The results of q (already percent-encoded) for u; status 200. */
static json_t *search(const hx_user_t *u, const char *q)
{
	char path[1024];
	json_t *j;

	snprintf(path, sizeof path, "/api/v1/search?q=%s", q);
	j = get(u, path);
	if (last_status != 200)
		fail_msg("search %s: %d %s", q, last_status, json_dumps(j, 0));
	return json_object_get(j, "results") ? j : NULL;
}

static size_t hits(const hx_user_t *u, const char *q)
{
	json_t *j = search(u, q);
	size_t n = json_array_size(json_object_get(j, "results"));

	json_decref(j);
	return n;
}

static int setup(void **state)
{
	char body[64];
	int i;

	(void)state;
	HX_START(&S, "--fast-password-hashing");
	hx_user(S.port, "se_alice", &alice);
	hx_user(S.port, "se_bob", &bob);
	hx_user(S.port, "se_carol", &carol);
	direct = hx_direct(S.port, &alice, &bob);
	{
		pc_conn_t *a = hx_ws(S.port, &alice);
		for (i = 1; i <= 30; i++) {
			if (i == 7)
				hx_say(a, direct, "The quarterly report is ready, see page 4");
			else if (i == 12)
				hx_say(a, direct, "Grüße aus Köln und der Bahnhof ist zu");
			else {
				snprintf(body, sizeof body, "filler number %d", i);
				hx_say(a, direct, body);
			}
		}
		pc_close(a);
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	hx_finish(&S);
	return 0;
}

/* A word finds its message, with the conversation, the message as history
 * gives it, and a snippet whose matched part is marked. */
static void test_found_with_snippet(void **state)
{
	json_t *j, *r, *parts, *p;
	size_t i;
	int marked = 0;

	(void)state;
	j = search(&bob, "quarterly");
	r = json_object_get(j, "results");
	assert_int_equal(json_array_size(r), 1);
	assert_false(json_is_true(json_object_get(j, "has_more")));
	r = json_array_get(r, 0);
	assert_int_equal(hx_int(r, "conversation_id"), direct);
	assert_int_equal(hx_int(json_object_get(r, "message"), "seq"), 7);
	assert_int_equal(hx_int(json_object_get(r, "message"), "from"), alice.id);
	assert_string_equal(hx_str(json_object_get(r, "message"), "body"), "The quarterly report is ready, see page 4");
	parts = json_object_get(r, "snippet");
	assert_true(json_array_size(parts) >= 2);
	json_array_foreach(parts, i, p) {
		assert_true(json_is_string(json_object_get(p, "text")));
		if (json_is_true(json_object_get(p, "match"))) {
			assert_string_equal(hx_str(p, "text"), "quarterly");
			marked++;
		}
	}
	assert_int_equal(marked, 1);
	json_decref(j);
	/* Case, a prefix of the last word, two words, the sender too. */
	assert_int_equal(hits(&bob, "QUARTERLY"), 1);
	assert_int_equal(hits(&bob, "quart"), 1);
	assert_int_equal(hits(&bob, "report+quart"), 1);
	assert_int_equal(hits(&alice, "quarterly"), 1);
	assert_int_equal(hits(&bob, "k%C3%B6ln"), 1); /* köln */
	assert_int_equal(hits(&bob, "filler"), 20);
	/* Pages. */
	j = get(&bob, "/api/v1/search?q=filler&limit=25&offset=10");
	assert_int_equal(last_status, 200);
	assert_int_equal(json_array_size(json_object_get(j, "results")), 18);
	assert_false(json_is_true(json_object_get(j, "has_more")));
	json_decref(j);
	j = get(&bob, "/api/v1/search?q=filler");
	assert_int_equal(json_array_size(json_object_get(j, "results")), 20);
	assert_true(json_is_true(json_object_get(j, "has_more")));
	json_decref(j);
}

/* What a query language would take as syntax is only a separator here. */
static void test_operators_are_words(void **state)
{
	static const char *const found[] = {
		"%22quarterly",                 /* "quarterly */
		"quarterly%22%20OR%20%22x",     /* quarterly" OR "x: no OR, three words */
		"quart*",
		"report%3Aquarterly",           /* report:quarterly, a column filter in FTS5 */
		"(quarterly%20report)",
		"quarterly%20-report",          /* no NOT either */
		"quarterly%20%26%20report",     /* & */
		"!quarterly%7C%7Creport:*",     /* !quarterly||report:* */
		"%27quarterly%27",              /* 'quarterly' */
		"quarterly%5C",                 /* backslash */
		"%E2%80%9Cquarterly%E2%80%9D",  /* “quarterly” */
	};
	static const char *const nothing[] = {
		"*", "%22%22", "%27", "(%20)", "%E2%80%94", /* — */
		"%F0%9F%98%80",                             /* an emoji alone */
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof found / sizeof *found; i++) {
		size_t n = hits(&bob, found[i]);
		if (n != 1 && !(i == 1 && n == 0)) /* "OR": one more word, x, that nothing has */
			fail_msg("%s: %zu results", found[i], n);
	}
	for (i = 0; i < sizeof nothing / sizeof *nothing; i++) {
		char path[128];
		snprintf(path, sizeof path, "/api/v1/search?q=%s", nothing[i]);
		refused(get(&bob, path), 400, "bad_request", "must hold a word");
	}
}

static void test_bad_requests(void **state)
{
	char path[1200];
	size_t n;

	(void)state;
	refused(get(&bob, "/api/v1/search"), 400, "bad_request", "q");
	refused(get(NULL, "/api/v1/search?q=quarterly"), 401, "unauthorized", NULL);
	refused(get(&bob, "/api/v1/search?q=%FF%FE"), 400, "bad_request", "UTF-8");
	refused(get(&bob, "/api/v1/search?q=a+b+c+d+e+f+g+h+i"), 400, "bad_request", "8 words");
	n = (size_t)snprintf(path, sizeof path, "/api/v1/search?q=");
	memset(path + n, 'x', 65);
	path[n + 65] = 0;
	refused(get(&bob, path), 400, "bad_request", "64 bytes");
	n = (size_t)snprintf(path, sizeof path, "/api/v1/search?q=");
	while (n < 300 + 17)
		path[n++] = 'y', path[n++] = '+';
	path[n] = 0;
	refused(get(&bob, path), 400, "bad_request", "256 bytes");
	refused(get(&bob, "/api/v1/search?q=x&limit=0"), 400, "bad_request", "limit");
	refused(get(&bob, "/api/v1/search?q=x&limit=51"), 400, "bad_request", "limit");
	refused(get(&bob, "/api/v1/search?q=x&offset=501"), 400, "bad_request", "offset");
	refused(get(&bob, "/api/v1/search?q=x&conv=abc"), 400, "bad_request", "conv");
	snprintf(path, sizeof path, "/api/v1/search?q=quarterly&conv=%lld", (long long)direct);
	refused(get(&carol, path), 403, "forbidden", NULL);
	refused(hx_http(S.port, "POST", "/api/v1/search?q=x", bob.token, "{}", &last_status), 405, "bad_request",
	        NULL);
}

/* Carol finds nothing of a chat she is not in; in a group, from when
 * she joined, and nothing once she has left. */
static void test_only_what_the_caller_may_read(void **state)
{
	char body[128], path[128];
	hx_user_t dave;
	pc_conn_t *a;
	int64_t g;
	json_t *j;

	(void)state;
	assert_int_equal(hits(&carol, "quarterly"), 0);
	hx_user(S.port, "se_dave", &dave);
	snprintf(body, sizeof body, "{\"title\":\"planning\",\"members\":[%lld,%lld]}", (long long)bob.id,
	         (long long)dave.id);
	j = hx_http(S.port, "POST", "/api/v1/conversations", alice.token, body, &last_status);
	assert_int_equal(last_status, 201);
	g = hx_int(j, "conversation_id");
	json_decref(j);
	a = hx_ws(S.port, &alice);
	hx_say(a, g, "the zeppelin plan, before carol");
	snprintf(body, sizeof body, "{\"user_id\":%lld}", (long long)carol.id);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/members", (long long)g);
	j = hx_http(S.port, "POST", path, alice.token, body, &last_status);
	if (last_status != 204)
		fail_msg("adding carol: %d %s", last_status, json_dumps(j, 0));
	json_decref(j);
	hx_say(a, g, "the zeppelin plan, for carol too");
	assert_int_equal(hits(&bob, "zeppelin"), 2);
	j = search(&carol, "zeppelin");
	assert_int_equal(json_array_size(json_object_get(j, "results")), 1);
	assert_string_equal(hx_str(json_object_get(json_array_get(json_object_get(j, "results"), 0), "message"),
	                           "body"),
	                    "the zeppelin plan, for carol too");
	json_decref(j);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/members/%lld", (long long)g, (long long)carol.id);
	json_decref(hx_http(S.port, "DELETE", path, carol.token, NULL, &last_status));
	assert_int_equal(last_status, 204);
	assert_int_equal(hits(&carol, "zeppelin"), 0);
	pc_close(a);
}

static void expect_seqs(json_t *j, int64_t lo, int64_t hi, int more, int newer)
{
	json_t *ms = json_object_get(j, "messages");
	size_t i;

	assert_int_equal(last_status, 200);
	if (json_array_size(ms) != (size_t)(hi - lo + 1))
		fail_msg("want %lld..%lld, got %s", (long long)lo, (long long)hi, json_dumps(j, 0));
	for (i = 0; i < json_array_size(ms); i++)
		assert_int_equal(hx_int(json_array_get(ms, i), "seq"), lo + (int64_t)i);
	assert_int_equal(json_is_true(json_object_get(j, "has_more")), more);
	assert_int_equal(json_is_true(json_object_get(j, "has_newer")), newer);
	json_decref(j);
}

/* A result opens its chat around the seq, and pages go on either way. */
static void test_history_around_and_after(void **state)
{
	char path[160];

	(void)state;
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?around=7&limit=10", (long long)direct);
	expect_seqs(get(&bob, path), 3, 12, 1, 1);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?around=2&limit=10", (long long)direct);
	expect_seqs(get(&bob, path), 1, 7, 0, 1);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?after=12&limit=10", (long long)direct);
	expect_seqs(get(&bob, path), 13, 22, 1, 1);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?after=25&limit=10", (long long)direct);
	expect_seqs(get(&bob, path), 26, 30, 1, 0);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?after=0&limit=3", (long long)direct);
	expect_seqs(get(&bob, path), 1, 3, 0, 1);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?around=7&before=9", (long long)direct);
	refused(get(&bob, path), 400, "bad_request", "one at most");
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?around=7", (long long)direct);
	refused(get(&carol, path), 403, "forbidden", NULL);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?around=0", (long long)direct);
	refused(get(&bob, path), 400, "bad_request", "around");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_found_with_snippet),
		cmocka_unit_test(test_operators_are_words),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_only_what_the_caller_may_read),
		cmocka_unit_test(test_history_around_and_after),
	};

	hx_filter();
	return cmocka_run_group_tests(tests, setup, teardown);
}
