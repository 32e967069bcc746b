/*
 * PikoCluster rendering (controller/render.c): golden files for three
 * clusters, the hash and pod-template invariants, the refusals, and the
 * rendered server.yaml loaded by the server's own config loader and
 * validator (so what we render is what `piko server` accepts).
 *
 * Golden files: tests/unit/golden/render_<case>.json, found through
 * __FILE__'s directory. PK_UPDATE_GOLDEN=1 rewrites them instead of
 * comparing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "cluster_auth.h"
#include "cluster_key.h"
#include "config.h"
#include "jsonutil.h"
#include "render.h"
#include "server_config.h"

#define JSON_FLAGS                                                                                 \
	(JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE)

/* As the apiserver returns a PikoCluster created with an empty spec: every
 * CRD default applied. */
static const char *const minimal_json =
    "{\"apiVersion\":\"piko.dev/v1alpha1\",\"kind\":\"PikoCluster\","
    "\"metadata\":{\"name\":\"web\",\"namespace\":\"edge\","
    "\"uid\":\"0b7c6e8e-4a5d-4d0e-9a44-5c2b1f1d2a01\",\"generation\":1},"
    "\"spec\":{\"replicas\":3,\"image\":\"ghcr.io/pikoc/piko:0.1.0\","
    "\"imagePullPolicy\":\"IfNotPresent\",\"gracePeriod\":\"60s\","
    "\"server\":{\"logLevel\":\"info\",\"proxyTimeout\":\"30s\",\"accessLog\":true},"
    "\"service\":{\"type\":\"ClusterIP\"}}}";

static const char *const full_json =
    "{\"apiVersion\":\"piko.dev/v1alpha1\",\"kind\":\"PikoCluster\","
    "\"metadata\":{\"name\":\"tunnels\",\"namespace\":\"prod\","
    "\"uid\":\"9f1e2d3c-0000-4111-8222-333344445555\",\"generation\":7},"
    "\"spec\":{\"replicas\":5,\"image\":\"registry.example.com/piko:1.2.3\","
    "\"imagePullPolicy\":\"Always\","
    "\"resources\":{\"requests\":{\"cpu\":\"250m\",\"memory\":\"64Mi\"},"
    "\"limits\":{\"memory\":\"128Mi\"}},"
    "\"gracePeriod\":\"1m30.5s\","
    "\"server\":{\"logLevel\":\"debug\",\"proxyTimeout\":\"45s\",\"accessLog\":false},"
    "\"auth\":{"
    "\"proxy\":{\"hmacSecretRef\":{\"name\":\"piko-auth\",\"key\":\"hmac\"},"
    "\"audience\":\"piko \\\"proxy\\\" caf\\u00e9\",\"issuer\":\"https://issuer.example.com/\"},"
    "\"upstream\":{\"rsaPublicKeyRef\":{\"name\":\"piko-auth\",\"key\":\"rsa.pub\"},"
    "\"hmacSecretRef\":{\"name\":\"piko-agents\",\"key\":\"secret\"},"
    "\"audience\":\"piko-upstream\"}},"
    "\"tls\":{\"proxy\":{\"secretName\":\"proxy-tls\",\"clientCASecretName\":\"proxy-ca\"},"
    "\"upstream\":{\"secretName\":\"upstream-tls\"}},"
    "\"service\":{\"type\":\"LoadBalancer\",\"annotations\":{"
    "\"service.beta.kubernetes.io/aws-load-balancer-type\":\"nlb\","
    "\"example.com/team\":\"edge\"}},"
    "\"podDisruptionBudget\":{\"minAvailable\":3},"
    "\"cluster\":{\"keySecretRef\":{\"name\":\"tunnels-key\",\"key\":\"cluster.key\"}}}}";

/* spec.auth.upstream.generate, with an audience (the apiserver's defaults
 * otherwise as in minimal_json). */
#define GEN_HEAD                                                                                   \
	"{\"apiVersion\":\"piko.dev/v1alpha1\",\"kind\":\"PikoCluster\","                          \
	"\"metadata\":{\"name\":\"web\",\"namespace\":\"edge\","                                   \
	"\"uid\":\"0b7c6e8e-4a5d-4d0e-9a44-5c2b1f1d2a01\",\"generation\":2},"                      \
	"\"spec\":{\"replicas\":3,\"image\":\"ghcr.io/pikoc/piko:0.1.0\","                         \
	"\"imagePullPolicy\":\"IfNotPresent\",\"gracePeriod\":\"60s\","                            \
	"\"server\":{\"logLevel\":\"info\",\"proxyTimeout\":\"30s\",\"accessLog\":true},"          \
	"\"service\":{\"type\":\"ClusterIP\"},\"auth\":{\"upstream\":{\"audience\":\"agents\","
static const char *const gen_json = GEN_HEAD "\"generate\":true}}}}";
/* The same cluster with the generated Secret named as the user's own. */
static const char *const gen_as_ref_json = GEN_HEAD
    "\"generate\":false,\"hmacSecretRef\":{\"name\":\"web-upstream-key\",\"key\":\"key\"}}}}}";

/* One node, admin TLS (HTTPS probes), no PDB. */
static const char *const single_json =
    "{\"apiVersion\":\"piko.dev/v1alpha1\",\"kind\":\"PikoCluster\","
    "\"metadata\":{\"name\":\"solo\",\"namespace\":\"default\","
    "\"uid\":\"11111111-2222-4333-8444-555555555555\",\"generation\":2},"
    "\"spec\":{\"replicas\":1,\"image\":\"ghcr.io/pikoc/piko:0.1.0\","
    "\"imagePullPolicy\":\"IfNotPresent\",\"gracePeriod\":\"1500ms\","
    "\"server\":{\"logLevel\":\"warn\",\"proxyTimeout\":\"0\",\"accessLog\":true},"
    "\"tls\":{\"admin\":{\"secretName\":\"admin-tls\"}},"
    "\"service\":{\"type\":\"NodePort\"}}}";

