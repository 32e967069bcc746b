/*
 * piko_dial: a connection to an endpoint through the server's proxy port,
 * TCP over WebSocket (protocol reference §1.4; the Go SDK's Dialer), relayed
 * by core/tcpws.c between one end of a socketpair and the WebSocket; the
 * program gets the other end once the server upgraded.
 *
 * Ownership: a struct dial is shared by the program's thread (until
 * piko_dial returns) and the relay (until its on_free); the last of the two
 * frees it. The relay holds a runtime reference, so a dialled connection
 * keeps the loop thread alive after every listener is gone; once it ends
 * the thread idles until piko_client_cleanup() or the next object's end.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "client_internal.h"
#include "tcpws.h"
#include "tls.h"

enum { D_PENDING = 0, D_OPEN, D_FAILED };

struct dial {
	struct pk_tcpws_target t; /* points into the fields below */
	char host[256];
	char base[1024];
	char *endpoint, *token;
	SSL_CTX *tls; /* owner: this dial (the relay's sockets hold references) */
	int fd;       /* the relay's end, until handed to it */

	pthread_mutex_t mu;
	pthread_cond_t cv;
	int state;       /* mu */
	char why[256];   /* mu: D_FAILED */
	int refs;        /* mu: the program's thread and the relay */
	int relay_start; /* loop: pk_tcpws_start's result */
};

static void dial_unref(struct dial *d)
{
	pthread_mutex_lock(&d->mu);
	int last = --d->refs == 0;
	pthread_mutex_unlock(&d->mu);
	if (!last)
		return;
	SSL_CTX_free(d->tls);
	free(d->endpoint);
	free(d->token);
	pthread_mutex_destroy(&d->mu);
	pthread_cond_destroy(&d->cv);
	free(d);
}

static void set_state(struct dial *d, int st, const char *why)
{
	pthread_mutex_lock(&d->mu);
	if (d->state == D_PENDING) {
		d->state = st;
		if (why)
			snprintf(d->why, sizeof(d->why), "%s", why);
	}
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

static void on_open(void *user)
{
	set_state(user, D_OPEN, NULL);
}

static void on_fail(void *user, const char *why)
{
	set_state(user, D_FAILED, why);
}

static void on_free(void *user)
{
	struct dial *d = user;
	set_state(d, D_FAILED, "connection closed");
	dial_unref(d);
	pkc_rt_put_from_loop();
}

static const struct pk_tcpws_hooks hooks = {on_open, on_fail, on_free};

static void start_on_loop(void *arg)
{
	struct dial *d = arg;
	d->relay_start = pk_tcpws_start(d->fd, &d->t, &hooks, d);
}

int piko_dial(const struct piko_options *opts, const char *endpoint, struct piko_error *err)
{
	struct piko_options def;
	if (!opts) {
		piko_options_init(&def);
		opts = &def;
	}
	if (!endpoint || !*endpoint || strchr(endpoint, '/'))
		return pkc_error(err, PIKO_EINVAL, "invalid endpoint id: %s",
		                 endpoint ? endpoint : ""),
		       -1;
	char url[2048];
	const char *url_in = opts->proxy_url ? opts->proxy_url : "http://localhost:8000";
	snprintf(url, sizeof(url), "%s", url_in);
	const char *prot, *ads, *path;
	int port;
	if (lws_parse_uri(url, &prot, &ads, &port, &path) || !*ads ||
	    (strcmp(prot, "http") && strcmp(prot, "https") && strcmp(prot, "ws") &&
	     strcmp(prot, "wss")))
		return pkc_error(err, PIKO_EINVAL, "invalid url: %s", url_in), -1;
	/* Owner: shared, see dial_unref(). */
	struct dial *d = pk_xcalloc(1, sizeof(*d));
	pthread_mutex_init(&d->mu, NULL);
	pkc_cond_init(&d->cv);
	d->refs = 1;
	snprintf(d->host, sizeof(d->host), "%s", ads);
	/* lws gives the path without its '/', or "/" when there is none. */
	snprintf(d->base, sizeof(d->base), "%s%s", strcmp(path, "/") && *path ? "/" : "",
	         strcmp(path, "/") ? path : "");
	d->endpoint = pk_xstrdup(endpoint);
	d->token = opts->token && *opts->token ? pk_xstrdup(opts->token) : NULL;
	int tls = !strcmp(prot, "https") || !strcmp(prot, "wss");
	if (tls) {
		struct pk_tls_client_config c = {
		    .cert = (char *)opts->tls_cert_file,
		    .key = (char *)opts->tls_key_file,
		    .root_cas = (char *)opts->tls_ca_file,
		    .insecure_skip_verify = opts->tls_insecure_skip_verify,
		};
		char e[256];
		if (!(d->tls = pk_tls_client_ctx(&c, e, sizeof(e)))) {
			pkc_error(err, PIKO_EINVAL, "%s", e);
			dial_unref(d);
			return -1;
		}
	}
	d->t.host = d->host;
	d->t.port = port;
	d->t.base_path = d->base;
	d->t.endpoint = d->endpoint;
	d->t.token = d->token;
	d->t.tls = d->tls;
	d->t.verify_name = !opts->tls_insecure_skip_verify;
	d->t.timeout_ms = opts->connect_timeout_ms;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
		pkc_error(err, PIKO_ESYSTEM, "socketpair: %s", strerror(errno));
		dial_unref(d);
		return -1;
	}
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	d->fd = sv[0];
	if (pkc_rt_get(err) < 0) {
		close(sv[0]);
		close(sv[1]);
		dial_unref(d);
		return -1;
	}
	d->refs = 2; /* the relay's, dropped in on_free */
	pkc_rt_call(start_on_loop, d);
	if (d->relay_start < 0) {
		/* The relay never started: no on_free will come. */
		d->refs = 1;
		close(sv[1]);
		dial_unref(d);
		pkc_rt_put();
		return pkc_error(err, PIKO_ESYSTEM, "dial: cannot take another descriptor"), -1;
	}
	struct timespec ts;
	if (opts->connect_timeout_ms)
		pkc_deadline(&ts, (int)opts->connect_timeout_ms);
	pthread_mutex_lock(&d->mu);
	int timed_out = 0;
	while (d->state == D_PENDING && !timed_out) {
		if (!opts->connect_timeout_ms)
			pthread_cond_wait(&d->cv, &d->mu);
		else
			timed_out = pthread_cond_timedwait(&d->cv, &d->mu, &ts) == ETIMEDOUT;
	}
	int st = d->state;
	char why[256];
	snprintf(why, sizeof(why), "%s", d->why);
	pthread_mutex_unlock(&d->mu);
	dial_unref(d);
	if (st == D_OPEN)
		return sv[1];
	/* Closing our end ends the relay (a pending one at its connect
	 * timeout at the latest). */
	close(sv[1]);
	if (st == D_PENDING)
		return pkc_error(err, PIKO_ETIMEDOUT, "dial: timed out"), -1;
	/* Piko's classification: a 4xx is the server saying no for good. */
	int code = why[0] == '4' ? PIKO_EREFUSED : PIKO_ECONNECT;
	return pkc_error(err, code, "dial: %s", why), -1;
}
