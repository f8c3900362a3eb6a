/* integ_pushsend.c - the push path against the real binary and local
 * fake providers that check the real protocols: APNs and FCM in one
 * HTTP/2 fake (tests/fakes/push_providers.mjs: the ES256 provider JWT
 * verified with the key's public half, the headers, the RS256 OAuth2
 * grant and the bearer token it bought), Web Push in another
 * (tests/fakes/webpush_service.mjs: VAPID verified, the payload
 * decrypted with the subscription's private key). Both record what they
 * were sent, which is what the tests read.
 *
 * Cases: a burst to a user with no connection is one push per target,
 * showing the newest message and the badge; a user whose connection
 * delivers gets none; a read on one device clears the notification on
 * the others; a target the provider calls gone is deleted; a 429's
 * Retry-After is waited out; a group's members are pushed; a muted
 * conversation is silent and previews off hide who and what; answers in
 * no provider's format are counted refusals; and a provider that hangs
 * leaves online delivery untouched. */
#include "harness.h"
#include "pushfakes.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#define KEY_ID "KEY1234567"
#define TEAM_ID "TEAM987654"
#define TOPIC "org.parley.app"
#define CLIENT_EMAIL "push@parley-test.iam.gserviceaccount.com"
#define COALESCE_MS 1500
#define GRACE_MS 2000

static hx_server_t S;
static char dir[] = "/tmp/parley-pushsend-XXXXXX";
static char providers_log[300];
static pid_t providers_pid;
static int providers_port;
static pf_webpush_t wp_fake;

/* ---- keys and fakes ------------------------------------------------------ */

static void write_key(EVP_PKEY *k, const char *path, int private)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(private ? PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) : PEM_write_PUBKEY(f, k), 1);
	fclose(f);
}

/* A service account's key file, as Firebase gives one, for the fake's
 * token endpoint. */
static void write_account(EVP_PKEY *rsa, const char *path)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *pem, uri[128];
	long n;
	json_t *j;

	assert_int_equal(PEM_write_bio_PrivateKey(b, rsa, NULL, NULL, 0, NULL, NULL), 1);
	n = BIO_get_mem_data(b, &pem);
	snprintf(uri, sizeof uri, "http://127.0.0.1:%d/token", providers_port);
	j = json_pack("{s:s, s:s, s:s, s:s%, s:s, s:s}", "type", "service_account", "project_id", "parley-test",
	              "private_key_id", "k1", "private_key", pem, (size_t)n, "client_email", CLIENT_EMAIL, "token_uri", uri);
	assert_non_null(j);
	assert_int_equal(json_dump_file(j, path, 0), 0);
	json_decref(j);
	BIO_free(b);
}

static void start_fakes(void)
{
	char apns_pub[300], fcm_pub[300], port_file[300];
	EVP_PKEY *ec = EVP_EC_gen("P-256"), *rsa = EVP_RSA_gen(2048);
	char path[300];

	assert_non_null(ec);
	assert_non_null(rsa);
	snprintf(path, sizeof path, "%s/apns.p8", dir);
	write_key(ec, path, 1);
	snprintf(apns_pub, sizeof apns_pub, "%s/apns.pub", dir);
	write_key(ec, apns_pub, 0);
	snprintf(fcm_pub, sizeof fcm_pub, "%s/fcm.pub", dir);
	write_key(rsa, fcm_pub, 0);
	snprintf(port_file, sizeof port_file, "%s/port", dir);
	snprintf(providers_log, sizeof providers_log, "%s/pushes.jsonl", dir);
	{
		const char *argv[] = {"tests/fakes/push_providers.mjs", dir, apns_pub, KEY_ID, TEAM_ID, fcm_pub, CLIENT_EMAIL,
		                      NULL};
		providers_port = hx_node(argv, port_file, &providers_pid);
	}
	snprintf(path, sizeof path, "%s/fcm.json", dir);
	write_account(rsa, path);
	pf_webpush_start(&wp_fake, dir);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(rsa);
}

/* Starts a node pushing to the fakes; more arguments (NULL-terminated)
 * after. */
static void start_node(hx_server_t *s, const char *const *more)
{
	char p8[300], account[300], url[64], grace[16], coalesce[16];
	const char *args[48];
	size_t n = 0, i;

	snprintf(p8, sizeof p8, "%s/apns.p8", dir);
	snprintf(account, sizeof account, "%s/fcm.json", dir);
	snprintf(url, sizeof url, "http://127.0.0.1:%d", providers_port);
	snprintf(grace, sizeof grace, "%d", GRACE_MS);
	snprintf(coalesce, sizeof coalesce, "%d", COALESCE_MS);
	args[n++] = "--push-allow-http-endpoints";
	args[n++] = "--apns-key-file";
	args[n++] = p8;
	args[n++] = "--apns-key-id";
	args[n++] = KEY_ID;
	args[n++] = "--apns-team-id";
	args[n++] = TEAM_ID;
	args[n++] = "--apns-url";
	args[n++] = url;
	args[n++] = "--apns-sandbox-url";
	args[n++] = url;
	args[n++] = "--fcm-service-account";
	args[n++] = account;
	args[n++] = "--fcm-url";
	args[n++] = url;
	args[n++] = "--push-grace-ms";
	args[n++] = grace;
	args[n++] = "--push-coalesce-ms";
	args[n++] = coalesce;
	for (i = 0; more && more[i]; i++)
		args[n++] = more[i];
	args[n] = NULL;
	assert_int_equal(hx_start(s, NULL, args), 0);
}

