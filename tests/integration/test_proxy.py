"""Proxying HTTP through server + agent to a real upstream service."""

import hashlib
import http.client
import re
import threading
import time

from harness import PikoTestCase, T, free_port, proxy_request, request, sha256
import upstream as upstream_mod

# response headers compared between direct and proxied responses (end-to-end,
# set by the upstream service; Date/Server/Connection legitimately differ)
E2E_HEADERS = ("Content-Type", "Content-Length", "X-Test", "X-Custom", "X-Multi")


def header_pairs(resp, names=E2E_HEADERS):
    out = []
    for name in names:
        out.append((name, resp.headers.get_all(name)))
    return out


class RoutingTest(PikoTestCase):
    def _compare_direct_and_proxied(self, srv, up, path, route_headers):
        direct = up.get(path)
        proxied = request(srv.proxy_port, "GET", path, headers=route_headers)
        self.assertEqual(proxied.status, direct.status, proxied)
        self.assertEqual(header_pairs(proxied), header_pairs(direct),
                         "end-to-end response headers differ")
        self.assertEqual(proxied.body, direct.body, "response body differs")
        return direct, proxied

    def test_get_by_x_piko_endpoint_header(self):
        up, srv, _ = self.stack("my-endpoint")
        path = "/big?bytes=262144&set-header=X-Custom:hello%20world&set-header=X-Multi:a&set-header=X-Multi:b"
        direct, proxied = self._compare_direct_and_proxied(
            srv, up, path, {"x-piko-endpoint": "my-endpoint"})
        self.assertEqual(proxied.status, 200)
        self.assertEqual(proxied.header("X-Test"), "1")
        self.assertEqual(proxied.header("X-Custom"), "hello world")
        self.assertEqual(proxied.headers.get_all("X-Multi"), ["a", "b"])
        self.assertEqual(len(proxied.body), 262144)
        self.assertEqual(proxied.body, upstream_mod.big_payload(262144))

        # non-200 statuses and their bodies pass through too
        for code in (201, 404, 418, 500, 503):
            self._compare_direct_and_proxied(srv, up, "/status/%d" % code,
                                             {"x-piko-endpoint": "my-endpoint"})

    def test_get_by_host(self):
        up, srv, _ = self.stack("foo")
        path = "/big?bytes=1000&set-header=X-Custom:by-host"
        for host in ("foo.example.com", "foo.example.com:%d" % srv.proxy_port):
            with self.subTest(host=host):
                _, proxied = self._compare_direct_and_proxied(srv, up, path, {"Host": host})
                self.assertEqual(proxied.status, 200)
                self.assertEqual(proxied.header("X-Custom"), "by-host")
                # the upstream sees the original Host
                r = request(srv.proxy_port, "GET", "/headers", headers={"Host": host})
                self.assertEqual(r.status, 200, r)
                seen = dict((k.lower(), v) for k, v in r.json()["headers"])
                self.assertEqual(seen.get("host"), host)

    def test_host_of_other_endpoint_is_not_routed_to_us(self):
        _, srv, _ = self.stack("foo")
        r = request(srv.proxy_port, "GET", "/", headers={"Host": "bar.example.com"})
        self.assertJsonError(r, 502, "no available upstreams")

    def test_path_and_query_preserved(self):
        _, srv, _ = self.stack("my-endpoint")
        targets = [
            "/echo",
            "/echo/a/b/c?x=1&y=2",
            "/echo/a%20b/%2Fslash%2F?q=a%20b&q=c+d&empty=&flag",
            "/echo/%E2%82%AC/caf%C3%A9?euro=%E2%82%AC",
            "/echo/trailing/?a=1&b=%26amp",
        ]
        for target in targets:
            with self.subTest(target=target):
                for method in ("GET", "POST", "PUT", "DELETE"):
                    body = b"" if method in ("GET", "DELETE") else b"body-" + target.encode()
                    r = proxy_request(srv, "my-endpoint", method, target,
                                      body=body if body else None)
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.header("X-Echo-Method"), method)
                    self.assertEqual(r.header("X-Echo-Path"), target)
                    self.assertEqual(r.body, body)

    def test_forwarding_headers_seen_by_upstream(self):
        _, srv, _ = self.stack("my-endpoint")
        r = proxy_request(srv, "my-endpoint", "GET", "/headers?x=1",
                          headers={"X-Client-Header": "kept", "User-Agent": "itest/1"})
        self.assertEqual(r.status, 200, r)
        doc = r.json()
        self.assertEqual(doc["method"], "GET")
        self.assertEqual(doc["path"], "/headers?x=1")
        seen = {}
        for k, v in doc["headers"]:
            seen.setdefault(k.lower(), []).append(v)
        self.assertEqual(seen.get("x-piko-forward"), ["true"], seen)
        xff = ", ".join(seen.get("x-forwarded-for", []))
        self.assertIn("127.0.0.1", [p.strip() for p in xff.split(",")], seen)
        self.assertEqual(seen.get("x-client-header"), ["kept"])
        self.assertEqual(seen.get("user-agent"), ["itest/1"])
        self.assertEqual(seen.get("host"), ["127.0.0.1:%d" % srv.proxy_port])

        # a client-supplied X-Forwarded-For is kept and the client IP appended
        r = proxy_request(srv, "my-endpoint", "GET", "/headers",
                          headers={"X-Forwarded-For": "203.0.113.7"})
        self.assertEqual(r.status, 200, r)
        xffs = [v for k, v in r.json()["headers"] if k.lower() == "x-forwarded-for"]
        parts = [p.strip() for p in ", ".join(xffs).split(",")]
        self.assertEqual(parts[0], "203.0.113.7", xffs)
        self.assertIn("127.0.0.1", parts[1:], xffs)

    def test_as_many_headers_as_a_client_may_send_reach_the_service(self):
        # 256 headers (the proxy port's most) plus those the server adds
        # (X-Forwarded-For, X-Piko-Forward) must still pass our agent's
        # reader; found by fuzz_http1 (a built request its reader refused).
        _, srv, _ = self.stack("many")
        for n, want in ((255, 200), (256, 200), (257, 431)):
            with self.subTest(headers=n):
                # x-piko-endpoint, and http.client's Host and
                # Accept-Encoding, are three of them
                hs = {"X-H%d" % i: str(i) for i in range(n - 3)}
                r = proxy_request(srv, "many", "GET", "/headers", headers=hs)
                self.assertEqual(r.status, want, r)
                if want == 200:
                    seen = [k.lower() for k, _ in r.json()["headers"]]
                    self.assertEqual(len([k for k in seen if k.startswith("x-h")]), n - 3)
                    self.assertIn("x-piko-forward", seen)
                    self.assertIn("x-forwarded-for", seen)


