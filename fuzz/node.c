/* node.c - the in-process node and the invariants of node.h, shared by
 * fuzz_frames and fuzz_api.
 *
 * The harness talks to the node over one keep-alive connection of its own
 * (from 127.0.0.2), reopened when the node closes it; its requests are few
 * (a health check and a look at the bystander's conversation every few
 * inputs), so that checking costs a small part of an execution. */
#include "node.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "log.h"
#include "server.h"

#define HARNESS_TIMEOUT_MS 15000
/* Users in the crowd group besides alice, bob and carol. */
#define FUZZ_CROWD 297
#define HARNESS_ADDRESS "127.0.0.2"

fuzz_node_t fuzz_node;
int fuzz_verbose;

static server_t *srv;
static char data_dir[64];
static fuzz_node_t template_state;  /* fuzz_node as the template left it */
static const char *target = "fuzz";
static pc_conn_t *mon;              /* the harness's own connection */
static unsigned long restart_every;

static const char *const names[FZ_USERS] = {"alice", "bob", "carol"};
/* Not in any seed: the fuzzer may guess at these accounts' logins but
 * should not find them; its own sign-ups and logins use other names. */
static const char *const passwords[FZ_USERS] = {"alice-Zq8-harness", "bob-Zq8-harness",
                                                "carol-Zq8-harness"};

void fuzz_fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\n%s: INVARIANT FAILED: ", target);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	/* The store stays behind for a look at what the node held. */
	fprintf(stderr, "\n%s: the node's data directory is kept: %s\n", target, data_dir);
	abort();
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

pc_conn_t *fuzz_connect(void)
{
	pc_conn_t *c = pc_connect("127.0.0.1", fuzz_node.port);

	if (!c)
		fuzz_fail("cannot connect to the node on port %d: %s", fuzz_node.port, strerror(errno));
	return c;
}

/* One request on the harness's connection, reopened once if the node
 * closed it (idle timeout, or an answer that closed it). */
static void harness_http(const char *method, const char *path, const char *token,
                         const char *body, pc_response_t *res)
{
	int attempt, r = PC_ERROR;

	for (attempt = 0; attempt < 2; attempt++) {
		if (!mon && !(mon = pc_connect_from(HARNESS_ADDRESS, "127.0.0.1", fuzz_node.port)))
			fuzz_fail("the harness cannot connect to the node: %s", strerror(errno));
		if ((r = pc_http(mon, method, path, token, body, res, HARNESS_TIMEOUT_MS)) == 0) {
			char v[32];
			if (pc_response_header(res, "connection", v, sizeof v) > 0 && strcmp(v, "close") == 0) {
				pc_close(mon);
				mon = NULL;
			}
			return;
		}
		pc_close(mon);
		mon = NULL;
		if (r == PC_TIMEOUT)
			break;
	}
	fuzz_fail("the node did not answer the harness's %s %s (%s)", method, path,
	          r == PC_TIMEOUT ? "timeout" : "closed");
}

/* A JSON answer with the given status, parsed; fails otherwise. */
static json_t *harness_json(const char *method, const char *path, const char *token,
                            const char *body, int status)
{
	pc_response_t res;
	json_t *j;

	harness_http(method, path, token, body, &res);
	if (res.status != status)
		fuzz_fail("%s %s: status %d, expected %d: %s", method, path, res.status, status, res.body);
	if (!(j = json_loadb(res.body, res.body_len, 0, NULL)) || !json_is_object(j))
		fuzz_fail("%s %s: the answer is not a JSON object: %s", method, path, res.body);
	pc_response_free(&res);
	return j;
}

static int64_t int_field(json_t *j, const char *key, const char *what)
{
	json_t *v = json_object_get(j, key);

	if (!json_is_integer(v))
		fuzz_fail("%s: no integer \"%s\"", what, key);
	return json_integer_value(v);
}

