/*
 * `piko forward` configuration (protocol reference §4.5): local ports, each
 * mapped to an endpoint, and the connection to the server's proxy port.
 */
#ifndef PK_FORWARD_CONFIG_H
#define PK_FORWARD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "tls_config.h"

struct pk_forward_port_config {
	char *addr;
	char *endpoint_id;
};

struct pk_forward_config {
	struct {
		char *url;
		char *token;
		int64_t timeout_ms;
		struct pk_tls_client_config tls;
	} connect;
	struct {
		char *level;
		struct pk_strlist subsystems;
	} log;
	struct pk_list ports; /* of struct pk_forward_port_config */
};

/* YAML keys and flags of `forward start` and `forward tcp`. */
extern const struct pk_opt pk_forward_opts[];

/* Free the ports list and empty it. */
void pk_forward_config_free_ports(struct pk_forward_config *cfg);

int pk_forward_config_validate(const struct pk_forward_config *cfg, char *err, size_t errlen);

/* A local listen address: "3000" means localhost:3000 (as Piko), else
 * host:port. Writes "host:port" into out. */
int pk_forward_listen_addr(const char *addr, char *out, size_t cap);

#endif
