/* store_sqlite.c - the embedded store backend: one SQLite database file in
 * the data directory, in WAL mode with synchronous=FULL, so a commit is on
 * disk when it returns and readers never block the writer.
 *
 * Each thread opens its own handle (connection) with its own prepared
 * statements. The message hot path (store_apply) is called only by the
 * group-commit writer, which hands it a whole batch per transaction; the
 * rarer writes of the HTTP API (users, devices, direct conversations) take
 * SQLite's write lock briefly from the worker threads, waiting for it with a
 * busy timeout. */
#include "store_sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "log.h"

#define SCHEMA_VERSION 7
#define SCHEMA_VERSION_TEXT "7" /* the same, for SQL text */

/* The columns of a message row as read_message takes them, from messages
 * m and its reply's target q (LEFT JOINed with MSG_QUOTE, or NULLs). */
#define MSG_COLS                                                                              \
	"m.id, m.seq, m.sender, m.cmid, m.body, m.ts, m.kind, m.target, m.edited_at, m.deleted, " \
	"m.state_seq, m.reactions, q.sender, q.body, q.deleted"
/* A reply's target, when it is after the reader's joined_seq (joined). */
#define MSG_QUOTE(joined)                                                                  \
	" LEFT JOIN messages q ON m.kind = 0 AND m.target > 0 AND q.conv_id = m.conv_id AND " \
	"q.seq = m.target AND q.seq > " joined " "

enum {
	Q_USER_INSERT,
	Q_USER_BY_NAME,
	Q_USER_BY_ID,
	Q_DEVICE_INSERT,
	Q_DEVICE_BY_TOKEN,
	Q_DEVICE_DELETE,
	Q_DEVICE_COUNT,
	Q_DEVICE_OLDEST,
	Q_DIRECT_FIND,
	Q_CONV_INSERT,
	Q_MEMBER_INSERT,
	Q_MEMBER_CONV,     /* see load_membership */
	Q_MEMBERS_OF,
	Q_ADMINS_OF,
	Q_RECEIPT_MEMBERS,
	Q_USER_EXISTS,
	Q_COUNT_ADD,
	Q_MEMBER_LIST,
	Q_MEMBER_VERSION,
	Q_MEMBER_DELETE,
	Q_ADMIN_COUNT,
	Q_PROMOTE,
	Q_READ_ONLY_SET,
	Q_WATERMARKS,
	Q_WATCHABLE,
	Q_LAST_SEEN_SET,
	Q_EXPIRE_MARKS,
	Q_SENDERS,
	Q_READ_COUNT,
	Q_UNREAD_TOTAL,
	Q_CONV_LIST,
	Q_MESSAGE_AT,
	Q_TARGET,
	Q_LAST_JOIN,
	Q_EDIT_APPLY,
	Q_DELETE_APPLY,
	Q_DELETE_EDITS,
	Q_DELETE_REACTIONS,
	Q_REACTION_PUT,
	Q_REACTION_DROP,
	Q_REACTIONS_SYNC,
	Q_UNREAD,
	Q_HISTORY,
	Q_REPLAY,
	Q_HEADS,
	Q_SEND_FIND,
	Q_SEQ_NEXT,
	Q_MESSAGE_INSERT,
	Q_READ_SET,
	Q_DELIVERED_SET,
	Q_MARK_INSERT,
	Q_MARK_AT,
	Q_DEVICE_TOUCH,
	Q_DEVICES,
	Q_PUSH_TAKEOVER,
	Q_PUSH_PUT,
	Q_PUSH_LIST,
	Q_PUSH_DELETE,
	Q_KEY_GET,
	Q_KEY_ADD,
	Q_USER_CONVS,
	Q_USER_CONVS_ADD,
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
	Q_FTS_INDEX,
	Q_FTS_DEQUEUE,
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
	Q_WROTE_SET,
	Q_OUTBOX_INSERT,
	Q_OUTBOX_TAKE,
	Q_OUTBOX_MARK,
	Q_OUTBOX_DELETE,
	Q_BEGIN,
	Q_COMMIT,
	Q_ROLLBACK,
	Q_COUNT
};

static const char *const queries[Q_COUNT] = {
	[Q_USER_INSERT] = "INSERT INTO users(username, pwhash, created_at) VALUES(?1, ?2, ?3)",
	[Q_USER_BY_NAME] = "SELECT id, pwhash FROM users WHERE username = ?1",
	[Q_USER_BY_ID] = "SELECT username FROM users WHERE id = ?1",
	[Q_DEVICE_INSERT] = "INSERT INTO devices(user_id, name, token_hash, created_at, last_used) "
	                    "VALUES(?1, ?2, ?3, ?4, ?4)",
	[Q_DEVICE_BY_TOKEN] = "SELECT user_id, id, last_used FROM devices WHERE token_hash = ?1",
	[Q_DEVICE_DELETE] = "DELETE FROM devices WHERE id = ?1 AND user_id = ?2",
	[Q_DEVICE_COUNT] = "SELECT count(*) FROM devices WHERE user_id = ?1",
	[Q_DEVICE_OLDEST] = "SELECT min(id) FROM devices WHERE user_id = ?1",
	[Q_DIRECT_FIND] = "SELECT id FROM conversations WHERE direct_key = ?1",
	[Q_CONV_INSERT] = "INSERT INTO conversations(kind, title, direct_key, created_by, created_at, activity) "
	                  "VALUES(?1, ?2, ?3, ?4, ?5, (?5 - 1704067200000) << 22)",
	/* A new member's watermarks start where it joined: what came before is
	 * neither unread nor visible to it. */
	[Q_MEMBER_INSERT] = "INSERT INTO members(conv_id, user_id, role, joined_at, joined_seq, delivered_seq, "
	                    "read_seq) VALUES(?1, ?2, ?3, ?4, ?5, ?5, ?5)",
	[Q_MEMBER_CONV] = "SELECT c.kind, c.title, c.last_seq, c.member_count, m.read_seq, m.delivered_seq, "
	                  "m.joined_seq, m.role, c.member_version, m.wrote, m.blocks, c.activity, m.muted, m.pushed_seq "
	                  "FROM members m JOIN conversations c ON c.id = m.conv_id "
	                  "WHERE m.conv_id = ?1 AND m.user_id = ?2",
	[Q_MEMBERS_OF] = "SELECT user_id FROM members WHERE conv_id = ?1 ORDER BY user_id",
	[Q_ADMINS_OF] = "SELECT user_id FROM members WHERE conv_id = ?1 AND role = 1 ORDER BY user_id",
	[Q_RECEIPT_MEMBERS] = "SELECT user_id FROM members WHERE conv_id = ?1 AND joined_seq < ?2 "
	                      "ORDER BY user_id",
	[Q_USER_EXISTS] = "SELECT 1 FROM users WHERE id = ?1",
	/* Every membership change bumps the version, so a cached member list
	 * can tell whether it still holds for a message. */
	[Q_COUNT_ADD] = "UPDATE conversations SET member_count = member_count + ?2, "
	                "member_version = member_version + 1 WHERE id = ?1",
	[Q_MEMBER_LIST] = "SELECT user_id, joined_seq FROM members WHERE conv_id = ?1",
	[Q_MEMBER_VERSION] = "SELECT member_version FROM conversations WHERE id = ?1",
	[Q_MEMBER_DELETE] = "DELETE FROM members WHERE conv_id = ?1 AND user_id = ?2",
	[Q_ADMIN_COUNT] = "SELECT count(*) FROM members WHERE conv_id = ?1 AND role = 1",
	/* In slices, so the write lock is never held for long. */
	[Q_EXPIRE_MARKS] = "DELETE FROM receipt_marks WHERE (conv_id, user_id, state, seq) IN "
	                   "(SELECT conv_id, user_id, state, seq FROM receipt_marks WHERE ts < ?1 LIMIT ?2)",
	/* Presence is for contacts: ?2 has written to ?1 in their direct
	 * chat (?3, its key) and has not blocked ?1. */
	[Q_WATCHABLE] = "SELECT coalesce(u.last_seen, 0) FROM users u WHERE u.id = ?2 AND EXISTS "
	                "(SELECT 1 FROM conversations c JOIN members m ON m.conv_id = c.id "
	                "WHERE c.direct_key = ?3 AND m.user_id = ?2 AND m.wrote = 1) AND NOT EXISTS "
	                "(SELECT 1 FROM blocks WHERE user_id = ?2 AND blocked_id = ?1)",
	[Q_SHARES] = "SELECT 1 FROM members a JOIN members b ON b.conv_id = a.conv_id "
	             "WHERE a.user_id = ?1 AND b.user_id = ?2 LIMIT 1",
	[Q_DIRECT_STATE] = "SELECT c.id, coalesce((SELECT wrote FROM members WHERE conv_id = c.id AND user_id = ?1), 0), "
	                   "coalesce((SELECT wrote FROM members WHERE conv_id = c.id AND user_id = ?2), 0) "
	                   "FROM conversations c WHERE c.direct_key = ?3",
	[Q_BLOCK_STATE] = "SELECT EXISTS(SELECT 1 FROM users WHERE id = ?2), "
	                  "EXISTS(SELECT 1 FROM blocks WHERE user_id = ?1 AND blocked_id = ?2), "
	                  "EXISTS(SELECT 1 FROM blocks WHERE user_id = ?2 AND blocked_id = ?1)",
	[Q_SETTINGS] = "SELECT group_adds, strangers_exempt, push_previews FROM users WHERE id = ?1",
	[Q_SET_GROUP_ADDS] = "UPDATE users SET group_adds = ?2 WHERE id = ?1",
	[Q_SET_EXEMPT] = "UPDATE users SET strangers_exempt = ?2 WHERE id = ?1",
	[Q_SET_PREVIEWS] = "UPDATE users SET push_previews = ?2 WHERE id = ?1",
	[Q_SET_MUTED] = "UPDATE members SET muted = ?3 WHERE conv_id = ?1 AND user_id = ?2",
	[Q_PUSH_MARK] = "UPDATE members SET pushed_seq = max(pushed_seq, ?3) WHERE conv_id = ?1 AND user_id = ?2",
	/* From the newest messages (their ids are times) to the members they
	 * have not reached. */
	[Q_PUSH_PENDING] = "SELECT m.conv_id, m.user_id, c.kind, l.seq, l.sender, l.ts, l.body FROM messages l JOIN conversations c ON c.id = l.conv_id AND c.last_seq = l.seq JOIN members m ON m.conv_id = l.conv_id WHERE l.id > ?1 AND l.kind = 0 AND m.user_id <> l.sender AND m.muted = 0 AND m.joined_seq < l.seq AND m.delivered_seq < l.seq AND m.read_seq < l.seq AND m.pushed_seq < l.seq AND EXISTS(SELECT 1 FROM push_targets t WHERE t.user_id = m.user_id) ORDER BY l.id, m.user_id LIMIT ?2",
	/* The index's matches, each joined to the caller's membership of its
	 * conversation (none before it joined); ?2 is FTS5 syntax made from
	 * words only (store_search). */
	[Q_SEARCH] = "SELECT " MSG_COLS ", m.conv_id, "
	             "snippet(messages_fts, 0, char(2), char(3), '…', 16) FROM messages_fts "
	             "JOIN messages m ON m.id = messages_fts.rowid "
	             "JOIN members b ON b.conv_id = m.conv_id AND b.user_id = ?1 AND m.seq > b.joined_seq "
	             MSG_QUOTE("b.joined_seq")
	             "WHERE messages_fts MATCH ?2 AND (?3 = 0 OR m.conv_id = ?3) "
	             "ORDER BY bm25(messages_fts), m.id DESC LIMIT ?4 OFFSET ?5",
	/* The oldest pending messages into the index, then out of the queue:
	 * the same rows, in one transaction (fts_index). */
	[Q_FTS_INDEX] = "INSERT INTO messages_fts(rowid, body) SELECT m.id, m.body FROM "
	                "(SELECT id FROM messages_fts_pending ORDER BY id LIMIT ?1) p JOIN messages m ON m.id = p.id",
	[Q_FTS_DEQUEUE] = "DELETE FROM messages_fts_pending WHERE id IN "
	                  "(SELECT id FROM messages_fts_pending ORDER BY id LIMIT ?1)",
	[Q_BLOCK_INSERT] = "INSERT INTO blocks(user_id, blocked_id, created_at) VALUES(?1, ?2, ?3)",
	[Q_BLOCK_DELETE] = "DELETE FROM blocks WHERE user_id = ?1 AND blocked_id = ?2",
	/* A direct chat's member row carries its blocks (1: this member has
	 * blocked the other, 2: the other has blocked it), recomputed from
	 * the blocks table, so that a send checks them in the row it reads
	 * anyway. */
	[Q_MEMBER_BLOCKS_SYNC] = "UPDATE members SET blocks = "
	                         "EXISTS(SELECT 1 FROM blocks WHERE user_id = ?2 AND blocked_id = ?3) | "
	                         "(EXISTS(SELECT 1 FROM blocks WHERE user_id = ?3 AND blocked_id = ?2) << 1) "
	                         "WHERE conv_id = ?1 AND user_id = ?2",
	[Q_BLOCKS] = "SELECT blocked_id, created_at FROM blocks WHERE user_id = ?1 AND blocked_id > ?2 "
	             "ORDER BY blocked_id LIMIT ?3",
	/* From the user's own blocks, both ways (a few rows), each checked
	 * against the membership: not two lookups per member. */
	[Q_BLOCKED_IN_CONV] = "SELECT blocked_id FROM blocks WHERE user_id = ?1 AND blocked_id IN "
	                      "(SELECT user_id FROM members WHERE conv_id = ?2) UNION "
	                      "SELECT user_id FROM blocks WHERE blocked_id = ?1 AND user_id IN "
	                      "(SELECT user_id FROM members WHERE conv_id = ?2)",
	/* Only blocks by people it reached first count against a user:
	 * nobody can shrink another's budget with puppets that were never
	 * written to. */
	[Q_BLOCKS_RECEIVED] = "SELECT count(*) FROM blocks b WHERE b.blocked_id = ?1 AND b.created_at >= ?2 "
	                      "AND EXISTS (SELECT 1 FROM first_contacts f WHERE f.user_id = ?1 AND "
	                      "f.target_id = b.user_id)",
	[Q_FIRST_COUNT] = "SELECT count(*) FROM first_contacts WHERE user_id = ?1 AND ts >= ?2",
	[Q_FIRST_AT] = "SELECT ts FROM first_contacts WHERE user_id = ?1 AND ts >= ?2 ORDER BY ts LIMIT 1 OFFSET ?3",
	[Q_FIRST_INSERT] = "INSERT INTO first_contacts(user_id, target_id, ts) VALUES(?1, ?2, ?3)",
	[Q_FIRST_EXPIRE] = "DELETE FROM first_contacts WHERE rowid IN "
	                   "(SELECT rowid FROM first_contacts WHERE ts < ?1 LIMIT ?2)",
	[Q_WROTE_SET] = "UPDATE members SET wrote = 1 WHERE conv_id = ?1 AND user_id = ?2",
	[Q_DEVICE_TOUCH] = "UPDATE devices SET last_used = ?2 WHERE id = ?1",
	[Q_DEVICES] = "SELECT id, name, created_at, last_used FROM devices WHERE user_id = ?1 AND last_used >= ?2 "
	              "ORDER BY id LIMIT 1000",
	/* The address leaves another device, if this one is the user's. */
	[Q_PUSH_TAKEOVER] = "DELETE FROM push_targets WHERE platform = ?3 AND address = ?4 AND device_id <> ?2 "
	                    "AND EXISTS (SELECT 1 FROM devices WHERE id = ?2 AND user_id = ?1)",
	[Q_PUSH_PUT] = "INSERT INTO push_targets(user_id, device_id, platform, address, topic, sandbox, p256dh, auth, "
	               "created_at) SELECT user_id, id, ?3, ?4, ?5, ?6, ?7, ?8, ?9 FROM devices WHERE id = ?2 AND "
	               "user_id = ?1 ON CONFLICT(device_id, platform) DO UPDATE SET address = excluded.address, "
	               "topic = excluded.topic, sandbox = excluded.sandbox, p256dh = excluded.p256dh, "
	               "auth = excluded.auth, created_at = excluded.created_at RETURNING id",
	[Q_PUSH_LIST] = "SELECT id, user_id, device_id, platform, address, topic, sandbox, p256dh, auth, created_at "
	                "FROM push_targets WHERE user_id = ?1 ORDER BY id LIMIT 1000",
	[Q_PUSH_DELETE] = "DELETE FROM push_targets WHERE id = ?2 AND user_id = ?1",
	[Q_KEY_GET] = "SELECT value FROM server_keys WHERE name = ?1",
	[Q_KEY_ADD] = "INSERT INTO server_keys(name, value) VALUES(?1, ?2) ON CONFLICT(name) DO NOTHING",
	[Q_USER_CONVS] = "SELECT conv_count FROM users WHERE id = ?1",
	[Q_USER_CONVS_ADD] = "UPDATE users SET conv_count = conv_count + ?2 WHERE id = ?1",
	[Q_LAST_SEEN_SET] = "UPDATE users SET last_seen = max(coalesce(last_seen, 0), ?2) WHERE id = ?1",
	[Q_WATERMARKS] = "SELECT user_id, joined_seq, delivered_seq, read_seq FROM members WHERE conv_id = ?1",
	/* Messages only: an event has no receipts of its own. */
	[Q_SENDERS] = "SELECT seq, sender FROM messages WHERE conv_id = ?1 AND seq >= ?2 AND seq <= ?3 "
	              "AND kind = 0 ORDER BY seq",
	[Q_READ_ONLY_SET] = "UPDATE members SET read_seq = ?3 WHERE conv_id = ?1 AND user_id = ?2",
	/* A user's unread messages in every conversation, counted up to ?2. */
	[Q_UNREAD_TOTAL] = "SELECT count(*) FROM (SELECT 1 FROM members m JOIN messages g ON g.conv_id = m.conv_id "
	                   "AND g.seq > m.read_seq AND g.seq > m.joined_seq WHERE m.user_id = ?1 AND g.sender <> ?1 "
	                   "AND g.kind = 0 "
	                   "LIMIT ?2)",
	[Q_READ_COUNT] = "SELECT count(*) FROM members WHERE conv_id = ?1 AND user_id <> "
	                 "(SELECT sender FROM messages WHERE conv_id = ?1 AND seq = ?2) "
	                 "AND joined_seq < ?2 AND read_seq >= ?2",
	[Q_PROMOTE] = "UPDATE members SET role = 1 WHERE conv_id = ?1 AND user_id = "
	              "(SELECT user_id FROM members WHERE conv_id = ?1 ORDER BY joined_at, user_id LIMIT 1) "
	              "RETURNING user_id",
	[Q_CONV_LIST] = "SELECT c.id FROM members m JOIN conversations c ON c.id = m.conv_id "
	                "WHERE m.user_id = ?1 AND (c.activity < ?2 OR (c.activity = ?2 AND c.id < ?3)) "
	                "ORDER BY c.activity DESC, c.id DESC LIMIT ?4",
	/* The newest message (not event) the reader (joined at ?2) may see. */
	[Q_MESSAGE_AT] = "SELECT " MSG_COLS " FROM messages m" MSG_QUOTE("?2")
	                 "WHERE m.conv_id = ?1 AND m.seq > ?2 AND m.kind = 0 ORDER BY m.seq DESC LIMIT 1",
	[Q_UNREAD] = "SELECT count(*) FROM messages WHERE conv_id = ?1 AND seq > ?2 AND sender <> ?3 AND kind = 0",
	[Q_HISTORY] = "SELECT " MSG_COLS " FROM messages m" MSG_QUOTE("?4")
	              "WHERE m.conv_id = ?1 AND m.seq < ?2 AND m.seq > ?4 ORDER BY m.seq DESC LIMIT ?3",
	[Q_REPLAY] = "SELECT " MSG_COLS " FROM messages m" MSG_QUOTE("?5")
	             "WHERE m.conv_id = ?1 AND m.seq > ?2 AND m.seq <= ?3 ORDER BY m.seq LIMIT ?4",
	[Q_HEADS] = "SELECT c.id, c.last_seq FROM members m JOIN conversations c ON c.id = m.conv_id "
	            "WHERE m.user_id = ?1 ORDER BY c.id",
	[Q_SEND_FIND] = "SELECT id, seq, ts FROM messages WHERE conv_id = ?1 AND sender = ?2 AND cmid = ?3",
	[Q_SEQ_NEXT] = "UPDATE conversations SET last_seq = last_seq + 1, activity = ?2 WHERE id = ?1 "
	               "RETURNING last_seq",
	[Q_MESSAGE_INSERT] = "INSERT INTO messages(id, conv_id, seq, sender, cmid, body, ts, kind, target) "
	                     "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	/* An event's target as the sender sees it: ?3 is its joined_seq. */
	[Q_TARGET] = "SELECT sender, ts, kind, deleted FROM messages WHERE conv_id = ?1 AND seq = ?2 AND seq > ?3",
	[Q_LAST_JOIN] = "SELECT max(joined_seq) FROM members WHERE conv_id = ?1",
	[Q_EDIT_APPLY] = "UPDATE messages SET body = ?3, edited_at = ?4, state_seq = ?5 "
	                 "WHERE conv_id = ?1 AND seq = ?2",
	/* A delete takes the text from the message and from its edits; the
	 * rows stay, so seqs stay gapless. */
	[Q_DELETE_APPLY] = "UPDATE messages SET body = '', deleted = 1, reactions = NULL, state_seq = ?3 "
	                   "WHERE conv_id = ?1 AND seq = ?2",
	[Q_DELETE_EDITS] = "UPDATE messages SET body = '' WHERE conv_id = ?1 AND target = ?2 AND kind = 1",
	[Q_DELETE_REACTIONS] = "DELETE FROM reactions WHERE conv_id = ?1 AND msg_seq = ?2",
	[Q_REACTION_PUT] = "INSERT INTO reactions(conv_id, msg_seq, user_id, emoji, seq) VALUES(?1, ?2, ?3, ?4, ?5) "
	                   "ON CONFLICT(conv_id, msg_seq, user_id) DO UPDATE SET emoji = excluded.emoji, seq = excluded.seq",
	[Q_REACTION_DROP] = "DELETE FROM reactions WHERE conv_id = ?1 AND msg_seq = ?2 AND user_id = ?3",
	/* The message's reactions as the JSON its readers get, kept in its
	 * row so that no read of history aggregates them: each emoji once, in
	 * the order it first came, with who gave it. */
	[Q_REACTIONS_SYNC] = "UPDATE messages SET state_seq = ?3, reactions = (SELECT CASE WHEN count(*) = 0 THEN NULL "
	                     "ELSE json_group_array(json_object('emoji', emoji, 'users', json(users))) END FROM "
	                     "(SELECT emoji, json_group_array(user_id) AS users, min(seq) AS first FROM "
	                     "(SELECT emoji, user_id, seq FROM reactions WHERE conv_id = ?1 AND msg_seq = ?2 "
	                     "ORDER BY user_id) GROUP BY emoji ORDER BY first)) WHERE conv_id = ?1 AND seq = ?2",
	[Q_READ_SET] = "UPDATE members SET read_seq = ?3, delivered_seq = max(delivered_seq, ?3) "
	               "WHERE conv_id = ?1 AND user_id = ?2",
	[Q_DELIVERED_SET] = "UPDATE members SET delivered_seq = ?3 WHERE conv_id = ?1 AND user_id = ?2",
	[Q_MARK_INSERT] = "INSERT OR REPLACE INTO receipt_marks(conv_id, user_id, state, seq, ts) "
	                  "VALUES(?1, ?2, ?3, ?4, ?5)",
	/* Watermarks only rise, so the first mark at or above seq is the moment
	 * the watermark passed it. A read implies delivery: both states count
	 * for delivered_at (?3 = 1), only reads for read_at (?3 = 2). */
	[Q_MARK_AT] = "SELECT min(ts) FROM (SELECT ts FROM receipt_marks WHERE conv_id = ?1 AND user_id = ?2 "
	              "AND state = 1 AND seq >= ?4 ORDER BY seq LIMIT 1) "
	              "UNION ALL SELECT min(ts) FROM (SELECT ts FROM receipt_marks WHERE conv_id = ?1 "
	              "AND user_id = ?2 AND state = 2 AND seq >= ?4 ORDER BY seq LIMIT 1) ",
	[Q_OUTBOX_INSERT] = "INSERT INTO outbox(conv_id, kind, seq, user_id, msg_id, created_at, taken_at) "
	                    "VALUES(?1, ?2, ?3, ?4, ?5, ?6, 0)",
	/* One writer at a time: the take is a read then a mark in one
	 * transaction, and nobody else can take between them. */
	/* A message as it went live: no quote (live frames name a reply's
	 * target by seq; each reader has its own copy of it). */
	[Q_OUTBOX_TAKE] = "SELECT o.id, o.conv_id, o.kind, o.seq, o.user_id, o.created_at, "
	                  "m.id, m.seq, m.sender, m.cmid, m.body, m.ts, m.kind, m.target, m.edited_at, "
	                  "m.deleted, m.state_seq, m.reactions, NULL, NULL, NULL FROM outbox o "
	                  "LEFT JOIN messages m ON m.id = o.msg_id "
	                  "WHERE o.created_at <= ?1 AND o.taken_at <= ?1 ORDER BY o.id LIMIT ?2",
	[Q_OUTBOX_MARK] = "UPDATE outbox SET taken_at = ?2 WHERE id = ?1",
	[Q_OUTBOX_DELETE] = "DELETE FROM outbox WHERE id = ?1",
	[Q_BEGIN] = "BEGIN IMMEDIATE",
	[Q_COMMIT] = "COMMIT",
	[Q_ROLLBACK] = "ROLLBACK",
};

