/*
 * Unit tests for core/ws.c. Wire bytes are written out by hand (the RFC 6455
 * §5.7 examples among them), not built with pk_ws_frame_header, so the tests
 * pin the format independently of the writer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ws.h"

#define SERVER 1 /* reader expects masked (client) frames */
#define CLIENT 0 /* reader expects unmasked (server) frames */

/* ---- a recording feeder ---- */

struct result {
	uint8_t data[70000]; /* all DATA payload, concatenated */
	size_t data_len;
	char log[2048]; /* events; consecutive DATA coalesced, so splits do not show */
	size_t log_len;
	int in_data;
	int error;
	uint16_t code;
	const char *why;
	int last_data_opcode;
	size_t consumed; /* input consumed in total */
};

static void logf_(struct result *res, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(res->log + res->log_len, sizeof(res->log) - res->log_len, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(res->log) - res->log_len);
	res->log_len += (size_t)n;
}

/* Feed one chunk until the reader has consumed it all or stopped on error,
 * checking the calling contract on the way. */
static void feed_chunk(struct pk_ws_reader *r, uint8_t *buf, size_t len, struct result *res)
{
	size_t off = 0;
	while (!res->error) {
		static uint8_t sentinel;
		size_t used = 12345;
		uint8_t *p = &sentinel;
		size_t plen = 999;
		enum pk_ws_event ev = pk_ws_reader_feed(r, buf + off, len - off, &used, &p, &plen);
		assert_true(used <= len - off);
		off += used;
		res->consumed += used;
		switch (ev) {
		case PK_WS_NEED_MORE:
			assert_int_equal(off, len);
			return;
		case PK_WS_DATA:
			assert_true(plen > 0);
			assert_true(p >= buf && p + plen <= buf + off);
			assert_true(res->data_len + plen <= sizeof(res->data));
			memcpy(res->data + res->data_len, p, plen);
			res->data_len += plen;
			if (!res->in_data || res->last_data_opcode != pk_ws_reader_data_opcode(r))
				logf_(res, "D%d ", pk_ws_reader_data_opcode(r));
			res->last_data_opcode = pk_ws_reader_data_opcode(r);
			res->in_data = 1;
			break;
		case PK_WS_CONTROL: {
			const uint8_t *cp;
			size_t clen;
			int op = pk_ws_reader_control(r, &cp, &clen);
			assert_true(clen <= PK_WS_MAX_CONTROL);
			logf_(res, "C%d:%.*s ", op, (int)clen, (const char *)cp);
			res->in_data = 0;
			/* A control event always consumes input (its last byte at
			 * least): no livelock. */
			assert_true(used >= 1);
			break;
		}
		case PK_WS_ERROR:
			res->error = 1;
			res->why = pk_ws_reader_error(r, &res->code);
			assert_non_null(res->why);
			logf_(res, "E%u ", res->code);
			/* Errors are sticky and consume nothing more. */
			used = 1;
			assert_int_equal(
			    pk_ws_reader_feed(r, buf + off, len - off, &used, &p, &plen),
			    PK_WS_ERROR);
			assert_int_equal(used, 0);
			return;
		default:
			fail_msg("unknown event %d", ev);
		}
	}
}

/* Feed wire (copied, since the reader unmasks in place) split at the given
 * offsets (ascending, 0-terminated list of cut points). */
static struct result *run_cuts(int side, const uint8_t *wire, size_t len, const size_t *cuts,
                               size_t ncuts)
{
	struct result *res = calloc(1, sizeof(*res));
	uint8_t *buf = malloc(len ? len : 1);
	assert_non_null(res);
	assert_non_null(buf);
	memcpy(buf, wire, len);
	struct pk_ws_reader r;
	pk_ws_reader_init(&r, side);
	size_t start = 0;
	for (size_t i = 0; i <= ncuts && !res->error; i++) {
		size_t end = i < ncuts ? cuts[i] : len;
		/* Each chunk in its own allocation, so ASan catches a read
		 * past the chunk even when more input follows in the stream. */
		uint8_t *chunk = malloc(end - start ? end - start : 1);
		assert_non_null(chunk);
		memcpy(chunk, buf + start, end - start);
		feed_chunk(&r, chunk, end - start, res);
		free(chunk);
		start = end;
	}
	free(buf);
	return res;
}

static struct result *run(int side, const uint8_t *wire, size_t len)
{
	return run_cuts(side, wire, len, NULL, 0);
}

