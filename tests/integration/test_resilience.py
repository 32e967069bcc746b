"""Agent and server restarts: traffic resumes without manual intervention."""

from harness import PikoTestCase, T, is_no_upstream, proxy_request, wait_for


def echo_ok(srv, endpoint, tag):
    r = proxy_request(srv, endpoint, "GET", "/echo/" + tag, timeout=T(5))
    return r.status == 200 and r.header("X-Echo-Path") == "/echo/" + tag


class ResilienceTest(PikoTestCase):
    def _assert_echo(self, srv, endpoint, tag):
        r = proxy_request(srv, endpoint, "GET", "/echo/" + tag)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("X-Echo-Path"), "/echo/" + tag)

    def test_agent_killed_then_restarted(self):
        up, srv, ag = self.stack("my-endpoint")
        self._assert_echo(srv, "my-endpoint", "before")
        ag.kill()
        last = []

        def gone():
            r = proxy_request(srv, "my-endpoint", "GET", "/echo/gone", timeout=T(5))
            last[:] = [r]
            return is_no_upstream(r)

        try:
            wait_for(gone, T(5), interval=0.1, what="502 no available upstreams")
        except AssertionError as e:
            self.fail("%s after SIGKILL of the agent; last response %r" % (e, last))
        self.assertJsonError(last[0], 502, "no available upstreams")

        self.agent(srv, "my-endpoint", up.addr)
        self._assert_echo(srv, "my-endpoint", "after")

    def _restart_server(self, hard):
        up, srv, ag = self.stack("my-endpoint")
        self._assert_echo(srv, "my-endpoint", "before")
        if hard:
            srv.kill()
        else:
            srv.stop(expect_code=0)
        self.assertIsNone(ag.poll(), "agent exited when the server went away\n" + ag.describe())
        srv2 = self.server(ports=srv.ports)
        wait_for(lambda: echo_ok(srv2, "my-endpoint", "resumed"), T(20), interval=0.2,
                 what="traffic through the restarted server (agent reconnect)")
        self.assertIsNone(ag.poll(), "agent process exited\n" + ag.describe())
        self._assert_echo(srv2, "my-endpoint", "after")

    def test_server_restart_sigterm_agent_reconnects(self):
        self._restart_server(hard=False)

    def test_server_restart_sigkill_agent_reconnects(self):
        self._restart_server(hard=True)
