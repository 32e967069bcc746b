/*
 * libFuzzer harness for core/ws.c.
 *
 * Input: byte 0 picks the chunking (low 4 bits n: chunks of up to
 * 1 << (n - 1) bytes, or up to 7 bytes for n = 0) and what else to run (bits
 * below); byte 1 seeds the generator that picks chunk sizes; the rest is raw
 * WebSocket bytes. So a seed corpus of valid frame streams, prefixed by two
 * bytes, is directly mutable.
 *
 * The raw bytes go to a server-side and a client-side reader, each fed once
 * whole and once in generated chunks; both runs must report the same data,
 * control frames and error position, whatever the split. Every call is
 * checked against the contract (used <= len, payload inside the fed buffer,
 * progress on every event). Then the same bytes are used as payload for
 * frames built with the writer, which must read back unchanged.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

enum {
	F_ROUND_TRIP = 0x10, /* also build frames from the input and read them back */
	F_MISC = 0x20,       /* also exercise mask/close/accept helpers */
};

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c))                                                                          \
			abort();                                                                   \
	} while (0)

static uint32_t next_rand(uint32_t *x)
{
	/* xorshift32: any non-zero state works. */
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

/* What a run saw, in a form independent of how the input was split. */
struct digest {
	uint64_t data_len;
	uint64_t data_hash;
	uint64_t ctl_hash;
	uint64_t op_hash; /* data opcode changes */
	unsigned controls;
	int error;
	uint16_t code;
	size_t consumed;
};

static void hash_bytes(uint64_t *h, const uint8_t *p, size_t n)
{
	/* FNV-1a: only needs to tell runs apart. */
	if (!*h)
		*h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		*h ^= p[i];
		*h *= 0x100000001b3ull;
	}
}

/* Feed buf[0..len) in chunks; chunk sizes come from rng unless max_chunk is
 * 0 (one feed). Each chunk is copied into its own allocation so that ASan
 * sees a read past the chunk even when more input follows. */
static void run(int side, const uint8_t *in, size_t len, unsigned max_chunk, uint32_t seed,
                struct digest *d)
{
	struct pk_ws_reader r;
	uint32_t rng = seed | 1;
	size_t pos = 0;
	int last_op = -1;

	memset(d, 0, sizeof(*d));
	pk_ws_reader_init(&r, side);
	while (pos < len && !d->error) {
		size_t n = len - pos;
		if (max_chunk) {
			size_t c = 1 + next_rand(&rng) % max_chunk;
			if (c < n)
				n = c;
		}
		uint8_t *chunk = malloc(n);
		CHECK(chunk);
		memcpy(chunk, in + pos, n);
		size_t off = 0;
		for (;;) {
			size_t used = (size_t)-1, plen = (size_t)-1;
			uint8_t *p = NULL;
			enum pk_ws_event ev =
			    pk_ws_reader_feed(&r, chunk + off, n - off, &used, &p, &plen);
			CHECK(used <= n - off);
			off += used;
			d->consumed += used;
			if (ev == PK_WS_NEED_MORE) {
				CHECK(off == n);
				CHECK(plen == 0);
				break;
			}
			/* Every event but ERROR consumes input: no livelock. */
			if (ev == PK_WS_DATA) {
				CHECK(plen > 0 && used >= plen);
				CHECK(p >= chunk && p + plen <= chunk + off);
				int op = pk_ws_reader_data_opcode(&r);
				CHECK(op == PK_WS_TEXT || op == PK_WS_BINARY);
				d->data_len += plen;
				hash_bytes(&d->data_hash, p, plen);
				/* How many DATA events a frame gives depends on
				 * the split; opcode changes do not. */
				if (op != last_op) {
					uint8_t o = (uint8_t)op;
					hash_bytes(&d->op_hash, &o, 1);
					last_op = op;
				}
			} else if (ev == PK_WS_CONTROL) {
				CHECK(used > 0);
				const uint8_t *cp;
				size_t clen;
				int op = pk_ws_reader_control(&r, &cp, &clen);
				CHECK(op == PK_WS_CLOSE || op == PK_WS_PING || op == PK_WS_PONG);
				CHECK(clen <= PK_WS_MAX_CONTROL);
				CHECK(!(op == PK_WS_CLOSE && clen == 1));
				uint8_t o = (uint8_t)op;
				hash_bytes(&d->ctl_hash, &o, 1);
				hash_bytes(&d->ctl_hash, cp, clen);
				d->controls++;
			} else {
				CHECK(ev == PK_WS_ERROR);
				CHECK(pk_ws_reader_error(&r, &d->code) != NULL);
				CHECK(d->code == 1002);
				d->error = 1;
				/* Sticky. */
				used = 1;
				CHECK(pk_ws_reader_feed(&r, chunk + off, n - off, &used, &p,
				                        &plen) == PK_WS_ERROR);
				CHECK(used == 0);
				break;
			}
		}
		free(chunk);
		pos += n;
	}
	CHECK(d->data_len <= len);
	if (!d->error)
		CHECK(d->consumed == len);
}

