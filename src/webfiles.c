/* webfiles.c - the web client's files, read once and served from memory;
 * see webfiles.h. */
#include "webfiles.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "log.h"

#define MAX_FILES 256
#define MAX_FILE_BYTES (2u << 20)
#define MAX_TOTAL_BYTES (16u << 20)
#define MAX_DEPTH 3
#define MAX_PATH 256

/* Headers every file carries: revalidate each time (the names carry no
 * version), never sniff a type, never be framed, send no referrer, and
 * let the page load nothing but its own files and talk only to its own
 * server. */
#define COMMON_HEADERS                                                                       \
	"Cache-Control: no-cache\r\n"                                                        \
	"X-Content-Type-Options: nosniff\r\n"                                                \
	"X-Frame-Options: DENY\r\n"                                                          \
	"Referrer-Policy: no-referrer\r\n"                                                   \
	"Content-Security-Policy: default-src 'self'; connect-src 'self'; "         \
	"img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'\r\n"

typedef struct webfile {
	char path[MAX_PATH];     /* as requested: "/app.js" */
	size_t path_len;
	const char *type;
	char etag[20];           /* "…" with its quotes */
	sbuf_t *keep, *close;    /* the full 200 responses, by Connection */
	size_t head_keep, head_close; /* their heads' lengths */
} webfile_t;

struct webfiles {
	webfile_t files[MAX_FILES];
	size_t n, total;
};

static const struct {
	const char *ext, *type;
} types[] = {
	{".html", "text/html; charset=utf-8"},
	{".js", "text/javascript; charset=utf-8"},
	{".mjs", "text/javascript; charset=utf-8"},
	{".css", "text/css; charset=utf-8"},
	{".json", "application/json"},
	{".webmanifest", "application/manifest+json"},
	{".svg", "image/svg+xml"},
	{".png", "image/png"},
	{".ico", "image/x-icon"},
	{".txt", "text/plain; charset=utf-8"},
};

static const char *type_of(const char *name)
{
	const char *dot = strrchr(name, '.');
	size_t i;

	for (i = 0; dot && i < sizeof types / sizeof types[0]; i++)
		if (!strcmp(dot, types[i].ext))
			return types[i].type;
	return NULL;
}

/* Names we serve: letters, digits, '.', '_' and '-', not starting with a
 * dot (hidden files, "." and ".."). */
static int name_ok(const char *name)
{
	const char *p;

	if (!*name || *name == '.' || strlen(name) > 100)
		return 0;
	for (p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '.' || *p == '_' || *p == '-'))
			return 0;
	return 1;
}

static sbuf_t *build(const webfile_t *f, const uint8_t *body, size_t len, int keep, size_t *head_len)
{
	char head[1024];
	int n = snprintf(head, sizeof head,
	                 "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\nETag: %s\r\n" COMMON_HEADERS
	                 "%s\r\n",
	                 f->type, len, f->etag, keep ? "" : "Connection: close\r\n");
	sbuf_t *b;

	if (n < 0 || (size_t)n >= sizeof head || !(b = sbuf_new((size_t)n + len)))
		return NULL;
	memcpy(b->data, head, (size_t)n);
	memcpy(b->data + n, body, len);
	*head_len = (size_t)n;
	return b;
}

/* Reads one file (opened without following a symbolic link) and makes its
 * responses. Returns 0, or -1 after logging why it was skipped. */
static int load_file(webfiles_t *w, int dirfd, const char *name, const char *urlpath)
{
	webfile_t *f = &w->files[w->n];
	uint8_t digest[32], *body = NULL;
	unsigned int dlen = 0;
	struct stat st;
	size_t got = 0;
	int fd, i;

	if (w->n == MAX_FILES) {
		log_warn("web: more than %d files; %s not served", MAX_FILES, urlpath);
		return -1;
	}
	if ((fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0 || fstat(fd, &st) < 0) {
		log_warn("web: cannot read %s: %s", urlpath, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode) || (size_t)st.st_size > MAX_FILE_BYTES ||
	    w->total + (size_t)st.st_size > MAX_TOTAL_BYTES) {
		log_warn("web: %s is not a regular file or is over the size limits; not served", urlpath);
		close(fd);
		return -1;
	}
	if (st.st_size > 0 && !(body = malloc((size_t)st.st_size))) {
		close(fd);
		return -1;
	}
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, body + got, (size_t)st.st_size - got);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			break;
		}
		got += (size_t)r;
	}
	close(fd);
	if (got != (size_t)st.st_size) {
		log_warn("web: %s changed while it was read; not served", urlpath);
		free(body);
		return -1;
	}
	/* The ETag: the start of the content's SHA-256. */
	if (!EVP_Digest(body ? body : (uint8_t *)"", got, digest, &dlen, EVP_sha256(), NULL)) {
		free(body);
		return -1;
	}
	memset(f, 0, sizeof *f);
	snprintf(f->path, sizeof f->path, "%s", urlpath);
	f->path_len = strlen(f->path);
	f->type = type_of(name);
	f->etag[0] = '"';
	for (i = 0; i < 8; i++)
		sprintf(f->etag + 1 + 2 * i, "%02x", digest[i]);
	f->etag[17] = '"';
	f->etag[18] = 0;
	f->keep = build(f, body, got, 1, &f->head_keep);
	f->close = build(f, body, got, 0, &f->head_close);
	free(body);
	if (!f->keep || !f->close) {
		sbuf_unref(f->keep);
		sbuf_unref(f->close);
		return -1;
	}
	w->n++;
	w->total += got;
	return 0;
}

