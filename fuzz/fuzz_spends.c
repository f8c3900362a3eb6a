/* fuzz_spends.c - libFuzzer target for spends.c's notes: what another node
 * of a fleet publishes on Redis to say what it admitted (spends.h), and
 * what a node charges to its budgets from it.
 *
 * Each input is parsed from an exact-size heap copy, so ASan sees any
 * over-read. A note parses exactly when it is whole records and no longer
 * than SPENDS_NOTE_MAX, every cost handed on is positive and finite, and
 * applying it to a budget and to a senders' budget keeps their buckets
 * usable (a take afterwards answers, never crashes). */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "budget.h"
#include "ratelimit.h"
#include "spends.h"

static ratelimit_t *senders;
static size_t records;

static void each(void *ud, uint64_t key, double cost)
{
	(void)ud;
	if (!(cost > 0) || !isfinite(cost) || cost > 4294967.295 + 1e-6)
		abort();
	records++;
	ratelimit_charge(senders, (int64_t)(key & INT64_MAX), cost, 1000000);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static budget_t *b;
	uint8_t *p = malloc(size ? size : 1);
	int rc;

	if (!p)
		abort();
	if (!b) {
		if (sodium_init() < 0 || !(b = budget_new(1024, 10, 100)) || !(senders = ratelimit_new(10, 100)))
			abort();
	}
	if (size)
		memcpy(p, data, size);
	records = 0;
	rc = spends_parse(p, size, each, NULL);
	if ((rc == 0) != (size % SPENDS_RECORD == 0 && size <= SPENDS_NOTE_MAX))
		abort();
	if (rc < 0 && records)
		abort();
	if (budget_apply_note(b, p, size, 1000000) != rc)
		abort();
	(void)budget_take(b, size ? p[0] : 0, 1, 1000000);
	(void)ratelimit_take(senders, 1, 1, 1000000);
	free(p);
	return 0;
}