static int setup(void **state)
{
	(void)state;
	if (!mkdtemp(dir))
		return -1;
	start_fakes();
	start_node(&S, NULL);
	return 0;
}

static int teardown(void **state)
{
	char cmd[400];

	int rc;

	(void)state;
	/* A clean stop (and, under ASan, no leak) with senders that had
	 * work: the exit status says. */
	rc = hx_stop(&S, SIGTERM);
	hx_cleanup(&S);
	if (rc != 0)
		fprintf(stderr, "the node exited with %d\n", rc);
	hx_node_stop(providers_pid);
	pf_webpush_stop(&wp_fake);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		return -1;
	return rc == 0 ? 0 : -1;
}

/* ---- what the fakes recorded -------------------------------------------------- */

/* ---- targets ------------------------------------------------------------------- */

/* A hex APNs token of 64 digits starting with prefix, unique to the run. */
static void apns_token(const char *prefix, char out[65])
{
	static unsigned n;
	size_t i;

	snprintf(out, 65, "%s%08x%08x", prefix, (unsigned)getpid(), ++n);
	for (i = strlen(out); i < 64; i++)
		out[i] = "0123456789abcdef"[(i * 7 + n) % 16];
	out[64] = 0;
}

static void add_target(const hx_user_t *u, const char *body)
{
	pf_add_target(S.port, u, body);
}

static void add_apns(const hx_user_t *u, const char *token)
{
	char body[300];
	snprintf(body, sizeof body, "{\"platform\":\"apns\",\"token\":\"%s\",\"topic\":\"%s\"}", token, TOPIC);
	add_target(u, body);
}

static void add_fcm(const hx_user_t *u, const char *token)
{
	char body[300];
	snprintf(body, sizeof body, "{\"platform\":\"fcm\",\"token\":\"%s\"}", token);
	add_target(u, body);
}

/* A subscription at the fake's path (/push/...). */
static void add_webpush(const hx_user_t *u, const char *path)
{
	pf_add_webpush(S.port, u, &wp_fake, path);
}

static size_t targets(const hx_user_t *u)
{
	int st;
	json_t *j = hx_http(S.port, "GET", "/api/v1/push-targets", u->token, NULL, &st);
	size_t n;

	assert_int_equal(st, 200);
	n = json_array_size(json_object_get(j, "push_targets"));
	json_decref(j);
	return n;
}

/* Sends n messages "NAME i" from c to conv without waiting between them,
 * then takes their acks: a burst. */
static void burst(pc_conn_t *c, int64_t conv, const char *name, int n)
{
	int i, acks = 0;

	for (i = 1; i <= n; i++)
		hx_sendf(c, "{\"type\":\"send\",\"conv\":%lld,\"cmid\":\"%s-%d\",\"body\":\"%s %d\"}", (long long)conv, name,
		         i, name, i);
	while (acks < n) {
		json_t *j = hx_recv(c);
		const char *t = json_string_value(json_object_get(j, "type"));
		if (t && !strcmp(t, "ack"))
			acks++;
		else if (t && !strcmp(t, "error"))
			fail_msg("a send was refused: %s", json_dumps(j, 0));
		json_decref(j);
	}
}

/* ---- the cases --------------------------------------------------------------------- */

/* Twenty messages to a user with no connection: one push per target,
 * of the newest message, with the unread count, collapsed on the
 * conversation; each provider's protocol checked by its fake. */
