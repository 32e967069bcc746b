/*
 * Fuzz the small parsers of addresses and routes: the proxy's endpoint
 * derivation (x-piko-endpoint / Host), the upstream path, and the agent's
 * and forward's address and URL forms. The input is split at its first NUL
 * byte into two strings where two are needed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent_config.h"
#include "route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *a = malloc(size + 1);
	if (!a)
		return 0;
	memcpy(a, data, size);
	a[size] = '\0';
	const char *b = a + strlen(a);
	if ((size_t)(b - a) < size)
		b++; /* the part after the first NUL */

	char out[512], small[4], err[256];
	pk_route_endpoint_id(a, b, out, sizeof(out));
	pk_route_endpoint_id(NULL, a, out, sizeof(out));
	pk_route_endpoint_id("", a, small, sizeof(small));
	pk_route_upstream_path(a, out, sizeof(out));
	pk_route_upstream_path(a, small, sizeof(small));

	struct pk_target t;
	if (pk_target_parse(a, 1, &t, err, sizeof(err)) == 0)
		pk_target_free(&t);
	if (pk_target_parse(a, 0, &t, err, sizeof(err)) == 0)
		pk_target_free(&t);
	struct pk_server_url u;
	pk_server_url_parse(a, &u, err, sizeof(err));
	free(a);
	return 0;
}