static struct json_object *parse(const char *s)
{
	struct json_object *o = json_tokener_parse(s);
	assert_non_null(o);
	return o;
}

/* Dotted path; "\\." is a literal dot in a key and "[n]" indexes an array:
 * "spec.ports[1].name", "data.server\\.yaml". */
static struct json_object *get(struct json_object *o, const char *path)
{
	const char *p = path;
	while (o && *p) {
		char key[128];
		size_t k = 0;
		for (; *p && *p != '.' && *p != '['; p++) {
			if (*p == '\\' && p[1])
				p++;
			if (k < sizeof(key) - 1)
				key[k++] = *p;
		}
		key[k] = '\0';
		if (k && !json_object_object_get_ex(o, key, &o))
			return NULL;
		while (o && *p == '[') {
			o = json_object_array_get_idx(o, (size_t)atoi(p + 1));
			p = strchr(p, ']');
			p = p ? p + 1 : "";
		}
		if (*p == '.')
			p++;
	}
	return o;
}

static const char *gets(struct json_object *o, const char *path)
{
	struct json_object *v = get(o, path);
	assert_non_null(v);
	return json_object_get_string(v);
}

static void render_ok(const char *json, struct pk_render *r)
{
	struct json_object *c = parse(json);
	char err[256] = "";
	int rc = pk_render(c, r, err, sizeof(err));
	if (rc != 0)
		fail_msg("pk_render: %s", err);
	json_object_put(c);
}

static char *golden_path(const char *name)
{
	const char *file = __FILE__;
	const char *slash = strrchr(file, '/');
	size_t dir = slash ? (size_t)(slash - file) : 1;
	char *p = malloc(dir + strlen(name) + 32);
	snprintf(p, dir + strlen(name) + 32, "%.*s/golden/render_%s.json", (int)dir,
	         slash ? file : ".", name);
	return p;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *s = malloc((size_t)n + 1);
	size_t got = fread(s, 1, (size_t)n, f);
	s[got] = '\0';
	fclose(f);
	return s;
}

static void check_golden(const char *name, const char *json)
{
	struct pk_render r;
	render_ok(json, &r);
	/* The goldens' cluster key: any text, as a user's Secret may hold. */
	pk_render_set_key(&r, "golden-cluster-key", strlen("golden-cluster-key"));
	pk_render_set_upstream_key(&r, "golden-upstream-key", strlen("golden-upstream-key"));
	struct json_object *all = json_object_new_object();
	json_object_object_add(all, "config_hash", json_object_new_string(r.config_hash));
	json_object_object_add(all, "key_secret_name", json_object_new_string(r.key_secret_name));
	json_object_object_add(all, "key_secret_key", json_object_new_string(r.key_secret_key));
	json_object_object_add(all, "key_user", json_object_new_boolean(r.key_user));
	json_object_object_add(all, "key_secret", json_object_get(r.key_secret));
	json_object_object_add(all, "configmap", json_object_get(r.configmap));
	json_object_object_add(all, "peers_svc", json_object_get(r.peers_svc));
	json_object_object_add(all, "client_svc", json_object_get(r.client_svc));
	json_object_object_add(all, "sts", json_object_get(r.sts));
	json_object_object_add(all, "pdb", json_object_get(r.pdb));
	if (r.upstream_secret) {
		json_object_object_add(all, "upstream_secret_name",
		                       json_object_new_string(r.upstream_secret_name));
		json_object_object_add(all, "upstream_secret", json_object_get(r.upstream_secret));
	}
	size_t len;
	const char *text = json_object_to_json_string_length(all, JSON_FLAGS, &len);
	char *path = golden_path(name);
	const char *update = getenv("PK_UPDATE_GOLDEN");
	if (update && strcmp(update, "1") == 0) {
		FILE *f = fopen(path, "wb");
		assert_non_null(f);
		assert_int_equal(fwrite(text, 1, len, f), len);
		fputc('\n', f);
		fclose(f);
	} else {
		char *want = read_file(path);
		if (!want)
			fail_msg("missing golden file %s (run with PK_UPDATE_GOLDEN=1)", path);
		size_t wl = strlen(want);
		int same = wl == len + 1 && memcmp(want, text, len) == 0 && want[len] == '\n';
		if (!same)
			fail_msg(
			    "%s differs from the rendering:\n%s\n(PK_UPDATE_GOLDEN=1 rewrites it)",
			    path, text);
		free(want);
	}
	free(path);
	json_object_put(all);
	pk_render_free(&r);
}

static void test_golden_minimal(void **state)
{
	(void)state;
	check_golden("minimal", minimal_json);
}

static void test_golden_full(void **state)
{
	(void)state;
	check_golden("full", full_json);
}

static void test_golden_upstream_generate(void **state)
{
	(void)state;
	check_golden("upstream_generate", gen_json);
}

static void test_golden_single(void **state)
{
	(void)state;
	check_golden("single", single_json);
}

/* Set a value at a dotted path of a parsed cluster (objects only). */
static void set(struct json_object *o, const char *path, struct json_object *v)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", path);
	char *last = strrchr(buf, '.');
	*last = '\0';
	struct json_object *parent = get(o, buf);
	assert_non_null(parent);
	json_object_object_add(parent, last + 1, v);
}

