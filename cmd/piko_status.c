/*
 * piko server status: GET one route of the admin port's status API (protocol
 * reference §7.2) and print the answer as YAML, as Piko's CLI does (§4.3).
 *
 *   upstream endpoints             GET /status/upstream/endpoints
 *   cluster nodes [--status S]     GET /status/cluster/nodes
 *   cluster node <id|local>        GET /status/cluster/nodes/<id>
 *   gossip nodes | gossip node <id>  refused: this server has no gossip
 *
 * Every request carries ?forward=<node> with --forward, and (our addition,
 * §10.3 item 4: Piko's client cannot) Authorization: Bearer with
 * --server.token. Non-200 prints "request: bad status: <code>"; a transport
 * failure "request: <reason>"; both exit 1, as Piko.
 *
 * Output keys follow Piko's struct order (id, status, proxy_addr, admin_addr,
 * endpoints, upstreams), maps are sorted by key and node lists by id, and a
 * string is quoted whenever its plain form would read back as something else
 * (a number, a boolean, null), so the output parses back to the same values.
 */
#include "piko_status.h"

#include <curl/curl.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "buf.h"
#include "log.h"
#include "strbuf.h"
#include "tls_config.h"

#define STATUS_TIMEOUT_MS 15000 /* Piko's status client: http.Client{Timeout: 15s} */
/* A status answer is one small document per endpoint or node; 16 MiB is far
 * beyond any real cluster and keeps a wrong URL from filling memory. */
#define STATUS_MAX_BODY (16u << 20)
#define STATUS_MAX_REDIRS 10L /* Go's http.Client default */

struct status_config {
	struct {
		char *url;
		char *token;
		struct pk_tls_client_config tls;
	} server;
	char *forward;
	char *status; /* cluster nodes only; a flag, not a YAML key (as Piko) */
	struct {
		char *level;
		struct pk_strlist subsystems;
	} log;
};

#define S(f) offsetof(struct status_config, f)

/* Persistent flags, which are also the YAML keys. */
/* clang-format off */
#define STATUS_COMMON_OPTS                                                                          \
	{"server.url", PK_OPT_STRING, S(server.url), "http://localhost:8002",                          \
	 "URL of the server's admin port", 0, NULL, 0},                                                \
	{"server.token", PK_OPT_STRING, S(server.token), NULL,                                         \
	 "token sent as Authorization: Bearer (for admin.auth; not in Piko)", 0, NULL, 0},             \
	PK_TLS_CLIENT_OPTS("server.tls.", S(server.tls)),                                              \
	{"forward", PK_OPT_STRING, S(forward), NULL,                                                    \
	 "ID of the node that answers (the server forwards the request to it)", 0, NULL, 0},           \
	{"log.level", PK_OPT_STRING, S(log.level), "info", "debug, info, warn or error", 0, NULL, 0},  \
	{"log.subsystems", PK_OPT_STRLIST, S(log.subsystems), NULL,                                     \
	 "subsystems logged at every level", 0, NULL, 0}
/* clang-format on */