static int login(int who)
{
	char body[160];
	pc_response_t res;
	json_t *j;
	const char *tok;

	snprintf(body, sizeof body,
	         "{\"username\":\"%s\",\"password\":\"%s\",\"device_name\":\"harness\"}",
	         names[who], passwords[who]);
	harness_http("POST", "/api/v1/sessions", NULL, body, &res);
	if (res.status != 201 || !(j = json_loadb(res.body, res.body_len, 0, NULL))) {
		fprintf(stderr, "%s: logging %s in again: %d %s\n", target, names[who], res.status, res.body);
		pc_response_free(&res);
		return -1;
	}
	pc_response_free(&res);
	tok = json_string_value(json_object_get(j, "token"));
	if (!tok || strlen(tok) >= sizeof fuzz_node.token[who])
		fuzz_fail("POST /api/v1/sessions: no token");
	strcpy(fuzz_node.token[who], tok);
	json_decref(j);
	return 0;
}

static int64_t create_conversation(int who, const char *body)
{
	json_t *j = harness_json("POST", "/api/v1/conversations", fuzz_node.token[who], body, 201);
	int64_t id = int_field(j, "conversation_id", "POST /api/v1/conversations");

	json_decref(j);
	return id;
}

/* Sends frames over a WebSocket of the user's, from the harness's
 * address, and waits for the acks of the sends among them: then they and
 * every receipt before the last of them are stored (the writer keeps
 * order). */
static void harness_frames(int who, const char *const *frames, size_t n)
{
	pc_conn_t *c = pc_connect_from(HARNESS_ADDRESS, "127.0.0.1", fuzz_node.port);
	size_t i, sends = 0, acks = 0;

	if (!c || pc_ws_open(c, "/chat/v1/ws", fuzz_node.token[who], NULL, HARNESS_TIMEOUT_MS) < 0)
		fuzz_fail("the harness cannot open %s's WebSocket", names[who]);
	for (i = 0; i < n; i++) {
		if (pc_ws_send_text(c, frames[i]) < 0)
			fuzz_fail("the harness cannot send as %s", names[who]);
		sends += strstr(frames[i], "\"type\":\"send\"") != NULL;
	}
	while (acks < sends) {
		pc_frame_t f;
		const char *type;
		json_t *j;

		if (pc_ws_recv(c, &f, HARNESS_TIMEOUT_MS) < 0)
			fuzz_fail("the harness's sends as %s got no ack", names[who]);
		if (f.opcode == 0x1) {
			j = fuzz_check_server_frame((const char *)f.data, f.len, "the harness's WebSocket");
			type = json_string_value(json_object_get(j, "type"));
			if (strcmp(type, "error") == 0)
				fuzz_fail("the harness's frames as %s were refused: %s", names[who], f.data);
			acks += strcmp(type, "ack") == 0;
			json_decref(j);
		}
		pc_frame_free(&f);
	}
	pc_close(c);
}

/* A few messages and receipts in each conversation, so that history,
 * receipts and resume have something to answer. The conversations are
 * 1 to 5 on every node, as node.h says; this checks it. */
