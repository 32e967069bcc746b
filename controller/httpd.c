/*
 * The operator's health and metrics server; see httpd.h for the contract.
 *
 * Each connection goes READ (request head, parsed by http_parser) -> WRITE
 * (the whole response, built in one buffer) -> DRAIN (write side shut down,
 * input discarded until the client's FIN) -> closed. Responses are tiny and
 * the connection count is capped, so there is no queueing or backpressure
 * beyond "write what the kernel takes, wait for POLLOUT".
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <http_parser.h>

#include "buf.h"
#include "httpd.h"
#include "listen.h"
#include "strbuf.h"

/* Reads are at most this; the head cap bounds what one connection holds. */
#define READ_CHUNK 4096
/* Accepts per service call, so a flood cannot starve the connections. */
#define ACCEPTS_PER_SERVICE 32
/* Input discarded after the response before we give up and close. */
#define DRAIN_MAX (64 * 1024)

enum conn_state {
	ST_READ = 0,
	ST_WRITE,
	ST_DRAIN,
};

struct conn {
	int fd;
	enum conn_state state;
	http_parser parser;
	bool head_done;
	size_t fed;       /* head bytes given to the parser so far */
	struct pk_sb url; /* request target, at most the head cap */
	char *out;        /* the response, owned by the conn */
	size_t out_len, out_off;
	size_t drained;
	uint64_t head_deadline_ms; /* the head must be in by then */
	uint64_t last_ms;          /* last progress, for the idle timeout */
};

struct pk_httpd {
	int lfd;
	int port;
	pk_httpd_fn fn;
	void *ud;
	struct conn *conns[PK_HTTPD_MAX_CONNS];
	size_t nconns;
};

struct pk_httpd *pk_httpd_new(const char *addr, pk_httpd_fn fn, void *ud, char *err, size_t errlen)
{
	int port;
	int fd = pk_sock_listen_fd(addr, &port, err, errlen);
	if (fd == -1)
		return NULL;

	/* Owner: the caller; pk_httpd_free(). */
	struct pk_httpd *h = pk_xcalloc(1, sizeof(*h));
	h->lfd = fd;
	h->port = port;
	h->fn = fn;
	h->ud = ud;
	return h;
}

int pk_httpd_port(const struct pk_httpd *h)
{
	return h->port;
}

/* ---- connections ------------------------------------------------------------ */

static void conn_free(struct conn *c)
{
	close(c->fd);
	free(c->url.p);
	free(c->out);
	free(c);
}

/* Remove connection i (order does not matter). */
static void conn_close(struct pk_httpd *h, size_t i)
{
	conn_free(h->conns[i]);
	h->conns[i] = h->conns[--h->nconns];
	h->conns[h->nconns] = NULL;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct conn *c = p->data;
	/* Bounded: the URL is part of the head, which is capped. */
	pk_sb_put(&c->url, at, len);
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct conn *c = p->data;
	c->head_done = true;
	/* Stop here: the body (if any) is never looked at, and parsing it
	 * could only produce errors we do not care about. */
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_headers_complete = on_headers_complete,
};

static const char *reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return "Unknown";
	}
}

/* Build the response into c->out and switch to writing. body is taken over
 * (may be NULL); with_body false sends the head only (HEAD). */
static void respond(struct conn *c, int status, const char *ctype, const char *extra, char *body,
                    size_t body_len, bool with_body, uint64_t now_ms)
{
	struct pk_sb b = {0};
	pk_sb_printf(&b,
	             "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
	             "Connection: close\r\n\r\n",
	             status, reason(status), ctype ? ctype : "text/plain; charset=utf-8", body_len,
	             extra ? extra : "");
	if (with_body && body)
		pk_sb_put(&b, body, body_len);
	free(body);
	free(c->out);
	c->out = pk_sb_finish(&b, &c->out_len);
	c->out_off = 0;
	c->state = ST_WRITE;
	c->last_ms = now_ms;
}

static void respond_text(struct conn *c, int status, const char *text, const char *extra,
                         uint64_t now_ms)
{
	respond(c, status, NULL, extra, pk_xstrdup(text), strlen(text), true, now_ms);
}

/* The head is complete: answer it. */
static void dispatch(struct pk_httpd *h, struct conn *c, uint64_t now_ms)
{
	enum http_method m = (enum http_method)c->parser.method;
	int status = 0;
	const char *ctype = NULL;
	char *body = NULL, *q;
	size_t body_len = 0;
	char *path = pk_sb_finish(&c->url, NULL);

	if (m != HTTP_GET && m != HTTP_HEAD) {
		free(path);
		respond_text(c, 405, "method not allowed\n", "Allow: GET, HEAD\r\n", now_ms);
		return;
	}
	/* Handlers route on the path; a query string is not part of it. */
	q = strchr(path, '?');
	if (q)
		*q = '\0';
	h->fn(h->ud, http_method_str(m), path, &status, &ctype, &body, &body_len);
	free(path);
	if (!body)
		body_len = 0;
	respond(c, status ? status : 500, ctype, NULL, body, body_len, m != HTTP_HEAD, now_ms);
}

