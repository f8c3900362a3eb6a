/* auth.c - the password and token functions of auth.h, on libsodium. */
#include "auth.h"

#include <pthread.h>
#include <string.h>

#include <sodium.h>

static char dummy_hash[crypto_pwhash_STRBYTES];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;
static unsigned long long hash_ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
static size_t hash_mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;

int auth_init(int fast_hashing)
{
	if (fast_hashing) {
		hash_ops = crypto_pwhash_OPSLIMIT_MIN;
		hash_mem = crypto_pwhash_MEMLIMIT_MIN;
	}
	return sodium_init() < 0 ? -1 : 0;
}

int auth_username_valid(const char *name, size_t len)
{
	size_t i;

	if (len < 3 || len > 32)
		return 0;
	for (i = 0; i < len; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
		      c == '-'))
			return 0;
	}
	return 1;
}

int auth_password_hash(const char *password, size_t len, char out[AUTH_PWHASH_MAX])
{
	_Static_assert(crypto_pwhash_STRBYTES <= AUTH_PWHASH_MAX, "hash buffer too small");
	/* The cost is recorded in the hash string, so verification needs no
	 * setting: hashes made at either cost verify under both. */
	return crypto_pwhash_str_alg(out, password, len, hash_ops, hash_mem,
	                             crypto_pwhash_ALG_ARGON2ID13) == 0 ? 0 : -1;
}

static void make_dummy(void)
{
	char pw[16];

	randombytes_buf(pw, sizeof pw);
	if (auth_password_hash(pw, sizeof pw, dummy_hash) < 0)
		dummy_hash[0] = 0;
}

int auth_password_check(const char *hash, const char *password, size_t len)
{
	if (!hash) {
		pthread_once(&dummy_once, make_dummy);
		if (dummy_hash[0] && crypto_pwhash_str_verify(dummy_hash, password, len) == 0)
			return 0; /* a random password matched: still no user */
		return 0;
	}
	return crypto_pwhash_str_verify(hash, password, len) == 0;
}

void auth_token_new(char token[AUTH_TOKEN_LEN + 1], uint8_t hash[32])
{
	unsigned char raw[32];

	randombytes_buf(raw, sizeof raw);
	sodium_bin2base64(token, AUTH_TOKEN_LEN + 1, raw, sizeof raw,
	                  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	crypto_hash_sha256(hash, (const unsigned char *)token, AUTH_TOKEN_LEN);
}

int auth_token_hash(const char *token, size_t len, uint8_t hash[32])
{
	if (len != AUTH_TOKEN_LEN)
		return -1;
	crypto_hash_sha256(hash, (const unsigned char *)token, len);
	return 0;
}

void auth_secret_hash(const char *secret, size_t len, uint8_t hash[32])
{
	crypto_hash_sha256(hash, (const unsigned char *)secret, len);
}

int auth_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
	return sodium_memcmp(a, b, n) == 0;
}
