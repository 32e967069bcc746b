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
#include <stdarg.h>
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

/* ---- ClusterFormed ---- */

/* Is id the ID of the node in pod: the pod name itself, or the pod name,
 * '-' and the 7 random characters of --cluster.node-id-prefix=$(POD_NAME)-
 * (so pod web-1 never claims web-10's node web-10-abc1234)? */
static int is_node_of(const char *id, const char *pod)
{
	size_t n = strlen(pod);
	if (strncmp(id, pod, n) != 0)
		return 0;
	if (id[n] == '\0')
		return 1;
	if (id[n] != '-' || strlen(id + n + 1) != 7)
		return 0;
	for (const char *p = id + n + 1; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
			return 0;
	return 1;
}

/* Is the host of hostport ("10.0.0.5:8002", "[fd00::5]:8002") address? */
static int host_is(const char *hostport, const char *address)
{
	const char *h = hostport, *end;
	if (*h == '[') {
		h++;
		end = strchr(h, ']');
	} else {
		end = strrchr(h, ':');
	}
	size_t n = end ? (size_t)(end - h) : strlen(h);
	return n > 0 && strlen(address) == n && strncmp(h, address, n) == 0;
}

static const char *entry_id(struct json_object *e)
{
	return str_or(pk_json_field(e, "id"), "");
}

static int entry_active(struct json_object *e)
{
	return strcmp(str_or(pk_json_field(e, "status"), ""), "active") == 0;
}

/* The entry of nodes (an array) that is member m's node, or NULL: by ID
 * (is_node_of), else by the host of its admin_addr (a node without the
 * rendered prefix; the address a wildcard bind advertises is the pod IP). */
static struct json_object *entry_of(struct json_object *nodes, const struct pk_formed_member *m)
{
	size_t n = json_object_array_length(nodes);
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(nodes, i);
		if (is_node_of(entry_id(e), m->pod))
			return e;
	}
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(nodes, i);
		const char *admin = str_or(pk_json_field(e, "admin_addr"), NULL);
		if (admin && m->address && host_is(admin, m->address))
			return e;
	}
	return NULL;
}

/* Does nodes (a member's answer) list member m active? By the ID m reports
 * for itself when known (a node restarted under the same pod is another
 * node: its old ID does not count), else as entry_of matches. */
static int sees(struct json_object *nodes, const struct pk_formed_member *m)
{
	if (!m->node_id) {
		struct json_object *e = entry_of(nodes, m);
		return e && entry_active(e);
	}
	for (size_t i = 0; i < json_object_array_length(nodes); i++) {
		struct json_object *e = json_object_array_get_idx(nodes, i);
		if (strcmp(entry_id(e), m->node_id) == 0 && entry_active(e))
			return 1;
	}
	return 0;
}

/* The report read from member m (same pod and address), or NULL. */
static const struct pk_node_report *report_of(const struct pk_node_report *r, size_t nr,
                                              const struct pk_formed_member *m)
{
	for (size_t i = 0; i < nr; i++)
		if (r[i].pod && r[i].address && strcmp(r[i].pod, m->pod) == 0 && m->address &&
		    strcmp(r[i].address, m->address) == 0)
			return &r[i];
	return NULL;
}

/* The answer in a report, when it was read and is a list. */
static struct json_object *answer(const struct pk_node_report *rep)
{
	return rep && !rep->error && json_object_is_type(rep->nodes, json_type_array) ? rep->nodes
	                                                                              : NULL;
}

/* Append ", " (after the first) and the formatted text to msg. */
static void append(char *msg, size_t msglen, size_t *count, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *msg, size_t msglen, size_t *count, const char *fmt, ...)
{
	size_t used = strlen(msg);
	if (used + 1 >= msglen)
		return;
	if ((*count)++ > 0)
		used += (size_t)snprintf(msg + used, msglen - used, ", ");
	if (used + 1 >= msglen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg + used, msglen - used, fmt, ap);
	va_end(ap);
}

