/*
 * libFuzzer harness for controller/quantity.c.
 *
 * Input: a quantity, optionally followed by a NUL and a second one. Each
 * must parse or be refused without reading past its length; a quantity that
 * parses equals itself, and equality is symmetric.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quantity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy, so ASan sees any read past the end. */
	char *a = malloc(size ? size : 1);
	if (!a)
		return 0;
	memcpy(a, data, size);
	const char *nul = memchr(a, 0, size);
	size_t alen = nul ? (size_t)(nul - a) : size;
	const char *b = nul ? nul + 1 : a;
	size_t blen = nul ? size - alen - 1 : size;
	long double x;
	if (pk_quantity_parse(a, alen, &x) == 0 && !pk_quantity_equal(a, alen, a, alen))
		abort();
	if (pk_quantity_equal(a, alen, b, blen) != pk_quantity_equal(b, blen, a, alen))
		abort();
	free(a);
	return 0;
}
