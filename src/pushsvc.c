/* pushsvc.c - `parley push`, the push service of a fleet; see pushsvc.h. */
#include "pushsvc.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "eventlog.h"
#include "http.h"
#include "jbuf.h"
#include "log.h"
#include "metrics.h"
#include "push.h"
#include "store.h"
#include "vapid.h"

/* The operator listener's limits: it answers one short request at a
 * time, and gives a slow client this long. */
#define ADMIN_REQUEST_MAX 8192
#define ADMIN_TIMEOUT_MS 2000

typedef struct svc {
	const server_config_t *cfg;
	eventlog_t *log;
	push_t *push;
	unsigned shard, shards;
	atomic_uint_fast64_t events, malformed, ignored, refused;
	atomic_uint partitions;
	/* the operator listener */
	int admin_fd;
	int admin_port;
	atomic_int stopping;
	pthread_t admin;
	int admin_started;
} svc_t;

static int64_t get_int(const json_t *o, const char *key, int64_t dflt)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

/* An event that cannot be an event of ours is logged (the first, then
 * one in a thousand) and acknowledged: refusing it would hold its
 * partition up for good. */
static void malformed(svc_t *s, const eventlog_event_t *ev, const char *why)
{
	uint64_t n = atomic_fetch_add(&s->malformed, 1) + 1;

	if (n == 1 || n % 1000 == 0)
		log_warn("push: dropped event %" PRIu64 " of partition %u (%s): %s (%" PRIu64 " so far)", ev->seq,
		         ev->partition, ev->type, why, n);
}

/* A message.new event (outbox.h): the protocol's MESSAGE object with its
 * conversation's kind, a direct chat's two members and a group's
 * membership version; an event swept from the outbox has neither, and
 * the push path reads the members itself. */
static int on_message(svc_t *s, const eventlog_event_t *ev, const json_t *o)
{
	const char *kind = json_string_value(json_object_get(o, "conv_kind"));
	json_t *jm = json_object_get(o, "members"), *jbody = json_object_get(o, "body");
	int64_t conv = get_int(o, "conv", 0), seq = get_int(o, "seq", 0), from = get_int(o, "from", 0),
	        ts = get_int(o, "ts", 0), members[2];
	size_t n = 0, i;
	int direct = kind && !strcmp(kind, "direct");

	if (conv <= 0 || seq <= 0 || from <= 0 || !json_is_string(jbody)) {
		malformed(s, ev, "not a message");
		return 0;
	}
	/* An edit, delete or reaction wakes nobody: it changes what a
	 * device shows when it next looks. */
	if (json_is_string(json_object_get(o, "kind")))
		return 0;
	if (direct && json_is_array(jm) && json_array_size(jm) <= 2)
		for (i = 0; i < json_array_size(jm); i++)
			if ((members[n] = json_integer_value(json_array_get(jm, i))) > 0)
				n++;
	/* A group, or a conversation of unknown kind: its members (those who
	 * joined before seq) are read from the store. */
	if (push_message(s->push, conv, direct && n ? STORE_DIRECT : STORE_GROUP, seq, from, direct && n ? members : NULL,
	                 direct && n ? n : 0, direct ? 0 : get_int(o, "members_version", INT64_MAX),
	                 json_string_value(jbody), json_string_length(jbody), ts) < 0)
		return -1;
	return 0;
}

static int on_receipt(svc_t *s, const eventlog_event_t *ev, const json_t *o)
{
	const char *state = json_string_value(json_object_get(o, "state"));
	int64_t conv = get_int(o, "conv", 0), seq = get_int(o, "seq", -1), user = get_int(o, "user", 0),
	        device = get_int(o, "device", 0);

	if (conv <= 0 || seq < 0 || user <= 0 || !state || (strcmp(state, "read") && strcmp(state, "delivered"))) {
		malformed(s, ev, "not a receipt");
		return 0;
	}
	return push_receipt(s->push, conv, user, device, strcmp(state, "read") ? STORE_DELIVERED : STORE_READ, seq);
}

/* On the log's consumer thread of the event's partition. A push path
 * whose queue is full refuses the event, and the log delivers it again
 * after a backoff: the backlog waits in the log, not in memory. */
