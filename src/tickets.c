/* tickets.c - the WebSocket tickets of tickets.h: an open-addressing
 * table keyed by the token a ticket stands for, one live ticket per token
 * (a new one replaces the last), under one mutex (a ticket is issued and
 * redeemed once per WebSocket opened: rare). A ticket names its own slot
 * in its first four bytes, so redeeming it is one lookup; only the
 * ticket's SHA-256 is kept, and it must match. Expired entries are
 * reclaimed as probes meet them. */
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

int tickets_issue(tickets_t *t, const uint8_t token_hash[32], int64_t now_ms,
                  char out[TICKET_LEN + 1])
{
	unsigned char raw[32];
	uint32_t home, at = 0;
	unsigned i;
	entry_t *e = NULL;
	int r = -1;

	memcpy(&home, token_hash, sizeof home); /* a SHA-256: spread already */
	pthread_mutex_lock(&t->lock);
	/* The token's own entry if it has one (its last ticket goes), else
	 * the first free or expired slot. */
	for (i = 0; i < PROBE_MAX; i++) {
		uint32_t s = (home + i) & (t->cap - 1);
		entry_t *x = &t->e[s];
		if (x->expires_ms && memcmp(x->token_hash, token_hash, 32) == 0) {
			e = x, at = s;
			break;
		}
		if (!e && x->expires_ms <= now_ms)
			e = x, at = s;
	}
	if (e) {
		randombytes_buf(raw, sizeof raw);
		memcpy(raw, &at, sizeof at);
		sodium_bin2base64(out, TICKET_LEN + 1, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
		crypto_hash_sha256(e->ticket_hash, (const unsigned char *)out, TICKET_LEN);
		memcpy(e->token_hash, token_hash, 32);
		e->expires_ms = now_ms + TICKETS_TTL_MS;
		r = 0;
	}
	pthread_mutex_unlock(&t->lock);
	sodium_memzero(raw, sizeof raw);
	return r;
}

int tickets_redeem(tickets_t *t, const char *ticket, size_t len, int64_t now_ms,
                   uint8_t token_hash[32])
{
	unsigned char raw[32];
	uint8_t hash[32];
	size_t n = 0;
	uint32_t slot;
	entry_t *e;
	int r = -1;

	if (len != TICKET_LEN ||
	    sodium_base642bin(raw, sizeof raw, ticket, len, NULL, &n, NULL,
	                      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
	    n != sizeof raw)
		return -1;
	memcpy(&slot, raw, sizeof slot);
	if (slot >= t->cap)
		return -1;
	crypto_hash_sha256(hash, (const unsigned char *)ticket, len);
	pthread_mutex_lock(&t->lock);
	e = &t->e[slot];
	if (e->expires_ms && sodium_memcmp(e->ticket_hash, hash, 32) == 0) {
		if (e->expires_ms > now_ms) {
			memcpy(token_hash, e->token_hash, 32);
			r = 0;
		}
		memset(e, 0, sizeof *e); /* used once, or expired: gone either way */
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}
