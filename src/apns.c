/* apns.c - APNs provider tokens of apns.h, signed by jwt.c (ES256). */
#include "apns.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "jwt.h"

EVP_PKEY *apns_key_from_p8(const char *pem, size_t len)
{
	return jwt_p256_key_from_pem(pem, len);
}

static int apple_id(const char *s)
{
	size_t i;

	for (i = 0; i < APNS_ID_LEN; i++)
		if (!isupper((unsigned char)s[i]) && !isdigit((unsigned char)s[i]))
			return 0;
	return s[APNS_ID_LEN] == 0;
}

int apns_provider_token(EVP_PKEY *key, const char *key_id, const char *team_id, int64_t now_s, char *out,
                        size_t cap)
{
	char header[64], claims[64];

	if (!apple_id(key_id) || !apple_id(team_id))
		return -1;
	snprintf(header, sizeof header, "{\"alg\":\"ES256\",\"kid\":\"%s\"}", key_id);
	snprintf(claims, sizeof claims, "{\"iss\":\"%s\",\"iat\":%lld}", team_id, (long long)now_s);
	return jwt_sign(key, header, claims, out, cap) < 0 ? -1 : 0;
}
