/*
 * Cluster key generation and the member-push proof. See cluster_key.h.
 *
 * The JWT is built by hand: header and claims are fixed JSON with no user
 * text but the times, so printf is exact, and base64url without padding is
 * ten lines. The header is {"alg":"HS256","typ":"JWT"}, as libjwt writes it
 * (a verifier does not care about the order of the members).
 */
#include "cluster_key.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

int pk_cluster_key_generate(char out[PK_CLUSTER_KEY_HEX + 1])
{
	unsigned char raw[PK_CLUSTER_KEY_HEX / 2];
	if (RAND_bytes(raw, (int)sizeof(raw)) != 1) {
		memset(out, 0, PK_CLUSTER_KEY_HEX + 1);
		return -1;
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(out + 2 * i, 3, "%02x", raw[i]);
	OPENSSL_cleanse(raw, sizeof(raw));
	return 0;
}

/* base64url of in, no padding, appended at out (room for 4/3 len + 4);
 * returns the length written (a NUL follows). */
static size_t b64url(const unsigned char *in, size_t len, char *out)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0, i = 0;
	for (; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
		out[o++] = tab[v >> 6 & 63];
		out[o++] = tab[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
		out[o++] = tab[v >> 6 & 63];
	}
	out[o] = '\0';
	return o;
}

char *pk_push_proof(const char *key, size_t key_len, int64_t now)
{
	static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	char claims[256];
	int n = snprintf(claims, sizeof(claims),
	                 "{\"aud\":\"" PK_PUSH_PROOF_AUD "\",\"exp\":%" PRId64 ",\"iat\":%" PRId64
	                 ",\"iss\":\"piko-cluster\",\"sub\":\"" PK_PUSH_PROOF_SUB "\"}",
	                 now + PK_PUSH_PROOF_TTL_S, now);
	if (n < 0 || (size_t)n >= sizeof(claims))
		abort(); /* fixed text and two integers: cannot happen */
	/* header.claims.signature, each base64url: 4/3 of the input and
	 * change. */
	size_t cap = (sizeof(header) + (size_t)n + 32) * 4 / 3 + 16;
	char *out = pk_xmalloc(cap); /* owner: the caller */
	size_t o = b64url((const unsigned char *)header, sizeof(header) - 1, out);
	out[o++] = '.';
	o += b64url((const unsigned char *)claims, (size_t)n, out + o);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	/* An empty key still signs (HMAC pads it); the caller never has one. */
	static const unsigned char none = 0;
	if (!HMAC(EVP_sha256(), key_len ? key : (const void *)&none, (int)key_len,
	          (const unsigned char *)out, o, mac, &maclen) ||
	    maclen != 32)
		abort(); /* only OOM or an OpenSSL without SHA-256 */
	out[o++] = '.';
	b64url(mac, maclen, out + o);
	return out;
}