static void test_offline_burst_is_one_push(void **state)
{
	hx_user_t alice, bob;
	char apns[65], fcm[80], wp[80], collapse[32];
	json_t *r, *p;
	pc_conn_t *a;
	int64_t conv;
	double before;

	(void)state;
	hx_user(S.port, "pb_alice", &alice);
	hx_user(S.port, "pb_bob", &bob);
	apns_token("a1", apns);
	snprintf(fcm, sizeof fcm, "fcm-burst-%s", apns);
	snprintf(wp, sizeof wp, "/push/burst-%s", apns);
	add_apns(&bob, apns);
	add_fcm(&bob, fcm);
	add_webpush(&bob, wp);
	conv = hx_direct(S.port, &alice, &bob);
	snprintf(collapse, sizeof collapse, "c%lld", (long long)conv);
	before = hx_metric(&S, "parley_push_notifications_total");
	a = hx_ws(S.port, &alice);
	burst(a, conv, "burst", 20);

	r = pf_wait_records(providers_log, "token", apns, 200, 1);
	p = json_array_get(r, 0);
	assert_string_equal(hx_str(json_object_get(p, "headers"), "topic"), TOPIC);
	assert_string_equal(hx_str(json_object_get(p, "headers"), "push_type"), "alert");
	assert_string_equal(hx_str(json_object_get(p, "headers"), "priority"), "10");
	assert_string_equal(hx_str(json_object_get(p, "headers"), "collapse_id"), collapse);
	p = json_object_get(json_object_get(p, "payload"), "aps");
	assert_string_equal(hx_str(json_object_get(p, "alert"), "title"), alice.name);
	assert_string_equal(hx_str(json_object_get(p, "alert"), "body"), "burst 20");
	assert_int_equal(hx_int(p, "badge"), 20);
	json_decref(r);

	r = pf_wait_records(providers_log, "token", fcm, 200, 1);
	p = json_object_get(json_array_get(r, 0), "payload");
	assert_string_equal(hx_str(json_object_get(p, "notification"), "body"), "burst 20");
	assert_string_equal(hx_str(json_object_get(p, "android"), "collapse_key"), collapse);
	assert_string_equal(hx_str(json_object_get(p, "android"), "priority"), "HIGH");
	assert_string_equal(hx_str(json_object_get(p, "data"), "badge"), "20");
	json_decref(r);

	r = pf_wait_records(wp_fake.log, "path", wp, 201, 1);
	p = json_array_get(r, 0);
	assert_string_equal(hx_str(p, "topic"), collapse);
	assert_string_equal(hx_str(p, "urgency"), "high");
	p = json_object_get(p, "payload");
	assert_string_equal(hx_str(p, "type"), "message");
	assert_int_equal(hx_int(p, "conv"), conv);
	assert_int_equal(hx_int(p, "seq"), 20);
	assert_string_equal(hx_str(p, "body"), "burst 20");
	assert_int_equal(hx_int(p, "badge"), 20);
	json_decref(r);

	/* Nothing more for the burst: one notification decided, and no
	 * second push to any target a coalescing period later. */
	pf_pause_ms(COALESCE_MS + 1000);
	assert_int_equal((int)(hx_metric(&S, "parley_push_notifications_total") - before), 1);
	r = pf_records(providers_log, "token", apns, -1);
	assert_int_equal(json_array_size(r), 1);
	json_decref(r);
	r = pf_records(providers_log, "token", fcm, -1);
	assert_int_equal(json_array_size(r), 1);
	json_decref(r);
	r = pf_records(wp_fake.log, "path", wp, -1);
	assert_int_equal(json_array_size(r), 1);
	json_decref(r);
	pc_close(a);
}

/* A user whose connection takes the messages and says so (delivered
 * receipts) is pushed nothing. */
static void test_online_user_gets_none(void **state)
{
	hx_user_t alice, bob;
	char wp[80], apns[65];
	pc_conn_t *a, *b;
	int64_t conv;
	double suppressed;
	json_t *r;
	int i;

	(void)state;
	hx_user(S.port, "po_alice", &alice);
	hx_user(S.port, "po_bob", &bob);
	apns_token("b2", apns);
	snprintf(wp, sizeof wp, "/push/online-%s", apns);
	add_webpush(&bob, wp);
	add_apns(&bob, apns);
	conv = hx_direct(S.port, &alice, &bob);
	suppressed = hx_metric(&S, "parley_push_suppressed_total");
	a = hx_ws(S.port, &alice);
	b = hx_ws(S.port, &bob);
	for (i = 0; i < 3; i++) {
		int64_t seq = hx_say(a, conv, "are you there");
		json_t *m = hx_next_msg(b, HX_TIMEOUT);
		assert_non_null(m);
		assert_int_equal(hx_int(m, "seq"), seq);
		hx_sendf(b, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"delivered\",\"seq\":%lld}", (long long)conv,
		         (long long)seq);
		json_decref(m);
	}
	pf_pause_ms(GRACE_MS + 1500);
	assert_true(hx_metric(&S, "parley_push_suppressed_total") > suppressed);
	r = pf_records(wp_fake.log, "path", wp, -1);
	assert_int_equal(json_array_size(r), 0);
	json_decref(r);
	r = pf_records(providers_log, "token", apns, -1);
	assert_int_equal(json_array_size(r), 0);
	json_decref(r);
	pc_close(a);
	pc_close(b);
}

/* Bob's laptop and phone are both woken; the laptop reads, and the
 * phone's notification is cleared (a silent push), not the laptop's. */
