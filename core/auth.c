/*
 * JWT verification for the three ports (see auth.h). libjwt checks
 * signatures; which key it is given is decided here, from the token's `alg`
 * (static keys) or `kid` (JWKS), before libjwt sees the token. Claims are
 * read with json-c from the payload libjwt verified.
 */
#include "auth.h"

#include <errno.h>
#include <json-c/json.h>
#include <jwt.h>
#include <math.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"

enum key_kind { KEY_HMAC, KEY_RSA, KEY_EC };

struct key {
	enum key_kind kind;
	char *kid;      /* JWKS only */
	uint8_t *bytes; /* HMAC secret, or PKIX PEM text for libjwt */
	size_t len;
};

struct pk_verifier {
	struct key *keys;
	size_t n;
	int jwks; /* keys are selected by kid */
	char *audience;
	char *issuer;
};

int pk_auth_enabled(const struct pk_auth_config *c)
{
	return (c->hmac_secret_key && *c->hmac_secret_key) ||
	       (c->rsa_public_key && *c->rsa_public_key) ||
	       (c->ecdsa_public_key && *c->ecdsa_public_key) ||
	       (c->jwks.endpoint && *c->jwks.endpoint);
}

/* --- keys ---------------------------------------------------------------- */

static void add_key(struct pk_verifier *v, enum key_kind kind, const char *kid, const void *bytes,
                    size_t len)
{
	v->keys = pk_xrealloc(v->keys, (v->n + 1) * sizeof(*v->keys));
	struct key *k = &v->keys[v->n++];
	k->kind = kind;
	k->kid = kid ? pk_xstrdup(kid) : NULL;
	k->bytes = pk_xmalloc(len + 1);
	memcpy(k->bytes, bytes, len);
	k->bytes[len] = 0;
	k->len = len;
}

/* A public key as PKIX PEM, the one form libjwt 1.10 reads. */
static int add_pkey(struct pk_verifier *v, enum key_kind kind, const char *kid, EVP_PKEY *pkey)
{
	BIO *out = BIO_new(BIO_s_mem());
	if (!out || !PEM_write_bio_PUBKEY(out, pkey)) {
		BIO_free(out);
		return -1;
	}
	char *pem;
	long n = BIO_get_mem_data(out, &pem);
	add_key(v, kind, kid, pem, (size_t)n);
	BIO_free(out);
	return 0;
}

/* PEM text: PKIX public key, PKCS#1 RSA public key or a certificate. */
static EVP_PKEY *parse_pem(const char *text)
{
	EVP_PKEY *pkey = NULL;
	BIO *in = BIO_new_mem_buf(text, -1);
	if (!in)
		return NULL;
	if (strstr(text, "-----BEGIN CERTIFICATE-----")) {
		X509 *cert = PEM_read_bio_X509(in, NULL, NULL, NULL);
		if (cert) {
			pkey = X509_get_pubkey(cert);
			X509_free(cert);
		}
	} else {
		/* OpenSSL 3's decoders take PKIX ("PUBLIC KEY") and PKCS#1
		 * ("RSA PUBLIC KEY") alike. */
		OSSL_DECODER_CTX *dctx = OSSL_DECODER_CTX_new_for_pkey(
		    &pkey, "PEM", NULL, NULL, EVP_PKEY_PUBLIC_KEY, NULL, NULL);
		if (dctx && !OSSL_DECODER_from_bio(dctx, in)) {
			EVP_PKEY_free(pkey);
			pkey = NULL;
		}
		OSSL_DECODER_CTX_free(dctx);
	}
	BIO_free(in);
	return pkey;
}

static int add_static_pem(struct pk_verifier *v, enum key_kind kind, const char *text,
                          const char *what, char *err, size_t errlen)
{
	EVP_PKEY *pkey = parse_pem(text);
	int want = kind == KEY_RSA ? EVP_PKEY_RSA : EVP_PKEY_EC;
	if (!pkey || EVP_PKEY_get_base_id(pkey) != want) {
		snprintf(err, errlen, "parse %s public key: %s", what,
		         pkey ? "wrong key type" : "invalid PEM");
		EVP_PKEY_free(pkey);
		return -1;
	}
	int rc = add_pkey(v, kind, NULL, pkey);
	EVP_PKEY_free(pkey);
	if (rc < 0)
		snprintf(err, errlen, "parse %s public key: cannot encode it", what);
	return rc;
}

/* --- base64url ------------------------------------------------------------- */

