/* main.c - the parley command line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "server.h"
#include "snowflake.h"

#define PARLEY_VERSION "0.1.0"

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: parley serve [options]\n"
	        "       parley --version\n"
	        "\n"
	        "Runs a Parley chat server node.\n"
	        "\n"
	        "options:\n"
	        "  --listen HOST:PORT   address to listen on (default 127.0.0.1:8080;\n"
	        "                       port 0 picks a free port, printed when ready)\n"
	        "  --data DIR           data directory, created if missing (default ./parley-data)\n"
	        "  --web DIR            the web client's files, served at / (default ./web, or\n"
	        "                       the web/ beside the binary's folder;\n"
	        "                       \"\" serves the API only)\n"
	        "  --threads N          I/O threads (default: one per core)\n"
	        "  --node-id N          node id 0-1023 for message ids (default 0)\n"
	        "  --log-level LEVEL    debug, info, warn or error (default info)\n"
	        "  --ping-interval S    seconds between the server's WebSocket pings (default 30)\n"
	        "  --idle-timeout S     close a WebSocket silent this long (default 75)\n"
	        "  --out-limit BYTES    outbound bytes queued for one client before it is\n"
	        "                       dropped as too slow (default 1048576)\n"
	        "  --rate-limit N       recipients a sender's messages may reach per second,\n"
	        "                       a direct message costing 1, a group post its members\n"
	        "                       but one (default 200; 0: no limit)\n"
	        "  --rate-burst N       ... and at once (default 5000)\n"
	        "  --commit-delay US    wait up to US microseconds (0-10000) for more messages\n"
	        "                       before committing a small batch: less CPU per message\n"
	        "                       at moderate load, up to US more per ack (default 0)\n"
	        "  --max-devices N      logins (devices) kept per user; a new one past this\n"
	        "                       logs out the oldest (default 32; 0: no limit)\n"
	        "  --max-user-connections N\n"
	        "                       WebSockets one user may hold at once, all devices\n"
	        "                       together (default 64; 0: no limit)\n"
	        "  --presence-grace MS  a user is shown offline only after its last connection\n"
	        "                       has been closed this long (default 5000)\n"
	        "  --fast-password-hashing\n"
	        "                       hash new passwords at Argon2id's minimum cost, so that\n"
	        "                       tests and benchmarks can register thousands of users;\n"
	        "                       never for real accounts\n"
	        "  -h, --help           show this help\n");
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int parse_listen(const char *s, server_config_t *cfg)
{
	const char *colon;
	size_t hlen;
	long port;

	if (s[0] == '[') { /* [v6]:port */
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -1;
		hlen = (size_t)(close - s - 1);
		if (hlen == 0 || hlen >= sizeof cfg->host)
			return -1;
		memcpy(cfg->host, s + 1, hlen);
		cfg->host[hlen] = 0;
		colon = close + 1;
	} else {
		if (!(colon = strrchr(s, ':')))
			return -1;
		hlen = (size_t)(colon - s);
		if (hlen == 0 || hlen >= sizeof cfg->host)
			return -1;
		memcpy(cfg->host, s, hlen);
		cfg->host[hlen] = 0;
	}
	if (parse_int(colon + 1, 0, 65535, &port) < 0)
		return -1;
	cfg->port = (int)port;
	return 0;
}

/* Without --web: ./web when it exists (make run), else the web/ beside the
 * folder of the binary (build/parley run from anywhere). */
static void default_web_dir(server_config_t *cfg)
{
	char exe[3072];
	ssize_t n;
	char *slash;

	if (access(cfg->web_dir, F_OK) == 0)
		return;
	if ((n = readlink("/proc/self/exe", exe, sizeof exe - 1)) <= 0)
		return;
	exe[n] = 0;
	if (!(slash = strrchr(exe, '/')))
		return;
	*slash = 0;
	if (strlen(exe) + 8 < sizeof cfg->web_dir) {
		char candidate[sizeof cfg->web_dir];
		snprintf(candidate, sizeof candidate, "%s/../web", exe);
		if (access(candidate, F_OK) == 0)
			memcpy(cfg->web_dir, candidate, strlen(candidate) + 1);
	}
}

static int bad(const char *msg, const char *arg)
{
	fprintf(stderr, "parley: %s '%s'; see 'parley serve --help'\n", msg, arg);
	return 2;
}

