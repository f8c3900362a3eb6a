/* api.c - the HTTP API (api.h): what every request goes through.
 *
 * On the I/O thread, api_submit_request refuses what needs no store to
 * refuse (a state-changing request from another site's page, a body that
 * is not JSON, a client over its sign-up or login budget), copies the
 * request and queues it in its client's flow of the worker pool (the
 * hashing pool for sign-ups and logins). On the worker, the request is
 * routed through the table below to its handler (api_users.c,
 * api_convs.c), whose answer is posted back to the connection. */
#include "api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_internal.h"
#include "auth.h"
#include "budget.h"
#include "bus.h"
#include "clientaddr.h"
#include "frames.h"
#include "gateway.h"
#include "ids.h"
#include "log.h"
#include "loginguard.h"
#include "loop.h"
#include "origin.h"
#include "tickets.h"
#include "workers.h"

/* ---- answers -------------------------------------------------------- */

void api_fail(api_res_t *res, int status, const char *code, const char *message)
{
	res->status = status;
	jbuf_reset(&res->body);
	http_error_json(&res->body, code, message);
}

void api_fail_retry(api_res_t *res, const char *message, int64_t wait_ms)
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

void api_fail_about(api_res_t *res, int status, const char *code, const char *message, int64_t user)
{
	res->status = status;
	jbuf_reset(&res->body);
	jbuf_lit(&res->body, "{\"error\":{\"code\":");
	jbuf_cstr(&res->body, code);
	jbuf_lit(&res->body, ",\"message\":");
	jbuf_cstr(&res->body, message);
	jbuf_lit(&res->body, ",\"user_id\":");
	jbuf_int(&res->body, user);
	jbuf_lit(&res->body, "}}");
}

void api_fail_store(api_res_t *res, int r)
{
	switch (r) {
	case STORE_FORBIDDEN:
		api_fail(res, 403, "forbidden", "not a member of this conversation");
		break;
	case STORE_NOT_FOUND:
		api_fail(res, 404, "not_found", "not found");
		break;
	case STORE_NOT_GROUP:
		api_fail(res, 400, "bad_request", "a direct conversation has exactly its two members");
		break;
	case STORE_FULL:
		api_fail(res, 400, "bad_request", "a group has at most 1024 members");
		break;
	default:
		/* The store could not answer (a shared database unreachable or
		 * restarting, a disk full): the client's retry is the remedy,
		 * as for a send's `unavailable`. */
		api_fail(res, 503, "unavailable", "the store is unavailable; retry shortly");
		res->extra = "Retry-After: 1\r\n";
	}
}

json_t *api_parse_body(const api_req_t *rq, api_res_t *res)
{
	json_error_t err;
	json_t *j;

	if (rq->body_len == 0) {
		api_fail(res, 400, "bad_request", "a JSON object body is required");
		return NULL;
	}
	j = json_loadb(rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &err);
	if (!j || !json_is_object(j)) {
		api_fail(res, 400, "bad_request", j ? "the body must be a JSON object" : "the body is not valid JSON");
		json_decref(j);
		return NULL;
	}
	return j;
}

int api_authenticate(store_t *st, api_req_t *rq, api_res_t *res)
{
	int64_t idle = (int64_t)rq->srv->cfg.token_idle_days * 86400000;
	int r;

	if (!rq->token || auth_token_hash(rq->token, rq->token_len, rq->token_hash) < 0) {
		if (api_charge_address(rq, res, 1) == 0)
			api_fail(res, 401, "unauthorized", rq->token ? "invalid token" : "a bearer token is required");
		return -1;
	}
	r = store_device_by_token(st, rq->token_hash, clock_wall_ms(), idle, &rq->user, &rq->device);
	if (r == STORE_NOT_FOUND) {
		/* A lookup that found nothing: the address pays for it. */
		if (api_charge_address(rq, res, 1) == 0)
			api_fail(res, 401, "unauthorized", "invalid or expired token");
		return -1;
	}
	if (r != STORE_OK) {
		api_fail_store(res, r);
		return -1;
	}
	return 0;
}

