/* api_push.c - the HTTP API's push targets: where the caller's device is
 * woken while it holds no connection (APNs, FCM, Web Push), and the
 * server's VAPID public key that browsers subscribe with.
 *
 * Everything a target holds is checked here before it is stored, since
 * the push path will later hand it to a provider or, for Web Push, call
 * it: tokens by their platform's alphabet and size, Web Push endpoints by
 * scheme and host. An endpoint is a URL the server itself will POST to,
 * so a user could otherwise point it at the server's own network: it must
 * be https and its host must not be loopback, private, link-local or
 * otherwise not public, written as a name ("localhost") or as an address
 * in any of the forms a resolver accepts ("127.1", "0x7f000001", "[::1]").
 * A name that resolves to such an address is refused again when pushed to
 * (the push path connects only to public addresses), which also covers a
 * name that changes its answer after registration. --push-allow-http-
 * endpoints lifts both rules, for tests against a local fake. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ec.h>
#include <openssl/obj_mac.h>
#include <sodium.h>

#include "api_internal.h"
#include "log.h"
#include "loop.h"
#include "publicaddr.h"
#include "vapid.h"

#define APNS_TOKEN_MIN 64    /* 32 bytes in hex today; room for longer */
#define APNS_TOKEN_MAX 200
#define APNS_TOPIC_MAX 255
/* Real ones are about 160 bytes; the bound keeps an address inside what a
 * PostgreSQL btree index entry holds (~2.7 KB), which the store's unique
 * (platform, address) index needs: a longer one would fail as a 500. */
#define FCM_TOKEN_MAX 1024
#define ENDPOINT_MAX 1024
#define P256DH_LEN 65        /* an uncompressed P-256 point */
#define AUTH_LEN 16

/* ---- what an endpoint may point at ---------------------------------- */

/* Checks a Web Push endpoint; NULL when it may be used, else why not. */
static const char *endpoint_refused(const char *url, size_t len, int allow_local)
{
	const char *p, *host, *end;
	char name[256];
	size_t hl;
	struct in_addr v4;
	unsigned char v6[16];
	size_t i;

	if (len == 0 || len > ENDPOINT_MAX)
		return "subscription.endpoint must be a URL of at most 1024 bytes";
	for (i = 0; i < len; i++)
		if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
			return "subscription.endpoint must be a URL without spaces or control characters";
	if (!strncmp(url, "https://", 8))
		host = url + 8;
	else if (allow_local && !strncmp(url, "http://", 7))
		host = url + 7;
	else
		return "subscription.endpoint must be an https:// URL";
	end = host + strcspn(host, "/?#");
	for (p = host; p < end; p++)
		if (*p == '@')
			return "subscription.endpoint must not carry a user name or password";
	if (host < end && *host == '[') {
		const char *close = memchr(host, ']', (size_t)(end - host));
		if (!close)
			return "subscription.endpoint has an unclosed [address]";
		hl = (size_t)(close - host - 1);
		if (hl == 0 || hl >= sizeof name)
			return "subscription.endpoint has no host";
		memcpy(name, host + 1, hl);
		name[hl] = 0;
		if (inet_pton(AF_INET6, name, v6) != 1)
			return "subscription.endpoint has a malformed IPv6 address";
		p = close + 1;
		if (!allow_local && !publicaddr_v6(v6))
			return "subscription.endpoint must not point at a loopback, private or reserved address";
	} else {
		p = host;
		while (p < end && *p != ':')
			p++;
		hl = (size_t)(p - host);
		if (hl == 0 || hl >= sizeof name)
			return "subscription.endpoint has no host";
		for (i = 0; i < hl; i++) {
			unsigned char c = (unsigned char)tolower((unsigned char)host[i]);
			if (!isalnum(c) && c != '-' && c != '.' && c != '_')
				return "subscription.endpoint has a malformed host";
			name[i] = (char)c;
		}
		name[hl] = 0;
		while (hl && name[hl - 1] == '.')
			name[--hl] = 0;
		if (hl == 0)
			return "subscription.endpoint has no host";
		/* inet_aton takes every numeric form a resolver does. */
		if (inet_aton(name, &v4)) {
			if (!allow_local && !publicaddr_v4(ntohl(v4.s_addr)))
				return "subscription.endpoint must not point at a loopback, private or reserved address";
		} else if (!allow_local && (!strcmp(name, "localhost") ||
		                            (hl > 10 && !strcmp(name + hl - 10, ".localhost")) || !strchr(name, '.'))) {
			return "subscription.endpoint must name a public host";
		}
	}
	if (p < end) {
		if (*p != ':' || p + 1 == end)
			return "subscription.endpoint has a malformed port";
		for (p++; p < end; p++)
			if (!isdigit((unsigned char)*p))
				return "subscription.endpoint has a malformed port";
	}
	return NULL;
}

