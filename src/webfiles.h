/* webfiles.h - the web client's files, served at / by the node itself.
 *
 * The files of one folder (web/ by default) are read once at start-up into
 * memory, each with its ready-made response, and served from there: a
 * request can name only a file that was loaded, so no path it sends can
 * reach outside the folder (nothing is looked up on disk per request; ".."
 * or an encoded slash simply matches nothing). Only regular files with a
 * known type are loaded; symbolic links, hidden files and odd names are
 * skipped. Every response says its type, carries an ETag and "Cache-Control:
 * no-cache" (the names carry no version, so a browser revalidates and gets
 * 304 until the file changes), and headers that keep the page from being
 * framed or sniffed. */
#ifndef PARLEY_WEBFILES_H
#define PARLEY_WEBFILES_H

#include "http.h"
#include "sbuf.h"

typedef struct webfiles webfiles_t;

/* Loads the files under dir. A missing folder gives an empty set (the node
 * then serves the API only) and a warning; an unreadable file or one over
 * the limits is skipped with a warning. NULL only when out of memory. */
webfiles_t *webfiles_load(const char *dir);
void webfiles_free(webfiles_t *w);

/* How many files were loaded. */
size_t webfiles_count(const webfiles_t *w);

/* The complete response to req when its path names a loaded file ("/" is
 * /index.html): 200 to GET, the same head without a body to HEAD, 304 when
 * If-None-Match holds the file's ETag, 405 to other methods. NULL when the
 * path is not a loaded file (the caller answers 404), or out of memory
 * (*oom set). */
sbuf_t *webfiles_response(const webfiles_t *w, const http_request_t *req, int keep_alive, int *oom);

#endif
