/*
 * `piko bench http` (protocol reference §4.6): the command line; the
 * benchmark itself is agent/bench.c.
 */
#ifndef PK_PIKO_BENCH_H
#define PK_PIKO_BENCH_H

#include <stddef.h>

#include "config.h"

/* How many positional arguments the loader below can return. */
#define PK_BENCH_POS_CAP 8

/* The binary's one configuration policy (cmd/piko.c load_config). */
typedef int (*pk_bench_load_fn)(const struct pk_opt *flag_opts, const struct pk_opt *yaml_opts,
                                void *cfg, size_t cfg_size, int argc, char **argv, char **pos,
                                size_t *npos, char *err, size_t errlen);

/* Run `piko bench ...` with the arguments after "bench". Returns the process
 * exit code. */
int pk_bench_main(int argc, char **argv, pk_bench_load_fn load);

#endif
