/* store_pg.h - the PostgreSQL backend's entry, private to store.c. */
#ifndef PARLEY_STORE_PG_H
#define PARLEY_STORE_PG_H

#include "store_backend.h"

/* Locations: libpq connection URIs, "postgresql://..." or "postgres://...",
 * handed to libpq as they are. Any number of nodes may serve one
 * database at once; claim creates or migrates its schema. */
extern const store_backend_t store_pg_backend;

#endif
