/*
 * Fuzz the token path: header parsing through verification. The input is a
 * header value (split at its first NUL byte into x-piko-authorization and
 * Authorization). The verifiers hold an HMAC secret, and a JWKS-free RSA and
 * EC key pair made once, so every algorithm branch and libjwt's decoders are
 * reached; the claims of tokens signed with the HMAC secret are exercised by
 * the corpus (tokens signed with "fuzz-secret").
 */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "fuzz_input.h"

static char *public_pem(const char *type, const char *param)
{
	EVP_PKEY *k = param ? EVP_PKEY_Q_keygen(NULL, NULL, type, param)
	                    : EVP_PKEY_Q_keygen(NULL, NULL, type, (size_t)1024);
	BIO *b = BIO_new(BIO_s_mem());
	if (!k || !b || !PEM_write_bio_PUBKEY(b, k))
		abort();
	char *p;
	long n = BIO_get_mem_data(b, &p);
	char *s = strndup(p, (size_t)n);
	BIO_free(b);
	EVP_PKEY_free(k);
	return s;
}

static struct pk_verifier *verifier(void)
{
	static struct pk_verifier *v;
	if (!v) {
		struct pk_auth_config c;
		memset(&c, 0, sizeof(c));
		c.hmac_secret_key = "fuzz-secret";
		c.rsa_public_key = public_pem("RSA", NULL);
		c.ecdsa_public_key = public_pem("EC", "P-256");
		c.audience = "aud";
		char err[256];
		v = pk_verifier_new(&c, err, sizeof(err));
		if (!v)
			abort();
		free(c.rsa_public_key);
		free(c.ecdsa_public_key);
	}
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *b;
	char *a = pk_fuzz_two_strings(data, size, &b);
	if (!a)
		return 0;
	const char *tok;
	size_t len;
	if (!pk_auth_token_from_headers(a, b, &tok, &len)) {
		struct pk_token t;
		if (!pk_verifier_verify(verifier(), tok, len, 1800000000, &t)) {
			pk_token_permits(&t, "endpoint");
			pk_token_clear(&t);
		}
	}
	/* the raw input as a token too, without the header rules */
	struct pk_token t;
	if (!pk_verifier_verify(verifier(), a, strlen(a), 1800000000, &t))
		pk_token_clear(&t);
	free(a);
	return 0;
}
