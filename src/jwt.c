/* jwt.c - JWT signing of jwt.h over OpenSSL 3's EVP_DigestSign and
 * libsodium's base64url. */
#include "jwt.h"

#include <limits.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <sodium.h>

/* base64url of n bytes at out + *at; -1 without room. */
static int put_b64(char *out, size_t cap, size_t *at, const void *bytes, size_t n)
{
	size_t need = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);

	if (*at + need > cap)
		return -1;
	sodium_bin2base64(out + *at, need, bytes, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	*at += strlen(out + *at);
	return 0;
}

int jwt_sign(EVP_PKEY *key, const char *header_json, const char *claims_json, char *out, size_t cap)
{
	int type = EVP_PKEY_get_base_id(key), rc = -1;
	unsigned char sig[512], raw[64];
	const unsigned char *sp = sig;
	size_t at = 0, slen = sizeof sig;
	EVP_MD_CTX *md = NULL;
	ECDSA_SIG *es = NULL;
	const BIGNUM *r, *s;

	if ((type != EVP_PKEY_EC && type != EVP_PKEY_RSA) || (type == EVP_PKEY_RSA && EVP_PKEY_get_size(key) > (int)sizeof sig))
		return -1;
	if (put_b64(out, cap, &at, header_json, strlen(header_json)) < 0 || at + 1 >= cap)
		return -1;
	out[at++] = '.';
	if (put_b64(out, cap, &at, claims_json, strlen(claims_json)) < 0)
		return -1;
	if (!(md = EVP_MD_CTX_new()) || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(md, sig, &slen, (const unsigned char *)out, at) != 1)
		goto done;
	if (at + 1 >= cap)
		goto done;
	out[at++] = '.';
	if (type == EVP_PKEY_EC) {
		/* OpenSSL gives DER; JWS wants two 32-byte big-endian numbers. */
		if (!(es = d2i_ECDSA_SIG(NULL, &sp, (long)slen)))
			goto done;
		ECDSA_SIG_get0(es, &r, &s);
		if (BN_bn2binpad(r, raw, 32) != 32 || BN_bn2binpad(s, raw + 32, 32) != 32 ||
		    put_b64(out, cap, &at, raw, sizeof raw) < 0)
			goto done;
	} else if (put_b64(out, cap, &at, sig, slen) < 0) {
		goto done;
	}
	rc = (int)at;
done:
	ECDSA_SIG_free(es);
	EVP_MD_CTX_free(md);
	return rc;
}

EVP_PKEY *jwt_key_from_pem(const char *pem, size_t len)
{
	BIO *b = len <= INT_MAX ? BIO_new_mem_buf(pem, (int)len) : NULL;
	EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	return k;
}

EVP_PKEY *jwt_p256_key_from_pem(const char *pem, size_t len)
{
	EVP_PKEY *k = jwt_key_from_pem(pem, len);
	char curve[32];

	if (k && (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC ||
	          EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof curve, NULL) != 1 ||
	          strcmp(curve, "prime256v1") != 0)) {
		EVP_PKEY_free(k);
		k = NULL;
	}
	return k;
}
