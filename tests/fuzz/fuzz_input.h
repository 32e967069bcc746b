/*
 * Inputs for harnesses that need two strings: the fuzz data as a
 * NUL-terminated copy, split at its first NUL byte.
 */
#ifndef PK_FUZZ_INPUT_H
#define PK_FUZZ_INPUT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Returns the copy (the first string; free it) and sets *second to the part
 * after the first NUL (empty when there is none), or NULL when out of
 * memory. */
static inline char *pk_fuzz_two_strings(const uint8_t *data, size_t size, const char **second)
{
	char *a = malloc(size + 1);
	if (!a)
		return NULL;
	memcpy(a, data, size);
	a[size] = '\0';
	const char *b = a + strlen(a);
	if ((size_t)(b - a) < size)
		b++;
	*second = b;
	return a;
}

#endif