class BodyTest(PikoTestCase):
    SIZE = 10 * 1024 * 1024

    def _payload(self):
        # deterministic but not periodic in a way that hides reordering
        return b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(self.SIZE // 32))

    def _check_echo(self, r, data, chunked):
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("X-Echo-Body-Length"), str(len(data)),
                         "upstream received a different length")
        self.assertEqual(r.header("X-Echo-Body-Sha256"), sha256(data),
                         "upstream received different bytes")
        self.assertEqual(len(r.body), len(data), "echoed length differs")
        self.assertEqual(sha256(r.body), sha256(data), "echoed bytes differ")

    def test_10mib_post_content_length(self):
        _, srv, _ = self.stack("my-endpoint")
        data = self._payload()
        self.assertEqual(len(data), self.SIZE)
        r = proxy_request(srv, "my-endpoint", "POST", "/echo/big?cl=1", body=data,
                          headers={"Content-Type": "application/octet-stream"},
                          timeout=T(60))
        self._check_echo(r, data, chunked=False)

    def test_10mib_post_chunked(self):
        _, srv, _ = self.stack("my-endpoint")
        data = self._payload()

        def pieces():
            view = memoryview(data)
            step = 64 * 1024 + 17  # odd size: chunk boundaries move around
            for i in range(0, len(data), step):
                yield bytes(view[i:i + step])

        r = proxy_request(srv, "my-endpoint", "POST", "/echo/big?chunked=1", body=pieces(),
                          headers={"Transfer-Encoding": "chunked",
                                   "Content-Type": "application/octet-stream"},
                          timeout=T(60), encode_chunked=True)
        self._check_echo(r, data, chunked=True)

    def test_10mib_response(self):
        up, srv, _ = self.stack("my-endpoint")
        r = proxy_request(srv, "my-endpoint", "GET", "/big?bytes=%d" % self.SIZE, timeout=T(60))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.body), self.SIZE)
        self.assertEqual(sha256(r.body), sha256(upstream_mod.big_payload(self.SIZE)))


