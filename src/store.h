/* store.h - the durable store: users, devices, conversations, messages and
 * receipt watermarks, behind one interface.
 *
 * This is the first of Parley's two seams for scale-out. The gateway and the
 * message logic call only the functions below; the backend (SQLite,
 * store_sqlite.c, or PostgreSQL, store_pg.c) sits behind the vtable. Every call
 * blocks on disk or network, so none is ever made from an I/O thread: only
 * the worker pool (workers.h) and the group-commit writer (writer.h) hold a
 * store handle, one handle per thread.
 *
 * Returns: STORE_OK (0) or a negative STORE_* code. Strings and arrays handed
 * out are malloc'd and owned by the caller; free them with the *_free helpers
 * at the end of this file. */
#ifndef PARLEY_STORE_H
#define PARLEY_STORE_H

#include <stddef.h>
#include <stdint.h>

enum {
	STORE_OK = 0,
	STORE_NOT_FOUND = -1,
	STORE_EXISTS = -2,     /* unique name taken; or a send already stored */
	STORE_FORBIDDEN = -3,  /* not a member (or no such conversation) */
	STORE_ERROR = -4,      /* the backend failed; logged where it happened */
	STORE_FULL = -5,       /* a group at its member limit */
	STORE_NOT_GROUP = -6,  /* a group operation on a direct conversation */
	STORE_LIMITED = -7,    /* a send refused by its admission check */
	STORE_BLOCKED = -8,    /* a direct chat with a block in it takes no messages */
	STORE_TOO_MANY = -9,   /* a user already in the most conversations allowed */
	STORE_DENIED = -10,    /* an event on a message the sender may not change */
	STORE_EXPIRED = -11,   /* an edit after its window */
	STORE_GONE = -12,      /* an event on a deleted message (or hidden from a member) */
};

enum { STORE_DIRECT = 1, STORE_GROUP = 2 };
/* Who may add a user to groups. */
enum { STORE_ADDS_EVERYONE = 0, STORE_ADDS_CONTACTS = 1 };
enum { STORE_DELIVERED = 1, STORE_READ = 2 };

#define STORE_USERNAME_MAX 32
#define STORE_GROUP_MAX 1024   /* members of a group, its creator included */
/* Groups larger than this keep no "delivered" watermark and no per-member
 * receipt detail: only read watermarks, and counts derived from them. */
#define STORE_RECEIPT_DETAIL_MAX 256
/* Per-member receipt detail (when each member received and read each
 * message) is kept this long, then expires. */
#define STORE_RECEIPT_DETAIL_DAYS 90
#define STORE_TOKEN_HASH_LEN 32

typedef struct store store_t;

/* What a row of a conversation's stream is. A message (STORE_MSG_TEXT)
 * is what people wrote; the others are events about one earlier message
 * of the same conversation, its target: each takes the next seq like a
 * message, so resume and history carry them with nothing new to catch
 * up on, and the target row itself holds the state they leave (its text
 * as last edited, deleted or not, its reactions). */
enum {
	STORE_MSG_TEXT = 0,
	STORE_MSG_EDIT = 1,     /* body: the target's new text */
	STORE_MSG_DELETE = 2,   /* body: "" — the target's text is gone */
	STORE_MSG_REACTION = 3, /* body: the sender's emoji on the target, "" to take it back */
};
#define STORE_EMOJI_MAX 32     /* bytes of one reaction */

typedef struct store_message {
	int64_t conv, id, seq, from, ts;
	char *cmid;
	char *body;
	size_t body_len;
	int kind;               /* STORE_MSG_* */
	/* An event: the seq of the message it is about. A message: the seq of
	 * the one it replies to, 0 when none. */
	int64_t target;
	/* A message's state, the events so far applied (all 0/NULL for an
	 * event row, or for a message none has touched). */
	int64_t edited_at;      /* the time of its last edit */
	int deleted;            /* deleted for everyone: body is "" */
	int64_t state_seq;      /* the seq of the newest event applied to it */
	char *reactions;        /* JSON [{"emoji","users":[id…]}…], NULL when none */
	/* A reply: its target as the reader may see it (quote_from 0: not
	 * shown — from before the reader joined, or not read). quote_body is
	 * NULL when the target was deleted. */
	int64_t quote_from;
	char *quote_body;
	size_t quote_len;
} store_message_t;

typedef struct store_conv {
	int64_t id;
	int kind;
	char *title;            /* NULL when none */
	int64_t *members;       /* every member, ascending */
	size_t nmembers;
	int64_t *admins;        /* a group's admins, ascending */
	size_t nadmins;
	int64_t last_seq;
	int64_t read_seq;       /* the caller's own read watermark */
	int64_t unread;         /* messages after read_seq sent by others */
	store_message_t *last_message; /* NULL when the conversation is empty */
	int wrote;              /* the caller has written in it */
	int blocked;            /* direct: the caller has blocked the other member */
	int muted;              /* the caller's pushes of it are silent */
	int64_t delivered_seq;  /* the caller's delivered watermark (any device) */
	int64_t pushed_seq;     /* the newest seq a push to the caller showed */
	int64_t activity;       /* the list's order (with id): what a cursor names */
} store_conv_t;

/* Where a page of the conversation list ends: the next page starts after
 * the conversation with this (activity, id). */
typedef struct store_conv_cursor {
	int64_t activity, id;
} store_conv_cursor_t;

