/*
 * Summing the workers' /metrics. See admin_metrics.h.
 */
#include "admin_metrics.h"

#include <stdlib.h>
#include <string.h>

#include "admin_forward.h"
#include "buf.h"
#include "metrics_merge.h"
#include "server_config.h"

struct pk_admin_metrics {
	void (*done)(void *arg, char *text, size_t len, const char *failed);
	void *arg;
	const struct pk_strlist *workers;
	size_t n;       /* texts: this worker's, then one per other worker */
	size_t pending; /* forwards not answered yet */
	char **texts;   /* the bodies; NULL until answered. Owner: g */
	size_t *lens;
	struct pk_admin_fwd **fwds; /* NULL once answered */
	/* which worker failed first, for done; "" while none did */
	char failed[64];
	/* One answer per forward: the forward's done callback needs to know
	 * its slot. */
	struct slot {
		struct pk_admin_metrics *g;
		size_t i;
	} *slots;
};

static void gather_free(struct pk_admin_metrics *g)
{
	for (size_t i = 0; i < g->n; i++)
		free(g->texts[i]);
	free(g->texts);
	free(g->lens);
	free(g->fwds);
	free(g->slots);
	free(g);
}

static void finish(struct pk_admin_metrics *g)
{
	if (g->failed[0]) {
		g->done(g->arg, NULL, 0, g->failed);
	} else {
		size_t len;
		char *sum = pk_metrics_merge((const char *const *)g->texts, g->lens, g->n, &len);
		g->done(g->arg, sum, len, NULL);
	}
	gather_free(g);
}

/* The body of a 200 response, or -1. */
static int body_of(const char *resp, size_t len, size_t *off)
{
	if (len < 12 || strncmp(resp, "HTTP/1.", 7) || strncmp(resp + 8, " 200", 4))
		return -1;
	for (size_t i = 0; i + 4 <= len; i++)
		if (!memcmp(resp + i, "\r\n\r\n", 4)) {
			*off = i + 4;
			return 0;
		}
	return -1;
}

static void on_answer(void *arg, char *resp, size_t len)
{
	struct slot *sl = arg;
	struct pk_admin_metrics *g = sl->g;
	size_t i = sl->i, off;
	g->fwds[i] = NULL;
	if (body_of(resp, len, &off) == 0) {
		/* Owner: g. */
		g->lens[i] = len - off;
		g->texts[i] = pk_xmalloc(g->lens[i] + 1);
		memcpy(g->texts[i], resp + off, g->lens[i]);
		g->texts[i][g->lens[i]] = '\0';
	} else if (!g->failed[0]) {
		snprintf(g->failed, sizeof(g->failed), "%s", g->workers->v[i - 1]);
	}
	free(resp);
	if (--g->pending == 0)
		finish(g);
}

struct pk_admin_metrics *pk_admin_metrics_gather(struct lws_context *ctx,
                                                 const struct pk_strlist *workers,
                                                 const struct pk_http1_head *h, char *own,
                                                 size_t own_len,
                                                 void (*done)(void *arg, char *text, size_t len,
                                                              const char *failed),
                                                 void *arg)
{
	/* Owner: itself, freed once done has run (or when cancelled). */
	struct pk_admin_metrics *g = pk_xcalloc(1, sizeof(*g));
	g->done = done;
	g->arg = arg;
	g->workers = workers;
	g->n = workers->n + 1;
	g->texts = pk_xcalloc(g->n, sizeof(*g->texts));
	g->lens = pk_xcalloc(g->n, sizeof(*g->lens));
	g->fwds = pk_xcalloc(g->n, sizeof(*g->fwds));
	g->slots = pk_xcalloc(g->n, sizeof(*g->slots));
	g->texts[0] = own;
	g->lens[0] = own_len;
	/* Every forward is counted before the first can answer. */
	g->pending = workers->n;
	for (size_t i = 1; i < g->n; i++) {
		g->slots[i].g = g;
		g->slots[i].i = i;
		g->fwds[i] = pk_admin_forward(ctx, workers->v[i - 1], h, NULL, 0, on_answer,
		                              &g->slots[i]);
		if (!g->fwds[i]) {
			if (!g->failed[0])
				snprintf(g->failed, sizeof(g->failed), "%s", workers->v[i - 1]);
			g->pending--;
		}
	}
	if (g->pending == 0) {
		/* Nothing was asked (every address unusable): answered from the
		 * loop all the same, as done promises. */
		finish(g);
		return NULL;
	}
	return g;
}

void pk_admin_metrics_cancel(struct pk_admin_metrics *g)
{
	for (size_t i = 1; i < g->n; i++)
		if (g->fwds[i])
			pk_admin_forward_cancel(g->fwds[i]);
	gather_free(g);
}
