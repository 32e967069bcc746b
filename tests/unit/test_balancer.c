/* Unit tests for core/balancer.c over loopback: exact bytes both ways through
 * the balancer with a half-close in the middle (and far more bytes than its
 * send queues hold, so backpressure has to work), a refused backend retried
 * on the next one, a client closed when no backend is left, and a stop with
 * connections still open (no leak: the ASan build checks). The client and
 * the backend are plain blocking sockets on threads of their own; the
 * balancer runs on the test's lws loop. */
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
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "backoff.h"
#include "balancer.h"
#include "buf.h"
#include "sock.h"

#define MIB (1024 * 1024)

static struct lws_context *ctx;
static lws_sorted_usec_list_t tick_sul;
static struct pk_balancer *lb;

/* ---- helpers ------------------------------------------------------------------ */

static uint8_t pattern(size_t i, int salt)
{
	return (uint8_t)(i * 131 + (i >> 11) + (size_t)salt);
}

/* A blocking listening socket on 127.0.0.1, port in *port. */
static int listen_any(int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(fd, (void *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 16), 0);
	socklen_t l = sizeof(a);
	assert_int_equal(getsockname(fd, (void *)&a, &l), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

/* A port nothing listens on (bound, then closed). */
static int dead_port(void)
{
	int port;
	close(listen_any(&port));
	return port;
}

static void set_timeouts(int fd)
{
	struct timeval tv = {.tv_sec = 10};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int dial(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	                        .sin_port = htons((uint16_t)port)};
	if (fd < 0 || connect(fd, (void *)&a, sizeof(a)) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	set_timeouts(fd);
	return fd;
}

static int send_pattern(int fd, size_t n, int salt)
{
	uint8_t buf[32 * 1024];
	for (size_t off = 0; off < n;) {
		size_t k = n - off < sizeof(buf) ? n - off : sizeof(buf);
		for (size_t i = 0; i < k; i++)
			buf[i] = pattern(off + i, salt);
		ssize_t w = write(fd, buf, k);
		if (w <= 0)
			return -1;
		off += (size_t)w;
	}
	return 0;
}

/* Read to EOF; returns the byte count, or -1 on an error or a wrong byte. */
static long recv_pattern(int fd, int salt)
{
	uint8_t buf[32 * 1024];
	size_t total = 0;
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r == 0)
			return (long)total;
		if (r < 0)
			return -1;
		for (ssize_t i = 0; i < r; i++)
			if (buf[i] != pattern(total + (size_t)i, salt))
				return -1;
		total += (size_t)r;
	}
}

/* ---- the backend and the client threads ------------------------------------------ */

struct backend {
	int lfd, port;
	size_t reply; /* after the client's EOF, send this many bytes, then close */
	int hold;     /* accept and keep the connection until released */
	atomic_int accepted, released;
	long got; /* bytes received before EOF (-1: wrong) */
	pthread_t th;
};

static void *backend_main(void *arg)
{
	struct backend *b = arg;
	int fd = accept(b->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	set_timeouts(fd);
	atomic_store(&b->accepted, 1);
	if (b->hold) {
		while (!atomic_load(&b->released))
			usleep(10000);
		close(fd);
		return NULL;
	}
	b->got = recv_pattern(fd, 1);
	if (b->got >= 0)
		send_pattern(fd, b->reply, 2);
	close(fd);
	return NULL;
}

static void backend_start(struct backend *b, size_t reply, int hold)
{
	memset(b, 0, sizeof(*b));
	b->lfd = listen_any(&b->port);
	b->reply = reply;
	b->hold = hold;
	b->got = -2;
	assert_int_equal(pthread_create(&b->th, NULL, backend_main, b), 0);
}

static void backend_join(struct backend *b)
{
	atomic_store(&b->released, 1);
	shutdown(b->lfd, SHUT_RDWR); /* wakes an accept() still waiting */
	pthread_join(b->th, NULL);
	close(b->lfd);
}

struct client {
	int port;
	size_t send;
	long got; /* bytes received before EOF (-1: error or wrong) */
	atomic_int done;
	pthread_t th;
};

static void *client_main(void *arg)
{
	struct client *c = arg;
	int fd = dial(c->port);
	c->got = -1;
	if (fd >= 0) {
		if (send_pattern(fd, c->send, 1) == 0) {
			shutdown(fd, SHUT_WR); /* the half-close the backend waits for */
			c->got = recv_pattern(fd, 2);
		}
		close(fd);
	}
	atomic_store(&c->done, 1);
	return NULL;
}

static void client_start(struct client *c, int port, size_t send)
{
	memset(c, 0, sizeof(*c));
	c->port = port;
	c->send = send;
	assert_int_equal(pthread_create(&c->th, NULL, client_main, c), 0);
}

/* ---- the loop ---------------------------------------------------------------------- */

static void tick(lws_sorted_usec_list_t *sul)
{
	pk_sock_tick(pk_now_ms());
	/* Also keeps lws_service() from sleeping while the threads work. */
	lws_sul_schedule(ctx, 0, sul, tick, 10 * LWS_US_PER_MS);
}

static int run_until(atomic_int *flag, int ms)
{
	uint64_t end = pk_now_ms() + (uint64_t)ms;
	while (!atomic_load(flag) && pk_now_ms() < end)
		lws_service(ctx, 0);
	return atomic_load(flag);
}

/* The pick callback: ports[i] for index i, in order, 0 ends the list. */
struct picker {
	int ports[4];
	int calls;
	uint64_t last_tried;
};

static int pick(void *user, uint64_t tried, char *host, size_t hostlen, int *port)
{
	struct picker *p = user;
	p->calls++;
	p->last_tried = tried;
	for (int i = 0; i < 4 && p->ports[i]; i++)
		if (!((tried >> i) & 1)) {
			snprintf(host, hostlen, "127.0.0.1");
			*port = p->ports[i];
			return i;
		}
	return -1;
}

static void start_lb(struct picker *p)
{
	char err[256];
	lb = pk_balancer_listen("test", "127.0.0.1:0", pick, p, err, sizeof(err));
	assert_non_null(lb);
	assert_true(pk_balancer_port(lb) > 0);
}

static int setup(void **state)
{
	(void)state;
	static struct lws_protocols protocols[2];
	protocols[0] = pk_sock_protocols[0];
	protocols[1] = (struct lws_protocols){.name = NULL};
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
	lb = NULL;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	pk_balancer_stop(lb);
	lws_sul_cancel(&tick_sul);
	lws_context_destroy(ctx);
	ctx = NULL;
	pk_balancer_free(lb);
	lb = NULL;
	return 0;
}

static int teardown_all(void **state)
{
	(void)state;
	pk_buf_freelist_release();
	return 0;
}

/* ---- the tests ---------------------------------------------------------------------- */

static void test_pipes_both_ways_with_half_close(void **state)
{
	(void)state;
	struct backend b;
	struct client c;
	struct picker p = {.ports = {0}};
	backend_start(&b, 6 * MIB, 0);
	p.ports[0] = b.port;
	start_lb(&p);
	client_start(&c, pk_balancer_port(lb), 5 * MIB);
	assert_true(run_until(&c.done, 20000));
	pthread_join(c.th, NULL);
	backend_join(&b);
	/* The backend read the client's bytes to their EOF, then answered:
	 * the FIN crossed while the other direction stayed open. */
	assert_int_equal(b.got, 5 * MIB);
	assert_int_equal(c.got, 6 * MIB);
	assert_int_equal(p.calls, 1);
	/* Both sockets close by themselves once both directions ended. */
	for (int i = 0; i < 100 && pk_balancer_conns(lb); i++)
		lws_service(ctx, 0);
	assert_int_equal(pk_balancer_conns(lb), 0);
}

static void test_retries_refused_backend(void **state)
{
	(void)state;
	struct backend b;
	struct client c;
	struct picker p = {.ports = {0}};
	backend_start(&b, 1000, 0);
	p.ports[0] = dead_port();
	p.ports[1] = b.port;
	start_lb(&p);
	client_start(&c, pk_balancer_port(lb), 1000);
	assert_true(run_until(&c.done, 10000));
	pthread_join(c.th, NULL);
	backend_join(&b);
	assert_int_equal(b.got, 1000);
	assert_int_equal(c.got, 1000);
	assert_int_equal(p.calls, 2);
	assert_int_equal(p.last_tried, 1); /* the second pick knew the first failed */
}

static void test_no_backend_closes_client(void **state)
{
	(void)state;
	struct client c;
	struct picker p = {.ports = {0}};
	p.ports[0] = dead_port();
	p.ports[1] = dead_port();
	start_lb(&p);
	client_start(&c, pk_balancer_port(lb), 0);
	assert_true(run_until(&c.done, 10000));
	pthread_join(c.th, NULL);
	/* Nothing arrives: a reset (-1) or an EOF (0), never data. */
	assert_true(c.got <= 0);
	assert_int_equal(p.calls, 3); /* two dead ports, then none left */
}

static void test_stop_with_open_connections(void **state)
{
	(void)state;
	struct backend b;
	struct picker p = {.ports = {0}};
	backend_start(&b, 0, 1);
	p.ports[0] = b.port;
	start_lb(&p);
	int fd = dial(pk_balancer_port(lb));
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "hello", 5), 5);
	assert_true(run_until(&b.accepted, 5000));
	for (int i = 0; i < 20; i++)
		lws_service(ctx, 0);
	assert_int_equal(pk_balancer_conns(lb), 1);
	/* teardown stops the balancer with the connection open, destroys the
	 * context, then frees: every allocation must be gone (ASan build). */
	teardown(NULL);
	char buf[8];
	assert_true(read(fd, buf, sizeof(buf)) <= 0); /* aborted */
	close(fd);
	backend_join(&b);
	setup(NULL); /* for the teardown cmocka runs */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_pipes_both_ways_with_half_close, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retries_refused_backend, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_backend_closes_client, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stop_with_open_connections, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, teardown_all);
}
