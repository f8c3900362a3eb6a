/* unit_store.c - the store interface's conformance suite: every test
 * below but the SQLite-specific ones at the end runs once per backend,
 * each time on a fresh, empty store (a temporary directory for SQLite; a
 * fresh database for PostgreSQL, on one throwaway server this binary
 * starts, tests/pgserver.h), so that a second backend cannot drift from
 * the first. A backend's run is the whole list: it fails when any test
 * fails.
 *
 * The PostgreSQL run happens whenever a backend serves "postgresql://"
 * locations in this build; until one is registered it is skipped,
 * saying so. Both runs need nothing but the store's public interface.
 *
 * What is pinned: batches of sends get gapless seqs in one transaction,
 * a repeated cmid returns the stored message, non-members are refused
 * without a write, the admission hook sees only what would be stored;
 * receipt watermarks only rise, a read implies delivery, per-message
 * times expire after STORE_RECEIPT_DETAIL_DAYS, and groups over
 * STORE_RECEIPT_DETAIL_MAX keep read watermarks only; device eviction at
 * max_devices; the group member cap (STORE_GROUP_MAX) and the
 * conversation cap (max_convs); who becomes admin when the last one
 * leaves; blocks; contacts and presence; history, replay and list pages;
 * a member's view starts where it joined; the outbox: rows only when it is
 * on, in the batch's transaction, taken once per age and by one handle of
 * two racing, deleted by id. Every store_vtab_t method is
 * called (test_every_method_is_called lists them). */
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "pgserver.h"
#include "store.h"

/* The tests' messages are from 2024; "now" for them is soon after. */
#define NOW (1704067200000LL + 86400000LL)
#define DAY_MS 86400000LL

/* ---- the backends ---------------------------------------------------- */

/* How a run gets its locations: fresh() makes a new, empty one (into
 * loc), discard() removes it. */
typedef struct backend {
	const char *name;      /* as store_backend_name says */
	int (*fresh)(char *loc, size_t cap);
	void (*discard)(const char *loc);
} backend_t;

static pgserver_t *pg; /* the PostgreSQL run's server */

