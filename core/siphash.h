/*
 * SipHash-2-4 (Aumasson and Bernstein): a keyed 64-bit hash for hash tables
 * whose keys come from peers. With a secret random key, an attacker cannot
 * choose keys that all land in one chain (hash flooding).
 *
 * Pure and thread-safe: no state besides the arguments.
 */
#ifndef PK_SIPHASH_H
#define PK_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of len bytes at data (data may be NULL when len is 0) under the
 * 128-bit key (k0, k1). k0 holds key bytes 0..7 and k1 bytes 8..15, both read
 * little-endian, so the reference key 00 01 .. 0f is k0 = 0x0706050403020100,
 * k1 = 0x0f0e0d0c0b0a0908. */
uint64_t pk_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len);

/* Fill *k0 and *k1 with a fresh random key from getrandom(). Never blocks: when
 * the kernel has no entropy yet (early boot) it falls back to a weaker key
 * mixed from the clock and addresses, which still beats a fixed one. */
void pk_siphash_seed(uint64_t *k0, uint64_t *k1);

#endif
