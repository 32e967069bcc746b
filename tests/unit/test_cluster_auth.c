/*
 * Cluster-key proofs (dataplane/cluster_auth.c): a made proof checks, and
 * every way a proof can be wrong is refused (key, expiry, audience, issuer,
 * lifetime, algorithm); tokens libjwt would not make are assembled by hand.
 * Then key loading from a value or a file.
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
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "cluster_auth.h"

#define NOW 1800000000LL
#define KEY "cluster-key-0123456789"
#define KEY_LEN (sizeof(KEY) - 1)

/* got must be the refusal want (cmocka's string compare cannot take NULL). */
static void why_is(const char *got, const char *want)
{
	if (!got)
		fail_msg("accepted, want \"%s\"", want);
	assert_string_equal(got, want);
}

static const char *check(const char *token, const char *aud, int64_t now)
{
	return pk_cluster_proof_check(KEY, KEY_LEN, token, aud, NULL, now);
}

/* An HS-signed token with the given claims (JSON), made with libjwt. */
static char *sign(jwt_alg_t alg, const char *key, const char *claims)
{
	jwt_t *j;
	assert_int_equal(jwt_new(&j), 0);
	assert_int_equal(jwt_add_grants_json(j, claims), 0);
	assert_int_equal(jwt_set_alg(j, alg, (const unsigned char *)key, (int)strlen(key)), 0);
	char *t = jwt_encode_str(j);
	assert_non_null(t);
	jwt_free(j);
	return t;
}

static void b64url(const unsigned char *in, size_t n, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = a[(v >> 18) & 63];
		out[o++] = a[(v >> 12) & 63];
		if (i + 1 < n)
			out[o++] = a[(v >> 6) & 63];
		if (i + 2 < n)
			out[o++] = a[v & 63];
	}
	out[o] = 0;
}

/* header.payload from raw JSON; with hmac_key, signed HS256-style whatever
 * the header says (an algorithm-confusion attempt), else with sig. */
static char *assemble(const char *header, const char *payload, const char *sig,
                      const char *hmac_key)
{
	char h[512], p[512], s[128];
	b64url((const unsigned char *)header, strlen(header), h);
	b64url((const unsigned char *)payload, strlen(payload), p);
	char *t = malloc(strlen(h) + strlen(p) + sizeof(s) + 3);
	assert_non_null(t);
	sprintf(t, "%s.%s", h, p);
	if (hmac_key) {
		unsigned char mac[EVP_MAX_MD_SIZE];
		unsigned int mlen = 0;
		assert_non_null(HMAC(EVP_sha256(), hmac_key, (int)strlen(hmac_key),
		                     (const unsigned char *)t, strlen(t), mac, &mlen));
		b64url(mac, mlen, s);
		sig = s;
	}
	strcat(t, ".");
	strcat(t, sig);
	return t;
}

static void test_made_proof_checks(void **state)
{
	(void)state;
	char *t = pk_cluster_proof_make(KEY, KEY_LEN, "node-a", "node-b", NOW);
	assert_null(check(t, "node-b", NOW));
	assert_null(check(t, NULL, NOW)); /* no audience asked for: any will do */
	assert_null(check(t, "node-b", NOW + PK_CLUSTER_PROOF_TTL_S - 1));
	assert_null(check(t, "node-b", NOW - 30)); /* clock skew on iat */

	/* the claims, as documented */
	jwt_t *j = NULL;
	assert_int_equal(jwt_decode(&j, t, (const unsigned char *)KEY, (int)KEY_LEN), 0);
	assert_int_equal(jwt_get_alg(j), JWT_ALG_HS256);
	assert_string_equal(jwt_get_grant(j, "iss"), "piko-cluster");
	assert_string_equal(jwt_get_grant(j, "sub"), "node-a");
	assert_string_equal(jwt_get_grant(j, "aud"), "node-b");
	assert_int_equal(jwt_get_grant_int(j, "iat"), NOW);
	assert_int_equal(jwt_get_grant_int(j, "exp"), NOW + PK_CLUSTER_PROOF_TTL_S);
	jwt_free(j);
	free(t);

	/* without an audience: valid where none is required */
	t = pk_cluster_proof_make(KEY, KEY_LEN, "controller", NULL, NOW);
	assert_null(check(t, NULL, NOW));
	j = NULL;
	assert_int_equal(jwt_decode(&j, t, (const unsigned char *)KEY, (int)KEY_LEN), 0);
	assert_null(jwt_get_grant(j, "aud"));
	assert_string_equal(jwt_get_grant(j, "sub"), "controller");
	jwt_free(j);
	free(t);
}