static void converse(void)
{
	static const char *const alice[] = {
		"{\"type\":\"send\",\"conv\":1,\"cmid\":\"h-a1\",\"body\":\"hello bob\"}",
		"{\"type\":\"send\",\"conv\":1,\"cmid\":\"h-a2\",\"body\":\"are you there?\"}",
		"{\"type\":\"send\",\"conv\":2,\"cmid\":\"h-a3\",\"body\":\"hello all\"}",
	};
	static const char *const bob[] = {
		"{\"type\":\"receipt\",\"conv\":1,\"state\":\"read\",\"seq\":2}",
		"{\"type\":\"receipt\",\"conv\":2,\"state\":\"read\",\"seq\":1}",
		"{\"type\":\"send\",\"conv\":1,\"cmid\":\"h-b1\",\"body\":\"hi alice\"}",
		"{\"type\":\"send\",\"conv\":2,\"cmid\":\"h-b2\",\"body\":\"hi group\"}",
		"{\"type\":\"send\",\"conv\":3,\"cmid\":\"h-b3\",\"body\":\"hi carol\"}",
	};
	static const char *const carol[] = {
		"{\"type\":\"receipt\",\"conv\":2,\"state\":\"delivered\",\"seq\":2}",
		"{\"type\":\"receipt\",\"conv\":3,\"state\":\"read\",\"seq\":1}",
		"{\"type\":\"send\",\"conv\":3,\"cmid\":\"h-c1\",\"body\":\"hi bob\"}",
		"{\"type\":\"send\",\"conv\":2,\"cmid\":\"h-c2\",\"body\":\"hi from carol\"}",
		"{\"type\":\"send\",\"conv\":5,\"cmid\":\"h-c3\",\"body\":\"hi alice\"}",
	};
	static const char *const alice_crowd[] = {
		"{\"type\":\"send\",\"conv\":4,\"cmid\":\"h-a5\",\"body\":\"hello crowd\"}",
	};
	static const char *const bob_crowd[] = {
		"{\"type\":\"receipt\",\"conv\":4,\"state\":\"delivered\",\"seq\":1}",
		"{\"type\":\"receipt\",\"conv\":4,\"state\":\"read\",\"seq\":1}",
		"{\"type\":\"send\",\"conv\":4,\"cmid\":\"h-b4\",\"body\":\"hi crowd\"}",
	};
	static const char *const alice_reads[] = {
		"{\"type\":\"receipt\",\"conv\":1,\"state\":\"read\",\"seq\":3}",
		"{\"type\":\"receipt\",\"conv\":2,\"state\":\"delivered\",\"seq\":3}",
		"{\"type\":\"send\",\"conv\":1,\"cmid\":\"h-a4\",\"body\":\"there you are\"}",
	};

	if (fuzz_node.conv_ab != 1 || fuzz_node.conv_group != 2 || fuzz_node.conv_bc != 3 ||
	    fuzz_node.conv_crowd != 4 || fuzz_node.conv_ca != 5)
		fuzz_fail("the conversations are %lld, %lld, %lld, %lld, %lld, not 1 to 5 as the seeds expect",
		          (long long)fuzz_node.conv_ab, (long long)fuzz_node.conv_group,
		          (long long)fuzz_node.conv_bc, (long long)fuzz_node.conv_crowd,
		          (long long)fuzz_node.conv_ca);
	harness_frames(FZ_ALICE, alice, sizeof alice / sizeof alice[0]);
	harness_frames(FZ_BOB, bob, sizeof bob / sizeof bob[0]);
	harness_frames(FZ_CAROL, carol, sizeof carol / sizeof carol[0]);
	harness_frames(FZ_ALICE, alice_reads, sizeof alice_reads / sizeof alice_reads[0]);
	harness_frames(FZ_ALICE, alice_crowd, sizeof alice_crowd / sizeof alice_crowd[0]);
	harness_frames(FZ_BOB, bob_crowd, sizeof bob_crowd / sizeof bob_crowd[0]);
	fuzz_node.bc_sends = 2; /* bob's and carol's above */
}

/* FUZZ_CROWD more users (no logins) and a group of them with alice and
 * bob, alice its admin: more than 256 members, where receipts are
 * counted, not listed, and typing is dropped. The sign-ups go out in
 * batches, one write each, to spare round trips: the node answers them
 * in order.
 *
 * Carol makes the group and leaves it, and alice, the longest-standing
 * member with the lowest id, becomes its admin: had alice made it, its
 * 297 first contacts would use up her budget of strangers for the day on
 * every node started from the template. */