/* ---- the fields of a target ----------------------------------------- */

/* base64url (with or without padding) of exactly want bytes into out;
 * 0, or -1. */
static int b64url_exact(const char *s, size_t len, unsigned char *out, size_t want)
{
	size_t n = 0;

	if (sodium_base642bin(out, want, s, len, NULL, &n, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0 &&
	    n == want)
		return 0;
	if (sodium_base642bin(out, want, s, len, NULL, &n, NULL, sodium_base64_VARIANT_URLSAFE) == 0 && n == want)
		return 0;
	return -1;
}

/* 1 when point is an uncompressed point of P-256. */
static int p256_point(const unsigned char point[P256DH_LEN])
{
	EC_GROUP *g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
	EC_POINT *pt = g ? EC_POINT_new(g) : NULL;
	int ok = pt && point[0] == 0x04 && EC_POINT_oct2point(g, pt, point, P256DH_LEN, NULL) == 1;

	EC_POINT_free(pt);
	EC_GROUP_free(g);
	return ok;
}

static int all_of(const char *s, size_t n, const char *extra, int hex_only)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (hex_only ? !isxdigit(c) : !(isalnum(c) || (c && strchr(extra, c))))
			return 0;
	}
	return 1;
}

/* A field of j that must be a string: its value (borrowed), or NULL
 * after refusing (naming it). *len gets its length. */
static const char *string_field(json_t *j, const char *name, api_res_t *res, size_t *len, int required)
{
	json_t *v = json_object_get(j, name);
	char msg[96];

	if (!v && !required) {
		*len = 0;
		return "";
	}
	if (!json_is_string(v)) {
		snprintf(msg, sizeof msg, "%s must be a string", name);
		api_fail(res, 400, "bad_request", msg);
		return NULL;
	}
	*len = json_string_length(v);
	return json_string_value(v);
}

/* Only the named keys (NULL-terminated) in object j; 0, or -1 refused. */
static int only_keys(json_t *j, const char *const *allowed, const char *what, api_res_t *res)
{
	const char *key;
	json_t *v;
	char msg[128];

	json_object_foreach(j, key, v) {
		size_t i;
		for (i = 0; allowed[i] && strcmp(allowed[i], key); i++)
			;
		if (!allowed[i]) {
			snprintf(msg, sizeof msg, "%s: unknown field \"%.40s\"", what, key);
			api_fail(res, 400, "bad_request", msg);
			return -1;
		}
	}
	return 0;
}

static const char *platform_name(int p)
{
	return p == STORE_PUSH_APNS ? "apns" : p == STORE_PUSH_FCM ? "fcm" : "webpush";
}

static void target_json(jbuf_t *b, const store_push_target_t *t, int64_t current_device)
{
	jbuf_lit(b, "{\"push_target_id\":");
	jbuf_int(b, t->id);
	jbuf_lit(b, ",\"platform\":");
	jbuf_cstr(b, platform_name(t->platform));
	jbuf_lit(b, ",\"device_id\":");
	jbuf_int(b, t->device);
	jbuf_lit(b, t->device == current_device ? ",\"current\":true" : ",\"current\":false");
	if (t->platform == STORE_PUSH_APNS) {
		jbuf_lit(b, ",\"topic\":");
		jbuf_cstr(b, t->topic);
		jbuf_lit(b, t->sandbox ? ",\"environment\":\"sandbox\"" : ",\"environment\":\"production\"");
	} else if (t->platform == STORE_PUSH_WEBPUSH) {
		jbuf_lit(b, ",\"endpoint\":");
		jbuf_cstr(b, t->address);
	}
	jbuf_lit(b, ",\"created_at\":");
	jbuf_int(b, t->created_at);
	jbuf_lit(b, "}");
}

static void target_clear(store_push_target_t *t)
{
	free(t->address);
	free(t->topic);
	free(t->p256dh);
	free(t->auth);
	memset(t, 0, sizeof *t);
}

/* read_*: the body of a POST for one platform, checked, into t (its
 * strings malloc'd, for target_clear). 0; -1 refused; -2 out of memory. */
