/*
 * Token authentication as Piko does it (protocol reference §5): a JWT in
 * `x-piko-authorization` or `Authorization`, as "Bearer <token>", verified
 * with libjwt against the keys configured for one port.
 *
 * Keys decide the algorithms: an HMAC secret allows HS256/384/512, an RSA
 * public key RS256/384/512, an ECDSA public key ES256/384/512, and the token's
 * `alg` picks the key of its family, so a token can never be checked with a
 * key of another kind (no HS256 keyed with an RSA public key, no `none`).
 * With a JWKS the token's `kid` picks the key and the key's type decides.
 *
 * Claims: `exp` and `nbf` when present (no leeway), `aud` and `iss` when
 * configured, and Piko's `piko.endpoints` list (empty or absent: every
 * endpoint).
 *
 * Failures are Piko's error texts (the `error` of its 401 JSON bodies).
 */
#ifndef PK_AUTH_H
#define PK_AUTH_H

#include <stddef.h>
#include <stdint.h>

/* One port's `auth` block (YAML and flags, see pk_auth_opts in the configs). */
struct pk_auth_config {
	char *hmac_secret_key;
	char *rsa_public_key;   /* PEM text: PKIX, PKCS#1 or a certificate */
	char *ecdsa_public_key; /* PEM text: PKIX or a certificate */
	char *audience;
	char *issuer;
	int disable_disconnect_on_expiry;
	struct {
		char *endpoint; /* file://<path>, http:// or https:// (fetched by a thread) */
		int64_t cache_ttl_ms;
		int64_t timeout_ms;
	} jwks;
};

/* Auth is on when any key or a JWKS is configured. */
int pk_auth_enabled(const struct pk_auth_config *c);

/* The keys of one port, parsed once. Owned by the caller. NULL with err set
 * when a key does not parse, or when static keys and a JWKS are combined. */
struct pk_verifier *pk_verifier_new(const struct pk_auth_config *c, char *err, size_t errlen);
void pk_verifier_free(struct pk_verifier *v);

/* What a verified token allows. */
struct pk_token {
	int64_t exp; /* seconds since the epoch; 0 when the token has none */
	char **endpoints;
	size_t n_endpoints; /* 0: every endpoint */
};

/* Piko's texts. */
#define PK_AUTH_MISSING "missing authorization"
#define PK_AUTH_INVALID_HEADER "invalid authorization"
#define PK_AUTH_UNSUPPORTED "unsupported auth type"
#define PK_AUTH_INVALID "invalid token"
#define PK_AUTH_EXPIRED "expired token"
#define PK_AUTH_UNKNOWN_TENANT "unknown tenant"
#define PK_AUTH_NOT_PERMITTED "endpoint not permitted"

/* The token of a request: x_piko_authorization when present (non-empty),
 * else authorization; either may be NULL. On success returns NULL and points
 * token and token_len at the token inside the header value; else returns
 * Piko's reason. */
const char *pk_auth_token_from_headers(const char *x_piko_authorization, const char *authorization,
                                       const char **token, size_t *token_len);

/* Verify a token at time now (seconds since the epoch). Returns NULL and
 * fills out (release with pk_token_clear), or PK_AUTH_INVALID /
 * PK_AUTH_EXPIRED. The signature is checked before the claims, so a token
 * that is both forged and expired is "invalid token", as in Piko. */
const char *pk_verifier_verify(const struct pk_verifier *v, const char *token, size_t token_len,
                               int64_t now, struct pk_token *out);

/* Wall-clock seconds since the epoch: what exp and nbf are compared with. */
int64_t pk_auth_now(void);

/* Whether a verified token may use endpoint. */
int pk_token_permits(const struct pk_token *t, const char *endpoint);

void pk_token_clear(struct pk_token *t);

#endif
