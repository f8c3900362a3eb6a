/* api_convs.c - the API's endpoints about conversations (api_internal.h):
 * creating them, the paged list, history, receipts, and group membership.
 *
 * Who may reach whom is decided here, above the store: a user who blocked
 * the caller cannot be brought into a chat or group by it; a user who
 * accepts group adds only from its contacts is added only by them; and
 * each time the caller reaches someone who never wrote to it (a new direct
 * chat, a group add) it spends its first-contact budget, so that one
 * account cannot mass-message strangers, while replies, contacts and
 * exempted accounts are never limited. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "http.h"
#include "ids.h"
#include "log.h"
#include "loop.h"
#include "presence.h"

#define TITLE_MAX 128
/* The list's default page is its largest: a client that knows nothing of
 * cursors still gets its 200 most recent conversations at once. */
#define LIST_LIMIT_DEFAULT 200
#define LIST_LIMIT_MAX 200
#define DAY_MS 86400000LL
/* Blocks received in this window shrink the first-contact budget. */
#define BLOCKS_WINDOW_MS (30 * DAY_MS)

static const char *kind_name(int kind)
{
	return kind == STORE_GROUP ? "group" : "direct";
}

static void conv_head_json(jbuf_t *b, const store_conv_t *c)
{
	size_t i;

	jbuf_lit(b, "{\"conversation_id\":");
	jbuf_int(b, c->id);
	jbuf_lit(b, ",\"kind\":");
	jbuf_cstr(b, kind_name(c->kind));
	jbuf_lit(b, ",\"title\":");
	jbuf_cstr(b, c->title);
	jbuf_lit(b, ",\"members\":[");
	for (i = 0; i < c->nmembers; i++) {
		if (i)
			jbuf_raw(b, ",", 1);
		jbuf_int(b, c->members[i]);
	}
	jbuf_lit(b, "]");
	if (c->kind == STORE_GROUP) {
		jbuf_lit(b, ",\"admins\":[");
		for (i = 0; i < c->nadmins; i++) {
			if (i)
				jbuf_raw(b, ",", 1);
			jbuf_int(b, c->admins[i]);
		}
		jbuf_lit(b, "]");
	} else {
		/* Whether the caller has answered: a chat it never wrote in is a
		 * stranger's first message, shown with Block at hand. */
		jbuf_lit(b, c->wrote ? ",\"contact\":true" : ",\"contact\":false");
		jbuf_lit(b, c->blocked ? ",\"blocked\":true" : ",\"blocked\":false");
	}
}

/* The full entry of the conversation list. */
static void conv_entry_json(jbuf_t *b, const store_conv_t *c)
{
	conv_head_json(b, c);
	jbuf_lit(b, ",\"last_seq\":");
	jbuf_int(b, c->last_seq);
	jbuf_lit(b, ",\"last_message\":");
	if (c->last_message)
		api_message_json(b, c->last_message);
	else
		jbuf_lit(b, "null");
	jbuf_lit(b, ",\"read_seq\":");
	jbuf_int(b, c->read_seq);
	jbuf_lit(b, ",\"unread\":");
	jbuf_int(b, c->unread);
	jbuf_lit(b, c->muted ? ",\"muted\":true}" : ",\"muted\":false}");
}

/* ---- who may reach whom --------------------------------------------- */

/* The refusal when the caller may not bring a user into a group: one text
 * whether that user blocked the caller or takes adds from contacts only,
 * so it reveals no block. */
#define NO_GROUP_ADD "this user cannot be added to groups by you"

/* Whether the caller may bring target into a new direct chat (group 0)
 * or a group (group 1). Returns 0 with *stranger set when target has never
 * written to the caller, or -1 after refusing. */
