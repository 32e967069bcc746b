/*
 * One reconcile of a PikoCluster. See reconcile.h.
 */
#include "reconcile.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "backoff.h"
#include "buf.h"
#include "cluster_key.h"
#include "controller.h"
#include "jsonutil.h"
#include "log.h"
#include "peers.h"
#include "render.h"
#include "status.h"
#include "strbuf.h"

#define APPLY_TYPE "application/apply-patch+yaml"
/* A cluster that is not Ready is reconciled again this often: what makes it
 * Degraded (a pod refused, a container crash-looping) changes no object the
 * controller watches. */
#define NOT_READY_REQUEUE_MS 15000

enum child { CH_CONFIGMAP, CH_PEERS_SVC, CH_CLIENT_SVC, CH_STS, CH_PDB, CH_COUNT };
/* Request slots of a job: one per child, then the status write, the two
 * reads that explain missing or failing pods, the cluster key's Secret
 * (read, or created) and the generated upstream key's (the same). */
enum { SLOT_STATUS = CH_COUNT, SLOT_PODS, SLOT_EVENTS, SLOT_KEY, SLOT_UKEY, NSLOTS };

/* Degraded's reasons when the cluster key cannot be had: the Secret (or its
 * key) is not there, or holds what no node would load. */
#define REASON_KEY_MISSING "KeySecretMissing"
#define REASON_KEY_INVALID "KeySecretInvalid"

/* Where the key step of a job is. */
enum key_phase { KEY_GET, KEY_CREATE, KEY_REGET };

static const struct {
	const char *kind;
	const char *collection; /* printf: namespace */
	enum pk_informer_idx inf;
} children[CH_COUNT] = {
    [CH_CONFIGMAP] = {"ConfigMap", "/api/v1/namespaces/%s/configmaps", PK_INF_CONFIGMAPS},
    [CH_PEERS_SVC] = {"Service", "/api/v1/namespaces/%s/services", PK_INF_SERVICES},
    [CH_CLIENT_SVC] = {"Service", "/api/v1/namespaces/%s/services", PK_INF_SERVICES},
    [CH_STS] = {"StatefulSet", "/apis/apps/v1/namespaces/%s/statefulsets", PK_INF_STATEFULSETS},
    [CH_PDB] = {"PodDisruptionBudget", "/apis/policy/v1/namespaces/%s/poddisruptionbudgets",
                PK_INF_PDBS},
};

struct job;

/* One request of a job: which child, and whether it created it. */
struct call {
	struct job *job;
	enum child ch;
	bool created;
	bool is_delete;
	bool is_status;
	bool is_diag; /* the pods or events read (SLOT_PODS, SLOT_EVENTS) */
	bool is_key;  /* the cluster key's Secret (SLOT_KEY) */
	bool is_ukey; /* the generated upstream key's Secret (SLOT_UKEY) */
	char name[256];
};

struct job {
	struct pk_reconciler *r;
	char key[512];
	char ns[256], name[256];
	struct json_object *cluster; /* owned reference */
	uint64_t start_ms;
	int pending;
	bool diag_sent, status_sent;
	bool not_ready;                /* the status computed says Ready is not True */
	struct json_object *sts_fresh; /* owned: the StatefulSet as our apply returned it */
	struct json_object *pods;      /* owned: the cluster's Pods (items), or NULL */
	struct json_object *events;    /* owned: the StatefulSet's FailedCreate Events, or NULL */
	char err[512];
	/* Degraded's reason for err when it is not ReconcileFailed (a static
	 * string); such a reconcile is retried every NOT_READY_REQUEUE_MS, not
	 * with the error backoff: what it waits for (a user's Secret) is
	 * nothing the controller watches. */
	const char *err_reason;
	struct pk_render rd; /* owned: rendered at the start, applied once the key is known */
	enum key_phase key_phase;
	char *new_key; /* owned: the key of the Secret being created (cleansed on free) */
	size_t new_key_len;
	/* spec.auth.upstream.generate: the same steps for NAME-upstream-key,
	 * after the cluster key's (ukey_started), before the applies;
	 * have_ckey is what the cluster key step found. */
	bool ukey_started, have_ckey;
	enum key_phase ukey_phase;
	char *new_ukey; /* owned, cleansed on free */
	size_t new_ukey_len;
	struct call calls[NSLOTS];
	struct pk_kube_req *reqs[NSLOTS];
	struct job *next;
};

/* The cluster key of a PikoCluster, as this leader last read (or created)
 * it: what its pushes are signed with, and what re-creates a deleted
 * NAME-cluster-key so the running nodes keep theirs. */
struct ckey {
	char cluster[512]; /* "ns/name" */
	char *key;         /* owned: key_len bytes and a NUL, cleansed on free */
	size_t key_len;
	bool generated; /* from NAME-cluster-key, not a user's Secret */
	struct ckey *next;
};

