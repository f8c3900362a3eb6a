/* ids.h - reading the protocol's ids (user, device, conversation, seq) from
 * JSON values and from decimal text (paths, query strings, object keys).
 *
 * Every id is an integer in [1, 2^53): JavaScript clients hold them as
 * numbers, which are exact only below 2^53. */
#ifndef PARLEY_IDS_H
#define PARLEY_IDS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define ID_LIMIT ((int64_t)1 << 53)

/* A JSON integer in [lo, 2^53). Returns 0, or -1 for anything else. */
int id_from_json(const json_t *v, int64_t lo, int64_t *out);

/* Decimal digits only, in [lo, 2^53). Returns 0 or -1. */
int id_parse(const char *s, size_t n, int64_t lo, int64_t *out);

/* Decimal digits only (no leading zeros), in [0, 2^63): for the server's
 * own 64-bit values in text, such as snowflakes in a cursor. */
int id_parse64(const char *s, size_t n, int64_t *out);

#endif
