/* unit_clientaddr.c - address keys, CIDR lists, the PROXY protocol parser
 * and X-Forwarded-For.
 *
 * Every parser input is placed right before an unreadable page (as
 * unit_http.c does), so a read one byte past the end crashes the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "clientaddr.h"

/* Copies n bytes of s to the end of a page followed by a PROT_NONE page. */
static void *guarded(const void *s, size_t n)
{
	static char *region;
	static size_t pg;

	if (!region) {
		pg = (size_t)sysconf(_SC_PAGESIZE);
		region = mmap(NULL, 5 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		assert_true(region != MAP_FAILED);
		assert_int_equal(mprotect(region + 4 * pg, pg, PROT_NONE), 0);
	}
	assert_true(n <= 4 * pg);
	memcpy(region + 4 * pg - n, s, n);
	return region + 4 * pg - n;
}

static int parse_g(const char *s, addr_t *a)
{
	return addr_parse(guarded(s, strlen(s)), strlen(s), a);
}

static addr_t A(const char *s)
{
	addr_t a;

	if (parse_g(s, &a) != 0)
		fail_msg("not an address: %s", s);
	return a;
}

static int pp(const void *buf, size_t len, proxy_result_t *r)
{
	return proxy_parse(guarded(buf, len), len, r);
}

static int pps(const char *s, proxy_result_t *r)
{
	return pp(s, strlen(s), r);
}

static int list(const char *s, addr_list_t *l, char *err, size_t errcap)
{
	return addr_list_parse(guarded(s, strlen(s)), strlen(s), l, err, errcap);
}

static void assert_addr(const addr_t *a, const char *text)
{
	char buf[ADDR_STRLEN];

	assert_true(addr_format(a, buf, sizeof buf) > 0);
	assert_string_equal(buf, text);
}

/* ---- Keys and formatting ------------------------------------------------ */

static void test_keys(void **state)
{
	struct sockaddr_in in = {0};
	struct sockaddr_in6 in6 = {0};
	struct sockaddr_un un = {0};
	struct in_addr i4;
	addr_key_t k = 42;
	addr_t a;

	(void)state;
	in.sin_family = AF_INET;
	inet_pton(AF_INET, "203.0.113.5", &in.sin_addr);
	assert_int_equal(addr_key_from_sockaddr((struct sockaddr *)&in, sizeof in, &k), 0);
	assert_true(k == UINT64_C(0xFFFFFFFFCB007105));
	i4 = in.sin_addr;
	assert_true(addr_key_from_in(&i4) == k);
	a = A("203.0.113.5");
	assert_true(addr_is_v4(&a));
	assert_true(addr_key(&a) == k);

	/* The same host through a dual-stack socket is the same key. */
	in6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "::ffff:203.0.113.5", &in6.sin6_addr);
	k = 0;
	assert_int_equal(addr_key_from_sockaddr((struct sockaddr *)&in6, sizeof in6, &k), 0);
	assert_true(k == UINT64_C(0xFFFFFFFFCB007105));
	assert_true(addr_key_from_in6(&in6.sin6_addr) == k);
	assert_int_equal(addr_from_sockaddr((struct sockaddr *)&in6, sizeof in6, &a), 0);
	assert_true(addr_is_v4(&a));

	/* IPv6: the upper 64 bits. */
	inet_pton(AF_INET6, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", &in6.sin6_addr);
	assert_int_equal(addr_key_from_sockaddr((struct sockaddr *)&in6, sizeof in6, &k), 0);
	assert_true(k == UINT64_C(0x20010db800010002));
	assert_int_equal(addr_from_sockaddr((struct sockaddr *)&in6, sizeof in6, &a), 0);
	assert_false(addr_is_v4(&a));
	assert_addr(&a, "2001:db8:1:2:aaaa:bbbb:cccc:dddd");

	/* Other families and short lengths are refused, the key untouched. */
	un.sun_family = AF_UNIX;
	k = 42;
	assert_int_equal(addr_key_from_sockaddr((struct sockaddr *)&un, sizeof un, &k), -1);
	assert_true(k == 42);
	assert_int_equal(addr_key_from_sockaddr((struct sockaddr *)&in, sizeof in - 1, &k), -1);
	assert_int_equal(addr_key_from_sockaddr((struct sockaddr *)&in6, sizeof in6 - 1, &k), -1);
	assert_int_equal(addr_key_from_sockaddr(NULL, 0, &k), -1);
	assert_true(k == 42);
}

static void test_slash64(void **state)
{
	addr_t a = A("2001:db8:1:2::1"), b = A("2001:db8:1:2:ffff:ffff:ffff:ffff");
	addr_t c = A("2001:db8:1:3::1"), d = A("2001:db9:1:2::1");
	addr_t v4 = A("0.0.0.0"), mc = A("ffff:ffff::");

	(void)state;
	assert_true(addr_key(&a) == addr_key(&b));
	assert_true(addr_key(&a) != addr_key(&c));
	assert_true(addr_key(&a) != addr_key(&d));
	/* The IPv4 space sits where only multicast IPv6 could reach. */
	assert_true(addr_key(&v4) == ADDR_KEY_V4);
	assert_true(addr_key(&mc) == ADDR_KEY_V4);
	assert_true(addr_key(&a) >> 32 != 0xFFFFFFFFu);
}

static void test_format(void **state)
{
	char buf[ADDR_KEY_STRLEN];
	addr_t a;

	(void)state;
	assert_int_equal(addr_key_format(UINT64_C(0xFFFFFFFFCB007105), buf, sizeof buf), 11);
	assert_string_equal(buf, "203.0.113.5");
	assert_int_equal(addr_key_format(UINT64_C(0x20010db800010002), buf, sizeof buf), 17);
	assert_string_equal(buf, "2001:db8:1:2::/64");
	a = A("2001:db8::77");
	assert_int_equal(addr_key_format(addr_key(&a), buf, sizeof buf), 13);
	assert_string_equal(buf, "2001:db8::/64");
	a = A("::1");
	addr_key_format(addr_key(&a), buf, sizeof buf);
	assert_string_equal(buf, "::/64");
	assert_int_equal(addr_key_format(UINT64_C(0xffffeeeeddddcccc), buf, sizeof buf), 24);
	assert_string_equal(buf, "ffff:eeee:dddd:cccc::/64");
	assert_int_equal(addr_key_format(ADDR_KEY_V4 | 0xffffffffu, buf, sizeof buf), 15);
	assert_string_equal(buf, "255.255.255.255");
	a = A("10.0.0.1");
	assert_int_equal(addr_key_format(addr_key(&a), buf, sizeof buf), 8);
	assert_string_equal(buf, "10.0.0.1");
	assert_int_equal(addr_key_format(ADDR_KEY_V4, buf, sizeof buf), 7);
	assert_string_equal(buf, "0.0.0.0");

	/* Exactly enough room, and one byte short. */
	assert_int_equal(addr_key_format(UINT64_C(0xFFFFFFFFCB007105), buf, 12), 11);
	assert_int_equal(addr_key_format(UINT64_C(0xFFFFFFFFCB007105), buf, 11), -1);
	assert_string_equal(buf, "");
	assert_int_equal(addr_key_format(UINT64_C(0x20010db800010002), buf, 18), 17);
	assert_int_equal(addr_key_format(UINT64_C(0x20010db800010002), buf, 17), -1);
	assert_int_equal(addr_key_format(1, buf, 0), -1);

	a = A("::ffff:192.0.2.1");
	assert_addr(&a, "192.0.2.1");
	a = A("2001:0DB8:0000:0000:0000:0000:0000:0001");
	assert_addr(&a, "2001:db8::1");
	assert_int_equal(addr_format(&a, buf, 12), 11);
	assert_int_equal(addr_format(&a, buf, 11), -1);
}

/* Our parser must agree with inet_pton on every one of these. */
static void test_addr_parse_like_inet_pton(void **state)
{
	static const char *cases[] = {
		"0.0.0.0", "1.2.3.4", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3",
		"1.2.3.4.", ".1.2.3.4", "1..2.3", "1.2.3.4.5", " 1.2.3.4", "1.2.3.4 ", "1.2.3.-4",
		"0x1.2.3.4", "1.2.3.00", "", "::", "::1", "1::", "1::2", "1:2:3:4:5:6:7:8",
		"1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8::",
		"::1:2:3:4:5:6:7:8", "1::2::3", ":::", ":1::", "1:", ":1", "1::2:", "12345::",
		"0000::", "00000::", "::ffff:1.2.3.4", "::1.2.3.4", "1:2:3:4:5:6:1.2.3.4",
		"1:2:3:4:5:6:7:1.2.3.4", "::ffff:1.2.3", "::ffff:01.2.3.4", "::ffff:1.2.3.4:5",
		"1.2.3.4::", "fe80::1%eth0", "[::1]", "g::", "FFFF::ABCD", "::ffff:256.1.1.1",
		"::1.2.3.4.5", "1::1.2.3.4", "::.1.2.3", "::1234.1.1.1", "2001:db8::1/64",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof cases / sizeof *cases; i++) {
		uint8_t ref[16];
		addr_t a, want;
		int ours = parse_g(cases[i], &a), theirs = -1;

		if (inet_pton(AF_INET, cases[i], ref) == 1) {
			memset(want.b, 0, 10);
			want.b[10] = want.b[11] = 0xff;
			memcpy(want.b + 12, ref, 4);
			theirs = 0;
		} else if (inet_pton(AF_INET6, cases[i], ref) == 1) {
			memcpy(want.b, ref, 16);
			theirs = 0;
		}
		if (ours != theirs)
			fail_msg("\"%s\": ours %d, inet_pton %d", cases[i], ours, theirs);
		if (ours == 0 && memcmp(a.b, want.b, 16) != 0)
			fail_msg("\"%s\": a different address", cases[i]);
	}
	/* Pointer and length: the bytes after n are not part of it. */
	assert_int_equal(addr_parse("1.2.3.4x", 7, &(addr_t){{0}}), 0);
	assert_int_equal(addr_parse("::1]", 3, &(addr_t){{0}}), 0);
}

/* ---- Address lists ------------------------------------------------------ */

static void test_list_good(void **state)
{
	addr_list_t l;
	char err[128];

	(void)state;
	assert_int_equal(list("127.0.0.1,10.0.0.0/8, ::1 ,\tfd00::/8", &l, err, sizeof err), 0);
	assert_string_equal(err, "");
	assert_int_equal(l.n, 4);
	assert_int_equal(l.r[0].prefix, 128);
	assert_int_equal(l.r[1].prefix, 104);
	assert_int_equal(l.r[2].prefix, 128);
	assert_int_equal(l.r[3].prefix, 8);
	assert_addr(&l.r[1].base, "10.0.0.0");
	assert_addr(&l.r[3].base, "fd00::");

	assert_int_equal(list("0.0.0.0/0", &l, err, sizeof err), 0);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].prefix, 96);
	assert_int_equal(list("::/0", &l, err, sizeof err), 0);
	assert_int_equal(l.r[0].prefix, 0);
	assert_int_equal(list("1.2.3.4/32,::1/128", &l, err, sizeof err), 0);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.r[0].prefix, 128);
	assert_int_equal(l.r[1].prefix, 128);
	assert_int_equal(list("", &l, err, sizeof err), 0);
	assert_int_equal(l.n, 0);
	assert_int_equal(list(" \t ", &l, NULL, 0), 0);
	assert_int_equal(l.n, 0);
}

