/*
 * HTTP/1.1 reader and head builders on nodejs http-parser 2.9.
 *
 * The reader pauses the parser at two points: in on_headers_complete (so a
 * HEAD event can say exactly which input byte ended the head) and in
 * on_message_complete (so DONE can say exactly which byte ended the message,
 * and pipelined bytes after it stay with the caller). Body bytes go through
 * the parser only to find the message end; nothing is copied.
 *
 * One http-parser detail shapes feed(): when on_headers_complete pauses, the
 * parser stops *on* the final LF of the head without consuming it (it is
 * consumed by the state that follows, which decides about the body). The
 * reader therefore runs the parser over that single byte right away, so the
 * head's bytes end exactly at that LF from the caller's point of view.
 */
#include "http1.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "strbuf.h"

#include <http_parser.h>

/* The reader keeps the parser in opaque storage (see http1.h). */
#define PK_PARSER(r) ((http_parser *)(void *)(r)->parser_storage)
_Static_assert(sizeof(http_parser) <= sizeof(((struct pk_http1_reader *)0)->parser_storage),
               "http_parser does not fit pk_http1_reader.parser_storage");

/* Reader states (r->state). */
enum {
	ST_HEAD = 0,     /* collecting a head (or waiting for one) */
	ST_BODY,         /* head returned, tracking the body */
	ST_DONE_PENDING, /* head returned, the message has no body: next feed is DONE */
	ST_DONE,         /* DONE returned; the next feed starts a new message */
	ST_ERROR,
};

/* Which head string the parser callbacks are appending to (r->piece). */
enum {
	PIECE_NONE = 0,
	PIECE_FIRST, /* request-target or reason phrase */
	PIECE_FIELD,
	PIECE_VALUE,
};

/* max_head is clamped to this; http-parser's own (process-wide) header limit
 * is set above it so that max_head is always the limit that triggers. */
#define HEAD_LIMIT_MAX (64u << 20)
/* A head buffer that grew beyond this is released between messages so an
 * idle keep-alive connection does not pin it. */
#define HEAD_MEM_KEEP 16384

static int on_message_begin(http_parser *p);
static int on_url(http_parser *p, const char *at, size_t len);
static int on_status(http_parser *p, const char *at, size_t len);
static int on_header_field(http_parser *p, const char *at, size_t len);
static int on_header_value(http_parser *p, const char *at, size_t len);
static int on_headers_complete(http_parser *p);
static int on_message_complete(http_parser *p);
static int on_body(http_parser *p, const char *at, size_t len);
static int on_chunk_header(http_parser *p);

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
};

/* Errors raised from callbacks; the parser then reports HPE_CB_*. */
static int cb_fail(struct pk_http1_reader *r, int status, const char *why)
{
	r->err_status = status;
	r->err = why;
	return -1;
}

static int status_for_malformed(const struct pk_http1_reader *r)
{
	/* A bad request is the client's fault; a bad response is the
	 * upstream's, which the proxy reports as a bad gateway. */
	return r->kind == PK_HTTP1_REQUEST ? 400 : 502;
}

static int status_for_too_large(const struct pk_http1_reader *r)
{
	return r->kind == PK_HTTP1_REQUEST ? 431 : 502;
}

/* Go's textproto.TrimString: ASCII space and tab. */
static int is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static void head_append(struct pk_http1_head *h, const char *s, size_t n)
{
	if (n == 0)
		return; /* http-parser reports empty pieces; mem may still be NULL */
	if (h->mem_len + n > h->mem_cap) {
		size_t cap = h->mem_cap ? h->mem_cap : 512;
		while (cap < h->mem_len + n)
			cap *= 2;
		h->mem = pk_xrealloc(h->mem, cap);
		h->mem_cap = cap;
	}
	memcpy(h->mem + h->mem_len, s, n);
	h->mem_len += n;
}

static void head_terminate(struct pk_http1_head *h)
{
	head_append(h, "", 1);
}

static int on_message_begin(http_parser *p)
{
	struct pk_http1_reader *r = p->data;
	r->started = 1;
	return 0;
}

static int append_piece(struct pk_http1_reader *r, int piece, const char *at, size_t len)
{
	/* NUL would cut the C strings the head is made of. http-parser already
	 * refuses it almost everywhere; the reason phrase is the exception. */
	if (memchr(at, '\0', len))
		return cb_fail(r, status_for_malformed(r), "NUL byte in head");
	if (r->piece != piece) {
		switch (r->piece) {
		case PIECE_NONE:
			if (piece != PIECE_FIRST)
				head_terminate(&r->head); /* empty first-line string */
			break;
		case PIECE_FIRST:
		case PIECE_FIELD:
		case PIECE_VALUE:
			head_terminate(&r->head);
			break;
		}
		r->piece = piece;
	}
	head_append(&r->head, at, len);
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	return append_piece(p->data, PIECE_FIRST, at, len);
}

static int on_status(http_parser *p, const char *at, size_t len)
{
	return append_piece(p->data, PIECE_FIRST, at, len);
}

/* Trailers (after a chunked body) arrive through the header callbacks too.
 * They are forwarded as raw body bytes, never stored, but still bounded by
 * max_head like a head. */
