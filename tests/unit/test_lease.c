/*
 * Leader election state machine: create on 404, renew while we hold it, wait
 * while another holder's resourceVersion keeps moving, take over only once it
 * has stood still for the lease duration on our clock (never judged by
 * renewTime), empty holder taken at once, a failed renew drops leadership,
 * lost after the renew deadline, the release body, and the exact fields of
 * every body sent.
 */
#include <assert.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lease.h"

#define T0 "2026-11-29T23:00:00.000000Z"
#define T1 "2026-11-29T23:00:02.000000Z"
#define T2 "2026-11-29T23:00:04.000000Z"

static const struct pk_lease_opts opts = {
    .name = "piko-controller",
    .namespace = "piko-system",
    .identity = "ctl-0_abc",
    .duration_ms = 15000,
    .renew_deadline_ms = 10000,
    .retry_ms = 2000,
};

/* A Lease as the apiserver returns it. renew is deliberately far in the past
 * or future in some tests: it must never matter. */
static struct json_object *server_lease(const char *holder, const char *rv, int transitions,
                                        const char *acquire, const char *renew)
{
	char buf[1024];
	char holderfield[128] = "";
	if (holder)
		snprintf(holderfield, sizeof(holderfield), "\"holderIdentity\":\"%s\",", holder);
	snprintf(buf, sizeof(buf),
	         "{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\","
	         "\"metadata\":{\"name\":\"piko-controller\",\"namespace\":\"piko-system\","
	         "\"uid\":\"u-1\",\"resourceVersion\":\"%s\"},"
	         "\"spec\":{%s\"leaseDurationSeconds\":15,\"acquireTime\":\"%s\","
	         "\"renewTime\":\"%s\",\"leaseTransitions\":%d}}",
	         rv, holderfield, acquire, renew, transitions);
	struct json_object *o = json_tokener_parse(buf);
	assert_non_null(o);
	return o;
}

static struct json_object *field(struct json_object *o, const char *path)
{
	/* "a.b.c" */
	char key[64];
	const char *p = path;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);
		assert_true(n < sizeof(key));
		/* cmocka's assert_true() does not return when it fails (it jumps out of
		 * the test) but is not declared noreturn: assert() says it to the
		 * analyzer, which otherwise goes on to copy past the end. */
		assert(n < sizeof(key));
		memcpy(key, p, n);
		key[n] = '\0';
		struct json_object *v;
		if (!o || !json_object_object_get_ex(o, key, &v))
			return NULL;
		o = v;
		p += n + (dot ? 1 : 0);
	}
	return o;
}

static const char *str_at(struct json_object *o, const char *path)
{
	struct json_object *v = field(o, path);
	assert_non_null(v);
	assert_true(json_object_is_type(v, json_type_string));
	return json_object_get_string(v);
}

static int64_t int_at(struct json_object *o, const char *path)
{
	struct json_object *v = field(o, path);
	assert_non_null(v);
	assert_true(json_object_is_type(v, json_type_int));
	return json_object_get_int64(v);
}

/* The server accepting a write: the body back with a new resourceVersion
 * (and a uid, on create). */
static struct json_object *accept_write(const char *body, const char *new_rv)
{
	struct json_object *o = json_tokener_parse(body);
	assert_non_null(o);
	struct json_object *md = field(o, "metadata");
	assert_non_null(md);
	json_object_object_add(md, "resourceVersion", json_object_new_string(new_rv));
	if (!field(md, "uid")) /* assigned on create */
		json_object_object_add(md, "uid", json_object_new_string("u-1"));
	return o;
}

/* Create on 404, then acquire with the server's copy. */
static struct pk_lease *acquired(uint64_t now, struct json_object **written)
{
	struct pk_lease *l = pk_lease_new(&opts, now);
	char *body = NULL;
	assert_int_equal(pk_lease_observe(l, NULL, now, T0, &body), PK_LEASE_CREATE);
	*written = accept_write(body, "100");
	free(body);
	pk_lease_write_result(l, PK_LEASE_CREATE, true, *written, now);
	assert_true(pk_lease_is_leader(l));
	return l;
}

