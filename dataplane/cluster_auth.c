/*
 * Cluster-key proofs with libjwt. See cluster_auth.h.
 */
#include "cluster_auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jwt.h>

#include "buf.h"

#define ISSUER "piko-cluster"
#define KEY_FILE_MAX 65536

int pk_cluster_key_load(const char *cfg_key, const char *key_file, char **key, size_t *key_len,
                        char *err, size_t errlen)
{
	*key = NULL;
	*key_len = 0;
	if (cfg_key && *cfg_key) {
		*key = pk_xstrdup(cfg_key);
		*key_len = strlen(cfg_key);
		return 0;
	}
	if (!key_file || !*key_file)
		return 0;
	FILE *f = fopen(key_file, "rb");
	if (!f) {
		snprintf(err, errlen, "cluster.auth.key_file: %s: %s", key_file, strerror(errno));
		return -1;
	}
	/* Owner: the caller (on success). Room for a 64 KiB key, its line end
	 * ("\r\n") and the terminator. The whole file is read: one longer than
	 * that is refused, never cut (a first line of 64 KiB would otherwise
	 * pass as the key). */
	char *buf = pk_xmalloc(KEY_FILE_MAX + 3);
	size_t n = fread(buf, 1, KEY_FILE_MAX + 2, f);
	int whole = n < KEY_FILE_MAX + 2 || fgetc(f) == EOF;
	fclose(f);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	if (n == 0 || n > KEY_FILE_MAX || !whole) {
		snprintf(err, errlen, "cluster.auth.key_file: %s: %s", key_file,
		         n == 0 && whole ? "empty" : "larger than 64 KiB");
		free(buf);
		return -1;
	}
	buf[n] = '\0';
	*key = buf;
	*key_len = n;
	return 0;
}

char *pk_cluster_proof_make(const char *key, size_t key_len, const char *sub, const char *aud,
                            int64_t now)
{
	jwt_t *jwt = NULL;
	char *out = NULL;
	if (jwt_new(&jwt) != 0)
		abort(); /* OOM: the project's policy */
	jwt_add_grant(jwt, "iss", ISSUER);
	jwt_add_grant(jwt, "sub", sub);
	if (aud)
		jwt_add_grant(jwt, "aud", aud);
	jwt_add_grant_int(jwt, "iat", (long)now);
	jwt_add_grant_int(jwt, "exp", (long)(now + PK_CLUSTER_PROOF_TTL_S));
	if (jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)key, (int)key_len) == 0) {
		char *s = jwt_encode_str(jwt);
		if (s) {
			out = pk_xstrdup(s);
			free(s); /* libjwt 1.10: malloc'ed */
		}
	}
	jwt_free(jwt);
	if (!out)
		abort();
	return out;
}

const char *pk_cluster_proof_check(const char *key, size_t key_len, const char *token,
                                   const char *aud, const char *sub, int64_t now)
{
	if (!token || !*token)
		return "missing cluster proof";
	if (strlen(token) > 4096)
		return "invalid cluster proof";
	jwt_t *jwt = NULL;
	if (jwt_decode(&jwt, token, (const unsigned char *)key, (int)key_len) != 0 || !jwt ||
	    jwt_get_alg(jwt) != JWT_ALG_HS256) {
		jwt_free(jwt);
		return "invalid cluster proof";
	}
	const char *why = NULL;
	const char *iss = jwt_get_grant(jwt, "iss");
	long exp = jwt_get_grant_int(jwt, "exp");
	int exp_missing = errno == ENOENT || errno == EINVAL;
	long iat = jwt_get_grant_int(jwt, "iat");
	if (!iss || strcmp(iss, ISSUER) != 0)
		why = "invalid cluster proof";
	else if (exp_missing || exp <= now)
		why = "expired cluster proof";
	else if (iat > now + 30 || iat < exp - PK_CLUSTER_PROOF_TTL_S * 10)
		/* From the future, or not short-lived. Not exp - iat: with iat
		 * negative that overflows (and a never-expiring proof passed). */
		why = "invalid cluster proof";
	else if (aud) {
		const char *got = jwt_get_grant(jwt, "aud");
		if (!got || strcmp(got, aud) != 0)
			why = "cluster proof for another node";
	}
	if (!why && sub) {
		const char *got = jwt_get_grant(jwt, "sub");
		if (!got || strcmp(got, sub) != 0)
			why = "cluster proof signed for another node";
	}
	jwt_free(jwt);
	return why;
}
