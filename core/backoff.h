/*
 * Reconnect backoff, as Piko's clients do it (protocol reference §1.1):
 * first wait = min, each next wait = previous (already jittered) wait x 2,
 * capped at max, then multiplied by a random factor in [1.0, 1.1).
 */
#ifndef PK_BACKOFF_H
#define PK_BACKOFF_H

#include <stdint.h>

struct pk_backoff {
	uint64_t min_ms;  /* 100 */
	uint64_t max_ms;  /* 15000 */
	uint64_t last_ms; /* 0 until the first wait */
};

void pk_backoff_init(struct pk_backoff *b, uint64_t min_ms, uint64_t max_ms);
/* The next wait in ms. */
uint64_t pk_backoff_next(struct pk_backoff *b);
/* Start over (after a successful connect). */
void pk_backoff_reset(struct pk_backoff *b);

/* Monotonic clock in milliseconds. */
uint64_t pk_now_ms(void);
/* The same clock in nanoseconds (access log durations). */
uint64_t pk_now_ns(void);

#endif
