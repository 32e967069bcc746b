/*
 * piko: one binary with Piko's subcommands, so users keep their habits.
 *
 *   piko server            the data plane node (dataplane/)
 *   piko server status ... a client of a node's status API (piko_status.c)
 *   piko agent http|start  an agent beside a service (agent/)
 *   piko test cluster      nodes behind load balancers on loopback (piko_testcluster.c)
 *   piko token create      sign a token the servers' auth accepts (piko_token.c)
 *   piko bench http        the HTTP benchmark (piko_bench.c, agent/bench.c)
 *
 * Configuration: defaults, then the YAML file named by --config.path, then
 * flags (see core/config.h). Invalid configuration prints `config: <reason>`
 * and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "agent_config.h"
#include "config.h"
#include "forward.h"
#include "forward_config.h"
#include "log.h"
#include "piko_bench.h"
#include "piko_status.h"
#include "piko_testcluster.h"
#include "piko_token.h"
#include "server.h"
#include "server_config.h"
#include "workers.h"

#ifndef PK_VERSION
#define PK_VERSION "unknown"
#endif

#define MAX_POS 8
_Static_assert(MAX_POS == PK_STATUS_POS_CAP, "piko_status.c sizes its pos array for load_config");
_Static_assert(MAX_POS == PK_TESTCLUSTER_POS_CAP, "piko_testcluster.c sizes its pos array too");
_Static_assert(MAX_POS == PK_BENCH_POS_CAP, "piko_bench.c sizes its pos array too");

static int config_error(const char *err)
{
	fprintf(stderr, "config: %s\n", err);
	return 1;
}

static int wants_help(int argc, char **argv)
{
	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return 1;
	return 0;
}

/* defaults -> YAML (--config.path) -> flags, into cfg. Positional arguments
 * are returned in pos. */
static int load_config(const struct pk_opt *flag_opts, const struct pk_opt *yaml_opts, void *cfg,
                       size_t cfg_size, int argc, char **argv, char **pos, size_t *npos, char *err,
                       size_t errlen)
{
	const char *path = NULL;
	int expand = 0;
	/* First pass: only to find --config.path (and reject unknown flags). */
	void *scratch = calloc(1, cfg_size);
	if (!scratch) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int rc = pk_config_defaults(flag_opts, scratch, err, errlen);
	if (rc == 0)
		rc = pk_config_parse_flags(flag_opts, scratch, argc, argv, pos, MAX_POS, npos,
		                           &path, &expand, err, errlen);
	pk_config_free(flag_opts, scratch);
	free(scratch);
	if (rc < 0)
		return -1;

	if (pk_config_defaults(flag_opts, cfg, err, errlen) < 0)
		return -1;
	if (path && pk_config_load_yaml(yaml_opts, cfg, path, expand, err, errlen) < 0)
		return -1;
	return pk_config_parse_flags(flag_opts, cfg, argc, argv, pos, MAX_POS, npos, &path, &expand,
	                             err, errlen);
}

static int setup_logging(const char *level, const struct pk_strlist *subsystems)
{
	pk_log_set_level(pk_log_parse_level(level));
	pk_log_set_subsystems(subsystems->v, subsystems->n);
	return 0;
}

static int cmd_server(int argc, char **argv)
{
	if (wants_help(argc, argv)) {
		printf("Usage: piko server [flags]\n"
		       "       piko server status <command> [flags]\n\n"
		       "Start a Piko server node.\n\n");
		pk_status_summary(stdout);
		printf("\nFlags:\n");
		pk_config_print_help(pk_server_opts, stdout);
		return 0;
	}
	struct pk_server_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	char err[512];
	char *pos[MAX_POS];
	size_t npos = 0;
	if (load_config(pk_server_opts, pk_server_opts, &cfg, sizeof(cfg), argc, argv, pos, &npos,
	                err, sizeof(err)) < 0 ||
	    pk_server_config_validate(&cfg, err, sizeof(err)) < 0) {
		pk_config_free(pk_server_opts, &cfg);
		return config_error(err);
	}
	if (npos) {
		pk_config_free(pk_server_opts, &cfg);
		snprintf(err, sizeof(err), "unexpected argument: %s", pos[0]);
		return config_error(err);
	}
	setup_logging(cfg.log.level, &cfg.log.subsystems);
	int rc = pk_workers_run(&cfg);
	pk_config_free(pk_server_opts, &cfg);
	pk_log_reset();
	return rc;
}