int api_charge_address(const api_req_t *rq, api_res_t *res, double cost)
{
	int64_t wait;

	/* Address keys and user ids share the table: ids are below 2^53,
	 * address keys above it. */
	if (!rq->srv->work_budget ||
	    (wait = budget_take_shared(rq->srv->work_budget, rq->client, cost, clock_mono_ms())) == 0)
		return 0;
	api_fail_retry(res, "too many requests from your address; slow down", wait);
	return -1;
}

int api_charge(const api_req_t *rq, api_res_t *res, double cost)
{
	int64_t wait;

	if (!rq->srv->work_budget ||
	    (wait = budget_take(rq->srv->work_budget, (uint64_t)rq->user, cost, clock_mono_ms())) == 0)
		return 0;
	api_fail_retry(res, "too many requests; slow down", wait);
	return -1;
}

int api_query_int(const api_req_t *rq, api_res_t *res, const char *name, int64_t lo, int64_t hi,
                  int64_t *out)
{
	char v[32], msg[96];
	int64_t x;
	int len = http_query_param(rq->target, rq->target_len, name, v, sizeof v);

	if (len == -1)
		return 0;
	if (len < 0 || id_parse(v, (size_t)len, lo, &x) < 0 || x > hi) {
		snprintf(msg, sizeof msg, "%s must be an integer from %lld to %lld", name, (long long)lo,
		         (long long)hi);
		api_fail(res, 400, "bad_request", msg);
		return -1;
	}
	*out = x;
	return 1;
}

void api_user_json(jbuf_t *b, int64_t id, const char *name)
{
	jbuf_lit(b, "{\"user_id\":");
	jbuf_int(b, id);
	jbuf_lit(b, ",\"username\":");
	jbuf_cstr(b, name);
	jbuf_lit(b, "}");
}

void api_message_json(jbuf_t *b, const store_message_t *m)
{
	jbuf_raw(b, "{", 1);
	frames_message_json(b, m);
	jbuf_raw(b, "}", 1);
}

void api_announce(store_t *st, server_t *srv, int64_t conv, const char *event, int64_t user,
                  int64_t by, int64_t also)
{
	int64_t *ids;
	size_t n;
	sbuf_t *f;

	if (store_members(st, conv, &ids, &n) != STORE_OK)
		return; /* logged by the store; clients still learn on resume */
	if ((f = frames_members(conv, event, user, by, n)) != NULL) {
		bus_deliver_many(srv->bus, ids, n, 0, 0, f, NULL, NULL);
		if (also)
			bus_deliver(srv->bus, also, 0, f);
		sbuf_unref(f);
	}
	free(ids);
}

/* ---- routing -------------------------------------------------------- */

/* A route: the path after /api/v1/, segment by segment, where "#" stands
 * for an id; one handler per method. */
typedef struct route {
	const char *path;
	api_handler_fn get, post, patch, del;
	const char *allow;       /* the Allow header of a 405 */
} route_t;

static const route_t routes[] = {
	{"users", api_find_user, api_create_user, NULL, NULL, "GET, POST"},
	{"sessions", NULL, api_create_session, NULL, NULL, "POST"},
	{"sessions/current", NULL, NULL, NULL, api_delete_session, "DELETE"},
	{"devices", api_list_devices, NULL, NULL, NULL, "GET"},
	{"devices/#", NULL, NULL, NULL, api_delete_device, "DELETE"},
	{"ws-tickets", NULL, api_create_ticket, NULL, NULL, "POST"},
	{"settings", api_get_settings, NULL, api_patch_settings, NULL, "GET, PATCH"},
	{"blocks", api_list_blocks, api_add_block, NULL, NULL, "GET, POST"},
	{"blocks/#", NULL, NULL, NULL, api_remove_block, "DELETE"},
	{"push-targets", api_list_push_targets, api_create_push_target, NULL, NULL, "GET, POST"},
	{"push-targets/vapid", api_vapid_key, NULL, NULL, NULL, "GET"}, /* before "push-targets/#" */
	{"push-targets/#", NULL, NULL, NULL, api_delete_push_target, "DELETE"},
	{"conversations", api_list_conversations, api_create_conversation, NULL, NULL, "GET, POST"},
	{"conversations/#", api_get_conversation, NULL, api_patch_conversation, NULL, "GET, PATCH"},
	{"conversations/#/messages", api_history, NULL, NULL, NULL, "GET"},
	{"conversations/#/messages/#/receipts", api_receipts, NULL, NULL, NULL, "GET"},
	{"conversations/#/members", NULL, api_add_member, NULL, NULL, "POST"},
	{"conversations/#/members/#", NULL, NULL, NULL, api_remove_member, "DELETE"},
	{"search", api_search, NULL, NULL, NULL, "GET"},
};

