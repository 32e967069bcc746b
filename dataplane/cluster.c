/*
 * The cluster: identity, membership, dialling, routing to other nodes and
 * the status API's view of it. See cluster.h.
 */
#include "cluster.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <json-c/json.h>

#include "auth.h"
#include "cluster_auth.h"
#include "link.h"
#include "log.h"
#include "resolve.h"
#include "server.h"
#include "sock.h"
#include "tls.h"

#define SUBSYS "cluster"
#define MAX_JOINS 64
#define MAX_MEMBERS 1024 /* in one push */
/* In the table: every join entry's addresses, plus the old and the new
 * push while one is applied. */
#define MAX_TABLE (MAX_JOINS * PK_RESOLVE_MAX_ADDRS + 2 * MAX_MEMBERS)
/* A member whose address sorts below ours dials us; if it has not after
 * this long (its view of our address differs, say), we dial it. */
#define FALLBACK_DIAL_MS 10000

/* ---- identity and addresses ------------------------------------------- */

char *pk_cluster_make_node_id(const char *prefix)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char rnd[7];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		abort(); /* no entropy at all: nothing sensible to run on */
	char suffix[8];
	for (size_t i = 0; i < 7; i++)
		suffix[i] = alphabet[rnd[i] % 36];
	suffix[7] = '\0';
	size_t n = (prefix ? strlen(prefix) : 0) + 8;
	/* Owner: the caller. */
	char *id = pk_xmalloc(n);
	snprintf(id, n, "%s%s", prefix ? prefix : "", suffix);
	return id;
}

/* The machine's first private IPv4 address (RFC 1918, RFC 6598), as Piko
 * picks one to advertise; 127.0.0.1 when there is none. */
static void private_ip(char *out, size_t cap)
{
	struct ifaddrs *ifs = NULL;
	snprintf(out, cap, "127.0.0.1");
	if (getifaddrs(&ifs) != 0)
		return;
	for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET ||
		    (i->ifa_flags & IFF_LOOPBACK))
			continue;
		uint32_t a = ntohl(((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr.s_addr);
		if ((a >> 24) == 10 || (a >> 20) == (172u << 4 | 1) ||
		    (a >> 16) == (192u << 8 | 168) || (a >> 22) == (100u << 2 | 1)) {
			inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr,
			          out, (socklen_t)cap);
			break;
		}
	}
	freeifaddrs(ifs);
}

/* host and port as an address: "[v6]:port" for IPv6 literals. */
static void join_host_port(char *out, size_t cap, const char *host, int port)
{
	if (strchr(host, ':'))
		snprintf(out, cap, "[%s]:%d", host, port);
	else
		snprintf(out, cap, "%s:%d", host, port);
}

/* What a port advertises (protocol reference §3.1): advertise when set, else
 * the bind host (a wildcard: the first private IP) with the bound port. */
static void advertise(char *out, size_t cap, const char *adv, const char *bind, int port)
{
	if (adv && *adv) {
		/* "host" or a bare IPv6 literal (e.g. a pod's $(POD_IP)) gets
		 * the bound port; "host:port" and "[v6]:port" stand as given. */
		const char *c = strchr(adv, ':');
		if (!c || (adv[0] != '[' && strchr(c + 1, ':')))
			join_host_port(out, cap, adv, port);
		else
			snprintf(out, cap, "%s", adv);
		return;
	}
	char host[128] = "";
	const char *colon = strrchr(bind, ':');
	size_t hl = colon ? (size_t)(colon - bind) : strlen(bind);
	assert(hl <= strlen(bind)); /* for the analyzer: strrchr() points into bind */
	if (hl >= sizeof(host))
		hl = sizeof(host) - 1;
	memcpy(host, bind, hl);
	host[hl] = '\0';
	if (host[0] == '[') {
		memmove(host, host + 1, strlen(host));
		host[strcspn(host, "]")] = '\0';
	}
	if (!*host || !strcmp(host, "0.0.0.0") || !strcmp(host, "::"))
		private_ip(host, sizeof(host));
	else if (!strcmp(host, "localhost"))
		snprintf(host, sizeof(host), "127.0.0.1");
	join_host_port(out, cap, host, port);
}

/* ---- members ------------------------------------------------------------- */

struct pk_member *pk_cluster_member(struct pk_cluster *cl, const char *addr)
{
	for (struct pk_member *m = cl->members; m; m = m->next)
		if (!strcmp(m->addr, addr))
			return m;
	return NULL;
}

