/* pushfakes.h - what the push tests share: the fake Web Push service
 * (tests/fakes/webpush_service.mjs, which checks VAPID and decrypts each
 * push with the subscription's private key) and reading what a fake
 * recorded (one JSON object per line). */
#ifndef PARLEY_TEST_PUSHFAKES_H
#define PARLEY_TEST_PUSHFAKES_H

#include <sys/types.h>

#include <jansson.h>

#include "harness.h"

/* RFC 8291's example subscription (section 5): the fake holds its
 * private key, so every test subscription uses these keys. */
#define PF_UA_PRIVATE "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
#define PF_UA_PUBLIC "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
#define PF_AUTH "BTBZMqHH6r4Tts7J_aSIgg"

typedef struct pf_webpush {
	pid_t pid;
	int port;
	char log[300];           /* what it was sent: {"path","status","payload",...} per line */
} pf_webpush_t;

/* Starts the fake, its port and log files in dir. */
void pf_webpush_start(pf_webpush_t *w, const char *dir);
void pf_webpush_stop(pf_webpush_t *w);

/* Registers u's subscription at the fake's path ("/push/..."), through
 * the server at port. */
void pf_add_webpush(int port, const hx_user_t *u, const pf_webpush_t *w, const char *path);
/* Registers the push target of body for u (201 or 200, else fails). */
void pf_add_target(int port, const hx_user_t *u, const char *body);

/* Every record in log whose string field `key` is value (and, when
 * status >= 0, whose status is that), as a JSON array. */
json_t *pf_records(const char *log, const char *key, const char *value, int status);
/* Waits (up to 20 s) until log holds at least n such records; them. */
json_t *pf_wait_records(const char *log, const char *key, const char *value, int status, size_t n);

void pf_pause_ms(int ms);

#endif
