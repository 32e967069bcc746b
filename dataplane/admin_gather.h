/*
 * Admin routes that answer for the whole of `piko server --workers N`
 * (workers.h) on worker 0: the other workers are asked the same request
 * (admin auth included, and the workers' secret header, which makes them
 * answer it themselves) on their loopback admin ports, and their bodies
 * combined with worker 0's own, so a scraper or `piko server status` sees
 * one server:
 *
 *   GET /metrics                     every worker's series, each labelled
 *                                    worker="<i>" (core/metrics_merge.c)
 *   GET /status/upstream/endpoints   connections per endpoint summed
 *
 * An answer comes only when every worker has answered, within
 * PK_ADMIN_GATHER_TIMEOUT_MS (under Prometheus's default scrape timeout):
 * a worker that does not (it is restarting, or hung) makes it a 502.
 */
#ifndef PK_ADMIN_GATHER_H
#define PK_ADMIN_GATHER_H

#include <stddef.h>

#include <libwebsockets.h>

#include "config.h"
#include "http1.h"

#define PK_ADMIN_GATHER_TIMEOUT_MS 5000

struct pk_admin_gather;

/* Combines n bodies (texts[0] is this worker's) into a new NUL-terminated
 * body owned by the caller. */
typedef char *(*pk_admin_gather_merge_fn)(const char *const *texts, const size_t *lens, size_t n,
                                          size_t *out_len);

/* Ask every address of workers with h and the secret header; own is this
 * worker's body (owned by the gathering from now on). done runs once, from
 * the loop, with the combined body (owned by the callee), or with NULL and
 * the address of a worker that failed. Returns the gathering (owned by
 * itself until done runs), or NULL when done has already run (no worker
 * could be asked). workers and secret must outlive the gathering. */
struct pk_admin_gather *
pk_admin_gather(struct lws_context *ctx, const struct pk_strlist *workers, const char *secret,
                const struct pk_http1_head *h, char *own, size_t own_len,
                pk_admin_gather_merge_fn merge,
                void (*done)(void *arg, char *body, size_t len, const char *failed), void *arg);

/* The asker went away: done will not run; the gathering ends. */
void pk_admin_gather_cancel(struct pk_admin_gather *g);

/* The secret header's line ("X-Piko-Worker-Secret: <secret>\r\n") in out. */
void pk_admin_worker_header(const char *secret, char *out, size_t cap);

/* /metrics bodies, worker i's series labelled worker="<i>". */
char *pk_admin_gather_metrics(const char *const *texts, const size_t *lens, size_t n,
                              size_t *out_len);

/* /status/upstream/endpoints bodies ({"endpoint": connections, ...})
 * summed per endpoint; a body that is not such an object is skipped. */
char *pk_admin_gather_endpoints(const char *const *texts, const size_t *lens, size_t n,
                                size_t *out_len);

#endif
