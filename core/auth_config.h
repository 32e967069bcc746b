/*
 * The option-table entries of one `auth` block (protocol reference §4.2):
 * used under proxy., upstream. and admin. by the server, and relative to a
 * tenant by upstream.tenants. P is the key prefix ("proxy.auth."), BASE the
 * offset of the struct pk_auth_config inside the config struct.
 */
#ifndef PK_AUTH_CONFIG_H
#define PK_AUTH_CONFIG_H

#include <stddef.h>

#include "auth.h"
#include "config.h"

#define PK_AUTH_OFF(BASE, f) ((BASE) + offsetof(struct pk_auth_config, f))

/* clang-format off */
#define PK_AUTH_OPTS(P, BASE)                                                                      \
	{P "hmac_secret_key", PK_OPT_STRING, PK_AUTH_OFF(BASE, hmac_secret_key), NULL,             \
	 "secret that verifies HS256/HS384/HS512 tokens", 0, NULL, 0},                             \
	{P "rsa_public_key", PK_OPT_STRING, PK_AUTH_OFF(BASE, rsa_public_key), NULL,               \
	 "PEM RSA public key that verifies RS256/RS384/RS512 tokens", 0, NULL, 0},                 \
	{P "ecdsa_public_key", PK_OPT_STRING, PK_AUTH_OFF(BASE, ecdsa_public_key), NULL,           \
	 "PEM ECDSA public key that verifies ES256/ES384/ES512 tokens", 0, NULL, 0},               \
	{P "audience", PK_OPT_STRING, PK_AUTH_OFF(BASE, audience), NULL,                           \
	 "required token audience (aud)", 0, NULL, 0},                                             \
	{P "issuer", PK_OPT_STRING, PK_AUTH_OFF(BASE, issuer), NULL,                               \
	 "required token issuer (iss)", 0, NULL, 0},                                               \
	{P "disable_disconnect_on_expiry", PK_OPT_BOOL,                                            \
	 PK_AUTH_OFF(BASE, disable_disconnect_on_expiry), "false",                                 \
	 "keep an upstream connected after its token expires", 0, NULL, 0},                        \
	{P "jwks.endpoint", PK_OPT_STRING, PK_AUTH_OFF(BASE, jwks.endpoint), NULL,                 \
	 "JWK Set to verify tokens with (https://, http:// or file://<path>)", 0, NULL, 0},                             \
	{P "jwks.cache_ttl", PK_OPT_DURATION, PK_AUTH_OFF(BASE, jwks.cache_ttl_ms), "0s",          \
	 "how long a fetched JWK Set is used (0: 1h)", 0, NULL, 0},                                \
	{P "jwks.timeout", PK_OPT_DURATION, PK_AUTH_OFF(BASE, jwks.timeout_ms), "0s",              \
	 "timeout fetching the JWK Set", 0, NULL, 0}
/* clang-format on */

#endif
