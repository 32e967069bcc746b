/*
 * PikoCluster status (controller/status.c): the strict Ready rule, counts,
 * condition transitions, Degraded, members from EndpointSlices, and the
 * "already equal" check that keeps status writes (and watch events) away
 * when nothing changed; ClusterFormed and the members' links from what the
 * nodes' /status/cluster/nodes say.
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

#include "status.h"

#define T0 "2026-11-29T23:00:00Z"
#define T1 "2026-11-29T23:05:00Z"
#define T2 "2026-11-29T23:10:00Z"

static struct json_object *parse(const char *s)
{
	struct json_object *o = json_tokener_parse(s);
	assert_non_null(o);
	return o;
}

static struct json_object *cluster(void)
{
	return parse("{\"apiVersion\":\"piko.dev/v1alpha1\",\"kind\":\"PikoCluster\","
	             "\"metadata\":{\"name\":\"web\",\"namespace\":\"edge\",\"uid\":\"u1\","
	             "\"generation\":4},\"spec\":{\"replicas\":3}}");
}

/* A StatefulSet whose rollout is finished: every condition of Ready holds. */
static struct json_object *sts_ready(void)
{
	return parse("{\"metadata\":{\"name\":\"web\",\"namespace\":\"edge\",\"generation\":6},"
	             "\"spec\":{\"replicas\":3},"
	             "\"status\":{\"observedGeneration\":6,\"replicas\":3,\"readyReplicas\":3,"
	             "\"updatedReplicas\":3,\"currentRevision\":\"web-7c9d\","
	             "\"updateRevision\":\"web-7c9d\"}}");
}

static struct json_object *cond(struct json_object *st, const char *type)
{
	struct json_object *conds = NULL, *status = NULL;
	assert_true(json_object_object_get_ex(st, "status", &status));
	assert_true(json_object_object_get_ex(status, "conditions", &conds));
	for (size_t i = 0; i < json_object_array_length(conds); i++) {
		struct json_object *c = json_object_array_get_idx(conds, i), *t;
		json_object_object_get_ex(c, "type", &t);
		if (strcmp(json_object_get_string(t), type) == 0)
			return c;
	}
	fail_msg("no condition %s", type);
	return NULL;
}

static const char *cget(struct json_object *st, const char *type, const char *key)
{
	struct json_object *v = NULL;
	assert_true(json_object_object_get_ex(cond(st, type), key, &v));
	return json_object_get_string(v);
}

static int64_t sget_int(struct json_object *st, const char *key)
{
	struct json_object *status = NULL, *v = NULL;
	json_object_object_get_ex(st, "status", &status);
	assert_true(json_object_object_get_ex(status, key, &v));
	return json_object_get_int64(v);
}

/* Store computed's status as the cluster's current status (what the apiserver
 * would hold after the apply). */
static void adopt(struct json_object *cl, struct json_object *computed)
{
	struct json_object *st = NULL, *copy = NULL;
	json_object_object_get_ex(computed, "status", &st);
	assert_int_equal(json_object_deep_copy(st, &copy, NULL), 0);
	json_object_object_add(cl, "status", copy);
}

static void set_status(struct json_object *sts, const char *key, struct json_object *v)
{
	struct json_object *st = NULL;
	json_object_object_get_ex(sts, "status", &st);
	if (v)
		json_object_object_add(st, key, v);
	else
		json_object_object_del(st, key);
}

static void test_ready_when_all_hold(void **state)
{
	(void)state;
	struct json_object *cl = cluster(), *sts = sts_ready();
	struct json_object *st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T0);
	assert_non_null(st);
	assert_string_equal(cget(st, "Ready", "status"), "True");
	assert_string_equal(cget(st, "Ready", "reason"), "AllReplicasReady");
	assert_string_equal(cget(st, "Progressing", "status"), "False");
	assert_string_equal(cget(st, "Progressing", "reason"), "Stable");
	assert_string_equal(cget(st, "Degraded", "status"), "False");
	assert_string_equal(cget(st, "Degraded", "reason"), "ReconcileSucceeded");
	assert_string_equal(cget(st, "Ready", "lastTransitionTime"), T0);
	assert_int_equal(sget_int(st, "observedGeneration"), 4);
	assert_int_equal(sget_int(st, "replicas"), 3);
	assert_int_equal(sget_int(st, "readyReplicas"), 3);
	struct json_object *c = cond(st, "Ready"), *og = NULL;
	assert_true(json_object_object_get_ex(c, "observedGeneration", &og));
	assert_int_equal(json_object_get_int64(og), 4);

	struct json_object *meta = NULL, *status = NULL, *v = NULL;
	assert_true(json_object_object_get_ex(st, "apiVersion", &v));
	assert_string_equal(json_object_get_string(v), "piko.dev/v1alpha1");
	assert_true(json_object_object_get_ex(st, "kind", &v));
	assert_string_equal(json_object_get_string(v), "PikoCluster");
	assert_true(json_object_object_get_ex(st, "metadata", &meta));
	assert_true(json_object_object_get_ex(meta, "name", &v));
	assert_string_equal(json_object_get_string(v), "web");
	assert_true(json_object_object_get_ex(meta, "namespace", &v));
	assert_string_equal(json_object_get_string(v), "edge");
	assert_false(json_object_object_get_ex(meta, "uid", &v));
	assert_true(json_object_object_get_ex(st, "status", &status));
	assert_true(json_object_object_get_ex(status, "selector", &v));
	assert_string_equal(json_object_get_string(v),
	                    "app.kubernetes.io/name=piko,app.kubernetes.io/instance=web");
	assert_true(json_object_object_get_ex(status, "members", &v));
	assert_int_equal(json_object_array_length(v), 0);
	json_object_put(st);
	json_object_put(sts);
	json_object_put(cl);
}

