/*
 * Fuzz both sides of the WebSocket upgrade (core/ws_upgrade.c): the input is
 * fed as a server's answer to our request (in pieces whose size the first
 * byte picks, then EOF, and a refusal's `error` read from its body), and as
 * a client's request whose head goes to the server's checks
 * (pk_ws_upgrade_answer), as the upstream port and the node links read it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"
#include "ws_upgrade.h"

static void answer(const uint8_t *data, size_t size)
{
	struct pk_ws_upgrade u;
	char *req = pk_ws_upgrade_start(&u, "::1", 8080, "/piko/v1/upstream/e", "X-A: b\r\n");
	free(req);
	size_t piece = size ? (size_t)data[0] % 64 + 1 : 1;
	size_t off = 0;
	enum pk_ws_upgrade_result r = PK_WS_UPGRADE_MORE;
	while (off < size && r == PK_WS_UPGRADE_MORE) {
		size_t n = size - off < piece ? size - off : piece;
		size_t used = 0;
		r = pk_ws_upgrade_feed(&u, data + off, n, &used);
		if (used > n)
			abort(); /* consumed more than it was given */
		off += used;
		if (r == PK_WS_UPGRADE_MORE && used < n)
			abort(); /* MORE means every byte was taken */
	}
	if (r == PK_WS_UPGRADE_MORE)
		r = pk_ws_upgrade_eof(&u);
	char err[256];
	if (r == PK_WS_UPGRADE_REFUSED)
		pk_ws_upgrade_error(&u, err, sizeof(err));
	pk_ws_upgrade_free(&u);
}

static void request(const uint8_t *data, size_t size)
{
	struct pk_http1_reader rd;
	pk_http1_reader_init(&rd, PK_HTTP1_REQUEST, 64 * 1024);
	size_t used = 0;
	if (pk_http1_reader_feed(&rd, (const char *)data, size, &used) == PK_HTTP1_HEAD) {
		char *resp = NULL;
		size_t len = 0;
		pk_ws_upgrade_answer(pk_http1_reader_head(&rd), &resp, &len);
		if (!resp || len == 0 || memcmp(resp, "HTTP/1.1 ", 9) != 0)
			abort(); /* every verdict comes with an answer */
		free(resp);
	}
	pk_http1_reader_free(&rd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	answer(data, size);
	request(data, size);
	return 0;
}
