/* jwt.h - compact JSON Web Tokens (RFC 7519) signed for the push
 * providers: ES256 with a P-256 key (APNs provider tokens, Web Push's
 * VAPID) or RS256 with an RSA key (the OAuth2 grant that FCM's access
 * token is bought with). Only signing: Parley verifies none. */
#ifndef PARLEY_JWT_H
#define PARLEY_JWT_H

#include <stddef.h>

#include <openssl/evp.h>

/* base64url(header_json) "." base64url(claims_json) "." base64url(sig)
 * into out (cap bytes, NUL-terminated), the signature ES256 for an EC key
 * (r || s, 32 bytes each, as JWS wants, not DER) or RS256 for an RSA key.
 * The JSON is taken as given: the caller writes the "alg" that matches
 * the key. Returns the token's length, or -1 (another kind of key, no
 * room, OpenSSL failing). */
int jwt_sign(EVP_PKEY *key, const char *header_json, const char *claims_json, char *out, size_t cap);

/* A private key from a PEM file (PKCS#8, as Apple's .p8 and Google's
 * service accounts give them) or PEM text; NULL when it does not parse.
 * Free it with EVP_PKEY_free. */
EVP_PKEY *jwt_key_from_pem(const char *pem, size_t len);
/* The same, only when it is a P-256 key (ES256's). */
EVP_PKEY *jwt_p256_key_from_pem(const char *pem, size_t len);

#endif
