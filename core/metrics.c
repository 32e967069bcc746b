/*
 * Prometheus metrics rendered the way the Go client (client_golang + expfmt
 * text 0.0.4) renders them, so dashboards and scrapers see the same text:
 * children of a vec sorted by label values, a vec without children omitted
 * entirely, a plain metric always present, numbers formatted like
 * strconv.FormatFloat(v, 'g', -1, 64).
 */
#include "metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "strbuf.h"

const double pk_metrics_default_buckets[11] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
const double pk_metrics_size_buckets[8] = {256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304};

/* One label set of a metric. */
struct series {
	struct series *hnext; /* hash chain */
	uint64_t hash;
	char *values[PK_METRIC_MAX_LABELS]; /* owned copies */
	double value;                       /* counter, gauge */
	double sum;                         /* histogram */
	uint64_t count;                     /* histogram */
	uint64_t *counts; /* histogram, owned: per bucket (not cumulative), then > last bound */
};

struct pk_metric {
	struct pk_metric *next; /* registration order */
	enum pk_metric_type type;
	char *name, *help; /* owned */
	char *labels[PK_METRIC_MAX_LABELS];
	size_t nlabels;
	double *bounds; /* owned, ascending, +Inf excluded */
	size_t nbounds;
	struct series **all; /* owned array (the series too), creation order */
	size_t nall, allcap;
	struct series **table; /* owned array of chain heads; power-of-two size */
	size_t nbuckets;
};

struct pk_metrics {
	struct pk_metric *head, *tail;
};

struct pk_metrics *pk_metrics_new(void)
{
	/* Owner: the caller (pk_metrics_free). */
	return pk_xcalloc(1, sizeof(struct pk_metrics));
}

static void free_metric(struct pk_metric *mt)
{
	for (size_t i = 0; i < mt->nall; i++) {
		struct series *s = mt->all[i];
		for (size_t j = 0; j < mt->nlabels; j++)
			free(s->values[j]);
		free(s->counts);
		free(s);
	}
	for (size_t j = 0; j < mt->nlabels; j++)
		free(mt->labels[j]);
	free(mt->all);
	free(mt->table);
	free(mt->bounds);
	free(mt->name);
	free(mt->help);
	free(mt);
}

void pk_metrics_free(struct pk_metrics *m)
{
	if (!m)
		return;
	struct pk_metric *mt = m->head;
	while (mt) {
		struct pk_metric *next = mt->next;
		free_metric(mt);
		mt = next;
	}
	free(m);
}

static const char *label_value(const char *const *values, size_t i)
{
	/* A NULL array or entry reads as "", so a caller mistake renders an
	 * odd series instead of crashing the data plane. */
	return values && values[i] ? values[i] : "";
}

/* FNV-1a over the values, each terminated by its NUL so that ("ab","c") and
 * ("a","bc") differ. Label values here are low-cardinality (methods, status
 * codes, endpoint IDs of this node's own agent), so an unkeyed hash is fine. */
static uint64_t hash_values(const struct pk_metric *mt, const char *const *values)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < mt->nlabels; i++) {
		const unsigned char *p = (const unsigned char *)label_value(values, i);
		do {
			h ^= *p;
			h *= 0x100000001b3ULL;
		} while (*p++);
	}
	return h;
}

static struct series *new_series(struct pk_metric *mt, const char *const *values, uint64_t hash)
{
	/* Owner: mt (its all[] array). */
	struct series *s = pk_xcalloc(1, sizeof(*s));
	s->hash = hash;
	for (size_t i = 0; i < mt->nlabels; i++)
		s->values[i] = pk_xstrdup(label_value(values, i));
	if (mt->type == PK_METRIC_HISTOGRAM)
		s->counts = pk_xcalloc(mt->nbounds + 1, sizeof(*s->counts));
	if (mt->nall == mt->allcap) {
		mt->allcap = mt->allcap ? mt->allcap * 2 : 4;
		mt->all = pk_xrealloc(mt->all, mt->allcap * sizeof(*mt->all));
	}
	mt->all[mt->nall++] = s;
	return s;
}

