/* bus_envelope.h - the bytes one node publishes to another's channel.
 *
 * A Redis bus (bus_redis.c) publishes an envelope to a node's channel for
 * a frame to some of its users, a frame to one of its connections, or a
 * kick of a device. Little-endian, after 'P' 1 type:
 *   'D' u32 n (>0), i64 except_user, i64 except_device, i64 conv, i64 seq,
 *       n x i64 users, frame bytes (the rest)
 *   'S' u64 conn, i64 conv, i64 seq, frame bytes (the rest)
 *   'K' i64 user, i64 device (nothing after)
 * It comes from the network: the parser keeps no state, never allocates
 * and never reads outside the bytes it is given (fuzz/fuzz_envelope.c). */
#ifndef PARLEY_BUS_ENVELOPE_H
#define PARLEY_BUS_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

typedef struct bus_envelope {
	char type;                /* 'D', 'S' or 'K' */
	uint32_t n;               /* D: users */
	int64_t except_user, except_device, conv, seq, user, device;
	uint64_t conn;
	const uint8_t *users;     /* D: n x i64, unaligned, in the input */
	const uint8_t *frame;     /* D, S: in the input */
	size_t frame_len;
} bus_envelope_t;

#define BUS_ENV_D_HEAD (3 + 4 + 8 * 4)
#define BUS_ENV_S_HEAD (3 + 8 * 3)
#define BUS_ENV_K_LEN (3 + 8 * 2)

/* Parses len bytes at p into out (pointing into p). 0, or -1 when
 * malformed. */
int bus_envelope_parse(const uint8_t *p, size_t len, bus_envelope_t *out);

/* User i of a parsed 'D' envelope. */
int64_t bus_envelope_user(const bus_envelope_t *e, uint32_t i);

/* Writes the head of an envelope of env->type (D: n, except_user,
 * except_device, conv, seq; S: conn, conv, seq; K: user, device) into
 * out, which has room for BUS_ENV_D_HEAD (D), BUS_ENV_S_HEAD (S) or
 * BUS_ENV_K_LEN (K) bytes; returns how many it wrote. The caller appends
 * a D's users (bus_envelope_put64 each) and the frame. */
size_t bus_envelope_head(const bus_envelope_t *env, uint8_t *out);

void bus_envelope_put64(uint8_t *p, uint64_t v);

#endif