#define ROUTE_IDS_MAX 4

/* Matches path p[0..n) against pattern; fills ids. 1 on a match. A
 * segment where an id belongs that is not one still matches (so that the
 * answer is "no such conversation", not "no such endpoint"), with id 0. */
static int route_match(const char *pattern, const char *p, size_t n, int64_t ids[ROUTE_IDS_MAX])
{
	size_t nids = 0;

	for (;;) {
		const char *pe = strchr(pattern, '/'), *se = memchr(p, '/', n);
		size_t pl = pe ? (size_t)(pe - pattern) : strlen(pattern);
		size_t sl = se ? (size_t)(se - p) : n;

		if (pl == 1 && pattern[0] == '#') {
			if (nids == ROUTE_IDS_MAX || sl == 0)
				return 0;
			if (id_parse(p, sl, 1, &ids[nids]) < 0)
				ids[nids] = 0;
			nids++;
		} else if (pl != sl || memcmp(pattern, p, sl) != 0) {
			return 0;
		}
		if (!pe || !se)
			return !pe && !se;
		pattern = pe + 1;
		p = se + 1;
		n -= sl + 1;
	}
}

static size_t pattern_ids(const char *pattern)
{
	size_t n = 0;

	for (; *pattern; pattern++)
		n += *pattern == '#';
	return n;
}

static void route(store_t *st, api_req_t *rq, api_res_t *res)
{
	const char *p = rq->target + 8; /* after "/api/v1/" */
	size_t n = rq->path_len - 8, i, k;
	int64_t ids[ROUTE_IDS_MAX] = {0};

	for (i = 0; i < sizeof routes / sizeof routes[0]; i++) {
		const route_t *r = &routes[i];
		api_handler_fn fn = NULL;

		if (!route_match(r->path, p, n, ids))
			continue;
		if (!strcmp(rq->method, "GET"))
			fn = r->get;
		else if (!strcmp(rq->method, "POST"))
			fn = r->post;
		else if (!strcmp(rq->method, "PATCH"))
			fn = r->patch;
		else if (!strcmp(rq->method, "DELETE"))
			fn = r->del;
		if (!fn) {
			snprintf(res->extra_buf, sizeof res->extra_buf, "Allow: %s\r\n", r->allow);
			api_fail(res, 405, "bad_request", "method not allowed on this endpoint");
			res->extra = res->extra_buf;
			return;
		}
		/* An id segment that is no id names nothing. */
		for (k = 0; k < ROUTE_IDS_MAX; k++) {
			if (!ids[k] && k < pattern_ids(r->path)) {
				api_fail(res, 404, "not_found", "no such conversation, message or user");
				return;
			}
		}
		fn(st, rq, ids, res);
		return;
	}
	api_fail(res, 404, "not_found", "no such endpoint");
}

/* One line for each refused request: who (address, and user once known),
 * what (method and path, never the query: it may hold a token), and the
 * answer. */
static void log_refused(uint64_t client, int64_t user, const char *method, const char *target,
                        size_t path_len, const api_res_t *res, const char *note)
{
	char addr[ADDR_KEY_STRLEN];
	const char *e = res->body.data && res->body.len > 9 ? res->body.data + 9 : "";

	/* The body is {"error":{...}} as api_fail wrote it: its inner object
	 * says the code and why. */
	if (addr_key_format(client, addr, sizeof addr) < 0)
		snprintf(addr, sizeof addr, "?");
	if (path_len > 200)
		path_len = 200;
	if (user)
		log_refusal("api: client %s user %lld: %s %.*s refused %d %.*s%s%s", addr, (long long)user, method,
		            (int)path_len, target, res->status, (int)(res->body.len > 10 ? res->body.len - 10 : 0), e,
		            note[0] ? " " : "", note);
	else
		log_refusal("api: client %s: %s %.*s refused %d %.*s%s%s", addr, method, (int)path_len, target,
		            res->status, (int)(res->body.len > 10 ? res->body.len - 10 : 0), e, note[0] ? " " : "",
		            note);
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
		api_fail(&res, 500, "internal", "out of memory");
	if (res.status >= 400)
		log_refused(rq->client, rq->user, rq->method, rq->target, rq->path_len, &res, rq->log_note);
	out = http_response(res.status, "application/json", res.body.data,
	                    res.status == 204 ? 0 : res.body.len, rq->keep_alive, res.extra);
	gw_post_http(rq->srv->gw, rq->conn, out, rq->keep_alive);
	jbuf_free(&res.body);
	api_req_free(rq);
}

