/* origin.c - the Origin check of origin.h. Comparisons are of bytes,
 * ignoring the case of the scheme and host as RFC 6454 says they are
 * case-insensitive; nothing is decoded or normalised beyond that, so a
 * spelling we do not recognise is refused, not guessed at. */
#include "origin.h"

#include <string.h>
#include <strings.h>

/* Length of the origin part of url: scheme://host[:port], without a path. */
static size_t origin_len(const char *url, size_t n)
{
	const char *p = memchr(url, ':', n);
	size_t i;

	if (!p || (size_t)(p - url) + 3 > n || memcmp(p, "://", 3) != 0)
		return 0;
	for (i = (size_t)(p - url) + 3; i < n && url[i] != '/'; i++)
		;
	return i;
}

static int scheme_ok(const char *o, size_t n)
{
	return (n > 7 && strncasecmp(o, "http://", 7) == 0) || (n > 8 && strncasecmp(o, "https://", 8) == 0);
}

/* Origin o (n bytes) equals the origin of url. */
static int same_origin(const char *o, size_t n, const char *url, size_t ulen)
{
	size_t l = origin_len(url, ulen);

	return l && l == n && strncasecmp(o, url, n) == 0;
}

int origin_url_valid(const char *url)
{
	size_t n = strlen(url), l = origin_len(url, n), host;

	if (!l || !scheme_ok(url, l))
		return 0;
	host = url[4] == 's' || url[4] == 'S' ? 8 : 7;
	return l > host;
}

int origin_allowed(const http_request_t *req, const char *public_url, const char *allowed)
{
	const http_header_t *o = http_find_header(req, "origin"), *h;
	const char *p, *end;

	if (!o)
		return 1;
	if (!scheme_ok(o->value, o->value_len))
		return 0; /* "null" (sandboxed frames, files) and the unknown */
	/* The server's own origin: the host the browser sent this to. */
	h = http_find_header(req, "host");
	if (h && h->value_len) {
		size_t skip = o->value[4] == 's' || o->value[4] == 'S' ? 8 : 7;
		if (o->value_len - skip == h->value_len &&
		    strncasecmp(o->value + skip, h->value, h->value_len) == 0)
			return 1;
	}
	if (public_url[0] && same_origin(o->value, o->value_len, public_url, strlen(public_url)))
		return 1;
	for (p = allowed, end = allowed + strlen(allowed); p < end;) {
		const char *comma = memchr(p, ',', (size_t)(end - p)), *e = comma ? comma : end;
		const char *q = e;
		while (p < q && *p == ' ')
			p++;
		while (q > p && q[-1] == ' ')
			q--;
		if (q > p && same_origin(o->value, o->value_len, p, (size_t)(q - p)))
			return 1;
		p = e + 1;
	}
	return 0;
}