static void test_list_bad(void **state)
{
	static const struct {
		const char *list, *message;
	} bad[] = {
		{"10.0.0.1/8", "address list entry 1 \"10.0.0.1/8\": bits set past the prefix "
		               "(the network is 10.0.0.0/8)"},
		{"::1, fd00::1/8", "address list entry 2 \"fd00::1/8\": bits set past the prefix "
		                   "(the network is fd00::/8)"},
		{"127.0.0.1,foo", "address list entry 2 \"foo\": not an IPv4 or IPv6 address"},
		{"10.0.0.0/33", "address list entry 1 \"10.0.0.0/33\": prefix is not 0..32"},
		{"::/129", "address list entry 1 \"::/129\": prefix is not 0..128"},
		{"10.0.0.0/", "address list entry 1 \"10.0.0.0/\": prefix is not 0..32"},
		{"10.0.0.0/08", "address list entry 1 \"10.0.0.0/08\": prefix is not 0..32"},
		{"10.0.0.0/8/8", "address list entry 1 \"10.0.0.0/8/8\": prefix is not 0..32"},
		{"10.0.0.0/ 8", "address list entry 1 \"10.0.0.0/ 8\": prefix is not 0..32"},
		{"::/1000", "address list entry 1 \"::/1000\": prefix is not 0..128"},
		{"1.2.3.4,", "address list entry 2 \"\": empty entry"},
		{",1.2.3.4", "address list entry 1 \"\": empty entry"},
		{"1.2.3.4, ,5.6.7.8", "address list entry 2 \"\": empty entry"},
		{"[::1]", "address list entry 1 \"[::1]\": not an IPv4 or IPv6 address"},
		{"1.2.3.4 5.6.7.8", "address list entry 1 \"1.2.3.4 5.6.7.8\": not an IPv4 or IPv6 address"},
		{"a\x01\x7f", "address list entry 1 \"a??\": not an IPv4 or IPv6 address"},
	};
	char err[160], many[2048];
	addr_list_t l;
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof *bad; i++) {
		l.n = 99;
		if (list(bad[i].list, &l, err, sizeof err) != -1)
			fail_msg("accepted: %s", bad[i].list);
		assert_string_equal(err, bad[i].message);
		assert_int_equal(l.n, 0);
	}
	/* No room for the message is no crash; a short one is cut. */
	assert_int_equal(list("foo", &l, NULL, 0), -1);
	assert_int_equal(list("foo", &l, err, 10), -1);
	assert_string_equal(err, "address l");

	/* 64 entries fit; the 65th is named. */
	for (n = 0, i = 0; i < ADDR_LIST_MAX; i++)
		n += (size_t)sprintf(many + n, "%s10.0.%zu.0/24", i ? "," : "", i);
	assert_int_equal(list(many, &l, err, sizeof err), 0);
	assert_int_equal(l.n, ADDR_LIST_MAX);
	sprintf(many + n, ",192.0.2.1");
	assert_int_equal(list(many, &l, err, sizeof err), -1);
	assert_string_equal(err, "address list entry 65 \"192.0.2.1\": more than 64 entries");
	assert_int_equal(l.n, 0);
}

