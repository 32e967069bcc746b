/*
 * Leader election over a coordination.k8s.io/v1 Lease: the state machine only.
 * No I/O and no clocks of its own: the caller GETs the Lease, feeds the result
 * to pk_lease_observe(), sends the body it gets back (POST or PUT), reports the
 * outcome with pk_lease_write_result(), and passes in its monotonic now_ms and
 * the wall-clock MicroTime strings written into the Lease.
 *
 * It follows client-go's leaderelection: another holder's Lease is expired when
 * WE have seen its metadata.resourceVersion stay the same for the lease
 * duration on OUR monotonic clock. renewTime is never compared with our wall
 * clock, so skew between nodes cannot cause two leaders. As in client-go, the
 * duration used is the one the holder wrote (spec.leaseDurationSeconds), and
 * opts.duration_ms when the Lease does not say.
 *
 * Leadership: pk_lease_is_leader() is true from a successful create, takeover
 * or renew. A failed renew (409 or otherwise: the write result does not tell
 * them apart) drops it until the next observe, which gives it back if the
 * Lease still names us and the renew deadline has not passed; a GET showing
 * another holder or no Lease drops it too. pk_lease_lost() turns true once no
 * renew has succeeded for renew_deadline_ms; the caller must then stop
 * reconciling and exit(1), as controller-runtime does. renew_deadline_ms must
 * be below duration_ms so we stop before anyone may take over.
 */
#ifndef PK_LEASE_H
#define PK_LEASE_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pk_lease_opts {
	const char *name, *namespace, *identity;
	uint64_t duration_ms;       /* 15000 */
	uint64_t renew_deadline_ms; /* 10000 */
	uint64_t retry_ms;          /* 2000 */
};

enum pk_lease_action {
	PK_LEASE_NONE = 0,
	PK_LEASE_CREATE,   /* POST .../namespaces/NS/leases */
	PK_LEASE_RENEW,    /* PUT .../leases/NAME, we hold it */
	PK_LEASE_TAKEOVER, /* PUT .../leases/NAME, expired or empty holder */
};

struct pk_lease;

/* Owner: the caller (pk_lease_free). Copies the opts strings. Zero durations
 * take the defaults above. */
struct pk_lease *pk_lease_new(const struct pk_lease_opts *o, uint64_t now_ms);

/* Feed the result of a GET: lease is the Lease JSON (not kept, not modified),
 * or NULL for 404. Returns what to do now. When not NONE, *body is a new
 * string owned by the caller: for CREATE a full Lease object, for
 * RENEW/TAKEOVER the observed object with spec updated and
 * metadata.resourceVersion kept (optimistic concurrency: a 409 means someone
 * wrote in between). When NONE, *body is set to NULL. wall_now is a MicroTime,
 * "2026-11-29T23:00:00.000000Z" (pk_lease_microtime). */
enum pk_lease_action pk_lease_observe(struct pk_lease *l, struct json_object *lease,
                                      uint64_t now_ms, const char *wall_now, char **body);

/* The outcome of the write for action a: ok = 2xx, with response the Lease
 * the server returned (or NULL; copied, not kept). !ok is a 409 or any other
 * failure; for a renew either one drops leadership until the next observe. */
void pk_lease_write_result(struct pk_lease *l, enum pk_lease_action a, bool ok,
                           struct json_object *response, uint64_t now_ms);

bool pk_lease_is_leader(const struct pk_lease *l);

/* True when we were leader and no renew has succeeded for renew_deadline_ms:
 * stop reconciling and exit(1). */
bool pk_lease_lost(const struct pk_lease *l, uint64_t now_ms);

/* ms until the next GET should be made: the retry period after the last
 * observe, or sooner when another holder's Lease would expire before that; 0
 * before the first observe. No jitter: add it in the caller if wanted. */
uint64_t pk_lease_next_ms(const struct pk_lease *l, uint64_t now_ms);

/* A PUT body that releases the Lease on shutdown: the last Lease we wrote with
 * spec.holderIdentity removed, leaseDurationSeconds 1 and renewTime wall_now,
 * resourceVersion kept; so a standby takes it at once. Owner: the caller.
 * NULL if we are not leader. We stop being leader from here on (and
 * pk_lease_lost() stays false), whether or not the PUT is sent. */
char *pk_lease_release_body(struct pk_lease *l, const char *wall_now);

/* Format unix time in microseconds as a Kubernetes MicroTime,
 * "2026-11-29T23:00:00.000000Z" (UTC, six fractional digits) into buf (at
 * least 28 bytes; truncated otherwise). Also used for Events. */
void pk_lease_microtime(int64_t unix_us, char *buf, size_t len);

void pk_lease_free(struct pk_lease *l);

#endif
