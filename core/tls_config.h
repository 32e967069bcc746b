/*
 * TLS settings (protocol reference §6): a server port's `tls` block and a
 * client's `connect.tls` block, with their option-table entries (Piko's
 * flag and YAML names).
 */
#ifndef PK_TLS_CONFIG_H
#define PK_TLS_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "config.h"

/* What a client presents and trusts. */
struct pk_tls_client_config {
	char *cert;     /* PEM file: client certificate (mTLS) */
	char *key;      /* PEM file: its key */
	char *root_cas; /* PEM bundle: trusted CAs (default: the system's) */
	int insecure_skip_verify;
	char *server_name; /* server ports only: node-to-node (unused: no cluster yet) */
};

/* A server port: TLS-only when cert and key are set. */
struct pk_tls_server_config {
	char *cert;
	char *key;
	char *client_cas; /* PEM bundle: when set, clients must present a cert it signed */
	struct pk_tls_client_config client;
};

#define PK_TLS_OFF(BASE, T, f) ((BASE) + offsetof(T, f))

/* clang-format off */
#define PK_TLS_CLIENT_OPTS(P, BASE)                                                                \
	{P "cert", PK_OPT_STRING, PK_TLS_OFF(BASE, struct pk_tls_client_config, cert), NULL,       \
	 "PEM client certificate to present", 0, NULL, 0},                                          \
	{P "key", PK_OPT_STRING, PK_TLS_OFF(BASE, struct pk_tls_client_config, key), NULL,         \
	 "PEM key of the client certificate", 0, NULL, 0},                                          \
	{P "root_cas", PK_OPT_STRING, PK_TLS_OFF(BASE, struct pk_tls_client_config, root_cas),     \
	 NULL, "PEM bundle of CAs to trust (default: the system's)", 0, NULL, 0},                   \
	{P "insecure_skip_verify", PK_OPT_BOOL,                                                    \
	 PK_TLS_OFF(BASE, struct pk_tls_client_config, insecure_skip_verify), "false",            \
	 "do not verify the server's certificate", 0, NULL, 0}

#define PK_TLS_SERVER_OPTS(P, BASE)                                                                \
	{P "cert", PK_OPT_STRING, PK_TLS_OFF(BASE, struct pk_tls_server_config, cert), NULL,       \
	 "PEM certificate: serve this port over TLS", 0, NULL, 0},                                  \
	{P "key", PK_OPT_STRING, PK_TLS_OFF(BASE, struct pk_tls_server_config, key), NULL,         \
	 "PEM key of the certificate", 0, NULL, 0},                                                 \
	{P "client_cas", PK_OPT_STRING,                                                            \
	 PK_TLS_OFF(BASE, struct pk_tls_server_config, client_cas), NULL,                          \
	 "PEM bundle: require client certificates signed by these CAs (mTLS)", 0, NULL, 0},         \
	PK_TLS_CLIENT_OPTS(P "client.", PK_TLS_OFF(BASE, struct pk_tls_server_config, client)),    \
	{P "client.server_name", PK_OPT_STRING,                                                    \
	 PK_TLS_OFF(BASE, struct pk_tls_server_config, client.server_name), NULL,                  \
	 "server name for node-to-node TLS (accepted; no cluster yet)", 0, NULL, 0}
/* clang-format on */

/* Cert and key come together; files must be readable. Returns 0 or -1 with
 * err set ("<what>: ..."). */
static inline int pk_tls_check_pair(const char *what, const char *cert, const char *key, char *err,
                                    size_t errlen)
{
	int c = cert && *cert, k = key && *key;
	if (c != k) {
		snprintf(err, errlen, "%s: %s", what, c ? "missing key" : "missing cert");
		return -1;
	}
	return 0;
}

#endif
