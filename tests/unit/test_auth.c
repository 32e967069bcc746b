/*
 * Token verification (core/auth.c): the catalogue of good and bad tokens of
 * protocol reference §5. Keys are generated here with OpenSSL; tokens are
 * signed with libjwt, or assembled by hand where libjwt would refuse to.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "auth.h"

#define NOW 1800000000LL

static EVP_PKEY *rsa_key, *ec256, *ec384, *ec521;

static char *bio_string(BIO *b)
{
	char *p;
	long n = BIO_get_mem_data(b, &p);
	char *s = malloc((size_t)n + 1);
	memcpy(s, p, (size_t)n);
	s[n] = 0;
	BIO_free(b);
	return s;
}

static char *private_pem(EVP_PKEY *k)
{
	BIO *b = BIO_new(BIO_s_mem());
	assert_true(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL));
	return bio_string(b);
}

static char *public_pem(EVP_PKEY *k)
{
	BIO *b = BIO_new(BIO_s_mem());
	assert_true(PEM_write_bio_PUBKEY(b, k));
	return bio_string(b);
}

/* PKCS#1 "RSA PUBLIC KEY". */
static char *pkcs1_pem(EVP_PKEY *k)
{
	BIO *b = BIO_new(BIO_s_mem());
	OSSL_ENCODER_CTX *e =
	    OSSL_ENCODER_CTX_new_for_pkey(k, EVP_PKEY_PUBLIC_KEY, "PEM", "type-specific", NULL);
	assert_non_null(e);
	assert_true(OSSL_ENCODER_to_bio(e, b));
	OSSL_ENCODER_CTX_free(e);
	char *s = bio_string(b);
	assert_non_null(strstr(s, "BEGIN RSA PUBLIC KEY"));
	return s;
}

static char *cert_pem(EVP_PKEY *k)
{
	X509 *x = X509_new();
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	                           (const unsigned char *)"test", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	assert_true(X509_sign(x, k, EVP_sha256()));
	BIO *b = BIO_new(BIO_s_mem());
	PEM_write_bio_X509(b, x);
	X509_free(x);
	return bio_string(b);
}

static int setup(void **state)
{
	(void)state;
	rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	ec256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	ec384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	ec521 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
	return rsa_key && ec256 && ec384 && ec521 ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(rsa_key);
	EVP_PKEY_free(ec256);
	EVP_PKEY_free(ec384);
	EVP_PKEY_free(ec521);
	return 0;
}

/* A token signed by libjwt: alg with key (HMAC secret or private PEM),
 * claims as JSON, optional kid. Owned by the caller. */
static char *sign(jwt_alg_t alg, const char *key, const char *claims, const char *kid)
{
	jwt_t *j;
	assert_int_equal(jwt_new(&j), 0);
	if (claims && *claims)
		assert_int_equal(jwt_add_grants_json(j, claims), 0);
	if (kid)
		assert_int_equal(jwt_add_header(j, "kid", kid), 0);
	assert_int_equal(jwt_set_alg(j, alg, (const unsigned char *)key, (int)strlen(key)), 0);
	char *t = jwt_encode_str(j);
	assert_non_null(t);
	jwt_free(j);
	return t;
}

static void b64url(const char *in, size_t n, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)(unsigned char)in[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)(unsigned char)in[i + 1] << 8;
		if (i + 2 < n)
			v |= (unsigned char)in[i + 2];
		out[o++] = a[(v >> 18) & 63];
		out[o++] = a[(v >> 12) & 63];
		if (i + 1 < n)
			out[o++] = a[(v >> 6) & 63];
		if (i + 2 < n)
			out[o++] = a[v & 63];
	}
	out[o] = 0;
}

/* header.payload.sig from raw JSON parts (for tokens libjwt will not make). */
static char *assemble(const char *header, const char *payload, const char *sig)
{
	char h[512], p[512];
	b64url(header, strlen(header), h);
	b64url(payload, strlen(payload), p);
	char *t = malloc(strlen(h) + strlen(p) + strlen(sig) + 3);
	sprintf(t, "%s.%s.%s", h, p, sig);
	return t;
}

