/* vapid.c - the server's VAPID key of vapid.h, through OpenSSL 3's EVP
 * interface: made with EVP_EC_gen, kept as PEM, its public point read as
 * the encoded public key (uncompressed, the form the Push API takes). */
#include "vapid.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <sodium.h>

#include "jwt.h"
#include "log.h"

#define KEY_NAME "vapid_private_key"

struct vapid {
	EVP_PKEY *key;
	char public_key[VAPID_PUBLIC_KEY_LEN + 1];
};

/* A new key pair as PEM (malloc'd), or NULL. */
static char *new_key_pem(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	BIO *b = BIO_new(BIO_s_mem());
	char *pem = NULL, *data;
	long n;

	if (k && b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1 &&
	    (n = BIO_get_mem_data(b, &data)) > 0 && (pem = malloc((size_t)n + 1)) != NULL) {
		memcpy(pem, data, (size_t)n);
		pem[n] = 0;
	}
	BIO_free(b);
	EVP_PKEY_free(k);
	return pem;
}

vapid_t *vapid_load(store_t *st)
{
	vapid_t *v = calloc(1, sizeof *v);
	unsigned char point[65];
	char *pem = NULL;
	size_t len = 0;
	int rc;

	if (!v)
		return NULL;
	if ((rc = store_server_key_get(st, KEY_NAME, &pem)) == STORE_NOT_FOUND) {
		char *made = new_key_pem();
		if (!made) {
			log_error("vapid: cannot make a P-256 key");
			goto err;
		}
		rc = store_server_key_add(st, KEY_NAME, made);
		sodium_memzero(made, strlen(made));
		free(made);
		if (rc == STORE_OK)
			log_info("vapid: made the server's Web Push key (kept in the store)");
		if (rc != STORE_OK && rc != STORE_EXISTS)
			goto store_err;
		rc = store_server_key_get(st, KEY_NAME, &pem); /* whoever wrote first */
	}
	if (rc != STORE_OK)
		goto store_err;
	if (!(v->key = jwt_p256_key_from_pem(pem, strlen(pem)))) {
		log_error("vapid: the store's %s is not a P-256 private key in PEM", KEY_NAME);
		goto err;
	}
	if (EVP_PKEY_get_octet_string_param(v->key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point, sizeof point, &len) != 1 ||
	    len != sizeof point || point[0] != 0x04) {
		log_error("vapid: cannot read the key's public point");
		goto err;
	}
	sodium_bin2base64(v->public_key, sizeof v->public_key, point, sizeof point,
	                  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	sodium_memzero(pem, strlen(pem));
	free(pem);
	return v;
store_err:
	log_error("vapid: cannot read or write the store's %s", KEY_NAME);
err:
	if (pem)
		sodium_memzero(pem, strlen(pem));
	free(pem);
	vapid_free(v);
	return NULL;
}

void vapid_free(vapid_t *v)
{
	if (!v)
		return;
	EVP_PKEY_free(v->key);
	free(v);
}

const char *vapid_public_key(const vapid_t *v)
{
	return v->public_key;
}

EVP_PKEY *vapid_key(const vapid_t *v)
{
	return v->key;
}
