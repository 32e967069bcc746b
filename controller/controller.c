/*
 * The controller's loop: informers feed the work queue, the leader drains
 * it into reconciles and pushes member sets, everyone serves health and
 * metrics. See controller.h.
 */
#include "controller.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "httpd.h"
#include "log.h"
#include "peers.h"
#include "reconcile.h"
#include "render.h"
#include "strbuf.h"

/* Reconciles running at once (distinct keys: the queue never hands out a
 * key twice). Each sends at most six requests. */
#define PK_CTRL_WORKERS 4
/* The loop wakes at least this often, so /healthz sees a fresh heartbeat. */
#define PK_CTRL_MAX_WAIT_MS 1000
#define PK_CTRL_STALE_MS 30000
#define PK_CTRL_RELEASE_WAIT_MS 3000

static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
	int e = errno;
	char c = (char)sig;
	if (write(sig_pipe[1], &c, 1) == -1) {
		/* the pipe is full: a stop is already pending */
	}
	errno = e;
}

void pk_ctrl_now_rfc3339(char *buf, size_t len)
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void pk_ctrl_now_micro(char *buf, size_t len)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	pk_lease_microtime((int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000, buf, len);
}

void pk_ctrl_enqueue(struct pk_ctrl *c, const char *key)
{
	if (pk_wq_add(c->wq, key, pk_now_ms()) != 0)
		pk_log(PK_LOG_WARN, "controller", "work queue full; the resync will retry",
		       "cluster", key, NULL);
}

/* ---- Events ---------------------------------------------------------------- */

static void event_done(void *ud, long status, const char *body, size_t len, const char *err)
{
	(void)ud;
	(void)len;
	if (status < 200 || status >= 300) {
		char st[24];
		snprintf(st, sizeof(st), "%ld", status);
		struct json_object *o = err ? NULL : json_tokener_parse(body);
		const char *m = o ? pk_object_str(o, "message") : NULL;
		pk_log(PK_LOG_WARN, "controller", "event not recorded", "status", st, "error",
		       err ? err : (m ? m : body), NULL);
		json_object_put(o);
	}
}

/* The length of s cut to at most max bytes without splitting a UTF-8
 * character. */
static size_t utf8_cut(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);
	if (n <= max)
		return n;
	n = max;
	while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--; /* s[n] continues a character: cut before its start */
	return n;
}

void pk_ctrl_event(struct pk_ctrl *c, struct json_object *cluster, const char *type,
                   const char *reason, const char *action, const char *note)
{
	const char *ns = pk_object_str(cluster, "metadata.namespace");
	const char *name = pk_object_str(cluster, "metadata.name");
	const char *uid = pk_object_str(cluster, "metadata.uid");
	if (!ns || !name)
		return;
	char now[40], gen[300], path[400];
	pk_ctrl_now_micro(now, sizeof(now));
	snprintf(gen, sizeof(gen), "%s-", name);
	struct json_object *e = json_object_new_object(); /* owner: this function */
	json_object_object_add(e, "apiVersion", json_object_new_string("events.k8s.io/v1"));
	json_object_object_add(e, "kind", json_object_new_string("Event"));
	struct json_object *md = json_object_new_object();
	json_object_object_add(md, "generateName", json_object_new_string(gen));
	json_object_object_add(md, "namespace", json_object_new_string(ns));
	json_object_object_add(e, "metadata", md);
	json_object_object_add(e, "eventTime", json_object_new_string(now));
	json_object_object_add(e, "reportingController",
	                       json_object_new_string("piko.dev/piko-controller"));
	/* The API caps reportingInstance at 128 bytes and note at 1 KiB; cut
	 * both at a UTF-8 character boundary. */
	json_object_object_add(
	    e, "reportingInstance",
	    json_object_new_string_len(c->o.identity, (int)utf8_cut(c->o.identity, 128)));
	json_object_object_add(e, "type", json_object_new_string(type));
	json_object_object_add(e, "reason", json_object_new_string(reason));
	json_object_object_add(e, "action", json_object_new_string(action));
	json_object_object_add(e, "note",
	                       json_object_new_string_len(note, (int)utf8_cut(note, 1000)));
	struct json_object *reg = json_object_new_object();
	json_object_object_add(reg, "apiVersion", json_object_new_string("piko.dev/v1alpha1"));
	json_object_object_add(reg, "kind", json_object_new_string("PikoCluster"));
	json_object_object_add(reg, "namespace", json_object_new_string(ns));
	json_object_object_add(reg, "name", json_object_new_string(name));
	if (uid)
		json_object_object_add(reg, "uid", json_object_new_string(uid));
	json_object_object_add(e, "regarding", reg);
	snprintf(path, sizeof(path), "/apis/events.k8s.io/v1/namespaces/%s/events", ns);
	const char *body = json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN |
	                                                         JSON_C_TO_STRING_NOSLASHESCAPE);
	pk_kube_request(c->kube, "POST", path, "application/json", body, strlen(body), event_done,
	                NULL);
	json_object_put(e);
}

