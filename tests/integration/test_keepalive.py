"""Keep-alive over the tunnel: a stream carries the next request.

The server keeps a stream whose request and response both completed, with
neither side closing, for the next request to the same tunnel (as nginx's
upstream keepalive reuses connections); the agent serves the requests that
follow on it, one exchange each. Half of these tests put a yamux test double
in place of the agent (it counts SYNs and sees every frame), half a double in
place of the server (Piko's server sends Connection: close; a keep-alive
request must leave the stream open)."""

import re
import socket
import threading
import time

from harness import PikoTestCase, T, proxy_request, wait_for
from tcp_ws import OP_BINARY
from test_goaway import ENDPOINT, fake_stack, parse_response
from yamux_double import (F_ACK, F_FIN, F_RST, F_SYN, T_DATA, T_GOAWAY, T_PING, T_WINDOW,
                          AgentDouble, FrameReader, frame)


class KeepAliveAgent(AgentDouble):
    """Registers `endpoint` and answers every request on a stream with 200 and
    "<stream id>:<n-th request on it>". mode "keep": keep-alive, the stream
    stays open; "close": Connection: close then FIN; "latefin": keep-alive
    response, FIN 0.2 s later; "eof": no length, FIN ends the body.
    fin_on_reuse: a request on a stream that
    already carried one gets FIN and no answer (the agent let it go as the
    request went out)."""

    def __init__(self, server, endpoint, mode="keep", fin_on_reuse=False):
        super().__init__(server, endpoint)
        self.mode = mode
        self.fin_on_reuse = fin_on_reuse
        self.syns = []
        self.requests = []  # (stream id, request head)
        self.server_fins = set()  # streams the server closed
        self.resets = set()
        self.fins_sent = set()
        self.ignored = 0
        self.count = {}
        self.buf = {}
        self.sock.settimeout(None)
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def go_away(self):
        self.send(T_GOAWAY, 0, 0, 0)

    def _run(self):
        frames = FrameReader()
        try:
            while True:
                _, msg = self.ws.recv_message()
                for typ, flags, sid, length, payload in frames.feed(msg):
                    self._frame(typ, flags, sid, length, payload)
        except Exception as e:  # noqa: BLE001 - the socket closing ends the double
            self.errors.append(repr(e))

    def _frame(self, typ, flags, sid, length, payload):
        if typ == T_PING:
            if flags & F_SYN:
                self.send(T_PING, F_ACK, 0, length)
            return
        if flags & F_SYN and sid:
            self.syns.append(sid)
            self.buf[sid] = b""
            self.count[sid] = 0
            self.send(T_WINDOW, F_ACK, sid, 0)
        if flags & F_RST:
            self.resets.add(sid)
        if flags & F_FIN:
            self.server_fins.add(sid)
        if typ == T_DATA and sid in self.buf:
            self.buf[sid] += payload
            while b"\r\n\r\n" in self.buf[sid]:
                head, _, self.buf[sid] = self.buf[sid].partition(b"\r\n\r\n")
                self._answer(sid, head)

    def _answer(self, sid, head):
        if sid in self.fins_sent:
            self.ignored += 1
            return  # as an agent done with the stream: nobody reads it
        self.requests.append((sid, head))
        self.count[sid] += 1
        if self.fin_on_reuse and self.count[sid] > 1:
            self.fins_sent.add(sid)
            self.send(T_WINDOW, F_FIN, sid, 0)
            return
        body = b"%d:%d" % (sid, self.count[sid])
        if self.mode == "keep":
            resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            self.send(T_DATA, 0, sid, len(resp), resp)
        elif self.mode == "eof":
            # no length: the body runs to the stream's end
            resp = b"HTTP/1.1 200 OK\r\n\r\n" + body
            self.send(T_DATA, 0, sid, len(resp), resp)
            self.fins_sent.add(sid)
            self.send(T_WINDOW, F_FIN, sid, 0)
        elif self.mode == "close":
            resp = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (len(body), body))
            self.send(T_DATA, 0, sid, len(resp), resp)
            self.fins_sent.add(sid)
            self.send(T_WINDOW, F_FIN, sid, 0)
        elif self.mode == "samefin":
            # a keep-alive response and FIN in one message (ours before
            # keep-alive, whose FIN left with the response's last bytes)
            resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            self.fins_sent.add(sid)
            with self.lock:
                self.ws.send(OP_BINARY, frame(T_DATA, 0, sid, len(resp), resp) +
                             frame(T_WINDOW, F_FIN, sid, 0))
        else:  # "latefin"
            # a keep-alive response, then FIN well after it, as an agent
            # that ends every stream after one response (ours before
            # keep-alive) may send it: the next request goes out on the
            # stream before the FIN arrives
            resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            self.send(T_DATA, 0, sid, len(resp), resp)
            self.fins_sent.add(sid)
            time.sleep(0.2)
            self.send(T_WINDOW, F_FIN, sid, 0)


