/*
 * StatefulSet and EndpointSlices -> PikoCluster status (docs/controller.md,
 * "Status"). Pure: the time is passed in, nothing is read from the cluster
 * but what the caller hands over (all arguments borrowed).
 */
#ifndef PK_STATUS_H
#define PK_STATUS_H

#include <json-c/json.h>
#include <stddef.h>

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

/* 1 if the PikoCluster's current .status already equals computed's .status
 * field by field (pk_json_equal: a missing array equals an empty one, a
 * missing field a null one, numbers by value), else 0. */
int pk_status_equal(struct json_object *cluster, struct json_object *computed);

#endif