static int run_agent(struct pk_agent_config *cfg)
{
	char err[512];
	if (pk_agent_config_validate(cfg, err, sizeof(err)) < 0)
		return config_error(err);
	setup_logging(cfg->log.level, &cfg->log.subsystems);
	int rc = pk_agent_run(cfg);
	pk_log_reset();
	return rc;
}

/* agent http <endpoint> <addr>: one listener from the command line; it
 * replaces any listeners from YAML, as in Piko. */
static int cmd_agent_listener(const char *protocol, int argc, char **argv)
{
	if (wants_help(argc, argv)) {
		printf("Usage: piko agent %s <endpoint> <addr> [flags]\n\nFlags:\n", protocol);
		pk_config_print_help(pk_agent_http_opts, stdout);
		return 0;
	}
	struct pk_agent_cmd_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	char err[512];
	char *pos[MAX_POS];
	size_t npos = 0;
	int rc;
	/* The YAML table's offsets are relative to cfg.agent, the first member. */
	if (load_config(pk_agent_http_opts, pk_agent_opts, &cfg, sizeof(cfg), argc, argv, pos,
	                &npos, err, sizeof(err)) < 0) {
		rc = config_error(err);
	} else if (npos != 2) {
		snprintf(err, sizeof(err), "expected 2 arguments (<endpoint> <addr>), got %zu",
		         npos);
		rc = config_error(err);
	} else {
		pk_agent_config_free_listeners(&cfg.agent);
		/* Borrowed from argv and a literal: not freed. */
		cfg.listener.endpoint_id = pos[0];
		cfg.listener.addr = pos[1];
		cfg.listener.protocol = (char *)protocol;
		cfg.agent.listeners.v = &cfg.listener;
		cfg.agent.listeners.n = 1;
		rc = run_agent(&cfg.agent);
		cfg.agent.listeners.v = NULL;
		cfg.agent.listeners.n = 0;
		cfg.listener.endpoint_id = cfg.listener.addr = cfg.listener.protocol = NULL;
	}
	pk_agent_config_free_listeners(&cfg.agent);
	pk_config_free(pk_agent_http_opts, &cfg);
	return rc;
}

static int cmd_agent_start(int argc, char **argv)
{
	if (wants_help(argc, argv)) {
		printf("Usage: piko agent start --config.path agent.yaml [flags]\n\nFlags:\n");
		pk_config_print_help(pk_agent_opts, stdout);
		return 0;
	}
	struct pk_agent_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	char err[512];
	char *pos[MAX_POS];
	size_t npos = 0;
	int rc;
	if (load_config(pk_agent_opts, pk_agent_opts, &cfg, sizeof(cfg), argc, argv, pos, &npos,
	                err, sizeof(err)) < 0)
		rc = config_error(err);
	else if (cfg.listeners.n == 0)
		rc = config_error("no listeners configured");
	else
		rc = run_agent(&cfg);
	pk_config_free(pk_agent_opts, &cfg);
	return rc;
}

/* forward tcp <addr> <endpoint> (one port from the command line, replacing
 * YAML ports, as in Piko) and forward start (ports from YAML). */
