/* jbuf.c - the JSON text builder of jbuf.h. */
#include "jbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jbuf_init(jbuf_t *b)
{
	memset(b, 0, sizeof *b);
}

void jbuf_free(jbuf_t *b)
{
	free(b->data);
	jbuf_init(b);
}

void jbuf_reset(jbuf_t *b)
{
	b->len = 0;
	b->oom = 0;
}

static int reserve(jbuf_t *b, size_t n)
{
	size_t cap;
	char *d;

	if (b->oom)
		return -1;
	if (b->len + n <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < b->len + n)
		cap *= 2;
	if (!(d = realloc(b->data, cap))) {
		b->oom = 1;
		return -1;
	}
	b->data = d;
	b->cap = cap;
	return 0;
}

void jbuf_raw(jbuf_t *b, const char *s, size_t n)
{
	if (reserve(b, n) == 0) {
		memcpy(b->data + b->len, s, n);
		b->len += n;
	}
}

void jbuf_lit(jbuf_t *b, const char *s)
{
	jbuf_raw(b, s, strlen(s));
}

void jbuf_str(jbuf_t *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	/* Worst case: every byte becomes \u00XX. */
	if (reserve(b, n * 6 + 2) < 0)
		return;
	b->data[b->len++] = '"';
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char *o = b->data + b->len;

		if (c >= 0x20 && c != '"' && c != '\\') {
			*o = (char)c;
			b->len++;
			continue;
		}
		o[0] = '\\';
		switch (c) {
		case '"': o[1] = '"'; b->len += 2; break;
		case '\\': o[1] = '\\'; b->len += 2; break;
		case '\n': o[1] = 'n'; b->len += 2; break;
		case '\r': o[1] = 'r'; b->len += 2; break;
		case '\t': o[1] = 't'; b->len += 2; break;
		default:
			o[1] = 'u';
			o[2] = '0';
			o[3] = '0';
			o[4] = hex[c >> 4];
			o[5] = hex[c & 15];
			b->len += 6;
		}
	}
	b->data[b->len++] = '"';
}

void jbuf_cstr(jbuf_t *b, const char *s)
{
	if (s)
		jbuf_str(b, s, strlen(s));
	else
		jbuf_lit(b, "null");
}

void jbuf_int(jbuf_t *b, int64_t v)
{
	char t[24];
	int n = snprintf(t, sizeof t, "%lld", (long long)v);

	jbuf_raw(b, t, (size_t)n);
}

void jbuf_int_str(jbuf_t *b, int64_t v)
{
	char t[24];
	int n = snprintf(t, sizeof t, "\"%lld\"", (long long)v);

	jbuf_raw(b, t, (size_t)n);
}

void jbuf_key(jbuf_t *b, const char *key, int first)
{
	if (!first)
		jbuf_raw(b, ",", 1);
	jbuf_raw(b, "\"", 1);
	jbuf_lit(b, key);
	jbuf_raw(b, "\":", 2);
}
