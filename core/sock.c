/*
 * pk_sock: plain TCP connections whose readiness lws reports and whose bytes
 * we move ourselves (see sock.h for why).
 *
 * What this relies on in lws 4.1.6 (checked in its source, lib/roles/raw-file/
 * ops-raw-file.c, lib/core-net/{adopt,close,service,wsi}.c, and on this
 * machine by experiment):
 *
 *  - A descriptor adopted with LWS_ADOPT_RAW_FILE_DESC gets RAW_ADOPT_FILE
 *    synchronously inside lws_adopt_descriptor_vhost_via_info(), after the
 *    adopt info's .opaque was stored (lws_get_opaque_user_data() works in it).
 *    With per_session_data_size 0 lws allocates no user data. If adoption
 *    fails, lws does not close a file descriptor (it only does for sockets).
 *  - POLLOUT -> RAW_WRITEABLE_FILE, then lws clears POLLOUT *after* the
 *    callback returns: lws_callback_on_writable() from inside that callback
 *    is lost. We re-arm it from the doorbell below instead.
 *  - POLLIN -> RAW_RX_FILE; lws reads nothing, a zero-length read is ours.
 *  - lws_rx_flow_control() works on raw files (it toggles POLLIN; inside the
 *    wsi's own RX/WRITEABLE callback the change is applied on return).
 *  - The generic service code closes any wsi whose poll result has POLLHUP
 *    without POLLIN both requested and reported. TCP reports POLLHUP once
 *    both directions are shut (our FIN sent, the peer's received) or after a
 *    reset, so a connection whose reading is paused is closed by lws the
 *    moment the peer's FIN follows ours, with unread bytes still queued in
 *    the kernel. We "park" such a connection: keep a dup() of the fd from the
 *    close callback and adopt it again when reading resumes.
 *  - RAW_CLOSE_FILE is called with the fd still open; lws closes the fd right
 *    after (close.c, __lws_close_free_wsi_final), so we never close an
 *    adopted fd ourselves. It is also called for every wsi left when the
 *    context is destroyed.
 *  - lws_set_timeout(wsi, .., LWS_TO_KILL_ASYNC) closes the wsi from the next
 *    service pass, never from inside the call.
 *  - lws_service() sleeps until an fd event or an lws_sul timer. There is no
 *    public vhost -> context getter and the timed vhost-protocol callbacks
 *    are compiled out of Debian's build, so work that must not run inside an
 *    owner's call is queued and rung through an eventfd (the "doorbell")
 *    adopted into the same vhost.
 *
 * Single-threaded: everything runs on the one lws service thread.
 */
#include "sock.h"
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backoff.h"
#include "buf.h"
#include "log.h"
#include "resolve.h"

#define SUBSYS "sock"
#define PROTOCOL_NAME "pk-sock"
/* One read() per RX callback; poll is level-triggered, so the rest of what
 * is queued in the kernel comes on the next pass. */
#define READ_MAX (64 * 1024)
/* Bytes written per WRITEABLE callback, so one fast socket cannot starve the
 * others sharing the loop. */
#define WRITE_BUDGET (1024 * 1024)
/* accept() calls per RX callback on a listener, for the same reason. */
#define ACCEPT_MAX 64
/* After EMFILE and friends the listening socket stays readable; stop polling
 * it for this long rather than spin. */
#define ACCEPT_BACKOFF_MS 1000
/* A graceful close waits this long for the queue to drain, then resets. */
#define CLOSE_LINGER_MS 30000
/* After answering plain HTTP on a TLS port: how long to wait for the client
 * to close first (so our close does not reset the answer away). */
#define SNIFF_LINGER_MS 3000

/* The first member of everything we hand lws as opaque user data, so that a
 * callback knows what it got (and can tell a stale pointer from ours). */
enum kind {
	KIND_SOCK = 0x534b4f43,
	KIND_LISTENER = 0x4c495354,
	KIND_BELL = 0x42454c4c,
	KIND_SNIFF = 0x534e4946,
};

enum state {
	ST_CONNECTING = 0,
	ST_OPEN = 1,
	ST_TLS_HANDSHAKE = 2, /* TCP is up, the TLS client handshake runs */
};

/* Work done from the doorbell, i.e. outside any owner's pk_sock_*() call. */
enum {
	DEFER_WRITABLE = 1, /* ask lws for WRITEABLE again */
	DEFER_RETRY = 2,    /* connect to the next resolved address */
	DEFER_FINISH = 4,   /* call on_close and free (no wsi left) */
	DEFER_RESUME = 8,   /* re-adopt a parked socket whose reading is wanted */
	DEFER_READ = 16,    /* TLS: decrypted bytes wait in OpenSSL, poll won't tell */
};

/* One address to connect to. */
struct sock_addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

struct pk_sock {
	uint32_t kind;
	/* NULL while detached: parked, between connect attempts, or ending. */
	struct lws *wsi;
	/* Owned by lws while wsi is set (it closes it), by us otherwise. */
	int fd;
	enum state state;
	const struct pk_sock_ops *ops;
	void *user;
	struct pk_bufq sendq;

	unsigned paused : 1;       /* the owner stopped reading */
	unsigned eof_seen : 1;     /* read() returned 0 */
	unsigned fin_wanted : 1;   /* pk_sock_shutdown_write() */
	unsigned fin_sent : 1;     /* shutdown(SHUT_WR) done */
	unsigned close_wanted : 1; /* graceful pk_sock_close() */
	unsigned drain_armed : 1;  /* on_drain is owed */
	unsigned ending : 1;       /* on_close decided: end_reset/end_why */
	unsigned retrying : 1;     /* wsi closing to try the next address */
	unsigned parked : 1;       /* see the file comment */
	unsigned rx_on : 1;        /* what we last told lws_rx_flow_control() */
	unsigned in_cb : 1;        /* inside our RX/WRITEABLE handler for it */
	unsigned in_writeable : 1; /* inside our WRITEABLE handler for it */
	unsigned made_socket : 1;  /* connect: at least one socket() worked */

	int end_reset;
	const char *end_why;
	unsigned defer_bits;
	lws_dll2_t all_link;   /* g_socks */
	lws_dll2_t defer_link; /* g_defer */
	lws_dll2_t timer_link; /* g_timers */
	uint64_t deadline_ms;
	const char *deadline_why;

	/* Owner: this sock; freed once connected or at the end. */
	struct sock_addr *addrs;
	size_t n_addrs, next_addr;
	int last_err;
	char peer[272]; /* "host:port" of up to 255 + ":65535" */
	/* A name being resolved off the loop (pk_sock_resolve); NULL otherwise.
	 * Owner: the lookup pool until its callback runs or it is cancelled. */
	struct pk_sock_lookup *lookup;
	int port; /* to connect to once the name is resolved */

	/* TLS (pk_sock_use_tls): the context referenced until the handshake
	 * starts, then the connection. Owner: this sock. */
	SSL_CTX *tls_ctx;
	SSL *ssl;
	char *tls_name;
	int tls_verify_name;
	int tls_server;    /* pk_sock_accept_tls: we answer the handshake */
	char tls_why[192]; /* on_close's reason when TLS failed */
};