static int may_reach(store_t *st, api_req_t *rq, int64_t target, int group, int *stranger,
                     api_res_t *res)
{
	store_contact_t c;
	store_settings_t s;
	int r;

	if ((r = store_contact(st, rq->user, target, &c)) == STORE_NOT_FOUND) {
		api_fail_about(res, 404, "not_found", "no such user", target);
		return -1;
	}
	if (r != STORE_OK) {
		api_fail_store(res, r);
		return -1;
	}
	if (c.i_blocked) {
		api_fail_about(res, 403, "forbidden", "you have blocked this user; unblock them first", target);
		return -1;
	}
	if (c.they_blocked) {
		api_fail_about(res, 403, "forbidden", group ? NO_GROUP_ADD : "you cannot start a conversation with this user",
		               target);
		return -1;
	}
	if (group) {
		if ((r = store_settings_get(st, target, &s)) != STORE_OK) {
			api_fail_store(res, r);
			return -1;
		}
		if (s.group_adds == STORE_ADDS_CONTACTS && !c.they_wrote) {
			api_fail_about(res, 403, "forbidden", NO_GROUP_ADD, target);
			return -1;
		}
	}
	*stranger = !c.they_wrote;
	return 0;
}

/* The first-contact budget: may the caller reach k more people who never
 * wrote to it? Each account may reach --strangers-per-day of them a day;
 * each block it received in the last 30 days shrinks that (ten blocks
 * halve it), and an account an operator exempted is never limited.
 * Returns 0, or -1 after refusing (429 with when to retry). */
static int first_contact_budget(store_t *st, api_req_t *rq, size_t k, api_res_t *res)
{
	unsigned per_day = rq->srv->cfg.strangers_per_day;
	int64_t now = clock_wall_ms(), blocks, count, cap, ts;
	store_settings_t s;
	char msg[160];
	int r;

	if (k == 0 || per_day == 0)
		return 0;
	if ((r = store_settings_get(st, rq->user, &s)) != STORE_OK ||
	    (!s.strangers_exempt &&
	     ((r = store_blocks_received(st, rq->user, now - BLOCKS_WINDOW_MS, &blocks)) != STORE_OK ||
	      (r = store_first_contacts(st, rq->user, now - DAY_MS, &count)) != STORE_OK))) {
		api_fail_store(res, r);
		return -1;
	}
	if (s.strangers_exempt)
		return 0;
	cap = (int64_t)per_day * 10 / (10 + blocks);
	if ((int64_t)k > cap) {
		snprintf(msg, sizeof msg,
		         "you may reach at most %lld people a day who have not written to you", (long long)cap);
		api_fail(res, 403, "forbidden", msg);
		return -1;
	}
	if (count + (int64_t)k <= cap)
		return 0;
	/* Room comes when the oldest contacts in the window age out of it. */
	if ((r = store_first_contact_at(st, rq->user, now - DAY_MS, count + (int64_t)k - cap - 1, &ts)) !=
	    STORE_OK) {
		api_fail_store(res, r);
		return -1;
	}
	log_debug("api: user %lld has reached %lld people who never wrote to it today (its budget %lld)",
	          (long long)rq->user, (long long)count, (long long)cap);
	api_fail_retry(res, "you have started too many conversations with people who have not written to you; "
	                    "try again later",
	               ts + DAY_MS - now > 0 ? ts + DAY_MS - now : 1);
	return -1;
}

/* The budget is checked, spent and recorded by one worker at a time per
 * user: without it, one client's concurrent requests on several workers
 * would each see the same room and pass it many times over. */
#define REACH_LOCKS 64
static pthread_mutex_t reach_locks[REACH_LOCKS];
static pthread_once_t reach_once = PTHREAD_ONCE_INIT;

static void reach_init(void)
{
	int i;

	for (i = 0; i < REACH_LOCKS; i++)
		pthread_mutex_init(&reach_locks[i], NULL);
}

static pthread_mutex_t *reach_lock(int64_t user)
{
	pthread_once(&reach_once, reach_init);
	return &reach_locks[(uint64_t)user % REACH_LOCKS];
}

/* The refusal for STORE_TOO_MANY. */
static void fail_too_many(api_req_t *rq, int64_t full, api_res_t *res)
{
	char msg[160];

	if (full == rq->user)
		snprintf(msg, sizeof msg, "you are in %u conversations, the most allowed; leave some first",
		         rq->srv->cfg.max_conversations);
	else
		snprintf(msg, sizeof msg, "user %lld is in %u conversations, the most allowed", (long long)full,
		         rq->srv->cfg.max_conversations);
	api_fail(res, 409, "conflict", msg);
}

/* ---- conversations -------------------------------------------------- */

