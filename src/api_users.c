/* api_users.c - the API's endpoints about people (api_internal.h):
 * accounts, sessions (logins, each a device), the devices list, WebSocket
 * tickets, settings, and blocks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "auth.h"
#include "bus.h"
#include "http.h"
#include "ids.h"
#include "log.h"
#include "loginguard.h"
#include "loop.h"
#include "presence.h"
#include "tickets.h"

#define DEVICE_NAME_MAX 64
#define USERS_BY_ID_MAX 256
#define LIST_LIMIT_DEFAULT 100
#define LIST_LIMIT_MAX 200

/* ---- accounts ------------------------------------------------------- */

void api_create_user(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	json_t *j = api_parse_body(rq, res), *u, *p;
	char hash[AUTH_PWHASH_MAX];
	int64_t id;
	int r;

	(void)ids;
	if (!j)
		return;
	u = json_object_get(j, "username");
	p = json_object_get(j, "password");
	if (!json_is_string(u) || !auth_username_valid(json_string_value(u), json_string_length(u))) {
		api_fail(res, 400, "bad_request", "username: 3 to 32 characters of a-z, 0-9, '_', '.', '-'");
	} else if (!json_is_string(p) || json_string_length(p) < AUTH_PASSWORD_MIN ||
	           json_string_length(p) > AUTH_PASSWORD_MAX) {
		api_fail(res, 400, "bad_request", "password: 8 to 128 bytes");
	} else if (auth_password_hash(json_string_value(p), json_string_length(p), hash) < 0) {
		api_fail(res, 500, "internal", "cannot hash the password");
	} else if ((r = store_user_create(st, json_string_value(u), hash, clock_wall_ms(), &id)) ==
	           STORE_EXISTS) {
		api_fail(res, 409, "conflict", "username taken");
	} else if (r != STORE_OK) {
		api_fail_store(res, r);
	} else {
		res->status = 201;
		api_user_json(&res->body, id, json_string_value(u));
		log_info("api: new user %lld (%s)", (long long)id, json_string_value(u));
	}
	json_decref(j);
}

/* GET /api/v1/users?ids=1,2,3 (an addition): the names of up to 256 users
 * by id, for showing the members of one's conversations. It needs a token
 * and answers only for the caller and users who share a conversation with
 * it; other ids, unknown or not, are left out, so ids reveal nothing. */
static void users_by_id(store_t *st, api_req_t *rq, api_res_t *res, const char *list, size_t len)
{
	char name[STORE_USERNAME_MAX + 1];
	size_t at = 0, count = 0;
	int first = 1;

	if (api_authenticate(st, rq, res) < 0)
		return;
	/* Check the whole list before answering any of it. */
	while (at < len) {
		size_t start = at;
		while (at < len && list[at] >= '0' && list[at] <= '9')
			at++;
		if (at == start || at - start > 16 || list[start] == '0' || (at < len && list[at] != ',') ||
		    ++count > USERS_BY_ID_MAX || (at < len && at + 1 == len)) {
			api_fail(res, 400, "bad_request", "ids: 1 to 256 user ids, separated by commas");
			return;
		}
		if (at < len)
			at++;
	}
	if (count == 0) {
		api_fail(res, 400, "bad_request", "ids: 1 to 256 user ids, separated by commas");
		return;
	}
	/* Two lookups an id. */
	if (api_charge(rq, res, 1 + 2.0 * (double)count) < 0)
		return;
	jbuf_lit(&res->body, "{\"users\":[");
	for (at = 0; at < len;) {
		int64_t id = strtoll(list + at, NULL, 10);
		int r;
		while (at < len && list[at] != ',')
			at++;
		at++;
		if (id <= 0 || id >= (INT64_C(1) << 53))
			continue;
		if (id != rq->user && (r = store_shares_conversation(st, rq->user, id)) != STORE_OK) {
			if (r == STORE_FORBIDDEN)
				continue;
			api_fail_store(res, r);
			return;
		}
		if ((r = store_user_by_id(st, id, name)) == STORE_NOT_FOUND)
			continue;
		if (r != STORE_OK) {
			api_fail_store(res, r);
			return;
		}
		if (!first)
			jbuf_lit(&res->body, ",");
		first = 0;
		api_user_json(&res->body, id, name);
	}
	jbuf_lit(&res->body, "]}");
	res->status = 200;
}

/* Open without a token: whether a name is taken is no secret (registering
 * it would tell), and a client may look its contacts up before logging in. */
