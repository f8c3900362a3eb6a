/* node.h - a real Parley node inside a fuzzer's own process, for the
 * targets that drive the frame handlers (fuzz_frames) and the REST
 * handlers (fuzz_api) over loopback, and the invariants both check.
 *
 * fuzz_node_init starts a node (server_start) on 127.0.0.1, port 0, one
 * I/O thread, with a real SQLite store in a fresh directory under /tmp;
 * signs up alice, bob and carol through the REST API and logs them in;
 * creates the direct chat alice-bob, the group alice-bob-carol, the
 * direct chat bob-carol that alice is not in (the bystander's), and a
 * group of 299, alice (its admin), bob and a crowd of users who never log
 * in (past 256 members receipts are counted, not listed, and typing is
 * dropped), and the direct chat carol-alice, where carol writes first
 * (bob and carol having written to alice, a group of them costs alice
 * none of her budget of first contacts); and puts a few messages and
 * receipts in each, so
 * that history, receipts and resume have something to show. The node is
 * stopped (server_stop) and its directory removed at exit.
 *
 * The store grows with what the fuzzer creates, and every execution runs
 * a little slower for it; fuzz_node_next_input restarts the node on a new
 * directory every so many inputs, which each target chooses
 * (PARLEY_FUZZ_RESTART in the environment overrides it). Because each node starts empty, the ids
 * are the same on every node: alice, bob, carol are users 1, 2, 3, the
 * crowd 4 to 300, and the conversations above are 1 to 5, so inputs can
 * name them.
 *
 * The harness's own requests (set-up, re-logins, the checks) come from
 * 127.0.0.2, the fuzzer's from 127.0.0.1: the fuzzer's failed logins and
 * connections never count against the harness's address.
 *
 * Everything here runs on the fuzzer's thread; a failed invariant prints
 * what failed and calls abort(), which libFuzzer records as a crash. */
#ifndef PARLEY_FUZZ_NODE_H
#define PARLEY_FUZZ_NODE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "pclient.h"

enum { FZ_ALICE, FZ_BOB, FZ_CAROL, FZ_USERS };

typedef struct fuzz_node {
	int port;
	int64_t user[FZ_USERS];
	char token[FZ_USERS][64];
	int64_t conv_ab, conv_group, conv_bc, conv_crowd, conv_ca;
	/* The bystander check: bob-carol's messages seen so far, and how
	 * many sends to it bob and carol have made, the harness's and the
	 * fuzzer's (an upper bound on what the conversation may hold). */
	int64_t bc_checked_seq;
	long bc_sends;
	unsigned long inputs;    /* since this node started */
	unsigned long restarts;
} fuzz_node_t;

extern fuzz_node_t fuzz_node;
/* PARLEY_FUZZ_VERBOSE=1: the targets print what they send and receive
 * (for writing seeds and reading a crash). */
extern int fuzz_verbose;

/* Starts the first node and registers its stop at exit; the node is
 * restarted every every_inputs inputs. name prefixes the data directory
 * and the messages of failed invariants. Call it from
 * LLVMFuzzerInitialize with its arguments: unless the command line says
 * otherwise, it adds -detect_leaks=0. libFuzzer's check for leaks after
 * an input counts the node threads' allocations too, so it finds more
 * mallocs than frees after nearly every input and runs each one again
 * under a full leak scan, at a fifth of the speed; LeakSanitizer's check
 * at exit, after the node has stopped, still runs. */
void fuzz_node_init(const char *name, unsigned long every_inputs, int *argc, char ***argv);
/* Call at the start of every input: counts it and restarts the node when
 * it is due. */
void fuzz_node_next_input(void);
/* Stops the node and starts a fresh one now. */
void fuzz_node_restart(void);

/* A connection from the fuzzer's address (127.0.0.1); aborts on failure,
 * since the node not accepting is itself a finding. */
pc_conn_t *fuzz_connect(void);

/* Prints the failed invariant and aborts. */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Invariant 1: GET /healthz answers 200 {"status":"ok"}. */
void fuzz_check_health(void);

/* Invariant 2: an HTTP answer has a status the protocol knows; 4xx/5xx
 * carry {"error":{"code","message"}} with the code that goes with the
 * status; other answers are JSON objects (204: empty); 500 never comes.
 * (No web folder is configured, so no answer is a web file.) what names
 * the request in the message of a failure. */
void fuzz_check_response(const pc_response_t *res, const char *what);

/* Invariant 3: an "error" frame has a known code and a message; and no
 * frame says that the store failed on an input. Returns the frame's
 * parsed JSON (the caller decrefs it) or NULL when it is not JSON (which
 * fails too: every server text frame is a JSON object). */
json_t *fuzz_check_server_frame(const char *text, size_t len, const char *what);

/* Invariant 4: bob-carol holds only messages from bob and carol, and no
 * more of them than they were asked to send (fuzz_node.bc_sends); read as
 * bob. */
void fuzz_check_bystander(void);

/* The user's harness token still works (one REST request), else a new
 * login replaces it; a node on which that fails is restarted. */
void fuzz_refresh_token(int who);

/* A WebSocket ticket for the user (POST /api/v1/ws-tickets). */
void fuzz_ticket(int who, char *out, size_t cap);

/* Known error codes and their statuses (docs/protocol.md). */
int fuzz_error_code_known(const char *code);

#endif
