/*
 * `piko test cluster` (protocol reference §4.7): a cluster of server nodes on
 * this machine, behind three load balancers, to try a cluster with one
 * command. See piko_testcluster.c for how it differs from Piko's.
 */
#ifndef PK_PIKO_TESTCLUSTER_H
#define PK_PIKO_TESTCLUSTER_H

#include <stddef.h>

#include "config.h"

/* How many positional arguments the loader below can return. */
#define PK_TESTCLUSTER_POS_CAP 8

/* The binary's one configuration policy (defaults, YAML of --config.path,
 * flags; cmd/piko.c load_config). pos must hold PK_TESTCLUSTER_POS_CAP
 * pointers; they point into argv. Returns 0, or -1 with err set. */
typedef int (*pk_testcluster_load_fn)(const struct pk_opt *flag_opts,
                                      const struct pk_opt *yaml_opts, void *cfg, size_t cfg_size,
                                      int argc, char **argv, char **pos, size_t *npos, char *err,
                                      size_t errlen);

/* Run `piko test ...` with the arguments after "test". Returns the process
 * exit code. */
int pk_testcluster_main(int argc, char **argv, pk_testcluster_load_fn load);

#endif