static int b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-' || c == '+')
		return 62;
	if (c == '_' || c == '/')
		return 63;
	return -1;
}

/* Decodes unpadded (or padded) base64url into a new buffer (NUL-terminated
 * for convenience); NULL on a bad character. Owned by the caller. */
static uint8_t *b64url_decode(const char *s, size_t n, size_t *out_len)
{
	while (n > 0 && s[n - 1] == '=')
		n--;
	if (n % 4 == 1)
		return NULL;
	uint8_t *out = pk_xmalloc(n * 3 / 4 + 2);
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64val((unsigned char)s[i]);
		if (v < 0) {
			free(out);
			return NULL;
		}
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	out[o] = 0;
	*out_len = o;
	return out;
}

/* --- JWKS ------------------------------------------------------------------ */

static BIGNUM *jwk_bn(struct json_object *jwk, const char *name)
{
	struct json_object *f;
	if (!json_object_object_get_ex(jwk, name, &f) || !json_object_is_type(f, json_type_string))
		return NULL;
	const char *s = json_object_get_string(f);
	size_t n;
	uint8_t *raw = b64url_decode(s, strlen(s), &n);
	if (!raw)
		return NULL;
	BIGNUM *bn = BN_bin2bn(raw, (int)n, NULL);
	free(raw);
	return bn;
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
	EVP_PKEY *pkey = NULL;
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	if (params && ctx && EVP_PKEY_fromdata_init(ctx) > 0)
		EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return pkey;
}

static EVP_PKEY *jwk_rsa(struct json_object *jwk)
{
	BIGNUM *n = jwk_bn(jwk, "n"), *e = jwk_bn(jwk, "e");
	EVP_PKEY *pkey = NULL;
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	if (n && e && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
		pkey = pkey_fromdata("RSA", bld);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	return pkey;
}

static EVP_PKEY *jwk_ec(struct json_object *jwk)
{
	static const struct {
		const char *crv, *group;
		size_t len;
	} curves[] = {
	    {"P-256", "prime256v1", 32}, {"P-384", "secp384r1", 48}, {"P-521", "secp521r1", 66}};
	struct json_object *f;
	if (!json_object_object_get_ex(jwk, "crv", &f))
		return NULL;
	const char *crv = json_object_get_string(f);
	size_t i = 0;
	while (i < 3 && strcmp(curves[i].crv, crv ? crv : ""))
		i++;
	if (i == 3)
		return NULL;
	/* The public point, uncompressed: 0x04 || x || y, each left-padded. */
	size_t len = curves[i].len;
	uint8_t point[1 + 2 * 66] = {4};
	const char *names[2] = {"x", "y"};
	for (int c = 0; c < 2; c++) {
		BIGNUM *bn = jwk_bn(jwk, names[c]);
		int ok = bn && BN_num_bytes(bn) <= (int)len &&
		         BN_bn2binpad(bn, point + 1 + (size_t)c * len, (int)len) == (int)len;
		BN_free(bn);
		if (!ok)
			return NULL;
	}
	EVP_PKEY *pkey = NULL;
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	if (bld &&
	    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, curves[i].group, 0) &&
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * len))
		pkey = pkey_fromdata("EC", bld);
	OSSL_PARAM_BLD_free(bld);
	return pkey;
}

/* Keys of a JWK Set document. Keys this verifier cannot use (other types,
 * encryption keys, broken members) are skipped, as a JWKS client does. */
static int load_jwks(struct pk_verifier *v, const char *text, char *err, size_t errlen)
{
	struct json_object *root = json_tokener_parse(text);
	struct json_object *keys;
	if (!root || !json_object_object_get_ex(root, "keys", &keys) ||
	    !json_object_is_type(keys, json_type_array)) {
		snprintf(err, errlen, "jwks: not a JWK Set (no \"keys\" array)");
		json_object_put(root);
		return -1;
	}
	for (size_t i = 0; i < json_object_array_length(keys); i++) {
		struct json_object *jwk = json_object_array_get_idx(keys, i), *f;
		const char *kty =
		    json_object_object_get_ex(jwk, "kty", &f) ? json_object_get_string(f) : NULL;
		const char *kid =
		    json_object_object_get_ex(jwk, "kid", &f) ? json_object_get_string(f) : NULL;
		const char *use =
		    json_object_object_get_ex(jwk, "use", &f) ? json_object_get_string(f) : NULL;
		if (!kty || !kid || (use && strcmp(use, "sig")))
			continue;
		if (!strcmp(kty, "oct")) {
			if (!json_object_object_get_ex(jwk, "k", &f))
				continue;
			const char *k = json_object_get_string(f);
			size_t n;
			uint8_t *raw = k ? b64url_decode(k, strlen(k), &n) : NULL;
			if (raw)
				add_key(v, KEY_HMAC, kid, raw, n);
			free(raw);
			continue;
		}
		int rsa = !strcmp(kty, "RSA");
		EVP_PKEY *pkey = rsa ? jwk_rsa(jwk) : !strcmp(kty, "EC") ? jwk_ec(jwk) : NULL;
		if (pkey)
			add_pkey(v, rsa ? KEY_RSA : KEY_EC, kid, pkey);
		EVP_PKEY_free(pkey);
	}
	json_object_put(root);
	return 0;
}