static int read_apns(json_t *j, store_push_target_t *t, api_res_t *res)
{
	static const char *const keys[] = {"platform", "token", "topic", "environment", NULL};
	const char *token, *topic, *env;
	size_t tl, ol, el, i;

	if (only_keys(j, keys, "an apns target", res) < 0 || !(token = string_field(j, "token", res, &tl, 1)) ||
	    !(topic = string_field(j, "topic", res, &ol, 1)) || !(env = string_field(j, "environment", res, &el, 0)))
		return -1;
	if (tl < APNS_TOKEN_MIN || tl > APNS_TOKEN_MAX || tl % 2 || !all_of(token, tl, "", 1)) {
		api_fail(res, 400, "bad_request", "token: an APNs device token is 64 to 200 hex digits");
		return -1;
	}
	if (ol == 0 || ol > APNS_TOPIC_MAX || !all_of(topic, ol, ".-_", 0)) {
		api_fail(res, 400, "bad_request", "topic: the app's bundle id, 1 to 255 of [A-Za-z0-9._-]");
		return -1;
	}
	if (el && strcmp(env, "production") && strcmp(env, "sandbox")) {
		api_fail(res, 400, "bad_request", "environment must be \"production\" or \"sandbox\"");
		return -1;
	}
	t->platform = STORE_PUSH_APNS;
	t->sandbox = el && !strcmp(env, "sandbox");
	if (!(t->address = strdup(token)) || !(t->topic = strdup(topic)))
		return -2;
	for (i = 0; t->address[i]; i++)
		t->address[i] = (char)tolower((unsigned char)t->address[i]);
	return 0;
}

static int read_fcm(json_t *j, store_push_target_t *t, api_res_t *res)
{
	static const char *const keys[] = {"platform", "token", NULL};
	const char *token;
	size_t tl;

	if (only_keys(j, keys, "an fcm target", res) < 0 || !(token = string_field(j, "token", res, &tl, 1)))
		return -1;
	if (tl == 0 || tl > FCM_TOKEN_MAX || !all_of(token, tl, "_:-.", 0)) {
		api_fail(res, 400, "bad_request", "token: an FCM registration token, 1 to 1024 of [A-Za-z0-9_:.-]");
		return -1;
	}
	t->platform = STORE_PUSH_FCM;
	return (t->address = strdup(token)) ? 0 : -2;
}