/* What one user is to another. "Wrote" is what makes a contact: a user's
 * contacts are the people it has written to in a direct chat. */
typedef struct store_contact {
	int64_t direct;         /* their direct conversation; 0 when none */
	int i_wrote;            /* user has written to other in it */
	int they_wrote;         /* other has written to user in it */
	int i_blocked;          /* user has blocked other */
	int they_blocked;       /* other has blocked user */
} store_contact_t;

typedef struct store_settings {
	int group_adds;         /* STORE_ADDS_* */
	int strangers_exempt;   /* an operator lifted the first-contact budget */
	int push_previews;      /* push notifications may show the text */
} store_settings_t;

typedef struct store_block {
	int64_t user_id, created_at;
} store_block_t;

typedef struct store_device {
	int64_t id;
	char name[65];
	int64_t created_at, last_used;
} store_device_t;

/* Where a device is woken while it holds no connection (push.h, later):
 * one target per device and platform. Strings are malloc'd (freed by
 * store_push_targets_free); "" where a platform has none. */
enum { STORE_PUSH_APNS = 1, STORE_PUSH_FCM = 2, STORE_PUSH_WEBPUSH = 3 };
typedef struct store_push_target {
	int64_t id, user, device;
	int platform;           /* STORE_PUSH_* */
	char *address;          /* APNs device token (hex), FCM registration token, Web Push endpoint */
	char *topic;            /* APNs: the app's bundle id */
	int sandbox;            /* APNs: its development environment */
	char *p256dh, *auth;    /* Web Push: the subscription's keys, base64url */
	int64_t created_at;
} store_push_target_t;

/* Full-text search (store_search). A query is at most
 * STORE_SEARCH_TERMS_MAX words, each at most STORE_SEARCH_TERM_MAX bytes
 * of word characters only (letters and digits, UTF-8): the caller made
 * them from what the user typed (search.h), so no engine's query syntax
 * ever sees the user's text. In a snippet, each word found is between
 * STORE_MARK_ON and STORE_MARK_OFF. */
#define STORE_SEARCH_TERMS_MAX 8
#define STORE_SEARCH_TERM_MAX 64
#define STORE_MARK_ON '\x02'
#define STORE_MARK_OFF '\x03'

typedef struct store_search_hit {
	store_message_t msg;    /* msg.conv: its conversation */
	char *snippet;          /* part of the body around what was found */
	size_t snippet_len;
} store_search_hit_t;

/* A member whose conversation's newest message (from someone else) has
 * reached none of its devices nor been pushed to them: what the push
 * path recovers at its start. body is malloc'd. */
typedef struct store_push_pending {
	int64_t conv, user, seq, from, ts;
	int kind;               /* STORE_DIRECT, STORE_GROUP */
	char *body;
	size_t body_len;
} store_push_pending_t;

typedef struct store_receipt {
	int64_t user_id;
	int64_t delivered_at;   /* Unix ms, 0 when not yet */
	int64_t read_at;
} store_receipt_t;

typedef struct store_watermark {
	int64_t user_id;
	int64_t joined_seq, delivered_seq, read_seq;
} store_watermark_t;

typedef struct store_member {
	int64_t user_id, joined_seq;
} store_member_t;

typedef struct store_sent {
	int64_t seq, sender;
} store_sent_t;

typedef struct store_head {
	int64_t conv;
	int64_t last_seq;
} store_head_t;

/* A write of the message hot path, applied by store_apply in one
 * transaction together with every other op of its batch. */
enum { STORE_OP_SEND = 1, STORE_OP_RECEIPT = 2 };

typedef struct store_op store_op_t;

/* Asked, inside the transaction, before a new message is stored, with the
 * number of members it will reach. Returns 0 to store it, or a positive
 * number of milliseconds after which to retry (the op then ends
 * STORE_LIMITED with out_retry_ms, and nothing is stored). */
typedef int64_t (*store_admit_fn)(void *ud, store_op_t *op, size_t recipients);

struct store_op {
	int kind;
	int64_t user, device, conv;
	/* SEND */
	const char *cmid;
	const char *body;
	size_t body_len;
	int msg_kind;           /* STORE_MSG_*: a message, or an event about target */
	int64_t target;         /* an event's target; a message's reply_to (0: none) */
	int64_t edit_window_ms; /* STORE_MSG_EDIT: how long after its message an edit may come */
	int64_t new_id;         /* the id a new message gets; its time is ts */
	store_admit_fn admit;   /* NULL: always admitted */
	void *admit_ud;
	int64_t out_retry_ms;   /* STORE_LIMITED: when to try again */
	int out_limit_kind;     /* STORE_LIMITED: which budget (the admit hook's own code) */
	int out_blocked_by_me;  /* STORE_BLOCKED: the sender blocked the other, not the reverse */
	/* RECEIPT */
	int state;              /* STORE_DELIVERED or STORE_READ */
	int64_t seq;            /* in: the watermark asked for */
	int64_t now_ms;
	/* Results. status: STORE_OK; STORE_EXISTS for a repeated send (id, seq
	 * and ts are then the stored ones); STORE_FORBIDDEN; STORE_ERROR. An
	 * event (or a reply) whose target is not a message the sender may see:
	 * STORE_NOT_FOUND; one the sender may not change (not its author, nor
	 * for a delete a group's admin): STORE_DENIED; an edit past its window
	 * STORE_EXPIRED; a target deleted, or an edit of a message someone now
	 * in the group has not seen (it joined after): STORE_GONE. */
	int status;
	int64_t out_id, out_seq, out_ts;
	int applied;            /* RECEIPT: the watermark moved (to out_seq) */
	int64_t out_prev;       /* RECEIPT: ... from this one */
	int conv_kind;
	int64_t out_members_version; /* SEND: the membership it was stored under */
	int64_t *members;       /* on STORE_OK in a direct chat: both members;
	                           free with store_op_release */
	size_t nmembers;
	/* With the handle's outbox on (store_set_outbox): the id of the outbox
	 * row written in the same transaction for a stored message (STORE_OK)
	 * or a receipt that moved a watermark (applied); 0 when none. */
	int64_t out_outbox;
};

