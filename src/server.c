/* server.c - start-up and orderly shut-down of a node (server.h). */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addrconns.h"
#include "auth.h"
#include "budget.h"
#include "spends.h"
#include "origin.h"
#include "tickets.h"
#include "push.h"
#include "vapid.h"
#include "bus.h"
#include "bus_redis.h"
#include "dispatch.h"
#include "eventlog.h"
#include "outbox.h"
#include "chat.h"
#include "fanout.h"
#include "loop.h"
#include "presence.h"
#include "routes.h"
#include "gateway.h"
#include "log.h"
#include "loginguard.h"
#include "store.h"
#include "tally.h"
#include "webfiles.h"
#include "workers.h"
#include "writer.h"

#define SHUTDOWN_GRACE_MS 3000

void server_config_defaults(server_config_t *cfg)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	memset(cfg, 0, sizeof *cfg);
	snprintf(cfg->host, sizeof cfg->host, "127.0.0.1");
	cfg->port = 8080;
	snprintf(cfg->data_dir, sizeof cfg->data_dir, "parley-data");
	cfg->threads = n > 0 ? (int)n : 1;
	cfg->workers = 0;
	cfg->node_id = 0;
	cfg->out_limit = 1 << 20;
	cfg->ping_interval_s = 30;
	cfg->idle_timeout_s = 75;
	cfg->drain_seconds = 10;
	cfg->http_timeout_s = 60;
	cfg->request_timeout_s = 10;
	cfg->max_sends_in_flight = 128;
	cfg->edit_window_s = 900; /* WhatsApp's fifteen minutes */
	cfg->receipts_interval_ms = 1000;
	/* A person chatting never meets these; a bot posting to a full
	 * 1,024-member group can do so about every 5 seconds, 5 in a burst. */
	cfg->rate_limit = 200;
	cfg->rate_burst = 5000;
	cfg->presence_grace_ms = 5000;
	cfg->push_grace_ms = 5000;
	cfg->push_coalesce_ms = 1000;
	cfg->push_senders = 4;
	cfg->push_concurrency = 2;
	cfg->push_max_attempts = 6;
	cfg->push_timeout_ms = 10000;
	cfg->max_user_connections = 64;
	cfg->max_devices = 32;
	snprintf(cfg->web_dir, sizeof cfg->web_dir, "web");
	/* A thousand sockets each holding a whole request head: an attack
	 * costs the node this much, never all its memory. */
	cfg->max_partial_bytes = 64u << 20;
	/* Generous enough for a carrier's NAT in front of many phones; an
	 * address past these is one client hoarding the node's sockets. */
	cfg->max_address_connections = 1000;
	cfg->max_address_pending = 100;
	cfg->signup_rate = 20;
	cfg->login_rate = 60;
	cfg->max_conversations = 10000;
	cfg->strangers_per_day = 100;
	cfg->token_idle_days = 90;
	/* A client that connects does a few thousand lookups at once (its
	 * list, its resume, its watches); a steady few hundred a second is
	 * far past anyone's reading. */
	cfg->work_rate = 500;
	cfg->work_burst = 5000;
	cfg->storage_per_day = 64.0 * 1024 * 1024;
	/* Far past what a person types or a client resumes with (a resume
	 * of 4,096 conversations is about 100 KiB), while an account that
	 * streams costly frames costs the node a few milliseconds of parsing
	 * a second instead of its cores. */
	cfg->read_rate = 256.0 * 1024;
	cfg->read_burst = 4.0 * 1024 * 1024;
}

static int lookup_members(void *ud, int64_t conv, fanout_member_t **out, size_t *n,
                          int64_t *version)
{
	store_member_t *m;
	size_t i;

	_Static_assert(sizeof(store_member_t) == sizeof(fanout_member_t), "same layout");
	if (store_member_list(ud, conv, &m, n, version) != STORE_OK)
		return -1;
	/* The same two fields in the same order: hand the array over. */
	for (i = 0; i < *n; i++)
		((fanout_member_t *)m)[i] = (fanout_member_t){m[i].user_id, m[i].joined_seq};
	*out = (fanout_member_t *)m;
	return 0;
}

