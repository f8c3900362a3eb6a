/* publicaddr.h - whether an address is one the public Internet routes to
 * someone else: not this host, not a private or shared network, not
 * link-local, documentation, benchmarking, multicast or reserved. The
 * server itself calls URLs users give it (Web Push endpoints), and must
 * never be made to call into its own network; the check is made where a
 * URL is accepted (its host written as an address) and again where the
 * push path connects (whatever a name resolved to). */
#ifndef PARLEY_PUBLICADDR_H
#define PARLEY_PUBLICADDR_H

#include <stdint.h>
#include <sys/socket.h>

/* An IPv4 address in host order. */
int publicaddr_v4(uint32_t a);
/* An IPv6 address (16 bytes, network order); a v4-mapped or NAT64 one is
 * judged by its IPv4 address. */
int publicaddr_v6(const unsigned char b[16]);
/* An AF_INET or AF_INET6 socket address; any other family is not. */
int publicaddr_sockaddr(const struct sockaddr *sa, socklen_t len);

#endif
