/* cli.c - parley-cli, a terminal client on the client library.
 *
 *   parley-cli [--server HOST:PORT] register USER PASSWORD
 *   parley-cli [--server HOST:PORT] login USER PASSWORD      (prints a token)
 *   parley-cli [--server HOST:PORT] open TOKEN USERNAME      (direct chat id)
 *   parley-cli [--server HOST:PORT] chat TOKEN CONV
 *
 * chat replays the conversation's recent messages, then sends each line
 * typed as a message and prints what arrives: messages, the ticks of one's
 * own messages (sent, delivered, read) and errors. What it shows it marks
 * read. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* One request; prints the error and returns NULL unless status is 2xx. */
static json_t *request(const char *method, const char *path, const char *token, json_t *body)
{
	pc_conn_t *c = pc_connect(host, port);
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	pc_response_t res;
	json_t *j = NULL;

	if (!c) {
		fprintf(stderr, "parley-cli: cannot connect to %s:%d\n", host, port);
		free(text);
		return NULL;
	}
	if (pc_http(c, method, path, token, text, &res, TIMEOUT) < 0) {
		fprintf(stderr, "parley-cli: no answer from %s:%d\n", host, port);
	} else {
		j = json_loadb(res.body, res.body_len, 0, NULL);
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

static int cmd_chat(const char *token, const char *conv_s)
{
	long long conv = atoll(conv_s), me = 0, shown = 0;
	pc_conn_t *c = pc_connect(host, port);
	pc_response_t res;
	char line[16384 + 2];
	unsigned long counter = 0;
	int open_stdin = 1;

	if (!c || pc_ws_open(c, "/chat/v1/ws", token, &res, TIMEOUT) < 0) {
		fprintf(stderr, "parley-cli: cannot open the chat connection%s%s\n", c ? ": " : "",
		        c && res.body ? res.body : "");
		pc_close(c);
		return 1;
	}
	snprintf(line, sizeof line, "{\"type\":\"resume\",\"convs\":{\"%lld\":0}}", conv);
	pc_ws_send_text(c, line);
	for (;;) {
		struct pollfd p[2] = {{pc_fd(c), POLLIN, 0}, {0, POLLIN, 0}};
		pc_frame_t f;
		int r;

		/* Frames already buffered first; then wait for either side. */
		while ((r = pc_ws_recv(c, &f, 0)) == 0) {
			json_t *j;
			const char *t;

			if (f.opcode == 0x9) {
				pc_ws_send_frame(c, 1, 0xA, f.data, f.len, 1, 0);
			} else if (f.opcode == 0x8) {
				printf("-- closed by the server (%d)\n", f.len >= 2 ? (f.data[0] << 8) | f.data[1] : 1005);
				pc_frame_free(&f);
				pc_close(c);
				return 0;
			} else if ((j = json_loadb((char *)f.data, f.len, 0, NULL)) != NULL) {
				t = json_string_value(json_object_get(j, "type"));
				if (t && !strcmp(t, "ready")) {
					me = json_integer_value(json_object_get(j, "user_id"));
				} else if (t && !strcmp(t, "msg") &&
				           json_integer_value(json_object_get(j, "conv")) == conv) {
					long long seq = json_integer_value(json_object_get(j, "seq"));
					long long from = json_integer_value(json_object_get(j, "from"));
					print_time(json_integer_value(json_object_get(j, "ts")));
					printf("[%lld] %s: %s\n", seq, from == me ? "me" : "them",
					       json_string_value(json_object_get(j, "body")));
					if (seq > shown)
						shown = seq;
					/* Received, then shown: both ticks at once. */
					snprintf(line, sizeof line,
					         "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"delivered\",\"seq\":%lld}",
					         conv, shown);
					pc_ws_send_text(c, line);
					snprintf(line, sizeof line,
					         "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":%lld}", conv,
					         shown);
					pc_ws_send_text(c, line);
				} else if (t && !strcmp(t, "ack")) {
					printf("   [%lld] sent\n", (long long)json_integer_value(json_object_get(j, "seq")));
				} else if (t && !strcmp(t, "receipt") &&
				           json_integer_value(json_object_get(j, "user")) != me) {
					printf("   up to [%lld] %s\n", (long long)json_integer_value(json_object_get(j, "seq")),
					       json_string_value(json_object_get(j, "state")));
				} else if (t && !strcmp(t, "error")) {
					printf("-- error: %s: %s\n", json_string_value(json_object_get(j, "code")),
					       json_string_value(json_object_get(j, "message")));
				}
				json_decref(j);
			}
			pc_frame_free(&f);
		}
		fflush(stdout);
		if (r != PC_TIMEOUT) {
			fprintf(stderr, "parley-cli: connection lost\n");
			pc_close(c);
			return 1;
		}
		if (poll(p, open_stdin ? 2 : 1, -1) < 0 && errno != EINTR)
			break;
		if (open_stdin && (p[1].revents & (POLLIN | POLLHUP))) {
			json_t *frame;
			char *text;
			size_t n;

			if (!fgets(line, sizeof line, stdin)) {
				open_stdin = 0; /* keep receiving until the server closes */
				continue;
			}
			n = strlen(line);
			if (n && line[n - 1] == '\n')
				line[--n] = 0;
			if (!n)
				continue;
			frame = json_pack("{s:s, s:I, s:s, s:s}", "type", "send", "conv", (json_int_t)conv,
			                  "cmid", "", "body", line);
			{
				char cmid[48];
				snprintf(cmid, sizeof cmid, "cli-%ld-%lu", (long)getpid(), ++counter);
				json_object_set_new(frame, "cmid", json_string(cmid));
			}
			text = json_dumps(frame, JSON_COMPACT);
			pc_ws_send_text(c, text);
			free(text);
			json_decref(frame);
		}
	}
	pc_close(c);
	return 1;
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
