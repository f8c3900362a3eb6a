/* dispatch.h - the fleet's fan-out dispatchers: consumers of the event
 * log (eventlog.h) that deliver each committed message to the connections
 * on every node but the one that committed it, and count group receipts.
 *
 * With --nats, the node that commits a message delivers it to its own
 * connections at once (bus_deliver_scoped with BUS_THIS_NODE) and nothing
 * more: every other node's connections get it from the dispatcher of the
 * conversation's partition, which reads it from the log, looks up the
 * recipients (a direct message carries its two members; a group's are
 * read through the fan-out queue's member cache) and hands the frame to
 * the bus for every node but the committing one (one publish per target
 * node). The dispatcher acknowledges an event only once the fan-out queue
 * has handed every recipient to the bus, so a dispatcher that dies leaves
 * its unacknowledged events to the next one. And since the log takes an
 * event from the store's outbox, a message acknowledged to its sender is
 * fanned out even when the node that committed it is killed right after
 * the ack: another node's sweep publishes it.
 *
 * Group receipt counts are kept by the same dispatchers: a `receipt.*`
 * event of a group marks the messages it covers in this node's tally,
 * which sends their senders the counts once a second, so a group's counts
 * come from one node whichever nodes its readers are on.
 *
 * Who consumes what: the log's partitions (a conversation's events stay in
 * one) are shared among the live nodes (bus_nodes) by rendezvous hashing:
 * partition p goes to the node with the highest hash of (p, node). Every
 * node computes the same owners from the same list, so each partition has
 * one dispatcher; when a node joins or dies, only the partitions it gains
 * or held move, within about a heartbeat. While two nodes' lists differ
 * (a second at most) a partition may have two dispatchers, which share its
 * events out of order, or none, which leaves a backlog: connections drop
 * repeats and wait for (or read from the store) a late seq (chat.c), so
 * neither loses or repeats a message.
 *
 * Threads: one of its own, which reconsiders the partitions every
 * DISPATCH_REBALANCE_MS, and the log's consumer thread per partition held,
 * which run the handlers. */
#ifndef PARLEY_DISPATCH_H
#define PARLEY_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "eventlog.h"
#include "fanout.h"
#include "tally.h"

#define DISPATCH_GROUP "fanout"   /* the log's consumer group */
#define DISPATCH_REBALANCE_MS 500
/* The log's redelivery of an event a dispatcher took and never
 * acknowledged (it died): the longest a live message can lag after a
 * dispatcher's death, and the most a handler may spend on an event
 * (waiting for room in the fan-out queue) before it is delivered again. */
#define DISPATCH_ACK_WAIT_MS 10000

typedef struct dispatch dispatch_t;

/* Starts dispatching for node `node`: consumes log (borrowed: it must
 * outlive dispatch_free) on the partitions this node owns, delivering
 * through fanout and bus and marking receipts in tally (NULL: none). NULL
 * (logged) on failure. */
dispatch_t *dispatch_new(eventlog_t *log, bus_t *bus, fanout_t *fanout, tally_t *tally, uint32_t node);

/* Stops consuming (events fetched and not handled are handed back for the
 * next owner) and frees. NULL is fine. */
void dispatch_free(dispatch_t *d);

typedef struct dispatch_counts {
	uint64_t messages;    /* message events handed to the fan-out */
	uint64_t receipts;    /* group receipt events marked in the tally */
	uint64_t ignored;     /* events with nothing to do here (direct receipts) */
	uint64_t malformed;   /* events that did not parse: logged, acknowledged */
	unsigned partitions;  /* held now */
} dispatch_counts_t;

void dispatch_counts(dispatch_t *d, dispatch_counts_t *out);

/* The owner of partition among nodes[0..n) (n > 0): rendezvous hashing,
 * the same answer in every process. */
uint32_t dispatch_owner(unsigned partition, const uint32_t *nodes, size_t n);

/* Handles one event as a partition's consumer would (for tests): 0, or
 * -1 when ev->partition is not one of the log's. */
int dispatch_handle(dispatch_t *d, const eventlog_event_t *ev);

#endif
