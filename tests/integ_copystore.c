/* integ_copystore.c - `parley copy-store`: a single node's SQLite store
 * moved into PostgreSQL with nothing lost.
 *
 * A node on SQLite gets users (one with two logins), a direct chat whose
 * bodies hold the characters a copy could mangle (tabs, newlines,
 * backslashes, quotes, emoji), a group, receipts and a block; it stops;
 * copy-store moves the store into a fresh database of a throwaway
 * PostgreSQL; a node on that database then answers every request exactly
 * as the first did (the same JSON: ids, seqs, unread counts, receipts,
 * blocks, devices), the old tokens and passwords still work, and new rows
 * continue the old ids and seqs. A copy into a database that is not empty,
 * or from a directory a node is serving, is refused and copies nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "harness.h"
#include "pgserver.h"
#include "store.h"

/* Runs `parley copy-store --from from --to to`; returns its exit status. */
static int copy_store(const char *from, const char *to)
{
	const char *bin = getenv("PARLEY_BIN") ? getenv("PARLEY_BIN") : "build/parley";
	pid_t pid = fork();
	int st;

	assert_true(pid >= 0);
	if (pid == 0) {
		execl(bin, bin, "copy-store", "--from", from, "--to", to, (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* What a user sees, as the API answers it, compared before and after:
 * lists, history, receipts, blocks, devices, settings, push targets and
 * the VAPID key. */
#define VIEWS 10
typedef struct view {
	json_t *j[VIEWS];
} view_t;

static json_t *get(int port, const hx_user_t *u, const char *path)
{
	int st;
	json_t *j = hx_http(port, "GET", path, u->token, NULL, &st);

	assert_int_equal(st, 200);
	return j;
}

static void look(int port, const hx_user_t *a, const hx_user_t *b, int64_t direct, int64_t group,
                 view_t *v)
{
	char path[160];

	v->j[0] = get(port, a, "/api/v1/conversations");
	v->j[1] = get(port, b, "/api/v1/conversations");
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages", (long long)direct);
	v->j[2] = get(port, a, path);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages", (long long)group);
	v->j[3] = get(port, b, path);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages/1/receipts", (long long)group);
	v->j[4] = get(port, a, path);
	v->j[5] = get(port, a, "/api/v1/blocks");
	v->j[6] = get(port, a, "/api/v1/devices");
	v->j[7] = get(port, b, "/api/v1/settings");
	v->j[8] = get(port, a, "/api/v1/push-targets");
	v->j[9] = get(port, a, "/api/v1/push-targets/vapid"); /* subscriptions are bound to it */
}

static void test_sqlite_to_postgresql(void **state)
{
	static const char *const bodies[] = {
		"plain", "tab\there", "two\nlines\r\nand more", "back\\slash \\N \\x00", "\"quoted\" 'too'",
		"emoji \xf0\x9f\x98\x80 and \xc3\xa9",
	};
	char dir[] = "/tmp/parley-copy-XXXXXX", url[256], other[256];
	pgserver_t *pg;
	hx_server_t s;
	hx_user_t a, b, c, a2, n;
	pc_conn_t *ca, *cb;
	int64_t direct, group, seq;
	view_t before, after;
	json_t *j;
	char body[128];
	size_t i;
	int st;

	(void)state;
	if (getenv("PARLEY_TEST_STORE") && !strcmp(getenv("PARLEY_TEST_STORE"), "postgresql")) {
		printf("integ_copystore: runs in the SQLite pass (it makes both stores itself)\n");
		return;
	}
	assert_non_null(mkdtemp(dir));
	assert_int_equal(hx_start(&s, dir, NULL), 0);
	hx_user(s.port, "copy_a", &a);
	hx_user(s.port, "copy_b", &b);
	hx_user(s.port, "copy_c", &c);
	hx_login(s.port, &a, &a2);
	direct = hx_direct(s.port, &a, &b);
	assert_non_null(ca = hx_ws(s.port, &a));
	assert_non_null(cb = hx_ws(s.port, &b));
	for (i = 0; i < sizeof bodies / sizeof *bodies; i++) {
		json_t *m = json_pack("{s:s,s:I,s:s,s:s}", "type", "send", "conv", (json_int_t)direct, "cmid",
		                      hx_name("cm"), "body", bodies[i]);
		char *text = json_dumps(m, JSON_COMPACT);
		assert_int_equal(pc_ws_send_text(ca, text), 0);
		json_decref(hx_expect(ca, "ack"));
		free(text);
		json_decref(m);
	}
	snprintf(body, sizeof body, "{\"title\":\"tri\\tangle\",\"members\":[%lld,%lld]}", (long long)b.id,
	         (long long)c.id);
	j = hx_http(s.port, "POST", "/api/v1/conversations", a.token, body, &st);
	assert_int_equal(st, 201);
	group = hx_int(j, "conversation_id");
	json_decref(j);
	seq = hx_say(ca, group, "hello group");
	/* Events and their state: an edit, a reaction, a reply; a mute. */
	hx_sendf(ca, "{\"type\":\"edit\",\"conv\":%lld,\"cmid\":\"copy-e\",\"seq\":%lld,\"body\":\"hello, group\"}",
	         (long long)group, (long long)seq);
	json_decref(hx_expect(ca, "ack"));
	hx_sendf(cb, "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"copy-r\",\"seq\":%lld,\"emoji\":\"\\u2764\"}",
	         (long long)group, (long long)seq);
	hx_sendf(cb, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"copy-p\",\"body\":\"hi\",\"reply_to\":%lld}",
	         (long long)group, (long long)seq);
	snprintf(body, sizeof body, "/api/v1/conversations/%lld", (long long)group);
	json_decref(hx_http(s.port, "PATCH", body, a.token, "{\"muted\":true}", &st));
	assert_int_equal(st, 200);
	hx_sendf(cb, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":%lld}", (long long)group,
	         (long long)seq);
	hx_sendf(cb, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"delivered\",\"seq\":4}", (long long)direct);
	hx_sendf(cb, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":2}", (long long)direct);
	snprintf(body, sizeof body, "{\"user_id\":%lld}", (long long)c.id);
	json_decref(hx_http(s.port, "POST", "/api/v1/blocks", a.token, body, &st));
	assert_int_equal(st, 204);
	json_decref(hx_http(s.port, "PATCH", "/api/v1/settings", b.token, "{\"group_adds\":\"contacts\"}", &st));
	assert_int_equal(st, 200);
	json_decref(hx_http(s.port, "POST", "/api/v1/push-targets", a.token, "{\"platform\":\"fcm\",\"token\":\"copy:tok\"}",
	                    &st));
	assert_int_equal(st, 201);
	json_decref(hx_http(s.port, "POST", "/api/v1/push-targets", a2.token,
	                    "{\"platform\":\"webpush\",\"subscription\":{\"endpoint\":\"https://push.example.com/c\","
	                    "\"keys\":{\"p256dh\":\"BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8p"
	                    "ZGH6SRpkNtoIAiw4\",\"auth\":\"BTBZMqHH6r4Tts7J_aSIgg\"}}}",
	                    &st));
	assert_int_equal(st, 201);
	usleep(300000); /* the receipts are written by the writer, not acked */
	look(s.port, &a, &b, direct, group, &before);
	pc_close(ca);
	pc_close(cb);

	/* A node serving the directory: refused, nothing copied. */
	assert_non_null(pg = pgserver_start());
	assert_int_equal(pgserver_create_db(pg, NULL, url, sizeof url), 0);
	assert_int_equal(copy_store(dir, url), 1);
	assert_int_equal(hx_stop(&s, SIGTERM), 0);

	/* The copy, then a node on PostgreSQL sees the same. */
	assert_int_equal(copy_store(dir, url), 0);
	assert_int_equal(hx_start(&s, url, NULL), 0);
	look(s.port, &a, &b, direct, group, &after);
	for (i = 0; i < VIEWS; i++) {
		if (!json_equal(before.j[i], after.j[i])) {
			char *x = json_dumps(before.j[i], JSON_COMPACT), *y = json_dumps(after.j[i], JSON_COMPACT);
			fail_msg("view %zu differs:\n  before %s\n  after  %s", i, x, y);
		}
		json_decref(before.j[i]);
		json_decref(after.j[i]);
	}
	/* Old logins and passwords work; new rows continue the old ids. */
	assert_non_null(ca = hx_ws(s.port, &a2));
	assert_int_equal(hx_say(ca, direct, "after the move"), (int64_t)(sizeof bodies / sizeof *bodies) + 1);
	hx_login(s.port, &b, &n);
	hx_user(s.port, "copy_new", &n);
	assert_true(n.id > c.id);
	pc_close(ca);
	hx_finish(&s);

	/* Into a database that is no longer empty: refused. */
	assert_int_equal(copy_store(dir, url), 1);
	/* Into another, fresh one: fine again (the source is unchanged). */
	assert_int_equal(pgserver_create_db(pg, NULL, other, sizeof other), 0);
	assert_int_equal(copy_store(dir, other), 0);
	pgserver_stop(pg);
	{
		char cmd[64];
		snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
		assert_int_equal(system(cmd), 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sqlite_to_postgresql),
	};

	hx_filter();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