#define HASH_QUEUE 64
#define HASH_QUEUE_PER_ADDRESS 4
#define WORKER_QUEUE 16384
#define OPERATOR_TOKEN_MIN 16
#define OPERATOR_TOKEN_MAX 1024

/* Reads the operator's token (one line, 16 to 1024 printable characters)
 * and keeps only its hash. Returns 0, or -1 (logged). */
static int load_operator_token(server_t *srv, const char *path)
{
	char buf[OPERATOR_TOKEN_MAX + 2];
	struct stat st;
	size_t n, i;
	FILE *f = fopen(path, "r");

	if (!f) {
		log_error("cannot read the operator token file %s: %s", path, strerror(errno));
		return -1;
	}
	n = fread(buf, 1, sizeof buf - 1, f);
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
		log_warn("%s is readable by others; the operator token should be private (chmod 600)", path);
	fclose(f);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	for (i = 0; i < n && buf[i] > 0x20 && buf[i] < 0x7f; i++)
		;
	if (n < OPERATOR_TOKEN_MIN || n > OPERATOR_TOKEN_MAX || i < n) {
		log_error("%s must hold one line of %d to %d printable characters (no spaces)", path,
		          OPERATOR_TOKEN_MIN, OPERATOR_TOKEN_MAX);
		return -1;
	}
	auth_secret_hash(buf, n, srv->operator_token_hash);
	srv->has_operator_token = 1;
	memset(buf, 0, sizeof buf);
	return 0;
}

/* Frees what server_start built, in the order that keeps every thread's
 * peers alive until it has stopped. Accepts a partly built node. */
static void server_free(server_t *srv)
{
	/* A fleet's bus thread calls the gateway and presence on its own
	 * (frames and presence from other nodes): not once they are going. */
	if (srv->cfg.redis_url[0] && srv->bus)
		bus_redis_mute(srv->bus);
	workers_free(srv->hashers);
	workers_free(srv->workers);
	writer_free(srv->writer);
	/* Before the log closes: the dispatchers consume it, and hand back
	 * what they hold for the next owner. */
	dispatch_free(srv->dispatch);
	/* After the writer: its lanes hand the relay what they commit. */
	outbox_relay_free(srv->outbox);
	fanout_free(srv->fanout);
	store_close(srv->fanout_store);
	/* After the writer, whose completions feed it; before the bus it
	 * asks who is connected, and the VAPID key it signs with. */
	push_free(srv->push);
	tally_free(srv->tally);
	/* After the I/O threads have closed every connection (each one told
	 * presence), before the loops it posts to are freed. */
	presence_free(srv->presence);
	gateway_free(srv->gw);
	webfiles_free(srv->web);
	loginguard_free(srv->logins);
	addrconns_free(srv->addrconns);
	budget_free(srv->signup_budget);
	budget_free(srv->login_budget);
	budget_free(srv->work_budget);
	budget_free(srv->read_budget);
	tickets_free(srv->tickets);
	vapid_free(srv->vapid);
	bus_free(srv->bus);
	spends_free(srv->sent_recipients);
	spends_free(srv->sent_bytes);
	store_release(srv->store_claim);
	free(srv);
}

/* The push path asks whether a user holds a connection: on one node
 * the bus knows every one. */
static int push_connected(void *ud, int64_t user)
{
	return bus_connections(((server_t *)ud)->bus, user) > 0;
}