/* Break each of the four conditions in turn: never Ready. */
static void test_each_broken_condition(void **state)
{
	(void)state;
	struct {
		const char *key;
		const char *reason;
	} cases[] = {
	    {"observedGeneration", "StatefulSetNotObserved"},
	    {"updatedReplicas", "NotAllReplicasReady"},
	    {"readyReplicas", "NotAllReplicasReady"},
	    {"updateRevision", "NotAllReplicasReady"},
	};
	struct json_object *vals[] = {
	    json_object_new_int(5),
	    json_object_new_int(2),
	    json_object_new_int(2),
	    json_object_new_string("web-new1"),
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json_object *cl = cluster(), *sts = sts_ready();
		set_status(sts, cases[i].key, vals[i]);
		struct json_object *st =
		    pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T0);
		assert_string_equal(cget(st, "Ready", "status"), "False");
		assert_string_equal(cget(st, "Ready", "reason"), cases[i].reason);
		assert_string_equal(cget(st, "Progressing", "status"), "True");
		assert_string_equal(cget(st, "Progressing", "reason"), "RollingOut");
		json_object_put(st);
		json_object_put(sts);
		json_object_put(cl);
	}

	/* Missing observedGeneration is "not observed" too. */
	struct json_object *cl = cluster(), *sts = sts_ready();
	set_status(sts, "observedGeneration", NULL);
	struct json_object *st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T0);
	assert_string_equal(cget(st, "Ready", "reason"), "StatefulSetNotObserved");
	json_object_put(st);

	/* The PikoCluster wants more replicas than the StatefulSet has. */
	json_object_object_add(json_object_object_get(cl, "spec"), "replicas",
	                       json_object_new_int(4));
	st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T0);
	assert_string_equal(cget(st, "Ready", "status"), "False");
	/* Observed, not wished for: the StatefulSet has 3 pods. */
	assert_int_equal(sget_int(st, "replicas"), 3);
	json_object_put(st);
	json_object_put(sts);
	json_object_put(cl);

	/* No StatefulSet in the cache yet. */
	cl = cluster();
	st = pk_status_compute(cl, NULL, NULL, 0, NULL, NULL, NULL, NULL, T0);
	assert_string_equal(cget(st, "Ready", "status"), "False");
	assert_string_equal(cget(st, "Ready", "reason"), "StatefulSetNotObserved");
	assert_int_equal(sget_int(st, "readyReplicas"), 0);
	assert_int_equal(sget_int(st, "replicas"), 0);
	json_object_put(st);
	json_object_put(cl);
}

/* status.replicas (the scale subresource's statusReplicasPath) follows the
 * StatefulSet's status.replicas, absent = 0. */
static void test_observed_replicas(void **state)
{
	(void)state;
	struct json_object *cl = cluster(), *sts = sts_ready();
	set_status(sts, "replicas", json_object_new_int(1));
	struct json_object *st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T0);
	assert_int_equal(sget_int(st, "replicas"), 1);
	json_object_put(st);
	set_status(sts, "replicas", NULL);
	st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T0);
	assert_int_equal(sget_int(st, "replicas"), 0);
	json_object_put(st);
	json_object_put(sts);
	json_object_put(cl);
}

/* A StatefulSet that could create no pod: 0 of 3. */
static struct json_object *sts_empty(void)
{
	return parse("{\"metadata\":{\"name\":\"web\",\"namespace\":\"edge\",\"generation\":1,"
	             "\"uid\":\"s1\"},\"spec\":{\"replicas\":3},"
	             "\"status\":{\"observedGeneration\":1,\"replicas\":0,"
	             "\"currentRevision\":\"web-1\",\"updateRevision\":\"web-1\"}}");
}

static const char *const quota_events =
    "[{\"reason\":\"FailedCreate\",\"involvedObject\":{\"kind\":\"StatefulSet\","
    "\"name\":\"web\",\"uid\":\"s1\"},\"lastTimestamp\":\"2026-01-01T00:00:05Z\","
    "\"message\":\"create Pod web-0 in StatefulSet web failed error: pods \\\"web-0\\\" is "
    "forbidden: exceeded quota: no-pods\"},"
    "{\"reason\":\"FailedCreate\",\"involvedObject\":{\"kind\":\"StatefulSet\","
    "\"name\":\"web\",\"uid\":\"s1\"},\"lastTimestamp\":\"2026-01-01T00:00:01Z\","
    "\"message\":\"older\"},"
    "{\"reason\":\"FailedCreate\",\"involvedObject\":{\"kind\":\"StatefulSet\","
    "\"name\":\"web\",\"uid\":\"old\"},\"lastTimestamp\":\"2026-01-01T00:00:09Z\","
    "\"message\":\"an earlier StatefulSet\"},"
    "{\"reason\":\"SuccessfulCreate\",\"involvedObject\":{\"kind\":\"StatefulSet\","
    "\"name\":\"web\",\"uid\":\"s1\"},\"lastTimestamp\":\"2026-01-01T00:00:09Z\","
    "\"message\":\"fine\"}]";

