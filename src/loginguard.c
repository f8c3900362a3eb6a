/* loginguard.c - the two layers of login backoff of loginguard.h, in
 * three fixed, two-choice tables.
 *
 * The pair and name tables hold the same backoff entries, with their own
 * free failures and ceiling; the known table holds when a (name, address)
 * last succeeded. A name's table key is the keyed hash of its bytes; the
 * pair and known keys hash that name key with the address, under keys of
 * their own, so no table's placement tells anything about another's. */
#include "loginguard.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define DEFAULT_SLOTS 16384
#define FORGET_MS (24 * 3600 * 1000LL)      /* a quiet day forgets failures */
#define KNOWN_MS (30 * 24 * 3600 * 1000LL)  /* how long a success makes an address known */
#define FIRST_WAIT_MS 1000

typedef struct backoff {
	uint64_t key;              /* keyed hash; 0: empty */
	int64_t last_failure_ms;
	uint32_t failures;
	uint32_t wait_ms;          /* after the last failure; at most a day */
} backoff_t;

typedef struct known {
	uint64_t key;              /* keyed hash of (name, address); 0: empty */
	int64_t at_ms;             /* the last success */
} known_t;

typedef struct backoffs {
	backoff_t *slots;
	unsigned n;
	unsigned free_failures;
	int64_t max_wait_ms;
	unsigned char hash_key[crypto_shorthash_KEYBYTES];
} backoffs_t;

struct loginguard {
	pthread_mutex_t lock;
	loginguard_share_fn share;  /* set before use, then only read */
	void *share_ud;
	backoffs_t pairs, names;
	known_t *known;
	unsigned nknown;
	unsigned char known_key[crypto_shorthash_KEYBYTES];
};

void loginguard_config_default(loginguard_config_t *cfg)
{
	cfg->free_failures = 5;
	cfg->max_wait_ms = 15 * 60 * 1000;
	cfg->name_free_failures = 100;
	cfg->name_max_wait_ms = 15 * 60 * 1000;
	cfg->pair_slots = cfg->name_slots = cfg->known_slots = DEFAULT_SLOTS;
}

static unsigned slots_of(unsigned n)
{
	return n == 0 ? DEFAULT_SLOTS : n < 2 ? 2 : n; /* two distinct candidates */
}

static int64_t ceiling_of(int64_t max_wait_ms)
{
	return max_wait_ms < 0 ? 0 : max_wait_ms > FORGET_MS ? FORGET_MS : max_wait_ms;
}

static int backoffs_init(backoffs_t *t, unsigned n, unsigned free_failures, int64_t max_wait_ms)
{
	t->n = slots_of(n);
	t->free_failures = free_failures;
	t->max_wait_ms = ceiling_of(max_wait_ms);
	crypto_shorthash_keygen(t->hash_key);
	return (t->slots = calloc(t->n, sizeof *t->slots)) ? 0 : -1;
}

loginguard_t *loginguard_new_config(const loginguard_config_t *cfg)
{
	loginguard_config_t defaults;
	loginguard_t *g = calloc(1, sizeof *g);

	if (!g)
		return NULL;
	if (!cfg) {
		loginguard_config_default(&defaults);
		cfg = &defaults;
	}
	if (backoffs_init(&g->pairs, cfg->pair_slots, cfg->free_failures, cfg->max_wait_ms) < 0 ||
	    backoffs_init(&g->names, cfg->name_slots, cfg->name_free_failures, cfg->name_max_wait_ms) < 0)
		goto err;
	g->nknown = slots_of(cfg->known_slots);
	if (!(g->known = calloc(g->nknown, sizeof *g->known)))
		goto err;
	crypto_shorthash_keygen(g->known_key);
	pthread_mutex_init(&g->lock, NULL);
	return g;
err:
	free(g->pairs.slots);
	free(g->names.slots);
	free(g);
	return NULL;
}

loginguard_t *loginguard_new(unsigned free_failures, int64_t max_wait_ms)
{
	loginguard_config_t cfg;

	loginguard_config_default(&cfg);
	cfg.free_failures = free_failures;
	cfg.max_wait_ms = max_wait_ms;
	cfg.name_max_wait_ms = max_wait_ms;
	return loginguard_new_config(&cfg);
}

void loginguard_free(loginguard_t *g)
{
	if (!g)
		return;
	pthread_mutex_destroy(&g->lock);
	free(g->pairs.slots);
	free(g->names.slots);
	free(g->known);
	sodium_memzero(g, sizeof *g); /* the hash keys */
	free(g);
}

static uint64_t hash(const unsigned char *in, size_t len, const unsigned char *key)
{
	unsigned char h[crypto_shorthash_BYTES];
	uint64_t k;

	crypto_shorthash(h, in, len, key);
	memcpy(&k, h, sizeof k);
	return k ? k : 1;
}

