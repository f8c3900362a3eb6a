/* http.h - HTTP/1.1 request parsing and response encoding.
 *
 * The parser keeps no state and never allocates, in the manner of
 * picohttpparser: it is handed everything received so far and either finds a
 * complete request head or says it needs more. Re-parsing from the start on
 * each read is cheap and leaves nothing to corrupt between reads. Pointers in
 * the result point into the caller's buffer. */
#ifndef PARLEY_HTTP_H
#define PARLEY_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "jbuf.h"
#include "sbuf.h"

#define HTTP_MAX_HEADERS 32
#define HTTP_MAX_REQUEST_LINE 8192   /* longer: 414 */
#define HTTP_MAX_HEAD 16384          /* request line and headers; longer: 431 */
#define HTTP_MAX_BODY 65536          /* longer: 413 */

#define HTTP_INCOMPLETE (-2)
#define HTTP_MALFORMED (-1)
#define HTTP_TOO_MANY_HEADERS (-3)

typedef struct http_header {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
} http_header_t;

typedef struct http_request {
	const char *method;
	size_t method_len;
	const char *target;     /* path and query, as sent */
	size_t target_len;
	size_t path_len;        /* target up to '?' */
	int minor_version;      /* HTTP/1.x */
	size_t nheaders;
	http_header_t headers[HTTP_MAX_HEADERS];
	int64_t content_length; /* -1 when absent */
	int keep_alive;         /* after this request */
	int chunked;            /* Transfer-Encoding present (not supported) */
} http_request_t;

/* Parses a request head from buf[0..len). Returns the length of the head
 * (request line, headers and the blank line) when complete, HTTP_INCOMPLETE
 * when more bytes are needed, HTTP_MALFORMED or HTTP_TOO_MANY_HEADERS. */
int http_parse_request(const char *buf, size_t len, http_request_t *req);

/* Returns the header named name (case-insensitive), or NULL. */
const http_header_t *http_find_header(const http_request_t *req, const char *name);

/* True when a comma-separated header value holds token (case-insensitive),
 * as "Connection: keep-alive, Upgrade" holds "upgrade". */
int http_value_has_token(const char *value, size_t len, const char *token);

/* The credential of an "Authorization: Bearer ..." header: 1 with *tok
 * (into the request's buffer) and *len, or 0 when there is none. */
int http_bearer(const http_request_t *req, const char **tok, size_t *len);

/* True when the request's method and path are exactly method and path. */
int http_is(const http_request_t *req, const char *method, const char *path);

/* Finds query parameter name in target (after '?'), percent-decodes it into
 * out (NUL-terminated). Returns the decoded length, -1 when absent, -2 when
 * malformed or longer than outcap-1. */
int http_query_param(const char *target, size_t target_len, const char *name,
                     char *out, size_t outcap);

/* Encodes a complete response. body may be NULL when body_len is 0. extra
 * holds additional header lines, each ending in CRLF, or NULL. Returns NULL
 * when out of memory. */
sbuf_t *http_response(int status, const char *content_type, const void *body,
                      size_t body_len, int keep_alive, const char *extra);

/* The protocol's error body, {"error":{"code","message"}}, appended to b. */
void http_error_json(jbuf_t *b, const char *code, const char *message);

/* That body as a complete HTTP response; extra holds more header lines
 * (each ending in CRLF) or is NULL. NULL when out of memory. */
sbuf_t *http_error_response(int status, const char *code, const char *message, int keep_alive,
                            const char *extra);

/* The same for a refusal after which waiting helps: the error object
 * carries "retry_after_ms", and a Retry-After header (seconds) goes with
 * it. */
sbuf_t *http_error_retry(int status, const char *code, const char *message, int keep_alive,
                         int64_t retry_ms);

const char *http_reason(int status);

#endif
