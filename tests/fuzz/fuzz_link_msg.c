/*
 * libFuzzer harness for dataplane/link_msg.c.
 *
 * Input: raw bytes of a node link's control stream, decoded message after
 * message (as link.c does) until decode asks for more (0) or refuses (-1).
 * Each message decoded is checked against the header's promises (a known
 * type, a hello with a non-empty id, endpoint names non-empty and at most
 * PK_LINK_MAX_ID bytes, counts in 0..INT32_MAX, at most
 * PK_LINK_MAX_ENDPOINTS of them), then encoded again with the encoders and
 * decoded: the copy must decode to the same message. Every message is
 * cleared, so ASan's leak check covers pk_link_msg_clear.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "link_msg.h"

static int same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

/* NULL is encoded as "" by the hello encoder. */
static const char *or_empty(const char *s)
{
	return s ? s : "";
}

static void check_msg(const struct pk_link_msg *m)
{
	switch (m->type) {
	case PK_LINK_HELLO:
		if (!m->id || !*m->id || strlen(m->id) > PK_LINK_MAX_ID || m->eps)
			abort();
		break;
	case PK_LINK_ENDPOINTS:
		if (!m->eps || m->n_eps > PK_LINK_MAX_ENDPOINTS || m->id)
			abort();
		for (size_t i = 0; i < m->n_eps; i++) {
			const struct pk_link_ep *e = &m->eps[i];
			size_t kl = strlen(e->endpoint);
			if (kl == 0 || kl > PK_LINK_MAX_ID || e->count < 0 || e->count > INT32_MAX)
				abort();
		}
		break;
	case PK_LINK_RESYNC:
	case PK_LINK_LEAVING:
		if (m->id || m->eps || m->n_eps)
			abort();
		break;
	default:
		abort();
	}
}

/* Encode m again and decode the copy: it must be the same message. */
static void round_trip(const struct pk_link_msg *m)
{
	struct pk_bufq q;
	pk_bufq_init(&q, PK_LINK_MSG_MAX);
	switch (m->type) {
	case PK_LINK_HELLO:
		pk_link_msg_hello(&q, m->id, m->proxy_addr, m->admin_addr, m->cluster_addr,
		                  m->proof);
		break;
	case PK_LINK_ENDPOINTS: {
		struct pk_link_eps_writer *w = pk_link_eps_begin(m->full, m->version, m->base);
		for (size_t i = 0; i < m->n_eps; i++)
			pk_link_eps_add(w, m->eps[i].endpoint, m->eps[i].count);
		pk_link_eps_end(w, &q);
		break;
	}
	default:
		pk_link_msg_simple(&q, m->type);
		break;
	}
	size_t len = q.len;
	uint8_t *b = malloc(len);
	if (!b || pk_bufq_copy(&q, b, len) != len)
		abort();
	pk_bufq_clear(&q);

	struct pk_link_msg c;
	char err[128];
	if (pk_link_msg_decode(b, len, &c, err, sizeof(err)) != (ssize_t)len || c.type != m->type)
		abort();
	switch (m->type) {
	case PK_LINK_HELLO:
		if (!same_str(c.id, m->id) || !same_str(c.proxy_addr, or_empty(m->proxy_addr)) ||
		    !same_str(c.admin_addr, or_empty(m->admin_addr)) ||
		    !same_str(c.cluster_addr, or_empty(m->cluster_addr)) ||
		    !same_str(c.proof, m->proof))
			abort();
		break;
	case PK_LINK_ENDPOINTS:
		/* Names are unique (JSON object keys), so same order, same
		 * entries. */
		if (!c.full != !m->full || c.version != m->version || c.base != m->base ||
		    c.n_eps != m->n_eps)
			abort();
		for (size_t i = 0; i < m->n_eps; i++)
			if (strcmp(c.eps[i].endpoint, m->eps[i].endpoint) ||
			    c.eps[i].count != m->eps[i].count)
				abort();
		break;
	default:
		break;
	}
	pk_link_msg_clear(&c);
	free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	for (;;) {
		struct pk_link_msg m;
		char err[128] = "";
		ssize_t n = pk_link_msg_decode(data + off, size - off, &m, err, sizeof(err));
		if (n == 0 || n == -1) {
			/* Nothing is held on either, and a refusal says why. */
			if (m.id || m.proxy_addr || m.proof || m.eps || m.n_eps ||
			    (n == -1 && !err[0]))
				abort();
			break;
		}
		if (n < 4 || (size_t)n > size - off)
			abort();
		check_msg(&m);
		round_trip(&m);
		pk_link_msg_clear(&m);
		off += (size_t)n;
	}
	pk_buf_freelist_release();
	return 0;
}
