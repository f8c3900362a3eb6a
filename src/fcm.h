/* fcm.h - Firebase Cloud Messaging (HTTP v1): what authenticates a
 * sender. A service account's key file (JSON, from the Firebase console)
 * holds an RSA private key and the account's e-mail; the push path signs
 * an RS256 JWT grant with it (RFC 7523: iss the account, the messaging
 * scope, aud the token endpoint, an hour's life), trades it at the token
 * endpoint for an OAuth2 access token, and keeps that until shortly
 * before it expires. */
#ifndef PARLEY_FCM_H
#define PARLEY_FCM_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#define FCM_SCOPE "https://www.googleapis.com/auth/firebase.messaging"
#define FCM_GRANT_TTL_S 3600

typedef struct fcm_account {
	EVP_PKEY *key;             /* RSA */
	char key_id[128];          /* private_key_id, as the JWT's kid ("" when absent) */
	char client_email[256];
	char token_uri[512];       /* https://oauth2.googleapis.com/token, or a test's fake */
	char project_id[128];      /* messages go to projects/<id>/messages:send */
} fcm_account_t;

/* Reads a service account's key file (its JSON text, len bytes) into a.
 * 0, or -1 with why in err (errlen bytes): not JSON, not a service
 * account, a field missing or too long, a key that is not RSA. */
int fcm_account_parse(const char *json, size_t len, fcm_account_t *a, char *err, size_t errlen);
void fcm_account_clear(fcm_account_t *a);

/* The signed grant for the token endpoint, issued at now_s, into out. 0,
 * or -1. */
int fcm_grant_assertion(const fcm_account_t *a, int64_t now_s, char *out, size_t cap);

/* ---- sending --------------------------------------------------------- */

#include "pushhttp.h"

#define FCM_URL "https://fcm.googleapis.com"
#define FCM_ACCESS_TOKEN_MAX 2048

/* Trades a fresh grant at the account's token endpoint for an access
 * token: 0 with it in token (cap bytes) and its life in *expires_in_s;
 * -1 with why in err (no answer, an error answer, one without a token). */
int fcm_access_token(CURL *curl, const fcm_account_t *a, int64_t now_s, char *token, size_t cap,
                     int64_t *expires_in_s, char *err, size_t errlen);

/* POSTs message_json ({"message":{...}}) to BASE/v1/projects/ID/messages:send
 * with the access token: 0 with r->status (200 sent; 400 INVALID_ARGUMENT;
 * 401 the token expired; 403 SENDER_ID_MISMATCH; 404 UNREGISTERED; 429
 * QUOTA_EXCEEDED; 5xx) and FCM's error code (details' errorCode, else the
 * error's status) in code (""); -1 when no answer came. */
int fcm_send(CURL *curl, const char *base_url, const fcm_account_t *a, const char *access_token,
             const char *message_json, pushhttp_result_t *r, char *code, size_t code_cap);

#endif
