/* fairq.h - a bounded queue of jobs that is fair across flows.
 *
 * A flow is whoever a job is for or from: a user, a client address. Each
 * flow's jobs form a FIFO, and the flows with jobs are served in rotation:
 * every pop takes the oldest job of the next flow in turn. A flow that
 * queues a thousand jobs therefore delays another flow's first job by at
 * most one pop, not by its whole backlog; a newcomer's first job waits at
 * most one pop per other active flow.
 *
 * The bound is on jobs in total (fixed at creation) and, optionally, on the
 * jobs of one flow. When the queue is full a push may still get in by
 * pushing out the newest job of the flow holding the most, if the pusher
 * holds fewer: so a flow that fills an idle queue keeps it only until
 * others arrive, and under contention every flow converges on an equal
 * share. The newest job goes because it has waited least, and because the
 * oldest is the one about to run.
 *
 * All storage is allocated by fairq_new: pushes and pops never allocate,
 * and a flow with no jobs holds no slot. Finding the flow holding the most
 * is O(1), not a scan: flows are kept in lists by how many items they
 * hold, and as a count moves by one at a time, so does the longest. The
 * rest is O(1) too, bar two walks: the chain of a flow's hash bucket
 * (active flows only; about one, the table being as large as the queue),
 * and, when full, the walk over flows tied for the most (fairq_push).
 *
 * Not thread-safe: the owner (the worker pool) holds its lock around every
 * call. The queue never calls the functions it holds. */
#ifndef PARLEY_FAIRQ_H
#define PARLEY_FAIRQ_H

#include <stdint.h>

typedef struct fairq fairq_t;

/* The job's function, opaque to the queue: the owner stores its own
 * function type cast to this one and casts it back before calling (C
 * allows any function pointer to round-trip through another). */
typedef void (*fairq_fn)(void);

/* Answers and frees arg in place of running the job, when the owner
 * receives the job back from fairq_push as evicted. */
typedef void (*fairq_drop_fn)(void *arg);

typedef struct fairq_item {
	uint64_t flow;            /* any value, 0 and UINT64_MAX included */
	fairq_fn fn;
	fairq_drop_fn drop;       /* NULL: this job is never evicted */
	void *arg;
} fairq_item_t;

/* What fairq_push did. */
enum {
	FAIRQ_QUEUED = 0,         /* the item is queued */
	FAIRQ_EVICTED = 1,        /* queued, and *evicted is a job pushed out */
	FAIRQ_FLOW_FULL = -1,     /* refused: the flow holds flow_cap items */
	FAIRQ_FULL = -2,          /* refused: full, and no job could go for it */
};

/* A queue of at most cap items (cap 0 refuses every push), of which one
 * flow may hold at most flow_cap (0: only cap bounds a flow). cap must be
 * below 2^30. NULL when out of memory or cap too large. */
fairq_t *fairq_new(unsigned cap, unsigned flow_cap);

/* Frees the queue. Items still queued are forgotten, not dropped: the
 * owner pops them first if they need an answer. Accepts NULL. */
void fairq_free(fairq_t *q);

/* Changes the per-flow bound. A flow already above it keeps its items and
 * is refused until it is below. */
void fairq_set_flow_cap(fairq_t *q, unsigned flow_cap);

/* Queues *item at the tail of its flow. Refused (FAIRQ_FLOW_FULL) when the
 * flow already holds flow_cap items. When the queue is full and the
 * pusher's flow holds fewer items than the flow holding the most, that
 * flow's newest item is removed and copied to *evicted, and the push
 * succeeds with FAIRQ_EVICTED: the caller now owns the evicted item and
 * must answer it (its drop). Otherwise a full queue refuses (FAIRQ_FULL).
 *
 * Items with a NULL drop are never evicted: if the longest flows' newest
 * items all have none, the push is refused. Finding a droppable one walks
 * the flows tied for the most, so keep NULL drops to one flow (the worker
 * pool allows them only in flow 0): then the walk is one or two steps.
 *
 * On refusal the queue is unchanged and the caller still owns item->arg.
 * evicted must not be NULL. */
int fairq_push(fairq_t *q, const fairq_item_t *item, fairq_item_t *evicted);

/* Removes the oldest item of the next flow in rotation into *out. Returns
 * 0, or -1 when the queue is empty. */
int fairq_pop(fairq_t *q, fairq_item_t *out);

/* Items queued in all; items queued in one flow; flows holding items. */
unsigned fairq_count(const fairq_t *q);
unsigned fairq_flow_count(const fairq_t *q, uint64_t flow);
unsigned fairq_flows(const fairq_t *q);

#endif
