/*
 * Member sets from EndpointSlices, pushed to the nodes. See peers.h.
 */
#include "peers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "buf.h"
#include "cluster_key.h"
#include "controller.h"
#include "log.h"
#include "reconcile.h"
#include "status.h"
#include "strbuf.h"

/* Clusters tracked at once; a cluster past this is not pushed to (and
 * logged): membership then comes from DNS alone. */
#define PK_PEERS_MAX_CLUSTERS 4096
/* Members per cluster, as the CRD's status.members. */
#define PK_PEERS_MAX_MEMBERS 256
#define PK_PEERS_PUSH_TIMEOUT_MS 5000
/* Pushes in flight at once, all clusters together: half the client's
 * request cap (kube.c), so pushes to many (or unreachable) nodes can never
 * starve the Lease renewal, the watches or the reconciles of a request slot;
 * and at least one cluster's worth (PK_PEERS_MAX_MEMBERS below). */
#define PK_PEERS_MAX_INFLIGHT 256
/* Retries of a node whose push failed. */
#define PK_PEERS_RETRY_MIN_MS 1000
#define PK_PEERS_RETRY_MAX_MS 300000
/* How much of a refusal's body a warning quotes. */
#define PK_PEERS_ERR_BODY 200
/* Reads of the nodes' GET /status/cluster/nodes (ClusterFormed): each
 * bounded by this, a round (every ready node at once) every
 * PK_PEERS_READ_UNFORMED_MS while the cluster is not formed, every
 * peer_push_ms once it is, and PK_PEERS_READ_AFTER_CHANGE_MS after the
 * member set changed (time for the push to land and the links to come up). */
#define PK_PEERS_READ_TIMEOUT_MS 2000
#define PK_PEERS_READ_UNFORMED_MS 5000
#define PK_PEERS_READ_AFTER_CHANGE_MS 1000

/* One read of a node's /status/cluster/nodes. */
struct read {
	bool have;                 /* read (or tried): nodes or err holds the answer */
	struct json_object *nodes; /* owned: the answer, an array; NULL on error */
	char err[160];             /* why there is no answer */
};

/* One member's admin endpoint and how pushing to it goes. A node that keeps
 * refusing (or does not answer) is retried on its own backoff (1 s doubling
 * to 5 min, reset by a success) and warned about once per distinct error;
 * the others keep their periodic re-push. */
struct node {
	char id[254];
	char url[300];
	char ip[64];          /* its address (status.members[].address) */
	char status_url[300]; /* GET /status/cluster/nodes on its admin port */
	bool ready;
	/* Its /status/cluster/nodes: as last read, and as the PikoCluster's
	 * status shows it (replaced by the last read when what a node says
	 * about the links changed, and otherwise once per peer_push_ms, so an
	 * upstream count that moves all the time writes the status at most
	 * that often). */
	struct read latest, shown;
	uint64_t pushed_gen; /* generation of the last push sent to it */
	uint64_t next_ms;    /* next periodic push or retry */
	bool inflight;
	bool failing;       /* its last push failed */
	char last_err[256]; /* what that failure said */
	struct pk_backoff backoff;
};

struct cluster {
	char key[512];
	char ns[256], name[256];
	bool dirty;         /* recompute the set at the next tick */
	char *members_json; /* owned: the current set, canonical JSON array */
	struct node *nodes; /* owned: one per member, in member order */
	size_t nmembers;
	uint64_t generation;   /* of members_json */
	int inflight;          /* pushes and reads in flight (they point into nodes) */
	int reading;           /* reads of the current round in flight */
	uint64_t read_next_ms; /* the next round of reads */
	uint64_t shown_ms;     /* when the shown reads were last replaced */
	bool known;            /* a round finished since this controller leads */
	bool formed;           /* what the last round found */
	struct cluster *next;
};

struct pk_peers {
	struct pk_ctrl *c;
	struct cluster *clusters; /* owned */
	size_t n;
	uint64_t last_gen;
	struct push *pushes; /* owned: the pushes in flight */
	size_t npushes;      /* length of pushes */
};