int pk_status_formed(struct pk_formed_member *m, size_t n, const struct pk_node_report *r,
                     size_t nr, const char **reason, char *msg, size_t msglen)
{
	const struct pk_node_report **rep = NULL; /* owned here */
	if (n)
		rep = pk_xmalloc(n * sizeof(*rep));
	size_t nready = 0, unread = 0;
	for (size_t i = 0; i < n; i++) {
		rep[i] = report_of(r, nr, &m[i]);
		m[i].node_id = NULL;
		m[i].link = "unknown";
		m[i].upstreams = -1;
		struct json_object *nodes = answer(rep[i]);
		if (m[i].ready) {
			nready++;
			unread += !nodes;
		}
		if (!nodes || json_object_array_length(nodes) == 0)
			continue;
		/* Its own entry; a node lists itself first. */
		struct json_object *self = entry_of(nodes, &m[i]);
		if (!self)
			self = json_object_array_get_idx(nodes, 0);
		m[i].node_id = *entry_id(self) ? entry_id(self) : NULL;
		struct json_object *up = pk_json_field(self, "upstreams");
		if (json_object_is_type(up, json_type_int))
			m[i].upstreams = json_object_get_int64(up);
	}
	/* How the other ready members see each member. */
	for (size_t i = 0; i < n; i++) {
		size_t others = 0, seen = 0, missing = 0;
		for (size_t j = 0; j < n; j++) {
			if (j == i || !m[j].ready)
				continue;
			others++;
			struct json_object *nodes = answer(rep[j]);
			if (!nodes)
				continue;
			if (sees(nodes, &m[i]))
				seen++;
			else
				missing++;
		}
		if (others == 0)
			m[i].link = m[i].ready && answer(rep[i]) ? "active" : "unknown";
		else if (seen == others)
			m[i].link = "active";
		else if (seen > 0)
			m[i].link = "partial";
		else if (missing > 0)
			m[i].link = "none";
	}

	msg[0] = '\0';
	size_t count = 0;
	int formed = 0;
	if (nready == 0) {
		*reason = "NoReadyMembers";
		snprintf(msg, msglen, "none of %zu members is ready", n);
	} else if (unread > 0) {
		/* Nothing can be said of the links a node would report: which
		 * one, and why (a transport error or an HTTP status, no times). */
		*reason = "StatusUnavailable";
		snprintf(msg, msglen,
		         "cannot read /status/cluster/nodes of %zu of %zu ready members: ", unread,
		         nready);
		for (size_t i = 0; i < n; i++)
			if (m[i].ready && !answer(rep[i]))
				append(msg, msglen, &count, "%s (%s)", m[i].pod,
				       !rep[i]         ? "not read yet"
				       : rep[i]->error ? rep[i]->error
				                       : "not a node list");
	} else {
		size_t links = 0, bad = 0;
		for (size_t i = 0; i < n; i++)
			for (size_t j = 0; j < n && m[i].ready; j++)
				if (j != i && m[j].ready) {
					links++;
					bad += !sees(rep[i]->nodes, &m[j]);
				}
		if (bad == 0) {
			formed = 1;
			*reason = "Formed";
			if (nready == 1)
				snprintf(msg, msglen, "the only ready member answered");
			else
				snprintf(msg, msglen,
				         "each of the %zu ready members lists every other active",
				         nready);
		} else {
			*reason = "NotFormed";
			snprintf(msg, msglen, "%zu of %zu links missing: ", bad, links);
			for (size_t i = 0; i < n; i++)
				for (size_t j = 0; j < n && m[i].ready; j++)
					if (j != i && m[j].ready && !sees(rep[i]->nodes, &m[j]))
						append(msg, msglen, &count,
						       "%s does not list %s active", m[i].pod,
						       m[j].pod);
		}
	}
	free(rep);
	return formed;
}

/* A copy of the PikoCluster's current ClusterFormed condition, at this
 * generation, or NULL. */
static struct json_object *kept_formed(struct json_object *cluster, int64_t generation)
{
	struct json_object *cur = current_condition(cluster, "ClusterFormed");
	const char *st = str_or(pk_json_field(cur, "status"), NULL);
	const char *ltt = str_or(pk_json_field(cur, "lastTransitionTime"), NULL);
	const char *reason = str_or(pk_json_field(cur, "reason"), NULL);
	if (!st || !ltt || !reason)
		return NULL;
	struct json_object *c = must(json_object_new_object());
	add(c, "type", must(json_object_new_string("ClusterFormed")));
	add(c, "status", must(json_object_new_string(st)));
	add(c, "observedGeneration", must(json_object_new_int64(generation)));
	add(c, "lastTransitionTime", must(json_object_new_string(ltt)));
	add(c, "reason", must(json_object_new_string(reason)));
	add(c, "message", message(str_or(pk_json_field(cur, "message"), "")));
	return c;
}