static void crowd(void)
{
	enum { BATCH = 32 };
	char *req = malloc(BATCH * 256), *members = malloc(FUZZ_CROWD * 8 + 64);
	size_t len, mlen;
	int i, k, r;

	if (!req || !members)
		fuzz_fail("out of memory");
	mlen = (size_t)sprintf(members, "{\"title\":\"crowd\",\"members\":[%lld,%lld",
	                       (long long)fuzz_node.user[FZ_ALICE], (long long)fuzz_node.user[FZ_BOB]);
	for (i = 0; i < FUZZ_CROWD; i += BATCH) {
		for (len = 0, k = i; k < i + BATCH && k < FUZZ_CROWD; k++) {
			char body[96];
			int n = snprintf(body, sizeof body,
			                 "{\"username\":\"crowd-%d\",\"password\":\"crowd-password\"}", k);
			len += (size_t)sprintf(req + len, "POST /api/v1/users HTTP/1.1\r\nHost: parley\r\n"
			                       "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			                       n, body);
		}
		if (!mon && !(mon = pc_connect_from(HARNESS_ADDRESS, "127.0.0.1", fuzz_node.port)))
			fuzz_fail("the harness cannot connect to the node: %s", strerror(errno));
		if (pc_send_raw(mon, req, len) < 0)
			fuzz_fail("the harness cannot sign the crowd up");
		for (k = i; k < i + BATCH && k < FUZZ_CROWD; k++) {
			pc_response_t res;
			json_t *j;
			if ((r = pc_read_response(mon, &res, HARNESS_TIMEOUT_MS)) < 0 || res.status != 201 ||
			    !(j = json_loadb(res.body, res.body_len, 0, NULL)))
				fuzz_fail("signing crowd-%d up: %d %s", k, r < 0 ? r : res.status, r < 0 ? "" : res.body);
			mlen += (size_t)sprintf(members + mlen, ",%lld",
			                        (long long)int_field(j, "user_id", "POST /api/v1/users"));
			json_decref(j);
			pc_response_free(&res);
		}
	}
	strcpy(members + mlen, "]}");
	fuzz_node.conv_crowd = create_conversation(FZ_CAROL, members);
	{
		char path[96];
		pc_response_t res;
		json_t *j;

		snprintf(path, sizeof path, "/api/v1/conversations/%lld/members/%lld",
		         (long long)fuzz_node.conv_crowd, (long long)fuzz_node.user[FZ_CAROL]);
		harness_http("DELETE", path, fuzz_node.token[FZ_CAROL], NULL, &res);
		if (res.status != 204)
			fuzz_fail("DELETE %s: %d %s", path, res.status, res.body);
		pc_response_free(&res);
		snprintf(path, sizeof path, "/api/v1/conversations/%lld", (long long)fuzz_node.conv_crowd);
		j = harness_json("GET", path, fuzz_node.token[FZ_ALICE], NULL, 200);
		if (json_integer_value(json_array_get(json_object_get(j, "admins"), 0)) !=
		    fuzz_node.user[FZ_ALICE])
			fuzz_fail("alice is not the crowd's admin");
		json_decref(j);
	}
	free(req);
	free(members);
}

/* The accounts and conversations every input may use. */
static void populate(void)
{
	char body[160];
	int i;

	for (i = 0; i < FZ_USERS; i++) {
		json_t *j;
		snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"%s\"}", names[i], passwords[i]);
		j = harness_json("POST", "/api/v1/users", NULL, body, 201);
		fuzz_node.user[i] = int_field(j, "user_id", "POST /api/v1/users");
		json_decref(j);
		if (fuzz_node.user[i] != i + 1)
			fuzz_fail("%s is user %lld, not %d as the seeds expect", names[i],
			          (long long)fuzz_node.user[i], i + 1);
		if (login(i) < 0)
			fuzz_fail("cannot log %s in", names[i]);
	}
	snprintf(body, sizeof body, "{\"members\":[%lld]}", (long long)fuzz_node.user[FZ_BOB]);
	fuzz_node.conv_ab = create_conversation(FZ_ALICE, body);
	snprintf(body, sizeof body, "{\"members\":[%lld,%lld],\"title\":\"fuzz group\"}",
	         (long long)fuzz_node.user[FZ_BOB], (long long)fuzz_node.user[FZ_CAROL]);
	fuzz_node.conv_group = create_conversation(FZ_ALICE, body);
	snprintf(body, sizeof body, "{\"members\":[%lld]}", (long long)fuzz_node.user[FZ_CAROL]);
	fuzz_node.conv_bc = create_conversation(FZ_BOB, body);
	crowd();
	/* Carol writes to alice (below): adding carol then costs alice no
	 * first contact, so groups of bob and carol stay free to make. */
	snprintf(body, sizeof body, "{\"members\":[%lld]}", (long long)fuzz_node.user[FZ_ALICE]);
	fuzz_node.conv_ca = create_conversation(FZ_CAROL, body);
	fuzz_node.bc_checked_seq = 0;
	fuzz_node.bc_sends = 0;
	converse();
}

