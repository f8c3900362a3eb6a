/* integ_cli.c - parley-cli's chat mode against the real server, as a
 * person uses it in a terminal (its input and output through pipes): it
 * says it is connected, names each sender in a group, shows a group's
 * read counts for its own message, reconnects by itself when the server
 * restarts and shows what came meanwhile, quits at the end of its input
 * (Ctrl-D) with exit 0, shows on its next run only what it had not shown
 * (its cursor on disk), says who was added, quits with exit 1 when its
 * user is removed, and refuses a conversation its user is not in with a
 * clear message and exit 1. */
#include "harness.h"

#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static hx_server_t S;
static char state_dir[] = "/tmp/parley-cli-state-XXXXXX";

typedef struct cli {
	pid_t pid;
	int in, out;            /* its stdin (ours to write), its stdout and stderr */
	char buf[16384];
	size_t len;
} cli_t;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* parley-cli beside the parley the tests run (build/ or build/asan/). */
static void cli_start(cli_t *c, const hx_user_t *u, int64_t conv)
{
	char bin[512], server[32], convs[24], self[512];
	int in[2], out[2];

	snprintf(self, sizeof self, "%s", getenv("PARLEY_BIN") ? getenv("PARLEY_BIN") : "build/parley");
	snprintf(bin, sizeof bin, "%s/parley-cli", dirname(self));
	snprintf(server, sizeof server, "127.0.0.1:%d", S.port);
	snprintf(convs, sizeof convs, "%lld", (long long)conv);
	memset(c, 0, sizeof *c);
	/* Close-on-exec: a server the test starts later must not hold the
	 * client's input open (its end would never come). */
	assert_int_equal(pipe2(in, O_CLOEXEC), 0);
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	c->pid = fork();
	assert_true(c->pid >= 0);
	if (c->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(out[1], 2);
		close(in[1]);
		close(out[0]);
		setenv("PARLEY_CLI_STATE", state_dir, 1);
		execl(bin, bin, "--server", server, "chat", u->token, convs, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	c->in = in[1];
	c->out = out[0];
}

/* Waits until the output holds needle; fails with what it holds. */
static void cli_expect(cli_t *c, const char *needle)
{
	int64_t until = now_ms() + HX_TIMEOUT;

	while (!memmem(c->buf, c->len, needle, strlen(needle))) {
		struct pollfd p = {c->out, POLLIN, 0};
		ssize_t n;
		int left = (int)(until - now_ms());

		if (left <= 0 || poll(&p, 1, left) <= 0)
			fail_msg("parley-cli never said \"%s\"; it said:\n%.*s", needle, (int)c->len, c->buf);
		n = read(c->out, c->buf + c->len, sizeof c->buf - 1 - c->len);
		if (n <= 0)
			fail_msg("parley-cli ended without \"%s\"; it said:\n%.*s", needle, (int)c->len, c->buf);
		c->len += (size_t)n;
		c->buf[c->len] = 0;
	}
}

static void cli_type(cli_t *c, const char *line)
{
	assert_int_equal(write(c->in, line, strlen(line)), (ssize_t)strlen(line));
}

/* Closes its input (Ctrl-D) and returns its exit status, reading what it
 * says until then. */
static int cli_end(cli_t *c)
{
	int64_t until = now_ms() + HX_TIMEOUT;
	int st;

	if (c->in >= 0)
		close(c->in);
	c->in = -1;
	for (;;) {
		struct pollfd p = {c->out, POLLIN, 0};
		ssize_t n;

		if (poll(&p, 1, (int)(until - now_ms())) <= 0) {
			kill(c->pid, SIGKILL);
			waitpid(c->pid, &st, 0);
			fail_msg("parley-cli did not quit at the end of its input (%zu bytes); it said:\n%s", c->len, c->buf);
		}
		n = read(c->out, c->buf + c->len, sizeof c->buf - 1 - c->len);
		if (n <= 0)
			break;
		c->len += (size_t)n;
		c->buf[c->len] = 0;
	}
	close(c->out);
	assert_int_equal(waitpid(c->pid, &st, 0), c->pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_chat_mode(void **state)
{
	hx_user_t alice, bob, carol, dave, eve;
	char body[160], line[160], store[256], listen[32];
	pc_conn_t *a, *b;
	cli_t c;
	int64_t g;
	json_t *j;
	int st, tries;

	(void)state;
	assert_non_null(mkdtemp(state_dir));
	HX_START(&S, "--fast-password-hashing");
	hx_user(S.port, "cl_alice", &alice);
	hx_user(S.port, "cl_bob", &bob);
	hx_user(S.port, "cl_carol", &carol);
	hx_user(S.port, "cl_dave", &dave);
	hx_user(S.port, "cl_eve", &eve);
	snprintf(body, sizeof body, "{\"title\":\"trip\",\"members\":[%lld,%lld]}", (long long)bob.id,
	         (long long)carol.id);
	j = hx_http(S.port, "POST", "/api/v1/conversations", alice.token, body, &st);
	assert_int_equal(st, 201);
	g = hx_int(j, "conversation_id");
	json_decref(j);

	/* Connected; each sender by name; its own line acked, then counted. */
	cli_start(&c, &carol, g);
	snprintf(line, sizeof line, "-- connected to 127.0.0.1:%d as %s: group \"trip\", 3 members", S.port, carol.name);
	cli_expect(&c, line);
	a = hx_ws(S.port, &alice);
	hx_say(a, g, "hello group");
	snprintf(line, sizeof line, "[1] %s: hello group", alice.name);
	cli_expect(&c, line);
	/* What it showed it marks read (one receipt for the batch). */
	snprintf(line, sizeof line, "/api/v1/conversations/%lld/messages/1/receipts", (long long)g);
	for (tries = 0; tries < 100; tries++) {
		json_t *rs, *x;
		size_t k;
		int read = 0;
		j = hx_http(S.port, "GET", line, alice.token, NULL, &st);
		rs = json_object_get(j, "receipts");
		json_array_foreach(rs, k, x) read |= hx_int(x, "user_id") == carol.id &&
		                                  json_is_integer(json_object_get(x, "read_at"));
		json_decref(j);
		if (read)
			break;
		usleep(50000);
	}
	assert_true(tries < 100);
	cli_type(&c, "hi all\n");
	cli_expect(&c, "   [2] sent");
	b = hx_ws(S.port, &bob);
	hx_sendf(b, "{\"type\":\"receipt\",\"conv\":%lld,\"state\":\"read\",\"seq\":2}", (long long)g);
	cli_expect(&c, "read by 1 of 2");
	pc_close(b);
	pc_close(a);

	/* The server restarts on its port and store: the client comes back
	 * by itself and shows what was said meanwhile. */
	snprintf(store, sizeof store, "%s", S.store);
	snprintf(listen, sizeof listen, "127.0.0.1:%d", S.port);
	assert_int_equal(hx_stop(&S, SIGTERM), 0);
	cli_expect(&c, "-- reconnecting in");
	assert_int_equal(hx_start(&S, store, (const char *const[]){"--fast-password-hashing", "--listen", listen, NULL}),
	                 0);
	S.own_store = 1;
	a = hx_ws(S.port, &alice);
	hx_say(a, g, "after the restart");
	snprintf(line, sizeof line, "[3] %s: after the restart", alice.name);
	cli_expect(&c, line);
	/* Ctrl-D: it quits, 0. */
	assert_int_equal(cli_end(&c), 0);

	/* Its next run shows only what came since. */
	hx_say(a, g, "while you were away");
	cli_start(&c, &carol, g);
	snprintf(line, sizeof line, "[4] %s: while you were away", alice.name);
	cli_expect(&c, line);
	assert_null(strstr(c.buf, "hello group"));
	assert_null(strstr(c.buf, "after the restart"));

	/* Replies, edits, reactions and deletes, typed and seen. */
	cli_type(&c, "/reply 4 got it\n");
	cli_expect(&c, "   [5] sent");
	cli_type(&c, "/edit 5 got it, thanks\n");
	cli_expect(&c, "   [6] sent");
	hx_sendf(a, "{\"type\":\"react\",\"conv\":%lld,\"cmid\":\"cli-r\",\"seq\":5,\"emoji\":\"\\u2705\"}", (long long)g);
	snprintf(line, sizeof line, "[7] %s reacted \xe2\x9c\x85 to [5]", alice.name);
	cli_expect(&c, line);
	hx_sendf(a, "{\"type\":\"delete\",\"conv\":%lld,\"cmid\":\"cli-d\",\"seq\":4}", (long long)g);
	snprintf(line, sizeof line, "[8] %s deleted [4]", alice.name);
	cli_expect(&c, line);
	cli_type(&c, "/edit nope\n");
	cli_expect(&c, "-- /edit SEQ TEXT, /delete SEQ");
	cli_type(&c, "/delete 1\n");
	cli_expect(&c, "-- not sent: forbidden: only its author or a group's admin may delete a message");
	pc_close(a);

	/* Membership changes are said; removed, it says so and quits, 1. */
	snprintf(body, sizeof body, "{\"user_id\":%lld}", (long long)dave.id);
	snprintf(line, sizeof line, "/api/v1/conversations/%lld/members", (long long)g);
	json_decref(hx_http(S.port, "POST", line, alice.token, body, &st));
	assert_int_equal(st, 204);
	snprintf(line, sizeof line, "-- %s was added by %s", dave.name, alice.name);
	cli_expect(&c, line);
	snprintf(line, sizeof line, "/api/v1/conversations/%lld/members/%lld", (long long)g, (long long)carol.id);
	json_decref(hx_http(S.port, "DELETE", line, alice.token, NULL, &st));
	assert_int_equal(st, 204);
	cli_expect(&c, "you are no longer a member of conversation");
	assert_int_equal(cli_end(&c), 1);

	/* Not a member: said plainly, exit 1. */
	cli_start(&c, &eve, g);
	cli_expect(&c, "you are not a member of it");
	assert_int_equal(cli_end(&c), 1);

	hx_finish(&S);
	snprintf(body, sizeof body, "rm -rf %s", state_dir);
	assert_int_equal(system(body), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chat_mode),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