static int load_jwks_endpoint(struct pk_verifier *v, const char *endpoint, char *err, size_t errlen)
{
	if (strncmp(endpoint, "file://", 7) != 0) {
		const char *colon = strstr(endpoint, "://");
		if (colon && (!strncmp(endpoint, "https", 5) || !strncmp(endpoint, "http", 4)))
			snprintf(err, errlen,
			         "jwks: %.*s endpoints are not supported yet (use file://)",
			         (int)(colon - endpoint), endpoint);
		else
			snprintf(err, errlen, "jwks: unsupported scheme: %s", endpoint);
		return -1;
	}
	const char *path = endpoint + 7;
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "jwks: open %s: %s", path, strerror(errno));
		return -1;
	}
	/* A key set is small; 1 MiB bounds a mistaken path. */
	size_t cap = 1 << 20, n = 0;
	char *text = pk_xmalloc(cap + 1);
	size_t got;
	while ((got = fread(text + n, 1, cap - n, f)) > 0 && n < cap)
		n += got;
	int too_big = n == cap && fgetc(f) != EOF;
	fclose(f);
	text[n] = 0;
	int rc = -1;
	if (too_big)
		snprintf(err, errlen, "jwks: %s is larger than 1 MiB", path);
	else
		rc = load_jwks(v, text, err, errlen);
	free(text);
	return rc;
}

struct pk_verifier *pk_verifier_new(const struct pk_auth_config *c, char *err, size_t errlen)
{
	/* Owner: the caller (pk_verifier_free). */
	struct pk_verifier *v = pk_xcalloc(1, sizeof(*v));
	v->audience = c->audience && *c->audience ? pk_xstrdup(c->audience) : NULL;
	v->issuer = c->issuer && *c->issuer ? pk_xstrdup(c->issuer) : NULL;
	int statics = (c->hmac_secret_key && *c->hmac_secret_key) ||
	              (c->rsa_public_key && *c->rsa_public_key) ||
	              (c->ecdsa_public_key && *c->ecdsa_public_key);
	if (c->jwks.endpoint && *c->jwks.endpoint) {
		if (statics) {
			snprintf(err, errlen,
			         "no other verification key can be set when JWKS.Endpoint is set");
			goto fail;
		}
		v->jwks = 1;
		if (load_jwks_endpoint(v, c->jwks.endpoint, err, errlen) < 0)
			goto fail;
		return v;
	}
	if (c->hmac_secret_key && *c->hmac_secret_key)
		add_key(v, KEY_HMAC, NULL, c->hmac_secret_key, strlen(c->hmac_secret_key));
	if (c->rsa_public_key && *c->rsa_public_key &&
	    add_static_pem(v, KEY_RSA, c->rsa_public_key, "rsa", err, errlen) < 0)
		goto fail;
	if (c->ecdsa_public_key && *c->ecdsa_public_key &&
	    add_static_pem(v, KEY_EC, c->ecdsa_public_key, "ecdsa", err, errlen) < 0)
		goto fail;
	return v;
fail:
	pk_verifier_free(v);
	return NULL;
}

void pk_verifier_free(struct pk_verifier *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->n; i++) {
		free(v->keys[i].kid);
		/* The HMAC secret and key text are not needed once freed. */
		OPENSSL_cleanse(v->keys[i].bytes, v->keys[i].len);
		free(v->keys[i].bytes);
	}
	free(v->keys);
	free(v->audience);
	free(v->issuer);
	free(v);
}

/* --- headers ------------------------------------------------------------------ */

