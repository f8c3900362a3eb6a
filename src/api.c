/* api.c - the HTTP API (api.h), run on the worker threads.
 *
 * Every handler gets the request copied off the I/O thread, answers with a
 * complete response, and posts it back to the connection. Validation comes
 * before any write, so a refused request changes nothing. */
#include "api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "auth.h"
#include "budget.h"
#include "clientaddr.h"
#include "bus.h"
#include "frames.h"
#include "gateway.h"
#include "ids.h"
#include "jbuf.h"
#include "log.h"
#include "loginguard.h"
#include "loop.h"
#include "store.h"
#include "workers.h"

#define DEVICE_NAME_MAX 64

typedef struct api_req {
	server_t *srv;
	uint64_t conn;
	uint64_t client;        /* the client's address key */
	int keep_alive;
	char method[8];
	char *target;           /* NUL-terminated copy */
	size_t target_len, path_len;
	char *token;            /* from Authorization: Bearer, or NULL */
	size_t token_len;
	char *body;
	size_t body_len;
} api_req_t;

typedef struct api_res {
	int status;
	jbuf_t body;            /* JSON; empty for 204 */
	const char *extra;      /* extra header lines */
	char extra_buf[64];     /* room for a computed one */
} api_res_t;

typedef struct upgrade_req {
	server_t *srv;
	uint64_t conn, client;
	size_t token_len;
	char accept[29];
	char token[];
} upgrade_req_t;

static void fail(api_res_t *res, int status, const char *code, const char *message)
{
	res->status = status;
	jbuf_reset(&res->body);
	http_error_json(&res->body, code, message);
}

/* 429 rate_limited with when to try again, as a header and in the body
 * (the retry_after_ms of the WebSocket's rate_limited error). */
static void fail_retry(api_res_t *res, const char *message, int64_t wait_ms)
{
	res->status = 429;
	jbuf_reset(&res->body);
	jbuf_lit(&res->body, "{\"error\":{\"code\":\"rate_limited\",\"message\":");
	jbuf_cstr(&res->body, message);
	jbuf_lit(&res->body, ",\"retry_after_ms\":");
	jbuf_int(&res->body, wait_ms);
	jbuf_lit(&res->body, "}}");
	snprintf(res->extra_buf, sizeof res->extra_buf, "Retry-After: %lld\r\n", (long long)(wait_ms + 999) / 1000);
	res->extra = res->extra_buf;
}

static void fail_store(api_res_t *res, int r)
{
	switch (r) {
	case STORE_FORBIDDEN:
		fail(res, 403, "forbidden", "not a member of this conversation");
		break;
	case STORE_NOT_FOUND:
		fail(res, 404, "not_found", "not found");
		break;
	case STORE_NOT_GROUP:
		fail(res, 400, "bad_request", "a direct conversation has exactly its two members");
		break;
	case STORE_FULL:
		fail(res, 400, "bad_request", "a group has at most 1024 members");
		break;
	default:
		fail(res, 500, "internal", "the store failed; retry later");
	}
}

static json_t *parse_body(const api_req_t *rq, api_res_t *res)
{
	json_error_t err;
	json_t *j;

	if (rq->body_len == 0) {
		fail(res, 400, "bad_request", "a JSON object body is required");
		return NULL;
	}
	j = json_loadb(rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &err);
	if (!j || !json_is_object(j)) {
		fail(res, 400, "bad_request", j ? "the body must be a JSON object" : "the body is not valid JSON");
		json_decref(j);
		return NULL;
	}
	return j;
}

/* Authenticates the request's bearer token. */
static int authenticate(store_t *st, const api_req_t *rq, api_res_t *res, int64_t *user,
                        int64_t *device)
{
	uint8_t hash[32];
	int r;

	if (!rq->token || auth_token_hash(rq->token, rq->token_len, hash) < 0) {
		fail(res, 401, "unauthorized", rq->token ? "invalid token" : "a bearer token is required");
		return -1;
	}
	r = store_device_by_token(st, hash, user, device);
	if (r == STORE_NOT_FOUND) {
		fail(res, 401, "unauthorized", "invalid or expired token");
		return -1;
	}
	if (r != STORE_OK) {
		fail_store(res, r);
		return -1;
	}
	return 0;
}

/* ---- accounts ------------------------------------------------------- */

static void user_json(jbuf_t *b, int64_t id, const char *name)
{
	jbuf_lit(b, "{\"user_id\":");
	jbuf_int(b, id);
	jbuf_lit(b, ",\"username\":");
	jbuf_cstr(b, name);
	jbuf_lit(b, "}");
}

