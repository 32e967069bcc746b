"""Hostile and careless clients (issue 14 item 2): each case gets a clear
answer, and the server keeps serving everyone else meanwhile.

  - HTTP/1.0 clients never receive a chunked body (Go's server: HTTP/1.0
    status line, the payload alone ended by closing, Connection: keep-alive
    only with a known length), on the proxy (relayed and its own answers)
    and the admin port;
  - a malformed chunked request body: 400 before any of it went upstream,
    502 {"error":"upstream unreachable"} after, the response cut once it
    started;
  - plain HTTP on a TLS port (proxy, upstream, admin, cluster): Go's exact
    "HTTP/1.0 400 Bad Request ... Client sent an HTTP request to an HTTPS
    server.", TLS unchanged for everyone else;
  - slow clients on the upstream port (a header timeout) and the admin port
    (header and idle timeouts).

Clients here are raw sockets: what is asserted is the bytes on the wire."""

import json
import socket
import ssl
import threading
import time

from harness import T, Agent, PikoTestCase, proxy_request, wait_for
from test_tls import Pki, curl

GO_PLAIN_HTTP_ON_TLS = (b"HTTP/1.0 400 Bad Request\r\n\r\n"
                        b"Client sent an HTTP request to an HTTPS server.\n")


# --- raw HTTP on a socket -----------------------------------------------------


def connect(port, timeout=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout or T(10))
    s.settimeout(timeout or T(10))
    return s


def read_until_eof(s, limit=1 << 22):
    """Everything until the peer closes (a reset counts as a close); raises
    on a timeout, i.e. when the peer kept the connection open."""
    out = b""
    while len(out) < limit:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            break
        if not d:
            break
        out += d
    return out


class RawResponse:
    def __init__(self, raw):
        head, sep, self.body = raw.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError("no complete response head in %r" % raw[:300])
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.proto, status, *_ = self.status_line.split(" ", 2)
        self.status = int(status)
        self.headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
        self.raw = raw

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "<RawResponse %r>" % self.raw[:400]