static struct pk_verifier *verifier(const char *hmac, const char *rsa, const char *ec,
                                    const char *aud, const char *iss)
{
	struct pk_auth_config c;
	memset(&c, 0, sizeof(c));
	c.hmac_secret_key = (char *)hmac;
	c.rsa_public_key = (char *)rsa;
	c.ecdsa_public_key = (char *)ec;
	c.audience = (char *)aud;
	c.issuer = (char *)iss;
	char err[256] = "";
	struct pk_verifier *v = pk_verifier_new(&c, err, sizeof(err));
	if (!v)
		fail_msg("pk_verifier_new: %s", err);
	return v;
}

static const char *verify(struct pk_verifier *v, const char *token)
{
	struct pk_token t;
	const char *why = pk_verifier_verify(v, token, strlen(token), NOW, &t);
	pk_token_clear(&t);
	return why;
}

#define assert_ok(v, tok) assert_null(verify(v, tok))
#define assert_why(v, tok, w) assert_string_equal(verify(v, tok) ? verify(v, tok) : "ok", w)

static void test_headers(void **state)
{
	(void)state;
	const char *tok;
	size_t n;
	assert_string_equal(pk_auth_token_from_headers(NULL, NULL, &tok, &n), PK_AUTH_MISSING);
	assert_string_equal(pk_auth_token_from_headers("", "", &tok, &n), PK_AUTH_MISSING);
	assert_string_equal(pk_auth_token_from_headers(NULL, "Bearer", &tok, &n),
	                    PK_AUTH_INVALID_HEADER);
	assert_string_equal(pk_auth_token_from_headers(NULL, "bearer abc", &tok, &n),
	                    PK_AUTH_UNSUPPORTED);
	assert_string_equal(pk_auth_token_from_headers(NULL, "Basic abc", &tok, &n),
	                    PK_AUTH_UNSUPPORTED);
	assert_null(pk_auth_token_from_headers(NULL, "Bearer abc", &tok, &n));
	assert_int_equal(n, 3);
	assert_memory_equal(tok, "abc", 3);
	/* x-piko-authorization wins, even when Authorization is fine */
	assert_string_equal(pk_auth_token_from_headers("Basic x", "Bearer abc", &tok, &n),
	                    PK_AUTH_UNSUPPORTED);
	assert_null(pk_auth_token_from_headers("Bearer xyz", "Basic x", &tok, &n));
	assert_memory_equal(tok, "xyz", 3);
	/* split at the first space: the rest is the token, spaces and all */
	assert_null(pk_auth_token_from_headers(NULL, "Bearer a b", &tok, &n));
	assert_int_equal(n, 3);
}

static void test_every_algorithm(void **state)
{
	(void)state;
	char *rsa_priv = private_pem(rsa_key), *rsa_pub = public_pem(rsa_key);
	struct {
		EVP_PKEY *k;
		jwt_alg_t alg;
	} ec[] = {{ec256, JWT_ALG_ES256}, {ec384, JWT_ALG_ES384}, {ec521, JWT_ALG_ES512}};
	const char *claims = "{\"exp\":1800000100}";
	jwt_alg_t hs[] = {JWT_ALG_HS256, JWT_ALG_HS384, JWT_ALG_HS512};
	jwt_alg_t rs[] = {JWT_ALG_RS256, JWT_ALG_RS384, JWT_ALG_RS512};
	struct pk_verifier *v = verifier("secret-0123456789", rsa_pub, NULL, NULL, NULL);
	for (int i = 0; i < 3; i++) {
		char *t = sign(hs[i], "secret-0123456789", claims, NULL);
		assert_ok(v, t);
		free(t);
		t = sign(hs[i], "another-secret", claims, NULL);
		assert_why(v, t, PK_AUTH_INVALID);
		free(t);
		t = sign(rs[i], rsa_priv, claims, NULL);
		assert_ok(v, t);
		free(t);
	}
	pk_verifier_free(v);
	for (int i = 0; i < 3; i++) {
		char *priv = private_pem(ec[i].k), *pub = public_pem(ec[i].k);
		v = verifier(NULL, NULL, pub, NULL, NULL);
		char *t = sign(ec[i].alg, priv, claims, NULL);
		assert_ok(v, t);
		free(t);
		/* an ES token when only an HMAC key exists: refused */
		struct pk_verifier *h = verifier("s", NULL, NULL, NULL, NULL);
		t = sign(ec[i].alg, priv, claims, NULL);
		assert_why(h, t, PK_AUTH_INVALID);
		free(t);
		pk_verifier_free(h);
		pk_verifier_free(v);
		free(priv);
		free(pub);
	}
	free(rsa_priv);
	free(rsa_pub);
}

