/* store_copy.c - `parley copy-store`: a single node's SQLite store moved into
 * a PostgreSQL database, with nothing lost: every row of every table, ids,
 * seqs, watermarks, receipt marks, devices and their token hashes (so that
 * every login keeps working), blocks and first contacts, push targets and
 * the server's keys (so that browsers' subscriptions, bound to the VAPID
 * key, keep working).
 *
 * Both backends keep one logical schema (the same tables and columns,
 * store_sqlite.c's and store_pg.c's), so the copy is table by table: each
 * SQLite row becomes a line of PostgreSQL's COPY text format, in one
 * transaction into a database that must be empty. The source is claimed
 * as a node would claim it (its directory's lock: no node may serve it
 * meanwhile; its schema brought up to date), and the target's schema is
 * created as a node's claim creates it. After the rows, the identity
 * sequences of users, devices and conversations are moved past the copied
 * ids, and every table's row count is compared before the commit. */
#include "store_copy.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "jbuf.h"
#include "log.h"
#include "store.h"

/* The tables in an order that satisfies the target's foreign keys, with
 * their columns as both schemas name them. */
static const struct table {
	const char *name, *cols;
	int identity;          /* the id column is an identity in PostgreSQL */
} tables[] = {
	{"users", "id, username, pwhash, created_at, last_seen, group_adds, strangers_exempt, conv_count, push_previews", 1},
	{"devices", "id, user_id, name, token_hash, created_at, last_used", 1},
	{"push_targets", "id, user_id, device_id, platform, address, topic, sandbox, p256dh, auth, created_at", 1},
	{"server_keys", "name, value", 0},
	{"conversations",
	 "id, kind, title, direct_key, created_by, created_at, last_seq, member_count, member_version, activity", 1},
	{"members", "conv_id, user_id, role, joined_at, delivered_seq, read_seq, joined_seq, wrote, blocks, muted, "
	            "pushed_seq", 0},
	{"messages", "id, conv_id, seq, sender, cmid, body, ts, kind, target, edited_at, deleted, state_seq, reactions", 0},
	{"reactions", "conv_id, msg_seq, user_id, emoji, seq", 0},
	{"receipt_marks", "conv_id, user_id, state, seq, ts", 0},
	{"blocks", "user_id, blocked_id, created_at", 0},
	{"first_contacts", "user_id, target_id, ts", 0},
};

#define NTABLES (sizeof tables / sizeof *tables)

/* One value in COPY's text format: \N for NULL, integers as they are,
 * text with backslash, tab, newline and carriage return escaped, blobs as
 * bytea's hex form (itself escaped: \\x...). */
static void copy_value(jbuf_t *b, sqlite3_stmt *st, int i)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p;
	int n, k;

	switch (sqlite3_column_type(st, i)) {
	case SQLITE_NULL:
		jbuf_lit(b, "\\N");
		return;
	case SQLITE_INTEGER:
		jbuf_int(b, sqlite3_column_int64(st, i));
		return;
	case SQLITE_BLOB:
		p = sqlite3_column_blob(st, i);
		n = sqlite3_column_bytes(st, i);
		jbuf_lit(b, "\\\\x");
		for (k = 0; k < n; k++) {
			char two[2] = {hex[p[k] >> 4], hex[p[k] & 15]};
			jbuf_raw(b, two, 2);
		}
		return;
	default:
		p = sqlite3_column_text(st, i);
		n = sqlite3_column_bytes(st, i);
		for (k = 0; k < n; k++) {
			switch (p[k]) {
			case '\\': jbuf_lit(b, "\\\\"); break;
			case '\t': jbuf_lit(b, "\\t"); break;
			case '\n': jbuf_lit(b, "\\n"); break;
			case '\r': jbuf_lit(b, "\\r"); break;
			default: jbuf_raw(b, (const char *)p + k, 1);
			}
		}
	}
}

static int pg_ok(PGconn *pg, PGresult *r, ExecStatusType want, const char *what)
{
	int ok = r && PQresultStatus(r) == want;

	if (!ok)
		log_error("copy-store: %s: %s", what, r ? PQresultErrorMessage(r) : PQerrorMessage(pg));
	PQclear(r);
	return ok ? 0 : -1;
}

static int64_t pg_count(PGconn *pg, const char *table)
{
	char sql[128];
	PGresult *r;
	int64_t n = -1;

	snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
	r = PQexec(pg, sql);
	if (r && PQresultStatus(r) == PGRES_TUPLES_OK)
		n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	else
		log_error("copy-store: counting %s: %s", table, r ? PQresultErrorMessage(r) : PQerrorMessage(pg));
	PQclear(r);
	return n;
}

