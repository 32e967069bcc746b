/*
 * Who may use each port (protocol reference §5): the node's token verifiers,
 * built once from proxy.auth, upstream.auth, admin.auth and upstream.tenants,
 * and the checks each port runs before it serves a request.
 */
#ifndef PK_ACCESS_H
#define PK_ACCESS_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "server_config.h"

struct pk_access_tenant {
	char *id;
	struct pk_verifier *v;
	int disconnect_on_expiry;
};

struct pk_access {
	struct pk_verifier *proxy, *upstream, *admin; /* NULL: auth off on that port */
	struct pk_access_tenant *tenants;
	size_t n_tenants;
	int upstream_disconnect_on_expiry;
};

/* Build every verifier. Returns 0, or -1 with err set ("proxy auth: ..."). */
int pk_access_init(struct pk_access *a, const struct pk_server_config *cfg, char *err,
                   size_t errlen);
void pk_access_free(struct pk_access *a);

/* The request headers a check reads (NULL when absent). */
struct pk_access_headers {
	const char *x_piko_authorization;
	const char *authorization;
	const char *tenant_id; /* x-piko-tenant-id, upstream port only */
};

/* Proxy or admin port: NULL when allowed (a NULL v allows everything), else
 * Piko's 401 reason. With tok, the verified token is kept there for a later
 * endpoint check (release with pk_token_clear; zeroed when v is NULL). */
const char *pk_access_check(const struct pk_verifier *v, const struct pk_access_headers *h,
                            int64_t now, struct pk_token *tok);

/* Whether the upstream port checks anything (keys or tenants): with neither,
 * the tenant header is ignored too. */
int pk_access_upstream_on(const struct pk_access *a);

/* Upstream port, with tenants: NULL when allowed (*exp_out is the token's
 * expiry in seconds, 0 when none or when expiry must not disconnect), else
 * Piko's 401 reason. */
const char *pk_access_check_upstream(const struct pk_access *a, const struct pk_access_headers *h,
                                     const char *endpoint, int64_t now, int64_t *exp_out);

/* The body of an auth failure, as gin writes it: compact JSON, no newline,
 * Content-Type application/json; charset=utf-8; the connection closes after
 * it. http10: the request was HTTP/1.0 (PK_HTTP1_RESP_HTTP10). Owned by the
 * caller. */
char *pk_access_error_response(const char *reason, int http10, size_t *len);

#endif
