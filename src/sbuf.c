/* sbuf.c - allocation and release of shared frame buffers. */
#include "sbuf.h"

#include <stdlib.h>
#include <string.h>

sbuf_t *sbuf_new(size_t len)
{
	sbuf_t *b;

	if (len > UINT32_MAX)
		return NULL;
	b = malloc(sizeof *b + len);
	if (!b)
		return NULL;
	atomic_init(&b->refs, 1);
	b->len = (uint32_t)len;
	b->conv = 0;
	b->seq = 0;
	return b;
}

sbuf_t *sbuf_copy(const void *data, size_t len)
{
	sbuf_t *b = sbuf_new(len);

	if (b && len)
		memcpy(b->data, data, len);
	return b;
}

void sbuf_unref(sbuf_t *b)
{
	/* acq_rel: the thread that frees must see every write made through
	 * other references before they were dropped. */
	if (b && atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
		free(b);
}
