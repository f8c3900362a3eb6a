/* fuzz_envelope.c - libFuzzer target for bus_envelope.c: the envelopes one
 * node publishes on another's Redis channel.
 *
 * Each input is parsed from an exact-size heap copy, so ASan sees any
 * over-read. What parses must hold together (its users and frame inside
 * the input, the frame ending at its end), and must encode back to the
 * same bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bus_envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *p = malloc(size ? size : 1), *back;
	bus_envelope_t e;
	size_t n, i;

	if (!p)
		abort();
	if (size)
		memcpy(p, data, size);
	if (bus_envelope_parse(p, size, &e) == 0) {
		if (!(back = malloc(size)))
			abort();
		n = bus_envelope_head(&e, back);
		if (e.type == 'D') {
			if (e.n == 0 || e.users != p + n || e.frame != e.users + 8 * (size_t)e.n)
				abort();
			for (i = 0; i < e.n; i++)
				bus_envelope_put64(back + n + 8 * i, (uint64_t)bus_envelope_user(&e, (uint32_t)i));
			n += 8 * (size_t)e.n;
		}
		if (e.type != 'K') {
			if (e.frame != p + n || n + e.frame_len != size)
				abort();
			memcpy(back + n, e.frame, e.frame_len);
			n += e.frame_len;
		}
		if (n != size || memcmp(back, p, size) != 0)
			abort();
		free(back);
	}
	free(p);
	return 0;
}
