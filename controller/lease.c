/*
 * Leader election state machine over a coordination.k8s.io/v1 Lease; see
 * lease.h for the protocol and the guarantees. Pure: no I/O, no clock reads.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "lease.h"

#define DEFAULT_DURATION_MS 15000
#define DEFAULT_RENEW_DEADLINE_MS 10000
#define DEFAULT_RETRY_MS 2000

struct pk_lease {
	char *name, *namespace, *identity;
	uint64_t duration_ms, renew_deadline_ms, retry_ms;

	/* What the last GET showed. observed_rv is NULL before the first Lease
	 * is seen, after a 404 and after a write whose response we did not get;
	 * the next Lease then counts as a change, which can only delay a
	 * takeover, never hasten one. */
	char *observed_rv;
	uint64_t observed_ms; /* our clock when observed_rv was first seen */
	/* When another holder's Lease expires on our clock (UINT64_MAX when the
	 * holder is us, or there is none). */
	uint64_t other_expires_ms;
	bool observed_once;
	uint64_t last_observe_ms;

	bool leader;
	/* We acquired the Lease at some point and did not release it: from then
	 * on pk_lease_lost() watches renewed_ms. */
	bool was_leader;
	uint64_t renewed_ms; /* our clock at the last successful write */

	/* The body handed out by the last observe, kept until its write
	 * result, so a 2xx without a response body still tells us what we
	 * wrote. */
	struct json_object *pending;
	enum pk_lease_action pending_action;
	/* The last Lease we wrote (the server's copy when we got one): the base
	 * of the release body. */
	struct json_object *written;
};

static char *dup_or_empty(const char *s)
{
	return pk_xstrdup(s ? s : "");
}

struct pk_lease *pk_lease_new(const struct pk_lease_opts *o, uint64_t now_ms)
{
	/* Owner: the caller; pk_lease_free(). */
	struct pk_lease *l = pk_xcalloc(1, sizeof(*l));
	l->name = dup_or_empty(o->name);
	l->namespace = dup_or_empty(o->namespace);
	l->identity = dup_or_empty(o->identity);
	l->duration_ms = o->duration_ms ? o->duration_ms : DEFAULT_DURATION_MS;
	l->renew_deadline_ms =
	    o->renew_deadline_ms ? o->renew_deadline_ms : DEFAULT_RENEW_DEADLINE_MS;
	l->retry_ms = o->retry_ms ? o->retry_ms : DEFAULT_RETRY_MS;
	l->other_expires_ms = UINT64_MAX;
	/* Nothing to expire yet; keeps next_ms and lost well defined. */
	l->observed_ms = now_ms;
	l->last_observe_ms = now_ms;
	return l;
}

void pk_lease_free(struct pk_lease *l)
{
	if (!l)
		return;
	free(l->name);
	free(l->namespace);
	free(l->identity);
	free(l->observed_rv);
	json_object_put(l->pending);
	json_object_put(l->written);
	free(l);
}

void pk_lease_microtime(int64_t unix_us, char *buf, size_t len)
{
	int64_t sec = unix_us / 1000000, us = unix_us % 1000000;
	struct tm tm;
	time_t t;
	if (len == 0)
		return;
	/* C division truncates toward zero; MicroTime wants the floor. */
	if (us < 0) {
		us += 1000000;
		sec--;
	}
	t = (time_t)sec;
	if (!gmtime_r(&t, &tm)) {
		buf[0] = '\0';
		return;
	}
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)us);
}

/* ---- JSON helpers ----------------------------------------------------------- */

static struct json_object *get_obj(struct json_object *o, const char *key)
{
	struct json_object *v;
	if (!o || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_object))
		return NULL;
	return v;
}

