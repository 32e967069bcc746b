"""`piko token create`: tokens minted by the CLI, checked claim by claim
(the payload decoded here) and used for real: agents connecting to a real
`piko server` with upstream auth on the same key (HS256 secret file, RS256
and ES256 PEM keys made with openssl), clients on the proxy port; refused for
an endpoint not listed, after expiry, and with another key. Usage errors exit
2, key problems 1."""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time

from harness import CONFIG, PikoTestCase, T, child_env, need_peer, request, wait_for
from jwt_util import KeyPair, _run

SECRET = "token-cli-secret"


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def decode(tok):
    """(header, claims) of a compact JWT, unverified."""
    parts = tok.split(".")
    assert len(parts) == 3, tok
    return json.loads(b64url_decode(parts[0])), json.loads(b64url_decode(parts[1]))


class TokenCliBase(PikoTestCase):
    def cli(self, *args):
        """Runs `piko token ...`; returns (rc, stdout, stderr)."""
        p = subprocess.run([CONFIG.bin, "token"] + list(args), capture_output=True, text=True,
                           timeout=T(30), env=child_env())
        if CONFIG.sanitized:
            self.assertNotIn("Sanitizer", p.stderr)
            self.assertNotIn("runtime error", p.stderr)
        return p.returncode, p.stdout, p.stderr

    def mint(self, *args):
        rc, out, err = self.cli("create", *args)
        self.assertEqual(rc, 0, err)
        self.assertEqual(err, "")
        self.assertTrue(out.endswith("\n") and out.count("\n") == 1, repr(out))
        return out.strip()

    def secret_file(self, secret=SECRET, name="secret.key", suffix="\n"):
        path = os.path.join(self.tmpdir, name)
        with open(path, "w") as f:
            f.write(secret + suffix)
        return path

    def refused(self, srv, up, endpoint, tok, reason):
        a = self.agent(srv, endpoint, up.addr, "--connect.token", tok, wait=False)
        self.assertEqual(a.wait(T(15)), 1, a.describe())
        self.assertIn("connect: 401: %s" % reason, a.stderr())