/* A request to a node in flight: a push, or a read of its status. */
struct push {
	struct cluster *cl;
	struct node *node;
	struct pk_peers *p;
	struct pk_kube_req *req;
	char url[300];
	struct push *next, *prev;
};

/* A request (a push or a status read) in flight: counted against the
 * global cap and its cluster's until push_unlink. ps->p and ps->cl set. */
static void push_link(struct push *ps)
{
	struct pk_peers *p = ps->p;
	ps->next = p->pushes;
	if (p->pushes)
		p->pushes->prev = ps;
	p->pushes = ps;
	p->npushes++;
	ps->cl->inflight++;
}

static void push_unlink(struct push *ps)
{
	if (ps->prev)
		ps->prev->next = ps->next;
	else
		ps->p->pushes = ps->next;
	if (ps->next)
		ps->next->prev = ps->prev;
}

struct pk_peers *pk_peers_new(struct pk_ctrl *c)
{
	struct pk_peers *p = calloc(1, sizeof(*p));
	if (p)
		p->c = c;
	return p;
}

/* The backoff gauge of a node, as a metric label pair. */
static void backoff_gauge(struct pk_peers *p, struct cluster *cl, struct node *n, double s)
{
	const char *lv[] = {cl->key, n->id};
	if (s > 0)
		pk_metric_set(p->c->m_push_backoff, lv, s);
	else
		pk_metric_remove(p->c->m_push_backoff, lv);
}

static void read_clear(struct read *r)
{
	json_object_put(r->nodes);
	*r = (struct read){0};
}

static void node_reads_clear(struct node *n)
{
	read_clear(&n->latest);
	read_clear(&n->shown);
}

static void cluster_free(struct pk_peers *p, struct cluster *cl)
{
	for (size_t i = 0; i < cl->nmembers; i++) {
		if (cl->nodes[i].failing)
			backoff_gauge(p, cl, &cl->nodes[i], 0);
		node_reads_clear(&cl->nodes[i]);
	}
	free(cl->members_json);
	free(cl->nodes);
	free(cl);
}

void pk_peers_free(struct pk_peers *p)
{
	if (!p)
		return;
	/* The next one read before the free: push_unlink() unlinks through
	 * ps->p, which the analyzer cannot tell is p (it reported a freed push
	 * as still at the head). */
	for (struct push *ps = p->pushes, *next; ps; ps = next) {
		next = ps->next;
		push_unlink(ps);
		pk_kube_cancel(ps->req);
		free(ps);
	}
	p->npushes = 0;
	while (p->clusters) {
		struct cluster *cl = p->clusters;
		p->clusters = cl->next;
		cluster_free(p, cl);
	}
	free(p);
}

void pk_peers_touch(struct pk_peers *p, const char *key)
{
	for (struct cluster *cl = p->clusters; cl; cl = cl->next)
		if (!strcmp(cl->key, key)) {
			cl->dirty = true;
			return;
		}
	if (p->n >= PK_PEERS_MAX_CLUSTERS) {
		pk_log(PK_LOG_WARN, "peers", "too many clusters; not tracking", "cluster", key,
		       NULL);
		return;
	}
	const char *slash = strchr(key, '/');
	if (!slash)
		return;
	struct cluster *cl = calloc(1, sizeof(*cl)); /* owner: p->clusters */
	if (!cl)
		return;
	snprintf(cl->key, sizeof(cl->key), "%s", key);
	snprintf(cl->ns, sizeof(cl->ns), "%.*s", (int)(slash - key), key);
	snprintf(cl->name, sizeof(cl->name), "%s", slash + 1);
	cl->dirty = true;
	cl->next = p->clusters;
	p->clusters = cl;
	p->n++;
}

struct member {
	char id[254];
	char addr[80];
	char ip[64];
	char admin[300];
	char status[300];
	bool ready;
};

/* By id, then address: a total order, so the same endpoints always give the
 * same set whatever order the cache lists the slices in. */
static int member_cmp(const void *a, const void *b)
{
	const struct member *x = a, *y = b;
	int c = strcmp(x->id, y->id);
	return c ? c : strcmp(x->addr, y->addr);
}