int server_push_config(const server_config_t *cfg, const char *store_at, const vapid_t *vapid, push_config_t *out,
                       char contact[SERVER_CONTACT_MAX])
{
	push_config_t pc = {0};

	if (cfg->push_contact[0])
		snprintf(contact, SERVER_CONTACT_MAX, "%s", cfg->push_contact);
	else if (!strncmp(cfg->public_url, "https://", 8))
		snprintf(contact, SERVER_CONTACT_MAX, "%s", cfg->public_url);
	else
		snprintf(contact, SERVER_CONTACT_MAX, "mailto:postmaster@localhost");
	if (strncmp(contact, "mailto:", 7) && strncmp(contact, "https://", 8)) {
		log_error("--push-contact wants mailto:ADDRESS or an https:// URL, not '%s'", contact);
		return -1;
	}
	pc.store_at = store_at;
	pc.senders = cfg->push_senders;
	pc.provider_concurrency = cfg->push_concurrency;
	pc.provider_rate = cfg->push_rate;
	pc.grace_ms = cfg->push_grace_ms;
	pc.coalesce_ms = cfg->push_coalesce_ms;
	pc.max_attempts = cfg->push_max_attempts;
	pc.timeout_ms = cfg->push_timeout_ms;
	pc.device_idle_ms = (int64_t)cfg->token_idle_days * 86400000;
	pc.vapid_key = vapid_key(vapid);
	pc.vapid_public = vapid_public_key(vapid);
	pc.contact = contact;
	pc.allow_local = cfg->push_allow_http_endpoints;
	pc.apns_key_file = cfg->apns_key_file;
	pc.apns_key_id = cfg->apns_key_id;
	pc.apns_team_id = cfg->apns_team_id;
	pc.apns_url = cfg->apns_url[0] ? cfg->apns_url : NULL;
	pc.apns_sandbox_url = cfg->apns_sandbox_url[0] ? cfg->apns_sandbox_url : NULL;
	pc.fcm_account_file = cfg->fcm_account_file;
	pc.fcm_url = cfg->fcm_url[0] ? cfg->fcm_url : NULL;
	pc.recover_ms = PUSH_RECOVER_MS;
	*out = pc;
	return 0;
}

static int start_push(server_t *srv)
{
	const server_config_t *cfg = &srv->cfg;
	push_config_t pc;
	char contact[SERVER_CONTACT_MAX];

	if (cfg->push_off) {
		log_info("push: off (--no-push)");
		return 0;
	}
	if (cfg->redis_url[0]) {
		/* A node of a fleet knows only its own connections: it cannot
		 * tell who is offline everywhere. The push service does it,
		 * from the event log. */
		log_info("push: left to the fleet's push service (`parley push`, from the event log)");
		return 0;
	}
	if (server_push_config(cfg, srv->store_at, srv->vapid, &pc, contact) < 0)
		return -1;
	pc.connected = push_connected;
	pc.connected_ud = srv;
	return (srv->push = push_new(&pc)) ? 0 : -1;
}

/* The bus reaches this node's connections through the gateway, and its
 * presence reports go to the presence module (made after the bus, but
 * before anything can subscribe). */
static void sink_deliver(void *ud, uint64_t conn, sbuf_t *frame)
{
	gw_post_live(((server_t *)ud)->gw, conn, frame);
}

static void sink_kick(void *ud, uint64_t conn)
{
	gw_post_kick(((server_t *)ud)->gw, conn);
}

static void sink_presence(void *ud, int64_t user, int state, int64_t last_seen, uint64_t version)
{
	server_t *srv = ud;

	if (srv->presence)
		presence_on_state(srv->presence, user, state, last_seen, version);
}

static void relay_committed(void *ud, const store_op_t *ops, size_t n)
{
	outbox_committed(ud, ops, n);
}

/* With --nats every commit's messages and receipts go to the event log
 * through the store's outbox. The log is replicated on 3 servers when
 * there are at least 3 (a quorum survives one loss), else on each one
 * there is; --nats-replicas overrides. An unreachable log at start is an
 * error (said by eventlog_open); once running, an outage only delays
 * events. */
