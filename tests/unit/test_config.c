/*
 * Option tables: defaults, flags, strict YAML, env expansion, durations.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

struct upstream {
	char *url;
	int64_t weight;
	int tls;
	int64_t timeout;
};

static const struct pk_opt upstream_opts[] = {
    {"url", PK_OPT_STRING, offsetof(struct upstream, url), NULL, "URL", 0, NULL, 0},
    {"weight", PK_OPT_INT, offsetof(struct upstream, weight), "1", "weight", 0, NULL, 0},
    {"tls.enabled", PK_OPT_BOOL, offsetof(struct upstream, tls), "false", "TLS", 0, NULL, 0},
    {"timeout", PK_OPT_DURATION, offsetof(struct upstream, timeout), "5s", "t", 0, NULL, 0},
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

struct tcfg {
	char *name;
	int debug;
	int64_t port;
	double ratio;
	int64_t read_timeout;
	char *bind;
	struct pk_strlist subsystems;
	struct pk_list upstreams;
	char *secret;
	char *nodef;
};

static const struct pk_opt opts[] = {
    {"name", PK_OPT_STRING, offsetof(struct tcfg, name), "piko", "node name", 0, NULL, 0},
    {"debug", PK_OPT_BOOL, offsetof(struct tcfg, debug), "false", "debug", 0, NULL, 0},
    {"proxy.port", PK_OPT_INT, offsetof(struct tcfg, port), "8000", "port", 0, NULL, 0},
    {"proxy.ratio", PK_OPT_FLOAT, offsetof(struct tcfg, ratio), "0.5", "ratio", 0, NULL, 0},
    {"proxy.http.read_timeout", PK_OPT_DURATION, offsetof(struct tcfg, read_timeout), "30s",
     "read timeout", 0, NULL, 0},
    {"proxy.bind_addr", PK_OPT_STRING, offsetof(struct tcfg, bind), ":8000", "bind", 0, NULL, 0},
    {"log.subsystems", PK_OPT_STRLIST, offsetof(struct tcfg, subsystems), "a,b", "subsystems", 0,
     NULL, 0},
    {"upstreams", PK_OPT_LIST, offsetof(struct tcfg, upstreams), NULL, "upstreams", 1,
     upstream_opts, sizeof(struct upstream)},
    {"auth.secret", PK_OPT_STRING, offsetof(struct tcfg, secret), NULL, "secret", 1, NULL, 0},
    {"nodef", PK_OPT_STRING, offsetof(struct tcfg, nodef), NULL, "no default", 0, NULL, 0},
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};

static char err[512];

static int setup(void **state)
{
	struct tcfg *c = calloc(1, sizeof(*c));
	/* Garbage first: defaults must zero what has no default. */
	memset(c, 0x5a, sizeof(*c));
	assert_int_equal(pk_config_defaults(opts, c, err, sizeof(err)), 0);
	err[0] = '\0';
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	pk_config_free(opts, *state);
	free(*state);
	return 0;
}

static int yaml(struct tcfg *c, const char *text)
{
	err[0] = '\0';
	return pk_config_load_yaml_buf(opts, c, text, strlen(text), 0, err, sizeof(err));
}

static int flags(struct tcfg *c, int argc, char **argv, char **pos, size_t *npos)
{
	err[0] = '\0';
	return pk_config_parse_flags(opts, c, argc, argv, pos, pos ? 4 : 0, npos, NULL, NULL, err,
	                             sizeof(err));
}

#define assert_err_has(s)                                                                          \
	do {                                                                                       \
		if (!strstr(err, (s)))                                                             \
			fail_msg("error %s lacks %s", err, (s));                                   \
	} while (0)

static void test_defaults(void **state)
{
	struct tcfg *c = *state;
	assert_string_equal(c->name, "piko");
	assert_int_equal(c->debug, 0);
	assert_int_equal(c->port, 8000);
	assert_true(c->ratio == 0.5);
	assert_int_equal(c->read_timeout, 30000);
	assert_string_equal(c->bind, ":8000");
	assert_int_equal(c->subsystems.n, 2);
	assert_string_equal(c->subsystems.v[0], "a");
	assert_string_equal(c->subsystems.v[1], "b");
	assert_int_equal(c->upstreams.n, 0);
	assert_null(c->upstreams.v);
	assert_null(c->secret);
	assert_null(c->nodef);
}

