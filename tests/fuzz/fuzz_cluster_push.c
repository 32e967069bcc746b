/*
 * libFuzzer harness for the controller's member push (pk_cluster_push in
 * dataplane/cluster.c).
 *
 * Input: a PUT /piko/v1/cluster/members body. It is applied to a bare
 * cluster (no server, no loop, no links): leaving is set so that
 * pk_cluster_reconcile dials nothing, no metrics are registered so that
 * pk_cluster_update_gauge does nothing, and with no links and no joins the
 * paths of push, member_get and drop_unsourced touch neither srv nor lws.
 * The body is applied twice; then the set in force (pk_cluster_push_json)
 * is applied once more. Checked:
 *   - the first push answers 0 or 400 (409 needs an earlier push), a 400
 *     with a reason and nothing changed;
 *   - the same body again answers the same and changes nothing;
 *   - after a push every member is pushed, unique, counted, marked self
 *     exactly when it is our address, and at most 1024 of them;
 *   - the set in force, pushed back, is accepted and gives the same set.
 * pk_cluster_free then releases it all (ASan's leak check).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cluster.h"
#include "log.h"
#include "registry.h"

#define SELF "10.0.0.1:8003"

static void check_members(const struct pk_cluster *cl)
{
	size_t n = 0;
	for (const struct pk_member *m = cl->members; m; m = m->next, n++) {
		if (!m->addr || !m->pushed || m->join_mask || m->link ||
		    m->self != !strcmp(m->addr, cl->cluster_addr))
			abort();
		for (const struct pk_member *o = m->next; o; o = o->next)
			if (!strcmp(o->addr, m->addr))
				abort();
	}
	if (n != cl->n_members || n > 1024)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	if (!init) {
		pk_log_set_level(PK_LOG_ERROR); /* "member set applied" each run */
		init = 1;
	}
	struct pk_cluster cl;
	memset(&cl, 0, sizeof(cl));
	cl.leaving = 1;
	strcpy(cl.cluster_addr, SELF);
	cl.remote = pk_registry_new(); /* pk_cluster_free frees only a set-up cluster */
	const char *body = (const char *)data;
	char err[256];

	err[0] = '\0';
	int rc = pk_cluster_push(&cl, body, size, err, sizeof(err));
	if (rc != 0 && rc != 400)
		abort();
	if (rc == 400 && (!err[0] || cl.members || cl.have_push || cl.push_cluster))
		abort();
	check_members(&cl);
	char *first = pk_cluster_push_json(&cl);

	/* The same body again (a re-push of the same generation): same
	 * answer, same set. */
	int rc2 = pk_cluster_push(&cl, body, size, err, sizeof(err));
	if (rc2 != rc)
		abort();
	check_members(&cl);
	char *second = pk_cluster_push_json(&cl);
	if (strcmp(first, second) != 0)
		abort();

	/* The set in force is itself a member set that changes nothing. */
	if (rc == 0) {
		if (pk_cluster_push(&cl, first, strlen(first), err, sizeof(err)) != 0)
			abort();
		check_members(&cl);
		char *third = pk_cluster_push_json(&cl);
		if (strcmp(first, third) != 0)
			abort();
		free(third);
	}
	free(first);
	free(second);
	pk_cluster_free(&cl);
	if (cl.remote)
		abort();
	pk_buf_freelist_release();
	return 0;
}