static int start_outbox(server_t *srv)
{
	eventlog_opts_t o;
	eventlog_t *log;
	char err[256];
	int servers = 1;
	const char *c;

	for (c = srv->cfg.nats_urls; *c; c++)
		servers += *c == ',';
	eventlog_opts_init(&o);
	o.replicas = srv->cfg.nats_replicas ? srv->cfg.nats_replicas : servers >= 3 ? 3 : 1;
	if (srv->cfg.nats_log[0])
		o.name = srv->cfg.nats_log;
	o.ack_wait_ms = DISPATCH_ACK_WAIT_MS;
	if (!(log = eventlog_open(srv->cfg.nats_urls, &o, err, sizeof err))) {
		log_error("--nats %s: %s", srv->cfg.nats_urls, err);
		return -1;
	}
	srv->log = log;
	if (!(srv->outbox = outbox_relay_new(srv->store_at, log, (uint32_t)srv->cfg.node_id)))
		return -1;
	if (writer_set_outbox(srv->writer, relay_committed, srv->outbox) < 0)
		return -1;
	log_info("outbox: committed messages and receipts go to the event log at %s (%d replicas)",
	         srv->cfg.nats_urls, o.replicas);
	return 0;
}

/* In a fleet the login guards of all nodes hear of each other's failures
 * and successes (loginguard.h), as bus notes of kind 'L'. */
static void share_login(void *ud, const void *note, size_t len)
{
	bus_redis_note(((server_t *)ud)->bus, 'L', note, len);
}

static void heard_login(void *ud, const uint8_t *note, size_t len)
{
	server_t *srv = ud;

	if (loginguard_apply_note(srv->logins, note, len, clock_wall_ms()) < 0)
		log_warn("bus: dropped a malformed login note of %zu bytes", len);
}

/* Per-address budgets are shared by the fleet (budget.h): the load
 * balancer routes by user, so one address's sign-ups, logins and
 * unauthenticated requests reach every node. Each is a note kind of its
 * own; a note from a newer or older node that does not parse is logged
 * and dropped. */
static void share_signups(void *ud, const void *note, size_t len)
{
	bus_redis_note(((server_t *)ud)->bus, 'S', note, len);
}

static void share_logins(void *ud, const void *note, size_t len)
{
	bus_redis_note(((server_t *)ud)->bus, 'G', note, len);
}

static void share_address_work(void *ud, const void *note, size_t len)
{
	bus_redis_note(((server_t *)ud)->bus, 'W', note, len);
}

static void heard_spends(budget_t *b, const char *what, const uint8_t *note, size_t len)
{
	if (b && budget_apply_note(b, note, len, clock_mono_ms()) < 0)
		log_warn("bus: dropped a malformed %s budget note of %zu bytes", what, len);
}

static void heard_signups(void *ud, const uint8_t *note, size_t len)
{
	heard_spends(((server_t *)ud)->signup_budget, "sign-up", note, len);
}

static void heard_logins(void *ud, const uint8_t *note, size_t len)
{
	heard_spends(((server_t *)ud)->login_budget, "login", note, len);
}

static void heard_address_work(void *ud, const uint8_t *note, size_t len)
{
	heard_spends(((server_t *)ud)->work_budget, "work", note, len);
}

/* Senders' budgets: routing keeps a user's sockets on one node, so they
 * are shared only for a user who has connections on other nodes too
 * (as the connection cap's count from Redis says, with the cap on): a
 * user connected to several nodes directly, or moved mid-failover. What
 * the writer admitted for such a user is told as notes 'R' (recipients)
 * and 'D' (bytes stored); the others charge their writer's budgets. */
static void share_recipients(void *ud, const void *note, size_t len)
{
	bus_redis_note(((server_t *)ud)->bus, 'R', note, len);
}

static void share_stored(void *ud, const void *note, size_t len)
{
	bus_redis_note(((server_t *)ud)->bus, 'D', note, len);
}

static void sender_admitted(void *ud, int64_t user, double recipients, double bytes, int64_t now_ms)
{
	server_t *srv = ud;

	if (bus_redis_elsewhere(srv->bus, user) == 0)
		return;
	if (recipients > 0)
		spends_add(srv->sent_recipients, (uint64_t)user, recipients, now_ms);
	if (bytes > 0)
		spends_add(srv->sent_bytes, (uint64_t)user, bytes, now_ms);
}