class StreamingTest(PikoTestCase):
    def test_chunked_response_is_streamed(self):
        _, srv, _ = self.stack("my-endpoint")
        n = 5
        interval = 0.3 * min(2.0, max(1.0, T(1)))  # 0.3 s, 0.6 s when sanitized
        conn = http.client.HTTPConnection("127.0.0.1", srv.proxy_port, timeout=T(15))
        try:
            t_start = time.time()
            conn.request("GET", "/chunked-slow?n=%d&ms=%d" % (n, int(interval * 1000)),
                         headers={"x-piko-endpoint": "my-endpoint"})
            resp = conn.getresponse()
            self.assertEqual(resp.status, 200)
            buf = b""
            arrivals = []  # (arrival time, line)
            while True:
                piece = resp.read1(65536)
                if not piece:
                    break
                now = time.time()
                buf += piece
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    arrivals.append((now, line.decode()))
        finally:
            conn.close()
        self.assertEqual(buf, b"", "trailing partial line")
        self.assertEqual([line.split(" sent=")[0] for _, line in arrivals],
                         ["chunk %d" % i for i in range(n)])
        sent = [float(line.split(" sent=")[1]) for _, line in arrivals]
        first_arrival = arrivals[0][0]
        last_sent = sent[-1]
        timeline = ["chunk %d sent +%.3fs arrived +%.3fs" % (i, s - t_start, a - t_start)
                    for i, (s, (a, _)) in enumerate(zip(sent, arrivals))]
        # the first chunk must be at the client well before the last one is
        # even produced (2 intervals of margin): no buffering of the response
        self.assertLess(first_arrival, last_sent - 2 * interval,
                        "first chunk not streamed:\n" + "\n".join(timeline))
        # and the arrivals are spread out like the sends
        self.assertGreater(arrivals[-1][0] - first_arrival, (n - 1) * interval * 0.5,
                           "chunks arrived together:\n" + "\n".join(timeline))


class KeepAliveTest(PikoTestCase):
    def test_sequential_requests_on_one_connection(self):
        """One client connection, mixed GET/POST/HEAD/empty bodies: each
        exchange is correct, prompt (the upstream answers in ~1 ms) and on
        the same TCP connection."""
        _, srv, _ = self.stack("my-endpoint")
        conn = http.client.HTTPConnection("127.0.0.1", srv.proxy_port, timeout=T(30))
        limit = T(2)
        try:
            sock = None
            plan = [("GET", None), ("GET", None), ("POST", b"x" * 10), ("GET", None),
                    ("POST", b""), ("POST", b"abc"), ("PUT", b"put body"), ("GET", None),
                    ("HEAD", None), ("DELETE", None), ("GET", None)]
            for i, (method, body) in enumerate(plan):
                target = "/echo/seq-%d?i=%d" % (i, i)
                t0 = time.monotonic()
                conn.request(method, target, body=body, headers={"x-piko-endpoint": "my-endpoint"})
                if sock is None:
                    sock = conn.sock
                self.assertIs(conn.sock, sock, "request %d: new TCP connection" % i)
                resp = conn.getresponse()
                got = resp.read()
                elapsed = time.monotonic() - t0
                what = "request %d (%s %s)" % (i, method, target)
                self.assertEqual(resp.status, 200, what)
                self.assertEqual(resp.getheader("X-Echo-Path"), target, what)
                self.assertEqual(resp.getheader("X-Echo-Method"), method, what)
                self.assertEqual(got, b"" if method == "HEAD" else (body or b""), what)
                self.assertFalse(resp.will_close, what + ": connection not kept alive")
                self.assertLess(elapsed, limit, "%s took %.2fs" % (what, elapsed))
        finally:
            conn.close()