static void render_obj(struct json_object *c, struct pk_render *r)
{
	char err[256] = "";
	if (pk_render(c, r, err, sizeof(err)) != 0)
		fail_msg("pk_render: %s", err);
}

static const char *template_text(struct pk_render *r, char *buf, size_t len)
{
	snprintf(buf, len, "%s",
	         json_object_to_json_string_ext(get(r->sts, "spec.template"), JSON_FLAGS));
	return buf;
}

static void test_hash_and_template(void **state)
{
	(void)state;
	static char t1[16384], t2[16384];
	struct pk_render a, b, c;
	struct json_object *cl = parse(full_json);
	render_obj(cl, &a);

	/* A scale: same hash, same pod template, same ConfigMap. */
	set(cl, "spec.replicas", json_object_new_int(9));
	render_obj(cl, &b);
	assert_string_equal(a.config_hash, b.config_hash);
	assert_true(json_object_equal(get(a.sts, "spec.template"), get(b.sts, "spec.template")));
	assert_string_equal(template_text(&a, t1, sizeof(t1)), template_text(&b, t2, sizeof(t2)));
	assert_true(json_object_equal(a.configmap, b.configmap));
	assert_int_equal(json_object_get_int(get(b.sts, "spec.replicas")), 9);

	/* A config change: new hash, carried into the pod template. */
	set(cl, "spec.server.logLevel", json_object_new_string("error"));
	render_obj(cl, &c);
	assert_string_not_equal(a.config_hash, c.config_hash);
	assert_string_equal(
	    gets(c.sts, "spec.template.metadata.annotations.piko\\.dev/config-hash"),
	    c.config_hash);
	pk_render_free(&a);
	pk_render_free(&b);
	pk_render_free(&c);
	json_object_put(cl);
}

/* An empty spec (a client that skipped the apiserver's defaulting, or an
 * older stored object) renders exactly like the defaulted one. */
static void test_tolerant_defaults(void **state)
{
	(void)state;
	struct pk_render a, b;
	render_ok(minimal_json, &a);
	render_ok("{\"metadata\":{\"name\":\"web\",\"namespace\":\"edge\","
	          "\"uid\":\"0b7c6e8e-4a5d-4d0e-9a44-5c2b1f1d2a01\"}}",
	          &b);
	assert_true(json_object_equal(a.configmap, b.configmap));
	assert_true(json_object_equal(a.sts, b.sts));
	assert_true(json_object_equal(a.client_svc, b.client_svc));
	assert_true(json_object_equal(a.pdb, b.pdb));
	assert_string_equal(a.config_hash, b.config_hash);
	pk_render_free(&a);
	pk_render_free(&b);
}

static void expect_error(const char *path, struct json_object *v, const char *want)
{
	struct json_object *cl = parse(full_json);
	if (v)
		set(cl, path, v);
	else {
		char buf[256];
		snprintf(buf, sizeof(buf), "%s", path);
		char *last = strrchr(buf, '.');
		*last = '\0';
		json_object_object_del(get(cl, buf), last + 1);
	}
	struct pk_render r;
	char err[256] = "";
	assert_int_equal(pk_render(cl, &r, err, sizeof(err)), -1);
	if (!strstr(err, want))
		fail_msg("error \"%s\" does not contain \"%s\"", err, want);
	assert_null(r.sts);
	assert_null(r.configmap);
	pk_render_free(&r);
	json_object_put(cl);
}

static void test_errors(void **state)
{
	(void)state;
	expect_error("metadata.uid", NULL, "metadata.uid");
	expect_error("metadata.name", NULL, "metadata.name");
	expect_error("metadata.namespace", NULL, "metadata.namespace");
	char long_name[54];
	memset(long_name, 'a', 53);
	long_name[53] = '\0';
	expect_error("metadata.name", json_object_new_string(long_name), "at most 52");
	expect_error("metadata.name", json_object_new_string("has.dots"), "DNS labels");
	expect_error("spec.replicas", json_object_new_string("3"),
	             "spec.replicas: want an integer");
	expect_error("spec.replicas", json_object_new_int(-1), "out of range");
	expect_error("spec.gracePeriod", json_object_new_string("60"), "spec.gracePeriod");
	expect_error("spec.gracePeriod", json_object_new_string("0s"), "at least 1ms");
	expect_error("spec.gracePeriod", json_object_new_string("500us"), "at least 1ms");
	expect_error("spec.server.proxyTimeout", json_object_new_string("1x"),
	             "spec.server.proxyTimeout");
	expect_error("spec.server.logLevel", json_object_new_string("trace"), "logLevel");
	expect_error("spec.auth.admin", json_object_new_string(""),
	             "spec.auth.admin: want an object");
	expect_error("spec.auth.admin", parse("{\"hmacSecretRef\":{\"name\":\"s\",\"key\":\"k\"}}"),
	             "admin auth is not supported");
	expect_error("spec.auth.proxy", parse("{\"audience\":\"a\"}"), "needs a key");
	expect_error("spec.auth.proxy", parse("{\"hmacSecretRef\":{\"name\":\"s\"}}"),
	             "needs a name and a key");
	expect_error("spec.tls.admin", parse("{\"clientCASecretName\":\"ca\"}"),
	             "spec.tls.admin.secretName");
	expect_error("spec.service.annotations", parse("{\"a\":1}"), "want a string");
	expect_error("spec.auth.proxy.issuer", json_object_new_string("bad \xff utf-8"),
	             "not valid UTF-8");
}

