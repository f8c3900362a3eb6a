/* clientaddr.c - addresses, keys, CIDR lists, the PROXY protocol and
 * X-Forwarded-For, as clientaddr.h describes.
 *
 * The address parsers are our own rather than inet_pton, which wants a NUL
 * after the text: here the text sits inside a network buffer, and copying
 * each field out to terminate it would be a second place for lengths to go
 * wrong. They accept exactly what glibc's inet_pton accepts (fuzz_proxy
 * checks that), so an address that works in a configuration file works in a
 * header, and the reverse. */
#include "clientaddr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* The PROXY v1 line's bound from the specification, CRLF included. */
#define V1_MAX 107

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* ---- Text forms -------------------------------------------------------- */

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Dotted-quad s[0..n) into out[0..4), as glibc's inet_pton4: four decimal
 * parts 0..255, none with a leading zero (no octal guessing). */
static int parse_ipv4(const char *s, size_t n, uint8_t out[4])
{
	uint8_t tmp[4] = {0};
	unsigned v = 0, parts = 0;
	int in_part = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= '0' && c <= '9') {
			if (in_part && v == 0)
				return -1;
			v = v * 10 + (unsigned)(c - '0');
			if (v > 255)
				return -1;
			if (!in_part) {
				parts++;
				in_part = 1;
			}
		} else if (c == '.' && in_part) {
			if (parts == 4) /* so parts never passes 4 */
				return -1;
			tmp[parts - 1] = (uint8_t)v;
			v = 0;
			in_part = 0;
		} else {
			return -1;
		}
	}
	if (parts < 4 || !in_part)
		return -1;
	tmp[3] = (uint8_t)v;
	memcpy(out, tmp, 4);
	return 0;
}

/* IPv6 text s[0..n) into out[0..16), as glibc's inet_pton6: groups of one
 * to four hex digits, at most one "::", an optional dotted-quad tail. */
static int parse_ipv6(const char *s, size_t n, uint8_t out[16])
{
	uint8_t tmp[16] = {0};
	size_t i = 0, tp = 0, gap = 0, tok = 0, digits = 0;
	unsigned v = 0;
	int have_gap = 0;

	if (n == 0)
		return -1;
	/* A leading colon must be half of a leading "::". */
	if (s[0] == ':') {
		if (n < 2 || s[1] != ':')
			return -1;
		i = 1;
	}
	tok = i;
	while (i < n) {
		unsigned char c = (unsigned char)s[i++];
		int d = hexval(c);

		if (d >= 0) {
			if (digits == 4)
				return -1;
			v = v << 4 | (unsigned)d;
			digits++;
			continue;
		}
		if (c == ':') {
			tok = i;
			if (digits == 0) {
				if (have_gap)
					return -1;
				have_gap = 1;
				gap = tp;
				continue;
			}
			if (i == n || tp + 2 > 16) /* a trailing single colon; too many groups */
				return -1;
			tmp[tp++] = (uint8_t)(v >> 8);
			tmp[tp++] = (uint8_t)v;
			digits = 0;
			v = 0;
			continue;
		}
		/* The dotted-quad tail runs from the current group to the end. */
		if (c == '.' && tp + 4 <= 16 && parse_ipv4(s + tok, n - tok, tmp + tp) == 0) {
			tp += 4;
			digits = 0;
			break;
		}
		return -1;
	}
	if (digits > 0) {
		if (tp + 2 > 16)
			return -1;
		tmp[tp++] = (uint8_t)(v >> 8);
		tmp[tp++] = (uint8_t)v;
	}
	if (have_gap) {
		size_t tail = tp - gap;

		if (tp == 16) /* "::" must stand for at least one group */
			return -1;
		memmove(tmp + 16 - tail, tmp + gap, tail);
		memset(tmp + gap, 0, 16 - tail - gap);
		tp = 16;
	}
	if (tp != 16)
		return -1;
	memcpy(out, tmp, 16);
	return 0;
}

