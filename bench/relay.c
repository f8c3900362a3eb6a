/* relay.c - the physical baseline: the least a server can do with the same
 * sockets. One epoll loop accepts connections, pairs them in order of
 * arrival (1st with 2nd, 3rd with 4th...) and forwards bytes between the
 * two of a pair, with no protocol, no parsing and no storage. Parley's
 * figures are reported as ratios to this relay's, measured in the same
 * run by the same load generator.
 *
 * With --fanout K it is the baseline for a group instead: connections form
 * groups of K in order of arrival, and every WebSocket frame one member
 * sends is written to each of the others. It reads frame headers only so
 * that frames from several senders never interleave mid-frame; it keeps no
 * copy per recipient and no state but a partial frame.
 *
 *   bench-relay [--listen HOST:PORT] [--fanout K]   (port 0: any; prints the port)
 *
 * Loopback only; it exits on SIGTERM or SIGINT. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 65536

/* What any relay keeps per connection: its socket and its pair. */
typedef struct conn {
	int fd;
	int fan;                 /* a fan_conn_t */
	struct conn *peer;
} conn_t;

typedef struct group group_t;

/* In fan-out mode: also its group and the start of a frame not yet whole. */
typedef struct fan_conn {
	conn_t c;
	group_t *group;
	unsigned char *partial;
	size_t npartial;
} fan_conn_t;

struct group {
	int n, cap;
	fan_conn_t *member[];
};

static conn_t *conns[MAX_FDS];
static group_t *filling;        /* the group new connections join */
static volatile sig_atomic_t stop;

/* A baseline, not a product: a peer that cannot take the bytes now is
 * written to until it can. */
static void write_all(int fd, const unsigned char *p, size_t len)
{
	while (len > 0) {
		ssize_t k = write(fd, p, len);
		if (k > 0) {
			p += k;
			len -= (size_t)k;
		} else if (k < 0 && errno != EAGAIN && errno != EINTR) {
			return;
		}
	}
}

/* The length of the whole frames at the start of p (headers are RFC 6455's:
 * 7-, 16- or 64-bit lengths, an optional mask key). */
static size_t whole_frames(const unsigned char *p, size_t len)
{
	size_t at = 0;

	for (;;) {
		size_t hdr = 2, plen;
		if (len - at < 2)
			return at;
		plen = p[at + 1] & 0x7f;
		if (plen == 126)
			hdr = 4;
		else if (plen == 127)
			hdr = 10;
		if (p[at + 1] & 0x80)
			hdr += 4;
		if (len - at < hdr)
			return at;
		if (plen == 126) {
			plen = (size_t)p[at + 2] << 8 | p[at + 3];
		} else if (plen == 127) {
			int i;
			for (plen = 0, i = 2; i < 10; i++)
				plen = plen << 8 | p[at + i];
		}
		if (len - at - hdr < plen)
			return at;
		at += hdr + plen;
	}
}

/* A frame longer than Parley accepts is no load a benchmark sends. */
#define MAX_PARTIAL (1u << 20)

/* Fan-out: the whole frames of what c sent go to every other member.
 * Returns -1 when c holds more than MAX_PARTIAL of one frame (drop it). */
