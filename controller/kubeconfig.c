/*
 * Kubeconfig and in-cluster configuration. See kubeconfig.h for the contract.
 *
 * The kubeconfig is parsed into a libyaml document (yaml_parser_load) and
 * only the few paths we need are looked up in it; nothing walks the whole
 * tree, so aliases cannot make the walk blow up. Every scalar is taken as a
 * string (plain null, ~, and empty count as absent, as an empty string does
 * for client-go's len() checks). In a list, the last entry with a given name
 * wins, as in client-go's list-to-map conversion.
 *
 * Everything read is bounded: the kubeconfig and each PEM file 4 MiB, token
 * and namespace files 64 KiB.
 */
#include "kubeconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "backoff.h" /* pk_now_ms */
#include "buf.h"     /* pk_x* allocators: OOM aborts, the project's policy */

/* A kubeconfig with inline certificates is a few KiB; 4 MiB is generous. */
#define MAX_KUBECONFIG (4u << 20)
/* A CA bundle (even a whole system bundle) is well under this. */
#define MAX_PEM (4u << 20)
/* Service-account JWTs are about 1 KiB. */
#define MAX_TOKEN (64u << 10)
/* A namespace name is at most 63 bytes; the file is bounded like a token. */
#define MAX_NAMESPACE_FILE (64u << 10)
/* client-go's cached token source re-reads the file once a minute. */
#define TOKEN_REFRESH_MS 60000u
/* Longest message built before the "kubeconfig: ... (in PATH)" wrapping. */
#define MAX_MSG 512

#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