struct pk_sock_listener {
	uint32_t kind;
	struct lws *wsi; /* NULL once lws closed it (context destroyed) */
	int fd;          /* owned by lws while wsi is set */
	int port;
	void (*on_accept)(void *user, int fd);
	void *user;
	int in_accept; /* inside on_accept: pk_sock_listener_close defers the free */
	int closed;
	uint64_t resume_ms; /* accepting paused after EMFILE until then; 0: not */
	uint64_t sniff_ms;  /* pk_sock_listener_refuse_plain_http(); 0: off */
	lws_dll2_t link;    /* g_listeners */
};

/* An accepted connection of a TLS port waiting for its first byte
 * (pk_sock_listener_refuse_plain_http). */
struct sniff {
	uint32_t kind;
	struct lws *wsi; /* a raw file: lws closes the fd with it */
	int fd;
	struct pk_sock_listener *l; /* NULL once the listener is closed */
	uint64_t deadline_ms;
	int answered;    /* plain HTTP was answered: draining until the client closes */
	int killed;      /* its wsi is closing */
	lws_dll2_t link; /* g_sniffs */
};

static struct lws_vhost *g_vh;
static struct {
	uint32_t kind;
	struct lws *wsi;
	int fd;
	int rung;    /* an eventfd write is pending */
	int running; /* draining g_defer now */
} g_bell = {KIND_BELL, NULL, -1, 0, 0};
static lws_dll2_owner_t g_socks;     /* every live pk_sock */
static lws_dll2_owner_t g_defer;     /* socks with defer_bits */
static lws_dll2_owner_t g_timers;    /* socks with a deadline */
static lws_dll2_owner_t g_listeners; /* every live listener */
static lws_dll2_owner_t g_sniffs;    /* connections waiting for their first byte */
static uint8_t g_rbuf[READ_MAX];     /* one service thread: one read buffer */

/* ---- small helpers ---------------------------------------------------------- */

static struct lws *adopt_fd(int fd, void *opaque)
{
	lws_adopt_desc_t ad;
	memset(&ad, 0, sizeof(ad));
	ad.vh = g_vh;
	ad.type = LWS_ADOPT_RAW_FILE_DESC;
	ad.fd.filefd = fd;
	/* Named: without it lws binds the vhost's default protocol. */
	ad.vh_prot_name = PROTOCOL_NAME;
	ad.opaque = opaque;
	if (!g_vh)
		return NULL;
	return lws_adopt_descriptor_vhost_via_info(&ad);
}

static void set_nodelay(int fd)
{
	int one = 1;
	/* Fails harmlessly on a non-TCP fd. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void set_linger0(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	/* close() then sends a RST instead of a FIN. */
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

static int so_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		return errno;
	return err;
}

static int fd_hup(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, 0) == 1 && (p.revents & POLLHUP);
}

static const char *errno_reason(int err, int connecting)
{
	switch (err) {
	case ECONNREFUSED:
		return "connection refused";
	case ECONNRESET:
	case EPIPE:
	case ENOTCONN:
	case 0:
		return "reset";
	case ETIMEDOUT:
		return connecting ? "connect timeout" : "timed out";
	case EHOSTUNREACH:
		return "no route to host";
	case ENETUNREACH:
		return "network is unreachable";
	case ECONNABORTED:
		return "connection aborted";
	default:
		return strerror(err);
	}
}

static void addr_text(const struct sockaddr *sa, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	const void *p = sa;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = p;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		snprintf(out, len, "%s:%d", ip, ntohs(a->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = p;
		if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
			inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], ip, sizeof(ip));
			snprintf(out, len, "%s:%d", ip, ntohs(a->sin6_port));
		} else {
			inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
			snprintf(out, len, "[%s]:%d", ip, ntohs(a->sin6_port));
		}
	} else {
		snprintf(out, len, "unknown");
	}
}

/* ---- deferred work ---------------------------------------------------------- */

static void bell_ring(void)
{
	uint64_t one = 1;
	if (g_bell.rung || g_bell.running || g_bell.fd < 0)
		return;
	if (write(g_bell.fd, &one, sizeof(one)) == (ssize_t)sizeof(one))
		g_bell.rung = 1;
}

static void defer(struct pk_sock *s, unsigned bits)
{
	s->defer_bits |= bits;
	if (lws_dll2_is_detached(&s->defer_link))
		lws_dll2_add_tail(&s->defer_link, &g_defer);
	bell_ring();
}

static void timer_set(struct pk_sock *s, uint64_t deadline_ms, const char *why)
{
	if (!lws_dll2_is_detached(&s->timer_link) && s->deadline_ms <= deadline_ms)
		return; /* an earlier deadline stands */
	s->deadline_ms = deadline_ms;
	s->deadline_why = why;
	if (lws_dll2_is_detached(&s->timer_link))
		lws_dll2_add_tail(&s->timer_link, &g_timers);
}

static void timer_clear(struct pk_sock *s)
{
	lws_dll2_remove(&s->timer_link);
}

/* Tell lws whether we want POLLIN. */
static void rx_update(struct pk_sock *s)
{
	unsigned want = (!s->paused && !s->eof_seen && !s->close_wanted && !s->ending) ||
	                (s->state == ST_TLS_HANDSHAKE && !s->ending);
	if (!s->wsi || want == s->rx_on)
		return;
	s->rx_on = want;
	lws_rx_flow_control(s->wsi, (int)want);
}

static void want_write(struct pk_sock *s)
{
	if (!s->wsi || s->ending)
		return;
	if (s->in_writeable)
		defer(s, DEFER_WRITABLE); /* lws would drop the request */
	else
		lws_callback_on_writable(s->wsi);
}

/* Decide how it ends, once; on_close reports this. */
static void mark_end(struct pk_sock *s, int reset, const char *why)
{
	if (s->ending)
		return;
	s->ending = 1;
	s->end_reset = reset;
	s->end_why = why;
	timer_clear(s);
}

/* mark_end, then get rid of the wsi or fd: on_close follows from the loop
 * (RAW_CLOSE_FILE, or the doorbell when there is no wsi). */
static void sock_end(struct pk_sock *s, int reset, const char *why)
{
	if (s->ending)
		return;
	mark_end(s, reset, why);
	if (s->wsi) {
		/* Inside our own handler, returning -1 closes it. */
		if (!s->in_cb)
			lws_set_timeout(s->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT,
			                LWS_TO_KILL_ASYNC);
		return;
	}
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
	s->parked = 0;
	defer(s, DEFER_FINISH);
}

static void sock_unlink(struct pk_sock *s)
{
	lws_dll2_remove(&s->all_link);
	lws_dll2_remove(&s->defer_link);
	lws_dll2_remove(&s->timer_link);
	pk_sock_resolve_cancel(s->lookup);
	s->lookup = NULL;
	free(s->addrs);
	s->addrs = NULL;
	s->n_addrs = s->next_addr = 0;
	pk_bufq_clear(&s->sendq);
	SSL_free(s->ssl);
	s->ssl = NULL;
	SSL_CTX_free(s->tls_ctx);
	s->tls_ctx = NULL;
	free(s->tls_name);
	s->tls_name = NULL;
}

/* From the event loop only: report and free. The wsi is gone. */
static void sock_finish(struct pk_sock *s)
{
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
	if (!s->ending)
		mark_end(s, 1, "reset");
	sock_unlink(s);
	if (s->ops && s->ops->on_close)
		s->ops->on_close(s, s->end_reset, s->end_why);
	s->kind = 0;
	free(s);
}

