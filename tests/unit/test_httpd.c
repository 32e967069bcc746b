/*
 * The health/metrics server over real loopback sockets, driven in this one
 * thread: a client socket writes a request, then a bounded loop polls the
 * server's descriptors and the client's, calls pk_httpd_service and reads
 * the reply until EOF. Covers 200 with body, query strings, 404, 405, the
 * head cap (431, at the exact boundary too), HEAD, 400 for garbage, a client
 * vanishing mid-request (FIN and RST), the connection cap, the timeouts, and
 * that the server keeps serving after each of them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httpd.h"

#define LOOPS 500
#define METRICS "# TYPE up gauge\nup 1\n"

/* The fake clock: advances 1 ms per loop so no timeout fires by accident. */
static uint64_t now = 1000000;
static int handler_calls;
static char last_path[256];
static char last_method[16];

static void handler(void *ud, const char *method, const char *path, int *status,
                    const char **content_type, char **body, size_t *body_len)
{
	(void)ud;
	handler_calls++;
	snprintf(last_path, sizeof(last_path), "%s", path);
	snprintf(last_method, sizeof(last_method), "%s", method);
	if (!strcmp(path, "/healthz") || !strcmp(path, "/readyz")) {
		*status = 200;
		*body = strdup("ok\n");
		*body_len = 3;
	} else if (!strcmp(path, "/metrics")) {
		*status = 200;
		*content_type = "text/plain; version=0.0.4; charset=utf-8";
		*body = strdup(METRICS);
		*body_len = strlen(METRICS);
	} else {
		*status = 404;
		*body = strdup("not found\n");
		*body_len = 10;
	}
}

static int setup(void **state)
{
	char err[256] = "";
	struct pk_httpd *h = pk_httpd_new("127.0.0.1:0", handler, NULL, err, sizeof(err));
	assert_non_null(h);
	assert_true(pk_httpd_port(h) > 0);
	*state = h;
	handler_calls = 0;
	return 0;
}

static int teardown(void **state)
{
	pk_httpd_free(*state);
	return 0;
}

static int client(const struct pk_httpd *h)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)pk_httpd_port(h));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* Completes against the backlog, before any accept. */
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void send_all(int fd, const char *d, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, d, len, MSG_NOSIGNAL);
		assert_true(n > 0);
		d += n;
		len -= (size_t)n;
	}
}

/* One poll over the server's descriptors (and cfd, if >= 0), then service. */
static void spin(struct pk_httpd *h, int cfd)
{
	int fds[PK_HTTPD_MAX_CONNS + 2];
	short ev[PK_HTTPD_MAX_CONNS + 2];
	struct pollfd p[PK_HTTPD_MAX_CONNS + 2];
	size_t n = pk_httpd_fds(h, fds, ev, PK_HTTPD_MAX_CONNS + 1);
	for (size_t i = 0; i < n; i++)
		p[i] = (struct pollfd){.fd = fds[i], .events = ev[i]};
	if (cfd >= 0)
		p[n++] = (struct pollfd){.fd = cfd, .events = POLLIN};
	assert_true(poll(p, n, 10) >= 0);
	pk_httpd_service(h, ++now);
}

/* Drive the server until the client sees EOF; returns the bytes read. */
static size_t read_reply(struct pk_httpd *h, int fd, char *out, size_t cap)
{
	size_t len = 0;
	for (int i = 0; i < LOOPS; i++) {
		spin(h, fd);
		for (;;) {
			ssize_t n = recv(fd, out + len, cap - 1 - len, MSG_DONTWAIT);
			if (n > 0) {
				len += (size_t)n;
				assert_true(len < cap - 1);
				continue;
			}
			if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
				out[len] = '\0';
				return len;
			}
			break;
		}
	}
	fail_msg("no EOF after %d loops (got %zu bytes)", LOOPS, len);
	return 0;
}