/* Version 2's new tables: who blocked whom, and each time someone reached
 * a person who had never written to it (the first-contact budget). */
#define BLOCKS_SCHEMA                                                      \
	"CREATE TABLE IF NOT EXISTS blocks("                               \
	"  user_id INTEGER NOT NULL,"                                      \
	"  blocked_id INTEGER NOT NULL,"                                   \
	"  created_at INTEGER NOT NULL,"                                   \
	"  PRIMARY KEY(user_id, blocked_id)) WITHOUT ROWID;"               \
	"CREATE INDEX IF NOT EXISTS blocks_received ON blocks(blocked_id, created_at);" \
	"CREATE TABLE IF NOT EXISTS first_contacts("                       \
	"  user_id INTEGER NOT NULL,"                                      \
	"  target_id INTEGER NOT NULL,"                                    \
	"  ts INTEGER NOT NULL);"                                          \
	"CREATE INDEX IF NOT EXISTS first_contacts_by_user ON first_contacts(user_id, ts);" \
	"CREATE INDEX IF NOT EXISTS first_contacts_by_pair ON first_contacts(user_id, target_id);" \
	"CREATE INDEX IF NOT EXISTS first_contacts_by_ts ON first_contacts(ts);"

/* Version 3's: the outbox (store_set_outbox), what the log is still to be
 * told. A message's row names the messages row rather than copy its body. */
#define OUTBOX_SCHEMA                                                      \
	"CREATE TABLE IF NOT EXISTS outbox("                               \
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"                          \
	"  conv_id INTEGER NOT NULL,"                                      \
	"  kind INTEGER NOT NULL,"                                         \
	"  seq INTEGER NOT NULL,"                                          \
	"  user_id INTEGER NOT NULL,"                                      \
	"  msg_id INTEGER,"                                                \
	"  created_at INTEGER NOT NULL,"                                   \
	"  taken_at INTEGER NOT NULL DEFAULT 0);"

/* Version 4: where devices are woken (one target per device and
 * platform, an address on one device at most; gone with the device), and
 * the server's own keys. */
#define PUSH_SCHEMA                                                        \
	"CREATE TABLE IF NOT EXISTS push_targets("                         \
	"  id INTEGER PRIMARY KEY,"                                        \
	"  user_id INTEGER NOT NULL REFERENCES users(id),"                 \
	"  device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE," \
	"  platform INTEGER NOT NULL,"                                     \
	"  address TEXT NOT NULL,"                                         \
	"  topic TEXT NOT NULL DEFAULT '',"                                \
	"  sandbox INTEGER NOT NULL DEFAULT 0,"                            \
	"  p256dh TEXT NOT NULL DEFAULT '',"                               \
	"  auth TEXT NOT NULL DEFAULT '',"                                 \
	"  created_at INTEGER NOT NULL,"                                   \
	"  UNIQUE(device_id, platform),"                                   \
	"  UNIQUE(platform, address));"                                    \
	"CREATE INDEX IF NOT EXISTS push_targets_by_user ON push_targets(user_id);" \
	"CREATE TABLE IF NOT EXISTS server_keys("                          \
	"  name TEXT PRIMARY KEY,"                                         \
	"  value TEXT NOT NULL);"

/* From version 1: the new columns, filled from what the store already
 * holds (who has written where, how many conversations each user is in). */
static const char migrate_1_to_2[] =
	"ALTER TABLE users ADD COLUMN group_adds INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE users ADD COLUMN strangers_exempt INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE users ADD COLUMN conv_count INTEGER NOT NULL DEFAULT 0;"
	"UPDATE users SET conv_count = (SELECT count(*) FROM members WHERE user_id = users.id);"
	"ALTER TABLE devices ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0;"
	"UPDATE devices SET last_used = created_at;"
	"ALTER TABLE members ADD COLUMN wrote INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE members ADD COLUMN blocks INTEGER NOT NULL DEFAULT 0;"
	"UPDATE members SET wrote = 1 WHERE EXISTS (SELECT 1 FROM messages "
	"  WHERE messages.conv_id = members.conv_id AND messages.sender = members.user_id);"
	BLOCKS_SCHEMA
	OUTBOX_SCHEMA
	PUSH_SCHEMA;

