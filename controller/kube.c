/*
 * HTTP client to the kube-apiserver on one libcurl multi handle. See kube.h.
 */
#include "kube.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "log.h"
#include "strbuf.h"

/* Requests in flight at once: the informers' watches and lists, one
 * reconcile's applies, lease calls, pushes to nodes. Past this a caller gets
 * NULL and retries later (backpressure instead of an unbounded queue). */
#define PK_KUBE_MAX_REQS 512
/* A buffered response (a LIST page, an error) larger than this is cut off
 * and reported as an error: pages are requested with limit=500. */
#define PK_KUBE_MAX_BODY (64u << 20)
#define PK_KUBE_REQUEST_TIMEOUT_MS 30000L
#define PK_KUBE_CONNECT_TIMEOUT_MS 10000L
/* A watch that delivers no byte for this long is considered stalled: the
 * apiserver sends a bookmark about once a minute to every watch that asked
 * for them. */
#define PK_KUBE_WATCH_STALL_S 150L

struct pk_kube_req {
	struct pk_kube *k;
	CURL *easy;
	struct curl_slist *headers;
	struct pk_sb body; /* owned: the buffered response */
	bool truncated;
	bool watch;
	bool aborted;
	bool apiserver;
	pk_kube_data_fn data;
	pk_kube_done_fn done;
	void *ud;
	char method[8];
	struct pk_kube_req *next, *prev; /* the client's list of live requests */
};

struct pk_kube {
	struct pk_kube_config *cfg; /* borrowed */
	CURLM *multi;
	struct pk_kube_req *reqs; /* owned, each until done or cancel */
	size_t nreqs;
	bool reread_token; /* a 401 came back: re-read the token file now */
	bool told_version; /* the HTTP version in use was logged */
	struct pk_metric *m_requests;
};

static int curl_inited;

struct pk_kube *pk_kube_new(struct pk_kube_config *cfg, struct pk_metrics *metrics, char *err,
                            size_t errlen)
{
	if (!curl_inited) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			snprintf(err, errlen, "curl_global_init failed");
			return NULL;
		}
		curl_inited = 1;
	}
	curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
	if (!(v->features & CURL_VERSION_HTTP2))
		pk_log(PK_LOG_WARN, "kube",
		       "libcurl has no HTTP/2: each watch gets its own connection", NULL);
	if (cfg->tls_server_name)
		pk_log(PK_LOG_WARN, "kube",
		       "kubeconfig tls-server-name is not supported by this libcurl; verifying the "
		       "server's own name",
		       "tls-server-name", cfg->tls_server_name, NULL);
	struct pk_kube *k = calloc(1, sizeof(*k)); /* owner: the caller (pk_kube_free) */
	if (!k) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	k->cfg = cfg;
	k->multi = curl_multi_init();
	if (!k->multi) {
		free(k);
		snprintf(err, errlen, "curl_multi_init failed");
		return NULL;
	}
	curl_multi_setopt(k->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	if (metrics) {
		static const char *const labels[] = {"code", "method"};
		k->m_requests =
		    pk_metrics_register(metrics, PK_METRIC_COUNTER, "rest_client_requests_total",
		                        "Number of HTTP requests, partitioned by status "
		                        "code and method.",
		                        labels, 2, NULL, 0);
	}
	return k;
}

static void req_free(struct pk_kube_req *r)
{
	struct pk_kube *k = r->k;
	if (r->prev)
		r->prev->next = r->next;
	else
		k->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	k->nreqs--;
	curl_multi_remove_handle(k->multi, r->easy);
	curl_easy_cleanup(r->easy);
	curl_slist_free_all(r->headers);
	free(pk_sb_finish(&r->body, NULL));
	free(r);
}

void pk_kube_free(struct pk_kube *k)
{
	if (!k)
		return;
	/* The next one read before the free: req_free() unlinks through r->k,
	 * which the analyzer cannot tell is k (it reported a freed request as
	 * still at the head). */
	for (struct pk_kube_req *r = k->reqs, *next; r; r = next) {
		next = r->next;
		req_free(r);
	}
	curl_multi_cleanup(k->multi);
	free(k);
}

void pk_kube_cancel(struct pk_kube_req *r)
{
	if (r)
		req_free(r);
}

