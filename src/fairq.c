/* fairq.c - the fair queue of fairq.h.
 *
 * Three preallocated arrays hold everything, linked by 32-bit indices:
 * nodes (one per item, on a free list when unused), flows (one per flow
 * with items, also on a free list) and a hash table of chains of flows.
 * A flow sits on three lists at once: its bucket's chain (to be found by
 * id), the rotation ring (to take its turn), and the list of flows that
 * hold the same number of items as it does (to find the longest flow
 * without a scan). Its items form a doubly linked list, because a pop
 * takes the oldest and an eviction the newest. */
#include "fairq.h"

#include <stdlib.h>

#define NIL UINT32_MAX
#define CAP_MAX (1u << 30)

typedef struct node {
	fairq_fn fn;
	fairq_drop_fn drop;
	void *arg;
	uint32_t prev, next;      /* in its flow, oldest first; next: free list */
} node_t;

typedef struct flow {
	uint64_t id;
	uint32_t head, tail;      /* its oldest and newest item */
	uint32_t count;
	uint32_t hash_next;       /* in its bucket's chain; free list when unused */
	uint32_t ring_prev, ring_next;
	uint32_t len_prev, len_next; /* among the flows holding `count` items */
} flow_t;

struct fairq {
	unsigned cap, flow_cap;
	unsigned count;           /* items queued */
	unsigned nflows;          /* flows holding items */
	unsigned longest;         /* most items one flow holds; 0 when empty */
	uint32_t free_node, free_flow;
	uint32_t ring;            /* the flow whose turn is next; NIL if empty */
	uint32_t mask;            /* buckets - 1 */
	uint64_t seed;
	node_t *nodes;            /* cap of them */
	flow_t *flows;            /* cap: each flow here holds an item at least */
	uint32_t *buckets;        /* mask + 1, a power of two >= cap */
	uint32_t *by_len;         /* [k]: first of the flows holding k; 1..cap */
};

fairq_t *fairq_new(unsigned cap, unsigned flow_cap)
{
	fairq_t *q;
	size_t slots = cap ? cap : 1, nb = 1, i;

	if (cap >= CAP_MAX || !(q = calloc(1, sizeof *q)))
		return NULL;
	/* A table as large as the items keeps chains to about one flow even
	 * when every item is in a flow of its own. */
	while (nb < slots)
		nb <<= 1;
	q->cap = cap;
	q->flow_cap = flow_cap;
	q->mask = (uint32_t)(nb - 1);
	q->ring = NIL;
	q->nodes = malloc(slots * sizeof *q->nodes);
	q->flows = malloc(slots * sizeof *q->flows);
	q->buckets = malloc(nb * sizeof *q->buckets);
	q->by_len = malloc((slots + 1) * sizeof *q->by_len);
	if (!q->nodes || !q->flows || !q->buckets || !q->by_len)
		goto err;
	for (i = 0; i < slots; i++) {
		q->nodes[i].next = i + 1 < slots ? (uint32_t)(i + 1) : NIL;
		q->flows[i].hash_next = i + 1 < slots ? (uint32_t)(i + 1) : NIL;
	}
	for (i = 0; i < nb; i++)
		q->buckets[i] = NIL;
	for (i = 0; i <= slots; i++)
		q->by_len[i] = NIL;
	/* The seed moves with the queue's address (randomised at each start),
	 * so ids that happen to share a bucket in one run need not in the
	 * next. It is no defence against someone who can choose flow ids and
	 * time the server; but flow ids are user ids and address keys the
	 * server derives, and a chain is never longer than the flows with
	 * items queued, each of which costs its owner a job in the queue. */
	q->seed = (uint64_t)(uintptr_t)q * 0x9e3779b97f4a7c15ULL;
	return q;
err:
	fairq_free(q);
	return NULL;
}

void fairq_free(fairq_t *q)
{
	if (!q)
		return;
	free(q->nodes);
	free(q->flows);
	free(q->buckets);
	free(q->by_len);
	free(q);
}

void fairq_set_flow_cap(fairq_t *q, unsigned flow_cap)
{
	q->flow_cap = flow_cap;
}

/* splitmix64's finaliser: sequential ids (users 1, 2, 3...) and keys that
 * differ only in high bits both spread over the buckets. */
static uint32_t bucket_of(const fairq_t *q, uint64_t id)
{
	uint64_t x = id ^ q->seed;

	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return (uint32_t)x & q->mask;
}

static uint32_t flow_find(const fairq_t *q, uint64_t id)
{
	uint32_t fi = q->buckets[bucket_of(q, id)];

	while (fi != NIL && q->flows[fi].id != id)
		fi = q->flows[fi].hash_next;
	return fi;
}

/* A new, empty flow, its turn after every flow already in the rotation.
 * The caller has checked there is room: a flow holds an item at least, so
 * while fewer than cap items are queued a flow slot is free. */
static uint32_t flow_add(fairq_t *q, uint64_t id)
{
	uint32_t fi = q->free_flow, b = bucket_of(q, id);
	flow_t *f = &q->flows[fi];

	q->free_flow = f->hash_next;
	f->id = id;
	f->head = f->tail = NIL;
	f->count = 0;
	f->hash_next = q->buckets[b];
	q->buckets[b] = fi;
	if (q->ring == NIL) {
		f->ring_prev = f->ring_next = fi;
		q->ring = fi;
	} else {
		/* Just before the next flow to serve is the end of the round. */
		uint32_t last = q->flows[q->ring].ring_prev;

		f->ring_prev = last;
		f->ring_next = q->ring;
		q->flows[last].ring_next = fi;
		q->flows[q->ring].ring_prev = fi;
	}
	q->nflows++;
	return fi;
}