static struct pk_sock *sock_new(const struct pk_sock_ops *ops, void *user, size_t send_cap)
{
	/* Owner: the event loop, through g_socks; freed by sock_finish() right
	 * after on_close (or at once by sock_discard() if never handed out). */
	struct pk_sock *s = pk_xcalloc(1, sizeof(*s));
	s->kind = KIND_SOCK;
	s->fd = -1;
	s->ops = ops;
	s->user = user;
	pk_bufq_init(&s->sendq, send_cap);
	lws_dll2_add_tail(&s->all_link, &g_socks);
	return s;
}

static void sock_discard(struct pk_sock *s)
{
	sock_unlink(s);
	free(s);
}

/* ---- names resolved off the loop -------------------------------------------- */

/* Lookup threads, started on demand: a name whose DNS is slow holds one of
 * them while the others serve other names (one pk_resolver is one thread and
 * answers in order). */
#define RESOLVERS 4

struct pk_sock_lookup {
	void (*cb)(void *user, const struct pk_resolve_result *res, const char *err);
	void *user;
	int r;       /* index in g_res */
	uint64_t id; /* the resolver's query */
};

static struct pk_resolver *g_res[RESOLVERS];
static size_t g_res_busy[RESOLVERS]; /* outstanding queries per resolver */

/* From a lookup thread: ring the doorbell, whose handler dispatches. */
static void res_wake(void *arg)
{
	(void)arg;
	uint64_t one = 1;
	int fd = __atomic_load_n(&g_bell.fd, __ATOMIC_ACQUIRE);
	if (fd >= 0 && write(fd, &one, sizeof(one)) == -1) {
		/* EAGAIN: the counter is full, the loop wakes anyway. */
	}
}

static void res_dispatch(void)
{
	for (int i = 0; i < RESOLVERS; i++)
		if (g_res[i])
			pk_resolver_dispatch(g_res[i]);
}

/* Stop the lookup threads (each waits for its lookup in progress). */
static void res_free_all(void)
{
	for (int i = 0; i < RESOLVERS; i++) {
		pk_resolver_free(g_res[i]);
		g_res[i] = NULL;
		g_res_busy[i] = 0;
	}
}

static void lookup_done(void *user, const struct pk_resolve_result *res, const char *err)
{
	struct pk_sock_lookup *lk = user;
	g_res_busy[lk->r]--;
	void (*cb)(void *, const struct pk_resolve_result *, const char *) = lk->cb;
	void *cb_user = lk->user;
	free(lk);
	cb(cb_user, res, err);
}

int pk_sock_is_ip(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;
	if (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1)
		return 1;
	/* fe80::1%eth0: a scoped IPv6 literal. */
	const char *pct = strchr(host, '%');
	char tmp[64];
	if (!pct || (size_t)(pct - host) >= sizeof(tmp))
		return 0;
	memcpy(tmp, host, (size_t)(pct - host));
	tmp[pct - host] = '\0';
	return inet_pton(AF_INET6, tmp, &a6) == 1;
}

struct pk_sock_lookup *pk_sock_resolve(const char *host,
                                       void (*cb)(void *user, const struct pk_resolve_result *res,
                                                  const char *err),
                                       void *user)
{
	/* An idle thread, starting one if there is room; else the least busy. */
	int pick = -1;
	for (int i = 0; i < RESOLVERS && pick < 0; i++) {
		if (g_res[i] && !g_res_busy[i])
			pick = i;
	}
	for (int i = 0; i < RESOLVERS && pick < 0; i++) {
		if (!g_res[i]) {
			g_res[i] = pk_resolver_new(res_wake, NULL);
			if (g_res[i])
				pick = i;
		}
	}
	for (int i = 0; i < RESOLVERS; i++) {
		if (g_res[i] && (pick < 0 || g_res_busy[i] < g_res_busy[pick]))
			pick = i;
	}
	if (pick < 0)
		return NULL;
	struct pk_sock_lookup *lk = pk_xcalloc(1, sizeof(*lk));
	lk->cb = cb;
	lk->user = user;
	lk->r = pick;
	lk->id = pk_resolver_query(g_res[pick], host, lookup_done, lk);
	if (!lk->id) {
		free(lk);
		return NULL;
	}
	g_res_busy[pick]++;
	return lk;
}

void pk_sock_resolve_cancel(struct pk_sock_lookup *lk)
{
	if (!lk)
		return;
	if (g_res[lk->r]) {
		pk_resolver_cancel(g_res[lk->r], lk->id);
		g_res_busy[lk->r]--;
	}
	free(lk);
}

/* ---- connecting ------------------------------------------------------------- */

/* Start a nonblocking connect to the next resolved address that takes one.
 * Returns 0 with a wsi waiting for writability, or -1 (last_err set). */
static int connect_next(struct pk_sock *s)
{
	while (s->next_addr < s->n_addrs) {
		const struct sock_addr *ai = &s->addrs[s->next_addr++];
		int fd = socket(ai->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd == -1) {
			s->last_err = errno;
			continue;
		}
		s->made_socket = 1;
		set_nodelay(fd);
		if (connect(fd, (const void *)&ai->ss, ai->len) == -1 && errno != EINPROGRESS) {
			s->last_err = errno;
			close(fd);
			continue;
		}
		addr_text((const void *)&ai->ss, s->peer, sizeof(s->peer));
		s->fd = fd;
		s->rx_on = 1; /* lws polls POLLIN from adoption on */
		s->wsi = adopt_fd(fd, s);
		if (!s->wsi) {
			s->last_err = EMFILE;
			close(fd);
			s->fd = -1;
			continue;
		}
		rx_update(s);
		/* The connect's outcome comes as writability. */
		lws_callback_on_writable(s->wsi);
		return 0;
	}
	return -1;
}

/* The name of a pk_sock_connect() was resolved: try its addresses in order
 * (as Go's dialer does for "localhost" when the service listens on 127.0.0.1
 * only). */
static void connect_resolved(void *user, const struct pk_resolve_result *res, const char *err)
{
	struct pk_sock *s = user;
	s->lookup = NULL;
	if (s->ending)
		return; /* its finish is on the way */
	if (s->close_wanted) {
		sock_end(s, 1, "closed");
		return;
	}
	if (err || !res->n) {
		int noname = !err || !strcmp(err, gai_strerror(EAI_NONAME)) ||
		             !strcmp(err, gai_strerror(EAI_NODATA));
		sock_end(s, 1, noname ? "no such host" : err);
		return;
	}
	s->addrs = pk_xcalloc(res->n, sizeof(*s->addrs));
	char portstr[8];
	snprintf(portstr, sizeof(portstr), "%d", s->port);
	for (size_t i = 0; i < res->n; i++) {
		struct addrinfo hints, *ai = NULL;
		memset(&hints, 0, sizeof(hints));
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_NUMERICSERV | AI_NUMERICHOST;
		if (getaddrinfo(res->addrs[i], portstr, &hints, &ai) != 0 || !ai)
			continue;
		memcpy(&s->addrs[s->n_addrs].ss, ai->ai_addr, ai->ai_addrlen);
		s->addrs[s->n_addrs].len = ai->ai_addrlen;
		s->n_addrs++;
		freeaddrinfo(ai);
	}
	if (connect_next(s) < 0)
		sock_end(s, 1, s->made_socket ? errno_reason(s->last_err, 1) : "no such host");
}