/* A port: 0..65535 in decimal, no leading zeros. */
static int parse_port(const char *s, size_t n, uint16_t *out)
{
	unsigned v = 0;
	size_t i;

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

static void set_v4(addr_t *a, const uint8_t v4[4])
{
	memset(a->b, 0, 10);
	a->b[10] = 0xff;
	a->b[11] = 0xff;
	memcpy(a->b + 12, v4, 4);
}

/* Multicast (ff00::/8) is never a source; refusing it as a client keeps
 * IPv6 keys out of ADDR_KEY_V4's space. */
static int is_multicast6(const addr_t *a)
{
	return a->b[0] == 0xff;
}

/* Either family; *v4 says which the text was, since an IPv4 list entry's
 * prefix counts 32 bits and an IPv6 one's 128. */
static int parse_addr(const char *s, size_t n, addr_t *out, int *v4)
{
	uint8_t b[16];

	if (parse_ipv4(s, n, b) == 0) {
		set_v4(out, b);
		*v4 = 1;
		return 0;
	}
	if (parse_ipv6(s, n, b) == 0) {
		memcpy(out->b, b, 16);
		*v4 = 0;
		return 0;
	}
	return -1;
}

static void trim(const char **s, size_t *n)
{
	while (*n && (**s == ' ' || **s == '\t')) {
		(*s)++;
		(*n)--;
	}
	while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
		(*n)--;
}

/* ---- Addresses ---------------------------------------------------------- */

int addr_is_v4(const addr_t *a)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	return memcmp(a->b, mapped, 12) == 0;
}

int addr_parse(const char *s, size_t n, addr_t *out)
{
	int v4;

	return parse_addr(s, n, out, &v4);
}

int addr_format(const addr_t *a, char *out, size_t cap)
{
	int n;

	if (cap == 0)
		return -1;
	if (addr_is_v4(a)) {
		n = snprintf(out, cap, "%u.%u.%u.%u", a->b[12], a->b[13], a->b[14], a->b[15]);
		if (n < 0 || (size_t)n >= cap) {
			out[0] = 0;
			return -1;
		}
		return n;
	}
	if (!inet_ntop(AF_INET6, a->b, out, (socklen_t)(cap > ADDR_STRLEN ? ADDR_STRLEN : cap))) {
		out[0] = 0;
		return -1;
	}
	return (int)strlen(out);
}

int addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, addr_t *out)
{
	/* Copied out rather than cast: the caller's storage may be a plain
	 * struct sockaddr of the wrong size and alignment for the cast. */
	if (!sa)
		return -1;
	if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
		struct sockaddr_in in;

		memcpy(&in, sa, sizeof in);
		set_v4(out, (const uint8_t *)&in.sin_addr.s_addr);
		return 0;
	}
	if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
		struct sockaddr_in6 in6;

		memcpy(&in6, sa, sizeof in6);
		memcpy(out->b, in6.sin6_addr.s6_addr, 16);
		return 0;
	}
	return -1;
}

/* ---- Address keys ------------------------------------------------------- */

addr_key_t addr_key(const addr_t *a)
{
	uint64_t k = 0;
	int i;

	if (addr_is_v4(a))
		return ADDR_KEY_V4 | (uint64_t)a->b[12] << 24 | (uint64_t)a->b[13] << 16 |
		       (uint64_t)a->b[14] << 8 | a->b[15];
	for (i = 0; i < 8; i++)
		k = k << 8 | a->b[i];
	return k;
}

addr_key_t addr_key_from_in(const struct in_addr *in)
{
	return ADDR_KEY_V4 | (uint64_t)ntohl(in->s_addr);
}

addr_key_t addr_key_from_in6(const struct in6_addr *in6)
{
	addr_t a;

	memcpy(a.b, in6->s6_addr, 16);
	return addr_key(&a);
}

int addr_key_from_sockaddr(const struct sockaddr *sa, socklen_t len, addr_key_t *key)
{
	addr_t a;

	if (addr_from_sockaddr(sa, len, &a) < 0)
		return -1;
	*key = addr_key(&a);
	return 0;
}

int addr_key_format(addr_key_t k, char *out, size_t cap)
{
	char net[ADDR_STRLEN];
	addr_t a;
	int n, i;

	if (cap == 0)
		return -1;
	if ((k >> 32) == 0xFFFFFFFFu) {
		n = snprintf(out, cap, "%u.%u.%u.%u", (unsigned)(k >> 24) & 0xff,
		             (unsigned)(k >> 16) & 0xff, (unsigned)(k >> 8) & 0xff, (unsigned)k & 0xff);
	} else {
		memset(&a, 0, sizeof a);
		for (i = 0; i < 8; i++)
			a.b[i] = (uint8_t)(k >> (56 - 8 * i));
		/* The low 64 bits are zero, so inet_ntop never takes this for
		 * a mapped or compatible IPv4 address. */
		if (!inet_ntop(AF_INET6, a.b, net, sizeof net)) {
			out[0] = 0;
			return -1;
		}
		n = snprintf(out, cap, "%s/64", net);
	}
	if (n < 0 || (size_t)n >= cap) {
		out[0] = 0;
		return -1;
	}
	return n;
}

