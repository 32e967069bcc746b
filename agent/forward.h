/*
 * `piko forward`: maps local TCP ports to endpoints through the server's
 * proxy port (see forward.c).
 */
#ifndef PK_FORWARD_H
#define PK_FORWARD_H

#include <libwebsockets.h>

#include "agent_config.h"
#include "forward_config.h"

struct fwd_port;

struct pk_forward {
	const struct pk_forward_config *cfg;
	struct pk_server_url url;
	SSL_CTX *tls; /* https:// proxy URL: the client context, else NULL */
	struct lws_context *ctx;
	struct fwd_port *ports;
	size_t nports;
	lws_sorted_usec_list_t tick_sul;
};

/* Run until SIGTERM/SIGINT. Returns the exit status. */
int pk_forward_run(const struct pk_forward_config *cfg);

#endif
