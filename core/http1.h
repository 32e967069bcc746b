/*
 * HTTP/1.1 on both ends of a tunnel, on top of nodejs http-parser.
 *
 * pk_http1_reader follows one direction of a connection (requests from a
 * client, or responses from a stream). It collects the head into a
 * pk_http1_head (bounded by max_head bytes) and then only *tracks* the body:
 * the body bytes are never copied or decoded here, the caller forwards the raw
 * bytes (chunked framing included) and the reader says where the message
 * ends. That is what lets the proxy splice bodies of any size with one copy
 * per hop and keep a client connection alive across exchanges.
 *
 * The builders produce the heads Piko's Go reverse proxy would put on the
 * wire (protocol reference §1.3, §2.4): hop-by-hop stripping,
 * X-Forwarded-For, x-piko-forward, Connection: close on the tunnel hop.
 */
#ifndef PK_HTTP1_H
#define PK_HTTP1_H

#include <stddef.h>
#include <stdint.h>

struct pk_http1_header {
	const char *name; /* NUL-terminated, as received (case preserved) */
	const char *value;
};

/* Headers a reader takes: a client may send PK_HTTP1_CLIENT_MAX_HEADERS
 * (the proxy port's reader is set to that), and the hops of ours take a few
 * more, since pk_http1_build_request() may add up to PK_HTTP1_HOP_HEADERS
 * (Host, Connection, Upgrade, Transfer-Encoding, X-Forwarded-For,
 * X-Piko-Forward): a request the server accepted must not be refused by
 * the agent behind it for the headers the server added. */
#define PK_HTTP1_CLIENT_MAX_HEADERS 256
#define PK_HTTP1_HOP_HEADERS 8
#define PK_HTTP1_MAX_HEADERS (PK_HTTP1_CLIENT_MAX_HEADERS + PK_HTTP1_HOP_HEADERS)

struct pk_http1_head {
	/* request */
	const char *method; /* "GET", ... */
	const char *url;    /* request-target as received */
	/* response */
	int status;
	const char *reason;
	int http_major, http_minor;
	struct pk_http1_header headers[PK_HTTP1_MAX_HEADERS];
	size_t nheaders;
	/* framing, from the parser */
	int upgrade;            /* request carries Upgrade / response is 101 with upgrade */
	int chunked;            /* Transfer-Encoding: chunked */
	int64_t content_length; /* -1 when absent */
	int keep_alive;         /* http_should_keep_alive() at head completion */
	/* storage for every string above; owned by the reader */
	char *mem;
	size_t mem_len, mem_cap;
};

/* Case-insensitive lookup; the first value or NULL. */
const char *pk_http1_header_get(const struct pk_http1_head *h, const char *name);

enum pk_http1_kind {
	PK_HTTP1_REQUEST = 0,
	PK_HTTP1_RESPONSE = 1,
};

enum pk_http1_event {
	PK_HTTP1_NEED_MORE = 0, /* all input used, nothing completed yet */
	PK_HTTP1_HEAD,          /* a head just completed: see pk_http1_reader_head() */
	PK_HTTP1_BODY,          /* *used raw body bytes of the current message */
	PK_HTTP1_DONE,          /* the message ended; *used (maybe 0) were its last bytes */
	PK_HTTP1_ERROR,         /* malformed or over a limit; see pk_http1_reader_error() */
};

struct pk_http1_reader {
	/* An http_parser, kept opaque: http_parser.h and libwebsockets.h both
	 * define enum http_status, so no header that lws users include may
	 * include http_parser.h. http1.c checks the size at compile time. */
	uint64_t parser_storage[6];
	enum pk_http1_kind kind;
	size_t max_head;
	size_t max_headers; /* PK_HTTP1_MAX_HEADERS unless set lower */
	int state;
	int head_request; /* response reader: the request was HEAD */
	int last_was_value;
	size_t head_bytes;
	int err_status; /* HTTP status that fits the error: 400, 431, 502, 505 */
	const char *err;
	struct pk_http1_head head;
	/* private to http1.c */
	int piece;            /* which head string the parser is appending to */
	int started;          /* on_message_begin seen for the current message */
	int body_until_eof;   /* the current response body ends at EOF */
	size_t trailer_bytes; /* trailer bytes seen, bounded by max_head */
	int cr;               /* head/chunk framing: 0 nothing due, 1 LF due, 2 CRLF due */
	uint64_t chunk_left;  /* chunked body: data bytes left in the current chunk */
	const char *scan;     /* chunked body: framing checked up to here (during a feed) */
	int line0;            /* 0 before the first line, 1 in it, 2 in a header, 3 line start */
	unsigned line0_len;   /* bytes kept in line0_buf */
	char line0_buf[8];    /* request: its last 8 bytes; response: its first 8 */
	/* pk_http1_reader_set_body_sink() */
	void (*sink)(void *arg, const char *data, size_t len);
	void *sink_arg;
};

