/* fuzz_proxy.c - libFuzzer target for clientaddr.c: the PROXY protocol
 * parser, the address list parser and X-Forwarded-For extraction.
 *
 * The whole input is a PROXY header candidate. Its first byte also picks a
 * split of the rest: the bytes before the split are an address list (and
 * one address, checked against glibc's inet_pton), the bytes after it a
 * request head, and also, as they are, the value of one X-Forwarded-For
 * header (which http_parse_request would never let through unvetted). Every
 * parser gets an exact-size heap copy, so ASan sees any over-read. */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clientaddr.h"

static void *copy(const uint8_t *p, size_t n)
{
	void *b = malloc(n ? n : 1);

	if (!b)
		abort();
	if (n)
		memcpy(b, p, n);
	return b;
}

/* An address formats, and its text parses back to the same address. */
static void check_addr(const addr_t *a)
{
	char text[ADDR_STRLEN], key[ADDR_KEY_STRLEN];
	addr_t back;
	int n = addr_format(a, text, sizeof text);

	if (n <= 0 || addr_parse(text, (size_t)n, &back) != 0 || memcmp(back.b, a->b, 16) != 0)
		abort();
	if (addr_key_format(addr_key(a), key, sizeof key) <= 0)
		abort();
}

static void fuzz_proxy(const uint8_t *data, size_t size)
{
	uint8_t *buf = copy(data, size);
	proxy_result_t r, r2;
	int n = proxy_parse(buf, size, &r), m;
	size_t cut;

	if (n > 0) {
		if ((size_t)n > size || n > PROXY_MAX_HEADER || (r.version != 1 && r.version != 2))
			abort();
		if (!r.local) {
			if (r.src.b[0] == 0xff) /* multicast client */
				abort();
			check_addr(&r.src);
			check_addr(&r.dst);
		}
		/* v2 with addresses: TLVs fill what follows them exactly. */
		if (r.version == 2 && !r.local) {
			size_t off = 16 + (buf[13] == 0x11 ? 12 : 36);

			while (off + 3 <= (size_t)n)
				off += 3 + ((size_t)buf[off + 1] << 8 | buf[off + 2]);
			if (off != (size_t)n)
				abort();
		}
		/* The header alone parses the same: nothing after it was read. */
		if (proxy_parse(buf, (size_t)n, &r2) != n || memcmp(&r, &r2, sizeof r) != 0)
			abort();
	} else if (n == PROXY_INCOMPLETE) {
		if (size >= PROXY_MAX_HEADER)
			abort();
	} else if (n != PROXY_MALFORMED && n != PROXY_NOT_PROXY) {
		abort();
	}
	/* A prefix never decides differently from the whole: it needs more,
	 * or it gives the same answer (a header only once it is all there). */
	if (n > 0 && proxy_parse(buf, (size_t)n - 1, &r2) != PROXY_INCOMPLETE)
		abort();
	for (cut = size / 2; cut < size; cut = cut + 1 + (size - cut) / 2) {
		m = proxy_parse(buf, cut, &r2);
		if (m == PROXY_INCOMPLETE)
			continue;
		if (m != n || (n > 0 && cut < (size_t)n))
			abort();
	}
	free(buf);
}

