"""TLS on the proxy, upstream and admin ports (protocol reference §6), mTLS,
and the agent's connect.tls options. Certificates are made by the test with
the openssl CLI; clients are curl and our agent (and Piko's, in
test_interop)."""

import os
import subprocess

from harness import T, Agent, wait_for
from tcp_services import (TcpTestCase, echo_through, echo_transfer, find_logs,
                          forward_dial_error)


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True)


class Pki:
    """A CA, a server certificate for localhost/127.0.0.1, a client CA and a
    client certificate, and an unrelated CA, as PEM files in workdir."""

    def __init__(self, workdir):
        self.dir = workdir
        p = self.path
        for ca in ("ca", "client-ca", "other-ca"):
            openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", p(ca + ".key"), "-out", p(ca + ".crt"), "-days", "2",
                    "-subj", "/CN=" + ca)
        self._leaf("server", "ca", "/CN=localhost",
                   "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        self._leaf("client", "client-ca", "/CN=agent", "extendedKeyUsage=clientAuth\n")

    def path(self, name):
        return os.path.join(self.dir, name)

    def _leaf(self, name, ca, subj, ext):
        p = self.path
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", p(name + ".key"), "-out", p(name + ".csr"), "-subj", subj)
        with open(p(name + ".ext"), "w") as f:
            f.write(ext)
        openssl("x509", "-req", "-in", p(name + ".csr"), "-CA", p(ca + ".crt"), "-CAkey",
                p(ca + ".key"), "-CAcreateserial", "-out", p(name + ".crt"), "-days", "2",
                "-extfile", p(name + ".ext"))

    def server_flags(self, *ports, client_cas=False):
        out = []
        for port in ports:
            out += ["--%s.tls.cert" % port, self.path("server.crt"),
                    "--%s.tls.key" % port, self.path("server.key")]
            if client_cas:
                out += ["--%s.tls.client-cas" % port, self.path("client-ca.crt")]
        return out


def curl(url, *args):
    """(exit code, HTTP status or 0, body)."""
    r = subprocess.run(["curl", "-s", "-S", "--max-time", "10", "-o", "-", "-w",
                        "\n%{http_code}", url] + list(args), capture_output=True)
    out = r.stdout.decode(errors="replace")
    body, _, code = out.rpartition("\n")
    return r.returncode, int(code or 0), body, r.stderr.decode(errors="replace")


class TlsBase(TcpTestCase):
    def pki(self):
        return Pki(self.tmpdir)

    def tls_server(self, pki, *args, ports=("proxy", "upstream", "admin"), client_cas=False,
                   admin_cert=False):
        s = self.server(*(pki.server_flags(*ports, client_cas=client_cas) + list(args)),
                        start=False)
        s.start(wait=False)
        ca = ["--cacert", pki.path("ca.crt")]
        if admin_cert:
            ca += ["--cert", pki.path("client.crt"), "--key", pki.path("client.key")]
        scheme = "https" if "admin" in ports else "http"
        wait_for(lambda: curl("%s://127.0.0.1:%d/ready" % (scheme, s.admin_port), *ca)[1] == 200,
                 T(10), what="server ready over TLS")
        return s

    def tls_agent(self, srv, endpoint, addr, *args):
        a = Agent(self.tmpdir, srv, endpoint, addr,
                  connect_url="https://localhost:%d" % srv.upstream_port, args=args)
        self.procs.append(a)
        a._spawn()
        return a


class TlsTest(TlsBase):
    def test_all_three_ports_with_curl_and_our_agent(self):
        pki = self.pki()
        up = self.upstream()
        srv = self.tls_server(pki)
        ag = self.tls_agent(srv, "secure", up.addr, "--connect.tls.root-cas",
                            pki.path("ca.crt"))
        wait_for(lambda: find_logs(srv, "upstream connected", **{"endpoint-id": "secure"}),
                 T(15), what="agent connected over TLS")
        ca = ["--cacert", pki.path("ca.crt")]
        rc, code, body, err = curl("https://127.0.0.1:%d/echo" % srv.proxy_port, *ca,
                                   "-H", "x-piko-endpoint: secure", "--data-binary", "hello tls")
        self.assertEqual((rc, code, body), (0, 200, "hello tls"), err)
        # the Host's first label routes too, by name, with a verified certificate
        rc, code, body, err = curl("https://localhost:%d/status/201" % srv.proxy_port, *ca,
                                   "-H", "Host: secure.example.com")
        self.assertEqual((rc, code), (0, 201), err)
        rc, code, body, err = curl("https://127.0.0.1:%d/metrics" % srv.admin_port, *ca)
        self.assertEqual((rc, code), (0, 200), err)
        self.assertIn("piko_upstreams_connected_upstreams 1", body)
        rc, code, body, err = curl("https://127.0.0.1:%d/nope" % srv.upstream_port, *ca)
        self.assertEqual((rc, code, body), (0, 404, "404 page not found"), err)
        # a client that does not trust our CA is refused by its own TLS
        rc, code, _, err = curl("https://127.0.0.1:%d/ready" % srv.admin_port,
                                "--cacert", pki.path("other-ca.crt"))
        self.assertNotEqual(rc, 0)
        self.assertEqual(code, 0)
        # plain HTTP on a TLS port gets Go's 400, never the page
        rc, code, _, err = curl("http://127.0.0.1:%d/ready" % srv.admin_port, "--max-time", "3")
        self.assertEqual(code, 400)
        # the server keeps serving after that
        rc, code, body, err = curl("https://127.0.0.1:%d/status/200" % srv.proxy_port, *ca,
                                   "-H", "x-piko-endpoint: secure")
        self.assertEqual((rc, code), (0, 200), err)
        self.assertTrue(ag.alive)

    def test_mtls_on_upstream_and_admin(self):
        pki = self.pki()
        up = self.upstream()
        srv = self.tls_server(pki, ports=("upstream", "admin"), client_cas=True,
                              admin_cert=True)
        ca = ["--cacert", pki.path("ca.crt")]
        rc, code, _, err = curl("https://127.0.0.1:%d/ready" % srv.admin_port, *ca)
        self.assertNotEqual(rc, 0, "a client without a certificate got through mTLS")
        self.assertEqual(code, 0)
        rc, code, _, err = curl("https://127.0.0.1:%d/ready" % srv.admin_port, *ca,
                                "--cert", pki.path("server.crt"), "--key", pki.path("server.key"))
        self.assertNotEqual(rc, 0, "a certificate from another CA got through mTLS")

        no_cert = self.tls_agent(srv, "m1", up.addr, "--connect.tls.root-cas", pki.path("ca.crt"),
                                 "--connect.timeout", "2s")
        self.assertEqual(no_cert.wait(T(20)), 1, no_cert.describe())
        self.assertIn("connect: connect timeout", no_cert.stderr())
        self.assertEqual(find_logs(srv, "upstream connected"), [])

        self.tls_agent(srv, "m2", up.addr, "--connect.tls.root-cas", pki.path("ca.crt"),
                       "--connect.tls.cert", pki.path("client.crt"),
                       "--connect.tls.key", pki.path("client.key"))
        wait_for(lambda: find_logs(srv, "upstream connected", **{"endpoint-id": "m2"}), T(15),
                 what="agent with a client certificate connected")
        self.assertEqual(srv.proxy("m2", "GET", "/status/200").status, 200)

        # a TLS 1.2 client resumes its session on the mTLS upstream port
        # (OpenSSL refuses a resumption without a session id context)
        import socket
        import ssl
        ctx = ssl.create_default_context(cafile=pki.path("ca.crt"))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(pki.path("client.crt"), pki.path("client.key"))
        session = None
        for attempt in range(2):
            raw = socket.create_connection(("127.0.0.1", srv.upstream_port), timeout=T(5))
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as t:
                t.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertTrue(t.recv(4096).startswith(b"HTTP/1.1 404 "))
                self.assertEqual(t.session_reused, attempt == 1)
                session = t.session

    def test_agent_wrong_ca_and_insecure_skip_verify(self):
        pki = self.pki()
        up = self.upstream()
        srv = self.tls_server(pki, ports=("upstream",))
        bad = self.tls_agent(srv, "w", up.addr, "--connect.tls.root-cas",
                             pki.path("other-ca.crt"), "--connect.timeout", "2s")
        self.assertEqual(bad.wait(T(20)), 1, bad.describe())
        self.assertIn("connect: connect timeout: tls: certificate verify failed: "
                      "unable to get local issuer certificate", bad.stderr())
        # the system roots do not know our CA either
        sys_roots = self.tls_agent(srv, "s", up.addr, "--connect.timeout", "2s")
        self.assertEqual(sys_roots.wait(T(20)), 1, sys_roots.describe())
        self.assertIn("certificate verify failed", sys_roots.stderr())
        self.tls_agent(srv, "i", up.addr, "--connect.tls.insecure-skip-verify")
        wait_for(lambda: find_logs(srv, "upstream connected", **{"endpoint-id": "i"}), T(15),
                 what="insecure agent connected")
        self.assertEqual(srv.proxy("i", "GET", "/status/200").status, 200)

    def test_bad_tls_config(self):
        pki = self.pki()
        for args, text in (
                (["--proxy.tls.cert", pki.path("server.crt")], "proxy tls: missing key"),
                (["--admin.tls.key", pki.path("server.key")], "admin tls: missing cert"),
                (["--upstream.tls.cert", pki.path("nope.crt"),
                  "--upstream.tls.key", pki.path("server.key")], "nope.crt"),
                (["--proxy.tls.cert", pki.path("nope.crt"),
                  "--proxy.tls.key", pki.path("server.key")], "failed to create a vhost")):
            with self.subTest(text):
                s = self.server(*args, start=False)
                s.start(wait=False)
                self.assertEqual(s.wait(T(10)), 1, s.describe())
                self.assertIn(text, s.output())
        a = Agent(self.tmpdir, None, "x", "3000", connect_url="https://localhost:1",
                  args=["--connect.tls.cert", pki.path("client.crt")])
        self.procs.append(a)
        a._spawn()
        self.assertEqual(a.wait(T(10)), 1, a.describe())
        self.assertIn("connect tls: missing key", a.stderr())


class TlsClientsTest(TlsBase):
    """piko forward to a TLS proxy port (core/sock.c's TLS client)."""

    def test_forward_over_tls(self):
        pki = self.pki()
        svc = self.tcp_service()
        srv = self.tls_server(pki, ports=("proxy",), client_cas=False)
        self.tcp_agent(srv, "tls-tcp", svc.addr)
        url = "https://localhost:%d" % srv.proxy_port
        fwd = self.forward(srv, "tls-tcp", "--connect.tls.root-cas", pki.path("ca.crt"),
                           connect_url=url)
        # 8 MiB echoed, with a half-close at the end: the FIN crosses TLS too
        s = fwd.connect(T(30))
        s.sendall(b"ECHO tls\n")
        total = 8 << 20
        sent_h, recv_h, n, _ = echo_transfer(s, total, 3, T(60))
        s.close()
        self.assertEqual((n, recv_h), (total, sent_h))

        bad = self.forward(srv, "tls-tcp", "--connect.tls.root-cas", pki.path("other-ca.crt"),
                           connect_url=url)
        self.assertEqual(forward_dial_error(bad, T(10)), "dial server: tls: certificate verify "
                         "failed: unable to get local issuer certificate")

    def test_forward_with_client_certificate(self):
        pki = self.pki()
        svc = self.tcp_service()
        srv = self.tls_server(pki, ports=("proxy",), client_cas=True)
        self.tcp_agent(srv, "m-tcp", svc.addr)
        url = "https://localhost:%d" % srv.proxy_port
        fwd = self.forward(srv, "m-tcp", "--connect.tls.root-cas", pki.path("ca.crt"),
                           "--connect.tls.cert", pki.path("client.crt"),
                           "--connect.tls.key", pki.path("client.key"), connect_url=url)
        self.assertEqual(echo_through(fwd.port, b"ping", T(10)), b"ping")
        nocert = self.forward(srv, "m-tcp", "--connect.tls.root-cas", pki.path("ca.crt"),
                              connect_url=url)
        c = nocert.connect(T(10))
        c.sendall(b"ECHO m\nping")
        try:
            self.assertEqual(c.recv(10), b"")
        except ConnectionResetError:
            pass
        c.close()
        wait_for(lambda: find_logs(nocert, "failed to dial endpoint"), T(10),
                 what="forward refused without a client certificate")


class HttpsServiceTest(TlsBase):
    """agent http to an https:// service (listeners[].tls)."""

    def https_service(self, pki):
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.path("server.crt"), pki.path("server.key"))
        return self.http_service(lambda path: ("text/plain", ("secure %s" % path).encode()),
                                 tls_context=ctx)

    def test_agent_to_https_service(self):
        from harness import CONFIG
        from tcp_services import wait_registered
        pki = self.pki()
        port = self.https_service(pki)
        srv = self.server()
        cfg = self.write_file("agent.yaml", """
connect:
  url: %s
listeners:
  - endpoint_id: web
    addr: https://localhost:%d/base
    timeout: 5s
    tls:
      root_cas: %s
  - endpoint_id: web-insecure
    addr: https://127.0.0.1:%d
    timeout: 5s
    tls:
      insecure_skip_verify: true
  - endpoint_id: web-untrusted
    addr: https://localhost:%d
    timeout: 5s
""" % (srv.upstream_url, port, pki.path("ca.crt"), port, port))
        ag = self.config_proc("agent-start", [CONFIG.bin, "agent", "start", "--config.path", cfg,
                                              "--log.level", "debug"])
        wait_registered(ag, srv, ["web", "web-insecure", "web-untrusted"])
        for i in range(3):  # the second and third reuse the kept-alive TLS connection
            r = srv.proxy("web", "GET", "/x?y=%d" % i)
            self.assertEqual((r.status, r.body), (200, b"secure /base/x?y=%d" % i))
        r = srv.proxy("web-insecure", "GET", "/z")
        self.assertEqual((r.status, r.body), (200, b"secure /z"))
        # the system's CAs do not know the test CA: the agent answers 502
        r = srv.proxy("web-untrusted", "GET", "/z")
        self.assertJsonError(r, 502, "upstream unreachable")
        logs = [d for d in find_logs(ag, "service connect failed")
                if "certificate verify failed" in d.get("error", "")]
        self.assertTrue(logs, ag.describe())