static int port_named(struct json_object *slice, const char *name, int dflt)
{
	struct json_object *ports;
	if (!json_object_object_get_ex(slice, "ports", &ports) ||
	    !json_object_is_type(ports, json_type_array))
		return dflt;
	for (size_t i = 0; i < json_object_array_length(ports); i++) {
		struct json_object *pt = json_object_array_get_idx(ports, i), *num;
		const char *n = pk_object_str(pt, "name");
		if (n && !strcmp(n, name) && json_object_object_get_ex(pt, "port", &num))
			return json_object_get_int(num);
	}
	return dflt;
}

/* Recompute the cluster's set from the slices in the cache. Returns true when
 * it changed. */
static bool recompute(struct pk_peers *p, struct cluster *cl)
{
	struct pk_ctrl *c = p->c;
	struct member *m = calloc(PK_PEERS_MAX_MEMBERS, sizeof(*m)); /* owner: this function */
	if (!m)
		return false;
	size_t n = 0;
	json_object_object_foreach(pk_informer_cache(c->inf[PK_INF_SLICES]), k, s)
	{
		(void)k;
		struct json_object *eps;
		if (!pk_slice_of(s, cl->ns, cl->name) ||
		    !json_object_object_get_ex(s, "endpoints", &eps) ||
		    !json_object_is_type(eps, json_type_array))
			continue;
		const char *family = pk_object_str(s, "addressType");
		bool v6 = family && !strcmp(family, "IPv6");
		int cport = port_named(s, "cluster", 8003);
		int aport = port_named(s, "admin", c->o.node_admin_port);
		for (size_t i = 0; i < json_object_array_length(eps) && n < PK_PEERS_MAX_MEMBERS;
		     i++) {
			struct json_object *ep = json_object_array_get_idx(eps, i), *addrs, *conds,
			                   *v;
			/* Type-checked: json-c asserts on an array call made on
			 * anything else. */
			if (!json_object_object_get_ex(ep, "addresses", &addrs) ||
			    !json_object_is_type(addrs, json_type_array) ||
			    json_object_array_length(addrs) == 0 ||
			    !json_object_is_type(json_object_array_get_idx(addrs, 0),
			                         json_type_string))
				continue;
			bool terminating = false, ready = true;
			if (json_object_object_get_ex(ep, "conditions", &conds)) {
				if (json_object_object_get_ex(conds, "terminating", &v))
					terminating = json_object_get_boolean(v);
				if (json_object_object_get_ex(conds, "ready", &v))
					ready = json_object_get_boolean(v);
			}
			if (terminating)
				continue;
			const char *ip =
			    json_object_get_string(json_object_array_get_idx(addrs, 0));
			const char *pod = pk_object_str(ep, "targetRef.name");
			struct member *mm = &m[n++];
			snprintf(mm->id, sizeof(mm->id), "%s", pod ? pod : ip);
			snprintf(mm->addr, sizeof(mm->addr), v6 ? "[%s]:%d" : "%s:%d", ip, cport);
			snprintf(mm->ip, sizeof(mm->ip), "%s", ip);
			snprintf(mm->admin, sizeof(mm->admin),
			         v6 ? "http://[%s]:%d/piko/v1/cluster/members"
			            : "http://%s:%d/piko/v1/cluster/members",
			         ip, aport);
			snprintf(mm->status, sizeof(mm->status),
			         v6 ? "http://[%s]:%d/status/cluster/nodes"
			            : "http://%s:%d/status/cluster/nodes",
			         ip, aport);
			mm->ready = ready;
		}
	}
	qsort(m, n, sizeof(*m), member_cmp);
	/* One entry per id: a dual-stack Service has an IPv4 and an IPv6 slice
	 * naming the same pod, and an endpoint may sit in two slices for a
	 * moment while they are rebalanced. The first address (in order) wins,
	 * so each node gets one push and one id never means two members. */
	size_t u = 0;
	for (size_t i = 0; i < n; i++)
		if (u == 0 || strcmp(m[u - 1].id, m[i].id) != 0)
			m[u++] = m[i];
	n = u;
	struct json_object *arr = json_object_new_array(); /* owner: this function */
	for (size_t i = 0; i < n; i++) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "id", json_object_new_string(m[i].id));
		json_object_object_add(o, "addr", json_object_new_string(m[i].addr));
		json_object_object_add(o, "ready", json_object_new_boolean(m[i].ready));
		json_object_array_add(arr, o);
	}
	const char *js = json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN |
	                                                         JSON_C_TO_STRING_NOSLASHESCAPE);
	bool changed = !cl->members_json || strcmp(cl->members_json, js) != 0;
	if (changed && cl->inflight > 0) {
		/* The nodes array is in use by pushes in flight: recompute once
		 * they are answered. */
		cl->dirty = true;
		changed = false;
	}
	if (changed) {
		char *copy = strdup(js);
		struct node *nodes = n ? calloc(n, sizeof(*nodes)) : NULL;
		if (copy && (nodes || n == 0)) {
			for (size_t i = 0; i < n; i++) {
				struct node *nn = &nodes[i];
				pk_backoff_init(&nn->backoff, PK_PEERS_RETRY_MIN_MS,
				                PK_PEERS_RETRY_MAX_MS);
				/* A node that was failing keeps its backoff: a new
				 * set does not make it answer. Its status reads stay
				 * its own (a readiness flip changes the set). */
				for (size_t k = 0; k < cl->nmembers; k++) {
					struct node *o = &cl->nodes[k];
					if (strcmp(o->url, m[i].admin) != 0 ||
					    strcmp(o->id, m[i].id) != 0)
						continue;
					if (o->failing) {
						*nn = *o;
						o->failing = false; /* its gauge moves over */
					} else {
						nn->latest = o->latest;
						nn->shown = o->shown;
					}
					o->latest = (struct read){0};
					o->shown = (struct read){0};
					break;
				}
				snprintf(nn->id, sizeof(nn->id), "%s", m[i].id);
				snprintf(nn->url, sizeof(nn->url), "%s", m[i].admin);
				snprintf(nn->ip, sizeof(nn->ip), "%s", m[i].ip);
				snprintf(nn->status_url, sizeof(nn->status_url), "%s", m[i].status);
				nn->ready = m[i].ready;
			}
			for (size_t k = 0; k < cl->nmembers; k++) {
				if (cl->nodes[k].failing)
					backoff_gauge(p, cl, &cl->nodes[k], 0);
				node_reads_clear(&cl->nodes[k]);
			}
			free(cl->members_json);
			free(cl->nodes);
			cl->members_json = copy;
			cl->nodes = nodes;
			cl->nmembers = n;
			/* Generations are wall-clock milliseconds, kept strictly
			 * increasing: a restarted controller never goes backwards, so
			 * nodes can drop a late, older push. */
			uint64_t g = (uint64_t)time(NULL) * 1000;
			struct timespec ts;
			if (clock_gettime(CLOCK_REALTIME, &ts) == 0)
				g = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
			if (g <= p->last_gen)
				g = p->last_gen + 1;
			p->last_gen = g;
			cl->generation = g;
			/* New members to read, or members gone: read again soon. */
			uint64_t soon = pk_now_ms() + PK_PEERS_READ_AFTER_CHANGE_MS;
			if (cl->read_next_ms > soon)
				cl->read_next_ms = soon;
			const char *lv[] = {cl->key};
			pk_metric_set(c->m_members, lv, (double)n);
			char nn[24];
			snprintf(nn, sizeof(nn), "%zu", n);
			pk_log(PK_LOG_INFO, "peers", "member set changed", "cluster", cl->key,
			       "members", nn, NULL);
		} else {
			free(copy);
			free(nodes);
			changed = false;
		}
	}
	json_object_put(arr);
	free(m);
	return changed;
}