static int sqlite_fresh(char *loc, size_t cap)
{
	snprintf(loc, cap, "/tmp/parley-unit-store-XXXXXX");
	return mkdtemp(loc) ? 0 : -1;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void sqlite_discard(const char *loc)
{
	nftw(loc, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int pg_fresh(char *loc, size_t cap)
{
	return pgserver_create_db(pg, NULL, loc, cap);
}

static void pg_discard(const char *loc)
{
	pgserver_drop_db(pg, loc);
}

static const backend_t sqlite_backend = {"SQLite", sqlite_fresh, sqlite_discard};
static const backend_t pg_backend = {"PostgreSQL", pg_fresh, pg_discard};

/* The run under way: its backend, its store's location, the claim held
 * on it (as a serving node holds one), and the handle every test uses. */
static const backend_t *be;
static char location[512];
static store_claim_t *claim;
static store_t *st;
static int64_t alice, bob, carol, conv;

/* ---- every method called ------------------------------------------- */

/* The handle the tests use is a proxy that counts the calls of each
 * store_vtab_t method before passing them on to the backend's own, so
 * that test_every_method_is_called can say which method no test calls
 * (a second backend's method nobody calls is one nobody checked). */
#define METHODS(X)                                                          \
	X(close) X(user_create) X(user_by_name) X(user_by_id) X(device_create)   \
	X(device_by_token) X(device_delete) X(devices) X(push_target_put)        \
	X(push_targets) X(push_target_delete) X(server_key_get) X(server_key_add) \
	X(direct_open) X(conv_get)                                                \
	X(conv_list) X(history) X(receipts) X(watchable) X(shares_conversation)  \
	X(contact) X(settings_get) X(set_group_adds) X(set_strangers_exempt)     \
	X(set_push_previews) X(set_muted) X(push_mark) X(push_pending)            \
	X(block) X(unblock) X(blocks) X(blocked_in_conv) X(blocks_received)      \
	X(first_contacts) X(first_contact_at) X(first_contacts_add)              \
	X(expire_first_contacts) X(last_seen_set) X(expire_receipts)             \
	X(watermarks) X(senders) X(read_count) X(unread_total) X(member_head)    \
	X(members)                                                                \
	X(member_list) X(group_create) X(member_add) X(member_remove) X(heads)   \
	X(replay) X(search) X(apply) X(set_outbox) X(set_lazy_commit) X(outbox_take) X(outbox_delete)

#define AS_ENUM(m) M_##m,
#define AS_NAME(m) #m,
enum { METHODS(AS_ENUM) M_COUNT };
static const char *const method_names[M_COUNT] = {METHODS(AS_NAME)};
static unsigned long hits[M_COUNT];

/* A method added to store.h and not here fails to build. */
_Static_assert(sizeof(store_vtab_t) == M_COUNT * sizeof(void (*)(void)),
               "store_vtab_t has a method this file's METHODS list lacks");

typedef struct proxy {
	store_t base;
	store_t *real;
} proxy_t;

#define R(s) (((proxy_t *)(s))->real)
#define FWD(m, params, args)                                                \
	static int px_##m params                                                \
	{                                                                       \
		hits[M_##m]++;                                                  \
		return R(s)->vt->m args;                                        \
	}

static void px_close(store_t *s)
{
	hits[M_close]++;
	store_close(R(s));
	free(s);
}

FWD(user_create, (store_t *s, const char *u, const char *p, int64_t now, int64_t *id),
    (R(s), u, p, now, id))
FWD(user_by_name, (store_t *s, const char *u, int64_t *id, char **p), (R(s), u, id, p))
FWD(user_by_id, (store_t *s, int64_t id, char u[STORE_USERNAME_MAX + 1]), (R(s), id, u))
FWD(device_create, (store_t *s, int64_t u, const char *name, const uint8_t h[STORE_TOKEN_HASH_LEN],
                    int64_t now, unsigned max, int64_t *d, int64_t *ev),
    (R(s), u, name, h, now, max, d, ev))
FWD(device_by_token, (store_t *s, const uint8_t h[STORE_TOKEN_HASH_LEN], int64_t now, int64_t idle,
                      int64_t *u, int64_t *d),
    (R(s), h, now, idle, u, d))
FWD(device_delete, (store_t *s, int64_t u, int64_t d), (R(s), u, d))
FWD(devices, (store_t *s, int64_t u, int64_t since, store_device_t **out, size_t *n),
    (R(s), u, since, out, n))
FWD(push_target_put, (store_t *s, const store_push_target_t *t, int64_t now, int64_t *id), (R(s), t, now, id))
FWD(push_targets, (store_t *s, int64_t u, store_push_target_t **out, size_t *n), (R(s), u, out, n))
FWD(push_target_delete, (store_t *s, int64_t u, int64_t id), (R(s), u, id))
FWD(server_key_get, (store_t *s, const char *name, char **value), (R(s), name, value))
FWD(server_key_add, (store_t *s, const char *name, const char *value), (R(s), name, value))
FWD(direct_open, (store_t *s, int64_t a, int64_t b, int64_t now, unsigned max, int64_t *c, int *cr,
                  int64_t *full),
    (R(s), a, b, now, max, c, cr, full))
FWD(conv_get, (store_t *s, int64_t c, int64_t u, store_conv_t *out), (R(s), c, u, out))
FWD(conv_list, (store_t *s, int64_t u, const store_conv_cursor_t *after, size_t limit,
                store_conv_t **out, size_t *n, int *more),
    (R(s), u, after, limit, out, n, more))
FWD(history, (store_t *s, int64_t c, int64_t u, int64_t before, int limit, size_t max_bytes,
              store_message_t **out, size_t *n, int *more),
    (R(s), c, u, before, limit, max_bytes, out, n, more))
FWD(receipts, (store_t *s, int64_t c, int64_t u, int64_t seq, int64_t now, store_receipt_t **out,
               size_t *n),
    (R(s), c, u, seq, now, out, n))
FWD(watchable, (store_t *s, int64_t u, int64_t cand, int64_t *seen), (R(s), u, cand, seen))
FWD(shares_conversation, (store_t *s, int64_t u, int64_t o), (R(s), u, o))
FWD(contact, (store_t *s, int64_t u, int64_t o, store_contact_t *out), (R(s), u, o, out))
FWD(settings_get, (store_t *s, int64_t u, store_settings_t *out), (R(s), u, out))
FWD(set_group_adds, (store_t *s, int64_t u, int v), (R(s), u, v))
FWD(set_strangers_exempt, (store_t *s, int64_t u, int v), (R(s), u, v))
FWD(set_push_previews, (store_t *s, int64_t u, int v), (R(s), u, v))
FWD(set_muted, (store_t *s, int64_t c, int64_t u, int v), (R(s), c, u, v))
FWD(push_mark, (store_t *s, int64_t c, int64_t u, int64_t q), (R(s), c, u, q))
FWD(push_pending, (store_t *s, int64_t since, size_t limit, store_push_pending_t **out, size_t *n),
    (R(s), since, limit, out, n))
FWD(block, (store_t *s, int64_t u, int64_t t, int64_t now), (R(s), u, t, now))
FWD(unblock, (store_t *s, int64_t u, int64_t t), (R(s), u, t))
FWD(blocks, (store_t *s, int64_t u, int64_t after, size_t limit, store_block_t **out, size_t *n,
             int *more),
    (R(s), u, after, limit, out, n, more))
FWD(blocked_in_conv, (store_t *s, int64_t u, int64_t c, int64_t **ids, size_t *n), (R(s), u, c, ids, n))
FWD(blocks_received, (store_t *s, int64_t u, int64_t since, int64_t *count), (R(s), u, since, count))
FWD(first_contacts, (store_t *s, int64_t u, int64_t since, int64_t *count), (R(s), u, since, count))
FWD(first_contact_at, (store_t *s, int64_t u, int64_t since, int64_t nth, int64_t *ts),
    (R(s), u, since, nth, ts))
FWD(first_contacts_add, (store_t *s, int64_t u, const int64_t *t, size_t n, int64_t now),
    (R(s), u, t, n, now))
FWD(expire_first_contacts, (store_t *s, int64_t before, size_t max, size_t *deleted),
    (R(s), before, max, deleted))
FWD(last_seen_set, (store_t *s, const int64_t *u, const int64_t *t, size_t n), (R(s), u, t, n))
FWD(expire_receipts, (store_t *s, int64_t before, size_t max, size_t *deleted),
    (R(s), before, max, deleted))
FWD(watermarks, (store_t *s, int64_t c, store_watermark_t **out, size_t *n), (R(s), c, out, n))
FWD(senders, (store_t *s, int64_t c, int64_t lo, int64_t hi, store_sent_t **out, size_t *n),
    (R(s), c, lo, hi, out, n))
FWD(read_count, (store_t *s, int64_t c, int64_t u, int64_t seq, int64_t *count),
    (R(s), c, u, seq, count))
FWD(unread_total, (store_t *s, int64_t u, int64_t cap, int64_t *total), (R(s), u, cap, total))
FWD(member_head, (store_t *s, int64_t c, int64_t u, int64_t *last, int64_t *joined),
    (R(s), c, u, last, joined))
FWD(members, (store_t *s, int64_t c, int64_t **ids, size_t *n), (R(s), c, ids, n))
FWD(member_list, (store_t *s, int64_t c, store_member_t **out, size_t *n, int64_t *version),
    (R(s), c, out, n, version))
FWD(group_create, (store_t *s, int64_t creator, const int64_t *others, size_t n, const char *title,
                   int64_t now, unsigned max, int64_t *c, int64_t *full),
    (R(s), creator, others, n, title, now, max, c, full))
FWD(member_add, (store_t *s, int64_t c, int64_t actor, int64_t u, int64_t now, unsigned max,
                 int64_t *full),
    (R(s), c, actor, u, now, max, full))
FWD(member_remove, (store_t *s, int64_t c, int64_t actor, int64_t u, int64_t *promoted),
    (R(s), c, actor, u, promoted))
FWD(heads, (store_t *s, int64_t u, store_head_t **out, size_t *n), (R(s), u, out, n))
FWD(replay, (store_t *s, int64_t c, int64_t joined, int64_t after, int64_t upto, size_t max_count,
             size_t max_bytes, store_message_t **out, size_t *n),
    (R(s), c, joined, after, upto, max_count, max_bytes, out, n))
FWD(search, (store_t *s, int64_t u, int64_t c, const char *const *terms, size_t nterms, size_t offset, size_t limit,
             store_search_hit_t **out, size_t *n, int *more),
    (R(s), u, c, terms, nterms, offset, limit, out, n, more))
FWD(apply, (store_t *s, store_op_t *ops, size_t n), (R(s), ops, n))
FWD(set_outbox, (store_t *s, int on), (R(s), on))
FWD(set_lazy_commit, (store_t *s, int on), (R(s), on))
FWD(outbox_take, (store_t *s, int64_t now, int64_t age, size_t max, store_outbox_t **out, size_t *n),
    (R(s), now, age, max, out, n))
FWD(outbox_delete, (store_t *s, const int64_t *ids, size_t n), (R(s), ids, n))

#define AS_PROXY(m) .m = px_##m,
static const store_vtab_t proxy_vtab = {METHODS(AS_PROXY)};

/* Wraps a backend's handle (NULL stays NULL), checking that the backend
 * fills every method. */
static store_t *counted(store_t *real)
{
	proxy_t *p;
	int complete = 1;

	if (!real)
		return NULL;
#define CHECK_FILLED(m)                                                               \
	if (!real->vt->m) {                                                           \
		fprintf(stderr, "unit_store: the %s backend has no %s method\n", be->name, #m); \
		complete = 0;                                                         \
	}
	METHODS(CHECK_FILLED)
#undef CHECK_FILLED
	if (!complete || !(p = calloc(1, sizeof *p))) {
		store_close(real);
		return NULL;
	}
	p->base.vt = &proxy_vtab;
	p->real = real;
	return &p->base;
}

/* Last in each run: every method was called by some test of the run. */
static void test_every_method_is_called(void **state)
{
	int i, missed = 0;

	(void)state;
	for (i = 0; i < M_COUNT; i++) {
		if (i == M_close)
			continue; /* the run's teardown closes; other tests' handles did */
		if (!hits[i]) {
			fprintf(stderr, "unit_store: no test calls store_vtab_t.%s\n", method_names[i]);
			missed++;
		}
	}
	assert_int_equal(missed, 0);
}

/* Message ids are unique in a store; each new test's come from here
 * (the older tests name theirs, all below 1000 << 22). */
static int64_t next_id_unit = 10000;

static int64_t next_id(void)
{
	return next_id_unit++ << 22;
}

static int setup(void **state)
{
	uint8_t h[32] = {1};
	int64_t dev, evicted;
	int created;

	(void)state;
	next_id_unit = 10000;
	if (be->fresh(location, sizeof location) < 0) {
		fprintf(stderr, "unit_store: no fresh %s store\n", be->name);
		return -1;
	}
	/* As a node does: the claim brings the schema up (or refuses)
	 * before any handle is opened. */
	memset(hits, 0, sizeof hits);
	if (!(claim = store_claim(location)) || !(st = counted(store_open(location)))) {
		fprintf(stderr, "unit_store: cannot open the %s store at %s\n", be->name, location);
		return -1;
	}
	if (store_user_create(st, "alice", "x", 1, &alice) || store_user_create(st, "bob", "x", 1, &bob) ||
	    store_user_create(st, "carol", "x", 1, &carol))
		return -1;
	if (store_device_create(st, alice, "phone", h, 1, 0, &dev, &evicted))
		return -1;
	return store_direct_open(st, alice, bob, 1704067200000LL + 5, 0, &conv, &created, NULL);
}

static int teardown(void **state)
{
	(void)state;
	store_close(st);
	st = NULL;
	store_release(claim);
	claim = NULL;
	be->discard(location);
	return 0;
}

/* ---- the tests ------------------------------------------------------ */

/* A fresh user of this store. */
static int64_t new_user(const char *name)
{
	int64_t id;

	assert_int_equal(store_user_create(st, name, "x", 1, &id), STORE_OK);
	return id;
}

/* The direct chat of a and b, opened. */
static int64_t new_direct(int64_t a, int64_t b)
{
	int64_t cv;
	int created;

	assert_int_equal(store_direct_open(st, a, b, 5, 0, &cv, &created, NULL), STORE_OK);
	return cv;
}

static store_op_t send_op(int64_t user, const char *cmid, const char *body, int64_t id)
{
	store_op_t op = {0};

	op.kind = STORE_OP_SEND;
	op.user = user;
	op.device = 1;
	op.conv = conv;
	op.cmid = cmid;
	op.body = body;
	op.body_len = strlen(body);
	op.new_id = id;
	op.now_ms = 1704067200000LL + (id >> 22);
	return op;
}

/* A send of a new message into cv. */
static store_op_t send_to(int64_t cv, int64_t user, const char *cmid, const char *body)
{
	store_op_t op = send_op(user, cmid, body, next_id());

	op.conv = cv;
	return op;
}

/* Applies one op alone; the op's status is returned. */
static int apply1(store_op_t *op)
{
	assert_int_equal(store_apply(st, op, 1), STORE_OK);
	store_op_release(op);
	return op->status;
}

static void test_accounts(void **state)
{
	uint8_t h[32] = {1}, other[32] = {2};
	int64_t u, d, id;
	char *hash = NULL, name[33];

	(void)state;
	assert_int_equal(store_user_create(st, "alice", "y", 1, &id), STORE_EXISTS);
	assert_int_equal(store_user_by_name(st, "alice", &u, &hash), STORE_OK);
	assert_int_equal(u, alice);
	assert_string_equal(hash, "x");
	free(hash);
	assert_int_equal(store_user_by_name(st, "nobody", &u, NULL), STORE_NOT_FOUND);
	assert_int_equal(store_user_by_id(st, bob, name), STORE_OK);
	assert_string_equal(name, "bob");
	assert_int_equal(store_device_by_token(st, h, 1, 0, &u, &d), STORE_OK);
	assert_int_equal(u, alice);
	assert_int_equal(store_device_by_token(st, other, 1, 0, &u, &d), STORE_NOT_FOUND);
	assert_int_equal(store_device_delete(st, bob, d), STORE_NOT_FOUND); /* not bob's */
	assert_int_equal(store_device_delete(st, alice, d), STORE_OK);
	assert_int_equal(store_device_by_token(st, h, 1, 0, &u, &d), STORE_NOT_FOUND);
}

/* With a cap of 3 devices, a 4th login removes the oldest (its token stops
 * working) and names it; the others keep working. */
static void test_device_cap(void **state)
{
	uint8_t tok[5][32];
	int64_t dev[5], evicted, u, d;
	int i;

	(void)state;
	for (i = 0; i < 5; i++) {
		memset(tok[i], 0x40 + i, sizeof tok[i]);
		assert_int_equal(store_device_create(st, carol, "d", tok[i], 1, 3, &dev[i], &evicted), STORE_OK);
		assert_int_equal(evicted, i < 3 ? 0 : dev[i - 3]);
	}
	for (i = 0; i < 5; i++) {
		int r = store_device_by_token(st, tok[i], 1, 0, &u, &d);
		assert_int_equal(r, i < 2 ? STORE_NOT_FOUND : STORE_OK);
		if (r == STORE_OK)
			assert_int_equal(d, dev[i]);
	}
	/* No cap: nothing is removed. */
	memset(tok[0], 0x60, sizeof tok[0]);
	assert_int_equal(store_device_create(st, carol, "d", tok[0], 1, 0, &dev[0], &evicted), STORE_OK);
	assert_int_equal(evicted, 0);
	assert_int_equal(store_device_by_token(st, tok[2], 1, 0, &u, &d), STORE_OK);
	/* "Oldest" is by creation (store.h): a device in use is evicted
	 * before a newer one nobody uses. */
	{
		int64_t dave = new_user("evict_dave"), first, second, third;
		memset(tok[0], 0x70, sizeof tok[0]);
		memset(tok[1], 0x71, sizeof tok[1]);
		memset(tok[2], 0x72, sizeof tok[2]);
		assert_int_equal(store_device_create(st, dave, "d", tok[0], 1000, 2, &first, &evicted), STORE_OK);
		assert_int_equal(store_device_create(st, dave, "d", tok[1], 2000, 2, &second, &evicted), STORE_OK);
		assert_int_equal(evicted, 0);
		/* The first is used hours later (and that use is recorded). */
		assert_int_equal(store_device_by_token(st, tok[0], 5 * 3600000LL, 0, &u, &d), STORE_OK);
		assert_int_equal(store_device_create(st, dave, "d", tok[2], 6 * 3600000LL, 2, &third, &evicted),
		                 STORE_OK);
		assert_int_equal(evicted, first);
		assert_int_equal(store_device_by_token(st, tok[0], 6 * 3600000LL, 0, &u, &d), STORE_NOT_FOUND);
		assert_int_equal(store_device_by_token(st, tok[1], 6 * 3600000LL, 0, &u, &d), STORE_OK);
		assert_int_equal(d, second);
	}
}

/* Push targets: one per device and platform (a second replaces it), an
 * address on one device at most (a new device taking it takes it from
 * the old), only on the caller's own device, listed per user, deleted by
 * their owner only, and gone with their device. */
static store_push_target_t push_of(int64_t user, int64_t device, int platform, const char *address)
{
	store_push_target_t t = {0};

	t.user = user;
	t.device = device;
	t.platform = platform;
	t.address = (char *)address;
	t.topic = platform == STORE_PUSH_APNS ? (char *)"com.example.chat" : (char *)"";
	t.sandbox = platform == STORE_PUSH_APNS;
	t.p256dh = platform == STORE_PUSH_WEBPUSH ? (char *)"BKey" : (char *)"";
	t.auth = platform == STORE_PUSH_WEBPUSH ? (char *)"auth" : (char *)"";
	return t;
}

static void test_push_targets(void **state)
{
	int64_t erin = new_user("push_erin"), frank = new_user("push_frank"), d1, d2, df, ev, id1, id2, id3, id4;
	uint8_t h1[32], h2[32], hf[32];
	store_push_target_t t, *list = NULL;
	size_t n = 0;

	(void)state;
	memset(h1, 0x91, sizeof h1);
	memset(h2, 0x92, sizeof h2);
	memset(hf, 0x93, sizeof hf);
	assert_int_equal(store_device_create(st, erin, "phone", h1, 1, 0, &d1, &ev), STORE_OK);
	assert_int_equal(store_device_create(st, erin, "laptop", h2, 1, 0, &d2, &ev), STORE_OK);
	assert_int_equal(store_device_create(st, frank, "phone", hf, 1, 0, &df, &ev), STORE_OK);
	t = push_of(erin, d1, STORE_PUSH_APNS, "aa01");
	assert_int_equal(store_push_target_put(st, &t, 100, &id1), STORE_OK);
	t = push_of(erin, d2, STORE_PUSH_WEBPUSH, "https://push.example/1");
	assert_int_equal(store_push_target_put(st, &t, 200, &id2), STORE_OK);
	assert_int_equal(store_push_targets(st, erin, &list, &n), STORE_OK);
	assert_int_equal(n, 2);
	assert_int_equal(list[0].id, id1);
	assert_int_equal(list[0].device, d1);
	assert_int_equal(list[0].platform, STORE_PUSH_APNS);
	assert_string_equal(list[0].address, "aa01");
	assert_string_equal(list[0].topic, "com.example.chat");
	assert_int_equal(list[0].sandbox, 1);
	assert_int_equal(list[0].created_at, 100);
	assert_string_equal(list[1].p256dh, "BKey");
	assert_string_equal(list[1].auth, "auth");
	assert_string_equal(list[1].topic, "");
	store_push_targets_free(list, n);
	/* The same device and platform again: replaced, the same id. */
	t = push_of(erin, d1, STORE_PUSH_APNS, "aa02");
	assert_int_equal(store_push_target_put(st, &t, 300, &id3), STORE_OK);
	assert_int_equal(id3, id1);
	assert_int_equal(store_push_targets(st, erin, &list, &n), STORE_OK);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].address, "aa02");
	assert_int_equal(list[0].created_at, 300);
	store_push_targets_free(list, n);
	/* Not one's own device: refused, and nothing moves. */
	t = push_of(frank, d1, STORE_PUSH_FCM, "fcm-token");
	assert_int_equal(store_push_target_put(st, &t, 400, &id4), STORE_NOT_FOUND);
	t = push_of(frank, d1, STORE_PUSH_APNS, "aa02");
	assert_int_equal(store_push_target_put(st, &t, 400, &id4), STORE_NOT_FOUND);
	assert_int_equal(store_push_targets(st, erin, &list, &n), STORE_OK);
	assert_int_equal(n, 2);
	store_push_targets_free(list, n);
	/* Frank's phone gets erin's old token (the app installed anew under
	 * his login): it leaves erin's phone. */
	t = push_of(frank, df, STORE_PUSH_APNS, "aa02");
	assert_int_equal(store_push_target_put(st, &t, 500, &id4), STORE_OK);
	assert_int_equal(store_push_targets(st, erin, &list, &n), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(list[0].id, id2);
	store_push_targets_free(list, n);
	/* Deleted by its owner only. */
	assert_int_equal(store_push_target_delete(st, erin, id4), STORE_NOT_FOUND);
	assert_int_equal(store_push_target_delete(st, frank, id4), STORE_OK);
	assert_int_equal(store_push_target_delete(st, frank, id4), STORE_NOT_FOUND);
	/* Gone with the device (a logout). */
	assert_int_equal(store_device_delete(st, erin, d2), STORE_OK);
	assert_int_equal(store_push_targets(st, erin, &list, &n), STORE_OK);
	assert_int_equal(n, 0);
	store_push_targets_free(list, n);
	/* A device that no longer exists takes none. */
	t = push_of(erin, d2, STORE_PUSH_FCM, "fcm-2");
	assert_int_equal(store_push_target_put(st, &t, 600, &id4), STORE_NOT_FOUND);
}

/* The server's keys: the first value written stands. */
static void test_server_keys(void **state)
{
	char *v = NULL;

	(void)state;
	assert_int_equal(store_server_key_get(st, "vapid", &v), STORE_NOT_FOUND);
	assert_null(v);
	assert_int_equal(store_server_key_add(st, "vapid", "first"), STORE_OK);
	assert_int_equal(store_server_key_add(st, "vapid", "second"), STORE_EXISTS);
	assert_int_equal(store_server_key_get(st, "vapid", &v), STORE_OK);
	assert_string_equal(v, "first");
	free(v);
}

static void test_direct_is_one_per_pair(void **state)
{
	int64_t c;
	int created;

	(void)state;
	assert_int_equal(store_direct_open(st, bob, alice, 2, 0, &c, &created, NULL), STORE_OK);
	assert_int_equal(c, conv);
	assert_false(created);
}

static void test_batch_seqs_and_idempotency(void **state)
{
	store_op_t ops[5];
	size_t i;

	(void)state;
	ops[0] = send_op(alice, "a1", "one", 100 << 22);
	ops[1] = send_op(bob, "b1", "two", 101 << 22);
	ops[2] = send_op(alice, "a1", "one again", 102 << 22); /* same cmid, same batch */
	ops[3] = send_op(carol, "c1", "intruder", 103 << 22);
	ops[4] = send_op(bob, "a1", "bob's own a1", 104 << 22); /* cmids are per sender */
	assert_int_equal(store_apply(st, ops, 5), STORE_OK);
	assert_int_equal(ops[0].status, STORE_OK);
	assert_int_equal(ops[0].out_seq, 1);
	assert_int_equal(ops[0].nmembers, 2);
	assert_int_equal(ops[1].status, STORE_OK);
	assert_int_equal(ops[1].out_seq, 2);
	assert_int_equal(ops[2].status, STORE_EXISTS);
	assert_int_equal(ops[2].out_seq, 1);
	assert_int_equal(ops[2].out_id, ops[0].out_id);
	assert_int_equal(ops[3].status, STORE_FORBIDDEN);
	assert_int_equal(ops[4].status, STORE_OK);
	assert_int_equal(ops[4].out_seq, 3);
	for (i = 0; i < 5; i++)
		store_op_release(&ops[i]);
	/* A later batch repeats an old cmid: the stored ack again. */
	ops[0] = send_op(bob, "b1", "two", 200 << 22);
	assert_int_equal(store_apply(st, ops, 1), STORE_OK);
	assert_int_equal(ops[0].status, STORE_EXISTS);
	assert_int_equal(ops[0].out_seq, 2);
	assert_int_equal(ops[0].out_id, 101 << 22);
	store_op_release(&ops[0]);
}

static store_op_t receipt_op(int64_t user, int state, int64_t seq, int64_t now)
{
	store_op_t op = {0};

	op.kind = STORE_OP_RECEIPT;
	op.user = user;
	op.conv = conv;
	op.state = state;
	op.seq = seq;
	op.now_ms = now;
	return op;
}

static void test_receipts(void **state)
{
	store_op_t op;
	store_receipt_t *r;
	size_t n;

	(void)state;
	op = receipt_op(bob, STORE_DELIVERED, 2, 1000);
	assert_int_equal(store_apply(st, &op, 1), STORE_OK);
	assert_true(op.applied);
	assert_int_equal(op.out_seq, 2);
	store_op_release(&op);
	op = receipt_op(bob, STORE_DELIVERED, 1, 1100); /* lower: ignored */
	assert_int_equal(store_apply(st, &op, 1), STORE_OK);
	assert_false(op.applied);
	store_op_release(&op);
	op = receipt_op(bob, STORE_READ, 50, 2000); /* clamped to the head, 3 */
	assert_int_equal(store_apply(st, &op, 1), STORE_OK);
	assert_true(op.applied);
	assert_int_equal(op.out_seq, 3);
	store_op_release(&op);
	op = receipt_op(carol, STORE_READ, 1, 2000);
	assert_int_equal(store_apply(st, &op, 1), STORE_OK);
	assert_int_equal(op.status, STORE_FORBIDDEN);

	/* Message 1 (alice's): bob received it at 1000, read at 2000. */
	assert_int_equal(store_receipts(st, conv, alice, 1, NOW, &r, &n), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].user_id, bob);
	assert_int_equal(r[0].delivered_at, 1000);
	assert_int_equal(r[0].read_at, 2000);
	free(r);
	/* Message 3 (bob's own a1): the other member is alice, who has not. */
	assert_int_equal(store_receipts(st, conv, alice, 3, NOW, &r, &n), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].user_id, alice);
	assert_int_equal(r[0].delivered_at, 0);
	free(r);
	/* Message 3 for bob: delivered only by the read at 2000. */
	assert_int_equal(store_receipts(st, conv, carol, 1, NOW, &r, &n), STORE_FORBIDDEN);
	assert_int_equal(store_receipts(st, conv, alice, 4, NOW, &r, &n), STORE_NOT_FOUND);
	/* 90 days on, a message's detail is gone: asked for, it is not found. */
	assert_int_equal(store_receipts(st, conv, alice, 1, NOW + 91LL * 86400000, &r, &n),
	                 STORE_NOT_FOUND);
	/* At the edge: STORE_RECEIPT_DETAIL_DAYS to the millisecond after
	 * message 1 was sent (at its op's now_ms) its detail is still there;
	 * a millisecond later it is not. */
	{
		const int64_t sent = 1704067200000LL + 100, keep = STORE_RECEIPT_DETAIL_DAYS * DAY_MS;
		assert_int_equal(store_receipts(st, conv, alice, 1, sent + keep, &r, &n), STORE_OK);
		assert_int_equal(n, 1);
		assert_int_equal(r[0].read_at, 2000);
		free(r);
		assert_int_equal(store_receipts(st, conv, alice, 1, sent + keep + 1, &r, &n), STORE_NOT_FOUND);
	}
	/* Expiry deletes the marks made before a time, in slices. */
	{
		size_t d;
		/* "Before": the mark made at 1000 is not before 1000. */
		assert_int_equal(store_expire_receipts(st, 1000, 10, &d), STORE_OK);
		assert_int_equal(d, 0);
		assert_int_equal(store_expire_receipts(st, 3000, 1, &d), STORE_OK);
		assert_int_equal(d, 1);
		assert_int_equal(store_expire_receipts(st, 3000, 10, &d), STORE_OK);
		assert_int_equal(d, 1);
		assert_int_equal(store_expire_receipts(st, 3000, 10, &d), STORE_OK);
		assert_int_equal(d, 0);
	}
}

static void test_history_and_list(void **state)
{
	store_message_t *m;
	store_conv_t *cs;
	store_head_t *h;
	size_t n;
	int more;

	(void)state;
	assert_int_equal(store_history(st, conv, alice, 0, 2, SIZE_MAX, &m, &n, &more), STORE_OK);
	assert_int_equal(n, 2);
	assert_int_equal(m[0].seq, 2);
	assert_int_equal(m[1].seq, 3);
	assert_true(more);
	assert_string_equal(m[1].body, "bob's own a1");
	store_messages_free(m, n);
	assert_int_equal(store_history(st, conv, alice, 2, 50, SIZE_MAX, &m, &n, &more), STORE_OK);
	assert_int_equal(n, 1);
	assert_false(more);
	store_messages_free(m, n);
	assert_int_equal(store_history(st, conv, carol, 0, 50, SIZE_MAX, &m, &n, &more), STORE_FORBIDDEN);
	/* A byte bound stops the page early, and says more remain. */
	assert_int_equal(store_history(st, conv, alice, 0, 50, 1, &m, &n, &more), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(m[0].seq, 3);
	assert_true(more);
	store_messages_free(m, n);
	assert_int_equal(store_replay(st, conv, 0, 1, 3, 10, 1 << 20, &m, &n), STORE_OK);
	assert_int_equal(n, 2);
	assert_int_equal(m[0].seq, 2);
	store_messages_free(m, n);
	assert_int_equal(store_replay(st, conv, 0, 0, 3, 10, 1, &m, &n), STORE_OK); /* byte cap */
	assert_int_equal(n, 1);
	store_messages_free(m, n);

	assert_int_equal(store_conv_list(st, alice, NULL, 100, &cs, &n, &more), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(cs[0].last_seq, 3);
	assert_int_equal(cs[0].unread, 2); /* bob's two, alice has read none */
	assert_int_equal(cs[0].nmembers, 2);
	assert_string_equal(cs[0].last_message->cmid, "a1");
	store_convs_free(cs, n);
	assert_int_equal(store_conv_list(st, bob, NULL, 100, &cs, &n, &more), STORE_OK);
	assert_int_equal(cs[0].read_seq, 3);
	assert_int_equal(cs[0].unread, 0);
	store_convs_free(cs, n);
	assert_int_equal(store_heads(st, carol, &h, &n), STORE_OK);
	assert_int_equal(n, 0);
	free(h);
}

/* The 256-member rule, at its edge: a group of 256 keeps delivered
 * watermarks and per-member detail, one of 257 keeps read watermarks only. */
static void test_large_group_rule(void **state)
{
	int64_t others[300], g256, g257;
	store_op_t op;
	store_receipt_t *r;
	size_t n;
	int i;

	(void)state;
	/* No receipt marks from earlier tests before this one's (at 5000 and
	 * 6000), so that their count below is this test's. */
	{
		size_t d;
		do
			assert_int_equal(store_expire_receipts(st, 5000, 1000, &d), STORE_OK);
		while (d);
	}
	for (i = 0; i < 256; i++) {
		char name[32];
		snprintf(name, sizeof name, "member%d", i);
		assert_int_equal(store_user_create(st, name, "x", 1, &others[i]), STORE_OK);
	}
	assert_int_equal(store_group_create(st, alice, others, 255, "g256", 10, 0, &g256, NULL), STORE_OK);
	assert_int_equal(store_group_create(st, alice, others, 256, "g257", 10, 0, &g257, NULL), STORE_OK);
	for (i = 0; i < 2; i++) {
		int64_t g = i ? g257 : g256;
		op = send_op(alice, "m", "hello", (int64_t)(300 + i) << 22);
		op.conv = g;
		assert_int_equal(store_apply(st, &op, 1), STORE_OK);
		assert_int_equal(op.status, STORE_OK);
		assert_int_equal(op.nmembers, 0); /* groups: recipients are read by the fan-out */
		store_op_release(&op);
		op = receipt_op(others[0], STORE_DELIVERED, 1, 5000);
		op.conv = g;
		assert_int_equal(store_apply(st, &op, 1), STORE_OK);
		assert_int_equal(op.status, STORE_OK);
		assert_int_equal(op.applied, i == 0); /* not kept in the big one */
		store_op_release(&op);
		op = receipt_op(others[0], STORE_READ, 1, 6000);
		op.conv = g;
		assert_int_equal(store_apply(st, &op, 1), STORE_OK);
		assert_true(op.applied);
		store_op_release(&op);
	}
	assert_int_equal(store_receipts(st, g256, alice, 1, 7000, &r, &n), STORE_OK);
	assert_int_equal(n, 255);
	for (size_t k = 0; k < n; k++)
		if (r[k].user_id == others[0])
			assert_int_equal(r[k].delivered_at, 5000);
	free(r);
	{
		int64_t count;
		assert_int_equal(store_read_count(st, g257, alice, 1, &count), STORE_OK);
		assert_int_equal(count, 1);
	}
	/* The watermarks: in the small group delivered and read moved; in
	 * the big one only read did (its delivered stays where it joined). */
	for (i = 0; i < 2; i++) {
		store_watermark_t *w;
		size_t k, found = 0;
		assert_int_equal(store_watermarks(st, i ? g257 : g256, &w, &n), STORE_OK);
		assert_int_equal(n, i ? 257 : 256);
		for (k = 0; k < n; k++) {
			if (w[k].user_id != others[0])
				continue;
			found++;
			assert_int_equal(w[k].joined_seq, 0);
			assert_int_equal(w[k].delivered_seq, i ? 0 : 1);
			assert_int_equal(w[k].read_seq, 1);
		}
		assert_int_equal(found, 1);
		free(w);
	}
	/* No per-member detail in the big group: of the four receipts, only
	 * the small group's two left marks (what delivered_at / read_at are
	 * read from), so only two expire. */
	{
		size_t d;
		assert_int_equal(store_expire_receipts(st, 6001, 1000, &d), STORE_OK);
		assert_int_equal(d, 2);
	}
}

/* A device unused for longer than the idle time is logged out at its
 * next use; a use is recorded, so a device in use never expires. */
static void test_device_idle_expiry(void **state)
{
	uint8_t h[32];
	store_device_t *d;
	int64_t dev, evicted, u, got;
	size_t n;
	const int64_t hour = 3600000;

	(void)state;
	memset(h, 0x77, sizeof h);
	assert_int_equal(store_device_create(st, bob, "tablet", h, 1000, 0, &dev, &evicted), STORE_OK);
	/* Used after 2 hours: recorded (a use older than an hour is written). */
	assert_int_equal(store_device_by_token(st, h, 1000 + 2 * hour, 10 * hour, &u, &got), STORE_OK);
	assert_int_equal(got, dev);
	assert_int_equal(store_devices(st, bob, 0, &d, &n), STORE_OK);
	assert_int_equal(n, 1);
	assert_string_equal(d[0].name, "tablet");
	assert_int_equal(d[0].last_used, 1000 + 2 * hour);
	free(d);
	/* Nine hours after that use it still works; then eleven: gone. */
	assert_int_equal(store_device_by_token(st, h, 1000 + 11 * hour, 10 * hour, &u, &got), STORE_OK);
	assert_int_equal(store_device_by_token(st, h, 1000 + 22 * hour, 10 * hour, &u, &got), STORE_NOT_FOUND);
	assert_int_equal(store_device_by_token(st, h, 1000 + 22 * hour, 0, &u, &got), STORE_NOT_FOUND);
	assert_int_equal(store_devices(st, bob, 0, &d, &n), STORE_OK);
	assert_int_equal(n, 0);
	free(d);
}

/* Contacts are who one has written to in a direct chat: the first message
 * makes its sender a writer there, and presence is visible only to those
 * the user wrote to. */
static void test_contacts_and_presence(void **state)
{
	store_contact_t c;
	int64_t seen, dave, erin, cv;
	store_op_t op;
	int created;

	(void)state;
	assert_int_equal(store_user_create(st, "dave", "x", 1, &dave), STORE_OK);
	assert_int_equal(store_user_create(st, "erin", "x", 1, &erin), STORE_OK);
	assert_int_equal(store_contact(st, dave, erin, &c), STORE_OK);
	assert_int_equal(c.direct, 0);
	assert_int_equal(store_contact(st, dave, 999999, &c), STORE_NOT_FOUND);
	assert_int_equal(store_direct_open(st, dave, erin, 5, 0, &cv, &created, NULL), STORE_OK);
	/* An opened chat nobody wrote in: strangers still. */
	assert_int_equal(store_contact(st, dave, erin, &c), STORE_OK);
	assert_int_equal(c.direct, cv);
	assert_false(c.i_wrote);
	assert_false(c.they_wrote);
	assert_int_equal(store_watchable(st, erin, dave, &seen), STORE_FORBIDDEN);
	assert_int_equal(store_shares_conversation(st, erin, dave), STORE_OK);
	op = send_op(dave, "d1", "hi erin", (int64_t)900 << 22);
	op.conv = cv;
	assert_int_equal(store_apply(st, &op, 1), STORE_OK);
	assert_int_equal(op.status, STORE_OK);
	store_op_release(&op);
	assert_int_equal(store_contact(st, erin, dave, &c), STORE_OK);
	assert_true(c.they_wrote);
	assert_false(c.i_wrote);
	/* Dave wrote to erin: erin may see dave's presence, not the reverse. */
	assert_int_equal(store_watchable(st, erin, dave, &seen), STORE_OK);
	assert_int_equal(store_watchable(st, dave, erin, &seen), STORE_FORBIDDEN);
	/* Group co-membership grants no presence. */
	assert_int_equal(store_watchable(st, alice, carol, &seen), STORE_FORBIDDEN);
}

/* A block holds in the direct chat both ways, hides presence, is listed,
 * counted for the blocked, and undone by unblocking. */
static void test_blocks(void **state)
{
	int64_t fred, gina, cv, seen, count, *ids;
	store_contact_t c;
	store_block_t *b;
	store_op_t op;
	size_t n;
	int created, more;

	(void)state;
	assert_int_equal(store_user_create(st, "fred", "x", 1, &fred), STORE_OK);
	assert_int_equal(store_user_create(st, "gina", "x", 1, &gina), STORE_OK);
	assert_int_equal(store_direct_open(st, fred, gina, 5, 0, &cv, &created, NULL), STORE_OK);
	op = send_op(gina, "g1", "hello fred", (int64_t)910 << 22);
	op.conv = cv;
	assert_int_equal(store_apply(st, &op, 1), STORE_OK);
	store_op_release(&op);
	assert_int_equal(store_watchable(st, fred, gina, &seen), STORE_OK);
	/* Fred blocks gina. */
	assert_int_equal(store_block(st, fred, gina, 7000), STORE_OK);
	assert_int_equal(store_block(st, fred, gina, 7001), STORE_EXISTS);
	assert_int_equal(store_block(st, fred, 999999, 7001), STORE_NOT_FOUND);
	assert_int_equal(store_contact(st, gina, fred, &c), STORE_OK);
	assert_true(c.they_blocked);
	assert_false(c.i_blocked);
	/* Neither may send now; the blocker is told it is its own block. A
	 * repeat of what was stored before is still acknowledged. */
	op = send_op(gina, "g2", "are you there", (int64_t)911 << 22);
	op.conv = cv;
	assert_int_equal(store_apply(st, &op, 1), STORE_OK);
	assert_int_equal(op.status, STORE_BLOCKED);
	assert_false(op.out_blocked_by_me);
	store_op_release(&op);
	op = send_op(fred, "f1", "go away", (int64_t)912 << 22);
	op.conv = cv;
	assert_int_equal(store_apply(st, &op, 1), STORE_OK);
	assert_int_equal(op.status, STORE_BLOCKED);
	assert_true(op.out_blocked_by_me);
	store_op_release(&op);
	op = send_op(gina, "g1", "hello fred", (int64_t)913 << 22);
	op.conv = cv;
	assert_int_equal(store_apply(st, &op, 1), STORE_OK);
	assert_int_equal(op.status, STORE_EXISTS);
	store_op_release(&op);
	/* Gina (blocked by fred) may not see fred's presence; fred sees hers
	 * no more either way than before (she wrote, she did not block). */
	assert_int_equal(store_watchable(st, fred, gina, &seen), STORE_OK);
	assert_int_equal(store_blocked_in_conv(st, fred, cv, &ids, &n), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(ids[0], gina);
	free(ids);
	assert_int_equal(store_blocked_in_conv(st, gina, cv, &ids, &n), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(ids[0], fred);
	free(ids);
	assert_int_equal(store_blocks(st, fred, 0, 10, &b, &n, &more), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(b[0].user_id, gina);
	assert_int_equal(b[0].created_at, 7000);
	assert_false(more);
	free(b);
	/* Gina never reached fred as a first contact: his block does not
	 * count against her budget. Once she had, it does. */
	assert_int_equal(store_blocks_received(st, gina, 6000, &count), STORE_OK);
	assert_int_equal(count, 0);
	assert_int_equal(store_first_contacts_add(st, gina, &fred, 1, 6500), STORE_OK);
	assert_int_equal(store_blocks_received(st, gina, 6000, &count), STORE_OK);
	assert_int_equal(count, 1);
	assert_int_equal(store_blocks_received(st, gina, 8000, &count), STORE_OK);
	assert_int_equal(count, 0);
	/* Unblocked: sending works again. */
	assert_int_equal(store_unblock(st, fred, gina), STORE_OK);
	assert_int_equal(store_unblock(st, fred, gina), STORE_NOT_FOUND);
	op = send_op(gina, "g2", "are you there", (int64_t)914 << 22);
	op.conv = cv;
	assert_int_equal(store_apply(st, &op, 1), STORE_OK);
	assert_int_equal(op.status, STORE_OK);
	assert_int_equal(op.out_seq, 2); /* the refused sends took no seq */
	store_op_release(&op);
	/* A block made before a chat exists holds in it from the start. */
	{
		int64_t hal, cv2;
		assert_int_equal(store_user_create(st, "hal", "x", 1, &hal), STORE_OK);
		assert_int_equal(store_block(st, hal, fred, 7100), STORE_OK);
		assert_int_equal(store_direct_open(st, fred, hal, 7200, 0, &cv2, &created, NULL), STORE_OK);
		op = send_op(fred, "f9", "hi hal", (int64_t)915 << 22);
		op.conv = cv2;
		assert_int_equal(store_apply(st, &op, 1), STORE_OK);
		assert_int_equal(op.status, STORE_BLOCKED);
		store_op_release(&op);
	}
}

static void test_settings_and_first_contacts(void **state)
{
	store_settings_t s;
	int64_t count, ts, targets[3] = {bob, carol, bob};

	(void)state;
	assert_int_equal(store_settings_get(st, alice, &s), STORE_OK);
	assert_int_equal(s.group_adds, STORE_ADDS_EVERYONE);
	assert_false(s.strangers_exempt);
	assert_int_equal(store_set_group_adds(st, alice, STORE_ADDS_CONTACTS), STORE_OK);
	assert_int_equal(store_set_strangers_exempt(st, alice, 1), STORE_OK);
	assert_int_equal(store_set_strangers_exempt(st, 999999, 1), STORE_NOT_FOUND);
	assert_int_equal(store_settings_get(st, alice, &s), STORE_OK);
	assert_int_equal(s.group_adds, STORE_ADDS_CONTACTS);
	assert_true(s.strangers_exempt);
	assert_int_equal(store_first_contacts_add(st, carol, targets, 2, 1000), STORE_OK);
	assert_int_equal(store_first_contacts_add(st, carol, targets + 2, 1, 2000), STORE_OK);
	assert_int_equal(store_first_contacts(st, carol, 500, &count), STORE_OK);
	assert_int_equal(count, 3);
	assert_int_equal(store_first_contacts(st, carol, 1500, &count), STORE_OK);
	assert_int_equal(count, 1);
	assert_int_equal(store_first_contact_at(st, carol, 0, 2, &ts), STORE_OK);
	assert_int_equal(ts, 2000);
	assert_int_equal(store_first_contact_at(st, carol, 0, 3, &ts), STORE_NOT_FOUND);
	{
		size_t d;
		assert_int_equal(store_expire_first_contacts(st, 1500, 10, &d), STORE_OK);
		assert_int_equal(d, 2);
		assert_int_equal(store_first_contacts(st, carol, 0, &count), STORE_OK);
		assert_int_equal(count, 1);
	}
}

/* Nobody is in more than max_convs conversations: a new direct chat or a
 * group that would pass it is refused, naming who is full; leaving makes
 * room. */
static void test_conversation_cap(void **state)
{
	int64_t u[4], cv, g, full = 0;
	char name[24];
	int i, created;

	(void)state;
	for (i = 0; i < 4; i++) {
		snprintf(name, sizeof name, "capped%d", i);
		assert_int_equal(store_user_create(st, name, "x", 1, &u[i]), STORE_OK);
	}
	assert_int_equal(store_direct_open(st, u[0], u[1], 5, 2, &cv, &created, &full), STORE_OK);
	assert_int_equal(store_direct_open(st, u[0], u[2], 5, 2, &cv, &created, &full), STORE_OK);
	assert_int_equal(store_direct_open(st, u[0], u[3], 5, 2, &cv, &created, &full), STORE_TOO_MANY);
	assert_int_equal(full, u[0]);
	/* The refused chat is not half made. */
	assert_int_equal(store_direct_open(st, u[3], u[1], 5, 0, &cv, &created, &full), STORE_OK);
	assert_int_equal(store_group_create(st, u[3], &u[0], 1, NULL, 5, 2, &g, &full), STORE_TOO_MANY);
	assert_int_equal(full, u[0]);
	{
		/* Nor is the refused group: u3 is in its one direct chat only. */
		store_head_t *h;
		size_t n;
		assert_int_equal(store_heads(st, u[3], &h, &n), STORE_OK);
		assert_int_equal(n, 1);
		assert_int_equal(h[0].conv, cv);
		free(h);
	}
	assert_int_equal(store_group_create(st, u[1], &u[2], 1, NULL, 5, 2, &g, &full), STORE_TOO_MANY);
	assert_int_equal(full, u[1]); /* u1 is in two already */
	assert_int_equal(store_group_create(st, u[2], &u[3], 1, NULL, 5, 3, &g, &full), STORE_OK);
	assert_int_equal(store_member_add(st, g, u[2], u[0], 6, 2, &full), STORE_TOO_MANY);
	assert_int_equal(store_member_add(st, g, u[2], u[0], 6, 3, &full), STORE_OK);
	{
		int64_t promoted;
		assert_int_equal(store_member_remove(st, g, u[0], u[0], &promoted), STORE_OK);
	}
	assert_int_equal(store_member_add(st, g, u[2], u[0], 6, 3, &full), STORE_OK);
}

/* The list pages: most recent activity first, a cursor going on after
 * the last entry of a page, and no entry twice or missed. */
static void test_list_pages(void **state)
{
	int64_t u[8], ids[7], me;
	store_conv_t *cs;
	store_conv_cursor_t after;
	size_t n, seen = 0;
	int i, created, more;

	(void)state;
	assert_int_equal(store_user_create(st, "pager", "x", 1, &me), STORE_OK);
	for (i = 0; i < 7; i++) {
		char name[24];
		snprintf(name, sizeof name, "paged%d", i);
		assert_int_equal(store_user_create(st, name, "x", 1, &u[i]), STORE_OK);
		/* Created at the same millisecond: the id breaks the tie. */
		assert_int_equal(store_direct_open(st, me, u[i], 20000, 0, &ids[i], &created, NULL), STORE_OK);
	}
	assert_int_equal(store_conv_list(st, me, NULL, 3, &cs, &n, &more), STORE_OK);
	while (1) {
		size_t k;
		for (k = 0; k < n; k++, seen++)
			assert_int_equal(cs[k].id, ids[6 - seen]);
		if (!more) {
			store_convs_free(cs, n);
			break;
		}
		after.activity = cs[n - 1].activity;
		after.id = cs[n - 1].id;
		store_convs_free(cs, n);
		assert_int_equal(store_conv_list(st, me, &after, 3, &cs, &n, &more), STORE_OK);
	}
	assert_int_equal(seen, 7);
	/* A message moves its conversation, the oldest, to the top. */
	{
		store_op_t op = send_to(ids[0], me, "up", "to the top");
		assert_int_equal(apply1(&op), STORE_OK);
		assert_int_equal(store_conv_list(st, me, NULL, 2, &cs, &n, &more), STORE_OK);
		assert_int_equal(n, 2);
		assert_int_equal(cs[0].id, ids[0]);
		assert_int_equal(cs[1].id, ids[6]);
		assert_true(cs[0].activity > cs[1].activity);
		assert_true(more);
		store_convs_free(cs, n);
	}
}

/* The backend's entry (store.h): the name it answers to, a schema made
 * by migrate on a fresh location and found current the second time, a
 * claim and a handle on what migrate made. */
static void test_backend_entry(void **state)
{
	char loc[512];
	store_claim_t *c;
	store_t *o;
	int from = -1, to = -1;
	int64_t id;

	(void)state;
	assert_non_null(store_backend_name(location));
	assert_string_equal(store_backend_name(location), be->name);
	assert_true(store_memory_bytes() >= 0);
	assert_int_equal(be->fresh(loc, sizeof loc), 0);
	assert_int_equal(store_migrate(loc, &from, &to), 0);
	assert_int_equal(from, 0);
	assert_true(to > 0);
	assert_int_equal(store_migrate(loc, &from, &to), 0);
	assert_int_equal(from, to);
	assert_non_null(c = store_claim(loc));
	assert_non_null(o = store_open(loc));
	assert_int_equal(store_user_by_name(o, "alice", &id, NULL), STORE_NOT_FOUND);
	assert_int_equal(store_user_create(o, "alice", "x", 1, &id), STORE_OK);
	store_close(o);
	store_release(c);
	be->discard(loc);
}

/* What the admission hook saw. */
typedef struct admission {
	int calls;
	size_t recipients[8];
	const char *refuse;     /* the cmid it refuses */
} admission_t;

static int64_t admit_hook(void *ud, store_op_t *op, size_t recipients)
{
	admission_t *a = ud;

	if (a->calls < 8)
		a->recipients[a->calls] = recipients;
	a->calls++;
	if (a->refuse && !strcmp(op->cmid, a->refuse)) {
		op->out_limit_kind = 7; /* the hook's own code, passed through */
		return 250;
	}
	return 0;
}

/* The admission hook (the writer's budgets) is asked once for each new
 * message, with the number of members it reaches but its sender, and
 * only for a message that would be stored: never for a repeat, a send
 * into a blocked chat or a non-member's, which it would charge for
 * nothing. A refused send stores nothing and takes no seq. */
static void test_admission(void **state)
{
	int64_t u1 = new_user("adm1"), u2 = new_user("adm2"), u3 = new_user("adm3"), u4 = new_user("adm4");
	int64_t cv = new_direct(u1, u2), g, others[3] = {u2, u3, u4};
	admission_t a = {.refuse = "over"};
	store_message_t *m;
	store_op_t ops[4], op;
	size_t i, n;
	int more;

	(void)state;
	ops[0] = send_to(cv, u1, "first", "one");
	ops[1] = send_to(cv, u1, "over", "refused");
	ops[2] = send_to(cv, u1, "second", "two");
	ops[3] = send_to(cv, u1, "first", "one again");
	for (i = 0; i < 4; i++) {
		ops[i].admit = admit_hook;
		ops[i].admit_ud = &a;
	}
	assert_int_equal(store_apply(st, ops, 4), STORE_OK);
	assert_int_equal(ops[0].status, STORE_OK);
	assert_int_equal(ops[0].out_seq, 1);
	assert_int_equal(ops[1].status, STORE_LIMITED);
	assert_int_equal(ops[1].out_retry_ms, 250);
	assert_int_equal(ops[1].out_limit_kind, 7);
	assert_int_equal(ops[2].status, STORE_OK);
	assert_int_equal(ops[2].out_seq, 2);
	assert_int_equal(ops[3].status, STORE_EXISTS);
	assert_int_equal(ops[3].out_seq, 1);
	assert_int_equal(a.calls, 3);
	for (i = 0; i < 3; i++)
		assert_int_equal(a.recipients[i], 1);
	for (i = 0; i < 4; i++)
		store_op_release(&ops[i]);
	assert_int_equal(store_history(st, cv, u2, 0, 10, SIZE_MAX, &m, &n, &more), STORE_OK);
	assert_int_equal(n, 2);
	assert_string_equal(m[0].body, "one");
	assert_string_equal(m[1].body, "two");
	store_messages_free(m, n);
	/* A group of four: three recipients. */
	assert_int_equal(store_group_create(st, u1, others, 3, NULL, 10, 0, &g, NULL), STORE_OK);
	a.calls = 0;
	op = send_to(g, u1, "g1", "hi all");
	op.admit = admit_hook;
	op.admit_ud = &a;
	assert_int_equal(apply1(&op), STORE_OK);
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.recipients[0], 3);
	/* Refused before the hook: a block, a non-member. */
	assert_int_equal(store_block(st, u2, u1, 20), STORE_OK);
	op = send_to(cv, u1, "third", "blocked");
	op.admit = admit_hook;
	op.admit_ud = &a;
	assert_int_equal(apply1(&op), STORE_BLOCKED);
	op = send_to(cv, u3, "intruder", "not a member");
	op.admit = admit_hook;
	op.admit_ud = &a;
	assert_int_equal(apply1(&op), STORE_FORBIDDEN);
	assert_int_equal(a.calls, 1);
}

/* One batch across conversations: each conversation's seqs are gapless
 * on their own; a cmid is unique per sender and conversation, so the
 * same one in another conversation is another message; a direct chat's
 * two members ride along with each stored send. */
static void test_batch_across_conversations(void **state)
{
	int64_t x = new_user("bx1"), y = new_user("bx2"), z = new_user("bx3");
	int64_t c1 = new_direct(x, y), c2 = new_direct(x, z);
	store_head_t *h;
	store_op_t ops[6];
	size_t i, n, k;

	(void)state;
	ops[0] = send_to(c1, x, "m", "to y");
	ops[1] = send_to(c2, x, "m", "to z");
	ops[2] = send_to(c1, y, "n", "from y");
	ops[3] = send_to(c2, z, "n", "from z");
	ops[4] = send_to(c1, x, "m", "to y again");
	ops[5] = send_to(c2, x, "o", "to z again");
	assert_int_equal(store_apply(st, ops, 6), STORE_OK);
	{
		static const int want_status[6] = {STORE_OK, STORE_OK, STORE_OK, STORE_OK, STORE_EXISTS, STORE_OK};
		static const int64_t want_seq[6] = {1, 1, 2, 2, 1, 3};
		for (i = 0; i < 6; i++) {
			assert_int_equal(ops[i].status, want_status[i]);
			assert_int_equal(ops[i].out_seq, want_seq[i]);
			assert_int_equal(ops[i].conv_kind, STORE_DIRECT);
		}
	}
	assert_int_equal(ops[4].out_id, ops[0].out_id);
	assert_int_not_equal(ops[1].out_id, ops[0].out_id);
	assert_int_equal(ops[0].nmembers, 2);
	assert_int_equal(ops[0].members[0], x < y ? x : y);
	assert_int_equal(ops[0].members[1], x < y ? y : x);
	assert_int_equal(ops[3].nmembers, 2);
	for (i = 0; i < 6; i++)
		store_op_release(&ops[i]);
	assert_int_equal(store_heads(st, x, &h, &n), STORE_OK);
	assert_int_equal(n, 2);
	for (k = 0; k < n; k++)
		assert_int_equal(h[k].last_seq, h[k].conv == c1 ? 2 : 3);
	assert_true((h[0].conv == c1 && h[1].conv == c2) || (h[0].conv == c2 && h[1].conv == c1));
	free(h);
}

/* A read implies delivery: a read watermark carries the delivered one
 * up with it, and a message read before its delivered receipt came
 * counts as delivered at the read. */
static void test_read_implies_delivered(void **state)
{
	int64_t s1 = new_user("rd_sender"), r1 = new_user("rd_reader"), cv = new_direct(s1, r1);
	const int64_t t0 = 10000000;
	store_watermark_t *w;
	store_receipt_t *r;
	store_op_t ops[3], op;
	size_t i, n;

	(void)state;
	for (i = 0; i < 3; i++)
		ops[i] = send_to(cv, s1, i == 0 ? "r1" : i == 1 ? "r2" : "r3", "x");
	assert_int_equal(store_apply(st, ops, 3), STORE_OK);
	for (i = 0; i < 3; i++)
		store_op_release(&ops[i]);
	/* Read up to 2 with no delivered receipt before it. */
	op = receipt_op(r1, STORE_READ, 2, t0);
	op.conv = cv;
	assert_int_equal(apply1(&op), STORE_OK);
	assert_true(op.applied);
	assert_int_equal(op.out_seq, 2);
	assert_int_equal(op.out_prev, 0);
	assert_int_equal(store_watermarks(st, cv, &w, &n), STORE_OK);
	assert_int_equal(n, 2);
	for (i = 0; i < n; i++) {
		assert_int_equal(w[i].delivered_seq, w[i].user_id == r1 ? 2 : 0);
		assert_int_equal(w[i].read_seq, w[i].user_id == r1 ? 2 : 0);
	}
	free(w);
	/* A delivered receipt for what was read is already below the mark. */
	op = receipt_op(r1, STORE_DELIVERED, 2, t0 + 100);
	op.conv = cv;
	assert_int_equal(apply1(&op), STORE_OK);
	assert_false(op.applied);
	op = receipt_op(r1, STORE_DELIVERED, 3, t0 + 200);
	op.conv = cv;
	assert_int_equal(apply1(&op), STORE_OK);
	assert_true(op.applied);
	assert_int_equal(op.out_prev, 2);
	/* Messages 1 and 2: delivered when read (not at the later delivered
	 * receipt); message 3: delivered, not read. */
	for (i = 1; i <= 3; i++) {
		assert_int_equal(store_receipts(st, cv, s1, (int64_t)i, NOW, &r, &n), STORE_OK);
		assert_int_equal(n, 1);
		assert_int_equal(r[0].user_id, r1);
		assert_int_equal(r[0].delivered_at, i < 3 ? t0 : t0 + 200);
		assert_int_equal(r[0].read_at, i < 3 ? t0 : 0);
		free(r);
	}
	assert_int_equal(store_watermarks(st, cv, &w, &n), STORE_OK);
	for (i = 0; i < n; i++)
		if (w[i].user_id == r1) {
			assert_int_equal(w[i].delivered_seq, 3);
			assert_int_equal(w[i].read_seq, 2);
		}
	free(w);
}

/* STORE_GROUP_MAX members, the creator among them, and no more: a group
 * made one too big is refused whole, one at the cap takes no member
 * more until one leaves. */
static void test_group_member_cap(void **state)
{
	int64_t *u = calloc(STORE_GROUP_MAX + 1, sizeof *u), g, promoted, *ids;
	store_head_t *h;
	size_t n;
	int i;

	(void)state;
	assert_non_null(u);
	for (i = 0; i <= STORE_GROUP_MAX; i++) {
		char name[32];
		snprintf(name, sizeof name, "gm%d", i);
		u[i] = new_user(name);
	}
	assert_int_equal(store_group_create(st, u[0], u + 1, STORE_GROUP_MAX, "too big", 10, 0, &g, NULL),
	                 STORE_FULL);
	assert_int_equal(store_heads(st, u[0], &h, &n), STORE_OK);
	assert_int_equal(n, 0);
	free(h);
	assert_int_equal(store_group_create(st, u[0], u + 1, STORE_GROUP_MAX - 1, "full", 10, 0, &g, NULL),
	                 STORE_OK);
	assert_int_equal(store_members(st, g, &ids, &n), STORE_OK);
	assert_int_equal(n, STORE_GROUP_MAX);
	free(ids);
	assert_int_equal(store_member_add(st, g, u[0], u[STORE_GROUP_MAX], 11, 0, NULL), STORE_FULL);
	assert_int_equal(store_member_remove(st, g, u[0], u[1], &promoted), STORE_OK);
	assert_int_equal(promoted, 0);
	assert_int_equal(store_member_add(st, g, u[0], u[STORE_GROUP_MAX], 12, 0, NULL), STORE_OK);
	assert_int_equal(store_member_add(st, g, u[0], u[1], 13, 0, NULL), STORE_FULL);
	free(u);
}

static void expect_admins(int64_t g, int64_t as, int64_t admin)
{
	store_conv_t c;

	assert_int_equal(store_conv_get(st, g, as, &c), STORE_OK);
	assert_int_equal(c.nadmins, 1);
	assert_int_equal(c.admins[0], admin);
	store_conv_clear(&c);
}

/* Who may change a group, and who becomes admin when the last admin
 * leaves: the longest-standing member (earliest to join), whatever its
 * id; between members who joined at the same moment, the lowest id, so
 * that every backend picks the same one. */
static void test_admin_promotion(void **state)
{
	int64_t a = new_user("pr_a"), low = new_user("pr_low"), high = new_user("pr_high");
	int64_t late = new_user("pr_late"), g, g2, promoted = -1, pair[2];
	int64_t *ids;
	size_t n;

	(void)state;
	assert_true(low < high);
	assert_int_equal(store_group_create(st, a, &high, 1, "promo", 100, 0, &g, NULL), STORE_OK);
	expect_admins(g, a, a);
	assert_int_equal(store_member_add(st, g, a, low, 200, 0, NULL), STORE_OK);
	/* Only admins add, and remove others; not twice; only users. */
	assert_int_equal(store_member_add(st, g, high, late, 250, 0, NULL), STORE_FORBIDDEN);
	assert_int_equal(store_member_remove(st, g, high, low, &promoted), STORE_FORBIDDEN);
	assert_int_equal(store_member_add(st, g, a, low, 250, 0, NULL), STORE_EXISTS);
	assert_int_equal(store_member_add(st, g, a, 999999, 250, 0, NULL), STORE_NOT_FOUND);
	assert_int_equal(store_member_add(st, g, carol, late, 250, 0, NULL), STORE_FORBIDDEN);
	/* Group operations on a direct chat. */
	assert_int_equal(store_member_add(st, conv, alice, carol, 250, 0, NULL), STORE_NOT_GROUP);
	assert_int_equal(store_member_remove(st, conv, alice, bob, &promoted), STORE_NOT_GROUP);
	/* A member who is no admin leaves: nobody is promoted. */
	assert_int_equal(store_member_add(st, g, a, late, 300, 0, NULL), STORE_OK);
	assert_int_equal(store_member_remove(st, g, late, late, &promoted), STORE_OK);
	assert_int_equal(promoted, 0);
	assert_int_equal(store_member_remove(st, g, a, late, &promoted), STORE_NOT_FOUND);
	/* The last admin leaves: high (joined at 100) over low (at 200). */
	assert_int_equal(store_member_remove(st, g, a, a, &promoted), STORE_OK);
	assert_int_equal(promoted, high);
	expect_admins(g, low, high);
	assert_int_equal(store_member_add(st, g, high, a, 400, 0, NULL), STORE_OK);
	assert_int_equal(store_member_remove(st, g, high, low, &promoted), STORE_OK);
	assert_int_equal(promoted, 0);
	/* Joined together: the lowest id. */
	pair[0] = high;
	pair[1] = low;
	assert_int_equal(store_group_create(st, a, pair, 2, NULL, 500, 0, &g2, NULL), STORE_OK);
	assert_int_equal(store_member_remove(st, g2, a, a, &promoted), STORE_OK);
	assert_int_equal(promoted, low);
	expect_admins(g2, high, low);
	/* The last members go: nobody to promote. */
	assert_int_equal(store_member_remove(st, g2, low, high, &promoted), STORE_OK);
	assert_int_equal(promoted, 0);
	assert_int_equal(store_member_remove(st, g2, low, low, &promoted), STORE_OK);
	assert_int_equal(promoted, 0);
	assert_int_equal(store_members(st, g2, &ids, &n), STORE_OK);
	assert_int_equal(n, 0);
	free(ids);
}

/* A member added later sees the group from where it joined: history,
 * unread, receipts and read counts of earlier messages are not its;
 * every membership change moves the version a send is stored under. */
static void test_joined_view(void **state)
{
	int64_t a = new_user("jv_a"), b = new_user("jv_b"), late = new_user("jv_late"), g;
	int64_t v0, v1, v2, last, joined, count;
	store_member_t *ml;
	store_message_t *m;
	store_receipt_t *r;
	store_watermark_t *w;
	store_sent_t *sent;
	store_head_t *h;
	store_conv_t c;
	store_op_t ops[2], op;
	int64_t *ids;
	size_t n, i;
	int more, found;

	(void)state;
	assert_int_equal(store_group_create(st, a, &b, 1, "jv", 100, 0, &g, NULL), STORE_OK);
	assert_int_equal(store_member_list(st, g, &ml, &n, &v0), STORE_OK);
	assert_int_equal(n, 2);
	free(ml);
	ops[0] = send_to(g, a, "b1", "before one");
	ops[1] = send_to(g, b, "b2", "before two");
	assert_int_equal(store_apply(st, ops, 2), STORE_OK);
	for (i = 0; i < 2; i++) {
		assert_int_equal(ops[i].status, STORE_OK);
		assert_int_equal(ops[i].conv_kind, STORE_GROUP);
		assert_int_equal(ops[i].out_members_version, v0);
		store_op_release(&ops[i]);
	}
	assert_int_equal(store_member_add(st, g, a, late, 200, 0, NULL), STORE_OK);
	assert_int_equal(store_member_list(st, g, &ml, &n, &v1), STORE_OK);
	assert_int_not_equal(v1, v0);
	assert_int_equal(n, 3);
	for (i = 0, found = 0; i < n; i++) {
		assert_int_equal(ml[i].joined_seq, ml[i].user_id == late ? 2 : 0);
		found += ml[i].user_id == late;
	}
	assert_int_equal(found, 1);
	free(ml);
	assert_int_equal(store_member_head(st, g, late, &last, &joined), STORE_OK);
	assert_int_equal(last, 2);
	assert_int_equal(joined, 2);
	assert_int_equal(store_member_head(st, g, carol, &last, &joined), STORE_FORBIDDEN);
	assert_int_equal(store_history(st, g, late, 0, 10, SIZE_MAX, &m, &n, &more), STORE_OK);
	assert_int_equal(n, 0);
	assert_false(more);
	free(m);
	op = send_to(g, a, "a1", "after");
	assert_int_equal(apply1(&op), STORE_OK);
	assert_int_equal(op.out_seq, 3);
	assert_int_equal(op.out_members_version, v1);
	assert_int_equal(store_history(st, g, late, 0, 10, SIZE_MAX, &m, &n, &more), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(m[0].seq, 3);
	assert_int_equal(m[0].from, a);
	assert_string_equal(m[0].body, "after");
	assert_false(more);
	store_messages_free(m, n);
	assert_int_equal(store_history(st, g, b, 0, 10, SIZE_MAX, &m, &n, &more), STORE_OK);
	assert_int_equal(n, 3);
	store_messages_free(m, n);
	/* The conversation as each sees it. */
	assert_int_equal(store_conv_get(st, g, late, &c), STORE_OK);
	assert_int_equal(c.id, g);
	assert_int_equal(c.kind, STORE_GROUP);
	assert_string_equal(c.title, "jv");
	assert_int_equal(c.nmembers, 3);
	for (i = 1; i < c.nmembers; i++)
		assert_true(c.members[i - 1] < c.members[i]);
	assert_int_equal(c.nadmins, 1);
	assert_int_equal(c.admins[0], a);
	assert_int_equal(c.last_seq, 3);
	assert_int_equal(c.read_seq, 2); /* starts where it joined */
	assert_int_equal(c.unread, 1);
	assert_non_null(c.last_message);
	assert_int_equal(c.last_message->seq, 3);
	assert_string_equal(c.last_message->body, "after");
	assert_false(c.wrote);
	store_conv_clear(&c);
	assert_int_equal(store_conv_get(st, g, a, &c), STORE_OK);
	assert_true(c.wrote);
	assert_int_equal(c.unread, 1); /* b's; its own do not count */
	store_conv_clear(&c);
	assert_int_equal(store_conv_get(st, g, carol, &c), STORE_FORBIDDEN);
	/* Receipts and read counts: of members who were there. */
	assert_int_equal(store_receipts(st, g, late, 1, NOW, &r, &n), STORE_NOT_FOUND);
	assert_int_equal(store_receipts(st, g, a, 1, NOW, &r, &n), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].user_id, b);
	free(r);
	assert_int_equal(store_receipts(st, g, a, 3, NOW, &r, &n), STORE_OK);
	assert_int_equal(n, 2);
	free(r);
	for (i = 0; i < 2; i++) {
		op = receipt_op(i ? b : late, STORE_READ, 3, 20000000);
		op.conv = g;
		assert_int_equal(apply1(&op), STORE_OK);
		assert_true(op.applied);
	}
	assert_int_equal(store_read_count(st, g, a, 3, &count), STORE_OK);
	assert_int_equal(count, 2);
	assert_int_equal(store_read_count(st, g, a, 1, &count), STORE_OK);
	assert_int_equal(count, 1); /* b; late was not there */
	assert_int_equal(store_read_count(st, g, b, 2, &count), STORE_OK);
	assert_int_equal(count, 0); /* its own message; a has read nothing */
	assert_int_equal(store_read_count(st, g, late, 1, &count), STORE_NOT_FOUND);
	assert_int_equal(store_read_count(st, g, carol, 3, &count), STORE_FORBIDDEN);
	assert_int_equal(store_watermarks(st, g, &w, &n), STORE_OK);
	assert_int_equal(n, 3);
	for (i = 0; i < n; i++) {
		if (w[i].user_id == late) {
			assert_int_equal(w[i].joined_seq, 2);
			assert_int_equal(w[i].read_seq, 3);
			assert_int_equal(w[i].delivered_seq, 3);
		} else if (w[i].user_id == a) {
			assert_int_equal(w[i].read_seq, 0);
		}
	}
	free(w);
	/* Who sent what, and the members for the fan-out. */
	assert_int_equal(store_senders(st, g, 1, 3, &sent, &n), STORE_OK);
	assert_int_equal(n, 3);
	assert_int_equal(sent[0].seq, 1);
	assert_int_equal(sent[0].sender, a);
	assert_int_equal(sent[1].sender, b);
	assert_int_equal(sent[2].seq, 3);
	assert_int_equal(sent[2].sender, a);
	free(sent);
	assert_int_equal(store_senders(st, g, 2, 2, &sent, &n), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(sent[0].sender, b);
	free(sent);
	assert_int_equal(store_members(st, g, &ids, &n), STORE_OK);
	assert_int_equal(n, 3);
	assert_true(ids[0] < ids[1] && ids[1] < ids[2]);
	free(ids);
	assert_int_equal(store_heads(st, late, &h, &n), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(h[0].conv, g);
	assert_int_equal(h[0].last_seq, 3);
	free(h);
	/* Leaving moves the version too. */
	assert_int_equal(store_member_remove(st, g, late, late, &last), STORE_OK);
	assert_int_equal(store_member_list(st, g, &ml, &n, &v2), STORE_OK);
	assert_int_not_equal(v2, v1);
	assert_int_equal(n, 2);
	free(ml);
}

/* Last seen times, as the presence service reports them: read back by
 * whoever may watch, and never moved back by an older report (nodes of
 * a fleet report out of order). */
/* The badge of a push: what others sent and the user has not read, in
 * every conversation, a group's from where the user joined. */
/* Previews are on until turned off; a mute is one member's, of one
 * conversation, and only a member's. */
static void test_mute_and_previews(void **state)
{
	int64_t a = new_user("mu_a"), b = new_user("mu_b"), out = new_user("mu_out"), d;
	store_settings_t s;
	store_conv_t c;
	store_conv_t *list;
	size_t n, i;
	int more, found = 0;

	(void)state;
	d = new_direct(a, b);
	assert_int_equal(store_settings_get(st, a, &s), STORE_OK);
	assert_true(s.push_previews);
	assert_int_equal(store_set_push_previews(st, a, 0), STORE_OK);
	assert_int_equal(store_settings_get(st, a, &s), STORE_OK);
	assert_false(s.push_previews);
	assert_int_equal(store_settings_get(st, b, &s), STORE_OK);
	assert_true(s.push_previews);
	assert_int_equal(store_set_push_previews(st, 999999, 0), STORE_NOT_FOUND);

	assert_int_equal(store_conv_get(st, d, a, &c), STORE_OK);
	assert_false(c.muted);
	store_conv_clear(&c);
	assert_int_equal(store_set_muted(st, d, a, 1), STORE_OK);
	assert_int_equal(store_set_muted(st, d, a, 1), STORE_OK); /* again: no change, no error */
	assert_int_equal(store_set_muted(st, d, out, 1), STORE_FORBIDDEN);
	assert_int_equal(store_set_muted(st, 999999, a, 1), STORE_FORBIDDEN);
	assert_int_equal(store_conv_get(st, d, a, &c), STORE_OK);
	assert_true(c.muted);
	store_conv_clear(&c);
	assert_int_equal(store_conv_get(st, d, b, &c), STORE_OK);
	assert_false(c.muted); /* the other member's is its own */
	store_conv_clear(&c);
	assert_int_equal(store_conv_list(st, a, NULL, 100, &list, &n, &more), STORE_OK);
	for (i = 0; i < n; i++) {
		if (list[i].id == d) {
			assert_true(list[i].muted);
			found = 1;
		}
	}
	store_convs_free(list, n);
	assert_true(found);
	assert_int_equal(store_set_muted(st, d, a, 0), STORE_OK);
	assert_int_equal(store_conv_get(st, d, a, &c), STORE_OK);
	assert_false(c.muted);
	store_conv_clear(&c);
}

/* The pending pushes since an id: the one of bob, who has a target, for
 * the newest message he has not had; gone once delivered, pushed or
 * muted, and never the sender's own. */
static size_t pending_of(int64_t since, int64_t conv_id, store_push_pending_t *want)
{
	store_push_pending_t *p;
	size_t n, i, found = 0;

	assert_int_equal(store_push_pending(st, since, 1000, &p, &n), STORE_OK);
	for (i = 0; i < n; i++) {
		if (p[i].conv != conv_id)
			continue;
		found++;
		if (want) {
			assert_int_equal(p[i].user, want->user);
			assert_int_equal(p[i].seq, want->seq);
			assert_int_equal(p[i].from, want->from);
			assert_int_equal(p[i].kind, want->kind);
			assert_string_equal(p[i].body, want->body);
		}
	}
	store_push_pending_free(p, n);
	return found;
}

static void test_push_marks_and_pending(void **state)
{
	int64_t a = new_user("pp_a"), b = new_user("pp_b"), dev, ev, id, d, since, first;
	uint8_t h[32];
	store_push_target_t t;
	store_push_pending_t want = {0};
	store_conv_t c;
	store_op_t op;

	(void)state;
	memset(h, 0xa7, sizeof h);
	assert_int_equal(store_device_create(st, b, "phone", h, 1, 0, &dev, &ev), STORE_OK);
	t = push_of(b, dev, STORE_PUSH_FCM, "pp-token");
	assert_int_equal(store_push_target_put(st, &t, 100, &id), STORE_OK);
	d = new_direct(a, b);
	op = send_to(d, a, "pp1", "first");
	since = first = op.new_id - 1;
	assert_int_equal(apply1(&op), STORE_OK);
	store_op_release(&op);
	op = send_to(d, a, "pp2", "second");
	assert_int_equal(apply1(&op), STORE_OK);
	store_op_release(&op);
	want = (store_push_pending_t){d, b, 2, a, 0, STORE_DIRECT, "second", 6};
	assert_int_equal(pending_of(since, d, &want), 1); /* the newest only; none for a (no target) */
	assert_int_equal(pending_of(op.new_id, d, NULL), 0); /* older than the window */

	assert_int_equal(store_push_mark(st, d, b, 2), STORE_OK);
	assert_int_equal(store_push_mark(st, d, b, 1), STORE_OK); /* never falls */
	assert_int_equal(store_conv_get(st, d, b, &c), STORE_OK);
	assert_int_equal(c.pushed_seq, 2);
	assert_int_equal(c.delivered_seq, 0);
	store_conv_clear(&c);
	assert_int_equal(store_push_mark(st, d, new_user("pp_out"), 2), STORE_FORBIDDEN);
	assert_int_equal(pending_of(since, d, NULL), 0);

	op = send_to(d, a, "pp3", "third");
	assert_int_equal(apply1(&op), STORE_OK);
	store_op_release(&op);
	want.seq = 3;
	want.body = "third";
	assert_int_equal(pending_of(since, d, &want), 1);
	assert_int_equal(store_set_muted(st, d, b, 1), STORE_OK);
	assert_int_equal(pending_of(since, d, NULL), 0);
	assert_int_equal(store_set_muted(st, d, b, 0), STORE_OK);
	op = receipt_op(b, STORE_DELIVERED, 3, 300);
	op.conv = d;
	assert_int_equal(apply1(&op), STORE_OK);
	store_op_release(&op);
	assert_int_equal(store_conv_get(st, d, b, &c), STORE_OK);
	assert_int_equal(c.delivered_seq, 3);
	store_conv_clear(&c);
	assert_int_equal(pending_of(first, d, NULL), 0);
	/* b's own message is pending for no one (a has no target). */
	op = send_to(d, b, "pp4", "mine");
	assert_int_equal(apply1(&op), STORE_OK);
	store_op_release(&op);
	assert_int_equal(pending_of(first, d, NULL), 0);
}

static void say(int64_t conv, int64_t from, const char *cmid, const char *body)
{
	store_op_t op = send_to(conv, from, cmid, body);

	assert_int_equal(apply1(&op), STORE_OK);
	store_op_release(&op);
}

/* How many messages user finds with the words (space-separated) in conv
 * (0: all), checking that each snippet marks a word and that the hits
 * come from readable conversations only. */
static size_t found(int64_t user, int64_t conv, const char *words, size_t offset, size_t limit, int *has_more)
{
	char copy[256], *save = NULL, *w;
	const char *terms[STORE_SEARCH_TERMS_MAX];
	store_search_hit_t *h;
	size_t nterms = 0, n, i;
	int more;

	snprintf(copy, sizeof copy, "%s", words);
	for (w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save))
		terms[nterms++] = w;
	assert_int_equal(store_search(st, user, conv, terms, nterms, offset, limit, &h, &n, &more), STORE_OK);
	for (i = 0; i < n; i++) {
		assert_non_null(memchr(h[i].snippet, STORE_MARK_ON, h[i].snippet_len));
		assert_non_null(memchr(h[i].snippet, STORE_MARK_OFF, h[i].snippet_len));
		assert_true(h[i].msg.seq > 0);
		assert_non_null(h[i].msg.body);
		if (conv)
			assert_int_equal(h[i].msg.conv, conv);
	}
	store_search_free(h, n);
	if (has_more)
		*has_more = more;
	return n;
}

/* Words (the last also as a prefix), case folded, only in what the user
 * may read: its conversations, from when it joined, not after it left. */
/* An event op of cv about target. */
static store_op_t event_to(int64_t cv, int64_t user, const char *cmid, int kind, int64_t target, const char *body)
{
	store_op_t op = send_to(cv, user, cmid, body);

	op.msg_kind = kind;
	op.target = target;
	op.edit_window_ms = 60000;
	return op;
}

/* Events in one batch with the message they are about, and with each
 * other: each is decided against what the batch did before it (a
 * PostgreSQL batch probes before it writes), and the message ends as the
 * last of them left it; a refused one takes no seq. */
static void test_events_in_one_batch(void **state)
{
	int64_t a = new_user("ev_a"), b = new_user("ev_b"), d = new_direct(a, b), last, joined;
	store_op_t ops[8];
	store_message_t *m;
	size_t n, i;
	int more;

	(void)state;
	assert_int_equal(store_member_head(st, d, a, &last, &joined), STORE_OK);
	ops[0] = send_to(d, a, "eb1", "draft one");
	ops[1] = event_to(d, a, "eb2", STORE_MSG_EDIT, last + 1, "draft two");
	ops[2] = event_to(d, b, "eb3", STORE_MSG_REACTION, last + 1, "\xe2\x9c\x85");
	ops[3] = event_to(d, b, "eb4", STORE_MSG_EDIT, last + 1, "not bob's");
	ops[4] = send_to(d, b, "eb5", "a reply");
	ops[4].target = last + 1;
	ops[5] = event_to(d, a, "eb6", STORE_MSG_DELETE, last + 1, "");
	ops[6] = event_to(d, a, "eb7", STORE_MSG_EDIT, last + 1, "after the delete");
	ops[7] = event_to(d, a, "eb8", STORE_MSG_REACTION, last + 2, "\xe2\x9c\x85"); /* an event as target */
	assert_int_equal(store_apply(st, ops, 8), STORE_OK);
	assert_int_equal(ops[0].status, STORE_OK);
	assert_int_equal(ops[1].status, STORE_OK);
	assert_int_equal(ops[2].status, STORE_OK);
	assert_int_equal(ops[3].status, STORE_DENIED);
	assert_int_equal(ops[4].status, STORE_OK);
	assert_int_equal(ops[5].status, STORE_OK);
	assert_int_equal(ops[6].status, STORE_GONE);
	assert_int_equal(ops[7].status, STORE_NOT_FOUND);
	assert_int_equal(ops[5].out_seq, last + 5); /* gapless: the refused took none */
	for (i = 0; i < 8; i++)
		store_op_release(&ops[i]);
	assert_int_equal(store_history(st, d, a, 0, 50, 1 << 20, &m, &n, &more), STORE_OK);
	assert_true(n >= 5);
	m += n - 5; /* the batch's five rows */
	assert_int_equal(m[0].kind, STORE_MSG_TEXT);
	assert_true(m[0].deleted);
	assert_int_equal(m[0].body_len, 0);
	assert_null(m[0].reactions);
	assert_int_equal(m[0].state_seq, last + 5);
	assert_int_equal(m[1].kind, STORE_MSG_EDIT);
	assert_int_equal(m[1].body_len, 0); /* the edit's text went with it */
	assert_int_equal(m[2].kind, STORE_MSG_REACTION);
	assert_int_equal(m[3].target, last + 1);
	assert_int_equal(m[3].quote_from, a);
	assert_null(m[3].quote_body); /* deleted */
	assert_int_equal(m[4].kind, STORE_MSG_DELETE);
	m -= n - 5;
	store_messages_free(m, n);
}

static void test_search(void **state)
{
	int64_t a = new_user("se_a"), b = new_user("se_b"), c = new_user("se_c"), d, g, other, promoted;
	const char *one[1] = {"station"};
	store_search_hit_t *h;
	size_t n;
	int more;

	(void)state;
	d = new_direct(a, b);
	assert_int_equal(store_group_create(st, a, &c, 1, "trains", 100, 0, &g, NULL), STORE_OK);
	assert_int_equal(store_group_create(st, a, &c, 1, "private", 100, 0, &other, NULL), STORE_OK);
	say(d, a, "se1", "We met at the STATION yesterday");
	say(d, b, "se2", "that station wagon is for sale");
	say(d, a, "se3", "nothing to see here");
	say(d, b, "se4", "grüße aus köln");
	say(g, a, "se5", "station talk before bob came");
	say(other, c, "se6", "a station bob never sees");
	assert_int_equal(store_member_add(st, g, a, b, 200, 0, NULL), STORE_OK);
	say(g, c, "se7", "station talk after bob came");

	assert_int_equal(found(b, 0, "station", 0, 10, &more), 3);
	assert_false(more);
	assert_int_equal(found(b, 0, "stat", 0, 10, NULL), 3);
	assert_int_equal(found(b, 0, "wag", 0, 10, NULL), 1);
	assert_int_equal(found(b, 0, "met yest", 0, 10, NULL), 1);
	assert_int_equal(found(b, 0, "yest met", 0, 10, NULL), 0); /* only the last is a prefix */
	assert_int_equal(found(b, 0, "köln", 0, 10, NULL), 1);
	assert_int_equal(found(b, 0, "zeppelin", 0, 10, NULL), 0);
	assert_int_equal(found(c, 0, "station", 0, 10, NULL), 3);
	/* One conversation; pages. */
	assert_int_equal(found(b, d, "station", 0, 10, NULL), 2);
	assert_int_equal(found(b, g, "station", 0, 10, NULL), 1);
	assert_int_equal(found(b, d, "station", 0, 1, &more), 1);
	assert_true(more);
	assert_int_equal(found(b, d, "station", 1, 1, &more), 1);
	assert_false(more);
	assert_int_equal(store_search(st, b, other, one, 1, 0, 10, &h, &n, &more), STORE_FORBIDDEN);
	assert_int_equal(n, 0);
	/* The snippet marks the word as written. */
	assert_int_equal(store_search(st, a, d, one, 1, 0, 10, &h, &n, &more), STORE_OK);
	assert_int_equal(n, 2);
	assert_true(strstr(h[0].snippet, "\x02STATION\x03") || strstr(h[1].snippet, "\x02STATION\x03"));
	store_search_free(h, n);
	/* Gone from the group: its messages go from the results. */
	assert_int_equal(store_member_remove(st, g, a, b, &promoted), STORE_OK);
	assert_int_equal(found(b, 0, "station", 0, 10, NULL), 2);
	assert_int_equal(store_search(st, b, g, one, 1, 0, 10, &h, &n, &more), STORE_FORBIDDEN);
}

static void test_unread_total(void **state)
{
	int64_t a = new_user("ut_a"), b = new_user("ut_b"), late = new_user("ut_late"), d, g, total;
	store_op_t op;
	int i;

	(void)state;
	d = new_direct(a, b);
	assert_int_equal(store_group_create(st, a, &b, 1, "ut", 100, 0, &g, NULL), STORE_OK);
	assert_int_equal(store_unread_total(st, b, 100, &total), STORE_OK);
	assert_int_equal(total, 0);
	for (i = 0; i < 3; i++) {
		char cmid[16];
		snprintf(cmid, sizeof cmid, "ud%d", i);
		op = send_to(d, a, cmid, "hi");
		assert_int_equal(apply1(&op), STORE_OK);
		store_op_release(&op);
		snprintf(cmid, sizeof cmid, "ug%d", i);
		op = send_to(g, a, cmid, "all");
		assert_int_equal(apply1(&op), STORE_OK);
		store_op_release(&op);
	}
	op = send_to(d, b, "ub", "own"); /* b's own: not unread to b */
	assert_int_equal(apply1(&op), STORE_OK);
	store_op_release(&op);
	assert_int_equal(store_unread_total(st, b, 100, &total), STORE_OK);
	assert_int_equal(total, 6);
	assert_int_equal(store_unread_total(st, b, 4, &total), STORE_OK);
	assert_int_equal(total, 4); /* counted up to the cap */
	assert_int_equal(store_unread_total(st, a, 100, &total), STORE_OK);
	assert_int_equal(total, 1);
	op = receipt_op(b, STORE_READ, 2, 300);
	op.conv = d;
	assert_int_equal(apply1(&op), STORE_OK);
	store_op_release(&op);
	assert_int_equal(store_unread_total(st, b, 100, &total), STORE_OK);
	assert_int_equal(total, 4); /* the direct chat's third, the group's three */
	/* A member who joined late counts from where it joined. */
	assert_int_equal(store_member_add(st, g, a, late, 400, 0, NULL), STORE_OK);
	assert_int_equal(store_unread_total(st, late, 100, &total), STORE_OK);
	assert_int_equal(total, 0);
	op = send_to(g, b, "ul", "welcome");
	assert_int_equal(apply1(&op), STORE_OK);
	store_op_release(&op);
	assert_int_equal(store_unread_total(st, late, 100, &total), STORE_OK);
	assert_int_equal(total, 1);
}

static void test_last_seen(void **state)
{
	int64_t w = new_user("ls_watcher"), t = new_user("ls_target"), cv = new_direct(w, t), seen = -1;
	int64_t users[2] = {t, w}, times[2] = {5000, 6000};
	store_op_t op;

	(void)state;
	op = send_to(cv, t, "hello", "hi");
	assert_int_equal(apply1(&op), STORE_OK);
	assert_int_equal(store_watchable(st, w, t, &seen), STORE_OK);
	assert_int_equal(seen, 0); /* never */
	assert_int_equal(store_last_seen_set(st, users, times, 2), STORE_OK);
	assert_int_equal(store_watchable(st, w, t, &seen), STORE_OK);
	assert_int_equal(seen, 5000);
	times[0] = 4000;
	assert_int_equal(store_last_seen_set(st, users, times, 1), STORE_OK);
	assert_int_equal(store_watchable(st, w, t, &seen), STORE_OK);
	assert_int_equal(seen, 5000);
	times[0] = 7000;
	assert_int_equal(store_last_seen_set(st, users, times, 1), STORE_OK);
	assert_int_equal(store_watchable(st, w, t, &seen), STORE_OK);
	assert_int_equal(seen, 7000);
}

/* A block stops the direct chat only: in a group the two share, both
 * still send (typing is what skips them: store_blocked_in_conv). */
static void test_blocks_hold_in_direct_chats_only(void **state)
{
	int64_t x = new_user("gb_x"), y = new_user("gb_y"), g, *ids;
	store_op_t op;
	size_t n;

	(void)state;
	assert_int_equal(store_group_create(st, x, &y, 1, NULL, 10, 0, &g, NULL), STORE_OK);
	assert_int_equal(store_block(st, y, x, 20), STORE_OK);
	op = send_to(g, x, "gx", "hello group");
	assert_int_equal(apply1(&op), STORE_OK);
	op = send_to(g, y, "gy", "hello too");
	assert_int_equal(apply1(&op), STORE_OK);
	assert_int_equal(op.out_seq, 2);
	assert_int_equal(store_blocked_in_conv(st, x, g, &ids, &n), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(ids[0], y);
	free(ids);
}

/* SQLite only: a data directory is claimed by one node at a time (a
 * PostgreSQL database is shared by the nodes of a fleet). */
static void test_sqlite_claim_is_exclusive(void **state)
{
	(void)state;
	assert_null(store_claim(location));
}

/* A data directory of schema version 1 (as the first release wrote it)
 * opens migrated: who wrote where, conversation counts and device use are
 * filled from what it held, and nothing it held is lost. */
static void test_migration_from_v1(void **state)
{
	static const char v1[] =
		"CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
		"CREATE TABLE users(id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE, pwhash TEXT NOT NULL,"
		"  created_at INTEGER NOT NULL, last_seen INTEGER);"
		"CREATE TABLE devices(id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),"
		"  name TEXT NOT NULL, token_hash BLOB NOT NULL UNIQUE, created_at INTEGER NOT NULL);"
		"CREATE INDEX devices_by_user ON devices(user_id);"
		"CREATE TABLE conversations(id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, title TEXT,"
		"  direct_key TEXT UNIQUE, created_by INTEGER NOT NULL, created_at INTEGER NOT NULL,"
		"  last_seq INTEGER NOT NULL DEFAULT 0, member_count INTEGER NOT NULL DEFAULT 0,"
		"  member_version INTEGER NOT NULL DEFAULT 0, activity INTEGER NOT NULL);"
		"CREATE TABLE members(conv_id INTEGER NOT NULL, user_id INTEGER NOT NULL,"
		"  role INTEGER NOT NULL DEFAULT 0, joined_at INTEGER NOT NULL,"
		"  delivered_seq INTEGER NOT NULL DEFAULT 0, read_seq INTEGER NOT NULL DEFAULT 0,"
		"  joined_seq INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(conv_id, user_id)) WITHOUT ROWID;"
		"CREATE INDEX members_by_user ON members(user_id, conv_id);"
		"CREATE TABLE messages(id INTEGER PRIMARY KEY, conv_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
		"  sender INTEGER NOT NULL, cmid TEXT NOT NULL, body TEXT NOT NULL, ts INTEGER NOT NULL,"
		"  UNIQUE(conv_id, seq), UNIQUE(conv_id, sender, cmid));"
		"CREATE TABLE receipt_marks(conv_id INTEGER NOT NULL, user_id INTEGER NOT NULL,"
		"  state INTEGER NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,"
		"  PRIMARY KEY(conv_id, user_id, state, seq)) WITHOUT ROWID;"
		"CREATE INDEX receipt_marks_by_ts ON receipt_marks(ts);"
		"INSERT INTO meta VALUES('schema_version', 1);"
		"INSERT INTO users VALUES(1, 'old_a', 'x', 1, NULL), (2, 'old_b', 'x', 1, 500);"
		"INSERT INTO devices VALUES(1, 1, 'phone', x'0101010101010101010101010101010101010101010101010101010101010101', 42);"
		"INSERT INTO conversations VALUES(1, 1, NULL, '1:2', 1, 1, 1, 2, 2, 10);"
		"INSERT INTO members VALUES(1, 1, 0, 1, 0, 0, 0), (1, 2, 0, 1, 1, 1, 0);"
		"INSERT INTO messages VALUES(4194304, 1, 1, 1, 'c1', 'from the old days', 1000);";
	char old[] = "/tmp/parley-unit-store-v1-XXXXXX", path[128], cmd[160];
	uint8_t h[32];
	store_contact_t c;
	store_device_t *d;
	store_message_t *m;
	store_t *o;
	sqlite3 *db;
	int64_t seen, u, dev, cv, full = 0;
	size_t n;
	int more, created;

	(void)state;
	memset(h, 1, sizeof h);
	assert_non_null(mkdtemp(old));
	snprintf(path, sizeof path, "%s/parley.db", old);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, v1, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_non_null(o = store_open(old));
	assert_int_equal(store_contact(o, 2, 1, &c), STORE_OK);
	assert_int_equal(c.direct, 1);
	assert_true(c.they_wrote);    /* old_a wrote the message */
	assert_false(c.i_wrote);
	assert_int_equal(store_watchable(o, 2, 1, &seen), STORE_OK);
	assert_int_equal(store_device_by_token(o, h, 43, 1000, &u, &dev), STORE_OK);
	assert_int_equal(store_devices(o, 1, 0, &d, &n), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].last_used, 42); /* its creation, until used an hour later */
	free(d);
	assert_int_equal(store_history(o, 1, 2, 0, 10, SIZE_MAX, &m, &n, &more), STORE_OK);
	assert_int_equal(n, 1);
	assert_string_equal(m[0].body, "from the old days");
	store_messages_free(m, n);
	/* The counts came over: both are in one conversation. */
	{
		int64_t third;
		assert_int_equal(store_user_create(o, "new_c", "x", 1, &third), STORE_OK);
		assert_int_equal(store_direct_open(o, 1, third, 5, 1, &cv, &created, &full), STORE_TOO_MANY);
		assert_int_equal(full, 1);
	}
	{
		store_settings_t s;
		store_conv_t c;
		assert_int_equal(store_settings_get(o, 1, &s), STORE_OK);
		assert_true(s.push_previews);
		assert_int_equal(store_conv_get(o, 1, 2, &c), STORE_OK);
		assert_false(c.muted);
		store_conv_clear(&c);
		assert_int_equal(store_set_muted(o, 1, 2, 1), STORE_OK);
	}
	store_close(o);
	/* Opened again: the current version already, nothing to do. */
	assert_non_null(o = store_open(old));
	store_close(o);
	snprintf(cmd, sizeof cmd, "rm -rf %s", old);
	assert_int_equal(system(cmd), 0);
}

/* A data directory of schema version 4 (before mutes and previews) opens
 * with both columns added at their defaults, its rows kept. */
static void test_migration_from_v4(void **state)
{
	static const char to_v4[] =
		"DROP TRIGGER messages_fts_add; DROP TRIGGER messages_fts_del; DROP TRIGGER messages_fts_upd;"
		"DROP TABLE messages_fts; DROP TABLE messages_fts_pending; DROP VIEW messages_text;"
		"ALTER TABLE users DROP COLUMN push_previews;"
		"ALTER TABLE members DROP COLUMN muted;"
		"ALTER TABLE members DROP COLUMN pushed_seq;"
		"DROP TABLE reactions;"
		"ALTER TABLE messages DROP COLUMN kind; ALTER TABLE messages DROP COLUMN target;"
		"ALTER TABLE messages DROP COLUMN edited_at; ALTER TABLE messages DROP COLUMN deleted;"
		"ALTER TABLE messages DROP COLUMN state_seq; ALTER TABLE messages DROP COLUMN reactions;"
		"UPDATE meta SET value = 4 WHERE key = 'schema_version';";
	char old[] = "/tmp/parley-unit-store-v4-XXXXXX", path[128], cmd[160];
	const char *word = "index";
	store_search_hit_t *hits;
	store_settings_t s;
	store_conv_t c;
	store_op_t op;
	store_t *o;
	sqlite3 *db;
	int64_t a, b, cv, full = 0;
	size_t n;
	int created, more;

	(void)state;
	assert_non_null(mkdtemp(old));
	assert_non_null(o = store_open(old));
	assert_int_equal(store_user_create(o, "v4_a", "x", 1, &a), STORE_OK);
	assert_int_equal(store_user_create(o, "v4_b", "x", 1, &b), STORE_OK);
	assert_int_equal(store_direct_open(o, a, b, 5, 100, &cv, &created, &full), STORE_OK);
	op = send_op(a, "v4-1", "kept from before the index", next_id());
	op.conv = cv;
	assert_int_equal(store_apply(o, &op, 1), STORE_OK);
	assert_int_equal(op.status, STORE_OK);
	store_op_release(&op);
	store_close(o);
	snprintf(path, sizeof path, "%s/parley.db", old);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, to_v4, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_non_null(o = store_open(old));
	assert_int_equal(store_settings_get(o, a, &s), STORE_OK);
	assert_true(s.push_previews);
	assert_int_equal(store_conv_get(o, cv, b, &c), STORE_OK);
	assert_false(c.muted);
	assert_int_equal(c.nmembers, 2);
	store_conv_clear(&c);
	assert_int_equal(store_set_muted(o, cv, b, 1), STORE_OK);
	/* Version 6 indexed what was there. */
	assert_int_equal(store_search(o, b, 0, &word, 1, 0, 10, &hits, &n, &more), STORE_OK);
	assert_int_equal(n, 1);
	assert_string_equal(hits[0].msg.body, "kept from before the index");
	store_search_free(hits, n);
	store_close(o);
	snprintf(cmd, sizeof cmd, "rm -rf %s", old);
	assert_int_equal(system(cmd), 0);
}

/* A data directory of schema version 6 (search, no events) opens with
 * the events' columns and table, and triggers that index messages only:
 * after an edit and a delete, the index passes FTS5's integrity check and
 * finds the edited text, not the deleted. */
static void test_migration_from_v6(void **state)
{
	static const char to_v6[] =
		"DROP TRIGGER messages_fts_add; DROP TRIGGER messages_fts_del; DROP TRIGGER messages_fts_upd;"
		"DROP TABLE messages_fts; DROP VIEW messages_text; DROP TABLE reactions;"
		"ALTER TABLE messages DROP COLUMN kind; ALTER TABLE messages DROP COLUMN target;"
		"ALTER TABLE messages DROP COLUMN edited_at; ALTER TABLE messages DROP COLUMN deleted;"
		"ALTER TABLE messages DROP COLUMN state_seq; ALTER TABLE messages DROP COLUMN reactions;"
		/* Version 6's own index, over the table, and its triggers, which
		 * index every row. */
		"CREATE VIRTUAL TABLE messages_fts USING fts5(body, content='messages', "
		"  content_rowid='id', tokenize='unicode61 remove_diacritics 0');"
		"INSERT INTO messages_fts(messages_fts) VALUES('rebuild');"
		"CREATE TRIGGER messages_fts_add AFTER INSERT ON messages BEGIN "
		"  INSERT INTO messages_fts_pending(id) VALUES(new.id); END;"
		"CREATE TRIGGER messages_fts_del AFTER DELETE ON messages BEGIN "
		"  INSERT INTO messages_fts(messages_fts, rowid, body) SELECT 'delete', old.id, old.body "
		"    WHERE NOT EXISTS (SELECT 1 FROM messages_fts_pending WHERE id = old.id);"
		"  DELETE FROM messages_fts_pending WHERE id = old.id; END;"
		"CREATE TRIGGER messages_fts_upd AFTER UPDATE OF body ON messages "
		"  WHEN NOT EXISTS (SELECT 1 FROM messages_fts_pending WHERE id = old.id) BEGIN "
		"  INSERT INTO messages_fts(messages_fts, rowid, body) VALUES('delete', old.id, old.body);"
		"  INSERT INTO messages_fts(rowid, body) VALUES(new.id, new.body); END;"
		"UPDATE meta SET value = 6 WHERE key = 'schema_version';";
	char old[] = "/tmp/parley-unit-store-v6-XXXXXX", path[128], cmd[160];
	const char *planet[1] = {"planetarium"}, *aqua[1] = {"aquarium"}, *gone[1] = {"rhubarb"};
	store_search_hit_t *hits;
	store_op_t op;
	store_t *o;
	sqlite3 *db;
	int64_t a, b, cv, full = 0;
	size_t n;
	int created, more;

	(void)state;
	assert_non_null(mkdtemp(old));
	assert_non_null(o = store_open(old));
	assert_int_equal(store_user_create(o, "v6_a", "x", 1, &a), STORE_OK);
	assert_int_equal(store_user_create(o, "v6_b", "x", 1, &b), STORE_OK);
	assert_int_equal(store_direct_open(o, a, b, 5, 100, &cv, &created, &full), STORE_OK);
	op = send_op(a, "v6-1", "meet at the aquarium", next_id());
	op.conv = cv;
	assert_int_equal(store_apply(o, &op, 1), STORE_OK);
	store_op_release(&op);
	op = send_op(a, "v6-2", "rhubarb recipe", next_id());
	op.conv = cv;
	assert_int_equal(store_apply(o, &op, 1), STORE_OK);
	store_op_release(&op);
	store_close(o);
	snprintf(path, sizeof path, "%s/parley.db", old);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, to_v6, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_non_null(o = store_open(old));
	op = send_op(a, "v6-3", "meet at the planetarium", next_id());
	op.conv = cv;
	op.msg_kind = STORE_MSG_EDIT;
	op.target = 1;
	op.edit_window_ms = INT64_MAX / 2;
	assert_int_equal(store_apply(o, &op, 1), STORE_OK);
	store_op_release(&op);
	assert_int_equal(op.status, STORE_OK);
	op = send_op(a, "v6-4", "", next_id());
	op.conv = cv;
	op.msg_kind = STORE_MSG_DELETE;
	op.target = 2;
	assert_int_equal(store_apply(o, &op, 1), STORE_OK);
	store_op_release(&op);
	assert_int_equal(op.status, STORE_OK);
	assert_int_equal(store_search(o, b, 0, planet, 1, 0, 10, &hits, &n, &more), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(hits[0].msg.seq, 1);
	assert_int_equal(hits[0].msg.kind, STORE_MSG_TEXT);
	store_search_free(hits, n);
	assert_int_equal(store_search(o, b, 0, aqua, 1, 0, 10, &hits, &n, &more), STORE_OK);
	assert_int_equal(n, 0);
	store_search_free(hits, n);
	assert_int_equal(store_search(o, b, 0, gone, 1, 0, 10, &hits, &n, &more), STORE_OK);
	assert_int_equal(n, 0);
	store_search_free(hits, n);
	store_close(o);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "INSERT INTO messages_fts(messages_fts, rank) VALUES('integrity-check', 1)",
	                              NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	snprintf(cmd, sizeof cmd, "rm -rf %s", old);
	assert_int_equal(system(cmd), 0);
}

/* SQLite indexes stored messages later, from a queue (FTS_SCHEMA in
 * store_sqlite.c): a message deleted or changed by hand, indexed or still
 * queued, leaves the index consistent (FTS5's integrity check) and the
 * search right. */
static void test_sqlite_fts_queue(void **state)
{
	char dir[] = "/tmp/parley-unit-store-fts-XXXXXX", path[128], cmd[160], sql[256];
	const char *word;
	store_search_hit_t *hits;
	int64_t a, b, cv, full = 0, ids[5];
	store_op_t op;
	store_t *o;
	sqlite3 *db;
	size_t n;
	int created, more, i;
	static const char *const bodies[5] = {"alpha one", "alpha two", "alpha three", "alpha four", "alpha five"};

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_non_null(o = store_open(dir));
	assert_int_equal(store_user_create(o, "fq_a", "x", 1, &a), STORE_OK);
	assert_int_equal(store_user_create(o, "fq_b", "x", 1, &b), STORE_OK);
	assert_int_equal(store_direct_open(o, a, b, 5, 100, &cv, &created, &full), STORE_OK);
	for (i = 0; i < 5; i++) {
		char cmid[16];
		if (i == 3) { /* the first three indexed by a search, two left queued */
			word = "alpha";
			assert_int_equal(store_search(o, b, 0, &word, 1, 0, 10, &hits, &n, &more), STORE_OK);
			assert_int_equal(n, 3);
			store_search_free(hits, n);
		}
		snprintf(cmid, sizeof cmid, "fq-%d", i);
		op = send_op(a, cmid, bodies[i], ids[i] = next_id());
		op.conv = cv;
		assert_int_equal(store_apply(o, &op, 1), STORE_OK);
		assert_int_equal(op.status, STORE_OK);
		store_op_release(&op);
	}
	snprintf(path, sizeof path, "%s/parley.db", dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	/* Indexed and deleted; queued and deleted; indexed and changed. */
	snprintf(sql, sizeof sql,
	         "DELETE FROM messages WHERE id IN (%lld, %lld);"
	         "UPDATE messages SET body = 'omega changed' WHERE id = %lld;",
	         (long long)ids[0], (long long)ids[3], (long long)ids[1]);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	word = "alpha";
	assert_int_equal(store_search(o, b, 0, &word, 1, 0, 10, &hits, &n, &more), STORE_OK);
	assert_int_equal(n, 2); /* three and five */
	store_search_free(hits, n);
	word = "omega";
	assert_int_equal(store_search(o, b, 0, &word, 1, 0, 10, &hits, &n, &more), STORE_OK);
	assert_int_equal(n, 1);
	store_search_free(hits, n);
	assert_int_equal(sqlite3_exec(db, "INSERT INTO messages_fts(messages_fts) VALUES('integrity-check')", NULL,
	                              NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
	store_close(o);
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* ---- the outbox ------------------------------------------------------ */

/* Every outbox row there is, taken (and so marked) at now with age 0. */
static size_t outbox_all(int64_t now, store_outbox_t **rows)
{
	size_t n;

	assert_int_equal(store_outbox_take(st, now, 0, 10000, rows, &n), STORE_OK);
	return n;
}

/* Off (the default), apply writes no outbox row; on, one per stored
 * message and per moved watermark, and none for a repeat, a refusal or a
 * receipt that moves nothing; take hands them out oldest first with what
 * an event needs, once per age; delete removes them. */
static void test_outbox_rows(void **state)
{
	int64_t dan = new_user("dan"), eve = new_user("eve"), cv = new_direct(dan, eve);
	store_outbox_t *rows;
	store_op_t ops[6];
	size_t i, n;
	int64_t ids[4];

	(void)state;
	ops[0] = send_to(cv, dan, "d1", "before the outbox");
	assert_int_equal(apply1(&ops[0]), STORE_OK);
	assert_int_equal(ops[0].out_outbox, 0);
	assert_int_equal(outbox_all(NOW, &rows), 0);
	store_outbox_free(rows, 0);

	assert_int_equal(store_set_outbox(st, 1), STORE_OK);
	ops[0] = send_to(cv, dan, "d2", "hello eve");
	ops[1] = send_to(cv, eve, "e1", "hi dan");
	ops[2] = send_to(cv, dan, "d1", "a repeat"); /* STORE_EXISTS */
	ops[3] = send_to(cv, carol, "c9", "not a member");
	ops[4] = receipt_op(eve, STORE_DELIVERED, 2, ops[1].now_ms + 1);
	ops[4].conv = cv;
	ops[5] = receipt_op(eve, STORE_READ, 0, ops[1].now_ms + 1); /* moves nothing */
	ops[5].conv = cv;
	assert_int_equal(store_apply(st, ops, 6), STORE_OK);
	assert_int_equal(ops[0].status, STORE_OK);
	assert_int_equal(ops[1].status, STORE_OK);
	assert_int_equal(ops[2].status, STORE_EXISTS);
	assert_int_equal(ops[3].status, STORE_FORBIDDEN);
	assert_true(ops[4].applied);
	assert_false(ops[5].applied);
	assert_true(ops[0].out_outbox > 0);
	assert_true(ops[1].out_outbox > ops[0].out_outbox);
	assert_int_equal(ops[2].out_outbox, 0);
	assert_int_equal(ops[3].out_outbox, 0);
	assert_true(ops[4].out_outbox > ops[1].out_outbox);
	assert_int_equal(ops[5].out_outbox, 0);
	for (i = 0; i < 6; i++)
		store_op_release(&ops[i]);

	/* Not old enough: made at the ops' now_ms, asked for older ones. */
	assert_int_equal(store_outbox_take(st, ops[0].now_ms, 1, 100, &rows, &n), STORE_OK);
	assert_int_equal(n, 0);
	store_outbox_free(rows, n);
	assert_int_equal(store_outbox_take(st, NOW, 1000, 100, &rows, &n), STORE_OK);
	assert_int_equal(n, 3);
	assert_int_equal(rows[0].id, ops[0].out_outbox);
	assert_int_equal(rows[0].kind, STORE_EVENT_MESSAGE);
	assert_int_equal(rows[0].conv, cv);
	assert_int_equal(rows[0].seq, 2);
	assert_int_equal(rows[0].user, dan);
	assert_int_equal(rows[0].created_at, ops[0].now_ms);
	assert_int_equal(rows[0].msg.id, ops[0].out_id);
	assert_int_equal(rows[0].msg.seq, 2);
	assert_int_equal(rows[0].msg.from, dan);
	assert_int_equal(rows[0].msg.ts, ops[0].out_ts);
	assert_string_equal(rows[0].msg.cmid, "d2");
	assert_string_equal(rows[0].msg.body, "hello eve");
	assert_int_equal(rows[0].msg.body_len, 9);
	assert_int_equal(rows[1].id, ops[1].out_outbox);
	assert_int_equal(rows[1].seq, 3);
	assert_int_equal(rows[1].user, eve);
	assert_string_equal(rows[1].msg.body, "hi dan");
	assert_int_equal(rows[2].id, ops[4].out_outbox);
	assert_int_equal(rows[2].kind, STORE_EVENT_DELIVERED);
	assert_int_equal(rows[2].seq, 2);
	assert_int_equal(rows[2].user, eve);
	assert_int_equal(rows[2].created_at, ops[1].now_ms + 1);
	assert_null(rows[2].msg.body);
	store_outbox_free(rows, n);
	/* Taken: not again within the age, again after it (its taker is
	 * presumed dead), and a batch is at most max_rows. */
	assert_int_equal(store_outbox_take(st, NOW + 999, 1000, 100, &rows, &n), STORE_OK);
	assert_int_equal(n, 0);
	store_outbox_free(rows, n);
	assert_int_equal(store_outbox_take(st, NOW + 1000, 1000, 2, &rows, &n), STORE_OK);
	assert_int_equal(n, 2);
	ids[0] = rows[0].id;
	ids[1] = rows[1].id;
	store_outbox_free(rows, n);
	/* A read receipt's row says so. */
	ops[0] = receipt_op(dan, STORE_READ, 3, 6000);
	ops[0].conv = cv;
	assert_int_equal(apply1(&ops[0]), STORE_OK);
	assert_true(ops[0].out_outbox > 0);
	/* Deleted by id; unknown ids are no error. */
	ids[2] = 987654321;
	assert_int_equal(store_outbox_delete(st, ids, 3), STORE_OK);
	assert_int_equal(store_outbox_delete(st, ids, 0), STORE_OK);
	n = outbox_all(NOW + 5000, &rows);
	assert_int_equal(n, 2);
	assert_int_equal(rows[0].kind, STORE_EVENT_DELIVERED);
	assert_int_equal(rows[1].kind, STORE_EVENT_READ);
	assert_int_equal(rows[1].user, dan);
	assert_int_equal(rows[1].seq, 3);
	ids[0] = rows[0].id;
	ids[1] = rows[1].id;
	store_outbox_free(rows, n);
	assert_int_equal(store_outbox_delete(st, ids, 2), STORE_OK);
	assert_int_equal(outbox_all(NOW + 9000, &rows), 0);
	store_outbox_free(rows, 0);

	/* Off again: nothing more. */
	assert_int_equal(store_set_outbox(st, 0), STORE_OK);
	ops[0] = send_to(cv, dan, "d3", "after");
	assert_int_equal(apply1(&ops[0]), STORE_OK);
	assert_int_equal(ops[0].out_outbox, 0);
	assert_int_equal(outbox_all(NOW + 9000, &rows), 0);
	store_outbox_free(rows, 0);
}

/* A batch that fails leaves no outbox row: the rows are in its
 * transaction. Here a message id already stored fails the whole batch,
 * after a receipt that would have moved. */
static void test_outbox_failed_batch(void **state)
{
	int64_t fay = new_user("fay"), gus = new_user("gus"), cv = new_direct(fay, gus);
	store_outbox_t *rows;
	store_op_t ops[2];
	size_t n;

	(void)state;
	assert_int_equal(store_set_outbox(st, 1), STORE_OK);
	ops[0] = send_to(cv, fay, "f1", "stored");
	assert_int_equal(apply1(&ops[0]), STORE_OK);
	n = outbox_all(NOW, &rows);
	assert_int_equal(n, 1);
	assert_int_equal(store_outbox_delete(st, &rows[0].id, 1), STORE_OK);
	store_outbox_free(rows, n);

	ops[1] = send_to(cv, fay, "f2", "same id as f1");
	ops[1].new_id = ops[0].out_id;
	ops[0] = receipt_op(gus, STORE_READ, 1, 7000);
	ops[0].conv = cv;
	assert_int_equal(store_apply(st, ops, 2), STORE_ERROR);
	assert_int_equal(ops[0].status, STORE_ERROR);
	assert_int_equal(ops[1].status, STORE_ERROR);
	assert_int_equal(ops[0].out_outbox, 0);
	assert_int_equal(ops[1].out_outbox, 0);
	assert_int_equal(outbox_all(NOW, &rows), 0);
	store_outbox_free(rows, 0);
	assert_int_equal(store_set_outbox(st, 0), STORE_OK);
}

/* Two handles sweeping at once never take the same row, and together take
 * them all. */
typedef struct taker {
	store_t *s;
	int64_t *ids;
	size_t n, cap;
	int err;
} taker_t;

static void *take_all(void *arg)
{
	taker_t *t = arg;
	store_outbox_t *rows;
	size_t n, i;

	for (;;) {
		if (store_outbox_take(t->s, NOW, 1000, 7, &rows, &n) != STORE_OK) {
			t->err = 1;
			break;
		}
		for (i = 0; i < n && t->n < t->cap; i++)
			t->ids[t->n++] = rows[i].id;
		store_outbox_free(rows, n);
		if (!n)
			break;
	}
	return NULL;
}

static int cmp_id(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static void test_outbox_concurrent_take(void **state)
{
	enum { ROWS = 210, BATCH = 30 };
	int64_t hal = new_user("hank"), ivy = new_user("ivy"), cv = new_direct(hal, ivy);
	int64_t all[2 * ROWS];
	taker_t t[2];
	pthread_t th[2];
	store_op_t ops[BATCH];
	char cmid[BATCH][16];
	size_t i, j, total;

	(void)state;
	assert_int_equal(store_set_outbox(st, 1), STORE_OK);
	for (i = 0; i < ROWS / BATCH; i++) {
		for (j = 0; j < BATCH; j++) {
			snprintf(cmid[j], sizeof cmid[j], "h%zu", i * BATCH + j);
			ops[j] = send_to(cv, hal, cmid[j], "x");
		}
		assert_int_equal(store_apply(st, ops, BATCH), STORE_OK);
		for (j = 0; j < BATCH; j++) {
			assert_int_equal(ops[j].status, STORE_OK);
			store_op_release(&ops[j]);
		}
	}
	assert_int_equal(store_set_outbox(st, 0), STORE_OK);
	for (i = 0; i < 2; i++) {
		t[i] = (taker_t){.ids = all + i * ROWS, .cap = ROWS};
		assert_non_null(t[i].s = i == 0 ? st : store_open(location));
	}
	/* The first taker commits lazily, as the outbox relay's handle does:
	 * the same rows, the same guarantees while nothing crashes. */
	assert_int_equal(store_set_lazy_commit(st, 1), STORE_OK);
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, take_all, &t[i]), 0);
	for (i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(store_set_lazy_commit(st, 0), STORE_OK);
	store_close(t[1].s);
	assert_false(t[0].err);
	assert_false(t[1].err);
	/* Both took some (batches of 7 out of 210) is likely, not certain:
	 * what is certain is no row twice and every row once. */
	total = t[0].n + t[1].n;
	assert_int_equal(total, ROWS);
	memmove(all + t[0].n, all + ROWS, t[1].n * sizeof *all);
	qsort(all, total, sizeof *all, cmp_id);
	for (i = 1; i < total; i++)
		assert_true(all[i] > all[i - 1]);
}

/* Every backend runs these, in this order (they share the run's store,
 * and the older ones its first users and conversation). */
#define COMMON_TESTS                                                  \
	cmocka_unit_test(test_accounts),                              \
	cmocka_unit_test(test_device_cap),                            \
	cmocka_unit_test(test_push_targets),                          \
	cmocka_unit_test(test_server_keys),                           \
	cmocka_unit_test(test_direct_is_one_per_pair),                \
	cmocka_unit_test(test_batch_seqs_and_idempotency),            \
	cmocka_unit_test(test_receipts),                              \
	cmocka_unit_test(test_history_and_list),                      \
	cmocka_unit_test(test_large_group_rule),                      \
	cmocka_unit_test(test_device_idle_expiry),                    \
	cmocka_unit_test(test_contacts_and_presence),                 \
	cmocka_unit_test(test_blocks),                                \
	cmocka_unit_test(test_settings_and_first_contacts),           \
	cmocka_unit_test(test_conversation_cap),                      \
	cmocka_unit_test(test_list_pages),                            \
	cmocka_unit_test(test_backend_entry),                         \
	cmocka_unit_test(test_admission),                             \
	cmocka_unit_test(test_batch_across_conversations),            \
	cmocka_unit_test(test_read_implies_delivered),                \
	cmocka_unit_test(test_group_member_cap),                      \
	cmocka_unit_test(test_admin_promotion),                       \
	cmocka_unit_test(test_joined_view),                           \
	cmocka_unit_test(test_last_seen),                             \
	cmocka_unit_test(test_unread_total),                          \
	cmocka_unit_test(test_mute_and_previews),                     \
	cmocka_unit_test(test_push_marks_and_pending),                \
	cmocka_unit_test(test_search),                                \
	cmocka_unit_test(test_events_in_one_batch),                   \
	cmocka_unit_test(test_blocks_hold_in_direct_chats_only),      \
	cmocka_unit_test(test_outbox_rows),                           \
	cmocka_unit_test(test_outbox_failed_batch),                   \
	cmocka_unit_test(test_outbox_concurrent_take)

int main(void)
{
	const struct CMUnitTest sqlite_tests[] = {
		COMMON_TESTS,
		cmocka_unit_test(test_sqlite_claim_is_exclusive),
		cmocka_unit_test(test_migration_from_v1),
		cmocka_unit_test(test_migration_from_v6),
		cmocka_unit_test(test_migration_from_v4),
		cmocka_unit_test(test_sqlite_fts_queue),
		cmocka_unit_test(test_every_method_is_called),
	};
	const struct CMUnitTest pg_tests[] = {
		COMMON_TESTS,
		cmocka_unit_test(test_every_method_is_called),
	};
	int failed;

	be = &sqlite_backend;
	failed = cmocka_run_group_tests_name("unit_store[SQLite]", sqlite_tests, setup, teardown);
	/* Until a backend serves postgresql:// locations in this build. Once
	 * one does, its run happens, and needs a server: without one it
	 * fails, saying what to install. */
	if (!store_backend_name("postgresql://probe@127.0.0.1/probe")) {
		printf("unit_store: PostgreSQL backend not built: skipping its run\n");
		return failed;
	}
	if (!(pg = pgserver_start())) {
		fprintf(stderr, "unit_store: no PostgreSQL server for the PostgreSQL run\n");
		return failed + 1;
	}
	be = &pg_backend;
	failed += cmocka_run_group_tests_name("unit_store[PostgreSQL]", pg_tests, setup, teardown);
	pgserver_stop(pg);
	return failed;
}
