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

/* n sockets on the same address and port with SO_REUSEPORT, so the kernel
 * spreads new connections over n processes (dataplane/workers.c), after a
 * plain bind of addr (without SO_REUSEPORT) has checked the port is free
 * and picked port 0's. Returns 0 with fds[]
 * filled (owned by the caller) and the port, or -1 with err set and none
 * open. */
int pk_sock_listen_group(const char *addr, size_t n, int *fds, int *bound_port, char *err,
                         size_t errlen);

/* addr's socket again, on port (what port 0 picked the first time), with
 * SO_REUSEPORT when reuseport (a new member of its group): for a worker
 * restarted after its sockets stopped listening. Returns the fd or -1. */
int pk_sock_listen_again(const char *addr, int port, int reuseport, char *err, size_t errlen);

/* Whether fd is still a listening socket (one another process shut down
 * is not). */
int pk_sock_listen_is_listening(int fd);

/* The port a listening socket is bound to, or -1. */
int pk_sock_listen_port_of(int fd);

#endif
