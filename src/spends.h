/* spends.h - what a node admitted under a per-key limit, gathered to be
 * told to the other nodes of a fleet.
 *
 * A limit kept on each node of several (an address's sign-ups, a
 * sender's recipients) admits as many times its rate as there are nodes
 * the key reaches. Each node keeps deciding at once from its own
 * buckets, adds what it admitted here, and hands the gathered spends on
 * as a note (bus_redis_note) at most every SPENDS_EVERY_MS: at the first
 * add after the interval, and at each spends_flush (a periodic backstop
 * for a node gone quiet). The other nodes charge each key's spend as if
 * taken there (budget_apply_note, writer_charge), so every node's bucket
 * for a key sees the whole fleet's spending, and the fleet admits at
 * most one interval's unshared spends per node above the limit.
 *
 * Between two notes at most SPENDS_KEYS distinct keys are gathered;
 * further keys' spends are counted as dropped, not shared (a per-key
 * limit does not bound someone holding that many keys anyway). A note is
 * SPENDS_RECORD bytes a key: the key (8, little endian) and the cost in
 * thousandths, rounded up (4, little endian). Thread-safe; the note is
 * handed to fn on the adding or flushing thread, outside any lock. */
#ifndef PARLEY_SPENDS_H
#define PARLEY_SPENDS_H

#include <stddef.h>
#include <stdint.h>

#define SPENDS_KEYS 512
#define SPENDS_EVERY_MS 200
#define SPENDS_RECORD 12
#define SPENDS_NOTE_MAX (SPENDS_KEYS * SPENDS_RECORD)

typedef struct spends spends_t;
typedef void (*spends_note_fn)(void *ud, const void *note, size_t len);

/* NULL when out of memory. */
spends_t *spends_new(spends_note_fn fn, void *ud);
void spends_free(spends_t *s);

/* Adds cost (> 0) spent by key at now_ms. */
void spends_add(spends_t *s, uint64_t key, double cost, int64_t now_ms);
/* Hands on whatever is gathered, whatever the interval. */
void spends_flush(spends_t *s, int64_t now_ms);
/* Spends not gathered: more keys in an interval than a note carries. */
unsigned long long spends_dropped(spends_t *s);

/* Calls fn(ud, key, cost) for each record of a note from another node.
 * 0, or -1 when it is malformed (then fn is not called at all). */
int spends_parse(const void *note, size_t len, void (*fn)(void *ud, uint64_t key, double cost), void *ud);

#endif