def requests_total(srv):
    m = re.search(r"^piko_upstreams_upstream_requests_total (\d+)", srv.metrics(), re.M)
    return int(m.group(1)) if m else 0


class ServerKeepAliveTest(PikoTestCase):
    def _get(self, srv, ep, path="/"):
        r = proxy_request(srv, ep, "GET", path, timeout=T(10))
        self.assertEqual(r.status, 200, r)
        return r.body.decode()

    def test_sequential_requests_share_one_stream(self):
        srv = self.server()
        agent = KeepAliveAgent(srv, "ka")
        self.addCleanup(agent.close)
        wait_for(lambda: proxy_request(srv, "ka", "GET", "/").status == 200, T(5))
        first = len(agent.syns)
        bodies = [self._get(srv, "ka", "/%d" % i) for i in range(5)]
        sid = agent.syns[-1]
        self.assertEqual(len(agent.syns), first, "a new stream per request: %r" % bodies)
        self.assertEqual(bodies, ["%d:%d" % (sid, n) for n in range(2, 7)])
        # the requests ask to keep the connection, and the stream stays open
        for _, head in agent.requests:
            self.assertNotIn(b"connection: close", head.lower())
        self.assertEqual(agent.server_fins, set())
        # still counted once per request
        self.assertEqual(requests_total(srv), 6)

    def test_concurrent_requests_reuse_their_streams(self):
        srv = self.server()
        agent = KeepAliveAgent(srv, "ka")
        self.addCleanup(agent.close)
        wait_for(lambda: proxy_request(srv, "ka", "GET", "/").status == 200, T(5))
        results = []

        def burst():
            out = [None] * 16

            def one(i):
                try:
                    out[i] = self._get(srv, "ka", "/b%d" % i)
                except Exception as e:  # noqa: BLE001 - asserted below
                    out[i] = repr(e)
            ts = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(16)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(T(20))
            results.extend(out)

        for _ in range(4):
            burst()
        self.assertTrue(all(re.fullmatch(r"\d+:\d+", r or "") for r in results), results)
        self.assertEqual(len(set(results)), len(results), "two answers from one exchange")
        # 64 requests, at most 16 at once, plus the first: never more
        # streams than were in use at once (one each, without keep-alive)
        self.assertLessEqual(len(agent.syns), 17, agent.syns)

    def _each_request_on_a_new_stream(self, mode, n):
        srv = self.server()
        agent = KeepAliveAgent(srv, mode, mode=mode)
        self.addCleanup(agent.close)
        wait_for(lambda: proxy_request(srv, mode, "GET", "/").status == 200, T(5))
        first = len(agent.syns)
        for i in range(n):
            self.assertTrue(self._get(srv, mode, "/%d" % i).endswith(":1"))
        self.assertEqual(len(agent.syns), first + n)
        self.assertEqual(agent.ignored, 0)

    def test_response_with_connection_close_is_not_kept(self):
        self._each_request_on_a_new_stream("close", 4)

    def test_a_fin_right_behind_the_response_closes_the_stream_before_reuse(self):
        srv = self.server()
        agent = KeepAliveAgent(srv, "same", mode="samefin")
        self.addCleanup(agent.close)
        wait_for(lambda: proxy_request(srv, "same", "GET", "/").status == 200, T(5))
        # pipelined: the next request is read as a response ends, in the
        # same loop pass as the FIN behind it; a POST (not idempotent) is
        # not sent again should it go out on the closed stream
        c = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=T(10))
        self.addCleanup(c.close)
        req = b"POST /p HTTP/1.1\r\nHost: x\r\nx-piko-endpoint: same\r\nContent-Length: 0\r\n\r\n"
        c.sendall(req * 3)
        statuses, bodies = [], []
        buf = b""
        while len(statuses) < 3:
            while b"\r\n\r\n" not in buf:
                piece = c.recv(65536)
                self.assertTrue(piece, "closed after %r, %r" % (statuses, bodies))
                buf += piece
            head, _, buf = buf.partition(b"\r\n\r\n")
            size = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(buf) < size:
                buf += c.recv(65536)
            statuses.append(int(head.split(b" ")[1]))
            bodies.append(buf[:size])
            buf = buf[size:]
        self.assertEqual(statuses, [200, 200, 200], bodies)
        self.assertTrue(all(re.fullmatch(rb"\d+:1", b) for b in bodies), bodies)
        # no request went out on a stream its FIN had closed
        self.assertEqual(agent.ignored, 0)

    def test_agent_whose_fin_comes_late_gets_each_request_answered(self):
        srv = self.server()
        agent = KeepAliveAgent(srv, "late", mode="latefin")
        self.addCleanup(agent.close)
        wait_for(lambda: proxy_request(srv, "late", "GET", "/").status == 200, T(5))
        for i in range(5):
            body = self._get(srv, "late", "/%d" % i)
            self.assertTrue(body.endswith(":1"), body)
        # at most one request went out on a stream whose FIN was late (and
        # was sent again on a new one): the server learnt that this agent
        # ends its streams, and keeps none of them since
        self.assertLessEqual(agent.ignored, 1)
        self.assertEqual(len(agent.syns), len(agent.requests), agent.requests)

    def test_body_to_the_streams_end_is_not_kept(self):
        self._each_request_on_a_new_stream("eof", 3)

    def test_idle_stream_the_agent_closes_is_not_reused(self):
        srv = self.server()
        agent = KeepAliveAgent(srv, "ka")
        self.addCleanup(agent.close)
        wait_for(lambda: proxy_request(srv, "ka", "GET", "/").status == 200, T(5))
        sid = agent.syns[-1]
        agent.send(T_WINDOW, F_FIN, sid, 0)
        # the server closes its side of the idle stream too
        wait_for(lambda: sid in agent.server_fins, T(5), what="server FIN on the idle stream")
        body = self._get(srv, "ka")
        self.assertEqual(len(agent.syns), 2)
        self.assertEqual(body, "%d:1" % agent.syns[-1])

    def test_reused_stream_closed_under_a_get_is_retried_on_a_new_one(self):
        srv = self.server()
        agent = KeepAliveAgent(srv, "ka", fin_on_reuse=True)
        self.addCleanup(agent.close)
        wait_for(lambda: proxy_request(srv, "ka", "GET", "/").status == 200, T(5))
        first = len(agent.syns)
        body = self._get(srv, "ka", "/again")
        # the kept stream got the request and closed; a new stream answered
        self.assertEqual(len(agent.syns), first + 1)
        self.assertEqual(body, "%d:1" % agent.syns[-1])
        self.assertEqual([h.split(b" ")[1] for s, h in agent.requests[-2:]],
                         [b"/again", b"/again"])

    def test_idle_streams_close_when_the_agent_goes_away(self):
        srv = self.server()
        agent = KeepAliveAgent(srv, "ka")
        self.addCleanup(agent.close)
        wait_for(lambda: proxy_request(srv, "ka", "GET", "/").status == 200, T(5))
        sid = agent.syns[-1]
        agent.go_away()
        wait_for(lambda: sid in agent.server_fins, T(5), what="server FIN on the idle stream")
        r = proxy_request(srv, "ka", "GET", "/", timeout=T(10))
        self.assertEqual(r.status, 502, r)


