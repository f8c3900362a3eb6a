/* main.c - the parley command line.
 *
 * Every option of `parley serve` is one row of the table below: its name,
 * the field of server_config_t it sets, its range and its help. Parsing,
 * range checks and the help text all come from the table, so an option
 * cannot be parsed one way and documented another. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "pushsvc.h"
#include "server.h"
#include "snowflake.h"
#include "store.h"
#include "store_copy.h"

#define PARLEY_VERSION "0.1.0"

enum {
	OPT_INT,      /* int field */
	OPT_UINT,     /* unsigned field */
	OPT_U32,      /* uint32_t field */
	OPT_SIZE,     /* size_t field */
	OPT_DOUBLE,   /* double field */
	OPT_PATH,     /* char array field of `size` bytes */
	OPT_FLAG,     /* int field set to 1; takes no value */
	OPT_SPECIAL,  /* parsed by `set` */
};

typedef struct option {
	const char *name;        /* without the leading "--" */
	int kind;
	size_t off, size;        /* the field in server_config_t */
	double lo, hi;           /* the accepted range of numbers */
	int (*set)(server_config_t *cfg, const char *val);
	const char *arg;         /* how the value is shown in the help */
	const char *help;        /* lines after the first are indented by the printer */
} option_t;

static int set_listen(server_config_t *cfg, const char *val);
static int set_push_shard(server_config_t *cfg, const char *val)
{
	unsigned i, n;
	char end;

	if (sscanf(val, "%u/%u%c", &i, &n, &end) != 2 || n == 0 || n > 1024 || i >= n)
		return -1;
	cfg->push_shard = i;
	cfg->push_shards = n;
	return 0;
}

static int set_admin_listen(server_config_t *cfg, const char *val);
static int set_log_level(server_config_t *cfg, const char *val);
static int set_push_shard(server_config_t *cfg, const char *val);

#define F(field) offsetof(server_config_t, field), sizeof(((server_config_t *)0)->field)