/* ---- informer events -> work queue ------------------------------------------ */

const char *pk_slice_service(struct json_object *slice)
{
	struct json_object *labels, *sn;
	if (!json_object_object_get_ex(json_object_object_get(slice, "metadata"), "labels",
	                               &labels) ||
	    !json_object_object_get_ex(labels, "kubernetes.io/service-name", &sn) ||
	    !json_object_is_type(sn, json_type_string))
		return NULL;
	return json_object_get_string(sn);
}

bool pk_slice_of(struct json_object *slice, const char *ns, const char *name)
{
	const char *sns = pk_object_str(slice, "metadata.namespace");
	const char *svc = pk_slice_service(slice);
	char peers[300];
	pk_render_child_name(name, "peers", peers, sizeof(peers));
	return sns && svc && !strcmp(sns, ns) && !strcmp(svc, peers);
}

/* The PikoCluster that controls obj, as "ns/name", or -1. */
static int owner_key(struct json_object *obj, char *key, size_t len)
{
	struct json_object *refs;
	const char *ns = pk_object_str(obj, "metadata.namespace");
	if (!ns ||
	    !json_object_object_get_ex(json_object_object_get(obj, "metadata"), "ownerReferences",
	                               &refs) ||
	    !json_object_is_type(refs, json_type_array))
		return -1;
	for (size_t i = 0; i < json_object_array_length(refs); i++) {
		struct json_object *r = json_object_array_get_idx(refs, i), *ctl;
		const char *kind = pk_object_str(r, "kind");
		const char *name = pk_object_str(r, "name");
		if (kind && name && !strcmp(kind, "PikoCluster") &&
		    json_object_object_get_ex(r, "controller", &ctl) &&
		    json_object_get_boolean(ctl)) {
			snprintf(key, len, "%s/%s", ns, name);
			return 0;
		}
	}
	return -1;
}

static void on_informer(void *ud, struct pk_informer *inf, enum pk_watch_type type,
                        struct json_object *old, struct json_object *obj)
{
	struct pk_ctrl *c = ud;
	(void)type;
	(void)old;
	char key[600];
	if (inf == c->inf[PK_INF_CLUSTERS]) {
		if (pk_object_key(obj, key, sizeof(key)) == 0) {
			pk_ctrl_enqueue(c, key);
			pk_peers_touch(c->peers, key);
		}
		return;
	}
	if (inf == c->inf[PK_INF_SLICES]) {
		const char *ns = pk_object_str(obj, "metadata.namespace");
		const char *svc = pk_slice_service(obj);
		if (!ns || !svc)
			return;
		size_t n = strlen(svc);
		if (n <= 6 || strcmp(svc + n - 6, "-peers") != 0)
			return;
		snprintf(key, sizeof(key), "%s/%.*s", ns, (int)(n - 6), svc);
		if (pk_informer_get(c->inf[PK_INF_CLUSTERS], ns, key + strlen(ns) + 1)) {
			pk_ctrl_enqueue(c, key);
			pk_peers_touch(c->peers, key);
		}
		return;
	}
	if (owner_key(obj, key, sizeof(key)) == 0)
		pk_ctrl_enqueue(c, key);
}

/* ---- leader election ------------------------------------------------------- */

