/*
 * The cluster (DESIGN §5): this node's identity, its members, and the node
 * links that join it to them.
 *
 *   membership   cluster.join (names re-resolved every join_interval, off the
 *                loop: core/resolve.c) and the controller's push
 *                (PUT /piko/v1/cluster/members on the admin port, admin.c)
 *                give a set of cluster addresses; a member that leaves every
 *                source is dropped at once, with its link.
 *   links        link.c: one WebSocket + yamux link per pair of members on
 *                the cluster port, dialled by the member with the lower
 *                cluster address; the dialler proves the cluster key in the
 *                upgrade, the acceptor in its hello.
 *   routing      each link carries the peer's endpoint table (a snapshot,
 *                then versioned deltas); pk_cluster_pick() chooses a node
 *                that holds an endpoint, round-robin, leaving nodes last.
 *   forwarding   a request with no local upstream becomes a stream on the
 *                chosen link (proxy.c); the far node serves it from its own
 *                tunnels only (x-piko-forward: one hop at most).
 *
 * Single-threaded, on the server's lws loop.
 */
#ifndef PK_CLUSTER_H
#define PK_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "backoff.h"
#include "link_metrics.h"
#include "registry.h"
#include "strmap.h"

struct pk_server;
struct pk_link;
struct pk_resolver;
struct pk_sock_listener;
struct pk_strbuf;

/* Where a member address came from. */
#define PK_MEMBER_PUSHED 0x1

struct pk_member {
	char *addr;         /* "ip:port" / "[v6]:port": the key */
	uint64_t join_mask; /* bit i: cluster.join entry i resolves to it */
	int pushed;         /* in the controller's member set */
	char *push_id;      /* the id the controller gave (a pod name) */
	int push_ready;
	int self;             /* this node (its own address, or it answered as us) */
	struct pk_link *link; /* the link we dialled to it, or NULL */
	char *last_id;        /* the node ID last seen at this address */
	char last_error[160]; /* why the last dial failed */
	int dial_failed;      /* a dial of ours ended before the link was up */
	struct pk_backoff backoff;
	uint64_t next_dial_ms; /* 0: dial at once */
	uint64_t since_ms;     /* when it became a member */
	struct pk_member *next;
};

struct pk_cluster_join {
	struct pk_cluster *cl;
	size_t idx; /* its bit in pk_member.join_mask */
	char *host; /* as configured, brackets stripped */
	int port;
	uint64_t query; /* resolver query in flight, 0 when none */
	int resolved;   /* answered at least once */
	uint64_t next_ms;
};

struct pk_cluster {
	struct pk_server *srv;
	char *node_id;
	char proxy_addr[128], admin_addr[128], cluster_addr[128];
	char *key; /* cluster key, NULL when none */
	size_t key_len;
	struct pk_sock_listener *ln;
	/* cluster.tls: links are TLS both ways when the port has a
	 * certificate (dialled with cluster.tls.client.*). Owned. */
	struct ssl_ctx_st *tls_server, *tls_client;
	struct pk_resolver *resolver;
	struct pk_cluster_join *joins;
	size_t n_joins;
	uint64_t start_ms;
	int join_ok;   /* some join address answered (or there is nothing to join) */
	int converged; /* linked to every reachable member once: ready to serve */
	/* Members (a short list: Piko targets 25 nodes, the push caps 1,024). */
	struct pk_member *members;
	size_t n_members;
	uint64_t push_generation; /* of the last push applied */
	int have_push;            /* a push was applied */
	char *push_cluster;
	/* Every link, dialled or accepted, established or not. */
	struct pk_link *links;
	/* Endpoints held by other nodes: endpoint -> links (round-robin). */
	struct pk_registry *remote;
	/* This node's endpoint table version (one step per change). */
	uint64_t version;
	int leaving;
	struct pk_metric *nodes_gauge;
	struct pk_metric *remote_requests;
	struct pk_link_metrics lm;
};

/* Set up identity, key, membership sources and the cluster port's listener
 * (server.c, before the loop runs). Returns 0, or -1 with err set. */
int pk_cluster_init(struct pk_cluster *cl, struct pk_server *srv, char *err, size_t errlen);

/* A node ID: prefix (may be NULL) and 7 random [a-z0-9]. Owner: the
 * caller. */
char *pk_cluster_make_node_id(const char *prefix);
/* Before the lws context goes: end every link's session (its streams'
 * owners are told) and abort its socket; stop listening. */
void pk_cluster_stop(struct pk_cluster *cl);
/* Free everything (after the context is gone). */
void pk_cluster_free(struct pk_cluster *cl);

/* Every 250 ms: join re-resolution, dials, link timers. */
void pk_cluster_tick(struct pk_cluster *cl, uint64_t now_ms);

/* The local registry changed for endpoint: tell every peer (upstream.c). */
void pk_cluster_local_changed(struct pk_cluster *cl, const char *endpoint);

/* A node with an upstream for endpoint, or NULL: round-robin over the nodes
 * that hold it, a leaving node only when no other does. Counts the pick in
 * piko_upstreams_remote_requests_total{node_id}. */
struct pk_link *pk_cluster_pick(struct pk_cluster *cl, const char *endpoint);

/* Whether the node may report ready: once, at start, it has resolved its
 * join names and linked (with their tables) every member it could reach, or
 * PK_CLUSTER_CONVERGE_MS passed. Before that, a load balancer would send it
 * requests for endpoints it does not know yet. Latched. */
#define PK_CLUSTER_CONVERGE_MS 10000
int pk_cluster_ready(struct pk_cluster *cl);

/* Shutdown: tell every peer we are leaving (they route elsewhere first). */
void pk_cluster_leave(struct pk_cluster *cl);
/* Established links to peers that are not leaving. */
size_t pk_cluster_active_peers(const struct pk_cluster *cl);

/* The controller's push: apply a member set. Returns 0, 409 when the
 * generation is older than the one in force (nothing changes), or 400 with
 * err set when the body is not a member set. */
int pk_cluster_push(struct pk_cluster *cl, const char *body, size_t len, char *err, size_t errlen);
/* The set in force, as pushed (JSON, owned by the caller). */
char *pk_cluster_push_json(const struct pk_cluster *cl);

/* Checks the Authorization header of a push (or any admin cluster call):
 * NULL when allowed (no key, or a valid proof), else the 401 reason. */
const char *pk_cluster_check_proof(const struct pk_cluster *cl, const char *authorization);

/* Status API (protocol reference §7.2), JSON owned by the caller:
 * nodes: the array for /status/cluster/nodes; node: the object of one node
 * ("local" or an ID), NULL when unknown; members: ours, every member
 * address with its sources and link state. */
char *pk_cluster_nodes_json(struct pk_cluster *cl);
char *pk_cluster_node_json(struct pk_cluster *cl, const char *id);
char *pk_cluster_members_json(struct pk_cluster *cl);

/* Membership changed: dial what needs dialling, drop what left (cluster.c,
 * also called by link.c when a link ends). */
void pk_cluster_reconcile(struct pk_cluster *cl);
/* A member by address, or NULL. */
struct pk_member *pk_cluster_member(struct pk_cluster *cl, const char *addr);
/* The established link to member m (dialled by us, or accepted from its
 * address), or NULL. */
struct pk_link *pk_cluster_member_link(struct pk_cluster *cl, const struct pk_member *m);
/* Update the piko_cluster_nodes gauge. */
void pk_cluster_update_gauge(struct pk_cluster *cl);

#endif
