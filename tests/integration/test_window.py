"""stream.max_window_size (Piko v0.10's --stream.max-window-size).

Each side of a tunnel grants its peer a receive window per yamux stream: the
protocol's 256 KiB, or more when configured, announced as the extra delta of
the SYN (the opener) or the ACK (the acceptor), as Go's yamux does with
MaxStreamWindowSize. A peer may then send that much on a stream without
waiting for a Window Update. The peers here are test doubles speaking yamux,
so the test sees the deltas, and sends a whole window at once (which a fast
reader would also survive by crediting in time: the deltas are what tell)."""

import hashlib
import threading

import test_goaway as fake
from harness import PikoTestCase, T, proxy_request, wait_for
from tcp_ws import OP_CLOSE
from yamux_double import (F_ACK, F_FIN, F_SYN, T_DATA, T_GOAWAY, T_PING, T_WINDOW, AgentDouble,
                          FrameReader)

KiB = 1024
MiB = 1024 * KiB


class FakeAgent(AgentDouble):
    """An upstream connection for `endpoint` that records the server's frames
    and answers each request with a body of `body_len` bytes, head and body
    sent at once, never waiting for the server's Window Updates."""

    def __init__(self, server, endpoint, body):
        super().__init__(server, endpoint)
        self.body = body
        self.syns = []  # (stream id, window delta) of the server's SYNs
        self.goaway = None
        self.sock.settimeout(None)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        frames = FrameReader()
        reqs = {}
        try:
            while True:
                op, msg = self.ws.recv_message()
                if op == OP_CLOSE:
                    return
                for typ, flags, sid, length, payload in frames.feed(msg):
                    if typ == T_PING and flags & F_SYN:
                        self.send(T_PING, F_ACK, 0, length)
                    elif typ == T_GOAWAY:
                        self.goaway = length
                    elif flags & F_SYN and sid:
                        self.syns.append((sid, length))
                        reqs[sid] = b""
                        self.send(T_WINDOW, F_ACK, sid, 0)
                    if typ == T_DATA and sid in reqs:
                        reqs[sid] += payload
                        if b"\r\n\r\n" in reqs[sid]:
                            del reqs[sid]
                            self._answer(sid)
        except Exception as e:  # noqa: BLE001 - the socket closing ends the double
            self.errors.append(repr(e))

    def _answer(self, sid):
        resp = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % len(self.body)) + self.body
        for i in range(0, len(resp), 64 * KiB):
            piece = resp[i:i + 64 * KiB]
            self.send(T_DATA, 0, sid, len(piece), piece)
        self.send(T_WINDOW, F_FIN, sid, 0)


