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
 *  - reconcile_error: NULL, or the last reconcile's error (Degraded True);
 *  - now_rfc3339: the wall clock, e.g. "2026-11-29T23:00:00Z".
 * NULL when cluster has no metadata.name or metadata.namespace. */
struct json_object *pk_status_compute(struct json_object *cluster, struct json_object *sts,
                                      struct json_object *const *slices, size_t nslices,
                                      const char *reconcile_error, const char *now_rfc3339);

/* 1 if the PikoCluster's current .status already equals computed's .status
 * field by field (pk_json_equal: a missing array equals an empty one, a
 * missing field a null one, numbers by value), else 0. */
int pk_status_equal(struct json_object *cluster, struct json_object *computed);

#endif
