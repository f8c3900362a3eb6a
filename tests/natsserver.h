/* natsserver.h - a throwaway NATS JetStream cluster for the tests: n real
 * nats-server processes (Debian's nats-server package, 2.9) with
 * JetStream on, each with its own store directory in one fresh temporary
 * directory, their client, cluster and monitoring ports free ports on
 * 127.0.0.1. The servers are named n1..nN; server i (0-based, as every
 * index here) is named n<i+1>. With n > 1 they form the cluster
 * "parley", every server given the same route list, itself included (as
 * nats-server's own test harness does). With n = 1 the server runs
 * JetStream standalone: a one-server cluster never elects a meta leader
 * in 2.9 (it waits for routes for ever).
 *
 * Durability: JetStream's file store, each server's under dir/nI/; 2.9
 * syncs it to disk in the background, so a replicated stream's safety is
 * its quorum, which is what a cluster of 3 is for.
 *
 * Lifetime (tmpserver.h): natscluster_stop stops every server and
 * removes the directory. A cluster still running when the process exits
 * normally (a cmocka failure included) is stopped by an atexit handler;
 * on SIGINT, SIGTERM, SIGHUP, SIGABRT, SIGSEGV, SIGBUS or SIGFPE a
 * handler SIGKILLs every server before the signal takes its course; and a
 * watchdog process, in a session of its own, SIGKILLs them and removes the
 * directory if the test process dies any other way (SIGKILL). The
 * watchdog is told the pids whenever a server is killed or restarted.
 *
 * libnats: natscluster_start checks readiness through libnats, whose
 * threads then run in the process. A process forked after that (or
 * after any libnats use) must exec before it uses libnats or this
 * module again: after fork only the forking thread exists, and libnats'
 * state says otherwise. Fork first, then use libnats.
 *
 * Errors: every function that can fail says why on stderr (with the logs
 * of the servers concerned, dir/nI.log, when it is a server that
 * failed), so that a test can simply fail; a missing nats-server names
 * the package to install. Nothing here is thread-safe: call it from the
 * test's main thread. */
#ifndef PARLEY_NATSSERVER_H
#define PARLEY_NATSSERVER_H

#include <sys/types.h>

#define NATSCLUSTER_MAX 5 /* servers in one cluster */

typedef struct natscluster natscluster_t;

/* Starts n servers (1 to NATSCLUSTER_MAX; 1 or 3 are what the tests
 * use) and returns once every server's monitoring /healthz answers 200
 * (JetStream on, in contact with a meta leader and current with it) and
 * then a JetStream file stream with n replicas could be created and
 * deleted through libnats; at most 20 s (it takes ~0.5 s here). NULL
 * (said why) when it cannot. */
natscluster_t *natscluster_start(int n);

/* "nats://127.0.0.1:P1,nats://127.0.0.1:P2,...": every server, for
 * natsConnection_ConnectTo, which splits the list (natsOptions_SetURL
 * takes one URL only: give natsOptions_SetServers each natscluster_url).
 * Valid until stop. */
const char *natscluster_urls(const natscluster_t *nc);
/* Server i's client URL, "nats://127.0.0.1:P"; NULL for a bad i. */
const char *natscluster_url(const natscluster_t *nc, int i);
int natscluster_size(const natscluster_t *nc);
/* Server i's monitoring port (GET /healthz, /jsz, /varz), -1 for a bad
 * i. */
int natscluster_monitor_port(const natscluster_t *nc, int i);
/* Server i's process, or 0 while it is killed (or for a bad i). */
pid_t natscluster_pid(const natscluster_t *nc, int i);
/* The temporary directory: nI/ (server nI's store), nI.log. */
const char *natscluster_dir(const natscluster_t *nc);

/* For fault tests: SIGKILL server i, returning once the process is gone.
 * 0, or -1 when it was not running (or a bad i). */
int natscluster_kill(natscluster_t *nc, int i);
/* Starts killed server i again, on the same ports and store; returns
 * once its /healthz answers 200: with n > 1, it has contact with the
 * meta leader and has caught up with it and with every stream it holds a
 * replica of. At most 20 s. 0, or -1 (said why; also when it still
 * runs). */
int natscluster_restart(natscluster_t *nc, int i);
/* 1 when server i's process runs and its client port greets with INFO,
 * else 0. */
int natscluster_alive(const natscluster_t *nc, int i);
/* The index of the server the live ones name as JetStream's meta leader
 * (their /jsz), or -1 when none is named. For a fault test that wants to
 * kill, or to spare, the leader. */
int natscluster_meta_leader(const natscluster_t *nc);

/* Stops every server still running, removes the directory and frees nc.
 * NULL is fine. With $NATSSERVER_KEEP set (to anything but ""), the
 * directory is kept, and named on stderr, for its logs. */
void natscluster_stop(natscluster_t *nc);

/* The nats-server binary's path, or NULL (said why, with the apt
 * command that installs it). */
const char *natscluster_bin(void);

#endif
