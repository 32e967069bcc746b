"""`piko bench http` (protocol reference §4.6): our bench against our server
and against Piko's, Piko's bench against our server, the failures a user can
meet (closed proxy port, unreachable upstream port, wrong echoes, bad status)
and bad flags or YAML.

What is asserted is what a user sees: the exit code, Piko's
`Throughput: <n> requests/sec` line on stdout, the error on stderr, and on
the server's side the tunnels registered and the requests it served (its
metrics), so a bench that printed a number without sending the requests, or
counted wrong echoes as good, fails here."""

import http.server
import os
import re
import signal
import socket
import subprocess
import threading
import time

from harness import CONFIG, PikoTestCase, Proc, T, free_port, need_peer, wait_for
from test_goaway import FakeServer
from test_interop import InteropCase
from test_keepalive import nth_response
from yamux_double import F_FIN, T_DATA, T_WINDOW

THROUGHPUT = re.compile(r"^Throughput: ([0-9]+\.[0-9]) requests/sec$", re.M)


def metric(text, name, labels=None):
    """The value of one sample in Prometheus text, or None. labels: a dict
    that must match the sample's labels exactly (order free)."""
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        got = {}
        if "{" in key:
            if key[:key.index("{")] != name:
                continue
            for part in key[key.index("{") + 1:-1].split(","):
                k, _, v = part.partition("=")
                got[k] = v.strip('"')
        elif key != name:
            continue
        if got == (labels or {}):
            return float(value)
    return None


class BenchProc(Proc):
    """One `piko bench http` run; it exits by itself."""

    def __init__(self, workdir, args, bin=None, name="bench", env=None):
        super().__init__(name, workdir, [bin or CONFIG.bin, "bench", "http"] + list(args),
                         env=env)

    def start(self):
        self._spawn()
        return self

    def finish(self, timeout):
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
            raise AssertionError("%s did not finish within %.1fs\n%s"
                                 % (self.name, timeout, self.describe()))
        # It exited on its own: the cleanup must not take that for an
        # unexpected exit (it still checks for a crash and sanitizer reports).
        self.signalled = True
        return rc


class BenchCase(PikoTestCase):
    def bench(self, *args, bin=None, name="bench", env=None):
        b = BenchProc(self.tmpdir, args, bin=bin, name=name, env=env)
        self.procs.append(b)
        return b.start()

    def run_bench(self, *args, timeout=None, **kw):
        b = self.bench(*args, **kw)
        rc = b.finish(timeout or T(60))
        return rc, b.stdout(), b.stderr(), b

    def assertThroughput(self, stdout, proc):
        m = THROUGHPUT.search(stdout)
        self.assertIsNotNone(m, "no Throughput line on stdout\n%s" % proc.describe())
        self.assertGreater(float(m.group(1)), 0.0)
        return float(m.group(1))

    def served(self, srv):
        """(requests answered 200, requests answered otherwise) by our
        server's proxy port, from its metrics."""
        text = srv.metrics()
        ok = metric(text, "piko_proxy_requests_total", {"status": "200", "method": "GET"}) or 0
        other = 0.0
        for line in text.splitlines():
            if line.startswith("piko_proxy_requests_total{") and 'status="200"' not in line:
                other += float(line.rpartition(" ")[2])
        return ok, other

    def fake_proxy(self, status, body):
        """An HTTP server on 127.0.0.1 answering every request with status and
        body (reading the request body first). Returns its URL."""

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # the bench resets a connection after a failed request

        httpd = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.addCleanup(httpd.server_close)
        self.addCleanup(httpd.shutdown)
        return "http://127.0.0.1:%d" % httpd.server_address[1]


def urls(srv):
    return ["--connect.proxy-url", "http://127.0.0.1:%d" % srv.proxy_port,
            "--connect.upstream-url", "http://127.0.0.1:%d" % srv.upstream_port]


