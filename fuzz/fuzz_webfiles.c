/* fuzz_webfiles.c - libFuzzer target for serving the web client's files:
 * any request the HTTP parser accepts, answered from a small folder of
 * files, must give a well-formed response or none, and only ever one of
 * the folder's files. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http.h"
#include "webfiles.h"

static webfiles_t *files;

static void put(const char *dir, const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if ((f = fopen(path, "w"))) {
		fputs(text, f);
		fclose(f);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char dir[] = "/tmp/parley-fuzz-web-XXXXXX", sub[64];

	(void)argc;
	(void)argv;
	if (!mkdtemp(dir))
		abort();
	snprintf(sub, sizeof sub, "%s/js", dir);
	mkdir(sub, 0700);
	put(dir, "index.html", "<!doctype html><p>index</p>\n");
	put(dir, "app.css", "p{}\n");
	put(dir, "js/app.js", "export {};\n");
	put(dir, ".secret.js", "SECRET\n");
	put(dir, "notes.key", "SECRET\n");
	if (!(files = webfiles_load(dir)) || webfiles_count(files) != 3)
		abort();
	/* Served from memory from now on: the folder can go. */
	{
		char cmd[96];
		snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "fuzz_webfiles: could not remove %s\n", dir);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	http_request_t r;
	int keep, oom;
	char *buf = malloc(size ? size : 1);

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	if (http_parse_request(buf, size, &r) > 0) {
		for (keep = 0; keep < 2; keep++) {
			sbuf_t *b = webfiles_response(files, &r, keep, &oom);
			if (!b)
				continue;
			if (b->len < 12 || memcmp(b->data, "HTTP/1.1 ", 9) != 0)
				abort();
			if (memmem(b->data, b->len, "SECRET", 6))
				abort();
			sbuf_unref(b);
		}
	}
	free(buf);
	return 0;
}