static const struct pk_opt yaml_opts[] = {
    STATUS_COMMON_OPTS,
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

static const struct pk_opt flag_opts[] = {
    STATUS_COMMON_OPTS,
    {"status", PK_OPT_STRING, S(status), NULL,
     "cluster nodes: only nodes with this status (active, unreachable or left)", 0, NULL, 0},
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

/* --- help ---------------------------------------------------------------- */

/* One help page per level of the command tree. */
struct status_help {
	const char *words; /* the positional words that select it */
	const char *text;
	int status_flag; /* 1: --status is listed */
};

static const struct status_help helps[] = {
    {"",
     "Usage: piko server status <command> [flags]\n\n"
     "Inspect a running server through the status API of its admin port.\n\n"
     "Commands:\n"
     "  upstream endpoints        endpoints with upstream listeners on the node, and how many\n"
     "  cluster nodes             the nodes of the cluster, as the node knows them\n"
     "  cluster node <id|local>   one node and its endpoints ('local': the node itself)\n"
     "  gossip nodes              not used by this server (see cluster nodes)\n"
     "  gossip node <id>          not used by this server (see cluster node)\n\n"
     "Examples:\n"
     "  piko server status cluster nodes\n"
     "  # the cluster as node cv6cdyo sees it\n"
     "  piko server status cluster nodes --forward cv6cdyo\n",
     0},
    {"upstream",
     "Usage: piko server status upstream endpoints [flags]\n\n"
     "Inspect the node's upstream listeners.\n",
     0},
    {"upstream endpoints",
     "Usage: piko server status upstream endpoints [flags]\n\n"
     "Print each endpoint that has upstream listeners connected to the node, with the\n"
     "number of listeners, as a YAML map sorted by endpoint ID.\n",
     0},
    {"cluster",
     "Usage: piko server status cluster nodes|node <id|local> [flags]\n\n"
     "Inspect the cluster as the node knows it.\n",
     0},
    {"cluster nodes",
     "Usage: piko server status cluster nodes [--status active|unreachable|left] [flags]\n\n"
     "Print the nodes the node knows, sorted by ID: status, addresses, how many\n"
     "endpoints and upstream listeners each has.\n",
     1},
    {"cluster node",
     "Usage: piko server status cluster node <id|local> [flags]\n\n"
     "Print one node and its endpoints (endpoint ID: listeners). 'local' is the\n"
     "node that answers.\n\n"
     "Examples:\n"
     "  piko server status cluster node bbc69214\n"
     "  piko server status cluster node local\n",
     0},
    {"gossip",
     "Usage: piko server status gossip nodes|node <id> [flags]\n\n"
     "Piko's gossip state. This server has no gossip (its nodes keep links to each\n"
     "other instead): use 'piko server status cluster nodes'.\n",
     0},
    {"gossip nodes", NULL, 0},
    {"gossip node", NULL, 0},
};

void pk_status_summary(FILE *out)
{
	fprintf(out, "Commands:\n"
	             "  status upstream endpoints | cluster nodes | cluster node <id|local>\n"
	             "                     inspect a running server through its admin port\n"
	             "                     ('piko server status --help')\n");
}

static const struct status_help *help_page(const char *words)
{
	for (size_t k = 0; k < sizeof(helps) / sizeof(helps[0]); k++)
		if (!strcmp(helps[k].words, words))
			return &helps[k];
	return NULL;
}

static void print_help(const struct status_help *h, FILE *out)
{
	/* The gossip verbs share their group's page. */
	if (!h->text)
		h = help_page("gossip");
	fputs(h->text, out);
	fputs("\nFlags:\n", out);
	pk_config_print_help(h->status_flag ? flag_opts : yaml_opts, out);
}

/* The page for the longest prefix of pos that names one. */
static const struct status_help *find_help(char *const *pos, size_t npos)
{
	const struct status_help *best = &helps[0];
	char words[256] = "";
	for (size_t i = 0; i < npos && i < 2; i++) {
		size_t used = strlen(words);
		snprintf(words + used, sizeof(words) - used, "%s%s", i ? " " : "", pos[i]);
		const struct status_help *h = help_page(words);
		if (!h)
			break;
		best = h;
	}
	return best;
}

static int is_help_flag(const char *a)
{
	return !strcmp(a, "--help") || !strcmp(a, "-h");
}

/* --help anywhere: find the command named by the other arguments and print
 * its page. The flags are parsed (into a scratch config) only to tell
 * positional words from flag values. */
static int show_help(int argc, char **argv)
{
	char **rest = pk_xcalloc((size_t)argc + 1, sizeof(*rest)); /* owner: here */
	int n = 0;
	for (int i = 0; i < argc; i++)
		if (!is_help_flag(argv[i]))
			rest[n++] = argv[i];
	struct status_config scratch;
	memset(&scratch, 0, sizeof(scratch));
	char err[512];
	char *pos[PK_STATUS_POS_CAP];
	size_t npos = 0;
	const char *path = NULL;
	int expand = 0;
	if (pk_config_defaults(flag_opts, &scratch, err, sizeof(err)) < 0 ||
	    pk_config_parse_flags(flag_opts, &scratch, n, rest, pos, PK_STATUS_POS_CAP, &npos,
	                          &path, &expand, err, sizeof(err)) < 0)
		npos = 0; /* a bad flag: the top page lists them all */
	print_help(find_help(pos, npos), stdout);
	pk_config_free(flag_opts, &scratch);
	free(rest);
	return 0;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("config: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nRun 'piko server status --help' for the commands and flags.\n", stderr);
	return 1;
}

/* --- configuration ------------------------------------------------------- */

static int validate(const struct status_config *cfg, char *err, size_t errlen)
{
	CURLU *u = curl_url();
	if (!u) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	char *scheme = NULL;
	int ok = cfg->server.url && *cfg->server.url &&
	         curl_url_set(u, CURLUPART_URL, cfg->server.url, 0) == CURLUE_OK &&
	         curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	         (!strcasecmp(scheme, "http") || !strcasecmp(scheme, "https"));
	curl_free(scheme);
	curl_url_cleanup(u);
	if (!ok) {
		snprintf(err, errlen, "invalid server url: %s (want http:// or https://)",
		         cfg->server.url ? cfg->server.url : "");
		return -1;
	}
	if (pk_tls_check_pair("server tls", cfg->server.tls.cert, cfg->server.tls.key, err,
	                      errlen) < 0)
		return -1;
	if (pk_log_parse_level(cfg->log.level) < 0) {
		snprintf(err, errlen, "invalid log level: %s", cfg->log.level);
		return -1;
	}
	const char *st = cfg->status;
	if (st && *st && strcmp(st, "active") && strcmp(st, "unreachable") && strcmp(st, "left")) {
		snprintf(err, errlen, "invalid status: %s (want active, unreachable or left)", st);
		return -1;
	}
	return 0;
}

/* --- the request ----------------------------------------------------------- */

struct sink {
	struct pk_sb body;
	int over;
};

static size_t on_data(char *p, size_t size, size_t n, void *user)
{
	struct sink *s = user;
	size_t add = size * n;
	if (s->body.len + add > STATUS_MAX_BODY) {
		s->over = 1;
		return 0; /* aborts the transfer */
	}
	pk_sb_put(&s->body, p, add);
	return add;
}

/* Percent-escapes everything but RFC 3986 unreserved characters, with
 * uppercase hex, as Go does. form: a query value, where a space is '+' (Go's
 * url.QueryEscape). Otherwise one path segment: '/' is escaped so "a/b"
 * stays one segment, and so are the dots of "." and "..", which would
 * otherwise be resolved away as dot segments. Appends to b. */
static void put_escaped(struct pk_sb *b, const char *s, int form)
{
	static const char hex[] = "0123456789ABCDEF";
	int dots = !form && (!strcmp(s, ".") || !strcmp(s, ".."));
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		int unreserved = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		                 (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '~' ||
		                 (*p == '.' && !dots);
		if (unreserved) {
			pk_sb_put(b, (const char *)p, 1);
		} else if (form && *p == ' ') {
			pk_sb_put(b, "+", 1);
		} else {
			char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			pk_sb_put(b, e, 3);
		}
	}
}

/* server.url with route appended to its path (Piko keeps the path:
 * path.Join(url.Path, route)) and forward=<node> appended to its query.
 * The string is assembled here, not with curl_url_set(CURLUPART_PATH),
 * because that rewrites %2F as %2f. Returns the URL (the caller frees it) or
 * NULL. */
static char *build_url(const struct status_config *cfg, const char *route)
{
	CURLU *u = curl_url();
	char *origin = NULL, *path = NULL, *query = NULL, *url = NULL;
	if (!u || curl_url_set(u, CURLUPART_URL, cfg->server.url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
		goto out;
	if (curl_url_get(u, CURLUPART_QUERY, &query, 0) != CURLUE_OK)
		query = NULL; /* none */
	/* scheme://[user@]host[:port]/ alone */
	if (curl_url_set(u, CURLUPART_PATH, "/", 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_QUERY, NULL, 0) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_URL, &origin, 0) != CURLUE_OK)
		goto out;
	struct pk_sb b = {0};
	size_t olen = strlen(origin), plen = strlen(path);
	while (olen && origin[olen - 1] == '/')
		olen--;
	while (plen && path[plen - 1] == '/')
		plen--;
	pk_sb_put(&b, origin, olen);
	pk_sb_put(&b, path, plen);
	pk_sb_str(&b, route);
	const char *sep = "?";
	if (query && *query) {
		pk_sb_printf(&b, "?%s", query);
		sep = "&";
	}
	if (cfg->forward && *cfg->forward) {
		pk_sb_printf(&b, "%sforward=", sep);
		put_escaped(&b, cfg->forward, 1);
	}
	url = pk_sb_finish(&b, NULL);
out:
	curl_free(origin);
	curl_free(path);
	curl_free(query);
	curl_url_cleanup(u);
	return url;
}

/* GET route (already escaped). Returns the decoded JSON document (owned by
 * the caller: json_object_put) in *doc, which is NULL for a JSON null; or
 * prints the error on stderr and returns -1. */
static int status_get(const struct status_config *cfg, const char *route, struct json_object **doc)
{
	*doc = NULL;
	char *url = build_url(cfg, route); /* owner: here */
	if (!url) {
		fprintf(stderr, "request: cannot build the URL from %s and %s\n", cfg->server.url,
		        route);
		return -1;
	}
	pk_log(PK_LOG_DEBUG, "status", "request", "url", url, NULL);

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		free(url);
		fprintf(stderr, "request: cannot initialise libcurl\n");
		return -1;
	}
	CURL *h = curl_easy_init();
	if (!h) {
		free(url);
		curl_global_cleanup();
		fprintf(stderr, "request: cannot create a curl handle\n");
		return -1;
	}
	struct sink s = {0};
	char cerr[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, STATUS_MAX_REDIRS);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)STATUS_TIMEOUT_MS);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
	if (cfg->server.token && *cfg->server.token) {
		/* Bearer as the only method is sent at once, without waiting for a
		 * 401; curl drops it when a redirect leaves the host. */
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
		curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, cfg->server.token);
	}
	const struct pk_tls_client_config *tls = &cfg->server.tls;
	if (tls->root_cas && *tls->root_cas)
		curl_easy_setopt(h, CURLOPT_CAINFO, tls->root_cas);
	if (tls->insecure_skip_verify) {
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (tls->cert && *tls->cert) {
		curl_easy_setopt(h, CURLOPT_SSLCERT, tls->cert);
		curl_easy_setopt(h, CURLOPT_SSLKEY, tls->key);
	}
	CURLcode rc = curl_easy_perform(h);
	long code = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(h);
	curl_global_cleanup();
	free(url);

	size_t len = 0;
	char *body = pk_sb_finish(&s.body, &len); /* owner: here */
	int ret = -1;
	if (rc != CURLE_OK) {
		if (s.over)
			fprintf(stderr, "request: response larger than %u bytes\n",
			        (unsigned)STATUS_MAX_BODY);
		else
			fprintf(stderr, "request: %s\n", cerr[0] ? cerr : curl_easy_strerror(rc));
	} else if (code != 200) {
		fprintf(stderr, "request: bad status: %ld\n", code);
	} else {
		struct json_tokener *tok = json_tokener_new();
		if (!tok) {
			fprintf(stderr, "decode response: out of memory\n");
		} else {
			/* len + 1 takes the NUL too, which ends a number or literal at
			 * the very end of the body. Trailing bytes after the document
			 * are ignored, as Go's json.Decoder does. */
			*doc = json_tokener_parse_ex(tok, body, (int)len + 1);
			enum json_tokener_error jerr = json_tokener_get_error(tok);
			json_tokener_free(tok);
			if (jerr != json_tokener_success) {
				json_object_put(*doc);
				*doc = NULL;
				fprintf(stderr, "decode response: %s\n",
				        len ? json_tokener_error_desc(jerr) : "empty body");
			} else {
				ret = 0;
			}
		}
	}
	free(body);
	return ret;
}