size_t pk_kube_inflight(const struct pk_kube *k)
{
	return k->nreqs;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct pk_kube_req *r = ud;
	size_t n = size * nmemb;
	if (r->watch) {
		long code = 0;
		curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
		if (code == 200) {
			/* This runs inside libcurl: data must not start or
			 * cancel requests (curl_multi_add_handle and
			 * remove_handle refuse to run from a callback, so a
			 * start would fail and a cancel would free a handle the
			 * multi still holds). The informers only update their
			 * cache and queue keys here. */
			if (r->data(r->ud, ptr, n) != 0) {
				r->aborted = true;
				return 0; /* CURLE_WRITE_ERROR ends the transfer */
			}
			return n;
		}
	}
	if (r->body.len + n > PK_KUBE_MAX_BODY) {
		r->truncated = true;
		return 0;
	}
	pk_sb_put(&r->body, ptr, n);
	return n;
}

static void set_blob(CURL *e, CURLoption opt, const char *p, size_t len)
{
	/* CURL_BLOB_COPY: libcurl keeps its own copy, so a config reload cannot
	 * leave it pointing at freed memory. */
	struct curl_blob b = {.data = (void *)p, .len = len, .flags = CURL_BLOB_COPY};
	curl_easy_setopt(e, opt, &b);
}

static struct pk_kube_req *start(struct pk_kube *k, const char *method, const char *url,
                                 bool apiserver, const char *content_type, const char *body,
                                 size_t body_len, const char *bearer, long timeout_ms,
                                 pk_kube_done_fn done, void *ud)
{
	if (k->nreqs >= PK_KUBE_MAX_REQS)
		return NULL;
	struct pk_kube_req *r = calloc(1, sizeof(*r)); /* owner: k's list until req_free */
	if (!r)
		return NULL;
	r->k = k;
	r->apiserver = apiserver;
	r->done = done;
	r->ud = ud;
	snprintf(r->method, sizeof(r->method), "%s", method);
	r->easy = curl_easy_init();
	if (!r->easy) {
		free(r);
		return NULL;
	}
	CURL *e = r->easy;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, PK_KUBE_CONNECT_TIMEOUT_MS);
	if (timeout_ms > 0)
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "piko-controller/" PK_VERSION);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	if (strcmp(method, "GET") != 0)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)body_len);
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
	}
	r->headers = curl_slist_append(r->headers, "Accept: application/json");
	if (content_type) {
		char h[128];
		snprintf(h, sizeof(h), "Content-Type: %s", content_type);
		r->headers = curl_slist_append(r->headers, h);
	}
	if (apiserver) {
		struct pk_kube_config *c = k->cfg;
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
		/* Wait for the shared HTTP/2 connection rather than opening another. */
		curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
		if (c->ca_pem)
			set_blob(e, CURLOPT_CAINFO_BLOB, c->ca_pem, c->ca_pem_len);
		if (c->cert_pem && c->key_pem) {
			curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
			set_blob(e, CURLOPT_SSLCERT_BLOB, c->cert_pem, c->cert_pem_len);
			curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
			set_blob(e, CURLOPT_SSLKEY_BLOB, c->key_pem, c->key_pem_len);
		}
		if (c->insecure_skip_verify) {
			curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
			curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
		}
		bearer = pk_kube_config_token(c, pk_now_ms(), k->reread_token);
		k->reread_token = false;
	}
	if (bearer) {
		struct pk_sb h = {0};
		pk_sb_printf(&h, "Authorization: Bearer %s", bearer);
		char *s = pk_sb_finish(&h, NULL);
		r->headers = curl_slist_append(r->headers, s);
		free(s);
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);

	r->next = k->reqs;
	if (k->reqs)
		k->reqs->prev = r;
	k->reqs = r;
	k->nreqs++;
	if (curl_multi_add_handle(k->multi, e) != CURLM_OK) {
		req_free(r);
		return NULL;
	}
	return r;
}

static char *api_url(struct pk_kube *k, const char *path)
{
	struct pk_sb u = {0};
	pk_sb_printf(&u, "%s%s", k->cfg->server, path);
	return pk_sb_finish(&u, NULL);
}

struct pk_kube_req *pk_kube_request(struct pk_kube *k, const char *method, const char *path,
                                    const char *content_type, const char *body, size_t body_len,
                                    pk_kube_done_fn done, void *ud)
{
	char *url = api_url(k, path);
	struct pk_kube_req *r = start(k, method, url, true, content_type, body, body_len, NULL,
	                              PK_KUBE_REQUEST_TIMEOUT_MS, done, ud);
	free(url);
	return r;
}

