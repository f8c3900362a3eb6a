/* store_pg.c - the PostgreSQL 15 store backend: the same behaviour as
 * store_sqlite.c (its specification), over libpq, so that several nodes can
 * serve one database at once.
 *
 * Each thread's handle is one connection, in non-blocking mode, with every
 * statement prepared on it. A call waits for its answers with poll() up to a
 * deadline of its own (CALL_MS), on top of the server's statement_timeout,
 * TCP keepalives and tcp_user_timeout: a dead or silent server makes calls
 * fail with STORE_ERROR, never hang and never report a write that did not
 * commit. A lost connection is dropped; a later call reconnects (at most one
 * attempt per RECONNECT_MIN_MS..RECONNECT_MAX_MS, doubling while it fails)
 * and prepares the statements again.
 *
 * store_apply uses libpq's pipeline mode. A batch costs two round trips
 * whatever its size, one when it holds only receipts, and a handful of
 * statements whatever its number of messages:
 *   A: BEGIN; lock the batch's conversation rows in id order, which
 *      answers each one's head (last_seq); one probe for all its sends
 *      (membership, blocks, a stored message with its cmid, the sender's
 *      first-message mark), its columns passed as arrays; sync. The
 *      statuses that need no write (FORBIDDEN, EXISTS, BLOCKED), the
 *      admission hook (LIMITED) and each stored message's seq (the head
 *      plus its place among its conversation's messages in the batch) are
 *      decided here, in op order, in C.
 *   B: one insert of all the batch's messages; one update of the
 *      conversations' counters, each moved once by its k messages
 *      (last_seq + k) however many there were; the first-message marks if
 *      any; one statement per receipt, in op order, each capped at its
 *      conversation's head where it stands in the batch; COMMIT; sync.
 *      Success is reported only once COMMIT's answer has arrived.
 * The writer runs several such batches at once, one per connection, for
 * different conversations (writer.h's lanes).
 *
 * Concurrency, between nodes as between threads. Every write that touches a
 * conversation's rows (a send's seq, a receipt's watermark, a membership
 * change, a block's marks) first locks the conversation's row, and a batch
 * locks all of its conversations in ascending id order in one statement, so
 * batches never deadlock each other. A send's seq comes from last_seq read
 * under that lock, and last_seq moves in the same transaction as the rows,
 * so seqs stay gapless. Because every statement after the lock sees every
 * commit before it (READ COMMITTED takes a snapshot per statement), the
 * probe sees a racing retry's message once that retry committed, and the
 * retry ends STORE_EXISTS with the stored id and seq. The insert has no ON
 * CONFLICT: were the probe ever wrong (a row stored without the lock), the
 * batch fails on the unique cmid rather than leave a gap, and is tried once
 * more, when its probe sees that row. Changes to users' conversation
 * counts lock the users' rows in ascending id order first, so max_convs and
 * the device cap hold under concurrent nodes as they do under SQLite's single
 * writer.
 *
 * Schema: versioned in parley_meta (SCHEMA_VERSION below, this backend's own
 * numbering), created or migrated by claim and migrate in one transaction
 * holding an advisory lock, so nodes starting together take turns. open and
 * a reconnect only check the version and refuse a mismatch. */
#include "store_pg.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "log.h"
#include "loop.h"

#define SCHEMA_VERSION 6
/* pg_advisory_xact_lock's key for schema changes: "parley" in ASCII. */
#define SCHEMA_LOCK_KEY "112568959427961"

#define CALL_MS 12000            /* a call's own deadline */
#define SCHEMA_MS (600 * 1000)   /* a claim's or migration's: it may wait for another node's */
#define RECONNECT_MIN_MS 1000
#define RECONNECT_MAX_MS 8000
#define DEVICE_TOUCH_MS (3600 * 1000)
#define PG_WRITERS 2             /* the writer's lanes: see store_writers */

enum {
	Q_USER_INSERT,
	Q_USER_BY_NAME,
	Q_USER_BY_ID,
	Q_USER_EXISTS,
	Q_LOCK_USERS,
	Q_LOCK_CONVS,
	Q_DEVICE_INSERT,
	Q_DEVICE_BY_TOKEN,
	Q_DEVICE_DELETE,
	Q_DEVICE_STATS,
	Q_DEVICE_TOUCH,
	Q_DEVICES,
	Q_PUSH_TAKEOVER,
	Q_PUSH_PUT,
	Q_PUSH_LIST,
	Q_PUSH_DELETE,
	Q_KEY_GET,
	Q_KEY_ADD,
	Q_DIRECT_FIND,
	Q_CONV_INSERT,
	Q_MEMBER_INSERT,
	Q_MEMBERSHIP,
	Q_CONV_GET,
	Q_CONV_LIST,
	Q_MEMBERS_OF,
	Q_COUNT_ADD,
	Q_MEMBER_LIST,
	Q_MEMBER_DELETE,
	Q_ADMIN_COUNT,
	Q_PROMOTE,
	Q_USER_CONVS,
	Q_USER_CONVS_ADD,
	Q_WATERMARKS,
	Q_WATCHABLE,
	Q_LAST_SEEN_SET,
	Q_EXPIRE_MARKS,
	Q_SENDERS,
	Q_READ_COUNT,
	Q_UNREAD_TOTAL,
	Q_MESSAGE_AT,
	Q_RECEIPT_DETAIL,
	Q_HISTORY,
	Q_REPLAY,
	Q_HEADS,
	Q_SHARES,
	Q_DIRECT_STATE,
	Q_BLOCK_STATE,
	Q_SETTINGS,
	Q_SET_GROUP_ADDS,
	Q_SET_EXEMPT,
	Q_SET_PREVIEWS,
	Q_SET_MUTED,
	Q_PUSH_MARK,
	Q_PUSH_PENDING,
	Q_SEARCH,
	Q_BLOCK_INSERT,
	Q_BLOCK_DELETE,
	Q_MEMBER_BLOCKS_SYNC,
	Q_BLOCKS,
	Q_BLOCKED_IN_CONV,
	Q_BLOCKS_RECEIVED,
	Q_FIRST_COUNT,
	Q_FIRST_AT,
	Q_FIRST_INSERT,
	Q_FIRST_EXPIRE,
	Q_SEND_PROBE,
	Q_SEND_INSERT,
	Q_EVENT_APPLY,
	Q_REACTIONS_SYNC,
	Q_SEND_BUMP,
	Q_SEND_WROTE,
	Q_RECEIPT_APPLY,
	Q_SEND_INSERT_OUTBOX,
	Q_RECEIPT_APPLY_OUTBOX,
	Q_OUTBOX_TAKE,
	Q_OUTBOX_DELETE,
	Q_COUNT
};

/* The members of a conversation as "1,2,3", ascending, for columns that
 * carry a whole list in one row. */
#define MEMBERS_OF(c) \
	"(SELECT string_agg(x.user_id::text, ',' ORDER BY x.user_id) FROM members x WHERE x.conv_id = " c ")"

/* The columns of a message row as read_message takes them, from messages
 * l and its reply's target q (LEFT JOINed with MSG_QUOTE, or NULLs). */
#define MSG_COLS(l)                                                                              \
	l ".id, " l ".seq, " l ".sender, " l ".cmid, " l ".body, " l ".ts, " l ".kind, " l ".target, " \
	l ".edited_at, " l ".deleted, " l ".state_seq, " l ".reactions, q.sender, q.body, q.deleted"
/* A reply's target, when it is after the reader's joined_seq (joined). */
#define MSG_QUOTE(l, joined)                                                                       \
	" LEFT JOIN messages q ON " l ".kind = 0 AND " l ".target > 0 AND q.conv_id = " l ".conv_id " \
	"AND q.seq = " l ".target AND q.seq > " joined " "

/* One conversation as a member sees it, in one row (one snapshot): columns
 * 0 id, 1 kind, 2 title, 3 last_seq, 4 read_seq, 5 wrote, 6 blocks,
 * 7 activity, 8 members, 9 admins, 10 unread, 11 muted, 12 delivered_seq,
 * 13 pushed_seq, 14.. the newest message it may see (MSG_COLS). */
#define CONV_VIEW                                                                                \
	"SELECT c.id, c.kind, c.title, c.last_seq, m.read_seq, m.wrote, m.blocks, c.activity, "      \
	MEMBERS_OF("c.id") ", "                                                                     \
	"CASE WHEN c.kind = 2 THEN (SELECT string_agg(x.user_id::text, ',' ORDER BY x.user_id) "    \
	"FROM members x WHERE x.conv_id = c.id AND x.role = 1) END, "                               \
	"(SELECT count(*) FROM messages u WHERE u.conv_id = c.id AND u.seq > m.read_seq "            \
	"AND u.sender <> m.user_id AND u.kind = 0), "                                               \
	"m.muted, m.delivered_seq, m.pushed_seq, " MSG_COLS("l") " "                                \
	"FROM members m JOIN conversations c ON c.id = m.conv_id "                                   \
	"LEFT JOIN LATERAL (SELECT * FROM messages x WHERE x.conv_id = c.id AND x.kind = 0 AND "     \
	"x.seq > m.joined_seq ORDER BY x.seq DESC LIMIT 1) l ON true " MSG_QUOTE("l", "m.joined_seq")

/* Messages newest or oldest first with the body bytes of those before each
 * in that order, so that only what the byte bound can take is sent: a row
 * goes when the bytes before it are under the bound (the first always). */
#define MESSAGE_PAGE(order, where, limit, joined)                                                 \
	"SELECT " MSG_COLS("t") " FROM (SELECT *, "                                                  \
	"sum(octet_length(body)) OVER (ORDER BY seq " order " ROWS UNBOUNDED PRECEDING) "            \
	"- octet_length(body) AS before FROM messages WHERE " where " ORDER BY seq " order           \
	" LIMIT " limit ") t" MSG_QUOTE("t", joined) "WHERE t.before < GREATEST($5::bigint, 1) ORDER BY t.seq " order

/* A receipt in one statement (Q_RECEIPT_APPLY below says how); cte and
 * col add to it (the outbox's variant). */
#define RECEIPT_APPLY(cte, col) \
		"WITH cur AS (SELECT c.kind, c.member_version, LEAST($4::bigint, c.last_seq, $7::bigint) AS seq, " \
		"CASE WHEN $3::int = 2 THEN m.read_seq ELSE m.delivered_seq END AS prev, " \
		"(c.kind = 2 AND c.member_count > $6::int) AS big, " \
		"CASE WHEN c.kind = 1 THEN " MEMBERS_OF("c.id") " END AS members " \
		"FROM members m JOIN conversations c ON c.id = m.conv_id WHERE m.conv_id = $1::bigint " \
		"AND m.user_id = $2::bigint), " \
		"act AS (SELECT *, seq > prev AND ($3::int = 2 OR NOT big) AS moves FROM cur), " \
		"upd AS (UPDATE members m SET " \
		"read_seq = CASE WHEN $3::int = 2 THEN a.seq ELSE m.read_seq END, " \
		"delivered_seq = CASE WHEN $3::int <> 2 THEN a.seq WHEN a.big THEN m.delivered_seq " \
		"ELSE GREATEST(m.delivered_seq, a.seq) END " \
		"FROM act a WHERE a.moves AND m.conv_id = $1::bigint AND m.user_id = $2::bigint RETURNING 1), " \
		"mark AS (INSERT INTO receipt_marks(conv_id, user_id, state, seq, ts) " \
		"SELECT $1::bigint, $2::bigint, $3::int, a.seq, $5::bigint FROM act a WHERE a.moves AND NOT a.big " \
		"ON CONFLICT (conv_id, user_id, state, seq) DO UPDATE SET ts = excluded.ts RETURNING 1) " \
		cte "SELECT kind, member_version, seq, prev, moves::int, members" col " FROM act"

#define SEND_INSERT                                                                       \
	"INSERT INTO messages(id, conv_id, seq, sender, cmid, body, ts, kind, target) "           \
	"SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], "           \
	"$5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[])"

