/* unit_jwt.c - the push providers' tokens: a JWT signed ES256 (P-256) or
 * RS256 (RSA) that OpenSSL verifies over its first two parts, with the
 * header and claims as written; an APNs provider token (kid, iss, iat)
 * and only from a P-256 .p8 key with Apple-shaped ids; an FCM service
 * account read from its key file, refused field by field when it is not
 * one, and its RS256 grant (iss, scope, aud, iat, exp an hour later). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sodium.h>

#include "apns.h"
#include "fcm.h"
#include "jwt.h"

static size_t unb64(const char *s, size_t len, unsigned char *out, size_t cap)
{
	size_t n = 0;

	assert_int_equal(sodium_base642bin(out, cap, s, len, NULL, &n, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING), 0);
	return n;
}

/* Verifies token with key; returns its header and claims (to free). */
static void verified(const char *token, EVP_PKEY *key, json_t **header, json_t **claims)
{
	const char *d1 = strchr(token, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
	unsigned char part[2048], sig[1024], der[80], *dp = der;
	size_t n, sl;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	const unsigned char *to_verify = sig;
	size_t vlen;

	assert_non_null(d1);
	assert_non_null(d2);
	n = unb64(token, (size_t)(d1 - token), part, sizeof part - 1);
	part[n] = 0;
	assert_non_null(*header = json_loads((char *)part, 0, NULL));
	n = unb64(d1 + 1, (size_t)(d2 - d1 - 1), part, sizeof part - 1);
	part[n] = 0;
	assert_non_null(*claims = json_loads((char *)part, 0, NULL));
	sl = unb64(d2 + 1, strlen(d2 + 1), sig, sizeof sig);
	vlen = sl;
	if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC) {
		ECDSA_SIG *es = ECDSA_SIG_new();
		int dl;
		assert_int_equal(sl, 64);
		assert_int_equal(ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL)), 1);
		assert_true((dl = i2d_ECDSA_SIG(es, &dp)) > 0);
		ECDSA_SIG_free(es);
		to_verify = der;
		vlen = (size_t)dl;
	}
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
	assert_int_equal(EVP_DigestVerify(md, to_verify, vlen, (const unsigned char *)token, (size_t)(d2 - token)), 1);
	EVP_MD_CTX_free(md);
}

static char *pem_of(EVP_PKEY *k)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
	n = BIO_get_mem_data(b, &data);
	out = malloc((size_t)n + 1);
	memcpy(out, data, (size_t)n);
	out[n] = 0;
	BIO_free(b);
	return out;
}

static void test_sign_both_kinds(void **state)
{
	EVP_PKEY *ec = EVP_EC_gen("P-256"), *rsa = EVP_RSA_gen(2048);
	char token[2048];
	json_t *h, *c;

	(void)state;
	assert_true(jwt_sign(ec, "{\"alg\":\"ES256\"}", "{\"n\":1}", token, sizeof token) > 0);
	verified(token, ec, &h, &c);
	assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES256");
	assert_int_equal(json_integer_value(json_object_get(c, "n")), 1);
	json_decref(h);
	json_decref(c);
	assert_true(jwt_sign(rsa, "{\"alg\":\"RS256\"}", "{\"n\":2}", token, sizeof token) > 0);
	verified(token, rsa, &h, &c);
	assert_int_equal(json_integer_value(json_object_get(c, "n")), 2);
	json_decref(h);
	json_decref(c);
	/* No room: refused, never cut short. */
	assert_int_equal(jwt_sign(ec, "{\"alg\":\"ES256\"}", "{\"n\":1}", token, 60), -1);
	assert_int_equal(jwt_sign(rsa, "{\"alg\":\"RS256\"}", "{\"n\":1}", token, 200), -1);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(rsa);
}

