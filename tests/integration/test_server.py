"""`piko server`: admin routes, metrics, YAML config, graceful shutdown."""

import re
import signal
import threading
import time

from harness import (PikoTestCase, Server, T, free_port, proxy_request, request,
                     wait_for)


def metric_samples(text, name):
    """[(labels string, value)] of the samples of metric `name`."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m and m.group(1) == name:
            out.append((m.group(2) or "", float(m.group(3))))
    return out


def metric_sum(text, name):
    return sum(v for _, v in metric_samples(text, name))


class AdminTest(PikoTestCase):
    def test_health_and_ready(self):
        srv = self.server()
        r = srv.admin("/health")
        self.assertEqual(r.status, 200, r)
        r = srv.admin("/ready")
        self.assertEqual(r.status, 200, r)

    def test_metrics_names_and_request_counter(self):
        _, srv, _ = self.stack("my-endpoint")
        text = srv.metrics()
        self.assertIn("piko_upstreams_connected_upstreams", text)
        before = metric_sum(text, "piko_proxy_requests_total")

        n_ok, n_err = 5, 2
        for i in range(n_ok):
            r = proxy_request(srv, "my-endpoint", "GET", "/echo/metrics-%d" % i)
            self.assertEqual(r.status, 200, r)
        for i in range(n_err):
            r = proxy_request(srv, "nobody-here", "GET", "/x")
            self.assertEqual(r.status, 502, r)

        def counted():
            t = srv.metrics()
            return t if metric_sum(t, "piko_proxy_requests_total") >= before + n_ok + n_err else None

        try:
            text = wait_for(counted, T(5), interval=0.1, what="piko_proxy_requests_total to grow")
        except AssertionError:
            t = srv.metrics()
            self.fail("piko_proxy_requests_total did not grow by %d: before %g, now %g; samples %r"
                      % (n_ok + n_err, before, metric_sum(t, "piko_proxy_requests_total"),
                         metric_samples(t, "piko_proxy_requests_total")))
        self.assertIn("piko_proxy_requests_total", text)
        samples = metric_samples(text, "piko_proxy_requests_total")
        # labelled by status and method (§7.3)
        self.assertTrue(any('status="200"' in l and 'method="GET"' in l for l, _ in samples),
                        samples)
        self.assertTrue(any('status="502"' in l for l, _ in samples), samples)

    def test_metrics_connected_upstreams_gauge(self):
        up = self.upstream()
        srv = self.server()

        def gauge():
            return metric_sum(srv.metrics(), "piko_upstreams_connected_upstreams")

        self.assertIn("piko_upstreams_connected_upstreams", srv.metrics())
        self.assertEqual(gauge(), 0)
        ag = self.agent(srv, "my-endpoint", up.addr)
        wait_for(lambda: gauge() == 1, T(5), what="connected_upstreams == 1")
        ag.stop(expect_code=None)
        wait_for(lambda: gauge() == 0, T(5), what="connected_upstreams back to 0")


class UpstreamPortTest(PikoTestCase):
    def test_any_host_header_reaches_the_upstream_route(self):
        # lws picks a vhost by comparing the Host's name with vhost names
        # over the Host's length only: "a" once matched "admin" and the
        # connection hung in the wrong vhost until a 5 s timeout.
        import socket
        from tcp_ws import client_handshake, read_body
        srv = self.server()
        for host in ("a", "ad", "admin", "p", "proxy", "u", "upstream", "x.example.com:1"):
            with self.subTest(host=host):
                s = socket.create_connection(("127.0.0.1", srv.upstream_port), timeout=T(5))
                try:
                    hs = client_handshake(s, "/piko/v1/upstream/ep-%s" % host.split(":")[0],
                                          host)
                    self.assertEqual(hs.status, 101, hs.headers)
                finally:
                    s.close()
                r = request(srv.upstream_port, "GET", "/nope", headers={"Host": host},
                            timeout=T(5))
                self.assertEqual((r.status, r.header("Content-Type"), r.body),
                                 (404, "text/plain", b"404 page not found"))
                # a plain GET of the upgrade route: gorilla's answer
                r = request(srv.upstream_port, "GET", "/piko/v1/upstream/e",
                            headers={"Host": host}, timeout=T(5))
                self.assertEqual((r.status, r.header("Sec-Websocket-Version"), r.body),
                                 (400, "13", b"Bad Request\n"))


class ConfigTest(PikoTestCase):
    def _run_to_exit(self, srv, timeout):
        srv.start(wait=False)
        rc = srv.wait(timeout)
        if rc is None:
            srv.kill()
            self.fail("server still running %.0fs after start with an invalid config\n%s"
                      % (timeout, srv.describe()))
        return rc

    def test_unknown_yaml_key_fails(self):
        cases = {
            "nested": ("proxy:\n  bind_addr: 127.0.0.1:%d\n  bogus_nested_key: 1\n"
                       % free_port(), "bogus_nested_key"),
            "top-level": ("bogus_top_key: true\nlog:\n  level: info\n", "bogus_top_key"),
        }
        for label, (yaml_text, key) in cases.items():
            with self.subTest(case=label):
                path = self.write_file("bad-%s.yaml" % label, yaml_text)
                srv = Server(self.tmpdir, args=["--config.path", path])
                self.procs.append(srv)
                rc = self._run_to_exit(srv, T(10))
                err = srv.stderr()
                self.assertEqual(rc, 1, "exit code\n" + srv.describe())
                self.assertIn("config:", err, srv.describe())
                self.assertIn(key, err, srv.describe())

    def test_yaml_with_expand_env(self):
        up = self.upstream()
        pp, upp, ap = free_port(), free_port(), free_port()
        path = self.write_file("server.yaml", (
            "proxy:\n"
            "  bind_addr: \"127.0.0.1:${PIKO_IT_PROXY_PORT}\"\n"
            "  timeout: 1s\n"
            "upstream:\n"
            "  bind_addr: 127.0.0.1:${PIKO_IT_UPSTREAM_PORT}\n"
            "admin:\n"
            "  bind_addr: \"127.0.0.1:$PIKO_IT_ADMIN_PORT\"\n"
            "cluster:\n"
            "  bind_addr: 127.0.0.1:${PIKO_IT_CLUSTER_PORT}\n"
            "log:\n"
            "  level: ${PIKO_IT_LOG_LEVEL}\n"
            "grace_period: 5s\n"))
        env = {"PIKO_IT_PROXY_PORT": str(pp), "PIKO_IT_UPSTREAM_PORT": str(upp),
               "PIKO_IT_ADMIN_PORT": str(ap), "PIKO_IT_CLUSTER_PORT": str(free_port()),
               "PIKO_IT_LOG_LEVEL": "debug"}
        srv = self.server("--config.path", path, "--config.expand-env",
                          ports=(pp, upp, ap), env=env, use_bind_flags=False, log_level=None)
        # admin port from the environment answers
        self.assertEqual(srv.admin("/health").status, 200)
        # proxy port from the environment routes
        r = proxy_request(srv, "my-endpoint", "GET", "/")
        self.assertJsonError(r, 502, "no available upstreams")
        # upstream port from the environment accepts agents
        self.agent(srv, "my-endpoint", up.addr)
        r = proxy_request(srv, "my-endpoint", "GET", "/echo/yaml?x=1")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("X-Echo-Path"), "/echo/yaml?x=1")
        # proxy.timeout: 1s from the YAML is applied
        t0 = time.monotonic()
        r = proxy_request(srv, "my-endpoint", "GET", "/slow?ms=%d" % int(T(4) * 1000),
                          timeout=T(20))
        self.assertJsonError(r, 504, "upstream timeout")
        self.assertLess(time.monotonic() - t0, T(4) - 0.5)


class ShutdownTest(PikoTestCase):
    def test_ready_503_on_sigterm_while_inflight_request_completes(self):
        up = self.upstream()
        grace = 10.0
        srv = self.server("--grace-period", "%ds" % int(grace))
        self.agent(srv, "my-endpoint", up.addr)
        slow_ms = 3000
        result = {}

        def inflight():
            try:
                result["resp"] = proxy_request(srv, "my-endpoint", "GET",
                                               "/slow?ms=%d" % slow_ms, timeout=T(30))
            except Exception as e:  # noqa: BLE001 - asserted below
                result["error"] = e
            result["done_at"] = time.monotonic()

        t = threading.Thread(target=inflight, daemon=True)
        t.start()
        wait_for(lambda: up.stats()["inflight"] >= 1, T(5), what="the slow request to reach the upstream")

        srv.signal(signal.SIGTERM)
        t_term = time.monotonic()
        seen = []
        saw_503_at = None
        while time.monotonic() - t_term < T(2) and not result:
            try:
                r = request(srv.admin_port, "GET", "/ready", timeout=T(1))
                seen.append(r.status)
                if r.status == 503:
                    saw_503_at = time.monotonic()
                    break
            except OSError as e:
                seen.append(repr(e))
            time.sleep(0.05)
        self.assertIsNotNone(saw_503_at, "/ready never answered 503 after SIGTERM "
                             "(while the in-flight request was running); saw %r" % seen[-5:])
        self.assertNotIn("done_at", result,
                         "the in-flight request finished before /ready turned 503")

        t.join(T(20))
        self.assertFalse(t.is_alive(), "in-flight request still hanging")
        self.assertNotIn("error", result, "in-flight request failed during shutdown: %r"
                         % result.get("error"))
        r = result["resp"]
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"slow done\n")

        rc = srv.wait(max(0.0, t_term + grace + T(3) - time.monotonic()))
        if rc is None:
            self.fail("server did not exit within the %.0fs grace period (+margin) of SIGTERM"
                      % grace)
        self.assertEqual(rc, 0, srv.describe())
        self.assertLessEqual(result["done_at"] - t_term, grace)

    def test_sigterm_and_sigint_exit_0(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=sig.name):
                up = self.upstream()
                srv = self.server("--grace-period", "10s")
                self.agent(srv, "my-endpoint", up.addr)
                srv.signal(sig)
                t0 = time.monotonic()
                rc = srv.wait(T(12))
                if rc is None:
                    self.fail("server did not exit within the grace period of %s" % sig.name)
                self.assertEqual(rc, 0, srv.describe())
                # idle server: no reason to use the whole grace period
                self.assertLess(time.monotonic() - t0, T(5), "slow shutdown of an idle server")
