/* pclient.c - the blocking client of pclient.h. */
#include "pclient.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "ws.h"

struct pc_conn {
	int fd;
	uint8_t *buf;      /* received, not yet consumed */
	size_t len, cap;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A connection over connected (or connecting) socket fd, with Nagle
 * off; fd is closed when that fails. */
static pc_conn_t *conn_of(int fd)
{
	int one = 1;
	pc_conn_t *c;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (!(c = calloc(1, sizeof *c))) {
		close(fd);
		return NULL;
	}
	c->fd = fd;
	return c;
}

pc_conn_t *pc_connect(const char *host, int port)
{
	return pc_connect_from(NULL, host, port);
}

pc_conn_t *pc_connect_from(const char *source, const char *host, int port)
{
	struct addrinfo hints = {0}, *res = NULL, *src = NULL;
	char portstr[16];
	int fd;

	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(portstr, sizeof portstr, "%d", port);
	if (getaddrinfo(host, portstr, &hints, &res) != 0)
		return NULL;
	if (source && getaddrinfo(source, NULL, &hints, &src) != 0) {
		freeaddrinfo(res);
		return NULL;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || (src && bind(fd, src->ai_addr, src->ai_addrlen) < 0) ||
	    connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		if (src)
			freeaddrinfo(src);
		return NULL;
	}
	freeaddrinfo(res);
	if (src)
		freeaddrinfo(src);
	return conn_of(fd);
}

pc_conn_t *pc_connect_start(const char *source, const char *host, int port)
{
	struct sockaddr_in sa = {0}, src = {0};
	int fd;

	/* Numeric IPv4 only: a resolver call per attempt would cost more
	 * than the connect itself at thousands of reconnects. */
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	src.sin_family = AF_INET;
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
	    (source && inet_pton(AF_INET, source, &src.sin_addr) != 1))
		return NULL;
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
		return NULL;
	if ((source && bind(fd, (struct sockaddr *)&src, sizeof src) < 0) ||
	    (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)) {
		int err = errno;
		close(fd);
		errno = err;
		return NULL;
	}
	return conn_of(fd);
}

int pc_connect_result(pc_conn_t *c)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return PC_ERROR;
	if (err == ECONNREFUSED || err == ECONNRESET)
		return PC_CLOSED;
	return err ? PC_ERROR : 0;
}

void pc_close(pc_conn_t *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c->buf);
	free(c);
}

int pc_fd(const pc_conn_t *c)
{
	return c->fd;
}

int pc_send_raw(pc_conn_t *c, const void *data, size_t len)
{
	const uint8_t *p = data;

	while (len > 0) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				/* A pc_connect_start socket whose buffer is full. */
				struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
				poll(&pfd, 1, 1000);
				continue;
			}
			return errno == EPIPE || errno == ECONNRESET ? PC_CLOSED : PC_ERROR;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads more bytes into the buffer, waiting until deadline. */
static int fill(pc_conn_t *c, int64_t deadline)
{
	struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
	int64_t left = deadline - now_ms();
	ssize_t n;

	if (left < 0)
		left = 0;
	n = poll(&pfd, 1, (int)left);
	if (n == 0)
		return PC_TIMEOUT;
	if (n < 0)
		return errno == EINTR ? 0 : PC_ERROR;
	/* Start small: a load generator holds thousands of these. */
	if (c->cap - c->len < 4096) {
		size_t cap = c->cap ? c->cap * 2 : 8192;
		uint8_t *b = realloc(c->buf, cap);
		if (!b)
			return PC_ERROR;
		c->buf = b;
		c->cap = cap;
	}
	n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
	if (n == 0)
		return PC_CLOSED;
	if (n < 0)
		return errno == ECONNRESET ? PC_CLOSED :
		       (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK ? 0 : PC_ERROR);
	c->len += (size_t)n;
	return 0;
}

