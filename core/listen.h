/*
 * Listening TCP sockets from "host:port" strings, shared by every server
 * loop: the lws-driven listeners of core/sock.c and piko-controller's own
 * health server (which runs no lws loop).
 */
#ifndef PK_LISTEN_H
#define PK_LISTEN_H

#include <stddef.h>

/* A non-blocking, close-on-exec listening socket. addr: "host:port",
 * ":port" (every interface, dual-stack when IPv6 is there), "[v6]:port";
 * "localhost" means 127.0.0.1; port 0 picks one. Returns the fd (owned by
 * the caller) and the port bound, or -1 with err set. */
int pk_sock_listen_fd(const char *addr, int *bound_port, char *err, size_t errlen);

#endif