/* --- YAML output ------------------------------------------------------------ */

/* A libyaml emitter writing into a buffer: nothing reaches stdout unless the
 * whole document was emitted. After the first failure every call is a no-op
 * and yw_finish reports it. */
struct yw {
	yaml_emitter_t em;
	struct pk_sb out;
	int failed;
	const char *problem;
};

static int yw_write(void *data, unsigned char *buf, size_t size)
{
	pk_sb_put(data, (const char *)buf, size);
	return 1;
}

static void yw_emit(struct yw *w, yaml_event_t *ev, int init_ok)
{
	if (w->failed) {
		if (init_ok)
			yaml_event_delete(ev);
		return;
	}
	if (!init_ok) {
		/* The only way a scalar event fails to build is bad UTF-8. */
		w->failed = 1;
		w->problem = "a string is not valid UTF-8";
		return;
	}
	/* yaml_emitter_emit takes the event, even when it fails. */
	if (!yaml_emitter_emit(&w->em, ev)) {
		w->failed = 1;
		w->problem = w->em.problem ? w->em.problem : "emitter error";
	}
}

static void yw_begin(struct yw *w)
{
	memset(w, 0, sizeof(*w));
	yaml_event_t ev;
	if (!yaml_emitter_initialize(&w->em)) {
		w->failed = 1;
		w->problem = "out of memory";
		return;
	}
	yaml_emitter_set_output(&w->em, yw_write, &w->out);
	yaml_emitter_set_unicode(&w->em, 1); /* UTF-8 as is, not \u escapes */
	yaml_emitter_set_width(&w->em, -1);  /* never fold a long string */
	yaml_emitter_set_indent(&w->em, 2);
	yw_emit(w, &ev, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING));
	yw_emit(w, &ev, yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1));
}

