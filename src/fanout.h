/* fanout.h - delivery of group messages, off the writer's thread.
 *
 * The writer commits and acks; handing a message to 1,024 members' devices
 * is queued here so that neither the sender's ack nor the next commit
 * waits for it. The queue is fair: each conversation with work gets a turn
 * of FANOUT_QUANTUM recipients in rotation, so a burst into one big group
 * delays a small group's message by at most one turn per busy
 * conversation, not by the whole burst. A conversation's messages are
 * delivered in the order submitted. The queue is bounded in messages; a
 * submitter waits for room (back-pressure reaches the writer, and so the
 * acks), rather than memory growing without limit.
 *
 * The recipients of a group message are looked up here, when its turn
 * comes, not by the writer: reading 1,024 members is then off the path of
 * the commit and the ack. */
#ifndef PARLEY_FANOUT_H
#define PARLEY_FANOUT_H

#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "sbuf.h"

#define FANOUT_QUANTUM 256

typedef struct fanout fanout_t;

/* Looks up who should get message seq of conv: a malloc'd array of user
 * ids in *ids. Called on the fan-out thread only. Returns 0 or -1. */
typedef int (*fanout_lookup_fn)(void *ud, int64_t conv, int64_t seq, int64_t **ids, size_t *n);

/* Starts the fan-out thread. max_pending bounds the queued messages.
 * Returns NULL (logged) on failure. */
fanout_t *fanout_new(bus_t *bus, size_t max_pending, fanout_lookup_fn lookup, void *ud);

/* Queues frame for every recipient, all their devices but except_device
 * of except_user. The recipients are members[0..n) when members is not
 * NULL (taken over, malloc'd), else looked up when the message's turn
 * comes. Takes over one reference to frame. May wait for room. Any
 * thread. */
void fanout_submit(fanout_t *f, int64_t conv, int64_t seq, sbuf_t *frame, int64_t *members,
                   size_t n, int64_t except_user, int64_t except_device);

/* Waits until everything queued so far is delivered. */
void fanout_drain(fanout_t *f);

/* Delivers what is queued, stops the thread and frees. Accepts NULL. */
void fanout_free(fanout_t *f);

/* Recipients delivered since start. */
uint64_t fanout_delivered(fanout_t *f);

#endif