static void check_split_invariance(int side, const uint8_t *in, size_t len, unsigned max_chunk,
                                   uint32_t seed)
{
	struct digest whole, split;
	run(side, in, len, 0, 0, &whole);
	run(side, in, len, max_chunk, seed, &split);
	CHECK(whole.data_len == split.data_len);
	CHECK(whole.data_hash == split.data_hash);
	CHECK(whole.ctl_hash == split.ctl_hash);
	CHECK(whole.op_hash == split.op_hash);
	CHECK(whole.controls == split.controls);
	CHECK(whole.error == split.error);
	CHECK(whole.consumed == split.consumed);
}

/* Build a message from in[] with the writer: a fragmented binary message
 * with pings and pongs between fragments, then a close; read it back. */
static void round_trip(int side, const uint8_t *in, size_t len, uint32_t seed)
{
	static const uint16_t codes[] = {1000, 1001, 1002, 1003, 1007, 1011, 3000, 4999};
	uint32_t rng = seed | 1;
	size_t plen = len > 65536 + 17 ? 65536 + 17 : len;
	/* At most 64 fragments, each with a control frame after it. */
	size_t cap = plen + 64 * (2 * PK_WS_MAX_HDR + PK_WS_MAX_CONTROL) + 2 * PK_WS_MAX_HDR +
	             PK_WS_MAX_CONTROL;
	uint8_t *w = malloc(cap);
	CHECK(w);
	size_t n = 0, pos = 0, frames = 0;
	uint8_t key[4];
	uint64_t ctl_expect = 0;
	unsigned ctl_count = 0;

	do {
		size_t frag = plen - pos;
		if (frames < 63 && frag > 0) {
			size_t c = next_rand(&rng) % (frag + 1);
			frag = c;
		}
		int fin = pos + frag == plen;
		int opcode = frames == 0 ? PK_WS_BINARY : PK_WS_CONT;
		uint32_t kr = next_rand(&rng);
		memcpy(key, &kr, 4);
		const uint8_t *mk = side ? key : NULL;
		n += pk_ws_frame_header(w + n, opcode, fin, frag, mk);
		memcpy(w + n, in + pos, frag);
		if (mk)
			pk_ws_mask(w + n, frag, mk, 0);
		n += frag;
		pos += frag;
		frames++;
		if (!fin || frames == 1) {
			/* A control frame between fragments (or after the
			 * only one), carrying input bytes. */
			size_t clen = next_rand(&rng) % (PK_WS_MAX_CONTROL + 1);
			if (clen > len)
				clen = len;
			int cop = next_rand(&rng) & 1 ? PK_WS_PING : PK_WS_PONG;
			kr = next_rand(&rng);
			memcpy(key, &kr, 4);
			n += pk_ws_frame_header(w + n, cop, 1, clen, mk);
			memcpy(w + n, in, clen);
			uint8_t o = (uint8_t)cop;
			hash_bytes(&ctl_expect, &o, 1);
			hash_bytes(&ctl_expect, w + n, clen);
			if (mk)
				pk_ws_mask(w + n, clen, mk, 0);
			n += clen;
			ctl_count++;
		}
		if (fin)
			break;
	} while (1);

	/* A close with a reason made of input bytes (NULs end it early). */
	char reason[200];
	size_t rlen = len < sizeof(reason) - 1 ? len : sizeof(reason) - 1;
	memcpy(reason, in, rlen);
	reason[rlen] = '\0';
	uint8_t cp[PK_WS_MAX_CONTROL];
	size_t clen = pk_ws_close_payload(cp, codes[next_rand(&rng) % 8], reason);
	CHECK(clen >= 2 && clen <= PK_WS_MAX_CONTROL);
	CHECK(clen - 2 <= strlen(reason));
	CHECK(memcmp(cp + 2, reason, clen - 2) == 0);
	uint32_t kr = next_rand(&rng);
	memcpy(key, &kr, 4);
	n += pk_ws_frame_header(w + n, PK_WS_CLOSE, 1, clen, side ? key : NULL);
	memcpy(w + n, cp, clen);
	uint8_t o = PK_WS_CLOSE;
	hash_bytes(&ctl_expect, &o, 1);
	hash_bytes(&ctl_expect, cp, clen);
	if (side)
		pk_ws_mask(w + n, clen, key, 0);
	n += clen;
	ctl_count++;
	CHECK(n <= cap);

	/* One whole feed: every control frame comes back as written, and all
	 * the input is consumed without error. */
	struct digest d;
	run(side, w, n, 0, 0, &d);
	CHECK(!d.error);
	CHECK(d.data_len == plen);
	CHECK(d.controls == ctl_count);
	CHECK(d.ctl_hash == ctl_expect);
	CHECK(d.consumed == n);

	/* And byte-exact payload, read in generated chunks. */
	struct pk_ws_reader r;
	pk_ws_reader_init(&r, side);
	size_t off = 0, got = 0;
	while (off < n) {
		size_t c = 1 + next_rand(&rng) % 4096;
		if (c > n - off)
			c = n - off;
		size_t coff = 0;
		while (coff < c) {
			size_t used, pl;
			uint8_t *p;
			enum pk_ws_event ev =
			    pk_ws_reader_feed(&r, w + off + coff, c - coff, &used, &p, &pl);
			CHECK(ev != PK_WS_ERROR);
			coff += used;
			if (ev == PK_WS_DATA) {
				CHECK(got + pl <= plen);
				CHECK(memcmp(p, in + got, pl) == 0);
				got += pl;
			}
			if (ev == PK_WS_NEED_MORE)
				break;
		}
		off += c;
	}
	CHECK(got == plen);
	free(w);
}