/* Returns false when the connection is to be closed. */
static bool conn_read(struct pk_httpd *h, struct conn *c, uint64_t now_ms)
{
	char buf[READ_CHUNK];
	for (;;) {
		/* Never read more than one byte past the head cap: enough to
		 * know it was exceeded, and nothing beyond is buffered. */
		size_t want = PK_HTTPD_MAX_HEAD + 1 - c->fed;
		ssize_t n;
		size_t used;
		if (want > sizeof(buf))
			want = sizeof(buf);
		n = recv(c->fd, buf, want, 0);
		if (n == -1)
			return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
		if (n == 0)
			return false; /* gone before the request was complete */
		c->last_ms = now_ms;
		used = http_parser_execute(&c->parser, &parser_settings, buf, (size_t)n);
		if (c->head_done) {
			/* Paused on the head's final LF: count it too. */
			if (c->fed + used + 1 > PK_HTTPD_MAX_HEAD)
				respond_text(c, 431, "request header fields too large\n", NULL,
				             now_ms);
			else
				dispatch(h, c, now_ms);
			return true;
		}
		c->fed += (size_t)n;
		if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
			respond_text(c, 400, "bad request\n", NULL, now_ms);
			return true;
		}
		if (c->fed > PK_HTTPD_MAX_HEAD) {
			respond_text(c, 431, "request header fields too large\n", NULL, now_ms);
			return true;
		}
	}
}

/* Returns false when the connection is to be closed. */
static bool conn_write(struct conn *c, uint64_t now_ms)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n == -1)
			return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
		c->out_off += (size_t)n;
		c->last_ms = now_ms;
	}
	free(c->out);
	c->out = NULL;
	/* FIN now; close once the client has closed too (see DRAIN). */
	if (shutdown(c->fd, SHUT_WR) == -1)
		return false;
	c->state = ST_DRAIN;
	return true;
}

/* Returns false when the connection is to be closed. */
static bool conn_drain(struct conn *c, uint64_t now_ms)
{
	char buf[READ_CHUNK];
	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
		if (n == -1)
			return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
		if (n == 0)
			return false;
		c->last_ms = now_ms;
		c->drained += (size_t)n;
		if (c->drained > DRAIN_MAX)
			return false;
	}
}

static void accept_some(struct pk_httpd *h, uint64_t now_ms)
{
	for (int i = 0; i < ACCEPTS_PER_SERVICE; i++) {
		int fd = accept4(h->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1)
			return; /* EAGAIN, or EMFILE and friends: try again next time */
		if (h->nconns == PK_HTTPD_MAX_CONNS) {
			/* Full: refuse by closing, rather than leaving it in
			 * the backlog where it would keep the listener
			 * readable. */
			close(fd);
			continue;
		}
		/* Owner: h->conns; freed by conn_close(). */
		struct conn *c = pk_xcalloc(1, sizeof(*c));
		c->fd = fd;
		c->state = ST_READ;
		http_parser_init(&c->parser, HTTP_REQUEST);
		c->parser.data = c;
		c->head_deadline_ms = now_ms + PK_HTTPD_TIMEOUT_MS;
		c->last_ms = now_ms;
		h->conns[h->nconns++] = c;
	}
}

static short conn_events(const struct conn *c)
{
	return c->state == ST_WRITE ? POLLOUT : POLLIN;
}

size_t pk_httpd_fds(const struct pk_httpd *h, int *fds, short *events, size_t max)
{
	size_t n = 0;
	if (n < max) {
		fds[n] = h->lfd;
		events[n++] = POLLIN;
	}
	for (size_t i = 0; i < h->nconns && n < max; i++) {
		fds[n] = h->conns[i]->fd;
		events[n++] = conn_events(h->conns[i]);
	}
	return n;
}

void pk_httpd_service(struct pk_httpd *h, uint64_t now_ms)
{
	struct pollfd pfd[PK_HTTPD_MAX_CONNS + 1];
	size_t n = 0;

	/* Our own zero-timeout poll: the caller's poll may have woken for
	 * other descriptors, and this keeps us from reading idle sockets. */
	pfd[n++] = (struct pollfd){.fd = h->lfd, .events = POLLIN};
	for (size_t i = 0; i < h->nconns; i++)
		pfd[n++] =
		    (struct pollfd){.fd = h->conns[i]->fd, .events = conn_events(h->conns[i])};
	if (poll(pfd, n, 0) == -1)
		return;

	/* Accept first, so a request that came with the connection is
	 * answered in this same call. */
	size_t polled = h->nconns;
	if (pfd[0].revents & POLLIN)
		accept_some(h, now_ms);

	/* Backwards, so conn_close's swap with the last entry only moves an
	 * entry already handled; entries below polled still match pfd. */
	for (size_t i = h->nconns; i-- > 0;) {
		struct conn *c = h->conns[i];
		/* New ones were not polled: just try, recv says EAGAIN. */
		short re = i < polled ? pfd[i + 1].revents : POLLIN;
		bool keep = true;

		if (re & (POLLIN | POLLOUT | POLLERR | POLLHUP)) {
			if (c->state == ST_READ)
				keep = conn_read(h, c, now_ms);
			/* A response built just now is written at once. */
			if (keep && c->state == ST_WRITE)
				keep = conn_write(c, now_ms);
			if (keep && c->state == ST_DRAIN)
				keep = conn_drain(c, now_ms);
		}
		if (keep && c->state == ST_READ && now_ms >= c->head_deadline_ms)
			keep = false; /* slow or silent client: no answer owed */
		if (keep && now_ms >= c->last_ms + PK_HTTPD_TIMEOUT_MS)
			keep = false;
		if (!keep)
			conn_close(h, i);
	}
}

void pk_httpd_free(struct pk_httpd *h)
{
	if (!h)
		return;
	while (h->nconns > 0)
		conn_close(h, h->nconns - 1);
	close(h->lfd);
	free(h);
}
