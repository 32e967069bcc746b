/*
 * libFuzzer harness for controller/kubeconfig.c (YAML via libyaml, base64,
 * PEM checks), through pk_kube_config_parse: file references are refused
 * there, so the input can never make the harness read a file.
 *
 * Input: the kubeconfig text. It is parsed for the current context and for
 * a context named "other"; a success must give a server URL, and everything
 * is freed (ASan checks).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "kubeconfig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const contexts[] = {NULL, "other"};
	for (size_t i = 0; i < 2; i++) {
		struct pk_kube_config c;
		char err[512];
		if (pk_kube_config_parse((const char *)data, size, contexts[i], &c, err,
		                         sizeof(err)) == 0) {
			if (!c.server || !c.namespace)
				abort();
			pk_kube_config_free(&c);
		}
	}
	return 0;
}
