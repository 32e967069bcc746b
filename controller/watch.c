/*
 * The watch-stream parser. See watch.h.
 *
 * Bytes are scanned for '\n' exactly once (memchr over each fed chunk).
 * Complete lines inside a chunk are parsed in place, without a copy; only the
 * unfinished tail of a chunk is copied into the line buffer, and the next
 * chunk's bytes up to its first '\n' are appended to it. So the work is
 * linear in the input however it is cut, unlike re-parsing the whole buffer
 * on every chunk (what kubernetes-client/c does, kubernetes.md §2.2).
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "watch.h"

/* json-c's default nesting limit is 32. Kubernetes objects stay well below
 * that, but managedFields (fieldsV1) mirror the object's own nesting one or
 * two levels deeper, so allow some headroom. json-c frees a tree
 * recursively, so the limit also bounds that recursion. */
#define WATCH_JSON_DEPTH 64

/* A line buffer grown past this for one big event is released after that
 * event, so one 10 MiB object does not pin 10 MiB for the watch's life. */
#define WATCH_KEEP_BUF (64 * 1024)

struct pk_watch_parser {
	pk_watch_event_fn fn;
	void *ud;
	size_t max;               /* cap on one line, without its '\n' */
	char *buf;                /* the unfinished line; owned */
	size_t len;               /* bytes in buf */
	size_t cap;               /* allocated size of buf, <= max */
	struct json_tokener *tok; /* owned; reset per line */
	uint64_t events;
	int failed;
	char err[160];
};

static int fail(struct pk_watch_parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int fail(struct pk_watch_parser *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->err, sizeof(p->err), fmt, ap);
	va_end(ap);
	p->failed = 1;
	/* Nothing more will be parsed: give the memory back now. */
	free(p->buf);
	p->buf = NULL;
	p->len = p->cap = 0;
	return -1;
}

struct pk_watch_parser *pk_watch_parser_new(size_t max_event_bytes, pk_watch_event_fn fn, void *ud)
{
	struct pk_watch_parser *p = pk_xcalloc(1, sizeof(*p));
	p->fn = fn;
	p->ud = ud;
	p->max = max_event_bytes ? max_event_bytes : PK_WATCH_DEFAULT_MAX_EVENT;
	/* json_tokener_parse_ex() takes an int length. */
	if (p->max > INT_MAX)
		p->max = INT_MAX;
	p->tok = json_tokener_new_ex(WATCH_JSON_DEPTH);
	if (!p->tok) {
		fprintf(stderr, "piko: out of memory allocating a json tokener\n");
		abort();
	}
	/* Strict: the apiserver writes RFC 8259 JSON; json-c's extensions
	 * (single quotes, unquoted names) would only widen what garbage is
	 * accepted. */
	json_tokener_set_flags(p->tok, JSON_TOKENER_STRICT);
	return p;
}

void pk_watch_parser_free(struct pk_watch_parser *p)
{
	if (!p)
		return;
	free(p->buf);
	p->buf = NULL;
	json_tokener_free(p->tok);
	p->tok = NULL;
	free(p);
}

const char *pk_watch_parser_error(const struct pk_watch_parser *p)
{
	return p->err;
}

uint64_t pk_watch_parser_events(const struct pk_watch_parser *p)
{
	return p->events;
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

static int type_from_string(const char *s, enum pk_watch_type *type)
{
	static const struct {
		const char *name;
		enum pk_watch_type type;
	} types[] = {
	    {"ADDED", PK_WATCH_ADDED},     {"MODIFIED", PK_WATCH_MODIFIED},
	    {"DELETED", PK_WATCH_DELETED}, {"BOOKMARK", PK_WATCH_BOOKMARK},
	    {"ERROR", PK_WATCH_ERROR},
	};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		if (strcmp(s, types[i].name) == 0) {
			*type = types[i].type;
			return 0;
		}
	}
	return -1;
}

/* Parse one line (without its '\n') and dispatch it. at_end: the line is the
 * stream's unterminated tail, so "incomplete JSON" means a cut-off event. */
