/*
 * Listening sockets. See listen.h.
 */
#include "listen.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024

/* "host:port", ":port", "[v6]:port"; port 0 asks the kernel for one. */
static int split_listen_addr(const char *addr, char *host, size_t hlen, int *port)
{
	const char *colon;
	size_t n;
	if (!addr)
		return -1;
	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');
		if (!end || end[1] != ':')
			return -1;
		n = (size_t)(end - addr - 1);
		if (n + 1 > hlen)
			return -1;
		memcpy(host, addr + 1, n);
		host[n] = '\0';
		colon = end + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return -1;
		n = (size_t)(colon - addr);
		if (n + 1 > hlen)
			return -1;
		memcpy(host, addr, n);
		host[n] = '\0';
	}
	char *end;
	errno = 0;
	long p = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || errno || p < 0 || p > 65535)
		return -1;
	*port = (int)p;
	return 0;
}

/* reuseport: SO_REUSEPORT; -1: bind only, no listen (a probe). */
static int listen_on(const struct sockaddr *sa, socklen_t len, int dual_stack, int reuseport,
                     int *err)
{
	int one = 1, zero = 0;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		*err = errno;
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    (reuseport > 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1) ||
	    (dual_stack && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) == -1) ||
	    bind(fd, sa, len) == -1 || (reuseport >= 0 && listen(fd, LISTEN_BACKLOG) == -1)) {
		*err = errno;
		close(fd);
		return -1;
	}
	return fd;
}

static int bound_port_or(int fd, int port)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	memset(&ss, 0, sizeof(ss)); /* the analyzer does not see getsockname() fill it */
	const struct sockaddr_in *sin = (const void *)&ss;
	const struct sockaddr_in6 *sin6 = (const void *)&ss;
	if (getsockname(fd, (void *)&ss, &sl) == 0)
		port = ntohs(ss.ss_family == AF_INET6 ? sin6->sin6_port : sin->sin_port);
	return port;
}

/* port_override >= 0 replaces the address's port (the group's later
 * members bind the port the first one got). */
static int listen_addr(const char *addr, int reuseport, int port_override, int *bound_port,
                       char *err, size_t errlen)
{
	char host[256], portstr[16];
	int port, fd = -1, e = 0;
	if (split_listen_addr(addr, host, sizeof(host), &port) < 0) {
		snprintf(err, errlen, "invalid listen address \"%s\"", addr ? addr : "");
		return -1;
	}
	if (port_override >= 0)
		port = port_override;
	if (!host[0]) {
		/* Every interface: one dual-stack socket, or IPv4 without IPv6. */
		struct sockaddr_in6 a6;
		memset(&a6, 0, sizeof(a6));
		a6.sin6_family = AF_INET6;
		a6.sin6_port = htons((uint16_t)port);
		a6.sin6_addr = in6addr_any;
		fd = listen_on((const void *)&a6, sizeof(a6), 1, reuseport, &e);
		if (fd == -1) {
			struct sockaddr_in a4;
			memset(&a4, 0, sizeof(a4));
			a4.sin_family = AF_INET;
			a4.sin_port = htons((uint16_t)port);
			a4.sin_addr.s_addr = htonl(INADDR_ANY);
			fd = listen_on((const void *)&a4, sizeof(a4), 0, reuseport, &e);
		}
	} else {
		/* "localhost" is the IPv4 loopback, as for the other ports. */
		if (!strcmp(host, "localhost"))
			snprintf(host, sizeof(host), "127.0.0.1");
		struct addrinfo hints, *res = NULL;
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
		snprintf(portstr, sizeof(portstr), "%d", port);
		int rc = getaddrinfo(host, portstr, &hints, &res);
		if (rc != 0) {
			snprintf(err, errlen, "listen %s: %s", addr, gai_strerror(rc));
			return -1;
		}
		for (struct addrinfo *ai = res; ai && fd == -1; ai = ai->ai_next)
			fd = listen_on(ai->ai_addr, ai->ai_addrlen, 0, reuseport, &e);
		freeaddrinfo(res);
	}
	if (fd == -1) {
		snprintf(err, errlen, "listen %s: %s", addr, strerror(e));
		return -1;
	}
	*bound_port = bound_port_or(fd, port);
	return fd;
}

int pk_sock_listen_fd(const char *addr, int *bound_port, char *err, size_t errlen)
{
	return listen_addr(addr, 0, -1, bound_port, err, errlen);
}

int pk_sock_listen_again(const char *addr, int port, int reuseport, char *err, size_t errlen)
{
	int bound;
	return listen_addr(addr, reuseport ? 1 : 0, port, &bound, err, errlen);
}

int pk_sock_listen_is_listening(int fd)
{
	int on = 0;
	socklen_t l = sizeof(on);
	return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &l) == 0 && on;
}

int pk_sock_listen_port_of(int fd)
{
	return bound_port_or(fd, -1);
}

int pk_sock_listen_group(const char *addr, size_t n, int *fds, int *bound_port, char *err,
                         size_t errlen)
{
	/* SO_REUSEPORT would join any group of this user already on the
	 * port (another server, or this one's other port on the same
	 * address): a plain bind first fails as a single node's would, and
	 * tells port 0's pick. (Bind only: a listening probe could take a
	 * client's connection and reset it.) Linux cannot make a group
	 * exclusive: two servers started at the same instant can still both
	 * pass, and port 0's pick can be taken before the group binds it. */
	int probe = listen_addr(addr, -1, -1, bound_port, err, errlen);
	if (probe == -1)
		return -1;
	close(probe);
	for (size_t i = 0; i < n; i++) {
		fds[i] = listen_addr(addr, 1, *bound_port, bound_port, err, errlen);
		if (fds[i] == -1) {
			while (i--)
				close(fds[i]);
			return -1;
		}
	}
	return 0;
}
