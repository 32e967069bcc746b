/*
 * The controller's HTTP client to the kube-apiserver: one libcurl multi
 * handle drives every request and watch on the caller's loop, over HTTP/2
 * when the apiserver offers it (so all watches share one TLS connection),
 * with the CA, client certificate and key handed to libcurl from memory
 * (CURLOPT_*_BLOB: no temporary files with key material).
 *
 * Requests are asynchronous: pk_kube_request() queues one and its done
 * callback runs from pk_kube_poll() once the response is complete. A watch
 * streams its body to a data callback as bytes arrive. Every request is
 * bounded: a byte cap on buffered responses, a total timeout on requests and
 * a stall detector on watches.
 *
 * The same client also makes the plain-HTTP calls to the nodes' admin ports
 * (pk_kube_request_url), so the whole controller has one loop.
 */
#ifndef PK_KUBE_H
#define PK_KUBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kubeconfig.h"
#include "metrics.h"

struct pk_kube;
struct pk_kube_req;

/* The response. status is the HTTP status (0 when no response arrived: then
 * err says why). body is NUL-terminated and borrowed for the call. The
 * request is freed right after the callback returns. */
typedef void (*pk_kube_done_fn)(void *ud, long status, const char *body, size_t len,
                                const char *err);
/* Streamed body bytes of a watch (only for a 200 response). Return 0 to go
 * on, -1 to abort the stream (done then reports err "aborted"). */
typedef int (*pk_kube_data_fn)(void *ud, const char *data, size_t len);

/* cfg is borrowed and must outlive the client (its token is re-read on
 * rotation). metrics may be NULL; otherwise rest_client_requests_total is
 * registered in it. */
struct pk_kube *pk_kube_new(struct pk_kube_config *cfg, struct pk_metrics *metrics, char *err,
                            size_t errlen);
void pk_kube_free(struct pk_kube *k);

/* Queue a request to the apiserver. path includes the query string. body
 * may be NULL (content_type then too). Returns the request (owned by the
 * client until done runs or pk_kube_cancel), or NULL if the client is at its
 * request cap. */
struct pk_kube_req *pk_kube_request(struct pk_kube *k, const char *method, const char *path,
                                    const char *content_type, const char *body, size_t body_len,
                                    pk_kube_done_fn done, void *ud);
/* Same, to any URL (the nodes' admin ports), without the apiserver's
 * credentials; bearer (may be NULL) is sent as "Authorization: Bearer
 * <bearer>" (the member push's proof). */
struct pk_kube_req *pk_kube_request_url(struct pk_kube *k, const char *method, const char *url,
                                        const char *content_type, const char *body, size_t body_len,
                                        const char *bearer, uint64_t timeout_ms,
                                        pk_kube_done_fn done, void *ud);
/* A watch: GET path; 200 bodies stream to data, anything else is buffered
 * and given to done with its status. */
struct pk_kube_req *pk_kube_watch(struct pk_kube *k, const char *path, pk_kube_data_fn data,
                                  pk_kube_done_fn done, void *ud);
/* Stop a request; neither callback runs afterwards. */
void pk_kube_cancel(struct pk_kube_req *r);

/* Run the transfers: wait up to timeout_ms for network activity or for one
 * of the extra fds (events as for poll(2); revents filled in), then perform
 * and run the callbacks of completed requests. Returns -1 on a fatal multi
 * error, else 0. */
int pk_kube_poll(struct pk_kube *k, const int *fds, const short *events, short *revents,
                 size_t nfds, int timeout_ms);

/* Number of requests in flight (for tests and the shutdown drain). */
size_t pk_kube_inflight(const struct pk_kube *k);

/* Percent-encode s for a query value into buf. */
void pk_kube_escape(const char *s, char *buf, size_t len);

#endif
