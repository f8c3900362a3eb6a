/* metrics.h - GET /metrics: the node's counters in Prometheus' text format.
 *
 * Served by the I/O thread itself (it reads only atomic counters), so it
 * answers even when the workers are busy. It carries no user data. */
#ifndef PARLEY_METRICS_H
#define PARLEY_METRICS_H

#include "jbuf.h"
#include "sbuf.h"
#include "server.h"

typedef struct push push_t;

/* A complete HTTP response. */
sbuf_t *metrics_response(server_t *srv, int keep_alive);

/* One metric (its HELP, TYPE and value lines), appended to b. */
void metrics_metric(jbuf_t *b, const char *name, const char *type, const char *help, double value);

/* The push path's metrics (parley_push_*), appended to b: a node's, or
 * the push service's (pushsvc.c). */
void metrics_push(jbuf_t *b, push_t *p);

#endif