def keepalive_request(path, close=False):
    return (b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n"
            % (path.encode(), ENDPOINT.encode(), b"Connection: close\r\n" if close else b""))


def nth_response(case, st, n, timeout):
    """The n-th complete response on a fake server's stream st (each has a
    Content-Length): (status, headers, body)."""
    def split():
        out, rest = [], bytes(st.data)
        while b"\r\n\r\n" in rest:
            head, _, after = rest.partition(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length: *(\d+)", head)
            size = int(m.group(1)) if m else 0
            if len(after) < size:
                break
            out.append(head + b"\r\n\r\n" + after[:size])
            rest = after[size:]
        return out
    wait_for(lambda: len(split()) >= n or st.reset, timeout,
             what="response %d on stream %d" % (n, st.sid))
    case.assertFalse(st.reset, "stream %d reset" % st.sid)
    return parse_response(split()[n - 1])


class AgentKeepAliveTest(PikoTestCase):
    def _response(self, st, n, timeout):
        return nth_response(self, st, n, timeout)

    def _first(self):
        """fake_stack, and a stream that carried one keep-alive request."""
        up, fake, _, sess = fake_stack(self)
        st = sess.open(keepalive_request("/"))
        status, _, body = self._response(st, 1, T(10))
        self.assertEqual((status, body), (200, b"ok\n"))
        return up, fake, sess, st

    def test_agent_serves_the_requests_that_follow_on_one_stream(self):
        _, _, sess, st = self._first()
        for n, path in ((2, "/headers"), (3, "/")):
            req = keepalive_request(path)
            sess.send(T_DATA, 0, st.sid, len(req), req)
            status, _, _ = self._response(st, n, T(10))
            self.assertEqual(status, 200)
        self.assertFalse(st.fin.is_set(), "the agent closed a kept-alive stream")
        # Connection: close (as Piko's server sends) is the last one: FIN
        req = keepalive_request("/", close=True)
        sess.send(T_DATA, 0, st.sid, len(req), req)
        status, _, body = self._response(st, 4, T(10))
        self.assertEqual((status, body), (200, b"ok\n"))
        self.assertTrue(st.fin.wait(T(5)), "no FIN after a Connection: close request")
        self.assertEqual(len(sess.streams), 1)

    def test_agent_closes_an_idle_stream_the_server_closes(self):
        _, _, sess, st = self._first()
        sess.send(T_WINDOW, F_FIN, st.sid, 0)
        self.assertTrue(st.fin.wait(T(5)), "the agent kept a stream the server closed")
        self.assertFalse(st.reset)
        # the tunnel still serves
        st2 = sess.open(keepalive_request("/", close=True))
        self.assertEqual(self._response(st2, 1, T(10))[0], 200)

    def test_agent_leaving_closes_its_idle_streams_and_runs_nothing_sent_after(self):
        up, fake, s1, st = self._first()
        # the server's Go Away: the agent moves to a fresh tunnel and retires
        # this one; the kept stream, still without a request, is closed a
        # second later (a server of ours closes it first on the Go Away)
        t0 = time.monotonic()
        s1.go_away(0)
        fake.session(1, T(5))
        self.assertTrue(s1.agent_goaway_ev.wait(T(5)), "no Go Away from the agent")
        self.assertTrue(st.fin.wait(T(5)), "the idle stream was not closed")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9, "closed before a second passed")
        self.assertFalse(st.reset)
        # a request that comes after cannot be answered, so it is not run
        req = keepalive_request("/slow?ms=1")
        s1.send(T_DATA, 0, st.sid, len(req), req)
        wait_for(lambda: st.reset, T(5), what="the agent's reset")
        time.sleep(0.3)
        self.assertNotIn("slow", up.stats()["by_route"])