/* Every split in two, and byte by byte, gives the same events as one feed. */
static void check_splits(int side, const uint8_t *wire, size_t len)
{
	struct result *whole = run(side, wire, len);
	for (size_t cut = 0; cut <= len; cut++) {
		struct result *res = run_cuts(side, wire, len, &cut, 1);
		assert_string_equal(res->log, whole->log);
		assert_int_equal(res->data_len, whole->data_len);
		assert_memory_equal(res->data, whole->data, whole->data_len);
		free(res);
	}
	size_t *cuts = malloc((len + 1) * sizeof(*cuts));
	assert_non_null(cuts);
	for (size_t i = 0; i < len; i++)
		cuts[i] = i + 1;
	struct result *res = run_cuts(side, wire, len, cuts, len ? len - 1 : 0);
	assert_string_equal(res->log, whole->log);
	assert_int_equal(res->data_len, whole->data_len);
	assert_memory_equal(res->data, whole->data, whole->data_len);
	free(res);
	free(cuts);
	free(whole);
}

static void expect_error(int side, const uint8_t *wire, size_t len)
{
	struct result *res = run(side, wire, len);
	assert_true(res->error);
	assert_int_equal(res->code, 1002);
	free(res);
}

static void expect_ok(int side, const uint8_t *wire, size_t len, const char *log)
{
	struct result *res = run(side, wire, len);
	assert_false(res->error);
	assert_string_equal(res->log, log);
	assert_int_equal(res->consumed, len);
	free(res);
}

/* ---- RFC 6455 §5.7 examples ---- */

