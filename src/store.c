/* store.c - backend selection and the release helpers shared by every
 * backend, since the result types of store.h are plain malloc'd structs. */
#include "store.h"

#include <stdlib.h>

#include "log.h"
#include "store_backend.h"
#include "store_pg.h"
#include "store_sqlite.h"

/* Tried in order; SQLite, last, takes any other location as a directory. */
static const store_backend_t *const backends[] = {
	&store_pg_backend,
	&store_sqlite_backend,
};

static const store_backend_t *backend_of(const char *location)
{
	size_t i;

	for (i = 0; i < sizeof backends / sizeof *backends; i++)
		if (backends[i]->accepts(location))
			return backends[i];
	log_error("store: no backend serves '%s'", location);
	return NULL;
}

store_t *store_open(const char *location)
{
	const store_backend_t *b = backend_of(location);

	return b ? b->open(location) : NULL;
}

store_claim_t *store_claim(const char *location)
{
	const store_backend_t *b = backend_of(location);

	return b ? b->claim(location) : NULL;
}

void store_release(store_claim_t *claim)
{
	if (claim)
		claim->backend->release(claim);
}

int store_migrate(const char *location, int *from, int *to)
{
	const store_backend_t *b = backend_of(location);

	return b ? b->migrate(location, from, to) : -1;
}

const char *store_backend_name(const char *location)
{
	size_t i;

	for (i = 0; i < sizeof backends / sizeof *backends; i++)
		if (backends[i]->accepts(location))
			return backends[i]->name;
	return NULL;
}

unsigned store_writers(const char *location)
{
	size_t i;

	for (i = 0; i < sizeof backends / sizeof *backends; i++)
		if (backends[i]->accepts(location))
			return backends[i]->writers ? backends[i]->writers : 1;
	return 1;
}

int64_t store_memory_bytes(void)
{
	int64_t n = 0;
	size_t i;

	for (i = 0; i < sizeof backends / sizeof *backends; i++)
		if (backends[i]->memory_bytes)
			n += backends[i]->memory_bytes();
	return n;
}

void store_message_clear(store_message_t *m)
{
	free(m->cmid);
	free(m->body);
	free(m->reactions);
	free(m->quote_body);
	m->cmid = m->body = m->reactions = m->quote_body = NULL;
}

void store_messages_free(store_message_t *m, size_t n)
{
	size_t i;

	if (!m)
		return;
	for (i = 0; i < n; i++)
		store_message_clear(&m[i]);
	free(m);
}

void store_push_pending_free(store_push_pending_t *p, size_t n)
{
	size_t i;

	if (!p)
		return;
	for (i = 0; i < n; i++)
		free(p[i].body);
	free(p);
}

void store_search_free(store_search_hit_t *h, size_t n)
{
	size_t i;

	if (!h)
		return;
	for (i = 0; i < n; i++) {
		store_message_clear(&h[i].msg);
		free(h[i].snippet);
	}
	free(h);
}

void store_push_targets_free(store_push_target_t *t, size_t n)
{
	size_t i;

	if (!t)
		return;
	for (i = 0; i < n; i++) {
		free(t[i].address);
		free(t[i].topic);
		free(t[i].p256dh);
		free(t[i].auth);
	}
	free(t);
}

void store_outbox_free(store_outbox_t *rows, size_t n)
{
	size_t i;

	if (!rows)
		return;
	for (i = 0; i < n; i++) {
		store_message_clear(&rows[i].msg);
		free(rows[i].members);
	}
	free(rows);
}

void store_conv_clear(store_conv_t *c)
{
	free(c->title);
	free(c->members);
	free(c->admins);
	store_messages_free(c->last_message, c->last_message ? 1 : 0);
	c->title = NULL;
	c->members = NULL;
	c->admins = NULL;
	c->last_message = NULL;
}

void store_convs_free(store_conv_t *c, size_t n)
{
	size_t i;

	if (!c)
		return;
	for (i = 0; i < n; i++)
		store_conv_clear(&c[i]);
	free(c);
}

void store_op_release(store_op_t *op)
{
	free(op->members);
	op->members = NULL;
	op->nmembers = 0;
}

int store_event_check(const store_op_t *op, int conv_kind, int64_t target_from, int64_t target_ts,
                      int target_deleted, int admin, int64_t last_join)
{
	if (target_deleted)
		return STORE_GONE;
	switch (op->msg_kind) {
	case STORE_MSG_EDIT:
		if (target_from != op->user)
			return STORE_DENIED;
		if (op->edit_window_ms <= 0 || op->now_ms - target_ts > op->edit_window_ms)
			return STORE_EXPIRED;
		/* Someone who joined after it never had its text: an edit would
		 * give it to them. */
		if (conv_kind == STORE_GROUP && op->target <= last_join)
			return STORE_GONE;
		return STORE_OK;
	case STORE_MSG_DELETE:
		if (target_from != op->user && !(conv_kind == STORE_GROUP && admin))
			return STORE_DENIED;
		return STORE_OK;
	default: /* a reaction, or a reply */
		return STORE_OK;
	}
}
