/* unit_store.c - the store interface on the SQLite backend: batches of
 * sends get gapless seqs in one transaction, a repeated cmid returns the
 * stored message, non-members are refused without a write, receipt
 * watermarks only rise and answer per-message times, history pages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store.h"

/* The tests' messages are from 2024; "now" for them is soon after. */
#define NOW (1704067200000LL + 86400000LL)

static char dir[] = "/tmp/parley-unit-store-XXXXXX";
static store_t *st;
static int64_t alice, bob, carol, conv;

static int setup(void **state)
{
	uint8_t h[32] = {1};
	int64_t dev, evicted;
	int created;

	(void)state;
	if (!mkdtemp(dir) || !(st = store_open(dir)))
		return -1;
	if (store_user_create(st, "alice", "x", 1, &alice) || store_user_create(st, "bob", "x", 1, &bob) ||
	    store_user_create(st, "carol", "x", 1, &carol))
		return -1;
	if (store_device_create(st, alice, "phone", h, 1, 0, &dev, &evicted))
		return -1;
	return store_direct_open(st, alice, bob, 1704067200000LL + 5, 0, &conv, &created, NULL);
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	store_close(st);
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	return system(cmd);
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
	/* Expiry deletes the marks made before a time, in slices. */
	{
		size_t d;
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
	assert_int_equal(store_replay(st, conv, 1, 3, 10, 1 << 20, &m, &n), STORE_OK);
	assert_int_equal(n, 2);
	assert_int_equal(m[0].seq, 2);
	store_messages_free(m, n);
	assert_int_equal(store_replay(st, conv, 0, 3, 10, 1, &m, &n), STORE_OK); /* byte cap */
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
	store_close(o);
	/* Opened again: version 2 already, nothing to do. */
	assert_non_null(o = store_open(old));
	store_close(o);
	snprintf(cmd, sizeof cmd, "rm -rf %s", old);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accounts),
		cmocka_unit_test(test_device_cap),
		cmocka_unit_test(test_direct_is_one_per_pair),
		cmocka_unit_test(test_batch_seqs_and_idempotency),
		cmocka_unit_test(test_receipts),
		cmocka_unit_test(test_history_and_list),
		cmocka_unit_test(test_large_group_rule),
		cmocka_unit_test(test_device_idle_expiry),
		cmocka_unit_test(test_contacts_and_presence),
		cmocka_unit_test(test_blocks),
		cmocka_unit_test(test_settings_and_first_contacts),
		cmocka_unit_test(test_conversation_cap),
		cmocka_unit_test(test_list_pages),
		cmocka_unit_test(test_migration_from_v1),
	};
	return cmocka_run_group_tests_name("unit_store", tests, setup, teardown);
}
