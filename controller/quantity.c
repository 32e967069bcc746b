/*
 * Kubernetes quantities, parsed by hand: the grammar is small (see
 * quantity.h) and strtold alone would accept hex, "inf" and "nan".
 */
#include "quantity.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Longer than any quantity the apiserver accepts; bounds the copy below. */
#define PK_QUANTITY_MAX 64

static int suffix_scale(const char *s, size_t n, long double *scale)
{
	static const struct {
		const char *sfx;
		long double scale;
	} t[] = {
	    {"", 1.0L},
	    {"n", 1e-9L},
	    {"u", 1e-6L},
	    {"m", 1e-3L},
	    {"k", 1e3L},
	    {"M", 1e6L},
	    {"G", 1e9L},
	    {"T", 1e12L},
	    {"P", 1e15L},
	    {"E", 1e18L},
	    {"Ki", 1024.0L},
	    {"Mi", 1048576.0L},
	    {"Gi", 1073741824.0L},
	    {"Ti", 1099511627776.0L},
	    {"Pi", 1125899906842624.0L},
	    {"Ei", 1152921504606846976.0L},
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (strlen(t[i].sfx) == n && memcmp(t[i].sfx, s, n) == 0) {
			*scale = t[i].scale;
			return 0;
		}
	return -1;
}

static size_t digits(const char *s, size_t i, size_t len)
{
	while (i < len && s[i] >= '0' && s[i] <= '9')
		i++;
	return i;
}

int pk_quantity_parse(const char *s, size_t len, long double *out)
{
	if (len == 0 || len >= PK_QUANTITY_MAX)
		return -1;
	size_t i = 0;
	if (s[i] == '+' || s[i] == '-')
		i++;
	size_t int_end = digits(s, i, len);
	size_t end = int_end;
	size_t frac = 0;
	if (end < len && s[end] == '.') {
		size_t f = digits(s, end + 1, len);
		frac = f - (end + 1);
		end = f;
	}
	if (int_end == i && frac == 0)
		return -1; /* no digit at all: "", ".", "-", "Ki" */
	long double scale = 1.0L;
	if (end < len && (s[end] == 'e' || s[end] == 'E') && end + 1 < len) {
		/* "1e3" is an exponent, but "1E" alone is the exa suffix. */
		size_t e = end + 1;
		if (s[e] == '+' || s[e] == '-')
			e++;
		size_t ed = digits(s, e, len);
		if (ed > e && ed == len) {
			char num[PK_QUANTITY_MAX];
			memcpy(num, s, len);
			num[len] = 0;
			*out = strtold(num, NULL);
			return isfinite(*out) ? 0 : -1;
		}
	}
	if (suffix_scale(s + end, len - end, &scale) != 0)
		return -1;
	char num[PK_QUANTITY_MAX];
	memcpy(num, s, end);
	num[end] = 0;
	*out = strtold(num, NULL) * scale;
	return isfinite(*out) ? 0 : -1;
}

int pk_quantity_equal(const char *a, size_t alen, const char *b, size_t blen)
{
	long double x, y;
	if (pk_quantity_parse(a, alen, &x) != 0 || pk_quantity_parse(b, blen, &y) != 0)
		return 0;
	if (x == y)
		return 1;
	long double m = fabsl(x) > fabsl(y) ? fabsl(x) : fabsl(y);
	return fabsl(x - y) <= m * 1e-15L;
}
