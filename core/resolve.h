/*
 * pk_resolver: DNS lookups off the event loop.
 *
 * The data plane runs one lws service thread that must never block, and
 * getaddrinfo() blocks for as long as DNS takes. So lookups run on ONE worker
 * thread (getaddrinfo, so /etc/hosts and nsswitch are honoured exactly as for
 * every other program), and their results are queued back to the loop thread,
 * which runs the callbacks from pk_resolver_dispatch(). Callbacks therefore
 * run on the loop thread and may touch loop state freely.
 *
 * Every queue is capped: at most PK_RESOLVE_MAX_QUERIES queries are
 * outstanding at once (waiting, being resolved, or resolved but not yet
 * dispatched), and a result keeps at most PK_RESOLVE_MAX_ADDRS addresses.
 *
 * Threading: pk_resolver_query, _cancel, _dispatch and _free are meant for one
 * owner thread (the loop); they lock internally, so the worker never races
 * them. Allocation failure aborts (pk_xmalloc).
 */
#ifndef PK_RESOLVE_H
#define PK_RESOLVE_H

#include <stddef.h>
#include <stdint.h>

/* Outstanding queries at most; pk_resolver_query returns 0 beyond this. */
#define PK_RESOLVE_MAX_QUERIES 256
/* Addresses kept per result; the rest are dropped (a name with more records
 * than this is not a reason to allocate without bound). */
#define PK_RESOLVE_MAX_ADDRS 64

struct pk_resolver;

/* Start a resolver and its worker thread. wake(wake_arg) is called from the
 * worker thread after a result is queued, so that the loop thread wakes up
 * and dispatches (e.g. a function calling lws_cancel_service(ctx)); it must be
 * thread-safe and must not call into the resolver. wake may be NULL, and the
 * owner then polls pk_resolver_dispatch(). wake_arg must stay valid until
 * pk_resolver_free() returns.
 * Returns NULL only when the thread cannot be created. Owner: the caller,
 * who frees it with pk_resolver_free(). */
struct pk_resolver *pk_resolver_new(void (*wake)(void *arg), void *wake_arg);

/* Stop the worker and join it, then free everything. Pending and undispatched
 * queries are dropped without their callbacks. Waits for the one lookup in
 * progress, if any, to return (bounded by the resolver's own timeouts, see
 * resolv.conf). NULL is accepted and ignored. Not from a callback. */
void pk_resolver_free(struct pk_resolver *r);

struct pk_resolve_result {
	size_t n;
	/* n numeric host strings, "10.0.0.5" or "::1" (no brackets; a link-local
	 * IPv6 address keeps its "%scope"). Owned by the resolver, valid only
	 * during the callback. */
	char (*addrs)[64];
};

/* Queue a lookup of host: a name or an IP literal, with "[v6]" brackets
 * accepted and stripped. host must not be NULL; it is copied.
 * cb(user, res, err) runs later, from pk_resolver_dispatch(), on the thread
 * that calls it: with err NULL and res holding the unique addresses (A and
 * AAAA, in the order getaddrinfo returned them, duplicates removed; n may be
 * 0 for a name with no address), or with err set (gai_strerror text, valid
 * only during the call) and res NULL. cb may queue and cancel queries, but
 * must not free the resolver. user is passed through untouched and stays owned
 * by the caller.
 * Returns the query id (> 0), or 0 when PK_RESOLVE_MAX_QUERIES are already
 * outstanding (nothing is queued; cb will not be called). */
uint64_t pk_resolver_query(struct pk_resolver *r, const char *host,
                           void (*cb)(void *user, const struct pk_resolve_result *res,
                                      const char *err),
                           void *user);

/* Forget query id: its cb will not be called (whether the lookup is waiting,
 * running or done). Unknown, finished or 0 ids are ignored, so the owner may
 * cancel unconditionally on teardown. */
void pk_resolver_cancel(struct pk_resolver *r, uint64_t id);

/* Run the callbacks of the lookups that finished, in completion order, from
 * the calling thread (the loop: on every tick and on
 * LWS_CALLBACK_EVENT_WAIT_CANCELLED). Results that arrive while it runs are
 * left for the next call, so one call is bounded. Returns how many ran. */
size_t pk_resolver_dispatch(struct pk_resolver *r);

#endif
