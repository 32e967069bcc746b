/*
 * What the informers' caches keep (controller/cache_strip.c): managedFields
 * and kubectl's last-applied copy gone, EndpointSlices reduced to what the
 * readers use, the compact form round-tripping, and above all that nothing a
 * reader compares is dropped: every rendered child (the render goldens) is
 * still a subset of its stripped, packed and unpacked live copy, so an
 * unchanged PikoCluster still causes no write; and the status computed from
 * stripped slices equals the status from whole ones.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "cache_strip.h"
#include "jsonutil.h"
#include "status.h"

static struct json_object *parse(const char *s)
{
	struct json_object *o = json_tokener_parse(s);
	if (!o)
		fail_msg("bad JSON in test: %s", s);
	return o;
}

static struct json_object *at(struct json_object *o, const char *a, const char *b)
{
	struct json_object *v = pk_json_field(o, a);
	return b ? pk_json_field(v, b) : v;
}

static const char *str(struct json_object *o)
{
	return json_object_get_string(o);
}

/* strip, pack, unpack: what pk_informer_get hands a reader of kind. */
static struct json_object *through_cache(const char *kind, struct json_object *obj)
{
	struct json_object *kept = pk_cache_strip(kind, obj);
	if (!kept || pk_cache_form_for(kind) == PK_CACHE_TREE)
		return kept;
	struct json_object *packed = pk_cache_pack(kept);
	json_object_put(kept);
	assert_true(json_object_is_type(packed, json_type_string));
	struct json_object *back = pk_cache_unpack(packed);
	json_object_put(packed);
	assert_non_null(back);
	return back;
}

static const char *const managed =
    "[{\"manager\":\"piko-controller\",\"operation\":\"Apply\",\"apiVersion\":\"apps/v1\","
    "\"time\":\"2026-01-01T00:00:00Z\",\"fieldsType\":\"FieldsV1\",\"fieldsV1\":{\"f:spec\":"
    "{\"f:replicas\":{}}}},{\"manager\":\"kube-controller-manager\",\"operation\":\"Update\","
    "\"subresource\":\"status\",\"fieldsType\":\"FieldsV1\",\"fieldsV1\":{\"f:status\":{}}}]";

static void test_common(void **state)
{
	(void)state;
	struct json_object *o =
	    parse("{\"apiVersion\":\"piko.dev/v1alpha1\",\"kind\":\"PikoCluster\","
	          "\"metadata\":{\"name\":\"a\",\"namespace\":\"n\",\"uid\":\"u\","
	          "\"resourceVersion\":\"7\",\"generation\":3,"
	          "\"annotations\":{\"kubectl.kubernetes.io/"
	          "last-applied-configuration\":\"{...}\",\"team\":\"edge\"}},"
	          "\"spec\":{\"replicas\":3},\"status\":{\"replicas\":1}}");
	json_object_object_add(pk_json_field(o, "metadata"), "managedFields", parse(managed));
	struct json_object *c = through_cache("PikoCluster", o);
	assert_null(at(c, "metadata", "managedFields"));
	assert_null(pk_json_field(at(c, "metadata", "annotations"),
	                          "kubectl.kubernetes.io/last-applied-configuration"));
	assert_string_equal(str(pk_json_field(at(c, "metadata", "annotations"), "team")), "edge");
	/* Everything else as it came. */
	assert_string_equal(str(at(c, "metadata", "uid")), "u");
	assert_string_equal(str(at(c, "metadata", "resourceVersion")), "7");
	assert_int_equal(json_object_get_int(at(c, "metadata", "generation")), 3);
	assert_int_equal(json_object_get_int(at(c, "spec", "replicas")), 3);
	assert_int_equal(json_object_get_int(at(c, "status", "replicas")), 1);
	json_object_put(c);
	json_object_put(o);

	/* An emptied annotations object stays ({} rendered must still be a
	 * subset); a Service keeps the annotation (its annotations are the
	 * user's, compared with what spec.service.annotations renders). */
	o = parse("{\"kind\":\"StatefulSet\",\"metadata\":{\"name\":\"a\",\"annotations\":{"
	          "\"kubectl.kubernetes.io/last-applied-configuration\":\"x\"}}}");
	c = through_cache("StatefulSet", o);
	assert_true(json_object_is_type(at(c, "metadata", "annotations"), json_type_object));
	assert_int_equal(json_object_object_length(at(c, "metadata", "annotations")), 0);
	json_object_put(c);
	json_object_put(o);
	o = parse("{\"kind\":\"Service\",\"metadata\":{\"name\":\"a\",\"annotations\":{"
	          "\"kubectl.kubernetes.io/last-applied-configuration\":\"x\"}},"
	          "\"status\":{\"loadBalancer\":{}}}");
	c = through_cache("Service", o);
	assert_string_equal(str(pk_json_field(at(c, "metadata", "annotations"),
	                                      "kubectl.kubernetes.io/last-applied-configuration")),
	                    "x");
	assert_null(pk_json_field(c, "status")); /* no reader */
	json_object_put(c);
	json_object_put(o);

	/* A StatefulSet keeps its status: reconcile.c and status.c read it. */
	o = parse("{\"kind\":\"StatefulSet\",\"metadata\":{\"name\":\"a\"},"
	          "\"status\":{\"readyReplicas\":2}}");
	c = through_cache("StatefulSet", o);
	assert_int_equal(json_object_get_int(at(c, "status", "readyReplicas")), 2);
	json_object_put(c);
	json_object_put(o);

	assert_null(pk_cache_strip("ConfigMap", NULL));
	o = parse("[1]");
	assert_null(pk_cache_strip("ConfigMap", o));
	json_object_put(o);
	assert_int_equal(pk_cache_form_for("EndpointSlice"), PK_CACHE_TREE);
	assert_int_equal(pk_cache_form_for("StatefulSet"), PK_CACHE_COMPACT);
	assert_int_equal(pk_cache_form_for("PikoCluster"), PK_CACHE_TREE);
	assert_int_equal(pk_cache_form_for("ConfigMap"), PK_CACHE_COMPACT);
}