/* 1 if the plain (unquoted) form of s reads back as the string s. YAML 1.1
 * (PyYAML, go-yaml v2) and 1.2 resolvers turn some plain scalars into null,
 * booleans or numbers: refuse every word they know, in any case, and
 * anything that starts like a number. (Indicators such as ": " or a leading
 * "- " are libyaml's to refuse: it quotes those by itself.) */
static int plain_reads_as_string(const char *s)
{
	static const char *const words[] = {
	    "null", "~", "true", "false", "yes",  "no",    "on",    "off",
	    "y",    "n", "<<",   "=",     ".inf", "-.inf", "+.inf", ".nan",
	};
	if (!*s)
		return 0;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (!strcasecmp(s, words[i]))
			return 0;
	const char *p = s;
	if (*p == '-' || *p == '+')
		p++;
	if (*p == '.')
		p++;
	if (*p >= '0' && *p <= '9')
		return 0;
	return 1;
}

static void yw_str(struct yw *w, const char *s)
{
	yaml_event_t ev;
	int plain = plain_reads_as_string(s);
	/* plain_implicit 0 with no tag makes libyaml quote it. */
	yw_emit(w, &ev,
	        yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s),
	                                     plain, 1, YAML_ANY_SCALAR_STYLE));
}

/* A scalar that is meant to resolve: null, a number. */
static void yw_plain(struct yw *w, const char *s)
{
	yaml_event_t ev;
	yw_emit(w, &ev,
	        yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s), 1,
	                                     0, YAML_PLAIN_SCALAR_STYLE));
}

