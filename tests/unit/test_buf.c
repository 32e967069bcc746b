/* Unit tests for core/buf.c: the capped chunked queue and the x-allocators. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"

static uint8_t pattern(size_t i)
{
	return (uint8_t)(i * 7 + (i >> 9));
}

static void fill_pattern(uint8_t *p, size_t n, size_t from)
{
	for (size_t i = 0; i < n; i++)
		p[i] = pattern(from + i);
}

static void test_empty(void **state)
{
	(void)state;
	struct pk_bufq q;
	pk_bufq_init(&q, 100);
	size_t len = 99;
	assert_null(pk_bufq_peek(&q, &len));
	assert_int_equal(len, 0);
	assert_int_equal(q.len, 0);
	assert_int_equal(pk_bufq_space(&q), 100);
	uint8_t out[4];
	assert_int_equal(pk_bufq_copy(&q, out, sizeof(out)), 0);
	pk_bufq_consume(&q, 0);
	pk_bufq_clear(&q);
	assert_null(q.head);
}

static void test_small_roundtrip(void **state)
{
	(void)state;
	struct pk_bufq q;
	pk_bufq_init(&q, 1000);
	assert_int_equal(pk_bufq_append(&q, "hello ", 6), 6);
	assert_int_equal(pk_bufq_append(&q, "world", 5), 5);
	assert_int_equal(q.len, 11);
	assert_int_equal(pk_bufq_space(&q), 989);

	size_t len;
	const uint8_t *p = pk_bufq_peek(&q, &len);
	assert_int_equal(len, 11);
	assert_memory_equal(p, "hello world", 11);
	/* The payload sits right after the chunk's headroom. */
	assert_ptr_equal(p, q.head->mem + PK_BUF_HEADROOM);

	char out[16] = {0};
	assert_int_equal(pk_bufq_copy(&q, out, 5), 5);
	assert_memory_equal(out, "hello", 5);
	assert_int_equal(q.len, 11); /* copy does not consume */

	pk_bufq_consume(&q, 6);
	p = pk_bufq_peek(&q, &len);
	assert_int_equal(len, 5);
	assert_memory_equal(p, "world", 5);
	pk_bufq_consume(&q, 5);
	assert_int_equal(q.len, 0);
	assert_null(q.head);
	assert_null(q.tail);
	pk_bufq_clear(&q);
}

static void test_multi_chunk(void **state)
{
	(void)state;
	const size_t total = 3 * PK_BUF_CHUNK + 123;
	uint8_t *src = malloc(total);
	uint8_t *dst = malloc(total);
	assert_non_null(src);
	assert_non_null(dst);
	fill_pattern(src, total, 0);

	struct pk_bufq q;
	pk_bufq_init(&q, total);
	/* Odd-sized appends so chunk boundaries fall inside appends. */
	size_t off = 0, step = 1;
	while (off < total) {
		size_t n = step < total - off ? step : total - off;
		assert_int_equal(pk_bufq_append(&q, src + off, n), n);
		off += n;
		step = step * 3 + 1;
	}
	assert_int_equal(q.len, total);
	assert_int_equal(pk_bufq_space(&q), 0);

	/* peek returns at most one chunk. */
	size_t len;
	pk_bufq_peek(&q, &len);
	assert_int_equal(len, PK_BUF_CHUNK);

	assert_int_equal(pk_bufq_copy(&q, dst, total + 10), total);
	assert_memory_equal(src, dst, total);

	/* Consume in uneven steps and check the front each time. */
	size_t done = 0;
	step = 5000;
	while (done < total) {
		const uint8_t *p = pk_bufq_peek(&q, &len);
		assert_non_null(p);
		assert_true(len > 0);
		assert_int_equal(p[0], pattern(done));
		size_t n = step < total - done ? step : total - done;
		pk_bufq_consume(&q, n);
		done += n;
		assert_int_equal(q.len, total - done);
		step += 777;
	}
	assert_null(q.head);
	pk_bufq_clear(&q);
	free(src);
	free(dst);
}

static void test_cap(void **state)
{
	(void)state;
	struct pk_bufq q;
	pk_bufq_init(&q, 10);
	assert_int_equal(pk_bufq_append(&q, "0123456789abcdef", 16), 10);
	assert_int_equal(pk_bufq_space(&q), 0);
	assert_int_equal(pk_bufq_append(&q, "x", 1), 0);
	pk_bufq_consume(&q, 4);
	assert_int_equal(pk_bufq_space(&q), 4);
	assert_int_equal(pk_bufq_append(&q, "ABCDEFG", 7), 4);
	char out[10];
	assert_int_equal(pk_bufq_copy(&q, out, 10), 10);
	assert_memory_equal(out, "456789ABCD", 10);

	/* append_force ignores the cap; space stays 0 beyond it. */
	pk_bufq_append_force(&q, "zz", 2);
	assert_int_equal(q.len, 12);
	assert_int_equal(pk_bufq_space(&q), 0);
	pk_bufq_clear(&q);
	assert_int_equal(q.len, 0);
	assert_int_equal(pk_bufq_space(&q), 10);

	/* Zero cap: nothing fits. */
	pk_bufq_init(&q, 0);
	assert_int_equal(pk_bufq_append(&q, "a", 1), 0);
	pk_bufq_clear(&q);
}