static void create_user(store_t *st, const api_req_t *rq, api_res_t *res)
{
	json_t *j = parse_body(rq, res), *u, *p;
	char hash[AUTH_PWHASH_MAX];
	int64_t id;
	int r;

	if (!j)
		return;
	u = json_object_get(j, "username");
	p = json_object_get(j, "password");
	if (!json_is_string(u) || !auth_username_valid(json_string_value(u), json_string_length(u))) {
		fail(res, 400, "bad_request", "username: 3 to 32 characters of a-z, 0-9, '_', '.', '-'");
	} else if (!json_is_string(p) || json_string_length(p) < AUTH_PASSWORD_MIN ||
	           json_string_length(p) > AUTH_PASSWORD_MAX) {
		fail(res, 400, "bad_request", "password: 8 to 128 bytes");
	} else if (auth_password_hash(json_string_value(p), json_string_length(p), hash) < 0) {
		fail(res, 500, "internal", "cannot hash the password");
	} else if ((r = store_user_create(st, json_string_value(u), hash, clock_wall_ms(), &id)) ==
	           STORE_EXISTS) {
		fail(res, 409, "conflict", "username taken");
	} else if (r != STORE_OK) {
		fail_store(res, r);
	} else {
		res->status = 201;
		user_json(&res->body, id, json_string_value(u));
		log_info("api: new user %lld (%s)", (long long)id, json_string_value(u));
	}
	json_decref(j);
}

#define USERS_BY_ID_MAX 256

/* GET /api/v1/users?ids=1,2,3 (an addition): the names of up to 256 users
 * by id, for showing the members of one's conversations. It needs a token
 * and answers only for the caller and users who share a conversation with
 * it; other ids, unknown or not, are left out, so ids reveal nothing. */
static void users_by_id(store_t *st, const api_req_t *rq, api_res_t *res, const char *list, size_t len)
{
	char name[STORE_USERNAME_MAX + 1];
	int64_t user, device, seen;
	size_t at = 0, count = 0;
	int first = 1;

	if (authenticate(st, rq, res, &user, &device) < 0)
		return;
	/* Check the whole list before answering any of it. */
	while (at < len) {
		size_t start = at;
		while (at < len && list[at] >= '0' && list[at] <= '9')
			at++;
		if (at == start || at - start > 16 || list[start] == '0' || (at < len && list[at] != ',') ||
		    ++count > USERS_BY_ID_MAX || (at < len && at + 1 == len)) {
			fail(res, 400, "bad_request", "ids: 1 to 256 user ids, separated by commas");
			return;
		}
		if (at < len)
			at++;
	}
	if (count == 0) {
		fail(res, 400, "bad_request", "ids: 1 to 256 user ids, separated by commas");
		return;
	}
	jbuf_lit(&res->body, "{\"users\":[");
	for (at = 0; at < len;) {
		int64_t id = strtoll(list + at, NULL, 10);
		int r;
		while (at < len && list[at] != ',')
			at++;
		at++;
		if (id <= 0 || id >= (INT64_C(1) << 53))
			continue;
		if (id != user && (r = store_watchable(st, user, id, &seen)) != STORE_OK) {
			if (r == STORE_FORBIDDEN || r == STORE_NOT_FOUND)
				continue;
			jbuf_reset(&res->body);
			fail_store(res, r);
			return;
		}
		if ((r = store_user_by_id(st, id, name)) == STORE_NOT_FOUND)
			continue;
		if (r != STORE_OK) {
			jbuf_reset(&res->body);
			fail_store(res, r);
			return;
		}
		if (!first)
			jbuf_lit(&res->body, ",");
		first = 0;
		user_json(&res->body, id, name);
	}
	jbuf_lit(&res->body, "]}");
	res->status = 200;
}

/* Open without a token: whether a name is taken is no secret (registering
 * it would tell), and a client may look its contacts up before logging in. */