/* Version 6: the full-text index of message bodies (FTS5; words folded
 * to lower case, accents kept, as PostgreSQL's 'simple' configuration
 * does). Indexing a message in the commit that stores it (a trigger)
 * costs more than storing it: FTS5 writes a segment per transaction, and
 * group commits are small. So a stored message only enters
 * messages_fts_pending (a row of its id), and fts_index moves pending
 * messages into the index a few thousand at a time, every FTS_INDEX_EVERY
 * messages or FTS_INDEX_MS, and before a search (which so finds every
 * committed message). A message deleted or changed after it was indexed
 * leaves or changes the index in its own transaction; before, it only
 * leaves the queue (the index reads its body when it gets there). */
/* From version 7 the index's content is the view of messages (kind 0),
 * not the table, whose other rows are events: a rebuild or an integrity
 * check then sees exactly what is indexed. */
#define FTS_SCHEMA                                                                                        \
	"CREATE VIEW IF NOT EXISTS messages_text AS SELECT id, body FROM messages WHERE kind = 0;"         \
	"CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(body, content='messages_text', "        \
	"  content_rowid='id', tokenize='unicode61 remove_diacritics 0');"                                  \
	"CREATE TABLE IF NOT EXISTS messages_fts_pending(id INTEGER PRIMARY KEY);"                          \
	FTS_TRIGGERS

/* Only messages (kind 0) are indexed: an edit's row repeats text its
 * message now holds, and a reaction's is an emoji. (Version 6's triggers
 * had no such test; there were no other rows then.) */
#define FTS_TRIGGERS                                                                                      \
	"CREATE TRIGGER IF NOT EXISTS messages_fts_add AFTER INSERT ON messages WHEN new.kind = 0 BEGIN "   \
	"  INSERT INTO messages_fts_pending(id) VALUES(new.id); END;"                                       \
	"CREATE TRIGGER IF NOT EXISTS messages_fts_del AFTER DELETE ON messages WHEN old.kind = 0 BEGIN "   \
	"  INSERT INTO messages_fts(messages_fts, rowid, body) SELECT 'delete', old.id, old.body "          \
	"    WHERE NOT EXISTS (SELECT 1 FROM messages_fts_pending WHERE id = old.id);"                      \
	"  DELETE FROM messages_fts_pending WHERE id = old.id; END;"                                        \
	"CREATE TRIGGER IF NOT EXISTS messages_fts_upd AFTER UPDATE OF body ON messages "                   \
	"  WHEN old.kind = 0 AND NOT EXISTS (SELECT 1 FROM messages_fts_pending WHERE id = old.id) BEGIN "  \
	"  INSERT INTO messages_fts(messages_fts, rowid, body) VALUES('delete', old.id, old.body);"         \
	"  INSERT INTO messages_fts(rowid, body) VALUES(new.id, new.body); END;"

/* Version 7: edits, deletes, reactions and replies (store.h's
 * STORE_MSG_*): what a row is, the message it is about, the state events
 * leave on a message, and who reacted with what. */
#define EVENTS_COLUMNS                                                     \
	"  kind INTEGER NOT NULL DEFAULT 0,"                               \
	"  target INTEGER NOT NULL DEFAULT 0,"                             \
	"  edited_at INTEGER NOT NULL DEFAULT 0,"                          \
	"  deleted INTEGER NOT NULL DEFAULT 0,"                            \
	"  state_seq INTEGER NOT NULL DEFAULT 0,"                          \
	"  reactions TEXT,"
#define REACTIONS_SCHEMA                                                   \
	"CREATE TABLE IF NOT EXISTS reactions("                            \
	"  conv_id INTEGER NOT NULL,"                                      \
	"  msg_seq INTEGER NOT NULL,"                                      \
	"  user_id INTEGER NOT NULL,"                                      \
	"  emoji TEXT NOT NULL,"                                           \
	"  seq INTEGER NOT NULL,"                                          \
	"  PRIMARY KEY(conv_id, msg_seq, user_id)) WITHOUT ROWID;"

/* From versions 1 to 6: the columns, then the index (version 6's, over
 * the table, is made again over the view), built from the messages
 * there are. */
static const char migrate_to_7[] =
	"ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE messages ADD COLUMN target INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE messages ADD COLUMN edited_at INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE messages ADD COLUMN state_seq INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE messages ADD COLUMN reactions TEXT;"
	REACTIONS_SCHEMA
	"DROP TRIGGER IF EXISTS messages_fts_add;"
	"DROP TRIGGER IF EXISTS messages_fts_del;"
	"DROP TRIGGER IF EXISTS messages_fts_upd;"
	"DROP TABLE IF EXISTS messages_fts;"
	"DROP TABLE IF EXISTS messages_fts_pending;"
	FTS_SCHEMA
	"INSERT INTO messages_fts(messages_fts) VALUES('rebuild');";


/* Version 5: muted conversations, whether pushes show the text, and
 * what was pushed. From versions 1 to 4, after the steps before it. */
static const char migrate_to_5[] =
	"ALTER TABLE users ADD COLUMN push_previews INTEGER NOT NULL DEFAULT 1;"
	"ALTER TABLE members ADD COLUMN muted INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE members ADD COLUMN pushed_seq INTEGER NOT NULL DEFAULT 0;";

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS meta("
	"  key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS users("
	"  id INTEGER PRIMARY KEY,"
	"  username TEXT NOT NULL UNIQUE,"
	"  pwhash TEXT NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  last_seen INTEGER,"
	"  group_adds INTEGER NOT NULL DEFAULT 0,"       /* STORE_ADDS_* */
	"  strangers_exempt INTEGER NOT NULL DEFAULT 0,"
	"  conv_count INTEGER NOT NULL DEFAULT 0,"
	"  push_previews INTEGER NOT NULL DEFAULT 1);"
	"CREATE TABLE IF NOT EXISTS devices("
	"  id INTEGER PRIMARY KEY,"
	"  user_id INTEGER NOT NULL REFERENCES users(id),"
	"  name TEXT NOT NULL,"
	"  token_hash BLOB NOT NULL UNIQUE,"
	"  created_at INTEGER NOT NULL,"
	"  last_used INTEGER NOT NULL);"
	"CREATE INDEX IF NOT EXISTS devices_by_user ON devices(user_id);"
	"CREATE TABLE IF NOT EXISTS conversations("
	"  id INTEGER PRIMARY KEY,"
	"  kind INTEGER NOT NULL,"
	"  title TEXT,"
	"  direct_key TEXT UNIQUE,"      /* 'low:high' user ids of a direct chat */
	"  created_by INTEGER NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  last_seq INTEGER NOT NULL DEFAULT 0,"
	/* Kept here so the hot path learns a group's size from the row it
	 * reads anyway, not by counting 1,024 members. */
	"  member_count INTEGER NOT NULL DEFAULT 0,"
	"  member_version INTEGER NOT NULL DEFAULT 0,"
	/* Orders the conversation list: the snowflake id of the last message,
	 * or one made of the creation time. Ids strictly increase, so two
	 * sends in one millisecond still order. */
	"  activity INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS members("
	"  conv_id INTEGER NOT NULL,"
	"  user_id INTEGER NOT NULL,"
	"  role INTEGER NOT NULL DEFAULT 0,"         /* 1: admin */
	"  joined_at INTEGER NOT NULL,"
	"  delivered_seq INTEGER NOT NULL DEFAULT 0,"
	"  read_seq INTEGER NOT NULL DEFAULT 0,"
	"  joined_seq INTEGER NOT NULL DEFAULT 0,"  /* sees messages after this */
	"  wrote INTEGER NOT NULL DEFAULT 0,"       /* has sent a message here */
	"  blocks INTEGER NOT NULL DEFAULT 0,"      /* direct chats: see Q_MEMBER_BLOCKS_SYNC */
	"  muted INTEGER NOT NULL DEFAULT 0,"
	"  pushed_seq INTEGER NOT NULL DEFAULT 0," /* see store_push_mark */
	"  PRIMARY KEY(conv_id, user_id)) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS members_by_user ON members(user_id, conv_id);"
	/* The snowflake id is the rowid: rows go in roughly time order and the
	 * (conv_id, seq) index serves history and resume. */
	"CREATE TABLE IF NOT EXISTS messages("
	"  id INTEGER PRIMARY KEY,"
	"  conv_id INTEGER NOT NULL,"
	"  seq INTEGER NOT NULL,"
	"  sender INTEGER NOT NULL,"
	"  cmid TEXT NOT NULL,"
	"  body TEXT NOT NULL,"
	"  ts INTEGER NOT NULL,"
	EVENTS_COLUMNS
	"  UNIQUE(conv_id, seq),"
	"  UNIQUE(conv_id, sender, cmid));"
	/* One row per receipt frame that moved a watermark: what per-message
	 * delivered_at / read_at are derived from. */
	"CREATE TABLE IF NOT EXISTS receipt_marks("
	"  conv_id INTEGER NOT NULL,"
	"  user_id INTEGER NOT NULL,"
	"  state INTEGER NOT NULL,"
	"  seq INTEGER NOT NULL,"
	"  ts INTEGER NOT NULL,"
	"  PRIMARY KEY(conv_id, user_id, state, seq)) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS receipt_marks_by_ts ON receipt_marks(ts);"
	BLOCKS_SCHEMA
	OUTBOX_SCHEMA
	PUSH_SCHEMA
	REACTIONS_SCHEMA;

typedef struct sqlite_store {
	store_t base;
	sqlite3 *db;
	sqlite3_stmt *q[Q_COUNT];
	int outbox;             /* store_set_outbox */
	size_t unindexed;       /* messages this handle stored since its last fts_index */
	int64_t indexed_at;     /* when it last ran (the ops' now_ms) */
} sqlite_store_t;

static const store_vtab_t sqlite_vtab;

#define S(s) ((sqlite_store_t *)(s))

static int fail(sqlite_store_t *s, const char *what)
{
	log_error("store: %s: %s", what, sqlite3_errmsg(s->db));
	return STORE_ERROR;
}

/* Returns the statement reset and ready for binding. */
static sqlite3_stmt *q(sqlite_store_t *s, int which)
{
	sqlite3_stmt *st = s->q[which];

	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return st;
}

static char *dup_col(sqlite3_stmt *st, int col, size_t *len)
{
	const unsigned char *t = sqlite3_column_text(st, col);
	int n = sqlite3_column_bytes(st, col);
	char *r;

	if (!t)
		return NULL;
	r = malloc((size_t)n + 1);
	if (!r)
		return NULL;
	memcpy(r, t, (size_t)n);
	r[n] = 0;
	if (len)
		*len = (size_t)n;
	return r;
}

/* Reads a message row (id, seq, sender, cmid, body, ts) into m. */
/* A message from MSG_COLS, starting at column c. */
static int read_message_at(sqlite3_stmt *st, int c, int64_t conv, store_message_t *m)
{
	memset(m, 0, sizeof *m);
	m->conv = conv;
	m->id = sqlite3_column_int64(st, c);
	m->seq = sqlite3_column_int64(st, c + 1);
	m->from = sqlite3_column_int64(st, c + 2);
	m->cmid = dup_col(st, c + 3, NULL);
	m->body = dup_col(st, c + 4, &m->body_len);
	m->ts = sqlite3_column_int64(st, c + 5);
	m->kind = sqlite3_column_int(st, c + 6);
	m->target = sqlite3_column_int64(st, c + 7);
	m->edited_at = sqlite3_column_int64(st, c + 8);
	m->deleted = sqlite3_column_int(st, c + 9);
	m->state_seq = sqlite3_column_int64(st, c + 10);
	if (!m->cmid || !m->body)
		goto oom;
	if (sqlite3_column_type(st, c + 11) != SQLITE_NULL && !(m->reactions = dup_col(st, c + 11, NULL)))
		goto oom;
	if (sqlite3_column_type(st, c + 12) != SQLITE_NULL) {
		m->quote_from = sqlite3_column_int64(st, c + 12);
		if (!sqlite3_column_int(st, c + 14) && !(m->quote_body = dup_col(st, c + 13, &m->quote_len)))
			goto oom;
	}
	return STORE_OK;
oom:
	store_message_clear(m);
	return STORE_ERROR;
}

static int read_message(sqlite3_stmt *st, int64_t conv, store_message_t *m)
{
	return read_message_at(st, 0, conv, m);
}

static int exec(sqlite_store_t *s, int which)
{
	int rc = sqlite3_step(q(s, which));

	sqlite3_reset(s->q[which]);
	return rc == SQLITE_DONE ? STORE_OK : fail(s, queries[which]);
}

/* Every SQLite connection of the process together: page caches, schemas,
 * prepared statements. */
static int64_t sqlite_memory_bytes(void)
{
	return (int64_t)sqlite3_memory_used();
}

/* A location names the data directory, with or without "sqlite:". */
static const char *dir_of(const char *location)
{
	return strncmp(location, "sqlite:", 7) == 0 ? location + 7 : location;
}

/* Opens the database in data_dir, bringing its schema to SCHEMA_VERSION;
 * *from (when not NULL) gets the version it had (0: new). */
static store_t *sqlite_open_dir(const char *data_dir, int *from)
{
	sqlite_store_t *s = calloc(1, sizeof *s);
	char path[4096], *err = NULL;
	int i, version = 0;
	sqlite3_stmt *st;

	if (!s)
		return NULL;
	s->base.vt = &sqlite_vtab;
	if ((size_t)snprintf(path, sizeof path, "%s/parley.db", data_dir) >= sizeof path) {
		log_error("store: data directory path too long");
		free(s);
		return NULL;
	}
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	                    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		log_error("store: cannot open %s: %s", path,
		          s->db ? sqlite3_errmsg(s->db) : "out of memory");
		goto err;
	}
	sqlite3_busy_timeout(s->db, 10000);
	/* WAL: readers never block the writer. synchronous=FULL: the WAL is
	 * fsync'd at every commit, so an ack survives a power cut. */
	if (sqlite3_exec(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
	                 "PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;", NULL, NULL, &err) != SQLITE_OK ||
	    sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, &err) != SQLITE_OK) {
		log_error("store: cannot set up %s: %s", path, err ? err : "?");
		goto err;
	}
	if (sqlite3_exec(s->db, "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
	                 NULL, NULL, &err) != SQLITE_OK)
		goto schema_err;
	if (sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = 'schema_version'", -1,
	                       &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			version = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
	}
	if (from)
		*from = version;
	if (version > SCHEMA_VERSION) {
		log_error("store: %s has schema version %d; this parley knows up to %d", path, version,
		          SCHEMA_VERSION);
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		goto err;
	}
	/* In one transaction with the version it leads to: a crash halfway
	 * leaves the old version, whole. */
	if (version >= 1 && version < SCHEMA_VERSION)
		log_info("store: migrating %s from schema version %d to %d", path, version, SCHEMA_VERSION);
	if (version == 1) {
		if (sqlite3_exec(s->db, migrate_1_to_2, NULL, NULL, &err) != SQLITE_OK)
			goto schema_err;
	} else if (sqlite3_exec(s->db, schema, NULL, NULL, &err) != SQLITE_OK) {
		goto schema_err;
	}
	if (version >= 1 && version < 5 && sqlite3_exec(s->db, migrate_to_5, NULL, NULL, &err) != SQLITE_OK)
		goto schema_err;
	/* A new store's index; an older one's comes with version 7's step. */
	if (version == 0 && sqlite3_exec(s->db, FTS_SCHEMA, NULL, NULL, &err) != SQLITE_OK)
		goto schema_err;
	if (version >= 1 && version < 7 && sqlite3_exec(s->db, migrate_to_7, NULL, NULL, &err) != SQLITE_OK)
		goto schema_err;
	if (sqlite3_exec(s->db, "INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', " SCHEMA_VERSION_TEXT ");"
	                 "COMMIT", NULL, NULL, &err) != SQLITE_OK)
		goto schema_err;
	for (i = 0; i < Q_COUNT; i++) {
		if (sqlite3_prepare_v3(s->db, queries[i], -1, SQLITE_PREPARE_PERSISTENT, &s->q[i],
		                       NULL) != SQLITE_OK) {
			log_error("store: cannot prepare \"%s\": %s", queries[i], sqlite3_errmsg(s->db));
			goto err;
		}
	}
	return &s->base;