static void test_create_on_404(void **state)
{
	(void)state;
	struct pk_lease *l = pk_lease_new(&opts, 1000);
	char *body = (char *)1;
	assert_int_equal(pk_lease_next_ms(l, 1000), 0);
	assert_false(pk_lease_is_leader(l));
	assert_int_equal(pk_lease_observe(l, NULL, 1000, T0, &body), PK_LEASE_CREATE);
	assert_non_null(body);
	struct json_object *o = json_tokener_parse(body);
	assert_non_null(o);
	assert_string_equal(str_at(o, "apiVersion"), "coordination.k8s.io/v1");
	assert_string_equal(str_at(o, "kind"), "Lease");
	assert_string_equal(str_at(o, "metadata.name"), "piko-controller");
	assert_string_equal(str_at(o, "metadata.namespace"), "piko-system");
	assert_null(field(o, "metadata.resourceVersion"));
	assert_string_equal(str_at(o, "spec.holderIdentity"), "ctl-0_abc");
	assert_int_equal(int_at(o, "spec.leaseDurationSeconds"), 15);
	assert_string_equal(str_at(o, "spec.acquireTime"), T0);
	assert_string_equal(str_at(o, "spec.renewTime"), T0);
	assert_int_equal(int_at(o, "spec.leaseTransitions"), 0);
	/* Not leader until the write succeeds. */
	assert_false(pk_lease_is_leader(l));
	assert_false(pk_lease_lost(l, 100000));
	json_object_put(o);
	o = accept_write(body, "7");
	free(body);
	pk_lease_write_result(l, PK_LEASE_CREATE, true, o, 1100);
	json_object_put(o);
	assert_true(pk_lease_is_leader(l));
	assert_false(pk_lease_lost(l, 1100));
	/* Next GET one retry period after the observe. */
	assert_int_equal(pk_lease_next_ms(l, 1100), 1900);
	assert_int_equal(pk_lease_next_ms(l, 5000), 0);
	pk_lease_free(l);
}

static void test_create_conflict_not_leader(void **state)
{
	(void)state;
	struct pk_lease *l = pk_lease_new(&opts, 0);
	char *body = NULL;
	assert_int_equal(pk_lease_observe(l, NULL, 0, T0, &body), PK_LEASE_CREATE);
	free(body);
	/* Another candidate created it first (409 AlreadyExists). */
	pk_lease_write_result(l, PK_LEASE_CREATE, false, NULL, 10);
	assert_false(pk_lease_is_leader(l));
	assert_false(pk_lease_lost(l, 60000));
	pk_lease_free(l);
}

static void test_renew_when_holder_is_us(void **state)
{
	(void)state;
	struct json_object *w;
	struct pk_lease *l = acquired(0, &w);
	char *body = NULL;

	/* The GET returns what we wrote (acquired at T0, transitions 0). */
	assert_int_equal(pk_lease_observe(l, w, 2000, T1, &body), PK_LEASE_RENEW);
	assert_non_null(body);
	json_object_put(w);
	struct json_object *o = json_tokener_parse(body);
	assert_non_null(o);
	assert_string_equal(str_at(o, "metadata.resourceVersion"), "100");
	assert_string_equal(str_at(o, "spec.holderIdentity"), "ctl-0_abc");
	assert_string_equal(str_at(o, "spec.acquireTime"), T0); /* kept */
	assert_string_equal(str_at(o, "spec.renewTime"), T1);
	assert_int_equal(int_at(o, "spec.leaseDurationSeconds"), 15);
	assert_int_equal(int_at(o, "spec.leaseTransitions"), 0);
	json_object_put(o);
	w = accept_write(body, "101");
	free(body);
	pk_lease_write_result(l, PK_LEASE_RENEW, true, w, 2050);
	assert_true(pk_lease_is_leader(l));
	/* The renew deadline counts from this success. */
	assert_false(pk_lease_lost(l, 2050 + 9999));
	assert_true(pk_lease_lost(l, 2050 + 10000));

	/* A Lease with other fields (uid, labels) keeps them in the PUT. */
	json_object_object_add(field(w, "metadata"), "labels", json_tokener_parse("{\"a\":\"b\"}"));
	assert_int_equal(pk_lease_observe(l, w, 4000, T2, &body), PK_LEASE_RENEW);
	o = json_tokener_parse(body);
	assert_string_equal(str_at(o, "metadata.uid"), "u-1");
	assert_string_equal(str_at(o, "metadata.labels.a"), "b");
	assert_string_equal(str_at(o, "metadata.resourceVersion"), "101");
	json_object_put(o);
	free(body);
	json_object_put(w);
	pk_lease_free(l);
}

