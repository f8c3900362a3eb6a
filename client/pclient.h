/* pclient.h - Parley's client library: HTTP/1.1 requests and a WebSocket
 * client over one blocking TCP connection, with timeouts.
 *
 * It speaks only docs/protocol.md, so what it can do an independent client
 * can do too. The tests drive the server through it; the command-line
 * client and the load generator will grow from it. It deliberately also
 * lets a caller send malformed bytes and frames, for the tests of bad input.
 *
 * It shares the WebSocket codec (src/ws.c) with the server.
 *
 * Functions return 0 on success or a negative value: PC_TIMEOUT when
 * nothing came in time, PC_CLOSED when the peer closed, PC_ERROR else. */
#ifndef PARLEY_PCLIENT_H
#define PARLEY_PCLIENT_H

#include <stddef.h>
#include <stdint.h>

#define PC_ERROR (-1)
#define PC_TIMEOUT (-2)
#define PC_CLOSED (-3)

typedef struct pc_conn pc_conn_t;

typedef struct pc_response {
	int status;
	char *head;      /* status line and headers, NUL-terminated */
	char *body;      /* NUL-terminated */
	size_t body_len;
} pc_response_t;

typedef struct pc_frame {
	int fin;
	int opcode;
	uint8_t *data;   /* NUL-terminated for convenience */
	size_t len;
} pc_frame_t;

/* Connects to host:port. Returns NULL on failure. */
pc_conn_t *pc_connect(const char *host, int port);
/* Connects from the local address source (e.g. "127.0.0.2", so that tests
 * can tell an attacker from a bystander by address); NULL: any. */
pc_conn_t *pc_connect_from(const char *source, const char *host, int port);
/* Starts connecting to host:port (numeric IPv4) from source (numeric
 * IPv4; NULL: any) without waiting: the socket is non-blocking from then
 * on, so a caller driving thousands of them polls pc_fd for POLLOUT and
 * then asks pc_connect_result. The other calls work on it with their
 * timeouts (0: only what has arrived; a PC_TIMEOUT keeps what was read
 * for the next call). NULL on failure, errno saying why (ECONNREFUSED
 * when refused at once). */
pc_conn_t *pc_connect_start(const char *source, const char *host, int port);
/* After POLLOUT on a pc_connect_start connection: 0 when connected,
 * PC_CLOSED when refused, PC_ERROR else. */
int pc_connect_result(pc_conn_t *c);
void pc_close(pc_conn_t *c);
int pc_fd(const pc_conn_t *c);

/* Writes all of data. */
int pc_send_raw(pc_conn_t *c, const void *data, size_t len);

/* Sends one request (token and body may be NULL) and reads the answer. */
int pc_http(pc_conn_t *c, const char *method, const char *path, const char *token,
            const char *body, pc_response_t *res, int timeout_ms);
/* Reads one response (after pc_send_raw of a request). */
int pc_read_response(pc_conn_t *c, pc_response_t *res, int timeout_ms);
void pc_response_free(pc_response_t *res);
/* Value of a response header (case-insensitive) copied into out, or -1. */
int pc_response_header(const pc_response_t *res, const char *name, char *out, size_t cap);

/* Upgrades to a WebSocket at path (which may carry ?token=); token, when
 * not NULL, goes in an Authorization header. Returns 0 on 101; otherwise
 * the refusal is in *res (when res is not NULL) and PC_ERROR is returned. */
int pc_ws_open(pc_conn_t *c, const char *path, const char *token, pc_response_t *res,
               int timeout_ms);

/* The two halves of pc_ws_open, for callers that wait on many sockets
 * themselves: send the upgrade request, later read its answer. */
int pc_ws_open_send(pc_conn_t *c, const char *path, const char *token);
int pc_ws_open_finish(pc_conn_t *c, pc_response_t *res, int timeout_ms);

/* Sends one frame, masked with a random key (mask 0: unmasked, for tests
 * of bad clients). rsv adds reserved bits (also for those tests). */
int pc_ws_send_frame(pc_conn_t *c, int fin, int opcode, const void *data, size_t len, int mask,
                     int rsv);
/* Sends a complete text message. */
int pc_ws_send_text(pc_conn_t *c, const char *text);
/* Receives one frame. */
int pc_ws_recv(pc_conn_t *c, pc_frame_t *f, int timeout_ms);
void pc_frame_free(pc_frame_t *f);

#endif