schema_err:
	log_error("store: cannot create or migrate the schema in %s: %s", path, err ? err : "?");
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
err:
	sqlite3_free(err);
	sqlite_vtab.close(&s->base);
	return NULL;
}

static void sq_close(store_t *base)
{
	sqlite_store_t *s = S(base);
	int i;

	for (i = 0; i < Q_COUNT; i++)
		sqlite3_finalize(s->q[i]);
	sqlite3_close(s->db);
	free(s);
}

static int sq_user_create(store_t *base, const char *username, const char *pwhash,
                          int64_t now_ms, int64_t *user_id)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_USER_INSERT);
	int rc;

	sqlite3_bind_text(st, 1, username, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, pwhash, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now_ms);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_CONSTRAINT)
		return STORE_EXISTS;
	if (rc != SQLITE_DONE)
		return fail(s, "user insert");
	*user_id = sqlite3_last_insert_rowid(s->db);
	return STORE_OK;
}

static int sq_user_by_name(store_t *base, const char *username, int64_t *user_id, char **pwhash)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_USER_BY_NAME);
	int rc, r = STORE_OK;

	sqlite3_bind_text(st, 1, username, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*user_id = sqlite3_column_int64(st, 0);
		if (pwhash && !(*pwhash = dup_col(st, 1, NULL)))
			r = STORE_ERROR;
	} else {
		r = rc == SQLITE_DONE ? STORE_NOT_FOUND : fail(s, "user by name");
	}
	sqlite3_reset(st);
	return r;
}

static int sq_user_by_id(store_t *base, int64_t user_id, char username[STORE_USERNAME_MAX + 1])
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_USER_BY_ID);
	int rc, r = STORE_OK;

	sqlite3_bind_int64(st, 1, user_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const unsigned char *t = sqlite3_column_text(st, 0);
		snprintf(username, STORE_USERNAME_MAX + 1, "%s", t ? (const char *)t : "");
	} else {
		r = rc == SQLITE_DONE ? STORE_NOT_FOUND : fail(s, "user by id");
	}
	sqlite3_reset(st);
	return r;
}

/* The single integer a query (?1 = arg) yields, into *out. */
static int one_int(sqlite_store_t *s, int which, int64_t arg, int64_t *out)
{
	sqlite3_stmt *st = q(s, which);
	int rc;

	sqlite3_bind_int64(st, 1, arg);
	rc = sqlite3_step(st);
	*out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? STORE_OK : fail(s, "count");
}

static int sq_device_create(store_t *base, int64_t user_id, const char *name,
                            const uint8_t token_hash[STORE_TOKEN_HASH_LEN], int64_t now_ms,
                            unsigned max_devices, int64_t *device_id, int64_t *evicted)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st;
	int64_t count = 0;
	int rc;

	*evicted = 0;
	if (exec(s, Q_BEGIN) != STORE_OK)
		return STORE_ERROR;
	if (max_devices) {
		if (one_int(s, Q_DEVICE_COUNT, user_id, &count) != STORE_OK)
			goto err;
		if (count >= max_devices) {
			if (one_int(s, Q_DEVICE_OLDEST, user_id, evicted) != STORE_OK)
				goto err;
			st = q(s, Q_DEVICE_DELETE);
			sqlite3_bind_int64(st, 1, *evicted);
			sqlite3_bind_int64(st, 2, user_id);
			rc = sqlite3_step(st);
			sqlite3_reset(st);
			if (rc != SQLITE_DONE) {
				fail(s, "device evict");
				goto err;
			}
		}
	}
	st = q(s, Q_DEVICE_INSERT);
	sqlite3_bind_int64(st, 1, user_id);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 3, token_hash, STORE_TOKEN_HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, now_ms);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		fail(s, "device insert");
		goto err;
	}
	*device_id = sqlite3_last_insert_rowid(s->db);
	if (exec(s, Q_COMMIT) != STORE_OK)
		goto err;
	return STORE_OK;
err:
	exec(s, Q_ROLLBACK);
	*evicted = 0;
	return STORE_ERROR;
}

#define DEVICE_TOUCH_MS (3600 * 1000)

static int sq_device_by_token(store_t *base, const uint8_t token_hash[STORE_TOKEN_HASH_LEN],
                              int64_t now_ms, int64_t idle_ms, int64_t *user_id, int64_t *device_id)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_DEVICE_BY_TOKEN);
	int64_t last_used = 0;
	int rc, r = STORE_OK;

	sqlite3_bind_blob(st, 1, token_hash, STORE_TOKEN_HASH_LEN, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*user_id = sqlite3_column_int64(st, 0);
		*device_id = sqlite3_column_int64(st, 1);
		last_used = sqlite3_column_int64(st, 2);
	} else {
		r = rc == SQLITE_DONE ? STORE_NOT_FOUND : fail(s, "device by token");
	}
	sqlite3_reset(st);
	if (r != STORE_OK)
		return r;
	if (idle_ms > 0 && last_used < now_ms - idle_ms) {
		/* Unused too long: the token is gone, as at a logout. */
		st = q(s, Q_DEVICE_DELETE);
		sqlite3_bind_int64(st, 1, *device_id);
		sqlite3_bind_int64(st, 2, *user_id);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		return rc == SQLITE_DONE ? STORE_NOT_FOUND : fail(s, "expired device delete");
	}
	if (last_used < now_ms - DEVICE_TOUCH_MS) {
		st = q(s, Q_DEVICE_TOUCH);
		sqlite3_bind_int64(st, 1, *device_id);
		sqlite3_bind_int64(st, 2, now_ms);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			log_warn("store: cannot record the use of device %lld: %s", (long long)*device_id,
			         sqlite3_errmsg(s->db));
	}
	return STORE_OK;
}

static int sq_devices(store_t *base, int64_t user_id, int64_t used_since_ms, store_device_t **out,
                      size_t *n)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_DEVICES);
	size_t cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	sqlite3_bind_int64(st, 1, user_id);
	sqlite3_bind_int64(st, 2, used_since_ms);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		store_device_t *d;
		const unsigned char *name;
		if (*n == cap) {
			cap = cap ? cap * 2 : 8;
			if (!(d = realloc(*out, cap * sizeof *d))) {
				rc = SQLITE_NOMEM;
				break;
			}
			*out = d;
		}
		d = &(*out)[(*n)++];
		d->id = sqlite3_column_int64(st, 0);
		name = sqlite3_column_text(st, 1);
		snprintf(d->name, sizeof d->name, "%s", name ? (const char *)name : "");
		d->created_at = sqlite3_column_int64(st, 2);
		d->last_used = sqlite3_column_int64(st, 3);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		free(*out);
		*out = NULL;
		*n = 0;
		return fail(s, "devices");
	}
	return STORE_OK;
}

/* ---- push targets and the server's keys ------------------------------ */

static int sq_push_target_put(store_t *base, const store_push_target_t *t, int64_t now_ms, int64_t *id)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st;
	int rc, r = STORE_OK;

	if (exec(s, Q_BEGIN) != STORE_OK)
		return STORE_ERROR;
	st = q(s, Q_PUSH_TAKEOVER);
	sqlite3_bind_int64(st, 1, t->user);
	sqlite3_bind_int64(st, 2, t->device);
	sqlite3_bind_int(st, 3, t->platform);
	sqlite3_bind_text(st, 4, t->address, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		r = fail(s, "push target takeover");
		goto out;
	}
	st = q(s, Q_PUSH_PUT);
	sqlite3_bind_int64(st, 1, t->user);
	sqlite3_bind_int64(st, 2, t->device);
	sqlite3_bind_int(st, 3, t->platform);
	sqlite3_bind_text(st, 4, t->address, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, t->topic ? t->topic : "", -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 6, t->sandbox ? 1 : 0);
	sqlite3_bind_text(st, 7, t->p256dh ? t->p256dh : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 8, t->auth ? t->auth : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 9, now_ms);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*id = sqlite3_column_int64(st, 0);
	else if (rc == SQLITE_DONE)
		r = STORE_NOT_FOUND; /* not the user's device */
	else
		r = fail(s, "push target put");
	sqlite3_reset(st);
out:
	if (r == STORE_OK)
		return exec(s, Q_COMMIT) == STORE_OK ? STORE_OK : STORE_ERROR;
	exec(s, Q_ROLLBACK);
	return r;
}

static char *text_col(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	return strdup(t ? (const char *)t : "");
}

static int sq_push_targets(store_t *base, int64_t user_id, store_push_target_t **out, size_t *n)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_PUSH_LIST);
	size_t cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	sqlite3_bind_int64(st, 1, user_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		store_push_target_t *t;
		if (*n == cap) {
			cap = cap ? cap * 2 : 4;
			if (!(t = realloc(*out, cap * sizeof *t))) {
				rc = SQLITE_NOMEM;
				break;
			}
			*out = t;
		}
		t = &(*out)[(*n)++];
		t->id = sqlite3_column_int64(st, 0);
		t->user = sqlite3_column_int64(st, 1);
		t->device = sqlite3_column_int64(st, 2);
		t->platform = sqlite3_column_int(st, 3);
		t->address = text_col(st, 4);
		t->topic = text_col(st, 5);
		t->sandbox = sqlite3_column_int(st, 6);
		t->p256dh = text_col(st, 7);
		t->auth = text_col(st, 8);
		t->created_at = sqlite3_column_int64(st, 9);
		if (!t->address || !t->topic || !t->p256dh || !t->auth) {
			rc = SQLITE_NOMEM;
			break;
		}
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		store_push_targets_free(*out, *n);
		*out = NULL;
		*n = 0;
		return rc == SQLITE_NOMEM ? STORE_ERROR : fail(s, "push targets");
	}
	return STORE_OK;
}

static int sq_push_target_delete(store_t *base, int64_t user_id, int64_t id)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_PUSH_DELETE);
	int rc;

	sqlite3_bind_int64(st, 1, user_id);
	sqlite3_bind_int64(st, 2, id);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return fail(s, "push target delete");
	return sqlite3_changes(s->db) ? STORE_OK : STORE_NOT_FOUND;
}

static int sq_server_key_get(store_t *base, const char *name, char **value)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_KEY_GET);
	int rc, r = STORE_NOT_FOUND;

	*value = NULL;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		r = (*value = text_col(st, 0)) ? STORE_OK : STORE_ERROR;
	else if (rc != SQLITE_DONE)
		r = fail(s, "server key");
	sqlite3_reset(st);
	return r;
}

static int sq_server_key_add(store_t *base, const char *name, const char *value)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_KEY_ADD);
	int rc;

	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return fail(s, "server key add");
	return sqlite3_changes(s->db) ? STORE_OK : STORE_EXISTS;
}

static int sq_device_delete(store_t *base, int64_t user_id, int64_t device_id)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_DEVICE_DELETE);
	int rc;

	sqlite3_bind_int64(st, 1, device_id);
	sqlite3_bind_int64(st, 2, user_id);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return fail(s, "device delete");
	return sqlite3_changes(s->db) ? STORE_OK : STORE_NOT_FOUND;
}

/* Collects the user ids a query (?1 = conv_id, ?2 = arg) yields. */
static int load_ids_arg(sqlite_store_t *s, int which, int64_t conv_id, int64_t arg,
                        int64_t **members, size_t *n)
{
	sqlite3_stmt *st = q(s, which);
	size_t cap = 0;
	int rc;

	*members = NULL;
	*n = 0;
	sqlite3_bind_int64(st, 1, conv_id);
	if (sqlite3_bind_parameter_count(st) >= 2)
		sqlite3_bind_int64(st, 2, arg);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n == cap) {
			int64_t *m;
			cap = cap ? cap * 2 : 4;
			m = realloc(*members, cap * sizeof *m);
			if (!m) {
				rc = SQLITE_NOMEM;
				break;
			}
			*members = m;
		}
		(*members)[(*n)++] = sqlite3_column_int64(st, 0);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		free(*members);
		*members = NULL;
		*n = 0;
		return fail(s, "members");
	}
	return STORE_OK;
}

static int load_ids(sqlite_store_t *s, int which, int64_t conv_id, int64_t **ids, size_t *n)
{
	return load_ids_arg(s, which, conv_id, 0, ids, n);
}

/* Every member of conv_id, ascending. */
static int load_members(sqlite_store_t *s, int64_t conv_id, int64_t **members, size_t *n)
{
	return load_ids(s, Q_MEMBERS_OF, conv_id, members, n);
}

static int user_convs_add(sqlite_store_t *s, int64_t user_id, int delta)
{
	sqlite3_stmt *st = q(s, Q_USER_CONVS_ADD);
	int rc;

	sqlite3_bind_int64(st, 1, user_id);
	sqlite3_bind_int(st, 2, delta);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? STORE_OK : fail(s, "user conversation count");
}

static int count_add(sqlite_store_t *s, int64_t conv_id, int delta)
{
	sqlite3_stmt *st = q(s, Q_COUNT_ADD);
	int rc;

	sqlite3_bind_int64(st, 1, conv_id);
	sqlite3_bind_int(st, 2, delta);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? STORE_OK : fail(s, "member count");
}

static int query_int(sqlite_store_t *s, int which, int64_t a, int64_t b, int64_t *out);

/* Adds user_id to conv_id, unless the user is already in max_convs
 * conversations (0: no limit): then STORE_TOO_MANY and *full = user_id. */
static int insert_member(sqlite_store_t *s, int64_t conv_id, int64_t user_id, int role,
                         int64_t now_ms, int64_t joined_seq, unsigned max_convs, int64_t *full)
{
	sqlite3_stmt *st;
	int64_t convs;
	int rc, r;

	if (max_convs) {
		if ((r = query_int(s, Q_USER_CONVS, user_id, 0, &convs)) != STORE_OK)
			return r;
		if (convs >= max_convs) {
			if (full)
				*full = user_id;
			return STORE_TOO_MANY;
		}
	}
	st = q(s, Q_MEMBER_INSERT);
	sqlite3_bind_int64(st, 1, conv_id);
	sqlite3_bind_int64(st, 2, user_id);
	sqlite3_bind_int(st, 3, role);
	sqlite3_bind_int64(st, 4, now_ms);
	sqlite3_bind_int64(st, 5, joined_seq);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc == SQLITE_CONSTRAINT)
		return STORE_EXISTS;
	if (rc != SQLITE_DONE)
		return fail(s, "member insert");
	if ((r = user_convs_add(s, user_id, 1)) != STORE_OK)
		return r;
	return count_add(s, conv_id, 1);
}

