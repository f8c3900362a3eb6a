/* ws.h - WebSocket (RFC 6455) framing: parsing client frames, encoding
 * server frames, and the opening handshake's accept key.
 *
 * Like the HTTP parser, ws_next_frame keeps no state of its own and never
 * allocates: the caller passes the bytes it holds and the little it knows of
 * the message in progress, and gets back a complete, validated, unmasked
 * frame, a request for more bytes, or the close code the peer has earned. */
#ifndef PARLEY_WS_H
#define PARLEY_WS_H

#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

enum {
	WS_OP_CONT = 0x0,
	WS_OP_TEXT = 0x1,
	WS_OP_BINARY = 0x2,
	WS_OP_CLOSE = 0x8,
	WS_OP_PING = 0x9,
	WS_OP_PONG = 0xA,
};

enum {
	WS_CLOSE_NORMAL = 1000,
	WS_CLOSE_GOING_AWAY = 1001,
	WS_CLOSE_PROTOCOL = 1002,
	WS_CLOSE_UNSUPPORTED = 1003,
	WS_CLOSE_NO_STATUS = 1005,
	WS_CLOSE_INVALID_DATA = 1007,
	WS_CLOSE_POLICY = 1008,
	WS_CLOSE_TOO_BIG = 1009,
	WS_CLOSE_INTERNAL = 1011,
	WS_CLOSE_SERVICE_RESTART = 1012,
	WS_CLOSE_TRY_LATER = 1013,
};

#define WS_INCOMPLETE 0

typedef struct ws_frame {
	int fin;
	int opcode;
	uint8_t *payload;      /* into the caller's buffer, already unmasked */
	size_t payload_len;
} ws_frame_t;

/* Looks for one complete client frame at buf[0..len).
 *
 * frag_opcode is the opcode of the fragmented message in progress (TEXT or
 * BINARY), or 0 when none; frag_len is how many payload bytes it holds so
 * far; max_message caps a whole message's payload.
 *
 * Returns the frame's total size (> 0) and fills *f, unmasking the payload
 * in place; WS_INCOMPLETE (0) when more bytes are needed; or a negative close
 * code: -WS_CLOSE_PROTOCOL for reserved bits, unknown opcodes, an unmasked
 * frame, a bad control frame or a continuation out of place;
 * -WS_CLOSE_TOO_BIG as soon as the header announces more than max_message. */
long ws_next_frame(uint8_t *buf, size_t len, int frag_opcode, size_t frag_len,
                   size_t max_message, ws_frame_t *f);

/* Whether buf begins with a whole frame (header and payload), without
 * validating or unmasking anything: 1 with its payload length in
 * *payload_len, else 0. For charging a frame's cost before deciding to
 * parse it; ws_next_frame still judges the frame. */
int ws_frame_whole(const uint8_t *buf, size_t len, uint64_t *payload_len);

/* Checks a close frame's payload. Returns 0 and sets *code (1005 when the
 * payload is empty) or returns the close code to answer with (1002 for a
 * bad length or status code, 1007 for a reason that is not UTF-8). */
int ws_check_close(const uint8_t *payload, size_t len, int *code);

/* Writes a frame header to out (at least 14 bytes) and returns its length.
 * mask is NULL for server frames, 4 bytes for client frames. */
size_t ws_encode_header(uint8_t *out, int fin, int opcode, uint64_t len, const uint8_t *mask);

/* A complete unmasked server frame with the given payload. */
sbuf_t *ws_frame_new(int opcode, const void *payload, size_t len);

/* A close frame carrying code and a short reason. */
sbuf_t *ws_close_frame_new(int code, const char *reason);

/* Computes Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64 of SHA-1 of
 * the key and the RFC's GUID. out receives 28 characters and a NUL. Returns
 * 0, or -1 when the key is not the base64 of 16 bytes. */
int ws_accept_key(const char *key, size_t key_len, char out[29]);

#endif