class BenchAgainstOurServer(BenchCase):
    def test_bench_http(self):
        srv = self.server("--proxy.access-log.disable")
        b = self.bench("--requests", "2000", "--clients", "8", "--endpoints", "4",
                       "--upstreams", "6", "--size", "1024", *urls(srv))
        # While it runs, the server holds its 6 tunnels over 4 endpoints (the
        # clients start at least one agent tick after the last one is up).
        seen = []

        def registered():
            if b.poll() is not None:
                return True
            text = srv.metrics()
            seen.append((metric(text, "piko_upstreams_connected_upstreams"),
                         metric(text, "piko_upstreams_registered_endpoints")))
            return seen[-1] == (6.0, 4.0)

        wait_for(registered, T(30), interval=0.02, what="6 upstreams on 4 endpoints")
        self.assertIn((6.0, 4.0), seen, "the bench's upstreams were never all registered "
                      "while it ran\n%s" % b.describe())
        rc = b.finish(T(60))
        self.assertEqual(rc, 0, b.describe())
        self.assertThroughput(b.stdout(), b)
        self.assertNotIn("failed", b.stderr())
        # Every request reached an upstream through the proxy port, and was
        # answered 200.
        self.assertEqual(self.served(srv), (2000, 0))
        # endpoint-(i % 4) for upstream i: endpoints 0 and 1 got two tunnels.
        eps = re.findall(r'"msg":"upstream connected","endpoint-id":"([^"]+)"', srv.stderr())
        self.assertEqual(sorted(eps), ["endpoint-0", "endpoint-0", "endpoint-1", "endpoint-1",
                                       "endpoint-2", "endpoint-3"])
        # The bench closed them all when it ended.
        wait_for(lambda: metric(srv.metrics(), "piko_upstreams_connected_upstreams") == 0,
                 T(10), what="the bench's tunnels gone")

    def test_large_bodies_and_uneven_split(self):
        # 7 requests over 3 clients (3, 2, 2), bodies bigger than a yamux
        # window and than a socket queue.
        srv = self.server("--proxy.access-log.disable")
        rc, out, err, b = self.run_bench("--requests", "7", "--clients", "3", "--endpoints", "1",
                                         "--upstreams", "1", "--size", str(600 * 1024),
                                         *urls(srv))
        self.assertEqual(rc, 0, b.describe())
        self.assertThroughput(out, b)
        self.assertEqual(self.served(srv), (7, 0))

    def test_yaml_config_and_flag_precedence(self):
        srv = self.server("--proxy.access-log.disable")
        path = self.write_file("bench.yaml", (
            "requests: 300\nclients: 3\nendpoints: 2\nupstreams: 2\nsize: 100\n"
            "server:\n  proxy_url: http://127.0.0.1:%d\n  upstream_url: http://127.0.0.1:%d\n"
            "  timeout: 5s\nlog:\n  level: warn\n") % (srv.proxy_port, srv.upstream_port))
        rc, out, err, b = self.run_bench("--config.path", path)
        self.assertEqual(rc, 0, b.describe())
        self.assertThroughput(out, b)
        self.assertEqual(self.served(srv), (300, 0))
        # log.level warn from the file: no info records.
        self.assertNotIn('"level":"info"', err)
        # A flag beats the file (the repo's order for every command).
        rc, out, err, b = self.run_bench("--config.path", path, "--requests", "50")
        self.assertEqual(rc, 0, b.describe())
        self.assertEqual(self.served(srv), (350, 0))

    def test_closed_proxy_port(self):
        srv = self.server()
        port = free_port()
        t0 = time.monotonic()
        rc, out, err, b = self.run_bench(
            "--requests", "1000", "--clients", "4", "--endpoints", "1", "--upstreams", "2",
            "--connect.proxy-url", "http://127.0.0.1:%d" % port,
            "--connect.upstream-url", "http://127.0.0.1:%d" % srv.upstream_port,
            timeout=T(20))
        self.assertEqual(rc, 1, b.describe())
        self.assertLess(time.monotonic() - t0, T(10))
        self.assertIn("bench: proxy http://127.0.0.1:%d: connection refused" % port, err)
        self.assertIsNone(THROUGHPUT.search(out), out)

    def test_unreachable_upstream_port(self):
        port = free_port()
        t0 = time.monotonic()
        rc, out, err, b = self.run_bench(
            "--requests", "10", "--clients", "1", "--endpoints", "1", "--upstreams", "1",
            "--connect.upstream-url", "http://127.0.0.1:%d" % port,
            "--connect.proxy-url", "http://127.0.0.1:%d" % free_port(),
            "--connect.timeout", "1s", timeout=T(20))
        self.assertEqual(rc, 1, b.describe())
        # connect.timeout bounds the registration.
        self.assertLess(time.monotonic() - t0, T(6))
        self.assertIn("connect: connect timeout", err)
        self.assertIsNone(THROUGHPUT.search(out), out)

    def test_wrong_echo_fails(self):
        # The upstreams register on a real server, but the "proxy" answers
        # 200 with a body of the right size that is not the request's.
        srv = self.server()
        rc, out, err, b = self.run_bench(
            "--requests", "40", "--clients", "2", "--endpoints", "1", "--upstreams", "1",
            "--size", "16", "--connect.proxy-url", self.fake_proxy(200, b"x" * 16),
            "--connect.upstream-url", "http://127.0.0.1:%d" % srv.upstream_port)
        self.assertEqual(rc, 1, b.describe())
        self.assertThroughput(out, b)  # as Piko, it still reports the run
        self.assertIn("bench: 40 of 40 requests failed (0 errors, 0 bad status, 40 wrong "
                      "echoes); first: unexpected response body (bytes differ)", err)

    def test_bad_status_fails(self):
        # The admin port as the proxy URL: every request is a 404.
        srv = self.server()
        rc, out, err, b = self.run_bench(
            "--requests", "20", "--clients", "2", "--endpoints", "1", "--upstreams", "1",
            "--connect.proxy-url", "http://127.0.0.1:%d" % srv.admin_port,
            "--connect.upstream-url", "http://127.0.0.1:%d" % srv.upstream_port)
        self.assertEqual(rc, 1, b.describe())
        self.assertIn("bench: 20 of 20 requests failed (0 errors, 20 bad status, 0 wrong "
                      "echoes); first: bad status: 404", err)


    def test_interrupted(self):
        srv = self.server("--proxy.access-log.disable")
        b = self.bench("--requests", "100000000", "--clients", "4", "--endpoints", "1",
                       "--upstreams", "1", "--size", "1", *urls(srv))
        wait_for(lambda: b.poll() is not None or "sending requests" in b.stderr(), T(20),
                 what="the bench sending")
        wait_for(lambda: (self.served(srv)[0] or 0) > 0, T(10), what="requests served")
        b.signal(signal.SIGTERM)
        rc = b.finish(T(10))
        self.assertEqual(rc, 1, b.describe())
        self.assertIn("bench: interrupted", b.stderr())
        self.assertIsNone(THROUGHPUT.search(b.stdout()))