struct pk_kube_req *pk_kube_request_url(struct pk_kube *k, const char *method, const char *url,
                                        const char *content_type, const char *body, size_t body_len,
                                        const char *bearer, uint64_t timeout_ms,
                                        pk_kube_done_fn done, void *ud)
{
	return start(k, method, url, false, content_type, body, body_len, bearer, (long)timeout_ms,
	             done, ud);
}

struct pk_kube_req *pk_kube_watch(struct pk_kube *k, const char *path, pk_kube_data_fn data,
                                  pk_kube_done_fn done, void *ud)
{
	char *url = api_url(k, path);
	struct pk_kube_req *r = start(k, "GET", url, true, NULL, NULL, 0, NULL, 0, done, ud);
	free(url);
	if (r) {
		r->watch = true;
		r->data = data;
		curl_easy_setopt(r->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(r->easy, CURLOPT_LOW_SPEED_TIME, PK_KUBE_WATCH_STALL_S);
	}
	return r;
}

static void count(struct pk_kube *k, const char *method, long status)
{
	if (!k->m_requests)
		return;
	char code[24];
	if (status > 0)
		snprintf(code, sizeof(code), "%ld", status);
	else
		snprintf(code, sizeof(code), "<error>");
	const char *lv[] = {code, method};
	pk_metric_add(k->m_requests, lv, 1);
}

static void finish(struct pk_kube *k, CURL *easy, CURLcode rc)
{
	struct pk_kube_req *r = NULL;
	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
	long status = 0;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	char err[256] = "";
	if (r->aborted)
		snprintf(err, sizeof(err), "aborted");
	else if (r->truncated)
		snprintf(err, sizeof(err), "response larger than %u bytes", PK_KUBE_MAX_BODY);
	else if (rc != CURLE_OK)
		snprintf(err, sizeof(err), "%s", curl_easy_strerror(rc));
	if (err[0] && !r->watch)
		status = 0; /* a cut-off response is no response */
	if (status == 401)
		k->reread_token = true; /* the token may have rotated under us */
	if (r->apiserver && status > 0 && !k->told_version) {
		/* Once: whether the watches share one HTTP/2 connection or each
		 * needs its own (an apiserver or proxy without h2). */
		long v = 0;
		curl_easy_getinfo(easy, CURLINFO_HTTP_VERSION, &v);
		k->told_version = true;
		pk_log(PK_LOG_INFO, "kube", "apiserver reached", "server", k->cfg->server,
		       "http-version", v == CURL_HTTP_VERSION_2_0 ? "2" : "1.1", NULL);
	}
	/* The apiserver's requests only, as client-go counts them: the pushes
	 * to nodes have piko_controller_peer_pushes_total, and counted here
	 * they would read as apiserver PUTs. */
	if (r->apiserver)
		count(k, r->method, status);
	size_t len = r->body.len;
	char *body = pk_sb_finish(&r->body, NULL); /* owner: this function */
	r->body = (struct pk_sb){0};
	/* Unlink first: the callback may start new requests (or cancel others),
	 * never touch this one. */
	pk_kube_done_fn done = r->done;
	void *ud = r->ud;
	req_free(r);
	done(ud, status, body, len, err[0] ? err : NULL);
	free(body);
}

int pk_kube_poll(struct pk_kube *k, const int *fds, const short *events, short *revents,
                 size_t nfds, int timeout_ms)
{
	struct curl_waitfd w[16];
	if (nfds > 16)
		nfds = 16;
	for (size_t i = 0; i < nfds; i++) {
		w[i].fd = fds[i];
		w[i].events = events[i];
		w[i].revents = 0;
	}
	if (curl_multi_poll(k->multi, w, (unsigned)nfds, timeout_ms, NULL) != CURLM_OK)
		return -1;
	for (size_t i = 0; i < nfds; i++)
		revents[i] = w[i].revents;
	int running = 0;
	if (curl_multi_perform(k->multi, &running) != CURLM_OK)
		return -1;
	/* One message at a time: a callback may cancel another request whose
	 * completion is also queued, and curl_multi_remove_handle drops that
	 * handle's pending message, so nothing stale is ever read. */
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(k->multi, &left))) {
		if (m->msg == CURLMSG_DONE)
			finish(k, m->easy_handle, m->data.result);
	}
	return 0;
}

void pk_kube_escape(const char *s, char *buf, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (; *s && o + 4 < len; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			buf[o++] = (char)c;
		} else {
			buf[o++] = '%';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		}
	}
	if (len)
		buf[o] = 0;
}