/* The format attribute makes gcc and clang check every message's arguments. */
__attribute__((format(printf, 3, 4))) static void seterr(char *err, size_t errlen, const char *fmt,
                                                         ...)
{
	if (!err || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Read all of path into a new NUL-terminated buffer (*out, owned by the
 * caller; *len excludes the NUL). More than max bytes is an error: the file
 * is read, never mapped, so the bound is what keeps a wrong path (a log, a
 * device) from eating memory. On error err holds "PATH: reason". */
static int read_file(const char *path, size_t max, char **out, size_t *len, char *err,
                     size_t errlen)
{
	*out = NULL;
	*len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1) {
		seterr(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	char *buf = NULL;
	size_t cap = 0, n = 0;
	for (;;) {
		if (n == cap) {
			/* Room for max + 1 bytes, so that an oversize file shows as n > max. */
			cap = cap ? cap * 2 : 4096;
			if (cap > max + 1)
				cap = max + 1;
			buf = pk_xrealloc(buf, cap + 1);
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r == -1) {
			if (errno == EINTR)
				continue;
			seterr(err, errlen, "%s: %s", path, strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > max) {
			seterr(err, errlen, "%s: larger than %zu bytes", path, max);
			goto fail;
		}
	}
	close(fd);
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
fail:
	close(fd);
	free(buf);
	return -1;
}

/* A header value must not carry CR, LF or other controls (they would split
 * or corrupt the Authorization header). */
static bool printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Trim whitespace around s[0..*len): returns the first kept offset and
 * lowers *len to the end of what is kept (so the result is s[b..*len)). */
static size_t trim(const char *s, size_t *len)
{
	size_t b = 0, e = *len;
	while (b < e && is_space(s[b]))
		b++;
	while (e > b && is_space(s[e - 1]))
		e--;
	*len = e;
	return b;
}

/* Read a token file: whitespace around it trimmed (kubelet and editors add a
 * newline), refused when empty or holding controls, since an empty read is
 * more likely a file caught mid-rewrite than a real token. *out is the
 * caller's. */
static int read_token(const char *path, char **out, char *err, size_t errlen)
{
	char *t;
	size_t n;
	*out = NULL;
	if (read_file(path, MAX_TOKEN, &t, &n, err, errlen) == -1)
		return -1;
	size_t b = trim(t, &n);
	if (n == b) {
		seterr(err, errlen, "%s: empty token", path);
		goto fail;
	}
	if (!printable(t + b, n - b)) {
		seterr(err, errlen, "%s: token contains control characters", path);
		goto fail;
	}
	memmove(t, t + b, n - b);
	t[n - b] = '\0';
	*out = t;
	return 0;
fail:
	OPENSSL_cleanse(t, n);
	free(t);
	return -1;
}

/* Does buf hold at least one PEM block? Checked here so that a wrong file or
 * a doubly-encoded -data field is reported by name instead of as an opaque
 * TLS failure on the first request. */
static bool has_pem(const char *buf, size_t len)
{
	return memmem(buf, len, "-----BEGIN ", 11) != NULL;
}

static int b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Standard base64 (RFC 4648 §4) as Go's base64.StdEncoding decodes it for
 * client-go: padding required, CR and LF skipped anywhere, anything else
 * outside the alphabet refused, nothing after the final padded quantum.
 * Returns a new NUL-terminated buffer (the caller's) or NULL with *bad set
 * to the offset of the first bad byte (n when the input is truncated). */
static char *b64_decode(const char *s, size_t n, size_t *outlen, size_t *bad)
{
	char *out = pk_xmalloc(n / 4 * 3 + 4);
	size_t o = 0, q = 0, pad = 0;
	uint32_t acc = 0;
	bool done = false;
	size_t i;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r' || c == '\n')
			continue;
		if (done)
			goto fail;
		if (c == '=') {
			/* Padding only fills the third and fourth places of a quantum. */
			if (q < 2)
				goto fail;
			pad++;
		} else {
			int v = b64val(c);
			if (v < 0 || pad)
				goto fail;
			acc = acc << 6 | (uint32_t)v;
		}
		if (++q < 4)
			continue;
		if (pad == 0) {
			out[o++] = (char)(acc >> 16);
			out[o++] = (char)(acc >> 8);
			out[o++] = (char)acc;
		} else if (pad == 1) {
			/* 18 bits: two bytes and two unused bits. */
			out[o++] = (char)(acc >> 10);
			out[o++] = (char)(acc >> 2);
			done = true;
		} else {
			/* 12 bits: one byte and four unused bits. */
			out[o++] = (char)(acc >> 4);
			done = true;
		}
		acc = 0;
		q = 0;
	}
	if (q != 0)
		goto fail; /* truncated: i == n */
	out[o] = '\0';
	*outlen = o;
	return out;
fail:
	*bad = i;
	/* What was decoded may be part of a private key. */
	OPENSSL_cleanse(out, o);
	free(out);
	return NULL;
}

/* ---- the kubeconfig document ---- */

struct loader {
	const char *path; /* the kubeconfig, for messages */
	char *dir;        /* its directory, for relative paths (owned); NULL: in
	                   * memory, where file references are refused */
	yaml_document_t doc;
	char *err;
	size_t errlen;
};

/* Every kubeconfig error reads "kubeconfig: WHAT (in PATH)", so the file is
 * always named and WHAT can name the context, cluster or user. */
__attribute__((format(printf, 2, 3))) static void lerr(struct loader *ld, const char *fmt, ...)
{
	char msg[MAX_MSG];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	seterr(ld->err, ld->errlen, "kubeconfig: %s (in %s)", msg, ld->path);
}

static bool is_null(const yaml_node_t *n)
{
	if (!n)
		return true;
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *v = (const char *)n->data.scalar.value;
	return n->data.scalar.length == 0 || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
	       strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* The value node of key in mapping m, or NULL (also when m is NULL). */
static yaml_node_t *map_get(struct loader *ld, yaml_node_t *m, const char *key)
{
	if (!m || m->type != YAML_MAPPING_NODE)
		return NULL;
	size_t klen = strlen(key);
	yaml_node_t *found = NULL;
	for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(&ld->doc, p->key);
		/* A key given twice: the last wins, as in Go's YAML-to-JSON path. */
		if (k && k->type == YAML_SCALAR_NODE && k->data.scalar.length == klen &&
		    memcmp(k->data.scalar.value, key, klen) == 0)
			found = yaml_document_get_node(&ld->doc, p->value);
	}
	return found;
}

/* The string at key in mapping m: 1 with *s (pointing into the document),
 * 0 when absent, null or empty, -1 (message set) when it is not a string.
 * where names the enclosing object for the message. */
static int get_str(struct loader *ld, yaml_node_t *m, const char *key, const char *where,
                   const char **s)
{
	*s = NULL;
	yaml_node_t *v = map_get(ld, m, key);
	if (is_null(v))
		return 0;
	if (v->type != YAML_SCALAR_NODE) {
		lerr(ld, "%s: %s: expected a string", where, key);
		return -1;
	}
	if (v->data.scalar.length == 0)
		return 0; /* a quoted "" */
	/* libyaml NUL-terminates scalars; a NUL inside one ("\0" in a
	 * double-quoted string) would silently cut a path or token short. */
	if (memchr(v->data.scalar.value, '\0', v->data.scalar.length)) {
		lerr(ld, "%s: %s: contains a NUL byte", where, key);
		return -1;
	}
	*s = (const char *)v->data.scalar.value;
	return 1;
}

/* A boolean at key: false when absent; YAML 1.1 spellings accepted, as
 * client-go's yaml.v2 accepts them; quoted or not, since scalars are strings
 * here. */
static int get_bool(struct loader *ld, yaml_node_t *m, const char *key, const char *where, bool *b)
{
	static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes",
	                                  "YES",  "on",   "On",   "ON"};
	static const char *const no[] = {"false", "False", "FALSE", "no", "No",
	                                 "NO",    "off",   "Off",   "OFF"};
	const char *s;
	int r = get_str(ld, m, key, where, &s);
	*b = false;
	if (r <= 0)
		return r;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcmp(s, yes[i]) == 0) {
			*b = true;
			return 0;
		}
		if (strcmp(s, no[i]) == 0)
			return 0;
	}
	lerr(ld, "%s: %s: expected true or false, not \"%.64s\"", where, key, s);
	return -1;
}

/* Find the entry named name in the list at key of the root ("clusters") and
 * return its inner mapping (entry key inner, "cluster") in *body, which may
 * be NULL for an entry with an empty body. Returns 1 found, 0 not found, -1
 * malformed (message set). */
static int find_named(struct loader *ld, yaml_node_t *root, const char *key, const char *inner,
                      const char *name, yaml_node_t **body)
{
	*body = NULL;
	yaml_node_t *seq = map_get(ld, root, key);
	if (is_null(seq))
		return 0;
	if (seq->type != YAML_SEQUENCE_NODE) {
		lerr(ld, "%s: expected a list", key);
		return -1;
	}
	yaml_node_t *entry = NULL;
	for (yaml_node_item_t *it = seq->data.sequence.items.start;
	     it < seq->data.sequence.items.top; it++) {
		yaml_node_t *e = yaml_document_get_node(&ld->doc, *it);
		char where[64];
		snprintf(where, sizeof(where), "%s[%td]", key, it - seq->data.sequence.items.start);
		if (!e || e->type != YAML_MAPPING_NODE) {
			lerr(ld, "%s: expected a mapping", where);
			return -1;
		}
		const char *n;
		if (get_str(ld, e, "name", where, &n) == -1)
			return -1;
		if (n && strcmp(n, name) == 0)
			entry = e; /* last one wins, as in client-go */
	}
	if (!entry)
		return 0;
	yaml_node_t *b = map_get(ld, entry, inner);
	if (is_null(b))
		return 1;
	if (b->type != YAML_MAPPING_NODE) {
		lerr(ld, "%s %s: %s: expected a mapping", inner, name, inner);
		return -1;
	}
	*body = b;
	return 1;
}

/* p resolved against the kubeconfig's directory; the caller owns it. */
static char *resolve(const struct loader *ld, const char *p)
{
	if (p[0] == '/')
		return pk_xstrdup(p);
	size_t dl = strlen(ld->dir);
	const char *sep = dl && ld->dir[dl - 1] == '/' ? "" : "/";
	size_t n = dl + strlen(sep) + strlen(p) + 1;
	char *r = pk_xmalloc(n);
	snprintf(r, n, "%s%s%s", ld->dir, sep, p);
	return r;
}

/* PEM from datakey (base64) or, failing that, from the file at filekey;
 * data wins when both are set, as in client-go. *out (the caller's) stays
 * NULL when neither is set. */
static int load_pem(struct loader *ld, yaml_node_t *m, const char *where, const char *datakey,
                    const char *filekey, char **out, size_t *outlen)
{
	const char *data, *file;
	*out = NULL;
	*outlen = 0;
	int r = get_str(ld, m, datakey, where, &data);
	if (r == -1)
		return -1;
	if (r == 1) {
		size_t bad = 0, n = 0;
		char *pem = b64_decode(data, strlen(data), &n, &bad);
		if (!pem) {
			if (bad == strlen(data))
				lerr(ld, "%s: %s: invalid base64 (truncated)", where, datakey);
			else
				lerr(ld, "%s: %s: invalid base64 (bad byte 0x%02x at offset %zu)",
				     where, datakey, (unsigned char)data[bad], bad);
			return -1;
		}
		if (!has_pem(pem, n)) {
			lerr(ld, "%s: %s: decodes to no PEM block", where, datakey);
			OPENSSL_cleanse(pem, n);
			free(pem);
			return -1;
		}
		*out = pem;
		*outlen = n;
		return 0;
	}
	r = get_str(ld, m, filekey, where, &file);
	if (r != 1)
		return r; /* -1 malformed, 0 neither set */
	if (!ld->dir) {
		lerr(ld, "%s: %s: file references are not allowed here", where, filekey);
		return -1;
	}
	char *p = resolve(ld, file);
	char *pem, msg[MAX_MSG];
	size_t n;
	if (read_file(p, MAX_PEM, &pem, &n, msg, sizeof(msg)) == -1) {
		lerr(ld, "%s: %s: %s", where, filekey, msg);
		free(p);
		return -1;
	}
	if (!has_pem(pem, n)) {
		lerr(ld, "%s: %s: %s: no PEM block", where, filekey, p);
		OPENSSL_cleanse(pem, n);
		free(pem);
		free(p);
		return -1;
	}
	free(p);
	*out = pem;
	*outlen = n;
	return 0;
}

static int load_cluster(struct loader *ld, yaml_node_t *root, const char *ctxname, const char *name,
                        struct pk_kube_config *c)
{
	yaml_node_t *cl;
	char where[MAX_MSG / 2];
	int r = find_named(ld, root, "clusters", "cluster", name, &cl);
	if (r == -1)
		return -1;
	if (r == 0) {
		lerr(ld, "context %s: cluster %s not found", ctxname, name);
		return -1;
	}
	snprintf(where, sizeof(where), "cluster %s", name);

	const char *server, *sni;
	if (get_str(ld, cl, "server", where, &server) == -1)
		return -1;
	if (!server) {
		lerr(ld, "%s: no server", where);
		return -1;
	}
	size_t sl = strlen(server);
	while (sl > 0 && server[sl - 1] == '/')
		sl--;
	if (sl == 0 || !printable(server, sl) || memchr(server, ' ', sl)) {
		lerr(ld, "%s: server \"%.128s\" is not a URL", where, server);
		return -1;
	}
	/* client-go's DefaultServerURL does the same for a bare host:port. */
	const char *scheme = strstr(server, "://") ? "" : "https://";
	size_t n = strlen(scheme) + sl + 1;
	c->server = pk_xmalloc(n);
	snprintf(c->server, n, "%s%.*s", scheme, (int)sl, server);

	if (get_str(ld, cl, "tls-server-name", where, &sni) == -1)
		return -1;
	if (sni)
		c->tls_server_name = pk_xstrdup(sni);
	if (get_bool(ld, cl, "insecure-skip-tls-verify", where, &c->insecure_skip_verify) == -1)
		return -1;
	return load_pem(ld, cl, where, "certificate-authority-data", "certificate-authority",
	                &c->ca_pem, &c->ca_pem_len);
}

static int load_user(struct loader *ld, yaml_node_t *root, const char *ctxname, const char *name,
                     struct pk_kube_config *c)
{
	/* Refused, not ignored: each would change who we authenticate as. */
	static const struct {
		const char *key, *what;
	} unsupported[] = {
	    {"exec", "exec credential plugins are not supported"},
	    {"auth-provider", "auth-provider plugins are not supported (nor are exec credential "
	                      "plugins)"},
	    {"username", "basic authentication (username/password) is not supported"},
	    {"password", "basic authentication (username/password) is not supported"},
	    {"as", "impersonation (as) is not supported"},
	    {"as-uid", "impersonation (as-uid) is not supported"},
	    {"as-groups", "impersonation (as-groups) is not supported"},
	    {"as-user-extra", "impersonation (as-user-extra) is not supported"},
	};
	yaml_node_t *u;
	char where[MAX_MSG / 2];
	int r = find_named(ld, root, "users", "user", name, &u);
	if (r == -1)
		return -1;
	if (r == 0) {
		lerr(ld, "context %s: user %s not found", ctxname, name);
		return -1;
	}
	snprintf(where, sizeof(where), "user %s", name);
	for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
		if (!is_null(map_get(ld, u, unsupported[i].key))) {
			lerr(ld, "%s: %s", where, unsupported[i].what);
			return -1;
		}
	}

	if (load_pem(ld, u, where, "client-certificate-data", "client-certificate", &c->cert_pem,
	             &c->cert_pem_len) == -1 ||
	    load_pem(ld, u, where, "client-key-data", "client-key", &c->key_pem, &c->key_pem_len) ==
	        -1)
		return -1;
	if (!c->cert_pem != !c->key_pem) {
		lerr(ld,
		     "%s: a client certificate needs both client-certificate(-data) and "
		     "client-key(-data)",
		     where);
		return -1;
	}

	const char *token, *file;
	if (get_str(ld, u, "token", where, &token) == -1 ||
	    get_str(ld, u, "tokenFile", where, &file) == -1)
		return -1;
	if (token && !printable(token, strlen(token))) {
		lerr(ld, "%s: token contains control characters", where);
		return -1;
	}
	if (file && !ld->dir) {
		lerr(ld, "%s: tokenFile: file references are not allowed here", where);
		return -1;
	}
	if (file) {
		char msg[MAX_MSG];
		c->token_file = resolve(ld, file);
		c->token_read_ms = pk_now_ms();
		if (read_token(c->token_file, &c->token, msg, sizeof(msg)) == -1 && !token) {
			lerr(ld, "%s: tokenFile: %s", where, msg);
			return -1;
		}
	}
	/* An inline token stands in while the file cannot be read; the next
	 * pk_kube_config_token() after 60 s tries the file again. */
	if (!c->token && token)
		c->token = pk_xstrdup(token);
	return 0;
}

