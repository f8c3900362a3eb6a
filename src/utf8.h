/* utf8.h - incremental UTF-8 validation.
 *
 * WebSocket text messages may be split across fragments at any byte, even in
 * the middle of a code point, so the validator carries its state from one call
 * to the next. It accepts exactly the well-formed UTF-8 of RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF. */
#ifndef PARLEY_UTF8_H
#define PARLEY_UTF8_H

#include <stddef.h>
#include <stdint.h>

#define UTF8_ACCEPT 0u  /* at a code point boundary, all well formed */
#define UTF8_REJECT 12u /* malformed; stays rejected */

/* Feeds len bytes to the validator and returns the new state. Start from
 * UTF8_ACCEPT; a complete text is valid if the final state is UTF8_ACCEPT. */
uint32_t utf8_validate(uint32_t state, const void *data, size_t len);

#endif
