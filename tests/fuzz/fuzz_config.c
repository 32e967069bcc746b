/*
 * Fuzz the YAML config loader: arbitrary bytes through
 * pk_config_load_yaml_buf, with and without env expansion, over a table with
 * nested keys, every option type and a list of mappings with its own nested
 * keys and list. Every outcome must leave a config pk_config_free can free.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "config.h"

struct route {
	char *path;
	struct pk_strlist methods;
};

struct upstream {
	char *url;
	int64_t weight;
	int tls;
	double ratio;
	int64_t timeout;
	struct pk_list routes;
};

struct fcfg {
	char *name;
	int debug;
	int64_t port;
	double ratio;
	int64_t timeout;
	char *bind;
	struct pk_strlist subsystems;
	struct pk_list upstreams;
};

static const struct pk_opt route_opts[] = {
    {"path", PK_OPT_STRING, offsetof(struct route, path), "/", "", 0, NULL, 0},
    {"match.methods", PK_OPT_STRLIST, offsetof(struct route, methods), "GET", "", 0, NULL, 0},
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

static const struct pk_opt upstream_opts[] = {
    {"url", PK_OPT_STRING, offsetof(struct upstream, url), "http://x", "", 0, NULL, 0},
    {"weight", PK_OPT_INT, offsetof(struct upstream, weight), "1", "", 0, NULL, 0},
    {"tls.enabled", PK_OPT_BOOL, offsetof(struct upstream, tls), "false", "", 0, NULL, 0},
    {"tls.ratio", PK_OPT_FLOAT, offsetof(struct upstream, ratio), "0.5", "", 0, NULL, 0},
    {"timeout", PK_OPT_DURATION, offsetof(struct upstream, timeout), "5s", "", 0, NULL, 0},
    {"routes", PK_OPT_LIST, offsetof(struct upstream, routes), NULL, "", 1, route_opts,
     sizeof(struct route)},
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

static const struct pk_opt opts[] = {
    {"name", PK_OPT_STRING, offsetof(struct fcfg, name), "piko", "", 0, NULL, 0},
    {"debug", PK_OPT_BOOL, offsetof(struct fcfg, debug), "false", "", 0, NULL, 0},
    {"proxy.port", PK_OPT_INT, offsetof(struct fcfg, port), "8000", "", 0, NULL, 0},
    {"proxy.ratio", PK_OPT_FLOAT, offsetof(struct fcfg, ratio), "0.5", "", 0, NULL, 0},
    {"proxy.http.read_timeout", PK_OPT_DURATION, offsetof(struct fcfg, timeout), "30s", "", 0, NULL,
     0},
    {"proxy.bind_addr", PK_OPT_STRING, offsetof(struct fcfg, bind), NULL, "", 0, NULL, 0},
    {"log.subsystems", PK_OPT_STRLIST, offsetof(struct fcfg, subsystems), "a,b", "", 0, NULL, 0},
    {"upstreams", PK_OPT_LIST, offsetof(struct fcfg, upstreams), NULL, "", 1, upstream_opts,
     sizeof(struct upstream)},
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	for (int expand = 0; expand < 2; expand++) {
		struct fcfg c;
		if (pk_config_defaults(opts, &c, err, sizeof(err)) != 0)
			abort(); /* the table's defaults are valid */
		pk_config_load_yaml_buf(opts, &c, (const char *)data, size, expand, err,
		                        sizeof(err));
		pk_config_free(opts, &c);
	}
	return 0;
}
