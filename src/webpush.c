/* webpush.c - Web Push encryption and VAPID of webpush.h, over OpenSSL 3
 * (ECDH, HMAC-SHA-256 for HKDF, AES-128-GCM) and jwt.c's ES256. HKDF is written out from HMAC: every key here is one HKDF
 * block (at most 32 bytes), so expand is a single HMAC of info || 0x01. */
#include "webpush.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>

#include "jwt.h"
#include "pushhttp.h"

/* HMAC-SHA-256 of the concatenation a || b || c (any may be empty). */
static int hmac3(const unsigned char *key, size_t klen, const void *a, size_t alen, const void *b, size_t blen,
                 const void *c, size_t clen, unsigned char out[32])
{
	unsigned char buf[512];
	unsigned int n = 32;

	if (alen + blen + clen > sizeof buf)
		return -1;
	if (alen)
		memcpy(buf, a, alen);
	if (blen)
		memcpy(buf + alen, b, blen);
	if (clen)
		memcpy(buf + alen + blen, c, clen);
	return HMAC(EVP_sha256(), key, (int)klen, buf, alen + blen + clen, out, &n) && n == 32 ? 0 : -1;
}

EVP_PKEY *webpush_p256_key(const unsigned char *private32, const unsigned char public65[WEBPUSH_POINT_LEN])
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *key = NULL;
	BIGNUM *priv = private32 ? BN_bin2bn(private32, 32, NULL) : NULL;

	if (!bld || (private32 && !priv) ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, public65, WEBPUSH_POINT_LEN) ||
	    (priv && !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv)) ||
	    !(params = OSSL_PARAM_BLD_to_param(bld)) || !(ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) ||
	    EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &key, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) <= 0)
		key = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_clear_free(priv);
	return key;
}

/* ECDH of our private key with their public one: 32 bytes. */
static int ecdh(EVP_PKEY *ours, EVP_PKEY *theirs, unsigned char secret[32])
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(ours, NULL);
	size_t n = 32;
	int ok = ctx && EVP_PKEY_derive_init(ctx) > 0 && EVP_PKEY_derive_set_peer(ctx, theirs) > 0 &&
	         EVP_PKEY_derive(ctx, secret, &n) > 0 && n == 32;

	EVP_PKEY_CTX_free(ctx);
	return ok ? 0 : -1;
}

int webpush_encrypt_with(const unsigned char ua_public[WEBPUSH_POINT_LEN], const unsigned char auth[WEBPUSH_AUTH_LEN],
                         EVP_PKEY *sender, const unsigned char salt[WEBPUSH_SALT_LEN], const void *plaintext,
                         size_t len, unsigned char *body, size_t *body_len)
{
	static const char key_label[] = "WebPush: info"; /* with its NUL */
	static const char cek_label[] = "Content-Encoding: aes128gcm";
	static const char nonce_label[] = "Content-Encoding: nonce";
	static const unsigned char one = 1, delimiter = 2;
	unsigned char as_public[WEBPUSH_POINT_LEN], secret[32], prk_key[32], ikm[32], prk[32], cek[32], nonce[32];
	unsigned char key_info[sizeof key_label + 2 * WEBPUSH_POINT_LEN];
	EVP_PKEY *ua = NULL;
	EVP_CIPHER_CTX *gcm = NULL;
	size_t n = 0;
	int out1 = 0, out2 = 0, rc = -1;
	unsigned char *p;

	if (len > WEBPUSH_PLAINTEXT_MAX ||
	    EVP_PKEY_get_octet_string_param(sender, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, as_public, sizeof as_public, &n) != 1 ||
	    n != sizeof as_public || !(ua = webpush_p256_key(NULL, ua_public)) || ecdh(sender, ua, secret) < 0)
		goto out;
	/* RFC 8291 section 3.4: the auth secret and both public keys in the
	 * input keying material of RFC 8188's key derivation. */
	memcpy(key_info, key_label, sizeof key_label);
	memcpy(key_info + sizeof key_label, ua_public, WEBPUSH_POINT_LEN);
	memcpy(key_info + sizeof key_label + WEBPUSH_POINT_LEN, as_public, WEBPUSH_POINT_LEN);
	if (hmac3(auth, WEBPUSH_AUTH_LEN, secret, sizeof secret, NULL, 0, NULL, 0, prk_key) < 0 ||
	    hmac3(prk_key, sizeof prk_key, key_info, sizeof key_info, &one, 1, NULL, 0, ikm) < 0 ||
	    hmac3(salt, WEBPUSH_SALT_LEN, ikm, sizeof ikm, NULL, 0, NULL, 0, prk) < 0 ||
	    hmac3(prk, sizeof prk, cek_label, sizeof cek_label, &one, 1, NULL, 0, cek) < 0 ||
	    hmac3(prk, sizeof prk, nonce_label, sizeof nonce_label, &one, 1, NULL, 0, nonce) < 0)
		goto out;
	/* The header: salt, record size, the key id (our public key). */
	p = body;
	memcpy(p, salt, WEBPUSH_SALT_LEN);
	p += WEBPUSH_SALT_LEN;
	*p++ = 0;
	*p++ = 0;
	*p++ = 0x10; /* 4096 */
	*p++ = 0;
	*p++ = WEBPUSH_POINT_LEN;
	memcpy(p, as_public, WEBPUSH_POINT_LEN);
	p += WEBPUSH_POINT_LEN;
	/* One record: the plaintext and the last record's delimiter. */
	if (!(gcm = EVP_CIPHER_CTX_new()) || EVP_EncryptInit_ex(gcm, EVP_aes_128_gcm(), NULL, cek, nonce) != 1 ||
	    (len && EVP_EncryptUpdate(gcm, p, &out1, plaintext, (int)len) != 1) ||
	    EVP_EncryptUpdate(gcm, p + out1, &out2, &delimiter, 1) != 1)
		goto out;
	p += out1 + out2;
	if (EVP_EncryptFinal_ex(gcm, p, &out1) != 1 || EVP_CIPHER_CTX_ctrl(gcm, EVP_CTRL_GCM_GET_TAG, 16, p + out1) != 1)
		goto out;
	p += out1 + 16;
	*body_len = (size_t)(p - body);
	rc = 0;
out:
	EVP_CIPHER_CTX_free(gcm);
	EVP_PKEY_free(ua);
	OPENSSL_cleanse(secret, sizeof secret);
	OPENSSL_cleanse(prk_key, sizeof prk_key);
	OPENSSL_cleanse(ikm, sizeof ikm);
	OPENSSL_cleanse(prk, sizeof prk);
	OPENSSL_cleanse(cek, sizeof cek);
	return rc;
}