static void test_wait_while_other_holder_renews(void **state)
{
	(void)state;
	struct pk_lease *l = pk_lease_new(&opts, 0);
	char *body = (char *)1;
	char rv[16];
	/* Every 2 s the other holder renews: its resourceVersion moves, so it
	 * never expires however long we watch. Its renewTime is far in the
	 * past, as if its clock were an hour behind: irrelevant. */
	for (int i = 0; i < 50; i++) {
		snprintf(rv, sizeof(rv), "%d", 200 + i);
		struct json_object *o =
		    server_lease("ctl-1_xyz", rv, 3, "2026-11-29T21:00:00.000000Z",
		                 "2026-11-29T21:00:00.000000Z");
		assert_int_equal(pk_lease_observe(l, o, (uint64_t)i * 2000, T0, &body),
		                 PK_LEASE_NONE);
		assert_null(body);
		assert_false(pk_lease_is_leader(l));
		json_object_put(o);
	}
	assert_false(pk_lease_lost(l, 1000000));
	pk_lease_free(l);
}

static void test_takeover_after_duration(void **state)
{
	(void)state;
	struct pk_lease *l = pk_lease_new(&opts, 0);
	char *body = NULL;
	/* renewTime in the future (the holder's clock runs ahead): still
	 * expires on our clock. */
	struct json_object *o = server_lease("ctl-1_xyz", "300", 3, "2026-11-29T22:00:00.000000Z",
	                                     "2027-01-01T00:00:00.000000Z");
	const uint64_t first = 5000;

	assert_int_equal(pk_lease_observe(l, o, first, T0, &body), PK_LEASE_NONE);
	/* The next GET is due at the retry period... */
	assert_int_equal(pk_lease_next_ms(l, first), 2000);
	assert_int_equal(pk_lease_observe(l, o, first + 2000, T0, &body), PK_LEASE_NONE);
	assert_int_equal(pk_lease_observe(l, o, first + 14000, T0, &body), PK_LEASE_NONE);
	/* ...or sooner, when the holder expires before it. */
	assert_int_equal(pk_lease_next_ms(l, first + 14000), 1000);
	assert_int_equal(pk_lease_observe(l, o, first + 15000 - 1, T0, &body), PK_LEASE_NONE);
	assert_null(body);
	assert_int_equal(pk_lease_observe(l, o, first + 15000, T1, &body), PK_LEASE_TAKEOVER);
	assert_non_null(body);
	json_object_put(o);

	o = json_tokener_parse(body);
	assert_non_null(o);
	assert_string_equal(str_at(o, "metadata.resourceVersion"), "300");
	assert_string_equal(str_at(o, "metadata.uid"), "u-1");
	assert_string_equal(str_at(o, "spec.holderIdentity"), "ctl-0_abc");
	assert_string_equal(str_at(o, "spec.acquireTime"), T1);
	assert_string_equal(str_at(o, "spec.renewTime"), T1);
	assert_int_equal(int_at(o, "spec.leaseTransitions"), 4);
	assert_int_equal(int_at(o, "spec.leaseDurationSeconds"), 15);
	json_object_put(o);

	o = accept_write(body, "301");
	free(body);
	pk_lease_write_result(l, PK_LEASE_TAKEOVER, true, o, first + 15100);
	assert_true(pk_lease_is_leader(l));
	/* Renewing after a takeover keeps the takeover's acquireTime and count. */
	assert_int_equal(pk_lease_observe(l, o, first + 17000, T2, &body), PK_LEASE_RENEW);
	json_object_put(o);
	o = json_tokener_parse(body);
	assert_string_equal(str_at(o, "spec.acquireTime"), T1);
	assert_string_equal(str_at(o, "spec.renewTime"), T2);
	assert_int_equal(int_at(o, "spec.leaseTransitions"), 4);
	json_object_put(o);
	free(body);
	pk_lease_free(l);
}

