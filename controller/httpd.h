/*
 * pk_httpd: a tiny non-blocking HTTP/1.1 server for the operator's /healthz,
 * /readyz and /metrics, driven by the caller's poll loop (the main loop waits
 * in curl_multi_poll with our descriptors as extra fds).
 *
 * One request per connection (every response says Connection: close). GET and
 * HEAD go to the handler (HEAD gets the same head and no body); any other
 * method is answered 405 without calling it. Limits: PK_HTTPD_MAX_CONNS open
 * connections (further ones are accepted and closed at once, so the backlog
 * cannot fill), a request head of PK_HTTPD_MAX_HEAD bytes (431 beyond), and
 * PK_HTTPD_TIMEOUT_MS both to deliver the request head and of idleness while
 * the response is written (both enforced by pk_httpd_service, so call it at
 * least about once a second). Malformed requests get 400. After the response
 * the write side is shut down and the rest of the input discarded until the
 * client closes, so that unread bytes cannot turn our close into a RST that
 * destroys the response in flight.
 *
 * Single-threaded; no signals (sends use MSG_NOSIGNAL).
 */
#ifndef PK_HTTPD_H
#define PK_HTTPD_H

#include <stddef.h>
#include <stdint.h>

#define PK_HTTPD_MAX_CONNS 64
#define PK_HTTPD_MAX_HEAD 8192
#define PK_HTTPD_TIMEOUT_MS 10000

struct pk_httpd;

/* Fill *status, *content_type (static string; NULL means text/plain) and
 * *body (malloc'd by the handler, freed by httpd; NULL means empty) and
 * *body_len for method "GET" or "HEAD" and path (the request target without
 * its query string). *status 0 is sent as 500. */
typedef void (*pk_httpd_fn)(void *ud, const char *method, const char *path, int *status,
                            const char **content_type, char **body, size_t *body_len);

/* Listen on "host:port": "0.0.0.0:8081", "127.0.0.1:0", "[::1]:0", ":8081"
 * (every interface, dual-stack when IPv6 is there). Port 0 picks one. Returns
 * NULL with err set when it cannot listen. Owner: the caller
 * (pk_httpd_free). */
struct pk_httpd *pk_httpd_new(const char *addr, pk_httpd_fn fn, void *ud, char *err, size_t errlen);

/* The bound port (useful with port 0). */
int pk_httpd_port(const struct pk_httpd *h);

/* Fill up to max entries of fds/events (POLLIN/POLLOUT), listener first then
 * connections; returns how many were filled. Connections left out for want of
 * room are still serviced, only not waited for. */
size_t pk_httpd_fds(const struct pk_httpd *h, int *fds, short *events, size_t max);

/* Do whatever I/O is ready without blocking: accept, read and parse,
 * respond, close, and expire connections by now_ms (monotonic). Checks
 * readiness itself with a zero-timeout poll, so it is cheap when there is
 * nothing to do and safe to call at any time. */
void pk_httpd_service(struct pk_httpd *h, uint64_t now_ms);

/* Close the listener and every connection. */
void pk_httpd_free(struct pk_httpd *h);

#endif