static void yw_int(struct yw *w, int64_t v)
{
	char num[32];
	snprintf(num, sizeof(num), "%lld", (long long)v);
	yw_plain(w, num);
}

/* An empty collection is written in flow style: {} or []. */
static void yw_map_start(struct yw *w, int empty)
{
	yaml_event_t ev;
	yw_emit(w, &ev,
	        yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
	                                            empty ? YAML_FLOW_MAPPING_STYLE
	                                                  : YAML_BLOCK_MAPPING_STYLE));
}

static void yw_map_end(struct yw *w)
{
	yaml_event_t ev;
	yw_emit(w, &ev, yaml_mapping_end_event_initialize(&ev));
}

static void yw_seq_start(struct yw *w, int empty)
{
	yaml_event_t ev;
	yw_emit(w, &ev,
	        yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
	                                             empty ? YAML_FLOW_SEQUENCE_STYLE
	                                                   : YAML_BLOCK_SEQUENCE_STYLE));
}

static void yw_seq_end(struct yw *w)
{
	yaml_event_t ev;
	yw_emit(w, &ev, yaml_sequence_end_event_initialize(&ev));
}

/* Ends the document and prints it on stdout; or, when decoding the answer
 * failed (decoded < 0, error already printed), prints nothing. Frees what
 * the writer holds. Returns the exit code. */
