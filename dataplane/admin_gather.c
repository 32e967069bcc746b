/*
 * Admin answers for every worker. See admin_gather.h.
 */
#include "admin_gather.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "admin_forward.h"
#include "buf.h"
#include "metrics_merge.h"

struct pk_admin_gather {
	pk_admin_gather_merge_fn merge;
	void (*done)(void *arg, char *body, size_t len, const char *failed);
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
		struct pk_admin_gather *g;
		size_t i;
	} * slots;
};

static void gather_free(struct pk_admin_gather *g)
{
	for (size_t i = 0; i < g->n; i++)
		free(g->texts[i]);
	free(g->texts);
	free(g->lens);
	free(g->fwds);
	free(g->slots);
	free(g);
}

static void finish(struct pk_admin_gather *g)
{
	if (g->failed[0]) {
		g->done(g->arg, NULL, 0, g->failed);
	} else {
		size_t len;
		char *sum = g->merge((const char *const *)g->texts, g->lens, g->n, &len);
		g->done(g->arg, sum, len, NULL);
	}
	gather_free(g);
}

/* Worker i (1 and up) gave no usable answer: the first such is named. */
static void note_failure(struct pk_admin_gather *g, size_t i)
{
	if (!g->failed[0])
		snprintf(g->failed, sizeof(g->failed), "%s", g->workers->v[i - 1]);
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
	struct pk_admin_gather *g = sl->g;
	size_t i = sl->i, off;
	g->fwds[i] = NULL;
	if (body_of(resp, len, &off) == 0) {
		/* Owner: g. */
		g->lens[i] = len - off;
		g->texts[i] = pk_xmalloc(g->lens[i] + 1);
		memcpy(g->texts[i], resp + off, g->lens[i]);
		g->texts[i][g->lens[i]] = '\0';
	} else {
		note_failure(g, i);
	}
	free(resp);
	if (--g->pending == 0)
		finish(g);
}

void pk_admin_worker_header(const char *secret, char *out, size_t cap)
{
	snprintf(out, cap, "%s: %s\r\n", PK_ADMIN_WORKER_HEADER, secret);
}

struct pk_admin_gather *
pk_admin_gather(struct lws_context *ctx, const struct pk_strlist *workers, const char *secret,
                const struct pk_http1_head *h, char *own, size_t own_len,
                pk_admin_gather_merge_fn merge,
                void (*done)(void *arg, char *body, size_t len, const char *failed), void *arg)
{
	/* Owner: itself, freed once done has run (or when cancelled). */
	struct pk_admin_gather *g = pk_xcalloc(1, sizeof(*g));
	g->merge = merge;
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
	char extra[160];
	pk_admin_worker_header(secret, extra, sizeof(extra));
	for (size_t i = 1; i < g->n; i++) {
		g->slots[i].g = g;
		g->slots[i].i = i;
		g->fwds[i] = pk_admin_forward(ctx, workers->v[i - 1], h, NULL, 0, extra,
		                              PK_ADMIN_GATHER_TIMEOUT_MS, on_answer, &g->slots[i]);
		if (!g->fwds[i]) {
			note_failure(g, i);
			g->pending--;
		}
	}
	if (g->pending == 0) {
		/* Nothing was asked (every address unusable): done runs now,
		 * and the caller learns it from the NULL. */
		finish(g);
		return NULL;
	}
	return g;
}

void pk_admin_gather_cancel(struct pk_admin_gather *g)
{
	for (size_t i = 1; i < g->n; i++)
		if (g->fwds[i])
			pk_admin_forward_cancel(g->fwds[i]);
	gather_free(g);
}

char *pk_admin_gather_metrics(const char *const *texts, const size_t *lens, size_t n,
                              size_t *out_len)
{
	return pk_metrics_merge(texts, lens, n, "worker", out_len);
}

char *pk_admin_gather_endpoints(const char *const *texts, const size_t *lens, size_t n,
                                size_t *out_len)
{
	/* Owner: this function (put below); keys in the first body's order. */
	struct json_object *sum = json_object_new_object();
	for (size_t i = 0; i < n; i++) {
		struct json_tokener *tok = json_tokener_new();
		struct json_object *o = json_tokener_parse_ex(tok, texts[i], (int)lens[i]);
		json_tokener_free(tok);
		if (o && json_object_is_type(o, json_type_object)) {
			json_object_object_foreach(o, key, val)
			{
				struct json_object *have = NULL;
				int64_t add = json_object_get_int64(val);
				if (json_object_object_get_ex(sum, key, &have))
					add += json_object_get_int64(have);
				json_object_object_add(sum, key, json_object_new_int64(add));
			}
		}
		json_object_put(o);
	}
	const char *s = json_object_to_json_string_ext(sum, JSON_C_TO_STRING_PLAIN);
	char *out = pk_xstrdup(s);
	*out_len = strlen(out);
	json_object_put(sum);
	return out;
}