struct pk_reconciler {
	struct pk_ctrl *c;
	struct job *jobs; /* owned */
	size_t njobs;
	struct ckey *keys;  /* owned */
	struct ckey *ukeys; /* owned: the generated upstream keys (NAME-upstream-key) */
	/* "ns/name" -> the last error reported as an Event: a failing cluster
	 * is retried with backoff, and one Warning per distinct error is enough
	 * (an Event per retry would flood etcd). Owned. */
	struct json_object *last_err;
};

struct pk_reconciler *pk_reconciler_new(struct pk_ctrl *c)
{
	struct pk_reconciler *r = calloc(1, sizeof(*r)); /* owner: the caller */
	if (!r)
		return NULL;
	r->c = c;
	r->last_err = json_object_new_object();
	if (!r->last_err) {
		free(r);
		return NULL;
	}
	return r;
}

static void key_free(char *key, size_t len)
{
	if (key)
		OPENSSL_cleanse(key, len);
	free(key);
}

/* The key of a Secret about to be created (NAME-cluster-key,
 * NAME-upstream-key): `reuse`'s, the one the running nodes hold when this
 * controller made (or read) it before, else 256 new random bits as 64 hex
 * digits (the pods then roll to it through the key hash). NULL: no
 * randomness. Owner: the caller (key_free). */
static char *key_to_create(const struct ckey *reuse, size_t *len)
{
	size_t n = reuse ? reuse->key_len : PK_CLUSTER_KEY_HEX;
	char *k = pk_xmalloc(n + 1);
	if (reuse) {
		memcpy(k, reuse->key, n + 1);
	} else if (pk_cluster_key_generate(k) != 0) {
		key_free(k, n + 1);
		return NULL;
	}
	*len = n;
	return k;
}

static struct ckey *key_find(struct ckey *list, const char *cluster)
{
	for (struct ckey *k = list; k; k = k->next)
		if (!strcmp(k->cluster, cluster))
			return k;
	return NULL;
}

/* Remember key (copied) as cluster's in *list (r->keys or r->ukeys). */
static void key_set(struct ckey **list, const char *cluster, const char *key, size_t len,
                    bool generated)
{
	struct ckey *k = key_find(*list, cluster);
	if (!k) {
		k = pk_xmalloc(sizeof(*k)); /* owner: *list */
		memset(k, 0, sizeof(*k));
		snprintf(k->cluster, sizeof(k->cluster), "%s", cluster);
		k->next = *list;
		*list = k;
	} else if (k->key_len == len && !memcmp(k->key, key, len)) {
		k->generated = generated;
		return;
	}
	key_free(k->key, k->key_len);
	k->key = pk_xmalloc(len + 1);
	memcpy(k->key, key, len);
	k->key[len] = '\0';
	k->key_len = len;
	k->generated = generated;
}

static void key_forget(struct ckey **list, const char *cluster)
{
	for (struct ckey **pp = list; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->cluster, cluster)) {
			struct ckey *k = *pp;
			*pp = k->next;
			key_free(k->key, k->key_len);
			free(k);
			return;
		}
}

const char *pk_reconciler_cluster_key(const struct pk_reconciler *r, const char *cluster,
                                      size_t *len)
{
	const struct ckey *k = r ? key_find(r->keys, cluster) : NULL;
	*len = k ? k->key_len : 0;
	return k ? k->key : NULL;
}

static void job_free(struct job *j)
{
	for (size_t i = 0; i < NSLOTS; i++)
		pk_kube_cancel(j->reqs[i]);
	pk_render_free(&j->rd);
	key_free(j->new_key, j->new_key_len);
	key_free(j->new_ukey, j->new_ukey_len);
	json_object_put(j->cluster);
	json_object_put(j->sts_fresh);
	json_object_put(j->pods);
	json_object_put(j->events);
	free(j);
}

void pk_reconciler_free(struct pk_reconciler *r)
{
	if (!r)
		return;
	while (r->jobs) {
		struct job *j = r->jobs;
		r->jobs = j->next;
		job_free(j);
	}
	struct ckey **lists[] = {&r->keys, &r->ukeys};
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		while (*lists[i]) {
			struct ckey *k = *lists[i];
			*lists[i] = k->next;
			key_free(k->key, k->key_len);
			free(k);
		}
	json_object_put(r->last_err);
	free(r);
}

size_t pk_reconcile_running(const struct pk_reconciler *r)
{
	return r->njobs;
}