/* The key of (name, address) in the table hashed under key. */
static uint64_t pair_hash(uint64_t name_key, uint64_t addr, const unsigned char *key)
{
	unsigned char in[2 * sizeof(uint64_t)];

	memcpy(in, &name_key, sizeof name_key);
	memcpy(in + sizeof name_key, &addr, sizeof addr);
	return hash(in, sizeof in, key);
}

/* The two candidate slots of key k in a table of n: from the hash's two
 * halves, always distinct. */
static void candidates(uint64_t k, unsigned n, unsigned *i1, unsigned *i2)
{
	*i1 = (unsigned)((uint32_t)k % n);
	*i2 = (unsigned)((uint32_t)(k >> 32) % n);
	if (*i2 == *i1)
		*i2 = (*i1 + 1) % n;
}

/* The time until s may try again. */
static int64_t remaining(const backoff_t *s, int64_t now_ms)
{
	int64_t until = s->last_failure_ms + s->wait_ms;

	return until > now_ms ? until - now_ms : 0;
}

static backoff_t *backoff_find(backoffs_t *t, uint64_t k)
{
	unsigned i1, i2;

	candidates(k, t->n, &i1, &i2);
	if (t->slots[i1].key == k)
		return &t->slots[i1];
	if (t->slots[i2].key == k)
		return &t->slots[i2];
	return NULL;
}

/* How much an entry is worth keeping: an empty or forgotten one nothing,
 * one not waiting its failures, one waiting everything (-1: never taken
 * over, since the one locked longer keeps its slot). */
static int64_t worth(const backoff_t *s, int64_t now_ms)
{
	if (!s->key || now_ms - s->last_failure_ms >= FORGET_MS)
		return 0;
	if (remaining(s, now_ms) > 0)
		return -1;
	return 1 + (int64_t)s->failures;
}

/* The slot a new key k takes in t, or NULL when both candidates wait. */
static backoff_t *backoff_place(backoffs_t *t, uint64_t k, int64_t now_ms)
{
	unsigned i1, i2;
	backoff_t *a, *b;
	int64_t wa, wb;

	candidates(k, t->n, &i1, &i2);
	a = &t->slots[i1];
	b = &t->slots[i2];
	wa = worth(a, now_ms);
	wb = worth(b, now_ms);
	if (wa < 0 && wb < 0)
		return NULL;
	if (wa < 0)
		return b;
	if (wb < 0)
		return a;
	return wb < wa ? b : a;
}

static int64_t backoff_wait(backoffs_t *t, uint64_t k, int64_t now_ms)
{
	const backoff_t *s = backoff_find(t, k);

	return s ? remaining(s, now_ms) : 0;
}

static void backoff_failed(backoffs_t *t, uint64_t k, int64_t now_ms)
{
	backoff_t *s = backoff_find(t, k);
	unsigned extra;
	int64_t w;

	if (!s) {
		if (!(s = backoff_place(t, k, now_ms)))
			return;
		memset(s, 0, sizeof *s);
		s->key = k;
	} else if (now_ms - s->last_failure_ms >= FORGET_MS) {
		s->failures = 0;
	}
	if (s->failures < UINT32_MAX)
		s->failures++;
	s->last_failure_ms = now_ms;
	if (s->failures <= t->free_failures) {
		s->wait_ms = 0;
		return;
	}
	extra = s->failures - t->free_failures - 1;
	w = extra >= 30 ? t->max_wait_ms : (int64_t)FIRST_WAIT_MS << extra;
	s->wait_ms = (uint32_t)(w < t->max_wait_ms ? w : t->max_wait_ms);
}

static void backoff_forget(backoffs_t *t, uint64_t k)
{
	backoff_t *s = backoff_find(t, k);

	if (s)
		memset(s, 0, sizeof *s);
}

static known_t *known_find(loginguard_t *g, uint64_t k)
{
	unsigned i1, i2;

	candidates(k, g->nknown, &i1, &i2);
	if (g->known[i1].key == k)
		return &g->known[i1];
	if (g->known[i2].key == k)
		return &g->known[i2];
	return NULL;
}

static int is_known(loginguard_t *g, uint64_t k, int64_t now_ms)
{
	const known_t *s = known_find(g, k);

	return s && now_ms - s->at_ms < KNOWN_MS;
}

static void known_add(loginguard_t *g, uint64_t k, int64_t now_ms)
{
	known_t *s = known_find(g, k), *a, *b;
	unsigned i1, i2;

	if (!s) {
		/* Empty slots have at_ms 0, so "the older" covers them too. */
		candidates(k, g->nknown, &i1, &i2);
		a = &g->known[i1];
		b = &g->known[i2];
		s = !a->key ? a : !b->key ? b : b->at_ms < a->at_ms ? b : a;
		s->key = k;
	}
	s->at_ms = now_ms;
}

