/* frames.h - encoders for the server's WebSocket frames (docs/protocol.md).
 *
 * Each returns a complete WebSocket text frame in a new sbuf (one reference)
 * ready to queue on any number of connections, or NULL when out of memory.
 * Safe from any thread. */
#ifndef PARLEY_FRAMES_H
#define PARLEY_FRAMES_H

#include <stdint.h>

#include "jbuf.h"
#include "sbuf.h"
#include "store.h"

/* Appends the fields of the protocol's MESSAGE object, "conv" to "ts",
 * without braces: the caller opens the object (and may add fields first). */
void frames_message_json(jbuf_t *b, const store_message_t *m);
/* The additions to it (docs/protocol.md, "Edits, deletes, reactions and
 * replies"): an event's kind and target; a message's reply_to, edited_at,
 * deleted, state_seq and reactions, each only when it has one. */
void frames_message_state_json(jbuf_t *b, const store_message_t *m);

/* Wraps JSON text in a WebSocket text frame. */
sbuf_t *frames_from_json(const jbuf_t *b);

sbuf_t *frames_ready(int64_t user, int64_t device, int64_t server_time);
/* A "msg" frame, labelled with its conv and seq (sbuf.h). */
sbuf_t *frames_msg(const store_message_t *m);
sbuf_t *frames_ack(const char *cmid, int64_t conv, int64_t id, int64_t seq, int64_t ts);
sbuf_t *frames_receipt(int64_t conv, int64_t user, int state, int64_t seq);
/* ref: the refused send's cmid, or NULL. conv: added when not 0. */
sbuf_t *frames_error(const char *code, const char *message, const char *ref, int64_t conv);
/* A group's membership changed: event is "created", "added", "removed",
 * "left" or "admin"; user is who it concerns (0: none), by who did it. */
sbuf_t *frames_members(int64_t conv, const char *event, int64_t user, int64_t by, size_t count);
/* A rate_limited error saying why, with the hint "retry_after_ms"; ref
 * (a refused send's cmid) and conv are left out when NULL and 0. */
sbuf_t *frames_rate_limited(const char *message, const char *ref, int64_t conv, int64_t retry_after_ms);
/* ref_json: the ping's ref as JSON text, or NULL for none. */
sbuf_t *frames_pong(const char *ref_json);

#endif