static void test_degraded_pod_create_failed(void **state)
{
	(void)state;
	struct json_object *cl = cluster(), *sts = sts_empty(), *ev = parse(quota_events);
	struct json_object *st = pk_status_compute(cl, sts, NULL, 0, NULL, ev, NULL, NULL, T0);
	assert_string_equal(cget(st, "Degraded", "status"), "True");
	assert_string_equal(cget(st, "Degraded", "reason"), "PodCreateFailed");
	assert_string_equal(cget(st, "Degraded", "message"),
	                    "0 of 3 pods exist: create Pod web-0 in StatefulSet web failed error: "
	                    "pods \"web-0\" is forbidden: exceeded quota: no-pods");
	assert_string_equal(cget(st, "Ready", "status"), "False");
	json_object_put(st);

	/* A reconcile error wins. */
	st = pk_status_compute(cl, sts, NULL, 0, NULL, ev, "apply: 403", NULL, T0);
	assert_string_equal(cget(st, "Degraded", "reason"), "ReconcileFailed");
	json_object_put(st);

	/* Every pod exists: an old refusal is history, not the state. */
	set_status(sts, "replicas", json_object_new_int(3));
	st = pk_status_compute(cl, sts, NULL, 0, NULL, ev, NULL, NULL, T0);
	assert_string_equal(cget(st, "Degraded", "status"), "False");
	json_object_put(st);
	json_object_put(ev);
	json_object_put(sts);
	json_object_put(cl);
}

static void test_degraded_pods(void **state)
{
	(void)state;
	struct json_object *cl = cluster(), *sts = sts_ready();
	set_status(sts, "readyReplicas", json_object_new_int(1));
	struct json_object *pods = parse(
	    "[{\"metadata\":{\"name\":\"web-2\"},\"status\":{\"containerStatuses\":[{\"name\":"
	    "\"piko\",\"image\":\"x\",\"restartCount\":7,\"state\":{\"waiting\":{\"reason\":"
	    "\"CrashLoopBackOff\",\"message\":\"back-off 40s restarting\"}},\"lastState\":"
	    "{\"terminated\":{\"exitCode\":1,\"reason\":\"Error\"}}}]}},"
	    "{\"metadata\":{\"name\":\"web-0\"},\"status\":{\"containerStatuses\":[{\"name\":"
	    "\"piko\",\"state\":{\"running\":{}}}]}},"
	    "{\"metadata\":{\"name\":\"web-1\"},\"status\":{\"containerStatuses\":[{\"name\":"
	    "\"piko\",\"restartCount\":3,\"state\":{\"waiting\":{\"reason\":"
	    "\"CrashLoopBackOff\",\"message\":\"back-off 10s restarting\"}},\"lastState\":"
	    "{\"terminated\":{\"exitCode\":2,\"reason\":\"Error\"}}}]}}]");
	struct json_object *st = pk_status_compute(cl, sts, NULL, 0, pods, NULL, NULL, NULL, T0);
	assert_string_equal(cget(st, "Degraded", "status"), "True");
	assert_string_equal(cget(st, "Degraded", "reason"), "CrashLoop");
	/* The first pod by name; no restart count or back-off time. */
	assert_string_equal(cget(st, "Degraded", "message"),
	                    "2 of 3 pods failing; pod web-1: container piko keeps exiting "
	                    "(CrashLoopBackOff), last with exit code 2: Error");
	json_object_put(st);
	json_object_put(pods);

	pods = parse("[{\"metadata\":{\"name\":\"web-0\"},\"status\":{\"containerStatuses\":[{"
	             "\"name\":\"piko\",\"image\":\"nope:1\",\"state\":{\"waiting\":{"
	             "\"reason\":\"ImagePullBackOff\",\"message\":\"Back-off pulling\"}}}]}}]");
	st = pk_status_compute(cl, sts, NULL, 0, pods, NULL, NULL, NULL, T0);
	assert_string_equal(cget(st, "Degraded", "reason"), "ImagePullFailed");
	assert_string_equal(
	    cget(st, "Degraded", "message"),
	    "1 of 1 pods failing; pod web-0: container piko: image nope:1 cannot be "
	    "pulled");
	json_object_put(st);
	json_object_put(pods);

	/* Starting normally: nothing wrong. */
	pods = parse("[{\"metadata\":{\"name\":\"web-0\"},\"status\":{\"containerStatuses\":[{"
	             "\"name\":\"piko\",\"state\":{\"waiting\":{\"reason\":"
	             "\"ContainerCreating\"}}}]}}]");
	st = pk_status_compute(cl, sts, NULL, 0, pods, NULL, NULL, NULL, T0);
	assert_string_equal(cget(st, "Degraded", "status"), "False");
	assert_string_equal(cget(st, "Degraded", "reason"), "ReconcileSucceeded");
	json_object_put(st);
	json_object_put(pods);
	json_object_put(sts);
	json_object_put(cl);
}

static void test_missing_ready_replicas(void **state)
{
	(void)state;
	struct json_object *cl = cluster(), *sts = sts_ready();
	set_status(sts, "readyReplicas", NULL);
	struct json_object *st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T0);
	assert_int_equal(sget_int(st, "readyReplicas"), 0);
	assert_string_equal(cget(st, "Ready", "status"), "False");
	json_object_put(st);
	json_object_put(sts);
	json_object_put(cl);

	/* Zero replicas wanted, none ready, rollout done: Ready. */
	cl = parse("{\"metadata\":{\"name\":\"web\",\"namespace\":\"edge\",\"generation\":1},"
	           "\"spec\":{\"replicas\":0}}");
	sts = parse("{\"metadata\":{\"generation\":2},\"status\":{\"observedGeneration\":2,"
	            "\"replicas\":0,\"currentRevision\":\"a\",\"updateRevision\":\"a\"}}");
	st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T0);
	assert_string_equal(cget(st, "Ready", "status"), "True");
	json_object_put(st);
	json_object_put(sts);
	json_object_put(cl);
}