static void test_key_forms(void **state)
{
	(void)state;
	char *priv = private_pem(rsa_key), *p1 = pkcs1_pem(rsa_key), *cert = cert_pem(rsa_key);
	char *t = sign(JWT_ALG_RS256, priv, "{}", NULL);
	struct pk_verifier *v = verifier(NULL, p1, NULL, NULL, NULL);
	assert_ok(v, t);
	pk_verifier_free(v);
	v = verifier(NULL, cert, NULL, NULL, NULL);
	assert_ok(v, t);
	pk_verifier_free(v);

	/* an EC key given as the RSA key, garbage, and JWKS with static keys */
	char *ecpub = public_pem(ec256);
	struct pk_auth_config c;
	memset(&c, 0, sizeof(c));
	char err[256];
	c.rsa_public_key = ecpub;
	assert_null(pk_verifier_new(&c, err, sizeof(err)));
	assert_string_equal(err, "parse rsa public key: wrong key type");
	c.rsa_public_key = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
	assert_null(pk_verifier_new(&c, err, sizeof(err)));
	assert_string_equal(err, "parse rsa public key: invalid PEM");
	c.rsa_public_key = NULL;
	c.hmac_secret_key = "s";
	c.jwks.endpoint = "file:///nonexistent";
	assert_null(pk_verifier_new(&c, err, sizeof(err)));
	assert_string_equal(err, "no other verification key can be set when JWKS.Endpoint is set");
	c.hmac_secret_key = NULL;
	c.jwks.endpoint = "ftp://x/keys";
	assert_null(pk_verifier_new(&c, err, sizeof(err)));
	assert_non_null(strstr(err, "unsupported scheme"));
	free(ecpub);
	free(t);
	free(priv);
	free(p1);
	free(cert);
}

static void test_bad_tokens(void **state)
{
	(void)state;
	char *rsa_priv = private_pem(rsa_key), *rsa_pub = public_pem(rsa_key);
	struct pk_verifier *v = verifier(NULL, rsa_pub, NULL, NULL, NULL);

	/* garbage and shapes */
	assert_why(v, "", PK_AUTH_INVALID);
	assert_why(v, "abc", PK_AUTH_INVALID);
	assert_why(v, "a.b.c", PK_AUTH_INVALID);
	assert_why(v, "a.b.c.d", PK_AUTH_INVALID);

	/* alg none, with and without a signature */
	char *t = assemble("{\"alg\":\"none\",\"typ\":\"JWT\"}", "{}", "");
	assert_why(v, t, PK_AUTH_INVALID);
	free(t);
	t = assemble("{\"alg\":\"none\"}", "{}", "c2ln");
	assert_why(v, t, PK_AUTH_INVALID);
	free(t);

	/* HS256 signed with the RSA public key as the secret: the classic
	 * confusion; refused whether or not an HMAC key is configured. */
	t = sign(JWT_ALG_HS256, rsa_pub, "{}", NULL);
	assert_why(v, t, PK_AUTH_INVALID);
	struct pk_verifier *both = verifier("other", rsa_pub, NULL, NULL, NULL);
	assert_why(both, t, PK_AUTH_INVALID);
	pk_verifier_free(both);
	free(t);

	/* tampered: signature, payload */
	t = sign(JWT_ALG_RS256, rsa_priv, "{\"sub\":\"a\"}", NULL);
	assert_ok(v, t);
	char *last = strrchr(t, '.') + 5;
	*last = *last == 'A' ? 'B' : 'A';
	assert_why(v, t, PK_AUTH_INVALID);
	free(t);
	t = sign(JWT_ALG_RS256, rsa_priv, "{\"sub\":\"a\"}", NULL);
	char *dot = strchr(t, '.');
	dot[2] = dot[2] == 'A' ? 'B' : 'A';
	assert_why(v, t, PK_AUTH_INVALID);
	free(t);

	/* PS256 is not accepted (Piko: RS* only) */
	t = assemble("{\"alg\":\"PS256\"}", "{}", "c2ln");
	assert_why(v, t, PK_AUTH_INVALID);
	free(t);
	pk_verifier_free(v);
	free(rsa_priv);
	free(rsa_pub);
}