typedef struct heard_ctx {
	server_t *srv;
	int bytes;
	int64_t now_ms;
} heard_ctx_t;

static void charge_sender(void *ud, uint64_t key, double cost)
{
	heard_ctx_t *h = ud;

	if (key > 0 && key <= INT64_MAX)
		writer_charge(h->srv->writer, (int64_t)key, h->bytes ? 0 : cost, h->bytes ? cost : 0, h->now_ms);
}

static void heard_sender(server_t *srv, int bytes, const uint8_t *note, size_t len)
{
	heard_ctx_t h = {srv, bytes, clock_wall_ms()};

	if (spends_parse(note, len, charge_sender, &h) < 0)
		log_warn("bus: dropped a malformed %s budget note of %zu bytes", bytes ? "storage" : "sending", len);
}

static void heard_recipients(void *ud, const uint8_t *note, size_t len)
{
	heard_sender(ud, 0, note, len);
}

static void heard_stored(void *ud, const uint8_t *note, size_t len)
{
	heard_sender(ud, 1, note, len);
}

/* Each heartbeat, on the bus thread: what the shared budgets gathered
 * and no later take has sent yet (a node gone quiet), and a word when a
 * flush interval held more addresses than a note carries. */
static void share_beat(void *ud)
{
	server_t *srv = ud;
	budget_t *bs[] = {srv->signup_budget, srv->login_budget, srv->work_budget};
	unsigned long long dropped = 0;
	int64_t now = clock_mono_ms();
	size_t i;

	for (i = 0; i < sizeof bs / sizeof *bs; i++)
		if (bs[i]) {
			budget_share_flush(bs[i], now);
			dropped += budget_share_dropped(bs[i]);
		}
	if (srv->sent_recipients) {
		int64_t wall = clock_wall_ms();
		spends_flush(srv->sent_recipients, wall);
		spends_flush(srv->sent_bytes, wall);
		dropped += spends_dropped(srv->sent_recipients) + spends_dropped(srv->sent_bytes);
	}
	if (dropped > srv->share_dropped_logged && now - srv->share_dropped_logged_at >= 10000) {
		log_warn("budgets: %llu spends not shared with the fleet (more than %d addresses spent within %d ms)",
		         dropped - srv->share_dropped_logged, SPENDS_KEYS, SPENDS_EVERY_MS);
		srv->share_dropped_logged = dropped;
		srv->share_dropped_logged_at = now;
	}
}

static int share_budgets(server_t *srv)
{
	if ((srv->signup_budget && (budget_set_share(srv->signup_budget, share_signups, srv) < 0 ||
	                            bus_redis_on_note(srv->bus, 'S', heard_signups, srv) < 0)) ||
	    (srv->login_budget && (budget_set_share(srv->login_budget, share_logins, srv) < 0 ||
	                           bus_redis_on_note(srv->bus, 'G', heard_logins, srv) < 0)) ||
	    (srv->work_budget && (budget_set_share(srv->work_budget, share_address_work, srv) < 0 ||
	                          bus_redis_on_note(srv->bus, 'W', heard_address_work, srv) < 0))) {
		log_error("out of memory sharing the budgets");
		return -1;
	}
	if (srv->cfg.max_user_connections && (srv->cfg.rate_limit > 0 || srv->cfg.storage_per_day > 0)) {
		if (!(srv->sent_recipients = spends_new(share_recipients, srv)) ||
		    !(srv->sent_bytes = spends_new(share_stored, srv)) ||
		    bus_redis_on_note(srv->bus, 'R', heard_recipients, srv) < 0 ||
		    bus_redis_on_note(srv->bus, 'D', heard_stored, srv) < 0) {
			log_error("out of memory sharing the senders' budgets");
			return -1;
		}
		writer_on_admit(srv->writer, sender_admitted, srv);
	}
	bus_redis_on_beat(srv->bus, share_beat, srv);
	return 0;
}

