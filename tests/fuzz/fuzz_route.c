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
#include "fuzz_input.h"
#include "route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *b;
	char *a = pk_fuzz_two_strings(data, size, &b);
	if (!a)
		return 0;

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