static const char *const queries[Q_COUNT] = {
	[Q_USER_INSERT] = "INSERT INTO users(username, pwhash, created_at) VALUES($1, $2, $3) "
	                  "ON CONFLICT (username) DO NOTHING RETURNING id",
	[Q_USER_BY_NAME] = "SELECT id, pwhash FROM users WHERE username = $1",
	[Q_USER_BY_ID] = "SELECT username FROM users WHERE id = $1",
	[Q_USER_EXISTS] = "SELECT 1 FROM users WHERE id = $1",
	/* Row locks in ascending id order, whatever order the caller names
	 * them in: two transactions locking overlapping sets cannot deadlock. */
	[Q_LOCK_USERS] = "SELECT id FROM users WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE",
	[Q_LOCK_CONVS] = "SELECT id, last_seq FROM conversations WHERE id = ANY($1::bigint[]) ORDER BY id "
	                 "FOR NO KEY UPDATE",
	[Q_DEVICE_INSERT] = "INSERT INTO devices(user_id, name, token_hash, created_at, last_used) "
	                    "VALUES($1, $2, $3, $4, $4) RETURNING id",
	[Q_DEVICE_BY_TOKEN] = "SELECT user_id, id, last_used FROM devices WHERE token_hash = $1",
	[Q_DEVICE_DELETE] = "DELETE FROM devices WHERE id = $1 AND user_id = $2",
	[Q_DEVICE_STATS] = "SELECT count(*), min(id) FROM devices WHERE user_id = $1",
	[Q_DEVICE_TOUCH] = "UPDATE devices SET last_used = $2 WHERE id = $1",
	[Q_DEVICES] = "SELECT id, name, created_at, last_used FROM devices WHERE user_id = $1 AND last_used >= $2 "
	              "ORDER BY id LIMIT 1000",
	/* The address leaves another device, if this one is the user's. */
	[Q_PUSH_TAKEOVER] = "DELETE FROM push_targets WHERE platform = $3 AND address = $4 AND device_id <> $2 "
	                    "AND EXISTS (SELECT 1 FROM devices WHERE id = $2 AND user_id = $1)",
	[Q_PUSH_PUT] = "INSERT INTO push_targets(user_id, device_id, platform, address, topic, sandbox, p256dh, auth, "
	               "created_at) SELECT user_id, id, $3, $4, $5, $6, $7, $8, $9 FROM devices WHERE id = $2 AND "
	               "user_id = $1 ON CONFLICT(device_id, platform) DO UPDATE SET address = excluded.address, "
	               "topic = excluded.topic, sandbox = excluded.sandbox, p256dh = excluded.p256dh, "
	               "auth = excluded.auth, created_at = excluded.created_at RETURNING id",
	[Q_PUSH_LIST] = "SELECT id, user_id, device_id, platform, address, topic, sandbox, p256dh, auth, created_at "
	                "FROM push_targets WHERE user_id = $1 ORDER BY id LIMIT 1000",
	[Q_PUSH_DELETE] = "DELETE FROM push_targets WHERE id = $2 AND user_id = $1",
	[Q_KEY_GET] = "SELECT value FROM server_keys WHERE name = $1",
	[Q_KEY_ADD] = "INSERT INTO server_keys(name, value) VALUES($1, $2) ON CONFLICT(name) DO NOTHING",
	[Q_DIRECT_FIND] = "SELECT id FROM conversations WHERE direct_key = $1",
	[Q_CONV_INSERT] = "INSERT INTO conversations(kind, title, direct_key, created_by, created_at, activity) "
	                  "VALUES($1, $2, $3, $4, $5::bigint, ($5::bigint - 1704067200000) << 22) "
	                  "ON CONFLICT (direct_key) DO NOTHING RETURNING id",
	/* A new member's watermarks start where it joined: what came before is
	 * neither unread nor visible to it. */
	[Q_MEMBER_INSERT] = "INSERT INTO members(conv_id, user_id, role, joined_at, joined_seq, delivered_seq, "
	                    "read_seq) VALUES($1, $2, $3, $4, $5, $5, $5) ON CONFLICT DO NOTHING",
	[Q_MEMBERSHIP] = "SELECT c.kind, c.last_seq, c.member_count, m.read_seq, m.delivered_seq, "
	                 "m.joined_seq, m.role, c.member_version, m.wrote, m.blocks, c.activity "
	                 "FROM members m JOIN conversations c ON c.id = m.conv_id "
	                 "WHERE m.conv_id = $1 AND m.user_id = $2",
	[Q_CONV_GET] = CONV_VIEW "WHERE m.conv_id = $1 AND m.user_id = $2",
	[Q_CONV_LIST] = CONV_VIEW "WHERE m.user_id = $1 AND (c.activity, c.id) < ($2::bigint, $3::bigint) "
	                "ORDER BY c.activity DESC, c.id DESC LIMIT $4",
	[Q_MEMBERS_OF] = "SELECT user_id FROM members WHERE conv_id = $1 ORDER BY user_id",
	/* Every membership change bumps the version, so a cached member list
	 * can tell whether it still holds for a message. */
	[Q_COUNT_ADD] = "UPDATE conversations SET member_count = member_count + $2, "
	                "member_version = member_version + 1 WHERE id = $1",
	/* One statement, one snapshot: the list and its version agree. */
	[Q_MEMBER_LIST] = "SELECT c.member_version, m.user_id, m.joined_seq FROM conversations c "
	                  "LEFT JOIN members m ON m.conv_id = c.id WHERE c.id = $1",
	[Q_MEMBER_DELETE] = "DELETE FROM members WHERE conv_id = $1 AND user_id = $2",
	[Q_ADMIN_COUNT] = "SELECT count(*) FROM members WHERE conv_id = $1 AND role = 1",
	[Q_PROMOTE] = "UPDATE members SET role = 1 WHERE conv_id = $1 AND user_id = "
	              "(SELECT user_id FROM members WHERE conv_id = $1 ORDER BY joined_at, user_id LIMIT 1) "
	              "RETURNING user_id",
	[Q_USER_CONVS] = "SELECT conv_count FROM users WHERE id = $1",
	[Q_USER_CONVS_ADD] = "UPDATE users SET conv_count = conv_count + $2 WHERE id = $1",
	[Q_WATERMARKS] = "SELECT user_id, joined_seq, delivered_seq, read_seq FROM members WHERE conv_id = $1",
	/* Presence is for contacts: $2 has written to $1 in their direct
	 * chat ($3, its key) and has not blocked $1. */
	[Q_WATCHABLE] = "SELECT coalesce(u.last_seen, 0) FROM users u WHERE u.id = $2 AND EXISTS "
	                "(SELECT 1 FROM conversations c JOIN members m ON m.conv_id = c.id "
	                "WHERE c.direct_key = $3 AND m.user_id = $2 AND m.wrote = 1) AND NOT EXISTS "
	                "(SELECT 1 FROM blocks WHERE user_id = $2 AND blocked_id = $1)",
	/* Locked beforehand (Q_LOCK_USERS); a user named twice counts its
	 * latest time once. */
	[Q_LAST_SEEN_SET] = "UPDATE users u SET last_seen = GREATEST(coalesce(u.last_seen, 0), v.t) "
	                    "FROM (SELECT id, max(t) AS t FROM unnest($1::bigint[], $2::bigint[]) AS x(id, t) "
	                    "GROUP BY id) v WHERE u.id = v.id",
	/* In slices, so that no statement runs for long. */
	[Q_EXPIRE_MARKS] = "DELETE FROM receipt_marks WHERE ctid = ANY(ARRAY("
	                   "SELECT ctid FROM receipt_marks WHERE ts < $1 LIMIT $2))",
	/* Messages only: an event has no receipts of its own. */
	[Q_SENDERS] = "SELECT seq, sender FROM messages WHERE conv_id = $1 AND seq >= $2 AND seq <= $3 "
	              "AND kind = 0 ORDER BY seq",
	/* A user's unread messages in every conversation, counted up to $2. */
	[Q_UNREAD_TOTAL] = "SELECT count(*) FROM (SELECT 1 FROM members m JOIN messages g ON g.conv_id = m.conv_id "
	                   "AND g.seq > m.read_seq AND g.seq > m.joined_seq WHERE m.user_id = $1 AND g.sender <> $1 "
	                   "AND g.kind = 0 LIMIT $2) t",
	[Q_READ_COUNT] = "SELECT count(*) FROM members WHERE conv_id = $1 AND user_id <> "
	                 "(SELECT sender FROM messages WHERE conv_id = $1 AND seq = $2) "
	                 "AND joined_seq < $2 AND read_seq >= $2",
	[Q_MESSAGE_AT] = "SELECT id, seq, sender, cmid, body, ts FROM messages WHERE conv_id = $1 AND seq = $2 "
	                 "AND kind = 0",
	/* Watermarks only rise, so the first mark at or above seq is the moment
	 * the watermark passed it; for every member but the sender ($3) who
	 * was a member when it was sent, in one statement. */
	[Q_RECEIPT_DETAIL] = "SELECT m.user_id, "
	                     "(SELECT r.ts FROM receipt_marks r WHERE r.conv_id = m.conv_id AND r.user_id = m.user_id "
	                     "AND r.state = 1 AND r.seq >= $2 ORDER BY r.seq LIMIT 1), "
	                     "(SELECT r.ts FROM receipt_marks r WHERE r.conv_id = m.conv_id AND r.user_id = m.user_id "
	                     "AND r.state = 2 AND r.seq >= $2 ORDER BY r.seq LIMIT 1) "
	                     "FROM members m WHERE m.conv_id = $1 AND m.joined_seq < $2 AND m.user_id <> $3 "
	                     "ORDER BY m.user_id",
	[Q_HISTORY] = MESSAGE_PAGE("DESC", "conv_id = $1 AND seq < $2 AND seq > $4", "$3", "$4"),
	[Q_REPLAY] = MESSAGE_PAGE("ASC", "conv_id = $1 AND seq > $2 AND seq <= $3", "$4", "$6"),
	[Q_HEADS] = "SELECT c.id, c.last_seq FROM members m JOIN conversations c ON c.id = m.conv_id "
	            "WHERE m.user_id = $1 ORDER BY c.id",
	[Q_SHARES] = "SELECT 1 FROM members a JOIN members b ON b.conv_id = a.conv_id "
	             "WHERE a.user_id = $1 AND b.user_id = $2 LIMIT 1",
	[Q_DIRECT_STATE] = "SELECT c.id, coalesce((SELECT wrote FROM members WHERE conv_id = c.id AND user_id = $1), 0), "
	                   "coalesce((SELECT wrote FROM members WHERE conv_id = c.id AND user_id = $2), 0) "
	                   "FROM conversations c WHERE c.direct_key = $3",
	[Q_BLOCK_STATE] = "SELECT EXISTS(SELECT 1 FROM users WHERE id = $2)::int, "
	                  "EXISTS(SELECT 1 FROM blocks WHERE user_id = $1 AND blocked_id = $2)::int, "
	                  "EXISTS(SELECT 1 FROM blocks WHERE user_id = $2 AND blocked_id = $1)::int",
	[Q_SETTINGS] = "SELECT group_adds, strangers_exempt, push_previews FROM users WHERE id = $1",
	[Q_SET_GROUP_ADDS] = "UPDATE users SET group_adds = $2 WHERE id = $1",
	[Q_SET_EXEMPT] = "UPDATE users SET strangers_exempt = $2 WHERE id = $1",
	[Q_SET_PREVIEWS] = "UPDATE users SET push_previews = $2 WHERE id = $1",
	[Q_SET_MUTED] = "UPDATE members SET muted = $3 WHERE conv_id = $1 AND user_id = $2",
	[Q_PUSH_MARK] = "UPDATE members SET pushed_seq = GREATEST(pushed_seq, $3) WHERE conv_id = $1 AND user_id = $2",
	/* From the newest messages (their ids are times) to the members they
	 * have not reached. */
	/* $2: tsquery syntax made from words only (store_search). The
	 * headline is made for the page's rows only (PostgreSQL evaluates a
	 * costly output column after the sort and limit). */
	[Q_SEARCH] = "SELECT " MSG_COLS("m") ", m.conv_id, "
	             "ts_headline('simple', m.body, w.q, 'StartSel=' || chr(2) || ', StopSel=' || chr(3) || "
	             "', MaxWords=24, MinWords=10, ShortWord=1, MaxFragments=2, FragmentDelimiter=\" … \"') "
	             "FROM (SELECT to_tsquery('simple', $2) AS q) w, members b JOIN messages m ON "
	             "m.conv_id = b.conv_id AND m.seq > b.joined_seq " MSG_QUOTE("m", "b.joined_seq")
	             "WHERE b.user_id = $1 AND m.tsv @@ w.q AND m.kind = 0 AND ($3 = 0 OR m.conv_id = $3) "
	             "ORDER BY ts_rank(m.tsv, w.q) DESC, m.id DESC LIMIT $4 OFFSET $5",
	[Q_PUSH_PENDING] = "SELECT m.conv_id, m.user_id, c.kind, l.seq, l.sender, l.ts, l.body FROM messages l JOIN conversations c ON c.id = l.conv_id AND c.last_seq = l.seq JOIN members m ON m.conv_id = l.conv_id WHERE l.id > $1 AND l.kind = 0 AND m.user_id <> l.sender AND m.muted = 0 AND m.joined_seq < l.seq AND m.delivered_seq < l.seq AND m.read_seq < l.seq AND m.pushed_seq < l.seq AND EXISTS(SELECT 1 FROM push_targets t WHERE t.user_id = m.user_id) ORDER BY l.id, m.user_id LIMIT $2",
	[Q_BLOCK_INSERT] = "INSERT INTO blocks(user_id, blocked_id, created_at) VALUES($1, $2, $3) "
	                   "ON CONFLICT DO NOTHING",
	[Q_BLOCK_DELETE] = "DELETE FROM blocks WHERE user_id = $1 AND blocked_id = $2",
	/* A direct chat's member row carries its blocks (1: this member has
	 * blocked the other, 2: the other has blocked it), recomputed from
	 * the blocks table, so that a send checks them in the row it reads
	 * anyway. */
	[Q_MEMBER_BLOCKS_SYNC] = "UPDATE members SET blocks = "
	                         "EXISTS(SELECT 1 FROM blocks WHERE user_id = $2 AND blocked_id = $3)::int | "
	                         "(EXISTS(SELECT 1 FROM blocks WHERE user_id = $3 AND blocked_id = $2)::int << 1) "
	                         "WHERE conv_id = $1 AND user_id = $2",
	[Q_BLOCKS] = "SELECT blocked_id, created_at FROM blocks WHERE user_id = $1 AND blocked_id > $2 "
	             "ORDER BY blocked_id LIMIT $3",
	/* From the user's own blocks, both ways (a few rows), each checked
	 * against the membership: not two lookups per member. */
	[Q_BLOCKED_IN_CONV] = "SELECT blocked_id FROM blocks WHERE user_id = $1 AND blocked_id IN "
	                      "(SELECT user_id FROM members WHERE conv_id = $2) UNION "
	                      "SELECT user_id FROM blocks WHERE blocked_id = $1 AND user_id IN "
	                      "(SELECT user_id FROM members WHERE conv_id = $2)",
	/* Only blocks by people it reached first count against a user:
	 * nobody can shrink another's budget with puppets that were never
	 * written to. */
	[Q_BLOCKS_RECEIVED] = "SELECT count(*) FROM blocks b WHERE b.blocked_id = $1 AND b.created_at >= $2 "
	                      "AND EXISTS (SELECT 1 FROM first_contacts f WHERE f.user_id = $1 AND "
	                      "f.target_id = b.user_id)",
	[Q_FIRST_COUNT] = "SELECT count(*) FROM first_contacts WHERE user_id = $1 AND ts >= $2",
	[Q_FIRST_AT] = "SELECT ts FROM first_contacts WHERE user_id = $1 AND ts >= $2 ORDER BY ts LIMIT 1 OFFSET $3",
	[Q_FIRST_INSERT] = "INSERT INTO first_contacts(user_id, target_id, ts) "
	                   "SELECT $1, t, $3 FROM unnest($2::bigint[]) AS t",
	[Q_FIRST_EXPIRE] = "DELETE FROM first_contacts WHERE ctid = ANY(ARRAY("
	                   "SELECT ctid FROM first_contacts WHERE ts < $1 LIMIT $2))",
	/* The first look of a batch's sends, all in one statement, under
	 * their conversations' locks: per send, in the order given, the
	 * membership (wrote NULL for a non-member), the blocks, a direct chat's
	 * two members, the message already stored under its cmid if any, and
	 * whether the sender has written there before. Each lookup is a
	 * LATERAL subquery with LIMIT 1, which the planner cannot flatten into
	 * a join of its choosing: every send costs three primary-key or
	 * unique-index probes, whatever the tables' sizes or the cached plan's
	 * guesses (a plain join let a generic plan probe the cmid index on
	 * (conversation, sender) alone and read every message of the sender). */
	[Q_SEND_PROBE] = "SELECT c.kind, c.member_count, c.member_version, m.blocks, "
	                 "CASE WHEN c.kind = 1 THEN " MEMBERS_OF("b.conv") " END, d.id, d.seq, d.ts, m.wrote, "
	                 "t.sender, t.ts, t.kind, t.deleted, m.role, m.joined_seq, "
	                 "CASE WHEN b.mkind = 1 AND c.kind = 2 THEN (SELECT max(joined_seq) FROM members "
	                 "WHERE conv_id = b.conv) END "
	                 "FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[]) "
	                 "WITH ORDINALITY AS b(conv, usr, cmid, tgt, mkind, i) "
	                 "LEFT JOIN LATERAL (SELECT blocks, wrote, role, joined_seq FROM members WHERE conv_id = b.conv "
	                 "AND user_id = b.usr LIMIT 1) m ON true "
	                 /* An event's (or a reply's) target. */
	                 "LEFT JOIN LATERAL (SELECT sender, ts, kind, deleted FROM messages WHERE b.tgt > 0 "
	                 "AND conv_id = b.conv AND seq = b.tgt LIMIT 1) t ON true "
	                 "LEFT JOIN LATERAL (SELECT kind, member_count, member_version FROM conversations "
	                 "WHERE id = b.conv LIMIT 1) c ON true "
	                 "LEFT JOIN LATERAL (SELECT id, seq, ts FROM messages WHERE conv_id = b.conv "
	                 "AND sender = b.usr AND cmid = b.cmid LIMIT 1) d ON true "
	                 "ORDER BY b.i",
	/* The batch's new messages in one statement, at the seqs the batch
	 * gave them under the locks. No ON CONFLICT: a twin can only have been
	 * stored under the same lock and the probe would have seen it, so a
	 * conflict fails the batch (nothing stored, every op an error, the
	 * clients' retries then find the twin) rather than leave a gap. */
	[Q_SEND_INSERT] = SEND_INSERT,
	/* The same with the outbox on: each message's outbox row in the same
	 * statement, naming it (its body is not copied); the rows' ids come
	 * back with the message ids they describe. */
	[Q_SEND_INSERT_OUTBOX] = "WITH m AS (" SEND_INSERT " RETURNING id, conv_id, seq, sender, ts) "
	                         "INSERT INTO outbox(conv_id, kind, seq, user_id, msg_id, created_at) "
	                         "SELECT conv_id, 1, seq, sender, id, ts FROM m RETURNING id, msg_id",
	/* Each conversation's counter moves once per batch, by all its
	 * messages at once (last_seq + k), with the last one's id as its
	 * activity. */
	[Q_SEND_BUMP] = "UPDATE conversations c SET last_seq = v.seq, activity = v.act "
	                "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, seq, act) WHERE c.id = v.id",
	/* What a stored event leaves on its target ($2), in op order after
	 * the batch's rows are in: an edit's text, a delete's tombstone (the
	 * text gone from the message and from its edits, its reactions
	 * dropped), a reaction's row. The parts see one snapshot, so a
	 * reaction's summary is the next statement. */
	[Q_EVENT_APPLY] = "WITH e AS (SELECT $1::bigint AS conv, $2::bigint AS tgt, $3::int AS kind, $4::text AS body, "
	                  "$5::bigint AS ts, $6::bigint AS seq, $7::bigint AS usr), "
	                  "ed AS (UPDATE messages m SET body = e.body, edited_at = e.ts, state_seq = e.seq FROM e "
	                  "WHERE e.kind = 1 AND m.conv_id = e.conv AND m.seq = e.tgt RETURNING 1), "
	                  "dl AS (UPDATE messages m SET body = '', deleted = 1, reactions = NULL, state_seq = e.seq "
	                  "FROM e WHERE e.kind = 2 AND m.conv_id = e.conv AND m.seq = e.tgt RETURNING 1), "
	                  "de AS (UPDATE messages m SET body = '' FROM e WHERE e.kind = 2 AND m.conv_id = e.conv "
	                  "AND m.target = e.tgt AND m.kind = 1 RETURNING 1), "
	                  "dr AS (DELETE FROM reactions r USING e WHERE e.kind = 2 AND r.conv_id = e.conv "
	                  "AND r.msg_seq = e.tgt RETURNING 1), "
	                  "rp AS (INSERT INTO reactions(conv_id, msg_seq, user_id, emoji, seq) SELECT conv, tgt, usr, "
	                  "body, seq FROM e WHERE kind = 3 AND body <> '' ON CONFLICT (conv_id, msg_seq, user_id) "
	                  "DO UPDATE SET emoji = excluded.emoji, seq = excluded.seq RETURNING 1), "
	                  "rd AS (DELETE FROM reactions r USING e WHERE e.kind = 3 AND e.body = '' AND "
	                  "r.conv_id = e.conv AND r.msg_seq = e.tgt AND r.user_id = e.usr RETURNING 1) "
	                  "SELECT (SELECT count(*) FROM ed) + (SELECT count(*) FROM dl) + (SELECT count(*) FROM de) + "
	                  "(SELECT count(*) FROM dr) + (SELECT count(*) FROM rp) + (SELECT count(*) FROM rd)",
	/* The message's reactions as the JSON its readers get, kept in its
	 * row so that no read of history aggregates them: each emoji once, in
	 * the order it first came, with who gave it. */
	[Q_REACTIONS_SYNC] = "UPDATE messages SET state_seq = $3, reactions = (SELECT json_agg(json_build_object("
	                     "'emoji', emoji, 'users', users) ORDER BY first)::text FROM (SELECT emoji, "
	                     "json_agg(user_id ORDER BY user_id) AS users, min(seq) AS first FROM reactions "
	                     "WHERE conv_id = $1 AND msg_seq = $2 GROUP BY emoji) g) WHERE conv_id = $1 AND seq = $2",
	/* The first-message marks of the senders who had none. */
	[Q_SEND_WROTE] = "UPDATE members m SET wrote = 1 FROM unnest($1::bigint[], $2::bigint[]) AS v(conv, usr) "
	                 "WHERE m.conv_id = v.conv AND m.user_id = v.usr AND m.wrote = 0",
	/* A receipt in one statement. The watermark asked for ($4) is capped at
	 * the head (nobody received what does not exist yet) — the head where
	 * the receipt stands in its batch ($7), since the batch's messages are
	 * stored before its receipts — and moves only up. A read implies delivery; a group over the detail bound ($6)
	 * keeps read watermarks only, no "delivered", no marks. Answers kind,
	 * member_version, the capped seq, the previous watermark, whether it
	 * moved, and a direct chat's members; no row for a non-member. */
	[Q_RECEIPT_APPLY] = RECEIPT_APPLY("", ""),
	/* With the outbox on: a watermark that moves writes its outbox row
	 * in the same statement, and its id is the answer's last column. */
	[Q_RECEIPT_APPLY_OUTBOX] = RECEIPT_APPLY(
		", ob AS (INSERT INTO outbox(conv_id, kind, seq, user_id, created_at) "
		"SELECT $1::bigint, CASE WHEN $3::int = 2 THEN 3 ELSE 2 END, a.seq, $2::bigint, $5::bigint "
		"FROM act a WHERE a.moves RETURNING id) ",
		", (SELECT id FROM ob)"),
	/* Marks the oldest rows not taken since $2 as taken at $1, skipping
	 * those another node's take is marking right now (SKIP LOCKED): nodes
	 * sweeping together get disjoint rows, and nobody waits. A row whose
	 * taker died is taken again once $2 passes its mark. */
	[Q_OUTBOX_TAKE] = "WITH t AS (UPDATE outbox o SET taken_at = $1 FROM (SELECT id FROM outbox "
	                  "WHERE created_at <= $2 AND taken_at <= $2 ORDER BY id LIMIT $3 "
	                  "FOR UPDATE SKIP LOCKED) c WHERE o.id = c.id RETURNING o.*) "
	                  "SELECT t.id, t.conv_id, t.kind, t.seq, t.user_id, t.created_at, "
	                  "m.id, m.seq, m.sender, m.cmid, m.body, m.ts, m.kind, m.target, m.edited_at, "
	                  "m.deleted, m.state_seq, m.reactions, NULL::bigint, NULL::text, NULL::integer FROM t "
	                  "LEFT JOIN messages m ON m.id = t.msg_id ORDER BY t.id",
	[Q_OUTBOX_DELETE] = "DELETE FROM outbox WHERE id = ANY($1::bigint[])",
};

/* Version 1, from nothing. Ids of users, devices and conversations come
 * from identity columns; a message's id is the snowflake it was given. */
