/* api_internal.h - what the HTTP API's modules share: the request as the
 * worker sees it, the answer being built, the refusals, and the endpoint
 * handlers of api_users.c (accounts, sessions, devices, tickets, settings,
 * blocks), api_convs.c (conversations, history, receipts, members) and
 * api_push.c (push targets, the VAPID key).
 *
 * Everything here runs on a worker thread with that worker's store handle.
 * A handler checks everything before it writes, so a refused request
 * changes nothing, and answers with exactly one of api_fail* or a status
 * and body. */
#ifndef PARLEY_API_INTERNAL_H
#define PARLEY_API_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "jbuf.h"
#include "server.h"
#include "store.h"

/* Lists are paged so that one answer stays small whatever another user
 * did to the caller's account (groups with it, long messages): at most
 * this many bytes of entries, and at least one entry, per page. */
#define API_PAGE_BYTES (256 * 1024)

typedef struct api_req {
	server_t *srv;
	uint64_t conn;
	uint64_t client;        /* the client's address key */
	int keep_alive;
	char method[8];
	char *target;           /* NUL-terminated copy */
	size_t target_len, path_len;
	char *token;            /* from Authorization: Bearer, or NULL */
	size_t token_len;
	char *body;
	size_t body_len;
	/* Set by api_authenticate. */
	int64_t user, device;
	char log_note[48];      /* added to the refusal's log line, if any */
	uint8_t token_hash[32];
} api_req_t;

typedef struct api_res {
	int status;
	jbuf_t body;            /* JSON; empty for 204 */
	const char *extra;      /* extra header lines */
	char extra_buf[64];     /* room for a computed one */
} api_res_t;

/* Refusals: the protocol's error body with a status. */
void api_fail(api_res_t *res, int status, const char *code, const char *message);
/* 429 rate_limited with when to try again, as Retry-After and in the body
 * (the retry_after_ms of the WebSocket's rate_limited error). */
void api_fail_retry(api_res_t *res, const char *message, int64_t wait_ms);
/* A refusal about one user (of several a request named): the error
 * object carries its "user_id". */
void api_fail_about(api_res_t *res, int status, const char *code, const char *message, int64_t user);
/* The answer to a store code that is not success. */
void api_fail_store(api_res_t *res, int r);

/* The request's body as a JSON object, or NULL after refusing it. */
json_t *api_parse_body(const api_req_t *rq, api_res_t *res);
/* Checks the bearer token; fills rq->user, rq->device. 0, or -1 refused. */
int api_authenticate(store_t *st, api_req_t *rq, api_res_t *res);
/* Charges cost work units to the caller's budget (after authentication):
 * 0, or -1 after refusing with 429. */
int api_charge(const api_req_t *rq, api_res_t *res, double cost);
/* The same for work done for no user (a lookup without a token, a token
 * that matched nothing): charged to the client's address. */
int api_charge_address(const api_req_t *rq, api_res_t *res, double cost);
/* A decimal query parameter in [lo, hi]: 1 when present, 0 absent (*out
 * untouched), -1 after refusing a bad one (naming it). */
int api_query_int(const api_req_t *rq, api_res_t *res, const char *name, int64_t lo, int64_t hi,
                  int64_t *out);

/* JSON pieces. */
void api_user_json(jbuf_t *b, int64_t id, const char *name);
void api_message_json(jbuf_t *b, const store_message_t *m);
/* Tells every member of conv (and also, when not 0, a user who just left
 * it) of a membership change. */
void api_announce(store_t *st, server_t *srv, int64_t conv, const char *event, int64_t user,
                  int64_t by, int64_t also);

/* Handlers; ids are the numeric segments of the path, in order. */
typedef void (*api_handler_fn)(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);

void api_create_user(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_find_user(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_create_session(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_delete_session(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_list_devices(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_delete_device(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_create_ticket(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_get_settings(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_patch_settings(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_list_blocks(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_add_block(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_remove_block(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);

void api_create_push_target(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_list_push_targets(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_delete_push_target(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_vapid_key(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);

void api_create_conversation(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_list_conversations(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_get_conversation(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_patch_conversation(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_history(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_receipts(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_search(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_add_member(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);
void api_remove_member(store_t *st, api_req_t *rq, const int64_t *ids, api_res_t *res);

#endif
