/* push.h - the push path: waking the devices of users a message did not
 * reach live, through APNs, FCM and the browsers' Web Push services.
 *
 * A path of its own. The real-time path tells it what happened
 * (push_message, push_receipt) and never waits: both only copy the event
 * into a bounded queue under a short lock, and drop it (counted) when the
 * queue is full. Everything after runs on the push path's own threads:
 * one scheduler, which decides what to push and when, and a few senders,
 * each with its own store handle and libcurl handle, which read what a
 * notification shows and make the providers' HTTP/2 calls. A provider
 * that hangs or fails fills this path's bounded queues, never the
 * writer's, the fan-out's or an event loop's.
 *
 * When to push. Per (user, conversation) the scheduler keeps one pending
 * notification. A message for a user with no connection waits
 * PUSH config coalesce_ms for more of its conversation (a burst is one
 * notification, showing the newest and the count); for a user with a
 * connection, grace_ms for one of its devices to say it delivered the
 * message (a receipt), and is pushed only if none did. A read on one
 * device clears the conversation's shown notification on the user's
 * other devices (a silent push that the app or service worker acts on).
 * Pushes go to each of the user's push targets whose device was used
 * within device_idle_ms; a notification carries the sender, the
 * conversation's title (groups), the start of the newest message and the
 * user's unread count (the badge), and is collapsed per conversation on
 * the device (APNs collapse id, FCM collapse key and tag, Web Push topic).
 *
 * Failures. A send with no answer, a 5xx or a 429 is tried again after an
 * exponential backoff with jitter, or after the provider's Retry-After
 * when it gave one, up to max_attempts; then it is dead-lettered
 * (counted, logged). A target the provider calls invalid (APNs 410 or
 * BadDeviceToken, FCM UNREGISTERED, Web Push 404/410) is deleted from the
 * store at once. Each provider has at most provider_concurrency sends in
 * flight and, with provider_rate, at most that many a second, so one slow
 * provider holds at most its share of the senders.
 *
 * What it knows of pending notifications is in memory, but the store can
 * tell what was owed: a notification's sends, once all are done, raise
 * the member's pushed watermark (store_push_mark), and a push path that
 * starts schedules again what the last hour's messages still owe
 * (store_push_pending, recover_ms): delivered to no device, read on none,
 * not muted, not pushed. So a stop or a crash loses no notification the
 * store can tell was owed, and a job about a seq already pushed is not
 * sent again. What is lost is the memory of what each device shows: a
 * read after a restart clears no notification shown before it. */
#ifndef PARLEY_PUSH_H
#define PARLEY_PUSH_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#define PUSH_PREVIEW_MAX 120  /* bytes of a message shown in its notification */

enum { PUSH_WEBPUSH = 0, PUSH_APNS = 1, PUSH_FCM = 2, PUSH_PROVIDERS = 3 };

/* Why a send failed, for the counters (a fixed set: bounded labels). */
enum {
	PUSH_FAIL_UNREACHABLE = 0, /* no answer: connection, TLS, timeout */
	PUSH_FAIL_RATE_LIMITED,    /* 429 */
	PUSH_FAIL_SERVER,          /* 5xx */
	PUSH_FAIL_AUTH,            /* the provider refused our credentials */
	PUSH_FAIL_INVALID_TOKEN,   /* the target is gone: deleted */
	PUSH_FAIL_REJECTED,        /* any other refusal (400, 403, 413): not retried */
	PUSH_FAIL_NOT_CONFIGURED,  /* a target of a provider this server has no credentials for */
	PUSH_FAIL_REASONS
};

typedef struct push push_t;

