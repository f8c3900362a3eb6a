/* unit_ws.c - WebSocket framing, close payloads and the accept key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ws.h"

#define MAX 65536

static void test_accept_key(void **state)
{
	char out[29];

	(void)state;
	/* RFC 6455 section 1.3. */
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out), 0);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ=", 23, out), -1);
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZ!==", 24, out), -1);
	assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQQQ", 24, out), -1);
}

static void test_rfc_masked_hello(void **state)
{
	/* RFC 6455 section 5.7: a masked "Hello". */
	uint8_t f[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
	ws_frame_t fr;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof f; i++) {
		uint8_t copy[sizeof f];
		memcpy(copy, f, sizeof f);
		assert_int_equal(ws_next_frame(copy, i, 0, 0, MAX, &fr), WS_INCOMPLETE);
	}
	assert_int_equal(ws_next_frame(f, sizeof f, 0, 0, MAX, &fr), (long)sizeof f);
	assert_true(fr.fin);
	assert_int_equal(fr.opcode, WS_OP_TEXT);
	assert_int_equal(fr.payload_len, 5);
	assert_memory_equal(fr.payload, "Hello", 5);
}

/* Builds a masked client frame with a zero mask. */
static size_t client_frame(uint8_t *out, int fin, int op, size_t len)
{
	static const uint8_t zero[4] = {0, 0, 0, 0};
	size_t h = ws_encode_header(out, fin, op, len, zero);

	memset(out + h, 'x', len);
	return h + len;
}

/* ws_frame_whole sees a frame as whole exactly when ws_next_frame would
 * take it, for each length encoding, and touches nothing. */
static void test_frame_whole(void **state)
{
	static const size_t sizes[] = {0, 5, 125, 126, 65535, 65536};
	uint8_t *buf = malloc(70000), *copy = malloc(70000);
	uint64_t plen;
	size_t i, k, n;
	ws_frame_t fr;

	(void)state;
	for (k = 0; k < sizeof sizes / sizeof *sizes; k++) {
		n = client_frame(buf, 1, WS_OP_TEXT, sizes[k]);
		memcpy(buf + n - sizes[k] - 4, "\x01\x02\x03\x04", 4); /* a mask that changes bytes */
		for (i = 0; i < n; i += (i < 20 ? 1 : 997)) {
			assert_int_equal(ws_frame_whole(buf, i, &plen), 0);
			memcpy(copy, buf, i);
			assert_int_equal(ws_next_frame(copy, i, 0, 0, MAX, &fr), WS_INCOMPLETE);
		}
		memcpy(copy, buf, n);
		assert_int_equal(ws_frame_whole(buf, n, &plen), 1);
		assert_int_equal(plen, sizes[k]);
		assert_memory_equal(buf, copy, n); /* still masked: nothing changed */
		assert_int_equal(ws_next_frame(copy, n, 0, 0, MAX, &fr), (long)n);
	}
	free(buf);
	free(copy);
}

static void test_lengths(void **state)
{
	uint8_t *buf = malloc(70000);
	ws_frame_t fr;
	size_t n;

	(void)state;
	n = client_frame(buf, 1, WS_OP_TEXT, 125);
	assert_int_equal(n, 2 + 4 + 125);
	assert_int_equal(ws_next_frame(buf, n, 0, 0, MAX, &fr), (long)n);
	n = client_frame(buf, 1, WS_OP_TEXT, 126);
	assert_int_equal(n, 4 + 4 + 126);
	assert_int_equal(ws_next_frame(buf, n, 0, 0, MAX, &fr), (long)n);
	assert_int_equal(fr.payload_len, 126);
	n = client_frame(buf, 1, WS_OP_TEXT, 65535);
	assert_int_equal(ws_next_frame(buf, n, 0, 0, MAX, &fr), (long)n);
	n = client_frame(buf, 1, WS_OP_TEXT, 65536);
	assert_int_equal(n, 10 + 4 + 65536);
	assert_int_equal(ws_next_frame(buf, n, 0, 0, MAX, &fr), (long)n);
	/* Over the cap: refused from the header alone. */
	n = client_frame(buf, 1, WS_OP_TEXT, 65537);
	assert_int_equal(ws_next_frame(buf, 14, 0, 0, MAX, &fr), -WS_CLOSE_TOO_BIG);
	/* ... and counting the fragments before it. */
	n = client_frame(buf, 1, WS_OP_CONT, 100);
	assert_int_equal(ws_next_frame(buf, n, WS_OP_TEXT, MAX - 99, MAX, &fr), -WS_CLOSE_TOO_BIG);
	assert_int_equal(ws_next_frame(buf, n, WS_OP_TEXT, MAX - 100, MAX, &fr), (long)n);
	/* A 64-bit length with its top bit set. */
	buf[0] = 0x81;
	buf[1] = 0xff;
	memset(buf + 2, 0xff, 8);
	assert_int_equal(ws_next_frame(buf, 14, 0, 0, MAX, &fr), -WS_CLOSE_PROTOCOL);
	free(buf);
}