static void test_bad_default(void **state)
{
	(void)state;
	static const struct pk_opt bad[] = {
	    {"d", PK_OPT_DURATION, 0, "30", "x", 0, NULL, 0},
	    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
	};
	int64_t v;
	assert_int_equal(pk_config_defaults(bad, &v, err, sizeof(err)), -1);
	assert_err_has("invalid default for d");
}

static void test_flags_basic(void **state)
{
	struct tcfg *c = *state;
	char *argv[] = {"--name",
	                "n1",
	                "--proxy.port=9000",
	                "pos1",
	                "--debug",
	                "--proxy.http.read-timeout",
	                "1m30s",
	                "--proxy.ratio=0.25",
	                "pos2",
	                "--proxy.bind-addr",
	                "--looks-like-a-flag"};
	char *pos[4];
	size_t npos = 99;
	assert_int_equal(flags(c, 11, argv, pos, &npos), 0);
	assert_string_equal(c->name, "n1");
	assert_int_equal(c->port, 9000);
	assert_int_equal(c->debug, 1);
	assert_int_equal(c->read_timeout, 90000);
	assert_true(c->ratio == 0.25);
	/* Like pflag, a flag's value is the next argument, whatever it is. */
	assert_string_equal(c->bind, "--looks-like-a-flag");
	assert_int_equal(npos, 2);
	assert_string_equal(pos[0], "pos1");
	assert_string_equal(pos[1], "pos2");
}

static void test_flags_bool(void **state)
{
	struct tcfg *c = *state;
	char *a1[] = {"--debug=true"};
	assert_int_equal(flags(c, 1, a1, NULL, NULL), 0);
	assert_int_equal(c->debug, 1);
	char *a2[] = {"--debug=false"};
	assert_int_equal(flags(c, 1, a2, NULL, NULL), 0);
	assert_int_equal(c->debug, 0);
	char *a3[] = {"--debug=FALSE", "--debug=True"};
	assert_int_equal(flags(c, 2, a3, NULL, NULL), 0);
	assert_int_equal(c->debug, 1);
	/* A bare bool does not take the next argument. */
	char *a4[] = {"--debug", "false"};
	char *pos[4];
	size_t npos;
	assert_int_equal(flags(c, 2, a4, pos, &npos), 0);
	assert_int_equal(c->debug, 1);
	assert_int_equal(npos, 1);
	assert_string_equal(pos[0], "false");
	char *a5[] = {"--debug=maybe"};
	assert_int_equal(flags(c, 1, a5, NULL, NULL), -1);
	assert_err_has("--debug");
	assert_err_has("maybe");
}

