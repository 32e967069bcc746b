/*
 * What two nodes say to each other on a node link's control stream
 * (DESIGN §5): who they are, which endpoints they hold, and that they are
 * leaving. Each message is a 4-byte big-endian length and then a JSON
 * object with a "type":
 *
 *   hello      {"type":"hello","id","proxy_addr","admin_addr","cluster_addr","proof"}
 *              first message each way; proof (acceptor only, when a cluster
 *              key is set) shows the acceptor holds the key too
 *   endpoints  {"type":"endpoints","full":bool,"version":N,"base":M,
 *               "endpoints":{"<endpoint>":<upstreams>,...}}
 *              full: the sender's whole table at version N (a snapshot);
 *              else the endpoints whose count changed since version M
 *              (0: gone). A receiver whose version is not M asks again.
 *   resync     {"type":"resync"}: send me a snapshot
 *   leaving    {"type":"leaving"}: I am shutting down; route elsewhere
 *
 * Transport-free (bytes in, struct out), unit-tested and fuzzed
 * (tests/fuzz/fuzz_link_msg.c). Sizes are bounded: a message is at most
 * PK_LINK_MSG_MAX bytes, a table at most PK_LINK_MAX_ENDPOINTS entries.
 */
#ifndef PK_LINK_MSG_H
#define PK_LINK_MSG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

#define PK_LINK_MSG_MAX (16u * 1024u * 1024u)
#define PK_LINK_MAX_ENDPOINTS 100000
#define PK_LINK_MAX_ID 512 /* bytes of a node ID, an address or an endpoint ID */

enum pk_link_msg_type {
	PK_LINK_HELLO = 1,
	PK_LINK_ENDPOINTS,
	PK_LINK_RESYNC,
	PK_LINK_LEAVING,
};

struct pk_link_ep {
	char *endpoint;
	int64_t count;
};

struct pk_link_msg {
	enum pk_link_msg_type type;
	/* hello */
	char *id, *proxy_addr, *admin_addr, *cluster_addr, *proof;
	/* endpoints */
	int full;
	uint64_t version, base;
	struct pk_link_ep *eps;
	size_t n_eps;
};

/* Decode the message at the front of buf. Returns the bytes it took (> 0)
 * and fills msg (release with pk_link_msg_clear), 0 when more bytes are
 * needed, or -1 with err set when the bytes are not a valid message (the
 * link must then be closed: nothing after it can be trusted). */
ssize_t pk_link_msg_decode(const uint8_t *buf, size_t len, struct pk_link_msg *msg, char *err,
                           size_t errlen);
void pk_link_msg_clear(struct pk_link_msg *msg);

/* Encoders: append one framed message to out (whatever its cap). */
void pk_link_msg_hello(struct pk_bufq *out, const char *id, const char *proxy_addr,
                       const char *admin_addr, const char *cluster_addr, const char *proof);
void pk_link_msg_simple(struct pk_bufq *out, enum pk_link_msg_type type); /* resync, leaving */

/* An endpoints message is built entry by entry. */
struct pk_link_eps_writer;
struct pk_link_eps_writer *pk_link_eps_begin(int full, uint64_t version, uint64_t base);
void pk_link_eps_add(struct pk_link_eps_writer *w, const char *endpoint, int64_t count);
/* Frame it into out and free the writer. */
void pk_link_eps_end(struct pk_link_eps_writer *w, struct pk_bufq *out);

#endif
