/* vapid.h - the server's Web Push identity (RFC 8292, VAPID): one P-256
 * key pair for the whole store, made at the first start and kept in the
 * store's server keys (store_server_key_*), so every node of a fleet signs
 * with the same key and the browsers' subscriptions, which are bound to
 * its public half, survive restarts and moves between nodes.
 *
 * The private key is kept as PKCS#8 PEM text under "vapid_private_key";
 * whoever can read the store can push to the subscribers (as whoever can
 * read it can read their messages). */
#ifndef PARLEY_VAPID_H
#define PARLEY_VAPID_H

#include <openssl/evp.h>

#include "store.h"

/* An uncompressed P-256 point (65 bytes) in base64url without padding. */
#define VAPID_PUBLIC_KEY_LEN 87

typedef struct vapid vapid_t;

/* The store's key, made and written first when it has none (two nodes
 * starting together agree on whichever is written first). NULL (logged)
 * when the store cannot be read or written, or its key does not parse. */
vapid_t *vapid_load(store_t *st);
void vapid_free(vapid_t *v);

/* The public key as applicationServerKey wants it (base64url, no
 * padding). */
const char *vapid_public_key(const vapid_t *v);
/* The key pair, for signing (borrowed; lives as long as v). */
EVP_PKEY *vapid_key(const vapid_t *v);

#endif
