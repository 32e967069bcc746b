/*
 * pk_bulk: a TCP source/sink service and its client, for bulk throughput through a tunnel.
 *
 *   pk_bulk serve --port P
 *       Listens on 127.0.0.1:P, one thread per connection. A connection starts with a 9-byte
 *       command: 'U' or 'D' and a big-endian 64-bit length N.
 *         U: the client sends N bytes; the service reads them all and answers with the 8-byte
 *            count it read.
 *         D: the service sends N bytes; the client reads them all and closes.
 *       Neither direction relies on a half-close, which not every tunnel forwards.
 *   pk_bulk client --port P (--upload N | --download N) [--timeout SECS]
 *       Runs one transfer and prints
 *         dir=up|down bytes=B secs=T mib_per_s=X ok=1|0
 *       T runs from connect() to the last byte (upload: the service's answer). A transfer that
 *       has not finished after --timeout seconds stops there and reports ok=0 with the bytes
 *       moved so far. Exit status 0 only when ok=1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256 * 1024)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(2);
}

static void put_be64(uint8_t *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* Reads exactly len bytes; 0 on success, -1 on EOF or error. */
static int read_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void *serve_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	uint8_t cmd[9], *buf = malloc(CHUNK);
	uint64_t n, done = 0;

	if (!buf || read_full(fd, cmd, sizeof(cmd)) == -1)
		goto out;
	n = get_be64(cmd + 1);
	if (cmd[0] == 'U') {
		uint8_t answer[8];

		while (done < n) {
			size_t want = n - done < CHUNK ? (size_t)(n - done) : CHUNK;
			ssize_t r = read(fd, buf, want);

			if (r <= 0)
				goto out;
			done += (uint64_t)r;
		}
		put_be64(answer, done);
		write_full(fd, answer, sizeof(answer));
	} else if (cmd[0] == 'D') {
		memset(buf, 'x', CHUNK);
		while (done < n) {
			size_t want = n - done < CHUNK ? (size_t)(n - done) : CHUNK;

			if (write_full(fd, buf, want) == -1)
				goto out;
			done += want;
		}
	}
	/* Let the client close first, so the last bytes are never cut by a reset. */
	while (read(fd, cmd, sizeof(cmd)) > 0)
		;
out:
	free(buf);
	close(fd);
	return NULL;
}

static _Noreturn void cmd_serve(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (lfd == -1)
		die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) == -1 || listen(lfd, 128) == -1)
		die("bind/listen");
	for (;;) {
		pthread_t t;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		if (pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)fd) != 0) {
			close(fd);
			continue;
		}
		pthread_detach(t);
	}
}

static int cmd_client(int port, bool upload, uint64_t n, double timeout)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	struct timeval tv = {.tv_sec = 0, .tv_usec = 250000};
	uint8_t cmd[9], *buf = malloc(CHUNK);
	uint64_t done = 0;
	double t0, deadline, secs;
	bool ok = false;
	int fd;

	if (!buf)
		die("malloc");
	memset(buf, 'y', CHUNK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		die("socket");
	/* Short socket timeouts so that the overall deadline is checked between calls. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	t0 = now_s();
	deadline = t0 + timeout;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == -1)
		goto report;
	cmd[0] = upload ? 'U' : 'D';
	put_be64(cmd + 1, n);
	if (write_full(fd, cmd, sizeof(cmd)) == -1)
		goto report;
	while (done < n && now_s() < deadline) {
		size_t want = n - done < CHUNK ? (size_t)(n - done) : CHUNK;
		ssize_t r = upload ? send(fd, buf, want, MSG_NOSIGNAL) : read(fd, buf, want);

		if (r == -1 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (r <= 0)
			goto report;
		done += (uint64_t)r;
	}
	if (done < n)
		goto report;
	if (upload) {
		uint8_t answer[8];
		size_t got = 0;

		while (got < sizeof(answer) && now_s() < deadline) {
			ssize_t r = read(fd, answer + got, sizeof(answer) - got);

			if (r == -1 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r <= 0)
				goto report;
			got += (size_t)r;
		}
		ok = got == sizeof(answer) && get_be64(answer) == n;
	} else {
		ok = true;
	}
report:
	secs = now_s() - t0;
	close(fd);
	printf("dir=%s bytes=%llu secs=%.3f mib_per_s=%.1f ok=%d\n", upload ? "up" : "down",
	       (unsigned long long)done, secs, (double)done / 1048576.0 / secs, ok);
	free(buf);
	return ok ? 0 : 1;
}

static void usage(void)
{
	fprintf(stderr, "usage: pk_bulk serve --port P\n"
	                "       pk_bulk client --port P (--upload N | --download N) "
	                "[--timeout SECS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"port", required_argument, NULL, 'p'},
	    {"upload", required_argument, NULL, 'u'},
	    {"download", required_argument, NULL, 'd'},
	    {"timeout", required_argument, NULL, 't'},
	    {NULL, 0, NULL, 0},
	};
	int port = 0, opt;
	bool upload = false;
	uint64_t n = 0;
	double timeout = 60;

	if (argc < 2)
		usage();
	optind = 2;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			port = atoi(optarg);
			break;
		case 'u':
			upload = true;
			n = strtoull(optarg, NULL, 10);
			break;
		case 'd':
			upload = false;
			n = strtoull(optarg, NULL, 10);
			break;
		case 't':
			timeout = atof(optarg);
			break;
		default:
			usage();
		}
	}
	if (port <= 0)
		usage();
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(argv[1], "serve") == 0)
		cmd_serve(port);
	if (strcmp(argv[1], "client") == 0 && n > 0)
		return cmd_client(port, upload, n, timeout);
	usage();
	return 2;
}