static int64_t grace_for(const char *period)
{
	struct json_object *cl = parse(minimal_json);
	set(cl, "spec.gracePeriod", json_object_new_string(period));
	struct pk_render r;
	render_obj(cl, &r);
	int64_t v =
	    json_object_get_int64(get(r.sts, "spec.template.spec.terminationGracePeriodSeconds"));
	pk_render_free(&r);
	json_object_put(cl);
	return v;
}

static void test_grace_period(void **state)
{
	(void)state;
	assert_int_equal(grace_for("60s"), 75);
	assert_int_equal(grace_for("1m"), 75);
	assert_int_equal(grace_for("1m30.5s"), 106);
	assert_int_equal(grace_for("1500ms"), 17);
	assert_int_equal(grace_for("1000001us"), 17); /* 1.000001 s rounds up */
	assert_int_equal(grace_for("1000000001ns"), 17);
	assert_int_equal(grace_for("2\xc2\xb5s1s"), 17);
	assert_int_equal(grace_for("1h"), 3615);
	assert_int_equal(grace_for("0.5h"), 1815);
	assert_int_equal(grace_for("1ms"), 16);
}

/* Admin mTLS: the kubelet has no client certificate, so TCP probes. */
static void test_admin_mtls_probes(void **state)
{
	(void)state;
	struct json_object *cl = parse(minimal_json);
	set(cl, "spec.tls",
	    parse("{\"admin\":{\"secretName\":\"a\",\"clientCASecretName\":\"c\"}}"));
	struct pk_render r;
	render_obj(cl, &r);
	struct json_object *c = get(r.sts, "spec.template.spec.containers[0]");
	assert_string_equal(gets(c, "readinessProbe.tcpSocket.port"), "admin");
	assert_string_equal(gets(c, "livenessProbe.tcpSocket.port"), "admin");
	assert_string_equal(gets(c, "startupProbe.tcpSocket.port"), "admin");
	assert_null(get(c, "readinessProbe.httpGet"));
	pk_render_free(&r);
	json_object_put(cl);
}

/* Default requests for cpu and memory, each only where the user set neither
 * a request nor a limit; everything the user set is kept as is. */
static struct json_object *resources_for(const char *res_json, struct pk_render *r)
{
	struct json_object *cl = parse(minimal_json);
	if (res_json)
		set(cl, "spec.resources", parse(res_json));
	render_obj(cl, r);
	json_object_put(cl);
	return get(r->sts, "spec.template.spec.containers[0].resources");
}

static void test_default_resources(void **state)
{
	(void)state;
	struct pk_render r;
	struct json_object *res = resources_for(NULL, &r);
	assert_string_equal(gets(res, "requests.cpu"), "50m");
	assert_string_equal(gets(res, "requests.memory"), "32Mi");
	assert_null(get(res, "limits"));
	pk_render_free(&r);

	/* The user's request wins; the other one is defaulted. */
	res = resources_for("{\"requests\":{\"cpu\":\"1\"}}", &r);
	assert_string_equal(gets(res, "requests.cpu"), "1");
	assert_string_equal(gets(res, "requests.memory"), "32Mi");
	pk_render_free(&r);

	/* A limit alone: Kubernetes makes it the request, so no default (16Mi
	 * would be below a 32Mi default request and refused). */
	res = resources_for("{\"limits\":{\"memory\":\"16Mi\"}}", &r);
	assert_null(get(res, "requests.memory"));
	assert_string_equal(gets(res, "requests.cpu"), "50m");
	assert_string_equal(gets(res, "limits.memory"), "16Mi");
	pk_render_free(&r);

	/* Both set by the user: exactly the user's. */
	res = resources_for("{\"requests\":{\"cpu\":\"2\",\"memory\":\"1Gi\"},"
	                    "\"limits\":{\"cpu\":\"4\"}}",
	                    &r);
	struct json_object *want =
	    parse("{\"requests\":{\"cpu\":\"2\",\"memory\":\"1Gi\"},\"limits\":{\"cpu\":\"4\"}}");
	assert_true(json_object_equal(res, want));
	json_object_put(want);
	pk_render_free(&r);
}

/* PodSecurity "restricted", no token, and probes that do not fail on a
 * normal start. */
static void test_pod_security(void **state)
{
	(void)state;
	struct pk_render r;
	render_ok(minimal_json, &r);
	struct json_object *pod = get(r.sts, "spec.template.spec");
	struct json_object *c = get(pod, "containers[0]");
	assert_false(json_object_get_boolean(get(pod, "automountServiceAccountToken")));
	assert_true(json_object_get_boolean(get(pod, "securityContext.runAsNonRoot")));
	assert_int_equal(json_object_get_int(get(pod, "securityContext.runAsUser")), 65532);
	assert_int_equal(json_object_get_int(get(pod, "securityContext.runAsGroup")), 65532);
	assert_int_equal(json_object_get_int(get(pod, "securityContext.fsGroup")), 65532);
	assert_string_equal(gets(pod, "securityContext.seccompProfile.type"), "RuntimeDefault");
	assert_false(json_object_get_boolean(get(c, "securityContext.allowPrivilegeEscalation")));
	assert_string_equal(gets(c, "securityContext.capabilities.drop[0]"), "ALL");
	assert_true(json_object_get_boolean(get(c, "securityContext.readOnlyRootFilesystem")));
	assert_string_equal(gets(c, "startupProbe.httpGet.path"), "/ready");
	assert_int_equal(json_object_get_int(get(c, "startupProbe.initialDelaySeconds")), 2);
	/* 2 + 30 x 1 s: past the 10 s a node takes to be ready at worst. */
	assert_true(json_object_get_int(get(c, "startupProbe.initialDelaySeconds")) +
	                json_object_get_int(get(c, "startupProbe.failureThreshold")) *
	                    json_object_get_int(get(c, "startupProbe.periodSeconds")) >
	            10);
	pk_render_free(&r);
}

