/* pushhttp.c - the provider POST of pushhttp.h over libcurl. */
#include "pushhttp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "publicaddr.h"

typedef struct post_ctx {
	const pushhttp_request_t *req;
	pushhttp_result_t *r;
	size_t body_len;
	int refused_address;
} post_ctx_t;

/* Every connection libcurl opens goes through here: under refuse_local a
 * name that resolved to this host or a private network is not called. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
	post_ctx_t *c = ud;

	(void)purpose;
	if (c->req->refuse_local && !publicaddr_sockaddr(&a->addr, a->addrlen)) {
		c->refused_address = 1;
		return CURL_SOCKET_BAD;
	}
	return socket(a->family, a->socktype, a->protocol);
}

/* The answer's body: its start, on one line, for the log and for the
 * providers' JSON reasons. */
static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
	post_ctx_t *c = ud;
	size_t len = size * n, room = PUSHHTTP_BODY_KEEP - c->body_len;

	if (room) {
		size_t k = len < room ? len : room, i;
		memcpy(c->r->body + c->body_len, data, k);
		for (i = 0; i < k; i++)
			if ((unsigned char)c->r->body[c->body_len + i] < 0x20)
				c->r->body[c->body_len + i] = ' ';
		c->body_len += k;
		c->r->body[c->body_len] = 0;
	}
	return len;
}

static size_t on_header(char *line, size_t size, size_t n, void *ud)
{
	post_ctx_t *c = ud;
	size_t len = size * n;
	char value[128];

	if (len > 12 && len < sizeof value + 12 && !strncasecmp(line, "retry-after:", 12)) {
		char *v = value, *end;
		long long secs;
		time_t when;

		memcpy(value, line + 12, len - 12);
		value[len - 12] = 0;
		while (*v == ' ' || *v == '\t')
			v++;
		v[strcspn(v, "\r\n")] = 0;
		secs = strtoll(v, &end, 10);
		if (end != v && !*end && secs >= 0 && secs < 86400 * 7)
			c->r->retry_after_ms = secs * 1000;
		else if ((when = curl_getdate(v, NULL)) > 0 && when > time(NULL))
			c->r->retry_after_ms = (int64_t)(when - time(NULL)) * 1000;
	}
	return len;
}

int pushhttp_post(CURL *curl, const pushhttp_request_t *req, pushhttp_result_t *r)
{
	struct curl_slist *h = NULL, *t;
	char line[160];
	post_ctx_t c = {req, r, 0, 0};
	int is_http = !strncmp(req->url, "http://", 7);
	CURLcode rc;
	size_t i;

	memset(r, 0, sizeof *r);
	if (strncmp(req->url, "https://", 8) && !(req->allow_http && is_http)) {
		snprintf(r->reason, sizeof r->reason, "the URL is not https");
		return -1;
	}
	curl_easy_reset(curl);
	for (i = 0; req->headers && req->headers[i]; i++) {
		if (!(t = curl_slist_append(h, req->headers[i])))
			goto oom;
		h = t;
	}
	snprintf(line, sizeof line, "Content-Type: %s", req->content_type ? req->content_type : "application/json");
	if (!(t = curl_slist_append(h, line)))
		goto oom;
	h = t;
	if (!(t = curl_slist_append(h, "Expect:"))) /* no 100-continue round trip */
		goto oom;
	h = t;
	curl_easy_setopt(curl, CURLOPT_URL, req->url);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, req->allow_http ? "https,http" : "https");
	curl_easy_setopt(curl, CURLOPT_HTTP_VERSION,
	                 is_http && req->http2_prior_knowledge ? (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
	                                                       : (long)CURL_HTTP_VERSION_2TLS);
	if (is_http && req->http2_prior_knowledge) {
		/* libcurl 7.88 (Debian 12's) fails the second request on a
		 * reused prior-knowledge connection ("Error in the HTTP2
		 * framing layer": curl issue 10634, fixed in 8.0). Only the
		 * tests' cleartext fakes come here; the providers' https
		 * connections negotiate HTTP/2 and are kept. */
		curl_easy_setopt(curl, CURLOPT_FRESH_CONNECT, 1L);
		curl_easy_setopt(curl, CURLOPT_FORBID_REUSE, 1L);
	}
	curl_easy_setopt(curl, CURLOPT_POST, 1L);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req->body);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)req->len);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L); /* a redirect could point anywhere */
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : 10000L);
	curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(curl, CURLOPT_OPENSOCKETDATA, &c);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &c);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, &c);
	rc = curl_easy_perform(curl);
	curl_slist_free_all(h);
	curl_easy_getinfo(curl, CURLINFO_TOTAL_TIME, &r->seconds);
	if (rc != CURLE_OK) {
		if (c.refused_address)
			snprintf(r->reason, sizeof r->reason, "the host resolved to a local or private address");
		else
			snprintf(r->reason, sizeof r->reason, "%s", curl_easy_strerror(rc));
		r->status = 0;
		return -1;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
	return 0;
oom:
	curl_slist_free_all(h);
	snprintf(r->reason, sizeof r->reason, "out of memory");
	return -1;
}

int pushhttp_form_escape(const char *s, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t at = 0;

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
		    ch == '.' || ch == '_' || ch == '~') {
			if (at + 1 >= cap)
				return -1;
			out[at++] = (char)ch;
		} else {
			if (at + 3 >= cap)
				return -1;
			out[at++] = '%';
			out[at++] = hex[ch >> 4];
			out[at++] = hex[ch & 15];
		}
	}
	if (at >= cap)
		return -1;
	out[at] = 0;
	return 0;
}
