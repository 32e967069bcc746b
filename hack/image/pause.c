/*
 * pause: the pod sandbox's process (what the kubelet's sandbox image,
 * registry.k8s.io/pause, runs). It holds the pod's namespaces open and does
 * nothing else: it sleeps until SIGINT or SIGTERM, then exits 0, and as PID 1
 * of a pod that shares its PID namespace it reaps every orphan that is
 * re-parented to it (SIGCHLD). Written for this project in the spirit of
 * Kubernetes' build/pause/linux/pause.c; built static (gcc -static -Os) by
 * hack/image.sh so the image needs nothing but this one file.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAUSE_VERSION "3.10"

static void on_stop(int sig)
{
	static const char msg[] = "pause: shutting down\n";
	(void)sig;
	/* write(2) and _exit(2) are async-signal-safe; stdio is not. */
	ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
	(void)n;
	_exit(0);
}

static void on_child(int sig)
{
	int saved = errno;
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

static int install(int sig, void (*fn)(int))
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = fn;
	sigemptyset(&sa.sa_mask);
	/* SA_NOCLDSTOP: a stopped child is no zombie, nothing to reap. */
	sa.sa_flags = SA_RESTART | (sig == SIGCHLD ? SA_NOCLDSTOP : 0);
	return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv)
{
	if (argc > 1 && (!strcmp(argv[1], "-v") || !strcmp(argv[1], "--version"))) {
		printf("pause %s (piko-c)\n", PAUSE_VERSION);
		return 0;
	}
	if (getpid() != 1)
		fprintf(stderr, "pause: warning: not PID 1, orphans are not re-parented here\n");
	if (install(SIGINT, on_stop) < 0 || install(SIGTERM, on_stop) < 0 ||
	    install(SIGCHLD, on_child) < 0) {
		perror("pause: sigaction");
		return 1;
	}
	for (;;)
		pause();
	return 42; /* not reached */
}