static int fan_out(fan_conn_t *c, const unsigned char *buf, size_t len)
{
	const unsigned char *p = buf;
	size_t n, i;

	if (c->npartial + len > MAX_PARTIAL)
		return -1;
	if (c->npartial) {
		unsigned char *joined = realloc(c->partial, c->npartial + len);
		if (!joined)
			return -1;
		memcpy(joined + c->npartial, buf, len);
		c->partial = joined;
		p = joined;
		len += c->npartial;
	}
	n = whole_frames(p, len);
	for (i = 0; n && c->group && i < (size_t)c->group->n; i++)
		if (c->group->member[i] != c)
			write_all(c->group->member[i]->c.fd, p, n);
	if (n < len) {
		unsigned char *rest = malloc(len - n);
		if (rest)
			memcpy(rest, p + n, len - n);
		free(c->partial);
		c->partial = rest;
		c->npartial = rest ? len - n : 0;
	} else {
		free(c->partial);
		c->partial = NULL;
		c->npartial = 0;
	}
	return 0;
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void drop(int ep, conn_t *c)
{
	conn_t *other = c->peer;

	if (c->fan) {
		fan_conn_t *f = (fan_conn_t *)c;
		group_t *g = f->group;
		int i;
		if (g == filling && g->n == 1) {
			/* Its last member leaves a group not yet full. */
			g->cap = 0;
			filling = NULL;
		}
		for (i = 0; i < g->n; i++)
			if (g->member[i] == f)
				g->member[i] = g->member[--g->n];
		if (g->n == 0 && g->cap == 0)
			free(g); /* full once, now empty */
		free(f->partial);
	}

	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	conns[c->fd] = NULL;
	free(c);
	if (other) {
		epoll_ctl(ep, EPOLL_CTL_DEL, other->fd, NULL);
		close(other->fd);
		conns[other->fd] = NULL;
		free(other);
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr = {0};
	struct epoll_event ev, events[256];
	socklen_t alen = sizeof addr;
	int lfd, ep, one = 1, i, fanout = 0;
	conn_t *waiting = NULL;
	static unsigned char buf[65536];

	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
			char host[64], *colon = strrchr(argv[++i], ':');
			if (!colon || colon - argv[i] >= (long)sizeof host) {
				fprintf(stderr, "bench-relay: --listen wants HOST:PORT\n");
				return 2;
			}
			snprintf(host, sizeof host, "%.*s", (int)(colon - argv[i]), argv[i]);
			if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
				fprintf(stderr, "bench-relay: --listen wants an IPv4 HOST:PORT\n");
				return 2;
			}
			addr.sin_port = htons((uint16_t)atoi(colon + 1));
		} else if (!strcmp(argv[i], "--fanout") && i + 1 < argc) {
			fanout = atoi(argv[++i]);
			if (fanout < 2 || fanout > 65536) {
				fprintf(stderr, "bench-relay: --fanout wants 2 to 65536\n");
				return 2;
			}
		} else {
			fprintf(stderr, "usage: bench-relay [--listen HOST:PORT] [--fanout K]\n");
			return 2;
		}
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
		perror("bench-relay: listen");
		return 1;
	}
	getsockname(lfd, (struct sockaddr *)&addr, &alen);
	ep = epoll_create1(0);
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	printf("relay: listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
	fflush(stdout);
	while (!stop) {
		int n = epoll_wait(ep, events, 256, 500);
		for (i = 0; i < n; i++) {
			int fd = events[i].data.fd;
			if (fd == lfd) {
				int fdc;
				while ((fdc = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					conn_t *c = fdc < MAX_FDS ? calloc(1, fanout ? sizeof(fan_conn_t) : sizeof *c) : NULL;
					if (!c) {
						close(fdc);
						continue;
					}
					c->fd = fdc;
					conns[fdc] = c;
					setsockopt(fdc, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
					ev.events = EPOLLIN;
					ev.data.fd = fdc;
					epoll_ctl(ep, EPOLL_CTL_ADD, fdc, &ev);
					if (fanout) {
						if (!filling && !(filling = calloc(1, sizeof *filling +
						                                    (size_t)fanout * sizeof(conn_t *)))) {
							close(fdc);
							conns[fdc] = NULL;
							free(c);
							continue;
						}
						filling->cap = fanout;
						c->fan = 1;
						((fan_conn_t *)c)->group = filling;
						filling->member[filling->n++] = (fan_conn_t *)c;
						if (filling->n == fanout) {
							filling->cap = 0; /* full: freed when its last member goes */
							filling = NULL;
						}
					} else if (!waiting) {
						waiting = c;
					} else {
						c->peer = waiting;
						waiting->peer = c;
						waiting = NULL;
					}
				}
				continue;
			}
			for (;;) {
				conn_t *c = conns[fd];
				ssize_t r;
				if (!c)
					break;
				r = read(fd, buf, sizeof buf);
				if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
					if (c == waiting)
						waiting = NULL;
					drop(ep, c);
					break;
				}
				if (r < 0)
					break;
				if (c->fan) {
					if (fan_out((fan_conn_t *)c, buf, (size_t)r) < 0) {
						drop(ep, c);
						break;
					}
				} else if (c->peer)
					write_all(c->peer->fd, buf, (size_t)r);
			}
		}
	}
	return 0;
}