static void test_apns_token(void **state)
{
	EVP_PKEY *ec = EVP_EC_gen("P-256"), *rsa = EVP_RSA_gen(2048), *k;
	char *p8 = pem_of(ec), *rsa_pem = pem_of(rsa), token[512];
	json_t *h, *c;

	(void)state;
	assert_non_null(k = apns_key_from_p8(p8, strlen(p8)));
	assert_null(apns_key_from_p8(rsa_pem, strlen(rsa_pem)));
	assert_null(apns_key_from_p8("not a key", 9));
	assert_int_equal(apns_provider_token(k, "ABC123DEFG", "TEAM123456", 1700000000, token, sizeof token), 0);
	verified(token, ec, &h, &c);
	assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES256");
	assert_string_equal(json_string_value(json_object_get(h, "kid")), "ABC123DEFG");
	assert_string_equal(json_string_value(json_object_get(c, "iss")), "TEAM123456");
	assert_int_equal(json_integer_value(json_object_get(c, "iat")), 1700000000);
	json_decref(h);
	json_decref(c);
	assert_int_equal(apns_provider_token(k, "abc123defg", "TEAM123456", 1, token, sizeof token), -1);
	assert_int_equal(apns_provider_token(k, "ABC123DEF", "TEAM123456", 1, token, sizeof token), -1);
	assert_int_equal(apns_provider_token(k, "ABC123DEFG", "TEAM\"23456", 1, token, sizeof token), -1);
	EVP_PKEY_free(k);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(rsa);
	free(p8);
	free(rsa_pem);
}

static void test_fcm_account(void **state)
{
	EVP_PKEY *rsa = EVP_RSA_gen(2048), *ec = EVP_EC_gen("P-256");
	char *pem = pem_of(rsa), *ec_pem = pem_of(ec), token[4096], err[256];
	json_t *o = json_object(), *h, *c;
	fcm_account_t a;
	char *text;

	(void)state;
	json_object_set_new(o, "type", json_string("service_account"));
	json_object_set_new(o, "project_id", json_string("parley-test"));
	json_object_set_new(o, "private_key_id", json_string("k1"));
	json_object_set_new(o, "private_key", json_string(pem));
	json_object_set_new(o, "client_email", json_string("push@parley-test.iam.gserviceaccount.com"));
	json_object_set_new(o, "token_uri", json_string("https://oauth2.googleapis.com/token"));
	text = json_dumps(o, 0);
	assert_int_equal(fcm_account_parse(text, strlen(text), &a, err, sizeof err), 0);
	free(text);
	assert_string_equal(a.project_id, "parley-test");
	assert_int_equal(fcm_grant_assertion(&a, 1700000000, token, sizeof token), 0);
	verified(token, rsa, &h, &c);
	assert_string_equal(json_string_value(json_object_get(h, "alg")), "RS256");
	assert_string_equal(json_string_value(json_object_get(h, "kid")), "k1");
	assert_string_equal(json_string_value(json_object_get(c, "iss")), "push@parley-test.iam.gserviceaccount.com");
	assert_string_equal(json_string_value(json_object_get(c, "scope")), FCM_SCOPE);
	assert_string_equal(json_string_value(json_object_get(c, "aud")), "https://oauth2.googleapis.com/token");
	assert_int_equal(json_integer_value(json_object_get(c, "iat")), 1700000000);
	assert_int_equal(json_integer_value(json_object_get(c, "exp")), 1700000000 + 3600);
	json_decref(h);
	json_decref(c);
	fcm_account_clear(&a);
	/* Not one: each refusal says why. */
	assert_int_equal(fcm_account_parse("{", 1, &a, err, sizeof err), -1);
	assert_true(strlen(err) > 0);
	json_object_set_new(o, "type", json_string("authorized_user"));
	text = json_dumps(o, 0);
	assert_int_equal(fcm_account_parse(text, strlen(text), &a, err, sizeof err), -1);
	assert_non_null(strstr(err, "service_account"));
	free(text);
	json_object_set_new(o, "type", json_string("service_account"));
	json_object_set_new(o, "private_key", json_string(ec_pem));
	text = json_dumps(o, 0);
	assert_int_equal(fcm_account_parse(text, strlen(text), &a, err, sizeof err), -1);
	assert_non_null(strstr(err, "RSA"));
	free(text);
	json_object_set_new(o, "private_key", json_string(pem));
	json_object_del(o, "client_email");
	text = json_dumps(o, 0);
	assert_int_equal(fcm_account_parse(text, strlen(text), &a, err, sizeof err), -1);
	assert_non_null(strstr(err, "client_email"));
	free(text);
	json_object_set_new(o, "client_email", json_string("a\"b@example.com"));
	text = json_dumps(o, 0);
	assert_int_equal(fcm_account_parse(text, strlen(text), &a, err, sizeof err), -1);
	free(text);
	json_decref(o);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ec);
	free(pem);
	free(ec_pem);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sign_both_kinds),
		cmocka_unit_test(test_apns_token),
		cmocka_unit_test(test_fcm_account),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
