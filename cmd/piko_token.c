/*
 * piko token create: sign a JWT with libjwt for the upstream (or proxy) port
 * of a server whose `<port>.auth` holds the matching key (auth.h).
 *
 *   HS256  the key file holds the shared secret: its bytes, trailing line
 *          ends dropped (as `$(cat F)` and cluster.auth.key_file), which is
 *          the text to give the server as <port>.auth.hmac_secret_key
 *   RS256  the key file holds a PEM RSA private key; the server takes its
 *          public key (<port>.auth.rsa_public_key)
 *   ES256  a PEM EC P-256 private key (<port>.auth.ecdsa_public_key)
 *
 * Claims: `piko.endpoints` (the --endpoint list), `iat`, `exp` = iat + ttl
 * unless ttl is 0, and `aud`, `iss`, `sub` when given. No `nbf`: servers
 * check it with no leeway, so a server whose clock is a second behind ours
 * would refuse a fresh token; `iat` is informational (not checked by Piko).
 *
 * Exit codes: 2 for usage errors (flags, arguments), 1 for key problems.
 */
#include "piko_token.h"

#include <errno.h>
#include <json-c/json.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "buf.h"
#include "config.h"

#define EXIT_KEY 1
#define EXIT_USAGE 2
#define POS_CAP 8
/* A secret or a PEM private key (an RSA 8192 key is about 6.5 KB): 64 KiB is
 * plenty, and keeps a wrong path (a log, a binary) from being read whole. */
#define KEY_FILE_MAX 65536

struct token_config {
	char *key_file;
	struct pk_strlist endpoints;
	int64_t ttl_ms;
	char *alg;
	char *audience;
	char *issuer;
	char *subject;
};

#define O(f) offsetof(struct token_config, f)
static const struct pk_opt token_opts[] = {
    {"key_file", PK_OPT_STRING, O(key_file), NULL,
     "the signing key: an HMAC secret (HS256) or a PEM private key (RS256, ES256); required", 0,
     NULL, 0},
    {"endpoint", PK_OPT_STRLIST, O(endpoints), NULL,
     "endpoint the token may register or reach (repeat, or a comma list; at least one)", 0, NULL,
     0},
    {"ttl", PK_OPT_DURATION, O(ttl_ms), "1h",
     "lifetime (exp = now + ttl, in whole seconds rounded up); 0: no exp, never expires", 0, NULL,
     0},
    {"alg", PK_OPT_STRING, O(alg), "HS256", "signing algorithm: HS256, RS256 or ES256", 0, NULL, 0},
    {"audience", PK_OPT_STRING, O(audience), NULL,
     "the token's aud (needed when the server sets <port>.auth.audience)", 0, NULL, 0},
    {"issuer", PK_OPT_STRING, O(issuer), NULL,
     "the token's iss (needed when the server sets <port>.auth.issuer)", 0, NULL, 0},
    {"subject", PK_OPT_STRING, O(subject), NULL, "the token's sub (for your logs)", 0, NULL, 0},
    {NULL, 0, 0, NULL, NULL, 0, NULL, 0},
};
#undef O

static void usage_create(FILE *out)
{
	fprintf(out,
	        "Usage: piko token create --key-file F --endpoint E [--endpoint E2 ...] [flags]\n\n"
	        "Print a signed token (JWT) for the endpoints given, on one line. Agents send it\n"
	        "with --connect.token, clients as 'Authorization: Bearer <token>'. The server\n"
	        "verifies it with the same secret (HS256: --upstream.auth.hmac-secret-key\n"
	        "\"$(cat F)\") or the public key of F (RS256: --upstream.auth.rsa-public-key,\n"
	        "ES256: --upstream.auth.ecdsa-public-key; openssl pkey -in F -pubout). An HMAC\n"
	        "secret is the file's bytes without trailing newlines. The token carries iat,\n"
	        "exp (unless --ttl 0), aud/iss/sub when given, and \"piko\": {\"endpoints\": "
	        "[...]}.\n\n"
	        "Flags:\n");
	pk_config_print_help(token_opts, out);
}

static int usage_error(const char *what, const char *arg)
{
	fprintf(stderr, "token create: %s%s\nRun 'piko token create --help' for its flags.\n", what,
	        arg ? arg : "");
	return EXIT_USAGE;
}

static int key_error(const char *path, const char *why)
{
	fprintf(stderr, "token create: key file %s: %s\n", path, why);
	return EXIT_KEY;
}

/* The whole file into a NUL-terminated buffer (owned by the caller; *len
 * excludes the terminator), or NULL with why set. */
static char *read_key_file(const char *path, size_t *len, const char **why)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		*why = strerror(errno);
		return NULL;
	}
	char *buf = pk_xmalloc(KEY_FILE_MAX + 1);
	errno = 0;
	size_t n = fread(buf, 1, KEY_FILE_MAX, f);
	int err = ferror(f) ? (errno ? errno : EIO) : 0;
	int whole = n < KEY_FILE_MAX || fgetc(f) == EOF;
	fclose(f);
	if (err || !whole) {
		*why = err ? strerror(err) : "larger than 64 KiB"; /* e.g. a directory */
		OPENSSL_cleanse(buf, n);
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*len = n;
	return buf;
}

