/* addrconns.h - how many connections each client address holds, so that
 * one address cannot take the node's sockets.
 *
 * Two counts per address: every connection it holds, and those that are
 * not (yet) WebSockets, which cost the node a request's timers and buffers
 * without an account behind them. An address has an entry only while it
 * holds a connection, so memory follows the connections, which the node
 * bounds anyway. Sharded by address under 64 mutexes: accepts on every I/O
 * thread touch it, and one address's connections spread over all threads.
 * Safe from any thread. */
#ifndef PARLEY_ADDRCONNS_H
#define PARLEY_ADDRCONNS_H

#include <stdint.h>

typedef struct addrconns addrconns_t;

enum {
	ADDRCONNS_OK = 0,
	ADDRCONNS_NOMEM = -1,
	ADDRCONNS_TOTAL = -2,    /* the address holds max_total connections */
	ADDRCONNS_PENDING = -3,  /* ... or max_pending that are not WebSockets */
};

/* max_total, max_pending: per address; 0 means no limit. NULL when out of
 * memory. */
addrconns_t *addrconns_new(unsigned max_total, unsigned max_pending);
void addrconns_free(addrconns_t *a);

/* Counts a new (pending) connection of addr, or refuses it (and counts
 * nothing) with ADDRCONNS_TOTAL, ADDRCONNS_PENDING or ADDRCONNS_NOMEM. */
int addrconns_open(addrconns_t *a, uint64_t addr);
/* One of addr's pending connections became a WebSocket. */
void addrconns_upgraded(addrconns_t *a, uint64_t addr);
/* One of addr's connections closed (pending: it never became a WebSocket). */
void addrconns_close(addrconns_t *a, uint64_t addr, int pending);

/* Adds delta bytes (negative: gives back) to what addr holds in unfinished
 * requests and messages. A positive delta that would take it past max
 * (0: no limit) is refused with -1 and not added; else 0. */
int addrconns_partial(addrconns_t *a, uint64_t addr, int64_t delta, uint64_t max);

/* Addresses holding connections now (for /metrics). */
uint64_t addrconns_addresses(addrconns_t *a);
/* Connections refused since start. */
uint64_t addrconns_refused(addrconns_t *a);

#endif
