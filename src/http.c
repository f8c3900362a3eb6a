/* http.c - the request head parser and response encoder of http.h.
 *
 * Strict where the RFC allows strictness: tokens for methods and header
 * names, no control characters in values, no obsolete line folding, and a
 * single well-formed Content-Length. Anything else is HTTP_MALFORMED and the
 * gateway answers 400; a lenient parser is how request smuggling starts. */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int is_tchar(unsigned char c)
{
	/* RFC 9110 token characters. */
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return 1;
	return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Finds the end of the line starting at p; returns a pointer to its CR or LF
 * terminator and sets *next past it, or NULL if no terminator yet, or sets
 * *bad on a bare CR. */
static const char *line_end(const char *p, const char *end, const char **next, int *bad)
{
	const char *q;

	for (q = p; q < end; q++) {
		if (*q == '\n') {
			*next = q + 1;
			return q;
		}
		if (*q == '\r') {
			if (q + 1 == end)
				return NULL;
			if (q[1] != '\n') {
				*bad = 1;
				return NULL;
			}
			*next = q + 2;
			return q;
		}
	}
	return NULL;
}

static int parse_content_length(const char *v, size_t n, int64_t *out)
{
	int64_t x = 0;
	size_t i;

	if (n == 0 || n > 18)
		return -1;
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		x = x * 10 + (v[i] - '0');
	}
	*out = x;
	return 0;
}

int http_parse_request(const char *buf, size_t len, http_request_t *req)
{
	const char *p = buf, *end = buf + len, *eol, *next, *q;
	int bad = 0, connection_close = 0, connection_keep = 0;

	memset(req, 0, sizeof *req);
	req->content_length = -1;

	/* Be liberal in one way only: skip empty lines before the request
	 * line, as RFC 9112 section 2.2 asks. */
	while (p < end && (*p == '\r' || *p == '\n')) {
		if (*p == '\r' && p + 1 < end && p[1] != '\n')
			return HTTP_MALFORMED;
		p++;
	}
	eol = line_end(p, end, &next, &bad);
	if (bad)
		return HTTP_MALFORMED;
	if (!eol)
		return HTTP_INCOMPLETE;

	/* method SP target SP HTTP/1.x */
	req->method = p;
	while (p < eol && is_tchar((unsigned char)*p))
		p++;
	req->method_len = (size_t)(p - req->method);
	if (req->method_len == 0 || p == eol || *p != ' ')
		return HTTP_MALFORMED;
	req->target = ++p;
	while (p < eol && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f)
		p++;
	req->target_len = (size_t)(p - req->target);
	if (req->target_len == 0 || p == eol || *p != ' ' || req->target[0] != '/')
		return HTTP_MALFORMED;
	p++;
	if (eol - p != 8 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1'))
		return HTTP_MALFORMED;
	req->minor_version = p[7] - '0';
	q = memchr(req->target, '?', req->target_len);
	req->path_len = q ? (size_t)(q - req->target) : req->target_len;

	for (p = next;;) {
		http_header_t *h;
		const char *v, *ve;

		eol = line_end(p, end, &next, &bad);
		if (bad)
			return HTTP_MALFORMED;
		if (!eol)
			return HTTP_INCOMPLETE;
		if (eol == p) { /* blank line: end of head */
			p = next;
			break;
		}
		if (req->nheaders == HTTP_MAX_HEADERS)
			return HTTP_TOO_MANY_HEADERS;
		h = &req->headers[req->nheaders++];
		h->name = p;
		while (p < eol && is_tchar((unsigned char)*p))
			p++;
		h->name_len = (size_t)(p - h->name);
		/* No whitespace before the colon, no folded lines. */
		if (h->name_len == 0 || p == eol || *p != ':')
			return HTTP_MALFORMED;
		p++;
		while (p < eol && (*p == ' ' || *p == '\t'))
			p++;
		v = p;
		for (; p < eol; p++) {
			unsigned char c = (unsigned char)*p;
			if ((c < 0x20 && c != '\t') || c == 0x7f)
				return HTTP_MALFORMED;
		}
		ve = eol;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		h->value = v;
		h->value_len = (size_t)(ve - v);

		if (h->name_len == 14 && strncasecmp(h->name, "content-length", 14) == 0) {
			int64_t cl;
			if (parse_content_length(v, h->value_len, &cl) < 0)
				return HTTP_MALFORMED;
			if (req->content_length >= 0 && req->content_length != cl)
				return HTTP_MALFORMED;
			req->content_length = cl;
		} else if (h->name_len == 17 && strncasecmp(h->name, "transfer-encoding", 17) == 0) {
			req->chunked = 1;
		} else if (h->name_len == 10 && strncasecmp(h->name, "connection", 10) == 0) {
			if (http_value_has_token(v, h->value_len, "close"))
				connection_close = 1;
			if (http_value_has_token(v, h->value_len, "keep-alive"))
				connection_keep = 1;
		}
		p = next;
	}
	/* Both framings at once is the classic smuggling vector. */
	if (req->chunked && req->content_length >= 0)
		return HTTP_MALFORMED;
	if (req->minor_version == 0)
		req->keep_alive = connection_keep && !connection_close;
	else
		req->keep_alive = !connection_close;
	if (p - buf > 0x7fffffff)
		return HTTP_MALFORMED;
	return (int)(p - buf);
}

const http_header_t *http_find_header(const http_request_t *req, const char *name)
{
	size_t n = strlen(name), i;

	for (i = 0; i < req->nheaders; i++)
		if (req->headers[i].name_len == n && strncasecmp(req->headers[i].name, name, n) == 0)
			return &req->headers[i];
	return NULL;
}

int http_value_has_token(const char *value, size_t len, const char *token)
{
	size_t tlen = strlen(token);
	const char *p = value, *end = value + len;

	while (p < end) {
		const char *s, *e;

		while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
			p++;
		s = p;
		while (p < end && *p != ',')
			p++;
		e = p;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if ((size_t)(e - s) == tlen && strncasecmp(s, token, tlen) == 0)
			return 1;
	}
	return 0;
}

int http_bearer(const http_request_t *req, const char **tok, size_t *len)
{
	const http_header_t *h = http_find_header(req, "authorization");

	if (!h || h->value_len <= 7 || strncasecmp(h->value, "bearer ", 7) != 0)
		return 0;
	*tok = h->value + 7;
	*len = h->value_len - 7;
	return 1;
}

int http_is(const http_request_t *req, const char *method, const char *path)
{
	size_t ml = strlen(method), pl = strlen(path);

	return req->method_len == ml && memcmp(req->method, method, ml) == 0 &&
	       req->path_len == pl && memcmp(req->target, path, pl) == 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int http_query_param(const char *target, size_t target_len, const char *name,
                     char *out, size_t outcap)
{
	const char *p = memchr(target, '?', target_len), *end = target + target_len;
	size_t nlen = strlen(name);

	if (!p)
		return -1;
	for (p++; p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p)), *pe = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(pe - p));
		const char *ke = eq ? eq : pe;

		if ((size_t)(ke - p) == nlen && memcmp(p, name, nlen) == 0) {
			size_t n = 0;
			const char *v = eq ? eq + 1 : pe;

			while (v < pe) {
				int c = (unsigned char)*v;
				if (c == '%') {
					int hi, lo;
					if (pe - v < 3 || (hi = hexval(v[1])) < 0 || (lo = hexval(v[2])) < 0)
						return -2;
					c = hi * 16 + lo;
					v += 3;
				} else {
					if (c == '+')
						c = ' ';
					v++;
				}
				if (n + 1 >= outcap)
					return -2;
				out[n++] = (char)c;
			}
			out[n] = 0;
			return (int)n;
		}
		p = pe + (amp ? 1 : 0);
	}
	return -1;
}

