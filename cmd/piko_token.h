/*
 * `piko token create`: mint a JWT that a server's `<port>.auth` keys accept
 * (protocol reference §5), limited to the endpoints it names with Piko's
 * `"piko": {"endpoints": [...]}` claim. Our addition: Piko has no such
 * command (its users mint tokens with their own tools).
 */
#ifndef PK_PIKO_TOKEN_H
#define PK_PIKO_TOKEN_H

/* Run `piko token` with the arguments after "token". Prints the token (one
 * line) on stdout; errors on stderr. Returns the process exit code: 0, 1 for
 * a key problem (unreadable, empty, or of the wrong kind for --alg), 2 for a
 * usage error. */
int pk_token_main(int argc, char **argv);

/* The one-line summary of the token commands, for `piko --help`. */
#define PK_TOKEN_SUMMARY                                                                           \
	"  token create --key-file F --endpoint E\n"                                               \
	"                     print a signed token (JWT) the server's auth accepts\n"

#endif
