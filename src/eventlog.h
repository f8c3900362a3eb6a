/* eventlog.h - the durable, replicated log of committed events
 * (`message.new`, `receipt.delivered`, `receipt.read`) between the nodes'
 * commit path and the consumers that act on them: fan-out dispatchers
 * and, separately, the push service.
 *
 * Shaped for a partitioned log (Kafka's model) so that a librdkafka
 * backend can stand beside the first one, eventlog_nats.c (NATS
 * JetStream): a fixed number of partitions; an event's partition is a
 * stable hash of its key (the conversation id) modulo that number, so
 * one conversation's events stay in order; a consumer group reads each
 * partition through a durable cursor of its own, and groups are
 * independent of each other. (In Kafka's terms: the log is a topic of
 * that many partitions, the key the record key, a group a consumer
 * group with one member per partition, ok = 1 an acks=all ack; the
 * dedup id has no exact counterpart: an idempotent producer covers only
 * its own retries, so a Kafka backend's consumers would dedup on it.)
 *
 * Delivery: at least once. A consumer's handler is called for each event
 * of its partition in log order; the event is acknowledged (the cursor
 * moves past it) only after the handler returns 0. A handler returning
 * non-zero gets the same event again (after a short backoff, on the same
 * thread, before any later event of the partition); a consumer that dies
 * before acknowledging, or whose ack the servers lose (a server killed),
 * gets it again after opts->ack_wait_ms. So a
 * handler must tolerate seeing an event twice (the events carry ids for
 * that: the dedup id and the log's sequence number). The log never skips
 * an event: a handler that never accepts one holds its partition up for
 * good (a warning at each try, the backoff growing to 1 s).
 *
 * Publishing: eventlog_publish never blocks (beyond a short lock); it
 * queues the event for the log's publisher thread and returns -EAGAIN
 * when opts->max_inflight events are queued or awaiting the log's ack.
 * done(ud, ok) is then called exactly once: ok = 1 when the log has
 * stored the event (on a quorum of replicas), ok = 0 when it failed, its
 * ack did not come within opts->publish_timeout_ms, or the connection it
 * went out on was lost (at once then; and at once while no server is
 * reachable: nothing waits for a reconnection). ok = 0 means
 * "not known to be stored", not "not stored": republish with the same
 * dedup id, which the log stores once within opts->dedup_window_ms.
 *
 * Threads. Every function is safe from any thread, except that
 * eventlog_close must not race with other calls on the same log nor be
 * called from a callback. done is called on one of the log's own threads
 * (the client library's delivery thread for acks, the publisher thread
 * for timeouts and send failures; so two done calls, for different
 * events, may run at the same time); a consumer's handler on that
 * consumer's own thread (one per eventlog_consume). Both may call
 * eventlog_publish (it does not block); neither may block for long: done
 * should only queue the outcome to the thread that owns it, and a handler
 * slower than ack_wait_ms gets its event delivered again. No lock of the
 * log is held while a callback runs. */
#ifndef PARLEY_EVENTLOG_H
#define PARLEY_EVENTLOG_H

#include <stddef.h>
#include <stdint.h>

typedef struct eventlog eventlog_t;

/* Event type names: tokens of [a-z0-9_-] separated by single dots, at
 * most EVENTLOG_TYPE_MAX bytes ("message.new", "receipt.read"). */
#define EVENTLOG_TYPE_MAX 64
/* Dedup ids: 1 to EVENTLOG_DEDUP_MAX printable ASCII bytes, no spaces. */
#define EVENTLOG_DEDUP_MAX 128
/* Group names: 1 to EVENTLOG_GROUP_MAX bytes of [A-Za-z0-9_-]. */
#define EVENTLOG_GROUP_MAX 48
#define EVENTLOG_PARTITIONS_MAX 1024

typedef struct eventlog_opts {
	const char *name;          /* the log (JetStream stream), 1 to 32 of
	                            * [A-Za-z0-9_-]; NULL: "PARLEY" */
	unsigned partitions;       /* 0: 16. Fixed for the log's life: a log
	                            * opened with another count is refused */
	int replicas;              /* 1 to 5; 0: 1 */
	int64_t max_age_ms;        /* retention by age; 0: 7 days */
	int64_t max_bytes;         /* retention by size; 0: unlimited */
	size_t max_payload;        /* larger events are refused; 0: 64 KiB */
	unsigned max_inflight;     /* queued + unacked publishes; 0: 4096 */
	int64_t publish_timeout_ms;/* ack wait per publish; 0: 5000 */
	int64_t dedup_window_ms;   /* 0: 120000 (JetStream's default) */
	unsigned max_ack_pending;  /* a consumer's unacked events; 0: 256 */
	int64_t ack_wait_ms;       /* redelivery after a consumer dies; 0: 30000 */
	int64_t connect_timeout_ms;/* per server at open; 0: 2000 */
} eventlog_opts_t;

