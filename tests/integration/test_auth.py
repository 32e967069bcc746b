"""Token authentication on the three ports (protocol reference §5): the
catalogue of bad tokens, each refused with Piko's 401 JSON; good tokens on
each port; tenants; JWKS from a file; an upstream cut off when its token
expires; our agent and forward with --connect.token."""

import json
import socket
import time

from harness import T, free_port, request, wait_for
from jwt_util import KeyPair, now, tamper, token
from tcp_services import TcpTestCase, echo_through, find_logs, forward_dial_error
from tcp_ws import client_handshake, read_body

SECRET = "piko-test-secret"


def auth_flags(port, **kw):
    out = []
    for k, v in kw.items():
        # jwks_endpoint → --<port>.auth.jwks.endpoint
        out += ["--%s.auth.%s" % (port, k.replace("jwks_", "jwks.").replace("_", "-")), v]
    return out


class AuthTestBase(TcpTestCase):
    def keys(self):
        if not hasattr(self, "_rsa"):
            self._rsa = KeyPair(self.tmpdir, "rsa")
            self._ec = KeyPair(self.tmpdir, "ec")
        return self._rsa, self._ec

    def assertDenied(self, r, reason):
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.header("Content-Type"), "application/json; charset=utf-8", r)
        self.assertEqual(r.body, json.dumps({"error": reason}, separators=(",", ":")).encode())


class ProxyAuthTest(AuthTestBase):
    def test_bad_token_catalogue_on_the_proxy_port(self):
        rsa, ec = self.keys()
        up = self.upstream()
        srv = self.server(*auth_flags("proxy", hmac_secret_key=SECRET,
                                      rsa_public_key=rsa.public_pem,
                                      ecdsa_public_key=ec.public_pem, audience="piko",
                                      issuer="https://issuer"))
        good = {"aud": "piko", "iss": "https://issuer", "exp": now() + 600}
        ag = self.agent(srv, "ep", up.addr, wait=False)
        wait_for(lambda: find_logs(ag, "connected"), T(10), what="agent connected")

        def req(auth=None, endpoint="ep", extra=None):
            h = {"x-piko-endpoint": endpoint}
            if auth is not None:
                h["Authorization"] = auth
            h.update(extra or {})
            return request(srv.proxy_port, "GET", "/status/200", headers=h)

        cases = [
            ("missing", None, "missing authorization"),
            ("no space", "Bearer", "invalid authorization"),
            ("wrong scheme", "Basic dXNlcjpwYXNz", "unsupported auth type"),
            ("lower-case scheme", "bearer " + token(good, key=SECRET), "unsupported auth type"),
            ("garbage", "Bearer not-a-token", "invalid token"),
            ("tampered signature", "Bearer " + tamper(token(good, "RS256", rsa)),
             "invalid token"),
            ("alg none", "Bearer " + token(good, "none"), "invalid token"),
            ("HS256 keyed with the RSA public key",
             "Bearer " + token(good, "HS256", rsa.public_pem), "invalid token"),
            ("wrong secret", "Bearer " + token(good, key="other"), "invalid token"),
            ("expired", "Bearer " + token(dict(good, exp=now() - 5), key=SECRET),
             "expired token"),
            ("nbf in the future", "Bearer " + token(dict(good, nbf=now() + 600), key=SECRET),
             "invalid token"),
            ("wrong aud", "Bearer " + token(dict(good, aud="other"), key=SECRET),
             "invalid token"),
            ("wrong iss", "Bearer " + token(dict(good, iss="https://evil"), key=SECRET),
             "invalid token"),
            ("endpoint not in piko.endpoints",
             "Bearer " + token(dict(good, piko={"endpoints": ["other"]}), key=SECRET),
             "endpoint not permitted"),
        ]
        for what, auth, reason in cases:
            with self.subTest(what):
                self.assertDenied(req(auth), reason)
        # the refused requests never reached the service
        self.assertEqual(up.stats().get("requests", 0), 0, up.stats())

        for alg, key in (("HS256", SECRET), ("HS384", SECRET), ("HS512", SECRET),
                         ("RS256", rsa), ("RS512", rsa), ("ES256", ec)):
            with self.subTest(alg=alg):
                r = req("Bearer " + token(good, alg, key))
                self.assertEqual(r.status, 200, r)
        r = req("Bearer " + token(dict(good, piko={"endpoints": ["ep"]}), key=SECRET))
        self.assertEqual(r.status, 200, r)
        # x-piko-authorization wins over Authorization
        r = req("Basic x", extra={"x-piko-authorization": "Bearer " + token(good, key=SECRET)})
        self.assertEqual(r.status, 200, r)
        self.assertDenied(req("Bearer " + token(good, key=SECRET),
                              extra={"x-piko-authorization": "Bearer bad"}), "invalid token")

    def test_tcp_route_and_forward_token(self):
        svc = self.tcp_service()
        srv = self.server(*auth_flags("proxy", hmac_secret_key=SECRET))
        self.tcp_agent(srv, "tcp-ep", svc.addr)
        # a raw WebSocket to the TCP route without a token
        s = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=T(10))
        hs = client_handshake(s, "/_piko/v1/tcp/tcp-ep", "127.0.0.1")
        body = read_body(s, hs.headers, hs.rest, T(5))
        s.close()
        self.assertEqual((hs.status, body), (401, b'{"error":"missing authorization"}'))

        bad = self.forward(srv, "tcp-ep", "--connect.token", token({}, key="wrong"))
        self.assertEqual(forward_dial_error(bad, T(10)), "401: invalid token")

        fwd = self.forward(srv, "tcp-ep", "--connect.token",
                           token({"piko": {"endpoints": ["tcp-ep"]}}, key=SECRET))
        self.assertEqual(echo_through(fwd.port, b"hello", T(10)), b"hello")


