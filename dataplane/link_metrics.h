/*
 * Metrics of the node links (ours: Piko has gossip instead, see
 * docs/metrics.md for the mapping). Counters are bumped where the link code
 * does the thing counted; gauges are rebuilt from the links and members at
 * each scrape (pk_link_metrics_collect), so they cannot drift from state.
 */
#ifndef PK_LINK_METRICS_H
#define PK_LINK_METRICS_H

#include <stddef.h>

struct pk_cluster;
struct pk_metrics;
struct pk_metric;

/* Directions, the value of the "direction" label. */
enum pk_link_dir {
	PK_LINK_IN = 0, /* accepted from / read from / opened by the peer */
	PK_LINK_OUT,    /* dialled / written / opened by us */
};

struct pk_link_metrics {
	struct pk_metric *connections;      /* counter {direction} */
	struct pk_metric *bytes;            /* counter {direction} */
	struct pk_metric *control_bytes;    /* counter {direction} */
	struct pk_metric *control_messages; /* counter {direction,type} */
	struct pk_metric *endpoint_entries; /* counter {direction} */
	struct pk_metric *streams;          /* counter {direction} */
	struct pk_metric *links;            /* gauge {state} */
	struct pk_metric *up;               /* gauge {addr,node_id} */
	struct pk_metric *remote_endpoints; /* gauge {node_id} */
	struct pk_metric *open_streams;     /* gauge */
};

/* Register into reg (owned by reg). */
void pk_link_metrics_register(struct pk_link_metrics *lm, struct pk_metrics *reg);

/* Add v to a {direction} counter. A NULL metric (not registered, as in unit
 * tests) is ignored. */
void pk_link_metrics_add(struct pk_metric *m, enum pk_link_dir dir, double v);
/* One control message of type ("hello", "snapshot", "delta", "resync",
 * "leaving"). */
void pk_link_metrics_message(struct pk_link_metrics *lm, enum pk_link_dir dir, const char *type);

/* Rebuild the gauges from cl's links and members (at scrape time). */
void pk_link_metrics_collect(struct pk_cluster *cl);

#endif