/* What a failed push said: "HTTP 409: <the body's first bytes>", or the
 * transport's error. */
static void push_error(long status, const char *body, size_t len, const char *err, char *out,
                       size_t outlen)
{
	if (status == 0) {
		snprintf(out, outlen, "%s", err && *err ? err : "no response");
		return;
	}
	size_t n = body ? len : 0;
	if (n > PK_PEERS_ERR_BODY) {
		n = PK_PEERS_ERR_BODY;
		while (n > 0 && ((unsigned char)body[n] & 0xC0) == 0x80)
			n--; /* do not cut a UTF-8 character */
	}
	while (n > 0 && (body[n - 1] == '\n' || body[n - 1] == '\r' || body[n - 1] == ' '))
		n--;
	snprintf(out, outlen, "HTTP %ld%s%.*s", status, n ? ": " : "", (int)n, n ? body : "");
}

static void push_done(void *ud, long status, const char *body, size_t len, const char *err)
{
	struct push *ps = ud; /* owner: this callback (unlinked below) */
	struct cluster *cl = ps->cl;
	struct node *n = ps->node;
	struct pk_peers *p = ps->p;
	struct pk_ctrl *c = p->c;
	bool ok = status >= 200 && status < 300;
	const char *lv[] = {ok ? "ok" : "error"};
	pk_metric_add(c->m_pushes, lv, 1);
	uint64_t now = pk_now_ms();
	if (ok) {
		if (n->failing) {
			pk_log(PK_LOG_INFO, "peers", "member push accepted again", "cluster",
			       cl->key, "node", n->id, "url", ps->url, NULL);
			backoff_gauge(p, cl, n, 0);
		}
		n->failing = false;
		n->last_err[0] = '\0';
		pk_backoff_reset(&n->backoff);
		n->next_ms = now + c->o.peer_push_ms;
	} else {
		char e[sizeof(n->last_err)], st[24], retry[32];
		push_error(status, body, len, err, e, sizeof(e));
		uint64_t wait = pk_backoff_next(&n->backoff);
		snprintf(st, sizeof(st), "%ld", status);
		snprintf(retry, sizeof(retry), "%.1fs", (double)wait / 1000.0);
		/* Once per distinct failure: a node that keeps refusing is
		 * retried with a growing backoff, quietly (debug). */
		bool news = !n->failing || strcmp(e, n->last_err) != 0;
		pk_log(news ? PK_LOG_WARN : PK_LOG_DEBUG, "peers", "member push failed", "cluster",
		       cl->key, "node", n->id, "url", ps->url, "status", st, "error", e, "retry_in",
		       retry, NULL);
		n->failing = true;
		snprintf(n->last_err, sizeof(n->last_err), "%s", e);
		n->next_ms = now + wait;
		backoff_gauge(p, cl, n, (double)wait / 1000.0);
	}
	n->inflight = false;
	push_unlink(ps);
	p->npushes--;
	cl->inflight--;
	free(ps);
}

