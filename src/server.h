/* server.h - the parts of one running node and its settings.
 *
 * main.c fills the configuration, server_run builds the parts in order
 * (store schema, writer, workers, bus, gateway), serves until SIGINT or
 * SIGTERM, then takes them down in the order that loses nothing: stop
 * accepting, let the writer finish and acknowledge what it holds, close
 * WebSockets with 1001, flush, exit. */
#ifndef PARLEY_SERVER_H
#define PARLEY_SERVER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "clientaddr.h"

typedef struct bus bus_t;
typedef struct writer writer_t;
typedef struct workers workers_t;
typedef struct gateway gateway_t;
typedef struct tally tally_t;
typedef struct fanout fanout_t;
typedef struct presence presence_t;
typedef struct webfiles webfiles_t;
typedef struct loginguard loginguard_t;
typedef struct addrconns addrconns_t;
typedef struct budget budget_t;
typedef struct tickets tickets_t;
typedef struct outbox_relay outbox_relay_t;
typedef struct dispatch dispatch_t;
typedef struct eventlog eventlog_t;
typedef struct push_config push_config_t;
typedef struct vapid vapid_t;

typedef struct server_config {
	char host[256];
	int port;                 /* 0: any free port (printed when ready) */
	char data_dir[4096];      /* the embedded store's directory */
	char store_url[4096];     /* --store: a store's location (store.h); "" for data_dir */
	char redis_url[512];      /* --redis: the fleet's Redis (bus_redis.c); "": this node alone */
	int heartbeat_ms;         /* --heartbeat-ms: a fleet node's beat (dead after 3, id free after 5) */
	char nats_urls[2048];     /* --nats: the event log's servers (outbox.h); "": no log */
	int nats_replicas;        /* --nats-replicas: the log's replicas (0: 3 with 3+ servers, else 1) */
	char nats_log[97];        /* --nats-log (at most 32: the parser keeps 64 spare): the log's (JetStream stream's) name; "": PARLEY */
	int threads;              /* I/O threads; 0: one per core */
	int workers;              /* worker threads; 0: default */
	uint32_t node_id;         /* 0..1023, the snowflake node bits */
	size_t out_limit;         /* bytes queued to one client before it is dropped */
	int ping_interval_s;      /* server pings this often (30) */
	int idle_timeout_s;       /* closes a WebSocket silent this long (75) */
	int drain_seconds;        /* at a stop, WebSockets are closed over this long (10) */
	int http_timeout_s;       /* closes an HTTP connection idle this long */
	int request_timeout_s;    /* a request must arrive whole this soon after its first byte */
	int max_sends_in_flight;  /* per connection, awaiting their ack */
	int edit_window_s;        /* --edit-window: a message may be edited this long after it was sent (0: never) */
	int fast_password_hashing; /* tests and benchmarks only */
	int push_allow_http_endpoints; /* tests only: Web Push endpoints over http, to local hosts */
	int push_off;             /* --no-push: no push notifications from this node */
	unsigned push_shard, push_shards; /* `parley push --push-shard I/N`: the log's partitions p with p % N == I */
	int push_grace_ms;        /* a connected user's devices have this long to deliver before a push */
	int push_coalesce_ms;     /* an unconnected user's burst gathers this long into one push */
	unsigned push_senders;    /* the push path's sender threads */
	unsigned push_concurrency; /* sends in flight per provider */
	double push_rate;         /* sends a second per provider (0: any) */
	int push_max_attempts;    /* tries of one push before it is dead-lettered */
	int push_timeout_ms;      /* one exchange with a provider */
	char push_contact[256];   /* VAPID's contact: mailto: or https: ("": --public-url, or postmaster) */
	char apns_key_file[4096]; /* APNs: the team's .p8 key; "": APNs off */
	char apns_key_id[80], apns_team_id[80]; /* at most 15 (the parser keeps 64 spare); Apple's are 10 */
	char apns_url[512], apns_sandbox_url[512]; /* "": Apple's */
	char fcm_account_file[4096]; /* FCM: a service account's key file; "": FCM off */
	char fcm_url[512];        /* "": Google's */
	int receipts_interval_ms; /* group receipt counts: at most one frame per this */
	double rate_limit;        /* recipients a sender may reach a second (0: off) */
	double rate_burst;        /* ... and at once */
	int presence_grace_ms;    /* offline only after this long disconnected */
	unsigned commit_delay_us; /* writer waits this long for a partial batch (0) */
	unsigned store_writers;   /* the writer's lanes (0: the store's choice) */
	unsigned max_user_connections; /* WebSockets one user may hold at once (0: any) */
	unsigned max_devices;     /* logins kept per user; the oldest goes (0: any) */
	char web_dir[4096];       /* the web client's files; "": none */
	size_t max_partial_bytes; /* input held node-wide for unfinished requests and messages */
	char admin_host[256];     /* the operator listener (/metrics, /healthz); "": none */
	int admin_port;
	char operator_token_file[4096]; /* holds a token that opens /metrics publicly; "": none */
	char trusted_proxies[1024]; /* CIDR list whose X-Forwarded-For / PROXY header is believed */
	int proxy_protocol;       /* trusted proxies send a PROXY header first */
	unsigned max_address_connections; /* per client address (0: any) */
	unsigned max_address_pending;     /* ... of them not yet WebSockets (0: any) */
	double signup_rate;       /* sign-ups per client address per hour (0: any) */
	double login_rate;        /* login attempts per client address per minute (0: any) */
	unsigned max_conversations; /* one user may be in at most this many (0: any) */
	unsigned strangers_per_day; /* people who never wrote to one a user may reach a day (0: any) */
	int token_idle_days;      /* a device unused this long is logged out (0: never) */
	double work_rate;         /* work units (store lookups) a user may cause a second (0: any) */
	double work_burst;        /* ... and at once */
	double storage_per_day;   /* message bytes a user may store a day (0: any) */
	double read_rate;         /* WebSocket bytes a user's connections are read at a second (0: any) */
	double read_burst;        /* ... and at once */
	char public_url[512];     /* the origin browsers use, behind a proxy; "": none */
	char allowed_origins[1024]; /* more origins whose pages may use the API */
} server_config_t;

