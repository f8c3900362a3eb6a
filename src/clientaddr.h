/* clientaddr.h - who a client is, as seen through the proxies we trust.
 *
 * Four parts, all stateless and allocation-free, all safe to call from any
 * thread (they touch only their arguments):
 *
 *  - addr_t, a whole IPv4 or IPv6 address, and addr_key_t, the 64-bit value
 *    that names a client for budgets and logs;
 *  - addr_list_t, a fixed list of CIDR ranges (the trusted proxies), parsed
 *    once from configuration text and matched against addresses;
 *  - proxy_parse, the PROXY protocol (versions 1 and 2) header a trusted load
 *    balancer puts before a connection's first byte;
 *  - xff_client, the client of an HTTP request that came through trusted
 *    proxies, from its X-Forwarded-For headers.
 *
 * Parsers take pointer and length (no NUL needed, none read past the end) and
 * never allocate; like http.h they keep no state, so the caller re-parses from
 * the start on each read. */
#ifndef PARLEY_CLIENTADDR_H
#define PARLEY_CLIENTADDR_H

#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "http.h"

/* ---- Addresses ------------------------------------------------------- */

/* A whole address, as 16 bytes in network order. IPv4 is held in its
 * IPv4-mapped form ::ffff:a.b.c.d, so an IPv4 peer and the same peer seen
 * through a dual-stack IPv6 socket are one address, and one comparison of
 * bytes serves both families. The cost: nothing records whether a mapped
 * address arrived as IPv4 or IPv6, and nothing here needs to know. */
typedef struct addr {
	uint8_t b[16];
} addr_t;

/* Longest text addr_format writes, with its NUL (as INET6_ADDRSTRLEN). */
#define ADDR_STRLEN 46

/* True when a is an IPv4 address (::ffff:0:0/96). */
int addr_is_v4(const addr_t *a);

/* Parses one address in text, s[0..n) exactly: dotted-quad IPv4 (four
 * decimal parts 0..255 without leading zeros) or IPv6 in any RFC 4291 text
 * form, an embedded IPv4 tail included; it accepts what glibc's inet_pton
 * accepts. No brackets, prefix, port, zone or whitespace. Returns 0, or -1
 * when s is not an address. */
int addr_parse(const char *s, size_t n, addr_t *out);

/* Writes a as text ("203.0.113.5", "2001:db8::1", as inet_ntop would) and a
 * NUL into out[0..cap). Returns the length, or -1 when cap is too small. */
int addr_format(const addr_t *a, char *out, size_t cap);

/* The address of an AF_INET or AF_INET6 sockaddr of len bytes (as accept
 * and getpeername give). Returns 0, or -1 for any other family or a short
 * len. */
int addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, addr_t *out);

/* ---- Address keys ---------------------------------------------------- */

/* One 64-bit value naming a client for limits and logs:
 *  - IPv4 a.b.c.d (and its mapped form ::ffff:a.b.c.d) is
 *    ADDR_KEY_V4 | the address in host byte order;
 *  - IPv6 is its upper 64 bits, its /64: one subscriber's network, which is
 *    how a budget should see it, since one host can take any address in it.
 * ADDR_KEY_V4's top 32 bits, read as IPv6, are ffff:ffff::/32, inside the
 * multicast range ff00::/8, which is never a source address; so the two
 * families never share a key. (The parsers of proxy headers below refuse a
 * multicast client address to keep that true for what they report.) */
typedef uint64_t addr_key_t;

#define ADDR_KEY_V4 UINT64_C(0xFFFFFFFF00000000)

/* Longest text addr_key_format writes, with its NUL
 * ("ffff:ffff:ffff:ffff::/64" is 24). */
#define ADDR_KEY_STRLEN 32

addr_key_t addr_key(const addr_t *a);
addr_key_t addr_key_from_in(const struct in_addr *in);
addr_key_t addr_key_from_in6(const struct in6_addr *in6);

/* The key of an AF_INET or AF_INET6 sockaddr. Returns 0 with *key set, or
 * -1 (and *key untouched) for any other family or a short len. */
int addr_key_from_sockaddr(const struct sockaddr *sa, socklen_t len, addr_key_t *key);

/* Writes k as text and a NUL into out[0..cap): "203.0.113.5" for an IPv4
 * key, the network in inet_ntop's compressed form for an IPv6 key
 * ("2001:db8:1:2::/64"). Returns the length, or -1 when cap is too small. */
int addr_key_format(addr_key_t k, char *out, size_t cap);

/* ---- Address lists (CIDR) -------------------------------------------- */

#define ADDR_LIST_MAX 64

/* One range: the addresses whose first prefix bits (0..128, counted in the
 * 16-byte form, so an IPv4 /8 is held as /104) equal base's. Bits of base
 * past prefix are zero. */
typedef struct addr_range {
	addr_t base;
	uint8_t prefix;
} addr_range_t;

/* A fixed list of at most ADDR_LIST_MAX ranges; a plain value, copied and
 * freed with its holder. Read-only once parsed, so threads may share it. */
typedef struct addr_list {
	size_t n;
	addr_range_t r[ADDR_LIST_MAX];
} addr_list_t;