static const char schema_v1[] =
	"CREATE TABLE users("
	"  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
	"  username text NOT NULL UNIQUE,"
	"  pwhash text NOT NULL,"
	"  created_at bigint NOT NULL,"
	"  last_seen bigint,"
	"  group_adds integer NOT NULL DEFAULT 0,"       /* STORE_ADDS_* */
	"  strangers_exempt integer NOT NULL DEFAULT 0,"
	"  conv_count integer NOT NULL DEFAULT 0);"
	"CREATE TABLE devices("
	"  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
	"  user_id bigint NOT NULL REFERENCES users(id),"
	"  name text NOT NULL,"
	"  token_hash bytea NOT NULL UNIQUE,"
	"  created_at bigint NOT NULL,"
	"  last_used bigint NOT NULL);"
	"CREATE INDEX devices_by_user ON devices(user_id);"
	/* Updated at every send (last_seq, activity): room on each page for
	 * the new row version keeps those updates HOT. */
	"CREATE TABLE conversations("
	"  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
	"  kind integer NOT NULL,"
	"  title text,"
	"  direct_key text UNIQUE,"      /* 'low:high' user ids of a direct chat */
	"  created_by bigint NOT NULL,"
	"  created_at bigint NOT NULL,"
	"  last_seq bigint NOT NULL DEFAULT 0,"
	"  member_count integer NOT NULL DEFAULT 0,"
	"  member_version bigint NOT NULL DEFAULT 0,"
	/* Orders the conversation list: the snowflake id of the last message,
	 * or one made of the creation time. */
	"  activity bigint NOT NULL) WITH (fillfactor = 70);"
	"CREATE TABLE members("
	"  conv_id bigint NOT NULL,"
	"  user_id bigint NOT NULL,"
	"  role integer NOT NULL DEFAULT 0,"         /* 1: admin */
	"  joined_at bigint NOT NULL,"
	"  delivered_seq bigint NOT NULL DEFAULT 0,"
	"  read_seq bigint NOT NULL DEFAULT 0,"
	"  joined_seq bigint NOT NULL DEFAULT 0,"   /* sees messages after this */
	"  wrote integer NOT NULL DEFAULT 0,"       /* has sent a message here */
	"  blocks integer NOT NULL DEFAULT 0,"      /* direct chats: see Q_MEMBER_BLOCKS_SYNC */
	"  PRIMARY KEY(conv_id, user_id)) WITH (fillfactor = 80);"
	"CREATE INDEX members_by_user ON members(user_id, conv_id);"
	"CREATE TABLE messages("
	"  id bigint PRIMARY KEY,"
	"  conv_id bigint NOT NULL,"
	"  seq bigint NOT NULL,"
	"  sender bigint NOT NULL,"
	"  cmid text NOT NULL,"
	"  body text NOT NULL,"
	"  ts bigint NOT NULL,"
	"  CONSTRAINT messages_seq UNIQUE(conv_id, seq),"
	"  CONSTRAINT messages_cmid UNIQUE(conv_id, sender, cmid));"
	/* One row per receipt that moved a watermark: what per-message
	 * delivered_at / read_at are derived from. */
	"CREATE TABLE receipt_marks("
	"  conv_id bigint NOT NULL,"
	"  user_id bigint NOT NULL,"
	"  state integer NOT NULL,"
	"  seq bigint NOT NULL,"
	"  ts bigint NOT NULL,"
	"  PRIMARY KEY(conv_id, user_id, state, seq));"
	"CREATE INDEX receipt_marks_by_ts ON receipt_marks(ts);"
	"CREATE TABLE blocks("
	"  user_id bigint NOT NULL,"
	"  blocked_id bigint NOT NULL,"
	"  created_at bigint NOT NULL,"
	"  PRIMARY KEY(user_id, blocked_id));"
	"CREATE INDEX blocks_received ON blocks(blocked_id, created_at);"
	"CREATE TABLE first_contacts("
	"  user_id bigint NOT NULL,"
	"  target_id bigint NOT NULL,"
	"  ts bigint NOT NULL);"
	"CREATE INDEX first_contacts_by_user ON first_contacts(user_id, ts);"
	"CREATE INDEX first_contacts_by_pair ON first_contacts(user_id, target_id);"
	"CREATE INDEX first_contacts_by_ts ON first_contacts(ts);";

/* Version 2: the outbox (store_set_outbox), what the log is still to be
 * told. A message's row names its messages row (msg_id) and is joined at
 * take time, so a send writes its body once; receipts carry all they need.
 * taken_at: when a take last handed the row out (0: never). */
static const char schema_v2[] =
	"CREATE TABLE outbox("
	"  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
	"  conv_id bigint NOT NULL,"
	"  kind integer NOT NULL,"          /* STORE_EVENT_* */
	"  seq bigint NOT NULL,"
	"  user_id bigint NOT NULL,"        /* the sender, or the receipt's member */
	"  msg_id bigint,"
	"  created_at bigint NOT NULL,"
	"  taken_at bigint NOT NULL DEFAULT 0);";

/* Version 3: where devices are woken (one target per device and
 * platform, an address on one device at most; gone with the device), and
 * the server's own keys. */
static const char schema_v3[] =
	"CREATE TABLE push_targets("
	"  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
	"  user_id bigint NOT NULL REFERENCES users(id),"
	"  device_id bigint NOT NULL REFERENCES devices(id) ON DELETE CASCADE,"
	"  platform integer NOT NULL,"      /* STORE_PUSH_* */
	"  address text NOT NULL,"
	"  topic text NOT NULL DEFAULT '',"
	"  sandbox integer NOT NULL DEFAULT 0,"
	"  p256dh text NOT NULL DEFAULT '',"
	"  auth text NOT NULL DEFAULT '',"
	"  created_at bigint NOT NULL,"
	"  UNIQUE(device_id, platform),"
	"  UNIQUE(platform, address));"
	"CREATE INDEX push_targets_by_user ON push_targets(user_id);"
	"CREATE TABLE server_keys("
	"  name text PRIMARY KEY,"
	"  value text NOT NULL);";

/* Version 4: muted conversations, whether pushes show the text, and what
 * was pushed (store_push_mark). */
static const char schema_v4[] =
	"ALTER TABLE users ADD COLUMN push_previews integer NOT NULL DEFAULT 1;"
	"ALTER TABLE members ADD COLUMN muted integer NOT NULL DEFAULT 0;"
	"ALTER TABLE members ADD COLUMN pushed_seq bigint NOT NULL DEFAULT 0;";

/* Version 5: full-text search. The 'simple' configuration: words folded
 * to lower case, no stemming (a chat is in any language, often several),
 * as store_sqlite.c's FTS5 index. A generated column is computed in the
 * transaction of each write, so the index is never behind. */
static const char schema_v5[] =
	"ALTER TABLE messages ADD COLUMN tsv tsvector "
	"  GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, body)) STORED;"
	"CREATE INDEX messages_tsv ON messages USING gin(tsv);";

/* Version 6: edits, deletes, reactions and replies (store.h's
 * STORE_MSG_*): what a row is, the message it is about, the state events
 * leave on a message, and who reacted with what. Columns with constant
 * defaults: no table rewrite. */
static const char schema_v6[] =
	"ALTER TABLE messages ADD COLUMN kind integer NOT NULL DEFAULT 0, "
	"  ADD COLUMN target bigint NOT NULL DEFAULT 0, ADD COLUMN edited_at bigint NOT NULL DEFAULT 0, "
	"  ADD COLUMN deleted integer NOT NULL DEFAULT 0, ADD COLUMN state_seq bigint NOT NULL DEFAULT 0, "
	"  ADD COLUMN reactions text;"
	"CREATE TABLE reactions("
	"  conv_id bigint NOT NULL,"
	"  msg_seq bigint NOT NULL,"
	"  user_id bigint NOT NULL,"
	"  emoji text NOT NULL,"
	"  seq bigint NOT NULL,"
	"  PRIMARY KEY(conv_id, msg_seq, user_id));";

/* migrations[v] takes the schema from version v to v + 1 (0: none yet). */
static const char *const migrations[SCHEMA_VERSION] = {
	schema_v1,
	schema_v2,
	schema_v3,
	schema_v4,
	schema_v5,
	schema_v6,
};

/* Run on every new connection, before anything else. The statement
 * timeout counts a wait for a lock too. */
static const char session_setup[] =
	"SET statement_timeout = 10000;"
	"SET idle_in_transaction_session_timeout = 60000;"
	"SET TIME ZONE 'UTC'";

typedef struct pg_store {
	store_t base;
	PGconn *conn;            /* NULL while disconnected */
	char *location;
	char where[256];         /* the location for messages, without a password */
	int prepared;            /* the statements exist on conn */
	int64_t deadline;        /* of the call in progress, clock_mono_ms */
	int64_t last_attempt;    /* of a connection, clock_mono_ms */
	int64_t backoff;         /* before the next attempt after one failed */
	int down;                /* the last attempt failed: say so when one succeeds */
	int quiet;               /* failures go to err only, for the caller to log */
	int outbox;              /* store_set_outbox */
	int lazy;                /* store_set_lazy_commit: set again on each connection */
	char err[512];           /* the last failure */
} pg_store_t;

static const store_vtab_t pg_vtab;

#define S(s) ((pg_store_t *)(s))

/* ---- parameters and results --------------------------------------- */

#define MAX_PARAMS 10

typedef struct params {
	int n;
	const char *v[MAX_PARAMS];
	int len[MAX_PARAMS];
	int fmt[MAX_PARAMS];
	char num[MAX_PARAMS][24];
} params_t;

static params_t *p_int(params_t *p, int64_t x)
{
	snprintf(p->num[p->n], sizeof p->num[p->n], "%lld", (long long)x);
	p->v[p->n] = p->num[p->n];
	p->len[p->n] = 0;
	p->fmt[p->n++] = 0;
	return p;
}

/* A size for a bigint parameter: SIZE_MAX means "no bound". */
static params_t *p_size(params_t *p, size_t x)
{
	return p_int(p, x > (size_t)INT64_MAX ? INT64_MAX : (int64_t)x);
}

/* A page's limit and one more, which tells whether there is more. */
static params_t *p_more(params_t *p, size_t limit)
{
	return p_size(p, limit < SIZE_MAX ? limit + 1 : limit);
}

/* NUL-terminated text; NULL is SQL NULL. */
static params_t *p_text(params_t *p, const char *t)
{
	p->v[p->n] = t;
	p->len[p->n] = 0;
	p->fmt[p->n++] = 0;
	return p;
}

/* Bytes of a known length in binary format: for text that need not end in
 * a NUL (a body) and for bytea. */
static params_t *p_bytes(params_t *p, const void *b, size_t n)
{
	p->v[p->n] = b;
	p->len[p->n] = (int)n;
	p->fmt[p->n++] = 1;
	return p;
}