static void set_err(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(struct job *j, const char *fmt, ...)
{
	if (j->err[0])
		return; /* the first error is the one worth reporting */
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(j->err, sizeof(j->err), fmt, ap);
	va_end(ap);
}

/* The message of a Kubernetes Status body, or the body itself, shortened. */
static void status_message(const char *body, char *out, size_t len)
{
	struct json_object *st = json_tokener_parse(body ? body : "");
	const char *m = st ? pk_object_str(st, "message") : NULL;
	snprintf(out, len, "%s", m ? m : (body && *body ? body : "no response"));
	json_object_put(st);
}

static void job_end(struct job *j)
{
	struct pk_reconciler *r = j->r;
	struct pk_ctrl *c = r->c;
	for (struct job **pp = &r->jobs; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	r->njobs--;
	uint64_t now = pk_now_ms();
	const char *lv[] = {"pikocluster", j->err[0] ? "error" : "success"};
	pk_metric_add(c->m_reconcile_total, lv, 1);
	pk_metric_observe(c->m_reconcile_time, lv, (double)(now - j->start_ms) / 1000.0);
	if (j->err[0]) {
		pk_metric_add(c->m_reconcile_errors, lv, 1);
		pk_log(PK_LOG_WARN, "reconcile", "reconcile failed", "cluster", j->key, "error",
		       j->err, "reason", j->err_reason ? j->err_reason : "ReconcileFailed", NULL);
		struct json_object *last;
		if (j->cluster && (!json_object_object_get_ex(r->last_err, j->key, &last) ||
		                   strcmp(json_object_get_string(last), j->err) != 0)) {
			pk_ctrl_event(c, j->cluster, "Warning",
			              j->err_reason ? j->err_reason : "ReconcileFailed",
			              "Reconcile", j->err);
			json_object_object_add(r->last_err, j->key, json_object_new_string(j->err));
		}
		pk_wq_done(c->wq, j->key, now);
		if (j->err_reason) {
			/* Waiting for the user (a Secret to create or fix), which
			 * no watch reports: look again soon, never back off to
			 * minutes. */
			pk_wq_forget(c->wq, j->key);
			pk_wq_add_after(c->wq, j->key, NOT_READY_REQUEUE_MS, now);
		} else {
			pk_wq_add_rate_limited(c->wq, j->key, now);
		}
	} else {
		pk_wq_done(c->wq, j->key, now);
		pk_wq_forget(c->wq, j->key);
		json_object_object_del(r->last_err, j->key);
		if (j->cluster && j->not_ready)
			pk_wq_add_after(c->wq, j->key, NOT_READY_REQUEUE_MS, now);
	}
	j->next = NULL;
	job_free(j);
}

static void call_done(void *ud, long status, const char *body, size_t len, const char *err);

static bool send(struct job *j, size_t slot, const char *method, const char *path,
                 const char *ctype, const char *body)
{
	struct pk_ctrl *c = j->r->c;
	j->reqs[slot] = pk_kube_request(c->kube, method, path, ctype, body, body ? strlen(body) : 0,
	                                call_done, &j->calls[slot]);
	if (!j->reqs[slot]) {
		set_err(j, "too many requests in flight");
		return false;
	}
	j->pending++;
	return true;
}

/* The status of obj's Ready condition ("True", "False", ...) or NULL. */
static const char *ready_status(struct json_object *obj)
{
	struct json_object *conds;
	if (!json_object_object_get_ex(json_object_object_get(obj, "status"), "conditions",
	                               &conds) ||
	    !json_object_is_type(conds, json_type_array))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(conds); i++) {
		struct json_object *cd = json_object_array_get_idx(conds, i);
		const char *t = pk_object_str(cd, "type");
		if (t && !strcmp(t, "Ready"))
			return pk_object_str(cd, "status");
	}
	return NULL;
}

/* After every apply returned: compute the status and write it if it
 * differs. Returns true when a request was sent. */
static bool write_status(struct job *j)
{
	struct pk_ctrl *c = j->r->c;
	struct json_object *sts = j->sts_fresh;
	if (!sts)
		sts = pk_informer_get(c->inf[PK_INF_STATEFULSETS], j->ns, j->name);

	/* The headless Service's EndpointSlices, from the cache. */
	struct json_object *slices[64];
	size_t nslices = 0;
	json_object_object_foreach(pk_informer_cache(c->inf[PK_INF_SLICES]), k, s)
	{
		(void)k;
		if (nslices < 64 && pk_slice_of(s, j->ns, j->name))
			slices[nslices++] = s;
	}
	char now[40];
	pk_ctrl_now_rfc3339(now, sizeof(now));
	struct json_object *st =
	    pk_status_compute(j->cluster, sts, slices, nslices, j->pods, j->events,
	                      j->err[0] ? j->err : NULL, j->err[0] ? j->err_reason : NULL, now);
	if (!st)
		return false;
	/* ClusterFormed and the members' links, from the nodes' own status as
	 * peers.c last read it. */
	struct pk_node_report *reports =
	    pk_xmalloc(PK_STATUS_MAX_MEMBERS * sizeof(*reports)); /* owned here */
	bool known;
	size_t nreports =
	    pk_peers_reports(c->peers, j->key, reports, PK_STATUS_MAX_MEMBERS, &known);
	pk_status_add_formed(st, j->cluster, reports, nreports, known, now);
	free(reports);
	const char *ready = ready_status(st);
	j->not_ready = !ready || strcmp(ready, "True") != 0;
	bool sent = false;
	if (!pk_status_equal(j->cluster, st)) {
		char path[700];
		snprintf(
		    path, sizeof(path),
		    "/apis/piko.dev/v1alpha1/namespaces/%s/pikoclusters/%s/status?fieldManager=%s"
		    "&force=true",
		    j->ns, j->name, PK_FIELD_MANAGER);
		j->calls[SLOT_STATUS].is_status = true;
		sent = send(j, SLOT_STATUS, "PATCH", path, APPLY_TYPE,
		            json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN |
		                                                   JSON_C_TO_STRING_NOSLASHESCAPE));
		if (sent) {
			/* An Event when Ready flips, so `kubectl describe` tells the
			 * story of the cluster. */
			const char *was = ready_status(j->cluster), *is = ready_status(st);
			if (is && !strcmp(is, "True") && (!was || strcmp(was, "True")))
				pk_ctrl_event(c, j->cluster, "Normal", "ClusterReady", "Reconcile",
				              "all nodes are ready and up to date");
		}
	}
	json_object_put(st);
	return sent;
}

