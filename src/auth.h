/* auth.h - passwords, bearer tokens and the rules for usernames.
 *
 * Passwords are kept only as Argon2id hashes (libsodium, "interactive"
 * limits: 64 MiB and 2 passes, tens of milliseconds), so hashing runs on the
 * worker threads, never on an I/O thread. A bearer token is 32 random bytes
 * in URL-safe base64; the store keeps only its SHA-256, so a copy of the
 * database holds no usable token. */
#ifndef PARLEY_AUTH_H
#define PARLEY_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_TOKEN_LEN 43      /* characters, without the NUL */
#define AUTH_PWHASH_MAX 128    /* bytes for a stored hash string */
#define AUTH_PASSWORD_MIN 8
#define AUTH_PASSWORD_MAX 128

/* Initialises libsodium. fast_hashing selects Argon2id's minimum cost
 * instead of the interactive one: for tests and benchmarks that register
 * thousands of users, never for real accounts (see --fast-password-hashing).
 * Returns 0, or -1 if libsodium cannot start. */
int auth_init(int fast_hashing);

/* 3-32 characters of [a-z0-9_.-]. */
int auth_username_valid(const char *name, size_t len);

/* Hashes password (len bytes) into out. Returns 0, or -1 out of memory. */
int auth_password_hash(const char *password, size_t len, char out[AUTH_PWHASH_MAX]);

/* Returns 1 when password matches hash. With hash NULL it spends the time a
 * check would take and returns 0, so an unknown username cannot be told
 * from a wrong password by the answer's delay. */
int auth_password_check(const char *hash, const char *password, size_t len);

/* Makes a new random token (NUL-terminated) and its hash. */
void auth_token_new(char token[AUTH_TOKEN_LEN + 1], uint8_t hash[32]);

/* Hashes a presented token. Returns 0, or -1 when it cannot be a token. */
int auth_token_hash(const char *token, size_t len, uint8_t hash[32]);

/* SHA-256 of a secret of any length (an operator's token from a file). */
void auth_secret_hash(const char *secret, size_t len, uint8_t hash[32]);

/* Compares n bytes in time independent of where they differ. */
int auth_equal(const uint8_t *a, const uint8_t *b, size_t n);

#endif
