/*
 * PikoCluster -> the objects that run it (docs/controller.md, "What it
 * renders"): ConfigMap NAME-config (server.yaml), headless Service
 * NAME-peers, client Service NAME, StatefulSet NAME and, when replicas > 1,
 * PodDisruptionBudget NAME.
 *
 * Pure: no I/O, no clock, no randomness. The same PikoCluster always gives
 * byte-identical objects (json-c keeps insertion order, and the code inserts
 * in a fixed order), so server.yaml, its hash and the pod template change
 * only when the spec fields they come from change. Nothing in the pod
 * template depends on spec.replicas: scaling never rolls the pods.
 */
#ifndef PK_RENDER_H
#define PK_RENDER_H

#include <json-c/json.h>
#include <stddef.h>

/* Written by server-side apply under this field manager. */
#define PK_FIELD_MANAGER "piko-controller"
#define PK_API_VERSION "piko.dev/v1alpha1"
#define PK_KIND "PikoCluster"
/* Pod-template annotation: SHA-256 (hex) of server.yaml. */
#define PK_CONFIG_HASH_ANNOTATION "piko.dev/config-hash"
/* Longest PikoCluster name we render for: the StatefulSet controller labels
 * each pod controller-revision-hash=NAME-<10 chars>, a label value of at
 * most 63 characters, so a longer StatefulSet name can never create pods. */
#define PK_RENDER_MAX_NAME 52

struct pk_render {
	/* Each a complete apply-patch body (apiVersion, kind, metadata with
	 * name, namespace, labels and ownerReferences, and only the fields we
	 * have an opinion about), owned by the struct: pk_render_free() puts
	 * them. pdb is NULL when replicas <= 1 (the caller deletes it). */
	struct json_object *configmap, *peers_svc, *client_svc, *sts, *pdb;
	char config_hash[65]; /* sha256 hex of server.yaml */
};

/* Render a PikoCluster as read from the API (apiVersion, kind,
 * metadata{name, namespace, uid, generation}, spec). Spec fields the
 * apiserver normally defaults may be missing: the CRD defaults are used.
 * Refused (-1, err set, *out left zeroed): a missing name, namespace or uid,
 * a name longer than PK_RENDER_MAX_NAME, a field of the wrong JSON type, a
 * duration that does not parse, a grace period under 1ms (the server needs
 * one), an unknown log level, an auth block without a key, and admin auth
 * (the CRD refuses it too: the readiness probe could not pass it). Returns 0
 * with *out filled otherwise. cluster is borrowed. */
int pk_render(struct json_object *cluster, struct pk_render *out, char *err, size_t errlen);

/* Put every object and zero the struct (safe on a zeroed or freed one). */
void pk_render_free(struct pk_render *r);

/* "app.kubernetes.io/name=piko,app.kubernetes.io/instance=NAME" into buf
 * (truncated to len - 1 bytes, always NUL-terminated when len > 0). */
void pk_render_selector(const char *name, char *buf, size_t len);

/* Name of a child: pk_render_child_name("web", "peers", ...) -> "web-peers";
 * suffix NULL or "" gives NAME itself. Truncated like pk_render_selector. */
void pk_render_child_name(const char *name, const char *suffix, char *buf, size_t len);

#endif