static void test_read_clears_other_devices(void **state)
{
	hx_user_t alice, bob, phone;
	char laptop_wp[80], phone_wp[80], phone_apns[65];
	pc_conn_t *a, *b;
	int64_t conv, seq;
	json_t *r, *p;

	(void)state;
	hx_user(S.port, "pc_alice", &alice);
	hx_user(S.port, "pc_bob", &bob);
	hx_login(S.port, &bob, &phone);
	apns_token("c3", phone_apns);
	snprintf(laptop_wp, sizeof laptop_wp, "/push/laptop-%s", phone_apns);
	snprintf(phone_wp, sizeof phone_wp, "/push/phone-%s", phone_apns);
	add_webpush(&bob, laptop_wp);
	add_webpush(&phone, phone_wp);
	add_apns(&phone, phone_apns);
	conv = hx_direct(S.port, &alice, &bob);
	a = hx_ws(S.port, &alice);
	seq = hx_say(a, conv, "dinner at eight?");
	json_decref(pf_wait_records(wp_fake.log, "path", laptop_wp, 201, 1));
	json_decref(pf_wait_records(wp_fake.log, "path", phone_wp, 201, 1));
	json_decref(pf_wait_records(providers_log, "token", phone_apns, 200, 1));

	b = hx_ws(S.port, &bob);
	hx_sendf(b, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":%lld}", (long long)conv,
	         (long long)seq);
	r = pf_wait_records(wp_fake.log, "path", phone_wp, 201, 2);
	p = json_object_get(json_array_get(r, 1), "payload");
	assert_string_equal(hx_str(p, "type"), "clear");
	assert_int_equal(hx_int(p, "conv"), conv);
	json_decref(r);
	r = pf_wait_records(providers_log, "token", phone_apns, 200, 2);
	p = json_array_get(r, 1);
	assert_string_equal(hx_str(json_object_get(p, "headers"), "push_type"), "background");
	assert_string_equal(hx_str(json_object_get(p, "headers"), "priority"), "5");
	assert_string_equal(hx_str(json_object_get(p, "payload"), "type"), "clear");
	assert_int_equal(hx_int(json_object_get(json_object_get(p, "payload"), "aps"), "content-available"), 1);
	json_decref(r);
	/* The device that read is not sent the clear. */
	r = pf_records(wp_fake.log, "path", laptop_wp, -1);
	assert_int_equal(json_array_size(r), 1);
	json_decref(r);
	pc_close(a);
	pc_close(b);
}

/* Targets every provider calls gone are deleted at once. */
static void test_gone_targets_are_removed(void **state)
{
	hx_user_t alice, bob;
	char apns[65], bad[65], fcm[80], wp[] = "/push/gone";
	pc_conn_t *a;
	int64_t conv;
	int i;

	(void)state;
	hx_user(S.port, "pg_alice", &alice);
	hx_user(S.port, "pg_bob", &bob);
	apns_token("dead", apns);
	apns_token("bad0", bad);
	snprintf(fcm, sizeof fcm, "dead-fcm-%s", apns);
	add_apns(&bob, apns);
	add_fcm(&bob, fcm);
	add_webpush(&bob, wp);
	{
		/* A second device for the second APNs token (one per device
		 * and platform). */
		hx_user_t tablet;
		hx_login(S.port, &bob, &tablet);
		add_apns(&tablet, bad);
	}
	assert_int_equal(targets(&bob), 4);
	conv = hx_direct(S.port, &alice, &bob);
	a = hx_ws(S.port, &alice);
	hx_say(a, conv, "anyone?");
	json_decref(pf_wait_records(providers_log, "token", apns, 410, 1));
	json_decref(pf_wait_records(providers_log, "token", bad, 400, 1));
	json_decref(pf_wait_records(providers_log, "token", fcm, 404, 1));
	for (i = 0; i < 200 && targets(&bob) > 0; i++)
		pf_pause_ms(50);
	assert_int_equal(targets(&bob), 0);
	assert_true(hx_metric(&S, "parley_push_targets_removed_total{provider=\"apns\"}") >= 2);
	assert_true(hx_metric(&S, "parley_push_targets_removed_total{provider=\"fcm\"}") >= 1);
	assert_true(hx_metric(&S, "parley_push_targets_removed_total{provider=\"webpush\"}") >= 1);
	pc_close(a);
}

/* A 429 with Retry-After: 2 is tried again no sooner than that (Web
 * Push and FCM give one); APNs' 429, which has none, after a backoff. */