static const uint8_t unmasked_hello[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
static const uint8_t masked_hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                       0x7f, 0x9f, 0x4d, 0x51, 0x58};
static const uint8_t frag_hello[] = {0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f};
static const uint8_t ping_hello[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
static const uint8_t masked_pong_hello[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                            0x7f, 0x9f, 0x4d, 0x51, 0x58};

static void test_rfc_unmasked_text(void **state)
{
	(void)state;
	struct result *res = run(CLIENT, unmasked_hello, sizeof(unmasked_hello));
	assert_false(res->error);
	assert_int_equal(res->data_len, 5);
	assert_memory_equal(res->data, "Hello", 5);
	assert_int_equal(res->last_data_opcode, PK_WS_TEXT);
	assert_string_equal(res->log, "D1 ");
	free(res);
	/* A server must reject it: clients mask. */
	expect_error(SERVER, unmasked_hello, sizeof(unmasked_hello));
}

static void test_rfc_masked_text(void **state)
{
	(void)state;
	struct result *res = run(SERVER, masked_hello, sizeof(masked_hello));
	assert_false(res->error);
	assert_int_equal(res->data_len, 5);
	assert_memory_equal(res->data, "Hello", 5);
	assert_int_equal(res->last_data_opcode, PK_WS_TEXT);
	free(res);
	/* A client must reject it: servers do not mask. */
	expect_error(CLIENT, masked_hello, sizeof(masked_hello));
}

static void test_rfc_unmasks_in_place(void **state)
{
	(void)state;
	uint8_t buf[sizeof(masked_hello)];
	memcpy(buf, masked_hello, sizeof(buf));
	struct pk_ws_reader r;
	pk_ws_reader_init(&r, SERVER);
	size_t used;
	uint8_t *p;
	size_t plen;
	assert_int_equal(pk_ws_reader_feed(&r, buf, sizeof(buf), &used, &p, &plen), PK_WS_DATA);
	assert_int_equal(used, sizeof(buf));
	assert_ptr_equal(p, buf + 6);
	assert_int_equal(plen, 5);
	assert_memory_equal(buf + 6, "Hello", 5);
	assert_int_equal(pk_ws_reader_feed(&r, buf + used, 0, &used, &p, &plen), PK_WS_NEED_MORE);
	assert_int_equal(used, 0);
	/* NULL with length 0 is a valid empty feed. */
	assert_int_equal(pk_ws_reader_feed(&r, NULL, 0, &used, &p, &plen), PK_WS_NEED_MORE);
}

static void test_rfc_fragmented(void **state)
{
	(void)state;
	struct result *res = run(CLIENT, frag_hello, sizeof(frag_hello));
	assert_false(res->error);
	assert_int_equal(res->data_len, 5);
	assert_memory_equal(res->data, "Hello", 5);
	/* The continuation keeps the first frame's opcode. */
	assert_int_equal(res->last_data_opcode, PK_WS_TEXT);
	free(res);
}

static void test_rfc_ping_pong(void **state)
{
	(void)state;
	expect_ok(CLIENT, ping_hello, sizeof(ping_hello), "C9:Hello ");
	expect_ok(SERVER, masked_pong_hello, sizeof(masked_pong_hello), "C10:Hello ");

	struct pk_ws_reader r;
	pk_ws_reader_init(&r, SERVER);
	uint8_t buf[sizeof(masked_pong_hello)];
	memcpy(buf, masked_pong_hello, sizeof(buf));
	size_t used, plen, clen;
	uint8_t *p;
	const uint8_t *cp;
	assert_int_equal(pk_ws_reader_feed(&r, buf, sizeof(buf), &used, &p, &plen), PK_WS_CONTROL);
	assert_int_equal(used, sizeof(buf));
	assert_int_equal(pk_ws_reader_control(&r, &cp, &clen), PK_WS_PONG);
	assert_int_equal(clen, 5);
	assert_memory_equal(cp, "Hello", 5);
}

static uint8_t *big_frame(size_t plen, size_t *len)
{
	uint8_t *w = malloc(plen + 10);
	assert_non_null(w);
	size_t h;
	w[0] = 0x82;
	if (plen < 65536) {
		w[1] = 0x7e;
		w[2] = (uint8_t)(plen >> 8);
		w[3] = (uint8_t)plen;
		h = 4;
	} else {
		w[1] = 0x7f;
		for (int i = 0; i < 8; i++)
			w[2 + i] = (uint8_t)((uint64_t)plen >> (56 - 8 * i));
		h = 10;
	}
	for (size_t i = 0; i < plen; i++)
		w[h + i] = (uint8_t)(i * 7 + 3);
	*len = h + plen;
	return w;
}

static void check_big(size_t plen, const uint8_t *hdr, size_t hlen)
{
	size_t len;
	uint8_t *w = big_frame(plen, &len);
	assert_memory_equal(w, hdr, hlen);
	struct result *res = run(CLIENT, w, len);
	assert_false(res->error);
	assert_int_equal(res->data_len, plen);
	assert_memory_equal(res->data, w + hlen, plen);
	assert_int_equal(res->last_data_opcode, PK_WS_BINARY);
	free(res);
	/* Header split at each of its bytes, and a few cuts in the payload. */
	size_t cuts[3];
	for (size_t c = 1; c <= hlen + 1; c++) {
		cuts[0] = c;
		cuts[1] = hlen + 100;
		cuts[2] = len - 1;
		res = run_cuts(CLIENT, w, len, cuts, 3);
		assert_false(res->error);
		assert_int_equal(res->data_len, plen);
		assert_memory_equal(res->data, w + hlen, plen);
		free(res);
	}
	free(w);
}

static void test_rfc_256_binary(void **state)
{
	(void)state;
	static const uint8_t hdr[] = {0x82, 0x7e, 0x01, 0x00};
	check_big(256, hdr, sizeof(hdr));
}

static void test_rfc_64k_binary(void **state)
{
	(void)state;
	static const uint8_t hdr[] = {0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00};
	check_big(65536, hdr, sizeof(hdr));
}

/* ---- splits ---- */

static void test_split_everywhere(void **state)
{
	(void)state;
	check_splits(CLIENT, unmasked_hello, sizeof(unmasked_hello));
	check_splits(SERVER, masked_hello, sizeof(masked_hello));
	check_splits(CLIENT, frag_hello, sizeof(frag_hello));
	check_splits(CLIENT, ping_hello, sizeof(ping_hello));
	check_splits(SERVER, masked_pong_hello, sizeof(masked_pong_hello));

	/* A masked stream with every header size and kind of frame back to
	 * back: fragmented binary with an interleaved ping, a 16-bit length, a
	 * 64-bit (non-minimal) length, an empty frame, a close. */
	uint8_t w[1024];
	size_t n = 0;
	const uint8_t key[4] = {0xa1, 0x5b, 0x00, 0xff};
	uint8_t payload[300];
	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i ^ 0x5a);
#define PUT(...)                                                                                   \
	do {                                                                                       \
		const uint8_t b_[] = {__VA_ARGS__};                                                \
		memcpy(w + n, b_, sizeof(b_));                                                     \
		n += sizeof(b_);                                                                   \
	} while (0)
#define PAY(src, len)                                                                              \
	do {                                                                                       \
		memcpy(w + n, src, len);                                                           \
		pk_ws_mask(w + n, len, key, 0);                                                    \
		n += len;                                                                          \
	} while (0)
#define KEY() PUT(key[0], key[1], key[2], key[3])
	PUT(0x02, 0x83);
	KEY();
	PAY(payload, 3);
	PUT(0x89, 0x82);
	KEY();
	PAY("hi", 2);
	PUT(0x00, 0xfe, 0x01, 0x2c); /* 300 */
	KEY();
	PAY(payload, 300);
	PUT(0x80, 0xff, 0, 0, 0, 0, 0, 0, 0, 4);
	KEY();
	PAY("tail", 4);
	PUT(0x82, 0x80);
	KEY();
	PUT(0x88, 0x82);
	KEY();
	PAY("\x03\xe8", 2);
#undef PUT
#undef PAY
#undef KEY
	struct result *res = run(SERVER, w, n);
	assert_false(res->error);
	assert_string_equal(res->log, "D2 C9:hi D2 C8:\x03\xe8 ");
	assert_int_equal(res->data_len, 307);
	assert_memory_equal(res->data, payload, 3);
	assert_memory_equal(res->data + 3, payload, 300);
	assert_memory_equal(res->data + 303, "tail", 4);
	free(res);
	check_splits(SERVER, w, n);
}