/* The member fields from the reads, kept from the current status: the
 * entry of cluster's status.members with o's pod and address. */
static void keep_member_fields(struct json_object *cluster, struct json_object *o)
{
	struct json_object *cur = path2(cluster, "status", "members");
	const char *pod = str_or(pk_json_field(o, "pod"), "");
	const char *addr = str_or(pk_json_field(o, "address"), "");
	size_t n = json_object_is_type(cur, json_type_array) ? json_object_array_length(cur) : 0;
	for (size_t i = 0; i < n; i++) {
		struct json_object *c = json_object_array_get_idx(cur, i);
		if (strcmp(str_or(pk_json_field(c, "pod"), ""), pod) != 0 ||
		    strcmp(str_or(pk_json_field(c, "address"), ""), addr) != 0)
			continue;
		static const char *const keys[] = {"nodeId", "link", "upstreams"};
		for (size_t k = 0; k < 3; k++) {
			struct json_object *v = pk_json_field(c, keys[k]);
			if (v)
				add(o, keys[k], json_object_get(v));
		}
		return;
	}
}

void pk_status_add_formed(struct json_object *computed, struct json_object *cluster,
                          const struct pk_node_report *r, size_t nr, int known,
                          const char *now_rfc3339)
{
	struct json_object *status = pk_json_field(computed, "status");
	struct json_object *conds = pk_json_field(status, "conditions");
	struct json_object *mems = pk_json_field(status, "members");
	if (!json_object_is_type(conds, json_type_array) ||
	    !json_object_is_type(mems, json_type_array))
		return;
	int64_t generation = int_or(path2(cluster, "metadata", "generation"), 0);
	size_t n = json_object_array_length(mems);
	size_t nready = 0;
	for (size_t i = 0; i < n; i++)
		nready +=
		    (size_t)bool_or(pk_json_field(json_object_array_get_idx(mems, i), "ready"), 0);
	/* Without a ready member there is nothing to read: known anyway. */
	if (!known && nready > 0) {
		struct json_object *c = kept_formed(cluster, generation);
		if (c) {
			for (size_t i = 0; i < n; i++)
				keep_member_fields(cluster, json_object_array_get_idx(mems, i));
			json_object_array_add(conds, c);
			return;
		}
	}
	struct pk_formed_member *m = n ? pk_xmalloc(n * sizeof(*m)) : NULL; /* owned here */
	for (size_t i = 0; i < n; i++) {
		struct json_object *o = json_object_array_get_idx(mems, i);
		m[i].pod = str_or(pk_json_field(o, "pod"), "");
		m[i].address = str_or(pk_json_field(o, "address"), "");
		m[i].ready = bool_or(pk_json_field(o, "ready"), 0);
	}
	const char *reason;
	char msg[2048];
	int formed = pk_status_formed(m, n, r, nr, &reason, msg, sizeof(msg));
	/* The strings in m are borrowed from mems and the reports: add the
	 * fields after the computation, copying them. */
	for (size_t i = 0; i < n; i++) {
		struct json_object *o = json_object_array_get_idx(mems, i);
		if (m[i].node_id)
			add(o, "nodeId", must(json_object_new_string(m[i].node_id)));
		add(o, "link", must(json_object_new_string(m[i].link)));
		if (m[i].upstreams >= 0)
			add(o, "upstreams", must(json_object_new_int64(m[i].upstreams)));
	}
	free(m);
	json_object_array_add(conds, condition(cluster, "ClusterFormed", formed, reason, msg,
	                                       generation, now_rfc3339 ? now_rfc3339 : ""));
}

int pk_status_equal(struct json_object *cluster, struct json_object *computed)
{
	return pk_json_equal(pk_json_field(cluster, "status"), pk_json_field(computed, "status"));
}