/* ---- submission (I/O thread) ---------------------------------------- */

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

	return b ? budget_take_shared(b, client, 1, clock_mono_ms()) : 0;
}

/* Answers the request at once from the I/O thread (the gateway is waiting
 * for an answer, as for one from a worker). */
static void answer_now(server_t *srv, uint64_t conn, const http_request_t *req, api_res_t *res)
{
	gw_post_http(srv->gw, conn,
	             res->body.oom ? NULL
	                           : http_response(res->status, "application/json", res->body.data,
	                                           res->body.len, req->keep_alive, res->extra),
	             req->keep_alive);
}

/* A quick hash of a token for its queue flow (not a secret: nobody can
 * aim it at another's token without knowing that token). */
static uint64_t fnv1a(const char *s, size_t n)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * UINT64_C(0x100000001b3);
	return h;
}

static int changes_state(const http_request_t *req)
{
	return !(req->method_len == 3 && memcmp(req->method, "GET", 3) == 0) &&
	       !(req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0);
}

/* True unless a body is declared as something other than JSON
 * (application/json, with or without parameters such as a charset). A
 * body with no Content-Type is read as JSON, as the protocol's bodies
 * are: only a declared form or text type, what another site's page can
 * post without asking, is refused. */
static int json_typed(const http_request_t *req)
{
	const http_header_t *h = http_find_header(req, "content-type");
	size_t n;

	if (!h)
		return 1;
	for (n = 0; n < h->value_len && h->value[n] != ';' && h->value[n] != ' '; n++)
		;
	return n == 16 && strncasecmp(h->value, "application/json", 16) == 0;
}

/* The refusals decided from the request line and headers alone. Returns
 * 1 after filling res, else 0. */
static int refuse_early(server_t *srv, const http_request_t *req, uint64_t client, api_res_t *res)
{
	int64_t wait;
	/* Another site's page cannot act for the user: no CSRF. */
	if (changes_state(req) && !origin_allowed(req, srv->cfg.public_url, srv->cfg.allowed_origins)) {
		api_fail(res, 403, "forbidden", "requests from pages of this origin are not accepted");
		return 1;
	}
	/* Only JSON is read: a form or text/plain body (what a page of
	 * another site can post without asking) is refused unread. */
	if (req->content_length > 0 && !json_typed(req)) {
		api_fail(res, 415, "bad_request", "send the body as Content-Type: application/json");
		return 1;
	}
	if (hashes_password(req) && (wait = hashing_budget(srv, req, client)) > 0) {
		int signup = http_is(req, "POST", "/api/v1/users");
		api_fail_retry(res, signup ? "too many sign-ups from your address; try again later"
		                           : "too many logins from your address; try again later",
		               wait);
		return 1;
	}
	return 0;
}

/* A login for an account from an address it has logged in from before
 * goes ahead of the hashing queue: a flood of logins for other names,
 * each held to its address's budget, then delays the owner by the hash in
 * progress, not by one hash per flooding address. Parsing the small body
 * here costs less than the hash it may save waiting for, and only logins
 * within their address's budget get this far. */
static int login_from_known_address(server_t *srv, const http_request_t *req, uint64_t client,
                                    const char *body, size_t body_len)
{
	json_t *j, *u;
	int known = 0;

	if (!body_len || !http_is(req, "POST", "/api/v1/sessions"))
		return 0;
	j = json_loadb(body, body_len, 0, NULL);
	u = json_object_get(j, "username");
	if (json_is_string(u))
		known = loginguard_known(srv->logins, json_string_value(u), json_string_length(u), client,
		                         clock_wall_ms());
	json_decref(j);
	return known;
}

