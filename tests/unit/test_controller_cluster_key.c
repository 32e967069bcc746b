/*
 * The controller's cluster key (controller/cluster_key.c): generated keys
 * are 256 random bits in hex, and the member-push proof it signs is what
 * the data plane accepts, checked with the data plane's own verifier
 * (dataplane/cluster_auth.c, libjwt), and refused with another key, for
 * another audience, or once expired.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jwt.h>

#include "cluster_auth.h"
#include "cluster_key.h"

#define NOW 1800000000

static void test_generate(void **state)
{
	(void)state;
	char a[PK_CLUSTER_KEY_HEX + 1], b[PK_CLUSTER_KEY_HEX + 1];
	assert_int_equal(pk_cluster_key_generate(a), 0);
	assert_int_equal(pk_cluster_key_generate(b), 0);
	assert_int_equal(strlen(a), PK_CLUSTER_KEY_HEX);
	assert_int_equal(strspn(a, "0123456789abcdef"), PK_CLUSTER_KEY_HEX);
	assert_string_not_equal(a, b);
}

static void test_proof_accepted(void **state)
{
	(void)state;
	char key[PK_CLUSTER_KEY_HEX + 1];
	assert_int_equal(pk_cluster_key_generate(key), 0);
	char *tok = pk_push_proof(key, strlen(key), NOW);
	/* As a node checks a push (dataplane/admin.c): the push audience. */
	assert_null(pk_cluster_proof_check(key, strlen(key), tok, PK_CLUSTER_AUD_PUSH, NULL, NOW));
	assert_null(pk_cluster_proof_check(key, strlen(key), tok, PK_CLUSTER_AUD_PUSH, "controller",
	                                   NOW + 59));

	/* libjwt reads the claims back as written. */
	jwt_t *jwt = NULL;
	assert_int_equal(jwt_decode(&jwt, tok, (const unsigned char *)key, (int)strlen(key)), 0);
	assert_int_equal(jwt_get_alg(jwt), JWT_ALG_HS256);
	assert_string_equal(jwt_get_grant(jwt, "iss"), "piko-cluster");
	assert_string_equal(jwt_get_grant(jwt, "sub"), "controller");
	assert_string_equal(jwt_get_grant(jwt, "aud"), "piko-member-push");
	assert_int_equal(jwt_get_grant_int(jwt, "iat"), NOW);
	assert_int_equal(jwt_get_grant_int(jwt, "exp"), NOW + 60);
	jwt_free(jwt);
	free(tok);
}

static void test_proof_refused(void **state)
{
	(void)state;
	const char *key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	const char *other = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
	char *tok = pk_push_proof(key, strlen(key), NOW);
	assert_non_null(
	    pk_cluster_proof_check(other, strlen(other), tok, PK_CLUSTER_AUD_PUSH, NULL, NOW));
	assert_non_null(
	    pk_cluster_proof_check(key, strlen(key), tok, "piko-link:10.0.0.1:8003", NULL, NOW));
	assert_non_null(
	    pk_cluster_proof_check(key, strlen(key), tok, PK_CLUSTER_AUD_PUSH, NULL, NOW + 60));
	/* A key of any length and content signs (a user's own Secret). */
	free(tok);
	const char odd[] = "k\0\xff y";
	tok = pk_push_proof(odd, sizeof(odd) - 1, NOW);
	assert_null(
	    pk_cluster_proof_check(odd, sizeof(odd) - 1, tok, PK_CLUSTER_AUD_PUSH, NULL, NOW));
	free(tok);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_generate),
	    cmocka_unit_test(test_proof_accepted),
	    cmocka_unit_test(test_proof_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
