/* webpush.h - what a Web Push request carries: the message encrypted for
 * one subscription (RFC 8291 over RFC 8188's aes128gcm content coding) and
 * the server's VAPID authorization (RFC 8292).
 *
 * Encryption: a fresh P-256 key pair and a random 16-byte salt per
 * message; ECDH with the subscription's p256dh, combined with its auth
 * secret, gives the content key and nonce; the body is the aes128gcm
 * header (salt, record size 4096, the sender's public key) and one record
 * (the plaintext, the last-record delimiter 0x02, AES-128-GCM). Push
 * services take bodies up to 4,096 bytes, so a plaintext may have at most
 * WEBPUSH_PLAINTEXT_MAX bytes.
 *
 * VAPID: an ES256 JWT with the endpoint's origin as "aud", an expiry at
 * most 24 h on (12 h here) and a contact as "sub", sent as
 * `Authorization: vapid t=JWT, k=PUBLIC_KEY`. */
#ifndef PARLEY_WEBPUSH_H
#define PARLEY_WEBPUSH_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#define WEBPUSH_POINT_LEN 65     /* an uncompressed P-256 point */
#define WEBPUSH_AUTH_LEN 16
#define WEBPUSH_SALT_LEN 16
#define WEBPUSH_HEADER_LEN (WEBPUSH_SALT_LEN + 4 + 1 + WEBPUSH_POINT_LEN)
#define WEBPUSH_BODY_MAX 4096
#define WEBPUSH_PLAINTEXT_MAX (WEBPUSH_BODY_MAX - WEBPUSH_HEADER_LEN - 1 - 16)
#define WEBPUSH_VAPID_TTL_S (12 * 3600)
#define WEBPUSH_AUTH_HEADER_MAX 1024 /* room for webpush_vapid_authorization's value */

/* Encrypts len bytes of plaintext for the subscription whose keys are
 * ua_public and auth, into body (at most WEBPUSH_BODY_MAX bytes; *body_len
 * gets its length). 0, or -1 (a key that is not a P-256 point, a plaintext
 * over WEBPUSH_PLAINTEXT_MAX, or OpenSSL failing). */
int webpush_encrypt(const unsigned char ua_public[WEBPUSH_POINT_LEN], const unsigned char auth[WEBPUSH_AUTH_LEN],
                    const void *plaintext, size_t len, unsigned char *body, size_t *body_len);

/* The same with the sender's key pair and the salt given (RFC 8291's
 * example, tests): sender must hold a P-256 private key. */
int webpush_encrypt_with(const unsigned char ua_public[WEBPUSH_POINT_LEN], const unsigned char auth[WEBPUSH_AUTH_LEN],
                         EVP_PKEY *sender, const unsigned char salt[WEBPUSH_SALT_LEN], const void *plaintext,
                         size_t len, unsigned char *body, size_t *body_len);

/* A P-256 key from its raw parts: the 32-byte private scalar (NULL: a
 * public key only) and the uncompressed public point. NULL when they are
 * not one. The caller frees it with EVP_PKEY_free. */
EVP_PKEY *webpush_p256_key(const unsigned char *private32, const unsigned char public65[WEBPUSH_POINT_LEN]);

/* The Authorization header's value for a push to endpoint (an http(s)
 * URL: its origin is the audience), signed with key, whose public point is
 * public_b64 (base64url), by contact subject ("mailto:…" or "https://…"),
 * expiring WEBPUSH_VAPID_TTL_S after now_s. Into out (cap bytes); 0, or -1
 * (an endpoint without an origin, no room, OpenSSL failing). */
int webpush_vapid_authorization(EVP_PKEY *key, const char *public_b64, const char *endpoint, const char *subject,
                                int64_t now_s, char *out, size_t cap);

/* ---- sending --------------------------------------------------------- */

#include <curl/curl.h>

/* RFC 8030's urgency of a push; the service may hold back the low ones
 * to spare a device's battery. */
typedef enum { WEBPUSH_VERY_LOW, WEBPUSH_LOW, WEBPUSH_NORMAL, WEBPUSH_HIGH } webpush_urgency_t;

typedef struct webpush_request {
	const char *endpoint;        /* the subscription's */
	const unsigned char *body;   /* webpush_encrypt's */
	size_t len;
	const char *authorization;   /* webpush_vapid_authorization's */
	int ttl_s;                   /* how long the service may keep it for an offline device */
	webpush_urgency_t urgency;
	const char *topic;           /* NULL, or 1-32 of base64url: a newer push of the topic replaces it */
	int allow_local;             /* --push-allow-http-endpoints: http and local addresses */
	long timeout_ms;             /* the whole exchange; 0: 10000 */
} webpush_request_t;

typedef struct webpush_result {
	long status;                 /* the HTTP status; 0 when no answer came */
	int64_t retry_after_ms;      /* from Retry-After, seconds or a date; 0: none */
	char reason[256];            /* a failed exchange's, or the start of an error answer's body */
} webpush_result_t;

/* POSTs the request on curl (an easy handle the caller keeps, so that
 * connections are reused; reset here for each request) and waits for
 * the answer: 0 with r->status when one came (201 delivered, 404/410 the
 * subscription is gone, 429 too many, 413 too large, ...), -1 with
 * r->reason when none did (no connection, a timeout, or an endpoint whose
 * host resolved to a local address: refused before connecting). Blocks:
 * only the push path's own threads call it. */
int webpush_send(CURL *curl, const webpush_request_t *req, webpush_result_t *r);

#endif
