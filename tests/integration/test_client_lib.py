"""libpiko-client (include/piko/client.h) through its example programs: the
echo upstream (examples/echo_upstream.c) registered on our server and on
Piko's, with traffic from a forwarder through the proxy port; reconnect after
the server restarts; a bad token refused with Piko's message. Under
run.py --sanitized the examples are the ASan build's, so the library runs
under ASan+UBSan (and LeakSanitizer at exit: the example frees its listener
on SIGTERM)."""

import hashlib
import os
import signal
import socket
import threading
import time

import test_goaway as fake
from harness import CONFIG, Proc, StartupError, T, free_port, wait_for
from jwt_util import token
from tcp_services import pattern_bytes
from test_auth import SECRET, auth_flags
from test_interop import InteropCase, echo_roundtrip
from test_tls import TlsBase

MiB = 1 << 20


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def example_bin(name):
    """The example programs are built beside the piko binary."""
    return os.path.join(os.path.dirname(os.path.abspath(CONFIG.bin)), "piko-example-" + name)


class EchoUpstream(Proc):
    """examples/echo_upstream.c against a server's upstream port; ready once
    it printed `listening on <endpoint>`."""

    def __init__(self, workdir, server, endpoint, args=(), url=None):
        super().__init__("echo-upstream-" + endpoint, workdir,
                         [example_bin("echo_upstream"), "-u",
                          url or "http://127.0.0.1:%d" % server.upstream_port] + list(args) +
                         [endpoint])
        self.endpoint = endpoint

    def start(self, wait=True, timeout=None):
        self._spawn()
        if wait:
            wait_for(lambda: self.poll() is not None or "listening on" in self.stdout(),
                     timeout or T(15), what="echo upstream registered")
            if self.poll() is not None:
                raise StartupError("echo upstream exited with %d\n%s"
                                   % (self.poll(), self.describe()))
        return self


