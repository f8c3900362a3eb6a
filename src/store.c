/* store.c - backend selection and the release helpers shared by every
 * backend, since the result types of store.h are plain malloc'd structs. */
#include "store.h"

#include <stdlib.h>

store_t *store_open(const char *data_dir)
{
	/* One backend today; the PostgreSQL one will be chosen by a
	 * postgresql:// location instead of a directory. */
	return store_sqlite_open(data_dir);
}

int64_t store_memory_bytes(void)
{
	return store_sqlite_memory_bytes();
}

void store_message_clear(store_message_t *m)
{
	free(m->cmid);
	free(m->body);
	m->cmid = m->body = NULL;
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