/* The StatefulSet (as our apply returned it, else cached) lacks pods or
 * ready pods: worth asking why. */
static struct json_object *current_sts(struct job *j)
{
	return j->sts_fresh ? j->sts_fresh
	                    : pk_informer_get(j->r->c->inf[PK_INF_STATEFULSETS], j->ns, j->name);
}

static bool pods_short(struct job *j)
{
	struct json_object *sts = current_sts(j);
	if (!sts)
		return false;
	int64_t want = 3, ready = 0, have = 0;
	struct json_object *v;
	if ((v = pk_json_field(pk_json_field(j->cluster, "spec"), "replicas")) &&
	    json_object_is_type(v, json_type_int))
		want = json_object_get_int64(v);
	struct json_object *st = pk_json_field(sts, "status");
	if ((v = pk_json_field(st, "readyReplicas")) && json_object_is_type(v, json_type_int))
		ready = json_object_get_int64(v);
	if ((v = pk_json_field(st, "replicas")) && json_object_is_type(v, json_type_int))
		have = json_object_get_int64(v);
	return ready < want || have < want;
}

/* While pods are missing or not ready: read the cluster's pods (label
 * selector) and the StatefulSet's FailedCreate Events (field selector), two
 * namespaced LISTs the status turns into Degraded's reason. Nothing is
 * watched for it: a watch of every pod and every Event in the cluster would
 * cost memory and traffic for what matters only while something is wrong,
 * and a requeue (NOT_READY_REQUEUE_MS) catches a change anyway. Returns true
 * when a request was sent. */
static bool send_diag(struct job *j)
{
	if (!pods_short(j))
		return false;
	char path[900];
	j->calls[SLOT_PODS].is_diag = true;
	snprintf(j->calls[SLOT_PODS].name, sizeof(j->calls[SLOT_PODS].name), "pods");
	snprintf(path, sizeof(path),
	         "/api/v1/namespaces/%s/pods?labelSelector=app.kubernetes.io%%2Fname%%3Dpiko%%2C"
	         "app.kubernetes.io%%2Finstance%%3D%s&limit=256",
	         j->ns, j->name);
	bool sent = send(j, SLOT_PODS, "GET", path, NULL, NULL);
	j->calls[SLOT_EVENTS].is_diag = true;
	snprintf(j->calls[SLOT_EVENTS].name, sizeof(j->calls[SLOT_EVENTS].name), "events");
	snprintf(path, sizeof(path),
	         "/api/v1/namespaces/%s/events?fieldSelector=involvedObject.kind%%3DStatefulSet%%2C"
	         "involvedObject.name%%3D%s%%2Creason%%3DFailedCreate&limit=64",
	         j->ns, j->name);
	sent = send(j, SLOT_EVENTS, "GET", path, NULL, NULL) || sent;
	return sent;
}

/* Nothing is pending: the next phase (the reads behind Degraded, then the
 * status), or the end. */
static void advance(struct job *j)
{
	if (!j->diag_sent) {
		j->diag_sent = true;
		/* A failed apply is the reason already. */
		if (!j->err[0] && send_diag(j))
			return;
	}
	if (!j->status_sent) {
		j->status_sent = true;
		if (write_status(j))
			return;
	}
	job_end(j);
}

static void key_done(struct job *j, long status, const char *body, const char *err);
static void ukey_done(struct job *j, long status, const char *body, const char *err);

