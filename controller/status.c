/*
 * PikoCluster status from the StatefulSet and the peers' EndpointSlices (see
 * status.h and docs/controller.md). Ready is computed the strict way
 * (kubernetes.md §1.8): the StatefulSet controller has seen the latest
 * StatefulSet spec, every replica is updated and ready, and the rollout has
 * finished (currentRevision == updateRevision), so a cluster still serving
 * the old config is never reported Ready.
 *
 * Condition messages carry counts, never times, so the status only changes
 * when something observable did, and an unchanged world computes an equal
 * status (no write, no watch event, no hot loop).
 */
#include "status.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "jsonutil.h"
#include "render.h"

/* json-c construction aborts on OOM, the project's policy (core/buf.h). */
static struct json_object *must(struct json_object *o)
{
	if (!o) {
		fprintf(stderr, "out of memory\n");
		abort();
	}
	return o;
}

static struct json_object *path2(struct json_object *o, const char *a, const char *b)
{
	return pk_json_field(pk_json_field(o, a), b);
}

static const char *str_or(struct json_object *v, const char *def)
{
	return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : def;
}

static int64_t int_or(struct json_object *v, int64_t def)
{
	return json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : def;
}

/* A JSON boolean's value, def when missing or not a boolean. */
static int bool_or(struct json_object *v, int def)
{
	return json_object_is_type(v, json_type_boolean) ? json_object_get_boolean(v) : def;
}

static void add(struct json_object *o, const char *key, struct json_object *val)
{
	json_object_object_add(o, key, val);
}

/* ---- members ---- */

struct member {
	const char *pod, *addr; /* borrowed from the slices */
	int ready;
};

static int member_cmp(const void *a, const void *b)
{
	const struct member *x = a, *y = b;
	int c = strcmp(x->pod, y->pod);
	return c ? c : strcmp(x->addr, y->addr);
}

static struct json_object *members(struct json_object *const *slices, size_t nslices)
{
	struct member *m = NULL; /* owned here; its strings borrowed */
	size_t n = 0, cap = 0;
	for (size_t i = 0; i < nslices; i++) {
		struct json_object *eps = pk_json_field(slices[i], "endpoints");
		size_t neps =
		    json_object_is_type(eps, json_type_array) ? json_object_array_length(eps) : 0;
		for (size_t j = 0; j < neps; j++) {
			struct json_object *ep = json_object_array_get_idx(eps, j);
			struct json_object *cond = pk_json_field(ep, "conditions");
			struct json_object *addrs = pk_json_field(ep, "addresses");
			/* A terminating pod is draining: not a member any
			 * more, whatever its readiness. */
			if (bool_or(pk_json_field(cond, "terminating"), 0))
				continue;
			if (!json_object_is_type(addrs, json_type_array) ||
			    json_object_array_length(addrs) == 0)
				continue;
			const char *addr = str_or(json_object_array_get_idx(addrs, 0), NULL);
			if (!addr)
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				m = pk_xrealloc(m, cap * sizeof(*m));
			}
			m[n].addr = addr;
			m[n].pod = str_or(path2(ep, "targetRef", "name"), addr);
			/* EndpointSlice API: a nil ready means unknown, to be
			 * read as ready. */
			m[n].ready = bool_or(pk_json_field(cond, "ready"), 1);
			n++;
		}
	}
	if (n > 1)
		qsort(m, n, sizeof(*m), member_cmp);
	struct json_object *arr = must(json_object_new_array());
	for (size_t i = 0, out = 0; i < n && out < PK_STATUS_MAX_MEMBERS; i++) {
		/* One entry per pod: a dual-stack pod is in an IPv4 and an IPv6
		 * slice, and a pod can sit in two slices while they are rebalanced.
		 * Sorted, its first address is kept. */
		if (i > 0 && strcmp(m[i].pod, m[i - 1].pod) == 0)
			continue;
		out++;
		struct json_object *o = must(json_object_new_object());
		add(o, "pod", must(json_object_new_string(m[i].pod)));
		add(o, "address", must(json_object_new_string(m[i].addr)));
		add(o, "ready", must(json_object_new_boolean(m[i].ready)));
		json_object_array_add(arr, o);
	}
	free(m);
	return arr;
}

/* ---- conditions ---- */

/* The current condition of this type in the PikoCluster's status, or NULL. */
static struct json_object *current_condition(struct json_object *cluster, const char *type)
{
	struct json_object *conds = path2(cluster, "status", "conditions");
	if (!json_object_is_type(conds, json_type_array))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(conds); i++) {
		struct json_object *c = json_object_array_get_idx(conds, i);
		const char *t = str_or(pk_json_field(c, "type"), NULL);
		if (t && strcmp(t, type) == 0)
			return c;
	}
	return NULL;
}