class UpstreamAuthTest(AuthTestBase):
    def test_agent_token_accepted_and_refused(self):
        up = self.upstream()
        srv = self.server(*auth_flags("upstream", hmac_secret_key=SECRET))
        ok = self.agent(srv, "ep", up.addr, "--connect.token",
                        token({"piko": {"endpoints": ["ep"]}}, key=SECRET))
        self.assertEqual(srv.proxy("ep", "GET", "/status/200").status, 200)
        for what, tok, reason in (
                ("no token", None, "missing authorization"),
                ("bad token", token({}, key="wrong"), "invalid token"),
                ("expired", token({"exp": now() - 1}, key=SECRET), "expired token"),
                ("other endpoint", token({"piko": {"endpoints": ["x"]}}, key=SECRET),
                 "endpoint not permitted")):
            with self.subTest(what):
                args = ["--connect.token", tok] if tok else []
                a = self.agent(srv, "ep2", up.addr, *args, wait=False)
                rc = a.wait(T(15))
                self.assertEqual(rc, 1, a.describe())
                self.assertIn("connect: 401: %s" % reason, a.stderr())
        ok.stop()

    def test_tenants(self):
        up = self.upstream()
        cfg = self.write_file("server.yaml", """
upstream:
  auth:
    hmac_secret_key: default-secret
  tenants:
    - id: blue
      auth:
        hmac_secret_key: blue-secret
    - id: green
      auth:
        hmac_secret_key: green-secret
""")
        srv = self.server("--config.path", cfg)
        blue = token({}, key="blue-secret")
        cases = [
            ("no tenant header once tenants exist", [], token({}, key="default-secret"),
             "unknown tenant"),
            ("unknown tenant", ["--connect.tenant-id", "red"], blue, "unknown tenant"),
            ("another tenant's key", ["--connect.tenant-id", "green"], blue, "invalid token"),
        ]
        for what, args, tok, reason in cases:
            with self.subTest(what):
                a = self.agent(srv, "t-" + what[:5].replace(" ", ""), up.addr,
                               "--connect.token", tok, *args, wait=False)
                self.assertEqual(a.wait(T(15)), 1, a.describe())
                self.assertIn("connect: 401: %s" % reason, a.stderr())
        self.agent(srv, "blue-ep", up.addr, "--connect.token", blue, "--connect.tenant-id",
                   "blue")
        self.assertEqual(srv.proxy("blue-ep", "GET", "/status/200").status, 200)

    def test_jwks_file(self):
        rsa, ec = self.keys()
        jwks = self.write_file("jwks.json", json.dumps(
            {"keys": [rsa.jwk("rsa-1"), ec.jwk("ec-1")]}))
        up = self.upstream()
        srv = self.server(*auth_flags("upstream", jwks_endpoint="file://" + jwks))
        self.agent(srv, "rs", up.addr, "--connect.token", token({}, "RS256", rsa, kid="rsa-1"))
        self.agent(srv, "es", up.addr, "--connect.token", token({}, "ES256", ec, kid="ec-1"))
        for what, tok in (("no matching kid", token({}, "RS256", rsa, kid="rsa-2")),
                          ("no kid", token({}, "RS256", rsa))):
            with self.subTest(what):
                a = self.agent(srv, "x", up.addr, "--connect.token", tok, wait=False)
                self.assertEqual(a.wait(T(15)), 1, a.describe())
                self.assertIn("connect: 401: invalid token", a.stderr())

    def test_jwks_over_http_with_rotation(self):
        rsa, ec = self.keys()
        doc = {"keys": [rsa.jwk("rsa-1")], "served": 0}

        def jwks(path):
            doc["served"] += 1
            return "application/json", json.dumps({"keys": doc["keys"]}).encode()

        url = "http://127.0.0.1:%d/jwks.json" % self.http_service(jwks)
        up = self.upstream()
        srv = self.server(*auth_flags("upstream", jwks_endpoint=url,
                                      jwks_cache_ttl="1h"))
        wait_for(lambda: find_logs(srv, "jwks fetched"), T(10), what="first JWKS fetch")
        self.agent(srv, "one", up.addr, "--connect.token", token({}, "RS256", rsa, kid="rsa-1"))

        # rotation: a new key appears; the first token naming it is refused
        # (the loop does not wait for the network) and triggers a refresh.
        # A raw handshake, not an agent: the agent's second request (to read
        # the reason) could already find the new key.
        doc["keys"] = [rsa.jwk("rsa-1"), ec.jwk("ec-2")]
        tok2 = token({}, "ES256", ec, kid="ec-2")
        s = socket.create_connection(("127.0.0.1", srv.upstream_port), timeout=T(10))
        hs = client_handshake(s, "/piko/v1/upstream/two", "127.0.0.1",
                              [("Authorization", "Bearer " + tok2)])
        body = read_body(s, hs.headers, hs.rest, T(5))
        s.close()
        self.assertEqual((hs.status, body), (401, b'{"error":"invalid token"}'))
        wait_for(lambda: len(find_logs(srv, "jwks fetched")) >= 2, T(10),
                 what="JWKS refetched after an unknown kid")
        self.agent(srv, "two-again", up.addr, "--connect.token", tok2)
        self.assertEqual(srv.proxy("two-again", "GET", "/status/200").status, 200)
        self.assertEqual(doc["served"], 2)

    def test_jwks_unreachable_at_start(self):
        rsa, _ = self.keys()
        dead = "http://127.0.0.1:%d/jwks.json" % free_port()
        up = self.upstream()
        srv = self.server(*auth_flags("upstream", jwks_endpoint=dead))  # still starts
        wait_for(lambda: find_logs(srv, "jwks fetch failed"), T(10), what="failed fetch logged")
        a = self.agent(srv, "x", up.addr, "--connect.token", token({}, "RS256", rsa, kid="k"),
                       wait=False)
        self.assertEqual(a.wait(T(15)), 1, a.describe())
        self.assertIn("connect: 401: invalid token", a.stderr())

    def test_upstream_disconnected_when_its_token_expires(self):
        up = self.upstream()
        srv = self.server(*auth_flags("upstream", hmac_secret_key=SECRET))
        exp = now() + 3
        ag = self.agent(srv, "short", up.addr, "--connect.token",
                        token({"exp": exp}, key=SECRET))
        keep = self.agent(srv, "long", up.addr, "--connect.token",
                          token({"exp": now() + 600}, key=SECRET))
        self.assertEqual(srv.proxy("short", "GET", "/status/200").status, 200)
        wait_for(lambda: find_logs(srv, "upstream token expired", **{"endpoint-id": "short"}),
                 T(10) + 3, what="server to cut the expired upstream")
        self.assertGreaterEqual(time.time(), exp)
        wait_for(lambda: srv.proxy("short", "GET", "/").status == 502, T(10),
                 what="endpoint without upstream")
        # the agent's reconnect is refused with the expired token; it exits
        self.assertEqual(ag.wait(T(30)), 1, ag.describe())
        self.assertIn("expired token", ag.stderr())
        self.assertEqual(srv.proxy("long", "GET", "/status/200").status, 200)
        keep.stop()

    def test_disable_disconnect_on_expiry(self):
        up = self.upstream()
        srv = self.server(*auth_flags("upstream", hmac_secret_key=SECRET),
                          "--upstream.auth.disable-disconnect-on-expiry")
        self.agent(srv, "stay", up.addr, "--connect.token", token({"exp": now() + 2}, key=SECRET))
        time.sleep(3.5)
        self.assertEqual(srv.proxy("stay", "GET", "/status/200").status, 200)
        self.assertEqual(find_logs(srv, "upstream token expired"), [])


