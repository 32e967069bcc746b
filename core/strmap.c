/*
 * String to int64 map: a chained hash table of power-of-two size. Each entry
 * is one allocation holding the key inline, and caches its full hash so that
 * growth never rehashes strings and chain walks compare strings only on a
 * hash match.
 */
#include "strmap.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "siphash.h"

struct entry {
	struct entry *next; /* hash chain */
	uint64_t hash;
	int64_t value; /* never 0 while the entry is in the table */
	char key[];    /* NUL-terminated, allocated with the entry */
};

struct pk_strmap {
	struct entry **table; /* owned: nbuckets heads (a power of two) */
	size_t nbuckets;
	size_t count;
	uint64_t sum;    /* unsigned so that overflow wraps instead of being UB */
	uint64_t k0, k1; /* hash key */
};

#define INITIAL_BUCKETS 16

struct pk_strmap *pk_strmap_new(void)
{
	/* Owner: the caller (pk_strmap_free). */
	struct pk_strmap *m = pk_xcalloc(1, sizeof(*m));
	/* Owner: m. */
	m->table = pk_xcalloc(INITIAL_BUCKETS, sizeof(*m->table));
	m->nbuckets = INITIAL_BUCKETS;
	pk_siphash_seed(&m->k0, &m->k1);
	return m;
}

static void free_entries(struct pk_strmap *m)
{
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct entry *e = m->table[i];
		while (e) {
			struct entry *next = e->next;
			free(e);
			e = next;
		}
		m->table[i] = NULL;
	}
	m->count = 0;
	m->sum = 0;
}

void pk_strmap_free(struct pk_strmap *m)
{
	if (!m)
		return;
	free_entries(m);
	free(m->table);
	m->table = NULL;
	free(m);
}

void pk_strmap_clear(struct pk_strmap *m)
{
	free_entries(m);
}

/* The link that points at key's entry, or the NULL link ending its chain
 * (where a new entry for key goes). */
static struct entry **find_slot(const struct pk_strmap *m, const char *key, uint64_t hash)
{
	struct entry **pp = &m->table[hash & (m->nbuckets - 1)];
	for (; *pp; pp = &(*pp)->next) {
		/* strcmp, not memcmp over len + 1: a shorter stored key
		 * must not be read past its NUL. */
		if ((*pp)->hash == hash && strcmp((*pp)->key, key) == 0)
			return pp;
	}
	return pp;
}

/* Double the table when the load factor passes 1, so chains stay short. */
static void maybe_grow(struct pk_strmap *m)
{
	if (m->count <= m->nbuckets)
		return;
	size_t nb = m->nbuckets * 2;
	/* Owner: m (replaces the old table). */
	struct entry **t = pk_xcalloc(nb, sizeof(*t));
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct entry *e = m->table[i];
		while (e) {
			struct entry *next = e->next;
			e->next = t[e->hash & (nb - 1)];
			t[e->hash & (nb - 1)] = e;
			e = next;
		}
	}
	free(m->table);
	m->table = t;
	m->nbuckets = nb;
}

/* Make key's value v (add: its old value plus v), removing it when that is 0
 * and keeping count and sum up to date; returns the previous value. The one
 * place that changes the table, hashing the key once for both the lookup and
 * the update. */
static int64_t store(struct pk_strmap *m, const char *key, int64_t v, int add)
{
	assert(key);
	size_t len = strlen(key);
	uint64_t hash = pk_siphash(m->k0, m->k1, key, len);
	struct entry **pp = find_slot(m, key, hash);
	struct entry *e = *pp;
	int64_t old = e ? e->value : 0;
	/* Through uint64_t: wraps on overflow rather than being UB. */
	int64_t value = add ? (int64_t)((uint64_t)old + (uint64_t)v) : v;
	m->sum += (uint64_t)value - (uint64_t)old;
	if (e && value != 0) {
		e->value = value;
	} else if (e) {
		*pp = e->next;
		free(e);
		m->count--;
	} else if (value != 0) {
		/* Owner: m, freed when its value returns to 0. */
		e = pk_xmalloc(sizeof(*e) + len + 1);
		memcpy(e->key, key, len + 1);
		e->hash = hash;
		e->value = value;
		e->next = NULL;
		*pp = e;
		m->count++;
		maybe_grow(m);
	}
	return old;
}

int64_t pk_strmap_set(struct pk_strmap *m, const char *key, int64_t value)
{
	return store(m, key, value, 0);
}

int64_t pk_strmap_add(struct pk_strmap *m, const char *key, int64_t delta)
{
	int64_t old = store(m, key, delta, 1);
	return (int64_t)((uint64_t)old + (uint64_t)delta);
}

int64_t pk_strmap_get(const struct pk_strmap *m, const char *key)
{
	assert(key);
	const struct entry *e = *find_slot(m, key, pk_siphash(m->k0, m->k1, key, strlen(key)));
	return e ? e->value : 0;
}

size_t pk_strmap_count(const struct pk_strmap *m)
{
	return m->count;
}

int64_t pk_strmap_sum(const struct pk_strmap *m)
{
	return (int64_t)m->sum;
}

void pk_strmap_foreach(const struct pk_strmap *m,
                       void (*fn)(void *arg, const char *key, int64_t value), void *arg)
{
	for (size_t i = 0; i < m->nbuckets; i++) {
		for (const struct entry *e = m->table[i]; e; e = e->next)
			fn(arg, e->key, e->value);
	}
}
