/* haproxyserver.h - a throwaway HAProxy for the tests, running the
 * project's own deploy/haproxy.cfg in front of nodes the test started:
 * Debian's haproxy 2.6 in the foreground (-db) as a child of the test
 * process, its listener on a free loopback port, its runtime API's socket
 * and log in a temporary directory, and gone with the test process however
 * that ends (tmpserver.h's atexit hook, fatal-signal handler and watchdog).
 *
 * Errors are said on stderr (with haproxy's log when it is haproxy that
 * failed); a missing binary names the package. Not thread-safe: call it
 * from the test's main thread. $PARLEY_HAPROXY names another haproxy binary. */
#ifndef PARLEY_HAPROXYSERVER_H
#define PARLEY_HAPROXYSERVER_H

#include <stddef.h>
#include <sys/types.h>

typedef struct haproxyserver haproxyserver_t;

#define HAPROXYSERVER_MAX_NODES 8

/* Starts haproxy with deploy/haproxy.cfg (or $PARLEY_HAPROXY_CFG) and the
 * n node ports (on 127.0.0.1) as PARLEY_NODE1..n; returns once its
 * listener answers and every node passed its health check, or NULL (said
 * why). */
haproxyserver_t *haproxyserver_start(const int *node_ports, int n);

/* The port clients connect to. */
int haproxyserver_port(const haproxyserver_t *h);
/* haproxy's process (for its CPU in a benchmark). */
pid_t haproxyserver_pid(const haproxyserver_t *h);

/* Sends one runtime API command (e.g. "set server parley/n1 state drain")
 * and copies the answer into out (cap bytes; NULL: dropped). 0 or -1. */
int haproxyserver_command(haproxyserver_t *h, const char *command, char *out, size_t cap);

/* The state haproxy holds for node i (1-based) as its runtime API shows it
 * (0 stopped or down, 1 up and checked, 2 draining or in maintenance), or
 * -1. */
int haproxyserver_node_state(haproxyserver_t *h, int i);

/* Waits up to ms for node i to reach state (as above). 0 or -1. */
int haproxyserver_wait_node(haproxyserver_t *h, int i, int state, int ms);

/* Stops haproxy, removes its directory, frees h; NULL is fine. With
 * $HAPROXYSERVER_KEEP set, the directory (haproxy.log) is kept. */
void haproxyserver_stop(haproxyserver_t *h);

#endif