void api_create_conversation(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	json_t *j, *members, *v, *title;
	int64_t id, conv, full = 0, *others = NULL, *strangers = NULL;
	pthread_mutex_t *lock = NULL;
	const char *t = NULL;
	store_contact_t c;
	store_conv_t cv;
	size_t i, k, n = 0, nstrangers = 0;
	int created = 1, r, stranger;

	(void)ids;
	if (api_authenticate(st, rq, res) < 0)
		return;
	if (!(j = api_parse_body(rq, res)))
		return;
	members = json_object_get(j, "members");
	title = json_object_get(j, "title");
	if (!json_is_array(members) || json_array_size(members) == 0) {
		api_fail(res, 400, "bad_request", "members must be a non-empty array of user ids");
		goto out;
	}
	if (json_array_size(members) > 4 * STORE_GROUP_MAX) {
		api_fail(res, 400, "bad_request", "a group has at most 1024 members");
		goto out;
	}
	if (title && !json_is_null(title)) {
		if (!json_is_string(title) || json_string_length(title) < 1 ||
		    json_string_length(title) > TITLE_MAX) {
			api_fail(res, 400, "bad_request", "title must be a string of 1 to 128 bytes");
			goto out;
		}
		t = json_string_value(title);
	}
	if (!(others = malloc(json_array_size(members) * sizeof *others)) ||
	    !(strangers = malloc(json_array_size(members) * sizeof *strangers))) {
		api_fail(res, 500, "internal", "out of memory");
		goto out;
	}
	/* The other members, each once; naming oneself is harmless. */
	json_array_foreach(members, i, v) {
		if (id_from_json(v, 1, &id) < 0) {
			api_fail(res, 400, "bad_request", "members must be user ids");
			goto out;
		}
		for (k = 0; k < n && others[k] != id; k++)
			;
		if (id != rq->user && k == n)
			others[n++] = id;
	}
	if (n == 0) {
		api_fail(res, 400, "bad_request", "members must name someone other than yourself");
		goto out;
	}
	if (n + 1 > STORE_GROUP_MAX) {
		api_fail(res, 400, "bad_request", "a group has at most 1024 members");
		goto out;
	}
	/* Three lookups a member: contact, settings, and its insert. */
	if (api_charge(rq, res, 2 + 3.0 * (double)n) < 0)
		goto out;
	pthread_mutex_lock(lock = reach_lock(rq->user));
	if (n == 1) {
		/* An existing direct chat is only found again, whoever blocked
		 * whom since: nothing new reaches anyone. */
		if ((r = store_contact(st, rq->user, others[0], &c)) == STORE_NOT_FOUND) {
			api_fail(res, 404, "not_found", "no such user");
			goto out;
		}
		if (r != STORE_OK) {
			api_fail_store(res, r);
			goto out;
		}
		if (!c.direct) {
			if (may_reach(st, rq, others[0], 0, &stranger, res) < 0 ||
			    first_contact_budget(st, rq, 1, res) < 0)
				goto out;
			strangers[nstrangers++] = others[0];
		}
		r = store_direct_open(st, rq->user, others[0], clock_wall_ms(), rq->srv->cfg.max_conversations,
		                      &conv, &created, &full);
	} else {
		for (i = 0; i < n; i++) {
			if (may_reach(st, rq, others[i], 1, &stranger, res) < 0)
				goto out;
			if (stranger)
				strangers[nstrangers++] = others[i];
		}
		if (first_contact_budget(st, rq, nstrangers, res) < 0)
			goto out;
		r = store_group_create(st, rq->user, others, n, t, clock_wall_ms(), rq->srv->cfg.max_conversations,
		                       &conv, &full);
	}
	if (r == STORE_NOT_FOUND) {
		api_fail(res, 404, "not_found", "no such user");
		goto out;
	}
	if (r == STORE_TOO_MANY) {
		fail_too_many(rq, full, res);
		goto out;
	}
	if (r != STORE_OK || (r = store_conv_get(st, conv, rq->user, &cv)) != STORE_OK) {
		api_fail_store(res, r);
		goto out;
	}
	if (created && nstrangers && store_first_contacts_add(st, rq->user, strangers, nstrangers,
	                                                      clock_wall_ms()) != STORE_OK)
		log_warn("api: user %lld's first contacts not recorded", (long long)rq->user);
	pthread_mutex_unlock(lock);
	lock = NULL;
	res->status = created ? 201 : 200;
	conv_head_json(&res->body, &cv);
	jbuf_lit(&res->body, "}");
	store_conv_clear(&cv);
	if (n > 1) {
		log_info("api: user %lld created group %lld of %zu members", (long long)rq->user, (long long)conv,
		         n + 1);
		api_announce(st, rq->srv, conv, "created", 0, rq->user, 0);
	}
out:
	if (lock)
		pthread_mutex_unlock(lock);
	free(others);
	free(strangers);
	json_decref(j);
}

