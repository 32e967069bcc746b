/*
 * pk_watch_parser: the body of a Kubernetes `GET ...?watch=1`.
 *
 * The body is a sequence of JSON objects
 *   {"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}
 * each ended by '\n' (the apiserver's JSON encoder never emits a raw newline
 * inside an event), delivered in arbitrary chunks: one feed may hold half an
 * event or many. The parser buffers only the unfinished last line, scans
 * every byte for '\n' once, parses each complete line with json_tokener and
 * hands the event to a callback. Lines of only spaces, tabs and '\r' are
 * skipped (so CRLF streams work too).
 *
 * Accepted: one JSON object per line with a "type" string among the five
 * above and an "object" member that is a JSON object (extra members are
 * ignored). Rejected, and the parser then stays failed: anything else on a
 * line (not JSON, not an object, trailing data after the object, a NUL byte,
 * missing or unknown type, missing or non-object "object"), a line longer
 * than max_event_bytes (bytes buffered without a newline count, so a stream
 * that never sends '\n' is cut off at the cap), and a stop from the
 * callback. After an error the caller drops the watch and relists.
 *
 * Ownership: pk_watch_parser_new() returns a parser the caller owns and
 * frees with pk_watch_parser_free(); it owns its line buffer and tokener.
 * Event objects are owned by the parser and live only during the callback.
 * Memory use is bounded by max_event_bytes plus json-c's tree of one event.
 * OOM aborts (the project's policy, see pk_xmalloc).
 */
#ifndef PK_WATCH_H
#define PK_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

/* Default cap on one event when 0 is passed: comfortably above the
 * apiserver's 1.5 MiB object limit plus the event envelope. */
#define PK_WATCH_DEFAULT_MAX_EVENT (16u * 1024 * 1024)

enum pk_watch_type {
	PK_WATCH_ADDED = 0,
	PK_WATCH_MODIFIED,
	PK_WATCH_DELETED,
	PK_WATCH_BOOKMARK,
	PK_WATCH_ERROR,
};

/* Called once per event, in stream order. object is borrowed: valid only
 * during the call (take a json_object_get() reference to keep it). Return 0
 * to continue, -1 (any non-zero) to stop parsing: the feed or finish in
 * progress then returns -1 with error "stopped". The callback must not feed,
 * finish or free the parser that called it. */
typedef int (*pk_watch_event_fn)(void *ud, enum pk_watch_type type, struct json_object *object);

struct pk_watch_parser;

/* A parser for one stream. max_event_bytes caps one line (0: the default
 * above; values above INT_MAX are lowered to INT_MAX, json_tokener's length
 * type). Never NULL (aborts on OOM). */
struct pk_watch_parser *pk_watch_parser_new(size_t max_event_bytes, pk_watch_event_fn fn, void *ud);

/* Feed len bytes (data may be NULL when len is 0). Returns 0, or -1 on
 * malformed input, an oversized event or a stop from fn; after -1 the parser
 * stays failed and every later call returns -1. Bytes after the failing
 * line are dropped. */
int pk_watch_parser_feed(struct pk_watch_parser *p, const char *data, size_t len);

/* End of stream: a final event without trailing newline is parsed and
 * dispatched; an incomplete one is an error (-1). Returns 0 when nothing
 * remains. The parser is then empty and could take a new stream. */
int pk_watch_parser_finish(struct pk_watch_parser *p);

/* Why the parser failed, "" when it has not. Owned by the parser. */
const char *pk_watch_parser_error(const struct pk_watch_parser *p);

/* Events handed to the callback so far (including one that returned stop). */
uint64_t pk_watch_parser_events(const struct pk_watch_parser *p);

/* Free the parser (NULL is fine). */
void pk_watch_parser_free(struct pk_watch_parser *p);

/* For an ERROR event's object (a metav1 Status): its integer "code" (410 Gone
 * means "relist"), or 0 when status is NULL, the code is absent, not an
 * integer or out of int range. */
int pk_watch_status_code(struct json_object *status);

/* metadata.resourceVersion of an object (an opaque string: compare for
 * equality only), or NULL when absent or not a string. Borrowed from
 * object. */
const char *pk_watch_object_rv(struct json_object *object);

#endif
