/*
 * JSON comparisons: see jsonutil.h for the rules. Recursion depth is the
 * depth of the documents, which json-c's tokener already bounds (32 by
 * default) for anything read from the apiserver.
 */
#include "jsonutil.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "quantity.h"

static int is_number(struct json_object *o)
{
	enum json_type t = json_object_get_type(o);
	return t == json_type_int || t == json_type_double;
}

/* Numbers by value: an int64 and a uint64 beyond INT64_MAX must not compare
 * equal through clamping, hence both getters for two ints. */
static int number_equal(struct json_object *a, struct json_object *b)
{
	int ai = json_object_get_type(a) == json_type_int;
	int bi = json_object_get_type(b) == json_type_int;
	if (ai && bi)
		return json_object_get_int64(a) == json_object_get_int64(b) &&
		       json_object_get_uint64(a) == json_object_get_uint64(b);
	return json_object_get_double(a) == json_object_get_double(b);
}

static int string_equal(struct json_object *a, struct json_object *b)
{
	int la = json_object_get_string_len(a), lb = json_object_get_string_len(b);
	return la == lb &&
	       memcmp(json_object_get_string(a), json_object_get_string(b), (size_t)la) == 0;
}

/* Scalars and type checks shared by both comparisons. Returns 1 or 0 when it
 * decided, -1 when both are objects or both arrays (the caller recurses). */
static int scalar_cmp(struct json_object *a, struct json_object *b)
{
	if (!a || !b)
		return !a && !b;
	if (is_number(a) || is_number(b))
		return is_number(a) && is_number(b) && number_equal(a, b);
	enum json_type t = json_object_get_type(a);
	if (t != json_object_get_type(b))
		return 0;
	switch (t) {
	case json_type_boolean:
		return json_object_get_boolean(a) == json_object_get_boolean(b);
	case json_type_string:
		return string_equal(a, b);
	case json_type_object:
	case json_type_array:
		return -1;
	default:
		return 0;
	}
}

/* Inside a "resources" object the apiserver canonicalizes quantities ("0.5"
 * comes back "500m", a number 1 as "1"): there a desired string or number
 * and a live string are compared as amounts. */
static int quantity_cmp(struct json_object *d, struct json_object *l)
{
	if (!d || !l || !json_object_is_type(l, json_type_string))
		return 0;
	char num[64];
	const char *ds;
	size_t dlen;
	if (is_number(d)) {
		/* %.17g keeps every digit a double has. */
		int n = snprintf(num, sizeof(num), "%.17g", json_object_get_double(d));
		if (n <= 0 || (size_t)n >= sizeof(num))
			return 0;
		ds = num;
		dlen = (size_t)n;
	} else if (json_object_is_type(d, json_type_string)) {
		ds = json_object_get_string(d);
		dlen = (size_t)json_object_get_string_len(d);
	} else {
		return 0;
	}
	return pk_quantity_equal(ds, dlen, json_object_get_string(l),
	                         (size_t)json_object_get_string_len(l));
}

static int subset(struct json_object *desired, struct json_object *live, int quantities)
{
	if (quantities && quantity_cmp(desired, live))
		return 1;
	int r = scalar_cmp(desired, live);
	if (r >= 0)
		return r;
	if (json_object_is_type(desired, json_type_array)) {
		size_t n = json_object_array_length(desired);
		if (n != json_object_array_length(live))
			return 0;
		for (size_t i = 0; i < n; i++)
			if (!subset(json_object_array_get_idx(desired, i),
			            json_object_array_get_idx(live, i), quantities))
				return 0;
		return 1;
	}
	json_object_object_foreach(desired, key, dv)
	{
		struct json_object *lv = NULL;
		int present = json_object_object_get_ex(live, key, &lv);
		/* null in desired: "absent" in SSA terms, so an absent field
		 * holds it. */
		if (!dv) {
			if (lv)
				return 0;
			continue;
		}
		if (!present || !subset(dv, lv, quantities || !strcmp(key, "resources")))
			return 0;
	}
	return 1;
}

struct json_object *pk_json_field(struct json_object *o, const char *key)
{
	struct json_object *v = NULL;
	if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
		return NULL;
	return v;
}

int pk_json_subset(struct json_object *desired, struct json_object *live)
{
	return subset(desired, live, 0);
}

static int empty_or_null(struct json_object *o)
{
	return !o || (json_object_is_type(o, json_type_array) && json_object_array_length(o) == 0);
}

/* Every key of a is in b with an equal value (missing = null, missing array
 * = empty); run both ways for equality. */
static int keys_equal(struct json_object *a, struct json_object *b)
{
	json_object_object_foreach(a, key, av)
	{
		struct json_object *bv = NULL;
		json_object_object_get_ex(b, key, &bv);
		if (!pk_json_equal(av, bv))
			return 0;
	}
	return 1;
}

int pk_json_equal(struct json_object *a, struct json_object *b)
{
	if (empty_or_null(a) && empty_or_null(b) &&
	    (json_object_is_type(a, json_type_array) || json_object_is_type(b, json_type_array)))
		return 1;
	int r = scalar_cmp(a, b);
	if (r >= 0)
		return r;
	if (json_object_is_type(a, json_type_array)) {
		size_t n = json_object_array_length(a);
		if (n != json_object_array_length(b))
			return 0;
		for (size_t i = 0; i < n; i++)
			if (!pk_json_equal(json_object_array_get_idx(a, i),
			                   json_object_array_get_idx(b, i)))
				return 0;
		return 1;
	}
	return keys_equal(a, b) && keys_equal(b, a);
}