static void rehash(struct pk_metric *mt, size_t nb)
{
	struct series **t = pk_xcalloc(nb, sizeof(*t));
	for (size_t i = 0; i < mt->nall; i++) {
		struct series *s = mt->all[i];
		s->hnext = t[s->hash & (nb - 1)];
		t[s->hash & (nb - 1)] = s;
	}
	free(mt->table);
	mt->table = t;
	mt->nbuckets = nb;
}

/* The series for these label values; created when create is set. */
static struct series *lookup(struct pk_metric *mt, const char *const *values, int create)
{
	if (mt->nlabels == 0)
		return mt->all[0];
	uint64_t h = hash_values(mt, values);
	if (mt->nbuckets) {
		for (struct series *s = mt->table[h & (mt->nbuckets - 1)]; s; s = s->hnext) {
			if (s->hash != h)
				continue;
			size_t i = 0;
			while (i < mt->nlabels && strcmp(s->values[i], label_value(values, i)) == 0)
				i++;
			if (i == mt->nlabels)
				return s;
		}
	}
	if (!create)
		return NULL;
	struct series *s = new_series(mt, values, h);
	if (mt->nall > mt->nbuckets) {
		rehash(mt, mt->nbuckets ? mt->nbuckets * 2 : 8);
	} else {
		s->hnext = mt->table[h & (mt->nbuckets - 1)];
		mt->table[h & (mt->nbuckets - 1)] = s;
	}
	return s;
}

void pk_metric_remove(struct pk_metric *metric, const char *const *label_values)
{
	if (metric->nlabels == 0)
		return; /* the one series of an unlabelled metric always exists */
	struct series *s = lookup(metric, label_values, 0);
	if (!s)
		return;
	struct series **pp = &metric->table[s->hash & (metric->nbuckets - 1)];
	while (*pp != s)
		pp = &(*pp)->hnext;
	*pp = s->hnext;
	size_t i = 0;
	while (metric->all[i] != s)
		i++;
	/* Keep creation order for the series that stay. */
	memmove(&metric->all[i], &metric->all[i + 1],
	        (metric->nall - i - 1) * sizeof(*metric->all));
	metric->nall--;
	for (size_t j = 0; j < metric->nlabels; j++)
		free(s->values[j]);
	free(s->counts);
	free(s);
}

void pk_metric_clear(struct pk_metric *metric)
{
	if (metric->nlabels == 0)
		return; /* the one series of an unlabelled metric always exists */
	for (size_t i = 0; i < metric->nall; i++) {
		struct series *s = metric->all[i];
		for (size_t j = 0; j < metric->nlabels; j++)
			free(s->values[j]);
		free(s->counts);
		free(s);
	}
	metric->nall = 0;
	if (metric->nbuckets)
		memset(metric->table, 0, metric->nbuckets * sizeof(*metric->table));
}

static void die(const char *what, const char *name)
{
	/* Registration happens once at start-up with constant arguments: a bad
	 * one is a programming error, like the Go client's panic. */
	fprintf(stderr, "pk_metrics_register: %s: %s\n", name, what);
	abort();
}

struct pk_metric *pk_metrics_register(struct pk_metrics *m, enum pk_metric_type type,
                                      const char *name, const char *help,
                                      const char *const *label_names, size_t nlabels,
                                      const double *buckets, size_t nbuckets)
{
	if (nlabels > PK_METRIC_MAX_LABELS)
		die("too many labels", name);
	/* Owner: m (pk_metrics_free). */
	struct pk_metric *mt = pk_xcalloc(1, sizeof(*mt));
	mt->type = type;
	mt->name = pk_xstrdup(name);
	mt->help = help ? pk_xstrdup(help) : NULL;
	mt->nlabels = nlabels;
	for (size_t i = 0; i < nlabels; i++)
		mt->labels[i] = pk_xstrdup(label_names[i]);
	if (type == PK_METRIC_HISTOGRAM) {
		/* An explicit +Inf upper bound is implicit already (Go drops it). */
		while (nbuckets > 0 && isinf(buckets[nbuckets - 1]) && buckets[nbuckets - 1] > 0)
			nbuckets--;
		for (size_t i = 1; i < nbuckets; i++) {
			if (!(buckets[i - 1] < buckets[i]))
				die("histogram buckets must be in increasing order", name);
		}
		mt->nbounds = nbuckets;
		mt->bounds = pk_xmalloc((nbuckets ? nbuckets : 1) * sizeof(double));
		if (nbuckets)
			memcpy(mt->bounds, buckets, nbuckets * sizeof(double));
	}
	if (nlabels == 0)
		new_series(mt, NULL, 0); /* always rendered, even untouched */
	if (m->tail)
		m->tail->next = mt;
	else
		m->head = mt;
	m->tail = mt;
	return mt;
}

