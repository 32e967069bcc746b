/*
 * Fuzz the merging of Prometheus texts (core/metrics_merge.c), which worker
 * 0 applies to the workers' /metrics: the input, split at its first NUL, is
 * two texts, each copied to a buffer of exactly its length (no NUL after
 * it, as handed over), merged with and without a label. The result must be
 * a text of exactly its length, and a normal form: merged again alone,
 * it comes back byte for byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_input.h"
#include "metrics_merge.h"

static void check(const char *const *texts, const size_t *lens, const char *label)
{
	size_t len;
	char *sum = pk_metrics_merge(texts, lens, 2, label, &len);
	if (strlen(sum) != len)
		abort(); /* the length told is the text's */
	const char *again_in[1] = {sum};
	size_t again_len;
	char *again = pk_metrics_merge(again_in, &len, 1, NULL, &again_len);
	if (again_len != len || memcmp(again, sum, len) != 0)
		abort(); /* not a normal form */
	free(again);
	free(sum);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *second;
	char *first = pk_fuzz_two_strings(data, size, &second);
	if (!first)
		return 0;
	size_t lens[2] = {strlen(first), strlen(second)};
	/* Exact sizes: a read past a text's end is ASan's to see. */
	char *a = malloc(lens[0] ? lens[0] : 1), *b = malloc(lens[1] ? lens[1] : 1);
	if (a && b) {
		memcpy(a, first, lens[0]);
		memcpy(b, second, lens[1]);
		const char *texts[2] = {a, b};
		check(texts, lens, NULL);
		check(texts, lens, "worker");
	}
	free(a);
	free(b);
	free(first);
	return 0;
}