static void test_interleaved_ping(void **state)
{
	(void)state;
	static const uint8_t w[] = {
	    0x02, 0x03, 'H',  'e',  'l',      /* binary, not final */
	    0x89, 0x04, 'p',  'i',  'n', 'g', /* ping */
	    0x00, 0x01, 'l',                  /* continuation */
	    0x8a, 0x00,                       /* empty pong */
	    0x88, 0x02, 0x03, 0xe8,           /* close 1000: allowed mid-message */
	    0x80, 0x01, 'o',                  /* final continuation */
	};
	expect_ok(CLIENT, w, sizeof(w), "D2 C9:ping D2 C10: C8:\x03\xe8 D2 ");
	struct result *res = run(CLIENT, w, sizeof(w));
	assert_int_equal(res->data_len, 5);
	assert_memory_equal(res->data, "Hello", 5);
	free(res);
	check_splits(CLIENT, w, sizeof(w));
}

static void test_empty_frames(void **state)
{
	(void)state;
	/* Zero-length frames give no DATA, but an empty final fragment ends
	 * the message: the binary frame after it must be accepted. */
	static const uint8_t w[] = {
	    0x82, 0x00,                              /* empty binary */
	    0x02, 0x03, 'a', 'b',  'c',  0x00, 0x00, /* empty middle fragment */
	    0x80, 0x00,                              /* empty final fragment */
	    0x82, 0x01, 'x', 0x01, 0x00,             /* empty text start */
	    0x80, 0x01, 'y',
	};
	expect_ok(CLIENT, w, sizeof(w), "D2 D1 ");
	struct result *res = run(CLIENT, w, sizeof(w));
	assert_int_equal(res->data_len, 5);
	assert_memory_equal(res->data, "abcxy", 5);
	free(res);
	check_splits(CLIENT, w, sizeof(w));

	/* An empty frame alone: all consumed, nothing reported. */
	uint8_t e[] = {0x82, 0x00};
	struct pk_ws_reader r;
	pk_ws_reader_init(&r, CLIENT);
	size_t used, plen;
	uint8_t *p;
	assert_int_equal(pk_ws_reader_feed(&r, e, 2, &used, &p, &plen), PK_WS_NEED_MORE);
	assert_int_equal(used, 2);
	/* Empty control frames are reported. */
	uint8_t c[] = {0x89, 0x00, 0x88, 0x00};
	assert_int_equal(pk_ws_reader_feed(&r, c, 4, &used, &p, &plen), PK_WS_CONTROL);
	assert_int_equal(used, 2);
	assert_int_equal(pk_ws_reader_feed(&r, c + 2, 2, &used, &p, &plen), PK_WS_CONTROL);
	assert_int_equal(used, 2);
	const uint8_t *cp;
	size_t clen;
	assert_int_equal(pk_ws_reader_control(&r, &cp, &clen), PK_WS_CLOSE);
	assert_int_equal(clen, 0);
}

static void test_non_minimal_lengths(void **state)
{
	(void)state;
	/* Accepted by design (see ws.c). */
	static const uint8_t w16[] = {0x82, 0x7e, 0x00, 0x02, 'a', 'b'};
	static const uint8_t w64[] = {0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0x02, 'c', 'd'};
	expect_ok(CLIENT, w16, sizeof(w16), "D2 ");
	expect_ok(CLIENT, w64, sizeof(w64), "D2 ");
}

/* ---- errors ---- */

static void test_error_masking(void **state)
{
	(void)state;
	static const uint8_t unmasked[] = {0x82, 0x01, 'a'};
	static const uint8_t masked[] = {0x82, 0x81, 1, 2, 3, 4, 'a'};
	expect_error(SERVER, unmasked, sizeof(unmasked));
	expect_error(CLIENT, masked, sizeof(masked));
	/* Control frames too. */
	static const uint8_t ping_unmasked[] = {0x89, 0x00};
	static const uint8_t ping_masked[] = {0x89, 0x80, 1, 2, 3, 4};
	expect_error(SERVER, ping_unmasked, sizeof(ping_unmasked));
	expect_error(CLIENT, ping_masked, sizeof(ping_masked));
}

static void test_error_rsv(void **state)
{
	(void)state;
	for (int bit = 0x10; bit <= 0x40; bit <<= 1) {
		uint8_t w[] = {(uint8_t)(0x82 | bit), 0x01, 'a'};
		expect_error(CLIENT, w, sizeof(w));
		uint8_t c[] = {(uint8_t)(0x89 | bit), 0x00};
		expect_error(CLIENT, c, sizeof(c));
	}
}

static void test_error_opcodes(void **state)
{
	(void)state;
	for (int op = 0; op < 16; op++) {
		uint8_t w[] = {(uint8_t)(0x80 | op), 0x00};
		struct result *res = run(CLIENT, w, sizeof(w));
		int known = op == 1 || op == 2 || op >= 8;
		known = known && op <= 10;
		if (op == 0) /* continuation without a message: an error too */
			known = 0;
		assert_int_equal(res->error, !known);
		if (res->error)
			assert_int_equal(res->code, 1002);
		free(res);
	}
}

