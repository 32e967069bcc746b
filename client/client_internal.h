/*
 * libpiko-client internals: the loop thread shared by every object of the
 * process (runtime.c), and what the objects (listener.c) need from it.
 *
 * Threads: the program's threads only ever touch an object's mutex-guarded
 * fields and post work to the loop thread with pkc_rt_call(); everything
 * lws, yamux and pk_sock is touched on the loop thread only. So the core
 * modules' process-wide state (pk_sock's lists, the lwsio scratch buffer,
 * the buffer freelist) has exactly one thread, as in the piko binary.
 */
#ifndef PKC_CLIENT_INTERNAL_H
#define PKC_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "piko/client.h"

/* Work for the loop thread. Lives in the caller's stack frame: the caller
 * waits for it to run, so the queue holds at most one entry per calling
 * thread. */
struct pkc_call {
	void (*fn)(void *arg);
	void *arg;
	int done; /* under the runtime mutex */
	struct pkc_call *next;
};

/* Take a reference on the process's runtime, starting its thread first if
 * there is none. 0, or -1 with err filled. */
int pkc_rt_get(struct piko_error *err);
/* Drop it; the last one stops the thread and frees the context. Never from
 * the loop thread. */
void pkc_rt_put(void);

/* pkc_rt_put for code on the loop thread (a dialled connection ending):
 * the last reference leaves the thread idle, not stopped (see runtime.c). */
void pkc_rt_put_from_loop(void);

/* Run fn(arg) on the loop thread and wait until it has run. */
void pkc_rt_call(void (*fn)(void *arg), void *arg);

/* For code on the loop thread: the context. */
struct lws_context *pkc_rt_context(void);

/* Fill err (may be NULL) with code and a printf message; returns code. */
int pkc_error(struct piko_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Absolute CLOCK_MONOTONIC deadline timeout_ms from now (for condvars made
 * with pkc_cond_init). */
void pkc_deadline(struct timespec *ts, int timeout_ms);
void pkc_cond_init(pthread_cond_t *c);

#endif
