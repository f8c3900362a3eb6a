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
	return store_direct_open(st, alice, bob, 1704067200000LL + 5, &conv, &created);
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
	assert_int_equal(store_device_by_token(st, h, &u, &d), STORE_OK);
	assert_int_equal(u, alice);
	assert_int_equal(store_device_by_token(st, other, &u, &d), STORE_NOT_FOUND);
	assert_int_equal(store_device_delete(st, bob, d), STORE_NOT_FOUND); /* not bob's */
	assert_int_equal(store_device_delete(st, alice, d), STORE_OK);
	assert_int_equal(store_device_by_token(st, h, &u, &d), STORE_NOT_FOUND);
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
		int r = store_device_by_token(st, tok[i], &u, &d);
		assert_int_equal(r, i < 2 ? STORE_NOT_FOUND : STORE_OK);
		if (r == STORE_OK)
			assert_int_equal(d, dev[i]);
	}
	/* No cap: nothing is removed. */
	memset(tok[0], 0x60, sizeof tok[0]);
	assert_int_equal(store_device_create(st, carol, "d", tok[0], 1, 0, &dev[0], &evicted), STORE_OK);
	assert_int_equal(evicted, 0);
	assert_int_equal(store_device_by_token(st, tok[2], &u, &d), STORE_OK);
}

static void test_direct_is_one_per_pair(void **state)
{
	int64_t c;
	int created;

	(void)state;
	assert_int_equal(store_direct_open(st, bob, alice, 2, &c, &created), STORE_OK);
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
	assert_int_equal(store_history(st, conv, alice, 0, 2, &m, &n, &more), STORE_OK);
	assert_int_equal(n, 2);
	assert_int_equal(m[0].seq, 2);
	assert_int_equal(m[1].seq, 3);
	assert_true(more);
	assert_string_equal(m[1].body, "bob's own a1");
	store_messages_free(m, n);
	assert_int_equal(store_history(st, conv, alice, 2, 50, &m, &n, &more), STORE_OK);
	assert_int_equal(n, 1);
	assert_false(more);
	store_messages_free(m, n);
	assert_int_equal(store_history(st, conv, carol, 0, 50, &m, &n, &more), STORE_FORBIDDEN);
	assert_int_equal(store_replay(st, conv, 1, 3, 10, 1 << 20, &m, &n), STORE_OK);
	assert_int_equal(n, 2);
	assert_int_equal(m[0].seq, 2);
	store_messages_free(m, n);
	assert_int_equal(store_replay(st, conv, 0, 3, 10, 1, &m, &n), STORE_OK); /* byte cap */
	assert_int_equal(n, 1);
	store_messages_free(m, n);

	assert_int_equal(store_conv_list(st, alice, &cs, &n), STORE_OK);
	assert_int_equal(n, 1);
	assert_int_equal(cs[0].last_seq, 3);
	assert_int_equal(cs[0].unread, 2); /* bob's two, alice has read none */
	assert_int_equal(cs[0].nmembers, 2);
	assert_string_equal(cs[0].last_message->cmid, "a1");
	store_convs_free(cs, n);
	assert_int_equal(store_conv_list(st, bob, &cs, &n), STORE_OK);
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
	assert_int_equal(store_group_create(st, alice, others, 255, "g256", 10, &g256), STORE_OK);
	assert_int_equal(store_group_create(st, alice, others, 256, "g257", 10, &g257), STORE_OK);
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
	};
	return cmocka_run_group_tests_name("unit_store", tests, setup, teardown);
}
