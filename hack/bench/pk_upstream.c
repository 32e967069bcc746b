/*
 * pk_upstream: many Piko upstream WebSockets, held idle or opened and closed in a loop.
 *
 *   pk_upstream hold  --port P [--count 10000] [--prefix bench-idle-] [--concurrency 256]
 *                     [--hold 60] [--timeout 60]
 *       Opens --count upstream connections (GET /piko/v1/upstream/<prefix><i>, RFC 6455
 *       upgrade), at most --concurrency handshakes at a time, one endpoint per connection as
 *       Piko's scale target has it. When every handshake has finished it prints
 *         established=N failed=M secs=T
 *       and then holds them idle for --hold seconds (or until SIGTERM/SIGINT), answering the
 *       server's yamux pings (type 2, SYN) with an ACK of the same id and WebSocket pings
 *       with pongs, then prints
 *         held=N dropped=D pings=P
 *   pk_upstream churn --port P [--concurrency 32] [--duration 5] [--endpoint bench-churn]
 *       Keeps --concurrency handshakes in flight: connect, upgrade, wait for the 101, close,
 *       repeat, for --duration seconds. Prints
 *         connects=N errors=E rate=R p50_us=... p90_us=... p99_us=... p999_us=... max_us=...
 *       (latency from connect() to the 101's last header byte).
 *
 * Clients bind to source addresses 127.0.0.2 .. 127.0.0.251 in turn so that 10k connections
 * and a churn's TIME_WAIT sockets never exhaust the ephemeral ports of one address pair.
 */
#include "pk_hist.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEAD_MAX 1024
#define SRC_ADDRS 250

enum up_state {
	UP_FREE = 0,
	UP_CONNECTING,
	UP_HANDSHAKE, /* upgrade sent, waiting for the 101 */
	UP_OPEN,
	UP_DEAD,
};

struct up {
	int fd;
	enum up_state state;
	uint64_t started;
	char *head; /* handshake buffer, only while UP_HANDSHAKE */
	size_t hlen;
	/* WebSocket frame parser (server frames are not masked). */
	uint8_t wshdr[14];
	uint8_t wshdr_len;
	uint8_t opcode;
	uint64_t ws_left; /* payload bytes of the current frame still to come */
	bool in_payload;
	uint8_t ctrl[125]; /* payload of a control frame, echoed in a pong */
	uint8_t ctrl_len;
	/* yamux frame parser over the binary payload byte stream. */
	uint8_t yhdr[12];
	uint8_t yhdr_len;
	uint32_t yskip; /* data bytes to skip */
};

static volatile sig_atomic_t stop;
static int port;
static int ep;
static uint64_t next_src;
static uint64_t pings;

static void die(const char *what)
{
	perror(what);
	exit(2);
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void up_start(struct up *u)
{
	struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
	struct epoll_event e = {.events = EPOLLOUT, .data.ptr = u};
	int one = 1;

	u->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (u->fd == -1)
		die("socket");
	setsockopt(u->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(u->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(next_src++ % SRC_ADDRS));
	if (bind(u->fd, (struct sockaddr *)&src, sizeof(src)) == -1)
		die("bind");
	dst.sin_port = htons((uint16_t)port);
	dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(u->fd, (struct sockaddr *)&dst, sizeof(dst)) == -1 && errno != EINPROGRESS)
		die("connect");
	u->state = UP_CONNECTING;
	u->started = pk_now_ns();
	u->hlen = 0;
	u->wshdr_len = 0;
	u->in_payload = false;
	u->yhdr_len = 0;
	u->yskip = 0;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, u->fd, &e) == -1)
		die("epoll_ctl");
}

static void up_close(struct up *u, enum up_state state)
{
	close(u->fd);
	u->fd = -1;
	free(u->head);
	u->head = NULL;
	u->state = state;
}

