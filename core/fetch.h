/*
 * One bounded HTTP(S) GET with libcurl, for documents the server needs from
 * elsewhere (a remote JWK Set). Blocking: call it from a worker thread, never
 * from the event loop.
 */
#ifndef PK_FETCH_H
#define PK_FETCH_H

#include <stddef.h>
#include <stdint.h>

/* GET url within timeout_ms (0: 10 s). Succeeds only on a 200 with a body of
 * at most max_bytes. Returns 0 and a NUL-terminated body (owned by the
 * caller), or -1 with err set. */
int pk_fetch(const char *url, int64_t timeout_ms, size_t max_bytes, char **body, size_t *len,
             char *err, size_t errlen);

#endif