static void find_user(store_t *st, const api_req_t *rq, api_res_t *res)
{
	char name[64], ids[USERS_BY_ID_MAX * 17];
	int64_t id;
	int n, r;

	n = http_query_param(rq->target, rq->target_len, "ids", ids, sizeof ids);
	if (n >= 0) {
		users_by_id(st, rq, res, ids, (size_t)n);
		return;
	}
	if (n == -2) {
		fail(res, 400, "bad_request", "ids: 1 to 256 user ids, separated by commas");
		return;
	}
	n = http_query_param(rq->target, rq->target_len, "username", name, sizeof name);
	if (n < 0) {
		fail(res, 400, "bad_request", "the username query parameter is required");
		return;
	}
	if (!auth_username_valid(name, (size_t)n)) {
		fail(res, 404, "not_found", "no such user");
		return;
	}
	r = store_user_by_name(st, name, &id, NULL);
	if (r == STORE_NOT_FOUND) {
		fail(res, 404, "not_found", "no such user");
		return;
	}
	if (r != STORE_OK) {
		fail_store(res, r);
		return;
	}
	res->status = 200;
	user_json(&res->body, id, name);
}

static void create_session(store_t *st, const api_req_t *rq, api_res_t *res)
{
	json_t *j = parse_body(rq, res), *u, *p, *d;
	char token[AUTH_TOKEN_LEN + 1], *hash = NULL;
	uint8_t thash[32];
	int64_t user = 0, device;
	const char *dname = "device";
	int r = STORE_NOT_FOUND;
	int64_t wait, evicted = 0;

	if (!j)
		return;
	u = json_object_get(j, "username");
	p = json_object_get(j, "password");
	d = json_object_get(j, "device_name");
	if (!json_is_string(u) || !json_is_string(p)) {
		fail(res, 400, "bad_request", "username and password are required strings");
		goto out;
	}
	if (d && !json_is_null(d)) {
		if (!json_is_string(d) || json_string_length(d) < 1 ||
		    json_string_length(d) > DEVICE_NAME_MAX) {
			fail(res, 400, "bad_request", "device_name: 1 to 64 bytes");
			goto out;
		}
		dname = json_string_value(d);
	}
	/* An account being guessed at waits before any work is done. */
	if ((wait = loginguard_wait_ms(rq->srv->logins, json_string_value(u), json_string_length(u), rq->client,
	                               clock_wall_ms())) > 0) {
		fail_retry(res, "too many failed logins for this username; try again later", wait);
		goto out;
	}
	if (auth_username_valid(json_string_value(u), json_string_length(u)))
		r = store_user_by_name(st, json_string_value(u), &user, &hash);
	if (r != STORE_OK && r != STORE_NOT_FOUND) {
		fail_store(res, r);
		goto out;
	}
	/* Unknown users cost a hash too: the delay tells nothing. */
	if (!auth_password_check(r == STORE_OK ? hash : NULL, json_string_value(p),
	                         json_string_length(p))) {
		loginguard_failed(rq->srv->logins, json_string_value(u), json_string_length(u), rq->client,
		                  clock_wall_ms());
		/* Valid names are short and plain; anything else is not logged. */
		log_info("api: failed login for %s",
		         auth_username_valid(json_string_value(u), json_string_length(u)) ? json_string_value(u)
		                                                                          : "(not a valid username)");
		fail(res, 401, "unauthorized", "wrong username or password");
		goto out;
	}
	loginguard_succeeded(rq->srv->logins, json_string_value(u), json_string_length(u), rq->client,
	                     clock_wall_ms());
	auth_token_new(token, thash);
	if ((r = store_device_create(st, user, dname, thash, clock_wall_ms(), rq->srv->cfg.max_devices, &device,
	                             &evicted)) != STORE_OK) {
		fail_store(res, r);
		goto out;
	}
	if (evicted) {
		/* The oldest login made room for this one: its token no longer
		 * works and its sockets close as at a logout. */
		log_info("api: user %lld has %u devices; logging out the oldest (%lld)", (long long)user,
		         rq->srv->cfg.max_devices, (long long)evicted);
		bus_kick_device(rq->srv->bus, user, evicted);
	}
	res->status = 201;
	jbuf_lit(&res->body, "{\"token\":");
	jbuf_cstr(&res->body, token);
	jbuf_lit(&res->body, ",\"user_id\":");
	jbuf_int(&res->body, user);
	jbuf_lit(&res->body, ",\"device_id\":");
	jbuf_int(&res->body, device);
	jbuf_lit(&res->body, "}");
out:
	free(hash);
	json_decref(j);
}

static void delete_session(store_t *st, const api_req_t *rq, api_res_t *res)
{
	int64_t user, device;
	int r;

	if (authenticate(st, rq, res, &user, &device) < 0)
		return;
	if ((r = store_device_delete(st, user, device)) != STORE_OK && r != STORE_NOT_FOUND) {
		fail_store(res, r);
		return;
	}
	/* The token no longer authenticates; now end its live sockets. */
	bus_kick_device(rq->srv->bus, user, device);
	res->status = 204;
}

