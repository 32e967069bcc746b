/*
 * A node link (DESIGN §5): one connection between two members on the
 * cluster port, carrying a yamux session inside WebSocket binary frames, as
 * an agent's tunnel does. Both ends are ours, so the transport is
 * core/sock.c with our own WebSocket handshake and codec (core/ws.c) rather
 * than lws's WebSocket roles (lws 4.1 re-selects HTTP vhosts by Host, which
 * would steal a second WebSocket port's connections).
 *
 *   dialler   GET /piko/v1/cluster/link, Upgrade: websocket, with
 *             x-piko-node-id, x-piko-cluster-addr and, when the cluster has
 *             a key, Authorization: Bearer <proof>; then it is the yamux
 *             client and opens the control stream.
 *   acceptor  checks the proof, that the dialler is a member and not
 *             already linked, answers 101 (or a JSON error), is the yamux
 *             server.
 *
 * Each stream's first byte says what it carries: 'C' the control stream
 * (link_msg.h messages), 'P' one proxied exchange (proxy.c serves it as a
 * client connection marked forwarded).
 *
 * Failure: pings every second; a ping unanswered for 2 s, or a closed
 * connection, ends the link at once and its endpoints are withdrawn.
 */
#ifndef PK_LINK_H
#define PK_LINK_H

#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "buf.h"
#include "http1.h"
#include "tunnel.h"
#include "ws.h"
#include "yamux.h"

struct pk_cluster;
struct pk_member;
struct pk_sock;
struct pk_strmap;

#define PK_LINK_PATH "/piko/v1/cluster/link"
#define PK_LINK_KEEPALIVE_MS 1000
#define PK_LINK_PING_TIMEOUT_MS 2000
/* An accepted link must prove the key (its upgrade) within this. */
#define PK_LINK_HANDSHAKE_TIMEOUT_MS 10000

enum pk_link_state {
	PK_LINK_CONNECTING = 0, /* dialler: TCP/TLS connect in progress */
	PK_LINK_HANDSHAKE,      /* the WebSocket upgrade */
	PK_LINK_OPEN,           /* yamux up, hellos not yet exchanged */
	PK_LINK_ESTABLISHED,    /* the peer is a node of the cluster */
	PK_LINK_CLOSING,
};

struct pk_link {
	struct pk_cluster *cl;
	struct pk_sock *sock; /* NULL once closed */
	int dialer;
	struct pk_member *member; /* dialler: the member it was dialled for */
	enum pk_link_state state;
	char peer_ip[64];
	char addr[128]; /* dialler: the address dialled; acceptor: the peer's, once authenticated */
	struct pk_http1_reader hs;
	char ws_key[25];
	uint8_t *hs_buf; /* bytes of the handshake not yet consumed */
	struct pk_ws_reader wsr;
	struct pk_yamux_session *sess;
	struct pk_yamux_stream *ctrl;
	struct pk_bufq ctrl_out;
	uint8_t *ctrl_in;
	size_t ctrl_in_len, ctrl_in_cap;
	int hello_sent;
	int authenticated; /* acceptor: the upgrade's proof checked out (or no key) */
	int need_snapshot;
	/* The peer, once it said hello. */
	char *peer_id, *proxy_addr, *admin_addr, *cluster_addr;
	int leaving;
	struct pk_strmap *eps; /* endpoint -> upstreams on the peer */
	uint64_t eps_version;
	int have_table;
	uint64_t established_ms;
	int flush_due;
	int sock_closing; /* pk_sock_close() called */
	uint64_t created_ms;
	uint64_t closing_ms;
	lws_sorted_usec_list_t flush_sul;
	struct pk_stream_handler *ctrl_h; /* owned: the control stream's handler */
	struct pk_link *prev, *next;
};

/* Dial member (its address). The link joins cl->links; member->link is set.
 * Returns NULL when no socket could be created. */
struct pk_link *pk_link_dial(struct pk_cluster *cl, struct pk_member *member);
/* Take an accepted connection on the cluster port. */
void pk_link_accept(struct pk_cluster *cl, int fd);

/* Close (graceful: pending frames go first). The link is freed later, from
 * the socket's close; cluster state is updated then. */
void pk_link_close(struct pk_link *l, const char *why);

/* Process exit: end the session now (streams are told) and abort the
 * socket; the link is freed when the socket reports its close. */
void pk_link_abort(struct pk_link *l);

/* Open a stream for one proxied exchange ('P' already written). NULL when
 * the link cannot take one now. */
struct pk_yamux_stream *pk_link_open_stream(struct pk_link *l);

/* Control messages. */
void pk_link_send_delta(struct pk_link *l, const char *endpoint, int64_t count, uint64_t version);
void pk_link_send_leaving(struct pk_link *l);

/* Timers (yamux pings); flushes. */
void pk_link_tick(struct pk_link *l, uint64_t now_ms);
/* Streams open on the link. */
size_t pk_link_streams(const struct pk_link *l);

#endif
