/*
 * JSON comparisons (controller/jsonutil.c): the subset rule that decides
 * whether a server-side apply can be skipped, and the equality used for
 * status.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "jsonutil.h"
#include "quantity.h"

/* pk_json_subset on two JSON texts. */
static int subset(const char *desired, const char *live)
{
	struct json_object *d = json_tokener_parse(desired), *l = json_tokener_parse(live);
	if ((!d && strcmp(desired, "null") != 0) || (!l && strcmp(live, "null") != 0))
		fail_msg("bad JSON in test: %s / %s", desired, live);
	int r = pk_json_subset(d, l);
	json_object_put(d);
	json_object_put(l);
	return r;
}

static int equal(const char *a, const char *b)
{
	struct json_object *x = json_tokener_parse(a), *y = json_tokener_parse(b);
	int r = pk_json_equal(x, y);
	assert_int_equal(pk_json_equal(y, x), r); /* symmetric */
	json_object_put(x);
	json_object_put(y);
	return r;
}

static void test_objects(void **state)
{
	(void)state;
	/* Extra live fields (server defaults, status, other managers) are
	 * ignored; every desired field must be there. */
	assert_true(subset("{}", "{\"a\":1}"));
	assert_true(subset("{\"a\":1}", "{\"a\":1,\"b\":2}"));
	assert_false(subset("{\"a\":1,\"b\":2}", "{\"a\":1}"));
	assert_true(subset("{\"m\":{\"x\":\"y\"}}", "{\"m\":{\"x\":\"y\",\"z\":1},\"n\":0}"));
	assert_false(subset("{\"m\":{\"x\":\"y\"}}", "{\"m\":{\"x\":\"z\"}}"));
	assert_false(subset("{\"m\":{\"x\":\"y\"}}", "{\"m\":\"x\"}"));
	assert_false(subset("{\"a\":1}", "[1]"));
	/* Labels and ownerReferences are compared like anything else. */
	assert_false(subset("{\"metadata\":{\"labels\":{\"app\":\"piko\"}}}",
	                    "{\"metadata\":{\"labels\":{\"app\":\"other\"}}}"));
	assert_false(subset("{\"metadata\":{\"ownerReferences\":[{\"uid\":\"a\"}]}}",
	                    "{\"metadata\":{\"ownerReferences\":[{\"uid\":\"b\"}]}}"));
	assert_false(
	    subset("{\"metadata\":{\"ownerReferences\":[{\"uid\":\"a\"}]}}", "{\"metadata\":{}}"));
}

static void test_arrays(void **state)
{
	(void)state;
	assert_true(subset("[]", "[]"));
	assert_true(subset("[1,2]", "[1,2]"));
	assert_false(subset("[1,2]", "[1,2,3]")); /* equal length */
	assert_false(subset("[1,2,3]", "[1,2]"));
	assert_false(subset("[1,2]", "[2,1]")); /* order matters */
	/* Elements are subset-compared: live ports carry defaults. */
	assert_true(subset("[{\"name\":\"proxy\",\"port\":8000}]",
	                   "[{\"name\":\"proxy\",\"port\":8000,\"nodePort\":31000}]"));
	assert_false(subset("[{\"name\":\"proxy\",\"port\":8000}]", "[{\"name\":\"proxy\"}]"));
	assert_false(subset("{\"a\":[]}", "{}"));
	assert_false(subset("{\"a\":[]}", "{\"a\":{}}"));
}

static void test_numbers(void **state)
{
	(void)state;
	assert_true(subset("1", "1"));
	assert_true(subset("1", "1.0"));
	assert_true(subset("1.0", "1"));
	assert_true(subset("0.5", "0.5"));
	assert_false(subset("1", "2"));
	assert_false(subset("1", "1.5"));
	assert_true(subset("-3", "-3"));
	assert_true(subset("9223372036854775807", "9223372036854775807"));
	assert_false(subset("18446744073709551615", "9223372036854775807"));
	/* A number never equals its decimal string. */
	assert_false(subset("8000", "\"8000\""));
	assert_false(subset("\"8000\"", "8000"));
	assert_false(subset("{\"port\":8000}", "{\"port\":\"8000\"}"));
	assert_false(subset("1", "true"));
	assert_false(subset("0", "false"));
	assert_false(subset("0", "null"));
}

static void test_scalars(void **state)
{
	(void)state;
	assert_true(subset("\"a\"", "\"a\""));
	assert_false(subset("\"a\"", "\"A\""));
	assert_false(subset("\"a\"", "\"a \""));
	assert_false(subset("\"\"", "null"));
	assert_true(subset("\"a\\u0000b\"", "\"a\\u0000b\""));
	assert_false(subset("\"a\\u0000b\"", "\"a\\u0000c\""));
	assert_true(subset("true", "true"));
	assert_false(subset("true", "false"));
	assert_false(subset("true", "\"true\""));
	/* Null in desired is SSA's "absent": an absent or null field holds
	 * it, a value does not. */
	assert_true(subset("null", "null"));
	assert_true(subset("{\"a\":null}", "{}"));
	assert_true(subset("{\"a\":null}", "{\"a\":null}"));
	assert_false(subset("{\"a\":null}", "{\"a\":1}"));
	assert_false(subset("{\"a\":1}", "{\"a\":null}"));
	assert_false(subset("{}", "null"));
}

