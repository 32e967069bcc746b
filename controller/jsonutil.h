/*
 * JSON comparisons for the reconcile loop (json-c objects, borrowed: nothing
 * here allocates or takes ownership).
 */
#ifndef PK_JSONUTIL_H
#define PK_JSONUTIL_H

#include <json-c/json.h>

/* 1 if every field in desired is present in live with an equal value, else
 * 0. Used to skip a server-side apply when the live object already holds
 * everything we would send; fields only live has (server defaults, other
 * managers' fields, status) are ignored by construction.
 *  - objects: every key of desired must be in live, values compared
 *    recursively with these same rules;
 *  - arrays: equal length, element i of desired a subset of element i of
 *    live (order matters: the lists we send are ordered);
 *  - numbers: by value, int or double alike (1 equals 1.0); a number never
 *    equals a string ("8000" is not 8000, as the apiserver would not treat
 *    them alike either);
 *  - strings by bytes, booleans by value;
 *  - a JSON null in desired (SSA's "remove this field") matches a null or an
 *    absent field in live.
 *  - under a key named "resources" (a container's requests and limits), a
 *    desired string or number and a live string are equal when they are the
 *    same quantity ("0.5" and "500m", 1 and "1"): the apiserver rewrites
 *    quantities into its canonical spelling (quantity.h).
 * desired NULL (JSON null) with live NULL is 1. */
int pk_json_subset(struct json_object *desired, struct json_object *live);

/* o's field key, or NULL when o is not an object, the field is missing or it
 * is JSON null (the apiserver's "unset" all three). */
struct json_object *pk_json_field(struct json_object *o, const char *key);

/* 1 if a and b are equal both ways under the rules of pk_json_subset, with
 * two more leniencies that the apiserver's round trip needs: a missing field
 * equals a null one, and a missing array equals an empty one (an applied
 * `members: []` may come back absent). Else 0. */
int pk_json_equal(struct json_object *a, struct json_object *b);

#endif