/* Decoding an encrypted key must fail, never prompt on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

/* The HMAC secret: the file's bytes without trailing line ends, as the
 * server gets them from `$(cat F)`. It is text on the server's side
 * (hmac_secret_key is a string), so a NUL byte cannot be part of it. */
static int hmac_key(const char *path, const char *text, size_t len, size_t *key_len)
{
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		len--;
	*key_len = len;
	if (len == 0)
		return key_error(path, "empty");
	if (memchr(text, '\0', len))
		return key_error(path, "holds a NUL byte: the server's hmac_secret_key is text "
		                       "(e.g. head -c 32 /dev/urandom | base64 > F)");
	if (strstr(text, "-----BEGIN "))
		return key_error(path, "holds a PEM key, not an HMAC secret: use --alg RS256 or "
		                       "ES256 for a private key");
	return 0;
}

/* A PEM private key of the kind alg needs, rewritten as PKCS#8 PEM for
 * libjwt into *pem (owned by the caller). */
static int private_key(const char *path, const char *text, jwt_alg_t alg, char **pem,
                       size_t *pem_len)
{
	int rc = EXIT_KEY;
	EVP_PKEY *pkey = NULL;
	BIO *in = BIO_new_mem_buf(text, -1);
	BIO *out = BIO_new(BIO_s_mem());
	if (!in || !out)
		abort(); /* OOM: the project's policy */
	pkey = PEM_read_bio_PrivateKey(in, NULL, no_passphrase, NULL);
	if (!pkey) {
		if (strstr(text, "ENCRYPTED"))
			key_error(path, "an encrypted private key (decrypt it first: openssl pkey "
			                "-in F -out F2)");
		else if (strstr(text, "PUBLIC KEY-----") || strstr(text, "CERTIFICATE-----"))
			key_error(path, "holds a public key or certificate: signing needs the "
			                "private key (the server takes the public one)");
		else
			key_error(path, "no PEM private key in it");
		goto out;
	}
	if (alg == JWT_ALG_RS256 && !EVP_PKEY_is_a(pkey, "RSA")) {
		key_error(path, "not an RSA private key: RS256 needs one (ES256 signs with an EC "
		                "P-256 key)");
		goto out;
	}
	if (alg == JWT_ALG_ES256) {
		char group[64] = "";
		if (!EVP_PKEY_is_a(pkey, "EC")) {
			key_error(path,
			          "not an EC private key: ES256 needs a P-256 one (RS256 signs "
			          "with an RSA key)");
			goto out;
		}
		if (!EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL) ||
		    (strcmp(group, "prime256v1") && strcmp(group, "P-256"))) {
			fprintf(stderr,
			        "token create: key file %s: an EC key on curve %s: ES256 needs "
			        "P-256 (prime256v1)\n",
			        path, group[0] ? group : "(unknown)");
			goto out;
		}
	}
	if (!PEM_write_bio_PrivateKey(out, pkey, NULL, NULL, 0, NULL, NULL)) {
		key_error(path, "cannot re-encode the private key");
		goto out;
	}
	char *data;
	long n = BIO_get_mem_data(out, &data);
	*pem = pk_xmalloc((size_t)n + 1);
	memcpy(*pem, data, (size_t)n);
	(*pem)[n] = '\0';
	*pem_len = (size_t)n;
	rc = 0;
out:
	EVP_PKEY_free(pkey);
	BIO_free(in);
	BIO_free(out); /* BIO_s_mem clears its buffer on free */
	return rc;
}

/* The `piko` claim as JSON text (owned by the caller). */
static char *endpoints_claim(const struct pk_strlist *eps)
{
	struct json_object *root = json_object_new_object();
	struct json_object *piko = json_object_new_object();
	struct json_object *list = json_object_new_array();
	if (!root || !piko || !list)
		abort();
	for (size_t i = 0; i < eps->n; i++)
		json_object_array_add(list, json_object_new_string(eps->v[i]));
	json_object_object_add(piko, "endpoints", list);
	json_object_object_add(root, "piko", piko);
	char *s = pk_xstrdup(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN));
	json_object_put(root);
	return s;
}

