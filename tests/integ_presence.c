/* integ_presence.c - presence, watch and typing end to end: presence is
 * for contacts (a user's presence is seen only by those it has written to
 * in a direct chat); changes reach watchers and no
 * one else; going offline waits out a grace period (1.5 s here), so a
 * reconnect within it is invisible; last_seen survives a restart; typing
 * reaches the other members' devices, is throttled, expires 6 s after the
 * last "on", and ends at once when the typist's last connection closes. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static hx_server_t srv;
/* The grace is long enough that a reconnect under a loaded sanitizer
 * build still falls within it. */
static const char *const server_args[] = {"--presence-grace", "1500", "--fast-password-hashing",
                                          NULL};

static int setup(void **state)
{
	(void)state;
	return hx_start(&srv, NULL, server_args);
}

static int teardown(void **state)
{
	(void)state;
	hx_finish(&srv);
	return 0;
}

static json_t *expect_presence(pc_conn_t *c, int64_t user, const char *state)
{
	json_t *j = hx_expect(c, "presence");

	assert_int_equal(hx_int(j, "user"), user);
	assert_string_equal(hx_str(j, "state"), state);
	return j;
}

/* Waits out the presence grace, so a user who just disconnected is
 * offline. */
static void past_grace(void)
{
	usleep(1700 * 1000);
}

static void test_watch_and_states(void **state)
{
	hx_user_t a, b, c;
	pc_conn_t *ca, *cb, *cc;
	json_t *j;
	int64_t seen, ab, ac;

	(void)state;
	hx_user(srv.port, "pa", &a);
	hx_user(srv.port, "pb", &b);
	hx_user(srv.port, "pc", &c);
	ab = hx_direct(srv.port, &a, &b);
	/* Carol opens a chat with Alice but says nothing: a stranger. */
	ac = hx_direct(srv.port, &c, &a);
	cb = hx_ws(srv.port, &b);
	hx_say(cb, ab, "hi alice");
	pc_close(cb);
	past_grace();
	ca = hx_ws(srv.port, &a);
	/* Alice may watch Bob (he wrote to her), not Carol (she never did). */
	hx_sendf(ca, "{\"type\":\"watch\",\"users\":[%lld,%lld]}", (long long)b.id, (long long)c.id);
	j = expect_presence(ca, b.id, "offline");
	assert_true(hx_int(j, "last_seen") > 1700000000000LL);
	json_decref(j);
	assert_null(hx_recv_within(ca, 300));

	cb = hx_ws(srv.port, &b);
	json_decref(expect_presence(ca, b.id, "online"));
	hx_sendf(cb, "{\"type\":\"presence\",\"state\":\"away\"}");
	json_decref(expect_presence(ca, b.id, "away"));
	hx_sendf(cb, "{\"type\":\"presence\",\"state\":\"online\"}");
	json_decref(expect_presence(ca, b.id, "online"));
	/* Carol connects: nobody watches her, nothing is sent. */
	cc = hx_ws(srv.port, &c);
	assert_null(hx_recv_within(ca, 300));
	/* Carol cannot watch Alice: Alice never wrote to her, and opening a
	 * chat with someone shows nothing of them. */
	hx_sendf(cc, "{\"type\":\"watch\",\"users\":[%lld]}", (long long)a.id);
	assert_null(hx_recv_within(cc, 300));
	/* Carol writes: now Alice may watch her (Carol chose to be seen),
	 * and Carol still cannot watch Alice. */
	hx_say(cc, ac, "hello, it is carol");
	json_decref(hx_expect(ca, "msg"));
	hx_sendf(ca, "{\"type\":\"watch\",\"users\":[%lld,%lld]}", (long long)b.id, (long long)c.id);
	json_decref(expect_presence(ca, b.id, "online"));
	json_decref(expect_presence(ca, c.id, "online"));
	hx_sendf(cc, "{\"type\":\"watch\",\"users\":[%lld]}", (long long)a.id);
	assert_null(hx_recv_within(cc, 300));
	hx_sendf(ca, "{\"type\":\"watch\",\"users\":[%lld]}", (long long)b.id);
	json_decref(expect_presence(ca, b.id, "online"));

	/* Bob's phone flaps: back within the grace period, no offline. */
	pc_close(cb);
	cb = hx_ws(srv.port, &b);
	assert_null(hx_recv_within(ca, 2500));
	/* Gone for good: offline after the grace, with last_seen. */
	pc_close(cb);
	j = expect_presence(ca, b.id, "offline");
	seen = hx_int(j, "last_seen");
	assert_true(seen > 1700000000000LL);
	json_decref(j);
	/* Watching anew tells the state at once; an empty list stops it. */
	hx_sendf(ca, "{\"type\":\"watch\",\"users\":[%lld]}", (long long)b.id);
	j = expect_presence(ca, b.id, "offline");
	assert_int_equal(hx_int(j, "last_seen"), seen);
	json_decref(j);
	hx_sendf(ca, "{\"type\":\"watch\",\"users\":[]}");
	cb = hx_ws(srv.port, &b);
	assert_null(hx_recv_within(ca, 300));
	pc_close(ca);
	pc_close(cb);
	pc_close(cc);
}

