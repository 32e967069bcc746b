/*
 * The workers' supervisor. See workers.h.
 */
#include "workers.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "cluster.h"
#include "listen.h"
#include "log.h"
#include "server.h"

#define SUBSYS "workers"
/* A worker that dies sooner than this after its start waits this long
 * before the next start: a crash at startup does not spin the CPU. */
#define RESTART_DELAY_MS 1000
/* A worker that dies this many times in a row, each time sooner than
 * QUICK_DEATH_MS after its start, will not run here: the server stops
 * (and the pod's restart policy takes over). */
#define MAX_QUICK_DEATHS 5
#define QUICK_DEATH_MS 10000

struct worker {
	pid_t pid; /* 0: not running */
	uint64_t started_ms;
	uint64_t restart_at_ms; /* 0: no restart due */
	int quick_deaths;       /* in a row; see MAX_QUICK_DEATHS */
	/* Bound by the supervisor; a worker keeps its own, the supervisor
	 * keeps them all until shutdown so that a restarted worker finds the
	 * connections that queued meanwhile. */
	int proxy_fd, upstream_fd, admin_fd, cluster_fd;
	int admin_port, cluster_port;
};

struct supervisor {
	struct pk_server_config *cfg;
	struct worker w[PK_MAX_WORKERS];
	size_t n;
	int proxy_port, upstream_port; /* the groups' */
	char *node_id;                 /* the workers' IDs are <node_id>-w<i>. Owner: this. */
	char key[65];                  /* the workers' cluster key when none is configured */
	char secret[65]; /* the header value of their admin requests (admin_gather.h) */
	sigset_t old_mask;
	int fds_open;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* 64 random hex digits: a cluster key or the workers' secret. */
static void random_hex(char out[65])
{
	unsigned char rnd[32];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		abort(); /* no entropy at all: nothing sensible to run on */
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(out + 2 * i, 3, "%02x", rnd[i]);
}

/* Where worker i's admin port listens: the configured one for worker 0,
 * loopback for the others (port 0 the first time). */
static const char *admin_bind(const struct supervisor *s, size_t i)
{
	return i ? "127.0.0.1:0" : s->cfg->admin.bind_addr;
}

static void close_worker_fds(struct worker *w)
{
	int *fds[] = {&w->proxy_fd, &w->upstream_fd, &w->admin_fd, &w->cluster_fd};
	for (size_t k = 0; k < 4; k++)
		if (*fds[k] >= 0) {
			close(*fds[k]);
			*fds[k] = -1;
		}
}

static void close_fds(struct supervisor *s)
{
	if (!s->fds_open)
		return;
	s->fds_open = 0;
	for (size_t i = 0; i < s->n; i++)
		close_worker_fds(&s->w[i]);
}

static int listen_failed(const char *port_name, const char *addr, const char *err)
{
	pk_log(PK_LOG_ERROR, SUBSYS, "failed to listen", "port-name", port_name, "addr", addr,
	       "error", err, NULL);
	return -1;
}

/* Every socket of every worker, before the first fork: a port in use is
 * one error here, not N in the workers. */
static int bind_all(struct supervisor *s)
{
	const struct pk_server_config *cfg = s->cfg;
	char err[256];
	int proxy[PK_MAX_WORKERS], upstream[PK_MAX_WORKERS], port;
	for (size_t i = 0; i < s->n; i++)
		s->w[i].proxy_fd = s->w[i].upstream_fd = s->w[i].admin_fd = s->w[i].cluster_fd = -1;
	s->fds_open = 1;
	if (pk_sock_listen_group(cfg->proxy.bind_addr, s->n, proxy, &port, err, sizeof(err)) < 0)
		return listen_failed("proxy", cfg->proxy.bind_addr, err);
	s->proxy_port = port;
	for (size_t i = 0; i < s->n; i++)
		s->w[i].proxy_fd = proxy[i];
	if (pk_sock_listen_group(cfg->upstream.bind_addr, s->n, upstream, &port, err, sizeof(err)) <
	    0)
		return listen_failed("upstream", cfg->upstream.bind_addr, err);
	s->upstream_port = port;
	for (size_t i = 0; i < s->n; i++)
		s->w[i].upstream_fd = upstream[i];
	for (size_t i = 0; i < s->n; i++) {
		const char *admin = admin_bind(s, i);
		s->w[i].admin_fd = pk_sock_listen_fd(admin, &s->w[i].admin_port, err, sizeof(err));
		if (s->w[i].admin_fd < 0)
			return listen_failed("admin", admin, err);
		s->w[i].cluster_fd =
		    pk_sock_listen_fd("127.0.0.1:0", &s->w[i].cluster_port, err, sizeof(err));
		if (s->w[i].cluster_fd < 0)
			return listen_failed("cluster", "127.0.0.1:0", err);
	}
	return 0;
}

static void set_string(struct pk_server_config *cfg, const char *key, char **field,
                       const char *value)
{
	pk_config_free_key(pk_server_opts, cfg, key);
	*field = value ? pk_xstrdup(value) : NULL;
}

static void loopback_addr(char *out, size_t cap, int port)
{
	snprintf(out, cap, "127.0.0.1:%d", port);
}

/* In worker i, after the fork: keep its own sockets, turn cfg into its
 * node's config, and run the node. */
static int worker_main(struct supervisor *s, size_t i)
{
	struct pk_server_config *cfg = s->cfg;
	struct worker *me = &s->w[i];
	char addr[64], id[512];
	for (size_t j = 0; j < s->n; j++)
		if (j != i)
			close_worker_fds(&s->w[j]);
	/* server.c and cluster.c listen on these instead of binding. */
	cfg->worker.on = 1;
	cfg->worker.index = (int)i;
	cfg->worker.proxy_fd = me->proxy_fd;
	cfg->worker.upstream_fd = me->upstream_fd;
	cfg->worker.admin_fd = me->admin_fd;
	cfg->worker.cluster_fd = me->cluster_fd;
	cfg->worker.secret = s->secret;
	if (i) {
		/* Worker 0 serves the admin port; the others serve theirs on
		 * loopback, in plain HTTP, to worker 0 alone: they take only
		 * requests with the secret (admin.c). */
		loopback_addr(addr, sizeof(addr), me->admin_port);
		set_string(cfg, "admin.bind_addr", &cfg->admin.bind_addr, addr);
		set_string(cfg, "admin.advertise_addr", &cfg->admin.advertise_addr, NULL);
		pk_config_free_key(pk_server_opts, cfg, "admin.tls.cert");
		pk_config_free_key(pk_server_opts, cfg, "admin.tls.key");
		pk_config_free_key(pk_server_opts, cfg, "admin.tls.client_cas");
	}
	loopback_addr(addr, sizeof(addr), me->cluster_port);
	set_string(cfg, "cluster.bind_addr", &cfg->cluster.bind_addr, addr);
	set_string(cfg, "cluster.advertise_addr", &cfg->cluster.advertise_addr, NULL);
	set_string(cfg, "cluster.gossip.bind_addr", &cfg->cluster.gossip.bind_addr, NULL);
	set_string(cfg, "cluster.gossip.advertise_addr", &cfg->cluster.gossip.advertise_addr, NULL);
	snprintf(id, sizeof(id), "%s-w%zu", s->node_id, i);
	set_string(cfg, "cluster.node_id", &cfg->cluster.node_id, id);
	if (!(cfg->cluster.auth.key && *cfg->cluster.auth.key) &&
	    !(cfg->cluster.auth.key_file && *cfg->cluster.auth.key_file))
		set_string(cfg, "cluster.auth.key", &cfg->cluster.auth.key, s->key);

	/* The join list: every other worker. Owner: cfg (pk_config_free). */
	pk_config_free_key(pk_server_opts, cfg, "cluster.join");
	cfg->cluster.join.v = pk_xcalloc(s->n, sizeof(char *));
	for (size_t j = 0; j < s->n; j++)
		if (j != i) {
			loopback_addr(addr, sizeof(addr), s->w[j].cluster_port);
			cfg->cluster.join.v[cfg->cluster.join.n++] = pk_xstrdup(addr);
		}
	/* Worker 0 answers some admin routes for all (admin_gather.h).
	 * Owner: this function, freed below. */
	if (i == 0) {
		cfg->worker.admins.v = pk_xcalloc(s->n, sizeof(char *));
		for (size_t j = 1; j < s->n; j++) {
			loopback_addr(addr, sizeof(addr), s->w[j].admin_port);
			cfg->worker.admins.v[cfg->worker.admins.n++] = pk_xstrdup(addr);
		}
	}
	free(s->node_id);
	s->node_id = NULL;

	int rc = pk_server_run(cfg);
	for (size_t j = 0; j < cfg->worker.admins.n; j++)
		free(cfg->worker.admins.v[j]);
	free(cfg->worker.admins.v);
	memset(&cfg->worker, 0, sizeof(cfg->worker));
	return rc;
}

/* A worker that drained (stopped by hand) shut its sockets down, which
 * stops them for the supervisor's copies too (core/sock.c): new ones on the
 * same ports before it starts again. One that crashed left them listening,
 * with the connections that came meanwhile: those are kept. */
static int refresh_sockets(struct supervisor *s, size_t i)
{
	const struct pk_server_config *cfg = s->cfg;
	struct worker *w = &s->w[i];
	char err[256];
	struct {
		int *fd;
		const char *name, *addr;
		int port, reuseport;
	} socks[] = {
	    {&w->proxy_fd, "proxy", cfg->proxy.bind_addr, s->proxy_port, 1},
	    {&w->upstream_fd, "upstream", cfg->upstream.bind_addr, s->upstream_port, 1},
	    {&w->admin_fd, "admin", admin_bind(s, i), w->admin_port, 0},
	    {&w->cluster_fd, "cluster", "127.0.0.1:0", w->cluster_port, 0},
	};
	for (size_t k = 0; k < sizeof(socks) / sizeof(socks[0]); k++) {
		if (*socks[k].fd >= 0 && pk_sock_listen_is_listening(*socks[k].fd))
			continue;
		if (*socks[k].fd >= 0)
			close(*socks[k].fd);
		*socks[k].fd = pk_sock_listen_again(socks[k].addr, socks[k].port,
		                                    socks[k].reuseport, err, sizeof(err));
		if (*socks[k].fd < 0)
			return listen_failed(socks[k].name, socks[k].addr, err);
	}
	return 0;
}

/* Returns -1 in the supervisor (the worker started, or could not be), or
 * the worker's exit code in the worker. */
static int spawn(struct supervisor *s, size_t i, int *in_worker)
{
	struct worker *w = &s->w[i];
	if (refresh_sockets(s, i) < 0) {
		w->restart_at_ms = now_ms() + RESTART_DELAY_MS;
		return -1;
	}
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		pk_log(PK_LOG_ERROR, SUBSYS, "failed to start a worker", "error", strerror(errno),
		       NULL);
		w->restart_at_ms = now_ms() + RESTART_DELAY_MS;
		return -1;
	}
	if (pid == 0) {
		*in_worker = 1;
		/* A supervisor killed outright (SIGKILL) leaves no orphans
		 * serving: they drain and stop as on SIGTERM. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			raise(SIGTERM);
		signal(SIGCHLD, SIG_DFL);
		/* SIGTERM and SIGINT stay blocked until the node's loop has its
		 * handlers (pk_runloop_signals unblocks them): one that comes
		 * while the worker starts then drains it, instead of killing
		 * it half made. */
		sigset_t mask = s->old_mask;
		sigaddset(&mask, SIGTERM);
		sigaddset(&mask, SIGINT);
		sigdelset(&mask, SIGCHLD);
		sigprocmask(SIG_SETMASK, &mask, NULL);
		return worker_main(s, i);
	}
	w->pid = pid;
	w->started_ms = now_ms();
	w->restart_at_ms = 0;
	char idx[24], pids[16];
	snprintf(idx, sizeof(idx), "%zu", i);
	snprintf(pids, sizeof(pids), "%d", (int)pid);
	pk_log(PK_LOG_INFO, SUBSYS, "worker started", "worker", idx, "pid", pids, NULL);
	return -1;
}