static void call_done(void *ud, long status, const char *body, size_t len, const char *err)
{
	struct call *call = ud;
	struct job *j = call->job;
	struct pk_ctrl *c = j->r->c;
	(void)len;
	size_t slot = (size_t)(call - j->calls);
	j->reqs[slot] = NULL;
	j->pending--;
	if (call->is_key) {
		key_done(j, status, body, err);
		return;
	}
	if (call->is_ukey) {
		ukey_done(j, status, body, err);
		return;
	}
	const char *what = call->is_status || call->is_diag ? "status" : children[call->ch].kind;
	bool ok = status >= 200 && status < 300;
	if (call->is_delete && status == 404)
		ok = true; /* already gone: what we wanted */
	if (call->is_status && status == 404)
		/* The PikoCluster was deleted while we reconciled it: no status
		 * to write and nothing failed (the garbage collector removes
		 * what the applies just wrote). A Warning Event and a retry
		 * with backoff would report an error that is not one. */
		ok = true;
	if (!ok) {
		char msg[300];
		if (status == 0)
			snprintf(msg, sizeof(msg), "%s", err ? err : "no response");
		else
			status_message(body, msg, sizeof(msg));
		if (call->is_diag)
			set_err(j, "list %s: %ld: %s", call->name, status, msg);
		else
			set_err(j, "%s %s %s: %ld: %s", call->is_delete ? "delete" : "apply", what,
			        call->name, status, msg);
	} else if (call->is_diag) {
		struct json_object *list = json_tokener_parse(body), *items = NULL;
		if (json_object_object_get_ex(list, "items", &items))
			json_object_get(items);
		json_object_put(list);
		if (slot == SLOT_PODS)
			j->pods = items; /* owner: j */
		else
			j->events = items;
	} else if (!call->is_status) {
		char note[400];
		if (call->is_delete) {
			snprintf(note, sizeof(note), "deleted %s %s", what, call->name);
			pk_ctrl_event(c, j->cluster, "Normal", "Deleted", "Delete", note);
		} else {
			snprintf(note, sizeof(note), "%s %s %s",
			         call->created ? "created" : "updated", what, call->name);
			pk_ctrl_event(c, j->cluster, "Normal",
			              call->created ? "Created" : "Updated", "Apply", note);
			pk_log(PK_LOG_INFO, "reconcile", call->created ? "created" : "updated",
			       "cluster", j->key, "kind", what, "name", call->name, NULL);
		}
		if (call->ch == CH_STS && !call->is_delete) {
			json_object_put(j->sts_fresh);
			j->sts_fresh = json_tokener_parse(body); /* owner: j */
		}
	}
	if (j->pending > 0)
		return;
	advance(j);
}

static void ukey_request(struct job *j, enum key_phase phase);

/* Apply each child that differs from its live copy; the StatefulSet only
 * when the key is known (have_key: pk_render_set_key was called) and, with
 * spec.auth.upstream.generate, the upstream key too: that step runs first,
 * from here, and calls back with both known or not. */
