/*
 * PikoCluster -> ConfigMap, Services, StatefulSet, PDB (docs/controller.md).
 *
 * Two passes: read_spec() checks and defaults the PikoCluster into a struct
 * of borrowed pointers (so every refusal happens before anything is built),
 * then the builders assemble each object in a fixed key order. json-c objects
 * keep insertion order, so equal input gives byte-equal output.
 *
 * Choices docs/controller.md leaves open, and why:
 *  - server.yaml quotes every string and escapes every non-ASCII character
 *    (\uXXXX): user text (audience, issuer) can never break the YAML or
 *    reach libyaml's refusal of control characters, and the text, hence the
 *    hash, depends only on the values;
 *  - the ConfigMap is mounted with subPath at /etc/piko/server.yaml: a
 *    whole-volume mount at /etc/piko would be read-only, and the TLS mounts
 *    under /etc/piko/tls could not be created inside it. subPath files are
 *    not refreshed, which is fine: the config hash rolls the pods instead;
 *  - Secrets are projected with items (tls.crt and tls.key, or ca.crt) so a
 *    CA Secret that also holds a key does not put that key in the pod; the
 *    cluster key's Secret likewise, its one key as the file "key" (mode
 *    0440: the fsGroup reads it), named by cluster.auth.key_file;
 *  - each auth key gets its own variable PIKO_<PORT>_AUTH_<KEY> (for example
 *    PIKO_PROXY_AUTH_HMAC_SECRET_KEY): a port may have several keys;
 *  - probes use HTTPS when the admin port serves TLS; with admin mTLS the
 *    kubelet cannot present a client certificate, so both probes become
 *    tcpSocket probes on admin (the closest check that can pass);
 *  - preStop is the kubelet's sleep action (no `sleep` binary needed in the
 *    image; GA since Kubernetes 1.34, beta and on by default since 1.30);
 *  - the pod passes PodSecurity "restricted": uid/gid 65532 (the image's
 *    nonroot user), RuntimeDefault seccomp, no privilege escalation, every
 *    capability dropped, and a read-only root filesystem (the server writes
 *    nothing to disk: no emptyDir is needed). No ServiceAccount token is
 *    mounted: the server never talks to the apiserver;
 *  - requests default to cpu 50m and memory 32Mi, each only when the user's
 *    spec.resources sets neither a request nor a limit for it (a limit alone
 *    makes Kubernetes default the request to it, and a default request above
 *    the user's limit would be refused), so the pods are Burstable, not
 *    BestEffort, and the user's values always win;
 *  - a startupProbe on /ready, first run 2 s after the start, holds the
 *    readiness and liveness probes back: a node answers /ready once it
 *    resolved its join names and linked (or failed to dial) every member,
 *    well under 2 s on a normal start (10 s at worst, a member that neither
 *    answers nor refuses), so a normal start logs no failed probe. A probe
 *    run at once would hit a port not yet listening or a node still linking.
 */
#include "render.h"

#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_key.h"
#include "config.h"
#include "jsonutil.h"
#include "strbuf.h"

#define CONFIG_PATH "/etc/piko/server.yaml"
#define TLS_DIR "/etc/piko/tls"
/* The cluster key: a Secret volume with one file, readable by the group
 * only (owner root, group the pod's fsGroup 65532, mode 0440: the server
 * runs as 65532:65532 and reads it; nobody else in the container can). */
#define CLUSTER_KEY_DIR "/etc/piko/cluster-key"
#define CLUSTER_KEY_FILE "key"
#define CLUSTER_KEY_MODE 0440
/* The kubelet removes the pod from endpoints while this runs, before
 * SIGTERM starts the drain. */
#define PRESTOP_SLEEP_S 5
/* Margin over the server's grace period before the kubelet's SIGKILL: the
 * preStop sleep (which counts against terminationGracePeriodSeconds) plus
 * 10 s for the process to exit once its own grace period is over (closing
 * what is left, flushing logs). The CRD's gracePeriod text says the same. */
#define GRACE_MARGIN_S (PRESTOP_SLEEP_S + 10)
/* The image's nonroot user and group (distroless' 65532). */
#define RUN_AS_ID 65532
/* The startupProbe: first run, period and how many failures are tolerated
 * (2 + 1 * 30 s: far past the 10 s a node takes to turn ready at worst). */
#define STARTUP_DELAY_S 2
#define STARTUP_PERIOD_S 1
#define STARTUP_FAILURES 30
/* Readiness is re-checked this often once started. */
#define READY_PERIOD_S 2

enum { P_PROXY, P_UPSTREAM, P_ADMIN, NPORTS };

static const char *const port_names[NPORTS] = {"proxy", "upstream", "admin"};

static const struct {
	const char *name;
	int port;
} container_ports[] = {
    {"proxy", 8000},
    {"upstream", 8001},
    {"admin", 8002},
    {"cluster", 8003},
};

/* The key kinds of an auth block: CRD field, server flag, env var suffix. */
enum { K_HMAC, K_RSA, K_ECDSA, NKEYS };
static const struct {
	const char *field, *flag, *env;
} key_kinds[NKEYS] = {
    {"hmacSecretRef", "hmac-secret-key", "HMAC_SECRET_KEY"},
    {"rsaPublicKeyRef", "rsa-public-key", "RSA_PUBLIC_KEY"},
    {"ecdsaPublicKeyRef", "ecdsa-public-key", "ECDSA_PUBLIC_KEY"},
};

struct keyref {
	const char *secret, *key; /* NULL secret: not set */
};

struct port_auth {
	int on;
	struct keyref keys[NKEYS];
	const char *audience, *issuer; /* NULL when unset */
};

struct port_tls {
	const char *secret, *ca; /* NULL when unset */
};

/* The PikoCluster, checked and defaulted. Every pointer is borrowed from the
 * cluster object and lives as long as it. */