/* In the WRITEABLE handler or the close callback: this address failed. */
static void connect_failed(struct pk_sock *s, int err)
{
	s->last_err = err;
	if (s->next_addr < s->n_addrs && !s->close_wanted)
		s->retrying = 1; /* the close callback schedules the next try */
	else
		mark_end(s, 1, errno_reason(err, 1));
}

/* ---- TLS ---------------------------------------------------------------------- */

/* Our FIN: over TLS a close_notify first (a few bytes; a full send buffer
 * only loses the alert, the FIN still ends the stream). */
static int send_fin(struct pk_sock *s)
{
	if (s->ssl && s->state == ST_OPEN)
		SSL_shutdown(s->ssl);
	return shutdown(s->fd, SHUT_WR);
}

/* on_close's reason for a TLS failure, kept in the sock. */
static const char *tls_failure(struct pk_sock *s, int ssl_error)
{
	long v = s->ssl ? SSL_get_verify_result(s->ssl) : X509_V_OK;
	unsigned long e = ERR_get_error();
	if (v != X509_V_OK)
		snprintf(s->tls_why, sizeof(s->tls_why), "tls: certificate verify failed: %s",
		         X509_verify_cert_error_string(v));
	else if (e)
		snprintf(s->tls_why, sizeof(s->tls_why), "tls: %s", ERR_reason_error_string(e));
	else if (ssl_error == SSL_ERROR_SYSCALL)
		snprintf(s->tls_why, sizeof(s->tls_why), "tls: %s",
		         errno ? errno_reason(errno, 0) : "connection closed in the handshake");
	else
		snprintf(s->tls_why, sizeof(s->tls_why), "tls: error %d", ssl_error);
	ERR_clear_error();
	return s->tls_why;
}

static int sock_flush(struct pk_sock *s);

/* The peer is done sending; with our FIN out too, the connection is done. */
static void saw_eof(struct pk_sock *s)
{
	s->eof_seen = 1;
	rx_update(s);
	if (s->ops->on_eof)
		s->ops->on_eof(s);
	if (!s->ending && s->fin_sent)
		mark_end(s, 0, "closed");
}

/* Connected (and past TLS, if any): the connect timeout ends, reading
 * follows the owner's wishes, and the owner hears of it. -1 when the owner
 * ended it from on_connected. */
static int became_open(struct pk_sock *s)
{
	s->state = ST_OPEN;
	timer_clear(s);
	if (s->close_wanted)
		timer_set(s, pk_now_ms() + CLOSE_LINGER_MS, "close timeout");
	rx_update(s);
	if (!s->close_wanted && s->ops->on_connected)
		s->ops->on_connected(s);
	return s->ending ? -1 : 0;
}

/* TCP is up: start or continue the client handshake. */
static int tls_step(struct pk_sock *s)
{
	if (!s->ssl) {
		s->ssl = SSL_new(s->tls_ctx);
		if (!s->ssl || SSL_set_fd(s->ssl, s->fd) != 1) {
			mark_end(s, 1, tls_failure(s, SSL_ERROR_SSL));
			return -1;
		}
		unsigned char ip[16];
		int is_ip = inet_pton(AF_INET, s->tls_name, ip) == 1 ||
		            inet_pton(AF_INET6, s->tls_name, ip) == 1;
		if (!is_ip && !s->tls_server)
			SSL_set_tlsext_host_name(s->ssl, s->tls_name);
		if (s->tls_verify_name && !s->tls_server) {
			X509_VERIFY_PARAM *vp = SSL_get0_param(s->ssl);
			if (is_ip)
				X509_VERIFY_PARAM_set1_ip_asc(vp, s->tls_name);
			else
				SSL_set1_host(s->ssl, s->tls_name);
		}
		s->state = ST_TLS_HANDSHAKE;
		rx_update(s);
	}
	ERR_clear_error();
	int r = s->tls_server ? SSL_accept(s->ssl) : SSL_connect(s->ssl);
	if (r == 1)
		return became_open(s) < 0 ? -1 : sock_flush(s);
	int e = SSL_get_error(s->ssl, r);
	if (e == SSL_ERROR_WANT_READ)
		return 0; /* POLLIN is on during the handshake */
	if (e == SSL_ERROR_WANT_WRITE) {
		defer(s, DEFER_WRITABLE);
		return 0;
	}
	mark_end(s, 1, tls_failure(s, e));
	return -1;
}

/* Read decrypted bytes: records can hold more than one read takes, and what
 * OpenSSL already decrypted never shows up in poll, so read until it wants
 * the socket again (bounded per call; the rest is deferred). */
static int tls_rx(struct pk_sock *s)
{
	size_t budget = READ_MAX;
	while (budget && !s->paused && !s->eof_seen && !s->close_wanted && !s->ending) {
		ERR_clear_error();
		errno = 0;
		int n = SSL_read(s->ssl, g_rbuf, (int)sizeof(g_rbuf));
		if (n > 0) {
			if (s->ops->on_data)
				s->ops->on_data(s, g_rbuf, (size_t)n);
			budget = (size_t)n >= budget ? 0 : budget - (size_t)n;
			continue;
		}
		int e = SSL_get_error(s->ssl, n);
		if (e == SSL_ERROR_WANT_READ)
			return 0;
		if (e == SSL_ERROR_WANT_WRITE) {
			want_write(s);
			return 0;
		}
		if (e == SSL_ERROR_ZERO_RETURN ||
		    (e == SSL_ERROR_SYSCALL && errno == 0 && !ERR_peek_error())) {
			/* close_notify, or (allowed by the context) a bare FIN. */
			saw_eof(s);
			return 0;
		}
		if (e == SSL_ERROR_SYSCALL && errno)
			mark_end(s, 1, errno_reason(errno, 0));
		else
			mark_end(s, 1, tls_failure(s, e));
		return -1;
	}
	if (!s->ending && !s->paused && !s->eof_seen && SSL_pending(s->ssl) > 0)
		defer(s, DEFER_READ);
	return 0;
}

/* ---- I/O handlers ----------------------------------------------------------- */