static struct pk_member *member_get(struct pk_cluster *cl, const char *addr)
{
	struct pk_member *m = pk_cluster_member(cl, addr);
	if (m)
		return m;
	if (cl->n_members >= MAX_TABLE) {
		pk_log(PK_LOG_WARN, SUBSYS, "member table full; address ignored", "addr", addr,
		       NULL);
		return NULL;
	}
	/* Owner: cl->members; freed by drop_unsourced() or pk_cluster_free(). */
	m = pk_xcalloc(1, sizeof(*m));
	m->addr = pk_xstrdup(addr);
	m->self = !strcmp(addr, cl->cluster_addr);
	m->since_ms = pk_now_ms();
	pk_backoff_init(&m->backoff, 100, 5000);
	m->next = cl->members;
	cl->members = m;
	cl->n_members++;
	pk_log(PK_LOG_DEBUG, SUBSYS, "member added", "addr", addr, NULL);
	return m;
}

/* The established link to the node at member m's address, either way. */
struct pk_link *pk_cluster_member_link(struct pk_cluster *cl, const struct pk_member *m)
{
	if (m->link && m->link->state == PK_LINK_ESTABLISHED)
		return m->link;
	for (struct pk_link *l = cl->links; l; l = l->next)
		if (l->state == PK_LINK_ESTABLISHED && !l->dialer && !strcmp(l->addr, m->addr))
			return l;
	return NULL;
}

/* Drop members no source names any more, and their links: no ghosts. */
static void drop_unsourced(struct pk_cluster *cl)
{
	struct pk_member **pp = &cl->members;
	while (*pp) {
		struct pk_member *m = *pp;
		if (m->join_mask || m->pushed) {
			pp = &m->next;
			continue;
		}
		*pp = m->next;
		cl->n_members--;
		pk_log(PK_LOG_INFO, SUBSYS, "member removed", "addr", m->addr, NULL);
		if (m->link) {
			m->link->member = NULL;
			pk_link_close(m->link, "no longer a member");
		}
		for (struct pk_link *l = cl->links; l; l = l->next)
			if (!l->dialer && l->authenticated && !strcmp(l->addr, m->addr))
				pk_link_close(l, "no longer a member");
		free(m->addr);
		free(m->push_id);
		free(m->last_id);
		free(m);
	}
	pk_cluster_update_gauge(cl);
}

void pk_cluster_reconcile(struct pk_cluster *cl)
{
	uint64_t now = pk_now_ms();
	if (cl->leaving)
		return;
	for (struct pk_member *m = cl->members; m; m = m->next) {
		if (m->self || m->link || now < m->next_dial_ms)
			continue;
		/* One side dials: the lower address (both sides compare the
		 * same two strings), unless the other side is late. */
		int ours = strcmp(cl->cluster_addr, m->addr) < 0;
		if (pk_cluster_member_link(cl, m)) {
			m->since_ms = now; /* linked: the fallback clock restarts */
			continue;
		}
		if (!ours && now - m->since_ms < FALLBACK_DIAL_MS)
			continue;
		if (!pk_link_dial(cl, m))
			m->next_dial_ms = now + pk_backoff_next(&m->backoff);
	}
}

/* ---- cluster.join ---------------------------------------------------------- */

static void on_resolved(void *user, const struct pk_resolve_result *res, const char *err)
{
	struct pk_cluster_join *j = user;
	struct pk_cluster *cl = j->cl;
	j->query = 0;
	j->resolved = 1; /* an error counts: it is as known as it gets */
	j->next_ms = pk_now_ms() + (uint64_t)cl->srv->cfg->cluster.join_interval_ms;
	if (err) {
		/* Keep what we had: a DNS hiccup must not drop live members. */
		pk_log(PK_LOG_WARN, SUBSYS, "failed to resolve a join address", "host", j->host,
		       "error", err, NULL);
		return;
	}
	uint64_t bit = 1ull << j->idx;
	char addr[160];
	for (struct pk_member *m = cl->members; m; m = m->next)
		m->join_mask &= ~bit;
	for (size_t i = 0; i < res->n; i++) {
		join_host_port(addr, sizeof(addr), res->addrs[i], j->port);
		struct pk_member *m = member_get(cl, addr);
		if (m)
			m->join_mask |= bit;
	}
	if (res->n == 0)
		pk_log(PK_LOG_WARN, SUBSYS, "join address resolved to nothing", "host", j->host,
		       NULL);
	drop_unsourced(cl);
	pk_cluster_reconcile(cl);
}