static int count_trailer(struct pk_http1_reader *r, size_t len)
{
	r->trailer_bytes += len;
	if (r->trailer_bytes > r->max_head)
		return cb_fail(r, status_for_too_large(r), "trailers too large");
	return 0;
}

/* RFC 7230 tchar. http-parser built without HTTP_PARSER_STRICT (as Debian
 * ships it) lets spaces into names; Go rejects them. */
static int is_token(const char *s, size_t n)
{
	/* One lookup per byte: this runs over every header name. */
	static const unsigned char tchar[256] = {
	    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
	    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
	    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
	    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
	    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
	    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
	    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
	    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
	    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
	    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
	};
	for (size_t i = 0; i < n; i++)
		if (!tchar[(unsigned char)s[i]])
			return 0;
	return 1;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct pk_http1_reader *r = p->data;
	if (!is_token(at, len))
		return cb_fail(r, status_for_malformed(r), "invalid header name");
	if (r->state != ST_HEAD)
		return count_trailer(r, len);
	if (r->piece != PIECE_FIELD) {
		if (r->head.nheaders >= r->max_headers)
			return cb_fail(r, status_for_too_large(r), "too many headers");
		r->head.nheaders++;
	}
	r->last_was_value = 0;
	return append_piece(r, PIECE_FIELD, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct pk_http1_reader *r = p->data;
	if (r->state != ST_HEAD)
		return count_trailer(r, len);
	/* Go's server rejects control characters other than HTAB in values
	 * (httpguts.ValidHeaderFieldValue); http-parser lets them through. */
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)at[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return cb_fail(r, status_for_malformed(r), "invalid header value");
	}
	r->last_was_value = 1;
	return append_piece(r, PIECE_VALUE, at, len);
}

/* Turn the NUL-separated strings in mem into the head's pointers:
 * first-line string, then name, value for each header. */
static void head_finish(struct pk_http1_reader *r)
{
	struct pk_http1_head *h = &r->head;
	switch (r->piece) {
	case PIECE_NONE:
	case PIECE_FIRST:
	case PIECE_VALUE:
		head_terminate(h);
		break;
	case PIECE_FIELD: /* a name without a value callback: empty value */
		head_terminate(h);
		head_terminate(h);
		break;
	}
	char *s = h->mem;
	const char *first = s;
	s += strlen(s) + 1;
	for (size_t i = 0; i < h->nheaders; i++) {
		h->headers[i].name = s;
		s += strlen(s) + 1;
		/* Go trims trailing whitespace of values (textproto.TrimString);
		 * http-parser has dropped the leading one already. */
		char *v = s;
		size_t vlen = strlen(v);
		h->headers[i].value = v;
		s += vlen + 1;
		while (vlen > 0 && is_ows(v[vlen - 1]))
			v[--vlen] = '\0';
	}
	if (r->kind == PK_HTTP1_REQUEST) {
		h->url = first;
		h->reason = NULL;
	} else {
		h->url = NULL;
		h->reason = first;
	}
}

static int count_headers(const struct pk_http1_head *h, const char *name)
{
	int n = 0;
	for (size_t i = 0; i < h->nheaders; i++)
		n += strcasecmp(h->headers[i].name, name) == 0;
	return n;
}

/* http-parser's http_message_needs_eof(), which its header does not declare,
 * with our own body decision (skip) in place of F_SKIPBODY. */
static int needs_eof(const http_parser *p, int skip)
{
	if (p->type == HTTP_REQUEST || skip)
		return 0;
	if (p->status_code / 100 == 1 || p->status_code == 204 || p->status_code == 304)
		return 0;
	if (p->uses_transfer_encoding && !(p->flags & F_CHUNKED))
		return 1;
	if ((p->flags & F_CHUNKED) || p->content_length != ULLONG_MAX)
		return 0;
	return 1;
}

static int on_headers_complete(http_parser *p)
{
	struct pk_http1_reader *r = p->data;
	struct pk_http1_head *h = &r->head;
	head_finish(r);
	h->http_major = p->http_major;
	h->http_minor = p->http_minor;
	h->chunked = (p->flags & F_CHUNKED) != 0;
	if (p->flags & F_CONTENTLENGTH) {
		/* Go parses Content-Length as a 63-bit number. */
		if (p->content_length > (uint64_t)INT64_MAX)
			return cb_fail(r, status_for_malformed(r), "bad Content-Length");
		h->content_length = (int64_t)p->content_length;
	} else {
		h->content_length = -1;
	}
	/* 1: no body follows; 2: the connection switches protocols after the
	 * head (http-parser then stops right after it). */
	int ret = 0;
	if (r->kind == PK_HTTP1_REQUEST) {
		h->method = http_method_str((enum http_method)p->method);
		h->status = 0;
		/* Go's server answers other major versions with 505. */
		if (p->http_major != 1)
			return cb_fail(r, 505, "unsupported protocol version");
		/* Go's server: HTTP/1.1 needs exactly one Host (CONNECT aside). */
		int hosts = count_headers(h, "Host");
		if (hosts > 1)
			return cb_fail(r, 400, "too many Host headers");
		if (hosts == 0 &&
		    (p->http_major > 1 || (p->http_major == 1 && p->http_minor >= 1)) &&
		    p->method != HTTP_CONNECT)
			return cb_fail(r, 400, "missing required Host header");
		/* http-parser flags CONNECT as an upgrade; it is not one for a
		 * reverse proxy (no Upgrade header), just a bodyless request. */
		h->upgrade = p->upgrade && p->method != HTTP_CONNECT &&
		             pk_http1_header_get(h, "Upgrade") != NULL;
		if (h->upgrade)
			ret = 2;
	} else {
		h->method = NULL;
		h->status = (int)p->status_code;
		h->upgrade = h->status == 101;
		if (h->upgrade)
			ret = 2;
		else if (r->head_request || h->status / 100 == 1 || h->status == 204 ||
		         h->status == 304)
			ret = 1; /* http-parser would read a body a 204 announces */
	}
	/* http_should_keep_alive() looks at F_SKIPBODY, which the parser only
	 * sets from our return value after this callback; set it now so a
	 * bodiless response without Content-Length is not taken as
	 * close-delimited. */
	if (ret)
		p->flags |= F_SKIPBODY;
	h->keep_alive = http_should_keep_alive(p);
	r->body_until_eof = needs_eof(p, ret != 0);
	http_parser_pause(p, 1);
	return ret;
}