static int sock_flush(struct pk_sock *s)
{
	size_t budget = WRITE_BUDGET;
	while (s->sendq.len && budget) {
		size_t n;
		const uint8_t *p = pk_bufq_peek(&s->sendq, &n);
		if (n > budget)
			n = budget;
		ssize_t w;
		if (s->ssl) {
			ERR_clear_error();
			errno = 0;
			int r = SSL_write(s->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
			if (r <= 0) {
				int e = SSL_get_error(s->ssl, r);
				if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
					break;
				mark_end(s, 1,
				         e == SSL_ERROR_SYSCALL && errno ? errno_reason(errno, 0)
				                                         : tls_failure(s, e));
				return -1;
			}
			w = r;
		} else {
			w = pk_bufq_sendmsg(&s->sendq, s->fd, budget, &n);
		}
		if (w == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			mark_end(s, 1, errno_reason(errno, 0));
			return -1;
		}
		pk_bufq_consume(&s->sendq, (size_t)w);
		budget -= (size_t)w;
		if ((size_t)w < n && !s->ssl)
			break; /* the kernel is full: wait for POLLOUT */
	}
	if (s->sendq.len) {
		defer(s, DEFER_WRITABLE);
	} else if ((s->fin_wanted || s->close_wanted) && !s->fin_sent) {
		if (send_fin(s) == -1) {
			mark_end(s, 1, errno_reason(errno, 0));
			return -1;
		}
		s->fin_sent = 1;
	}
	if (s->close_wanted && !s->sendq.len) {
		mark_end(s, 0, "closed");
		return -1;
	}
	if (s->fin_sent && s->eof_seen) {
		mark_end(s, 0, "closed");
		return -1;
	}
	if (s->drain_armed && (s->sendq.len == 0 || s->sendq.len * 2 < s->sendq.cap) &&
	    !s->fin_wanted) {
		s->drain_armed = 0;
		if (s->ops->on_drain)
			s->ops->on_drain(s);
	}
	return 0;
}

static int sock_writeable(struct pk_sock *s)
{
	if (s->state == ST_CONNECTING) {
		int err = so_error(s->fd);
		if (!err) {
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);
			if (getpeername(s->fd, (void *)&ss, &sl) == -1) {
				if (errno != ENOTCONN) {
					err = errno;
				} else {
					/* Not connected yet: keep waiting. */
					defer(s, DEFER_WRITABLE);
					return 0;
				}
			}
		}
		if (err) {
			connect_failed(s, err);
			return -1;
		}
		free(s->addrs);
		s->addrs = NULL;
		s->n_addrs = s->next_addr = 0;
		if (s->tls_ctx)
			return tls_step(s); /* the connect timeout still runs */
		if (became_open(s) < 0)
			return -1;
	}
	if (s->state == ST_TLS_HANDSHAKE)
		return tls_step(s);
	return sock_flush(s);
}

static int sock_rx(struct pk_sock *s)
{
	if (s->state == ST_TLS_HANDSHAKE)
		return tls_step(s);
	/* Readiness can be stale: the owner may have paused us from another
	 * callback in this same poll pass. */
	if (s->state != ST_OPEN || s->paused || s->eof_seen || s->close_wanted)
		return 0;
	if (s->ssl)
		return tls_rx(s);
	ssize_t n = read(s->fd, g_rbuf, sizeof(g_rbuf));
	if (n > 0) {
		if (s->ops->on_data)
			s->ops->on_data(s, g_rbuf, (size_t)n);
		return 0;
	}
	if (n == 0) {
		saw_eof(s);
		return 0;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return 0;
	mark_end(s, 1, errno_reason(errno, 0));
	return -1;
}

/* RAW_CLOSE_FILE: the wsi is going; the fd is still open and lws closes it
 * right after we return. */
static void sock_closed(struct pk_sock *s, struct lws *wsi)
{
	int fd = s->fd;
	lws_set_opaque_user_data(wsi, NULL);
	s->wsi = NULL;
	s->fd = -1;
	s->rx_on = 0;
	if (s->retrying) {
		s->retrying = 0;
		if (!s->ending) {
			defer(s, DEFER_RETRY);
			return;
		}
	}
	if (!s->ending) {
		/* lws closed it on its own: find out why. */
		int err = so_error(fd);
		if (s->state == ST_CONNECTING && !err && !fd_hup(fd)) {
			mark_end(s, 1, "shutdown"); /* the context is going away */
		} else if (s->state == ST_CONNECTING) {
			connect_failed(s, err ? err : ECONNREFUSED);
			if (s->retrying) {
				s->retrying = 0;
				defer(s, DEFER_RETRY);
				return;
			}
		} else if (err) {
			mark_end(s, 1, errno_reason(err, 0));
		} else if (!fd_hup(fd)) {
			mark_end(s, 1, "shutdown"); /* the context is going away */
		} else if (s->eof_seen && s->fin_sent) {
			mark_end(s, 0, "closed");
		} else if (s->fin_sent && !s->close_wanted) {
			/* POLLHUP with reading off: the peer's FIN came after
			 * ours. Keep the socket, bytes may still be unread.
			 * "Reading off" is what lws polled with, which can lag
			 * our paused flag: a resume from another callback in
			 * the same poll pass has not reached the poll set yet.
			 * So park whenever EOF was not seen, and if reading is
			 * wanted already, re-adopt at once (from the doorbell:
			 * not inside this close callback). */
			int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
			if (nfd != -1) {
				s->fd = nfd;
				/* OpenSSL reads and writes the descriptor too. */
				if (s->ssl)
					SSL_set_fd(s->ssl, nfd);
				s->parked = 1;
				if (!s->paused)
					defer(s, DEFER_RESUME);
				return;
			}
			mark_end(s, 1, "reset");
		} else {
			mark_end(s, 1, "reset");
		}
	}
	sock_finish(s);
}

static int sock_callback(struct pk_sock *s, struct lws *wsi, enum lws_callback_reasons reason)
{
	int r;
	if (reason == LWS_CALLBACK_RAW_CLOSE_FILE) {
		sock_closed(s, wsi);
		return 0;
	}
	if (s->ending)
		return -1;
	s->in_cb = 1;
	if (reason == LWS_CALLBACK_RAW_WRITEABLE_FILE) {
		s->in_writeable = 1;
		r = sock_writeable(s);
		s->in_writeable = 0;
	} else {
		r = sock_rx(s);
	}
	s->in_cb = 0;
	/* An owner's pk_sock_close() from inside its callback lands here. */
	if (s->ending || s->retrying)
		r = -1;
	return r;
}

/* ---- listeners -------------------------------------------------------------- */

static void sniff_start(struct pk_sock_listener *l, int fd);

static int listener_rx(struct pk_sock_listener *l)
{
	for (int i = 0; i < ACCEPT_MAX; i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			pk_log(PK_LOG_WARN, SUBSYS, "accept failed", "error", strerror(errno),
			       NULL);
			l->resume_ms = pk_now_ms() + ACCEPT_BACKOFF_MS;
			lws_rx_flow_control(l->wsi, 0);
			break;
		}
		if (l->sniff_ms) {
			sniff_start(l, fd);
			continue;
		}
		l->in_accept = 1;
		l->on_accept(l->user, fd);
		l->in_accept = 0;
		if (l->closed) {
			/* pk_sock_listener_close() from on_accept. */
			free(l);
			return -1;
		}
	}
	return 0;
}

/* ---- plain HTTP on a TLS port ------------------------------------------------ */

/* What Go's net/http server writes to a plain HTTP request on a TLS port
 * (server.go, after tls.RecordHeaderError), byte for byte. */
static const char plain_http_answer[] = "HTTP/1.0 400 Bad Request\r\n\r\n"
                                        "Client sent an HTTP request to an HTTPS server.\n";