static const option_t options[] = {
	{"listen", OPT_SPECIAL, 0, 0, 0, 0, set_listen, "HOST:PORT",
	 "address to listen on (default 127.0.0.1:8080;\nport 0 picks a free port, printed when ready)"},
	{"data", OPT_PATH, F(data_dir), 1, 0, NULL, "DIR",
	 "data directory of the embedded store, created if missing\n(default ./parley-data)"},
	{"store", OPT_PATH, F(store_url), 1, 0, NULL, "URL",
	 "the store instead: postgresql://USER@HOST:PORT/DB (a libpq\nURI), or sqlite:DIR"},
	{"web", OPT_PATH, F(web_dir), 0, 0, NULL, "DIR",
	 "the web client's files, served at / (default ./web, or\nthe web/ beside the binary's folder; \"\" serves the API only)"},
	{"threads", OPT_INT, F(threads), 1, 64, NULL, "N", "I/O threads (default: one per core)"},
	{"redis", OPT_PATH, F(redis_url), 1, 0, NULL, "URL",
	 "redis://HOST:PORT: share who is connected where, and\npresence, with the other nodes on that Redis (and the\nsame store); node ids must then be unique (default: none,\nthis node alone)"},
	{"heartbeat-ms", OPT_INT, F(heartbeat_ms), 100, 60000, NULL, "MS",
	 "with --redis, how often this node tells Redis it is alive:\na node unheard for 3 beats is dead (its users leave the\nregistry, its share of the log moves), its id free after\n5; every node of a fleet takes the same (default 1000)"},
	{"nats", OPT_PATH, F(nats_urls), 1, 0, NULL, "URLS",
	 "nats://HOST:PORT[,nats://HOST:PORT...]: put every committed\nmessage and receipt on the event log (NATS JetStream)\nthere, through the store's outbox (default: none)"},
	{"nats-log", OPT_PATH, F(nats_log), 1, 0, NULL, "NAME",
	 "the event log's name on NATS, 1 to 32 of A-Z a-z 0-9 _ -: a\nfleet's nodes share one; another fleet (or a test) on\nthe same NATS takes another (default PARLEY)"},
	{"nats-replicas", OPT_INT, F(nats_replicas), 1, 5, NULL, "N",
	 "the event log's replicas (default 3 with three or more\nservers in --nats, else 1)"},
	{"node-id", OPT_U32, F(node_id), 0, SNOWFLAKE_NODE_MAX, NULL, "N",
	 "node id 0-1023 for message ids (default 0)"},
	{"log-level", OPT_SPECIAL, 0, 0, 0, 0, set_log_level, "LEVEL",
	 "debug, info, warn or error (default info)"},
	{"admin-listen", OPT_SPECIAL, 0, 0, 0, 0, set_admin_listen, "HOST:PORT",
	 "the operator listener: /metrics and /healthz, nothing else\n(default: none; keep it off the public network)"},
	{"operator-token-file", OPT_PATH, F(operator_token_file), 1, 0, NULL, "FILE",
	 "a file holding a token (16-1024 characters) that opens\n/metrics on the public listener as a bearer token"},
	{"trusted-proxies", OPT_PATH, F(trusted_proxies), 0, 0, NULL, "LIST",
	 "load balancers, as addresses and CIDR ranges separated by\ncommas, whose X-Forwarded-For (or PROXY header) names the\nclient; everyone else is their own client (default: none)"},
	{"proxy-protocol", OPT_FLAG, F(proxy_protocol), 0, 0, NULL, NULL,
	 "connections from --trusted-proxies begin with a PROXY\nheader, version 1 or 2 (HAProxy's send-proxy-v2)"},
	{"max-address-connections", OPT_UINT, F(max_address_connections), 0, 10000000, NULL, "N",
	 "connections one client address may hold (default 1000;\n0: no limit)"},
	{"max-address-pending", OPT_UINT, F(max_address_pending), 0, 10000000, NULL, "N",
	 "... of which not yet WebSockets (default 100; 0: no limit)"},
	{"signup-rate", OPT_DOUBLE, F(signup_rate), 0, 1e9, NULL, "N",
	 "sign-ups one client address may make an hour, N at once\n(default 20; 0: no limit)"},
	{"login-rate", OPT_DOUBLE, F(login_rate), 0, 1e9, NULL, "N",
	 "logins one client address may try a minute, N at once\n(default 60; 0: no limit)"},
	{"public-url", OPT_PATH, F(public_url), 0, 0, NULL, "URL",
	 "the address browsers use, e.g. https://chat.example.com, when\na proxy in front changes the Host: its pages may use the API"},
	{"allowed-origins", OPT_PATH, F(allowed_origins), 0, 0, NULL, "LIST",
	 "more origins (scheme://host[:port], comma-separated) whose\npages may use the API and WebSocket (default: none)"},
	{"max-conversations", OPT_UINT, F(max_conversations), 0, 10000000, NULL, "N",
	 "conversations one user may be in (default 10000; 0: no limit)"},
	{"strangers-per-day", OPT_UINT, F(strangers_per_day), 0, 10000000, NULL, "N",
	 "people who never wrote to a user that it may start chats\nwith or add to groups a day; blocks it receives lower it\n(default 100; 0: no limit)"},
	{"token-idle-days", OPT_INT, F(token_idle_days), 0, 36500, NULL, "D",
	 "a login unused this many days is logged out (default 90;\n0: never)"},
	{"work-rate", OPT_DOUBLE, F(work_rate), 0, 1e9, NULL, "N",
	 "store lookups one user's requests and frames may cost a\nsecond (default 500; 0: no limit)"},
	{"work-burst", OPT_DOUBLE, F(work_burst), 1, 1e9, NULL, "N", "... and at once (default 5000)"},
	{"read-rate", OPT_DOUBLE, F(read_rate), 0, 1e12, NULL, "BYTES",
	 "WebSocket bytes one user's connections are read at a second;\nbeyond it the node stops reading them for a while\n(default 262144; 0: no limit)"},
	{"read-burst", OPT_DOUBLE, F(read_burst), 1, 1e12, NULL, "BYTES", "... and at once (default 4194304)"},
	{"storage-per-day", OPT_DOUBLE, F(storage_per_day), 0, 1e15, NULL, "BYTES",
	 "message bytes one user may store a day, a quarter of it at\nonce (default 67108864; 0: no limit)"},
	{"ping-interval", OPT_INT, F(ping_interval_s), 1, 3600, NULL, "S",
	 "seconds between the server's WebSocket pings (default 30)"},
	{"drain-seconds", OPT_INT, F(drain_seconds), 0, 3600, NULL, "S",
	 "at SIGTERM, close the WebSockets with 1012 (reconnect)\nspread over this long, so that their clients come back\nto other nodes a few at a time (default 10; 0: at once)"},
	{"edit-window", OPT_INT, F(edit_window_s), 0, 100000000, NULL, "S",
	 "a message may be edited by its author this long after it\nwas sent (default 900; 0: no edits)"},
	{"idle-timeout", OPT_INT, F(idle_timeout_s), 2, 7200, NULL, "S",
	 "close a WebSocket silent this long (default 75)"},
	{"request-timeout", OPT_INT, F(request_timeout_s), 1, 600, NULL, "S",
	 "a request must arrive whole this long after its first byte,\nand a new connection begin one as soon (default 10)"},
	{"out-limit", OPT_SIZE, F(out_limit), 65536, 1 << 30, NULL, "BYTES",
	 "outbound bytes queued for one WebSocket before it is\ndropped as too slow (default 1048576)"},
	{"max-partial-memory", OPT_SIZE, F(max_partial_bytes), 1 << 20, 1UL << 40, NULL, "BYTES",
	 "input the node holds for unfinished requests and messages,\nall connections together; past it they are refused\n(default 67108864)"},
	{"rate-limit", OPT_DOUBLE, F(rate_limit), 0, 1e8, NULL, "N",
	 "recipients a sender's messages may reach per second,\na direct message costing 1, a group post its members\nbut one (default 200; 0: no limit)"},
	{"rate-burst", OPT_DOUBLE, F(rate_burst), 1, 1e9, NULL, "N", "... and at once (default 5000)"},
	{"commit-delay", OPT_UINT, F(commit_delay_us), 0, 10000, NULL, "US",
	 "wait up to US microseconds for more messages before\ncommitting a small batch: less CPU per message at\nmoderate load, up to US more per ack (default 0)"},
	{"store-writers", OPT_UINT, F(store_writers), 0, 64, NULL, "N",
	 "write transactions in flight at once, each on a store\nconnection of its own, conversations shared out among\nthem (default: 1 for SQLite, 2 for PostgreSQL)"},
	{"max-devices", OPT_UINT, F(max_devices), 0, 1000000, NULL, "N",
	 "logins (devices) kept per user; a new one past this\nlogs out the oldest (default 32; 0: no limit)"},
	{"max-user-connections", OPT_UINT, F(max_user_connections), 0, 1000000, NULL, "N",
	 "WebSockets one user may hold at once, all devices\ntogether (default 64; 0: no limit)"},
	{"presence-grace", OPT_INT, F(presence_grace_ms), 0, 600000, NULL, "MS",
	 "a user is shown offline only after its last connection\nhas been closed this long (default 5000)"},
	{"push-allow-http-endpoints", OPT_FLAG, F(push_allow_http_endpoints), 0, 0, NULL, NULL,
	 "accept Web Push endpoints over http:// and on loopback or\nprivate hosts (tests against a local fake only)"},
	{"no-push", OPT_FLAG, F(push_off), 0, 0, NULL, NULL, "send no push notifications"},
	{"push-shard", OPT_SPECIAL, 0, 0, 0, 0, set_push_shard, "I/N",
	 "parley push: serve the log's partitions p with p % N == I,\nso that N push processes share the log (default 0/1)"},
	{"push-grace-ms", OPT_INT, F(push_grace_ms), 0, 600000, NULL, "MS",
	 "a user with a connection is pushed a message only if none\nof its devices has said it delivered it this long after\n(default 5000)"},
	{"push-coalesce-ms", OPT_INT, F(push_coalesce_ms), 0, 600000, NULL, "MS",
	 "a user without a connection is pushed this long after a\nconversation's first message, one notification for the\nburst (default 1000)"},
	{"push-senders", OPT_UINT, F(push_senders), 1, 256, NULL, "N",
	 "the push path's sender threads (default 4)"},
	{"push-concurrency", OPT_UINT, F(push_concurrency), 1, 256, NULL, "N",
	 "pushes in flight to one provider at once, so that a slow\none holds only its share of the senders (default 2)"},
	{"push-rate", OPT_DOUBLE, F(push_rate), 0, 1e6, NULL, "N",
	 "pushes a second to one provider (default 0: no limit)"},
	{"push-max-attempts", OPT_INT, F(push_max_attempts), 1, 100, NULL, "N",
	 "tries of one push (no answer, 5xx, 429) before it is\ndead-lettered (default 6)"},
	{"push-timeout-ms", OPT_INT, F(push_timeout_ms), 100, 600000, NULL, "MS",
	 "the longest one exchange with a provider may take; past it\nthe push is tried again later (default 10000)"},
	{"push-contact", OPT_PATH, F(push_contact), 1, 0, NULL, "URI",
	 "Web Push's contact for the push services (VAPID sub):\nmailto:ADDRESS or https://... (default --public-url if\nhttps, else mailto:postmaster@localhost)"},
	{"apns-key-file", OPT_PATH, F(apns_key_file), 1, 0, NULL, "FILE",
	 "APNs: the team's token signing key (.p8); with\n--apns-key-id and --apns-team-id (default: APNs off)"},
	{"apns-key-id", OPT_PATH, F(apns_key_id), 1, 0, NULL, "ID", "APNs: the key's id, 10 of A-Z 0-9"},
	{"apns-team-id", OPT_PATH, F(apns_team_id), 1, 0, NULL, "ID", "APNs: the team's id, 10 of A-Z 0-9"},
	{"apns-url", OPT_PATH, F(apns_url), 1, 0, NULL, "URL",
	 "APNs' production service (default https://api.push.apple.com)"},
	{"apns-sandbox-url", OPT_PATH, F(apns_sandbox_url), 1, 0, NULL, "URL",
	 "APNs' development service, for sandbox targets\n(default https://api.sandbox.push.apple.com)"},
	{"fcm-service-account", OPT_PATH, F(fcm_account_file), 1, 0, NULL, "FILE",
	 "FCM: a service account's key file (JSON, from the Firebase\nconsole) (default: FCM off)"},
	{"fcm-url", OPT_PATH, F(fcm_url), 1, 0, NULL, "URL",
	 "FCM's HTTP v1 service (default https://fcm.googleapis.com)"},
	{"fast-password-hashing", OPT_FLAG, F(fast_password_hashing), 0, 0, NULL, NULL,
	 "hash new passwords at Argon2id's minimum cost, so that\ntests and benchmarks can register thousands of users;\nnever for real accounts"},
};