static int on_message_complete(http_parser *p)
{
	http_parser_pause(p, 1);
	return 0;
}

/* Line endings. http-parser without HTTP_PARSER_STRICT takes any byte after
 * some CRs as the LF (status line, end of head, chunk-size lines) and any
 * two bytes after chunk data as the CRLF. Go's readers do not, and a reader
 * that is laxer than the next hop about where a message ends is how request
 * smuggling starts. So every CR in a head or in chunked framing must be
 * followed by LF, and chunk data by exactly CRLF.
 * r->cr: 0 nothing due, 1 LF due, 2 CRLF due. */
static int crlf_ok(struct pk_http1_reader *r, const char *s, size_t n)
{
	size_t i = 0;
	if (i < n && r->cr == 2) {
		if (s[i++] != '\r')
			return 0;
		r->cr = 1;
	}
	if (i < n && r->cr == 1) {
		if (s[i++] != '\n')
			return 0;
		r->cr = 0;
	}
	/* Nothing due: only the CRs matter, found with memchr rather than a
	 * byte at a time (this runs over every head). */
	while (i < n) {
		const char *cr = memchr(s + i, '\r', n - i);
		if (!cr)
			return 1;
		i = (size_t)(cr - s) + 1;
		if (i == n) {
			r->cr = 1;
			return 1;
		}
		if (s[i++] != '\n')
			return 0;
	}
	return 1;
}

/* Two things about the lines of a head that http-parser does not check:
 *  - the protocol name of the first line: without HTTP_PARSER_STRICT it only
 *    looks at the first letter ("HXYZ/1.1" passes), Go insists on "HTTP/".
 *    A request line ends with "HTTP/d.d" (http-parser takes one digit
 *    each), a status line starts with it;
 *  - obs-fold (a header line starting with SP or HT): http-parser glues the
 *    continuation onto the value, whitespace included, which can turn a
 *    value it accepted into one the next hop reads differently. RFC 7230
 *    3.2.4 allows rejecting it (400, or 502 for a response), which is simpler
 *    than Go's rewriting and cannot be misread.
 * r->line0: 0 before the first line, 1 in it, 2 in a header line, 3 at the
 * start of a line after the first. */
/* Keep what lines_ok() needs of the first line: a response's first 8
 * bytes, a request's last 8 (its protocol). */
static void line0_keep(struct pk_http1_reader *r, const char *s, size_t n)
{
	if (r->kind == PK_HTTP1_RESPONSE) {
		size_t k = 8 - r->line0_len < n ? 8 - r->line0_len : n;
		memcpy(r->line0_buf + r->line0_len, s, k);
		r->line0_len += (unsigned)k;
	} else if (n >= 8) {
		memcpy(r->line0_buf, s + n - 8, 8);
		r->line0_len = 8;
	} else {
		size_t drop = r->line0_len + n > 8 ? r->line0_len + n - 8 : 0;
		memmove(r->line0_buf, r->line0_buf + drop, r->line0_len - drop);
		memcpy(r->line0_buf + r->line0_len - drop, s, n);
		r->line0_len = (unsigned)(r->line0_len - drop + n);
	}
}

/* Go's checks that http-parser (built lenient in Debian) skips: the protocol
 * must be HTTP/x.y, and no header line may be folded (start with SP/HT).
 * Incremental over any split of the head; it looks for line ends with
 * memchr rather than byte by byte, as it runs on every head. */