def read_head(s):
    """Bytes up to the end of a response head (and whatever followed it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise AssertionError("connection closed inside a head: %r" % buf)
        buf += d
    return buf


def read_one(s):
    """One response with a Content-Length (the connection stays usable)."""
    buf = read_head(s)
    r = RawResponse(buf)
    n = int(r.header("Content-Length"))
    while len(r.body) < n:
        d = s.recv(65536)
        if not d:
            raise AssertionError("closed inside a body: %r" % r)
        r.body += d
    return r


def exchange(port, data, timeout=None):
    """Send data, read until the server closes."""
    s = connect(port, timeout)
    try:
        s.sendall(data)
        return RawResponse(read_until_eof(s))
    finally:
        s.close()


def closed_by_peer(s, timeout):
    """Seconds until the peer closed s (EOF or reset), reading and dropping
    anything it sends; raises if it stays open for timeout."""
    t0 = time.monotonic()
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError("connection still open after %.1fs" % timeout)
    return time.monotonic() - t0


def raw_service(test, handle):
    """A TCP service on 127.0.0.1 running handle(conn) per connection in a
    thread (stopped at cleanup). Returns its "host:port"."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    stop = threading.Event()

    def run(conn):
        try:
            handle(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def loop():
        while not stop.is_set():
            try:
                conn, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=run, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()

    def close():
        stop.set()
        ls.close()

    test.addCleanup(close)
    return "127.0.0.1:%d" % ls.getsockname()[1]


def read_request_head(conn):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = conn.recv(65536)
        if not d:
            raise OSError("closed")
        buf += d
    return buf


class HostileBase(PikoTestCase):
    def assert_serving(self, srv, endpoint="my-endpoint"):
        """Everyone else is served: a normal request through the proxy and
        one to the admin port."""
        r = srv.proxy(endpoint, "GET", "/", timeout=T(10))
        self.assertEqual((r.status, r.body), (200, b"ok\n"), r)
        r = srv.admin("/health", timeout=T(10))
        self.assertEqual(r.status, 200, r)


# --- 1. HTTP/1.0 clients never receive a chunked body --------------------------


class Http10Test(HostileBase):
    def test_chunked_response_to_http10_is_close_delimited(self):
        up, srv, _ = self.stack()
        s = connect(srv.proxy_port)
        s.sendall(b"GET /chunked-slow?n=4&ms=200 HTTP/1.0\r\nx-piko-endpoint: my-endpoint\r\n\r\n")
        # the others are served while that body streams
        self.assert_serving(srv)
        r = RawResponse(read_until_eof(s))
        s.close()
        self.assertEqual(r.status_line, "HTTP/1.0 200 OK", r)
        self.assertIsNone(r.header("Transfer-Encoding"), r)
        self.assertIsNone(r.header("Content-Length"), r)
        self.assertIsNone(r.header("Connection"), r)  # closing is HTTP/1.0's default
        lines = r.body.decode().splitlines()
        self.assertEqual(len(lines), 4, r)
        for i, line in enumerate(lines):
            self.assertRegex(line, r"^chunk %d sent=[0-9.]+$" % i)
        # an HTTP/1.1 client still gets the chunked body
        s = connect(srv.proxy_port)
        s.sendall(b"GET /chunked-slow?n=2&ms=10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"x-piko-endpoint: my-endpoint\r\n\r\n")
        r11 = RawResponse(read_until_eof(s))
        s.close()
        self.assertEqual((r11.proto, r11.header("Transfer-Encoding")), ("HTTP/1.1", "chunked"))
        self.assertTrue(r11.body.endswith(b"\r\n0\r\n\r\n"), r11)
        self.assert_serving(srv)

    def test_http10_keep_alive_asks_do_not_make_chunked(self):
        # keep-alive asked, but the length is unknown: close-delimited anyway
        up, srv, _ = self.stack()
        r = exchange(srv.proxy_port, b"GET /chunked-slow?n=2&ms=10 HTTP/1.0\r\n"
                     b"Connection: keep-alive\r\nx-piko-endpoint: my-endpoint\r\n\r\n")
        self.assertEqual(r.status_line, "HTTP/1.0 200 OK", r)
        self.assertIsNone(r.header("Transfer-Encoding"), r)
        self.assertIsNone(r.header("Connection"), r)
        self.assertEqual(len(r.body.decode().splitlines()), 2, r)
        # a known length keeps it alive, said with Connection: keep-alive
        s = connect(srv.proxy_port)
        for _ in range(2):
            s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n"
                      b"x-piko-endpoint: my-endpoint\r\n\r\n")
            r = read_one(s)
            self.assertEqual((r.status_line, r.header("Connection"), r.body),
                             ("HTTP/1.0 200 OK", "keep-alive", b"ok\n"), r)
        s.close()
        # without keep-alive: closed after a Content-Length body, and the
        # Host it lacked is the endpoint's (as Piko's director sets it)
        r = exchange(srv.proxy_port,
                     b"GET /headers HTTP/1.0\r\nx-piko-endpoint: my-endpoint\r\n\r\n")
        self.assertEqual(r.status_line, "HTTP/1.0 200 OK", r)
        self.assertIn(["Host", "my-endpoint"], json.loads(r.body)["headers"])

    def test_trailers_and_unknown_length_for_http10(self):
        def trailers(conn):
            read_request_head(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"6\r\nhello \r\n")
            time.sleep(0.1)
            conn.sendall(b"5\r\nworld\r\n0\r\nX-Sum: 42\r\n\r\n")

        def unknown_length(conn):
            read_request_head(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
            time.sleep(0.1)
            conn.sendall(b"part two")
            conn.shutdown(socket.SHUT_WR)

        srv = self.server()
        self.agent(srv, "trailers", raw_service(self, trailers))
        self.agent(srv, "eof", raw_service(self, unknown_length), wait=False)
        wait_for(lambda: b"part two" in exchange(
            srv.proxy_port, b"GET / HTTP/1.0\r\nx-piko-endpoint: eof\r\n\r\n").raw,
            T(15), what="eof endpoint")
        r = exchange(srv.proxy_port, b"GET / HTTP/1.0\r\nx-piko-endpoint: trailers\r\n\r\n")
        self.assertEqual((r.status_line, r.body), ("HTTP/1.0 200 OK", b"hello world"), r)
        self.assertIsNone(r.header("Transfer-Encoding"), r)
        self.assertIsNone(r.header("Trailer"), r)
        r = exchange(srv.proxy_port, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n"
                     b"x-piko-endpoint: eof\r\n\r\n")
        self.assertEqual((r.status_line, r.body), ("HTTP/1.0 200 OK", b"part one, part two"), r)
        self.assertIsNone(r.header("Transfer-Encoding"), r)
        self.assertIsNone(r.header("Connection"), r)
        # an HTTP/1.1 client keeps its trailers
        r = exchange(srv.proxy_port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"x-piko-endpoint: trailers\r\n\r\n")
        self.assertEqual(r.header("Transfer-Encoding"), "chunked", r)
        self.assertIn(b"X-Sum: 42", r.body)

    def test_proxy_and_admin_answers_to_http10(self):
        srv = self.server()
        # the proxy's own errors, as Go writes them to an HTTP/1.0 client
        r = exchange(srv.proxy_port, b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(r.status_line, "HTTP/1.0 400 Bad Request", r)
        self.assertEqual(r.body, b'{"error":"missing endpoint id"}\n')
        self.assertEqual(r.header("Content-Length"), str(len(r.body)))
        self.assertIsNone(r.header("Connection"), r)
        r = exchange(srv.proxy_port, b"GET / HTTP/1.0\r\nx-piko-endpoint: nobody\r\n\r\n")
        self.assertEqual(r.status_line, "HTTP/1.0 502 Bad Gateway", r)
        self.assertEqual(r.body, b'{"error":"no available upstreams"}\n')
        s = connect(srv.proxy_port)
        s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nx-piko-endpoint: nobody\r\n\r\n")
        r = read_one(s)
        self.assertEqual((r.status_line, r.header("Connection")),
                         ("HTTP/1.0 502 Bad Gateway", "keep-alive"), r)
        s.close()
        # the admin port
        r = exchange(srv.admin_port, b"GET /metrics HTTP/1.0\r\n\r\n")
        self.assertEqual(r.status_line, "HTTP/1.0 200 OK", r)
        self.assertIsNone(r.header("Transfer-Encoding"), r)
        self.assertEqual(int(r.header("Content-Length")), len(r.body))
        self.assertIn(b"piko_proxy_requests_total", r.body)
        s = connect(srv.admin_port)
        for path in (b"/health", b"/nope"):
            s.sendall(b"GET " + path + b" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = read_one(s)
            self.assertEqual((r.proto, r.header("Connection")), ("HTTP/1.0", "keep-alive"), r)
        s.close()


# --- 2. malformed chunked request bodies ---------------------------------------


CHUNKED_POST = (b"POST /echo HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: my-endpoint\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")


class ChunkedBodyTest(HostileBase):
    def test_bad_chunk_before_anything_went_upstream_is_400(self):
        up, srv, _ = self.stack()
        r = exchange(srv.proxy_port, CHUNKED_POST + b"zz\r\nhello\r\n0\r\n\r\n")
        self.assertEqual((r.status_line, r.body), ("HTTP/1.1 400 Bad Request", b"400 Bad Request"))
        self.assertEqual(r.header("Connection"), "close")
        self.assert_serving(srv)

    def test_bad_chunk_mid_body_is_502(self):
        up, srv, _ = self.stack()
        s = connect(srv.proxy_port)
        s.sendall(CHUNKED_POST + b"5\r\nhello\r\n")
        time.sleep(0.3)  # the head and the first chunk go upstream
        self.assert_serving(srv)
        s.sendall(b"5\r\nworld\r\nnot-a-size\r\n")
        r = RawResponse(read_until_eof(s))
        s.close()
        self.assertEqual(r.status, 502, r)
        self.assertEqual(r.body, b'{"error":"upstream unreachable"}\n')
        self.assertEqual(r.header("Connection"), "close")
        # the service's request was aborted, not left waiting for the rest
        wait_for(lambda: up.stats()["inflight"] == 0, T(10), what="service idle")
        self.assert_serving(srv)

    def test_bad_chunk_after_the_response_started_cuts_it(self):
        def early(conn):
            # answers at once, before the body, and would finish in 5 s
            read_request_head(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nfirst\r\n")
            conn.settimeout(5)
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass
            conn.sendall(b"4\r\nlast\r\n0\r\n\r\n")

        srv = self.server()
        self.agent(srv, "early", raw_service(self, early), wait=False)
        # until the endpoint is routable: a request whose response started
        deadline = time.monotonic() + T(15)
        while True:
            s = connect(srv.proxy_port)
            s.sendall(CHUNKED_POST.replace(b"my-endpoint", b"early") + b"3\r\nabc\r\n")
            head = read_head(s)
            if head.startswith(b"HTTP/1.1 200"):
                break
            s.close()
            self.assertLess(time.monotonic(), deadline, head)
            time.sleep(0.1)
        t0 = time.monotonic()
        s.sendall(b"zz\r\n")
        rest = read_until_eof(s)
        s.close()
        raw = head + rest
        self.assertIn(b"5\r\nfirst\r\n", raw)
        self.assertNotIn(b"last", raw)
        self.assertNotIn(b"0\r\n\r\n", raw)  # cut: never a complete chunked body
        self.assertLess(time.monotonic() - t0, 4)
        self.assertEqual(srv.admin("/health").status, 200)


# --- 3. plain HTTP sent to a TLS port ------------------------------------------


class PlainHttpOnTlsTest(HostileBase):
    def tls_stack(self, *args):
        pki = Pki(self.tmpdir)
        up = self.upstream()
        # The cluster port too: a lone node links to no one, but its port
        # is open and speaks TLS.
        flags = pki.server_flags("proxy", "upstream", "admin", "cluster")
        srv = self.server(*(flags + list(args)), start=False)
        srv.start(wait=False)
        ca = ["--cacert", pki.path("ca.crt")]
        wait_for(lambda: curl("https://127.0.0.1:%d/ready" % srv.admin_port, *ca)[1] == 200,
                 T(10), what="server ready over TLS")
        ag = Agent(self.tmpdir, srv, "secure", up.addr,
                   connect_url="https://localhost:%d" % srv.upstream_port,
                   args=["--connect.tls.root-cas", pki.path("ca.crt")])
        self.procs.append(ag)
        ag._spawn()
        wait_for(lambda: curl("https://127.0.0.1:%d/" % srv.proxy_port, *ca,
                              "-H", "x-piko-endpoint: secure")[1] == 200,
                 T(15), what="agent over TLS")
        return pki, srv, ca

    def assert_tls_serving(self, srv, ca):
        rc, code, body, err = curl("https://127.0.0.1:%d/" % srv.proxy_port, *ca,
                                   "-H", "x-piko-endpoint: secure")
        self.assertEqual((rc, code, body), (0, 200, "ok\n"), err)
        rc, code, _, err = curl("https://127.0.0.1:%d/health" % srv.admin_port, *ca)
        self.assertEqual((rc, code), (0, 200), err)
        rc, code, body, err = curl("https://127.0.0.1:%d/nope" % srv.upstream_port, *ca)
        self.assertEqual((rc, code, body), (0, 404, "404 page not found"), err)

    def test_go_answer_on_every_tls_port_and_tls_unchanged(self):
        pki, srv, ca = self.tls_stack()
        for port in srv.ports + (srv.cluster_port,):
            for req in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"DELETE /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
                        b"G"):
                s = connect(port)
                s.sendall(req)
                self.assertEqual(read_until_eof(s), GO_PLAIN_HTTP_ON_TLS, (port, req))
                s.close()
            rc, code, body, err = curl("http://127.0.0.1:%d/ready" % port)
            self.assertEqual((rc, code, body),
                             (0, 400, "Client sent an HTTP request to an HTTPS server.\n"), err)
        self.assert_tls_serving(srv, ca)

    def test_tls_clients_unaffected_by_plain_and_silent_ones(self):
        pki, srv, ca = self.tls_stack("--proxy.http.read-header-timeout", "1s")
        # one that never speaks, one that spoke HTTP and never closes
        silent = connect(srv.proxy_port)
        lingering = connect(srv.admin_port)
        lingering.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_head(lingering), GO_PLAIN_HTTP_ON_TLS)
        # a TLS ClientHello that is garbage after its first byte fails its
        # handshake: no HTTP answer
        bad = connect(srv.upstream_port)
        bad.sendall(b"\x16\x03\x01\x00\x05hello")
        got = read_until_eof(bad)
        self.assertNotIn(b"HTTP/", got)
        bad.close()
        self.assert_tls_serving(srv, ca)
        # a TLS client by Python's ssl, byte for byte as before
        ctx = ssl.create_default_context(cafile=pki.path("ca.crt"))
        with ctx.wrap_socket(connect(srv.admin_port), server_hostname="localhost") as t:
            t.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            self.assertTrue(read_until_eof(t).startswith(b"HTTP/1.1 200 OK"))
        # the silent one goes after the proxy's header timeout (1 s), the
        # lingering one after 3 s
        self.assertLess(closed_by_peer(silent, T(8)), T(8))
        self.assertLess(closed_by_peer(lingering, T(8)), T(8))
        silent.close()
        lingering.close()
        self.assert_tls_serving(srv, ca)


# --- 4. slow clients on the upstream port --------------------------------------


class UpstreamSlowClientTest(HostileBase):
    def test_slow_and_silent_handshakes_are_closed_after_the_header_timeout(self):
        up = self.upstream()
        srv = self.server("--upstream.http.read-header-timeout", "2s")
        silent = connect(srv.upstream_port)
        half = connect(srv.upstream_port)
        half.sendall(b"GET /piko/v1/upstream/x HTT")
        drip = connect(srv.upstream_port)
        drip.sendall(b"GET /piko/v1/upstream/x HTTP/1.1\r\n")
        t0 = time.monotonic()
        # an agent connects and is served meanwhile
        self.agent(srv, "fine", up.addr)
        self.assertEqual(proxy_request(srv, "fine", "GET", "/").status, 200)
        # a header line every 0.4 s does not extend the bound
        stop = threading.Event()

        def dripper():
            while not stop.is_set():
                try:
                    drip.sendall(b"X-A: b\r\n")
                except OSError:
                    return
                time.sleep(0.4)
        th = threading.Thread(target=dripper, daemon=True)
        th.start()
        for s in (silent, half, drip):
            closed_by_peer(s, T(8))
        took = time.monotonic() - t0
        stop.set()
        th.join(T(5))
        for s in (silent, half, drip):
            s.close()
        self.assertGreater(took, 1.5)
        self.assertLess(took, T(8))
        self.assertEqual(proxy_request(srv, "fine", "GET", "/").status, 200)

    def test_yaml_key_and_bad_values(self):
        cfg = self.write_file("server.yaml", "upstream:\n  http:\n    read_header_timeout: 1s\n")
        srv = self.server("--config.path", cfg)
        s = connect(srv.upstream_port)
        t0 = time.monotonic()
        closed_by_peer(s, T(8))
        s.close()
        self.assertLess(time.monotonic() - t0, T(4))
        bad = self.server("--upstream.http.read-header-timeout", "0s", start=False)
        bad._spawn()
        self.assertEqual(bad.wait(T(10)), 1)
        self.assertIn("upstream.http.read_header_timeout must be positive", bad.stderr())


class UpstreamMalformedRequestTest(HostileBase):
    def test_unreadable_and_oversized_requests_get_go_answers_and_nothing_else(self):
        up = self.upstream()
        srv = self.server()
        self.agent(srv, "fine", up.addr)
        go400 = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 b"Content-Length: 15\r\nConnection: close\r\n\r\n400 Bad Request")
        for req in (b"HELLO\r\n\r\n",
                    b"GET /piko/v1/upstream/x HTTP/1.1\r\nBad Header\r\n\r\n",
                    b"GET /piko/v1/upstream/x HTTP/1.1\r\nHost: x\r\nContent-Length: z\r\n\r\n"):
            with self.subTest(req=req):
                s = connect(srv.upstream_port)
                s.sendall(req)
                # exactly Go's answer: not one byte more (the connection's
                # send queue, heap memory included, once followed it)
                self.assertEqual(read_until_eof(s), go400)
                s.close()
        # a head over the port's 64 KiB: 431, and the connection closed
        s = connect(srv.upstream_port)
        s.sendall(b"GET /piko/v1/upstream/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 +
                  b"\r\n\r\n")
        got = RawResponse(read_until_eof(s))
        s.close()
        self.assertEqual((got.status, got.body), (431, b"431 Request Header Fields Too Large"))
        # served meanwhile
        self.assertEqual(proxy_request(srv, "fine", "GET", "/").status, 200)


# --- 5. slow clients on the admin port -----------------------------------------


class AdminSlowClientTest(HostileBase):
    ARGS = ("--admin.http.read-header-timeout", "1s", "--admin.http.idle-timeout", "3s")

    def test_half_a_request_line_is_closed_after_the_header_timeout(self):
        srv = self.server(*self.ARGS)
        half = connect(srv.admin_port)
        half.sendall(b"GET /hea")
        silent = connect(srv.admin_port)
        body = connect(srv.admin_port)  # a push whose body stalls
        body.sendall(b"PUT /piko/v1/cluster/members HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 100\r\n\r\n{\"members\"")
        t0 = time.monotonic()
        # served meanwhile
        for _ in range(3):
            self.assertEqual(srv.admin("/health").status, 200)
        for s in (half, silent, body):
            closed_by_peer(s, T(8))
            s.close()
        took = time.monotonic() - t0
        self.assertGreater(took, 0.9)
        self.assertLess(took, T(8))
        self.assertEqual(srv.admin("/health").status, 200)

    def test_idle_keep_alive_is_closed_after_the_idle_timeout(self):
        srv = self.server(*self.ARGS)
        s = connect(srv.admin_port)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_one(s).status, 200)
        # still open past the header timeout: idle is not a slow request
        time.sleep(1.8)
        s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_one(s).status, 200)
        t0 = time.monotonic()
        self.assertEqual(srv.admin("/health").status, 200)
        took = closed_by_peer(s, T(10))
        s.close()
        self.assertGreater(time.monotonic() - t0, 2.5)
        self.assertLess(took, T(10))
        self.assertEqual(srv.admin("/health").status, 200)

    def test_defaults_and_yaml_keys(self):
        cfg = self.write_file("server.yaml", "admin:\n  http:\n    read_header_timeout: 1s\n"
                                             "    idle_timeout: 0s\n")
        srv = self.server("--config.path", cfg)
        s = connect(srv.admin_port)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_one(s).status, 200)
        half = connect(srv.admin_port)
        half.sendall(b"GET / HTTP/1.1\r\n")
        closed_by_peer(half, T(8))
        half.close()
        # idle_timeout 0: no idle limit; the connection still serves
        time.sleep(1.5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(read_one(s).status, 200)
        s.close()
        r = exchange(srv.admin_port,
                     b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(r.status, 404)
