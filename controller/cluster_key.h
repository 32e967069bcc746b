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

#endif