static void test_rv_change_restarts_the_clock(void **state)
{
	(void)state;
	struct pk_lease *l = pk_lease_new(&opts, 0);
	char *body = NULL;
	struct json_object *a = server_lease("ctl-1_xyz", "400", 0, T0, T0);
	struct json_object *b = server_lease("ctl-1_xyz", "401", 0, T0, T0);
	assert_int_equal(pk_lease_observe(l, a, 0, T0, &body), PK_LEASE_NONE);
	assert_int_equal(pk_lease_observe(l, b, 14000, T0, &body), PK_LEASE_NONE);
	/* 15 s after the first sighting, but only 1 s after the change. */
	assert_int_equal(pk_lease_observe(l, b, 15000, T0, &body), PK_LEASE_NONE);
	assert_int_equal(pk_lease_observe(l, b, 29000 - 1, T0, &body), PK_LEASE_NONE);
	assert_int_equal(pk_lease_observe(l, b, 29000, T0, &body), PK_LEASE_TAKEOVER);
	free(body);
	/* Lost the takeover race: not leader, nothing to lose. */
	pk_lease_write_result(l, PK_LEASE_TAKEOVER, false, NULL, 29010);
	assert_false(pk_lease_is_leader(l));
	assert_false(pk_lease_lost(l, 100000));
	json_object_put(a);
	json_object_put(b);
	pk_lease_free(l);
}

static void test_empty_holder_taken_at_once(void **state)
{
	(void)state;
	char *body = NULL;
	/* Released by its last holder: holderIdentity absent... */
	struct pk_lease *l = pk_lease_new(&opts, 0);
	struct json_object *o = server_lease(NULL, "500", 2, T0, T0);
	assert_int_equal(pk_lease_observe(l, o, 10, T1, &body), PK_LEASE_TAKEOVER);
	json_object_put(o);
	o = json_tokener_parse(body);
	assert_string_equal(str_at(o, "spec.holderIdentity"), "ctl-0_abc");
	assert_string_equal(str_at(o, "spec.acquireTime"), T1);
	assert_int_equal(int_at(o, "spec.leaseTransitions"), 3);
	assert_string_equal(str_at(o, "metadata.resourceVersion"), "500");
	json_object_put(o);
	free(body);
	pk_lease_free(l);

	/* ...or the empty string. */
	l = pk_lease_new(&opts, 0);
	o = server_lease("", "501", 0, T0, T0);
	assert_int_equal(pk_lease_observe(l, o, 10, T1, &body), PK_LEASE_TAKEOVER);
	free(body);
	json_object_put(o);
	pk_lease_free(l);
}

static void test_failed_renew_drops_leadership(void **state)
{
	(void)state;
	struct json_object *w;
	struct pk_lease *l = acquired(0, &w);
	char *body = NULL;

	assert_int_equal(pk_lease_observe(l, w, 2000, T1, &body), PK_LEASE_RENEW);
	free(body);
	/* 409: someone wrote in between. */
	pk_lease_write_result(l, PK_LEASE_RENEW, false, NULL, 2010);
	assert_false(pk_lease_is_leader(l));
	assert_false(pk_lease_lost(l, 2010));

	/* The GET shows it is still ours (the write in between was e.g. a
	 * label): leader again, and the renew goes out with the new RV. */
	json_object_object_add(field(w, "metadata"), "resourceVersion",
	                       json_object_new_string("150"));
	assert_int_equal(pk_lease_observe(l, w, 4000, T2, &body), PK_LEASE_RENEW);
	assert_true(pk_lease_is_leader(l));
	struct json_object *o = json_tokener_parse(body);
	assert_string_equal(str_at(o, "metadata.resourceVersion"), "150");
	json_object_put(o);
	free(body);
	pk_lease_write_result(l, PK_LEASE_RENEW, false, NULL, 4010);
	assert_false(pk_lease_is_leader(l));
	json_object_put(w);

	/* This time the GET shows another holder took it: not leader, and
	 * lost once the renew deadline passes since the last success (0). */
	w = server_lease("ctl-1_xyz", "160", 1, T2, T2);
	assert_int_equal(pk_lease_observe(l, w, 6000, T2, &body), PK_LEASE_NONE);
	assert_false(pk_lease_is_leader(l));
	assert_false(pk_lease_lost(l, 9999));
	assert_true(pk_lease_lost(l, 10000));
	json_object_put(w);
	pk_lease_free(l);
}

