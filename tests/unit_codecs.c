/* unit_codecs.c - UTF-8 validation, snowflake ids, the JSON builder and
 * the server frames built on it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "frames.h"
#include "jbuf.h"
#include "snowflake.h"
#include "utf8.h"

static int valid(const char *s, size_t n)
{
	return utf8_validate(UTF8_ACCEPT, s, n) == UTF8_ACCEPT;
}

static void test_utf8(void **state)
{
	static const struct { const char *s; size_t n; int ok; } cases[] = {
		{"", 0, 1},
		{"plain ascii", 11, 1},
		{"\xc3\xa9", 2, 1},             /* e-acute */
		{"\xe2\x82\xac", 3, 1},         /* euro */
		{"\xf0\x9f\x98\x80", 4, 1},     /* emoji */
		{"\xf4\x8f\xbf\xbf", 4, 1},     /* U+10FFFF */
		{"\xef\xbb\xbf", 3, 1},         /* BOM */
		{"\x80", 1, 0},                 /* lone continuation */
		{"\xc3", 1, 0},                 /* truncated */
		{"\xc0\xaf", 2, 0},             /* overlong */
		{"\xe0\x80\xaf", 3, 0},         /* overlong */
		{"\xed\xa0\x80", 3, 0},         /* surrogate */
		{"\xf4\x90\x80\x80", 4, 0},     /* above U+10FFFF */
		{"\xf8\x88\x80\x80\x80", 5, 0}, /* 5-byte form */
		{"\xfe", 1, 0},
		{"a\xc3(", 3, 0},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof cases / sizeof *cases; i++)
		if (valid(cases[i].s, cases[i].n) != cases[i].ok)
			fail_msg("case %zu judged wrongly", i);
}

static void test_utf8_split_anywhere(void **state)
{
	const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z";
	size_t n = strlen(s), i;

	(void)state;
	for (i = 0; i <= n; i++) {
		uint32_t st = utf8_validate(UTF8_ACCEPT, s, i);
		assert_int_not_equal(st, UTF8_REJECT);
		assert_int_equal(utf8_validate(st, s + i, n - i), UTF8_ACCEPT);
	}
	/* Rejection sticks. */
	assert_int_equal(utf8_validate(utf8_validate(UTF8_ACCEPT, "\xff", 1), "abc", 3), UTF8_REJECT);
}

static void test_snowflake(void **state)
{
	snowflake_t g;
	int64_t now = SNOWFLAKE_EPOCH_MS + 1000000, last = 0, id;
	int i;

	(void)state;
	snowflake_init(&g, 5);
	id = snowflake_next(&g, now);
	assert_int_equal(snowflake_time_ms(id), now);
	assert_int_equal((id >> 12) & 1023, 5);
	/* The clock steps back an hour: ids still rise. */
	last = id;
	for (i = 0; i < 10; i++) {
		id = snowflake_next(&g, now - 3600000);
		assert_true(id > last);
		last = id;
	}
	/* 10,000 ids in one millisecond: unique and increasing, borrowing
	 * future milliseconds past 4,096. */
	for (i = 0; i < 10000; i++) {
		id = snowflake_next(&g, now);
		assert_true(id > last);
		last = id;
	}
	assert_true(snowflake_time_ms(last) > now);
	/* When the clock catches up, it is used again. */
	id = snowflake_next(&g, now + 10);
	assert_true(id > last);
	assert_int_equal(snowflake_time_ms(id), now + 10);
	assert_int_equal(id & 4095, 0);
	/* Node ids are masked into their 10 bits. */
	snowflake_init(&g, 1023);
	id = snowflake_next(&g, now);
	assert_int_equal((id >> 12) & 1023, 1023);
	assert_true(id > 0);
}

