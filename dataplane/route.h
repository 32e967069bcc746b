/*
 * Which endpoint a request is for (protocol reference §2.1) and which endpoint
 * a listener connects to on the upstream port (§1.6). Pure string functions,
 * so they are unit-tested without sockets.
 */
#ifndef PK_ROUTE_H
#define PK_ROUTE_H

#include <stddef.h>

/* The endpoint ID of a proxied HTTP request, as Piko derives it:
 *  - x_piko_endpoint non-empty: taken verbatim;
 *  - otherwise host (the Host header) minus ":port" (Go net.SplitHostPort
 *    semantics, "[v6]:port" included; when the split fails the raw value is
 *    used); empty or an IPv4/IPv6 literal: no endpoint; containing '.': the
 *    part before the first '.'; anything else (e.g. "localhost"): none.
 * Either argument may be NULL. Returns 0 and writes the NUL-terminated ID to
 * out, or -1 for "no endpoint" (also when the ID does not fit in cap - 1
 * bytes, or when it would be empty). */
int pk_route_endpoint_id(const char *x_piko_endpoint, const char *host, char *out, size_t cap);

/* The endpoint ID of a listener connection: url is the request-target of
 * "GET /piko/v1/upstream/<id>". The query string is ignored, the path is
 * percent-decoded first (as Go's URL parser does before the router matches)
 * and must then be exactly the prefix plus one non-empty segment. Returns 0
 * and writes the ID, or -1 (no match, bad escape, a decoded NUL, or the ID
 * does not fit in cap - 1 bytes). */
int pk_route_upstream_path(const char *url, char *out, size_t cap);

#endif