static void wake_loop(void *arg)
{
	struct pk_cluster *cl = arg;
	lws_cancel_service(cl->srv->ctx);
}

static int parse_join(struct pk_cluster *cl, struct pk_cluster_join *j, const char *entry,
                      int default_port, char *err, size_t errlen)
{
	/* host, host:port, [v6], [v6]:port, or a bare v6 literal. */
	char host[256];
	int port = default_port;
	const char *s = entry;
	if (*s == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || (size_t)(rb - s - 1) >= sizeof(host))
			goto bad;
		memcpy(host, s + 1, (size_t)(rb - s - 1));
		host[rb - s - 1] = '\0';
		if (rb[1] == ':')
			port = atoi(rb + 2);
		else if (rb[1])
			goto bad;
	} else {
		const char *colon = strrchr(s, ':');
		if (colon && strchr(s, ':') == colon) {
			if ((size_t)(colon - s) >= sizeof(host))
				goto bad;
			memcpy(host, s, (size_t)(colon - s));
			host[colon - s] = '\0';
			port = atoi(colon + 1);
		} else {
			snprintf(host, sizeof(host), "%s", s);
		}
	}
	if (!*host || port <= 0 || port > 65535)
		goto bad;
	j->host = pk_xstrdup(host);
	j->port = port;
	j->cl = cl;
	return 0;
bad:
	snprintf(err, errlen, "cluster.join: invalid address: %s", entry);
	return -1;
}

/* ---- init and teardown -------------------------------------------------------- */

static void on_accept(void *user, int fd)
{
	pk_link_accept(user, fd);
}