/* ---- conversations -------------------------------------------------- */

static const char *kind_name(int kind)
{
	return kind == STORE_GROUP ? "group" : "direct";
}

static void message_json(jbuf_t *b, const store_message_t *m)
{
	jbuf_raw(b, "{", 1);
	frames_message_json(b, m);
	jbuf_raw(b, "}", 1);
}

static void conv_head_json(jbuf_t *b, const store_conv_t *c)
{
	size_t i;

	jbuf_lit(b, "{\"conversation_id\":");
	jbuf_int(b, c->id);
	jbuf_lit(b, ",\"kind\":");
	jbuf_cstr(b, kind_name(c->kind));
	jbuf_lit(b, ",\"title\":");
	jbuf_cstr(b, c->title);
	jbuf_lit(b, ",\"members\":[");
	for (i = 0; i < c->nmembers; i++) {
		if (i)
			jbuf_raw(b, ",", 1);
		jbuf_int(b, c->members[i]);
	}
	jbuf_lit(b, "]");
	if (c->kind == STORE_GROUP) {
		jbuf_lit(b, ",\"admins\":[");
		for (i = 0; i < c->nadmins; i++) {
			if (i)
				jbuf_raw(b, ",", 1);
			jbuf_int(b, c->admins[i]);
		}
		jbuf_lit(b, "]");
	}
}

/* The full entry of the conversation list. */
static void conv_entry_json(jbuf_t *b, const store_conv_t *c)
{
	conv_head_json(b, c);
	jbuf_lit(b, ",\"last_seq\":");
	jbuf_int(b, c->last_seq);
	jbuf_lit(b, ",\"last_message\":");
	if (c->last_message)
		message_json(b, c->last_message);
	else
		jbuf_lit(b, "null");
	jbuf_lit(b, ",\"read_seq\":");
	jbuf_int(b, c->read_seq);
	jbuf_lit(b, ",\"unread\":");
	jbuf_int(b, c->unread);
	jbuf_lit(b, "}");
}

/* Tells every member of conv (and also, when not 0, a user who just left
 * it) of a membership change. */
static void announce(store_t *st, server_t *srv, int64_t conv, const char *event, int64_t user,
                     int64_t by, int64_t also)
{
	int64_t *ids;
	size_t n, i;
	sbuf_t *f;

	if (store_members(st, conv, &ids, &n) != STORE_OK)
		return; /* logged by the store; clients still learn on resume */
	if ((f = frames_members(conv, event, user, by, n)) != NULL) {
		for (i = 0; i < n; i++)
			bus_deliver(srv->bus, ids[i], 0, f);
		if (also)
			bus_deliver(srv->bus, also, 0, f);
		sbuf_unref(f);
	}
	free(ids);
}

#define TITLE_MAX 128

static void create_conversation(store_t *st, const api_req_t *rq, api_res_t *res)
{
	json_t *j, *members, *v, *title;
	int64_t user, device, id, conv, *others = NULL;
	const char *t = NULL;
	store_conv_t c;
	size_t i, k, n = 0;
	int created = 1, r;
	char name[STORE_USERNAME_MAX + 1];

	if (authenticate(st, rq, res, &user, &device) < 0)
		return;
	if (!(j = parse_body(rq, res)))
		return;
	members = json_object_get(j, "members");
	title = json_object_get(j, "title");
	if (!json_is_array(members) || json_array_size(members) == 0) {
		fail(res, 400, "bad_request", "members must be a non-empty array of user ids");
		goto out;
	}
	if (json_array_size(members) > 4 * STORE_GROUP_MAX) {
		fail(res, 400, "bad_request", "a group has at most 1024 members");
		goto out;
	}
	if (title && !json_is_null(title)) {
		if (!json_is_string(title) || json_string_length(title) < 1 ||
		    json_string_length(title) > TITLE_MAX) {
			fail(res, 400, "bad_request", "title must be a string of 1 to 128 bytes");
			goto out;
		}
		t = json_string_value(title);
	}
	if (!(others = malloc(json_array_size(members) * sizeof *others))) {
		fail(res, 500, "internal", "out of memory");
		goto out;
	}
	/* The other members, each once; naming oneself is harmless. */
	json_array_foreach(members, i, v) {
		if (id_from_json(v, 1, &id) < 0) {
			fail(res, 400, "bad_request", "members must be user ids");
			goto out;
		}
		for (k = 0; k < n && others[k] != id; k++)
			;
		if (id != user && k == n)
			others[n++] = id;
	}
	if (n == 0) {
		fail(res, 400, "bad_request", "members must name someone other than yourself");
		goto out;
	}
	if (n + 1 > STORE_GROUP_MAX) {
		fail(res, 400, "bad_request", "a group has at most 1024 members");
		goto out;
	}
	if (n == 1) {
		if ((r = store_user_by_id(st, others[0], name)) == STORE_OK)
			r = store_direct_open(st, user, others[0], clock_wall_ms(), &conv, &created);
	} else {
		r = store_group_create(st, user, others, n, t, clock_wall_ms(), &conv);
	}
	if (r == STORE_NOT_FOUND) {
		fail(res, 404, "not_found", "no such user");
		goto out;
	}
	if (r != STORE_OK || (r = store_conv_get(st, conv, user, &c)) != STORE_OK) {
		fail_store(res, r);
		goto out;
	}
	res->status = created ? 201 : 200;
	conv_head_json(&res->body, &c);
	jbuf_lit(&res->body, "}");
	store_conv_clear(&c);
	if (n > 1) {
		log_info("api: user %lld created group %lld of %zu members", (long long)user,
		         (long long)conv, n + 1);
		announce(st, rq->srv, conv, "created", 0, user, 0);
	}
out:
	free(others);
	json_decref(j);
}

