/* pushfakes.c - see pushfakes.h. */
#include "pushfakes.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

void pf_webpush_start(pf_webpush_t *w, const char *dir)
{
	char port_file[300];

	snprintf(port_file, sizeof port_file, "%s/webpush.port", dir);
	snprintf(w->log, sizeof w->log, "%s/webpush.jsonl", dir);
	{
		const char *argv[] = {"tests/fakes/webpush_service.mjs", port_file, PF_UA_PRIVATE, PF_UA_PUBLIC, PF_AUTH,
		                      w->log, NULL};
		w->port = hx_node(argv, port_file, &w->pid);
	}
}

void pf_webpush_stop(pf_webpush_t *w)
{
	hx_node_stop(w->pid);
}

void pf_add_target(int port, const hx_user_t *u, const char *body)
{
	int st;
	json_t *j = hx_http(port, "POST", "/api/v1/push-targets", u->token, body, &st);

	if (st != 201 && st != 200)
		fail_msg("registering %s answered %d", body, st);
	json_decref(j);
}

void pf_add_webpush(int port, const hx_user_t *u, const pf_webpush_t *w, const char *path)
{
	char body[600];

	snprintf(body, sizeof body,
	         "{\"platform\":\"webpush\",\"subscription\":{\"endpoint\":\"http://127.0.0.1:%d%s\","
	         "\"keys\":{\"p256dh\":\"%s\",\"auth\":\"%s\"}}}",
	         w->port, path, PF_UA_PUBLIC, PF_AUTH);
	pf_add_target(port, u, body);
}

json_t *pf_records(const char *log, const char *key, const char *value, int status)
{
	json_t *all = json_array();
	FILE *f = fopen(log, "r");
	char line[65536];

	if (!f)
		return all;
	while (fgets(line, sizeof line, f)) {
		json_t *j = json_loads(line, 0, NULL);
		const char *v = json_string_value(json_object_get(j, key));
		if (j && v && !strcmp(v, value) && (status < 0 || json_integer_value(json_object_get(j, "status")) == status))
			json_array_append(all, j);
		json_decref(j);
	}
	fclose(f);
	return all;
}

json_t *pf_wait_records(const char *log, const char *key, const char *value, int status, size_t n)
{
	int i;

	for (i = 0; i < 400; i++) {
		json_t *r = pf_records(log, key, value, status);
		if (json_array_size(r) >= n)
			return r;
		json_decref(r);
		pf_pause_ms(50);
	}
	fail_msg("%s: fewer than %zu records with %s %s (status %d)", log, n, key, value, status);
	return NULL;
}

void pf_pause_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}