static void test_flags_errors(void **state)
{
	struct tcfg *c = *state;
	char *a1[] = {"--nope"};
	assert_int_equal(flags(c, 1, a1, NULL, NULL), -1);
	assert_string_equal(err, "unknown flag: --nope");
	char *a2[] = {"--nope=3"};
	assert_int_equal(flags(c, 1, a2, NULL, NULL), -1);
	assert_string_equal(err, "unknown flag: --nope");
	/* The flag spelling is '-', never the YAML '_'. */
	char *a3[] = {"--proxy.http.read_timeout=1s"};
	assert_int_equal(flags(c, 1, a3, NULL, NULL), -1);
	assert_string_equal(err, "unknown flag: --proxy.http.read_timeout");
	/* A prefix is not a flag. */
	char *a4[] = {"--proxy", "x"};
	assert_int_equal(flags(c, 2, a4, NULL, NULL), -1);
	assert_string_equal(err, "unknown flag: --proxy");
	/* YAML-only options and lists have no flag. */
	char *a5[] = {"--auth.secret", "x"};
	assert_int_equal(flags(c, 2, a5, NULL, NULL), -1);
	assert_string_equal(err, "unknown flag: --auth.secret");
	char *a6[] = {"--upstreams", "x"};
	assert_int_equal(flags(c, 2, a6, NULL, NULL), -1);
	/* Missing value. */
	char *a7[] = {"--name"};
	assert_int_equal(flags(c, 1, a7, NULL, NULL), -1);
	assert_err_has("--name");
	assert_err_has("argument");
	/* Bad values. */
	char *a8[] = {"--proxy.port", "80x"};
	assert_int_equal(flags(c, 2, a8, NULL, NULL), -1);
	assert_err_has("invalid value for --proxy.port");
	assert_err_has("\"80x\"");
	char *a9[] = {"--proxy.http.read-timeout=30"};
	assert_int_equal(flags(c, 1, a9, NULL, NULL), -1);
	assert_err_has("--proxy.http.read-timeout");
	/* Positionals beyond the cap (4 in flags()). */
	char *a10[] = {"1", "2", "3", "4", "5"};
	char *pos[4];
	size_t npos;
	assert_int_equal(flags(c, 5, a10, pos, &npos), -1);
	assert_err_has("too many arguments");
	/* No room for positionals at all. */
	char *a11[] = {"x"};
	assert_int_equal(flags(c, 1, a11, NULL, NULL), -1);
	/* Values are kept on failure. */
	assert_int_equal(c->port, 8000);
	assert_int_equal(c->read_timeout, 30000);
}

static void test_flags_dashdash(void **state)
{
	struct tcfg *c = *state;
	char *argv[] = {"--debug", "--", "--name", "-x"};
	char *pos[4];
	size_t npos;
	assert_int_equal(flags(c, 4, argv, pos, &npos), 0);
	assert_int_equal(npos, 2);
	assert_string_equal(pos[0], "--name");
	assert_string_equal(pos[1], "-x");
	assert_string_equal(c->name, "piko");
}

static void test_flags_strlist(void **state)
{
	struct tcfg *c = *state;
	/* The first use replaces the default; later uses append. */
	char *argv[] = {"--log.subsystems", "x,y", "--log.subsystems=z"};
	assert_int_equal(flags(c, 3, argv, NULL, NULL), 0);
	assert_int_equal(c->subsystems.n, 3);
	assert_string_equal(c->subsystems.v[0], "x");
	assert_string_equal(c->subsystems.v[1], "y");
	assert_string_equal(c->subsystems.v[2], "z");
	char *a2[] = {"--log.subsystems="};
	assert_int_equal(flags(c, 1, a2, NULL, NULL), 0);
	assert_int_equal(c->subsystems.n, 0);
}

static void test_flags_config(void **state)
{
	struct tcfg *c = *state;
	const char *path = NULL;
	int expand = 0;
	char *argv[] = {"--config.path", "/etc/piko.yaml", "--config.expand-env"};
	assert_int_equal(pk_config_parse_flags(opts, c, 3, argv, NULL, 0, NULL, &path, &expand, err,
	                                       sizeof(err)),
	                 0);
	assert_string_equal(path, "/etc/piko.yaml");
	assert_int_equal(expand, 1);
	char *a2[] = {"--config.path=/x.yaml", "--config.expand-env=false"};
	assert_int_equal(
	    pk_config_parse_flags(opts, c, 2, a2, NULL, 0, NULL, &path, &expand, err, sizeof(err)),
	    0);
	assert_string_equal(path, "/x.yaml");
	assert_int_equal(expand, 0);
	/* Refused when the caller passes NULL. */
	assert_int_equal(flags(c, 2, argv, NULL, NULL), -1);
	assert_string_equal(err, "unknown flag: --config.path");
	assert_int_equal(flags(c, 1, argv + 2, NULL, NULL), -1);
	assert_string_equal(err, "unknown flag: --config.expand-env");
}

