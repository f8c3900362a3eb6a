/* sbuf.h - shared, reference-counted, immutable byte buffers.
 *
 * An outbound frame is encoded once into an sbuf and queued on every
 * connection that must receive it: fan-out to many devices costs one encode
 * and one allocation, not one per device. Reference counts are atomic, so an
 * sbuf may be created on one thread and released on any other.
 *
 * conv and seq label a "msg" frame with its place in a conversation (0 for
 * other frames); the gateway uses them for resume ordering without parsing. */
#ifndef PARLEY_SBUF_H
#define PARLEY_SBUF_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sbuf {
	atomic_uint refs;
	uint32_t len;
	int64_t conv;
	int64_t seq;
	uint8_t data[];
} sbuf_t;

/* Allocates an sbuf of len bytes with one reference; data is uninitialised.
 * Returns NULL when out of memory. */
sbuf_t *sbuf_new(size_t len);
/* Allocates an sbuf holding a copy of data. */
sbuf_t *sbuf_copy(const void *data, size_t len);

static inline sbuf_t *sbuf_ref(sbuf_t *b)
{
	atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
	return b;
}

/* Drops one reference; frees on the last. Accepts NULL. */
void sbuf_unref(sbuf_t *b);

#endif