static int on_event(void *ud, const eventlog_event_t *ev)
{
	svc_t *s = ud;
	json_error_t err;
	json_t *o = json_loadb(ev->data, ev->len, JSON_REJECT_DUPLICATES, &err);
	int rc = 0;

	if (!json_is_object(o))
		malformed(s, ev, o ? "not an object" : err.text);
	else if (!strcmp(ev->type, "message.new"))
		rc = on_message(s, ev, o);
	else if (!strncmp(ev->type, "receipt.", 8))
		rc = on_receipt(s, ev, o);
	else
		atomic_fetch_add(&s->ignored, 1);
	json_decref(o);
	if (rc)
		atomic_fetch_add(&s->refused, 1);
	else
		atomic_fetch_add(&s->events, 1);
	return rc;
}

/* Whether conv is in this process's shard (the recovery's filter). */
static int in_shard(void *ud, int64_t conv)
{
	svc_t *s = ud;

	return eventlog_partition_of(s->log, conv) % s->shards == s->shard;
}

/* ---- the operator listener: /metrics and /healthz ------------------------------------ */

static sbuf_t *admin_answer(svc_t *s, const http_request_t *rq)
{
	jbuf_t b;
	sbuf_t *r;

	if (http_is(rq, "GET", "/healthz"))
		return http_response(200, "application/json", "{\"status\":\"ok\"}", 15, 0, NULL);
	if (!http_is(rq, "GET", "/metrics"))
		return http_error_response(404, "not_found", "this listener serves /metrics and /healthz", 0, NULL);
	jbuf_init(&b);
	metrics_metric(&b, "parley_push_log_events_total", "counter", "Events of the log handed to the push path.",
	               (double)atomic_load(&s->events));
	metrics_metric(&b, "parley_push_log_refused_total", "counter",
	               "Events refused while the push path's queue was full (the log delivers them again).",
	               (double)atomic_load(&s->refused));
	metrics_metric(&b, "parley_push_log_malformed_total", "counter",
	               "Events that did not parse (logged, acknowledged).", (double)atomic_load(&s->malformed));
	metrics_metric(&b, "parley_push_log_partitions", "gauge", "The log's partitions this process consumes.",
	               (double)atomic_load(&s->partitions));
	metrics_push(&b, s->push);
	r = b.oom ? NULL : http_response(200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, 0, NULL);
	jbuf_free(&b);
	return r ? r : http_error_response(503, "unavailable", "out of memory", 0, NULL);
}

/* One connection: a request head within ADMIN_TIMEOUT_MS, one answer,
 * closed. Blocking, on this thread of its own (never the push path's). */
static void admin_serve(svc_t *s, int fd)
{
	char buf[ADMIN_REQUEST_MAX];
	size_t len = 0;
	http_request_t rq;
	int head = HTTP_INCOMPLETE;
	sbuf_t *r = NULL;

	while (len < sizeof buf && head == HTTP_INCOMPLETE) {
		struct pollfd pf = {fd, POLLIN, 0};
		ssize_t k;
		if (poll(&pf, 1, ADMIN_TIMEOUT_MS) != 1)
			return;
		if ((k = read(fd, buf + len, sizeof buf - len)) <= 0)
			return;
		len += (size_t)k;
		head = http_parse_request(buf, len, &rq);
	}
	if (head < 0)
		r = http_error_response(400, "bad_request", "malformed or oversized request", 0, NULL);
	else
		r = admin_answer(s, &rq);
	if (r) {
		size_t off = 0;
		while (off < r->len) {
			ssize_t k = write(fd, r->data + off, r->len - off);
			if (k <= 0)
				break;
			off += (size_t)k;
		}
		sbuf_unref(r);
	}
}

static void *admin_main(void *arg)
{
	svc_t *s = arg;

	log_set_thread_name("push-admin");
	while (!atomic_load(&s->stopping)) {
		struct pollfd pf = {s->admin_fd, POLLIN, 0};
		int fd;

		if (poll(&pf, 1, 250) != 1)
			continue;
		if ((fd = accept(s->admin_fd, NULL, NULL)) < 0)
			continue;
		admin_serve(s, fd);
		close(fd);
	}
	return NULL;
}