/* One integer from a query with ?1 (and ?2). */
static int query_int(sqlite_store_t *s, int which, int64_t a, int64_t b, int64_t *out)
{
	sqlite3_stmt *st = q(s, which);
	int rc;

	sqlite3_bind_int64(st, 1, a);
	if (sqlite3_bind_parameter_count(st) >= 2)
		sqlite3_bind_int64(st, 2, b);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		return STORE_OK;
	return rc == SQLITE_DONE ? STORE_NOT_FOUND : fail(s, queries[which]);
}

static void direct_key(char key[48], int64_t a, int64_t b)
{
	snprintf(key, 48, "%lld:%lld", (long long)(a < b ? a : b), (long long)(a < b ? b : a));
}

/* Brings the block marks of direct chat conv_id's two member rows in line
 * with the blocks table. */
static int sync_blocks(sqlite_store_t *s, int64_t conv_id, int64_t a, int64_t b)
{
	int i, rc;

	for (i = 0; i < 2; i++) {
		sqlite3_stmt *st = q(s, Q_MEMBER_BLOCKS_SYNC);
		sqlite3_bind_int64(st, 1, conv_id);
		sqlite3_bind_int64(st, 2, i ? b : a);
		sqlite3_bind_int64(st, 3, i ? a : b);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			return fail(s, "block marks");
	}
	return STORE_OK;
}

/* The direct conversation of a and b, or 0. */
static int find_direct(sqlite_store_t *s, int64_t a, int64_t b, int64_t *conv_id)
{
	sqlite3_stmt *st = q(s, Q_DIRECT_FIND);
	char key[48];
	int rc;

	direct_key(key, a, b);
	sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	*conv_id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_reset(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? STORE_OK : fail(s, "direct find");
}

static int sq_direct_open(store_t *base, int64_t a, int64_t b, int64_t now_ms, unsigned max_convs,
                          int64_t *conv_id, int *created, int64_t *full)
{
	sqlite_store_t *s = S(base);
	char key[48];
	sqlite3_stmt *st;
	int rc, i, r = STORE_ERROR;

	direct_key(key, a, b);
	*created = 0;
	if (exec(s, Q_BEGIN) != STORE_OK)
		return STORE_ERROR;
	if (find_direct(s, a, b, conv_id) != STORE_OK)
		goto err;
	if (*conv_id)
		return exec(s, Q_COMMIT);
	st = q(s, Q_CONV_INSERT);
	sqlite3_bind_int(st, 1, STORE_DIRECT);
	sqlite3_bind_null(st, 2);
	sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, a);
	sqlite3_bind_int64(st, 5, now_ms);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		fail(s, "direct conversation");
		goto err;
	}
	*conv_id = sqlite3_last_insert_rowid(s->db);
	for (i = 0; i < 2; i++) {
		if ((r = insert_member(s, *conv_id, i ? b : a, 0, now_ms, 0, max_convs, full)) != STORE_OK)
			goto err;
	}
	/* A block made before the chat existed holds in it from the start. */
	if ((r = sync_blocks(s, *conv_id, a, b)) != STORE_OK || (r = exec(s, Q_COMMIT)) != STORE_OK)
		goto err;
	*created = 1;
	return STORE_OK;
err:
	exec(s, Q_ROLLBACK);
	*conv_id = 0;
	return r == STORE_OK ? STORE_ERROR : r;
}

/* One member's row of a conversation, with what the hot path needs of the
 * conversation itself: one indexed read. */
typedef struct membership {
	int kind, role;
	int wrote, blocks, muted;
	int64_t last_seq, member_count, member_version, activity, pushed_seq;
	int64_t read_seq, delivered_seq, joined_seq;
} membership_t;

/* Reads (conv_id, user_id)'s membership; STORE_FORBIDDEN when there is
 * none. The title is copied (malloc'd) only when title is not NULL. */
static int load_membership(sqlite_store_t *s, int64_t conv_id, int64_t user_id, membership_t *m,
                           char **title)
{
	sqlite3_stmt *st = q(s, Q_MEMBER_CONV);
	int rc, r = STORE_OK;

	sqlite3_bind_int64(st, 1, conv_id);
	sqlite3_bind_int64(st, 2, user_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		m->kind = sqlite3_column_int(st, 0);
		if (title)
			*title = dup_col(st, 1, NULL);
		m->last_seq = sqlite3_column_int64(st, 2);
		m->member_count = sqlite3_column_int64(st, 3);
		m->read_seq = sqlite3_column_int64(st, 4);
		m->delivered_seq = sqlite3_column_int64(st, 5);
		m->joined_seq = sqlite3_column_int64(st, 6);
		m->role = sqlite3_column_int(st, 7);
		m->member_version = sqlite3_column_int64(st, 8);
		m->wrote = sqlite3_column_int(st, 9);
		m->blocks = sqlite3_column_int(st, 10);
		m->activity = sqlite3_column_int64(st, 11);
		m->muted = sqlite3_column_int(st, 12);
		m->pushed_seq = sqlite3_column_int64(st, 13);
	} else {
		r = rc == SQLITE_DONE ? STORE_FORBIDDEN : fail(s, "membership");
	}
	sqlite3_reset(st);
	return r;
}

/* What an event needs to know of the row it is about. */
typedef struct target {
	int64_t from, ts;
	int kind, deleted;
} target_t;

/* The row at seq of conv_id, for a member who joined at joined:
 * STORE_NOT_FOUND when there is none it may see. */
static int load_target(sqlite_store_t *s, int64_t conv_id, int64_t seq, int64_t joined, target_t *t)
{
	sqlite3_stmt *st = q(s, Q_TARGET);
	int rc, r = STORE_OK;

	sqlite3_bind_int64(st, 1, conv_id);
	sqlite3_bind_int64(st, 2, seq);
	sqlite3_bind_int64(st, 3, joined);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		t->from = sqlite3_column_int64(st, 0);
		t->ts = sqlite3_column_int64(st, 1);
		t->kind = sqlite3_column_int(st, 2);
		t->deleted = sqlite3_column_int(st, 3);
	} else {
		r = rc == SQLITE_DONE ? STORE_NOT_FOUND : fail(s, "message");
	}
	sqlite3_reset(st);
	return r;
}

/* The newest message (events are not shown as one) of conv_id that a
 * member who joined at joined may see; STORE_NOT_FOUND when none. */
static int load_last_message(sqlite_store_t *s, int64_t conv_id, int64_t joined, store_message_t **out)
{
	sqlite3_stmt *st = q(s, Q_MESSAGE_AT);
	int rc, r = STORE_OK;

	*out = NULL;
	sqlite3_bind_int64(st, 1, conv_id);
	sqlite3_bind_int64(st, 2, joined);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		store_message_t *m = calloc(1, sizeof *m);
		if (!m || read_message(st, conv_id, m) != STORE_OK) {
			free(m);
			r = STORE_ERROR;
		} else {
			*out = m;
		}
	} else {
		r = rc == SQLITE_DONE ? STORE_NOT_FOUND : fail(s, "message");
	}
	sqlite3_reset(st);
	return r;
}

static int sq_conv_get(store_t *base, int64_t conv_id, int64_t user_id, store_conv_t *c)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st;
	membership_t m;
	int r;

	memset(c, 0, sizeof *c);
	if ((r = load_membership(s, conv_id, user_id, &m, &c->title)) != STORE_OK)
		return r;
	c->id = conv_id;
	c->kind = m.kind;
	c->last_seq = m.last_seq;
	c->read_seq = m.read_seq;
	c->wrote = m.wrote;
	c->blocked = m.kind == STORE_DIRECT && (m.blocks & 1);
	c->activity = m.activity;
	c->muted = m.muted;
	c->delivered_seq = m.delivered_seq;
	c->pushed_seq = m.pushed_seq;
	if ((r = load_members(s, conv_id, &c->members, &c->nmembers)) != STORE_OK)
		goto err;
	if (c->kind == STORE_GROUP &&
	    (r = load_ids(s, Q_ADMINS_OF, conv_id, &c->admins, &c->nadmins)) != STORE_OK)
		goto err;
	if (c->last_seq > m.joined_seq) {
		r = load_last_message(s, conv_id, m.joined_seq, &c->last_message);
		if (r == STORE_NOT_FOUND)
			r = STORE_OK;
		if (r != STORE_OK)
			goto err;
	}
	st = q(s, Q_UNREAD);
	sqlite3_bind_int64(st, 1, conv_id);
	sqlite3_bind_int64(st, 2, c->read_seq);
	sqlite3_bind_int64(st, 3, user_id);
	if (sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_reset(st);
		r = fail(s, "unread count");
		goto err;
	}
	c->unread = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return STORE_OK;
err:
	store_conv_clear(c);
	return r == STORE_NOT_FOUND ? STORE_ERROR : r;
}

static int sq_conv_list(store_t *base, int64_t user_id, const store_conv_cursor_t *after,
                        size_t limit, store_conv_t **out, size_t *n, int *has_more)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_CONV_LIST);
	int64_t *ids = NULL;
	size_t nids = 0, cap = 0, i;
	int rc, r = STORE_OK;

	*out = NULL;
	*n = 0;
	*has_more = 0;
	sqlite3_bind_int64(st, 1, user_id);
	sqlite3_bind_int64(st, 2, after ? after->activity : INT64_MAX);
	sqlite3_bind_int64(st, 3, after ? after->id : INT64_MAX);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)limit + 1); /* one more tells whether there is more */
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (nids == cap) {
			int64_t *m;
			cap = cap ? cap * 2 : 16;
			if (!(m = realloc(ids, cap * sizeof *m))) {
				rc = SQLITE_NOMEM;
				break;
			}
			ids = m;
		}
		ids[nids++] = sqlite3_column_int64(st, 0);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		free(ids);
		return fail(s, "conversation list");
	}
	if (nids > limit) {
		*has_more = 1;
		nids = limit;
	}
	/* The list and each entry are read in one transaction so that an entry
	 * never mixes states from before and after a send. */
	if (nids && sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
		free(ids);
		return fail(s, "begin");
	}
	if (nids && !(*out = calloc(nids, sizeof **out)))
		r = STORE_ERROR;
	for (i = 0; r == STORE_OK && i < nids; i++) {
		r = sq_conv_get(base, ids[i], user_id, &(*out)[*n]);
		if (r == STORE_OK)
			(*n)++;
		else if (r == STORE_FORBIDDEN) /* left between the two reads */
			r = STORE_OK;
	}
	if (nids)
		sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
	free(ids);
	if (r != STORE_OK) {
		store_convs_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return r;
}

/* Collects the rows of a message query on conv_id into *out. */
static int collect_messages(sqlite_store_t *s, sqlite3_stmt *st, int64_t conv_id, size_t max_bytes,
                            store_message_t **out, size_t *n)
{
	size_t cap = 0, bytes = 0;
	int rc;

	*out = NULL;
	*n = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n == cap) {
			store_message_t *m;
			cap = cap ? cap * 2 : 16;
			if (!(m = realloc(*out, cap * sizeof *m))) {
				rc = SQLITE_NOMEM;
				break;
			}
			*out = m;
		}
		if (read_message(st, conv_id, &(*out)[*n]) != STORE_OK) {
			rc = SQLITE_NOMEM;
			break;
		}
		bytes += (*out)[*n].body_len;
		(*n)++;
		if (bytes >= max_bytes)
			break;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		store_messages_free(*out, *n);
		*out = NULL;
		*n = 0;
		return fail(s, "messages");
	}
	return STORE_OK;
}

static int sq_history(store_t *base, int64_t conv_id, int64_t user_id, int64_t before, int limit,
                      size_t max_bytes, store_message_t **out, size_t *n, int *has_more)
{
	sqlite_store_t *s = S(base);
	membership_t m;
	sqlite3_stmt *st;
	size_t i;
	int r;

	*out = NULL;
	*n = 0;
	*has_more = 0;
	if ((r = load_membership(s, conv_id, user_id, &m, NULL)) != STORE_OK)
		return r;
	st = q(s, Q_HISTORY);
	sqlite3_bind_int64(st, 1, conv_id);
	sqlite3_bind_int64(st, 2, before > 0 ? before : INT64_MAX);
	sqlite3_bind_int(st, 3, limit + 1); /* one more tells whether there is more */
	sqlite3_bind_int64(st, 4, m.joined_seq);
	if ((r = collect_messages(s, st, conv_id, max_bytes, out, n)) != STORE_OK)
		return r;
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

/* Pending messages into the full-text index (FTS_SCHEMA): up to
 * FTS_INDEX_ROWS a pass, each pass its own transaction. Returns the
 * number indexed, or -1 (said why; the queue keeps them for next time). */
#define FTS_INDEX_ROWS 2000
#define FTS_INDEX_EVERY 512
#define FTS_INDEX_MS 1000

static int fts_index(sqlite_store_t *s)
{
	sqlite3_stmt *st;
	int rc, done;

	if (exec(s, Q_BEGIN) != STORE_OK)
		return -1;
	st = q(s, Q_FTS_INDEX);
	sqlite3_bind_int(st, 1, FTS_INDEX_ROWS);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	done = sqlite3_changes(s->db);
	if (rc == SQLITE_DONE) {
		st = q(s, Q_FTS_DEQUEUE);
		sqlite3_bind_int(st, 1, FTS_INDEX_ROWS);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
	}
	if (rc != SQLITE_DONE || exec(s, Q_COMMIT) != STORE_OK) {
		fail(s, "full-text index");
		exec(s, Q_ROLLBACK);
		return -1;
	}
	return done;
}

/* The terms as an FTS5 query: each a quoted string (they hold no
 * quotes), all of them required, the last also as a prefix. NULL when
 * out of memory. */
static char *fts5_query(const char *const *terms, size_t nterms)
{
	size_t cap = 1, i, len = 0;
	char *q;

	for (i = 0; i < nterms; i++)
		cap += strlen(terms[i]) + 4;
	if (!(q = malloc(cap)))
		return NULL;
	for (i = 0; i < nterms; i++)
		len += (size_t)snprintf(q + len, cap - len, "%s\"%s\"%s", i ? " " : "", terms[i],
		                        i + 1 == nterms ? "*" : "");
	return q;
}

static int sq_search(store_t *base, int64_t user_id, int64_t conv_id, const char *const *terms, size_t nterms,
                     size_t offset, size_t limit, store_search_hit_t **out, size_t *n, int *has_more)
{
	sqlite_store_t *s = S(base);
	membership_t m;
	sqlite3_stmt *st;
	char *match;
	size_t cap = limit + 1;
	int rc, r = STORE_OK, passes;

	*out = NULL;
	*n = 0;
	*has_more = 0;
	if (conv_id && (r = load_membership(s, conv_id, user_id, &m, NULL)) != STORE_OK)
		return r;
	if (!nterms || !limit)
		return STORE_OK;
	/* Every committed message is found: what is pending goes in first
	 * (a bounded amount; after that much, the writers' passes catch up). */
	for (passes = 0; passes < 10 && fts_index(s) == FTS_INDEX_ROWS; passes++)
		;
	if (!(match = fts5_query(terms, nterms)) || !(*out = calloc(cap, sizeof **out))) {
		free(match);
		return STORE_ERROR;
	}
	st = q(s, Q_SEARCH);
	sqlite3_bind_int64(st, 1, user_id);
	sqlite3_bind_text(st, 2, match, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, conv_id);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)cap);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)(offset > INT32_MAX ? INT32_MAX : offset));
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		store_search_hit_t *h = &(*out)[*n];
		if (read_message(st, sqlite3_column_int64(st, 15), &h->msg) != STORE_OK ||
		    !(h->snippet = dup_col(st, 16, &h->snippet_len))) {
			store_message_clear(&h->msg);
			r = STORE_ERROR;
			break;
		}
		(*n)++;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	free(match);
	if (r == STORE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = fail(s, "search");
	if (r != STORE_OK) {
		store_search_free(*out, *n);
		*out = NULL;
		*n = 0;
		return r;
	}
	if (*n > limit) {
		store_message_clear(&(*out)[limit].msg);
		free((*out)[limit].snippet);
		*n = limit;
		*has_more = 1;
	}
	return STORE_OK;
}

