/* metrics.h - GET /metrics: the node's counters in Prometheus' text format.
 *
 * Served by the I/O thread itself (it reads only atomic counters), so it
 * answers even when the workers are busy. It carries no user data. */
#ifndef PARLEY_METRICS_H
#define PARLEY_METRICS_H

#include "sbuf.h"
#include "server.h"

/* A complete HTTP response. */
sbuf_t *metrics_response(server_t *srv, int keep_alive);

#endif