static int64_t g_int(const PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* A malloc'd copy of a column (NULL for SQL NULL, or out of memory). */
static char *g_dup(const PGresult *r, int row, int col, size_t *len)
{
	size_t n = (size_t)PQgetlength(r, row, col);
	char *t;

	if (PQgetisnull(r, row, col) || !(t = malloc(n + 1)))
		return NULL;
	memcpy(t, PQgetvalue(r, row, col), n);
	t[n] = 0;
	if (len)
		*len = n;
	return t;
}

/* A column holding ids as "1,2,3" (or NULL: none) into a malloc'd array. */
static int g_ids(const PGresult *r, int row, int col, int64_t **out, size_t *n)
{
	const char *p, *t;
	size_t cap = 1;

	*out = NULL;
	*n = 0;
	if (PQgetisnull(r, row, col) || !*(p = PQgetvalue(r, row, col)))
		return STORE_OK;
	for (t = p; *t; t++)
		cap += *t == ',';
	if (!(*out = malloc(cap * sizeof **out)))
		return STORE_ERROR;
	while (*p && *n < cap) {
		char *end;
		(*out)[(*n)++] = strtoll(p, &end, 10);
		p = *end == ',' ? end + 1 : end;
	}
	return STORE_OK;
}

/* How many rows a command changed. */
static int64_t changes(PGresult *r)
{
	const char *t = PQcmdTuples(r);

	return *t ? strtoll(t, NULL, 10) : 0;
}

/* ids as a bigint[] literal, "{1,2,3}"; malloc'd. */
static char *id_array(const int64_t *ids, size_t n)
{
	char *a = malloc(n * 21 + 3), *p;
	size_t i;

	if (!a)
		return NULL;
	p = a;
	*p++ = '{';
	for (i = 0; i < n; i++)
		p += sprintf(p, i ? ",%lld" : "%lld", (long long)ids[i]);
	*p++ = '}';
	*p = 0;
	return a;
}

/* ---- the connection ------------------------------------------------ */

/* The location for log lines: a password in it ("user:secret@" or
 * "password=secret") becomes "***". */
static void redact(const char *location, char *out, size_t size)
{
	const char *scheme = strstr(location, "://"), *auth, *at, *colon;
	char *pw;
	size_t end;

	snprintf(out, size, "%s", location);
	if (scheme) {
		auth = scheme + 3;
		end = strcspn(auth, "/?");
		at = memchr(auth, '@', end);
		colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
		if (colon)
			snprintf(out, size, "%.*s:***%s", (int)(colon - location), location, at);
	}
	if ((pw = strstr(out, "password="))) {
		char rest[256];
		snprintf(rest, sizeof rest, "%s", pw + 9 + strcspn(pw + 9, "& "));
		snprintf(pw + 9, size - (size_t)(pw + 9 - out), "***%s", rest);
	}
}

/* libpq's last error, on one line. */
static const char *conn_error(PGconn *c)
{
	static _Thread_local char buf[512];
	char *p;

	snprintf(buf, sizeof buf, "%s", c ? PQerrorMessage(c) : "out of memory");
	for (p = buf; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	while (p > buf && p[-1] == ' ')
		*--p = 0;
	return buf;
}

/* Records a failure, and logs it unless the caller will (s->quiet). */
static void report(pg_store_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void report(pg_store_t *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->err, sizeof s->err, fmt, ap);
	va_end(ap);
	if (!s->quiet)
		log_error("store: %s", s->err);
}

static void drop(pg_store_t *s)
{
	PQfinish(s->conn);
	s->conn = NULL;
	s->prepared = 0;
}

/* The connection failed or went silent: the call in progress fails, and a
 * later one reconnects. Returns -1. */
static int lost(pg_store_t *s, const char *why)
{
	if (s->conn)
		report(s, "lost the PostgreSQL connection to %s: %s", s->where, why ? why : conn_error(s->conn));
	drop(s);
	return -1;
}

/* Waits until the socket is ready for events or the call's deadline
 * passes. Returns the poll revents, or -1 at the deadline. */
static int wait_socket(pg_store_t *s, short events)
{
	struct pollfd pfd;
	int64_t left;
	int r;

	pfd.fd = PQsocket(s->conn);
	pfd.events = events;
	if (pfd.fd < 0)
		return -1;
	do {
		if ((left = s->deadline - clock_mono_ms()) <= 0)
			return -1;
		r = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
	} while (r == 0 || (r < 0 && errno == EINTR));
	return r < 0 ? -1 : pfd.revents;
}

/* Sends what libpq holds, reading meanwhile so that the server never
 * stalls writing answers we do not read. Returns 0, or -1 (dropped). */
static int flush_out(pg_store_t *s)
{
	int r, ev;

	while ((r = PQflush(s->conn)) == 1) {
		if ((ev = wait_socket(s, POLLIN | POLLOUT)) < 0)
			return lost(s, "no progress sending before the deadline");
		if ((ev & (POLLIN | POLLERR | POLLHUP)) && !PQconsumeInput(s->conn))
			return lost(s, NULL);
	}
	return r == 0 ? 0 : lost(s, NULL);
}

/* The next result (NULL between one statement's results and the next's),
 * waiting for it. *err when the connection failed or the deadline passed
 * (then it is dropped). */
static PGresult *next_result(pg_store_t *s, int *err)
{
	while (PQisBusy(s->conn)) {
		if (wait_socket(s, POLLIN) < 0) {
			lost(s, "no answer before the deadline");
			*err = 1;
			return NULL;
		}
		if (!PQconsumeInput(s->conn)) {
			lost(s, NULL);
			*err = 1;
			return NULL;
		}
	}
	return PQgetResult(s->conn);
}

/* Logs a failed result. Drops the connection when that is what failed. */
static int failed(pg_store_t *s, PGresult *r, const char *what)
{
	const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;

	/* The connection's end (an administrator's or a shutdown's: class
	 * 57P; a connection exception: 08), even if libpq has yet to see it. */
	if (s->conn && (PQstatus(s->conn) != CONNECTION_OK ||
	                (state && (!strncmp(state, "57P", 3) || !strncmp(state, "08", 2))))) {
		lost(s, msg);
		return STORE_ERROR;
	}
	report(s, "%s: %s%s%s%s", what, msg ? msg : conn_error(s->conn), state ? " (SQLSTATE " : "",
	       state ? state : "", state ? ")" : "");
	return STORE_ERROR;
}

/* Collects every result of what was sent, keeping the first. */
static int collect(pg_store_t *s, const char *what, PGresult **out)
{
	PGresult *r, *res = NULL;
	int err = 0;

	*out = NULL;
	if (flush_out(s) < 0)
		return STORE_ERROR;
	while ((r = next_result(s, &err))) {
		if (!res || (PQresultStatus(res) != PGRES_FATAL_ERROR && PQresultStatus(r) == PGRES_FATAL_ERROR)) {
			PQclear(res);
			res = r;
		} else {
			PQclear(r);
		}
	}
	if (err) {
		PQclear(res);
		return STORE_ERROR;
	}
	if (res && (PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK)) {
		*out = res;
		return STORE_OK;
	}
	failed(s, res, what);
	PQclear(res);
	return STORE_ERROR;
}

/* Runs prepared statement `which` with p; *out gets its result, for the
 * caller to PQclear. STORE_OK or STORE_ERROR (logged). */
static int run(pg_store_t *s, int which, const params_t *p, PGresult **out)
{
	char name[16];

	*out = NULL;
	if (!s->conn)
		return STORE_ERROR;
	snprintf(name, sizeof name, "q%d", which);
	if (!PQsendQueryPrepared(s->conn, name, p ? p->n : 0, p ? p->v : NULL, p ? p->len : NULL,
	                         p ? p->fmt : NULL, 0)) {
		lost(s, NULL);
		return STORE_ERROR;
	}
	return collect(s, queries[which], out);
}

/* Runs a statement that answers nothing wanted. */
static int exec(pg_store_t *s, int which, const params_t *p)
{
	PGresult *r;
	int rc = run(s, which, p, &r);

	PQclear(r);
	return rc;
}

/* Runs SQL text (several statements allowed); what names it in messages. */
static int run_sql(pg_store_t *s, const char *sql, const char *what, PGresult **out)
{
	*out = NULL;
	if (!s->conn)
		return STORE_ERROR;
	if (!PQsendQuery(s->conn, sql)) {
		lost(s, NULL);
		return STORE_ERROR;
	}
	return collect(s, what, out);
}

static int exec_sql(pg_store_t *s, const char *sql, const char *what)
{
	PGresult *r;
	int rc = run_sql(s, sql, what, &r);

	PQclear(r);
	return rc;
}

/* store_set_lazy_commit's setting, for the session (again after each
 * connect). */
static int apply_lazy(pg_store_t *s)
{
	return exec_sql(s, s->lazy ? "SET synchronous_commit = off" : "SET synchronous_commit = on",
	                "synchronous_commit");
}

static int begin(pg_store_t *s)
{
	return exec_sql(s, "BEGIN", "BEGIN");
}

/* COMMIT answers "ROLLBACK" for a transaction that had failed: only
 * "COMMIT" is a success. */
static int commit(pg_store_t *s)
{
	PGresult *r;
	int rc = run_sql(s, "COMMIT", "COMMIT", &r);

	if (rc == STORE_OK && strcmp(PQcmdStatus(r), "COMMIT") != 0) {
		report(s, "the transaction was rolled back at commit");
		rc = STORE_ERROR;
	}
	PQclear(r);
	return rc;
}

static void rollback(pg_store_t *s)
{
	if (s->conn && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
		exec_sql(s, "ROLLBACK", "ROLLBACK");
}

/* Commits, or rolls back and returns r when r is not STORE_OK. */
static int finish(pg_store_t *s, int r)
{
	if (r == STORE_OK && commit(s) == STORE_OK)
		return STORE_OK;
	rollback(s);
	return r == STORE_OK ? STORE_ERROR : r;
}

/* The server's notices go to the log, not to stderr: a warning or a
 * session's end as warnings, the rest (CREATE ... IF NOT EXISTS) as debug. */
static void notice(void *ud, const char *message)
{
	size_t n = strcspn(message, "\n");

	(void)ud;
	if (!strncmp(message, "WARNING", 7) || !strncmp(message, "FATAL", 5) || !strncmp(message, "PANIC", 5))
		log_warn("store: PostgreSQL says: %.*s", (int)n, message);
	else
		log_debug("store: PostgreSQL says: %.*s", (int)n, message);
}

/* Connects to location with the timeouts a store needs; the location's
 * own settings win over these defaults. NULL on failure, with the reason
 * logged. */
static PGconn *pg_connect(const char *location, const char *where)
{
	static const char *const keys[] = {
		"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
		"keepalives_count", "tcp_user_timeout", "client_encoding", "application_name",
		"dbname", NULL,
	};
	const char *values[] = {
		"3", "1", "10", "3", "3", "15000", "UTF8", "parley", location, NULL,
	};
	PGconn *c = PQconnectdbParams(keys, values, 1);

	if (!c || PQstatus(c) != CONNECTION_OK) {
		log_error("store: cannot connect to PostgreSQL at %s: %s", where, conn_error(c));
		PQfinish(c);
		return NULL;
	}
	PQsetNoticeProcessor(c, notice, NULL);
	if (PQsetnonblocking(c, 1) != 0) {
		log_error("store: cannot use the PostgreSQL connection to %s: %s", where, conn_error(c));
		PQfinish(c);
		return NULL;
	}
	return c;
}

/* The schema version the database holds (0: none). */
static int read_version(pg_store_t *s, int *version)
{
	PGresult *r;
	int rc;

	*version = 0;
	if ((rc = run_sql(s, "SELECT to_regclass('parley_meta') IS NOT NULL", "reading the schema version", &r)) != STORE_OK)
		return rc;
	rc = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
	PQclear(r);
	if (!rc)
		return STORE_OK;
	if ((rc = run_sql(s, "SELECT value FROM parley_meta WHERE key = 'schema_version'",
	                  "reading the schema version", &r)) != STORE_OK)
		return rc;
	if (PQntuples(r) == 1)
		*version = (int)g_int(r, 0, 0);
	PQclear(r);
	return STORE_OK;
}

/* Prepares every statement on the new connection in one pipeline. */
static int prepare_all(pg_store_t *s)
{
	char name[16];
	int i, err = 0, rc = STORE_OK;
	PGresult *r;

	if (PQenterPipelineMode(s->conn) != 1)
		return failed(s, NULL, "pipeline mode");
	for (i = 0; i < Q_COUNT; i++) {
		snprintf(name, sizeof name, "q%d", i);
		if (!PQsendPrepare(s->conn, name, queries[i], 0, NULL)) {
			lost(s, NULL);
			return STORE_ERROR;
		}
	}
	if (!PQpipelineSync(s->conn) || flush_out(s) < 0) {
		lost(s, NULL);
		return STORE_ERROR;
	}
	for (i = 0; i <= Q_COUNT && !err; i++) {
		PGresult *extra;
		if (!(r = next_result(s, &err)))
			break;
		if (i < Q_COUNT) {
			if (PQresultStatus(r) != PGRES_COMMAND_OK && rc == STORE_OK) {
				char what[64];
				snprintf(what, sizeof what, "cannot prepare statement %d", i);
				rc = failed(s, r, what);
				log_error("store: the statement was: %s", queries[i]);
			}
			while (s->conn && (extra = next_result(s, &err)))
				PQclear(extra);
		}
		PQclear(r);
		if (!s->conn)
			return STORE_ERROR;
	}
	if (err || !s->conn)
		return STORE_ERROR;
	if (PQexitPipelineMode(s->conn) != 1) {
		lost(s, "the pipeline of prepares did not end");
		return STORE_ERROR;
	}
	s->prepared = rc == STORE_OK;
	return rc;
}

/* Connects the handle: session settings, the schema version checked,
 * statements prepared. Logs why not. */
static int connect_handle(pg_store_t *s)
{
	int version;

	if (!(s->conn = pg_connect(s->location, s->where)))
		return STORE_ERROR;
	s->deadline = clock_mono_ms() + CALL_MS;
	if (exec_sql(s, session_setup, "session settings") != STORE_OK || read_version(s, &version) != STORE_OK) {
		drop(s);
		return STORE_ERROR;
	}
	if (version != SCHEMA_VERSION) {
		if (version == 0)
			log_error("store: the PostgreSQL database at %s has no Parley schema; this parley "
			          "wants version %d: run `parley migrate --store URL`, or start a node "
			          "(`parley serve`), which creates it", s->where, SCHEMA_VERSION);
		else
			log_error("store: the PostgreSQL database at %s has schema version %d; this parley "
			          "wants version %d: %s", s->where, version, SCHEMA_VERSION,
			          version > SCHEMA_VERSION ? "it was migrated by a newer parley; run that one"
			                                   : "run `parley migrate --store URL`");
		drop(s);
		return STORE_ERROR;
	}
	if (prepare_all(s) != STORE_OK || (s->lazy && apply_lazy(s) != STORE_OK)) {
		drop(s);
		return STORE_ERROR;
	}
	return STORE_OK;
}

/* Starts a call: its deadline; the connection, reconnecting at most once
 * per backoff period; no transaction left open by a call that failed. */
static int ready(pg_store_t *s)
{
	int64_t now = clock_mono_ms();

	s->deadline = now + CALL_MS;
	/* Input on an idle connection is the server saying goodbye (a
	 * restart, an administrator): notice it now, and reconnect before
	 * this call rather than fail it. */
	if (s->conn && PQstatus(s->conn) == CONNECTION_OK) {
		struct pollfd pfd = {.fd = PQsocket(s->conn), .events = POLLIN};
		int i;
		/* A goodbye comes as a message, then the end of the stream: one
		 * read each. */
		for (i = 0; i < 4 && s->conn && poll(&pfd, 1, 0) > 0; i++)
			if (!PQconsumeInput(s->conn) || (pfd.revents & (POLLHUP | POLLERR)) ||
			    PQstatus(s->conn) != CONNECTION_OK)
				lost(s, NULL);
	}
	if (s->conn && PQstatus(s->conn) != CONNECTION_OK)
		lost(s, NULL);
	if (s->conn && PQpipelineStatus(s->conn) != PQ_PIPELINE_OFF)
		lost(s, "a pipeline was left unfinished");
	if (s->conn && PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
		rollback(s);
		if (s->conn && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
			lost(s, "a transaction was left open");
	}
	if (s->conn)
		return STORE_OK;
	if (now - s->last_attempt < s->backoff)
		return STORE_ERROR;
	s->last_attempt = now;
	if (connect_handle(s) != STORE_OK) {
		s->backoff = s->backoff * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : s->backoff * 2;
		s->down = 1;
		return STORE_ERROR;
	}
	if (s->down)
		log_info("store: reconnected to PostgreSQL at %s", s->where);
	s->down = 0;
	s->backoff = RECONNECT_MIN_MS;
	s->deadline = clock_mono_ms() + CALL_MS;
	return STORE_OK;
}

#define READY(s)                          \
	do {                                  \
		if (ready(s) != STORE_OK)     \
			return STORE_ERROR;   \
	} while (0)

static pg_store_t *handle_new(const char *location)
{
	pg_store_t *s = calloc(1, sizeof *s);

	if (!s || !(s->location = strdup(location))) {
		free(s);
		return NULL;
	}
	s->base.vt = &pg_vtab;
	s->backoff = RECONNECT_MIN_MS;
	redact(location, s->where, sizeof s->where);
	return s;
}

static void pg_close(store_t *base)
{
	pg_store_t *s = S(base);

	if (!s)
		return;
	PQfinish(s->conn);
	free(s->location);
	free(s);
}

/* ---- small helpers over the statements ----------------------------- */

/* One integer from the first row of a query: STORE_NOT_FOUND when it
 * answers no row. */
static int query_int(pg_store_t *s, int which, const params_t *p, int64_t *out)
{
	PGresult *r;
	int rc = run(s, which, p, &r);

	if (rc == STORE_OK) {
		if (PQntuples(r) > 0)
			*out = g_int(r, 0, 0);
		else
			rc = STORE_NOT_FOUND;
	}
	PQclear(r);
	return rc;
}

/* Runs a command; *n gets how many rows it changed. */
static int exec_changes(pg_store_t *s, int which, const params_t *p, int64_t *n)
{
	PGresult *r;
	int rc = run(s, which, p, &r);

	*n = rc == STORE_OK ? changes(r) : 0;
	PQclear(r);
	return rc;
}

/* The first column of every row, as ids. */
static int query_ids(pg_store_t *s, int which, const params_t *p, int64_t **ids, size_t *n)
{
	PGresult *r;
	int rc, i, rows;

	*ids = NULL;
	*n = 0;
	if ((rc = run(s, which, p, &r)) != STORE_OK)
		return rc;
	rows = PQntuples(r);
	if (rows && !(*ids = malloc((size_t)rows * sizeof **ids))) {
		PQclear(r);
		return STORE_ERROR;
	}
	for (i = 0; i < rows; i++)
		(*ids)[i] = g_int(r, i, 0);
	*n = (size_t)rows;
	PQclear(r);
	return STORE_OK;
}

/* Locks rows (Q_LOCK_USERS or Q_LOCK_CONVS) in ascending id order. */
static int lock_rows(pg_store_t *s, int which, const int64_t *ids, size_t n)
{
	params_t p = {0};
	char *a = id_array(ids, n);
	int rc;

	if (!a)
		return STORE_ERROR;
	rc = exec(s, which, p_text(&p, a));
	free(a);
	return rc;
}

static void direct_key(char key[48], int64_t a, int64_t b)
{
	snprintf(key, 48, "%lld:%lld", (long long)(a < b ? a : b), (long long)(a < b ? b : a));
}

/* Reads a message row (id, seq, sender, cmid, body, ts from column c0). */
static int read_message(const PGresult *r, int row, int c0, int64_t conv, store_message_t *m)
{
	m->conv = conv;
	m->id = g_int(r, row, c0);
	m->seq = g_int(r, row, c0 + 1);
	m->from = g_int(r, row, c0 + 2);
	m->cmid = g_dup(r, row, c0 + 3, NULL);
	m->body = g_dup(r, row, c0 + 4, &m->body_len);
	m->ts = g_int(r, row, c0 + 5);
	m->kind = (int)g_int(r, row, c0 + 6);
	m->target = g_int(r, row, c0 + 7);
	m->edited_at = g_int(r, row, c0 + 8);
	m->deleted = (int)g_int(r, row, c0 + 9);
	m->state_seq = g_int(r, row, c0 + 10);
	if (!m->cmid || !m->body)
		goto oom;
	if (!PQgetisnull(r, row, c0 + 11) && !(m->reactions = g_dup(r, row, c0 + 11, NULL)))
		goto oom;
	if (!PQgetisnull(r, row, c0 + 12)) {
		m->quote_from = g_int(r, row, c0 + 12);
		if (!g_int(r, row, c0 + 14) && !(m->quote_body = g_dup(r, row, c0 + 13, &m->quote_len)))
			goto oom;
	}
	return STORE_OK;
oom:
	store_message_clear(m);
	return STORE_ERROR;
}

/* ---- users and devices --------------------------------------------- */

static int pg_user_create(store_t *base, const char *username, const char *pwhash, int64_t now_ms,
                          int64_t *user_id)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc;

	READY(s);
	p_int(p_text(p_text(&p, username), pwhash), now_ms);
	if ((rc = run(s, Q_USER_INSERT, &p, &r)) != STORE_OK)
		return rc;
	if (PQntuples(r) == 1)
		*user_id = g_int(r, 0, 0);
	else
		rc = STORE_EXISTS;
	PQclear(r);
	return rc;
}

static int pg_user_by_name(store_t *base, const char *username, int64_t *user_id, char **pwhash)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc;

	READY(s);
	if ((rc = run(s, Q_USER_BY_NAME, p_text(&p, username), &r)) != STORE_OK)
		return rc;
	if (PQntuples(r) == 1) {
		*user_id = g_int(r, 0, 0);
		if (pwhash && !(*pwhash = g_dup(r, 0, 1, NULL)))
			rc = STORE_ERROR;
	} else {
		rc = STORE_NOT_FOUND;
	}
	PQclear(r);
	return rc;
}

static int pg_user_by_id(store_t *base, int64_t user_id, char username[STORE_USERNAME_MAX + 1])
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc;

	READY(s);
	if ((rc = run(s, Q_USER_BY_ID, p_int(&p, user_id), &r)) != STORE_OK)
		return rc;
	if (PQntuples(r) == 1)
		snprintf(username, STORE_USERNAME_MAX + 1, "%s", PQgetvalue(r, 0, 0));
	else
		rc = STORE_NOT_FOUND;
	PQclear(r);
	return rc;
}

static int pg_device_create(store_t *base, int64_t user_id, const char *name,
                            const uint8_t token_hash[STORE_TOKEN_HASH_LEN], int64_t now_ms,
                            unsigned max_devices, int64_t *device_id, int64_t *evicted)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc;

	*evicted = 0;
	READY(s);
	if (begin(s) != STORE_OK)
		return STORE_ERROR;
	if (max_devices) {
		int64_t n;
		/* The user's row, locked: two logins at once on two nodes
		 * count each other's device. */
		if ((rc = lock_rows(s, Q_LOCK_USERS, &user_id, 1)) != STORE_OK)
			goto err;
		p.n = 0;
		if ((rc = run(s, Q_DEVICE_STATS, p_int(&p, user_id), &r)) != STORE_OK)
			goto err;
		n = g_int(r, 0, 0);
		*evicted = n >= max_devices ? g_int(r, 0, 1) : 0;
		PQclear(r);
		if (*evicted) {
			p.n = 0;
			if ((rc = exec(s, Q_DEVICE_DELETE, p_int(p_int(&p, *evicted), user_id))) != STORE_OK)
				goto err;
		}
	}
	p.n = 0;
	p_int(p_bytes(p_text(p_int(&p, user_id), name), token_hash, STORE_TOKEN_HASH_LEN), now_ms);
	if ((rc = run(s, Q_DEVICE_INSERT, &p, &r)) != STORE_OK)
		goto err;
	*device_id = g_int(r, 0, 0);
	PQclear(r);
	if (commit(s) != STORE_OK)
		goto err;
	return STORE_OK;
err:
	rollback(s);
	*evicted = 0;
	return STORE_ERROR;
}

static int pg_device_by_token(store_t *base, const uint8_t token_hash[STORE_TOKEN_HASH_LEN],
                              int64_t now_ms, int64_t idle_ms, int64_t *user_id, int64_t *device_id)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	int64_t last_used;
	PGresult *r;
	int rc;

	READY(s);
	if ((rc = run(s, Q_DEVICE_BY_TOKEN, p_bytes(&p, token_hash, STORE_TOKEN_HASH_LEN), &r)) != STORE_OK)
		return rc;
	if (PQntuples(r) != 1) {
		PQclear(r);
		return STORE_NOT_FOUND;
	}
	*user_id = g_int(r, 0, 0);
	*device_id = g_int(r, 0, 1);
	last_used = g_int(r, 0, 2);
	PQclear(r);
	if (idle_ms > 0 && last_used < now_ms - idle_ms) {
		/* Unused too long: the token is gone, as at a logout. */
		p.n = 0;
		rc = exec(s, Q_DEVICE_DELETE, p_int(p_int(&p, *device_id), *user_id));
		return rc == STORE_OK ? STORE_NOT_FOUND : rc;
	}
	if (last_used < now_ms - DEVICE_TOUCH_MS) {
		p.n = 0;
		if (exec(s, Q_DEVICE_TOUCH, p_int(p_int(&p, *device_id), now_ms)) != STORE_OK)
			log_warn("store: cannot record the use of device %lld", (long long)*device_id);
	}
	return STORE_OK;
}

static int pg_devices(store_t *base, int64_t user_id, int64_t used_since_ms, store_device_t **out,
                      size_t *n)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc, i, rows;

	*out = NULL;
	*n = 0;
	READY(s);
	if ((rc = run(s, Q_DEVICES, p_int(p_int(&p, user_id), used_since_ms), &r)) != STORE_OK)
		return rc;
	rows = PQntuples(r);
	if (rows && !(*out = calloc((size_t)rows, sizeof **out))) {
		PQclear(r);
		return STORE_ERROR;
	}
	for (i = 0; i < rows; i++) {
		store_device_t *d = &(*out)[i];
		d->id = g_int(r, i, 0);
		snprintf(d->name, sizeof d->name, "%s", PQgetvalue(r, i, 1));
		d->created_at = g_int(r, i, 2);
		d->last_used = g_int(r, i, 3);
	}
	*n = (size_t)rows;
	PQclear(r);
	return STORE_OK;
}

/* ---- push targets and the server's keys ------------------------------ */

static int pg_push_target_put(store_t *base, const store_push_target_t *t, int64_t now_ms, int64_t *id)
{
	pg_store_t *s = S(base);
	params_t p = {0}, q = {0};
	int rc;

	READY(s);
	if (begin(s) != STORE_OK)
		return STORE_ERROR;
	rc = exec(s, Q_PUSH_TAKEOVER, p_text(p_int(p_int(p_int(&p, t->user), t->device), t->platform), t->address));
	if (rc == STORE_OK) {
		p_int(p_int(p_int(&q, t->user), t->device), t->platform);
		p_text(p_text(&q, t->address), t->topic ? t->topic : "");
		p_int(&q, t->sandbox ? 1 : 0);
		p_text(p_text(&q, t->p256dh ? t->p256dh : ""), t->auth ? t->auth : "");
		p_int(&q, now_ms);
		rc = query_int(s, Q_PUSH_PUT, &q, id); /* no row: not the user's device */
	}
	return finish(s, rc);
}