static void test_pack_round_trip(void **state)
{
	(void)state;
	const char *texts[] = {
	    "{\"i\":9223372036854775807,\"u\":18446744073709551615,\"n\":-1,\"d\":0.5,"
	    "\"e\":1e-7,\"s\":\"caf\\u00e9 \\\"q\\\" /a\\n\\u0001\",\"b\":true,\"z\":null,"
	    "\"a\":[],\"o\":{},\"q\":\"500m\"}",
	    "{\"data\":{\"server.yaml\":\"log:\\n  level: \\\"info\\\"\\n\"}}",
	};
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct json_object *o = parse(texts[i]);
		struct json_object *p = pk_cache_pack(o);
		struct json_object *b = pk_cache_unpack(p);
		assert_non_null(b);
		assert_true(pk_json_equal(o, b));
		assert_true(pk_json_subset(o, b));
		json_object_put(b);
		json_object_put(p);
		json_object_put(o);
	}
	/* Not a packed object: NULL, not a crash. */
	struct json_object *bad = json_object_new_string("{\"a\":");
	assert_null(pk_cache_unpack(bad));
	json_object_put(bad);
	bad = json_object_new_string("{} trailing");
	assert_null(pk_cache_unpack(bad));
	json_object_put(bad);
	bad = json_object_new_int(1);
	assert_null(pk_cache_unpack(bad));
	json_object_put(bad);
	assert_null(pk_cache_unpack(NULL));
}

static char *read_golden(const char *name)
{
	const char *file = __FILE__;
	const char *slash = strrchr(file, '/');
	char path[4096];
	snprintf(path, sizeof(path), "%.*s/golden/render_%s.json", slash ? (int)(slash - file) : 1,
	         slash ? file : ".", name);
	FILE *f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open %s", path);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *s = malloc((size_t)n + 1);
	size_t got = fread(s, 1, (size_t)n, f);
	s[got] = '\0';
	fclose(f);
	return s;
}

/* A live copy of a rendered child as the apiserver would hold it: every
 * rendered field, plus server-side metadata, managedFields, a defaulted
 * field, a status, and (not on a Service) kubectl's last-applied copy. */
static struct json_object *live_of(struct json_object *desired, const char *kind)
{
	struct json_object *live = NULL;
	assert_int_equal(json_object_deep_copy(desired, &live, NULL), 0);
	struct json_object *meta = pk_json_field(live, "metadata");
	json_object_object_add(meta, "uid", json_object_new_string("live-uid"));
	json_object_object_add(meta, "resourceVersion", json_object_new_string("12345"));
	json_object_object_add(meta, "creationTimestamp",
	                       json_object_new_string("2026-01-01T00:00:00Z"));
	json_object_object_add(meta, "managedFields", parse(managed));
	if (strcmp(kind, "Service") != 0) {
		struct json_object *ann = pk_json_field(meta, "annotations");
		if (!ann) {
			ann = json_object_new_object();
			json_object_object_add(meta, "annotations", ann);
		}
		json_object_object_add(ann, "kubectl.kubernetes.io/last-applied-configuration",
		                       json_object_new_string("{\"big\":\"copy\"}"));
	}
	json_object_object_add(live, "status", parse("{\"observedGeneration\":1}"));
	struct json_object *spec = pk_json_field(live, "spec");
	if (spec)
		json_object_object_add(spec, "revisionHistoryLimit", json_object_new_int(10));
	return live;
}

