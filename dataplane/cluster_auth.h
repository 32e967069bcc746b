/*
 * Proof of the cluster key (DESIGN §5 "Trust"): a node link, the member-set
 * push and the acceptor's answer on a link each carry a short-lived JWT
 * (HS256) signed with the shared cluster key. Piko's gossip trusts whoever
 * reaches its port; ours accepts nothing before this proof checks out.
 *
 * Claims: iss "piko-cluster", sub (the signer: a node ID, or "controller"),
 * aud (optional: who the proof is for, so an acceptor's answer cannot be
 * replayed to another node), iat and exp (iat + 60 s). A proof is refused
 * when its signature, issuer or audience is wrong, or when it expired (30 s
 * of clock skew tolerated on iat in the future, none on exp).
 */
#ifndef PK_CLUSTER_AUTH_H
#define PK_CLUSTER_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define PK_CLUSTER_PROOF_TTL_S 60

/* Load the key: cfg_key itself, else the contents of key_file (trailing
 * newlines dropped). Returns 0 with *key set (owned by the caller; NULL when
 * neither is set), or -1 with err set (unreadable or empty file). */
int pk_cluster_key_load(const char *cfg_key, const char *key_file, char **key, size_t *key_len,
                        char *err, size_t errlen);

/* A proof signed with key for sub (and aud when not NULL), valid from now
 * (seconds since the epoch). Owned by the caller. */
char *pk_cluster_proof_make(const char *key, size_t key_len, const char *sub, const char *aud,
                            int64_t now);

/* NULL when token proves key (with aud when not NULL); else why not. */
const char *pk_cluster_proof_check(const char *key, size_t key_len, const char *token,
                                   const char *aud, int64_t now);

#endif
