/* unit_webpush.c - Web Push message encryption against RFC 8291's worked
 * example (section 5 and appendix A: the same keys and salt give the same
 * body, byte for byte), the structure of a body made with a fresh key and
 * salt, the limits, and a VAPID authorization whose JWT carries the
 * endpoint's origin, its expiry and contact, and whose ES256 signature
 * verifies with the public key it names; and a push sent to a fake Web
 * Push service (tests/fakes/webpush_service.mjs, in Node), which checks
 * the VAPID JWT and decrypts the body as only the subscriber could: the
 * plaintext arrives, a gone subscription answers 410, a busy service 429
 * with its Retry-After, and an endpoint on this host is not called unless
 * local ones are allowed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <sodium.h>

#include "webpush.h"

#define PLAINTEXT "When I grow up, I want to be a watermelon"
#define UA_PUBLIC "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
#define AUTH "BTBZMqHH6r4Tts7J_aSIgg"
#define AS_PRIVATE "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
#define AS_PUBLIC "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
#define SALT "DGv6ra1nlYgDCS1FRnbzlw"
#define BODY                                                                                                   \
	"DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6" \
	"PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"

static size_t unb64(const char *s, unsigned char *out, size_t cap)
{
	size_t n = 0;

	assert_int_equal(sodium_base642bin(out, cap, s, strlen(s), NULL, &n, NULL,
	                                   sodium_base64_VARIANT_URLSAFE_NO_PADDING),
	                 0);
	return n;
}

static void test_rfc8291_example(void **state)
{
	unsigned char ua[65], auth[16], priv[32], pub[65], salt[16], want[256], body[WEBPUSH_BODY_MAX];
	size_t wn, n = 0;
	EVP_PKEY *as;

	(void)state;
	assert_int_equal(unb64(UA_PUBLIC, ua, sizeof ua), 65);
	assert_int_equal(unb64(AUTH, auth, sizeof auth), 16);
	assert_int_equal(unb64(AS_PRIVATE, priv, sizeof priv), 32);
	assert_int_equal(unb64(AS_PUBLIC, pub, sizeof pub), 65);
	assert_int_equal(unb64(SALT, salt, sizeof salt), 16);
	wn = unb64(BODY, want, sizeof want);
	assert_int_equal(wn, 144);
	assert_non_null(as = webpush_p256_key(priv, pub));
	assert_int_equal(webpush_encrypt_with(ua, auth, as, salt, PLAINTEXT, strlen(PLAINTEXT), body, &n), 0);
	assert_int_equal(n, wn);
	assert_memory_equal(body, want, wn);
	/* A public key alone cannot encrypt; a point off the curve is no key. */
	{
		EVP_PKEY *only_public = webpush_p256_key(NULL, pub);
		assert_non_null(only_public);
		assert_int_equal(webpush_encrypt_with(ua, auth, only_public, salt, "x", 1, body, &n), -1);
		EVP_PKEY_free(only_public);
		ua[40] ^= 1;
		assert_null(webpush_p256_key(NULL, ua));
		assert_int_equal(webpush_encrypt_with(ua, auth, as, salt, "x", 1, body, &n), -1);
	}
	EVP_PKEY_free(as);
}

/* A fresh key and salt each time: the header says so, the sizes add up,
 * and a plaintext that would not fit is refused. */
static void test_fresh_keys_and_limits(void **state)
{
	unsigned char ua[65], auth[16], a[WEBPUSH_BODY_MAX], b[WEBPUSH_BODY_MAX], big[WEBPUSH_PLAINTEXT_MAX + 1];
	size_t na = 0, nb = 0;
	EVP_PKEY *k;

	(void)state;
	unb64(UA_PUBLIC, ua, sizeof ua);
	unb64(AUTH, auth, sizeof auth);
	assert_int_equal(webpush_encrypt(ua, auth, PLAINTEXT, strlen(PLAINTEXT), a, &na), 0);
	assert_int_equal(webpush_encrypt(ua, auth, PLAINTEXT, strlen(PLAINTEXT), b, &nb), 0);
	assert_int_equal(na, WEBPUSH_HEADER_LEN + strlen(PLAINTEXT) + 1 + 16);
	assert_int_equal(nb, na);
	assert_memory_not_equal(a, b, 16); /* the salts */
	assert_int_equal(a[16], 0);
	assert_int_equal(a[18], 0x10);      /* record size 4096 */
	assert_int_equal(a[20], 65);        /* the key id's length */
	assert_int_equal(a[21], 4);
	assert_memory_not_equal(a + 21, b + 21, 65); /* the senders' keys */
	assert_non_null(k = webpush_p256_key(NULL, a + 21)); /* a point of P-256 */
	EVP_PKEY_free(k);
	memset(big, 'x', sizeof big);
	assert_int_equal(webpush_encrypt(ua, auth, big, WEBPUSH_PLAINTEXT_MAX, a, &na), 0);
	assert_int_equal(na, WEBPUSH_BODY_MAX);
	assert_int_equal(webpush_encrypt(ua, auth, big, sizeof big, a, &na), -1);
	assert_int_equal(webpush_encrypt(ua, auth, "", 0, a, &na), 0);
	assert_int_equal(na, WEBPUSH_HEADER_LEN + 17);
}

