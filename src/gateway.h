/* gateway.h - the network edge: listening sockets, connections, HTTP/1.1
 * and WebSocket transport, timers and outbound queues.
 *
 * The gateway runs one epoll loop per I/O thread, each with its own
 * SO_REUSEPORT listener, so the kernel spreads new connections and a
 * connection lives its whole life on one thread. It holds sockets, never
 * durable data: requests go to the worker pool (api.h), WebSocket messages
 * to the message service (chat.h).
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
#include "sbuf.h"
#include "server.h"

typedef struct gw_conn gw_conn_t;

/* Binds the listeners and creates the loops (not yet running). Returns
 * NULL (logged) when the address cannot be used. */
gateway_t *gateway_new(server_t *srv);
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
/* The bus sink through which the bus reaches local connections. */
bus_sink_t gateway_bus_sink(gateway_t *gw);
/* Closes the listeners; connections stay. */
void gateway_stop_accepting(gateway_t *gw);
/* Returns once every I/O thread has finished the turn it was in: input read
 * before the caller set srv->draining has been handed on by then. */
void gateway_quiesce(gateway_t *gw);
/* Closes every WebSocket with 1001 and every HTTP connection, flushes for
 * at most grace_ms, stops and joins the I/O threads. */
void gateway_shutdown(gateway_t *gw, int grace_ms);
void gateway_free(gateway_t *gw);

/* Queues frame on connection conn if it is still open (borrowed ref). */
void gw_post_frame(gateway_t *gw, uint64_t conn, sbuf_t *frame);
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

/* On the connection's thread. */
uint64_t gw_conn_handle(const gw_conn_t *c);
int64_t gw_conn_user(const gw_conn_t *c);
int64_t gw_conn_device(const gw_conn_t *c);
/* The key of the connection's client address (clientaddr.h). */
uint64_t gw_conn_addr(const gw_conn_t *c);
/* "client ADDRESS user ID", for log lines; valid until the thread's next
 * call. */
const char *gw_conn_peer(const gw_conn_t *c);
/* The message service's per-connection state (NULL until it sets one). */
void **gw_conn_chat(gw_conn_t *c);
/* Queues frame (borrowed ref). */
void gw_conn_send(gw_conn_t *c, sbuf_t *frame);
/* Bytes waiting in the outbound queue. */
size_t gw_conn_queued(const gw_conn_t *c);
/* Sends-in-flight accounting for the per-connection cap: begin returns -1
 * when max are already in flight; gw_post_ack ends one, and so does end
 * for a send that was never submitted. */
int gw_conn_sends_begin(gw_conn_t *c, int max);
void gw_conn_sends_end(gw_conn_t *c);
/* Closes with a WebSocket close code (after flushing what is queued). */
void gw_conn_close(gw_conn_t *c, int code, const char *reason);

#endif