class AdminAuthTest(AuthTestBase):
    def test_admin_routes_need_a_token(self):
        rsa, _ = self.keys()
        srv = self.server(*auth_flags("admin", rsa_public_key=rsa.public_pem),
                          start=False)
        srv.start(wait=False)
        good = {"Authorization": "Bearer " + token({"exp": now() + 60}, "RS256", rsa)}
        wait_for(lambda: request(srv.admin_port, "GET", "/ready", headers=good).status == 200,
                 T(10), what="ready with a token")
        for path in ("/health", "/ready", "/metrics", "/nope"):
            with self.subTest(path):
                self.assertDenied(request(srv.admin_port, "GET", path), "missing authorization")
                r = request(srv.admin_port, "GET", path, headers={
                    "Authorization": "Bearer " + token({}, "HS256", rsa.public_pem)})
                self.assertDenied(r, "invalid token")
                r = request(srv.admin_port, "GET", path, headers=good)
                self.assertEqual(r.status, 404 if path == "/nope" else 200, r)


class AuthConfigTest(AuthTestBase):
    def test_bad_keys_fail_at_startup(self):
        _, ec = self.keys()
        for what, args, text in (
                ("garbage RSA key", auth_flags("proxy", rsa_public_key="not a pem"),
                 "proxy auth: parse rsa public key: invalid PEM"),
                ("EC key given as RSA", auth_flags("upstream", rsa_public_key=ec.public_pem),
                 "upstream auth: parse rsa public key: wrong key type"),
                ("JWKS with a static key",
                 auth_flags("admin", hmac_secret_key="x", jwks_endpoint="file:///x"),
                 "no other verification key can be set when JWKS.Endpoint is set"),
                ("JWKS with another scheme", auth_flags("admin", jwks_endpoint="ftp://x"),
                 "unsupported scheme")):
            with self.subTest(what):
                s = self.server(*args, start=False)
                s.start(wait=False)
                self.assertEqual(s.wait(T(10)), 1, s.describe())
                self.assertIn(text, s.output())
        path = self.write_file("bad.yaml", "upstream:\n  tenants:\n    - id: x\n")
        s = self.server("--config.path", path, start=False)
        s.start(wait=False)
        self.assertEqual(s.wait(T(10)), 1, s.describe())
        self.assertIn("tenant x: missing auth", s.output())
