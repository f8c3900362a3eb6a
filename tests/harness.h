/* harness.h - what the integration tests share: starting the real parley
 * binary on a free loopback port with a fresh store, waiting for its
 * readiness line (never a sleep), and short-hands over pclient for the
 * protocol's requests and frames.
 *
 * The binary is $PARLEY_BIN (default build/parley). The store is chosen
 * by $PARLEY_TEST_STORE:
 *   unset, "" or "sqlite": a temporary data directory (--data DIR);
 *   "postgresql": a fresh database (--store URL) on a throwaway
 *     PostgreSQL server (tests/pgserver.h) that the harness starts once
 *     per test process, at the first hx_start, and that stops when the
 *     process ends. The test binary's own build must have a PostgreSQL
 *     backend: without one every start fails, saying so.
 * Helpers that cannot reach their goal fail the current cmocka test. */
#ifndef PARLEY_HARNESS_H
#define PARLEY_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <sys/types.h>

#include <cmocka.h>
#include <jansson.h>

#include "pclient.h"

#define HX_TIMEOUT 10000 /* ms: generous for sanitizer builds */

typedef struct hx_server {
	pid_t pid;
	int port;
	int admin_port;      /* the operator listener (/metrics) */
	int out_fd;          /* the server's stdout */
	/* The store's location (store.h): a data directory, or a
	 * PostgreSQL database's URI. Handed back to hx_start, it starts a
	 * server on the same data (a restart). */
	char store[256];
	int own_store;       /* made by hx_start, removed by hx_cleanup */
} hx_server_t;

/* Starts a fake outside service written for Node (tests/fakes/): argv
 * (NULL-terminated) after "node", which must write the port it listens
 * on into port_file; waits for that (not for ever: a fake that exits
 * first fails the test). Returns the port; *pid the process, which dies
 * with the test. */
int hx_node(const char *const *argv, const char *port_file, pid_t *pid);
void hx_node_stop(pid_t pid);

/* Starts a server; store NULL makes a fresh one (a temporary directory,
 * or a new database: see $PARLEY_TEST_STORE above), else the server
 * serves that location. Extra arguments (NULL-terminated list) are
 * appended. Returns 0 or -1. */
int hx_start(hx_server_t *s, const char *store, const char *const *extra);
/* Starts `parley push` on store (a fleet's PostgreSQL) with extra
 * arguments (--nats among them), its /metrics at s->admin_port; 0 or -1.
 * hx_stop, hx_kill and hx_metric take it as they take a node. */
int hx_start_push(hx_server_t *s, const char *store, const char *const *extra);
/* Sends sig and waits; returns the exit status, or 128+signal. */
int hx_stop(hx_server_t *s, int sig);
/* Removes the store (directory or database) if hx_start made it; call
 * it after the server has stopped. */
void hx_cleanup(hx_server_t *s);
/* A fresh store as hx_start makes one (see $PARLEY_TEST_STORE), for a
 * node a test runs itself: its location into out. 0, or -1 (said why). */
int hx_fresh_store(char *out, size_t cap);
/* Removes a store hx_fresh_store made; after its node has stopped. */
void hx_drop_store(const char *store);
/* The command-line option that names a store at this location: "--data"
 * for a directory, "--store" for a URI. */
const char *hx_store_option(const char *store);
/* 1 when the location is a data directory (SQLite's), else 0. */
int hx_store_is_dir(const char *store);
/* The PostgreSQL server of this process's stores, for fault tests
 * (pgserver_crash, pgserver_restart: same port, same databases); NULL
 * on SQLite, or before the first hx_start. */
struct pgserver *hx_pgserver(void);
/* Stops the server with SIGTERM, fails the test unless it exits cleanly
 * (0), and cleans up. */
void hx_finish(hx_server_t *s);
/* For a cmocka teardown: kills s (SIGKILL) if it runs and removes its
 * store, however the test went, so that a failed assertion leaves no
 * server behind; s is then zeroed. */
void hx_kill(hx_server_t *s);
/* Starts *s (a fresh store) with the extra arguments given, or fails the
 * test. */
#define HX_START(s, ...)                                            \
	do {                                                        \
		const char *const args_[] = {__VA_ARGS__, NULL};    \
		assert_int_equal(hx_start((s), NULL, args_), 0);    \
	} while (0)

/* A username unique to this test run, from a prefix. */
const char *hx_name(const char *prefix);

/* HTTP request on a fresh connection; returns the parsed JSON body (NULL
 * when empty) and the status. */
json_t *hx_http(int port, const char *method, const char *path, const char *token,
                const char *body, int *status);

/* The password of every user the harness registers. */
#define HX_PASSWORD "correct horse"

typedef struct hx_user {
	int64_t id, device;
	char name[40];
	char token[64];
} hx_user_t;

/* Registers a fresh user and logs in (one device). */
void hx_user(int port, const char *prefix, hx_user_t *u);
/* Logs the user in again: a second device. */
void hx_login(int port, hx_user_t *u, hx_user_t *device);
/* Opens (or finds) the direct conversation of a and b. */
int64_t hx_direct(int port, const hx_user_t *a, const hx_user_t *b);

/* Sends one message from c (an open WebSocket) to conv and waits for its
 * ack (other frames that come first are dropped). Returns its seq. */
int64_t hx_say(pc_conn_t *c, int64_t conv, const char *body);

/* Opens a WebSocket for u and reads its ready frame. */
pc_conn_t *hx_ws(int port, const hx_user_t *u);
/* Sends a text frame built printf-style. */
void hx_sendf(pc_conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The next text frame as JSON (answering pings); fails the test on
 * timeout or a non-text frame. */
json_t *hx_recv(pc_conn_t *c);
/* Like hx_recv but returns NULL when nothing comes within ms. */
json_t *hx_recv_within(pc_conn_t *c, int ms);
/* The next "msg" frame on c, the frames before it skipped (presence,
 * typing, receipts...); NULL when none comes within ms of the last frame. */
json_t *hx_next_msg(pc_conn_t *c, int ms);
/* The next frame, which must be of the given type. */
json_t *hx_expect(pc_conn_t *c, const char *type);
/* Waits for a close frame and returns its code (-1 if the connection
 * ended without one); skips other frames. */
int hx_expect_close(pc_conn_t *c);

/* The value of one metric of s's /metrics page (its operator listener);
 * fails the test when the page or the metric is missing. */
double hx_metric(const hx_server_t *s, const char *name);

/* Runs only the tests whose names match $HX_FILTER (a cmocka pattern). */
void hx_filter(void);

/* Field accessors that fail the test when the field is missing. */
int64_t hx_int(const json_t *j, const char *key);
const char *hx_str(const json_t *j, const char *key);

#endif