#define NOPTIONS (sizeof options / sizeof options[0])

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: parley serve [options]\n"
	           "       parley push --store URL --nats URLS [push options]\n"
	           "       parley migrate [--data DIR | --store URL]\n"
	           "       parley copy-store --from DIR --to postgresql://USER@HOST:PORT/DB\n"
	           "       parley admin strangers-exempt USERNAME on|off [--data DIR | --store URL]\n"
	           "       parley --version\n"
	           "\n"
	           "Runs a Parley chat server node; or, with push, a fleet's push\n"
	           "service, which reads the event log and takes --store, --nats,\n"
	           "--nats-log, --nats-replicas, --admin-listen (/metrics), --log-level,\n"
	           "--token-idle-days and the --push-*, --apns-* and --fcm-* options.\n"
	           "\n"
	           "options:\n");
	for (i = 0; i < NOPTIONS; i++) {
		const option_t *o = &options[i];
		const char *h = o->help, *nl;
		char head[64];
		int n = snprintf(head, sizeof head, "  --%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");

		if (n > 22)
			fprintf(f, "%s\n%23s", head, "");
		else
			fprintf(f, "%-23s", head);
		while ((nl = strchr(h, '\n')) != NULL) {
			fprintf(f, "%.*s\n%23s", (int)(nl - h), h, "");
			h = nl + 1;
		}
		fprintf(f, "%s\n", h);
	}
	fprintf(f, "  -h, --help           show this help\n");
}

