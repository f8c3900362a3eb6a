/* presence.h - who is online, away or offline, who watches whom, and who
 * is typing where. None of it lives in the message store: who is
 * connected where is the bus's registry (in memory on one node, Redis in a
 * fleet), and this module makes of it what watchers see; only last_seen
 * is written, lazily, so that it survives a restart.
 *
 * A user is online while one of its WebSockets is connected and not away,
 * away while all of them are away, and offline once the last one has been
 * closed for the grace period: a phone flapping between networks does not
 * flood its watchers. A change goes only to the connections that watch
 * the user (at most 500 users per connection), never to contacts that are
 * not looking.
 *
 * Typing is relayed to the other members' devices at most once per
 * PRESENCE_TYPING_RELAY_MS per user and conversation, ends
 * PRESENCE_TYPING_TTL_MS after the last "on", and at once when the
 * typist's last connection closes.
 *
 * Every function is safe from any thread. */
#ifndef PARLEY_PRESENCE_H
#define PARLEY_PRESENCE_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

#define PRESENCE_WATCH_MAX 500
#define PRESENCE_TYPING_TTL_MS 6000
#define PRESENCE_TYPING_RELAY_MS 2000
#define PRESENCE_ANNOUNCE_MS 1000   /* a user's changes: at most one a second */

typedef struct presence presence_t;

/* Starts the presence ticker (offline debounce, typing expiry, last_seen
 * writes) with a store handle of its own. NULL (logged) on failure. */
presence_t *presence_new(server_t *srv, int grace_ms);
/* Records every connected user as last seen now, stops, frees. */
void presence_free(presence_t *p);

/* A WebSocket of user has closed (the bus has been told): its typing ends
 * with its last connection on this node, and it was last seen now. */
void presence_disconnected(presence_t *p, int64_t user);
/* Connection conn of user says it is away (1) or back online (0). */
void presence_away(presence_t *p, int64_t user, uint64_t conn, int away);
/* The bus's report of a user this module subscribed to (the bus sink's
 * presence callback, bus.h). */
void presence_on_state(presence_t *p, int64_t user, int state, int64_t last_seen, uint64_t version);

/* A generation that moves with every block and departure. A worker reads
 * it before it checks the store and hands it with its answer, which is
 * then filtered by what was blocked or left since. */
uint64_t presence_gen(presence_t *p);

/* Connection conn of user watcher now watches users[0..n) instead of
 * old[0..nold): each was checked, under generation gen, to show watcher
 * its presence (store_watchable), and stored_last_seen[i] is its
 * last_seen in the store; one that has blocked watcher since is left out.
 * Answers with one presence frame per user. */
void presence_watch(presence_t *p, uint64_t gen, uint64_t conn, int64_t watcher, const int64_t *old,
                    size_t nold, const int64_t *users, const int64_t *stored_last_seen, size_t n);
/* Connection conn closed: it watches nobody any more. */
void presence_unwatch(presence_t *p, uint64_t conn, const int64_t *users, size_t n);

/* user typed (on) or stopped in conv, whose other members are members[]
 * (taken over, malloc'd), read under generation gen; those who left or
 * were blocked (either way) since hear nothing. */
void presence_typing(presence_t *p, uint64_t gen, int64_t user, int64_t conv, int on, int64_t *members,
                     size_t n);

/* user has blocked other: other's watches of user end now, and neither
 * is told of the other's typing any more. */
void presence_forbid(presence_t *p, int64_t user, int64_t other);
/* user is no longer a member of conv, whose members are now members[0..n):
 * typing there reaches it no more (and its own typing there ends). */
void presence_left(presence_t *p, int64_t conv, int64_t user, const int64_t *members, size_t n);

#endif