static void test_yaml_nested(void **state)
{
	struct tcfg *c = *state;
	assert_int_equal(yaml(c, "# comment\n"
	                         "name: node-1\n"
	                         "debug: TRUE\n"
	                         "proxy:\n"
	                         "  port: -12\n"
	                         "  ratio: 1.5e1\n"
	                         "  http:\n"
	                         "    read_timeout: 1h30m\n"
	                         "  bind_addr: \"0.0.0.0:8001\"\n"
	                         "log:\n"
	                         "  subsystems: [proxy, 'admin', \"x y\"]\n"
	                         "auth: {secret: s3cr3t}\n"),
	                 0);
	assert_string_equal(c->name, "node-1");
	assert_int_equal(c->debug, 1);
	assert_int_equal(c->port, -12);
	assert_true(c->ratio == 15.0);
	assert_int_equal(c->read_timeout, 5400000);
	assert_string_equal(c->bind, "0.0.0.0:8001");
	assert_int_equal(c->subsystems.n, 3);
	assert_string_equal(c->subsystems.v[0], "proxy");
	assert_string_equal(c->subsystems.v[1], "admin");
	assert_string_equal(c->subsystems.v[2], "x y");
	assert_string_equal(c->secret, "s3cr3t");
}

static void test_yaml_unknown_key(void **state)
{
	struct tcfg *c = *state;
	assert_int_equal(yaml(c, "proxy:\n  foo: 1\n"), -1);
	assert_err_has("unknown key: proxy.foo");
	assert_err_has("line 2");
	assert_int_equal(yaml(c, "proxy:\n  http:\n    bar: 1s\n"), -1);
	assert_err_has("unknown key: proxy.http.bar");
	assert_int_equal(yaml(c, "nope: 1\n"), -1);
	assert_err_has("unknown key: nope");
	/* A dotted key is not a shortcut for nesting. */
	assert_int_equal(yaml(c, "proxy.port: 1\n"), -1);
	assert_err_has("unknown key: proxy.port");
	/* Flag spelling is not a YAML key. */
	assert_int_equal(yaml(c, "proxy:\n  bind-addr: x\n"), -1);
	assert_err_has("unknown key: proxy.bind-addr");
	/* A key that needs quoting is quoted. */
	assert_int_equal(yaml(c, "\"a\\tb\": 1\n"), -1);
	assert_err_has("unknown key: \"a\\x09b\"");
}

static void test_yaml_wrong_type(void **state)
{
	struct tcfg *c = *state;
	assert_int_equal(yaml(c, "proxy:\n  port: abc\n"), -1);
	assert_err_has("invalid value for proxy.port: \"abc\"");
	assert_int_equal(yaml(c, "proxy:\n  http:\n    read_timeout: abc\n"), -1);
	assert_err_has("invalid value for proxy.http.read_timeout: \"abc\"");
	assert_int_equal(yaml(c, "proxy:\n  http:\n    read_timeout: 30\n"), -1);
	assert_err_has("proxy.http.read_timeout");
	assert_int_equal(yaml(c, "debug: yes\n"), -1);
	assert_err_has("invalid value for debug");
	assert_int_equal(yaml(c, "proxy:\n  ratio: nan\n"), -1);
	assert_int_equal(yaml(c, "proxy:\n  port: 99999999999999999999\n"), -1);
	assert_int_equal(yaml(c, "proxy:\n  port: 0x10\n"), -1);
	assert_int_equal(yaml(c, "proxy:\n  port: [1]\n"), -1);
	assert_err_has("invalid value for proxy.port");
	assert_int_equal(yaml(c, "proxy: 5\n"), -1);
	assert_err_has("invalid value for proxy: want a mapping");
	assert_int_equal(yaml(c, "name: {a: b}\n"), -1);
	assert_err_has("invalid value for name");
	assert_int_equal(yaml(c, "log:\n  subsystems: x\n"), -1);
	assert_err_has("log.subsystems");
	assert_int_equal(yaml(c, "log:\n  subsystems: [[x]]\n"), -1);
	assert_err_has("log.subsystems[0]");
	assert_int_equal(yaml(c, "[1, 2]\n"), -1);
	assert_err_has("top level");
	assert_int_equal(yaml(c, "hello\n"), -1);
	assert_int_equal(yaml(c, "name: \"a\\0b\"\n"), -1);
	assert_err_has("invalid value for name");
	/* Failed loads leave a config pk_config_free can still free. */
	assert_int_equal(c->port, 8000);
}

