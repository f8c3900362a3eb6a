/* spends.c - the gathered spends of spends.h: keys merged in a small
 * open-addressed index (twice the entries, so probes stay short), under
 * one mutex held for a few steps per add. */
#include "spends.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define INDEX (2 * SPENDS_KEYS)

struct spends {
	pthread_mutex_t lock;
	spends_note_fn fn;
	void *ud;
	int64_t last_ms;
	unsigned n;
	unsigned long long dropped;
	uint64_t keys[SPENDS_KEYS];
	double costs[SPENDS_KEYS];
	uint16_t index[INDEX]; /* entry + 1; 0: free */
};

spends_t *spends_new(spends_note_fn fn, void *ud)
{
	spends_t *s;

	if (!fn || !(s = calloc(1, sizeof *s)))
		return NULL;
	pthread_mutex_init(&s->lock, NULL);
	s->fn = fn;
	s->ud = ud;
	s->last_ms = INT64_MIN / 2; /* the first add goes at once */
	return s;
}

void spends_free(spends_t *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* Encodes and clears what is gathered; s->lock held. Returns the note's
 * length in out (SPENDS_NOTE_MAX bytes). */
static size_t take_note(spends_t *s, uint8_t *out, int64_t now_ms)
{
	size_t len = 0;
	unsigned i;
	int k;

	for (i = 0; i < s->n; i++) {
		double milli = ceil(s->costs[i] * 1000.0);
		uint32_t c = milli >= 4294967295.0 ? UINT32_MAX : (uint32_t)milli;
		for (k = 0; k < 8; k++)
			out[len++] = (uint8_t)(s->keys[i] >> (8 * k));
		for (k = 0; k < 4; k++)
			out[len++] = (uint8_t)(c >> (8 * k));
	}
	s->n = 0;
	memset(s->index, 0, sizeof s->index);
	s->last_ms = now_ms;
	return len;
}

void spends_add(spends_t *s, uint64_t key, double cost, int64_t now_ms)
{
	uint8_t note[SPENDS_NOTE_MAX];
	size_t len = 0;
	unsigned at = (unsigned)((key * 0x9E3779B97F4A7C15ull) >> 32) % INDEX;

	if (!(cost > 0))
		return;
	pthread_mutex_lock(&s->lock);
	for (;; at = (at + 1) % INDEX) {
		unsigned e = s->index[at];
		if (e && s->keys[e - 1] == key) {
			s->costs[e - 1] += cost;
			break;
		}
		if (!e) {
			if (s->n == SPENDS_KEYS) {
				s->dropped++;
				break;
			}
			s->keys[s->n] = key;
			s->costs[s->n] = cost;
			s->index[at] = (uint16_t)++s->n;
			break;
		}
	}
	if (now_ms - s->last_ms >= SPENDS_EVERY_MS)
		len = take_note(s, note, now_ms);
	pthread_mutex_unlock(&s->lock);
	if (len)
		s->fn(s->ud, note, len);
}

void spends_flush(spends_t *s, int64_t now_ms)
{
	uint8_t note[SPENDS_NOTE_MAX];
	size_t len = 0;

	pthread_mutex_lock(&s->lock);
	if (s->n)
		len = take_note(s, note, now_ms);
	pthread_mutex_unlock(&s->lock);
	if (len)
		s->fn(s->ud, note, len);
}

unsigned long long spends_dropped(spends_t *s)
{
	unsigned long long n;

	pthread_mutex_lock(&s->lock);
	n = s->dropped;
	pthread_mutex_unlock(&s->lock);
	return n;
}

int spends_parse(const void *note, size_t len, void (*fn)(void *ud, uint64_t key, double cost), void *ud)
{
	const uint8_t *p = note;
	size_t off;

	if (len % SPENDS_RECORD || len > SPENDS_NOTE_MAX)
		return -1;
	for (off = 0; off < len; off += SPENDS_RECORD) {
		uint64_t key = 0;
		uint32_t milli = 0;
		int k;

		for (k = 0; k < 8; k++)
			key |= (uint64_t)p[off + k] << (8 * k);
		for (k = 0; k < 4; k++)
			milli |= (uint32_t)p[off + 8 + k] << (8 * k);
		if (milli)
			fn(ud, key, (double)milli / 1000.0);
	}
	return 0;
}
