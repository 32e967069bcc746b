/*
 * Listening sockets (core/listen.c): a SO_REUSEPORT group shares one port
 * (port 0 picked once) and the kernel gives each member connections; a
 * port in use, even by another group, fails the group whole.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "listen.h"

static int dial(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (void *)&a, sizeof(a)), 0);
	return fd;
}

static void test_group_shares_a_port(void **state)
{
	(void)state;
	int fds[4], port = -1;
	char err[256];
	assert_int_equal(pk_sock_listen_group("127.0.0.1:0", 4, fds, &port, err, sizeof(err)), 0);
	assert_true(port > 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pk_sock_listen_port_of(fds[i]), port);
	/* The kernel spreads connections over the members: 64 dials reach
	 * more than one of them (all on one member: 4^-63). */
	int clients[64], seen[4] = {0};
	for (int i = 0; i < 64; i++)
		clients[i] = dial(port);
	for (int i = 0; i < 4; i++) {
		struct pollfd p = {.fd = fds[i], .events = POLLIN};
		while (poll(&p, 1, 100) == 1) {
			int c = accept(fds[i], NULL, NULL);
			if (c < 0)
				break;
			seen[i]++;
			close(c);
		}
	}
	int members = 0, total = 0;
	for (int i = 0; i < 4; i++) {
		members += seen[i] > 0;
		total += seen[i];
	}
	assert_int_equal(total, 64);
	assert_true(members > 1);
	for (int i = 0; i < 64; i++)
		close(clients[i]);
	for (int i = 0; i < 4; i++)
		close(fds[i]);
}

static void test_group_fails_whole(void **state)
{
	(void)state;
	/* A port held without SO_REUSEPORT: the group cannot join it, and
	 * nothing stays open. */
	int port, fds[2];
	char err[256];
	int held = pk_sock_listen_fd("127.0.0.1:0", &port, err, sizeof(err));
	assert_true(held >= 0);
	char addr[32];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	int got;
	assert_int_equal(pk_sock_listen_group(addr, 2, fds, &got, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "Address already in use"));
	close(held);
}

static void test_a_second_group_does_not_join_the_first(void **state)
{
	(void)state;
	/* Both with SO_REUSEPORT and one user, the kernel would let them
	 * share the port: another server on it, or the proxy and upstream
	 * ports given one address, must fail as a single node does. */
	int first[2], second[2], port, got;
	char err[256], addr[32];
	assert_int_equal(pk_sock_listen_group("127.0.0.1:0", 2, first, &port, err, sizeof(err)), 0);
	assert_int_equal(pk_sock_listen_port_of(first[1]), port);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	assert_int_equal(pk_sock_listen_group(addr, 2, second, &got, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "Address already in use"));
	close(first[0]);
	close(first[1]);
}

static void test_a_shut_member_is_replaced(void **state)
{
	(void)state;
	/* A worker's drain shuts its socket down for every holder (the
	 * supervisor's copy included): it leaves the group, and a new member
	 * on the same port takes its place. */
	int fds[2], port;
	char err[256], addr[32];
	assert_int_equal(pk_sock_listen_group("127.0.0.1:0", 2, fds, &port, err, sizeof(err)), 0);
	int copy = dup(fds[1]);
	assert_true(pk_sock_listen_is_listening(copy));
	assert_int_equal(shutdown(fds[1], SHUT_RD), 0);
	close(fds[1]);
	assert_false(pk_sock_listen_is_listening(copy));
	close(copy);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	fds[1] = pk_sock_listen_again(addr, port, 1, err, sizeof(err));
	assert_true(fds[1] >= 0);
	assert_int_equal(pk_sock_listen_port_of(fds[1]), port);
	assert_true(pk_sock_listen_is_listening(fds[1]));
	close(fds[0]);
	close(fds[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_group_shares_a_port),
	    cmocka_unit_test(test_group_fails_whole),
	    cmocka_unit_test(test_a_second_group_does_not_join_the_first),
	    cmocka_unit_test(test_a_shut_member_is_replaced),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
