/*
 * List+watch of one kind into a cache. See informer.h for the state machine.
 */
#include "informer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "backoff.h"
#include "cache_strip.h"
#include "log.h"
#include "strbuf.h"

/* A single watch event (one object) larger than this ends the watch and
 * relists: the apiserver's own limit on an object is about 1.5 MiB. */
#define PK_INFORMER_MAX_EVENT (16u << 20)
/* Items per LIST page. A page is parsed whole before its items are stripped
 * (cache_strip.h), and a json-c tree is 10 to 30 times its JSON: 100
 * StatefulSets are a few MiB for a moment, 500 would be tens. */
#define PK_INFORMER_PAGE 100

enum state {
	ST_IDLE,     /* waiting for next_ms, then relist or rewatch */
	ST_LISTING,  /* a LIST page is in flight */
	ST_WATCHING, /* a watch is open */
};

struct pk_informer {
	struct pk_kube *k;
	char *kind, *path, *selector; /* owned copies */
	uint32_t watch_timeout_s;
	pk_informer_fn fn;
	void *ud;

	enum state state;
	bool need_relist; /* when IDLE: list (true) or re-watch (false) */
	uint64_t next_ms; /* when IDLE: when to act */
	struct pk_backoff backoff;
	bool synced;

	enum pk_cache_form form;     /* what the cache's values are */
	struct json_object *cache;   /* owned: "ns/name" -> object or packed */
	struct json_object *listing; /* owned while paging: the new cache */
	/* Compact form: the last object pk_informer_get unpacked, and the
	 * packed string it came from (a reference held, so that its address is
	 * never reused by another while memo stands for it). */
	struct json_object *memo, *memo_src;
	char *rv;                       /* owned: last resourceVersion seen */
	struct pk_kube_req *req;        /* the LIST or WATCH in flight */
	struct pk_watch_parser *parser; /* owned while watching */
	bool gone;                      /* the stream said 410 */
	/* 410s in a row with no good event between: the first relists at once,
	 * the next ones back off (an apiserver that keeps answering 410 to a
	 * fresh list's RV must not get a LIST+WATCH loop with no pause). */
	unsigned gone_streak;
	struct pk_informer_stats stats;
};

static void list_page(struct pk_informer *inf, const char *cont);
static void start_watch(struct pk_informer *inf);

const char *pk_object_str(struct json_object *obj, const char *path)
{
	char part[64];
	const char *p = path;
	struct json_object *cur = obj;
	while (cur && *p) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);
		if (n >= sizeof(part))
			return NULL;
		memcpy(part, p, n);
		part[n] = 0;
		if (!json_object_is_type(cur, json_type_object) ||
		    !json_object_object_get_ex(cur, part, &cur))
			return NULL;
		p += n + (dot ? 1 : 0);
	}
	return cur && json_object_is_type(cur, json_type_string) ? json_object_get_string(cur)
	                                                         : NULL;
}

int pk_object_key(struct json_object *obj, char *buf, size_t len)
{
	const char *name = pk_object_str(obj, "metadata.name");
	const char *ns = pk_object_str(obj, "metadata.namespace");
	if (!name)
		return -1;
	snprintf(buf, len, "%s/%s", ns ? ns : "", name);
	return 0;
}

/* What the cache stores for obj (a new reference, or NULL: not cached; see
 * cache_strip.h). *tree is set to the stripped tree (a new reference the
 * caller puts), which the owner's callback sees. */
static struct json_object *cache_value(struct pk_informer *inf, struct json_object *obj,
                                       struct json_object **tree)
{
	struct json_object *kept = pk_cache_strip(inf->kind, obj);
	*tree = kept;
	if (!kept || inf->form == PK_CACHE_TREE)
		return json_object_get(kept);
	return pk_cache_pack(kept);
}

/* A cached value as a tree: a new reference the caller puts. */
static struct json_object *as_tree(const struct pk_informer *inf, struct json_object *v)
{
	return inf->form == PK_CACHE_TREE ? json_object_get(v) : pk_cache_unpack(v);
}