def echo_request(body, close=False):
    return (b"POST /echo HTTP/1.1\r\nHost: endpoint-0\r\nContent-Length: %d\r\n%s\r\n"
            % (len(body), b"Connection: close\r\n" if close else b"")) + body


class BenchEchoKeepAlive(BenchCase):
    """The bench's in-process upstream, driven through a fake server's
    streams: it serves the requests that follow on a stream (as our server
    sends them, without Connection: close), pipelined ones in order, and
    ends the stream after a Connection: close request (as Piko's server
    sends) or the server's FIN."""

    def _echo_stack(self):
        fake = FakeServer(endpoint="endpoint-0")
        self.addCleanup(fake.close)
        # the proxy URL: accepts connections and never answers, so the
        # bench's own clients wait while the test drives the echo
        hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hold.bind(("127.0.0.1", 0))
        hold.listen(16)
        self.addCleanup(hold.close)
        b = self.bench("--connect.upstream-url", fake.url, "--connect.proxy-url",
                       "http://127.0.0.1:%d" % hold.getsockname()[1], "--upstreams", "1",
                       "--endpoints", "1", "--requests", "1", "--clients", "1",
                       "--size", "80000", "--connect.timeout", "60s")

        def stop():
            b.signal(signal.SIGTERM)
            b.finish(T(10))
        self.addCleanup(stop)
        return fake.session(0, T(10))

    def test_echo_serves_the_requests_that_follow_on_one_stream(self):
        sess = self._echo_stack()
        bodies = [os.urandom(n) for n in (100, 70000, 1, 5000, 33)]
        st = sess.open(echo_request(bodies[0]))
        status, headers, body = nth_response(self, st, 1, T(10))
        self.assertEqual((status, body), (200, bodies[0]))
        self.assertNotIn("connection", headers)
        # the next one on the same stream, with a body larger than a frame
        req = echo_request(bodies[1])
        for i in range(0, len(req), 16384):
            sess.send(T_DATA, 0, st.sid, len(req[i:i + 16384]), req[i:i + 16384])
        self.assertEqual(nth_response(self, st, 2, T(10))[2], bodies[1])
        # two pipelined in one frame: answered in order
        req = echo_request(bodies[2]) + echo_request(bodies[3])
        sess.send(T_DATA, 0, st.sid, len(req), req)
        self.assertEqual(nth_response(self, st, 3, T(10))[2], bodies[2])
        self.assertEqual(nth_response(self, st, 4, T(10))[2], bodies[3])
        self.assertFalse(st.fin.is_set(), "the echo closed a kept-alive stream")
        # Connection: close (Piko's server) is the last one: FIN after it
        req = echo_request(bodies[4], close=True)
        sess.send(T_DATA, 0, st.sid, len(req), req)
        status, headers, body = nth_response(self, st, 5, T(10))
        self.assertEqual((status, body, headers.get("connection")), (200, bodies[4], "close"))
        self.assertTrue(st.fin.wait(T(5)), "no FIN after a Connection: close request")
        self.assertFalse(st.reset)
        self.assertEqual(len(sess.streams), 1)

    def test_echo_ends_a_stream_the_server_closes(self):
        sess = self._echo_stack()
        st = sess.open(echo_request(b"first"))
        self.assertEqual(nth_response(self, st, 1, T(10))[2], b"first")
        # idle: the server's FIN is answered with the echo's own
        sess.send(T_WINDOW, F_FIN, st.sid, 0)
        self.assertTrue(st.fin.wait(T(5)), "the echo kept a stream the server closed")
        self.assertFalse(st.reset)
        # a request the server ends before it is whole gets no echo: reset
        st2 = sess.open(echo_request(b"x" * 100)[:-10])
        time.sleep(0.2)
        sess.send(T_WINDOW, F_FIN, st2.sid, 0)
        wait_for(lambda: st2.reset, T(5), what="the echo's reset of a request cut short")
        self.assertEqual(bytes(st2.data), b"")
        # a whole request followed by the server's FIN is answered, then ended
        st3 = sess.open(echo_request(b"last"))
        sess.send(T_WINDOW, F_FIN, st3.sid, 0)
        status, headers, body = nth_response(self, st3, 1, T(10))
        self.assertEqual((status, body), (200, b"last"))
        self.assertTrue(st3.fin.wait(T(5)))
        self.assertFalse(st3.reset)
        # a body over --size: 413, and the stream ends (the rest is not read)
        st4 = sess.open(echo_request(b"y" * 90000))
        status, headers, _ = nth_response(self, st4, 1, T(10))
        self.assertEqual((status, headers.get("connection")), (413, "close"))
        self.assertTrue(st4.fin.wait(T(5)))