/* The message, cut to the CRD's maxLength on a UTF-8 character boundary. */
static struct json_object *message(const char *msg)
{
	size_t n = strlen(msg);
	if (n > PK_STATUS_MAX_MESSAGE) {
		n = PK_STATUS_MAX_MESSAGE;
		while (n > 0 && ((unsigned char)msg[n] & 0xc0) == 0x80)
			n--;
	}
	return must(json_object_new_string_len(msg, (int)n));
}

static struct json_object *condition(struct json_object *cluster, const char *type, int status,
                                     const char *reason, const char *msg, int64_t generation,
                                     const char *now)
{
	const char *st = status ? "True" : "False";
	const char *ltt = now;
	struct json_object *cur = current_condition(cluster, type);
	const char *cur_st = str_or(pk_json_field(cur, "status"), NULL);
	const char *cur_ltt = str_or(pk_json_field(cur, "lastTransitionTime"), NULL);
	/* The time moves only when the status flips (kubernetes.md §1.3). */
	if (cur_st && cur_ltt && *cur_ltt && strcmp(cur_st, st) == 0)
		ltt = cur_ltt;
	struct json_object *c = must(json_object_new_object());
	add(c, "type", must(json_object_new_string(type)));
	add(c, "status", must(json_object_new_string(st)));
	add(c, "observedGeneration", must(json_object_new_int64(generation)));
	add(c, "lastTransitionTime", must(json_object_new_string(ltt)));
	add(c, "reason", must(json_object_new_string(reason)));
	add(c, "message", message(msg));
	return c;
}

struct readiness {
	int ready;
	const char *reason;
	char msg[256];
};

static void readiness(struct json_object *sts, int64_t want, int64_t ready_replicas,
                      struct readiness *r)
{
	const char *name = str_or(path2(sts, "metadata", "name"), "");
	struct json_object *st = pk_json_field(sts, "status");
	struct json_object *gen = path2(sts, "metadata", "generation");
	struct json_object *obs = pk_json_field(st, "observedGeneration");
	r->ready = 0;
	if (!sts) {
		r->reason = "StatefulSetNotObserved";
		snprintf(r->msg, sizeof(r->msg), "the StatefulSet does not exist yet");
		return;
	}
	if (!json_object_is_type(gen, json_type_int) || !json_object_is_type(obs, json_type_int) ||
	    json_object_get_int64(gen) != json_object_get_int64(obs)) {
		r->reason = "StatefulSetNotObserved";
		snprintf(r->msg, sizeof(r->msg),
		         "the StatefulSet controller has not observed StatefulSet %.64s generation "
		         "%" PRId64 " yet",
		         name, int_or(gen, 0));
		return;
	}
	int64_t updated = int_or(pk_json_field(st, "updatedReplicas"), 0);
	const char *cur = str_or(pk_json_field(st, "currentRevision"), "");
	const char *upd = str_or(pk_json_field(st, "updateRevision"), "");
	int rolled = strcmp(cur, upd) == 0;
	if (updated == want && ready_replicas == want && rolled) {
		r->ready = 1;
		r->reason = "AllReplicasReady";
		snprintf(r->msg, sizeof(r->msg),
		         "%" PRId64 " of %" PRId64 " replicas ready and updated", ready_replicas,
		         want);
		return;
	}
	r->reason = "NotAllReplicasReady";
	snprintf(r->msg, sizeof(r->msg),
	         "%" PRId64 " of %" PRId64 " replicas ready, %" PRId64 " updated%s", ready_replicas,
	         want, updated, rolled ? "" : ", rollout in progress");
}

/* ---- why pods are missing or failing ---- */

struct degraded {
	const char *reason; /* NULL: nothing wrong seen */
	char msg[1024];
};

/* The latest time an Event says it happened (RFC 3339 strings of one API
 * compare as times), "" when it has none. */
static const char *event_time(struct json_object *ev)
{
	const char *t = str_or(path2(ev, "series", "lastObservedTime"), NULL);
	if (!t)
		t = str_or(pk_json_field(ev, "lastTimestamp"), NULL);
	if (!t)
		t = str_or(pk_json_field(ev, "eventTime"), NULL);
	if (!t)
		t = str_or(path2(ev, "metadata", "creationTimestamp"), "");
	return t;
}

/* FailedCreate Events of the StatefulSet: the newest one's message, when the
 * StatefulSet has fewer pods than it wants (a refusal it has since got past
 * is left alone: the Event outlives it by an hour). Ties go to the smaller
 * message, so equal input always picks the same. */