int pk_cluster_init(struct pk_cluster *cl, struct pk_server *srv, char *err, size_t errlen)
{
	const struct pk_server_config *cfg = srv->cfg;
	memset(cl, 0, sizeof(*cl));
	cl->srv = srv;
	cl->start_ms = pk_now_ms();
	cl->remote = pk_registry_new();
	cl->node_id = cfg->cluster.node_id && *cfg->cluster.node_id
	                  ? pk_xstrdup(cfg->cluster.node_id)
	                  : pk_cluster_make_node_id(cfg->cluster.node_id_prefix);
	if (pk_cluster_key_load(cfg->cluster.auth.key, cfg->cluster.auth.key_file, &cl->key,
	                        &cl->key_len, err, errlen) < 0)
		return -1;
	if (cfg->cluster.gossip.interval_ms || cfg->cluster.gossip.max_packet_size)
		pk_log(PK_LOG_WARN, SUBSYS,
		       "cluster.gossip.interval and max_packet_size are ignored: nodes use "
		       "persistent links, not gossip",
		       NULL);

	const struct pk_tls_server_config *tls = &cfg->cluster.tls;
	if (tls->cert && *tls->cert) {
		cl->tls_server =
		    pk_tls_server_ctx(tls->cert, tls->key, tls->client_cas, err, errlen);
		if (!cl->tls_server)
			return -1;
		cl->tls_client = pk_tls_client_ctx(&tls->client, err, errlen);
		if (!cl->tls_client)
			return -1;
	}

	const char *bind = cfg->cluster.bind_addr && *cfg->cluster.bind_addr
	                       ? cfg->cluster.bind_addr
	                   : cfg->cluster.gossip.bind_addr && *cfg->cluster.gossip.bind_addr
	                       ? cfg->cluster.gossip.bind_addr
	                       : ":8003";
	const char *adv = cfg->cluster.advertise_addr && *cfg->cluster.advertise_addr
	                      ? cfg->cluster.advertise_addr
	                      : cfg->cluster.gossip.advertise_addr;
	char lerr[256];
	cl->ln = cfg->worker.on ? pk_sock_listen_adopt(cfg->worker.cluster_fd, on_accept, cl, lerr,
	                                               sizeof(lerr))
	                        : pk_sock_listen(bind, on_accept, cl, lerr, sizeof(lerr));
	if (!cl->ln) {
		snprintf(err, errlen, "cluster port %s: %s", bind, lerr);
		return -1;
	}
	/* Plain HTTP on a TLS cluster port gets Go's 400, as on the other
	 * ports: the first byte is peeked before the TLS handshake, within
	 * the time a link has for its handshake. */
	if (cl->tls_server)
		pk_sock_listener_refuse_plain_http(cl->ln, PK_LINK_HANDSHAKE_TIMEOUT_MS);
	int cport = pk_sock_listener_port(cl->ln);
	char port[16];
	snprintf(port, sizeof(port), "%d", cport);
	pk_log(PK_LOG_INFO, "server", "listening", "port-name", "cluster", "addr", bind, "port",
	       port, NULL);
	advertise(cl->cluster_addr, sizeof(cl->cluster_addr), adv, bind, cport);
	advertise(cl->proxy_addr, sizeof(cl->proxy_addr), cfg->proxy.advertise_addr,
	          cfg->proxy.bind_addr, pk_sock_listener_port(srv->proxy.ln));
	advertise(cl->admin_addr, sizeof(cl->admin_addr), cfg->admin.advertise_addr,
	          cfg->admin.bind_addr, pk_sock_listener_port(srv->admin.ln));

	cl->n_joins = cfg->cluster.join.n;
	if (cl->n_joins > MAX_JOINS) {
		snprintf(err, errlen, "cluster.join: at most %d entries", MAX_JOINS);
		return -1;
	}
	/* Owner: cl (pk_cluster_free). */
	cl->joins = pk_xcalloc(cl->n_joins ? cl->n_joins : 1, sizeof(*cl->joins));
	for (size_t i = 0; i < cl->n_joins; i++) {
		cl->joins[i].idx = i;
		if (parse_join(cl, &cl->joins[i], cfg->cluster.join.v[i], cport, err, errlen) < 0)
			return -1;
	}
	cl->join_ok = cl->n_joins == 0;
	/* Owner: cl. */
	cl->resolver = pk_resolver_new(wake_loop, cl);
	if (!cl->resolver) {
		snprintf(err, errlen, "cannot start the resolver thread");
		return -1;
	}

	static const char *const status_l[] = {"status"};
	static const char *const node_l[] = {"node_id"};
	cl->nodes_gauge =
	    pk_metrics_register(srv->metrics, PK_METRIC_GAUGE, "piko_cluster_nodes",
	                        "Number of nodes in the cluster state.", status_l, 1, NULL, 0);
	cl->remote_requests = pk_metrics_register(
	    srv->metrics, PK_METRIC_COUNTER, "piko_upstreams_remote_requests_total",
	    "Number of requests forwarded to upstreams on other nodes.", node_l, 1, NULL, 0);
	pk_link_metrics_register(&cl->lm, srv->metrics);
	pk_cluster_update_gauge(cl);

	pk_log(PK_LOG_INFO, SUBSYS, "node identity", "node-id", cl->node_id, "cluster-addr",
	       cl->cluster_addr, "proxy-addr", cl->proxy_addr, "admin-addr", cl->admin_addr, NULL);
	if (!cl->key && cl->n_joins)
		pk_log(PK_LOG_WARN, SUBSYS,
		       "no cluster key (cluster.auth.key_file): the cluster port and the member "
		       "push accept anyone who can reach them",
		       NULL);
	/* An IP literal needs no lookup: a member at once, so that a link
	 * dialled to us as soon as we listen finds its dialler a member (the
	 * workers of --workers have their sockets bound before their nodes
	 * start; connections wait there). */
	for (size_t i = 0; i < cl->n_joins; i++) {
		struct pk_cluster_join *j = &cl->joins[i];
		unsigned char ip[16];
		char one[1][64];
		/* In the resolver's canonical form: members are matched as text. */
		if (inet_pton(AF_INET, j->host, ip) == 1)
			inet_ntop(AF_INET, ip, one[0], sizeof(one[0]));
		else if (inet_pton(AF_INET6, j->host, ip) == 1)
			inet_ntop(AF_INET6, ip, one[0], sizeof(one[0]));
		else
			continue;
		struct pk_resolve_result res = {1, one};
		on_resolved(j, &res, NULL);
		j->next_ms = 0; /* the resolver still answers on the first tick */
	}
	return 0;
}

void pk_cluster_stop(struct pk_cluster *cl)
{
	if (!cl->remote)
		return;
	/* Its thread wakes the lws context: it goes before the context. */
	pk_resolver_free(cl->resolver);
	cl->resolver = NULL;
	for (struct pk_link *l = cl->links; l; l = l->next)
		pk_link_abort(l);
	if (cl->ln) {
		pk_sock_listener_close(cl->ln);
		cl->ln = NULL;
	}
}

