/*
 * `piko bench http`: flags and YAML (agent/bench_config.c), validation,
 * logging, then agent/bench.c. Invalid configuration prints `config:
 * <reason>` and exits 1, as every other command.
 */
#include "piko_bench.h"

#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "bench_config.h"
#include "log.h"

static void bench_usage(FILE *out)
{
	fprintf(out, "Usage: piko bench http [flags]\n\n"
	             "Benchmark Piko HTTP: registers upstreams that echo request bodies, then\n"
	             "sends the configured number of requests to them through the proxy port\n"
	             "and prints the throughput.\n\n"
	             "Examples:\n"
	             "  # Benchmark 100000 HTTP requests from 50 clients.\n"
	             "  piko bench http --requests 100000 --clients 50\n\n"
	             "  # Benchmark with 500 upstreams and 100 endpoints.\n"
	             "  piko bench http --upstreams 500 --endpoints 100\n\n"
	             "  # Benchmarks with requests size 4096 bytes.\n"
	             "  piko bench http --size 4096\n");
}

static int is_help(const char *a)
{
	return !strcmp(a, "--help") || !strcmp(a, "-h");
}

static int cmd_http(int argc, char **argv, pk_bench_load_fn load)
{
	for (int i = 0; i < argc; i++)
		if (is_help(argv[i])) {
			bench_usage(stdout);
			printf("\nFlags:\n");
			pk_config_print_help(pk_bench_flag_opts, stdout);
			return 0;
		}
	struct pk_bench_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	char err[512];
	char *pos[PK_BENCH_POS_CAP];
	size_t npos = 0;
	int rc;
	if (load(pk_bench_flag_opts, pk_bench_yaml_opts, &cfg, sizeof(cfg), argc, argv, pos, &npos,
	         err, sizeof(err)) < 0 ||
	    pk_bench_config_validate(&cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "config: %s\n", err);
		rc = 1;
	} else if (npos) {
		fprintf(stderr, "config: unexpected argument: %s\n", pos[0]);
		rc = 1;
	} else {
		pk_log_set_level(pk_log_parse_level(cfg.log.level));
		pk_log_set_subsystems(cfg.log.subsystems.v, cfg.log.subsystems.n);
		rc = pk_bench_run(&cfg);
		pk_log_reset();
	}
	pk_config_free(pk_bench_flag_opts, &cfg);
	return rc;
}

int pk_bench_main(int argc, char **argv, pk_bench_load_fn load)
{
	if (argc < 1) {
		bench_usage(stderr);
		return 1;
	}
	if (is_help(argv[0]) || !strcmp(argv[0], "help")) {
		bench_usage(stdout);
		return 0;
	}
	if (!strcmp(argv[0], "http"))
		return cmd_http(argc - 1, argv + 1, load);
	fprintf(stderr, "unknown command: bench %s\n", argv[0]);
	bench_usage(stderr);
	return 1;
}