static int load_doc(struct loader *ld, const char *context, struct pk_kube_config *c)
{
	yaml_node_t *root = yaml_document_get_root_node(&ld->doc);
	if (!root || is_null(root)) {
		lerr(ld, "empty file");
		return -1;
	}
	if (root->type != YAML_MAPPING_NODE) {
		lerr(ld, "the top level is not a mapping");
		return -1;
	}
	const char *ctxname = context && *context ? context : NULL;
	if (!ctxname) {
		if (get_str(ld, root, "current-context", "top level", &ctxname) == -1)
			return -1;
		if (!ctxname) {
			lerr(ld, "no current-context set and no context given");
			return -1;
		}
	}
	yaml_node_t *ctx;
	char where[MAX_MSG / 2];
	int r = find_named(ld, root, "contexts", "context", ctxname, &ctx);
	if (r == -1)
		return -1;
	if (r == 0) {
		lerr(ld, "context %s not found", ctxname);
		return -1;
	}
	snprintf(where, sizeof(where), "context %s", ctxname);
	const char *cluster, *user, *ns;
	if (get_str(ld, ctx, "cluster", where, &cluster) == -1 ||
	    get_str(ld, ctx, "user", where, &user) == -1 ||
	    get_str(ld, ctx, "namespace", where, &ns) == -1)
		return -1;
	if (!cluster) {
		lerr(ld, "%s: no cluster", where);
		return -1;
	}
	if (load_cluster(ld, root, ctxname, cluster, c) == -1)
		return -1;
	/* No user is allowed: anonymous, or a proxy that authenticates for us. */
	if (user && load_user(ld, root, ctxname, user, c) == -1)
		return -1;
	c->namespace = pk_xstrdup(ns ? ns : "default");
	return 0;
}

