/*
 * GET /metrics on worker 0 of `piko server --workers N` (workers.h): the
 * other workers' /metrics, asked on their loopback admin ports with the
 * same request (admin auth included), added to worker 0's own
 * (core/metrics_merge.c), so a scraper sees one server.
 *
 * A scrape answers only when every worker has: a sum missing a worker
 * would look to Prometheus like a counter reset. A worker that does not
 * answer (it is restarting) makes the scrape a 502.
 */
#ifndef PK_ADMIN_METRICS_H
#define PK_ADMIN_METRICS_H

#include <stddef.h>

#include <libwebsockets.h>

#include "config.h"
#include "http1.h"

struct pk_admin_metrics;

/* Ask every address of workers with h; own is this worker's rendered text
 * (owned by the gathering from now on). done runs once, from the loop,
 * with the summed text (owned by the callee), or with NULL and the address
 * of a worker that failed. Returns the gathering (owned by itself until
 * done runs), or NULL when done has already run (no worker could be
 * asked). workers must outlive the gathering. */
struct pk_admin_metrics *pk_admin_metrics_gather(struct lws_context *ctx,
                                                 const struct pk_strlist *workers,
                                                 const struct pk_http1_head *h, char *own,
                                                 size_t own_len,
                                                 void (*done)(void *arg, char *text, size_t len,
                                                              const char *failed),
                                                 void *arg);

/* The asker went away: done will not run; the gathering ends. */
void pk_admin_metrics_cancel(struct pk_admin_metrics *g);

#endif