/* What the log is told happened: one row of the outbox, written in the
 * transaction of the write it describes, deleted once its event is on the
 * log. A message row names the messages row; take joins it, so a body is
 * written once per send, not twice. */
enum { STORE_EVENT_MESSAGE = 1, STORE_EVENT_DELIVERED = 2, STORE_EVENT_READ = 3 };

typedef struct store_outbox {
	int64_t id;
	int64_t conv;
	int kind;               /* STORE_EVENT_* */
	int64_t seq;            /* the message's seq, or the watermark */
	int64_t user;           /* the sender, or the receipt's member */
	int64_t created_at;     /* Unix ms: the write's now_ms */
	/* STORE_EVENT_MESSAGE: the message (msg.body NULL when its row has
	 * gone, which only an outside delete does). */
	store_message_t msg;
	/* What the commit path knows and the row does not keep, for the
	 * log's dispatchers (dispatch.h); a row read by outbox_take has none
	 * (zeros): conv_kind STORE_DIRECT or STORE_GROUP (0: not known);
	 * a group message's members_version; a direct message's members
	 * (malloc'd, store_outbox_free frees them); a receipt's prev, the
	 * watermark it moved from (-1: not known); a direct receipt's
	 * members too, and a receipt's reading device (0: not known) and the
	 * node that committed it (-1: not known), so that its dispatcher can
	 * reach everyone that node's own delivery did not. */
	int conv_kind;
	int64_t members_version;
	int64_t *members;
	size_t nmembers;
	int64_t prev;
	int64_t device;
	int32_t node;
} store_outbox_t;

