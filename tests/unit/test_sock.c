/* Unit tests for core/sock.c over loopback: exact bytes both ways, TCP
 * half-close in both directions, resets, refused and timed-out connects,
 * pause/resume, the send-queue cap, and that no callback ever fires from
 * inside a pk_sock_*() call (every call below goes through a wrapper that
 * sets in_owner, and every callback asserts it is clear). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backoff.h"
#include "buf.h"
#include "sock.h"

#define MIB (1024 * 1024)
#define KIB 1024
#define CHUNK (32 * KIB)

static struct lws_context *ctx;
static lws_sorted_usec_list_t tick_sul;
static int in_owner;

/* ---- owner-call wrappers ---------------------------------------------------- */

static struct pk_sock *t_connect(const char *host, int port, uint64_t timeout_ms,
                                 const struct pk_sock_ops *ops, void *user, size_t cap)
{
	in_owner++;
	struct pk_sock *s = pk_sock_connect(host, port, timeout_ms, ops, user, cap);
	in_owner--;
	return s;
}

static struct pk_sock *t_adopt(int fd, const struct pk_sock_ops *ops, void *user, size_t cap)
{
	in_owner++;
	struct pk_sock *s = pk_sock_adopt(fd, ops, user, cap);
	in_owner--;
	return s;
}

static size_t t_write(struct pk_sock *s, const uint8_t *d, size_t n)
{
	in_owner++;
	size_t r = pk_sock_write(s, d, n);
	in_owner--;
	return r;
}

static void t_shutdown(struct pk_sock *s)
{
	in_owner++;
	pk_sock_shutdown_write(s);
	in_owner--;
}

static void t_pause(struct pk_sock *s, int paused)
{
	in_owner++;
	pk_sock_pause(s, paused);
	in_owner--;
}

static void t_close(struct pk_sock *s, int abort)
{
	in_owner++;
	pk_sock_close(s, abort);
	in_owner--;
}

static struct pk_sock_listener *t_listen(const char *addr, void (*cb)(void *, int), void *user,
                                         char *err, size_t errlen)
{
	in_owner++;
	struct pk_sock_listener *l = pk_sock_listen(addr, cb, user, err, errlen);
	in_owner--;
	return l;
}

static void t_listener_close(struct pk_sock_listener *l)
{
	in_owner++;
	pk_sock_listener_close(l);
	in_owner--;
}

/* ---- one end of a test connection ------------------------------------------- */

struct peer {
	struct pk_sock *s;
	size_t cap;
	size_t to_send;     /* pattern bytes to send in total */
	size_t sent;        /* accepted by pk_sock_write */
	int shut_when_sent; /* pk_sock_shutdown_write once all is queued */
	int shut_done;
	size_t reply_on_eof; /* on EOF: send this much more, then shut */
	size_t pause_at;     /* pause reading once this much arrived */
	int pause_on_accept; /* server: paused from the start */
	int shut_on_accept;  /* server: shut down writing from the start */
	size_t received;
	size_t received_at_eof;
	size_t sent_at_eof;
	int bad; /* a byte differed from the pattern */
	int connected, eof, paused, drains, short_writes, closed, reset;
	char why[64];
};

static struct peer client, server;
static struct pk_sock_listener *listener;

static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 131 + (i >> 11));
}

static void pump(struct peer *p)
{
	static uint8_t buf[CHUNK];
	while (p->s && p->sent < p->to_send) {
		size_t n = p->to_send - p->sent < CHUNK ? p->to_send - p->sent : CHUNK;
		for (size_t i = 0; i < n; i++)
			buf[i] = pattern(p->sent + i);
		size_t w = t_write(p->s, buf, n);
		p->sent += w;
		if (w < n) {
			p->short_writes++;
			return;
		}
	}
	if (p->s && p->sent == p->to_send && p->shut_when_sent && !p->shut_done) {
		p->shut_done = 1;
		t_shutdown(p->s);
	}
}

static void on_connected(struct pk_sock *s)
{
	assert_int_equal(in_owner, 0);
	struct peer *p = pk_sock_user(s);
	p->connected = 1;
	pump(p);
}

