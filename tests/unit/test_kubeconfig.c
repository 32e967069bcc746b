/*
 * kubeconfig and in-cluster config: context selection, inline and file
 * credentials, relative paths, base64, the errors a user sees, in-cluster
 * from env and files, token rotation, and where pk_kube_config_load looks.
 * Each test works in its own mkdtemp directory, removed afterwards, and the
 * environment variables it touches are restored.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "kubeconfig.h"

#define SA "var/run/secrets/kubernetes.io/serviceaccount"

static const char CA_PEM[] = "-----BEGIN CERTIFICATE-----\n"
                             "MIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAjMSEwHwYDVQQDDBhrM3Mtc2Vy\n"
                             "dmVyLWNhQDE3MDAwMDAwMDAwHhcNMjMxMTE0MjIxMzIwWhcNMzMxMTExMjIxMzIw\n"
                             "-----END CERTIFICATE-----\n";
static const char CERT_PEM[] = "-----BEGIN CERTIFICATE-----\n"
                               "MIIBkTCCATegAwIBAgIIF2V3b3JrZXIwCgYIKoZIzj0EAwIwIzEhMB8GA1UEAwwY\n"
                               "azNzLWNsaWVudC1jYUAxNzAwMDAwMDAwMB4XDTIzMTExNDIyMTMyMFoXDTI0MTEx\n"
                               "-----END CERTIFICATE-----\n";
static const char KEY_PEM[] = "-----BEGIN EC PRIVATE KEY-----\n"
                              "MHcCAQEEIEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEoAoGCCqGSM49\n"
                              "AwEHoUQDQgAEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLE==\n"
                              "-----END EC PRIVATE KEY-----\n";

static char dir[64];
static char err[1024];

static const char *const env_names[] = {"KUBECONFIG", "KUBERNETES_SERVICE_HOST",
                                        "KUBERNETES_SERVICE_PORT", "HOME"};
#define NENV (sizeof(env_names) / sizeof(env_names[0]))
static char *env_saved[NENV];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/pk_kubeconfig_XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	for (size_t i = 0; i < NENV; i++) {
		const char *v = getenv(env_names[i]);
		env_saved[i] = v ? strdup(v) : NULL;
		unsetenv(env_names[i]);
	}
	err[0] = '\0';
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	(void)state;
	int rc = nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	for (size_t i = 0; i < NENV; i++) {
		if (env_saved[i])
			setenv(env_names[i], env_saved[i], 1);
		else
			unsetenv(env_names[i]);
		free(env_saved[i]);
		env_saved[i] = NULL;
	}
	return rc;
}

/* dir/rel, in a static buffer of the caller's choosing. */
static const char *at(char *buf, size_t n, const char *rel)
{
	snprintf(buf, n, "%s/%s", dir, rel);
	return buf;
}