static int pg_push_targets(store_t *base, int64_t user_id, store_push_target_t **out, size_t *n)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc, i, rows;

	*out = NULL;
	*n = 0;
	READY(s);
	if ((rc = run(s, Q_PUSH_LIST, p_int(&p, user_id), &r)) != STORE_OK)
		return rc;
	rows = PQntuples(r);
	if (rows && !(*out = calloc((size_t)rows, sizeof **out))) {
		PQclear(r);
		return STORE_ERROR;
	}
	for (i = 0; i < rows; i++) {
		store_push_target_t *t = &(*out)[i];
		t->id = g_int(r, i, 0);
		t->user = g_int(r, i, 1);
		t->device = g_int(r, i, 2);
		t->platform = (int)g_int(r, i, 3);
		t->address = g_dup(r, i, 4, NULL);
		t->topic = g_dup(r, i, 5, NULL);
		t->sandbox = (int)g_int(r, i, 6);
		t->p256dh = g_dup(r, i, 7, NULL);
		t->auth = g_dup(r, i, 8, NULL);
		t->created_at = g_int(r, i, 9);
		if (!t->address || !t->topic || !t->p256dh || !t->auth) {
			store_push_targets_free(*out, (size_t)rows);
			*out = NULL;
			PQclear(r);
			return STORE_ERROR;
		}
	}
	*n = (size_t)rows;
	PQclear(r);
	return STORE_OK;
}

static int pg_push_target_delete(store_t *base, int64_t user_id, int64_t id)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	int64_t n;
	int rc;

	READY(s);
	if ((rc = exec_changes(s, Q_PUSH_DELETE, p_int(p_int(&p, user_id), id), &n)) != STORE_OK)
		return rc;
	return n ? STORE_OK : STORE_NOT_FOUND;
}

static int pg_server_key_get(store_t *base, const char *name, char **value)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc;

	*value = NULL;
	READY(s);
	if ((rc = run(s, Q_KEY_GET, p_text(&p, name), &r)) != STORE_OK)
		return rc;
	if (PQntuples(r) == 0)
		rc = STORE_NOT_FOUND;
	else if (!(*value = g_dup(r, 0, 0, NULL)))
		rc = STORE_ERROR;
	PQclear(r);
	return rc;
}

static int pg_server_key_add(store_t *base, const char *name, const char *value)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	int64_t n;
	int rc;

	READY(s);
	if ((rc = exec_changes(s, Q_KEY_ADD, p_text(p_text(&p, name), value), &n)) != STORE_OK)
		return rc;
	return n ? STORE_OK : STORE_EXISTS;
}

static int pg_device_delete(store_t *base, int64_t user_id, int64_t device_id)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	int64_t n;
	int rc;

	READY(s);
	if ((rc = exec_changes(s, Q_DEVICE_DELETE, p_int(p_int(&p, device_id), user_id), &n)) != STORE_OK)
		return rc;
	return n ? STORE_OK : STORE_NOT_FOUND;
}

/* ---- conversations and members ------------------------------------- */

static int user_convs_add(pg_store_t *s, int64_t user_id, int delta)
{
	params_t p = {0};

	return exec(s, Q_USER_CONVS_ADD, p_int(p_int(&p, user_id), delta));
}

static int count_add(pg_store_t *s, int64_t conv_id, int delta)
{
	params_t p = {0};

	return exec(s, Q_COUNT_ADD, p_int(p_int(&p, conv_id), delta));
}

/* Adds user_id to conv_id, unless the user is already in max_convs
 * conversations (0: no limit): then STORE_TOO_MANY and *full = user_id.
 * The caller holds the user's row lock when max_convs is set. */
static int insert_member(pg_store_t *s, int64_t conv_id, int64_t user_id, int role, int64_t now_ms,
                         int64_t joined_seq, unsigned max_convs, int64_t *full)
{
	params_t p = {0};
	int64_t convs, n;
	int r;

	if (max_convs) {
		if ((r = query_int(s, Q_USER_CONVS, p_int(&p, user_id), &convs)) != STORE_OK)
			return r;
		if (convs >= max_convs) {
			if (full)
				*full = user_id;
			return STORE_TOO_MANY;
		}
	}
	p.n = 0;
	p_int(p_int(p_int(p_int(p_int(&p, conv_id), user_id), role), now_ms), joined_seq);
	if ((r = exec_changes(s, Q_MEMBER_INSERT, &p, &n)) != STORE_OK)
		return r;
	if (!n)
		return STORE_EXISTS;
	if ((r = user_convs_add(s, user_id, 1)) != STORE_OK)
		return r;
	return count_add(s, conv_id, 1);
}

/* Brings the block marks of direct chat conv_id's two member rows in line
 * with the blocks table. */
static int sync_blocks(pg_store_t *s, int64_t conv_id, int64_t a, int64_t b)
{
	params_t p = {0};
	int i, r;

	for (i = 0; i < 2; i++) {
		p.n = 0;
		if ((r = exec(s, Q_MEMBER_BLOCKS_SYNC, p_int(p_int(p_int(&p, conv_id), i ? b : a), i ? a : b))) !=
		    STORE_OK)
			return r;
	}
	return STORE_OK;
}

/* The direct conversation of a and b, or 0. */
static int find_direct(pg_store_t *s, int64_t a, int64_t b, int64_t *conv_id)
{
	params_t p = {0};
	char key[48];
	int r;

	direct_key(key, a, b);
	*conv_id = 0;
	r = query_int(s, Q_DIRECT_FIND, p_text(&p, key), conv_id);
	return r == STORE_NOT_FOUND ? STORE_OK : r;
}

static int pg_direct_open(store_t *base, int64_t a, int64_t b, int64_t now_ms, unsigned max_convs,
                          int64_t *conv_id, int *created, int64_t *full)
{
	pg_store_t *s = S(base);
	int64_t pair[2] = {a, b};
	params_t p = {0};
	char key[48];
	int i, r = STORE_ERROR;

	direct_key(key, a, b);
	*created = 0;
	READY(s);
	/* Most opens find the chat: no lock for them. */
	if (find_direct(s, a, b, conv_id) != STORE_OK)
		return STORE_ERROR;
	if (*conv_id)
		return STORE_OK;
	if (begin(s) != STORE_OK)
		return STORE_ERROR;
	/* Both users' rows: their conversation counts, and a block being made
	 * between them, wait for this (or this for them). A racing open of
	 * the same chat found it made once the locks are ours. */
	if ((r = lock_rows(s, Q_LOCK_USERS, pair, 2)) != STORE_OK ||
	    (r = find_direct(s, a, b, conv_id)) != STORE_OK)
		goto err;
	if (*conv_id)
		return finish(s, STORE_OK);
	p_text(p_text(p_int(&p, STORE_DIRECT), NULL), key);
	p_int(p_int(&p, a), now_ms);
	if ((r = query_int(s, Q_CONV_INSERT, &p, conv_id)) != STORE_OK) {
		if (r == STORE_NOT_FOUND) /* made meanwhile after all */
			r = find_direct(s, a, b, conv_id);
		if (r == STORE_OK && *conv_id)
			return finish(s, STORE_OK);
		r = STORE_ERROR;
		goto err;
	}
	for (i = 0; i < 2; i++) {
		if ((r = insert_member(s, *conv_id, i ? b : a, 0, now_ms, 0, max_convs, full)) != STORE_OK)
			goto err;
	}
	/* A block made before the chat existed holds in it from the start. */
	if ((r = sync_blocks(s, *conv_id, a, b)) != STORE_OK || (r = commit(s)) != STORE_OK)
		goto err;
	*created = 1;
	return STORE_OK;
err:
	rollback(s);
	*conv_id = 0;
	return r == STORE_OK ? STORE_ERROR : r;
}

/* One member's row of a conversation, with what the hot path needs of the
 * conversation itself: one indexed read. */
typedef struct membership {
	int kind, role;
	int wrote, blocks;
	int64_t last_seq, member_count, member_version, activity;
	int64_t read_seq, delivered_seq, joined_seq;
} membership_t;

/* Reads (conv_id, user_id)'s membership; STORE_FORBIDDEN when there is
 * none. */
static int load_membership(pg_store_t *s, int64_t conv_id, int64_t user_id, membership_t *m)
{
	params_t p = {0};
	PGresult *r;
	int rc;

	if ((rc = run(s, Q_MEMBERSHIP, p_int(p_int(&p, conv_id), user_id), &r)) != STORE_OK)
		return rc;
	if (PQntuples(r) != 1) {
		PQclear(r);
		return STORE_FORBIDDEN;
	}
	m->kind = (int)g_int(r, 0, 0);
	m->last_seq = g_int(r, 0, 1);
	m->member_count = g_int(r, 0, 2);
	m->read_seq = g_int(r, 0, 3);
	m->delivered_seq = g_int(r, 0, 4);
	m->joined_seq = g_int(r, 0, 5);
	m->role = (int)g_int(r, 0, 6);
	m->member_version = g_int(r, 0, 7);
	m->wrote = (int)g_int(r, 0, 8);
	m->blocks = (int)g_int(r, 0, 9);
	m->activity = g_int(r, 0, 10);
	PQclear(r);
	return STORE_OK;
}

/* A CONV_VIEW row into c. */
static int read_conv(const PGresult *r, int row, store_conv_t *c)
{
	memset(c, 0, sizeof *c);
	c->id = g_int(r, row, 0);
	c->kind = (int)g_int(r, row, 1);
	if (!PQgetisnull(r, row, 2) && !(c->title = g_dup(r, row, 2, NULL)))
		goto err;
	c->last_seq = g_int(r, row, 3);
	c->read_seq = g_int(r, row, 4);
	c->wrote = (int)g_int(r, row, 5);
	c->blocked = c->kind == STORE_DIRECT && (g_int(r, row, 6) & 1);
	c->activity = g_int(r, row, 7);
	c->muted = (int)g_int(r, row, 11);
	c->delivered_seq = g_int(r, row, 12);
	c->pushed_seq = g_int(r, row, 13);
	if (g_ids(r, row, 8, &c->members, &c->nmembers) != STORE_OK)
		goto err;
	if (c->kind == STORE_GROUP && g_ids(r, row, 9, &c->admins, &c->nadmins) != STORE_OK)
		goto err;
	c->unread = g_int(r, row, 10);
	/* None: nothing it may see yet, or only events. */
	if (!PQgetisnull(r, row, 14)) {
		if (!(c->last_message = calloc(1, sizeof *c->last_message)) ||
		    read_message(r, row, 14, c->id, c->last_message) != STORE_OK) {
			free(c->last_message);
			c->last_message = NULL;
			goto err;
		}
	}
	return STORE_OK;
err:
	store_conv_clear(c);
	return STORE_ERROR;
}

static int pg_conv_get(store_t *base, int64_t conv_id, int64_t user_id, store_conv_t *c)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc;

	memset(c, 0, sizeof *c);
	READY(s);
	if ((rc = run(s, Q_CONV_GET, p_int(p_int(&p, conv_id), user_id), &r)) != STORE_OK)
		return rc;
	rc = PQntuples(r) == 1 ? read_conv(r, 0, c) : STORE_FORBIDDEN;
	PQclear(r);
	return rc;
}

static int pg_conv_list(store_t *base, int64_t user_id, const store_conv_cursor_t *after, size_t limit,
                        store_conv_t **out, size_t *n, int *has_more)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	size_t rows, i;
	int rc = STORE_OK;

	*out = NULL;
	*n = 0;
	*has_more = 0;
	READY(s);
	p_int(p_int(p_int(&p, user_id), after ? after->activity : INT64_MAX), after ? after->id : INT64_MAX);
	p_more(&p, limit); /* one more tells whether there is more */
	/* The whole page in one statement: no entry mixes states from before
	 * and after a send. */
	if ((rc = run(s, Q_CONV_LIST, &p, &r)) != STORE_OK)
		return rc;
	rows = (size_t)PQntuples(r);
	if (rows > limit) {
		*has_more = 1;
		rows = limit;
	}
	if (rows && !(*out = calloc(rows, sizeof **out)))
		rc = STORE_ERROR;
	for (i = 0; rc == STORE_OK && i < rows; i++)
		if ((rc = read_conv(r, (int)i, &(*out)[i])) == STORE_OK)
			(*n)++;
	PQclear(r);
	if (rc != STORE_OK) {
		store_convs_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return rc;
}

/* The rows of a message query into *out, as many as max_bytes of bodies
 * take (at least one). */
static int collect_messages(PGresult *r, int64_t conv_id, size_t max_bytes, store_message_t **out,
                            size_t *n)
{
	size_t rows = (size_t)PQntuples(r), bytes = 0, i;

	*out = NULL;
	*n = 0;
	if (rows && !(*out = calloc(rows, sizeof **out)))
		return STORE_ERROR;
	for (i = 0; i < rows; i++) {
		if (read_message(r, (int)i, 0, conv_id, &(*out)[*n]) != STORE_OK) {
			store_messages_free(*out, *n);
			*out = NULL;
			*n = 0;
			return STORE_ERROR;
		}
		bytes += (*out)[(*n)++].body_len;
		if (bytes >= max_bytes)
			break;
	}
	return STORE_OK;
}

static int pg_history(store_t *base, int64_t conv_id, int64_t user_id, int64_t before, int limit,
                      size_t max_bytes, store_message_t **out, size_t *n, int *has_more)
{
	pg_store_t *s = S(base);
	membership_t m;
	params_t p = {0};
	PGresult *r;
	size_t i;
	int rc;

	*out = NULL;
	*n = 0;
	*has_more = 0;
	READY(s);
	if ((rc = load_membership(s, conv_id, user_id, &m)) != STORE_OK)
		return rc;
	p_int(p_int(p_int(&p, conv_id), before > 0 ? before : INT64_MAX), (int64_t)limit + 1);
	p_size(p_int(&p, m.joined_seq), max_bytes);
	if ((rc = run(s, Q_HISTORY, &p, &r)) != STORE_OK)
		return rc;
	rc = collect_messages(r, conv_id, max_bytes, out, n);
	PQclear(r);
	if (rc != STORE_OK)
		return rc;
	if (*n > (size_t)limit)
		store_message_clear(&(*out)[--*n]);
	/* Seqs are gapless: older ones remain exactly when the oldest read
	 * is above the first the user may see, whether the limit or the
	 * byte bound stopped the page. */
	*has_more = *n && (*out)[*n - 1].seq > m.joined_seq + 1;
	for (i = 0; i < *n / 2; i++) { /* newest first -> ascending */
		store_message_t t = (*out)[i];
		(*out)[i] = (*out)[*n - 1 - i];
		(*out)[*n - 1 - i] = t;
	}
	return STORE_OK;
}

/* The terms as a tsquery: each a quoted lexeme (they hold no quotes or
 * backslashes), all required, the last also as a prefix. NULL when out
 * of memory. */
static char *tsquery_of(const char *const *terms, size_t nterms)
{
	size_t cap = 1, i, len = 0;
	char *q;

	for (i = 0; i < nterms; i++)
		cap += strlen(terms[i]) + 8;
	if (!(q = malloc(cap)))
		return NULL;
	q[0] = 0;
	for (i = 0; i < nterms; i++)
		len += (size_t)snprintf(q + len, cap - len, "%s'%s'%s", i ? " & " : "", terms[i],
		                        i + 1 == nterms ? ":*" : "");
	return q;
}

static int pg_search(store_t *base, int64_t user_id, int64_t conv_id, const char *const *terms, size_t nterms,
                     size_t offset, size_t limit, store_search_hit_t **out, size_t *n, int *has_more)
{
	pg_store_t *s = S(base);
	membership_t m;
	params_t p = {0};
	PGresult *r;
	char *query;
	size_t rows, i;
	int rc;

	*out = NULL;
	*n = 0;
	*has_more = 0;
	READY(s);
	if (conv_id && (rc = load_membership(s, conv_id, user_id, &m)) != STORE_OK)
		return rc;
	if (!nterms || !limit)
		return STORE_OK;
	if (!(query = tsquery_of(terms, nterms)))
		return STORE_ERROR;
	p_int(p_text(p_int(&p, user_id), query), conv_id);
	p_size(p_more(&p, limit), offset);
	rc = run(s, Q_SEARCH, &p, &r);
	free(query);
	if (rc != STORE_OK)
		return rc;
	rows = (size_t)PQntuples(r);
	if (rows > limit) {
		rows = limit;
		*has_more = 1;
	}
	if (rows && !(*out = calloc(rows, sizeof **out))) {
		PQclear(r);
		return STORE_ERROR;
	}
	for (i = 0; i < rows; i++) {
		store_search_hit_t *h = &(*out)[i];
		if (read_message(r, (int)i, 0, g_int(r, (int)i, 15), &h->msg) != STORE_OK ||
		    !(h->snippet = g_dup(r, (int)i, 16, &h->snippet_len))) {
			store_message_clear(&h->msg);
			store_search_free(*out, i);
			*out = NULL;
			*has_more = 0;
			PQclear(r);
			return STORE_ERROR;
		}
	}
	*n = rows;
	PQclear(r);
	return STORE_OK;
}

static int pg_receipts(store_t *base, int64_t conv_id, int64_t user_id, int64_t seq, int64_t now_ms,
                       store_receipt_t **out, size_t *n)
{
	pg_store_t *s = S(base);
	membership_t ms;
	params_t p = {0};
	PGresult *r;
	int64_t ts, from;
	int rc, i, rows;

	*out = NULL;
	*n = 0;
	READY(s);
	if ((rc = load_membership(s, conv_id, user_id, &ms)) != STORE_OK)
		return rc;
	if (seq <= ms.joined_seq || seq > ms.last_seq)
		return STORE_NOT_FOUND;
	if ((rc = run(s, Q_MESSAGE_AT, p_int(p_int(&p, conv_id), seq), &r)) != STORE_OK)
		return rc;
	if (PQntuples(r) != 1) {
		PQclear(r);
		return STORE_NOT_FOUND;
	}
	from = g_int(r, 0, 2);
	ts = g_int(r, 0, 5);
	PQclear(r);
	if (ts < now_ms - (int64_t)STORE_RECEIPT_DETAIL_DAYS * 86400000)
		return STORE_NOT_FOUND; /* its detail has expired */
	/* Those who were members when it was sent (and still are). */
	p.n = 0;
	if ((rc = run(s, Q_RECEIPT_DETAIL, p_int(p_int(p_int(&p, conv_id), seq), from), &r)) != STORE_OK)
		return rc;
	rows = PQntuples(r);
	if (rows && !(*out = calloc((size_t)rows, sizeof **out))) {
		PQclear(r);
		return STORE_ERROR;
	}
	for (i = 0; i < rows; i++) {
		store_receipt_t *rc1 = &(*out)[i];
		rc1->user_id = g_int(r, i, 0);
		rc1->delivered_at = g_int(r, i, 1);
		rc1->read_at = g_int(r, i, 2);
		/* A read implies delivery, possibly earlier. */
		if (rc1->read_at && (!rc1->delivered_at || rc1->read_at < rc1->delivered_at))
			rc1->delivered_at = rc1->read_at;
	}
	*n = (size_t)rows;
	PQclear(r);
	return STORE_OK;
}