struct spec {
	const char *name, *ns, *uid;
	int64_t replicas;
	const char *image, *pull_policy;
	const char *grace;
	uint64_t grace_ns;
	const char *log_level, *proxy_timeout;
	int access_log;
	struct json_object *resources; /* NULL when unset */
	struct port_auth auth[NPORTS]; /* admin is refused, so never on */
	struct port_tls tls[NPORTS];
	const char *svc_type;
	struct json_object *svc_annotations; /* NULL when unset */
	/* The cluster key's Secret and its key: spec.cluster.keySecretRef, else
	 * NAME-cluster-key (generated) and "key". */
	const char *key_secret_user, *key_secret_key; /* NULL user: generated */
	/* spec.auth.upstream.generate: the upstream HMAC key is the generated
	 * Secret NAME-upstream-key's "key", rendered as if hmacSecretRef named
	 * it (upstream_gen_name is what auth[P_UPSTREAM].keys[K_HMAC] points at). */
	int upstream_gen;
	char upstream_gen_name[PK_RENDER_MAX_NAME + 16];
	int has_min_available;
	int64_t min_available;
};

/* ---- json-c construction: the OOM policy is abort (core/buf.h) ---- */

static struct json_object *must(struct json_object *o)
{
	if (!o) {
		fprintf(stderr, "out of memory\n");
		abort();
	}
	return o;
}

static struct json_object *jobj(void)
{
	return must(json_object_new_object());
}

static struct json_object *jarr(void)
{
	return must(json_object_new_array());
}

static struct json_object *jstr(const char *s)
{
	return must(json_object_new_string(s));
}

static struct json_object *jint(int64_t v)
{
	return must(json_object_new_int64(v));
}

static struct json_object *jbool(int v)
{
	return must(json_object_new_boolean(v));
}

/* add() takes ownership of val. */
static void add(struct json_object *o, const char *key, struct json_object *val)
{
	json_object_object_add(o, key, val);
}

static void push(struct json_object *a, struct json_object *val)
{
	json_object_array_add(a, val);
}

static struct json_object *copy(struct json_object *src)
{
	struct json_object *dst = NULL;
	if (json_object_deep_copy(src, &dst, NULL) != 0)
		must(NULL);
	return dst;
}

/* ---- reading the PikoCluster ---- */

/* Missing and JSON null fields (pk_json_field gives NULL) take the default,
 * as the apiserver would. */
static int opt_string(struct json_object *o, const char *key, const char *path, const char *def,
                      const char **out, char *err, size_t errlen)
{
	struct json_object *v = pk_json_field(o, key);
	if (!v) {
		*out = def;
		return 0;
	}
	if (!json_object_is_type(v, json_type_string)) {
		snprintf(err, errlen, "%s: want a string", path);
		return -1;
	}
	const char *s = json_object_get_string(v);
	/* A \u0000 in JSON would silently cut a C string short. */
	if (strlen(s) != (size_t)json_object_get_string_len(v)) {
		snprintf(err, errlen, "%s: contains a NUL character", path);
		return -1;
	}
	*out = s;
	return 0;
}

static int opt_int(struct json_object *o, const char *key, const char *path, int64_t def,
                   int64_t *out, int *present, char *err, size_t errlen)
{
	struct json_object *v = pk_json_field(o, key);
	if (present)
		*present = v != NULL;
	if (!v) {
		*out = def;
		return 0;
	}
	if (!json_object_is_type(v, json_type_int)) {
		snprintf(err, errlen, "%s: want an integer", path);
		return -1;
	}
	*out = json_object_get_int64(v);
	if (*out < 0 || *out > INT32_MAX) {
		snprintf(err, errlen, "%s: %" PRId64 " is out of range", path, *out);
		return -1;
	}
	return 0;
}

static int opt_bool(struct json_object *o, const char *key, const char *path, int def, int *out,
                    char *err, size_t errlen)
{
	struct json_object *v = pk_json_field(o, key);
	if (!v) {
		*out = def;
		return 0;
	}
	if (!json_object_is_type(v, json_type_boolean)) {
		snprintf(err, errlen, "%s: want a boolean", path);
		return -1;
	}
	*out = json_object_get_boolean(v);
	return 0;
}

static int opt_object(struct json_object *o, const char *key, const char *path,
                      struct json_object **out, char *err, size_t errlen)
{
	struct json_object *v = pk_json_field(o, key);
	if (v && !json_object_is_type(v, json_type_object)) {
		snprintf(err, errlen, "%s: want an object", path);
		return -1;
	}
	*out = v;
	return 0;
}

/* A non-negative Go duration ("60s", "1.5h", "1h30m", "250ms", "0") in
 * nanoseconds (core/config.c parses it as Go does). Signs are refused: the
 * CRD's pattern has none. */
static int check_duration(const char *s, const char *path, uint64_t *ns, char *err, size_t errlen)
{
	int64_t v;
	if (!s || *s == '-' || *s == '+' || pk_parse_duration_ns(s, &v) == -1 || v < 0) {
		snprintf(err, errlen, "%s: invalid duration \"%.64s\"", path, s ? s : "");
		return -1;
	}
	*ns = (uint64_t)v;
	return 0;
}

/* Lowercase letters, digits and '-', not at either end, at most 63. */
static int dns_label(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return 0;
	return 1;
}

/* One port's auth block into pa; *gen set when it is spec.auth.upstream with
 * generate: true (no key refs then: pa->keys are the caller's to fill). */
