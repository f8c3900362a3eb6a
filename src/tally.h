/* tally.h - receipt counts for the senders of group messages.
 *
 * In a group, a sender does not get a frame per member who received or
 * read its message; it gets "receipts" frames with counts:
 * {"type":"receipts","conv","counts":[{"seq","delivered","read"}]}. The
 * writer marks the seqs whose counts a stored receipt changed; once per
 * interval the tally thread recomputes their counts from the members'
 * watermarks (one read of the group's watermarks per conversation, however
 * many receipts came) and sends each sender one frame per conversation
 * with its own messages' counts. In groups over STORE_RECEIPT_DETAIL_MAX
 * "delivered" is null. */
#ifndef PARLEY_TALLY_H
#define PARLEY_TALLY_H

#include <stdint.h>

#include "server.h"

typedef struct tally tally_t;

/* Starts the tally thread with its own store handle. Returns NULL
 * (logged) on failure. */
tally_t *tally_new(server_t *srv, int interval_ms);

/* The counts of messages lo..hi of group conv may have changed. Any
 * thread; never blocks on the store. */
void tally_mark(tally_t *t, int64_t conv, int64_t lo, int64_t hi);

/* receipts frames sent since start. */
uint64_t tally_frames(tally_t *t);

/* Sends what is marked, stops the thread and frees. Accepts NULL. */
void tally_free(tally_t *t);

#endif