static void test_yaml_null_and_empty(void **state)
{
	struct tcfg *c = *state;
	assert_int_equal(yaml(c, ""), 0);
	assert_int_equal(yaml(c, "---\n"), 0);
	assert_int_equal(yaml(c, "# only a comment\n"), 0);
	assert_int_equal(yaml(c, "~\n"), 0);
	assert_int_equal(yaml(c, "proxy:\n"), 0);
	assert_int_equal(yaml(c, "name: ~\nproxy:\n  port:\n"), 0);
	assert_string_equal(c->name, "piko");
	assert_int_equal(c->port, 8000);
	/* An empty quoted string is a value, not null. */
	assert_int_equal(yaml(c, "name: ''\n"), 0);
	assert_string_equal(c->name, "");
	/* Null empties a list. */
	assert_int_equal(yaml(c, "log:\n  subsystems: null\n"), 0);
	assert_int_equal(c->subsystems.n, 0);
	assert_int_equal(pk_config_load_yaml_buf(opts, c, NULL, 0, 0, err, sizeof(err)), 0);
	/* Only the first document is read. */
	assert_int_equal(yaml(c, "name: one\n---\nname: two\n"), 0);
	assert_string_equal(c->name, "one");
}

static void test_yaml_errors(void **state)
{
	struct tcfg *c = *state;
	assert_int_equal(yaml(c, "name: a\nproxy:\n  port: 1\n bad\n"), -1);
	assert_err_has("yaml: line ");
	assert_int_equal(yaml(c, "name: a\nname: [\n"), -1);
	assert_err_has("line 2");
	assert_int_equal(yaml(c, "name: 'unterminated\n"), -1);
	assert_err_has("yaml: line");
	/* Anchors and aliases are refused. */
	assert_int_equal(yaml(c, "name: &a x\nproxy:\n  bind_addr: *a\n"), -1);
	assert_err_has("anchors and aliases");
	/* Duplicate keys, also for a prefix. */
	assert_int_equal(yaml(c, "name: a\nname: b\n"), -1);
	assert_err_has("duplicate key: name");
	assert_err_has("line 2");
	assert_int_equal(yaml(c, "proxy:\n  port: 1\nproxy:\n  ratio: 1\n"), -1);
	assert_err_has("duplicate key: proxy");
	/* A complex key. */
	assert_int_equal(yaml(c, "? [a]\n: 1\n"), -1);
	assert_err_has("keys must be scalars");
}

static void test_yaml_list(void **state)
{
	struct tcfg *c = *state;
	assert_int_equal(yaml(c, "upstreams:\n"
	                         "  - url: http://a\n"
	                         "    weight: 3\n"
	                         "    tls:\n"
	                         "      enabled: true\n"
	                         "  - url: http://b\n"
	                         "  - {timeout: 250ms}\n"
	                         "  -\n"),
	                 0);
	assert_int_equal(c->upstreams.n, 4);
	struct upstream *u = c->upstreams.v;
	assert_string_equal(u[0].url, "http://a");
	assert_int_equal(u[0].weight, 3);
	assert_int_equal(u[0].tls, 1);
	assert_int_equal(u[0].timeout, 5000);
	/* Sub-table defaults apply to every element. */
	assert_string_equal(u[1].url, "http://b");
	assert_int_equal(u[1].weight, 1);
	assert_int_equal(u[1].tls, 0);
	assert_int_equal(u[1].timeout, 5000);
	assert_null(u[2].url);
	assert_int_equal(u[2].timeout, 250);
	assert_null(u[3].url);
	assert_int_equal(u[3].weight, 1);

	/* A second load replaces the list. */
	assert_int_equal(yaml(c, "upstreams: [{url: x}]\n"), 0);
	assert_int_equal(c->upstreams.n, 1);
	assert_string_equal(((struct upstream *)c->upstreams.v)[0].url, "x");

	/* Errors name the element; the old list survives a failed load. */
	assert_int_equal(yaml(c, "upstreams:\n  - url: a\n  - url: b\n    foo: 1\n"), -1);
	assert_err_has("unknown key: upstreams[1].foo");
	assert_err_has("line 4");
	assert_int_equal(yaml(c, "upstreams:\n  - url: a\n  - tls: {enabled: 3}\n"), -1);
	assert_err_has("invalid value for upstreams[1].tls.enabled: \"3\"");
	assert_int_equal(yaml(c, "upstreams:\n  - a\n"), -1);
	assert_err_has("invalid value for upstreams[0]: want a mapping");
	assert_int_equal(yaml(c, "upstreams: {url: a}\n"), -1);
	assert_err_has("upstreams");
	assert_int_equal(c->upstreams.n, 1);
	assert_string_equal(((struct upstream *)c->upstreams.v)[0].url, "x");
}