static int sq_receipts(store_t *base, int64_t conv_id, int64_t user_id, int64_t seq,
                       int64_t now_ms, store_receipt_t **out, size_t *n)
{
	sqlite_store_t *s = S(base);
	membership_t ms;
	target_t t;
	int64_t *members = NULL;
	size_t nmembers = 0, i;
	int r;

	*out = NULL;
	*n = 0;
	if ((r = load_membership(s, conv_id, user_id, &ms, NULL)) != STORE_OK)
		return r;
	if (seq <= ms.joined_seq || seq > ms.last_seq)
		return STORE_NOT_FOUND;
	if ((r = load_target(s, conv_id, seq, ms.joined_seq, &t)) != STORE_OK)
		return r;
	if (t.kind != STORE_MSG_TEXT)
		return STORE_NOT_FOUND; /* an event has no receipts of its own */
	if (t.ts < now_ms - (int64_t)STORE_RECEIPT_DETAIL_DAYS * 86400000) {
		r = STORE_NOT_FOUND; /* its detail has expired */
		goto done;
	}
	/* Those who were members when it was sent (and still are). */
	if ((r = load_ids_arg(s, Q_RECEIPT_MEMBERS, conv_id, seq, &members, &nmembers)) != STORE_OK)
		goto done;
	if (nmembers && !(*out = calloc(nmembers, sizeof **out))) {
		r = STORE_ERROR;
		goto done;
	}
	for (i = 0; i < nmembers; i++) {
		sqlite3_stmt *st;
		store_receipt_t *rc;

		if (members[i] == t.from)
			continue;
		rc = &(*out)[(*n)++];
		rc->user_id = members[i];
		st = q(s, Q_MARK_AT);
		sqlite3_bind_int64(st, 1, conv_id);
		sqlite3_bind_int64(st, 2, members[i]);
		sqlite3_bind_int64(st, 4, seq);
		if (sqlite3_step(st) == SQLITE_ROW)
			rc->delivered_at = sqlite3_column_int64(st, 0);
		if (sqlite3_step(st) == SQLITE_ROW)
			rc->read_at = sqlite3_column_int64(st, 0);
		sqlite3_reset(st);
		/* A read implies delivery, possibly earlier. */
		if (rc->read_at && (!rc->delivered_at || rc->read_at < rc->delivered_at))
			rc->delivered_at = rc->read_at;
	}
done:
	free(members);
	if (r != STORE_OK) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	return r;
}

static int sq_member_head(store_t *base, int64_t conv_id, int64_t user_id, int64_t *last_seq,
                          int64_t *joined_seq)
{
	membership_t m;
	int r = load_membership(S(base), conv_id, user_id, &m, NULL);

	if (r == STORE_OK) {
		*last_seq = m.last_seq;
		*joined_seq = m.joined_seq;
	}
	return r;
}

static int sq_expire_receipts(store_t *base, int64_t before_ms, size_t max_rows, size_t *deleted)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_EXPIRE_MARKS);
	int rc;

	sqlite3_bind_int64(st, 1, before_ms);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)max_rows);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return fail(s, "receipt expiry");
	*deleted = (size_t)sqlite3_changes(s->db);
	return STORE_OK;
}

static int sq_watermarks(store_t *base, int64_t conv_id, store_watermark_t **out, size_t *n)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_WATERMARKS);
	size_t cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	sqlite3_bind_int64(st, 1, conv_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n == cap) {
			store_watermark_t *w;
			cap = cap ? cap * 2 : 16;
			if (!(w = realloc(*out, cap * sizeof *w))) {
				rc = SQLITE_NOMEM;
				break;
			}
			*out = w;
		}
		(*out)[*n].user_id = sqlite3_column_int64(st, 0);
		(*out)[*n].joined_seq = sqlite3_column_int64(st, 1);
		(*out)[*n].delivered_seq = sqlite3_column_int64(st, 2);
		(*out)[*n].read_seq = sqlite3_column_int64(st, 3);
		(*n)++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		free(*out);
		*out = NULL;
		*n = 0;
		return fail(s, "watermarks");
	}
	return STORE_OK;
}

static int sq_senders(store_t *base, int64_t conv_id, int64_t lo, int64_t hi, store_sent_t **out,
                      size_t *n)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_SENDERS);
	size_t cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	sqlite3_bind_int64(st, 1, conv_id);
	sqlite3_bind_int64(st, 2, lo);
	sqlite3_bind_int64(st, 3, hi);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n == cap) {
			store_sent_t *m;
			cap = cap ? cap * 2 : 16;
			if (!(m = realloc(*out, cap * sizeof *m))) {
				rc = SQLITE_NOMEM;
				break;
			}
			*out = m;
		}
		(*out)[*n].seq = sqlite3_column_int64(st, 0);
		(*out)[*n].sender = sqlite3_column_int64(st, 1);
		(*n)++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		free(*out);
		*out = NULL;
		*n = 0;
		return fail(s, "senders");
	}
	return STORE_OK;
}

static int sq_read_count(store_t *base, int64_t conv_id, int64_t user_id, int64_t seq,
                         int64_t *count)
{
	sqlite_store_t *s = S(base);
	int64_t last, joined;
	int r;

	if ((r = sq_member_head(base, conv_id, user_id, &last, &joined)) != STORE_OK)
		return r;
	if (seq <= joined || seq > last)
		return STORE_NOT_FOUND;
	return query_int(s, Q_READ_COUNT, conv_id, seq, count);
}

static int sq_unread_total(store_t *base, int64_t user_id, int64_t cap, int64_t *total)
{
	return query_int(S(base), Q_UNREAD_TOTAL, user_id, cap, total);
}

static int sq_push_mark(store_t *base, int64_t conv_id, int64_t user_id, int64_t seq)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_PUSH_MARK);
	int rc;

	sqlite3_bind_int64(st, 1, conv_id);
	sqlite3_bind_int64(st, 2, user_id);
	sqlite3_bind_int64(st, 3, seq);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return fail(s, "push mark");
	return sqlite3_changes(s->db) ? STORE_OK : STORE_FORBIDDEN;
}

static int sq_push_pending(store_t *base, int64_t since_id, size_t limit, store_push_pending_t **out, size_t *n)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_PUSH_PENDING);
	size_t cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	sqlite3_bind_int64(st, 1, since_id);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)(limit > INT64_MAX ? INT64_MAX : limit));
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		store_push_pending_t *p;
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			if (!(p = realloc(*out, cap * sizeof *p))) {
				rc = SQLITE_NOMEM;
				break;
			}
			*out = p;
		}
		p = &(*out)[*n];
		p->conv = sqlite3_column_int64(st, 0);
		p->user = sqlite3_column_int64(st, 1);
		p->kind = sqlite3_column_int(st, 2);
		p->seq = sqlite3_column_int64(st, 3);
		p->from = sqlite3_column_int64(st, 4);
		p->ts = sqlite3_column_int64(st, 5);
		if (!(p->body = dup_col(st, 6, &p->body_len))) {
			rc = SQLITE_NOMEM;
			break;
		}
		(*n)++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		store_push_pending_free(*out, *n);
		*out = NULL;
		*n = 0;
		return rc == SQLITE_NOMEM ? STORE_ERROR : fail(s, "pending pushes");
	}
	return STORE_OK;
}

static int sq_members(store_t *base, int64_t conv_id, int64_t **ids, size_t *n)
{
	return load_members(S(base), conv_id, ids, n);
}

static int sq_member_list(store_t *base, int64_t conv_id, store_member_t **out, size_t *n,
                          int64_t *version)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st;
	size_t cap = 0;
	int rc, r;

	*out = NULL;
	*n = 0;
	/* One read transaction: the list and its version agree. */
	if (sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		return fail(s, "begin");
	if ((r = query_int(s, Q_MEMBER_VERSION, conv_id, 0, version)) != STORE_OK)
		goto out;
	st = q(s, Q_MEMBER_LIST);
	sqlite3_bind_int64(st, 1, conv_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n == cap) {
			store_member_t *m;
			cap = cap ? cap * 2 : 64;
			if (!(m = realloc(*out, cap * sizeof *m))) {
				rc = SQLITE_NOMEM;
				break;
			}
			*out = m;
		}
		(*out)[*n].user_id = sqlite3_column_int64(st, 0);
		(*out)[*n].joined_seq = sqlite3_column_int64(st, 1);
		(*n)++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		r = fail(s, "member list");
out:
	sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
	if (r != STORE_OK) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	return r;
}

static int sq_group_create(store_t *base, int64_t creator, const int64_t *others, size_t n,
                           const char *title, int64_t now_ms, unsigned max_convs, int64_t *conv_id,
                           int64_t *full)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st;
	int64_t one;
	size_t i;
	int r = STORE_ERROR, rc;

	if (n + 1 > STORE_GROUP_MAX)
		return STORE_FULL;
	if (exec(s, Q_BEGIN) != STORE_OK)
		return STORE_ERROR;
	st = q(s, Q_CONV_INSERT);
	sqlite3_bind_int(st, 1, STORE_GROUP);
	if (title)
		sqlite3_bind_text(st, 2, title, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 2);
	sqlite3_bind_null(st, 3);
	sqlite3_bind_int64(st, 4, creator);
	sqlite3_bind_int64(st, 5, now_ms);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		fail(s, "group insert");
		goto err;
	}
	*conv_id = sqlite3_last_insert_rowid(s->db);
	if ((r = insert_member(s, *conv_id, creator, 1, now_ms, 0, max_convs, full)) != STORE_OK)
		goto err;
	for (i = 0; i < n; i++) {
		if ((r = query_int(s, Q_USER_EXISTS, others[i], 0, &one)) != STORE_OK)
			goto err; /* STORE_NOT_FOUND: no such user */
		if ((r = insert_member(s, *conv_id, others[i], 0, now_ms, 0, max_convs, full)) != STORE_OK)
			goto err; /* STORE_EXISTS: named twice; STORE_TOO_MANY */
	}
	if ((r = exec(s, Q_COMMIT)) != STORE_OK)
		goto err;
	return STORE_OK;
err:
	exec(s, Q_ROLLBACK);
	return r;
}

/* The role of user_id in a group (1: admin), checking it is a member of a
 * group; *last_seq is the group's head. */
static int group_role(sqlite_store_t *s, int64_t conv_id, int64_t user_id, membership_t *m)
{
	int r = load_membership(s, conv_id, user_id, m, NULL);

	if (r == STORE_OK && m->kind != STORE_GROUP)
		return STORE_NOT_GROUP;
	return r;
}

/* Commits, or rolls back and returns r when r is not STORE_OK. */
static int finish(sqlite_store_t *s, int r)
{
	if (r == STORE_OK && exec(s, Q_COMMIT) == STORE_OK)
		return STORE_OK;
	exec(s, Q_ROLLBACK);
	return r == STORE_OK ? STORE_ERROR : r;
}

static int sq_member_add(store_t *base, int64_t conv_id, int64_t actor, int64_t user_id,
                         int64_t now_ms, unsigned max_convs, int64_t *full)
{
	sqlite_store_t *s = S(base);
	membership_t m;
	int64_t one;
	int r;

	if (exec(s, Q_BEGIN) != STORE_OK)
		return STORE_ERROR;
	r = group_role(s, conv_id, actor, &m);
	if (r == STORE_OK && m.role != 1)
		r = STORE_FORBIDDEN;
	if (r == STORE_OK)
		r = query_int(s, Q_USER_EXISTS, user_id, 0, &one);
	if (r == STORE_OK && m.member_count >= STORE_GROUP_MAX)
		r = STORE_FULL;
	/* The new member's history starts now. */
	if (r == STORE_OK)
		r = insert_member(s, conv_id, user_id, 0, now_ms, m.last_seq, max_convs, full);
	return finish(s, r);
}

static int sq_member_remove(store_t *base, int64_t conv_id, int64_t actor, int64_t user_id,
                            int64_t *promoted)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st;
	int64_t admins = 1;
	membership_t m;
	int r;

	*promoted = 0;
	if (exec(s, Q_BEGIN) != STORE_OK)
		return STORE_ERROR;
	r = group_role(s, conv_id, actor, &m);
	if (r == STORE_OK && actor != user_id && m.role != 1)
		r = STORE_FORBIDDEN; /* only admins remove others */
	if (r == STORE_OK) {
		r = group_role(s, conv_id, user_id, &m);
		if (r == STORE_FORBIDDEN)
			r = STORE_NOT_FOUND; /* not a member */
	}
	if (r == STORE_OK) {
		st = q(s, Q_MEMBER_DELETE);
		sqlite3_bind_int64(st, 1, conv_id);
		sqlite3_bind_int64(st, 2, user_id);
		if (sqlite3_step(st) != SQLITE_DONE)
			r = fail(s, "member delete");
		sqlite3_reset(st);
		if (r == STORE_OK)
			r = count_add(s, conv_id, -1);
		if (r == STORE_OK)
			r = user_convs_add(s, user_id, -1);
	}
	/* A group is never left without an admin while it has members. */
	if (r == STORE_OK)
		r = query_int(s, Q_ADMIN_COUNT, conv_id, 0, &admins);
	if (r == STORE_OK && admins == 0) {
		r = query_int(s, Q_PROMOTE, conv_id, 0, promoted);
		if (r == STORE_NOT_FOUND)
			r = STORE_OK; /* nobody left */
	}
	return finish(s, r);
}


static int sq_heads(store_t *base, int64_t user_id, store_head_t **out, size_t *n)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_HEADS);
	size_t cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	sqlite3_bind_int64(st, 1, user_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n == cap) {
			store_head_t *h;
			cap = cap ? cap * 2 : 16;
			if (!(h = realloc(*out, cap * sizeof *h))) {
				rc = SQLITE_NOMEM;
				break;
			}
			*out = h;
		}
		(*out)[*n].conv = sqlite3_column_int64(st, 0);
		(*out)[*n].last_seq = sqlite3_column_int64(st, 1);
		(*n)++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		free(*out);
		*out = NULL;
		*n = 0;
		return fail(s, "heads");
	}
	return STORE_OK;
}