/* The options `parley push` takes: what the push path and the log need. */
static int push_option(const char *name)
{
	static const char *const names[] = {"store", "nats", "nats-log", "nats-replicas", "admin-listen",
	                                    "log-level", "token-idle-days", "push-allow-http-endpoints"};
	size_t i;

	for (i = 0; i < sizeof names / sizeof names[0]; i++)
		if (!strcmp(name, names[i]))
			return 1;
	return (!strncmp(name, "push-", 5) || !strncmp(name, "apns-", 5) || !strncmp(name, "fcm-", 4));
}

static int parse_long(const char *s, double lo, double hi, long long *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || (double)v < lo || (double)v > hi)
		return -1;
	*out = v;
	return 0;
}

static int parse_hostport(const char *s, char *host, size_t hostcap, int *port_out)
{
	const char *colon;
	size_t hlen;
	long long port;

	if (s[0] == '[') { /* [v6]:port */
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -1;
		hlen = (size_t)(close - s - 1);
		if (hlen == 0 || hlen >= hostcap)
			return -1;
		memcpy(host, s + 1, hlen);
		host[hlen] = 0;
		colon = close + 1;
	} else {
		if (!(colon = strrchr(s, ':')))
			return -1;
		hlen = (size_t)(colon - s);
		if (hlen == 0 || hlen >= hostcap)
			return -1;
		memcpy(host, s, hlen);
		host[hlen] = 0;
	}
	if (parse_long(colon + 1, 0, 65535, &port) < 0)
		return -1;
	*port_out = (int)port;
	return 0;
}