static void test_error_control_rules(void **state)
{
	(void)state;
	/* Not final. */
	static const uint8_t nofin[] = {0x09, 0x00};
	expect_error(CLIENT, nofin, sizeof(nofin));
	static const uint8_t close_nofin[] = {0x08, 0x00};
	expect_error(CLIENT, close_nofin, sizeof(close_nofin));
	/* 126 bytes, 16-bit length: refused after the first two bytes. */
	uint8_t big[2 + 2 + 126];
	memset(big, 'x', sizeof(big));
	big[0] = 0x89;
	big[1] = 0x7e;
	big[2] = 0x00;
	big[3] = 0x7e;
	expect_error(CLIENT, big, sizeof(big));
	/* Even a non-minimal 16-bit encoding of a short length. */
	static const uint8_t nm[] = {0x8a, 0x7e, 0x00, 0x01, 'x'};
	expect_error(CLIENT, nm, sizeof(nm));
	static const uint8_t nm64[] = {0x89, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0};
	expect_error(CLIENT, nm64, sizeof(nm64));
	/* 125 is fine. */
	uint8_t ok[2 + 125];
	memset(ok, 'y', sizeof(ok));
	ok[0] = 0x89;
	ok[1] = 125;
	struct result *res = run(CLIENT, ok, sizeof(ok));
	assert_false(res->error);
	assert_int_equal(res->log_len, strlen("C9: ") + 125);
	free(res);
	check_splits(CLIENT, ok, sizeof(ok));
}

static void test_error_fragmentation(void **state)
{
	(void)state;
	static const uint8_t cont_first[] = {0x80, 0x01, 'a'};
	expect_error(CLIENT, cont_first, sizeof(cont_first));
	static const uint8_t cont_nofin_first[] = {0x00, 0x01, 'a'};
	expect_error(CLIENT, cont_nofin_first, sizeof(cont_nofin_first));
	/* Continuation after the message ended. */
	static const uint8_t cont_after[] = {0x82, 0x01, 'a', 0x80, 0x01, 'b'};
	expect_error(CLIENT, cont_after, sizeof(cont_after));
	/* New data frame inside a fragmented message. */
	static const uint8_t nested_text[] = {0x01, 0x01, 'a', 0x81, 0x01, 'b'};
	expect_error(CLIENT, nested_text, sizeof(nested_text));
	static const uint8_t nested_bin[] = {0x02, 0x01, 'a', 0x89, 0x00, 0x02, 0x01, 'b'};
	expect_error(CLIENT, nested_bin, sizeof(nested_bin));
	/* The data before the error was still delivered. */
	struct result *res = run(CLIENT, nested_bin, sizeof(nested_bin));
	assert_string_equal(res->log, "D2 C9: E1002 ");
	assert_int_equal(res->consumed, 7);
	free(res);
}

static void test_error_64bit_msb(void **state)
{
	(void)state;
	static const uint8_t w[] = {0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0x01};
	expect_error(CLIENT, w, sizeof(w));
	static const uint8_t all[] = {0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	expect_error(CLIENT, all, sizeof(all));
	/* 2^63 - 1 is a legal (if huge) length: no error, just waiting. */
	static const uint8_t max[] = {0x82, 0x7f, 0x7f, 0xff, 0xff, 0xff,
	                              0xff, 0xff, 0xff, 0xff, 'z'};
	struct result *res = run(CLIENT, max, sizeof(max));
	assert_false(res->error);
	assert_int_equal(res->data_len, 1);
	free(res);
}

static void test_error_close_frames(void **state)
{
	(void)state;
	static const uint8_t one[] = {0x88, 0x01, 0x03};
	expect_error(CLIENT, one, sizeof(one));
	static const unsigned bad[] = {0,    1,    999,  1004, 1005, 1006, 1012,
	                               1013, 1015, 1016, 2000, 2999, 5000, 65535};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t w[] = {0x88, 0x02, (uint8_t)(bad[i] >> 8), (uint8_t)bad[i]};
		expect_error(CLIENT, w, sizeof(w));
	}
	static const unsigned good[] = {1000, 1001, 1002, 1003, 1007, 1008,
	                                1009, 1010, 1011, 3000, 4000, 4999};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		uint8_t w[] = {0x88, 0x05, (uint8_t)(good[i] >> 8), (uint8_t)good[i], 'b',
		               'y',  'e'};
		struct result *res = run(CLIENT, w, sizeof(w));
		assert_false(res->error);
		free(res);
	}
	/* Masked close, checked after unmasking: code 1000 under key. */
	uint8_t m[] = {0x88, 0x82, 0x12, 0x34, 0x56, 0x78, 0x03 ^ 0x12, 0xe8 ^ 0x34};
	expect_ok(SERVER, m, sizeof(m), "C8:\x03\xe8 ");
	uint8_t mbad[] = {0x88, 0x82, 0x12, 0x34, 0x56, 0x78, 0x03 ^ 0x12, 0xed ^ 0x34};
	expect_error(SERVER, mbad, sizeof(mbad));
}