typedef struct store_vtab {
	void (*close)(store_t *s);
	int (*user_create)(store_t *s, const char *username, const char *pwhash,
	                   int64_t now_ms, int64_t *user_id);
	int (*user_by_name)(store_t *s, const char *username, int64_t *user_id, char **pwhash);
	int (*user_by_id)(store_t *s, int64_t user_id, char username[STORE_USERNAME_MAX + 1]);
	int (*device_create)(store_t *s, int64_t user_id, const char *name,
	                     const uint8_t token_hash[STORE_TOKEN_HASH_LEN], int64_t now_ms,
	                     unsigned max_devices, int64_t *device_id, int64_t *evicted);
	int (*device_by_token)(store_t *s, const uint8_t token_hash[STORE_TOKEN_HASH_LEN],
	                       int64_t now_ms, int64_t idle_ms, int64_t *user_id, int64_t *device_id);
	int (*device_delete)(store_t *s, int64_t user_id, int64_t device_id);
	int (*devices)(store_t *s, int64_t user_id, int64_t used_since_ms, store_device_t **out,
	               size_t *n);
	int (*push_target_put)(store_t *s, const store_push_target_t *t, int64_t now_ms, int64_t *id);
	int (*push_targets)(store_t *s, int64_t user_id, store_push_target_t **out, size_t *n);
	int (*push_target_delete)(store_t *s, int64_t user_id, int64_t id);
	int (*server_key_get)(store_t *s, const char *name, char **value);
	int (*server_key_add)(store_t *s, const char *name, const char *value);
	int (*direct_open)(store_t *s, int64_t user_a, int64_t user_b, int64_t now_ms,
	                   unsigned max_convs, int64_t *conv_id, int *created, int64_t *full);
	int (*conv_get)(store_t *s, int64_t conv_id, int64_t user_id, store_conv_t *out);
	int (*conv_list)(store_t *s, int64_t user_id, const store_conv_cursor_t *after, size_t limit,
	                 store_conv_t **out, size_t *n, int *has_more);
	int (*history)(store_t *s, int64_t conv_id, int64_t user_id, int64_t before, int limit,
	               size_t max_bytes, store_message_t **out, size_t *n, int *has_more);
	int (*receipts)(store_t *s, int64_t conv_id, int64_t user_id, int64_t seq, int64_t now_ms,
	                store_receipt_t **out, size_t *n);
	int (*watchable)(store_t *s, int64_t user_id, int64_t candidate, int64_t *last_seen);
	int (*shares_conversation)(store_t *s, int64_t user_id, int64_t other);
	int (*contact)(store_t *s, int64_t user_id, int64_t other, store_contact_t *out);
	int (*settings_get)(store_t *s, int64_t user_id, store_settings_t *out);
	int (*set_group_adds)(store_t *s, int64_t user_id, int group_adds);
	int (*set_strangers_exempt)(store_t *s, int64_t user_id, int exempt);
	int (*set_push_previews)(store_t *s, int64_t user_id, int on);
	int (*set_muted)(store_t *s, int64_t conv_id, int64_t user_id, int on);
	int (*block)(store_t *s, int64_t user_id, int64_t target, int64_t now_ms);
	int (*unblock)(store_t *s, int64_t user_id, int64_t target);
	int (*blocks)(store_t *s, int64_t user_id, int64_t after, size_t limit, store_block_t **out,
	              size_t *n, int *has_more);
	int (*blocked_in_conv)(store_t *s, int64_t user_id, int64_t conv_id, int64_t **ids, size_t *n);
	int (*blocks_received)(store_t *s, int64_t user_id, int64_t since_ms, int64_t *count);
	int (*first_contacts)(store_t *s, int64_t user_id, int64_t since_ms, int64_t *count);
	int (*first_contact_at)(store_t *s, int64_t user_id, int64_t since_ms, int64_t nth, int64_t *ts);
	int (*first_contacts_add)(store_t *s, int64_t user_id, const int64_t *targets, size_t n,
	                          int64_t now_ms);
	int (*expire_first_contacts)(store_t *s, int64_t before_ms, size_t max_rows, size_t *deleted);
	int (*last_seen_set)(store_t *s, const int64_t *users, const int64_t *times, size_t n);
	int (*expire_receipts)(store_t *s, int64_t before_ms, size_t max_rows, size_t *deleted);
	int (*watermarks)(store_t *s, int64_t conv_id, store_watermark_t **out, size_t *n);
	int (*senders)(store_t *s, int64_t conv_id, int64_t lo, int64_t hi, store_sent_t **out,
	               size_t *n);
	int (*read_count)(store_t *s, int64_t conv_id, int64_t user_id, int64_t seq, int64_t *count);
	int (*member_head)(store_t *s, int64_t conv_id, int64_t user_id, int64_t *last_seq,
	                   int64_t *joined_seq);
	int (*unread_total)(store_t *s, int64_t user_id, int64_t cap, int64_t *total);
	int (*push_mark)(store_t *s, int64_t conv_id, int64_t user_id, int64_t seq);
	int (*push_pending)(store_t *s, int64_t since_id, size_t limit, store_push_pending_t **out, size_t *n);
	int (*search)(store_t *s, int64_t user_id, int64_t conv_id, const char *const *terms, size_t nterms,
	              size_t offset, size_t limit, store_search_hit_t **out, size_t *n, int *has_more);
	int (*members)(store_t *s, int64_t conv_id, int64_t **ids, size_t *n);
	int (*member_list)(store_t *s, int64_t conv_id, store_member_t **out, size_t *n,
	                   int64_t *version);
	int (*group_create)(store_t *s, int64_t creator, const int64_t *others, size_t n,
	                    const char *title, int64_t now_ms, unsigned max_convs, int64_t *conv_id,
	                    int64_t *full);
	int (*member_add)(store_t *s, int64_t conv_id, int64_t actor, int64_t user_id,
	                  int64_t now_ms, unsigned max_convs, int64_t *full);
	int (*member_remove)(store_t *s, int64_t conv_id, int64_t actor, int64_t user_id,
	                     int64_t *promoted);
	int (*heads)(store_t *s, int64_t user_id, store_head_t **out, size_t *n);
	int (*replay)(store_t *s, int64_t conv_id, int64_t joined, int64_t after, int64_t upto,
	              size_t max_count, size_t max_bytes, store_message_t **out, size_t *n);
	int (*apply)(store_t *s, store_op_t *ops, size_t n);
	int (*set_outbox)(store_t *s, int on);
	int (*set_lazy_commit)(store_t *s, int on);
	int (*outbox_take)(store_t *s, int64_t now_ms, int64_t age_ms, size_t max_rows,
	                   store_outbox_t **out, size_t *n);
	int (*outbox_delete)(store_t *s, const int64_t *ids, size_t n);
} store_vtab_t;

struct store {
	const store_vtab_t *vt;
};

/* A store's location, as the command line names it (--data, --store): a
 * directory for the embedded SQLite store ("DIR" or "sqlite:DIR"), or a
 * libpq URI for PostgreSQL ("postgresql://USER@HOST:PORT/DB"). The
 * backend is chosen by its form (store.c keeps the table).
 *
 * Opens a handle on the store at location. Returns NULL and logs why on
 * failure. One handle per thread. */
store_t *store_open(const char *location);

/* A node's hold on its store while it serves: taken once, before any
 * handle is opened, and released at exit. The embedded store creates its
 * directory and locks it, so that two nodes never share one file; every
 * backend brings the schema up to date or refuses (a newer version than
 * this binary knows, no permission), saying why. NULL (logged) when the
 * store cannot be served. */
typedef struct store_claim store_claim_t;
store_claim_t *store_claim(const char *location);
/* NULL is fine. */
void store_release(store_claim_t *claim);

/* Brings the schema at location up to this binary's version without
 * serving it (`parley migrate`). Returns 0 with the versions before and
 * after, or -1 (logged). */
int store_migrate(const char *location, int *from, int *to);

/* The name of the backend that serves location ("SQLite", ...), or NULL
 * when none does. */
const char *store_backend_name(const char *location);

/* How many write transactions the backend serving location usefully runs
 * at once, each on a handle of its own (the writer's lanes): 1 for an
 * engine with one writer (SQLite), more for a server that takes row
 * locks (PostgreSQL). 1 when no backend serves location. */
unsigned store_writers(const char *location);

