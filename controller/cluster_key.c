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
#include <limits.h>
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

size_t pk_cluster_key_trim(const char *data, size_t len, const char **why)
{
	*why = NULL;
	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
		len--;
	if (len == 0)
		*why = "is empty";
	else if (len > PK_CLUSTER_KEY_MAX)
		*why = "is larger than 64 KiB";
	return *why ? 0 : len;
}

void pk_cluster_key_hash(const char *key, size_t key_len, char out[PK_CLUSTER_KEY_HASH_HEX + 1])
{
	static const char prefix[] = "piko-cluster-key:";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, prefix, sizeof(prefix) - 1) != 1 ||
	    EVP_DigestUpdate(ctx, key, key_len) != 1 || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 ||
	    mdlen != 32)
		abort(); /* only OOM or an OpenSSL without SHA-256 */
	EVP_MD_CTX_free(ctx);
	for (size_t i = 0; i < PK_CLUSTER_KEY_HASH_HEX / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

char *pk_base64_encode(const void *in, size_t len)
{
	if (len > INT_MAX / 2)
		abort();                                 /* a Secret holds at most 1 MiB */
	char *out = pk_xmalloc(4 * ((len + 2) / 3) + 1); /* owner: the caller */
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

char *pk_base64_decode(const char *in, size_t *out_len)
{
	size_t n = strlen(in);
	*out_len = 0;
	if (n % 4 != 0 || n > INT_MAX / 2)
		return NULL;
	/* EVP_DecodeBlock counts the padding as zero bytes and accepts
	 * whitespace: take the padding off its count, refuse anything but the
	 * alphabet. */
	size_t pad = 0;
	for (size_t i = 0; i < n; i++) {
		char c = in[i];
		if (c == '=' && i >= n - 2) {
			pad++;
			continue;
		}
		if (pad || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		             (c >= '0' && c <= '9') || c == '+' || c == '/'))
			return NULL;
	}
	unsigned char *out = pk_xmalloc(n / 4 * 3 + 1); /* owner: the caller */
	int got = n ? EVP_DecodeBlock(out, (const unsigned char *)in, (int)n) : 0;
	if (got < 0 || (size_t)got < pad) {
		free(out);
		return NULL;
	}
	*out_len = (size_t)got - pad;
	out[*out_len] = '\0';
	return (char *)out;
}