static void on_sigchld(int sig)
{
	(void)sig; /* only to make SIGCHLD pending for sigtimedwait */
}

static void signal_all(struct supervisor *s, int sig)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->w[i].pid > 0)
			kill(s->w[i].pid, sig);
}

/* The supervisor's loop: wait for signals and children until every
 * worker has stopped. Returns the exit code (in a restarted worker: its
 * own, with *in_worker set). */
static int supervise(struct supervisor *s, const sigset_t *set, int *in_worker)
{
	int stopping = 0, rc = 0;
	for (;;) {
		size_t running = 0;
		uint64_t next = 0, now = now_ms();
		for (size_t i = 0; i < s->n; i++) {
			if (s->w[i].pid > 0)
				running++;
			else if (!stopping && s->w[i].restart_at_ms) {
				if (s->w[i].restart_at_ms <= now) {
					int wrc = spawn(s, i, in_worker);
					if (*in_worker)
						return wrc;
					running += s->w[i].pid > 0;
				}
				if (s->w[i].restart_at_ms &&
				    (!next || s->w[i].restart_at_ms < next))
					next = s->w[i].restart_at_ms;
			}
		}
		if (!running && (stopping || !next))
			return rc;
		struct timespec ts = {0, 0};
		if (next) {
			uint64_t wait = next > now ? next - now : 0;
			ts.tv_sec = (time_t)(wait / 1000);
			ts.tv_nsec = (long)(wait % 1000) * 1000000L;
		}
		siginfo_t si;
		int sig = sigtimedwait(set, &si, next ? &ts : NULL);
		if (sig == SIGTERM || sig == SIGINT) {
			if (!stopping)
				pk_log(PK_LOG_INFO, SUBSYS, "stopping the workers", NULL);
			stopping = 1;
			/* The workers close their own listeners as they drain,
			 * as a single node does; the supervisor's copies must
			 * not keep the ports open after them. */
			close_fds(s);
			signal_all(s, sig);
		}
		int st;
		pid_t pid;
		while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
			for (size_t i = 0; i < s->n; i++) {
				struct worker *w = &s->w[i];
				if (w->pid != pid)
					continue;
				w->pid = 0;
				char idx[24], why[32];
				snprintf(idx, sizeof(idx), "%zu", i);
				if (WIFSIGNALED(st))
					snprintf(why, sizeof(why), "signal %d", WTERMSIG(st));
				else
					snprintf(why, sizeof(why), "exit code %d", WEXITSTATUS(st));
				int code = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
				int by_stop_signal = WIFSIGNALED(st) && (WTERMSIG(st) == SIGTERM ||
				                                         WTERMSIG(st) == SIGINT);
				uint64_t t = now_ms();
				if (stopping) {
					/* Killed by the signal passed on to it: stopped. */
					if (code && !by_stop_signal && !rc)
						rc = code;
					pk_log(PK_LOG_INFO, SUBSYS, "worker stopped", "worker", idx,
					       "status", why, NULL);
				} else if (WIFSIGNALED(st) || code == 0) {
					/* A crash, an OOM kill, or a worker stopped by
					 * hand while the server runs: started again. Its
					 * tunnels reconnect meanwhile (the agents'
					 * backoff). */
					w->quick_deaths = t - w->started_ms < QUICK_DEATH_MS
					                      ? w->quick_deaths + 1
					                      : 0;
					if (w->quick_deaths >= MAX_QUICK_DEATHS) {
						pk_log(PK_LOG_ERROR, SUBSYS,
						       "worker keeps dying soon after its start, "
						       "stopping "
						       "the others",
						       "worker", idx, "status", why, NULL);
						rc = 1;
						stopping = 1;
						close_fds(s);
						signal_all(s, SIGTERM);
						continue;
					}
					w->restart_at_ms = t - w->started_ms < RESTART_DELAY_MS
					                       ? w->started_ms + RESTART_DELAY_MS
					                       : t;
					pk_log(PK_LOG_ERROR, SUBSYS,
					       "worker died, starting it again", "worker", idx,
					       "status", why, NULL);
				} else {
					/* It failed on its own: a config error every
					 * worker meets (a certificate that does not
					 * load), or a fatal one. */
					pk_log(PK_LOG_ERROR, SUBSYS,
					       "worker failed, stopping the others", "worker", idx,
					       "status", why, NULL);
					rc = code;
					stopping = 1;
					close_fds(s);
					signal_all(s, SIGTERM);
				}
			}
		}
	}
}