static void test_transition_times(void **state)
{
	(void)state;
	struct json_object *cl = cluster(), *sts = sts_ready();
	set_status(sts, "readyReplicas", json_object_new_int(1));
	struct json_object *st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T0);
	assert_string_equal(cget(st, "Ready", "status"), "False");
	adopt(cl, st);
	json_object_put(st);

	/* Still not ready (another pod came up): the time stays. */
	set_status(sts, "readyReplicas", json_object_new_int(2));
	st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T1);
	assert_string_equal(cget(st, "Ready", "status"), "False");
	assert_string_equal(cget(st, "Ready", "lastTransitionTime"), T0);
	assert_string_equal(cget(st, "Degraded", "lastTransitionTime"), T0);
	adopt(cl, st);
	json_object_put(st);

	/* Ready flips: Ready and Progressing move to now, Degraded stays. */
	set_status(sts, "readyReplicas", json_object_new_int(3));
	st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T2);
	assert_string_equal(cget(st, "Ready", "status"), "True");
	assert_string_equal(cget(st, "Ready", "lastTransitionTime"), T2);
	assert_string_equal(cget(st, "Progressing", "lastTransitionTime"), T2);
	assert_string_equal(cget(st, "Degraded", "lastTransitionTime"), T0);
	json_object_put(st);
	json_object_put(sts);
	json_object_put(cl);
}

static void test_degraded(void **state)
{
	(void)state;
	struct json_object *cl = cluster(), *sts = sts_ready();
	struct json_object *st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T0);
	adopt(cl, st);
	json_object_put(st);

	st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, "apply StatefulSet: 422 Unprocessable",
	                       NULL, T1);
	assert_string_equal(cget(st, "Degraded", "status"), "True");
	assert_string_equal(cget(st, "Degraded", "reason"), "ReconcileFailed");
	assert_string_equal(cget(st, "Degraded", "message"),
	                    "apply StatefulSet: 422 Unprocessable");
	assert_string_equal(cget(st, "Degraded", "lastTransitionTime"), T1);
	/* Degraded does not make a ready cluster unready. */
	assert_string_equal(cget(st, "Ready", "status"), "True");
	assert_string_equal(cget(st, "Ready", "lastTransitionTime"), T0);
	json_object_put(st);

	/* A reason of its own (the cluster key's Secret is missing). */
	st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL,
	                       "Secret own-key (spec.cluster.keySecretRef) not found",
	                       "KeySecretMissing", T1);
	assert_string_equal(cget(st, "Degraded", "status"), "True");
	assert_string_equal(cget(st, "Degraded", "reason"), "KeySecretMissing");
	assert_string_equal(cget(st, "Degraded", "message"),
	                    "Secret own-key (spec.cluster.keySecretRef) not found");
	json_object_put(st);
	/* No error: no reason of the error's. */
	st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, "KeySecretMissing", T1);
	assert_string_equal(cget(st, "Degraded", "status"), "False");
	json_object_put(st);

	/* A huge message is cut to the CRD's maxLength. */
	char *big = malloc(PK_STATUS_MAX_MESSAGE + 100);
	memset(big, 'x', PK_STATUS_MAX_MESSAGE + 99);
	big[PK_STATUS_MAX_MESSAGE + 99] = '\0';
	st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, big, NULL, T1);
	assert_int_equal(strlen(cget(st, "Degraded", "message")), PK_STATUS_MAX_MESSAGE);
	json_object_put(st);
	free(big);
	json_object_put(sts);
	json_object_put(cl);
}

static void test_members(void **state)
{
	(void)state;
	struct json_object *slices[2];
	slices[0] = parse(
	    "{\"metadata\":{\"name\":\"web-peers-abc\"},\"addressType\":\"IPv4\",\"endpoints\":["
	    "{\"addresses\":[\"10.0.0.7\"],\"conditions\":{\"ready\":true},"
	    "\"targetRef\":{\"kind\":\"Pod\",\"name\":\"web-2\"}},"
	    "{\"addresses\":[\"10.0.0.5\",\"10.0.0.55\"],\"conditions\":{\"ready\":false},"
	    "\"targetRef\":{\"kind\":\"Pod\",\"name\":\"web-0\"}},"
	    "{\"addresses\":[\"10.0.0.9\"],\"conditions\":{\"ready\":false,\"terminating\":true},"
	    "\"targetRef\":{\"kind\":\"Pod\",\"name\":\"web-3\"}}]}");
	slices[1] = parse(
	    "{\"metadata\":{\"name\":\"web-peers-def\"},\"addressType\":\"IPv4\",\"endpoints\":["
	    "{\"addresses\":[\"10.0.0.6\"],\"conditions\":{},"
	    "\"targetRef\":{\"kind\":\"Pod\",\"name\":\"web-1\"}},"
	    "{\"addresses\":[\"10.0.0.8\"],\"conditions\":{\"terminating\":false}}]}");
	struct json_object *cl = cluster();
	struct json_object *st = pk_status_compute(cl, NULL, slices, 2, NULL, NULL, NULL, NULL, T0);
	struct json_object *status = NULL, *m = NULL;
	json_object_object_get_ex(st, "status", &status);
	assert_true(json_object_object_get_ex(status, "members", &m));
	const char *want = "[{\"pod\":\"10.0.0.8\",\"address\":\"10.0.0.8\",\"ready\":true},"
	                   "{\"pod\":\"web-0\",\"address\":\"10.0.0.5\",\"ready\":false},"
	                   "{\"pod\":\"web-1\",\"address\":\"10.0.0.6\",\"ready\":true},"
	                   "{\"pod\":\"web-2\",\"address\":\"10.0.0.7\",\"ready\":true}]";
	assert_string_equal(json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN), want);
	json_object_put(st);
	json_object_put(slices[0]);
	json_object_put(slices[1]);

	/* A dual-stack pod (an IPv4 and an IPv6 slice) is one member, with its
	 * first address in sort order. */
	slices[0] = parse("{\"addressType\":\"IPv6\",\"endpoints\":[{\"addresses\":[\"fd00::7\"],"
	                  "\"targetRef\":{\"name\":\"web-0\"}}]}");
	slices[1] = parse("{\"addressType\":\"IPv4\",\"endpoints\":[{\"addresses\":[\"10.0.0.7\"],"
	                  "\"targetRef\":{\"name\":\"web-0\"}}]}");
	st = pk_status_compute(cl, NULL, slices, 2, NULL, NULL, NULL, NULL, T0);
	json_object_object_get_ex(st, "status", &status);
	assert_true(json_object_object_get_ex(status, "members", &m));
	assert_string_equal(json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN),
	                    "[{\"pod\":\"web-0\",\"address\":\"10.0.0.7\",\"ready\":true}]");
	json_object_put(st);
	json_object_put(slices[0]);
	json_object_put(slices[1]);

	/* More endpoints than the CRD allows: the first 256 by pod name. */
	struct json_object *s = parse("{\"endpoints\":[]}"), *eps = NULL;
	json_object_object_get_ex(s, "endpoints", &eps);
	for (int i = 0; i < 300; i++) {
		char buf[160];
		snprintf(buf, sizeof(buf),
		         "{\"addresses\":[\"10.1.%d.%d\"],\"targetRef\":{\"name\":\"web-%03d\"}}",
		         i / 256, i % 256, 299 - i);
		json_object_array_add(eps, parse(buf));
	}
	st = pk_status_compute(cl, NULL, &s, 1, NULL, NULL, NULL, NULL, T0);
	json_object_object_get_ex(st, "status", &status);
	json_object_object_get_ex(status, "members", &m);
	assert_int_equal(json_object_array_length(m), PK_STATUS_MAX_MEMBERS);
	struct json_object *first = json_object_array_get_idx(m, 0), *last, *pod;
	last = json_object_array_get_idx(m, PK_STATUS_MAX_MEMBERS - 1);
	json_object_object_get_ex(first, "pod", &pod);
	assert_string_equal(json_object_get_string(pod), "web-000");
	json_object_object_get_ex(last, "pod", &pod);
	assert_string_equal(json_object_get_string(pod), "web-255");
	json_object_put(st);
	json_object_put(s);
	json_object_put(cl);
}