static int yw_finish(struct yw *w, int decoded)
{
	yaml_event_t ev;
	if (decoded < 0) {
		yaml_emitter_delete(&w->em);
		free(pk_sb_finish(&w->out, NULL));
		return 1;
	}
	yw_emit(w, &ev, yaml_document_end_event_initialize(&ev, 1));
	yw_emit(w, &ev, yaml_stream_end_event_initialize(&ev));
	if (!w->failed && !yaml_emitter_flush(&w->em)) {
		w->failed = 1;
		w->problem = "flush";
	}
	yaml_emitter_delete(&w->em);
	size_t len = 0;
	char *out = pk_sb_finish(&w->out, &len); /* owner: here */
	int rc = 0;
	if (w->failed) {
		fprintf(stderr, "output: cannot write YAML: %s\n", w->problem);
		rc = 1;
	} else if (fwrite(out, 1, len, stdout) != len || fflush(stdout) != 0) {
		fprintf(stderr, "output: cannot write to stdout\n");
		rc = 1;
	}
	free(out);
	return rc;
}

/* --- decoding (as strictly as Go decodes into Piko's structs) --------------- */

static int decode_error(const char *what, const char *want)
{
	fprintf(stderr, "decode response: %s: expected %s\n", what, want);
	return -1;
}

/* A string field; missing or null is "" (Go's zero value). */
static int get_str(struct json_object *obj, const char *key, const char **out)
{
	struct json_object *v = NULL;
	*out = "";
	if (!json_object_object_get_ex(obj, key, &v) || !v)
		return 0;
	if (!json_object_is_type(v, json_type_string))
		return decode_error(key, "a string");
	*out = json_object_get_string(v);
	return 0;
}

/* An integer field; missing or null is 0. */
static int get_int(struct json_object *obj, const char *key, int64_t *out)
{
	struct json_object *v = NULL;
	*out = 0;
	if (!json_object_object_get_ex(obj, key, &v) || !v)
		return 0;
	if (!json_object_is_type(v, json_type_int))
		return decode_error(key, "an integer");
	*out = json_object_get_int64(v);
	return 0;
}

struct kv {
	const char *key;
	struct json_object *v;
};

static int kv_cmp(const void *a, const void *b)
{
	return strcmp(((const struct kv *)a)->key, ((const struct kv *)b)->key);
}

/* An {"endpoint": count} object as a YAML map sorted by key. A JSON null is
 * {} with null_is_empty (the whole answer: Go prints a nil map so), else
 * null (a node's endpoints, as the server sent them). */
