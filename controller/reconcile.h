/*
 * One reconcile of a PikoCluster, level-triggered: render the children from
 * the current spec, apply (server-side, one field manager) each child whose
 * live copy in the cache does not already hold every rendered field, then
 * write the status when it differs (ClusterFormed and the members' links
 * from the nodes' status as peers.c last passed it on: pk_peers_reports). The applies of one
 * reconcile run concurrently; the status is written after all of them returned.
 *
 * Before the applies, the cluster key: a GET of its Secret (the user's,
 * spec.cluster.keySecretRef, or NAME-cluster-key, created with a random key
 * when missing; never written over). The key is kept in memory per cluster
 * for the pushes (pk_reconciler_cluster_key) and to re-create a deleted
 * NAME-cluster-key with the key the nodes hold. With
 * spec.auth.upstream.generate the same for NAME-upstream-key (read, or
 * created with a random key; the key kept to re-create it), after the
 * cluster key and before the applies.
 *
 * A reconcile runs for a key the work queue handed out; when it ends it
 * calls pk_wq_done, and on failure requeues the key with backoff.
 */
#ifndef PK_RECONCILE_H
#define PK_RECONCILE_H

#include <stddef.h>

struct pk_ctrl;
struct pk_reconciler;

/* Owner: the caller (pk_reconciler_free, which abandons running jobs). */
struct pk_reconciler *pk_reconciler_new(struct pk_ctrl *c);
void pk_reconciler_free(struct pk_reconciler *r);

/* Start reconciling key ("ns/name"), which the caller got from pk_wq_get. */
void pk_reconcile_start(struct pk_reconciler *r, const char *key);

/* The cluster key of PikoCluster "ns/name" (len bytes), as the last
 * reconcile read or created it, or NULL (not read yet, or missing: then no
 * push is signed for it). Borrowed until the next reconcile of it. */
const char *pk_reconciler_cluster_key(const struct pk_reconciler *r, const char *cluster,
                                      size_t *len);

/* Reconciles in flight. */
size_t pk_reconcile_running(const struct pk_reconciler *r);

#endif
