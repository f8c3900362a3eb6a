/* ws.c - WebSocket framing and handshake helpers of ws.h. */
#include "ws.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "utf8.h"

long ws_next_frame(uint8_t *buf, size_t len, int frag_opcode, size_t frag_len,
                   size_t max_message, ws_frame_t *f)
{
	size_t hlen = 2, i;
	uint64_t plen;
	int fin, opcode;
	uint8_t *mask, *p;

	if (len < 2)
		return WS_INCOMPLETE;
	fin = buf[0] >> 7;
	opcode = buf[0] & 0x0f;
	if (buf[0] & 0x70)
		return -WS_CLOSE_PROTOCOL; /* no extension was negotiated */
	switch (opcode) {
	case WS_OP_CONT:
		if (!frag_opcode)
			return -WS_CLOSE_PROTOCOL;
		break;
	case WS_OP_TEXT:
	case WS_OP_BINARY:
		if (frag_opcode)
			return -WS_CLOSE_PROTOCOL;
		break;
	case WS_OP_CLOSE:
	case WS_OP_PING:
	case WS_OP_PONG:
		if (!fin || (buf[1] & 0x7f) > 125)
			return -WS_CLOSE_PROTOCOL;
		break;
	default:
		return -WS_CLOSE_PROTOCOL;
	}
	if (!(buf[1] & 0x80))
		return -WS_CLOSE_PROTOCOL; /* clients must mask */
	plen = buf[1] & 0x7f;
	if (plen == 126) {
		hlen += 2;
		if (len < hlen)
			return WS_INCOMPLETE;
		plen = ((uint64_t)buf[2] << 8) | buf[3];
	} else if (plen == 127) {
		hlen += 8;
		if (len < hlen)
			return WS_INCOMPLETE;
		if (buf[2] & 0x80)
			return -WS_CLOSE_PROTOCOL; /* the most significant bit must be 0 */
		plen = 0;
		for (i = 2; i < 10; i++)
			plen = (plen << 8) | buf[i];
	}
	/* Decide on size before waiting for the payload, so a peer cannot make
	 * us buffer a huge frame only to refuse it. Control frames are capped
	 * at 125 above and do not count against the message. */
	if (opcode < WS_OP_CLOSE && (plen > max_message || frag_len + plen > max_message))
		return -WS_CLOSE_TOO_BIG;
	hlen += 4;
	if (len < hlen || len - hlen < plen)
		return WS_INCOMPLETE;
	mask = buf + hlen - 4;
	p = buf + hlen;
	for (i = 0; i < plen; i++)
		p[i] ^= mask[i & 3];
	f->fin = fin;
	f->opcode = opcode;
	f->payload = p;
	f->payload_len = (size_t)plen;
	return (long)(hlen + plen);
}

int ws_frame_whole(const uint8_t *buf, size_t len, uint64_t *payload_len)
{
	size_t hlen = 2, i;
	uint64_t plen;

	if (len < 2)
		return 0;
	plen = buf[1] & 0x7f;
	if (plen == 126) {
		hlen += 2;
		if (len < hlen)
			return 0;
		plen = ((uint64_t)buf[2] << 8) | buf[3];
	} else if (plen == 127) {
		hlen += 8;
		if (len < hlen)
			return 0;
		plen = 0;
		for (i = 2; i < 10; i++)
			plen = (plen << 8) | buf[i];
	}
	if (buf[1] & 0x80)
		hlen += 4;
	if (len < hlen || len - hlen < plen)
		return 0;
	*payload_len = plen;
	return 1;
}

int ws_check_close(const uint8_t *payload, size_t len, int *code)
{
	int c;

	if (len == 0) {
		*code = WS_CLOSE_NO_STATUS;
		return 0;
	}
	if (len == 1)
		return WS_CLOSE_PROTOCOL;
	c = (payload[0] << 8) | payload[1];
	/* Codes a peer may send: RFC 6455 section 7.4 and the IANA registry;
	 * 1004-1006 and 1015 are reserved for local use only. */
	if (!((c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999)))
		return WS_CLOSE_PROTOCOL;
	if (utf8_validate(UTF8_ACCEPT, payload + 2, len - 2) != UTF8_ACCEPT)
		return WS_CLOSE_INVALID_DATA;
	*code = c;
	return 0;
}

size_t ws_encode_header(uint8_t *out, int fin, int opcode, uint64_t len, const uint8_t *mask)
{
	size_t n = 2;
	int i;

	out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
	if (len < 126) {
		out[1] = (uint8_t)len;
	} else if (len <= 0xffff) {
		out[1] = 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		n = 4;
	} else {
		out[1] = 127;
		for (i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
		n = 10;
	}
	if (mask) {
		out[1] |= 0x80;
		memcpy(out + n, mask, 4);
		n += 4;
	}
	return n;
}

sbuf_t *ws_frame_new(int opcode, const void *payload, size_t len)
{
	uint8_t head[14];
	size_t h = ws_encode_header(head, 1, opcode, len, NULL);
	sbuf_t *b = sbuf_new(h + len);

	if (!b)
		return NULL;
	memcpy(b->data, head, h);
	if (len)
		memcpy(b->data + h, payload, len);
	return b;
}

sbuf_t *ws_close_frame_new(int code, const char *reason)
{
	uint8_t payload[125];
	size_t rlen = reason ? strlen(reason) : 0;

	if (code == WS_CLOSE_NO_STATUS)
		return ws_frame_new(WS_OP_CLOSE, NULL, 0);
	if (rlen > 123)
		rlen = 123;
	payload[0] = (uint8_t)(code >> 8);
	payload[1] = (uint8_t)code;
	if (rlen)
		memcpy(payload + 2, reason, rlen);
	return ws_frame_new(WS_OP_CLOSE, payload, 2 + rlen);
}

int ws_accept_key(const char *key, size_t key_len, char out[29])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	unsigned char decoded[32], digest[SHA_DIGEST_LENGTH], buf[64 + sizeof guid];
	size_t i;

	/* The key must be base64 of exactly 16 bytes: 24 characters, "==" pad. */
	if (key_len != 24 || key[22] != '=' || key[23] != '=')
		return -1;
	for (i = 0; i < 22; i++) {
		char c = key[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      (c >= '0' && c <= '9') || c == '+' || c == '/'))
			return -1;
	}
	if (EVP_DecodeBlock(decoded, (const unsigned char *)key, 24) != 18)
		return -1;
	memcpy(buf, key, key_len);
	memcpy(buf + key_len, guid, sizeof guid - 1);
	SHA1(buf, key_len + sizeof guid - 1, digest);
	EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
	out[28] = 0;
	return 0;
}