static bool packed_equal(struct json_object *a, struct json_object *b)
{
	int la = json_object_get_string_len(a);
	return la == json_object_get_string_len(b) &&
	       !memcmp(json_object_get_string(a), json_object_get_string(b), (size_t)la);
}

static void set_rv(struct pk_informer *inf, const char *rv)
{
	if (!rv || !*rv)
		return;
	char *c = strdup(rv);
	if (!c)
		return;
	free(inf->rv);
	inf->rv = c;
}

static void idle(struct pk_informer *inf, bool relist, uint64_t delay_ms)
{
	inf->state = ST_IDLE;
	inf->need_relist = relist;
	inf->next_ms = pk_now_ms() + delay_ms;
	inf->req = NULL;
}

/* ---- LIST ---------------------------------------------------------------- */

static void list_done(void *ud, long status, const char *body, size_t len, const char *err)
{
	struct pk_informer *inf = ud;
	(void)len;
	inf->req = NULL;
	struct json_object *doc = NULL, *items = NULL;
	if (status == 200)
		doc = json_tokener_parse(body);
	/* "items": null is an empty page (Go encodes a nil slice so); anything
	 * else that is not an array is a malformed answer. */
	if (!doc || !json_object_object_get_ex(doc, "items", &items) ||
	    (items && !json_object_is_type(items, json_type_array))) {
		inf->stats.errors++;
		uint64_t wait = pk_backoff_next(&inf->backoff);
		char st[24], w[24];
		snprintf(st, sizeof(st), "%ld", status);
		snprintf(w, sizeof(w), "%llu", (unsigned long long)wait);
		/* A Status body's message, not the whole body (a proxy's HTML
		 * error page could be long). */
		struct json_object *stobj =
		    (!err && status != 200) ? json_tokener_parse(body) : NULL;
		const char *msg = stobj ? pk_object_str(stobj, "message") : NULL;
		char shortbody[256];
		snprintf(shortbody, sizeof(shortbody), "%s", body ? body : "");
		pk_log(PK_LOG_WARN, "informer", "list failed", "kind", inf->kind, "status", st,
		       "error",
		       err ? err : (status == 200 ? "malformed list" : (msg ? msg : shortbody)),
		       "retry-ms", w, NULL);
		json_object_put(stobj);
		json_object_put(doc);
		json_object_put(inf->listing);
		inf->listing = NULL;
		idle(inf, true, wait);
		return;
	}
	if (!inf->listing)
		inf->listing = json_object_new_object(); /* owner: inf until swapped in */
	/* Items of a LIST carry no apiVersion and kind (watch events do): give
	 * them the list's, so a cached object looks the same however it came. */
	const char *api = pk_object_str(doc, "apiVersion");
	const char *lkind = pk_object_str(doc, "kind");
	size_t lk = lkind ? strlen(lkind) : 0;
	size_t n = items ? json_object_array_length(items) : 0;
	for (size_t i = 0; i < n; i++) {
		struct json_object *it = json_object_array_get_idx(items, i);
		char key[512];
		if (pk_object_key(it, key, sizeof(key)) != 0)
			continue;
		if (api && !json_object_object_get_ex(it, "apiVersion", NULL))
			json_object_object_add(it, "apiVersion", json_object_new_string(api));
		if (lk > 4 && !strcmp(lkind + lk - 4, "List") &&
		    !json_object_object_get_ex(it, "kind", NULL))
			json_object_object_add(it, "kind",
			                       json_object_new_string_len(lkind, (int)lk - 4));
		struct json_object *tree;
		struct json_object *v = cache_value(inf, it, &tree);
		json_object_put(tree);
		if (v)
			json_object_object_add(inf->listing, key, v);
	}
	const char *cont = pk_object_str(doc, "metadata.continue");
	if (cont && *cont) {
		char *c = strdup(cont);
		json_object_put(doc);
		list_page(inf, c);
		free(c);
		return;
	}
	set_rv(inf, pk_object_str(doc, "metadata.resourceVersion"));
	json_object_put(doc);

	/* Swap the new cache in, then tell the owner what changed: deletes for
	 * keys that vanished while we were not watching, adds and modifies for
	 * the rest (an unchanged resourceVersion is no event). */
	struct json_object *old = inf->cache;
	inf->cache = inf->listing;
	inf->listing = NULL;
	inf->stats.lists++;
	inf->synced = true;
	json_object_object_foreach(old, okey, oval)
	{
		struct json_object *now;
		if (!json_object_object_get_ex(inf->cache, okey, &now)) {
			struct json_object *o = as_tree(inf, oval);
			if (o)
				inf->fn(inf->ud, inf, PK_WATCH_DELETED, o, o);
			json_object_put(o);
		}
	}
	json_object_object_foreach(inf->cache, nkey, nval)
	{
		struct json_object *was = NULL;
		bool had = json_object_object_get_ex(old, nkey, &was);
		bool changed;
		if (!had)
			changed = true;
		else if (inf->form == PK_CACHE_COMPACT)
			/* The resourceVersion is in the string: equal strings
			 * are the same version (or one that differed only in
			 * what is not kept). */
			changed = !packed_equal(was, nval);
		else {
			const char *a = pk_object_str(was, "metadata.resourceVersion");
			const char *b = pk_object_str(nval, "metadata.resourceVersion");
			changed = !a || !b || strcmp(a, b) != 0;
		}
		if (!changed)
			continue;
		struct json_object *o = had ? as_tree(inf, was) : NULL, *n = as_tree(inf, nval);
		if (n)
			inf->fn(inf->ud, inf, had ? PK_WATCH_MODIFIED : PK_WATCH_ADDED, o, n);
		json_object_put(o);
		json_object_put(n);
	}
	json_object_put(old);
#ifdef __GLIBC__
	/* The pages' trees were freed in many small pieces between what the
	 * cache keeps: give the pages they held back to the system, or RSS
	 * stays at the LIST's peak. Once per LIST, so cheap. */
	malloc_trim(0);
#endif
	start_watch(inf);
}