class TokenClaimsTest(TokenCliBase):
    def test_claims(self):
        key = self.secret_file()
        t0 = int(time.time())
        tok = self.mint("--key-file", key, "--endpoint", "a", "--endpoint", "b,c",
                        "--audience", "piko", "--issuer", "https://issuer", "--subject", "me")
        t1 = int(time.time())
        header, claims = decode(tok)
        self.assertEqual(header, {"alg": "HS256", "typ": "JWT"})
        self.assertEqual(claims["piko"], {"endpoints": ["a", "b", "c"]})
        self.assertEqual((claims["aud"], claims["iss"], claims["sub"]),
                         ("piko", "https://issuer", "me"))
        self.assertTrue(t0 <= claims["iat"] <= t1, claims)
        self.assertEqual(claims["exp"] - claims["iat"], 3600)  # default --ttl 1h
        self.assertNotIn("nbf", claims)
        # signed with the file's bytes without the trailing newline
        signing_input, sig = tok.rsplit(".", 1)
        want = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
        self.assertEqual(b64url_decode(sig), want)

        _, claims = decode(self.mint("--key-file", key, "--endpoint", "a", "--ttl", "0"))
        self.assertEqual(set(claims), {"iat", "piko"})  # no exp, no aud/iss/sub
        _, claims = decode(self.mint("--key-file", key, "--endpoint", "a", "--ttl", "1500ms"))
        self.assertEqual(claims["exp"] - claims["iat"], 2)  # rounded up
        _, claims = decode(self.mint("--key-file", key, "--endpoint", "a", "--ttl", "1h30m"))
        self.assertEqual(claims["exp"] - claims["iat"], 5400)

        # CRLF and several trailing newlines are dropped too; inner bytes kept
        for suffix in ("\r\n", "\n\n", ""):
            with self.subTest(suffix=suffix):
                k = self.secret_file(name="s%d.key" % len(suffix), suffix=suffix)
                tok = self.mint("--key-file", k, "--endpoint", "a")
                signing_input, sig = tok.rsplit(".", 1)
                self.assertEqual(b64url_decode(sig), hmac.new(
                    SECRET.encode(), signing_input.encode(), hashlib.sha256).digest())

    def test_help(self):
        rc, out, err = self.cli("create", "--help")
        self.assertEqual(rc, 0, err)
        for flag in ("--key-file", "--endpoint", "--ttl", "--alg", "--audience", "--issuer",
                     "--subject"):
            self.assertIn(flag, out)
        self.assertIn("(default 1h)", out)
        self.assertIn("(default HS256)", out)
        self.assertIn("0: no exp", out)
        p = subprocess.run([CONFIG.bin, "--help"], capture_output=True, text=True,
                           timeout=T(30), env=child_env())
        self.assertIn("token create", p.stdout)

    def test_usage_errors_exit_2(self):
        key = self.secret_file()
        cases = [
            ([], "token: missing command"),
            (["mint"], "token: unknown command: mint"),
            (["create", "--endpoint", "a"], "--key-file is required"),
            (["create", "--key-file", key], "at least one --endpoint is required"),
            (["create", "--key-file", key, "--endpoint", "a,,b"], "an empty --endpoint"),
            (["create", "--key-file", key, "--endpoint", "a", "--alg", "HS512"],
             "--alg must be HS256, RS256 or ES256, not HS512"),
            (["create", "--key-file", key, "--endpoint", "a", "--alg", "none"],
             "--alg must be HS256, RS256 or ES256, not none"),
            (["create", "--key-file", key, "--endpoint", "a", "--ttl", "soon"],
             "invalid value for --ttl"),
            (["create", "--key-file", key, "--endpoint", "a", "--ttl", "-1s"],
             "--ttl must not be negative"),
            (["create", "--key-file", key, "--endpoint", "a", "extra"],
             "unexpected argument: extra"),
            (["create", "--key-file", key, "--endpoint", "a", "--bogus"],
             "unknown flag: --bogus"),
            (["create", "--key-file"], "--key-file"),
        ]
        for args, msg in cases:
            with self.subTest(args=args):
                rc, out, err = self.cli(*args)
                self.assertEqual(rc, 2, err)
                self.assertEqual(out, "")
                self.assertIn(msg, err)

    def test_key_problems_exit_1(self):
        rsa = KeyPair(self.tmpdir, "rsa")
        ec = KeyPair(self.tmpdir, "ec")
        p384 = os.path.join(self.tmpdir, "p384.key")
        _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
              "ec_paramgen_curve:P-384", "-out", p384])
        enc = os.path.join(self.tmpdir, "enc.key")
        _run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
              "-aes256", "-pass", "pass:x", "-out", enc])
        empty = self.secret_file("", name="empty.key", suffix="")
        newlines = self.secret_file("", name="nl.key", suffix="\n\n")
        nul = os.path.join(self.tmpdir, "nul.key")
        with open(nul, "wb") as f:
            f.write(b"ab\0cd")
        missing = os.path.join(self.tmpdir, "missing.key")
        secret = self.secret_file()
        cases = [
            ("HS256", missing, "No such file or directory"),
            ("HS256", empty, "empty"),
            ("HS256", newlines, "empty"),
            ("HS256", nul, "NUL byte"),
            ("HS256", rsa.private, "holds a PEM key, not an HMAC secret"),
            ("RS256", empty, "empty"),
            ("RS256", secret, "no PEM private key"),
            ("RS256", ec.private, "not an RSA private key"),
            ("RS256", rsa.public, "holds a public key"),
            ("RS256", enc, "encrypted private key"),
            ("ES256", rsa.private, "not an EC private key"),
            ("ES256", p384, "ES256 needs P-256"),
            ("ES256", ec.public, "holds a public key"),
        ]
        for alg, path, msg in cases:
            with self.subTest(alg=alg, key=os.path.basename(path)):
                rc, out, err = self.cli("create", "--alg", alg, "--key-file", path,
                                        "--endpoint", "a")
                self.assertEqual(rc, 1, err)
                self.assertEqual(out, "")
                prefix = "token create: key file %s: " % path
                self.assertIn(prefix, err)
                self.assertIn(msg, err.split(prefix, 1)[1])


