/*
 * PikoCluster -> the objects that run it (docs/controller.md, "What it
 * renders"): ConfigMap NAME-config (server.yaml), headless Service
 * NAME-peers, client Service NAME, StatefulSet NAME, when replicas > 1
 * PodDisruptionBudget NAME, and (unless spec.cluster.keySecretRef names the
 * user's own) the Secret NAME-cluster-key to create when it is missing, and
 * with spec.auth.upstream.generate the Secret NAME-upstream-key. The
 * pods mount the cluster key's Secret; the key itself is the caller's to
 * read (pk_render_set_key).
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
#include <stdbool.h>
#include <stddef.h>

/* Written by server-side apply under this field manager. */
#define PK_FIELD_MANAGER "piko-controller"
#define PK_API_VERSION "piko.dev/v1alpha1"
#define PK_KIND "PikoCluster"
/* Pod-template annotation: SHA-256 (hex) of server.yaml. */
#define PK_CONFIG_HASH_ANNOTATION "piko.dev/config-hash"
/* Pod-template annotation: a short hash of the cluster key
 * (pk_cluster_key_hash), so a new key rolls the pods (a Secret volume's file
 * is re-read by no node). */
#define PK_CLUSTER_KEY_HASH_ANNOTATION "piko.dev/cluster-key-hash"
/* The generated cluster-key Secret: NAME-cluster-key. */
#define PK_CLUSTER_KEY_SECRET_SUFFIX "cluster-key"
/* spec.auth.upstream.generate's Secret, NAME-upstream-key, and the key in
 * it that holds the upstream HMAC secret (the pods take it as if
 * hmacSecretRef {name: NAME-upstream-key, key: key} were set). */
#define PK_UPSTREAM_KEY_SECRET_SUFFIX "upstream-key"
#define PK_UPSTREAM_KEY_SECRET_KEY "key"
/* Pod-template annotation: a short hash of the generated upstream key
 * (pk_cluster_key_hash), so a new one rolls the pods (the server reads it
 * from its env once, at start). */
#define PK_UPSTREAM_KEY_HASH_ANNOTATION "piko.dev/upstream-key-hash"
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
	/* The cluster key's Secret, mounted into the pods: the user's
	 * (spec.cluster.keySecretRef, key_user true) or NAME-cluster-key, and
	 * the key in it that holds the cluster key. */
	bool key_user;
	char key_secret_name[254], key_secret_key[254];
	/* The Secret to create when it is missing (type Opaque, immutable, no
	 * data until pk_render_set_key), NULL with key_user: the controller
	 * never writes a user's Secret. */
	struct json_object *key_secret;
	/* spec.auth.upstream.generate: the Secret NAME-upstream-key to create
	 * when it is missing (as key_secret: Opaque, immutable, no data until
	 * pk_render_set_upstream_key), and its name; NULL and "" without. */
	struct json_object *upstream_secret;
	char upstream_secret_name[254];
};

/* Render a PikoCluster as read from the API (apiVersion, kind,
 * metadata{name, namespace, uid, generation}, spec). Spec fields the
 * apiserver normally defaults may be missing: the CRD defaults are used.
 * Refused (-1, err set, *out left zeroed): a missing name, namespace or uid,
 * a name longer than PK_RENDER_MAX_NAME, a field of the wrong JSON type, a
 * duration that does not parse, a grace period under 1ms (the server needs
 * one), an unknown log level, an auth block without a key, upstream's
 * generate: true beside a key ref, and admin auth
 * (the CRD refuses it too: the readiness probe could not pass it). Returns 0
 * with *out filled otherwise. cluster is borrowed. */
int pk_render(struct json_object *cluster, struct pk_render *out, char *err, size_t errlen);

/* With the cluster key known (key_len bytes, as the nodes load it): the
 * StatefulSet's pod template gets PK_CLUSTER_KEY_HASH_ANNOTATION, and
 * key_secret (when there is one) its data. Called again, the last key
 * replaces both. The StatefulSet is never applied without it (the
 * annotation would be dropped, rolling the pods). */
void pk_render_set_key(struct pk_render *r, const char *key, size_t key_len);

/* With the generated upstream key known (key_len bytes, the text the server
 * takes as its HMAC secret): PK_UPSTREAM_KEY_HASH_ANNOTATION on the pod
 * template and upstream_secret's data. A no-op without upstream_secret.
 * The StatefulSet of such a cluster is never applied without it. */
void pk_render_set_upstream_key(struct pk_render *r, const char *key, size_t key_len);

/* Put every object and zero the struct (safe on a zeroed or freed one). */
void pk_render_free(struct pk_render *r);

/* "app.kubernetes.io/name=piko,app.kubernetes.io/instance=NAME" into buf
 * (truncated to len - 1 bytes, always NUL-terminated when len > 0). */
void pk_render_selector(const char *name, char *buf, size_t len);

/* Name of a child: pk_render_child_name("web", "peers", ...) -> "web-peers";
 * suffix NULL or "" gives NAME itself. Truncated like pk_render_selector. */
void pk_render_child_name(const char *name, const char *suffix, char *buf, size_t len);

#endif