typedef struct push_config {
	const char *store_at;          /* store_open's location, once per sender */
	unsigned senders;              /* sender threads; 0: 4 */
	unsigned provider_concurrency; /* a provider's sends in flight; 0: 2 */
	double provider_rate;          /* a provider's sends a second; 0: no limit */
	size_t max_events;             /* events queued from the real-time path; 0: 16384 */
	size_t max_notes;              /* (user, conversation) notifications kept; 0: 100000 */
	size_t max_sends;              /* sends queued and waiting to retry; 0: 65536 */
	int grace_ms;                  /* a connected user's devices have this long to deliver */
	int coalesce_ms;               /* an unconnected user's message waits this long for more */
	int max_attempts;              /* tries of one send; 0: 6 */
	long timeout_ms;               /* one provider exchange; 0: 10000 */
	int64_t device_idle_ms;        /* targets of devices unused this long are skipped; 0: none */
	/* Web Push: the VAPID key (borrowed) and contact ("mailto:" or "https:", copied) */
	EVP_PKEY *vapid_key;
	const char *vapid_public;
	const char *contact;
	int allow_local;               /* --push-allow-http-endpoints */
	/* APNs: the .p8 key file, its key id and team id ("": APNs off) */
	const char *apns_key_file, *apns_key_id, *apns_team_id;
	const char *apns_url, *apns_sandbox_url; /* NULL: Apple's */
	/* FCM: the service account's key file ("": FCM off) */
	const char *fcm_account_file;
	const char *fcm_url;           /* NULL: Google's */
	/* Whether user holds a connection now (any thread; must not block).
	 * NULL where that is not known (the push service of a fleet): every
	 * recipient's devices then have grace_ms to deliver. */
	int (*connected)(void *ud, int64_t user);
	void *connected_ud;
	/* At the start, the notifications owed for messages of the last
	 * recover_ms (0: none looked for) are scheduled again: those a push
	 * path that stopped had not made (store_push_pending). accept, when
	 * not NULL, says which conversations are this push path's (a shard
	 * of the log's partitions). */
	int64_t recover_ms;
	int (*accept)(void *ud, int64_t conv);
	void *accept_ud;
} push_config_t;

/* Starts the push path: reads the providers' credentials (a file that
 * does not parse is an error: NULL, logged) and starts its threads. */
push_t *push_new(const push_config_t *cfg);

/* Stops the threads (a send in flight finishes or times out) and frees;
 * what is still queued is dropped, and logged. NULL is fine. */
void push_free(push_t *p);

/* A message was stored: seq in conv (STORE_DIRECT or STORE_GROUP kind)
 * from `from`, with its body (only its start is kept). members: a direct
 * chat's members (copied), or NULL for a group's, which the push path
 * reads itself (members who joined before seq, in a membership at least
 * as new as members_version). Never blocks. 0 when queued, -1 when the
 * queue was full (the event is dropped, counted). */
int push_message(push_t *p, int64_t conv, int kind, int64_t seq, int64_t from, const int64_t *members, size_t n,
                 int64_t members_version, const char *body, size_t len, int64_t ts);

/* user's device `device` delivered (STORE_DELIVERED) or read
 * (STORE_READ) everything up to seq in conv. Never blocks; 0 or -1 as
 * push_message. */
int push_receipt(push_t *p, int64_t conv, int64_t user, int64_t device, int state, int64_t seq);

typedef struct push_counts {
	uint64_t events_dropped;        /* the event queue was full */
	uint64_t notes_dropped;         /* recipients not kept: --max notes pending or shown */
	uint64_t notifications;         /* notifications decided (one per user and burst) */
	uint64_t suppressed;            /* delivered or read within the grace: no push */
	uint64_t muted;                 /* the conversation was muted: no push */
	uint64_t repeats;               /* pushed already (before a restart): not again */
	uint64_t recovered;             /* notifications a start found owed (push config recover_ms) */
	uint64_t clears;                /* clear pushes decided (a read on another device) */
	uint64_t no_targets;            /* notifications for users with no usable target */
	uint64_t sends_dropped;         /* the send queue was full */
	size_t events_queued, notes, sends_queued; /* now */
	struct {
		uint64_t sent, retries, dead_letter, removed;
		uint64_t failures[PUSH_FAIL_REASONS];
		double latency_sum;         /* seconds, of the sends that got an answer */
		uint64_t latency_count;
		unsigned in_flight;
	} provider[PUSH_PROVIDERS];
} push_counts_t;

void push_counts(push_t *p, push_counts_t *out);

/* Names for the counters' labels. */
const char *push_provider_name(int provider);
const char *push_fail_name(int reason);

#endif