static void list_page(struct pk_informer *inf, const char *cont)
{
	struct pk_sb p = {0};
	pk_sb_printf(&p, "%s?limit=%d", inf->path, PK_INFORMER_PAGE);
	char esc[1024];
	if (inf->selector) {
		pk_kube_escape(inf->selector, esc, sizeof(esc));
		pk_sb_printf(&p, "&labelSelector=%s", esc);
	}
	if (cont) {
		pk_kube_escape(cont, esc, sizeof(esc));
		pk_sb_printf(&p, "&continue=%s", esc);
	}
	char *path = pk_sb_finish(&p, NULL);
	inf->state = ST_LISTING;
	inf->req = pk_kube_request(inf->k, "GET", path, NULL, NULL, 0, list_done, inf);
	free(path);
	if (!inf->req) {
		json_object_put(inf->listing);
		inf->listing = NULL;
		idle(inf, true, pk_backoff_next(&inf->backoff));
	}
}

/* ---- WATCH --------------------------------------------------------------- */

static int on_event(void *ud, enum pk_watch_type type, struct json_object *obj)
{
	struct pk_informer *inf = ud;
	inf->stats.events++;
	if (type != PK_WATCH_ERROR) {
		/* A good event proves the watch works: a later drop re-watches
		 * quickly. (Mere bytes prove nothing: an ERROR event is bytes
		 * too, and resetting on it would relist every 200 ms forever.) */
		pk_backoff_reset(&inf->backoff);
		inf->gone_streak = 0;
	}
	if (type == PK_WATCH_ERROR) {
		int code = pk_watch_status_code(obj);
		if (code == 410)
			inf->gone = true;
		else
			inf->stats.errors++;
		const char *msg = pk_object_str(obj, "message");
		char c[16];
		snprintf(c, sizeof(c), "%d", code);
		pk_log(code == 410 ? PK_LOG_INFO : PK_LOG_WARN, "informer", "watch error event",
		       "kind", inf->kind, "code", c, "message", msg ? msg : "", NULL);
		return -1; /* the stream is over: relist */
	}
	set_rv(inf, pk_watch_object_rv(obj));
	if (type == PK_WATCH_BOOKMARK) {
		inf->stats.bookmarks++;
		return 0;
	}
	char key[512];
	if (pk_object_key(obj, key, sizeof(key)) != 0)
		return 0;
	struct json_object *was = NULL, *tree;
	json_object_object_get_ex(inf->cache, key, &was);
	struct json_object *old = was ? as_tree(inf, was) : NULL; /* owner: here */
	struct json_object *v = cache_value(inf, obj, &tree);
	if (!v) {
		/* Not kept (cache_strip.h): as if it did not exist, so one that
		 * was kept before is deleted. */
		if (old) {
			json_object_object_del(inf->cache, key);
			inf->fn(inf->ud, inf, PK_WATCH_DELETED, old, old);
		}
	} else if (type == PK_WATCH_DELETED) {
		json_object_put(v);
		json_object_object_del(inf->cache, key);
		inf->fn(inf->ud, inf, type, old, tree);
	} else {
		json_object_object_add(inf->cache, key, v);
		inf->fn(inf->ud, inf, old ? PK_WATCH_MODIFIED : PK_WATCH_ADDED, old, tree);
	}
	json_object_put(tree);
	json_object_put(old);
	return 0;
}