/* A proof signed as one node does not pass as another's. */
static void test_sub(void **state)
{
	(void)state;
	char *t = pk_cluster_proof_make(KEY, KEY_LEN, "node-a", PK_CLUSTER_AUD_PUSH, NOW);
	assert_null(pk_cluster_proof_check(KEY, KEY_LEN, t, PK_CLUSTER_AUD_PUSH, "node-a", NOW));
	why_is(pk_cluster_proof_check(KEY, KEY_LEN, t, PK_CLUSTER_AUD_PUSH, "node-b", NOW),
	       "cluster proof signed for another node");
	why_is(
	    pk_cluster_proof_check(KEY, KEY_LEN, t, PK_CLUSTER_AUD_LINK "10.0.0.1:8003", NULL, NOW),
	    "cluster proof for another node");
	free(t);
}

static void test_wrong_key(void **state)
{
	(void)state;
	char *t = pk_cluster_proof_make("another-key", 11, "node-a", NULL, NOW);
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	/* the key is key_len bytes, not a prefix of it */
	why_is(pk_cluster_proof_check(KEY, KEY_LEN - 1, t, NULL, NULL, NOW),
	       "invalid cluster proof");
	free(t);
	t = pk_cluster_proof_make(KEY, KEY_LEN - 1, "node-a", NULL, NOW);
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);

	/* a valid proof with one payload character changed */
	t = pk_cluster_proof_make(KEY, KEY_LEN, "node-a", NULL, NOW);
	char *dot = strchr(t, '.');
	dot[3] = dot[3] == 'A' ? 'B' : 'A';
	assert_non_null(check(t, NULL, NOW));
	free(t);
}

static void test_expiry(void **state)
{
	(void)state;
	char *t = pk_cluster_proof_make(KEY, KEY_LEN, "node-a", NULL, NOW);
	/* no skew on exp: at exp it is over */
	why_is(check(t, NULL, NOW + PK_CLUSTER_PROOF_TTL_S), "expired cluster proof");
	why_is(check(t, NULL, NOW + 1000000), "expired cluster proof");
	/* from the future beyond the 30 s of skew */
	why_is(check(t, NULL, NOW - 31), "invalid cluster proof");
	free(t);

	char claims[256];
	/* no exp at all, or not a number */
	snprintf(claims, sizeof(claims), "{\"iss\":\"piko-cluster\",\"sub\":\"a\",\"iat\":%lld}",
	         NOW);
	t = sign(JWT_ALG_HS256, KEY, claims);
	why_is(check(t, NULL, NOW), "expired cluster proof");
	free(t);
	snprintf(claims, sizeof(claims),
	         "{\"iss\":\"piko-cluster\",\"sub\":\"a\",\"iat\":%lld,\"exp\":\"%lld\"}", NOW,
	         NOW + 60);
	t = sign(JWT_ALG_HS256, KEY, claims);
	why_is(check(t, NULL, NOW), "expired cluster proof");
	free(t);

	/* signed with the key but not short-lived */
	snprintf(claims, sizeof(claims),
	         "{\"iss\":\"piko-cluster\",\"sub\":\"a\",\"iat\":%lld,\"exp\":%lld}", NOW,
	         NOW + PK_CLUSTER_PROOF_TTL_S * 10 + 1);
	t = sign(JWT_ALG_HS256, KEY, claims);
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);
	/* ... nor when iat is missing (0) */
	snprintf(claims, sizeof(claims), "{\"iss\":\"piko-cluster\",\"sub\":\"a\",\"exp\":%lld}",
	         NOW + 60);
	t = sign(JWT_ALG_HS256, KEY, claims);
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);
	/* ... nor with extreme values, where exp - iat does not fit a long */
	t = sign(JWT_ALG_HS256, KEY,
	         "{\"iss\":\"piko-cluster\",\"sub\":\"a\",\"iat\":-1,"
	         "\"exp\":9223372036854775807}");
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);
	t = sign(JWT_ALG_HS256, KEY,
	         "{\"iss\":\"piko-cluster\",\"sub\":\"a\",\"iat\":-9223372036854775807,"
	         "\"exp\":9223372036854775807}");
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);
}

