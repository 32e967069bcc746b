/*
 * Node-link metrics: the gauges rebuilt from links and members at scrape
 * time (a down member shows 0, a member that goes away loses its series, a
 * peer that dialled us without being our member shows up), and the counters'
 * series that exist from the start at 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster.h"
#include "link.h"
#include "link_metrics.h"
#include "metrics.h"
#include "strmap.h"

static int has(const char *text, const char *line)
{
	return strstr(text, line) != NULL;
}

static void test_counters_start_at_zero(void **state)
{
	(void)state;
	struct pk_cluster cl;
	memset(&cl, 0, sizeof(cl));
	struct pk_metrics *reg = pk_metrics_new();
	pk_link_metrics_register(&cl.lm, reg);
	pk_link_metrics_add(cl.lm.bytes, PK_LINK_OUT, 100);
	pk_link_metrics_message(&cl.lm, PK_LINK_IN, "hello");
	size_t len;
	char *text = pk_metrics_render(reg, &len);
	assert_true(has(text, "piko_link_connections_total{direction=\"inbound\"} 0\n"));
	assert_true(has(text, "piko_link_connections_total{direction=\"outbound\"} 0\n"));
	assert_true(has(text, "piko_link_bytes_total{direction=\"outbound\"} 100\n"));
	assert_true(has(text, "piko_link_streams_total{direction=\"inbound\"} 0\n"));
	assert_true(has(text,
	                "piko_link_control_messages_total{direction=\"inbound\",type=\"hello\"} "
	                "1\n"));
	assert_true(has(text, "piko_link_control_messages_total{direction=\"outbound\",type="
	                      "\"resync\"} 0\n"));
	free(text);
	/* Unregistered metrics (a cluster in a unit test) are ignored. */
	struct pk_link_metrics none;
	memset(&none, 0, sizeof(none));
	pk_link_metrics_add(none.bytes, PK_LINK_IN, 1);
	pk_link_metrics_message(&none, PK_LINK_IN, "hello");
	pk_metrics_free(reg);
}

static void test_gauges_follow_state(void **state)
{
	(void)state;
	struct pk_cluster cl;
	memset(&cl, 0, sizeof(cl));
	struct pk_metrics *reg = pk_metrics_new();
	pk_link_metrics_register(&cl.lm, reg);

	/* self, b (linked, dialled by us), c (down, known as "node-c") */
	struct pk_member self = {.addr = "10.0.0.1:8003", .self = 1};
	struct pk_member mc = {.addr = "10.0.0.3:8003", .last_id = "node-c"};
	struct pk_member mb = {.addr = "10.0.0.2:8003"};
	self.next = &mb;
	mb.next = &mc;
	cl.members = &self;
	struct pk_link lb, ld, lc;
	memset(&lb, 0, sizeof(lb));
	memset(&ld, 0, sizeof(ld));
	memset(&lc, 0, sizeof(lc));
	lb.cl = &cl;
	lb.dialer = 1;
	lb.state = PK_LINK_ESTABLISHED;
	lb.peer_id = "node-b";
	lb.member = &mb;
	snprintf(lb.addr, sizeof(lb.addr), "%s", mb.addr);
	lb.eps = pk_strmap_new();
	pk_strmap_set(lb.eps, "ep-1", 1);
	pk_strmap_set(lb.eps, "ep-2", 3);
	mb.link = &lb;
	/* d dialled us; not a member here (yet) */
	ld.cl = &cl;
	ld.state = PK_LINK_ESTABLISHED;
	ld.peer_id = "node-d";
	snprintf(ld.addr, sizeof(ld.addr), "10.0.0.4:8003");
	/* a second dial to c, still connecting */
	lc.cl = &cl;
	lc.dialer = 1;
	lc.state = PK_LINK_CONNECTING;
	mc.link = &lc;
	cl.links = &lb;
	lb.next = &ld;
	ld.next = &lc;

	pk_link_metrics_collect(&cl);
	size_t len;
	char *text = pk_metrics_render(reg, &len);
	assert_true(has(text, "piko_link_up{addr=\"10.0.0.2:8003\",node_id=\"node-b\"} 1\n"));
	assert_true(has(text, "piko_link_up{addr=\"10.0.0.3:8003\",node_id=\"node-c\"} 0\n"));
	assert_true(has(text, "piko_link_up{addr=\"10.0.0.4:8003\",node_id=\"node-d\"} 1\n"));
	assert_false(has(text, "10.0.0.1:8003")); /* not ourselves */
	assert_true(has(text, "piko_links{state=\"established\"} 2\n"));
	assert_true(has(text, "piko_links{state=\"connecting\"} 1\n"));
	assert_true(has(text, "piko_links{state=\"closing\"} 0\n"));
	assert_true(has(text, "piko_link_remote_endpoints{node_id=\"node-b\"} 2\n"));
	assert_true(has(text, "piko_link_remote_endpoints{node_id=\"node-d\"} 0\n"));
	assert_true(has(text, "piko_link_open_streams 0\n"));
	free(text);

	/* c leaves the membership, b's link closes: their series go. */
	mb.next = NULL;
	lb.state = PK_LINK_CLOSING;
	lb.next = NULL;
	cl.links = &lb;
	pk_link_metrics_collect(&cl);
	text = pk_metrics_render(reg, &len);
	assert_true(has(text, "piko_link_up{addr=\"10.0.0.2:8003\",node_id=\"\"} 0\n"));
	assert_false(has(text, "node-c"));
	assert_false(has(text, "node-d"));
	assert_false(has(text, "piko_link_remote_endpoints{"));
	assert_true(has(text, "piko_links{state=\"established\"} 0\n"));
	assert_true(has(text, "piko_links{state=\"closing\"} 1\n"));
	free(text);
	pk_strmap_free(lb.eps);
	pk_metrics_free(reg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counters_start_at_zero),
	    cmocka_unit_test(test_gauges_follow_state),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