static int watch_data(void *ud, const char *data, size_t len)
{
	struct pk_informer *inf = ud;
	return pk_watch_parser_feed(inf->parser, data, len);
}

static void watch_done(void *ud, long status, const char *body, size_t len, const char *err)
{
	struct pk_informer *inf = ud;
	(void)len;
	inf->req = NULL;
	int parse_failed = 0;
	if (status == 200 && !err)
		parse_failed = pk_watch_parser_finish(inf->parser) != 0;
	else if (err && inf->parser && pk_watch_parser_error(inf->parser)[0])
		parse_failed = !inf->gone;
	pk_watch_parser_free(inf->parser);
	inf->parser = NULL;
	char st[24];
	snprintf(st, sizeof(st), "%ld", status);
	if (inf->gone || status == 410) {
		inf->stats.gone++;
		pk_log(PK_LOG_INFO, "informer", "resource version too old; relisting", "kind",
		       inf->kind, NULL);
		idle(inf, true, inf->gone_streak++ ? pk_backoff_next(&inf->backoff) : 0);
	} else if (parse_failed || (status != 200 && status != 0)) {
		inf->stats.errors++;
		struct json_object *stobj =
		    (!parse_failed && !err && body) ? json_tokener_parse(body) : NULL;
		const char *msg = stobj ? pk_object_str(stobj, "message") : NULL;
		char shortbody[256];
		snprintf(shortbody, sizeof(shortbody), "%s", body ? body : "");
		pk_log(PK_LOG_WARN, "informer", "watch failed; relisting", "kind", inf->kind,
		       "status", st, "error",
		       parse_failed ? "malformed watch stream"
		                    : (err ? err : (msg ? msg : shortbody)),
		       NULL);
		json_object_put(stobj);
		idle(inf, true, pk_backoff_next(&inf->backoff));
	} else if (err) {
		/* The connection went away (apiserver restart, network): the RV is
		 * still good, so re-watch from it after a backoff. */
		uint64_t wait = pk_backoff_next(&inf->backoff);
		char w[24];
		snprintf(w, sizeof(w), "%llu", (unsigned long long)wait);
		pk_log(PK_LOG_WARN, "informer", "watch lost", "kind", inf->kind, "error", err,
		       "retry-ms", w, NULL);
		idle(inf, false, wait);
	} else {
		/* The server ended the watch (timeoutSeconds): go on from the RV. */
		idle(inf, false, 0);
	}
}

static void start_watch(struct pk_informer *inf)
{
	uint32_t t = inf->watch_timeout_s + (uint32_t)(rand() % (inf->watch_timeout_s / 4 + 1));
	struct pk_sb p = {0};
	char esc[1024];
	pk_kube_escape(inf->rv ? inf->rv : "", esc, sizeof(esc));
	pk_sb_printf(&p, "%s?watch=1&allowWatchBookmarks=true&timeoutSeconds=%u&resourceVersion=%s",
	             inf->path, t, esc);
	if (inf->selector) {
		pk_kube_escape(inf->selector, esc, sizeof(esc));
		pk_sb_printf(&p, "&labelSelector=%s", esc);
	}
	char *path = pk_sb_finish(&p, NULL);
	inf->gone = false;
	inf->parser = pk_watch_parser_new(PK_INFORMER_MAX_EVENT, on_event, inf); /* owner: inf */
	inf->state = ST_WATCHING;
	inf->req = inf->parser ? pk_kube_watch(inf->k, path, watch_data, watch_done, inf) : NULL;
	free(path);
	inf->stats.watches++;
	if (!inf->req) {
		pk_watch_parser_free(inf->parser);
		inf->parser = NULL;
		idle(inf, false, pk_backoff_next(&inf->backoff));
	}
}

