/*
 * Why the server refused a listener: Piko reports `<status>: <message>`,
 * the message being the `error` field of the server's JSON body ("401:
 * invalid token"), but lws 4.1's WebSocket client fails a non-101 handshake
 * without reading the body. So, as the agent does, we ask once more with a
 * plain GET carrying the same headers (the server's checks run before the
 * upgrade, so it answers with the same error), over a pk_sock, and read the
 * body ourselves.
 *
 * Ownership: the probe is the listener's (l->probe) until its socket
 * closes; it counts as one of the listener's streams, so the listener is
 * not freed before then.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "buf.h"
#include "client_internal.h"
#include "sock.h"
#include "tls.h"

#define PROBE_MAX 8192

struct pkc_probe {
	unsigned status; /* of the refused upgrade */
	char buf[PROBE_MAX + 1];
	size_t len;
	char *request;
	void (*done)(void *user, const char *msg);
	void *user;
	SSL_CTX *tls;
};

static void probe_connected(struct pk_sock *s)
{
	struct pkc_probe *p = pk_sock_user(s);
	pk_sock_write(s, (const uint8_t *)p->request, strlen(p->request));
}

static void probe_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	struct pkc_probe *p = pk_sock_user(s);
	size_t n = len < PROBE_MAX - p->len ? len : PROBE_MAX - p->len;
	memcpy(p->buf + p->len, data, n);
	p->len += n;
}

static void probe_eof(struct pk_sock *s)
{
	pk_sock_close(s, 0);
}

static void probe_close(struct pk_sock *s, int reset, const char *why)
{
	struct pkc_probe *p = pk_sock_user(s);
	(void)reset, (void)why;
	p->buf[p->len] = '\0';
	const char *reason = NULL;
	struct json_object *root = NULL;
	unsigned status = 0;
	const char *body = strstr(p->buf, "\r\n\r\n");
	if (sscanf(p->buf, "HTTP/1.%*d %u", &status) == 1 && status == p->status && body) {
		root = json_tokener_parse(body + 4);
		struct json_object *err;
		if (root && json_object_object_get_ex(root, "error", &err) &&
		    json_object_is_type(err, json_type_string))
			reason = json_object_get_string(err);
	}
	char msg[300];
	if (reason)
		snprintf(msg, sizeof(msg), "connect: %u: %s", p->status, reason);
	else
		snprintf(msg, sizeof(msg), "connect: %u", p->status);
	json_object_put(root);
	p->done(p->user, msg);
	SSL_CTX_free(p->tls);
	free(p->request);
	free(p);
}

static const struct pk_sock_ops probe_ops = {
    .on_connected = probe_connected,
    .on_data = probe_data,
    .on_eof = probe_eof,
    .on_close = probe_close,
};

int pkc_probe_start(const struct pkc_probe_target *t, unsigned status,
                    void (*done)(void *user, const char *msg), void *user)
{
	/* Owner: itself, freed in probe_close. */
	struct pkc_probe *p = pk_xcalloc(1, sizeof(*p));
	p->status = status;
	p->done = done;
	p->user = user;
	char req[8192];
	int n = snprintf(req, sizeof(req),
	                 "GET %s HTTP/1.1\r\nHost: %s\r\n%s%s%s%s%s%sConnection: close\r\n\r\n",
	                 t->path, t->hosthdr, t->token ? "Authorization: Bearer " : "",
	                 t->token ? t->token : "", t->token ? "\r\n" : "",
	                 t->tenant ? "x-piko-tenant-id: " : "", t->tenant ? t->tenant : "",
	                 t->tenant ? "\r\n" : "");
	if (n <= 0 || (size_t)n >= sizeof(req)) {
		free(p);
		return -1;
	}
	p->request = pk_xstrdup(req);
	if (t->tls) {
		struct pk_tls_client_config c = {
		    .cert = (char *)t->cert,
		    .key = (char *)t->key,
		    .root_cas = (char *)t->ca,
		    .insecure_skip_verify = t->insecure,
		};
		char e[256];
		if (!(p->tls = pk_tls_client_ctx(&c, e, sizeof(e)))) {
			free(p->request);
			free(p);
			return -1;
		}
	}
	struct pk_sock *s = pk_sock_connect(t->host, t->port, 10000, &probe_ops, p, 64 * 1024);
	if (!s) {
		SSL_CTX_free(p->tls);
		free(p->request);
		free(p);
		return -1;
	}
	if (p->tls)
		pk_sock_use_tls(s, p->tls, t->host, !t->insecure);
	return 0;
}