static void pods_not_created(struct json_object *sts, int64_t want, struct json_object *events,
                             struct degraded *d)
{
	if (!sts || !json_object_is_type(events, json_type_array))
		return;
	if (int_or(path2(sts, "status", "replicas"), 0) >= want)
		return;
	const char *uid = str_or(path2(sts, "metadata", "uid"), NULL);
	struct json_object *best = NULL;
	for (size_t i = 0; i < json_object_array_length(events); i++) {
		struct json_object *ev = json_object_array_get_idx(events, i);
		const char *reason = str_or(pk_json_field(ev, "reason"), "");
		const char *evuid = str_or(path2(ev, "involvedObject", "uid"), NULL);
		const char *msg = str_or(pk_json_field(ev, "message"), NULL);
		if (strcmp(reason, "FailedCreate") != 0 || !msg)
			continue;
		if (uid && evuid && strcmp(uid, evuid) != 0)
			continue; /* about an earlier StatefulSet of that name */
		if (best) {
			int c = strcmp(event_time(ev), event_time(best));
			if (c < 0 || (c == 0 &&
			              strcmp(msg, str_or(pk_json_field(best, "message"), "")) >= 0))
				continue;
		}
		best = ev;
	}
	if (!best)
		return;
	d->reason = "PodCreateFailed";
	snprintf(d->msg, sizeof(d->msg), "%" PRId64 " of %" PRId64 " pods exist: %s",
	         int_or(path2(sts, "status", "replicas"), 0), want,
	         str_or(pk_json_field(best, "message"), ""));
}

/* What a waiting container's reason says about the pod, or NULL for the
 * reasons of a normal start (ContainerCreating, PodInitializing). */
static const char *waiting_class(const char *why)
{
	static const struct {
		const char *waiting, *reason;
	} classes[] = {
	    {"CrashLoopBackOff", "CrashLoop"},
	    {"ErrImagePull", "ImagePullFailed"},
	    {"ImagePullBackOff", "ImagePullFailed"},
	    {"ErrImageNeverPull", "ImagePullFailed"},
	    {"InvalidImageName", "ImagePullFailed"},
	    {"CreateContainerConfigError", "ContainerCreateFailed"},
	    {"CreateContainerError", "ContainerCreateFailed"},
	    {"RunContainerError", "ContainerCreateFailed"},
	};
	for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
		if (strcmp(why, classes[i].waiting) == 0)
			return classes[i].reason;
	return NULL;
}

static int pod_cmp(const void *a, const void *b)
{
	const char *x = str_or(path2(*(struct json_object *const *)a, "metadata", "name"), "");
	const char *y = str_or(path2(*(struct json_object *const *)b, "metadata", "name"), "");
	return strcmp(x, y);
}

/* The first pod (by name) with a container stuck waiting for a bad reason,
 * and how many pods are. The message holds no counter that moves on its own
 * (no restart count, no back-off time), so a pod crash-looping on writes the
 * status once. */
static void pods_failing(struct json_object *pods, struct degraded *d)
{
	if (!json_object_is_type(pods, json_type_array))
		return;
	size_t n = json_object_array_length(pods), bad = 0;
	if (n == 0)
		return;
	struct json_object **sorted = pk_xmalloc(n * sizeof(*sorted)); /* owned here */
	for (size_t i = 0; i < n; i++)
		sorted[i] = json_object_array_get_idx(pods, i);
	qsort(sorted, n, sizeof(*sorted), pod_cmp);
	char first[1024] = "";
	const char *first_reason = NULL;
	for (size_t i = 0; i < n; i++) {
		const char *pod = str_or(path2(sorted[i], "metadata", "name"), "");
		struct json_object *st = pk_json_field(sorted[i], "status");
		const char *lists[] = {"initContainerStatuses", "containerStatuses"};
		int pod_bad = 0;
		for (size_t l = 0; l < 2 && !pod_bad; l++) {
			struct json_object *cs = pk_json_field(st, lists[l]);
			size_t ncs = json_object_is_type(cs, json_type_array)
			                 ? json_object_array_length(cs)
			                 : 0;
			for (size_t k = 0; k < ncs && !pod_bad; k++) {
				struct json_object *c = json_object_array_get_idx(cs, k);
				struct json_object *w = path2(c, "state", "waiting");
				const char *why = str_or(pk_json_field(w, "reason"), "");
				const char *cls = waiting_class(why);
				if (!cls)
					continue;
				pod_bad = 1;
				if (first_reason)
					continue;
				first_reason = cls;
				const char *cname = str_or(pk_json_field(c, "name"), "");
				const char *wmsg = str_or(pk_json_field(w, "message"), "");
				struct json_object *term = path2(c, "lastState", "terminated");
				if (strcmp(cls, "CrashLoop") == 0 && term)
					snprintf(first, sizeof(first),
					         "pod %s: container %s keeps exiting "
					         "(CrashLoopBackOff), "
					         "last with exit code %" PRId64 "%s%s",
					         pod, cname,
					         int_or(pk_json_field(term, "exitCode"), 0),
					         pk_json_field(term, "reason") ? ": " : "",
					         str_or(pk_json_field(term, "reason"), ""));
				else if (strcmp(why, "ErrImagePull") == 0 ||
				         strcmp(why, "ImagePullBackOff") == 0)
					/* The two alternate at every attempt: one message. */
					snprintf(first, sizeof(first),
					         "pod %s: container %s: image %s cannot be pulled",
					         pod, cname,
					         str_or(pk_json_field(c, "image"), "?"));
				else
					snprintf(first, sizeof(first),
					         "pod %s: container %s: %s%s%s", pod, cname, why,
					         *wmsg ? ": " : "", wmsg);
			}
		}
		bad += (size_t)pod_bad;
	}
	free(sorted);
	if (!first_reason)
		return;
	d->reason = first_reason;
	/* A long first reason is cut: it is a status message. Testing the result
	 * says so to GCC, which otherwise warns at -O0 and -Os
	 * (-Wformat-truncation). */
	if (snprintf(d->msg, sizeof(d->msg), "%zu of %zu pods failing; %s", bad, n, first) < 0)
		d->msg[0] = '\0';
}