/* Write content to dir/rel, creating the directories on the way. */
static void write_file(const char *rel, const char *content)
{
	char path[512];
	at(path, sizeof(path), rel);
	for (char *s = path + strlen(dir) + 1; (s = strchr(s, '/')); s++) {
		*s = '\0';
		assert_true(mkdir(path, 0700) == 0 || errno == EEXIST);
		*s = '/';
	}
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(content, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

/* base64 of s (standard, padded), for the *-data fields. Freed by the caller. */
static char *b64(const char *s)
{
	size_t n = strlen(s);
	char *out = malloc(4 * ((n + 2) / 3) + 1);
	assert_non_null(out);
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
	return out;
}

/* The shared kubeconfig: one context per case. Written to dir/kube/config. */
static void write_main_config(void)
{
	char *cert = b64(CERT_PEM), *key = b64(KEY_PEM);
	char *y = NULL;
	int n = asprintf(&y,
	                 "apiVersion: v1\n"
	                 "kind: Config\n"
	                 "current-context: dev\n"
	                 "clusters:\n"
	                 "- name: dev-cluster\n"
	                 "  cluster:\n"
	                 "    server: https://10.0.0.1:6443/\n"
	                 "    certificate-authority: ca/ca.crt\n"
	                 "- name: prod-cluster\n"
	                 "  cluster:\n"
	                 "    server: \"https://[fd00::10]:443\"\n"
	                 "    insecure-skip-tls-verify: true\n"
	                 "    tls-server-name: kubernetes.default\n"
	                 "- name: bare-cluster\n"
	                 "  cluster: {server: 'api.example.com:6443'}\n"
	                 "users:\n"
	                 "- name: dev-user\n"
	                 "  user:\n"
	                 "    client-certificate-data: %s\n"
	                 "    client-key-data: %s\n"
	                 "- name: prod-user\n"
	                 "  user:\n"
	                 "    token: prod-token\n"
	                 "- name: file-user\n"
	                 "  user:\n"
	                 "    tokenFile: secrets/token\n"
	                 "- name: exec-user\n"
	                 "  user:\n"
	                 "    exec:\n"
	                 "      apiVersion: client.authentication.k8s.io/v1\n"
	                 "      command: aws\n"
	                 "- name: ap-user\n"
	                 "  user:\n"
	                 "    auth-provider: {name: gcp}\n"
	                 "- name: half-user\n"
	                 "  user:\n"
	                 "    client-certificate-data: %s\n"
	                 "contexts:\n"
	                 "- name: dev\n"
	                 "  context:\n"
	                 "    cluster: dev-cluster\n"
	                 "    user: dev-user\n"
	                 "    namespace: team-a\n"
	                 "- name: prod\n"
	                 "  context: {cluster: prod-cluster, user: prod-user}\n"
	                 "- name: file\n"
	                 "  context: {cluster: prod-cluster, user: file-user}\n"
	                 "- name: exec\n"
	                 "  context: {cluster: prod-cluster, user: exec-user}\n"
	                 "- name: ap\n"
	                 "  context: {cluster: prod-cluster, user: ap-user}\n"
	                 "- name: half\n"
	                 "  context: {cluster: prod-cluster, user: half-user}\n"
	                 "- name: no-cluster\n"
	                 "  context: {cluster: nope, user: prod-user}\n"
	                 "- name: no-user\n"
	                 "  context: {cluster: prod-cluster, user: nobody}\n"
	                 "- name: anon\n"
	                 "  context: {cluster: bare-cluster}\n",
	                 cert, key, cert);
	assert_true(n > 0);
	write_file("kube/config", y);
	write_file("kube/ca/ca.crt", CA_PEM);
	free(y);
	free(cert);
	free(key);
}

static void test_current_context_cert_data(void **state)
{
	(void)state;
	struct pk_kube_config c;
	char path[512];
	write_main_config();
	/* Run from elsewhere: ca/ca.crt must resolve against the file's directory. */
	assert_int_equal(chdir("/"), 0);
	assert_int_equal(pk_kube_config_load_file(at(path, sizeof(path), "kube/config"), NULL, &c,
	                                          err, sizeof(err)),
	                 0);
	assert_string_equal(c.server, "https://10.0.0.1:6443");
	assert_non_null(c.ca_pem);
	assert_int_equal(c.ca_pem_len, strlen(CA_PEM));
	assert_memory_equal(c.ca_pem, CA_PEM, c.ca_pem_len);
	assert_int_equal(c.cert_pem_len, strlen(CERT_PEM));
	assert_memory_equal(c.cert_pem, CERT_PEM, c.cert_pem_len);
	assert_int_equal(c.key_pem_len, strlen(KEY_PEM));
	assert_memory_equal(c.key_pem, KEY_PEM, c.key_pem_len);
	assert_null(c.token);
	assert_null(c.token_file);
	assert_null(c.tls_server_name);
	assert_false(c.insecure_skip_verify);
	assert_false(c.in_cluster);
	assert_string_equal(c.namespace, "team-a");
	pk_kube_config_free(&c);
	assert_null(c.server);
	pk_kube_config_free(&c); /* a zeroed struct frees cleanly */
}

static void test_explicit_context(void **state)
{
	(void)state;
	struct pk_kube_config c;
	char path[512];
	write_main_config();
	at(path, sizeof(path), "kube/config");
	assert_int_equal(pk_kube_config_load_file(path, "prod", &c, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://[fd00::10]:443");
	assert_true(c.insecure_skip_verify);
	assert_string_equal(c.tls_server_name, "kubernetes.default");
	assert_null(c.ca_pem);
	assert_null(c.cert_pem);
	assert_null(c.key_pem);
	assert_string_equal(c.token, "prod-token");
	assert_null(c.token_file);
	/* No token file: the inline token is returned as is, whatever the clock. */
	assert_string_equal(pk_kube_config_token(&c, UINT64_MAX, true), "prod-token");
	assert_string_equal(c.namespace, "default");
	pk_kube_config_free(&c);

	/* No user and a server without a scheme. */
	assert_int_equal(pk_kube_config_load_file(path, "anon", &c, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://api.example.com:6443");
	assert_null(c.token);
	assert_null(c.cert_pem);
	pk_kube_config_free(&c);
}

static void test_token_file(void **state)
{
	(void)state;
	struct pk_kube_config c;
	char path[512], tok[512];
	write_main_config();
	write_file("kube/secrets/token", "  file-token\n\n");
	at(path, sizeof(path), "kube/config");
	assert_int_equal(pk_kube_config_load_file(path, "file", &c, err, sizeof(err)), 0);
	assert_string_equal(c.token, "file-token");
	assert_string_equal(c.token_file, at(tok, sizeof(tok), "kube/secrets/token"));
	assert_true(c.token_read_ms > 0);
	pk_kube_config_free(&c);

	/* Unreadable and no inline token to fall back on. */
	assert_int_equal(unlink(tok), 0);
	assert_int_equal(pk_kube_config_load_file(path, "file", &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "user file-user: tokenFile: "));
	assert_non_null(strstr(err, "No such file"));
	assert_null(c.server);

	/* An empty token file is refused too. */
	write_file("kube/secrets/token", "\n");
	assert_int_equal(pk_kube_config_load_file(path, "file", &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "empty token"));
}

static void expect_error(const char *rel, const char *context, const char *want)
{
	struct pk_kube_config c;
	char path[512];
	at(path, sizeof(path), rel);
	memset(&c, 0x5a, sizeof(c)); /* must come back zeroed */
	err[0] = '\0';
	assert_int_equal(pk_kube_config_load_file(path, context, &c, err, sizeof(err)), -1);
	if (!strstr(err, want))
		fail_msg("error \"%s\" lacks \"%s\"", err, want);
	/* Every kubeconfig error names the file. */
	if (!strstr(err, path))
		fail_msg("error \"%s\" does not name %s", err, path);
	assert_null(c.server);
	assert_null(c.token);
	assert_null(c.namespace);
}

static void test_errors(void **state)
{
	(void)state;
	write_main_config();
	expect_error("kube/config", "staging", "kubeconfig: context staging not found");
	expect_error("kube/config", "no-cluster", "context no-cluster: cluster nope not found");
	expect_error("kube/config", "no-user", "context no-user: user nobody not found");
	expect_error("kube/config", "exec",
	             "kubeconfig: user exec-user: exec credential plugins are not supported");
	expect_error("kube/config", "ap", "user ap-user: auth-provider plugins are not supported");
	expect_error("kube/config", "half", "user half-user: a client certificate needs both");

	write_file("nocur", "apiVersion: v1\nclusters: []\ncontexts: []\nusers: []\n");
	expect_error("nocur", NULL, "no current-context set");
	write_file("empty", "");
	expect_error("empty", NULL, "empty file");
	write_file("list", "- a\n- b\n");
	expect_error("list", NULL, "top level is not a mapping");
	write_file("badlist", "current-context: x\ncontexts: {x: y}\n");
	expect_error("badlist", NULL, "contexts: expected a list");
	write_file("noserver",
	           "current-context: x\n"
	           "contexts: [{name: x, context: {cluster: c}}]\n"
	           "clusters: [{name: c, cluster: {insecure-skip-tls-verify: true}}]\n");
	expect_error("noserver", NULL, "cluster c: no server");
	write_file("badbool", "current-context: x\n"
	                      "contexts: [{name: x, context: {cluster: c}}]\n"
	                      "clusters: [{name: c, cluster: {server: 'https://h',"
	                      " insecure-skip-tls-verify: maybe}}]\n");
	expect_error("badbool", NULL, "insecure-skip-tls-verify: expected true or false");
	write_file("badca", "current-context: x\n"
	                    "contexts: [{name: x, context: {cluster: c}}]\n"
	                    "clusters: [{name: c, cluster: {server: 'https://h',"
	                    " certificate-authority: missing.crt}}]\n");
	expect_error("badca", NULL, "cluster c: certificate-authority: ");
	expect_error("badca", NULL, "missing.crt: No such file");
	expect_error("does-not-exist", NULL, "No such file");
}

static void test_malformed_yaml(void **state)
{
	(void)state;
	write_file("bad.yaml", "apiVersion: v1\n"
	                       "clusters:\n"
	                       "- name: a\n"
	                       "  cluster: {server: https://h\n"
	                       "users: []\n");
	expect_error("bad.yaml", NULL, "invalid YAML at line ");
	write_file("bad2.yaml", "current-context: a\n"
	                        "contexts:\n"
	                        "  - name: a\n"
	                        "   bad: indentation\n");
	expect_error("bad2.yaml", NULL, "invalid YAML at line 4, column ");
}

/* A kubeconfig whose only user carries the given client-certificate-data. */
static int load_with_cert_data(const char *data, struct pk_kube_config *c)
{
	char *key = b64(KEY_PEM), *y = NULL, path[512];
	assert_true(asprintf(&y,
	                     "current-context: x\n"
	                     "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
	                     "clusters: [{name: c, cluster: {server: 'https://h:1'}}]\n"
	                     "users:\n"
	                     "- name: u\n"
	                     "  user:\n"
	                     "    client-key-data: %s\n"
	                     "    client-certificate-data: %s\n",
	                     key, data) > 0);
	write_file("b64", y);
	free(y);
	free(key);
	return pk_kube_config_load_file(at(path, sizeof(path), "b64"), NULL, c, err, sizeof(err));
}

static void test_base64(void **state)
{
	(void)state;
	struct pk_kube_config c;
	/* Three lengths: no padding, one '=' and two. */
	for (int extra = 0; extra < 3; extra++) {
		char pem[512];
		snprintf(pem, sizeof(pem), "%s%.*s", CERT_PEM, extra, "\n\n");
		char *enc = b64(pem);
		assert_int_equal(load_with_cert_data(enc, &c), 0);
		assert_int_equal(c.cert_pem_len, strlen(pem));
		assert_memory_equal(c.cert_pem, pem, c.cert_pem_len);
		assert_int_equal(c.cert_pem[c.cert_pem_len], '\0');
		pk_kube_config_free(&c);

		/* Line breaks inside the data are skipped, as Go does. */
		size_t n = strlen(enc);
		char *folded = malloc(n * 2 + 16), *q = folded;
		assert_non_null(folded);
		q += sprintf(q, "|\n      ");
		for (size_t i = 0; i < n; i++) {
			*q++ = enc[i];
			if (i % 20 == 19)
				q += sprintf(q, "\n      ");
		}
		*q = '\0';
		assert_int_equal(load_with_cert_data(folded, &c), 0);
		assert_memory_equal(c.cert_pem, pem, strlen(pem));
		pk_kube_config_free(&c);
		free(folded);
		free(enc);
	}

	static const char *const bad[] = {
	    "'not*base64!'", /* outside the alphabet */
	    "QUJD=",         /* padding after a full quantum */
	    "QUJ",           /* truncated */
	    "QU=D",          /* data after padding */
	    "QQ==QUJD",      /* data after the final quantum */
	    "Q===",          /* too much padding */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&c, 0x5a, sizeof(c));
		assert_int_equal(load_with_cert_data(bad[i], &c), -1);
		if (!strstr(err, "user u: client-certificate-data: invalid base64"))
			fail_msg("%s: %s", bad[i], err);
		assert_null(c.cert_pem);
	}

	/* Valid base64 that is not PEM (a field encoded twice, say). */
	char *twice = b64("hello, world");
	assert_int_equal(load_with_cert_data(twice, &c), -1);
	assert_non_null(strstr(err, "client-certificate-data: decodes to no PEM block"));
	free(twice);
}

static void write_sa(const char *ns)
{
	write_file("root/" SA "/ca.crt", CA_PEM);
	write_file("root/" SA "/token", "sa-token-1\n");
	if (ns)
		write_file("root/" SA "/namespace", ns);
}

static void test_in_cluster(void **state)
{
	(void)state;
	struct pk_kube_config c;
	char root[512], tok[512];
	at(root, sizeof(root), "root");
	write_sa("piko-system\n");

	assert_int_equal(pk_kube_config_in_cluster(root, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_HOST"));
	assert_null(c.server);

	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	assert_int_equal(pk_kube_config_in_cluster(root, &c, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://10.96.0.1:443");
	assert_int_equal(c.ca_pem_len, strlen(CA_PEM));
	assert_memory_equal(c.ca_pem, CA_PEM, c.ca_pem_len);
	assert_string_equal(c.token, "sa-token-1");
	assert_string_equal(c.token_file, at(tok, sizeof(tok), "root/" SA "/token"));
	assert_string_equal(c.namespace, "piko-system");
	assert_true(c.in_cluster);
	assert_null(c.cert_pem);
	assert_false(c.insecure_skip_verify);
	pk_kube_config_free(&c);

	setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
	assert_int_equal(unlink(at(tok, sizeof(tok), "root/" SA "/namespace")), 0);
	assert_int_equal(pk_kube_config_in_cluster(root, &c, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://[fd00::1]:443");
	assert_string_equal(c.namespace, "default");
	pk_kube_config_free(&c);

	setenv("KUBERNETES_SERVICE_PORT", "https", 1);
	assert_int_equal(pk_kube_config_in_cluster(root, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "KUBERNETES_SERVICE_PORT \"https\" is not a port"));

	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	assert_int_equal(unlink(at(tok, sizeof(tok), "root/" SA "/token")), 0);
	assert_int_equal(pk_kube_config_in_cluster(root, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "in-cluster config: token: "));
	assert_non_null(strstr(err, "No such file"));
	assert_null(c.server);
}

static void test_token_rotation(void **state)
{
	(void)state;
	struct pk_kube_config c;
	char root[512], tok[512];
	at(root, sizeof(root), "root");
	at(tok, sizeof(tok), "root/" SA "/token");
	write_sa(NULL);
	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	assert_int_equal(pk_kube_config_in_cluster(root, &c, err, sizeof(err)), 0);
	uint64_t t0 = c.token_read_ms;
	assert_string_equal(pk_kube_config_token(&c, t0, false), "sa-token-1");

	write_file("root/" SA "/token", "sa-token-2\n");
	/* Read 1 s ago: still the old token. */
	assert_string_equal(pk_kube_config_token(&c, t0 + 1000, false), "sa-token-1");
	/* 61 s: re-read. */
	assert_string_equal(pk_kube_config_token(&c, t0 + 61000, false), "sa-token-2");
	assert_int_equal(c.token_read_ms, t0 + 61000);

	write_file("root/" SA "/token", "sa-token-3");
	assert_string_equal(pk_kube_config_token(&c, t0 + 62000, false), "sa-token-2");
	/* After a 401: re-read now. */
	assert_string_equal(pk_kube_config_token(&c, t0 + 62000, true), "sa-token-3");

	/* An unchanged token keeps its pointer. */
	const char *p = pk_kube_config_token(&c, t0 + 63000, true);
	assert_ptr_equal(pk_kube_config_token(&c, t0 + 64000, true), p);

	/* Read failures keep the old token: gone, empty, control characters. */
	assert_int_equal(unlink(tok), 0);
	assert_string_equal(pk_kube_config_token(&c, t0 + 200000, true), "sa-token-3");
	write_file("root/" SA "/token", " \n");
	assert_string_equal(pk_kube_config_token(&c, t0 + 300000, false), "sa-token-3");
	write_file("root/" SA "/token", "evil\r\nX-Injected: 1\n");
	assert_string_equal(pk_kube_config_token(&c, t0 + 400000, true), "sa-token-3");
	pk_kube_config_free(&c);
}

/* A one-context kubeconfig at rel pointing at server. */
static void write_simple(const char *rel, const char *server)
{
	char y[512];
	snprintf(y, sizeof(y),
	         "current-context: x\n"
	         "contexts: [{name: x, context: {cluster: c}}]\n"
	         "clusters: [{name: c, cluster: {server: '%s'}}]\n",
	         server);
	write_file(rel, y);
}

static void test_load_precedence(void **state)
{
	(void)state;
	struct pk_kube_config c;
	char a[512], b[512], home[512], list[1100];
	write_simple("a/config", "https://a:1");
	write_simple("b/config", "https://b:2");
	write_simple("home/.kube/config", "https://home:3");
	at(a, sizeof(a), "a/config");
	at(b, sizeof(b), "b/config");
	at(home, sizeof(home), "home");
	setenv("HOME", home, 1);

	/* KUBECONFIG: its first entry. */
	snprintf(list, sizeof(list), "%s:%s", a, b);
	setenv("KUBECONFIG", list, 1);
	assert_int_equal(pk_kube_config_load(NULL, NULL, &c, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://a:1");
	pk_kube_config_free(&c);

	/* An explicit path wins over KUBECONFIG. */
	assert_int_equal(pk_kube_config_load(b, NULL, &c, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://b:2");
	pk_kube_config_free(&c);

	/* Empty entries are skipped. */
	snprintf(list, sizeof(list), "::%s", b);
	setenv("KUBECONFIG", list, 1);
	assert_int_equal(pk_kube_config_load(NULL, NULL, &c, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://b:2");
	pk_kube_config_free(&c);

	/* KUBECONFIG wins over in-cluster. */
	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	assert_int_equal(pk_kube_config_load(NULL, NULL, &c, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://b:2");
	pk_kube_config_free(&c);

	/* Unset (or empty) KUBECONFIG and a service host: in-cluster, with the
	 * real root. Outside a pod that fails on the CA file. */
	setenv("KUBECONFIG", "", 1);
	if (pk_kube_config_load(NULL, NULL, &c, err, sizeof(err)) == 0) {
		assert_true(c.in_cluster);
		pk_kube_config_free(&c);
	} else {
		assert_non_null(strstr(err, "in-cluster config: CA: /" SA "/ca.crt"));
	}

	/* Neither: $HOME/.kube/config. */
	unsetenv("KUBERNETES_SERVICE_HOST");
	assert_int_equal(pk_kube_config_load(NULL, NULL, &c, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://home:3");
	pk_kube_config_free(&c);
	unsetenv("KUBECONFIG");
	assert_int_equal(pk_kube_config_load(NULL, NULL, &c, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://home:3");
	pk_kube_config_free(&c);

	/* The context argument reaches the file. */
	assert_int_equal(pk_kube_config_load(NULL, "other", &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "context other not found"));

	unsetenv("HOME");
	assert_int_equal(pk_kube_config_load(NULL, NULL, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "none found"));
}

/* In memory: inline credentials work, file references are refused (the
 * fuzz harness relies on it). */
static void test_parse_memory(void **state)
{
	(void)state;
	static const char good[] =
	    "clusters:\n- name: c\n  cluster: {server: https://10.0.0.1:6443}\n"
	    "users:\n- name: u\n  user: {token: t0k}\n"
	    "contexts:\n- name: x\n  context: {cluster: c, user: u}\n"
	    "current-context: x\n";
	struct pk_kube_config c;
	char err[512];
	assert_int_equal(pk_kube_config_parse(good, strlen(good), NULL, &c, err, sizeof(err)), 0);
	assert_string_equal(c.server, "https://10.0.0.1:6443");
	assert_string_equal(c.token, "t0k");
	assert_string_equal(c.namespace, "default");
	pk_kube_config_free(&c);
	static const char file[] = "clusters:\n- name: c\n  cluster: {server: https://h:1, "
	                           "certificate-authority: /etc/passwd}\n"
	                           "users:\n- name: u\n  user: {tokenFile: /etc/passwd}\n"
	                           "contexts:\n- name: x\n  context: {cluster: c, user: u}\n"
	                           "current-context: x\n";
	assert_int_equal(pk_kube_config_parse(file, strlen(file), NULL, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "file references are not allowed"));
	assert_null(c.server);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_memory),
	    cmocka_unit_test_setup_teardown(test_current_context_cert_data, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_explicit_context, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_token_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_yaml, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_base64, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_in_cluster, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_token_rotation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_load_precedence, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
