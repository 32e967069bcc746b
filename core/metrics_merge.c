/*
 * Summing exposition texts. See metrics_merge.h.
 */
#include "metrics_merge.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "metrics.h"
#include "siphash.h"
#include "strbuf.h"

/* A name (family) or a name with labels (series), in one hash table. */
struct node {
	char *key;
	int is_family;
	struct node *hnext;
};

struct family;

struct series {
	struct node n;
	double v;
	struct family *family;
	struct series *next; /* in its family */
};

struct family {
	struct node n;
	char *help, *type; /* the rest of their lines; NULL: not seen */
	struct series *first, *last;
	struct family *next;
};

struct merge {
	struct node **b;
	size_t nb, count;
	uint64_t k0, k1;
	struct family *first, *last;
};

static size_t slot(const struct merge *m, const char *key, size_t len, int is_family)
{
	return (size_t)(pk_siphash(m->k0 ^ (uint64_t)is_family, m->k1, key, len) & (m->nb - 1));
}

static struct node *find(const struct merge *m, const char *key, size_t len, int is_family)
{
	for (struct node *n = m->b[slot(m, key, len, is_family)]; n; n = n->hnext)
		if (n->is_family == is_family && !strncmp(n->key, key, len) && !n->key[len])
			return n;
	return NULL;
}

static void insert(struct merge *m, struct node *n)
{
	if (m->count + 1 > m->nb) {
		/* Doubled past a load factor of 1. Owner: m. */
		size_t nb = m->nb * 2;
		struct node **b = pk_xcalloc(nb, sizeof(*b));
		struct node **old = m->b;
		size_t onb = m->nb;
		m->b = b;
		m->nb = nb;
		for (size_t i = 0; i < onb; i++)
			for (struct node *x = old[i], *next; x; x = next) {
				next = x->hnext;
				size_t s = slot(m, x->key, strlen(x->key), x->is_family);
				x->hnext = b[s];
				b[s] = x;
			}
		free(old);
	}
	size_t s = slot(m, n->key, strlen(n->key), n->is_family);
	n->hnext = m->b[s];
	m->b[s] = n;
	m->count++;
}

