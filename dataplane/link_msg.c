/*
 * Link control messages: framing and JSON (json-c). See link_msg.h.
 */
#include "link_msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

static void frame(struct pk_bufq *out, const char *json, size_t len)
{
	uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
	                  (uint8_t)len};
	pk_bufq_append_force(out, hdr, 4);
	pk_bufq_append_force(out, json, len);
}

static void frame_obj(struct pk_bufq *out, struct json_object *o)
{
	size_t len;
	const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
	frame(out, s, len);
}

static void put_str(struct json_object *o, const char *key, const char *v)
{
	json_object_object_add(o, key, json_object_new_string(v ? v : ""));
}

void pk_link_msg_hello(struct pk_bufq *out, const char *id, const char *proxy_addr,
                       const char *admin_addr, const char *cluster_addr, const char *proof)
{
	struct json_object *o = json_object_new_object();
	put_str(o, "type", "hello");
	put_str(o, "id", id);
	put_str(o, "proxy_addr", proxy_addr);
	put_str(o, "admin_addr", admin_addr);
	put_str(o, "cluster_addr", cluster_addr);
	if (proof)
		put_str(o, "proof", proof);
	frame_obj(out, o);
	json_object_put(o);
}

void pk_link_msg_simple(struct pk_bufq *out, enum pk_link_msg_type type)
{
	const char *s = type == PK_LINK_RESYNC ? "{\"type\":\"resync\"}" : "{\"type\":\"leaving\"}";
	frame(out, s, strlen(s));
}

struct pk_link_eps_writer {
	struct json_object *root, *eps;
};

struct pk_link_eps_writer *pk_link_eps_begin(int full, uint64_t version, uint64_t base)
{
	/* Owner: the caller until pk_link_eps_end frees it. */
	struct pk_link_eps_writer *w = pk_xcalloc(1, sizeof(*w));
	w->root = json_object_new_object();
	put_str(w->root, "type", "endpoints");
	json_object_object_add(w->root, "full", json_object_new_boolean(full));
	json_object_object_add(w->root, "version", json_object_new_uint64(version));
	json_object_object_add(w->root, "base", json_object_new_uint64(base));
	w->eps = json_object_new_object();
	json_object_object_add(w->root, "endpoints", w->eps);
	return w;
}

void pk_link_eps_add(struct pk_link_eps_writer *w, const char *endpoint, int64_t count)
{
	json_object_object_add(w->eps, endpoint, json_object_new_int64(count));
}

void pk_link_eps_end(struct pk_link_eps_writer *w, struct pk_bufq *out)
{
	frame_obj(out, w->root);
	json_object_put(w->root);
	free(w);
}

void pk_link_msg_clear(struct pk_link_msg *m)
{
	free(m->id);
	free(m->proxy_addr);
	free(m->admin_addr);
	free(m->cluster_addr);
	free(m->proof);
	for (size_t i = 0; i < m->n_eps; i++)
		free(m->eps[i].endpoint);
	free(m->eps);
	memset(m, 0, sizeof(*m));
}

/* A string field: absent is NULL; present must be a string of at most
 * PK_LINK_MAX_ID bytes. Returns 0 or -1. */
static int get_str(struct json_object *o, const char *key, char **out)
{
	struct json_object *v;
	*out = NULL;
	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	if (!json_object_is_type(v, json_type_string))
		return -1;
	size_t n = (size_t)json_object_get_string_len(v);
	if (n > PK_LINK_MAX_ID)
		return -1;
	*out = pk_xstrndup(json_object_get_string(v), n);
	return 0;
}

static int get_u64(struct json_object *o, const char *key, uint64_t *out)
{
	struct json_object *v;
	*out = 0;
	if (!json_object_object_get_ex(o, key, &v))
		return 0;
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
		return -1;
	*out = json_object_get_uint64(v);
	return 0;
}

