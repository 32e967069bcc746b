/*
 * Prometheus texts (exposition format 0.0.4) from several processes that
 * expose the same registry, as one text: the workers of one
 * `piko server --workers N` (dataplane/admin_gather.c).
 *
 * With a label name, text i's series get that label with the value i
 * (worker="1"), so each worker's series stay its own: a worker that
 * restarts resets only its own counters, which Prometheus reads right,
 * and gauges (process_start_time_seconds, piko_cluster_nodes) keep their
 * meaning; sum() in a query gives the server's figure. Series with the
 * same name and labels are summed. A family keeps its # HELP and # TYPE
 * from the first text that has them, and families and series keep the
 * order of first appearance, a family's series together as the format
 * requires. Lines that are not a comment nor "series value" are dropped;
 * other comments too.
 */
#ifndef PK_METRICS_MERGE_H
#define PK_METRICS_MERGE_H

#include <stddef.h>

/* texts[0..n) (lens[i] bytes each, NUL not required) as one, each text's
 * series labelled label="<i>" first when label is not NULL; a new
 * NUL-terminated text owned by the caller; *out_len gets its length. */
char *pk_metrics_merge(const char *const *texts, const size_t *lens, size_t n, const char *label,
                       size_t *out_len);

#endif