static void test_equal(void **state)
{
	(void)state;
	struct json_object *cl = cluster(), *sts = sts_ready();
	struct json_object *st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T0);
	/* No status yet. */
	assert_false(pk_status_equal(cl, st));
	adopt(cl, st);
	assert_true(pk_status_equal(cl, st));
	json_object_put(st);

	/* Recomputed later with nothing changed: equal (times kept). */
	st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T2);
	assert_true(pk_status_equal(cl, st));

	/* The apiserver dropped the empty members array: still equal. */
	struct json_object *status = NULL;
	json_object_object_get_ex(cl, "status", &status);
	json_object_object_del(status, "members");
	assert_true(pk_status_equal(cl, st));
	json_object_put(st);

	/* A new generation, a new ready count, an error: each differs. */
	json_object_object_add(json_object_object_get(cl, "metadata"), "generation",
	                       json_object_new_int(5));
	st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T2);
	assert_false(pk_status_equal(cl, st));
	json_object_put(st);
	json_object_object_add(json_object_object_get(cl, "metadata"), "generation",
	                       json_object_new_int(4));
	set_status(sts, "readyReplicas", json_object_new_int(2));
	st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T2);
	assert_false(pk_status_equal(cl, st));
	json_object_put(st);
	set_status(sts, "readyReplicas", json_object_new_int(3));
	st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, "boom", NULL, T2);
	assert_false(pk_status_equal(cl, st));
	json_object_put(st);

	/* A field only the live status has (e.g. written by an older
	 * controller) differs too: the apply removes it. */
	st = pk_status_compute(cl, sts, NULL, 0, NULL, NULL, NULL, NULL, T2);
	assert_true(pk_status_equal(cl, st));
	json_object_object_add(status, "legacy", json_object_new_string("x"));
	assert_false(pk_status_equal(cl, st));
	json_object_put(st);
	json_object_put(sts);
	json_object_put(cl);
}

/* ---- ClusterFormed ---- */

/* Three members web-0..2 on 10.0.0.5..7; nodes web-N-aaaaaaN (the rendered
 * --cluster.node-id-prefix=$(POD_NAME)- plus 7 random characters). */
#define N0                                                                                         \
	"{\"id\":\"web-0-aaaaaa0\",\"status\":\"active\",\"admin_addr\":\"10.0.0.5:8002\","        \
	"\"endpoints\":1,\"upstreams\":%d}"
#define N1                                                                                         \
	"{\"id\":\"web-1-aaaaaa1\",\"status\":\"active\",\"admin_addr\":\"10.0.0.6:8002\","        \
	"\"endpoints\":0,\"upstreams\":%d}"
#define N2                                                                                         \
	"{\"id\":\"web-2-aaaaaa2\",\"status\":\"active\",\"admin_addr\":\"10.0.0.7:8002\","        \
	"\"endpoints\":2,\"upstreams\":%d}"

struct formed_case {
	const char *name;
	int ready[3];       /* of web-0, web-1, web-2 */
	const char *ans[3]; /* each one's answer (its own entry first); NULL: no report */
	const char *err[3]; /* or the error of its read */
	int formed;
	const char *reason;
	const char *msg; /* NULL: not checked */
	const char *link[3];
	const char *node_id[3];
	int64_t upstreams[3];
};