static int decode_endpoints(struct json_object *o, struct pk_link_msg *m, char *err, size_t errlen)
{
	struct json_object *v, *eps;
	if (json_object_object_get_ex(o, "full", &v)) {
		if (!json_object_is_type(v, json_type_boolean))
			goto bad;
		m->full = json_object_get_boolean(v);
	}
	if (get_u64(o, "version", &m->version) < 0 || get_u64(o, "base", &m->base) < 0)
		goto bad;
	if (!json_object_object_get_ex(o, "endpoints", &eps) ||
	    !json_object_is_type(eps, json_type_object))
		goto bad;
	size_t n = (size_t)json_object_object_length(eps);
	if (n > PK_LINK_MAX_ENDPOINTS) {
		snprintf(err, errlen, "more than %d endpoints", PK_LINK_MAX_ENDPOINTS);
		return -1;
	}
	/* Owner: m (pk_link_msg_clear). */
	m->eps = pk_xcalloc(n ? n : 1, sizeof(*m->eps));
	json_object_object_foreach(eps, key, val)
	{
		size_t kl = strlen(key);
		if (kl == 0 || kl > PK_LINK_MAX_ID || !json_object_is_type(val, json_type_int) ||
		    json_object_get_int64(val) < 0 || json_object_get_int64(val) > INT32_MAX)
			goto bad;
		m->eps[m->n_eps].endpoint = pk_xstrndup(key, kl);
		m->eps[m->n_eps].count = json_object_get_int64(val);
		m->n_eps++;
	}
	return 0;
bad:
	snprintf(err, errlen, "malformed endpoints message");
	return -1;
}

ssize_t pk_link_msg_decode(const uint8_t *buf, size_t len, struct pk_link_msg *m, char *err,
                           size_t errlen)
{
	memset(m, 0, sizeof(*m));
	if (len < 4)
		return 0;
	size_t n = (size_t)buf[0] << 24 | (size_t)buf[1] << 16 | (size_t)buf[2] << 8 | buf[3];
	if (n == 0 || n > PK_LINK_MSG_MAX) {
		snprintf(err, errlen, "bad message length %zu", n);
		return -1;
	}
	if (len - 4 < n)
		return 0;
	/* Nesting deeper than this is never ours. */
	struct json_tokener *tok = json_tokener_new_ex(4);
	struct json_object *o = json_tokener_parse_ex(tok, (const char *)buf + 4, (int)n);
	int complete = o && json_tokener_get_parse_end(tok) == n;
	json_tokener_free(tok);
	struct json_object *t;
	if (!complete || !json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "type", &t) ||
	    !json_object_is_type(t, json_type_string)) {
		snprintf(err, errlen, "malformed message");
		json_object_put(o);
		return -1;
	}
	const char *type = json_object_get_string(t);
	int rc = 0;
	if (!strcmp(type, "hello")) {
		m->type = PK_LINK_HELLO;
		if (get_str(o, "id", &m->id) < 0 || get_str(o, "proxy_addr", &m->proxy_addr) < 0 ||
		    get_str(o, "admin_addr", &m->admin_addr) < 0 ||
		    get_str(o, "cluster_addr", &m->cluster_addr) < 0 ||
		    get_str(o, "proof", &m->proof) < 0 || !m->id || !*m->id) {
			snprintf(err, errlen, "malformed hello");
			rc = -1;
		}
	} else if (!strcmp(type, "endpoints")) {
		m->type = PK_LINK_ENDPOINTS;
		rc = decode_endpoints(o, m, err, errlen);
	} else if (!strcmp(type, "resync")) {
		m->type = PK_LINK_RESYNC;
	} else if (!strcmp(type, "leaving")) {
		m->type = PK_LINK_LEAVING;
	} else {
		snprintf(err, errlen, "unknown message type");
		rc = -1;
	}
	json_object_put(o);
	if (rc < 0) {
		pk_link_msg_clear(m);
		return -1;
	}
	return (ssize_t)(n + 4);
}