static int member_head(pg_store_t *s, int64_t conv_id, int64_t user_id, int64_t *last_seq,
                       int64_t *joined_seq)
{
	membership_t m;
	int r = load_membership(s, conv_id, user_id, &m);

	if (r == STORE_OK) {
		*last_seq = m.last_seq;
		*joined_seq = m.joined_seq;
	}
	return r;
}

static int pg_member_head(store_t *base, int64_t conv_id, int64_t user_id, int64_t *last_seq,
                          int64_t *joined_seq)
{
	READY(S(base));
	return member_head(S(base), conv_id, user_id, last_seq, joined_seq);
}

static int pg_expire_receipts(store_t *base, int64_t before_ms, size_t max_rows, size_t *deleted)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	int64_t n;
	int rc;

	*deleted = 0;
	READY(s);
	if ((rc = exec_changes(s, Q_EXPIRE_MARKS, p_size(p_int(&p, before_ms), max_rows), &n)) != STORE_OK)
		return rc;
	*deleted = (size_t)n;
	return STORE_OK;
}

static int pg_watermarks(store_t *base, int64_t conv_id, store_watermark_t **out, size_t *n)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc, i, rows;

	*out = NULL;
	*n = 0;
	READY(s);
	if ((rc = run(s, Q_WATERMARKS, p_int(&p, conv_id), &r)) != STORE_OK)
		return rc;
	rows = PQntuples(r);
	if (rows && !(*out = malloc((size_t)rows * sizeof **out))) {
		PQclear(r);
		return STORE_ERROR;
	}
	for (i = 0; i < rows; i++) {
		(*out)[i].user_id = g_int(r, i, 0);
		(*out)[i].joined_seq = g_int(r, i, 1);
		(*out)[i].delivered_seq = g_int(r, i, 2);
		(*out)[i].read_seq = g_int(r, i, 3);
	}
	*n = (size_t)rows;
	PQclear(r);
	return STORE_OK;
}

static int pg_senders(store_t *base, int64_t conv_id, int64_t lo, int64_t hi, store_sent_t **out,
                      size_t *n)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc, i, rows;

	*out = NULL;
	*n = 0;
	READY(s);
	if ((rc = run(s, Q_SENDERS, p_int(p_int(p_int(&p, conv_id), lo), hi), &r)) != STORE_OK)
		return rc;
	rows = PQntuples(r);
	if (rows && !(*out = malloc((size_t)rows * sizeof **out))) {
		PQclear(r);
		return STORE_ERROR;
	}
	for (i = 0; i < rows; i++) {
		(*out)[i].seq = g_int(r, i, 0);
		(*out)[i].sender = g_int(r, i, 1);
	}
	*n = (size_t)rows;
	PQclear(r);
	return STORE_OK;
}

static int pg_read_count(store_t *base, int64_t conv_id, int64_t user_id, int64_t seq, int64_t *count)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	int64_t last, joined;
	int r;

	READY(s);
	if ((r = member_head(s, conv_id, user_id, &last, &joined)) != STORE_OK)
		return r;
	if (seq <= joined || seq > last)
		return STORE_NOT_FOUND;
	return query_int(s, Q_READ_COUNT, p_int(p_int(&p, conv_id), seq), count);
}

static int pg_unread_total(store_t *base, int64_t user_id, int64_t cap, int64_t *total)
{
	pg_store_t *s = S(base);
	params_t p = {0};

	READY(s);
	return query_int(s, Q_UNREAD_TOTAL, p_int(p_int(&p, user_id), cap), total);
}

static int pg_push_mark(store_t *base, int64_t conv_id, int64_t user_id, int64_t seq)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	int64_t n;
	int rc;

	READY(s);
	if ((rc = exec_changes(s, Q_PUSH_MARK, p_int(p_int(p_int(&p, conv_id), user_id), seq), &n)) != STORE_OK)
		return rc;
	return n ? STORE_OK : STORE_FORBIDDEN;
}

static int pg_push_pending(store_t *base, int64_t since_id, size_t limit, store_push_pending_t **out, size_t *n)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc, i, rows;

	*out = NULL;
	*n = 0;
	READY(s);
	if ((rc = run(s, Q_PUSH_PENDING, p_int(p_int(&p, since_id), (int64_t)(limit > INT64_MAX ? INT64_MAX : limit)),
	              &r)) != STORE_OK)
		return rc;
	rows = PQntuples(r);
	if (rows && !(*out = calloc((size_t)rows, sizeof **out))) {
		PQclear(r);
		return STORE_ERROR;
	}
	for (i = 0; i < rows; i++) {
		store_push_pending_t *q = &(*out)[i];
		q->conv = g_int(r, i, 0);
		q->user = g_int(r, i, 1);
		q->kind = (int)g_int(r, i, 2);
		q->seq = g_int(r, i, 3);
		q->from = g_int(r, i, 4);
		q->ts = g_int(r, i, 5);
		if (!(q->body = g_dup(r, i, 6, &q->body_len))) {
			store_push_pending_free(*out, (size_t)rows);
			*out = NULL;
			PQclear(r);
			return STORE_ERROR;
		}
	}
	*n = (size_t)rows;
	PQclear(r);
	return STORE_OK;
}

static int pg_members(store_t *base, int64_t conv_id, int64_t **ids, size_t *n)
{
	params_t p = {0};

	*ids = NULL;
	*n = 0;
	READY(S(base));
	return query_ids(S(base), Q_MEMBERS_OF, p_int(&p, conv_id), ids, n);
}

static int pg_member_list(store_t *base, int64_t conv_id, store_member_t **out, size_t *n,
                          int64_t *version)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc, i, rows;

	*out = NULL;
	*n = 0;
	READY(s);
	if ((rc = run(s, Q_MEMBER_LIST, p_int(&p, conv_id), &r)) != STORE_OK)
		return rc;
	if (!(rows = PQntuples(r))) {
		PQclear(r);
		return STORE_NOT_FOUND;
	}
	*version = g_int(r, 0, 0);
	if (!(*out = malloc((size_t)rows * sizeof **out))) {
		PQclear(r);
		return STORE_ERROR;
	}
	for (i = 0; i < rows; i++) {
		if (PQgetisnull(r, i, 1))
			continue; /* a conversation without members */
		(*out)[*n].user_id = g_int(r, i, 1);
		(*out)[*n].joined_seq = g_int(r, i, 2);
		(*n)++;
	}
	PQclear(r);
	return STORE_OK;
}

static int pg_group_create(store_t *base, int64_t creator, const int64_t *others, size_t n,
                           const char *title, int64_t now_ms, unsigned max_convs, int64_t *conv_id,
                           int64_t *full)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	int64_t one, *all;
	size_t i;
	int r = STORE_ERROR;

	if (n + 1 > STORE_GROUP_MAX)
		return STORE_FULL;
	READY(s);
	if (!(all = malloc((n + 1) * sizeof *all)))
		return STORE_ERROR;
	all[0] = creator;
	if (n)
		memcpy(all + 1, others, n * sizeof *others);
	if (begin(s) != STORE_OK) {
		free(all);
		return STORE_ERROR;
	}
	/* The members' conversation counts hold under other nodes' changes. */
	r = lock_rows(s, Q_LOCK_USERS, all, n + 1);
	free(all);
	if (r != STORE_OK)
		goto err;
	p_text(p_text(p_int(&p, STORE_GROUP), title), NULL);
	p_int(p_int(&p, creator), now_ms);
	if ((r = query_int(s, Q_CONV_INSERT, &p, conv_id)) != STORE_OK) {
		r = STORE_ERROR;
		goto err;
	}
	if ((r = insert_member(s, *conv_id, creator, 1, now_ms, 0, max_convs, full)) != STORE_OK)
		goto err;
	for (i = 0; i < n; i++) {
		p.n = 0;
		if ((r = query_int(s, Q_USER_EXISTS, p_int(&p, others[i]), &one)) != STORE_OK)
			goto err; /* STORE_NOT_FOUND: no such user */
		if ((r = insert_member(s, *conv_id, others[i], 0, now_ms, 0, max_convs, full)) != STORE_OK)
			goto err; /* STORE_EXISTS: named twice; STORE_TOO_MANY */
	}
	if ((r = commit(s)) != STORE_OK)
		goto err;
	return STORE_OK;
err:
	rollback(s);
	return r;
}

/* The role of user_id in a group (1: admin), checking it is a member of a
 * group. */
static int group_role(pg_store_t *s, int64_t conv_id, int64_t user_id, membership_t *m)
{
	int r = load_membership(s, conv_id, user_id, m);

	if (r == STORE_OK && m->kind != STORE_GROUP)
		return STORE_NOT_GROUP;
	return r;
}

static int pg_member_add(store_t *base, int64_t conv_id, int64_t actor, int64_t user_id, int64_t now_ms,
                         unsigned max_convs, int64_t *full)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	membership_t m;
	int64_t one;
	int r;

	READY(s);
	if (begin(s) != STORE_OK)
		return STORE_ERROR;
	/* The conversation's row first, as a batch takes it: the member count
	 * and the head hold until this commits. */
	r = lock_rows(s, Q_LOCK_CONVS, &conv_id, 1);
	if (r == STORE_OK)
		r = group_role(s, conv_id, actor, &m);
	if (r == STORE_OK && m.role != 1)
		r = STORE_FORBIDDEN;
	if (r == STORE_OK)
		r = query_int(s, Q_USER_EXISTS, p_int(&p, user_id), &one);
	if (r == STORE_OK && m.member_count >= STORE_GROUP_MAX)
		r = STORE_FULL;
	if (r == STORE_OK && max_convs)
		r = lock_rows(s, Q_LOCK_USERS, &user_id, 1);
	/* The new member's history starts now. */
	if (r == STORE_OK)
		r = insert_member(s, conv_id, user_id, 0, now_ms, m.last_seq, max_convs, full);
	return finish(s, r);
}

static int pg_member_remove(store_t *base, int64_t conv_id, int64_t actor, int64_t user_id,
                            int64_t *promoted)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	int64_t admins = 1;
	membership_t m;
	int r;

	*promoted = 0;
	READY(s);
	if (begin(s) != STORE_OK)
		return STORE_ERROR;
	r = lock_rows(s, Q_LOCK_CONVS, &conv_id, 1);
	if (r == STORE_OK)
		r = group_role(s, conv_id, actor, &m);
	if (r == STORE_OK && actor != user_id && m.role != 1)
		r = STORE_FORBIDDEN; /* only admins remove others */
	if (r == STORE_OK) {
		r = group_role(s, conv_id, user_id, &m);
		if (r == STORE_FORBIDDEN)
			r = STORE_NOT_FOUND; /* not a member */
	}
	if (r == STORE_OK)
		r = exec(s, Q_MEMBER_DELETE, p_int(p_int(&p, conv_id), user_id));
	if (r == STORE_OK)
		r = count_add(s, conv_id, -1);
	if (r == STORE_OK)
		r = user_convs_add(s, user_id, -1);
	/* A group is never left without an admin while it has members. */
	if (r == STORE_OK) {
		p.n = 0;
		r = query_int(s, Q_ADMIN_COUNT, p_int(&p, conv_id), &admins);
	}
	if (r == STORE_OK && admins == 0) {
		p.n = 0;
		r = query_int(s, Q_PROMOTE, p_int(&p, conv_id), promoted);
		if (r == STORE_NOT_FOUND)
			r = STORE_OK; /* nobody left */
	}
	return finish(s, r);
}

static int pg_heads(store_t *base, int64_t user_id, store_head_t **out, size_t *n)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc, i, rows;

	*out = NULL;
	*n = 0;
	READY(s);
	if ((rc = run(s, Q_HEADS, p_int(&p, user_id), &r)) != STORE_OK)
		return rc;
	rows = PQntuples(r);
	if (rows && !(*out = malloc((size_t)rows * sizeof **out))) {
		PQclear(r);
		return STORE_ERROR;
	}
	for (i = 0; i < rows; i++) {
		(*out)[i].conv = g_int(r, i, 0);
		(*out)[i].last_seq = g_int(r, i, 1);
	}
	*n = (size_t)rows;
	PQclear(r);
	return STORE_OK;
}

static int pg_replay(store_t *base, int64_t conv_id, int64_t joined, int64_t after, int64_t upto, size_t max_count,
                     size_t max_bytes, store_message_t **out, size_t *n)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc;

	*out = NULL;
	*n = 0;
	READY(s);
	p_int(p_int(p_int(&p, conv_id), after), upto);
	p_int(p_size(p_size(&p, max_count), max_bytes), joined);
	if ((rc = run(s, Q_REPLAY, &p, &r)) != STORE_OK)
		return rc;
	rc = collect_messages(r, conv_id, max_bytes, out, n);
	PQclear(r);
	return rc;
}

/* ---- store_apply: the batch, pipelined ------------------------------ */

enum {
	PLAN_DONE,     /* decided in phase A; nothing to write */
	PLAN_STORE,    /* a send to store in phase B */
	PLAN_DUP,      /* a repeat of an earlier send of the batch (dup[i]) */
	PLAN_RECEIPT,  /* a receipt, applied in phase B */
};

static int pipe_send(pg_store_t *s, int which, const params_t *p)
{
	char name[16];

	snprintf(name, sizeof name, "q%d", which);
	if (!PQsendQueryPrepared(s->conn, name, p->n, p->v, p->len, p->fmt, 0))
		return lost(s, NULL);
	return 0;
}

static int pipe_send_sql(pg_store_t *s, const char *sql)
{
	if (!PQsendQueryParams(s->conn, sql, 0, NULL, NULL, NULL, NULL, 0))
		return lost(s, NULL);
	return 0;
}

/* Syncs and reads the answers of the k statements sent since the last
 * sync into res[0..k). Returns 0 when every one succeeded; -1 when one
 * failed (logged, naming what[i]) or the connection did (dropped). res[]
 * holds what arrived either way, for the caller to PQclear. */
static int pipe_read(pg_store_t *s, PGresult **res, size_t k, const char *const *what)
{
	size_t i;
	int err = 0, bad = 0;
	PGresult *r;

	if (!PQpipelineSync(s->conn))
		return lost(s, NULL);
	if (flush_out(s) < 0)
		return -1;
	for (i = 0; i < k; i++) {
		if (!(r = next_result(s, &err))) {
			if (!err)
				lost(s, "the pipeline's answers came out of step");
			return -1;
		}
		res[i] = r;
		if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
			if (!bad && PQresultStatus(r) != PGRES_PIPELINE_ABORTED)
				failed(s, r, what[i]);
			bad = 1;
			if (!s->conn)
				return -1;
		}
		/* The NULL that ends this statement's answers. */
		while ((r = next_result(s, &err)))
			PQclear(r);
		if (err)
			return -1;
	}
	if (!(r = next_result(s, &err))) {
		if (!err)
			lost(s, "the pipeline's sync did not come");
		return -1;
	}
	if (PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
		PQclear(r);
		lost(s, "the pipeline's answers came out of step");
		return -1;
	}
	PQclear(r);
	return bad ? -1 : 0;
}

static void clear_results(PGresult **res, size_t k)
{
	size_t i;

	for (i = 0; i < k; i++) {
		PQclear(res[i]);
		res[i] = NULL;
	}
}

/* A one-dimensional array parameter in PostgreSQL's binary format, so
 * that a batch's columns travel as one value each, bodies and cmids with
 * no quoting: a header (dimensions, flags, element type, length, lower
 * bound), then each element as its length and its bytes, big-endian. */
#define OID_INT8 20
#define OID_TEXT 25

typedef struct arr {
	unsigned char *b;
	size_t n, cap;
	uint32_t count, oid;
	int oom;
} arr_t;

static void arr_init(arr_t *a, uint32_t oid)
{
	*a = (arr_t){.oid = oid, .n = 20};
}

static void be32(unsigned char *p, uint32_t x)
{
	p[0] = (unsigned char)(x >> 24);
	p[1] = (unsigned char)(x >> 16);
	p[2] = (unsigned char)(x >> 8);
	p[3] = (unsigned char)x;
}

static void arr_put(arr_t *a, const void *x, size_t len)
{
	if (a->oom)
		return;
	if (a->n + 4 + len > a->cap) {
		size_t cap = (a->cap ? a->cap : 256) * 2;
		unsigned char *b;
		while (cap < a->n + 4 + len)
			cap *= 2;
		if (!(b = realloc(a->b, cap))) {
			a->oom = 1;
			return;
		}
		a->b = b;
		a->cap = cap;
	}
	be32(a->b + a->n, (uint32_t)len);
	memcpy(a->b + a->n + 4, x, len);
	a->n += 4 + len;
	a->count++;
}

static void arr_i64(arr_t *a, int64_t v)
{
	unsigned char x[8];

	be32(x, (uint32_t)((uint64_t)v >> 32));
	be32(x + 4, (uint32_t)v);
	arr_put(a, x, 8);
}

static void arr_text(arr_t *a, const char *t, size_t len)
{
	arr_put(a, t, len);
}

/* The finished array as the next parameter; -1 when out of memory or too
 * large for one parameter. */
static int p_arr(params_t *p, arr_t *a)
{
	if (!a->b && !a->oom && !(a->b = malloc(a->cap = 20)))
		a->oom = 1;
	if (a->oom || a->n > INT32_MAX)
		return -1;
	be32(a->b, 1);
	be32(a->b + 4, 0);
	be32(a->b + 8, a->oid);
	be32(a->b + 12, a->count);
	be32(a->b + 16, 1);
	p_bytes(p, a->b, a->n);
	return 0;
}

static void arrs_free(arr_t *a, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(a[i].b);
		a[i].b = NULL;
	}
}

/* A conversation of the batch: its head under the lock, as phase A found
 * it, then as the batch's messages move it. */
typedef struct head {
	int64_t conv;
	int64_t seq, last_id;   /* after the batch's messages so far, the last one's id */
	int64_t at;             /* while phase B is written: the head at the op in hand */
	int moved;
} head_t;

static head_t *head_of(head_t *h, size_t n, int64_t conv)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (h[mid].conv == conv)
			return &h[mid];
		if (h[mid].conv < conv)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* The rules of an event (or a reply) of the batch about its target
 * (store_event_check), from the probe's row, or from the batch itself
 * when the target, or a delete of it, is an earlier op of the batch
 * (the probe ran before any of them was written). */