static const char *get_str(struct json_object *o, const char *key)
{
	struct json_object *v;
	if (!o || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static int64_t get_int(struct json_object *o, const char *key, int64_t dflt)
{
	struct json_object *v;
	if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
		return dflt;
	return json_object_get_int64(v);
}

static const char *lease_rv(struct json_object *lease)
{
	return get_str(get_obj(lease, "metadata"), "resourceVersion");
}

/* The object (as an owned reference) with key set to a fresh object when it
 * holds none. */
static struct json_object *ensure_obj(struct json_object *o, const char *key)
{
	struct json_object *v = get_obj(o, key);
	if (!v) {
		v = json_object_new_object();
		json_object_object_add(o, key, v);
	}
	return v;
}

/* Owner: the caller (free). Plain, and without json-c's "\/" escaping so the
 * apiVersion reads as it does everywhere else. */
static char *to_string(struct json_object *o)
{
	return pk_xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
	                                                        JSON_C_TO_STRING_NOSLASHESCAPE));
}

static struct json_object *copy_of(struct json_object *src)
{
	struct json_object *dst = NULL;
	if (json_object_deep_copy(src, &dst, NULL) != 0)
		abort(); /* only fails on OOM; the project's policy is to abort */
	return dst;
}

static int64_t duration_seconds(uint64_t ms)
{
	/* Round up: never announce less than we will honour. */
	int64_t s = (int64_t)((ms + 999) / 1000);
	return s > 0 ? s : 1;
}

/* Write our claim into base's spec. acquireTime changes only when the
 * holder changes; leaseTransitions counts holder changes. */
static void set_spec(const struct pk_lease *l, struct json_object *base, enum pk_lease_action a,
                     const char *wall_now)
{
	struct json_object *spec = ensure_obj(base, "spec");
	int64_t transitions = get_int(spec, "leaseTransitions", 0);
	const char *acquired = get_str(spec, "acquireTime");

	if (!get_str(base, "apiVersion"))
		json_object_object_add(base, "apiVersion",
		                       json_object_new_string("coordination.k8s.io/v1"));
	if (!get_str(base, "kind"))
		json_object_object_add(base, "kind", json_object_new_string("Lease"));
	if (a == PK_LEASE_CREATE)
		transitions = 0;
	else if (a == PK_LEASE_TAKEOVER)
		transitions++;
	if (a != PK_LEASE_RENEW || !acquired)
		json_object_object_add(spec, "acquireTime", json_object_new_string(wall_now));
	json_object_object_add(spec, "holderIdentity", json_object_new_string(l->identity));
	json_object_object_add(spec, "leaseDurationSeconds",
	                       json_object_new_int64(duration_seconds(l->duration_ms)));
	json_object_object_add(spec, "renewTime", json_object_new_string(wall_now));
	json_object_object_add(spec, "leaseTransitions", json_object_new_int64(transitions));
}

static struct json_object *new_lease(const struct pk_lease *l)
{
	struct json_object *o = json_object_new_object();
	struct json_object *md = json_object_new_object();
	json_object_object_add(o, "apiVersion", json_object_new_string("coordination.k8s.io/v1"));
	json_object_object_add(o, "kind", json_object_new_string("Lease"));
	json_object_object_add(md, "name", json_object_new_string(l->name));
	json_object_object_add(md, "namespace", json_object_new_string(l->namespace));
	json_object_object_add(o, "metadata", md);
	return o;
}

static void set_observed_rv(struct pk_lease *l, const char *rv, uint64_t now_ms)
{
	if (rv && l->observed_rv && !strcmp(rv, l->observed_rv))
		return;
	free(l->observed_rv);
	l->observed_rv = rv ? pk_xstrdup(rv) : NULL;
	l->observed_ms = now_ms;
}

/* ---- the state machine ------------------------------------------------------ */

bool pk_lease_lost(const struct pk_lease *l, uint64_t now_ms)
{
	return l->was_leader && now_ms >= l->renewed_ms &&
	       now_ms - l->renewed_ms >= l->renew_deadline_ms;
}

bool pk_lease_is_leader(const struct pk_lease *l)
{
	return l->leader;
}