static void test_list_match(void **state)
{
	addr_list_t l;
	struct sockaddr_in6 in6 = {0};
	addr_t a;

	(void)state;
	assert_int_equal(list("10.0.0.0/8,192.168.0.0/23,2001:db8::/33,::1,fd00::/8", &l, NULL, 0), 0);
	a = A("10.255.1.2");
	assert_true(addr_list_match(&l, &a));
	a = A("11.0.0.0");
	assert_false(addr_list_match(&l, &a));
	a = A("9.255.255.255");
	assert_false(addr_list_match(&l, &a));
	a = A("192.168.1.255");
	assert_true(addr_list_match(&l, &a));
	a = A("192.168.2.0");
	assert_false(addr_list_match(&l, &a));
	a = A("2001:db8:7fff::1");
	assert_true(addr_list_match(&l, &a));
	a = A("2001:db8:8000::1");
	assert_false(addr_list_match(&l, &a));
	a = A("::1");
	assert_true(addr_list_match(&l, &a));
	a = A("::2");
	assert_false(addr_list_match(&l, &a));
	a = A("fdff:1::1");
	assert_true(addr_list_match(&l, &a));
	a = A("fe00::1");
	assert_false(addr_list_match(&l, &a));

	/* An IPv4 entry matches the mapped peer of a dual-stack socket. */
	in6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "::ffff:10.1.2.3", &in6.sin6_addr);
	assert_int_equal(addr_from_sockaddr((struct sockaddr *)&in6, sizeof in6, &a), 0);
	assert_true(addr_list_match(&l, &a));
	inet_pton(AF_INET6, "::ffff:11.1.2.3", &in6.sin6_addr);
	assert_int_equal(addr_from_sockaddr((struct sockaddr *)&in6, sizeof in6, &a), 0);
	assert_false(addr_list_match(&l, &a));

	/* IPv4 /0 is every IPv4 address and no IPv6 one; ::/0 is all. */
	assert_int_equal(list("0.0.0.0/0", &l, NULL, 0), 0);
	a = A("203.0.113.5");
	assert_true(addr_list_match(&l, &a));
	a = A("2001:db8::1");
	assert_false(addr_list_match(&l, &a));
	assert_int_equal(list("::/0", &l, NULL, 0), 0);
	assert_true(addr_list_match(&l, &a));
	a = A("203.0.113.5");
	assert_true(addr_list_match(&l, &a));
	/* /32 is one address. */
	assert_int_equal(list("203.0.113.5/32", &l, NULL, 0), 0);
	assert_true(addr_list_match(&l, &a));
	a = A("203.0.113.4");
	assert_false(addr_list_match(&l, &a));
	/* The empty list matches nothing. */
	assert_int_equal(list("", &l, NULL, 0), 0);
	assert_false(addr_list_match(&l, &a));
}