static void test_watch_refusals(void **state)
{
	hx_user_t a;
	pc_conn_t *ca;
	char big[8000];
	size_t n = 0;
	int i;
	json_t *j;

	(void)state;
	hx_user(srv.port, "pr", &a);
	ca = hx_ws(srv.port, &a);
	n += (size_t)sprintf(big, "{\"type\":\"watch\",\"users\":[");
	for (i = 0; i < 501; i++)
		n += (size_t)sprintf(big + n, "%s%d", i ? "," : "", i + 1);
	sprintf(big + n, "]}");
	hx_sendf(ca, "%s", big);
	j = hx_expect(ca, "error");
	assert_string_equal(hx_str(j, "code"), "too_large");
	json_decref(j);
	hx_sendf(ca, "{\"type\":\"watch\",\"users\":[\"x\"]}");
	j = hx_expect(ca, "error");
	assert_string_equal(hx_str(j, "code"), "bad_request");
	json_decref(j);
	hx_sendf(ca, "{\"type\":\"presence\",\"state\":\"invisible\"}");
	j = hx_expect(ca, "error");
	assert_string_equal(hx_str(j, "code"), "bad_request");
	json_decref(j);
	hx_sendf(ca, "{\"type\":\"typing\",\"conv\":1}");
	j = hx_expect(ca, "error");
	assert_string_equal(hx_str(j, "code"), "bad_request");
	json_decref(j);
	pc_close(ca);
}

static void expect_typing(pc_conn_t *c, int64_t conv, int64_t user, int on)
{
	json_t *j = hx_expect(c, "typing");

	assert_int_equal(hx_int(j, "conv"), conv);
	assert_int_equal(hx_int(j, "user"), user);
	assert_true(json_is_boolean(json_object_get(j, "on")));
	assert_int_equal(json_is_true(json_object_get(j, "on")), on);
	json_decref(j);
}

static void test_typing(void **state)
{
	hx_user_t a, a2, b, b2, c;
	pc_conn_t *ca, *ca2, *cb, *cb2, *cc;
	int64_t conv;
	json_t *j;

	(void)state;
	hx_user(srv.port, "ta", &a);
	hx_login(srv.port, &a, &a2);
	hx_user(srv.port, "tb", &b);
	hx_login(srv.port, &b, &b2);
	hx_user(srv.port, "tc", &c);
	conv = hx_direct(srv.port, &a, &b);
	ca = hx_ws(srv.port, &a);
	ca2 = hx_ws(srv.port, &a2);
	cb = hx_ws(srv.port, &b);
	cb2 = hx_ws(srv.port, &b2);
	cc = hx_ws(srv.port, &c);

	hx_sendf(ca, "{\"type\":\"typing\",\"conv\":%lld,\"on\":true}", (long long)conv);
	expect_typing(cb, conv, a.id, 1);
	expect_typing(cb2, conv, a.id, 1); /* every device of the other member */
	/* Keystrokes within 2 s are not relayed again. */
	hx_sendf(ca, "{\"type\":\"typing\",\"conv\":%lld,\"on\":true}", (long long)conv);
	hx_sendf(ca2, "{\"type\":\"typing\",\"conv\":%lld,\"on\":true}", (long long)conv);
	assert_null(hx_recv_within(cb, 500));
	assert_null(hx_recv_within(ca2, 100)); /* nor echoed to the typist's devices */
	hx_sendf(ca, "{\"type\":\"typing\",\"conv\":%lld,\"on\":false}", (long long)conv);
	expect_typing(cb, conv, a.id, 0);
	expect_typing(cb2, conv, a.id, 0);
	/* A stranger cannot type into the chat. */
	hx_sendf(cc, "{\"type\":\"typing\",\"conv\":%lld,\"on\":true}", (long long)conv);
	j = hx_expect(cc, "error");
	assert_string_equal(hx_str(j, "code"), "forbidden");
	json_decref(j);
	assert_null(hx_recv_within(cb, 300));

	/* On, then silence: it ends by itself about 6 s later. */
	hx_sendf(cb, "{\"type\":\"typing\",\"conv\":%lld,\"on\":true}", (long long)conv);
	expect_typing(ca, conv, b.id, 1);
	expect_typing(ca2, conv, b.id, 1);
	assert_null(hx_recv_within(ca, 5000));
	expect_typing(ca, conv, b.id, 0);
	expect_typing(ca2, conv, b.id, 0);

	/* On, then the typist's last connection closes: off at once. */
	hx_sendf(cb, "{\"type\":\"typing\",\"conv\":%lld,\"on\":true}", (long long)conv);
	expect_typing(ca, conv, b.id, 1);
	expect_typing(ca2, conv, b.id, 1);
	pc_close(cb);
	assert_null(hx_recv_within(ca, 300)); /* Bob still has his laptop */
	pc_close(cb2);
	expect_typing(ca, conv, b.id, 0);
	pc_close(ca);
	pc_close(ca2);
	pc_close(cc);
}

