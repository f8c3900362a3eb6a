/* fuzz_http.c - libFuzzer target for the HTTP request parser: any bytes,
 * parsed whole and at every split a reader might see, must give a
 * consistent answer and never read outside the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	http_request_t r;
	char out[64];
	int n, i;

	/* A copy of exactly size bytes so ASan sees any over-read. */
	char *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	n = http_parse_request(buf, size, &r);
	if (n > 0) {
		if ((size_t)n > size)
			abort();
		/* What a complete head promises must hold. */
		if (r.path_len > r.target_len || r.nheaders > HTTP_MAX_HEADERS)
			abort();
		for (i = 0; i < (int)r.nheaders; i++)
			if (r.headers[i].name < buf || r.headers[i].value + r.headers[i].value_len > buf + size)
				abort();
		http_query_param(r.target, r.target_len, "token", out, sizeof out);
		http_find_header(&r, "connection");
		/* A prefix of a complete head is never complete. */
		if (n > 1 && http_parse_request(buf, (size_t)n - 1, &r) > 0)
			abort();
	}
	free(buf);
	return 0;
}
