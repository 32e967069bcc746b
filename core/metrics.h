/*
 * Prometheus metrics: counters, gauges and histograms, optionally with labels,
 * rendered in the text exposition format (version 0.0.4).
 *
 * Metrics are registered once at start-up in a registry and live until the
 * registry is freed. Label values select a child series, created on first use
 * (label values are copied). Single-threaded: the data plane updates metrics
 * only from its lws service thread.
 */
#ifndef PK_METRICS_H
#define PK_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define PK_METRIC_MAX_LABELS 4

enum pk_metric_type {
	PK_METRIC_COUNTER = 1,
	PK_METRIC_GAUGE,
	PK_METRIC_HISTOGRAM,
};

struct pk_metrics;
struct pk_metric;

/* Owner: the caller; pk_metrics_free() frees every metric in it. */
struct pk_metrics *pk_metrics_new(void);
void pk_metrics_free(struct pk_metrics *m);

/* Register a metric. label_names is an array of nlabels names (may be NULL
 * when nlabels is 0). For histograms, buckets holds nbuckets ascending upper
 * bounds (+Inf is implicit); for other types pass NULL, 0. Returns the metric,
 * owned by the registry. */
struct pk_metric *pk_metrics_register(struct pk_metrics *m, enum pk_metric_type type,
                                      const char *name, const char *help,
                                      const char *const *label_names, size_t nlabels,
                                      const double *buckets, size_t nbuckets);

/* Update a series. label_values has exactly the metric's number of labels
 * (NULL when it has none). */
void pk_metric_add(struct pk_metric *metric, const char *const *label_values, double v);
void pk_metric_set(struct pk_metric *metric, const char *const *label_values, double v);
void pk_metric_observe(struct pk_metric *metric, const char *const *label_values, double v);
/* Drop a series (e.g. of a deleted object), so label sets that come and go
 * do not accumulate. No-op when it does not exist or the metric has no
 * labels. */
void pk_metric_remove(struct pk_metric *metric, const char *const *label_values);
/* Drop every series of a labelled metric (no-op without labels): for gauges
 * rebuilt from state at each scrape, whose label sets (peers) come and go. */
void pk_metric_clear(struct pk_metric *metric);

/* Current value of a counter/gauge series (0 if it does not exist). For tests
 * and for the status API. */
double pk_metric_value(const struct pk_metric *metric, const char *const *label_values);

/* Render the whole registry in Prometheus text format into a new
 * NUL-terminated string owned by the caller; *len gets its length. Metrics
 * appear in registration order with # HELP and # TYPE lines. */
char *pk_metrics_render(const struct pk_metrics *m, size_t *len);

/* v as Go's strconv.FormatFloat(v, 'g', -1, 64) writes it (as the
 * exposition format's values are written): NaN, +Inf, 0, 123456, 1e+06. */
void pk_metrics_format_float(double v, char out[40]);

/* Prometheus client default latency buckets: .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10 */
extern const double pk_metrics_default_buckets[11];
/* 256 * 4^k for k = 0..7 (Piko's size buckets) */
extern const double pk_metrics_size_buckets[8];

#endif
