/*
 * WebSocket (RFC 6455) frames and handshake helpers: our own codec, used
 * wherever we speak WebSocket (lws's roles parse and unmask a byte at a
 * time): the tunnels of the upstream port and the agent (core/wsconn.c),
 * the proxy port's `GET /_piko/v1/tcp/<endpoint>` route and `piko
 * forward` (dataplane/proxy_tcp.c, core/tcpws.c), and the node links.
 * Transport-free like yamux.c: bytes in, events out; unit-tested and
 * fuzzed.
 *
 * A reader reports data frames' payload, answers nothing itself, and
 * leaves what a message means to its user: pings are answered with pongs
 * and a close frame ends the connection there.
 */
#ifndef PK_WS_H
#define PK_WS_H

#include <stddef.h>
#include <stdint.h>

enum pk_ws_opcode {
	PK_WS_CONT = 0x0,
	PK_WS_TEXT = 0x1,
	PK_WS_BINARY = 0x2,
	PK_WS_CLOSE = 0x8,
	PK_WS_PING = 0x9,
	PK_WS_PONG = 0xA,
};

/* Largest frame header: 2 + 8 (64-bit length) + 4 (mask). */
#define PK_WS_MAX_HDR 14
/* Control frames carry at most 125 payload bytes (RFC 6455 §5.5). */
#define PK_WS_MAX_CONTROL 125

enum pk_ws_event {
	PK_WS_NEED_MORE = 0, /* all input consumed, nothing to report */
	PK_WS_DATA,          /* payload and payload_len: unmasked bytes of a data frame */
	PK_WS_CONTROL,       /* a complete control frame: pk_ws_reader_control() */
	PK_WS_ERROR,         /* protocol violation: pk_ws_reader_error() */
};

struct pk_ws_reader {
	int expect_masked; /* server side: client frames must be masked */
	int state;
	uint8_t hdr[PK_WS_MAX_HDR];
	size_t hdr_len, hdr_need;
	int fin, opcode, masked;
	uint8_t mask[4];
	uint64_t remaining; /* payload bytes left in the current frame */
	uint64_t mask_off;
	int in_fragmented; /* a fragmented data message is in progress */
	int data_opcode;   /* opcode of the message in progress */
	uint8_t control[PK_WS_MAX_CONTROL];
	size_t control_len;
	int control_opcode;
	const char *err;
	uint16_t err_code; /* close code to send back (1002 protocol, 1009 too big...) */
};

/* expect_masked: 1 on the server side (RFC 6455: clients mask, servers do
 * not), 0 on the client side. */
void pk_ws_reader_init(struct pk_ws_reader *r, int expect_masked);

/* Feed received bytes. data is modified in place (unmasked). Returns the
 * first event reached; *used is the input consumed for it; call again with
 * the rest:
 *  - DATA: payload bytes of a binary/text/continuation frame, already
 *    unmasked, at *payload (inside data) for *payload_len bytes;
 *    pk_ws_reader_data_opcode() says whether the message is text or binary.
 *  - CONTROL: a whole ping/pong/close frame was read.
 *  - ERROR: stop; send a close with pk_ws_reader_error()'s code. */
enum pk_ws_event pk_ws_reader_feed(struct pk_ws_reader *r, uint8_t *data, size_t len, size_t *used,
                                   uint8_t **payload, size_t *payload_len);

/* The opcode of the data message being read (PK_WS_TEXT or PK_WS_BINARY). */
int pk_ws_reader_data_opcode(const struct pk_ws_reader *r);

/* The last control frame: opcode and payload (valid until the next feed). */
int pk_ws_reader_control(const struct pk_ws_reader *r, const uint8_t **payload, size_t *len);

/* Why the last ERROR happened, and the close code to answer with. */
const char *pk_ws_reader_error(const struct pk_ws_reader *r, uint16_t *close_code);

/* Write a frame header for a payload of len bytes into out (at most
 * PK_WS_MAX_HDR bytes); mask is NULL for unmasked (server) frames, else the
 * 4-byte masking key (client frames; the caller masks the payload with
 * pk_ws_mask()). Returns the header length. */
size_t pk_ws_frame_header(uint8_t *out, int opcode, int fin, uint64_t len, const uint8_t *mask);

/* A masking key for a frame we send as a client. Not from a CSPRNG:
 * masking exists for browsers' sake (RFC 6455 §10.3, against cache
 * poisoning by script-chosen bytes); our clients only need a valid frame,
 * and a key per frame from OpenSSL's RAND was measurable in bulk sends.
 * Seeded once from getrandom(). One loop thread per process uses it. */
void pk_ws_mask_key(uint8_t mask[4]);

/* XOR data with the masking key, starting at key offset off (mod 4). */
void pk_ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t off);

/* Build a close frame payload: 2-byte code (big-endian) + reason (truncated
 * to fit 125 bytes). Returns its length. */
size_t pk_ws_close_payload(uint8_t *out, uint16_t code, const char *reason);

/* Sec-WebSocket-Accept for a client's Sec-WebSocket-Key: base64(SHA-1(key +
 * "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")). out gets 28 chars + NUL. Returns
 * 0, or -1 when key is not 24 base64 characters decoding to 16 bytes. */
int pk_ws_accept_key(const char *key, char out[29]);

/* A random Sec-WebSocket-Key (24 chars + NUL), for clients. */
void pk_ws_client_key(char out[25]);

#endif