static int lines_ok(struct pk_http1_reader *r, const char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		switch (r->line0) {
		case 0: /* blank lines before a message are skipped */
			while (i < n && (s[i] == '\r' || s[i] == '\n'))
				i++;
			if (i == n)
				return 1;
			r->line0 = 1;
			/* fall through */
		case 1: { /* the first line */
			size_t j = i;
			while (j < n && s[j] != '\r' && s[j] != '\n')
				j++;
			line0_keep(r, s + i, j - i);
			if (j == n)
				return 1;
			r->line0 = s[j] == '\n' ? 3 : 2;
			if (r->line0_len != 8 || memcmp(r->line0_buf, "HTTP/", 5) != 0)
				return 0;
			i = j + 1;
			break;
		}
		case 3: /* at the start of a line */
			if (s[i] == ' ' || s[i] == '\t')
				return 0;
			r->line0 = 2;
			/* fall through */
		default: { /* inside a line: on to its end */
			const char *lf = memchr(s + i, '\n', n - i);
			if (!lf)
				return 1;
			i = (size_t)(lf - s) + 1;
			r->line0 = 3;
			break;
		}
		}
	}
	return 1;
}

static int on_chunk_header(http_parser *p)
{
	struct pk_http1_reader *r = p->data;
	r->chunk_left = p->content_length; /* the size just parsed */
	return 0;
}

/* Chunk data is the only part of a chunked body that is not framing: check
 * the framing up to it, skip it, and require CRLF once it is complete. */
static int on_body(http_parser *p, const char *at, size_t len)
{
	struct pk_http1_reader *r = p->data;
	if (!r->head.chunked) {
		if (r->sink && len)
			r->sink(r->sink_arg, at, len);
		return 0;
	}
	if (!crlf_ok(r, r->scan, (size_t)(at - r->scan)))
		return cb_fail(r, status_for_malformed(r), "invalid chunked framing");
	r->scan = at + len;
	r->chunk_left -= len < r->chunk_left ? len : r->chunk_left;
	if (r->chunk_left == 0)
		r->cr = 2;
	if (r->sink && len)
		r->sink(r->sink_arg, at, len);
	return 0;
}

/* Empty a head for the next message, keeping (and reusing) its storage.
 * The headers array is not cleared: nheaders says how much of it is valid,
 * and zeroing its 4 KiB for every message showed up in profiles. */
static void clear_head(struct pk_http1_head *h, char *mem, size_t cap)
{
	h->method = h->url = h->reason = NULL;
	h->status = h->http_major = h->http_minor = 0;
	h->nheaders = 0;
	h->upgrade = h->chunked = h->keep_alive = 0;
	h->content_length = -1;
	h->mem = mem;
	h->mem_len = 0;
	h->mem_cap = cap;
}

void pk_http1_reader_set_max_headers(struct pk_http1_reader *r, size_t n)
{
	r->max_headers = n < PK_HTTP1_MAX_HEADERS ? n : PK_HTTP1_MAX_HEADERS;
}

void pk_http1_reader_init(struct pk_http1_reader *r, enum pk_http1_kind kind, size_t max_head)
{
	/* http-parser's header limit is process-wide; keep it out of the way
	 * (max_head is enforced by feed() on raw bytes). */
	http_parser_set_max_header_size(HEAD_LIMIT_MAX + 1024);
	/* Everything but the head, which clear_head() handles. */
	memset(r, 0, offsetof(struct pk_http1_reader, head));
	memset((char *)r + offsetof(struct pk_http1_reader, head) + sizeof(r->head), 0,
	       sizeof(*r) - offsetof(struct pk_http1_reader, head) - sizeof(r->head));
	clear_head(&r->head, NULL, 0);
	r->kind = kind;
	r->max_head = max_head < HEAD_LIMIT_MAX ? max_head : HEAD_LIMIT_MAX;
	r->max_headers = PK_HTTP1_MAX_HEADERS;
	http_parser_init(PK_PARSER(r), kind == PK_HTTP1_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE);
	PK_PARSER(r)->data = r;
	r->state = ST_HEAD;
}

void pk_http1_reader_free(struct pk_http1_reader *r)
{
	free(r->head.mem);
	r->head.mem = NULL;
	r->head.mem_len = r->head.mem_cap = 0;
}

void pk_http1_reader_set_head_request(struct pk_http1_reader *r, int is_head)
{
	r->head_request = is_head != 0;
}

void pk_http1_reader_set_body_sink(struct pk_http1_reader *r,
                                   void (*fn)(void *arg, const char *data, size_t len), void *arg)
{
	r->sink = fn;
	r->sink_arg = fn ? arg : NULL;
}

/* Start over for the next message on the same connection; the head storage
 * is reused. */
static void reset_message(struct pk_http1_reader *r)
{
	struct pk_http1_head *h = &r->head;
	char *mem = h->mem;
	size_t cap = h->mem_cap;
	if (cap > HEAD_MEM_KEEP) {
		free(mem);
		mem = NULL;
		cap = 0;
	}
	clear_head(h, mem, cap);
	http_parser_init(PK_PARSER(r), r->kind == PK_HTTP1_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE);
	PK_PARSER(r)->data = r;
	r->state = ST_HEAD;
	r->last_was_value = 0;
	r->head_bytes = 0;
	r->piece = PIECE_NONE;
	r->started = 0;
	r->body_until_eof = 0;
	r->trailer_bytes = 0;
	r->cr = 0;
	r->chunk_left = 0;
	r->line0 = 0;
	r->line0_len = 0;
}