static void test_audience(void **state)
{
	(void)state;
	char *t = pk_cluster_proof_make(KEY, KEY_LEN, "node-a", "node-b", NOW);
	why_is(check(t, "node-c", NOW), "cluster proof for another node");
	why_is(check(t, "node-b2", NOW), "cluster proof for another node");
	why_is(check(t, "", NOW), "cluster proof for another node");
	free(t);
	/* required but absent */
	t = pk_cluster_proof_make(KEY, KEY_LEN, "node-a", NULL, NOW);
	why_is(check(t, "node-b", NOW), "cluster proof for another node");
	free(t);
	/* an array audience is not ours */
	char claims[256];
	snprintf(claims, sizeof(claims),
	         "{\"iss\":\"piko-cluster\",\"sub\":\"a\",\"aud\":[\"node-b\"],\"iat\":%lld,"
	         "\"exp\":%lld}",
	         NOW, NOW + 60);
	t = sign(JWT_ALG_HS256, KEY, claims);
	assert_non_null(check(t, "node-b", NOW));
	free(t);
}

static void test_issuer(void **state)
{
	(void)state;
	char claims[256];
	/* the right key, signed by someone else's software */
	snprintf(claims, sizeof(claims),
	         "{\"iss\":\"someone-else\",\"sub\":\"a\",\"iat\":%lld,\"exp\":%lld}", NOW,
	         NOW + 60);
	char *t = sign(JWT_ALG_HS256, KEY, claims);
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);
	snprintf(claims, sizeof(claims), "{\"sub\":\"a\",\"iat\":%lld,\"exp\":%lld}", NOW,
	         NOW + 60);
	t = sign(JWT_ALG_HS256, KEY, claims);
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);
	snprintf(claims, sizeof(claims), "{\"iss\":7,\"sub\":\"a\",\"iat\":%lld,\"exp\":%lld}", NOW,
	         NOW + 60);
	t = sign(JWT_ALG_HS256, KEY, claims);
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);
	/* and a well-formed one, to show the claims above are otherwise fine */
	snprintf(claims, sizeof(claims),
	         "{\"iss\":\"piko-cluster\",\"sub\":\"a\",\"iat\":%lld,\"exp\":%lld}", NOW,
	         NOW + 60);
	t = sign(JWT_ALG_HS256, KEY, claims);
	assert_null(check(t, NULL, NOW));
	free(t);
}

static void test_algorithms(void **state)
{
	(void)state;
	char payload[256];
	snprintf(payload, sizeof(payload),
	         "{\"iss\":\"piko-cluster\",\"sub\":\"a\",\"iat\":%lld,\"exp\":%lld}", NOW,
	         NOW + 60);

	/* the hand-built HS256 token checks: the assembler is right */
	char *t = assemble("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, NULL, KEY);
	assert_null(check(t, NULL, NOW));
	free(t);

	/* alg none, with no signature, or with one */
	t = assemble("{\"alg\":\"none\",\"typ\":\"JWT\"}", payload, "", NULL);
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);
	t = assemble("{\"alg\":\"none\"}", payload, "c2ln", NULL);
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);
	t = assemble("{\"alg\":\"none\"}", payload, NULL, KEY);
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);

	/* RS256 in the header, HMAC'd with the cluster key (confusion) */
	t = assemble("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", payload, NULL, KEY);
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);
	t = assemble("{\"alg\":\"RS256\"}", payload, "c2ln", NULL);
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);

	/* another HMAC, properly signed with the key: still not ours */
	t = sign(JWT_ALG_HS512, KEY, payload);
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);
	t = sign(JWT_ALG_HS384, KEY, payload);
	why_is(check(t, NULL, NOW), "invalid cluster proof");
	free(t);

	/* not tokens */
	why_is(check(NULL, NULL, NOW), "missing cluster proof");
	why_is(check("", NULL, NOW), "missing cluster proof");
	why_is(check("a.b.c", NULL, NOW), "invalid cluster proof");
	why_is(check("..", NULL, NOW), "invalid cluster proof");
	why_is(check("no-dots", NULL, NOW), "invalid cluster proof");
	char *big = malloc(5000);
	memset(big, 'A', 4999);
	big[4999] = '\0';
	why_is(check(big, NULL, NOW), "invalid cluster proof");
	free(big);
}

/* ---- key loading ---- */