void pk_cluster_free(struct pk_cluster *cl)
{
	if (!cl->remote)
		return;
	/* The lws context (and with it every socket and link) is gone by
	 * now; what is left are the structures. */
	pk_resolver_free(cl->resolver);
	cl->resolver = NULL;
	while (cl->members) {
		struct pk_member *m = cl->members;
		cl->members = m->next;
		free(m->addr);
		free(m->push_id);
		free(m->last_id);
		free(m);
	}
	for (size_t i = 0; i < cl->n_joins; i++)
		free(cl->joins[i].host);
	free(cl->joins);
	pk_registry_free(cl->remote);
	cl->remote = NULL;
	SSL_CTX_free(cl->tls_server);
	SSL_CTX_free(cl->tls_client);
	free(cl->node_id);
	free(cl->key);
	free(cl->push_cluster);
}

/* ---- timers ------------------------------------------------------------------ */

static void check_join(struct pk_cluster *cl, uint64_t now)
{
	if (cl->join_ok)
		return;
	for (struct pk_member *m = cl->members; m; m = m->next)
		if (m->join_mask && (m->self || pk_cluster_member_link(cl, m))) {
			cl->join_ok = 1;
			pk_log(PK_LOG_INFO, SUBSYS, "joined cluster", NULL);
			return;
		}
	const struct pk_server_config *cfg = cl->srv->cfg;
	if (now - cl->start_ms < (uint64_t)cfg->cluster.join_timeout_ms)
		return;
	int any = 0;
	for (struct pk_member *m = cl->members; m; m = m->next)
		any |= m->join_mask != 0;
	if (!any) {
		cl->join_ok = 1; /* the names resolved to nothing: nothing to join */
		return;
	}
	cl->join_ok = 1; /* once */
	pk_log(cfg->cluster.abort_if_join_fails ? PK_LOG_ERROR : PK_LOG_WARN, SUBSYS,
	       "failed to join cluster: no joined address answered within cluster.join_timeout",
	       NULL);
	if (cfg->cluster.abort_if_join_fails)
		pk_server_fail(cl->srv);
}

void pk_cluster_tick(struct pk_cluster *cl, uint64_t now)
{
	pk_resolver_dispatch(cl->resolver);
	for (size_t i = 0; i < cl->n_joins; i++) {
		struct pk_cluster_join *j = &cl->joins[i];
		if (!j->query && now >= j->next_ms && !cl->leaving)
			j->query = pk_resolver_query(cl->resolver, j->host, on_resolved, j);
	}
	pk_cluster_reconcile(cl);
	struct pk_link *next;
	for (struct pk_link *l = cl->links; l; l = next) {
		next = l->next;
		pk_link_tick(l, now);
	}
	check_join(cl, now);
}

/* ---- routing ------------------------------------------------------------------ */

void pk_cluster_local_changed(struct pk_cluster *cl, const char *endpoint)
{
	if (!cl->remote)
		return;
	cl->version++;
	int64_t count = (int64_t)pk_registry_upstreams(cl->srv->registry, endpoint);
	for (struct pk_link *l = cl->links; l; l = l->next)
		pk_link_send_delta(l, endpoint, count, cl->version);
}

struct pk_link *pk_cluster_pick(struct pk_cluster *cl, const char *endpoint)
{
	if (!cl->remote)
		return NULL;
	size_t n = pk_registry_upstreams(cl->remote, endpoint);
	struct pk_link *fallback = NULL, *chosen = NULL;
	for (size_t i = 0; i < n && !chosen; i++) {
		struct pk_link *l = pk_registry_next(cl->remote, endpoint);
		if (l->state != PK_LINK_ESTABLISHED)
			continue;
		if (!l->leaving)
			chosen = l;
		else if (!fallback)
			fallback = l;
	}
	/* A leaving node still serves its tunnels until its agents moved:
	 * better than no upstream at all. */
	if (!chosen)
		chosen = fallback;
	if (chosen) {
		const char *labels[1] = {chosen->peer_id};
		pk_metric_add(cl->remote_requests, labels, 1);
	}
	return chosen;
}