/* The JWT of a VAPID authorization, checked as a push service does. */
static void test_vapid(void **state)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	unsigned char point[65], raw[64], der[80], *dp = der;
	char pub[100], value[1024], *t, *dot1, *dot2, *comma, claims_json[512];
	size_t n = 0;
	json_t *claims;
	ECDSA_SIG *sig;
	EVP_MD_CTX *md;
	int dl;

	(void)state;
	assert_non_null(key);
	assert_int_equal(EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point, 65, &n), 1);
	sodium_bin2base64(pub, sizeof pub, point, 65, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	assert_int_equal(webpush_vapid_authorization(key, pub, "https://push.example.com:8443/wpush/v2/abc?x#y",
	                                             "mailto:ops@example.org", 1700000000, value, sizeof value),
	                 0);
	assert_int_equal(strncmp(value, "vapid t=", 8), 0);
	t = value + 8;
	assert_non_null(comma = strstr(t, ", k="));
	assert_string_equal(comma + 4, pub);
	*comma = 0;
	assert_non_null(dot1 = strchr(t, '.'));
	assert_non_null(dot2 = strchr(dot1 + 1, '.'));
	*dot2 = 0;
	n = 0;
	assert_int_equal(sodium_base642bin((unsigned char *)claims_json, sizeof claims_json - 1, dot1 + 1,
	                                   strlen(dot1 + 1), NULL, &n, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING),
	                 0);
	claims_json[n] = 0;
	assert_non_null(claims = json_loads(claims_json, 0, NULL));
	assert_string_equal(json_string_value(json_object_get(claims, "aud")), "https://push.example.com:8443");
	assert_int_equal(json_integer_value(json_object_get(claims, "exp")), 1700000000 + WEBPUSH_VAPID_TTL_S);
	assert_string_equal(json_string_value(json_object_get(claims, "sub")), "mailto:ops@example.org");
	json_decref(claims);
	/* ES256: r || s, 32 bytes each; verified over "header.claims". */
	n = 0;
	assert_int_equal(sodium_base642bin(raw, sizeof raw, dot2 + 1, strlen(dot2 + 1), NULL, &n, NULL,
	                                   sodium_base64_VARIANT_URLSAFE_NO_PADDING),
	                 0);
	assert_int_equal(n, 64);
	assert_non_null(sig = ECDSA_SIG_new());
	assert_int_equal(ECDSA_SIG_set0(sig, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL)), 1);
	assert_true((dl = i2d_ECDSA_SIG(sig, &dp)) > 0);
	assert_non_null(md = EVP_MD_CTX_new());
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
	assert_int_equal(EVP_DigestVerify(md, der, (size_t)dl, (const unsigned char *)t, strlen(t)), 1);
	/* One bit changed in the claims: no longer. */
	t[strlen(t) - 1] ^= 1;
	EVP_MD_CTX_free(md);
	assert_non_null(md = EVP_MD_CTX_new());
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
	assert_int_not_equal(EVP_DigestVerify(md, der, (size_t)dl, (const unsigned char *)t, strlen(t)), 1);
	EVP_MD_CTX_free(md);
	ECDSA_SIG_free(sig);
	/* No origin, a contact that would break the JSON, no room. */
	assert_int_equal(webpush_vapid_authorization(key, pub, "push.example.com/x", "mailto:a@b", 1, value, sizeof value), -1);
	assert_int_equal(webpush_vapid_authorization(key, pub, "https:///x", "mailto:a@b", 1, value, sizeof value), -1);
	assert_int_equal(webpush_vapid_authorization(key, pub, "https://p.example/x", "mailto:\"a\"@b", 1, value,
	                                             sizeof value),
	                 -1);
	assert_int_equal(webpush_vapid_authorization(key, pub, "https://p.example/x", "mailto:a@b", 1, value, 40), -1);
	EVP_PKEY_free(key);
}

#define UA_PRIVATE "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"

