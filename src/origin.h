/* origin.h - which web pages may use this server from a browser.
 *
 * A browser sends Origin with every WebSocket upgrade and every
 * state-changing request made by a page's script. A page of another site
 * must not drive a user's session here, so those requests pass only from
 * the server's own origin (the Host the request was sent to), the public
 * URL the operator configured (--public-url, for a server behind a proxy
 * that rewrites Host), or an explicit allowlist (--allowed-origins).
 * Requests without Origin come from non-browser clients, which no page
 * controls, and pass. */
#ifndef PARLEY_ORIGIN_H
#define PARLEY_ORIGIN_H

#include "http.h"

/* True when req may be served by its Origin. public_url and allowed are
 * the configured values ("" when none; allowed is a comma-separated list
 * of origins such as "https://chat.example.com"). */
int origin_allowed(const http_request_t *req, const char *public_url, const char *allowed);

/* True when a URL's origin is well formed: http:// or https://, a host,
 * an optional port, and nothing after but an optional path. For checking
 * the configuration at start. */
int origin_url_valid(const char *url);

#endif