/* Parses s[0..n), a comma-separated list of entries, each an address or
 * address/prefix, IPv4 (/0../32) or IPv6 (/0../128), with optional spaces
 * or tabs around it: "127.0.0.1, 10.0.0.0/8, ::1, fd00::/8". An address
 * alone is a /32 or /128. An IPv4 entry also matches IPv4-mapped IPv6 peers
 * (they are one address here); "::/0" matches every address, IPv4 too.
 * Empty or blank text is the empty list, which matches nothing.
 *
 * Refused, with a message naming the entry: an empty entry, text that is not
 * an address, a prefix out of range or with leading zeros, bits set past the
 * prefix ("10.0.0.1/8" is a typo for one address or for 10.0.0.0/8, and
 * guessing which would trust the wrong hosts), and more than ADDR_LIST_MAX
 * entries. Returns 0, or -1 with a NUL-terminated message in err[0..errcap)
 * (err may be NULL) and *out left empty. */
int addr_list_parse(const char *s, size_t n, addr_list_t *out, char *err, size_t errcap);

/* True when a lies in any range of l. */
int addr_list_match(const addr_list_t *l, const addr_t *a);

/* ---- PROXY protocol -------------------------------------------------- */

/* https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
 *
 * A listener configured for the protocol must get a header from every
 * connection, before any other byte, and only from trusted peers: the caller
 * checks the peer against its list first, and drops the connection on any
 * negative answer but PROXY_INCOMPLETE. Guessing whether a header is present
 * would let anyone claim any address. */

#define PROXY_MALFORMED (-1)
#define PROXY_INCOMPLETE (-2)
#define PROXY_NOT_PROXY (-3)  /* does not start with either signature */

/* The longest header accepted. Version 1 is at most 107 bytes by the
 * specification; version 2 is 16 + its length field, and is malformed past
 * this (TLVs from real load balancers take tens of bytes). So
 * PROXY_INCOMPLETE is never the answer for PROXY_MAX_HEADER bytes or more,
 * and a caller never needs to hold more than that to decide. */
#define PROXY_MAX_HEADER 1024

typedef struct proxy_result {
	int version;         /* 1 or 2 */
	/* Set for a v2 LOCAL command (a health check from the proxy itself), a
	 * v1 UNKNOWN line, and a v2 PROXY command for a family or transport we
	 * take no address from (UNSPEC, UNIX, DGRAM: the specification allows
	 * treating those as UNSPEC). The caller then uses the connection's own
	 * peer address, and the fields below are zero. */
	int local;
	addr_t src, dst;     /* the client, and the address it connected to */
	uint16_t src_port, dst_port; /* host byte order */
} proxy_result_t;

/* Parses a PROXY header at buf[0..len), version 1 or 2. Returns the header's
 * length (what to consume; the connection's own bytes follow it), with *out
 * filled; or PROXY_INCOMPLETE when buf is a proper prefix of a header that
 * may still be valid; PROXY_NOT_PROXY when buf cannot begin either
 * signature ("PROXY" or the 12-byte v2 one) - decided as soon as a byte
 * differs, so an unproxied client is refused at once; or PROXY_MALFORMED.
 *
 * Strict: v1 is "PROXY TCP4|TCP6 src dst sport dport\r\n" with single spaces,
 * canonical addresses of the named family (IPv4 without leading zeros),
 * ports 0..65535 without leading zeros, CRLF within 107 bytes, no bare CR or
 * LF; or "PROXY UNKNOWN" with anything up to the CRLF. v2 has version 2, a
 * command LOCAL or PROXY, a defined family and transport, an address block
 * long enough for its family, TLVs after it that exactly fill the length
 * (their contents are not read, nor a CRC32C checked); for LOCAL the
 * family byte and block are skipped unread, as the specification says. A
 * multicast source address is malformed (see addr_key_t). A v2 header is
 * judged byte by byte as it arrives (a bad version byte or length is
 * malformed without waiting for the rest); a v1 line once its CRLF is in,
 * or as soon as the CRLF can no longer come in time. *out is written only
 * on success. */
int proxy_parse(const uint8_t *buf, size_t len, proxy_result_t *out);

/* ---- X-Forwarded-For ------------------------------------------------- */

#define XFF_MALFORMED (-1)

/* The client of req, which arrived from peer. Every X-Forwarded-For header,
 * in order, forms one comma-separated list, and the peer is its last hop;
 * each proxy appends the address it took the request from. Walking from the
 * right, the first address not in trusted is the client: everything to its
 * right was written by our own proxies, everything to its left by the client
 * itself and is ignored, however malformed. If every hop is trusted, the
 * leftmost is the client. So a peer that is not trusted is always its own
 * client, and a request without the header is the peer's.
 *
 * An entry is an address (as addr_parse) with optional spaces or tabs
 * around it, "a.b.c.d:port", "[v6]" or "[v6]:port". The walk meets an
 * entry that is none of these, is empty, or is a multicast address (see
 * addr_key_t) only where a trusted proxy wrote it: a broken proxy. The
 * answer is then XFF_MALFORMED, with *client set to peer (the caller may
 * log it); otherwise 0 with *client set. The RFC 7239 Forwarded header is
 * not read. */
int xff_client(const http_request_t *req, const addr_list_t *trusted, const addr_t *peer,
               addr_t *client);

#endif
