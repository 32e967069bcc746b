/*
 * Peer discovery: the member set of each PikoCluster, read from the
 * EndpointSlices of its headless Service (NAME-peers), pushed to every
 * member's admin port with
 *
 *   PUT /piko/v1/cluster/members   {"cluster","generation","members":[...]}
 *   Authorization: Bearer <proof signed with the cluster's key>
 *
 * (the contract in docs/controller.md, DESIGN §5). A push goes out when the
 * set changes, every peer_push_ms after a member last accepted one, and to a
 * member whose push failed on its own backoff (1 s doubling to 5 min). Only
 * the leader pushes; a standby keeps the sets current so it can start at
 * once.
 *
 * The leader also reads every ready member's GET /status/cluster/nodes on
 * the same admin port (2 s timeout; all ready members of a cluster at once,
 * every 5 s until the cluster is formed, then every peer_push_ms, and 1 s
 * after the set changed) for the ClusterFormed condition and the members'
 * nodeId, link and upstreams (status.h). When what they say changed, the
 * cluster's reconcile is queued to write the status; a change of the
 * upstream counts alone is passed on at most once per peer_push_ms.
 */
#ifndef PK_PEERS_H
#define PK_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pk_ctrl;
struct pk_peers;
struct pk_node_report;

struct pk_peers *pk_peers_new(struct pk_ctrl *c); /* owner: the caller */
void pk_peers_free(struct pk_peers *p);

/* Something about cluster key "ns/name" (its slices, or itself) changed. */
void pk_peers_touch(struct pk_peers *p, const char *key);

/* Recompute dirty sets and push what is due. Returns ms until the next
 * tick is needed. */
uint64_t pk_peers_tick(struct pk_peers *p, uint64_t now_ms, bool leader);

/* The reads of cluster "ns/name"'s members the status is to show, into
 * out[0..max) (borrowed: valid until the next pk_peers_tick). Returns how
 * many; *known is false until a round of reads has finished since this
 * controller became leader (the status then keeps what it says). */
size_t pk_peers_reports(const struct pk_peers *p, const char *key, struct pk_node_report *out,
                        size_t max, bool *known);

#endif
