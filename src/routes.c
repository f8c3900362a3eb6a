/* routes.c - the node's endpoints, as the table of handlers the server gives
 * the gateway: which paths are served on which listener, and what a
 * WebSocket's opening, messages, draining and closing mean.
 *
 * The gateway is the transport (sockets, HTTP, WebSocket framing) and calls
 * only these; what they mean lives here and below: the API (api.h), the
 * message service (chat.h), the bus (bus.h), the web files (webfiles.h) and
 * the operator's metrics (metrics.h). Every handler runs on the
 * connection's I/O thread and never blocks. */
#include "routes.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "auth.h"
#include "bus.h"
#include "chat.h"
#include "frames.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "origin.h"
#include "webfiles.h"
#include "ws.h"

/* GET /healthz: the node's own liveness, on either listener, for a load
 * balancer; 503 once it is shutting down, so that it is taken out. */
static void healthz(void *ud, gw_conn_t *c, const http_request_t *req, const char *body, size_t len)
{
	server_t *srv = ud;
	int draining = atomic_load(&srv->draining);

	(void)body;
	(void)len;
	if (!http_is(req, "GET", "/healthz")) {
		gw_conn_refuse(c, 405, "bad_request", "healthz takes GET", "Allow: GET\r\n");
		return;
	}
	gw_conn_respond(c,
	                draining ? http_error_response(503, "unavailable", "shutting down", 0, NULL)
	                         : http_response(200, "application/json", "{\"status\":\"ok\"}", 15,
	                                         req->keep_alive, NULL),
	                req->keep_alive && !draining);
}

/* True when the request carries the operator's bearer token. */
static int operator_may(const server_t *srv, const http_request_t *req)
{
	const char *tok;
	size_t len;
	uint8_t hash[32];

	if (!srv->has_operator_token || !http_bearer(req, &tok, &len))
		return 0;
	auth_secret_hash(tok, len, hash);
	return auth_equal(hash, srv->operator_token_hash, sizeof hash);
}

/* GET /metrics: the node's counters are for its operator, on the operator
 * listener or with the operator's token; to anyone else the endpoint does
 * not exist (the same 404 as any unknown path). */
static void metrics(void *ud, gw_conn_t *c, const http_request_t *req, const char *body, size_t len)
{
	server_t *srv = ud;

	(void)body;
	(void)len;
	if (!http_is(req, "GET", "/metrics") || (!gw_conn_operator(c) && !operator_may(srv, req))) {
		gw_conn_respond(c, http_error_response(404, "not_found", "no such endpoint", req->keep_alive, NULL),
		                req->keep_alive);
		return;
	}
	gw_conn_respond(c, metrics_response(srv, req->keep_alive), req->keep_alive);
}

/* /api/v1/...: every request goes to the worker pool, which answers it. */
static void api(void *ud, gw_conn_t *c, const http_request_t *req, const char *body, size_t len)
{
	server_t *srv = ud;

	if (api_submit_request(srv, gw_conn_handle(c), gw_request_client(c, req), req, body, len) < 0) {
		gw_conn_refuse(c, 503, "unavailable", "the server is overloaded; retry later", NULL);
		return;
	}
	gw_conn_defer(c);
}

/* Everything else: the web client's files, or 404. */
static void web(void *ud, gw_conn_t *c, const http_request_t *req, const char *body, size_t len)
{
	server_t *srv = ud;
	int oom;
	sbuf_t *b = webfiles_response(srv->web, req, req->keep_alive, &oom);

	(void)body;
	(void)len;
	if (!b && !oom)
		b = http_error_response(404, "not_found", "no such endpoint", req->keep_alive, NULL);
	gw_conn_respond(c, b, req->keep_alive); /* NULL (out of memory) drops it */
}

/* GET /chat/v1/ws, its handshake already checked by the gateway: another
 * site's page must not open a socket as the user; then the credential, a
 * bearer token in the header or in the query as the contract allows, or a
 * single-use ticket (tickets.h), which keeps a browser's token out of URLs
 * and logs. A worker checks it and completes the upgrade. */