class ConcurrencyTest(PikoTestCase):
    CLIENTS = 100
    REQUESTS = 20

    def test_100_concurrent_keepalive_clients(self):
        _, srv, _ = self.stack("my-endpoint")
        errors = []
        lock = threading.Lock()
        done = [0]
        barrier = threading.Barrier(self.CLIENTS, timeout=T(30))

        def client(c):
            conn = http.client.HTTPConnection("127.0.0.1", srv.proxy_port, timeout=T(30))
            try:
                barrier.wait()
                sock = None
                for i in range(self.REQUESTS):
                    target = "/echo/client-%d/req-%d?c=%d&i=%d" % (c, i, c, i)
                    if i % 2 == 0:
                        body = ("client %d request %d " % (c, i)).encode() * (1 + (c * 7 + i) % 50)
                        conn.request("POST", target, body=body,
                                     headers={"x-piko-endpoint": "my-endpoint"})
                        method = "POST"
                    else:
                        body = b""
                        conn.request("GET", target, headers={"x-piko-endpoint": "my-endpoint"})
                        method = "GET"
                    if sock is None:
                        sock = conn.sock
                    elif conn.sock is not sock:
                        raise AssertionError("client %d req %d: not on the same connection "
                                             "(the proxy closed the keep-alive connection)"
                                             % (c, i))
                    resp = conn.getresponse()
                    got = resp.read()
                    if resp.status != 200:
                        raise AssertionError("client %d req %d: status %d body %r"
                                             % (c, i, resp.status, got[:200]))
                    if resp.getheader("X-Echo-Path") != target:
                        raise AssertionError("client %d req %d: upstream saw path %r, sent %r"
                                             % (c, i, resp.getheader("X-Echo-Path"), target))
                    if resp.getheader("X-Echo-Method") != method:
                        raise AssertionError("client %d req %d: method %r"
                                             % (c, i, resp.getheader("X-Echo-Method")))
                    if got != body:
                        raise AssertionError("client %d req %d: body mismatch (%d vs %d bytes)"
                                             % (c, i, len(got), len(body)))
                    if resp.will_close:
                        raise AssertionError("client %d req %d: response closes the connection "
                                             "(keep-alive not honoured): %r"
                                             % (c, i, resp.getheaders()))
                with lock:
                    done[0] += 1
            except Exception as e:  # noqa: BLE001 - collected and reported
                with lock:
                    errors.append("%s: %s" % (type(e).__name__, e))
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(c,), daemon=True)
                   for c in range(self.CLIENTS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + T(120)
        for t in threads:
            t.join(max(0.1, deadline - time.monotonic()))
        hung = sum(1 for t in threads if t.is_alive())
        self.assertEqual(hung, 0, "%d clients still running after the deadline" % hung)
        if errors:
            kinds = {}
            for e in errors:
                kinds.setdefault(re.sub(r"\d+", "N", e)[:120], []).append(e)
            self.fail("%d of %d clients failed; by kind:\n%s\nfirst ones:\n%s" % (
                len(errors), self.CLIENTS,
                "\n".join("  %3d x %s" % (len(v), k) for k, v in sorted(kinds.items())),
                "\n".join(errors[:5])))
        self.assertEqual(done[0], self.CLIENTS)


class ErrorTest(PikoTestCase):
    def test_no_upstream_502(self):
        srv = self.server()
        r = proxy_request(srv, "nobody-here", "GET", "/x")
        self.assertJsonError(r, 502, "no available upstreams")
        r = request(srv.proxy_port, "GET", "/x", headers={"Host": "nobody.example.com"})
        self.assertJsonError(r, 502, "no available upstreams")

    def test_error_body_is_json_line(self):
        srv = self.server()
        r = proxy_request(srv, "nobody-here", "GET", "/x")
        self.assertEqual(r.status, 502)
        self.assertEqual(r.body, b'{"error":"no available upstreams"}\n')
        r = request(srv.proxy_port, "GET", "/x", headers={"Host": "localhost"})
        self.assertEqual(r.status, 400)
        self.assertEqual(r.body, b'{"error":"missing endpoint id"}\n')

    def test_missing_endpoint_400(self):
        srv = self.server()
        for host in ("localhost", "localhost:%d" % srv.proxy_port,
                     "127.0.0.1:%d" % srv.proxy_port, "127.0.0.1"):
            with self.subTest(host=host):
                r = request(srv.proxy_port, "GET", "/x", headers={"Host": host})
                self.assertJsonError(r, 400, "missing endpoint id")

    def test_upstream_timeout_504(self):
        _, srv, _ = self.stack("my-endpoint", server_args=("--proxy.timeout", "1s"))
        slow_ms = int(T(4) * 1000)
        t0 = time.monotonic()
        r = proxy_request(srv, "my-endpoint", "GET", "/slow?ms=%d" % slow_ms, timeout=T(20))
        elapsed = time.monotonic() - t0
        self.assertJsonError(r, 504, "upstream timeout")
        self.assertGreaterEqual(elapsed, 0.9, "504 before the 1s proxy timeout")
        self.assertLess(elapsed, slow_ms / 1000.0 - 0.5,
                        "504 came only after the upstream answered (%.2fs)" % elapsed)
        # a fast request on the same server still works
        r = proxy_request(srv, "my-endpoint", "GET", "/slow?ms=10")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"slow done\n")

    def test_unrequested_switching_protocols_is_502(self):
        # A service answering 101 to a plain request, or switching to another
        # protocol than the one asked for, is broken: 502 as Go's reverse
        # proxy answers, never a relay of raw bytes.
        _, srv, _ = self.stack("sw")
        r = proxy_request(srv, "sw", "GET", "/switch")
        self.assertJsonError(r, 502, "upstream unreachable")
        r = proxy_request(srv, "sw", "GET", "/switch?proto=bogus",
                          headers={"Connection": "Upgrade", "Upgrade": "websocket"})
        self.assertJsonError(r, 502, "upstream unreachable")

    def test_upstream_unreachable_502(self):
        srv = self.server()
        dead = free_port()  # nothing listens there
        self.agent(srv, "dead-end", "127.0.0.1:%d" % dead)
        r = proxy_request(srv, "dead-end", "GET", "/x")
        self.assertJsonError(r, 502, "upstream unreachable")