static int read_webpush(json_t *j, store_push_target_t *t, int allow_local, api_res_t *res)
{
	static const char *const keys[] = {"platform", "subscription", NULL};
	static const char *const sub_keys[] = {"endpoint", "expirationTime", "keys", NULL};
	static const char *const key_keys[] = {"p256dh", "auth", NULL};
	json_t *sub = json_object_get(j, "subscription"), *k, *exp;
	unsigned char point[P256DH_LEN], auth[AUTH_LEN];
	char b64[128];
	const char *endpoint, *p256dh, *au, *why;
	size_t el, pl, al;

	if (only_keys(j, keys, "a webpush target", res) < 0)
		return -1;
	if (!json_is_object(sub)) {
		api_fail(res, 400, "bad_request", "subscription must be what PushSubscription.toJSON() gives");
		return -1;
	}
	if (only_keys(sub, sub_keys, "subscription", res) < 0 || !(endpoint = string_field(sub, "endpoint", res, &el, 1)))
		return -1;
	exp = json_object_get(sub, "expirationTime");
	if (exp && !json_is_null(exp) && !json_is_number(exp)) {
		api_fail(res, 400, "bad_request", "subscription.expirationTime must be a number or null");
		return -1;
	}
	if ((why = endpoint_refused(endpoint, el, allow_local)) != NULL) {
		api_fail(res, 400, "bad_request", why);
		return -1;
	}
	k = json_object_get(sub, "keys");
	if (!json_is_object(k)) {
		api_fail(res, 400, "bad_request", "subscription.keys must hold p256dh and auth");
		return -1;
	}
	if (only_keys(k, key_keys, "subscription.keys", res) < 0 || !(p256dh = string_field(k, "p256dh", res, &pl, 1)) ||
	    !(au = string_field(k, "auth", res, &al, 1)))
		return -1;
	if (b64url_exact(p256dh, pl, point, sizeof point) < 0 || !p256_point(point)) {
		api_fail(res, 400, "bad_request",
		         "subscription.keys.p256dh must be an uncompressed P-256 public key in base64url");
		return -1;
	}
	if (b64url_exact(au, al, auth, sizeof auth) < 0) {
		api_fail(res, 400, "bad_request", "subscription.keys.auth must be 16 bytes in base64url");
		return -1;
	}
	t->platform = STORE_PUSH_WEBPUSH;
	if (!(t->address = strdup(endpoint)))
		return -2;
	/* Kept in one form, whatever padding the browser used. */
	sodium_bin2base64(b64, sizeof b64, point, sizeof point, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	if (!(t->p256dh = strdup(b64)))
		return -2;
	sodium_bin2base64(b64, sizeof b64, auth, sizeof auth, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	return (t->auth = strdup(b64)) ? 0 : -2;
}

/* ---- the endpoints -------------------------------------------------- */

/* POST /api/v1/push-targets: sets the caller's device's target for its
 * platform (a second one replaces the first, as a token that rotated). */
void api_create_push_target(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	store_push_target_t t = {0}, *list = NULL;
	const char *platform;
	size_t n = 0, pl, i;
	int64_t id;
	json_t *j;
	int r;

	(void)ids;
	if (api_authenticate(st, rq, res) < 0 || api_charge(rq, res, 2) < 0 || !(j = api_parse_body(rq, res)))
		return;
	if (!(platform = string_field(j, "platform", res, &pl, 1))) {
		json_decref(j);
		return;
	}
	if (!strcmp(platform, "apns"))
		r = read_apns(j, &t, res);
	else if (!strcmp(platform, "fcm"))
		r = read_fcm(j, &t, res);
	else if (!strcmp(platform, "webpush"))
		r = read_webpush(j, &t, rq->srv->cfg.push_allow_http_endpoints, res);
	else {
		api_fail(res, 400, "bad_request", "platform must be \"apns\", \"fcm\" or \"webpush\"");
		r = -1;
	}
	json_decref(j);
	if (r == -2)
		api_fail(res, 500, "internal", "out of memory");
	if (r < 0) {
		target_clear(&t);
		return;
	}
	t.user = rq->user;
	t.device = rq->device;
	if ((r = store_push_target_put(st, &t, clock_wall_ms(), &id)) != STORE_OK) {
		if (r == STORE_NOT_FOUND)
			api_fail(res, 401, "unauthorized", "this device has been logged out");
		else
			api_fail_store(res, r);
		target_clear(&t);
		return;
	}
	target_clear(&t);
	/* Answered as listed, from the store. */
	if ((r = store_push_targets(st, rq->user, &list, &n)) != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	for (i = 0; i < n && list[i].id != id; i++)
		;
	if (i == n) {
		api_fail(res, 409, "conflict", "the push target was replaced meanwhile; list them");
	} else {
		log_info("api: user %lld set device %lld's %s push target %lld", (long long)rq->user,
		         (long long)rq->device, platform_name(list[i].platform), (long long)id);
		res->status = 201;
		target_json(&res->body, &list[i], rq->device);
	}
	store_push_targets_free(list, n);
}

/* GET /api/v1/push-targets: the caller's, every device's. Tokens are not
 * shown: a client that wants to know whether its own is set sets it
 * again. */
void api_list_push_targets(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	store_push_target_t *list = NULL;
	size_t n = 0, i;
	int r;

	(void)ids;
	if (api_authenticate(st, rq, res) < 0 || api_charge(rq, res, 2) < 0)
		return;
	if ((r = store_push_targets(st, rq->user, &list, &n)) != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	res->status = 200;
	jbuf_lit(&res->body, "{\"push_targets\":[");
	for (i = 0; i < n; i++) {
		if (i)
			jbuf_raw(&res->body, ",", 1);
		target_json(&res->body, &list[i], rq->device);
	}
	jbuf_lit(&res->body, "]}");
	store_push_targets_free(list, n);
}

void api_delete_push_target(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	int r;

	if (api_authenticate(st, rq, res) < 0 || api_charge(rq, res, 1) < 0)
		return;
	if ((r = store_push_target_delete(st, rq->user, ids[0])) == STORE_NOT_FOUND) {
		api_fail(res, 404, "not_found", "no such push target of yours");
		return;
	}
	if (r != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	log_info("api: user %lld removed push target %lld", (long long)rq->user, (long long)ids[0]);
	res->status = 204;
}

/* GET /api/v1/push-targets/vapid: the key a browser subscribes with
 * (PushManager.subscribe's applicationServerKey). Public: it needs no
 * token, and is charged to the address. */
void api_vapid_key(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	(void)st;
	(void)ids;
	if (api_charge_address(rq, res, 1) < 0)
		return;
	if (!rq->srv->vapid) {
		api_fail(res, 503, "unavailable", "the server has no Web Push key");
		return;
	}
	res->status = 200;
	jbuf_lit(&res->body, "{\"public_key\":");
	jbuf_cstr(&res->body, vapid_public_key(rq->srv->vapid));
	jbuf_lit(&res->body, "}");
}