static void test_claims(void **state)
{
	(void)state;
	struct pk_verifier *v = verifier("k", NULL, NULL, NULL, NULL);
	struct {
		const char *claims;
		const char *want; /* NULL: accepted */
	} cases[] = {
	    {"{}", NULL},
	    {"{\"exp\":1800000001}", NULL},
	    {"{\"exp\":1800000000}", PK_AUTH_EXPIRED}, /* expired at exp itself */
	    {"{\"exp\":1700000000}", PK_AUTH_EXPIRED},
	    {"{\"exp\":1800000000.5}", NULL},
	    {"{\"exp\":\"1900000000\"}", PK_AUTH_INVALID},
	    {"{\"nbf\":1800000000}", NULL},
	    {"{\"nbf\":1800000001}", PK_AUTH_INVALID},
	    {"{\"nbf\":1800000001,\"exp\":1}", PK_AUTH_INVALID},
	    {"{\"iat\":1900000000}", NULL}, /* iat is not checked */
	    {"{\"piko\":{\"endpoints\":[\"a\"]}}", NULL},
	    {"{\"piko\":{\"endpoints\":\"a\"}}", PK_AUTH_INVALID},
	    {"{\"piko\":{\"endpoints\":[1]}}", PK_AUTH_INVALID},
	    {"{\"piko\":[]}", PK_AUTH_INVALID},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *t = sign(JWT_ALG_HS256, "k", cases[i].claims, NULL);
		const char *got = verify(v, t);
		if ((got == NULL) != (cases[i].want == NULL) || (got && strcmp(got, cases[i].want)))
			fail_msg("%s: got %s, want %s", cases[i].claims, got ? got : "ok",
			         cases[i].want ? cases[i].want : "ok");
		free(t);
	}
	pk_verifier_free(v);

	/* expired but forged: the signature decides first */
	v = verifier("k", NULL, NULL, NULL, NULL);
	char *t = sign(JWT_ALG_HS256, "not-k", "{\"exp\":1}", NULL);
	assert_why(v, t, PK_AUTH_INVALID);
	free(t);
	pk_verifier_free(v);

	/* audience and issuer */
	v = verifier("k", NULL, NULL, "piko", "https://issuer");
	const char *ok[] = {"{\"aud\":\"piko\",\"iss\":\"https://issuer\"}",
	                    "{\"aud\":[\"x\",\"piko\"],\"iss\":\"https://issuer\"}"};
	const char *bad[] = {"{\"iss\":\"https://issuer\"}",
	                     "{\"aud\":\"other\",\"iss\":\"https://issuer\"}",
	                     "{\"aud\":[\"x\"],\"iss\":\"https://issuer\"}", "{\"aud\":\"piko\"}",
	                     "{\"aud\":\"piko\",\"iss\":\"https://other\"}"};
	for (size_t i = 0; i < 2; i++) {
		t = sign(JWT_ALG_HS256, "k", ok[i], NULL);
		assert_ok(v, t);
		free(t);
	}
	for (size_t i = 0; i < 5; i++) {
		t = sign(JWT_ALG_HS256, "k", bad[i], NULL);
		assert_why(v, t, PK_AUTH_INVALID);
		free(t);
	}
	pk_verifier_free(v);
}

static void test_endpoints_and_exp(void **state)
{
	(void)state;
	struct pk_verifier *v = verifier("k", NULL, NULL, NULL, NULL);
	char *t = sign(JWT_ALG_HS256, "k",
	               "{\"exp\":1800000060,\"piko\":{\"endpoints\":[\"a\",\"b\"]}}", NULL);
	struct pk_token tok;
	assert_null(pk_verifier_verify(v, t, strlen(t), NOW, &tok));
	assert_int_equal(tok.exp, 1800000060);
	assert_true(pk_token_permits(&tok, "a"));
	assert_true(pk_token_permits(&tok, "b"));
	assert_false(pk_token_permits(&tok, "c"));
	assert_false(pk_token_permits(&tok, "A"));
	pk_token_clear(&tok);
	free(t);
	t = sign(JWT_ALG_HS256, "k", "{\"piko\":{\"endpoints\":[]}}", NULL);
	assert_null(pk_verifier_verify(v, t, strlen(t), NOW, &tok));
	assert_int_equal(tok.exp, 0);
	assert_true(pk_token_permits(&tok, "anything"));
	pk_token_clear(&tok);
	free(t);
	pk_verifier_free(v);
}

