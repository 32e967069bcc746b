#include "strbuf.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

void pk_sb_put(struct pk_sb *b, const char *s, size_t n)
{
	/* A builder is empty and unallocated, or holds len bytes and their NUL
	 * (said for the analyzer, which cannot see it across calls). */
	assert(b->cap ? b->len < b->cap : !b->len && !b->p);
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

void pk_sb_json_string(struct pk_sb *b, const char *s, int html)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	pk_sb_put(b, "\"", 1);
	while (*p) {
		unsigned char c = *p;
		if (c < 0x80) {
			char esc[7];
			if (c == '"' || c == '\\') {
				esc[0] = '\\';
				esc[1] = (char)c;
				pk_sb_put(b, esc, 2);
			} else if (c == '\n') {
				pk_sb_put(b, "\\n", 2);
			} else if (c == '\r') {
				pk_sb_put(b, "\\r", 2);
			} else if (c == '\t') {
				pk_sb_put(b, "\\t", 2);
			} else if (c < 0x20 || (html && (c == '<' || c == '>' || c == '&'))) {
				memcpy(esc, "\\u00", 4);
				esc[4] = hex[c >> 4];
				esc[5] = hex[c & 15];
				pk_sb_put(b, esc, 6);
			} else {
				pk_sb_put(b, (const char *)p, 1);
			}
			p++;
			continue;
		}
		/* Decode one UTF-8 sequence, strictly (no overlongs, no
		 * surrogates, max U+10FFFF). */
		size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
		unsigned cp = n == 4 ? c & 7u : n == 3 ? c & 15u : c & 31u;
		size_t i = 1;
		for (; n && i < n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				break;
			cp = cp << 6 | (p[i] & 0x3fu);
		}
		int ok = n && i == n && c < 0xf5 && !(n == 2 && cp < 0x80) &&
		         !(n == 3 && cp < 0x800) && !(n == 4 && (cp < 0x10000 || cp > 0x10ffff)) &&
		         !(cp >= 0xd800 && cp <= 0xdfff);
		if (!ok) {
			pk_sb_str(b, "\\ufffd");
			p++;
			continue;
		}
		if (cp == 0x2028 || cp == 0x2029)
			pk_sb_str(b, cp == 0x2028 ? "\\u2028" : "\\u2029");
		else
			pk_sb_put(b, (const char *)p, n);
		p += n;
	}
	pk_sb_put(b, "\"", 1);
}