static int read_auth(struct json_object *auth, int port, struct port_auth *pa, int *gen, char *err,
                     size_t errlen)
{
	char path[96];
	struct json_object *blk;
	snprintf(path, sizeof(path), "spec.auth.%s", port_names[port]);
	if (opt_object(auth, port_names[port], path, &blk, err, errlen) == -1)
		return -1;
	if (!blk)
		return 0;
	if (port == P_ADMIN) {
		/* The server guards /ready with admin auth too, so no pod
		 * could ever turn Ready; the CRD refuses this as well. */
		snprintf(err, errlen, "spec.auth.admin: admin auth is not supported");
		return -1;
	}
	int nkeys = 0, generate = 0;
	if (port == P_UPSTREAM) {
		char gpath[128];
		snprintf(gpath, sizeof(gpath), "%s.generate", path);
		if (opt_bool(blk, "generate", gpath, 0, &generate, err, errlen) == -1)
			return -1;
	}
	for (int k = 0; k < NKEYS; k++) {
		char kpath[160];
		struct json_object *ref;
		snprintf(kpath, sizeof(kpath), "%s.%s", path, key_kinds[k].field);
		if (opt_object(blk, key_kinds[k].field, kpath, &ref, err, errlen) == -1)
			return -1;
		if (!ref)
			continue;
		char npath[192], kkpath[192];
		snprintf(npath, sizeof(npath), "%s.name", kpath);
		snprintf(kkpath, sizeof(kkpath), "%s.key", kpath);
		struct keyref *kr = &pa->keys[k];
		if (opt_string(ref, "name", npath, NULL, &kr->secret, err, errlen) == -1 ||
		    opt_string(ref, "key", kkpath, NULL, &kr->key, err, errlen) == -1)
			return -1;
		if (!kr->secret || !*kr->secret || !kr->key || !*kr->key) {
			snprintf(err, errlen, "%s: needs a name and a key", kpath);
			return -1;
		}
		nkeys++;
	}
	char apath[128], ipath[128];
	snprintf(apath, sizeof(apath), "%s.audience", path);
	snprintf(ipath, sizeof(ipath), "%s.issuer", path);
	if (opt_string(blk, "audience", apath, NULL, &pa->audience, err, errlen) == -1 ||
	    opt_string(blk, "issuer", ipath, NULL, &pa->issuer, err, errlen) == -1)
		return -1;
	if (generate && nkeys > 0) {
		/* Two sources for one port's keys: the CRD refuses it too. */
		snprintf(
		    err, errlen,
		    "%s: generate: true makes the upstream key; it cannot be set together with "
		    "hmacSecretRef, rsaPublicKeyRef or ecdsaPublicKeyRef",
		    path);
		return -1;
	}
	if (generate) {
		*gen = 1; /* the caller names the key (read_spec) */
		pa->on = 1;
		return 0;
	}
	if (nkeys == 0) {
		/* Without a key the server would not check tokens at all:
		 * refuse rather than run an open port the user meant closed. */
		snprintf(err, errlen,
		         "%s: an auth block needs a key: hmacSecretRef, rsaPublicKeyRef or "
		         "ecdsaPublicKeyRef",
		         path);
		return -1;
	}
	pa->on = 1;
	return 0;
}

static int read_tls(struct json_object *tls, int port, struct port_tls *pt, char *err,
                    size_t errlen)
{
	char path[96], spath[128], cpath[128];
	struct json_object *blk;
	snprintf(path, sizeof(path), "spec.tls.%s", port_names[port]);
	if (opt_object(tls, port_names[port], path, &blk, err, errlen) == -1)
		return -1;
	if (!blk)
		return 0;
	snprintf(spath, sizeof(spath), "%s.secretName", path);
	snprintf(cpath, sizeof(cpath), "%s.clientCASecretName", path);
	if (opt_string(blk, "secretName", spath, NULL, &pt->secret, err, errlen) == -1 ||
	    opt_string(blk, "clientCASecretName", cpath, NULL, &pt->ca, err, errlen) == -1)
		return -1;
	if (!pt->secret || !*pt->secret) {
		snprintf(err, errlen, "%s: missing", spath);
		return -1;
	}
	if (pt->ca && !*pt->ca)
		pt->ca = NULL;
	return 0;
}

