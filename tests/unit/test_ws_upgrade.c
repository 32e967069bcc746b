/*
 * The client's side of a WebSocket upgrade: the request's shape, a 101 with
 * the right and a wrong accept key, frames right after the 101, refusals
 * with a JSON error (Content-Length, chunked, body to the close), a
 * refusal without JSON, answers split byte by byte, and garbage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ws.h"
#include "ws_upgrade.h"
#include "wsconn.h"

/* The key the request carries, and the accept a server would answer. */
static void accept_for(const char *req, char out[29])
{
	const char *k = strstr(req, "Sec-WebSocket-Key: ");
	assert_non_null(k);
	char key[25];
	memcpy(key, k + strlen("Sec-WebSocket-Key: "), 24);
	key[24] = '\0';
	assert_int_equal(pk_ws_accept_key(key, out), 0);
}

/* Feed all of s at once (step 0) or step bytes at a time; returns the
 * verdict and the bytes consumed up to it. */
static enum pk_ws_upgrade_result feed(struct pk_ws_upgrade *u, const char *s, size_t step,
                                      size_t *consumed)
{
	size_t len = strlen(s), pos = 0;
	enum pk_ws_upgrade_result r = PK_WS_UPGRADE_MORE;
	while (pos < len) {
		size_t n = step && len - pos > step ? step : len - pos, used = 0;
		r = pk_ws_upgrade_feed(u, (const uint8_t *)s + pos, n, &used);
		assert_true(used <= n);
		pos += used;
		if (r != PK_WS_UPGRADE_MORE)
			break;
		assert_int_equal(used, n); /* MORE takes everything */
	}
	*consumed = pos;
	return r;
}

static void test_request(void **state)
{
	(void)state;
	struct pk_ws_upgrade u;
	char *req = pk_ws_upgrade_start(&u, "::1", 8001, "/base/piko/v1/upstream/a",
	                                "Authorization: Bearer t\r\n");
	assert_non_null(strstr(req, "GET /base/piko/v1/upstream/a HTTP/1.1\r\n"));
	assert_non_null(strstr(req, "\r\nHost: [::1]:8001\r\n"));
	assert_non_null(strstr(req, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"));
	assert_non_null(strstr(req, "\r\nSec-WebSocket-Version: 13\r\n"));
	assert_non_null(strstr(req, "\r\nAuthorization: Bearer t\r\n\r\n"));
	free(req);
	pk_ws_upgrade_free(&u);
	req = pk_ws_upgrade_start(&u, "example.com", 80, "/x", NULL);
	assert_non_null(strstr(req, "\r\nHost: example.com:80\r\n"));
	assert_int_equal(strcmp(req + strlen(req) - 4, "\r\n\r\n"), 0);
	free(req);
	pk_ws_upgrade_free(&u);
}

static void test_open(void **state)
{
	(void)state;
	for (size_t step = 0; step <= 1; step++) {
		struct pk_ws_upgrade u;
		char *req = pk_ws_upgrade_start(&u, "h", 1, "/", NULL);
		char acc[29], resp[256];
		accept_for(req, acc);
		snprintf(resp, sizeof(resp),
		         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
		         "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\nFRAMES",
		         acc);
		size_t used;
		assert_int_equal(feed(&u, resp, step, &used), PK_WS_UPGRADE_OPEN);
		/* The frames after the head are not consumed. */
		assert_int_equal(strlen(resp) - used, strlen("FRAMES"));
		free(req);
		pk_ws_upgrade_free(&u);
	}
}

static void test_wrong_accept(void **state)
{
	(void)state;
	struct pk_ws_upgrade u;
	char *req = pk_ws_upgrade_start(&u, "h", 1, "/", NULL);
	size_t used;
	assert_int_equal(feed(&u,
	                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	                      "Connection: Upgrade\r\n"
	                      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
	                      0, &used),
	                 PK_WS_UPGRADE_BAD);
	free(req);
	pk_ws_upgrade_free(&u);
}

static void refusal(const char *resp, size_t step, int eof, int status, const char *error)
{
	struct pk_ws_upgrade u;
	char *req = pk_ws_upgrade_start(&u, "h", 1, "/", NULL);
	size_t used;
	enum pk_ws_upgrade_result r = feed(&u, resp, step, &used);
	if (eof) {
		assert_int_equal(r, PK_WS_UPGRADE_MORE);
		r = pk_ws_upgrade_eof(&u);
	}
	assert_int_equal(r, PK_WS_UPGRADE_REFUSED);
	assert_int_equal(u.status, status);
	char e[256];
	pk_ws_upgrade_error(&u, e, sizeof(e));
	assert_string_equal(e, error);
	free(req);
	pk_ws_upgrade_free(&u);
}

static void test_refusals(void **state)
{
	(void)state;
	for (size_t step = 0; step <= 1; step++) {
		refusal("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
		        "Content-Length: 27\r\n\r\n{\"error\": \"invalid token\"}\n",
		        step, 0, 401, "invalid token");
		refusal("HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
		        "19\r\n{\"error\": \"no upstreams\"}\r\n0\r\n\r\n",
		        step, 0, 503, "no upstreams");
		/* A body that runs to the close. */
		refusal("HTTP/1.0 404 Not Found\r\n\r\n{\"error\": \"not found\"}", step, 1, 404,
		        "not found");
		/* No JSON: the status alone. */
		refusal("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 5\r\n\r\noops!", step, 0, 502,
		        "");
		refusal("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", step, 0, 400, "");
	}
}

static void test_garbage_and_cut(void **state)
{
	(void)state;
	struct pk_ws_upgrade u;
	char *req = pk_ws_upgrade_start(&u, "h", 1, "/", NULL);
	size_t used;
	assert_int_equal(feed(&u, "SSH-2.0-OpenSSH_9.2\r\n\r\n", 0, &used), PK_WS_UPGRADE_BAD);
	free(req);
	pk_ws_upgrade_free(&u);
	/* A head cut by the close is no refusal. */
	req = pk_ws_upgrade_start(&u, "h", 1, "/", NULL);
	assert_int_equal(feed(&u, "HTTP/1.1 401 Unauth", 0, &used), PK_WS_UPGRADE_MORE);
	assert_int_equal(pk_ws_upgrade_eof(&u), PK_WS_UPGRADE_BAD);
	free(req);
	pk_ws_upgrade_free(&u);
}

/* The path Piko's clients dial: unreserved bytes kept (Go's URL escaping
 * keeps them too), the rest %XX, the URL's own path in front as given. */
static void test_piko_upstream_path(void **state)
{
	(void)state;
	char out[256];
	pk_wsconn_piko_upstream_path("", "my-ep_1.x~", out, sizeof(out));
	assert_string_equal(out, "/piko/v1/upstream/my-ep_1.x~");
	pk_wsconn_piko_upstream_path("/base", "a b/c%", out, sizeof(out));
	assert_string_equal(out, "/base/piko/v1/upstream/a%20b%2Fc%25");
	pk_wsconn_piko_upstream_path("", "\xc3\xa9", out, sizeof(out));
	assert_string_equal(out, "/piko/v1/upstream/%C3%A9");
	pk_wsconn_piko_upstream_path("", "endpoint", out, 12); /* cut, NUL-terminated */
	assert_string_equal(out, "/piko/v1/up");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_request),         cmocka_unit_test(test_open),
	    cmocka_unit_test(test_wrong_accept),    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_garbage_and_cut), cmocka_unit_test(test_piko_upstream_path),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
