/* pgserver.h - a throwaway PostgreSQL server for the tests: a real
 * postmaster from the installed binaries (pg_config --bindir), initdb'd
 * into a fresh temporary directory, listening on a free loopback port
 * with its Unix socket in that directory, and gone again when the test
 * process ends, however it ends.
 *
 * The store's durability is what the tests check, so the server runs with
 * fsync on (as in production); initdb alone skips its final sync
 * (--no-sync): nothing a test writes lives in those files until after
 * they are on disk.
 *
 * Lifetime: pgserver_stop (pg_ctl stop -m fast) removes the directory.
 * A server still running when the process exits normally (a cmocka
 * failure included: cmocka longjmps out of the failed test and main
 * returns) is stopped by an atexit handler; on SIGINT, SIGTERM, SIGHUP,
 * SIGABRT, SIGSEGV, SIGBUS or SIGFPE a handler sends the postmaster
 * SIGQUIT (an immediate shutdown, async-signal-safe) before the signal
 * takes its course; and a watchdog process, in a session of its own,
 * stops the server and removes the directory if the test process dies
 * any other way (SIGKILL). The watchdog is told at pgserver_stop. That
 * machinery is tmpserver.h's, shared with redisserver.h and natsserver.h.
 *
 * When euid is 0 (PostgreSQL refuses to run as root), initdb and pg_ctl
 * run as the postgres user (runuser -u postgres --), which owns the
 * directory.
 *
 * Errors: every function that can fail says why on stderr (with the
 * server's log when it is the server that failed), so that a test can
 * simply fail; missing binaries name the package to install. Nothing
 * here is thread-safe: call it from the test's main thread. */
#ifndef PARLEY_PGSERVER_H
#define PARLEY_PGSERVER_H

#include <stddef.h>

typedef struct pgserver pgserver_t;

/* Starts a server; NULL (said why) when it cannot. */
pgserver_t *pgserver_start(void);

/* The libpq URI of the server's maintenance database, postgres:
 * "postgresql://postgres@127.0.0.1:PORT/postgres". Valid until stop. */
const char *pgserver_url(const pgserver_t *pg);
int pgserver_port(const pgserver_t *pg);
/* The temporary directory: data/ (the cluster), server.log, the socket. */
const char *pgserver_dir(const pgserver_t *pg);

/* Creates a fresh, empty database and writes its URI into url (cap
 * bytes). name may be NULL for a unique one of this process
 * ("parley_PID_N"); a name given must be [a-z0-9_], at most 63 bytes.
 * Returns 0, or -1 (said why). */
int pgserver_create_db(pgserver_t *pg, const char *name, char *url, size_t cap);
/* Drops a database named by name or by a URI of this server, with the
 * connections it still has (WITH (FORCE)). Returns 0, or -1. */
int pgserver_drop_db(pgserver_t *pg, const char *name_or_url);

/* For fault tests: an immediate shutdown (pg_ctl stop -m immediate),
 * the nearest thing to pulling the plug on the database that leaves a
 * restartable cluster: no checkpoint, clients cut off mid-transaction;
 * the next start runs crash recovery from the WAL. Returns 0 or -1. */
int pgserver_crash(pgserver_t *pg);
/* Starts a stopped (crashed) server again, on the same port and data,
 * so that URIs handed out before still name the same databases.
 * Returns 0 once it accepts connections, or -1. */
int pgserver_restart(pgserver_t *pg);
/* 1 when the server answers (PQping), else 0. */
int pgserver_alive(const pgserver_t *pg);

/* Stops the server (pg_ctl stop -m fast, if running), removes its
 * directory and frees pg. NULL is fine. With $PGSERVER_KEEP set (to
 * anything but ""), the directory is kept, and named on stderr, for its
 * server.log: a failing run's record of what the backend sent. */
void pgserver_stop(pgserver_t *pg);

/* The directory holding initdb and pg_ctl, or NULL (said why, with the
 * apt command that installs them). */
const char *pgserver_bindir(void);

#endif
