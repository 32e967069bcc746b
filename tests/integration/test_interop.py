"""Interop with the real Piko (Go), built by hack/peers.sh.

Piko's own clients (agent http, agent tcp, forward tcp, and a program on its
Go SDK) against our server; our agent and forward against Piko's server; and
error paths compared side by side: the same request to Piko's server and to
ours must give the same status, content type and body, and Piko's clients
must print the same error text against either server.

The pinned Piko is v0.10.0: the Go module proxy here does not serve v0.9.x
(hack/peers.sh). Its wire protocol, flags and error texts are v0.9's.

Without the peers (run.py --piko-peer/--sdk-peer), these tests are skipped,
unless --require-peers, which hack/test.sh always passes."""

import hashlib
import random
import re
import socket
import subprocess
import threading
import time
import unittest

from harness import (CONFIG, Agent, Proc, RequestLoad, Server, StartupError, T, free_port,
                     need_peer, request, wait_for)
from tcp_services import (TcpAgent, Forward, TcpTestCase, find_logs, forward_dial_error,
                          pattern_chunks, pattern_digest)
from tcp_ws import (OP_BINARY, OP_TEXT, WsConn, accept_key, client_handshake, read_body,
                    WsEchoService)

MiB = 1 << 20


class PikoServer(Server):
    """The real `piko server`: our Server wrapper with Piko's binary and a
    gossip port of its own (it has a cluster even when alone)."""

    def __init__(self, workdir, args=(), admin_headers=None):
        self.gossip_port = free_port()
        super().__init__(workdir, args=args, bin=CONFIG.piko_peer, log_level="debug",
                         admin_headers=admin_headers)
        self.name = "piko-server"

    def _build_argv(self):
        super()._build_argv()
        self.argv += ["--cluster.gossip.bind-addr", "127.0.0.1:%d" % self.gossip_port]


def listening(port):
    """True when something listens on 127.0.0.1:port (read from /proc, so the
    check opens no connection that a forwarder would count as a client)."""
    want = ":%04X" % port
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1].endswith(want) and parts[3] == "0A":
                        return True
        except OSError:
            pass
    return False


class PikoForward(Forward):
    """Piko's `forward tcp`: it logs nothing when it starts listening, so
    readiness is read from /proc/net/tcp."""

    def start(self, timeout=None):
        self._spawn()
        wait_for(lambda: self.poll() is not None or listening(self.port), timeout or T(10),
                 what="piko forward listening on %d" % self.port)
        if self.poll() is not None:
            raise StartupError("piko forward exited with %d\n%s" % (self.poll(),
                                                                     self.describe()))
        return self