int pk_workers_run(struct pk_server_config *cfg)
{
	if (cfg->workers <= 1)
		return pk_server_run(cfg);

	/* Owner: this function (the supervisor; a worker gets a copy). */
	struct supervisor *s = pk_xcalloc(1, sizeof(*s));
	s->cfg = cfg;
	s->n = (size_t)cfg->workers;
	int rc = 1, in_worker = 0;
	if (bind_all(s) < 0)
		goto out;
	s->node_id = cfg->cluster.node_id && *cfg->cluster.node_id
	                 ? pk_xstrdup(cfg->cluster.node_id)
	                 : pk_cluster_make_node_id(cfg->cluster.node_id_prefix);
	/* The links between workers prove a key like any node link's: a key of
	 * their own when none is set, so a local process cannot join them. The
	 * secret is a value of its own: it travels in plain text on loopback. */
	random_hex(s->key);
	random_hex(s->secret);

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, &s->old_mask);
	signal(SIGCHLD, on_sigchld);
	char n[24];
	snprintf(n, sizeof(n), "%zu", s->n);
	pk_log(PK_LOG_INFO, SUBSYS, "starting workers", "workers", n, "node-id", s->node_id, NULL);
	for (size_t i = 0; i < s->n && !in_worker; i++) {
		int wrc = spawn(s, i, &in_worker);
		if (in_worker)
			rc = wrc;
	}
	if (!in_worker) {
		rc = supervise(s, &set, &in_worker);
		/* The signals stay blocked: one more Ctrl-C now would only
		 * kill the supervisor on its way out. */
		if (!in_worker)
			pk_log(PK_LOG_INFO, SUBSYS, "workers stopped", NULL);
	}
out:
	if (!in_worker)
		close_fds(s);
	else {
		/* The worker's own sockets were handed to its listeners. */
		s->fds_open = 0;
	}
	free(s->node_id);
	free(s);
	return rc;
}