/* Send the cluster's set to node n, with a proof signed with the cluster's
 * key (key_len bytes; a new one per push, valid PK_PUSH_PROOF_TTL_S).
 * Returns false when no request could be queued (retried at the next
 * tick). */
static bool push(struct pk_peers *p, struct cluster *cl, struct node *n, uint64_t now,
                 const char *key, size_t key_len)
{
	struct pk_sb b = {0};
	pk_sb_printf(&b, "{\"cluster\":\"%s\",\"generation\":%llu,\"members\":%s}", cl->key,
	             (unsigned long long)cl->generation, cl->members_json);
	size_t len;
	char *body = pk_sb_finish(&b, &len);                            /* owned here */
	struct push *ps = calloc(1, sizeof(*ps));                       /* owner: push_done */
	char *proof = pk_push_proof(key, key_len, (int64_t)time(NULL)); /* owned here */
	if (ps) {
		ps->cl = cl;
		ps->node = n;
		ps->p = p;
		snprintf(ps->url, sizeof(ps->url), "%s", n->url);
		ps->req = pk_kube_request_url(p->c->kube, "PUT", ps->url, "application/json", body,
		                              len, proof, PK_PEERS_PUSH_TIMEOUT_MS, push_done, ps);
	}
	free(proof);
	free(body);
	if (!ps || !ps->req) {
		free(ps);
		n->next_ms = now + PK_PEERS_RETRY_MIN_MS;
		return false;
	}
	push_link(ps);
	n->inflight = true;
	n->pushed_gen = cl->generation;
	return true;
}