static void test_formed_table(void **state)
{
	(void)state;
	char all0[512], all1[512], all2[512], miss0[512], left1[512];
	snprintf(all0, sizeof(all0), "[" N0 "," N1 "," N2 "]", 3, 0, 0);
	snprintf(all1, sizeof(all1), "[" N1 "," N0 "," N2 "]", 0, 3, 0);
	snprintf(all2, sizeof(all2), "[" N2 "," N1 "," N0 "]", 0, 0, 3);
	snprintf(miss0, sizeof(miss0), "[" N0 "," N1 "]", 3, 0); /* web-0 misses web-2 */
	/* web-1 says web-2 is leaving */
	snprintf(left1, sizeof(left1),
	         "[" N1 "," N0 ",{\"id\":\"web-2-aaaaaa2\",\"status\":\"left\","
	         "\"admin_addr\":\"10.0.0.7:8002\",\"upstreams\":0}]",
	         0, 3);
	char two0[256], two1[256], one0[256], restarted2[512];
	snprintf(two0, sizeof(two0), "[" N0 "," N1 "]", 3, 0);
	snprintf(two1, sizeof(two1), "[" N1 "," N0 "]", 0, 3);
	snprintf(one0, sizeof(one0), "[" N0 "]", 5);
	/* web-2 restarted as web-2-bbbbbbb: web-0 still lists its old node. */
	snprintf(restarted2, sizeof(restarted2), "[" N2 "," N0 "," N1 "]", 0, 0, 0);
	memcpy(strstr(restarted2, "aaaaaa2"), "bbbbbbb", 7);

	const struct formed_case cases[] = {
	    {"all see all",
	     {1, 1, 1},
	     {all0, all1, all2},
	     {0},
	     1,
	     "Formed",
	     "each of the 3 ready members lists every other active",
	     {"active", "active", "active"},
	     {"web-0-aaaaaa0", "web-1-aaaaaa1", "web-2-aaaaaa2"},
	     {3, 0, 0}},
	    {"one node missing another",
	     {1, 1, 1},
	     {miss0, all1, all2},
	     {0},
	     0,
	     "NotFormed",
	     "1 of 6 links missing: web-0 does not list web-2 active",
	     {"active", "active", "partial"},
	     {"web-0-aaaaaa0", "web-1-aaaaaa1", "web-2-aaaaaa2"},
	     {3, 0, 0}},
	    {"a node seen leaving",
	     {1, 1, 1},
	     {all0, left1, all2},
	     {0},
	     0,
	     "NotFormed",
	     "1 of 6 links missing: web-1 does not list web-2 active",
	     {"active", "active", "partial"},
	     {0},
	     {3, 0, 0}},
	    {"a node's status unreadable",
	     {1, 1, 1},
	     {all0, NULL, all2},
	     {NULL, "Couldn't connect to server", NULL},
	     0,
	     "StatusUnavailable",
	     "cannot read /status/cluster/nodes of 1 of 3 ready members: web-1 (Couldn't "
	     "connect to server)",
	     /* web-1 is still seen by both others (matched by its pod name) */
	     {"partial", "active", "partial"},
	     {"web-0-aaaaaa0", NULL, "web-2-aaaaaa2"},
	     {3, -1, 0}},
	    {"a ready node not read yet",
	     {1, 1, 1},
	     {all0, all1, NULL},
	     {0},
	     0,
	     "StatusUnavailable",
	     "cannot read /status/cluster/nodes of 1 of 3 ready members: web-2 (not read yet)",
	     {"partial", "partial", "active"},
	     {"web-0-aaaaaa0", "web-1-aaaaaa1", NULL},
	     {3, 0, -1}},
	    {"a member not ready is ignored",
	     {1, 1, 0},
	     {two0, two1, NULL},
	     {0},
	     1,
	     "Formed",
	     "each of the 2 ready members lists every other active",
	     {"active", "active", "none"},
	     {"web-0-aaaaaa0", "web-1-aaaaaa1", NULL},
	     {3, 0, -1}},
	    {"a member not ready, unreadable, is not required",
	     {1, 1, 0},
	     {two0, two1, NULL},
	     {NULL, NULL, "Timeout was reached"},
	     1,
	     "Formed",
	     NULL,
	     {"active", "active", "none"},
	     {0},
	     {3, 0, -1}},
	    {"single node",
	     {1, 0, 0},
	     {one0, NULL, NULL},
	     {0},
	     1,
	     "Formed",
	     "the only ready member answered",
	     {"active", "none", "none"},
	     {"web-0-aaaaaa0", NULL, NULL},
	     {5, -1, -1}},
	    {"no ready member",
	     {0, 0, 0},
	     {0},
	     {0},
	     0,
	     "NoReadyMembers",
	     "none of 3 members is ready",
	     {"unknown", "unknown", "unknown"},
	     {0},
	     {-1, -1, -1}},
	    {"a restarted node is a new node",
	     {1, 1, 1},
	     {all0, all1, restarted2},
	     {0},
	     0,
	     "NotFormed",
	     "2 of 6 links missing: web-0 does not list web-2 active, web-1 does not list web-2 "
	     "active",
	     {"active", "active", "none"},
	     {"web-0-aaaaaa0", "web-1-aaaaaa1", "web-2-bbbbbbb"},
	     {0}},
	};
	static const char *const pods[] = {"web-0", "web-1", "web-2"};
	static const char *const addrs[] = {"10.0.0.5", "10.0.0.6", "10.0.0.7"};
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const struct formed_case *fc = &cases[c];
		struct pk_formed_member m[3];
		struct pk_node_report r[3];
		struct json_object *parsed[3] = {NULL, NULL, NULL};
		size_t nr = 0;
		for (int i = 0; i < 3; i++) {
			m[i] = (struct pk_formed_member){
			    .pod = pods[i], .address = addrs[i], .ready = fc->ready[i]};
			if (fc->ans[i] || fc->err[i]) {
				parsed[i] = fc->ans[i] ? parse(fc->ans[i]) : NULL;
				r[nr++] = (struct pk_node_report){.pod = pods[i],
				                                  .address = addrs[i],
				                                  .error = fc->err[i],
				                                  .nodes = parsed[i]};
			}
		}
		const char *reason = NULL;
		char msg[512];
		int formed = pk_status_formed(m, 3, r, nr, &reason, msg, sizeof(msg));
		print_message("case: %s -> %s: %s\n", fc->name, reason, msg);
		assert_int_equal(formed, fc->formed);
		assert_string_equal(reason, fc->reason);
		if (fc->msg)
			assert_string_equal(msg, fc->msg);
		for (int i = 0; i < 3; i++) {
			assert_string_equal(m[i].link, fc->link[i]);
			if (fc->node_id[0] || fc->node_id[1] || fc->node_id[2]) {
				if (fc->node_id[i])
					assert_string_equal(m[i].node_id, fc->node_id[i]);
				else
					assert_null(m[i].node_id);
			}
			if (fc->upstreams[0] || fc->upstreams[1] || fc->upstreams[2])
				assert_int_equal(m[i].upstreams, fc->upstreams[i]);
		}
		for (int i = 0; i < 3; i++)
			json_object_put(parsed[i]);
	}
}