int pk_cluster_ready(struct pk_cluster *cl)
{
	if (cl->converged)
		return 1;
	if (pk_now_ms() - cl->start_ms < PK_CLUSTER_CONVERGE_MS) {
		for (size_t i = 0; i < cl->n_joins; i++)
			if (!cl->joins[i].resolved)
				return 0;
		for (struct pk_member *m = cl->members; m; m = m->next) {
			if (m->self)
				continue;
			struct pk_link *l = pk_cluster_member_link(cl, m);
			if (l ? !l->have_table : !m->dial_failed)
				return 0;
		}
	}
	cl->converged = 1;
	return 1;
}

void pk_cluster_leave(struct pk_cluster *cl)
{
	if (cl->leaving)
		return;
	cl->leaving = 1;
	for (struct pk_link *l = cl->links; l; l = l->next)
		pk_link_send_leaving(l);
	pk_cluster_update_gauge(cl);
}

size_t pk_cluster_active_peers(const struct pk_cluster *cl)
{
	size_t n = 0;
	for (const struct pk_link *l = cl->links; l; l = l->next)
		n += l->state == PK_LINK_ESTABLISHED && !l->leaving;
	return n;
}

void pk_cluster_update_gauge(struct pk_cluster *cl)
{
	if (!cl->nodes_gauge)
		return;
	size_t active = cl->leaving ? 0 : 1, left = cl->leaving ? 1 : 0, unreachable = 0;
	for (struct pk_link *l = cl->links; l; l = l->next) {
		if (l->state != PK_LINK_ESTABLISHED)
			continue;
		if (l->leaving)
			left++;
		else
			active++;
	}
	for (struct pk_member *m = cl->members; m; m = m->next)
		if (!m->self && !pk_cluster_member_link(cl, m))
			unreachable++;
	const char *a[1] = {"active"}, *lt[1] = {"left"}, *u[1] = {"unreachable"};
	pk_metric_set(cl->nodes_gauge, a, (double)active);
	pk_metric_set(cl->nodes_gauge, lt, (double)left);
	pk_metric_set(cl->nodes_gauge, u, (double)unreachable);
}

/* ---- the controller's push ------------------------------------------------------- */

/* "ip:port" or "[ipv6]:port": members are dialled by address, and a name
 * would have to be resolved on the loop. */
static int ip_port(const char *s)
{
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s)
		return 0;
	char host[64];
	size_t hl = (size_t)(colon - s);
	const char *h = s;
	if (h[0] == '[') {
		if (hl < 3 || h[hl - 1] != ']')
			return 0;
		h++;
		hl -= 2;
	}
	if (hl >= sizeof(host))
		return 0;
	memcpy(host, h, hl);
	host[hl] = '\0';
	unsigned char buf[16];
	int port = atoi(colon + 1);
	return port > 0 && port < 65536 && strspn(colon + 1, "0123456789") == strlen(colon + 1) &&
	       (inet_pton(AF_INET, host, buf) == 1 ||
	        (s[0] == '[' && inet_pton(AF_INET6, host, buf) == 1));
}

const char *pk_cluster_check_proof(const struct pk_cluster *cl, const char *authorization)
{
	if (!cl->key)
		return NULL;
	const char *token;
	size_t len;
	const char *why = pk_auth_token_from_headers(NULL, authorization, &token, &len);
	if (why)
		return why;
	char tok[4097];
	if (len >= sizeof(tok))
		return "invalid cluster proof";
	memcpy(tok, token, len);
	tok[len] = '\0';
	return pk_cluster_proof_check(cl->key, cl->key_len, tok, PK_CLUSTER_AUD_PUSH, NULL,
	                              pk_auth_now());
}