static void test_names(void **state)
{
	(void)state;
	char buf[128];
	pk_render_selector("web", buf, sizeof(buf));
	assert_string_equal(buf, "app.kubernetes.io/name=piko,app.kubernetes.io/instance=web");
	pk_render_child_name("web", "peers", buf, sizeof(buf));
	assert_string_equal(buf, "web-peers");
	pk_render_child_name("web", NULL, buf, sizeof(buf));
	assert_string_equal(buf, "web");
	pk_render_child_name("web", "config", buf, 5);
	assert_string_equal(buf, "web-");
}

/* A live object holds what we rendered plus the server's defaults: the
 * apply can be skipped. */
static void test_subset_of_live(void **state)
{
	(void)state;
	struct pk_render r;
	render_ok(full_json, &r);
	struct json_object *live = NULL;
	assert_int_equal(json_object_deep_copy(r.sts, &live, NULL), 0);
	json_object_object_add(get(live, "metadata"), "resourceVersion",
	                       json_object_new_string("42"));
	json_object_object_add(get(live, "spec"), "revisionHistoryLimit", json_object_new_int(10));
	json_object_object_add(
	    get(live, "spec.template.spec.containers[0].env[0].valueFrom.fieldRef"), "apiVersion",
	    json_object_new_string("v1"));
	assert_true(pk_json_subset(r.sts, live));
	json_object_object_add(get(live, "spec"), "replicas", json_object_new_int(4));
	assert_false(pk_json_subset(r.sts, live));
	json_object_put(live);
	pk_render_free(&r);
}

/* The rendered server.yaml, with the args the pod passes (the $(VAR) keys
 * replaced by what the kubelet would expand), goes through the server's own
 * loader, flag parser and validator. */
static void load_server(struct pk_render *r, struct pk_server_config *cfg)
{
	char err[512] = "";
	const char *yaml = gets(r->configmap, "data.server\\.yaml");
	memset(cfg, 0, sizeof(*cfg));
	assert_int_equal(pk_config_defaults(pk_server_opts, cfg, err, sizeof(err)), 0);
	if (pk_config_load_yaml_buf(pk_server_opts, cfg, yaml, strlen(yaml), 0, err, sizeof(err)) !=
	    0)
		fail_msg("server.yaml refused: %s\n%s", err, yaml);
	struct json_object *args = get(r->sts, "spec.template.spec.containers[0].args");
	size_t n = json_object_array_length(args);
	char *argv[16];
	char vals[16][256];
	assert_true(n <= 16);
	assert_string_equal(json_object_get_string(json_object_array_get_idx(args, 0)), "server");
	size_t argc = 0;
	for (size_t i = 1; i < n; i++) {
		const char *a = json_object_get_string(json_object_array_get_idx(args, i));
		if (strncmp(a, "--config.path=", 14) == 0)
			continue;
		/* "--x=$(VAR)" -> "--x=value-of-VAR" */
		const char *d = strstr(a, "=$(");
		assert_non_null(d);
		snprintf(vals[argc], sizeof(vals[argc]), "%.*s=value-of-%.*s", (int)(d - a), a,
		         (int)(strlen(d + 3) - 1), d + 3);
		argv[argc] = vals[argc];
		argc++;
	}
	size_t npos = 0;
	if (pk_config_parse_flags(pk_server_opts, cfg, (int)argc, argv, NULL, 0, &npos, NULL, NULL,
	                          err, sizeof(err)) != 0)
		fail_msg("args refused: %s", err);
	if (pk_server_config_validate(cfg, err, sizeof(err)) != 0)
		fail_msg("server.yaml invalid: %s", err);
}

