/*
 * RFC 6455 frame reader/writer and handshake helpers. See ws.h for the role
 * of this module; this file only adds how the reader is kept.
 *
 * The reader is a three-state machine over arbitrarily split input:
 *   HDR:     collecting a frame header into r->hdr (2 bytes first, then the
 *            extended length and masking key the first two announced);
 *   DATA:    handing out a data frame's payload in place, unmasked;
 *   CONTROL: copying a control frame's payload (at most 125 bytes) into
 *            r->control, since it may span feeds and must be seen whole.
 * Errors are sticky: once a feed returned ERROR, every later feed returns
 * ERROR again without consuming anything, so a caller cannot resume parsing
 * in the middle of a stream it no longer understands.
 *
 * Accepted and rejected, beyond what ws.h lists:
 *  - non-minimal length encodings (e.g. 5 in a 16-bit length) are accepted,
 *    as Go's gorilla/websocket, nhooyr and most servers do; RFC 6455 §5.2
 *    says "minimal number of bytes MUST be used" but rejecting it buys
 *    nothing for a byte stream. A control frame must still use the 7-bit
 *    form, since its 7-bit length field must be <= 125;
 *  - close reasons are not checked for UTF-8: the reason is only logged;
 *  - no extensions are negotiated, so any RSV bit is an error.
 */
#include "ws.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

enum {
	ST_HDR = 0,
	ST_DATA,
	ST_CONTROL,
	ST_ERROR,
};

#define CLOSE_PROTOCOL 1002

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

void pk_ws_reader_init(struct pk_ws_reader *r, int expect_masked)
{
	memset(r, 0, sizeof(*r));
	r->expect_masked = expect_masked ? 1 : 0;
	r->state = ST_HDR;
	r->hdr_need = 2;
	r->data_opcode = PK_WS_BINARY;
}

static enum pk_ws_event fail(struct pk_ws_reader *r, const char *why)
{
	r->state = ST_ERROR;
	r->err = why;
	r->err_code = CLOSE_PROTOCOL;
	return PK_WS_ERROR;
}

static int is_control(int opcode)
{
	return (opcode & 0x8) != 0;
}

/* Codes a peer may send (RFC 6455 §7.4.1, §7.4.2): 1004-1006 and 1015 are
 * reserved for local use and must never appear on the wire; 1012-2999 are
 * unassigned to us (we follow the RFC's table, not later IANA additions);
 * 3000-4999 belong to libraries and applications. */
static int close_code_valid(unsigned code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
	       (code >= 3000 && code <= 4999);
}

/* The first two header bytes arrived: check everything they say, so that a
 * bad frame is refused before we wait for its extended length, and work out
 * how long the whole header is. */
static enum pk_ws_event header_start(struct pk_ws_reader *r)
{
	uint8_t b0 = r->hdr[0], b1 = r->hdr[1];
	int opcode = b0 & 0x0f;
	unsigned len7 = b1 & 0x7f;

	if (b0 & 0x70)
		return fail(r, "RSV bit set without a negotiated extension");
	switch (opcode) {
	case PK_WS_CONT:
	case PK_WS_TEXT:
	case PK_WS_BINARY:
	case PK_WS_CLOSE:
	case PK_WS_PING:
	case PK_WS_PONG:
		break;
	default:
		return fail(r, "reserved opcode");
	}
	r->fin = (b0 & 0x80) != 0;
	r->opcode = opcode;
	r->masked = (b1 & 0x80) != 0;
	if (r->expect_masked && !r->masked)
		return fail(r, "unmasked frame from a client");
	if (!r->expect_masked && r->masked)
		return fail(r, "masked frame from a server");
	if (is_control(opcode)) {
		if (!r->fin)
			return fail(r, "fragmented control frame");
		if (len7 > PK_WS_MAX_CONTROL)
			return fail(r, "control frame longer than 125 bytes");
	} else if (opcode == PK_WS_CONT) {
		if (!r->in_fragmented)
			return fail(r, "continuation frame without a message in progress");
	} else if (r->in_fragmented) {
		return fail(r, "new data frame inside a fragmented message");
	}
	r->hdr_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (r->masked ? 4 : 0);
	return PK_WS_NEED_MORE;
}

/* The whole header arrived: decode the length and key, and set up the
 * payload state. Message-level state changes here, not at the end of the
 * payload: frames never interleave inside a payload, so nothing can observe
 * the difference, and a zero-length frame needs no special path. */
static enum pk_ws_event header_done(struct pk_ws_reader *r)
{
	unsigned len7 = r->hdr[1] & 0x7f;
	size_t pos = 2;
	uint64_t len = len7;