/* ---- Address lists ------------------------------------------------------ */

static int in_range(const addr_range_t *r, const addr_t *a)
{
	unsigned whole = r->prefix / 8u, rest = r->prefix % 8u;

	if (memcmp(r->base.b, a->b, whole) != 0)
		return 0;
	return rest == 0 || ((r->base.b[whole] ^ a->b[whole]) & (0xffu << (8 - rest)) & 0xffu) == 0;
}

/* Fills err with "address list entry N "text": why"; the entry is cut
 * short and anything unprintable shown as '?', since it may come from
 * anywhere and the message goes to a log. */
static void list_error(char *err, size_t errcap, size_t index, const char *s, size_t n,
                       const char *why)
{
	char shown[65];
	size_t i, m = n < sizeof shown - 1 ? n : sizeof shown - 1;

	if (!err || errcap == 0)
		return;
	for (i = 0; i < m; i++)
		shown[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	shown[m] = 0;
	snprintf(err, errcap, "address list entry %zu \"%s%s\": %s", index, shown,
	         m < n ? "..." : "", why);
}

/* One list entry, e[0..n) with no blanks around it, into *r. Returns 0, or
 * -1 with why[0..whycap) saying what is wrong. */
static int parse_range(const char *e, size_t n, addr_range_t *r, char *why, size_t whycap)
{
	const char *slash = memchr(e, '/', n);
	char text[ADDR_STRLEN];
	addr_t net;
	unsigned b, v = 128;
	int v4;

	memset(r, 0, sizeof *r);
	if (parse_addr(e, slash ? (size_t)(slash - e) : n, &r->base, &v4) < 0) {
		snprintf(why, whycap, "not an IPv4 or IPv6 address");
		return -1;
	}
	if (!slash) {
		r->prefix = 128;
		return 0;
	}
	{
		const char *p = slash + 1;
		size_t pn = n - (size_t)(p - e), k;
		unsigned max = v4 ? 32 : 128;

		v = 0;
		for (k = 0; k < pn && p[k] >= '0' && p[k] <= '9'; k++)
			v = v * 10 + (unsigned)(p[k] - '0');
		if (pn == 0 || pn > 3 || k < pn || (pn > 1 && p[0] == '0') || v > max) {
			snprintf(why, whycap, "prefix is not 0..%u", max);
			return -1;
		}
	}
	r->prefix = (uint8_t)(v4 ? v + 96 : v);
	net = r->base;
	for (b = r->prefix; b < 128; b++)
		net.b[b / 8] &= (uint8_t)~(0x80u >> (b % 8));
	if (memcmp(net.b, r->base.b, 16) != 0) {
		addr_format(&net, text, sizeof text);
		snprintf(why, whycap, "bits set past the prefix (the network is %s/%u)", text, v);
		return -1;
	}
	return 0;
}

int addr_list_parse(const char *s, size_t n, addr_list_t *out, char *err, size_t errcap)
{
	size_t i = 0, index = 0, tn = n;
	const char *t = s;

	out->n = 0;
	if (err && errcap)
		err[0] = 0;
	trim(&t, &tn);
	if (tn == 0)
		return 0;
	for (;;) {
		const char *e = s + i;
		size_t end = i, en;
		char why[96];

		while (end < n && s[end] != ',')
			end++;
		en = end - i;
		index++;
		trim(&e, &en);
		if (en == 0) {
			list_error(err, errcap, index, e, en, "empty entry");
			break;
		}
		if (out->n == ADDR_LIST_MAX) {
			snprintf(why, sizeof why, "more than %d entries", ADDR_LIST_MAX);
			list_error(err, errcap, index, e, en, why);
			break;
		}
		if (parse_range(e, en, &out->r[out->n], why, sizeof why) < 0) {
			list_error(err, errcap, index, e, en, why);
			break;
		}
		out->n++;
		if (end == n)
			return 0;
		i = end + 1;
	}
	out->n = 0;
	return -1;
}

int addr_list_match(const addr_list_t *l, const addr_t *a)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (in_range(&l->r[i], a))
			return 1;
	return 0;
}

/* ---- PROXY protocol ----------------------------------------------------- */