class TokenAuthTest(TokenCliBase):
    def test_hs256_agent_and_client(self):
        key = self.secret_file()  # with its trailing newline, as `echo secret > F`
        up = self.upstream()
        # the server gets the secret as `$(cat F)` would give it
        srv = self.server("--upstream.auth.hmac-secret-key", SECRET,
                          "--upstream.auth.audience", "piko",
                          "--upstream.auth.issuer", "https://issuer",
                          "--proxy.auth.hmac-secret-key", SECRET)
        tok = self.mint("--key-file", key, "--endpoint", "ep", "--endpoint", "ep-b",
                        "--audience", "piko", "--issuer", "https://issuer")
        # Agent.wait_ready polls the proxy without a token (401 here): poll
        # with one instead.
        self.agent(srv, "ep", up.addr, "--connect.token", tok, wait=False)
        self.agent(srv, "ep-b", up.addr, "--connect.token", tok, wait=False)

        def get(endpoint, t):
            return request(srv.proxy_port, "GET", "/status/200",
                           headers={"x-piko-endpoint": endpoint,
                                    "Authorization": "Bearer " + t})

        for ep in ("ep", "ep-b"):
            wait_for(lambda: get(ep, tok).status == 200, T(15), what="agent %s up" % ep)
        self.assertEqual(get("ep-b", tok).status, 200)
        client = self.mint("--key-file", key, "--endpoint", "ep")
        self.assertEqual(get("ep", client).status, 200)
        r = get("ep-b", client)
        self.assertEqual((r.status, r.body), (401, b'{"error":"endpoint not permitted"}'))

        self.refused(srv, up, "other", tok, "endpoint not permitted")
        other_key = self.secret_file("another-secret", name="other.key")
        self.refused(srv, up, "ep", self.mint("--key-file", other_key, "--endpoint", "ep",
                                              "--audience", "piko", "--issuer",
                                              "https://issuer"), "invalid token")
        # the server requires aud and iss: a token without them is refused
        self.refused(srv, up, "ep", self.mint("--key-file", key, "--endpoint", "ep"),
                     "invalid token")
        self.refused(srv, up, "ep", self.mint("--key-file", key, "--endpoint", "ep",
                                              "--audience", "other", "--issuer",
                                              "https://issuer"), "invalid token")

    def test_expired_after_ttl(self):
        key = self.secret_file()
        up = self.upstream()
        srv = self.server("--upstream.auth.hmac-secret-key", SECRET)
        tok = self.mint("--key-file", key, "--endpoint", "short", "--ttl", "1s")
        exp = decode(tok)[1]["exp"]
        while time.time() < exp + 0.2:
            time.sleep(0.1)
        self.refused(srv, up, "short", tok, "expired token")
        # a token without exp (--ttl 0) is accepted
        self.agent(srv, "forever", up.addr, "--connect.token",
                   self.mint("--key-file", key, "--endpoint", "forever", "--ttl", "0"))
        self.assertEqual(srv.proxy("forever", "GET", "/status/200").status, 200)

    def test_rs256_and_es256(self):
        rsa = KeyPair(self.tmpdir, "rsa")
        ec = KeyPair(self.tmpdir, "ec")
        # the traditional forms openssl also writes: "RSA PRIVATE KEY", "EC PRIVATE KEY"
        rsa_trad = os.path.join(self.tmpdir, "rsa-trad.key")
        _run(["openssl", "pkey", "-in", rsa.private, "-traditional", "-out", rsa_trad])
        ec_trad = os.path.join(self.tmpdir, "ec-trad.key")
        _run(["openssl", "ec", "-in", ec.private, "-out", ec_trad])
        other_rsa = KeyPair(self.tmpdir, "rsa", name="rsa2")
        other_ec = KeyPair(self.tmpdir, "ec", name="ec2")
        up = self.upstream()
        srv = self.server("--upstream.auth.rsa-public-key", rsa.public_pem,
                          "--upstream.auth.ecdsa-public-key", ec.public_pem)
        for alg, path, ep in (("RS256", rsa.private, "rs"), ("RS256", rsa_trad, "rs-trad"),
                              ("ES256", ec.private, "es"), ("ES256", ec_trad, "es-trad")):
            with self.subTest(alg=alg, key=os.path.basename(path)):
                tok = self.mint("--alg", alg, "--key-file", path, "--endpoint", ep)
                self.assertEqual(decode(tok)[0]["alg"], alg)
                self.agent(srv, ep, up.addr, "--connect.token", tok)
                self.assertEqual(srv.proxy(ep, "GET", "/status/200").status, 200)
                self.refused(srv, up, ep + "-x", tok, "endpoint not permitted")
        for alg, kp in (("RS256", other_rsa), ("ES256", other_ec)):
            with self.subTest(wrong_key=alg):
                self.refused(srv, up, "w", self.mint("--alg", alg, "--key-file", kp.private,
                                                     "--endpoint", "w"), "invalid token")
        # an HS256 token is refused by a server with only public keys
        self.refused(srv, up, "h", self.mint("--key-file", self.secret_file(),
                                             "--endpoint", "h"), "invalid token")


class TokenPikoInterop(TokenCliBase):
    """The real Piko v0.10 server takes the CLI's tokens too (skipped
    without run.py --piko-peer)."""

    def setUp(self):
        need_peer(CONFIG.piko_peer, "the real Piko binary")
        super().setUp()

    def test_piko_server_accepts_minted_tokens(self):
        from test_interop import PikoServer
        rsa = KeyPair(self.tmpdir, "rsa")
        ec = KeyPair(self.tmpdir, "ec")
        key = self.secret_file()
        up = self.upstream()
        srv = PikoServer(self.tmpdir, args=(
            "--upstream.auth.hmac-secret-key", SECRET,
            "--upstream.auth.rsa-public-key", rsa.public_pem,
            "--upstream.auth.ecdsa-public-key", ec.public_pem,
            "--upstream.auth.audience", "piko", "--upstream.auth.issuer", "me"))
        self.procs.append(srv)
        srv.start()
        common = ("--audience", "piko", "--issuer", "me")
        for alg, path, ep in (("HS256", key, "hs"), ("RS256", rsa.private, "rs"),
                              ("ES256", ec.private, "es")):
            with self.subTest(alg=alg):
                tok = self.mint("--alg", alg, "--key-file", path, "--endpoint", ep, *common)
                self.agent(srv, ep, up.addr, "--connect.token", tok)
                self.assertEqual(srv.proxy(ep, "GET", "/status/200").status, 200)
                self.refused(srv, up, ep + "-x", tok, "endpoint not permitted")
        self.refused(srv, up, "hs", self.mint("--key-file", key, "--endpoint", "hs"),
                     "invalid token")  # no aud/iss
        tok = self.mint("--key-file", key, "--endpoint", "short", "--ttl", "1s", *common)
        exp = decode(tok)[1]["exp"]
        while time.time() < exp + 0.2:
            time.sleep(0.1)
        self.refused(srv, up, "short", tok, "expired token")
