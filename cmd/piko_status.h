/*
 * `piko server status ...` (protocol reference §4.3): a small client of a
 * server's admin-port status API (§7.2) that prints what it answers as YAML.
 */
#ifndef PK_PIKO_STATUS_H
#define PK_PIKO_STATUS_H

#include <stddef.h>
#include <stdio.h>

#include "config.h"

/* How many positional arguments the loader below can return. */
#define PK_STATUS_POS_CAP 8

/* The binary's one configuration policy (defaults, YAML of --config.path,
 * flags; cmd/piko.c load_config), so that status reads its flags and file
 * exactly as every other command does. pos must hold PK_STATUS_POS_CAP
 * pointers; they point into argv. Returns 0, or -1 with err set. */
typedef int (*pk_status_load_fn)(const struct pk_opt *flag_opts, const struct pk_opt *yaml_opts,
                                 void *cfg, size_t cfg_size, int argc, char **argv, char **pos,
                                 size_t *npos, char *err, size_t errlen);

/* Run `piko server status` with the arguments after "status". Prints YAML on
 * stdout; errors on stderr. Returns the process exit code (0 or 1). */
int pk_status_main(int argc, char **argv, pk_status_load_fn load);

/* The one-line summary of the status commands, for `piko server --help`. */
void pk_status_summary(FILE *out);

#endif
