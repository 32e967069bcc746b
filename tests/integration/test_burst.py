"""Bursts of opens: more streams than yamux lets wait for an ACK (256).

Go's yamux makes the opener wait for an ACK once 256 opens are pending; a
server that answered 502 instead would fail requests whenever an agent is a
little slow. The agent here is a test double speaking yamux over the upstream
WebSocket, which holds back every ACK until it has seen 300 SYNs."""

import socket
import threading
import time

from harness import PikoTestCase, T, proxy_request, wait_for
from yamux_double import F_ACK, F_FIN, F_SYN, T_DATA, T_PING, T_WINDOW, AgentDouble, FrameReader


class SlowAckAgent(AgentDouble):
    """Registers `endpoint`, ACKs no stream until `hold` SYNs arrived (or
    `max_wait` s passed), then answers each request with 200 "ok"."""

    def __init__(self, server, endpoint, hold, max_wait):
        super().__init__(server, endpoint)
        self.hold = hold
        self.max_wait = max_wait
        self.syns = []
        self.max_pending = 0
        self.buf = {}
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        frames = FrameReader()
        acked = False
        first_syn = None
        try:
            while True:
                self.sock.settimeout(0.2)
                msg = b""
                try:
                    _, msg = self.ws.recv_message()
                except socket.timeout:
                    pass
                for typ, flags, sid, length, payload in frames.feed(msg):
                    if typ == T_PING and flags & F_SYN:
                        self.send(T_PING, F_ACK, 0, length)
                    if flags & F_SYN and sid:
                        self.syns.append(sid)
                        self.buf[sid] = b""
                        first_syn = first_syn or time.monotonic()
                        if acked:
                            self.send(T_WINDOW, F_ACK, sid, 0)
                        else:
                            self.max_pending = max(self.max_pending, len(self.syns))
                    if typ == T_DATA and sid in self.buf:
                        self.buf[sid] += payload
                        if b"\r\n\r\n" in self.buf[sid] and acked:
                            self._answer(sid)
                if not acked and self.syns and (
                        len(self.syns) >= self.hold or
                        time.monotonic() - first_syn > self.max_wait):
                    acked = True
                    for sid in list(self.syns):
                        self.send(T_WINDOW, F_ACK, sid, 0)
                    for sid in list(self.buf):
                        if b"\r\n\r\n" in self.buf[sid]:
                            self._answer(sid)
        except Exception as e:  # noqa: BLE001 - the socket closing ends the double
            self.errors.append(repr(e))

    def _answer(self, sid):
        del self.buf[sid]
        body = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        self.send(T_DATA, 0, sid, len(body), body)
        self.send(T_WINDOW, F_FIN, sid, 0)


class BurstTest(PikoTestCase):
    def test_more_than_256_pending_opens_wait_instead_of_502(self):
        srv = self.server()
        agent = SlowAckAgent(srv, "slow", hold=256, max_wait=T(10))
        self.addCleanup(agent.close)
        wait_for(lambda: proxy_request(srv, "nobody", "GET", "/").status == 502, T(5))
        results = [None] * 300

        def one(i):
            try:
                r = proxy_request(srv, "slow", "GET", "/%d" % i, timeout=T(30))
                results[i] = (r.status, r.body)
            except Exception as e:  # noqa: BLE001 - reported below
                results[i] = repr(e)

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(300)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T(40))
        bad = [(i, r) for i, r in enumerate(results) if r != (200, b"ok")]
        self.assertEqual(bad[:5], [], "%d of 300 requests failed" % len(bad))
        # the burst really went past the limit while the double held its ACKs
        self.assertEqual(len(agent.syns), 300)
        self.assertGreaterEqual(agent.max_pending, 256)