/* The next field of a v1 line from *p: up to a space or e, never empty;
 * fields are separated by exactly one space and the last ends at e. */
static int v1_field(const uint8_t **p, const uint8_t *e, int last, const char **s, size_t *n)
{
	const uint8_t *q = *p;

	while (q < e && *q != ' ')
		q++;
	if (q == *p || (last ? q != e : q == e))
		return -1;
	*s = (const char *)*p;
	*n = (size_t)(q - *p);
	*p = last ? q : q + 1;
	return 0;
}

static int v1_addr(const char *s, size_t n, int v6, addr_t *a)
{
	uint8_t b[16];

	if (v6) {
		if (parse_ipv6(s, n, b) < 0)
			return -1;
		memcpy(a->b, b, 16);
		return 0;
	}
	if (parse_ipv4(s, n, b) < 0)
		return -1;
	set_v4(a, b);
	return 0;
}

/* buf starts with "PROXY" and len >= 5. */
static int parse_v1(const uint8_t *buf, size_t len, proxy_result_t *out)
{
	size_t lim = len < V1_MAX - 1 ? len : V1_MAX - 1, i, n;
	const uint8_t *p, *e;
	const char *s;
	proxy_result_t r;
	int v6;

	/* The CR may be no later than V1_MAX - 2, for its LF to fit. */
	for (i = 5; i < lim; i++) {
		if (buf[i] == '\n')
			return PROXY_MALFORMED;
		if (buf[i] == '\r')
			break;
	}
	if (i == lim)
		return len >= V1_MAX - 1 ? PROXY_MALFORMED : PROXY_INCOMPLETE;
	if (i + 1 == len)
		return PROXY_INCOMPLETE;
	if (buf[i + 1] != '\n')
		return PROXY_MALFORMED;
	if (i < 6 || buf[5] != ' ')
		return PROXY_MALFORMED;
	p = buf + 6;
	e = buf + i;
	memset(&r, 0, sizeof r);
	r.version = 1;
	/* UNKNOWN: whatever follows it on the line is to be ignored. */
	if (e - p >= 7 && memcmp(p, "UNKNOWN", 7) == 0 && (e - p == 7 || p[7] == ' ')) {
		r.local = 1;
		*out = r;
		return (int)(i + 2);
	}
	if (e - p < 5 || memcmp(p, "TCP", 3) != 0 || (p[3] != '4' && p[3] != '6') || p[4] != ' ')
		return PROXY_MALFORMED;
	v6 = p[3] == '6';
	p += 5;
	if (v1_field(&p, e, 0, &s, &n) < 0 || v1_addr(s, n, v6, &r.src) < 0 ||
	    v1_field(&p, e, 0, &s, &n) < 0 || v1_addr(s, n, v6, &r.dst) < 0 ||
	    v1_field(&p, e, 0, &s, &n) < 0 || parse_port(s, n, &r.src_port) < 0 ||
	    v1_field(&p, e, 1, &s, &n) < 0 || parse_port(s, n, &r.dst_port) < 0)
		return PROXY_MALFORMED;
	if (is_multicast6(&r.src))
		return PROXY_MALFORMED;
	*out = r;
	return (int)(i + 2);
}

/* buf starts with the 12-byte signature. Each byte is judged as soon as it
 * is present, so a stream that will never be valid is refused early. */
