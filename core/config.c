/*
 * Configuration from option tables: defaults, command-line flags and a strict
 * YAML loader (libyaml's event API), plus Go-compatible ${VAR} expansion and
 * duration parsing. See config.h for the contract.
 *
 * YAML choices (Piko decodes with yaml.v3 and KnownFields(true)):
 *  - nested mappings are dotted key prefixes; a key that names neither an
 *    option nor a prefix of one is an error ("unknown key: proxy.foo"), and so
 *    is a key containing '.', which Go would also reject as unknown;
 *  - a key given twice in one mapping is an error, as in yaml.v3;
 *  - a null value (empty, "~", "null") leaves a scalar option unchanged and
 *    empties a list, which is what yaml.v3 does for Go values and slices;
 *  - only the first document is read (yaml.v3's Decode reads one);
 *  - anchors and aliases are refused: nothing in a config needs them and they
 *    are the usual way to make a YAML loader do unbounded work;
 *  - durations are Go duration strings; a bare integer other than 0 is
 *    refused ("30" is 30 what?), as yaml.v3 refuses integers for
 *    time.Duration;
 *  - booleans are true/false in any case, ints decimal, floats strtod and
 *    finite.
 *
 * Everything the loader builds is bounded: input size, expanded size, key
 * path length, nesting depth and sequence length.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "buf.h"

/* A config file larger than this is a mistake, not a config. */
#define MAX_FILE (1u << 20)
/* Env expansion may grow the text (each $VAR can be a long value). */
#define MAX_EXPANDED (4u << 20)
/* Nesting of mappings and lists; real tables use 4 or 5 levels. */
#define MAX_DEPTH 64
/* Elements of one sequence (string list or list of mappings). */
#define MAX_ELEMS 10000
/* Longest dotted key path we track (display path, list indices included). */
#define MAX_PATH 512
/* Longest flag name we print. */
#define MAX_FLAG 256
/* How much of a bad value an error message quotes. */
#define MAX_QUOTE 64

/* The format attribute makes gcc and clang (the only compilers we build
 * with) check the arguments of every error message. */
