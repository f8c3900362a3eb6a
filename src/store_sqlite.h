/* store_sqlite.h - the embedded SQLite backend's entry, private to store.c. */
#ifndef PARLEY_STORE_SQLITE_H
#define PARLEY_STORE_SQLITE_H

#include "store_backend.h"

/* Locations: a directory ("DIR" or "sqlite:DIR") holding parley.db, and
 * the LOCK file by which a node claims it. */
extern const store_backend_t store_sqlite_backend;

#endif
