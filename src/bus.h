/* bus.h - who is connected where, delivery to users' connections, and the
 * presence registry.
 *
 * The second seam for scale-out. The message logic asks the bus to deliver
 * a frame to users (every device but, optionally, one), to one connection,
 * or to close a device's connections; the gateway's handlers tell the bus
 * when an authenticated connection comes and goes and when it says it is
 * away; presence subscribes to the users its connections watch and hears
 * their state, across every node, through the sink. Nobody above knows how
 * the bus finds connections: the in-process bus (bus_local.c) keeps a
 * registry in memory; a Redis bus keeps user -> node in Redis and publishes
 * to the nodes that need a frame, whose subscriber hands it to their own
 * connections.
 *
 * No call blocks: a backend over the network answers from what it holds
 * and queues the rest, so a call may return before its frame is delivered
 * or its report is made. Every function is safe from any thread. The
 * sink's presence callback and bus_deliver_many's report are never called
 * under a lock of the bus's own, so they may call the bus again; the
 * sink's deliver and kick may be, and must only queue. Frames are
 * borrowed: the bus and the sink take their own references.
 *
 * A connection handle names its node (BUS_CONN_NODE), so that a frame for
 * one connection goes to the node holding it. */
#ifndef PARLEY_BUS_H
#define PARLEY_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

typedef struct bus bus_t;

/* The node of a connection handle, in its top bits (gateway.c makes them). */
#define BUS_CONN_NODE_SHIFT 54
#define BUS_CONN_NODE(conn) ((uint32_t)((uint64_t)(conn) >> BUS_CONN_NODE_SHIFT))

/* A user's presence across every node. */
enum { BUS_ABSENT = 0, BUS_ONLINE = 1, BUS_AWAY = 2 };

typedef struct bus_sink {
	/* Queue frame on connection conn (a gateway handle of this node). */
	void (*deliver)(void *ud, uint64_t conn, sbuf_t *frame);
	/* Close connection conn: its device has logged out. */
	void (*kick)(void *ud, uint64_t conn);
	/* A user this node subscribed to is in state (BUS_*) on all nodes
	 * together; last_seen is when it was last connected anywhere (ms,
	 * 0: not known here). Called once after each subscribe and at every
	 * change after; version rises with every change of the user, so that
	 * reports racing on different threads can be put in order (a report
	 * whose version is below one already seen is stale). */
	void (*presence)(void *ud, int64_t user, int state, int64_t last_seen, uint64_t version);
	void *ud;
} bus_sink_t;

/* Called once by bus_deliver_many with the users none of whose
 * connections, on any node, the frame reached (n may be 0; the array is
 * borrowed): those a push notification is for. */
typedef void (*bus_unreached_fn)(void *ud, const int64_t *users, size_t n);

/* bus_sync's callback: ok 1, what the node told the bus before is as
 * visible to other nodes as it will get; ok 0, the bus is closing (after
 * bus_redis_mute, from bus_free): release arg, touch nothing else. */
typedef void (*bus_sync_fn)(void *arg, int ok);

typedef struct bus_vtab {
	void (*free)(bus_t *bus);
	int (*attach)(bus_t *bus, int64_t user, int64_t device, uint64_t conn);
	void (*detach)(bus_t *bus, int64_t user, uint64_t conn);
	void (*set_away)(bus_t *bus, int64_t user, uint64_t conn, int away);
	void (*deliver)(bus_t *bus, int64_t user, int64_t except_device, sbuf_t *frame);
	void (*deliver_many)(bus_t *bus, int32_t scope, const int64_t *users, size_t n, int64_t except_user,
	                     int64_t except_device, sbuf_t *frame, bus_unreached_fn report, void *ud);
	void (*send)(bus_t *bus, uint64_t conn, sbuf_t *frame);
	void (*kick_device)(bus_t *bus, int64_t user, int64_t device);
	unsigned (*connections)(bus_t *bus, int64_t user);
	void (*subscribe)(bus_t *bus, int64_t user);
	void (*unsubscribe)(bus_t *bus, int64_t user);
	size_t (*nodes)(bus_t *bus, uint32_t *out, size_t max);
	int (*sync)(bus_t *bus, bus_sync_fn fn, void *arg);
} bus_vtab_t;

struct bus {
	const bus_vtab_t *vt;
};

/* The in-process bus of node `node`: every user is on this node, with at
 * most max_per_user connections at once (0: no limit). */
bus_t *bus_local_new(const bus_sink_t *sink, uint32_t node, unsigned max_per_user);

/* For a backend that keeps its own node's connections in an embedded
 * in-process bus (bus_redis.c). bus_local_state: user's state (BUS_*)
 * from this node's connections alone. bus_local_users: calls fn once per
 * user with a connection here, under a lock of the bus's: fn must only
 * record the user. Both only on a bus made by bus_local_new. */
int bus_local_state(bus_t *local, int64_t user);
void bus_local_users(bus_t *local, void (*fn)(void *ud, int64_t user), void *ud);

/* The Redis bus of node `node` (bus_redis.c): its own connections in an
 * embedded in-process bus, and in the Redis at redis_url (redis://HOST:PORT)
 * the registry of user -> nodes, the nodes' heartbeats, every user's
 * presence across nodes, and one channel per node that frames for its
 * users are published on. It claims node id `node` in Redis first and
 * returns NULL, saying why in the log, when another live node holds it,
 * when Redis cannot be reached within a few seconds, or out of memory.
 * Later outages of Redis are survived: local delivery goes on, remote
 * delivery is dropped (and counted) until it is back, and then the node
 * registers its users again. */