static void chat_upgrade(void *ud, gw_conn_t *c, const http_request_t *req, const char accept[29])
{
	server_t *srv = ud;
	char token[256], hint[24];
	const char *tok = NULL;
	size_t toklen = 0;
	int64_t user_hint = 0;
	int n, ticket = 0;

	if (!origin_allowed(req, srv->cfg.public_url, srv->cfg.allowed_origins)) {
		log_refusal("gateway: %s: a WebSocket from a page of another origin; refused", gw_conn_peer(c));
		gw_conn_refuse(c, 403, "forbidden", "WebSockets from pages of this origin are not accepted", NULL);
		return;
	}
	if (http_bearer(req, &tok, &toklen)) {
		/* in the header */
	} else if ((n = http_query_param(req->target, req->target_len, "ticket", token, sizeof token)) >= 0) {
		tok = token;
		toklen = (size_t)n;
		ticket = 1;
	} else if ((n = http_query_param(req->target, req->target_len, "token", token, sizeof token)) >= 0) {
		tok = token;
		toklen = (size_t)n;
	}
	if (!tok || toklen == 0) {
		gw_conn_refuse(c, 401, "unauthorized", "a bearer token or ticket is required", NULL);
		return;
	}
	/* ?user=ID: what a load balancer hashes to keep all of a user's
	 * sockets on one node; checked against the credential's user. */
	if ((n = http_query_param(req->target, req->target_len, "user", hint, sizeof hint)) != -1) {
		char *end;
		long long v = n > 0 ? strtoll(hint, &end, 10) : 0;
		/* -2: too long or badly encoded for any id. */
		if (n <= 0 || *end || v <= 0 || hint[0] == '+' || hint[0] == ' ') {
			gw_conn_refuse(c, 400, "bad_request", "user must be a user id", NULL);
			return;
		}
		user_hint = v;
	}
	if (api_submit_upgrade(srv, gw_conn_handle(c), gw_conn_addr(c), tok, toklen, ticket, user_hint,
	                       accept) < 0) {
		gw_conn_refuse(c, 503, "unavailable", "the server is overloaded; retry later", NULL);
		return;
	}
	gw_conn_defer(c);
}

/* The operator listener serves healthz and metrics; the public one
 * everything, metrics only to the operator's token. "/" is last: the web
 * files take what no other route does. */
static const gw_route_t routes[] = {
	{"/healthz", GW_EXACT, GW_PUBLIC | GW_OPERATOR, healthz, NULL},
	{"/metrics", GW_EXACT, GW_PUBLIC | GW_OPERATOR, metrics, NULL},
	{"/chat/v1/ws", GW_EXACT, GW_PUBLIC, NULL, chat_upgrade},
	{"/api/v1/", GW_PREFIX, GW_PUBLIC, api, NULL},
	{"/", GW_PREFIX, GW_PUBLIC, web, NULL},
};

/* ---- WebSockets ------------------------------------------------------ */

/* The bus learns of the connection first: a user at its most connections
 * is refused here, with HTTP, before the 101. */
static int ws_admit(void *ud, gw_conn_t *c, gw_refusal_t *why)
{
	server_t *srv = ud;
	int r = bus_attach(srv->bus, gw_conn_user(c), gw_conn_device(c), gw_conn_handle(c));

	if (r == 0)
		return 0;
	if (r == BUS_FULL) {
		log_refusal("gateway: user %lld has %u connections open; refusing another",
		            (long long)gw_conn_user(c), srv->cfg.max_user_connections);
		*why = (gw_refusal_t){429, "rate_limited", "too many connections open for this user; close one first",
		                      "Retry-After: 30\r\n"};
	} else {
		*why = (gw_refusal_t){503, "unavailable", "out of memory", NULL};
	}
	return -1;
}

static void ws_opened(void *ud, gw_conn_t *c)
{
	sbuf_t *f = frames_ready(gw_conn_user(c), gw_conn_device(c), clock_wall_ms());

	if (!f) {
		gw_conn_close(c, WS_CLOSE_INTERNAL, "out of memory");
	} else {
		gw_conn_send(c, f);
		sbuf_unref(f);
	}
	chat_conn_opened(ud, c); /* closed or not, ws_closed follows */
}

static void ws_text(void *ud, gw_conn_t *c, const uint8_t *data, size_t len)
{
	chat_on_text(ud, c, data, len);
}

static void ws_drained(void *ud, gw_conn_t *c)
{
	chat_on_drained(ud, c);
}

static void ws_live(void *ud, gw_conn_t *c, sbuf_t *frame)
{
	chat_on_live(ud, c, frame);
}

static unsigned ws_timer(void *ud, gw_conn_t *c)
{
	return chat_on_timer(ud, c);
}

static void ws_closed(void *ud, gw_conn_t *c)
{
	server_t *srv = ud;

	bus_detach(srv->bus, gw_conn_user(c), gw_conn_handle(c));
	chat_conn_closed(srv, c);
}

gw_handlers_t routes_handlers(server_t *srv)
{
	gw_handlers_t h = {
		.ud = srv,
		.routes = routes,
		.nroutes = sizeof routes / sizeof *routes,
		.ws_admit = ws_admit,
		.ws_opened = ws_opened,
		.ws_text = ws_text,
		.ws_drained = ws_drained,
		.ws_live = ws_live,
		.ws_timer = ws_timer,
		.ws_closed = ws_closed,
	};
	return h;
}