/* Copies one table; *rows gets how many. */
static int copy_table(sqlite3 *db, PGconn *pg, const struct table *t, int64_t *rows)
{
	char sql[512];
	sqlite3_stmt *st;
	jbuf_t b;
	int rc, ncols, i, failed = 0;

	*rows = 0;
	snprintf(sql, sizeof sql, "SELECT %s FROM %s", t->cols, t->name);
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		log_error("copy-store: reading %s: %s", t->name, sqlite3_errmsg(db));
		return -1;
	}
	snprintf(sql, sizeof sql, "COPY %s (%s) FROM STDIN", t->name, t->cols);
	if (pg_ok(pg, PQexec(pg, sql), PGRES_COPY_IN, sql) < 0) {
		sqlite3_finalize(st);
		return -1;
	}
	ncols = sqlite3_column_count(st);
	jbuf_init(&b);
	while (!failed && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		for (i = 0; i < ncols; i++) {
			if (i)
				jbuf_raw(&b, "\t", 1);
			copy_value(&b, st, i);
		}
		jbuf_raw(&b, "\n", 1);
		(*rows)++;
		/* Sent in pieces of about 64 KiB: memory stays flat whatever
		 * the store's size. */
		if (b.len >= 65536) {
			if (b.oom || PQputCopyData(pg, b.data, (int)b.len) != 1)
				failed = 1;
			jbuf_reset(&b);
		}
	}
	if (!failed && rc != SQLITE_DONE) {
		log_error("copy-store: reading %s: %s", t->name, sqlite3_errmsg(db));
		failed = 1;
	}
	if (!failed && b.len && (b.oom || PQputCopyData(pg, b.data, (int)b.len) != 1))
		failed = 1;
	jbuf_free(&b);
	sqlite3_finalize(st);
	if (PQputCopyEnd(pg, failed ? "copy-store stopped" : NULL) != 1 ||
	    pg_ok(pg, PQgetResult(pg), PGRES_COMMAND_OK, t->name) < 0 || failed)
		return -1;
	while (PQgetResult(pg)) /* the end of the COPY's results */
		;
	return 0;
}

int store_copy(const char *from, const char *to, FILE *report)
{
	char path[4200], sql[256];
	store_claim_t *src = NULL, *dst = NULL;
	sqlite3 *db = NULL;
	PGconn *pg = NULL;
	int64_t rows[NTABLES];
	size_t i;
	int r = -1;

	if (!store_backend_name(from) || strcmp(store_backend_name(from), "SQLite") != 0 ||
	    !store_backend_name(to) || strcmp(store_backend_name(to), "PostgreSQL") != 0) {
		log_error("copy-store: copies a SQLite store (--from DIR) into PostgreSQL (--to postgresql://...)");
		return -1;
	}
	/* Claimed as a node would: no node serves either meanwhile (the
	 * directory's lock), and both schemas are this binary's. */
	if (!(src = store_claim(from)) || !(dst = store_claim(to)))
		goto out;
	snprintf(path, sizeof path, "%s/parley.db", strncmp(from, "sqlite:", 7) ? from : from + 7);
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		log_error("copy-store: cannot read %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
		goto out;
	}
	/* One read transaction: the copy is of one moment of the source. */
	if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		goto out;
	pg = PQconnectdb(to);
	if (PQstatus(pg) != CONNECTION_OK) {
		log_error("copy-store: cannot connect to the target: %s", PQerrorMessage(pg));
		goto out;
	}
	if (pg_ok(pg, PQexec(pg, "BEGIN"), PGRES_COMMAND_OK, "BEGIN") < 0)
		goto out;
	/* Into an empty database only: a copy merged into a store already in
	 * use would mix two sets of ids. */
	for (i = 0; i < NTABLES; i++) {
		int64_t n = pg_count(pg, tables[i].name);
		if (n < 0)
			goto out;
		if (n > 0) {
			log_error("copy-store: the target is not empty (%s has %" PRId64 " rows); copy into a new "
			          "database", tables[i].name, n);
			goto out;
		}
	}
	for (i = 0; i < NTABLES; i++) {
		if (copy_table(db, pg, &tables[i], &rows[i]) < 0)
			goto out;
		if (tables[i].identity) {
			/* New ids continue after the copied ones. */
			snprintf(sql, sizeof sql,
			         "SELECT setval(pg_get_serial_sequence('%s', 'id'), COALESCE(max(id), 0) + 1, false) "
			         "FROM %s", tables[i].name, tables[i].name);
			if (pg_ok(pg, PQexec(pg, sql), PGRES_TUPLES_OK, sql) < 0)
				goto out;
		}
		if (pg_count(pg, tables[i].name) != rows[i]) {
			log_error("copy-store: %s: %" PRId64 " rows read but not as many stored", tables[i].name, rows[i]);
			goto out;
		}
	}
	if (pg_ok(pg, PQexec(pg, "COMMIT"), PGRES_COMMAND_OK, "COMMIT") < 0)
		goto out;
	for (i = 0; i < NTABLES; i++)
		fprintf(report, "  %-15s %" PRId64 " rows\n", tables[i].name, rows[i]);
	r = 0;
out:
	PQfinish(pg); /* an open transaction rolls back */
	sqlite3_close(db);
	store_release(dst);
	store_release(src);
	return r;
}