class CutResponseTest(PikoTestCase):
    def test_a_response_the_service_cuts_short_ends_at_once(self):
        """The service announces 100 bytes, sends 10 and closes: the client's
        connection ends then (the stream is not kept for another request)."""
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(8)
        self.addCleanup(ls.close)

        def serve():
            while True:
                try:
                    c, _ = ls.accept()
                except OSError:
                    return
                c.recv(65536)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                c.close()
        threading.Thread(target=serve, daemon=True).start()
        srv = self.server()
        self.agent(srv, "cut", "127.0.0.1:%d" % ls.getsockname()[1], wait=False)
        wait_for(lambda: b'"cut"' in srv.admin("/status/upstream/endpoints").body, T(10),
                 what="the agent's tunnel")
        for _ in range(2):
            c = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=T(10))
            c.sendall(b"GET / HTTP/1.1\r\nHost: cut\r\nx-piko-endpoint: cut\r\n\r\n")
            got = b""
            start = time.monotonic()
            while True:
                piece = c.recv(65536)
                if not piece:
                    break
                got += piece
            c.close()
            self.assertLess(time.monotonic() - start, T(5), got)
            self.assertTrue(got.startswith(b"HTTP/1.1 200"), got)
            self.assertTrue(got.endswith(b"0123456789"), got)
