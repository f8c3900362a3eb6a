/* jbuf.h - a small builder of JSON text.
 *
 * Frames on the hot path (msg, ack, receipt) are written straight into a
 * byte buffer instead of being built as a tree and serialised: one pass, no
 * allocation per field. Parsing stays with Jansson. A jbuf that ran out of
 * memory remembers it (oom) and ignores further appends, so callers check
 * once at the end. */
#ifndef PARLEY_JBUF_H
#define PARLEY_JBUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct jbuf {
	char *data;
	size_t len, cap;
	int oom;
} jbuf_t;

void jbuf_init(jbuf_t *b);
void jbuf_free(jbuf_t *b);
void jbuf_reset(jbuf_t *b);

void jbuf_raw(jbuf_t *b, const char *s, size_t n);
void jbuf_lit(jbuf_t *b, const char *s);          /* raw, NUL-terminated */
void jbuf_str(jbuf_t *b, const char *s, size_t n); /* quoted and escaped */
void jbuf_cstr(jbuf_t *b, const char *s);          /* quoted; NULL -> null */
void jbuf_int(jbuf_t *b, int64_t v);
void jbuf_int_str(jbuf_t *b, int64_t v);           /* as a quoted decimal */
/* "key": -- with the comma before it unless first. */
void jbuf_key(jbuf_t *b, const char *key, int first);

#endif