const char *http_reason(int status)
{
	switch (status) {
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 426: return "Upgrade Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	default: return "Unknown";
	}
}

sbuf_t *http_response(int status, const char *content_type, const void *body,
                      size_t body_len, int keep_alive, const char *extra)
{
	char head[1024];
	int n;
	sbuf_t *b;

	if (status == 204 || status == 101)
		n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\n%s%s\r\n", status,
		             http_reason(status), keep_alive ? "" : "Connection: close\r\n",
		             extra ? extra : "");
	else
		n = snprintf(head, sizeof head,
		             "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
		             status, http_reason(status), content_type ? content_type : "application/json",
		             body_len, keep_alive ? "" : "Connection: close\r\n", extra ? extra : "");
	if (n < 0 || (size_t)n >= sizeof head)
		return NULL;
	b = sbuf_new((size_t)n + body_len);
	if (!b)
		return NULL;
	memcpy(b->data, head, (size_t)n);
	if (body_len)
		memcpy(b->data + n, body, body_len);
	return b;
}

void http_error_json(jbuf_t *b, const char *code, const char *message)
{
	jbuf_lit(b, "{\"error\":{\"code\":");
	jbuf_cstr(b, code);
	jbuf_lit(b, ",\"message\":");
	jbuf_cstr(b, message);
	jbuf_lit(b, "}}");
}

sbuf_t *http_error_retry(int status, const char *code, const char *message, int keep_alive,
                         int64_t retry_ms)
{
	char extra[48];
	jbuf_t b;
	sbuf_t *r;

	jbuf_init(&b);
	jbuf_lit(&b, "{\"error\":{\"code\":");
	jbuf_cstr(&b, code);
	jbuf_lit(&b, ",\"message\":");
	jbuf_cstr(&b, message);
	jbuf_lit(&b, ",\"retry_after_ms\":");
	jbuf_int(&b, retry_ms);
	jbuf_lit(&b, "}}");
	snprintf(extra, sizeof extra, "Retry-After: %lld\r\n", (long long)(retry_ms + 999) / 1000);
	r = b.oom ? NULL : http_response(status, "application/json", b.data, b.len, keep_alive, extra);
	jbuf_free(&b);
	return r;
}

sbuf_t *http_error_response(int status, const char *code, const char *message, int keep_alive,
                            const char *extra)
{
	jbuf_t b;
	sbuf_t *r;

	jbuf_init(&b);
	http_error_json(&b, code, message);
	r = b.oom ? NULL : http_response(status, "application/json", b.data, b.len, keep_alive, extra);
	jbuf_free(&b);
	return r;
}