static void test_error_early_and_sticky(void **state)
{
	(void)state;
	/* A bad first two bytes are refused without waiting for the rest. */
	uint8_t w[] = {0xc2, 0x7f};
	struct pk_ws_reader r;
	pk_ws_reader_init(&r, CLIENT);
	size_t used, plen;
	uint8_t *p;
	assert_int_equal(pk_ws_reader_feed(&r, w, 1, &used, &p, &plen), PK_WS_NEED_MORE);
	assert_int_equal(used, 1);
	assert_int_equal(pk_ws_reader_feed(&r, w + 1, 1, &used, &p, &plen), PK_WS_ERROR);
	assert_int_equal(used, 1);
	uint16_t code = 0;
	const char *why = pk_ws_reader_error(&r, &code);
	assert_non_null(why);
	assert_int_equal(code, 1002);
	assert_non_null(pk_ws_reader_error(&r, NULL));
	/* Sticky, even for valid input. */
	uint8_t ok[] = {0x82, 0x01, 'a'};
	assert_int_equal(pk_ws_reader_feed(&r, ok, sizeof(ok), &used, &p, &plen), PK_WS_ERROR);
	assert_int_equal(used, 0);
	/* A fresh init clears it. */
	pk_ws_reader_init(&r, CLIENT);
	assert_null(pk_ws_reader_error(&r, NULL));
	assert_int_equal(pk_ws_reader_feed(&r, ok, sizeof(ok), &used, &p, &plen), PK_WS_DATA);
}

static void test_text_is_not_fatal_here(void **state)
{
	(void)state;
	/* Policy belongs to the caller; the reader only reports the opcode. */
	struct pk_ws_reader r;
	pk_ws_reader_init(&r, CLIENT);
	uint8_t w[] = {0x81, 0x01, 't', 0x82, 0x01, 'b'};
	size_t used, plen;
	uint8_t *p;
	assert_int_equal(pk_ws_reader_feed(&r, w, sizeof(w), &used, &p, &plen), PK_WS_DATA);
	assert_int_equal(pk_ws_reader_data_opcode(&r), PK_WS_TEXT);
	assert_int_equal(pk_ws_reader_feed(&r, w + used, sizeof(w) - used, &used, &p, &plen),
	                 PK_WS_DATA);
	assert_int_equal(pk_ws_reader_data_opcode(&r), PK_WS_BINARY);
}

/* ---- writer ---- */

static void check_header(uint64_t len, const uint8_t *mask, const uint8_t *exp, size_t exp_len)
{
	uint8_t out[PK_WS_MAX_HDR + 4];
	memset(out, 0xee, sizeof(out));
	size_t n = pk_ws_frame_header(out, PK_WS_BINARY, 1, len, mask);
	assert_int_equal(n, exp_len);
	assert_memory_equal(out, exp, exp_len);
	/* Nothing written past the header. */
	for (size_t i = n; i < sizeof(out); i++)
		assert_int_equal(out[i], 0xee);
}

static void test_header_writer(void **state)
{
	(void)state;
	static const uint8_t k[4] = {0x37, 0xfa, 0x21, 0x3d};
	check_header(0, NULL, (const uint8_t[]){0x82, 0x00}, 2);
	check_header(0, k, (const uint8_t[]){0x82, 0x80, 0x37, 0xfa, 0x21, 0x3d}, 6);
	check_header(125, NULL, (const uint8_t[]){0x82, 0x7d}, 2);
	check_header(125, k, (const uint8_t[]){0x82, 0xfd, 0x37, 0xfa, 0x21, 0x3d}, 6);
	check_header(126, NULL, (const uint8_t[]){0x82, 0x7e, 0x00, 0x7e}, 4);
	check_header(126, k, (const uint8_t[]){0x82, 0xfe, 0x00, 0x7e, 0x37, 0xfa, 0x21, 0x3d}, 8);
	check_header(65535, NULL, (const uint8_t[]){0x82, 0x7e, 0xff, 0xff}, 4);
	check_header(65535, k, (const uint8_t[]){0x82, 0xfe, 0xff, 0xff, 0x37, 0xfa, 0x21, 0x3d},
	             8);
	check_header(65536, NULL, (const uint8_t[]){0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0}, 10);
	check_header(65536, k,
	             (const uint8_t[]){0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 0x37, 0xfa, 0x21, 0x3d},
	             14);
	check_header(0x0102030405060708ull, NULL,
	             (const uint8_t[]){0x82, 0x7f, 1, 2, 3, 4, 5, 6, 7, 8}, 10);

	/* Opcode and FIN; the RFC examples rebuilt. */
	uint8_t out[PK_WS_MAX_HDR];
	assert_int_equal(pk_ws_frame_header(out, PK_WS_TEXT, 1, 5, NULL), 2);
	assert_memory_equal(out, unmasked_hello, 2);
	assert_int_equal(pk_ws_frame_header(out, PK_WS_TEXT, 1, 5, k), 6);
	assert_memory_equal(out, masked_hello, 6);
	assert_int_equal(pk_ws_frame_header(out, PK_WS_TEXT, 0, 3, NULL), 2);
	assert_memory_equal(out, frag_hello, 2);
	assert_int_equal(pk_ws_frame_header(out, PK_WS_CONT, 1, 2, NULL), 2);
	assert_memory_equal(out, frag_hello + 5, 2);
	assert_int_equal(pk_ws_frame_header(out, PK_WS_PING, 1, 5, NULL), 2);
	assert_memory_equal(out, ping_hello, 2);
	assert_int_equal(pk_ws_frame_header(out, PK_WS_PONG, 1, 5, k), 6);
	assert_memory_equal(out, masked_pong_hello, 6);
	uint8_t hello[5] = {'H', 'e', 'l', 'l', 'o'};
	pk_ws_mask(hello, 5, k, 0);
	assert_memory_equal(hello, masked_hello + 6, 5);
}

