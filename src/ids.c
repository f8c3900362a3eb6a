/* ids.c - the id readers of ids.h. */
#include "ids.h"

int id_from_json(const json_t *v, int64_t lo, int64_t *out)
{
	json_int_t x;

	if (!json_is_integer(v))
		return -1;
	x = json_integer_value(v);
	if (x < lo || x >= ID_LIMIT)
		return -1;
	*out = x;
	return 0;
}

int id_parse(const char *s, size_t n, int64_t lo, int64_t *out)
{
	int64_t x = 0;
	size_t i;

	/* 2^53 has 16 digits: more cannot be an id, and this bound keeps x
	 * from overflowing. */
	if (n == 0 || n > 16 || (n > 1 && s[0] == '0'))
		return -1; /* one spelling per id: "7", never "007" */
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		x = x * 10 + (s[i] - '0');
	}
	if (x < lo || x >= ID_LIMIT)
		return -1;
	*out = x;
	return 0;
}

int id_parse64(const char *s, size_t n, int64_t *out)
{
	uint64_t x = 0;
	size_t i;

	if (n == 0 || n > 19 || (n > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		x = x * 10 + (uint64_t)(s[i] - '0'); /* 19 digits cannot wrap a uint64 */
	}
	if (x > (uint64_t)INT64_MAX)
		return -1;
	*out = (int64_t)x;
	return 0;
}