/* Parse text (len bytes) into out; ld has path, dir and err set. */
static int load_text(struct loader *ld, const char *text, size_t len, const char *context,
                     struct pk_kube_config *out)
{
	struct pk_kube_config c = {0};
	int rc = -1;
	yaml_parser_t parser;
	if (!yaml_parser_initialize(&parser)) {
		lerr(ld, "cannot initialise the YAML parser");
		return -1;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &ld->doc)) {
		/* yaml_parser_load has already deleted the document. */
		if (parser.context)
			lerr(ld, "invalid YAML at line %zu, column %zu: %s (%s at line %zu)",
			     parser.problem_mark.line + 1, parser.problem_mark.column + 1,
			     parser.problem ? parser.problem : "error", parser.context,
			     parser.context_mark.line + 1);
		else
			lerr(ld, "invalid YAML at line %zu, column %zu: %s",
			     parser.problem_mark.line + 1, parser.problem_mark.column + 1,
			     parser.problem ? parser.problem : "error");
		yaml_parser_delete(&parser);
		return -1;
	}
	yaml_parser_delete(&parser);
	rc = load_doc(ld, context, &c);
	yaml_document_delete(&ld->doc);
	if (rc == -1) {
		pk_kube_config_free(&c);
		return -1;
	}
	*out = c;
	return 0;
}