static void test_yaml_file(void **state)
{
	struct tcfg *c = *state;
	char path[] = "/tmp/pk_test_config_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *text = "name: from-file\nproxy:\n  port: 7\n";
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	assert_int_equal(pk_config_load_yaml(opts, c, path, 0, err, sizeof(err)), 0);
	assert_string_equal(c->name, "from-file");
	assert_int_equal(c->port, 7);
	unlink(path);
	assert_int_equal(pk_config_load_yaml(opts, c, path, 0, err, sizeof(err)), -1);
	assert_err_has(path);
	assert_err_has("No such file");
}

static void test_yaml_file_error_names_path(void **state)
{
	struct tcfg *c = *state;
	char path[] = "/tmp/pk_test_config_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *text = "proxy:\n  foo: 1\n";
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	assert_int_equal(pk_config_load_yaml(opts, c, path, 0, err, sizeof(err)), -1);
	assert_err_has(path);
	assert_err_has("unknown key: proxy.foo");
	unlink(path);
}

static void expect_expand(const char *in, const char *want)
{
	char *out = pk_config_expand_env(in);
	assert_non_null(out);
	if (strcmp(out, want) != 0)
		fail_msg("expand(%s) = \"%s\", want \"%s\"", in, out, want);
	free(out);
}

static void test_expand_env(void **state)
{
	(void)state;
	setenv("PK_T_SET", "val", 1);
	setenv("PK_T_EMPTY", "", 1);
	unsetenv("PK_T_UNSET");
	expect_expand("", "");
	expect_expand("plain", "plain");
	expect_expand("$PK_T_SET", "val");
	expect_expand("a${PK_T_SET}b", "avalb");
	expect_expand("$PK_T_SET-x", "val-x");
	expect_expand("$PK_T_SETx", "");
	expect_expand("${PK_T_UNSET}", "");
	expect_expand("$PK_T_UNSET", "");
	expect_expand("${PK_T_UNSET:def}", "def");
	expect_expand("${PK_T_EMPTY:def}", "def");
	expect_expand("${PK_T_SET:def}", "val");
	expect_expand("${PK_T_UNSET:}", "");
	expect_expand("${PK_T_UNSET:a:b}", "a:b");
	expect_expand("${PK_T_UNSET:http://x:80/y}", "http://x:80/y");
	/* Go os.Expand edge cases. */
	expect_expand("cost: 5$", "cost: 5$");
	expect_expand("a $ b", "a $ b");
	expect_expand("$/", "$/");
	expect_expand("${}x", "x");
	expect_expand("${unclosed", "unclosed");
	expect_expand("$$", "");
	expect_expand("$1x", "x");
	expect_expand("${1}", "");
	expect_expand("$-", "");
	expect_expand("${PK_T_SET}${PK_T_SET}", "valval");
	expect_expand("${A=B}", "");
	/* Through the loader. */
	struct tcfg *c = calloc(1, sizeof(*c));
	assert_int_equal(pk_config_defaults(opts, c, err, sizeof(err)), 0);
	const char *text = "name: ${PK_T_SET}\nproxy:\n  bind_addr: ${PK_T_UNSET:0.0.0.0:1}\n";
	assert_int_equal(pk_config_load_yaml_buf(opts, c, text, strlen(text), 1, err, sizeof(err)),
	                 0);
	assert_string_equal(c->name, "val");
	assert_string_equal(c->bind, "0.0.0.0:1");
	/* Without expansion the text is taken literally. */
	assert_int_equal(pk_config_load_yaml_buf(opts, c, text, strlen(text), 0, err, sizeof(err)),
	                 0);
	assert_string_equal(c->name, "${PK_T_SET}");
	pk_config_free(opts, c);
	free(c);
}

