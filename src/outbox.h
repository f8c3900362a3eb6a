/* outbox.h - the relay from the store's outbox to the event log: every
 * committed message and receipt becomes an event (`message.new`,
 * `receipt.delivered`, `receipt.read`, keyed by conversation), even when
 * the node that committed it dies right after its ack.
 *
 * The writer's lanes write an outbox row in each batch's own transaction
 * (store_set_outbox) and, once it has committed, hand the batch's rows to
 * the relay (outbox_committed), which publishes them at once. A row is
 * deleted when the log has acknowledged its event. Whatever is not (the
 * node died between commit and ack, the log was down, the relay's queue
 * was full) stays in the outbox; the relay's sweep takes rows older than
 * OUTBOX_AGE_MS, from any node (PostgreSQL's SKIP LOCKED shares them
 * between sweeping nodes), and publishes them again. Each event carries a
 * dedup id ("m:<message id>", "r:<conv>:<user>:<state>:<seq>"), so a
 * republish within the log's dedup window is stored once.
 *
 * Threads: the relay owns one thread and one store handle; publishing never
 * blocks (eventlog_publish), the deletes and the sweep run on that thread.
 * outbox_committed is called on writer threads and only copies and queues;
 * the log's done callbacks only queue ids. Nothing here is called from an
 * event loop. */
#ifndef PARLEY_OUTBOX_H
#define PARLEY_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "eventlog.h"
#include "store.h"

/* Rows older than this are swept (and a row taken by a sweep is not
 * taken again for this long). Well inside the log's dedup window
 * (2 minutes), so a row published twice is stored once. */
#define OUTBOX_AGE_MS 3000
/* How often the sweep looks, and how many rows it takes at a time. */
#define OUTBOX_SWEEP_MS 1000
#define OUTBOX_SWEEP_BATCH 256
/* Rows queued for publishing from the commit path; more are left to the
 * sweep. */
#define OUTBOX_QUEUE_MAX 8192
#define OUTBOX_QUEUE_BYTES (16u << 20)

typedef struct outbox_relay outbox_relay_t;

/* Starts a relay publishing to log (the relay owns it from then on, even
 * on failure, and closes it) and deleting through a handle of its own on
 * the store at location; node is this node's id, named in the receipt
 * events it publishes. NULL (logged) on failure. */
outbox_relay_t *outbox_relay_new(const char *location, eventlog_t *log, uint32_t node);

/* The batch ops[0..n) has committed: publishes the events of those with an
 * outbox row (op->out_outbox). Copies what it needs; never blocks. Any
 * thread (the writer's lanes). */
void outbox_committed(outbox_relay_t *r, const store_op_t *ops, size_t n);

/* Builds the event of row into *payload (the protocol's MESSAGE object for
 * a message, a receipt object otherwise, both JSON), its type and its dedup
 * id (dedup: EVENTLOG_DEDUP_MAX + 1 bytes). 0, or -1 when the row cannot
 * become an event (a message whose row has gone) or memory ran out. Free
 * *payload. */
int outbox_event(const store_outbox_t *row, char **payload, size_t *len, const char **type, char *dedup);

typedef struct outbox_counts {
	uint64_t published;   /* events the log acknowledged */
	uint64_t failed;      /* publishes not known to be stored (left to the sweep) */
	uint64_t swept;       /* rows taken by the sweep */
	uint64_t dropped;     /* rows not queued (queue full), left to the sweep */
} outbox_counts_t;

void outbox_relay_counts(outbox_relay_t *r, outbox_counts_t *out);

/* Stops the thread, closes the log (which waits for the outstanding
 * publishes, at most their timeout), deletes the rows acknowledged
 * meanwhile and frees. Rows whose events were not acknowledged stay for a
 * sweep. NULL is fine. Call after the writer has stopped. */
void outbox_relay_free(outbox_relay_t *r);

#endif