static int set_listen(server_config_t *cfg, const char *val)
{
	return parse_hostport(val, cfg->host, sizeof cfg->host, &cfg->port);
}

static int set_admin_listen(server_config_t *cfg, const char *val)
{
	return parse_hostport(val, cfg->admin_host, sizeof cfg->admin_host, &cfg->admin_port);
}

static int set_log_level(server_config_t *cfg, const char *val)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	int i;

	(void)cfg;
	for (i = 0; i < 4; i++) {
		if (!strcmp(val, names[i])) {
			log_level = LOG_DEBUG + i;
			return 0;
		}
	}
	return -1;
}

/* Sets option o from val. Returns 0, or -1 when the value is refused. */
static int set_option(server_config_t *cfg, const option_t *o, const char *val)
{
	char *field = (char *)cfg + o->off;
	long long v;

	switch (o->kind) {
	case OPT_SPECIAL:
		return o->set(cfg, val);
	case OPT_PATH:
		if (strlen(val) < (size_t)o->lo || strlen(val) >= o->size - 64)
			return -1;
		snprintf(field, o->size, "%s", val);
		return 0;
	case OPT_DOUBLE: {
		char *end;
		double d = strtod(val, &end);
		if (end == val || *end || !(d >= o->lo && d <= o->hi))
			return -1;
		*(double *)field = d;
		return 0;
	}
	default:
		break;
	}
	if (parse_long(val, o->lo, o->hi, &v) < 0)
		return -1;
	switch (o->kind) {
	case OPT_INT:
		*(int *)field = (int)v;
		break;
	case OPT_UINT:
		*(unsigned *)field = (unsigned)v;
		break;
	case OPT_U32:
		*(uint32_t *)field = (uint32_t)v;
		break;
	case OPT_SIZE:
		*(size_t *)field = (size_t)v;
		break;
	}
	return 0;
}