static void test_rate_limited_is_retried_after(void **state)
{
	hx_user_t alice, bob;
	char apns[65], fcm[80], wp[100];
	pc_conn_t *a;
	int64_t conv;
	json_t *r;
	struct retry_case {
		const char *log, *key, *value;
		int ok;
		int64_t least_ms;
	} cases[3];
	int i;

	(void)state;
	hx_user(S.port, "pr_alice", &alice);
	hx_user(S.port, "pr_bob", &bob);
	apns_token("0429", apns);
	snprintf(fcm, sizeof fcm, "0429-fcm-%s", apns);
	snprintf(wp, sizeof wp, "/push/busy-once/%s", apns);
	add_apns(&bob, apns);
	add_fcm(&bob, fcm);
	add_webpush(&bob, wp);
	conv = hx_direct(S.port, &alice, &bob);
	a = hx_ws(S.port, &alice);
	hx_say(a, conv, "slowly now");
	cases[0] = (struct retry_case){wp_fake.log, "path", wp, 201, 2000};
	cases[1] = (struct retry_case){providers_log, "token", fcm, 200, 2000};
	cases[2] = (struct retry_case){providers_log, "token", apns, 200, 400};
	for (i = 0; i < 3; i++) {
		json_t *first, *second;
		json_decref(pf_wait_records(cases[i].log, cases[i].key, cases[i].value, cases[i].ok, 1));
		r = pf_records(cases[i].log, cases[i].key, cases[i].value, -1);
		assert_int_equal(json_array_size(r), 2);
		first = json_array_get(r, 0);
		second = json_array_get(r, 1);
		assert_int_equal(hx_int(first, "status"), 429);
		assert_int_equal(hx_int(second, "status"), cases[i].ok);
		/* The fakes' clock, in ms: the retry waited. */
		if (hx_int(second, "at") - hx_int(first, "at") < cases[i].least_ms)
			fail_msg("%s retried after %lld ms, sooner than %lld", cases[i].value,
			         (long long)(hx_int(second, "at") - hx_int(first, "at")), (long long)cases[i].least_ms);
		json_decref(r);
	}
	assert_true(hx_metric(&S, "parley_push_failures_total{provider=\"webpush\",reason=\"rate_limited\"}") >= 1);
	assert_true(hx_metric(&S, "parley_push_retries_total{provider=\"fcm\"}") >= 1);
	pc_close(a);
}

/* A group's message wakes every member but the sender. */
static void test_group_members_are_pushed(void **state)
{
	hx_user_t alice, bob, carol;
	char bob_wp[80], carol_wp[80], alice_wp[80], body[200];
	pc_conn_t *a;
	json_t *j, *r, *p;
	int64_t conv;
	int st;

	(void)state;
	hx_user(S.port, "pgr_alice", &alice);
	hx_user(S.port, "pgr_bob", &bob);
	hx_user(S.port, "pgr_carol", &carol);
	snprintf(bob_wp, sizeof bob_wp, "/push/group-bob-%lld", (long long)bob.id);
	snprintf(carol_wp, sizeof carol_wp, "/push/group-carol-%lld", (long long)carol.id);
	snprintf(alice_wp, sizeof alice_wp, "/push/group-alice-%lld", (long long)alice.id);
	add_webpush(&bob, bob_wp);
	add_webpush(&carol, carol_wp);
	add_webpush(&alice, alice_wp);
	snprintf(body, sizeof body, "{\"title\":\"Climbing\",\"members\":[%lld,%lld]}", (long long)bob.id,
	         (long long)carol.id);
	j = hx_http(S.port, "POST", "/api/v1/conversations", alice.token, body, &st);
	assert_int_equal(st, 201);
	conv = hx_int(j, "conversation_id");
	json_decref(j);
	a = hx_ws(S.port, &alice);
	hx_say(a, conv, "saturday?");
	r = pf_wait_records(wp_fake.log, "path", bob_wp, 201, 1);
	p = json_object_get(json_array_get(r, 0), "payload");
	assert_string_equal(hx_str(p, "title"), "Climbing");
	snprintf(body, sizeof body, "%s: saturday?", alice.name);
	assert_string_equal(hx_str(p, "body"), body);
	json_decref(r);
	json_decref(pf_wait_records(wp_fake.log, "path", carol_wp, 201, 1));
	pf_pause_ms(COALESCE_MS + 500);
	r = pf_records(wp_fake.log, "path", alice_wp, -1);
	assert_int_equal(json_array_size(r), 0); /* not the sender */
	json_decref(r);
	pc_close(a);
}

/* A member who muted a group is not woken by it (until it unmutes); one
 * who turned previews off is, but told neither who wrote nor what. The
 * settings refuse what they do not know, and a non-member cannot mute. */
