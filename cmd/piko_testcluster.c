/*
 * `piko test cluster` (protocol reference §4.7): N server nodes on loopback
 * behind three load balancers, so that a user can try a cluster with one
 * command.
 *
 * Piko runs its nodes in one process. Ours cannot (one lws context per
 * process, and core/sock.c keeps module-level state), so each node is a
 * child process: this binary (/proc/self/exe) run as `piko server` on
 * 127.0.0.1. A node only accepts links from its member set, so every node
 * must know every cluster address before any starts: the ports are picked
 * up front (listen on port 0, read the port, close once all are picked) and
 * every node gets all N cluster addresses in --cluster.join (it recognises
 * its own and skips it).
 *
 * The parent runs one lws loop with three pk_balancers (core/balancer.c):
 * the proxy, upstream and admin fronts, each sending a new connection to a
 * random node whose admin /ready answered 200 at the last check, or to any
 * running node while none has. The checks are non-blocking GET /ready
 * requests on pk_sock, one per node every 250 ms.
 *
 * A node that exits unexpectedly is logged and started again on the same
 * ports (the other nodes know only those), with a new random ID suffix as
 * any restarted node gets, after a backoff so that a node that cannot start
 * does not spin. SIGTERM/SIGINT: SIGTERM every node, wait for all (SIGKILL
 * after STOP_GRACE_MS: a node's own grace period is 1 minute), then close
 * the balancers and exit 0. SIGHUP: Piko reloads the configuration and adds
 * or removes nodes; here it only logs "reload not supported" (growing would
 * need the running nodes' member sets changed too).
 *
 * The nodes write to our stderr and stdout as they are (one JSON record per
 * write(2), so lines do not interleave).
 */
#include "piko_testcluster.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "backoff.h"
#include "balancer.h"
#include "buf.h"
#include "listen.h"
#include "log.h"
#include "runloop.h"
#include "sock.h"

#define SUBSYS "test-cluster"
/* cluster.join takes at most 64 entries, and the balancer's tried-mask has
 * 64 bits. */
#define MAX_NODES 64
#define TICK_US (250 * LWS_US_PER_MS)
/* A readiness check that has not answered in this long counts as not ready
 * (the next one starts on the following tick). */
#define PROBE_TIMEOUT_MS 1000
/* "HTTP/1.1 200 OK\r\n" is all we read; a longer first line is cut here. */
#define PROBE_LINE_MAX 64
#define PROBE_SEND_CAP 256
/* Restart backoff (core/backoff.c doubles with jitter); a node that stayed
 * up this long starts over from the minimum. */
#define RESTART_MIN_MS 100
#define RESTART_MAX_MS 15000
#define STABLE_MS 10000
/* The nodes' grace period is 1 minute: wait a little longer, then kill. */
#define STOP_GRACE_MS 70000
/* After SIGKILL a child is reaped at once; this only bounds a pathological
 * case (a child stuck in the kernel) so that we still exit. */
#define KILL_WAIT_MS 5000

enum {
	PORT_PROXY = 0,
	PORT_UPSTREAM,
	PORT_ADMIN,
	PORT_CLUSTER,
	NPORTS,
};

static const char *const port_names[NPORTS] = {"proxy", "upstream", "admin", "cluster"};

struct tc_config {
	int64_t nodes;
	struct {
		char *bind_addr;
	} proxy, upstream, admin;
	struct {
		char *level;
		struct pk_strlist subsystems;
	} log;
};

#define O(f) offsetof(struct tc_config, f)

/* YAML keys (as Piko's: nodes, log), also flags. */
/* clang-format off */
#define TC_COMMON_OPTS                                                                             \
	{"nodes", PK_OPT_INT, O(nodes), "3", "number of server nodes (1 to 64)", 0, NULL, 0},        \
	{"log.level", PK_OPT_STRING, O(log.level), "info", "debug, info, warn or error (also the "     \
	 "nodes')", 0, NULL, 0},                                                                     \
	{"log.subsystems", PK_OPT_STRLIST, O(log.subsystems), NULL,                                   \
	 "subsystems logged at every level (also the nodes')", 0, NULL, 0}
