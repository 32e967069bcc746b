/*
 * libpiko-client: the C client library of Piko in C, mirroring Piko's Go
 * SDK (github.com/andydunstall/piko/client).
 *
 * An upstream registers an endpoint on a Piko server's upstream port (one
 * WebSocket carrying a yamux session) and is handed one connection per
 * request or TCP connection that the server routes to that endpoint.
 *
 * Model. Every object of the library is served by one background thread per
 * process (its own libwebsockets context), started by the first piko_listen(),
 * piko_listen_and_forward() or piko_dial(), and stopped when the last
 * listener or forwarder is freed (see piko_client_cleanup for programs that
 * only dial). A stream reaches the program as a connected socket file
 * descriptor (one end of an AF_UNIX socketpair): read(), write(), poll() and
 * close() it like any socket; shutdown(fd, SHUT_WR) half-closes (the peer
 * reads EOF and may still answer) and EOF on read means the peer
 * half-closed. The library relays bytes between the socketpair and the
 * stream with bounded buffers and backpressure both ways: a program that
 * stops reading slows its peer down, it never grows a buffer.
 *
 * Process-wide effects: the library sets SIGPIPE to SIG_IGN (a peer that
 * went away must be an error from write(), not a signal that kills the
 * program), and logs its errors as JSON lines on stderr ($PIKO_CLIENT_LOG=
 * debug, info or warn shows more). The thread resolves the server's name
 * with getaddrinfo(), which may block it (not the program) on a slow DNS.
 *
 * Thread safety: every function may be called from any thread; one object
 * may be used from several threads at once, except that the *_free()
 * functions must be the last call on their object. No function may be
 * called from a signal handler.
 *
 * Errors: functions that fail return NULL or a negative PIKO_E* code and,
 * when given a struct piko_error, fill it with the code and a message that
 * says what happened as Piko's clients say it ("connect: 401: invalid
 * token").
 *
 * Not yet in this version (see docs/client-library.md): the callback mode
 * on the program's own event loop.
 */
#ifndef PIKO_CLIENT_H
#define PIKO_CLIENT_H

