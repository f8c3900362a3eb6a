/* pushhttp.h - one HTTPS POST to a push provider, as the push path makes
 * them: APNs, FCM and the browsers' Web Push services all take a POST
 * with a few headers and answer with a status, sometimes a Retry-After
 * and a short body saying why. libcurl does the HTTP/2 (over TLS by
 * ALPN; to a plain http:// base URL, the local fakes of the tests, by
 * prior knowledge when asked) and keeps the connection on the easy
 * handle the caller holds, so a sender thread reuses one connection per
 * provider host.
 *
 * Blocks for the whole exchange: only the push path's own threads call
 * it. */
#ifndef PARLEY_PUSHHTTP_H
#define PARLEY_PUSHHTTP_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#define PUSHHTTP_BODY_KEEP 4096 /* the start of an answer's body that is kept (room for an OAuth2 token answer) */

typedef struct pushhttp_request {
	const char *url;
	const char *const *headers;  /* "Name: value" lines, NULL-terminated */
	const void *body;
	size_t len;
	const char *content_type;
	int http2_prior_knowledge;   /* an http:// URL speaks HTTP/2 without upgrade */
	int allow_http;              /* http:// URLs (tests' fakes) as well as https:// */
	int refuse_local;            /* never connect to a local or private address */
	long timeout_ms;             /* the whole exchange; 0: 10000 */
} pushhttp_request_t;

typedef struct pushhttp_result {
	long status;                 /* the HTTP status; 0 when no answer came */
	int64_t retry_after_ms;      /* from Retry-After, seconds or a date; 0: none */
	char body[PUSHHTTP_BODY_KEEP + 1]; /* the answer's start, on one line */
	char reason[256];            /* why no answer came */
	double seconds;              /* how long the exchange took */
} pushhttp_result_t;

/* POSTs and waits: 0 with r->status when an answer came, -1 with
 * r->reason when none did (no connection, a timeout, a scheme not
 * allowed, or a host that resolved to a local address under
 * refuse_local: refused before connecting). */
int pushhttp_post(CURL *curl, const pushhttp_request_t *req, pushhttp_result_t *r);

/* A form-encoded POST's value: s with every byte but [A-Za-z0-9-._~]
 * percent-encoded, into out (cap bytes). 0, or -1 when it does not fit. */
int pushhttp_form_escape(const char *s, char *out, size_t cap);

#endif