static int emit_count_map(struct yw *w, struct json_object *obj, const char *what,
                          int null_is_empty)
{
	if (!obj) {
		if (null_is_empty) {
			yw_map_start(w, 1);
			yw_map_end(w);
		} else {
			yw_plain(w, "null");
		}
		return 0;
	}
	if (!json_object_is_type(obj, json_type_object))
		return decode_error(what, "an object");
	size_t n = (size_t)json_object_object_length(obj), i = 0;
	struct kv *kvs = pk_xcalloc(n ? n : 1, sizeof(*kvs)); /* owner: here */
	json_object_object_foreach(obj, key, val)
	{
		if (i < n)
			kvs[i++] = (struct kv){key, val};
	}
	qsort(kvs, i, sizeof(*kvs), kv_cmp);
	int rc = 0;
	for (size_t k = 0; k < i; k++)
		if (!kvs[k].v || !json_object_is_type(kvs[k].v, json_type_int)) {
			rc = decode_error(kvs[k].key, "an integer");
			break;
		}
	if (rc == 0) {
		yw_map_start(w, i == 0);
		for (size_t k = 0; k < i; k++) {
			yw_str(w, kvs[k].key);
			yw_int(w, json_object_get_int64(kvs[k].v));
		}
		yw_map_end(w);
	}
	free(kvs);
	return rc;
}

/* The four fields every node answer starts with, in Piko's order. */
static int emit_node_head(struct yw *w, struct json_object *node)
{
	static const char *const keys[] = {"id", "status", "proxy_addr", "admin_addr"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *s;
		if (get_str(node, keys[i], &s) < 0)
			return -1;
		yw_str(w, keys[i]);
		yw_str(w, s);
	}
	return 0;
}

/* --- the commands ------------------------------------------------------------ */

static int cmd_upstream_endpoints(const struct status_config *cfg)
{
	struct json_object *doc;
	if (status_get(cfg, "/status/upstream/endpoints", &doc) < 0)
		return 1;
	struct yw w;
	yw_begin(&w);
	int rc = emit_count_map(&w, doc, "endpoints", 1);
	json_object_put(doc);
	return yw_finish(&w, rc);
}

struct node_ref {
	const char *id;
	size_t index; /* in the answer: ties keep it, so the order is total */
	struct json_object *node;
};

static int node_cmp(const void *a, const void *b)
{
	const struct node_ref *x = a, *y = b;
	int c = strcmp(x->id, y->id);
	if (c)
		return c;
	return x->index < y->index ? -1 : x->index > y->index;
}

static int emit_nodes(struct yw *w, struct json_object *doc, const char *status)
{
	if (doc && !json_object_is_type(doc, json_type_array))
		return decode_error("nodes", "an array");
	size_t n = doc ? json_object_array_length(doc) : 0, kept = 0;
	struct node_ref *refs = pk_xcalloc(n ? n : 1, sizeof(*refs)); /* owner: here */
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct json_object *node = json_object_array_get_idx(doc, i);
		const char *id, *st;
		if (!node || !json_object_is_type(node, json_type_object))
			rc = decode_error("node", "an object");
		else if (get_str(node, "id", &id) < 0 || get_str(node, "status", &st) < 0)
			rc = -1;
		else if (!status || !*status || !strcmp(st, status))
			refs[kept++] = (struct node_ref){id, i, node};
	}
	if (rc == 0) {
		qsort(refs, kept, sizeof(*refs), node_cmp);
		yw_map_start(w, 0);
		yw_str(w, "nodes");
		yw_seq_start(w, kept == 0);
		for (size_t i = 0; i < kept && rc == 0; i++) {
			int64_t eps, ups;
			if (get_int(refs[i].node, "endpoints", &eps) < 0 ||
			    get_int(refs[i].node, "upstreams", &ups) < 0) {
				rc = -1;
				break;
			}
			yw_map_start(w, 0);
			if (emit_node_head(w, refs[i].node) < 0) {
				rc = -1;
				break;
			}
			yw_str(w, "endpoints");
			yw_int(w, eps);
			yw_str(w, "upstreams");
			yw_int(w, ups);
			yw_map_end(w);
		}
		yw_seq_end(w);
		yw_map_end(w);
	}
	free(refs);
	return rc;
}