int pk_cluster_push(struct pk_cluster *cl, const char *body, size_t len, char *err, size_t errlen)
{
	struct json_tokener *tok = json_tokener_new_ex(6);
	struct json_object *o = json_tokener_parse_ex(tok, body, (int)len);
	int complete = o && json_tokener_get_parse_end(tok) == len;
	json_tokener_free(tok);
	struct json_object *gen, *members, *cname = NULL;
	if (!complete || !json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "generation", &gen) ||
	    !json_object_is_type(gen, json_type_int) || json_object_get_int64(gen) < 0 ||
	    !json_object_object_get_ex(o, "members", &members) ||
	    !(json_object_is_type(members, json_type_array) ||
	      json_object_is_type(members, json_type_null))) {
		snprintf(err, errlen,
		         "invalid member set: want {\"cluster\",\"generation\","
		         "\"members\":[{\"id\",\"addr\",\"ready\"}]}");
		json_object_put(o);
		return 400;
	}
	json_object_object_get_ex(o, "cluster", &cname);
	uint64_t g = json_object_get_uint64(gen);
	if (cl->have_push && g < cl->push_generation) {
		snprintf(err, errlen, "generation %llu is older than %llu", (unsigned long long)g,
		         (unsigned long long)cl->push_generation);
		json_object_put(o);
		return 409;
	}
	size_t n = members && json_object_is_type(members, json_type_array)
	               ? json_object_array_length(members)
	               : 0;
	if (n > MAX_MEMBERS) {
		snprintf(err, errlen, "more than %d members", MAX_MEMBERS);
		json_object_put(o);
		return 400;
	}
	/* Validate everything before changing anything. */
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(members, i), *a;
		if (!json_object_is_type(e, json_type_object) ||
		    !json_object_object_get_ex(e, "addr", &a) ||
		    !json_object_is_type(a, json_type_string) ||
		    json_object_get_string_len(a) == 0 || json_object_get_string_len(a) > 120 ||
		    !ip_port(json_object_get_string(a))) {
			snprintf(err, errlen,
			         "member %zu: missing or invalid addr (ip:port, [ipv6]:port)", i);
			json_object_put(o);
			return 400;
		}
	}
	for (struct pk_member *m = cl->members; m; m = m->next)
		m->pushed = 0;
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(members, i), *a, *id, *ready;
		json_object_object_get_ex(e, "addr", &a);
		struct pk_member *m = member_get(cl, json_object_get_string(a));
		if (!m)
			continue;
		m->pushed = 1;
		free(m->push_id);
		m->push_id = json_object_object_get_ex(e, "id", &id) &&
		                     json_object_is_type(id, json_type_string)
		                 ? pk_xstrdup(json_object_get_string(id))
		                 : NULL;
		m->push_ready = !json_object_object_get_ex(e, "ready", &ready) ||
		                json_object_get_boolean(ready);
	}
	if (!cl->key && !cl->have_push && n)
		pk_log(PK_LOG_WARN, SUBSYS,
		       "no cluster key (cluster.auth.key_file): the cluster port and the member "
		       "push accept anyone who can reach them",
		       NULL);
	/* The controller re-pushes the same set periodically: say so quietly. */
	int repeat = cl->have_push && g == cl->push_generation;
	cl->push_generation = g;
	cl->have_push = 1;
	free(cl->push_cluster);
	cl->push_cluster = cname && json_object_is_type(cname, json_type_string)
	                       ? pk_xstrdup(json_object_get_string(cname))
	                       : NULL;
	json_object_put(o);
	char gs[32], ns[16];
	snprintf(gs, sizeof(gs), "%llu", (unsigned long long)g);
	snprintf(ns, sizeof(ns), "%zu", n);
	pk_log(repeat ? PK_LOG_DEBUG : PK_LOG_INFO, SUBSYS, "member set applied", "generation", gs,
	       "members", ns, NULL);
	drop_unsourced(cl);
	pk_cluster_reconcile(cl);
	return 0;
}

static char *take_json(struct json_object *o)
{
	char *s = pk_xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

char *pk_cluster_push_json(const struct pk_cluster *cl)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "cluster",
	                       cl->push_cluster ? json_object_new_string(cl->push_cluster) : NULL);
	json_object_object_add(o, "generation", json_object_new_uint64(cl->push_generation));
	struct json_object *arr = json_object_new_array();
	for (const struct pk_member *m = cl->members; m; m = m->next) {
		if (!m->pushed)
			continue;
		struct json_object *e = json_object_new_object();
		json_object_object_add(e, "id",
		                       m->push_id ? json_object_new_string(m->push_id) : NULL);
		json_object_object_add(e, "addr", json_object_new_string(m->addr));
		json_object_object_add(e, "ready", json_object_new_boolean(m->push_ready));
		json_object_array_add(arr, e);
	}
	json_object_object_add(o, "members", arr);
	return take_json(o);
}

/* ---- status ------------------------------------------------------------------- */

static struct json_object *node_obj(const char *id, const char *status, const char *proxy,
                                    const char *admin)
{
	struct json_object *o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(id));
	json_object_object_add(o, "status", json_object_new_string(status));
	json_object_object_add(o, "proxy_addr", json_object_new_string(proxy ? proxy : ""));
	json_object_object_add(o, "admin_addr", json_object_new_string(admin ? admin : ""));
	return o;
}

