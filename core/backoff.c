/*
 * Reconnect backoff with jitter (see backoff.h), and the monotonic clock.
 *
 * Jitter comes from xoshiro256** seeded from getrandom(): reconnecting
 * clients must not stay in lockstep, and rand() is shared global state that a
 * library should not reseed. The state is per thread so no lock is needed.
 */
#include "backoff.h"

#include <stdbool.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static _Thread_local uint64_t rng[4];
static _Thread_local bool rng_ready;

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void rng_seed(void)
{
	if (getrandom(rng, sizeof(rng), GRND_NONBLOCK) != (ssize_t)sizeof(rng)) {
		/* No entropy yet (early boot): jitter only has to differ
		 * between processes, so time, pid and an address will do. */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint64_t x = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
		x ^= (uint64_t)getpid() << 32;
		x ^= (uint64_t)(uintptr_t)&ts;
		for (int i = 0; i < 4; i++)
			rng[i] = splitmix64(&x);
	}
	/* xoshiro's one bad state. */
	if ((rng[0] | rng[1] | rng[2] | rng[3]) == 0)
		rng[0] = 1;
	rng_ready = true;
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

/* xoshiro256** (Blackman and Vigna). */
static uint64_t rng_next(void)
{
	if (!rng_ready)
		rng_seed();
	uint64_t result = rotl(rng[1] * 5, 7) * 9;
	uint64_t t = rng[1] << 17;
	rng[2] ^= rng[0];
	rng[3] ^= rng[1];
	rng[1] ^= rng[2];
	rng[0] ^= rng[3];
	rng[2] ^= t;
	rng[3] = rotl(rng[3], 45);
	return result;
}

/* Uniform in [0, 1): the top 53 bits as a double's mantissa. */
static double rng_unit(void)
{
	return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0);
}

void pk_backoff_init(struct pk_backoff *b, uint64_t min_ms, uint64_t max_ms)
{
	b->min_ms = min_ms;
	b->max_ms = max_ms;
	b->last_ms = 0;
}

uint64_t pk_backoff_next(struct pk_backoff *b)
{
	uint64_t base;
	if (b->last_ms == 0)
		base = b->min_ms;
	else
		base = b->last_ms > UINT64_MAX / 2 ? UINT64_MAX : b->last_ms * 2;
	if (base > b->max_ms)
		base = b->max_ms;
	/* base x [1.0, 1.1), floored. The clamp keeps rounding in the double
	 * product from ever reaching base x 1.1. */
	uint64_t jitter = (uint64_t)(rng_unit() * (double)base * 0.1);
	uint64_t tenth_up = base / 10 + (base % 10 != 0); /* ceil(base / 10) */
	if (jitter > 0 && jitter >= tenth_up)
		jitter = (base - 1) / 10;
	uint64_t wait = jitter > UINT64_MAX - base ? UINT64_MAX : base + jitter;
	b->last_ms = wait;
	return wait;
}

void pk_backoff_reset(struct pk_backoff *b)
{
	b->last_ms = 0;
}

uint64_t pk_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t pk_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