/* ---- reads of /status/cluster/nodes (ClusterFormed) ---- */

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* What a read says that the status shows, as one string: its error, or
 * one line per node (sorted: the order of a node's links means nothing)
 * with its id, status and admin address, and with_up its upstreams. Two
 * reads with the same digest give the same status. Owned by the caller. */
static char *read_digest(const struct read *r, bool with_up)
{
	if (!r->have)
		return pk_xstrdup("-");
	if (!r->nodes) {
		struct pk_sb b = {0};
		pk_sb_printf(&b, "error %s", r->err);
		return pk_sb_finish(&b, NULL);
	}
	size_t n = json_object_array_length(r->nodes);
	char **lines = pk_xmalloc((n ? n : 1) * sizeof(*lines)); /* owned here */
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(r->nodes, i), *up;
		struct pk_sb b = {0};
		const char *id = pk_object_str(e, "id"), *st = pk_object_str(e, "status");
		const char *admin = pk_object_str(e, "admin_addr");
		pk_sb_printf(&b, "%s %s %s", id ? id : "", st ? st : "", admin ? admin : "");
		if (with_up && json_object_object_get_ex(e, "upstreams", &up))
			pk_sb_printf(&b, " %lld", (long long)json_object_get_int64(up));
		lines[i] = pk_sb_finish(&b, NULL);
	}
	qsort(lines, n, sizeof(*lines), str_cmp);
	struct pk_sb b = {0};
	for (size_t i = 0; i < n; i++) {
		pk_sb_printf(&b, "%s\n", lines[i]);
		free(lines[i]);
	}
	free(lines);
	return pk_sb_finish(&b, NULL);
}

static bool reads_differ(const struct read *a, const struct read *b, bool with_up)
{
	char *x = read_digest(a, with_up), *y = read_digest(b, with_up);
	bool d = strcmp(x, y) != 0;
	free(x);
	free(y);
	return d;
}

/* A round of reads ended: work out whether the cluster is formed (as the
 * status will), pass the reads on to the status when what they say changed
 * (the upstream counts alone: at most once per peer_push_ms), and queue the
 * cluster's reconcile to write it. */
static void round_done(struct pk_peers *p, struct cluster *cl, uint64_t now)
{
	struct pk_ctrl *c = p->c;
	size_t n = cl->nmembers;
	struct pk_formed_member *m = pk_xmalloc((n ? n : 1) * sizeof(*m)); /* owned here */
	struct pk_node_report *r = pk_xmalloc((n ? n : 1) * sizeof(*r));   /* owned here */
	size_t nr = 0;
	bool links_changed = false, counts_changed = false;
	for (size_t i = 0; i < n; i++) {
		struct node *nd = &cl->nodes[i];
		m[i] =
		    (struct pk_formed_member){.pod = nd->id, .address = nd->ip, .ready = nd->ready};
		if (nd->latest.have)
			r[nr++] = (struct pk_node_report){
			    .pod = nd->id,
			    .address = nd->ip,
			    .error = nd->latest.nodes ? NULL : nd->latest.err,
			    .nodes = nd->latest.nodes};
		links_changed = links_changed || reads_differ(&nd->latest, &nd->shown, false);
		counts_changed = counts_changed || reads_differ(&nd->latest, &nd->shown, true);
	}
	const char *reason;
	char msg[1024];
	bool formed = pk_status_formed(m, n, r, nr, &reason, msg, sizeof(msg)) != 0;
	free(m);
	free(r);
	bool periodic = now - cl->shown_ms >= c->o.peer_push_ms;
	if (!cl->known || links_changed || (counts_changed && periodic)) {
		for (size_t i = 0; i < n; i++) {
			struct node *nd = &cl->nodes[i];
			read_clear(&nd->shown);
			nd->shown = nd->latest;
			json_object_get(nd->shown.nodes);
		}
		cl->shown_ms = now;
		/* Nothing new (e.g. a cluster without ready members): no
		 * reconcile, the status already says so. */
		if (counts_changed)
			pk_ctrl_enqueue(c, cl->key);
	}
	if (formed != cl->formed)
		pk_log(formed ? PK_LOG_INFO : PK_LOG_WARN, "peers",
		       formed ? "cluster formed" : "cluster not formed", "cluster", cl->key,
		       "reason", reason, "message", msg, NULL);
	cl->known = true;
	cl->formed = formed;
	cl->read_next_ms = now + (formed ? c->o.peer_push_ms : PK_PEERS_READ_UNFORMED_MS);
}

