/* Client TLS contexts (see tls.h). */
#include "tls.h"

#include <openssl/err.h>
#include <stdio.h>

static SSL_CTX *fail(SSL_CTX *ctx, const char *what, const char *path, char *err, size_t errlen)
{
	unsigned long e = ERR_get_error();
	snprintf(err, errlen, "tls: %s %s: %s", what, path,
	         e ? ERR_reason_error_string(e) : "failed");
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

/* What every context of ours has, client or server. */
static SSL_CTX *new_ctx(const SSL_METHOD *method, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(method);
	if (!ctx) {
		snprintf(err, errlen, "tls: cannot create a context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* A peer that closes without close_notify ends the stream like a FIN
	 * (Go's servers do that); the framing above (WebSocket, HTTP) tells a
	 * truncation anyway. */
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* Writes come from a queue whose front may move and be cut short. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return ctx;
}

SSL_CTX *pk_tls_client_ctx(const struct pk_tls_client_config *c, char *err, size_t errlen)
{
	SSL_CTX *ctx = new_ctx(TLS_client_method(), err, errlen);
	if (!ctx)
		return NULL;
	static const unsigned char alpn[] = "\x08http/1.1";
	SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
	if (c->insecure_skip_verify) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		if (c->root_cas && *c->root_cas) {
			if (SSL_CTX_load_verify_locations(ctx, c->root_cas, NULL) != 1)
				return fail(ctx, "load root CAs", c->root_cas, err, errlen);
		} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
			return fail(ctx, "load the system CAs", "", err, errlen);
		}
	}
	if (c->cert && *c->cert) {
		if (SSL_CTX_use_certificate_chain_file(ctx, c->cert) != 1)
			return fail(ctx, "load certificate", c->cert, err, errlen);
		if (SSL_CTX_use_PrivateKey_file(ctx, c->key, SSL_FILETYPE_PEM) != 1)
			return fail(ctx, "load key", c->key ? c->key : "", err, errlen);
		if (SSL_CTX_check_private_key(ctx) != 1)
			return fail(ctx, "key does not match", c->cert, err, errlen);
	}
	return ctx;
}

SSL_CTX *pk_tls_server_ctx(const char *cert, const char *key, const char *client_cas, char *err,
                           size_t errlen)
{
	SSL_CTX *ctx = new_ctx(TLS_server_method(), err, errlen);
	if (!ctx)
		return NULL;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
		return fail(ctx, "load certificate", cert, err, errlen);
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		return fail(ctx, "load key", key, err, errlen);
	if (SSL_CTX_check_private_key(ctx) != 1)
		return fail(ctx, "key does not match", cert, err, errlen);
	if (client_cas && *client_cas) {
		if (SSL_CTX_load_verify_locations(ctx, client_cas, NULL) != 1)
			return fail(ctx, "load client CAs", client_cas, err, errlen);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
		/* A session resumed with a verified client certificate needs
		 * a context id, or OpenSSL fails the resumption (TLS 1.2:
		 * "internal error" on every reconnect). */
		static const unsigned char sid_ctx[] = "piko";
		SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	}
	return ctx;
}
