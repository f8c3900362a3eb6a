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

#endif
