/* tickets.c - the WebSocket tickets of tickets.h: an open-addressing
 * table keyed by the ticket's SHA-256, under one mutex (a ticket is
 * issued and redeemed once per WebSocket opened: rare). Expired entries
 * are reclaimed as the probe for a free slot meets them. */
#include "tickets.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define PROBE_MAX 64

typedef struct entry {
	uint8_t ticket_hash[32];
	uint8_t token_hash[32];
	int64_t expires_ms;      /* 0: free */
} entry_t;

struct tickets {
	pthread_mutex_t lock;
	unsigned cap;            /* a power of two */
	entry_t *e;
};

tickets_t *tickets_new(unsigned max)
{
	tickets_t *t = calloc(1, sizeof *t);
	unsigned cap = 64;

	if (!t)
		return NULL;
	/* Half full at most, so probes stay short. */
	while (cap < 2 * max)
		cap *= 2;
	if (!(t->e = calloc(cap, sizeof *t->e))) {
		free(t);
		return NULL;
	}
	t->cap = cap;
	pthread_mutex_init(&t->lock, NULL);
	return t;
}

void tickets_free(tickets_t *t)
{
	if (!t)
		return;
	sodium_memzero(t->e, t->cap * sizeof *t->e);
	free(t->e);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

static unsigned slot_of(const tickets_t *t, const uint8_t hash[32])
{
	uint32_t h;

	memcpy(&h, hash, sizeof h); /* a SHA-256: its bytes are spread already */
	return h & (t->cap - 1);
}

int tickets_issue(tickets_t *t, const uint8_t token_hash[32], int64_t now_ms,
                  char out[TICKET_LEN + 1])
{
	unsigned char raw[32];
	uint8_t hash[32];
	unsigned i, at;
	int r = -1;

	randombytes_buf(raw, sizeof raw);
	sodium_bin2base64(out, TICKET_LEN + 1, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	crypto_hash_sha256(hash, (const unsigned char *)out, TICKET_LEN);
	pthread_mutex_lock(&t->lock);
	for (i = 0, at = slot_of(t, hash); i < PROBE_MAX; i++, at = (at + 1) & (t->cap - 1)) {
		entry_t *e = &t->e[at];
		if (e->expires_ms > now_ms)
			continue;
		memcpy(e->ticket_hash, hash, 32);
		memcpy(e->token_hash, token_hash, 32);
		e->expires_ms = now_ms + TICKETS_TTL_MS;
		r = 0;
		break;
	}
	pthread_mutex_unlock(&t->lock);
	sodium_memzero(raw, sizeof raw);
	return r;
}

int tickets_redeem(tickets_t *t, const char *ticket, size_t len, int64_t now_ms,
                   uint8_t token_hash[32])
{
	uint8_t hash[32];
	unsigned i, at;
	int r = -1;

	if (len != TICKET_LEN)
		return -1;
	crypto_hash_sha256(hash, (const unsigned char *)ticket, len);
	pthread_mutex_lock(&t->lock);
	for (i = 0, at = slot_of(t, hash); i < PROBE_MAX; i++, at = (at + 1) & (t->cap - 1)) {
		entry_t *e = &t->e[at];
		if (sodium_memcmp(e->ticket_hash, hash, 32) != 0)
			continue;
		if (e->expires_ms > now_ms) {
			memcpy(token_hash, e->token_hash, 32);
			r = 0;
		}
		memset(e, 0, sizeof *e); /* used once, or expired: gone either way */
		break;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}