def echo_roundtrip(port, total, seed, timeout):
    """Connects to a forwarder on port, asks the TCP service to ECHO, sends
    `total` pattern bytes while reading them back; returns (sent digest,
    received digest, received bytes).

    It reads exactly `total` bytes and only then closes: Piko's forward and
    agent tcp have no half-close (reference §1.3, "either side closing ends
    it"), so a shutdown(SHUT_WR) before the echo is back loses its tail
    there. Ours keeps half-closed connections (test_tcp covers that)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"ECHO interop\n")
        err = []

        def sender():
            try:
                for c in pattern_chunks(seed, total):
                    s.sendall(c)
            except OSError as e:
                err.append(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        h = hashlib.sha256()
        n = 0
        while n < total:
            d = s.recv(min(MiB, total - n))
            if not d:
                break
            h.update(d)
            n += len(d)
        t.join(timeout)
        if err:
            raise AssertionError("send failed: %r" % err)
        return pattern_digest(seed, total), h.hexdigest(), n
    finally:
        s.close()


class InteropCase(TcpTestCase):
    def setUp(self):
        need_peer(CONFIG.piko_peer, "the real Piko binary")
        super().setUp()

    def piko_server(self, *args, admin_headers=None):
        s = PikoServer(self.tmpdir, args=args, admin_headers=admin_headers)
        self.procs.append(s)
        return s.start()

    def piko_agent_http(self, server, endpoint, addr, *args):
        a = Agent(self.tmpdir, server, endpoint, addr, args=args, bin=CONFIG.piko_peer)
        a.name = "piko-agent-" + endpoint
        self.procs.append(a)
        return a.start()

    def piko_agent_tcp(self, server, endpoint, addr, *args):
        a = TcpAgent(self.tmpdir, server, endpoint, addr, args=args, bin=CONFIG.piko_peer)
        a.name = "piko-agent-tcp-" + endpoint
        self.procs.append(a)
        return a.start()

    def piko_forward(self, server, endpoint, *args):
        f = PikoForward(self.tmpdir, server, endpoint, args=args, bin=CONFIG.piko_peer)
        f.name = "piko-forward-" + endpoint
        self.procs.append(f)
        return f.start()

    def sdk(self, name, *argv):
        p = Proc(name, self.tmpdir, [need_peer(CONFIG.sdk_peer, "the SDK peer")] + list(argv))
        self.procs.append(p)
        p._spawn()
        return p

    def sdk_run(self, *argv, timeout=None):
        """Runs sdkpeer to completion; returns (exit code, stdout, stderr)."""
        r = subprocess.run([need_peer(CONFIG.sdk_peer, "the SDK peer")] + list(argv),
                           capture_output=True, timeout=timeout or T(30))
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    # -- checks shared by the directions ---------------------------------------------------

    def check_http(self, server, endpoint):
        """Requests through server's proxy port to upstream.py behind an HTTP
        agent: status, body, headers as the service saw them."""
        r = server.proxy(endpoint, "GET", "/headers?q=1", headers={"User-Agent": "interop"})
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        self.assertEqual(doc["method"], "GET")
        self.assertEqual(doc["path"], "/headers?q=1")
        seen = {k.lower(): v for k, v in doc["headers"]}
        self.assertEqual(seen.get("x-piko-forward"), "true", seen)
        self.assertEqual(seen.get("x-piko-endpoint"), endpoint, seen)
        self.assertEqual(seen.get("user-agent"), "interop", seen)
        self.assertIn("127.0.0.1", seen.get("x-forwarded-for", ""), seen)

        body = random.Random(7).randbytes(3 * MiB + 17)
        r = server.proxy(endpoint, "POST", "/echo/big", body=body,
                         headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(hashlib.sha256(r.body).hexdigest(), hashlib.sha256(body).hexdigest(),
                         "3 MiB body echoed through the tunnel")

        r = server.proxy(endpoint, "GET", "/status/418")
        self.assertEqual(r.status, 418, r)

        # routing by the Host's first label
        r = request(server.proxy_port, "GET", "/headers",
                    headers={"Host": "%s.example.com" % endpoint})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["path"], "/headers")

    def check_websocket(self, server, endpoint, svc):
        s = socket.create_connection(("127.0.0.1", server.proxy_port), timeout=T(15))
        try:
            hs = client_handshake(s, "/ws?x=1", "127.0.0.1", [("x-piko-endpoint", endpoint)])
            if hs.status != 101:
                self.fail("upgrade: %d %r %r" % (hs.status, hs.headers,
                                                 read_body(s, hs.headers, hs.rest, T(5))))
            self.assertEqual(hs.header("Sec-WebSocket-Accept"), accept_key(hs.key))
            ws = WsConn(s, hs.rest)
            rng = random.Random(3)
            for i in range(200):
                op = OP_TEXT if i % 3 == 0 else OP_BINARY
                payload = (b"msg %d" % i) if op == OP_TEXT else rng.randbytes(
                    rng.randint(0, 70000))
                ws.send(op, payload)
                self.assertEqual(ws.recv_message(), (op, payload), "message %d" % i)
            ws.send_close(1000)
        finally:
            s.close()
        # the service counts a message after echoing it: wait for the last
        wait_for(lambda: svc.echoed == 200, T(5), what="service echoed 200 messages")
        self.assertEqual(svc.errors, [])

    def check_tcp(self, port, total=8 * MiB, seed=11):
        want, got, n = echo_roundtrip(port, total, seed, T(60))
        self.assertEqual(n, total)
        self.assertEqual(got, want)


class PikoClientsAgainstOurServer(InteropCase):
    """Piko's agent, forward and SDK, unmodified, against our server."""

    def test_piko_agent_http(self):
        up = self.upstream()
        srv = self.server()
        self.piko_agent_http(srv, "go-http", up.addr)
        self.check_http(srv, "go-http")

    def test_piko_agent_http_websocket(self):
        svc = WsEchoService()
        self.addCleanup(svc.close)
        srv = self.server()
        self.piko_agent_http(srv, "go-ws", svc.addr)
        self.check_websocket(srv, "go-ws", svc)

    def test_piko_agent_http_service_down(self):
        # Piko's agent answers for a dead service; our server must relay its
        # 502 JSON untouched.
        srv = self.server()
        dead = free_port()
        self.piko_agent_http(srv, "go-dead", "127.0.0.1:%d" % dead)
        r = srv.proxy("go-dead", "GET", "/")
        self.assertJsonError(r, 502, "upstream unreachable")

    def test_piko_agent_sigterm_fails_no_request(self):
        # Go's yamux answers with RST a stream that crosses its own Go Away,
        # so a SIGTERMed Piko agent refuses the requests our server sent it
        # just before reading that Go Away. The server sends a refused
        # request (nothing of it was acted on) to the endpoint's other
        # tunnel: no client sees a 502 while one tunnel stays up.
        up = self.upstream()
        srv = self.server()
        self.piko_agent_http(srv, "go-term", up.addr)
        b = self.piko_agent_http(srv, "go-term", up.addr)
        load = RequestLoad(srv.proxy_port, "go-term")
        try:
            for i in range(12):
                # the new agent's tunnel is up (and its signal handler set)
                wait_for(lambda: srv.stderr().count('"msg":"upstream connected"') >= i + 2,
                         T(10), what="tunnel %d of go-term" % (i + 2))
                time.sleep(0.3)
                b.stop()  # SIGTERM; Piko's agent exits 0 once drained
                b = self.piko_agent_http(srv, "go-term", up.addr)
            # Piko's agent sets its signal handler only after its tunnel is
            # up: let the last one get there before the cleanup stops it.
            wait_for(lambda: srv.stderr().count('"msg":"upstream connected"') >= 14, T(10),
                     what="the last tunnel of go-term")
            time.sleep(0.3)
        finally:
            load.stop()
        self.assertEqual(load.bad, [])
        self.assertGreater(load.ok[0], 100)

    def test_piko_agent_tcp_with_our_forward(self):
        svc = self.tcp_service()
        srv = self.server()
        self.piko_agent_tcp(srv, "go-tcp", svc.addr)
        fwd = self.forward(srv, "go-tcp")
        self.check_tcp(fwd.port)

    def test_piko_agent_tcp_with_a_larger_window(self):
        # v0.10's --stream.max-window-size: the agent grows its receive
        # window past yamux's 256 KiB with a window update; we must honour it
        # and never exceed it.
        svc = self.tcp_service()
        srv = self.server()
        self.piko_agent_tcp(srv, "go-win", svc.addr, "--stream.max-window-size", "4194304")
        fwd = self.forward(srv, "go-win")
        self.check_tcp(fwd.port, total=32 * MiB)

    def test_piko_agent_tcp_with_a_larger_window_both_ways(self):
        # Both ends grant 4 MiB: our server's SYNs announce it to Piko's
        # agent (upload) and Piko's agent announces its own (download).
        svc = self.tcp_service()
        srv = self.server("--stream.max-window-size", "4194304")
        self.piko_agent_tcp(srv, "go-win2", svc.addr, "--stream.max-window-size", "4194304")
        fwd = self.forward(srv, "go-win2")
        self.check_tcp(fwd.port, total=32 * MiB)

    def test_piko_forward_with_our_agent_tcp(self):
        svc = self.tcp_service()
        srv = self.server()
        self.tcp_agent(srv, "our-tcp", svc.addr)
        fwd = self.piko_forward(srv, "our-tcp")
        self.check_tcp(fwd.port)

    def test_piko_forward_and_piko_agent_tcp(self):
        svc = self.tcp_service()
        srv = self.server()
        self.piko_agent_tcp(srv, "go-both", svc.addr)
        fwd = self.piko_forward(srv, "go-both")
        for seed in range(3):  # several connections over the one tunnel
            self.check_tcp(fwd.port, total=2 * MiB, seed=seed)

    def test_sdk_listen_serves_http(self):
        srv = self.server()
        p = self.sdk("sdk-listen", "listen", "-url", srv.upstream_url, "-endpoint", "sdk-ep")
        wait_for(lambda: "listening" in p.stdout() or p.poll() is not None, T(15),
                 what="sdkpeer listen")
        self.assertIn("listening", p.stdout(), p.describe())
        r = srv.proxy("sdk-ep", "POST", "/a/b?c=d", body=b"payload")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"sdk POST /a/b?c=d payload")
        self.assertEqual(r.header("x-sdk-forward"), "true")
        r = request(srv.proxy_port, "GET", "/x", headers={"Host": "sdk-ep.example.com"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-sdk-host"), "sdk-ep.example.com")
        self.assertEqual(r.body, b"sdk GET /x ")

    def test_sdk_dial_through_our_agent_tcp(self):
        svc = self.tcp_service()
        srv = self.server()
        self.tcp_agent(srv, "sdk-dial", svc.addr)
        # the service echoes what follows its header line
        rc, out, err = self.sdk_run("dial", "-url", "http://127.0.0.1:%d" % srv.proxy_port,
                                    "-endpoint", "sdk-dial", "-prefix", "ECHO sdk\n",
                                    "-send", "hello sdk")
        self.assertEqual((rc, out), (0, "hello sdk\n"), err)

    def test_sdk_dial_to_sdk_listener(self):
        # Dialer and Upstream.Listen, both from the SDK, through our server:
        # the dialed bytes reach the listener's HTTP server.
        srv = self.server()
        p = self.sdk("sdk-listen", "listen", "-url", srv.upstream_url, "-endpoint", "sdk-pair")
        wait_for(lambda: "listening" in p.stdout() or p.poll() is not None, T(15),
                 what="sdkpeer listen")
        req = "GET /raw HTTP/1.1\r\nHost: x\r\n\r\n"
        rc, out, err = self.sdk_run("dial", "-url", "http://127.0.0.1:%d" % srv.proxy_port,
                                    "-endpoint", "sdk-pair", "-send", req)
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.startswith("HTTP/1.1 200 OK"), out)


class OurClientsAgainstPikoServer(InteropCase):
    """Our agent and forward against the real Piko server."""

    def test_our_agent_http(self):
        up = self.upstream()
        srv = self.piko_server()
        self.agent(srv, "c-http", up.addr)
        self.check_http(srv, "c-http")

    def test_our_agent_http_websocket(self):
        svc = WsEchoService()
        self.addCleanup(svc.close)
        srv = self.piko_server()
        self.agent(srv, "c-ws", svc.addr)
        self.check_websocket(srv, "c-ws", svc)

    def test_our_forward_and_agent_tcp(self):
        svc = self.tcp_service()
        srv = self.piko_server()
        self.tcp_agent(srv, "c-tcp", svc.addr)
        fwd = self.forward(srv, "c-tcp")
        self.check_tcp(fwd.port)
        self.check_tcp(fwd.port, total=1 * MiB, seed=5)

    def test_our_agent_tcp_with_a_larger_window(self):
        # Piko's server and our agent both grant 4 MiB per stream (v0.10's
        # --stream.max-window-size): each must honour the other's window.
        svc = self.tcp_service()
        srv = self.piko_server("--stream.max-window-size", "4194304")
        self.tcp_agent(srv, "c-win", svc.addr, "--stream.max-window-size", "4194304")
        fwd = self.forward(srv, "c-win")
        self.check_tcp(fwd.port, total=32 * MiB)

    def test_our_agent_reconnects_when_piko_server_restarts(self):
        up = self.upstream()
        srv = self.piko_server()
        ag = self.agent(srv, "c-back", up.addr)
        srv.stop(expect_code=None)
        srv.start()
        ag.wait_ready(T(30))  # our agent's backoff is at most 15 s
        self.assertEqual(srv.proxy("c-back", "GET", "/status/200").status, 200)


class Parity(InteropCase):
    """The same request to Piko's server and to ours: what a Piko user sees
    must not change."""

    def both(self):
        return self.piko_server(), self.server()

    @staticmethod
    def raw(port, data, timeout):
        """Sends raw bytes, returns (status, content type, body)."""
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            s.sendall(data)
            buf = b""
            while True:
                try:
                    d = s.recv(65536)
                except ConnectionResetError:
                    break
                if not d:
                    break
                buf += d
                head, sep, body = buf.partition(b"\r\n\r\n")
                m = re.search(rb"(?im)^content-length: *(\d+)", head)
                if sep and m and len(body) >= int(m.group(1)):
                    break
        finally:
            s.close()
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        ctype = ""
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-type":
                ctype = v.strip()
        return status, ctype, body

    def assertSame(self, piko, ours, what):
        self.assertEqual(ours, piko, "%s: ours %r, Piko %r" % (what, ours, piko))

    def test_request_and_response_through_piko_agent(self):
        # Piko's agent behind each server, the same service: the request the
        # service sees and the response the client gets are the same (the
        # Host differs only by the server's port).
        piko, ours = self.both()
        up = self.upstream()
        for srv in (piko, ours):
            self.piko_agent_http(srv, "same", up.addr)
        cases = [
            ("GET", "/headers?a=b&c", {"User-Agent": "interop", "X-Forwarded-For": "1.2.3.4",
                                       "Connection": "keep-alive, X-Hop", "X-Hop": "1",
                                       "TE": "trailers", "Authorization": "Bearer t"}),
            ("GET", "/headers", {}),
            ("POST", "/headers", {"Content-Type": "text/plain"}),
        ]
        for method, path, headers in cases:
            with self.subTest(method=method, path=path):
                seen = []
                for srv in (piko, ours):
                    r = srv.proxy("same", method, path, headers=headers,
                                  body=b"body" if method == "POST" else None)
                    doc = r.json()
                    doc["headers"] = [[k, "<host>" if k.lower() == "host" else v]
                                      for k, v in doc["headers"]]
                    resp_headers = sorted((k.lower(), v) for k, v in r.headers.items()
                                          if k.lower() != "date")
                    seen.append((r.status, doc, resp_headers))
                self.assertSame(seen[0], seen[1], "%s %s" % (method, path))

    def test_http_error_responses(self):
        piko, ours = self.both()
        cases = [
            ("proxy: unknown endpoint", "proxy",
             b"GET /x HTTP/1.1\r\nHost: a\r\nx-piko-endpoint: nobody\r\nConnection: close\r\n\r\n"),
            ("proxy: tcp route, unknown endpoint", "proxy",
             b"GET /_piko/v1/tcp/nobody HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             b"Sec-WebSocket-Version: 13\r\n\r\n"),
            ("proxy: tcp route without upgrade", "proxy",
             b"GET /_piko/v1/tcp/nobody HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
            ("proxy: malformed request line", "proxy", b"GARBAGE\r\n\r\n"),
            ("upstream: unknown path", "upstream",
             b"GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
            ("upstream: upgrade route without upgrade", "upstream",
             b"GET /piko/v1/upstream/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
            ("upstream: upgrade route, POST", "upstream",
             b"POST /piko/v1/upstream/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
             b"Connection: close\r\n\r\n"),
            ("admin: unknown path", "admin",
             b"GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        ]
        for what, port, data in cases:
            with self.subTest(what):
                p = self.raw(getattr(piko, port + "_port"), data, T(10))
                o = self.raw(getattr(ours, port + "_port"), data, T(10))
                self.assertSame(p, o, what)

    def test_piko_forward_no_upstream_text(self):
        piko, ours = self.both()
        texts = []
        for srv in (piko, ours):
            fwd = self.piko_forward(srv, "nobody-%d" % srv.proxy_port)
            texts.append(forward_dial_error(fwd, T(10)))
        self.assertEqual(texts[0], "502: no available upstreams")
        self.assertSame(texts[0], texts[1], "piko forward's error")

    def test_sdk_dial_no_upstream_text(self):
        piko, ours = self.both()
        outs = []
        for srv in (piko, ours):
            outs.append(self.sdk_run("dial", "-url", "http://127.0.0.1:%d" % srv.proxy_port,
                                     "-endpoint", "nobody", "-send", "x"))
        self.assertEqual(outs[0], (1, "", "dial: 502: no available upstreams\n"))
        self.assertSame(outs[0], outs[1], "SDK Dial error")

    def test_our_forward_no_upstream_text(self):
        # our forward against Piko's server reads the same reason as against ours
        piko, ours = self.both()
        texts = []
        for srv in (piko, ours):
            texts.append(forward_dial_error(self.forward(srv, "nobody"), T(10)))
        self.assertIn("502: no available upstreams", texts[0])
        self.assertSame(texts[0], texts[1], "our forward's error")



class AuthInterop(InteropCase):
    """Tokens across implementations (the same keys on both servers)."""

    SECRET = "interop-secret"

    def auth_args(self, admin=False):
        return ["--proxy.auth.hmac-secret-key", self.SECRET,
                "--upstream.auth.hmac-secret-key", self.SECRET] + (
                    ["--admin.auth.hmac-secret-key", self.SECRET] if admin else [])

    def good(self, **claims):
        from jwt_util import now, token
        return token(dict({"exp": now() + 600}, **claims), key=self.SECRET)

    def test_piko_agent_token_against_our_server(self):
        from jwt_util import token
        up = self.upstream()
        srv = self.server(*self.auth_args())
        # the harness's readiness probe needs a proxy token too: wait on logs
        a = Agent(self.tmpdir, srv, "go-auth", up.addr, bin=CONFIG.piko_peer,
                  args=["--connect.token", self.good(piko={"endpoints": ["go-auth"]})])
        self.procs.append(a)
        a._spawn()
        wait_for(lambda: find_logs(srv, "upstream connected", **{"endpoint-id": "go-auth"}),
                 T(15), what="Piko's agent registered")
        r = srv.proxy("go-auth", "GET", "/status/200",
                      headers={"Authorization": "Bearer " + self.good()})
        self.assertEqual(r.status, 200, r)
        for tok, text in ((token({}, key="wrong"), "connect: 401: invalid token"),
                          (self.good(piko={"endpoints": ["x"]}),
                           "connect: 401: endpoint not permitted")):
            with self.subTest(text):
                bad = Agent(self.tmpdir, srv, "go-bad", up.addr, bin=CONFIG.piko_peer,
                            args=["--connect.token", tok])
                self.procs.append(bad)
                bad._spawn()
                self.assertEqual(bad.wait(T(30)), 1, bad.describe())
                self.assertIn(text, bad.output())

    def test_our_agent_token_against_piko_server(self):
        from jwt_util import token
        up = self.upstream()
        srv = self.piko_server(*self.auth_args())
        a = Agent(self.tmpdir, srv, "c-auth", up.addr, args=["--connect.token", self.good()])
        self.procs.append(a)
        a._spawn()
        wait_for(lambda: find_logs(a, "connected"), T(15), what="our agent connected")
        r = srv.proxy("c-auth", "GET", "/status/200",
                      headers={"Authorization": "Bearer " + self.good()})
        self.assertEqual(r.status, 200, r)
        bad = Agent(self.tmpdir, srv, "c-bad", up.addr,
                    args=["--connect.token", token({}, key="wrong")])
        self.procs.append(bad)
        bad._spawn()
        self.assertEqual(bad.wait(T(30)), 1, bad.describe())
        self.assertIn("connect: 401: invalid token", bad.stderr())

    def test_auth_errors_are_the_same(self):
        from jwt_util import now, tamper, token
        admin_ok = {"Authorization": "Bearer " + self.good()}
        piko = self.piko_server(*self.auth_args(admin=True), admin_headers=admin_ok)
        ours = self.server(*self.auth_args(admin=True), admin_headers=admin_ok)
        tokens = [
            ("missing", None),
            ("no space", "Bearer"),
            ("wrong scheme", "Basic x"),
            ("garbage", "Bearer x.y.z"),
            ("tampered", "Bearer " + tamper(self.good())),
            ("alg none", "Bearer " + token({}, "none")),
            ("expired", "Bearer " + token({"exp": now() - 10}, key=self.SECRET)),
            ("nbf", "Bearer " + token({"nbf": now() + 600}, key=self.SECRET)),
            ("not permitted", "Bearer " + self.good(piko={"endpoints": ["other"]})),
            ("good", "Bearer " + self.good()),
        ]
        ws = (b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
        for what, auth in tokens:
            hdr = b"" if auth is None else b"Authorization: " + auth.encode() + b"\r\n"
            requests = [
                ("proxy", b"GET /x HTTP/1.1\r\nHost: a\r\nx-piko-endpoint: ep\r\n" + hdr +
                 b"Connection: close\r\n\r\n"),
                ("proxy", b"GET /_piko/v1/tcp/ep HTTP/1.1\r\nHost: a\r\n" + ws + hdr +
                 b"\r\n"),
                ("upstream", b"GET /piko/v1/upstream/ep HTTP/1.1\r\nHost: a\r\n" + hdr +
                 b"Connection: close\r\n\r\n"),
                ("admin", b"GET /metrics HTTP/1.1\r\nHost: a\r\n" + hdr +
                 b"Connection: close\r\n\r\n"),
            ]
            for port, data in requests:
                with self.subTest(token=what, request=data.split(b"\r\n")[0].decode()):
                    p = Parity.raw(getattr(piko, port + "_port"), data, T(10))
                    o = Parity.raw(getattr(ours, port + "_port"), data, T(10))
                    if port == "admin" and p[0] == 200:
                        # let in (admin ignores piko.endpoints): the /metrics
                        # bodies differ by design
                        p, o = p[0], o[0]
                    self.assertEqual(o, p, "%s %s: ours %r, Piko %r" % (what, port, o, p))


class TlsInterop(InteropCase):
    """TLS across implementations, certificates from test_tls.Pki."""

    def test_piko_agent_over_tls_to_our_server(self):
        from test_tls import Pki
        pki = Pki(self.tmpdir)
        up = self.upstream()
        srv = self.server(*pki.server_flags("upstream"))
        a = Agent(self.tmpdir, srv, "go-tls", up.addr, bin=CONFIG.piko_peer,
                  connect_url="https://localhost:%d" % srv.upstream_port,
                  args=["--connect.tls.root-cas", pki.path("ca.crt")])
        a.name = "piko-agent-go-tls"
        self.procs.append(a)
        a.start()
        self.check_http(srv, "go-tls")

    def test_our_agent_over_tls_to_piko_server(self):
        from test_tls import Pki
        pki = Pki(self.tmpdir)
        up = self.upstream()
        srv = self.piko_server(*pki.server_flags("upstream"))
        a = Agent(self.tmpdir, srv, "c-tls", up.addr,
                  connect_url="https://localhost:%d" % srv.upstream_port,
                  args=["--connect.tls.root-cas", pki.path("ca.crt")])
        self.procs.append(a)
        a.start()
        self.check_http(srv, "c-tls")


if __name__ == "__main__":
    unittest.main()