static char *lease_path(struct pk_ctrl *c, bool item)
{
	struct pk_sb p = {0};
	pk_sb_printf(&p, "/apis/coordination.k8s.io/v1/namespaces/%s/leases", c->o.lease_namespace);
	if (item)
		pk_sb_printf(&p, "/%s", c->o.lease_name);
	return pk_sb_finish(&p, NULL);
}

static void became_leader(struct pk_ctrl *c)
{
	pk_log(PK_LOG_INFO, "leader", "became leader", "identity", c->o.identity, NULL);
	const char *lv[] = {c->o.lease_name};
	pk_metric_set(c->m_leader, lv, 1);
	/* Everything may have drifted while someone else (or no one) led. */
	json_object_object_foreach(pk_informer_cache(c->inf[PK_INF_CLUSTERS]), key, obj)
	{
		(void)obj;
		pk_ctrl_enqueue(c, key);
		pk_peers_touch(c->peers, key);
	}
}

static void lease_write_done(void *ud, long status, const char *body, size_t len, const char *err)
{
	struct pk_ctrl *c = ud;
	(void)len;
	c->lease_req_inflight = false;
	bool was = pk_lease_is_leader(c->lease);
	bool ok = status >= 200 && status < 300;
	struct json_object *resp = ok ? json_tokener_parse(body) : NULL;
	uint64_t now = pk_now_ms();
	/* The renew deadline runs from when the write was sent, not from when
	 * its answer came: the apiserver stored it somewhere in between, and a
	 * standby's lease duration runs from then. Counting from a late answer
	 * would keep us leading after the standby may take over. */
	pk_lease_write_result(c->lease, c->lease_action, ok, resp, c->lease_sent_ms);
	json_object_put(resp);
	if (c->stopping)
		return; /* recorded, so the release PUT carries its resourceVersion */
	if (!ok && status != 409) {
		char st[24];
		snprintf(st, sizeof(st), "%ld", status);
		pk_log(PK_LOG_WARN, "leader", "lease write failed", "status", st, "error",
		       err ? err : body, NULL);
	}
	if (!was && pk_lease_is_leader(c->lease))
		became_leader(c);
	c->lease_next_ms =
	    now + (ok || status == 409 ? pk_lease_next_ms(c->lease, now) : c->o.retry_ms);
}

static void lease_get_done(void *ud, long status, const char *body, size_t len, const char *err)
{
	struct pk_ctrl *c = ud;
	(void)len;
	c->lease_req_inflight = false;
	if (c->stopping)
		return; /* never renew or take the Lease while handing it back */
	uint64_t now = pk_now_ms();
	struct json_object *lease = NULL;
	if (status == 200)
		lease = json_tokener_parse(body);
	if (status != 404 && !lease) {
		char st[24];
		snprintf(st, sizeof(st), "%ld", status);
		pk_log(PK_LOG_WARN, "leader", "lease read failed", "status", st, "error",
		       err ? err : body, NULL);
		/* Nothing was observed, so the state machine's schedule has not
		 * moved: wait a retry period, or this would spin. */
		c->lease_next_ms = now + c->o.retry_ms;
		return;
	}
	char wall[40];
	pk_ctrl_now_micro(wall, sizeof(wall));
	char *wbody = NULL;
	enum pk_lease_action a = pk_lease_observe(c->lease, lease, now, wall, &wbody);
	json_object_put(lease);
	if (a == PK_LEASE_NONE || !wbody) {
		free(wbody);
		c->lease_next_ms = now + pk_lease_next_ms(c->lease, now);
		return;
	}
	/* One Lease request at a time, so the action lives in c. */
	char *path = lease_path(c, a != PK_LEASE_CREATE);
	c->lease_action = a;
	c->lease_sent_ms = now;
	if (pk_kube_request(c->kube, a == PK_LEASE_CREATE ? "POST" : "PUT", path,
	                    "application/json", wbody, strlen(wbody), lease_write_done, c))
		c->lease_req_inflight = true;
	if (!c->lease_req_inflight)
		c->lease_next_ms = now + pk_lease_next_ms(c->lease, now);
	free(path);
	free(wbody);
}

