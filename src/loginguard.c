/* loginguard.c - per-account backoff for failed logins; see loginguard.h. */
#include "loginguard.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define SLOTS 16384            /* a power of two: 16384 x 24 bytes */
#define FORGET_MS (24 * 3600 * 1000LL)
#define FIRST_WAIT_MS 1000

typedef struct slot {
	uint64_t key;              /* keyed hash of the name; 0: empty */
	int64_t last_failure_ms;
	uint32_t failures;
	uint32_t wait_ms;          /* after the last failure */
} slot_t;

struct loginguard {
	pthread_mutex_t lock;
	unsigned free_failures;
	int64_t max_wait_ms;
	unsigned char hash_key[crypto_shorthash_KEYBYTES];
	slot_t slots[SLOTS];
};

loginguard_t *loginguard_new(unsigned free_failures, int64_t max_wait_ms)
{
	loginguard_t *g = calloc(1, sizeof *g);

	if (!g)
		return NULL;
	pthread_mutex_init(&g->lock, NULL);
	g->free_failures = free_failures;
	g->max_wait_ms = max_wait_ms;
	crypto_shorthash_keygen(g->hash_key);
	return g;
}

void loginguard_free(loginguard_t *g)
{
	if (!g)
		return;
	pthread_mutex_destroy(&g->lock);
	sodium_memzero(g->hash_key, sizeof g->hash_key);
	free(g);
}

static uint64_t key_of(const loginguard_t *g, const char *name, size_t len)
{
	unsigned char h[crypto_shorthash_BYTES];
	uint64_t k;

	crypto_shorthash(h, (const unsigned char *)name, len, g->hash_key);
	memcpy(&k, h, sizeof k);
	return k ? k : 1;
}

/* The time until slot s may try again. */
static int64_t remaining(const slot_t *s, int64_t now_ms)
{
	int64_t until = s->last_failure_ms + s->wait_ms;

	return until > now_ms ? until - now_ms : 0;
}

int64_t loginguard_wait_ms(loginguard_t *g, const char *name, size_t len, int64_t now_ms)
{
	uint64_t k = key_of(g, name, len);
	slot_t *s = &g->slots[k & (SLOTS - 1)];
	int64_t wait = 0;

	pthread_mutex_lock(&g->lock);
	if (s->key == k)
		wait = remaining(s, now_ms);
	pthread_mutex_unlock(&g->lock);
	return wait;
}

void loginguard_failed(loginguard_t *g, const char *name, size_t len, int64_t now_ms)
{
	uint64_t k = key_of(g, name, len);
	slot_t *s = &g->slots[k & (SLOTS - 1)];

	pthread_mutex_lock(&g->lock);
	if (s->key != k) {
		/* Another name's slot: take it unless that name is still made
		 * to wait (a locked account stays locked). */
		if (s->key && remaining(s, now_ms) > 0 && now_ms - s->last_failure_ms < FORGET_MS) {
			pthread_mutex_unlock(&g->lock);
			return;
		}
		memset(s, 0, sizeof *s);
		s->key = k;
	} else if (now_ms - s->last_failure_ms >= FORGET_MS) {
		s->failures = 0;
	}
	s->failures++;
	s->last_failure_ms = now_ms;
	if (s->failures <= g->free_failures) {
		s->wait_ms = 0;
	} else {
		unsigned extra = s->failures - g->free_failures - 1;
		int64_t w = extra >= 30 ? g->max_wait_ms : (int64_t)FIRST_WAIT_MS << extra;
		s->wait_ms = (uint32_t)(w < g->max_wait_ms ? w : g->max_wait_ms);
	}
	pthread_mutex_unlock(&g->lock);
}

void loginguard_succeeded(loginguard_t *g, const char *name, size_t len)
{
	uint64_t k = key_of(g, name, len);
	slot_t *s = &g->slots[k & (SLOTS - 1)];

	pthread_mutex_lock(&g->lock);
	if (s->key == k)
		memset(s, 0, sizeof *s);
	pthread_mutex_unlock(&g->lock);
}