static void test_muted_and_previews_off(void **state)
{
	hx_user_t alice, bob, carol, dave;
	char bob_wp[80], carol_wp[80], body[200], path[80];
	pc_conn_t *a;
	json_t *j, *r, *p;
	int64_t conv;
	double muted;
	char *text;
	int st;

	(void)state;
	hx_user(S.port, "pmu_alice", &alice);
	hx_user(S.port, "pmu_bob", &bob);
	hx_user(S.port, "pmu_carol", &carol);
	hx_user(S.port, "pmu_dave", &dave);
	snprintf(bob_wp, sizeof bob_wp, "/push/mute-bob-%lld", (long long)bob.id);
	snprintf(carol_wp, sizeof carol_wp, "/push/mute-carol-%lld", (long long)carol.id);
	add_webpush(&bob, bob_wp);
	add_webpush(&carol, carol_wp);
	snprintf(body, sizeof body, "{\"title\":\"Quiet\",\"members\":[%lld,%lld]}", (long long)bob.id,
	         (long long)carol.id);
	j = hx_http(S.port, "POST", "/api/v1/conversations", alice.token, body, &st);
	assert_int_equal(st, 201);
	conv = hx_int(j, "conversation_id");
	assert_false(json_is_true(json_object_get(j, "muted")));
	json_decref(j);
	snprintf(path, sizeof path, "/api/v1/conversations/%lld", (long long)conv);

	/* Refused, and nothing changed. */
	json_decref(hx_http(S.port, "PATCH", path, bob.token, "{\"muted\":1}", &st));
	assert_int_equal(st, 400);
	json_decref(hx_http(S.port, "PATCH", path, bob.token, "{\"silent\":true}", &st));
	assert_int_equal(st, 400);
	json_decref(hx_http(S.port, "PATCH", path, dave.token, "{\"muted\":true}", &st));
	assert_true(st == 403 || st == 404);
	json_decref(hx_http(S.port, "PATCH", "/api/v1/settings", carol.token, "{\"push_previews\":\"no\"}", &st));
	assert_int_equal(st, 400);
	j = hx_http(S.port, "GET", path, bob.token, NULL, &st);
	assert_int_equal(st, 200);
	assert_false(json_is_true(json_object_get(j, "muted")));
	json_decref(j);

	j = hx_http(S.port, "PATCH", path, bob.token, "{\"muted\":true}", &st);
	assert_int_equal(st, 200);
	assert_true(json_is_true(json_object_get(j, "muted")));
	assert_int_equal(hx_int(j, "conversation_id"), conv);
	json_decref(j);
	j = hx_http(S.port, "GET", path, alice.token, NULL, &st);
	assert_false(json_is_true(json_object_get(j, "muted"))); /* Bob's own */
	json_decref(j);
	j = hx_http(S.port, "PATCH", "/api/v1/settings", carol.token, "{\"push_previews\":false}", &st);
	assert_int_equal(st, 200);
	assert_true(json_is_false(json_object_get(j, "push_previews")));
	assert_string_equal(hx_str(j, "group_adds"), "everyone");
	json_decref(j);

	muted = hx_metric(&S, "parley_push_muted_total");
	a = hx_ws(S.port, &alice);
	hx_say(a, conv, "the secret plan");
	r = pf_wait_records(wp_fake.log, "path", carol_wp, 201, 1);
	p = json_object_get(json_array_get(r, 0), "payload");
	assert_string_equal(hx_str(p, "title"), "Parley");
	assert_string_equal(hx_str(p, "body"), "New message");
	text = json_dumps(p, 0);
	assert_null(strstr(text, "secret"));
	free(text);
	json_decref(r);
	pf_pause_ms(COALESCE_MS + 500);
	r = pf_records(wp_fake.log, "path", bob_wp, -1);
	assert_int_equal(json_array_size(r), 0);
	json_decref(r);
	assert_true(hx_metric(&S, "parley_push_muted_total") > muted);

	/* Unmuted, Bob is woken again; the message still counts as unread. */
	j = hx_http(S.port, "PATCH", path, bob.token, "{\"muted\":false}", &st);
	assert_int_equal(st, 200);
	assert_false(json_is_true(json_object_get(j, "muted")));
	assert_int_equal(hx_int(j, "unread"), 1);
	json_decref(j);
	hx_say(a, conv, "still on?");
	r = pf_wait_records(wp_fake.log, "path", bob_wp, 201, 1);
	p = json_object_get(json_array_get(r, 0), "payload");
	snprintf(body, sizeof body, "%s: still on?", alice.name);
	assert_string_equal(hx_str(p, "body"), body);
	assert_int_equal(hx_int(p, "badge"), 2);
	json_decref(r);
	pc_close(a);
}

/* The metric fmt (one %s: the provider) of each of the three providers,
 * into v[3]. */
#define REJECTED "parley_push_failures_total{provider=\"%s\",reason=\"rejected\"}"
#define DEAD "parley_push_dead_letter_total{provider=\"%s\"}"
static const char *const PROVIDERS[3] = {"apns", "fcm", "webpush"};

static void provider_metrics(hx_server_t *h, const char *fmt, double v[3])
{
	char name[160];
	int i;

	for (i = 0; i < 3; i++) {
		snprintf(name, sizeof name, fmt, PROVIDERS[i]);
		v[i] = hx_metric(h, name);
	}
}

