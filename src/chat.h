/* chat.h - the message service: what a WebSocket frame from a client means
 * (send, receipt, resume, ping) and what follows once the writer has made
 * it durable (ack, fan-out of msg and receipt frames).
 *
 * The chat_on_* functions run on the connection's I/O thread and never
 * block: anything touching the store is handed to the writer or the worker
 * pool, whose results come back as posted tasks. chat_writer_done runs on
 * the writer thread. */
#ifndef PARLEY_CHAT_H
#define PARLEY_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "gateway.h"
#include "store.h"

/* A complete, UTF-8-valid text message from an authenticated client. */
void chat_on_text(server_t *srv, gw_conn_t *c, const uint8_t *data, size_t len);
/* A msg frame (or other live frame) bus-delivered to c (borrowed ref). */
void chat_on_live(server_t *srv, gw_conn_t *c, sbuf_t *frame);
/* c's timer (gw_handlers_t ws_timer): gaps that waited their time are
 * filled from the store. Returns the seconds until it wants the next. */
unsigned chat_on_timer(server_t *srv, gw_conn_t *c);
/* c's outbound queue has drained: a paused resume may go on. */
void chat_on_drained(server_t *srv, gw_conn_t *c);
/* c has just become an authenticated WebSocket. */
void chat_conn_opened(server_t *srv, gw_conn_t *c);
/* c is closing: release its per-connection state. */
void chat_conn_closed(server_t *srv, gw_conn_t *c);
/* The writer's completion callback (ud is the server). */
void chat_writer_done(store_op_t *op, void *ud);

#endif