static void test_jbuf_escapes(void **state)
{
	jbuf_t b;
	json_t *j;

	(void)state;
	jbuf_init(&b);
	jbuf_lit(&b, "{\"s\":");
	jbuf_str(&b, "q\"b\\n\nt\tc\x01\x1f" "\xc3\xa9<script>", 21);
	jbuf_lit(&b, ",\"n\":");
	jbuf_int(&b, -42);
	jbuf_lit(&b, ",\"id\":");
	jbuf_int_str(&b, 9007199254740993LL);
	jbuf_key(&b, "null", 0);
	jbuf_cstr(&b, NULL);
	jbuf_lit(&b, "}");
	assert_false(b.oom);
	j = json_loadb(b.data, b.len, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "s")),
	                    "q\"b\\n\nt\tc\x01\x1f" "\xc3\xa9<script>");
	assert_int_equal(json_integer_value(json_object_get(j, "n")), -42);
	assert_string_equal(json_string_value(json_object_get(j, "id")), "9007199254740993");
	assert_true(json_is_null(json_object_get(j, "null")));
	json_decref(j);
	jbuf_free(&b);
}

/* Parses the JSON payload of a small server text frame. */
static json_t *frame_json(const sbuf_t *f)
{
	size_t h = f->data[1] == 126 ? 4 : 2;

	assert_int_equal(f->data[0], 0x81);
	return json_loadb((const char *)f->data + h, f->len - h, 0, NULL);
}

static void test_frames(void **state)
{
	store_message_t m = {.conv = 7, .id = 123456789012345678LL, .seq = 3, .from = 42, .ts = 1700000000000LL,
	                     .cmid = "c-1", .body = "hi \"you\"", .body_len = 8};
	sbuf_t *f;
	json_t *j;

	(void)state;
	f = frames_msg(&m);
	assert_int_equal(f->conv, 7);
	assert_int_equal(f->seq, 3);
	j = frame_json(f);
	assert_string_equal(json_string_value(json_object_get(j, "type")), "msg");
	assert_int_equal(json_integer_value(json_object_get(j, "conv")), 7);
	assert_string_equal(json_string_value(json_object_get(j, "id")), "123456789012345678");
	assert_int_equal(json_integer_value(json_object_get(j, "seq")), 3);
	assert_int_equal(json_integer_value(json_object_get(j, "from")), 42);
	assert_string_equal(json_string_value(json_object_get(j, "cmid")), "c-1");
	assert_string_equal(json_string_value(json_object_get(j, "body")), "hi \"you\"");
	assert_int_equal(json_integer_value(json_object_get(j, "ts")), 1700000000000LL);
	json_decref(j);
	sbuf_unref(f);

	f = frames_ack("c-1", 7, 99, 3, 5);
	j = frame_json(f);
	assert_string_equal(json_string_value(json_object_get(j, "type")), "ack");
	assert_string_equal(json_string_value(json_object_get(j, "id")), "99");
	assert_int_equal(f->seq, 0); /* not a msg: no ordering label */
	json_decref(j);
	sbuf_unref(f);

	f = frames_error("forbidden", "no", "c-1", 7);
	j = frame_json(f);
	assert_string_equal(json_string_value(json_object_get(j, "code")), "forbidden");
	assert_string_equal(json_string_value(json_object_get(j, "ref")), "c-1");
	json_decref(j);
	sbuf_unref(f);

	f = frames_receipt(7, 42, 2, 3);
	j = frame_json(f);
	assert_string_equal(json_string_value(json_object_get(j, "state")), "read");
	json_decref(j);
	sbuf_unref(f);

	f = frames_pong("{\"a\":[1]}");
	j = frame_json(f);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(json_object_get(j, "ref"), "a"), 0)), 1);
	json_decref(j);
	sbuf_unref(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_utf8_split_anywhere),
		cmocka_unit_test(test_snowflake),
		cmocka_unit_test(test_jbuf_escapes),
		cmocka_unit_test(test_frames),
	};
	return cmocka_run_group_tests_name("unit_codecs", tests, NULL, NULL);
}