int webpush_encrypt(const unsigned char ua_public[WEBPUSH_POINT_LEN], const unsigned char auth[WEBPUSH_AUTH_LEN],
                    const void *plaintext, size_t len, unsigned char *body, size_t *body_len)
{
	unsigned char salt[WEBPUSH_SALT_LEN];
	EVP_PKEY *sender;
	int rc;

	if (RAND_bytes(salt, sizeof salt) != 1 || !(sender = EVP_EC_gen("P-256")))
		return -1;
	rc = webpush_encrypt_with(ua_public, auth, sender, salt, plaintext, len, body, body_len);
	EVP_PKEY_free(sender);
	return rc;
}

/* ---- VAPID ------------------------------------------------------------ */

int webpush_vapid_authorization(EVP_PKEY *key, const char *public_b64, const char *endpoint, const char *subject,
                                int64_t now_s, char *out, size_t cap)
{
	const char *host = NULL;
	char claims[512], aud[300];
	size_t hl, at;
	int n;

	if (!strncmp(endpoint, "https://", 8))
		host = endpoint + 8;
	else if (!strncmp(endpoint, "http://", 7))
		host = endpoint + 7;
	if (!host || (hl = strcspn(host, "/?#")) == 0)
		return -1;
	/* The audience is the endpoint's origin: scheme, host and port. */
	if ((size_t)snprintf(aud, sizeof aud, "%.*s%.*s", (int)(host - endpoint), endpoint, (int)hl, host) >= sizeof aud ||
	    strchr(subject, '"') || strchr(subject, '\\') ||
	    (size_t)snprintf(claims, sizeof claims, "{\"aud\":\"%s\",\"exp\":%lld,\"sub\":\"%s\"}", aud,
	                     (long long)(now_s + WEBPUSH_VAPID_TTL_S), subject) >= sizeof claims ||
	    cap < 9)
		return -1;
	memcpy(out, "vapid t=", 8);
	at = 8;
	if ((n = jwt_sign(key, "{\"typ\":\"JWT\",\"alg\":\"ES256\"}", claims, out + at, cap - at)) < 0)
		return -1;
	at += (size_t)n;
	return (size_t)snprintf(out + at, cap - at, ", k=%s", public_b64) < cap - at ? 0 : -1;
}

/* ---- sending ------------------------------------------------------------ */

int webpush_send(CURL *curl, const webpush_request_t *req, webpush_result_t *r)
{
	static const char *const urgency[] = {"very-low", "low", "normal", "high"};
	char auth[WEBPUSH_AUTH_HEADER_MAX + 32], ttl[32], urg[32], topic[48];
	const char *headers[6];
	size_t nh = 0;
	pushhttp_request_t hr = {0};
	pushhttp_result_t hres;
	int rc;

	memset(r, 0, sizeof *r);
	if (strncmp(req->endpoint, "https://", 8) && !(req->allow_local && !strncmp(req->endpoint, "http://", 7))) {
		snprintf(r->reason, sizeof r->reason, "the endpoint is not https");
		return -1;
	}
	snprintf(auth, sizeof auth, "Authorization: %s", req->authorization);
	snprintf(ttl, sizeof ttl, "TTL: %d", req->ttl_s > 0 ? req->ttl_s : 0);
	snprintf(urg, sizeof urg, "Urgency: %s", urgency[req->urgency]);
	headers[nh++] = auth;
	headers[nh++] = ttl;
	headers[nh++] = urg;
	if (req->topic) {
		snprintf(topic, sizeof topic, "Topic: %.32s", req->topic);
		headers[nh++] = topic;
	}
	headers[nh++] = "Content-Encoding: aes128gcm";
	headers[nh] = NULL;
	hr.url = req->endpoint;
	hr.headers = headers;
	hr.body = req->body;
	hr.len = req->len;
	hr.content_type = "application/octet-stream";
	hr.allow_http = req->allow_local;
	hr.refuse_local = !req->allow_local;
	hr.timeout_ms = req->timeout_ms;
	rc = pushhttp_post(curl, &hr, &hres);
	r->status = hres.status;
	r->retry_after_ms = hres.retry_after_ms;
	if (rc < 0)
		snprintf(r->reason, sizeof r->reason, "%s",
		         strstr(hres.reason, "local or private") ? "the endpoint's host resolved to a local or private address"
		                                                 : hres.reason);
	else
		snprintf(r->reason, sizeof r->reason, "%.255s", hres.body);
	return rc;
}