/* ---- PROXY protocol ----------------------------------------------------- */

static const uint8_t SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A v2 header: signature, version/command, family, length, block. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const void *block, size_t blen)
{
	memcpy(out, SIG, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(blen >> 8);
	out[15] = (uint8_t)blen;
	if (blen)
		memcpy(out + 16, block, blen);
	return 16 + blen;
}

/* 203.0.113.5:51000 -> 192.0.2.10:443, then a 3-byte TLV and a 0-byte one. */
static const uint8_t V4_BLOCK[] = {203, 0, 113, 5, 192, 0, 2, 10, 0xc7, 0x38, 0x01, 0xbb,
                                   0x01, 0x00, 0x03, 'h', '2', '!', 0x04, 0x00, 0x00};

/* 2001:db8::1:2:3:4 port 1 -> 2001:db8::99 port 65535. */
static const uint8_t V6_BLOCK[] = {
	0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 2, 0, 3, 0, 4,
	0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99,
	0x00, 0x01, 0xff, 0xff,
};

static void test_proxy_v1_good(void **state)
{
	const char *s = "PROXY TCP4 203.0.113.5 192.0.2.10 51000 443\r\nGET / HTTP/1.1\r\n\r\n";
	proxy_result_t r;
	size_t hl = strlen("PROXY TCP4 203.0.113.5 192.0.2.10 51000 443\r\n");

	(void)state;
	assert_int_equal(pps(s, &r), (int)hl);
	assert_int_equal(r.version, 1);
	assert_false(r.local);
	assert_addr(&r.src, "203.0.113.5");
	assert_addr(&r.dst, "192.0.2.10");
	assert_int_equal(r.src_port, 51000);
	assert_int_equal(r.dst_port, 443);
	/* The header alone, exactly. */
	assert_int_equal(pp(s, hl, &r), (int)hl);

	s = "PROXY TCP6 2001:db8::1 2001:db8::2 0 65535\r\n";
	assert_int_equal(pps(s, &r), (int)strlen(s));
	assert_addr(&r.src, "2001:db8::1");
	assert_int_equal(r.src_port, 0);
	assert_int_equal(r.dst_port, 65535);
	/* A dual-stack proxy's mapped client is the IPv4 client. */
	s = "PROXY TCP6 ::ffff:203.0.113.5 ::ffff:192.0.2.10 1 2\r\n";
	assert_int_equal(pps(s, &r), (int)strlen(s));
	assert_true(addr_is_v4(&r.src));
	assert_addr(&r.src, "203.0.113.5");
	assert_int_equal(pps("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", &r), 56);

	r.local = 0;
	assert_int_equal(pps("PROXY UNKNOWN\r\nxyz", &r), 15);
	assert_true(r.local);
	assert_int_equal(r.version, 1);
	r.local = 0;
	s = "PROXY UNKNOWN ffff:f::f ffff:f::f 65535 65535\r\n";
	assert_int_equal(pps(s, &r), 47);
	assert_int_equal(strlen(s), 47);
	assert_true(r.local);

	/* The longest line allowed: 107 bytes with its CRLF. */
	{
		char line[200];

		memset(line, 'x', sizeof line);
		memcpy(line, "PROXY UNKNOWN ", 14);
		memcpy(line + 105, "\r\n", 2);
		assert_int_equal(pp(line, 107, &r), 107);
		memcpy(line + 105, "x\r\n", 3);
		assert_int_equal(pp(line, 108, &r), PROXY_MALFORMED);
		/* Malformed as soon as the CR can no longer be in time. */
		assert_int_equal(pp(line, 105, &r), PROXY_INCOMPLETE);
		assert_int_equal(pp(line, 106, &r), PROXY_MALFORMED);
	}
}

static void test_proxy_v2_good(void **state)
{
	uint8_t h[1200], req[1300];
	proxy_result_t r;
	size_t n, i;
	uint8_t unix_block[216] = {0};

	(void)state;
	n = v2(h, 0x21, 0x11, V4_BLOCK, sizeof V4_BLOCK);
	memset(&r, 0xaa, sizeof r);
	assert_int_equal(pp(h, n, &r), (int)n);
	assert_int_equal(r.version, 2);
	assert_false(r.local);
	assert_addr(&r.src, "203.0.113.5");
	assert_addr(&r.dst, "192.0.2.10");
	assert_int_equal(r.src_port, 51000);
	assert_int_equal(r.dst_port, 443);
	/* With the connection's bytes after it, the header alone is consumed. */
	memcpy(req, h, n);
	memcpy(req + n, "GET / HTTP/1.1\r\n\r\n", 18);
	assert_int_equal(pp(req, n + 18, &r), (int)n);
	/* Even when those bytes begin with another signature. */
	memcpy(req + n, h, n);
	assert_int_equal(pp(req, 2 * n, &r), (int)n);

	n = v2(h, 0x21, 0x21, V6_BLOCK, sizeof V6_BLOCK);
	assert_int_equal(pp(h, n, &r), 52);
	assert_addr(&r.src, "2001:db8::1:2:3:4");
	assert_addr(&r.dst, "2001:db8::99");
	assert_int_equal(r.src_port, 1);
	assert_int_equal(r.dst_port, 65535);

	/* LOCAL: the proxy's own health check, whatever block it carries. */
	n = v2(h, 0x20, 0x00, NULL, 0);
	assert_int_equal(pp(h, n, &r), 16);
	assert_true(r.local);
	n = v2(h, 0x20, 0x11, V4_BLOCK, sizeof V4_BLOCK);
	assert_int_equal(pp(h, n, &r), (int)n);
	assert_true(r.local);
	n = v2(h, 0x20, 0xff, "ab", 2); /* the family of LOCAL is ignored */
	assert_int_equal(pp(h, n, &r), 18);
	assert_true(r.local);

	/* UNSPEC, UNIX and DGRAM: the peer's own address. */
	n = v2(h, 0x21, 0x00, NULL, 0);
	assert_int_equal(pp(h, n, &r), 16);
	assert_true(r.local);
	n = v2(h, 0x21, 0x31, unix_block, sizeof unix_block);
	assert_int_equal(pp(h, n, &r), 16 + 216);
	assert_true(r.local);
	n = v2(h, 0x21, 0x12, V4_BLOCK, 12);
	assert_int_equal(pp(h, n, &r), 28);
	assert_true(r.local);

	/* The longest accepted: PROXY_MAX_HEADER in all, padded by one TLV. */
	memcpy(h + 16, V4_BLOCK, 12);
	h[28] = 0x04;
	h[29] = (uint8_t)((PROXY_MAX_HEADER - 31) >> 8);
	h[30] = (uint8_t)(PROXY_MAX_HEADER - 31);
	for (i = 31; i < PROXY_MAX_HEADER; i++)
		h[i] = (uint8_t)i;
	memcpy(h, SIG, 12);
	h[12] = 0x21;
	h[13] = 0x11;
	h[14] = (uint8_t)((PROXY_MAX_HEADER - 16) >> 8);
	h[15] = (uint8_t)(PROXY_MAX_HEADER - 16);
	assert_int_equal(pp(h, PROXY_MAX_HEADER, &r), PROXY_MAX_HEADER);
	assert_false(r.local);
	assert_addr(&r.src, "203.0.113.5");
}

/* Every proper prefix of a good header needs more, and then it parses. */
static void check_prefixes(const void *h, size_t n)
{
	proxy_result_t r;
	size_t i;

	for (i = 0; i < n; i++)
		if (pp(h, i, &r) != PROXY_INCOMPLETE)
			fail_msg("a prefix of %zu of %zu bytes is not incomplete", i, n);
	assert_int_equal(pp(h, n, &r), (int)n);
}

static void test_proxy_prefixes(void **state)
{
	uint8_t h[256];

	(void)state;
	static const char *v1[] = {
		"PROXY TCP4 203.0.113.5 192.0.2.10 51000 443\r\n",
		"PROXY TCP6 2001:db8::1 ::ffff:1.2.3.4 1 2\r\n",
		"PROXY UNKNOWN\r\n",
		"PROXY UNKNOWN 1.2.3.4\r\n",
	};
	size_t i;

	for (i = 0; i < sizeof v1 / sizeof *v1; i++)
		check_prefixes(v1[i], strlen(v1[i]));
	check_prefixes(h, v2(h, 0x21, 0x11, V4_BLOCK, sizeof V4_BLOCK));
	check_prefixes(h, v2(h, 0x21, 0x21, V6_BLOCK, sizeof V6_BLOCK));
	check_prefixes(h, v2(h, 0x20, 0x00, NULL, 0));
}

static void test_proxy_not_proxy(void **state)
{
#define S(x) {x, sizeof x - 1}
	static const struct {
		const char *s;
		size_t n;
	} not[] = {
		S("GET / HTTP/1.1\r\n\r\n"), S("PR0XY TCP4"), S("proxy TCP4"), S("Q"), S("P ROXY"),
		S("\x16\x03\x01"), S("\r\n\r\nGET / HTTP/1.1\r\n"), S("\r\n\r\n\0\r\nQUIT\r\x21"),
		S("\r\n\r\n\0\r\nQUIX\n\x21"), S("\r\r"), S("\0PROXY"),
	};
#undef S
	proxy_result_t r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof not / sizeof *not; i++)
		if (pp(not[i].s, not[i].n, &r) != PROXY_NOT_PROXY)
			fail_msg("not refused as no PROXY header: case %zu", i);
	/* Decided at the first byte that differs. */
	assert_int_equal(pps("G", &r), PROXY_NOT_PROXY);
	assert_int_equal(pps("PX", &r), PROXY_NOT_PROXY);
	assert_int_equal(pp("\r\n\r\n\0\r\nX", 8, &r), PROXY_NOT_PROXY);
	assert_int_equal(pp("", 0, &r), PROXY_INCOMPLETE);
	assert_int_equal(pps("PROX", &r), PROXY_INCOMPLETE);
	assert_int_equal(pp("\r\n\r\n\0\r\nQUI", 10, &r), PROXY_INCOMPLETE);
}

