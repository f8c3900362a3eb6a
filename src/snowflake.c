/* snowflake.c - the id generator described in snowflake.h. */
#include "snowflake.h"

void snowflake_init(snowflake_t *g, uint32_t node)
{
	g->last_ms = 0;
	g->seq = 0;
	g->node = node & SNOWFLAKE_NODE_MAX;
}

int64_t snowflake_next(snowflake_t *g, int64_t now_ms)
{
	int64_t ms = now_ms - SNOWFLAKE_EPOCH_MS;

	if (ms < 0)
		ms = 0;
	if (ms > g->last_ms) {
		g->last_ms = ms;
		g->seq = 0;
	} else if (++g->seq > 4095) {
		/* The clock stood still or stepped back and this millisecond is
		 * used up: borrow the next one. Ids stay ahead of the clock until
		 * it catches up, which keeps them unique and increasing. */
		g->last_ms++;
		g->seq = 0;
	}
	return (g->last_ms << 22) | ((int64_t)g->node << 12) | g->seq;
}
