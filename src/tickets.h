/* tickets.h - short-lived, single-use tickets that open a WebSocket.
 *
 * A browser cannot set an Authorization header on a WebSocket, so the
 * token would have to ride in the URL, where proxies and access logs keep
 * it. Instead the web client asks for a ticket over REST (with its token in
 * the header) and opens the socket with ?ticket=: a ticket works once, for
 * TICKETS_TTL_MS, and stands for the token that asked for it (so a logout
 * in between makes it worthless too).
 *
 * Kept in memory, per node, in a fixed table (no allocation per ticket;
 * only a SHA-256 of each ticket is kept), one live ticket per token.
 * Safe from any thread. */
#ifndef PARLEY_TICKETS_H
#define PARLEY_TICKETS_H

#include <stddef.h>
#include <stdint.h>

#define TICKETS_TTL_MS 30000
#define TICKET_LEN 43            /* characters, like a token */

typedef struct tickets tickets_t;

/* A table of at most max live tickets. NULL when out of memory. */
tickets_t *tickets_new(unsigned max);
void tickets_free(tickets_t *t);

/* Issues a ticket (NUL-terminated into out) standing for the token whose
 * hash is token_hash; the token's previous ticket, if still unused, stops
 * working (one live ticket per device, so nobody can fill the table with
 * tickets). Returns 0, or -1 when the table is full (answer
 * "unavailable"). */
int tickets_issue(tickets_t *t, const uint8_t token_hash[32], int64_t now_ms,
                  char out[TICKET_LEN + 1]);

/* Redeems a ticket: on success (0) it is gone and *token_hash is the
 * token it stands for; -1 when unknown, used or expired. */
int tickets_redeem(tickets_t *t, const char *ticket, size_t len, int64_t now_ms,
                   uint8_t token_hash[32]);

#endif
