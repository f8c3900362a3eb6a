/* dispatch.c - the log's fan-out dispatchers of dispatch.h. */
#include "dispatch.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "frames.h"
#include "log.h"
#include "loop.h"
#include "snowflake.h"

#define NODES_MAX 1024
#define WARN_EVERY_MS 10000

/* One partition this node may hold; its handler's wait for the fan-out. */
typedef struct part {
	struct dispatch *d;
	int held;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int delivered;
} part_t;

struct dispatch {
	eventlog_t *log;
	bus_t *bus;
	fanout_t *fanout;
	tally_t *tally;
	uint32_t node;
	unsigned nparts;
	part_t *parts;

	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	int stopping;

	atomic_uint_fast64_t messages, receipts, ignored, malformed;
	atomic_uint held;
	atomic_llong malformed_logged_at;
};

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

uint32_t dispatch_owner(unsigned partition, const uint32_t *nodes, size_t n)
{
	uint64_t best = 0, h;
	uint32_t owner = nodes[0];
	size_t i;

	for (i = 0; i < n; i++) {
		h = mix64(((uint64_t)partition << 32) | nodes[i]);
		if (i == 0 || h > best) {
			best = h;
			owner = nodes[i];
		}
	}
	return owner;
}

static void malformed(dispatch_t *d, const eventlog_event_t *ev, const char *why)
{
	long long now = clock_mono_ms(), last = atomic_load(&d->malformed_logged_at);
	uint64_t n = atomic_fetch_add(&d->malformed, 1) + 1;

	if ((!last || now - last >= WARN_EVERY_MS) &&
	    atomic_compare_exchange_strong(&d->malformed_logged_at, &last, now))
		log_warn("dispatch: dropped event %" PRIu64 " of partition %u (%s): %s (%" PRIu64 " so far)",
		         ev->seq, ev->partition, ev->type, why, n);
}