const char *pk_auth_token_from_headers(const char *x_piko_authorization, const char *authorization,
                                       const char **token, size_t *token_len)
{
	/* Go's Header.Get: an empty value is the same as none. */
	const char *h =
	    x_piko_authorization && *x_piko_authorization ? x_piko_authorization : authorization;
	if (!h || !*h)
		return PK_AUTH_MISSING;
	const char *sp = strchr(h, ' ');
	if (!sp)
		return PK_AUTH_INVALID_HEADER;
	if ((size_t)(sp - h) != 6 || memcmp(h, "Bearer", 6) != 0)
		return PK_AUTH_UNSUPPORTED;
	*token = sp + 1;
	*token_len = strlen(sp + 1);
	return NULL;
}

/* --- tokens ------------------------------------------------------------------- */

/* The key for a token, from its header (alg, kid); NULL when none may check
 * it. *alg_out is the algorithm libjwt must report after verifying. */
static const struct key *pick_key(const struct pk_verifier *v, const char *hdr, size_t hdr_len,
                                  jwt_alg_t *alg_out)
{
	size_t n;
	uint8_t *json = b64url_decode(hdr, hdr_len, &n);
	if (!json)
		return NULL;
	struct json_object *root = json_tokener_parse((const char *)json);
	free(json);
	struct json_object *f;
	const char *alg = NULL, *kid = NULL;
	if (root && json_object_object_get_ex(root, "alg", &f) &&
	    json_object_is_type(f, json_type_string))
		alg = json_object_get_string(f);
	if (root && json_object_object_get_ex(root, "kid", &f) &&
	    json_object_is_type(f, json_type_string))
		kid = json_object_get_string(f);

	const struct key *key = NULL;
	enum key_kind kind;
	jwt_alg_t a = JWT_ALG_INVAL;
	if (!alg)
		goto out;
	/* Exactly these nine; "none", PS*, anything else is refused. */
	static const struct {
		const char *name;
		jwt_alg_t alg;
		enum key_kind kind;
	} algs[] = {
	    {"HS256", JWT_ALG_HS256, KEY_HMAC}, {"HS384", JWT_ALG_HS384, KEY_HMAC},
	    {"HS512", JWT_ALG_HS512, KEY_HMAC}, {"RS256", JWT_ALG_RS256, KEY_RSA},
	    {"RS384", JWT_ALG_RS384, KEY_RSA},  {"RS512", JWT_ALG_RS512, KEY_RSA},
	    {"ES256", JWT_ALG_ES256, KEY_EC},   {"ES384", JWT_ALG_ES384, KEY_EC},
	    {"ES512", JWT_ALG_ES512, KEY_EC},
	};
	size_t i = 0;
	while (i < sizeof(algs) / sizeof(algs[0]) && strcmp(algs[i].name, alg))
		i++;
	if (i == sizeof(algs) / sizeof(algs[0]))
		goto out;
	a = algs[i].alg;
	kind = algs[i].kind;
	for (size_t k = 0; k < v->n && !key; k++) {
		if (v->keys[k].kind != kind)
			continue;
		if (v->jwks && (!kid || strcmp(kid, v->keys[k].kid)))
			continue;
		key = &v->keys[k];
	}
out:
	json_object_put(root);
	*alg_out = a;
	return key;
}

/* A NumericDate claim: absent (0), a number (1, *out set), or wrong (-1). */
static int numeric_date(struct json_object *claims, const char *name, double *out)
{
	struct json_object *f;
	if (!json_object_object_get_ex(claims, name, &f) || json_object_is_type(f, json_type_null))
		return 0;
	if (!json_object_is_type(f, json_type_int) && !json_object_is_type(f, json_type_double))
		return -1;
	*out = json_object_get_double(f);
	return isfinite(*out) ? 1 : -1;
}

static int audience_ok(struct json_object *claims, const char *want)
{
	struct json_object *aud;
	if (!json_object_object_get_ex(claims, "aud", &aud))
		return 0;
	if (json_object_is_type(aud, json_type_string))
		return !strcmp(json_object_get_string(aud), want);
	if (!json_object_is_type(aud, json_type_array))
		return 0;
	for (size_t i = 0; i < json_object_array_length(aud); i++) {
		struct json_object *e = json_object_array_get_idx(aud, i);
		if (json_object_is_type(e, json_type_string) &&
		    !strcmp(json_object_get_string(e), want))
			return 1;
	}
	return 0;
}

/* piko.endpoints into out; -1 when the claim has the wrong shape (Go's JSON
 * decoding of Piko's claims fails on it). */
