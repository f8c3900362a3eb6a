/* metrics.c - the /metrics page of metrics.h.
 *
 * Each metric is one row: its name, type, help and value, read from the
 * modules' atomic counters at the moment of the request. */
#include "metrics.h"

#include <stdio.h>

#include "addrconns.h"
#include "bus_redis.h"
#include "fanout.h"
#include "dispatch.h"
#include "outbox.h"
#include "push.h"
#include "gateway.h"
#include "http.h"
#include "jbuf.h"
#include "store.h"
#include "tally.h"
#include "workers.h"
#include "writer.h"

static void metric(jbuf_t *b, const char *name, const char *type, const char *help, double value)
{
	char line[96];

	jbuf_lit(b, "# HELP ");
	jbuf_lit(b, name);
	jbuf_lit(b, " ");
	jbuf_lit(b, help);
	jbuf_lit(b, "\n# TYPE ");
	jbuf_lit(b, name);
	jbuf_lit(b, " ");
	jbuf_lit(b, type);
	snprintf(line, sizeof line, "\n%s %.17g\n", name, value);
	jbuf_lit(b, line);
}

void metrics_metric(jbuf_t *b, const char *name, const char *type, const char *help, double value)
{
	metric(b, name, type, help, value);
}

/* One family of per-provider values: name{provider="..."} for each. */
static void per_provider(jbuf_t *b, const char *name, const char *type, const char *help, const double v[PUSH_PROVIDERS])
{
	char line[160];
	int i;

	jbuf_lit(b, "# HELP ");
	jbuf_lit(b, name);
	jbuf_lit(b, " ");
	jbuf_lit(b, help);
	jbuf_lit(b, "\n# TYPE ");
	jbuf_lit(b, name);
	jbuf_lit(b, " ");
	jbuf_lit(b, type);
	jbuf_lit(b, "\n");
	for (i = 0; i < PUSH_PROVIDERS; i++) {
		snprintf(line, sizeof line, "%s{provider=\"%s\"} %.17g\n", name, push_provider_name(i), v[i]);
		jbuf_lit(b, line);
	}
}

void metrics_push(jbuf_t *b, push_t *p)
{
	push_counts_t c;
	double v[PUSH_PROVIDERS];
	char line[200];
	int i, r;

	push_counts(p, &c);
	metric(b, "parley_push_events_queued", "gauge", "Messages and receipts waiting for the push scheduler.",
	       (double)c.events_queued);
	metric(b, "parley_push_events_dropped_total", "counter",
	       "Messages and receipts the push path's full queue refused (not pushed).", (double)c.events_dropped);
	metric(b, "parley_push_notes", "gauge", "Notifications (user and conversation) pending or shown.",
	       (double)c.notes);
	metric(b, "parley_push_notes_dropped_total", "counter",
	       "Recipients not pushed: the table of notifications was full.", (double)c.notes_dropped);
	metric(b, "parley_push_sends_queued", "gauge", "Pushes waiting for a sender or for their retry.",
	       (double)c.sends_queued);
	metric(b, "parley_push_sends_dropped_total", "counter", "Pushes the full send queue refused.",
	       (double)c.sends_dropped);
	metric(b, "parley_push_notifications_total", "counter",
	       "Notifications decided (one per user, conversation and burst).", (double)c.notifications);
	metric(b, "parley_push_suppressed_total", "counter",
	       "Notifications not sent: a device delivered or read the message first.", (double)c.suppressed);
	metric(b, "parley_push_muted_total", "counter",
	       "Notifications not sent: the recipient muted the conversation.", (double)c.muted);
	metric(b, "parley_push_repeats_total", "counter",
	       "Notifications not sent again: pushed before the push path restarted.", (double)c.repeats);
	metric(b, "parley_push_recovered_total", "counter",
	       "Notifications found owed when the push path started (not delivered, not pushed).",
	       (double)c.recovered);
	metric(b, "parley_push_clears_total", "counter",
	       "Clears decided: a read on one device takes the notification off the others.", (double)c.clears);
	metric(b, "parley_push_no_targets_total", "counter", "Notifications for users with no usable push target.",
	       (double)c.no_targets);
	for (i = 0; i < PUSH_PROVIDERS; i++)
		v[i] = (double)c.provider[i].sent;
	per_provider(b, "parley_push_sent_total", "counter", "Pushes the provider accepted.", v);
	for (i = 0; i < PUSH_PROVIDERS; i++)
		v[i] = (double)c.provider[i].retries;
	per_provider(b, "parley_push_retries_total", "counter", "Pushes queued to be tried again.", v);
	for (i = 0; i < PUSH_PROVIDERS; i++)
		v[i] = (double)c.provider[i].dead_letter;
	per_provider(b, "parley_push_dead_letter_total", "counter",
	             "Pushes given up: refused, or failed --push-max-attempts times.", v);
	for (i = 0; i < PUSH_PROVIDERS; i++)
		v[i] = (double)c.provider[i].removed;
	per_provider(b, "parley_push_targets_removed_total", "counter",
	             "Push targets deleted because the provider said they are gone.", v);
	for (i = 0; i < PUSH_PROVIDERS; i++)
		v[i] = (double)c.provider[i].in_flight;
	per_provider(b, "parley_push_in_flight", "gauge", "Pushes being sent now.", v);
	for (i = 0; i < PUSH_PROVIDERS; i++)
		v[i] = c.provider[i].latency_sum;
	per_provider(b, "parley_push_latency_seconds_sum", "counter",
	             "Time the provider's exchanges took, those that were answered.", v);
	for (i = 0; i < PUSH_PROVIDERS; i++)
		v[i] = (double)c.provider[i].latency_count;
	per_provider(b, "parley_push_latency_seconds_count", "counter", "Exchanges the provider answered.", v);
	jbuf_lit(b, "# HELP parley_push_failures_total Failed push attempts, by provider and reason.\n"
	            "# TYPE parley_push_failures_total counter\n");
	for (i = 0; i < PUSH_PROVIDERS; i++)
		for (r = 0; r < PUSH_FAIL_REASONS; r++) {
			snprintf(line, sizeof line, "parley_push_failures_total{provider=\"%s\",reason=\"%s\"} %llu\n",
			         push_provider_name(i), push_fail_name(r), (unsigned long long)c.provider[i].failures[r]);
			jbuf_lit(b, line);
		}
}

