/* gateway.h - the network edge: listening sockets, connections, HTTP/1.1
 * and WebSocket transport, timers and outbound queues.
 *
 * The gateway runs one epoll loop per I/O thread, each with its own
 * SO_REUSEPORT listener, so the kernel spreads new connections and a
 * connection lives its whole life on one thread. It holds sockets, never
 * durable data, and knows nothing of chat: the server registers a table of
 * handlers (gw_handlers_t: HTTP routes, and what to do when a WebSocket
 * opens, sends a message, drains or closes), and the gateway calls them.
 *
 * A connection is named across threads by a 64-bit handle (thread, slot,
 * generation). Handles of closed connections go stale safely: anything
 * posted to one is dropped. Functions named gw_post_* are safe from any
 * thread; gw_conn_* only on the connection's own I/O thread. */
#ifndef PARLEY_GATEWAY_H
#define PARLEY_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "http.h"
#include "sbuf.h"
#include "server.h"

typedef struct gw_conn gw_conn_t;

/* ---- what the server plugs in -------------------------------------- */

/* A route's handler, on the connection's I/O thread. It must answer in one
 * of three ways before returning: gw_conn_respond (an answer now),
 * gw_conn_refuse (an error, then close), or gw_conn_defer (another thread
 * answers later with gw_post_http, or for a WebSocket route gw_post_upgrade;
 * reading pauses meanwhile). */
typedef void (*gw_http_fn)(void *ud, gw_conn_t *c, const http_request_t *req, const char *body,
                           size_t body_len);
/* A WebSocket route's handler, called once the handshake is valid (GET,
 * Upgrade, version 13, a key): accept is its Sec-WebSocket-Accept value,
 * for gw_post_upgrade. Answers as a gw_http_fn does. */
typedef void (*gw_upgrade_fn)(void *ud, gw_conn_t *c, const http_request_t *req,
                              const char accept[29]);

enum {
	GW_EXACT = 0,           /* the path is the route's */
	GW_PREFIX = 1,          /* the path begins with the route's */
};
enum {
	GW_PUBLIC = 1 << 0,     /* served on the public listener */
	GW_OPERATOR = 1 << 1,   /* served on the operator listener (--admin-listen) */
};

typedef struct gw_route {
	const char *path;
	int match;              /* GW_EXACT or GW_PREFIX */
	int listeners;          /* GW_PUBLIC | GW_OPERATOR */
	gw_http_fn http;        /* one of the two */
	gw_upgrade_fn upgrade;
} gw_route_t;

/* Why a WebSocket is refused at its opening: an HTTP answer. */
typedef struct gw_refusal {
	int status;
	const char *code, *message, *extra_header;
} gw_refusal_t;

typedef struct gw_handlers {
	void *ud;
	/* Tried in order: the first that matches the path serves it; no match
	 * is 404. */
	const gw_route_t *routes;
	size_t nroutes;
	/* A WebSocket whose user is known (gw_post_upgrade) is about to
	 * open: 0 to let it, or -1 with *why filled (the gateway answers it).
	 * After 0, closed is called for it exactly once, whatever happens. */
	int (*ws_admit)(void *ud, gw_conn_t *c, gw_refusal_t *why);
	/* It has opened (the 101 is queued). */
	void (*ws_opened)(void *ud, gw_conn_t *c);
	/* A whole text message, valid UTF-8. */
	void (*ws_text)(void *ud, gw_conn_t *c, const uint8_t *data, size_t len);
	/* Its outbound queue has drained. */
	void (*ws_drained)(void *ud, gw_conn_t *c);
	/* A frame the bus delivered to it (the bus sink's deliver; borrowed ref). */
	void (*ws_live)(void *ud, gw_conn_t *c, sbuf_t *frame);
	/* Its timer: at least once a ping interval, and soon after each
	 * gw_conn_wake. Returns the seconds until it wants the next call
	 * sooner than that, or 0. */
	unsigned (*ws_timer)(void *ud, gw_conn_t *c);
	/* It is gone: the last call for it. */
	void (*ws_closed)(void *ud, gw_conn_t *c);
} gw_handlers_t;

/* Binds the listeners and creates the loops (not yet running), to call
 * the handlers h (copied; its routes must outlive the gateway). Returns
 * NULL (logged) when the address cannot be used. */
gateway_t *gateway_new(server_t *srv, const gw_handlers_t *h);
/* Starts the I/O threads. */
int gateway_start(gateway_t *gw);
/* The port actually bound (useful with port 0), and the operator
 * listener's (0 when there is none). */
int gateway_port(const gateway_t *gw);
int gateway_admin_port(const gateway_t *gw);
typedef struct gateway_stats {
	uint64_t conns, websockets;   /* open now */
	uint64_t partial_bytes;       /* held for unfinished requests and messages */
	uint64_t throttled;           /* WebSockets paused for their user's read rate, ever */
} gateway_stats_t;