static void apply_children(struct job *j, bool have_key)
{
	struct pk_ctrl *c = j->r->c;
	if (j->rd.upstream_secret && !j->ukey_started) {
		j->ukey_started = true;
		j->have_ckey = have_key;
		ukey_request(j, KEY_GET);
		if (j->pending)
			return;
		set_err(j, "get Secret %s: too many requests in flight",
		        j->rd.upstream_secret_name);
		have_key = false;
	}
	struct json_object *desired[CH_COUNT] = {j->rd.configmap, j->rd.peers_svc, j->rd.client_svc,
	                                         j->rd.sts, j->rd.pdb};
	for (int ch = 0; ch < CH_COUNT; ch++) {
		struct call *call = &j->calls[ch];
		call->ch = (enum child)ch;
		char coll[400], path[800];
		snprintf(coll, sizeof(coll), children[ch].collection, j->ns);
		if (!desired[ch]) {
			/* Only the PDB is optional: delete ours if one is left over. */
			snprintf(call->name, sizeof(call->name), "%s", j->name);
			struct json_object *live =
			    pk_informer_get(c->inf[children[ch].inf], j->ns, call->name);
			if (!live)
				continue;
			const char *uid = pk_object_str(j->cluster, "metadata.uid");
			struct json_object *refs;
			bool ours = false;
			if (json_object_object_get_ex(json_object_object_get(live, "metadata"),
			                              "ownerReferences", &refs))
				for (size_t i = 0; i < json_object_array_length(refs); i++) {
					const char *u = pk_object_str(
					    json_object_array_get_idx(refs, i), "uid");
					ours = ours || (u && uid && !strcmp(u, uid));
				}
			if (!ours)
				continue;
			call->is_delete = true;
			snprintf(path, sizeof(path), "%s/%s", coll, call->name);
			send(j, (size_t)ch, "DELETE", path, NULL, NULL);
			continue;
		}
		if (ch == CH_STS && !have_key)
			continue; /* without the key's hash it would roll the pods */
		const char *name = pk_object_str(desired[ch], "metadata.name");
		snprintf(call->name, sizeof(call->name), "%s", name ? name : "");
		struct json_object *live =
		    pk_informer_get(c->inf[children[ch].inf], j->ns, call->name);
		if (live && pk_json_subset(desired[ch], live))
			continue; /* it already holds everything we would send: no write */
		call->created = live == NULL;
		snprintf(path, sizeof(path), "%s/%s?fieldManager=%s&force=true", coll, call->name,
		         PK_FIELD_MANAGER);
		const char *lv[] = {children[ch].kind};
		pk_metric_add(c->m_applies, lv, 1);
		send(j, (size_t)ch, "PATCH", path, APPLY_TYPE,
		     json_object_to_json_string_ext(
		         desired[ch], JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	}
	if (j->pending == 0)
		advance(j);
}

/* GET the key's Secret (KEY_GET, KEY_REGET) or create NAME-cluster-key with
 * j->new_key (KEY_CREATE). */
static void key_request(struct job *j, enum key_phase phase)
{
	char path[800];
	j->key_phase = phase;
	j->calls[SLOT_KEY].is_key = true;
	snprintf(j->calls[SLOT_KEY].name, sizeof(j->calls[SLOT_KEY].name), "%s",
	         j->rd.key_secret_name);
	if (phase == KEY_CREATE) {
		snprintf(path, sizeof(path), "/api/v1/namespaces/%s/secrets?fieldManager=%s", j->ns,
		         PK_FIELD_MANAGER);
		/* Created, never applied: a POST fails on an existing Secret
		 * (409) instead of overwriting the key in it. */
		send(j, SLOT_KEY, "POST", path, "application/json",
		     json_object_to_json_string_ext(j->rd.key_secret,
		                                    JSON_C_TO_STRING_PLAIN |
		                                        JSON_C_TO_STRING_NOSLASHESCAPE));
		return;
	}
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/secrets/%s", j->ns,
	         j->rd.key_secret_name);
	send(j, SLOT_KEY, "GET", path, NULL, NULL);
}

/* The key in a Secret's body: data[key_secret_key], decoded and trimmed as
 * a node trims its key file. Returns the key (owned by the caller, cleansed
 * by key_free) or NULL with reason and why set. */
static char *key_of_secret(struct job *j, const char *body, size_t *len, const char **reason,
                           char *why, size_t whylen)
{
	struct json_object *sec = json_tokener_parse(body ? body : "");
	struct json_object *v = pk_json_field(pk_json_field(sec, "data"), j->rd.key_secret_key);
	char *key = NULL;
	*len = 0;
	*reason = REASON_KEY_MISSING;
	if (!v || !json_object_is_type(v, json_type_string)) {
		snprintf(why, whylen, "Secret %s has no key \"%s\"", j->rd.key_secret_name,
		         j->rd.key_secret_key);
	} else if (!(key = pk_base64_decode(json_object_get_string(v), len))) {
		*reason = REASON_KEY_INVALID;
		snprintf(why, whylen, "Secret %s: key \"%s\" is not base64", j->rd.key_secret_name,
		         j->rd.key_secret_key);
	} else {
		const char *bad;
		size_t n = pk_cluster_key_trim(key, *len, &bad);
		if (!n) {
			*reason = *len ? REASON_KEY_INVALID : REASON_KEY_MISSING;
			snprintf(why, whylen, "Secret %s: key \"%s\" %s", j->rd.key_secret_name,
			         j->rd.key_secret_key, bad);
			key_free(key, *len);
			key = NULL;
			*len = 0;
		} else {
			*len = n;
		}
	}
	/* The parsed Secret holds the key too: json-c frees it without
	 * clearing, as it does every response body; the key's own copies are
	 * cleansed. */
	json_object_put(sec);
	return key;
}

/* The key step's answer: use the Secret's key, create the Secret, or say
 * why there is no key; then apply the children. */
static void key_done(struct job *j, long status, const char *body, const char *err)
{
	struct pk_reconciler *r = j->r;
	struct pk_ctrl *c = r->c;
	const char *sname = j->rd.key_secret_name;
	struct ckey *mem = key_find(r->keys, j->key);
	char msg[300];
	if (status == 0)
		snprintf(msg, sizeof(msg), "%s", err ? err : "no response");
	else
		status_message(body, msg, sizeof(msg));

	if (j->key_phase == KEY_CREATE) {
		if (status >= 200 && status < 300) {
			char note[400];
			bool again = mem && mem->generated;
			key_set(&r->keys, j->key, j->new_key, j->new_key_len, true);
			snprintf(note, sizeof(note), "%s Secret %s%s",
			         again ? "re-created" : "created", sname,
			         again ? " with the key the nodes hold"
			               : " with a new cluster key");
			pk_ctrl_event(c, j->cluster, "Normal", "Created", "Create", note);
			pk_log(PK_LOG_INFO, "reconcile", again ? "re-created" : "created",
			       "cluster", j->key, "kind", "Secret", "name", sname, NULL);
			pk_render_set_key(&j->rd, j->new_key, j->new_key_len);
			apply_children(j, true);
			return;
		}
		if (status == 409) {
			/* Someone (a previous leader) created it meanwhile: its
			 * key wins, ours was never used. */
			key_request(j, KEY_REGET);
			if (j->pending)
				return;
		}
		set_err(j, "create Secret %s: %ld: %s", sname, status, msg);
		/* The nodes still hold the key in memory, if any: keep the
		 * StatefulSet as it is (no apply) and the pushes going. */
		apply_children(j, false);
		return;
	}

	if (status == 200) {
		size_t len;
		const char *reason;
		char why[800];
		char *key = key_of_secret(j, body, &len, &reason, why, sizeof(why));
		if (!key) {
			set_err(j, "%s", why);
			j->err_reason = reason;
			if (j->rd.key_user)
				key_forget(&r->keys, j->key); /* no pushes without the user's key */
			apply_children(j, false);
			return;
		}
		key_set(&r->keys, j->key, key, len, !j->rd.key_user);
		pk_render_set_key(&j->rd, key, len);
		key_free(key, len);
		apply_children(j, true);
		return;
	}
	if (status == 404 && j->rd.key_user) {
		/* Never created for the user: say what is missing, push
		 * nothing (the nodes would refuse any other key). */
		set_err(j, "Secret %s (spec.cluster.keySecretRef) not found", sname);
		j->err_reason = REASON_KEY_MISSING;
		key_forget(&r->keys, j->key);
		apply_children(j, false);
		return;
	}
	if (status == 404 && j->key_phase == KEY_GET && j->rd.key_secret) {
		/* Missing: create it (a user's key is never in memory as
		 * generated, so it is never written into our Secret). */
		j->new_key = key_to_create(mem && mem->generated ? mem : NULL, &j->new_key_len);
		if (!j->new_key) {
			set_err(j, "create Secret %s: no randomness for a key", sname);
			apply_children(j, false);
			return;
		}
		pk_render_set_key(&j->rd, j->new_key, j->new_key_len);
		key_request(j, KEY_CREATE);
		if (!j->pending) {
			set_err(j, "create Secret %s: too many requests in flight", sname);
			apply_children(j, false);
		}
		return;
	}
	set_err(j, "get Secret %s: %ld: %s", sname, status, msg);
	/* A failed read changes nothing: the nodes keep the key this leader
	 * knows, the pushes too, and the StatefulSet is applied with it. */
	if (mem) {
		pk_render_set_key(&j->rd, mem->key, mem->key_len);
		apply_children(j, true);
	} else {
		apply_children(j, false);
	}
}

/* GET NAME-upstream-key (KEY_GET, KEY_REGET) or create it with j->new_ukey
 * (KEY_CREATE): key_request's steps for the generated upstream key. */
static void ukey_request(struct job *j, enum key_phase phase)
{
	char path[800];
	j->ukey_phase = phase;
	j->calls[SLOT_UKEY].is_ukey = true;
	snprintf(j->calls[SLOT_UKEY].name, sizeof(j->calls[SLOT_UKEY].name), "%s",
	         j->rd.upstream_secret_name);
	if (phase == KEY_CREATE) {
		snprintf(path, sizeof(path), "/api/v1/namespaces/%s/secrets?fieldManager=%s", j->ns,
		         PK_FIELD_MANAGER);
		/* Created, never applied (409 on an existing one). */
		send(j, SLOT_UKEY, "POST", path, "application/json",
		     json_object_to_json_string_ext(j->rd.upstream_secret,
		                                    JSON_C_TO_STRING_PLAIN |
		                                        JSON_C_TO_STRING_NOSLASHESCAPE));
		return;
	}
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/secrets/%s", j->ns,
	         j->rd.upstream_secret_name);
	send(j, SLOT_UKEY, "GET", path, NULL, NULL);
}

