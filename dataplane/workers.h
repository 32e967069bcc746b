/*
 * `piko server --workers N` (docs/multicore.md): one supervisor process
 * binds every port once and forks N workers, each a whole server node
 * (server.c) on its own event loop.
 *
 *   ports      the proxy and upstream ports are groups of N sockets with
 *              SO_REUSEPORT: the kernel spreads new connections over the
 *              workers, no accept lock. The admin port is worker 0's; the
 *              others answer on loopback, for worker 0 to add their
 *              /metrics to its own (admin_metrics.c).
 *   routing    the workers are a cluster of their own over loopback node
 *              links (cluster.c): a request that lands on a worker without
 *              the endpoint's tunnel crosses a link to the one holding it.
 *   lifetime   a worker killed by a signal is started again on the same
 *              sockets (connections wait in its accept queue meanwhile);
 *              one that exits on its own (a config error) stops them all.
 *              SIGTERM and SIGINT are passed to every worker, which drains
 *              as a node does.
 */
#ifndef PK_WORKERS_H
#define PK_WORKERS_H

#include "server_config.h"

/* Run the server: in this process when cfg->workers is 1, else as the
 * supervisor of cfg->workers worker processes. Returns the exit code, in
 * the supervisor and in each worker (which returns from here into main). */
int pk_workers_run(struct pk_server_config *cfg);

#endif
