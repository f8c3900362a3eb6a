/* bus_redis.h - the Redis bus's knobs and what its tests look into.
 *
 * bus_redis_new (bus.h) is what a node uses; bus_redis_open takes the
 * heartbeat so that tests need not wait seconds for a node to be found
 * dead. The rest is for tests and metrics: counters, a way to wait until
 * the bus thread has nothing left to do, and a way to drop a bus as a
 * killed process would, leaving its state behind in Redis. */
#ifndef PARLEY_BUS_REDIS_H
#define PARLEY_BUS_REDIS_H

#include "bus.h"

#define BUS_REDIS_HEARTBEAT_MS 1000

typedef struct bus_redis_opts {
	/* How often the node says it is alive (default 1000 ms). A node
	 * unheard for 3 heartbeats is dead: its users are dropped from the
	 * registry; its id stays claimed for 5. */
	int heartbeat_ms;
	/* How long bus_redis_open waits for Redis and its id claim (5000). */
	int connect_timeout_ms;
} bus_redis_opts_t;

/* bus_redis_new with opts (NULL: the defaults). */
bus_t *bus_redis_open(const bus_sink_t *sink, uint32_t node, unsigned max_per_user, const char *redis_url,
                      const bus_redis_opts_t *opts);

typedef struct bus_redis_stats {
	unsigned long long publishes;  /* envelopes published to other nodes */
	unsigned long long received;   /* envelopes received from other nodes */
	unsigned long long dropped;    /* remote deliveries dropped: Redis down, queue full */
	unsigned long long malformed;  /* envelopes or presence messages that did not parse */
	unsigned long long refused_elsewhere; /* attaches refused for connections on other nodes */
	unsigned long long notes_sent;    /* bus_redis_note: published */
	unsigned long long notes_heard;   /* from other nodes */
	unsigned long long notes_dropped; /* not sent: Redis away, queue full */
	unsigned long long users_elsewhere; /* users of this node known to have connections on others too */
} bus_redis_stats_t;

/* Counters so far. Any thread. */
void bus_redis_stats(bus_t *bus, bus_redis_stats_t *out);

/* Notes: short news other modules give every other node (the login
 * guard's failures, loginguard.h), at most once. bus_redis_note queues
 * len bytes (copied) to be published to every node under kind, 'A' to
 * 'Z'; any thread, never waits: while Redis is away, or the queue to the
 * bus thread is full, the note is dropped, counted, and logged at most
 * every 10 s. Each other node then calls its handler of kind with the
 * bytes (borrowed for the call), on its bus thread, in the order each
 * sender sent; notes published while a node's subscriber is away are
 * lost to it. The handler must not block, nor call back into the bus but
 * for bus_redis_note. bus_redis_on_note sets the handler of kind (notes
 * heard before it is set are dropped); 0, -EINVAL or -ENOMEM. No handler
 * is called once bus_redis_mute has returned. */
typedef void (*bus_redis_note_fn)(void *ud, const uint8_t *bytes, size_t len);
int bus_redis_on_note(bus_t *bus, char kind, bus_redis_note_fn fn, void *ud);
void bus_redis_note(bus_t *bus, char kind, const void *bytes, size_t len);

/* fn(ud) runs on the bus thread at every heartbeat (--heartbeat-ms), until
 * the bus is muted: for periodic work that goes out through the bus, such
 * as flushing what shared budgets gathered (budget.h). It must not block;
 * it may call bus_redis_note. Set it before traffic, once. */
void bus_redis_on_beat(bus_t *bus, void (*fn)(void *ud), void *ud);

/* How many connections of user this node knows of on other live nodes
 * (what its cap counts beside its own). Any thread. */
unsigned bus_redis_elsewhere(bus_t *bus, int64_t user);

/* From now on the bus thread calls the sink no more (frames from other
 * nodes and presence reports are dropped); returns once that holds. For
 * a node shutting down, before what the sink reaches is freed; the bus
 * still takes attach, detach and the rest, and bus_free deregisters.
 * Not from the bus's own callbacks. */
void bus_redis_mute(bus_t *bus);

/* Waits (at most timeout_ms) until the bus thread has run every task
 * posted before the call and every command it sent has been answered,
 * those sent from replies included. Returns 0, or -1 on timeout. For
 * tests: the bus itself never waits. Not from the bus's own callbacks. */
int bus_redis_settle(bus_t *bus, int timeout_ms);

/* Frees bus without telling Redis anything, as kill -9 would leave it:
 * its heartbeat stops, its users stay registered until other nodes find
 * it dead. For tests. */
void bus_redis_abandon(bus_t *bus);

#endif