static void misc(const uint8_t *in, size_t len, uint32_t seed)
{
	/* pk_ws_mask against a byte-wise reference, at an input-chosen offset
	 * and alignment. */
	size_t n = len > 4096 ? 4096 : len;
	uint8_t *a = malloc(n + 1), *b = malloc(n + 1);
	CHECK(a && b);
	uint8_t key[4];
	memcpy(key, &seed, 4);
	uint64_t off = (uint64_t)seed * 0x9e3779b97f4a7c15ull;
	size_t align = seed & 1;
	memcpy(a + align, in, n);
	memcpy(b, in, n);
	pk_ws_mask(a + align, n, key, off);
	for (size_t i = 0; i < n; i++)
		b[i] ^= key[(off + i) & 3];
	CHECK(memcmp(a + align, b, n) == 0);
	free(a);
	free(b);

	/* pk_ws_accept_key on an input-made string. */
	char k[32], out[29];
	size_t kl = len < sizeof(k) - 1 ? len : sizeof(k) - 1;
	memcpy(k, in, kl);
	k[kl] = '\0';
	if (pk_ws_accept_key(k, out) == 0) {
		CHECK(strlen(k) == 24 && k[22] == '=' && k[23] == '=');
		CHECK(strlen(out) == 28 && out[27] == '=');
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	unsigned flags = data[0];
	unsigned bits = flags & 0x0f;
	unsigned max_chunk = bits ? 1u << (bits - 1) : 0;
	uint32_t seed = (uint32_t)data[1] * 0x01010101u + (uint32_t)size;
	const uint8_t *in = data + 2;
	size_t len = size - 2;

	for (int side = 0; side < 2; side++)
		check_split_invariance(side, in, len, max_chunk ? max_chunk : 7, seed);
	if (flags & F_ROUND_TRIP)
		for (int side = 0; side < 2; side++)
			round_trip(side, in, len, seed);
	if (flags & F_MISC)
		misc(in, len, seed);
	return 0;
}
