/*
 * The admin port's `?forward=<node>` interceptor (protocol reference §7.1):
 * the whole request is replayed to that node's admin port and its answer
 * relayed, so `piko server status --forward <id>` asks any node through
 * one. 15 s timeout (504 {"error":"upstream timeout"}), 502
 * {"error":"upstream unreachable"} when it cannot be reached.
 */
#ifndef PK_ADMIN_FORWARD_H
#define PK_ADMIN_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "http1.h"

#define PK_ADMIN_FORWARD_TIMEOUT_MS 15000
/* The header that marks a --workers worker's request to another's admin
 * port (admin_gather.h). A forward never replays the asker's own: only
 * the extra lines a worker adds carry it. */
#define PK_ADMIN_WORKER_HEADER "X-Piko-Worker-Secret"

struct pk_admin_fwd;

/* Replay h (and body) to the admin port at addr ("host:port"), with
 * extra (NULL, or header lines each ending in CRLF) added. done runs once,
 * from the loop, with the complete response to send (owned by the callee)
 * — the node's own, or our 502, or our 504 after timeout_ms (0:
 * PK_ADMIN_FORWARD_TIMEOUT_MS). Returns the forward (owned by itself until
 * done runs), or NULL when addr is unusable (done is then not called). */
struct pk_admin_fwd *pk_admin_forward(struct lws_context *ctx, const char *addr,
                                      const struct pk_http1_head *h, const char *body,
                                      size_t body_len, const char *extra, uint64_t timeout_ms,
                                      void (*done)(void *arg, char *resp, size_t len), void *arg);

/* The asker went away: done will not run; the forward ends. */
void pk_admin_forward_cancel(struct pk_admin_fwd *f);

#endif
