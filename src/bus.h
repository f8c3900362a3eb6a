/* bus.h - who is connected where, and delivery to a user's connections.
 *
 * The second seam for scale-out. The message logic asks the bus to deliver
 * a frame to a user (every device but, optionally, one) or to close a
 * device's connections; the gateway tells the bus when an authenticated
 * connection comes and goes. Neither knows how the bus finds the
 * connections: the in-process bus (bus_local.c) keeps a registry in memory;
 * a Redis bus will keep user -> node in Redis and publish to the node's
 * channel, whose subscriber hands the frame to its own local bus.
 *
 * The bus reaches local connections through a sink provided by the gateway.
 * Every function is safe from any thread. Frames are borrowed: the bus and
 * the sink take their own references. */
#ifndef PARLEY_BUS_H
#define PARLEY_BUS_H

#include <stdint.h>

#include "sbuf.h"

typedef struct bus bus_t;

typedef struct bus_sink {
	/* Queue frame on connection conn (a gateway handle). */
	void (*deliver)(void *ud, uint64_t conn, sbuf_t *frame);
	/* Close connection conn: its device has logged out. */
	void (*kick)(void *ud, uint64_t conn);
	void *ud;
} bus_sink_t;

typedef struct bus_vtab {
	void (*free)(bus_t *bus);
	int (*attach)(bus_t *bus, int64_t user, int64_t device, uint64_t conn);
	void (*detach)(bus_t *bus, int64_t user, uint64_t conn);
	void (*deliver)(bus_t *bus, int64_t user, int64_t except_device, sbuf_t *frame);
	void (*kick_device)(bus_t *bus, int64_t user, int64_t device);
	unsigned (*connections)(bus_t *bus, int64_t user);
} bus_vtab_t;

struct bus {
	const bus_vtab_t *vt;
};

/* The in-process bus: every user is on this node, with at most
 * max_per_user connections at once (0: no limit). */
bus_t *bus_local_new(const bus_sink_t *sink, unsigned max_per_user);

static inline void bus_free(bus_t *bus)
{
	if (bus)
		bus->vt->free(bus);
}

#define BUS_FULL (-2)

/* Registers connection conn of (user, device). Returns 0, -1 (no memory),
 * or BUS_FULL when the user already has the most connections allowed. */
static inline int bus_attach(bus_t *bus, int64_t user, int64_t device, uint64_t conn)
{
	return bus->vt->attach(bus, user, device, conn);
}

static inline void bus_detach(bus_t *bus, int64_t user, uint64_t conn)
{
	bus->vt->detach(bus, user, conn);
}

/* Delivers frame to every connection of user except those of except_device
 * (0: none excepted). */
static inline void bus_deliver(bus_t *bus, int64_t user, int64_t except_device, sbuf_t *frame)
{
	bus->vt->deliver(bus, user, except_device, frame);
}

/* How many connections the user has now, on every node. */
static inline unsigned bus_connections(bus_t *bus, int64_t user)
{
	return bus->vt->connections(bus, user);
}

/* Closes every connection of one device. */
static inline void bus_kick_device(bus_t *bus, int64_t user, int64_t device)
{
	bus->vt->kick_device(bus, user, device);
}

#endif