/* The bytes this process holds for the store (an embedded engine's page
 * caches and statements; a remote database's client buffers), for
 * /metrics. */
int64_t store_memory_bytes(void);

static inline void store_close(store_t *s)
{
	if (s)
		s->vt->close(s);
}

/* Creates a user; STORE_EXISTS when the username is taken. */
static inline int store_user_create(store_t *s, const char *username, const char *pwhash,
                                    int64_t now_ms, int64_t *user_id)
{
	return s->vt->user_create(s, username, pwhash, now_ms, user_id);
}

/* Looks a user up by name; *pwhash (if pwhash is not NULL) is malloc'd. */
static inline int store_user_by_name(store_t *s, const char *username, int64_t *user_id,
                                     char **pwhash)
{
	return s->vt->user_by_name(s, username, user_id, pwhash);
}

static inline int store_user_by_id(store_t *s, int64_t user_id,
                                   char username[STORE_USERNAME_MAX + 1])
{
	return s->vt->user_by_id(s, user_id, username);
}

/* Creates a device (one login) whose bearer token hashes to token_hash.
 * When the user already has max_devices (0: no limit), its oldest device
 * is deleted in the same transaction and *evicted names it (else 0): its
 * token stops working, and the caller closes its connections. */
static inline int store_device_create(store_t *s, int64_t user_id, const char *name,
                                      const uint8_t token_hash[STORE_TOKEN_HASH_LEN],
                                      int64_t now_ms, unsigned max_devices, int64_t *device_id,
                                      int64_t *evicted)
{
	return s->vt->device_create(s, user_id, name, token_hash, now_ms, max_devices, device_id,
	                            evicted);
}

/* The device whose token hashes to token_hash. A device unused for
 * idle_ms (0: never expires) is logged out here (deleted) and answers
 * STORE_NOT_FOUND; a use is recorded at most once an hour, so a token
 * check is a read nearly always. */
static inline int store_device_by_token(store_t *s, const uint8_t token_hash[STORE_TOKEN_HASH_LEN],
                                        int64_t now_ms, int64_t idle_ms, int64_t *user_id,
                                        int64_t *device_id)
{
	return s->vt->device_by_token(s, token_hash, now_ms, idle_ms, user_id, device_id);
}

/* STORE_NOT_FOUND when the user has no such device. */
static inline int store_device_delete(store_t *s, int64_t user_id, int64_t device_id)
{
	return s->vt->device_delete(s, user_id, device_id);
}

/* The user's devices used since used_since_ms, oldest first (at most
 * 1,000). */
static inline int store_devices(store_t *s, int64_t user_id, int64_t used_since_ms,
                                store_device_t **out, size_t *n)
{
	return s->vt->devices(s, user_id, used_since_ms, out, n);
}

/* Sets t->device's push target for t->platform (replacing the one it
 * had), with t's address, topic, sandbox and keys; an address another
 * device had is taken from it (a token belongs to one app install, and
 * the latest login on it wins). *id gets the target's id. STORE_NOT_FOUND
 * when t->device is not t->user's (or no longer exists). The device's
 * targets go with it (logout, eviction, idle expiry). */
static inline int store_push_target_put(store_t *s, const store_push_target_t *t, int64_t now_ms, int64_t *id)
{
	return s->vt->push_target_put(s, t, now_ms, id);
}

/* The user's push targets, every device's, by id. */
static inline int store_push_targets(store_t *s, int64_t user_id, store_push_target_t **out, size_t *n)
{
	return s->vt->push_targets(s, user_id, out, n);
}

/* STORE_NOT_FOUND when the user has no such target. */
static inline int store_push_target_delete(store_t *s, int64_t user_id, int64_t id)
{
	return s->vt->push_target_delete(s, user_id, id);
}

void store_push_targets_free(store_push_target_t *t, size_t n);

/* The server's own keys, shared by every node of a store (the Web Push
 * VAPID key): *value (malloc'd) for name, or STORE_NOT_FOUND. add keeps
 * an existing value and answers STORE_EXISTS, so that nodes starting
 * together agree on the first one written. Names and values are text. */
static inline int store_server_key_get(store_t *s, const char *name, char **value)
{
	return s->vt->server_key_get(s, name, value);
}

static inline int store_server_key_add(store_t *s, const char *name, const char *value)
{
	return s->vt->server_key_add(s, name, value);
}

/* Finds or creates the direct conversation of two distinct users. A new
 * one is refused with STORE_TOO_MANY when either is already in max_convs
 * conversations (0: no limit); *full then names that user. */
static inline int store_direct_open(store_t *s, int64_t a, int64_t b, int64_t now_ms,
                                    unsigned max_convs, int64_t *conv_id, int *created,
                                    int64_t *full)
{
	return s->vt->direct_open(s, a, b, now_ms, max_convs, conv_id, created, full);
}

/* One conversation as user_id sees it; STORE_FORBIDDEN if not a member.
 * Free with store_conv_clear. */
static inline int store_conv_get(store_t *s, int64_t conv_id, int64_t user_id, store_conv_t *out)
{
	return s->vt->conv_get(s, conv_id, user_id, out);
}

/* A page of the user's conversations, most recent activity first: at most
 * limit of those after the cursor (NULL: from the most recent); *has_more
 * when there are more. */
static inline int store_conv_list(store_t *s, int64_t user_id, const store_conv_cursor_t *after,
                                  size_t limit, store_conv_t **out, size_t *n, int *has_more)
{
	return s->vt->conv_list(s, user_id, after, limit, out, n, has_more);
}