/* The generated upstream key step's answer, as key_done's for the cluster
 * key: read the Secret's key, or create the Secret (with the key the nodes
 * hold when this leader knew one, else a new one), then apply the children;
 * the StatefulSet only with both keys known. The key is the Secret's data
 * unchanged: the server takes its env var's text as the HMAC secret. */
static void ukey_done(struct job *j, long status, const char *body, const char *err)
{
	struct pk_reconciler *r = j->r;
	struct pk_ctrl *c = r->c;
	const char *sname = j->rd.upstream_secret_name;
	struct ckey *mem = key_find(r->ukeys, j->key);
	char msg[300];
	if (status == 0)
		snprintf(msg, sizeof(msg), "%s", err ? err : "no response");
	else
		status_message(body, msg, sizeof(msg));

	if (j->ukey_phase == KEY_CREATE) {
		if (status >= 200 && status < 300) {
			char note[400];
			bool again = mem != NULL;
			key_set(&r->ukeys, j->key, j->new_ukey, j->new_ukey_len, true);
			snprintf(note, sizeof(note), "%s Secret %s%s",
			         again ? "re-created" : "created", sname,
			         again ? " with the upstream key the nodes hold"
			               : " with a new upstream signing key (HS256)");
			pk_ctrl_event(c, j->cluster, "Normal", "Created", "Create", note);
			pk_log(PK_LOG_INFO, "reconcile", again ? "re-created" : "created",
			       "cluster", j->key, "kind", "Secret", "name", sname, NULL);
			pk_render_set_upstream_key(&j->rd, j->new_ukey, j->new_ukey_len);
			apply_children(j, j->have_ckey);
			return;
		}
		if (status == 409) {
			/* Created meanwhile (a previous leader): its key wins. */
			ukey_request(j, KEY_REGET);
			if (j->pending)
				return;
		}
		set_err(j, "create Secret %s: %ld: %s", sname, status, msg);
		apply_children(j, false); /* the StatefulSet stays as it is */
		return;
	}

	if (status == 200) {
		struct json_object *sec = json_tokener_parse(body ? body : "");
		struct json_object *v =
		    pk_json_field(pk_json_field(sec, "data"), PK_UPSTREAM_KEY_SECRET_KEY);
		size_t len = 0;
		char *key = v && json_object_is_type(v, json_type_string)
		                ? pk_base64_decode(json_object_get_string(v), &len)
		                : NULL; /* owned here */
		json_object_put(sec);
		if (!key || len == 0) {
			/* Only a user's hand replaces an immutable Secret: say
			 * what is wrong and keep the StatefulSet as it is. */
			set_err(j, "Secret %s: key \"" PK_UPSTREAM_KEY_SECRET_KEY "\" %s", sname,
			        !v     ? "is missing"
			        : !key ? "is not base64"
			               : "is empty");
			j->err_reason = v && !key ? REASON_KEY_INVALID : REASON_KEY_MISSING;
			key_free(key, len);
			apply_children(j, false);
			return;
		}
		key_set(&r->ukeys, j->key, key, len, true);
		pk_render_set_upstream_key(&j->rd, key, len);
		key_free(key, len);
		apply_children(j, j->have_ckey);
		return;
	}
	if (status == 404 && j->ukey_phase == KEY_GET) {
		/* 64 hex digits: text a Secret, an env var and `piko token
		 * create --key-file` all take unchanged. */
		j->new_ukey = key_to_create(mem, &j->new_ukey_len);
		if (!j->new_ukey) {
			set_err(j, "create Secret %s: no randomness for a key", sname);
			apply_children(j, false);
			return;
		}
		pk_render_set_upstream_key(&j->rd, j->new_ukey, j->new_ukey_len);
		ukey_request(j, KEY_CREATE);
		if (!j->pending) {
			set_err(j, "create Secret %s: too many requests in flight", sname);
			apply_children(j, false);
		}
		return;
	}
	set_err(j, "get Secret %s: %ld: %s", sname, status, msg);
	/* A failed read changes nothing: the nodes keep the key this leader
	 * knows. */
	if (mem) {
		pk_render_set_upstream_key(&j->rd, mem->key, mem->key_len);
		apply_children(j, j->have_ckey);
	} else {
		apply_children(j, false);
	}
}