static int64_t get_int(const json_t *o, const char *key, int64_t dflt)
{
	json_t *v = json_object_get(o, key);

	return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

static void delivered(void *ud)
{
	part_t *p = ud;

	pthread_mutex_lock(&p->lock);
	p->delivered = 1;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

/* Hands frame to the fan-out (fanout_submit_scoped, which takes it and
 * members) and waits until every recipient is with the bus: the event is
 * acknowledged only then, not merely once queued. */
static void fan_out(dispatch_t *d, part_t *p, int64_t conv, int64_t seq, int64_t version, sbuf_t *f,
                    int64_t *members, size_t n, int64_t except_user, int64_t except_device, int32_t scope)
{
	pthread_mutex_lock(&p->lock);
	p->delivered = 0;
	pthread_mutex_unlock(&p->lock);
	fanout_submit_scoped(d->fanout, conv, seq, version, f, members, n, except_user, except_device, scope,
	                     delivered, p);
	pthread_mutex_lock(&p->lock);
	while (!p->delivered)
		pthread_cond_wait(&p->cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

/* The members an event names (a direct chat's two), malloc'd into *out;
 * 0 when it names none (swept from the outbox: the fan-out looks them
 * up) or memory is short (likewise). */
static size_t event_members(const json_t *o, int64_t **out)
{
	json_t *jm = json_object_get(o, "members");
	size_t n = 0, i;

	*out = NULL;
	if (!json_is_array(jm) || json_array_size(jm) == 0 || json_array_size(jm) > 2 ||
	    !(*out = malloc(json_array_size(jm) * sizeof **out)))
		return 0;
	for (i = 0; i < json_array_size(jm); i++)
		if (((*out)[n] = json_integer_value(json_array_get(jm, i))) > 0)
			n++;
	if (!n) {
		free(*out);
		*out = NULL;
	}
	return n;
}

/* A message.new event: everyone's connections on the nodes other than
 * the committing one. */
static void on_message(dispatch_t *d, part_t *p, const eventlog_event_t *ev, const json_t *o)
{
	json_t *jid = json_object_get(o, "id"), *jcmid = json_object_get(o, "cmid"),
	       *jbody = json_object_get(o, "body");
	const char *kind = json_string_value(json_object_get(o, "conv_kind"));
	store_message_t m = {0};
	int64_t *members = NULL, version;
	size_t n;
	sbuf_t *f;
	char *end;

	m.conv = get_int(o, "conv", 0);
	m.seq = get_int(o, "seq", 0);
	m.from = get_int(o, "from", 0);
	m.ts = get_int(o, "ts", 0);
	if (json_is_string(jid))
		m.id = strtoll(json_string_value(jid), &end, 10);
	if (m.conv <= 0 || m.seq <= 0 || m.from <= 0 || m.id <= 0 || !json_is_string(jcmid) ||
	    !json_is_string(jbody)) {
		malformed(d, ev, "not a message");
		return;
	}
	m.cmid = (char *)json_string_value(jcmid);
	m.body = (char *)json_string_value(jbody);
	m.body_len = json_string_length(jbody);
	/* An event about an earlier message, or a reply to one (frames.c). */
	if (json_is_string(json_object_get(o, "kind"))) {
		const char *k = json_string_value(json_object_get(o, "kind"));
		m.kind = !strcmp(k, "edit") ? STORE_MSG_EDIT : !strcmp(k, "delete") ? STORE_MSG_DELETE
		       : !strcmp(k, "reaction") ? STORE_MSG_REACTION : -1;
		m.target = get_int(o, "target", 0);
		if (m.kind < 0 || m.target <= 0) {
			malformed(d, ev, "an event of an unknown kind");
			return;
		}
	} else if (json_is_object(json_object_get(o, "reply_to"))) {
		m.target = get_int(json_object_get(o, "reply_to"), "seq", 0);
	}
	n = event_members(o, &members);
	/* A group message carries the membership it was stored under; one
	 * without (swept from the outbox) has its members read afresh. */
	version = kind && !strcmp(kind, "group") ? get_int(o, "members_version", INT64_MAX) : INT64_MAX;
	if (!(f = frames_msg(&m))) {
		free(members);
		log_error("dispatch: out of memory encoding message %lld; recipients will resume", (long long)m.id);
		return;
	}
	/* Every device of every member on every node but the committing one,
	 * which reached its own connections itself (the sending device among
	 * them). */
	fan_out(d, p, m.conv, m.seq, version, f, members, n, m.from, 0, (int32_t)snowflake_node(m.id));
	atomic_fetch_add(&d->messages, 1);
}

/* A receipt.* event. Its frame goes to the reader's other devices and,
 * in a direct chat, to the other member, on every node but the
 * committing one (which reached its own connections; an event swept
 * from the outbox names no node, and goes to every node: a repeated
 * receipt frame only says again what the client has). In a group the
 * counts change for the messages it covers (from the previous watermark,
 * when the event knows it; else the one it names, and the rest follow
 * with the next receipt): the partition's dispatcher counts, so one node
 * counts each group. */
static void on_receipt(dispatch_t *d, part_t *p, const eventlog_event_t *ev, const json_t *o)
{
	const char *kind = json_string_value(json_object_get(o, "conv_kind")),
	           *state = json_string_value(json_object_get(o, "state"));
	int64_t conv = get_int(o, "conv", 0), seq = get_int(o, "seq", 0), prev = get_int(o, "prev", -1),
	        user = get_int(o, "user", 0), device = get_int(o, "device", 0), node = get_int(o, "node", -1);
	int32_t scope = node >= 0 && node < NODES_MAX ? (int32_t)node : BUS_EVERY_NODE;
	int group = kind && !strcmp(kind, "group");
	int64_t *members;
	size_t n;
	sbuf_t *f;

	if (conv <= 0 || seq < 0 || user <= 0 || !state || (strcmp(state, "read") && strcmp(state, "delivered"))) {
		malformed(d, ev, "not a receipt");
		return;
	}
	if (group && d->tally && seq > 0)
		tally_mark(d->tally, conv, prev >= 0 && prev < seq ? prev + 1 : seq, seq);
	if (!(f = frames_receipt(conv, user, strcmp(state, "read") ? STORE_DELIVERED : STORE_READ, seq))) {
		log_error("dispatch: out of memory encoding a receipt of conversation %lld; its readers resume",
		          (long long)conv);
		return;
	}
	if (group) {
		bus_deliver_scoped(d->bus, scope, &user, 1, user, device, f, NULL, NULL);
		sbuf_unref(f);
	} else {
		/* Both members but the reading device; a swept event's members
		 * are looked up (kind unknown: a group's would be every member,
		 * whom a receipt frame is not for, so only what says direct). */
		n = event_members(o, &members);
		if (kind || n)
			fan_out(d, p, conv, seq, INT64_MAX, f, members, n, user, device, scope);
		else {
			bus_deliver_scoped(d->bus, scope, &user, 1, user, device, f, NULL, NULL);
			sbuf_unref(f);
		}
	}
	atomic_fetch_add(&d->receipts, 1);
}

static int handle(dispatch_t *d, part_t *p, const eventlog_event_t *ev)
{
	json_error_t err;
	json_t *o = json_loadb(ev->data, ev->len, JSON_REJECT_DUPLICATES, &err);

	/* An event that cannot be handled is acknowledged: refusing it would
	 * hold its partition up for good. */
	if (!json_is_object(o))
		malformed(d, ev, o ? "not an object" : err.text);
	else if (!strcmp(ev->type, "message.new"))
		on_message(d, p, ev, o);
	else if (!strncmp(ev->type, "receipt.", 8))
		on_receipt(d, p, ev, o);
	else
		atomic_fetch_add(&d->ignored, 1);
	json_decref(o);
	return 0;
}

static int on_event(void *ud, const eventlog_event_t *ev)
{
	part_t *p = ud;

	return handle(p->d, p, ev);
}

int dispatch_handle(dispatch_t *d, const eventlog_event_t *ev)
{
	return ev->partition < d->nparts ? handle(d, &d->parts[ev->partition], ev) : -1;
}

/* Takes and gives up partitions to match the owners of the live nodes'
 * list; says what changed. */
static void rebalance(dispatch_t *d, uint32_t *nodes)
{
	size_t n = bus_nodes(d->bus, nodes, NODES_MAX);
	unsigned i, gained = 0, lost = 0;

	if (n > NODES_MAX)
		n = NODES_MAX;
	for (i = 0; i < d->nparts; i++) {
		part_t *p = &d->parts[i];
		int mine = dispatch_owner(i, nodes, n) == d->node;
		int rc;

		if (mine && !p->held) {
			if ((rc = eventlog_consume(d->log, DISPATCH_GROUP, i, on_event, p)) == 0 || rc == -EEXIST) {
				p->held = 1;
				gained++;
			} else {
				log_warn("dispatch: cannot consume partition %u: %s; trying again", i, strerror(-rc));
			}
		} else if (!mine && p->held) {
			eventlog_unconsume(d->log, DISPATCH_GROUP, i);
			p->held = 0;
			lost++;
		}
	}
	if (gained || lost) {
		unsigned held = 0;
		for (i = 0; i < d->nparts; i++)
			held += d->parts[i].held;
		atomic_store(&d->held, held);
		log_info("dispatch: %u live node%s; this node dispatches %u of %u partitions (%u taken, %u given up)",
		         (unsigned)n, n == 1 ? "" : "s", held, d->nparts, gained, lost);
	}
}

static void *dispatch_main(void *arg)
{
	dispatch_t *d = arg;
	uint32_t *nodes = malloc(NODES_MAX * sizeof *nodes);

	log_set_thread_name("dispatch");
	pthread_mutex_lock(&d->lock);
	while (!d->stopping) {
		struct timespec ts;
		pthread_mutex_unlock(&d->lock);
		if (nodes)
			rebalance(d, nodes);
		pthread_mutex_lock(&d->lock);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += DISPATCH_REBALANCE_MS * 1000000L;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		if (!d->stopping)
			pthread_cond_timedwait(&d->wake, &d->lock, &ts);
	}
	pthread_mutex_unlock(&d->lock);
	free(nodes);
	return NULL;
}

dispatch_t *dispatch_new(eventlog_t *log, bus_t *bus, fanout_t *fanout, tally_t *tally, uint32_t node)
{
	dispatch_t *d = calloc(1, sizeof *d);
	unsigned i;

	if (!d || !(d->parts = calloc(eventlog_partitions(log), sizeof *d->parts))) {
		free(d);
		log_error("dispatch: out of memory");
		return NULL;
	}
	d->log = log;
	d->bus = bus;
	d->fanout = fanout;
	d->tally = tally;
	d->node = node;
	d->nparts = eventlog_partitions(log);
	for (i = 0; i < d->nparts; i++) {
		d->parts[i].d = d;
		pthread_mutex_init(&d->parts[i].lock, NULL);
		pthread_cond_init(&d->parts[i].cond, NULL);
	}
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->wake, NULL);
	if (pthread_create(&d->thread, NULL, dispatch_main, d) != 0) {
		log_error("dispatch: cannot start its thread");
		d->stopping = 1;
		dispatch_free(d);
		return NULL;
	}
	return d;
}

void dispatch_free(dispatch_t *d)
{
	unsigned i;

	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	if (!d->stopping) {
		d->stopping = 1;
		pthread_cond_signal(&d->wake);
		pthread_mutex_unlock(&d->lock);
		pthread_join(d->thread, NULL);
	} else {
		pthread_mutex_unlock(&d->lock);
	}
	for (i = 0; i < d->nparts; i++) {
		if (d->parts[i].held)
			eventlog_unconsume(d->log, DISPATCH_GROUP, i);
		pthread_mutex_destroy(&d->parts[i].lock);
		pthread_cond_destroy(&d->parts[i].cond);
	}
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->wake);
	free(d->parts);
	free(d);
}

void dispatch_counts(dispatch_t *d, dispatch_counts_t *out)
{
	out->messages = atomic_load(&d->messages);
	out->receipts = atomic_load(&d->receipts);
	out->ignored = atomic_load(&d->ignored);
	out->malformed = atomic_load(&d->malformed);
	out->partitions = atomic_load(&d->held);
}
