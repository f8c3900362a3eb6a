/* store_backend.h - what a store backend gives store.c, for backends only.
 *
 * Callers see store.h; each backend fills one of these and store.c keeps
 * the table, choosing a backend by the location's form. */
#ifndef PARLEY_STORE_BACKEND_H
#define PARLEY_STORE_BACKEND_H

#include "store.h"

typedef struct store_backend {
	const char *name;          /* for messages: "SQLite", "PostgreSQL" */
	/* 1 when this backend serves locations of this form. Tried in
	 * order; the last one may accept anything. */
	int (*accepts)(const char *location);
	store_t *(*open)(const char *location);
	/* As store_claim and store_release of store.h. */
	store_claim_t *(*claim)(const char *location);
	void (*release)(store_claim_t *claim);
	/* As store_migrate of store.h. */
	int (*migrate)(const char *location, int *from, int *to);
	int64_t (*memory_bytes)(void);
	/* As store_writers of store.h (0 counts as 1). */
	unsigned writers;
} store_backend_t;

/* A backend's claim begins with this, so that store_release finds the
 * backend that made it. */
struct store_claim {
	const store_backend_t *backend;
};

#endif
