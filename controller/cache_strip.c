/*
 * Cache transforms: see cache_strip.h for what is kept of each kind and why.
 */
#include "cache_strip.h"

#include <stdbool.h>
#include <string.h>

#define LAST_APPLIED "kubectl.kubernetes.io/last-applied-configuration"
#define SERVICE_NAME_LABEL "kubernetes.io/service-name"
#define PEERS_SUFFIX "-peers"

static bool is_kind(const char *kind, const char *want)
{
	return kind && !strcmp(kind, want);
}

enum pk_cache_form pk_cache_form_for(const char *kind)
{
	return is_kind(kind, "EndpointSlice") || is_kind(kind, "PikoCluster") ? PK_CACHE_TREE
	                                                                      : PK_CACHE_COMPACT;
}

static struct json_object *member(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;
	if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

/* Copy o's member key into dst when present (the value shared, a new
 * reference: the source tree is dropped by the caller). */
static void keep(struct json_object *dst, struct json_object *o, const char *key)
{
	struct json_object *v = NULL;
	if (json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, key, &v))
		json_object_object_add(dst, key, json_object_get(v));
}

/* Every kind: managedFields, and kubectl's last-applied copy (not on a
 * Service, whose annotations are the user's; see the header). */
static void strip_common(const char *kind, struct json_object *obj)
{
	struct json_object *meta = member(obj, "metadata");
	if (!json_object_is_type(meta, json_type_object))
		return;
	json_object_object_del(meta, "managedFields");
	struct json_object *ann = member(meta, "annotations");
	if (!is_kind(kind, "Service") && json_object_is_type(ann, json_type_object))
		json_object_object_del(ann, LAST_APPLIED);
}

/* An EndpointSlice of a "-peers" Service, reduced to what status.c, peers.c
 * and controller.c read; NULL for any other slice. */
static struct json_object *strip_slice(struct json_object *obj)
{
	struct json_object *meta = member(obj, "metadata");
	struct json_object *svc = member(member(meta, "labels"), SERVICE_NAME_LABEL);
	const char *s =
	    json_object_is_type(svc, json_type_string) ? json_object_get_string(svc) : "";
	size_t n = strlen(s), k = strlen(PEERS_SUFFIX);
	if (n <= k || strcmp(s + n - k, PEERS_SUFFIX) != 0)
		return NULL;

	struct json_object *out = json_object_new_object();
	keep(out, obj, "apiVersion");
	keep(out, obj, "kind");
	struct json_object *m = json_object_new_object(), *labels = json_object_new_object();
	keep(m, meta, "name");
	keep(m, meta, "namespace");
	keep(m, meta, "resourceVersion");
	json_object_object_add(labels, SERVICE_NAME_LABEL, json_object_get(svc));
	json_object_object_add(m, "labels", labels);
	json_object_object_add(out, "metadata", m);
	keep(out, obj, "addressType");

	struct json_object *eps = member(obj, "endpoints");
	if (json_object_is_type(eps, json_type_array)) {
		size_t neps = json_object_array_length(eps);
		struct json_object *a = json_object_new_array_ext((int)(neps ? neps : 1));
		for (size_t i = 0; i < neps; i++) {
			struct json_object *ep = json_object_array_get_idx(eps, i);
			struct json_object *e = json_object_new_object();
			keep(e, ep, "addresses");
			struct json_object *cond = member(ep, "conditions");
			if (json_object_is_type(cond, json_type_object)) {
				struct json_object *c = json_object_new_object();
				keep(c, cond, "ready");
				keep(c, cond, "serving");
				keep(c, cond, "terminating");
				json_object_object_add(e, "conditions", c);
			}
			struct json_object *ref = member(ep, "targetRef");
			if (json_object_is_type(ref, json_type_object)) {
				struct json_object *r = json_object_new_object();
				keep(r, ref, "name");
				json_object_object_add(e, "targetRef", r);
			}
			json_object_array_add(a, e);
		}
		json_object_object_add(out, "endpoints", a);
	} else {
		keep(out, obj, "endpoints"); /* null or malformed: as it came */
	}

	struct json_object *ports = member(obj, "ports");
	if (json_object_is_type(ports, json_type_array)) {
		size_t np = json_object_array_length(ports);
		struct json_object *a = json_object_new_array_ext((int)(np ? np : 1));
		for (size_t i = 0; i < np; i++) {
			struct json_object *pt = json_object_array_get_idx(ports, i);
			struct json_object *p = json_object_new_object();
			keep(p, pt, "name");
			keep(p, pt, "port");
			keep(p, pt, "protocol");
			json_object_array_add(a, p);
		}
		json_object_object_add(out, "ports", a);
	} else {
		keep(out, obj, "ports");
	}
	return out;
}

struct json_object *pk_cache_strip(const char *kind, struct json_object *obj)
{
	if (!json_object_is_type(obj, json_type_object))
		return NULL;
	if (is_kind(kind, "EndpointSlice"))
		return strip_slice(obj);
	strip_common(kind, obj);
	if (is_kind(kind, "Service") || is_kind(kind, "PodDisruptionBudget") ||
	    is_kind(kind, "ConfigMap"))
		json_object_object_del(obj, "status");
	return json_object_get(obj);
}

struct json_object *pk_cache_pack(struct json_object *obj)
{
	size_t len = 0;
	const char *s = json_object_to_json_string_length(
	    obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	return json_object_new_string_len(s, (int)len);
}

struct json_object *pk_cache_unpack(struct json_object *packed)
{
	if (!json_object_is_type(packed, json_type_string))
		return NULL;
	struct json_tokener *tok = json_tokener_new();
	if (!tok)
		return NULL;
	int len = json_object_get_string_len(packed);
	struct json_object *o = json_tokener_parse_ex(tok, json_object_get_string(packed), len);
	if (!o || json_tokener_get_parse_end(tok) != (size_t)len) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}