static void consume(pc_conn_t *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

void pc_response_free(pc_response_t *res)
{
	free(res->head);
	free(res->body);
	memset(res, 0, sizeof *res);
}

int pc_response_header(const pc_response_t *res, const char *name, char *out, size_t cap)
{
	size_t nlen = strlen(name);
	const char *p = res->head ? strstr(res->head, "\r\n") : NULL;

	while (p && p[2]) {
		const char *line = p + 2, *eol = strstr(line, "\r\n");
		if (!eol)
			break;
		if ((size_t)(eol - line) > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
			const char *v = line + nlen + 1;
			size_t n;
			while (*v == ' ')
				v++;
			n = (size_t)(eol - v);
			if (n >= cap)
				n = cap - 1;
			memcpy(out, v, n);
			out[n] = 0;
			return (int)n;
		}
		p = eol;
	}
	return -1;
}

int pc_read_response(pc_conn_t *c, pc_response_t *res, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	size_t head_len, clen = 0;
	char *end, v[32];
	int r;

	memset(res, 0, sizeof *res);
	for (;;) {
		if (c->len >= 4 && (end = memmem(c->buf, c->len, "\r\n\r\n", 4)) != NULL)
			break;
		if ((r = fill(c, deadline)) < 0)
			return r;
	}
	head_len = (size_t)(end - (char *)c->buf) + 4;
	if (!(res->head = malloc(head_len + 1)))
		return PC_ERROR;
	memcpy(res->head, c->buf, head_len);
	res->head[head_len] = 0;
	if (sscanf(res->head, "HTTP/1.%*d %d", &res->status) != 1) {
		pc_response_free(res);
		return PC_ERROR;
	}
	if (pc_response_header(res, "content-length", v, sizeof v) >= 0)
		clen = strtoul(v, NULL, 10);
	while (c->len < head_len + clen)
		if ((r = fill(c, deadline)) < 0) {
			pc_response_free(res);
			return r;
		}
	if (!(res->body = malloc(clen + 1))) {
		pc_response_free(res);
		return PC_ERROR;
	}
	memcpy(res->body, c->buf + head_len, clen);
	res->body[clen] = 0;
	res->body_len = clen;
	consume(c, head_len + clen);
	return 0;
}

int pc_http(pc_conn_t *c, const char *method, const char *path, const char *token,
            const char *body, pc_response_t *res, int timeout_ms)
{
	size_t blen = body ? strlen(body) : 0, n;
	char *req;
	int r;

	n = strlen(method) + strlen(path) + (token ? strlen(token) : 0) + blen + 256;
	if (!(req = malloc(n)))
		return PC_ERROR;
	n = (size_t)snprintf(req, n, "%s %s HTTP/1.1\r\nHost: parley\r\n%s%s%s"
	                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	                     method, path, token ? "Authorization: Bearer " : "", token ? token : "",
	                     token ? "\r\n" : "", blen, body ? body : "");
	r = pc_send_raw(c, req, n);
	free(req);
	if (r < 0)
		return r;
	return pc_read_response(c, res, timeout_ms);
}

int pc_ws_open_send(pc_conn_t *c, const char *path, const char *token)
{
	char req[2048];
	int n;

	n = snprintf(req, sizeof req,
	             "GET %s HTTP/1.1\r\nHost: parley\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	             "%s%s%s\r\n",
	             path, token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof req)
		return PC_ERROR;
	return pc_send_raw(c, req, (size_t)n);
}

int pc_ws_open_finish(pc_conn_t *c, pc_response_t *res, int timeout_ms)
{
	pc_response_t local;
	int r;

	if (!res)
		res = &local;
	if ((r = pc_read_response(c, res, timeout_ms)) < 0)
		return r;
	if (res->status != 101) {
		if (res == &local)
			pc_response_free(res);
		return PC_ERROR;
	}
	/* The key above is RFC 6455's example; its accept value is known. */
	{
		char acc[64];
		int ok = pc_response_header(res, "sec-websocket-accept", acc, sizeof acc) > 0 &&
		         strcmp(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0;
		pc_response_free(res);
		return ok ? 0 : PC_ERROR;
	}
}

int pc_ws_open(pc_conn_t *c, const char *path, const char *token, pc_response_t *res,
               int timeout_ms)
{
	int r;

	if ((r = pc_ws_open_send(c, path, token)) < 0)
		return r;
	return pc_ws_open_finish(c, res, timeout_ms);
}

int pc_ws_send_frame(pc_conn_t *c, int fin, int opcode, const void *data, size_t len, int mask,
                     int rsv)
{
	uint8_t key[4] = {0}, *frame;
	size_t h, i;
	int r;

	if (mask && RAND_bytes(key, 4) != 1)
		return PC_ERROR;
	if (!(frame = malloc(14 + len)))
		return PC_ERROR;
	h = ws_encode_header(frame, fin, opcode, len, mask ? key : NULL);
	frame[0] |= (uint8_t)((rsv & 7) << 4);
	for (i = 0; i < len; i++)
		frame[h + i] = ((const uint8_t *)data)[i] ^ key[i & 3];
	r = pc_send_raw(c, frame, h + len);
	free(frame);
	return r;
}

int pc_ws_send_text(pc_conn_t *c, const char *text)
{
	return pc_ws_send_frame(c, 1, 0x1, text, strlen(text), 1, 0);
}

int pc_ws_recv(pc_conn_t *c, pc_frame_t *f, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	uint64_t len;
	size_t h;
	int r;

	memset(f, 0, sizeof *f);
	for (;;) {
		if (c->len >= 2) {
			h = 2;
			len = c->buf[1] & 0x7f;
			if (len == 126 && c->len >= 4) {
				len = ((uint64_t)c->buf[2] << 8) | c->buf[3];
				h = 4;
			} else if (len == 127 && c->len >= 10) {
				size_t i;
				len = 0;
				for (i = 0; i < 8; i++)
					len = (len << 8) | c->buf[2 + i];
				h = 10;
			} else if (len >= 126) {
				h = 0; /* length not here yet */
			}
			if (c->buf[1] & 0x80)
				return PC_ERROR; /* servers must not mask */
			if (h && c->len >= h + len)
				break;
		}
		if ((r = fill(c, deadline)) < 0)
			return r;
	}
	f->fin = c->buf[0] >> 7;
	f->opcode = c->buf[0] & 0x0f;
	f->len = (size_t)len;
	if (!(f->data = malloc(f->len + 1)))
		return PC_ERROR;
	memcpy(f->data, c->buf + h, f->len);
	f->data[f->len] = 0;
	consume(c, h + f->len);
	return 0;
}

void pc_frame_free(pc_frame_t *f)
{
	free(f->data);
	memset(f, 0, sizeof *f);
}
