/*
 * dial: connects to an endpoint through a Piko server's proxy port (TCP
 * over WebSocket), sends its standard input, half-closes, and copies what
 * comes back to standard output until the endpoint closes.
 *
 *   piko-example-dial [-u PROXY_URL] [-t TOKEN] [-c CAFILE] [-k] [-n COUNT] ENDPOINT
 *
 * For an https:// URL, -c trusts the CAs of a PEM file (default: the
 * system's) and -k skips verifying the server.
 * With -n it does not half-close at the end of its input but closes once
 * COUNT bytes came back: Piko's own server ends a TCP connection at the
 * first close of either side, so a half-close loses the reply's tail there
 * (ours carries it, as RFC 6455 allows).
 *
 * PROXY_URL defaults to http://localhost:8000; the token may also come from
 * $PIKO_TOKEN. Exits 0 once the reply has ended, 1 with the library's
 * message ("dial: 502: no available upstreams") when it cannot connect.
 *
 * Build against an installed library:
 *   cc dial.c $(pkg-config --cflags --libs piko-client) -pthread
 */
#include <piko/client.h>

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* stdin -> the connection, then a half-close: the endpoint sees EOF and
 * may still answer. */
static long long count;

static void *send_stdin(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[16384];
	ssize_t n;
	while ((n = read(STDIN_FILENO, buf, sizeof(buf))) > 0)
		if (write_all(fd, buf, (size_t)n) < 0)
			break;
	if (!count)
		shutdown(fd, SHUT_WR);
	return NULL;
}

int main(int argc, char **argv)
{
	struct piko_options opts;
	piko_options_init(&opts);
	opts.token = getenv("PIKO_TOKEN");
	int c;
	while ((c = getopt(argc, argv, "u:t:n:c:k")) != -1) {
		switch (c) {
		case 'u':
			opts.proxy_url = optarg;
			break;
		case 't':
			opts.token = optarg;
			break;
		case 'c':
			opts.tls_ca_file = optarg;
			break;
		case 'k':
			opts.tls_insecure_skip_verify = 1;
			break;
		case 'n':
			count = atoll(optarg);
			break;
		default:
			fprintf(stderr,
			        "usage: %s [-u PROXY_URL] [-t TOKEN] [-c CAFILE] [-k] [-n COUNT] "
			        "ENDPOINT\n",
			        argv[0]);
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(
		    stderr,
		    "usage: %s [-u PROXY_URL] [-t TOKEN] [-c CAFILE] [-k] [-n COUNT] ENDPOINT\n",
		    argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	struct piko_error err;
	int fd = piko_dial(&opts, argv[optind], &err);
	if (fd < 0) {
		fprintf(stderr, "%s\n", err.message);
		return 1;
	}
	pthread_t t;
	if (pthread_create(&t, NULL, send_stdin, (void *)(intptr_t)fd) != 0) {
		close(fd);
		return 1;
	}
	char buf[16384];
	ssize_t n = 0;
	int rc = 0;
	long long got = 0;
	while ((!count || got < count) && (n = read(fd, buf, sizeof(buf))) > 0) {
		got += n;
		if (write_all(STDOUT_FILENO, buf, (size_t)n) < 0) {
			rc = 1;
			break;
		}
	}
	if (n < 0)
		rc = 1;
	/* The reply ended: whatever stdin still holds is not wanted. */
	pthread_cancel(t);
	pthread_join(t, NULL);
	close(fd);
	/* Wait for the library to wind down (its thread, its last
	 * connection's close): a clean exit for leak checkers. */
	piko_client_cleanup();
	return rc;
}