static void new_dir(char dir[64])
{
	snprintf(dir, 64, "/tmp/parley-%s-XXXXXX", target);
	if (!mkdtemp(dir))
		fuzz_fail("mkdtemp: %s", strerror(errno));
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void remove_dir(const char *dir)
{
	if (nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS) < 0)
		fprintf(stderr, "%s: cannot remove %s: %s\n", target, dir, strerror(errno));
}

/* The template: the files of the populated node's data directory, held
 * in memory, so that nothing of it stays behind on disk when a failed
 * invariant ends the process without its exit handlers. */
typedef struct stored_file {
	char name[64];
	unsigned char *data;
	size_t len;
} stored_file_t;

static stored_file_t template_files[16];
static size_t ntemplate_files;

/* Reads the files of a stopped node's data directory into the template. */
static void keep_template(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[160];

	if (!d)
		fuzz_fail("opendir %s: %s", dir, strerror(errno));
	while ((e = readdir(d)) != NULL) {
		stored_file_t *f = &template_files[ntemplate_files];
		FILE *in;
		long n;

		if (e->d_type != DT_REG)
			continue;
		if (ntemplate_files == sizeof template_files / sizeof template_files[0] ||
		    strlen(e->d_name) >= sizeof f->name)
			fuzz_fail("%s holds files the template has no room for", dir);
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		if (!(in = fopen(path, "rb")) || fseek(in, 0, SEEK_END) < 0 || (n = ftell(in)) < 0 ||
		    fseek(in, 0, SEEK_SET) < 0 || !(f->data = malloc((size_t)n + 1)) ||
		    fread(f->data, 1, (size_t)n, in) != (size_t)n)
			fuzz_fail("cannot read %s: %s", path, strerror(errno));
		fclose(in);
		strcpy(f->name, e->d_name);
		f->len = (size_t)n;
		ntemplate_files++;
	}
	closedir(d);
}

/* Writes the template's files into dir. */
static void restore_template(const char *dir)
{
	char path[160];
	size_t i;

	for (i = 0; i < ntemplate_files; i++) {
		FILE *out;
		snprintf(path, sizeof path, "%s/%s", dir, template_files[i].name);
		if (!(out = fopen(path, "wb")) ||
		    fwrite(template_files[i].data, 1, template_files[i].len, out) != template_files[i].len ||
		    fclose(out) != 0)
			fuzz_fail("cannot write %s: %s", path, strerror(errno));
	}
}