void pk_metric_add(struct pk_metric *metric, const char *const *label_values, double v)
{
	if (metric->type == PK_METRIC_HISTOGRAM)
		return;
	/* Counters only go up; the Go client panics on a negative add, the
	 * data plane must not, so the update is dropped. */
	if (metric->type == PK_METRIC_COUNTER && v < 0)
		return;
	lookup(metric, label_values, 1)->value += v;
}

void pk_metric_set(struct pk_metric *metric, const char *const *label_values, double v)
{
	if (metric->type == PK_METRIC_HISTOGRAM)
		return;
	lookup(metric, label_values, 1)->value = v;
}

void pk_metric_observe(struct pk_metric *metric, const char *const *label_values, double v)
{
	if (metric->type != PK_METRIC_HISTOGRAM)
		return;
	struct series *s = lookup(metric, label_values, 1);
	/* First bucket whose upper bound is >= v (Go: sort.SearchFloat64s);
	 * NaN lands past the last bound, as in Go. */
	size_t lo = 0, hi = metric->nbounds;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (metric->bounds[mid] < v)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (isnan(v))
		lo = metric->nbounds;
	s->counts[lo]++;
	s->count++;
	s->sum += v;
}

/* For histograms, the number of observations. */
double pk_metric_value(const struct pk_metric *metric, const char *const *label_values)
{
	/* lookup() does not modify the metric when create is 0. */
	struct series *s = lookup((struct pk_metric *)metric, label_values, 0);
	if (!s)
		return 0;
	return metric->type == PK_METRIC_HISTOGRAM ? (double)s->count : s->value;
}

/* Rendering */

/* strconv.FormatFloat(v, 'g', -1, 64): the shortest digits that read back as
 * v, in %e form when the decimal exponent is < -4 or >= 6 (Go's 'g' uses 6 as
 * the threshold for shortest formatting: 1e+06, 123456, 0.0001, 1e-05). */
void pk_metrics_format_float(double v, char out[40])
{
	if (isnan(v)) {
		strcpy(out, "NaN");
		return;
	}
	if (isinf(v)) {
		strcpy(out, v > 0 ? "+Inf" : "-Inf");
		return;
	}
	if (v == 0) { /* also -0, which Go prints as 0 here */
		strcpy(out, "0");
		return;
	}
	char e[40];
	int digits = 1;
	for (; digits < 17; digits++) {
		snprintf(e, sizeof(e), "%.*e", digits - 1, v);
		if (strtod(e, NULL) == v)
			break;
	}
	snprintf(e, sizeof(e), "%.*e", digits - 1, v);
	int exp = atoi(strchr(e, 'e') + 1);
	if (exp < -4 || exp >= 6) {
		strcpy(out, e);
		return;
	}
	int decimals = digits - 1 - exp;
	snprintf(out, 40, "%.*f", decimals > 0 ? decimals : 0, v);
}

static void put_float(struct pk_sb *b, double v)
{
	char buf[40];
	pk_metrics_format_float(v, buf);
	pk_sb_str(b, buf);
}

static void put_u64(struct pk_sb *b, uint64_t v)
{
	/* Counts beyond 2^53 lose precision in Go too (they are float64
	 * there); format them the same way. */
	put_float(b, (double)v);
}

/* HELP text: backslash and newline escaped; label values also escape '"'. */
static void put_escaped(struct pk_sb *b, const char *s, int quote)
{
	for (; *s; s++) {
		if (*s == '\\')
			pk_sb_put(b, "\\\\", 2);
		else if (*s == '\n')
			pk_sb_put(b, "\\n", 2);
		else if (quote && *s == '"')
			pk_sb_put(b, "\\\"", 2);
		else
			pk_sb_put(b, s, 1);
	}
}