static void read_done(void *ud, long status, const char *body, size_t len, const char *err)
{
	struct push *ps = ud; /* owner: this callback (unlinked below) */
	struct cluster *cl = ps->cl;
	struct node *n = ps->node;
	struct pk_peers *p = ps->p;
	read_clear(&n->latest);
	n->latest.have = true;
	if (status == 200) {
		struct json_tokener *tok = json_tokener_new();
		struct json_object *o = tok ? json_tokener_parse_ex(tok, body, (int)len) : NULL;
		if (o && json_object_is_type(o, json_type_array))
			n->latest.nodes = o; /* owner: n */
		else {
			json_object_put(o);
			snprintf(n->latest.err, sizeof(n->latest.err), "not a node list");
		}
		if (tok)
			json_tokener_free(tok);
	} else {
		push_error(status, body, len, err, n->latest.err, sizeof(n->latest.err));
	}
	if (!n->latest.nodes)
		pk_log(PK_LOG_DEBUG, "peers", "node status not read", "cluster", cl->key, "node",
		       n->id, "url", ps->url, "error", n->latest.err, NULL);
	push_unlink(ps);
	p->npushes--;
	cl->inflight--;
	cl->reading--;
	free(ps);
	if (cl->reading == 0)
		round_done(p, cl, pk_now_ms());
}

/* GET node n's /status/cluster/nodes. No proof: the route needs none (only
 * the admin auth a PikoCluster cannot set). Returns false when no request
 * could be queued. */
static bool read_status(struct pk_peers *p, struct cluster *cl, struct node *n)
{
	struct push *ps = calloc(1, sizeof(*ps)); /* owner: read_done */
	if (!ps)
		return false;
	ps->cl = cl;
	ps->node = n;
	ps->p = p;
	snprintf(ps->url, sizeof(ps->url), "%s", n->status_url);
	ps->req = pk_kube_request_url(p->c->kube, "GET", ps->url, NULL, NULL, 0, NULL,
	                              PK_PEERS_READ_TIMEOUT_MS, read_done, ps);
	if (!ps->req) {
		free(ps);
		return false;
	}
	push_link(ps);
	cl->reading++;
	return true;
}

/* Start a round of reads when one is due: every ready node at once (a node
 * not ready is not read, and what was read from it is dropped). Returns ms
 * until a round is due, UINT64_MAX while one is out (its answers wake the
 * loop). */
static uint64_t read_tick(struct pk_peers *p, struct cluster *cl, uint64_t now)
{
	if (cl->reading > 0)
		return UINT64_MAX;
	if (now < cl->read_next_ms)
		return cl->read_next_ms - now;
	size_t want = 0;
	for (size_t i = 0; i < cl->nmembers; i++)
		want += cl->nodes[i].ready;
	if (p->npushes + want > PK_PEERS_MAX_INFLIGHT) {
		cl->read_next_ms = now + PK_PEERS_RETRY_MIN_MS; /* all or none */
		return PK_PEERS_RETRY_MIN_MS;
	}
	for (size_t i = 0; i < cl->nmembers; i++) {
		struct node *n = &cl->nodes[i];
		if (!n->ready) {
			read_clear(&n->latest);
			continue;
		}
		if (!read_status(p, cl, n)) {
			read_clear(&n->latest);
			n->latest.have = true;
			snprintf(n->latest.err, sizeof(n->latest.err),
			         "too many requests in flight");
		}
	}
	if (cl->reading == 0)
		round_done(p, cl, now);
	return cl->reading > 0 ? UINT64_MAX : cl->read_next_ms - now;
}