static void test_last_seen_survives_restart(void **state)
{
	hx_user_t a, b;
	pc_conn_t *ca, *cb;
	char store[256];
	json_t *j;
	int64_t seen;

	(void)state;
	hx_user(srv.port, "sa", &a);
	hx_user(srv.port, "sb", &b);
	cb = hx_ws(srv.port, &b);
	hx_say(cb, hx_direct(srv.port, &a, &b), "hi");
	ca = hx_ws(srv.port, &a);
	hx_sendf(ca, "{\"type\":\"watch\",\"users\":[%lld]}", (long long)b.id);
	json_decref(expect_presence(ca, b.id, "online"));
	pc_close(cb);
	j = expect_presence(ca, b.id, "offline");
	seen = hx_int(j, "last_seen");
	json_decref(j);
	pc_close(ca);
	/* Restart the server on the same data. */
	snprintf(store, sizeof store, "%s", srv.store);
	assert_int_equal(hx_stop(&srv, SIGTERM), 0);
	assert_int_equal(hx_start(&srv, store, server_args), 0);
	srv.own_store = 1;
	ca = hx_ws(srv.port, &a);
	hx_sendf(ca, "{\"type\":\"watch\",\"users\":[%lld]}", (long long)b.id);
	j = expect_presence(ca, b.id, "offline");
	assert_int_equal(hx_int(j, "last_seen"), seen);
	json_decref(j);
	pc_close(ca);
}

#define CONTACTS 200
#define WATCHERS 3

/* A user with 200 contacts, all connected, 3 of whom watch it, goes away
 * and back twice, a change a second: the 3 watchers get the 4 frames
 * each, the other 197 contacts nothing. The cost follows watchers, not
 * contacts. Then it toggles 50 times as fast as it can: each watcher gets
 * at most a frame a second of it, not 50 (changes are announced at most
 * once a second, the last state winning). */
static void test_cost_bounded_by_watchers(void **state)
{
	hx_user_t me, *contacts = calloc(CONTACTS, sizeof *contacts);
	pc_conn_t *cm, **cc = calloc(CONTACTS, sizeof *cc);
	json_t *j;
	int i, k;

	(void)state;
	hx_user(srv.port, "popular", &me);
	cm = hx_ws(srv.port, &me);
	for (i = 0; i < CONTACTS; i++) {
		hx_user(srv.port, "fan", &contacts[i]);
		/* Written to: each may see its presence. */
		hx_say(cm, hx_direct(srv.port, &me, &contacts[i]), "hi");
		cc[i] = hx_ws(srv.port, &contacts[i]);
	}
	for (i = 0; i < WATCHERS; i++) {
		hx_sendf(cc[i], "{\"type\":\"watch\",\"users\":[%lld]}", (long long)me.id);
		json_decref(expect_presence(cc[i], me.id, "online"));
	}
	for (k = 0; k < 2; k++) {
		usleep(1100 * 1000);
		hx_sendf(cm, "{\"type\":\"presence\",\"state\":\"away\"}");
		usleep(1100 * 1000);
		hx_sendf(cm, "{\"type\":\"presence\",\"state\":\"online\"}");
	}
	for (i = 0; i < WATCHERS; i++) {
		for (k = 0; k < 2; k++) {
			json_decref(expect_presence(cc[i], me.id, "away"));
			json_decref(expect_presence(cc[i], me.id, "online"));
		}
	}
	usleep(1100 * 1000);
	for (k = 0; k < 25; k++) {
		hx_sendf(cm, "{\"type\":\"presence\",\"state\":\"away\"}");
		hx_sendf(cm, "{\"type\":\"presence\",\"state\":\"online\"}");
	}
	hx_sendf(cm, "{\"type\":\"presence\",\"state\":\"away\"}");
	/* It ends away: the first change goes out at once, the rest
	 * coalesce into what it ends at, a second later. */
	{
		int frames = 0;
		for (;;) {
			json_t *f = hx_recv_within(cc[0], 2500);
			if (!f)
				break;
			frames++;
			json_decref(f);
		}
		if (frames < 1 || frames > 3)
			fail_msg("a watcher got %d frames for 51 changes in a moment", frames);
	}
	/* By now the others would have had theirs too: they have none. */
	usleep(300000);
	for (i = WATCHERS; i < CONTACTS; i++) {
		j = hx_recv_within(cc[i], 0);
		if (j)
			fail_msg("contact %d, not watching, got a frame", i);
	}
	for (i = 0; i < CONTACTS; i++)
		pc_close(cc[i]);
	pc_close(cm);
	free(cc);
	free(contacts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_watch_and_states),
		cmocka_unit_test(test_watch_refusals),
		cmocka_unit_test(test_typing),
		cmocka_unit_test(test_cost_bounded_by_watchers),
		cmocka_unit_test(test_last_seen_survives_restart),
	};
	hx_filter();
	return cmocka_run_group_tests_name("integ_presence", tests, setup, teardown);
}