/* Initialise a reader for requests or responses; max_head caps the head size
 * (request line + headers), exceeding it is PK_HTTP1_ERROR with status 431.
 * Owner: the caller; pk_http1_reader_free() releases the head storage. */
void pk_http1_reader_init(struct pk_http1_reader *r, enum pk_http1_kind kind, size_t max_head);
void pk_http1_reader_free(struct pk_http1_reader *r);

/* Take at most n headers (n <= PK_HTTP1_MAX_HEADERS); more is PK_HTTP1_ERROR
 * with status 431 ("too many headers"). */
void pk_http1_reader_set_max_headers(struct pk_http1_reader *r, size_t n);

/* Response readers: the request being answered was HEAD (no body follows
 * whatever the headers say). Set before feeding the response; it stays set
 * until changed. */
void pk_http1_reader_set_head_request(struct pk_http1_reader *r, int is_head);

/* Also hand the body's payload to fn, as feed() parses it: the data of a
 * chunked body without its framing and trailers, or the bytes of any other
 * body. feed() reports the raw bytes all the same; fn only sees bytes feed()
 * validated up to them (a later framing error still ends in ERROR). What
 * de-chunks a response for an HTTP/1.0 client. fn must not feed this reader.
 * NULL stops it. It stays set across messages. */
void pk_http1_reader_set_body_sink(struct pk_http1_reader *r,
                                   void (*fn)(void *arg, const char *data, size_t len), void *arg);

/* Feed input. Returns the first event reached and sets *used to the input
 * bytes that belong to it; the caller calls again with the rest:
 *  - HEAD: the head is complete and the *used bytes were its last bytes (the
 *    head is kept in the reader, not returned as bytes). For an upgrade
 *    request, or a 101 response, HEAD is followed by DONE with *used = 0 and
 *    the remaining bytes are not HTTP any more.
 *  - BODY: *used raw body bytes to forward; the message is not finished.
 *  - DONE: the message ended with these *used bytes; the reader is reset and
 *    ready for the next message on the same connection.
 *  - NEED_MORE: only returned while inside a head (*used = len).
 *  - ERROR: stop; pk_http1_reader_error() says why.
 * After HEAD, call again even with no input left (len 0): a message without a
 * body then reports DONE with *used = 0 at once; in a body, len 0 gives BODY
 * with *used = 0. */
enum pk_http1_event pk_http1_reader_feed(struct pk_http1_reader *r, const char *data, size_t len,
                                         size_t *used);

/* The transport hit EOF. Returns 1 when that completes the current message (a
 * response whose body runs to the connection close), 0 otherwise (nothing in
 * progress, or a message cut short). */
int pk_http1_reader_eof(struct pk_http1_reader *r);

/* 1 while a message is in progress (some of its bytes were fed and DONE has
 * not been returned). */
int pk_http1_reader_in_message(const struct pk_http1_reader *r);

/* The head of the current message (valid from HEAD until the next feed after
 * DONE). */
const struct pk_http1_head *pk_http1_reader_head(const struct pk_http1_reader *r);

/* Why the last ERROR happened, and the status to answer with. */
const char *pk_http1_reader_error(const struct pk_http1_reader *r, int *status);

/* 1 when the header is hop-by-hop for a reverse proxy: Connection,
 * Proxy-Connection, Keep-Alive, Proxy-Authenticate, Proxy-Authorization, Te,
 * Trailer, Transfer-Encoding, Upgrade, or any name listed in the Connection
 * header of h. */
int pk_http1_is_hop_by_hop(const struct pk_http1_head *h, const char *name);