static void get_conversation(store_t *st, const api_req_t *rq, int64_t conv, api_res_t *res)
{
	int64_t user, device;
	store_conv_t c;
	int r;

	if (authenticate(st, rq, res, &user, &device) < 0)
		return;
	if ((r = store_conv_get(st, conv, user, &c)) != STORE_OK) {
		fail_store(res, r);
		return;
	}
	res->status = 200;
	conv_entry_json(&res->body, &c);
	store_conv_clear(&c);
}

static void list_conversations(store_t *st, const api_req_t *rq, api_res_t *res)
{
	int64_t user, device;
	store_conv_t *cs;
	size_t n, i;
	int r;

	if (authenticate(st, rq, res, &user, &device) < 0)
		return;
	if ((r = store_conv_list(st, user, &cs, &n)) != STORE_OK) {
		fail_store(res, r);
		return;
	}
	res->status = 200;
	jbuf_lit(&res->body, "{\"conversations\":[");
	for (i = 0; i < n; i++) {
		if (i)
			jbuf_raw(&res->body, ",", 1);
		conv_entry_json(&res->body, &cs[i]);
	}
	jbuf_lit(&res->body, "]}");
	store_convs_free(cs, n);
}

static void history(store_t *st, const api_req_t *rq, int64_t conv, api_res_t *res)
{
	int64_t user, device, before = 0, limit = 50;
	store_message_t *ms;
	char v[32];
	size_t n, i;
	int has_more, r, len;

	if (authenticate(st, rq, res, &user, &device) < 0)
		return;
	if ((len = http_query_param(rq->target, rq->target_len, "before", v, sizeof v)) != -1 &&
	    (len < 0 || id_parse(v, (size_t)len, 0, &before) < 0)) {
		fail(res, 400, "bad_request", "before must be a seq (an integer >= 0)");
		return;
	}
	if (len == 1 && before == 0)
		before = 1; /* seq < 0: nothing, but the membership is still checked */
	if ((len = http_query_param(rq->target, rq->target_len, "limit", v, sizeof v)) != -1 &&
	    (len < 0 || id_parse(v, (size_t)len, 1, &limit) < 0 || limit > 200)) {
		fail(res, 400, "bad_request", "limit must be 1 to 200");
		return;
	}
	r = store_history(st, conv, user, before, (int)limit, &ms, &n, &has_more);
	if (r != STORE_OK) {
		fail_store(res, r);
		return;
	}
	res->status = 200;
	jbuf_lit(&res->body, "{\"messages\":[");
	for (i = 0; i < n; i++) {
		if (i)
			jbuf_raw(&res->body, ",", 1);
		message_json(&res->body, &ms[i]);
	}
	jbuf_lit(&res->body, "],\"has_more\":");
	jbuf_lit(&res->body, has_more ? "true" : "false");
	jbuf_lit(&res->body, "}");
	store_messages_free(ms, n);
}