/* Waits (up to 5 s) until each provider's metric fmt is above before[i]. */
static void provider_metrics_rise(hx_server_t *h, const char *fmt, const double before[3])
{
	double now[3];
	int k, i, all = 0;

	for (k = 0; k < 100 && !all; k++) {
		provider_metrics(h, fmt, now);
		for (all = 1, i = 0; i < 3; i++)
			all &= now[i] > before[i];
		if (!all)
			pf_pause_ms(50);
	}
	for (i = 0; i < 3; i++)
		if (now[i] <= before[i])
			fail_msg("%s: %s stayed at %g", PROVIDERS[i], fmt, now[i]);
}

/* Answers no provider gives (an HTML page from a proxy, a redirect) are
 * refusals: logged, counted by provider and reason, not retried, the
 * targets kept, and the push path goes on. */
static void test_unexpected_answers_are_counted(void **state)
{
	hx_user_t alice, bob, carol;
	char apns[65], fcm[80], wp[80];
	double before[3];
	json_t *r;
	pc_conn_t *a;
	int64_t conv;

	(void)state;
	hx_user(S.port, "pun_alice", &alice);
	hx_user(S.port, "pun_bob", &bob);
	apns_token("0dd0", apns);
	snprintf(fcm, sizeof fcm, "0dd0-fcm-%s", apns);
	snprintf(wp, sizeof wp, "/push/odd-%s", apns);
	add_apns(&bob, apns);
	add_fcm(&bob, fcm);
	add_webpush(&bob, wp);
	conv = hx_direct(S.port, &alice, &bob);
	provider_metrics(&S, REJECTED, before);
	a = hx_ws(S.port, &alice);
	hx_say(a, conv, "anyone?");
	json_decref(pf_wait_records(providers_log, "token", apns, 400, 1));
	json_decref(pf_wait_records(providers_log, "token", fcm, 400, 1));
	json_decref(pf_wait_records(wp_fake.log, "path", wp, 302, 1));
	provider_metrics_rise(&S, REJECTED, before);
	pf_pause_ms(1500);
	/* Once each: a refusal is not tried again. */
	r = pf_records(providers_log, "token", apns, -1);
	assert_int_equal(json_array_size(r), 1);
	json_decref(r);
	assert_int_equal(targets(&bob), 3);
	/* And the path goes on: Carol is pushed as ever. */
	hx_user(S.port, "pun_carol", &carol);
	snprintf(wp, sizeof wp, "/push/after-odd-%lld", (long long)carol.id);
	add_webpush(&carol, wp);
	conv = hx_direct(S.port, &alice, &carol);
	hx_say(a, conv, "carol?");
	json_decref(pf_wait_records(wp_fake.log, "path", wp, 201, 1));
	pc_close(a);
}

/* While every provider hangs on an offline user's pushes (each send
 * held until its timeout), two online users talk as ever: the push
 * path's backlog grows, the real-time path does not wait on it. */
static void test_hanging_provider_leaves_online_delivery(void **state)
{
	hx_server_t h;
	hx_user_t alice, bob, carol;
	char apns[65], fcm[80], wp[80];
	const char *more[] = {"--push-timeout-ms", "4000", NULL};
	pc_conn_t *a, *b;
	int64_t to_carol, to_bob;
	int i, saved = S.port;

	(void)state;
	start_node(&h, more);
	S.port = h.port; /* the helpers' server */
	hx_user(h.port, "ph_alice", &alice);
	hx_user(h.port, "ph_bob", &bob);
	hx_user(h.port, "ph_carol", &carol);
	apns_token("0ff0", apns);
	snprintf(fcm, sizeof fcm, "0ff0-fcm-%s", apns);
	snprintf(wp, sizeof wp, "/push/hang-%s", apns);
	add_apns(&carol, apns);
	add_fcm(&carol, fcm);
	add_webpush(&carol, wp);
	to_carol = hx_direct(h.port, &alice, &carol);
	to_bob = hx_direct(h.port, &alice, &bob);
	a = hx_ws(h.port, &alice);
	b = hx_ws(h.port, &bob);
	hx_say(a, to_carol, "carol?");
	/* Every provider now holds a push it will not answer. */
	json_decref(pf_wait_records(providers_log, "token", apns, 0, 1));
	json_decref(pf_wait_records(providers_log, "token", fcm, 0, 1));
	json_decref(pf_wait_records(wp_fake.log, "path", wp, 0, 1));
	for (i = 1; i <= 50; i++) {
		char text[32];
		int64_t seq;
		json_t *m;

		snprintf(text, sizeof text, "live %d", i);
		hx_say(a, to_carol, "still there?"); /* more backlog for the push path */
		seq = hx_say(a, to_bob, text);
		m = hx_next_msg(b, HX_TIMEOUT);
		assert_non_null(m);
		assert_int_equal(hx_int(m, "seq"), seq);
		assert_string_equal(hx_str(m, "body"), text);
		json_decref(m);
	}
	/* The providers were still hanging when the talk ended. */
	assert_true(hx_metric(&h, "parley_push_in_flight{provider=\"webpush\"}") +
	                hx_metric(&h, "parley_push_in_flight{provider=\"apns\"}") +
	                hx_metric(&h, "parley_push_in_flight{provider=\"fcm\"}") +
	                hx_metric(&h, "parley_push_retries_total{provider=\"apns\"}") >
	            0);
	pc_close(a);
	pc_close(b);
	S.port = saved;
	hx_kill(&h);
}

