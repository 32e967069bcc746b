#include "strbuf.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

void pk_sb_put(struct pk_sb *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 512;
		while (cap < b->len + n + 1)
			cap *= 2;
		b->p = pk_xrealloc(b->p, cap);
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void pk_sb_str(struct pk_sb *b, const char *s)
{
	pk_sb_put(b, s, strlen(s));
}

void pk_sb_printf(struct pk_sb *b, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(small)) {
		pk_sb_put(b, small, (size_t)n);
		return;
	}
	char *big = pk_xmalloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	pk_sb_put(b, big, (size_t)n);
	free(big);
}

char *pk_sb_finish(struct pk_sb *b, size_t *len)
{
	if (!b->p) {
		/* No buffer yet: nothing in it and no capacity, so pk_sb_put()
		 * allocates (said for the analyzer). */
		assert(!b->len && !b->cap);
		pk_sb_put(b, "", 0);
	}
	if (len)
		*len = b->len;
	char *p = b->p;
	b->p = NULL;
	b->len = b->cap = 0;
	return p;
}
