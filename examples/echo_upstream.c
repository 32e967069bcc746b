/*
 * echo_upstream: registers an endpoint on a Piko server and echoes every
 * byte of every connection routed to it, one thread per connection.
 *
 *   piko-example-echo_upstream [-u URL] [-t TOKEN] [-c CAFILE] [-k] [-C CERT -K KEY] [-n COUNT]
 * ENDPOINT
 *
 * URL is the server's upstream port (default http://localhost:8001); the
 * token may also come from $PIKO_TOKEN. With -n it exits after COUNT
 * connections have ended (for tests). For an https:// URL, -c trusts the CAs
 * of a PEM file (default: the system's), -k skips verifying the server, and
 * -C/-K present a client certificate and its key (mTLS). Prints "listening on
 * ENDPOINT" once registered; exits 1 with the library's message when it cannot connect.
 *
 * Build against an installed library:
 *   cc echo_upstream.c $(pkg-config --cflags --libs piko-client) -pthread
 */
#include <piko/client.h>

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int ended;
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void *echo(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[16384];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(fd, buf + off, (size_t)(n - off));
			if (w <= 0)
				goto out;
			off += w;
		}
	}
	/* The peer half-closed: we are done too. */
	shutdown(fd, SHUT_WR);
out:
	close(fd);
	pthread_mutex_lock(&mu);
	ended++;
	pthread_mutex_unlock(&mu);
	return NULL;
}

static int usage(const char *argv0)
{
	fprintf(stderr,
	        "usage: %s [-u URL] [-t TOKEN] [-c CAFILE] [-k] [-C CERT -K KEY] [-n COUNT] "
	        "ENDPOINT\n",
	        argv0);
	return 2;
}

int main(int argc, char **argv)
{
	struct piko_options opts;
	piko_options_init(&opts);
	opts.token = getenv("PIKO_TOKEN");
	int count = 0, c;
	while ((c = getopt(argc, argv, "u:t:n:c:kC:K:")) != -1) {
		switch (c) {
		case 'u':
			opts.url = optarg;
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
		case 'C':
			opts.tls_cert_file = optarg;
			break;
		case 'K':
			opts.tls_key_file = optarg;
			break;
		case 'n':
			count = atoi(optarg);
			break;
		default:
			return usage(argv[0]);
		}
	}
	if (optind != argc - 1) {
		return usage(argv[0]);
	}
	signal(SIGPIPE, SIG_IGN);
	/* SIGTERM/SIGINT: free the listener and exit 0 (the accept loop looks
	 * at the flag at least every 200 ms). */
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	struct piko_error err;
	struct piko_listener *l = piko_listen(&opts, argv[optind], &err);
	if (!l) {
		fprintf(stderr, "%s\n", err.message);
		return 1;
	}
	printf("listening on %s\n", piko_listener_endpoint(l));
	fflush(stdout);
	int accepted = 0, rc = 0;
	while (!stop) {
		pthread_mutex_lock(&mu);
		int done = count && ended >= count;
		pthread_mutex_unlock(&mu);
		if (done)
			break;
		if (count && accepted >= count) {
			usleep(10000);
			continue;
		}
		int fd = piko_accept(l, 200, &err);
		if (fd < 0) {
			if (err.code == PIKO_ETIMEDOUT)
				continue;
			fprintf(stderr, "%s\n", err.message);
			rc = 1;
			break;
		}
		accepted++;
		pthread_t t;
		if (pthread_create(&t, NULL, echo, (void *)(intptr_t)fd) != 0) {
			close(fd);
			continue;
		}
		pthread_detach(t);
	}
	piko_listener_free(l);
	return rc;
}
