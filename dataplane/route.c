/*
 * Endpoint ID derivation, mirroring Piko's Go code: the proxy port reads
 * x-piko-endpoint or the Host header (net.SplitHostPort, net.ParseIP), the
 * upstream port matches its router pattern on the percent-decoded path (gin
 * routes on URL.Path, which Go's URL parser has already unescaped).
 */
#include "route.h"

#include <arpa/inet.h>
#include <string.h>

static int copy_out(const char *s, size_t n, char *out, size_t cap)
{
	if (n == 0 || cap == 0 || n > cap - 1)
		return -1;
	memcpy(out, s, n);
	out[n] = '\0';
	return 0;
}

/* Go's net.SplitHostPort: on success *host and *hlen give the host part
 * (without brackets) and 0 is returned; -1 when Go would return an error. */
static int split_host_port(const char *hp, size_t len, const char **host, size_t *hlen)
{
	const char *colon = NULL;
	for (size_t i = len; i > 0; i--) {
		if (hp[i - 1] == ':') {
			colon = hp + i - 1;
			break;
		}
	}
	if (!colon)
		return -1; /* missing port */
	size_t i = (size_t)(colon - hp);
	size_t j = 0, k = 0;
	if (hp[0] == '[') {
		const char *end = memchr(hp, ']', len);
		if (!end)
			return -1;
		size_t e = (size_t)(end - hp);
		if (e + 1 != i)
			return -1; /* missing port, or too many colons */
		*host = hp + 1;
		*hlen = e - 1;
		j = 1;
		k = e + 1;
	} else {
		if (memchr(hp, ':', i))
			return -1; /* too many colons */
		*host = hp;
		*hlen = i;
	}
	if (memchr(hp + j, '[', len - j) || memchr(hp + k, ']', len - k))
		return -1;
	return 0;
}

/* Go's net.ParseIP != nil. inet_pton agrees with Go on what it accepts for
 * both families (dotted quads without leading zeros, RFC 4291 text forms, no
 * zones), which is all ParseIP takes. */
static int is_ip_literal(const char *s, size_t n)
{
	char buf[64];
	unsigned char addr[16];
	if (n >= sizeof(buf)) /* longer than any IPv6 text form */
		return 0;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(AF_INET, buf, addr) == 1 || inet_pton(AF_INET6, buf, addr) == 1;
}

int pk_route_endpoint_id(const char *x_piko_endpoint, const char *host, char *out, size_t cap)
{
	if (x_piko_endpoint && x_piko_endpoint[0] != '\0')
		return copy_out(x_piko_endpoint, strlen(x_piko_endpoint), out, cap);
	if (!host)
		return -1;
	size_t len = strlen(host);
	const char *h;
	size_t hlen;
	if (split_host_port(host, len, &h, &hlen) == -1) {
		h = host;
		hlen = len;
	}
	if (hlen == 0 || is_ip_literal(h, hlen))
		return -1;
	const char *dot = memchr(h, '.', hlen);
	if (!dot)
		return -1;
	/* ".example.com" gives "", which Piko treats as no endpoint. */
	return copy_out(h, (size_t)(dot - h), out, cap);
}

static int unhex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int pk_route_upstream_path(const char *url, char *out, size_t cap)
{
	static const char prefix[] = "/piko/v1/upstream/";
	const size_t plen = sizeof(prefix) - 1;
	if (!url || cap == 0)
		return -1;
	const char *path = url;
	/* Absolute-form request-target: Go routes on its path. */
	if (path[0] != '/') {
		const char *sep = strstr(path, "://");
		if (!sep)
			return -1;
		path = strchr(sep + 3, '/');
		if (!path)
			return -1;
	}
	size_t len = strcspn(path, "?");
	/* Decode as we go: the first plen decoded bytes must be the prefix (Go
	 * decodes the whole path before the router sees it, so even an escaped
	 * prefix matches), the rest is the ID. */
	size_t pos = 0, n = 0;
	for (size_t i = 0; i < len; i++) {
		char c = path[i];
		if (c == '%') {
			int hi = i + 2 < len ? unhex(path[i + 1]) : -1;
			int lo = hi >= 0 ? unhex(path[i + 2]) : -1;
			if (lo < 0)
				return -1; /* Go rejects the URL: 400 */
			c = (char)(hi << 4 | lo);
			i += 2;
		}
		if (pos < plen) {
			if (c != prefix[pos++])
				return -1;
			continue;
		}
		if (c == '/' || c == '\0')
			return -1; /* a second segment, or an ID C cannot hold */
		if (n + 1 >= cap)
			return -1;
		out[n++] = c;
	}
	if (pos < plen || n == 0)
		return -1;
	out[n] = '\0';
	return 0;
}