static void test_lost_after_renew_deadline(void **state)
{
	(void)state;
	struct json_object *w;
	struct pk_lease *l = acquired(1000, &w);
	char *body = NULL;

	/* Renews fail with 5xx/timeouts; GETs keep showing our Lease. */
	for (uint64_t t = 3000; t < 11000; t += 2000) {
		assert_int_equal(pk_lease_observe(l, w, t, T1, &body), PK_LEASE_RENEW);
		free(body);
		assert_true(pk_lease_is_leader(l));
		pk_lease_write_result(l, PK_LEASE_RENEW, false, NULL, t + 5);
		assert_false(pk_lease_lost(l, t + 5));
	}
	assert_false(pk_lease_lost(l, 1000 + 10000 - 1));
	assert_true(pk_lease_lost(l, 1000 + 10000));
	/* Lost stays lost: a GET still naming us does not make us leader. */
	assert_int_equal(pk_lease_observe(l, w, 11000, T1, &body), PK_LEASE_RENEW);
	free(body);
	assert_false(pk_lease_is_leader(l));
	assert_true(pk_lease_lost(l, 11000));
	json_object_put(w);
	pk_lease_free(l);
}

static void test_deleted_lease_drops_leadership(void **state)
{
	(void)state;
	struct json_object *w;
	struct pk_lease *l = acquired(0, &w);
	char *body = NULL;
	assert_int_equal(pk_lease_observe(l, NULL, 2000, T1, &body), PK_LEASE_CREATE);
	assert_false(pk_lease_is_leader(l));
	struct json_object *o = json_tokener_parse(body);
	assert_int_equal(int_at(o, "spec.leaseTransitions"), 0);
	json_object_put(o);
	free(body);
	json_object_put(w);
	pk_lease_free(l);
}

static void test_release_body(void **state)
{
	(void)state;
	struct pk_lease *l = pk_lease_new(&opts, 0);
	char *body = NULL;
	/* Not leader: nothing to release. */
	assert_null(pk_lease_release_body(l, T2));
	pk_lease_free(l);

	struct json_object *w;
	l = acquired(0, &w);
	assert_int_equal(pk_lease_observe(l, w, 2000, T1, &body), PK_LEASE_RENEW);
	json_object_put(w);
	w = accept_write(body, "102");
	free(body);
	pk_lease_write_result(l, PK_LEASE_RENEW, true, w, 2010);
	json_object_put(w);

	body = pk_lease_release_body(l, T2);
	assert_non_null(body);
	struct json_object *o = json_tokener_parse(body);
	assert_non_null(o);
	assert_string_equal(str_at(o, "apiVersion"), "coordination.k8s.io/v1");
	assert_string_equal(str_at(o, "kind"), "Lease");
	assert_string_equal(str_at(o, "metadata.name"), "piko-controller");
	assert_string_equal(str_at(o, "metadata.namespace"), "piko-system");
	/* The RV of the last write, from the server's response. */
	assert_string_equal(str_at(o, "metadata.resourceVersion"), "102");
	assert_null(field(o, "spec.holderIdentity"));
	assert_int_equal(int_at(o, "spec.leaseDurationSeconds"), 1);
	assert_string_equal(str_at(o, "spec.renewTime"), T2);
	assert_int_equal(int_at(o, "spec.leaseTransitions"), 0);
	json_object_put(o);
	free(body);
	/* Released: no longer leader, and never "lost". */
	assert_false(pk_lease_is_leader(l));
	assert_false(pk_lease_lost(l, 1000000));
	assert_null(pk_lease_release_body(l, T2));
	pk_lease_free(l);
}