static enum pk_http1_event fail(struct pk_http1_reader *r, size_t *used)
{
	enum http_errno e = HTTP_PARSER_ERRNO(PK_PARSER(r));
	if (!r->err) {
		/* Not raised by a callback: http-parser found it. */
		r->err = http_errno_description(e);
		r->err_status =
		    e == HPE_HEADER_OVERFLOW ? status_for_too_large(r) : status_for_malformed(r);
	}
	r->state = ST_ERROR;
	*used = 0;
	return PK_HTTP1_ERROR;
}

static enum pk_http1_event fail_with(struct pk_http1_reader *r, int status, const char *why,
                                     size_t *used)
{
	r->err_status = status;
	r->err = why;
	return fail(r, used);
}

static enum pk_http1_event feed_head(struct pk_http1_reader *r, const char *data, size_t len,
                                     size_t *used)
{
	*used = 0;
	if (len == 0)
		return PK_HTTP1_NEED_MORE;
	/* Give the parser at most one byte more than the head may still take:
	 * a head that has not ended by then is too large, however the input
	 * was split. */
	size_t budget = r->max_head - r->head_bytes + 1;
	size_t n = len < budget ? len : budget;
	size_t got = http_parser_execute(PK_PARSER(r), &settings, data, n);
	enum http_errno e = HTTP_PARSER_ERRNO(PK_PARSER(r));
	if (e == HPE_PAUSED && got < n) {
		/* Paused in on_headers_complete, sitting on the final LF. */
		r->head_bytes += got + 1;
		if (r->head_bytes > r->max_head)
			return fail_with(r, status_for_too_large(r), "head too large", used);
		if (data[got] != '\n' || !crlf_ok(r, data, got + 1) || !lines_ok(r, data, got + 1))
			return fail_with(r, status_for_malformed(r), "malformed head", used);
		http_parser_pause(PK_PARSER(r), 0);
		size_t one = http_parser_execute(PK_PARSER(r), &settings, data + got, 1);
		e = HTTP_PARSER_ERRNO(PK_PARSER(r));
		if (e == HPE_PAUSED) {
			/* on_message_complete right after the head: no body. */
			http_parser_pause(PK_PARSER(r), 0);
			r->state = ST_DONE_PENDING;
		} else if (e != HPE_OK || one != 1) {
			return fail(r, used);
		} else {
			r->state = ST_BODY;
		}
		*used = got + 1;
		return PK_HTTP1_HEAD;
	}
	if (e != HPE_OK)
		return fail(r, used);
	r->head_bytes += n;
	if (r->head_bytes > r->max_head)
		return fail_with(r, status_for_too_large(r), "head too large", used);
	if (!crlf_ok(r, data, n) || !lines_ok(r, data, n))
		return fail_with(r, status_for_malformed(r), "malformed head", used);
	*used = n;
	return PK_HTTP1_NEED_MORE;
}

static enum pk_http1_event feed_body(struct pk_http1_reader *r, const char *data, size_t len,
                                     size_t *used)
{
	*used = 0;
	if (len == 0)
		return PK_HTTP1_BODY; /* the parser treats 0 bytes as EOF */
	r->scan = data;
	size_t got = http_parser_execute(PK_PARSER(r), &settings, data, len);
	enum http_errno e = HTTP_PARSER_ERRNO(PK_PARSER(r));
	const char *scan = r->scan;
	r->scan = NULL; /* points into the caller's buffer: only valid here */
	if (e != HPE_OK && e != HPE_PAUSED)
		return fail(r, used);
	if (r->head.chunked && !crlf_ok(r, scan, (size_t)(data + got - scan)))
		return fail_with(r, status_for_malformed(r), "invalid chunked framing", used);
	*used = got;
	if (e == HPE_PAUSED) {
		http_parser_pause(PK_PARSER(r), 0);
		r->state = ST_DONE;
		return PK_HTTP1_DONE;
	}
	return PK_HTTP1_BODY;
}

enum pk_http1_event pk_http1_reader_feed(struct pk_http1_reader *r, const char *data, size_t len,
                                         size_t *used)
{
	switch (r->state) {
	case ST_DONE:
		reset_message(r);
		return feed_head(r, data, len, used);
	case ST_HEAD:
		return feed_head(r, data, len, used);
	case ST_BODY:
		return feed_body(r, data, len, used);
	case ST_DONE_PENDING:
		r->state = ST_DONE;
		*used = 0;
		return PK_HTTP1_DONE;
	default:
		*used = 0;
		return PK_HTTP1_ERROR;
	}
}

int pk_http1_reader_eof(struct pk_http1_reader *r)
{
	if ((r->state == ST_BODY && r->body_until_eof) || r->state == ST_DONE_PENDING) {
		r->state = ST_DONE;
		return 1;
	}
	return 0;
}

int pk_http1_reader_in_message(const struct pk_http1_reader *r)
{
	switch (r->state) {
	case ST_HEAD:
		return r->started;
	case ST_BODY:
	case ST_DONE_PENDING:
		return 1;
	default:
		return 0;
	}
}

const struct pk_http1_head *pk_http1_reader_head(const struct pk_http1_reader *r)
{
	return &r->head;
}

const char *pk_http1_reader_error(const struct pk_http1_reader *r, int *status)
{
	if (status)
		*status = r->err_status;
	return r->err;
}

