/*
 * pk_sock: a plain TCP connection driven by the lws event loop but read and
 * written by us, so that half-close works.
 *
 * lws 4.1's raw-socket role closes a connection on its first zero-length
 * read (roles/raw-skt: "we need to go to fail here"), so a peer that shuts
 * down its writing side could never receive the rest of our bytes. Here the
 * file descriptor is adopted into lws as a raw *file* descriptor
 * (LWS_ADOPT_RAW_FILE_DESC): lws only reports readiness (RAW_RX_FILE,
 * RAW_WRITEABLE_FILE) and we do the nonblocking read(), write() and
 * shutdown() ourselves. Used where bytes are piped raw and a TCP FIN must
 * travel end to end: the agent's TCP listeners and `piko forward`.
 *
 * Backpressure: writes go to a capped queue (pk_sock_write accepts what
 * fits); on_drain fires when it falls below half; pk_sock_pause() stops
 * reading (lws rx flow control), so the other end of the pipe can hold off
 * while its own queue is full.
 *
 * Lifetime: on_close fires exactly once, from the event loop, never from
 * inside a pk_sock_*() call; the pk_sock is freed right after it returns.
 * The owner must drop its pointer then.
 */
#ifndef PK_SOCK_H
#define PK_SOCK_H

#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>
#include <openssl/ssl.h>

struct pk_sock;

struct pk_sock_ops {
	/* An outgoing connection is established (not called for accepted ones). */
	void (*on_connected)(struct pk_sock *s);
	/* Bytes were read. data is the socket's own read buffer, the callee's
	 * to modify in place (e.g. to unmask WebSocket frames) until it
	 * returns. */
	void (*on_data)(struct pk_sock *s, const uint8_t *data, size_t len);
	/* The peer shut down its writing side (read returned 0). We may still
	 * write; the connection closes once our side is shut down too. */
	void (*on_eof)(struct pk_sock *s);
	/* The send queue fell below half its cap. Owed once the queue reached
	 * half its cap or a pk_sock_write() came back short; fires once per
	 * such episode (never after pk_sock_shutdown_write or close). */
	void (*on_drain)(struct pk_sock *s);
	/* The connection is gone: why is a short reason ("closed", "reset",
	 * "connect timeout", "connection refused", "aborted" after our own
	 * abort, "close timeout", "shutdown" when the lws context went away,
	 * ...). reset is 1 when it did not end with both sides closing cleanly
	 * (a graceful pk_sock_close() counts as clean). */
	void (*on_close)(struct pk_sock *s, int reset, const char *why);
};

/* Call once per lws context, before any other pk_sock function: remembers
 * the vhost used for adoption and adopts one eventfd into it, through which
 * deferred work (callbacks that must not run inside a pk_sock_*() call) is
 * run. The vhost's protocol list must contain pk_sock_protocols[0] (see
 * below; aborts otherwise). One lws context at a time. */
void pk_sock_init(struct lws_vhost *vh);

/* The lws protocol that carries pk_sock events; add it to the protocol list
 * of the vhost given to pk_sock_init(). Terminated list of one entry. */
extern const struct lws_protocols pk_sock_protocols[];

/* Connect to host:port: a name or an IP, "[::1]" accepted. A name is resolved
 * off the loop (pk_sock_resolve), an IP literal is not looked up at all. Each
 * resolved address is tried in turn until one connects. on_connected or
 * on_close follows ("no such host", "resolver busy", ...); the attempt,
 * lookup included, is abandoned with on_close "connect timeout" after
 * timeout_ms (0 = no timeout; enforced by pk_sock_tick). Bytes written
 * meanwhile are sent once connected. Returns NULL only if the socket for an
 * IP literal could not even be created (on_close is then not called). Owner:
 * the pk_sock itself (freed after on_close). */
struct pk_sock *pk_sock_connect(const char *host, int port, uint64_t timeout_ms,
                                const struct pk_sock_ops *ops, void *user, size_t send_cap);

/* DNS off the event loop. Lookups run on up to 4 threads (getaddrinfo, so
 * /etc/hosts and resolv.conf are honoured as for any program; see
 * core/resolve.h), started on demand and picked idle first, so a name whose
 * DNS is slow holds one thread while other names are answered by the others.
 * cb(user, res, err) runs later on the loop thread (from the doorbell or
 * pk_sock_tick), with res (addresses as numeric strings) or err set, as for
 * pk_resolver_query. The returned handle is the caller's to cancel until cb
 * starts, and is invalid from then on. Returns NULL when every thread has
 * PK_RESOLVE_MAX_QUERIES outstanding or none can be started (cb will not be
 * called). Needs pk_sock_init(); the threads stop with the lws context. */
struct pk_resolve_result;
struct pk_sock_lookup;
struct pk_sock_lookup *pk_sock_resolve(const char *host,
                                       void (*cb)(void *user, const struct pk_resolve_result *res,
                                                  const char *err),
                                       void *user);
/* Forget a lookup: its cb will not be called. NULL is ignored. */
void pk_sock_resolve_cancel(struct pk_sock_lookup *lk);
/* 1 when host is an IPv4 or IPv6 literal (no brackets; "%scope" allowed). */
int pk_sock_is_ip(const char *host);