static char *bn_b64(const BIGNUM *bn, int pad)
{
	int n = pad ? pad : BN_num_bytes(bn);
	unsigned char raw[256];
	BN_bn2binpad(bn, raw, n);
	char *out = malloc(400);
	b64url((const char *)raw, (size_t)n, out);
	return out;
}

static void test_jwks_file(void **state)
{
	(void)state;
	BIGNUM *n = NULL, *e = NULL, *x = NULL, *y = NULL;
	assert_true(EVP_PKEY_get_bn_param(rsa_key, OSSL_PKEY_PARAM_RSA_N, &n));
	assert_true(EVP_PKEY_get_bn_param(rsa_key, OSSL_PKEY_PARAM_RSA_E, &e));
	assert_true(EVP_PKEY_get_bn_param(ec256, OSSL_PKEY_PARAM_EC_PUB_X, &x));
	assert_true(EVP_PKEY_get_bn_param(ec256, OSSL_PKEY_PARAM_EC_PUB_Y, &y));
	char *bn = bn_b64(n, 0), *be = bn_b64(e, 0), *bx = bn_b64(x, 32), *by = bn_b64(y, 32);
	char secret_b64[64];
	b64url("jwks-secret", 11, secret_b64);
	char path[] = "/tmp/pk-jwks-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	fprintf(f,
	        "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r1\",\"n\":\"%s\",\"e\":\"%s\"},"
	        "{\"kty\":\"EC\",\"kid\":\"e1\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"},"
	        "{\"kty\":\"oct\",\"kid\":\"h1\",\"k\":\"%s\"},"
	        "{\"kty\":\"OKP\",\"kid\":\"skip-me\",\"crv\":\"Ed25519\",\"x\":\"AA\"}]}",
	        bn, be, bx, by, secret_b64);
	fclose(f);

	struct pk_auth_config c;
	memset(&c, 0, sizeof(c));
	char url[64], err[256];
	snprintf(url, sizeof(url), "file://%s", path);
	c.jwks.endpoint = url;
	struct pk_verifier *v = pk_verifier_new(&c, err, sizeof(err));
	if (!v)
		fail_msg("jwks: %s", err);
	char *rsa_priv = private_pem(rsa_key), *ec_priv = private_pem(ec256);
	char *t = sign(JWT_ALG_RS256, rsa_priv, "{}", "r1");
	assert_ok(v, t);
	free(t);
	t = sign(JWT_ALG_ES256, ec_priv, "{}", "e1");
	assert_ok(v, t);
	free(t);
	t = sign(JWT_ALG_HS256, "jwks-secret", "{}", "h1");
	assert_ok(v, t);
	free(t);
	/* no matching kid, no kid, and a kid of another key type */
	t = sign(JWT_ALG_RS256, rsa_priv, "{}", "unknown");
	assert_why(v, t, PK_AUTH_INVALID);
	free(t);
	t = sign(JWT_ALG_RS256, rsa_priv, "{}", NULL);
	assert_why(v, t, PK_AUTH_INVALID);
	free(t);
	t = sign(JWT_ALG_RS256, rsa_priv, "{}", "e1");
	assert_why(v, t, PK_AUTH_INVALID);
	free(t);
	pk_verifier_free(v);
	unlink(path);

	c.jwks.endpoint = "file:///nonexistent/keys.json";
	assert_null(pk_verifier_new(&c, err, sizeof(err)));
	assert_non_null(strstr(err, "No such file"));
	free(rsa_priv);
	free(ec_priv);
	free(bn);
	free(be);
	free(bx);
	free(by);
	BN_free(n);
	BN_free(e);
	BN_free(x);
	BN_free(y);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_headers),   cmocka_unit_test(test_every_algorithm),
	    cmocka_unit_test(test_key_forms), cmocka_unit_test(test_bad_tokens),
	    cmocka_unit_test(test_claims),    cmocka_unit_test(test_endpoints_and_exp),
	    cmocka_unit_test(test_jwks_file),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