int pk_kube_config_load_file(const char *path, const char *context, struct pk_kube_config *out,
                             char *err, size_t errlen)
{
	struct loader ld = {.path = path, .err = err, .errlen = errlen};
	char *text = NULL;
	size_t len;

	memset(out, 0, sizeof(*out));
	if (read_file(path, MAX_KUBECONFIG, &text, &len, err, errlen) == -1) {
		char msg[MAX_MSG];
		snprintf(msg, sizeof(msg), "%s", err ? err : "");
		seterr(err, errlen, "kubeconfig: %s", msg);
		return -1;
	}
	const char *slash = strrchr(path, '/');
	if (!slash)
		ld.dir = pk_xstrdup(".");
	else if (slash == path)
		ld.dir = pk_xstrdup("/");
	else
		ld.dir = pk_xstrndup(path, (size_t)(slash - path));
	int rc = load_text(&ld, text, len, context, out);
	/* The text holds the key and token too: wipe it before it goes back to
	 * the allocator. (libyaml's copies are freed unwiped: best effort.) */
	OPENSSL_cleanse(text, len);
	free(text);
	free(ld.dir);
	return rc;
}

int pk_kube_config_parse(const char *text, size_t len, const char *context,
                         struct pk_kube_config *out, char *err, size_t errlen)
{
	struct loader ld = {.path = "memory", .err = err, .errlen = errlen};
	memset(out, 0, sizeof(*out));
	if (len > MAX_KUBECONFIG) {
		lerr(&ld, "larger than %u bytes", MAX_KUBECONFIG);
		return -1;
	}
	return load_text(&ld, text, len, context, out);
}