typedef struct server {
	server_config_t cfg;
	bus_t *bus;
	writer_t *writer;
	workers_t *workers;
	workers_t *hashers;       /* sign-ups and logins: Argon2id, apart from the rest */
	gateway_t *gw;
	tally_t *tally;
	fanout_t *fanout;
	presence_t *presence;
	webfiles_t *web;
	loginguard_t *logins;     /* failed-login backoff per username */
	addr_list_t trusted_proxies;
	addrconns_t *addrconns;   /* connections per client address */
	budget_t *signup_budget;  /* per client address; NULL: unlimited */
	budget_t *login_budget;
	budget_t *work_budget;    /* per user, and per address before login; NULL: unlimited */
	/* In a fleet the per-address ones are shared (budget.h); the bus
	 * thread's count of spends that were not, as last logged. */
	unsigned long long share_dropped_logged;
	/* Senders' spends told to the fleet (server.c); NULL: not shared. */
	struct spends *sent_recipients, *sent_bytes;
	int64_t share_dropped_logged_at;
	budget_t *read_budget;    /* WebSocket input bytes per user; NULL: unlimited */
	tickets_t *tickets;       /* WebSocket tickets */
	struct vapid *vapid;      /* the store's Web Push key (vapid.h) */
	outbox_relay_t *outbox;   /* --nats: the relay to the event log; NULL: none */
	eventlog_t *log;          /* --nats: the log (the relay's: it closes it) */
	dispatch_t *dispatch;     /* --nats: this node's share of the log's fan-out */
	struct push *push;        /* the push path (push.h); NULL: off */
	int has_operator_token;
	uint8_t operator_token_hash[32]; /* SHA-256 of --operator-token-file's token */
	atomic_int draining;      /* shutting down: no new work is taken */
	const char *store_at;     /* the store's location: store_url or data_dir */
	struct store_claim *store_claim; /* held while serving (store.h) */
	struct store *fanout_store;
} server_t;

void server_config_defaults(server_config_t *cfg);

/* Runs a node until SIGINT/SIGTERM. Returns the process exit status. */
int server_run(const server_config_t *cfg);

/* How long back a push path that starts looks for the notifications it
 * owed (push_config_t recover_ms). */
#define PUSH_RECOVER_MS (60 * 60 * 1000)
#define SERVER_CONTACT_MAX 600

/* The push path's settings from cfg's push options, for the store at
 * store_at and its VAPID key: into *out, whose contact points into
 * contact. -1 (logged) when an option is wrong. */
int server_push_config(const server_config_t *cfg, const char *store_at, const vapid_t *vapid, push_config_t *out,
                       char contact[SERVER_CONTACT_MAX]);

/* Starts a node in this process and returns once it accepts traffic:
 * for server_run, and for tests and fuzzers that drive a real node over
 * loopback. NULL (logged) when it cannot start. */
server_t *server_start(const server_config_t *cfg);
/* The ports bound (with port 0 in the configuration, the ones picked). */
int server_port(const server_t *srv);
int server_admin_port(const server_t *srv);
/* Stops the node as SIGTERM would: nothing acknowledged is lost, every
 * WebSocket is closed with 1001. Frees srv. */
void server_stop(server_t *srv);

#endif