static int sq_replay(store_t *base, int64_t conv_id, int64_t joined, int64_t after, int64_t upto,
                     size_t max_count, size_t max_bytes, store_message_t **out, size_t *n)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_REPLAY);

	sqlite3_bind_int64(st, 1, conv_id);
	sqlite3_bind_int64(st, 2, after);
	sqlite3_bind_int64(st, 3, upto);
	sqlite3_bind_int64(st, 4, (sqlite3_int64)max_count);
	sqlite3_bind_int64(st, 5, joined);
	return collect_messages(s, st, conv_id, max_bytes, out, n);
}

/* The membership row of (conv, user) for a hot-path op. Returns
 * STORE_FORBIDDEN when not a member. */
static int op_membership(sqlite_store_t *s, store_op_t *op, membership_t *m)
{
	int r = load_membership(s, op->conv, op->user, m, NULL);

	if (r == STORE_OK) {
		op->conv_kind = m->kind;
		op->out_members_version = m->member_version;
	}
	return r;
}

/* Runs the statement `which` with the integer arguments args[0..n) and
 * text at position text_at (0: none). */
static int run_event_stmt(sqlite_store_t *s, int which, const int64_t *args, int n, int text_at,
                          const char *text, size_t text_len)
{
	sqlite3_stmt *st = q(s, which);
	int i, rc;

	for (i = 0; i < n; i++)
		sqlite3_bind_int64(st, i + 1, args[i]);
	if (text_at)
		sqlite3_bind_text(st, text_at, text, (int)text_len, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE ? STORE_OK : fail(s, queries[which]);
}

/* What a stored event leaves on its target, in the same transaction. */
static int apply_event(sqlite_store_t *s, const store_op_t *op)
{
	int64_t a[5] = {op->conv, op->target, 0, 0, 0};
	int r;

	switch (op->msg_kind) {
	case STORE_MSG_EDIT:
		a[3] = op->out_ts;
		a[4] = op->out_seq;
		return run_event_stmt(s, Q_EDIT_APPLY, a, 5, 3, op->body, op->body_len);
	case STORE_MSG_DELETE:
		a[2] = op->out_seq;
		if ((r = run_event_stmt(s, Q_DELETE_APPLY, a, 3, 0, NULL, 0)) != STORE_OK ||
		    (r = run_event_stmt(s, Q_DELETE_EDITS, a, 2, 0, NULL, 0)) != STORE_OK)
			return r;
		return run_event_stmt(s, Q_DELETE_REACTIONS, a, 2, 0, NULL, 0);
	case STORE_MSG_REACTION:
		a[2] = op->user;
		if (op->body_len) {
			a[4] = op->out_seq;
			r = run_event_stmt(s, Q_REACTION_PUT, a, 5, 4, op->body, op->body_len);
		} else {
			r = run_event_stmt(s, Q_REACTION_DROP, a, 3, 0, NULL, 0);
		}
		if (r != STORE_OK)
			return r;
		a[2] = op->out_seq;
		return run_event_stmt(s, Q_REACTIONS_SYNC, a, 3, 0, NULL, 0);
	default:
		return STORE_OK;
	}
}

static int apply_send(sqlite_store_t *s, store_op_t *op)
{
	membership_t m;
	sqlite3_stmt *st;
	int rc, r;

	if ((r = op_membership(s, op, &m)) != STORE_OK)
		return r;
	st = q(s, Q_SEND_FIND);
	sqlite3_bind_int64(st, 1, op->conv);
	sqlite3_bind_int64(st, 2, op->user);
	sqlite3_bind_text(st, 3, op->cmid, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		op->out_id = sqlite3_column_int64(st, 0);
		op->out_seq = sqlite3_column_int64(st, 1);
		op->out_ts = sqlite3_column_int64(st, 2);
		sqlite3_reset(st);
		return STORE_EXISTS;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return fail(s, "send lookup");
	/* A block holds in a direct chat both ways; a repeat of what was
	 * stored before it (above) is still answered with its ack. */
	if (m.kind == STORE_DIRECT && m.blocks) {
		op->out_blocked_by_me = m.blocks & 1;
		return STORE_BLOCKED;
	}
	if (op->msg_kind != STORE_MSG_TEXT || op->target > 0) {
		target_t t;
		int64_t last_join = 0;
		if ((r = load_target(s, op->conv, op->target, m.joined_seq, &t)) != STORE_OK)
			return r;
		if (t.kind != STORE_MSG_TEXT)
			return STORE_NOT_FOUND; /* events are not the subject of events */
		if (op->msg_kind == STORE_MSG_EDIT && m.kind == STORE_GROUP &&
		    (r = query_int(s, Q_LAST_JOIN, op->conv, 0, &last_join)) != STORE_OK)
			return r;
		if ((r = store_event_check(op, m.kind, t.from, t.ts, t.deleted, m.role == 1, last_join)) != STORE_OK)
			return r;
	}
	if (op->admit) {
		int64_t retry = op->admit(op->admit_ud, op,
		                          m.member_count > 1 ? (size_t)m.member_count - 1 : 1);
		if (retry > 0) {
			op->out_retry_ms = retry;
			return STORE_LIMITED;
		}
	}
	op->out_id = op->new_id;
	op->out_ts = op->now_ms;
	st = q(s, Q_SEQ_NEXT);
	sqlite3_bind_int64(st, 1, op->conv);
	sqlite3_bind_int64(st, 2, op->out_id);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(st);
		return fail(s, "seq");
	}
	op->out_seq = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	st = q(s, Q_MESSAGE_INSERT);
	sqlite3_bind_int64(st, 1, op->out_id);
	sqlite3_bind_int64(st, 2, op->conv);
	sqlite3_bind_int64(st, 3, op->out_seq);
	sqlite3_bind_int64(st, 4, op->user);
	sqlite3_bind_text(st, 5, op->cmid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, op->body, (int)op->body_len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, op->out_ts);
	sqlite3_bind_int(st, 8, op->msg_kind);
	sqlite3_bind_int64(st, 9, op->target);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return fail(s, "message insert");
	if (op->msg_kind != STORE_MSG_TEXT)
		return apply_event(s, op);
	if (!m.wrote) {
		/* Its first message here: in a direct chat, this is what makes
		 * the other a contact of the sender's. */
		st = q(s, Q_WROTE_SET);
		sqlite3_bind_int64(st, 1, op->conv);
		sqlite3_bind_int64(st, 2, op->user);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			return fail(s, "writer mark");
	}
	return STORE_OK;
}

static int apply_receipt(sqlite_store_t *s, store_op_t *op)
{
	membership_t m;
	sqlite3_stmt *st;
	int64_t seq;
	int r;

	if ((r = op_membership(s, op, &m)) != STORE_OK)
		return r;
	/* Nobody can have received what does not exist yet. */
	seq = op->seq < m.last_seq ? op->seq : m.last_seq;
	op->out_seq = seq;
	op->out_prev = op->state == STORE_READ ? m.read_seq : m.delivered_seq;
	op->applied = 0;
	if (seq <= op->out_prev)
		return STORE_OK; /* at or below the watermark: ignored */
	if (op->conv_kind == STORE_GROUP) {
		if (m.member_count > STORE_RECEIPT_DETAIL_MAX) {
			/* A large group keeps read watermarks only: one row
			 * write, no detail. "Delivered" is not kept at all. */
			if (op->state != STORE_READ)
				return STORE_OK;
			st = q(s, Q_READ_ONLY_SET);
			sqlite3_bind_int64(st, 1, op->conv);
			sqlite3_bind_int64(st, 2, op->user);
			sqlite3_bind_int64(st, 3, seq);
			r = sqlite3_step(st) == SQLITE_DONE ? STORE_OK : fail(s, "read watermark");
			sqlite3_reset(st);
			op->applied = r == STORE_OK;
			return r;
		}
	}
	st = q(s, op->state == STORE_READ ? Q_READ_SET : Q_DELIVERED_SET);
	sqlite3_bind_int64(st, 1, op->conv);
	sqlite3_bind_int64(st, 2, op->user);
	sqlite3_bind_int64(st, 3, seq);
	if (sqlite3_step(st) != SQLITE_DONE) {
		sqlite3_reset(st);
		return fail(s, "watermark");
	}
	sqlite3_reset(st);
	st = q(s, Q_MARK_INSERT);
	sqlite3_bind_int64(st, 1, op->conv);
	sqlite3_bind_int64(st, 2, op->user);
	sqlite3_bind_int(st, 3, op->state);
	sqlite3_bind_int64(st, 4, seq);
	sqlite3_bind_int64(st, 5, op->now_ms);
	if (sqlite3_step(st) != SQLITE_DONE) {
		sqlite3_reset(st);
		return fail(s, "receipt mark");
	}
	sqlite3_reset(st);
	op->applied = 1;
	return STORE_OK;
}

/* The outbox row of a stored message or a moved watermark, in the
 * batch's transaction. */
static int outbox_add(sqlite_store_t *s, store_op_t *op)
{
	sqlite3_stmt *st = q(s, Q_OUTBOX_INSERT);
	int send = op->kind == STORE_OP_SEND;

	sqlite3_bind_int64(st, 1, op->conv);
	sqlite3_bind_int(st, 2, send ? STORE_EVENT_MESSAGE
	                             : op->state == STORE_READ ? STORE_EVENT_READ : STORE_EVENT_DELIVERED);
	sqlite3_bind_int64(st, 3, op->out_seq);
	sqlite3_bind_int64(st, 4, op->user);
	if (send)
		sqlite3_bind_int64(st, 5, op->out_id);
	else
		sqlite3_bind_null(st, 5);
	sqlite3_bind_int64(st, 6, op->now_ms);
	if (sqlite3_step(st) != SQLITE_DONE) {
		sqlite3_reset(st);
		return fail(s, "outbox row");
	}
	sqlite3_reset(st);
	op->out_outbox = sqlite3_last_insert_rowid(s->db);
	return STORE_OK;
}

static int sq_apply(store_t *base, store_op_t *ops, size_t n)
{
	sqlite_store_t *s = S(base);
	size_t i;

	if (exec(s, Q_BEGIN) != STORE_OK)
		goto err;
	for (i = 0; i < n; i++) {
		store_op_t *op = &ops[i];
		op->members = NULL;
		op->nmembers = 0;
		op->out_outbox = 0;
		op->status = op->kind == STORE_OP_SEND ? apply_send(s, op) : apply_receipt(s, op);
		if (op->status == STORE_OK && s->outbox &&
		    (op->kind == STORE_OP_SEND || op->applied) && outbox_add(s, op) != STORE_OK)
			op->status = STORE_ERROR;
		if (op->status == STORE_ERROR) {
			exec(s, Q_ROLLBACK);
			goto err;
		}
		/* A direct chat's two members ride along; a group's up to 1,024
		 * are read by the fan-out, off the commit's path. */
		if (op->status == STORE_OK && op->conv_kind == STORE_DIRECT &&
		    load_members(s, op->conv, &op->members, &op->nmembers) != STORE_OK) {
			exec(s, Q_ROLLBACK);
			goto err;
		}
	}
	if (exec(s, Q_COMMIT) != STORE_OK) {
		exec(s, Q_ROLLBACK);
		goto err;
	}
	for (i = 0; i < n; i++)
		s->unindexed += ops[i].kind == STORE_OP_SEND && ops[i].status == STORE_OK;
	/* After the commit, so no ack waits for it; a failure leaves the
	 * queue for the next pass. */
	if (n && s->unindexed &&
	    (s->unindexed >= FTS_INDEX_EVERY || ops[n - 1].now_ms - s->indexed_at >= FTS_INDEX_MS)) {
		fts_index(s);
		s->unindexed = 0;
		s->indexed_at = ops[n - 1].now_ms;
	}
	return STORE_OK;
err:
	for (i = 0; i < n; i++) {
		store_op_release(&ops[i]);
		ops[i].status = STORE_ERROR;
		ops[i].out_outbox = 0;
	}
	return STORE_ERROR;
}

static int sq_set_outbox(store_t *base, int on)
{
	S(base)->outbox = on != 0;
	return STORE_OK;
}

static int sq_set_lazy_commit(store_t *base, int on)
{
	sqlite_store_t *s = S(base);

	if (sqlite3_exec(s->db, on ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL", NULL, NULL, NULL) !=
	    SQLITE_OK)
		return fail(s, "synchronous");
	return STORE_OK;
}

static int sq_outbox_take(store_t *base, int64_t now_ms, int64_t age_ms, size_t max_rows,
                          store_outbox_t **out, size_t *n)
{
	sqlite_store_t *s = S(base);
	store_outbox_t *rows = NULL;
	sqlite3_stmt *st;
	size_t k = 0, i;
	int rc = SQLITE_DONE;

	*out = NULL;
	*n = 0;
	if (!max_rows)
		return STORE_OK;
	if (!(rows = calloc(max_rows, sizeof *rows)))
		return STORE_ERROR;
	if (exec(s, Q_BEGIN) != STORE_OK) {
		free(rows);
		return STORE_ERROR;
	}
	st = q(s, Q_OUTBOX_TAKE);
	sqlite3_bind_int64(st, 1, now_ms - age_ms);
	sqlite3_bind_int64(st, 2, max_rows > INT32_MAX ? INT32_MAX : (int64_t)max_rows);
	while (k < max_rows && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		store_outbox_t *r = &rows[k++];
		r->id = sqlite3_column_int64(st, 0);
		r->conv = sqlite3_column_int64(st, 1);
		r->kind = sqlite3_column_int(st, 2);
		r->seq = sqlite3_column_int64(st, 3);
		r->user = sqlite3_column_int64(st, 4);
		r->created_at = sqlite3_column_int64(st, 5);
		if (r->kind == STORE_EVENT_MESSAGE && sqlite3_column_type(st, 6) != SQLITE_NULL &&
		    read_message_at(st, 6, r->conv, &r->msg) != STORE_OK) {
			rc = SQLITE_NOMEM;
			break;
		}
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		goto err;
	for (i = 0; i < k; i++) {
		st = q(s, Q_OUTBOX_MARK);
		sqlite3_bind_int64(st, 1, rows[i].id);
		sqlite3_bind_int64(st, 2, now_ms);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE)
			goto err;
	}
	if (exec(s, Q_COMMIT) != STORE_OK)
		goto err;
	*out = rows;
	*n = k;
	return STORE_OK;
err:
	fail(s, "outbox take");
	exec(s, Q_ROLLBACK);
	store_outbox_free(rows, k);
	return STORE_ERROR;
}

static int sq_outbox_delete(store_t *base, const int64_t *ids, size_t n)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st;
	size_t i;
	int rc;

	if (!n)
		return STORE_OK;
	if (exec(s, Q_BEGIN) != STORE_OK)
		return STORE_ERROR;
	for (i = 0; i < n; i++) {
		st = q(s, Q_OUTBOX_DELETE);
		sqlite3_bind_int64(st, 1, ids[i]);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc != SQLITE_DONE) {
			fail(s, "outbox delete");
			exec(s, Q_ROLLBACK);
			return STORE_ERROR;
		}
	}
	if (exec(s, Q_COMMIT) != STORE_OK) {
		exec(s, Q_ROLLBACK);
		return STORE_ERROR;
	}
	return STORE_OK;
}

