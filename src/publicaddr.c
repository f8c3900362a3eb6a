/* publicaddr.c - the address ranges of publicaddr.h (RFC 6890's special
 * purpose registries, those not globally reachable or not someone's). */
#include "publicaddr.h"

#include <netinet/in.h>
#include <string.h>

int publicaddr_v4(uint32_t a)
{
	static const struct {
		uint32_t net;
		int bits;
	} closed[] = {
		{0x00000000, 8},  /* "this network" */
		{0x0a000000, 8},  /* private */
		{0x64400000, 10}, /* shared (carrier-grade NAT) */
		{0x7f000000, 8},  /* loopback */
		{0xa9fe0000, 16}, /* link-local, cloud metadata services */
		{0xac100000, 12}, /* private */
		{0xc0000000, 24}, /* IETF protocol assignments */
		{0xc0000200, 24}, /* documentation */
		{0xc0a80000, 16}, /* private */
		{0xc6120000, 15}, /* benchmarking */
		{0xc6336400, 24}, /* documentation */
		{0xcb007100, 24}, /* documentation */
		{0xe0000000, 4},  /* multicast */
		{0xf0000000, 4},  /* reserved, broadcast */
	};
	size_t i;

	for (i = 0; i < sizeof closed / sizeof *closed; i++)
		if ((a & (0xffffffffu << (32 - closed[i].bits))) == closed[i].net)
			return 0;
	return 1;
}

int publicaddr_v6(const unsigned char b[16])
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
	static const unsigned char zero[10] = {0};

	if (!memcmp(b, mapped, 12) || !memcmp(b, nat64, 12))
		return publicaddr_v4((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15]);
	if (!memcmp(b, zero, 10))
		return 0;                           /* ::, ::1, the old v4-compatible */
	if ((b[0] & 0xfe) == 0xfc)                  /* fc00::/7 unique local */
		return 0;
	if (b[0] == 0xfe && (b[1] & 0xc0) != 0)     /* fe80::/10 link-local, fec0::/10 site-local */
		return 0;
	if (b[0] == 0xff)                           /* multicast */
		return 0;
	if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) /* documentation */
		return 0;
	if (b[0] == 0x01 && b[1] == 0x00 && !memcmp(b + 2, zero, 6))      /* 100::/64 discard */
		return 0;
	return 1;
}

int publicaddr_sockaddr(const struct sockaddr *sa, socklen_t len)
{
	if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in))
		return publicaddr_v4(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
	if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6))
		return publicaddr_v6(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr);
	return 0;
}