/* Starts a node on data_dir; populating: for the template. */
static void start_node(int populating)
{
	server_config_t cfg;

	server_config_defaults(&cfg);
	snprintf(cfg.host, sizeof cfg.host, "127.0.0.1");
	cfg.port = 0;
	snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", data_dir);
	cfg.threads = 1;
	cfg.fast_password_hashing = 1;
	cfg.web_dir[0] = 0;
	/* Budgets that a fuzzer, one client sending thousands of inputs a
	 * second from one address, would exhaust within seconds, after which
	 * it would only ever see 429: off, so the handlers behind them run.
	 * (Their own tests cover them.) The per-connection bound on sends
	 * awaiting their ack stays, small enough for one input to reach. */
	cfg.signup_rate = 0;
	cfg.login_rate = 0;
	cfg.rate_limit = 0;
	cfg.work_rate = 0;
	cfg.read_rate = 0;
	cfg.storage_per_day = 0;
	cfg.max_sends_in_flight = 16;
	/* The first-contact budget stays: an input reaches it with a few
	 * groups of the crowd, and whatever the node holds, alice's contacts
	 * (bob, whom she wrote to) cost nothing. The crowd itself is 297
	 * first contacts at once. */
	if (populating)
		cfg.strangers_per_day = 0;
	if (!(srv = server_start(&cfg)))
		fuzz_fail("server_start failed (data directory %s)", data_dir);
	fuzz_node.port = server_port(srv);
}

static void stop_node(void)
{
	pc_close(mon);
	mon = NULL;
	server_stop(srv);
	srv = NULL;
}

/* The first node is populated through the API, which takes a second or
 * more (every sign-up is a commit, and the crowd is 297 of them); then
 * stopped, and its store kept as the template every later node starts
 * from, in a copy: a restart costs tens of milliseconds, and every node
 * starts in the same state, tokens included. */
static void first_start(void)
{
	new_dir(data_dir);
	start_node(1);
	populate();
	stop_node();
	keep_template(data_dir);
	template_state = fuzz_node;
	start_node(0);
}

/* At exit: the checks once more (a short replay may never have reached
 * the periodic ones), then an orderly stop, so LeakSanitizer's exit check
 * sees only what the node itself failed to free. */
static void at_exit(void)
{
	if (!srv)
		return;
	fuzz_check_health();
	fuzz_check_bystander();
	stop_node();
	remove_dir(data_dir);
	while (ntemplate_files)
		free(template_files[--ntemplate_files].data);
}

/* argv with -detect_leaks=0 added, unless it has a -detect_leaks. */
static void no_leak_check_per_input(int *argc, char ***argv)
{
	static char flag[] = "-detect_leaks=0";
	char **args;
	int i;

	for (i = 1; i < *argc; i++)
		if (strncmp((*argv)[i], "-detect_leaks=", 14) == 0)
			return;
	/* libFuzzer keeps using argv: it is never freed. */
	if (!(args = calloc((size_t)*argc + 2, sizeof *args)))
		return;
	memcpy(args, *argv, (size_t)*argc * sizeof *args);
	args[(*argc)++] = flag;
	*argv = args;
}

void fuzz_node_init(const char *name, unsigned long every_inputs, int *argc, char ***argv)
{
	const char *every = getenv("PARLEY_FUZZ_RESTART"), *verbose = getenv("PARLEY_FUZZ_VERBOSE");

	target = name;
	restart_every = every_inputs;
	no_leak_check_per_input(argc, argv);
	fuzz_verbose = verbose && *verbose && strcmp(verbose, "0") != 0;
	/* OpenSSL loads its configuration on first use, keeping what that
	 * step allocates in the using thread's state: done here, on the main
	 * thread, it is not lost when a node's I/O thread exits (which
	 * LeakSanitizer would report as the node's leak). */
	OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
	if (every && atol(every) > 0)
		restart_every = (unsigned long)atol(every);
	/* Connections come and go thousands of times a second. */
	log_level = LOG_WARN;
	first_start();
	atexit(at_exit);
}

void fuzz_node_restart(void)
{
	int64_t t0 = now_ms();
	unsigned long inputs = fuzz_node.inputs;

	unsigned long restarts = fuzz_node.restarts + 1;

	fuzz_check_health();
	fuzz_check_bystander();
	stop_node();
	remove_dir(data_dir);
	new_dir(data_dir);
	restore_template(data_dir);
	fuzz_node = template_state;
	fuzz_node.restarts = restarts;
	start_node(0);
	fprintf(stderr, "%s: node restarted after %lu inputs, in %lld ms (data in %s)\n", target,
	        inputs, (long long)(now_ms() - t0), data_dir);
}

