/* writer.h - the group-commit writer: the threads that store messages
 * and receipt watermarks.
 *
 * I/O threads submit store ops and go back to their sockets. The writer
 * takes every op waiting, applies them in one transaction with one fsync
 * (store_apply), and only then calls the completion for each op, in
 * submission order per conversation. While one batch is being committed
 * the next one gathers, so throughput grows with load instead of being
 * capped at one commit per message.
 *
 * A store that can run several write transactions at once (PostgreSQL;
 * store_writers) gets several lanes: each a thread with its own store
 * handle (connection) and queue, one transaction in flight on each. A
 * conversation always maps to the same lane, so its seqs, its receipts
 * and their completions keep submission order, while batches of
 * different conversations commit side by side instead of waiting behind
 * one another's round trips and WAL flushes. SQLite has one writer and so
 * one lane. The writer owns the node's snowflake generator, shared by its
 * lanes: ids are unique per node and rise with seq in every conversation. */
#ifndef PARLEY_WRITER_H
#define PARLEY_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct writer writer_t;

/* Called on a writer thread once op's batch is durable (or failed, with
 * op->status STORE_ERROR). The callee owns op from then on. */
typedef void (*writer_done_fn)(store_op_t *op, void *ud);

/* Opens a store handle per lane at location and starts the lanes'
 * threads: lanes of them, or the store's own choice (store_writers) when
 * 0. queue_cap bounds the ops waiting in each lane. Returns NULL (logged)
 * on failure. */
writer_t *writer_new(const char *location, uint32_t node_id, unsigned queue_cap, unsigned lanes,
                     writer_done_fn done, void *ud);

/* How many lanes it runs. */
unsigned writer_lanes(const writer_t *w);

/* Charges each new message's recipients to its sender's budget (see
 * ratelimit.h): rate recipients a second, up to burst. Call before the
 * first submit; rate <= 0 leaves sends unlimited. Returns 0 or -1. */
int writer_set_rate_limit(writer_t *w, double rate, double burst);

/* Charges each new message's bytes (its body, its cmid twice, and a row's
 * overhead) to its sender's storage budget:
 * bytes_per_day, a quarter of it at once. Over it the send ends
 * STORE_LIMITED with out_limit_kind WRITER_LIMIT_STORAGE (the recipients'
 * budget refuses with WRITER_LIMIT_RECIPIENTS). Call before the first
 * submit; 0 leaves storage unlimited. Returns 0 or -1. */
enum { WRITER_LIMIT_RECIPIENTS = 1, WRITER_LIMIT_STORAGE = 2 };
int writer_set_storage_limit(writer_t *w, double bytes_per_day);

/* A fleet's senders' budgets (spends.h). writer_on_admit: fn(ud, user,
 * recipients, bytes, now_ms) after each send both budgets admitted, on
 * the lane's thread, outside the writer's locks; it must not block (it
 * gathers what to tell the other nodes). Call before the first submit.
 * writer_charge: what user spent on another node, charged to this
 * node's budgets as if spent here (ratelimit_charge). Any thread. */
typedef void (*writer_admit_fn)(void *ud, int64_t user, double recipients, double bytes, int64_t now_ms);
void writer_on_admit(writer_t *w, writer_admit_fn fn, void *ud);
void writer_charge(writer_t *w, int64_t user, double recipients, double bytes, int64_t now_ms);

/* Commit delay: before committing fewer than WRITER_DELAY_BATCH ops, wait
 * this many microseconds for more to join (0, the default: commit at
 * once). Fewer, larger commits cost less CPU per message at moderate
 * load and add up to the delay to each ack; a full batch never waits.
 * Call before the first submit. */
#define WRITER_DELAY_BATCH 64
void writer_set_commit_delay(writer_t *w, unsigned delay_us);

/* The outbox (outbox.h): turns store_set_outbox on in every lane's handle,
 * and after each batch has committed, before its completions, calls
 * committed(ud, ops, n) on the lane's thread with the batch's ops (their
 * out_outbox set). committed must not block. Call before the first
 * submit. Returns 0 or -1. */
typedef void (*writer_committed_fn)(void *ud, const store_op_t *ops, size_t n);
int writer_set_outbox(writer_t *w, writer_committed_fn committed, void *ud);

/* Queues op. Returns 0, or -1 when the queue is full (the caller keeps op
 * and should answer "unavailable"). Any thread. */
int writer_submit(writer_t *w, store_op_t *op);

/* Waits until every op submitted so far is stored and completed. */
void writer_drain(writer_t *w);

/* Drains, stops the thread and frees the writer. Accepts NULL. */
void writer_free(writer_t *w);

typedef struct writer_counts {
	uint64_t commits;          /* transactions, each one fsync */
	uint64_t ops;              /* ops applied */
	uint64_t messages;         /* new messages stored */
	uint64_t receipt_writes;   /* receipt frames that moved a watermark */
	uint64_t limited;          /* sends refused by the recipients' budget */
	uint64_t storage_limited;  /* sends refused by the storage budget */
	uint64_t stored_bytes;     /* message bytes stored */
} writer_counts_t;

/* Counters since start (for /metrics, logs and benchmarks). Any thread. */
void writer_counts(writer_t *w, writer_counts_t *out);

#endif
