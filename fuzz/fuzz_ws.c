/* fuzz_ws.c - libFuzzer target for the WebSocket frame parser, driven the
 * way the gateway drives it: frames one after another with the state of a
 * fragmented message carried between them, text validated as UTF-8 across
 * fragments, close payloads checked. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"
#include "ws.h"

#define MAX 4096 /* small, so the fuzzer reaches the size cap */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size ? size : 1);
	size_t off = 0, frag_len = 0;
	int frag_op = 0, code;
	uint32_t utf8 = UTF8_ACCEPT;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	while (off < size) {
		ws_frame_t f;
		long r = ws_next_frame(buf + off, size - off, frag_op, frag_len, MAX, &f);

		if (r <= 0)
			break;
		if ((size_t)r > size - off || f.payload < buf + off ||
		    f.payload + f.payload_len > buf + off + (size_t)r)
			abort();
		off += (size_t)r;
		if (f.opcode == WS_OP_CLOSE) {
			ws_check_close(f.payload, f.payload_len, &code);
			break;
		}
		if (f.opcode >= WS_OP_CLOSE)
			continue;
		if (f.opcode != WS_OP_CONT)
			frag_op = f.opcode;
		frag_len += f.payload_len;
		if (frag_len > MAX)
			abort(); /* the parser must have refused this */
		utf8 = utf8_validate(utf8, f.payload, f.payload_len);
		if (f.fin) {
			frag_op = 0;
			frag_len = 0;
			utf8 = UTF8_ACCEPT;
		}
	}
	free(buf);
	return 0;
}