/* Sets every field to 0 (the defaults). */
void eventlog_opts_init(eventlog_opts_t *opts);

/* Connects to the servers in urls ("nats://h:p,nats://h:p": any of them
 * will do, the client finds the others and reconnects for ever) and makes
 * sure the log exists with opts' settings (updating retention when it
 * exists). opts may be NULL (defaults). Blocks the caller (up to a few
 * connect timeouts): call it at start-up. NULL on failure, with the
 * reason in err (errlen bytes, may be NULL) and in the log. */
eventlog_t *eventlog_open(const char *urls, const eventlog_opts_t *opts, char *err, size_t errlen);

/* The partition count, and the partition of key: a stable hash (the
 * same in every process and version) modulo the count. */
unsigned eventlog_partitions(const eventlog_t *log);
unsigned eventlog_partition_of(const eventlog_t *log, int64_t key);

typedef void (*eventlog_done_fn)(void *ud, int ok);

/* Queues an event of type with the len bytes at data (copied) under key,
 * with dedup_id (copied; NULL: none, then a retry may be stored twice).
 * 0, and done is called once later; or, done never called: -EINVAL (bad
 * type, dedup id, NULL data with len > 0, NULL done), -EMSGSIZE (len >
 * max_payload), -EAGAIN (max_inflight reached: retry after some done
 * calls), -EPIPE (the log is closing), -ENOMEM. */
int eventlog_publish(eventlog_t *log, int64_t key, const char *type, const void *data, size_t len,
                     const char *dedup_id, eventlog_done_fn done, void *ud);

/* An event as a consumer sees it. Everything is borrowed for the
 * handler's call only. */
typedef struct eventlog_event {
	unsigned partition;
	int64_t key;
	const char *type;     /* "message.new" */
	const void *data;
	size_t len;
	const char *dedup_id; /* "" when published without */
	uint64_t seq;         /* the log's sequence: rises along a partition */
	unsigned delivery;    /* 1 the first time, more on redelivery */
} eventlog_event_t;

/* 0: acknowledge; non-zero: deliver this event again. */
typedef int (*eventlog_handler_fn)(void *ud, const eventlog_event_t *ev);

/* Starts consuming partition for group: a durable cursor named
 * "<group>_p<partition>" (created when missing, resumed after the last
 * acknowledged event when it exists), on a thread of its own that calls
 * h for each event in order, until eventlog_close. Returns at once: the
 * thread creates or finds the cursor (a request to the servers, ~0.5 s
 * for a replicated one), trying again while the servers cannot (said in
 * the log). A group's partition should have one consumer at a time (a
 * second one, in another process, splits its events between the two).
 * 0, -EINVAL (bad group or partition, NULL h), -EEXIST (this log
 * consumes it already), -EPIPE (closing), -ENOMEM.
 *
 * Order: within the partition, in log order while the consumer runs, a
 * refused event retried in place; at eventlog_close the events fetched
 * but not handled are handed back in order, so the next consumer starts
 * with them. After a crash, though, or when the server leading the
 * cursor is lost (events it had sent may be lost in transit), the at
 * most max_ack_pending events delivered and not acknowledged come again
 * only after ack_wait_ms, possibly after later ones: a consumer that
 * needs strict order then sets max_ack_pending to 1 (one round trip per
 * event), or, better, orders by the events' own ids (a conversation's
 * seq). */
int eventlog_consume(eventlog_t *log, const char *group, unsigned partition, eventlog_handler_fn h,
                     void *ud);

/* Stops consuming partition for group, as eventlog_close does for every
 * consumer: the event being handled is finished, those fetched but not
 * handled are handed back in order, and the durable cursor stays for the
 * next consumer (here or in another process). Waits for the consumer's
 * thread. 0, -EINVAL, -ENOENT (not consumed here). Not from a handler. */
int eventlog_unconsume(eventlog_t *log, const char *group, unsigned partition);

/* Stops the consumers (an event being handled is finished; those
 * fetched but not yet handled are handed back, in order, for the next
 * consumer), sends what is queued and waits for the outstanding acks, at
 * most publish_timeout_ms, calling every remaining done; then
 * disconnects and frees log. NULL is fine. */
void eventlog_close(eventlog_t *log);

#endif
