/*
 * Configuration: one option table per command gives both the command-line
 * flags and the YAML keys, so the two can never drift apart.
 *
 * A table entry names a YAML path ("proxy.http.read_timeout"); its flag is the
 * same path with '_' turned into '-' ("--proxy.http.read-timeout"), which is
 * exactly how Piko names them. Values are parsed from text by one parser per
 * type, used for defaults, flags and YAML scalars alike.
 *
 * Precedence: defaults, then the YAML file (--config.path), then flags. (Piko
 * lets YAML override flags, protocol reference §10.3 item 3; we take the order
 * users expect from every other tool.)
 *
 * Errors are reported as text in err (without the "config: " prefix, which
 * the command adds before exiting 1).
 */
#ifndef PK_CONFIG_H
#define PK_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum pk_opt_type {
	PK_OPT_STRING = 1, /* char * (owned by the config, pk_config_free frees it) */
	PK_OPT_BOOL,       /* int: true/false (flag alone means true) */
	PK_OPT_INT,        /* int64_t */
	PK_OPT_FLOAT,      /* double */
	PK_OPT_DURATION,   /* int64_t milliseconds; Go syntax: 300ms, 1.5s, 2m, 1h30m */
	PK_OPT_STRLIST,    /* struct pk_strlist; flag value is a comma list, YAML a sequence */
	PK_OPT_LIST,       /* YAML only: a sequence of mappings described by .sub */
};

struct pk_strlist {
	char **v;
	size_t n;
};

struct pk_opt {
	const char *key; /* YAML path, dot separated */
	enum pk_opt_type type;
	size_t offset;    /* offsetof the field in the config struct */
	const char *def;  /* default as text, or NULL */
	const char *help; /* one line for --help */
	int yaml_only;    /* 1: no command-line flag */
	/* PK_OPT_LIST only: elements are structs of elem_size bytes, described by
	 * the sub table (keys relative to the element); the field at offset is a
	 * struct pk_list. */
	const struct pk_opt *sub;
	size_t elem_size;
};

struct pk_list {
	void *v; /* array of n elements of elem_size bytes */
	size_t n;
};

/* A table ends with an entry whose key is NULL. */

/* Apply every default in the table (and zero what has none). Returns 0 or -1. */
int pk_config_defaults(const struct pk_opt *opts, void *cfg, char *err, size_t errlen);

/* Parse command-line arguments (argv holds only the arguments, no program
 * or command name). Accepts "--name value", "--name=value" and,
 * for booleans, "--name". Arguments that do not start with "--" are
 * positional: pointers to them are stored in pos (up to pos_cap) and their
 * count in *npos. "--config.path" and "--config.expand-env" are always
 * accepted and stored in *config_path / *expand_env (either may be NULL to
 * refuse them). An unknown flag is an error: "unknown flag: --x". */
int pk_config_parse_flags(const struct pk_opt *opts, void *cfg, int argc, char **argv, char **pos,
                          size_t pos_cap, size_t *npos, const char **config_path, int *expand_env,
                          char *err, size_t errlen);

/* Load a YAML file (at most 1 MiB) into cfg. Unknown keys are errors naming
 * the full path ("unknown key: proxy.foo"); a wrong type names the key too.
 * With expand_env the file text is expanded by pk_config_expand_env() before
 * parsing. */
int pk_config_load_yaml(const struct pk_opt *opts, void *cfg, const char *path, int expand_env,
                        char *err, size_t errlen);
/* Same, from memory (for tests and fuzzing). */
int pk_config_load_yaml_buf(const struct pk_opt *opts, void *cfg, const char *text, size_t len,
                            int expand_env, char *err, size_t errlen);

/* Expand $VAR, ${VAR} and ${VAR:default} (default used when VAR is unset or
 * empty), Go os.Expand style: undefined variables become "". Returns a new
 * string owned by the caller, or NULL if it would exceed 4 MiB. */
char *pk_config_expand_env(const char *in);

/* Parse a Go duration ("300ms", "1.5s", "2m", "1h30m", "0"); result in ms,
 * rounded down. Returns 0 or -1. */
int pk_parse_duration(const char *s, int64_t *ms);
/* The same in nanoseconds, exactly as Go's time.ParseDuration. */
int pk_parse_duration_ns(const char *s, int64_t *ns);

/* Free strings and lists owned by cfg. */
void pk_config_free(const struct pk_opt *opts, void *cfg);

/* Free what one option of cfg owns (e.g. a list, before replacing it) and
 * leave it empty. */
void pk_config_free_key(const struct pk_opt *opts, void *cfg, const char *key);

/* Print the flags of a table, one per line, for --help. */
void pk_config_print_help(const struct pk_opt *opts, FILE *out);

#endif
