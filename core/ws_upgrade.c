/*
 * Both sides of a WebSocket upgrade (see ws_upgrade.h).
 */
#include "ws_upgrade.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "buf.h"
#include "ws.h"

/* The longest answer head we read. */
#define HEAD_MAX (64 * 1024)

/* The body's payload, de-chunked by the reader: what the error is read from. */
static void body_sink(void *arg, const char *data, size_t len)
{
	struct pk_ws_upgrade *u = arg;
	size_t room = PK_WS_UPGRADE_BODY_MAX - u->body_len;
	size_t k = len < room ? len : room;
	memcpy(u->body + u->body_len, data, k);
	u->body_len += k;
	u->body[u->body_len] = '\0'; /* a string for the JSON parser */
}

char *pk_ws_upgrade_start(struct pk_ws_upgrade *u, const char *host, int port, const char *path,
                          const char *headers)
{
	memset(u, 0, sizeof(*u));
	char key[25];
	pk_ws_client_key(key);
	pk_ws_accept_key(key, u->accept);
	pk_http1_reader_init(&u->resp, PK_HTTP1_RESPONSE, HEAD_MAX);
	pk_http1_reader_set_body_sink(&u->resp, body_sink, u);
	int v6 = strchr(host, ':') != NULL;
	if (!headers)
		headers = "";
	size_t cap = strlen(path) + strlen(host) + strlen(headers) + 256;
	/* Owner: the caller. */
	char *req = pk_xmalloc(cap);
	snprintf(req, cap,
	         "GET %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nUpgrade: websocket\r\n"
	         "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
	         "Sec-WebSocket-Version: 13\r\n%s\r\n",
	         path, v6 ? "[" : "", host, v6 ? "]" : "", port, key, headers);
	return req;
}

enum pk_ws_upgrade_result pk_ws_upgrade_feed(struct pk_ws_upgrade *u, const uint8_t *data,
                                             size_t len, size_t *used)
{
	size_t total = 0;
	int again = 0;
	/* After a head, feed again even with no bytes left: a message without
	 * a body completes then. */
	while (total < len || again) {
		size_t n = 0;
		again = 0;
		enum pk_http1_event ev =
		    pk_http1_reader_feed(&u->resp, (const char *)data + total, len - total, &n);
		if (ev == PK_HTTP1_ERROR) {
			*used = total;
			return PK_WS_UPGRADE_BAD;
		}
		if (ev == PK_HTTP1_HEAD) {
			const struct pk_http1_head *h = pk_http1_reader_head(&u->resp);
			u->status = h->status;
			total += n;
			if (h->status == 101) {
				const char *acc = pk_http1_header_get(h, "Sec-WebSocket-Accept");
				*used = total;
				return acc && !strcmp(acc, u->accept) ? PK_WS_UPGRADE_OPEN
				                                      : PK_WS_UPGRADE_BAD;
			}
			again = 1;
			continue;
		}
		/* BODY, DONE or NEED_MORE: a body's payload went to body_sink. */
		total += n;
		if (ev == PK_HTTP1_DONE) {
			*used = total;
			return PK_WS_UPGRADE_REFUSED;
		}
		if (n == 0)
			break; /* no progress: wait for more */
	}
	*used = total;
	return PK_WS_UPGRADE_MORE;
}

enum pk_ws_upgrade_result pk_ws_upgrade_eof(struct pk_ws_upgrade *u)
{
	if (u->status && u->status != 101 && pk_http1_reader_eof(&u->resp))
		return PK_WS_UPGRADE_REFUSED;
	return PK_WS_UPGRADE_BAD;
}

void pk_ws_upgrade_error(const struct pk_ws_upgrade *u, char *out, size_t cap)
{
	out[0] = '\0';
	struct json_object *root = json_tokener_parse(u->body);
	struct json_object *err;
	if (root && json_object_object_get_ex(root, "error", &err) &&
	    json_object_is_type(err, json_type_string))
		snprintf(out, cap, "%s", json_object_get_string(err));
	json_object_put(root);
}

void pk_ws_upgrade_free(struct pk_ws_upgrade *u)
{
	pk_http1_reader_free(&u->resp);
}

/* ---- the server's side ------------------------------------------------------ */

/* 1 if the comma-separated header value lists token (case-insensitive). */
static int has_token(const char *v, const char *token)
{
	size_t tl = strlen(token);
	while (v && *v) {
		while (*v == ' ' || *v == '\t' || *v == ',')
			v++;
		size_t n = strcspn(v, ",");
		size_t m = n;
		while (m > 0 && (v[m - 1] == ' ' || v[m - 1] == '\t'))
			m--;
		if (m == tl && strncasecmp(v, token, tl) == 0)
			return 1;
		v += n;
	}
	return 0;
}

static int bad_request(const char *why, char **resp, size_t *len)
{
	*resp =
	    pk_http1_simple_response(400, "text/plain; charset=utf-8", why, strlen(why), 1, len);
	return -1;
}

int pk_ws_upgrade_answer(const struct pk_http1_head *h, char **resp, size_t *len)
{
	const char *upgrade = pk_http1_header_get(h, "Upgrade");
	const char *connection = pk_http1_header_get(h, "Connection");
	const char *version = pk_http1_header_get(h, "Sec-WebSocket-Version");
	const char *key = pk_http1_header_get(h, "Sec-WebSocket-Key");
	char accept[29];
	/* The same checks, and texts, as gorilla/websocket's Upgrade. */
	if (!connection || !has_token(connection, "upgrade"))
		return bad_request("websocket: the client is not using the websocket protocol: "
		                   "'upgrade' token not found in 'Connection' header\n",
		                   resp, len);
	if (!upgrade || !has_token(upgrade, "websocket"))
		return bad_request("websocket: the client is not using the websocket protocol: "
		                   "'websocket' token not found in 'Upgrade' header\n",
		                   resp, len);
	if (!version || strcmp(version, "13") != 0)
		return bad_request("websocket: unsupported version: 13 not found in "
		                   "'Sec-Websocket-Version' header\n",
		                   resp, len);
	if (!key || pk_ws_accept_key(key, accept) < 0)
		return bad_request("websocket: not a websocket handshake: 'Sec-WebSocket-Key' "
		                   "header must be Base64 encoded value of 16-byte in length\n",
		                   resp, len);
	char buf[256];
	int n = snprintf(buf, sizeof(buf),
	                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	                 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
	                 accept);
	*resp = pk_xstrndup(buf, (size_t)n);
	*len = (size_t)n;
	return 0;
}