/* A node's own entry: its pod name as the ID (no prefix), the prefix and 7
 * characters (web-1 is not web-10), or else the host of its admin address. */
static void test_formed_matching(void **state)
{
	(void)state;
	struct pk_formed_member m[2] = {{.pod = "web-1", .address = "10.0.0.6", .ready = 1},
	                                {.pod = "web-10", .address = "fd00::10", .ready = 1}};
	/* web-1 runs with --cluster.node-id web-1; web-10 with a plain ID
	 * (matched by its admin address, IPv6 in brackets). web-1's answer
	 * lists web-10's node first: not taken for web-1's own. */
	struct json_object *a1 =
	    parse("[{\"id\":\"x\",\"status\":\"active\",\"admin_addr\":\"[fd00::10]:8002\"},"
	          "{\"id\":\"web-1\",\"status\":\"active\",\"admin_addr\":\"10.0.0.6:8002\","
	          "\"upstreams\":2}]");
	struct json_object *a10 =
	    parse("[{\"id\":\"x\",\"status\":\"active\",\"admin_addr\":\"[fd00::10]:8002\","
	          "\"upstreams\":4},"
	          "{\"id\":\"web-1\",\"status\":\"active\",\"admin_addr\":\"10.0.0.6:8002\"}]");
	struct pk_node_report r[2] = {
	    {.pod = "web-1", .address = "10.0.0.6", .nodes = a1},
	    {.pod = "web-10", .address = "fd00::10", .nodes = a10},
	};
	const char *reason;
	char msg[256];
	assert_int_equal(pk_status_formed(m, 2, r, 2, &reason, msg, sizeof(msg)), 1);
	assert_string_equal(m[0].node_id, "web-1");
	assert_int_equal(m[0].upstreams, 2);
	assert_string_equal(m[1].node_id, "x");
	assert_int_equal(m[1].upstreams, 4);

	/* web-10's node must not count as web-1's. */
	struct json_object *b10 = parse(
	    "[{\"id\":\"web-10-abc1234\",\"status\":\"active\",\"admin_addr\":\"0.0.0.0:1\"}]");
	r[1].nodes = b10;
	m[1].address = "10.0.0.16";
	r[1].address = "10.0.0.16";
	assert_int_equal(pk_status_formed(m, 2, r, 2, &reason, msg, sizeof(msg)), 0);
	assert_string_equal(reason, "NotFormed");
	assert_string_equal(msg, "2 of 2 links missing: web-1 does not list web-10 active, "
	                         "web-10 does not list web-1 active");
	assert_string_equal(m[1].node_id, "web-10-abc1234");
	/* A report for another address (the pod came back with a new IP) is
	 * not this member's. */
	r[1].address = "10.0.0.99";
	assert_int_equal(pk_status_formed(m, 2, r, 2, &reason, msg, sizeof(msg)), 0);
	assert_string_equal(reason, "StatusUnavailable");
	assert_non_null(strstr(msg, "web-10 (not read yet)"));
	json_object_put(a1);
	json_object_put(a10);
	json_object_put(b10);
}

static struct json_object *member_field(struct json_object *st, size_t i, const char *key)
{
	struct json_object *status = NULL, *m = NULL, *v = NULL;
	json_object_object_get_ex(st, "status", &status);
	assert_true(json_object_object_get_ex(status, "members", &m));
	json_object_object_get_ex(json_object_array_get_idx(m, i), key, &v);
	return v;
}

/* The condition and the member fields in the status, and no write when
 * nothing the status shows changed. */