void api_get_conversation(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	store_conv_t c;
	int r;

	if (api_authenticate(st, rq, res) < 0 || api_charge(rq, res, 5) < 0)
		return;
	if ((r = store_conv_get(st, ids[0], rq->user, &c)) != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	res->status = 200;
	conv_entry_json(&res->body, &c);
	store_conv_clear(&c);
}

/* PATCH /api/v1/conversations/:id {"muted":true|false}: the caller's own
 * view of a conversation. Muted, its messages still arrive and count as
 * unread, but wake none of the caller's devices. Unknown fields are
 * refused, so a typo is not silently ignored. */
void api_patch_conversation(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	json_t *j, *v;
	const char *key;
	store_conv_t c;
	int r, muted = -1;

	if (api_authenticate(st, rq, res) < 0 || api_charge(rq, res, 5) < 0 || !(j = api_parse_body(rq, res)))
		return;
	json_object_foreach(j, key, v) {
		if (strcmp(key, "muted") != 0) {
			api_fail(res, 400, "bad_request", "conversation: the only field is muted");
			json_decref(j);
			return;
		}
		if (!json_is_boolean(v)) {
			api_fail(res, 400, "bad_request", "muted must be true or false");
			json_decref(j);
			return;
		}
		muted = json_is_true(v);
	}
	json_decref(j);
	if ((muted >= 0 && (r = store_set_muted(st, ids[0], rq->user, muted)) != STORE_OK) ||
	    (r = store_conv_get(st, ids[0], rq->user, &c)) != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	res->status = 200;
	conv_entry_json(&res->body, &c);
	store_conv_clear(&c);
}

/* A list cursor is "ACTIVITY.ID" of the last entry of the previous page. */
static int parse_cursor(const api_req_t *rq, api_res_t *res, store_conv_cursor_t *c, int *given)
{
	char v[48], *dot;
	int n = http_query_param(rq->target, rq->target_len, "cursor", v, sizeof v);

	*given = 0;
	if (n == -1)
		return 0;
	if (n < 0 || !(dot = strchr(v, '.')) || id_parse64(v, (size_t)(dot - v), &c->activity) < 0 ||
	    id_parse(dot + 1, strlen(dot + 1), 1, &c->id) < 0) {
		api_fail(res, 400, "bad_request", "cursor must be a next_cursor this endpoint gave");
		return -1;
	}
	*given = 1;
	return 0;
}

/* GET /api/v1/conversations?cursor=C&limit=N: a page of the caller's
 * conversations, most recent activity first, at most N (default 100, at
 * most 200) and at most API_PAGE_BYTES of entries; next_cursor names the
 * next page, null after the last. */
void api_list_conversations(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	int64_t limit = LIST_LIMIT_DEFAULT;
	store_conv_cursor_t after, last = {0, 0};
	store_conv_t *cs;
	jbuf_t entry;
	size_t n, i;
	int r, given, more;

	(void)ids;
	if (api_authenticate(st, rq, res) < 0 || parse_cursor(rq, res, &after, &given) < 0 ||
	    api_query_int(rq, res, "limit", 1, LIST_LIMIT_MAX, &limit) < 0 ||
	    api_charge(rq, res, 1 + 5.0 * (double)limit) < 0)
		return;
	if ((r = store_conv_list(st, rq->user, given ? &after : NULL, (size_t)limit, &cs, &n, &more)) !=
	    STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	res->status = 200;
	jbuf_lit(&res->body, "{\"conversations\":[");
	jbuf_init(&entry);
	for (i = 0; i < n; i++) {
		jbuf_reset(&entry);
		conv_entry_json(&entry, &cs[i]);
		if (i && res->body.len + entry.len > API_PAGE_BYTES) {
			more = 1; /* the rest on the next page */
			break;
		}
		if (i)
			jbuf_raw(&res->body, ",", 1);
		jbuf_raw(&res->body, entry.data, entry.len);
		last.activity = cs[i].activity;
		last.id = cs[i].id;
	}
	jbuf_free(&entry);
	jbuf_lit(&res->body, "],\"next_cursor\":");
	if (more && i) {
		char c[48];
		snprintf(c, sizeof c, "%lld.%lld", (long long)last.activity, (long long)last.id);
		jbuf_cstr(&res->body, c);
	} else {
		jbuf_lit(&res->body, "null");
	}
	jbuf_lit(&res->body, "}");
	store_convs_free(cs, n);
}

static void messages_json(jbuf_t *b, const store_message_t *ms, size_t n, int first)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (i || !first)
			jbuf_raw(b, ",", 1);
		api_message_json(b, &ms[i]);
	}
}

/* ?after=SEQ: the oldest N after SEQ; ?around=SEQ: N about SEQ, it and
 * the older half first (where a search result opens the chat). Both say
 * has_more (older ones remain: before= the oldest given) and has_newer
 * (after= the newest given). The bytes of a page are bounded as
 * backwards, half to each side around. */
static void history_from(store_t *st, api_req_t *rq, int64_t conv, int64_t at, int around, int64_t limit,
                         api_res_t *res)
{
	store_message_t *older = NULL, *newer = NULL;
	size_t nolder = 0, nnewer = 0;
	int64_t head, joined, newest, oldest;
	int has_more = 0, r;

	if ((r = store_member_head(st, conv, rq->user, &head, &joined)) != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	if (around) {
		int64_t want = limit - limit / 2; /* the seq itself and older */
		if ((r = store_history(st, conv, rq->user, at + 1, (int)want, API_PAGE_BYTES / 2, &older, &nolder,
		                       &has_more)) != STORE_OK) {
			api_fail_store(res, r);
			return;
		}
		limit -= want;
	}
	if (limit > 0 && (r = store_replay(st, conv, joined, at > joined ? at : joined, head, (size_t)limit,
	                                   around ? API_PAGE_BYTES / 2 : API_PAGE_BYTES, &newer, &nnewer)) !=
	                     STORE_OK) {
		store_messages_free(older, nolder);
		api_fail_store(res, r);
		return;
	}
	newest = nnewer ? newer[nnewer - 1].seq : nolder ? older[nolder - 1].seq : at > head ? head : at;
	oldest = nolder ? older[0].seq : nnewer ? newer[0].seq : newest + 1;
	if (!around)
		has_more = oldest > joined + 1;
	res->status = 200;
	jbuf_lit(&res->body, "{\"messages\":[");
	messages_json(&res->body, older, nolder, 1);
	messages_json(&res->body, newer, nnewer, nolder == 0);
	jbuf_lit(&res->body, "],\"has_more\":");
	jbuf_lit(&res->body, has_more ? "true" : "false");
	jbuf_lit(&res->body, ",\"has_newer\":");
	jbuf_lit(&res->body, newest < head ? "true" : "false");
	jbuf_lit(&res->body, "}");
	store_messages_free(older, nolder);
	store_messages_free(newer, nnewer);
}

/* GET …/messages?before=SEQ&limit=N: the newest N before SEQ, ascending,
 * as many of them as fit API_PAGE_BYTES (at least one); has_more when
 * older ones remain, which the next page asks for with before= the oldest
 * seq given. after= and around= page the other way (history_from). */
void api_history(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	int64_t before = -1, after = -1, around = -1, limit = 50;
	store_message_t *ms;
	jbuf_t *enc = NULL;
	size_t n, i, first, bytes = 0;
	int has_more, r;

	if (api_authenticate(st, rq, res) < 0 || api_query_int(rq, res, "before", 0, INT64_MAX, &before) < 0 ||
	    api_query_int(rq, res, "after", 0, INT64_MAX, &after) < 0 ||
	    api_query_int(rq, res, "around", 1, INT64_MAX, &around) < 0 ||
	    api_query_int(rq, res, "limit", 1, 200, &limit) < 0)
		return;
	if ((before >= 0) + (after >= 0) + (around >= 0) > 1) {
		api_fail(res, 400, "bad_request", "before, after and around: one at most");
		return;
	}
	if (api_charge(rq, res, 1 + (double)limit / 10) < 0)
		return;
	if (after >= 0 || around >= 0) {
		history_from(st, rq, ids[0], after >= 0 ? after : around, around >= 0, limit, res);
		return;
	}
	if (before == 0)
		before = 1; /* seq < 0: nothing, but the membership is still checked */
	r = store_history(st, ids[0], rq->user, before > 0 ? before : 0, (int)limit, API_PAGE_BYTES, &ms, &n,
	                  &has_more);
	if (r != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	/* Encode from the newest back until the page is full. */
	if (n && !(enc = calloc(n, sizeof *enc))) {
		store_messages_free(ms, n);
		api_fail(res, 500, "internal", "out of memory");
		return;
	}
	for (first = n; first > 0; first--) {
		jbuf_t *b = &enc[first - 1];
		jbuf_init(b);
		api_message_json(b, &ms[first - 1]);
		if (first < n && bytes + b->len > API_PAGE_BYTES) {
			jbuf_free(b);
			has_more = 1;
			break;
		}
		bytes += b->len;
	}
	res->status = 200;
	jbuf_lit(&res->body, "{\"messages\":[");
	for (i = first; i < n; i++) {
		if (i > first)
			jbuf_raw(&res->body, ",", 1);
		jbuf_raw(&res->body, enc[i].data, enc[i].len);
		jbuf_free(&enc[i]);
	}
	jbuf_lit(&res->body, "],\"has_more\":");
	jbuf_lit(&res->body, has_more ? "true" : "false");
	jbuf_lit(&res->body, "}");
	free(enc);
	store_messages_free(ms, n);
}

void api_receipts(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	int64_t conv = ids[0], seq = ids[1], count;
	store_receipt_t *rs;
	store_conv_t c;
	size_t n, i;
	int r, large;

	if (api_authenticate(st, rq, res) < 0 || api_charge(rq, res, 5) < 0)
		return;
	if ((r = store_conv_get(st, conv, rq->user, &c)) != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	large = c.kind == STORE_GROUP && c.nmembers > STORE_RECEIPT_DETAIL_MAX;
	n = c.nmembers;
	store_conv_clear(&c);
	if (!large && api_charge(rq, res, (double)n) < 0)
		return;
	if (large) {
		/* No per-member detail in large groups: the read count only. */
		if ((r = store_read_count(st, conv, rq->user, seq, &count)) != STORE_OK) {
			if (r == STORE_NOT_FOUND)
				api_fail(res, 404, "not_found", "no such message");
			else
				api_fail_store(res, r);
			return;
		}
		res->status = 200;
		jbuf_lit(&res->body, "{\"delivered\":null,\"read\":");
		jbuf_int(&res->body, count);
		jbuf_lit(&res->body, "}");
		return;
	}
	if ((r = store_receipts(st, conv, rq->user, seq, clock_wall_ms(), &rs, &n)) != STORE_OK) {
		if (r == STORE_NOT_FOUND)
			api_fail(res, 404, "not_found",
			         "no such message, or older than the 90 days receipt detail is kept");
		else
			api_fail_store(res, r);
		return;
	}
	res->status = 200;
	jbuf_lit(&res->body, "{\"receipts\":[");
	for (i = 0; i < n; i++) {
		if (i)
			jbuf_raw(&res->body, ",", 1);
		jbuf_lit(&res->body, "{\"user_id\":");
		jbuf_int(&res->body, rs[i].user_id);
		jbuf_lit(&res->body, ",\"delivered_at\":");
		if (rs[i].delivered_at)
			jbuf_int(&res->body, rs[i].delivered_at);
		else
			jbuf_lit(&res->body, "null");
		jbuf_lit(&res->body, ",\"read_at\":");
		if (rs[i].read_at)
			jbuf_int(&res->body, rs[i].read_at);
		else
			jbuf_lit(&res->body, "null");
		jbuf_lit(&res->body, "}");
	}
	jbuf_lit(&res->body, "]}");
	free(rs);
}

/* ---- members -------------------------------------------------------- */

/* True when sorted ids[0..n) holds id. */
static int has_id(const int64_t *ids, size_t n, int64_t id)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (ids[mid] == id)
			return 1;
		if (ids[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

void api_add_member(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	int64_t conv = ids[0], target, full = 0;
	pthread_mutex_t *lock;
	store_conv_t c;
	json_t *j;
	int r, stranger = 0, member;

	if (api_authenticate(st, rq, res) < 0 || api_charge(rq, res, 8) < 0 || !(j = api_parse_body(rq, res)))
		return;
	r = id_from_json(json_object_get(j, "user_id"), 1, &target);
	json_decref(j);
	if (r < 0) {
		api_fail(res, 400, "bad_request", "user_id must be a user id");
		return;
	}
	/* Rights first: who the target is, and whether it accepts the
	 * caller, is told only to an admin of the group. */
	if ((r = store_conv_get(st, conv, rq->user, &c)) != STORE_OK) {
		api_fail(res, 403, "forbidden", "only a group's admins add members");
		return;
	}
	member = has_id(c.members, c.nmembers, target);
	if (c.kind != STORE_GROUP)
		r = STORE_NOT_GROUP;
	else if (!has_id(c.admins, c.nadmins, rq->user))
		r = STORE_FORBIDDEN;
	store_conv_clear(&c);
	if (r == STORE_NOT_GROUP) {
		api_fail_store(res, r);
		return;
	}
	if (r == STORE_FORBIDDEN) {
		api_fail(res, 403, "forbidden", "only a group's admins add members");
		return;
	}
	/* A member already is no new reach: adding it again changes nothing. */
	pthread_mutex_lock(lock = reach_lock(rq->user));
	if (!member && (may_reach(st, rq, target, 1, &stranger, res) < 0 ||
	                first_contact_budget(st, rq, stranger ? 1 : 0, res) < 0)) {
		pthread_mutex_unlock(lock);
		return;
	}
	r = store_member_add(st, conv, rq->user, target, clock_wall_ms(), rq->srv->cfg.max_conversations, &full);
	if (r == STORE_OK && stranger &&
	    store_first_contacts_add(st, rq->user, &target, 1, clock_wall_ms()) != STORE_OK)
		log_warn("api: user %lld's first contact not recorded", (long long)rq->user);
	pthread_mutex_unlock(lock);
	if (r == STORE_OK || r == STORE_EXISTS) {
		res->status = 204;
		if (r == STORE_OK)
			api_announce(st, rq->srv, conv, "added", target, rq->user, 0);
	} else if (r == STORE_NOT_FOUND) {
		api_fail(res, 404, "not_found", "no such user");
	} else if (r == STORE_FORBIDDEN) {
		api_fail(res, 403, "forbidden", "only a group's admins add members");
	} else if (r == STORE_TOO_MANY) {
		fail_too_many(rq, full, res);
	} else {
		api_fail_store(res, r);
	}
}

void api_remove_member(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	int64_t conv = ids[0], target = ids[1], promoted;
	int r;

	if (api_authenticate(st, rq, res) < 0 || api_charge(rq, res, 5) < 0)
		return;
	r = store_member_remove(st, conv, rq->user, target, &promoted);
	if (r == STORE_OK) {
		res->status = 204;
		/* What the membership allowed ends now: typing relays to it. */
		int64_t *members = NULL;
		size_t nmembers = 0;
		if (store_members(st, conv, &members, &nmembers) != STORE_OK)
			nmembers = 0;
		presence_left(rq->srv->presence, conv, target, members, nmembers);
		free(members);
		/* The one who went hears of it too, on every device. */
		api_announce(st, rq->srv, conv, target == rq->user ? "left" : "removed", target, rq->user, target);
		if (promoted)
			api_announce(st, rq->srv, conv, "admin", promoted, rq->user, 0);
	} else if (r == STORE_NOT_FOUND) {
		api_fail(res, 404, "not_found", "not a member of this group");
	} else if (r == STORE_FORBIDDEN) {
		api_fail(res, 403, "forbidden", "only a group's admins remove others; anyone may leave");
	} else {
		api_fail_store(res, r);
	}
}