/* Speak TLS on a connection from pk_sock_connect (call right after it, before
 * the loop runs): once TCP is up, a TLS client handshake with ctx runs first
 * (under the same connect timeout), and on_connected comes after it. name is
 * the server's name for SNI and, when verify_name, for checking the
 * certificate (an IP literal is checked as an IP). Reads and writes are then
 * TLS records, pk_sock_shutdown_write() sends close_notify before the FIN,
 * and a failed handshake ends with on_close "tls: <reason>" (e.g. "tls:
 * certificate verify failed: unable to get local issuer certificate"). The
 * sock takes its own reference to ctx. */
void pk_sock_use_tls(struct pk_sock *s, SSL_CTX *ctx, const char *name, int verify_name);

/* Answer TLS on a socket from pk_sock_adopt (call right after it): the
 * server handshake with ctx runs first, then on_connected fires (for
 * accepted sockets only in this case) and bytes are TLS records. A failed
 * handshake ends with on_close "tls: <reason>". The sock takes its own
 * reference to ctx. */
void pk_sock_accept_tls(struct pk_sock *s, SSL_CTX *ctx);

/* Wrap an already connected socket (e.g. from pk_sock_listen's accept); the
 * pk_sock owns fd from here. Returns NULL, with fd closed, only when lws
 * cannot take another descriptor. */
struct pk_sock *pk_sock_adopt(int fd, const struct pk_sock_ops *ops, void *user, size_t send_cap);

/* Queue up to len bytes; returns the count accepted (less once the send
 * queue is full, 0 after pk_sock_shutdown_write or close). */
size_t pk_sock_write(struct pk_sock *s, const uint8_t *data, size_t len);
size_t pk_sock_write_space(const struct pk_sock *s);
/* Bytes queued and not yet written to the kernel. */
size_t pk_sock_queued(const struct pk_sock *s);

/* Send FIN once the queue is written (shutdown(SHUT_WR)). Once the peer's
 * EOF was seen too, the connection closes (on_close "closed", reset 0). */
void pk_sock_shutdown_write(struct pk_sock *s);

/* Stop (1) or resume (0) reading. */
void pk_sock_pause(struct pk_sock *s, int paused);

/* Close: graceful (queued bytes are written first, then FIN and close; no
 * more on_data/on_eof/on_drain; after 30 s without draining it resets with
 * "close timeout") or, with abort, at once with a TCP RST (SO_LINGER 0).
 * Unread input makes the kernel send a RST on close even when graceful.
 * on_close follows from the event loop. */
void pk_sock_close(struct pk_sock *s, int abort);

void *pk_sock_user(const struct pk_sock *s);
void pk_sock_set_user(struct pk_sock *s, void *user);
/* "ip:port" of the peer, for logs. */
const char *pk_sock_peer(const struct pk_sock *s);
/* The peer's IP alone ("127.0.0.1", "::1"), as pk_sock_peer() has it. */
void pk_sock_peer_ip(const struct pk_sock *s, char *out, size_t cap);

/* A listening socket whose accepted connections are handed to on_accept
 * (which must pk_sock_adopt() or close the fd; it may close the listener).
 * addr: "host:port", ":port" (every interface, dual-stack when IPv6 is
 * there), "[v6]:port"; "localhost" means 127.0.0.1; port 0 picks one.
 * Returns NULL with err set when it cannot listen. Owner: the caller;
 * pk_sock_listener_close() stops and frees it. */
struct pk_sock_listener;
struct pk_sock_listener *pk_sock_listen(const char *addr, void (*on_accept)(void *user, int fd),
                                        void *user, char *err, size_t errlen);

/* The same for a socket already bound and listening (dataplane/workers.c
 * binds them before it forks): fd is the listener's from now on, closed
 * on failure too. */
struct pk_sock_listener *pk_sock_listen_adopt(int fd, void (*on_accept)(void *user, int fd),
                                              void *user, char *err, size_t errlen);
void pk_sock_listener_close(struct pk_sock_listener *l);
/* The port actually bound (useful with port 0). */
int pk_sock_listener_port(const struct pk_sock_listener *l);

/* For a TLS port: each accepted connection waits (at most timeout_ms) for
 * its first byte before on_accept sees it. A first byte that is an ASCII
 * capital letter is a plain HTTP request (no TLS record starts with one): it
 * gets Go's answer, "HTTP/1.0 400 Bad Request" with the body "Client sent an
 * HTTP request to an HTTPS server.\n", and is closed once the client closes
 * (3 s at most). Anything else goes to on_accept with every byte still
 * unread (only peeked), so the TLS handshake sees exactly what it did
 * before. A connection that closes or stays silent for timeout_ms is
 * closed. Closing the listener closes its waiting connections too. */
void pk_sock_listener_refuse_plain_http(struct pk_sock_listener *l, uint64_t timeout_ms);

/* Timers (connect and close timeouts, accept back-off after EMFILE); call
 * about every 250 ms with pk_now_ms(), the clock deadlines are set with. */
void pk_sock_tick(uint64_t now_ms);

#endif