static void test_mask_offsets(void **state)
{
	(void)state;
	static const uint8_t k[4] = {0x01, 0x80, 0x7f, 0xfe};
	uint8_t ref[80], got[81];
	for (uint64_t off = 0; off < 9; off++) {
		for (size_t len = 0; len <= 70; len++) {
			for (size_t align = 0; align < 2; align++) {
				for (size_t i = 0; i < len; i++)
					ref[i] = got[align + i] = (uint8_t)(i * 31 + len);
				for (size_t i = 0; i < len; i++)
					ref[i] ^= k[(off + i) % 4];
				pk_ws_mask(got + align, len, k, off);
				assert_memory_equal(got + align, ref, len);
			}
		}
	}
	/* Masking in pieces with running offsets equals masking at once. */
	uint8_t a[300], b[300];
	for (size_t i = 0; i < sizeof(a); i++)
		a[i] = b[i] = (uint8_t)i;
	pk_ws_mask(a, sizeof(a), k, 0);
	size_t pieces[] = {1, 2, 3, 13, 64, 7, 9, 201};
	size_t pos = 0;
	for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
		pk_ws_mask(b + pos, pieces[i], k, pos);
		pos += pieces[i];
	}
	assert_int_equal(pos, sizeof(a));
	assert_memory_equal(a, b, sizeof(a));
	/* A huge offset only matters mod 4. */
	uint8_t c[5] = {0};
	pk_ws_mask(c, 5, k, UINT64_MAX); /* UINT64_MAX mod 4 == 3 */
	assert_int_equal(c[0], k[3]);
	assert_int_equal(c[1], k[0]);
	assert_int_equal(c[4], k[3]);
	/* Twice is the identity. */
	pk_ws_mask(c, 5, k, UINT64_MAX);
	assert_memory_equal(c, (uint8_t[5]){0}, 5);
}

static void test_close_payload(void **state)
{
	(void)state;
	uint8_t out[PK_WS_MAX_CONTROL];
	size_t n = pk_ws_close_payload(out, 1000, "bye");
	assert_int_equal(n, 5);
	assert_memory_equal(out,
	                    "\x03\xe8"
	                    "bye",
	                    5);
	n = pk_ws_close_payload(out, 1002, NULL);
	assert_int_equal(n, 2);
	assert_memory_equal(out, "\x03\xea", 2);
	n = pk_ws_close_payload(out, 4999, "");
	assert_int_equal(n, 2);
	assert_memory_equal(out, "\x13\x87", 2);
	/* Truncated to fit 125 bytes. */
	char longr[300];
	memset(longr, 'r', sizeof(longr) - 1);
	longr[sizeof(longr) - 1] = '\0';
	n = pk_ws_close_payload(out, 1011, longr);
	assert_int_equal(n, PK_WS_MAX_CONTROL);
	assert_memory_equal(out + 2, longr, 123);
	/* Exactly 123 bytes fits whole. */
	longr[123] = '\0';
	assert_int_equal(pk_ws_close_payload(out, 1011, longr), 125);
	/* Never cut a UTF-8 sequence: "é" (2 bytes) straddling byte 123. */
	memset(longr, 'a', 122);
	memcpy(longr + 122, "\xc3\xa9zz", 5);
	n = pk_ws_close_payload(out, 1000, longr);
	assert_int_equal(n, 2 + 122);
	/* And the payload parses back as a close frame. */
	uint8_t w[2 + PK_WS_MAX_CONTROL];
	size_t h = pk_ws_frame_header(w, PK_WS_CLOSE, 1, n, NULL);
	memcpy(w + h, out, n);
	struct result *res = run(CLIENT, w, h + n);
	assert_false(res->error);
	free(res);
}