static void receipts(store_t *st, const api_req_t *rq, int64_t conv, int64_t seq, api_res_t *res)
{
	int64_t user, device, count;
	store_receipt_t *rs;
	store_conv_t c;
	size_t n, i;
	int r, large;

	if (authenticate(st, rq, res, &user, &device) < 0)
		return;
	if ((r = store_conv_get(st, conv, user, &c)) != STORE_OK) {
		fail_store(res, r);
		return;
	}
	large = c.kind == STORE_GROUP && c.nmembers > STORE_RECEIPT_DETAIL_MAX;
	store_conv_clear(&c);
	if (large) {
		/* No per-member detail in large groups: the read count only. */
		if ((r = store_read_count(st, conv, user, seq, &count)) != STORE_OK) {
			if (r == STORE_NOT_FOUND)
				fail(res, 404, "not_found", "no such message");
			else
				fail_store(res, r);
			return;
		}
		res->status = 200;
		jbuf_lit(&res->body, "{\"delivered\":null,\"read\":");
		jbuf_int(&res->body, count);
		jbuf_lit(&res->body, "}");
		return;
	}
	if ((r = store_receipts(st, conv, user, seq, clock_wall_ms(), &rs, &n)) != STORE_OK) {
		if (r == STORE_NOT_FOUND)
			fail(res, 404, "not_found",
			     "no such message, or older than the 90 days receipt detail is kept");
		else
			fail_store(res, r);
		return;
	}
	res->status = 200;
	jbuf_lit(&res->body, "{\"receipts\":[");
	for (i = 0; i < n; i++) {
		if (i)
			jbuf_raw(&res->body, ",", 1);
		jbuf_lit(&res->body, "{\"user_id\":");
		jbuf_int(&res->body, rs[i].user_id);
		jbuf_lit(&res->body, ",\"delivered_at\":");
		if (rs[i].delivered_at)
			jbuf_int(&res->body, rs[i].delivered_at);
		else
			jbuf_lit(&res->body, "null");
		jbuf_lit(&res->body, ",\"read_at\":");
		if (rs[i].read_at)
			jbuf_int(&res->body, rs[i].read_at);
		else
			jbuf_lit(&res->body, "null");
		jbuf_lit(&res->body, "}");
	}
	jbuf_lit(&res->body, "]}");
	free(rs);
}

static void add_member(store_t *st, const api_req_t *rq, int64_t conv, api_res_t *res)
{
	int64_t user, device, target;
	json_t *j;
	int r;

	if (authenticate(st, rq, res, &user, &device) < 0)
		return;
	if (!(j = parse_body(rq, res)))
		return;
	if (id_from_json(json_object_get(j, "user_id"), 1, &target) < 0) {
		fail(res, 400, "bad_request", "user_id must be a user id");
		json_decref(j);
		return;
	}
	json_decref(j);
	r = store_member_add(st, conv, user, target, clock_wall_ms());
	if (r == STORE_OK || r == STORE_EXISTS) {
		res->status = 204; /* adding a member twice changes nothing */
		if (r == STORE_OK)
			announce(st, rq->srv, conv, "added", target, user, 0);
	} else if (r == STORE_NOT_FOUND) {
		fail(res, 404, "not_found", "no such user");
	} else if (r == STORE_FORBIDDEN) {
		fail(res, 403, "forbidden", "only a group's admins add members");
	} else {
		fail_store(res, r);
	}
}

static void remove_member(store_t *st, const api_req_t *rq, int64_t conv, int64_t target,
                          api_res_t *res)
{
	int64_t user, device, promoted;
	int r;

	if (authenticate(st, rq, res, &user, &device) < 0)
		return;
	r = store_member_remove(st, conv, user, target, &promoted);
	if (r == STORE_OK) {
		res->status = 204;
		/* The one who went hears of it too, on every device. */
		announce(st, rq->srv, conv, target == user ? "left" : "removed", target, user, target);
		if (promoted)
			announce(st, rq->srv, conv, "admin", promoted, user, 0);
	} else if (r == STORE_NOT_FOUND) {
		fail(res, 404, "not_found", "not a member of this group");
	} else if (r == STORE_FORBIDDEN) {
		fail(res, 403, "forbidden", "only a group's admins remove others; anyone may leave");
	} else {
		fail_store(res, r);
	}
}

/* ---- routing -------------------------------------------------------- */

static int method_is(const api_req_t *rq, const char *m)
{
	return strcmp(rq->method, m) == 0;
}

