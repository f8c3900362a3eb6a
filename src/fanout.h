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
 * the commit and the ack. A group's member list is kept between messages
 * and read again only when the message was stored under a newer
 * membership than the one kept (every change bumps a version). */
#ifndef PARLEY_FANOUT_H
#define PARLEY_FANOUT_H

#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "sbuf.h"

#define FANOUT_QUANTUM 256

typedef struct fanout fanout_t;

typedef struct fanout_member {
	int64_t user, joined_seq;
} fanout_member_t;

/* Reads the members of conv (malloc'd array in *out) and the version of
 * that membership. Called on the fan-out thread only. Returns 0 or -1. */
typedef int (*fanout_lookup_fn)(void *ud, int64_t conv, fanout_member_t **out, size_t *n,
                                int64_t *version);

/* Starts the fan-out thread. max_pending bounds the queued messages.
 * Returns NULL (logged) on failure. */
fanout_t *fanout_new(bus_t *bus, size_t max_pending, fanout_lookup_fn lookup, void *ud);

/* Queues frame for every recipient, all their devices but except_device
 * of except_user. The recipients are members[0..n) when members is not
 * NULL (taken over, malloc'd); else the members who joined before seq, in
 * a membership at least as new as version. Takes over one reference to
 * frame. May wait for room. Any thread. */
void fanout_submit(fanout_t *f, int64_t conv, int64_t seq, int64_t version, sbuf_t *frame,
                   int64_t *members, size_t n, int64_t except_user, int64_t except_device);

/* fanout_submit, delivering on the nodes scope names (bus.h's
 * bus_deliver_scoped), and calling done(done_ud) (when not NULL) on the
 * fan-out thread once every recipient has been handed to the bus (or the
 * job could not be queued: then at once, on the caller's thread). */
typedef void (*fanout_done_fn)(void *ud);
void fanout_submit_scoped(fanout_t *f, int64_t conv, int64_t seq, int64_t version, sbuf_t *frame,
                          int64_t *members, size_t n, int64_t except_user, int64_t except_device,
                          int32_t scope, fanout_done_fn done, void *done_ud);

/* Waits until everything queued so far is delivered. */
void fanout_drain(fanout_t *f);

/* Delivers what is queued, stops the thread and frees. Accepts NULL. */
void fanout_free(fanout_t *f);

/* Recipients delivered since start. */
uint64_t fanout_delivered(fanout_t *f);

#endif