static void test_durations(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		int64_t ms;
	} ok[] = {
	    {"0", 0},
	    {"+0", 0},
	    {"-0", 0},
	    {"300ms", 300},
	    {"1.5s", 1500},
	    {"1s", 1000},
	    {"2m", 120000},
	    {"1h", 3600000},
	    {"1h30m", 5400000},
	    {"1h30m15s", 5415000},
	    {"1.5h", 5400000},
	    {".5s", 500},
	    {"1.s", 1000},
	    {"1500us", 1},
	    {"1500\xc2\xb5s", 1},
	    {"1500\xce\xbcs", 1},
	    {"999999ns", 0},
	    {"1000000ns", 1},
	    {"-1.5s", -1500},
	    {"-1ns", -1}, /* floored */
	    {"10s500ms", 10500},
	    {"0s", 0},
	    {"0.000000001h", 0},
	    {"2562047h", 2562047LL * 3600000},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		int64_t ms = -42;
		if (pk_parse_duration(ok[i].in, &ms) != 0)
			fail_msg("duration %s rejected", ok[i].in);
		if (ms != ok[i].ms)
			fail_msg("duration %s = %lld, want %lld", ok[i].in, (long long)ms,
			         (long long)ok[i].ms);
	}
	static const char *bad[] = {
	    "",         "30",     "abc",  "1x",  "s",    ".s",    "-",
	    "+",        "1h-30m", " 1s",  "1s ", "1e3s", "1..5s", "9999999999999999999h",
	    "2562048h", "1.5",    "--1s", "1s2", "0x1s",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int64_t ms = 0;
		if (pk_parse_duration(bad[i], &ms) == 0)
			fail_msg("duration \"%s\" accepted", bad[i]);
	}
	int64_t ms;
	assert_int_equal(pk_parse_duration(NULL, &ms), -1);
}

static void test_precedence(void **state)
{
	/* The caller's flow: defaults, then YAML, then flags. */
	struct tcfg *c = *state;
	assert_int_equal(yaml(c, "name: from-yaml\nproxy:\n  port: 1\n"), 0);
	char *argv[] = {"--name", "from-flag"};
	assert_int_equal(flags(c, 2, argv, NULL, NULL), 0);
	assert_string_equal(c->name, "from-flag");
	assert_int_equal(c->port, 1);
	assert_string_equal(c->bind, ":8000");
}

static void test_help(void **state)
{
	(void)state;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	pk_config_print_help(opts, f);
	fclose(f);
	assert_non_null(strstr(buf, "  --proxy.http.read-timeout duration"));
	assert_non_null(strstr(buf, "read timeout (default 30s)\n"));
	assert_non_null(strstr(buf, "  --debug "));
	assert_null(strstr(buf, "--debug bool"));
	assert_non_null(strstr(buf, "--log.subsystems strings"));
	assert_null(strstr(buf, "secret"));
	assert_null(strstr(buf, "upstreams"));
	assert_null(strstr(buf, "no default (default"));
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
	    cmocka_unit_test(test_bad_default),
	    cmocka_unit_test_setup_teardown(test_flags_basic, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flags_bool, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flags_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flags_dashdash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flags_strlist, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flags_config, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_yaml_nested, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_yaml_unknown_key, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_yaml_wrong_type, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_yaml_null_and_empty, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_yaml_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_yaml_list, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_yaml_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_yaml_file_error_names_path, setup, teardown),
	    cmocka_unit_test(test_expand_env),
	    cmocka_unit_test(test_durations),
	    cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
	    cmocka_unit_test(test_help),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
