/* api_search.c - GET /api/v1/search: full-text search of the messages
 * the caller can read (api_internal.h).
 *
 * The typed text becomes words (search.h) before any store sees it; the
 * store ranks the matches in the conversations the caller is a member of
 * now, from when it joined, so a search never shows what history would
 * not. A search reads an index rather than a conversation's tail, so it
 * is charged to the work budget more than a page of history. */
#include <stdio.h>
#include <string.h>

#include "api_internal.h"
#include "http.h"
#include "search.h"

#define SEARCH_LIMIT_DEFAULT 20
#define SEARCH_LIMIT_MAX 50
#define SEARCH_OFFSET_MAX 500 /* deeper than a person pages; a bound on the sort */

void api_search(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res)
{
	char q[SEARCH_QUERY_MAX + 1];
	int64_t limit = SEARCH_LIMIT_DEFAULT, offset = 0, conv = 0;
	search_words_t words;
	store_search_hit_t *hits;
	const char *why;
	size_t n, i;
	int len, has_more, r;

	(void)ids;
	if (api_authenticate(st, rq, res) < 0 ||
	    api_query_int(rq, res, "limit", 1, SEARCH_LIMIT_MAX, &limit) < 0 ||
	    api_query_int(rq, res, "offset", 0, SEARCH_OFFSET_MAX, &offset) < 0 ||
	    api_query_int(rq, res, "conv", 1, INT64_MAX, &conv) < 0)
		return;
	len = http_query_param(rq->target, rq->target_len, "q", q, sizeof q);
	if (len == -1) {
		api_fail(res, 400, "bad_request", "q (what to search for) is required");
		return;
	}
	if (len < 0) {
		api_fail(res, 400, "bad_request", "q must be percent-encoded and at most 256 bytes");
		return;
	}
	if (search_words(q, (size_t)len, &words, &why) < 0) {
		api_fail(res, 400, "bad_request", why);
		return;
	}
	if (api_charge(rq, res, 10 + (double)(limit + offset) / 5) < 0)
		return;
	r = store_search(st, rq->user, conv, words.terms, words.n, (size_t)offset, (size_t)limit, &hits, &n,
	                 &has_more);
	if (r != STORE_OK) {
		api_fail_store(res, r);
		return;
	}
	res->status = 200;
	jbuf_lit(&res->body, "{\"results\":[");
	for (i = 0; i < n; i++) {
		jbuf_lit(&res->body, i ? ",{\"conversation_id\":" : "{\"conversation_id\":");
		jbuf_int(&res->body, hits[i].msg.conv);
		jbuf_lit(&res->body, ",\"message\":");
		api_message_json(&res->body, &hits[i].msg);
		jbuf_lit(&res->body, ",\"snippet\":");
		search_snippet_json(&res->body, hits[i].snippet, hits[i].snippet_len);
		jbuf_lit(&res->body, "}");
	}
	jbuf_lit(&res->body, "],\"has_more\":");
	jbuf_lit(&res->body, has_more ? "true" : "false");
	jbuf_lit(&res->body, "}");
	store_search_free(hits, n);
}