/* name{a="x",b="y"[,le="..."]} */
static void put_series_name(struct pk_sb *b, const struct pk_metric *mt, const char *suffix,
                            const struct series *s, const char *le)
{
	pk_sb_str(b, mt->name);
	pk_sb_str(b, suffix);
	if (mt->nlabels == 0 && !le)
		return;
	pk_sb_put(b, "{", 1);
	for (size_t i = 0; i < mt->nlabels; i++) {
		if (i)
			pk_sb_put(b, ",", 1);
		pk_sb_str(b, mt->labels[i]);
		pk_sb_put(b, "=\"", 2);
		put_escaped(b, s->values[i], 1);
		pk_sb_put(b, "\"", 1);
	}
	if (le) {
		if (mt->nlabels)
			pk_sb_put(b, ",", 1);
		pk_sb_str(b, "le=\"");
		pk_sb_str(b, le);
		pk_sb_put(b, "\"", 1);
	}
	pk_sb_put(b, "}", 1);
}

static size_t sort_nlabels;

static int cmp_series(const void *a, const void *b)
{
	const struct series *x = *(const struct series *const *)a;
	const struct series *y = *(const struct series *const *)b;
	for (size_t i = 0; i < sort_nlabels; i++) {
		int c = strcmp(x->values[i], y->values[i]);
		if (c)
			return c;
	}
	return 0;
}

static void render_series(struct pk_sb *b, const struct pk_metric *mt, const struct series *s)
{
	if (mt->type != PK_METRIC_HISTOGRAM) {
		put_series_name(b, mt, "", s, NULL);
		pk_sb_put(b, " ", 1);
		put_float(b, s->value);
		pk_sb_put(b, "\n", 1);
		return;
	}
	uint64_t cum = 0;
	char le[40];
	for (size_t i = 0; i <= mt->nbounds; i++) {
		cum += s->counts[i];
		if (i < mt->nbounds)
			pk_metrics_format_float(mt->bounds[i], le);
		else
			strcpy(le, "+Inf");
		put_series_name(b, mt, "_bucket", s, le);
		pk_sb_put(b, " ", 1);
		put_u64(b, cum);
		pk_sb_put(b, "\n", 1);
	}
	put_series_name(b, mt, "_sum", s, NULL);
	pk_sb_put(b, " ", 1);
	put_float(b, s->sum);
	pk_sb_put(b, "\n", 1);
	put_series_name(b, mt, "_count", s, NULL);
	pk_sb_put(b, " ", 1);
	put_u64(b, s->count);
	pk_sb_put(b, "\n", 1);
}

static const char *type_name(enum pk_metric_type t)
{
	switch (t) {
	case PK_METRIC_COUNTER:
		return "counter";
	case PK_METRIC_GAUGE:
		return "gauge";
	case PK_METRIC_HISTOGRAM:
		return "histogram";
	}
	return "untyped";
}

char *pk_metrics_render(const struct pk_metrics *m, size_t *len)
{
	struct pk_sb b = {0};
	pk_sb_put(&b, "", 0); /* an empty registry still returns a string */
	for (const struct pk_metric *mt = m->head; mt; mt = mt->next) {
		if (mt->nall == 0)
			continue; /* a vec without children is not exposed */
		if (mt->help) {
			pk_sb_str(&b, "# HELP ");
			pk_sb_str(&b, mt->name);
			pk_sb_put(&b, " ", 1);
			put_escaped(&b, mt->help, 0);
			pk_sb_put(&b, "\n", 1);
		}
		pk_sb_str(&b, "# TYPE ");
		pk_sb_str(&b, mt->name);
		pk_sb_put(&b, " ", 1);
		pk_sb_str(&b, type_name(mt->type));
		pk_sb_put(&b, "\n", 1);
		/* Sorted by label values like the Go client, on a scratch copy so
		 * rendering does not modify the metric. */
		struct series **order = pk_xmalloc(mt->nall * sizeof(*order));
		memcpy(order, mt->all, mt->nall * sizeof(*order));
		sort_nlabels = mt->nlabels; /* single-threaded, see metrics.h */
		qsort(order, mt->nall, sizeof(*order), cmp_series);
		for (size_t i = 0; i < mt->nall; i++)
			render_series(&b, mt, order[i]);
		free(order);
	}
	/* Owner: the caller. */
	return pk_sb_finish(&b, len);
}
