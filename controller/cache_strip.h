/*
 * What an informer keeps of each object (issue 13 item 6: memory that does
 * not grow with what the controller does not read). As controller-runtime's
 * cache transforms, applied to every object as it enters the cache (LIST
 * items and watch events), before it is stored and before the informer's
 * callback sees it.
 *
 * Every kind loses metadata.managedFields (often as large as the rest of
 * the object) and the annotation
 * kubectl.kubernetes.io/last-applied-configuration (a copy of the object as
 * a client-side `kubectl apply` sent it), but never on a Service: a
 * Service's annotations are rendered from spec.service.annotations and
 * compared with the live ones, so whatever a user put there must stay. An
 * emptied metadata.annotations stays, as {}, for the same comparison.
 *
 * Per kind (`kind` as in pk_informer_opts, e.g. "StatefulSet"):
 *  - EndpointSlice: only slices of a Service named "*-peers" (the headless
 *    Services; every reader, controller.c's events, status.c's members and
 *    peers.c's pushes, looks only at those), and of them only
 *    apiVersion, kind, metadata.{name, namespace, resourceVersion},
 *    metadata.labels["kubernetes.io/service-name"], addressType,
 *    endpoints[].{addresses, conditions.{ready, serving, terminating},
 *    targetRef.name} and ports[].{name, port, protocol};
 *  - Service, PodDisruptionBudget, ConfigMap: no .status (nothing reads a
 *    child's status but the StatefulSet's);
 *  - PikoCluster, StatefulSet and any other kind: everything else.
 * The children's spec, data and metadata stay whole: reconcile.c compares
 * what it renders against them (pk_json_subset) to skip a write when
 * nothing changed, so a field dropped here that render.c emits would be
 * re-applied on every reconcile.
 *
 * The form an informer keeps its objects in (pk_cache_form_for):
 *  - PK_CACHE_TREE: json-c trees (the EndpointSlices: status and pushes
 *    walk every cached slice; the PikoClusters: peers.c asks for every one
 *    of them on each tick of the main loop, which must not parse);
 *  - PK_CACHE_COMPACT: the stripped object serialized, one string per
 *    object, parsed again by pk_informer_get (the children: read one at a
 *    time, by name, once per reconcile). A json-c object costs about
 *    0.7 KiB before its first member (a 16-entry hash table); a
 *    StatefulSet is about a hundred of them, 20 to 30 times its size as
 *    JSON text.
 */
#ifndef PK_CACHE_STRIP_H
#define PK_CACHE_STRIP_H

#include <json-c/json.h>

enum pk_cache_form {
	PK_CACHE_TREE = 0,
	PK_CACHE_COMPACT,
};

/* The form kind's informer keeps (above). kind NULL or unknown: compact. */
enum pk_cache_form pk_cache_form_for(const char *kind);

/* What the cache keeps of obj, a kind object (borrowed; may be changed in
 * place, and is when the result is obj): a new reference the caller owns,
 * obj itself or a new smaller tree, or NULL when the object is not cached at
 * all (an EndpointSlice of no "-peers" Service). kind NULL: the common
 * stripping only. obj NULL or no JSON object: NULL. */
struct json_object *pk_cache_strip(const char *kind, struct json_object *obj);

/* The compact form of an already stripped object: a json string holding it
 * serialized (new reference, the caller owns it). */
struct json_object *pk_cache_pack(struct json_object *obj);

/* The object back from pk_cache_pack's string (new reference, the caller
 * owns it), or NULL when packed is no string or does not parse. */
struct json_object *pk_cache_unpack(struct json_object *packed);

#endif