/* ---- round trip ---- */

static void test_round_trip(void **state)
{
	(void)state;
	static const size_t sizes[] = {0, 1, 125, 126, 127, 1000, 65535, 65536, 65537};
	static const uint8_t k[4] = {0xde, 0xad, 0xbe, 0xef};
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		for (int side = 0; side < 2; side++) {
			size_t plen = sizes[s];
			uint8_t *w = malloc(PK_WS_MAX_HDR + plen);
			assert_non_null(w);
			size_t h =
			    pk_ws_frame_header(w, PK_WS_BINARY, 1, plen, side == SERVER ? k : NULL);
			for (size_t i = 0; i < plen; i++)
				w[h + i] = (uint8_t)(i * 13);
			if (side == SERVER)
				pk_ws_mask(w + h, plen, k, 0);
			struct result *res = run(side, w, h + plen);
			assert_false(res->error);
			assert_int_equal(res->data_len, plen);
			for (size_t i = 0; i < plen; i++)
				assert_int_equal(res->data[i], (uint8_t)(i * 13));
			free(res);
			free(w);
		}
	}
}

/* ---- handshake ---- */

static void test_accept_key(void **state)
{
	(void)state;
	char out[29];
	memset(out, 'x', sizeof(out));
	assert_int_equal(pk_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
	/* RFC 6455 §1.3 (and §4.2.2's algorithm, checked independently with
	 * Python's hashlib). */
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

	static const char *bad[] = {
	    "",
	    "dGhlIHNhbXBsZSBub25jZQ=",   /* 23 */
	    "dGhlIHNhbXBsZSBub25jZQ===", /* 25 */
	    "dGhlIHNhbXBsZSBub25jZQ",    /* no padding */
	    "dGhlIHNhbXBsZSBub25jZQAA",  /* 24 chars, 18 bytes */
	    "dGhlIHNhbXBsZSBub25jZ===",  /* 15 bytes */
	    "dGhlIHNhbXBsZSBub25j-Q==",  /* URL-safe alphabet */
	    "dGhlIHNhbXBsZSBub25j Q==",
	    "dGhlIHNhbXBsZSBub25jZQ=A",
	    "dGhlIHNhbXBs\nSBub25jZQ==",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(pk_ws_accept_key(bad[i], out), -1);
	assert_int_equal(pk_ws_accept_key(NULL, out), -1);
	/* Other valid keys work (all alphabet characters). */
	assert_int_equal(pk_ws_accept_key("AAAAAAAAAAAAAAAAAAAAAA==", out), 0);
	assert_int_equal(strlen(out), 28);
	assert_int_equal(pk_ws_accept_key("+/9zZaA+/9zZaA+/9zZaAw==", out), 0);
}

static void test_client_key(void **state)
{
	(void)state;
	char a[25], b[25], acc[29];
	memset(a, 'x', sizeof(a));
	pk_ws_client_key(a);
	pk_ws_client_key(b);
	assert_int_equal(strlen(a), 24);
	assert_int_equal(a[22], '=');
	assert_int_equal(a[23], '=');
	for (int i = 0; i < 22; i++)
		assert_non_null(strchr(
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", a[i]));
	/* 16 random bytes: the last data character carries 4 zero bits. */
	assert_non_null(strchr("AQgw", a[21]));
	assert_string_not_equal(a, b);
	assert_int_equal(pk_ws_accept_key(a, acc), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc_unmasked_text),
	    cmocka_unit_test(test_rfc_masked_text),
	    cmocka_unit_test(test_rfc_unmasks_in_place),
	    cmocka_unit_test(test_rfc_fragmented),
	    cmocka_unit_test(test_rfc_ping_pong),
	    cmocka_unit_test(test_rfc_256_binary),
	    cmocka_unit_test(test_rfc_64k_binary),
	    cmocka_unit_test(test_split_everywhere),
	    cmocka_unit_test(test_interleaved_ping),
	    cmocka_unit_test(test_empty_frames),
	    cmocka_unit_test(test_non_minimal_lengths),
	    cmocka_unit_test(test_error_masking),
	    cmocka_unit_test(test_error_rsv),
	    cmocka_unit_test(test_error_opcodes),
	    cmocka_unit_test(test_error_control_rules),
	    cmocka_unit_test(test_error_fragmentation),
	    cmocka_unit_test(test_error_64bit_msb),
	    cmocka_unit_test(test_error_close_frames),
	    cmocka_unit_test(test_error_early_and_sticky),
	    cmocka_unit_test(test_text_is_not_fatal_here),
	    cmocka_unit_test(test_header_writer),
	    cmocka_unit_test(test_mask_offsets),
	    cmocka_unit_test(test_close_payload),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_accept_key),
	    cmocka_unit_test(test_client_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