/* ---- lifecycle ----------------------------------------------------------- */

struct pk_informer *pk_informer_new(struct pk_kube *k, const struct pk_informer_opts *o,
                                    pk_informer_fn fn, void *ud)
{
	struct pk_informer *inf = calloc(1, sizeof(*inf)); /* owner: the caller */
	if (!inf)
		return NULL;
	inf->k = k;
	inf->kind = strdup(o->kind);
	inf->path = strdup(o->path);
	inf->selector = o->label_selector ? strdup(o->label_selector) : NULL;
	inf->watch_timeout_s = o->watch_timeout_s ? o->watch_timeout_s : 300;
	inf->fn = fn;
	inf->ud = ud;
	inf->form = pk_cache_form_for(o->kind);
	inf->cache = json_object_new_object();
	pk_backoff_init(&inf->backoff, 200, 30000);
	if (!inf->kind || !inf->path || (o->label_selector && !inf->selector) || !inf->cache) {
		pk_informer_free(inf);
		return NULL;
	}
	idle(inf, true, 0);
	return inf;
}

void pk_informer_free(struct pk_informer *inf)
{
	if (!inf)
		return;
	pk_kube_cancel(inf->req);
	pk_watch_parser_free(inf->parser);
	json_object_put(inf->memo);
	json_object_put(inf->memo_src);
	json_object_put(inf->cache);
	json_object_put(inf->listing);
	free(inf->rv);
	free(inf->kind);
	free(inf->path);
	free(inf->selector);
	free(inf);
}

uint64_t pk_informer_tick(struct pk_informer *inf, uint64_t now_ms)
{
	if (inf->state != ST_IDLE)
		return UINT64_MAX;
	if (now_ms < inf->next_ms)
		return inf->next_ms - now_ms;
	if (inf->need_relist || !inf->rv) {
		json_object_put(inf->listing);
		inf->listing = NULL;
		list_page(inf, NULL);
	} else {
		start_watch(inf);
	}
	return inf->state == ST_IDLE ? inf->next_ms - now_ms : UINT64_MAX;
}

bool pk_informer_synced(const struct pk_informer *inf)
{
	return inf->synced;
}

struct json_object *pk_informer_get(struct pk_informer *inf, const char *ns, const char *name)
{
	char key[512];
	snprintf(key, sizeof(key), "%s/%s", ns ? ns : "", name);
	struct json_object *o = NULL;
	json_object_object_get_ex(inf->cache, key, &o);
	if (!o || inf->form == PK_CACHE_TREE)
		return o;
	/* Compact: unpacked once per object asked for in a row (a reconcile
	 * asks for the same StatefulSet more than once). */
	if (o != inf->memo_src) {
		json_object_put(inf->memo);
		json_object_put(inf->memo_src);
		inf->memo = pk_cache_unpack(o);
		inf->memo_src = json_object_get(o);
	}
	return inf->memo;
}

struct json_object *pk_informer_cache(const struct pk_informer *inf)
{
	return inf->cache;
}

const char *pk_informer_kind(const struct pk_informer *inf)
{
	return inf->kind;
}

void pk_informer_stats(const struct pk_informer *inf, struct pk_informer_stats *out)
{
	*out = inf->stats;
	out->objects = 0;
	out->packed_bytes = 0;
	json_object_object_foreach(inf->cache, key, v)
	{
		(void)key;
		out->objects++;
		if (inf->form == PK_CACHE_COMPACT)
			out->packed_bytes += (uint64_t)json_object_get_string_len(v);
	}
}
