/*
 * The library's API behaviours that the examples do not reach, driven by
 * tests/integration/test_client_lib.py. Each mode prints what it saw, one
 * line per fact, for the test to assert:
 *
 *   errors URL DEAD_URL        argument errors, accept timeout, connect timeout
 *   close URL ENDPOINT         close (Go Away) keeps an accepted stream
 *   forward URL ENDPOINT ADDR  listen-and-forward until SIGTERM, then close+wait
 *   threads URL ENDPOINT N     N threads accept and echo at once until SIGTERM,
 *                              then close: every blocked accept returns closed
 *   self URL PROXY_URL         two listeners and piko_dial in one process (one
 *                              loop thread for all): dial each endpoint and
 *                              check which listener got the bytes
 *   stall URL ENDPOINT         accept one stream, read nothing until SIGUSR1,
 *                              then read it to EOF and print the byte count
 *   window URL ENDPOINT W      a listener with max_window_size W: echo each
 *                              accepted stream until EOF, until SIGTERM
 *   loop URL ENDPOINT          one thread, one poll() loop: the listener's fd
 *                              and every stream's, echoing each stream (with
 *                              half-close) until SIGTERM; then close: the fd
 *                              turns readable and dispatch says closed
 */
#include <piko/client.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stop, go;

static void on_usr1(int sig)
{
	(void)sig;
	go = 1;
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void say(const char *what, int code, const char *msg)
{
	printf("%s: %s (%s)\n", what, piko_strerror(code), msg);
	fflush(stdout);
}

static int mode_errors(const char *url, const char *dead_url)
{
	struct piko_options o;
	struct piko_error err;
	piko_options_init(&o);
	o.url = url;
	if (piko_listen(&o, "a/b", &err))
		return 1;
	say("slash endpoint", err.code, err.message);
	o.url = "ftp://x";
	if (piko_listen(&o, "e", &err))
		return 1;
	say("bad url", err.code, err.message);
	o.url = dead_url;
	o.connect_timeout_ms = 500;
	if (piko_listen(&o, "e", &err))
		return 1;
	say("dead server", err.code, err.message);
	o.url = url;
	o.max_window_size = 1000;
	if (piko_listen(&o, "e", &err))
		return 1;
	say("small window", err.code, err.message);
	o.max_window_size = 1024 * 1024; /* a larger one: the listener below has it */
	struct piko_listener *l = piko_listen(&o, "api-errors", &err);
	if (!l)
		return say("listen", err.code, err.message), 1;
	printf("connected: %d\n", piko_listener_connected(l));
	if (piko_accept(l, 200, &err) != -1)
		return 1;
	say("accept", err.code, err.message);
	piko_listener_shutdown(l);
	if (piko_accept(l, -1, &err) != -1)
		return 1;
	say("accept after shutdown", err.code, err.message);
	piko_listener_free(l);
	printf("version: %s\n", piko_client_version());
	return 0;
}

static int mode_close(const char *url, const char *endpoint)
{
	struct piko_options o;
	struct piko_error err;
	piko_options_init(&o);
	o.url = url;
	struct piko_listener *l = piko_listen(&o, endpoint, &err);
	if (!l)
		return say("listen", err.code, err.message), 1;
	printf("listening\n");
	fflush(stdout);
	int fd = piko_accept(l, 30000, &err);
	if (fd < 0)
		return say("accept", err.code, err.message), 1;
	piko_listener_close(l);
	if (piko_accept(l, -1, &err) != -1)
		return 1;
	say("accept after close", err.code, err.message);
	/* The accepted stream still works: echo it until EOF. */
	char buf[4096];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		if (write(fd, buf, (size_t)n) != n)
			break;
	close(fd);
	printf("stream done\n");
	fflush(stdout);
	piko_listener_free(l);
	return 0;
}

static int mode_window(const char *url, const char *endpoint, unsigned window)
{
	struct piko_options o;
	struct piko_error err;
	piko_options_init(&o);
	o.url = url;
	o.max_window_size = window;
	struct piko_listener *l = piko_listen(&o, endpoint, &err);
	if (!l)
		return say("listen", err.code, err.message), 1;
	printf("listening\n");
	fflush(stdout);
	while (!stop) {
		int fd = piko_accept(l, 200, &err);
		if (fd < 0) {
			if (err.code == PIKO_ETIMEDOUT)
				continue;
			break;
		}
		char buf[65536];
		ssize_t n;
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			if (write(fd, buf, (size_t)n) != n)
				break;
		close(fd);
	}
	piko_listener_free(l);
	return 0;
}

static int mode_forward(const char *url, const char *endpoint, const char *addr)
{
	struct piko_options o;
	struct piko_error err;
	piko_options_init(&o);
	o.url = url;
	struct piko_forwarder *f = piko_listen_and_forward(&o, endpoint, addr, &err);
	if (!f)
		return say("listen and forward", err.code, err.message), 1;
	printf("forwarding\n");
	fflush(stdout);
	if (piko_forwarder_wait(f, 100) != PIKO_ETIMEDOUT)
		return 1;
	while (!stop)
		usleep(20000);
	piko_forwarder_close(f);
	int rc = piko_forwarder_wait(f, 10000);
	printf("wait: %d\n", rc);
	piko_forwarder_free(f);
	return rc ? 1 : 0;
}

struct acceptor {
	struct piko_listener *l;
	int served;
	int closed; /* its last accept said PIKO_ECLOSED */
};

static void *accept_loop(void *arg)
{
	struct acceptor *a = arg;
	struct piko_error err;
	int fd;
	while ((fd = piko_accept(a->l, -1, &err)) >= 0) {
		char buf[4096];
		ssize_t n;
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			if (write(fd, buf, (size_t)n) != n)
				break;
		close(fd);
		a->served++;
	}
	a->closed = err.code == PIKO_ECLOSED;
	return NULL;
}

static int mode_threads(const char *url, const char *endpoint, int n)
{
	struct piko_options o;
	struct piko_error err;
	piko_options_init(&o);
	o.url = url;
	struct piko_listener *l = piko_listen(&o, endpoint, &err);
	if (!l)
		return say("listen", err.code, err.message), 1;
	struct acceptor a[64];
	pthread_t t[64];
	if (n < 1 || n > 64)
		return 2;
	for (int i = 0; i < n; i++) {
		a[i] = (struct acceptor){l, 0, 0};
		pthread_create(&t[i], NULL, accept_loop, &a[i]);
	}
	printf("accepting\n");
	fflush(stdout);
	while (!stop)
		usleep(20000);
	piko_listener_close(l);
	int served = 0, closed = 0;
	for (int i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		served += a[i].served;
		closed += a[i].closed;
	}
	printf("served: %d, closed: %d of %d\n", served, closed, n);
	piko_listener_free(l);
	return 0;
}

/* Dial endpoint, send msg, and read it on the listener that must get it. */
static int self_check(struct piko_options *o, const char *endpoint, struct piko_listener *want,
                      const char *msg)
{
	struct piko_error err;
	int c = piko_dial(o, endpoint, &err);
	if (c < 0)
		return say("dial", err.code, err.message), 1;
	if (write(c, msg, strlen(msg)) != (ssize_t)strlen(msg))
		return 1;
	shutdown(c, SHUT_WR);
	int s = piko_accept(want, 10000, &err);
	if (s < 0)
		return say("accept", err.code, err.message), 1;
	char buf[64];
	size_t got = 0;
	ssize_t n;
	while (got < sizeof(buf) - 1 && (n = read(s, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	printf("%s got: %s\n", piko_listener_endpoint(want), buf);
	/* And back the other way, then both ends close. */
	if (write(s, "ack", 3) != 3)
		return 1;
	close(s);
	got = 0;
	while (got < sizeof(buf) - 1 && (n = read(c, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	printf("dialer got: %s\n", buf);
	close(c);
	return 0;
}

static int mode_self(const char *url, const char *proxy_url)
{
	struct piko_options o;
	struct piko_error err;
	piko_options_init(&o);
	o.url = url;
	o.proxy_url = proxy_url;
	struct piko_listener *a = piko_listen(&o, "self-a", &err);
	if (!a)
		return say("listen a", err.code, err.message), 1;
	struct piko_listener *b = piko_listen(&o, "self-b", &err);
	if (!b)
		return say("listen b", err.code, err.message), 1;
	int rc = self_check(&o, "self-b", b, "to b") || self_check(&o, "self-a", a, "to a");
	piko_listener_free(a);
	piko_listener_free(b);
	piko_client_cleanup();
	return rc;
}

static int mode_stall(const char *url, const char *endpoint)
{
	struct piko_options o;
	struct piko_error err;
	piko_options_init(&o);
	o.url = url;
	struct piko_listener *l = piko_listen(&o, endpoint, &err);
	if (!l)
		return say("listen", err.code, err.message), 1;
	printf("listening\n");
	fflush(stdout);
	int fd = piko_accept(l, 30000, &err);
	if (fd < 0)
		return say("accept", err.code, err.message), 1;
	printf("accepted\n");
	fflush(stdout);
	while (!go)
		usleep(20000);
	char buf[65536];
	long long total = 0;
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		total += n;
	printf("read: %lld\n", total);
	close(fd);
	piko_listener_free(l);
	return 0;
}

/* mode loop: a single-threaded program on its own event loop. */
#define LOOP_MAX 64
struct echo_conn {
	int fd;
	char buf[65536];
	size_t len; /* read, not yet written back */
	int eof;    /* the peer half-closed: write what is left, then shut */
	int shut;   /* our half-close sent */
};
static struct echo_conn loop_conns[LOOP_MAX];
static int loop_n, loop_served, loop_refused;

static void on_loop_stream(void *arg, int fd)
{
	(void)arg;
	if (loop_n == LOOP_MAX) {
		close(fd);
		loop_refused++;
		return;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	loop_conns[loop_n++] = (struct echo_conn){.fd = fd};
}

/* One readiness round for a stream; 1 once it is finished. */
static int loop_echo(struct echo_conn *c, short rev)
{
	if ((rev & (POLLIN | POLLHUP | POLLERR)) && !c->eof && c->len < sizeof(c->buf)) {
		ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
		if (n > 0)
			c->len += (size_t)n;
		else if (n == 0)
			c->eof = 1;
		else if (errno != EAGAIN)
			return 1;
	}
	if (c->len) {
		ssize_t n = write(c->fd, c->buf, c->len);
		if (n > 0) {
			memmove(c->buf, c->buf + n, c->len - (size_t)n);
			c->len -= (size_t)n;
		} else if (n < 0 && errno != EAGAIN) {
			return 1;
		}
	}
	if (c->eof && !c->len && !c->shut) {
		shutdown(c->fd, SHUT_WR);
		c->shut = 1;
		return 1;
	}
	return 0;
}

static int mode_loop(const char *url, const char *endpoint)
{
	struct piko_options o;
	struct piko_error err;
	piko_options_init(&o);
	o.url = url;
	struct piko_listener *l = piko_listen(&o, endpoint, &err);
	if (!l)
		return say("listen", err.code, err.message), 1;
	int lfd = piko_listener_fd(l, &err);
	if (lfd < 0 || piko_listener_fd(l, NULL) != lfd)
		return say("listener fd", err.code, err.message), 1;
	struct pollfd idle = {.fd = lfd, .events = POLLIN};
	printf("idle fd readable: %d\n", poll(&idle, 1, 100));
	printf("looping\n");
	fflush(stdout);
	while (!stop) {
		struct pollfd p[LOOP_MAX + 1];
		p[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
		for (int i = 0; i < loop_n; i++)
			p[i + 1] =
			    (struct pollfd){.fd = loop_conns[i].fd,
			                    .events = (short)((loop_conns[i].eof ? 0 : POLLIN) |
			                                      (loop_conns[i].len ? POLLOUT : 0))};
		int n = loop_n;
		if (poll(p, (nfds_t)n + 1, 100) < 0)
			continue;
		for (int i = n - 1; i >= 0; i--) {
			if (p[i + 1].revents && loop_echo(&loop_conns[i], p[i + 1].revents)) {
				close(loop_conns[i].fd);
				loop_conns[i] = loop_conns[--loop_n];
				loop_served++;
			}
		}
		if (p[0].revents & POLLIN) {
			if (piko_listener_dispatch(l, on_loop_stream, NULL, &err) < 0)
				return say("dispatch", err.code, err.message), 1;
		}
	}
	piko_listener_close(l);
	struct pollfd after = {.fd = lfd, .events = POLLIN};
	printf("fd readable after close: %d\n", poll(&after, 1, 5000));
	int r = piko_listener_dispatch(l, on_loop_stream, NULL, &err);
	if (r < 0)
		say("dispatch after close", err.code, err.message);
	printf("served: %d, refused: %d, open: %d\n", loop_served, loop_refused, loop_n);
	for (int i = 0; i < loop_n; i++)
		close(loop_conns[i].fd);
	piko_listener_free(l);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGUSR1, on_usr1);
	if (argc == 4 && !strcmp(argv[1], "self"))
		return mode_self(argv[2], argv[3]);
	if (argc == 4 && !strcmp(argv[1], "loop"))
		return mode_loop(argv[2], argv[3]);
	if (argc == 4 && !strcmp(argv[1], "stall"))
		return mode_stall(argv[2], argv[3]);
	if (argc == 4 && !strcmp(argv[1], "errors"))
		return mode_errors(argv[2], argv[3]);
	if (argc == 4 && !strcmp(argv[1], "close"))
		return mode_close(argv[2], argv[3]);
	if (argc == 5 && !strcmp(argv[1], "threads"))
		return mode_threads(argv[2], argv[3], atoi(argv[4]));
	if (argc == 5 && !strcmp(argv[1], "window"))
		return mode_window(argv[2], argv[3], (unsigned)strtoul(argv[4], NULL, 10));
	if (argc == 5 && !strcmp(argv[1], "forward"))
		return mode_forward(argv[2], argv[3], argv[4]);
	fprintf(stderr, "usage: see the file's header\n");
	return 2;
}
