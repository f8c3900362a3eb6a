/* api.h - the HTTP API of docs/protocol.md: users, sessions, conversations,
 * history and receipts, and the token check of the WebSocket upgrade.
 *
 * The api_submit_* functions run on an I/O thread: they copy what the
 * request needs and queue a job on the worker pool, which authenticates,
 * talks to the store and posts the answer back to the connection. They
 * return 0, or -1 when the pool's queue is full (the caller answers 503). */
#ifndef PARLEY_API_H
#define PARLEY_API_H

#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "server.h"

/* client: the key of the client's address (clientaddr.h), which budgets
 * and the fair share of the queues are kept by. */
int api_submit_request(server_t *srv, uint64_t conn, uint64_t client, const http_request_t *req,
                       const char *body, size_t body_len);

/* Checks a WebSocket upgrade's credential, a bearer token or (ticket) a
 * ticket of tickets.h, and, when user_hint is not 0, that it is that
 * user's (the ?user= a load balancer routes by); answers with
 * gw_post_upgrade. */
int api_submit_upgrade(server_t *srv, uint64_t conn, uint64_t client, const char *cred, size_t len,
                       int ticket, int64_t user_hint, const char accept[29]);

#endif