const char *pk_http1_header_get(const struct pk_http1_head *h, const char *name)
{
	for (size_t i = 0; i < h->nheaders; i++) {
		if (strcasecmp(h->headers[i].name, name) == 0)
			return h->headers[i].value;
	}
	return NULL;
}

/* 1 when the comma-separated list s holds token (case-insensitive), like
 * httpguts.HeaderValuesContainsToken for one value. */
static int list_has_token(const char *s, const char *token)
{
	size_t tlen = strlen(token);
	while (*s) {
		while (is_ows(*s) || *s == ',')
			s++;
		const char *start = s;
		while (*s && *s != ',')
			s++;
		const char *end = s;
		while (end > start && is_ows(end[-1]))
			end--;
		if ((size_t)(end - start) == tlen && tlen && strncasecmp(start, token, tlen) == 0)
			return 1;
	}
	return 0;
}

/* The fixed hop-by-hop names. Compared by length first: this runs for every
 * header of every message on both ends of the tunnel. */
static int fixed_hop_by_hop(const char *name)
{
	static const char *const fixed[] = {
	    "Connection",
	    "Proxy-Connection",
	    "Keep-Alive",
	    "Proxy-Authenticate",
	    "Proxy-Authorization",
	    "Te",
	    "Trailer",
	    "Transfer-Encoding",
	    "Upgrade",
	};
	static const size_t lens[] = {10, 16, 10, 18, 19, 2, 7, 17, 7};
	size_t n = strlen(name);
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		if (lens[i] == n && strcasecmp(name, fixed[i]) == 0)
			return 1;
	}
	return 0;
}

/* The values of a head's Connection headers. */
static size_t connection_values(const struct pk_http1_head *h, const char **out, size_t cap)
{
	size_t n = 0;
	for (size_t i = 0; h && i < h->nheaders && n < cap; i++) {
		const char *name = h->headers[i].name;
		if ((name[0] == 'C' || name[0] == 'c') && strcasecmp(name, "Connection") == 0)
			out[n++] = h->headers[i].value;
	}
	return n;
}

/* Room for every header: none may slip through by number. */
#define MAX_CONNECTION_HEADERS PK_HTTP1_MAX_HEADERS

static int hop_by_hop(const char *const *conn, size_t nconn, const char *name)
{
	if (fixed_hop_by_hop(name))
		return 1;
	for (size_t i = 0; i < nconn; i++)
		if (list_has_token(conn[i], name))
			return 1;
	return 0;
}

int pk_http1_is_hop_by_hop(const struct pk_http1_head *h, const char *name)
{
	const char *conn[MAX_CONNECTION_HEADERS];
	size_t nconn = connection_values(h, conn, MAX_CONNECTION_HEADERS);
	return hop_by_hop(conn, nconn, name);
}

/* Headers a Connection list cannot remove in the builders. Go keeps Host
 * outside the header map and writes Content-Length from the request's
 * length, so neither is ever dropped there; here the raw body that follows
 * is framed by Content-Length, so dropping it would desynchronise the next
 * hop. */
static int is_framing(const char *name)
{
	return strcasecmp(name, "Host") == 0 || strcasecmp(name, "Content-Length") == 0;
}

static void sb_header(struct pk_sb *b, const char *name, const char *value)
{
	pk_sb_str(b, name);
	pk_sb_put(b, ": ", 2);
	pk_sb_str(b, value);
	pk_sb_put(b, "\r\n", 2);
}

/* Re-announce the trailers of a chunked body: the Trailer header is
 * hop-by-hop, but Go's transport and server both write it again for the
 * trailers they forward. */
static void put_trailer_announcement(struct pk_sb *b, const struct pk_http1_head *h)
{
	int n = 0;
	for (size_t i = 0; i < h->nheaders; i++) {
		if (strcasecmp(h->headers[i].name, "Trailer") != 0 ||
		    h->headers[i].value[0] == '\0')
			continue;
		pk_sb_str(b, n++ ? ", " : "Trailer: ");
		pk_sb_str(b, h->headers[i].value);
	}
	if (n)
		pk_sb_put(b, "\r\n", 2);
}

/* The origin-form of an absolute-form request-target ("http://h/p?q" gives
 * "/p?q"), which is what Go's transport writes on the next hop. */
static const char *origin_form(const char *url)
{
	if (url[0] == '/' || strcmp(url, "*") == 0)
		return url;
	const char *sep = strstr(url, "://");
	if (!sep)
		return url;
	const char *path = sep + 3 + strcspn(sep + 3, "/?");
	return path;
}

char *pk_http1_build_request(const struct pk_http1_head *h, const char *path_prefix,
                             const char *client_ip, unsigned flags, size_t *len)
{
	return pk_http1_build_request_host(h, path_prefix, client_ip, flags, NULL, len);
}