static int plan_event(const store_op_t *ops, size_t i, const int *plan, PGresult *r, int row, const head_t *h)
{
	const store_op_t *op = &ops[i];
	int64_t from, ts, joined = PQgetisnull(r, row, 14) ? 0 : g_int(r, row, 14);
	int kind, deleted;
	size_t j;

	if (op->target <= joined || op->target > h->seq)
		return STORE_NOT_FOUND;
	if (op->target > h->at) {
		for (j = 0; j < i; j++)
			if (plan[j] == PLAN_STORE && ops[j].conv == op->conv && ops[j].out_seq == op->target)
				break;
		if (j == i)
			return STORE_NOT_FOUND;
		from = ops[j].user;
		ts = ops[j].out_ts;
		kind = ops[j].msg_kind;
		deleted = 0;
	} else {
		if (PQgetisnull(r, row, 9))
			return STORE_NOT_FOUND;
		from = g_int(r, row, 9);
		ts = g_int(r, row, 10);
		kind = (int)g_int(r, row, 11);
		deleted = (int)g_int(r, row, 12);
	}
	if (kind != STORE_MSG_TEXT)
		return STORE_NOT_FOUND; /* events are not the subject of events */
	for (j = 0; j < i; j++)
		if (plan[j] == PLAN_STORE && ops[j].conv == op->conv && ops[j].msg_kind == STORE_MSG_DELETE &&
		    ops[j].target == op->target)
			deleted = 1;
	return store_event_check(op, op->conv_kind, from, ts, deleted, g_int(r, row, 13) == 1,
	                         PQgetisnull(r, row, 15) ? 0 : g_int(r, row, 15));
}

/* Decides a send from its row of the probe (phase A), as
 * store_sqlite.c's apply_send does in order: not a member, stored already
 * (here or earlier in this batch), blocked, not admitted; else it is to
 * be stored, at the next seq of its conversation. */
static int plan_send(store_op_t *ops, size_t i, const int *plan, int *dup, PGresult *r, int row,
                     head_t *h)
{
	store_op_t *op = &ops[i];
	int64_t count;
	int blocks;
	size_t j;

	if (PQgetisnull(r, row, 8) || PQgetisnull(r, row, 0) || !h) {
		op->status = STORE_FORBIDDEN;
		return PLAN_DONE;
	}
	op->conv_kind = (int)g_int(r, row, 0);
	count = g_int(r, row, 1);
	op->out_members_version = g_int(r, row, 2);
	blocks = (int)g_int(r, row, 3);
	if (!PQgetisnull(r, row, 5)) {
		op->out_id = g_int(r, row, 5);
		op->out_seq = g_int(r, row, 6);
		op->out_ts = g_int(r, row, 7);
		op->status = STORE_EXISTS;
		return PLAN_DONE;
	}
	for (j = 0; j < i; j++) {
		if (plan[j] == PLAN_STORE && ops[j].conv == op->conv && ops[j].user == op->user &&
		    strcmp(ops[j].cmid, op->cmid) == 0) {
			dup[i] = (int)j;
			op->status = STORE_EXISTS;
			return PLAN_DUP;
		}
	}
	/* A block holds in a direct chat both ways; a repeat of what was
	 * stored before it (above) is still answered with its ack. */
	if (op->conv_kind == STORE_DIRECT && blocks) {
		op->out_blocked_by_me = blocks & 1;
		op->status = STORE_BLOCKED;
		return PLAN_DONE;
	}
	if ((op->msg_kind != STORE_MSG_TEXT || op->target > 0) &&
	    (op->status = plan_event(ops, i, plan, r, row, h)) != STORE_OK)
		return PLAN_DONE;
	if (op->admit) {
		int64_t retry = op->admit(op->admit_ud, op, count > 1 ? (size_t)count - 1 : 1);
		if (retry > 0) {
			op->out_retry_ms = retry;
			op->status = STORE_LIMITED;
			return PLAN_DONE;
		}
	}
	op->out_id = op->new_id;
	op->out_ts = op->now_ms;
	op->out_seq = ++h->seq;
	h->last_id = op->new_id;
	h->moved = 1;
	/* A direct chat's two members ride along; a group's up to 1,024
	 * are read by the fan-out, off the commit's path. */
	if (op->conv_kind == STORE_DIRECT && g_ids(r, row, 4, &op->members, &op->nmembers) != STORE_OK)
		return -1;
	op->status = STORE_OK;
	return PLAN_STORE;
}

/* A receipt's answer (phase B) into its op. */
static int read_receipt(store_op_t *op, PGresult *r, int outbox)
{
	if (PQntuples(r) != 1) {
		op->status = STORE_FORBIDDEN;
		return 0;
	}
	op->conv_kind = (int)g_int(r, 0, 0);
	op->out_members_version = g_int(r, 0, 1);
	op->out_seq = g_int(r, 0, 2);
	op->out_prev = g_int(r, 0, 3);
	op->applied = g_int(r, 0, 4) != 0;
	op->status = STORE_OK;
	if (outbox && op->applied && !PQgetisnull(r, 0, 6))
		op->out_outbox = g_int(r, 0, 6);
	if (op->conv_kind == STORE_DIRECT && g_ids(r, 0, 5, &op->members, &op->nmembers) != STORE_OK)
		return -1;
	return 0;
}

/* Sorted distinct conversations of the batch. */
static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static int64_t *batch_convs(const store_op_t *ops, size_t n, size_t *k)
{
	int64_t *ids = malloc(n * sizeof *ids);
	size_t i;

	*k = 0;
	if (!ids)
		return NULL;
	for (i = 0; i < n; i++)
		ids[i] = ops[i].conv;
	qsort(ids, n, sizeof *ids, cmp_i64);
	for (i = 0; i < n; i++)
		if (!*k || ids[*k - 1] != ids[i])
			ids[(*k)++] = ids[i];
	return ids;
}

/* Phase B's statements for the stored sends, in one go: the rows, each
 * conversation's counter, the senders' first-message marks. Returns the
 * number of statements sent, or -1. */
static int send_writes(pg_store_t *s, const store_op_t *ops, size_t n, const int *plan, const int *first,
                       const head_t *heads, size_t nheads, const char **what)
{
	arr_t a[9];
	params_t p;
	size_t i, j, nw = 0;
	int k = 0, rc = -1;

	for (j = 0; j < 9; j++)
		arr_init(&a[j], j == 4 || j == 5 ? OID_TEXT : OID_INT8);
	for (i = 0; i < n; i++) {
		if (plan[i] != PLAN_STORE)
			continue;
		arr_i64(&a[0], ops[i].out_id);
		arr_i64(&a[1], ops[i].conv);
		arr_i64(&a[2], ops[i].out_seq);
		arr_i64(&a[3], ops[i].user);
		arr_text(&a[4], ops[i].cmid, strlen(ops[i].cmid));
		arr_text(&a[5], ops[i].body, ops[i].body_len);
		arr_i64(&a[6], ops[i].out_ts);
		arr_i64(&a[7], ops[i].msg_kind);
		arr_i64(&a[8], ops[i].target);
	}
	p.n = 0;
	for (j = 0; j < 9; j++)
		if (p_arr(&p, &a[j]) < 0)
			goto out;
	what[k++] = "the batch's messages";
	if (pipe_send(s, s->outbox ? Q_SEND_INSERT_OUTBOX : Q_SEND_INSERT, &p) < 0)
		goto out;
	arrs_free(a, 9);

	for (j = 0; j < 3; j++)
		arr_init(&a[j], OID_INT8);
	for (i = 0; i < nheads; i++) {
		if (!heads[i].moved)
			continue;
		arr_i64(&a[0], heads[i].conv);
		arr_i64(&a[1], heads[i].seq);
		arr_i64(&a[2], heads[i].last_id);
	}
	p.n = 0;
	for (j = 0; j < 3; j++)
		if (p_arr(&p, &a[j]) < 0)
			goto out;
	what[k++] = "the conversations' counters";
	if (pipe_send(s, Q_SEND_BUMP, &p) < 0)
		goto out;
	arrs_free(a, 3);

	/* first[i]: the sender had not written in that conversation (the
	 * probe's answer); each such pair once. */
	arr_init(&a[0], OID_INT8);
	arr_init(&a[1], OID_INT8);
	for (i = 0; i < n; i++) {
		if (plan[i] != PLAN_STORE || !first[i])
			continue;
		for (j = 0; j < i; j++)
			if (plan[j] == PLAN_STORE && first[j] && ops[j].conv == ops[i].conv && ops[j].user == ops[i].user)
				break;
		if (j < i)
			continue;
		arr_i64(&a[0], ops[i].conv);
		arr_i64(&a[1], ops[i].user);
		nw++;
	}
	if (nw) {
		p.n = 0;
		if (p_arr(&p, &a[0]) < 0 || p_arr(&p, &a[1]) < 0)
			goto out;
		what[k++] = "the senders' first-message marks";
		if (pipe_send(s, Q_SEND_WROTE, &p) < 0)
			goto out;
	}
	rc = k;
out:
	arrs_free(a, 9);
	return rc;
}

/* One attempt at a batch. *twin is set when it failed only because its
 * insert met a message with one of its cmids stored by a writer that did
 * not hold the conversation's lock (none of Parley's does; an outside
 * one, or a bug): that row has committed by then, so a second attempt
 * sees it in its probe and answers that send STORE_EXISTS. */
static int apply_once(pg_store_t *s, store_op_t *ops, size_t n, int *twin)
{
	PGresult **res = NULL;
	const char **what = NULL;
	int *plan = NULL, *dup = NULL, *first = NULL;
	int64_t *convs = NULL;
	head_t *heads = NULL;
	char *convs_text = NULL;
	size_t i, k, nres, nconvs = 0, nsends = 0, nstored = 0, nhead = 0;
	params_t p;
	int pipelined = 0, w, nsendstmts = 0;

	for (i = 0; i < n; i++) {
		ops[i].members = NULL;
		ops[i].nmembers = 0;
		ops[i].applied = 0;
		ops[i].out_outbox = 0;
		nsends += ops[i].kind == STORE_OP_SEND;
	}
	if (!n)
		return STORE_OK;
	if (ready(s) != STORE_OK)
		goto err;
	/* Statements: BEGIN, the locks, the probe, three for the rows, up to
	 * two per op (an event's change and a reaction's summary; one per
	 * receipt), COMMIT. */
	if (!(res = calloc(2 * n + 8, sizeof *res)) || !(what = calloc(2 * n + 8, sizeof *what)) ||
	    !(plan = calloc(n, sizeof *plan)) || !(dup = calloc(n, sizeof *dup)) ||
	    !(first = calloc(n, sizeof *first)) || !(convs = batch_convs(ops, n, &nconvs)) ||
	    !(heads = calloc(nconvs, sizeof *heads)) || !(convs_text = id_array(convs, nconvs)))
		goto err;
	if (PQenterPipelineMode(s->conn) != 1) {
		failed(s, NULL, "pipeline mode");
		goto err;
	}
	pipelined = 1;
	/* Phase A: the transaction, its locks (answering each conversation's
	 * head), and one probe for every send. With no sends it rides with
	 * phase B. */
	k = 0;
	what[k++] = "BEGIN";
	if (pipe_send_sql(s, "BEGIN") < 0)
		goto err;
	p.n = 0;
	what[k++] = "the batch's conversation locks";
	if (pipe_send(s, Q_LOCK_CONVS, p_text(&p, convs_text)) < 0)
		goto err;
	if (nsends) {
		arr_t a[5];
		int bad = 0;
		for (i = 0; i < 5; i++)
			arr_init(&a[i], i == 2 ? OID_TEXT : OID_INT8);
		for (i = 0; i < n; i++) {
			if (ops[i].kind != STORE_OP_SEND)
				continue;
			arr_i64(&a[0], ops[i].conv);
			arr_i64(&a[1], ops[i].user);
			arr_text(&a[2], ops[i].cmid, strlen(ops[i].cmid));
			arr_i64(&a[3], ops[i].target);
			arr_i64(&a[4], ops[i].msg_kind);
		}
		p.n = 0;
		for (i = 0; i < 5; i++)
			bad |= p_arr(&p, &a[i]) < 0;
		what[k++] = "the sends' probe";
		if (!bad && pipe_send(s, Q_SEND_PROBE, &p) < 0)
			bad = 1;
		arrs_free(a, 5);
		if (bad)
			goto err;
		if (pipe_read(s, res, k, what) < 0)
			goto abort;
		/* Heads of the conversations that exist, in id order. */
		for (i = 0; i < (size_t)PQntuples(res[1]) && nhead < nconvs; i++) {
			heads[nhead].conv = g_int(res[1], (int)i, 0);
			heads[nhead].seq = heads[nhead].at = g_int(res[1], (int)i, 1);
			nhead++;
		}
		if ((size_t)PQntuples(res[2]) != nsends) {
			lost(s, "the sends' probe answered the wrong number of rows");
			goto abort;
		}
		for (i = 0, w = 0; i < n; i++) {
			if (ops[i].kind != STORE_OP_SEND) {
				plan[i] = PLAN_RECEIPT;
				continue;
			}
			plan[i] = plan_send(ops, i, plan, dup, res[2], w, head_of(heads, nhead, ops[i].conv));
			if (plan[i] < 0)
				goto abort;
			/* Only a message makes its sender one who wrote here. */
			first[i] = !PQgetisnull(res[2], w, 8) && g_int(res[2], w, 8) == 0 &&
			           ops[i].msg_kind == STORE_MSG_TEXT;
			nstored += plan[i] == PLAN_STORE;
			w++;
		}
		clear_results(res, k);
		k = 0;
	} else {
		for (i = 0; i < n; i++)
			plan[i] = PLAN_RECEIPT;
	}
	/* Phase B: the messages, then the receipts in op order, each capped at
	 * the head where it stands in the batch; COMMIT. */
	if (nstored) {
		if ((w = send_writes(s, ops, n, plan, first, heads, nhead, what + k)) < 0)
			goto err;
		k += (size_t)(nsendstmts = w);
	}
	for (i = 0; i < n; i++) {
		store_op_t *op = &ops[i];
		head_t *h = nsends ? head_of(heads, nhead, op->conv) : NULL;
		if (plan[i] == PLAN_STORE) {
			h->at = op->out_seq;
			if (op->msg_kind == STORE_MSG_TEXT)
				continue;
			p.n = 0;
			p_int(p_int(p_int(&p, op->conv), op->target), op->msg_kind);
			p_bytes(&p, op->body, op->body_len);
			p_int(p_int(p_int(&p, op->out_ts), op->out_seq), op->user);
			what[k++] = "an event's change to its message";
			if (pipe_send(s, Q_EVENT_APPLY, &p) < 0)
				goto err;
			if (op->msg_kind == STORE_MSG_REACTION) {
				p.n = 0;
				p_int(p_int(p_int(&p, op->conv), op->target), op->out_seq);
				what[k++] = "a message's reactions";
					if (pipe_send(s, Q_REACTIONS_SYNC, &p) < 0)
					goto err;
			}
		} else if (plan[i] == PLAN_RECEIPT) {
			p.n = 0;
			p_int(p_int(p_int(p_int(&p, op->conv), op->user), op->state), op->seq);
			p_int(p_int(&p, op->now_ms), STORE_RECEIPT_DETAIL_MAX);
			/* With no sends the statement's own read of the head is the
			 * head under the lock; otherwise the batch knows it. */
			p_int(&p, h ? h->at : INT64_MAX);
			what[k++] = "receipt";
			if (pipe_send(s, s->outbox ? Q_RECEIPT_APPLY_OUTBOX : Q_RECEIPT_APPLY, &p) < 0)
				goto err;
		}
	}
	what[k++] = "COMMIT";
	if (pipe_send_sql(s, "COMMIT") < 0)
		goto err;
	if (pipe_read(s, res, k, what) < 0) {
		const char *state = nstored && res[0] ? PQresultErrorField(res[0], PG_DIAG_SQLSTATE) : NULL;
		*twin = nsends && state && strcmp(state, "23505") == 0;
		goto abort;
	}
	if (strcmp(PQcmdStatus(res[k - 1]), "COMMIT") != 0) {
		log_error("store: the batch's transaction was rolled back at commit");
		goto abort;
	}
	nres = k;
	/* The messages' outbox rows, matched by message id (res[0] is the
	 * insert when the batch stored any). */
	if (s->outbox && nstored) {
		int row, rows = PQntuples(res[0]);
		for (row = 0; row < rows; row++) {
			int64_t ob = g_int(res[0], row, 0), mid = g_int(res[0], row, 1);
			for (i = 0; i < n; i++)
				if (plan[i] == PLAN_STORE && ops[i].out_id == mid)
					ops[i].out_outbox = ob;
		}
	}
	k = (nsends ? 0 : 2) + (size_t)nsendstmts;
	for (i = 0; i < n; i++) {
		if (plan[i] == PLAN_STORE && ops[i].msg_kind != STORE_MSG_TEXT)
			k += ops[i].msg_kind == STORE_MSG_REACTION ? 2 : 1; /* an event's statements */
		else if (plan[i] == PLAN_RECEIPT && read_receipt(&ops[i], res[k++], s->outbox) < 0)
			ops[i].status = STORE_ERROR; /* committed, but its members could not be copied */
	}
	clear_results(res, nres);
	if (PQexitPipelineMode(s->conn) != 1)
		lost(s, "the batch's pipeline did not end");
	pipelined = 0;
	/* The repeats of the batch's own sends. */
	for (i = 0; i < n; i++) {
		store_op_t *op = &ops[i];
		if (plan[i] == PLAN_DUP) {
			store_op_t *orig = &ops[dup[i]];
			op->status = orig->status == STORE_ERROR ? STORE_ERROR : STORE_EXISTS;
			op->out_id = orig->out_id;
			op->out_seq = orig->out_seq;
			op->out_ts = orig->out_ts;
		}
	}
	free(res);
	free(what);
	free(plan);
	free(dup);
	free(first);
	free(convs);
	free(heads);
	free(convs_text);
	return STORE_OK;
abort:
	/* The pipeline read to its sync: leave it and the failed transaction
	 * so that the connection can serve the next call. */
	clear_results(res, 2 * n + 8);
	if (s->conn && PQexitPipelineMode(s->conn) != 1)
		lost(s, "the batch's pipeline did not end");
	pipelined = 0;
	rollback(s);
err:
	if (res)
		clear_results(res, 2 * n + 8);
	/* A pipeline left half-sent cannot be trusted: nothing of it was
	 * committed (COMMIT's answer never came), and the connection goes. */
	if (pipelined && s->conn)
		lost(s, "a batch was interrupted");
	free(res);
	free(what);
	free(plan);
	free(dup);
	free(first);
	free(convs);
	free(heads);
	free(convs_text);
	for (i = 0; i < n; i++) {
		store_op_release(&ops[i]);
		ops[i].status = STORE_ERROR;
		ops[i].applied = 0;
		ops[i].out_outbox = 0;
	}
	return STORE_ERROR;
}

/* ---- the outbox ------------------------------------------------------ */

static int pg_set_outbox(store_t *base, int on)
{
	S(base)->outbox = on != 0;
	return STORE_OK;
}