server_t *server_start(const server_config_t *cfg)
{
	server_t *srv = calloc(1, sizeof *srv);
	store_t *st;
	bus_sink_t sink;
	gw_handlers_t h;

	if (!srv)
		return NULL;
	srv->cfg = *cfg;
	srv->store_at = srv->cfg.store_url[0] ? srv->cfg.store_url : srv->cfg.data_dir;
	if (srv->cfg.workers <= 0)
		srv->cfg.workers = srv->cfg.threads < 2 ? 2 : srv->cfg.threads;
	atomic_init(&srv->draining, 0);
	signal(SIGPIPE, SIG_IGN);

	if (cfg->fast_password_hashing)
		log_warn("--fast-password-hashing: new passwords get Argon2id's minimum cost; "
		         "for tests and benchmarks only");
	if (auth_init(cfg->fast_password_hashing) < 0) {
		log_error("cannot initialise libsodium");
		goto err;
	}
	if (cfg->operator_token_file[0] && load_operator_token(srv, cfg->operator_token_file) < 0)
		goto err;
	{
		char e[256];
		if (addr_list_parse(cfg->trusted_proxies, strlen(cfg->trusted_proxies), &srv->trusted_proxies,
		                    e, sizeof e) < 0) {
			log_error("--trusted-proxies: %s", e);
			goto err;
		}
	}
	if (cfg->proxy_protocol && srv->trusted_proxies.n == 0) {
		log_error("--proxy-protocol needs --trusted-proxies: the addresses that send the header");
		goto err;
	}
	if (cfg->public_url[0] && !origin_url_valid(cfg->public_url)) {
		log_error("--public-url wants http:// or https:// and a host, not '%s'", cfg->public_url);
		goto err;
	}
	/* Claimed (locked, its schema brought up to date or refused) and
	 * opened once here, so that a bad store fails before we listen. */
	if (!(srv->store_claim = store_claim(srv->store_at)))
		goto err;
	if (!(st = store_open(srv->store_at)))
		goto err;
	/* Made at the first start, kept in the store, shared by a fleet. */
	srv->vapid = vapid_load(st);
	store_close(st);
	if (!srv->vapid)
		goto err;
	if (cfg->push_allow_http_endpoints)
		log_warn("--push-allow-http-endpoints: Web Push endpoints may be http:// and local; for tests only");
	if (!(srv->writer = writer_new(srv->store_at, cfg->node_id, 65536, cfg->store_writers, chat_writer_done, srv)))
		goto err;
	if (writer_set_rate_limit(srv->writer, cfg->rate_limit, cfg->rate_burst) < 0 ||
	    writer_set_storage_limit(srv->writer, cfg->storage_per_day) < 0)
		goto err;
	writer_set_commit_delay(srv->writer, cfg->commit_delay_us);
	if (cfg->nats_urls[0] && start_outbox(srv) < 0)
		goto err;
	/* Per (name, address) 5 failed logins free, then waits from 1 s
	 * doubling up to 15 min; per name, 100 from all addresses. */
	if (!(srv->logins = loginguard_new(5, 15 * 60 * 1000)))
		goto err;
	if (!(srv->addrconns = addrconns_new(cfg->max_address_connections, cfg->max_address_pending)))
		goto err;
	/* Budgets per client address, in fixed tables: a spray of addresses
	 * cannot grow them. Each refills at its rate up to one period's worth. */
	if (cfg->signup_rate > 0 &&
	    !(srv->signup_budget = budget_new(1 << 16, cfg->signup_rate / 3600.0, cfg->signup_rate)))
		goto err;
	if (cfg->login_rate > 0 &&
	    !(srv->login_budget = budget_new(1 << 16, cfg->login_rate / 60.0, cfg->login_rate)))
		goto err;
	if (cfg->work_rate > 0 && !(srv->work_budget = budget_new(1 << 16, cfg->work_rate, cfg->work_burst)))
		goto err;
	if (cfg->read_rate > 0 && !(srv->read_budget = budget_new(1 << 16, cfg->read_rate, cfg->read_burst)))
		goto err;
	if (!(srv->tickets = tickets_new(65536)))
		goto err;
	if (!(srv->workers = workers_new(srv->cfg.workers, srv->store_at, WORKER_QUEUE)))
		goto err;
	/* Each password hash takes tens of milliseconds and 64 MiB: sign-ups
	 * and logins get their own small pool and short queue, so a burst of
	 * them (or someone trying passwords) cannot hold up token checks,
	 * history and resumes, and waits are refused early with 503. */
	if (!(srv->hashers = workers_new(srv->cfg.workers > 2 ? srv->cfg.workers / 2 : 1, srv->store_at,
	                                 HASH_QUEUE)))
		goto err;
	/* Fair shares: one address holds at most a few places in the hashing
	 * queue, one client at most a sixty-fourth of the worker queue, and
	 * a newcomer evicts the newest job of whoever holds the most. */
	workers_set_flow_cap(srv->hashers, HASH_QUEUE_PER_ADDRESS);
	workers_set_flow_cap(srv->workers, WORKER_QUEUE / 64);
	if (!(srv->web = webfiles_load(cfg->web_dir)))
		goto err;
	h = routes_handlers(srv);
	if (!(srv->gw = gateway_new(srv, &h)))
		goto err;
	sink = (bus_sink_t){sink_deliver, sink_kick, sink_presence, srv};
	/* With --redis the node joins a fleet: bus_redis_new fails (and
	 * says why) when Redis cannot be reached or the node id is taken. */
	if (cfg->redis_url[0]) {
		bus_redis_opts_t ro = {cfg->heartbeat_ms, 0};
		srv->bus = bus_redis_open(&sink, cfg->node_id, cfg->max_user_connections, cfg->redis_url, &ro);
	}
	else
		srv->bus = bus_local_new(&sink, cfg->node_id, cfg->max_user_connections);
	if (!srv->bus)
		goto err;
	if (cfg->redis_url[0]) {
		if (bus_redis_on_note(srv->bus, 'L', heard_login, srv) < 0)
			goto err;
		loginguard_set_share(srv->logins, share_login, srv);
		if (share_budgets(srv) < 0)
			goto err;
	}
	if (!(srv->tally = tally_new(srv, cfg->receipts_interval_ms)))
		goto err;
	if (!(srv->presence = presence_new(srv, cfg->presence_grace_ms)))
		goto err;
	/* The fan-out thread reads group members through a handle of its own. */
	if (!(srv->fanout_store = store_open(srv->store_at)))
		goto err;
	/* 64K queued group messages; members are read one message at a time. */
	if (!(srv->fanout = fanout_new(srv->bus, 65536, lookup_members, srv->fanout_store)))
		goto err;
	/* With the log, other nodes' connections get this node's messages
	 * from the log's dispatchers (dispatch.h), this node's share of which
	 * runs here. */
	if (srv->log && !(srv->dispatch = dispatch_new(srv->log, srv->bus, srv->fanout, srv->tally, cfg->node_id)))
		goto err;
	if (start_push(srv) < 0)
		goto err;
	if (gateway_start(srv->gw) < 0)
		goto err;
	log_info("ready: %d I/O threads, %d workers", srv->cfg.threads, srv->cfg.workers);
	return srv;
err:
	if (srv->gw)
		gateway_shutdown(srv->gw, 0);
	server_free(srv);
	return NULL;
}