static void test_proxy_v1_malformed(void **state)
{
	static const char *bad[] = {
		"PROXY TCP4 203.0.113.5 192.0.2.10 51000 443\n",
		"PROXY TCP4 203.0.113.5 192.0.2.10 51000 443\rx",
		"PROXY TCP4 203.0.113.5 192.0.2.10 51000 443\n\r\n",
		"PROXY TCP4 203.0.113.5 192.0.2.10\n 51000 443\r\n",
		"PROXY TCP4 203.0.113.5 192.0.2.10 51000 443 \r\n",
		"PROXY TCP4 203.0.113.5  192.0.2.10 51000 443\r\n",
		"PROXY  TCP4 203.0.113.5 192.0.2.10 51000 443\r\n",
		"PROXY TCP4 203.0.113.5 192.0.2.10 51000\r\n",
		"PROXY TCP4 203.0.113.5 192.0.2.10 51000 443 80\r\n",
		"PROXY TCP4 203.0.113.05 192.0.2.10 51000 443\r\n",
		"PROXY TCP4 203.0.113 192.0.2.10 51000 443\r\n",
		"PROXY TCP4 203.0.113.256 192.0.2.10 51000 443\r\n",
		"PROXY TCP4 203.0.113.5 192.0.2.10 051000 443\r\n",
		"PROXY TCP4 203.0.113.5 192.0.2.10 65536 443\r\n",
		"PROXY TCP4 203.0.113.5 192.0.2.10 -1 443\r\n",
		"PROXY TCP4 203.0.113.5 192.0.2.10 +1 443\r\n",
		"PROXY TCP4 203.0.113.5 192.0.2.10 100000 443\r\n",
		"PROXY TCP4 2001:db8::1 2001:db8::2 1 2\r\n",
		"PROXY TCP6 203.0.113.5 192.0.2.10 1 2\r\n",
		"PROXY TCP6 2001:db8::1/64 2001:db8::2 1 2\r\n",
		"PROXY TCP6 [2001:db8::1] 2001:db8::2 1 2\r\n",
		"PROXY TCP6 ff02::1 2001:db8::2 1 2\r\n",
		"PROXY TCP5 203.0.113.5 192.0.2.10 1 2\r\n",
		"PROXY tcp4 203.0.113.5 192.0.2.10 1 2\r\n",
		"PROXY UDP4 203.0.113.5 192.0.2.10 1 2\r\n",
		"PROXY UNKNOWNX\r\n",
		"PROXY TCP4\r\n",
		"PROXY \r\n",
		"PROXY\r\n",
		"PROXYTCP4 203.0.113.5 192.0.2.10 1 2\r\n",
		"PROXY TCP4 203.0.113.5\t192.0.2.10 1 2\r\n",
	};
	proxy_result_t r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof *bad; i++)
		if (pps(bad[i], &r) != PROXY_MALFORMED)
			fail_msg("accepted: %s", bad[i]);
	/* A NUL inside the line is no terminator. */
	assert_int_equal(pp("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", 33, &r), PROXY_MALFORMED);
}