/* The keys of (name, addr) in the three tables. */
typedef struct keys {
	uint64_t name, pair, known;
} keys_t;

static void keys_of(const loginguard_t *g, const char *name, size_t len, uint64_t addr, keys_t *k)
{
	k->name = hash((const unsigned char *)name, len, g->names.hash_key);
	k->pair = pair_hash(k->name, addr, g->pairs.hash_key);
	k->known = pair_hash(k->name, addr, g->known_key);
}

int64_t loginguard_wait_ms(loginguard_t *g, const char *name, size_t len, uint64_t addr, int64_t now_ms)
{
	keys_t k;
	int64_t wait, w;

	keys_of(g, name, len, addr, &k);
	pthread_mutex_lock(&g->lock);
	wait = backoff_wait(&g->pairs, k.pair, now_ms);
	/* 0 is never recorded as known, and never trusted if it were: every
	 * client whose address is not known to the caller shares it. */
	if (!addr || !is_known(g, k.known, now_ms)) {
		w = backoff_wait(&g->names, k.name, now_ms);
		if (w > wait)
			wait = w;
	}
	pthread_mutex_unlock(&g->lock);
	return wait;
}

int loginguard_known(loginguard_t *g, const char *name, size_t len, uint64_t addr, int64_t now_ms)
{
	keys_t k;
	int known;

	if (!addr)
		return 0;
	keys_of(g, name, len, addr, &k);
	pthread_mutex_lock(&g->lock);
	known = is_known(g, k.known, now_ms);
	pthread_mutex_unlock(&g->lock);
	return known;
}

/* A note for other nodes: "f <addr> <name>" or "s <addr> <name>". */
static void share(loginguard_t *g, char what, const char *name, size_t len, uint64_t addr)
{
	char buf[32 + LOGINGUARD_NOTE_NAME_MAX];
	int n;

	if (!g->share || len > LOGINGUARD_NOTE_NAME_MAX)
		return;
	n = snprintf(buf, 32, "%c %" PRIu64 " ", what, addr);
	memcpy(buf + n, name, len);
	g->share(g->share_ud, buf, (size_t)n + len);
}

static void record_failed(loginguard_t *g, const char *name, size_t len, uint64_t addr, int64_t now_ms)
{
	keys_t k;

	keys_of(g, name, len, addr, &k);
	pthread_mutex_lock(&g->lock);
	backoff_failed(&g->pairs, k.pair, now_ms);
	/* A known address's failures count too: the name's count is of all
	 * guesses at it, and a known address is held back by its own layer. */
	backoff_failed(&g->names, k.name, now_ms);
	pthread_mutex_unlock(&g->lock);
}

static void record_succeeded(loginguard_t *g, const char *name, size_t len, uint64_t addr, int64_t now_ms)
{
	keys_t k;

	keys_of(g, name, len, addr, &k);
	pthread_mutex_lock(&g->lock);
	backoff_forget(&g->pairs, k.pair);
	if (addr)
		known_add(g, k.known, now_ms);
	pthread_mutex_unlock(&g->lock);
}

void loginguard_failed(loginguard_t *g, const char *name, size_t len, uint64_t addr, int64_t now_ms)
{
	record_failed(g, name, len, addr, now_ms);
	share(g, 'f', name, len, addr);
}

void loginguard_succeeded(loginguard_t *g, const char *name, size_t len, uint64_t addr, int64_t now_ms)
{
	record_succeeded(g, name, len, addr, now_ms);
	share(g, 's', name, len, addr);
}

void loginguard_set_share(loginguard_t *g, loginguard_share_fn fn, void *ud)
{
	g->share = fn;
	g->share_ud = ud;
}

int loginguard_apply_note(loginguard_t *g, const void *note, size_t len, int64_t now_ms)
{
	const char *p = note, *end = p + len, *q;
	uint64_t addr = 0;
	char what;

	if (len < 5 || (p[0] != 'f' && p[0] != 's') || p[1] != ' ')
		return -1;
	what = p[0];
	for (q = p + 2; q < end && *q >= '0' && *q <= '9'; q++) {
		if (addr > (UINT64_MAX - 9) / 10)
			return -1;
		addr = addr * 10 + (uint64_t)(*q - '0');
	}
	if (q == p + 2 || q >= end || *q != ' ' || end - (q + 1) < 1 || end - (q + 1) > LOGINGUARD_NOTE_NAME_MAX)
		return -1;
	q++;
	if (what == 'f')
		record_failed(g, q, (size_t)(end - q), addr, now_ms);
	else
		record_succeeded(g, q, (size_t)(end - q), addr, now_ms);
	return 0;
}