static int admin_listen(svc_t *s, const char *host, int port)
{
	struct addrinfo hints = {0}, *ai = NULL;
	struct sockaddr_storage sa;
	socklen_t salen = sizeof sa;
	char service[16];
	int one = 1, rc;

	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(service, sizeof service, "%d", port);
	if ((rc = getaddrinfo(host, service, &hints, &ai)) != 0) {
		log_error("--admin-listen %s:%d: %s", host, port, gai_strerror(rc));
		return -1;
	}
	s->admin_fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->admin_fd < 0 || setsockopt(s->admin_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    bind(s->admin_fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(s->admin_fd, 16) < 0 ||
	    getsockname(s->admin_fd, (struct sockaddr *)&sa, &salen) < 0) {
		log_error("--admin-listen %s:%d: %s", host, port, strerror(errno));
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	s->admin_port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
	                                               : ((struct sockaddr_in *)&sa)->sin_port);
	if (pthread_create(&s->admin, NULL, admin_main, s) != 0)
		return -1;
	s->admin_started = 1;
	return 0;
}

/* ---- the process ----------------------------------------------------------------- */

int pushsvc_run(const server_config_t *cfg)
{
	svc_t s = {0};
	eventlog_opts_t o;
	push_config_t pc;
	char err[256], contact[SERVER_CONTACT_MAX];
	vapid_t *vapid = NULL;
	store_t *st = NULL;
	sigset_t sigs;
	unsigned i;
	int sig, servers = 1, status = 1;
	const char *c, *store_at = cfg->store_url[0] ? cfg->store_url : cfg->data_dir;

	s.cfg = cfg;
	s.admin_fd = -1;
	s.shard = cfg->push_shard;
	s.shards = cfg->push_shards ? cfg->push_shards : 1;
	if (!cfg->nats_urls[0]) {
		log_error("parley push reads the fleet's event log: give it --nats (and the fleet's --store)");
		return 2;
	}
	if (!cfg->store_url[0]) {
		log_error("parley push shares the fleet's store: give it --store postgresql://...");
		return 2;
	}
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* The store's schema must be the one this binary knows (a node, or
	 * `parley migrate`, brings it up to date: never the push service). */
	if (!(st = store_open(store_at)))
		goto out;
	vapid = vapid_load(st);
	store_close(st);
	if (!vapid)
		goto out;
	for (c = cfg->nats_urls; *c; c++)
		servers += *c == ',';
	eventlog_opts_init(&o);
	o.replicas = cfg->nats_replicas ? cfg->nats_replicas : servers >= 3 ? 3 : 1;
	if (cfg->nats_log[0])
		o.name = cfg->nats_log;
	if (!(s.log = eventlog_open(cfg->nats_urls, &o, err, sizeof err))) {
		log_error("--nats %s: %s", cfg->nats_urls, err);
		goto out;
	}
	if (s.shard >= s.shards || s.shards > eventlog_partitions(s.log)) {
		log_error("--push-shard %u/%u: the log has %u partitions; a shard is I/N with I < N <= %u", s.shard,
		          s.shards, eventlog_partitions(s.log), eventlog_partitions(s.log));
		goto out;
	}
	if (server_push_config(cfg, store_at, vapid, &pc, contact) < 0)
		goto out;
	pc.connected = NULL; /* this process sees no sockets: everyone gets the grace */
	pc.accept = in_shard;
	pc.accept_ud = &s;
	if (!(s.push = push_new(&pc)))
		goto out;
	for (i = 0; i < eventlog_partitions(s.log); i++) {
		int rc;
		if (i % s.shards != s.shard)
			continue;
		if ((rc = eventlog_consume(s.log, PUSHSVC_GROUP, i, on_event, &s)) < 0) {
			log_error("push: cannot consume partition %u of the log: %s", i, strerror(-rc));
			goto out;
		}
		atomic_fetch_add(&s.partitions, 1);
	}
	if (cfg->admin_host[0] && admin_listen(&s, cfg->admin_host, cfg->admin_port) < 0)
		goto out;
	if (s.admin_started)
		printf("parley: push service on %u of %u partitions of the log (shard %u/%u), admin http://%s:%d\n",
		       atomic_load(&s.partitions), eventlog_partitions(s.log), s.shard, s.shards, cfg->admin_host,
		       s.admin_port);
	else
		printf("parley: push service on %u of %u partitions of the log (shard %u/%u)\n",
		       atomic_load(&s.partitions), eventlog_partitions(s.log), s.shard, s.shards);
	fflush(stdout);
	while (sigwait(&sigs, &sig) != 0)
		;
	log_info("%s: shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
	status = 0;
out:
	atomic_store(&s.stopping, 1);
	if (s.admin_started)
		pthread_join(s.admin, NULL);
	if (s.admin_fd >= 0)
		close(s.admin_fd);
	/* The consumers first: no handler runs once the push path is gone.
	 * Events fetched and not handled go back to the log. */
	eventlog_close(s.log);
	push_free(s.push);
	vapid_free(vapid);
	return status;
}