static int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n == -1) {
			if (errno == EAGAIN) {
				usleep(100); /* a 12-byte answer on loopback: never in practice */
				continue;
			}
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int send_upgrade(struct up *u, const char *endpoint)
{
	char req[512];
	int n = snprintf(req, sizeof(req),
	                 "GET /piko/v1/upstream/%s HTTP/1.1\r\n"
	                 "Host: 127.0.0.1:%d\r\n"
	                 "Upgrade: websocket\r\n"
	                 "Connection: Upgrade\r\n"
	                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	                 "Sec-WebSocket-Version: 13\r\n\r\n",
	                 endpoint, port);

	return send_all(u->fd, req, (size_t)n);
}

/* Sends one masked client frame. */
static int ws_send(struct up *u, uint8_t opcode, const uint8_t *payload, size_t len)
{
	uint8_t frame[2 + 4 + 125];
	uint8_t mask[4] = {0x5a, 0xc3, 0x96, 0x1e};
	size_t i;

	frame[0] = (uint8_t)(0x80 | opcode);
	frame[1] = (uint8_t)(0x80 | len);
	memcpy(frame + 2, mask, 4);
	for (i = 0; i < len; i++)
		frame[6 + i] = payload[i] ^ mask[i & 3];
	return send_all(u->fd, frame, 6 + len);
}

/* Feeds binary-message payload bytes to the yamux parser; answers pings. */
static int yamux_feed(struct up *u, const uint8_t *p, size_t len)
{
	while (len > 0) {
		if (u->yskip > 0) {
			size_t k = len < u->yskip ? len : u->yskip;

			u->yskip -= (uint32_t)k;
			p += k;
			len -= k;
			continue;
		}
		u->yhdr[u->yhdr_len++] = *p++;
		len--;
		if (u->yhdr_len < 12)
			continue;
		u->yhdr_len = 0;
		if (u->yhdr[1] == 0) { /* data: skip its payload */
			u->yskip = (uint32_t)u->yhdr[8] << 24 | (uint32_t)u->yhdr[9] << 16 |
			           (uint32_t)u->yhdr[10] << 8 | u->yhdr[11];
		} else if (u->yhdr[1] == 2 && (u->yhdr[3] & 0x1)) {
			uint8_t ack[12];

			memcpy(ack, u->yhdr, 12);
			ack[2] = 0;
			ack[3] = 0x2; /* ACK */
			pings++;
			if (ws_send(u, 0x2, ack, 12) == -1)
				return -1;
		} else if (u->yhdr[1] == 3) {
			return -1; /* go away */
		}
	}
	return 0;
}

/* Feeds bytes received after the 101 to the WebSocket parser. */
static int ws_feed(struct up *u, const uint8_t *p, size_t len)
{
	while (len > 0) {
		if (!u->in_payload) {
			size_t need = 2;

			u->wshdr[u->wshdr_len++] = *p++;
			len--;
			if (u->wshdr_len >= 2) {
				uint8_t l7 = u->wshdr[1] & 0x7f;

				need = 2 +
				       (l7 == 126   ? 2
				        : l7 == 127 ? 8
				                    : 0) +
				       ((u->wshdr[1] & 0x80) ? 4 : 0);
			}
			if (u->wshdr_len < need)
				continue;
			if (u->wshdr[1] & 0x80)
				return -1; /* a server must not mask */
			u->opcode = u->wshdr[0] & 0x0f;
			u->ws_left = u->wshdr[1] & 0x7f;
			if (u->ws_left == 126) {
				u->ws_left = (uint64_t)u->wshdr[2] << 8 | u->wshdr[3];
			} else if (u->ws_left == 127) {
				int i;

				u->ws_left = 0;
				for (i = 0; i < 8; i++)
					u->ws_left = u->ws_left << 8 | u->wshdr[2 + i];
			}
			u->wshdr_len = 0;
			u->ctrl_len = 0;
			u->in_payload = true;
			if (u->opcode >= 8 && u->ws_left > sizeof(u->ctrl))
				return -1;
		} else {
			size_t k = len < u->ws_left ? len : (size_t)u->ws_left;

			if (u->opcode >= 8) {
				memcpy(u->ctrl + u->ctrl_len, p, k);
				u->ctrl_len = (uint8_t)(u->ctrl_len + k);
			} else if (yamux_feed(u, p, k) == -1) {
				return -1;
			}
			p += k;
			len -= k;
			u->ws_left -= k;
		}
		if (u->in_payload && u->ws_left == 0) {
			u->in_payload = false;
			if (u->opcode == 0x8)
				return -1; /* close */
			if (u->opcode == 0x9 && ws_send(u, 0xa, u->ctrl, u->ctrl_len) == -1)
				return -1;
		}
	}
	return 0;
}

/*
 * Handles readable bytes during the handshake. Returns 1 when the 101 has arrived (leftover
 * bytes already fed to the WebSocket parser), 0 when more are needed, -1 on failure.
 */
static int read_handshake(struct up *u)
{
	char *end;
	ssize_t n;
	size_t head_len;

	if (!u->head) {
		u->head = malloc(HEAD_MAX);
		if (!u->head)
			die("malloc");
	}
	n = read(u->fd, u->head + u->hlen, HEAD_MAX - u->hlen);
	if (n == -1 && errno == EAGAIN)
		return 0;
	if (n <= 0)
		return -1;
	u->hlen += (size_t)n;
	end = memmem(u->head, u->hlen, "\r\n\r\n", 4);
	if (!end)
		return u->hlen == HEAD_MAX ? -1 : 0;
	if (u->hlen < 12 || memcmp(u->head, "HTTP/1.1 101", 12) != 0)
		return -1;
	head_len = (size_t)(end - u->head) + 4;
	if (ws_feed(u, (uint8_t *)u->head + head_len, u->hlen - head_len) == -1)
		return -1;
	free(u->head);
	u->head = NULL;
	return 1;
}

/* Drives one connection on an event. Returns the state it is in afterwards. */
static enum up_state up_event(struct up *u, uint32_t ev, const char *endpoint)
{
	if (u->state == UP_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);
		struct epoll_event e = {.events = EPOLLIN, .data.ptr = u};

		if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 || err != 0 ||
		    send_upgrade(u, endpoint) == -1) {
			up_close(u, UP_DEAD);
			return UP_DEAD;
		}
		if (epoll_ctl(ep, EPOLL_CTL_MOD, u->fd, &e) == -1)
			die("epoll_ctl");
		u->state = UP_HANDSHAKE;
		return u->state;
	}
	if (!(ev & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		return u->state;
	if (u->state == UP_HANDSHAKE) {
		int r = read_handshake(u);

		if (r < 0)
			up_close(u, UP_DEAD);
		else if (r > 0)
			u->state = UP_OPEN;
		return u->state;
	}
	if (u->state == UP_OPEN) {
		uint8_t buf[4096];
		ssize_t n = read(u->fd, buf, sizeof(buf));

		if (n == -1 && errno == EAGAIN)
			return u->state;
		if (n <= 0 || ws_feed(u, buf, (size_t)n) == -1)
			up_close(u, UP_DEAD);
	}
	return u->state;
}

static int cmd_hold(int count, const char *prefix, int concurrency, double hold, double timeout)
{
	struct up *ups = calloc((size_t)count, sizeof(*ups));
	struct epoll_event evs[512];
	uint64_t t0 = pk_now_ns(), deadline = t0 + (uint64_t)(timeout * 1e9), end;
	int started = 0, pending = 0, open = 0, failed = 0, i, n;
	char endpoint[256];

	if (!ups)
		die("calloc");
	while (open + failed < count) {
		while (started < count && pending < concurrency) {
			up_start(&ups[started++]);
			pending++;
		}
		if (pk_now_ns() > deadline || stop)
			break;
		n = epoll_wait(ep, evs, 512, 100);
		for (i = 0; i < n; i++) {
			struct up *u = evs[i].data.ptr;
			enum up_state before = u->state, after;

			snprintf(endpoint, sizeof(endpoint), "%s%d", prefix, (int)(u - ups));
			after = up_event(u, evs[i].events, endpoint);
			if (before == UP_OPEN || after == before)
				continue;
			if (after == UP_OPEN) {
				pending--;
				open++;
			} else if (after == UP_DEAD) {
				pending--;
				failed++;
			}
		}
	}
	printf("established=%d failed=%d secs=%.2f\n", open, count - open,
	       (double)(pk_now_ns() - t0) / 1e9);
	fflush(stdout);

	end = pk_now_ns() + (uint64_t)(hold * 1e9);
	while (!stop && pk_now_ns() < end) {
		n = epoll_wait(ep, evs, 512, 200);
		for (i = 0; i < n; i++) {
			struct up *u = evs[i].data.ptr;

			if (u->state == UP_OPEN && up_event(u, evs[i].events, "") == UP_DEAD)
				open--;
		}
	}
	printf("held=%d dropped=%d pings=%llu\n", open, count - failed - open,
	       (unsigned long long)pings);
	return open == count ? 0 : 1;
}

static int cmd_churn(int concurrency, double duration, const char *endpoint)
{
	struct up *ups = calloc((size_t)concurrency, sizeof(*ups));
	struct epoll_event evs[512];
	static struct pk_hist hist;
	uint64_t t0 = pk_now_ns(), end = t0 + (uint64_t)(duration * 1e9), done = 0, errors = 0;
	uint64_t drain_end = end + 5000000000ull;
	int active = 0, i, n;

	if (!ups)
		die("calloc");
	for (i = 0; i < concurrency; i++) {
		up_start(&ups[i]);
		active++;
	}
	while (active > 0 && pk_now_ns() < drain_end && !stop) {
		n = epoll_wait(ep, evs, 512, 100);
		for (i = 0; i < n; i++) {
			struct up *u = evs[i].data.ptr;
			enum up_state st = up_event(u, evs[i].events, endpoint);
			uint64_t now;

			if (st != UP_OPEN && st != UP_DEAD)
				continue;
			now = pk_now_ns();
			if (st == UP_OPEN) {
				if (now <= end) {
					done++;
					pk_hist_record(&hist, now - u->started);
				}
				up_close(u, UP_FREE);
			} else if (now <= end) {
				errors++;
			}
			if (now < end) {
				up_start(u);
			} else {
				active--;
			}
		}
	}
	printf("connects=%llu errors=%llu rate=%.1f ", (unsigned long long)done,
	       (unsigned long long)errors, (double)done / duration);
	pk_hist_print(&hist, stdout);
	printf("\n");
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: pk_upstream hold --port P [--count N] [--prefix S] "
	                "[--concurrency C] [--hold SECS] [--timeout SECS]\n"
	                "       pk_upstream churn --port P [--concurrency C] [--duration SECS] "
	                "[--endpoint E]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"port", required_argument, NULL, 'p'},
	    {"count", required_argument, NULL, 'n'},
	    {"prefix", required_argument, NULL, 'x'},
	    {"concurrency", required_argument, NULL, 'c'},
	    {"hold", required_argument, NULL, 'H'},
	    {"timeout", required_argument, NULL, 't'},
	    {"duration", required_argument, NULL, 'd'},
	    {"endpoint", required_argument, NULL, 'e'},
	    {NULL, 0, NULL, 0},
	};
	const char *prefix = "bench-idle-", *endpoint = "bench-churn", *cmd;
	int count = 10000, concurrency = -1, opt;
	double hold = 60, timeout = 60, duration = 5;
	struct sigaction sa = {.sa_handler = on_signal};

	if (argc < 2)
		usage();
	cmd = argv[1];
	optind = 2;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			port = atoi(optarg);
			break;
		case 'n':
			count = atoi(optarg);
			break;
		case 'x':
			prefix = optarg;
			break;
		case 'c':
			concurrency = atoi(optarg);
			break;
		case 'H':
			hold = atof(optarg);
			break;
		case 't':
			timeout = atof(optarg);
			break;
		case 'd':
			duration = atof(optarg);
			break;
		case 'e':
			endpoint = optarg;
			break;
		default:
			usage();
		}
	}
	if (port <= 0)
		usage();
	signal(SIGPIPE, SIG_IGN);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep == -1)
		die("epoll_create1");
	if (strcmp(cmd, "hold") == 0)
		return cmd_hold(count, prefix, concurrency > 0 ? concurrency : 256, hold, timeout);
	if (strcmp(cmd, "churn") == 0)
		return cmd_churn(concurrency > 0 ? concurrency : 32, duration, endpoint);
	usage();
	return 2;
}
