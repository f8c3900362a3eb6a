/* integ_push.c - push targets against the real binary, on the store the
 * run names ($PARLEY_TEST_STORE): each platform registered for the
 * caller's device, listed without its token, replaced by a second one,
 * removed by its owner only, gone with the device's logout or eviction,
 * and taken over by the device that registers it last; every malformed
 * token, topic, subscription and endpoint refused with bad_request and
 * nothing stored, endpoints on this host or a private network above all
 * (unless --push-allow-http-endpoints); and the VAPID public key, a
 * P-256 point, the same after a restart. */
#include "harness.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

static hx_server_t S;

/* RFC 8291's example subscription keys (section 5): a valid point. */
#define P256DH "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
#define AUTH "BTBZMqHH6r4Tts7J_aSIgg"
#define APNS_TOKEN "4f0a3c1b2d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"

static int stop_server(void **state)
{
	(void)state;
	hx_kill(&S);
	return 0;
}

static int last_status;

static json_t *req(const hx_user_t *u, const char *method, const char *path, const char *body)
{
	return hx_http(S.port, method, path, u ? u->token : NULL, body, &last_status);
}

/* POSTs a target (printf-style body) as u; the answer, status in
 * last_status. */
static json_t *put(const hx_user_t *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static json_t *put(const hx_user_t *u, const char *fmt, ...)
{
	char body[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(body, sizeof body, fmt, ap);
	va_end(ap);
	return req(u, "POST", "/api/v1/push-targets", body);
}

static json_t *webpush_body(const hx_user_t *u, const char *endpoint, const char *p256dh, const char *auth)
{
	return put(u,
	           "{\"platform\":\"webpush\",\"subscription\":{\"endpoint\":\"%s\",\"expirationTime\":null,"
	           "\"keys\":{\"p256dh\":\"%s\",\"auth\":\"%s\"}}}",
	           endpoint, p256dh, auth);
}

/* How many targets u has. */
static size_t count(const hx_user_t *u)
{
	json_t *j = req(u, "GET", "/api/v1/push-targets", NULL);
	size_t n;

	assert_int_equal(last_status, 200);
	n = json_array_size(json_object_get(j, "push_targets"));
	json_decref(j);
	return n;
}

static void refused(json_t *j, int status, const char *code)
{
	json_t *e = json_object_get(j, "error");

	assert_int_equal(last_status, status);
	assert_non_null(e);
	assert_string_equal(hx_str(e, "code"), code);
	assert_true(strlen(hx_str(e, "message")) > 0);
	json_decref(j);
}

/* Each platform, listed; a second of one platform replaces the first. */
static void test_register_list_replace(void **state)
{
	hx_user_t a, a2;
	json_t *j, *list;
	int64_t apns_id;
	size_t i;

	(void)state;
	HX_START(&S, "--fast-password-hashing");
	hx_user(S.port, "pusha", &a);
	hx_login(S.port, &a, &a2);
	j = put(&a, "{\"platform\":\"apns\",\"token\":\"%s\",\"topic\":\"com.example.parley\",\"environment\":\"sandbox\"}",
	        APNS_TOKEN);
	assert_int_equal(last_status, 201);
	assert_string_equal(hx_str(j, "platform"), "apns");
	assert_string_equal(hx_str(j, "topic"), "com.example.parley");
	assert_string_equal(hx_str(j, "environment"), "sandbox");
	assert_int_equal(hx_int(j, "device_id"), a.device);
	assert_true(json_is_true(json_object_get(j, "current")));
	assert_null(json_object_get(j, "token")); /* never shown back */
	apns_id = hx_int(j, "push_target_id");
	json_decref(j);
	j = put(&a, "{\"platform\":\"fcm\",\"token\":\"dGVzdA:APA91bH-x_y.z\"}");
	assert_int_equal(last_status, 201);
	json_decref(j);
	j = webpush_body(&a2, "https://fcm.googleapis.com/fcm/send/abc:def", P256DH, AUTH);
	assert_int_equal(last_status, 201);
	assert_string_equal(hx_str(j, "endpoint"), "https://fcm.googleapis.com/fcm/send/abc:def");
	assert_int_equal(hx_int(j, "device_id"), a2.device);
	json_decref(j);
	assert_int_equal(count(&a), 3);
	/* The token rotated: the device's apns target is replaced. */
	j = put(&a, "{\"platform\":\"apns\",\"token\":\"%.62s00\",\"topic\":\"com.example.parley\"}", APNS_TOKEN);
	assert_int_equal(last_status, 201);
	assert_int_equal(hx_int(j, "push_target_id"), apns_id);
	assert_string_equal(hx_str(j, "environment"), "production");
	json_decref(j);
	list = req(&a2, "GET", "/api/v1/push-targets", NULL);
	assert_int_equal(last_status, 200);
	assert_int_equal(json_array_size(json_object_get(list, "push_targets")), 3);
	for (i = 0; i < 3; i++) {
		json_t *t = json_array_get(json_object_get(list, "push_targets"), i);
		assert_int_equal(json_is_true(json_object_get(t, "current")), hx_int(t, "device_id") == a2.device);
	}
	json_decref(list);
	/* Without a token, nothing. */
	refused(req(NULL, "GET", "/api/v1/push-targets", NULL), 401, "unauthorized");
	refused(put(NULL, "{\"platform\":\"fcm\",\"token\":\"x\"}"), 401, "unauthorized");
	hx_finish(&S);
}

/* Everything malformed is refused, and nothing is stored. */
static void test_bad_targets(void **state)
{
	static const char *const bodies[] = {
		"{}",
		"{\"platform\":\"carrier-pigeon\",\"token\":\"x\"}",
		"{\"platform\":7}",
		"{\"platform\":\"apns\",\"token\":\"xyz\",\"topic\":\"com.example\"}",
		"{\"platform\":\"apns\",\"token\":\"" APNS_TOKEN "\"}",
		"{\"platform\":\"apns\",\"token\":\"" APNS_TOKEN "0\",\"topic\":\"com.example\"}",
		"{\"platform\":\"apns\",\"token\":\"" APNS_TOKEN "\",\"topic\":\"com example\"}",
		"{\"platform\":\"apns\",\"token\":\"" APNS_TOKEN "\",\"topic\":\"com.example\",\"environment\":\"test\"}",
		"{\"platform\":\"apns\",\"token\":\"" APNS_TOKEN "\",\"topic\":\"com.example\",\"extra\":1}",
		"{\"platform\":\"fcm\",\"token\":\"\"}",
		"{\"platform\":\"fcm\",\"token\":\"has space\"}",
		"{\"platform\":\"fcm\",\"token\":\"ok\",\"topic\":\"no\"}",
		"{\"platform\":\"webpush\"}",
		"{\"platform\":\"webpush\",\"subscription\":\"https://push.example.com/x\"}",
		"{\"platform\":\"webpush\",\"subscription\":{\"endpoint\":\"https://push.example.com/x\"}}",
		"{\"platform\":\"webpush\",\"subscription\":{\"endpoint\":\"https://push.example.com/x\",\"keys\":"
		"{\"p256dh\":\"" P256DH "\",\"auth\":\"" AUTH "\"},\"expirationTime\":\"soon\"}}",
		"{\"platform\":\"webpush\",\"subscription\":{\"endpoint\":\"https://push.example.com/x\",\"keys\":"
		"{\"p256dh\":\"" P256DH "\",\"auth\":\"" AUTH "\",\"more\":\"\"}}}",
		"[1,2]",
		"not json",
	};
	static const char *const endpoints[] = {
		"http://push.example.com/x",   "https://localhost/x",       "https://LOCALHOST./x",
		"https://a.b.localhost/x",     "https://127.0.0.1/x",      "https://127.1/x",
		"https://2130706433/x",        "https://0x7f000001/x",     "https://10.1.2.3/x",
		"https://172.16.0.1/x",        "https://192.168.1.1:8443/x", "https://169.254.169.254/latest",
		"https://100.64.0.1/x",        "https://0.0.0.0/x",        "https://[::1]/x",
		"https://[::ffff:127.0.0.1]/x", "https://[fe80::1]/x",      "https://[fd00::1]/x",
		"https://intranet/x",          "https://user@push.example.com/x", "https:///x",
		"https://push.example.com:abc/x", "https://push example.com/x", "ftp://push.example.com/x",
		"https://[::1/x",
	};
	hx_user_t u;
	char bad_point[sizeof P256DH];
	size_t i;

	(void)state;
	HX_START(&S, "--fast-password-hashing");
	hx_user(S.port, "pushbad", &u);
	for (i = 0; i < sizeof bodies / sizeof *bodies; i++) {
		json_t *j = req(&u, "POST", "/api/v1/push-targets", bodies[i]);
		assert_int_equal(last_status, 400);
		json_decref(j);
	}
	for (i = 0; i < sizeof endpoints / sizeof *endpoints; i++) {
		json_t *j = webpush_body(&u, endpoints[i], P256DH, AUTH);
		if (last_status != 400)
			fail_msg("the endpoint %s was accepted (%d)", endpoints[i], last_status);
		refused(j, 400, "bad_request");
	}
	/* A point off the curve, a key of the wrong size, an auth of 15 bytes. */
	snprintf(bad_point, sizeof bad_point, "%s", P256DH);
	bad_point[20] = bad_point[20] == 'A' ? 'B' : 'A';
	refused(webpush_body(&u, "https://push.example.com/x", bad_point, AUTH), 400, "bad_request");
	refused(webpush_body(&u, "https://push.example.com/x", "BCVxsr7N", AUTH), 400, "bad_request");
	refused(webpush_body(&u, "https://push.example.com/x", P256DH, "BTBZMqHH6r4Tts7J_aSI"), 400, "bad_request");
	assert_int_equal(count(&u), 0);
	/* The longest FCM token taken is 1,024 bytes (PostgreSQL indexes it). */
	{
		char longest[1026];
		memset(longest, 'a', sizeof longest - 1);
		longest[1025] = 0;
		refused(put(&u, "{\"platform\":\"fcm\",\"token\":\"%s\"}", longest), 400, "bad_request");
		longest[1024] = 0;
		json_decref(put(&u, "{\"platform\":\"fcm\",\"token\":\"%s\"}", longest));
		assert_int_equal(last_status, 201);
		assert_int_equal(count(&u), 1);
		json_decref(req(&u, "DELETE", "/api/v1/sessions/current", NULL)); /* and gone with the device */
		hx_login(S.port, &u, &u);
	}
	assert_int_equal(count(&u), 0);
	/* A public one is taken, padded keys too. */
	json_decref(webpush_body(&u, "https://updates.push.services.mozilla.com/wpush/v2/gAAAA", P256DH, AUTH "=="));
	assert_int_equal(last_status, 201);
	assert_int_equal(count(&u), 1);
	hx_finish(&S);
}

/* For tests against a local fake: http and loopback allowed. */
static void test_local_endpoints_for_tests(void **state)
{
	hx_user_t u;

	(void)state;
	HX_START(&S, "--fast-password-hashing", "--push-allow-http-endpoints");
	hx_user(S.port, "pushlocal", &u);
	json_decref(webpush_body(&u, "http://127.0.0.1:9/push/1", P256DH, AUTH));
	assert_int_equal(last_status, 201);
	hx_finish(&S);
}

/* Removed by the owner only; gone with the device's logout or eviction;
 * a token registered on another user's device leaves the first. */
static void test_remove_and_devices(void **state)
{
	hx_user_t a, a2, a3, b;
	json_t *j;
	int64_t id;

	(void)state;
	HX_START(&S, "--fast-password-hashing", "--max-devices", "2");
	hx_user(S.port, "pushown", &a);
	hx_user(S.port, "pushother", &b);
	j = put(&a, "{\"platform\":\"fcm\",\"token\":\"tok-a1\"}");
	id = hx_int(j, "push_target_id");
	json_decref(j);
	{
		char path[64];
		snprintf(path, sizeof path, "/api/v1/push-targets/%lld", (long long)id);
		refused(req(&b, "DELETE", path, NULL), 404, "not_found");
		assert_int_equal(count(&a), 1);
		json_decref(req(&a, "DELETE", path, NULL));
		assert_int_equal(last_status, 204);
		refused(req(&a, "DELETE", path, NULL), 404, "not_found");
		refused(req(&a, "DELETE", "/api/v1/push-targets/abc", NULL), 404, "not_found");
	}
	/* A logout takes its device's target. */
	hx_login(S.port, &a, &a2);
	json_decref(put(&a2, "{\"platform\":\"fcm\",\"token\":\"tok-a2\"}"));
	assert_int_equal(count(&a), 1);
	json_decref(req(&a2, "DELETE", "/api/v1/sessions/current", NULL));
	assert_int_equal(last_status, 204);
	assert_int_equal(count(&a), 0);
	/* So does an eviction: a third login past --max-devices 2 logs out
	 * the oldest (a's first). */
	json_decref(put(&a, "{\"platform\":\"fcm\",\"token\":\"tok-a1\"}"));
	hx_login(S.port, &a, &a2);
	hx_login(S.port, &a, &a3);
	assert_int_equal(count(&a2), 0);
	/* The token moves to whoever registers it last: b's phone now. */
	json_decref(put(&a2, "{\"platform\":\"fcm\",\"token\":\"shared-token\"}"));
	assert_int_equal(count(&a2), 1);
	json_decref(put(&b, "{\"platform\":\"fcm\",\"token\":\"shared-token\"}"));
	assert_int_equal(last_status, 201);
	assert_int_equal(count(&a2), 0);
	assert_int_equal(count(&b), 1);
	hx_finish(&S);
}

/* The VAPID key: public, a P-256 point in base64url, the same after a
 * restart on the same store. */
static void test_vapid_key(void **state)
{
	unsigned char point[65];
	char first[128];
	size_t n = 0;
	json_t *j;
	char store[256];

	(void)state;
	HX_START(&S, "--fast-password-hashing");
	j = req(NULL, "GET", "/api/v1/push-targets/vapid", NULL);
	assert_int_equal(last_status, 200);
	snprintf(first, sizeof first, "%s", hx_str(j, "public_key"));
	json_decref(j);
	assert_int_equal(strlen(first), 87);
	assert_int_equal(sodium_base642bin(point, sizeof point, first, strlen(first), NULL, &n, NULL,
	                                   sodium_base64_VARIANT_URLSAFE_NO_PADDING),
	                 0);
	assert_int_equal(n, 65);
	assert_int_equal(point[0], 4);
	refused(req(NULL, "POST", "/api/v1/push-targets/vapid", "{}"), 405, "bad_request");
	snprintf(store, sizeof store, "%s", S.store);
	assert_int_equal(hx_stop(&S, SIGTERM), 0);
	assert_int_equal(hx_start(&S, store, (const char *const[]){"--fast-password-hashing", NULL}), 0);
	S.own_store = 1; /* removed at the end, as the first start's */
	j = req(NULL, "GET", "/api/v1/push-targets/vapid", NULL);
	assert_int_equal(last_status, 200);
	assert_string_equal(hx_str(j, "public_key"), first);
	json_decref(j);
	hx_finish(&S);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_register_list_replace, stop_server),
		cmocka_unit_test_teardown(test_bad_targets, stop_server),
		cmocka_unit_test_teardown(test_local_endpoints_for_tests, stop_server),
		cmocka_unit_test_teardown(test_remove_and_devices, stop_server),
		cmocka_unit_test_teardown(test_vapid_key, stop_server),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