static char tmpdir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/pk-cluster-auth-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static const char *write_file(const char *name, const void *data, size_t len)
{
	static char path[256];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	return path;
}

/* Load key_file and expect want (NULL: an error mentioning the path). */
static void load_file(const char *name, const void *data, size_t len, const char *want)
{
	const char *path = write_file(name, data, len);
	char *key = (char *)"untouched";
	size_t key_len = 99;
	char err[512] = "";
	int rc = pk_cluster_key_load(NULL, path, &key, &key_len, err, sizeof(err));
	if (!want) {
		if (rc != -1)
			fail_msg("%s: accepted (%zu bytes)", name, key_len);
		assert_null(key);
		assert_non_null(strstr(err, path));
		return;
	}
	if (rc != 0)
		fail_msg("%s: %s", name, err);
	assert_non_null(key);
	assert_int_equal(key_len, strlen(want));
	assert_memory_equal(key, want, key_len);
	assert_int_equal(key[key_len], '\0');
	free(key);
}

static void test_key_value(void **state)
{
	(void)state;
	char *key = NULL;
	size_t key_len = 0;
	char err[256] = "";
	assert_int_equal(pk_cluster_key_load("s3cret", NULL, &key, &key_len, err, sizeof(err)), 0);
	assert_string_equal(key, "s3cret");
	assert_int_equal(key_len, 6);
	free(key);
	/* neither set: no key, no error */
	key = (char *)"untouched";
	assert_int_equal(pk_cluster_key_load(NULL, NULL, &key, &key_len, err, sizeof(err)), 0);
	assert_null(key);
	assert_int_equal(key_len, 0);
	assert_int_equal(pk_cluster_key_load("", "", &key, &key_len, err, sizeof(err)), 0);
	assert_null(key);
	/* a value is used as given: no newline stripping there */
	assert_int_equal(pk_cluster_key_load("k\n", NULL, &key, &key_len, err, sizeof(err)), 0);
	assert_int_equal(key_len, 2);
	free(key);
}

static void test_key_file(void **state)
{
	(void)state;
	load_file("plain", "s3cret", 6, "s3cret");
	load_file("newline", "s3cret\n", 7, "s3cret");
	load_file("crlf", "s3cret\r\n", 8, "s3cret");
	load_file("newlines", "s3cret\n\n\n", 9, "s3cret");
	load_file("inner", "two words\nand a line\n", 21, "two words\nand a line");
	load_file("empty", "", 0, NULL);
	load_file("only-newline", "\n", 1, NULL);

	/* empty: the error says so */
	const char *path = write_file("empty2", "", 0);
	char *key = NULL;
	size_t key_len = 0;
	char err[512] = "";
	assert_int_equal(pk_cluster_key_load(NULL, path, &key, &key_len, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "empty"));

	/* missing: the error names the path */
	char missing[256];
	snprintf(missing, sizeof(missing), "%s/no/such/key", tmpdir);
	err[0] = '\0';
	assert_int_equal(pk_cluster_key_load(NULL, missing, &key, &key_len, err, sizeof(err)), -1);
	assert_null(key);
	assert_non_null(strstr(err, missing));

	/* 64 KiB is the most a key file may hold (a trailing newline aside) */
	size_t max = 65536;
	char *big = malloc(max + 16);
	memset(big, 'k', max + 16);
	char *want = malloc(max + 1);
	memset(want, 'k', max);
	want[max] = '\0';
	load_file("max", big, max, want);
	big[max] = '\n';
	load_file("max-newline", big, max + 1, want);
	big[max + 1] = '\n';
	big[max] = '\r';
	load_file("max-crlf", big, max + 2, want);
	memset(big, 'k', max + 16);
	load_file("over-by-one", big, max + 1, NULL);
	load_file("over-more", big, max + 16, NULL);
	/* a first line of exactly 64 KiB followed by more: too large, not
	 * silently cut at the newline */
	big[max] = '\n';
	load_file("max-then-more", big, max + 16, NULL);
	free(big);
	free(want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_made_proof_checks),
	    cmocka_unit_test(test_wrong_key),
	    cmocka_unit_test(test_sub),
	    cmocka_unit_test(test_expiry),
	    cmocka_unit_test(test_audience),
	    cmocka_unit_test(test_issuer),
	    cmocka_unit_test(test_algorithms),
	    cmocka_unit_test(test_key_value),
	    cmocka_unit_test(test_key_file),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