void fuzz_node_next_input(void)
{
	if (fuzz_node.inputs >= restart_every)
		fuzz_node_restart();
	fuzz_node.inputs++;
}

void fuzz_check_health(void)
{
	pc_response_t res;

	harness_http("GET", "/healthz", NULL, NULL, &res);
	if (res.status != 200 || strcmp(res.body, "{\"status\":\"ok\"}") != 0)
		fuzz_fail("GET /healthz: %d %s", res.status, res.body);
	pc_response_free(&res);
}

static const struct {
	const char *code;
	int statuses[6];
} known_codes[] = {
	{"bad_request", {400, 405, 408, 411, 415, 426}},
	{"unauthorized", {401}},
	{"forbidden", {403}},
	{"not_found", {404}},
	{"conflict", {409}},
	{"too_large", {413, 414, 431}},
	{"rate_limited", {429}},
	{"unavailable", {503}},
	{"internal", {500}},
};

/* Index in known_codes, or -1. */
static int code_index(const char *code)
{
	size_t i;

	for (i = 0; code && i < sizeof known_codes / sizeof known_codes[0]; i++)
		if (strcmp(code, known_codes[i].code) == 0)
			return (int)i;
	return -1;
}

int fuzz_error_code_known(const char *code)
{
	return code_index(code) >= 0;
}

void fuzz_check_response(const pc_response_t *res, const char *what)
{
	static const int statuses[] = {200, 201, 204, 400, 401, 403, 404, 405, 408, 409,
	                               411, 413, 414, 415, 426, 429, 431, 500, 503};
	size_t i;
	json_t *j, *e;
	int k;

	for (i = 0; i < sizeof statuses / sizeof statuses[0] && statuses[i] != res->status; i++)
		;
	if (i == sizeof statuses / sizeof statuses[0])
		fuzz_fail("%s: status %d is not in the protocol", what, res->status);
	if (res->status == 204) {
		if (res->body_len)
			fuzz_fail("%s: 204 with a body: %s", what, res->body);
		return;
	}
	j = json_loadb(res->body, res->body_len, 0, NULL);
	if (!json_is_object(j))
		fuzz_fail("%s: status %d, the body is not a JSON object: %.300s", what, res->status,
		          res->body);
	if (res->status >= 400) {
		const char *code;
		e = json_object_get(j, "error");
		code = json_string_value(json_object_get(e, "code"));
		if (!json_is_object(e) || !code || !json_is_string(json_object_get(e, "message")))
			fuzz_fail("%s: status %d without {\"error\":{\"code\",\"message\"}}: %.300s", what,
			          res->status, res->body);
		if ((k = code_index(code)) < 0)
			fuzz_fail("%s: unknown error code \"%s\"", what, code);
		for (i = 0; i < 6 && known_codes[k].statuses[i] != res->status; i++)
			;
		if (i == 6)
			fuzz_fail("%s: status %d with code \"%s\"", what, res->status, code);
		if (res->status == 500)
			fuzz_fail("%s: 500 internal: %.300s", what, res->body);
	}
	json_decref(j);
}

json_t *fuzz_check_server_frame(const char *text, size_t len, const char *what)
{
	json_t *j = json_loadb(text, len, 0, NULL);
	const char *type = json_string_value(json_object_get(j, "type"));

	if (!json_is_object(j) || !type)
		fuzz_fail("%s: a server frame that is not a typed JSON object: %.300s", what, text);
	if (strcmp(type, "error") == 0) {
		const char *code = json_string_value(json_object_get(j, "code"));
		const char *message = json_string_value(json_object_get(j, "message"));
		if (!code || !fuzz_error_code_known(code) || !message)
			fuzz_fail("%s: an error frame without a known code and a message: %.300s", what, text);
		/* The store failing on what a client sent is a bug, whatever
		 * the client sent; so is an internal error. */
		if (strcmp(code, "internal") == 0 || strstr(message, "could not be stored") ||
		    strstr(message, "resume failed"))
			fuzz_fail("%s: %.300s", what, text);
	}
	return j;
}

