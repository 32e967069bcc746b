/*
 * Proof of the cluster key (DESIGN §5 "Trust"): a node link, the member-set
 * push and the acceptor's answer on a link each carry a short-lived JWT
 * (HS256) signed with the shared cluster key. Piko's gossip trusts whoever
 * reaches its port; ours accepts nothing before this proof checks out.
 *
 * Claims: iss "piko-cluster", sub (the signer: a node ID, or "controller"),
 * aud (what and whom the proof is for, below), iat and exp (iat + 60 s). A
 * proof seen on a plain-text port can be replayed to the same target, as
 * the same signer, for its 60 s: serve the cluster and admin ports over TLS
 * where the network is not trusted. A proof is refused
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

/* Audiences, one per use, so a proof made for one use is refused for
 * another: a dialler's proof is for the address it dials, an acceptor's
 * for the dialler's node ID, a push's for the member-set route. */
#define PK_CLUSTER_AUD_LINK "piko-link:"   /* + the acceptor's cluster address */
#define PK_CLUSTER_AUD_HELLO "piko-hello:" /* + the dialler's node ID */
#define PK_CLUSTER_AUD_PUSH "piko-member-push"

/* NULL when token proves key, for aud, and (when sub is not NULL) signed
 * as sub; else why not. */
const char *pk_cluster_proof_check(const char *key, size_t key_len, const char *token,
                                   const char *aud, const char *sub, int64_t now);

#endif
