/*
 * The standard Prometheus process metrics (process_cpu_seconds_total,
 * process_resident_memory_bytes, ...), named and described as the Go and
 * Python clients' process collectors do, read from /proc at scrape time.
 *
 * Piko exposes the Go runtime's go_* series instead; a C program has no Go
 * runtime, so we expose none of those (no fake values) and these honest
 * equivalents instead (docs/metrics.md).
 */
#ifndef PK_PROCESS_METRICS_H
#define PK_PROCESS_METRICS_H

struct pk_metrics;
struct pk_metric;

struct pk_process_metrics {
	struct pk_metric *cpu, *rss, *vsize, *start, *open_fds, *max_fds;
};

/* Register into reg (the metrics are owned by reg). */
void pk_process_metrics_register(struct pk_process_metrics *pm, struct pk_metrics *reg);
/* Read /proc/self and set the metrics; before each render. A value that
 * cannot be read keeps its last one. */
void pk_process_metrics_update(struct pk_process_metrics *pm);

#endif