/* The gateway's gauges and counters, read now. Any thread. */
void gateway_stats(gateway_t *gw, gateway_stats_t *out);
/* Closes the listeners; connections stay. */
void gateway_stop_accepting(gateway_t *gw);
/* Returns once every I/O thread has finished the turn it was in: input read
 * before the caller set srv->draining has been handed on by then. */
void gateway_quiesce(gateway_t *gw);
/* Closes up to per_thread WebSockets on each I/O thread with 1012
 * ("service restart": reconnect, to another node), skipping those with a
 * send awaiting its ack unless force: a client told to go has its acks
 * first. Returns at once; the closes happen on the I/O threads. */
void gateway_close_websockets(gateway_t *gw, unsigned per_thread, int force);
/* Closes every WebSocket with 1001 and every HTTP connection, flushes for
 * at most grace_ms, stops and joins the I/O threads. */
void gateway_shutdown(gateway_t *gw, int grace_ms);
void gateway_free(gateway_t *gw);

/* Queues frame on connection conn if it is still open (borrowed ref). */
void gw_post_frame(gateway_t *gw, uint64_t conn, sbuf_t *frame);
/* Hands frame to conn's ws_live handler if it is still open (borrowed
 * ref): how the bus delivers. */
void gw_post_live(gateway_t *gw, uint64_t conn, sbuf_t *frame);
/* Closes conn with 1008 ("session ended") if it is still open: its device
 * has logged out. */
void gw_post_kick(gateway_t *gw, uint64_t conn);
/* Queues the ack of a send: the frame, and one fewer send in flight. */
void gw_post_ack(gateway_t *gw, uint64_t conn, sbuf_t *frame);
/* Runs fn(c, p) on conn's I/O thread; c is NULL if it has closed (fn must
 * then still release p). */
typedef void (*gw_call_fn)(gw_conn_t *c, void *p);
void gw_post_call(gateway_t *gw, uint64_t conn, gw_call_fn fn, void *p);
/* Completes an HTTP request handed to the API (takes the response). */
void gw_post_http(gateway_t *gw, uint64_t conn, sbuf_t *response, int keep_alive);
/* Completes a WebSocket upgrade: user 0 means the token was refused;
 * accept is the Sec-WebSocket-Accept value computed at the request. */
void gw_post_upgrade(gateway_t *gw, uint64_t conn, int64_t user, int64_t device,
                     const char accept[29]);

/* On the connection's thread: answering a route (see gw_http_fn). */
/* Queues response (taking it; NULL drops the connection, as for out of
 * memory) and closes after it unless keep_alive. */
void gw_conn_respond(gw_conn_t *c, sbuf_t *response, int keep_alive);
/* Answers with the protocol's error and closes. */
void gw_conn_refuse(gw_conn_t *c, int status, const char *code, const char *message,
                    const char *extra_header);
/* Another thread will answer (gw_post_http, gw_post_upgrade). */
void gw_conn_defer(gw_conn_t *c);
/* Accepted on the operator listener. */
int gw_conn_operator(const gw_conn_t *c);
/* The client a request is from: the connection's address, or for a
 * trusted proxy's connection the one its X-Forwarded-For names. */
uint64_t gw_request_client(gw_conn_t *c, const http_request_t *req);

/* On the connection's thread. */
uint64_t gw_conn_handle(const gw_conn_t *c);
int64_t gw_conn_user(const gw_conn_t *c);
int64_t gw_conn_device(const gw_conn_t *c);
/* The key of the connection's client address (clientaddr.h). */
uint64_t gw_conn_addr(const gw_conn_t *c);
/* "client ADDRESS user ID", for log lines; valid until the thread's next
 * call. */
const char *gw_conn_peer(const gw_conn_t *c);
/* The handlers' per-connection state (NULL until they set one). */
void **gw_conn_app(gw_conn_t *c);
/* Queues frame (borrowed ref). */
void gw_conn_send(gw_conn_t *c, sbuf_t *frame);
/* Bytes waiting in the outbound queue. */
size_t gw_conn_queued(const gw_conn_t *c);
/* Sends-in-flight accounting for the per-connection cap: begin returns -1
 * when max are already in flight; gw_post_ack ends one, and so does end
 * for a send that was never submitted. */
int gw_conn_sends_begin(gw_conn_t *c, int max);
void gw_conn_sends_end(gw_conn_t *c);
/* Asks for the ws_timer handler within `seconds` (at least 1; the timer
 * counts whole seconds). The handler keeps its own deadlines: the
 * connection holds no more for it. */
void gw_conn_wake(gw_conn_t *c, unsigned seconds);
/* Closes with a WebSocket close code (after flushing what is queued). */
void gw_conn_close(gw_conn_t *c, int code, const char *reason);

#endif