static void on_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	assert_int_equal(in_owner, 0);
	struct peer *p = pk_sock_user(s);
	assert_false(p->paused);
	for (size_t i = 0; i < len; i++)
		if (data[i] != pattern(p->received + i))
			p->bad = 1;
	p->received += len;
	if (p->pause_at && p->received >= p->pause_at && !p->paused) {
		p->paused = 1;
		t_pause(s, 1);
	}
}

static void on_eof(struct pk_sock *s)
{
	assert_int_equal(in_owner, 0);
	struct peer *p = pk_sock_user(s);
	assert_false(p->eof);
	p->eof = 1;
	p->received_at_eof = p->received;
	p->sent_at_eof = p->sent;
	if (p->reply_on_eof) {
		p->to_send += p->reply_on_eof;
		p->shut_when_sent = 1;
		pump(p);
	}
}

static void on_drain(struct pk_sock *s)
{
	assert_int_equal(in_owner, 0);
	struct peer *p = pk_sock_user(s);
	p->drains++;
	pump(p);
}

static void on_close(struct pk_sock *s, int reset, const char *why)
{
	assert_int_equal(in_owner, 0);
	struct peer *p = pk_sock_user(s);
	assert_ptr_equal(p->s, s);
	assert_false(p->closed);
	p->closed = 1;
	p->reset = reset;
	snprintf(p->why, sizeof(p->why), "%s", why);
	p->s = NULL;
}

static const struct pk_sock_ops ops = {
    .on_connected = on_connected,
    .on_data = on_data,
    .on_eof = on_eof,
    .on_drain = on_drain,
    .on_close = on_close,
};

static void on_accept(void *user, int fd)
{
	assert_int_equal(in_owner, 0);
	struct peer *p = user;
	assert_null(p->s); /* one connection per test */
	p->s = t_adopt(fd, &ops, p, p->cap);
	assert_non_null(p->s);
	if (p->pause_on_accept) {
		p->paused = 1;
		t_pause(p->s, 1);
	}
	if (p->shut_on_accept) {
		p->shut_done = 1;
		t_shutdown(p->s);
	}
	pump(p);
}

/* ---- the loop --------------------------------------------------------------- */

static void tick(lws_sorted_usec_list_t *sul)
{
	assert_int_equal(in_owner, 0);
	in_owner++;
	pk_sock_tick(pk_now_ms());
	in_owner--;
	/* Also keeps lws_service() from sleeping past our deadlines. */
	lws_sul_schedule(ctx, 0, sul, tick, 10 * LWS_US_PER_MS);
}

typedef int (*cond_fn)(void);

/* Service until cond() holds or ms pass; returns cond(). */
static int run_until(cond_fn cond, int ms)
{
	uint64_t end = pk_now_ms() + (uint64_t)ms;
	while (!(cond && cond()) && pk_now_ms() < end)
		lws_service(ctx, 0);
	return cond ? cond() : 0;
}

static int both_closed(void)
{
	return client.closed && server.closed;
}

static int client_closed(void)
{
	return client.closed;
}

static int server_adopted(void)
{
	return server.s != NULL;
}

static int server_paused(void)
{
	return server.paused;
}

static int server_eof(void)
{
	return server.eof;
}

static int setup(void **state)
{
	(void)state;
	static struct lws_protocols protocols[3];
	/* pk-sock deliberately not first: it must not rely on being the
	 * vhost's default protocol. */
	protocols[0] = (struct lws_protocols){.name = "dummy", .callback = lws_callback_http_dummy};
	protocols[1] = pk_sock_protocols[0];
	protocols[2] = (struct lws_protocols){.name = NULL};
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	lws_set_log_level(LLL_ERR, NULL);
	ctx = lws_create_context(&info);
	assert_non_null(ctx);
	pk_sock_init(lws_get_vhost_by_name(ctx, "default"));
	memset(&tick_sul, 0, sizeof(tick_sul));
	lws_sul_schedule(ctx, 0, &tick_sul, tick, 10 * LWS_US_PER_MS);
	memset(&client, 0, sizeof(client));
	memset(&server, 0, sizeof(server));
	client.cap = server.cap = 256 * KIB;
	listener = NULL;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (listener)
		t_listener_close(listener);
	listener = NULL;
	lws_sul_cancel(&tick_sul);
	/* Whatever is still open gets on_close from here. */
	lws_context_destroy(ctx);
	ctx = NULL;
	assert_null(client.s);
	assert_null(server.s);
	return 0;
}

