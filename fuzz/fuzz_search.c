/* fuzz_search.c - libFuzzer target for search.c: what a user types into
 * the search box (the first byte's low bit picks the half tried).
 *
 * Words: each made of word bytes only, none empty or over the bound, no
 * more of them than the bound, none holding a byte a query language
 * reads as syntax. Snippets: any bytes, marks or not, come out as JSON
 * that Jansson parses, an array of parts each with its text. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "search.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *p;

	if (!size)
		return 0;
	if (!(p = malloc(size - 1 ? size - 1 : 1)))
		abort();
	memcpy(p, data + 1, size - 1);
	if (data[0] & 1) {
		search_words_t w;
		const char *why = NULL;
		size_t i;

		if (search_words(p, size - 1, &w, &why) == 0) {
			if (!w.n || w.n > STORE_SEARCH_TERMS_MAX)
				abort();
			for (i = 0; i < w.n; i++) {
				size_t len = strlen(w.terms[i]);
				if (!len || len > STORE_SEARCH_TERM_MAX || strpbrk(w.terms[i], "\"'\\:*()&|!<>-+^ \t\n"))
					abort();
			}
		} else if (!why) {
			abort();
		}
	} else {
		jbuf_t b;
		json_t *j;
		size_t i;

		jbuf_init(&b);
		search_snippet_json(&b, p, size - 1);
		if (!b.oom) {
			json_error_t err;
			/* Invalid UTF-8 in, invalid UTF-8 out: jbuf_str copies bytes
			 * (bodies are valid UTF-8 before they are stored). */
			j = json_loadb(b.data, b.len, JSON_ALLOW_NUL, &err);
			if (j) {
				if (!json_is_array(j))
					abort();
				for (i = 0; i < json_array_size(j); i++)
					if (!json_is_string(json_object_get(json_array_get(j, i), "text")))
						abort();
				json_decref(j);
			}
		}
		jbuf_free(&b);
	}
	free(p);
	return 0;
}