void pk_reconcile_start(struct pk_reconciler *r, const char *key)
{
	struct pk_ctrl *c = r->c;
	struct job *j = calloc(1, sizeof(*j)); /* owner: r->jobs until job_end */
	if (!j) {
		/* key belongs to the queue and may be freed by done: copy it. */
		char k[512];
		snprintf(k, sizeof(k), "%s", key);
		pk_wq_done(c->wq, k, pk_now_ms());
		pk_wq_add_rate_limited(c->wq, k, pk_now_ms());
		return;
	}
	j->r = r;
	j->start_ms = pk_now_ms();
	snprintf(j->key, sizeof(j->key), "%s", key);
	const char *slash = strchr(key, '/');
	snprintf(j->ns, sizeof(j->ns), "%.*s", slash ? (int)(slash - key) : 0, key);
	snprintf(j->name, sizeof(j->name), "%s", slash ? slash + 1 : key);
	for (size_t i = 0; i < NSLOTS; i++)
		j->calls[i].job = j;
	j->next = r->jobs;
	r->jobs = j;
	r->njobs++;

	struct json_object *cluster = pk_informer_get(c->inf[PK_INF_CLUSTERS], j->ns, j->name);
	if (!cluster || json_object_object_get(json_object_object_get(cluster, "metadata"),
	                                       "deletionTimestamp")) {
		/* Gone or going: the garbage collector removes the children
		 * (the generated key's Secret too); its key is of no more use. */
		key_forget(&r->keys, j->key);
		key_forget(&r->ukeys, j->key);
		job_end(j);
		return;
	}
	j->cluster = json_object_get(cluster);

	char err[256];
	if (pk_render(cluster, &j->rd, err, sizeof(err)) != 0) {
		set_err(j, "render: %s", err);
		j->diag_sent = true; /* the error is the reason */
		advance(j);
		return;
	}
	/* The cluster key first: the pod template carries its hash. */
	key_request(j, KEY_GET);
	if (j->pending == 0)
		key_done(j, 0, NULL, "too many requests in flight");
}
