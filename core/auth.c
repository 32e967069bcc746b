/*
 * JWT verification for the three ports (see auth.h). libjwt checks
 * signatures; which key it is given is decided here, from the token's `alg`
 * (static keys) or `kid` (JWKS), before libjwt sees the token. Claims are
 * read with json-c from the payload libjwt verified.
 *
 * A remote JWK Set (http:// or https://) is fetched by a worker thread with
 * libcurl, never on the event loop: at start, every cache_ttl (default 1 h),
 * 10 s after a failed fetch, and when a token names an unknown kid (at most
 * once per 5 minutes, as Piko's keyfunc). The worker swaps the whole key set
 * under a mutex; verification copies the one key it needs under that mutex.
 * A token with an unknown kid is refused even when it triggers a refresh:
 * the loop does not wait for the network.
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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "buf.h"
#include "fetch.h"
#include "log.h"

#define JWKS_MAX_BYTES (1 << 20)
#define JWKS_DEFAULT_TTL_MS (60 * 60 * 1000)
#define JWKS_RETRY_MS 10000
#define JWKS_UNKNOWN_KID_EVERY_MS (5 * 60 * 1000)

enum key_kind { KEY_HMAC, KEY_RSA, KEY_EC };

struct key {
	enum key_kind kind;
	char *kid;      /* JWKS only */
	uint8_t *bytes; /* HMAC secret, or PKIX PEM text for libjwt */
	size_t len;
};

/* The worker of a remote JWK Set. */
struct remote {
	pthread_t thread;
	int started;
	pthread_mutex_t mu; /* guards the verifier's keys/n and the fields below */
	pthread_cond_t cv;
	char *url;
	int64_t ttl_ms, timeout_ms;
	int stop;
	int refresh_wanted;
	uint64_t last_unknown_kid_ms; /* 0: never */
};