static void test_server_accepts(void **state)
{
	(void)state;
	struct pk_render r;
	struct pk_server_config cfg;

	render_ok(minimal_json, &r);
	load_server(&r, &cfg);
	assert_string_equal(cfg.log.level, "info");
	assert_string_equal(cfg.proxy.bind_addr, "0.0.0.0:8000");
	assert_string_equal(cfg.upstream.bind_addr, "0.0.0.0:8001");
	/* The cluster forms through the headless Service's DNS name. */
	assert_string_equal(cfg.cluster.bind_addr, "0.0.0.0:8003");
	assert_int_equal(cfg.cluster.join.n, 1);
	assert_string_equal(cfg.cluster.join.v[0], "web-peers.edge.svc:8003");
	assert_non_null(cfg.cluster.node_id_prefix);
	assert_string_equal(cfg.admin.bind_addr, "0.0.0.0:8002");
	assert_int_equal(cfg.proxy.timeout_ms, 30000);
	assert_int_equal(cfg.grace_period_ms, 60000);
	assert_int_equal(cfg.proxy.access_log.disable, 0);
	assert_null(cfg.proxy.tls.cert);
	assert_null(cfg.proxy.auth.hmac_secret_key);
	pk_config_free(pk_server_opts, &cfg);
	pk_render_free(&r);

	render_ok(full_json, &r);
	load_server(&r, &cfg);
	assert_string_equal(cfg.log.level, "debug");
	assert_int_equal(cfg.proxy.timeout_ms, 45000);
	assert_int_equal(cfg.grace_period_ms, 90500);
	assert_int_equal(cfg.proxy.access_log.disable, 1);
	assert_string_equal(cfg.proxy.tls.cert, "/etc/piko/tls/proxy/tls.crt");
	assert_string_equal(cfg.proxy.tls.key, "/etc/piko/tls/proxy/tls.key");
	assert_string_equal(cfg.proxy.tls.client_cas, "/etc/piko/tls/proxy-ca/ca.crt");
	assert_string_equal(cfg.upstream.tls.cert, "/etc/piko/tls/upstream/tls.crt");
	assert_null(cfg.upstream.tls.client_cas);
	assert_null(cfg.admin.tls.cert);
	/* The escaped YAML decodes back to the spec's exact text. */
	assert_string_equal(cfg.proxy.auth.audience, "piko \"proxy\" caf\xc3\xa9");
	assert_string_equal(cfg.proxy.auth.issuer, "https://issuer.example.com/");
	assert_string_equal(cfg.proxy.auth.hmac_secret_key,
	                    "value-of-PIKO_PROXY_AUTH_HMAC_SECRET_KEY");
	assert_string_equal(cfg.upstream.auth.audience, "piko-upstream");
	assert_string_equal(cfg.upstream.auth.rsa_public_key,
	                    "value-of-PIKO_UPSTREAM_AUTH_RSA_PUBLIC_KEY");
	assert_string_equal(cfg.upstream.auth.hmac_secret_key,
	                    "value-of-PIKO_UPSTREAM_AUTH_HMAC_SECRET_KEY");
	assert_null(cfg.upstream.auth.issuer);
	pk_config_free(pk_server_opts, &cfg);
	pk_render_free(&r);

	render_ok(single_json, &r);
	load_server(&r, &cfg);
	assert_string_equal(cfg.log.level, "warn");
	assert_int_equal(cfg.proxy.timeout_ms, 0);
	assert_int_equal(cfg.grace_period_ms, 1500);
	assert_string_equal(cfg.admin.tls.cert, "/etc/piko/tls/admin/tls.crt");
	pk_config_free(pk_server_opts, &cfg);
	pk_render_free(&r);
}

/* Every env var an arg names is defined, from the Secret the spec names. */
/* The cluster key: NAME-cluster-key (or the user's Secret) mounted as one
 * file the pod's group reads, named in server.yaml, its hash on the pod
 * template; the generated Secret is created with it, owned and labelled. */
static void test_cluster_key(void **state)
{
	(void)state;
	struct pk_render r;
	struct pk_server_config cfg;
	render_ok(minimal_json, &r);
	assert_false(r.key_user);
	assert_string_equal(r.key_secret_name, "web-cluster-key");
	assert_string_equal(r.key_secret_key, "key");
	struct json_object *pod = get(r.sts, "spec.template.spec");
	assert_string_equal(gets(pod, "volumes[1].name"), "cluster-key");
	assert_string_equal(gets(pod, "volumes[1].secret.secretName"), "web-cluster-key");
	assert_string_equal(gets(pod, "volumes[1].secret.items[0].key"), "key");
	assert_string_equal(gets(pod, "volumes[1].secret.items[0].path"), "key");
	/* Owner root, group the fsGroup (65532, the server's gid): 0440. */
	assert_int_equal(json_object_get_int(get(pod, "volumes[1].secret.defaultMode")), 0440);
	assert_int_equal(json_object_get_int(get(pod, "securityContext.fsGroup")), 65532);
	assert_string_equal(gets(pod, "containers[0].volumeMounts[1].name"), "cluster-key");
	assert_string_equal(gets(pod, "containers[0].volumeMounts[1].mountPath"),
	                    "/etc/piko/cluster-key");
	assert_true(json_object_get_boolean(get(pod, "containers[0].volumeMounts[1].readOnly")));
	assert_null(get(pod, "containers[0].volumeMounts[1].subPath"));
	load_server(&r, &cfg);
	assert_string_equal(cfg.cluster.auth.key_file, "/etc/piko/cluster-key/key");
	assert_null(cfg.cluster.auth.key);
	pk_config_free(pk_server_opts, &cfg);

	/* Before the key is known: no hash, a Secret without data. */
	assert_null(get(r.sts, "spec.template.metadata.annotations.piko\\.dev/cluster-key-hash"));
	assert_null(get(r.key_secret, "data"));
	assert_string_equal(gets(r.key_secret, "kind"), "Secret");
	assert_string_equal(gets(r.key_secret, "metadata.name"), "web-cluster-key");
	assert_string_equal(gets(r.key_secret, "metadata.namespace"), "edge");
	assert_string_equal(gets(r.key_secret, "metadata.labels.app\\.kubernetes\\.io/managed-by"),
	                    "piko-controller");
	assert_string_equal(gets(r.key_secret, "metadata.ownerReferences[0].uid"),
	                    "0b7c6e8e-4a5d-4d0e-9a44-5c2b1f1d2a01");
	assert_true(
	    json_object_get_boolean(get(r.key_secret, "metadata.ownerReferences[0].controller")));
	assert_true(json_object_get_boolean(get(r.key_secret, "immutable")));

	char key[PK_CLUSTER_KEY_HEX + 1], hash[PK_CLUSTER_KEY_HASH_HEX + 1];
	assert_int_equal(pk_cluster_key_generate(key), 0);
	pk_render_set_key(&r, key, strlen(key));
	pk_cluster_key_hash(key, strlen(key), hash);
	assert_string_equal(
	    gets(r.sts, "spec.template.metadata.annotations.piko\\.dev/cluster-key-hash"), hash);
	size_t n;
	char *back = pk_base64_decode(gets(r.key_secret, "data.key"), &n);
	assert_non_null(back);
	assert_int_equal(n, PK_CLUSTER_KEY_HEX);
	assert_memory_equal(back, key, n);
	free(back);
	/* The key never reaches the ConfigMap or the StatefulSet. */
	const char *sts_text = json_object_to_json_string(r.sts);
	assert_null(strstr(sts_text, key));
	assert_null(strstr(gets(r.configmap, "data.server\\.yaml"), key));

	/* Another key, another pod template (the pods roll); the same key,
	 * the same template. */
	struct pk_render b, c;
	render_ok(minimal_json, &b);
	render_ok(minimal_json, &c);
	pk_render_set_key(&b, "another", 7);
	pk_render_set_key(&c, key, strlen(key));
	assert_false(json_object_equal(get(r.sts, "spec.template"), get(b.sts, "spec.template")));
	assert_true(json_object_equal(get(r.sts, "spec.template"), get(c.sts, "spec.template")));
	pk_render_free(&b);
	pk_render_free(&c);
	pk_render_free(&r);

	/* The user's Secret: mounted under the same file name, never created. */
	render_ok(full_json, &r);
	assert_true(r.key_user);
	assert_null(r.key_secret);
	assert_string_equal(r.key_secret_name, "tunnels-key");
	assert_string_equal(r.key_secret_key, "cluster.key");
	pod = get(r.sts, "spec.template.spec");
	struct json_object *vols = get(pod, "volumes");
	struct json_object *kv = NULL;
	for (size_t i = 0; i < json_object_array_length(vols); i++)
		if (!strcmp(gets(json_object_array_get_idx(vols, i), "name"), "cluster-key"))
			kv = json_object_array_get_idx(vols, i);
	assert_non_null(kv);
	assert_string_equal(gets(kv, "secret.secretName"), "tunnels-key");
	assert_string_equal(gets(kv, "secret.items[0].key"), "cluster.key");
	assert_string_equal(gets(kv, "secret.items[0].path"), "key");
	pk_render_set_key(&r, "k", 1); /* no Secret to fill: only the hash */
	assert_null(r.key_secret);
	pk_render_free(&r);
}