def roundtrip(port, data, half_close, timeout):
    """Sends data through a forwarder on port while reading the echo.
    half_close: shutdown(SHUT_WR) after sending and read until EOF (the FIN
    must cross the server and the library both ways); else read exactly
    len(data) bytes, then close (Piko's server ends a stream at the first
    close). Returns the bytes received."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    err = []

    def sender():
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    got = bytearray()
    try:
        while half_close or len(got) < len(data):
            d = s.recv(MiB)
            if not d:
                break
            got += d
    finally:
        t.join(timeout)
        s.close()
    if err:
        raise AssertionError("send failed: %r" % err)
    return bytes(got)


class ClientLibCase(InteropCase):
    def setUp(self):
        super().setUp()
        if not os.path.exists(example_bin("echo_upstream")):
            self.fail("no %s (build the examples)" % example_bin("echo_upstream"))

    def echo_upstream(self, server, endpoint, *args, wait=True, url=None):
        e = EchoUpstream(self.tmpdir, server, endpoint, args, url=url)
        self.procs.append(e)
        return e.start(wait=wait)

    def wait_echo(self, port, up, half_close=True):
        """Retries a small roundtrip until the endpoint answers again."""
        data = b"are you back?"

        def ok():
            self.assertIsNone(up.poll(), up.describe())
            try:
                return roundtrip(port, data, half_close, T(5)) == data
            except (OSError, AssertionError):
                return False

        wait_for(ok, T(30), interval=0.2, what="the endpoint registered again")

    def assertEcho(self, port, size, seed, half_close=True):
        data = pattern_bytes(seed, size)
        got = roundtrip(port, data, half_close, T(60))
        self.assertEqual(len(got), len(data))
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(data).hexdigest())


def run_dial(server, endpoint, data, *args, timeout=None, url=None):
    """examples/dial.c: data on stdin; returns (exit code, stdout, stderr)."""
    import subprocess
    p = subprocess.run([example_bin("dial"), "-u",
                        url or "http://127.0.0.1:%d" % server.proxy_port] +
                       list(args) + [endpoint], input=data, capture_output=True,
                       timeout=timeout or T(60))
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


class ClientLibOurServer(ClientLibCase):
    def test_dial_example_to_echo_upstream(self):
        # Both ends on the library: piko_dial through the proxy port, and
        # piko_listen; stdin's EOF crosses as a half-close and the echo's
        # tail still comes back.
        srv = self.server()
        self.echo_upstream(srv, "lib-dial")
        for size, seed in ((1, 20), (3 * MiB, 21)):
            data = pattern_bytes(seed, size)
            rc, out, err = run_dial(srv, "lib-dial", data)
            self.assertEqual(rc, 0, err)
            self.assertEqual(len(out), len(data))
            self.assertTrue(out == data, "echo differs")

    def test_dial_without_upstream_says_why(self):
        srv = self.server()
        rc, out, err = run_dial(srv, "nobody-here", b"hello")
        self.assertEqual(rc, 1)
        self.assertEqual(out, b"")
        self.assertIn("dial: 502: no available upstreams", err)

    def test_dial_with_bad_token_is_refused(self):
        srv = self.server(*auth_flags("proxy", hmac_secret_key=SECRET))
        self.echo_upstream(srv, "lib-dial-auth")
        rc, _, err = run_dial(srv, "lib-dial-auth", b"x", "-t", token({}, key="wrong"))
        self.assertEqual(rc, 1)
        self.assertIn("dial: 401: invalid token", err)
        rc, out, err = run_dial(srv, "lib-dial-auth", b"ok", "-t", token({}, key=SECRET))
        self.assertEqual((rc, out), (0, b"ok"), err)


    def test_echo_upstream_through_our_forward(self):
        srv = self.server()
        self.echo_upstream(srv, "lib-echo")
        fwd = self.forward(srv, "lib-echo")
        self.assertEcho(fwd.port, 5, 1)
        # Larger than the yamux window and the socketpair's buffers: the
        # relay's backpressure, and the FIN after the last byte both ways.
        self.assertEcho(fwd.port, 4 * MiB, 2)

    def test_concurrent_streams(self):
        srv = self.server()
        self.echo_upstream(srv, "lib-many")
        fwd = self.forward(srv, "lib-many")
        errors = []

        def one(i):
            try:
                self.assertEcho(fwd.port, 64 * 1024 + i, 100 + i)
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T(60))
        self.assertEqual(errors, [])

    def test_reconnects_after_the_server_restarts(self):
        srv = self.server()
        up = self.echo_upstream(srv, "lib-back")
        fwd = self.forward(srv, "lib-back")
        self.assertEcho(fwd.port, 1000, 3)
        srv.stop()
        srv.start()
        # The library redials with backoff (100 ms doubling, at most 15 s).
        self.wait_echo(fwd.port, up)
        self.assertEcho(fwd.port, 1000, 4)

    def test_bad_token_is_refused_with_pikos_message(self):
        srv = self.server(*auth_flags("upstream", hmac_secret_key=SECRET))
        bad = self.echo_upstream(srv, "lib-auth", "-t", token({}, key="wrong"), wait=False)
        self.assertEqual(bad.wait(T(15)), 1, bad.describe())
        self.assertIn("connect: 401: invalid token", bad.stderr())
        good = self.echo_upstream(srv, "lib-auth", "-t", token({}, key=SECRET))
        fwd = self.forward(srv, "lib-auth")
        self.assertEcho(fwd.port, 1000, 5)
        good.stop()

    def test_sigterm_frees_the_listener_and_exits_0(self):
        srv = self.server()
        up = self.echo_upstream(srv, "lib-exit")
        fwd = self.forward(srv, "lib-exit")
        self.assertEcho(fwd.port, 1000, 6)
        # An open stream at exit: it is reset, and the exit is clean (ASan's
        # leak check runs at exit under --sanitized).
        s = socket.create_connection(("127.0.0.1", fwd.port), timeout=T(10))
        s.sendall(b"x")
        self.assertEqual(s.recv(1), b"x")
        self.assertEqual(up.stop(), 0)
        s.close()


class ApiProc(Proc):
    """tests/client/lib_api.c in one of its modes."""

    def __init__(self, workdir, *args):
        binary = os.path.join(os.path.dirname(example_bin("x")), "piko-test-client-api")
        super().__init__("client-api-" + args[0], workdir, [binary] + list(args))

    def wait_exit(self, timeout):
        """Waits for the mode to finish on its own; returns the exit code.
        Marked as expected, so the cleanup does not take the exit for an
        external signal (it still checks for sanitizer reports)."""
        rc = self.wait(timeout)
        self.signalled = True
        return rc

    def start(self, ready=None, timeout=None):
        self._spawn()
        if ready:
            wait_for(lambda: self.poll() is not None or ready in self.stdout(),
                     timeout or T(15), what="client-api: " + ready)
            if self.poll() is not None:
                raise StartupError("client-api exited with %d\n%s" % (self.poll(),
                                                                       self.describe()))
        return self


class ClientLibApi(ClientLibCase):
    """What the API says to a program: errors, close semantics, forwarders."""

    def api(self, *args, ready=None):
        p = ApiProc(self.tmpdir, *args)
        self.procs.append(p)
        return p.start(ready)

    def test_errors(self):
        srv = self.server()
        dead = "http://127.0.0.1:%d" % free_port()
        p = self.api("errors", "http://127.0.0.1:%d" % srv.upstream_port, dead)
        self.assertEqual(p.wait_exit(T(30)), 0, p.describe())
        out = p.stdout()
        self.assertIn("slash endpoint: invalid argument (invalid endpoint id: a/b)", out)
        self.assertIn("bad url: invalid argument (invalid url: ftp://x)", out)
        self.assertRegex(out, r"dead server: timed out \(connect timeout: .+\)")
        self.assertIn("small window: invalid argument (max window size must be >= 262144)", out)
        self.assertIn("connected: 1", out)
        self.assertIn("accept: timed out (accept: timed out)", out)
        self.assertIn("accept after shutdown: closed (listener closed)", out)
        self.assertIn("version: 0.1.0", out)

    def test_max_window_size_is_granted_on_every_connection(self):
        # A test double as the server: it sees the ACK's window delta, which
        # grants the extra 768 KiB of a 1 MiB window on the first connection
        # and again after the listener has dialled anew.
        srv = fake.FakeServer()
        self.addCleanup(srv.close)
        self.api("window", srv.url, fake.ENDPOINT, str(1 << 20), ready="listening")
        for i in range(2):
            sess = srv.session(i, T(10))
            st = sess.open(b"hello window")
            wait_for(lambda: bytes(st.data) == b"hello window", T(10),
                     what="the echo on connection %d" % (i + 1))
            acks = [d for sid, flags, d in sess.windows if flags & fake.F_ACK]
            self.assertEqual(len(acks), 1, sess.windows)
            self.assertGreaterEqual(acks[0], (1 << 20) - 256 * 1024)
            self.assertLess(acks[0], 1 << 20)
            sess.send(fake.T_WINDOW, fake.F_FIN, st.sid, 0)
            sess.close()

    def test_close_keeps_accepted_streams(self):
        srv = self.server()
        p = self.api("close", "http://127.0.0.1:%d" % srv.upstream_port, "api-close",
                     ready="listening")
        fwd = self.forward(srv, "api-close")
        s = socket.create_connection(("127.0.0.1", fwd.port), timeout=T(10))
        s.sendall(b"one")
        wait_for(lambda: "accept after close: closed" in p.stdout(), T(10),
                 what="the listener closed")
        # After the Go Away: the accepted stream still echoes...
        self.assertEqual(s.recv(3), b"one")
        s.sendall(b"two")
        self.assertEqual(s.recv(3), b"two")
        # ...and a new connection is not routed to the closed listener.
        rc, out, err = run_dial(srv, "api-close", b"x")
        self.assertEqual(rc, 1, (out, err))
        self.assertIn("dial: 502:", err)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(s.recv(1), b"")
        s.close()
        self.assertEqual(p.wait_exit(T(10)), 0, p.describe())
        self.assertIn("stream done", p.stdout())

    def test_accept_from_many_threads_then_close(self):
        # piko_accept from 8 threads at once (each serving what it got), 32
        # concurrent connections; then piko_listener_close from the main
        # thread wakes every blocked accept with PIKO_ECLOSED.
        srv = self.server()
        p = self.api("threads", "http://127.0.0.1:%d" % srv.upstream_port, "api-threads", "8",
                     ready="accepting")
        fwd = self.forward(srv, "api-threads")
        errors = []

        def one(i):
            try:
                self.assertEcho(fwd.port, 10000 + i, 200 + i)
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T(60))
        self.assertEqual(errors, [])
        self.assertEqual(p.stop(), 0)
        self.assertIn("served: 32, closed: 8 of 8", p.stdout())

    def test_event_loop_program(self):
        # A single-threaded program on its own poll() loop: the listener's fd
        # (readable only while a stream waits), piko_listener_dispatch() and
        # the streams' fds; 24 concurrent connections, each echoed whole
        # with its half-close; then close makes the fd readable and dispatch
        # report it.
        srv = self.server()
        p = self.api("loop", "http://127.0.0.1:%d" % srv.upstream_port, "api-loop",
                     ready="looping")
        self.assertIn("idle fd readable: 0", p.stdout())
        fwd = self.forward(srv, "api-loop")
        errors = []

        def one(i):
            try:
                self.assertEcho(fwd.port, 30000 + 977 * i, 300 + i)
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T(60))
        self.assertEqual(errors, [])
        self.assertEqual(p.stop(), 0)
        out = p.stdout()
        self.assertIn("fd readable after close: 1", out)
        self.assertIn("dispatch after close: closed (listener closed)", out)
        self.assertIn("served: 24, refused: 0, open: 0", out)

    def test_two_listeners_and_a_dialer_in_one_process(self):
        srv = self.server()
        p = self.api("self", "http://127.0.0.1:%d" % srv.upstream_port,
                     "http://127.0.0.1:%d" % srv.proxy_port)
        self.assertEqual(p.wait_exit(T(30)), 0, p.describe())
        out = p.stdout()
        self.assertIn("self-b got: to b\ndialer got: ack\nself-a got: to a\ndialer got: ack\n",
                      out)

    def test_a_program_that_does_not_read_holds_its_peer(self):
        # Backpressure: while the program reads nothing, the sender is held
        # (it cannot get far past the windows and socket buffers between)
        # and the library's memory does not grow with what is offered;
        # then every byte arrives.
        srv = self.server()
        p = self.api("stall", "http://127.0.0.1:%d" % srv.upstream_port, "api-stall",
                     ready="listening")
        fwd = self.forward(srv, "api-stall")
        s = socket.create_connection(("127.0.0.1", fwd.port), timeout=T(60))
        total = 64 * MiB
        sent = [0]

        def sender():
            chunk = b"x" * (256 * 1024)
            try:
                while sent[0] < total:
                    s.sendall(chunk)
                    sent[0] += len(chunk)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        wait_for(lambda: "accepted" in p.stdout(), T(10), what="stream accepted")
        rss0 = rss_kib(p.pid)
        t = threading.Thread(target=sender, daemon=True)
        t.start()
        time.sleep(2)
        held = sent[0]
        growth = rss_kib(p.pid) - rss0
        self.assertLess(held, 24 * MiB, "the sender was not held back")
        self.assertLess(growth, 16 * 1024, "the library buffered %d KiB" % growth)
        p.signal(signal.SIGUSR1)
        t.join(T(60))
        self.assertEqual(p.wait_exit(T(60)), 0, p.describe())
        s.close()
        self.assertIn("read: %d" % total, p.stdout())

    def test_listen_and_forward(self):
        svc = self.tcp_service()
        srv = self.server()
        p = self.api("forward", "http://127.0.0.1:%d" % srv.upstream_port, "api-fwd", svc.addr,
                     ready="forwarding")
        fwd = self.forward(srv, "api-fwd")
        want, got, n = echo_roundtrip(fwd.port, 2 * MiB, 12, T(60))
        self.assertEqual((n, got), (2 * MiB, want))
        self.assertEqual(p.stop(), 0)
        self.assertIn("wait: 0", p.stdout())


class ClientLibTls(ClientLibCase, TlsBase):
    def test_listen_and_dial_over_tls(self):
        pki = self.pki()
        srv = self.tls_server(pki, ports=("proxy", "upstream"))
        up_url = "https://localhost:%d" % srv.upstream_port
        proxy_url = "https://localhost:%d" % srv.proxy_port
        self.echo_upstream(srv, "lib-tls", "-c", pki.path("ca.crt"), url=up_url)
        data = pattern_bytes(40, 1 * MiB)
        rc, out, err = run_dial(srv, "lib-tls", data, "-c", pki.path("ca.crt"), url=proxy_url)
        self.assertEqual(rc, 0, err)
        self.assertTrue(out == data, "echo differs: %d bytes of %d" % (len(out), len(data)))
        rc, _, err = run_dial(srv, "lib-tls", b"x", "-c", pki.path("other-ca.crt"),
                              url=proxy_url)
        self.assertEqual(rc, 1)
        self.assertIn("dial: dial server: tls: certificate verify failed", err)
        rc, out, err = run_dial(srv, "lib-tls", b"insecure", "-k", url=proxy_url)
        self.assertEqual((rc, out), (0, b"insecure"), err)

    def test_listener_with_client_certificate(self):
        pki = self.pki()
        srv = self.tls_server(pki, ports=("upstream",), client_cas=True)
        url = "https://localhost:%d" % srv.upstream_port
        self.echo_upstream(srv, "lib-mtls", "-c", pki.path("ca.crt"), "-C",
                           pki.path("client.crt"), "-K", pki.path("client.key"), url=url)
        rc, out, err = run_dial(srv, "lib-mtls", b"mtls")
        self.assertEqual((rc, out), (0, b"mtls"), err)

    def test_listener_insecure_skip_verify(self):
        pki = self.pki()
        srv = self.tls_server(pki, ports=("upstream",))
        self.echo_upstream(srv, "lib-tls-k", "-k", url="https://localhost:%d" % srv.upstream_port)
        rc, out, err = run_dial(srv, "lib-tls-k", b"k")
        self.assertEqual((rc, out), (0, b"k"), err)


class ClientLibPikoServer(ClientLibCase):
    """The library against the real Piko server."""

    def test_dial_example_through_piko_server(self):
        srv = self.piko_server()
        self.echo_upstream(srv, "lib-go-dial")
        data = pattern_bytes(30, 100 * 1024)
        # -n: Piko's server ends the connection at our half-close (§1.3).
        rc, out, err = run_dial(srv, "lib-go-dial", data, "-n", str(len(data)))
        self.assertEqual(rc, 0, err)
        self.assertTrue(out == data, "echo differs: %d bytes back of %d" % (len(out), len(data)))
        rc, out, err = run_dial(srv, "nobody-here", b"x")
        self.assertEqual(rc, 1)
        self.assertIn("dial: 502: no available upstreams", err)

    def test_echo_upstream_on_piko_server(self):
        srv = self.piko_server()
        self.echo_upstream(srv, "lib-go")
        fwd = self.forward(srv, "lib-go")
        self.assertEcho(fwd.port, 5, 7, half_close=False)
        self.assertEcho(fwd.port, 2 * MiB, 8, half_close=False)

    def test_bad_token_on_piko_server(self):
        srv = self.piko_server(*auth_flags("upstream", hmac_secret_key=SECRET))
        bad = self.echo_upstream(srv, "lib-go-auth", "-t", token({}, key="wrong"), wait=False)
        self.assertEqual(bad.wait(T(15)), 1, bad.describe())
        self.assertIn("connect: 401: invalid token", bad.stderr())
        self.echo_upstream(srv, "lib-go-auth", "-t", token({}, key=SECRET))
        fwd = self.forward(srv, "lib-go-auth")
        self.assertEcho(fwd.port, 1000, 13, half_close=False)

    def test_reconnects_after_piko_server_restarts(self):
        srv = self.piko_server()
        up = self.echo_upstream(srv, "lib-go-back")
        fwd = self.forward(srv, "lib-go-back")
        self.assertEcho(fwd.port, 1000, 9, half_close=False)
        srv.stop(expect_code=None)
        srv.start()
        self.wait_echo(fwd.port, up, half_close=False)
        self.assertEcho(fwd.port, 1000, 10, half_close=False)
