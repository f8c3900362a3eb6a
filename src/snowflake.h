/* snowflake.h - 64-bit message ids: 41 bits of milliseconds since
 * 2024-01-01T00:00:00Z, 10 bits of node id, 12 bits of sequence.
 *
 * Ids from one generator are unique and strictly increasing even when the
 * wall clock steps backwards: the generator never lets its millisecond go
 * below the last one it used, and borrows the next millisecond when 4,096 ids
 * have been taken in one. A generator is not thread-safe; each node has one,
 * owned by the thread that stores messages. */
#ifndef PARLEY_SNOWFLAKE_H
#define PARLEY_SNOWFLAKE_H

#include <stdint.h>

#define SNOWFLAKE_EPOCH_MS 1704067200000LL /* 2024-01-01T00:00:00Z */
#define SNOWFLAKE_NODE_MAX 1023

typedef struct snowflake {
	int64_t last_ms;  /* milliseconds since the epoch above, last id */
	uint32_t seq;     /* sequence within last_ms */
	uint32_t node;
} snowflake_t;

void snowflake_init(snowflake_t *g, uint32_t node);

/* Returns the next id given the wall clock now_ms (Unix milliseconds). */
int64_t snowflake_next(snowflake_t *g, int64_t now_ms);

/* The Unix time in milliseconds encoded in an id. */
static inline int64_t snowflake_time_ms(int64_t id)
{
	return (id >> 22) + SNOWFLAKE_EPOCH_MS;
}

/* The node that made an id. */
static inline uint32_t snowflake_node(int64_t id)
{
	return (uint32_t)((uint64_t)id >> 12) & SNOWFLAKE_NODE_MAX;
}

#endif