static void sniff_kill(struct sniff *sn)
{
	if (sn->killed)
		return;
	sn->killed = 1;
	lws_set_timeout(sn->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
}

static void sniff_start(struct pk_sock_listener *l, int fd)
{
	/* Owner: the event loop, through g_sniffs; freed on RAW_CLOSE_FILE. */
	struct sniff *sn = pk_xcalloc(1, sizeof(*sn));
	sn->kind = KIND_SNIFF;
	sn->fd = fd;
	sn->l = l;
	sn->deadline_ms = pk_now_ms() + l->sniff_ms;
	lws_dll2_add_tail(&sn->link, &g_sniffs);
	sn->wsi = adopt_fd(fd, sn);
	if (!sn->wsi) {
		lws_dll2_remove(&sn->link);
		close(fd);
		sn->kind = 0;
		free(sn);
	}
}

/* The first byte decides, and it is only peeked: a TLS record starts with
 * its content type (20..24; a ClientHello 0x16) and an SSLv2-style hello
 * with a byte >= 0x80, so an ASCII capital letter (the first of a request
 * method) can only be plain HTTP, which the handshake would refuse anyway:
 * answering it weakens nothing. Go answers only requests starting "GET /",
 * "HEAD ", "POST ", "PUT /" or "OPTIO" and fails the handshake silently on
 * other methods; we answer every method. Returns -1 when the wsi is to
 * close (lws then closes our fd). */
static int sniff_rx(struct sniff *sn)
{
	if (sn->answered) {
		/* Drop what the client still sends until it closes. */
		ssize_t n = read(sn->fd, g_rbuf, sizeof(g_rbuf));
		if (n > 0 || (n == -1 && (errno == EAGAIN || errno == EINTR)))
			return 0;
		return -1;
	}
	uint8_t b;
	ssize_t n = recv(sn->fd, &b, 1, MSG_PEEK);
	if (n == -1)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
	if (n == 0)
		return -1; /* closed before saying anything */
	if (b >= 'A' && b <= 'Z') {
		/* Read what came (one read: poll is level-triggered), answer,
		 * send our FIN, and wait for the client's before closing: a
		 * close with its bytes unread would reset the answer away. */
		if (read(sn->fd, g_rbuf, sizeof(g_rbuf)) <= 0)
			return -1;
		size_t len = sizeof(plain_http_answer) - 1;
		if (send(sn->fd, plain_http_answer, len, MSG_NOSIGNAL) != (ssize_t)len ||
		    shutdown(sn->fd, SHUT_WR) == -1)
			return -1;
		pk_log(PK_LOG_DEBUG, SUBSYS, "plain HTTP request on a TLS port: answered 400",
		       NULL);
		sn->answered = 1;
		sn->deadline_ms = pk_now_ms() + SNIFF_LINGER_MS;
		return 0;
	}
	/* Not plain HTTP: the connection goes on, every byte still unread, as
	 * a fresh descriptor (lws closes this one with the sniff's wsi). */
	struct pk_sock_listener *l = sn->l;
	if (!l)
		return -1;
	int nfd = fcntl(sn->fd, F_DUPFD_CLOEXEC, 0);
	if (nfd == -1) {
		pk_log(PK_LOG_WARN, SUBSYS, "accept failed", "error", strerror(errno), NULL);
		return -1;
	}
	lws_dll2_remove(&sn->link);
	sn->l = NULL;
	/* on_accept may close l: nothing here uses it afterwards. */
	l->on_accept(l->user, nfd);
	return -1;
}

static void sniff_closed(struct sniff *sn)
{
	lws_dll2_remove(&sn->link);
	sn->kind = 0;
	free(sn);
}

/* ---- the protocol ----------------------------------------------------------- */

/* Socks with no wsi left when the context goes: nothing will ever call them
 * back, so report them now. */
static void sock_teardown(void)
{
	for (;;) {
		struct pk_sock *found = NULL;
		lws_start_foreach_dll(struct lws_dll2 *, d, g_socks.head)
		{
			struct pk_sock *s = lws_container_of(d, struct pk_sock, all_link);
			if (!s->wsi) {
				found = s;
				break;
			}
		}
		lws_end_foreach_dll(d);
		if (!found)
			break;
		mark_end(found, 1, "shutdown");
		sock_finish(found);
	}
}

static void bell_run(void)
{
	uint64_t v;
	if (read(g_bell.fd, &v, sizeof(v)) == -1 && errno != EAGAIN)
		pk_log(PK_LOG_WARN, SUBSYS, "doorbell read failed", "error", strerror(errno), NULL);
	g_bell.rung = 0;
	res_dispatch(); /* may defer work, run just below */
	g_bell.running = 1;
	/* Entries added while this runs are taken by the same loop. Each entry
	 * adds itself again at most once per address (RETRY), so it ends. */
	struct lws_dll2 *d;
	while ((d = lws_dll2_get_head(&g_defer))) {
		struct pk_sock *s = lws_container_of(d, struct pk_sock, defer_link);
		unsigned bits = s->defer_bits;
		lws_dll2_remove(d);
		s->defer_bits = 0;
		if (bits & DEFER_FINISH) {
			sock_finish(s);
			continue;
		}
		if ((bits & DEFER_RETRY) && !s->ending && connect_next(s) < 0)
			sock_end(s, 1, errno_reason(s->last_err, 1));
		if ((bits & DEFER_WRITABLE) && s->wsi && !s->ending)
			lws_callback_on_writable(s->wsi);
		if ((bits & DEFER_RESUME) && s->parked && !s->paused && !s->ending)
			pk_sock_pause(s, 0);
		if ((bits & DEFER_READ) && s->wsi && !s->ending) {
			/* As from RX: a failure must take the wsi down too. */
			s->in_cb = 1;
			int r = sock_rx(s);
			s->in_cb = 0;
			if ((r < 0 || s->ending || s->retrying) && s->wsi)
				lws_set_timeout(s->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT,
				                LWS_TO_KILL_ASYNC);
		}
	}
	g_bell.running = 0;
}

static int pk_sock_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len)
{
	(void)user;
	(void)in;
	(void)len;
	switch (reason) {
	case LWS_CALLBACK_RAW_RX_FILE:
	case LWS_CALLBACK_RAW_WRITEABLE_FILE:
	case LWS_CALLBACK_RAW_CLOSE_FILE: {
		uint32_t *kind = lws_get_opaque_user_data(wsi);
		if (!kind) /* a closed listener waiting for its kill */
			return reason == LWS_CALLBACK_RAW_CLOSE_FILE ? 0 : -1;
		if (*kind == KIND_SOCK)
			return sock_callback(lws_container_of(kind, struct pk_sock, kind), wsi,
			                     reason);
		if (*kind == KIND_LISTENER) {
			struct pk_sock_listener *l =
			    lws_container_of(kind, struct pk_sock_listener, kind);
			if (reason == LWS_CALLBACK_RAW_RX_FILE)
				return listener_rx(l);
			if (reason == LWS_CALLBACK_RAW_CLOSE_FILE) {
				l->wsi = NULL; /* the owner still frees it */
				l->fd = -1;
			}
			return 0;
		}
		if (*kind == KIND_SNIFF) {
			struct sniff *sn = lws_container_of(kind, struct sniff, kind);
			if (reason == LWS_CALLBACK_RAW_CLOSE_FILE) {
				sniff_closed(sn);
				return 0;
			}
			return reason == LWS_CALLBACK_RAW_RX_FILE ? sniff_rx(sn) : 0;
		}
		if (*kind == KIND_BELL) {
			if (reason == LWS_CALLBACK_RAW_RX_FILE)
				bell_run();
			if (reason == LWS_CALLBACK_RAW_CLOSE_FILE) {
				g_bell.wsi = NULL;
				sock_teardown(); /* cancels the socks' lookups */
				res_free_all();
				__atomic_store_n(&g_bell.fd, -1, __ATOMIC_RELEASE);
				g_bell.rung = 0;
			}
			return 0;
		}
		return -1;
	}
	case LWS_CALLBACK_PROTOCOL_DESTROY:
		/* After every wsi of the context was closed: parked socks and
		 * pending deferred closes are all that can be left. */
		if (g_vh && lws_get_vhost(wsi) == g_vh) {
			sock_teardown();
			res_free_all();
			g_vh = NULL;
		}
		return 0;
	default:
		return 0;
	}
}