/* Build the request head sent over a tunnel stream (or on to a local service):
 *   <method> <path_prefix + url> HTTP/1.1
 *   every header except hop-by-hop ones (TE: trailers is kept), in order;
 *   Transfer-Encoding: chunked when the body is chunked (the raw chunked body
 *     follows unchanged);
 *   Connection: Upgrade and Upgrade: <value> for upgrade requests, otherwise
 *     Connection: close (unless flags has PK_HTTP1_KEEP_ALIVE);
 *   X-Forwarded-For: <existing values joined by ", ">, <client_ip> (or just
 *     client_ip), when client_ip is not NULL;
 *   X-Piko-Forward: true when flags has PK_HTTP1_PIKO_FORWARD.
 * path_prefix may be NULL. Returns a new NUL-terminated string owned by the
 * caller; *len gets its length. */
char *pk_http1_build_request(const struct pk_http1_head *h, const char *path_prefix,
                             const char *client_ip, unsigned flags, size_t *len);

/* The same, with "Host: <default_host>" after the request line when h has
 * no Host (an HTTP/1.0 request may have none; the next hop speaks HTTP/1.1,
 * which requires one). default_host may be NULL. */
char *pk_http1_build_request_host(const struct pk_http1_head *h, const char *path_prefix,
                                  const char *client_ip, unsigned flags, const char *default_host,
                                  size_t *len);

/* Flags of pk_http1_build_request(). */
#define PK_HTTP1_PIKO_FORWARD 0x1 /* add X-Piko-Forward: true */
#define PK_HTTP1_KEEP_ALIVE                                                                        \
	0x2 /* no Connection: close (the agent's kept-alive service connections) */

/* Flags of the response builders below (0 or 1 as "close" is also right).
 * PK_HTTP1_RESP_HTTP10: the request was HTTP/1.0, answered as Go's server
 * answers one: status line HTTP/1.0, never Transfer-Encoding: chunked nor a
 * Trailer announcement (the caller sends the body de-chunked and closes),
 * no Connection: close (closing is HTTP/1.0's default) and Connection:
 * keep-alive when the connection stays open. */
#define PK_HTTP1_RESP_CLOSE 0x1 /* the connection ends after this response */
#define PK_HTTP1_RESP_HTTP10 0x2

/* Build the response head for the client side: status line as HTTP/1.1,
 * headers minus hop-by-hop ones, then Transfer-Encoding: chunked when
 * chunked, Connection: Upgrade + Upgrade for a 101, Connection: close when
 * flags has PK_HTTP1_RESP_CLOSE. Owned by the caller. */
char *pk_http1_build_response(const struct pk_http1_head *h, unsigned flags, size_t *len);

/* A JSON error as Piko writes them from its proxy:
 *   HTTP/1.1 <status> <text>, Content-Type: application/json,
 *   X-Content-Type-Options: nosniff, Content-Length, [Connection: close],
 *   body {"error":"<msg>"} followed by "\n".
 * msg is JSON-escaped. flags: PK_HTTP1_RESP_*. Owned by the caller. */
char *pk_http1_error_response(int status, const char *msg, unsigned flags, size_t *len);

/* Piko's approximate request size for its request_size_bytes metrics: URL,
 * method, protocol, header names and values, and the content length. */
size_t pk_http1_approx_request_size(const struct pk_http1_head *h);

/* A plain response with a body of the given content type (admin port).
 * flags: PK_HTTP1_RESP_*. */
char *pk_http1_simple_response(int status, const char *content_type, const char *body,
                               size_t body_len, unsigned flags, size_t *len);

/* The 404 of Piko's router (gin) on the upstream and admin ports: no
 * charset, no trailing newline. */
#define PK_HTTP1_ROUTER_404_TYPE "text/plain"
#define PK_HTTP1_ROUTER_404_BODY "404 page not found"

/* What Go's server answers a request it cannot read (the status of
 * pk_http1_reader_error: 400, 431, ...): "<code> <text>" as text/plain, and
 * the connection closes. flags: PK_HTTP1_RESP_*. Owned by the caller. */
char *pk_http1_unreadable_response(int status, unsigned flags, size_t *len);

/* What gorilla/websocket answers a request on a WebSocket route that is not an
 * upgrade: 400 with Go's http.Error body and Sec-Websocket-Version: 13. The
 * connection is closed after it. Owned by the caller. */
char *pk_http1_ws_bad_request(size_t *len);

/* "OK", "Not Found", ... ("Unknown" for codes it does not know). */
const char *pk_http1_status_text(int status);
/* A status code's decimal text into out (room for 12 bytes), as Go's
 * "%03d"; returns its length. Without snprintf: this runs for every
 * response. */
size_t pk_http1_status_digits(int status, char *out);

#endif
