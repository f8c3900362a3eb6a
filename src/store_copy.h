/* store_copy.h - `parley copy-store`: a SQLite store moved into PostgreSQL. */
#ifndef PARLEY_STORE_COPY_H
#define PARLEY_STORE_COPY_H

#include <stdio.h>

/* Copies every row of the SQLite store at `from` (a data directory, which
 * no node may be serving) into the empty PostgreSQL database at `to`
 * (its schema is created if missing), in one transaction, and writes each
 * table's row count to report. Returns 0, or -1 with the cause logged and
 * nothing committed. */
int store_copy(const char *from, const char *to, FILE *report);

#endif
