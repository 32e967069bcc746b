/*
 * The access log of an HTTP hop, in Piko's shape (protocol reference §2.5):
 * after each request, one record with msg "request" and a field "request"
 * holding {proto, method, host, path, request_headers, response_headers,
 * status, duration}. The server's proxy port writes it under subsystem
 * "proxy.access", the agent's HTTP listeners under "proxy.http.access".
 *
 * Headers are logged as Go's http.Header marshals: canonical name
 * ("x-foo" -> "X-Foo") -> array of values in arrival order, names sorted.
 * Each header set has an allow list (only those kept) or a block list
 * (those removed); both at once is a configuration error, as in Piko.
 *
 * Cost: the header objects are built only when the record would be
 * written (pk_access_log_on()), at the head, so the heads need not outlive
 * the parser that holds them.
 */
#ifndef PK_ACCESS_LOG_H
#define PK_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "http1.h"
#include "log.h"

struct pk_access_log_headers {
	struct pk_strlist allow_list;
	struct pk_strlist block_list;
};

struct pk_access_log_config {
	char *level; /* "debug" ... "error"; records of 5xx are at least warn */
	int disable;
	struct pk_access_log_headers request_headers;
	struct pk_access_log_headers response_headers;
};

#define PK_ACCESS_LOG_OFF(BASE, f) ((BASE) + offsetof(struct pk_access_log_config, f))

/* The option-table entries of one access_log block. P is the key prefix
 * ("proxy.access_log."), BASE the offset of the struct
 * pk_access_log_config inside the config struct. Flags follow the keys:
 * --proxy.access-log.request-headers.allow-list=a,b */
/* clang-format off */
#define PK_ACCESS_LOG_OPTS(P, BASE)                                                                \
	{P "level", PK_OPT_STRING, PK_ACCESS_LOG_OFF(BASE, level), "info",                         \
	 "level of access log records (5xx: at least warn)", 0, NULL, 0},                          \
	{P "disable", PK_OPT_BOOL, PK_ACCESS_LOG_OFF(BASE, disable), "false",                      \
	 "disable the access log", 0, NULL, 0},                                                    \
	{P "request_headers.allow_list", PK_OPT_STRLIST,                                           \
	 PK_ACCESS_LOG_OFF(BASE, request_headers.allow_list), NULL,                                \
	 "the only request headers logged", 0, NULL, 0},                                           \
	{P "request_headers.block_list", PK_OPT_STRLIST,                                           \
	 PK_ACCESS_LOG_OFF(BASE, request_headers.block_list), NULL,                                \
	 "request headers not logged", 0, NULL, 0},                                                \
	{P "response_headers.allow_list", PK_OPT_STRLIST,                                          \
	 PK_ACCESS_LOG_OFF(BASE, response_headers.allow_list), NULL,                               \
	 "the only response headers logged", 0, NULL, 0},                                          \
	{P "response_headers.block_list", PK_OPT_STRLIST,                                          \
	 PK_ACCESS_LOG_OFF(BASE, response_headers.block_list), NULL,                               \
	 "response headers not logged", 0, NULL, 0}
/* clang-format on */

/* 0, or -1 with a message in err: a bad level (unless disabled), or both
 * lists of one header set given. */
int pk_access_log_validate(const struct pk_access_log_config *cfg, char *err, size_t errlen);

/* The level a record with this status is written at. */
enum pk_log_level pk_access_log_level(const struct pk_access_log_config *cfg, int status);

/* 1 if a record for a request to this path could be written: the log is
 * on, the path is not under /_piko, and the subsystem logs at the level a
 * 5xx would get. Callers build the header objects only then. */
int pk_access_log_on(const struct pk_access_log_config *cfg, const char *subsystem,
                     const char *target);

/* A copy of a head's headers, kept from the head until the record is
 * written (the parser's storage is reused by then). One allocation. */
struct pk_access_hdrs {
	struct pk_http1_header *v; /* names and values point into the same block */
	size_t n;
};
void pk_access_hdrs_copy(struct pk_access_hdrs *d, const struct pk_http1_header *hs, size_t n);
void pk_access_hdrs_free(struct pk_access_hdrs *d);

/* The JSON object of a header set, filtered by f; headers named by skip
 * (NULL-terminated, case-insensitive; may be NULL) are left out. Owner: the
 * caller (free). */
char *pk_access_log_headers_json(const struct pk_access_log_headers *f,
                                 const struct pk_http1_header *hs, size_t n,
                                 const char *const *skip);

/* Same, for a response head relayed by a proxy: Transfer-Encoding and the
 * hop-by-hop headers are left out (Go's transport and reverse proxy remove
 * them), except on a 101, which Go passes through whole. */
char *pk_access_log_response_json(const struct pk_access_log_headers *f,
                                  const struct pk_http1_head *h);

/* Same, for a response this process wrote itself (resp: its bytes): the
 * headers a Go handler would have set, without the framing Go's server
 * adds (Content-Length, Connection, Date, Transfer-Encoding). */
char *pk_access_log_written_json(const struct pk_access_log_headers *f, const char *resp,
                                 size_t len);

struct pk_access_record {
	int http_minor;     /* HTTP/1.<minor> */
	const char *method; /* "GET" */
	const char *host;   /* the Host header */
	const char *target; /* request-target as received; the path is derived */
	/* The request's headers as received; Host and Transfer-Encoding are
	 * left out, as Go keeps them outside http.Header. */
	const struct pk_http1_header *req_hdrs;
	size_t n_req_hdrs;
	const char *resp_hdr; /* a JSON object (above), or NULL: {} */
	int status;           /* 0 (the client left before any response): 502 */
	uint64_t duration_ns;
};

/* Write the record (if the level is enabled and the path is not /_piko). */
void pk_access_log_write(const struct pk_access_log_config *cfg, const char *subsystem,
                         const struct pk_access_record *r);

/* Go's textproto.CanonicalMIMEHeaderKey into out (truncated to len - 1);
 * names with bytes outside a token are copied unchanged, as Go does. */
void pk_access_log_canonical(const char *name, char *out, size_t len);

/* The path Go's URL.Path holds for a request-target: without the query,
 * the scheme and authority of an absolute form, percent-decoded. */
void pk_access_log_path(const char *target, char *out, size_t len);

/* Go's time.Duration.String(): "0s", "850ns", "12.5µs", "1.234567ms",
 * "2.5s", "1m30s", "1h0m0s". */
void pk_go_duration(uint64_t ns, char *out, size_t len);

#endif