#ifdef __cplusplus
extern "C" {
#endif

#define PIKO_CLIENT_VERSION_MAJOR 0
#define PIKO_CLIENT_VERSION_MINOR 1
#define PIKO_CLIENT_VERSION_PATCH 0
#define PIKO_CLIENT_VERSION "0.1.0"
/* One integer to compare: 0xMMmmpp. */
#define PIKO_CLIENT_VERSION_NUM                                                                    \
	((PIKO_CLIENT_VERSION_MAJOR << 16) | (PIKO_CLIENT_VERSION_MINOR << 8) |                    \
	 PIKO_CLIENT_VERSION_PATCH)

/* The library's version at run time ("0.1.0"). */
const char *piko_client_version(void);

/* Error codes (negative; 0 is success). */
enum piko_errcode {
	PIKO_OK = 0,
	PIKO_EINVAL = -1,    /* a bad argument or option (message says which) */
	PIKO_ETIMEDOUT = -2, /* the timeout passed (piko_accept, the first connect) */
	PIKO_ECLOSED = -3,   /* the object was closed (piko_listener_close...) */
	PIKO_EREFUSED = -4,  /* the server refused us for good: 4xx (bad token...) */
	PIKO_ESYSTEM = -5,   /* a system call failed (errno in the message) */
	PIKO_ECONNECT = -6,  /* piko_dial: no connection ("dial: 502: no available upstreams") */
};

/* A short text for a code ("timed out"). Never NULL. */
const char *piko_strerror(int code);

/* What failed, filled by functions given a non-NULL pointer to one. */
struct piko_error {
	int code;          /* enum piko_errcode */
	char message[256]; /* e.g. "connect: 401: invalid token" */
};

/* How to reach the server. Initialise with piko_options_init() and set what
 * differs; the strings are copied by the functions that take options. */
struct piko_options {
	/* The server's upstream port: http://, https://, ws:// or wss:// with
	 * an optional base path. Default "http://localhost:8001". */
	const char *url;
	/* Sent as "Authorization: Bearer <token>" when non-NULL. */
	const char *token;
	/* Sent as "x-piko-tenant-id" when non-NULL (Piko's experimental
	 * multi-tenancy). */
	const char *tenant_id;
	/* TLS (https/wss URLs): CAs to trust (PEM bundle; default: the
	 * system's), a client certificate and key for mTLS, and
	 * insecure_skip_verify to accept any server certificate. */
	const char *tls_ca_file;
	const char *tls_cert_file;
	const char *tls_key_file;
	int tls_insecure_skip_verify;
	/* Reconnect backoff after a transport failure, as the Go SDK:
	 * first wait min, doubling up to max, jittered by [1.0, 1.1).
	 * Defaults 100 and 15000 ms. */
	unsigned min_reconnect_backoff_ms;
	unsigned max_reconnect_backoff_ms;
	/* piko_dial: the server's proxy port, as url. Default
	 * "http://localhost:8000". token and the TLS settings apply too;
	 * tenant_id does not (Piko sends none there). */
	const char *proxy_url;
	/* How long piko_listen() keeps retrying the first connection before
	 * it fails with PIKO_ETIMEDOUT; 0 retries forever. Default 30000. */
	unsigned connect_timeout_ms;
	/* Receive window per stream, in bytes, as the Go SDK's
	 * Upstream.MaxWindowSize: how much one stream may have in flight from
	 * the server before it waits for us to read. 0 (the default) is the
	 * protocol's 262144, the least; a larger one can carry more per round
	 * trip, and may buffer as much per connection. */
	unsigned max_window_size;
};

/* Defined by the headers whose piko_options has max_window_size (0.1.0
 * grew it at its end; a program built against an older header must be
 * rebuilt before it sets it). */
#define PIKO_CLIENT_HAS_MAX_WINDOW_SIZE 1

/* Fill o with the defaults above (everything else NULL/0). */
void piko_options_init(struct piko_options *o);

/* ---- upstream listener (file-descriptor mode) ---------------------------- */

struct piko_listener;

/* Register endpoint on the server and start listening for its streams.
 * Blocks until the first connection is up (the endpoint then routes here),
 * a non-retryable refusal (PIKO_EREFUSED: 401 bad token, 404...), or
 * opts->connect_timeout_ms (PIKO_ETIMEDOUT; the message says the last
 * failure). Afterwards a dropped connection is re-established in the
 * background with backoff, as the Go SDK does; streams arriving meanwhile
 * have nowhere to come from, accept just waits. Returns the listener (owner:
 * the caller, piko_listener_free) or NULL with err filled. */
struct piko_listener *piko_listen(const struct piko_options *opts, const char *endpoint,
                                  struct piko_error *err);

/* The next stream, as a connected socket fd (owner: the caller, close() it;
 * SOCK_CLOEXEC, blocking mode: set O_NONBLOCK yourself for a poll loop).
 * Waits at most timeout_ms (-1: forever, 0: don't wait). Returns the fd, or
 * -1 with err filled: PIKO_ETIMEDOUT, or PIKO_ECLOSED once the listener
 * was closed or shut down. Up to 256 streams wait for accept; beyond that
 * the server's new streams are reset. */
int piko_accept(struct piko_listener *l, int timeout_ms, struct piko_error *err);

/* ---- on the program's own event loop ----
 *
 * A program built on an event loop (epoll, poll, libev, libuv, GLib...) does
 * not block in piko_accept(): it watches piko_listener_fd() as it would a
 * listening socket and, when that is readable, takes the streams that wait
 * with piko_listener_dispatch(), which calls back for each; the streams are
 * file descriptors it adds to the same loop. Nothing here blocks.
 */

/* A descriptor that is readable (POLLIN / EPOLLIN, level-triggered) exactly
 * while piko_accept() would not block: a stream waits, or the listener was
 * closed or failed (then dispatch reports why). Read-only for the program:
 * never read, write or close it. The same descriptor every call, until
 * piko_listener_free(). -1 with err filled (PIKO_ESYSTEM) if it cannot be
 * made. */
int piko_listener_fd(struct piko_listener *l, struct piko_error *err);

/* Called with each new stream's descriptor (the program's to close). */
typedef void (*piko_stream_cb)(void *arg, int fd);

/* Take every stream that waits, without blocking, calling cb(arg, fd) for
 * each. Returns how many (0: none waited), or -1 with err filled when the
 * listener is closed (PIKO_ECLOSED) or failed and none was taken. */
int piko_listener_dispatch(struct piko_listener *l, piko_stream_cb cb, void *arg,
                           struct piko_error *err);

/* Stop accepting (Go SDK Listener.Close): the server is told not to route
 * new streams here (a yamux Go Away), piko_accept() returns PIKO_ECLOSED
 * (also in threads blocked in it), streams not yet accepted are closed, and
 * streams already accepted keep working until they end. No reconnect after
 * this. Idempotent. */
void piko_listener_close(struct piko_listener *l);

/* Close the connection to the server (Go SDK Listener.Shutdown): as
 * piko_listener_close(), and every stream, accepted or not, is reset (its fd
 * reads ECONNRESET or EOF). Idempotent. */
void piko_listener_shutdown(struct piko_listener *l);

/* Shut down (if not done) and free the listener. The fds already accepted
 * stay the program's to close. */
void piko_listener_free(struct piko_listener *l);

/* The endpoint ID (Go SDK Listener.EndpointID). Valid until _free. */
const char *piko_listener_endpoint(const struct piko_listener *l);

/* 1 while the connection to the server is up, 0 while reconnecting or
 * after close/shutdown. */
int piko_listener_connected(struct piko_listener *l);

/* ---- listen and forward -------------------------------------------------- */

struct piko_forwarder;

/* Register endpoint and pipe every stream to a new TCP connection to addr
 * ("host:port", "[v6]:port"; a name is resolved off the loop), FIN and
 * resets carried both ways (Go SDK ListenAndForward). Connects as
 * piko_listen() does (blocks until up; same errors). Owner: the caller,
 * piko_forwarder_free. */
struct piko_forwarder *piko_listen_and_forward(const struct piko_options *opts,
                                               const char *endpoint, const char *addr,
                                               struct piko_error *err);

/* Stop taking new streams (a Go Away, as piko_listener_close); streams in
 * progress finish. piko_forwarder_wait() then returns once they have. */
void piko_forwarder_close(struct piko_forwarder *f);

/* Wait until the forwarder has been closed and its streams have ended, at
 * most timeout_ms (-1: forever). Returns 0 (a close counts as a clean exit,
 * as in the Go SDK) or PIKO_ETIMEDOUT. */
int piko_forwarder_wait(struct piko_forwarder *f, int timeout_ms);

/* Shut down (streams in progress are reset) and free. */
void piko_forwarder_free(struct piko_forwarder *f);

/* ---- dialer ----------------------------------------------------------------- */

/* Connect to endpoint through the server's proxy port (opts->proxy_url),
 * TCP over WebSocket as Piko's Dialer and `piko forward` do. Blocks until
 * the server upgraded the connection (the endpoint's upstream accepted the
 * stream) or failed: PIKO_ECONNECT ("dial: 502: no available upstreams",
 * "dial: dial server: connection refused"), PIKO_EREFUSED ("dial: 401:
 * invalid token"), PIKO_ETIMEDOUT after opts->connect_timeout_ms (0: no
 * limit). Returns a connected socket fd (owner: the caller; SOCK_CLOEXEC,
 * blocking; shutdown(SHUT_WR) half-closes), or -1 with err filled. The
 * connection lives until either side closes it, whatever else the program
 * frees. */
int piko_dial(const struct piko_options *opts, const char *endpoint, struct piko_error *err);

/* ---- process ----------------------------------------------------------------- */

/* Stop the library's thread and free what it holds, for programs that want
 * a clean exit (leak checkers): call it after freeing every listener and
 * forwarder and closing every dialled fd; it waits until the dialled
 * connections have wound down (their close handshakes, at most 30 s for a
 * peer that does not answer). Without it, a program that only dialled
 * leaves the thread idle until exit, which is harmless. The library starts
 * again on the next call. */
void piko_client_cleanup(void);

#ifdef __cplusplus
}
#endif

#endif