struct pk_verifier {
	struct key *keys;
	size_t n;
	int jwks; /* keys are selected by kid */
	char *audience;
	char *issuer;
	struct remote *remote; /* NULL unless the JWK Set is fetched over HTTP */
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

/* One fetch: the new key set replaces the old one whole. */
static void free_keys(struct key *keys, size_t n);

static int remote_fetch(struct pk_verifier *v)
{
	struct remote *r = v->remote;
	char *body = NULL, err[512];
	size_t len;
	if (pk_fetch(r->url, r->timeout_ms, JWKS_MAX_BYTES, &body, &len, err, sizeof(err)) < 0) {
		pk_log(PK_LOG_WARN, "auth", "jwks fetch failed", "error", err, NULL);
		return -1;
	}
	struct pk_verifier fresh;
	memset(&fresh, 0, sizeof(fresh));
	int rc = load_jwks(&fresh, body, err, sizeof(err));
	free(body);
	if (rc < 0) {
		pk_log(PK_LOG_WARN, "auth", "jwks fetch failed", "url", r->url, "error", err, NULL);
		return -1;
	}
	char n[32];
	snprintf(n, sizeof(n), "%zu", fresh.n);
	pthread_mutex_lock(&r->mu);
	struct key *old = v->keys;
	size_t old_n = v->n;
	v->keys = fresh.keys;
	v->n = fresh.n;
	pthread_mutex_unlock(&r->mu);
	free_keys(old, old_n);
	pk_log(PK_LOG_DEBUG, "auth", "jwks fetched", "url", r->url, "keys", n, NULL);
	return 0;
}

static void *remote_main(void *arg)
{
	struct pk_verifier *v = arg;
	struct remote *r = v->remote;
	pthread_mutex_lock(&r->mu);
	while (!r->stop) {
		r->refresh_wanted = 0;
		pthread_mutex_unlock(&r->mu);
		int ok = remote_fetch(v) == 0;
		pthread_mutex_lock(&r->mu);
		int64_t wait_ms =
		    ok ? (r->ttl_ms > 0 ? r->ttl_ms : JWKS_DEFAULT_TTL_MS) : JWKS_RETRY_MS;
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += wait_ms / 1000;
		until.tv_nsec += (wait_ms % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		while (!r->stop && !r->refresh_wanted &&
		       pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0)
			;
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

static int start_remote(struct pk_verifier *v, const struct pk_auth_config *c, char *err,
                        size_t errlen)
{
	/* Owner: v (pk_verifier_free stops and frees it). */
	struct remote *r = pk_xcalloc(1, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	r->url = pk_xstrdup(c->jwks.endpoint);
	r->ttl_ms = c->jwks.cache_ttl_ms;
	r->timeout_ms = c->jwks.timeout_ms;
	v->remote = r;
	/* A failed first fetch does not stop the server (as Piko): the worker
	 * keeps trying, and tokens are refused until keys arrive. */
	if (pthread_create(&r->thread, NULL, remote_main, v) != 0) {
		snprintf(err, errlen, "jwks: cannot start the fetch thread");
		return -1;
	}
	r->started = 1;
	return 0;
}

/* A token named a kid we do not have: fetch again soon (rate-limited). */
static void remote_unknown_kid(struct remote *r)
{
	uint64_t now = pk_now_ms();
	pthread_mutex_lock(&r->mu);
	if (!r->last_unknown_kid_ms || now - r->last_unknown_kid_ms >= JWKS_UNKNOWN_KID_EVERY_MS) {
		r->last_unknown_kid_ms = now;
		r->refresh_wanted = 1;
		pthread_cond_signal(&r->cv);
	}
	pthread_mutex_unlock(&r->mu);
}

static int load_jwks_endpoint(struct pk_verifier *v, const struct pk_auth_config *c, char *err,
                              size_t errlen)
{
	const char *endpoint = c->jwks.endpoint;
	if (!strncmp(endpoint, "https://", 8) || !strncmp(endpoint, "http://", 7))
		return start_remote(v, c, err, errlen);
	if (strncmp(endpoint, "file://", 7) != 0) {
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
		if (load_jwks_endpoint(v, c, err, errlen) < 0)
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

static void free_keys(struct key *keys, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(keys[i].kid);
		/* The HMAC secret and key text are not needed once freed. */
		OPENSSL_cleanse(keys[i].bytes, keys[i].len);
		free(keys[i].bytes);
	}
	free(keys);
}

static void remote_stop(struct remote *r)
{
	if (r->started) {
		pthread_mutex_lock(&r->mu);
		r->stop = 1;
		pthread_cond_signal(&r->cv);
		pthread_mutex_unlock(&r->mu);
		/* A fetch in progress ends within its timeout. */
		pthread_join(r->thread, NULL);
	}
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	free(r->url);
	free(r);
}

void pk_verifier_free(struct pk_verifier *v)
{
	if (!v)
		return;
	if (v->remote)
		remote_stop(v->remote);
	free_keys(v->keys, v->n);
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
                                  jwt_alg_t *alg_out, int *unknown_kid)
{
	*unknown_kid = 0;
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
		if (v->jwks && (!kid || strcmp(kid, v->keys[k].kid)))
			continue;
		if (v->keys[k].kind != kind) {
			if (v->jwks)
				break; /* the kid's key is of another type: refused */
			continue;
		}
		key = &v->keys[k];
	}
	/* No key with this kid at all: the set may have rotated. */
	*unknown_kid = v->jwks && kid && !key;
	for (size_t k = 0; *unknown_kid && k < v->n; k++)
		if (!strcmp(kid, v->keys[k].kid))
			*unknown_kid = 0;
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
	int unknown_kid = 0;
	/* A remote key set can be swapped by its worker at any time: take a
	 * copy of the one key under its lock. */
	if (v->remote)
		pthread_mutex_lock(&v->remote->mu);
	const struct key *key = pick_key(v, token, (size_t)(d1 - token), &want, &unknown_kid);
	uint8_t *kbytes = key ? pk_xmalloc(key->len + 1) : NULL;
	size_t klen = key ? key->len : 0;
	if (key)
		memcpy(kbytes, key->bytes, key->len + 1);
	if (v->remote)
		pthread_mutex_unlock(&v->remote->mu);
	if (!key) {
		if (v->remote && unknown_kid)
			remote_unknown_kid(v->remote);
		return PK_AUTH_INVALID;
	}

	char *copy = pk_xstrndup(token, token_len); /* libjwt wants a C string */
	jwt_t *jwt = NULL;
	int rc = jwt_decode(&jwt, copy, kbytes, (int)klen);
	free(copy);
	OPENSSL_cleanse(kbytes, klen);
	free(kbytes);
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
