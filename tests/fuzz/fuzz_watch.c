/*
 * libFuzzer harness for controller/watch.c.
 *
 * Input: byte 0 picks where the rest is split (scaled over its length:
 * 0 = all in the second feed, 255 = nearly all in the first); the rest is a
 * watch stream. So a seed corpus of real streams, prefixed by one byte, is
 * directly mutable.
 *
 * The stream is parsed twice, once in one feed and once in the two pieces,
 * each followed by finish; both runs must deliver the same events and end
 * with the same result and error, whatever the split. Each piece is copied
 * into its own allocation so that ASan sees a read past it. The callback
 * stops the parse at an object whose resourceVersion is "stop", to exercise
 * that path from the corpus.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "watch.h"

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c))                                                                          \
			abort();                                                                   \
	} while (0)

/* Small, so the size cap is reachable by mutation. */
#define MAX_EVENT 2048

struct digest {
	uint64_t hash;
	uint64_t events;
	int rc;
	char err[160];
};

static void hash_bytes(uint64_t *h, const void *p, size_t n)
{
	/* FNV-1a: only needs to tell runs apart. */
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++) {
		*h ^= b[i];
		*h *= 0x100000001b3ull;
	}
}

static int on_event(void *ud, enum pk_watch_type type, struct json_object *object)
{
	struct digest *d = ud;
	CHECK(type >= PK_WATCH_ADDED && type <= PK_WATCH_ERROR);
	CHECK(object && json_object_is_type(object, json_type_object));
	uint8_t t = (uint8_t)type;
	hash_bytes(&d->hash, &t, 1);
	const char *rv = pk_watch_object_rv(object);
	if (rv)
		hash_bytes(&d->hash, rv, strlen(rv) + 1);
	int code = pk_watch_status_code(object);
	hash_bytes(&d->hash, &code, sizeof(code));
	/* Serialising walks the whole tree the parser built. */
	const char *js = json_object_to_json_string_ext(object, JSON_C_TO_STRING_PLAIN);
	CHECK(js);
	hash_bytes(&d->hash, js, strlen(js));
	return rv && strcmp(rv, "stop") == 0 ? -1 : 0;
}

static void run(const uint8_t *in, size_t len, size_t cut, struct digest *d)
{
	memset(d, 0, sizeof(*d));
	d->hash = 0xcbf29ce484222325ull;
	struct pk_watch_parser *p = pk_watch_parser_new(MAX_EVENT, on_event, d);
	size_t bounds[3] = {0, cut, len};
	d->rc = 0;
	for (int i = 0; i < 2 && d->rc == 0; i++) {
		size_t n = bounds[i + 1] - bounds[i];
		char *piece = malloc(n ? n : 1);
		CHECK(piece);
		memcpy(piece, in + bounds[i], n);
		d->rc = pk_watch_parser_feed(p, piece, n);
		free(piece);
	}
	if (d->rc == 0)
		d->rc = pk_watch_parser_finish(p);
	CHECK(d->rc == 0 || d->rc == -1);
	const char *err = pk_watch_parser_error(p);
	CHECK(err);
	CHECK((d->rc == 0) == (err[0] == '\0'));
	CHECK(strlen(err) < sizeof(d->err));
	memcpy(d->err, err, strlen(err) + 1);
	d->events = pk_watch_parser_events(p);
	/* Failure is sticky. */
	if (d->rc == -1) {
		CHECK(pk_watch_parser_feed(p, "{}\n", 3) == -1);
		CHECK(pk_watch_parser_finish(p) == -1);
		CHECK(pk_watch_parser_events(p) == d->events);
	}
	pk_watch_parser_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const uint8_t *in = data + 1;
	size_t len = size - 1;
	size_t cut = (size_t)(((uint64_t)data[0] * (len + 1)) >> 8);
	CHECK(cut <= len);

	struct digest whole, split;
	run(in, len, len, &whole);
	run(in, len, cut, &split);
	CHECK(whole.rc == split.rc);
	CHECK(whole.events == split.events);
	CHECK(whole.hash == split.hash);
	CHECK(strcmp(whole.err, split.err) == 0);
	return 0;
}
