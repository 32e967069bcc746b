"""Caps with clear refusals (issue 14 item 2): each cap is a config key, the
thing beyond it gets a clear answer, the refusal is counted in
piko_server_caps_refused_total{cap} and logged (at most once per 10 s per
cap), and everyone else keeps being served."""

import json
import re
import socket
import threading
import time

from harness import PikoTestCase, T, proxy_request, request, wait_for

UPGRADE = ("GET /piko/v1/upstream/%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n")


def read_all(s, limit=65536):
    data = b""
    while len(data) < limit:
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            break
        if not b:
            break
        data += b
    return data


def upgrade(port, endpoint):
    """A WebSocket upgrade to the upstream port: (status, head+body bytes);
    the socket is closed after the head of a 101."""
    s = socket.create_connection(("127.0.0.1", port), timeout=T(5))
    try:
        s.sendall((UPGRADE % endpoint).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            b = s.recv(4096)
            if not b:
                break
            data += b
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
        if status != 101:
            data += read_all(s)
        return status, data
    finally:
        s.close()


def body_json(data):
    return json.loads(data.split(b"\r\n\r\n", 1)[1].decode())


def open_streams(srv):
    m = re.search(r"^piko_upstreams_open_streams (\S+)$", srv.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def refused_count(srv, cap):
    text = srv.metrics()
    m = re.search(r'^piko_server_caps_refused_total\{cap="%s"\} (\S+)$' % cap, text, re.M)
    return float(m.group(1)) if m else 0.0


class CapsTest(PikoTestCase):
    def test_tunnels_per_endpoint(self):
        up = self.upstream()
        srv = self.server("--upstream.max-connections-per-endpoint", "2")
        a1 = self.agent(srv, "e", up.addr)
        self.agent(srv, "e", up.addr)
        wait_for(lambda: '"endpoint-id":"e"' in srv.stderr()
                 and srv.stderr().count('"msg":"upstream connected"') >= 2, T(10),
                 what="two tunnels of e")
        # the third is refused before the upgrade, with a JSON reason
        status, data = upgrade(srv.upstream_port, "e")
        self.assertEqual(status, 503, data)
        self.assertEqual(body_json(data),
                         {"error": "too many upstream connections for this endpoint on this node"})
        self.assertIn(b"Content-Type: application/json", data)
        # another endpoint is not affected
        status, data = upgrade(srv.upstream_port, "other")
        self.assertEqual(status, 101, data)
        self.assertEqual(proxy_request(srv, "e", "GET", "/").status, 200)
        # our agent reads the 503 as retryable and gets in once there is room
        a3 = self.agent(srv, "e", up.addr, wait=False)
        wait_for(lambda: re.search(r'"connect failed; retrying".*"error":"503"', a3.stderr()),
                 T(10), what="the third agent retrying on 503")
        self.assertIsNone(a3.poll())
        self.assertGreaterEqual(refused_count(srv, "upstream_connections_per_endpoint"), 2)
        self.assertRegex(srv.stderr(), r'"level":"warn".*upstream.max_connections_per_endpoint '
                                       r'reached.*"cap":"upstream_connections_per_endpoint"')
        a1.stop()
        wait_for(lambda: '"msg":"connected"' in a3.stderr(), T(30),
                 what="the third agent connected once the first left")

    def test_upstream_connections_per_node(self):
        up = self.upstream()
        srv = self.server("--upstream.max-connections", "1")
        self.agent(srv, "a", up.addr)
        status, data = upgrade(srv.upstream_port, "b")
        self.assertEqual(status, 503, data)
        self.assertEqual(body_json(data), {"error": "too many upstream connections on this node"})
        self.assertEqual(refused_count(srv, "upstream_connections"), 1)
        self.assertEqual(proxy_request(srv, "a", "GET", "/").status, 200)

    def test_handshakes_count_toward_the_node_cap(self):
        # Clients that connect and never finish their upgrade hold a slot
        # each until the header timeout: with 2 of them, the third
        # connection is one too many, and a real upgrade gets the 503.
        srv = self.server("--upstream.max-connections", "2",
                          "--upstream.http.read-header-timeout", "3s")
        silent = self.held(srv.upstream_port, 2)
        time.sleep(0.3)  # accepted and adopted
        status, data = upgrade(srv.upstream_port, "b")
        self.assertEqual(status, 503, data)
        self.assertEqual(body_json(data), {"error": "too many upstream connections on this node"})
        self.assertEqual(refused_count(srv, "upstream_connections"), 1)
        # once they are gone (closed by the client here), there is room again
        for s in silent:
            s.close()
        wait_for(lambda: upgrade(srv.upstream_port, "b")[0] == 101, T(5),
                 what="an upgrade served once the silent connections closed")
        # and silent ones the client keeps are closed by the header timeout
        silent = self.held(srv.upstream_port, 2)
        t0 = time.monotonic()
        for s in silent:
            s.settimeout(T(10))
            self.assertEqual(read_all(s), b"")
        self.assertGreater(time.monotonic() - t0, 2.5)
        self.assertEqual(upgrade(srv.upstream_port, "c")[0], 101)

    def held(self, port, n):
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=T(5))
            socks.append(s)
            self.addCleanup(s.close)
        return socks

    def refused_answer(self, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=T(5))
        try:
            return read_all(s)
        finally:
            s.close()

    def check_port_cap(self, srv, port, cap, flag_name, serve):
        time.sleep(0.3)  # the harness's own probes are closed server-side too
        held = self.held(port, 3)
        time.sleep(0.2)
        data = self.refused_answer(port)
        self.assertTrue(data.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), data)
        self.assertEqual(body_json(data), {"error": "too many connections"})
        for _ in range(4):
            self.assertTrue(self.refused_answer(port).startswith(b"HTTP/1.1 503"))
        # one slot frees: served again
        held[0].close()
        wait_for(lambda: serve().status != 503, T(5), what="served once a connection closed")
        for s in held[1:]:
            s.close()
        time.sleep(0.3)  # the server sees the closes
        # counted every time (5, and any answered while the slot freed),
        # logged once (rate limited)
        self.assertGreaterEqual(refused_count(srv, cap), 5)
        logs = [ln for ln in srv.stderr().splitlines()
                if '"cap":"%s"' % cap in ln and flag_name in ln]
        self.assertEqual(len(logs), 1, logs)
        self.assertIn('"level":"warn"', logs[0])

    def test_proxy_connections(self):
        up = self.upstream()
        srv = self.server("--proxy.max-connections", "3")
        self.agent(srv, "e", up.addr)
        self.check_port_cap(srv, srv.proxy_port, "proxy_connections", "proxy.max_connections",
                            lambda: proxy_request(srv, "e", "GET", "/"))

    def test_admin_connections(self):
        srv = self.server("--admin.max-connections", "3")
        self.check_port_cap(srv, srv.admin_port, "admin_connections", "admin.max_connections",
                            lambda: request(srv.admin_port, "GET", "/health"))

    def test_streams_per_connection(self):
        up = self.upstream()
        srv = self.server("--upstream.max-streams-per-connection", "2")
        self.agent(srv, "e", up.addr)
        results = []

        def slow():
            results.append(proxy_request(srv, "e", "GET", "/slow?ms=1500").status)
        ths = [threading.Thread(target=slow) for _ in range(2)]
        for th in ths:
            th.start()
        wait_for(lambda: open_streams(srv) == 2, T(5), what="two streams open")
        r = proxy_request(srv, "e", "GET", "/")
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.json(), {"error": "too many streams on the upstream connection"})
        for th in ths:
            th.join(T(10))
        self.assertEqual(results, [200, 200])
        # the streams ended: served again
        self.assertEqual(proxy_request(srv, "e", "GET", "/").status, 200)
        self.assertEqual(refused_count(srv, "streams_per_connection"), 1)
        self.assertRegex(srv.stderr(), r'"level":"warn".*upstream.max_streams_per_connection '
                                       r'reached.*"cap":"streams_per_connection"')

    def test_a_full_tunnel_is_passed_over_for_another_of_the_endpoint(self):
        up = self.upstream()
        srv = self.server("--upstream.max-streams-per-connection", "1")
        self.agent(srv, "e", up.addr)
        self.agent(srv, "e", up.addr)
        wait_for(lambda: srv.stderr().count('"msg":"upstream connected"') >= 2, T(10),
                 what="two tunnels of e")
        results = []

        def slow():
            results.append(proxy_request(srv, "e", "GET", "/slow?ms=1500").status)
        th = threading.Thread(target=slow)
        th.start()
        wait_for(lambda: open_streams(srv) == 1, T(5), what="one stream open")
        # whichever tunnel round-robin picks next, the request is served by
        # the one with room: never a 503 while the other tunnel is free
        for _ in range(4):
            self.assertEqual(proxy_request(srv, "e", "GET", "/").status, 200)
        th.join(T(10))
        self.assertEqual(results, [200])
        self.assertEqual(refused_count(srv, "streams_per_connection"), 0)
        # both full: the cap's 503
        ths = [threading.Thread(target=slow) for _ in range(2)]
        for t in ths:
            t.start()
        wait_for(lambda: open_streams(srv) == 2, T(5), what="two streams open")
        r = proxy_request(srv, "e", "GET", "/")
        self.assertEqual(r.status, 503, r)
        for t in ths:
            t.join(T(10))
        self.assertEqual(results, [200, 200, 200])

    def test_yaml_keys(self):
        up = self.upstream()
        cfg = self.write_file("server.yaml", """\
proxy:
  max_connections: 100
upstream:
  max_connections: 100
  max_connections_per_endpoint: 1
  max_streams_per_connection: 100
admin:
  max_connections: 100
""")
        srv = self.server("--config.path", cfg)
        self.agent(srv, "e", up.addr)
        status, data = upgrade(srv.upstream_port, "e")
        self.assertEqual(status, 503, data)
        self.assertEqual(refused_count(srv, "upstream_connections_per_endpoint"), 1)

    def test_bad_values_refused(self):
        srv = self.server("--proxy.max-connections", "-1", start=False)
        srv._spawn()
        rc = srv.wait(T(10))
        self.assertNotEqual(rc, 0)
        self.assertIn("must not be negative", srv.stderr())


if __name__ == "__main__":
    import unittest
    unittest.main()
