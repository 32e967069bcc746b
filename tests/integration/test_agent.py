"""`piko agent http`: connection errors at boot."""

import time

from harness import PikoTestCase, T, wait_for


class AgentConnectErrorTest(PikoTestCase):
    def _expect_exit_1(self, agent, *needles):
        agent.start(wait=False)
        rc = agent.wait(T(15))
        if rc is None:
            agent.kill()
            self.fail("agent still running %.0fs after a non-retryable connect error\n%s"
                      % (T(15), agent.describe()))
        out = agent.output()
        self.assertEqual(rc, 1, agent.describe())
        for needle in needles:
            self.assertIn(needle, out, "agent output lacks %r\n%s" % (needle, agent.describe()))

    def test_wrong_path_404_exits_1(self):
        srv = self.server()
        # /wrong/piko/v1/upstream/<ep> on the upstream port: the router's 404
        ag = self.agent(srv, "my-endpoint", "127.0.0.1:1", start=False,
                        connect_url=srv.upstream_url + "/wrong")
        self._expect_exit_1(ag, "404")

    def test_proxy_port_400_exits_1(self):
        srv = self.server()
        # the proxy port is not an upstream port: no endpoint in Host → 400
        ag = self.agent(srv, "my-endpoint", "127.0.0.1:1", start=False,
                        connect_url="http://127.0.0.1:%d" % srv.proxy_port)
        self._expect_exit_1(ag, "400")

    def test_401_exits_1(self):
        up = self.upstream()
        srv = self.server()
        # a fake upstream port answering 401 {"error":"invalid token"}
        ag = self.agent(srv, "my-endpoint", "127.0.0.1:1", start=False,
                        connect_url="http://%s/reject/401" % up.addr)
        self._expect_exit_1(ag, "401")
        # One upgrade attempt, plus the single plain GET with which the agent
        # reads the JSON reason that lws's WebSocket client does not expose
        # (agent/agent.c, "Reading the server's reason"): never a retry loop.
        self.assertIn(up.stats()["by_route"].get("reject", 0), (1, 2),
                      "a non-retryable status must not be retried")

    def test_error_message_taken_from_json_body(self):
        # spec §1.1: the error text is "<status>: <message>", message = the
        # `error` field of an application/json body (Go system tests assert
        # "connect: 401: invalid token")
        up = self.upstream()
        srv = self.server()
        ag = self.agent(srv, "my-endpoint", "127.0.0.1:1", start=False,
                        connect_url="http://%s/reject/401" % up.addr)
        self._expect_exit_1(ag, "401: invalid token")
        srv2 = self.server()
        ag = self.agent(srv2, "my-endpoint", "127.0.0.1:1", start=False,
                        connect_url="http://127.0.0.1:%d" % srv2.proxy_port)
        self._expect_exit_1(ag, "400: missing endpoint id")

    def test_retryable_503_keeps_retrying(self):
        up = self.upstream()
        srv = self.server()
        ag = self.agent(srv, "my-endpoint", "127.0.0.1:1", start=False,
                        connect_url="http://%s/reject/503" % up.addr)
        ag.start(wait=False)
        # with 100 ms initial backoff, several attempts within a few seconds
        wait_for(lambda: up.stats()["by_route"].get("reject", 0) >= 3, T(5),
                 what="the agent to retry after 503")
        time.sleep(1)
        self.assertIsNone(ag.poll(), "agent gave up on a retryable 503\n" + ag.describe())