/* The hash, the key a node loads, base64 both ways. */
static void test_key_helpers(void **state)
{
	(void)state;
	char h[PK_CLUSTER_KEY_HASH_HEX + 1];
	/* hashlib.sha256(b"piko-cluster-key:abc").hexdigest()[:16] */
	pk_cluster_key_hash("abc", 3, h);
	assert_int_equal(strlen(h), PK_CLUSTER_KEY_HASH_HEX);
	assert_string_equal(h, "a5af5edadfea2389");
	const char *why;
	assert_int_equal(pk_cluster_key_trim("key\r\n\n", 6, &why), 3);
	assert_null(why);
	assert_int_equal(pk_cluster_key_trim("\n", 1, &why), 0);
	assert_string_equal(why, "is empty");
	assert_int_equal(pk_cluster_key_trim("x", PK_CLUSTER_KEY_MAX + 1, &why), 0);
	assert_string_equal(why, "is larger than 64 KiB");
	/* The same key the data plane loads from such a file. */
	char path[] = "/tmp/pk-render-key-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "key\r\n\n", 6), 6);
	close(fd);
	char *k = NULL, err[256];
	size_t kl = 0;
	assert_int_equal(pk_cluster_key_load(NULL, path, &k, &kl, err, sizeof(err)), 0);
	assert_int_equal(kl, 3);
	assert_memory_equal(k, "key", 3);
	free(k);
	unlink(path);

	static const struct {
		const char *raw, *b64;
		size_t len;
	} cases[] = {{"", "", 0},        {"f", "Zg==", 1},        {"fo", "Zm8=", 2},
	             {"foo", "Zm9v", 3}, {"foob", "Zm9vYg==", 4}, {"k\0\xff", "awD/", 3}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *e = pk_base64_encode(cases[i].raw, cases[i].len);
		assert_string_equal(e, cases[i].b64);
		free(e);
		size_t n;
		char *d = pk_base64_decode(cases[i].b64, &n);
		assert_non_null(d);
		assert_int_equal(n, cases[i].len);
		assert_memory_equal(d, cases[i].raw, n ? n : 1);
		free(d);
	}
	size_t n;
	assert_null(pk_base64_decode("Zm9", &n));
	assert_null(pk_base64_decode("Zm9v\n", &n));
	assert_null(pk_base64_decode("Z=9v", &n));
	assert_null(pk_base64_decode("Zm 9", &n));
}

/* spec.auth.upstream.generate renders exactly as hmacSecretRef naming
 * NAME-upstream-key's "key": the same server.yaml, env, args and volumes;
 * only the Secret to create and, once the key is known, its hash on the pod
 * template differ. */