char *pk_http1_build_request_host(const struct pk_http1_head *h, const char *path_prefix,
                                  const char *client_ip, unsigned flags, const char *default_host,
                                  size_t *len)
{
	int piko_forward = (flags & PK_HTTP1_PIKO_FORWARD) != 0;
	struct pk_sb b = {0};
	pk_sb_str(&b, h->method ? h->method : "GET");
	pk_sb_put(&b, " ", 1);
	if (path_prefix)
		pk_sb_str(&b, path_prefix);
	const char *target = origin_form(h->url ? h->url : "/");
	if (target[0] == '?' || target[0] == '\0')
		pk_sb_put(&b, "/", 1); /* "http://host?q" has an empty path */
	pk_sb_str(&b, target);
	pk_sb_str(&b, " HTTP/1.1\r\n");
	/* Go's transport writes Host first, from the URL when the request
	 * had none. */
	if (default_host && !pk_http1_header_get(h, "Host"))
		sb_header(&b, "Host", default_host);

	const char *upgrade = h->upgrade ? pk_http1_header_get(h, "Upgrade") : NULL;
	const char *conn[MAX_CONNECTION_HEADERS];
	size_t nconn = connection_values(h, conn, MAX_CONNECTION_HEADERS);
	int xff_hop = hop_by_hop(conn, nconn, "X-Forwarded-For");
	int te_done = 0;
	for (size_t i = 0; i < h->nheaders; i++) {
		const char *name = h->headers[i].name;
		const char *value = h->headers[i].value;
		if (strcasecmp(name, "Te") == 0) {
			/* Go keeps "Te: trailers" so gRPC-style trailers work. */
			if (!te_done && list_has_token(value, "trailers")) {
				sb_header(&b, name, "trailers");
				te_done = 1;
			}
			continue;
		}
		if (hop_by_hop(conn, nconn, name) && !is_framing(name))
			continue;
		/* Both are written once below, replacing what the client sent. */
		if (client_ip && strcasecmp(name, "X-Forwarded-For") == 0)
			continue;
		if (piko_forward && strcasecmp(name, "X-Piko-Forward") == 0)
			continue;
		sb_header(&b, name, value);
	}
	if (h->chunked) {
		pk_sb_str(&b, "Transfer-Encoding: chunked\r\n");
		put_trailer_announcement(&b, h);
	}
	if (upgrade) {
		pk_sb_str(&b, "Connection: Upgrade\r\n");
		sb_header(&b, "Upgrade", upgrade);
	} else if (!(flags & PK_HTTP1_KEEP_ALIVE)) {
		pk_sb_str(&b, "Connection: close\r\n");
	}
	if (client_ip) {
		/* Go: prior values joined by ", ", then the client address;
		 * a Connection-listed X-Forwarded-For was dropped before. */
		pk_sb_str(&b, "X-Forwarded-For: ");
		for (size_t i = 0; i < h->nheaders && !xff_hop; i++) {
			if (strcasecmp(h->headers[i].name, "X-Forwarded-For") != 0)
				continue;
			pk_sb_str(&b, h->headers[i].value);
			pk_sb_put(&b, ", ", 2);
		}
		pk_sb_str(&b, client_ip);
		pk_sb_put(&b, "\r\n", 2);
	}
	if (piko_forward)
		pk_sb_str(&b, "X-Piko-Forward: true\r\n");
	pk_sb_put(&b, "\r\n", 2);
	return pk_sb_finish(&b, len);
}

/* The status line Go's server writes: its own text for the code, or
 * "status code N" for a code it does not know; HTTP/1.0 to an HTTP/1.0
 * request (writeStatusLine's is11). */
size_t pk_http1_status_digits(int status, char *out)
{
	if (status < 0 || status > 999)
		return (size_t)snprintf(out, 12, "%03d", status);
	out[0] = (char)('0' + status / 100);
	out[1] = (char)('0' + status / 10 % 10);
	out[2] = (char)('0' + status % 10);
	out[3] = '\0';
	return 3;
}

static void put_status_line(struct pk_sb *b, int status, unsigned flags)
{
	char code[12];
	size_t n = pk_http1_status_digits(status, code);
	const char *text = pk_http1_status_text(status);
	pk_sb_put(b, flags & PK_HTTP1_RESP_HTTP10 ? "HTTP/1.0 " : "HTTP/1.1 ", 9);
	pk_sb_put(b, code, n);
	pk_sb_put(b, " ", 1);
	if (strcmp(text, "Unknown") == 0) {
		pk_sb_str(b, "status code ");
		char num[12];
		pk_sb_put(b, num, (size_t)snprintf(num, sizeof(num), "%d", status));
	} else {
		pk_sb_str(b, text);
	}
	pk_sb_put(b, "\r\n", 2);
}

/* The Connection header of a response that is not a 101: HTTP/1.1 says
 * close when closing; HTTP/1.0 closes by default and says keep-alive when
 * it does not (Go's server: only to a request that asked for it, which is
 * the only case the caller keeps an HTTP/1.0 connection). */
static void put_connection(struct pk_sb *b, unsigned flags)
{
	if (flags & PK_HTTP1_RESP_HTTP10) {
		if (!(flags & PK_HTTP1_RESP_CLOSE))
			pk_sb_str(b, "Connection: keep-alive\r\n");
	} else if (flags & PK_HTTP1_RESP_CLOSE) {
		pk_sb_str(b, "Connection: close\r\n");
	}
}