sbuf_t *metrics_response(server_t *srv, int keep_alive)
{
	writer_counts_t wc;
	gateway_stats_t gs;
	sbuf_t *r;
	jbuf_t b;

	writer_counts(srv->writer, &wc);
	gateway_stats(srv->gw, &gs);
	jbuf_init(&b);
	metric(&b, "parley_connections", "gauge", "TCP connections open now.", (double)gs.conns);
	metric(&b, "parley_websockets", "gauge", "Authenticated WebSockets open now.", (double)gs.websockets);
	metric(&b, "parley_partial_input_bytes", "gauge",
	       "Bytes held for requests and messages not yet complete, all connections.",
	       (double)gs.partial_bytes);
	metric(&b, "parley_websockets_throttled_total", "counter",
	       "Times a WebSocket was not read for a while because its user was over the read rate.",
	       (double)gs.throttled);
	metric(&b, "parley_client_addresses", "gauge", "Client addresses holding connections now.",
	       (double)addrconns_addresses(srv->addrconns));
	metric(&b, "parley_address_connections_refused_total", "counter",
	       "Connections refused because their address held too many.", (double)addrconns_refused(srv->addrconns));
	metric(&b, "parley_worker_queue_jobs", "gauge", "Jobs waiting for a worker.", (double)workers_queued(srv->workers));
	metric(&b, "parley_worker_jobs_evicted_total", "counter",
	       "Worker jobs pushed out of a full queue by another client's (answered 503).",
	       (double)workers_evicted(srv->workers));
	metric(&b, "parley_hash_queue_jobs", "gauge", "Sign-ups and logins waiting for a hasher.",
	       (double)workers_queued(srv->hashers));
	metric(&b, "parley_hash_jobs_evicted_total", "counter",
	       "Sign-ups and logins pushed out of a full queue by another address's (answered 503).",
	       (double)workers_evicted(srv->hashers));
	metric(&b, "parley_store_commits_total", "counter", "Write transactions committed (one fsync each).",
	       (double)wc.commits);
	metric(&b, "parley_store_ops_total", "counter", "Sends and receipts applied by the writer.", (double)wc.ops);
	metric(&b, "parley_messages_stored_total", "counter", "New messages stored.", (double)wc.messages);
	metric(&b, "parley_receipt_writes_total", "counter", "Receipts that moved a watermark.",
	       (double)wc.receipt_writes);
	metric(&b, "parley_sends_rate_limited_total", "counter", "Sends refused by their sender's budget.",
	       (double)wc.limited);
	metric(&b, "parley_sends_storage_limited_total", "counter",
	       "Sends refused by their sender's storage budget.", (double)wc.storage_limited);
	metric(&b, "parley_stored_message_bytes_total", "counter", "Bytes of message bodies stored.",
	       (double)wc.stored_bytes);
	metric(&b, "parley_fanout_deliveries_total", "counter", "Group message deliveries to recipients.",
	       (double)fanout_delivered(srv->fanout));
	metric(&b, "parley_receipt_count_frames_total", "counter", "Group receipt count frames sent.",
	       (double)tally_frames(srv->tally));
	metric(&b, "parley_store_memory_bytes", "gauge", "Memory this process holds for the store.",
	       (double)store_memory_bytes());
	if (srv->cfg.redis_url[0]) {
		bus_redis_stats_t bs;
		bus_redis_stats(srv->bus, &bs);
		metric(&b, "parley_bus_publishes_total", "counter",
		       "Envelopes published to other nodes (one per node a delivery needs).", (double)bs.publishes);
		metric(&b, "parley_bus_received_total", "counter", "Envelopes received from other nodes.",
		       (double)bs.received);
		metric(&b, "parley_bus_dropped_total", "counter",
		       "Deliveries to other nodes dropped: Redis away or behind (clients catch up on resume).",
		       (double)bs.dropped);
		metric(&b, "parley_bus_malformed_total", "counter",
		       "Envelopes and presence messages from Redis that did not parse, dropped.", (double)bs.malformed);
		metric(&b, "parley_bus_cap_refused_elsewhere_total", "counter",
		       "WebSockets refused because the user's connections on all nodes reached --max-user-connections, "
		       "counting those on other nodes.",
		       (double)bs.refused_elsewhere);
		metric(&b, "parley_bus_users_elsewhere", "gauge",
		       "Users with connections here known to have connections on other nodes too (counted under "
		       "--max-user-connections; their senders' budgets are shared).",
		       (double)bs.users_elsewhere);
		metric(&b, "parley_bus_notes_sent_total", "counter",
		       "Notes published to the other nodes (logins for their backoff, spends for shared budgets).",
		       (double)bs.notes_sent);
		metric(&b, "parley_bus_notes_heard_total", "counter", "Notes heard from other nodes.",
		       (double)bs.notes_heard);
		metric(&b, "parley_bus_notes_dropped_total", "counter",
		       "Notes not sent: Redis away or behind (limits count this node's own meanwhile).",
		       (double)bs.notes_dropped);
	}
	if (srv->outbox) {
		outbox_counts_t oc;
		outbox_relay_counts(srv->outbox, &oc);
		metric(&b, "parley_outbox_published_total", "counter", "Outbox events the log acknowledged.",
		       (double)oc.published);
		metric(&b, "parley_outbox_failed_total", "counter",
		       "Outbox publishes not known to be stored (left to the sweep).", (double)oc.failed);
		metric(&b, "parley_outbox_swept_total", "counter",
		       "Outbox rows taken by the sweep (their first publish failed or never happened).",
		       (double)oc.swept);
		metric(&b, "parley_outbox_dropped_total", "counter",
		       "Committed rows not queued for publishing (queue full), left to the sweep.", (double)oc.dropped);
	}
	if (srv->dispatch) {
		dispatch_counts_t dc;
		dispatch_counts(srv->dispatch, &dc);
		metric(&b, "parley_dispatch_partitions", "gauge", "Partitions of the event log this node dispatches.",
		       (double)dc.partitions);
		metric(&b, "parley_dispatch_messages_total", "counter",
		       "Messages from the log handed to the fan-out for the other nodes' connections.",
		       (double)dc.messages);
		metric(&b, "parley_dispatch_receipts_total", "counter",
		       "Receipt events from the log handled here: their frames to other nodes, a group's counts.", (double)dc.receipts);
		metric(&b, "parley_dispatch_malformed_total", "counter",
		       "Events from the log that did not parse, dropped (logged).", (double)dc.malformed);
	}
	if (srv->push)
		metrics_push(&b, srv->push);
	r = b.oom ? NULL
	          : http_response(200, "text/plain; version=0.0.4", b.data, b.len, keep_alive, NULL);
	jbuf_free(&b);
	return r;
}
