/* redis.h - a Redis connection driven by one of our loops.
 *
 * A redis_t is one TCP connection to one Redis server, through hiredis
 * 0.14.1's async API, with its socket registered on a loop_t (loop.h) by
 * an adapter of our own. It connects by itself and, whenever the
 * connection is lost, reconnects with backoff, telling its owner through
 * on_state so that the owner can write its state again (a Redis restarted
 * empty has forgotten it). Replies are parsed by hiredis and handed over
 * as its redisReply.
 *
 * A client is either a command client (redis_command) or a subscriber
 * (redis_subscribe), never both: Redis takes nothing but the SUBSCRIBE
 * family on a subscribed connection. Open two clients for a node that
 * does both.
 *
 * Threads: a client belongs to its loop's thread. Every function here is
 * called there and every callback runs there; other threads reach the
 * client by posting a task to its loop (loop_post).
 *
 * Blocking: nothing here blocks, but for redis_new when the URL's host is a
 * name: it is resolved there, once, with getaddrinfo (which may wait for
 * DNS), and every connection goes to the numeric address found. Give a
 * numeric address, or a name from /etc/hosts such as localhost, to keep
 * redis_new from waiting; a name whose address changes needs a new client.
 * hiredis's own connect then only ever parses a numeric address.
 *
 * Timeouts: hiredis 0.14.1 has no command timeout; this module keeps its
 * own (one timerfd per client). A command unanswered after timeout_ms ends
 * REDIS_STATUS_TIMEOUT and the connection is dropped, because its reply
 * may still come and would then be taken for the next command's; the
 * client reconnects as after any loss. A blocking command (BLPOP, XREAD
 * BLOCK) therefore needs a client whose timeout_ms exceeds its block
 * time. */
#ifndef PARLEY_REDIS_H
#define PARLEY_REDIS_H

#include <stddef.h>

#include <hiredis/hiredis.h>

#include "loop.h"

typedef struct redis redis_t;

typedef enum redis_status {
	REDIS_STATUS_OK,           /* a reply that is not an error */
	REDIS_STATUS_ERROR,        /* Redis answered with an error reply */
	REDIS_STATUS_TIMEOUT,      /* no reply within timeout_ms */
	REDIS_STATUS_DISCONNECTED, /* the connection was lost, or the client freed, first */
} redis_status_t;

/* A command's completion, called exactly once for every command that
 * redis_command accepted (returned 0), never from inside redis_command.
 * reply is hiredis's parsed reply for OK and ERROR (an error reply is
 * reply->type REDIS_REPLY_ERROR with its text in reply->str; errors
 * nested inside an array, as EXEC's, come as OK), and NULL for TIMEOUT
 * and DISCONNECTED. hiredis owns reply and frees it when the callback
 * returns. The callback may issue commands; it must not call redis_free. */
typedef void (*redis_reply_fn)(redis_t *r, void *ud, redis_status_t status, const redisReply *reply);

/* A message published on a subscribed channel. channel is NUL-terminated;
 * msg is len bytes (binary-safe, NUL-terminated too) and valid during the
 * call only. It must not call redis_free. */
typedef void (*redis_message_fn)(redis_t *r, void *ud, const char *channel, const char *msg, size_t len);

/* Called with up = 1 when the client becomes usable (connected, its DB
 * selected, and for a subscriber every subscription confirmed by Redis),
 * and with up = 0 when a connection that was up is lost, after every
 * command pending on it has completed. Calls alternate, starting with
 * up = 1. Not called by redis_free. It may issue commands (when up); it
 * must not call redis_free. */
typedef void (*redis_state_fn)(redis_t *r, void *ud, int up);

#define REDIS_DEFAULT_TIMEOUT_MS 2000
#define REDIS_DEFAULT_MAX_INFLIGHT 16384
#define REDIS_DEFAULT_RECONNECT_MIN_MS 100
#define REDIS_DEFAULT_RECONNECT_MAX_MS 5000

/* All fields may be 0 (or NULL) for their default; opts itself may be
 * NULL. */
typedef struct redis_opts {
	int timeout_ms;          /* a command's reply deadline, and connect + handshake's */
	unsigned max_inflight;   /* commands sent and not yet answered */
	int reconnect_min_ms;    /* first delay after a loss, doubled per failed attempt */
	int reconnect_max_ms;    /* ... up to this; each delay is drawn in [d/2, d] */
	redis_state_fn on_state;
	void *ud;                /* for on_state */
	const char *name;        /* in log lines ("presence"); copied */
} redis_opts_t;

/* Makes a client for url, "redis://HOST[:PORT][/DB]" (PORT 6379 and DB 0
 * by default; HOST a name, an IPv4 address or a bracketed IPv6 one), and
 * starts connecting; on_state(up) says when commands are taken. A server
 * that cannot be reached is not an error here: the client keeps trying.
 * Returns NULL, with a log line that says why, for a malformed URL (or
 * one with credentials, TLS or a Unix socket, which are not supported), a
 * host that does not resolve, or no memory. */
redis_t *redis_new(loop_t *loop, const char *url, const redis_opts_t *opts);

/* Completes every pending command with REDIS_STATUS_DISCONNECTED (their
 * callbacks run before it returns), closes the connection and frees r.
 * Accepts NULL. Not from inside one of r's callbacks, nor from an I/O
 * callback of r's loop (the loop may still hold events of r's descriptors
 * from the same turn): call it from a posted task, a loop hook, or once
 * loop_run has returned; and before loop_free. */
void redis_free(redis_t *r);

/* Sends a command, formatted as hiredis's redisFormatCommand does (%s a C
 * string, %b a pointer and a size_t length: binary-safe, %d and so on),
 * pipelined behind those in flight. cb may be NULL (the reply is then
 * dropped, but the command still counts as in flight and can time out).
 * Returns 0 (cb will be called exactly once, later) or, at once and
 * without calling cb:
 *   -ENOTCONN  the client is not up: connecting, or reconnecting after a
 *              loss (commands do not queue while Redis is away);
 *   -EAGAIN    max_inflight commands are in flight (backpressure: send
 *              again after some replies);
 *   -EINVAL    a malformed format, a subscriber client, or a command that
 *              would change the connection under this module: the
 *              SUBSCRIBE family, MONITOR, SELECT, RESET, HELLO;
 *   -ENOMEM. */
int redis_command(redis_t *r, redis_reply_fn cb, void *ud, const char *fmt, ...);

/* The same with the command's words as argc strings of argvlen[i] bytes
 * each (argvlen NULL: NUL-terminated strings), binary-safe. */
int redis_commandv(redis_t *r, redis_reply_fn cb, void *ud, int argc, const char **argv,
                   const size_t *argvlen);

/* Subscribes to channel for the client's lifetime: at once when up,
 * otherwise at the next connect, and again after every reconnect. Makes
 * r a subscriber. Messages published while the client is down are lost
 * (pub/sub is at-most-once); after on_state(up) every message published
 * on a channel subscribed before it is delivered. Returns 0, -EEXIST
 * (already subscribed to channel), -EINVAL (no channel or fn, or r has
 * commands in flight) or -ENOMEM. No SSUBSCRIBE: hiredis 0.14.1 aborts on
 * its replies. */
int redis_subscribe(redis_t *r, const char *channel, redis_message_fn fn, void *ud);

/* 1 between on_state(up) and on_state(down), else 0. */
int redis_is_up(const redis_t *r);

#endif
