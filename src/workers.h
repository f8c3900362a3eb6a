/* workers.h - a pool of threads for work that blocks: store reads, the
 * writes of the HTTP API, password hashing.
 *
 * Each worker owns one store handle and takes jobs from a shared, bounded
 * queue that is fair across flows (see fairq.h): a job is queued in a flow
 * (a user, a client address), each flow's jobs start in the order
 * submitted, and the flows with jobs take turns, so one flow's backlog
 * delays another flow's job by about one job per worker, not by the whole
 * backlog. When the queue is full a flow holding fewer jobs than the
 * longest flow still gets in, by evicting that flow's newest job, which is
 * answered through its drop function instead of being run.
 *
 * A job that must answer a connection posts its result to that
 * connection's loop (loop_post); workers never touch connections. */
#ifndef PARLEY_WORKERS_H
#define PARLEY_WORKERS_H

#include <stdint.h>

#include "store.h"

typedef struct workers workers_t;

/* Flows: a client address key (clientaddr.h) for requests that carry no
 * credential, a token's hash for those that do (one device's requests,
 * not everyone's behind the same NAT), a user id for an authenticated
 * WebSocket's jobs. Token flows take 4000::/2 of the key space and user
 * flows 8000::/11: no unicast IPv6 /64 uses either (2000::/3 holds them
 * all), and IPv4 keys (ffff:ffff::/32) reach neither. A client cannot
 * make many token flows by inventing tokens: each of its connections
 * holds one request at a time, and its connections are capped. */
#define FLOW_OF_ADDRESS(key) ((uint64_t)(key))
#define FLOW_OF_TOKEN(hash) (UINT64_C(0x4000000000000000) | ((uint64_t)(hash) & UINT64_C(0x3fffffffffffffff)))
#define FLOW_OF_USER(user) (UINT64_C(0x8000000000000000) | (uint64_t)(user))

/* Runs on a worker thread with that worker's store handle. */
typedef void (*worker_fn)(store_t *store, void *arg);

/* Called instead of fn when a queued job is evicted to make room for
 * another flow's job: it must answer (e.g. post "unavailable") and free
 * arg. It runs on the thread that called the submit that evicted it,
 * outside the pool's lock, after that submit has queued its own job; it
 * may submit again. It is never called for a job that has run or will
 * run: workers_free runs every job still queued. */
typedef void (*worker_drop_fn)(void *arg);

/* Starts n workers, each opening the store in data_dir. queue_cap bounds
 * the jobs waiting, in all flows together. Returns NULL (logged) on
 * failure. */
workers_t *workers_new(int n, const char *data_dir, unsigned queue_cap);

/* Queues fn(store, arg) in flow 0 with no drop, so the job is never
 * evicted. Returns 0, or -1 when the queue is full and no job can make
 * room (flow 0 already holds the most, or the longest flow's newest job
 * has no drop either): the caller still owns arg and should answer
 * "unavailable". Any thread. */
int workers_submit(workers_t *w, worker_fn fn, void *arg);

/* Queues fn(store, arg) in flow `flow` (a user id, a client address key;
 * callers tag the key space so the two kinds cannot meet). Returns 0, or
 * -1 when refused: the flow is at its cap, or the queue is full and no
 * job can make room (this flow already holds the most, or the longest
 * flow's newest job has no drop); the caller still owns arg. A submit
 * that evicts another job returns 0, and calls that job's drop before
 * returning.
 *
 * drop may be NULL only in flow 0, the flow of workers_submit: a job with
 * no drop can never be evicted, and a user's flow that could not be
 * evicted would keep its whole share of a full queue from everyone else.
 * A NULL drop in any other flow is a programming error: the submit is
 * refused (and logged), every time, so it shows in the first test.
 * Any thread. */
int workers_submit_flow(workers_t *w, uint64_t flow, worker_fn fn, worker_drop_fn drop,
                        void *arg);

/* Like workers_submit_flow, in a second queue of the same size that the
 * workers serve before the first: for the jobs of clients with a claim to
 * go ahead (a login from an address the account has logged in from
 * before, while strangers' logins flood the hashers). Its flows take
 * turns among themselves as in the first, and the flow cap applies to
 * each queue. Any thread. */
int workers_submit_first(workers_t *w, uint64_t flow, worker_fn fn, worker_drop_fn drop,
                         void *arg);

/* Most jobs one flow may hold queued (0, the default: only the total
 * bound). Call before use: a flow above a lowered cap keeps its jobs. */
void workers_set_flow_cap(workers_t *w, unsigned cap);

/* Jobs waiting now, and jobs evicted since start (for /metrics). Any
 * thread. */
unsigned workers_queued(workers_t *w);
uint64_t workers_evicted(workers_t *w);

/* Runs every queued job, then stops and frees the pool. Submits made
 * while it runs are refused. Accepts NULL. */
void workers_free(workers_t *w);

#endif
