/*
 * pk_openloop: an open-loop HTTP/1.1 load generator that does not hide coordinated omission.
 *
 * Request i is due at t0 + i / rate, a fixed timetable that does not care how the server is
 * doing. A due request goes out on an idle keep-alive connection at once; when every
 * connection is busy it waits, and its latency still counts from the time it was due (the
 * intended send time), as wrk2 does. A stalled server therefore shows up as every request that
 * should have been sent during the stall, not as one slow sample.
 *
 * One thread, epoll, N keep-alive connections, one request in flight per connection (no
 * pipelining). Latencies go into a log-linear histogram (pk_hist.h). The first --warmup
 * seconds of the timetable are sent but not recorded. After the timetable ends, requests in
 * flight or still queued get --drain seconds; what has not completed by then is "lost".
 *
 * Output, one line of key=value pairs on stdout:
 *   rate conns duration sent ok errors lost achieved p50_us p90_us p99_us p999_us max_us
 * ok/errors/lost and the percentiles cover only requests due in the measured window; achieved is
 * the rate of 2xx answers that arrived within it (below --rate when the server cannot keep up).
 * errors: non-2xx answers, unparseable answers and connections that closed under a request.
 *
 * Usage: pk_openloop --port P [--host 127.0.0.1] [--path /] [--header 'k: v']... [--rate 5000]
 *                    [--conns 64] [--duration 10] [--warmup 2] [--drain 5]
 */
#include "pk_hist.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define RBUF_SIZE 16384
#define MAX_HEADERS 8
#define MAX_CONNS 4096

enum conn_state {
	CS_CLOSED = 0,
	CS_CONNECTING,
	CS_IDLE,
	CS_BUSY,
};

struct conn {
	int fd;
	enum conn_state state;
	uint64_t intended; /* when the request in flight was due */
	size_t wdone;      /* bytes of the request written */
	bool head_done;    /* response head parsed */
	bool close_after;  /* the response said Connection: close */
	int status;
	uint64_t body_left;
	size_t rlen;
	char rbuf[RBUF_SIZE];
	struct conn *next_idle;
};

struct gen {
	struct sockaddr_in addr;
	char *req;
	size_t req_len;
	int ep;
	struct conn *conns;
	int nconns;
	struct conn *idle;
	int inflight;
	uint64_t meas_start; /* requests due before this are warm-up */
	uint64_t meas_end;   /* the end of the timetable */
	uint64_t sent, ok, errors;
	uint64_t ok_in_window; /* 2xx answers that arrived between meas_start and meas_end */
	struct pk_hist hist;
};

static void die(const char *what)
{
	perror(what);
	exit(2);
}

static void set_events(struct gen *g, struct conn *c, uint32_t ev, int op)
{
	struct epoll_event e = {.events = ev, .data.ptr = c};

	if (epoll_ctl(g->ep, op, c->fd, &e) == -1)
		die("epoll_ctl");
}

static void push_idle(struct gen *g, struct conn *c)
{
	c->state = CS_IDLE;
	c->next_idle = g->idle;
	g->idle = c;
}

static struct conn *pop_idle(struct gen *g)
{
	struct conn *c = g->idle;

	if (c)
		g->idle = c->next_idle;
	return c;
}

static void conn_open(struct gen *g, struct conn *c)
{
	int one = 1;

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd == -1)
		die("socket");
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&g->addr, sizeof(g->addr)) == -1 &&
	    errno != EINPROGRESS)
		die("connect");
	c->state = CS_CONNECTING;
	set_events(g, c, EPOLLOUT, EPOLL_CTL_ADD);
}

/* Drops an idle connection from the idle stack (it is about to be closed). */
static void unlink_idle(struct gen *g, struct conn *c)
{
	struct conn **pp;

	for (pp = &g->idle; *pp; pp = &(*pp)->next_idle) {
		if (*pp == c) {
			*pp = c->next_idle;
			return;
		}
	}
}

/* Closes c and opens it again; a request in flight on it counts as an error. */
static void conn_reset(struct gen *g, struct conn *c, bool failed)
{
	if (c->state == CS_BUSY) {
		g->inflight--;
		if (failed && c->intended >= g->meas_start)
			g->errors++;
	} else if (c->state == CS_IDLE) {
		unlink_idle(g, c);
	}
	close(c->fd);
	c->fd = -1;
	c->state = CS_CLOSED;
	conn_open(g, c);
}