static void test_proxy_v2_malformed(void **state)
{
	uint8_t h[2048];
	proxy_result_t r;
	size_t n;

	(void)state;
	/* Version 1 in the binary header, version 3, commands 2 and 15:
	 * refused at the 13th byte. */
	n = v2(h, 0x11, 0x11, V4_BLOCK, 12);
	assert_int_equal(pp(h, 13, &r), PROXY_MALFORMED);
	assert_int_equal(pp(h, n, &r), PROXY_MALFORMED);
	v2(h, 0x31, 0x11, V4_BLOCK, 12);
	assert_int_equal(pp(h, 13, &r), PROXY_MALFORMED);
	v2(h, 0x22, 0x11, V4_BLOCK, 12);
	assert_int_equal(pp(h, 13, &r), PROXY_MALFORMED);
	v2(h, 0x2f, 0x11, V4_BLOCK, 12);
	assert_int_equal(pp(h, n, &r), PROXY_MALFORMED);

	/* Undefined families and transports for PROXY: at the 14th byte. */
	v2(h, 0x21, 0x41, V4_BLOCK, 12);
	assert_int_equal(pp(h, 14, &r), PROXY_MALFORMED);
	v2(h, 0x21, 0x13, V4_BLOCK, 12);
	assert_int_equal(pp(h, 14, &r), PROXY_MALFORMED);
	v2(h, 0x21, 0xf1, V4_BLOCK, 12);
	assert_int_equal(pp(h, n, &r), PROXY_MALFORMED);

	/* Lengths: too short for the family's addresses, or past the cap -
	 * both refused at the 16th byte, before waiting for the block. */
	v2(h, 0x21, 0x11, V4_BLOCK, 11);
	assert_int_equal(pp(h, 16, &r), PROXY_MALFORMED);
	assert_int_equal(pp(h, 27, &r), PROXY_MALFORMED);
	v2(h, 0x21, 0x21, V6_BLOCK, 35);
	assert_int_equal(pp(h, 16, &r), PROXY_MALFORMED);
	v2(h, 0x21, 0x21, V4_BLOCK, 12);
	assert_int_equal(pp(h, 28, &r), PROXY_MALFORMED);
	v2(h, 0x21, 0x11, V4_BLOCK, 12);
	h[14] = (uint8_t)((PROXY_MAX_HEADER - 15) >> 8);
	h[15] = (uint8_t)(PROXY_MAX_HEADER - 15);
	assert_int_equal(pp(h, 16, &r), PROXY_MALFORMED);
	h[14] = h[15] = 0xff;
	assert_int_equal(pp(h, 16, &r), PROXY_MALFORMED);
	h[14] = (uint8_t)((PROXY_MAX_HEADER - 16) >> 8);
	h[15] = (uint8_t)(PROXY_MAX_HEADER - 16);
	assert_int_equal(pp(h, 16, &r), PROXY_INCOMPLETE);
	/* The LOCAL length is capped too. */
	v2(h, 0x20, 0x00, NULL, 0);
	h[14] = h[15] = 0xff;
	assert_int_equal(pp(h, 16, &r), PROXY_MALFORMED);

	/* TLVs that do not fill the rest exactly. */
	{
		uint8_t blk[32];

		memcpy(blk, V4_BLOCK, 12);
		memcpy(blk + 12, "\x01\x00\x04" "abc", 6); /* claims 4, has 3 */
		n = v2(h, 0x21, 0x11, blk, 18);
		assert_int_equal(pp(h, n, &r), PROXY_MALFORMED);
		memcpy(blk + 12, "\x01\x00", 2); /* two stray bytes */
		n = v2(h, 0x21, 0x11, blk, 14);
		assert_int_equal(pp(h, n, &r), PROXY_MALFORMED);
		memcpy(blk + 12, "\x01\x00\x00\x05", 4); /* a TLV and one stray */
		n = v2(h, 0x21, 0x11, blk, 16);
		assert_int_equal(pp(h, n, &r), PROXY_MALFORMED);
		memcpy(blk + 12, "\x01\x00\x01\x05", 4); /* and the same, well formed */
		n = v2(h, 0x21, 0x11, blk, 16);
		assert_int_equal(pp(h, n, &r), 32);
	}
	/* A multicast client. */
	{
		uint8_t blk[36];

		memcpy(blk, V6_BLOCK, 36);
		blk[0] = 0xff;
		blk[1] = 0x02;
		n = v2(h, 0x21, 0x21, blk, 36);
		assert_int_equal(pp(h, n, &r), PROXY_MALFORMED);
	}
}

