/*
 * Node-link metrics: registration, the counters' helper and the gauges
 * rebuilt at scrape time. The names and labels are documented in
 * docs/metrics.md, which tests/integration/test_dashboards.py reads.
 */
#include "link_metrics.h"

#include <string.h>

#include "cluster.h"
#include "link.h"
#include "metrics.h"
#include "strmap.h"

static const char *const dir_names[] = {"inbound", "outbound"};

void pk_link_metrics_register(struct pk_link_metrics *lm, struct pk_metrics *reg)
{
	static const char *const dir[] = {"direction"};
	static const char *const dir_type[] = {"direction", "type"};
	static const char *const state[] = {"state"};
	static const char *const addr_node[] = {"addr", "node_id"};
	static const char *const node[] = {"node_id"};
	lm->connections = pk_metrics_register(
	    reg, PK_METRIC_COUNTER, "piko_link_connections_total",
	    "Node-link connections on the cluster port: accepted (inbound) or dialled (outbound).",
	    dir, 1, NULL, 0);
	lm->bytes = pk_metrics_register(
	    reg, PK_METRIC_COUNTER, "piko_link_bytes_total",
	    "Bytes read from (inbound) or written to (outbound) node links, before TLS.", dir, 1,
	    NULL, 0);
	lm->control_bytes = pk_metrics_register(
	    reg, PK_METRIC_COUNTER, "piko_link_control_bytes_total",
	    "Bytes of control messages (hello, endpoint tables, resync, leaving) on node links.",
	    dir, 1, NULL, 0);
	lm->control_messages = pk_metrics_register(
	    reg, PK_METRIC_COUNTER, "piko_link_control_messages_total",
	    "Control messages received (inbound) or sent (outbound) on node links, by type.",
	    dir_type, 2, NULL, 0);
	lm->endpoint_entries = pk_metrics_register(
	    reg, PK_METRIC_COUNTER, "piko_link_endpoint_entries_total",
	    "Endpoint entries carried by endpoint-table snapshots and deltas on node links.", dir,
	    1, NULL, 0);
	lm->streams = pk_metrics_register(reg, PK_METRIC_COUNTER, "piko_link_streams_total",
	                                  "Proxied streams over node links: forwarded to a peer "
	                                  "(outbound) or from one (inbound).",
	                                  dir, 1, NULL, 0);
	lm->links = pk_metrics_register(reg, PK_METRIC_GAUGE, "piko_links",
	                                "Node links of this node by state.", state, 1, NULL, 0);
	lm->up = pk_metrics_register(
	    reg, PK_METRIC_GAUGE, "piko_link_up",
	    "1 when the link to this member is established, else 0 (one series per member).",
	    addr_node, 2, NULL, 0);
	lm->remote_endpoints = pk_metrics_register(
	    reg, PK_METRIC_GAUGE, "piko_link_remote_endpoints",
	    "Endpoints in the table a peer announced over its link.", node, 1, NULL, 0);
	lm->open_streams = pk_metrics_register(
	    reg, PK_METRIC_GAUGE, "piko_link_open_streams",
	    "Proxied streams open on the node links of this node.", NULL, 0, NULL, 0);
	/* Every known label set from the start, at 0 (as Piko's unlabelled
	 * gossip counters are): a node that never accepted a link still shows
	 * piko_link_connections_total{direction="inbound"} 0, so rate() and
	 * dashboards see a series, not a gap. */
	static const char *const types[] = {"hello", "snapshot", "delta", "resync", "leaving"};
	struct pk_metric *by_dir[] = {lm->connections, lm->bytes, lm->control_bytes,
	                              lm->endpoint_entries, lm->streams};
	for (int d = PK_LINK_IN; d <= PK_LINK_OUT; d++) {
		for (size_t i = 0; i < sizeof(by_dir) / sizeof(by_dir[0]); i++)
			pk_link_metrics_add(by_dir[i], (enum pk_link_dir)d, 0);
		for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
			const char *lv[] = {dir_names[d], types[i]};
			pk_metric_add(lm->control_messages, lv, 0);
		}
	}
}

void pk_link_metrics_add(struct pk_metric *m, enum pk_link_dir dir, double v)
{
	if (!m)
		return;
	const char *lv[] = {dir_names[dir]};
	pk_metric_add(m, lv, v);
}

void pk_link_metrics_message(struct pk_link_metrics *lm, enum pk_link_dir dir, const char *type)
{
	if (!lm->control_messages)
		return;
	const char *lv[] = {dir_names[dir], type};
	pk_metric_add(lm->control_messages, lv, 1);
}

void pk_link_metrics_collect(struct pk_cluster *cl)
{
	struct pk_link_metrics *lm = &cl->lm;
	if (!lm->links)
		return;
	static const char *const states[] = {"connecting", "handshake", "open", "established",
	                                     "closing"};
	double by_state[5] = {0};
	size_t streams = 0;
	pk_metric_clear(lm->remote_endpoints);
	for (struct pk_link *l = cl->links; l; l = l->next) {
		if ((size_t)l->state < sizeof(by_state) / sizeof(by_state[0]))
			by_state[l->state]++;
		/* Proxied streams: the control stream is not one. */
		size_t n = pk_link_streams(l);
		streams += n - (l->ctrl && n ? 1 : 0);
		if (l->state == PK_LINK_ESTABLISHED && l->peer_id) {
			const char *lv[] = {l->peer_id};
			pk_metric_set(lm->remote_endpoints, lv,
			              l->eps ? (double)pk_strmap_count(l->eps) : 0);
		}
	}
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
		const char *lv[] = {states[i]};
		pk_metric_set(lm->links, lv, by_state[i]);
	}
	pk_metric_set(lm->open_streams, NULL, (double)streams);

	/* One series per member, down ones included (that is the point), plus
	 * established links of peers that are not members here (they dialled
	 * us first). Rebuilt each time: members and node IDs come and go. */
	pk_metric_clear(lm->up);
	for (struct pk_member *m = cl->members; m; m = m->next) {
		if (m->self)
			continue;
		struct pk_link *l = pk_cluster_member_link(cl, m);
		const char *id = l && l->peer_id ? l->peer_id : m->last_id ? m->last_id : "";
		const char *lv[] = {m->addr, id};
		pk_metric_set(lm->up, lv, l ? 1 : 0);
	}
	for (struct pk_link *l = cl->links; l; l = l->next) {
		if (l->state != PK_LINK_ESTABLISHED || !l->peer_id)
			continue;
		struct pk_member *m = pk_cluster_member(cl, l->addr);
		if (m && pk_cluster_member_link(cl, m) == l)
			continue;
		const char *lv[] = {l->addr, l->peer_id};
		pk_metric_set(lm->up, lv, 1);
	}
}