char *pk_http1_build_response(const struct pk_http1_head *h, unsigned flags, size_t *len)
{
	struct pk_sb b = {0};
	put_status_line(&b, h->status, flags);
	const char *conn[MAX_CONNECTION_HEADERS];
	size_t nconn = connection_values(h, conn, MAX_CONNECTION_HEADERS);
	for (size_t i = 0; i < h->nheaders; i++) {
		if (hop_by_hop(conn, nconn, h->headers[i].name) && !is_framing(h->headers[i].name))
			continue;
		sb_header(&b, h->headers[i].name, h->headers[i].value);
	}
	/* HTTP/1.0 has no chunked coding: the caller de-chunks the body and
	 * ends it with the connection (the trailers are dropped, as Go's
	 * server drops them when it cannot chunk). */
	if (h->chunked && !(flags & PK_HTTP1_RESP_HTTP10)) {
		pk_sb_str(&b, "Transfer-Encoding: chunked\r\n");
		put_trailer_announcement(&b, h);
	}
	const char *upgrade = h->status == 101 ? pk_http1_header_get(h, "Upgrade") : NULL;
	if (h->status == 101) {
		pk_sb_str(&b, "Connection: Upgrade\r\n");
		if (upgrade)
			sb_header(&b, "Upgrade", upgrade);
	} else {
		put_connection(&b, flags);
	}
	pk_sb_put(&b, "\r\n", 2);
	return pk_sb_finish(&b, len);
}

char *pk_http1_error_response(int status, const char *msg, unsigned flags, size_t *len)
{
	struct pk_sb body = {0};
	pk_sb_str(&body, "{\"error\":");
	pk_sb_json_string(&body, msg ? msg : "", 1);
	pk_sb_str(&body, "}\n");
	struct pk_sb b = {0};
	char cl[64];
	put_status_line(&b, status, flags);
	pk_sb_str(&b, "Content-Type: application/json\r\n"
	              "X-Content-Type-Options: nosniff\r\n");
	snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", body.len);
	pk_sb_str(&b, cl);
	put_connection(&b, flags);
	pk_sb_put(&b, "\r\n", 2);
	pk_sb_put(&b, body.p, body.len);
	free(body.p);
	return pk_sb_finish(&b, len);
}

size_t pk_http1_approx_request_size(const struct pk_http1_head *h)
{
	/* Piko's approximation: URL, method, proto, header names and values,
	 * host and content length. */
	size_t n = strlen(h->url) + strlen(h->method) + 8;
	for (size_t i = 0; i < h->nheaders; i++)
		n += strlen(h->headers[i].name) + strlen(h->headers[i].value);
	if (h->content_length > 0)
		n += (size_t)h->content_length;
	return n;
}

char *pk_http1_simple_response(int status, const char *content_type, const char *body,
                               size_t body_len, unsigned flags, size_t *len)
{
	struct pk_sb b = {0};
	char cl[64];
	put_status_line(&b, status, flags);
	if (content_type)
		sb_header(&b, "Content-Type", content_type);
	snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", body_len);
	pk_sb_str(&b, cl);
	put_connection(&b, flags);
	pk_sb_put(&b, "\r\n", 2);
	if (body_len)
		pk_sb_put(&b, body, body_len);
	return pk_sb_finish(&b, len);
}

char *pk_http1_unreadable_response(int status, unsigned flags, size_t *len)
{
	char body[96];
	snprintf(body, sizeof(body), "%d %s", status, pk_http1_status_text(status));
	return pk_http1_simple_response(status, "text/plain; charset=utf-8", body, strlen(body),
	                                flags | PK_HTTP1_RESP_CLOSE, len);
}

char *pk_http1_ws_bad_request(size_t *len)
{
	static const char body[] = "Bad Request\n";
	struct pk_sb b = {0};
	char cl[64];
	put_status_line(&b, 400, 0);
	sb_header(&b, "Content-Type", "text/plain; charset=utf-8");
	sb_header(&b, "Sec-Websocket-Version", "13");
	sb_header(&b, "X-Content-Type-Options", "nosniff");
	snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", sizeof(body) - 1);
	pk_sb_str(&b, cl);
	pk_sb_str(&b, "Connection: close\r\n\r\n");
	pk_sb_put(&b, body, sizeof(body) - 1);
	return pk_sb_finish(&b, len);
}

/* Go's net/http StatusText. */
static const struct {
	int code;
	const char *text;
} status_texts[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {102, "Processing"},
    {103, "Early Hints"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {207, "Multi-Status"},
    {208, "Already Reported"},
    {226, "IM Used"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {305, "Use Proxy"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Request Entity Too Large"},
    {414, "Request URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Requested Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {418, "I'm a teapot"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Entity"},
    {423, "Locked"},
    {424, "Failed Dependency"},
    {425, "Too Early"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {451, "Unavailable For Legal Reasons"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
    {506, "Variant Also Negotiates"},
    {507, "Insufficient Storage"},
    {508, "Loop Detected"},
    {510, "Not Extended"},
    {511, "Network Authentication Required"},
};

const char *pk_http1_status_text(int status)
{
	for (size_t i = 0; i < sizeof(status_texts) / sizeof(status_texts[0]); i++) {
		if (status_texts[i].code == status)
			return status_texts[i].text;
	}
	return "Unknown";
}
