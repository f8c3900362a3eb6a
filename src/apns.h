/* apns.h - Apple's push service (APNs, HTTP/2): what authenticates a
 * provider. APNs takes a JWT signed with the team's key (a .p8 file: a
 * P-256 private key in PKCS#8 PEM), naming the key id and the team id,
 * issued at most an hour ago: the push path makes one and uses it for
 * APNS_TOKEN_REFRESH_S, well inside the hour (and inside Apple's limit
 * on how often a new one may be made, every 20 minutes at most). */
#ifndef PARLEY_APNS_H
#define PARLEY_APNS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#define APNS_TOKEN_REFRESH_S (50 * 60)
#define APNS_ID_LEN 10 /* key ids and team ids: 10 of [A-Z0-9] */

/* The key in the .p8 text pem (len bytes); NULL when it is not a P-256
 * private key. Free it with EVP_PKEY_free. */
EVP_PKEY *apns_key_from_p8(const char *pem, size_t len);

/* The provider token (for `authorization: bearer TOKEN`) issued at now_s,
 * into out (cap bytes). 0, or -1 (ids that are not 10 of [A-Z0-9], no
 * room, signing failed). */
int apns_provider_token(EVP_PKEY *key, const char *key_id, const char *team_id, int64_t now_s, char *out,
                        size_t cap);

/* ---- sending --------------------------------------------------------- */

#include "pushhttp.h"

#define APNS_PRODUCTION_URL "https://api.push.apple.com"
#define APNS_SANDBOX_URL "https://api.sandbox.push.apple.com"
#define APNS_PAYLOAD_MAX 4096

typedef struct apns_request {
	const char *base_url;        /* APNS_*_URL, or a test's fake */
	const char *device_token;    /* hex */
	const char *topic;           /* the app's bundle id */
	const char *provider_token;  /* apns_provider_token's */
	const char *push_type;       /* "alert" (shown) or "background" (content-available only) */
	int priority;                /* 10 at once, 5 when it suits the device (background must be 5) */
	const char *collapse_id;     /* NULL, or at most 64 bytes: a newer push of it replaces the shown one */
	int64_t expiration_s;        /* Unix time after which APNs drops it undelivered; 0: try once */
	const char *payload;         /* JSON, at most APNS_PAYLOAD_MAX bytes */
	long timeout_ms;
} apns_request_t;

/* POSTs the notification to /3/device/TOKEN: 0 with r->status (200 sent;
 * 400 with a reason such as BadDeviceToken; 403 ExpiredProviderToken or
 * InvalidProviderToken; 410 Unregistered; 429 TooManyRequests; 5xx) and
 * APNs' reason, from the answer's JSON, in reason (reason_cap bytes, ""
 * when none); -1 when no answer came (r->reason says why). */
int apns_send(CURL *curl, const apns_request_t *req, pushhttp_result_t *r, char *reason, size_t reason_cap);

#endif
