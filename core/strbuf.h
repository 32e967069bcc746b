/*
 * pk_sb: a growable NUL-terminated string, for building response heads and
 * rendered metrics. Grows by doubling; aborts on OOM (pk_xrealloc).
 * Ownership: the builder owns p until pk_sb_finish() hands it to the caller.
 */
#ifndef PK_STRBUF_H
#define PK_STRBUF_H

#include <stddef.h>

struct pk_sb {
	char *p;
	size_t len, cap;
};

/* Append n bytes of s (s need not be NUL-terminated). */
void pk_sb_put(struct pk_sb *b, const char *s, size_t n);
/* Append a NUL-terminated string. */
void pk_sb_str(struct pk_sb *b, const char *s);
/* printf into the builder. (The format attribute, understood by gcc and clang,
 * lets -Wformat check the callers.) */
void pk_sb_printf(struct pk_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s as a JSON string (quotes included), escaped as Go's
 * encoding/json does: invalid UTF-8 becomes U+FFFD, U+2028/9 are escaped,
 * and with html also < > & (json.Encoder's default; zap turns it off). */
void pk_sb_json_string(struct pk_sb *b, const char *s, int html);
/* The string (never NULL; "" when nothing was added), now the caller's to
 * free; *len (if len is not NULL) gets its length. */
char *pk_sb_finish(struct pk_sb *b, size_t *len);

#endif