/* The no-write-when-nothing-changed rule survives the cache: each rendered
 * child is a subset of its live copy as the cache hands it back, and what the
 * cache dropped is only what render.c never emits. */
static void check_children(const char *golden)
{
	char *text = read_golden(golden);
	struct json_object *all = parse(text);
	free(text);
	static const struct {
		const char *field, *kind;
	} ch[] = {{"configmap", "ConfigMap"},
	          {"peers_svc", "Service"},
	          {"client_svc", "Service"},
	          {"sts", "StatefulSet"},
	          {"pdb", "PodDisruptionBudget"}};
	int checked = 0;
	for (size_t i = 0; i < sizeof(ch) / sizeof(ch[0]); i++) {
		struct json_object *desired = pk_json_field(all, ch[i].field);
		if (!desired)
			continue; /* no PDB for one replica */
		struct json_object *live = live_of(desired, ch[i].kind);
		assert_true(pk_json_subset(desired, live));
		struct json_object *cached = through_cache(ch[i].kind, live);
		if (!pk_json_subset(desired, cached))
			fail_msg("%s %s: a rendered field is missing from the cached copy: %s",
			         golden, ch[i].field,
			         json_object_to_json_string_ext(cached, JSON_C_TO_STRING_PLAIN));
		assert_null(at(cached, "metadata", "managedFields"));
		/* And a changed field is still seen as one. */
		struct json_object *meta = pk_json_field(live, "metadata");
		json_object_object_add(pk_json_field(meta, "labels"), "app.kubernetes.io/instance",
		                       json_object_new_string("other"));
		struct json_object *changed = through_cache(ch[i].kind, live);
		assert_false(pk_json_subset(desired, changed));
		json_object_put(changed);
		json_object_put(cached);
		json_object_put(live);
		checked++;
	}
	assert_true(checked >= 4);
	json_object_put(all);
}

static void test_rendered_children_survive(void **state)
{
	(void)state;
	check_children("minimal");
	check_children("full");
	check_children("single");
}

static const char *const slice_json =
    "{\"kind\":\"EndpointSlice\",\"apiVersion\":\"discovery.k8s.io/v1\","
    "\"metadata\":{\"name\":\"web-peers-abcde\",\"namespace\":\"team-a\",\"uid\":\"x\","
    "\"resourceVersion\":\"42\",\"generation\":5,\"generateName\":\"web-peers-\","
    "\"labels\":{\"kubernetes.io/service-name\":\"web-peers\","
    "\"endpointslice.kubernetes.io/managed-by\":\"endpointslice-controller.k8s.io\","
    "\"app.kubernetes.io/instance\":\"web\"},"
    "\"annotations\":{\"endpoints.kubernetes.io/last-change-trigger-time\":\"t\"},"
    "\"ownerReferences\":[{\"kind\":\"Service\",\"name\":\"web-peers\",\"uid\":\"s\"}]},"
    "\"addressType\":\"IPv4\","
    "\"endpoints\":["
    "{\"addresses\":[\"10.0.0.2\"],\"conditions\":{\"ready\":true,\"serving\":true,"
    "\"terminating\":false},\"hostname\":\"web-0\",\"nodeName\":\"n1\",\"zone\":\"z\","
    "\"targetRef\":{\"kind\":\"Pod\",\"namespace\":\"team-a\",\"name\":\"web-0\",\"uid\":\"p0\"}},"
    "{\"addresses\":[\"10.0.0.3\"],\"conditions\":{\"ready\":false,\"serving\":false,"
    "\"terminating\":true},\"targetRef\":{\"kind\":\"Pod\",\"name\":\"web-1\"}},"
    "{\"addresses\":[\"10.0.0.4\"],\"conditions\":{\"ready\":null},"
    "\"targetRef\":{\"kind\":\"Pod\",\"name\":\"web-2\"}},"
    "{\"addresses\":[\"10.0.0.5\"]}],"
    "\"ports\":[{\"name\":\"cluster\",\"port\":8003,\"protocol\":\"TCP\",\"appProtocol\":\"x\"},"
    "{\"name\":\"admin\",\"port\":8002,\"protocol\":\"TCP\"}]}";