/* A push the provider keeps failing (500 every time) is tried
 * --push-max-attempts times with backoff, then dead-lettered and
 * counted, never tried again; the target stays (a server error is not
 * the token's fault). With --push-rate, a provider's sends are spread
 * to that many a second. */
static void test_failing_push_is_dead_lettered_and_rates_kept(void **state)
{
	hx_server_t h;
	hx_user_t alice, bob, many[6];
	char apns[65], fcm[80], wp[80], path[6][80];
	const char *more[] = {"--push-max-attempts", "2", "--push-rate", "2", NULL};
	double before[3];
	int64_t first = 0, last = 0;
	pc_conn_t *a;
	json_t *r;
	int i, saved = S.port;

	(void)state;
	start_node(&h, more);
	S.port = h.port;
	hx_user(h.port, "pd_alice", &alice);
	hx_user(h.port, "pd_bob", &bob);
	apns_token("0500", apns);
	snprintf(fcm, sizeof fcm, "0500-fcm-%s", apns);
	snprintf(wp, sizeof wp, "/push/broken-%s", apns);
	add_apns(&bob, apns);
	add_fcm(&bob, fcm);
	add_webpush(&bob, wp);
	provider_metrics(&h, DEAD, before);
	a = hx_ws(h.port, &alice);
	hx_say(a, hx_direct(h.port, &alice, &bob), "are you up?");
	json_decref(pf_wait_records(providers_log, "token", apns, 500, 2));
	json_decref(pf_wait_records(providers_log, "token", fcm, 500, 2));
	json_decref(pf_wait_records(wp_fake.log, "path", wp, 500, 2));
	provider_metrics_rise(&h, DEAD, before);
	/* Longer than the next backoff would be (2 s at most): no third try. */
	pf_pause_ms(2500);
	r = pf_records(providers_log, "token", apns, -1);
	assert_int_equal(json_array_size(r), 2);
	json_decref(r);
	r = pf_records(wp_fake.log, "path", wp, -1);
	assert_int_equal(json_array_size(r), 2);
	json_decref(r);
	assert_int_equal(targets(&bob), 3);

	/* Six offline users, one Web Push each, a message each: two at
	 * once (the burst), then two a second. */
	for (i = 0; i < 6; i++) {
		char who[32];
		snprintf(who, sizeof who, "pd_many%d", i);
		hx_user(h.port, who, &many[i]);
		snprintf(path[i], sizeof path[i], "/push/rated-%lld", (long long)many[i].id);
		add_webpush(&many[i], path[i]);
	}
	for (i = 0; i < 6; i++)
		hx_say(a, hx_direct(h.port, &alice, &many[i]), "hello");
	for (i = 0; i < 6; i++) {
		int64_t at;
		r = pf_wait_records(wp_fake.log, "path", path[i], 201, 1);
		at = (int64_t)json_integer_value(json_object_get(json_array_get(r, 0), "at"));
		json_decref(r);
		if (!first || at < first)
			first = at;
		if (at > last)
			last = at;
	}
	/* Four past the burst at two a second: 2 s at least (less a
	 * little for the clocks of two processes). */
	printf("# six pushes at --push-rate 2 spread over %lld ms\n", (long long)(last - first));
	assert_true(last - first >= 1800);
	pc_close(a);
	S.port = saved;
	hx_kill(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_offline_burst_is_one_push),
		cmocka_unit_test(test_online_user_gets_none),
		cmocka_unit_test(test_read_clears_other_devices),
		cmocka_unit_test(test_gone_targets_are_removed),
		cmocka_unit_test(test_rate_limited_is_retried_after),
		cmocka_unit_test(test_group_members_are_pushed),
		cmocka_unit_test(test_muted_and_previews_off),
		cmocka_unit_test(test_unexpected_answers_are_counted),
		cmocka_unit_test(test_hanging_provider_leaves_online_delivery),
		cmocka_unit_test(test_failing_push_is_dead_lettered_and_rates_kept),
	};

	hx_filter();
	return cmocka_run_group_tests(tests, setup, teardown);
}