static void fuzz_list(const uint8_t *data, size_t size, addr_list_t *l)
{
	char *s = copy(data, size), err[160];
	size_t i;

	memset(err, 'x', sizeof err);
	if (addr_list_parse(s, size, l, err, sizeof err) == 0) {
		if (l->n > ADDR_LIST_MAX)
			abort();
		for (i = 0; i < l->n; i++) {
			const addr_range_t *r = &l->r[i];
			unsigned b;

			if (r->prefix > 128 || !addr_list_match(l, &r->base))
				abort();
			for (b = r->prefix; b < 128; b++)
				if (r->base.b[b / 8] & (0x80u >> (b % 8)))
					abort();
			check_addr(&r->base);
		}
	} else if (l->n != 0 || !memchr(err, 0, sizeof err) || err[0] == 0) {
		abort();
	}
	free(s);

	/* The same bytes as one address: agree with inet_pton, which wants a
	 * NUL-terminated string. */
	if (size < 64 && !memchr(data, 0, size)) {
		char text[64];
		uint8_t ref[16];
		addr_t a, want;
		int theirs = -1, ours;

		memcpy(text, data, size);
		text[size] = 0;
		s = copy(data, size);
		ours = addr_parse(s, size, &a);
		free(s);
		if (inet_pton(AF_INET, text, ref) == 1) {
			memset(want.b, 0, 10);
			want.b[10] = want.b[11] = 0xff;
			memcpy(want.b + 12, ref, 4);
			theirs = 0;
		} else if (inet_pton(AF_INET6, text, ref) == 1) {
			memcpy(want.b, ref, 16);
			theirs = 0;
		}
		if (ours != theirs || (ours == 0 && memcmp(a.b, want.b, 16) != 0))
			abort();
	}
}

static void check_xff(const http_request_t *req, const addr_list_t *trusted, const addr_t *peer)
{
	addr_t c;
	int rc = xff_client(req, trusted, peer, &c);

	if (rc != 0 && rc != XFF_MALFORMED)
		abort();
	if ((rc != 0 || !addr_list_match(trusted, peer)) && memcmp(&c, peer, sizeof c) != 0)
		abort();
	if (memcmp(&c, peer, sizeof c) != 0 && c.b[0] == 0xff)
		abort();
	check_addr(&c);
}

static void fuzz_xff(const uint8_t *data, size_t size, const addr_list_t *trusted)
{
	char *s = copy(data, size);
	http_request_t req;
	addr_t peers[3];

	/* A trusted peer of each family, and an untrusted one. */
	addr_parse("10.0.0.1", 8, &peers[0]);
	addr_parse("fd00::1", 7, &peers[1]);
	addr_parse("203.0.113.5", 11, &peers[2]);

	if (http_parse_request(s, size, &req) > 0) {
		check_xff(&req, trusted, &peers[0]);
		check_xff(&req, trusted, &peers[1]);
		check_xff(&req, trusted, &peers[2]);
	}
	memset(&req, 0, sizeof req);
	req.nheaders = 1;
	req.headers[0].name = "X-Forwarded-For";
	req.headers[0].name_len = 15;
	req.headers[0].value = s;
	req.headers[0].value_len = size;
	check_xff(&req, trusted, &peers[0]);
	check_xff(&req, trusted, &peers[1]);
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char def[] = "10.0.0.0/8,127.0.0.1,fd00::/8,::1";
	addr_list_t l, fallback;
	size_t split;
	char key[ADDR_KEY_STRLEN];

	fuzz_proxy(data, size);
	if (size == 0)
		return 0;
	split = (size_t)data[0] * (size - 1) / 255;
	fuzz_list(data + 1, split, &l);
	/* XFF is walked only through trusted hops: with no list of its own,
	 * the input gets one that trusts something. */
	if (l.n == 0) {
		if (addr_list_parse(def, sizeof def - 1, &fallback, NULL, 0) != 0)
			abort();
		l = fallback;
	}
	fuzz_xff(data + 1 + split, size - 1 - split, &l);

	/* Any 64 bits are a key that formats, and whose text is the range
	 * of addresses with that key. */
	if (size >= 8) {
		addr_key_t k = 0;
		addr_list_t one;
		int i, n;

		for (i = 0; i < 8; i++)
			k = k << 8 | data[i];
		n = addr_key_format(k, key, sizeof key);
		if (n <= 0 || n >= ADDR_KEY_STRLEN)
			abort();
		if (addr_list_parse(key, (size_t)n, &one, NULL, 0) != 0 || one.n != 1 ||
		    addr_key(&one.r[0].base) != k || one.r[0].prefix != ((k >> 32) == 0xFFFFFFFFu ? 128 : 64))
			abort();
	}
	return 0;
}
