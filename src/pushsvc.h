/* pushsvc.h - `parley push`: a fleet's push service, a process of its
 * own beside the nodes.
 *
 * It reads the event log (eventlog.h) through a durable consumer group
 * of its own, PUSHSVC_GROUP, independent of the fan-out dispatchers'
 * ("fanout"): the nodes neither wait for it nor know of it, and a push
 * service that is down, slow or stuck on a hanging provider builds a
 * backlog in its own cursor, never latency on the real-time path. Each
 * message.new and receipt.* event goes to a push path (push.h) as a
 * node's own events would; the push path decides who is woken, from the
 * store (who delivered, read, muted, was pushed already), since this
 * process cannot see the fleet's sockets: every recipient's devices get
 * the grace to deliver first.
 *
 * Scaling: --push-shard I/N runs the service for the partitions p with
 * p % N == I, so N processes share the log; each partition has one
 * consumer (a second process on the same shard would split its events).
 *
 * Restarts lose nothing and repeat nothing that the store can tell: the
 * cursor resumes after the last event handed to the push path; the
 * notifications that were pending in memory when the process died are
 * found again in the store (store_push_pending, the last hour); and an
 * event seen twice is not pushed twice (store_push_mark). A notification
 * whose provider call was in flight at a kill -9 may be made again, once,
 * collapsed on the device onto the first. */
#ifndef PARLEY_PUSHSVC_H
#define PARLEY_PUSHSVC_H

#include "server.h"

#define PUSHSVC_GROUP "push"

/* Runs the push service until SIGINT or SIGTERM; the exit status. */
int pushsvc_run(const server_config_t *cfg);

#endif