class BenchTls(BenchCase):
    def test_https_proxy_url(self):
        from test_tls import Pki
        pki = Pki(self.tmpdir)
        srv = self.server("--proxy.access-log.disable", *pki.server_flags("proxy"))
        args = ["--requests", "200", "--clients", "2", "--endpoints", "1", "--upstreams", "1",
                "--connect.proxy-url", "https://localhost:%d" % srv.proxy_port,
                "--connect.upstream-url", "http://127.0.0.1:%d" % srv.upstream_port]
        # The proxy's certificate is checked against the system's CAs
        # (OpenSSL's, so SSL_CERT_FILE names ours).
        b = self.bench(*args, env={"SSL_CERT_FILE": pki.path("ca.crt")})
        rc = b.finish(T(60))
        self.assertEqual(rc, 0, b.describe())
        self.assertThroughput(b.stdout(), b)
        self.assertEqual(self.served(srv), (200, 0))
        # Without our CA, not one request gets through: a clear error at once.
        b = self.bench(*args, env={"SSL_CERT_FILE": pki.path("other-ca.crt")}, name="bench-bad")
        rc = b.finish(T(20))
        self.assertEqual(rc, 1, b.describe())
        self.assertIn("bench: proxy https://localhost:%d: tls: certificate verify failed"
                      % srv.proxy_port, b.stderr())


