/*
 * `piko bench http` (protocol reference §4.6): registers `upstreams` echo
 * listeners over endpoints endpoint-0..endpoint-(N-1) through the agent's
 * own tunnels (agent.c, with hooks: the streams are answered in-process by
 * bench_echo.c instead of a local service), then `clients` keep-alive HTTP
 * clients send `requests` requests with a random body of `size` bytes and
 * `x-piko-endpoint: endpoint-<random>` to the proxy URL, check every echo,
 * and print Piko's `Throughput: <n> requests/sec`. All of it on the agent's
 * one event loop (core/sock.c connections for the clients).
 */
#ifndef PK_BENCH_H
#define PK_BENCH_H

#include <stddef.h>

#include "agent.h"
#include "bench_config.h"

/* Run the benchmark. Returns the exit status: 0 when every request got its
 * body back, 1 otherwise (upstreams not registered within connect.timeout,
 * the proxy unreachable, any failed request or wrong echo, or a signal). */
int pk_bench_run(const struct pk_bench_config *cfg);

/* bench_echo.c: serve a stream the server opened as Piko's bench upstream
 * does: read one HTTP request, answer 200 with its body (Content-Length),
 * close. A body over max_body bytes is answered 413 (the echo holds a body
 * whole, as Piko's does: Go's server may drop a request body once the
 * response has started, so streaming the echo back breaks through Piko's
 * server). Returns 0 (the stream is taken) or -1. */
int pk_bench_echo_accept(struct pk_agent_listener *l, struct pk_yamux_stream *s, size_t max_body);

#endif