/* The refusal of a bad value, naming what is accepted. */
static int bad_value(const option_t *o, const char *val)
{
	if (o->kind == OPT_PATH)
		fprintf(stderr, "parley: --%s wants %s, not '%s'\n", o->name, o->arg, val);
	else if (o->kind == OPT_SPECIAL)
		fprintf(stderr, "parley: --%s wants %s, not '%s'\n", o->name,
		        o->set == set_log_level ? "debug, info, warn or error" : o->arg, val);
	else
		fprintf(stderr, "parley: --%s wants %.0f to %.0f, not '%s'\n", o->name, o->lo, o->hi, val);
	return 2;
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

/* --data DIR or --store URL at argv[*i] (moving *i past its value): 1
 * with *where set, 0 when argv[*i] is neither. */
static int store_arg(int argc, char **argv, int *i, const char **where)
{
	if ((!strcmp(argv[*i], "--data") || !strcmp(argv[*i], "--store")) && *i + 1 < argc) {
		*where = argv[++*i];
		return 1;
	}
	return 0;
}

/* parley migrate [--data DIR | --store URL]: brings the store's schema up
 * to this binary's version without serving it, so that an operator can
 * migrate a shared database once, before rolling out new nodes. */
static int migrate(int argc, char **argv)
{
	const char *where = "parley-data";
	int i, from, to;

	for (i = 0; i < argc; i++)
		if (!store_arg(argc, argv, &i, &where)) {
			fprintf(stderr, "usage: parley migrate [--data DIR | --store URL]\n");
			return 2;
		}
	if (!store_backend_name(where)) {
		fprintf(stderr, "parley: no store backend serves that location\n");
		return 2;
	}
	if (store_migrate(where, &from, &to) < 0) {
		fprintf(stderr, "parley: the %s store was not migrated (the log above says why)\n",
		        store_backend_name(where));
		return 1;
	}
	if (from == to)
		printf("parley: the %s store is at schema version %d already\n", store_backend_name(where), to);
	else if (from == 0)
		printf("parley: created the %s store's schema, version %d\n", store_backend_name(where), to);
	else
		printf("parley: migrated the %s store from schema version %d to %d\n", store_backend_name(where),
		       from, to);
	return 0;
}

/* parley copy-store --from DIR --to postgresql://...: a single node's store
 * moved into PostgreSQL, so that a deployment that outgrows one machine
 * keeps its history, its users' logins and everything else. */
static int copy_store(int argc, char **argv)
{
	const char *from = NULL, *to = NULL;
	int i;

	for (i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--from") && i + 1 < argc)
			from = argv[++i];
		else if (!strcmp(argv[i], "--to") && i + 1 < argc)
			to = argv[++i];
		else
			from = to = NULL, i = argc;
	}
	if (!from || !to) {
		fprintf(stderr, "usage: parley copy-store --from DIR --to postgresql://USER@HOST:PORT/DB\n");
		return 2;
	}
	printf("parley: copying the store in %s into PostgreSQL\n", from);
	if (store_copy(from, to, stdout) < 0) {
		fprintf(stderr, "parley: nothing was copied (the log above says why)\n");
		return 1;
	}
	printf("parley: copied; start the nodes with --store and that URL\n");
	return 0;
}

/* parley admin strangers-exempt USERNAME on|off [--data DIR]: lifts (or
 * restores) the first-contact budget of an account that legitimately
 * contacts many people, in the store, so it holds at once on a running
 * node and across restarts. */
static int admin(int argc, char **argv)
{
	const char *data = "parley-data", *user = NULL, *value = NULL;
	int64_t id;
	store_t *st;
	int i, r, on;

	if (argc < 1 || strcmp(argv[0], "strangers-exempt") != 0) {
		fprintf(stderr, "usage: parley admin strangers-exempt USERNAME on|off [--data DIR | --store URL]\n");
		return 2;
	}
	for (i = 1; i < argc; i++) {
		if (store_arg(argc, argv, &i, &data))
			continue;
		else if (!user)
			user = argv[i];
		else if (!value)
			value = argv[i];
		else
			return bad("unexpected argument", argv[i]);
	}
	if (!user || !value || (strcmp(value, "on") && strcmp(value, "off"))) {
		fprintf(stderr, "usage: parley admin strangers-exempt USERNAME on|off [--data DIR | --store URL]\n");
		return 2;
	}
	on = !strcmp(value, "on");
	if (!(st = store_open(data)))
		return 1;
	if ((r = store_user_by_name(st, user, &id, NULL)) == STORE_OK)
		r = store_set_strangers_exempt(st, id, on);
	store_close(st);
	if (r == STORE_NOT_FOUND) {
		fprintf(stderr, "parley: no user named '%s' in that store\n", user);
		return 1;
	}
	if (r != STORE_OK)
		return 1;
	printf("parley: %s %s exempt from the first-contact budget\n", user, on ? "is now" : "is no longer");
	return 0;
}

int main(int argc, char **argv)
{
	server_config_t cfg;
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
	if (!strcmp(argv[1], "admin"))
		return admin(argc - 2, argv + 2);
	if (!strcmp(argv[1], "migrate"))
		return migrate(argc - 2, argv + 2);
	if (!strcmp(argv[1], "copy-store"))
		return copy_store(argc - 2, argv + 2);
	if (strcmp(argv[1], "serve") != 0 && strcmp(argv[1], "push") != 0)
		return bad("unknown command", argv[1]);
	for (i = 2; i < argc; i++) {
		const char *a = argv[i];
		const option_t *o = NULL;
		size_t k;

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		}
		if (strncmp(a, "--", 2) != 0)
			return bad("unexpected argument", a);
		for (k = 0; k < NOPTIONS && !o; k++)
			if (!strcmp(a + 2, options[k].name))
				o = &options[k];
		if (!o)
			return bad("unknown option", a);
		if (!strcmp(argv[1], "push") && !push_option(o->name))
			return bad("parley push takes no option", a);
		if (strcmp(argv[1], "push") && !strcmp(o->name, "push-shard"))
			return bad("only parley push takes", a);
		if (o->kind == OPT_FLAG) {
			*(int *)((char *)&cfg + o->off) = 1;
			continue;
		}
		if (i + 1 >= argc)
			return bad("missing value for", a);
		if (set_option(&cfg, o, argv[++i]) < 0)
			return bad_value(o, argv[i]);
		if (o->off == offsetof(server_config_t, web_dir) && o->kind == OPT_PATH)
			web_given = 1;
	}
	if (cfg.idle_timeout_s <= cfg.ping_interval_s) {
		fprintf(stderr, "parley: --idle-timeout (%d) must be longer than --ping-interval (%d)\n",
		        cfg.idle_timeout_s, cfg.ping_interval_s);
		return 2;
	}
	if (!strcmp(argv[1], "push"))
		return pushsvc_run(&cfg);
	if (!web_given)
		default_web_dir(&cfg);
	return server_run(&cfg);
}