class BenchConfigErrors(BenchCase):
    def check_refused(self, args, message, yaml_text=None):
        argv = [CONFIG.bin, "bench", "http"] + list(args)
        if yaml_text is not None:
            argv += ["--config.path", self.write_file("bad.yaml", yaml_text)]
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=T(10), text=True)
        self.assertEqual(p.returncode, 1, (argv, p.stdout, p.stderr))
        self.assertEqual(p.stderr.strip().splitlines()[0], "config: " + message,
                         (argv, p.stderr))
        self.assertEqual(p.stdout, "")

    def test_bad_flags(self):
        for args, message in [
            (["--requests", "x"], 'invalid value for --requests: "x" (want a int)'),
            (["--no-such-flag"], "unknown flag: --no-such-flag"),
            (["--requests", "0"], "missing requests"),
            (["--clients", "0"], "missing clients"),
            (["--size", "-1"], "invalid size: -1 (want 1 to 67108864)"),
            (["--upstreams", "2", "--endpoints", "3"],
             "endpoints (3) exceed upstreams (2): an endpoint without an upstream fails "
             "every request sent to it"),
            (["--connect.timeout", "soon"], None),
            (["--connect.timeout", "0s"], "server: missing timeout"),
            (["--connect.proxy-url", "ftp://x"], "server: invalid proxy url: ftp://x"),
            (["--connect.upstream-url", ""], "server: missing upstream url"),
            (["--log.level", "loud"], "log: invalid level: loud"),
            (["stray"], "unexpected argument: stray"),
        ]:
            with self.subTest(args=args):
                if message is None:
                    p = subprocess.run([CONFIG.bin, "bench", "http"] + args,
                                       capture_output=True, timeout=T(10), text=True)
                    self.assertEqual(p.returncode, 1, p.stderr)
                    self.assertTrue(p.stderr.startswith("config: invalid value for "
                                                        "--connect.timeout"), p.stderr)
                else:
                    self.check_refused(args, message)

    def test_bad_yaml(self):
        # The YAML section is `server`, as Piko's, although the flags say
        # `connect`.
        self.check_refused([], "parse config: %s: unknown key: connect (line 1)"
                           % os.path.join(self.tmpdir, "bad.yaml"),
                           yaml_text="connect:\n  proxy_url: http://x\n")
        self.check_refused([], "missing upstreams", yaml_text="upstreams: 0\n")

    def test_unknown_subcommand(self):
        p = subprocess.run([CONFIG.bin, "bench", "tcp"], capture_output=True, timeout=T(10),
                           text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("unknown command: bench tcp", p.stderr)


class BenchInterop(InteropCase, BenchCase):
    def test_our_bench_against_piko_server(self):
        srv = self.piko_server("--proxy.access-log.disable")
        rc, out, err, b = self.run_bench("--requests", "2000", "--clients", "8", "--endpoints",
                                         "4", "--upstreams", "6", "--size", "4096", *urls(srv))
        self.assertEqual(rc, 0, b.describe())
        self.assertThroughput(out, b)
        self.assertNotIn("failed", err)
        text = srv.metrics()
        self.assertEqual(metric(text, "piko_proxy_requests_total",
                                {"method": "GET", "status": "200"}), 2000.0)

    def test_piko_bench_against_our_server(self):
        bin = need_peer(CONFIG.piko_peer, "the real Piko binary")
        srv = self.server("--proxy.access-log.disable")
        rc, out, err, b = self.run_bench("--requests", "2000", "--clients", "8", "--endpoints",
                                         "4", "--upstreams", "6", "--size", "4096", *urls(srv),
                                         bin=bin, name="piko-bench")
        self.assertEqual(rc, 0, b.describe())
        self.assertThroughput(out, b)
        # Piko's bench only logs its failures ("request", "bad status",
        # "unexpected response body"), at warn or error level.
        self.assertNotRegex(out + err, r'"level":"(warn|error)"', b.describe())
        self.assertEqual(self.served(srv), (2000, 0))