static int read_endpoints(struct json_object *claims, struct pk_token *out)
{
	struct json_object *piko, *eps;
	if (!json_object_object_get_ex(claims, "piko", &piko) ||
	    json_object_is_type(piko, json_type_null))
		return 0;
	if (!json_object_is_type(piko, json_type_object))
		return -1;
	if (!json_object_object_get_ex(piko, "endpoints", &eps) ||
	    json_object_is_type(eps, json_type_null))
		return 0;
	if (!json_object_is_type(eps, json_type_array))
		return -1;
	size_t n = json_object_array_length(eps);
	for (size_t i = 0; i < n; i++)
		if (!json_object_is_type(json_object_array_get_idx(eps, i), json_type_string))
			return -1;
	if (n == 0)
		return 0;
	out->endpoints = pk_xcalloc(n, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		out->endpoints[i] =
		    pk_xstrdup(json_object_get_string(json_object_array_get_idx(eps, i)));
	out->n_endpoints = n;
	return 0;
}

static const char *check_claims(const struct pk_verifier *v, const char *payload, int64_t now,
                                struct pk_token *out)
{
	struct json_object *claims = json_tokener_parse(payload);
	const char *why = PK_AUTH_INVALID;
	if (!claims || !json_object_is_type(claims, json_type_object))
		goto out;
	double exp = 0, nbf = 0;
	int has_exp = numeric_date(claims, "exp", &exp);
	int has_nbf = numeric_date(claims, "nbf", &nbf);
	if (has_exp < 0 || has_nbf < 0)
		goto out;
	struct json_object *f;
	if (v->issuer && (!json_object_object_get_ex(claims, "iss", &f) ||
	                  !json_object_is_type(f, json_type_string) ||
	                  strcmp(json_object_get_string(f), v->issuer)))
		goto out;
	if (v->audience && !audience_ok(claims, v->audience))
		goto out;
	if (has_nbf && (double)now < nbf)
		goto out;
	if (read_endpoints(claims, out) < 0)
		goto out;
	/* Valid while now < exp (Go's jwt: expired at exp itself). */
	if (has_exp && (double)now >= exp) {
		why = PK_AUTH_EXPIRED;
		goto out;
	}
	out->exp = has_exp ? (int64_t)ceil(exp) : 0;
	why = NULL;
out:
	json_object_put(claims);
	if (why)
		pk_token_clear(out);
	return why;
}

const char *pk_verifier_verify(const struct pk_verifier *v, const char *token, size_t token_len,
                               int64_t now, struct pk_token *out)
{
	memset(out, 0, sizeof(*out));
	/* header.payload.signature, nothing more. */
	const char *d1 = memchr(token, '.', token_len);
	const char *d2 = d1 ? memchr(d1 + 1, '.', token_len - (size_t)(d1 + 1 - token)) : NULL;
	if (!d1 || !d2 || memchr(d2 + 1, '.', token_len - (size_t)(d2 + 1 - token)) ||
	    memchr(token, 0, token_len))
		return PK_AUTH_INVALID;
	jwt_alg_t want;
	const struct key *key = pick_key(v, token, (size_t)(d1 - token), &want);
	if (!key)
		return PK_AUTH_INVALID;

	char *copy = pk_xstrndup(token, token_len); /* libjwt wants a C string */
	jwt_t *jwt = NULL;
	int rc = jwt_decode(&jwt, copy, key->bytes, (int)key->len);
	free(copy);
	if (rc != 0 || !jwt || jwt_get_alg(jwt) != want) {
		jwt_free(jwt);
		return PK_AUTH_INVALID;
	}
	char *payload = jwt_get_grants_json(jwt, NULL);
	jwt_free(jwt);
	if (!payload)
		return PK_AUTH_INVALID;
	const char *why = check_claims(v, payload, now, out);
	free(payload);
	return why;
}

int64_t pk_auth_now(void)
{
	return (int64_t)time(NULL);
}

int pk_token_permits(const struct pk_token *t, const char *endpoint)
{
	if (t->n_endpoints == 0)
		return 1;
	for (size_t i = 0; i < t->n_endpoints; i++)
		if (!strcmp(t->endpoints[i], endpoint))
			return 1;
	return 0;
}

void pk_token_clear(struct pk_token *t)
{
	for (size_t i = 0; i < t->n_endpoints; i++)
		free(t->endpoints[i]);
	free(t->endpoints);
	memset(t, 0, sizeof(*t));
}
