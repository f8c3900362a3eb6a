/* frames.c - the frame encoders of frames.h, on jbuf. */
#include "frames.h"

#include <string.h>

#include "ws.h"

void frames_message_json(jbuf_t *b, const store_message_t *m)
{
	jbuf_key(b, "conv", 1);
	jbuf_int(b, m->conv);
	jbuf_key(b, "id", 0);
	jbuf_int_str(b, m->id);
	jbuf_key(b, "seq", 0);
	jbuf_int(b, m->seq);
	jbuf_key(b, "from", 0);
	jbuf_int(b, m->from);
	jbuf_key(b, "cmid", 0);
	jbuf_cstr(b, m->cmid);
	jbuf_key(b, "body", 0);
	jbuf_str(b, m->body, m->body_len);
	jbuf_key(b, "ts", 0);
	jbuf_int(b, m->ts);
	frames_message_state_json(b, m);
}

static const char *const kind_names[] = {
	[STORE_MSG_EDIT] = "edit",
	[STORE_MSG_DELETE] = "delete",
	[STORE_MSG_REACTION] = "reaction",
};

void frames_message_state_json(jbuf_t *b, const store_message_t *m)
{
	if (m->kind > STORE_MSG_TEXT && m->kind <= STORE_MSG_REACTION) {
		jbuf_key(b, "kind", 0);
		jbuf_cstr(b, kind_names[m->kind]);
		jbuf_key(b, "target", 0);
		jbuf_int(b, m->target);
		return;
	}
	if (m->target > 0) {
		jbuf_key(b, "reply_to", 0);
		jbuf_lit(b, "{\"seq\":");
		jbuf_int(b, m->target);
		if (m->quote_from > 0) {
			jbuf_key(b, "from", 0);
			jbuf_int(b, m->quote_from);
			if (m->quote_body) {
				jbuf_key(b, "body", 0);
				jbuf_str(b, m->quote_body, m->quote_len);
			} else {
				jbuf_lit(b, ",\"deleted\":true");
			}
		}
		jbuf_lit(b, "}");
	}
	if (m->edited_at) {
		jbuf_key(b, "edited_at", 0);
		jbuf_int(b, m->edited_at);
	}
	if (m->deleted)
		jbuf_lit(b, ",\"deleted\":true");
	if (m->state_seq) {
		jbuf_key(b, "state_seq", 0);
		jbuf_int(b, m->state_seq);
	}
	/* Made by the store from ids and emoji it checked (store.h). */
	if (m->reactions && m->reactions[0] == '[') {
		jbuf_key(b, "reactions", 0);
		jbuf_lit(b, m->reactions);
	}
}

sbuf_t *frames_from_json(const jbuf_t *b)
{
	if (b->oom)
		return NULL;
	return ws_frame_new(WS_OP_TEXT, b->data, b->len);
}

static sbuf_t *finish(jbuf_t *b)
{
	sbuf_t *f;

	jbuf_raw(b, "}", 1);
	f = frames_from_json(b);
	jbuf_free(b);
	return f;
}

sbuf_t *frames_ready(int64_t user, int64_t device, int64_t server_time)
{
	jbuf_t b;

	jbuf_init(&b);
	jbuf_lit(&b, "{\"type\":\"ready\"");
	jbuf_key(&b, "user_id", 0);
	jbuf_int(&b, user);
	jbuf_key(&b, "device_id", 0);
	jbuf_int(&b, device);
	jbuf_key(&b, "server_time", 0);
	jbuf_int(&b, server_time);
	return finish(&b);
}

sbuf_t *frames_msg(const store_message_t *m)
{
	jbuf_t b;
	sbuf_t *f;

	jbuf_init(&b);
	jbuf_lit(&b, "{\"type\":\"msg\",");
	frames_message_json(&b, m);
	if ((f = finish(&b)) != NULL) {
		f->conv = m->conv;
		f->seq = m->seq;
	}
	return f;
}

sbuf_t *frames_ack(const char *cmid, int64_t conv, int64_t id, int64_t seq, int64_t ts)
{
	jbuf_t b;

	jbuf_init(&b);
	jbuf_lit(&b, "{\"type\":\"ack\"");
	jbuf_key(&b, "cmid", 0);
	jbuf_cstr(&b, cmid);
	jbuf_key(&b, "conv", 0);
	jbuf_int(&b, conv);
	jbuf_key(&b, "id", 0);
	jbuf_int_str(&b, id);
	jbuf_key(&b, "seq", 0);
	jbuf_int(&b, seq);
	jbuf_key(&b, "ts", 0);
	jbuf_int(&b, ts);
	return finish(&b);
}

sbuf_t *frames_receipt(int64_t conv, int64_t user, int state, int64_t seq)
{
	jbuf_t b;

	jbuf_init(&b);
	jbuf_lit(&b, "{\"type\":\"receipt\"");
	jbuf_key(&b, "conv", 0);
	jbuf_int(&b, conv);
	jbuf_key(&b, "user", 0);
	jbuf_int(&b, user);
	jbuf_key(&b, "state", 0);
	jbuf_cstr(&b, state == STORE_READ ? "read" : "delivered");
	jbuf_key(&b, "seq", 0);
	jbuf_int(&b, seq);
	return finish(&b);
}

sbuf_t *frames_error(const char *code, const char *message, const char *ref, int64_t conv)
{
	jbuf_t b;

	jbuf_init(&b);
	jbuf_lit(&b, "{\"type\":\"error\"");
	jbuf_key(&b, "code", 0);
	jbuf_cstr(&b, code);
	jbuf_key(&b, "message", 0);
	jbuf_cstr(&b, message);
	if (ref) {
		jbuf_key(&b, "ref", 0);
		jbuf_cstr(&b, ref);
	}
	if (conv) {
		jbuf_key(&b, "conv", 0);
		jbuf_int(&b, conv);
	}
	return finish(&b);
}

sbuf_t *frames_members(int64_t conv, const char *event, int64_t user, int64_t by, size_t count)
{
	jbuf_t b;

	jbuf_init(&b);
	jbuf_lit(&b, "{\"type\":\"members\"");
	jbuf_key(&b, "conv", 0);
	jbuf_int(&b, conv);
	jbuf_key(&b, "event", 0);
	jbuf_cstr(&b, event);
	if (user) {
		jbuf_key(&b, "user", 0);
		jbuf_int(&b, user);
	}
	jbuf_key(&b, "by", 0);
	jbuf_int(&b, by);
	jbuf_key(&b, "count", 0);
	jbuf_int(&b, (int64_t)count);
	return finish(&b);
}

sbuf_t *frames_rate_limited(const char *message, const char *ref, int64_t conv, int64_t retry_after_ms)
{
	jbuf_t b;

	jbuf_init(&b);
	jbuf_lit(&b, "{\"type\":\"error\",\"code\":\"rate_limited\"");
	jbuf_key(&b, "message", 0);
	jbuf_cstr(&b, message);
	if (ref) {
		jbuf_key(&b, "ref", 0);
		jbuf_cstr(&b, ref);
	}
	if (conv) {
		jbuf_key(&b, "conv", 0);
		jbuf_int(&b, conv);
	}
	jbuf_key(&b, "retry_after_ms", 0);
	jbuf_int(&b, retry_after_ms);
	return finish(&b);
}

sbuf_t *frames_pong(const char *ref_json)
{
	jbuf_t b;

	jbuf_init(&b);
	jbuf_lit(&b, "{\"type\":\"pong\"");
	if (ref_json) {
		jbuf_key(&b, "ref", 0);
		jbuf_lit(&b, ref_json);
	}
	return finish(&b);
}
