"""The agent's own HTTP server (`--server.enabled`, `--server.bind-addr`; YAML
`server: {enabled, bind_addr}`): /health, /ready (the readiness probe of a
Kubernetes Deployment: 200 only while every listener's tunnel is up),
/metrics (Piko's agent metric names), 404 for anything else; a bind address
that cannot be used is an error with exit status 1."""

import http.client
import re
import socket
import time

from harness import PikoTestCase, Proc, CONFIG, T, free_port, request, wait_for
import test_goaway as goaway  # its FakeServer (a module import: no tests re-run here)


def get(port, path, method="GET"):
    return request(port, method, path, timeout=T(5))


def status_of(port, path):
    try:
        return get(port, path).status
    except (OSError, http.client.HTTPException):
        return None


def metric_value(text, name, labels):
    """The value of the series name{labels...} (labels: a dict, all must
    match), or None."""
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


class AgentAdminTest(PikoTestCase):
    def agent_proc(self, args, name="agent"):
        p = Proc(name, self.tmpdir, [CONFIG.bin, "agent"] + list(args))
        self.procs.append(p)
        p._spawn()
        return p

    def wait_admin(self, agent, port):
        """Until the admin port answers /health (the agent may still be
        connecting)."""
        def up():
            if agent.poll() is not None:
                raise AssertionError("agent exited with %d\n%s" % (agent.poll(),
                                                                   agent.describe()))
            return status_of(port, "/health") == 200
        wait_for(up, T(10), what="the agent's /health")

    def two_listener_config(self, srv_upstream_port, admin_port, up_addr, extra=""):
        return self.write_file("agent.yaml", """\
connect:
  url: http://127.0.0.1:%d
  timeout: 60s
server:
  enabled: true
  bind_addr: 127.0.0.1:%d
log:
  level: debug
listeners:
  - endpoint_id: web
    addr: %s
    protocol: http
    timeout: 10s
  - endpoint_id: raw
    addr: %s
    protocol: tcp
    timeout: 10s
%s""" % (srv_upstream_port, admin_port, up_addr, up_addr, extra))

    def test_ready_follows_the_tunnels(self):
        up = self.upstream()
        ports = (free_port(), free_port(), free_port())
        admin = free_port()
        cfg = self.two_listener_config(ports[1], admin, up.addr)
        ag = self.agent_proc(["start", "--config.path", cfg])
        self.wait_admin(ag, admin)

        # no server yet: not ready, and the body says which listener
        r = get(admin, "/ready")
        self.assertEqual(r.status, 503, r)
        self.assertRegex(r.body.decode(), r"^not ready: endpoint (web|raw) disconnected\n$")
        self.assertEqual(get(admin, "/health").status, 200)

        srv = self.server(ports=ports)
        wait_for(lambda: status_of(admin, "/ready") == 200, T(20),
                 what="/ready 200 once both tunnels are up")
        # and it really routes
        self.assertEqual(srv.proxy("web", "GET", "/").status, 200)

        # the server dies: not ready while it is away
        srv.kill()
        wait_for(lambda: status_of(admin, "/ready") == 503, T(10),
                 what="/ready 503 after the server was killed")
        r = get(admin, "/ready")
        self.assertIn(b"disconnected", r.body)
        self.assertEqual(get(admin, "/health").status, 200, "alive while disconnected")

        # back on the same ports: ready again (reconnect backoff is <= 15 s)
        srv2 = self.server(ports=ports)
        wait_for(lambda: status_of(admin, "/ready") == 200, T(25),
                 what="/ready 200 after the server came back")
        self.assertEqual(srv2.proxy("web", "GET", "/").status, 200)

        # graceful shutdown: the agent exits 0
        ag.stop(expect_code=0)

    def test_ready_through_a_go_away_move(self):
        # The server's Go Away: the agent dials a fresh tunnel while the old
        # one keeps serving; ready all along as long as one of them is up.
        up = self.upstream()
        fake = goaway.FakeServer()
        self.addCleanup(fake.close)
        admin = free_port()
        ag = self.agent_proc(["http", goaway.ENDPOINT, up.addr, "--connect.url", fake.url,
                              "--server.enabled", "--server.bind-addr",
                              "127.0.0.1:%d" % admin, "--log.level", "debug"])
        s1 = fake.session(0, T(10))
        self.wait_admin(ag, admin)
        wait_for(lambda: status_of(admin, "/ready") == 200, T(10), what="ready on session 1")

        # the fresh tunnel is refused for a while: the superseded one carries on
        fake.refuse = 1000
        s1.go_away(0)
        wait_for(lambda: len(fake.attempts) >= 3, T(10), what="the agent dialling afresh")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            r = get(admin, "/ready")
            self.assertEqual(r.status, 200, "not ready while the old tunnel is up: %r" % r)
            time.sleep(0.05)

        # the old tunnel goes too: not ready
        s1.close()
        wait_for(lambda: status_of(admin, "/ready") == 503, T(10),
                 what="/ready 503 once no tunnel is up")
        self.assertIn(b"endpoint %s disconnected" % goaway.ENDPOINT.encode(),
                      get(admin, "/ready").body)

        # the server takes the fresh tunnel: ready again
        fake.refuse = 0
        fake.session(1, T(20))
        wait_for(lambda: status_of(admin, "/ready") == 200, T(10), what="ready on session 2")
        ag.stop(expect_code=0)

    def test_metrics_health_404_and_flags(self):
        up = self.upstream()
        srv = self.server()
        admin = free_port()
        ag = self.agent_proc(["http", "my-endpoint", up.addr, "--connect.url", srv.upstream_url,
                              "--server.enabled", "--server.bind-addr",
                              "127.0.0.1:%d" % admin])
        self.wait_admin(ag, admin)
        wait_for(lambda: status_of(admin, "/ready") == 200, T(15), what="ready")
        r = get(admin, "/ready")
        self.assertEqual(r.body, b"")
        for _ in range(3):
            self.assertEqual(srv.proxy("my-endpoint", "GET", "/").status, 200)
        self.assertEqual(srv.proxy("my-endpoint", "POST", "/echo", body=b"x" * 1000).status, 200)

        r = get(admin, "/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("Content-Type", "").startswith("text/plain; version=0.0.4"), r)
        text = r.body.decode()
        for name in ("piko_agent_requests_in_flight", "piko_agent_requests_total",
                     "piko_agent_request_latency_seconds", "piko_agent_request_size_bytes",
                     "piko_agent_response_size_bytes", "piko_agent_listener_connected",
                     "piko_agent_open_streams", "piko_agent_tunnel_connects_total"):
            self.assertIn("# TYPE %s " % name, text, name)
        ep = {"endpoint": "my-endpoint"}
        self.assertEqual(metric_value(text, "piko_agent_requests_total",
                                      dict(ep, method="GET", status="200")), 3.0, text)
        self.assertEqual(metric_value(text, "piko_agent_requests_total",
                                      dict(ep, method="POST", status="200")), 1.0, text)
        self.assertEqual(metric_value(text, "piko_agent_request_latency_seconds_count",
                                      dict(ep, method="GET", status="200")), 3.0, text)
        self.assertEqual(metric_value(text, "piko_agent_request_size_bytes_count", ep), 4.0)
        self.assertGreater(metric_value(text, "piko_agent_request_size_bytes_sum", ep), 1000)
        self.assertEqual(metric_value(text, "piko_agent_response_size_bytes_count", ep), 4.0)
        self.assertEqual(metric_value(text, "piko_agent_requests_in_flight", ep), 0.0, text)
        self.assertEqual(metric_value(text, "piko_agent_listener_connected", ep), 1.0, text)
        self.assertEqual(metric_value(text, "piko_agent_tunnel_connects_total", ep), 1.0, text)
        # Go's client renders label names sorted
        self.assertRegex(text, r'piko_agent_requests_total\{endpoint="my-endpoint",'
                               r'method="GET",status="200"\} 3\n')

        # anything else is 404; HEAD answers without a body; the query is ignored
        self.assertEqual(get(admin, "/").status, 404)
        self.assertEqual(get(admin, "/metricsx").status, 404)
        self.assertEqual(get(admin, "/health", method="POST").status, 404)
        self.assertEqual(get(admin, "/health?x=1").status, 200)
        r = get(admin, "/ready", method="HEAD")
        self.assertEqual((r.status, r.body), (200, b""))

        # several requests on one connection: each is answered, then closed
        s = socket.create_connection(("127.0.0.1", admin), timeout=T(5))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
        self.assertIn(b"Connection: close", data)
        # a malformed request gets 400
        s = socket.create_connection(("127.0.0.1", admin), timeout=T(5))
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 400 "))
        s.close()
        ag.stop(expect_code=0)

    def test_idle_connections_are_bounded(self):
        # 64 connections at most (more are closed at once), each closed 10 s
        # after it opened whatever it sent (reset), and the port serves again.
        up = self.upstream()
        srv = self.server()
        admin = free_port()
        ag = self.agent_proc(["http", "my-endpoint", up.addr, "--connect.url", srv.upstream_url,
                              "--server.enabled", "--server.bind-addr",
                              "127.0.0.1:%d" % admin])
        self.wait_admin(ag, admin)
        time.sleep(0.3)  # the probes' connections are gone
        conns = [socket.create_connection(("127.0.0.1", admin), timeout=T(15))
                 for _ in range(70)]
        for c in conns[:8]:
            c.sendall(b"GET /health HTTP/1.1\r\n")  # a head never finished
        time.sleep(0.5)

        def state(c):
            c.settimeout(0)
            try:
                return "closed" if c.recv(1) == b"" else "data"
            except BlockingIOError:
                return "open"
            except ConnectionResetError:
                return "closed"
            finally:
                c.settimeout(T(15))
        states = [state(c) for c in conns]
        # 6 over the limit closed at once (a connection still closing when
        # they came may have let one more in)
        self.assertIn(states.count("closed"), (5, 6), states)
        self.assertNotIn("data", states)
        t0 = time.monotonic()
        for c in conns:
            try:
                got = c.recv(1)
            except ConnectionResetError:
                got = b""  # the timeout aborts (RST)
            self.assertEqual(got, b"", "an idle connection answered")
        self.assertLess(time.monotonic() - t0, T(12))
        for c in conns:
            c.close()
        self.assertEqual(get(admin, "/health").status, 200)
        ag.stop(expect_code=0)

    def test_disabled_by_default(self):
        up = self.upstream()
        srv = self.server()
        self.agent(srv, "my-endpoint", up.addr)
        out = self.procs[-1].stderr()
        self.assertNotIn('"subsystem":"server"', out)

    def test_bad_bind_address_exits_1(self):
        srv = self.server()
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        cases = [("bogus", "invalid listen address"),
                 ("127.0.0.1:99999", "invalid listen address"),
                 ("127.0.0.1:%d" % busy.getsockname()[1], "Address already in use"),
                 ("no-such-host.invalid:5000", "listen no-such-host.invalid:5000")]
        for addr, needle in cases:
            with self.subTest(addr=addr):
                ag = self.agent_proc(["http", "my-endpoint", "3000", "--connect.url",
                                      srv.upstream_url, "--server.enabled",
                                      "--server.bind-addr", addr])
                rc = ag.wait(T(10))
                if rc is None:
                    ag.kill()
                self.assertEqual(rc, 1, ag.describe())
                err = ag.stderr()
                self.assertIn("server: ", err)
                self.assertIn(needle, err)

    def test_yaml_keys(self):
        srv = self.server()
        # an unknown key under server: is a config error
        cfg = self.write_file("bad.yaml", "server:\n  enabled: true\n  port: 5000\n")
        ag = self.agent_proc(["http", "my-endpoint", "3000", "--connect.url", srv.upstream_url,
                              "--config.path", cfg])
        self.assertEqual(ag.wait(T(10)), 1, ag.describe())
        self.assertIn("unknown key: server.port", ag.stderr())
        # a flag overrides the file's bind address
        admin = free_port()
        cfg = self.write_file("ok.yaml", "server:\n  enabled: true\n  bind_addr: bogus\n")
        ag = self.agent_proc(["http", "my-endpoint", "3000", "--connect.url", srv.upstream_url,
                              "--config.path", cfg, "--server.bind-addr",
                              "127.0.0.1:%d" % admin], name="agent2")
        self.wait_admin(ag, admin)
        wait_for(lambda: status_of(admin, "/ready") == 200, T(15), what="ready")
        ag.stop(expect_code=0)
