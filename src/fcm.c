/* fcm.c - FCM service accounts and their grants of fcm.h: the key file
 * read with Jansson, the grant signed by jwt.c (RS256). */
#include "fcm.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "jwt.h"

/* A string field of o into out (cap bytes); 0, or -1 with err set. */
static int field(json_t *o, const char *name, int required, char *out, size_t cap, char *err, size_t errlen)
{
	json_t *v = json_object_get(o, name);

	if (!v && !required) {
		out[0] = 0;
		return 0;
	}
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= cap ||
	    strchr(json_string_value(v), '"') || strchr(json_string_value(v), '\\')) {
		snprintf(err, errlen, "the service account's \"%s\" is missing or not a plain string of at most %zu bytes",
		         name, cap - 1);
		return -1;
	}
	snprintf(out, cap, "%s", json_string_value(v));
	return 0;
}

int fcm_account_parse(const char *json, size_t len, fcm_account_t *a, char *err, size_t errlen)
{
	json_error_t je;
	json_t *o = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je), *type, *pk;

	memset(a, 0, sizeof *a);
	if (!json_is_object(o)) {
		snprintf(err, errlen, "not a JSON object: %s", o ? "another value" : je.text);
		json_decref(o);
		return -1;
	}
	type = json_object_get(o, "type");
	pk = json_object_get(o, "private_key");
	if (!json_is_string(type) || strcmp(json_string_value(type), "service_account")) {
		snprintf(err, errlen, "not a service account key (\"type\" is not \"service_account\")");
		goto bad;
	}
	if (field(o, "client_email", 1, a->client_email, sizeof a->client_email, err, errlen) < 0 ||
	    field(o, "token_uri", 1, a->token_uri, sizeof a->token_uri, err, errlen) < 0 ||
	    field(o, "project_id", 1, a->project_id, sizeof a->project_id, err, errlen) < 0 ||
	    field(o, "private_key_id", 0, a->key_id, sizeof a->key_id, err, errlen) < 0)
		goto bad;
	if (strncmp(a->token_uri, "https://", 8) && strncmp(a->token_uri, "http://", 7)) {
		snprintf(err, errlen, "the service account's token_uri is not an http(s) URL");
		goto bad;
	}
	if (!json_is_string(pk) ||
	    !(a->key = jwt_key_from_pem(json_string_value(pk), json_string_length(pk))) ||
	    EVP_PKEY_get_base_id(a->key) != EVP_PKEY_RSA) {
		snprintf(err, errlen, "the service account's private_key is not an RSA private key in PEM");
		goto bad;
	}
	json_decref(o);
	return 0;
bad:
	json_decref(o);
	fcm_account_clear(a);
	return -1;
}

void fcm_account_clear(fcm_account_t *a)
{
	EVP_PKEY_free(a->key);
	memset(a, 0, sizeof *a);
}

int fcm_grant_assertion(const fcm_account_t *a, int64_t now_s, char *out, size_t cap)
{
	char header[192], claims[1024];

	if (a->key_id[0])
		snprintf(header, sizeof header, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", a->key_id);
	else
		snprintf(header, sizeof header, "{\"alg\":\"RS256\",\"typ\":\"JWT\"}");
	if ((size_t)snprintf(claims, sizeof claims,
	                     "{\"iss\":\"%s\",\"scope\":\"" FCM_SCOPE "\",\"aud\":\"%s\",\"iat\":%lld,\"exp\":%lld}",
	                     a->client_email, a->token_uri, (long long)now_s, (long long)(now_s + FCM_GRANT_TTL_S)) >=
	    sizeof claims)
		return -1;
	return jwt_sign(a->key, header, claims, out, cap) < 0 ? -1 : 0;
}

int fcm_access_token(CURL *curl, const fcm_account_t *a, int64_t now_s, char *token, size_t cap,
                     int64_t *expires_in_s, char *err, size_t errlen)
{
	char assertion[4096], escaped[6144], form[6400];
	pushhttp_request_t hr = {0};
	pushhttp_result_t r;
	json_t *j;
	const char *t;

	if (fcm_grant_assertion(a, now_s, assertion, sizeof assertion) < 0 ||
	    pushhttp_form_escape(assertion, escaped, sizeof escaped) < 0) {
		snprintf(err, errlen, "the grant could not be signed");
		return -1;
	}
	snprintf(form, sizeof form, "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer&assertion=%s",
	         escaped);
	hr.url = a->token_uri;
	hr.body = form;
	hr.len = strlen(form);
	hr.content_type = "application/x-www-form-urlencoded";
	hr.allow_http = !strncmp(a->token_uri, "http://", 7);
	hr.http2_prior_knowledge = 1; /* an http:// endpoint (a fake) speaks HTTP/2 as the others do */
	if (pushhttp_post(curl, &hr, &r) < 0) {
		snprintf(err, errlen, "the token endpoint: %s", r.reason);
		return -1;
	}
	if (r.status != 200) {
		snprintf(err, errlen, "the token endpoint answered %ld: %.200s", r.status, r.body);
		return -1;
	}
	j = json_loads(r.body, 0, NULL);
	t = json_string_value(json_object_get(j, "access_token"));
	if (!t || strlen(t) >= cap || strlen(t) == 0) {
		snprintf(err, errlen, "the token endpoint's answer has no usable access_token");
		json_decref(j);
		return -1;
	}
	snprintf(token, cap, "%s", t);
	*expires_in_s = json_is_integer(json_object_get(j, "expires_in"))
	                    ? (int64_t)json_integer_value(json_object_get(j, "expires_in"))
	                    : 3600;
	json_decref(j);
	return 0;
}

/* FCM's error: the errorCode of its details when one is given (the v1
 * API's own codes: UNREGISTERED, QUOTA_EXCEEDED, ...), else its status. */
static void error_code(const char *body, char *out, size_t cap)
{
	json_t *j = json_loads(body, 0, NULL), *e = json_object_get(j, "error"), *d;
	const char *code = NULL;
	size_t i;

	json_array_foreach(json_object_get(e, "details"), i, d)
		if (!code)
			code = json_string_value(json_object_get(d, "errorCode"));
	if (!code)
		code = json_string_value(json_object_get(e, "status"));
	snprintf(out, cap, "%s", code ? code : "");
	json_decref(j);
}

int fcm_send(CURL *curl, const char *base_url, const fcm_account_t *a, const char *access_token,
             const char *message_json, pushhttp_result_t *r, char *code, size_t code_cap)
{
	char url[768], auth[FCM_ACCESS_TOKEN_MAX + 32];
	const char *headers[2] = {auth, NULL};
	pushhttp_request_t hr = {0};

	code[0] = 0;
	snprintf(url, sizeof url, "%s/v1/projects/%s/messages:send", base_url, a->project_id);
	snprintf(auth, sizeof auth, "Authorization: Bearer %s", access_token);
	hr.url = url;
	hr.headers = headers;
	hr.body = message_json;
	hr.len = strlen(message_json);
	hr.http2_prior_knowledge = 1;
	hr.allow_http = !strncmp(base_url, "http://", 7);
	if (pushhttp_post(curl, &hr, r) < 0)
		return -1;
	if (r->status != 200)
		error_code(r->body, code, code_cap);
	return 0;
}