/* A port is 1-65535 in decimal, nothing else. */
static bool valid_port(const char *p)
{
	unsigned long v = 0;
	if (!*p || strlen(p) > 5)
		return false;
	for (const char *s = p; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		v = v * 10 + (unsigned long)(*s - '0');
	}
	return v >= 1 && v <= 65535;
}

int pk_kube_config_in_cluster(const char *root, struct pk_kube_config *out, char *err,
                              size_t errlen)
{
	struct pk_kube_config c = {0};
	char msg[MAX_MSG], path[4096];
	char *buf = NULL;
	size_t len;

	memset(out, 0, sizeof(*out));
	if (!root)
		root = "";
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	if (!host || !*host || !port || !*port) {
		seterr(
		    err, errlen,
		    "in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must "
		    "be set (not running in a pod?)");
		return -1;
	}
	if (!valid_port(port)) {
		seterr(err, errlen,
		       "in-cluster config: KUBERNETES_SERVICE_PORT \"%.32s\" is not a port", port);
		return -1;
	}
	if (!printable(host, strlen(host)) || strpbrk(host, " /@?#")) {
		seterr(err, errlen,
		       "in-cluster config: KUBERNETES_SERVICE_HOST \"%.64s\" is not a host", host);
		return -1;
	}
	/* An IPv6 literal needs brackets in a URL (IPv6 and dual-stack clusters
	 * set the host to e.g. fd00::1). */
	bool v6 = strchr(host, ':') && host[0] != '[';
	size_t n = strlen(host) + strlen(port) + sizeof("https://[]:");
	c.server = pk_xmalloc(n);
	snprintf(c.server, n, v6 ? "https://[%s]:%s" : "https://%s:%s", host, port);

	if ((size_t)snprintf(path, sizeof(path), "%s" SA_DIR "/ca.crt", root) >= sizeof(path)) {
		seterr(err, errlen, "in-cluster config: root path too long");
		goto fail;
	}
	if (read_file(path, MAX_PEM, &c.ca_pem, &c.ca_pem_len, msg, sizeof(msg)) == -1) {
		seterr(err, errlen, "in-cluster config: CA: %s", msg);
		goto fail;
	}
	if (!has_pem(c.ca_pem, c.ca_pem_len)) {
		seterr(err, errlen, "in-cluster config: CA: %s: no PEM block", path);
		goto fail;
	}

	snprintf(path, sizeof(path), "%s" SA_DIR "/token", root);
	c.token_file = pk_xstrdup(path);
	c.token_read_ms = pk_now_ms();
	if (read_token(c.token_file, &c.token, msg, sizeof(msg)) == -1) {
		seterr(err, errlen, "in-cluster config: token: %s", msg);
		goto fail;
	}

	/* As client-go: a missing or empty namespace file means "default". */
	snprintf(path, sizeof(path), "%s" SA_DIR "/namespace", root);
	if (read_file(path, MAX_NAMESPACE_FILE, &buf, &len, NULL, 0) == 0) {
		size_t b = trim(buf, &len);
		if (len > b && printable(buf + b, len - b))
			c.namespace = pk_xstrndup(buf + b, len - b);
		free(buf);
	}
	if (!c.namespace)
		c.namespace = pk_xstrdup("default");
	c.in_cluster = true;
	*out = c;
	return 0;
fail:
	pk_kube_config_free(&c);
	return -1;
}

