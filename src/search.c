/* search.c - search words out of typed text, snippets into JSON (search.h). */
#include "search.h"

#include <stdint.h>
#include <string.h>

#include "utf8.h"

/* The code point at s[0..len) (valid UTF-8, checked before) and its
 * length in bytes. */
static uint32_t next_cp(const unsigned char *s, size_t len, size_t *n)
{
	if (s[0] < 0x80 || len < 2) {
		*n = 1;
		return s[0];
	}
	if (s[0] < 0xE0) {
		*n = 2;
		return (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
	}
	if (s[0] < 0xF0 || len < 4) {
		*n = 3;
		return (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
	}
	*n = 4;
	return (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 | (uint32_t)(s[2] & 0x3F) << 6 |
	       (s[3] & 0x3F);
}

/* Part of a word: ASCII letters and digits, and beyond ASCII whatever is
 * not in the blocks of punctuation, symbols, emoji and invisible marks
 * (the engines' tokenizers split there too; where they differ, a word
 * they do not index simply finds nothing). */
static int word_cp(uint32_t c)
{
	if (c < 0x80)
		return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
	if (c <= 0xBF)
		return c == 0xAA || c == 0xB5 || c == 0xBA; /* ª µ º */
	if (c == 0xD7 || c == 0xF7)                      /* × ÷ */
		return 0;
	if ((c >= 0x2000 && c <= 0x2BFF) || (c >= 0x2E00 && c <= 0x2E7F) || (c >= 0x3000 && c <= 0x303F) ||
	    (c >= 0xFE00 && c <= 0xFE6F) || (c >= 0xFF00 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) ||
	    (c >= 0xFF3B && c <= 0xFF40) || (c >= 0xFF5B && c <= 0xFF65) || (c >= 0xFFF0 && c <= 0xFFFF) ||
	    (c >= 0x1F000 && c <= 0x1FAFF) || (c >= 0xE0000 && c <= 0xE007F))
		return 0;
	return 1;
}

int search_words(const char *q, size_t len, search_words_t *out, const char **why)
{
	const unsigned char *s = (const unsigned char *)q;
	size_t i = 0, wl = 0;
	int in_word = 0;

	out->n = 0;
	if (len > SEARCH_QUERY_MAX) {
		*why = "q is at most 256 bytes";
		return -1;
	}
	if (utf8_validate(UTF8_ACCEPT, q, len) != UTF8_ACCEPT) {
		*why = "q must be UTF-8";
		return -1;
	}
	while (i <= len) {
		size_t n = 1;
		uint32_t c = i < len ? next_cp(s + i, len - i, &n) : ' ';

		if (i < len && word_cp(c)) {
			if (!in_word) {
				if (out->n == STORE_SEARCH_TERMS_MAX) {
					*why = "q has at most 8 words";
					return -1;
				}
				in_word = 1;
				wl = 0;
			}
			if (wl + n > STORE_SEARCH_TERM_MAX) {
				*why = "a word of q is at most 64 bytes";
				return -1;
			}
			memcpy(out->word[out->n] + wl, s + i, n);
			if (n == 1 && c >= 'A' && c <= 'Z')
				out->word[out->n][wl] = (char)(c | 0x20);
			wl += n;
		} else if (in_word) {
			out->word[out->n][wl] = 0;
			out->terms[out->n] = out->word[out->n];
			out->n++;
			in_word = 0;
		}
		i += n;
	}
	if (!out->n) {
		*why = "q must hold a word (letters or digits)";
		return -1;
	}
	return 0;
}

void search_snippet_json(jbuf_t *b, const char *s, size_t len)
{
	size_t i = 0, start = 0;
	int match = 0, first = 1;

	jbuf_lit(b, "[");
	while (i <= len) {
		int mark = i < len && (s[i] == STORE_MARK_ON || s[i] == STORE_MARK_OFF);

		if (i == len || mark) {
			if (i > start) {
				jbuf_lit(b, first ? "{\"text\":" : ",{\"text\":");
				jbuf_str(b, s + start, i - start);
				jbuf_lit(b, match ? ",\"match\":true}" : "}");
				first = 0;
			}
			if (mark)
				match = s[i] == STORE_MARK_ON;
			start = i + 1;
		}
		i++;
	}
	jbuf_lit(b, "]");
}