/* Checks the messages of bob-carol with seq in (from, upto]: all from
 * bob or carol, ascending without gaps. */
static void check_bc_page(int64_t from, int64_t upto)
{
	char path[128];
	int64_t before = upto + 1, expect;

	while (before - 1 > from) {
		json_t *j, *msgs, *m;
		size_t i, n;
		int64_t first;

		snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?before=%lld&limit=200",
		         (long long)fuzz_node.conv_bc, (long long)before);
		j = harness_json("GET", path, fuzz_node.token[FZ_BOB], NULL, 200);
		msgs = json_object_get(j, "messages");
		if (!json_is_array(msgs) || (n = json_array_size(msgs)) == 0)
			fuzz_fail("GET %s: no messages below seq %lld", path, (long long)before);
		first = int_field(json_array_get(msgs, 0), "seq", path);
		expect = first;
		json_array_foreach(msgs, i, m) {
			int64_t seq = int_field(m, "seq", path), from_user = int_field(m, "from", path);
			if (seq != expect++)
				fuzz_fail("GET %s: seq %lld where %lld was due", path, (long long)seq,
				          (long long)expect - 1);
			if (seq > from && from_user != fuzz_node.user[FZ_BOB] &&
			    from_user != fuzz_node.user[FZ_CAROL])
				fuzz_fail("the bystander's conversation holds message %lld from user %lld", (long long)seq,
				          (long long)from_user);
		}
		if (expect != before)
			fuzz_fail("GET %s: the page ends at %lld", path, (long long)expect - 1);
		before = first;
		json_decref(j);
	}
}

void fuzz_check_bystander(void)
{
	char path[96];
	json_t *j;
	int64_t last;

	snprintf(path, sizeof path, "/api/v1/conversations/%lld", (long long)fuzz_node.conv_bc);
	j = harness_json("GET", path, fuzz_node.token[FZ_BOB], NULL, 200);
	last = int_field(j, "last_seq", path);
	json_decref(j);
	if (last > fuzz_node.bc_sends)
		fuzz_fail("the bystander's conversation holds %lld messages; bob and carol sent at most %ld",
		          (long long)last, fuzz_node.bc_sends);
	if (last > fuzz_node.bc_checked_seq) {
		check_bc_page(fuzz_node.bc_checked_seq, last);
		fuzz_node.bc_checked_seq = last;
	} else if (last < fuzz_node.bc_checked_seq) {
		fuzz_fail("the bystander's conversation went back from seq %lld to %lld",
		          (long long)fuzz_node.bc_checked_seq, (long long)last);
	}
}

void fuzz_ticket(int who, char *out, size_t cap)
{
	json_t *j = harness_json("POST", "/api/v1/ws-tickets", fuzz_node.token[who], NULL, 201);
	const char *t = json_string_value(json_object_get(j, "ticket"));

	if (!t || strlen(t) >= cap)
		fuzz_fail("POST /api/v1/ws-tickets: no ticket");
	strcpy(out, t);
	json_decref(j);
}

void fuzz_refresh_token(int who)
{
	pc_response_t res;

	harness_http("GET", "/api/v1/conversations", fuzz_node.token[who], NULL, &res);
	if (res.status == 200) {
		pc_response_free(&res);
		return;
	}
	if (res.status != 401)
		fuzz_fail("GET /api/v1/conversations as %s: %d %s", names[who], res.status, res.body);
	pc_response_free(&res);
	if (login(who) < 0)
		fuzz_node_restart();
}
