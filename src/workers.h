/* workers.h - a pool of threads for work that blocks: store reads, the
 * writes of the HTTP API, password hashing.
 *
 * Each worker owns one store handle and runs jobs in submission order from
 * a shared, bounded queue. A job that must answer a connection posts its
 * result to that connection's loop (loop_post); workers never touch
 * connections. */
#ifndef PARLEY_WORKERS_H
#define PARLEY_WORKERS_H

#include "store.h"

typedef struct workers workers_t;

/* Runs on a worker thread with that worker's store handle. */
typedef void (*worker_fn)(store_t *store, void *arg);

/* Starts n workers, each opening the store in data_dir. queue_cap bounds
 * the jobs waiting. Returns NULL (logged) on failure. */
workers_t *workers_new(int n, const char *data_dir, unsigned queue_cap);

/* Queues fn(store, arg). Returns 0, or -1 when the queue is full: the caller
 * still owns arg and should answer "unavailable". Any thread. */
int workers_submit(workers_t *w, worker_fn fn, void *arg);

/* Runs every queued job, then stops and frees the pool. */
void workers_free(workers_t *w);

#endif