static void test_equal(void **state)
{
	(void)state;
	assert_true(equal("{\"a\":1,\"b\":[1,2]}", "{\"b\":[1,2],\"a\":1.0}"));
	assert_false(equal("{\"a\":1}", "{\"a\":1,\"b\":2}"));
	assert_false(equal("[1,2]", "[2,1]"));
	/* A missing array equals an empty one; a missing field a null one. */
	assert_true(equal("{\"members\":[]}", "{}"));
	assert_true(equal("{\"members\":null}", "{}"));
	assert_false(equal("{\"members\":[1]}", "{}"));
	assert_false(equal("{\"x\":{}}", "{}"));
	assert_false(equal("{\"x\":\"\"}", "{}"));
	assert_false(equal("{\"n\":1}", "{\"n\":\"1\"}"));
	assert_true(equal("{\"c\":[{\"t\":\"Ready\",\"s\":\"True\"}]}",
	                  "{\"c\":[{\"s\":\"True\",\"t\":\"Ready\"}]}"));
	assert_false(equal("{\"c\":[{\"t\":\"Ready\",\"s\":\"True\"}]}",
	                   "{\"c\":[{\"t\":\"Ready\",\"s\":\"True\",\"m\":\"x\"}]}"));
}

/* Quantities are compared as amounts only under "resources", where the
 * apiserver rewrites them. */
static void test_resources_quantities(void **state)
{
	(void)state;
	assert_true(subset("{\"resources\":{\"limits\":{\"cpu\":\"0.5\"}}}",
	                   "{\"resources\":{\"limits\":{\"cpu\":\"500m\"}}}"));
	assert_true(subset("{\"resources\":{\"requests\":{\"cpu\":1}}}",
	                   "{\"resources\":{\"requests\":{\"cpu\":\"1\"}}}"));
	assert_true(subset("{\"resources\":{\"requests\":{\"memory\":\"1024Mi\"}}}",
	                   "{\"resources\":{\"requests\":{\"memory\":\"1Gi\"}}}"));
	assert_true(subset("{\"resources\":{\"requests\":{\"memory\":\"1e3\"}}}",
	                   "{\"resources\":{\"requests\":{\"memory\":\"1k\"}}}"));
	/* A different amount is a difference. */
	assert_false(subset("{\"resources\":{\"limits\":{\"cpu\":\"0.5\"}}}",
	                    "{\"resources\":{\"limits\":{\"cpu\":\"501m\"}}}"));
	assert_false(subset("{\"resources\":{\"limits\":{\"memory\":\"1G\"}}}",
	                    "{\"resources\":{\"limits\":{\"memory\":\"1Gi\"}}}"));
	/* Outside resources, strings stay bytes and numbers never equal strings. */
	assert_false(
	    subset("{\"annotations\":{\"x\":\"0.5\"}}", "{\"annotations\":{\"x\":\"500m\"}}"));
	assert_false(subset("{\"replicas\":1}", "{\"replicas\":\"1\"}"));
	/* Non-quantity strings under resources compare by bytes. */
	assert_true(subset("{\"resources\":{\"claims\":[{\"name\":\"gpu\"}]}}",
	                   "{\"resources\":{\"claims\":[{\"name\":\"gpu\"}]}}"));
	assert_false(subset("{\"resources\":{\"claims\":[{\"name\":\"gpu\"}]}}",
	                    "{\"resources\":{\"claims\":[{\"name\":\"tpu\"}]}}"));
}

static void test_quantity_parse(void **state)
{
	(void)state;
	long double v;
	assert_int_equal(pk_quantity_parse("500m", 4, &v), 0);
	assert_true(v > 0.4999L && v < 0.5001L);
	assert_int_equal(pk_quantity_parse("1E", 2, &v), 0); /* exa, not an exponent */
	assert_true(v == 1e18L);
	assert_int_equal(pk_quantity_parse("-1.5Ki", 6, &v), 0);
	assert_true(v == -1536.0L);
	assert_int_equal(pk_quantity_parse("2e-3", 4, &v), 0);
	assert_true(v > 0.00199L && v < 0.00201L);
	static const char *const bad[] = {"",    "Ki",  ".",    "-",  "0x10",  "inf",
	                                  "nan", "1KB", "1 Gi", "1e", "1.2.3", "--1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(pk_quantity_parse(bad[i], strlen(bad[i]), &v), -1);
	/* Only len bytes are read: "5" of "5Gi". */
	assert_int_equal(pk_quantity_parse("5Gi", 1, &v), 0);
	assert_true(v == 5.0L);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_objects),        cmocka_unit_test(test_arrays),
	    cmocka_unit_test(test_numbers),        cmocka_unit_test(test_scalars),
	    cmocka_unit_test(test_equal),          cmocka_unit_test(test_resources_quantities),
	    cmocka_unit_test(test_quantity_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
