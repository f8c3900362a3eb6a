/* search.h - what a user typed into a search box, as words a full-text
 * engine can be given safely, and the engine's snippets back as JSON.
 *
 * No search engine ever sees the user's text: FTS5 and tsquery both have
 * a query syntax (quotes, operators, NEAR, column filters, prefixes) that
 * a stray character can break, or turn into a far costlier query. Only
 * words go through, made of letters and digits (ASCII, and any other code
 * point outside the common ranges of punctuation, symbols and emoji);
 * everything else separates words. The backends quote each word
 * themselves (store.h, store_search). */
#ifndef PARLEY_SEARCH_H
#define PARLEY_SEARCH_H

#include <stddef.h>

#include "jbuf.h"
#include "store.h"

#define SEARCH_QUERY_MAX 256 /* bytes of what was typed */

typedef struct search_words {
	char word[STORE_SEARCH_TERMS_MAX][STORE_SEARCH_TERM_MAX + 1];
	const char *terms[STORE_SEARCH_TERMS_MAX]; /* word[i], for store_search */
	size_t n;
} search_words_t;

/* Splits q[0..len) into words, ASCII folded to lower case. Returns 0, or
 * -1 with *why (a sentence for the client) when q is not UTF-8, holds no
 * word, more than STORE_SEARCH_TERMS_MAX of them, or one longer than
 * STORE_SEARCH_TERM_MAX bytes. */
int search_words(const char *q, size_t len, search_words_t *out, const char **why);

/* Appends a snippet with its STORE_MARK_ON/OFF marks as a JSON array of
 * parts: [{"text":"…"},{"text":"found","match":true},…]. Those bytes in
 * a body itself read as marks too: they can only change how that
 * message's own snippet is highlighted. */
void search_snippet_json(jbuf_t *b, const char *s, size_t len);

#endif