/* ---- X-Forwarded-For ---------------------------------------------------- */

static addr_list_t trusted;

static int setup_trusted(void **state)
{
	(void)state;
	return list("10.0.0.0/8, 127.0.0.1, fd00::/8", &trusted, NULL, 0);
}

/* The client of request text s (its head) from peer. */
static int xff(const char *s, const char *peer, char *client)
{
	http_request_t req;
	addr_t p = A(peer), c;
	int rc;

	assert_int_equal(http_parse_request(guarded(s, strlen(s)), strlen(s), &req), (int)strlen(s));
	memset(&c, 0x55, sizeof c);
	rc = xff_client(&req, &trusted, &p, &c);
	assert_true(addr_format(&c, client, ADDR_STRLEN) > 0);
	return rc;
}

/* The client when the only X-Forwarded-For value is v, placed right before
 * the unreadable page. */
static int xff_value(const char *v, const char *peer, char *client)
{
	http_request_t req;
	addr_t p = A(peer), c;
	int rc;

	memset(&req, 0, sizeof req);
	req.nheaders = 2;
	req.headers[0].name = "Host";
	req.headers[0].name_len = 4;
	req.headers[0].value = "x";
	req.headers[0].value_len = 1;
	req.headers[1].name = "X-Forwarded-For";
	req.headers[1].name_len = 15;
	req.headers[1].value = guarded(v, strlen(v));
	req.headers[1].value_len = strlen(v);
	rc = xff_client(&req, &trusted, &p, &c);
	assert_true(addr_format(&c, client, ADDR_STRLEN) > 0);
	return rc;
}

/* A request head, and one with a single X-Forwarded-For header. */
#define HEAD(headers) "GET / HTTP/1.1\r\n" headers "\r\n"
#define XFF1(value) HEAD("X-Forwarded-For: " value "\r\n")

static void test_xff_basic(void **state)
{
	char c[ADDR_STRLEN];

	(void)state;
	/* One header from a trusted proxy. */
	assert_int_equal(xff(XFF1("203.0.113.5"), "10.0.0.1", c), 0);
	assert_string_equal(c, "203.0.113.5");
	/* The name in any case. */
	assert_int_equal(xff(HEAD("x-forwarded-FOR: 203.0.113.6\r\n"), "10.0.0.1", c), 0);
	assert_string_equal(c, "203.0.113.6");
	/* From an untrusted peer the header is the client's own claim. */
	assert_int_equal(xff(XFF1("203.0.113.5"), "198.51.100.9", c), 0);
	assert_string_equal(c, "198.51.100.9");
	/* No header: the (trusted) peer itself. */
	assert_int_equal(xff(HEAD("Host: x\r\n"), "10.0.0.1", c), 0);
	assert_string_equal(c, "10.0.0.1");
	/* IPv6 clients and proxies. */
	assert_int_equal(xff(XFF1("2001:db8::5"), "fd00::1", c), 0);
	assert_string_equal(c, "2001:db8::5");
	/* With the empty list nothing is trusted, not even loopback. */
	{
		addr_list_t saved = trusted;

		assert_int_equal(list("", &trusted, NULL, 0), 0);
		assert_int_equal(xff(XFF1("203.0.113.5"), "127.0.0.1", c), 0);
		assert_string_equal(c, "127.0.0.1");
		trusted = saved;
	}
}

#define XFF "X-Forwarded-For: "
#define PROXY1 "10.0.0.1"

