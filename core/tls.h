/*
 * Client TLS contexts (OpenSSL) for the connections we drive ourselves
 * (core/sock.c): `piko forward` to an https:// proxy port. Built once from a
 * connect.tls block; each connection takes a reference.
 */
#ifndef PK_TLS_H
#define PK_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "tls_config.h"

/* A client context: TLS 1.2 or later, ALPN http/1.1, the server verified
 * against root_cas (else the system's CAs) unless insecure_skip_verify, and
 * cert/key presented when set. Returns NULL with err set when a file does
 * not load. Owner: the caller (SSL_CTX_free); connections hold their own
 * reference. */
SSL_CTX *pk_tls_client_ctx(const struct pk_tls_client_config *c, char *err, size_t errlen);

/* A server context for the sockets we accept ourselves (the cluster port):
 * TLS 1.2 or later with cert and key (PEM files); with client_cas, a client
 * certificate signed by one of them is required. NULL with err set when a
 * file does not load. Owner: the caller. */
SSL_CTX *pk_tls_server_ctx(const char *cert, const char *key, const char *client_cas, char *err,
                           size_t errlen);

#endif