static void add_ep(void *arg, const char *endpoint, size_t count)
{
	json_object_object_add(arg, endpoint, json_object_new_int64((int64_t)count));
}

static void add_ep64(void *arg, const char *endpoint, int64_t count)
{
	json_object_object_add(arg, endpoint, json_object_new_int64(count));
}

char *pk_cluster_nodes_json(struct pk_cluster *cl)
{
	struct pk_registry *reg = cl->srv->registry;
	struct json_object *arr = json_object_new_array();
	struct json_object *self =
	    node_obj(cl->node_id, cl->leaving ? "left" : "active", cl->proxy_addr, cl->admin_addr);
	json_object_object_add(self, "endpoints",
	                       json_object_new_int64((int64_t)pk_registry_num_endpoints(reg)));
	json_object_object_add(self, "upstreams",
	                       json_object_new_int64((int64_t)pk_registry_num_upstreams(reg)));
	json_object_array_add(arr, self);
	for (struct pk_link *l = cl->links; l; l = l->next) {
		if (l->state != PK_LINK_ESTABLISHED)
			continue;
		struct json_object *o = node_obj(l->peer_id, l->leaving ? "left" : "active",
		                                 l->proxy_addr, l->admin_addr);
		json_object_object_add(o, "endpoints",
		                       json_object_new_int64((int64_t)pk_strmap_count(l->eps)));
		json_object_object_add(o, "upstreams",
		                       json_object_new_int64(pk_strmap_sum(l->eps)));
		json_object_array_add(arr, o);
	}
	return take_json(arr);
}

char *pk_cluster_node_json(struct pk_cluster *cl, const char *id)
{
	if (!strcmp(id, "local") || !strcmp(id, cl->node_id)) {
		struct json_object *o = node_obj(cl->node_id, cl->leaving ? "left" : "active",
		                                 cl->proxy_addr, cl->admin_addr);
		struct json_object *eps = NULL;
		if (pk_registry_num_endpoints(cl->srv->registry)) {
			eps = json_object_new_object();
			pk_registry_foreach(cl->srv->registry, add_ep, eps);
		}
		json_object_object_add(o, "endpoints", eps);
		return take_json(o);
	}
	for (struct pk_link *l = cl->links; l; l = l->next) {
		if (l->state != PK_LINK_ESTABLISHED || strcmp(l->peer_id, id) != 0)
			continue;
		struct json_object *o = node_obj(l->peer_id, l->leaving ? "left" : "active",
		                                 l->proxy_addr, l->admin_addr);
		struct json_object *eps = NULL;
		if (pk_strmap_count(l->eps)) {
			eps = json_object_new_object();
			pk_strmap_foreach(l->eps, add_ep64, eps);
		}
		json_object_object_add(o, "endpoints", eps);
		return take_json(o);
	}
	return NULL;
}

char *pk_cluster_members_json(struct pk_cluster *cl)
{
	static const char *const states[] = {"connecting", "handshake", "open", "established",
	                                     "closing"};
	struct json_object *arr = json_object_new_array();
	for (struct pk_member *m = cl->members; m; m = m->next) {
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "addr", json_object_new_string(m->addr));
		struct json_object *src = json_object_new_array();
		if (m->join_mask)
			json_object_array_add(src, json_object_new_string("join"));
		if (m->pushed)
			json_object_array_add(src, json_object_new_string("push"));
		json_object_object_add(o, "sources", src);
		json_object_object_add(o, "self", json_object_new_boolean(m->self));
		struct pk_link *l = pk_cluster_member_link(cl, m);
		if (!l)
			l = m->link;
		json_object_object_add(o, "link",
		                       json_object_new_string(m->self ? "self"
		                                              : l     ? states[l->state]
		                                                      : "none"));
		json_object_object_add(o, "node_id",
		                       l && l->peer_id ? json_object_new_string(l->peer_id)
		                       : m->last_id    ? json_object_new_string(m->last_id)
		                                       : NULL);
		if (m->last_error[0] && !(l && l->state == PK_LINK_ESTABLISHED))
			json_object_object_add(o, "error", json_object_new_string(m->last_error));
		json_object_array_add(arr, o);
	}
	return take_json(arr);
}