/* Sign the claims with key (len bytes); prints the token. Returns 0 or 1. */
static int sign_and_print(const struct token_config *cfg, jwt_alg_t alg, const char *key,
                          size_t len)
{
	jwt_t *jwt = NULL;
	if (jwt_new(&jwt) != 0)
		abort();
	int64_t now = pk_auth_now(); /* the clock servers compare exp with */
	char *claim = endpoints_claim(&cfg->endpoints);
	int bad = jwt_add_grants_json(jwt, claim) != 0;
	free(claim);
	if (cfg->audience && *cfg->audience)
		bad |= jwt_add_grant(jwt, "aud", cfg->audience) != 0;
	if (cfg->issuer && *cfg->issuer)
		bad |= jwt_add_grant(jwt, "iss", cfg->issuer) != 0;
	if (cfg->subject && *cfg->subject)
		bad |= jwt_add_grant(jwt, "sub", cfg->subject) != 0;
	bad |= jwt_add_grant_int(jwt, "iat", (long)now) != 0;
	if (cfg->ttl_ms > 0)
		bad |= jwt_add_grant_int(jwt, "exp", (long)(now + (cfg->ttl_ms + 999) / 1000)) != 0;
	char *tok = NULL;
	if (!bad && jwt_set_alg(jwt, alg, (const unsigned char *)key, (int)len) == 0)
		tok = jwt_encode_str(jwt);
	jwt_free(jwt);
	if (!tok) {
		fprintf(stderr, "token create: signing failed (the key does not suit %s)\n",
		        cfg->alg);
		return EXIT_KEY;
	}
	printf("%s\n", tok);
	free(tok); /* libjwt 1.10: malloc'ed */
	return fflush(stdout) == 0 ? 0 : EXIT_KEY;
}

static int wants_help(int argc, char **argv)
{
	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return 1;
	return 0;
}

/* Everything about the flags that makes a usage error (exit 2); 0 when
 * they are fine, with *alg set. */
static int check_flags(const struct token_config *cfg, jwt_alg_t *alg)
{
	if (!cfg->key_file || !*cfg->key_file)
		return usage_error("--key-file is required", NULL);
	if (cfg->endpoints.n == 0)
		return usage_error("at least one --endpoint is required", NULL);
	for (size_t i = 0; i < cfg->endpoints.n; i++)
		if (!*cfg->endpoints.v[i])
			return usage_error("an empty --endpoint", NULL);
	if (cfg->ttl_ms < 0)
		return usage_error("--ttl must not be negative (0: no expiry)", NULL);
	if (!strcmp(cfg->alg, "HS256"))
		*alg = JWT_ALG_HS256;
	else if (!strcmp(cfg->alg, "RS256"))
		*alg = JWT_ALG_RS256;
	else if (!strcmp(cfg->alg, "ES256"))
		*alg = JWT_ALG_ES256;
	else
		return usage_error("--alg must be HS256, RS256 or ES256, not ", cfg->alg);
	return 0;
}

static int cmd_create(int argc, char **argv)
{
	if (wants_help(argc, argv)) {
		usage_create(stdout);
		return 0;
	}
	struct token_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	char err[512];
	char *pos[POS_CAP];
	size_t npos = 0;
	jwt_alg_t alg = JWT_ALG_NONE;
	int rc;
	if (pk_config_defaults(token_opts, &cfg, err, sizeof(err)) < 0 ||
	    pk_config_parse_flags(token_opts, &cfg, argc, argv, pos, POS_CAP, &npos, NULL, NULL,
	                          err, sizeof(err)) < 0)
		rc = usage_error(err, NULL);
	else if (npos)
		rc = usage_error("unexpected argument: ", pos[0]);
	else
		rc = check_flags(&cfg, &alg);
	if (rc) {
		pk_config_free(token_opts, &cfg);
		return rc;
	}

	const char *why = NULL;
	size_t len = 0;
	char *text = read_key_file(cfg.key_file, &len, &why);
	if (!text) {
		rc = key_error(cfg.key_file, why);
	} else if (len == 0) {
		rc = key_error(cfg.key_file, "empty");
	} else if (alg == JWT_ALG_HS256) {
		size_t key_len = 0;
		rc = hmac_key(cfg.key_file, text, len, &key_len);
		if (!rc)
			rc = sign_and_print(&cfg, alg, text, key_len);
	} else if (memchr(text, '\0', len)) {
		rc = key_error(cfg.key_file, "no PEM private key in it");
	} else {
		char *pem = NULL;
		size_t pem_len = 0;
		rc = private_key(cfg.key_file, text, alg, &pem, &pem_len);
		if (!rc) {
			rc = sign_and_print(&cfg, alg, pem, pem_len);
			OPENSSL_cleanse(pem, pem_len);
			free(pem);
		}
	}
	if (text) {
		OPENSSL_cleanse(text, len);
		free(text);
	}
	pk_config_free(token_opts, &cfg);
	return rc;
}

int pk_token_main(int argc, char **argv)
{
	if (argc >= 1 && !strcmp(argv[0], "create"))
		return cmd_create(argc - 1, argv + 1);
	if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
		printf("Usage: piko token create --key-file F --endpoint E [flags]\n\n"
		       "Commands:\n" PK_TOKEN_SUMMARY
		       "\nRun 'piko token create --help' for its flags.\n");
		return 0;
	}
	if (argc >= 1)
		fprintf(stderr, "token: unknown command: %s\n", argv[0]);
	else
		fprintf(stderr, "token: missing command\n");
	fprintf(stderr, "Usage: piko token create --key-file F --endpoint E [flags]\n");
	return EXIT_USAGE;
}
