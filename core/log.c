/*
 * JSON-lines logger; see log.h for the record shape.
 *
 * The level, subsystem list and fd are set at startup, before any thread
 * logs, so they are plain globals. Each record is built in a fixed buffer on
 * the stack and written with one write(2); a record that does not fit is cut
 * inside a string value (never inside a key or an escape), so every line
 * stays valid JSON.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "strbuf.h"

/* Longest record, newline included. */
#define LINE_MAX_BYTES 8192
/* Bytes kept free for the closing "}\n". */
#define LINE_TAIL 2

static enum pk_log_level g_level = PK_LOG_INFO;
static char **g_subsystems; /* owned: copies made by pk_log_set_subsystems */
static size_t g_nsubsystems;
static int g_fd = STDERR_FILENO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int pk_log_parse_level(const char *s)
{
	for (int i = 0; s && i < 4; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

void pk_log_set_level(enum pk_log_level level)
{
	g_level = level;
}

void pk_log_set_fd(int fd)
{
	g_fd = fd < 0 ? STDERR_FILENO : fd;
}

void pk_log_reset(void)
{
	for (size_t i = 0; i < g_nsubsystems; i++)
		free(g_subsystems[i]);
	free(g_subsystems);
	g_subsystems = NULL;
	g_nsubsystems = 0;
}

void pk_log_set_subsystems(char *const *names, size_t n)
{
	pk_log_reset();
	if (!names || n == 0)
		return;
	g_subsystems = pk_xcalloc(n, sizeof(*g_subsystems));
	for (size_t i = 0; i < n; i++)
		if (names[i])
			g_subsystems[g_nsubsystems++] = pk_xstrdup(names[i]);
}

int pk_log_enabled(enum pk_log_level level, const char *subsystem)
{
	if (level >= g_level)
		return 1;
	for (size_t i = 0; subsystem && i < g_nsubsystems; i++)
		if (strcmp(g_subsystems[i], subsystem) == 0)
			return 1;
	return 0;
}

void pk_log_timestamp_at(int64_t unix_ms, char *buf, size_t len)
{
	if (!buf || len == 0)
		return;
	/* Floor division so times before 1970 still get 0..999 ms. */
	int64_t secs = unix_ms / 1000;
	int ms = (int)(unix_ms % 1000);
	if (ms < 0) {
		ms += 1000;
		secs--;
	}
	time_t t = (time_t)secs;
	struct tm tm;
	if (!gmtime_r(&t, &tm)) {
		snprintf(buf, len, "invalid-time");
		return;
	}
	/* Go's ".999": milliseconds with trailing zeros trimmed, and no dot
	 * at all when they are zero. */
	char frac[5] = "";
	if (ms) {
		snprintf(frac, sizeof(frac), ".%03d", ms);
		size_t n = strlen(frac);
		/* n > 1: ".000" never gets here (ms != 0), but GCC 12 at -O3
		 * cannot see that and warns of frac[-1] (-Wstringop-overflow). */
		while (n > 1 && frac[n - 1] == '0')
			frac[--n] = '\0';
	}
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

void pk_log_timestamp(char *buf, size_t len)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	pk_log_timestamp_at((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, buf, len);
}

struct line {
	char b[LINE_MAX_BYTES];
	size_t n;
	bool cut; /* out of room: later fields are dropped */
};

static bool room(const struct line *l, size_t n)
{
	return n <= LINE_MAX_BYTES - LINE_TAIL - l->n;
}

/* Callers check room() first. */
static void raw(struct line *l, const char *s, size_t n)
{
	memcpy(l->b + l->n, s, n);
	l->n += n;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if it is invalid. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned char c = s[0];
	size_t n;
	unsigned cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80) /* also stops at the NUL */
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates and beyond U+10FFFF are invalid. */
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* Append s JSON-escaped (without quotes), keeping `keep` bytes free after
 * it. Returns false if s had to be cut (at a character boundary). Escaping
 * follows zap: \" \\ \n \r \t, other control bytes \u00xx, invalid UTF-8
 * as U+FFFD. */
static bool esc(struct line *l, const char *str, size_t keep)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)str;
	while (*s) {
		char tmp[8];
		size_t tn = 0, adv = 1;
		unsigned char c = *s;
		if (c == '"' || c == '\\') {
			tmp[tn++] = '\\';
			tmp[tn++] = (char)c;
		} else if (c == '\n') {
			memcpy(tmp, "\\n", 2);
			tn = 2;
		} else if (c == '\r') {
			memcpy(tmp, "\\r", 2);
			tn = 2;
		} else if (c == '\t') {
			memcpy(tmp, "\\t", 2);
			tn = 2;
		} else if (c < 0x20) {
			memcpy(tmp, "\\u00", 4);
			tmp[4] = hex[c >> 4];
			tmp[5] = hex[c & 15];
			tn = 6;
		} else if (c < 0x80) {
			tmp[tn++] = (char)c;
		} else if ((adv = utf8_len(s)) != 0) {
#ifndef __clang_analyzer__
			/* utf8_len() read these adv bytes, none a NUL, so they are
			 * in the string; the analyzer, which lost a literal's
			 * contents, took adv bytes as past its end. */
			memcpy(tmp, s, adv);
#endif
			tn = adv;
		} else {
			memcpy(tmp, "\\ufffd", 6);
			tn = 6;
			adv = 1;
		}
		if (!room(l, tn + keep))
			return false;
		raw(l, tmp, tn);
		s += adv;
	}
	return true;
}

/* Append ,"key":"val". The key goes in whole or the field not at all; the
 * value may be cut. */
static void field(struct line *l, const char *key, const char *val)
{
	if (l->cut)
		return;
	size_t n0 = l->n;
	if (!room(l, 2))
		goto undo;
	raw(l, ",\"", 2);
	if (!esc(l, key ? key : "", 4)) /* 4: the ":" "" around the value */
		goto undo;
	raw(l, "\":\"", 3);
	if (!esc(l, val ? val : "", 1))
		l->cut = true;
	raw(l, "\"", 1);
	return;
undo:
	l->n = n0;
	l->cut = true;
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return; /* nowhere left to report a logging failure */
		}
		p += w;
		n -= (size_t)w;
	}
}

