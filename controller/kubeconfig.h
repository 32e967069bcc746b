/*
 * Where the apiserver is and how to authenticate to it: a kubeconfig file
 * (read with libyaml's document API) or the in-cluster service account.
 *
 * Supported, as client-go reads them:
 *  - clusters[].cluster: server, certificate-authority(-data),
 *    insecure-skip-tls-verify, tls-server-name;
 *  - users[].user: token, tokenFile, client-certificate(-data),
 *    client-key(-data);
 *  - contexts[].context: cluster, user, namespace.
 * Refused with an error rather than ignored (ignoring them would
 * authenticate as someone else, or not at all): exec and auth-provider
 * plugins, username/password, impersonation (as, as-groups, ...).
 *
 * Ownership: every pointer in struct pk_kube_config is owned by the struct
 * and freed by pk_kube_config_free().
 */
#ifndef PK_KUBECONFIG_H
#define PK_KUBECONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pk_kube_config {
	char *server;      /* "https://host:port", no trailing slash (IPv6 host bracketed) */
	char *ca_pem;      /* PEM bytes of the CA bundle, NULL = system CAs */
	size_t ca_pem_len; /* (each *_pem is also NUL-terminated) */
	char *cert_pem;    /* client certificate PEM or NULL */
	size_t cert_pem_len;
	char *key_pem; /* client key PEM or NULL */
	size_t key_pem_len;
	char *token;            /* bearer token or NULL (current value) */
	char *token_file;       /* when set, token is re-read from here (rotation) */
	uint64_t token_read_ms; /* monotonic ms when token was last read from token_file */
	char *tls_server_name;  /* or NULL */
	bool insecure_skip_verify;
	char *namespace; /* context namespace / in-cluster namespace; "default" if none */
	bool in_cluster;
};

/* Load a kubeconfig file. context NULL (or "") = the file's current-context.
 * Relative paths in the file resolve against the file's directory; *-data
 * fields are standard base64 with padding (line breaks allowed). A server
 * without a scheme gets "https://"; a path after the host (e.g. a Rancher
 * proxy) is kept. When both tokenFile and token are set, the file's token is
 * used if readable, else token. Returns 0, or -1 with a message in err naming
 * the file and the context, cluster or user at fault. *out is overwritten
 * (not freed) and on error left zeroed: there is nothing to free. */
int pk_kube_config_load_file(const char *path, const char *context, struct pk_kube_config *out,
                             char *err, size_t errlen);

/* The same, from memory (text, len bytes): only inline credentials
 * (*-data, token); file references are refused, there being no file to be
 * relative to. Messages name the source "memory". For tests and fuzzing. */
int pk_kube_config_parse(const char *text, size_t len, const char *context,
                         struct pk_kube_config *out, char *err, size_t errlen);

/* In-cluster: server from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT
 * (an IPv6 literal is bracketed), CA from
 * <root>/var/run/secrets/kubernetes.io/serviceaccount/ca.crt, token_file
 * .../token (read now), namespace from .../namespace ("default" when missing
 * or empty). root is "" (or NULL) in production and a temp dir in tests.
 * Same return and *out contract as pk_kube_config_load_file. */
int pk_kube_config_in_cluster(const char *root, struct pk_kube_config *out, char *err,
                              size_t errlen);

/* Choose, in this order: path if non-NULL; else the first non-empty entry of
 * $KUBECONFIG (a ':' list; later entries are not merged, unlike kubectl);
 * else in-cluster if KUBERNETES_SERVICE_HOST is non-empty (context is then
 * ignored); else $HOME/.kube/config. Same contract as above. */
int pk_kube_config_load(const char *path, const char *context, struct pk_kube_config *out,
                        char *err, size_t errlen);

/* The bearer token to send now (NULL = none). With a token_file, the file is
 * re-read when the last read is more than 60 s older than now_ms (a monotonic
 * clock, as pk_now_ms()) or when force is true (after a 401): whitespace
 * trimmed, and on a failed read (missing, empty, control characters) the old
 * token is kept and the next call tries again. The string belongs to c and
 * stays valid until the token changes (a later call that read a different
 * token) or pk_kube_config_free(): copy it, don't keep it. */
const char *pk_kube_config_token(struct pk_kube_config *c, uint64_t now_ms, bool force);

/* Free everything c owns (the key and token are wiped first) and zero it.
 * Safe on a zeroed struct and on NULL. */
void pk_kube_config_free(struct pk_kube_config *c);

#endif