static void test_xff_chains(void **state)
{
	char c[ADDR_STRLEN];

	(void)state;
	/* Several headers form one list, in order. */
	assert_int_equal(xff(HEAD(XFF "198.51.100.1, 203.0.113.5\r\nHost: x\r\n"
	                          XFF "10.0.0.2\r\n"), PROXY1, c), 0);
	assert_string_equal(c, "203.0.113.5");
	assert_int_equal(xff(HEAD(XFF "203.0.113.9\r\n" XFF "198.51.100.7,10.0.0.3\r\n"), PROXY1, c),
	                 0);
	assert_string_equal(c, "198.51.100.7");
	assert_int_equal(xff(HEAD(XFF "203.0.113.9\r\n" XFF "10.0.0.3\r\n"), PROXY1, c), 0);
	assert_string_equal(c, "203.0.113.9");
	/* A trusted chain: the leftmost hop. */
	assert_int_equal(xff(HEAD(XFF "10.0.0.5, 127.0.0.1\r\n" XFF "10.0.0.6\r\n"), PROXY1, c), 0);
	assert_string_equal(c, "10.0.0.5");
	/* Spoofed entries left of the client are ignored, trusted-looking or
	 * garbage: the client wrote them. */
	assert_int_equal(xff(XFF1("10.0.0.9, 127.0.0.1, 203.0.113.5"), PROXY1, c), 0);
	assert_string_equal(c, "203.0.113.5");
	assert_int_equal(xff(HEAD(XFF "<script>, ,\r\n" XFF "1.1.1.1, 203.0.113.5, 10.0.0.7\r\n"),
	                     PROXY1, c), 0);
	assert_string_equal(c, "203.0.113.5");
	/* Garbage where our own proxy wrote: fall back to the peer. */
	assert_int_equal(xff(XFF1("203.0.113.5, nonsense"), PROXY1, c), XFF_MALFORMED);
	assert_string_equal(c, PROXY1);
	assert_int_equal(xff(HEAD(XFF "203.0.113.5\r\n" XFF "10.0.0.2, unknown\r\n"), PROXY1, c),
	                 XFF_MALFORMED);
	assert_string_equal(c, PROXY1);
	/* An empty header from a trusted proxy is a malformed hop too. */
	assert_int_equal(xff(HEAD(XFF "203.0.113.5\r\n" "X-Forwarded-For:\r\n"), PROXY1, c),
	                 XFF_MALFORMED);
	assert_string_equal(c, PROXY1);
}

static void test_xff_entries(void **state)
{
	static const struct {
		const char *value, *client; /* NULL: malformed */
	} cases[] = {
		{"203.0.113.5", "203.0.113.5"},
		{" \t203.0.113.5 \t", "203.0.113.5"},
		{"203.0.113.5:8080", "203.0.113.5"},
		{"203.0.113.5:0", "203.0.113.5"},
		{"2001:db8::1", "2001:db8::1"},
		{"2001:db8::1:80", "2001:db8::1:80"}, /* no port: an IPv6 address */
		{"[2001:db8::1]", "2001:db8::1"},
		{"[2001:db8::1]:443", "2001:db8::1"},
		{" [2001:db8::1]:443 ", "2001:db8::1"},
		{"::ffff:203.0.113.5", "203.0.113.5"},
		{"[::ffff:203.0.113.5]:1", "203.0.113.5"},
		{"1.1.1.1,203.0.113.5", "203.0.113.5"},
		{"", NULL},
		{" ", NULL},
		{"203.0.113.5,", NULL},
		{"203.0.113.5:", NULL},
		{"203.0.113.5:65536", NULL},
		{"203.0.113.5:080", NULL},
		{"203.0.113.5:80:80", NULL},
		{"203.0.113.5 :80", NULL},
		{"203.0.113", NULL},
		{"203.0.113.05", NULL},
		{"[2001:db8::1", NULL},
		{"[2001:db8::1]443", NULL},
		{"[2001:db8::1]:", NULL},
		{"[203.0.113.5]", NULL},
		{"[]", NULL},
		{"[", NULL},
		{"2001:db8::1%eth0", NULL},
		{"unknown", NULL},
		{"_hidden", NULL},
		{"ff02::1", NULL},
		{"[ff05::2]:80", NULL},
		{"203.0.113.5 198.51.100.1", NULL},
		{"\"203.0.113.5\"", NULL},
		{"for=203.0.113.5", NULL},
	};
	char c[ADDR_STRLEN];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof cases / sizeof *cases; i++) {
		int rc = xff_value(cases[i].value, "10.0.0.1", c);

		if (!cases[i].client) {
			if (rc != XFF_MALFORMED || strcmp(c, "10.0.0.1") != 0)
				fail_msg("\"%s\": accepted as %s", cases[i].value, c);
		} else if (rc != 0 || strcmp(c, cases[i].client) != 0) {
			fail_msg("\"%s\": %d %s, not %s", cases[i].value, rc, c, cases[i].client);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_slash64),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_addr_parse_like_inet_pton),
		cmocka_unit_test(test_list_good),
		cmocka_unit_test(test_list_bad),
		cmocka_unit_test(test_list_match),
		cmocka_unit_test(test_proxy_v1_good),
		cmocka_unit_test(test_proxy_v2_good),
		cmocka_unit_test(test_proxy_prefixes),
		cmocka_unit_test(test_proxy_not_proxy),
		cmocka_unit_test(test_proxy_v1_malformed),
		cmocka_unit_test(test_proxy_v2_malformed),
		cmocka_unit_test_setup(test_xff_basic, setup_trusted),
		cmocka_unit_test_setup(test_xff_chains, setup_trusted),
		cmocka_unit_test_setup(test_xff_entries, setup_trusted),
	};
	return cmocka_run_group_tests_name("unit_clientaddr", tests, NULL, NULL);
}