/* Start a record: level, ts, subsystem and msg. */
static void envelope(struct line *l, enum pk_log_level level, const char *subsystem,
                     const char *msg)
{
	l->n = 0;
	l->cut = false;
	int li = (int)level;
	const char *lname = li >= 0 && li < 4 ? level_names[li] : "error";
	char ts[64];
	pk_log_timestamp(ts, sizeof(ts));
	raw(l, "{\"level\":\"", 10);
	raw(l, lname, strlen(lname));
	raw(l, "\"", 1);
	field(l, "ts", ts);
	if (subsystem)
		field(l, "subsystem", subsystem);
	field(l, "msg", msg);
}

void pk_log(enum pk_log_level level, const char *subsystem, const char *msg, ...)
{
	if (!pk_log_enabled(level, subsystem))
		return;
	struct line l;
	envelope(&l, level, subsystem, msg);

	va_list ap;
	va_start(ap, msg);
	for (;;) {
		const char *k = va_arg(ap, const char *);
		if (!k)
			break;
		const char *v = va_arg(ap, const char *);
		field(&l, k, v);
	}
	va_end(ap);

	/* LINE_TAIL kept these two bytes free. */
	l.b[l.n++] = '}';
	l.b[l.n++] = '\n';
	write_all(g_fd, l.b, l.n);
}

void pk_log_json(enum pk_log_level level, const char *subsystem, const char *msg, const char *key,
                 const char *json)
{
	if (!pk_log_enabled(level, subsystem))
		return;
	struct line l;
	envelope(&l, level, subsystem, msg);
	/* The envelope fits in a line; the value may not (whole header sets),
	 * so the record is assembled on the heap and still written at once. */
	struct pk_sb b = {0};
	pk_sb_put(&b, l.b, l.n);
	pk_sb_str(&b, ",");
	pk_sb_json_string(&b, key ? key : "", 0);
	pk_sb_str(&b, ":");
	pk_sb_str(&b, json && *json ? json : "null");
	pk_sb_str(&b, "}\n");
	size_t n;
	char *out = pk_sb_finish(&b, &n);
	write_all(g_fd, out, n);
	free(out);
}
