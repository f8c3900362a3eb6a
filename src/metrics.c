/* metrics.c - the /metrics page of metrics.h. */
#include "metrics.h"

#include <stdio.h>

#include "fanout.h"
#include "gateway.h"
#include "http.h"
#include "store.h"
#include "tally.h"
#include "writer.h"

sbuf_t *metrics_response(server_t *srv, int keep_alive)
{
	char body[2048];
	writer_counts_t wc;
	uint64_t conns, ws;
	int n;

	writer_counts(srv->writer, &wc);
	gateway_counts(srv->gw, &conns, &ws);
	n = snprintf(body, sizeof body,
	             "# TYPE parley_connections gauge\nparley_connections %llu\n"
	             "# TYPE parley_websockets gauge\nparley_websockets %llu\n"
	             "# TYPE parley_store_commits_total counter\nparley_store_commits_total %llu\n"
	             "# TYPE parley_store_ops_total counter\nparley_store_ops_total %llu\n"
	             "# TYPE parley_messages_stored_total counter\nparley_messages_stored_total %llu\n"
	             "# TYPE parley_receipt_writes_total counter\nparley_receipt_writes_total %llu\n"
	             "# TYPE parley_sends_rate_limited_total counter\nparley_sends_rate_limited_total %llu\n"
	             "# TYPE parley_fanout_deliveries_total counter\nparley_fanout_deliveries_total %llu\n"
	             "# TYPE parley_receipt_count_frames_total counter\nparley_receipt_count_frames_total %llu\n"
	             "# TYPE parley_store_memory_bytes gauge\nparley_store_memory_bytes %lld\n",
	             (unsigned long long)conns, (unsigned long long)ws, (unsigned long long)wc.commits,
	             (unsigned long long)wc.ops, (unsigned long long)wc.messages,
	             (unsigned long long)wc.receipt_writes, (unsigned long long)wc.limited,
	             (unsigned long long)fanout_delivered(srv->fanout),
	             (unsigned long long)tally_frames(srv->tally), (long long)store_memory_bytes());
	return http_response(200, "text/plain; version=0.0.4", body, (size_t)n, keep_alive, NULL);
}