/* clang-format on */

static const struct pk_opt yaml_opts[] = {
    TC_COMMON_OPTS,
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

/* The front addresses are flags only (not in Piko, which always uses
 * 127.0.0.1:8000/8001/8002). */
static const struct pk_opt flag_opts[] = {
    TC_COMMON_OPTS,
    {"proxy.bind_addr", PK_OPT_STRING, O(proxy.bind_addr), "127.0.0.1:8000",
     "front of the nodes' proxy ports (not in Piko)", 0, NULL, 0},
    {"upstream.bind_addr", PK_OPT_STRING, O(upstream.bind_addr), "127.0.0.1:8001",
     "front of the nodes' upstream ports (not in Piko)", 0, NULL, 0},
    {"admin.bind_addr", PK_OPT_STRING, O(admin.bind_addr), "127.0.0.1:8002",
     "front of the nodes' admin ports (not in Piko)", 0, NULL, 0},
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

struct tc;

struct tc_node {
	struct tc *tc;
	int idx;
	int port[NPORTS];
	pid_t pid; /* 0: not running */
	uint64_t started_ms;
	uint64_t restart_ms; /* when to start it again; 0: not due */
	struct pk_backoff backoff;
	int ready; /* the last readiness check answered 200 */
	/* The readiness check in flight, or NULL. Owner: the pk_sock itself;
	 * the pointer is dropped in probe_close. */
	struct pk_sock *probe;
	uint64_t probe_deadline_ms;
	char probe_line[PROBE_LINE_MAX + 1];
	size_t probe_len;
	int probe_done; /* the status line was read */
};

struct tc_front {
	struct tc *tc;
	int kind; /* PORT_PROXY, PORT_UPSTREAM or PORT_ADMIN */
	struct pk_balancer *lb;
};

struct tc {
	const struct tc_config *cfg;
	struct lws_context *ctx;
	lws_sorted_usec_list_t tick_sul;
	/* Owner: this struct (tc_free). */
	struct tc_node *nodes;
	size_t n;
	char *join;       /* every node's cluster address, comma separated */
	char *subsystems; /* cfg->log.subsystems, comma separated, or NULL */
	struct tc_front fronts[3];
	int stopping;
	int killed;
	uint64_t stop_deadline_ms;
	uint64_t kill_deadline_ms;
};

/* ---- signals ------------------------------------------------------------------- */

static volatile sig_atomic_t got_chld, got_hup;
static struct lws_context *volatile signal_ctx;

static void on_signal(int sig)
{
	int saved = errno; /* waitpid and friends in the loop read errno */
	if (sig == SIGCHLD)
		got_chld = 1;
	else
		got_hup = 1;
	struct lws_context *ctx = signal_ctx;
	if (ctx)
		lws_cancel_service(ctx); /* a write to a pipe, as runloop.c relies on */
	errno = saved;
}

static void install_signals(struct lws_context *ctx)
{
	signal_ctx = ctx;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

static void restore_signals(void)
{
	signal_ctx = NULL;
	signal(SIGCHLD, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
}

/* ---- nodes ----------------------------------------------------------------------- */

static void node_port_field(const struct tc_node *nd, int kind, char *out, size_t len)
{
	snprintf(out, len, "127.0.0.1:%d", nd->port[kind]);
}

static void set_ready(struct tc_node *nd, int ready)
{
	if (nd->ready == ready)
		return;
	nd->ready = ready;
	char idx[16];
	snprintf(idx, sizeof(idx), "%d", nd->idx);
	pk_log(ready ? PK_LOG_INFO : PK_LOG_DEBUG, SUBSYS, ready ? "node ready" : "node not ready",
	       "node", idx, NULL);
}

static int spawn(struct tc_node *nd)
{
	struct tc *tc = nd->tc;
	char addr[NPORTS][32], prefix[32];
	for (int k = 0; k < NPORTS; k++)
		node_port_field(nd, k, addr[k], sizeof(addr[k]));
	snprintf(prefix, sizeof(prefix), "node-%d-", nd->idx);
	/* Built before fork: the child may only make async-signal-safe calls
	 * until it execs. The strings live on this stack, which the child's
	 * copy keeps. */
	char *argv[24];
	int a = 0;
	argv[a++] = "piko";
	argv[a++] = "server";
	argv[a++] = "--proxy.bind-addr";
	argv[a++] = addr[PORT_PROXY];
	argv[a++] = "--upstream.bind-addr";
	argv[a++] = addr[PORT_UPSTREAM];
	argv[a++] = "--admin.bind-addr";
	argv[a++] = addr[PORT_ADMIN];
	argv[a++] = "--cluster.bind-addr";
	argv[a++] = addr[PORT_CLUSTER];
	argv[a++] = "--cluster.join";
	argv[a++] = tc->join;
	argv[a++] = "--cluster.node-id-prefix";
	argv[a++] = prefix;
	argv[a++] = "--log.level";
	argv[a++] = tc->cfg->log.level;
	if (tc->subsystems) {
		argv[a++] = "--log.subsystems";
		argv[a++] = tc->subsystems;
	}
	argv[a] = NULL;

	char idx[16];
	snprintf(idx, sizeof(idx), "%d", nd->idx);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == -1) {
		pk_log(PK_LOG_ERROR, SUBSYS, "cannot start a node", "node", idx, "error",
		       strerror(errno), NULL);
		nd->restart_ms = pk_now_ms() + pk_backoff_next(&nd->backoff); /* by the tick */
		return -1;
	}
	if (pid == 0) {
		/* The node must not outlive us, even if we are SIGKILLed. */
		if (prctl(PR_SET_PDEATHSIG, SIGTERM) == -1 || getppid() != parent)
			_exit(1);
		/* Our descriptors are close-on-exec, lws's internal ones may
		 * not be: the node gets none of them. */
		if (close_range(3, ~0U, 0) == -1)
			for (int fd = 3; fd < 1024; fd++)
				close(fd);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	nd->pid = pid;
	nd->started_ms = pk_now_ms();
	nd->restart_ms = 0;
	char pids[16];
	snprintf(pids, sizeof(pids), "%d", (int)pid);
	pk_log(PK_LOG_INFO, SUBSYS, "node started", "node", idx, "pid", pids, "proxy-addr",
	       addr[PORT_PROXY], "upstream-addr", addr[PORT_UPSTREAM], "admin-addr",
	       addr[PORT_ADMIN], "cluster-addr", addr[PORT_CLUSTER], NULL);
	return 0;
}

static void exit_text(int status, char *out, size_t len)
{
	if (WIFEXITED(status))
		snprintf(out, len, "exit status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(out, len, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(out, len, "status %d", status);
}

/* Collect every child that exited; restart the ones that should not have. */
static void reap(struct tc *tc)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct tc_node *nd = NULL;
		for (size_t i = 0; i < tc->n; i++)
			if (tc->nodes[i].pid == pid)
				nd = &tc->nodes[i];
		if (!nd)
			continue;
		uint64_t now = pk_now_ms();
		char idx[16], pids[16], how[96];
		snprintf(idx, sizeof(idx), "%d", nd->idx);
		snprintf(pids, sizeof(pids), "%d", (int)pid);
		exit_text(status, how, sizeof(how));
		nd->pid = 0;
		set_ready(nd, 0);
		if (tc->stopping) {
			pk_log(PK_LOG_INFO, SUBSYS, "node stopped", "node", idx, "pid", pids,
			       "status", how, NULL);
			continue;
		}
		if (now - nd->started_ms >= STABLE_MS)
			pk_backoff_reset(&nd->backoff);
		uint64_t wait = pk_backoff_next(&nd->backoff);
		char waits[24];
		snprintf(waits, sizeof(waits), "%llums", (unsigned long long)wait);
		pk_log(PK_LOG_ERROR, SUBSYS, "node exited unexpectedly; restarting it", "node", idx,
		       "pid", pids, "status", how, "restart-in", waits, NULL);
		nd->restart_ms = now + wait;
	}
}

static size_t running(const struct tc *tc)
{
	size_t n = 0;
	for (size_t i = 0; i < tc->n; i++)
		n += tc->nodes[i].pid != 0;
	return n;
}

static void begin_stop(struct tc *tc)
{
	pk_log(PK_LOG_INFO, SUBSYS, "shutting down", NULL);
	tc->stopping = 1;
	tc->stop_deadline_ms = pk_now_ms() + STOP_GRACE_MS;
	for (size_t i = 0; i < tc->n; i++) {
		struct tc_node *nd = &tc->nodes[i];
		nd->restart_ms = 0;
		if (nd->pid)
			kill(nd->pid, SIGTERM);
	}
}

static void kill_all(struct tc *tc)
{
	pk_log(PK_LOG_WARN, SUBSYS, "nodes still running after the grace period; killing them",
	       NULL);
	tc->killed = 1;
	tc->kill_deadline_ms = pk_now_ms() + KILL_WAIT_MS;
	for (size_t i = 0; i < tc->n; i++)
		if (tc->nodes[i].pid)
			kill(tc->nodes[i].pid, SIGKILL);
}

/* ---- readiness checks --------------------------------------------------------------- */

static void probe_connected(struct pk_sock *s)
{
	(void)s; /* the request was queued at connect time */
}

static void probe_data(struct pk_sock *s, const uint8_t *data, size_t len)
{
	struct tc_node *nd = pk_sock_user(s);
	if (nd->probe_done)
		return;
	size_t n = len < PROBE_LINE_MAX - nd->probe_len ? len : PROBE_LINE_MAX - nd->probe_len;
	memcpy(nd->probe_line + nd->probe_len, data, n);
	nd->probe_len += n;
	nd->probe_line[nd->probe_len] = '\0';
	if (!memchr(nd->probe_line, '\n', nd->probe_len) && nd->probe_len < PROBE_LINE_MAX)
		return; /* the status line is not complete yet */
	/* "HTTP/1.1 200 OK": the code is the second word. */
	int code = 0;
	const char *sp = strchr(nd->probe_line, ' ');
	if (!strncmp(nd->probe_line, "HTTP/1.", 7) && sp)
		code = atoi(sp + 1);
	nd->probe_done = 1;
	set_ready(nd, code == 200);
	/* The answer is all we wanted; an abort leaves no TIME_WAIT behind,
	 * which four checks a second per node would pile up. */
	pk_sock_close(s, 1);
}

static void probe_eof(struct pk_sock *s)
{
	pk_sock_close(s, 1);
}

static void probe_close(struct pk_sock *s, int reset, const char *why)
{
	struct tc_node *nd = pk_sock_user(s);
	(void)reset;
	(void)why;
	nd->probe = NULL;
	if (!nd->probe_done)
		set_ready(nd, 0);
}

static const struct pk_sock_ops probe_ops = {
    .on_connected = probe_connected,
    .on_data = probe_data,
    .on_eof = probe_eof,
    .on_drain = NULL,
    .on_close = probe_close,
};

static void probe_start(struct tc_node *nd, uint64_t now)
{
	char req[160];
	int n = snprintf(req, sizeof(req),
	                 "GET /ready HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n",
	                 nd->port[PORT_ADMIN]);
	nd->probe_len = 0;
	nd->probe_done = 0;
	nd->probe_deadline_ms = now + PROBE_TIMEOUT_MS;
	nd->probe = pk_sock_connect("127.0.0.1", nd->port[PORT_ADMIN], PROBE_TIMEOUT_MS, &probe_ops,
	                            nd, PROBE_SEND_CAP);
	if (!nd->probe) {
		set_ready(nd, 0);
		return;
	}
	pk_sock_write(nd->probe, (const uint8_t *)req, (size_t)n); /* sent once connected */
}

/* ---- the balancers' choice ------------------------------------------------------------ */

/* A random running node not tried yet: among the ready ones when any node
 * is ready, else among all (at start, before any check answered). */
static int pick(void *user, uint64_t tried, char *host, size_t hostlen, int *port)
{
	struct tc_front *f = user;
	struct tc *tc = f->tc;
	int any_ready = 0;
	for (size_t i = 0; i < tc->n; i++)
		any_ready |= tc->nodes[i].pid && tc->nodes[i].ready;
	int cand[MAX_NODES];
	uint32_t nc = 0;
	for (size_t i = 0; i < tc->n; i++) {
		const struct tc_node *nd = &tc->nodes[i];
		if ((tried >> i) & 1 || !nd->pid || (any_ready && !nd->ready))
			continue;
		cand[nc++] = (int)i;
	}
	if (!nc)
		return -1;
	int i = cand[arc4random_uniform(nc)];
	snprintf(host, hostlen, "127.0.0.1");
	*port = tc->nodes[i].port[f->kind];
	return i;
}

/* ---- the loop -------------------------------------------------------------------------- */

static void tick(lws_sorted_usec_list_t *sul)
{
	struct tc *tc = lws_container_of(sul, struct tc, tick_sul);
	uint64_t now = pk_now_ms();
	pk_sock_tick(now);
	for (size_t i = 0; i < tc->n; i++) {
		struct tc_node *nd = &tc->nodes[i];
		if (!tc->stopping && !nd->pid && nd->restart_ms && now >= nd->restart_ms)
			spawn(nd);
		if (nd->probe && now >= nd->probe_deadline_ms)
			pk_sock_close(nd->probe, 1); /* probe_close marks it not ready */
		else if (!nd->probe && nd->pid && !tc->stopping)
			probe_start(nd, now);
	}
	lws_sul_schedule(tc->ctx, 0, &tc->tick_sul, tick, TICK_US);
}

/* Ports for every node, all picked before any is released, so that no two
 * are the same. Returns 0, or -1 with err set. */
static int pick_ports(struct tc *tc, char *err, size_t errlen)
{
	size_t total = tc->n * NPORTS;
	/* Owner: this function. */
	int *fds = pk_xcalloc(total, sizeof(*fds));
	int rc = 0;
	size_t k;
	for (k = 0; k < total; k++) {
		int port;
		fds[k] = pk_sock_listen_fd("127.0.0.1:0", &port, err, errlen);
		if (fds[k] == -1) {
			rc = -1;
			break;
		}
		tc->nodes[k / NPORTS].port[k % NPORTS] = port;
	}
	for (size_t j = 0; j < k; j++)
		close(fds[j]);
	free(fds);
	return rc;
}

static char *join_list(char *const *v, size_t n)
{
	size_t len = 1;
	for (size_t i = 0; i < n; i++)
		len += strlen(v[i]) + 1;
	/* Owner: the caller. */
	char *out = pk_xcalloc(1, len);
	for (size_t i = 0; i < n; i++) {
		if (i)
			strcat(out, ",");
		strcat(out, v[i]);
	}
	return out;
}

static int run(const struct tc_config *cfg)
{
	struct tc tc;
	memset(&tc, 0, sizeof(tc));
	tc.cfg = cfg;
	tc.n = (size_t)cfg->nodes;
	/* Owner: this function (freed at the end, after the lws context: the
	 * readiness checks' callbacks point at nodes until it is gone). */
	tc.nodes = pk_xcalloc(tc.n, sizeof(*tc.nodes));
	char *addrs[MAX_NODES];
	for (size_t i = 0; i < tc.n; i++) {
		tc.nodes[i].tc = &tc;
		tc.nodes[i].idx = (int)i;
		pk_backoff_init(&tc.nodes[i].backoff, RESTART_MIN_MS, RESTART_MAX_MS);
	}
	if (cfg->log.subsystems.n)
		tc.subsystems = join_list(cfg->log.subsystems.v, cfg->log.subsystems.n);
	pk_runloop_lws_logs(0);

	tc.ctx = pk_runloop_sock_context(NULL);
	if (!tc.ctx) {
		free(tc.subsystems);
		free(tc.nodes);
		return 1;
	}

	int rc = 0;
	char err[256];
	const char *front_addr[3] = {cfg->proxy.bind_addr, cfg->upstream.bind_addr,
	                             cfg->admin.bind_addr};
	for (int k = 0; k < 3; k++) {
		struct tc_front *f = &tc.fronts[k];
		f->tc = &tc;
		f->kind = k;
		f->lb = pk_balancer_listen(port_names[k], front_addr[k], pick, f, err, sizeof(err));
		if (!f->lb) {
			pk_log(PK_LOG_ERROR, SUBSYS, "failed to listen", "port-name", port_names[k],
			       "addr", front_addr[k], "error", err, NULL);
			rc = 1;
			goto out;
		}
		char port[16];
		snprintf(port, sizeof(port), "%d", pk_balancer_port(f->lb));
		pk_log(PK_LOG_INFO, SUBSYS, "listening", "port-name", port_names[k], "addr",
		       front_addr[k], "port", port, NULL);
	}
	if (pick_ports(&tc, err, sizeof(err)) < 0) {
		pk_log(PK_LOG_ERROR, SUBSYS, "cannot pick the nodes' ports", "error", err, NULL);
		rc = 1;
		goto out;
	}
	char(*cl)[32] = pk_xcalloc(tc.n, sizeof(*cl)); /* owner: here, until joined */
	for (size_t i = 0; i < tc.n; i++) {
		node_port_field(&tc.nodes[i], PORT_CLUSTER, cl[i], sizeof(cl[i]));
		addrs[i] = cl[i];
	}
	tc.join = join_list(addrs, tc.n);
	free(cl);

	pk_runloop_signals(tc.ctx);
	install_signals(tc.ctx);
	for (size_t i = 0; i < tc.n; i++)
		spawn(&tc.nodes[i]); /* a failed fork is retried by the tick */
	char ns[16];
	snprintf(ns, sizeof(ns), "%zu", tc.n);
	pk_log(PK_LOG_INFO, SUBSYS, "test cluster started", "nodes", ns, NULL);
	lws_sul_schedule(tc.ctx, 0, &tc.tick_sul, tick, TICK_US);

	for (;;) {
		if (lws_service(tc.ctx, 0) < 0)
			break;
		/* Before reaping: a Ctrl-C reaches the nodes too (one process
		 * group), and their exits are then no surprise. */
		if (pk_runloop_stop_requested() && !tc.stopping)
			begin_stop(&tc);
		if (got_chld) {
			got_chld = 0;
			reap(&tc);
		}
		if (got_hup) {
			got_hup = 0;
			pk_log(PK_LOG_WARN, SUBSYS,
			       "SIGHUP: reload not supported; restart the command to change the "
			       "configuration",
			       NULL);
		}
		if (!tc.stopping)
			continue;
		if (!running(&tc))
			break;
		uint64_t now = pk_now_ms();
		if (!tc.killed && now >= tc.stop_deadline_ms)
			kill_all(&tc);
		if (tc.killed && now >= tc.kill_deadline_ms) {
			pk_log(PK_LOG_ERROR, SUBSYS,
			       "nodes did not exit after SIGKILL; leaving them", NULL);
			break;
		}
	}
	if (!tc.stopping) {
		/* The loop failed: do not leave the nodes behind (their
		 * PR_SET_PDEATHSIG would also stop them once we exit). */
		pk_log(PK_LOG_ERROR, SUBSYS, "event loop failed; stopping the nodes", NULL);
		rc = 1;
		for (size_t i = 0; i < tc.n; i++)
			if (tc.nodes[i].pid)
				kill(tc.nodes[i].pid, SIGTERM);
	} else {
		pk_log(PK_LOG_INFO, SUBSYS, "stopped", NULL);
	}
out:
	restore_signals();
	pk_runloop_signals_done();
	for (int k = 0; k < 3; k++)
		pk_balancer_stop(tc.fronts[k].lb);
	lws_context_destroy(tc.ctx);
	for (int k = 0; k < 3; k++)
		pk_balancer_free(tc.fronts[k].lb);
	free(tc.join);
	free(tc.subsystems);
	free(tc.nodes);
	pk_buf_freelist_release();
	return rc;
}

/* ---- the command -------------------------------------------------------------------------- */

static int is_help(const char *a)
{
	return !strcmp(a, "--help") || !strcmp(a, "-h");
}

static void test_usage(FILE *out)
{
	fprintf(out, "Usage: piko test <command> [flags]\n\n"
	             "Commands:\n"
	             "  cluster            run a cluster of server nodes on this machine, behind\n"
	             "                     load balancers, to try a cluster out\n"
	             "\nRun 'piko test cluster --help' for its flags.\n");
}

static void cluster_help(FILE *out)
{
	fprintf(out,
	        "Usage: piko test cluster [flags]\n\n"
	        "Start a cluster of --nodes server nodes on this machine, to try a cluster out\n"
	        "(not for production).\n\n"
	        "Each node is a `piko server` child process on 127.0.0.1 with ports picked at\n"
	        "start, joined to every other node; node IDs are node-<i>-<random>. Three TCP\n"
	        "load balancers send each new connection to a random node whose admin /ready\n"
	        "answered 200 at the last check (every 250 ms; any node while none has):\n"
	        "  --proxy.bind-addr     to the nodes' proxy ports     (default 127.0.0.1:8000)\n"
	        "  --upstream.bind-addr  to the nodes' upstream ports  (default 127.0.0.1:8001)\n"
	        "  --admin.bind-addr     to the nodes' admin ports     (default 127.0.0.1:8002)\n"
	        "A node that exits unexpectedly is restarted on the same ports, with a new\n"
	        "node ID. The nodes log to this command's stderr. SIGTERM or SIGINT stops every\n"
	        "node gracefully (killed after 70s) and exits 0.\n\n"
	        "Differences from Piko: the nodes are processes rather than in-process, the\n"
	        "load balancers are TCP rather than HTTP proxies, the three --*.bind-addr flags\n"
	        "are ours, and SIGHUP does not reload the configuration (it logs \"reload not\n"
	        "supported\"): restart the command to change --nodes.\n\n"
	        "Examples:\n"
	        "  piko test cluster --nodes 5\n"
	        "  piko agent http my-endpoint 3000 --connect.url http://127.0.0.1:8001\n"
	        "  curl -H 'x-piko-endpoint: my-endpoint' http://127.0.0.1:8000/\n"
	        "  piko server status cluster nodes --server.url http://127.0.0.1:8002\n\n"
	        "Flags:\n");
	pk_config_print_help(flag_opts, out);
}

static int cmd_cluster(int argc, char **argv, pk_testcluster_load_fn load)
{
	for (int i = 0; i < argc; i++)
		if (is_help(argv[i])) {
			cluster_help(stdout);
			return 0;
		}
	struct tc_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	char err[512];
	char *pos[PK_TESTCLUSTER_POS_CAP];
	size_t npos = 0;
	int rc;
	if (load(flag_opts, yaml_opts, &cfg, sizeof(cfg), argc, argv, pos, &npos, err,
	         sizeof(err)) < 0) {
		fprintf(stderr, "config: %s\n", err);
		rc = 1;
	} else if (npos) {
		fprintf(stderr, "config: unexpected argument: %s\n", pos[0]);
		rc = 1;
	} else if (cfg.nodes < 1 || cfg.nodes > MAX_NODES) {
		fprintf(stderr, "config: nodes must be between 1 and %d\n", MAX_NODES);
		rc = 1;
	} else if (pk_log_parse_level(cfg.log.level) < 0) {
		fprintf(stderr, "config: invalid log level: %s\n", cfg.log.level);
		rc = 1;
	} else {
		pk_log_set_level(pk_log_parse_level(cfg.log.level));
		pk_log_set_subsystems(cfg.log.subsystems.v, cfg.log.subsystems.n);
		rc = run(&cfg);
		pk_log_reset();
	}
	pk_config_free(flag_opts, &cfg);
	return rc;
}

int pk_testcluster_main(int argc, char **argv, pk_testcluster_load_fn load)
{
	if (argc < 1) {
		test_usage(stderr);
		return 1;
	}
	if (is_help(argv[0]) || !strcmp(argv[0], "help")) {
		test_usage(stdout);
		return 0;
	}
	if (!strcmp(argv[0], "cluster"))
		return cmd_cluster(argc - 1, argv + 1, load);
	fprintf(stderr, "unknown command: test %s\n", argv[0]);
	test_usage(stderr);
	return 1;
}