static void load_dir(webfiles_t *w, int dirfd, const char *prefix, int depth)
{
	DIR *d = fdopendir(dirfd);
	struct dirent *e;

	if (!d) {
		close(dirfd);
		return;
	}
	while ((e = readdir(d)) != NULL) {
		char urlpath[MAX_PATH];
		struct stat st;

		if (!name_ok(e->d_name) || fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if ((size_t)snprintf(urlpath, sizeof urlpath, "%s/%s", prefix, e->d_name) >= sizeof urlpath)
			continue;
		if (S_ISDIR(st.st_mode)) {
			int sub;
			if (depth < MAX_DEPTH &&
			    (sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) >= 0)
				load_dir(w, sub, urlpath, depth + 1);
		} else if (S_ISREG(st.st_mode) && type_of(e->d_name)) {
			load_file(w, dirfd, e->d_name, urlpath);
		}
	}
	closedir(d);
}

webfiles_t *webfiles_load(const char *dir)
{
	webfiles_t *w = calloc(1, sizeof *w);
	int fd;

	if (!w)
		return NULL;
	if (!dir || !*dir)
		return w;
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		log_warn("web: cannot open %s (%s): serving the API without the web client", dir,
		         strerror(errno));
		return w;
	}
	load_dir(w, fd, "", 1);
	log_info("web: %zu files (%zu bytes) from %s", w->n, w->total, dir);
	return w;
}

void webfiles_free(webfiles_t *w)
{
	size_t i;

	if (!w)
		return;
	for (i = 0; i < w->n; i++) {
		sbuf_unref(w->files[i].keep);
		sbuf_unref(w->files[i].close);
	}
	free(w);
}

size_t webfiles_count(const webfiles_t *w)
{
	return w ? w->n : 0;
}

static const webfile_t *find(const webfiles_t *w, const char *path, size_t len)
{
	size_t i;

	if (len == 1 && path[0] == '/')
		path = "/index.html", len = 11;
	for (i = 0; i < w->n; i++)
		if (w->files[i].path_len == len && !memcmp(w->files[i].path, path, len))
			return &w->files[i];
	return NULL;
}

/* True when an If-None-Match value names etag (or is "*"). */
static int etag_matches(const http_header_t *h, const char *etag)
{
	size_t elen = strlen(etag), i;

	if (!h)
		return 0;
	for (i = 0; i < h->value_len; i++) {
		if (h->value[i] == '*')
			return 1;
		if (i + elen <= h->value_len && !memcmp(h->value + i, etag, elen))
			return 1;
	}
	return 0;
}

sbuf_t *webfiles_response(const webfiles_t *w, const http_request_t *req, int keep_alive, int *oom)
{
	const webfile_t *f;
	char head[1024];
	int n, get, headreq;

	*oom = 0;
	if (!w || !(f = find(w, req->target, req->path_len)))
		return NULL;
	get = req->method_len == 3 && !memcmp(req->method, "GET", 3);
	headreq = req->method_len == 4 && !memcmp(req->method, "HEAD", 4);
	if (!get && !headreq) {
		sbuf_t *b = http_error_response(405, "bad_request", "web files take GET or HEAD", keep_alive,
		                               "Allow: GET, HEAD\r\n");
		*oom = !b;
		return b;
	}
	if (etag_matches(http_find_header(req, "if-none-match"), f->etag)) {
		sbuf_t *b;
		n = snprintf(head, sizeof head, "HTTP/1.1 304 Not Modified\r\nETag: %s\r\n" COMMON_HEADERS "%s\r\n",
		             f->etag, keep_alive ? "" : "Connection: close\r\n");
		*oom = !(b = sbuf_copy(head, (size_t)n));
		return b;
	}
	if (headreq) {
		const sbuf_t *full = keep_alive ? f->keep : f->close;
		sbuf_t *b = sbuf_copy(full->data, keep_alive ? f->head_keep : f->head_close);
		*oom = !b;
		return b;
	}
	return sbuf_ref(keep_alive ? f->keep : f->close);
}