/* Messages with seq < before (all when before <= 0), ascending, at most
 * limit of the newest, and no more of them than it takes to reach
 * max_bytes of bodies (at least one); *has_more when older ones exist or
 * may (the byte bound stopped the page). */
static inline int store_history(store_t *s, int64_t conv_id, int64_t user_id, int64_t before,
                                int limit, size_t max_bytes, store_message_t **out, size_t *n,
                                int *has_more)
{
	return s->vt->history(s, conv_id, user_id, before, limit, max_bytes, out, n, has_more);
}

/* Per-member delivered/read times of message seq, for every member but its
 * sender; STORE_NOT_FOUND when there is no such message, or when it is older
 * than STORE_RECEIPT_DETAIL_DAYS (its detail has expired). */
static inline int store_receipts(store_t *s, int64_t conv_id, int64_t user_id, int64_t seq,
                                 int64_t now_ms, store_receipt_t **out, size_t *n)
{
	return s->vt->receipts(s, conv_id, user_id, seq, now_ms, out, n);
}

/* STORE_OK when user_id may see candidate's presence: candidate has
 * written to user_id in their direct chat and has not blocked it; with
 * candidate's stored last_seen (0: never). Else STORE_FORBIDDEN, for an
 * unknown user too. */
static inline int store_watchable(store_t *s, int64_t user_id, int64_t candidate,
                                  int64_t *last_seen)
{
	return s->vt->watchable(s, user_id, candidate, last_seen);
}

/* STORE_OK when the two share a conversation, else STORE_FORBIDDEN. */
static inline int store_shares_conversation(store_t *s, int64_t user_id, int64_t other)
{
	return s->vt->shares_conversation(s, user_id, other);
}

/* What other is to user_id (see store_contact_t); STORE_NOT_FOUND when
 * other is no user. */
static inline int store_contact(store_t *s, int64_t user_id, int64_t other, store_contact_t *out)
{
	return s->vt->contact(s, user_id, other, out);
}

static inline int store_settings_get(store_t *s, int64_t user_id, store_settings_t *out)
{
	return s->vt->settings_get(s, user_id, out);
}

static inline int store_set_group_adds(store_t *s, int64_t user_id, int group_adds)
{
	return s->vt->set_group_adds(s, user_id, group_adds);
}

/* STORE_NOT_FOUND when there is no such user. */
static inline int store_set_strangers_exempt(store_t *s, int64_t user_id, int exempt)
{
	return s->vt->set_strangers_exempt(s, user_id, exempt);
}

/* Whether user_id's push notifications carry the message's sender and
 * text (on, the default) or only "New message". STORE_NOT_FOUND when there
 * is no such user. */
static inline int store_set_push_previews(store_t *s, int64_t user_id, int on)
{
	return s->vt->set_push_previews(s, user_id, on);
}

/* Mutes (on) or unmutes user_id's pushes of conv_id; its messages still
 * arrive and count as unread. STORE_FORBIDDEN when not a member. */
static inline int store_set_muted(store_t *s, int64_t conv_id, int64_t user_id, int on)
{
	return s->vt->set_muted(s, conv_id, user_id, on);
}

/* user_id blocks target: in their direct chat (if any) neither may send
 * (store_apply answers STORE_BLOCKED) until it unblocks. STORE_EXISTS when
 * already blocked, STORE_NOT_FOUND when target is no user. */
static inline int store_block(store_t *s, int64_t user_id, int64_t target, int64_t now_ms)
{
	return s->vt->block(s, user_id, target, now_ms);
}

/* STORE_NOT_FOUND when target was not blocked. */
static inline int store_unblock(store_t *s, int64_t user_id, int64_t target)
{
	return s->vt->unblock(s, user_id, target);
}

/* A page of the users user_id has blocked, by ascending id after `after`. */
static inline int store_blocks(store_t *s, int64_t user_id, int64_t after, size_t limit,
                               store_block_t **out, size_t *n, int *has_more)
{
	return s->vt->blocks(s, user_id, after, limit, out, n, has_more);
}

/* The members of conv_id that user_id has blocked or that have blocked
 * it (for typing, which goes to neither). */
static inline int store_blocked_in_conv(store_t *s, int64_t user_id, int64_t conv_id,
                                        int64_t **ids, size_t *n)
{
	return s->vt->blocked_in_conv(s, user_id, conv_id, ids, n);
}

/* How many users have blocked user_id since since_ms, of those it reached
 * as a first contact (store_first_contacts_add) and whose record is kept. */
static inline int store_blocks_received(store_t *s, int64_t user_id, int64_t since_ms,
                                        int64_t *count)
{
	return s->vt->blocks_received(s, user_id, since_ms, count);
}

/* First contacts: each time user_id opened a direct chat with, or added to
 * a group, someone who had never written to it. How many since since_ms;
 * the time of the nth (0: the oldest) of them (STORE_NOT_FOUND when there
 * are fewer); recording n more; and deleting old ones a slice at a time. */
static inline int store_first_contacts(store_t *s, int64_t user_id, int64_t since_ms,
                                       int64_t *count)
{
	return s->vt->first_contacts(s, user_id, since_ms, count);
}

static inline int store_first_contact_at(store_t *s, int64_t user_id, int64_t since_ms,
                                         int64_t nth, int64_t *ts)
{
	return s->vt->first_contact_at(s, user_id, since_ms, nth, ts);
}