const struct lws_protocols pk_sock_protocols[] = {
    {.name = PROTOCOL_NAME, .callback = pk_sock_cb},
    {.name = NULL, .callback = NULL},
};

void pk_sock_init(struct lws_vhost *vh)
{
	if (g_vh == vh && g_bell.wsi)
		return;
	g_vh = vh;
	g_bell.rung = 0;
	g_bell.running = 0;
	g_bell.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (g_bell.fd == -1) {
		fprintf(stderr, "pk_sock_init: eventfd: %s\n", strerror(errno));
		abort();
	}
	g_bell.wsi = adopt_fd(g_bell.fd, &g_bell.kind);
	if (!g_bell.wsi) {
		/* The vhost lacks pk_sock_protocols[0]: a programming error. */
		fprintf(stderr,
		        "pk_sock_init: cannot adopt into the vhost (protocol \"%s\" "
		        "missing?)\n",
		        PROTOCOL_NAME);
		abort();
	}
}

/* ---- the public calls ------------------------------------------------------- */

struct pk_sock *pk_sock_connect(const char *host, int port, uint64_t timeout_ms,
                                const struct pk_sock_ops *ops, void *user, size_t send_cap)
{
	struct pk_sock *s = sock_new(ops, user, send_cap);
	char h[256], portstr[8];
	s->state = ST_CONNECTING;
	/* "[::1]" as well as "::1". */
	size_t hl = host ? strlen(host) : 0;
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']' && hl - 2 < sizeof(h)) {
		memcpy(h, host + 1, hl - 2);
		h[hl - 2] = '\0';
	} else {
		snprintf(h, sizeof(h), "%s", host ? host : "");
	}
	snprintf(s->peer, sizeof(s->peer), "%s:%d", h, port);
	if (timeout_ms)
		timer_set(s, pk_now_ms() + timeout_ms, "connect timeout");
	if (!h[0] || port <= 0 || port > 65535) {
		sock_end(s, 1, "invalid address");
		return s;
	}
	if (!pk_sock_is_ip(h)) {
		/* A name: resolved on a lookup thread, connected from
		 * connect_resolved() (the loop never waits for DNS). */
		s->port = port;
		s->lookup = pk_sock_resolve(h, connect_resolved, s);
		if (!s->lookup)
			sock_end(s, 1, "resolver busy");
		return s;
	}
	/* An IP literal: getaddrinfo with AI_NUMERICHOST never blocks. */
	struct addrinfo hints, *ai = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | AI_NUMERICHOST;
	snprintf(portstr, sizeof(portstr), "%d", port);
	int rc = getaddrinfo(h, portstr, &hints, &ai);
	if (rc != 0 || !ai) {
		if (ai)
			freeaddrinfo(ai);
		sock_end(s, 1, "invalid address");
		return s;
	}
	s->addrs = pk_xcalloc(1, sizeof(*s->addrs));
	memcpy(&s->addrs[0].ss, ai->ai_addr, ai->ai_addrlen);
	s->addrs[0].len = ai->ai_addrlen;
	s->n_addrs = 1;
	freeaddrinfo(ai);
	if (connect_next(s) < 0) {
		if (!s->made_socket) {
			sock_discard(s);
			return NULL;
		}
		sock_end(s, 1, errno_reason(s->last_err, 1));
	}
	return s;
}

struct pk_sock *pk_sock_adopt(int fd, const struct pk_sock_ops *ops, void *user, size_t send_cap)
{
	struct pk_sock *s = sock_new(ops, user, send_cap);
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss)); /* getpeername() fills it; the analyzer cannot see that */
	socklen_t sl = sizeof(ss);
	s->state = ST_OPEN;
	set_nodelay(fd);
	if (getpeername(fd, (void *)&ss, &sl) == 0)
		addr_text((const void *)&ss, s->peer, sizeof(s->peer));
	else
		snprintf(s->peer, sizeof(s->peer), "unknown");
	s->fd = fd;
	s->rx_on = 1;
	s->wsi = adopt_fd(fd, s);
	if (!s->wsi) {
		close(fd);
		s->fd = -1;
		sock_discard(s);
		return NULL;
	}
	return s;
}

void pk_sock_use_tls(struct pk_sock *s, SSL_CTX *ctx, const char *name, int verify_name)
{
	if (s->ending || s->state != ST_CONNECTING || s->tls_ctx)
		return;
	SSL_CTX_up_ref(ctx);
	s->tls_ctx = ctx;
	s->tls_name = pk_xstrdup(name ? name : "");
	s->tls_verify_name = verify_name;
}

void pk_sock_accept_tls(struct pk_sock *s, SSL_CTX *ctx)
{
	if (s->ending || s->state != ST_OPEN || s->tls_ctx || s->ssl)
		return;
	SSL_CTX_up_ref(ctx);
	s->tls_ctx = ctx;
	s->tls_name = pk_xstrdup("");
	s->tls_server = 1;
	/* The handshake starts when the client's hello is readable (sock_rx
	 * runs tls_step then), so a failure takes the loop's normal close
	 * path; nothing was read yet. */
	s->state = ST_TLS_HANDSHAKE;
	rx_update(s);
}

size_t pk_sock_write(struct pk_sock *s, const uint8_t *data, size_t len)
{
	if (s->ending || s->close_wanted || s->fin_wanted || !len)
		return 0;
	/* A socket is nearly always writable: with nothing queued, send at
	 * once, from the caller's bytes (no copy into the queue), rather than
	 * ask lws for POLLOUT (two epoll_ctl calls and a loop pass per write;
	 * strace counted them on every request of a tunnel). What the kernel
	 * does not take is queued, and any error is left to the writable
	 * callback, so on_drain and on_close still come from the loop. Not
	 * for TLS: SSL_write's retry rules want the same bytes again, which
	 * the callback path keeps. */
	size_t sent = 0;
	if (s->state == ST_OPEN && !s->sendq.len && !s->ssl && s->wsi) {
		ssize_t w = send(s->fd, data, len, MSG_NOSIGNAL);
		if (w > 0)
			sent = (size_t)w;
	}
	size_t n = sent + pk_bufq_append(&s->sendq, data + sent, len - sent);
	if (n < len || s->sendq.len * 2 >= s->sendq.cap)
		s->drain_armed = 1;
	if (!n || s->state != ST_OPEN)
		return n; /* while connecting, writability is awaited anyway */
	if (s->sendq.len || s->drain_armed)
		want_write(s);
	return n;
}

size_t pk_sock_write_space(const struct pk_sock *s)
{
	if (s->ending || s->close_wanted || s->fin_wanted)
		return 0;
	return pk_bufq_space(&s->sendq);
}

