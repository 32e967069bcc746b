/*
 * The controller: what ties the client, the informers, the work queue, the
 * reconciler, peer discovery, leader election and the health server
 * together on one loop. cmd/piko-controller.c parses flags and calls
 * pk_ctrl_run().
 *
 *   watch events (any kind) --owner key--> work queue --leader only-->
 *   reconcile (render, apply what differs, status) --> apiserver
 *   EndpointSlices --> member sets --leader only--> PUT to each node's admin
 */
#ifndef PK_CONTROLLER_H
#define PK_CONTROLLER_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "informer.h"
#include "kube.h"
#include "kubeconfig.h"
#include "lease.h"
#include "metrics.h"
#include "workqueue.h"

#define PK_FIELD_MANAGER "piko-controller"
#define PK_MANAGED_BY_SELECTOR "app.kubernetes.io/managed-by=piko-controller"

struct pk_ctrl_opts {
	const char *kubeconfig, *context;
	const char *namespace; /* PikoClusters watched: NULL = all */
	const char *lease_namespace, *lease_name, *identity;
	uint64_t lease_duration_ms, renew_deadline_ms, retry_ms;
	uint64_t resync_ms;
	uint64_t peer_push_ms; /* periodic re-push of member sets (30 s) */
	const char *health_addr;
	uint16_t node_admin_port; /* for slices without a port named "admin" */
};

enum pk_informer_idx {
	PK_INF_CLUSTERS,
	PK_INF_CONFIGMAPS,
	PK_INF_SERVICES,
	PK_INF_STATEFULSETS,
	PK_INF_PDBS,
	PK_INF_SLICES,
	PK_INF_COUNT,
};

struct pk_peers;
struct pk_reconciler;
struct pk_httpd;

struct pk_ctrl {
	struct pk_ctrl_opts o;
	struct pk_kube_config cfg;
	struct pk_metrics *metrics;
	struct pk_kube *kube;
	struct pk_informer *inf[PK_INF_COUNT];
	struct pk_wq *wq;
	struct pk_lease *lease;
	struct pk_reconciler *rec;
	struct pk_peers *peers;
	struct pk_httpd *httpd;

	bool lease_req_inflight;
	enum pk_lease_action lease_action; /* of the write in flight */
	uint64_t lease_sent_ms;            /* when that write was sent */
	uint64_t lease_next_ms;
	uint64_t resync_next_ms;
	uint64_t heartbeat_ms; /* main loop's last turn, for /healthz */
	bool stopping;

	struct pk_metric *m_reconcile_total, *m_reconcile_errors, *m_reconcile_time;
	struct pk_metric *m_wq_depth, *m_wq_adds, *m_wq_retries, *m_leader, *m_applies, *m_pushes;
	struct pk_metric *m_members;
	struct pk_metric *m_push_backoff; /* {cluster, node}: failing nodes only */
};

/* Run until SIGTERM/SIGINT. Returns the process exit code. */
int pk_ctrl_run(const struct pk_ctrl_opts *o);

/* The Service an EndpointSlice belongs to (its kubernetes.io/service-name
 * label), or NULL. */
const char *pk_slice_service(struct json_object *slice);
/* Is slice one of PikoCluster ns/name's headless Service (NAME-peers)? */
bool pk_slice_of(struct json_object *slice, const char *ns, const char *name);

/* Queue the reconcile of "ns/name". */
void pk_ctrl_enqueue(struct pk_ctrl *c, const char *key);

/* Post an events.k8s.io/v1 Event about the PikoCluster (fire and forget). */
void pk_ctrl_event(struct pk_ctrl *c, struct json_object *cluster, const char *type,
                   const char *reason, const char *action, const char *note);

/* Wall-clock times: RFC 3339 seconds and MicroTime. */
void pk_ctrl_now_rfc3339(char *buf, size_t len);
void pk_ctrl_now_micro(char *buf, size_t len);

#endif
