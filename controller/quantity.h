/*
 * Kubernetes resource quantities ("500m", "0.5", "1Gi", "1e3", "128974848"):
 * enough to tell whether two spellings are the same amount. The apiserver
 * rewrites quantities into its canonical form ("0.5" comes back as "500m",
 * a number 1 as the string "1"), so comparing what we apply with what is
 * live must compare amounts, or every reconcile would re-apply resources.
 */
#ifndef PK_QUANTITY_H
#define PK_QUANTITY_H

#include <stddef.h>

/* Parse s (len bytes, not necessarily NUL-terminated): an optional sign, a
 * decimal number (digits, optional fraction) or one with a decimal exponent
 * (e/E), then an optional suffix: n u m k M G T P E or Ki Mi Gi Ti Pi Ei.
 * Returns 0 and the amount in *out, or -1 when s is not a quantity. */
int pk_quantity_parse(const char *s, size_t len, long double *out);

/* 1 when both parse and are the same amount (to 1e-15 relative), else 0. */
int pk_quantity_equal(const char *a, size_t alen, const char *b, size_t blen);

#endif