int main(int argc, char **argv)
{
	server_config_t cfg;
	long v;
	int i, web_given = 0;

	server_config_defaults(&cfg);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
		printf("parley %s\n", PARLEY_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "serve") != 0)
		return bad("unknown command", argv[1]);
	for (i = 2; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		}
		if (strncmp(a, "--", 2) != 0)
			return bad("unexpected argument", a);
		if (!strcmp(a, "--fast-password-hashing")) {
			cfg.fast_password_hashing = 1;
			continue;
		}
		if (strcmp(a, "--listen") && strcmp(a, "--data") && strcmp(a, "--threads") &&
		    strcmp(a, "--node-id") && strcmp(a, "--log-level") && strcmp(a, "--ping-interval") &&
		    strcmp(a, "--idle-timeout") && strcmp(a, "--out-limit") && strcmp(a, "--rate-limit") &&
		    strcmp(a, "--rate-burst") && strcmp(a, "--presence-grace") && strcmp(a, "--web") &&
		    strcmp(a, "--commit-delay") && strcmp(a, "--max-user-connections") &&
		    strcmp(a, "--max-devices"))
			return bad("unknown option", a);
		if (!val)
			return bad("missing value for", a);
		i++;
		if (!strcmp(a, "--listen")) {
			if (parse_listen(val, &cfg) < 0)
				return bad("--listen wants HOST:PORT, not", val);
		} else if (!strcmp(a, "--data")) {
			if (!*val || strlen(val) >= sizeof cfg.data_dir - 64)
				return bad("--data wants a directory, not", val);
			snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s", val);
		} else if (!strcmp(a, "--web")) {
			if (strlen(val) >= sizeof cfg.web_dir)
				return bad("--web wants a directory, not", val);
			snprintf(cfg.web_dir, sizeof cfg.web_dir, "%s", val);
			web_given = 1;
		} else if (!strcmp(a, "--threads")) {
			if (parse_int(val, 1, 64, &v) < 0)
				return bad("--threads wants 1 to 64, not", val);
			cfg.threads = (int)v;
		} else if (!strcmp(a, "--node-id")) {
			if (parse_int(val, 0, SNOWFLAKE_NODE_MAX, &v) < 0)
				return bad("--node-id wants 0 to 1023, not", val);
			cfg.node_id = (uint32_t)v;
		} else if (!strcmp(a, "--ping-interval")) {
			if (parse_int(val, 1, 3600, &v) < 0)
				return bad("--ping-interval wants 1 to 3600 seconds, not", val);
			cfg.ping_interval_s = (int)v;
		} else if (!strcmp(a, "--idle-timeout")) {
			if (parse_int(val, 2, 7200, &v) < 0)
				return bad("--idle-timeout wants 2 to 7200 seconds, not", val);
			cfg.idle_timeout_s = (int)v;
		} else if (!strcmp(a, "--rate-limit")) {
			char *end;
			double d = strtod(val, &end);
			if (end == val || *end || !(d >= 0 && d <= 1e8))
				return bad("--rate-limit wants 0 to 100000000 recipients a second, not", val);
			cfg.rate_limit = d;
		} else if (!strcmp(a, "--max-devices")) {
			if (parse_int(val, 0, 1000000, &v) < 0)
				return bad("--max-devices wants 0 to 1000000, not", val);
			cfg.max_devices = (unsigned)v;
		} else if (!strcmp(a, "--max-user-connections")) {
			if (parse_int(val, 0, 1000000, &v) < 0)
				return bad("--max-user-connections wants 0 to 1000000, not", val);
			cfg.max_user_connections = (unsigned)v;
		} else if (!strcmp(a, "--commit-delay")) {
			if (parse_int(val, 0, 10000, &v) < 0)
				return bad("--commit-delay wants 0 to 10000 microseconds, not", val);
			cfg.commit_delay_us = (unsigned)v;
		} else if (!strcmp(a, "--presence-grace")) {
			if (parse_int(val, 0, 600000, &v) < 0)
				return bad("--presence-grace wants 0 to 600000 milliseconds, not", val);
			cfg.presence_grace_ms = (int)v;
		} else if (!strcmp(a, "--rate-burst")) {
			if (parse_int(val, 1, 1000000000, &v) < 0)
				return bad("--rate-burst wants 1 to 1000000000 recipients, not", val);
			cfg.rate_burst = (double)v;
		} else if (!strcmp(a, "--out-limit")) {
			if (parse_int(val, 65536, 1L << 30, &v) < 0)
				return bad("--out-limit wants 65536 to 1073741824 bytes, not", val);
			cfg.out_limit = (size_t)v;
		} else {
			if (!strcmp(val, "debug"))
				log_level = LOG_DEBUG;
			else if (!strcmp(val, "info"))
				log_level = LOG_INFO;
			else if (!strcmp(val, "warn"))
				log_level = LOG_WARN;
			else if (!strcmp(val, "error"))
				log_level = LOG_ERROR;
			else
				return bad("--log-level wants debug, info, warn or error, not", val);
		}
	}
	if (cfg.idle_timeout_s <= cfg.ping_interval_s) {
		fprintf(stderr, "parley: --idle-timeout (%d) must be longer than --ping-interval (%d)\n",
		        cfg.idle_timeout_s, cfg.ping_interval_s);
		return 2;
	}
	if (!web_given)
		default_web_dir(&cfg);
	return server_run(&cfg);
}
