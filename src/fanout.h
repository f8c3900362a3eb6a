/* fanout.h - delivery of group messages, off the writer's thread.
 *
 * The writer commits and acks; handing a message to 1,024 members' devices
 * is queued here so that neither the sender's ack nor the next commit
 * waits for it. The queue is fair: each conversation with work gets a turn
 * of FANOUT_QUANTUM recipients in rotation, so a burst into one big group
 * delays a small group's message by at most one turn per busy
 * conversation, not by the whole burst. A conversation's messages are
 * delivered in the order submitted. The queue is bounded in recipients;
 * a submitter waits for room (back-pressure reaches the writer, and so the
 * acks), rather than memory growing without limit. */
#ifndef PARLEY_FANOUT_H
#define PARLEY_FANOUT_H

#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "sbuf.h"

#define FANOUT_QUANTUM 256

typedef struct fanout fanout_t;

/* Starts the fan-out thread. max_pending bounds the queued recipients.
 * Returns NULL (logged) on failure. */
fanout_t *fanout_new(bus_t *bus, size_t max_pending);

/* Queues frame for every user in members[0..n), all their devices but
 * except_device of except_user. Takes over members (malloc'd) and one
 * reference to frame. May wait for room. Any thread. */
void fanout_submit(fanout_t *f, int64_t conv, sbuf_t *frame, int64_t *members, size_t n,
                   int64_t except_user, int64_t except_device);

/* Waits until everything queued so far is delivered. */
void fanout_drain(fanout_t *f);

/* Delivers what is queued, stops the thread and frees. Accepts NULL. */
void fanout_free(fanout_t *f);

/* Recipients delivered since start. */
uint64_t fanout_delivered(fanout_t *f);

#endif