static void test_add_formed(void **state)
{
	(void)state;
	struct json_object *slice =
	    parse("{\"addressType\":\"IPv4\",\"endpoints\":["
	          "{\"addresses\":[\"10.0.0.5\"],\"targetRef\":{\"name\":\"web-0\"}},"
	          "{\"addresses\":[\"10.0.0.6\"],\"targetRef\":{\"name\":\"web-1\"}},"
	          "{\"addresses\":[\"10.0.0.7\"],\"conditions\":{\"ready\":false},"
	          "\"targetRef\":{\"name\":\"web-2\"}}]}");
	char a0[256], a1[256];
	snprintf(a0, sizeof(a0), "[" N0 "," N1 "]", 3, 0);
	snprintf(a1, sizeof(a1), "[" N1 "," N0 "]", 0, 3);
	struct json_object *n0 = parse(a0), *n1 = parse(a1);
	struct pk_node_report r[2] = {{.pod = "web-0", .address = "10.0.0.5", .nodes = n0},
	                              {.pod = "web-1", .address = "10.0.0.6", .nodes = n1}};
	struct json_object *cl = cluster(), *sts = sts_ready();

	/* No round of reads yet and no condition: computed (not read yet). */
	struct json_object *st = pk_status_compute(cl, sts, &slice, 1, NULL, NULL, NULL, NULL, T0);
	pk_status_add_formed(st, cl, NULL, 0, 0, T0);
	assert_string_equal(cget(st, "ClusterFormed", "status"), "False");
	assert_string_equal(cget(st, "ClusterFormed", "reason"), "StatusUnavailable");
	adopt(cl, st);
	json_object_put(st);

	st = pk_status_compute(cl, sts, &slice, 1, NULL, NULL, NULL, NULL, T1);
	pk_status_add_formed(st, cl, r, 2, 1, T1);
	assert_string_equal(cget(st, "ClusterFormed", "status"), "True");
	assert_string_equal(cget(st, "ClusterFormed", "reason"), "Formed");
	assert_string_equal(cget(st, "ClusterFormed", "lastTransitionTime"), T1);
	assert_string_equal(cget(st, "ClusterFormed", "observedGeneration"), "4");
	/* After Degraded. */
	struct json_object *status = NULL, *conds = NULL;
	json_object_object_get_ex(st, "status", &status);
	json_object_object_get_ex(status, "conditions", &conds);
	assert_int_equal(json_object_array_length(conds), 4);
	assert_ptr_equal(json_object_array_get_idx(conds, 3), cond(st, "ClusterFormed"));
	assert_string_equal(json_object_get_string(member_field(st, 0, "nodeId")), "web-0-aaaaaa0");
	assert_string_equal(json_object_get_string(member_field(st, 0, "link")), "active");
	assert_int_equal(json_object_get_int64(member_field(st, 0, "upstreams")), 3);
	assert_int_equal(json_object_get_int64(member_field(st, 1, "upstreams")), 0);
	/* web-2 is not ready and not read: no ID, no count; nobody lists it. */
	assert_null(member_field(st, 2, "nodeId"));
	assert_null(member_field(st, 2, "upstreams"));
	assert_string_equal(json_object_get_string(member_field(st, 2, "link")), "none");
	assert_false(pk_status_equal(cl, st));
	adopt(cl, st);
	json_object_put(st);

	/* The same reads later: equal, no write. */
	st = pk_status_compute(cl, sts, &slice, 1, NULL, NULL, NULL, NULL, T2);
	pk_status_add_formed(st, cl, r, 2, 1, T2);
	assert_true(pk_status_equal(cl, st));
	json_object_put(st);

	/* A new leader that has read nothing yet keeps what the status says. */
	st = pk_status_compute(cl, sts, &slice, 1, NULL, NULL, NULL, NULL, T2);
	pk_status_add_formed(st, cl, NULL, 0, 0, T2);
	assert_true(pk_status_equal(cl, st));
	json_object_put(st);

	/* An upstream count moved: a difference (peers.c passes such reads
	 * on at most once per re-push period). */
	json_object_object_add(json_object_array_get_idx(n1, 0), "upstreams",
	                       json_object_new_int(7));
	st = pk_status_compute(cl, sts, &slice, 1, NULL, NULL, NULL, NULL, T2);
	pk_status_add_formed(st, cl, r, 2, 1, T2);
	assert_false(pk_status_equal(cl, st));
	assert_string_equal(cget(st, "ClusterFormed", "lastTransitionTime"), T1);
	json_object_put(st);

	/* web-1 unreadable: False, naming it; the time moves. */
	r[1].error = "Couldn't connect to server";
	st = pk_status_compute(cl, sts, &slice, 1, NULL, NULL, NULL, NULL, T2);
	pk_status_add_formed(st, cl, r, 2, 1, T2);
	assert_string_equal(cget(st, "ClusterFormed", "status"), "False");
	assert_string_equal(cget(st, "ClusterFormed", "message"),
	                    "cannot read /status/cluster/nodes of 1 of 2 ready members: web-1 "
	                    "(Couldn't connect to server)");
	assert_string_equal(cget(st, "ClusterFormed", "lastTransitionTime"), T2);
	json_object_put(st);

	/* No ready member: nothing to read, so nothing to wait for even
	 * before the first round (the kept True would be stale). */
	struct json_object *idle =
	    parse("{\"endpoints\":[{\"addresses\":[\"10.0.0.5\"],\"conditions\":{\"ready\":false},"
	          "\"targetRef\":{\"name\":\"web-0\"}}]}");
	st = pk_status_compute(cl, sts, &idle, 1, NULL, NULL, NULL, NULL, T2);
	pk_status_add_formed(st, cl, NULL, 0, 0, T2);
	assert_string_equal(cget(st, "ClusterFormed", "reason"), "NoReadyMembers");
	assert_string_equal(cget(st, "ClusterFormed", "message"), "none of 1 members is ready");
	json_object_put(st);
	json_object_put(idle);

	json_object_put(n0);
	json_object_put(n1);
	json_object_put(sts);
	json_object_put(cl);
	json_object_put(slice);
}

static void test_refuses_nameless(void **state)
{
	(void)state;
	struct json_object *cl = parse("{\"metadata\":{\"namespace\":\"edge\"}}");
	assert_null(pk_status_compute(cl, NULL, NULL, 0, NULL, NULL, NULL, NULL, T0));
	json_object_put(cl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ready_when_all_hold),
	    cmocka_unit_test(test_each_broken_condition),
	    cmocka_unit_test(test_missing_ready_replicas),
	    cmocka_unit_test(test_observed_replicas),
	    cmocka_unit_test(test_degraded_pod_create_failed),
	    cmocka_unit_test(test_degraded_pods),
	    cmocka_unit_test(test_transition_times),
	    cmocka_unit_test(test_degraded),
	    cmocka_unit_test(test_members),
	    cmocka_unit_test(test_equal),
	    cmocka_unit_test(test_refuses_nameless),
	    cmocka_unit_test(test_formed_table),
	    cmocka_unit_test(test_formed_matching),
	    cmocka_unit_test(test_add_formed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
