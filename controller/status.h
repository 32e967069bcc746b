/*
 * StatefulSet and EndpointSlices -> PikoCluster status (docs/controller.md,
 * "Status"). Pure: the time is passed in, nothing is read from the cluster
 * but what the caller hands over (all arguments borrowed).
 */
#ifndef PK_STATUS_H
#define PK_STATUS_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

/* status.members holds at most this many (the CRD's maxItems). */
#define PK_STATUS_MAX_MEMBERS 256
/* A condition message longer than this (the CRD's maxLength) is cut. */
#define PK_STATUS_MAX_MESSAGE 32768

/* Compute the status the PikoCluster should have, as the full apply body for
 * the status subresource: {apiVersion, kind, metadata{name, namespace},
 * status{observedGeneration, replicas, readyReplicas, selector, members,
 * conditions[Ready, Progressing, Degraded]}}. Owned by the caller (put it).
 *  - cluster: the PikoCluster; its current .status keeps a condition's
 *    lastTransitionTime when that condition's status did not flip;
 *  - sts: the StatefulSet from the cache, or NULL (Ready False,
 *    StatefulSetNotObserved);
 *  - slices: the EndpointSlices of NAME-peers (may be NULL when nslices is
 *    0). Members are the endpoints not terminating: pod = targetRef.name (the
 *    address when there is none), address = the first address, ready =
 *    conditions.ready (missing = true); sorted by pod then address, at most
 *    PK_STATUS_MAX_MEMBERS;
 *  - pods: NULL, or the cluster's Pods (an array of Pod objects): a
 *    container waiting with CrashLoopBackOff makes Degraded True with
 *    reason CrashLoop, an image that cannot be pulled ImagePullFailed, a
 *    container that cannot be created ContainerCreateFailed (the first pod
 *    by name in the message, with how many pods fail);
 *  - events: NULL, or the StatefulSet's core/v1 Events: while it has fewer
 *    pods (status.replicas) than spec.replicas, the newest FailedCreate one
 *    makes Degraded True with reason PodCreateFailed and its message (e.g.
 *    the PodSecurity or quota refusal); it wins over the pods;
 *  - reconcile_error: NULL, or the last reconcile's error (Degraded True,
 *    ReconcileFailed; wins over both above);
 *  - error_reason: NULL, or Degraded's reason for reconcile_error instead of
 *    ReconcileFailed (e.g. KeySecretMissing);
 *  - now_rfc3339: the wall clock, e.g. "2026-11-29T23:00:00Z".
 * status.replicas is the StatefulSet's status.replicas (the pods that
 * exist; 0 without one), as the scale subresource reads it.
 * NULL when cluster has no metadata.name or metadata.namespace. */
struct json_object *pk_status_compute(struct json_object *cluster, struct json_object *sts,
                                      struct json_object *const *slices, size_t nslices,
                                      struct json_object *pods, struct json_object *events,
                                      const char *reconcile_error, const char *error_reason,
                                      const char *now_rfc3339);

/* ---- ClusterFormed: what the nodes say about each other ---- */

/* What one member's admin port answered to GET /status/cluster/nodes. All
 * borrowed. */
struct pk_node_report {
	const char *pod;           /* the member (status.members[].pod) */
	const char *address;       /* its address when it was read (members[].address) */
	const char *error;         /* NULL: read, nodes is the answer; else why not */
	struct json_object *nodes; /* [{id, status, admin_addr, upstreams, ...}] */
};

/* One member, in (pod, address, ready) and out (what the reports say). */
struct pk_formed_member {
	const char *pod, *address;
	int ready;
	const char *node_id; /* out: its ID from its own entry, NULL unknown
	                      * (borrowed from the reports) */
	const char *link;    /* out: "active" (every other ready member lists it
	                      * active; a ready member alone: its own status
	                      * read), "partial" (some do), "none" (the others
	                      * were read and none does), "unknown" */
	int64_t upstreams;   /* out: its own entry's upstreams, -1 unknown */
};

/* The reason of ClusterFormed (and its message, cut to msglen) for members
 * m[0..n) and the reports r[0..nr) (a report counts for a member with the
 * same pod and address). True ("Formed") only when there is a ready member
 * and every ready member's status was read and lists every other ready
 * member active; else "NoReadyMembers", "StatusUnavailable" (a ready
 * member unread, which and why: wins) or "NotFormed" (who misses whom).
 * Members not ready are never required. A node's own entry is the one
 * whose id is its pod name, or the pod name, '-' and 7 of [a-z0-9] (the
 * rendered --cluster.node-id-prefix), else whose admin_addr's host is the
 * member's address, else the first; another member is seen when an entry
 * with the ID it reports for itself (unknown: matched as above) says
 * "active". Messages hold names and counts, no times. Fills the out fields
 * of m. Returns 1 when formed. */
int pk_status_formed(struct pk_formed_member *m, size_t n, const struct pk_node_report *r,
                     size_t nr, const char **reason, char *msg, size_t msglen);

/* Add ClusterFormed (after Degraded) to computed (from pk_status_compute,
 * for cluster) and to each status.members[] entry nodeId (when known),
 * link and upstreams (when known), from the reports. known 0 (no round of
 * reads finished yet, e.g. just became leader) and a ready member: the
 * PikoCluster's current ClusterFormed condition and member fields are kept
 * as they are (a missing condition is computed as usual), so a new leader
 * does not flip it. */
void pk_status_add_formed(struct json_object *computed, struct json_object *cluster,
                          const struct pk_node_report *r, size_t nr, int known,
                          const char *now_rfc3339);

/* 1 if the PikoCluster's current .status already equals computed's .status
 * field by field (pk_json_equal: a missing array equals an empty one, a
 * missing field a null one, numbers by value), else 0. */
int pk_status_equal(struct json_object *cluster, struct json_object *computed);

#endif