__attribute__((format(printf, 3, 4))) static void seterr(char *err, size_t errlen, const char *fmt,
                                                         ...)
{
	if (!err || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Quote up to MAX_QUOTE bytes of s (len bytes, may hold NULs) into buf for an
 * error message, escaping what would not print. buf holds at least
 * MAX_QUOTE * 4 + 8 bytes. */
#define QUOTE_BUF (MAX_QUOTE * 4 + 8)
static const char *quote(char *buf, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;
	buf[n++] = '"';
	for (size_t i = 0; i < len && i < MAX_QUOTE; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			buf[n++] = '\\';
			buf[n++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			buf[n++] = '\\';
			buf[n++] = 'x';
			buf[n++] = hex[c >> 4];
			buf[n++] = hex[c & 15];
		} else {
			buf[n++] = (char)c;
		}
	}
	buf[n++] = '"';
	if (len > MAX_QUOTE) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = '\0';
	return buf;
}

static size_t count_opts(const struct pk_opt *opts)
{
	size_t n = 0;
	while (opts && opts[n].key)
		n++;
	return n;
}

static void *field_of(void *base, const struct pk_opt *o)
{
	return (char *)base + o->offset;
}

static const char *type_name(enum pk_opt_type t)
{
	switch (t) {
	case PK_OPT_STRING:
		return "string";
	case PK_OPT_BOOL:
		return "bool";
	case PK_OPT_INT:
		return "int";
	case PK_OPT_FLOAT:
		return "float";
	case PK_OPT_DURATION:
		return "duration";
	case PK_OPT_STRLIST:
		return "strings";
	case PK_OPT_LIST:
		return "list";
	}
	return "value";
}

/* ---- value parsers (one per type, for defaults, flags and YAML alike) ---- */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int parse_bool(const char *s, int *out)
{
	if (strcasecmp(s, "true") == 0)
		*out = 1;
	else if (strcasecmp(s, "false") == 0)
		*out = 0;
	else
		return -1;
	return 0;
}

static int parse_int(const char *s, int64_t *out)
{
	/* strtoll would also skip leading blanks; a value is exactly a
	 * number. */
	const char *p = s;
	if (*p == '-' || *p == '+')
		p++;
	if (!is_digit(*p))
		return -1;
	errno = 0;
	char *end;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

static int parse_float(const char *s, double *out)
{
	if (*s == '\0' || *s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\v' ||
	    *s == '\f')
		return -1;
	errno = 0;
	char *end;
	double v = strtod(s, &end);
	/* NaN and infinities would make every later comparison quietly
	 * false. */
	if (errno != 0 || *end != '\0' || !isfinite(v))
		return -1;
	*out = v;
	return 0;
}

static uint64_t duration_unit(const char *u, size_t n)
{
	static const struct {
		const char *name;
		uint64_t ns;
	} units[] = {
	    {"ns", 1ULL},           {"us", 1000ULL},
	    {"\xc2\xb5s", 1000ULL}, /* U+00B5 micro sign */
	    {"\xce\xbcs", 1000ULL}, /* U+03BC Greek mu */
	    {"ms", 1000000ULL},     {"s", 1000000000ULL},
	    {"m", 60000000000ULL},  {"h", 3600000000000ULL},
	};
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strlen(units[i].name) == n && memcmp(units[i].name, u, n) == 0)
			return units[i].ns;
	return 0;
}

/* A transcription of Go's time.ParseDuration (same grammar, same overflow
 * rules, nanosecond arithmetic). */
int pk_parse_duration_ns(const char *s, int64_t *out)
{
	const uint64_t lim = 1ULL << 63;
	if (!s)
		return -1;
	const char *p = s;
	bool neg = false;
	if (*p == '-' || *p == '+') {
		neg = *p == '-';
		p++;
	}
	if (strcmp(p, "0") == 0) {
		*out = 0;
		return 0;
	}
	if (*p == '\0')
		return -1;
	uint64_t d = 0;
	while (*p) {
		uint64_t v = 0, f = 0;
		double scale = 1;
		if (!(*p == '.' || is_digit(*p)))
			return -1;
		const char *start = p;
		for (; is_digit(*p); p++) {
			if (v > lim / 10)
				return -1;
			v = v * 10 + (uint64_t)(*p - '0');
			if (v > lim)
				return -1;
		}
		bool pre = p != start;
		bool post = false;
		if (*p == '.') {
			p++;
			const char *fs = p;
			bool overflow = false;
			/* Fraction digits past uint64 precision are dropped,
			 * not an error, as in Go. */
			for (; is_digit(*p); p++) {
				if (overflow)
					continue;
				if (f > (lim - 1) / 10) {
					overflow = true;
					continue;
				}
				uint64_t y = f * 10 + (uint64_t)(*p - '0');
				if (y > lim) {
					overflow = true;
					continue;
				}
				f = y;
				scale *= 10;
			}
			post = p != fs;
		}
		if (!pre && !post)
			return -1;
		const char *u = p;
		while (*p && *p != '.' && !is_digit(*p))
			p++;
		uint64_t unit = duration_unit(u, (size_t)(p - u));
		if (unit == 0)
			return -1;
		if (v > lim / unit)
			return -1;
		v *= unit;
		if (f > 0) {
			/* At most 3.6e12 (ns per hour), exact enough in a
			 * double. */
			v += (uint64_t)((double)f * ((double)unit / scale));
			if (v > lim)
				return -1;
		}
		/* Go adds first and checks after, which wraps for two 2^63
		 * terms; check before. */
		if (v > lim - d)
			return -1;
		d += v;
	}
	int64_t ns;
	if (neg)
		ns = d == lim ? INT64_MIN : -(int64_t)d;
	else if (d > lim - 1)
		return -1;
	else
		ns = (int64_t)d;
	*out = ns;
	return 0;
}

/* Go's duration, floored to milliseconds. */
int pk_parse_duration(const char *s, int64_t *ms)
{
	int64_t ns;
	if (pk_parse_duration_ns(s, &ns) == -1)
		return -1;
	int64_t q = ns / 1000000;
	if (ns % 1000000 != 0 && ns < 0)
		q--; /* floor, not truncation */
	*ms = q;
	return 0;
}

/* ---- fields ---- */

static void strlist_free(struct pk_strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* Append s to l (which owns the copy); cap is the allocated slot count. */
static int strlist_push(struct pk_strlist *l, size_t *cap, const char *s, size_t n)
{
	if (l->n >= MAX_ELEMS)
		return -1;
	if (l->n == *cap) {
		*cap = *cap ? *cap * 2 : 4;
		l->v = pk_xrealloc(l->v, *cap * sizeof(*l->v));
	}
	l->v[l->n++] = pk_xstrndup(s, n);
	return 0;
}

/* Append the comma-separated items of s (the flag and default syntax). */
static int strlist_append_csv(struct pk_strlist *l, const char *s)
{
	size_t cap = l->n; /* a full array: the next push grows it */
	if (*s == '\0')
		return 0;
	for (;;) {
		const char *c = strchr(s, ',');
		size_t n = c ? (size_t)(c - s) : strlen(s);
		if (strlist_push(l, &cap, s, n) == -1)
			return -1;
		if (!c)
			return 0;
		s = c + 1;
	}
}

static void list_free(const struct pk_opt *o, struct pk_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		pk_config_free(o->sub, (char *)l->v + i * o->elem_size);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static void zero_field(const struct pk_opt *o, void *base)
{
	void *f = field_of(base, o);
	switch (o->type) {
	case PK_OPT_STRING:
		*(char **)f = NULL;
		break;
	case PK_OPT_BOOL:
		*(int *)f = 0;
		break;
	case PK_OPT_INT:
	case PK_OPT_DURATION:
		*(int64_t *)f = 0;
		break;
	case PK_OPT_FLOAT:
		*(double *)f = 0;
		break;
	case PK_OPT_STRLIST:
		*(struct pk_strlist *)f = (struct pk_strlist){0};
		break;
	case PK_OPT_LIST:
		*(struct pk_list *)f = (struct pk_list){0};
		break;
	}
}

/* Set a field from text. The field keeps its old value on failure. With
 * append, a string list gets the items added instead of replaced. */
static int set_text(const struct pk_opt *o, void *base, const char *s, bool append)
{
	void *f = field_of(base, o);
	switch (o->type) {
	case PK_OPT_STRING: {
		char *v = pk_xstrdup(s);
		free(*(char **)f);
		*(char **)f = v;
		return 0;
	}
	case PK_OPT_BOOL:
		return parse_bool(s, (int *)f);
	case PK_OPT_INT:
		return parse_int(s, (int64_t *)f);
	case PK_OPT_FLOAT:
		return parse_float(s, (double *)f);
	case PK_OPT_DURATION:
		return pk_parse_duration(s, (int64_t *)f);
	case PK_OPT_STRLIST: {
		struct pk_strlist *l = f;
		if (append)
			return strlist_append_csv(l, s);
		struct pk_strlist nl = {0};
		if (strlist_append_csv(&nl, s) == -1) {
			strlist_free(&nl);
			return -1;
		}
		strlist_free(l);
		*l = nl;
		return 0;
	}
	case PK_OPT_LIST:
		break;
	}
	return -1; /* lists have no text form */
}

int pk_config_defaults(const struct pk_opt *opts, void *cfg, char *err, size_t errlen)
{
	for (const struct pk_opt *o = opts; o && o->key; o++) {
		zero_field(o, cfg);
		if (!o->def)
			continue;
		if (set_text(o, cfg, o->def, false) == -1) {
			char q[QUOTE_BUF];
			seterr(err, errlen, "invalid default for %s: %s", o->key,
			       quote(q, o->def, strlen(o->def)));
			return -1;
		}
	}
	return 0;
}

void pk_config_free_key(const struct pk_opt *opts, void *cfg, const char *key)
{
	for (const struct pk_opt *o = opts; o && o->key; o++) {
		if (strcmp(o->key, key) != 0)
			continue;
		const struct pk_opt one[2] = {*o, {0}};
		pk_config_free(one, cfg);
		return;
	}
}

void pk_config_free(const struct pk_opt *opts, void *cfg)
{
	if (!cfg)
		return;
	for (const struct pk_opt *o = opts; o && o->key; o++) {
		void *f = field_of(cfg, o);
		switch (o->type) {
		case PK_OPT_STRING:
			free(*(char **)f);
			*(char **)f = NULL;
			break;
		case PK_OPT_STRLIST:
			strlist_free(f);
			break;
		case PK_OPT_LIST:
			list_free(o, f);
			break;
		default:
			break;
		}
	}
}

/* ---- flags ---- */

static bool has_flag(const struct pk_opt *o)
{
	return !o->yaml_only && o->type != PK_OPT_LIST;
}

/* Does the flag name (n bytes) spell key with '_' as '-'? */
static bool flag_matches(const char *key, const char *name, size_t n)
{
	size_t i;
	for (i = 0; i < n && key[i]; i++) {
		char k = key[i] == '_' ? '-' : key[i];
		if (k != name[i])
			return false;
	}
	return i == n && key[i] == '\0';
}

static bool name_is(const char *name, size_t n, const char *lit)
{
	return strlen(lit) == n && memcmp(name, lit, n) == 0;
}

int pk_config_parse_flags(const struct pk_opt *opts, void *cfg, int argc, char **argv, char **pos,
                          size_t pos_cap, size_t *npos, const char **config_path, int *expand_env,
                          char *err, size_t errlen)
{
	size_t nopts = count_opts(opts);
	/* Which string lists were given in this parse: the first use replaces
	 * the default, later uses append (pflag's StringSlice behaviour). */
	unsigned char *given = pk_xcalloc(nopts ? nopts : 1, 1);
	size_t np = 0;
	bool only_pos = false;
	int rc = -1;
	char q[QUOTE_BUF];

	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (only_pos || strncmp(a, "--", 2) != 0) {
			if (np >= pos_cap) {
				seterr(err, errlen, "too many arguments: %s",
				       quote(q, a, strlen(a)));
				goto out;
			}
			pos[np++] = argv[i];
			continue;
		}
		if (a[2] == '\0') {
			only_pos = true; /* "--" ends the flags */
			continue;
		}
		const char *name = a + 2;
		const char *eq = strchr(name, '=');
		size_t n = eq ? (size_t)(eq - name) : strlen(name);
		const char *val = eq ? eq + 1 : NULL;
		int nshow = n > MAX_FLAG ? MAX_FLAG : (int)n;

		if (expand_env && name_is(name, n, "config.expand-env")) {
			if (!val)
				*expand_env = 1;
			else if (parse_bool(val, expand_env) == -1) {
				seterr(err, errlen, "invalid value for --config.expand-env: %s",
				       quote(q, val, strlen(val)));
				goto out;
			}
			continue;
		}

		const struct pk_opt *o = NULL;
		size_t idx = 0;
		bool is_path = config_path && name_is(name, n, "config.path");
		if (!is_path) {
			for (idx = 0; idx < nopts; idx++) {
				if (has_flag(&opts[idx]) && flag_matches(opts[idx].key, name, n)) {
					o = &opts[idx];
					break;
				}
			}
			if (!o) {
				seterr(err, errlen, "unknown flag: --%.*s", nshow, name);
				goto out;
			}
		}

		if (!val && o && o->type == PK_OPT_BOOL) {
			val = "true";
		} else if (!val) {
			/* Like pflag: the next argument is the value, whatever
			 * it looks like. */
			if (i + 1 >= argc) {
				seterr(err, errlen, "flag needs an argument: --%.*s", nshow, name);
				goto out;
			}
			val = argv[++i];
		}

		if (is_path) {
			*config_path = val;
			continue;
		}
		bool append = o->type == PK_OPT_STRLIST && given[idx];
		if (set_text(o, cfg, val, append) == -1) {
			seterr(err, errlen, "invalid value for --%.*s: %s (want a %s)", nshow, name,
			       quote(q, val, strlen(val)), type_name(o->type));
			goto out;
		}
		given[idx] = 1;
	}
	rc = 0;
out:
	if (npos)
		*npos = np;
	free(given);
	return rc;
}

void pk_config_print_help(const struct pk_opt *opts, FILE *out)
{
	char names[MAX_FLAG];
	int width = 0;
	for (const struct pk_opt *o = opts; o && o->key; o++) {
		if (!has_flag(o))
			continue;
		int w = (int)strlen(o->key) + 2;
		if (o->type != PK_OPT_BOOL)
			w += 1 + (int)strlen(type_name(o->type));
		if (w > width)
			width = w;
	}
	for (const struct pk_opt *o = opts; o && o->key; o++) {
		if (!has_flag(o))
			continue;
		size_t i;
		for (i = 0; o->key[i] && i + 1 < sizeof(names); i++)
			names[i] = o->key[i] == '_' ? '-' : o->key[i];
		names[i] = '\0';
		char left[MAX_FLAG + 32];
		/* Booleans take no value, so pflag shows no type for them. */
		if (o->type == PK_OPT_BOOL)
			snprintf(left, sizeof(left), "--%s", names);
		else
			snprintf(left, sizeof(left), "--%s %s", names, type_name(o->type));
		fprintf(out, "  %-*s   %s", width, left, o->help ? o->help : "");
		if (o->def && o->def[0])
			fprintf(out, " (default %s)", o->def);
		fputc('\n', out);
	}
}

/* ---- environment expansion (Go os.Expand plus Piko's ${VAR:default}) ---- */

struct obuf {
	char *p;
	size_t n, cap, max;
	bool over;
};

static void ob_put(struct obuf *b, const char *s, size_t n)
{
	if (b->over || n == 0)
		return;
	if (n > b->max - b->n) {
		b->over = true;
		return;
	}
	if (b->n + n + 1 > b->cap) {
		size_t c = b->cap ? b->cap : 256;
		while (c < b->n + n + 1)
			c *= 2;
		b->p = pk_xrealloc(b->p, c);
		b->cap = c;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
}

static bool shell_special(unsigned char c)
{
	return c != '\0' && strchr("*#$@!?-0123456789", c) != NULL;
}

static bool shell_alnum(unsigned char c)
{
	return c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	       (c >= 'A' && c <= 'Z');
}

/* Go's getShellName over s[0..n) (n >= 1): sets the name and returns the
 * bytes consumed. An empty name with a non-zero width is bad syntax, eaten.
 * close is the index in s of the first '}' at or after 1 (n if none),
 * precomputed so a text full of unclosed "${" stays linear. */
static size_t shell_name(const char *s, size_t n, size_t close, const char **name, size_t *nlen)
{
	*name = s;
	*nlen = 0;
	if (s[0] == '{') {
		if (n > 2 && shell_special((unsigned char)s[1]) && s[2] == '}') {
			*name = s + 1;
			*nlen = 1;
			return 3;
		}
		if (close >= n)
			return 1; /* bad syntax: eat "${" */
		if (close == 1)
			return 2; /* bad syntax: eat "${}" */
		*name = s + 1;
		*nlen = close - 1;
		return close + 1;
	}
	if (shell_special((unsigned char)s[0])) {
		*nlen = 1;
		return 1;
	}
	size_t i = 0;
	while (i < n && shell_alnum((unsigned char)s[i]))
		i++;
	*nlen = i;
	return i;
}

/* Piko's mapping: "VAR:default" uses default when VAR is unset or empty. */
static void expand_name(struct obuf *b, const char *name, size_t n)
{
	const char *colon = memchr(name, ':', n);
	size_t klen = colon ? (size_t)(colon - name) : n;
	const char *val = NULL;
	/* A name with '=' or NUL could never be set, and getenv() would
	 * match it against a prefix of some other variable. */
	if (klen > 0 && !memchr(name, '=', klen) && !memchr(name, '\0', klen)) {
		char *key = pk_xstrndup(name, klen);
		val = getenv(key);
		free(key);
	}
	if ((!val || !*val) && colon) {
		ob_put(b, colon + 1, n - klen - 1);
		return;
	}
	if (val)
		ob_put(b, val, strlen(val));
}

/* Expand s[0..len) into a new NUL-terminated string (its length in *outlen),
 * or NULL when the result would exceed max bytes. */
static char *expand(const char *s, size_t len, size_t max, size_t *outlen)
{
	struct obuf b = {.max = max};
	size_t i = 0;
	size_t close = 0; /* index of the next '}' at or after close_from */
	size_t close_from = 0;
	bool close_valid = false;
	for (size_t j = 0; j < len; j++) {
		if (s[j] != '$' || j + 1 >= len)
			continue;
		ob_put(&b, s + i, j - i);
		size_t rest = len - j - 1;
		const char *r = s + j + 1;
		/* The '}' search result stays valid until we pass it. */
		if (!close_valid || close < j + 2) {
			close_from = j + 2;
			const char *c =
			    close_from < len ? memchr(s + close_from, '}', len - close_from) : NULL;
			close = c ? (size_t)(c - s) : len;
			close_valid = true;
		}
		const char *name;
		size_t nlen;
		size_t w = shell_name(r, rest, close - (j + 1), &name, &nlen);
		if (nlen == 0 && w > 0) {
			/* bad syntax: eaten */
		} else if (nlen == 0) {
			ob_put(&b, "$", 1); /* a lone '$' stays */
		} else {
			expand_name(&b, name, nlen);
		}
		j += w;
		i = j + 1;
	}
	ob_put(&b, s + i, len - i);
	if (b.over) {
		free(b.p);
		return NULL;
	}
	if (!b.p)
		b.p = pk_xmalloc(1);
	b.p[b.n] = '\0';
	*outlen = b.n;
	return b.p;
}

char *pk_config_expand_env(const char *in)
{
	size_t n;
	if (!in)
		in = "";
	return expand(in, strlen(in), MAX_EXPANDED, &n);
}

/* ---- YAML ---- */

struct yp {
	yaml_parser_t parser;
	yaml_event_t ev; /* the current event, valid when have_ev */
	bool have_ev;
	char *err;
	size_t errlen;
	/* Display path of the current node ("upstreams[2].url"); the option
	 * key relative to the current table starts at a table base offset. */
	char path[MAX_PATH];
	size_t plen;
};

static size_t ev_line(const struct yp *y)
{
	return y->ev.start_mark.line + 1;
}

static int yp_next(struct yp *y)
{
	if (y->have_ev) {
		yaml_event_delete(&y->ev);
		y->have_ev = false;
	}
	if (!yaml_parser_parse(&y->parser, &y->ev)) {
		const yaml_parser_t *p = &y->parser;
		if (p->error == YAML_MEMORY_ERROR)
			seterr(y->err, y->errlen, "yaml: out of memory");
		else if (p->context)
			seterr(y->err, y->errlen, "yaml: line %zu: %s %s", p->problem_mark.line + 1,
			       p->problem ? p->problem : "syntax error", p->context);
		else
			seterr(y->err, y->errlen, "yaml: line %zu: %s", p->problem_mark.line + 1,
			       p->problem ? p->problem : "syntax error");
		return -1;
	}
	y->have_ev = true;
	const yaml_char_t *anchor = NULL;
	switch (y->ev.type) {
	case YAML_ALIAS_EVENT:
		anchor = y->ev.data.alias.anchor;
		break;
	case YAML_SCALAR_EVENT:
		anchor = y->ev.data.scalar.anchor;
		break;
	case YAML_MAPPING_START_EVENT:
		anchor = y->ev.data.mapping_start.anchor;
		break;
	case YAML_SEQUENCE_START_EVENT:
		anchor = y->ev.data.sequence_start.anchor;
		break;
	default:
		break;
	}
	if (anchor || y->ev.type == YAML_ALIAS_EVENT) {
		seterr(y->err, y->errlen, "yaml: line %zu: anchors and aliases are not supported",
		       ev_line(y));
		return -1;
	}
	return 0;
}

static bool ev_is_null(const struct yp *y)
{
	if (y->ev.type != YAML_SCALAR_EVENT || y->ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *v = (const char *)y->ev.data.scalar.value;
	size_t n = y->ev.data.scalar.length;
	return n == 0 || (n == 1 && v[0] == '~') ||
	       (n == 4 &&
	        (!memcmp(v, "null", 4) || !memcmp(v, "Null", 4) || !memcmp(v, "NULL", 4)));
}

static int path_push(struct yp *y, const char *s, size_t n)
{
	if (n >= sizeof(y->path) - y->plen)
		return -1;
	memcpy(y->path + y->plen, s, n);
	y->plen += n;
	y->path[y->plen] = '\0';
	return 0;
}

static void path_pop(struct yp *y, size_t to)
{
	y->plen = to;
	y->path[to] = '\0';
}

static int err_type(struct yp *y, const char *want)
{
	seterr(y->err, y->errlen, "invalid value for %s: want %s (line %zu)", y->path, want,
	       ev_line(y));
	return -1;
}

static int parse_mapping(struct yp *y, const struct pk_opt *opts, void *base, size_t tbase,
                         int depth);

/* The current event is a scalar for a scalar option. */
static int parse_scalar(struct yp *y, const struct pk_opt *o, void *base)
{
	char q[QUOTE_BUF];
	if (y->ev.type != YAML_SCALAR_EVENT) {
		char want[32];
		snprintf(want, sizeof(want), "a %s", type_name(o->type));
		return err_type(y, want);
	}
	if (ev_is_null(y))
		return 0;
	const char *v = (const char *)y->ev.data.scalar.value;
	size_t n = y->ev.data.scalar.length;
	/* A "\0" escape can put a NUL in a scalar; C strings cannot hold it. */
	if (memchr(v, '\0', n) || set_text(o, base, v, false) == -1) {
		seterr(y->err, y->errlen, "invalid value for %s: %s (want a %s, line %zu)", y->path,
		       quote(q, v, n), type_name(o->type), ev_line(y));
		return -1;
	}
	return 0;
}

static int parse_strlist(struct yp *y, struct pk_strlist *l)
{
	if (ev_is_null(y)) {
		strlist_free(l);
		return 0;
	}
	if (y->ev.type != YAML_SEQUENCE_START_EVENT)
		return err_type(y, "a sequence of strings");
	struct pk_strlist nl = {0}; /* owned here until it replaces *l */
	size_t cap = 0;
	for (;;) {
		if (yp_next(y) == -1)
			goto fail;
		if (y->ev.type == YAML_SEQUENCE_END_EVENT)
			break;
		char q[QUOTE_BUF];
		if (y->ev.type != YAML_SCALAR_EVENT) {
			seterr(y->err, y->errlen,
			       "invalid value for %s[%zu]: want a string (line %zu)", y->path, nl.n,
			       ev_line(y));
			goto fail;
		}
		const char *v = (const char *)y->ev.data.scalar.value;
		size_t n = ev_is_null(y) ? 0 : y->ev.data.scalar.length;
		if (memchr(v, '\0', n)) {
			seterr(y->err, y->errlen, "invalid value for %s[%zu]: %s (line %zu)",
			       y->path, nl.n, quote(q, v, n), ev_line(y));
			goto fail;
		}
		if (strlist_push(&nl, &cap, v, n) == -1) {
			seterr(y->err, y->errlen, "too many elements in %s (limit %d, line %zu)",
			       y->path, MAX_ELEMS, ev_line(y));
			goto fail;
		}
	}
	strlist_free(l);
	*l = nl;
	return 0;
fail:
	strlist_free(&nl);
	return -1;
}

static int parse_list(struct yp *y, const struct pk_opt *o, struct pk_list *l, int depth)
{
	if (ev_is_null(y)) {
		list_free(o, l);
		return 0;
	}
	if (y->ev.type != YAML_SEQUENCE_START_EVENT)
		return err_type(y, "a sequence of mappings");
	if (!o->sub || o->elem_size == 0) {
		seterr(y->err, y->errlen, "%s: option table has no element table", y->path);
		return -1;
	}
	/* Owned here until it replaces *l; n counts every element that may
	 * hold allocations, so the failure path frees them all. */
	struct pk_list nl = {0};
	size_t cap = 0;
	size_t psave = y->plen;
	for (;;) {
		if (yp_next(y) == -1)
			goto fail;
		if (y->ev.type == YAML_SEQUENCE_END_EVENT)
			break;
		if (nl.n >= MAX_ELEMS) {
			seterr(y->err, y->errlen, "too many elements in %s (limit %d, line %zu)",
			       y->path, MAX_ELEMS, ev_line(y));
			goto fail;
		}
		if (nl.n == cap) {
			/* elem_size * MAX_ELEMS fits: tables describe small
			 * structs. */
			cap = cap ? cap * 2 : 4;
			nl.v = pk_xrealloc(nl.v, cap * o->elem_size);
		}
		void *e = (char *)nl.v + nl.n * o->elem_size;
		memset(e, 0, o->elem_size);
		nl.n++;
		char idx[32];
		int k = snprintf(idx, sizeof(idx), "[%zu]", nl.n - 1);
		if (path_push(y, idx, (size_t)k) == -1) {
			seterr(y->err, y->errlen, "key path too long: %s", y->path);
			goto fail;
		}
		if (pk_config_defaults(o->sub, e, y->err, y->errlen) == -1)
			goto fail;
		if (y->ev.type == YAML_MAPPING_START_EVENT) {
			if (path_push(y, ".", 1) == -1) {
				seterr(y->err, y->errlen, "key path too long: %s", y->path);
				goto fail;
			}
			if (parse_mapping(y, o->sub, e, y->plen, depth + 1) == -1)
				goto fail;
		} else if (!ev_is_null(y)) {
			err_type(y, "a mapping");
			goto fail;
		}
		path_pop(y, psave);
	}
	list_free(o, l);
	*l = nl;
	return 0;
fail:
	list_free(o, &nl);
	return -1;
}

static bool key_is_plain(const char *k, size_t n)
{
	if (n == 0 || n > MAX_QUOTE)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)k[i];
		if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
			return false;
	}
	return true;
}

/* Find the option whose key (relative to the table) is rel, or failing that
 * the first option under the prefix rel. */
static long lookup(const struct pk_opt *opts, const char *rel, size_t n, bool *prefix)
{
	long found = -1;
	*prefix = false;
	for (long i = 0; opts && opts[i].key; i++) {
		const char *k = opts[i].key;
		if (strncmp(k, rel, n) != 0)
			continue;
		if (k[n] == '\0')
			return i;
		if (k[n] == '.' && found < 0)
			found = i;
	}
	*prefix = found >= 0;
	return found;
}

/* The current event starts a mapping whose keys are relative to the table at
 * path offset tbase. */
static int parse_mapping(struct yp *y, const struct pk_opt *opts, void *base, size_t tbase,
                         int depth)
{
	if (depth > MAX_DEPTH) {
		seterr(y->err, y->errlen, "yaml: line %zu: nesting too deep", ev_line(y));
		return -1;
	}
	size_t nopts = count_opts(opts);
	/* Keys seen in this mapping, by option index (a prefix by the index of
	 * its first option): duplicates are errors, as in yaml.v3. */
	unsigned char *seen = pk_xcalloc(nopts ? nopts : 1, 1);
	size_t psave = y->plen;
	int rc = -1;
	char q[QUOTE_BUF];
	for (;;) {
		if (yp_next(y) == -1)
			goto out;
		if (y->ev.type == YAML_MAPPING_END_EVENT)
			break;
		if (y->ev.type != YAML_SCALAR_EVENT) {
			seterr(y->err, y->errlen, "yaml: line %zu: keys must be scalars in %s",
			       ev_line(y), y->path[0] ? y->path : "the top level");
			goto out;
		}
		const char *key = (const char *)y->ev.data.scalar.value;
		size_t klen = y->ev.data.scalar.length;
		size_t line = ev_line(y);
		bool prefix = false;
		long idx = -1;
		if (klen > 0 && !memchr(key, '.', klen) && !memchr(key, '\0', klen) &&
		    path_push(y, key, klen) == 0)
			idx = lookup(opts, y->path + tbase, y->plen - tbase, &prefix);
		if (idx < 0) {
			/* Quote only keys that need it: plain ones read better
			 * bare, and tests and users grep for them. */
			if (key_is_plain(key, klen))
				seterr(y->err, y->errlen, "unknown key: %.*s%.*s (line %zu)",
				       (int)psave, y->path, (int)klen, key, line);
			else
				seterr(y->err, y->errlen, "unknown key: %.*s%s (line %zu)",
				       (int)psave, y->path, quote(q, key, klen), line);
			goto out;
		}
		if (seen[idx]) {
			seterr(y->err, y->errlen, "duplicate key: %s (line %zu)", y->path, line);
			goto out;
		}
		seen[idx] = 1;
		if (yp_next(y) == -1)
			goto out;
		int r;
		if (!prefix) {
			const struct pk_opt *o = &opts[idx];
			void *f = field_of(base, o);
			if (o->type == PK_OPT_LIST)
				r = parse_list(y, o, f, depth);
			else if (o->type == PK_OPT_STRLIST)
				r = parse_strlist(y, f);
			else
				r = parse_scalar(y, o, base);
		} else if (y->ev.type == YAML_MAPPING_START_EVENT) {
			r = path_push(y, ".", 1);
			if (r == -1)
				seterr(y->err, y->errlen, "key path too long: %s", y->path);
			else
				r = parse_mapping(y, opts, base, tbase, depth + 1);
		} else if (ev_is_null(y)) {
			r = 0;
		} else {
			r = err_type(y, "a mapping");
		}
		if (r == -1)
			goto out;
		path_pop(y, psave);
	}
	rc = 0;
out:
	free(seen);
	return rc;
}

static int load_document(struct yp *y, const struct pk_opt *opts, void *cfg)
{
	if (yp_next(y) == -1) /* stream start */
		return -1;
	if (yp_next(y) == -1)
		return -1;
	if (y->ev.type == YAML_STREAM_END_EVENT)
		return 0;     /* empty file */
	if (yp_next(y) == -1) /* the root node */
		return -1;
	if (y->ev.type == YAML_MAPPING_START_EVENT) {
		if (parse_mapping(y, opts, cfg, 0, 1) == -1)
			return -1;
	} else if (!ev_is_null(y)) {
		seterr(y->err, y->errlen, "yaml: line %zu: the top level must be a mapping",
		       ev_line(y));
		return -1;
	}
	/* Document end: surfaces a syntax error right after the root node.
	 * Later documents are ignored, as yaml.v3's Decode does. */
	return yp_next(y);
}

int pk_config_load_yaml_buf(const struct pk_opt *opts, void *cfg, const char *text, size_t len,
                            int expand_env, char *err, size_t errlen)
{
	if (len > MAX_FILE) {
		seterr(err, errlen, "config too large: %zu bytes (limit %u)", len, MAX_FILE);
		return -1;
	}
	if (!text)
		text = "";     /* libyaml asserts a non-NULL input */
	char *expanded = NULL; /* owned here */
	if (expand_env) {
		expanded = expand(text, len, MAX_EXPANDED, &len);
		if (!expanded) {
			seterr(err, errlen, "config too large after env expansion (limit %u bytes)",
			       MAX_EXPANDED);
			return -1;
		}
		text = expanded;
	}
	/* Heap, not stack: the parser state plus a path buffer is a few KB
	 * and this may run deep in a caller's stack. */
	struct yp *y = pk_xcalloc(1, sizeof(*y));
	y->err = err;
	y->errlen = errlen;
	int rc = -1;
	if (!yaml_parser_initialize(&y->parser)) {
		seterr(err, errlen, "yaml: out of memory");
		goto out;
	}
	yaml_parser_set_input_string(&y->parser, (const unsigned char *)text, len);
	rc = load_document(y, opts, cfg);
	if (y->have_ev)
		yaml_event_delete(&y->ev);
	yaml_parser_delete(&y->parser);
out:
	free(y);
	free(expanded);
	return rc;
}

int pk_config_load_yaml(const struct pk_opt *opts, void *cfg, const char *path, int expand_env,
                        char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		seterr(err, errlen, "read file: %s: %s", path, strerror(errno));
		return -1;
	}
	/* One byte over the limit tells a too-large file apart. */
	char *buf = pk_xmalloc(MAX_FILE + 1);
	size_t len = 0;
	while (len < MAX_FILE + 1) {
		size_t n = fread(buf + len, 1, MAX_FILE + 1 - len, f);
		if (n == 0)
			break;
		len += n;
	}
	int rc = -1;
	if (ferror(f)) {
		seterr(err, errlen, "read file: %s: %s", path, strerror(errno));
	} else if (len > MAX_FILE) {
		seterr(err, errlen, "read file: %s: larger than %u bytes", path, MAX_FILE);
	} else {
		char msg[512];
		rc = pk_config_load_yaml_buf(opts, cfg, buf, len, expand_env, msg, sizeof(msg));
		if (rc == -1)
			seterr(err, errlen, "parse config: %s: %s", path, msg);
	}
	free(buf);
	fclose(f);
	return rc;
}