int server_port(const server_t *srv)
{
	return gateway_port(srv->gw);
}

int server_admin_port(const server_t *srv)
{
	return gateway_admin_port(srv->gw);
}

/* Tells the WebSockets to reconnect (1012), a batch every DRAIN_STEP_MS
 * spread over the drain window, so that a node's clients arrive at the
 * other nodes a few at a time instead of all at once. They stay served
 * until their turn; one with a send awaiting its ack waits for the ack,
 * until the window's end. The listeners are closed already: the load
 * balancer's checks fail and new connections go to other nodes. */
#define DRAIN_STEP_MS 100
#define DRAIN_ACKS_MS 1000

static void drain_websockets(server_t *srv)
{
	int64_t start = clock_mono_ms(), end = start + (int64_t)srv->cfg.drain_seconds * 1000;
	gateway_stats_t gs;
	uint64_t total, steps, per_step;
	unsigned per_thread;

	gateway_stats(srv->gw, &gs);
	if (!(total = gs.websockets))
		return;
	steps = srv->cfg.drain_seconds > 0 ? (uint64_t)srv->cfg.drain_seconds * 1000 / DRAIN_STEP_MS : 1;
	per_step = (total + steps - 1) / steps;
	per_thread = (unsigned)((per_step + (uint64_t)srv->cfg.threads - 1) / (uint64_t)srv->cfg.threads);
	log_info("drain: telling %llu WebSockets to reconnect over %d s", (unsigned long long)total,
	         srv->cfg.drain_seconds);
	/* After the window, a last DRAIN_ACKS_MS for the acks of sockets
	 * still sending; then whoever is left goes, acks or not (a client
	 * retries an unacknowledged send with its cmid, on its next node). */
	for (;;) {
		int64_t now = clock_mono_ms();
		int last = now >= end + DRAIN_ACKS_MS;
		gateway_close_websockets(srv->gw, now < end ? per_thread : UINT32_MAX, last);
		if (last)
			break;
		usleep(DRAIN_STEP_MS * 1000);
		gateway_stats(srv->gw, &gs);
		if (!gs.websockets)
			break;
	}
	/* The last closes are flushed by gateway_shutdown's grace. */
	log_info("drain: done in %lld ms", (long long)(clock_mono_ms() - start));
}