static inline int store_first_contacts_add(store_t *s, int64_t user_id, const int64_t *targets,
                                           size_t n, int64_t now_ms)
{
	return s->vt->first_contacts_add(s, user_id, targets, n, now_ms);
}

static inline int store_expire_first_contacts(store_t *s, int64_t before_ms, size_t max_rows,
                                              size_t *deleted)
{
	return s->vt->expire_first_contacts(s, before_ms, max_rows, deleted);
}

/* Stores when each of users[0..n) was last seen, in one transaction. */
static inline int store_last_seen_set(store_t *s, const int64_t *users, const int64_t *times,
                                      size_t n)
{
	return s->vt->last_seen_set(s, users, times, n);
}

/* Deletes up to max_rows receipt marks made before before_ms. */
static inline int store_expire_receipts(store_t *s, int64_t before_ms, size_t max_rows,
                                        size_t *deleted)
{
	return s->vt->expire_receipts(s, before_ms, max_rows, deleted);
}

/* Every member's watermarks (for the server's receipt counts). */
static inline int store_watermarks(store_t *s, int64_t conv_id, store_watermark_t **out, size_t *n)
{
	return s->vt->watermarks(s, conv_id, out, n);
}

/* The sender of each message with lo <= seq <= hi, ascending. */
static inline int store_senders(store_t *s, int64_t conv_id, int64_t lo, int64_t hi,
                                store_sent_t **out, size_t *n)
{
	return s->vt->senders(s, conv_id, lo, hi, out, n);
}

/* How many members other than its sender have read message seq (for
 * groups over STORE_RECEIPT_DETAIL_MAX); checks user_id is a member. */
static inline int store_read_count(store_t *s, int64_t conv_id, int64_t user_id, int64_t seq,
                                   int64_t *count)
{
	return s->vt->read_count(s, conv_id, user_id, seq, count);
}

/* The messages others sent that user_id has not read, in every
 * conversation together (a push notification's badge), counted up to cap
 * (past it the count is cap). */
static inline int store_unread_total(store_t *s, int64_t user_id, int64_t cap, int64_t *total)
{
	return s->vt->unread_total(s, user_id, cap, total);
}

/* A push showing seq went to user_id's devices in conv_id: pushed_seq
 * rises to seq (never falls), so that a push path that restarts neither
 * repeats it nor, through store_push_pending, recovers it. STORE_FORBIDDEN
 * when not a member. */
static inline int store_push_mark(store_t *s, int64_t conv_id, int64_t user_id, int64_t seq)
{
	return s->vt->push_mark(s, conv_id, user_id, seq);
}

/* The pushes a push path that stopped may have owed: for each
 * conversation whose newest message has an id above since_id (a
 * snowflake: a time), each member with a push target, not muting it,
 * not its sender, who joined before it and whose delivered, read and
 * pushed watermarks are all below it. At most limit, oldest first;
 * free with store_push_pending_free. */
static inline int store_push_pending(store_t *s, int64_t since_id, size_t limit, store_push_pending_t **out,
                                     size_t *n)
{
	return s->vt->push_pending(s, since_id, limit, out, n);
}

void store_push_pending_free(store_push_pending_t *p, size_t n);

/* The messages user_id can read (in the conversations it is a member of,
 * from when it joined) that hold every term, the last also as the start
 * of a word (what is being typed); in conv_id only, unless 0
 * (STORE_FORBIDDEN when not a member of it). The best matches first,
 * then the newest; limit of them from offset; *has_more when more match.
 * Free with store_search_free. */
static inline int store_search(store_t *s, int64_t user_id, int64_t conv_id, const char *const *terms,
                               size_t nterms, size_t offset, size_t limit, store_search_hit_t **out, size_t *n,
                               int *has_more)
{
	return s->vt->search(s, user_id, conv_id, terms, nterms, offset, limit, out, n, has_more);
}

void store_search_free(store_search_hit_t *h, size_t n);

/* The conversation's latest seq if user_id is a member, else STORE_FORBIDDEN;
 * and the seq at which the user joined: it sees only messages after it. */
static inline int store_member_head(store_t *s, int64_t conv_id, int64_t user_id,
                                    int64_t *last_seq, int64_t *joined_seq)
{
	return s->vt->member_head(s, conv_id, user_id, last_seq, joined_seq);
}

/* Every member of a conversation, ascending, without checking who asks:
 * for the server's own fan-out. */
static inline int store_members(store_t *s, int64_t conv_id, int64_t **ids, size_t *n)
{
	return s->vt->members(s, conv_id, ids, n);
}

/* Every member with the seq it joined at, and the membership's version,
 * read together. */
static inline int store_member_list(store_t *s, int64_t conv_id, store_member_t **out, size_t *n,
                                    int64_t *version)
{
	return s->vt->member_list(s, conv_id, out, n, version);
}

/* Creates a group of creator (its admin) and the n distinct users in
 * others. STORE_NOT_FOUND when one of them does not exist, STORE_FULL
 * past STORE_GROUP_MAX members, STORE_TOO_MANY (naming *full) when one of
 * them is already in max_convs conversations (0: no limit). title may be
 * NULL. */
static inline int store_group_create(store_t *s, int64_t creator, const int64_t *others, size_t n,
                                     const char *title, int64_t now_ms, unsigned max_convs,
                                     int64_t *conv_id, int64_t *full)
{
	return s->vt->group_create(s, creator, others, n, title, now_ms, max_convs, conv_id, full);
}