void api_find_user(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	char name[64], list[USERS_BY_ID_MAX * 17];
	int64_t id;
	int n, r;

	(void)ids;
	n = http_query_param(rq->target, rq->target_len, "ids", list, sizeof list);
	if (n >= 0) {
		users_by_id(st, rq, res, list, (size_t)n);
		return;
	}
	if (n == -2) {
		api_fail(res, 400, "bad_request", "ids: 1 to 256 user ids, separated by commas");
		return;
	}
	if (api_charge_address(rq, res, 1) < 0)
		return;
	n = http_query_param(rq->target, rq->target_len, "username", name, sizeof name);
	if (n < 0) {
		api_fail(res, 400, "bad_request", "the username query parameter is required");
		return;
	}
	if (!auth_username_valid(name, (size_t)n)) {
		api_fail(res, 404, "not_found", "no such user");
		return;
	}
	r = store_user_by_name(st, name, &id, NULL);
	if (r == STORE_NOT_FOUND) {
		api_fail(res, 404, "not_found", "no such user");
		return;
	}
	if (r != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	res->status = 200;
	api_user_json(&res->body, id, name);
}

/* ---- sessions and devices ------------------------------------------- */

void api_create_session(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	json_t *j = api_parse_body(rq, res), *u, *p, *d;
	char token[AUTH_TOKEN_LEN + 1], *hash = NULL;
	uint8_t thash[32];
	int64_t user = 0, device;
	const char *dname = "device";
	int r = STORE_NOT_FOUND;
	int64_t wait, evicted = 0;

	(void)ids;
	if (!j)
		return;
	u = json_object_get(j, "username");
	p = json_object_get(j, "password");
	d = json_object_get(j, "device_name");
	if (!json_is_string(u) || !json_is_string(p)) {
		api_fail(res, 400, "bad_request", "username and password are required strings");
		goto out;
	}
	if (d && !json_is_null(d)) {
		if (!json_is_string(d) || json_string_length(d) < 1 ||
		    json_string_length(d) > DEVICE_NAME_MAX) {
			api_fail(res, 400, "bad_request", "device_name: 1 to 64 bytes");
			goto out;
		}
		dname = json_string_value(d);
	}
	/* An account being guessed at waits before any work is done. */
	if ((wait = loginguard_wait_ms(rq->srv->logins, json_string_value(u), json_string_length(u),
	                               rq->client, clock_wall_ms())) > 0) {
		api_fail_retry(res, "too many failed logins for this username; try again later", wait);
		goto out;
	}
	if (auth_username_valid(json_string_value(u), json_string_length(u)))
		r = store_user_by_name(st, json_string_value(u), &user, &hash);
	if (r != STORE_OK && r != STORE_NOT_FOUND) {
		api_fail_store(res, r);
		goto out;
	}
	/* Unknown users cost a hash too: the delay tells nothing. */
	if (!auth_password_check(r == STORE_OK ? hash : NULL, json_string_value(p),
	                         json_string_length(p))) {
		loginguard_failed(rq->srv->logins, json_string_value(u), json_string_length(u), rq->client,
		                  clock_wall_ms());
		/* The refusal's log line names the account guessed at, when it
		 * is a valid name (short and plain; anything else is not
		 * written out). */
		if (auth_username_valid(json_string_value(u), json_string_length(u)))
			snprintf(rq->log_note, sizeof rq->log_note, "username %s", json_string_value(u));
		api_fail(res, 401, "unauthorized", "wrong username or password");
		goto out;
	}
	loginguard_succeeded(rq->srv->logins, json_string_value(u), json_string_length(u), rq->client,
	                     clock_wall_ms());
	auth_token_new(token, thash);
	if ((r = store_device_create(st, user, dname, thash, clock_wall_ms(), rq->srv->cfg.max_devices,
	                             &device, &evicted)) != STORE_OK) {
		api_fail_store(res, r);
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

/* Logs a device out: its token stops working, then its sockets close. */
static int log_out(store_t *st, api_req_t *rq, int64_t device, api_res_t *res)
{
	int r = store_device_delete(st, rq->user, device);

	if (r != STORE_OK && r != STORE_NOT_FOUND) {
		api_fail_store(res, r);
		return -1;
	}
	bus_kick_device(rq->srv->bus, rq->user, device);
	return r == STORE_OK ? 0 : 1;
}

void api_delete_session(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	(void)ids;
	if (api_authenticate(st, rq, res) < 0 || log_out(st, rq, rq->device, res) < 0)
		return;
	res->status = 204;
}

/* GET /api/v1/devices?cursor=ID: the caller's devices (logins), oldest
 * first, so that one can see where one is logged in and end any of them. */
void api_list_devices(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	int64_t idle = (int64_t)rq->srv->cfg.token_idle_days * 86400000, after = 0;
	store_device_t *d;
	size_t n, i, shown = 0;
	int r;

	(void)ids;
	if (api_authenticate(st, rq, res) < 0 || api_query_int(rq, res, "cursor", 0, INT64_MAX, &after) < 0 ||
	    api_charge(rq, res, 2) < 0)
		return;
	if ((r = store_devices(st, rq->user, idle > 0 ? clock_wall_ms() - idle : 0, &d, &n)) != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	res->status = 200;
	jbuf_lit(&res->body, "{\"devices\":[");
	for (i = 0; i < n; i++) {
		if (d[i].id <= after)
			continue;
		if (shown == LIST_LIMIT_MAX)
			break;
		if (shown++)
			jbuf_raw(&res->body, ",", 1);
		jbuf_lit(&res->body, "{\"device_id\":");
		jbuf_int(&res->body, d[i].id);
		jbuf_lit(&res->body, ",\"name\":");
		jbuf_cstr(&res->body, d[i].name);
		jbuf_lit(&res->body, ",\"created_at\":");
		jbuf_int(&res->body, d[i].created_at);
		jbuf_lit(&res->body, ",\"last_used\":");
		jbuf_int(&res->body, d[i].last_used);
		jbuf_lit(&res->body, d[i].id == rq->device ? ",\"current\":true}" : ",\"current\":false}");
	}
	jbuf_lit(&res->body, "],\"next_cursor\":");
	if (i < n) {
		char c[24];
		snprintf(c, sizeof c, "%lld", (long long)d[i - 1].id);
		jbuf_cstr(&res->body, c);
	} else {
		jbuf_lit(&res->body, "null");
	}
	jbuf_lit(&res->body, "}");
	free(d);
}

void api_delete_device(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	int r;

	if (api_authenticate(st, rq, res) < 0 || api_charge(rq, res, 1) < 0 ||
	    (r = log_out(st, rq, ids[0], res)) < 0)
		return;
	if (r == 1) {
		api_fail(res, 404, "not_found", "no such device of yours");
		return;
	}
	log_info("api: user %lld logged out its device %lld", (long long)rq->user, (long long)ids[0]);
	res->status = 204;
}

/* POST /api/v1/ws-tickets: a single-use ticket that opens a WebSocket for
 * this device within 30 s, so that a browser need not put its token in
 * the URL. */
void api_create_ticket(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	char ticket[TICKET_LEN + 1];

	(void)ids;
	if (api_authenticate(st, rq, res) < 0 || api_charge(rq, res, 1) < 0)
		return;
	if (tickets_issue(rq->srv->tickets, rq->token_hash, clock_mono_ms(), ticket) < 0) {
		api_fail(res, 503, "unavailable", "too many tickets outstanding; retry shortly");
		return;
	}
	res->status = 201;
	jbuf_lit(&res->body, "{\"ticket\":");
	jbuf_cstr(&res->body, ticket);
	jbuf_lit(&res->body, ",\"expires_in_ms\":");
	jbuf_int(&res->body, TICKETS_TTL_MS);
	jbuf_lit(&res->body, "}");
}

/* ---- settings ------------------------------------------------------- */

static void settings_json(jbuf_t *b, const store_settings_t *s)
{
	jbuf_lit(b, "{\"group_adds\":");
	jbuf_cstr(b, s->group_adds == STORE_ADDS_CONTACTS ? "contacts" : "everyone");
	jbuf_lit(b, s->push_previews ? ",\"push_previews\":true}" : ",\"push_previews\":false}");
}

void api_get_settings(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	store_settings_t s;
	int r;

	(void)ids;
	if (api_authenticate(st, rq, res) < 0 || api_charge(rq, res, 1) < 0)
		return;
	if ((r = store_settings_get(st, rq->user, &s)) != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	res->status = 200;
	settings_json(&res->body, &s);
}

/* PATCH /api/v1/settings {"group_adds":"everyone"|"contacts",
 * "push_previews":true|false}, either or both: who may add the caller to
 * groups (contacts: the people it has written to in a direct chat), and
 * whether its push notifications show who wrote what or only "New
 * message". Unknown fields are refused, so a typo is not silently
 * ignored; nothing changes unless every field is right. */
void api_patch_settings(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	json_t *j, *v;
	const char *key;
	store_settings_t s;
	int r, adds = -1, previews = -1;

	(void)ids;
	if (api_authenticate(st, rq, res) < 0 || api_charge(rq, res, 1) < 0 || !(j = api_parse_body(rq, res)))
		return;
	json_object_foreach(j, key, v) {
		if (!strcmp(key, "push_previews")) {
			if (!json_is_boolean(v)) {
				api_fail(res, 400, "bad_request", "push_previews must be true or false");
				json_decref(j);
				return;
			}
			previews = json_is_true(v);
			continue;
		}
		if (strcmp(key, "group_adds") != 0) {
			api_fail(res, 400, "bad_request", "settings: the fields are group_adds and push_previews");
			json_decref(j);
			return;
		}
		if (json_is_string(v) && !strcmp(json_string_value(v), "everyone"))
			adds = STORE_ADDS_EVERYONE;
		else if (json_is_string(v) && !strcmp(json_string_value(v), "contacts"))
			adds = STORE_ADDS_CONTACTS;
		else {
			api_fail(res, 400, "bad_request", "group_adds must be \"everyone\" or \"contacts\"");
			json_decref(j);
			return;
		}
	}
	json_decref(j);
	if ((adds >= 0 && (r = store_set_group_adds(st, rq->user, adds)) != STORE_OK) ||
	    (previews >= 0 && (r = store_set_push_previews(st, rq->user, previews)) != STORE_OK) ||
	    (r = store_settings_get(st, rq->user, &s)) != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	res->status = 200;
	settings_json(&res->body, &s);
}

/* ---- blocks --------------------------------------------------------- */

/* GET /api/v1/blocks?cursor=ID&limit=N: whom the caller has blocked, by
 * ascending id. */
void api_list_blocks(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	int64_t after = 0, limit = LIST_LIMIT_DEFAULT;
	char name[STORE_USERNAME_MAX + 1];
	store_block_t *b;
	size_t n, i;
	int r, more;

	(void)ids;
	if (api_authenticate(st, rq, res) < 0 || api_query_int(rq, res, "cursor", 0, INT64_MAX, &after) < 0 ||
	    api_query_int(rq, res, "limit", 1, LIST_LIMIT_MAX, &limit) < 0 ||
	    api_charge(rq, res, 1 + (double)limit) < 0)
		return;
	if ((r = store_blocks(st, rq->user, after, (size_t)limit, &b, &n, &more)) != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	res->status = 200;
	jbuf_lit(&res->body, "{\"blocks\":[");
	for (i = 0; i < n; i++) {
		if (store_user_by_id(st, b[i].user_id, name) != STORE_OK)
			name[0] = 0;
		if (i)
			jbuf_raw(&res->body, ",", 1);
		jbuf_lit(&res->body, "{\"user_id\":");
		jbuf_int(&res->body, b[i].user_id);
		jbuf_lit(&res->body, ",\"username\":");
		jbuf_cstr(&res->body, name);
		jbuf_lit(&res->body, ",\"blocked_at\":");
		jbuf_int(&res->body, b[i].created_at);
		jbuf_lit(&res->body, "}");
	}
	jbuf_lit(&res->body, "],\"next_cursor\":");
	if (more && n) {
		char c[24];
		snprintf(c, sizeof c, "%lld", (long long)b[n - 1].user_id);
		jbuf_cstr(&res->body, c);
	} else {
		jbuf_lit(&res->body, "null");
	}
	jbuf_lit(&res->body, "}");
	free(b);
}

/* POST /api/v1/blocks {"user_id"}: from now on that user cannot open a
 * chat with the caller, send to it, add it to a group, watch it or see it
 * type; the watches it holds end now. Blocking twice is harmless. */
void api_add_block(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	int64_t target;
	json_t *j;
	int r;

	(void)ids;
	if (api_authenticate(st, rq, res) < 0 || api_charge(rq, res, 2) < 0 || !(j = api_parse_body(rq, res)))
		return;
	r = id_from_json(json_object_get(j, "user_id"), 1, &target);
	json_decref(j);
	if (r < 0) {
		api_fail(res, 400, "bad_request", "user_id must be a user id");
		return;
	}
	if (target == rq->user) {
		api_fail(res, 400, "bad_request", "you cannot block yourself");
		return;
	}
	r = store_block(st, rq->user, target, clock_wall_ms());
	if (r == STORE_NOT_FOUND) {
		api_fail(res, 404, "not_found", "no such user");
		return;
	}
	if (r != STORE_OK && r != STORE_EXISTS) {
		api_fail_store(res, r);
		return;
	}
	if (r == STORE_OK) {
		log_info("api: user %lld blocked user %lld", (long long)rq->user, (long long)target);
		presence_forbid(rq->srv->presence, rq->user, target);
	}
	res->status = 204;
}

void api_remove_block(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	int r;

	if (api_authenticate(st, rq, res) < 0 || api_charge(rq, res, 2) < 0)
		return;
	if ((r = store_unblock(st, rq->user, ids[0])) == STORE_NOT_FOUND) {
		api_fail(res, 404, "not_found", "that user is not blocked");
		return;
	}
	if (r != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	log_info("api: user %lld unblocked user %lld", (long long)rq->user, (long long)ids[0]);
	res->status = 204;
}