static void lease_tick(struct pk_ctrl *c, uint64_t now)
{
	if (c->lease_req_inflight || now < c->lease_next_ms)
		return;
	char *path = lease_path(c, true);
	if (pk_kube_request(c->kube, "GET", path, NULL, NULL, 0, lease_get_done, c))
		c->lease_req_inflight = true;
	else
		c->lease_next_ms = now + 1000;
	free(path);
}

static void release_done(void *ud, long status, const char *body, size_t len, const char *err)
{
	int *done = ud;
	(void)len;
	*done = 1;
	char st[24];
	snprintf(st, sizeof(st), "%ld", status);
	if (status >= 200 && status < 300)
		pk_log(PK_LOG_INFO, "leader", "lease released", NULL);
	else
		pk_log(PK_LOG_WARN, "leader", "lease release failed", "status", st, "error",
		       err ? err : body, NULL);
}

/* On shutdown: hand the Lease back so a standby takes over at once instead
 * of waiting out the lease duration. Bounded by PK_CTRL_RELEASE_WAIT_MS for
 * the write in flight and as much for the release. */
static void release_lease(struct pk_ctrl *c)
{
	uint64_t end = pk_now_ms() + PK_CTRL_RELEASE_WAIT_MS;
	/* A renew (or takeover) in flight would move the Lease's
	 * resourceVersion under the release PUT, which then fails with 409 and
	 * the standby waits out the whole lease: let it land first (its result
	 * is recorded even while stopping). */
	while (c->lease_req_inflight && pk_now_ms() < end)
		pk_kube_poll(c->kube, NULL, NULL, NULL, 0, 100);
	if (!pk_lease_is_leader(c->lease))
		return;
	char wall[40];
	pk_ctrl_now_micro(wall, sizeof(wall));
	char *body = pk_lease_release_body(c->lease, wall);
	if (!body)
		return;
	char *path = lease_path(c, true);
	int done = 0;
	struct pk_kube_req *r = pk_kube_request(c->kube, "PUT", path, "application/json", body,
	                                        strlen(body), release_done, &done);
	free(path);
	free(body);
	end = pk_now_ms() + PK_CTRL_RELEASE_WAIT_MS;
	while (r && !done && pk_now_ms() < end)
		pk_kube_poll(c->kube, NULL, NULL, NULL, 0, 100);
	if (r && !done)
		pk_kube_cancel(r);
}

/* ---- health, readiness, metrics ------------------------------------------ */

static bool all_synced(const struct pk_ctrl *c)
{
	for (int i = 0; i < PK_INF_COUNT; i++)
		if (!pk_informer_synced(c->inf[i]))
			return false;
	return true;
}

static void update_gauges(struct pk_ctrl *c)
{
	const char *lv[] = {"pikocluster"};
	pk_metric_set(c->m_wq_depth, lv, (double)pk_wq_depth(c->wq));
	/* Counters mirrored from the queue's own totals. */
	pk_metric_set(c->m_wq_adds, lv, (double)pk_wq_adds(c->wq));
	pk_metric_set(c->m_wq_retries, lv, (double)pk_wq_retries(c->wq));
	const char *ln[] = {c->o.lease_name};
	pk_metric_set(c->m_leader, ln, pk_lease_is_leader(c->lease) ? 1 : 0);
}

static void on_http(void *ud, const char *method, const char *path, int *status,
                    const char **content_type, char **body, size_t *body_len)
{
	struct pk_ctrl *c = ud;
	(void)method;
	struct pk_sb b = {0};
	*content_type = "text/plain; charset=utf-8";
	if (!strcmp(path, "/healthz")) {
		bool fresh = pk_now_ms() - c->heartbeat_ms < PK_CTRL_STALE_MS;
		*status = fresh ? 200 : 503;
		pk_sb_str(&b, fresh ? "ok\n" : "main loop stalled\n");
	} else if (!strcmp(path, "/readyz")) {
		/* Readiness is the caches, never leadership: a standby is ready
		 * too, or its Deployment's rollout would stall. */
		bool ok = all_synced(c);
		*status = ok ? 200 : 503;
		if (ok)
			pk_sb_str(&b, "ok\n");
		for (int i = 0; i < PK_INF_COUNT && !ok; i++)
			if (!pk_informer_synced(c->inf[i]))
				pk_sb_printf(&b, "informer %s: not synced\n",
				             pk_informer_kind(c->inf[i]));
	} else if (!strcmp(path, "/metrics")) {
		update_gauges(c);
		*status = 200;
		*content_type = "text/plain; version=0.0.4; charset=utf-8";
		size_t n;
		char *m = pk_metrics_render(c->metrics, &n);
		pk_sb_put(&b, m, n);
		free(m);
	} else {
		*status = 404;
		pk_sb_str(&b, "404 page not found\n");
	}
	*body = pk_sb_finish(&b, body_len);
}

