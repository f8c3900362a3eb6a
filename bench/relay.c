/* relay.c - the physical baseline: the least a server can do with the same
 * sockets. One epoll loop accepts connections, pairs them in order of
 * arrival (1st with 2nd, 3rd with 4th...) and forwards bytes between the
 * two of a pair, with no protocol, no parsing and no storage. Parley's
 * figures are reported as ratios to this relay's, measured in the same
 * run by the same load generator.
 *
 *   bench-relay [--listen HOST:PORT]   (port 0: any; prints the port)
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
	struct conn *peer;
} conn_t;

static conn_t *conns[MAX_FDS];
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void drop(int ep, conn_t *c)
{
	conn_t *other = c->peer;

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
	int lfd, ep, one = 1, i;
	conn_t *waiting = NULL;
	char buf[65536];

	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (argc == 3 && !strcmp(argv[1], "--listen")) {
		char host[64], *colon = strrchr(argv[2], ':');
		if (!colon || colon - argv[2] >= (long)sizeof host) {
			fprintf(stderr, "bench-relay: --listen wants HOST:PORT\n");
			return 2;
		}
		snprintf(host, sizeof host, "%.*s", (int)(colon - argv[2]), argv[2]);
		if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
			fprintf(stderr, "bench-relay: --listen wants an IPv4 HOST:PORT\n");
			return 2;
		}
		addr.sin_port = htons((uint16_t)atoi(colon + 1));
	} else if (argc != 1) {
		fprintf(stderr, "usage: bench-relay [--listen HOST:PORT]\n");
		return 2;
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
					conn_t *c = fdc < MAX_FDS ? calloc(1, sizeof *c) : NULL;
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
					if (!waiting) {
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
				ssize_t r, w = 0;
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
				/* A baseline, not a product: a peer that cannot take the
				 * bytes now is written to until it can. */
				while (c->peer && w < r) {
					ssize_t k = write(c->peer->fd, buf + w, (size_t)(r - w));
					if (k > 0)
						w += k;
					else if (k < 0 && errno != EAGAIN && errno != EINTR)
						break;
				}
			}
		}
	}
	return 0;
}