static int start_listener(void)
{
	char err[256] = "";
	listener = t_listen("127.0.0.1:0", on_accept, &server, err, sizeof(err));
	assert_non_null(listener);
	int port = pk_sock_listener_port(listener);
	assert_true(port > 0);
	return port;
}

/* A loopback port nothing listens on. */
static int closed_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (void *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (void *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_bytes_both_ways(void **state)
{
	(void)state;
	int port = start_listener();
	client.to_send = server.to_send = MIB;
	client.shut_when_sent = server.shut_when_sent = 1;
	client.s = t_connect("127.0.0.1", port, 5000, &ops, &client, client.cap);
	assert_non_null(client.s);
	assert_true(run_until(both_closed, 10000));
	assert_true(client.connected);
	assert_int_equal(client.received, MIB);
	assert_int_equal(server.received, MIB);
	assert_false(client.bad);
	assert_false(server.bad);
	assert_true(client.eof && server.eof);
	assert_int_equal(client.reset, 0);
	assert_int_equal(server.reset, 0);
	assert_string_equal(client.why, "closed");
	assert_string_equal(server.why, "closed");
}

static void test_half_close(void **state)
{
	(void)state;
	int port = start_listener();
	/* The client sends 10 KiB and FIN; only then does the server answer
	 * with 100 KiB, which the half-closed client must get in full. */
	client.to_send = 10 * KIB;
	client.shut_when_sent = 1;
	server.reply_on_eof = 100 * KIB;
	client.s = t_connect("127.0.0.1", port, 5000, &ops, &client, client.cap);
	assert_non_null(client.s);
	assert_true(run_until(both_closed, 10000));
	assert_true(server.eof);
	assert_int_equal(server.received_at_eof, 10 * KIB);
	assert_int_equal(server.sent_at_eof, 0);
	assert_int_equal(client.received, 100 * KIB);
	assert_false(client.bad);
	assert_false(server.bad);
	assert_true(client.eof);
	assert_int_equal(client.reset, 0);
	assert_int_equal(server.reset, 0);
	assert_string_equal(client.why, "closed");
	assert_string_equal(server.why, "closed");
}

static int server_got_1k(void)
{
	return server.received >= KIB;
}

static void test_abort_resets_peer(void **state)
{
	(void)state;
	int port = start_listener();
	client.to_send = KIB;
	client.s = t_connect("127.0.0.1", port, 5000, &ops, &client, client.cap);
	assert_true(run_until(server_got_1k, 5000));
	t_close(client.s, 1);
	assert_false(client.closed); /* never from inside the call */
	assert_true(run_until(both_closed, 5000));
	assert_int_equal(client.reset, 1);
	assert_string_equal(client.why, "aborted");
	assert_int_equal(server.reset, 1);
	assert_string_equal(server.why, "reset");
}

static void test_refused(void **state)
{
	(void)state;
	int port = closed_port();
	client.s = t_connect("127.0.0.1", port, 5000, &ops, &client, client.cap);
	assert_non_null(client.s);
	assert_false(client.closed);
	assert_true(run_until(client_closed, 5000));
	assert_false(client.connected);
	assert_int_equal(client.reset, 1);
	assert_string_equal(client.why, "connection refused");
}

static void test_connect_timeout(void **state)
{
	(void)state;
	/* A listener with a full accept queue drops further SYNs. */
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (void *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 0), 0);
	assert_int_equal(getsockname(lfd, (void *)&a, &len), 0);
	int fill[4];
	for (int i = 0; i < 4; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		(void)connect(fill[i], (void *)&a, sizeof(a));
	}
	uint64_t t0 = pk_now_ms();
	client.s = t_connect("127.0.0.1", ntohs(a.sin_port), 300, &ops, &client, client.cap);
	assert_non_null(client.s);
	assert_true(run_until(client_closed, 5000));
	assert_false(client.connected);
	assert_int_equal(client.reset, 1);
	assert_string_equal(client.why, "connect timeout");
	assert_true(pk_now_ms() - t0 >= 290);
	for (int i = 0; i < 4; i++)
		close(fill[i]);
	close(lfd);
}

static void test_pause_resume(void **state)
{
	(void)state;
	int port = start_listener();
	server.pause_on_accept = 1;
	client.to_send = MIB;
	client.shut_when_sent = 1;
	server.reply_on_eof = 1; /* then FIN, so both close cleanly */
	client.s = t_connect("127.0.0.1", port, 5000, &ops, &client, client.cap);
	assert_true(run_until(server_adopted, 5000));
	run_until(NULL, 300);
	assert_int_equal(server.received, 0); /* paused from the start */

	/* Resume, and pause again from on_data once 300 KiB arrived. */
	server.pause_at = 300 * KIB;
	server.paused = 0;
	t_pause(server.s, 0);
	assert_true(run_until(server_paused, 5000));
	size_t at_pause = server.received;
	assert_true(at_pause >= 300 * KIB && at_pause < MIB);
	run_until(NULL, 300);
	assert_int_equal(server.received, at_pause);

	server.pause_at = 0;
	server.paused = 0;
	t_pause(server.s, 0);
	assert_true(run_until(server_eof, 5000));
	assert_int_equal(server.received, MIB);
	assert_false(server.bad);
	assert_true(run_until(both_closed, 5000));
	assert_int_equal(client.received, 1);
	assert_int_equal(server.reset, 0);
	assert_int_equal(client.reset, 0);
}

static void test_send_cap_and_drain(void **state)
{
	(void)state;
	int port = start_listener();
	server.pause_on_accept = 1;
	client.cap = 64 * KIB;
	client.to_send = 16 * MIB; /* far more than loopback buffers hold */
	client.shut_when_sent = 1;
	server.reply_on_eof = 1;
	client.s = t_connect("127.0.0.1", port, 5000, &ops, &client, client.cap);
	assert_true(run_until(server_adopted, 5000));
	run_until(NULL, 500);
	/* Stalled: the queue is full and a write came back short. */
	assert_true(client.short_writes > 0);
	assert_true(client.sent < client.to_send);
	assert_int_equal(pk_sock_queued(client.s), 64 * KIB);
	assert_int_equal(pk_sock_write_space(client.s), 0);
	int drains = client.drains;
	size_t sent = client.sent;
	run_until(NULL, 200);
	assert_int_equal(client.sent, sent);

	server.paused = 0;
	t_pause(server.s, 0);
	assert_true(run_until(both_closed, 20000));
	assert_true(client.drains > drains);
	assert_int_equal(server.received, 16 * MIB);
	assert_false(server.bad);
	assert_int_equal(server.reset, 0);
	assert_int_equal(client.reset, 0);
}

/* The peer's FIN arrives after ours while reading is paused: lws sees
 * POLLHUP and closes the wsi, but the unread bytes must still arrive. */
static void test_fin_while_paused(void **state)
{
	(void)state;
	int port = start_listener();
	server.pause_on_accept = 1;
	server.shut_on_accept = 1;
	client.to_send = 32 * KIB;
	client.shut_when_sent = 1;
	client.s = t_connect("127.0.0.1", port, 5000, &ops, &client, client.cap);
	assert_true(run_until(server_adopted, 5000));
	run_until(NULL, 500);
	assert_true(client.eof); /* the server's FIN */
	assert_false(server.closed);
	assert_int_equal(server.received, 0);
	server.paused = 0;
	t_pause(server.s, 0);
	assert_true(run_until(both_closed, 5000));
	assert_int_equal(server.received, 32 * KIB);
	assert_false(server.bad);
	assert_true(server.eof);
	assert_int_equal(server.reset, 0);
	assert_string_equal(server.why, "closed");
	assert_int_equal(client.reset, 0);
}

static void test_graceful_close_flushes(void **state)
{
	(void)state;
	int port = start_listener();
	server.pause_on_accept = 1;
	client.s = t_connect("127.0.0.1", port, 5000, &ops, &client, client.cap);
	assert_true(run_until(server_adopted, 5000));
	/* Queue 200 KiB, then close at once: it all goes out first. */
	client.to_send = 200 * KIB;
	pump(&client);
	assert_int_equal(client.sent, 200 * KIB);
	t_close(client.s, 0);
	assert_false(client.closed);
	assert_int_equal(t_write(client.s, (const uint8_t *)"x", 1), 0);
	server.paused = 0;
	t_pause(server.s, 0);
	assert_true(run_until(server_eof, 5000));
	assert_int_equal(server.received, 200 * KIB);
	assert_false(server.bad);
	assert_true(run_until(client_closed, 5000));
	assert_int_equal(client.reset, 0);
	assert_string_equal(client.why, "closed");
}

/* Calls that end a connection at once still report from the loop. */
static void test_no_callback_inside_calls(void **state)
{
	(void)state;
	int port = closed_port();
	client.s = t_connect("127.0.0.1", port, 5000, &ops, &client, client.cap);
	t_close(client.s, 0);
	assert_false(client.closed);
	assert_true(run_until(client_closed, 5000));
	assert_int_equal(client.reset, 1);

	memset(&client, 0, sizeof(client));
	client.s = t_connect("", 80, 0, &ops, &client, 1024);
	assert_non_null(client.s);
	assert_false(client.closed);
	assert_true(run_until(client_closed, 5000));
	assert_string_equal(client.why, "invalid address");

	/* Abort right after adoption, and shut down with nothing queued. */
	memset(&client, 0, sizeof(client));
	port = start_listener();
	client.s = t_connect("127.0.0.1", port, 5000, &ops, &client, 1024);
	assert_true(run_until(server_adopted, 5000));
	t_shutdown(server.s);
	t_close(server.s, 1);
	assert_false(server.closed);
	assert_true(run_until(both_closed, 5000));
	assert_int_equal(server.reset, 1);
	assert_int_equal(client.reset, 1);
}

static int client_connected(void)
{
	return client.connected || client.closed;
}

/* "localhost" may resolve to ::1 first while only 127.0.0.1 listens: the
 * next address is tried. */
static void test_connect_localhost(void **state)
{
	(void)state;
	int port = start_listener();
	client.s = t_connect("localhost", port, 5000, &ops, &client, client.cap);
	assert_non_null(client.s);
	assert_true(run_until(client_connected, 5000));
	assert_true(client.connected);
	char expect[32];
	snprintf(expect, sizeof(expect), "127.0.0.1:%d", port);
	assert_string_equal(pk_sock_peer(client.s), expect);
}

/* The same with only ::1 listening; exercises trying the next address when
 * "localhost" resolves to 127.0.0.1 first. Skipped where localhost has no
 * IPv6 address or ::1 cannot be bound. */
static void test_connect_localhost_v6(void **state)
{
	(void)state;
	struct addrinfo hints, *res = NULL;
	int has_v6 = 0;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo("localhost", "80", &hints, &res) == 0) {
		for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
			has_v6 |= ai->ai_family == AF_INET6;
		freeaddrinfo(res);
	}
	char err[256];
	listener = has_v6 ? t_listen("[::1]:0", on_accept, &server, err, sizeof(err)) : NULL;
	if (!listener) {
		skip();
		return;
	}
	int port = pk_sock_listener_port(listener);
	client.s = t_connect("localhost", port, 5000, &ops, &client, client.cap);
	assert_true(run_until(client_connected, 5000));
	assert_true(client.connected);
	char expect[32];
	snprintf(expect, sizeof(expect), "[::1]:%d", port);
	assert_string_equal(pk_sock_peer(client.s), expect);
}