struct json_object *pk_status_compute(struct json_object *cluster, struct json_object *sts,
                                      struct json_object *const *slices, size_t nslices,
                                      struct json_object *pods, struct json_object *events,
                                      const char *reconcile_error, const char *error_reason,
                                      const char *now_rfc3339)
{
	const char *name = str_or(path2(cluster, "metadata", "name"), NULL);
	const char *ns = str_or(path2(cluster, "metadata", "namespace"), NULL);
	if (!name || !*name || !ns || !*ns)
		return NULL;
	const char *now = now_rfc3339 ? now_rfc3339 : "";
	int64_t generation = int_or(path2(cluster, "metadata", "generation"), 0);
	/* The CRD default, should the apiserver not have applied it. */
	int64_t want = int_or(path2(cluster, "spec", "replicas"), 3);
	/* Absent right after creation (kubernetes#63019): 0. */
	int64_t ready_replicas = int_or(path2(sts, "status", "readyReplicas"), 0);
	char selector[512];
	pk_render_selector(name, selector, sizeof(selector));

	struct readiness rd;
	readiness(sts, want, ready_replicas, &rd);
	struct json_object *conds = must(json_object_new_array());
	json_object_array_add(
	    conds, condition(cluster, "Ready", rd.ready, rd.reason, rd.msg, generation, now));
	json_object_array_add(
	    conds, condition(cluster, "Progressing", !rd.ready, rd.ready ? "Stable" : "RollingOut",
	                     rd.ready ? "no rollout in progress" : rd.msg, generation, now));
	struct degraded dg = {0};
	if (!reconcile_error) {
		pods_not_created(sts, want, events, &dg);
		if (!dg.reason)
			pods_failing(pods, &dg);
	}
	if (reconcile_error)
		json_object_array_add(
		    conds, condition(cluster, "Degraded", 1,
		                     error_reason ? error_reason : "ReconcileFailed",
		                     *reconcile_error ? reconcile_error : "reconcile failed",
		                     generation, now));
	else if (dg.reason)
		json_object_array_add(
		    conds, condition(cluster, "Degraded", 1, dg.reason, dg.msg, generation, now));
	else
		json_object_array_add(conds,
		                      condition(cluster, "Degraded", 0, "ReconcileSucceeded",
		                                "the last reconcile succeeded", generation, now));

	struct json_object *status = must(json_object_new_object());
	add(status, "observedGeneration", must(json_object_new_int64(generation)));
	/* The scale subresource's statusReplicasPath: the pods that exist, as
	 * the StatefulSet controller counts them (absent or no StatefulSet: 0),
	 * not the spec's wish. */
	add(status, "replicas",
	    must(json_object_new_int64(int_or(path2(sts, "status", "replicas"), 0))));
	add(status, "readyReplicas", must(json_object_new_int64(ready_replicas)));
	add(status, "selector", must(json_object_new_string(selector)));
	add(status, "members", members(slices, nslices));
	add(status, "conditions", conds);

	struct json_object *o = must(json_object_new_object());
	struct json_object *meta = must(json_object_new_object());
	add(o, "apiVersion", must(json_object_new_string(PK_API_VERSION)));
	add(o, "kind", must(json_object_new_string(PK_KIND)));
	add(meta, "name", must(json_object_new_string(name)));
	add(meta, "namespace", must(json_object_new_string(ns)));
	add(o, "metadata", meta);
	add(o, "status", status);
	return o;
}

int pk_status_equal(struct json_object *cluster, struct json_object *computed)
{
	return pk_json_equal(pk_json_field(cluster, "status"), pk_json_field(computed, "status"));
}