static void test_upstream_generate(void **state)
{
	(void)state;
	struct pk_render g, h;
	render_ok(gen_json, &g);
	render_ok(gen_as_ref_json, &h);
	assert_string_equal(g.upstream_secret_name, "web-upstream-key");
	assert_null(h.upstream_secret);
	assert_string_equal(h.upstream_secret_name, "");
	assert_string_equal(g.config_hash, h.config_hash);
	assert_true(json_object_equal(g.configmap, h.configmap));
	assert_true(json_object_equal(g.sts, h.sts));
	struct json_object *c = get(g.sts, "spec.template.spec.containers[0]");
	assert_string_equal(gets(c, "env[2].name"), "PIKO_UPSTREAM_AUTH_HMAC_SECRET_KEY");
	assert_string_equal(gets(c, "env[2].valueFrom.secretKeyRef.name"), "web-upstream-key");
	assert_string_equal(gets(c, "env[2].valueFrom.secretKeyRef.key"), "key");
	assert_string_equal(
	    gets(c, "args[4]"),
	    "--upstream.auth.hmac-secret-key=$(PIKO_UPSTREAM_AUTH_HMAC_SECRET_KEY)");
	/* The Secret: owned, labelled, immutable, no data until the key. */
	struct json_object *sec = g.upstream_secret;
	assert_string_equal(gets(sec, "kind"), "Secret");
	assert_string_equal(gets(sec, "metadata.name"), "web-upstream-key");
	assert_string_equal(gets(sec, "metadata.namespace"), "edge");
	assert_string_equal(gets(sec, "metadata.labels.app\\.kubernetes\\.io/managed-by"),
	                    "piko-controller");
	assert_string_equal(gets(sec, "metadata.ownerReferences[0].uid"),
	                    "0b7c6e8e-4a5d-4d0e-9a44-5c2b1f1d2a01");
	assert_true(json_object_get_boolean(get(sec, "immutable")));
	assert_null(get(sec, "data"));
	char key[PK_CLUSTER_KEY_HEX + 1], hash[PK_CLUSTER_KEY_HASH_HEX + 1];
	assert_int_equal(pk_cluster_key_generate(key), 0);
	pk_render_set_upstream_key(&g, key, strlen(key));
	pk_render_set_upstream_key(&h, key, strlen(key)); /* no Secret: nothing */
	pk_cluster_key_hash(key, strlen(key), hash);
	assert_string_equal(
	    gets(g.sts, "spec.template.metadata.annotations.piko\\.dev/upstream-key-hash"), hash);
	assert_null(get(h.sts, "spec.template.metadata.annotations.piko\\.dev/upstream-key-hash"));
	size_t n;
	char *back = pk_base64_decode(gets(sec, "data.key"), &n);
	assert_non_null(back);
	assert_int_equal(n, PK_CLUSTER_KEY_HEX);
	assert_memory_equal(back, key, n);
	free(back);
	assert_null(strstr(json_object_to_json_string(g.sts), key));
	/* The server takes it: the env var is the upstream HMAC secret. */
	struct pk_server_config cfg;
	load_server(&g, &cfg);
	assert_string_equal(cfg.upstream.auth.audience, "agents");
	pk_config_free(pk_server_opts, &cfg);
	pk_render_free(&g);
	pk_render_free(&h);

	/* Refused beside a key of the user's (the CRD refuses it too). */
	struct json_object *both = parse(
	    GEN_HEAD "\"generate\":true,\"hmacSecretRef\":{\"name\":\"s\",\"key\":\"k\"}}}}}");
	char err[256] = "";
	assert_int_equal(pk_render(both, &g, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "spec.auth.upstream: generate: true"));
	json_object_put(both);
	/* generate: false and no key: an open port the user meant closed. */
	struct json_object *none = parse(GEN_HEAD "\"generate\":false}}}}");
	assert_int_equal(pk_render(none, &g, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "needs a key"));
	json_object_put(none);
}

static void test_auth_env(void **state)
{
	(void)state;
	struct pk_render r;
	render_ok(full_json, &r);
	struct json_object *c = get(r.sts, "spec.template.spec.containers[0]");
	struct json_object *env = get(c, "env");
	assert_int_equal(json_object_array_length(env), 5);
	assert_string_equal(gets(env, "[2].name"), "PIKO_PROXY_AUTH_HMAC_SECRET_KEY");
	assert_string_equal(gets(env, "[2].valueFrom.secretKeyRef.name"), "piko-auth");
	assert_string_equal(gets(env, "[2].valueFrom.secretKeyRef.key"), "hmac");
	assert_string_equal(gets(env, "[3].name"), "PIKO_UPSTREAM_AUTH_HMAC_SECRET_KEY");
	assert_string_equal(gets(env, "[4].name"), "PIKO_UPSTREAM_AUTH_RSA_PUBLIC_KEY");
	assert_string_equal(gets(env, "[4].valueFrom.secretKeyRef.key"), "rsa.pub");
	assert_string_equal(gets(c, "args[2]"), "--cluster.node-id-prefix=$(POD_NAME)-");
	assert_string_equal(gets(c, "args[3]"), "--cluster.advertise-addr=$(POD_IP)");
	assert_string_equal(gets(c, "args[4]"),
	                    "--proxy.auth.hmac-secret-key=$(PIKO_PROXY_AUTH_HMAC_SECRET_KEY)");
	/* No key material in the ConfigMap, ever. */
	assert_null(strstr(gets(r.configmap, "data.server\\.yaml"), "secret_key"));
	assert_null(strstr(gets(r.configmap, "data.server\\.yaml"), "public_key"));
	pk_render_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_golden_minimal),
	    cmocka_unit_test(test_golden_full),
	    cmocka_unit_test(test_golden_single),
	    cmocka_unit_test(test_golden_upstream_generate),
	    cmocka_unit_test(test_upstream_generate),
	    cmocka_unit_test(test_hash_and_template),
	    cmocka_unit_test(test_tolerant_defaults),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_grace_period),
	    cmocka_unit_test(test_admin_mtls_probes),
	    cmocka_unit_test(test_default_resources),
	    cmocka_unit_test(test_pod_security),
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_subset_of_live),
	    cmocka_unit_test(test_server_accepts),
	    cmocka_unit_test(test_auth_env),
	    cmocka_unit_test(test_cluster_key),
	    cmocka_unit_test(test_key_helpers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