void server_stop(server_t *srv)
{
	writer_counts_t wc;

	/* Stop taking connections and tell the clients to go, a batch at a
	 * time; then stop taking work, let the writer store and acknowledge
	 * everything it was given, and say goodbye to whoever is left. */
	gateway_stop_accepting(srv->gw);
	drain_websockets(srv);
	atomic_store(&srv->draining, 1);
	/* Frames read before the flag was set may still be on their way to
	 * the writer; wait for every I/O thread to finish its turn so that
	 * the drain below covers them, and their acks precede the 1001. */
	gateway_quiesce(srv->gw);
	writer_drain(srv->writer);
	fanout_drain(srv->fanout);
	gateway_shutdown(srv->gw, SHUTDOWN_GRACE_MS);
	writer_counts(srv->writer, &wc);
	log_info("stopped: %llu ops stored in %llu commits", (unsigned long long)wc.ops,
	         (unsigned long long)wc.commits);
	server_free(srv);
}

int server_run(const server_config_t *cfg)
{
	server_t *srv;
	sigset_t sigs;
	int sig;
	char store[4200];

	/* Block the stop signals before any thread starts, so every thread
	 * inherits the mask and only sigwait below receives them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	if (!(srv = server_start(cfg)))
		return 1;
	/* A store URL may hold a password: only the backend's name is shown. */
	snprintf(store, sizeof store, "%s %s", store_backend_name(srv->store_at),
	         cfg->store_url[0] ? "(--store)" : cfg->data_dir);
	if (cfg->admin_host[0])
		printf("parley: listening on http://%s:%d (threads %d, store %s, node %u, admin http://%s:%d)\n",
		       cfg->host, server_port(srv), srv->cfg.threads, store, cfg->node_id, cfg->admin_host,
		       server_admin_port(srv));
	else
		printf("parley: listening on http://%s:%d (threads %d, store %s, node %u)\n", cfg->host,
		       server_port(srv), srv->cfg.threads, store, cfg->node_id);
	fflush(stdout);
	while (sigwait(&sigs, &sig) != 0)
		;
	log_info("%s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
	server_stop(srv);
	return 0;
}
