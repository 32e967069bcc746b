/*
 * piko-controller: the operator for PikoCluster resources (controller/).
 *
 * Configuration: defaults, then the YAML file named by --config.path, then
 * flags, through the same option tables as `piko` (core/config.h). Invalid
 * configuration prints `config: <reason>` and exits 1. See docs/controller.md.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "controller.h"
#include "log.h"

#ifndef PK_VERSION
#define PK_VERSION "unknown"
#endif

struct ctl_config {
	char *kubeconfig, *context, *namespace;
	char *lease_namespace, *lease_name, *identity;
	int64_t lease_duration, renew_deadline, retry_period, resync, peer_push;
	char *health_addr;
	int64_t node_admin_port;
	char *log_level;
	struct pk_strlist log_subsystems;
};

#define O(f) offsetof(struct ctl_config, f)
static const struct pk_opt ctl_opts[] = {
    {"kubeconfig", PK_OPT_STRING, O(kubeconfig), NULL,
     "kubeconfig file (default $KUBECONFIG, else in-cluster, else ~/.kube/config)", 0, NULL, 0},
    {"context", PK_OPT_STRING, O(context), NULL, "kubeconfig context (default: current)", 0, NULL,
     0},
    {"namespace", PK_OPT_STRING, O(namespace), NULL,
     "watch PikoClusters in this namespace only (default: all)", 0, NULL, 0},
    {"lease_namespace", PK_OPT_STRING, O(lease_namespace), NULL,
     "namespace of the leader-election Lease (default piko-system; in-cluster: the pod's)", 0, NULL,
     0},
    {"lease_name", PK_OPT_STRING, O(lease_name), "piko-controller", "name of the Lease", 0, NULL,
     0},
    {"identity", PK_OPT_STRING, O(identity), NULL,
     "Lease holder identity (default $POD_NAME or the host name, plus a random suffix)", 0, NULL,
     0},
    {"lease_duration", PK_OPT_DURATION, O(lease_duration), "15s",
     "how long a standby waits on an unchanged Lease before taking it", 0, NULL, 0},
    {"renew_deadline", PK_OPT_DURATION, O(renew_deadline), "10s",
     "a leader that has not renewed for this long stops (exit 1)", 0, NULL, 0},
    {"retry_period", PK_OPT_DURATION, O(retry_period), "2s", "how often the Lease is read", 0, NULL,
     0},
    {"resync", PK_OPT_DURATION, O(resync), "10m", "re-reconcile every PikoCluster this often", 0,
     NULL, 0},
    {"peer_push", PK_OPT_DURATION, O(peer_push), "30s",
     "re-push each member set to its nodes this often", 0, NULL, 0},
    {"health_addr", PK_OPT_STRING, O(health_addr), "0.0.0.0:8081",
     "listen address for /healthz, /readyz and /metrics", 0, NULL, 0},
    {"node_admin_port", PK_OPT_INT, O(node_admin_port), "8002",
     "nodes' admin port when an EndpointSlice names none", 0, NULL, 0},
    {"log.level", PK_OPT_STRING, O(log_level), "info", "debug, info, warn or error", 0, NULL, 0},
    {"log.subsystems", PK_OPT_STRLIST, O(log_subsystems), NULL, "subsystems logged at every level",
     0, NULL, 0},
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

static int fail(struct ctl_config *cfg, const char *err)
{
	fprintf(stderr, "config: %s\n", err);
	pk_config_free(ctl_opts, cfg);
	return 1;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			printf(
			    "Usage: piko-controller [flags]\n\nReconciles PikoCluster resources "
			    "(piko.dev/v1alpha1) into clusters of piko server nodes.\n\nFlags:\n");
			pk_config_print_help(ctl_opts, stdout);
			return 0;
		}
		if (!strcmp(argv[i], "--version")) {
			printf("piko-controller %s\n", PK_VERSION);
			return 0;
		}
	}
	struct ctl_config cfg;
	char err[512];
	const char *path = NULL;
	int expand = 0;
	char *pos[1];
	size_t npos = 0;
	if (pk_config_defaults(ctl_opts, &cfg, err, sizeof(err)) != 0)
		return fail(&cfg, err);
	/* Flags first to learn --config.path, then the file, then flags again
	 * so they win over it. */
	if (pk_config_parse_flags(ctl_opts, &cfg, argc - 1, argv + 1, pos, 1, &npos, &path, &expand,
	                          err, sizeof(err)) != 0)
		return fail(&cfg, err);
	if (npos > 0) {
		snprintf(err, sizeof(err), "unexpected argument: %s", pos[0]);
		return fail(&cfg, err);
	}
	if (path) {
		if (pk_config_load_yaml(ctl_opts, &cfg, path, expand, err, sizeof(err)) != 0 ||
		    pk_config_parse_flags(ctl_opts, &cfg, argc - 1, argv + 1, pos, 1, &npos, &path,
		                          &expand, err, sizeof(err)) != 0)
			return fail(&cfg, err);
	}
	int level = pk_log_parse_level(cfg.log_level);
	if (level < 0) {
		snprintf(err, sizeof(err), "invalid log.level: %s", cfg.log_level);
		return fail(&cfg, err);
	}
	pk_log_set_level((enum pk_log_level)level);
	pk_log_set_subsystems(cfg.log_subsystems.v, cfg.log_subsystems.n);
	if (cfg.lease_duration <= 0 || cfg.renew_deadline <= 0 || cfg.retry_period <= 0 ||
	    cfg.renew_deadline >= cfg.lease_duration || cfg.retry_period >= cfg.renew_deadline)
		return fail(&cfg, "need 0 < retry-period < renew-deadline < lease-duration");
	if (cfg.resync <= 0 || cfg.peer_push <= 0)
		return fail(&cfg, "resync and peer-push must be positive");
	if (cfg.node_admin_port < 1 || cfg.node_admin_port > 65535)
		return fail(&cfg, "node-admin-port must be 1-65535");

	unsigned char r[10] = {0};
	FILE *f = fopen("/dev/urandom", "rb");
	if (f) {
		if (fread(r, 1, sizeof(r), f) != sizeof(r))
			memset(r, 0, sizeof(r));
		fclose(f);
	}
	/* rand() jitters the watch timeouts: seeded per process, or every
	 * replica (and every restart) would re-watch in the same lockstep. */
	srand((unsigned)(r[6] | r[7] << 8 | r[8] << 16 | (unsigned)r[9] << 24) ^
	      (unsigned)time(NULL) ^ (unsigned)getpid());
	/* A unique identity per process, even for two replicas on one host. */
	char identity[300];
	if (cfg.identity) {
		snprintf(identity, sizeof(identity), "%s", cfg.identity);
	} else {
		char host[256] = "piko-controller";
		const char *pod = getenv("POD_NAME");
		if (pod && *pod)
			snprintf(host, sizeof(host), "%s", pod);
		else
			gethostname(host, sizeof(host) - 1);
		snprintf(identity, sizeof(identity), "%s_%02x%02x%02x%02x%02x%02x", host, r[0],
		         r[1], r[2], r[3], r[4], r[5]);
	}
	struct pk_ctrl_opts o = {
	    .kubeconfig = cfg.kubeconfig,
	    .context = cfg.context,
	    .namespace = cfg.namespace,
	    .lease_namespace = cfg.lease_namespace,
	    .lease_name = cfg.lease_name,
	    .identity = identity,
	    .lease_duration_ms = (uint64_t)cfg.lease_duration,
	    .renew_deadline_ms = (uint64_t)cfg.renew_deadline,
	    .retry_ms = (uint64_t)cfg.retry_period,
	    .resync_ms = (uint64_t)cfg.resync,
	    .peer_push_ms = (uint64_t)cfg.peer_push,
	    .health_addr = cfg.health_addr,
	    .node_admin_port = (uint16_t)cfg.node_admin_port,
	};
	int rc = pk_ctrl_run(&o);
	pk_config_free(ctl_opts, &cfg);
	pk_log_reset();
	return rc;
}