static void register_metrics(struct pk_ctrl *c)
{
	static const char *const ctl[] = {"controller"};
	static const char *const ctl_res[] = {"controller", "result"};
	static const char *const name[] = {"name"};
	static const char *const kind[] = {"kind"};
	static const char *const result[] = {"result"};
	static const char *const cluster[] = {"cluster"};
	struct pk_metrics *m = c->metrics;
	c->m_reconcile_total = pk_metrics_register(
	    m, PK_METRIC_COUNTER, "controller_runtime_reconcile_total",
	    "Total number of reconciliations per controller", ctl_res, 2, NULL, 0);
	c->m_reconcile_errors = pk_metrics_register(
	    m, PK_METRIC_COUNTER, "controller_runtime_reconcile_errors_total",
	    "Total number of reconciliation errors per controller", ctl, 1, NULL, 0);
	c->m_reconcile_time =
	    pk_metrics_register(m, PK_METRIC_HISTOGRAM, "controller_runtime_reconcile_time_seconds",
	                        "Length of time per reconciliation per controller", ctl, 1,
	                        pk_metrics_default_buckets, 11);
	c->m_wq_depth = pk_metrics_register(m, PK_METRIC_GAUGE, "workqueue_depth",
	                                    "Current depth of workqueue", name, 1, NULL, 0);
	/* Counters in Prometheus terms; set from the queue's own totals. */
	c->m_wq_adds =
	    pk_metrics_register(m, PK_METRIC_COUNTER, "workqueue_adds_total",
	                        "Total number of adds handled by workqueue", name, 1, NULL, 0);
	c->m_wq_retries =
	    pk_metrics_register(m, PK_METRIC_COUNTER, "workqueue_retries_total",
	                        "Total number of retries handled by workqueue", name, 1, NULL, 0);
	c->m_leader = pk_metrics_register(m, PK_METRIC_GAUGE, "leader_election_master_status",
	                                  "Gauge of if the reporting system is master of the "
	                                  "relevant lease, 0 indicates backup, 1 indicates master.",
	                                  name, 1, NULL, 0);
	c->m_applies =
	    pk_metrics_register(m, PK_METRIC_COUNTER, "piko_controller_applies_total",
	                        "Server-side applies sent, by kind of child", kind, 1, NULL, 0);
	c->m_pushes = pk_metrics_register(m, PK_METRIC_COUNTER, "piko_controller_peer_pushes_total",
	                                  "Member-set pushes to nodes' admin ports, by result",
	                                  result, 1, NULL, 0);
	c->m_members = pk_metrics_register(m, PK_METRIC_GAUGE, "piko_controller_cluster_members",
	                                   "Members of each PikoCluster, from its EndpointSlices",
	                                   cluster, 1, NULL, 0);
	static const char *const cluster_node[] = {"cluster", "node"};
	c->m_push_backoff = pk_metrics_register(
	    m, PK_METRIC_GAUGE, "piko_controller_peer_push_backoff_seconds",
	    "Wait before the next member push to a node whose last push failed (absent while "
	    "its pushes succeed)",
	    cluster_node, 2, NULL, 0);
}

/* ---- set-up and loop ------------------------------------------------------ */

