/* bus_envelope.c - encoding and parsing of the envelopes nodes publish to
 * each other (the format is in bus_envelope.h). */
#include "bus_envelope.h"

#include <string.h>

void bus_envelope_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

int64_t bus_envelope_user(const bus_envelope_t *e, uint32_t i)
{
	return (int64_t)get64(e->users + 8 * (size_t)i);
}

int bus_envelope_parse(const uint8_t *p, size_t len, bus_envelope_t *out)
{
	memset(out, 0, sizeof *out);
	if (len < 3 || p[0] != 'P' || p[1] != 1)
		return -1;
	out->type = (char)p[2];
	switch (out->type) {
	case 'D':
		if (len < BUS_ENV_D_HEAD)
			return -1;
		out->n = (uint32_t)p[3] | (uint32_t)p[4] << 8 | (uint32_t)p[5] << 16 | (uint32_t)p[6] << 24;
		out->except_user = (int64_t)get64(p + 7);
		out->except_device = (int64_t)get64(p + 15);
		out->conv = (int64_t)get64(p + 23);
		out->seq = (int64_t)get64(p + 31);
		/* Counted against what follows, never multiplied first: n is
		 * anything the sender wrote. */
		if (out->n == 0 || out->n > (len - BUS_ENV_D_HEAD) / 8)
			return -1;
		out->users = p + BUS_ENV_D_HEAD;
		out->frame = out->users + 8 * (size_t)out->n;
		out->frame_len = len - BUS_ENV_D_HEAD - 8 * (size_t)out->n;
		return 0;
	case 'S':
		if (len < BUS_ENV_S_HEAD)
			return -1;
		out->conn = get64(p + 3);
		out->conv = (int64_t)get64(p + 11);
		out->seq = (int64_t)get64(p + 19);
		out->frame = p + BUS_ENV_S_HEAD;
		out->frame_len = len - BUS_ENV_S_HEAD;
		return 0;
	case 'K':
		if (len != BUS_ENV_K_LEN)
			return -1;
		out->user = (int64_t)get64(p + 3);
		out->device = (int64_t)get64(p + 11);
		return 0;
	default:
		return -1;
	}
}

size_t bus_envelope_head(const bus_envelope_t *env, uint8_t *out)
{
	out[0] = 'P';
	out[1] = 1;
	out[2] = (uint8_t)env->type;
	switch (env->type) {
	case 'D':
		out[3] = (uint8_t)env->n;
		out[4] = (uint8_t)(env->n >> 8);
		out[5] = (uint8_t)(env->n >> 16);
		out[6] = (uint8_t)(env->n >> 24);
		bus_envelope_put64(out + 7, (uint64_t)env->except_user);
		bus_envelope_put64(out + 15, (uint64_t)env->except_device);
		bus_envelope_put64(out + 23, (uint64_t)env->conv);
		bus_envelope_put64(out + 31, (uint64_t)env->seq);
		return BUS_ENV_D_HEAD;
	case 'S':
		bus_envelope_put64(out + 3, env->conn);
		bus_envelope_put64(out + 11, (uint64_t)env->conv);
		bus_envelope_put64(out + 19, (uint64_t)env->seq);
		return BUS_ENV_S_HEAD;
	default:
		bus_envelope_put64(out + 3, (uint64_t)env->user);
		bus_envelope_put64(out + 11, (uint64_t)env->device);
		return BUS_ENV_K_LEN;
	}
}