static void test_write_without_response(void **state)
{
	(void)state;
	struct pk_lease *l = pk_lease_new(&opts, 0);
	char *body = NULL;
	assert_int_equal(pk_lease_observe(l, NULL, 0, T0, &body), PK_LEASE_CREATE);
	free(body);
	pk_lease_write_result(l, PK_LEASE_CREATE, true, NULL, 5);
	assert_true(pk_lease_is_leader(l));
	/* The release body falls back to what we sent. */
	body = pk_lease_release_body(l, T1);
	assert_non_null(body);
	struct json_object *o = json_tokener_parse(body);
	assert_null(field(o, "spec.holderIdentity"));
	assert_string_equal(str_at(o, "metadata.name"), "piko-controller");
	json_object_put(o);
	free(body);
	pk_lease_free(l);
}

static void test_defaults_and_rounding(void **state)
{
	(void)state;
	struct pk_lease_opts o = {.name = "n", .namespace = "ns", .identity = "me"};
	struct pk_lease *l = pk_lease_new(&o, 0);
	char *body = NULL;
	assert_int_equal(pk_lease_observe(l, NULL, 0, T0, &body), PK_LEASE_CREATE);
	struct json_object *j = json_tokener_parse(body);
	assert_int_equal(int_at(j, "spec.leaseDurationSeconds"), 15);
	json_object_put(j);
	free(body);
	assert_int_equal(pk_lease_next_ms(l, 0), 2000);
	pk_lease_free(l);

	o.duration_ms = 1500; /* announced as 2 s: never less than honoured */
	l = pk_lease_new(&o, 0);
	assert_int_equal(pk_lease_observe(l, NULL, 0, T0, &body), PK_LEASE_CREATE);
	j = json_tokener_parse(body);
	assert_int_equal(int_at(j, "spec.leaseDurationSeconds"), 2);
	json_object_put(j);
	free(body);
	pk_lease_free(l);
}

static void test_holder_duration_honoured(void **state)
{
	(void)state;
	/* As client-go: a holder announcing 30 s is waited for 30 s, even
	 * though our own duration is 15 s. */
	struct pk_lease *l = pk_lease_new(&opts, 0);
	char *body = NULL;
	struct json_object *o = server_lease("ctl-1_xyz", "600", 0, T0, T0);
	json_object_object_add(field(o, "spec"), "leaseDurationSeconds", json_object_new_int(30));
	assert_int_equal(pk_lease_observe(l, o, 0, T0, &body), PK_LEASE_NONE);
	assert_int_equal(pk_lease_observe(l, o, 15000, T0, &body), PK_LEASE_NONE);
	assert_int_equal(pk_lease_observe(l, o, 29999, T0, &body), PK_LEASE_NONE);
	assert_int_equal(pk_lease_observe(l, o, 30000, T0, &body), PK_LEASE_TAKEOVER);
	free(body);
	json_object_put(o);
	pk_lease_free(l);
}

static void test_microtime(void **state)
{
	(void)state;
	char buf[40];
	pk_lease_microtime(0, buf, sizeof(buf));
	assert_string_equal(buf, "1970-01-01T00:00:00.000000Z");
	/* 2026-11-29T23:00:00Z = 1795993200 */
	pk_lease_microtime(1795993200LL * 1000000 + 123456, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-29T23:00:00.123456Z");
	pk_lease_microtime(-1, buf, sizeof(buf));
	assert_string_equal(buf, "1969-12-31T23:59:59.999999Z");
	/* Truncated, still terminated. */
	pk_lease_microtime(0, buf, 5);
	assert_string_equal(buf, "1970");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_create_on_404),
	    cmocka_unit_test(test_create_conflict_not_leader),
	    cmocka_unit_test(test_renew_when_holder_is_us),
	    cmocka_unit_test(test_wait_while_other_holder_renews),
	    cmocka_unit_test(test_takeover_after_duration),
	    cmocka_unit_test(test_rv_change_restarts_the_clock),
	    cmocka_unit_test(test_empty_holder_taken_at_once),
	    cmocka_unit_test(test_failed_renew_drops_leadership),
	    cmocka_unit_test(test_lost_after_renew_deadline),
	    cmocka_unit_test(test_deleted_lease_drops_leadership),
	    cmocka_unit_test(test_release_body),
	    cmocka_unit_test(test_write_without_response),
	    cmocka_unit_test(test_defaults_and_rounding),
	    cmocka_unit_test(test_holder_duration_honoured),
	    cmocka_unit_test(test_microtime),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