static void test_slices(void **state)
{
	(void)state;
	struct json_object *full = parse(slice_json);
	/* Its managedFields are gone with the rest that nobody reads. */
	json_object_object_add(pk_json_field(full, "metadata"), "managedFields", parse(managed));
	struct json_object *s = through_cache("EndpointSlice", full);
	assert_non_null(s);
	assert_string_equal(str(at(s, "metadata", "name")), "web-peers-abcde");
	assert_string_equal(str(at(s, "metadata", "namespace")), "team-a");
	assert_string_equal(str(at(s, "metadata", "resourceVersion")), "42");
	assert_string_equal(
	    str(pk_json_field(at(s, "metadata", "labels"), "kubernetes.io/service-name")),
	    "web-peers");
	assert_int_equal(json_object_object_length(at(s, "metadata", "labels")), 1);
	assert_null(at(s, "metadata", "managedFields"));
	assert_null(at(s, "metadata", "ownerReferences"));
	assert_null(at(s, "metadata", "annotations"));
	assert_string_equal(str(pk_json_field(s, "addressType")), "IPv4");
	struct json_object *eps = pk_json_field(s, "endpoints");
	assert_int_equal(json_object_array_length(eps), 4);
	struct json_object *e0 = json_object_array_get_idx(eps, 0);
	assert_null(pk_json_field(e0, "nodeName"));
	assert_null(pk_json_field(e0, "hostname"));
	assert_string_equal(str(at(e0, "targetRef", "name")), "web-0");
	assert_null(at(e0, "targetRef", "uid"));
	assert_string_equal(str(json_object_array_get_idx(pk_json_field(e0, "addresses"), 0)),
	                    "10.0.0.2");
	struct json_object *pt = json_object_array_get_idx(pk_json_field(s, "ports"), 0);
	assert_string_equal(str(pk_json_field(pt, "name")), "cluster");
	assert_int_equal(json_object_get_int(pk_json_field(pt, "port")), 8003);
	assert_null(pk_json_field(pt, "appProtocol"));

	/* The status built from the stripped slice is the status built from
	 * the whole one (members: pods, addresses, readiness, terminating
	 * ones left out, ready unknown read as ready). */
	struct json_object *cluster =
	    parse("{\"apiVersion\":\"piko.dev/v1alpha1\",\"kind\":\"PikoCluster\",\"metadata\":{"
	          "\"name\":\"web\",\"namespace\":\"team-a\",\"uid\":\"u\",\"generation\":1},"
	          "\"spec\":{\"replicas\":3}}");
	struct json_object *sts = parse("{\"metadata\":{\"generation\":1},\"status\":{"
	                                "\"observedGeneration\":1,\"replicas\":3,"
	                                "\"readyReplicas\":2}}");
	struct json_object *whole = parse(slice_json);
	const char *now = "2026-11-29T23:00:00Z";
	struct json_object *a =
	    pk_status_compute(cluster, sts, &whole, 1, NULL, NULL, NULL, NULL, now);
	struct json_object *b = pk_status_compute(cluster, sts, &s, 1, NULL, NULL, NULL, NULL, now);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(json_object_array_length(at(a, "status", "members")), 3);
	assert_true(pk_json_equal(a, b));
	json_object_put(a);
	json_object_put(b);
	json_object_put(whole);
	json_object_put(sts);
	json_object_put(cluster);
	json_object_put(s);
	json_object_put(full);

	/* A slice of any other Service (the client Service's), or with no
	 * service-name label, is not cached at all. */
	const char *others[] = {
	    "{\"metadata\":{\"name\":\"web-x\",\"labels\":{\"kubernetes.io/"
	    "service-name\":\"web\"}}}",
	    "{\"metadata\":{\"name\":\"p\",\"labels\":{\"kubernetes.io/"
	    "service-name\":\"-peers\"}}}",
	    "{\"metadata\":{\"name\":\"web-x\"}}",
	    "{\"metadata\":{\"name\":\"web-x\",\"labels\":{\"kubernetes.io/service-name\":7}}}",
	};
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		struct json_object *o = parse(others[i]);
		assert_null(pk_cache_strip("EndpointSlice", o));
		json_object_put(o);
	}
	/* endpoints null (no pods: Go's nil slice) stays null. */
	struct json_object *o = parse("{\"metadata\":{\"name\":\"w\",\"labels\":{"
	                              "\"kubernetes.io/service-name\":\"w-peers\"}},"
	                              "\"endpoints\":null,\"ports\":null}");
	s = pk_cache_strip("EndpointSlice", o);
	assert_non_null(s);
	struct json_object *v = o; /* not NULL: get_ex must set it */
	assert_true(json_object_object_get_ex(s, "endpoints", &v));
	assert_null(v);
	json_object_put(s);
	json_object_put(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_common),
	    cmocka_unit_test(test_pack_round_trip),
	    cmocka_unit_test(test_rendered_children_survive),
	    cmocka_unit_test(test_slices),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