/* Forgets flow fi, which has just lost its last item. */
static void flow_remove(fairq_t *q, uint32_t fi)
{
	flow_t *f = &q->flows[fi];
	uint32_t *link = &q->buckets[bucket_of(q, f->id)];

	while (*link != fi)
		link = &q->flows[*link].hash_next;
	*link = f->hash_next;
	if (f->ring_next == fi) {
		q->ring = NIL;
	} else {
		q->flows[f->ring_prev].ring_next = f->ring_next;
		q->flows[f->ring_next].ring_prev = f->ring_prev;
		if (q->ring == fi)
			q->ring = f->ring_next;
	}
	f->hash_next = q->free_flow;
	q->free_flow = fi;
	q->nflows--;
}

static void len_unlink(fairq_t *q, uint32_t fi)
{
	flow_t *f = &q->flows[fi];

	if (f->len_prev != NIL)
		q->flows[f->len_prev].len_next = f->len_next;
	else
		q->by_len[f->count] = f->len_next;
	if (f->len_next != NIL)
		q->flows[f->len_next].len_prev = f->len_prev;
}

static void len_link(fairq_t *q, uint32_t fi)
{
	flow_t *f = &q->flows[fi];

	f->len_prev = NIL;
	f->len_next = q->by_len[f->count];
	if (f->len_next != NIL)
		q->flows[f->len_next].len_prev = fi;
	q->by_len[f->count] = fi;
}

/* Moves flow fi to the list of its new count (old count + delta, delta
 * +1 or -1). Because a count moves by one, the longest count moves by at
 * most one: up when this flow passes it, down when this flow was the last
 * one holding it (and then this flow holds one fewer, so that list is not
 * empty unless the queue is). */
static void count_move(fairq_t *q, uint32_t fi, int delta)
{
	flow_t *f = &q->flows[fi];

	if (f->count)
		len_unlink(q, fi);
	f->count = (uint32_t)((int)f->count + delta);
	if (f->count)
		len_link(q, fi);
	if (f->count > q->longest)
		q->longest = f->count;
	else if (q->longest && q->by_len[q->longest] == NIL)
		q->longest--;
}

/* Removes item ni of flow fi into *out, and the flow too if that was its
 * last item. */
static void take(fairq_t *q, uint32_t fi, uint32_t ni, fairq_item_t *out)
{
	flow_t *f = &q->flows[fi];
	node_t *n = &q->nodes[ni];

	*out = (fairq_item_t){f->id, n->fn, n->drop, n->arg};
	if (n->prev != NIL)
		q->nodes[n->prev].next = n->next;
	else
		f->head = n->next;
	if (n->next != NIL)
		q->nodes[n->next].prev = n->prev;
	else
		f->tail = n->prev;
	n->next = q->free_node;
	q->free_node = ni;
	q->count--;
	count_move(q, fi, -1);
	if (f->count == 0)
		flow_remove(q, fi);
}

int fairq_push(fairq_t *q, const fairq_item_t *item, fairq_item_t *evicted)
{
	uint32_t fi = flow_find(q, item->flow), ni;
	unsigned held = fi == NIL ? 0 : q->flows[fi].count;
	int r = FAIRQ_QUEUED;
	node_t *n;

	if (q->flow_cap && held >= q->flow_cap)
		return FAIRQ_FLOW_FULL;
	if (q->count >= q->cap) {
		uint32_t vi;

		/* Evicting from a flow no longer than the pusher's would only
		 * trade places (cap 0 ends here too: longest is 0). */
		if (held >= q->longest)
			return FAIRQ_FULL;
		/* The pusher holds fewer than the longest, so no victim is its
		 * own flow. Usually the first of the longest will do; one whose
		 * newest job has no drop cannot be evicted, so try the next. */
		vi = q->by_len[q->longest];
		while (vi != NIL && !q->nodes[q->flows[vi].tail].drop)
			vi = q->flows[vi].len_next;
		if (vi == NIL)
			return FAIRQ_FULL;
		take(q, vi, q->flows[vi].tail, evicted);
		r = FAIRQ_EVICTED;
	}
	if (fi == NIL)
		fi = flow_add(q, item->flow);
	ni = q->free_node;
	n = &q->nodes[ni];
	q->free_node = n->next;
	n->fn = item->fn;
	n->drop = item->drop;
	n->arg = item->arg;
	n->next = NIL;
	n->prev = q->flows[fi].tail;
	if (n->prev != NIL)
		q->nodes[n->prev].next = ni;
	else
		q->flows[fi].head = ni;
	q->flows[fi].tail = ni;
	q->count++;
	count_move(q, fi, +1);
	return r;
}

int fairq_pop(fairq_t *q, fairq_item_t *out)
{
	uint32_t fi = q->ring;

	if (fi == NIL)
		return -1;
	/* Advance first: a flow with more items is then at the end of the
	 * round, and one that empties leaves the ring from behind its head. */
	q->ring = q->flows[fi].ring_next;
	take(q, fi, q->flows[fi].head, out);
	return 0;
}

unsigned fairq_count(const fairq_t *q)
{
	return q->count;
}

unsigned fairq_flow_count(const fairq_t *q, uint64_t flow)
{
	uint32_t fi = flow_find(q, flow);

	return fi == NIL ? 0 : q->flows[fi].count;
}

unsigned fairq_flows(const fairq_t *q)
{
	return q->nflows;
}