static void test_protocol_errors(void **state)
{
	uint8_t buf[256];
	ws_frame_t fr;
	size_t n;

	(void)state;
	n = client_frame(buf, 1, WS_OP_TEXT, 3);
	buf[0] |= 0x40; /* RSV1 */
	assert_int_equal(ws_next_frame(buf, n, 0, 0, MAX, &fr), -WS_CLOSE_PROTOCOL);
	n = client_frame(buf, 1, WS_OP_TEXT, 3);
	buf[1] &= 0x7f; /* unmasked */
	assert_int_equal(ws_next_frame(buf, n, 0, 0, MAX, &fr), -WS_CLOSE_PROTOCOL);
	n = client_frame(buf, 1, 3, 1);
	assert_int_equal(ws_next_frame(buf, n, 0, 0, MAX, &fr), -WS_CLOSE_PROTOCOL);
	n = client_frame(buf, 1, 0xF, 1);
	assert_int_equal(ws_next_frame(buf, n, 0, 0, MAX, &fr), -WS_CLOSE_PROTOCOL);
	n = client_frame(buf, 0, WS_OP_PING, 1);
	assert_int_equal(ws_next_frame(buf, n, 0, 0, MAX, &fr), -WS_CLOSE_PROTOCOL);
	n = client_frame(buf, 1, WS_OP_PING, 126);
	assert_int_equal(ws_next_frame(buf, n, 0, 0, MAX, &fr), -WS_CLOSE_PROTOCOL);
	n = client_frame(buf, 1, WS_OP_CONT, 1);
	assert_int_equal(ws_next_frame(buf, n, 0, 0, MAX, &fr), -WS_CLOSE_PROTOCOL);
	n = client_frame(buf, 1, WS_OP_TEXT, 1);
	assert_int_equal(ws_next_frame(buf, n, WS_OP_TEXT, 5, MAX, &fr), -WS_CLOSE_PROTOCOL);
	/* Control frames may come in the middle of a fragmented message. */
	n = client_frame(buf, 1, WS_OP_PING, 4);
	assert_int_equal(ws_next_frame(buf, n, WS_OP_TEXT, 5, MAX, &fr), (long)n);
	assert_int_equal(fr.opcode, WS_OP_PING);
}

static void test_close_payloads(void **state)
{
	int code = 0;

	(void)state;
	assert_int_equal(ws_check_close((const uint8_t *)"", 0, &code), 0);
	assert_int_equal(code, 1005);
	assert_int_equal(ws_check_close((const uint8_t *)"\x03", 1, &code), 1002);
	assert_int_equal(ws_check_close((const uint8_t *)"\x03\xe8ok", 4, &code), 0);
	assert_int_equal(code, 1000);
	assert_int_equal(ws_check_close((const uint8_t *)"\x03\xe7", 2, &code), 1002);
	assert_int_equal(ws_check_close((const uint8_t *)"\x03\xee", 2, &code), 1002); /* 1006 */
	assert_int_equal(ws_check_close((const uint8_t *)"\x03\xf7", 2, &code), 1002); /* 1015 */
	assert_int_equal(ws_check_close((const uint8_t *)"\x13\x88", 2, &code), 1002); /* 5000 */
	assert_int_equal(ws_check_close((const uint8_t *)"\x0b\xb8", 2, &code), 0);    /* 3000 */
	assert_int_equal(ws_check_close((const uint8_t *)"\x03\xe8\xc3", 3, &code), 1007);
}

static void test_server_frames(void **state)
{
	sbuf_t *b = ws_frame_new(WS_OP_TEXT, "hi", 2);
	uint8_t big[300];

	(void)state;
	assert_int_equal(b->len, 4);
	assert_memory_equal(b->data, "\x81\x02hi", 4);
	sbuf_unref(b);
	memset(big, 'z', sizeof big);
	b = ws_frame_new(WS_OP_TEXT, big, sizeof big);
	assert_int_equal(b->len, 4 + sizeof big);
	assert_int_equal(b->data[1], 126);
	assert_int_equal((b->data[2] << 8) | b->data[3], 300);
	sbuf_unref(b);
	b = ws_close_frame_new(1001, "bye");
	assert_memory_equal(b->data, "\x88\x05\x03\xe9" "bye", 7);
	sbuf_unref(b);
	b = ws_close_frame_new(1005, "ignored");
	assert_int_equal(b->len, 2);
	sbuf_unref(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept_key),
		cmocka_unit_test(test_rfc_masked_hello),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_frame_whole),
		cmocka_unit_test(test_protocol_errors),
		cmocka_unit_test(test_close_payloads),
		cmocka_unit_test(test_server_frames),
	};
	return cmocka_run_group_tests_name("unit_ws", tests, NULL, NULL);
}
