/* cli.c - parley-cli, a terminal client on the client library.
 *
 *   parley-cli [--server HOST:PORT] register USER PASSWORD
 *   parley-cli [--server HOST:PORT] login USER PASSWORD      (prints a token)
 *   parley-cli [--server HOST:PORT] open TOKEN USERNAME      (direct chat id)
 *   parley-cli [--server HOST:PORT] chat TOKEN CONV
 *
 * chat says when it is connected, shows what came since it last ran here
 * (its cursor is kept on disk, per server, user and conversation; the
 * first time, the conversation's newest messages), then sends each line
 * typed as a message and prints what arrives: messages (in a group with
 * each sender's name), the ticks of one's own messages (sent, delivered,
 * read; in a group the counts) and errors. What it shows it marks read.
 * It reconnects with backoff when the server goes away, and quits at the
 * end of its input (Ctrl-D) once every line is acked, or when the
 * conversation refuses it, saying why. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include <jansson.h>

#include "pclient.h"

#define TIMEOUT 10000

static char host[256] = "127.0.0.1";
static int port = 8080;

static int usage(void)
{
	fprintf(stderr,
	        "usage: parley-cli [--server HOST:PORT] register USER PASSWORD\n"
	        "       parley-cli [--server HOST:PORT] login USER PASSWORD\n"
	        "       parley-cli [--server HOST:PORT] open TOKEN USERNAME\n"
	        "       parley-cli [--server HOST:PORT] chat TOKEN CONV\n");
	return 2;
}

/* One request; prints the error and returns NULL unless status is 2xx
 * (*status: the answer's, 0 when none came). */
static json_t *request_status(const char *method, const char *path, const char *token, json_t *body, int *status)
{
	pc_conn_t *c = pc_connect(host, port);
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	pc_response_t res;
	json_t *j = NULL;

	*status = 0;
	if (!c) {
		fprintf(stderr, "parley-cli: cannot connect to %s:%d\n", host, port);
		free(text);
		return NULL;
	}
	if (pc_http(c, method, path, token, text, &res, TIMEOUT) < 0) {
		fprintf(stderr, "parley-cli: no answer from %s:%d\n", host, port);
	} else {
		j = json_loadb(res.body, res.body_len, 0, NULL);
		*status = res.status;
		if (res.status / 100 != 2) {
			fprintf(stderr, "parley-cli: %d %s\n", res.status, res.body);
			json_decref(j);
			j = NULL;
		}
		pc_response_free(&res);
	}
	free(text);
	pc_close(c);
	return j;
}

static json_t *request(const char *method, const char *path, const char *token, json_t *body)
{
	int status;

	return request_status(method, path, token, body, &status);
}

static int cmd_account(const char *what, const char *user, const char *pass)
{
	json_t *body = json_pack("{s:s, s:s}", "username", user, "password", pass), *j;
	int reg = strcmp(what, "register") == 0;

	if (reg)
		json_object_set_new(body, "device_name", json_string("parley-cli"));
	j = request("POST", reg ? "/api/v1/users" : "/api/v1/sessions", NULL, body);
	json_decref(body);
	if (!j)
		return 1;
	if (reg)
		printf("user %lld\n", (long long)json_integer_value(json_object_get(j, "user_id")));
	else
		printf("%s\n", json_string_value(json_object_get(j, "token")));
	json_decref(j);
	return 0;
}

static int cmd_open(const char *token, const char *name)
{
	char path[128];
	json_t *u, *body, *j;

	snprintf(path, sizeof path, "/api/v1/users?username=%s", name);
	if (!(u = request("GET", path, token, NULL)))
		return 1;
	body = json_pack("{s:[O]}", "members", json_object_get(u, "user_id"));
	j = request("POST", "/api/v1/conversations", token, body);
	json_decref(body);
	json_decref(u);
	if (!j)
		return 1;
	printf("%lld\n", (long long)json_integer_value(json_object_get(j, "conversation_id")));
	json_decref(j);
	return 0;
}

