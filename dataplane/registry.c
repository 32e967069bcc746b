/*
 * Endpoint registry: a chained hash table of endpoints, each with an array of
 * upstreams and a round-robin index, behaving exactly like Piko's Go
 * loadBalancer (append on add, index modulo the new length on remove).
 */
#include "registry.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "siphash.h"

struct entry {
	struct entry *next; /* hash chain */
	uint64_t hash;
	void **ups; /* owned: pk_xrealloc'ed array of ncap slots */
	size_t n, ncap;
	size_t idx;  /* next pick */
	char name[]; /* NUL-terminated, allocated with the entry */
};

struct pk_registry {
	struct entry **table; /* owned: nbuckets heads (a power of two) */
	size_t nbuckets;
	size_t nentries;
	size_t nupstreams;
	uint64_t k0, k1; /* hash seed */
};

#define INITIAL_BUCKETS 64

/* Keyed SipHash: endpoint IDs are chosen by peers, so a per-registry random
 * key keeps an attacker from piling every endpoint into one chain. */
static uint64_t siphash(const struct pk_registry *reg, const char *s, size_t len)
{
	return pk_siphash(reg->k0, reg->k1, s, len);
}

struct pk_registry *pk_registry_new(void)
{
	/* Owner: the caller (pk_registry_free). */
	struct pk_registry *reg = pk_xcalloc(1, sizeof(*reg));
	/* Owner: reg. */
	reg->table = pk_xcalloc(INITIAL_BUCKETS, sizeof(*reg->table));
	reg->nbuckets = INITIAL_BUCKETS;
	pk_siphash_seed(&reg->k0, &reg->k1);
	return reg;
}

void pk_registry_free(struct pk_registry *reg)
{
	if (!reg)
		return;
	for (size_t i = 0; i < reg->nbuckets; i++) {
		struct entry *e = reg->table[i];
		while (e) {
			struct entry *next = e->next;
			free(e->ups);
			free(e);
			e = next;
		}
	}
	free(reg->table);
	free(reg);
}

static struct entry **find_slot(const struct pk_registry *reg, const char *endpoint, size_t len,
                                uint64_t hash)
{
	struct entry **pp = &reg->table[hash & (reg->nbuckets - 1)];
	for (; *pp; pp = &(*pp)->next) {
		if ((*pp)->hash == hash && strncmp((*pp)->name, endpoint, len + 1) == 0)
			return pp;
	}
	return pp;
}

static struct entry *find(const struct pk_registry *reg, const char *endpoint)
{
	if (!endpoint)
		return NULL;
	size_t len = strlen(endpoint);
	return *find_slot(reg, endpoint, len, siphash(reg, endpoint, len));
}

/* Double the table when the load factor passes 1, so chains stay short. */
static void maybe_grow(struct pk_registry *reg)
{
	if (reg->nentries <= reg->nbuckets)
		return;
	size_t nb = reg->nbuckets * 2;
	/* Owner: reg (replaces the old table). */
	struct entry **t = pk_xcalloc(nb, sizeof(*t));
	for (size_t i = 0; i < reg->nbuckets; i++) {
		struct entry *e = reg->table[i];
		while (e) {
			struct entry *next = e->next;
			e->next = t[e->hash & (nb - 1)];
			t[e->hash & (nb - 1)] = e;
			e = next;
		}
	}
	free(reg->table);
	reg->table = t;
	reg->nbuckets = nb;
}

int pk_registry_add(struct pk_registry *reg, const char *endpoint, void *upstream)
{
	size_t len = strlen(endpoint);
	uint64_t hash = siphash(reg, endpoint, len);
	struct entry **pp = find_slot(reg, endpoint, len, hash);
	struct entry *e = *pp;
	if (!e) {
		/* Owner: reg, freed when its last upstream is removed. */
		e = pk_xcalloc(1, sizeof(*e) + len + 1);
		memcpy(e->name, endpoint, len + 1);
		e->hash = hash;
		*pp = e;
		reg->nentries++;
		maybe_grow(reg);
	}
	for (size_t i = 0; i < e->n; i++) {
		if (e->ups[i] == upstream)
			return -1;
	}
	if (e->n == e->ncap) {
		e->ncap = e->ncap ? e->ncap * 2 : 2;
		e->ups = pk_xrealloc(e->ups, e->ncap * sizeof(*e->ups));
	}
	e->ups[e->n++] = upstream;
	reg->nupstreams++;
	return 0;
}

int pk_registry_remove(struct pk_registry *reg, const char *endpoint, void *upstream)
{
	size_t len = strlen(endpoint);
	struct entry **pp = find_slot(reg, endpoint, len, siphash(reg, endpoint, len));
	struct entry *e = *pp;
	if (!e)
		return -1;
	size_t i = 0;
	while (i < e->n && e->ups[i] != upstream)
		i++;
	if (i == e->n)
		return -1;
	memmove(&e->ups[i], &e->ups[i + 1], (e->n - i - 1) * sizeof(*e->ups));
	e->n--;
	reg->nupstreams--;
	if (e->n > 0) {
		e->idx %= e->n;
		return 0;
	}
	*pp = e->next;
	free(e->ups);
	free(e);
	reg->nentries--;
	return 0;
}

void *pk_registry_next(struct pk_registry *reg, const char *endpoint)
{
	struct entry *e = find(reg, endpoint);
	if (!e || e->n == 0)
		return NULL;
	void *u = e->ups[e->idx];
	e->idx = (e->idx + 1) % e->n;
	return u;
}

size_t pk_registry_upstreams(const struct pk_registry *reg, const char *endpoint)
{
	const struct entry *e = find(reg, endpoint);
	return e ? e->n : 0;
}

size_t pk_registry_num_endpoints(const struct pk_registry *reg)
{
	return reg->nentries;
}

size_t pk_registry_num_upstreams(const struct pk_registry *reg)
{
	return reg->nupstreams;
}

void pk_registry_foreach(const struct pk_registry *reg,
                         void (*fn)(void *arg, const char *endpoint, size_t count), void *arg)
{
	for (size_t i = 0; i < reg->nbuckets; i++) {
		for (const struct entry *e = reg->table[i]; e; e = e->next)
			fn(arg, e->name, e->n);
	}
}