/* Not the leader (any more): what was read is forgotten, so a later
 * leadership starts from the status as it is. */
static void reads_forget(struct cluster *cl)
{
	if (!cl->known && cl->read_next_ms == 0)
		return;
	for (size_t i = 0; i < cl->nmembers; i++)
		node_reads_clear(&cl->nodes[i]);
	cl->known = false;
	cl->formed = false;
	cl->read_next_ms = 0;
	cl->shown_ms = 0;
}

size_t pk_peers_reports(const struct pk_peers *p, const char *key, struct pk_node_report *out,
                        size_t max, bool *known)
{
	*known = false;
	for (const struct cluster *cl = p ? p->clusters : NULL; cl; cl = cl->next) {
		if (strcmp(cl->key, key) != 0)
			continue;
		size_t n = 0;
		*known = cl->known;
		for (size_t i = 0; i < cl->nmembers && n < max; i++) {
			const struct node *nd = &cl->nodes[i];
			if (!nd->shown.have)
				continue;
			out[n++] =
			    (struct pk_node_report){.pod = nd->id,
			                            .address = nd->ip,
			                            .error = nd->shown.nodes ? NULL : nd->shown.err,
			                            .nodes = nd->shown.nodes};
		}
		return n;
	}
	return 0;
}

/* When node n wants its next push: at once for a set it has not been sent
 * (unless it is backing off), else its own schedule. */
static uint64_t node_due(const struct cluster *cl, const struct node *n)
{
	if (n->pushed_gen != cl->generation && !n->failing)
		return 0;
	return n->next_ms;
}

uint64_t pk_peers_tick(struct pk_peers *p, uint64_t now_ms, bool leader)
{
	struct pk_ctrl *c = p->c;
	uint64_t next = UINT64_MAX;
	/* Set once a due push did not fit under PK_PEERS_MAX_INFLIGHT: every
	 * push after it waits too, so the slots that free up go to the first
	 * in line and a large cluster is never starved by small ones. Waiting
	 * needs no timer: each push that ends wakes the loop. */
	bool full = false;
	for (struct cluster **pp = &p->clusters; *pp;) {
		struct cluster *cl = *pp;
		bool exists = pk_informer_get(c->inf[PK_INF_CLUSTERS], cl->ns, cl->name) != NULL;
		if (!exists && cl->inflight == 0) {
			/* The cluster is gone: forget its set (its nodes go too). */
			*pp = cl->next;
			p->n--;
			const char *lv[] = {cl->key};
			pk_metric_remove(c->m_members, lv);
			cluster_free(p, cl);
			continue;
		}
		pp = &cl->next;
		if (cl->dirty && exists && cl->inflight == 0) {
			cl->dirty = false;
			recompute(p, cl);
		}
		if (!leader) {
			reads_forget(cl);
			continue;
		}
		if (!cl->members_json)
			continue;
		uint64_t rd = read_tick(p, cl, now_ms);
		if (rd < next)
			next = rd;
		/* Signed with the cluster's key, which the reconcile reads: none
		 * yet (just became leader) or none to be had (a user's Secret
		 * missing) means no push. The loop turns at least once a second
		 * and after every reconcile, so a key that arrives is used at
		 * once; nodes that were due stay due. */
		size_t key_len;
		const char *key = pk_reconciler_cluster_key(c->rec, cl->key, &key_len);
		if (!key)
			continue;
		for (size_t i = 0; i < cl->nmembers; i++) {
			struct node *n = &cl->nodes[i];
			if (n->inflight)
				continue;
			uint64_t due = node_due(cl, n);
			if (now_ms >= due) {
				if (full || p->npushes >= PK_PEERS_MAX_INFLIGHT) {
					full = true;
					continue;
				}
				if (push(p, cl, n, now_ms, key, key_len))
					continue;
				due = n->next_ms;
			}
			if (due > now_ms && due - now_ms < next)
				next = due - now_ms;
		}
	}
	return next;
}