static int parse_v2(const uint8_t *buf, size_t len, proxy_result_t *out)
{
	unsigned cmd, fam, blen, alen;
	size_t total, off;
	proxy_result_t r;
	const uint8_t *p;

	if (len < 13)
		return PROXY_INCOMPLETE;
	cmd = buf[12] & 0x0f;
	if ((buf[12] >> 4) != 2 || cmd > 1)
		return PROXY_MALFORMED;
	if (len < 14)
		return PROXY_INCOMPLETE;
	fam = buf[13];
	/* LOCAL ignores the family; PROXY must name a defined one. */
	if (cmd == 1 && ((fam >> 4) > 3 || (fam & 0x0f) > 2))
		return PROXY_MALFORMED;
	if (len < 16)
		return PROXY_INCOMPLETE;
	blen = (unsigned)buf[14] << 8 | buf[15];
	total = 16 + (size_t)blen;
	if (total > PROXY_MAX_HEADER)
		return PROXY_MALFORMED;
	alen = cmd == 0 ? 0 : fam == 0x11 ? 12 : fam == 0x21 ? 36 : 0;
	if (blen < alen)
		return PROXY_MALFORMED;
	if (len < total)
		return PROXY_INCOMPLETE;
	memset(&r, 0, sizeof r);
	r.version = 2;
	if (alen == 0) {
		r.local = 1;
		*out = r;
		return (int)total;
	}
	p = buf + 16;
	if (fam == 0x11) {
		set_v4(&r.src, p);
		set_v4(&r.dst, p + 4);
	} else {
		memcpy(r.src.b, p, 16);
		memcpy(r.dst.b, p + 16, 16);
	}
	r.src_port = (uint16_t)(p[alen - 4] << 8 | p[alen - 3]);
	r.dst_port = (uint16_t)(p[alen - 2] << 8 | p[alen - 1]);
	if (is_multicast6(&r.src))
		return PROXY_MALFORMED;
	/* TLVs must tile the rest exactly: one that claims more than the
	 * header holds means the sender and we disagree on where it ends. */
	for (off = 16 + alen; off < total;) {
		size_t tl;

		if (total - off < 3)
			return PROXY_MALFORMED;
		tl = (size_t)buf[off + 1] << 8 | buf[off + 2];
		if (tl > total - off - 3)
			return PROXY_MALFORMED;
		off += 3 + tl;
	}
	*out = r;
	return (int)total;
}

int proxy_parse(const uint8_t *buf, size_t len, proxy_result_t *out)
{
	size_t m;

	if (len == 0)
		return PROXY_INCOMPLETE;
	if (buf[0] == 'P') {
		m = len < 5 ? len : 5;
		if (memcmp(buf, "PROXY", m) != 0)
			return PROXY_NOT_PROXY;
		return len < 5 ? PROXY_INCOMPLETE : parse_v1(buf, len, out);
	}
	if (buf[0] == v2_sig[0]) {
		m = len < sizeof v2_sig ? len : sizeof v2_sig;
		if (memcmp(buf, v2_sig, m) != 0)
			return PROXY_NOT_PROXY;
		return len < sizeof v2_sig ? PROXY_INCOMPLETE : parse_v2(buf, len, out);
	}
	return PROXY_NOT_PROXY;
}

/* ---- X-Forwarded-For ---------------------------------------------------- */

/* One hop: an address, "a.b.c.d:port", "[v6]" or "[v6]:port", with spaces
 * or tabs around it. The port forms are unambiguous - IPv4 has no colon,
 * and bracketed IPv6 ends at its bracket - so accepting them guesses
 * nothing; the port itself is checked and dropped. */
static int xff_entry(const char *s, size_t n, addr_t *a)
{
	const char *colon;
	uint8_t b[16];
	uint16_t port;
	int v4;

	trim(&s, &n);
	if (n == 0)
		return -1;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', n);
		size_t rest;

		if (!close || parse_ipv6(s + 1, (size_t)(close - s - 1), b) < 0)
			return -1;
		rest = n - (size_t)(close + 1 - s);
		if (rest && (close[1] != ':' || parse_port(close + 2, rest - 1, &port) < 0))
			return -1;
		memcpy(a->b, b, 16);
	} else if (parse_addr(s, n, a, &v4) < 0) {
		colon = memchr(s, ':', n);
		if (!colon || parse_ipv4(s, (size_t)(colon - s), b) < 0 ||
		    parse_port(colon + 1, n - (size_t)(colon + 1 - s), &port) < 0)
			return -1;
		set_v4(a, b);
	}
	return is_multicast6(a) ? -1 : 0;
}

int xff_client(const http_request_t *req, const addr_list_t *trusted, const addr_t *peer,
               addr_t *client)
{
	addr_t leftmost = *peer, a;
	size_t h;

	*client = *peer;
	if (!addr_list_match(trusted, peer))
		return 0;
	for (h = req->nheaders; h-- > 0;) {
		const http_header_t *hd = &req->headers[h];
		size_t end, start;

		if (hd->name_len != 15 || strncasecmp(hd->name, "x-forwarded-for", 15) != 0)
			continue;
		/* Entries from the right: [start, end) between commas. */
		for (end = hd->value_len;;) {
			for (start = end; start > 0 && hd->value[start - 1] != ','; start--)
				;
			if (xff_entry(hd->value + start, end - start, &a) < 0)
				return XFF_MALFORMED;
			if (!addr_list_match(trusted, &a)) {
				*client = a;
				return 0;
			}
			leftmost = a;
			if (start == 0)
				break;
			end = start - 1;
		}
	}
	*client = leftmost;
	return 0;
}