/* IP literals skip the resolver; everything else is a name. */
static void test_is_ip(void **state)
{
	(void)state;
	assert_true(pk_sock_is_ip("127.0.0.1"));
	assert_true(pk_sock_is_ip("::1"));
	assert_true(pk_sock_is_ip("fe80::1%lo"));
	assert_true(pk_sock_is_ip("2001:db8::5"));
	assert_false(pk_sock_is_ip("localhost"));
	assert_false(pk_sock_is_ip("[::1]")); /* callers strip brackets */
	assert_false(pk_sock_is_ip("10.0.0"));
	assert_false(pk_sock_is_ip("1.2.3.4.example.com"));
	assert_false(pk_sock_is_ip(""));
	assert_false(pk_sock_is_ip("%lo"));
}

/* A close while the name is being resolved ends it once, as "closed", and
 * the lookup's answer is dropped. */
static void test_close_while_resolving(void **state)
{
	(void)state;
	int port = start_listener();
	client.s = t_connect("localhost", port, 5000, &ops, &client, client.cap);
	assert_non_null(client.s);
	t_close(client.s, 0);
	assert_true(run_until(client_closed, 5000));
	assert_false(client.connected);
	assert_int_equal(client.reset, 1);
	assert_string_equal(client.why, "closed");
	/* Nothing more comes once the lookup returns. */
	run_until(server_adopted, 200);
	assert_null(server.s);
}