/* actor, an admin, adds user_id to a group; the new member sees messages
 * from now on. STORE_FORBIDDEN: actor not a member or not an admin;
 * STORE_NOT_GROUP; STORE_NOT_FOUND: no such user; STORE_EXISTS: already a
 * member; STORE_FULL; STORE_TOO_MANY: user_id is in max_convs
 * conversations (*full names it). */
static inline int store_member_add(store_t *s, int64_t conv_id, int64_t actor, int64_t user_id,
                                   int64_t now_ms, unsigned max_convs, int64_t *full)
{
	return s->vt->member_add(s, conv_id, actor, user_id, now_ms, max_convs, full);
}

/* Removes user_id from a group: an admin removes anyone, anyone leaves.
 * When the last admin goes, the longest-standing member becomes admin
 * (*promoted, else 0). STORE_NOT_FOUND: user_id is not a member. */
static inline int store_member_remove(store_t *s, int64_t conv_id, int64_t actor, int64_t user_id,
                                      int64_t *promoted)
{
	return s->vt->member_remove(s, conv_id, actor, user_id, promoted);
}

/* Every conversation of the user with its latest seq. */
static inline int store_heads(store_t *s, int64_t user_id, store_head_t **out, size_t *n)
{
	return s->vt->heads(s, user_id, out, n);
}

/* Messages with after < seq <= upto, ascending, stopping at max_count
 * messages or once max_bytes of bodies are taken (always at least one),
 * for a reader that joined at joined (<= after): a reply quotes only a
 * message after it. */
static inline int store_replay(store_t *s, int64_t conv_id, int64_t joined, int64_t after, int64_t upto,
                               size_t max_count, size_t max_bytes, store_message_t **out,
                               size_t *n)
{
	return s->vt->replay(s, conv_id, joined, after, upto, max_count, max_bytes, out, n);
}

/* Applies a batch of ops in one durable transaction: when it returns
 * STORE_OK every op with status STORE_OK or STORE_EXISTS is on disk. On
 * STORE_ERROR nothing was stored and every op's status is STORE_ERROR.
 * A send into a direct chat in which either member has blocked the other
 * ends STORE_BLOCKED (op->out_blocked_by_me says which), stores nothing;
 * the first message a member sends in a conversation makes it a writer
 * there (store_contact's i_wrote / they_wrote). */
static inline int store_apply(store_t *s, store_op_t *ops, size_t n)
{
	return s->vt->apply(s, ops, n);
}

/* From now on this handle's store_apply writes an outbox row for each
 * message it stores and each receipt that moves a watermark, in the batch's
 * own transaction (on: 1), or stops (0). Off, the default, costs nothing:
 * the same statements as before. Only a node that relays the outbox to a
 * log turns it on. */
static inline int store_set_outbox(store_t *s, int on)
{
	return s->vt->set_outbox(s, on);
}

/* From now on (on: 1) this handle's commits return without waiting for
 * the disk: a crash may lose the last of them (never another handle's,
 * never a torn one), in exchange for no flush per commit. For writes that
 * are safe to lose, as the outbox relay's deletes and sweep marks are (a
 * row not deleted is published again, and the log stores it once).
 * PostgreSQL: synchronous_commit off for the handle's sessions; SQLite:
 * synchronous NORMAL on its connection (WAL). */
static inline int store_set_lazy_commit(store_t *s, int on)
{
	return s->vt->set_lazy_commit(s, on);
}

/* Takes up to max_rows outbox rows, oldest first, made at or before
 * now_ms - age_ms and not taken by anyone since then, and marks them taken
 * at now_ms: a row taken is not handed out again for age_ms, whichever
 * handle or node asks (PostgreSQL skips rows another transaction holds:
 * several nodes share the sweep without taking the same row twice). A row
 * whose taker died comes back age_ms later. age_ms 0 takes every row.
 * Free *out with store_outbox_free. */
static inline int store_outbox_take(store_t *s, int64_t now_ms, int64_t age_ms, size_t max_rows,
                                    store_outbox_t **out, size_t *n)
{
	return s->vt->outbox_take(s, now_ms, age_ms, max_rows, out, n);
}

/* Deletes the outbox rows ids[0..n), once their events are on the log;
 * ids not there are ignored. */
static inline int store_outbox_delete(store_t *s, const int64_t *ids, size_t n)
{
	return s->vt->outbox_delete(s, ids, n);
}

void store_outbox_free(store_outbox_t *rows, size_t n);
void store_message_clear(store_message_t *m);
void store_messages_free(store_message_t *m, size_t n);
void store_conv_clear(store_conv_t *c);
void store_convs_free(store_conv_t *c, size_t n);
void store_op_release(store_op_t *op);

/* The rules of an event (or a reply) about a message, shared by every
 * backend: STORE_OK, or the status the op ends with (STORE_DENIED,
 * STORE_EXPIRED, STORE_GONE). The target is a message (STORE_MSG_TEXT)
 * the sender may see, sent by target_from at target_ts; admin: the
 * sender is a group's admin; last_join: the newest joined_seq of the
 * conversation's members (an edit only). */
int store_event_check(const store_op_t *op, int conv_kind, int64_t target_from, int64_t target_ts,
                      int target_deleted, int admin, int64_t last_join);

#endif