size_t pk_sock_queued(const struct pk_sock *s)
{
	return s->sendq.len;
}

void pk_sock_shutdown_write(struct pk_sock *s)
{
	if (s->ending || s->close_wanted || s->fin_wanted)
		return;
	s->fin_wanted = 1;
	if (s->state != ST_OPEN || !s->wsi)
		return; /* done once connected */
	if (s->sendq.len) {
		want_write(s);
		return;
	}
	/* Nothing queued: the FIN needs no send-buffer space, so do not wait
	 * for writability (the peer may not be reading). */
	if (send_fin(s) == -1) {
		sock_end(s, 1, errno_reason(errno, 0));
		return;
	}
	s->fin_sent = 1;
	if (s->eof_seen)
		sock_end(s, 0, "closed");
}

void pk_sock_pause(struct pk_sock *s, int paused)
{
	if (s->ending)
		return;
	s->paused = paused ? 1 : 0;
	if (!paused && s->parked) {
		s->parked = 0;
		s->rx_on = 1;
		s->wsi = adopt_fd(s->fd, s);
		if (!s->wsi) {
			sock_end(s, 1, "reset");
			return;
		}
	}
	rx_update(s);
	if (!paused && s->ssl && s->state == ST_OPEN && SSL_pending(s->ssl) > 0)
		defer(s, DEFER_READ);
}

void pk_sock_close(struct pk_sock *s, int abort)
{
	if (abort) {
		if (s->fd >= 0)
			set_linger0(s->fd);
		if (s->ending)
			return;
		pk_bufq_clear(&s->sendq);
		sock_end(s, 1, "aborted");
		return;
	}
	if (s->ending || s->close_wanted)
		return;
	s->close_wanted = 1;
	rx_update(s);
	if (!s->wsi) {
		/* Parked (our FIN is out) or between connect attempts. */
		sock_end(s, s->state == ST_OPEN ? 0 : 1, "closed");
		return;
	}
	if (!s->sendq.len) {
		if (s->state != ST_OPEN) { /* connecting, or in the TLS handshake */
			sock_end(s, 1, "closed");
			return;
		}
		if (!s->fin_sent && send_fin(s) == 0)
			s->fin_sent = 1;
		sock_end(s, 0, "closed");
		return;
	}
	timer_set(s, pk_now_ms() + CLOSE_LINGER_MS, "close timeout");
	if (s->state == ST_OPEN)
		want_write(s);
}

void *pk_sock_user(const struct pk_sock *s)
{
	return s->user;
}

void pk_sock_set_user(struct pk_sock *s, void *user)
{
	s->user = user;
}

const char *pk_sock_peer(const struct pk_sock *s)
{
	return s->peer;
}

void pk_sock_peer_ip(const struct pk_sock *s, char *out, size_t cap)
{
	/* "ip:port" or "[v6]:port" (addr_text's forms): the part before the
	 * last colon, without brackets. */
	const char *peer = s->peer;
	const char *colon = strrchr(peer, ':');
	size_t n = colon ? (size_t)(colon - peer) : strlen(peer);
	if (n >= 2 && peer[0] == '[') {
		peer++;
		n -= 2;
	}
	snprintf(out, cap, "%.*s", (int)n, peer);
}

void pk_sock_tick(uint64_t now_ms)
{
	res_dispatch();
	lws_start_foreach_dll_safe(struct lws_dll2 *, d, d1, g_timers.head)
	{
		struct pk_sock *s = lws_container_of(d, struct pk_sock, timer_link);
		if (now_ms >= s->deadline_ms) {
			if (s->state == ST_OPEN && s->fd >= 0)
				set_linger0(s->fd); /* a close that did not drain */
			pk_bufq_clear(&s->sendq);
			sock_end(s, 1, s->deadline_why);
		}
	}
	lws_end_foreach_dll_safe(d, d1);

	lws_start_foreach_dll(struct lws_dll2 *, d, g_sniffs.head)
	{
		struct sniff *sn = lws_container_of(d, struct sniff, link);
		if (now_ms >= sn->deadline_ms)
			sniff_kill(sn);
	}
	lws_end_foreach_dll(d);

	lws_start_foreach_dll(struct lws_dll2 *, d, g_listeners.head)
	{
		struct pk_sock_listener *l = lws_container_of(d, struct pk_sock_listener, link);
		if (l->resume_ms && now_ms >= l->resume_ms) {
			l->resume_ms = 0;
			if (l->wsi)
				lws_rx_flow_control(l->wsi, 1);
		}
	}
	lws_end_foreach_dll(d);
}

/* ---- listening -------------------------------------------------------------- */

struct pk_sock_listener *pk_sock_listen(const char *addr, void (*on_accept)(void *user, int fd),
                                        void *user, char *err, size_t errlen)
{
	int port;
	int fd = pk_sock_listen_fd(addr, &port, err, errlen);
	if (fd == -1)
		return NULL;
	return pk_sock_listen_adopt(fd, on_accept, user, err, errlen);
}

struct pk_sock_listener *pk_sock_listen_adopt(int fd, void (*on_accept)(void *user, int fd),
                                              void *user, char *err, size_t errlen)
{
	/* Owner: the caller; freed by pk_sock_listener_close(). */
	struct pk_sock_listener *l = pk_xcalloc(1, sizeof(*l));
	l->kind = KIND_LISTENER;
	l->fd = fd;
	l->port = pk_sock_listen_port_of(fd);
	l->on_accept = on_accept;
	l->user = user;
	l->wsi = adopt_fd(fd, l);
	if (!l->wsi) {
		snprintf(err, errlen, "listen on port %d: cannot add the socket to the event loop",
		         l->port);
		close(fd);
		free(l);
		return NULL;
	}
	lws_dll2_add_tail(&l->link, &g_listeners);
	return l;
}

void pk_sock_listener_close(struct pk_sock_listener *l)
{
	if (!l)
		return;
	lws_dll2_remove(&l->link);
	/* The socket stops listening now, also where another process holds
	 * it (a --workers supervisor keeps every worker's sockets): closing
	 * our fd alone would leave it in its SO_REUSEPORT group, taking 1/N
	 * of the new connections into a queue nobody accepts. */
	shutdown(l->fd, SHUT_RD);
	/* Its connections still waiting for a first byte go with it. */
	lws_start_foreach_dll(struct lws_dll2 *, d, g_sniffs.head)
	{
		struct sniff *sn = lws_container_of(d, struct sniff, link);
		if (sn->l == l) {
			sn->l = NULL;
			sniff_kill(sn);
		}
	}
	lws_end_foreach_dll(d);
	if (l->wsi) {
		/* The wsi outlives l until lws closes it (and the fd with it) on
		 * the next pass; with no opaque pointer it is only closed. */
		lws_set_opaque_user_data(l->wsi, NULL);
		if (l->in_accept) {
			l->closed = 1; /* listener_rx() frees it */
			return;
		}
		lws_set_timeout(l->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
	}
	l->kind = 0;
	free(l);
}

int pk_sock_listener_port(const struct pk_sock_listener *l)
{
	return l->port;
}

void pk_sock_listener_refuse_plain_http(struct pk_sock_listener *l, uint64_t timeout_ms)
{
	l->sniff_ms = timeout_ms ? timeout_ms : 1;
}