int api_submit_request(server_t *srv, uint64_t conn, uint64_t client, const http_request_t *req,
                       const char *body, size_t body_len)
{
	api_req_t *rq;
	api_res_t res = {0};
	const char *tok;
	int hashing = hashes_password(req), bearer;

	jbuf_init(&res.body);
	if (refuse_early(srv, req, client, &res)) {
		char method[8] = "";
		if (req->method_len < sizeof method)
			memcpy(method, req->method, req->method_len);
		log_refused(client, 0, method, req->target, req->path_len, &res, "");
		answer_now(srv, conn, req, &res);
		jbuf_free(&res.body);
		return 0;
	}
	jbuf_free(&res.body);
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
	if ((bearer = http_bearer(req, &tok, &rq->token_len)) != 0)
		rq->token = strndup(tok, rq->token_len);
	if (body_len) {
		rq->body = malloc(body_len);
		if (rq->body)
			memcpy(rq->body, body, body_len);
		rq->body_len = body_len;
	}
	/* Each device (by its token), or each client address for requests
	 * without one, is a flow of the queue: one client's burst waits
	 * behind its own requests, not everyone's. */
	if (!rq->target || (bearer && !rq->token) || (body_len && !rq->body) ||
	    (hashing && login_from_known_address(srv, req, client, body, body_len)
	         ? workers_submit_first(srv->hashers, FLOW_OF_ADDRESS(client), request_job, request_dropped, rq)
	         : workers_submit_flow(hashing ? srv->hashers : srv->workers,
	                               rq->token && !hashing ? FLOW_OF_TOKEN(fnv1a(rq->token, rq->token_len))
	                                                     : FLOW_OF_ADDRESS(client),
	                               request_job, request_dropped, rq)) < 0) {
		api_req_free(rq);
		return -1;
	}
	return 0;
}

/* ---- the WebSocket upgrade ------------------------------------------ */

typedef struct upgrade_req {
	server_t *srv;
	uint64_t conn, client;
	int ticket;              /* cred is a ticket (tickets.h), not a token */
	int64_t user_hint;       /* the ?user= the client routed by (0: none) */
	size_t cred_len;
	char accept[29];
	char cred[];
} upgrade_req_t;

static void upgrade_job(store_t *st, void *arg)
{
	upgrade_req_t *u = arg;
	int64_t user = 0, device = 0, idle = (int64_t)u->srv->cfg.token_idle_days * 86400000;
	uint8_t hash[32];
	int ok;

	/* A ticket stands for the token that asked for it, which must still
	 * be good: a logout in between leaves it worthless. */
	if (u->ticket)
		ok = tickets_redeem(u->srv->tickets, u->cred, u->cred_len, clock_mono_ms(), hash) == 0;
	else
		ok = auth_token_hash(u->cred, u->cred_len, hash) == 0;
	if (!ok || store_device_by_token(st, hash, clock_wall_ms(), idle, &user, &device) != STORE_OK)
		user = device = 0;
	/* A load balancer routed the socket by the user it names: another
	 * user's id would put the socket on a node chosen by the client, not
	 * by the hash, so it is refused like a wrong token. */
	if (u->user_hint && u->user_hint != user)
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

int api_submit_upgrade(server_t *srv, uint64_t conn, uint64_t client, const char *cred, size_t len,
                       int ticket, int64_t user_hint, const char accept[29])
{
	upgrade_req_t *u;

	if (len > AUTH_TOKEN_LEN)
		len = AUTH_TOKEN_LEN + 1; /* cannot be a token or ticket; still answered 401 */
	if (!(u = malloc(sizeof *u + len + 1)))
		return -1;
	u->srv = srv;
	u->conn = conn;
	u->client = client;
	u->ticket = ticket;
	u->user_hint = user_hint;
	u->cred_len = len;
	memcpy(u->accept, accept, 29);
	memcpy(u->cred, cred, len);
	u->cred[len] = 0;
	if (workers_submit_flow(srv->workers, FLOW_OF_ADDRESS(client), upgrade_job, upgrade_dropped, u) < 0) {
		free(u);
		return -1;
	}
	return 0;
}