static int cmd_forward(int tcp, int argc, char **argv)
{
	if (wants_help(argc, argv)) {
		printf(tcp ? "Usage: piko forward tcp <addr> <endpoint> [flags]\n\nFlags:\n"
		           : "Usage: piko forward start --config.path forward.yaml "
		             "[flags]\n\nFlags:\n");
		pk_config_print_help(pk_forward_opts, stdout);
		return 0;
	}
	struct pk_forward_config cfg;
	struct pk_forward_port_config one;
	memset(&cfg, 0, sizeof(cfg));
	memset(&one, 0, sizeof(one));
	char err[512];
	char *pos[MAX_POS];
	size_t npos = 0;
	int rc;
	if (load_config(pk_forward_opts, pk_forward_opts, &cfg, sizeof(cfg), argc, argv, pos, &npos,
	                err, sizeof(err)) < 0) {
		rc = config_error(err);
	} else if (tcp && npos != 2) {
		snprintf(err, sizeof(err), "expected 2 arguments (<addr> <endpoint>), got %zu",
		         npos);
		rc = config_error(err);
	} else if (!tcp && npos != 0) {
		snprintf(err, sizeof(err), "unexpected argument: %s", pos[0]);
		rc = config_error(err);
	} else {
		if (tcp) {
			pk_forward_config_free_ports(&cfg);
			/* Borrowed from argv: not freed. */
			one.addr = pos[0];
			one.endpoint_id = pos[1];
			cfg.ports.v = &one;
			cfg.ports.n = 1;
		}
		if (cfg.ports.n == 0)
			rc = config_error("no ports configured");
		else if (pk_forward_config_validate(&cfg, err, sizeof(err)) < 0)
			rc = config_error(err);
		else {
			setup_logging(cfg.log.level, &cfg.log.subsystems);
			rc = pk_forward_run(&cfg);
			pk_log_reset();
		}
		if (tcp) {
			cfg.ports.v = NULL;
			cfg.ports.n = 0;
		}
	}
	pk_forward_config_free_ports(&cfg);
	pk_config_free(pk_forward_opts, &cfg);
	return rc;
}

static void usage(FILE *out)
{
	fprintf(out, "Usage: piko <command> [flags]\n\n"
	             "Commands:\n"
	             "  server             start a server node\n"
	             "  server status upstream endpoints | cluster nodes | cluster node <id>\n"
	             "                     inspect a running server (its admin port)\n"
	             "  agent http <endpoint> <addr>\n"
	             "                     register an HTTP endpoint served by a local service\n"
	             "  agent tcp <endpoint> <addr>\n"
	             "                     register a TCP endpoint served by a local service\n"
	             "  agent start        start the listeners of --config.path\n"
	             "  forward tcp <addr> <endpoint>\n"
	             "                     forward a local TCP port to an endpoint\n"
	             "  forward start      start the ports of --config.path\n"
	             "  test cluster       run a cluster of server nodes on this machine, behind\n"
	             "                     load balancers, to try a cluster out\n"
	             "  bench http         benchmark a server: echo upstreams, HTTP "
	             "clients\n" PK_TOKEN_SUMMARY "\nRun 'piko <command> --help' for its flags.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 1;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
		printf("%s\n", PK_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "server")) {
		/* A subcommand, not a flag of the server: it never starts one. */
		if (argc >= 3 && !strcmp(argv[2], "status"))
			return pk_status_main(argc - 3, argv + 3, load_config);
		return cmd_server(argc - 2, argv + 2);
	}
	if (!strcmp(cmd, "test"))
		return pk_testcluster_main(argc - 2, argv + 2, load_config);
	if (!strcmp(cmd, "bench"))
		return pk_bench_main(argc - 2, argv + 2, load_config);
	if (!strcmp(cmd, "token"))
		return pk_token_main(argc - 2, argv + 2);
	if (!strcmp(cmd, "agent") && argc >= 3) {
		if (!strcmp(argv[2], "http"))
			return cmd_agent_listener("http", argc - 3, argv + 3);
		if (!strcmp(argv[2], "tcp"))
			return cmd_agent_listener("tcp", argc - 3, argv + 3);
		if (!strcmp(argv[2], "start"))
			return cmd_agent_start(argc - 3, argv + 3);
	}
	if (!strcmp(cmd, "forward") && argc >= 3) {
		if (!strcmp(argv[2], "tcp"))
			return cmd_forward(1, argc - 3, argv + 3);
		if (!strcmp(argv[2], "start"))
			return cmd_forward(0, argc - 3, argv + 3);
	}
	fprintf(stderr, "unknown command: %s\n",
	        argc >= 3 && (!strcmp(cmd, "agent") || !strcmp(cmd, "forward")) ? argv[2] : cmd);
	usage(stderr);
	return 1;
}
