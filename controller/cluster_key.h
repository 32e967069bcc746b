/*
 * The cluster key on the controller's side (docs/cluster.md "Trust"): a new
 * random key for a PikoCluster, and the proof a member-set push carries,
 *
 *   Authorization: Bearer <HS256 JWT signed with the key>
 *
 * with the claims the data plane checks (dataplane/cluster_auth.c): iss
 * "piko-cluster", sub "controller", aud "piko-member-push", iat now and exp
 * iat + 60 s. Signed with OpenSSL's HMAC, so the controller needs no JWT
 * library; the unit test verifies it with the data plane's libjwt check.
 */
#ifndef PK_CLUSTER_KEY_H
#define PK_CLUSTER_KEY_H

#include <stddef.h>
#include <stdint.h>

/* A generated key: 32 random bytes (256 bits) as 64 lowercase hex digits,
 * text a Secret, a key file and a YAML value all hold unchanged. */
#define PK_CLUSTER_KEY_HEX 64
#define PK_PUSH_PROOF_SUB "controller"
#define PK_PUSH_PROOF_AUD "piko-member-push"
#define PK_PUSH_PROOF_TTL_S 60

/* Fill out with a new key and a NUL (PK_CLUSTER_KEY_HEX + 1 bytes) from
 * the system's CSPRNG. Returns 0, or -1 when no randomness was available
 * (out is then zeroed: never a weak key). */
int pk_cluster_key_generate(char out[PK_CLUSTER_KEY_HEX + 1]);

/* The proof for a member push signed with key (key_len bytes, any content),
 * issued at now (seconds since the epoch). Owned by the caller; aborts on
 * OOM (the project's policy). */
char *pk_push_proof(const char *key, size_t key_len, int64_t now);

/* The longest key a node loads from its key file (dataplane/cluster_auth.c). */
#define PK_CLUSTER_KEY_MAX 65536
/* Hex digits of pk_cluster_key_hash (64 bits: tells keys apart, reveals
 * nothing usable about a 256-bit key). */
#define PK_CLUSTER_KEY_HASH_HEX 16

/* The key a node takes from a key file holding data (len bytes): the data
 * without its trailing line ends ("\r", "\n"), as the data plane trims
 * them, so the controller signs with exactly the node's key. Returns its
 * length, with *why NULL; or 0 with *why saying why no node would load it
 * ("is empty", "is larger than 64 KiB"). */
size_t pk_cluster_key_trim(const char *data, size_t len, const char **why);

/* The pod-template annotation that tells keys apart without revealing one:
 * the first PK_CLUSTER_KEY_HASH_HEX hex digits of
 * SHA-256("piko-cluster-key:" + key), and a NUL. */
void pk_cluster_key_hash(const char *key, size_t key_len, char out[PK_CLUSTER_KEY_HASH_HEX + 1]);

/* Standard base64 with padding (a Secret's data). Encode: a NUL-terminated
 * string owned by the caller. Decode: the bytes (owned by the caller, a NUL
 * after them, *out_len their count), or NULL when in is not base64. Both
 * abort on OOM. */
char *pk_base64_encode(const void *in, size_t len);
char *pk_base64_decode(const char *in, size_t *out_len);

#endif