static int pg_set_lazy_commit(store_t *base, int on)
{
	pg_store_t *s = S(base);

	s->lazy = on != 0;
	READY(s);
	return apply_lazy(s);
}

static int pg_outbox_take(store_t *base, int64_t now_ms, int64_t age_ms, size_t max_rows,
                          store_outbox_t **out, size_t *n)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	store_outbox_t *rows = NULL;
	int rc, i, nr;

	*out = NULL;
	*n = 0;
	if (!max_rows)
		return STORE_OK;
	READY(s);
	if ((rc = run(s, Q_OUTBOX_TAKE, p_size(p_int(p_int(&p, now_ms), now_ms - age_ms), max_rows), &r)) !=
	    STORE_OK)
		return rc;
	nr = PQntuples(r);
	if (nr && !(rows = calloc((size_t)nr, sizeof *rows))) {
		PQclear(r);
		return STORE_ERROR;
	}
	for (i = 0; i < nr; i++) {
		store_outbox_t *o = &rows[i];
		o->id = g_int(r, i, 0);
		o->conv = g_int(r, i, 1);
		o->kind = (int)g_int(r, i, 2);
		o->seq = g_int(r, i, 3);
		o->user = g_int(r, i, 4);
		o->created_at = g_int(r, i, 5);
		if (o->kind == STORE_EVENT_MESSAGE && !PQgetisnull(r, i, 6) &&
		    read_message(r, i, 6, o->conv, &o->msg) != STORE_OK) {
			store_outbox_free(rows, (size_t)nr);
			PQclear(r);
			return STORE_ERROR;
		}
	}
	PQclear(r);
	*out = rows;
	*n = (size_t)nr;
	return STORE_OK;
}

static int pg_outbox_delete(store_t *base, const int64_t *ids, size_t n)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	char *text;
	int rc;

	if (!n)
		return STORE_OK;
	READY(s);
	if (!(text = id_array(ids, n)))
		return STORE_ERROR;
	rc = exec(s, Q_OUTBOX_DELETE, p_text(&p, text));
	free(text);
	return rc;
}

static int pg_apply(store_t *base, store_op_t *ops, size_t n)
{
	int twin = 0, rc = apply_once(S(base), ops, n, &twin);

	if (rc != STORE_OK && twin) {
		log_warn("store: a batch met a message stored outside its conversation's lock; trying it again");
		rc = apply_once(S(base), ops, n, &twin);
	}
	return rc;
}

/* ---- contacts, blocks, settings, first contacts --------------------- */

static int pg_watchable(store_t *base, int64_t user_id, int64_t candidate, int64_t *last_seen)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	char key[48];
	int r;

	READY(s);
	direct_key(key, user_id, candidate);
	r = query_int(s, Q_WATCHABLE, p_text(p_int(p_int(&p, user_id), candidate), key), last_seen);
	return r == STORE_NOT_FOUND ? STORE_FORBIDDEN : r;
}

static int pg_shares_conversation(store_t *base, int64_t user_id, int64_t other)
{
	params_t p = {0};
	int64_t one;
	int r;

	READY(S(base));
	r = query_int(S(base), Q_SHARES, p_int(p_int(&p, user_id), other), &one);
	return r == STORE_NOT_FOUND ? STORE_FORBIDDEN : r;
}

static int pg_contact(store_t *base, int64_t user_id, int64_t other, store_contact_t *c)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	char key[48];
	int rc, exists;

	memset(c, 0, sizeof *c);
	READY(s);
	if ((rc = run(s, Q_BLOCK_STATE, p_int(p_int(&p, user_id), other), &r)) != STORE_OK)
		return rc;
	exists = (int)g_int(r, 0, 0);
	c->i_blocked = (int)g_int(r, 0, 1);
	c->they_blocked = (int)g_int(r, 0, 2);
	PQclear(r);
	if (!exists)
		return STORE_NOT_FOUND;
	direct_key(key, user_id, other);
	p.n = 0;
	if ((rc = run(s, Q_DIRECT_STATE, p_text(p_int(p_int(&p, user_id), other), key), &r)) != STORE_OK)
		return rc;
	if (PQntuples(r) == 1) {
		c->direct = g_int(r, 0, 0);
		c->i_wrote = (int)g_int(r, 0, 1);
		c->they_wrote = (int)g_int(r, 0, 2);
	}
	PQclear(r);
	return STORE_OK;
}

static int pg_settings_get(store_t *base, int64_t user_id, store_settings_t *out)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	int rc;

	READY(s);
	if ((rc = run(s, Q_SETTINGS, p_int(&p, user_id), &r)) != STORE_OK)
		return rc;
	if (PQntuples(r) == 1) {
		out->group_adds = (int)g_int(r, 0, 0);
		out->strangers_exempt = (int)g_int(r, 0, 1);
		out->push_previews = (int)g_int(r, 0, 2);
	} else {
		rc = STORE_NOT_FOUND;
	}
	PQclear(r);
	return rc;
}

/* Runs an UPDATE of one user's row; STORE_NOT_FOUND when there is none. */
static int update_user(pg_store_t *s, int which, int64_t user_id, int64_t value)
{
	params_t p = {0};
	int64_t n;
	int rc;

	READY(s);
	if ((rc = exec_changes(s, which, p_int(p_int(&p, user_id), value), &n)) != STORE_OK)
		return rc;
	return n ? STORE_OK : STORE_NOT_FOUND;
}

static int pg_set_group_adds(store_t *base, int64_t user_id, int group_adds)
{
	return update_user(S(base), Q_SET_GROUP_ADDS, user_id, group_adds);
}

static int pg_set_strangers_exempt(store_t *base, int64_t user_id, int exempt)
{
	return update_user(S(base), Q_SET_EXEMPT, user_id, exempt);
}

static int pg_set_push_previews(store_t *base, int64_t user_id, int on)
{
	return update_user(S(base), Q_SET_PREVIEWS, user_id, on != 0);
}

static int pg_set_muted(store_t *base, int64_t conv_id, int64_t user_id, int on)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	int64_t n;
	int rc;

	READY(s);
	if ((rc = exec_changes(s, Q_SET_MUTED, p_int(p_int(p_int(&p, conv_id), user_id), on != 0), &n)) != STORE_OK)
		return rc;
	return n ? STORE_OK : STORE_FORBIDDEN;
}

/* Inserts or deletes the block of target by user_id, and brings their
 * direct chat's marks in line, in one transaction. The two users' rows
 * are locked first, as direct_open locks them, so that a chat being
 * opened between them meanwhile gets the block too; then the chat's row,
 * as a batch takes it. */
static int change_block(pg_store_t *s, int64_t user_id, int64_t target, int64_t now_ms, int add)
{
	int64_t pair[2] = {user_id, target}, one, conv = 0, n;
	params_t p = {0};
	int r;

	READY(s);
	if (begin(s) != STORE_OK)
		return STORE_ERROR;
	if ((r = query_int(s, Q_USER_EXISTS, p_int(&p, target), &one)) != STORE_OK)
		return finish(s, r);
	if ((r = lock_rows(s, Q_LOCK_USERS, pair, 2)) != STORE_OK ||
	    (r = find_direct(s, user_id, target, &conv)) != STORE_OK ||
	    (conv && (r = lock_rows(s, Q_LOCK_CONVS, &conv, 1)) != STORE_OK))
		return finish(s, r);
	p.n = 0;
	p_int(p_int(&p, user_id), target);
	if (add)
		p_int(&p, now_ms);
	if ((r = exec_changes(s, add ? Q_BLOCK_INSERT : Q_BLOCK_DELETE, &p, &n)) != STORE_OK)
		return finish(s, r);
	if (!n)
		return finish(s, add ? STORE_EXISTS : STORE_NOT_FOUND);
	if (conv)
		r = sync_blocks(s, conv, user_id, target);
	return finish(s, r);
}

static int pg_block(store_t *base, int64_t user_id, int64_t target, int64_t now_ms)
{
	return change_block(S(base), user_id, target, now_ms, 1);
}

static int pg_unblock(store_t *base, int64_t user_id, int64_t target)
{
	return change_block(S(base), user_id, target, 0, 0);
}

static int pg_blocks(store_t *base, int64_t user_id, int64_t after, size_t limit, store_block_t **out,
                     size_t *n, int *has_more)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	PGresult *r;
	size_t rows, i;
	int rc;

	*out = NULL;
	*n = 0;
	*has_more = 0;
	READY(s);
	if ((rc = run(s, Q_BLOCKS, p_more(p_int(p_int(&p, user_id), after), limit), &r)) != STORE_OK)
		return rc;
	rows = (size_t)PQntuples(r);
	if (rows > limit) {
		*has_more = 1;
		rows = limit;
	}
	if (rows && !(*out = malloc(rows * sizeof **out))) {
		PQclear(r);
		return STORE_ERROR;
	}
	for (i = 0; i < rows; i++) {
		(*out)[i].user_id = g_int(r, (int)i, 0);
		(*out)[i].created_at = g_int(r, (int)i, 1);
	}
	*n = rows;
	PQclear(r);
	return STORE_OK;
}

static int pg_blocked_in_conv(store_t *base, int64_t user_id, int64_t conv_id, int64_t **ids, size_t *n)
{
	params_t p = {0};

	*ids = NULL;
	*n = 0;
	READY(S(base));
	return query_ids(S(base), Q_BLOCKED_IN_CONV, p_int(p_int(&p, user_id), conv_id), ids, n);
}

static int pg_blocks_received(store_t *base, int64_t user_id, int64_t since_ms, int64_t *count)
{
	params_t p = {0};

	READY(S(base));
	return query_int(S(base), Q_BLOCKS_RECEIVED, p_int(p_int(&p, user_id), since_ms), count);
}

static int pg_first_contacts(store_t *base, int64_t user_id, int64_t since_ms, int64_t *count)
{
	params_t p = {0};

	READY(S(base));
	return query_int(S(base), Q_FIRST_COUNT, p_int(p_int(&p, user_id), since_ms), count);
}

static int pg_first_contact_at(store_t *base, int64_t user_id, int64_t since_ms, int64_t nth,
                               int64_t *ts)
{
	params_t p = {0};

	READY(S(base));
	return query_int(S(base), Q_FIRST_AT, p_int(p_int(p_int(&p, user_id), since_ms), nth), ts);
}

static int pg_first_contacts_add(store_t *base, int64_t user_id, const int64_t *targets, size_t n,
                                 int64_t now_ms)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	char *a;
	int rc;

	if (!n)
		return STORE_OK;
	READY(s);
	if (!(a = id_array(targets, n)))
		return STORE_ERROR;
	/* One statement: all of them or none. */
	rc = exec(s, Q_FIRST_INSERT, p_int(p_text(p_int(&p, user_id), a), now_ms));
	free(a);
	return rc;
}

static int pg_expire_first_contacts(store_t *base, int64_t before_ms, size_t max_rows, size_t *deleted)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	int64_t n;
	int rc;

	*deleted = 0;
	READY(s);
	if ((rc = exec_changes(s, Q_FIRST_EXPIRE, p_size(p_int(&p, before_ms), max_rows), &n)) != STORE_OK)
		return rc;
	*deleted = (size_t)n;
	return STORE_OK;
}

static int pg_last_seen_set(store_t *base, const int64_t *users, const int64_t *times, size_t n)
{
	pg_store_t *s = S(base);
	params_t p = {0};
	char *u = NULL, *t = NULL;
	int r = STORE_ERROR;

	if (!n)
		return STORE_OK;
	READY(s);
	if (!(u = id_array(users, n)) || !(t = id_array(times, n)))
		goto out;
	/* The rows locked in id order first: two nodes recording overlapping
	 * users cannot deadlock. */
	if (begin(s) != STORE_OK)
		goto out;
	r = lock_rows(s, Q_LOCK_USERS, users, n);
	if (r == STORE_OK)
		r = exec(s, Q_LAST_SEEN_SET, p_text(p_text(&p, u), t));
	r = finish(s, r);
out:
	free(u);
	free(t);
	return r;
}

static const store_vtab_t pg_vtab = {
	.close = pg_close,
	.user_create = pg_user_create,
	.user_by_name = pg_user_by_name,
	.user_by_id = pg_user_by_id,
	.device_create = pg_device_create,
	.device_by_token = pg_device_by_token,
	.device_delete = pg_device_delete,
	.direct_open = pg_direct_open,
	.conv_get = pg_conv_get,
	.conv_list = pg_conv_list,
	.history = pg_history,
	.receipts = pg_receipts,
	.member_head = pg_member_head,
	.members = pg_members,
	.member_list = pg_member_list,
	.read_count = pg_read_count,
	.unread_total = pg_unread_total,
	.push_mark = pg_push_mark,
	.push_pending = pg_push_pending,
	.search = pg_search,
	.watermarks = pg_watermarks,
	.expire_receipts = pg_expire_receipts,
	.watchable = pg_watchable,
	.shares_conversation = pg_shares_conversation,
	.contact = pg_contact,
	.settings_get = pg_settings_get,
	.set_group_adds = pg_set_group_adds,
	.set_strangers_exempt = pg_set_strangers_exempt,
	.set_push_previews = pg_set_push_previews,
	.set_muted = pg_set_muted,
	.block = pg_block,
	.unblock = pg_unblock,
	.blocks = pg_blocks,
	.blocked_in_conv = pg_blocked_in_conv,
	.blocks_received = pg_blocks_received,
	.first_contacts = pg_first_contacts,
	.first_contact_at = pg_first_contact_at,
	.first_contacts_add = pg_first_contacts_add,
	.expire_first_contacts = pg_expire_first_contacts,
	.devices = pg_devices,
	.push_target_put = pg_push_target_put,
	.push_targets = pg_push_targets,
	.push_target_delete = pg_push_target_delete,
	.server_key_get = pg_server_key_get,
	.server_key_add = pg_server_key_add,
	.last_seen_set = pg_last_seen_set,
	.senders = pg_senders,
	.group_create = pg_group_create,
	.member_add = pg_member_add,
	.member_remove = pg_member_remove,
	.heads = pg_heads,
	.replay = pg_replay,
	.apply = pg_apply,
	.set_outbox = pg_set_outbox,
	.set_lazy_commit = pg_set_lazy_commit,
	.outbox_take = pg_outbox_take,
	.outbox_delete = pg_outbox_delete,
};

/* ---- the backend's entry ------------------------------------------ */

static int pg_accepts(const char *location)
{
	return strncmp(location, "postgresql://", 13) == 0 || strncmp(location, "postgres://", 11) == 0;
}

static store_t *pg_open(const char *location)
{
	pg_store_t *s = handle_new(location);

	if (!s)
		return NULL;
	s->last_attempt = clock_mono_ms();
	if (connect_handle(s) != STORE_OK) {
		pg_close(&s->base);
		return NULL;
	}
	return &s->base;
}

/* Creates or migrates the schema, in one transaction that holds the
 * schema's advisory lock: nodes starting together take turns, and the
 * second finds the work done. A crash halfway leaves the old version,
 * whole. *from gets the version the database had (0: none). Returns 0, or
 * -1 with the cause logged. */
static int schema_up(const char *location, int *from)
{
	pg_store_t *s = handle_new(location);
	PGresult *r;
	int version, v, rc = -1;
	char sql[128];

	if (!s)
		return -1;
	if (!(s->conn = pg_connect(location, s->where)))
		goto out;
	/* Whatever fails is said once, below, with what was being done. */
	s->quiet = 1;
	s->deadline = clock_mono_ms() + SCHEMA_MS;
	if (exec_sql(s, session_setup, "session settings") != STORE_OK || begin(s) != STORE_OK ||
	    exec_sql(s, "SET LOCAL statement_timeout = 0", "session settings") != STORE_OK)
		goto fail;
	if (run_sql(s, "SELECT pg_advisory_xact_lock(" SCHEMA_LOCK_KEY ")", "taking the schema lock", &r) !=
	    STORE_OK)
		goto fail;
	PQclear(r);
	if (read_version(s, &version) != STORE_OK)
		goto fail;
	*from = version;
	if (version > SCHEMA_VERSION) {
		log_error("store: the PostgreSQL database at %s has schema version %d; this parley knows up "
		          "to %d (a newer parley migrated it): refusing it", s->where, version, SCHEMA_VERSION);
		goto out;
	}
	if (version == SCHEMA_VERSION) {
		if (commit(s) != STORE_OK)
			goto fail;
		rc = 0;
		goto out;
	}
	if (version == 0)
		log_info("store: creating the Parley schema (version %d) in the PostgreSQL database at %s",
		         SCHEMA_VERSION, s->where);
	else
		log_info("store: migrating the PostgreSQL database at %s from schema version %d to %d", s->where,
		         version, SCHEMA_VERSION);
	if (version == 0 &&
	    exec_sql(s, "CREATE TABLE IF NOT EXISTS parley_meta(key text PRIMARY KEY, value bigint NOT NULL)",
	             "creating parley_meta") != STORE_OK)
		goto fail;
	for (v = version; v < SCHEMA_VERSION; v++) {
		char what[64];
		snprintf(what, sizeof what, "the step from version %d to %d", v, v + 1);
		if (exec_sql(s, migrations[v], what) != STORE_OK)
			goto fail;
	}
	snprintf(sql, sizeof sql,
	         "INSERT INTO parley_meta(key, value) VALUES('schema_version', %d) "
	         "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
	         SCHEMA_VERSION);
	if (exec_sql(s, sql, "recording the schema version") != STORE_OK || commit(s) != STORE_OK)
		goto fail;
	rc = 0;
	goto out;
fail:
	log_error("store: cannot bring the Parley schema of the PostgreSQL database at %s to version %d: %s",
	          s->where, SCHEMA_VERSION, s->err);
out:
	pg_close(&s->base);
	return rc;
}

static void pg_release(store_claim_t *claim)
{
	free(claim);
}

/* Any number of nodes serve one database: the claim holds nothing but
 * the schema's being up to date when it returns. */
static store_claim_t *pg_claim(const char *location)
{
	store_claim_t *c;
	int from;

	if (schema_up(location, &from) < 0)
		return NULL;
	if (!(c = calloc(1, sizeof *c)))
		return NULL;
	c->backend = &store_pg_backend;
	return c;
}

static int pg_migrate(const char *location, int *from, int *to)
{
	if (schema_up(location, from) < 0)
		return -1;
	*to = SCHEMA_VERSION;
	return 0;
}

const store_backend_t store_pg_backend = {
	.name = "PostgreSQL",
	.accepts = pg_accepts,
	.open = pg_open,
	.claim = pg_claim,
	.release = pg_release,
	.migrate = pg_migrate,
	.memory_bytes = NULL,
	/* Batches of different conversations take different row locks and
	 * commit side by side. Two measured best on a 2-core machine running
	 * its own load (docs/benchmarks.md); more only add context switches
	 * there, and a larger server may want more (--store-writers). */
	.writers = PG_WRITERS,
};
