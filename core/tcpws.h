/*
 * TCP over WebSocket (protocol reference §1.4): a connected local socket
 * relayed to GET <base path>/_piko/v1/tcp/<endpoint> on a Piko proxy port,
 * binary messages carrying the raw bytes both ways once upgraded. `piko
 * forward` relays each connection it accepts; libpiko-client's piko_dial()
 * relays one end of a socketpair whose other end the program holds.
 *
 * A refused upgrade is reported as Piko reports it, `<status>: <error>`
 * from the server's JSON body ("502: no available upstreams"); a local EOF
 * becomes our close frame while the server's frames are still read (a
 * half-close), the server's close becomes the local EOF.
 */
#ifndef PK_TCPWS_H
#define PK_TCPWS_H

#include <stdint.h>

#include <openssl/ssl.h>

struct pk_tcpws;

/* Where to dial; the owner's, and must outlive every connection using it. */
struct pk_tcpws_target {
	const char *host; /* the proxy port's host (name or IP) */
	int port;
	const char *base_path; /* the URL's path, "" when none (appended to, as Piko) */
	const char *endpoint;
	const char *token;     /* "Authorization: Bearer <token>" when set */
	SSL_CTX *tls;          /* https: a client context, else NULL */
	int verify_name;       /* check the certificate's name (not insecure_skip_verify) */
	uint64_t timeout_ms;   /* for the TCP and TLS connect, 0 none */
	struct pk_tcpws *live; /* the connections alive on it (zero it at first) */
};

/* What the owner hears (any may be NULL). */
struct pk_tcpws_hooks {
	/* Upgraded: bytes flow from now on. */
	void (*on_open)(void *user);
	/* Failed before the upgrade: why is "<status>: <error>", "dial
	 * server: <reason>" or "bad handshake". The local socket is closed
	 * (reset). May run inside pk_tcpws_start(). */
	void (*on_fail)(void *user, const char *why);
	/* Both sockets are gone; nothing of user is touched after this. */
	void (*on_free)(void *user);
};

/* Relay fd (connected, nonblocking; owned by the relay from here) to the
 * endpoint. 0, or -1 when lws cannot take fd (fd is closed, no hook runs). */
int pk_tcpws_start(int fd, struct pk_tcpws_target *t, const struct pk_tcpws_hooks *hooks,
                   void *user);

/* After the lws context is destroyed: free the connections whose sockets
 * lws tore down without running our callbacks (no hook runs). */
void pk_tcpws_reap(struct pk_tcpws_target *t);

#endif