	if (len7 == 126) {
		len = (uint64_t)r->hdr[2] << 8 | r->hdr[3];
		pos = 4;
	} else if (len7 == 127) {
		len = 0;
		for (size_t i = 0; i < 8; i++)
			len = len << 8 | r->hdr[2 + i];
		pos = 10;
		if (len >> 63)
			return fail(r, "64-bit payload length with the top bit set");
	}
	if (r->masked)
		memcpy(r->mask, r->hdr + pos, 4);
	r->remaining = len;
	r->mask_off = 0;
	r->hdr_len = 0;
	r->hdr_need = 2;

	if (is_control(r->opcode)) {
		r->control_opcode = r->opcode;
		r->control_len = 0;
		r->state = ST_CONTROL;
	} else {
		if (r->opcode != PK_WS_CONT)
			r->data_opcode = r->opcode;
		r->in_fragmented = !r->fin;
		r->state = ST_DATA;
	}
	return PK_WS_NEED_MORE;
}

/* The control frame's payload is complete in r->control. */
static enum pk_ws_event control_done(struct pk_ws_reader *r)
{
	r->state = ST_HDR;
	if (r->control_opcode == PK_WS_CLOSE) {
		if (r->control_len == 1)
			return fail(r, "close frame with a 1-byte payload");
		if (r->control_len >= 2) {
			unsigned code = (unsigned)r->control[0] << 8 | r->control[1];
			if (!close_code_valid(code))
				return fail(r, "invalid close code");
		}
	}
	return PK_WS_CONTROL;
}

enum pk_ws_event pk_ws_reader_feed(struct pk_ws_reader *r, uint8_t *data, size_t len, size_t *used,
                                   uint8_t **payload, size_t *payload_len)
{
	size_t pos = 0;
	enum pk_ws_event ev;

	*payload = NULL;
	*payload_len = 0;
	if (r->state == ST_ERROR) {
		*used = 0;
		return PK_WS_ERROR;
	}
	for (;;) {
		switch (r->state) {
		case ST_HDR:
			/* hdr_need never exceeds PK_WS_MAX_HDR: 2 + 8 + 4. */
			while (r->hdr_len < r->hdr_need && pos < len)
				r->hdr[r->hdr_len++] = data[pos++];
			if (r->hdr_len < r->hdr_need)
				goto need_more;
			if (r->hdr_len == 2) {
				ev = header_start(r);
				if (ev != PK_WS_NEED_MORE)
					goto out;
				if (r->hdr_need > 2)
					continue;
			}
			ev = header_done(r);
			if (ev != PK_WS_NEED_MORE)
				goto out;
			/* A zero-length control frame is complete right here. */
			if (r->state == ST_CONTROL && r->remaining == 0) {
				ev = control_done(r);
				goto out;
			}
			break;
		case ST_DATA: {
			if (r->remaining == 0) {
				/* Zero-length data frame: nothing to report. */
				r->state = ST_HDR;
				break;
			}
			if (pos == len)
				goto need_more;
			size_t n = len - pos;
			if ((uint64_t)n > r->remaining)
				n = (size_t)r->remaining;
			if (r->masked)
				pk_ws_mask(data + pos, n, r->mask, r->mask_off);
			*payload = data + pos;
			*payload_len = n;
			pos += n;
			r->remaining -= n;
			r->mask_off += n;
			if (r->remaining == 0)
				r->state = ST_HDR;
			ev = PK_WS_DATA;
			goto out;
		}
		case ST_CONTROL: {
			/* remaining <= 125 - control_len here, so this stays in
			 * r->control. */
			size_t n = len - pos;
			if ((uint64_t)n > r->remaining)
				n = (size_t)r->remaining;
			if (n) {
				memcpy(r->control + r->control_len, data + pos, n);
				if (r->masked)
					pk_ws_mask(r->control + r->control_len, n, r->mask,
					           r->mask_off);
				r->control_len += n;
				r->remaining -= n;
				r->mask_off += n;
				pos += n;
			}
			if (r->remaining)
				goto need_more;
			ev = control_done(r);
			goto out;
		}
		default:
			/* ST_ERROR was handled above; anything else is a corrupt
			 * struct, which we refuse rather than guess about. */
			ev = fail(r, "reader in an invalid state");
			goto out;
		}
	}
need_more:
	ev = PK_WS_NEED_MORE;
out:
	*used = pos;
	return ev;
}

int pk_ws_reader_data_opcode(const struct pk_ws_reader *r)
{
	return r->data_opcode;
}