/* Starts the fake service; its port, or -1 (node missing: said). */
static int start_fake(pid_t *pid, char *port_file)
{
	int fd = mkstemp(port_file), port = 0, i;
	pid_t parent = getpid();

	assert_true(fd >= 0);
	close(fd);
	unlink(port_file);
	if ((*pid = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		execlp("node", "node", "tests/fakes/webpush_service.mjs", port_file, UA_PRIVATE, UA_PUBLIC, AUTH,
		       (char *)NULL);
		_exit(127);
	}
	assert_true(*pid > 0);
	for (i = 0; i < 200 && !port; i++) {
		FILE *f = fopen(port_file, "r");
		struct timespec ts = {0, 50 * 1000000};
		if (f) {
			if (fscanf(f, "%d", &port) != 1)
				port = 0;
			fclose(f);
		}
		if (!port)
			nanosleep(&ts, NULL);
		if (waitpid(*pid, NULL, WNOHANG) == *pid)
			fail_msg("the fake Web Push service did not start (is node installed?)");
	}
	assert_true(port > 0);
	return port;
}

static void send_to(CURL *curl, EVP_PKEY *key, const char *pub, const char *endpoint, int allow_local,
                    const char *plaintext, webpush_result_t *r, int *rc)
{
	unsigned char ua[65], auth[16], body[WEBPUSH_BODY_MAX];
	char authorization[WEBPUSH_AUTH_HEADER_MAX];
	webpush_request_t req = {0};
	size_t n = 0;

	unb64(UA_PUBLIC, ua, sizeof ua);
	unb64(AUTH, auth, sizeof auth);
	assert_int_equal(webpush_encrypt(ua, auth, plaintext, strlen(plaintext), body, &n), 0);
	assert_int_equal(webpush_vapid_authorization(key, pub, endpoint, "mailto:ops@example.org", (int64_t)time(NULL),
	                                             authorization, sizeof authorization),
	                 0);
	req.endpoint = endpoint;
	req.body = body;
	req.len = n;
	req.authorization = authorization;
	req.ttl_s = 60;
	req.urgency = WEBPUSH_HIGH;
	req.topic = "conv7";
	req.allow_local = allow_local;
	*rc = webpush_send(curl, &req, r);
}

static void test_send_to_fake_service(void **state)
{
	char port_file[] = "/tmp/parley-webpush-fake-XXXXXX", url[128], pub[100];
	unsigned char point[65];
	EVP_PKEY *key = EVP_EC_gen("P-256");
	webpush_result_t r;
	size_t n = 0;
	pid_t pid;
	CURL *curl;
	int port, rc;

	(void)state;
	assert_int_equal(EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point, 65, &n), 1);
	sodium_bin2base64(pub, sizeof pub, point, 65, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	port = start_fake(&pid, port_file);
	assert_non_null(curl = curl_easy_init());
	snprintf(url, sizeof url, "http://127.0.0.1:%d/push/ok", port);
	send_to(curl, key, pub, url, 1, PLAINTEXT, &r, &rc);
	assert_int_equal(rc, 0);
	if (r.status != 201)
		fail_msg("the fake answered %ld: %s", r.status, r.reason);
	assert_string_equal(r.reason, PLAINTEXT); /* decrypted by the subscriber's key */
	snprintf(url, sizeof url, "http://127.0.0.1:%d/push/gone", port);
	send_to(curl, key, pub, url, 1, "x", &r, &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(r.status, 410);
	snprintf(url, sizeof url, "http://127.0.0.1:%d/push/busy", port);
	send_to(curl, key, pub, url, 1, "x", &r, &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(r.status, 429);
	assert_int_equal(r.retry_after_ms, 7000);
	/* Without local endpoints allowed: http is refused, and a host that
	 * is this one is never connected to. */
	snprintf(url, sizeof url, "http://127.0.0.1:%d/push/ok", port);
	send_to(curl, key, pub, url, 0, "x", &r, &rc);
	assert_int_equal(rc, -1);
	assert_int_equal(r.status, 0);
	snprintf(url, sizeof url, "https://localhost:%d/push/ok", port);
	send_to(curl, key, pub, url, 0, "x", &r, &rc);
	assert_int_equal(rc, -1);
	assert_non_null(strstr(r.reason, "local"));
	curl_easy_cleanup(curl);
	EVP_PKEY_free(key);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	unlink(port_file);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc8291_example),
		cmocka_unit_test(test_fresh_keys_and_limits),
		cmocka_unit_test(test_vapid),
		cmocka_unit_test(test_send_to_fake_service),
	};
	int failed;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	failed = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return failed;
}