static int start_informers(struct pk_ctrl *c)
{
	char clusters[400];
	if (c->o.namespace)
		snprintf(clusters, sizeof(clusters),
		         "/apis/piko.dev/v1alpha1/namespaces/%s/pikoclusters", c->o.namespace);
	else
		snprintf(clusters, sizeof(clusters), "/apis/piko.dev/v1alpha1/pikoclusters");
	const struct pk_informer_opts opts[PK_INF_COUNT] = {
	    [PK_INF_CLUSTERS] = {"PikoCluster", clusters, NULL, 300},
	    [PK_INF_CONFIGMAPS] = {"ConfigMap", "/api/v1/configmaps", PK_MANAGED_BY_SELECTOR, 300},
	    [PK_INF_SERVICES] = {"Service", "/api/v1/services", PK_MANAGED_BY_SELECTOR, 300},
	    [PK_INF_STATEFULSETS] = {"StatefulSet", "/apis/apps/v1/statefulsets",
	                             PK_MANAGED_BY_SELECTOR, 300},
	    [PK_INF_PDBS] = {"PodDisruptionBudget", "/apis/policy/v1/poddisruptionbudgets",
	                     PK_MANAGED_BY_SELECTOR, 300},
	    /* The EndpointSlice controller copies the Service's labels onto its
	     * slices, so the same selector finds the headless Service's. */
	    [PK_INF_SLICES] = {"EndpointSlice", "/apis/discovery.k8s.io/v1/endpointslices",
	                       PK_MANAGED_BY_SELECTOR, 300},
	};
	for (int i = 0; i < PK_INF_COUNT; i++) {
		c->inf[i] = pk_informer_new(c->kube, &opts[i], on_informer, c);
		if (!c->inf[i])
			return -1;
	}
	return 0;
}

static void cleanup(struct pk_ctrl *c)
{
	pk_reconciler_free(c->rec);
	pk_peers_free(c->peers);
	for (int i = 0; i < PK_INF_COUNT; i++)
		pk_informer_free(c->inf[i]);
	pk_kube_free(c->kube);
	pk_httpd_free(c->httpd);
	pk_lease_free(c->lease);
	pk_wq_free(c->wq);
	pk_metrics_free(c->metrics);
	pk_kube_config_free(&c->cfg);
}