int pk_ws_reader_control(const struct pk_ws_reader *r, const uint8_t **payload, size_t *len)
{
	*payload = r->control;
	*len = r->control_len;
	return r->control_opcode;
}

const char *pk_ws_reader_error(const struct pk_ws_reader *r, uint16_t *close_code)
{
	if (close_code)
		*close_code = r->err_code;
	return r->err;
}

/* len is written as given: a caller passing 2^63 or more gets a header every
 * reader refuses, which is the caller's bug, not something to hide here. */
size_t pk_ws_frame_header(uint8_t *out, int opcode, int fin, uint64_t len, const uint8_t *mask)
{
	size_t n = 2;
	uint8_t mbit = mask ? 0x80 : 0;

	out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
	if (len <= 125) {
		out[1] = (uint8_t)(mbit | len);
	} else if (len <= 0xffff) {
		out[1] = mbit | 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		n = 4;
	} else {
		out[1] = mbit | 127;
		for (size_t i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
		n = 10;
	}
	if (mask) {
		memcpy(out + n, mask, 4);
		n += 4;
	}
	return n;
}

void pk_ws_mask_key(uint8_t mask[4])
{
	static uint32_t x; /* xorshift32 */
	/* 0 is xorshift's one fixed point, never a seed. */
	if (!x && (getrandom(&x, sizeof(x), GRND_NONBLOCK) != (ssize_t)sizeof(x) || !x))
		x = 0x9e3779b9u;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	memcpy(mask, &x, 4);
}

void pk_ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t off)
{
	/* The key rotated so that k[0] applies to data[0]; repeated twice so a
	 * 64-bit word of it lines up with any 8 consecutive bytes. memcpy keeps
	 * the word access alignment- and aliasing-safe; compilers turn it into
	 * plain loads and stores. Byte order does not matter: key and data are
	 * both loaded the same way. */
	uint8_t k[8];
	for (size_t i = 0; i < 8; i++)
		k[i] = mask[(off + i) & 3];
	uint64_t kw;
	memcpy(&kw, k, 8);

	size_t i = 0;
	for (; len - i >= 8; i += 8) {
		uint64_t w;
		memcpy(&w, data + i, 8);
		w ^= kw;
		memcpy(data + i, &w, 8);
	}
	for (; i < len; i++)
		data[i] ^= k[i & 3];
}

size_t pk_ws_close_payload(uint8_t *out, uint16_t code, const char *reason)
{
	size_t rlen = reason ? strlen(reason) : 0;
	const size_t max = PK_WS_MAX_CONTROL - 2;

	out[0] = (uint8_t)(code >> 8);
	out[1] = (uint8_t)code;
	if (rlen > max) {
		rlen = max;
		/* Cut before a UTF-8 continuation byte, so that a peer which
		 * validates the reason (RFC 6455 §5.5.1) does not fail on our
		 * truncation. */
		while (rlen > 0 && ((unsigned char)reason[rlen] & 0xc0) == 0x80)
			rlen--;
	}
	if (rlen)
		memcpy(out + 2, reason, rlen);
	return 2 + rlen;
}

static int is_b64(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

int pk_ws_accept_key(const char *key, char out[29])
{
	/* 16 bytes encode to 22 base64 characters and "==". Non-zero bits in
	 * the last character's unused low nibble are tolerated, as by lenient
	 * decoders: the key still decodes to 16 bytes and is only hashed. */
	if (!key || strnlen(key, 25) != 24 || key[22] != '=' || key[23] != '=')
		return -1;
	for (size_t i = 0; i < 22; i++)
		if (!is_b64(key[i]))
			return -1;

	uint8_t in[24 + sizeof(WS_GUID) - 1];
	memcpy(in, key, 24);
	memcpy(in + 24, WS_GUID, sizeof(WS_GUID) - 1);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (EVP_Digest(in, sizeof(in), md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
		return -1;
	/* EVP_EncodeBlock writes 28 characters and a NUL for 20 bytes. */
	if (EVP_EncodeBlock((unsigned char *)out, md, 20) != 28)
		return -1;
	return 0;
}

void pk_ws_client_key(char out[25])
{
	unsigned char nonce[16];
	/* The key only has to be unpredictable enough to stop caching
	 * intermediaries from replaying a handshake, but there is no sane
	 * fallback if the CSPRNG itself fails: stop rather than send a weak
	 * key. */
	if (RAND_bytes(nonce, sizeof(nonce)) != 1)
		abort();
	EVP_EncodeBlock((unsigned char *)out, nonce, sizeof(nonce));
}