static void conn_write(struct gen *g, struct conn *c)
{
	while (c->wdone < g->req_len) {
		ssize_t n = send(c->fd, g->req + c->wdone, g->req_len - c->wdone, MSG_NOSIGNAL);

		if (n == -1) {
			if (errno == EAGAIN) {
				set_events(g, c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
				return;
			}
			conn_reset(g, c, true);
			return;
		}
		c->wdone += (size_t)n;
	}
}

static void send_request(struct gen *g, struct conn *c, uint64_t intended)
{
	c->state = CS_BUSY;
	c->intended = intended;
	c->wdone = 0;
	c->head_done = false;
	c->close_after = false;
	c->rlen = 0;
	g->inflight++;
	g->sent++;
	conn_write(g, c);
}

/*
 * Parses the response head in c->rbuf. Returns 1 when parsed, 0 when more bytes are needed and
 * -1 when the answer is not HTTP/1.x with a Content-Length (or a bodiless status).
 */
static int parse_head(struct conn *c)
{
	char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
	char *line, *eol;
	size_t head_len;
	long long clen = -1;

	if (!end)
		return c->rlen == RBUF_SIZE ? -1 : 0;
	head_len = (size_t)(end - c->rbuf) + 4;
	if (c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.", 7) != 0)
		return -1;
	c->status = atoi(c->rbuf + 9);
	for (line = memchr(c->rbuf, '\n', head_len) + 1; line < end; line = eol + 1) {
		eol = memchr(line, '\n', (size_t)(end + 2 - line));
		if (!eol)
			break;
		if (strncasecmp(line, "content-length:", 15) == 0)
			clen = atoll(line + 15);
		else if (strncasecmp(line, "connection:", 11) == 0 &&
		         memmem(line, (size_t)(eol - line), "close", 5))
			c->close_after = true;
	}
	if (clen < 0) {
		if (c->status == 204 || c->status == 304 || c->status / 100 == 1)
			clen = 0;
		else
			return -1;
	}
	if (c->rlen - head_len > (unsigned long long)clen)
		return -1; /* bytes beyond the response: we never pipeline */
	c->body_left = (uint64_t)clen - (c->rlen - head_len);
	c->head_done = true;
	return 1;
}

static void complete(struct gen *g, struct conn *c, uint64_t now)
{
	g->inflight--;
	if (c->intended >= g->meas_start) {
		if (c->status / 100 == 2) {
			g->ok++;
			if (now <= g->meas_end)
				g->ok_in_window++;
			pk_hist_record(&g->hist, now - c->intended);
		} else {
			g->errors++;
		}
	}
	if (c->close_after) {
		close(c->fd);
		c->state = CS_CLOSED;
		conn_open(g, c);
		return;
	}
	push_idle(g, c);
}

static void conn_read(struct gen *g, struct conn *c)
{
	char scratch[RBUF_SIZE];
	ssize_t n;

	if (c->state != CS_BUSY) {
		/* An idle connection is readable only when the server closed it. */
		n = read(c->fd, scratch, sizeof(scratch));
		if (n == -1 && errno == EAGAIN)
			return;
		conn_reset(g, c, false);
		return;
	}
	if (!c->head_done) {
		n = read(c->fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen);
	} else {
		n = read(c->fd, scratch, sizeof(scratch));
	}
	if (n == -1 && errno == EAGAIN)
		return;
	if (n <= 0) {
		conn_reset(g, c, true);
		return;
	}
	if (!c->head_done) {
		int r;

		c->rlen += (size_t)n;
		r = parse_head(c);
		if (r == 0)
			return;
		if (r < 0) {
			conn_reset(g, c, true);
			return;
		}
	} else {
		if ((uint64_t)n > c->body_left) {
			conn_reset(g, c, true);
			return;
		}
		c->body_left -= (uint64_t)n;
	}
	if (c->body_left == 0)
		complete(g, c, pk_now_ns());
}

static void on_event(struct gen *g, struct conn *c, uint32_t ev)
{
	if (c->state == CS_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 || err != 0) {
			close(c->fd);
			c->state = CS_CLOSED;
			usleep(1000);
			conn_open(g, c);
			return;
		}
		set_events(g, c, EPOLLIN, EPOLL_CTL_MOD);
		push_idle(g, c);
		return;
	}
	if ((ev & EPOLLOUT) && c->state == CS_BUSY && c->wdone < g->req_len) {
		conn_write(g, c);
		if (c->state != CS_BUSY)
			return; /* reset while writing */
		if (c->wdone == g->req_len)
			set_events(g, c, EPOLLIN, EPOLL_CTL_MOD);
	}
	if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
		conn_read(g, c);
}

static void usage(void)
{
	fprintf(stderr, "usage: pk_openloop --port P [--host 127.0.0.1] [--path /] "
	                "[--header 'k: v']... [--rate 5000] [--conns 64] [--duration 10] "
	                "[--warmup 2] [--drain 5]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"host", required_argument, NULL, 'h'},     {"port", required_argument, NULL, 'p'},
	    {"path", required_argument, NULL, 'u'},     {"header", required_argument, NULL, 'H'},
	    {"rate", required_argument, NULL, 'r'},     {"conns", required_argument, NULL, 'c'},
	    {"duration", required_argument, NULL, 'd'}, {"warmup", required_argument, NULL, 'w'},
	    {"drain", required_argument, NULL, 'D'},    {NULL, 0, NULL, 0},
	};
	const char *host = "127.0.0.1", *path = "/", *headers[MAX_HEADERS];
	int nheaders = 0, port = 0, opt;
	double rate = 5000, duration = 10, warmup = 2, drain = 5;
	static struct gen g;
	struct epoll_event evs[256];
	uint64_t t0, total, next = 0, sched_end, deadline, connect_deadline;
	size_t cap;
	int i;

	g.nconns = 64;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'h':
			host = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 'u':
			path = optarg;
			break;
		case 'H':
			if (nheaders == MAX_HEADERS)
				usage();
			headers[nheaders++] = optarg;
			break;
		case 'r':
			rate = atof(optarg);
			break;
		case 'c':
			g.nconns = atoi(optarg);
			break;
		case 'd':
			duration = atof(optarg);
			break;
		case 'w':
			warmup = atof(optarg);
			break;
		case 'D':
			drain = atof(optarg);
			break;
		default:
			usage();
		}
	}
	if (port <= 0 || rate <= 0 || duration <= 0 || warmup < 0 || g.nconns < 1 ||
	    g.nconns > MAX_CONNS)
		usage();
	signal(SIGPIPE, SIG_IGN);
	/* Wake up on time: the default 50 us timer slack would delay every scheduled send. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

	g.addr.sin_family = AF_INET;
	g.addr.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &g.addr.sin_addr) != 1)
		usage();
	cap = strlen(path) + strlen(host) + 64;
	for (i = 0; i < nheaders; i++)
		cap += strlen(headers[i]) + 2;
	g.req = malloc(cap);
	if (!g.req)
		die("malloc");
	g.req_len =
	    (size_t)snprintf(g.req, cap, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n", path, host, port);
	for (i = 0; i < nheaders; i++)
		g.req_len +=
		    (size_t)snprintf(g.req + g.req_len, cap - g.req_len, "%s\r\n", headers[i]);
	g.req_len += (size_t)snprintf(g.req + g.req_len, cap - g.req_len, "\r\n");

	g.ep = epoll_create1(EPOLL_CLOEXEC);
	if (g.ep == -1)
		die("epoll_create1");
	g.conns = calloc((size_t)g.nconns, sizeof(*g.conns));
	if (!g.conns)
		die("calloc");
	for (i = 0; i < g.nconns; i++)
		conn_open(&g, &g.conns[i]);

	/* Connect everything before the clock starts (bounded). */
	connect_deadline = pk_now_ns() + 5000000000ull;
	for (;;) {
		int idle = 0, n;
		struct conn *c;

		for (c = g.idle; c; c = c->next_idle)
			idle++;
		if (idle == g.nconns)
			break;
		if (pk_now_ns() > connect_deadline) {
			fprintf(stderr, "pk_openloop: only %d of %d connections up\n", idle,
			        g.nconns);
			return 1;
		}
		n = epoll_wait(g.ep, evs, 256, 100);
		for (i = 0; i < n; i++)
			on_event(&g, evs[i].data.ptr, evs[i].events);
	}

	t0 = pk_now_ns() + 1000000; /* start 1 ms from now */
	total = (uint64_t)((warmup + duration) * rate);
	g.meas_start = t0 + (uint64_t)(warmup * 1e9);
	sched_end = t0 + (uint64_t)((warmup + duration) * 1e9);
	g.meas_end = sched_end;
	deadline = sched_end + (uint64_t)(drain * 1e9);
	for (;;) {
		uint64_t now = pk_now_ns(), due, wait_ns;
		struct timespec ts;
		struct conn *c;
		int n;

		due = now < t0 ? 0 : (uint64_t)((double)(now - t0) * rate / 1e9) + 1;
		if (due > total)
			due = total;
		while (next < due && (c = pop_idle(&g))) {
			send_request(&g, c, t0 + (uint64_t)((double)next * 1e9 / rate));
			next++;
		}
		if (next >= total && g.inflight == 0)
			break;
		if (now >= deadline)
			break;
		if (next < due || next >= total) {
			wait_ns = 100000000; /* backlog or tail: wait for answers */
		} else {
			uint64_t at = t0 + (uint64_t)((double)next * 1e9 / rate);

			wait_ns = at > now ? at - now : 0;
		}
		if (wait_ns > deadline - now)
			wait_ns = deadline - now;
		ts.tv_sec = (time_t)(wait_ns / 1000000000ull);
		ts.tv_nsec = (long)(wait_ns % 1000000000ull);
		n = epoll_pwait2(g.ep, evs, 256, &ts, NULL);
		if (n == -1 && errno != EINTR)
			die("epoll_pwait2");
		for (i = 0; i < n; i++)
			on_event(&g, evs[i].data.ptr, evs[i].events);
	}

	{
		uint64_t window = total - (uint64_t)(warmup * rate);
		uint64_t lost = window > g.ok + g.errors ? window - g.ok - g.errors : 0;

		printf("rate=%.0f conns=%d duration=%.1f sent=%llu ok=%llu errors=%llu lost=%llu "
		       "achieved=%.1f ",
		       rate, g.nconns, duration, (unsigned long long)g.sent,
		       (unsigned long long)g.ok, (unsigned long long)g.errors,
		       (unsigned long long)lost, (double)g.ok_in_window / duration);
		pk_hist_print(&g.hist, stdout);
		printf("\n");
	}
	return 0;
}