int pk_kube_config_load(const char *path, const char *context, struct pk_kube_config *out,
                        char *err, size_t errlen)
{
	if (path)
		return pk_kube_config_load_file(path, context, out, err, errlen);

	const char *kc = getenv("KUBECONFIG");
	if (kc) {
		/* kubectl merges every entry; we read the first, skipping empty
		 * ones as kubectl does. */
		while (*kc == ':')
			kc++;
		if (*kc) {
			char *first = pk_xstrndup(kc, strcspn(kc, ":"));
			int rc = pk_kube_config_load_file(first, context, out, err, errlen);
			free(first);
			return rc;
		}
	}

	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	if (host && *host)
		return pk_kube_config_in_cluster("", out, err, errlen);

	const char *home = getenv("HOME");
	if (!home || !*home) {
		memset(out, 0, sizeof(*out));
		seterr(
		    err, errlen,
		    "kubeconfig: none found (no --kubeconfig, KUBECONFIG and HOME unset, not in a "
		    "cluster)");
		return -1;
	}
	size_t n = strlen(home) + sizeof("/.kube/config");
	char *p = pk_xmalloc(n);
	snprintf(p, n, "%s/.kube/config", home);
	int rc = pk_kube_config_load_file(p, context, out, err, errlen);
	free(p);
	return rc;
}

const char *pk_kube_config_token(struct pk_kube_config *c, uint64_t now_ms, bool force)
{
	if (!c->token_file)
		return c->token;
	/* A clock reading before the last read (a caller mixing clocks) counts
	 * as fresh: better a stale token than a file read per request. */
	if (!force && (now_ms <= c->token_read_ms || now_ms - c->token_read_ms <= TOKEN_REFRESH_MS))
		return c->token;
	char *t;
	if (read_token(c->token_file, &t, NULL, 0) == -1)
		return c->token; /* kept; the timestamp too, so the next call retries */
	c->token_read_ms = now_ms;
	if (c->token && strcmp(c->token, t) == 0) {
		/* Unchanged: keep the old pointer valid for callers still holding it. */
		OPENSSL_cleanse(t, strlen(t));
		free(t);
		return c->token;
	}
	if (c->token) {
		OPENSSL_cleanse(c->token, strlen(c->token));
		free(c->token);
	}
	c->token = t;
	return c->token;
}

void pk_kube_config_free(struct pk_kube_config *c)
{
	if (!c)
		return;
	free(c->server);
	free(c->ca_pem);
	free(c->cert_pem);
	if (c->key_pem)
		OPENSSL_cleanse(c->key_pem, c->key_pem_len);
	free(c->key_pem);
	if (c->token)
		OPENSSL_cleanse(c->token, strlen(c->token));
	free(c->token);
	free(c->token_file);
	free(c->tls_server_name);
	free(c->namespace);
	memset(c, 0, sizeof(*c));
}