static size_t exchange(struct pk_httpd *h, const char *req, size_t reqlen, char *out, size_t cap)
{
	int fd = client(h);
	size_t n;
	send_all(fd, req, reqlen);
	n = read_reply(h, fd, out, cap);
	close(fd);
	return n;
}

/* Loop until the server holds no connection (only the listener is polled). */
static void settle(struct pk_httpd *h)
{
	int fds[4];
	short ev[4];
	for (int i = 0; i < LOOPS; i++) {
		if (pk_httpd_fds(h, fds, ev, 4) == 1)
			return;
		spin(h, -1);
	}
	fail_msg("connections still open");
}

static const char *body_of(const char *resp)
{
	const char *b = strstr(resp, "\r\n\r\n");
	assert_non_null(b);
	return b + 4;
}

static void expect_healthz(struct pk_httpd *h)
{
	char out[4096];
	const char *req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
	exchange(h, req, strlen(req), out, sizeof(out));
	assert_true(!strncmp(out, "HTTP/1.1 200 OK\r\n", 17));
	assert_string_equal(body_of(out), "ok\n");
}

static void test_get_200(void **state)
{
	struct pk_httpd *h = *state;
	char out[4096];
	const char *req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n";
	exchange(h, req, strlen(req), out, sizeof(out));
	assert_true(!strncmp(out, "HTTP/1.1 200 OK\r\n", 17));
	assert_non_null(
	    strstr(out, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
	assert_non_null(strstr(out, "\r\nConnection: close\r\n"));
	char cl[64];
	snprintf(cl, sizeof(cl), "\r\nContent-Length: %zu\r\n", strlen(METRICS));
	assert_non_null(strstr(out, cl));
	assert_string_equal(body_of(out), METRICS);
	assert_string_equal(last_method, "GET");
	assert_string_equal(last_path, "/metrics");

	/* HTTP/1.0, and the query string is not part of the path. */
	req = "GET /healthz?verbose=1 HTTP/1.0\r\n\r\n";
	exchange(h, req, strlen(req), out, sizeof(out));
	assert_true(!strncmp(out, "HTTP/1.1 200 OK\r\n", 17));
	assert_string_equal(last_path, "/healthz");
	assert_non_null(strstr(out, "\r\nContent-Type: text/plain; charset=utf-8\r\n"));
	assert_string_equal(body_of(out), "ok\n");

	/* Split into one-byte writes. */
	int fd = client(h);
	req = "GET /readyz HTTP/1.1\r\n\r\n";
	for (size_t i = 0; req[i]; i++) {
		send_all(fd, req + i, 1);
		spin(h, fd);
	}
	read_reply(h, fd, out, sizeof(out));
	close(fd);
	assert_true(!strncmp(out, "HTTP/1.1 200 OK\r\n", 17));
	assert_string_equal(last_path, "/readyz");
	settle(h);
}

static void test_404(void **state)
{
	struct pk_httpd *h = *state;
	char out[4096];
	const char *req = "GET /nope HTTP/1.1\r\n\r\n";
	exchange(h, req, strlen(req), out, sizeof(out));
	assert_true(!strncmp(out, "HTTP/1.1 404 Not Found\r\n", 24));
	assert_string_equal(body_of(out), "not found\n");
}

static void test_405(void **state)
{
	struct pk_httpd *h = *state;
	char out[4096];
	/* With a body the server never reads: the response still arrives
	 * intact (no RST from unread input). */
	const char *req = "POST /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
	exchange(h, req, strlen(req), out, sizeof(out));
	assert_true(!strncmp(out, "HTTP/1.1 405 Method Not Allowed\r\n", 33));
	assert_non_null(strstr(out, "\r\nAllow: GET, HEAD\r\n"));
	assert_int_equal(handler_calls, 0);
	req = "DELETE /metrics HTTP/1.1\r\n\r\n";
	exchange(h, req, strlen(req), out, sizeof(out));
	assert_true(!strncmp(out, "HTTP/1.1 405 ", 13));
	assert_int_equal(handler_calls, 0);
}

static void test_head(void **state)
{
	struct pk_httpd *h = *state;
	char out[4096];
	char cl[64];
	const char *req = "HEAD /metrics HTTP/1.1\r\n\r\n";
	exchange(h, req, strlen(req), out, sizeof(out));
	assert_true(!strncmp(out, "HTTP/1.1 200 OK\r\n", 17));
	/* The length GET would send, and no body. */
	snprintf(cl, sizeof(cl), "\r\nContent-Length: %zu\r\n", strlen(METRICS));
	assert_non_null(strstr(out, cl));
	assert_string_equal(body_of(out), "");
	assert_string_equal(last_method, "HEAD");
}

/* A request whose head is exactly len bytes. */
static char *head_of_size(size_t len)
{
	const char *start = "GET /healthz HTTP/1.1\r\nX-Pad: ";
	const char *end = "\r\n\r\n";
	size_t fixed = strlen(start) + strlen(end);
	assert_true(len > fixed && len < 1000000);
	char *r = malloc(len + 1);
	assert_non_null(r);
	memset(r, 'a', len);
	memcpy(r, start, strlen(start));
	memcpy(r + len - strlen(end), end, strlen(end) + 1);
	assert_int_equal(strlen(r), len);
	return r;
}

static void test_431(void **state)
{
	struct pk_httpd *h = *state;
	char out[4096];
	char *req;

	/* Far over the cap, a header never finished. */
	req = head_of_size(40000);
	exchange(h, req, strlen(req), out, sizeof(out));
	assert_true(!strncmp(out, "HTTP/1.1 431 Request Header Fields Too Large\r\n", 46));
	free(req);
	assert_int_equal(handler_calls, 0);

	/* The boundary: PK_HTTPD_MAX_HEAD bytes pass, one more does not. */
	req = head_of_size(PK_HTTPD_MAX_HEAD);
	exchange(h, req, strlen(req), out, sizeof(out));
	assert_true(!strncmp(out, "HTTP/1.1 200 OK\r\n", 17));
	free(req);
	req = head_of_size(PK_HTTPD_MAX_HEAD + 1);
	exchange(h, req, strlen(req), out, sizeof(out));
	assert_true(!strncmp(out, "HTTP/1.1 431 ", 13));
	free(req);
	expect_healthz(h);
}

static void test_garbage_then_serves(void **state)
{
	struct pk_httpd *h = *state;
	char out[4096];
	const char garbage[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n";
	exchange(h, garbage, sizeof(garbage) - 1, out, sizeof(out));
	assert_true(!strncmp(out, "HTTP/1.1 400 Bad Request\r\n", 26));
	assert_int_equal(handler_calls, 0);
	settle(h);
	expect_healthz(h);
}

static void test_vanishing_clients(void **state)
{
	struct pk_httpd *h = *state;
	const char *part = "GET /heal";

	/* FIN mid-request. */
	int fd = client(h);
	send_all(fd, part, strlen(part));
	spin(h, -1);
	spin(h, -1);
	close(fd);
	settle(h);

	/* RST mid-request. */
	fd = client(h);
	send_all(fd, part, strlen(part));
	spin(h, -1);
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(fd);
	settle(h);

	/* Answered, then reset without reading the reply: the server is left
	 * draining a dead socket. */
	fd = client(h);
	const char *req = "GET /metrics HTTP/1.1\r\n\r\n";
	send_all(fd, req, strlen(req));
	spin(h, -1);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(fd);
	settle(h);

	assert_int_equal(handler_calls, 1);
	expect_healthz(h);
}

static void test_timeouts(void **state)
{
	struct pk_httpd *h = *state;
	char out[64];
	int fds[4];
	short ev[4];

	/* Silent client: closed once the head deadline passes. */
	int fd = client(h);
	spin(h, -1);
	assert_int_equal(pk_httpd_fds(h, fds, ev, 4), 2);
	pk_httpd_service(h, now + PK_HTTPD_TIMEOUT_MS - 5);
	assert_int_equal(pk_httpd_fds(h, fds, ev, 4), 2);
	now += PK_HTTPD_TIMEOUT_MS + 1;
	pk_httpd_service(h, now);
	assert_int_equal(pk_httpd_fds(h, fds, ev, 4), 1);
	assert_int_equal(read_reply(h, fd, out, sizeof(out)), 0);
	close(fd);

	/* Trickling client: progress does not extend the head deadline. */
	const char *slow = "GET /healthz HTTP/1.1\r\n";
	int i;
	fd = client(h);
	spin(h, -1);
	for (i = 0; i < 8 && pk_httpd_fds(h, fds, ev, 4) == 2; i++) {
		send_all(fd, slow + i, 1);
		now += PK_HTTPD_TIMEOUT_MS / 4;
		spin(h, -1);
	}
	/* Closed on the fourth step, 10 s after the accept. */
	assert_int_equal(i, 4);
	assert_int_equal(pk_httpd_fds(h, fds, ev, 4), 1);
	close(fd);
	expect_healthz(h);
}

static void test_connection_cap(void **state)
{
	struct pk_httpd *h = *state;
	int fds[PK_HTTPD_MAX_CONNS + 2];
	short ev[PK_HTTPD_MAX_CONNS + 2];
	int cl[PK_HTTPD_MAX_CONNS];
	char out[64];

	for (int i = 0; i < PK_HTTPD_MAX_CONNS; i++)
		cl[i] = client(h);
	for (int i = 0;
	     i < LOOPS && pk_httpd_fds(h, fds, ev, PK_HTTPD_MAX_CONNS + 2) < PK_HTTPD_MAX_CONNS + 1;
	     i++)
		spin(h, -1);
	assert_int_equal(pk_httpd_fds(h, fds, ev, PK_HTTPD_MAX_CONNS + 2), PK_HTTPD_MAX_CONNS + 1);
	/* A short array gets the listener first. */
	assert_int_equal(pk_httpd_fds(h, fds, ev, 1), 1);
	assert_int_equal(ev[0], POLLIN);

	/* One more: accepted and closed at once, without an answer. */
	int extra = client(h);
	send_all(extra, "GET /healthz HTTP/1.1\r\n\r\n", 25);
	assert_int_equal(read_reply(h, extra, out, sizeof(out)), 0);
	close(extra);
	assert_int_equal(handler_calls, 0);

	for (int i = 0; i < PK_HTTPD_MAX_CONNS; i++)
		close(cl[i]);
	settle(h);
	expect_healthz(h);
}

static void test_bad_addresses(void **state)
{
	(void)state;
	char err[256];
	const char *bad[] = {"nope",    "127.0.0.1:", "127.0.0.1:99999",
	                     "[::1:80", "[::1]80",    "127.0.0.1:x"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_null(pk_httpd_new(bad[i], handler, NULL, err, sizeof(err)));
		assert_true(err[0] != '\0');
	}
	/* Port in use. */
	struct pk_httpd *a = pk_httpd_new("127.0.0.1:0", handler, NULL, err, sizeof(err));
	char addr[64];
	assert_non_null(a);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", pk_httpd_port(a));
	assert_null(pk_httpd_new(addr, handler, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "in use"));
	pk_httpd_free(a);

	/* IPv6 loopback, where the host has it. */
	a = pk_httpd_new("[::1]:0", handler, NULL, err, sizeof(err));
	if (a) {
		assert_true(pk_httpd_port(a) > 0);
		pk_httpd_free(a);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_get_200, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_404, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_405, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_head, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_431, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_garbage_then_serves, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_vanishing_clients, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connection_cap, setup, teardown),
	    cmocka_unit_test(test_bad_addresses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