static int handle_line(struct pk_watch_parser *p, const char *line, size_t len, int at_end)
{
	if (len > p->max)
		return fail(p, "event larger than %zu bytes", p->max);
	size_t i = 0;
	while (i < len && is_space(line[i]))
		i++;
	if (i == len)
		return 0; /* blank line */
	/* json-c stops at a NUL as if the input ended there; JSON text never
	 * holds a raw NUL, so refuse it rather than parse half a line. */
	if (memchr(line + i, '\0', len - i))
		return fail(p, "malformed event: NUL byte");

	json_tokener_reset(p->tok);
	struct json_object *ev = json_tokener_parse_ex(p->tok, line + i, (int)(len - i));
	enum json_tokener_error jerr = json_tokener_get_error(p->tok);
	if (!ev) {
		if (jerr == json_tokener_continue || jerr == json_tokener_success)
			return fail(p, at_end ? "truncated event at end of stream"
			                      : "malformed event: incomplete JSON");
		return fail(p, "malformed event: %s", json_tokener_error_desc(jerr));
	}
	/* ev is owned here from now on. json-c >= 0.15 in strict mode already
	 * refuses trailing data; older versions stop after the object. */
	for (size_t j = i + json_tokener_get_parse_end(p->tok); j < len; j++) {
		if (!is_space(line[j])) {
			json_object_put(ev);
			return fail(p, "malformed event: data after the JSON object");
		}
	}
	if (!json_object_is_type(ev, json_type_object)) {
		json_object_put(ev);
		return fail(p, "malformed event: not a JSON object");
	}
	struct json_object *jt, *obj;
	if (!json_object_object_get_ex(ev, "type", &jt) ||
	    !json_object_is_type(jt, json_type_string)) {
		json_object_put(ev);
		return fail(p, "malformed event: no \"type\" string");
	}
	enum pk_watch_type type;
	if (type_from_string(json_object_get_string(jt), &type) == -1) {
		/* %.32s: the type comes from the wire; keep the message short. */
		fail(p, "unknown event type \"%.32s\"", json_object_get_string(jt));
		json_object_put(ev);
		return -1;
	}
	if (!json_object_object_get_ex(ev, "object", &obj) ||
	    !json_object_is_type(obj, json_type_object)) {
		json_object_put(ev);
		return fail(p, "malformed event: \"object\" is not an object");
	}
	p->events++;
	int rc = p->fn(p->ud, type, obj);
	json_object_put(ev);
	if (rc != 0)
		return fail(p, "stopped");
	return 0;
}

/* Append to the unfinished line, enforcing the cap. */
static int buffer_append(struct pk_watch_parser *p, const char *data, size_t n)
{
	if (n > p->max - p->len)
		return fail(p, "event larger than %zu bytes", p->max);
	if (n == 0)
		return 0;
	if (p->len + n > p->cap) {
		size_t cap = p->cap ? p->cap : 4096;
		if (cap > p->max)
			cap = p->max;
		while (cap < p->len + n)
			cap = cap > p->max / 2 ? p->max : cap * 2;
		p->buf = pk_xrealloc(p->buf, cap);
		p->cap = cap;
	}
	memcpy(p->buf + p->len, data, n);
	p->len += n;
	return 0;
}

/* The buffered line is done with: empty it, and drop a buffer grown for one
 * unusually large event. */
static void buffer_reset(struct pk_watch_parser *p)
{
	p->len = 0;
	if (p->cap > WATCH_KEEP_BUF) {
		free(p->buf);
		p->buf = NULL;
		p->cap = 0;
	}
}

int pk_watch_parser_feed(struct pk_watch_parser *p, const char *data, size_t len)
{
	if (p->failed)
		return -1;
	while (len > 0) {
		const char *nl = memchr(data, '\n', len);
		if (!nl)
			return buffer_append(p, data, len);
		size_t n = (size_t)(nl - data);
		int rc;
		if (p->len) {
			if (buffer_append(p, data, n) == -1)
				return -1;
			rc = handle_line(p, p->buf, p->len, 0);
			if (!p->failed)
				buffer_reset(p);
		} else {
			rc = handle_line(p, data, n, 0);
		}
		if (rc == -1)
			return -1;
		data = nl + 1;
		len -= n + 1;
	}
	return 0;
}

int pk_watch_parser_finish(struct pk_watch_parser *p)
{
	if (p->failed)
		return -1;
	if (!p->len)
		return 0;
	int rc = handle_line(p, p->buf, p->len, 1);
	if (!p->failed)
		buffer_reset(p);
	return rc;
}

int pk_watch_status_code(struct json_object *status)
{
	struct json_object *code;
	if (!status || !json_object_object_get_ex(status, "code", &code) ||
	    !json_object_is_type(code, json_type_int))
		return 0;
	int64_t v = json_object_get_int64(code);
	if (v < INT_MIN || v > INT_MAX)
		return 0;
	return (int)v;
}

const char *pk_watch_object_rv(struct json_object *object)
{
	struct json_object *meta, *rv;
	if (!object || !json_object_object_get_ex(object, "metadata", &meta) ||
	    !json_object_object_get_ex(meta, "resourceVersion", &rv) ||
	    !json_object_is_type(rv, json_type_string))
		return NULL;
	return json_object_get_string(rv);
}