bus_t *bus_redis_new(const bus_sink_t *sink, uint32_t node, unsigned max_per_user, const char *redis_url);

static inline void bus_free(bus_t *bus)
{
	if (bus)
		bus->vt->free(bus);
}

#define BUS_FULL (-2)

/* Registers connection conn of (user, device), online. Returns 0, -1 (no
 * memory), or BUS_FULL when the user already has the most connections
 * allowed. */
static inline int bus_attach(bus_t *bus, int64_t user, int64_t device, uint64_t conn)
{
	return bus->vt->attach(bus, user, device, conn);
}

static inline void bus_detach(bus_t *bus, int64_t user, uint64_t conn)
{
	bus->vt->detach(bus, user, conn);
}

/* Connection conn of user says it is away (1) or back (0): a user is away
 * while every connection it has says so. */
static inline void bus_set_away(bus_t *bus, int64_t user, uint64_t conn, int away)
{
	bus->vt->set_away(bus, user, conn, away);
}

/* Delivers frame to every connection of user except those of except_device
 * (0: none excepted). */
static inline void bus_deliver(bus_t *bus, int64_t user, int64_t except_device, sbuf_t *frame)
{
	bus->vt->deliver(bus, user, except_device, frame);
}

/* Where bus_deliver_scoped delivers: to the connections on every node,
 * on this node only, or (a node id, 0 and up) on every node but that one.
 * A fleet's log dispatchers (dispatch.h) use the last two: the node that
 * committed a message delivers to its own connections at once, and the
 * dispatcher of its conversation to every other node's. */
#define BUS_EVERY_NODE (-1)
#define BUS_THIS_NODE (-2)

/* Delivers frame to every connection of users[0..n) (a user named twice
 * gets it once per name) but those of except_device of except_user (0:
 * none), and calls report (when not NULL) once with the users it reached
 * nowhere: a Redis bus makes one publish per node that needs the frame,
 * however many of the users that node holds. */
static inline void bus_deliver_many(bus_t *bus, const int64_t *users, size_t n, int64_t except_user,
                                    int64_t except_device, sbuf_t *frame, bus_unreached_fn report,
                                    void *ud)
{
	bus->vt->deliver_many(bus, BUS_EVERY_NODE, users, n, except_user, except_device, frame, report, ud);
}

/* bus_deliver_many on the nodes scope names (BUS_EVERY_NODE,
 * BUS_THIS_NODE, or every node but node `scope`). report, when not NULL,
 * names the users reached on none of those nodes. */
static inline void bus_deliver_scoped(bus_t *bus, int32_t scope, const int64_t *users, size_t n,
                                      int64_t except_user, int64_t except_device, sbuf_t *frame,
                                      bus_unreached_fn report, void *ud)
{
	bus->vt->deliver_many(bus, scope, users, n, except_user, except_device, frame, report, ud);
}

/* The live nodes, ascending, this node among them: at most max ids into
 * out; returns how many there are (which may be more than max). The
 * in-process bus knows only itself; a fleet's bus, what the latest
 * heartbeat read from Redis (kept as it was while Redis is away). */
static inline size_t bus_nodes(bus_t *bus, uint32_t *out, size_t max)
{
	return bus->vt->nodes(bus, out, max);
}

/* A barrier behind the attaches, detaches and aways this thread has told
 * the bus: once fn(arg, 1) is called, other nodes' deliveries find those
 * connections. Returns 1 when there is nothing to wait for (fn is then
 * not called: the in-process bus, whose registry is the node's memory),
 * 0 when fn will be called, once, on some thread of the bus's; a fleet's
 * bus calls it when Redis has executed the writes, or at once when Redis
 * is away (they are written when it is back). A resume reads the store
 * only after it (chat.c), so that a message committed after that read is
 * dispatched to a registry that has the connection: neither in the replay
 * nor live would otherwise be possible for a message committed on another
 * node while the registration was on its way. */
static inline int bus_sync(bus_t *bus, bus_sync_fn fn, void *arg)
{
	return bus->vt->sync ? bus->vt->sync(bus, fn, arg) : 1;
}

/* Delivers frame to one connection, on whatever node holds it. */
static inline void bus_send(bus_t *bus, uint64_t conn, sbuf_t *frame)
{
	bus->vt->send(bus, conn, frame);
}

/* How many connections the user has on this node now. */
static inline unsigned bus_connections(bus_t *bus, int64_t user)
{
	return bus->vt->connections(bus, user);
}

/* This node wants (subscribe) or no longer wants (unsubscribe) user's
 * presence: each subscribe is answered by one sink presence call with
 * the state now, and changes follow until as many unsubscribes have been
 * made. */
static inline void bus_subscribe(bus_t *bus, int64_t user)
{
	bus->vt->subscribe(bus, user);
}

static inline void bus_unsubscribe(bus_t *bus, int64_t user)
{
	bus->vt->unsubscribe(bus, user);
}

/* Closes every connection of one device. */
static inline void bus_kick_device(bus_t *bus, int64_t user, int64_t device)
{
	bus->vt->kick_device(bus, user, device);
}

#endif
