/*
 * Adding up Prometheus text (exposition format 0.0.4) from several
 * processes that each expose the same registry: the workers of one
 * `piko server --workers N` (dataplane/admin_metrics.c), which must look to
 * a scraper like one server.
 *
 * Series with the same name and labels are summed: counters and histograms
 * (buckets, _sum, _count) add up by definition; gauges add too, which is
 * right for the ones counting things (piko_upstreams, open streams, memory)
 * and counts each worker's view for the others (piko_cluster_nodes). A
 * family keeps its # HELP and # TYPE from the first text that has them,
 * and families and series keep the order of first appearance. Lines that
 * are not a comment nor "series value" are dropped; other comments too.
 */
#ifndef PK_METRICS_MERGE_H
#define PK_METRICS_MERGE_H

#include <stddef.h>

/* The sum of texts[0..n) (lens[i] bytes each, NUL not required), as a new
 * NUL-terminated text owned by the caller; *out_len gets its length. */
char *pk_metrics_merge(const char *const *texts, const size_t *lens, size_t n, size_t *out_len);

#endif