static int cmd_cluster_nodes(const struct status_config *cfg)
{
	struct json_object *doc;
	if (status_get(cfg, "/status/cluster/nodes", &doc) < 0)
		return 1;
	struct yw w;
	yw_begin(&w);
	int rc = emit_nodes(&w, doc, cfg->status);
	json_object_put(doc);
	return yw_finish(&w, rc);
}

static int cmd_cluster_node(const struct status_config *cfg, const char *id)
{
	struct pk_sb route = {0};
	pk_sb_str(&route, "/status/cluster/nodes/");
	put_escaped(&route, id, 0);
	char *r = pk_sb_finish(&route, NULL); /* owner: here */
	struct json_object *doc;
	int got = status_get(cfg, r, &doc);
	free(r);
	if (got < 0)
		return 1;
	struct yw w;
	yw_begin(&w);
	int rc = 0;
	struct json_object *eps = NULL;
	if (!doc || !json_object_is_type(doc, json_type_object)) {
		rc = decode_error("node", "an object");
	} else {
		yw_map_start(&w, 0);
		rc = emit_node_head(&w, doc);
		if (rc == 0) {
			json_object_object_get_ex(doc, "endpoints", &eps);
			yw_str(&w, "endpoints");
			rc = emit_count_map(&w, eps, "endpoints", 0);
		}
		yw_map_end(&w);
	}
	json_object_put(doc);
	return yw_finish(&w, rc);
}

/* --- dispatch ------------------------------------------------------------------ */

static int run(const struct status_config *cfg, char **pos, size_t npos)
{
	const char *group = npos > 0 ? pos[0] : NULL;
	const char *verb = npos > 1 ? pos[1] : NULL;
	if (!group)
		return usage_error("missing command");
	int nodes = verb && !strcmp(verb, "nodes"), node = verb && !strcmp(verb, "node");
	int known = (!strcmp(group, "upstream") && verb && !strcmp(verb, "endpoints")) ||
	            (!strcmp(group, "cluster") && (nodes || node)) ||
	            (!strcmp(group, "gossip") && (nodes || node));
	if (!known) {
		if (strcmp(group, "upstream") && strcmp(group, "cluster") &&
		    strcmp(group, "gossip"))
			return usage_error("unknown command: %s", group);
		return usage_error(verb ? "unknown command: %s" : "missing command after %s",
		                   verb ? verb : group);
	}
	size_t want = node ? 3 : 2;
	if (npos != want) {
		if (npos > want)
			return usage_error("unexpected argument: %s", pos[want]);
		return usage_error("missing argument: %s", "<id>");
	}
	if (cfg->status && *cfg->status && !(nodes && !strcmp(group, "cluster")))
		return usage_error("%s applies only to 'cluster nodes'", "--status");
	if (!strcmp(group, "gossip")) {
		fprintf(stderr, "gossip: not used by this server (see cluster nodes)\n");
		return 1;
	}
	if (!strcmp(group, "upstream"))
		return cmd_upstream_endpoints(cfg);
	if (nodes)
		return cmd_cluster_nodes(cfg);
	if (!*pos[2])
		return usage_error("missing argument: %s", "<id>");
	return cmd_cluster_node(cfg, pos[2]);
}

int pk_status_main(int argc, char **argv, pk_status_load_fn load)
{
	for (int i = 0; i < argc; i++)
		if (is_help_flag(argv[i]))
			return show_help(argc, argv);
	struct status_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	char err[512];
	char *pos[PK_STATUS_POS_CAP];
	size_t npos = 0;
	int rc;
	if (load(flag_opts, yaml_opts, &cfg, sizeof(cfg), argc, argv, pos, &npos, err,
	         sizeof(err)) < 0 ||
	    validate(&cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "config: %s\n", err);
		rc = 1;
	} else {
		pk_log_set_level(pk_log_parse_level(cfg.log.level));
		pk_log_set_subsystems(cfg.log.subsystems.v, cfg.log.subsystems.n);
		rc = run(&cfg, pos, npos);
		pk_log_reset();
	}
	pk_config_free(flag_opts, &cfg);
	return rc;
}