static int sq_watchable(store_t *base, int64_t user_id, int64_t candidate, int64_t *last_seen)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_WATCHABLE);
	char key[48];
	int rc;

	direct_key(key, user_id, candidate);
	sqlite3_bind_int64(st, 1, user_id);
	sqlite3_bind_int64(st, 2, candidate);
	sqlite3_bind_text(st, 3, key, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*last_seen = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		return STORE_OK;
	return rc == SQLITE_DONE ? STORE_FORBIDDEN : fail(s, "watchable");
}

static int sq_shares_conversation(store_t *base, int64_t user_id, int64_t other)
{
	int64_t one;
	int r = query_int(S(base), Q_SHARES, user_id, other, &one);

	return r == STORE_NOT_FOUND ? STORE_FORBIDDEN : r;
}

static int sq_contact(store_t *base, int64_t user_id, int64_t other, store_contact_t *c)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_BLOCK_STATE);
	char key[48];
	int rc, exists = 0;

	memset(c, 0, sizeof *c);
	sqlite3_bind_int64(st, 1, user_id);
	sqlite3_bind_int64(st, 2, other);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		exists = sqlite3_column_int(st, 0);
		c->i_blocked = sqlite3_column_int(st, 1);
		c->they_blocked = sqlite3_column_int(st, 2);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_ROW)
		return fail(s, "contact");
	if (!exists)
		return STORE_NOT_FOUND;
	st = q(s, Q_DIRECT_STATE);
	direct_key(key, user_id, other);
	sqlite3_bind_int64(st, 1, user_id);
	sqlite3_bind_int64(st, 2, other);
	sqlite3_bind_text(st, 3, key, -1, SQLITE_TRANSIENT);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		c->direct = sqlite3_column_int64(st, 0);
		c->i_wrote = sqlite3_column_int(st, 1);
		c->they_wrote = sqlite3_column_int(st, 2);
	}
	sqlite3_reset(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? STORE_OK : fail(s, "direct state");
}

static int sq_settings_get(store_t *base, int64_t user_id, store_settings_t *out)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_SETTINGS);
	int rc;

	sqlite3_bind_int64(st, 1, user_id);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		out->group_adds = sqlite3_column_int(st, 0);
		out->strangers_exempt = sqlite3_column_int(st, 1);
		out->push_previews = sqlite3_column_int(st, 2);
	}
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		return STORE_OK;
	return rc == SQLITE_DONE ? STORE_NOT_FOUND : fail(s, "settings");
}

/* Runs an UPDATE of one user's row; STORE_NOT_FOUND when there is none. */
static int update_user(sqlite_store_t *s, int which, int64_t user_id, int64_t value)
{
	sqlite3_stmt *st = q(s, which);
	int rc;

	sqlite3_bind_int64(st, 1, user_id);
	sqlite3_bind_int64(st, 2, value);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return fail(s, queries[which]);
	return sqlite3_changes(s->db) ? STORE_OK : STORE_NOT_FOUND;
}

static int sq_set_group_adds(store_t *base, int64_t user_id, int group_adds)
{
	return update_user(S(base), Q_SET_GROUP_ADDS, user_id, group_adds);
}

static int sq_set_strangers_exempt(store_t *base, int64_t user_id, int exempt)
{
	return update_user(S(base), Q_SET_EXEMPT, user_id, exempt);
}

static int sq_set_push_previews(store_t *base, int64_t user_id, int on)
{
	return update_user(S(base), Q_SET_PREVIEWS, user_id, on != 0);
}

static int sq_set_muted(store_t *base, int64_t conv_id, int64_t user_id, int on)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_SET_MUTED);
	int rc;

	sqlite3_bind_int64(st, 1, conv_id);
	sqlite3_bind_int64(st, 2, user_id);
	sqlite3_bind_int(st, 3, on != 0);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return fail(s, "mute");
	return sqlite3_changes(s->db) ? STORE_OK : STORE_FORBIDDEN;
}

/* Inserts or deletes the block of target by user_id, and brings their
 * direct chat's marks in line, in one transaction. */
static int change_block(sqlite_store_t *s, int64_t user_id, int64_t target, int64_t now_ms, int add)
{
	sqlite3_stmt *st;
	int64_t one, conv;
	int rc, r;

	if (exec(s, Q_BEGIN) != STORE_OK)
		return STORE_ERROR;
	if ((r = query_int(s, Q_USER_EXISTS, target, 0, &one)) != STORE_OK)
		return finish(s, r);
	st = q(s, add ? Q_BLOCK_INSERT : Q_BLOCK_DELETE);
	sqlite3_bind_int64(st, 1, user_id);
	sqlite3_bind_int64(st, 2, target);
	if (add)
		sqlite3_bind_int64(st, 3, now_ms);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (add && rc == SQLITE_CONSTRAINT)
		return finish(s, STORE_EXISTS);
	if (rc != SQLITE_DONE)
		return finish(s, fail(s, "block"));
	if (!add && !sqlite3_changes(s->db))
		return finish(s, STORE_NOT_FOUND);
	if ((r = find_direct(s, user_id, target, &conv)) == STORE_OK && conv)
		r = sync_blocks(s, conv, user_id, target);
	return finish(s, r);
}

static int sq_block(store_t *base, int64_t user_id, int64_t target, int64_t now_ms)
{
	return change_block(S(base), user_id, target, now_ms, 1);
}

static int sq_unblock(store_t *base, int64_t user_id, int64_t target)
{
	return change_block(S(base), user_id, target, 0, 0);
}

static int sq_blocks(store_t *base, int64_t user_id, int64_t after, size_t limit, store_block_t **out,
                     size_t *n, int *has_more)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_BLOCKS);
	size_t cap = 0;
	int rc;

	*out = NULL;
	*n = 0;
	*has_more = 0;
	sqlite3_bind_int64(st, 1, user_id);
	sqlite3_bind_int64(st, 2, after);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)limit + 1);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (*n == limit) {
			*has_more = 1;
			continue;
		}
		if (*n == cap) {
			store_block_t *b;
			cap = cap ? cap * 2 : 16;
			if (!(b = realloc(*out, cap * sizeof *b))) {
				rc = SQLITE_NOMEM;
				break;
			}
			*out = b;
		}
		(*out)[*n].user_id = sqlite3_column_int64(st, 0);
		(*out)[*n].created_at = sqlite3_column_int64(st, 1);
		(*n)++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		free(*out);
		*out = NULL;
		*n = 0;
		return fail(s, "blocks");
	}
	return STORE_OK;
}

static int sq_blocked_in_conv(store_t *base, int64_t user_id, int64_t conv_id, int64_t **ids, size_t *n)
{
	/* ?1 the user, ?2 the conversation: load_ids_arg binds ?1 = its
	 * first argument. */
	return load_ids_arg(S(base), Q_BLOCKED_IN_CONV, user_id, conv_id, ids, n);
}

static int sq_blocks_received(store_t *base, int64_t user_id, int64_t since_ms, int64_t *count)
{
	return query_int(S(base), Q_BLOCKS_RECEIVED, user_id, since_ms, count);
}

static int sq_first_contacts(store_t *base, int64_t user_id, int64_t since_ms, int64_t *count)
{
	return query_int(S(base), Q_FIRST_COUNT, user_id, since_ms, count);
}

static int sq_first_contact_at(store_t *base, int64_t user_id, int64_t since_ms, int64_t nth,
                               int64_t *ts)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_FIRST_AT);
	int rc;

	sqlite3_bind_int64(st, 1, user_id);
	sqlite3_bind_int64(st, 2, since_ms);
	sqlite3_bind_int64(st, 3, nth);
	if ((rc = sqlite3_step(st)) == SQLITE_ROW)
		*ts = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (rc == SQLITE_ROW)
		return STORE_OK;
	return rc == SQLITE_DONE ? STORE_NOT_FOUND : fail(s, "first contact");
}

static int sq_first_contacts_add(store_t *base, int64_t user_id, const int64_t *targets, size_t n,
                                 int64_t now_ms)
{
	sqlite_store_t *s = S(base);
	size_t i;
	int r = STORE_OK;

	if (!n)
		return STORE_OK;
	if (exec(s, Q_BEGIN) != STORE_OK)
		return STORE_ERROR;
	for (i = 0; i < n && r == STORE_OK; i++) {
		sqlite3_stmt *st = q(s, Q_FIRST_INSERT);
		sqlite3_bind_int64(st, 1, user_id);
		sqlite3_bind_int64(st, 2, targets[i]);
		sqlite3_bind_int64(st, 3, now_ms);
		if (sqlite3_step(st) != SQLITE_DONE)
			r = fail(s, "first contact insert");
		sqlite3_reset(st);
	}
	return finish(s, r);
}

static int sq_expire_first_contacts(store_t *base, int64_t before_ms, size_t max_rows, size_t *deleted)
{
	sqlite_store_t *s = S(base);
	sqlite3_stmt *st = q(s, Q_FIRST_EXPIRE);
	int rc;

	sqlite3_bind_int64(st, 1, before_ms);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)max_rows);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return fail(s, "first contact expiry");
	*deleted = (size_t)sqlite3_changes(s->db);
	return STORE_OK;
}

static int sq_last_seen_set(store_t *base, const int64_t *users, const int64_t *times, size_t n)
{
	sqlite_store_t *s = S(base);
	size_t i;
	int r = STORE_OK;

	if (exec(s, Q_BEGIN) != STORE_OK)
		return STORE_ERROR;
	for (i = 0; i < n && r == STORE_OK; i++) {
		sqlite3_stmt *st = q(s, Q_LAST_SEEN_SET);
		sqlite3_bind_int64(st, 1, users[i]);
		sqlite3_bind_int64(st, 2, times[i]);
		if (sqlite3_step(st) != SQLITE_DONE)
			r = fail(s, "last seen");
		sqlite3_reset(st);
	}
	return finish(s, r);
}

static const store_vtab_t sqlite_vtab = {
	.close = sq_close,
	.user_create = sq_user_create,
	.user_by_name = sq_user_by_name,
	.user_by_id = sq_user_by_id,
	.device_create = sq_device_create,
	.device_by_token = sq_device_by_token,
	.device_delete = sq_device_delete,
	.direct_open = sq_direct_open,
	.conv_get = sq_conv_get,
	.conv_list = sq_conv_list,
	.history = sq_history,
	.receipts = sq_receipts,
	.member_head = sq_member_head,
	.members = sq_members,
	.member_list = sq_member_list,
	.read_count = sq_read_count,
	.unread_total = sq_unread_total,
	.push_mark = sq_push_mark,
	.push_pending = sq_push_pending,
	.search = sq_search,
	.watermarks = sq_watermarks,
	.expire_receipts = sq_expire_receipts,
	.watchable = sq_watchable,
	.shares_conversation = sq_shares_conversation,
	.contact = sq_contact,
	.settings_get = sq_settings_get,
	.set_group_adds = sq_set_group_adds,
	.set_push_previews = sq_set_push_previews,
	.set_muted = sq_set_muted,
	.set_strangers_exempt = sq_set_strangers_exempt,
	.block = sq_block,
	.unblock = sq_unblock,
	.blocks = sq_blocks,
	.blocked_in_conv = sq_blocked_in_conv,
	.blocks_received = sq_blocks_received,
	.first_contacts = sq_first_contacts,
	.first_contact_at = sq_first_contact_at,
	.first_contacts_add = sq_first_contacts_add,
	.expire_first_contacts = sq_expire_first_contacts,
	.devices = sq_devices,
	.push_target_put = sq_push_target_put,
	.push_targets = sq_push_targets,
	.push_target_delete = sq_push_target_delete,
	.server_key_get = sq_server_key_get,
	.server_key_add = sq_server_key_add,
	.last_seen_set = sq_last_seen_set,
	.senders = sq_senders,
	.group_create = sq_group_create,
	.member_add = sq_member_add,
	.member_remove = sq_member_remove,
	.heads = sq_heads,
	.replay = sq_replay,
	.apply = sq_apply,
	.set_outbox = sq_set_outbox,
	.set_lazy_commit = sq_set_lazy_commit,
	.outbox_take = sq_outbox_take,
	.outbox_delete = sq_outbox_delete,
};

/* ---- the backend's entry ------------------------------------------ */

static int sqlite_accepts(const char *location)
{
	/* Anything that is not a URL of another backend is a directory. */
	return strncmp(location, "sqlite:", 7) == 0 || !strstr(location, "://");
}

static store_t *sqlite_open(const char *location)
{
	return sqlite_open_dir(dir_of(location), NULL);
}

typedef struct sqlite_claim {
	store_claim_t base;
	int lockfd;
} sqlite_claim_t;

/* Creates the data directory if missing and takes its lock, so that two
 * servers never share one store. Returns the lock's fd or -1 (logged). */
static int data_dir_lock(const char *dir)
{
	char path[4200];
	struct stat st;
	int fd;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		log_error("cannot create data directory %s: %s", dir, strerror(errno));
		return -1;
	}
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		log_error("data directory %s is not a directory", dir);
		return -1;
	}
	if (access(dir, R_OK | W_OK | X_OK) < 0) {
		log_error("data directory %s is not writable: %s", dir, strerror(errno));
		return -1;
	}
	snprintf(path, sizeof path, "%s/LOCK", dir);
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		log_error("cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		log_error("data directory %s is in use by another parley process", dir);
		close(fd);
		return -1;
	}
	return fd;
}

static void sqlite_release(store_claim_t *claim)
{
	sqlite_claim_t *c = (sqlite_claim_t *)claim;

	close(c->lockfd);
	free(c);
}

static store_claim_t *sqlite_claim(const char *location)
{
	sqlite_claim_t *c = calloc(1, sizeof *c);
	store_t *st;

	if (!c)
		return NULL;
	c->base.backend = &store_sqlite_backend;
	if ((c->lockfd = data_dir_lock(dir_of(location))) < 0) {
		free(c);
		return NULL;
	}
	/* Opened once here, under the lock, so that the schema is brought
	 * up to date, or refused, before anything is served. */
	if (!(st = sqlite_open_dir(dir_of(location), NULL))) {
		sqlite_release(&c->base);
		return NULL;
	}
	store_close(st);
	return &c->base;
}

static int sqlite_migrate(const char *location, int *from, int *to)
{
	store_t *st;
	int fd;

	/* Under the lock: never under a node that is serving the file. */
	if ((fd = data_dir_lock(dir_of(location))) < 0)
		return -1;
	st = sqlite_open_dir(dir_of(location), from);
	close(fd);
	if (!st)
		return -1;
	store_close(st);
	*to = SCHEMA_VERSION;
	return 0;
}

const store_backend_t store_sqlite_backend = {
	.name = "SQLite",
	.accepts = sqlite_accepts,
	.open = sqlite_open,
	.claim = sqlite_claim,
	.release = sqlite_release,
	.migrate = sqlite_migrate,
	.memory_bytes = sqlite_memory_bytes,
	/* One writer at a time holds the database's write lock: a second
	 * handle would only wait for it. */
	.writers = 1,
};