int pk_ctrl_run(const struct pk_ctrl_opts *o)
{
	struct pk_ctrl ctrl = {.o = *o};
	struct pk_ctrl *c = &ctrl;
	char err[512];
	int rc = 1;

	if (pk_kube_config_load(o->kubeconfig, o->context, &c->cfg, err, sizeof(err)) != 0) {
		pk_log(PK_LOG_ERROR, "controller", "cannot load the cluster config", "error", err,
		       NULL);
		return 1;
	}
	if (!c->o.lease_namespace)
		c->o.lease_namespace = c->cfg.in_cluster ? c->cfg.namespace : "piko-system";
	c->metrics = pk_metrics_new();
	register_metrics(c);
	c->kube = pk_kube_new(&c->cfg, c->metrics, err, sizeof(err));
	if (!c->kube) {
		pk_log(PK_LOG_ERROR, "controller", "cannot start the HTTP client", "error", err,
		       NULL);
		goto out;
	}
	c->wq = pk_wq_new(NULL);
	struct pk_lease_opts lo = {
	    .name = c->o.lease_name,
	    .namespace = c->o.lease_namespace,
	    .identity = c->o.identity,
	    .duration_ms = c->o.lease_duration_ms,
	    .renew_deadline_ms = c->o.renew_deadline_ms,
	    .retry_ms = c->o.retry_ms,
	};
	c->lease = pk_lease_new(&lo, pk_now_ms());
	c->rec = pk_reconciler_new(c);
	c->peers = pk_peers_new(c);
	c->httpd = pk_httpd_new(c->o.health_addr, on_http, c, err, sizeof(err));
	if (!c->httpd) {
		pk_log(PK_LOG_ERROR, "controller", "cannot listen for health checks", "addr",
		       c->o.health_addr, "error", err, NULL);
		goto out;
	}
	if (!c->wq || !c->lease || !c->rec || !c->peers || start_informers(c) != 0) {
		pk_log(PK_LOG_ERROR, "controller", "out of memory at start", NULL);
		goto out;
	}
	if (pipe2(sig_pipe, O_NONBLOCK | O_CLOEXEC) == -1) {
		pk_log(PK_LOG_ERROR, "controller", "pipe failed", "error", strerror(errno), NULL);
		goto out;
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	char port[16];
	snprintf(port, sizeof(port), "%d", pk_httpd_port(c->httpd));
	pk_log(PK_LOG_INFO, "controller", "piko-controller started", "version", PK_VERSION,
	       "server", c->cfg.server, "identity", c->o.identity, "lease", c->o.lease_namespace,
	       "health-port", port, NULL);

	c->resync_next_ms = pk_now_ms() + c->o.resync_ms;
	bool was_synced = false;
	for (;;) {
		uint64_t now = pk_now_ms();
		c->heartbeat_ms = now;
		uint64_t wait = PK_CTRL_MAX_WAIT_MS;
		for (int i = 0; i < PK_INF_COUNT; i++) {
			uint64_t w = pk_informer_tick(c->inf[i], now);
			if (w < wait)
				wait = w;
		}
		bool synced = all_synced(c);
		if (synced && !was_synced)
			pk_log(PK_LOG_INFO, "controller", "caches synced", NULL);
		was_synced = synced;

		lease_tick(c, now);
		if (pk_lease_lost(c->lease, now)) {
			/* As controller-runtime: a leader that cannot renew exits, so
			 * two never reconcile at once; the Deployment restarts it. */
			pk_log(PK_LOG_ERROR, "leader", "leader election lost", "identity",
			       c->o.identity, NULL);
			goto out;
		}
		bool leader = pk_lease_is_leader(c->lease);

		if (now >= c->resync_next_ms) {
			c->resync_next_ms = now + c->o.resync_ms;
			json_object_object_foreach(pk_informer_cache(c->inf[PK_INF_CLUSTERS]), key,
			                           obj)
			{
				(void)obj;
				pk_ctrl_enqueue(c, key);
				pk_peers_touch(c->peers, key);
			}
		}
		if (c->resync_next_ms - now < wait)
			wait = c->resync_next_ms - now;

		/* Reconcile only from complete caches: a half-filled cache would
		 * look like missing children and cause needless writes. */
		if (leader && synced) {
			const char *key;
			while (pk_reconcile_running(c->rec) < PK_CTRL_WORKERS &&
			       (key = pk_wq_get(c->wq, now)))
				pk_reconcile_start(c->rec, key);
			/* With every worker busy a ready key cannot start anyway:
			 * its 0 ms would spin the loop until a reconcile ends,
			 * and that end is network activity, which wakes the poll
			 * by itself. */
			if (pk_reconcile_running(c->rec) < PK_CTRL_WORKERS) {
				uint64_t w = pk_wq_next_ms(c->wq, now);
				if (w < wait)
					wait = w;
			}
		}
		if (synced) {
			uint64_t w = pk_peers_tick(c->peers, now, leader);
			if (w < wait)
				wait = w;
		}
		if (c->lease_next_ms > now && c->lease_next_ms - now < wait)
			wait = c->lease_next_ms - now;

		int fds[17];
		short ev[17], rev[17];
		size_t n = pk_httpd_fds(c->httpd, fds + 1, ev + 1, 15);
		fds[0] = sig_pipe[0];
		ev[0] = POLLIN;
		if (pk_kube_poll(c->kube, fds, ev, rev, n + 1, (int)wait) != 0) {
			pk_log(PK_LOG_ERROR, "controller", "libcurl multi failed", NULL);
			goto out;
		}
		pk_httpd_service(c->httpd, pk_now_ms());
		if (rev[0] & POLLIN) {
			char b[16];
			if (read(sig_pipe[0], b, sizeof(b)) > 0) {
				pk_log(PK_LOG_INFO, "controller", "stopping", NULL);
				break;
			}
		}
	}
	/* Stop reconciling first, then hand the Lease back. */
	c->stopping = true;
	pk_reconciler_free(c->rec);
	c->rec = NULL;
	release_lease(c);
	rc = 0;
out:
	cleanup(c);
	if (sig_pipe[0] != -1) {
		close(sig_pipe[0]);
		close(sig_pipe[1]);
		sig_pipe[0] = sig_pipe[1] = -1;
	}
	return rc;
}