enum pk_lease_action pk_lease_observe(struct pk_lease *l, struct json_object *lease,
                                      uint64_t now_ms, const char *wall_now, char **body)
{
	enum pk_lease_action a;
	struct json_object *out;

	*body = NULL;
	l->observed_once = true;
	l->last_observe_ms = now_ms;
	json_object_put(l->pending);
	l->pending = NULL;
	l->pending_action = PK_LEASE_NONE;
	l->other_expires_ms = UINT64_MAX;

	if (!lease) {
		/* Deleted under us (or never made): whoever creates it first
		 * leads, and until then nobody does. */
		l->leader = false;
		set_observed_rv(l, NULL, now_ms);
		a = PK_LEASE_CREATE;
		out = new_lease(l);
	} else {
		struct json_object *spec = get_obj(lease, "spec");
		const char *holder = get_str(spec, "holderIdentity");
		int64_t secs = get_int(spec, "leaseDurationSeconds", 0);
		/* client-go honours the duration the holder announced. */
		uint64_t dur = secs > 0 ? (uint64_t)secs * 1000 : l->duration_ms;

		set_observed_rv(l, lease_rv(lease) ? lease_rv(lease) : "", now_ms);
		if (holder && !strcmp(holder, l->identity)) {
			/* Still ours on the server: a failed renew since the
			 * last success did not cost us the Lease. */
			if (!l->leader && l->was_leader && !pk_lease_lost(l, now_ms))
				l->leader = true;
			a = PK_LEASE_RENEW;
		} else {
			l->leader = false;
			if (holder && holder[0]) {
				/* Expired only once its resourceVersion has
				 * stood still for dur on our clock. */
				uint64_t expires = l->observed_ms + dur;
				if (now_ms < expires) {
					l->other_expires_ms = expires;
					return PK_LEASE_NONE;
				}
			}
			a = PK_LEASE_TAKEOVER;
		}
		/* Keep everything the server gave, resourceVersion included,
		 * so the PUT fails with 409 if anyone wrote in between. */
		out = copy_of(lease);
	}
	set_spec(l, out, a, wall_now);
	*body = to_string(out);
	l->pending = out;
	l->pending_action = a;
	return a;
}

void pk_lease_write_result(struct pk_lease *l, enum pk_lease_action a, bool ok,
                           struct json_object *response, uint64_t now_ms)
{
	if (a == PK_LEASE_NONE)
		return;
	if (ok) {
		struct json_object *w = NULL;
		l->leader = true;
		l->was_leader = true;
		l->renewed_ms = now_ms;
		if (response) {
			w = copy_of(response);
		} else if (l->pending && l->pending_action == a) {
			/* Without the server's copy the resourceVersion is
			 * stale; release will then meet a 409 (harmless: the
			 * Lease just expires instead). */
			w = l->pending;
			l->pending = NULL;
		}
		if (w) {
			json_object_put(l->written);
			l->written = w;
		}
		/* Our own write is a change of the Lease like any other. */
		set_observed_rv(l, response ? lease_rv(response) : NULL, now_ms);
	} else if (a == PK_LEASE_RENEW) {
		/* A 409 means someone wrote the Lease since our GET, possibly
		 * taking it; any other failure leaves us unsure. Either way we
		 * stop leading until a GET shows the Lease is still ours. */
		l->leader = false;
	}
	json_object_put(l->pending);
	l->pending = NULL;
	l->pending_action = PK_LEASE_NONE;
}

uint64_t pk_lease_next_ms(const struct pk_lease *l, uint64_t now_ms)
{
	uint64_t due;
	if (!l->observed_once)
		return 0;
	due = l->last_observe_ms + l->retry_ms;
	if (l->other_expires_ms < due)
		due = l->other_expires_ms;
	return due > now_ms ? due - now_ms : 0;
}

char *pk_lease_release_body(struct pk_lease *l, const char *wall_now)
{
	struct json_object *o, *spec;
	char *s;
	if (!l->leader || !l->written)
		return NULL;
	o = copy_of(l->written);
	spec = ensure_obj(o, "spec");
	/* As client-go's release: no holder, so candidates take it at once,
	 * and a 1 s duration for those that honour the duration instead. */
	json_object_object_del(spec, "holderIdentity");
	json_object_object_add(spec, "leaseDurationSeconds", json_object_new_int64(1));
	json_object_object_add(spec, "acquireTime", json_object_new_string(wall_now));
	json_object_object_add(spec, "renewTime", json_object_new_string(wall_now));
	s = to_string(o);
	json_object_put(o);
	/* We are giving it up whether or not the PUT gets through. */
	l->leader = false;
	l->was_leader = false;
	return s;
}