static int read_spec(struct json_object *cluster, struct spec *s, char *err, size_t errlen)
{
	memset(s, 0, sizeof(*s));
	if (!json_object_is_type(cluster, json_type_object)) {
		snprintf(err, errlen, "PikoCluster: want an object");
		return -1;
	}
	struct json_object *meta, *spec, *server, *auth, *tls, *svc, *pdb, *cluster_blk, *kref;
	if (opt_object(cluster, "metadata", "metadata", &meta, err, errlen) == -1 ||
	    opt_string(meta, "name", "metadata.name", NULL, &s->name, err, errlen) == -1 ||
	    opt_string(meta, "namespace", "metadata.namespace", NULL, &s->ns, err, errlen) == -1 ||
	    opt_string(meta, "uid", "metadata.uid", NULL, &s->uid, err, errlen) == -1)
		return -1;
	if (!s->name || !*s->name) {
		snprintf(err, errlen, "metadata.name: missing");
		return -1;
	}
	if (!s->ns || !*s->ns) {
		snprintf(err, errlen, "metadata.namespace: missing");
		return -1;
	}
	if (!s->uid || !*s->uid) {
		snprintf(err, errlen, "metadata.uid: missing (owner references need it)");
		return -1;
	}
	if (!dns_label(s->name) || !dns_label(s->ns)) {
		/* The name becomes Service names (DNS labels) and a label
		 * value; both also appear in server.yaml's header comment. */
		snprintf(err, errlen,
		         "metadata: name and namespace must be DNS labels (a-z, 0-9, '-')");
		return -1;
	}
	if (strlen(s->name) > PK_RENDER_MAX_NAME) {
		snprintf(err, errlen,
		         "metadata.name: at most %d characters (the StatefulSet's pods need a "
		         "revision label of NAME plus 11)",
		         PK_RENDER_MAX_NAME);
		return -1;
	}

	if (opt_object(cluster, "spec", "spec", &spec, err, errlen) == -1 ||
	    opt_int(spec, "replicas", "spec.replicas", 3, &s->replicas, NULL, err, errlen) == -1 ||
	    opt_string(spec, "image", "spec.image", "ghcr.io/pikoc/piko:0.1.0", &s->image, err,
	               errlen) == -1 ||
	    opt_string(spec, "imagePullPolicy", "spec.imagePullPolicy", "IfNotPresent",
	               &s->pull_policy, err, errlen) == -1 ||
	    opt_object(spec, "resources", "spec.resources", &s->resources, err, errlen) == -1 ||
	    opt_string(spec, "gracePeriod", "spec.gracePeriod", "60s", &s->grace, err, errlen) ==
	        -1 ||
	    check_duration(s->grace, "spec.gracePeriod", &s->grace_ns, err, errlen) == -1)
		return -1;
	/* The server refuses grace_period below one millisecond ("missing
	 * grace period"): catch it here rather than in a crash loop. */
	if (s->grace_ns < 1000000) {
		snprintf(err, errlen, "spec.gracePeriod: must be at least 1ms");
		return -1;
	}

	uint64_t timeout_ns;
	if (opt_object(spec, "server", "spec.server", &server, err, errlen) == -1 ||
	    opt_string(server, "logLevel", "spec.server.logLevel", "info", &s->log_level, err,
	               errlen) == -1 ||
	    opt_string(server, "proxyTimeout", "spec.server.proxyTimeout", "30s", &s->proxy_timeout,
	               err, errlen) == -1 ||
	    check_duration(s->proxy_timeout, "spec.server.proxyTimeout", &timeout_ns, err,
	                   errlen) == -1 ||
	    opt_bool(server, "accessLog", "spec.server.accessLog", 1, &s->access_log, err,
	             errlen) == -1)
		return -1;
	static const char *const levels[] = {"debug", "info", "warn", "error"};
	int level_ok = 0;
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		level_ok |= strcmp(s->log_level, levels[i]) == 0;
	if (!level_ok) {
		snprintf(err, errlen,
		         "spec.server.logLevel: \"%.32s\" is not debug, info, warn or error",
		         s->log_level);
		return -1;
	}

	if (opt_object(spec, "auth", "spec.auth", &auth, err, errlen) == -1 ||
	    opt_object(spec, "tls", "spec.tls", &tls, err, errlen) == -1)
		return -1;
	for (int p = 0; p < NPORTS; p++)
		if (read_auth(auth, p, &s->auth[p], &s->upstream_gen, err, errlen) == -1 ||
		    read_tls(tls, p, &s->tls[p], err, errlen) == -1)
			return -1;
	if (s->upstream_gen) {
		/* Rendered exactly as hmacSecretRef {name: NAME-upstream-key,
		 * key: key}: the server takes the Secret's text as its HMAC
		 * secret, as it takes a user's. */
		pk_render_child_name(s->name, PK_UPSTREAM_KEY_SECRET_SUFFIX, s->upstream_gen_name,
		                     sizeof(s->upstream_gen_name));
		s->auth[P_UPSTREAM].keys[K_HMAC].secret = s->upstream_gen_name;
		s->auth[P_UPSTREAM].keys[K_HMAC].key = PK_UPSTREAM_KEY_SECRET_KEY;
	}

	if (opt_object(spec, "service", "spec.service", &svc, err, errlen) == -1 ||
	    opt_string(svc, "type", "spec.service.type", "ClusterIP", &s->svc_type, err, errlen) ==
	        -1 ||
	    opt_object(svc, "annotations", "spec.service.annotations", &s->svc_annotations, err,
	               errlen) == -1)
		return -1;
	if (s->svc_annotations) {
		json_object_object_foreach(s->svc_annotations, akey, aval)
		{
			if (!json_object_is_type(aval, json_type_string)) {
				snprintf(err, errlen,
				         "spec.service.annotations.%.64s: want a string", akey);
				return -1;
			}
		}
	}

	if (opt_object(spec, "podDisruptionBudget", "spec.podDisruptionBudget", &pdb, err,
	               errlen) == -1 ||
	    opt_int(pdb, "minAvailable", "spec.podDisruptionBudget.minAvailable", 0,
	            &s->min_available, &s->has_min_available, err, errlen) == -1)
		return -1;

	if (opt_object(spec, "cluster", "spec.cluster", &cluster_blk, err, errlen) == -1 ||
	    opt_object(cluster_blk, "keySecretRef", "spec.cluster.keySecretRef", &kref, err,
	               errlen) == -1 ||
	    opt_string(kref, "name", "spec.cluster.keySecretRef.name", NULL, &s->key_secret_user,
	               err, errlen) == -1 ||
	    opt_string(kref, "key", "spec.cluster.keySecretRef.key", "key", &s->key_secret_key, err,
	               errlen) == -1)
		return -1;
	if (kref && (!s->key_secret_user || !*s->key_secret_user || !*s->key_secret_key)) {
		snprintf(err, errlen,
		         "spec.cluster.keySecretRef: needs a name (and a non-empty key)");
		return -1;
	}
	/* The CRD's patterns, checked again: the name goes into a request
	 * path, and both into the pod's volume. */
	if (s->key_secret_user &&
	    (strlen(s->key_secret_user) > 253 ||
	     strspn(s->key_secret_user, "abcdefghijklmnopqrstuvwxyz0123456789.-") !=
	         strlen(s->key_secret_user))) {
		snprintf(err, errlen, "spec.cluster.keySecretRef.name: not a Secret name");
		return -1;
	}
	if (strlen(s->key_secret_key) > 253 ||
	    strspn(s->key_secret_key,
	           "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
	        strlen(s->key_secret_key)) {
		snprintf(err, errlen, "spec.cluster.keySecretRef.key: not a Secret key");
		return -1;
	}
	return 0;
}

/* ---- server.yaml ---- */

/* Decode one UTF-8 sequence at p (n bytes left). Returns its length and the
 * code point in *cp, or 0 when it is not valid UTF-8 (overlong, surrogate,
 * beyond U+10FFFF, truncated). */
static size_t utf8_decode(const unsigned char *p, size_t n, uint32_t *cp)
{
	size_t len;
	uint32_t min;
	if (p[0] < 0x80) {
		*cp = p[0];
		return 1;
	} else if ((p[0] & 0xe0) == 0xc0) {
		len = 2, min = 0x80, *cp = p[0] & 0x1f;
	} else if ((p[0] & 0xf0) == 0xe0) {
		len = 3, min = 0x800, *cp = p[0] & 0x0f;
	} else if ((p[0] & 0xf8) == 0xf0) {
		len = 4, min = 0x10000, *cp = p[0] & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		*cp = (*cp << 6) | (p[i] & 0x3f);
	}
	if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
		return 0;
	return len;
}

/* s as a YAML double-quoted scalar holding only printable ASCII. Returns 0,
 * or -1 when s is not valid UTF-8. */
static int yaml_quote(struct pk_sb *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	pk_sb_put(b, "\"", 1);
	while (n > 0) {
		uint32_t cp;
		size_t len = utf8_decode(p, n, &cp);
		if (len == 0)
			return -1;
		if (cp == '"' || cp == '\\')
			pk_sb_printf(b, "\\%c", (char)cp);
		else if (cp >= 0x20 && cp < 0x7f)
			pk_sb_put(b, (const char *)p, 1);
		else if (cp <= 0xffff)
			pk_sb_printf(b, "\\u%04" PRIX32, cp);
		else
			pk_sb_printf(b, "\\U%08" PRIX32, cp);
		p += len;
		n -= len;
	}
	pk_sb_put(b, "\"", 1);
	return 0;
}

/* "  key: "value"\n" at the given indent (in two-space steps). */
static int yaml_kv(struct pk_sb *b, int indent, const char *key, const char *val)
{
	pk_sb_printf(b, "%*s%s: ", indent * 2, "", key);
	if (yaml_quote(b, val) == -1)
		return -1;
	pk_sb_put(b, "\n", 1);
	return 0;
}

static int yaml_tls_auth(struct pk_sb *b, const struct spec *s, int port, char *err, size_t errlen)
{
	const char *name = port_names[port];
	const struct port_tls *t = &s->tls[port];
	const struct port_auth *a = &s->auth[port];
	char path[128];
	if (t->secret) {
		pk_sb_str(b, "  tls:\n");
		snprintf(path, sizeof(path), TLS_DIR "/%s/tls.crt", name);
		yaml_kv(b, 2, "cert", path);
		snprintf(path, sizeof(path), TLS_DIR "/%s/tls.key", name);
		yaml_kv(b, 2, "key", path);
		if (t->ca) {
			snprintf(path, sizeof(path), TLS_DIR "/%s-ca/ca.crt", name);
			yaml_kv(b, 2, "client_cas", path);
		}
	}
	/* The keys themselves come as flags from Secrets (see the args):
	 * only the claims to check are config. */
	if (a->on && (a->audience || a->issuer)) {
		pk_sb_str(b, "  auth:\n");
		if (a->audience && yaml_kv(b, 2, "audience", a->audience) == -1) {
			snprintf(err, errlen, "spec.auth.%s.audience: not valid UTF-8", name);
			return -1;
		}
		if (a->issuer && yaml_kv(b, 2, "issuer", a->issuer) == -1) {
			snprintf(err, errlen, "spec.auth.%s.issuer: not valid UTF-8", name);
			return -1;
		}
	}
	return 0;
}

/* server.yaml in docs/controller.md's key order. Returns a string owned by
 * the caller, or NULL with err set. */
static char *server_yaml(const struct spec *s, char *err, size_t errlen)
{
	struct pk_sb b = {0}; /* owned here until pk_sb_finish */
	pk_sb_printf(&b,
	             "# Rendered by piko-controller from PikoCluster %s/%s; edits are "
	             "overwritten.\n",
	             s->ns, s->name);
	pk_sb_str(&b, "log:\n");
	yaml_kv(&b, 1, "level", s->log_level);
	pk_sb_str(&b, "proxy:\n");
	yaml_kv(&b, 1, "bind_addr", "0.0.0.0:8000");
	yaml_kv(&b, 1, "timeout", s->proxy_timeout);
	pk_sb_printf(&b, "  access_log:\n    disable: %s\n", s->access_log ? "false" : "true");
	if (yaml_tls_auth(&b, s, P_PROXY, err, errlen) == -1)
		goto fail;
	pk_sb_str(&b, "upstream:\n");
	yaml_kv(&b, 1, "bind_addr", "0.0.0.0:8001");
	if (yaml_tls_auth(&b, s, P_UPSTREAM, err, errlen) == -1)
		goto fail;
	pk_sb_str(&b, "admin:\n");
	yaml_kv(&b, 1, "bind_addr", "0.0.0.0:8002");
	if (yaml_tls_auth(&b, s, P_ADMIN, err, errlen) == -1)
		goto fail;
	/* The headless Service publishes every pod, ready or not: a cluster
	 * forms through DNS even while the controller is down, and the
	 * controller's pushes name the same addresses. The node's ID prefix
	 * (its pod name) and advertised address (its pod IP) come as flags
	 * from the pod's env. */
	char peers[PK_RENDER_MAX_NAME + 16], join[2 * PK_RENDER_MAX_NAME + 64];
	pk_render_child_name(s->name, "peers", peers, sizeof(peers));
	snprintf(join, sizeof(join), "%s.%s.svc:8003", peers, s->ns);
	pk_sb_str(&b, "cluster:\n");
	yaml_kv(&b, 1, "bind_addr", "0.0.0.0:8003");
	pk_sb_str(&b, "  join:\n    - ");
	if (yaml_quote(&b, join) == -1)
		goto fail;
	pk_sb_put(&b, "\n", 1);
	/* The cluster key, mounted from its Secret (never in the ConfigMap):
	 * links, hellos and member pushes must prove they hold it. */
	pk_sb_str(&b, "  auth:\n");
	yaml_kv(&b, 2, "key_file", CLUSTER_KEY_DIR "/" CLUSTER_KEY_FILE);
	yaml_kv(&b, 0, "grace_period", s->grace);
	return pk_sb_finish(&b, NULL);
fail:
	free(pk_sb_finish(&b, NULL));
	return NULL;
}

static void sha256_hex(const char *text, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
		/* Only an OpenSSL without SHA-256 or out of memory gets
		 * here; the OOM policy is abort. */
		fprintf(stderr, "render: SHA-256 failed\n");
		abort();
	}
	for (unsigned int i = 0; i < mdlen; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- objects ---- */

static struct json_object *selector_labels(const struct spec *s)
{
	struct json_object *l = jobj();
	add(l, "app.kubernetes.io/name", jstr("piko"));
	add(l, "app.kubernetes.io/instance", jstr(s->name));
	return l;
}

static struct json_object *labels(const struct spec *s)
{
	struct json_object *l = selector_labels(s);
	add(l, "app.kubernetes.io/component", jstr("server"));
	add(l, "app.kubernetes.io/managed-by", jstr("piko-controller"));
	return l;
}

/* The head of every child: apiVersion, kind, metadata. */
static struct json_object *object(const struct spec *s, const char *api_version, const char *kind,
                                  const char *suffix)
{
	char name[PK_RENDER_MAX_NAME + 16];
	pk_render_child_name(s->name, suffix, name, sizeof(name));
	struct json_object *o = jobj(), *meta = jobj(), *refs = jarr(), *ref = jobj();
	add(o, "apiVersion", jstr(api_version));
	add(o, "kind", jstr(kind));
	add(meta, "name", jstr(name));
	add(meta, "namespace", jstr(s->ns));
	add(meta, "labels", labels(s));
	add(ref, "apiVersion", jstr(PK_API_VERSION));
	add(ref, "kind", jstr(PK_KIND));
	add(ref, "name", jstr(s->name));
	add(ref, "uid", jstr(s->uid));
	add(ref, "controller", jbool(1));
	add(ref, "blockOwnerDeletion", jbool(1));
	push(refs, ref);
	add(meta, "ownerReferences", refs);
	add(o, "metadata", meta);
	return o;
}

static struct json_object *meta_of(struct json_object *o)
{
	return pk_json_field(o, "metadata");
}

static struct json_object *svc_port(const char *name, int port)
{
	struct json_object *p = jobj();
	add(p, "name", jstr(name));
	add(p, "protocol", jstr("TCP"));
	add(p, "port", jint(port));
	add(p, "targetPort", jstr(name));
	return p;
}

static struct json_object *render_configmap(const struct spec *s, const char *yaml)
{
	struct json_object *o = object(s, "v1", "ConfigMap", "config"), *data = jobj();
	add(data, "server.yaml", jstr(yaml));
	add(o, "data", data);
	return o;
}

static struct json_object *render_peers_svc(const struct spec *s)
{
	struct json_object *o = object(s, "v1", "Service", "peers"), *spec = jobj();
	struct json_object *ports = jarr();
	add(spec, "clusterIP", jstr("None"));
	/* Peers must find each other before any of them is Ready. */
	add(spec, "publishNotReadyAddresses", jbool(1));
	add(spec, "selector", selector_labels(s));
	push(ports, svc_port("cluster", 8003));
	push(ports, svc_port("admin", 8002));
	add(spec, "ports", ports);
	add(o, "spec", spec);
	return o;
}

static struct json_object *render_client_svc(const struct spec *s)
{
	struct json_object *o = object(s, "v1", "Service", NULL), *spec = jobj();
	struct json_object *ports = jarr();
	if (s->svc_annotations)
		add(meta_of(o), "annotations", copy(s->svc_annotations));
	add(spec, "type", jstr(s->svc_type));
	add(spec, "selector", selector_labels(s));
	push(ports, svc_port("proxy", 8000));
	push(ports, svc_port("upstream", 8001));
	add(spec, "ports", ports);
	add(o, "spec", spec);
	return o;
}

static struct json_object *env_field(const char *name, const char *path)
{
	struct json_object *e = jobj(), *from = jobj(), *ref = jobj();
	add(ref, "fieldPath", jstr(path));
	add(from, "fieldRef", ref);
	add(e, "name", jstr(name));
	add(e, "valueFrom", from);
	return e;
}

static struct json_object *env_secret(const char *name, const struct keyref *k)
{
	struct json_object *e = jobj(), *from = jobj(), *ref = jobj();
	add(ref, "name", jstr(k->secret));
	add(ref, "key", jstr(k->key));
	add(from, "secretKeyRef", ref);
	add(e, "name", jstr(name));
	add(e, "valueFrom", from);
	return e;
}

/* PIKO_PROXY_AUTH_HMAC_SECRET_KEY */
static void env_name(int port, int kind, char *buf, size_t len)
{
	char up[16];
	size_t i;
	for (i = 0; port_names[port][i] && i < sizeof(up) - 1; i++)
		up[i] = (char)toupper((unsigned char)port_names[port][i]);
	up[i] = '\0';
	snprintf(buf, len, "PIKO_%s_AUTH_%s", up, key_kinds[kind].env);
}

/* A probe of path on the admin port; delay, period and failures 0 leave the
 * Kubernetes default. */
static struct json_object *probe(const struct spec *s, const char *path, int delay, int period,
                                 int failures)
{
	struct json_object *p = jobj(), *act = jobj();
	const struct port_tls *t = &s->tls[P_ADMIN];
	if (t->secret && t->ca) {
		/* mTLS: the kubelet has no client certificate to show. */
		add(act, "port", jstr("admin"));
		add(p, "tcpSocket", act);
	} else {
		add(act, "path", jstr(path));
		add(act, "port", jstr("admin"));
		add(act, "scheme", jstr(t->secret ? "HTTPS" : "HTTP"));
		add(p, "httpGet", act);
	}
	if (delay)
		add(p, "initialDelaySeconds", jint(delay));
	if (period)
		add(p, "periodSeconds", jint(period));
	if (failures)
		add(p, "failureThreshold", jint(failures));
	return p;
}

/* spec.resources with a default request for cpu and memory each, when the
 * user set neither a request nor a limit for it. Owned by the caller. */
static struct json_object *resources(const struct spec *s)
{
	static const struct {
		const char *name, *value;
	} defaults[] = {{"cpu", "50m"}, {"memory", "32Mi"}};
	struct json_object *r = s->resources ? copy(s->resources) : jobj();
	struct json_object *req = pk_json_field(r, "requests");
	struct json_object *lim = pk_json_field(r, "limits");
	if (req && !json_object_is_type(req, json_type_object))
		return r; /* not ours to fix: the apiserver will say why */
	for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
		if (pk_json_field(req, defaults[i].name) || pk_json_field(lim, defaults[i].name))
			continue;
		if (!req) {
			req = jobj();
			add(r, "requests", req);
		}
		add(req, defaults[i].name, jstr(defaults[i].value));
	}
	return r;
}

static struct json_object *mount(const char *name, const char *path, const char *sub)
{
	struct json_object *m = jobj();
	add(m, "name", jstr(name));
	add(m, "mountPath", jstr(path));
	if (sub)
		add(m, "subPath", jstr(sub));
	add(m, "readOnly", jbool(1));
	return m;
}

/* A Secret volume projecting only the named keys (each to a file of the same
 * name). */
static struct json_object *secret_volume(const char *name, const char *secret,
                                         const char *const *keys, size_t nkeys)
{
	struct json_object *v = jobj(), *sec = jobj(), *items = jarr();
	add(sec, "secretName", jstr(secret));
	for (size_t i = 0; i < nkeys; i++) {
		struct json_object *it = jobj();
		add(it, "key", jstr(keys[i]));
		add(it, "path", jstr(keys[i]));
		push(items, it);
	}
	add(sec, "items", items);
	add(v, "name", jstr(name));
	add(v, "secret", sec);
	return v;
}

static struct json_object *render_container(const struct spec *s)
{
	struct json_object *c = jobj(), *args = jarr(), *env = jarr(), *ports = jarr();
	struct json_object *mounts = jarr();
	add(c, "name", jstr("piko"));
	add(c, "image", jstr(s->image));
	add(c, "imagePullPolicy", jstr(s->pull_policy));

	push(args, jstr("server"));
	push(args, jstr("--config.path=" CONFIG_PATH));
	/* A new node ID on every start (the random suffix), named after the
	 * pod; the cluster address peers know it by is its pod IP. */
	push(args, jstr("--cluster.node-id-prefix=$(POD_NAME)-"));
	push(args, jstr("--cluster.advertise-addr=$(POD_IP)"));
	push(env, env_field("POD_NAME", "metadata.name"));
	push(env, env_field("POD_IP", "status.podIP"));
	for (int p = 0; p < NPORTS; p++) {
		for (int k = 0; k < NKEYS; k++) {
			const struct keyref *kr = &s->auth[p].keys[k];
			if (!s->auth[p].on || !kr->secret)
				continue;
			/* The key stays out of the ConfigMap (the controller
			 * cannot read Secrets): the kubelet expands $(VAR)
			 * from the container's env. */
			char var[64], flag[160];
			env_name(p, k, var, sizeof(var));
			snprintf(flag, sizeof(flag), "--%s.auth.%s=$(%s)", port_names[p],
			         key_kinds[k].flag, var);
			push(args, jstr(flag));
			push(env, env_secret(var, kr));
		}
	}
	add(c, "args", args);
	add(c, "env", env);

	for (size_t i = 0; i < sizeof(container_ports) / sizeof(container_ports[0]); i++) {
		struct json_object *p = jobj();
		add(p, "name", jstr(container_ports[i].name));
		add(p, "containerPort", jint(container_ports[i].port));
		add(p, "protocol", jstr("TCP"));
		push(ports, p);
	}
	add(c, "ports", ports);
	add(c, "resources", resources(s));

	push(mounts, mount("config", CONFIG_PATH, "server.yaml"));
	push(mounts, mount("cluster-key", CLUSTER_KEY_DIR, NULL));
	for (int p = 0; p < NPORTS; p++) {
		char vname[32], path[64];
		if (!s->tls[p].secret)
			continue;
		snprintf(vname, sizeof(vname), "tls-%s", port_names[p]);
		snprintf(path, sizeof(path), TLS_DIR "/%s", port_names[p]);
		push(mounts, mount(vname, path, NULL));
		if (s->tls[p].ca) {
			snprintf(vname, sizeof(vname), "tls-%s-ca", port_names[p]);
			snprintf(path, sizeof(path), TLS_DIR "/%s-ca", port_names[p]);
			push(mounts, mount(vname, path, NULL));
		}
	}
	add(c, "volumeMounts", mounts);

	/* The startup probe holds the other two back until the node is ready
	 * (see the top of the file). */
	add(c, "startupProbe",
	    probe(s, "/ready", STARTUP_DELAY_S, STARTUP_PERIOD_S, STARTUP_FAILURES));
	add(c, "readinessProbe", probe(s, "/ready", 0, READY_PERIOD_S, 0));
	add(c, "livenessProbe", probe(s, "/health", 0, 0, 0));
	struct json_object *life = jobj(), *pre = jobj(), *sleep = jobj();
	add(sleep, "seconds", jint(PRESTOP_SLEEP_S));
	add(pre, "sleep", sleep);
	add(life, "preStop", pre);
	add(c, "lifecycle", life);

	/* PodSecurity "restricted" (the pod's securityContext does the rest). */
	struct json_object *sc = jobj(), *caps = jobj(), *drop = jarr();
	add(sc, "allowPrivilegeEscalation", jbool(0));
	push(drop, jstr("ALL"));
	add(caps, "drop", drop);
	add(sc, "capabilities", caps);
	add(sc, "readOnlyRootFilesystem", jbool(1));
	add(c, "securityContext", sc);
	return c;
}

static struct json_object *render_volumes(const struct spec *s)
{
	static const char *const tls_keys[] = {"tls.crt", "tls.key"};
	static const char *const ca_keys[] = {"ca.crt"};
	struct json_object *vols = jarr(), *cfg = jobj(), *cm = jobj();
	char cm_name[PK_RENDER_MAX_NAME + 16];
	pk_render_child_name(s->name, "config", cm_name, sizeof(cm_name));
	add(cm, "name", jstr(cm_name));
	add(cfg, "name", jstr("config"));
	add(cfg, "configMap", cm);
	push(vols, cfg);
	char key_secret[PK_RENDER_MAX_NAME + 16];
	const char *key_item = s->key_secret_key;
	if (s->key_secret_user)
		snprintf(key_secret, sizeof(key_secret), "%s", s->key_secret_user);
	else
		pk_render_child_name(s->name, PK_CLUSTER_KEY_SECRET_SUFFIX, key_secret,
		                     sizeof(key_secret));
	struct json_object *kv = secret_volume("cluster-key", key_secret, &key_item, 1);
	/* One file named "key", whatever the Secret's key is called. */
	add(json_object_array_get_idx(pk_json_field(pk_json_field(kv, "secret"), "items"), 0),
	    "path", jstr(CLUSTER_KEY_FILE));
	add(pk_json_field(kv, "secret"), "defaultMode", jint(CLUSTER_KEY_MODE));
	push(vols, kv);
	for (int p = 0; p < NPORTS; p++) {
		char vname[32];
		if (!s->tls[p].secret)
			continue;
		snprintf(vname, sizeof(vname), "tls-%s", port_names[p]);
		push(vols, secret_volume(vname, s->tls[p].secret, tls_keys, 2));
		if (s->tls[p].ca) {
			snprintf(vname, sizeof(vname), "tls-%s-ca", port_names[p]);
			push(vols, secret_volume(vname, s->tls[p].ca, ca_keys, 1));
		}
	}
	return vols;
}

static struct json_object *render_sts(const struct spec *s, const char *hash)
{
	struct json_object *o = object(s, "apps/v1", "StatefulSet", NULL), *spec = jobj();
	struct json_object *strategy = jobj(), *sel = jobj(), *tmpl = jobj(), *tmeta = jobj();
	struct json_object *ann = jobj(), *pod = jobj(), *containers = jarr();
	char peers[PK_RENDER_MAX_NAME + 16];
	pk_render_child_name(s->name, "peers", peers, sizeof(peers));

	add(spec, "replicas", jint(s->replicas));
	add(spec, "serviceName", jstr(peers));
	/* Nodes need no ordered start: scaling and creation are parallel. */
	add(spec, "podManagementPolicy", jstr("Parallel"));
	add(strategy, "type", jstr("RollingUpdate"));
	add(spec, "updateStrategy", strategy);
	add(sel, "matchLabels", selector_labels(s));
	add(spec, "selector", sel);

	/* Nothing below depends on replicas: a scale never rolls the pods. */
	add(tmeta, "labels", labels(s));
	add(ann, PK_CONFIG_HASH_ANNOTATION, jstr(hash));
	add(tmeta, "annotations", ann);
	add(tmpl, "metadata", tmeta);
	uint64_t grace_s = s->grace_ns / 1000000000u + (s->grace_ns % 1000000000u != 0);
	add(pod, "terminationGracePeriodSeconds", jint((int64_t)grace_s + GRACE_MARGIN_S));
	/* The server never calls the apiserver: no token in the pod. */
	add(pod, "automountServiceAccountToken", jbool(0));
	struct json_object *psc = jobj(), *seccomp = jobj();
	add(psc, "runAsNonRoot", jbool(1));
	add(psc, "runAsUser", jint(RUN_AS_ID));
	add(psc, "runAsGroup", jint(RUN_AS_ID));
	add(psc, "fsGroup", jint(RUN_AS_ID));
	add(seccomp, "type", jstr("RuntimeDefault"));
	add(psc, "seccompProfile", seccomp);
	add(pod, "securityContext", psc);
	push(containers, render_container(s));
	add(pod, "containers", containers);
	add(pod, "volumes", render_volumes(s));
	add(tmpl, "spec", pod);
	add(spec, "template", tmpl);
	add(o, "spec", spec);
	return o;
}

static struct json_object *render_pdb(const struct spec *s)
{
	struct json_object *o = object(s, "policy/v1", "PodDisruptionBudget", NULL);
	struct json_object *spec = jobj(), *sel = jobj();
	add(sel, "matchLabels", selector_labels(s));
	add(spec, "selector", sel);
	if (s->has_min_available)
		add(spec, "minAvailable", jint(s->min_available));
	else
		add(spec, "maxUnavailable", jint(1));
	/* A crash-looping pod must never block a node drain. */
	add(spec, "unhealthyPodEvictionPolicy", jstr("AlwaysAllow"));
	add(o, "spec", spec);
	return o;
}

int pk_render(struct json_object *cluster, struct pk_render *out, char *err, size_t errlen)
{
	struct spec s;
	memset(out, 0, sizeof(*out));
	if (read_spec(cluster, &s, err, errlen) == -1)
		return -1;
	char *yaml = server_yaml(&s, err, errlen); /* owned here */
	if (!yaml)
		return -1;
	sha256_hex(yaml, out->config_hash);
	out->configmap = render_configmap(&s, yaml);
	free(yaml);
	yaml = NULL;
	out->peers_svc = render_peers_svc(&s);
	out->client_svc = render_client_svc(&s);
	out->sts = render_sts(&s, out->config_hash);
	out->pdb = s.replicas > 1 ? render_pdb(&s) : NULL;
	out->key_user = s.key_secret_user != NULL;
	if (s.key_secret_user)
		snprintf(out->key_secret_name, sizeof(out->key_secret_name), "%s",
		         s.key_secret_user);
	else
		pk_render_child_name(s.name, PK_CLUSTER_KEY_SECRET_SUFFIX, out->key_secret_name,
		                     sizeof(out->key_secret_name));
	snprintf(out->key_secret_key, sizeof(out->key_secret_key), "%s", s.key_secret_key);
	if (!s.key_secret_user) {
		/* Created once (POST), never applied over: the key in it is
		 * the cluster's, and rewriting it would cut every node off. */
		out->key_secret = object(&s, "v1", "Secret", PK_CLUSTER_KEY_SECRET_SUFFIX);
		add(out->key_secret, "type", jstr("Opaque"));
		add(out->key_secret, "immutable", jbool(1));
	}
	if (s.upstream_gen) {
		/* The same: created once, immutable, owned (deleted with the
		 * cluster, and left alone when generate is turned off). */
		snprintf(out->upstream_secret_name, sizeof(out->upstream_secret_name), "%s",
		         s.upstream_gen_name);
		out->upstream_secret = object(&s, "v1", "Secret", PK_UPSTREAM_KEY_SECRET_SUFFIX);
		add(out->upstream_secret, "type", jstr("Opaque"));
		add(out->upstream_secret, "immutable", jbool(1));
	}
	return 0;
}

void pk_render_free(struct pk_render *r)
{
	json_object_put(r->configmap);
	json_object_put(r->peers_svc);
	json_object_put(r->client_svc);
	json_object_put(r->sts);
	json_object_put(r->pdb);
	json_object_put(r->key_secret);
	json_object_put(r->upstream_secret);
	memset(r, 0, sizeof(*r));
}

void pk_render_selector(const char *name, char *buf, size_t len)
{
	if (len == 0)
		return;
	snprintf(buf, len, "app.kubernetes.io/name=piko,app.kubernetes.io/instance=%s", name);
}

void pk_render_child_name(const char *name, const char *suffix, char *buf, size_t len)
{
	if (len == 0)
		return;
	if (suffix && *suffix)
		snprintf(buf, len, "%s-%s", name, suffix);
	else
		snprintf(buf, len, "%s", name);
}

/* Put the hash of key on the pod template as annotation, and the key into
 * secret's data[item] when there is a Secret to create. */
static void set_key(struct pk_render *r, const char *annotation, struct json_object *secret,
                    const char *item, const char *key, size_t key_len)
{
	char hash[PK_CLUSTER_KEY_HASH_HEX + 1];
	pk_cluster_key_hash(key, key_len, hash);
	struct json_object *ann = pk_json_field(
	    pk_json_field(pk_json_field(pk_json_field(r->sts, "spec"), "template"), "metadata"),
	    "annotations");
	if (ann)
		add(ann, annotation, jstr(hash));
	if (secret) {
		char *b64 = pk_base64_encode(key, key_len); /* owned here */
		struct json_object *data = jobj();
		add(data, item, jstr(b64));
		add(secret, "data", data);
		OPENSSL_cleanse(b64, strlen(b64));
		free(b64);
	}
}

void pk_render_set_key(struct pk_render *r, const char *key, size_t key_len)
{
	set_key(r, PK_CLUSTER_KEY_HASH_ANNOTATION, r->key_secret, r->key_secret_key, key, key_len);
}

void pk_render_set_upstream_key(struct pk_render *r, const char *key, size_t key_len)
{
	if (r->upstream_secret)
		set_key(r, PK_UPSTREAM_KEY_HASH_ANNOTATION, r->upstream_secret,
		        PK_UPSTREAM_KEY_SECRET_KEY, key, key_len);
}