static void route(store_t *st, api_req_t *rq, api_res_t *res)
{
	const char *p = rq->target + 8; /* after "/api/v1/" */
	size_t n = rq->path_len - 8;
	const char *seg[6];
	size_t len[6], ns = 0;
	int64_t conv, seq;

	/* Split the path into at most 6 segments. */
	while (n > 0 && ns < 6) {
		const char *slash = memchr(p, '/', n);
		size_t l = slash ? (size_t)(slash - p) : n;
		seg[ns] = p;
		len[ns++] = l;
		if (!slash)
			break;
		p = slash + 1;
		n -= l + 1;
		if (n == 0) { /* trailing slash */
			fail(res, 404, "not_found", "no such endpoint");
			return;
		}
	}
#define SEG(i, s) (len[i] == sizeof(s) - 1 && memcmp(seg[i], s, sizeof(s) - 1) == 0)
	if (ns == 1 && SEG(0, "users")) {
		if (method_is(rq, "POST"))
			create_user(st, rq, res);
		else if (method_is(rq, "GET"))
			find_user(st, rq, res);
		else
			goto not_allowed;
		return;
	}
	if (ns == 1 && SEG(0, "sessions")) {
		if (!method_is(rq, "POST"))
			goto not_allowed;
		create_session(st, rq, res);
		return;
	}
	if (ns == 2 && SEG(0, "sessions") && SEG(1, "current")) {
		if (!method_is(rq, "DELETE"))
			goto not_allowed;
		delete_session(st, rq, res);
		return;
	}
	if (ns >= 1 && SEG(0, "conversations")) {
		if (ns == 1) {
			if (method_is(rq, "POST"))
				create_conversation(st, rq, res);
			else if (method_is(rq, "GET"))
				list_conversations(st, rq, res);
			else
				goto not_allowed;
			return;
		}
		if (id_parse(seg[1], len[1], 1, &conv) < 0) {
			fail(res, 404, "not_found", "no such conversation");
			return;
		}
		if (ns == 2) {
			if (!method_is(rq, "GET"))
				goto not_allowed;
			get_conversation(st, rq, conv, res);
			return;
		}
		if (ns == 3 && SEG(2, "messages")) {
			if (!method_is(rq, "GET"))
				goto not_allowed;
			history(st, rq, conv, res);
			return;
		}
		if (ns == 5 && SEG(2, "messages") && SEG(4, "receipts")) {
			if (!method_is(rq, "GET"))
				goto not_allowed;
			if (id_parse(seg[3], len[3], 1, &seq) < 0) {
				fail(res, 404, "not_found", "no such message");
				return;
			}
			receipts(st, rq, conv, seq, res);
			return;
		}
		if (ns == 3 && SEG(2, "members") && method_is(rq, "POST")) {
			add_member(st, rq, conv, res);
			return;
		}
		if (ns == 4 && SEG(2, "members") && method_is(rq, "DELETE")) {
			int64_t target;
			if (id_parse(seg[3], len[3], 1, &target) < 0) {
				fail(res, 404, "not_found", "not a member of this group");
				return;
			}
			remove_member(st, rq, conv, target, res);
			return;
		}
		if (ns == 3 && SEG(2, "members")) {
			res->extra = "Allow: POST\r\n";
			goto not_allowed;
		}
	}
#undef SEG
	fail(res, 404, "not_found", "no such endpoint");
	return;
not_allowed:
	fail(res, 405, "bad_request", "method not allowed on this endpoint");
}

static void api_req_free(api_req_t *rq)
{
	free(rq->target);
	free(rq->token);
	free(rq->body);
	free(rq);
}

static void request_job(store_t *st, void *arg)
{
	api_req_t *rq = arg;
	api_res_t res = {0};
	sbuf_t *out;

	jbuf_init(&res.body);
	route(st, rq, &res);
	if (res.body.oom)
		fail(&res, 500, "internal", "out of memory");
	out = http_response(res.status, "application/json", res.body.data,
	                    res.status == 204 ? 0 : res.body.len, rq->keep_alive, res.extra);
	gw_post_http(rq->srv->gw, rq->conn, out, rq->keep_alive);
	jbuf_free(&res.body);
	api_req_free(rq);
}

/* Sign-up and login: the requests that hash a password. */
static int hashes_password(const http_request_t *req)
{
	return http_is(req, "POST", "/api/v1/users") || http_is(req, "POST", "/api/v1/sessions");
}

/* A job dropped from a full queue to make room for another client's:
 * answered at once, never run. */
static void request_dropped(void *arg)
{
	api_req_t *rq = arg;

	gw_post_http(rq->srv->gw, rq->conn,
	             http_error_response(503, "unavailable", "the server is busy; retry shortly",
	                                 rq->keep_alive, "Retry-After: 1\r\n"),
	             rq->keep_alive);
	api_req_free(rq);
}