static char *dup_n(const char *s, size_t n)
{
	char *p = pk_xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static struct family *family(struct merge *m, const char *name, size_t len)
{
	struct node *n = find(m, name, len, 1);
	if (n)
		return (struct family *)n;
	/* Owner: m (merge_free). */
	struct family *f = pk_xcalloc(1, sizeof(*f));
	f->n.key = dup_n(name, len);
	f->n.is_family = 1;
	insert(m, &f->n);
	if (m->last)
		m->last->next = f;
	else
		m->first = f;
	m->last = f;
	return f;
}

/* The family a new sample belongs to: the current one (that of the line
 * before) when the sample's name is the family's or one of its suffixed
 * names (_bucket, _sum, _count), else a family of its own name. Following
 * the line before, not the last comment, makes the sum a normal form:
 * summed again alone, it comes back byte for byte (fuzz_metrics_merge). */
static struct family *family_of(struct merge *m, struct family *cur, const char *key, size_t len)
{
	size_t nlen = 0;
	while (nlen < len && key[nlen] != '{' && key[nlen] != ' ')
		nlen++;
	if (cur) {
		size_t flen = strlen(cur->n.key);
		if (nlen >= flen && !strncmp(key, cur->n.key, flen))
			return cur;
	}
	return family(m, key, nlen);
}

/* Returns the family the series is in. */
static struct family *add_sample(struct merge *m, struct family *f, const char *key, size_t len,
                                 double v)
{
	struct node *n = find(m, key, len, 0);
	if (n) {
		((struct series *)n)->v += v;
		return ((struct series *)n)->family;
	}
	/* Owner: m (merge_free). */
	struct series *s = pk_xcalloc(1, sizeof(*s));
	s->n.key = dup_n(key, len);
	s->v = v;
	s->family = f;
	insert(m, &s->n);
	if (f->last)
		f->last->next = s;
	else
		f->first = s;
	f->last = s;
	return f;
}

/* "# HELP name rest" or "# TYPE name rest": the family, its rest kept. */
static struct family *comment(struct merge *m, const char *line, size_t len)
{
	int help = len > 7 && !strncmp(line, "# HELP ", 7);
	int type = len > 7 && !strncmp(line, "# TYPE ", 7);
	if (!help && !type)
		return NULL;
	const char *name = line + 7;
	size_t rest = len - 7;
	const char *sp = memchr(name, ' ', rest);
	size_t nlen = sp ? (size_t)(sp - name) : rest;
	if (!nlen)
		return NULL;
	struct family *f = family(m, name, nlen);
	char **field = help ? &f->help : &f->type;
	if (!*field)
		*field = sp ? dup_n(sp + 1, rest - nlen - 1) : dup_n("", 0);
	return f;
}

/* "series value": the value is after the last space (label values may
 * hold spaces; the format's optional timestamp is not written by ours). */
static int sample(const char *line, size_t len, size_t *key_len, double *v)
{
	size_t sp = len;
	while (sp > 0 && line[sp - 1] != ' ')
		sp--;
	if (sp < 2)
		return -1;
	char num[64];
	size_t vlen = len - sp;
	if (!vlen || vlen >= sizeof(num))
		return -1;
	memcpy(num, line + sp, vlen);
	num[vlen] = '\0';
	char *end;
	*v = strtod(num, &end);
	if (*end)
		return -1;
	*key_len = sp - 1;
	return 0;
}

/* key with label="value" put first among its labels. Owner: the caller. */
static char *labelled(const char *key, size_t len, const char *label, size_t idx, size_t *out)
{
	size_t nlen = 0;
	while (nlen < len && key[nlen] != '{')
		nlen++;
	struct pk_sb b = {0};
	pk_sb_put(&b, key, nlen);
	pk_sb_printf(&b, "{%s=\"%zu\"", label, idx);
	if (nlen < len) {
		/* "{}" gets no comma */
		if (nlen + 1 < len && key[nlen + 1] != '}')
			pk_sb_put(&b, ",", 1);
		pk_sb_put(&b, key + nlen + 1, len - nlen - 1);
	} else {
		pk_sb_put(&b, "}", 1);
	}
	return pk_sb_finish(&b, out);
}

static void merge_text(struct merge *m, const char *t, size_t len, const char *label, size_t idx)
{
	struct family *cur = NULL;
	while (len) {
		const char *nl = memchr(t, '\n', len);
		size_t ll = nl ? (size_t)(nl - t) : len;
		if (!ll || memchr(t, '\0', ll)) {
			/* blank, or not text: dropped */
		} else if (t[0] == '#') {
			struct family *f = comment(m, t, ll);
			if (f)
				cur = f;
		} else {
			size_t klen;
			double v;
			if (sample(t, ll, &klen, &v) < 0) {
				/* not "series value": dropped */
			} else if (label) {
				size_t kl;
				char *k = labelled(t, klen, label, idx, &kl);
				cur = add_sample(m, family_of(m, cur, k, kl), k, kl, v);
				free(k);
			} else {
				cur = add_sample(m, family_of(m, cur, t, klen), t, klen, v);
			}
		}
		t += ll + (nl ? 1 : 0);
		len -= ll + (nl ? 1 : 0);
	}
}

static void merge_free(struct merge *m)
{
	for (struct family *f = m->first, *fn; f; f = fn) {
		fn = f->next;
		for (struct series *s = f->first, *sn; s; s = sn) {
			sn = s->next;
			free(s->n.key);
			free(s);
		}
		free(f->n.key);
		free(f->help);
		free(f->type);
		free(f);
	}
	free(m->b);
}

char *pk_metrics_merge(const char *const *texts, const size_t *lens, size_t n, const char *label,
                       size_t *out_len)
{
	struct merge m;
	memset(&m, 0, sizeof(m));
	m.nb = 64;
	/* Owner: m. */
	m.b = pk_xcalloc(m.nb, sizeof(*m.b));
	pk_siphash_seed(&m.k0, &m.k1);
	for (size_t i = 0; i < n; i++)
		merge_text(&m, texts[i], lens[i], label, i);

	struct pk_sb b = {0};
	for (struct family *f = m.first; f; f = f->next) {
		if (f->help)
			pk_sb_printf(&b, "# HELP %s %s\n", f->n.key, f->help);
		if (f->type)
			pk_sb_printf(&b, "# TYPE %s %s\n", f->n.key, f->type);
		for (struct series *s = f->first; s; s = s->next) {
			char v[40];
			pk_metrics_format_float(s->v, v);
			pk_sb_str(&b, s->n.key);
			pk_sb_put(&b, " ", 1);
			pk_sb_str(&b, v);
			pk_sb_put(&b, "\n", 1);
		}
	}
	merge_free(&m);
	return pk_sb_finish(&b, out_len);
}
