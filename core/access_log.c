/*
 * The access log's record (see access_log.h): header objects as Go's
 * encoding/json writes an http.Header, Go's URL.Path and Duration.String(),
 * and the record's level rule.
 */
#include "access_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "strbuf.h"

/* Go's validHeaderFieldByte: a token character. */
static int token_char(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return 1;
	return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

void pk_access_log_canonical(const char *name, char *out, size_t len)
{
	if (!len)
		return;
	size_t n = strlen(name);
	int valid = n > 0;
	for (size_t i = 0; i < n && valid; i++)
		valid = token_char((unsigned char)name[i]);
	size_t k = 0;
	int upper = 1;
	for (size_t i = 0; i < n && k + 1 < len; i++) {
		char c = name[i];
		if (valid) {
			if (upper && c >= 'a' && c <= 'z')
				c = (char)(c - 32);
			else if (!upper && c >= 'A' && c <= 'Z')
				c = (char)(c + 32);
			upper = c == '-';
		}
		out[k++] = c;
	}
	out[k] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

void pk_access_log_path(const char *target, char *out, size_t len)
{
	if (!len)
		return;
	const char *p = target ? target : "";
	/* Absolute form: Go's URL.Path starts after the authority. */
	const char *scheme_end = strstr(p, "://");
	if (p[0] != '/' && scheme_end && scheme_end < p + strcspn(p, "/?")) {
		const char *auth = scheme_end + 3;
		const char *slash = auth + strcspn(auth, "/?");
		p = slash;
	}
	size_t k = 0;
	for (size_t i = 0; p[i] && p[i] != '?' && k + 1 < len; i++) {
		int hi, lo;
		if (p[i] == '%' && (hi = hexval(p[i + 1])) >= 0 && (lo = hexval(p[i + 2])) >= 0) {
			out[k++] = (char)(hi << 4 | lo);
			i += 2;
			continue;
		}
		out[k++] = p[i];
	}
	out[k] = '\0';
}

/* Go's time: fmtFrac and fmtInt write backwards from the end of buf[0..w). */
static size_t fmt_frac(char *buf, size_t w, uint64_t *v, int prec)
{
	int print = 0;
	for (int i = 0; i < prec; i++) {
		uint64_t digit = *v % 10;
		print = print || digit != 0;
		if (print)
			buf[--w] = (char)('0' + digit);
		*v /= 10;
	}
	if (print)
		buf[--w] = '.';
	return w;
}

static size_t fmt_int(char *buf, size_t w, uint64_t v)
{
	if (v == 0) {
		buf[--w] = '0';
		return w;
	}
	while (v > 0) {
		buf[--w] = (char)('0' + v % 10);
		v /= 10;
	}
	return w;
}

void pk_go_duration(uint64_t ns, char *out, size_t len)
{
	char buf[32];
	size_t w = sizeof(buf);
	uint64_t u = ns;
	if (u < 1000000000u) {
		int prec;
		buf[--w] = 's';
		if (u == 0) {
			buf[--w] = '0';
			goto done;
		} else if (u < 1000u) {
			prec = 0;
			buf[--w] = 'n';
		} else if (u < 1000000u) {
			prec = 3;
			w -= 2; /* U+00B5 MICRO SIGN, as Go writes it */
			buf[w] = (char)0xc2;
			buf[w + 1] = (char)0xb5;
		} else {
			prec = 6;
			buf[--w] = 'm';
		}
		w = fmt_frac(buf, w, &u, prec);
		w = fmt_int(buf, w, u);
	} else {
		buf[--w] = 's';
		w = fmt_frac(buf, w, &u, 9);
		w = fmt_int(buf, w, u % 60);
		u /= 60;
		if (u > 0) {
			buf[--w] = 'm';
			w = fmt_int(buf, w, u % 60);
			u /= 60;
			if (u > 0) {
				buf[--w] = 'h';
				w = fmt_int(buf, w, u);
			}
		}
	}
done:
	snprintf(out, len, "%.*s", (int)(sizeof(buf) - w), buf + w);
}

static int list_has(const struct pk_strlist *l, const char *canon)
{
	char c[128];
	for (size_t i = 0; i < l->n; i++) {
		pk_access_log_canonical(l->v[i], c, sizeof(c));
		if (strcmp(c, canon) == 0)
			return 1;
	}
	return 0;
}

int pk_access_log_validate(const struct pk_access_log_config *cfg, char *err, size_t errlen)
{
	if (cfg->disable)
		return 0;
	if (!cfg->level || pk_log_parse_level(cfg->level) < 0) {
		snprintf(err, errlen, "access log: invalid level: %s (debug, info, warn or error)",
		         cfg->level ? cfg->level : "");
		return -1;
	}
	if (cfg->request_headers.allow_list.n && cfg->request_headers.block_list.n) {
		snprintf(
		    err, errlen,
		    "access log: request headers: cannot define both allow list and block list");
		return -1;
	}
	if (cfg->response_headers.allow_list.n && cfg->response_headers.block_list.n) {
		snprintf(
		    err, errlen,
		    "access log: response headers: cannot define both allow list and block list");
		return -1;
	}
	return 0;
}

enum pk_log_level pk_access_log_level(const struct pk_access_log_config *cfg, int status)
{
	int level = pk_log_parse_level(cfg->level ? cfg->level : "info");
	if (level < 0)
		level = PK_LOG_INFO;
	if (status >= 500 && level < PK_LOG_WARN)
		level = PK_LOG_WARN;
	return (enum pk_log_level)level;
}

static int internal_path(const char *target)
{
	char path[16];
	pk_access_log_path(target, path, sizeof(path));
	return strncmp(path, "/_piko", 6) == 0;
}

int pk_access_log_on(const struct pk_access_log_config *cfg, const char *subsystem,
                     const char *target)
{
	if (cfg->disable || internal_path(target))
		return 0;
	/* The status is not known yet: ask for the highest level a record can
	 * get (warn, for a 5xx, when the configured level is below it). */
	return pk_log_enabled(pk_access_log_level(cfg, 500), subsystem);
}

void pk_access_hdrs_copy(struct pk_access_hdrs *d, const struct pk_http1_header *hs, size_t n)
{
	d->v = NULL;
	d->n = 0;
	if (!n)
		return; /* (no pointer arithmetic on NULL below) */
	size_t bytes = n * sizeof(*d->v);
	for (size_t i = 0; i < n; i++)
		bytes += strlen(hs[i].name) + strlen(hs[i].value) + 2;
	/* Owner: d (pk_access_hdrs_free); the strings follow the array. */
	d->v = pk_xmalloc(bytes);
	d->n = n;
	char *p = (char *)(d->v + n);
	for (size_t i = 0; i < n; i++) {
		size_t a = strlen(hs[i].name) + 1, b = strlen(hs[i].value) + 1;
		memcpy(p, hs[i].name, a);
		d->v[i].name = p;
		p += a;
		memcpy(p, hs[i].value, b);
		d->v[i].value = p;
		p += b;
	}
}

void pk_access_hdrs_free(struct pk_access_hdrs *d)
{
	free(d->v);
	d->v = NULL;
	d->n = 0;
}

struct hdr {
	char name[128];
	const char *value;
	size_t order;
};

static int hdr_cmp(const void *a, const void *b)
{
	const struct hdr *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

static int skipped(const char *const *skip, const char *name)
{
	for (size_t i = 0; skip && skip[i]; i++)
		if (strcasecmp(skip[i], name) == 0)
			return 1;
	return 0;
}

/* Build the object from the headers keep() accepts. head is only used by
 * the response variant (hop-by-hop). */
static char *headers_json(const struct pk_access_log_headers *f, const struct pk_http1_header *hs,
                          size_t n, const char *const *skip, const struct pk_http1_head *hop)
{
	/* Owner: this function; at most PK_HTTP1_MAX_HEADERS entries. */
	struct hdr *v = n ? pk_xmalloc(n * sizeof(*v)) : NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (skipped(skip, hs[i].name))
			continue;
		if (hop && pk_http1_is_hop_by_hop(hop, hs[i].name))
			continue;
		pk_access_log_canonical(hs[i].name, v[k].name, sizeof(v[k].name));
		if (f && f->allow_list.n
		        ? !list_has(&f->allow_list, v[k].name)
		        : f && f->block_list.n && list_has(&f->block_list, v[k].name))
			continue;
		v[k].value = hs[i].value ? hs[i].value : "";
		v[k].order = i;
		k++;
	}
	/* encoding/json sorts map keys; the values of one name keep their
	 * order (the sort's tie-break). */
	if (k > 1)
		qsort(v, k, sizeof(*v), hdr_cmp);
	struct pk_sb b = {0};
	pk_sb_put(&b, "{", 1);
	for (size_t i = 0; i < k; i++) {
		int first = i == 0 || strcmp(v[i].name, v[i - 1].name) != 0;
		int last = i + 1 == k || strcmp(v[i].name, v[i + 1].name) != 0;
		if (first) {
			if (i)
				pk_sb_put(&b, ",", 1);
			pk_sb_json_string(&b, v[i].name, 0);
			pk_sb_put(&b, ":[", 2);
		} else {
			pk_sb_put(&b, ",", 1);
		}
		pk_sb_json_string(&b, v[i].value, 0);
		if (last)
			pk_sb_put(&b, "]", 1);
	}
	pk_sb_put(&b, "}", 1);
	free(v);
	return pk_sb_finish(&b, NULL);
}

char *pk_access_log_headers_json(const struct pk_access_log_headers *f,
                                 const struct pk_http1_header *hs, size_t n,
                                 const char *const *skip)
{
	return headers_json(f, hs, n, skip, NULL);
}

char *pk_access_log_response_json(const struct pk_access_log_headers *f,
                                  const struct pk_http1_head *h)
{
	/* Go's transport keeps Transfer-Encoding out of the header map; the
	 * reverse proxy then drops the hop-by-hop ones, except on a switch of
	 * protocols, which it copies whole. */
	static const char *const skip[] = {"Transfer-Encoding", NULL};
	return headers_json(f, h->headers, h->nheaders, skip, h->status == 101 ? NULL : h);
}

char *pk_access_log_written_json(const struct pk_access_log_headers *f, const char *resp,
                                 size_t len)
{
	static const char *const skip[] = {"Content-Length", "Connection", "Date",
	                                   "Transfer-Encoding", NULL};
	struct pk_http1_reader rd;
	pk_http1_reader_init(&rd, PK_HTTP1_RESPONSE, len + 1);
	size_t used = 0;
	char *out;
	if (pk_http1_reader_feed(&rd, resp, len, &used) == PK_HTTP1_HEAD) {
		const struct pk_http1_head *h = pk_http1_reader_head(&rd);
		out = headers_json(f, h->headers, h->nheaders, skip, NULL);
	} else {
		out = pk_xstrdup("{}");
	}
	pk_http1_reader_free(&rd);
	return out;
}

void pk_access_log_write(const struct pk_access_log_config *cfg, const char *subsystem,
                         const struct pk_access_record *r)
{
	if (cfg->disable || internal_path(r->target))
		return;
	/* Go's server never logs "no status": a client that left before any
	 * response is answered 502 by the reverse proxy's error handler (to a
	 * closed connection), and that is what Piko logs. */
	int status = r->status > 0 ? r->status : 502;
	enum pk_log_level level = pk_access_log_level(cfg, status);
	if (!pk_log_enabled(level, subsystem))
		return;
	/* Bounded by the parser's head limit, so these stay on the stack. */
	char path[8192], dur[40], proto[16];
	pk_access_log_path(r->target, path, sizeof(path));
	pk_go_duration(r->duration_ns, dur, sizeof(dur));
	snprintf(proto, sizeof(proto), "HTTP/1.%d", r->http_minor);
	struct pk_sb b = {0};
	pk_sb_str(&b, "{\"proto\":");
	pk_sb_json_string(&b, proto, 0);
	pk_sb_str(&b, ",\"method\":");
	pk_sb_json_string(&b, r->method ? r->method : "", 0);
	pk_sb_str(&b, ",\"host\":");
	pk_sb_json_string(&b, r->host ? r->host : "", 0);
	pk_sb_str(&b, ",\"path\":");
	pk_sb_json_string(&b, path, 0);
	static const char *const req_skip[] = {"Host", "Transfer-Encoding", NULL};
	char *req_hdr =
	    pk_access_log_headers_json(&cfg->request_headers, r->req_hdrs, r->n_req_hdrs, req_skip);
	pk_sb_str(&b, ",\"request_headers\":");
	pk_sb_str(&b, req_hdr);
	free(req_hdr);
	pk_sb_str(&b, ",\"response_headers\":");
	pk_sb_str(&b, r->resp_hdr ? r->resp_hdr : "{}");
	pk_sb_printf(&b, ",\"status\":%d,\"duration\":", status);
	pk_sb_json_string(&b, dur, 0);
	pk_sb_str(&b, "}");
	char *json = pk_sb_finish(&b, NULL);
	pk_log_json(level, subsystem, "request", "request", json);
	free(json);
}