/* The per-address budget of sign-ups or logins, taken before the request
 * is queued, so that a flood from one address is refused without a hash
 * and without a place in the hashing queue. Returns 0, or the
 * milliseconds to wait. */
static int64_t hashing_budget(server_t *srv, const http_request_t *req, uint64_t client)
{
	budget_t *b = http_is(req, "POST", "/api/v1/users") ? srv->signup_budget : srv->login_budget;

	return b ? budget_take(b, client, 1, clock_mono_ms()) : 0;
}

int api_submit_request(server_t *srv, uint64_t conn, uint64_t client, const http_request_t *req,
                       const char *body, size_t body_len)
{
	api_req_t *rq;
	const http_header_t *h;
	int hashing = hashes_password(req);
	int64_t wait;

	if (hashing && (wait = hashing_budget(srv, req, client)) > 0) {
		api_res_t res = {0};
		char addr[ADDR_KEY_STRLEN];

		if (addr_key_format(client, addr, sizeof addr) < 0)
			snprintf(addr, sizeof addr, "?");
		log_info("api: client %s is over its budget of %s; refused", addr,
		         http_is(req, "POST", "/api/v1/users") ? "sign-ups" : "logins");
		jbuf_init(&res.body);
		fail_retry(&res, http_is(req, "POST", "/api/v1/users")
		                     ? "too many sign-ups from your address; try again later"
		                     : "too many logins from your address; try again later",
		           wait);
		gw_post_http(srv->gw, conn,
		             res.body.oom ? NULL
		                          : http_response(429, "application/json", res.body.data, res.body.len,
		                                          req->keep_alive, res.extra),
		             req->keep_alive);
		jbuf_free(&res.body);
		return 0;
	}
	if (!(rq = calloc(1, sizeof *rq)))
		return -1;
	rq->srv = srv;
	rq->conn = conn;
	rq->client = client;
	rq->keep_alive = req->keep_alive;
	if (req->method_len < sizeof rq->method)
		memcpy(rq->method, req->method, req->method_len);
	rq->target = strndup(req->target, req->target_len);
	rq->target_len = req->target_len;
	rq->path_len = req->path_len;
	h = http_find_header(req, "authorization");
	if (h && h->value_len > 7 && strncasecmp(h->value, "bearer ", 7) == 0) {
		rq->token = strndup(h->value + 7, h->value_len - 7);
		rq->token_len = h->value_len - 7;
	}
	if (body_len) {
		rq->body = malloc(body_len);
		if (rq->body)
			memcpy(rq->body, body, body_len);
		rq->body_len = body_len;
	}
	/* Each client address is a flow of the queue: one address's burst
	 * waits behind its own requests, not everyone's. */
	if (!rq->target || (h && !rq->token && rq->token_len) || (body_len && !rq->body) ||
	    workers_submit_flow(hashing ? srv->hashers : srv->workers, FLOW_OF_ADDRESS(client),
	                        request_job, request_dropped, rq) < 0) {
		api_req_free(rq);
		return -1;
	}
	return 0;
}

static void upgrade_job(store_t *st, void *arg)
{
	upgrade_req_t *u = arg;
	int64_t user = 0, device = 0;
	uint8_t hash[32];

	if (auth_token_hash(u->token, u->token_len, hash) == 0 &&
	    store_device_by_token(st, hash, &user, &device) != STORE_OK)
		user = device = 0;
	gw_post_upgrade(u->srv->gw, u->conn, user, device, u->accept);
	free(u);
}

static void upgrade_dropped(void *arg)
{
	upgrade_req_t *u = arg;

	gw_post_http(u->srv->gw, u->conn,
	             http_error_response(503, "unavailable", "the server is busy; retry shortly", 0,
	                                 "Retry-After: 1\r\n"),
	             0);
	free(u);
}

int api_submit_upgrade(server_t *srv, uint64_t conn, uint64_t client, const char *token,
                       size_t len, const char accept[29])
{
	upgrade_req_t *u;

	if (len > AUTH_TOKEN_LEN)
		len = AUTH_TOKEN_LEN + 1; /* cannot be a token; still answered 401 */
	if (!(u = malloc(sizeof *u + len + 1)))
		return -1;
	u->srv = srv;
	u->conn = conn;
	u->client = client;
	u->token_len = len;
	memcpy(u->accept, accept, 29);
	memcpy(u->token, token, len);
	u->token[len] = 0;
	if (workers_submit_flow(srv->workers, FLOW_OF_ADDRESS(client), upgrade_job, upgrade_dropped, u) < 0) {
		free(u);
		return -1;
	}
	return 0;
}
