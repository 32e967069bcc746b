/*
 * Port access checks (see access.h). The order is Piko's: token from the
 * headers, verification, then the endpoint permission of the token.
 */
#include "access.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "http1.h"

static int make(struct pk_verifier **out, const struct pk_auth_config *c, const char *what,
                char *err, size_t errlen)
{
	*out = NULL;
	if (!pk_auth_enabled(c))
		return 0;
	char why[256];
	*out = pk_verifier_new(c, why, sizeof(why));
	if (!*out) {
		snprintf(err, errlen, "%s: %s", what, why);
		return -1;
	}
	return 0;
}

int pk_access_init(struct pk_access *a, const struct pk_server_config *cfg, char *err,
                   size_t errlen)
{
	memset(a, 0, sizeof(*a));
	if (make(&a->proxy, &cfg->proxy.auth, "proxy auth", err, errlen) ||
	    make(&a->upstream, &cfg->upstream.auth, "upstream auth", err, errlen) ||
	    make(&a->admin, &cfg->admin.auth, "admin auth", err, errlen))
		goto fail;
	a->upstream_disconnect_on_expiry = !cfg->upstream.auth.disable_disconnect_on_expiry;
	const struct pk_tenant_config *t = cfg->upstream.tenants.v;
	/* Owner: a (pk_access_free). */
	a->tenants = pk_xcalloc(cfg->upstream.tenants.n + 1, sizeof(*a->tenants));
	for (size_t i = 0; i < cfg->upstream.tenants.n; i++) {
		char what[128];
		snprintf(what, sizeof(what), "tenant %s auth", t[i].id);
		a->tenants[i].id = pk_xstrdup(t[i].id);
		a->tenants[i].disconnect_on_expiry = !t[i].auth.disable_disconnect_on_expiry;
		a->n_tenants = i + 1;
		if (make(&a->tenants[i].v, &t[i].auth, what, err, errlen))
			goto fail;
	}
	return 0;
fail:
	pk_access_free(a);
	return -1;
}

void pk_access_free(struct pk_access *a)
{
	pk_verifier_free(a->proxy);
	pk_verifier_free(a->upstream);
	pk_verifier_free(a->admin);
	for (size_t i = 0; i < a->n_tenants; i++) {
		free(a->tenants[i].id);
		pk_verifier_free(a->tenants[i].v);
	}
	free(a->tenants);
	memset(a, 0, sizeof(*a));
}

static const char *verify(const struct pk_verifier *v, const struct pk_access_headers *h,
                          int64_t now, struct pk_token *out)
{
	const char *tok;
	size_t len;
	memset(out, 0, sizeof(*out));
	const char *why =
	    pk_auth_token_from_headers(h->x_piko_authorization, h->authorization, &tok, &len);
	return why ? why : pk_verifier_verify(v, tok, len, now, out);
}

const char *pk_access_check(const struct pk_verifier *v, const struct pk_access_headers *h,
                            int64_t now, struct pk_token *tok)
{
	struct pk_token t;
	if (!v) {
		if (tok)
			memset(tok, 0, sizeof(*tok));
		return NULL;
	}
	const char *why = verify(v, h, now, tok ? tok : &t);
	if (!tok)
		pk_token_clear(&t);
	return why;
}

int pk_access_upstream_on(const struct pk_access *a)
{
	return a->upstream || a->n_tenants > 0;
}

const char *pk_access_check_upstream(const struct pk_access *a, const struct pk_access_headers *h,
                                     const char *endpoint, int64_t now, int64_t *exp_out)
{
	*exp_out = 0;
	if (!pk_access_upstream_on(a))
		return NULL;
	const struct pk_verifier *v = a->upstream;
	const struct pk_access_tenant *tenant = NULL;
	if (a->n_tenants > 0 || (h->tenant_id && *h->tenant_id)) {
		/* Once tenants exist, a request must name one of them; a named
		 * tenant that is not configured is unknown either way. */
		for (size_t i = 0; h->tenant_id && i < a->n_tenants && !tenant; i++)
			if (!strcmp(a->tenants[i].id, h->tenant_id))
				tenant = &a->tenants[i];
		if (!tenant)
			return PK_AUTH_UNKNOWN_TENANT;
		v = tenant->v;
	}
	struct pk_token t;
	const char *why = verify(v, h, now, &t);
	if (!why && !pk_token_permits(&t, endpoint))
		why = PK_AUTH_NOT_PERMITTED;
	if (!why && (tenant ? tenant->disconnect_on_expiry : a->upstream_disconnect_on_expiry))
		*exp_out = t.exp;
	pk_token_clear(&t);
	return why;
}

char *pk_access_error_response(const char *reason, int http10, size_t *len)
{
	char body[128];
	/* The reasons are fixed texts without characters JSON must escape. */
	int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", reason);
	unsigned flags = PK_HTTP1_RESP_CLOSE | (http10 ? PK_HTTP1_RESP_HTTP10 : 0);
	return pk_http1_simple_response(401, "application/json; charset=utf-8", body, (size_t)n,
	                                flags, len);
}