/* A lookup still running when the context goes: on_close "shutdown", and
 * the lookup threads stop. */
static void test_context_destroy_while_resolving(void **state)
{
	int port = start_listener();
	client.s = t_connect("localhost", port, 5000, &ops, &client, client.cap);
	teardown(state);
	assert_true(client.closed);
	assert_int_equal(client.reset, 1);
	assert_string_equal(client.why, "shutdown");
	setup(state);
}

/* Connections still open when the context goes get on_close from
 * lws_context_destroy(). */
static void test_context_destroy(void **state)
{
	int port = start_listener();
	client.s = t_connect("127.0.0.1", port, 5000, &ops, &client, client.cap);
	assert_true(run_until(server_adopted, 5000));
	assert_true(run_until(client_connected, 5000));
	teardown(state);
	assert_true(client.closed && server.closed);
	assert_int_equal(client.reset, 1);
	assert_string_equal(client.why, "shutdown");
	assert_string_equal(server.why, "shutdown");
	setup(state);
}

static void test_listen_addresses(void **state)
{
	(void)state;
	char err[256];
	struct pk_sock_listener *l;

	/* Every interface, reachable over IPv4 loopback. */
	l = t_listen(":0", on_accept, &server, err, sizeof(err));
	assert_non_null(l);
	int port = pk_sock_listener_port(l);
	assert_true(port > 0);
	client.s = t_connect("127.0.0.1", port, 5000, &ops, &client, client.cap);
	assert_true(run_until(server_adopted, 5000));
	t_close(client.s, 1);
	assert_true(run_until(both_closed, 5000));
	t_listener_close(l);

	l = t_listen("localhost:0", on_accept, &server, err, sizeof(err));
	assert_non_null(l);
	assert_true(pk_sock_listener_port(l) > 0);
	t_listener_close(l);

	l = t_listen("[::1]:0", on_accept, &server, err, sizeof(err));
	if (l) /* only where IPv6 loopback exists */
		t_listener_close(l);

	err[0] = '\0';
	assert_null(t_listen("no-port", on_accept, &server, err, sizeof(err)));
	assert_true(err[0] != '\0');
	assert_null(t_listen("127.0.0.1:70000", on_accept, &server, err, sizeof(err)));
	assert_null(t_listen("[::1:80", on_accept, &server, err, sizeof(err)));
}

static int closing_accept_done;

static void close_in_accept(void *user, int fd)
{
	(void)user;
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	t_listener_close(listener);
	listener = NULL;
	closing_accept_done = 1;
}

static int accept_closed(void)
{
	return closing_accept_done && client.closed;
}

static void test_listener_close_in_accept(void **state)
{
	(void)state;
	char err[256];
	closing_accept_done = 0;
	listener = t_listen("127.0.0.1:0", close_in_accept, NULL, err, sizeof(err));
	assert_non_null(listener);
	int port = pk_sock_listener_port(listener);
	client.s = t_connect("127.0.0.1", port, 5000, &ops, &client, client.cap);
	assert_true(run_until(accept_closed, 5000));
	assert_int_equal(client.reset, 1);
}

static int teardown_all(void **state)
{
	(void)state;
	pk_buf_freelist_release();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_bytes_both_ways, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_half_close, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_abort_resets_peer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_send_cap_and_drain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fin_while_paused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_graceful_close_flushes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_callback_inside_calls, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connect_localhost, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connect_localhost_v6, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_context_destroy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_is_ip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_close_while_resolving, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_context_destroy_while_resolving, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_listen_addresses, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_listener_close_in_accept, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, teardown_all);
}
