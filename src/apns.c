/* apns.c - APNs provider tokens of apns.h, signed by jwt.c (ES256). */
#include "apns.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

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

/* The "reason" of an error answer's JSON body, into out. */
static void answer_reason(const char *body, char *out, size_t cap)
{
	json_t *j = json_loads(body, 0, NULL);
	const char *why = json_string_value(json_object_get(j, "reason"));

	snprintf(out, cap, "%s", why ? why : "");
	json_decref(j);
}

int apns_send(CURL *curl, const apns_request_t *req, pushhttp_result_t *r, char *reason, size_t reason_cap)
{
	char url[512], auth[600], topic[300], type[48], prio[32], collapse[96], expiry[48];
	const char *headers[8];
	size_t nh = 0, i;
	pushhttp_request_t hr = {0};

	reason[0] = 0;
	for (i = 0; req->device_token[i]; i++)
		if (!isxdigit((unsigned char)req->device_token[i]) || i > 200) {
			memset(r, 0, sizeof *r);
			snprintf(r->reason, sizeof r->reason, "the device token is not hex");
			return -1;
		}
	snprintf(url, sizeof url, "%s/3/device/%s", req->base_url, req->device_token);
	snprintf(auth, sizeof auth, "authorization: bearer %s", req->provider_token);
	snprintf(topic, sizeof topic, "apns-topic: %s", req->topic);
	snprintf(type, sizeof type, "apns-push-type: %s", req->push_type);
	snprintf(prio, sizeof prio, "apns-priority: %d", req->priority);
	snprintf(expiry, sizeof expiry, "apns-expiration: %lld", (long long)req->expiration_s);
	headers[nh++] = auth;
	headers[nh++] = topic;
	headers[nh++] = type;
	headers[nh++] = prio;
	headers[nh++] = expiry;
	if (req->collapse_id) {
		snprintf(collapse, sizeof collapse, "apns-collapse-id: %.64s", req->collapse_id);
		headers[nh++] = collapse;
	}
	headers[nh] = NULL;
	hr.url = url;
	hr.headers = headers;
	hr.body = req->payload;
	hr.len = strlen(req->payload);
	hr.http2_prior_knowledge = 1; /* APNs speaks only HTTP/2 */
	hr.allow_http = !strncmp(req->base_url, "http://", 7); /* the operator's own URL: a fake */
	hr.timeout_ms = req->timeout_ms;
	if (pushhttp_post(curl, &hr, r) < 0)
		return -1;
	if (r->status != 200)
		answer_reason(r->body, reason, reason_cap);
	return 0;
}