def pattern(n, seed):
    block = hashlib.sha256(seed).digest()
    return (block * (n // len(block) + 1))[:n]


def head_len(body_len):
    return len(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % body_len)


class ServerWindowTest(PikoTestCase):
    def _get(self, srv, endpoint, want):
        r = proxy_request(srv, endpoint, "GET", "/", timeout=T(20))
        self.assertEqual((r.status, len(r.body)), (200, len(want)), r.body[:200])
        self.assertEqual(r.body, want)

    def test_a_larger_window_is_announced_and_a_whole_window_accepted_at_once(self):
        srv = self.server("--stream.max-window-size", str(1 * MiB))
        body = pattern(1 * MiB - head_len(1 * MiB - 100), b"one window")
        ag = FakeAgent(srv, "win", body)
        self.addCleanup(ag.close)
        wait_for(lambda: proxy_request(srv, "win", "GET", "/").status == 200, T(10),
                 what="the fake agent registered")
        self._get(srv, "win", body)
        # every SYN grants the extra 768 KiB on top of the protocol's 256 KiB
        self.assertTrue(ag.syns)
        self.assertEqual({d for _, d in ag.syns}, {1 * MiB - 256 * KiB})
        self.assertIsNone(ag.goaway)

    def test_the_default_window_is_the_protocols(self):
        srv = self.server()
        body = pattern(200 * KiB, b"fits")
        ag = FakeAgent(srv, "def", body)
        self.addCleanup(ag.close)
        wait_for(lambda: proxy_request(srv, "def", "GET", "/").status == 200, T(10),
                 what="the fake agent registered")
        self._get(srv, "def", body)
        self.assertEqual({d for _, d in ag.syns}, {0})

    def test_yaml_key_and_bad_values(self):
        cfg = self.write_file("server.yaml", "stream:\n  max_window_size: 2097152\n")
        srv = self.server("--config.path", cfg)
        ag = FakeAgent(srv, "yaml", b"ok")
        self.addCleanup(ag.close)
        wait_for(lambda: proxy_request(srv, "yaml", "GET", "/").status == 200, T(10),
                 what="the fake agent registered")
        self.assertEqual({d for _, d in ag.syns}, {2 * MiB - 256 * KiB})
        for value, msg in (("262143", "stream: max-window-size must be >= 262144"),
                           ("4294967296", "stream: max-window-size must be <= 4294967295")):
            bad = self.server("--stream.max-window-size", value, start=False)
            bad._spawn()
            self.assertEqual(bad.wait(T(10)), 1)
            self.assertIn(msg, bad.stderr())


class AgentWindowTest(PikoTestCase):
    def _stack(self, *agent_args):
        up = self.upstream()
        srv = fake.FakeServer()
        self.addCleanup(srv.close)
        ag = self.agent(None, fake.ENDPOINT, up.addr, *agent_args, start=False,
                        connect_url=srv.url)
        ag.start(wait=False)
        return ag, srv.session(0, T(10))

    def test_a_larger_window_is_announced_and_a_whole_window_accepted_at_once(self):
        ag, sess = self._stack("--stream.max-window-size", str(1 * MiB))
        # The whole window goes out before the agent's ACK has been seen: the
        # agent takes the first 256 KiB on the protocol's window, and its ACK
        # (granting the rest) leaves at the end of the loop pass that read
        # them, before the next read (core/sock.c reads 64 KiB a pass).
        head = fake.http_request("POST", "/echo/w", b"")
        body = pattern(1 * MiB - len(head) - 16, b"agent window")
        # the fake server sends the whole request at once, ignoring windows
        status, _, got = fake.parse_response(
            sess.exchange(fake.http_request("POST", "/echo/w", body), T(20)))
        self.assertEqual(status, 200)
        self.assertEqual(got, body)
        # the ACK grants the extra 768 KiB (plus whatever the agent had
        # already passed on of the request when it sent the ACK)
        acks = [(sid, d) for sid, flags, d in sess.windows if flags & F_ACK]
        self.assertEqual([sid for sid, _ in acks], [2], sess.windows[:5])
        self.assertGreaterEqual(acks[0][1], 1 * MiB - 256 * KiB)
        self.assertLess(acks[0][1], 1 * MiB)
        self.assertIsNone(sess.agent_goaway, ag.describe())

    def test_yaml_key(self):
        cfg = self.write_file("agent.yaml", "stream:\n  max_window_size: 2097152\n")
        ag, sess = self._stack("--config.path", cfg)
        status, _, _ = fake.parse_response(sess.exchange(fake.http_request("GET", "/"), T(20)))
        self.assertEqual(status, 200)
        acks = [d for _, flags, d in sess.windows if flags & F_ACK]
        self.assertEqual(len(acks), 1, sess.windows)
        self.assertGreaterEqual(acks[0], 2 * MiB - 256 * KiB, ag.describe())

    def test_a_bad_value_is_refused(self):
        ag = self.agent(None, fake.ENDPOINT, "127.0.0.1:1", "--stream.max-window-size", "1024",
                        start=False, connect_url="http://127.0.0.1:1")
        ag._spawn()
        self.assertEqual(ag.wait(T(10)), 1)
        self.assertIn("stream: max-window-size must be >= 262144", ag.stderr())