static void test_force_large(void **state)
{
	(void)state;
	const size_t total = 2 * PK_BUF_CHUNK + 1;
	uint8_t *src = malloc(total);
	uint8_t *dst = malloc(total);
	assert_non_null(src);
	assert_non_null(dst);
	fill_pattern(src, total, 42);
	struct pk_bufq q;
	pk_bufq_init(&q, 1);
	pk_bufq_append_force(&q, src, total);
	assert_int_equal(q.len, total);
	assert_int_equal(pk_bufq_copy(&q, dst, total), total);
	assert_memory_equal(src, dst, total);
	pk_bufq_clear(&q);
	free(src);
	free(dst);
}

static void test_consume_clamps(void **state)
{
	(void)state;
	struct pk_bufq q;
	pk_bufq_init(&q, 100);
	pk_bufq_append(&q, "abc", 3);
	pk_bufq_consume(&q, 50);
	assert_int_equal(q.len, 0);
	assert_null(q.head);
	/* Still usable. */
	assert_int_equal(pk_bufq_append(&q, "de", 2), 2);
	char out[2];
	assert_int_equal(pk_bufq_copy(&q, out, 2), 2);
	assert_memory_equal(out, "de", 2);
	pk_bufq_clear(&q);
}

static void test_freelist_reuse(void **state)
{
	(void)state;
	struct pk_bufq a, b;
	pk_bufq_init(&a, 100);
	pk_bufq_init(&b, 100);
	pk_bufq_append(&a, "x", 1);
	struct pk_buf_chunk *c = a.head;
	pk_bufq_clear(&a);
	/* The chunk just released is the next one handed out. */
	pk_bufq_append(&b, "y", 1);
	assert_ptr_equal(b.head, c);
	assert_int_equal(b.head->pos, 0);
	assert_int_equal(b.head->last, 1);
	pk_bufq_clear(&b);
}

static void test_freelist_bounded(void **state)
{
	(void)state;
	/* More chunks than the freelist keeps: the surplus is freed (ASan's
	 * leak checker verifies nothing is lost). */
	const size_t n = PK_BUF_FREELIST_MAX + 10;
	struct pk_bufq q;
	pk_bufq_init(&q, SIZE_MAX);
	uint8_t *blk = calloc(1, PK_BUF_CHUNK);
	assert_non_null(blk);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(pk_bufq_append(&q, blk, PK_BUF_CHUNK), PK_BUF_CHUNK);
	assert_int_equal(q.len, n * PK_BUF_CHUNK);
	pk_bufq_clear(&q);
	pk_buf_freelist_release();
	/* Release twice is harmless and the queue still works after it. */
	pk_buf_freelist_release();
	assert_int_equal(pk_bufq_append(&q, blk, 10), 10);
	pk_bufq_clear(&q);
	free(blk);
}

static void test_xalloc(void **state)
{
	(void)state;
	void *p = pk_xmalloc(0);
	assert_non_null(p);
	free(p);
	p = pk_xcalloc(0, 0);
	assert_non_null(p);
	free(p);
	uint32_t *z = pk_xcalloc(16, sizeof(*z));
	for (int i = 0; i < 16; i++)
		assert_int_equal(z[i], 0);
	z = pk_xrealloc(z, 64 * sizeof(*z));
	z[63] = 7;
	assert_int_equal(z[0], 0);
	z = pk_xrealloc(z, 0);
	assert_non_null(z);
	free(z);
	char *s = pk_xstrdup("piko");
	assert_string_equal(s, "piko");
	free(s);
	s = pk_xstrndup("tunnel", 3);
	assert_string_equal(s, "tun");
	free(s);
	s = pk_xstrndup("ab", 10);
	assert_string_equal(s, "ab");
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty),          cmocka_unit_test(test_small_roundtrip),
	    cmocka_unit_test(test_multi_chunk),    cmocka_unit_test(test_cap),
	    cmocka_unit_test(test_force_large),    cmocka_unit_test(test_consume_clamps),
	    cmocka_unit_test(test_freelist_reuse), cmocka_unit_test(test_freelist_bounded),
	    cmocka_unit_test(test_xalloc),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	pk_buf_freelist_release();
	return rc;
}
