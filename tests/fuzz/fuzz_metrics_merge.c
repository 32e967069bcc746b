/*
 * Fuzz the summing of Prometheus texts (core/metrics_merge.c), which worker
 * 0 applies to the other workers' /metrics: the input, split at its first
 * NUL, is two texts (not NUL-terminated as handed over: exact lengths).
 * The sum must be a text of exactly its length, and a normal form: summing
 * it alone again gives it back byte for byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_input.h"
#include "metrics_merge.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *second;
	char *first = pk_fuzz_two_strings(data, size, &second);
	if (!first)
		return 0;
	const char *texts[2] = {first, second};
	size_t lens[2] = {strlen(first), strlen(second)};
	size_t len;
	char *sum = pk_metrics_merge(texts, lens, 2, &len);
	if (strlen(sum) != len)
		abort(); /* the length told is the text's */
	const char *again_in[1] = {sum};
	size_t again_len;
	char *again = pk_metrics_merge(again_in, &len, 1, &again_len);
	if (again_len != len || memcmp(again, sum, len) != 0)
		abort(); /* not a normal form */
	free(again);
	free(sum);
	free(first);
	return 0;
}
