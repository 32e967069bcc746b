/*
 * Admin routes that answer for the whole of `piko server --workers N`
 * (workers.h) on worker 0: the other workers are asked the same request
 * (admin auth included) on their loopback admin ports, and their bodies
 * combined with worker 0's own, so a scraper or `piko server status` sees
 * one server:
 *
 *   GET /metrics                     series summed (core/metrics_merge.c)
 *   GET /status/upstream/endpoints   connections per endpoint summed
 *
 * An answer comes only when every worker has answered: a sum missing a
 * worker would look to Prometheus like a counter reset. A worker that does
 * not answer (it is restarting) makes the request a 502.
 */
#ifndef PK_ADMIN_GATHER_H
#define PK_ADMIN_GATHER_H

#include <stddef.h>

#include <libwebsockets.h>

#include "config.h"
#include "http1.h"

struct pk_admin_gather;

/* Combines n bodies (texts[0] is this worker's) into a new NUL-terminated
 * body owned by the caller. */
typedef char *(*pk_admin_gather_merge_fn)(const char *const *texts, const size_t *lens, size_t n,
                                          size_t *out_len);

/* Ask every address of workers with h; own is this worker's body (owned
 * by the gathering from now on). done runs once, from the loop, with the
 * combined body (owned by the callee), or with NULL and the address of a
 * worker that failed. Returns the gathering (owned by itself until done
 * runs), or NULL when done has already run (no worker could be asked).
 * workers must outlive the gathering. */
struct pk_admin_gather *
pk_admin_gather(struct lws_context *ctx, const struct pk_strlist *workers,
                const struct pk_http1_head *h, char *own, size_t own_len,
                pk_admin_gather_merge_fn merge,
                void (*done)(void *arg, char *body, size_t len, const char *failed), void *arg);

/* The asker went away: done will not run; the gathering ends. */
void pk_admin_gather_cancel(struct pk_admin_gather *g);

/* /status/upstream/endpoints bodies ({"endpoint": connections, ...})
 * summed per endpoint; a body that is not such an object is skipped. */
char *pk_admin_gather_endpoints(const char *const *texts, const size_t *lens, size_t n,
                                size_t *out_len);

#endif