static void print_time(int64_t ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char buf[16];

	localtime_r(&t, &tm);
	strftime(buf, sizeof buf, "%H:%M", &tm);
	printf("%s ", buf);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- chat ------------------------------------------------------------

 * One conversation, in a terminal. It resumes from a cursor kept on disk
 * (what this user was last shown of it here), so a second run shows only
 * what came since; it reconnects with backoff when the server goes away
 * and sends again, with the same cmids, what had no ack; it quits on the
 * end of its input (Ctrl-D) once every line has its ack, and at once, with
 * the reason, when the conversation refuses it. */

#define OUT_MAX 256             /* lines waiting for their ack */
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 10000
#define EOF_WAIT_MS 10000       /* for the last acks after Ctrl-D */

typedef struct pending {
	char cmid[48];
	json_t *frame;          /* the send, edit, delete or react, its cmid in it */
	int64_t retry_at;       /* monotonic ms; 0: in flight */
} pending_t;

typedef struct chat {
	const char *token;
	long long conv, me;
	int group;
	size_t members;
	char title[160];
	json_t *names;          /* "user id" -> username */
	json_t *ids;            /* the members, as the conversation listed them */
	long long cursor;       /* every seq up to it shown or acked */
	long long acked[OUT_MAX]; /* own seqs above the cursor */
	size_t nacked;
	char cursor_path[800];
	pending_t out[OUT_MAX];
	size_t nout;
	unsigned long counter;
	int eof;
	int64_t eof_at;
	long long counts_seq, counts_read, counts_delivered; /* the last group counts printed */
	int resuming;           /* a resume is out: its replay may start past the cursor */
	int cursor_dirty;       /* moved since it was last written */
	long long shown, receipted; /* the newest seq shown; the newest receipted */
} chat_t;

static const char *name_of(chat_t *ch, long long id)
{
	char key[24];
	json_t *n;

	snprintf(key, sizeof key, "%lld", id);
	n = json_object_get(ch->names, key);
	return json_is_string(n) ? json_string_value(n) : "someone";
}

/* Learns the usernames of ids (the conversation's members). */
static void learn_names(chat_t *ch, json_t *ids)
{
	char path[4096];
	size_t i, n = 0, k;

	for (i = 0; i < json_array_size(ids); i = k) {
		json_t *j, *u;
		size_t len = (size_t)snprintf(path, sizeof path, "/api/v1/users?ids=");
		for (k = i; k < json_array_size(ids) && k < i + 200; k++)
			len += (size_t)snprintf(path + len, sizeof path - len, "%s%lld", k > i ? "," : "",
			                        (long long)json_integer_value(json_array_get(ids, k)));
		if (!(j = request("GET", path, ch->token, NULL)))
			return;
		json_array_foreach(json_object_get(j, "users"), n, u) {
			char key[24];
			snprintf(key, sizeof key, "%lld", (long long)json_integer_value(json_object_get(u, "user_id")));
			json_object_set(ch->names, key, json_object_get(u, "username"));
		}
		json_decref(j);
	}
}

/* Where the cursor of (server, user, conversation) lives:
 * $PARLEY_CLI_STATE, else $XDG_STATE_HOME/parley-cli, else
 * ~/.local/state/parley-cli. "" when there is no such place. */
static void cursor_path(chat_t *ch)
{
	const char *dir = getenv("PARLEY_CLI_STATE"), *base;
	char d[400], cmd[480];

	if (dir && *dir) {
		snprintf(d, sizeof d, "%s", dir);
	} else if ((base = getenv("XDG_STATE_HOME")) && *base) {
		snprintf(d, sizeof d, "%s/parley-cli", base);
	} else if ((base = getenv("HOME")) && *base) {
		snprintf(d, sizeof d, "%s/.local/state/parley-cli", base);
	} else {
		ch->cursor_path[0] = 0;
		return;
	}
	snprintf(cmd, sizeof cmd, "%s", d);
	for (char *p = cmd + 1; *p; p++) /* mkdir -p */
		if (*p == '/') {
			*p = 0;
			mkdir(cmd, 0700);
			*p = '/';
		}
	mkdir(cmd, 0700);
	snprintf(ch->cursor_path, sizeof ch->cursor_path, "%s/%s_%d_%lld_%lld", d, host, port, ch->me, ch->conv);
}

static void cursor_load(chat_t *ch)
{
	FILE *f = ch->cursor_path[0] ? fopen(ch->cursor_path, "r") : NULL;
	long long v;

	if (f) {
		if (fscanf(f, "%lld", &v) == 1 && v > 0)
			ch->cursor = v;
		fclose(f);
	}
}

/* Written whole, then renamed over the old one: a crash leaves either. */
static void cursor_save(chat_t *ch)
{
	char tmp[840];
	FILE *f;

	if (!ch->cursor_path[0])
		return;
	snprintf(tmp, sizeof tmp, "%s.tmp", ch->cursor_path);
	if (!(f = fopen(tmp, "w")))
		return;
	fprintf(f, "%lld\n", ch->cursor);
	if (fclose(f) == 0)
		rename(tmp, ch->cursor_path);
}

/* seq is held now (shown, or one's own acked): the cursor moves over it
 * and over the own seqs it then reaches. */
static void cursor_have(chat_t *ch, long long seq)
{
	size_t i;
	int moved = 0;

	if (seq <= ch->cursor)
		return;
	if (seq != ch->cursor + 1) {
		if (ch->nacked < OUT_MAX)
			ch->acked[ch->nacked++] = seq;
		return;
	}
	ch->cursor = seq;
	do {
		moved = 0;
		for (i = 0; i < ch->nacked; i++)
			if (ch->acked[i] <= ch->cursor + 1) {
				if (ch->acked[i] == ch->cursor + 1)
					ch->cursor++;
				ch->acked[i--] = ch->acked[--ch->nacked];
				moved = 1;
			}
	} while (moved);
	ch->cursor_dirty = 1;
}

static void send_pending(pc_conn_t *c, chat_t *ch, pending_t *o)
{
	char *text = json_dumps(o->frame, JSON_COMPACT);

	(void)ch;
	if (text)
		pc_ws_send_text(c, text);
	free(text);
	o->retry_at = 0;
}

/* A seq at *s followed by a space or the end; *s moves past it. */
static int seq_of(const char **s, long long *seq)
{
	char *end;

	*seq = strtoll(*s, &end, 10);
	if (end == *s || *seq < 1 || (*end && *end != ' '))
		return -1;
	*s = *end ? end + 1 : end;
	return 0;
}

/* The frame a typed line asks for: a message, or one of the commands
 * (/edit SEQ TEXT, /delete SEQ, /react SEQ [EMOJI], /reply SEQ TEXT).
 * NULL for a command it cannot read, after saying how to write it. */
static json_t *frame_of_line(const chat_t *ch, const char *line, const char *cmid)
{
	json_int_t conv = (json_int_t)ch->conv;
	const char *s;
	long long seq;

	if (!strncmp(line, "/edit ", 6) && (s = line + 6, !seq_of(&s, &seq)) && *s)
		return json_pack("{s:s, s:I, s:s, s:I, s:s}", "type", "edit", "conv", conv, "cmid", cmid, "seq",
		                 (json_int_t)seq, "body", s);
	if (!strncmp(line, "/delete ", 8) && (s = line + 8, !seq_of(&s, &seq)) && !*s)
		return json_pack("{s:s, s:I, s:s, s:I}", "type", "delete", "conv", conv, "cmid", cmid, "seq", (json_int_t)seq);
	if (!strncmp(line, "/react ", 7) && (s = line + 7, !seq_of(&s, &seq)))
		return json_pack("{s:s, s:I, s:s, s:I, s:s}", "type", "react", "conv", conv, "cmid", cmid, "seq",
		                 (json_int_t)seq, "emoji", s);
	if (!strncmp(line, "/reply ", 7) && (s = line + 7, !seq_of(&s, &seq)) && *s)
		return json_pack("{s:s, s:I, s:s, s:s, s:I}", "type", "send", "conv", conv, "cmid", cmid, "body", s,
		                 "reply_to", (json_int_t)seq);
	if (!strncmp(line, "/edit", 5) || !strncmp(line, "/delete", 7) || !strncmp(line, "/react", 6) ||
	    !strncmp(line, "/reply", 6)) {
		printf("-- /edit SEQ TEXT, /delete SEQ, /react SEQ [EMOJI] (none: take it back), /reply SEQ TEXT\n");
		return NULL;
	}
	return json_pack("{s:s, s:I, s:s, s:s}", "type", "send", "conv", conv, "cmid", cmid, "body", line);
}

static void pending_drop(chat_t *ch, size_t i)
{
	json_decref(ch->out[i].frame);
	memmove(&ch->out[i], &ch->out[i + 1], (ch->nout - i - 1) * sizeof ch->out[0]);
	ch->nout--;
}

static pending_t *pending_find(chat_t *ch, const char *cmid, size_t *at)
{
	size_t i;

	for (i = 0; cmid && i < ch->nout; i++)
		if (!strcmp(ch->out[i].cmid, cmid)) {
			if (at)
				*at = i;
			return &ch->out[i];
		}
	return NULL;
}

/* A line typed: queued until acked (sent now when connected). */
static void typed(pc_conn_t *c, chat_t *ch, const char *line)
{
	pending_t *o;

	if (ch->nout == OUT_MAX) {
		printf("-- %d lines are waiting for the server; this one is not sent\n", OUT_MAX);
		return;
	}
	o = &ch->out[ch->nout++];
	snprintf(o->cmid, sizeof o->cmid, "cli-%ld-%lu-%lld", (long)getpid(), ++ch->counter, (long long)time(NULL));
	o->retry_at = 0;
	if (!(o->frame = frame_of_line(ch, line, o->cmid))) {
		ch->nout--;
		return;
	}
	if (c)
		send_pending(c, ch, o);
}

/* Reads what stdin has: each line typed. Returns 0, or 1 at its end. */
static int read_stdin(pc_conn_t *c, chat_t *ch)
{
	char line[16384 + 2];
	size_t n;

	if (!fgets(line, sizeof line, stdin))
		return 1;
	n = strlen(line);
	if (n && line[n - 1] == '\n')
		line[--n] = 0;
	if (n)
		typed(c, ch, line);
	return 0;
}

enum { CHAT_AGAIN, CHAT_DONE, CHAT_REFUSED };

/* A msg in words: a message with what its events left (a replay's), or
 * an event about an earlier one. */
static void print_message(const chat_t *ch, json_t *j, long long seq, const char *who)
{
	const char *kind = json_string_value(json_object_get(j, "kind"));
	const char *body = json_string_value(json_object_get(j, "body"));
	long long target = json_integer_value(json_object_get(j, "target"));
	json_t *to = json_object_get(j, "reply_to");

	(void)ch;
	if (kind && !strcmp(kind, "edit"))
		printf("[%lld] %s edited [%lld]: %s\n", seq, who, target, body);
	else if (kind && !strcmp(kind, "delete"))
		printf("[%lld] %s deleted [%lld]\n", seq, who, target);
	else if (kind && !strcmp(kind, "reaction") && body && *body)
		printf("[%lld] %s reacted %s to [%lld]\n", seq, who, body, target);
	else if (kind)
		printf("[%lld] %s took back a reaction to [%lld]\n", seq, who, target);
	else if (json_is_true(json_object_get(j, "deleted")))
		printf("[%lld] %s: (deleted)\n", seq, who);
	else {
		char reply[48] = "";
		if (to)
			snprintf(reply, sizeof reply, " (reply to [%lld])",
			         (long long)json_integer_value(json_object_get(to, "seq")));
		printf("[%lld] %s%s: %s%s\n", seq, who, reply, body, json_object_get(j, "edited_at") ? " (edited)" : "");
	}
}

static void receipt(pc_conn_t *c, long long conv, const char *state, long long seq)
{
	char text[128];

	snprintf(text, sizeof text, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"%s\",\"seq\":%lld}", conv, state,
	         seq);
	pc_ws_send_text(c, text);
}

/* One frame from the server. */
static int on_frame(chat_t *ch, json_t *j)
{
	const char *t = json_string_value(json_object_get(j, "type"));
	long long conv = json_integer_value(json_object_get(j, "conv"));

	if (!t)
		return CHAT_AGAIN;
	if (!strcmp(t, "resumed")) {
		ch->resuming = 0;
	} else if (!strcmp(t, "msg") && conv == ch->conv) {
		long long seq = json_integer_value(json_object_get(j, "seq"));
		long long from = json_integer_value(json_object_get(j, "from"));
		if (seq <= ch->cursor)
			return CHAT_AGAIN; /* shown here before */
		/* A replay gives at most the newest 1,000: what is older is
		 * history, and the cursor starts where the replay does. */
		if (ch->resuming && seq > ch->cursor + 1) {
			ch->cursor = seq - 1;
			ch->nacked = 0;
		}
		ch->resuming = 0;
		print_time(json_integer_value(json_object_get(j, "ts")));
		print_message(ch, j, seq, from == ch->me ? "me" : ch->group ? name_of(ch, from) : "them");
		cursor_have(ch, seq);
		if (seq > ch->shown)
			ch->shown = seq;
	} else if (!strcmp(t, "ack") && conv == ch->conv) {
		size_t at;
		long long seq = json_integer_value(json_object_get(j, "seq"));
		if (pending_find(ch, json_string_value(json_object_get(j, "cmid")), &at))
			pending_drop(ch, at);
		printf("   [%lld] sent\n", seq);
		cursor_have(ch, seq);
	} else if (!strcmp(t, "receipt") && conv == ch->conv && json_integer_value(json_object_get(j, "user")) != ch->me) {
		printf("   up to [%lld] %s\n", (long long)json_integer_value(json_object_get(j, "seq")),
		       json_string_value(json_object_get(j, "state")));
	} else if (!strcmp(t, "receipts") && conv == ch->conv) {
		size_t i;
		json_t *k;
		json_array_foreach(json_object_get(j, "counts"), i, k) {
			long long seq = json_integer_value(json_object_get(k, "seq"));
			long long read = json_integer_value(json_object_get(k, "read"));
			json_t *dv = json_object_get(k, "delivered");
			long long delivered = json_is_integer(dv) ? json_integer_value(dv) : -1;
			long long others = ch->members > 1 ? (long long)ch->members - 1 : 1;
			if (seq == ch->counts_seq && read == ch->counts_read && delivered == ch->counts_delivered)
				continue;
			ch->counts_seq = seq, ch->counts_read = read, ch->counts_delivered = delivered;
			if (delivered >= 0)
				printf("   [%lld] delivered to %lld, read by %lld of %lld\n", seq, delivered, read, others);
			else
				printf("   [%lld] read by %lld of %lld\n", seq, read, others);
		}
	} else if (!strcmp(t, "members") && conv == ch->conv) {
		const char *event = json_string_value(json_object_get(j, "event"));
		long long user = json_integer_value(json_object_get(j, "user"));
		long long by = json_integer_value(json_object_get(j, "by"));
		json_t *ids, *count = json_object_get(j, "count");
		if (!event || !user)
			return CHAT_AGAIN; /* "created": nothing to say here */
		ids = json_pack("[I,I]", (json_int_t)user, (json_int_t)by);
		learn_names(ch, ids);
		json_decref(ids);
		if (json_is_integer(count))
			ch->members = (size_t)json_integer_value(count);
		if (user == ch->me && (!strcmp(event, "removed") || !strcmp(event, "left"))) {
			fprintf(stderr, "parley-cli: you are no longer a member of conversation %lld\n", ch->conv);
			return CHAT_REFUSED;
		}
		if (!strcmp(event, "added") || !strcmp(event, "removed"))
			printf("-- %s was %s by %s\n", name_of(ch, user), event, name_of(ch, by));
		else if (!strcmp(event, "left"))
			printf("-- %s left\n", name_of(ch, user));
		else if (!strcmp(event, "admin"))
			printf("-- %s is now an admin\n", name_of(ch, user));
	} else if (!strcmp(t, "error")) {
		const char *code = json_string_value(json_object_get(j, "code"));
		const char *msg = json_string_value(json_object_get(j, "message"));
		json_t *after = json_object_get(j, "retry_after_ms");
		size_t at;
		pending_t *o = pending_find(ch, json_string_value(json_object_get(j, "ref")), &at);
		if (code && !strcmp(code, "forbidden") && !o && conv == ch->conv) {
			fprintf(stderr, "parley-cli: conversation %lld: %s\n", ch->conv, msg ? msg : "not a member");
			return CHAT_REFUSED;
		}
		if (o && code && (!strcmp(code, "unavailable") || !strcmp(code, "rate_limited"))) {
			o->retry_at = now_ms() + (json_is_integer(after) ? json_integer_value(after) : 1000);
		} else if (o) {
			printf("-- not sent: %s: %s\n", code ? code : "error", msg ? msg : "");
			pending_drop(ch, at);
		} else {
			printf("-- error: %s: %s\n", code ? code : "?", msg ? msg : "");
		}
	}
	return CHAT_AGAIN;
}

/* One connection, from the upgrade to its loss. CHAT_AGAIN: lost, try
 * again; CHAT_DONE: input ended and every line acked; CHAT_REFUSED. */
static int chat_session(chat_t *ch, int *connected)
{
	char path[96], text[128];
	pc_response_t res = {0};
	pc_conn_t *c;
	size_t i;
	int r;

	*connected = 0;
	if (ch->me)
		snprintf(path, sizeof path, "/chat/v1/ws?user=%lld", ch->me);
	else
		snprintf(path, sizeof path, "/chat/v1/ws");
	if (!(c = pc_connect(host, port)))
		return CHAT_AGAIN;
	if (pc_ws_open(c, path, ch->token, &res, TIMEOUT) < 0) {
		int status = res.status;
		pc_response_free(&res);
		pc_close(c);
		if (status == 401) {
			fprintf(stderr, "parley-cli: the server refused the token (401): log in again\n");
			return CHAT_REFUSED;
		}
		return CHAT_AGAIN;
	}
	pc_response_free(&res);
	for (;;) {
		struct pollfd p[2] = {{pc_fd(c), POLLIN, 0}, {0, POLLIN, 0}};
		int64_t now = now_ms(), wait = -1;
		pc_frame_t f;

		while ((r = pc_ws_recv(c, &f, 0)) == 0) {
			json_t *j;
			if (f.opcode == 0x9) {
				pc_ws_send_frame(c, 1, 0xA, f.data, f.len, 1, 0);
			} else if (f.opcode == 0x8) {
				int code = f.len >= 2 ? (f.data[0] << 8) | f.data[1] : 1005;
				pc_frame_free(&f);
				pc_close(c);
				if (code == 1008) {
					fprintf(stderr, "parley-cli: this device was logged out\n");
					return CHAT_REFUSED;
				}
				printf("-- the server closed the connection (%d)\n", code);
				return CHAT_AGAIN;
			} else if ((j = json_loadb((char *)f.data, f.len, 0, NULL)) != NULL) {
				const char *t = json_string_value(json_object_get(j, "type"));
				if (t && !strcmp(t, "ready")) {
					int first = !ch->me;
					ch->me = json_integer_value(json_object_get(j, "user_id"));
					if (first) {
						cursor_path(ch);
						cursor_load(ch);
					}
					for (i = 0; !ch->group && !ch->title[0] && i < json_array_size(ch->ids); i++)
						if (json_integer_value(json_array_get(ch->ids, i)) != ch->me)
							snprintf(ch->title, sizeof ch->title, "%s",
							         name_of(ch, json_integer_value(json_array_get(ch->ids, i))));
					*connected = 1;
					if (ch->group)
						printf("-- connected to %s:%d as %s: group \"%s\", %zu members\n", host, port,
						       name_of(ch, ch->me), ch->title, ch->members);
					else
						printf("-- connected to %s:%d as %s: chat with %s\n", host, port,
						       name_of(ch, ch->me), ch->title);
					snprintf(text, sizeof text, "{\"type\":\"resume\",\"convs\":{\"%lld\":%lld}}", ch->conv,
					         ch->cursor);
					pc_ws_send_text(c, text);
					ch->resuming = 1;
					for (i = 0; i < ch->nout; i++)
						send_pending(c, ch, &ch->out[i]);
				} else if ((r = on_frame(ch, j)) != CHAT_AGAIN) {
					json_decref(j);
					pc_frame_free(&f);
					pc_close(c);
					return r;
				}
				json_decref(j);
			}
			pc_frame_free(&f);
		}
		fflush(stdout);
		/* Once per batch of frames, not per message (a replay is up to
		 * 1,000): the receipts for what was shown, received then read,
		 * and the cursor on disk. */
		if (ch->shown > ch->receipted && r == PC_TIMEOUT) {
			receipt(c, ch->conv, "delivered", ch->shown);
			receipt(c, ch->conv, "read", ch->shown);
			ch->receipted = ch->shown;
		}
		if (ch->cursor_dirty) {
			cursor_save(ch);
			ch->cursor_dirty = 0;
		}
		if (r != PC_TIMEOUT) {
			pc_close(c);
			printf("-- connection lost\n");
			return CHAT_AGAIN;
		}
		if (ch->eof && !ch->nout) {
			pc_close(c);
			return CHAT_DONE;
		}
		if (ch->eof && now - ch->eof_at > EOF_WAIT_MS) {
			pc_close(c);
			fprintf(stderr, "parley-cli: %zu lines had no ack\n", ch->nout);
			return CHAT_REFUSED;
		}
		for (i = 0; i < ch->nout; i++) {
			if (!ch->out[i].retry_at)
				continue;
			if (ch->out[i].retry_at <= now)
				send_pending(c, ch, &ch->out[i]);
			else if (wait < 0 || ch->out[i].retry_at - now < wait)
				wait = ch->out[i].retry_at - now;
		}
		if (ch->eof && (wait < 0 || wait > 200))
			wait = 200;
		if (poll(p, ch->eof ? 1 : 2, (int)wait) < 0 && errno != EINTR)
			break;
		if (!ch->eof && (p[1].revents & (POLLIN | POLLHUP)) && read_stdin(c, ch)) {
			ch->eof = 1;
			ch->eof_at = now_ms();
		}
	}
	pc_close(c);
	return CHAT_AGAIN;
}

static int cmd_chat(const char *token, const char *conv_s)
{
	chat_t ch = {0};
	char path[96];
	json_t *e, *ids, *title;
	int status, r, connected;
	int64_t backoff = BACKOFF_MIN_MS, down_since = 0;
	size_t i;

	ch.token = token;
	ch.conv = atoll(conv_s);
	if (ch.conv <= 0) {
		fprintf(stderr, "parley-cli: CONV is a conversation id (what open prints)\n");
		return 2;
	}
	snprintf(path, sizeof path, "/api/v1/conversations/%lld", ch.conv);
	if (!(e = request_status("GET", path, token, NULL, &status))) {
		if (status == 403 || status == 404)
			fprintf(stderr, "parley-cli: conversation %lld: you are not a member of it\n", ch.conv);
		else if (status == 401)
			fprintf(stderr, "parley-cli: the server refused the token (401): log in again\n");
		return 1;
	}
	ch.group = !strcmp(json_string_value(json_object_get(e, "kind")) ? json_string_value(json_object_get(e, "kind")) : "",
	                   "group");
	ch.ids = ids = json_object_get(e, "members");
	ch.members = json_array_size(ids);
	ch.names = json_object();
	learn_names(&ch, ids);
	title = json_object_get(e, "title");
	/* A direct chat's title is the other member, known once "ready" says
	 * who the caller is. */
	if (ch.group)
		snprintf(ch.title, sizeof ch.title, "%s", json_is_string(title) ? json_string_value(title) : "untitled");
	for (;;) {
		r = chat_session(&ch, &connected);
		if (r != CHAT_AGAIN)
			break;
		if (connected) {
			backoff = BACKOFF_MIN_MS;
			down_since = now_ms();
		} else if (!down_since) {
			down_since = now_ms();
		}
		if (ch.eof && !ch.nout) {
			r = CHAT_DONE;
			break;
		}
		if (ch.eof && now_ms() - down_since > 3 * EOF_WAIT_MS) {
			fprintf(stderr, "parley-cli: %zu lines had no ack; the server stayed away\n", ch.nout);
			r = CHAT_REFUSED;
			break;
		}
		{
			/* Jittered, doubling: a restarted server is not met by every
			 * client at once. */
			int64_t d = backoff / 2 + rand() % (backoff / 2 + 1), until;
			if (connected)
				printf("-- reconnecting in %.1f s\n", (double)d / 1000);
			else
				printf("-- cannot reach %s:%d; trying again in %.1f s\n", host, port, (double)d / 1000);
			fflush(stdout);
			until = now_ms() + d;
			while (now_ms() < until) {
				struct pollfd p = {0, POLLIN, 0};
				int n = poll(&p, ch.eof ? 0 : 1, (int)(until - now_ms()));
				if (n > 0 && !ch.eof && read_stdin(NULL, &ch)) {
					ch.eof = 1;
					ch.eof_at = now_ms();
				}
				if (n <= 0 && ch.eof)
					break;
			}
			if (ch.eof && now_ms() < until) {
				struct timespec ts = {(until - now_ms()) / 1000, ((until - now_ms()) % 1000) * 1000000};
				nanosleep(&ts, NULL);
			}
			backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
		}
	}
	if (ch.cursor_dirty) /* a batch that ended the session */
		cursor_save(&ch);
	for (i = 0; i < ch.nout; i++)
		json_decref(ch.out[i].frame);
	json_decref(ch.names);
	json_decref(e);
	return r == CHAT_DONE ? 0 : 1;
}

int main(int argc, char **argv)
{
	int i = 1;

	if (argc > 2 && !strcmp(argv[1], "--server")) {
		char *colon = strrchr(argv[2], ':');
		if (!colon || colon == argv[2] || (size_t)(colon - argv[2]) >= sizeof host)
			return usage();
		memcpy(host, argv[2], (size_t)(colon - argv[2]));
		host[colon - argv[2]] = 0;
		port = atoi(colon + 1);
		i = 3;
	}
	if (argc - i == 3 && (!strcmp(argv[i], "register") || !strcmp(argv[i], "login")))
		return cmd_account(argv[i], argv[i + 1], argv[i + 2]);
	if (argc - i == 3 && !strcmp(argv[i], "open"))
		return cmd_open(argv[i + 1], argv[i + 2]);
	if (argc - i == 3 && !strcmp(argv[i], "chat"))
		return cmd_chat(argv[i + 1], argv[i + 2]);
	return usage();
}
